//! kubelet's pod-resources API (v1): which devices the device plugins
//! allocated to a pod. kubelet serves it over gRPC on a unix socket
//! (default [`DEFAULT_SOCKET`]); Multus asks it for the device ID of a
//! network whose NAD names a `k8s.v1.cni.cncf.io/resourceName`, and so do we.
//!
//! [`v1`] is generated from `proto/podresources.proto` (client and server:
//! the tests' fake kubelet implements the server). [`pod_devices`] is the
//! one call the host makes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The generated messages, client and server.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("v1");
}

/// Where kubelet serves the API.
pub const DEFAULT_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

/// The largest answer accepted (as Multus: 16 MiB; a node with many pods
/// and devices answers in kilobytes).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubelet's pod-resources socket {socket}: {reason}")]
    Unavailable { socket: PathBuf, reason: String },
    #[error("kubelet's pod-resources List on {socket} did not answer within {timeout:?}")]
    Timeout { socket: PathBuf, timeout: Duration },
    #[error("kubelet's pod-resources List on {socket} failed: {status}")]
    Call {
        socket: PathBuf,
        status: Box<tonic::Status>,
    },
}

/// The device IDs allocated to pod `namespace/name`, by resource name
/// (every container's together, sorted, duplicates removed); empty when the
/// pod is not listed or has no devices.
pub async fn pod_devices(
    socket: &Path,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<BTreeMap<String, Vec<String>>, Error> {
    let listed = tokio::time::timeout(timeout, list(socket))
        .await
        .map_err(|_| Error::Timeout {
            socket: socket.to_path_buf(),
            timeout,
        })??;
    Ok(devices_of(&listed, namespace, name))
}

/// One `List` call over the unix socket.
async fn list(socket: &Path) -> Result<v1::ListPodResourcesResponse, Error> {
    let path = socket.to_path_buf();
    // The authority is never used: the connector dials the socket.
    let channel = tonic::transport::Endpoint::from_static("http://kubelet")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|err| Error::Unavailable {
            socket: socket.to_path_buf(),
            reason: source_chain(&err),
        })?;
    let mut client = v1::pod_resources_lister_client::PodResourcesListerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    client
        .list(v1::ListPodResourcesRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| Error::Call {
            socket: socket.to_path_buf(),
            status: Box::new(status),
        })
}

/// The pod's device IDs by resource name, from a `List` answer.
pub fn devices_of(
    listed: &v1::ListPodResourcesResponse,
    namespace: &str,
    name: &str,
) -> BTreeMap<String, Vec<String>> {
    let mut devices: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pod in listed
        .pod_resources
        .iter()
        .filter(|pod| pod.namespace == namespace && pod.name == name)
    {
        for container in &pod.containers {
            for allocated in &container.devices {
                devices
                    .entry(allocated.resource_name.clone())
                    .or_default()
                    .extend(allocated.device_ids.iter().cloned());
            }
        }
    }
    for ids in devices.values_mut() {
        ids.sort();
        ids.dedup();
    }
    devices
}

/// An error with its causes, `a: b: c` (tonic's transport error hides the
/// io error that says what went wrong).
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::v1::*;
    use super::*;

    fn container(name: &str, devices: &[(&str, &[&str])]) -> ContainerResources {
        ContainerResources {
            name: name.into(),
            devices: devices
                .iter()
                .map(|(resource, ids)| ContainerDevices {
                    resource_name: resource.to_string(),
                    device_ids: ids.iter().map(|id| id.to_string()).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_pods_devices_are_gathered_from_its_containers_sorted() {
        let listed = ListPodResourcesResponse {
            pod_resources: vec![
                PodResources {
                    name: "web".into(),
                    namespace: "default".into(),
                    containers: vec![
                        container(
                            "a",
                            &[("intel.com/sriov", &["0000:03:00.3", "0000:03:00.1"])],
                        ),
                        container(
                            "b",
                            &[
                                ("intel.com/sriov", &["0000:03:00.2"]),
                                ("example.com/gpu", &["gpu0"]),
                            ],
                        ),
                    ],
                },
                // Same name, other namespace; other pod, same namespace.
                PodResources {
                    name: "web".into(),
                    namespace: "other".into(),
                    containers: vec![container("a", &[("intel.com/sriov", &["0000:04:00.1"])])],
                },
                PodResources {
                    name: "db".into(),
                    namespace: "default".into(),
                    containers: vec![container("a", &[("intel.com/sriov", &["0000:05:00.1"])])],
                },
            ],
        };
        let devices = devices_of(&listed, "default", "web");
        assert_eq!(
            devices["intel.com/sriov"],
            vec!["0000:03:00.1", "0000:03:00.2", "0000:03:00.3"]
        );
        assert_eq!(devices["example.com/gpu"], vec!["gpu0"]);
        assert_eq!(devices.len(), 2);
        assert!(devices_of(&listed, "default", "nope").is_empty());
    }
}
