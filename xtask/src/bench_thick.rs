//! Thick mode in `cargo xtask bench`: the release `multus-wasm daemon`
//! started in the bench's node namespace, called through the release
//! `multus-wasm-shim`, side by side (same run, interleaved, medians) with
//! the reference plugins, the kernel's own delete, and thin mode:
//!
//! - one attachment ADD and DEL (seed netconf), the shim's peak RSS;
//! - the seed's two-network pod (ptp cluster network + 2 macvlan) lifecycle;
//! - 64 concurrent pods on one host-local network, and the daemon's RSS;
//! - the daemon's RSS with 1,000 pods and 100 NADs in its caches.
//!
//! Pods and NADs come from a fake API server on the node's loopback (the
//! tests' `fake-apiserver`): the daemon lists and watches them as in a
//! cluster.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_apiserver::FakeApiServer;
use serde_json::{Value, json};

use crate::bench::{Netns, Run, median, ms, node_env, peak_rss_kib, percentile, timed, write_json};
use crate::release::STATIC_TARGET;
use crate::util::Result;

/// The static release shim (`cargo xtask bench` builds it).
fn static_shim(binary: &Path) -> PathBuf {
    binary
        .parent()
        .and_then(Path::parent)
        .expect("target/release")
        .join(STATIC_TARGET)
        .join("release/multus-wasm-shim")
}

