//! Real interfaces (root): the host binary called with the CNI protocol, in
//! delegates mode, creates macvlan links in real pod namespaces with every
//! decision made by the wasm guests; DEL removes them; failures leave
//! nothing behind.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::{Cni, Netns, Node, delegates_config, files, scratch, seed_netconf};

fn link_json(pod: &Netns, dev: &str) -> Value {
    pod.ip_json(&["-d", "link", "show", "dev", dev])[0].clone()
}

fn reservations(data_dir: &Path, network: &str) -> Vec<String> {
    files(&data_dir.join(network))
        .into_iter()
        .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
        .collect()
}

#[test]
fn the_seed_netconf_gives_net1_with_the_first_address_and_del_removes_it() {
    let node = Node::new();
    let dir = scratch();
    let data = dir.path().join("ipam");
    let config = delegates_config(dir.path(), vec![seed_netconf(&data)]);
    let pod = Netns::new("mwp");
    let mut cni = Cni::new(&node, &pod, "seed-1");
    cni.ifname = "net1".into();

    let output = cni.call("ADD", &config);
    output.ok();
    let result = output.json();
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["interfaces"][0]["name"], "net1");
    assert_eq!(result["interfaces"][0]["sandbox"], pod.path());
    assert_eq!(result["ips"][0]["address"], "192.168.1.200/24");
    assert_eq!(result["ips"][0]["gateway"], "192.168.1.1");

    let link = link_json(&pod, "net1");
    assert_eq!(link["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(link["linkinfo"]["info_data"]["mode"], "bridge");
    assert_eq!(
        result["interfaces"][0]["mac"], link["address"],
        "result MAC is the kernel's"
    );
    assert!(
        link["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|flag| flag == "UP")
    );
    assert_eq!(pod.addresses("net1"), vec!["192.168.1.200/24"]);
    let routes = pod.ip_json(&["-4", "route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], "192.168.1.1");
    assert_eq!(routes[0]["dev"], "net1");
    assert_eq!(pod.sysctl("net/ipv4/conf/net1/arp_notify"), "1");
    assert_eq!(
        std::fs::read(data.join("macvlan-conf/192.168.1.200")).unwrap(),
        b"seed-1\r\nnet1"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("macvlan-conf/last_reserved_ip.0")).unwrap(),
        "192.168.1.200"
    );

    // A second pod gets the next address.
    let pod2 = Netns::new("mwp");
    let mut cni2 = Cni::new(&node, &pod2, "seed-2");
    cni2.ifname = "net1".into();
    let second = cni2.call("ADD", &config);
    second.ok();
    assert_eq!(second.json()["ips"][0]["address"], "192.168.1.201/24");

    cni.call("DEL", &config).ok();
    assert!(!pod.has_link("net1"), "DEL removes the link");
    let log = std::fs::read_to_string(dir.path().join("multus-wasm.log")).unwrap();
    assert!(
        log.contains("batch delete of the pod's wasm links deleted=true"),
        "{log}"
    );
    assert_eq!(reservations(&data, "macvlan-conf"), vec!["192.168.1.201"]);
    assert!(
        files(&dir.path().join("cni/multus-wasm"))
            .iter()
            .all(|name| !name.contains("seed-1"))
    );
    cni2.call("DEL", &config).ok();
    assert!(reservations(&data, "macvlan-conf").is_empty());
}

fn add_one(
    netconf: Value,
    args: &str,
) -> (Node, Netns, tempfile::TempDir, support::CniOutput, Value) {
    let node = Node::new();
    let dir = scratch();
    let mut config = delegates_config(dir.path(), vec![netconf]);
    // passthru and source need the operator's word (the default allows
    // bridge, private and vepa).
    config["allowedMacvlanModes"] = json!(["bridge", "private", "vepa", "passthru", "source"]);
    let pod = Netns::new("mwp");
    let output = {
        let mut cni = Cni::new(&node, &pod, "mode-test");
        cni.ifname = "net1".into();
        cni.args = args.into();
        cni.call("ADD", &config)
    };
    (node, pod, dir, output, config)
}

#[test]
fn every_macvlan_mode_is_created_as_asked() {
    for mode in ["bridge", "private", "vepa", "passthru", "source"] {
        let dir = scratch();
        let mut netconf = seed_netconf(&dir.path().join("ipam"));
        netconf["mode"] = json!(mode);
        let (_node, pod, _dir, output, _) = add_one(netconf, "");
        output.ok();
        assert_eq!(
            link_json(&pod, "net1")["linkinfo"]["info_data"]["mode"],
            mode,
            "mode {mode}"
        );
    }
}

#[test]
fn mtu_and_mac_are_applied_and_bad_mtu_is_refused() {
    let dir = scratch();
    let mut netconf = seed_netconf(&dir.path().join("ipam"));
    netconf["mtu"] = json!(1280);
    netconf["mac"] = json!("c2:11:22:33:44:01");
    let (_node, pod, _dir, output, _) =
        add_one(netconf.clone(), "IgnoreUnknown=1;MAC=c2:11:22:33:44:55");
    output.ok();
    let link = link_json(&pod, "net1");
    assert_eq!(link["mtu"], 1280);
    assert_eq!(
        link["address"], "c2:11:22:33:44:55",
        "CNI_ARGS MAC= beats the config's mac"
    );
    assert_eq!(output.json()["interfaces"][0]["mac"], "c2:11:22:33:44:55");

    netconf["mtu"] = json!(9000);
    let fresh = scratch();
    netconf["ipam"]["dataDir"] = json!(fresh.path().join("ipam"));
    let (_node, pod, _dir, output, _) = add_one(netconf, "");
    assert_eq!(output.error_code(), 999);
    assert!(
        output.json()["msg"]
            .as_str()
            .unwrap()
            .contains("invalid MTU 9000"),
        "{}",
        output.stdout
    );
    assert!(!pod.has_link("net1"));
    assert!(reservations(&fresh.path().join("ipam"), "macvlan-conf").is_empty());
}

#[test]
fn l2_mode_creates_an_up_link_without_addresses() {
    let netconf = json!({"cniVersion": "1.0.0", "name": "l2", "type": "macvlan", "master": "ens3", "ipam": {}});
    let (_node, pod, _dir, output, _) = add_one(netconf, "");
    output.ok();
    assert!(output.json()["ips"].is_null() || output.json()["ips"] == json!([]));
    assert!(pod.addresses("net1").is_empty());
    assert!(
        link_json(&pod, "net1")["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|flag| flag == "UP")
    );
}

#[test]
fn ipv6_and_dual_stack_ranges_and_requested_ips() {
    let dir = scratch();
    let netconf = json!({
        "cniVersion": "1.0.0", "name": "dual", "type": "macvlan", "master": "ens3",
        "capabilities": {"ips": true},
        "runtimeConfig": {"ips": ["10.20.0.77/24", "2001:db8:20::77/64"]},
        "ipam": {"type": "host-local", "dataDir": dir.path().join("ipam"),
                 "ranges": [[{"subnet": "10.20.0.0/24"}], [{"subnet": "2001:db8:20::/64"}]],
                 "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}
    });
    let (_node, pod, _dir, output, _) = add_one(netconf, "");
    output.ok();
    let mut addresses = pod.addresses("net1");
    addresses.sort();
    assert_eq!(addresses, vec!["10.20.0.77/24", "2001:db8:20::77/64"]);
    let v6_default = pod.ip_json(&["-6", "route", "show", "default"]);
    assert_eq!(v6_default[0]["gateway"], "2001:db8:20::1");
    assert_eq!(pod.sysctl("net/ipv6/conf/net1/ndisc_notify"), "1");
    assert_eq!(
        reservations(&dir.path().join("ipam"), "dual"),
        vec!["10.20.0.77", "2001:db8:20::77"]
    );
}

#[test]
fn two_pods_on_one_master_ping_each_other_in_bridge_mode() {
    let node = Node::new();
    let dir = scratch();
    let config = delegates_config(dir.path(), vec![seed_netconf(&dir.path().join("ipam"))]);
    let pods = [Netns::new("mwp"), Netns::new("mwp")];
    for (index, pod) in pods.iter().enumerate() {
        let mut cni = Cni::new(&node, pod, &format!("ping-{index}"));
        cni.ifname = "net1".into();
        cni.call("ADD", &config).ok();
    }
    let ping = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &pods[0].name,
            "ping",
            "-c",
            "2",
            "-W",
            "2",
            "192.168.1.201",
        ])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "ping failed: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
}

#[test]
fn del_is_idempotent_and_survives_a_missing_netns() {
    let node = Node::new();
    let dir = scratch();
    let data = dir.path().join("ipam");
    let config = delegates_config(dir.path(), vec![seed_netconf(&data)]);
    let pod = Netns::new("mwp");
    let mut cni = Cni::new(&node, &pod, "idem");
    cni.ifname = "net1".into();
    cni.call("ADD", &config).ok();
    cni.call("DEL", &config).ok();
    cni.call("DEL", &config).ok();
    assert!(reservations(&data, "macvlan-conf").is_empty());

    // ADD again, then DEL after the pod's netns is gone: the reservation goes.
    cni.call("ADD", &config).ok();
    let path = pod.path();
    drop(pod);
    let placeholder = Netns::new("mwp");
    let mut gone = Cni::new(&node, &placeholder, "idem");
    gone.netns = path;
    gone.ifname = "net1".into();
    gone.call("DEL", &config).ok();
    assert!(reservations(&data, "macvlan-conf").is_empty());
    gone.netns = String::new();
    gone.call("DEL", &config).ok();
}

#[test]
fn a_failure_at_every_op_index_leaves_nothing_behind() {
    let node = Node::new();
    let dir = scratch();
    let data = dir.path().join("ipam");
    let config = delegates_config(dir.path(), vec![seed_netconf(&data)]);
    // The seed plan has 6 ops: create, 2 sysctls, address, up, route.
    for index in 0..6 {
        let pod = Netns::new("mwp");
        let mut cni = Cni::new(&node, &pod, &format!("fault-{index}"));
        cni.ifname = "net1".into();
        cni.extra_env = vec![("MULTUS_WASM_FAULT_AT_OP".into(), index.to_string())];
        let output = cni.call("ADD", &config);
        assert_ne!(output.code, 0, "fault at op {index} must fail the ADD");
        assert!(
            output
                .stdout
                .contains(&format!("injected fault before op {index}")),
            "{}",
            output.stdout
        );
        assert!(!pod.has_link("net1"), "op {index}: link left behind");
        assert_eq!(
            pod.ip_json(&["-o", "link"])
                .as_array()
                .map(Vec::len)
                .unwrap_or(1),
            1,
            "only lo remains"
        );
        assert!(
            reservations(&data, "macvlan-conf").is_empty(),
            "op {index}: reservation left behind"
        );
        assert!(
            files(&dir.path().join("cni/multus-wasm")).is_empty(),
            "op {index}: cache left behind"
        );
    }
}

#[test]
fn a_plan_that_breaks_policy_is_refused_with_nothing_applied() {
    let node = Node::new();
    let dir = scratch();
    // A new namespace inherits the host's IPv4 forwarding (1 on a Kubernetes
    // node or a Docker host): the plan asks for the other value, so that
    // applying it would show.
    let pod = Netns::new("mwp");
    let forwarding = pod.sysctl("net/ipv4/conf/all/forwarding");
    let flipped = if forwarding == "0" { "1" } else { "0" };
    let mut config = delegates_config(
        dir.path(),
        vec![json!({
            "cniVersion": "1.0.0", "name": "evil", "type": "hostile", "behaviour": "plan",
            "ops": [
                {"op": "create-macvlan", "name": "net1", "master": "ens3"},
                {"op": "set-link-up", "link": "net1"},
                {"op": "set-sysctl", "key": "net/ipv4/conf/all/forwarding", "value": flipped}
            ]
        })],
    );
    config["wasmPlugins"]["hostile"] = support::plugin(test_artifacts::HOSTILE);
    let mut cni = Cni::new(&node, &pod, "evil");
    cni.ifname = "net1".into();
    let output = cni.call("ADD", &config);
    assert_eq!(output.error_code(), 107);
    assert!(
        output.json()["msg"]
            .as_str()
            .unwrap()
            .contains("op 2 (set-sysctl"),
        "{}",
        output.stdout
    );
    assert!(!pod.has_link("net1"), "nothing may be applied");
    assert_eq!(
        pod.sysctl("net/ipv4/conf/all/forwarding"),
        forwarding,
        "the refused plan changed forwarding"
    );
}

#[test]
fn a_failed_op_and_a_native_plugins_error_name_their_plugin() {
    let node = Node::new();
    let dir = scratch();
    let pod = Netns::new("mwp");
    // The kernel refuses the MTU (over a macvlan's maximum): op 2 fails.
    let mut config = delegates_config(
        dir.path(),
        vec![json!({
            "cniVersion": "1.0.0", "name": "mtu", "type": "hostile", "behaviour": "plan",
            "ops": [
                {"op": "create-macvlan", "name": "net1", "master": "ens3"},
                {"op": "set-link-up", "link": "net1"},
                {"op": "set-mtu", "link": "net1", "mtu": 1_000_000}
            ]
        })],
    );
    config["wasmPlugins"]["hostile"] = support::plugin(test_artifacts::HOSTILE);
    let mut cni = Cni::new(&node, &pod, "mtu");
    cni.ifname = "net1".into();
    let output = cni.call("ADD", &config);
    assert_ne!(output.code, 0, "{}", output.stdout);
    let message = output.json()["msg"].as_str().unwrap().to_string();
    assert!(
        message.contains("plugin hostile (sha256 ") && message.contains("op 2 (set-mtu"),
        "{message}"
    );
    assert!(!pod.has_link("net1"), "the failed plan is undone");

    // A native delegate's own error names it, with its own code kept.
    let config = delegates_config(
        dir.path(),
        vec![
            json!({"cniVersion": "1.0.0", "name": "bad-ptp", "type": "ptp",
                    "ipam": {"type": "host-local", "subnet": "not-a-subnet"}}),
        ],
    );
    let output = cni.call("ADD", &config);
    let error = output.json();
    assert_ne!(output.code, 0, "{}", output.stdout);
    assert!(
        error["msg"].as_str().unwrap().contains("plugin ptp: "),
        "{error}"
    );
    assert!(!pod.has_link("net1"));
}

#[test]
fn static_ipam_applies_configured_and_requested_addresses() {
    let netconf = json!({
        "cniVersion": "1.0.0", "name": "static-net", "type": "macvlan", "master": "ens3",
        "ipam": {"type": "static",
                 "addresses": [{"address": "10.30.0.5/24", "gateway": "10.30.0.1"}],
                 "routes": [{"dst": "10.31.0.0/16"}],
                 "dns": {"nameservers": ["10.30.0.53"]}}
    });
    let (_node, pod, dir, output, _) = add_one(netconf.clone(), "");
    output.ok();
    let result = output.json();
    assert_eq!(result["ips"][0]["address"], "10.30.0.5/24");
    assert_eq!(
        result["dns"],
        json!({}),
        "macvlan takes dns from its own config, not IPAM's"
    );
    assert_eq!(pod.addresses("net1"), vec!["10.30.0.5/24"]);
    let route = pod.ip_json(&["route", "show", "10.31.0.0/16"]);
    assert_eq!(
        route[0]["gateway"], "10.30.0.1",
        "the IPAM gateway is the route's fallback"
    );
    assert!(
        files(&dir.path().join("ipam")).is_empty(),
        "static keeps no state"
    );

    // CNI_ARGS IP= adds an address (the reference's legacy form).
    let (_node, pod, _dir, output, _) = add_one(netconf, "IgnoreUnknown=1;IP=10.30.0.9/24");
    output.ok();
    let mut addresses = pod.addresses("net1");
    addresses.sort();
    assert_eq!(addresses, vec!["10.30.0.5/24", "10.30.0.9/24"]);
}

/// The pod's own `eth0` (a veth end made by the test) as `ip -d` shows the
/// settings the 0.2 ops change.
fn settings(pod: &Netns, dev: &str) -> Value {
    let link = link_json(pod, dev);
    json!({"mtu": link["mtu"], "txqlen": link["txqlen"], "flags": link["flags"],
           "address": link["address"],
           "base_reachable_time_ms": pod.sysctl(&format!("net/ipv4/neigh/{dev}/base_reachable_time_ms"))})
}

#[test]
fn the_0_2_ops_touch_only_the_attachment_interface_on_add_and_del() {
    let node = Node::new();
    let dir = scratch();
    let pod = Netns::new("mwp");
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
    ]);
    pod.ip(&["link", "set", "eth0", "up"]);
    let before = settings(&pod, "eth0");
    let attacks = [
        json!({"op": "set-promisc", "link": "eth0", "on": true}),
        json!({"op": "set-allmulti", "link": "eth0", "on": true}),
        json!({"op": "set-link-down", "link": "eth0"}),
        json!({"op": "set-txqueuelen", "link": "eth0", "len": 5}),
        json!({"op": "set-txqueuelen", "link": "net1", "len": 10_000_000}),
        json!({"op": "set-sysctl", "key": "net/ipv4/neigh/eth0/base_reachable_time_ms", "value": "1"}),
        json!({"op": "set-sysctl", "key": "net/ipv4/neigh/default/gc_thresh3", "value": "1"}),
    ];
    let mut cni = Cni::new(&node, &pod, "evil-02");
    cni.ifname = "net1".into();
    for attack in &attacks {
        let mut config = delegates_config(
            dir.path(),
            vec![json!({
                "cniVersion": "1.0.0", "name": "evil", "type": "hostile", "behaviour": "plan",
                "ops": [
                    {"op": "create-macvlan", "name": "net1", "master": "ens3"},
                    {"op": "set-link-up", "link": "net1"},
                    attack
                ]
            })],
        );
        config["wasmPlugins"]["hostile"] = support::plugin(test_artifacts::HOSTILE);
        let output = cni.call("ADD", &config);
        assert_eq!(output.error_code(), 107, "{attack}: {}", output.stdout);
        assert!(
            output.stdout.contains("op 2 ("),
            "{attack}: {}",
            output.stdout
        );
        assert!(!pod.has_link("net1"), "{attack}: nothing may be applied");
        assert_eq!(settings(&pod, "eth0"), before, "{attack}");
    }
    // A DEL plan may restore its own interface's settings, not another's:
    // the plugin keeps state, so its DEL runs even in the batch delete.
    for attack in &attacks[..4] {
        let mut config = delegates_config(
            dir.path(),
            vec![json!({
                "cniVersion": "1.0.0", "name": "evil", "type": "hostile", "behaviour": "plan",
                "state": "{}",
                "ops": [
                    {"op": "create-macvlan", "name": "net1", "master": "ens3"},
                    {"op": "set-link-up", "link": "net1"}
                ],
                "del_ops": [attack, {"op": "delete-link", "link": "net1"}]
            })],
        );
        config["wasmPlugins"]["hostile"] = support::plugin(test_artifacts::HOSTILE);
        cni.call("ADD", &config).ok();
        let output = cni.call("DEL", &config);
        assert_eq!(output.error_code(), 107, "{attack}: {}", output.stdout);
        assert!(
            output.stdout.contains("op 0 ("),
            "{attack}: {}",
            output.stdout
        );
        assert_eq!(settings(&pod, "eth0"), before, "DEL {attack}");
        // The runtime's retry: the batch took net1 and the cache is kept.
        assert!(!pod.has_link("net1"), "DEL {attack}");
    }
}

#[test]
fn link_info_shows_a_pod_links_master_flags_and_queue() {
    let node = Node::new();
    let dir = scratch();
    let pod = Netns::new("mwp");
    let data = dir.path().join("ipam");
    let mut seed = seed_netconf(&data);
    seed.as_object_mut().unwrap().remove("cniVersion");
    seed.as_object_mut().unwrap().remove("name");
    let list = json!({"cniVersion": "1.0.0", "name": "seen", "plugins": [
        seed,
        {"type": "tuning", "promisc": true, "txQLen": 1234},
        {"type": "hostile", "behaviour": "link-info", "message": "net1"}
    ]});
    let mut config = delegates_config(dir.path(), vec![list]);
    config["wasmPlugins"]["hostile"] = support::plugin(test_artifacts::HOSTILE);
    let mut cni = Cni::new(&node, &pod, "link-info");
    cni.ifname = "net1".into();
    let output = cni.call("ADD", &config);
    let message = output.json()["msg"].as_str().unwrap().to_string();
    // What a chained plugin sees of the interface the plugins before it made.
    for expected in [
        "kind: \"macvlan\"",
        "promisc: true",
        "allmulti: false",
        "txqueuelen: 1234",
        "master: Some(\"ens3\")",
        "master-mtu: Some(1500)",
    ] {
        assert!(message.contains(expected), "{expected}: {message}");
    }
    assert!(!pod.has_link("net1"), "the failed chain is rolled back");
    assert!(reservations(&data, "seen").is_empty());
}
