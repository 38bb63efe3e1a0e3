//! Attacks on the node through the real binary (root): what a NAD author,
//! a pod author or plugin code can try, each refused with its code and a
//! message naming the field or rule, leaving nothing behind (no link, no
//! reservation, no cache, no file) and nothing run.
//!
//! The node runs a ptp cluster network with pods and NADs from the fake API
//! server, as in the meta suite; every test has its own node namespace and
//! scratch directory.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::{Cluster, error_message};
use support::{CniOutput, Netns, files, sh, sh_ok, unique};

/// A bound on a hang (the attacks below used to block forever).
const HANG: Duration = Duration::from_secs(30);

/// ADD pod `name` (uid `uid`) asking for `networks` in a fresh namespace.
fn add_pod(cluster: &Cluster, name: &str, networks: &str) -> (Netns, CniOutput) {
    let uid = format!("uid-{name}");
    cluster.add_pod_named(name, &uid, networks);
    let pod = Netns::new("mwsec");
    let output = cluster
        .cni_named(&pod, name, &format!("ctr-{name}"), &uid)
        .call_within("ADD", &cluster.config, HANG);
    (pod, output)
}

/// The ADD failed with `code`, its message containing every part, and the
/// pod holds nothing.
fn assert_refused(pod: &Netns, output: &CniOutput, code: u64, parts: &[&str]) {
    assert_eq!(output.error_code(), code, "{}", output.stdout);
    let message = error_message(output);
    for part in parts {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    assert_eq!(
        support::link_names(pod),
        vec!["lo"],
        "links left in the pod"
    );
}

/// A bin dir holding the reference plugins (symlinks), a copy of this
/// binary installed as `multus-wasm` (as the DaemonSet does) and `innocent`,
/// `sh`, and `evil`, a script that leaves a marker file when it runs.
struct BinDir {
    dir: PathBuf,
    marker: PathBuf,
}

impl BinDir {
    fn new(cluster: &Cluster) -> BinDir {
        let dir = cluster.path("bin");
        std::fs::create_dir_all(&dir).unwrap();
        for plugin in files(Path::new("/usr/lib/cni")) {
            std::os::unix::fs::symlink(Path::new("/usr/lib/cni").join(&plugin), dir.join(&plugin))
                .unwrap();
        }
        for name in ["multus-wasm", "innocent"] {
            std::fs::copy(support::binary(), dir.join(name)).unwrap();
        }
        std::os::unix::fs::symlink("/bin/sh", dir.join("sh")).unwrap();
        let marker = cluster.path("ran");
        let script = dir.join("evil");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ntouch {}\necho '{{\"cniVersion\":\"1.0.0\"}}'\n",
                marker.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        BinDir { dir, marker }
    }

    fn assert_nothing_ran(&self) {
        assert!(!self.marker.exists(), "a NAD made the host run a program");
    }
}

#[test]
fn a_nad_cannot_make_the_host_exec_a_program() {
    let mut cluster = Cluster::api();
    let bin = BinDir::new(&cluster);
    cluster.config["binDir"] = json!(bin.dir);
    let nested = json!({"binDir": bin.dir, "delegates": [{"type": "evil"}], "clusterNetwork": ""});
    let mut cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "multus-wasm-nad",
            json!({"cniVersion": "1.0.0", "name": "n1", "type": "multus-wasm"}),
            &["meta-plugin", "multus-wasm"],
        ),
        (
            "multus-nad",
            json!({"cniVersion": "1.0.0", "name": "n2", "type": "multus"}),
            &["meta-plugin"],
        ),
        (
            "evil-nad",
            json!({"cniVersion": "1.0.0", "name": "n3", "type": "evil"}),
            &["\"evil\"", "nativePlugins"],
        ),
        (
            "sh-nad",
            json!({"cniVersion": "1.0.0", "name": "n4", "type": "sh"}),
            &["\"sh\"", "nativePlugins"],
        ),
        (
            "evil-ipam-nad",
            json!({"cniVersion": "1.0.0", "name": "n5", "type": "macvlan", "master": "ens3",
                   "ipam": {"type": "evil"}}),
            &["\"evil\"", "nativePlugins"],
        ),
        (
            "sh-ipam-nad",
            json!({"cniVersion": "1.0.0", "name": "n6", "type": "ptp",
                   "ipam": {"type": "sh"}}),
            &["\"sh\"", "nativePlugins"],
        ),
    ];
    for (nad, config, _) in &mut cases {
        for (key, value) in nested.as_object().unwrap() {
            config[key] = value.clone();
        }
        cluster.add_nad(nad, config);
    }
    for (nad, _, parts) in &cases {
        let (pod, output) = add_pod(&cluster, nad, nad);
        assert_refused(&pod, &output, 7, parts);
        bin.assert_nothing_ran();
        cluster.assert_nothing_left(&pod, nad);
    }

    // The operator allowed `innocent`, which is a copy of this binary under
    // another name: it runs, sees it is nested and refuses to act.
    cluster.config["nativePlugins"] = json!(["innocent"]);
    cluster.add_nad(
        "innocent-nad",
        &json!({"cniVersion": "1.0.0", "name": "n7", "type": "innocent",
                "binDir": bin.dir, "delegates": [{"type": "evil"}]}),
    );
    let (pod, output) = add_pod(&cluster, "innocent-nad", "innocent-nad");
    assert_refused(&pod, &output, 7, &["nested call is refused"]);
    bin.assert_nothing_ran();
    cluster.assert_nothing_left(&pod, "innocent");
}