/// A release daemon serving `config` (with `socketDir` set), killed on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(binary: &Path, dir: &Path, mut config: Value) -> Result<Daemon> {
        std::fs::create_dir_all(dir).map_err(|err| err.to_string())?;
        config["socketDir"] = json!(dir.join("run"));
        let path = dir.join("daemon.conf");
        write_json(&path, &config)?;
        let child = Command::new(binary)
            .args(["--log-level", "error", "daemon", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| format!("starting the daemon: {err}"))?;
        let daemon = Daemon {
            child,
            socket: dir.join("run/multus-wasm.sock"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while daemon.get("/healthz").as_deref() != Some("ok\n") {
            if Instant::now() > deadline {
                return Err("the daemon never became healthy".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    fn get(&self, path: &str) -> Option<String> {
        let mut stream = UnixStream::connect(&self.socket).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: multus-wasm\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        text.split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
    }

    /// (current RSS, peak RSS) in MiB, from /proc.
    fn rss_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| -> f64 {
            status
                .lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Wait (at most 60 s) until the daemon's metrics hold `line`.
    fn wait_metric(&self, line: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self
            .get("/metrics")
            .is_some_and(|metrics| metrics.lines().any(|seen| seen == line))
        {
            if Instant::now() > deadline {
                return Err(format!("the daemon's metrics never showed {line}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Mean time per request and per step of `command` so far, from the
    /// daemon's histograms: "request 1.20 ms: netlink 0.50, ...".
    fn breakdown(&self, command: &str) -> String {
        let metrics = self.get("/metrics").unwrap_or_default();
        let value = |name: &str, labels: &str| -> f64 {
            let prefix = format!("{name}{{{labels}}} ");
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(&prefix))
                .and_then(|value| value.parse().ok())
                .unwrap_or(0.0)
        };
        let mean = |name: &str, labels: &str| -> f64 {
            let count = value(&format!("{name}_count"), labels);
            if count == 0.0 {
                return 0.0;
            }
            value(&format!("{name}_sum"), labels) / count * 1000.0
        };
        let command_label = format!("command=\"{command}\"");
        let mut steps: Vec<(String, f64)> = metrics
            .lines()
            .filter_map(|line| {
                let labels = line
                    .strip_prefix("multus_wasm_cni_step_duration_seconds_count{")?
                    .split_once('}')?
                    .0;
                let step = labels
                    .strip_prefix(&format!("{command_label},step=\""))?
                    .strip_suffix('"')?;
                Some((
                    step.to_string(),
                    mean("multus_wasm_cni_step_duration_seconds", labels),
                ))
            })
            .collect();
        steps.sort_by(|a, b| b.1.total_cmp(&a.1));
        let steps: Vec<String> = steps
            .iter()
            .map(|(step, millis)| format!("{step} {millis:.2}"))
            .collect();
        format!(
            "request {:.2} ms: {} (ms, mean per call)",
            mean("multus_wasm_cni_request_duration_seconds", &command_label),
            steps.join(", ")
        )
    }

    fn netconf(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "cniVersion": "1.0.0", "name": "multus-wasm-network", "type": "multus-wasm-shim",
            "daemonSocketDir": self.socket.parent().expect("socket dir")
        }))
        .expect("json")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check(run: Run, what: &str) -> Result<Run> {
    if run.ok {
        Ok(run)
    } else {
        Err(format!("{what} failed: {} {}", run.stdout, run.stderr))
    }
}

/// Every thick measurement, printed; `ours_config` is thin mode's config
/// for one seed attachment (delegates mode).
pub fn run(binary: &Path, scratch: &Path, ours_config: &Value, iterations: usize) -> Result<()> {
    let shim = static_shim(binary);
    let elf = std::fs::read(&shim).map_err(|err| format!("{}: {err}", shim.display()))?;
    println!(
        "\n== thick mode: the shim ({STATIC_TARGET}) is {:.0} KiB (target <= 1024 KiB), {} ==",
        elf.len() as f64 / 1024.0,
        match crate::util::check_static(&elf) {
            Ok(()) => "statically linked".to_string(),
            Err(err) => format!("NOT statically linked: {err}"),
        }
    );
    let dir = scratch.join("thick");
    let mut config = ours_config.clone();
    config["delegates"][0]["ipam"]["dataDir"] = json!(dir.join("ipam"));
    config["cniDir"] = json!(dir.join("cni"));
    let daemon = Daemon::start(binary, &dir, config)?;
    let shim_stdin = daemon.netconf();
    let reference = Path::new("/usr/lib/cni/macvlan");
    let ip = Path::new("/usr/sbin/ip");
    let reference_stdin = serde_json::to_vec(&ours_config["delegates"][0].clone().tap(|netconf| {
        netconf["ipam"]["dataDir"] = json!(dir.join("reference-ipam"));
    }))
    .expect("json");
    let pod = Netns::new("mwbench-tpod")?;
    let env =
        |command: &str, id: &str| node_env(command, id, &pod.path(), "net1", "IgnoreUnknown=1");
    // Warm up both sides (the daemon's first call of a network creates its
    // directories).
    check(
        timed(&shim, &[], &env("ADD", "warm"), &shim_stdin)?,
        "thick ADD",
    )?;
    check(
        timed(&shim, &[], &env("DEL", "warm"), &shim_stdin)?,
        "thick DEL",
    )?;
    let mut samples: [Vec<Duration>; 6] = Default::default();
    for iteration in 0..iterations {
        let id = format!("thick-{iteration}");
        let add = check(
            timed(&shim, &[], &env("ADD", &id), &shim_stdin)?,
            "thick ADD",
        )?;
        let del = check(
            timed(&shim, &[], &env("DEL", &id), &shim_stdin)?,
            "thick DEL",
        )?;
        samples[0].push(add.elapsed);
        samples[1].push(del.elapsed);
        let add = check(
            timed(reference, &[], &env("ADD", &id), &reference_stdin)?,
            "reference ADD",
        )?;
        let del = check(
            timed(reference, &[], &env("DEL", &id), &reference_stdin)?,
            "reference DEL",
        )?;
        samples[2].push(add.elapsed);
        samples[3].push(del.elapsed);
        let name = pod.name();
        let create = check(
            timed(
                ip,
                &[
                    "link", "add", "link", "ens3", "name", "kmv0", "netns", name, "type",
                    "macvlan", "mode", "bridge",
                ],
                &[],
                b"",
            )?,
            "ip link add",
        )?;
        samples[5].push(create.elapsed);
        timed(ip, &["-n", name, "link", "set", "kmv0", "up"], &[], b"")?;
        timed(
            ip,
            &["-n", name, "addr", "add", "192.0.2.10/24", "dev", "kmv0"],
            &[],
            b"",
        )?;
        let delete = check(
            timed(ip, &["-n", name, "link", "del", "kmv0"], &[], b"")?,
            "ip link del",
        )?;
        samples[4].push(delete.elapsed);
    }
    let [
        thick_add,
        thick_del,
        ref_add,
        ref_del,
        kernel_del,
        kernel_add,
    ] = samples.map(|mut samples| median(&mut samples));
    let shim_rss = peak_rss_kib(&shim, &env("ADD", "rss"), &shim_stdin)?.max(peak_rss_kib(
        &shim,
        &env("DEL", "rss"),
        &shim_stdin,
    )?);
    println!(
        "\n== thick mode: one attachment through shim and daemon (seed netconf), {iterations} interleaved runs, medians =="
    );
    println!(
        "ADD  thick {:>6.2} ms  reference {:>6.2} ms  thick/reference {:>5.2}  (target <= 0.20)",
        ms(thick_add),
        ms(ref_add),
        ms(thick_add) / ms(ref_add)
    );
    println!(
        "     the kernel's part: `ip link add` of the macvlan alone {:>6.2} ms",
        ms(kernel_add)
    );
    println!(
        "DEL  thick {:>6.2} ms  reference {:>6.2} ms  kernel delete {:>6.2} ms  thick/kernel {:>5.2}  (target <= 1.15)",
        ms(thick_del),
        ms(ref_del),
        ms(kernel_del),
        ms(thick_del) / ms(kernel_del)
    );
    for command in ["ADD", "DEL"] {
        println!(
            "     inside the daemon, {command}: {}",
            daemon.breakdown(command)
        );
    }
    println!(
        "shim peak RSS {:.2} MiB (target <= 3 MiB)",
        shim_rss as f64 / 1024.0
    );
    drop(pod);
    two_network_pod(binary, &shim, scratch, iterations)?;
    drop(daemon);
    concurrent(binary, &shim, scratch)?;
    cached_objects(binary, scratch)?;
    Ok(())
}

/// `Value::tap`: edit a clone in place.
trait Tap {
    fn tap(self, edit: impl FnOnce(&mut Self)) -> Self;
}

impl Tap for Value {
    fn tap(mut self, edit: impl FnOnce(&mut Self)) -> Self {
        edit(&mut self);
        self
    }
}

/// The seed's two-network pod through the shim, one- and two-attachment
/// DEL, against the delegates through the reference binaries (what Multus
/// thin runs).
fn two_network_pod(binary: &Path, shim: &Path, scratch: &Path, iterations: usize) -> Result<()> {
    let dir = scratch.join("thick-two");
    std::fs::create_dir_all(&dir).map_err(|err| err.to_string())?;
    let macvlan = |data_dir: &Path| {
        json!({"cniVersion": "1.0.0", "name": "macvlan-conf", "type": "macvlan", "master": "ens3", "mode": "bridge",
               "ipam": {"type": "host-local", "subnet": "192.168.1.0/24", "rangeStart": "192.168.1.200",
                        "rangeEnd": "192.168.1.216", "routes": [{"dst": "0.0.0.0/0"}], "gateway": "192.168.1.1",
                        "dataDir": data_dir}})
    };
    let ptp = |data_dir: &Path| {
        json!({"cniVersion": "1.0.0", "name": "ptp-cluster", "plugins": [{"type": "ptp", "ipMasq": false,
               "ipam": {"type": "host-local", "subnet": "10.244.0.0/24", "dataDir": data_dir}}]})
    };
    let cluster = dir.join("10-ptp.conflist");
    write_json(&cluster, &ptp(&dir.join("ours-cluster-ipam")))?;
    // The API on loopback, as in a cluster: the daemon lists and watches
    // this node's pods and the NADs, and writes each pod's network-status.
    let api = FakeApiServer::start();
    api.add_nad(
        "default",
        "macvlan-conf",
        &macvlan(&dir.join("ours-ipam")).to_string(),
    );
    for (name, networks) in [
        ("one", "macvlan-conf"),
        ("two", "macvlan-conf,macvlan-conf"),
    ] {
        api.add_pod_on_node(
            "default",
            &format!("pod-{name}"),
            &format!("uid-{name}"),
            BENCH_NODE,
            json!({"k8s.v1.cni.cncf.io/networks": networks}),
        );
    }
    let wasm_plugins = wasm_plugins(scratch)?;
    let config = json!({
        "cniVersion": "1.0.0", "name": "multus-wasm-bench", "type": "multus-wasm",
        "clusterNetwork": cluster, "binDir": "/usr/lib/cni", "cniDir": dir.join("cni"),
        "wasmCacheDir": scratch.join("cache"), "kubeconfig": api.kubeconfig(&dir),
        "nodeName": BENCH_NODE,
        "ipamDataRoots": [dir], "wasmPlugins": wasm_plugins, "logLevel": "error", "logToStderr": false
    });
    let daemon = Daemon::start(binary, &dir.join("daemon"), config)?;
    daemon.wait_metric(r#"multus_wasm_cache_objects{kind="pods"} 2"#)?;
    let shim_stdin = daemon.netconf();
    let mut ptp_plugin = ptp(&dir.join("ref-cluster-ipam"))["plugins"][0].clone();
    ptp_plugin["name"] = json!("ptp-cluster");
    ptp_plugin["cniVersion"] = json!("1.0.0");
    let ptp_stdin = serde_json::to_vec(&ptp_plugin).expect("json");
    let macvlan_stdin = serde_json::to_vec(&macvlan(&dir.join("ref-ipam"))).expect("json");
    let ptp_bin = Path::new("/usr/lib/cni/ptp");
    let macvlan_bin = Path::new("/usr/lib/cni/macvlan");
    let args = |pod: &str| {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-{pod};K8S_POD_UID=uid-{pod}"
        )
    };
    let (mut thick, mut reference, mut del_one, mut del_two) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for iteration in 0..iterations.min(20) {
        for (pod_name, samples) in [("one", &mut del_one), ("two", &mut del_two)] {
            let pod = Netns::new("mwbench-tp2")?;
            let id = format!("thick-{pod_name}-{iteration}");
            let started = Instant::now();
            check(
                timed(
                    shim,
                    &[],
                    &node_env("ADD", &id, &pod.path(), "eth0", &args(pod_name)),
                    &shim_stdin,
                )?,
                "thick two-network ADD",
            )?;
            let del = check(
                timed(
                    shim,
                    &[],
                    &node_env("DEL", &id, &pod.path(), "eth0", &args(pod_name)),
                    &shim_stdin,
                )?,
                "thick two-network DEL",
            )?;
            samples.push(del.elapsed);
            if pod_name == "two" {
                thick.push(started.elapsed());
            }
        }
        let pod = Netns::new("mwbench-tp2")?;
        let id = format!("ref-two-{iteration}");
        let started = Instant::now();
        for (program, stdin, ifname) in [
            (ptp_bin, &ptp_stdin, "eth0"),
            (macvlan_bin, &macvlan_stdin, "net1"),
            (macvlan_bin, &macvlan_stdin, "net2"),
        ] {
            check(
                timed(
                    program,
                    &[],
                    &node_env("ADD", &id, &pod.path(), ifname, "IgnoreUnknown=1"),
                    stdin,
                )?,
                "reference ADD",
            )?;
        }
        for (program, stdin, ifname) in [
            (macvlan_bin, &macvlan_stdin, "net2"),
            (macvlan_bin, &macvlan_stdin, "net1"),
            (ptp_bin, &ptp_stdin, "eth0"),
        ] {
            timed(
                program,
                &[],
                &node_env("DEL", &id, &pod.path(), ifname, "IgnoreUnknown=1"),
                stdin,
            )?;
        }
        reference.push(started.elapsed());
    }
    let (thick, reference) = (median(&mut thick), median(&mut reference));
    let (del_one, del_two) = (median(&mut del_one), median(&mut del_two));
    println!(
        "\n== thick mode: the seed's two-network pod (ptp + 2 macvlan), ADD + DEL, medians =="
    );
    println!(
        "lifecycle: thick {:.2} ms, delegates through the reference binaries (Multus thin's work) {:.2} ms: thick/reference {:.2} (target <= 0.33)",
        ms(thick),
        ms(reference),
        ms(thick) / ms(reference)
    );
    println!(
        "DEL of a one-attachment pod {:.2} ms, of a two-attachment pod {:.2} ms: {:.2}x (target: no slower)",
        ms(del_one),
        ms(del_two),
        ms(del_two) / ms(del_one)
    );
    let requests = api.requests();
    let gets = requests
        .iter()
        .filter(|request| {
            request.starts_with("GET ")
                && (request.contains("/pods/")
                    || request.contains("/network-attachment-definitions/"))
        })
        .count();
    let status_writes = requests
        .iter()
        .filter(|request| request.starts_with("PATCH ") && request.ends_with("/status"))
        .count();
    println!(
        "API server: {gets} GETs of a pod or NAD (target 0: all from the caches), {status_writes} network-status PATCHes"
    );
    Ok(())
}

/// The node this benchmark's daemons serve.
const BENCH_NODE: &str = "mwbench-node";

/// The shipped plugins as the first thick daemon's config lists them.
fn wasm_plugins(scratch: &Path) -> Result<Value> {
    let config: Value = serde_json::from_slice(
        &std::fs::read(scratch.join("thick/daemon.conf")).map_err(|err| err.to_string())?,
    )
    .map_err(|err| err.to_string())?;
    Ok(config["wasmPlugins"].clone())
}

/// The daemon's memory with a cluster's worth of objects in its caches:
/// 1,000 pods on its node (and 1,000 on other nodes, which it must not
/// hold) and 100 NADs, each shaped as a real cluster's (labels, owner,
/// managed fields, annotations with a network-status).
fn cached_objects(binary: &Path, scratch: &Path) -> Result<()> {
    let (pods, nads) = (1000, 100);
    let dir = scratch.join("thick-cache");
    std::fs::create_dir_all(&dir).map_err(|err| err.to_string())?;
    let api = FakeApiServer::start();
    for index in 0..nads {
        let config = json!({"cniVersion": "1.0.0", "name": format!("net-{index}"), "type": "macvlan",
            "master": "ens3", "mode": "bridge",
            "ipam": {"type": "host-local", "subnet": format!("10.{}.0.0/16", 100 + index % 100),
                     "routes": [{"dst": "0.0.0.0/0"}], "gateway": format!("10.{}.0.1", 100 + index % 100)}});
        api.add_nad("default", &format!("net-{index}"), &config.to_string());
    }
    for index in 0..2 * pods {
        let (node, name) = if index < pods {
            (BENCH_NODE, format!("app-{index}"))
        } else {
            ("another-node", format!("other-{index}"))
        };
        let status = json!([
            {"name": "ptp-cluster", "interface": "eth0", "ips": [format!("10.244.{}.{}", index / 250, index % 250 + 2)],
             "mac": "0a:58:0a:f4:00:02", "default": true, "dns": {}},
            {"name": format!("default/net-{}", index % nads), "interface": "net1",
             "ips": [format!("10.100.{}.{}", index / 250, index % 250 + 2)], "mac": "5e:8d:3a:11:22:33", "dns": {}}
        ]);
        api.add_pod_on_node(
            "default",
            &name,
            &format!("8b1f6a2e-1c3d-4e5f-9a7b-{index:012}"),
            node,
            json!({
                "k8s.v1.cni.cncf.io/networks": format!("net-{}", index % nads),
                "k8s.v1.cni.cncf.io/network-status": status.to_string(),
                "kubectl.kubernetes.io/restartedAt": "2026-12-01T10:00:00Z"
            }),
        );
        api.modify_pod("default", &name, |pod| {
            let metadata = &mut pod["metadata"];
            metadata["labels"] = json!({"app": "web", "pod-template-hash": "5d8f7c9b6d",
                                        "app.kubernetes.io/part-of": "shop"});
            metadata["generateName"] = json!("web-5d8f7c9b6d-");
            metadata["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web-5d8f7c9b6d", "uid": "0f3c2a1b-5e6d-4c7b-8a9f-001122334455",
                "controller": true, "blockOwnerDeletion": true}]);
            metadata["managedFields"] = json!([
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                 "time": "2026-12-01T10:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}},
                              "f:ownerReferences": {".": {}, "k:{\"uid\":\"0f3c2a1b\"}": {}}},
                              "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}}}}},
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "subresource": "status",
                 "time": "2026-12-01T10:00:05Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:phase": {}, "f:podIP": {}}}},
                {"manager": "multus-wasm", "operation": "Update", "apiVersion": "v1", "subresource": "status",
                 "time": "2026-12-01T10:00:04Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:annotations": {"f:k8s.v1.cni.cncf.io/network-status": {}}}}}
            ]);
        });
    }
    let config = json!({
        "cniVersion": "1.0.0", "name": "multus-wasm-bench", "type": "multus-wasm",
        "delegates": [{"cniVersion": "1.0.0", "name": "cache-net", "type": "macvlan", "master": "ens3",
                       "ipam": {"type": "host-local", "subnet": "10.41.0.0/16", "dataDir": dir.join("ipam")}}],
        "binDir": "/usr/lib/cni", "cniDir": dir.join("cni"),
        "wasmCacheDir": scratch.join("cache"), "kubeconfig": api.kubeconfig(&dir),
        "nodeName": BENCH_NODE, "wasmPlugins": wasm_plugins(scratch)?, "logLevel": "error"
    });
    let daemon = Daemon::start(binary, &dir, config)?;
    daemon.wait_metric(&format!(
        r#"multus_wasm_cache_objects{{kind="pods"}} {pods}"#
    ))?;
    daemon.wait_metric(&format!(
        r#"multus_wasm_cache_objects{{kind="nads"}} {nads}"#
    ))?;
    let (current, peak) = daemon.rss_mib();
    println!(
        "\n== thick mode: the daemon with {pods} pods (of {}) and {nads} NADs in its caches ==",
        2 * pods
    );
    println!("daemon RSS {current:.1} MiB, peak {peak:.1} MiB (target <= 48 MiB)");
    Ok(())
}

/// 64 pods ADD at once through the shim, then DEL, against the reference
/// binaries; the daemon's RSS during it.
fn concurrent(binary: &Path, shim: &Path, scratch: &Path) -> Result<()> {
    let pods = 64;
    let dir = scratch.join("thick-scale");
    let netconf = |data_dir: &Path| {
        json!({"cniVersion": "1.0.0", "name": "scale-net", "type": "macvlan", "master": "ens3",
               "ipam": {"type": "host-local", "subnet": "10.40.0.0/16", "dataDir": data_dir}})
    };
    let wasm_plugins = wasm_plugins(scratch)?;
    let config = json!({
        "cniVersion": "1.0.0", "name": "scale", "type": "multus-wasm",
        "delegates": [netconf(&dir.join("ours-ipam"))],
        "binDir": "/usr/lib/cni", "cniDir": dir.join("cni"), "wasmCacheDir": scratch.join("cache"),
        "manifestDir": dir.join("none"), "wasmPlugins": wasm_plugins, "logLevel": "error"
    });
    let daemon = Daemon::start(binary, &dir, config)?;
    let (idle_rss, _) = daemon.rss_mib();
    let shim_stdin = daemon.netconf();
    let reference_stdin = serde_json::to_vec(&netconf(&dir.join("ref-ipam"))).expect("json");
    let netns: Vec<Netns> = (0..pods)
        .map(|index| Netns::new(&format!("mwbench-ts{index}")))
        .collect::<Result<_>>()?;
    // Warm both sides up once.
    for (program, stdin) in [
        (shim, &shim_stdin),
        (Path::new("/usr/lib/cni/macvlan"), &reference_stdin),
    ] {
        check(
            timed(
                program,
                &[],
                &node_env("ADD", "warm", &netns[0].path(), "net1", "IgnoreUnknown=1"),
                stdin,
            )?,
            "warm ADD",
        )?;
        timed(
            program,
            &[],
            &node_env("DEL", "warm", &netns[0].path(), "net1", "IgnoreUnknown=1"),
            stdin,
        )?;
    }
    let mut totals = Vec::new();
    for (label, program, stdin) in [
        ("thick", shim, &shim_stdin),
        (
            "reference",
            Path::new("/usr/lib/cni/macvlan"),
            &reference_stdin,
        ),
    ] {
        let run_all = |command: &str| -> Result<(Duration, Vec<Duration>, Vec<String>)> {
            let started = Instant::now();
            let runs: Vec<Result<Run>> = std::thread::scope(|scope| {
                let handles: Vec<_> = netns
                    .iter()
                    .enumerate()
                    .map(|(index, ns)| {
                        let env = node_env(
                            command,
                            &format!("ts-{index}"),
                            &ns.path(),
                            "net1",
                            "IgnoreUnknown=1",
                        );
                        scope.spawn(move || timed(program, &[], &env, stdin))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|handle| handle.join().expect("thread"))
                    .collect()
            });
            let total = started.elapsed();
            let mut latencies = Vec::new();
            let mut addresses = Vec::new();
            for run in runs {
                let run = check(run?, &format!("{label} {command}"))?;
                latencies.push(run.elapsed);
                if let Ok(value) = serde_json::from_str::<Value>(&run.stdout)
                    && let Some(address) = value["ips"][0]["address"].as_str()
                {
                    addresses.push(address.to_string());
                }
            }
            Ok((total, latencies, addresses))
        };
        let (add_total, mut latencies, addresses) = run_all("ADD")?;
        let (del_total, _, _) = run_all("DEL")?;
        let distinct: std::collections::BTreeSet<&String> = addresses.iter().collect();
        let left = std::fs::read_dir(dir.join(if label == "thick" {
            "ours-ipam/scale-net"
        } else {
            "ref-ipam/scale-net"
        }))
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| {
                    entry.file_name().to_string_lossy().contains('.')
                        && entry.file_name().to_string_lossy().starts_with("10.")
                })
                .count()
        })
        .unwrap_or(0);
        println!(
            "{pods} pods {label:<10} ADD total {:>7.1} ms (p50 {:>6.1} ms, p99 {:>6.1} ms), DEL total {:>7.1} ms, {}/{} distinct addresses, {left} left after DEL",
            ms(add_total),
            ms(percentile(&mut latencies, 0.5)),
            ms(percentile(&mut latencies, 0.99)),
            ms(del_total),
            distinct.len(),
            addresses.len()
        );
        totals.push(add_total);
    }
    let (current, peak) = daemon.rss_mib();
    println!(
        "{pods} concurrent pods: thick/reference ADD total {:.2} (target <= 0.25); daemon RSS idle {idle_rss:.1} MiB, now {current:.1} MiB, peak {peak:.1} MiB (target <= 96 MiB)",
        ms(totals[0]) / ms(totals[1])
    );
    Ok(())
}
