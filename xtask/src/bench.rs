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
    util::run(
        util::cargo()
            .current_dir(&root)
            .args(["build", "--release", "-p", "multus-wasm"]),
    )?;
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
        for (plugin_type, path, digest) in &plugins {
            command.arg(format!("{plugin_type}={}={digest}", path.display()));
        }
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

fn write_json(path: &Path, value: &Value) -> Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("json"))
        .map_err(|err| format!("{}: {err}", path.display()))
}

/// Wall time and peak RSS (KiB) of one child, from wait4.
struct Run {
    elapsed: Duration,
    max_rss_kib: i64,
    ok: bool,
    stdout: String,
}

fn timed(program: &Path, args: &[&str], env: &[(&str, String)], stdin: &[u8]) -> Result<Run> {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waiting for our own child, whose pid we hold.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    if waited != pid {
        return Err(format!("wait4 failed for {}", program.display()));
    }
    Ok(Run {
        elapsed,
        max_rss_kib: usage.ru_maxrss,
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        stdout,
    })
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> f64 {
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
    let mut wasm_plugins = serde_json::Map::new();
    for spec in plugin_args {
        let mut parts = spec.splitn(3, '=');
        let (Some(plugin_type), Some(path), Some(digest)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("bad plugin argument {spec:?}"));
        };
        wasm_plugins.insert(plugin_type.into(), json!({"path": path, "sha256": digest}));
    }
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
        let (mut ours_rss, mut ref_rss) = (0, 0);
        for iteration in 0..iterations {
            let id = format!("bench-{iteration}");
            let add = timed(&binary, &[], &env("ADD", &id), &ours_stdin)?;
            if !add.ok {
                return Err(format!("our ADD failed: {}", add.stdout));
            }
            let del = timed(&binary, &[], &env("DEL", &id), &ours_stdin)?;
            ours_rss = ours_rss.max(add.max_rss_kib).max(del.max_rss_kib);
            ours_add.push(add.elapsed);
            ours_del.push(del.elapsed);
            let add = timed(reference, &[], &env("ADD", &id), &reference_stdin)?;
            if !add.ok {
                return Err(format!("reference ADD failed: {}", add.stdout));
            }
            let del = timed(reference, &[], &env("DEL", &id), &reference_stdin)?;
            ref_rss = ref_rss.max(add.max_rss_kib).max(del.max_rss_kib);
            ref_add.push(add.elapsed);
            ref_del.push(del.elapsed);
            let create = timed(
                ip,
                &[
                    "-n", pod, "link", "add", "link", "ens3", "name", "kmv0", "type", "macvlan",
                    "mode", "bridge",
                ],
                &[],
                b"",
            )?;
            let delete = timed(ip, &["-n", pod, "link", "del", "kmv0"], &[], b"")?;
            kernel_add.push(create.elapsed);
            kernel_del.push(delete.elapsed);
        }
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
            "kernel: ip link del macvlan",
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
        Ok(())
    })();
    let _ = util::output(Command::new("ip").args(["netns", "del", pod]));
    outcome
}