#[test]
fn a_refused_wasm_plugin_never_falls_back_to_the_native_binary() {
    let mut cluster = Cluster::api();
    // Pin macvlan to another file's digest: the module is refused, and the
    // native /usr/lib/cni/macvlan of the same type must not run instead.
    let wrong = support::plugin(test_artifacts::STATIC)["sha256"].clone();
    cluster.config["wasmPlugins"]["macvlan"]["sha256"] = wrong;
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    let (pod, output) = add_pod(&cluster, "pinned", "macvlan-conf");
    assert_refused(&pod, &output, 100, &["macvlan", "refusing it"]);
    cluster.assert_nothing_left(&pod, "refused plugin");
}

/// The host end of a pod's ptp veth in the node namespace.
fn host_veth(cluster: &Cluster) -> String {
    support::link_names(&cluster.node.netns)
        .into_iter()
        .find(|name| !["ens3", "ens3-peer", "lo"].contains(&name.as_str()))
        .expect("the victim's host veth")
}

fn pod_ip(pod: &Netns) -> String {
    let address = pod.addresses("eth0").pop().expect("eth0 has an address");
    address.split('/').next().unwrap().to_string()
}

fn node_reaches(cluster: &Cluster, ip: &str) -> bool {
    sh_ok(&[
        "ip",
        "netns",
        "exec",
        &cluster.node.netns.name,
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        ip,
    ])
}

