//! Where pods and NetworkAttachmentDefinitions come from: the Kubernetes API
//! (kube-rs, [`api`]) or a local directory of manifests ([`local`], the
//! default when no `kubeconfig` is set, so the whole flow runs with no
//! cluster). Both sit behind [`NetworkSource`].

pub mod api;
pub mod local;

use std::collections::BTreeMap;

use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// The NetworkAttachmentDefinition kind (`k8s.cni.cncf.io/v1`), as the
/// upstream CRD defines it: a namespaced object whose spec is one optional
/// string, the CNI config.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1",
    kind = "NetworkAttachmentDefinition",
    plural = "network-attachment-definitions",
    shortname = "net-attach-def",
    namespaced,
    schema = "disabled"
)]
pub struct NetworkAttachmentDefinitionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// What the host needs of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub annotations: BTreeMap<String, String>,
}

/// What the host needs of a NAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NadInfo {
    pub namespace: String,
    pub name: String,
    /// `spec.config`; `None` (or empty) means "look in confDir".
    pub config: Option<String>,
    /// The `k8s.v1.cni.cncf.io/resourceName` annotation: the device-plugin
    /// resource an attachment of this network needs.
    pub resource_name: Option<String>,
}

impl NadInfo {
    /// What the host needs of NAD object `nad` (`namespace/name`).
    pub fn of(namespace: &str, name: &str, nad: NetworkAttachmentDefinition) -> NadInfo {
        NadInfo {
            namespace: namespace.into(),
            name: name.into(),
            resource_name: nad
                .metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(crate::devices::RESOURCE_NAME_ANNOTATION))
                .filter(|resource| !resource.is_empty())
                .cloned(),
            config: nad.spec.config,
        }
    }
}

/// A Kubernetes event about a pod, as Multus records them (core/v1 Event,
/// `involvedObject` the pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    /// `Normal` or `Warning`.
    pub event_type: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl PodEvent {
    /// `AddedInterface` (Normal): "Add net1 [192.168.1.200/24] from
    /// default/macvlan-conf", as Multus words it.
    pub fn added_interface(ifname: &str, ips: &[String], network: &str) -> PodEvent {
        PodEvent {
            event_type: "Normal",
            reason: "AddedInterface",
            message: format!("Add {ifname} [{}] from {network}", ips.join(" ")),
        }
    }

    /// `NoNetworkFound` (Warning): a NAD the pod asks for is missing.
    pub fn no_network_found(message: String) -> PodEvent {
        PodEvent {
            event_type: "Warning",
            reason: "NoNetworkFound",
            message,
        }
    }

    /// `PluginRefused` (Warning, ours): the sandbox or the plan policy
    /// refused a plugin's work.
    pub fn plugin_refused(message: String) -> PodEvent {
        PodEvent {
            event_type: "Warning",
            reason: "PluginRefused",
            message,
        }
    }
}

/// The component named in the events' `source` and `reportingComponent`.
pub const EVENT_COMPONENT: &str = "multus-wasm";

pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The API server could not be reached or answered with an error.
    #[error("kubernetes API: {0}")]
    Api(String),
    /// The local manifest directory could not be read or holds a bad file.
    #[error("manifest {path}: {reason}")]
    Manifest { path: String, reason: String },
    /// The kubeconfig could not be loaded.
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig { path: String, reason: String },
}

impl From<SourceError> for crate::cni::CniError {
    fn from(err: SourceError) -> Self {
        match err {
            SourceError::Api(_) => crate::cni::CniError::try_again_later(err.to_string()),
            _ => crate::cni::CniError::invalid_network_config(err.to_string()),
        }
    }
}

/// Pods and NADs, from the API, a cache of it, or manifests.
pub trait NetworkSource: Send + Sync {
    /// The pod, or `None` when there is no such pod. `uid` is the UID the
    /// runtime expects (empty when unknown): a cache whose copy has another
    /// UID asks the API server instead.
    fn get_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<Option<PodInfo>, SourceError>;
    /// The NAD, or `None` when there is no such NAD.
    fn get_nad(&self, namespace: &str, name: &str) -> Result<Option<NadInfo>, SourceError>;
    /// Write the pod's network-status annotation (retrying on conflict).
    fn set_network_status(
        &self,
        namespace: &str,
        name: &str,
        status: &str,
    ) -> Result<(), SourceError>;
    /// Whether a missing pod means it was deleted while being created (the
    /// API: ADD then returns an empty result, as Multus does) rather than a
    /// pod with no manifest (a local directory: the pod gets its cluster
    /// network only).
    fn missing_pod_was_deleted(&self) -> bool;
    /// Record `event` about `pod` (a core/v1 Event). Best effort: the caller
    /// logs a failure and goes on. Nothing by default (a manifest directory
    /// has nowhere to put events).
    fn send_event(&self, pod: &PodInfo, event: &PodEvent) -> Result<(), SourceError> {
        let _ = (pod, event);
        Ok(())
    }
}
