//! The sandbox against real compiled guests: every limit a hostile guest can
//! hit gets its own error (code, plugin name, sha256, the limit), in bounded
//! time, and the same sandbox serves the next call normally. The attacks
//! whose damage is outside the call's result (a hang, the process's memory,
//! the log) run through the real binary's `plugin run`.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use multus_wasm::cni::{CniCommand, CniError};
use multus_wasm::netlink::query::NoLinks;
use multus_wasm::sandbox::{
    Limits, MAX_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS, MAX_TABLES, Plugin, PluginRequest,
    Sandbox, SandboxError, World, code, sha256_hex,
};
use serde_json::{Value, json};

fn request(config: serde_json::Value) -> PluginRequest {
    PluginRequest {
        command: CniCommand::Add,
        container_id: "sandbox-test".into(),
        netns: String::new(),
        ifname: "net1".into(),
        args: Vec::new(),
        config: config.to_string(),
        prev_result: None,
        ipam_result: None,
        valid_attachments: Vec::new(),
        state: None,
    }
}

fn hostile(sandbox: &Sandbox) -> Plugin {
    sandbox
        .load("hostile", Path::new(test_artifacts::HOSTILE), None)
        .expect("the hostile guest loads")
}

fn digest_of(path: &str) -> String {
    sha256_hex(&std::fs::read(path).unwrap())
}

/// A call that behaves: logs and returns an empty plan.
fn assert_healthy(sandbox: &Sandbox, plugin: &Plugin) {
    let (plan, stats) = sandbox
        .call_delegate(
            plugin,
            Box::new(NoLinks),
            &request(serde_json::json!({"behaviour": "log", "message": "still fine"})),
        )
        .expect("a well-behaved call after a failure succeeds");
    assert!(plan.ops.is_empty());
    assert!(stats.fuel_consumed > 0);
}

fn call(sandbox: &Sandbox, plugin: &Plugin, config: serde_json::Value) -> (SandboxError, Duration) {
    let started = Instant::now();
    let err = sandbox
        .call_delegate(plugin, Box::new(NoLinks), &request(config))
        .expect_err("the hostile behaviour must fail");
    (err, started.elapsed())
}

fn assert_names_plugin(err: &SandboxError, digest: &str) {
    let text = err.to_string();
    assert!(text.contains("hostile"), "{text}");
    assert!(text.contains(digest), "{text}");
}

