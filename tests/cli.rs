//! The CLI plugin authors and operators use: `plugin inspect`, `plugin run`
//! (the production sandbox, nothing applied), the compiled-code cache seen
//! from outside, and the CNI VERSION command.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use support::binary;

fn run(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env_remove("CNI_COMMAND")
        .output()
        .expect("run multus-wasm")
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "stdout is not JSON ({err}): {} / stderr {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn write(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(value).unwrap()).unwrap();
    path.display().to_string()
}

#[test]
fn inspect_prints_digest_abi_world_size_and_imports() {
    let output = run(&["plugin", "inspect", test_artifacts::HOST_LOCAL]);
    assert!(output.status.success(), "{output:?}");
    let inspection = stdout_json(&output);
    let bytes = std::fs::read(test_artifacts::HOST_LOCAL).unwrap();
    assert_eq!(inspection["sha256"], support::sha256_hex(&bytes));
    assert_eq!(inspection["size"], bytes.len());
    assert_eq!(inspection["abiVersion"], "0.2.0");
    assert_eq!(inspection["world"], "ipam");
    assert_eq!(inspection["export"], "multus-wasm:plugin/ipam@0.2.0");
    let imports: Vec<&str> = inspection["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|import| import.as_str().unwrap())
        .collect();
    assert!(
        imports.contains(&"multus-wasm:plugin/ipam-store@0.2.0"),
        "{imports:?}"
    );
    assert!(
        imports.iter().all(|import| !import.starts_with("wasi:")),
        "{imports:?}"
    );
    assert_eq!(inspection["usesWasi"], false);
}

#[test]
fn inspect_refuses_a_future_abi_with_a_cni_error() {
    let output = run(&["plugin", "inspect", test_artifacts::ABI_FUTURE]);
    assert!(!output.status.success());
    let error = stdout_json(&output);
    assert_eq!(error["code"], 100);
    assert!(error["msg"].as_str().unwrap().contains("@0.9.0"), "{error}");
}

fn macvlan_run(plugin: &str, dir: &Path, cache: &Path) -> Output {
    let config = write(
        dir,
        "netconf.json",
        &json!({"cniVersion": "1.0.0", "name": "run-test", "type": "macvlan", "master": "lo", "mode": "vepa",
                "ipam": {"type": "host-local", "subnet": "192.168.1.0/24"}}),
    );
    let ipam_result = write(
        dir,
        "ipam.json",
        &json!({"cniVersion": "1.0.0", "ips": [{"address": "192.168.1.2/24", "gateway": "192.168.1.1"}], "routes": [{"dst": "0.0.0.0/0"}]}),
    );
    run(&[
        "plugin",
        "run",
        plugin,
        "--command",
        "ADD",
        "--config",
        &config,
        "--ipam-result",
        &ipam_result,
        "--ifname",
        "net7",
        "--container-id",
        "cli-test",
        "--cache-dir",
        &cache.display().to_string(),
    ])
}

/// `plugin run` of the hostile guest's plan `ops` with `--ifname net1`.
fn run_plan(dir: &Path, ops: Value, extra: &[&str]) -> Output {
    let config = write(
        dir,
        "hostile.json",
        &json!({"cniVersion": "1.0.0", "name": "plan", "type": "hostile",
                "behaviour": "plan", "ops": ops}),
    );
    let mut args = vec![
        "plugin",
        "run",
        test_artifacts::HOSTILE,
        "--command",
        "ADD",
        "--config",
        &config,
        "--ifname",
        "net1",
        "--no-cache",
    ];
    args.extend(extra);
    run(&args)
}

#[test]
fn run_refuses_a_plan_as_an_attach_would_with_code_107() {
    let dir = support::scratch();
    let create = json!({"op": "create-macvlan", "name": "net1", "master": "lo"});
    let up = |link: &str| json!({"op": "set-link-up", "link": link});
    // Accepted: the plan is printed.
    let accepted = run_plan(dir.path(), json!([create, up("net1")]), &[]);
    assert!(accepted.status.success(), "{accepted:?}");
    assert_eq!(stdout_json(&accepted)["ops"][1]["link"], "net1");
    // A master outside the operator's allowedMasters (--allowed-master,
    // or --host-config) is refused.
    let master = run_plan(
        dir.path(),
        json!([create, up("net1")]),
        &["--allowed-master", "ens3"],
    );
    assert!(!master.status.success());
    let error = stdout_json(&master);
    assert_eq!(error["code"], 107, "{error}");
    assert!(
        error["msg"].as_str().unwrap().contains("allowedMasters"),
        "{error}"
    );
    for (what, ops) in [
        ("the pod's eth0", json!([create, up("net1"), up("eth0")])),
        (
            "ip_forward",
            json!([create, up("net1"),
                   {"op": "set-sysctl", "key": "net/ipv4/ip_forward", "value": "1"}]),
        ),
        (
            "conf/all",
            json!([create, up("net1"),
                   {"op": "set-sysctl", "key": "net/ipv4/conf/all/forwarding", "value": "1"}]),
        ),
    ] {
        let refused = run_plan(dir.path(), ops, &[]);
        assert!(!refused.status.success(), "{what}: {refused:?}");
        let error = stdout_json(&refused);
        assert_eq!(error["code"], 107, "{what}: {error}");
        let message = error["msg"].as_str().unwrap();
        // The production message: the plugin, its sha256, the op.
        assert!(
            message.starts_with("plugin hostile (sha256 "),
            "{what}: {message}"
        );
        assert!(message.contains("op 2 ("), "{what}: {message}");
    }
}

#[test]
fn run_prints_the_typed_plan_the_same_for_both_targets() {
    let dir = support::scratch();
    let cache = dir.path().join("cache");
    let unknown = macvlan_run(test_artifacts::MACVLAN, dir.path(), &cache);
    assert!(unknown.status.success(), "{unknown:?}");
    let plan = stdout_json(&unknown);
    let ops = plan["ops"].as_array().unwrap();
    assert_eq!(ops[0]["op"], "create-macvlan");
    assert_eq!(ops[0]["name"], "net7");
    assert_eq!(ops[0]["master"], "lo");
    assert_eq!(ops[0]["mode"], "vepa");
    assert!(
        ops.iter()
            .any(|op| op["op"] == "add-address" && op["address"] == "192.168.1.2/24")
    );
    assert!(
        ops.iter()
            .any(|op| op["op"] == "add-route" && op["gateway"] == "192.168.1.1")
    );
    assert_eq!(plan["result"]["cniVersion"], "1.0.0");
    assert_eq!(plan["result"]["interfaces"][0]["name"], "net7");
    let wasip2 = macvlan_run(test_artifacts::MACVLAN_WASIP2, dir.path(), &cache);
    assert!(wasip2.status.success(), "{wasip2:?}");
    assert_eq!(
        stdout_json(&wasip2),
        plan,
        "the two builds must plan identically"
    );
}

#[test]
fn run_prints_the_cni_error_of_a_failing_guest() {
    let dir = support::scratch();
    let config = write(
        dir.path(),
        "netconf.json",
        &json!({"cniVersion": "1.0.0", "name": "x", "type": "macvlan", "master": "no-such-master"}),
    );
    let output = run(&[
        "plugin",
        "run",
        test_artifacts::MACVLAN,
        "--command",
        "ADD",
        "--config",
        &config,
        "--no-cache",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let error = stdout_json(&output);
    assert_eq!(error["code"], 999);
    let digest = support::sha256_hex(&std::fs::read(test_artifacts::MACVLAN).unwrap());
    assert_eq!(
        error["msg"],
        format!(
            "plugin macvlan (sha256 {digest}): failed to lookup master \"no-such-master\": Link not found"
        )
    );
}

#[test]
fn run_traps_a_loop_at_the_requested_deadline() {
    let dir = support::scratch();
    let config = write(
        dir.path(),
        "loop.json",
        &json!({"cniVersion": "1.0.0", "name": "x", "type": "hostile", "behaviour": "loop"}),
    );
    let started = std::time::Instant::now();
    let output = run(&[
        "plugin",
        "run",
        test_artifacts::HOSTILE,
        "--command",
        "ADD",
        "--config",
        &config,
        "--no-cache",
        "--timeout-ms",
        "200",
        "--fuel",
        "100000000000000",
    ]);
    let error = stdout_json(&output);
    assert_eq!(error["code"], 101, "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn wasip2_stdout_goes_to_the_host_log_under_the_plugin_name() {
    let dir = support::scratch();
    let config = write(
        dir.path(),
        "print.json",
        &json!({"cniVersion": "1.0.0", "name": "x", "type": "hostile", "behaviour": "print", "message": "hello-from-the-guest"}),
    );
    let output = run(&[
        "plugin",
        "run",
        test_artifacts::HOSTILE_WASIP2,
        "--command",
        "ADD",
        "--config",
        &config,
        "--no-cache",
    ]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains("hello-from-the-guest"),
        "guest output leaked to stdout: {stdout}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find(|line| line.contains("hello-from-the-guest") && line.contains("stream=\"stdout\""))
        .unwrap_or_else(|| panic!("no log line: {stderr}"));
    assert!(line.contains("hostile"), "{line}");
}

#[test]
fn log_format_json_makes_every_stderr_line_a_json_object() {
    let dir = support::scratch();
    let config = write(
        dir.path(),
        "print.json",
        &json!({"cniVersion": "1.0.0", "name": "x", "type": "hostile", "behaviour": "print", "message": "hello\u{7}json"}),
    );
    let output = run(&[
        "--log-format",
        "json",
        "plugin",
        "run",
        test_artifacts::HOSTILE_WASIP2,
        "--command",
        "ADD",
        "--config",
        &config,
        "--no-cache",
    ]);
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    let guest = lines
        .iter()
        .find(|line| line["fields"]["stream"] == "stdout")
        .unwrap_or_else(|| panic!("no guest line: {stderr}"));
    assert!(
        guest["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("hello\u{7}json"),
        "{guest}"
    );
    assert!(!stderr.contains('\u{7}'), "escaped on the wire");
}

#[test]
fn run_uses_a_scratch_store_for_ipam_and_the_state_dir_when_given() {
    let dir = support::scratch();
    let config = write(
        dir.path(),
        "ipam.json",
        &json!({"cniVersion": "0.4.0", "name": "clinet", "type": "macvlan",
                "ipam": {"type": "host-local", "subnet": "10.9.0.0/29"}}),
    );
    let state = dir.path().join("state");
    let args = |id: &str| {
        vec![
            "plugin".to_string(),
            "run".into(),
            test_artifacts::HOST_LOCAL.into(),
            "--command".into(),
            "ADD".into(),
            "--config".into(),
            config.clone(),
            "--no-cache".into(),
            "--container-id".into(),
            id.into(),
            "--state-dir".into(),
            state.display().to_string(),
        ]
    };
    let first = Command::new(binary()).args(args("c1")).output().unwrap();
    assert!(first.status.success(), "{first:?}");
    assert_eq!(
        stdout_json(&first)["result"]["ips"][0]["address"],
        "10.9.0.2/29"
    );
    assert_eq!(stdout_json(&first)["ops"], json!([]));
    let second = Command::new(binary()).args(args("c2")).output().unwrap();
    assert_eq!(
        stdout_json(&second)["result"]["ips"][0]["address"],
        "10.9.0.3/29"
    );
    assert_eq!(
        std::fs::read(state.join("clinet/10.9.0.2")).unwrap(),
        b"c1\r\nnet1"
    );
}

fn compiled(output: &Output) -> bool {
    String::from_utf8_lossy(&output.stderr).contains("compiled plugin into the cache")
}

#[test]
fn the_cache_compiles_once_and_recovers_from_a_truncated_entry() {
    let dir = support::scratch();
    let cache = dir.path().join("cache");
    let first = macvlan_run(test_artifacts::MACVLAN, dir.path(), &cache);
    assert!(first.status.success(), "{first:?}");
    assert!(
        compiled(&first),
        "the first run compiles: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = macvlan_run(test_artifacts::MACVLAN, dir.path(), &cache);
    assert!(second.status.success());
    assert!(
        !compiled(&second),
        "the second run must not compile: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(String::from_utf8_lossy(&second.stderr).contains("cache=Hit"));

    // Truncate the artifact: the next run recompiles and succeeds.
    let digest = support::sha256_hex(&std::fs::read(test_artifacts::MACVLAN).unwrap());
    let artifact = walk(&cache)
        .into_iter()
        .find(|path| path.file_name().unwrap().to_string_lossy() == format!("{digest}.cwasm"))
        .expect("an artifact named by the digest");
    let length = std::fs::metadata(&artifact).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&artifact)
        .unwrap()
        .set_len(length / 3)
        .unwrap();
    let third = macvlan_run(test_artifacts::MACVLAN, dir.path(), &cache);
    assert!(third.status.success(), "{third:?}");
    assert!(compiled(&third), "a truncated entry is a miss");
    assert_eq!(stdout_json(&third), stdout_json(&first));
}

#[test]
fn eight_concurrent_first_calls_compile_once() {
    let dir = support::scratch();
    let cache = dir.path().join("cache");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let dir = dir.path().to_path_buf();
            let cache = cache.clone();
            std::thread::spawn(move || {
                let sub = tempfile::tempdir_in(&dir).unwrap();
                let output = macvlan_run(test_artifacts::MACVLAN, sub.path(), &cache);
                assert!(output.status.success(), "{output:?}");
                compiled(&output)
            })
        })
        .collect();
    let compiles = handles
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .filter(|compiled| *compiled)
        .count();
    assert_eq!(
        compiles, 1,
        "exactly one of 8 concurrent first calls compiles"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn cni_version_is_answered_per_spec() {
    let mut child = Command::new(binary())
        .env("CNI_COMMAND", "VERSION")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"cniVersion":"0.4.0"}"#)
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let version = stdout_json(&output);
    assert_eq!(version["cniVersion"], "0.4.0");
    assert_eq!(
        version["supportedVersions"],
        json!([
            "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"
        ])
    );
}

fn status(config: &Value) -> Output {
    let mut child = Command::new(binary())
        .env_clear()
        .env("CNI_COMMAND", "STATUS")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(config.to_string().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn status_reports_ready_and_names_a_plugin_that_cannot_load() {
    let dir = support::scratch();
    let mut config = support::delegates_config(
        dir.path(),
        vec![support::seed_netconf(&dir.path().join("ipam"))],
    );
    config["cniVersion"] = json!("1.1.0");
    let ready = status(&config);
    assert!(ready.status.success(), "{ready:?}");
    assert!(ready.stdout.is_empty(), "STATUS prints nothing on success");

    config["wasmPlugins"]["macvlan"]["sha256"] = json!("0".repeat(64));
    let broken = status(&config);
    assert_eq!(broken.status.code(), Some(1));
    let error = stdout_json(&broken);
    assert_eq!(error["code"], 50, "not available: {error}");
    assert!(
        error["msg"].as_str().unwrap().contains("macvlan"),
        "{error}"
    );

    config["wasmPlugins"]["macvlan"] = support::plugin(test_artifacts::MACVLAN);
    config["binDir"] = json!("/nonexistent");
    config["delegates"][0]["type"] = json!("no-such-plugin");
    let missing = status(&config);
    assert_eq!(stdout_json(&missing)["code"], 50);
}

#[test]
fn run_as_a_normal_user_says_how_to_do_without_roots_cache() {
    support::require_root();
    use std::os::unix::fs::PermissionsExt;
    let dir = support::scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = write(
        dir.path(),
        "plan.json",
        &json!({"cniVersion": "1.0.0", "name": "plan", "type": "hostile",
                "behaviour": "plan", "ops": []}),
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A cache only root may write, as the default one is.
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    let as_nobody = |extra: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(binary())
            .args(["plugin", "run", test_artifacts::HOSTILE, "--command", "ADD"])
            .args(["--config", &config])
            .args(extra)
            .env_remove("CNI_COMMAND")
            .output()
            .expect("setpriv (util-linux)")
    };
    let refused = as_nobody(&["--cache-dir", &cache.display().to_string()]);
    assert!(!refused.status.success(), "{refused:?}");
    let error = stdout_json(&refused);
    assert!(
        error["msg"].as_str().unwrap().contains("--no-cache"),
        "{error}"
    );
    let planned = as_nobody(&["--no-cache"]);
    assert!(planned.status.success(), "{planned:?}");
    assert_eq!(stdout_json(&planned)["ops"], json!([]));
}
