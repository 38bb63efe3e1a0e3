//! `cargo xtask bench`: measured side by side with the reference plugins,
//! in one run, interleaved, medians over many runs.
//!
//! 1. Per-call costs inside the sandbox (`multus-wasm plugin bench`): a
//!    compile, and a cached call (load from the cache, instantiate, call).
//! 2. One attachment (the seed's macvlan + host-local netconf), ADD and DEL
//!    timed apart: our release binary vs Debian's /usr/lib/cni/macvlan, with
//!    the kernel's own cost of creating and deleting one macvlan (`ip link`)
//!    beside them, and the peak RSS of both.
//!
//! Everything runs inside a private "node" network namespace with its own
//! `ens3`; nothing touches the machine's interfaces.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{self, Result, workspace_root};

const NODE: &str = "mwbench-node";

pub fn run(args: &[String]) -> Result<()> {
    util::ensure_reference_plugins()?;
    if !util::is_root() {
        return Err("the benchmark creates network namespaces: run it as root".into());
    }
    let iterations = parse_iterations(args)?;
    let root = workspace_root();
    util::run(util::cargo().current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "multus-wasm",
        "-p",
        "multus-wasm-shim",
    ]))?;
    // The shim as it ships: static (musl).
    util::run(Command::new("rustup").args(["target", "add", crate::release::STATIC_TARGET]))?;
    util::run(util::cargo().current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "multus-wasm-shim",
        "--target",
        crate::release::STATIC_TARGET,
    ]))?;
    let plugins = crate::plugins()?;
    let binary = root.join("target/release/multus-wasm");

    println!("\n== per-call cost inside the sandbox (release build, in-process) ==");
    let scratch = std::env::temp_dir().join("multus-wasm-bench");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|err| err.to_string())?;
    let delegate_config = scratch.join("netconf.json");
    let ipam_result = scratch.join("ipam-result.json");
    write_json(
        &delegate_config,
        &json!({"cniVersion": "1.0.0", "name": "bench", "type": "macvlan", "master": "lo",
                "ipam": {"type": "host-local", "subnet": "10.10.0.0/16"}}),
    )?;
    write_json(
        &ipam_result,
        &json!({"cniVersion": "1.0.0", "ips": [{"address": "10.10.0.2/16", "gateway": "10.10.0.1"}], "routes": [{"dst": "0.0.0.0/0"}]}),
    )?;
    println!(
        "{:<12} {:>9} {:>12} {:>14} {:>18} {:>14} {:>10}",
        "plugin",
        "size KiB",
        "compile ms",
        "cached load us",
        "instantiate+call us",
        "cached call us",
        "fuel"
    );
    for (plugin_type, path, _) in &plugins {
        if plugin_type == "static" {
            continue;
        }
        let mut command = Command::new(&binary);
        command
            .args(["--log-level", "error", "plugin", "bench"])
            .arg(path)
            .arg("--config")
            .arg(&delegate_config);
        if plugin_type == "macvlan" {
            command.arg("--ipam-result").arg(&ipam_result);
        }
        let stats: Value =
            serde_json::from_str(&util::output(&mut command)?).map_err(|err| err.to_string())?;
        println!(
            "{:<12} {:>9.0} {:>12.1} {:>14.0} {:>18.0} {:>14.0} {:>10}",
            plugin_type,
            stats["sizeBytes"].as_f64().unwrap_or(0.0) / 1024.0,
            stats["compileMillis"].as_f64().unwrap_or(0.0),
            stats["cachedLoadMicros"].as_f64().unwrap_or(0.0),
            stats["instantiateAndCallMicros"].as_f64().unwrap_or(0.0),
            stats["cachedCallTotalMicros"].as_f64().unwrap_or(0.0),
            stats["fuelPerCall"]
        );
    }

    let _ = util::output(Command::new("ip").args(["netns", "del", NODE]));
    util::output(Command::new("ip").args(["netns", "add", NODE]))?;
    let outcome = (|| {
        for args in [
            vec!["link", "set", "lo", "up"],
            vec![
                "link",
                "add",
                "ens3",
                "type",
                "veth",
                "peer",
                "name",
                "ens3-peer",
            ],
            vec!["link", "set", "ens3", "up"],
            vec!["link", "set", "ens3-peer", "up"],
        ] {
            util::output(Command::new("ip").args(["-n", NODE]).args(&args))?;
        }
        let xtask = std::env::current_exe().map_err(|err| err.to_string())?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", NODE])
            .arg(xtask)
            .arg("bench-inner")
            .arg(iterations.to_string())
            .arg(&binary)
            .arg(&scratch);
        command.args(util::plugin_args(&plugins));
        util::run(&mut command)
    })();
    let _ = util::output(Command::new("ip").args(["netns", "del", NODE]));
    let _ = std::fs::remove_dir_all(&scratch);
    outcome
}