#[test]
fn an_infinite_loop_stops_at_the_deadline() {
    let limits = Limits {
        fuel: u64::MAX / 2,
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let sandbox = Sandbox::new(limits, None).unwrap();
    let plugin = hostile(&sandbox);
    let (err, elapsed) = call(&sandbox, &plugin, serde_json::json!({"behaviour": "loop"}));
    assert!(matches!(err, SandboxError::Deadline { .. }), "{err}");
    assert_eq!(err.cni_code(), code::DEADLINE);
    assert!(err.to_string().contains("300 ms"), "{err}");
    assert_names_plugin(&err, &digest_of(test_artifacts::HOSTILE));
    assert!(
        elapsed >= Duration::from_millis(300),
        "stopped early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert_healthy(&sandbox, &plugin);
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let limits = Limits {
        fuel: 5_000_000,
        timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let sandbox = Sandbox::new(limits, None).unwrap();
    let plugin = hostile(&sandbox);
    let (err, elapsed) = call(&sandbox, &plugin, serde_json::json!({"behaviour": "loop"}));
    assert!(matches!(err, SandboxError::Fuel { .. }), "{err}");
    assert_eq!(err.cni_code(), code::FUEL);
    assert!(err.to_string().contains("5000000"), "{err}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert_healthy(&sandbox, &plugin);
}

#[test]
fn each_limit_has_its_own_error() {
    let limits = Limits {
        memory_bytes: 16 << 20,
        max_ops: 64,
        max_string_bytes: 1024,
        ..Limits::default()
    };
    let sandbox = Sandbox::new(limits, None).unwrap();
    let plugin = hostile(&sandbox);
    let digest = digest_of(test_artifacts::HOSTILE);

    let (err, _) = call(
        &sandbox,
        &plugin,
        serde_json::json!({"behaviour": "memory-bomb"}),
    );
    assert!(matches!(err, SandboxError::Memory { .. }), "{err}");
    assert_eq!(err.cni_code(), code::MEMORY);
    assert!(
        err.to_string().contains(&(16u64 << 20).to_string()),
        "{err}"
    );
    assert_names_plugin(&err, &digest);
    assert_healthy(&sandbox, &plugin);

    let (err, _) = call(
        &sandbox,
        &plugin,
        serde_json::json!({"behaviour": "recursion"}),
    );
    assert!(matches!(err, SandboxError::Stack { .. }), "{err}");
    assert_eq!(err.cni_code(), code::STACK);
    assert_names_plugin(&err, &digest);
    assert_healthy(&sandbox, &plugin);

    let (err, _) = call(
        &sandbox,
        &plugin,
        serde_json::json!({"behaviour": "huge-plan", "count": 100_000}),
    );
    assert!(matches!(err, SandboxError::OutputLimit { .. }), "{err}");
    assert_eq!(err.cni_code(), code::OUTPUT);
    assert!(err.to_string().contains("100000 ops"), "{err}");
    assert_healthy(&sandbox, &plugin);

    let (err, _) = call(
        &sandbox,
        &plugin,
        serde_json::json!({"behaviour": "long-string", "count": 5000}),
    );
    assert!(matches!(err, SandboxError::OutputLimit { .. }), "{err}");
    assert!(err.to_string().contains("5000 bytes"), "{err}");
    assert_healthy(&sandbox, &plugin);

    let (err, _) = call(
        &sandbox,
        &plugin,
        serde_json::json!({"behaviour": "panic", "message": "boom-4711"}),
    );
    assert!(matches!(err, SandboxError::Panic { .. }), "{err}");
    assert_eq!(err.cni_code(), code::TRAP);
    assert!(err.to_string().contains("boom-4711"), "{err}");
    assert_names_plugin(&err, &digest);
    assert_healthy(&sandbox, &plugin);

    // A plan just under the cap passes.
    let (plan, _) = sandbox
        .call_delegate(
            &plugin,
            Box::new(NoLinks),
            &request(serde_json::json!({"behaviour": "huge-plan", "count": 64})),
        )
        .unwrap();
    assert_eq!(plan.ops.len(), 64);
}

#[test]
fn a_guest_error_keeps_its_cni_code() {
    let sandbox = Sandbox::new(Limits::default(), None).unwrap();
    let plugin = hostile(&sandbox);
    let (err, _) = call(
        &sandbox,
        &plugin,
        serde_json::json!({"behaviour": "no-such-behaviour"}),
    );
    let cni: CniError = err.into();
    assert_eq!(cni.code, 7);
    assert!(cni.msg.contains("no-such-behaviour"), "{cni}");
}

#[test]
fn unknown_imports_and_abi_versions_are_refused_at_load() {
    let sandbox = Sandbox::new(Limits::default(), None).unwrap();
    let err = sandbox
        .load("bad-import", Path::new(test_artifacts::BAD_IMPORT), None)
        .unwrap_err();
    assert!(matches!(err, SandboxError::UnknownImport { .. }), "{err}");
    assert_eq!(err.cni_code(), code::PLUGIN_REFUSED);
    assert!(err.to_string().contains("test:bad-import/spawn"), "{err}");
    assert!(
        err.to_string()
            .contains(&digest_of(test_artifacts::BAD_IMPORT)),
        "{err}"
    );

    let err = sandbox
        .load("abi-future", Path::new(test_artifacts::ABI_FUTURE), None)
        .unwrap_err();
    assert!(matches!(err, SandboxError::UnsupportedAbi { .. }), "{err}");
    assert_eq!(err.cni_code(), code::PLUGIN_REFUSED);
    assert!(
        err.to_string()
            .contains("multus-wasm:plugin/delegate@0.9.0"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&digest_of(test_artifacts::ABI_FUTURE)),
        "{err}"
    );
}

#[test]
fn a_digest_mismatch_or_a_non_component_is_refused() {
    let sandbox = Sandbox::new(Limits::default(), None).unwrap();
    let wrong = "0".repeat(64);
    let err = sandbox
        .load("macvlan", Path::new(test_artifacts::MACVLAN), Some(&wrong))
        .unwrap_err();
    assert!(matches!(err, SandboxError::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&digest_of(test_artifacts::MACVLAN)),
        "{err}"
    );
    assert!(err.to_string().contains(&wrong), "{err}");

    let dir = support::scratch();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\x00\x00\x00not a component").unwrap();
    let err = sandbox.load("garbage", &garbage, None).unwrap_err();
    assert!(matches!(err, SandboxError::NotAComponent { .. }), "{err}");
    assert_eq!(err.cni_code(), code::PLUGIN_REFUSED);
}

#[test]
fn worlds_are_read_from_the_exports_and_checked_at_call() {
    let sandbox = Sandbox::new(Limits::default(), None).unwrap();
    let macvlan = sandbox
        .load("macvlan", Path::new(test_artifacts::MACVLAN), None)
        .unwrap();
    let host_local = sandbox
        .load("host-local", Path::new(test_artifacts::HOST_LOCAL), None)
        .unwrap();
    assert_eq!(macvlan.abi.world, World::Delegate);
    assert_eq!(macvlan.abi.version, "0.2.0");
    assert_eq!(macvlan.abi.abi, multus_wasm::sandbox::Abi::V0_2);
    assert!(!macvlan.abi.uses_wasi);
    assert_eq!(host_local.abi.world, World::Ipam);
    let err = sandbox
        .call_delegate(
            &host_local,
            Box::new(NoLinks),
            &request(serde_json::json!({})),
        )
        .unwrap_err();
    assert!(matches!(err, SandboxError::WrongWorld { .. }), "{err}");
    let wasip2 = sandbox
        .load("macvlan", Path::new(test_artifacts::MACVLAN_WASIP2), None)
        .unwrap();
    assert!(wasip2.abi.uses_wasi, "{:?}", wasip2.abi.imports);
}

/// What one run of the real binary did.
struct Run {
    exit: i32,
    stdout: String,
    stderr: String,
    /// The child's peak RSS, in KiB (`wait4`'s `ru_maxrss`).
    max_rss_kib: u64,
    elapsed: Duration,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| {
            panic!(
                "stdout is not JSON ({err}): {:?} stderr: {}",
                self.stdout, self.stderr
            )
        })
    }
}

/// `multus-wasm plugin run <plugin> --command ADD --config <netconf>
/// --no-cache <extra>`, reaped with `wait4` to read its own peak RSS.
// The child is reaped by `wait4`, which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn plugin_run(plugin: &str, netconf: Value, extra: &[&str]) -> Run {
    let dir = support::scratch();
    let config = dir.path().join("netconf.json");
    std::fs::write(&config, netconf.to_string()).unwrap();
    let started = Instant::now();
    let mut child = Command::new(support::binary())
        .args(["plugin", "run", plugin, "--command", "ADD", "--config"])
        .arg(&config)
        .arg("--no-cache")
        .args(extra)
        .env_remove("CNI_COMMAND")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn multus-wasm");
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        stderr_pipe.read_to_string(&mut text).unwrap();
        text
    });
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain out-parameters; `pid` is our child, not yet reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let elapsed = started.elapsed();
    Run {
        exit: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
        stdout,
        stderr: stderr.join().unwrap(),
        max_rss_kib: usage.ru_maxrss as u64,
        elapsed,
    }
}

