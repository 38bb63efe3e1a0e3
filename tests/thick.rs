//! Thick mode end to end (root): `multus-wasm daemon` running in a test
//! node's namespace, called through the real `multus-wasm-shim` as kubelet
//! would, with pods and NADs from a manifest directory or the fake API
//! server (list and watch). The daemon is killed at random points, taken
//! down, and asked for one container twice at once; whatever happens, DEL
//! after a restart leaves nothing.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::cluster::{Cluster, error_message};
use support::{Cni, CniOutput, Netns};

/// The shim, built beside the host binary (`cargo build -p
/// multus-wasm-shim`; `cargo xtask test` builds every binary first).
fn shim() -> PathBuf {
    let path = support::binary().with_file_name("multus-wasm-shim");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p multus-wasm-shim; cargo xtask test does this)",
        path.display()
    );
    path
}

/// A running daemon for `cluster`, killed (and its socket dir removed) on
/// drop.
struct Daemon {
    child: Child,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(cluster: &Cluster) -> Daemon {
        let mut config = cluster.config.clone();
        config["socketDir"] = json!(cluster.path("run"));
        config["nodeName"] = json!("node-1");
        let path = cluster.path("daemon.conf");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        Self::spawn(cluster, path)
    }

    fn spawn(cluster: &Cluster, config: PathBuf) -> Daemon {
        let log = cluster.path("daemon.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &cluster.node.netns.name])
            .arg(support::binary())
            .args(["--log-level", "debug", "daemon", "--config"])
            .arg(&config)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start the daemon");
        let daemon = Daemon {
            child,
            config,
            socket: cluster.path("run/multus-wasm.sock"),
            log,
        };
        daemon.wait_healthy();
        daemon
    }

    /// `GET path` on the socket: (status, body).
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = UnixStream::connect(&self.socket).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: multus-wasm\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let status = text.split(' ').nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n")?.1.to_string();
        Some((status, body))
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some((200, _)) = self.get("/healthz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the daemon never became healthy: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn metrics(&self) -> String {
        self.get("/metrics").expect("metrics").1
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The netconf kubelet passes to the shim.
fn shim_netconf(cluster: &Cluster) -> Value {
    json!({"cniVersion": "1.0.0", "name": "multus-wasm-network", "type": "multus-wasm-shim",
           "daemonSocketDir": cluster.path("run"), "timeoutSeconds": 30})
}

/// A CNI call through the shim for pod `name` in `pod`.
fn through_shim<'a>(cluster: &'a Cluster, pod: &Netns, name: &str, container: &str) -> Cni<'a> {
    through_shim_as(cluster, pod, name, container, &format!("uid-{name}"))
}

/// A CNI call through the shim for pod `name` with kubelet's pod UID `uid`.
fn through_shim_as<'a>(
    cluster: &'a Cluster,
    pod: &Netns,
    name: &str,
    container: &str,
    uid: &str,
) -> Cni<'a> {
    let mut cni = cluster.cni_named(pod, name, container, uid);
    cni.binary = shim();
    cni
}

fn call(cluster: &Cluster, cni: &Cni<'_>, command: &str) -> CniOutput {
    cni.call_within(command, &shim_netconf(cluster), Duration::from_secs(60))
}