fn parse_iterations(args: &[String]) -> Result<usize> {
    match args {
        [] => Ok(40),
        [flag, value] if flag == "--iterations" => value
            .parse()
            .map_err(|_| format!("bad --iterations {value}")),
        _ => Err("usage: cargo xtask bench [--iterations N]".into()),
    }
}

pub(crate) fn write_json(path: &Path, value: &Value) -> Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("json"))
        .map_err(|err| format!("{}: {err}", path.display()))
}

/// Wall time and outcome of one child.
pub(crate) struct Run {
    pub(crate) elapsed: Duration,
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

pub(crate) fn timed(
    program: &Path,
    args: &[&str],
    env: &[(&str, String)],
    stdin: &[u8],
) -> Result<Run> {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("{}: {err}", program.display()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin)
        .map_err(|err| err.to_string())?;
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("piped"), &mut stdout)
        .map_err(|err| err.to_string())?;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)
        .map_err(|err| err.to_string())?;
    let status = child
        .wait()
        .map_err(|err| format!("waiting for {}: {err}", program.display()))?;
    Ok(Run {
        elapsed: started.elapsed(),
        ok: status.success(),
        stdout,
        stderr,
    })
}

/// The peak RSS (KiB) of one run of `program`, as GNU time reports it.
///
/// Not from our own `wait4`: std spawns with `vfork` semantics, and the
/// kernel records the RSS of the address space an exec replaces, which is
/// then this (much larger) benchmark's, in the child's `ru_maxrss`. GNU
/// time's own footprint is below the smallest figure measured here (a
/// static shim: under 0.5 MiB).
pub(crate) fn peak_rss_kib(program: &Path, env: &[(&str, String)], stdin: &[u8]) -> Result<i64> {
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        util::run(Command::new("apt-get").args(["install", "-y", "time"]))?;
    }
    let program_arg = program.display().to_string();
    let run = timed(
        time,
        &["-f", "multus-wasm-bench-rss %M", &program_arg],
        env,
        stdin,
    )?;
    run.stderr
        .lines()
        .find_map(|line| line.strip_prefix("multus-wasm-bench-rss "))
        .and_then(|kib| kib.trim().parse().ok())
        .ok_or_else(|| {
            format!(
                "no RSS from GNU time for {}: {}",
                program.display(),
                run.stderr
            )
        })
}

pub(crate) fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

pub(crate) fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

