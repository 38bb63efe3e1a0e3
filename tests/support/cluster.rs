//! A node with a cluster network and a source of pods and NADs, as the
//! meta-plugin sees them on a real node: the namespace with `ens3`, a native
//! cluster network (Debian's `ptp` with `host-local` on 10.244.0.0/24), pods
//! and NADs served by the fake API server or a manifest directory, and every
//! directory of the host config in one scratch directory.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::apiserver::FakeApiServer;
use super::{Cni, CniOutput, Netns, Node, files, scratch, shipped_plugins};

pub const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
pub const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";
pub const CLUSTER_NETWORK: &str = "ptp-cluster-name";
pub fn seed_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples/seed")
        .join(name)
}

/// The seed NAD's `spec.config`, parsed.
pub fn seed_nad_config() -> Value {
    let text = std::fs::read_to_string(seed_file("macvlan-conf.yaml")).expect("seed NAD");
    let manifest: serde_yaml::Value = serde_yaml::from_str(&text).expect("seed NAD is YAML");
    let config = manifest["spec"]["config"]
        .as_str()
        .expect("seed NAD has spec.config");
    serde_json::from_str(config).expect("seed NAD config is JSON")
}

pub fn mac_of(netns: &Netns, dev: &str) -> String {
    netns.ip_json(&["link", "show", "dev", dev])[0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{dev} has no address"))
        .to_string()
}

pub fn error_message(output: &CniOutput) -> String {
    assert_ne!(output.code, 0, "expected a failure, got {}", output.stdout);
    output.json()["msg"]
        .as_str()
        .unwrap_or_else(|| panic!("error JSON without msg: {}", output.stdout))
        .to_string()
}

/// Where pods and NADs come from.
pub enum Source {
    Api(FakeApiServer),
    Local,
}

/// One node (namespace with `ens3`), a scratch directory holding every
/// directory of the host config, and the source of pods and NADs.
pub struct Cluster {
    // The server goes first, while the node's namespace still exists.
    pub source: Source,
    pub node: Node,
    pub dir: tempfile::TempDir,
    pub config: Value,
}

impl Cluster {
    pub fn api() -> Cluster {
        Self::new(true, "1.0.0")
    }

    pub fn local() -> Cluster {
        Self::new(false, "1.0.0")
    }

    pub fn new(api: bool, cni_version: &str) -> Cluster {
        let node = Node::new();
        let dir = scratch();
        let root = dir.path();
        std::fs::create_dir_all(root.join("net.d")).expect("net.d");
        std::fs::create_dir_all(root.join("manifests")).expect("manifests");
        let cluster_network = root.join("net.d/10-ptp.conflist");
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": CLUSTER_NETWORK,
            "plugins": [{
                "type": "ptp",
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "subnet": "10.244.0.0/24",
                    "dataDir": root.join("cluster-ipam"),
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            }]
        });
        std::fs::write(
            &cluster_network,
            serde_json::to_vec_pretty(&conflist).expect("json"),
        )
        .expect("write the cluster network");
        let mut config = json!({
            "cniVersion": cni_version,
            "name": "multus-wasm-network",
            "type": "multus-wasm",
            "clusterNetwork": cluster_network,
            "binDir": "/usr/lib/cni",
            "cniDir": root.join("cni"),
            "manifestDir": root.join("manifests"),
            "wasmCacheDir": root.join("cache"),
            "ipamDataRoots": [root],
            "wasmPlugins": shipped_plugins(),
            "logFile": root.join("multus-wasm.log"),
            "logLevel": "debug",
            "logToStderr": false
        });
        let source = if api {
            // The binary runs in the node's namespace: so does the server.
            let server = FakeApiServer::start_in_netns(&node.netns.path());
            config["kubeconfig"] = json!(server.kubeconfig(root));
            Source::Api(server)
        } else {
            Source::Local
        };
        Cluster {
            source,
            node,
            dir,
            config,
        }
    }

    pub fn server(&self) -> &FakeApiServer {
        match &self.source {
            Source::Api(server) => server,
            Source::Local => panic!("this cluster has no API server"),
        }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// The seed NAD's config with its host-local state under this scratch
    /// directory.
    pub fn seed_config(&self) -> Value {
        let mut config = seed_nad_config();
        config["ipam"]["dataDir"] = json!(self.path("ipam"));
        config
    }

    /// Serve NAD `name` in `default` with `config`.
    pub fn add_nad(&self, name: &str, config: &Value) {
        match &self.source {
            Source::Api(server) => server.add_nad("default", name, &config.to_string()),
            Source::Local => {
                let manifest = json!({
                    "apiVersion": "k8s.cni.cncf.io/v1",
                    "kind": "NetworkAttachmentDefinition",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"config": config.to_string()}
                });
                std::fs::write(
                    self.path(&format!("manifests/{name}.yaml")),
                    serde_yaml::to_string(&manifest).expect("yaml"),
                )
                .expect("write the NAD manifest");
            }
        }
    }

    /// Serve pod `default/samplepod` (uid `uid`) asking for `networks`.
    pub fn add_pod(&self, uid: &str, networks: &str) {
        self.add_pod_named("samplepod", uid, networks);
    }

    /// Serve pod `default/<name>` (uid `uid`) asking for `networks`.
    pub fn add_pod_named(&self, name: &str, uid: &str, networks: &str) {
        self.add_pod_annotated(name, uid, json!({NETWORKS: networks}));
    }

    /// Serve pod `default/<name>` (uid `uid`) with `annotations` (an object
    /// of strings).
    pub fn add_pod_annotated(&self, name: &str, uid: &str, annotations: Value) {
        match &self.source {
            Source::Api(server) => server.add_pod("default", name, uid, annotations),
            Source::Local => {
                let manifest = json!({
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "namespace": "default", "uid": uid,
                                 "annotations": annotations}
                });
                std::fs::write(
                    self.path(&format!("manifests/pod-{name}.yaml")),
                    serde_yaml::to_string(&manifest).expect("yaml"),
                )
                .expect("write the pod manifest");
            }
        }
    }

    /// A CNI call for `samplepod` in `pod`, as kubelet makes it.
    pub fn cni<'a>(&'a self, pod: &Netns, container_id: &str, uid: &str) -> Cni<'a> {
        self.cni_named(pod, "samplepod", container_id, uid)
    }

    /// A CNI call for pod `default/<name>` in `pod`, as kubelet makes it.
    pub fn cni_named<'a>(
        &'a self,
        pod: &Netns,
        name: &str,
        container_id: &str,
        uid: &str,
    ) -> Cni<'a> {
        let mut cni = Cni::new(&self.node, pod, container_id);
        cni.args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID={uid}"
        );
        cni
    }

    /// Every IPAM reservation, as `<network>/<ip>`, in both data dirs.
    pub fn reservations(&self) -> Vec<String> {
        let mut found = Vec::new();
        for root in [self.path("ipam"), self.path("cluster-ipam")] {
            for network in files(&root) {
                for name in files(&root.join(&network)) {
                    if name.parse::<IpAddr>().is_ok() {
                        found.push(format!("{network}/{name}"));
                    }
                }
            }
        }
        found.sort();
        found
    }

    pub fn reservation(&self, network: &str, ip: &str) -> String {
        let dir = if network == CLUSTER_NETWORK {
            "cluster-ipam"
        } else {
            "ipam"
        };
        std::fs::read_to_string(self.path(&format!("{dir}/{network}/{ip}")))
            .unwrap_or_else(|err| panic!("reservation {network}/{ip}: {err}"))
    }

    pub fn cache_files(&self) -> Vec<String> {
        files(&self.path("cni/multus-wasm"))
    }

    /// The node holds only its own links (no ptp veth left).
    pub fn assert_node_clean(&self) {
        assert_eq!(
            super::link_names(&self.node.netns),
            vec!["ens3", "ens3-peer", "lo"],
            "the node keeps only its own links"
        );
    }

    /// Nothing of any pod is left: links, reservations, cache.
    pub fn assert_nothing_left(&self, pod: &Netns, what: &str) {
        assert_eq!(
            super::link_names(pod),
            vec!["lo"],
            "{what}: links left in the pod"
        );
        assert!(
            self.reservations().is_empty(),
            "{what}: reservations left: {:?}",
            self.reservations()
        );
        assert!(
            self.cache_files().is_empty(),
            "{what}: cache left: {:?}",
            self.cache_files()
        );
        self.assert_node_clean();
    }

    pub fn network_status_from_api(&self) -> Value {
        let text = self
            .server()
            .pod_annotation("default", "samplepod", NETWORK_STATUS)
            .expect("the pod has a network-status annotation");
        serde_json::from_str(&text).expect("network-status is JSON")
    }
}