fn hostile_netconf(behaviour: &str, count: u64) -> Value {
    json!({"cniVersion": "1.0.0", "name": "x", "type": "hostile",
           "behaviour": behaviour, "count": count, "message": "guest-line"})
}

#[test]
fn a_wasi_sleep_is_cut_at_the_deadline() {
    // Epoch interruption never stops a blocked host call: the deadline must
    // bound wasi:io/poll itself.
    let run = plugin_run(
        test_artifacts::HOSTILE_WASIP2,
        hostile_netconf("sleep", 60_000),
        &["--timeout-ms", "300"],
    );
    assert_eq!(run.exit, 1, "stdout {} stderr {}", run.stdout, run.stderr);
    let error = run.json();
    assert_eq!(error["code"], code::DEADLINE, "{error}");
    let msg = error["msg"].as_str().unwrap();
    assert!(msg.contains("plugin hostile"), "{msg}");
    assert!(
        msg.contains(&digest_of(test_artifacts::HOSTILE_WASIP2)),
        "{msg}"
    );
    assert!(msg.contains("300 ms"), "{msg}");
    assert!(
        run.elapsed < Duration::from_secs(10),
        "took {:?}",
        run.elapsed
    );
}

#[test]
fn a_short_wasi_sleep_within_the_deadline_succeeds() {
    let run = plugin_run(
        test_artifacts::HOSTILE_WASIP2,
        hostile_netconf("sleep", 10),
        &[],
    );
    assert_eq!(run.exit, 0, "stdout {} stderr {}", run.stdout, run.stderr);
    assert_eq!(run.json()["ops"], json!([]));
}