pub fn inner(args: &[String]) -> Result<()> {
    let [iterations, binary, scratch, plugin_args @ ..] = args else {
        return Err("bench-inner: bad arguments".into());
    };
    let iterations: usize = iterations
        .parse()
        .map_err(|_| "bad iterations".to_string())?;
    let binary = PathBuf::from(binary);
    let scratch = PathBuf::from(scratch);
    let wasm_plugins = util::wasm_plugins(plugin_args)?;
    let netconf = |data_dir: &Path| {
        json!({
            "cniVersion": "1.0.0", "name": "macvlan-conf", "type": "macvlan", "master": "ens3", "mode": "bridge",
            "ipam": {"type": "host-local", "subnet": "192.168.1.0/24", "rangeStart": "192.168.1.200",
                     "rangeEnd": "192.168.1.216", "routes": [{"dst": "0.0.0.0/0"}], "gateway": "192.168.1.1",
                     "dataDir": data_dir}
        })
    };
    let ours_config = json!({
        "cniVersion": "1.0.0", "name": "multus-wasm-bench", "type": "multus-wasm",
        "delegates": [netconf(&scratch.join("ours-ipam"))],
        "binDir": "/usr/lib/cni", "cniDir": scratch.join("cni"), "wasmCacheDir": scratch.join("cache"),
        "manifestDir": scratch.join("manifests"), "wasmPlugins": wasm_plugins,
        "logFile": scratch.join("multus-wasm.log"), "logLevel": "error", "logToStderr": false
    });
    let ours_stdin = serde_json::to_vec(&ours_config).expect("json");
    let reference_stdin =
        serde_json::to_vec(&netconf(&scratch.join("reference-ipam"))).expect("json");
    let pod = "mwbench-pod";
    let _ = util::output(Command::new("ip").args(["netns", "del", pod]));
    util::output(Command::new("ip").args(["netns", "add", pod]))?;
    let netns = format!("/var/run/netns/{pod}");
    let env = |command: &str, id: &str| -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", id.to_string()),
            ("CNI_NETNS", netns.clone()),
            ("CNI_IFNAME", "net1".to_string()),
            ("CNI_PATH", "/usr/lib/cni".to_string()),
            ("CNI_ARGS", "IgnoreUnknown=1".to_string()),
        ]
    };
    let reference = Path::new("/usr/lib/cni/macvlan");
    let ip = Path::new("/usr/sbin/ip");
    let outcome = (|| {
        // Warm up: the first call compiles the plugins into the cache.
        let warm = timed(&binary, &[], &env("ADD", "warm"), &ours_stdin)?;
        if !warm.ok {
            return Err(format!("our ADD failed: {}", warm.stdout));
        }
        timed(&binary, &[], &env("DEL", "warm"), &ours_stdin)?;
        let (mut ours_add, mut ours_del, mut ref_add, mut ref_del, mut kernel_add, mut kernel_del) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for iteration in 0..iterations {
            let id = format!("bench-{iteration}");
            let add = timed(&binary, &[], &env("ADD", &id), &ours_stdin)?;
            if !add.ok {
                return Err(format!("our ADD failed: {}", add.stdout));
            }
            let del = timed(&binary, &[], &env("DEL", &id), &ours_stdin)?;
            ours_add.push(add.elapsed);
            ours_del.push(del.elapsed);
            let add = timed(reference, &[], &env("ADD", &id), &reference_stdin)?;
            if !add.ok {
                return Err(format!("reference ADD failed: {}", add.stdout));
            }
            let del = timed(reference, &[], &env("DEL", &id), &reference_stdin)?;
            ref_add.push(add.elapsed);
            ref_del.push(del.elapsed);
            // The kernel's own cost, as `ip link` pays it: create into the
            // pod from the node (where ens3 is), bring it up with an
            // address as a pod's link is, delete.
            let create = timed(
                ip,
                &[
                    "link", "add", "link", "ens3", "name", "kmv0", "netns", pod, "type", "macvlan",
                    "mode", "bridge",
                ],
                &[],
                b"",
            )?;
            timed(ip, &["-n", pod, "link", "set", "kmv0", "up"], &[], b"")?;
            timed(
                ip,
                &["-n", pod, "addr", "add", "192.0.2.10/24", "dev", "kmv0"],
                &[],
                b"",
            )?;
            let delete = timed(ip, &["-n", pod, "link", "del", "kmv0"], &[], b"")?;
            if !create.ok || !delete.ok {
                return Err("ip link add/del of the kernel measurement failed".into());
            }
            kernel_add.push(create.elapsed);
            kernel_del.push(delete.elapsed);
        }
        let peak = |program: &Path, stdin: &[u8]| -> Result<i64> {
            let add = peak_rss_kib(program, &env("ADD", "rss"), stdin)?;
            let del = peak_rss_kib(program, &env("DEL", "rss"), stdin)?;
            Ok(add.max(del))
        };
        let (ours_rss, ref_rss) = (
            peak(&binary, &ours_stdin)?,
            peak(reference, &reference_stdin)?,
        );
        let (ours_add, ours_del) = (median(&mut ours_add), median(&mut ours_del));
        let (ref_add, ref_del) = (median(&mut ref_add), median(&mut ref_del));
        let (kernel_add, kernel_del) = (median(&mut kernel_add), median(&mut kernel_del));
        println!(
            "\n== one attachment (seed macvlan + host-local netconf), {iterations} interleaved runs, medians =="
        );
        println!(
            "{:<34} {:>10} {:>12} {:>10} {:>22}",
            "", "ours", "reference", "ratio", "target"
        );
        println!(
            "{:<34} {:>7.2} ms {:>9.2} ms {:>9.1}x {:>22}",
            "ADD",
            ms(ours_add),
            ms(ref_add),
            ms(ref_add) / ms(ours_add),
            "reference/ours >= 5x"
        );
        println!(
            "{:<34} {:>7.2} ms {:>9.2} ms {:>9.1}x {:>22}",
            "DEL",
            ms(ours_del),
            ms(ref_del),
            ms(ref_del) / ms(ours_del),
            ""
        );
        println!(
            "{:<34} {:>7.2} ms {:>12} {:>9.2}x {:>22}",
            "DEL vs the kernel's delete",
            ms(ours_del),
            "",
            ms(ours_del) / ms(kernel_del),
            "ours/kernel <= 1.15x"
        );
        println!(
            "{:<34} {:>7.2} ms",
            "kernel: ip link add macvlan",
            ms(kernel_add)
        );
        println!(
            "{:<34} {:>7.2} ms",
            "kernel: ip link del (up, addressed)",
            ms(kernel_del)
        );
        println!(
            "{:<34} {:>7.1} MiB {:>8.1} MiB {:>10} {:>22}",
            "peak RSS",
            ours_rss as f64 / 1024.0,
            ref_rss as f64 / 1024.0,
            "",
            "ours <= 15 MiB"
        );
        breakdown(&binary, &env, &ours_stdin, iterations)?;
        Ok(())
    })();
    let _ = util::output(Command::new("ip").args(["netns", "del", pod]));
    outcome?;
    let setup = Setup {
        binary: &binary,
        scratch: &scratch,
        wasm_plugins: &ours_config["wasmPlugins"],
    };
    two_network_pod(&setup, iterations)?;
    cold_vs_warm(&setup, &netconf(&scratch.join("cold-ipam")))?;
    for pods in [1, 8, 32, 64] {
        scale(&setup, pods)?;
    }
    crate::bench_thick::run(&binary, &scratch, &ours_config, iterations)?;
    Ok(())
}

