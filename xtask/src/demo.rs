//! `cargo xtask demo`: the seed scenario, replayed as kubelet would.
//!
//! A "node" network namespace holds the veth `ens3` (the macvlan master);
//! each pod is a network namespace beside it. The host config names a
//! native cluster network (Debian's ptp with host-local on 10.244.0.0/24)
//! and registers the wasm macvlan and host-local plugins; pods and the NAD
//! come from a directory of manifests (the ones in deploy/examples/seed/).
//! The inner part runs in a private mount namespace with a tmpfs over
//! /var/lib/cni/networks, so the demo neither sees nor leaves IPAM state
//! on this machine and can run any number of times.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::util::{self, Result, workspace_root};

const NODE: &str = "mwdemo-node";
const PODS: [(&str, &str, &str); 2] = [
    (
        "mwdemo-pod1",
        "samplepod-one.yaml",
        "5f9c1a2e-0001-4c6e-9a53-1d2f3e4a5b61",
    ),
    (
        "mwdemo-pod2",
        "samplepod-two.yaml",
        "5f9c1a2e-0002-4c6e-9a53-1d2f3e4a5b62",
    ),
];

/// `cargo xtask demo [--mode thin|thick]`.
pub fn run(args: &[String]) -> Result<()> {
    let mode = match args {
        [] => "thin",
        [flag, mode] if flag == "--mode" && (mode == "thin" || mode == "thick") => mode.as_str(),
        _ => return Err("usage: cargo xtask demo [--mode thin|thick]".into()),
    };
    util::ensure_reference_plugins()?;
    if !util::is_root() {
        return Err("the demo creates network namespaces: run it as root".into());
    }
    let root = workspace_root();
    util::run(util::cargo().current_dir(&root).args([
        "build",
        "-p",
        "multus-wasm",
        "-p",
        "multus-wasm-shim",
    ]))?;
    let plugins = crate::plugins()?;
    let xtask = std::env::current_exe().map_err(|err| err.to_string())?;
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--"])
        .arg(xtask)
        .arg("demo-inner")
        .arg(mode);
    command.args(util::plugin_args(&plugins));
    util::run(&mut command)
}

fn sh(args: &[&str]) -> Result<String> {
    util::output(Command::new(args[0]).args(&args[1..]))
}

/// Remove what an earlier (interrupted) run may have left.
fn cleanup() {
    for (pod, _, _) in PODS {
        let _ = sh(&["ip", "netns", "del", pod]);
    }
    let _ = sh(&["ip", "netns", "del", NODE]);
}

struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        cleanup();
    }
}

