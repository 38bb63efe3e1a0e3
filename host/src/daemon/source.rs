//! Pods and NADs for the daemon: kube-rs reflector caches of the pods on
//! this node (metadata only, field selector `spec.nodeName`) and of every
//! NetworkAttachmentDefinition, kept by watches that relist when the API
//! server says their resourceVersion is gone (410). A pod missing from the
//! cache, or cached with another UID than the runtime's (the cache lags a
//! new pod) unless it is a static pod's mirror (whose UID always differs),
//! is read with a GET; so is a missing NAD. The network-status is
//! written with one JSON merge PATCH of the pod's status (no GET, no
//! conflict).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::runtime::Handle;

use super::metrics::Metrics;
use crate::k8s::api::pod_info;
use crate::k8s::{
    NETWORK_STATUS_ANNOTATION, NadInfo, NetworkAttachmentDefinition, NetworkSource, PodInfo,
    SourceError,
};

/// The daemon's view of the API: caches, with GETs behind them.
pub struct CachedSource {
    handle: Handle,
    client: Client,
    pods: Store<PartialObjectMeta<Pod>>,
    nads: Store<NetworkAttachmentDefinition>,
    pods_synced: Arc<AtomicBool>,
    nads_synced: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for CachedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedSource")
            .field("pods", &self.pods.state().len())
            .field("nads", &self.nads.state().len())
            .finish()
    }
}

/// Drive one reflector: keep `synced` (set after each complete list) and
/// the watch-restart and cache-size metrics up to date.
async fn drive<K, S>(
    kind: &'static str,
    stream: S,
    store: Store<K>,
    synced: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
    S: futures::Stream<Item = Result<Event<K>, watcher::Error>>,
{
    let mut lists = 0u64;
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => {
                lists += 1;
                if lists > 1 {
                    metrics.watch_restart(kind);
                    tracing::info!(kind, "watch restarted: relisting");
                }
            }
            Ok(Event::InitDone) => {
                synced.store(true, Ordering::SeqCst);
                metrics.cache_size(kind, store.state().len());
            }
            Ok(_) => metrics.cache_size(kind, store.state().len()),
            Err(err) => {
                metrics.watch_error(kind);
                tracing::warn!(kind, error = %err, "watch failed; retrying");
            }
        }
    }
}

/// The caches keep what a CNI call reads (names, UIDs, annotations, NAD
/// configs): the server-side-apply bookkeeping is often the largest part of
/// an object's metadata and is never read.
fn forget_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

fn api_error(err: kube::Error) -> SourceError {
    SourceError::Api(err.to_string())
}

fn not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

impl CachedSource {
    /// Start the reflectors on `handle` (the daemon's runtime) for the
    /// pods of `node_name` and every NAD.
    pub fn start(handle: Handle, client: Client, node_name: &str, metrics: Arc<Metrics>) -> Self {
        let (pods, pods_writer) = reflector::store();
        let (nads, nads_writer) = reflector::store();
        let pods_synced = Arc::new(AtomicBool::new(false));
        let nads_synced = Arc::new(AtomicBool::new(false));
        let pod_config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
        let pod_stream = watcher::watcher(
            Api::<PartialObjectMeta<Pod>>::all(client.clone()),
            pod_config,
        )
        .default_backoff()
        .modify(forget_managed_fields)
        .reflect(pods_writer);
        handle.spawn(drive(
            "pods",
            pod_stream,
            pods.clone(),
            pods_synced.clone(),
            metrics.clone(),
        ));
        let nad_stream = watcher::watcher(
            Api::<NetworkAttachmentDefinition>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(forget_managed_fields)
        .reflect(nads_writer);
        handle.spawn(drive(
            "nads",
            nad_stream,
            nads.clone(),
            nads_synced.clone(),
            metrics.clone(),
        ));
        CachedSource {
            handle,
            client,
            pods,
            nads,
            pods_synced,
            nads_synced,
            metrics,
        }
    }

    /// Whether both caches have completed a list.
    pub fn synced(&self) -> bool {
        self.pods_synced.load(Ordering::SeqCst) && self.nads_synced.load(Ordering::SeqCst)
    }

    fn get<K>(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<K>, SourceError>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        self.metrics.api_get(kind);
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        self.handle.block_on(api.get_opt(name)).map_err(api_error)
    }
}

impl NetworkSource for CachedSource {
    fn get_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<Option<PodInfo>, SourceError> {
        let key = ObjectRef::new(name).within(namespace);
        if let Some(cached) = self.pods.get(&key) {
            let cached_uid = cached.metadata.uid.as_deref().unwrap_or_default();
            let info = pod_info(namespace, name, &cached.metadata);
            // A static pod's mirror always has another UID than kubelet's:
            // the API would answer the same.
            if uid.is_empty() || cached_uid == uid || crate::pod::is_static_pod(&info.annotations) {
                return Ok(Some(info));
            }
            tracing::debug!(
                namespace,
                name,
                cached_uid,
                uid,
                "cached pod has another UID: reading it from the API"
            );
        }
        Ok(self
            .get::<Pod>("pods", namespace, name)?
            .map(|pod| pod_info(namespace, name, &pod.metadata)))
    }

    fn get_nad(&self, namespace: &str, name: &str) -> Result<Option<NadInfo>, SourceError> {
        let key = ObjectRef::new(name).within(namespace);
        let nad = match self.nads.get(&key) {
            Some(cached) => Some((*cached).clone()),
            None => self.get::<NetworkAttachmentDefinition>("nads", namespace, name)?,
        };
        Ok(nad.map(|nad| NadInfo::of(namespace, name, nad)))
    }

    fn set_network_status(
        &self,
        namespace: &str,
        name: &str,
        status: &str,
    ) -> Result<(), SourceError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({
            "metadata": {"annotations": {NETWORK_STATUS_ANNOTATION: status}}
        });
        match self.handle.block_on(pods.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )) {
            Ok(_) => Ok(()),
            Err(err) if not_found(&err) => {
                tracing::warn!(namespace, name, "pod is gone: network-status not written");
                Ok(())
            }
            Err(err) => Err(api_error(err)),
        }
    }

    fn missing_pod_was_deleted(&self) -> bool {
        true
    }

    /// Sent from the daemon's runtime while the call goes on (an event is
    /// best effort, and the call should not wait for the API server): a
    /// failure is logged there.
    fn send_event(&self, pod: &PodInfo, event: &crate::k8s::PodEvent) -> Result<(), SourceError> {
        let (client, pod, event) = (self.client.clone(), pod.clone(), event.clone());
        self.handle.spawn(async move {
            if let Err(err) = crate::k8s::api::post_event(&client, &pod, &event).await {
                tracing::warn!(pod = %format!("{}/{}", pod.namespace, pod.name), reason = event.reason, error = %err, "sending the pod event failed");
            }
        });
        Ok(())
    }
}
