//! The sandbox against real compiled guests: every limit a hostile guest can
//! hit gets its own error (code, plugin name, sha256, the limit), in bounded
//! time, and the same sandbox serves the next call normally.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use multus_wasm::cni::CniError;
use multus_wasm::sandbox::{
    Limits, NoLinks, Plugin, PluginCommand, PluginRequest, Sandbox, SandboxError, World, code,
    sha256_hex,
};

fn request(config: serde_json::Value) -> PluginRequest {
    PluginRequest {
        command: PluginCommand::Add,
        container_id: "sandbox-test".into(),
        netns: String::new(),
        ifname: "net1".into(),
        args: Vec::new(),
        config: config.to_string(),
        prev_result: None,
        ipam_result: None,
        valid_attachments: Vec::new(),
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
    assert_eq!(macvlan.abi.version, "0.1.0");
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
