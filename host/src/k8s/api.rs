//! The Kubernetes API through kube-rs: pod GET (with a short retry), NAD
//! GET, and the network-status annotation written with GET + PUT of the
//! pod's status, retried on conflict (409) as client-go's RetryOnConflict
//! does.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::runtime::Runtime;

use super::{
    EVENT_COMPONENT, NETWORK_STATUS_ANNOTATION, NadInfo, NetworkAttachmentDefinition,
    NetworkSource, PodEvent, PodInfo, SourceError,
};

/// How often a pod GET is tried before giving up (connection errors, 5xx).
const POD_GET_ATTEMPTS: u32 = 3;
/// How often the status write is tried on conflict.
const STATUS_ATTEMPTS: u32 = 5;

pub struct ApiSource {
    runtime: Arc<Runtime>,
    client: Client,
}

impl std::fmt::Debug for ApiSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSource").finish()
    }
}

fn api_error(err: kube::Error) -> SourceError {
    SourceError::Api(err.to_string())
}

fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn retriable(err: &kube::Error) -> bool {
    match status_code(err) {
        Some(code) => code >= 500 || code == 429,
        None => matches!(err, kube::Error::HyperError(_) | kube::Error::Service(_)),
    }
}

/// A client for the cluster of `kubeconfig` (its current context).
pub async fn client(kubeconfig: &Path) -> Result<Client, SourceError> {
    let bad = |reason: String| SourceError::Kubeconfig {
        path: kubeconfig.display().to_string(),
        reason,
    };
    let loaded = Kubeconfig::read_from(kubeconfig).map_err(|err| bad(err.to_string()))?;
    let mut config = Config::from_custom_kubeconfig(loaded, &KubeConfigOptions::default())
        .await
        .map_err(|err| bad(err.to_string()))?;
    // Proxies from the environment are not supported (kube's http-proxy
    // feature is off); kubelet's own env must not break us.
    config.proxy_url = None;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(15));
    Client::try_from(config).map_err(|err| bad(err.to_string()))
}

impl ApiSource {
    /// A source over the cluster of `kubeconfig` (its current context).
    pub fn new(runtime: Arc<Runtime>, kubeconfig: &Path) -> Result<Self, SourceError> {
        let client = runtime.block_on(client(kubeconfig))?;
        Ok(ApiSource { runtime, client })
    }
}

/// A pod's part the host needs.
pub fn pod_info(namespace: &str, name: &str, metadata: &kube::api::ObjectMeta) -> PodInfo {
    PodInfo {
        namespace: namespace.into(),
        name: name.into(),
        uid: metadata.uid.clone().unwrap_or_default(),
        annotations: metadata.annotations.clone().unwrap_or_default(),
    }
}

/// POST `event` about `pod` as a core/v1 Event in the pod's namespace, named
/// as client-go's recorder names them (`<pod>.<hex nanoseconds>`).
pub async fn post_event(
    client: &Client,
    pod: &PodInfo,
    event: &PodEvent,
) -> Result<(), SourceError> {
    use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let now = k8s_openapi::jiff::Timestamp::now();
    let event = Event {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{}.{:x}", pod.name, now.as_nanosecond())),
            namespace: Some(pod.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: Some(pod.uid.clone()).filter(|uid| !uid.is_empty()),
            ..Default::default()
        },
        type_: Some(event.event_type.into()),
        reason: Some(event.reason.into()),
        message: Some(event.message.clone()),
        source: Some(EventSource {
            component: Some(EVENT_COMPONENT.into()),
            host: None,
        }),
        reporting_component: Some(EVENT_COMPONENT.into()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    };
    let events: Api<Event> = Api::namespaced(client.clone(), &pod.namespace);
    events
        .create(&PostParams::default(), &event)
        .await
        .map(|_| ())
        .map_err(api_error)
}

impl NetworkSource for ApiSource {
    fn get_pod(
        &self,
        namespace: &str,
        name: &str,
        _uid: &str,
    ) -> Result<Option<PodInfo>, SourceError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        self.runtime.block_on(async {
            let mut attempt = 1;
            loop {
                match pods.get_opt(name).await {
                    Ok(pod) => {
                        return Ok(pod.map(|pod| pod_info(namespace, name, &pod.metadata)));
                    }
                    Err(err) if retriable(&err) && attempt < POD_GET_ATTEMPTS => {
                        tracing::warn!(namespace, name, attempt, error = %err, "pod GET failed, retrying");
                        tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
                        attempt += 1;
                    }
                    Err(err) => return Err(api_error(err)),
                }
            }
        })
    }

    fn get_nad(&self, namespace: &str, name: &str) -> Result<Option<NadInfo>, SourceError> {
        let nads: Api<NetworkAttachmentDefinition> =
            Api::namespaced(self.client.clone(), namespace);
        self.runtime.block_on(async {
            let nad = nads.get_opt(name).await.map_err(api_error)?;
            Ok(nad.map(|nad| NadInfo::of(namespace, name, nad)))
        })
    }

    fn set_network_status(
        &self,
        namespace: &str,
        name: &str,
        status: &str,
    ) -> Result<(), SourceError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        self.runtime.block_on(async {
            for attempt in 1..=STATUS_ATTEMPTS {
                let Some(mut pod) = pods.get_opt(name).await.map_err(api_error)? else {
                    tracing::warn!(namespace, name, "pod is gone: network-status not written");
                    return Ok(());
                };
                pod.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(NETWORK_STATUS_ANNOTATION.into(), status.into());
                match pods.replace_status(name, &PostParams::default(), &pod).await {
                    Ok(_) => return Ok(()),
                    Err(err) if status_code(&err) == Some(409) && attempt < STATUS_ATTEMPTS => {
                        tracing::info!(namespace, name, attempt, "network-status update conflicted, retrying");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(err) if status_code(&err) == Some(404) => {
                        tracing::warn!(namespace, name, "pod is gone: network-status not written");
                        return Ok(());
                    }
                    Err(err) => return Err(api_error(err)),
                }
            }
            Err(SourceError::Api(format!(
                "network-status of {namespace}/{name}: still conflicting after {STATUS_ATTEMPTS} attempts"
            )))
        })
    }

    fn missing_pod_was_deleted(&self) -> bool {
        true
    }

    fn send_event(&self, pod: &PodInfo, event: &PodEvent) -> Result<(), SourceError> {
        self.runtime.block_on(post_event(&self.client, pod, event))
    }
}