/// A daemon in the node namespace (thick mode), stopped on drop.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    fn start(binary: &Path, config: &Path, socket: &Path) -> Result<Daemon> {
        let child = Command::new("ip")
            .args(["netns", "exec", NODE])
            .arg(binary)
            .args(["--log-level", "warn", "daemon", "--config"])
            .arg(config)
            .spawn()
            .map_err(|err| format!("starting the daemon: {err}"))?;
        let daemon = Daemon(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            if std::time::Instant::now() > deadline {
                return Err("the daemon did not start".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(daemon)
    }
}

pub fn inner(args: &[String]) -> Result<()> {
    let [mode, plugin_args @ ..] = args else {
        return Err("demo-inner: bad arguments".into());
    };
    let thick = mode == "thick";
    let root = workspace_root();
    let host_binary = root.join("target/debug/multus-wasm");
    let work = PathBuf::from("/tmp/multus-wasm-demo");
    cleanup();
    let _ = std::fs::remove_dir_all(&work);
    let _cleanup = Cleanup;
    for dir in ["manifests", "cni", "log", "net.d"] {
        std::fs::create_dir_all(work.join(dir)).map_err(|err| err.to_string())?;
    }
    std::fs::create_dir_all("/var/lib/cni/networks").map_err(|err| err.to_string())?;
    sh(&["mount", "-t", "tmpfs", "demo-ipam", "/var/lib/cni/networks"])?;

    // The node: a namespace with ens3 (one end of a veth pair) and lo.
    sh(&["ip", "netns", "add", NODE])?;
    sh(&["ip", "-n", NODE, "link", "set", "lo", "up"])?;
    sh(&[
        "ip",
        "-n",
        NODE,
        "link",
        "add",
        "ens3",
        "type",
        "veth",
        "peer",
        "name",
        "ens3-peer",
    ])?;
    sh(&["ip", "-n", NODE, "link", "set", "ens3", "up"])?;
    sh(&["ip", "-n", NODE, "link", "set", "ens3-peer", "up"])?;

    let wasm_plugins = util::wasm_plugins(plugin_args)?;
    let cluster_network = work.join("net.d/10-ptp.conflist");
    std::fs::write(
        &cluster_network,
        serde_json::to_string_pretty(&json!({
            "cniVersion": "1.0.0",
            "name": "ptp-cluster",
            "plugins": [{
                "type": "ptp",
                "ipMasq": false,
                "ipam": {"type": "host-local", "subnet": "10.244.0.0/24", "dataDir": work.join("cluster-ipam"), "routes": [{"dst": "0.0.0.0/0"}]}
            }]
        }))
        .expect("json"),
    )
    .map_err(|err| err.to_string())?;
    let config = json!({
        "cniVersion": "1.0.0",
        "name": "multus-wasm-network",
        "type": "multus-wasm",
        "clusterNetwork": cluster_network,
        "binDir": "/usr/lib/cni",
        "cniDir": work.join("cni"),
        "manifestDir": work.join("manifests"),
        "wasmCacheDir": work.join("cache"),
        "wasmPlugins": wasm_plugins,
        "logFile": work.join("log/multus-wasm.log"),
        "logLevel": "verbose",
        "logToStderr": false
    });
    // Thin: kubelet execs multus-wasm with the host config. Thick: the
    // daemon runs the host config; kubelet execs the shim with its own.
    let (binary, config, _daemon) = if thick {
        let mut daemon_config = config;
        daemon_config["socketDir"] = json!(work.join("run"));
        let path = work.join("daemon.conf");
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&daemon_config).expect("json"),
        )
        .map_err(|err| err.to_string())?;
        let daemon = Daemon::start(&host_binary, &path, &work.join("run/multus-wasm.sock"))?;
        println!(
            "=== thick mode: multus-wasm daemon serving {}",
            work.join("run").display()
        );
        let shim_config = json!({"cniVersion": "1.0.0", "name": "multus-wasm-network",
                                 "type": "multus-wasm-shim", "daemonSocketDir": work.join("run")});
        (
            root.join("target/debug/multus-wasm-shim"),
            serde_json::to_vec_pretty(&shim_config).expect("json"),
            Some(daemon),
        )
    } else {
        (
            host_binary,
            serde_json::to_vec_pretty(&config).expect("json"),
            None,
        )
    };
    let seed = root.join("deploy/examples/seed");
    std::fs::copy(
        seed.join("macvlan-conf.yaml"),
        work.join("manifests/macvlan-conf.yaml"),
    )
    .map_err(|err| err.to_string())?;

    let mut failures = Vec::new();
    let expected: [&[&str]; 2] = [&["192.168.1.200"], &["192.168.1.201", "192.168.1.202"]];
    for ((pod, manifest, uid), expected) in PODS.iter().zip(expected) {
        println!("\n=== pod {manifest} (netns {pod}) ===");
        std::fs::copy(seed.join(manifest), work.join("manifests").join(manifest))
            .map_err(|err| err.to_string())?;
        sh(&["ip", "netns", "add", pod])?;
        let container_id = format!("{pod}-sandbox");
        let cni = |command: &str| -> Result<String> {
            let mut child = Command::new("ip");
            child
                .args(["netns", "exec", NODE])
                .arg(&binary)
                .env("CNI_COMMAND", command)
                .env("CNI_CONTAINERID", &container_id)
                .env("CNI_NETNS", format!("/var/run/netns/{pod}"))
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", "/usr/lib/cni")
                .env(
                    "CNI_ARGS",
                    format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=samplepod;K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID={uid}"),
                )
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut spawned = child.spawn().map_err(|err| err.to_string())?;
            use std::io::Write;
            spawned
                .stdin
                .take()
                .expect("piped")
                .write_all(&config)
                .map_err(|err| err.to_string())?;
            let output = spawned.wait_with_output().map_err(|err| err.to_string())?;
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            if output.status.success() {
                Ok(stdout)
            } else {
                Err(format!(
                    "CNI {command} failed: {stdout}{}",
                    String::from_utf8_lossy(&output.stderr)
                ))
            }
        };
        let result = cni("ADD")?;
        let pretty = serde_json::from_str::<serde_json::Value>(&result)
            .map(|value| serde_json::to_string_pretty(&value).expect("json"))
            .unwrap_or(result);
        println!(
            "--- CNI ADD result (the cluster network's, as kubelet sees it)\n{}",
            pretty.trim()
        );
        let addresses = sh(&["ip", "-n", pod, "addr"])?;
        println!("--- ip -n {pod} addr\n{}", addresses.trim_end());
        let status_path = work
            .join("manifests")
            .join(manifest.replace(".yaml", ".network-status.json"));
        let status =
            std::fs::read_to_string(&status_path).unwrap_or_else(|err| format!("(none: {err})"));
        println!("--- k8s.v1.cni.cncf.io/network-status\n{}", status.trim());
        for (index, address) in expected.iter().enumerate() {
            let ifname = format!("net{}", index + 1);
            let shown = sh(&["ip", "-n", pod, "-4", "-o", "addr", "show", "dev", &ifname])
                .unwrap_or_default();
            if !shown.contains(&format!("{address}/24")) {
                failures.push(format!(
                    "{manifest}: expected {ifname} with {address}/24, got {:?}",
                    shown.trim()
                ));
            }
        }
        cni("DEL")?;
        std::fs::remove_file(work.join("manifests").join(manifest))
            .map_err(|err| err.to_string())?;
        let remaining = sh(&["ip", "-n", pod, "-o", "link"])?;
        if remaining.contains("net1") {
            failures.push(format!("{manifest}: net1 still present after DEL"));
        }
        sh(&["ip", "netns", "del", pod])?;
        println!("--- pod deleted (CNI DEL, netns removed)");
    }
    let leftover = list_dir(Path::new("/var/lib/cni/networks/macvlan-conf"));
    if leftover.iter().any(|name| name.starts_with("192.168.")) {
        failures.push(format!("reservations left after DEL: {leftover:?}"));
    }
    let _ = sh(&["umount", "/var/lib/cni/networks"]);
    if failures.is_empty() {
        println!("\nseed scenario: OK (net1 192.168.1.200; then net1 .201 and net2 .202)");
        Ok(())
    } else {
        Err(format!(
            "seed scenario failed:\n  {}",
            failures.join("\n  ")
        ))
    }
}

fn list_dir(path: &Path) -> Vec<String> {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