#[test]
fn a_nad_cannot_take_over_another_pods_veth_a_bridge_or_use_passthru() {
    let mut cluster = Cluster::api();
    let (victim, output) = add_pod(&cluster, "victim", "");
    output.ok();
    let victim_ip = pod_ip(&victim);
    assert!(
        node_reaches(&cluster, &victim_ip),
        "the victim is reachable"
    );
    let veth = host_veth(&cluster);
    let veth_mac = support::cluster::mac_of(&cluster.node.netns, &veth);
    let bridge = unique("mwbr");
    cluster
        .node
        .netns
        .ip(&["link", "add", &bridge, "type", "bridge"]);

    let attack = |master: &str, mode: &str| {
        json!({"cniVersion": "1.0.0", "name": "attack", "type": "macvlan", "master": master,
               "mode": mode,
               "ipam": {"type": "static", "addresses": [{"address": "10.244.0.1/24"}]}})
    };
    let cases = [
        (
            "veth-passthru",
            attack(&veth, "passthru"),
            "peer is in another network namespace",
        ),
        (
            "veth-bridge",
            attack(&veth, "bridge"),
            "peer is in another network namespace",
        ),
        (
            "bridge-master",
            attack(&bridge, "bridge"),
            "is a bridge link",
        ),
        (
            "ens3-passthru",
            attack("ens3", "passthru"),
            "allowedMacvlanModes",
        ),
        (
            "ens3-source",
            attack("ens3", "source"),
            "allowedMacvlanModes",
        ),
    ];
    for (nad, config, reason) in &cases {
        cluster.add_nad(nad, config);
        let (pod, output) = add_pod(&cluster, nad, nad);
        assert_refused(&pod, &output, 107, &["plugin macvlan (sha256 ", reason]);
        assert_eq!(
            support::cluster::mac_of(&cluster.node.netns, &veth),
            veth_mac,
            "{nad}: the victim's veth kept its MAC"
        );
        assert!(
            node_reaches(&cluster, &victim_ip),
            "{nad}: the victim still answers"
        );
    }

    // What the operator widens: passthru on ens3 once allowed there.
    cluster.config["allowedMacvlanModes"] = json!({"ens3": ["passthru"], "*": ["bridge"]});
    let (pod, output) = add_pod(&cluster, "ens3-passthru", "ens3-passthru");
    output.ok();
    assert!(pod.has_link("net1"));
    cluster
        .cni_named(
            &pod,
            "ens3-passthru",
            "ctr-ens3-passthru",
            "uid-ens3-passthru",
        )
        .call("DEL", &cluster.config)
        .ok();
    cluster
        .cni_named(&victim, "victim", "ctr-victim", "uid-victim")
        .call("DEL", &cluster.config)
        .ok();
    cluster.node.netns.ip(&["link", "del", &bridge]);
    cluster.assert_nothing_left(&victim, "after DEL");
}

#[test]
fn resolv_conf_from_a_nad_cannot_hang_or_read_devices() {
    let cluster = Cluster::api();
    let fifo = cluster.path("fifo");
    sh(&["mkfifo", fifo.to_str().unwrap()]);
    for (nad, path) in [
        ("stdout", "/dev/stdout"),
        ("zero", "/dev/zero"),
        ("fifo", fifo.to_str().unwrap()),
    ] {
        let mut config = cluster.seed_config();
        config["ipam"]["resolvConf"] = json!(path);
        cluster.add_nad(nad, &config);
        let (pod, output) = add_pod(&cluster, nad, nad);
        assert_ne!(output.code, 0, "{nad}");
        let message = error_message(&output);
        assert!(message.contains("not a regular file"), "{nad}: {message}");
        assert_eq!(support::link_names(&pod), vec!["lo"]);
        cluster.assert_nothing_left(&pod, nad);
    }
}

