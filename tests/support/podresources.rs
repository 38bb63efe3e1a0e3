//! A stand-in for kubelet's pod-resources service: the generated v1
//! `PodResourcesLister` server (tonic, the same protobuf as kubelet's API)
//! on a unix socket in a scratch directory, answering `List` with the
//! devices a test allocated. Stopped (and its socket removed) on drop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use multus_wasm_podresources::v1::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use multus_wasm_podresources::v1::{
    ContainerDevices, ContainerResources, ListPodResourcesRequest, ListPodResourcesResponse,
    PodResources,
};

#[derive(Clone, Default)]
struct Lister {
    pods: Arc<Mutex<Vec<PodResources>>>,
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl PodResourcesLister for Lister {
    async fn list(
        &self,
        _request: tonic::Request<ListPodResourcesRequest>,
    ) -> Result<tonic::Response<ListPodResourcesResponse>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(tonic::Response::new(ListPodResourcesResponse {
            pod_resources: self.pods.lock().unwrap().clone(),
        }))
    }
}

pub struct FakePodResources {
    lister: Lister,
    socket: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl FakePodResources {
    pub fn start() -> FakePodResources {
        let dir = super::scratch();
        let socket = dir.path().join("kubelet.sock");
        let lister = Lister::default();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let socket = socket.clone();
            let lister = lister.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
                    ready_tx.send(()).unwrap();
                    let incoming = futures::stream::unfold(listener, |listener| async move {
                        let accepted = listener.accept().await.map(|(stream, _)| stream);
                        Some((accepted, listener))
                    });
                    tonic::transport::Server::builder()
                        .add_service(PodResourcesListerServer::new(lister))
                        .serve_with_incoming_shutdown(incoming, async {
                            let _ = stopped.await;
                        })
                        .await
                        .unwrap();
                })
            })
        };
        ready_rx.recv().expect("the pod-resources server starts");
        FakePodResources {
            lister,
            socket,
            shutdown: Some(shutdown),
            thread: Some(thread),
            _dir: dir,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// kubelet allocated `device_ids` of `resource` to container
    /// `container` of pod `namespace/name`.
    pub fn allocate(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        resource: &str,
        device_ids: &[&str],
    ) {
        let mut pods = self.lister.pods.lock().unwrap();
        let index = match pods
            .iter()
            .position(|pod| pod.namespace == namespace && pod.name == name)
        {
            Some(index) => index,
            None => {
                pods.push(PodResources {
                    name: name.into(),
                    namespace: namespace.into(),
                    containers: Vec::new(),
                });
                pods.len() - 1
            }
        };
        pods[index].containers.push(ContainerResources {
            name: container.into(),
            devices: vec![ContainerDevices {
                resource_name: resource.into(),
                device_ids: device_ids.iter().map(|id| id.to_string()).collect(),
            }],
        });
    }

    /// How many `List` calls were answered.
    pub fn calls(&self) -> usize {
        self.lister.calls.load(Ordering::SeqCst)
    }
}

impl Drop for FakePodResources {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