struct Setup<'a> {
    binary: &'a Path,
    scratch: &'a Path,
    wasm_plugins: &'a Value,
}

/// The CNI environment of one call: (command, container id) -> variables.
type EnvFor<'a> = &'a dyn Fn(&str, &str) -> Vec<(&'static str, String)>;

/// Where one ADD and one DEL spend their time (MULTUS_WASM_TIMINGS spans).
fn breakdown(binary: &Path, env: EnvFor<'_>, stdin: &[u8], iterations: usize) -> Result<()> {
    let mut spans: std::collections::BTreeMap<(String, String), Vec<Duration>> = Default::default();
    for iteration in 0..iterations.min(20) {
        let id = format!("breakdown-{iteration}");
        for command in ["ADD", "DEL"] {
            let mut env = env(command, &id);
            env.push(("MULTUS_WASM_TIMINGS", "1".into()));
            let run = timed(binary, &[], &env, stdin)?;
            let report: Value = run
                .stderr
                .lines()
                .rev()
                .find_map(|line| serde_json::from_str(line).ok())
                .ok_or_else(|| format!("no timing report: {}", run.stderr))?;
            for (name, micros) in report.as_object().into_iter().flatten() {
                spans
                    .entry((command.to_string(), name.clone()))
                    .or_default()
                    .push(Duration::from_micros(micros.as_u64().unwrap_or(0)));
            }
        }
    }
    println!("\n== inside one call (medians; 'total' is in-process, process start excluded) ==");
    for ((command, name), samples) in &mut spans {
        println!("{command:<4} {name:<14} {:>8.3} ms", ms(median(samples)));
    }
    Ok(())
}

pub(crate) fn node_env(
    command: &str,
    id: &str,
    netns: &str,
    ifname: &str,
    args: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("CNI_COMMAND", command.to_string()),
        ("CNI_CONTAINERID", id.to_string()),
        ("CNI_NETNS", netns.to_string()),
        ("CNI_IFNAME", ifname.to_string()),
        ("CNI_PATH", "/usr/lib/cni".to_string()),
        ("CNI_ARGS", args.to_string()),
    ]
}