#[test]
fn a_wasi_sleep_in_a_long_lived_sandbox_stops_at_the_deadline() {
    let limits = Limits {
        timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let sandbox = Sandbox::new(limits, None).unwrap();
    let plugin = sandbox
        .load("hostile", Path::new(test_artifacts::HOSTILE_WASIP2), None)
        .unwrap();
    let (err, elapsed) = call(
        &sandbox,
        &plugin,
        serde_json::json!({"behaviour": "sleep", "count": 60_000}),
    );
    assert!(matches!(err, SandboxError::Deadline { .. }), "{err}");
    assert_eq!(err.cni_code(), code::DEADLINE);
    assert_names_plugin(&err, &digest_of(test_artifacts::HOSTILE_WASIP2));
    assert!(
        elapsed >= Duration::from_millis(250),
        "stopped early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    // Each call gets its own deadline: the next short sleep is not cut.
    sandbox
        .call_delegate(
            &plugin,
            Box::new(NoLinks),
            &request(serde_json::json!({"behaviour": "sleep", "count": 10})),
        )
        .expect("a short sleep after a cut one succeeds");
    assert_healthy(&sandbox, &plugin);
}

#[test]
fn memory_is_capped_for_the_whole_plugin_not_per_memory() {
    // 150 core instances of 32 MiB each, every page written by a start
    // function: each memory is under the 64 MiB cap, all together 4.8 GB.
    let run = plugin_run(
        test_artifacts::MANY_BIG_MEMORIES,
        hostile_netconf("log", 0),
        &["--memory-mib", "64"],
    );
    assert_eq!(run.exit, 1, "stdout {} stderr {}", run.stdout, run.stderr);
    let error = run.json();
    assert_eq!(error["code"], code::MEMORY, "{error}");
    let msg = error["msg"].as_str().unwrap();
    assert!(msg.contains("many-big-memories"), "{msg}");
    assert!(
        msg.contains(&digest_of(test_artifacts::MANY_BIG_MEMORIES)),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("memory limit of {} bytes", 64u64 << 20)),
        "{msg}"
    );
    assert!(msg.contains("total"), "{msg}");
    // The binary (compiling the component included) peaks near 40 MiB, plus
    // the one 32 MiB memory allowed; unbounded, the attack reaches 4.8 GB.
    assert!(
        run.max_rss_kib < 256 * 1024,
        "peak RSS {} KiB",
        run.max_rss_kib
    );
}

#[test]
fn instances_memories_and_tables_are_counted_per_call() {
    let sandbox = Sandbox::new(Limits::default(), None).unwrap();
    let cases = [
        (
            test_artifacts::MANY_INSTANCES,
            format!("limit of {MAX_INSTANCES} core instances"),
        ),
        (
            test_artifacts::MANY_MEMORIES,
            format!("limit of {MAX_MEMORIES} memories"),
        ),
        (
            test_artifacts::MANY_TABLES,
            format!("limit of {MAX_TABLES} tables"),
        ),
        (
            test_artifacts::BIG_TABLES,
            format!("limit of {MAX_TABLE_ELEMENTS} table elements"),
        ),
    ];
    for (path, limit) in cases {
        let name = Path::new(path).file_stem().unwrap().to_str().unwrap();
        let plugin = sandbox.load(name, Path::new(path), None).unwrap();
        let err = sandbox
            .call_delegate(
                &plugin,
                Box::new(NoLinks),
                &request(serde_json::json!({"behaviour": "log"})),
            )
            .expect_err("over a count");
        assert!(matches!(err, SandboxError::Resources { .. }), "{err}");
        assert_eq!(err.cni_code(), code::MEMORY, "{err}");
        let text = err.to_string();
        assert!(text.contains(&limit), "{text}");
        assert!(text.contains(&format!("plugin {name} ")), "{text}");
        assert!(text.contains(&digest_of(path)), "{text}");
    }
    assert_healthy(&sandbox, &hostile(&sandbox));
}

#[test]
fn wasi_output_counts_against_the_log_line_cap() {
    let max = Limits::default().max_log_lines;
    let run = plugin_run(
        test_artifacts::HOSTILE_WASIP2,
        hostile_netconf("print-lines", 600),
        &[],
    );
    assert_eq!(run.exit, 0, "stdout {} stderr {}", run.stdout, run.stderr);
    let guest_lines = run
        .stderr
        .lines()
        .filter(|line| line.contains("guest-line"))
        .count();
    assert_eq!(guest_lines, max, "{}", run.stderr);
    assert!(
        run.stderr.contains("log line limit reached"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_guest_cannot_claim_a_host_code_and_its_errors_name_it() {
    let sandbox = Sandbox::new(Limits::default(), None).unwrap();
    let plugin = hostile(&sandbox);
    let digest = digest_of(test_artifacts::HOSTILE);
    for reserved in [100, 101, 103, 107] {
        let (err, _) = call(
            &sandbox,
            &plugin,
            serde_json::json!({"behaviour": "error", "code": reserved,
                               "message": "fake deadline", "details": "guest details"}),
        );
        let cni: CniError = err.into();
        assert_eq!(cni.code, 999, "{cni}");
        assert!(
            cni.msg
                .starts_with(&format!("plugin hostile (sha256 {digest}): fake deadline")),
            "{}",
            cni.msg
        );
        assert!(cni.msg.contains(&format!("code {reserved}")), "{}", cni.msg);
        assert_eq!(cni.details, "guest details");
    }
    let (err, _) = call(
        &sandbox,
        &plugin,
        serde_json::json!({"behaviour": "error", "code": 11, "message": "try later"}),
    );
    let cni: CniError = err.into();
    assert_eq!(cni.code, 11);
    assert_eq!(
        cni.msg,
        format!("plugin hostile (sha256 {digest}): try later")
    );
}

/// A shipped plugin as built before ABI 0.2.0 (`tests/fixtures/abi-0.1.0`).
fn abi_0_1_fixture(plugin: &str) -> String {
    format!(
        "{}/fixtures/abi-0.1.0/{plugin}.wasm",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn plugins_of_both_abis_load_and_report_their_version() {
    let sandbox = Sandbox::new(Limits::default(), None).unwrap();
    for (path, version) in [
        (abi_0_1_fixture("macvlan"), "0.1.0"),
        (abi_0_1_fixture("host-local"), "0.1.0"),
        (test_artifacts::MACVLAN.to_string(), "0.2.0"),
        (test_artifacts::TUNING.to_string(), "0.2.0"),
    ] {
        let inspection = sandbox.inspect(Path::new(&path)).unwrap();
        assert_eq!(inspection.abi_version, version, "{path}");
        assert!(
            inspection
                .imports
                .iter()
                .filter(|import| import.starts_with("multus-wasm:plugin/"))
                .all(|import| import.ends_with(&format!("@{version}"))),
            "{path}: {:?}",
            inspection.imports
        );
        sandbox.load("plugin", Path::new(&path), None).unwrap();
    }
}

/// Link queries that see one host link, `ens3`.
struct Ens3;

impl multus_wasm::netlink::query::LinkQueries for Ens3 {
    fn get_link(
        &mut self,
        netns: multus_wasm::plan::Netns,
        name: &str,
    ) -> Option<multus_wasm::plan::LinkInfo> {
        (netns == multus_wasm::plan::Netns::Host && name == "ens3").then(|| {
            multus_wasm::plan::LinkInfo {
                name: "ens3".into(),
                index: 2,
                mtu: 1500,
                mac: "02:00:00:00:00:02".parse().ok(),
                kind: "veth".into(),
                up: true,
                macvlan_mode: None,
                promisc: false,
                allmulti: false,
                txqueuelen: 1000,
                master: None,
                master_mtu: None,
                peer_in_other_netns: false,
            }
        })
    }
    fn default_route_link(
        &mut self,
        _: multus_wasm::plan::Netns,
        _: multus_wasm::plan::IpFamily,
    ) -> Option<multus_wasm::plan::LinkInfo> {
        None
    }
    fn addresses(&mut self, _: multus_wasm::plan::Netns, _: &str) -> Vec<ipnet::IpNet> {
        Vec::new()
    }
    fn routes(&mut self, _: multus_wasm::plan::Netns, _: &str) -> Vec<multus_wasm::cni::Route> {
        Vec::new()
    }
    fn read_sysctl(&mut self, _: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
}

#[test]
fn a_0_1_0_plugin_plans_as_it_did() {
    // The same seed ADD through the 0.1.0 macvlan and the current one: the
    // same plan, the old one without state.
    let sandbox = Sandbox::new(Limits::default(), None).unwrap();
    let netconf = json!({"cniVersion": "1.0.0", "name": "seed", "type": "macvlan",
                         "master": "ens3", "mode": "bridge", "ipam": {"type": "static"}});
    let mut add = request(netconf);
    add.ipam_result = Some(
        multus_wasm::cni::CniResult::from_value(
            &json!({"cniVersion": "1.1.0",
                    "ips": [{"address": "192.168.1.200/24", "gateway": "192.168.1.1"}]}),
            multus_wasm::cni::CniVersion::V1_1_0,
        )
        .unwrap(),
    );
    let plan_of = |path: &str| {
        let plugin = sandbox.load("macvlan", Path::new(path), None).unwrap();
        sandbox
            .call_delegate(&plugin, Box::new(Ens3), &add)
            .unwrap()
            .0
    };
    let old = plan_of(&abi_0_1_fixture("macvlan"));
    let new = plan_of(test_artifacts::MACVLAN);
    assert!(!old.ops.is_empty());
    assert_eq!(old.ops, new.ops);
    assert_eq!(old.result, new.result);
    assert_eq!(old.state, None);
}

#[test]
fn state_and_sysctl_reads_are_bounded_and_checked() {
    let limits = Limits {
        max_string_bytes: 1024,
        ..Limits::default()
    };
    let sandbox = Sandbox::new(limits, None).unwrap();
    let plugin = hostile(&sandbox);
    // A state within the limit comes back with the plan; one over it is
    // refused like any oversized output.
    let (plan, _) = sandbox
        .call_delegate(
            &plugin,
            Box::new(NoLinks),
            &request(json!({"cniVersion": "1.0.0", "behaviour": "huge-state", "count": 1000})),
        )
        .unwrap();
    assert_eq!(plan.state.as_deref().map(str::len), Some(1000));
    let (err, _) = call(
        &sandbox,
        &plugin,
        json!({"cniVersion": "1.0.0", "behaviour": "huge-state", "count": 1025}),
    );
    assert!(matches!(err, SandboxError::OutputLimit { .. }), "{err}");
    assert!(err.to_string().contains("state"), "{err}");
    // read-sysctl: only the attachment's own keys reach the kernel.
    for (key, expected) in [
        ("net/ipv4/ip_forward", "outside"),
        ("net/ipv4/conf/all/forwarding", "outside"),
        (
            "net/ipv4/conf/eth0/forwarding",
            "not the interface of this attachment",
        ),
        ("kernel/hostname", "outside"),
        ("net/ipv4/conf/net1/../../../../kernel/hostname", "outside"),
    ] {
        let (err, _) = call(
            &sandbox,
            &plugin,
            json!({"cniVersion": "1.0.0", "behaviour": "read-sysctl", "message": key}),
        );
        let text = err.to_string();
        assert!(
            text.contains("Err(") && text.contains(expected),
            "{key}: {text}"
        );
    }
    // The attachment's own key is read (NoLinks: there is no pod).
    let (err, _) = call(
        &sandbox,
        &plugin,
        json!({"cniVersion": "1.0.0", "behaviour": "read-sysctl",
               "message": "net/ipv4/conf/net1/arp_notify"}),
    );
    assert!(err.to_string().contains("Ok(None)"), "{err}");
}

#[test]
fn a_cni_version_the_plugin_does_not_declare_is_refused_with_code_1() {
    let sandbox = Sandbox::new(Limits::default(), None).unwrap();
    let plugin = sandbox
        .load("fixed-route", Path::new(test_artifacts::FIXED_ROUTE), None)
        .unwrap();
    let err = sandbox
        .call_delegate(
            &plugin,
            Box::new(NoLinks),
            &request(
                json!({"cniVersion": "0.4.0", "name": "routes", "type": "fixed-route",
                            "routes": []}),
            ),
        )
        .unwrap_err();
    assert_eq!(err.cni_code(), 1, "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("plugin fixed-route (sha256 ")
            && text
                .contains(r#"cniVersion "0.4.0" is not one this plugin supports (1.0.0, 1.1.0)"#),
        "{text}"
    );
}
