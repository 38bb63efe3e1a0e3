//! The meta-plugin end to end (root): the real binary called as kubelet
//! would, with a native cluster network (Debian's `ptp` with `host-local` on
//! 10.244.0.0/24) and the seed NAD `macvlan-conf` run by the wasm plugins,
//! pods and NADs served by the fake API server (or a manifest directory).
//! Every test checks the kernel, the IPAM directories, the attachment cache
//! and the pod's network-status, and that a failure leaves nothing behind.

mod support;

use serde_json::{Value, json};
use support::Netns;
use support::cluster::{
    CLUSTER_NETWORK, Cluster, NETWORK_STATUS, error_message, mac_of, seed_file,
};

const STATUS_PUT: &str = "PUT /api/v1/namespaces/default/pods/samplepod/status";

fn link_kind(netns: &Netns, dev: &str) -> Value {
    netns.ip_json(&["-d", "link", "show", "dev", dev])[0]["linkinfo"]["info_kind"].clone()
}

/// `ip route` entries of `netns` for `dst` (IPv4), as (dev, gateway), in
/// the kernel's order.
fn routes_to(netns: &Netns, dst: &str) -> Vec<(String, String)> {
    netns
        .ip_json(&["-4", "route", "show", dst])
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .map(|route| {
                    (
                        route["dev"].as_str().unwrap_or_default().to_string(),
                        route["gateway"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The cluster network's part of an ADD: the returned result is ptp's (eth0
/// in the pod, 10.244.0.x), and the pod has that address on eth0. Returns
/// eth0's address without prefix.
fn assert_cluster_result(pod: &Netns, result: &Value, version: &str) -> String {
    assert_eq!(result["cniVersion"], version);
    let interfaces = result["interfaces"].as_array().expect("interfaces");
    let eth0 = interfaces
        .iter()
        .position(|interface| interface["name"] == "eth0")
        .unwrap_or_else(|| panic!("no eth0 in the result: {result}"));
    assert_eq!(interfaces[eth0]["sandbox"], pod.path());
    assert_eq!(interfaces[eth0]["mac"], mac_of(pod, "eth0"));
    assert!(
        interfaces
            .iter()
            .all(|interface| !interface["name"].as_str().unwrap().starts_with("net")),
        "the result is the cluster network's only: {result}"
    );
    let ips = result["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 1, "{result}");
    let address = ips[0]["address"].as_str().unwrap();
    assert!(address.starts_with("10.244.0."), "{result}");
    assert!(address.ends_with("/24"), "{result}");
    assert_eq!(ips[0]["interface"], eth0);
    assert_eq!(pod.addresses("eth0"), vec![address.to_string()]);
    address.split('/').next().unwrap().to_string()
}

/// The network-status entry of the cluster network.
fn cluster_entry(pod: &Netns, eth0_ip: &str) -> Value {
    json!({
        "name": CLUSTER_NETWORK,
        "interface": "eth0",
        "ips": [eth0_ip],
        "mac": mac_of(pod, "eth0"),
        "default": true,
        "dns": {},
        "gateway": ["10.244.0.1"]
    })
}

/// The network-status entry of a seed macvlan attachment.
fn macvlan_entry(pod: &Netns, ifname: &str, ip: &str) -> Value {
    json!({
        "name": "default/macvlan-conf",
        "interface": ifname,
        "ips": [ip],
        "mac": mac_of(pod, ifname),
        "dns": {},
        "gateway": ["192.168.1.1"]
    })
}

/// The seed scenario, the pods served by `serve_pod(index)` and their
/// network-status read by `status(index)`.
fn seed_scenario(
    cluster: &Cluster,
    serve_pod: impl Fn(usize, &str),
    status: impl Fn(usize) -> Value,
) {
    cluster.add_nad("macvlan-conf", &cluster.seed_config());

    // samplepod-one: net1 192.168.1.200.
    let uid = "5f9c1a2e-0001-4c6e-9a53-1d2f3e4a5b61";
    serve_pod(0, uid);
    let pod = Netns::new("mwp");
    let cni = cluster.cni(&pod, "seed-one", uid);
    let output = cni.call("ADD", &cluster.config);
    output.ok();
    let result = output.json();
    let eth0_ip = assert_cluster_result(&pod, &result, "1.0.0");

    assert_eq!(link_kind(&pod, "net1"), "macvlan");
    assert_eq!(pod.addresses("net1"), vec!["192.168.1.200/24"]);
    assert_eq!(
        support::link_names(&pod),
        vec!["eth0", "lo", "net1"],
        "the pod has its cluster and its macvlan interface"
    );
    // Both networks ask for a default route and the annotation does not
    // choose (no `default-route`): each is added beside the ones already
    // there (NLM_F_CREATE without EXCL, as the reference plugins do), which
    // the kernel puts first, so the pod's traffic now leaves through net1.
    assert_eq!(
        routes_to(&pod, "default"),
        vec![
            ("net1".to_string(), "192.168.1.1".to_string()),
            ("eth0".to_string(), "10.244.0.1".to_string())
        ]
    );
    let via = pod.ip_json(&["-4", "route", "get", "1.1.1.1"]);
    assert_eq!(via[0]["dev"], "net1", "{via}");

    assert_eq!(
        status(0),
        json!([
            cluster_entry(&pod, &eth0_ip),
            macvlan_entry(&pod, "net1", "192.168.1.200")
        ])
    );
    assert_eq!(
        cluster.reservations(),
        vec![
            "macvlan-conf/192.168.1.200".to_string(),
            format!("{CLUSTER_NETWORK}/{eth0_ip}")
        ]
    );
    assert_eq!(
        cluster.reservation("macvlan-conf", "192.168.1.200"),
        "seed-one\r\nnet1"
    );
    assert_eq!(
        cluster.reservation(CLUSTER_NETWORK, &eth0_ip),
        "seed-one\r\neth0"
    );
    assert_eq!(cluster.cache_files(), vec!["seed-one.json"]);
    let cache = std::fs::metadata(cluster.path("cache")).expect("the host made its cache dir");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(cache.permissions().mode() & 0o777, 0o700);

    cni.call("DEL", &cluster.config).ok();
    cluster.assert_nothing_left(&pod, "after DEL of samplepod-one");
    drop(pod);

    // samplepod-two: net1 .201, net2 .202.
    let uid = "5f9c1a2e-0002-4c6e-9a53-1d2f3e4a5b62";
    serve_pod(1, uid);
    let pod = Netns::new("mwp");
    let cni = cluster.cni(&pod, "seed-two", uid);
    let output = cni.call("ADD", &cluster.config);
    output.ok();
    let eth0_ip = assert_cluster_result(&pod, &output.json(), "1.0.0");
    assert_eq!(
        support::link_names(&pod),
        vec!["eth0", "lo", "net1", "net2"]
    );
    assert_eq!(pod.addresses("net1"), vec!["192.168.1.201/24"]);
    assert_eq!(pod.addresses("net2"), vec!["192.168.1.202/24"]);
    assert_eq!(link_kind(&pod, "net2"), "macvlan");
    assert_eq!(
        status(1),
        json!([
            cluster_entry(&pod, &eth0_ip),
            macvlan_entry(&pod, "net1", "192.168.1.201"),
            macvlan_entry(&pod, "net2", "192.168.1.202")
        ])
    );
    assert_eq!(
        cluster.reservation("macvlan-conf", "192.168.1.202"),
        "seed-two\r\nnet2"
    );
    cni.call("DEL", &cluster.config).ok();
    cluster.assert_nothing_left(&pod, "after DEL of samplepod-two");
}

#[test]
fn seed_scenario_through_the_api_server() {
    let cluster = Cluster::api();
    let annotations = ["macvlan-conf", "macvlan-conf,macvlan-conf"];
    seed_scenario(
        &cluster,
        |index, uid| cluster.add_pod(uid, annotations[index]),
        |_| cluster.network_status_from_api(),
    );
}

#[test]
fn seed_scenario_through_the_manifest_directory() {
    let cluster = Cluster::local();
    let manifests = ["samplepod-one", "samplepod-two"];
    let manifest_dir = cluster.path("manifests");
    seed_scenario(
        &cluster,
        |index, _uid| {
            for other in manifests {
                let _ = std::fs::remove_file(manifest_dir.join(format!("{other}.yaml")));
            }
            let name = format!("{}.yaml", manifests[index]);
            std::fs::copy(seed_file(&name), manifest_dir.join(&name)).expect("copy the seed pod");
        },
        |index| {
            let path = manifest_dir.join(format!("{}.network-status.json", manifests[index]));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            serde_json::from_str(&text).expect("network-status is JSON")
        },
    );
}

#[test]
fn a_conflicting_status_write_is_retried() {
    let cluster = Cluster::api();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    cluster.add_pod("uid-conflict", "macvlan-conf");
    cluster.server().force_status_conflicts(1);
    let pod = Netns::new("mwp");
    let cni = cluster.cni(&pod, "conflict", "uid-conflict");
    cni.call("ADD", &cluster.config).ok();
    let status = cluster.network_status_from_api();
    assert_eq!(status[1]["interface"], "net1", "{status}");
    assert_eq!(status[1]["ips"], json!(["192.168.1.200"]));
    let puts = cluster
        .server()
        .requests()
        .iter()
        .filter(|request| *request == STATUS_PUT)
        .count();
    assert_eq!(puts, 2, "{:?}", cluster.server().requests());
    cni.call("DEL", &cluster.config).ok();
    cluster.assert_nothing_left(&pod, "after DEL");
}

#[test]
fn a_status_write_that_keeps_conflicting_fails_the_add_and_rolls_back() {
    let cluster = Cluster::api();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    cluster.add_pod("uid-conflict", "macvlan-conf");
    cluster.server().force_status_conflicts(1000);
    let pod = Netns::new("mwp");
    let output = cluster
        .cni(&pod, "conflicts", "uid-conflict")
        .call("ADD", &cluster.config);
    assert_eq!(output.error_code(), 11, "{}", output.stdout);
    assert!(
        error_message(&output).contains("network-status"),
        "{}",
        output.stdout
    );
    assert!(
        cluster
            .server()
            .pod_annotation("default", "samplepod", NETWORK_STATUS)
            .is_none()
    );
    cluster.assert_nothing_left(&pod, "after the failed ADD");
}

#[test]
fn a_missing_nad_fails_the_add_naming_it_and_attaches_nothing() {
    let cluster = Cluster::api();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    for (networks, nad, namespace) in [
        ("missing-net", "missing-net", "default"),
        ("kube-public/macvlan-conf", "macvlan-conf", "kube-public"),
    ] {
        cluster.add_pod("uid-missing", networks);
        let pod = Netns::new("mwp");
        let output = cluster
            .cni(&pod, "missing", "uid-missing")
            .call("ADD", &cluster.config);
        let message = error_message(&output);
        assert!(
            message.contains(nad) && message.contains(namespace),
            "the error names the NAD {nad} and its namespace {namespace}: {message}"
        );
        cluster.assert_nothing_left(&pod, networks);
        assert!(
            cluster
                .server()
                .pod_annotation("default", "samplepod", NETWORK_STATUS)
                .is_none()
        );
    }
}

#[test]
fn del_works_from_the_cache_with_the_api_server_down() {
    let cluster = Cluster::api();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    cluster.add_pod("uid-down", "macvlan-conf");
    let pod = Netns::new("mwp");
    let cni = cluster.cni(&pod, "down", "uid-down");
    cni.call("ADD", &cluster.config).ok();
    assert_eq!(support::link_names(&pod), vec!["eth0", "lo", "net1"]);
    assert_eq!(cluster.reservations().len(), 2);

    cluster.server().stop();
    let served = cluster.server().requests().len();
    cni.call("DEL", &cluster.config).ok();
    cluster.assert_nothing_left(&pod, "after DEL with the API down");

    // No cache and no API: nothing to do, and DEL still succeeds.
    let fresh = Netns::new("mwp");
    cluster
        .cni(&fresh, "never-added", "uid-down")
        .call("DEL", &cluster.config)
        .ok();
    cluster.assert_nothing_left(&fresh, "after DEL of a container never added");

    // ADD cannot go on without the pod: it fails as retriable, attaching nothing.
    let output = cluster
        .cni(&fresh, "down-add", "uid-down")
        .call("ADD", &cluster.config);
    assert_eq!(output.error_code(), 11, "{}", output.stdout);
    cluster.assert_nothing_left(&fresh, "after ADD with the API down");
    assert_eq!(
        cluster.server().requests().len(),
        served,
        "nothing reached the stopped server"
    );
}

#[test]
fn a_failure_in_the_second_attachment_rolls_back_the_first() {
    let cluster = Cluster::api();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    let mut bad = cluster.seed_config();
    bad["master"] = json!("nosuchdev0");
    cluster.add_nad("bad-conf", &bad);
    cluster.add_pod("uid-bad", "macvlan-conf,bad-conf");
    let pod = Netns::new("mwp");
    let output = cluster
        .cni(&pod, "bad", "uid-bad")
        .call("ADD", &cluster.config);
    let message = error_message(&output);
    assert!(message.contains("bad-conf"), "{message}");
    assert!(message.contains("nosuchdev0"), "{message}");
    cluster.assert_nothing_left(&pod, "after the failed ADD");
    assert!(
        cluster
            .server()
            .pod_annotation("default", "samplepod", NETWORK_STATUS)
            .is_none()
    );

    // The addresses were released, not just unlinked: the next pod gets .200.
    cluster.add_pod("uid-good", "macvlan-conf");
    let next = Netns::new("mwp");
    let cni = cluster.cni(&next, "good", "uid-good");
    cni.call("ADD", &cluster.config).ok();
    assert_eq!(next.addresses("net1"), vec!["192.168.1.201/24"]);
    cni.call("DEL", &cluster.config).ok();
    cluster.assert_nothing_left(&next, "after DEL");
}

#[test]
fn the_json_annotation_sets_interface_ip_and_mac() {
    let cluster = Cluster::api();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    cluster.add_pod(
        "uid-json",
        r#"[{"name":"macvlan-conf","interface":"data0","ips":["192.168.1.210"],"mac":"c2:11:22:33:44:55"}]"#,
    );
    let pod = Netns::new("mwp");
    let cni = cluster.cni(&pod, "json", "uid-json");
    let output = cni.call("ADD", &cluster.config);
    output.ok();
    let eth0_ip = assert_cluster_result(&pod, &output.json(), "1.0.0");
    assert_eq!(support::link_names(&pod), vec!["data0", "eth0", "lo"]);
    assert_eq!(link_kind(&pod, "data0"), "macvlan");
    assert_eq!(pod.addresses("data0"), vec!["192.168.1.210/24"]);
    assert_eq!(mac_of(&pod, "data0"), "c2:11:22:33:44:55");
    assert_eq!(
        cluster.reservation("macvlan-conf", "192.168.1.210"),
        "json\r\ndata0"
    );
    assert_eq!(
        cluster.network_status_from_api(),
        json!([
            cluster_entry(&pod, &eth0_ip),
            {
                "name": "default/macvlan-conf",
                "interface": "data0",
                "ips": ["192.168.1.210"],
                "mac": "c2:11:22:33:44:55",
                "dns": {},
                "gateway": ["192.168.1.1"]
            }
        ])
    );
    cni.call("DEL", &cluster.config).ok();
    cluster.assert_nothing_left(&pod, "after DEL");
}

#[test]
fn an_interface_name_already_taken_fails_the_add_and_attaches_nothing() {
    let cluster = Cluster::api();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());

    // The annotation asks for the cluster network's own eth0.
    cluster.add_pod("uid-taken", "macvlan-conf@eth0");
    let pod = Netns::new("mwp");
    let output = cluster
        .cni(&pod, "taken", "uid-taken")
        .call("ADD", &cluster.config);
    let message = error_message(&output);
    assert!(message.contains("eth0"), "{message}");
    cluster.assert_nothing_left(&pod, "eth0 asked twice");

    // net1 already exists in the pod: it is refused and left alone.
    cluster.add_pod("uid-taken", "macvlan-conf");
    let pod = Netns::new("mwp");
    pod.ip(&[
        "link", "add", "net1", "type", "veth", "peer", "name", "peer1",
    ]);
    let output = cluster
        .cni(&pod, "taken", "uid-taken")
        .call("ADD", &cluster.config);
    let message = error_message(&output);
    assert!(
        message.contains("net1") && message.contains("already exists"),
        "{message}"
    );
    assert_eq!(support::link_names(&pod), vec!["lo", "net1", "peer1"]);
    assert_eq!(
        link_kind(&pod, "net1"),
        "veth",
        "the pod's own net1 is kept"
    );
    assert!(
        cluster.reservations().is_empty(),
        "{:?}",
        cluster.reservations()
    );
    assert!(cluster.cache_files().is_empty());
    cluster.assert_node_clean();
}

#[test]
fn check_after_add_and_gc_of_pods_no_longer_listed() {
    let cluster = Cluster::new(true, "1.1.0");
    let mut nad = cluster.seed_config();
    nad["cniVersion"] = json!("1.0.0");
    cluster.add_nad("macvlan-conf", &nad);
    cluster.add_pod("uid-gc", "macvlan-conf");
    let kept = Netns::new("mwp");
    let gone = Netns::new("mwp");
    let keep_cni = cluster.cni(&kept, "gc-kept", "uid-gc");
    let gone_cni = cluster.cni(&gone, "gc-gone", "uid-gc");
    keep_cni.call("ADD", &cluster.config).ok();
    gone_cni.call("ADD", &cluster.config).ok();
    assert_eq!(kept.addresses("net1"), vec!["192.168.1.200/24"]);
    assert_eq!(gone.addresses("net1"), vec!["192.168.1.201/24"]);

    keep_cni.call("CHECK", &cluster.config).ok();
    gone_cni.call("CHECK", &cluster.config).ok();

    let kept_eth0 = kept.addresses("eth0")[0]
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut gc = cluster.config.clone();
    gc["cni.dev/valid-attachments"] = json!([
        {"containerID": "gc-kept", "ifname": "eth0"},
        {"containerID": "gc-kept", "ifname": "net1"}
    ]);
    let mut gc_cni = cluster.cni(&kept, "", "");
    gc_cni.netns = String::new();
    gc_cni.ifname = String::new();
    gc_cni.args = String::new();
    gc_cni.call("GC", &gc).ok();

    assert_eq!(
        support::link_names(&gone),
        vec!["lo"],
        "GC deleted the unlisted pod's links"
    );
    assert_eq!(support::link_names(&kept), vec!["eth0", "lo", "net1"]);
    assert_eq!(
        cluster.reservations(),
        vec![
            "macvlan-conf/192.168.1.200".to_string(),
            format!("{CLUSTER_NETWORK}/{kept_eth0}")
        ]
    );
    assert_eq!(cluster.cache_files(), vec!["gc-kept.json"]);
    keep_cni.call("CHECK", &cluster.config).ok();

    // CHECK notices a missing attachment.
    kept.ip(&["link", "del", "net1"]);
    let output = keep_cni.call("CHECK", &cluster.config);
    let message = error_message(&output);
    assert!(message.contains("net1"), "{message}");

    keep_cni.call("DEL", &cluster.config).ok();
    cluster.assert_nothing_left(&kept, "after DEL");
}

/// The lines of the host's log file.
fn log_lines(cluster: &Cluster) -> Vec<String> {
    std::fs::read_to_string(cluster.path("multus-wasm.log"))
        .expect("the log file")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn an_unknown_log_level_is_logged_and_the_default_used() {
    let mut cluster = Cluster::api();
    cluster.config["logLevel"] = json!("info");
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    cluster.add_pod("uid-level", "macvlan-conf");
    let pod = Netns::new("mwp");
    let cni = cluster.cni(&pod, "level", "uid-level");
    cni.call("ADD", &cluster.config).ok();
    assert_eq!(pod.addresses("net1"), vec!["192.168.1.200/24"]);
    let lines = log_lines(&cluster);
    assert!(
        lines[0].contains(r#"invalid logLevel "info""#)
            && lines[0].contains("using the default (panic)"),
        "{lines:?}"
    );
    // The default level (panic) logs errors only: nothing else from a good ADD.
    assert_eq!(lines.len(), 1, "{lines:?}");
    cni.call("DEL", &cluster.config).ok();
    cluster.assert_nothing_left(&pod, "after DEL");
}

#[test]
fn every_line_of_a_call_carries_the_pod_container_and_interface() {
    let cluster = Cluster::api();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    cluster.add_pod("uid-ident", "macvlan-conf");
    let pod = Netns::new("mwp");
    let cni = cluster.cni(&pod, "ident", "uid-ident");
    cni.call("ADD", &cluster.config).ok();
    cni.call("DEL", &cluster.config).ok();
    let lines = log_lines(&cluster);
    assert!(lines.len() > 5, "debug logs the call's steps: {lines:?}");
    for (index, line) in lines.iter().enumerate() {
        let command = if lines[..=index].iter().any(|l| l.contains("command=DEL")) {
            "DEL"
        } else {
            "ADD"
        };
        assert!(
            line.contains(&format!(
                r#"cni{{command={command} pod="default/samplepod" container="ident" ifname="eth0"}}"#
            )),
            "line {index}: {line}"
        );
    }
    assert!(lines.iter().any(|line| line.contains("command=DEL")));
    cluster.assert_nothing_left(&pod, "after DEL");
}

#[test]
fn json_log_lines_parse_and_carry_the_call() {
    let mut cluster = Cluster::api();
    cluster.config["logFormat"] = json!("json");
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    cluster.add_pod("uid-json", "macvlan-conf");
    let pod = Netns::new("mwp");
    let cni = cluster.cni(&pod, "json", "uid-json");
    cni.call("ADD", &cluster.config).ok();
    let lines = log_lines(&cluster);
    assert!(lines.len() > 5, "{lines:?}");
    for line in &lines {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
        // The call's span comes first (a client's HTTP span may follow).
        let call = &value["spans"][0];
        assert_eq!(call["name"], "cni", "{line}");
        assert_eq!(call["pod"], "default/samplepod", "{line}");
        assert_eq!(call["container"], "json", "{line}");
        assert_eq!(call["ifname"], "eth0", "{line}");
        assert!(value["fields"]["message"].is_string(), "{line}");
    }
    cni.call("DEL", &cluster.config).ok();
    cluster.assert_nothing_left(&pod, "after DEL");
}

/// (type, reason, message, involved pod uid) of every event the server kept.
fn events(cluster: &Cluster) -> Vec<(String, String, String, String)> {
    cluster
        .server()
        .events()
        .iter()
        .map(|event| {
            assert_eq!(event["involvedObject"]["kind"], "Pod", "{event}");
            assert_eq!(event["involvedObject"]["namespace"], "default", "{event}");
            assert_eq!(event["involvedObject"]["name"], "samplepod", "{event}");
            let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
            (
                text(&event["type"]),
                text(&event["reason"]),
                text(&event["message"]),
                text(&event["involvedObject"]["uid"]),
            )
        })
        .collect()
}

#[test]
fn an_add_records_added_interface_and_a_missing_nad_no_network_found() {
    let cluster = Cluster::api();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    cluster.add_pod("uid-events", "macvlan-conf");
    let pod = Netns::new("mwp");
    let cni = cluster.cni(&pod, "events", "uid-events");
    cni.call("ADD", &cluster.config).ok();
    let eth0 = pod.addresses("eth0")[0].clone();
    let normal = |message: String| {
        (
            "Normal".to_string(),
            "AddedInterface".to_string(),
            message,
            "uid-events".to_string(),
        )
    };
    assert_eq!(
        events(&cluster),
        vec![
            normal(format!("Add eth0 [{eth0}] from {CLUSTER_NETWORK}")),
            normal("Add net1 [192.168.1.200/24] from default/macvlan-conf".to_string()),
        ]
    );
    cni.call("DEL", &cluster.config).ok();
    assert_eq!(events(&cluster).len(), 2, "DEL sends no event");
    cluster.assert_nothing_left(&pod, "after DEL");

    cluster.add_pod("uid-missing", "macvlan-conf,absent-conf");
    let cni = cluster.cni(&pod, "missing", "uid-missing");
    let output = cni.call("ADD", &cluster.config);
    assert_eq!(output.error_code(), 7);
    let recorded = events(&cluster);
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    assert_eq!(
        recorded[2],
        (
            "Warning".to_string(),
            "NoNetworkFound".to_string(),
            "cannot find a network-attachment-definition (absent-conf) in namespace (default): pod default/samplepod asks for it in k8s.v1.cni.cncf.io/networks".to_string(),
            "uid-missing".to_string()
        )
    );
    cluster.assert_nothing_left(&pod, "after the failed ADD");
}

#[test]
fn an_add_succeeds_when_events_are_refused() {
    let cluster = Cluster::api();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    cluster.add_pod("uid-refused", "macvlan-conf");
    for code in [403, 500] {
        cluster.server().refuse_events(Some(code));
        let pod = Netns::new("mwp");
        let cni = cluster.cni(&pod, "refused", "uid-refused");
        cni.call("ADD", &cluster.config).ok();
        assert_eq!(support::link_names(&pod), vec!["eth0", "lo", "net1"]);
        assert_eq!(cluster.network_status_from_api()[1]["interface"], "net1");
        let posts = cluster
            .server()
            .requests()
            .iter()
            .filter(|request| *request == "POST /api/v1/namespaces/default/events")
            .count();
        assert!(posts >= 2, "the events were tried");
        assert!(cluster.server().events().is_empty());
        let log = std::fs::read_to_string(cluster.path("multus-wasm.log")).unwrap();
        assert!(
            log.contains("sending the pod event failed"),
            "the failure is logged"
        );
        cni.call("DEL", &cluster.config).ok();
        cluster.assert_nothing_left(&pod, "after DEL");
    }
}

// Multus parity (issue #13): cases where Multus's outcome is the one to match.

/// The log file's text.
fn log_text(cluster: &Cluster) -> String {
    std::fs::read_to_string(cluster.path("multus-wasm.log")).unwrap_or_default()
}

#[test]
fn a_static_pod_gets_its_networks_and_a_plain_uid_mismatch_still_fails() {
    // kubelet calls with the manifest's UID; the API (or manifest
    // directory) holds the mirror pod with a UID of its own.
    for cluster in [Cluster::api(), Cluster::local()] {
        cluster.add_nad("macvlan-conf", &cluster.seed_config());
        for (case, marks) in [
            (
                "source file",
                json!({"kubernetes.io/config.source": "file"}),
            ),
            (
                "mirror",
                json!({"kubernetes.io/config.mirror": "1f2e3d4c5b6a"}),
            ),
            (
                "mirror of a file",
                json!({"kubernetes.io/config.source": "file",
                       "kubernetes.io/config.mirror": "1f2e3d4c5b6a"}),
            ),
        ] {
            let mut annotations = marks.clone();
            annotations[support::cluster::NETWORKS] = json!("macvlan-conf");
            cluster.add_pod_annotated("samplepod", "uid-mirror", annotations);
            let pod = Netns::new("mwp");
            let cni = cluster.cni(&pod, "static", "uid-manifest");
            let output = cni.call("ADD", &cluster.config);
            output.ok();
            assert_cluster_result(&pod, &output.json(), "1.0.0");
            assert_eq!(
                support::link_names(&pod),
                vec!["eth0", "lo", "net1"],
                "{case}"
            );
            // host-local goes on from its last reservation: any address of
            // the seed range.
            let net1 = pod.addresses("net1");
            assert!(
                net1.len() == 1 && net1[0].starts_with("192.168.1.2"),
                "{case}: {net1:?}"
            );
            if let support::cluster::Source::Api(_) = cluster.source {
                let status = cluster.network_status_from_api();
                assert_eq!(
                    status[1]["name"], "default/macvlan-conf",
                    "{case}: {status}"
                );
                assert_eq!(
                    status[1]["ips"],
                    json!([net1[0].trim_end_matches("/24")]),
                    "{case}"
                );
            }
            cni.call("CHECK", &cluster.config).ok();
            cni.call("DEL", &cluster.config).ok();
            cluster.assert_nothing_left(&pod, case);
        }

        // Without the static pod's marks (or with source "api"), another
        // UID is another pod: refused as before, nothing attached.
        for (case, marks) in [
            ("plain", json!({})),
            ("source api", json!({"kubernetes.io/config.source": "api"})),
        ] {
            let mut annotations = marks.clone();
            annotations[support::cluster::NETWORKS] = json!("macvlan-conf");
            cluster.add_pod_annotated("samplepod", "uid-api", annotations);
            let pod = Netns::new("mwp");
            let output = cluster
                .cni(&pod, "mismatch", "uid-kubelet")
                .call("ADD", &cluster.config);
            assert_eq!(output.error_code(), 4, "{case}: {}", output.stdout);
            let message = error_message(&output);
            assert!(
                message.contains("expected pod UID uid-kubelet but got uid-api")
                    && message.contains("not a static pod"),
                "{case}: {message}"
            );
            cluster.assert_nothing_left(&pod, case);
        }
    }
}

#[test]
fn check_skips_a_network_older_than_check_and_checks_the_others() {
    let cluster = Cluster::api();
    // The seed NAD is cniVersion 0.3.0, which predates CHECK.
    let old = cluster.seed_config();
    assert_eq!(old["cniVersion"], "0.3.0");
    cluster.add_nad("macvlan-conf", &old);
    let mut new = cluster.seed_config();
    new["cniVersion"] = json!("1.0.0");
    new["name"] = json!("macvlan-new");
    cluster.add_nad("macvlan-new", &new);
    cluster.add_pod("uid-check", "macvlan-conf,macvlan-new");
    let pod = Netns::new("mwp");
    let cni = cluster.cni(&pod, "check-mixed", "uid-check");
    cni.call("ADD", &cluster.config).ok();
    assert_eq!(
        support::link_names(&pod),
        vec!["eth0", "lo", "net1", "net2"]
    );

    cni.call("CHECK", &cluster.config).ok();
    let log = log_text(&cluster);
    assert!(
        log.lines().any(|line| line.contains("INFO")
            && line.contains("CHECK skipped")
            && line.contains("default/macvlan-conf")),
        "the skip is logged at info with the network: {log}"
    );
    assert!(
        !log.lines()
            .any(|line| line.contains("CHECK skipped") && line.contains("default/macvlan-new")),
        "{log}"
    );

    // The 0.3.0 attachment is not checked: its missing interface goes
    // unnoticed (as with Multus)...
    pod.ip(&["link", "del", "net1"]);
    cni.call("CHECK", &cluster.config).ok();
    // ...while the 1.0.0 one is: a broken one still fails CHECK.
    pod.ip(&["link", "del", "net2"]);
    let output = cni.call("CHECK", &cluster.config);
    let message = error_message(&output);
    assert!(
        message.contains("default/macvlan-new") && message.contains("net2"),
        "{message}"
    );

    cni.call("DEL", &cluster.config).ok();
    cluster.assert_nothing_left(&pod, "after DEL");
}

#[test]
fn gc_skips_a_network_older_than_gc() {
    // A reservation no valid attachment holds: GC of a 1.1.0 network
    // releases it; a 1.0.0 network is not GC'd at all (as libcni).
    for (version, released) in [("1.1.0", true), ("1.0.0", false)] {
        let cluster = Cluster::new(true, "1.1.0");
        let mut nad = cluster.seed_config();
        nad["cniVersion"] = json!(version);
        cluster.add_nad("macvlan-conf", &nad);
        cluster.add_pod("uid-gc", "macvlan-conf");
        let pod = Netns::new("mwp");
        let cni = cluster.cni(&pod, "gc-live", "uid-gc");
        cni.call("ADD", &cluster.config).ok();
        let leaked = cluster.path("ipam/macvlan-conf/192.168.1.210");
        std::fs::write(&leaked, "gc-leaked\r\nnet1").unwrap();

        let mut gc = cluster.config.clone();
        gc["cni.dev/valid-attachments"] = json!([
            {"containerID": "gc-live", "ifname": "eth0"},
            {"containerID": "gc-live", "ifname": "net1"}
        ]);
        let mut gc_cni = cluster.cni(&pod, "", "");
        gc_cni.netns = String::new();
        gc_cni.ifname = String::new();
        gc_cni.args = String::new();
        gc_cni.call("GC", &gc).ok();
        assert_eq!(leaked.exists(), !released, "cniVersion {version}");
        assert!(
            cluster
                .reservations()
                .contains(&"macvlan-conf/192.168.1.200".to_string()),
            "the live attachment keeps its address"
        );
        let skipped = log_text(&cluster)
            .lines()
            .any(|line| line.contains("GC skipped") && line.contains("default/macvlan-conf"));
        assert_eq!(skipped, !released, "cniVersion {version}");
        let _ = std::fs::remove_file(&leaked);
        cni.call("DEL", &cluster.config).ok();
        cluster.assert_nothing_left(&pod, "after DEL");
    }
}

/// A NAD `ptp-net` for the pod's primary network: ptp on the cluster
/// subnet honouring `ips` (host-local, capability), then tuning honouring
/// `mac` (capability). `with_mac` false leaves tuning out.
fn ptp_net(cluster: &Cluster, with_mac: bool) -> Value {
    let mut plugins = vec![json!({
        "type": "ptp",
        "ipMasq": false,
        "capabilities": {"ips": true},
        "ipam": {
            "type": "host-local",
            "subnet": "10.244.0.0/24",
            "dataDir": cluster.path("cluster-ipam"),
            "routes": [{"dst": "0.0.0.0/0"}]
        }
    })];
    if with_mac {
        plugins.push(json!({"type": "tuning", "capabilities": {"mac": true}}));
    }
    json!({"cniVersion": "1.0.0", "name": "ptp-net", "plugins": plugins})
}

#[test]
fn default_network_ips_and_mac_reach_the_primary_delegate() {
    let mut cluster = Cluster::api();
    cluster.config["multusNamespace"] = json!("default");
    cluster.add_nad("ptp-net", &ptp_net(&cluster, true));
    let annotation = r#"[{"name":"ptp-net","ips":["10.244.0.77/24"],"mac":"c2:11:22:33:44:55"}]"#;
    cluster.add_pod_annotated(
        "samplepod",
        "uid-primary",
        json!({"v1.multus-cni.io/default-network": annotation}),
    );
    let pod = Netns::new("mwp");
    let cni = cluster.cni(&pod, "primary", "uid-primary");
    let output = cni.call("ADD", &cluster.config);
    output.ok();
    assert_eq!(support::link_names(&pod), vec!["eth0", "lo"]);
    assert_eq!(pod.addresses("eth0"), vec!["10.244.0.77/24"]);
    assert_eq!(mac_of(&pod, "eth0"), "c2:11:22:33:44:55");
    let result = output.json();
    assert_eq!(result["ips"][0]["address"], "10.244.0.77/24", "{result}");
    assert_eq!(
        std::fs::read_to_string(cluster.path("cluster-ipam/ptp-net/10.244.0.77")).unwrap(),
        "primary\r\neth0"
    );
    let status = cluster.network_status_from_api();
    assert_eq!(status[0]["name"], "default/ptp-net", "{status}");
    assert_eq!(status[0]["interface"], "eth0", "{status}");
    assert_eq!(status[0]["ips"], json!(["10.244.0.77"]), "{status}");
    assert_eq!(status[0]["mac"], "c2:11:22:33:44:55", "{status}");
    assert_eq!(status[0]["default"], true, "{status}");
    cni.call("DEL", &cluster.config).ok();
    cluster.assert_nothing_left(&pod, "after DEL");

    // A primary delegate that cannot honour the mac fails, as any other
    // attachment does (README: Where we differ from Multus).
    cluster.add_nad("ptp-net", &ptp_net(&cluster, false));
    let pod = Netns::new("mwp");
    let output = cluster
        .cni(&pod, "primary-nomac", "uid-primary")
        .call("ADD", &cluster.config);
    assert_eq!(output.error_code(), 7, "{}", output.stdout);
    let message = error_message(&output);
    assert!(
        message.contains("default/ptp-net") && message.contains("mac"),
        "{message}"
    );
    cluster.assert_nothing_left(&pod, "after the refused ADD");
}

#[test]
fn whitespace_around_the_parts_of_the_comma_form_is_trimmed() {
    let cluster = Cluster::api();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    cluster.add_pod(
        "uid-spaces",
        " default / macvlan-conf @ sp0 , macvlan-conf ",
    );
    let pod = Netns::new("mwp");
    let cni = cluster.cni(&pod, "spaces", "uid-spaces");
    cni.call("ADD", &cluster.config).ok();
    assert_eq!(support::link_names(&pod), vec!["eth0", "lo", "net2", "sp0"]);
    assert_eq!(pod.addresses("sp0"), vec!["192.168.1.200/24"]);
    assert_eq!(pod.addresses("net2"), vec!["192.168.1.201/24"]);
    let status = cluster.network_status_from_api();
    assert_eq!(status[1]["name"], "default/macvlan-conf", "{status}");
    assert_eq!(status[1]["interface"], "sp0", "{status}");
    assert_eq!(status[2]["interface"], "net2", "{status}");
    cni.call("DEL", &cluster.config).ok();
    cluster.assert_nothing_left(&pod, "after DEL");
}

#[test]
fn a_cluster_network_and_default_networks_from_nads_are_named_namespace_slash_name() {
    let mut cluster = Cluster::api();
    let conflist: Value =
        serde_json::from_slice(&std::fs::read(cluster.path("net.d/10-ptp.conflist")).unwrap())
            .unwrap();
    cluster.add_nad("ptp-cluster", &conflist);
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    cluster.config["multusNamespace"] = json!("default");
    cluster.config["clusterNetwork"] = json!("ptp-cluster");
    cluster.config["defaultNetworks"] = json!(["macvlan-conf"]);
    cluster.add_pod("uid-nadcluster", "");
    let pod = Netns::new("mwp");
    let cni = cluster.cni(&pod, "nad-cluster", "uid-nadcluster");
    let output = cni.call("ADD", &cluster.config);
    output.ok();
    let eth0_ip = assert_cluster_result(&pod, &output.json(), "1.0.0");
    let mut cluster_entry = cluster_entry(&pod, &eth0_ip);
    cluster_entry["name"] = json!("default/ptp-cluster");
    assert_eq!(
        cluster.network_status_from_api(),
        json!([cluster_entry, macvlan_entry(&pod, "net1", "192.168.1.200")])
    );
    cni.call("DEL", &cluster.config).ok();
    cluster.assert_nothing_left(&pod, "after DEL");
}

#[test]
fn a_nad_whose_type_is_a_wasm_ipam_plugin_runs_the_native_one() {
    let mut cluster = Cluster::api();
    let static_net = json!({
        "cniVersion": "1.0.0",
        "name": "static-net",
        "type": "static",
        "ipam": {"type": "static", "addresses": [{"address": "10.10.0.5/24"}]}
    });
    cluster.add_nad("static-net", &static_net);
    cluster.add_pod("uid-static", "static-net");
    let pod = Netns::new("mwp");
    let cni = cluster.cni(&pod, "static-type", "uid-static");
    cni.call("ADD", &cluster.config).ok();
    // As the native static run as a main plugin: an address in the result,
    // nothing in the pod.
    assert_eq!(support::link_names(&pod), vec!["eth0", "lo"]);
    let status = cluster.network_status_from_api();
    assert_eq!(status.as_array().map(Vec::len), Some(2), "{status}");
    assert_eq!(status[1]["name"], "default/static-net", "{status}");
    assert_eq!(status[1]["ips"], json!(["10.10.0.5"]), "{status}");
    assert!(
        log_text(&cluster).contains("running the native binary"),
        "the fallback is logged"
    );
    cni.call("CHECK", &cluster.config).ok();
    cni.call("DEL", &cluster.config).ok();
    cluster.assert_nothing_left(&pod, "after DEL");

    // Without the native binary allowed, a clear error, nothing attached.
    cluster.config["nativePlugins"] = json!(["ptp", "host-local"]);
    let pod = Netns::new("mwp");
    let output = cluster
        .cni(&pod, "static-refused", "uid-static")
        .call("ADD", &cluster.config);
    assert_eq!(output.error_code(), 7, "{}", output.stdout);
    let message = error_message(&output);
    assert!(
        message.contains("default/static-net")
            && message.contains("\"static\", which is an IPAM plugin")
            && message.contains("nativePlugins"),
        "{message}"
    );
    cluster.assert_nothing_left(&pod, "after the refused ADD");
}

/// The shipped plugins as built before ABI 0.2.0 (`tests/fixtures/abi-0.1.0`).
fn abi_0_1_fixture(plugin: &str) -> Value {
    support::plugin(&format!(
        "{}/fixtures/abi-0.1.0/{plugin}.wasm",
        env!("CARGO_MANIFEST_DIR")
    ))
}

#[test]
fn a_0_1_0_plugin_and_a_0_2_0_chain_attach_in_one_pod() {
    let mut cluster = Cluster::api();
    cluster.config["wasmPlugins"]["macvlan-0.1"] = abi_0_1_fixture("macvlan");
    cluster.config["wasmPlugins"]["host-local-0.1"] = abi_0_1_fixture("host-local");
    // net1: the 0.1.0 macvlan with the 0.1.0 host-local.
    let mut old = cluster.seed_config();
    old["type"] = json!("macvlan-0.1");
    old["ipam"]["type"] = json!("host-local-0.1");
    cluster.add_nad("macvlan-conf", &old);
    // net2: the 0.2.0 macvlan and host-local, chained with tuning (0.2.0,
    // which keeps state for its DEL).
    let mut seed = cluster.seed_config();
    seed.as_object_mut().unwrap().remove("cniVersion");
    seed.as_object_mut().unwrap().remove("name");
    let tuned = json!({"cniVersion": "1.0.0", "name": "macvlan-tuned",
                       "plugins": [seed, {"type": "tuning", "mtu": 1400, "promisc": true}]});
    cluster.add_nad("macvlan-tuned", &tuned);
    cluster.add_pod("uid-abi", "macvlan-conf,macvlan-tuned");
    let pod = Netns::new("mwp");
    let cni = cluster.cni(&pod, "abi-mixed", "uid-abi");
    cni.call("ADD", &cluster.config).ok();
    assert_eq!(
        support::link_names(&pod),
        vec!["eth0", "lo", "net1", "net2"]
    );
    // Two networks, two host-local stores: each starts at .200.
    assert_eq!(pod.addresses("net1"), vec!["192.168.1.200/24"]);
    assert_eq!(pod.addresses("net2"), vec!["192.168.1.200/24"]);
    let net1 = pod.ip_json(&["link", "show", "dev", "net1"]);
    let net2 = pod.ip_json(&["link", "show", "dev", "net2"]);
    assert_eq!(net1[0]["mtu"], 1500);
    assert_eq!(net2[0]["mtu"], 1400);
    assert!(net2[0]["flags"].to_string().contains("PROMISC"), "{net2}");
    // tuning's state is kept with the attachment (plugin 1 of net2).
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(cluster.path("cni/multus-wasm/abi-mixed.json")).unwrap(),
    )
    .unwrap();
    let attachments = record["attachments"].as_array().unwrap();
    let tuned = attachments
        .iter()
        .find(|attachment| attachment["ifname"] == "net2")
        .unwrap();
    assert_eq!(
        tuned["pluginState"]["1"],
        json!(r#"{"mtu":1500,"promisc":false}"#),
        "{record}"
    );
    assert!(
        attachments
            .iter()
            .filter(|attachment| attachment["ifname"] != "net2")
            .all(|attachment| attachment.get("pluginState").is_none()),
        "{record}"
    );
    cni.call("CHECK", &cluster.config).ok();
    cni.call("DEL", &cluster.config).ok();
    cluster.assert_nothing_left(&pod, "mixed ABI pod");
}