pub(crate) struct Netns(String);

impl Netns {
    pub(crate) fn new(name: &str) -> Result<Netns> {
        let _ = util::output(Command::new("ip").args(["netns", "del", name]));
        util::output(Command::new("ip").args(["netns", "add", name]))?;
        Ok(Netns(name.to_string()))
    }

    pub(crate) fn name(&self) -> &str {
        &self.0
    }

    pub(crate) fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = util::output(Command::new("ip").args(["netns", "del", &self.0]));
    }
}

/// The seed's two-network pod (ptp cluster network + two macvlan
/// attachments from the local manifests), ADD then DEL: our one call each
/// vs the same delegates run one by one through the reference binaries.
fn two_network_pod(setup: &Setup<'_>, iterations: usize) -> Result<()> {
    let dir = setup.scratch.join("two-network");
    std::fs::create_dir_all(dir.join("manifests")).map_err(|err| err.to_string())?;
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
    let nad = format!(
        "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: macvlan-conf\n  namespace: default\nspec:\n  config: '{}'\n",
        macvlan(&dir.join("ours-ipam"))
    );
    std::fs::write(dir.join("manifests/nad.yaml"), nad).map_err(|err| err.to_string())?;
    std::fs::write(
        dir.join("manifests/pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: samplepod\n  namespace: default\n  annotations:\n    k8s.v1.cni.cncf.io/networks: macvlan-conf,macvlan-conf\n",
    )
    .map_err(|err| err.to_string())?;
    let config = serde_json::to_vec(&json!({
        "cniVersion": "1.0.0", "name": "multus-wasm-bench", "type": "multus-wasm",
        "clusterNetwork": cluster, "binDir": "/usr/lib/cni", "cniDir": dir.join("cni"),
        "wasmCacheDir": setup.scratch.join("cache"), "manifestDir": dir.join("manifests"),
        "ipamDataRoots": [dir], "wasmPlugins": setup.wasm_plugins, "logLevel": "error", "logToStderr": false
    }))
    .expect("json");
    // The reference side: ptp as the runtime would call it (libcni injects
    // name and cniVersion into the list's plugin), then macvlan twice.
    let mut ptp_plugin = ptp(&dir.join("ref-cluster-ipam"))["plugins"][0].clone();
    ptp_plugin["name"] = json!("ptp-cluster");
    ptp_plugin["cniVersion"] = json!("1.0.0");
    let ptp_stdin = serde_json::to_vec(&ptp_plugin).expect("json");
    let macvlan_stdin = serde_json::to_vec(&macvlan(&dir.join("ref-ipam"))).expect("json");
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=samplepod";
    let (mut ours, mut reference) = (Vec::new(), Vec::new());
    for iteration in 0..iterations.min(20) {
        let pod = Netns::new("mwbench-pod2")?;
        let id = format!("two-{iteration}");
        let started = Instant::now();
        let add = timed(
            setup.binary,
            &[],
            &node_env("ADD", &id, &pod.path(), "eth0", args),
            &config,
        )?;
        if !add.ok {
            return Err(format!("our two-network ADD failed: {}", add.stdout));
        }
        let del = timed(
            setup.binary,
            &[],
            &node_env("DEL", &id, &pod.path(), "eth0", args),
            &config,
        )?;
        if !del.ok {
            return Err(format!("our two-network DEL failed: {}", del.stdout));
        }
        ours.push(started.elapsed());
        drop(pod);
        let pod = Netns::new("mwbench-pod2")?;
        let ptp_bin = Path::new("/usr/lib/cni/ptp");
        let macvlan_bin = Path::new("/usr/lib/cni/macvlan");
        let started = Instant::now();
        for (binary, stdin, ifname) in [
            (ptp_bin, &ptp_stdin, "eth0"),
            (macvlan_bin, &macvlan_stdin, "net1"),
            (macvlan_bin, &macvlan_stdin, "net2"),
        ] {
            let run = timed(
                binary,
                &[],
                &node_env("ADD", &id, &pod.path(), ifname, "IgnoreUnknown=1"),
                stdin,
            )?;
            if !run.ok {
                return Err(format!(
                    "reference {} ADD failed: {}",
                    binary.display(),
                    run.stdout
                ));
            }
        }
        for (binary, stdin, ifname) in [
            (macvlan_bin, &macvlan_stdin, "net2"),
            (macvlan_bin, &macvlan_stdin, "net1"),
            (ptp_bin, &ptp_stdin, "eth0"),
        ] {
            timed(
                binary,
                &[],
                &node_env("DEL", &id, &pod.path(), ifname, "IgnoreUnknown=1"),
                stdin,
            )?;
        }
        reference.push(started.elapsed());
    }
    let (ours, reference) = (median(&mut ours), median(&mut reference));
    println!(
        "\n== the seed's two-network pod: ptp cluster network + 2 macvlan, ADD + DEL, medians =="
    );
    println!(
        "whole lifecycle: ours {:.2} ms, delegates through the reference binaries {:.2} ms: {:.1}x (target >= 2x)",
        ms(ours),
        ms(reference),
        ms(reference) / ms(ours)
    );
    Ok(())
}

/// The first call after the plugins change (a cache miss: compile) vs the
/// calls after it.
fn cold_vs_warm(setup: &Setup<'_>, netconf: &Value) -> Result<()> {
    let pod = Netns::new("mwbench-pod3")?;
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    let mut compiled_on_warm = 0;
    for round in 0..3 {
        let cache = setup.scratch.join(format!("cold-cache-{round}"));
        let config = serde_json::to_vec(&json!({
            "cniVersion": "1.0.0", "name": "cold", "type": "multus-wasm", "delegates": [netconf],
            "binDir": "/usr/lib/cni", "cniDir": setup.scratch.join("cold-cni"), "wasmCacheDir": cache,
            "manifestDir": setup.scratch.join("none"), "wasmPlugins": setup.wasm_plugins, "logLevel": "error"
        }))
        .expect("json");
        for call in 0..4 {
            let id = format!("cold-{round}-{call}");
            let mut env = node_env("ADD", &id, &pod.path(), "net1", "IgnoreUnknown=1");
            env.push(("MULTUS_WASM_TIMINGS", "1".into()));
            let add = timed(setup.binary, &[], &env, &config)?;
            if !add.ok {
                return Err(format!("ADD failed: {}", add.stdout));
            }
            timed(
                setup.binary,
                &[],
                &node_env("DEL", &id, &pod.path(), "net1", "IgnoreUnknown=1"),
                &config,
            )?;
            if call == 0 {
                cold.push(add.elapsed);
            } else {
                warm.push(add.elapsed);
                let plugin_load: u64 = add
                    .stderr
                    .lines()
                    .rev()
                    .find_map(|line| serde_json::from_str::<Value>(line).ok())
                    .and_then(|report| report["plugin-load"].as_u64())
                    .unwrap_or(0);
                // A warm load takes well under 50 ms; a compile takes hundreds.
                if plugin_load > 50_000 {
                    compiled_on_warm += 1;
                }
            }
        }
    }
    println!("\n== cold vs warm (ADD, one attachment) ==");
    println!(
        "first call after the plugins change (compiles both): {:.1} ms; later calls: {:.2} ms; later calls that compiled: {compiled_on_warm}",
        ms(median(&mut cold)),
        ms(median(&mut warm))
    );
    Ok(())
}

pub(crate) fn percentile(samples: &mut [Duration], fraction: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
    samples[index]
}

/// `pods` concurrent ADDs on one network, then `pods` concurrent DELs:
/// ours vs the reference, total time, per-call p50/p99, distinct IPs.
fn scale(setup: &Setup<'_>, pods: usize) -> Result<()> {
    let netconf = |data_dir: &Path| {
        json!({"cniVersion": "1.0.0", "name": "scale-net", "type": "macvlan", "master": "ens3",
               "ipam": {"type": "host-local", "subnet": "10.40.0.0/16", "dataDir": data_dir}})
    };
    let ours = serde_json::to_vec(&json!({
        "cniVersion": "1.0.0", "name": "scale", "type": "multus-wasm",
        "delegates": [netconf(&setup.scratch.join(format!("scale-ours-{pods}")))],
        "binDir": "/usr/lib/cni", "cniDir": setup.scratch.join("scale-cni"), "wasmCacheDir": setup.scratch.join("cache"),
        "manifestDir": setup.scratch.join("none"), "wasmPlugins": setup.wasm_plugins, "logLevel": "error"
    }))
    .expect("json");
    let reference = serde_json::to_vec(&netconf(&setup.scratch.join(format!("scale-ref-{pods}"))))
        .expect("json");
    // Warm up: the network's directories exist and the plugins are loaded
    // once before anything is timed.
    {
        let warm = Netns::new("mwbench-warm")?;
        for (program, stdin) in [
            (setup.binary, &ours),
            (Path::new("/usr/lib/cni/macvlan"), &reference),
        ] {
            timed(
                program,
                &[],
                &node_env("ADD", "warm", &warm.path(), "net1", "IgnoreUnknown=1"),
                stdin,
            )?;
            timed(
                program,
                &[],
                &node_env("DEL", "warm", &warm.path(), "net1", "IgnoreUnknown=1"),
                stdin,
            )?;
        }
    }
    let netns: Vec<Netns> = (0..pods)
        .map(|index| Netns::new(&format!("mwbench-s{index}")))
        .collect::<Result<_>>()?;
    let mut lines = Vec::new();
    for (label, program, stdin) in [
        ("ours", setup.binary, &ours),
        ("reference", Path::new("/usr/lib/cni/macvlan"), &reference),
    ] {
        let run_all = |command: &str| -> Result<(Duration, Vec<Duration>, Vec<String>)> {
            let started = Instant::now();
            let results: Vec<Result<Run>> = std::thread::scope(|scope| {
                let handles: Vec<_> = netns
                    .iter()
                    .enumerate()
                    .map(|(index, ns)| {
                        let env = node_env(
                            command,
                            &format!("scale-{index}"),
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
            for result in results {
                let run = result?;
                if !run.ok {
                    return Err(format!("{label} {command} failed: {}", run.stdout));
                }
                latencies.push(run.elapsed);
                if let Ok(value) = serde_json::from_str::<Value>(&run.stdout)
                    && let Some(address) = value["ips"][0]["address"].as_str()
                {
                    addresses.push(address.to_string());
                }
            }
            Ok((total, latencies, addresses))
        };
        let (add_total, mut add_latencies, addresses) = run_all("ADD")?;
        let (del_total, _, _) = run_all("DEL")?;
        let distinct: std::collections::BTreeSet<&String> = addresses.iter().collect();
        lines.push((
            label,
            add_total,
            percentile(&mut add_latencies, 0.5),
            percentile(&mut add_latencies, 0.99),
            del_total,
            distinct.len(),
            addresses.len(),
        ));
    }
    if pods == 1 {
        println!("\n== scale: N pods ADD concurrently on one host-local network, then DEL ==");
        println!(
            "{:>4} {:<10} {:>12} {:>10} {:>10} {:>12} {:>14}",
            "pods", "", "ADD total", "p50", "p99", "DEL total", "distinct IPs"
        );
    }
    for (label, add_total, p50, p99, del_total, distinct, count) in &lines {
        println!(
            "{pods:>4} {label:<10} {:>9.1} ms {:>7.1} ms {:>7.1} ms {:>9.1} ms {:>9}/{count}",
            ms(*add_total),
            ms(*p50),
            ms(*p99),
            ms(*del_total),
            distinct
        );
    }
    let ratio = ms(lines[1].1) / ms(lines[0].1);
    println!(
        "{pods:>4} reference/ours ADD total: {ratio:.1}x{}",
        if pods == 64 { " (target >= 4x)" } else { "" }
    );
    Ok(())
}
