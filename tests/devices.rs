//! Device plugins (root): a NAD annotated `k8s.v1.cni.cncf.io/resourceName`
//! gets the device kubelet allocated to the pod. The allocation comes from
//! a stand-in for kubelet's pod-resources service speaking its gRPC API
//! (`support::podresources`); the delegate is a host-device-style native
//! plugin that records the config it was given; the device plugin's NPWG
//! device-info file is copied for the delegate and reported in
//! network-status.

mod support;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::Netns;
use support::cluster::{Cluster, NETWORK_STATUS, error_message};
use support::podresources::FakePodResources;

const RESOURCE: &str = "example.com/sriov";
const RESOURCE_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

/// A cluster whose binDir holds the reference plugins of the cluster
/// network and `recorder`, a native delegate writing the config it gets
/// to `records/<command>-<ifname>.json` and answering with its interface.
struct Devices {
    cluster: Cluster,
    kubelet: FakePodResources,
    config: Value,
}

impl Devices {
    fn new() -> Devices {
        let cluster = Cluster::api();
        let kubelet = FakePodResources::start();
        let bin = cluster.path("bin");
        let records = cluster.path("records");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&records).unwrap();
        for plugin in ["ptp", "host-local"] {
            std::os::unix::fs::symlink(Path::new("/usr/lib/cni").join(plugin), bin.join(plugin))
                .unwrap();
        }
        let recorder = bin.join("recorder");
        std::fs::write(
            &recorder,
            format!(
                "#!/bin/sh\ncat > {}/\"$CNI_COMMAND-$CNI_IFNAME.json\"\n\
                 if [ \"$CNI_COMMAND\" = ADD ]; then\n\
                 printf '{{\"cniVersion\":\"1.0.0\",\"interfaces\":[{{\"name\":\"%s\",\"sandbox\":\"%s\"}}]}}' \"$CNI_IFNAME\" \"$CNI_NETNS\"\n\
                 fi\n",
                records.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &recorder,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mut config = cluster.config.clone();
        config["binDir"] = json!(bin);
        config["nativePlugins"] = json!(["recorder"]);
        config["podResourcesSocket"] = json!(kubelet.socket());
        config["deviceInfoDir"] = json!(cluster.path("devinfo"));
        let nad = json!({"cniVersion": "1.0.0", "name": "sriov-net", "type": "recorder",
                         "capabilities": {"deviceID": true, "CNIDeviceInfoFile": true}});
        cluster.server().add_nad_annotated(
            "default",
            "sriov-net",
            &nad.to_string(),
            json!({RESOURCE_ANNOTATION: RESOURCE}),
        );
        Devices {
            cluster,
            kubelet,
            config,
        }
    }

    /// What `recorder` was given for `command` on `ifname`.
    fn record(&self, command: &str, ifname: &str) -> Value {
        let path = self
            .cluster
            .path(&format!("records/{command}-{ifname}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("recorder got no {command} for {ifname}: {err}"));
        serde_json::from_str(&text).unwrap()
    }

    fn devinfo(&self, relative: &str) -> PathBuf {
        self.cluster.path(&format!("devinfo/{relative}"))
    }

    /// Every file under the device-info dir's `cni/`.
    fn cni_devinfo_files(&self) -> Vec<String> {
        support::files(&self.devinfo("cni"))
    }
}

#[test]
fn kubelets_devices_reach_the_delegates_in_order_with_their_device_info() {
    let devices = Devices::new();
    // Two networks of the resource; kubelet allocated two devices (listed
    // out of order, across two containers).
    devices.cluster.add_pod("uid-sriov", "sriov-net,sriov-net");
    devices
        .kubelet
        .allocate("default", "samplepod", "app", RESOURCE, &["0000:03:00.2"]);
    devices.kubelet.allocate(
        "default",
        "samplepod",
        "sidecar",
        RESOURCE,
        &["0000:03:00.1"],
    );
    // Another pod's devices are not ours.
    devices
        .kubelet
        .allocate("default", "otherpod", "app", RESOURCE, &["0000:03:00.0"]);
    // The device plugin describes the first device.
    let described = json!({"type": "pci", "version": "1.1.0",
                           "pci": {"pci-address": "0000:03:00.1"}});
    std::fs::create_dir_all(devices.devinfo("dp")).unwrap();
    std::fs::write(
        devices.devinfo("dp/example.com-sriov-0000:03:00.1-device.json"),
        described.to_string(),
    )
    .unwrap();

    let pod = Netns::new("mwdev");
    let cni = devices.cluster.cni(&pod, "dev-one", "uid-sriov");
    cni.call("ADD", &devices.config).ok();
    assert_eq!(devices.kubelet.calls(), 1, "one List per ADD");

    let net1 = devices.record("ADD", "net1");
    assert_eq!(net1["deviceID"], "0000:03:00.1", "{net1}");
    assert_eq!(net1["pciBusID"], "0000:03:00.1", "{net1}");
    assert_eq!(net1["runtimeConfig"]["deviceID"], "0000:03:00.1", "{net1}");
    let info_file = net1["runtimeConfig"]["CNIDeviceInfoFile"]
        .as_str()
        .expect("the delegate gets its device-info file")
        .to_string();
    assert_eq!(
        info_file,
        devices
            .devinfo("cni/default-sriov-net-dev-one_net1")
            .display()
            .to_string()
    );
    let copied: Value =
        serde_json::from_str(&std::fs::read_to_string(&info_file).unwrap()).unwrap();
    assert_eq!(copied, described);
    let net2 = devices.record("ADD", "net2");
    assert_eq!(net2["deviceID"], "0000:03:00.2", "{net2}");
    assert_eq!(net2["runtimeConfig"]["deviceID"], "0000:03:00.2", "{net2}");

    let status: Value = serde_json::from_str(
        &devices
            .cluster
            .server()
            .pod_annotation("default", "samplepod", NETWORK_STATUS)
            .unwrap(),
    )
    .unwrap();
    let entry = |ifname: &str| {
        status
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["interface"] == ifname)
            .unwrap_or_else(|| panic!("no status for {ifname}: {status}"))
            .clone()
    };
    assert_eq!(entry("net1")["device-info"], described, "{status}");
    assert!(entry("net2").get("device-info").is_none(), "{status}");

    cni.call("DEL", &devices.config).ok();
    assert_eq!(devices.record("DEL", "net1")["deviceID"], "0000:03:00.1");
    assert!(
        devices.cni_devinfo_files().is_empty(),
        "DEL removes the attachments' device info: {:?}",
        devices.cni_devinfo_files()
    );
    assert!(
        devices
            .devinfo("dp/example.com-sriov-0000:03:00.1-device.json")
            .exists(),
        "the device plugin's own file is not ours to remove"
    );
    devices.cluster.assert_nothing_left(&pod, "after DEL");
}

#[test]
fn a_pod_without_a_device_of_the_resource_is_refused_and_nothing_is_left() {
    let devices = Devices::new();
    devices.cluster.add_pod("uid-nodev", "sriov-net");
    // kubelet gave the pod another resource only.
    devices
        .kubelet
        .allocate("default", "samplepod", "app", "example.com/gpu", &["gpu0"]);
    let pod = Netns::new("mwdev");
    let cni = devices.cluster.cni(&pod, "dev-none", "uid-nodev");
    let output = cni.call("ADD", &devices.config);
    assert_eq!(output.error_code(), 7, "{}", output.stdout);
    let message = error_message(&output);
    for part in [
        "default/sriov-net",
        RESOURCE,
        "default/samplepod",
        "resources.limits",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert!(
        !devices.cluster.path("records/ADD-net1.json").exists(),
        "the delegate never ran"
    );
    devices
        .cluster
        .assert_nothing_left(&pod, "after the refused ADD");
    assert!(devices.cni_devinfo_files().is_empty());
    cni.call("DEL", &devices.config).ok();
}

#[test]
fn without_kubelets_pod_resources_the_add_is_retried_later() {
    let devices = Devices::new();
    devices.cluster.add_pod("uid-nokubelet", "sriov-net");
    let mut config = devices.config.clone();
    let missing = devices.cluster.path("no-kubelet/kubelet.sock");
    config["podResourcesSocket"] = json!(missing);
    let pod = Netns::new("mwdev");
    let cni = devices.cluster.cni(&pod, "dev-nokubelet", "uid-nokubelet");
    let output = cni.call("ADD", &config);
    assert_eq!(output.error_code(), 11, "{}", output.stdout);
    let message = error_message(&output);
    assert!(
        message.contains(&missing.display().to_string()),
        "names the socket: {message}"
    );
    devices
        .cluster
        .assert_nothing_left(&pod, "after the failed ADD");
    // A network without a resource never asks kubelet.
    let plain = json!({"cniVersion": "1.0.0", "name": "plain", "type": "recorder"});
    devices.cluster.add_nad("plain", &plain);
    devices
        .cluster
        .add_pod_named("plainpod", "uid-plain", "plain");
    let other = Netns::new("mwdev");
    let plain_cni = devices
        .cluster
        .cni_named(&other, "plainpod", "dev-plain", "uid-plain");
    plain_cni.call("ADD", &config).ok();
    assert!(devices.record("ADD", "net1").get("deviceID").is_none());
    plain_cni.call("DEL", &config).ok();
    devices.cluster.assert_nothing_left(&other, "after DEL");
}