#[test]
fn a_held_store_lock_fails_the_add_with_code_11_naming_the_network() {
    let mut cluster = Cluster::api();
    cluster.config["wasmLimits"] = json!({"timeoutMs": 300});
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    let store = cluster.path("ipam/macvlan-conf");
    std::fs::create_dir_all(&store).unwrap();
    let lock = std::fs::File::create(store.join("lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();

    let (pod, output) = add_pod(&cluster, "waiter", "macvlan-conf");
    assert_refused(
        &pod,
        &output,
        11,
        &["network macvlan-conf's IPAM store", "locked by another ADD"],
    );
    cluster.assert_nothing_left(&pod, "lock timeout");

    drop(lock);
    let (pod, output) = add_pod(&cluster, "after", "macvlan-conf");
    output.ok();
    assert!(pod.has_link("net1"), "the ADD works once the lock is free");
    cluster
        .cni_named(&pod, "after", "ctr-after", "uid-after")
        .call("DEL", &cluster.config)
        .ok();
    cluster.assert_nothing_left(&pod, "after DEL");
}

#[test]
fn a_nad_data_dir_outside_the_roots_is_refused_before_anything_is_created() {
    let cluster = Cluster::api();
    let outside = std::env::temp_dir().join(unique("mwevil"));
    let mut config = cluster.seed_config();
    config["ipam"]["dataDir"] = json!(outside.join("deep/down"));
    cluster.add_nad("escape", &config);
    let (pod, output) = add_pod(&cluster, "escape", "escape");
    assert_refused(&pod, &output, 7, &["ipam.dataDir", "ipamDataRoots"]);
    assert!(
        !outside.exists(),
        "a directory was created outside the roots"
    );
    cluster.assert_nothing_left(&pod, "escape");

    // Inside the roots, a file that is not ours survives the store's
    // clean-up of temporary files.
    let store = cluster.path("ipam/macvlan-conf");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join(".someone-else.tmp"), "theirs").unwrap();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    let (pod, output) = add_pod(&cluster, "inside", "macvlan-conf");
    output.ok();
    assert_eq!(
        std::fs::read_to_string(store.join(".someone-else.tmp")).unwrap(),
        "theirs"
    );
    cluster
        .cni_named(&pod, "inside", "ctr-inside", "uid-inside")
        .call("DEL", &cluster.config)
        .ok();
}

#[test]
fn the_ipam_store_of_a_network_is_bounded() {
    let mut cluster = Cluster::api();
    // One reservation plus last_reserved_ip fill a store of two keys.
    cluster.config["wasmLimits"] = json!({"storeMaxKeys": 2});
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    let (first, output) = add_pod(&cluster, "first", "macvlan-conf");
    output.ok();
    let (second, output) = add_pod(&cluster, "second", "macvlan-conf");
    assert_ne!(output.code, 0);
    let message = error_message(&output);
    assert!(message.contains("storeMaxKeys"), "{message}");
    assert_eq!(support::link_names(&second), vec!["lo"]);
    assert_eq!(
        files(&cluster.path("ipam/macvlan-conf")),
        vec!["192.168.1.200", "last_reserved_ip.0", "lock"],
        "the first pod's reservation only"
    );
    cluster
        .cni_named(&first, "first", "ctr-first", "uid-first")
        .call("DEL", &cluster.config)
        .ok();
    cluster.assert_nothing_left(&first, "after DEL");
}

#[test]
fn nobody_can_forge_log_lines() {
    let mut cluster = Cluster::api();
    cluster.config["wasmPlugins"]["hostile"] = support::plugin(test_artifacts::HOSTILE);
    cluster.add_nad(
        "chatty",
        &json!({"cniVersion": "1.0.0", "name": "chatty", "type": "hostile", "behaviour": "log",
                "message": "harmless\n2026-12-04T00:00:00.000000Z ERROR FORGED-BY-PLUGIN"}),
    );
    cluster.add_nad(
        "typo",
        &json!({"cniVersion": "1.0.0", "name": "typo",
                "type": "x\n2026-12-04T00:00:00.000000Z ERROR FORGED-BY-NAD"}),
    );
    let (chatty, _) = add_pod(&cluster, "chatty", "chatty");
    cluster
        .cni_named(&chatty, "chatty", "ctr-chatty", "uid-chatty")
        .call("DEL", &cluster.config)
        .ok();
    let (typo, output) = add_pod(&cluster, "typo", "typo");
    assert_eq!(output.error_code(), 7);
    cluster.assert_nothing_left(&typo, "typo");
    let log = std::fs::read_to_string(cluster.path("multus-wasm.log")).unwrap();
    for forged in ["FORGED-BY-PLUGIN", "FORGED-BY-NAD"] {
        assert!(log.contains(forged), "{forged} is logged at all");
        for line in log.lines() {
            assert!(
                !line.contains(forged) || line.contains("\\n2026-12-04T00:00:00.000000Z ERROR"),
                "a forged line: {line}"
            );
            assert!(!line.starts_with("2026-12-04T00:00:00.000000Z"), "{line}");
        }
    }
}