#[test]
fn the_seed_scenario_through_the_shim_and_the_daemon() {
    let cluster = Cluster::local();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    let daemon = Daemon::start(&cluster);

    cluster.add_pod_named("samplepod", "uid-samplepod", "macvlan-conf");
    let pod = Netns::new("mwthk");
    let cni = through_shim(&cluster, &pod, "samplepod", "seed-one");
    let output = call(&cluster, &cni, "ADD");
    output.ok();
    assert_eq!(
        output.json()["interfaces"][1]["name"],
        "eth0",
        "{}",
        output.stdout
    );
    assert_eq!(pod.addresses("net1"), vec!["192.168.1.200/24"]);
    call(&cluster, &cni, "DEL").ok();
    cluster.assert_nothing_left(&pod, "after the first pod");

    cluster.add_pod_named("samplepod", "uid-samplepod", "macvlan-conf,macvlan-conf");
    let pod = Netns::new("mwthk");
    let cni = through_shim(&cluster, &pod, "samplepod", "seed-two");
    call(&cluster, &cni, "ADD").ok();
    assert_eq!(pod.addresses("net1"), vec!["192.168.1.201/24"]);
    assert_eq!(pod.addresses("net2"), vec!["192.168.1.202/24"]);
    call(&cluster, &cni, "DEL").ok();
    cluster.assert_nothing_left(&pod, "after the second pod");

    let metrics = daemon.metrics();
    for line in [
        r#"multus_wasm_cni_requests_total{command="ADD",result="ok"} 2"#,
        r#"multus_wasm_cni_requests_total{command="DEL",result="ok"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
}

#[test]
fn a_daemon_that_is_down_is_code_11_and_del_succeeds_once_it_is_back() {
    let cluster = Cluster::local();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    let mut daemon = Daemon::start(&cluster);
    cluster.add_pod_named("p", "uid-p", "macvlan-conf");
    let pod = Netns::new("mwthk");
    let cni = through_shim(&cluster, &pod, "p", "down-1");
    call(&cluster, &cni, "ADD").ok();
    daemon.kill();

    let output = call(&cluster, &cni, "DEL");
    assert_eq!(output.error_code(), 11, "{}", output.stdout);
    assert!(
        error_message(&output).contains("not reachable"),
        "{}",
        output.stdout
    );
    assert!(
        pod.has_link("net1"),
        "nothing was deleted while it was down"
    );

    let daemon = Daemon::spawn(&cluster, daemon.config.clone());
    call(&cluster, &cni, "DEL").ok();
    cluster.assert_nothing_left(&pod, "DEL after the restart");
    drop(daemon);
}

#[test]
fn a_daemon_killed_at_any_point_of_an_add_leaves_nothing_after_del() {
    let cluster = Cluster::local();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    cluster.add_pod_named("k", "uid-k", "macvlan-conf,macvlan-conf");
    let mut daemon = Daemon::start(&cluster);
    let config = daemon.config.clone();
    // Spread the kills over an ADD (about 10-60 ms in a debug build).
    for round in 0..12u64 {
        let pod = Netns::new("mwthk");
        let container = format!("kill-{round}");
        let cni = through_shim(&cluster, &pod, "k", &container);
        let netconf = shim_netconf(&cluster);
        let add = std::thread::scope(|scope| {
            let add = scope.spawn(|| cni.call_within("ADD", &netconf, Duration::from_secs(60)));
            std::thread::sleep(Duration::from_millis(2 + round * 5));
            daemon.kill();
            add.join().unwrap()
        });
        if add.code != 0 {
            assert_eq!(add.error_code(), 11, "round {round}: {}", add.stdout);
        }
        daemon = Daemon::spawn(&cluster, config.clone());
        call(&cluster, &cni, "DEL").ok();
        cluster.assert_nothing_left(&pod, &format!("round {round}"));
    }
}

/// Wait until the daemon is serving `command` for someone.
fn wait_in_flight(daemon: &Daemon, command: &str) {
    let line = format!("multus_wasm_cni_requests_in_flight{{command=\"{command}\"}} 1");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.metrics().contains(&line) {
        assert!(Instant::now() < deadline, "the {command} never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn add_and_del_of_one_container_stay_ordered() {
    let mut cluster = Cluster::local();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    cluster.add_pod_named("o", "uid-o", "macvlan-conf,macvlan-conf");
    // ADD waits for the readiness indicator while holding the container:
    // the DEL that arrives meanwhile must wait for it, then remove it all
    // (run first, it would find nothing and leave the ADD's links behind).
    let ready = cluster.path("ready");
    cluster.config["readinessindicatorfile"] = json!(ready);
    let daemon = Daemon::start(&cluster);
    let pod = Netns::new("mwthk");
    let cni = through_shim(&cluster, &pod, "o", "ordered");
    let netconf = shim_netconf(&cluster);
    let (add, del) = std::thread::scope(|scope| {
        let add = scope.spawn(|| cni.call_within("ADD", &netconf, Duration::from_secs(60)));
        wait_in_flight(&daemon, "ADD");
        let del = scope.spawn(|| cni.call_within("DEL", &netconf, Duration::from_secs(60)));
        wait_in_flight(&daemon, "DEL");
        assert!(!pod.has_link("eth0"), "the ADD is still waiting");
        std::fs::write(&ready, "").unwrap();
        (add.join().unwrap(), del.join().unwrap())
    });
    add.ok();
    del.ok();
    cluster.assert_nothing_left(&pod, "ADD then DEL of one container");
}

#[test]
fn the_daemon_serves_health_and_metrics_and_refuses_bad_requests() {
    let cluster = Cluster::local();
    let daemon = Daemon::start(&cluster);
    assert_eq!(daemon.get("/healthz").unwrap(), (200, "ok\n".to_string()));
    let metrics = daemon.metrics();
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    assert_eq!(daemon.get("/nope").unwrap().0, 404);
    // The socket is root-only.
    let mode = std::fs::metadata(&daemon.socket).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    // A request that is not the shim's JSON is refused, not run.
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    write!(
        stream,
        "POST /cni HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nConnection: close\r\n\r\nnotjson"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
}

/// Wait until the daemon's metrics hold `line`.
fn wait_metric(daemon: &Daemon, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = daemon.metrics();
        if metrics.lines().any(|seen| seen == line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{line} never appeared in the metrics:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The GETs of single objects the daemon sent to the API server.
fn object_gets(cluster: &Cluster) -> Vec<String> {
    cluster
        .server()
        .requests()
        .into_iter()
        .filter(|request| {
            request.starts_with("GET ")
                && (request.contains("/pods/")
                    || request.contains("/network-attachment-definitions/"))
        })
        .collect()
}

#[test]
fn the_seed_scenario_from_the_api_reads_pods_and_nads_from_the_caches() {
    let cluster = Cluster::api();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    cluster.add_pod_named("samplepod", "uid-samplepod", "macvlan-conf");
    let daemon = Daemon::start(&cluster);
    wait_metric(&daemon, r#"multus_wasm_cache_objects{kind="pods"} 1"#);
    wait_metric(&daemon, r#"multus_wasm_cache_objects{kind="nads"} 1"#);

    let pod = Netns::new("mwthk");
    let cni = through_shim(&cluster, &pod, "samplepod", "api-one");
    call(&cluster, &cni, "ADD").ok();
    assert_eq!(pod.addresses("net1"), vec!["192.168.1.200/24"]);
    // The daemon records the pod's events through its own client (sent
    // while the call goes on: wait for them).
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.server().events().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let events = cluster.server().events();
    assert_eq!(events.len(), 2, "{events:?}");
    let net1 = events
        .iter()
        .find(|event| event["message"] == "Add net1 [192.168.1.200/24] from default/macvlan-conf")
        .unwrap_or_else(|| panic!("no AddedInterface for net1: {events:?}"));
    assert_eq!(net1["reason"], "AddedInterface");
    assert_eq!(net1["involvedObject"]["uid"], "uid-samplepod");
    let status = cluster.network_status_from_api();
    assert_eq!(status[1]["name"], "default/macvlan-conf", "{status}");
    assert_eq!(status[1]["ips"], json!(["192.168.1.200"]), "{status}");
    call(&cluster, &cni, "DEL").ok();
    cluster.assert_nothing_left(&pod, "after the first pod");

    // The pod is deleted and created again with another UID: the caches
    // follow the watch.
    cluster.server().delete_pod("default", "samplepod");
    wait_metric(&daemon, r#"multus_wasm_cache_objects{kind="pods"} 0"#);
    cluster.add_pod_named("samplepod", "uid-samplepod-2", "macvlan-conf,macvlan-conf");
    wait_metric(&daemon, r#"multus_wasm_cache_objects{kind="pods"} 1"#);
    let pod = Netns::new("mwthk");
    let cni = through_shim_as(&cluster, &pod, "samplepod", "api-two", "uid-samplepod-2");
    call(&cluster, &cni, "ADD").ok();
    assert_eq!(pod.addresses("net1"), vec!["192.168.1.201/24"]);
    assert_eq!(pod.addresses("net2"), vec!["192.168.1.202/24"]);
    call(&cluster, &cni, "DEL").ok();
    cluster.assert_nothing_left(&pod, "after the second pod");

    // Every pod and NAD came from the caches: the only requests for one
    // object are the status writes.
    assert_eq!(object_gets(&cluster), Vec::<String>::new());
    let patches = cluster
        .server()
        .requests()
        .into_iter()
        .filter(|request| request == "PATCH /api/v1/namespaces/default/pods/samplepod/status")
        .count();
    assert!(patches >= 2, "{:?}", cluster.server().requests());
    assert!(
        daemon
            .metrics()
            .lines()
            .all(|line| !line.starts_with("multus_wasm_api_gets_total{")),
        "no API GET counted"
    );
}

#[test]
fn a_pod_the_cache_does_not_hold_is_read_from_the_api() {
    let cluster = Cluster::api();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    let daemon = Daemon::start(&cluster);
    // Not in this node's cache (the watch selects spec.nodeName=node-1), as
    // a pod the watch has not delivered yet.
    cluster.server().add_pod_on_node(
        "default",
        "samplepod",
        "uid-lagging",
        "node-2",
        json!({"k8s.v1.cni.cncf.io/networks": "macvlan-conf"}),
    );
    let pod = Netns::new("mwthk");
    let cni = through_shim_as(&cluster, &pod, "samplepod", "lag", "uid-lagging");
    call(&cluster, &cni, "ADD").ok();
    assert_eq!(pod.addresses("net1"), vec!["192.168.1.200/24"]);
    assert_eq!(
        object_gets(&cluster),
        vec!["GET /api/v1/namespaces/default/pods/samplepod".to_string()]
    );
    wait_metric(&daemon, r#"multus_wasm_api_gets_total{kind="pods"} 1"#);

    // A UID that is neither the cache's nor the API's is refused after one
    // more GET.
    let other = Netns::new("mwthk");
    let stale = through_shim_as(&cluster, &other, "samplepod", "lag-2", "uid-someone-else");
    let output = call(&cluster, &stale, "ADD");
    assert_ne!(output.code, 0, "{}", output.stdout);
    assert!(
        error_message(&output).contains("uid-someone-else"),
        "{}",
        output.stdout
    );
    assert!(!other.has_link("net1"));
    wait_metric(&daemon, r#"multus_wasm_api_gets_total{kind="pods"} 2"#);

    call(&cluster, &cni, "DEL").ok();
    cluster.assert_nothing_left(&pod, "after DEL");
}

#[test]
fn a_watch_that_breaks_after_a_compaction_relists_and_the_cache_catches_up() {
    let cluster = Cluster::api();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    let daemon = Daemon::start(&cluster);
    let lists_before = cluster.server().list_requests(support::apiserver::PODS);
    // Writes the pod watch does not see, then a compaction: the version the
    // watch resumes from is gone (410), so it must list again.
    cluster
        .server()
        .add_pod_on_node("default", "elsewhere", "uid-elsewhere", "node-2", json!({}));
    cluster.add_nad("other-conf", &cluster.seed_config());
    cluster.server().compact_history();
    cluster.server().break_watches();
    wait_metric(
        &daemon,
        r#"multus_wasm_watch_restarts_total{kind="pods"} 1"#,
    );
    assert!(cluster.server().list_requests(support::apiserver::PODS) > lists_before);

    // A pod created after the relist is served from the cache.
    cluster.add_pod_named("samplepod", "uid-after", "macvlan-conf");
    wait_metric(&daemon, r#"multus_wasm_cache_objects{kind="pods"} 1"#);
    let pod = Netns::new("mwthk");
    let cni = through_shim_as(&cluster, &pod, "samplepod", "relist", "uid-after");
    call(&cluster, &cni, "ADD").ok();
    assert_eq!(pod.addresses("net1"), vec!["192.168.1.200/24"]);
    assert_eq!(object_gets(&cluster), Vec::<String>::new());
    call(&cluster, &cni, "DEL").ok();
    cluster.assert_nothing_left(&pod, "after DEL");
}

/// What a request asks of RBAC: (API group, resource[/subresource], verb),
/// as the API server's authorizer sees it.
fn rbac_request(request: &str) -> (String, String, String) {
    let (method, target) = request.split_once(' ').unwrap();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("a request RBAC does not cover: {request}"),
    };
    // [namespaces/<ns>/]<resource>[/<name>[/<subresource>]]
    let rest = match rest {
        ["namespaces", _namespace, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, subresource] => (format!("{resource}/{subresource}"), true),
        _ => panic!("a request RBAC does not cover: {request}"),
    };
    let watch = query.split('&').any(|pair| pair == "watch=true");
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        _ => panic!("a request RBAC does not cover: {request}"),
    };
    (group.to_string(), resource, verb.to_string())
}

/// Every (group, resource, verb) the shipped ClusterRole grants.
fn rbac_grants() -> std::collections::BTreeSet<(String, String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base/rbac.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut grants = std::collections::BTreeSet::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(document).unwrap();
        if value["kind"] != "ClusterRole" {
            continue;
        }
        for rule in value["rules"].as_array().unwrap() {
            let strings = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|item| item.as_str().unwrap().to_string())
                    .collect()
            };
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        assert!(
                            group != "*" && resource != "*" && verb != "*",
                            "no wildcards in the ClusterRole"
                        );
                        grants.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    grants
}

#[test]
fn rbac_grants_exactly_what_thin_and_thick_mode_ask_of_the_api() {
    let cluster = Cluster::api();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());

    // Thin mode: the pod and its NAD read, the status written, events.
    cluster.add_pod_named("thinpod", "uid-thinpod", "macvlan-conf");
    cluster.add_pod_named("nonad", "uid-nonad", "no-such-conf");
    let pod = Netns::new("mwrbac");
    let thin = cluster.cni_named(&pod, "thinpod", "rbac-thin", "uid-thinpod");
    thin.call("ADD", &cluster.config).ok();
    thin.call("DEL", &cluster.config).ok();
    let missing = Netns::new("mwrbac");
    let refused = cluster.cni_named(&missing, "nonad", "rbac-nonad", "uid-nonad");
    assert_ne!(refused.call("ADD", &cluster.config).code, 0);
    refused.call("DEL", &cluster.config).ok();

    // Thick mode: the daemon lists and watches pods and NADs, patches the
    // status, sends events, and reads a pod its cache does not hold yet.
    let daemon = Daemon::start(&cluster);
    wait_metric(&daemon, r#"multus_wasm_cache_objects{kind="nads"} 1"#);
    cluster.add_pod_named("thickpod", "uid-thickpod", "macvlan-conf");
    wait_metric(&daemon, r#"multus_wasm_cache_objects{kind="pods"} 3"#);
    let thick_pod = Netns::new("mwrbac");
    let thick = through_shim(&cluster, &thick_pod, "thickpod", "rbac-thick");
    call(&cluster, &thick, "ADD").ok();
    call(&cluster, &thick, "DEL").ok();
    cluster.server().add_pod_on_node(
        "default",
        "lagging",
        "uid-lagging",
        "node-2",
        json!({"k8s.v1.cni.cncf.io/networks": "macvlan-conf"}),
    );
    let lagging_pod = Netns::new("mwrbac");
    let lagging = through_shim(&cluster, &lagging_pod, "lagging", "rbac-lagging");
    call(&cluster, &lagging, "ADD").ok();
    call(&cluster, &lagging, "DEL").ok();
    // The daemon's events are sent while the calls go on.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.server().events().len() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(daemon);

    let asked: std::collections::BTreeSet<(String, String, String)> = cluster
        .server()
        .requests_with_query()
        .iter()
        .map(|request| rbac_request(request))
        .collect();
    let granted = rbac_grants();
    let missing: Vec<_> = asked.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&asked).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "the ClusterRole must grant exactly what the code asks:\n  asked but not granted: {missing:?}\n  granted but never asked: {unused:?}"
    );
    cluster.assert_nothing_left(&pod, "thin");
    cluster.assert_nothing_left(&thick_pod, "thick");
}

#[test]
fn a_static_pods_mirror_in_the_cache_is_used_without_a_get() {
    let cluster = Cluster::api();
    cluster.add_nad("macvlan-conf", &cluster.seed_config());
    let daemon = Daemon::start(&cluster);
    // The mirror pod kubelet created in the API; kubelet itself calls with
    // the manifest's UID.
    cluster.add_pod_annotated(
        "samplepod",
        "uid-mirror",
        json!({
            "k8s.v1.cni.cncf.io/networks": "macvlan-conf",
            "kubernetes.io/config.source": "file",
            "kubernetes.io/config.mirror": "1f2e3d4c5b6a"
        }),
    );
    wait_metric(&daemon, r#"multus_wasm_cache_objects{kind="pods"} 1"#);
    let pod = Netns::new("mwthk");
    let cni = through_shim_as(&cluster, &pod, "samplepod", "static", "uid-manifest");
    call(&cluster, &cni, "ADD").ok();
    assert_eq!(pod.addresses("net1"), vec!["192.168.1.200/24"]);
    assert_eq!(object_gets(&cluster), Vec::<String>::new());
    call(&cluster, &cni, "DEL").ok();
    cluster.assert_nothing_left(&pod, "after DEL");

    // A plain pod with another UID is still refused.
    cluster.add_pod_named("plainpod", "uid-api", "macvlan-conf");
    wait_metric(&daemon, r#"multus_wasm_cache_objects{kind="pods"} 2"#);
    let other = Netns::new("mwthk");
    let stale = through_shim_as(&cluster, &other, "plainpod", "plain", "uid-kubelet");
    let output = call(&cluster, &stale, "ADD");
    assert_eq!(output.error_code(), 4, "{}", output.stdout);
    assert!(
        error_message(&output).contains("expected pod UID uid-kubelet but got uid-api"),
        "{}",
        output.stdout
    );
    cluster.assert_nothing_left(&other, "after the refused ADD");
}
