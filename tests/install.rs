//! `multus-wasm install` in a temporary root standing in for a node: the
//! binary copied atomically, plugins verified (a tampered one refused, the
//! rest installed) and precompiled so the first call does not compile, the
//! host config generated from the primary config, regenerated when it or
//! the plugins change, and removed on shutdown.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct FakeNode {
    root: tempfile::TempDir,
    plugin_dir: PathBuf,
}

impl FakeNode {
    fn new() -> FakeNode {
        let root = support::scratch();
        let conf = root.path().join("etc/cni/net.d");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("10-ptp.conflist"),
            json!({"cniVersion": "1.0.0", "name": "ptp-net", "plugins": [
                {"type": "ptp", "ipam": {"type": "host-local", "subnet": "10.244.0.0/24"}},
                {"type": "portmap", "capabilities": {"portMappings": true}}]})
            .to_string(),
        )
        .unwrap();
        std::fs::write(
            conf.join("99-other.conf"),
            json!({"cniVersion": "0.3.1", "name": "other", "type": "bridge"}).to_string(),
        )
        .unwrap();
        let plugin_dir = root.path().join("configmap");
        std::fs::create_dir_all(&plugin_dir).unwrap();
        let mut manifest = serde_json::Map::new();
        for (plugin_type, path) in [
            ("macvlan", test_artifacts::MACVLAN),
            ("host-local", test_artifacts::HOST_LOCAL),
            ("static", test_artifacts::STATIC),
        ] {
            std::fs::copy(path, plugin_dir.join(format!("{plugin_type}.wasm"))).unwrap();
            let digest = support::sha256_hex(&std::fs::read(path).unwrap());
            manifest.insert(
                plugin_type.into(),
                json!({"file": format!("{plugin_type}.wasm"), "sha256": digest}),
            );
        }
        std::fs::write(
            plugin_dir.join("plugins.json"),
            Value::Object(manifest).to_string(),
        )
        .unwrap();
        FakeNode { root, plugin_dir }
    }

    fn path(&self, host_path: &str) -> PathBuf {
        self.root.path().join(host_path.trim_start_matches('/'))
    }

    fn args(&self) -> Vec<String> {
        vec![
            "install".into(),
            "--host-root".into(),
            self.root.path().display().to_string(),
            "--plugin-dir".into(),
            self.plugin_dir.display().to_string(),
            "--binary".into(),
            support::binary().display().to_string(),
        ]
    }

    fn config(&self) -> Option<Value> {
        for name in ["00-multus-wasm.conflist", "00-multus-wasm.conf"] {
            if let Ok(text) = std::fs::read_to_string(self.path("/etc/cni/net.d").join(name)) {
                return Some(serde_json::from_str(&text).expect("our config is JSON"));
            }
        }
        None
    }
}

fn install(args: &[String]) -> Output {
    Command::new(support::binary())
        .args(args)
        .output()
        .expect("run install")
}

/// Our plugin config inside a .conflist or a .conf.
fn plugin_config(config: &Value) -> &Value {
    config
        .get("plugins")
        .map(|plugins| &plugins[0])
        .unwrap_or(config)
}

#[test]
fn install_copies_the_binary_verifies_and_precompiles_plugins_and_writes_the_config() {
    let node = FakeNode::new();
    // Tamper with static.wasm: the manifest still pins the real digest.
    std::fs::write(
        node.plugin_dir.join("static.wasm"),
        b"\0asm\x0d\x00\x01\x00tampered",
    )
    .unwrap();
    let output = install(&node.args());
    assert_eq!(
        output.status.code(),
        Some(1),
        "a refused plugin is reported: {output:?}"
    );
    let error: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(error["code"], 100);
    let report: Value = serde_json::from_str(error["details"].as_str().unwrap()).unwrap();
    assert!(
        report["refused"]["static"]
            .as_str()
            .unwrap()
            .contains("refusing it"),
        "{report}"
    );
    assert_eq!(report["compiled"], json!(["host-local", "macvlan"]));

    let binary = node.path("/opt/cni/bin/multus-wasm");
    assert_eq!(
        std::fs::read(&binary).unwrap(),
        std::fs::read(support::binary()).unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&binary).unwrap().permissions().mode() & 0o777,
        0o755
    );

    let config = node
        .config()
        .expect("00-multus-wasm.conflist (primary is cniVersion 1.0.0)");
    assert_eq!(config["cniVersion"], "1.0.0");
    let ours = plugin_config(&config);
    assert_eq!(ours["type"], "multus-wasm");
    assert_eq!(ours["clusterNetwork"], "/etc/cni/net.d/10-ptp.conflist");
    assert_eq!(ours["capabilities"], json!({"portMappings": true}));
    let plugins = ours["wasmPlugins"].as_object().unwrap();
    assert_eq!(
        plugins.len(),
        2,
        "the tampered plugin is not registered: {plugins:?}"
    );
    let macvlan_digest = support::sha256_hex(&std::fs::read(test_artifacts::MACVLAN).unwrap());
    assert_eq!(plugins["macvlan"]["sha256"], macvlan_digest);
    let installed = plugins["macvlan"]["path"].as_str().unwrap();
    assert_eq!(
        installed,
        format!("/var/lib/multus-wasm/plugins/macvlan-{macvlan_digest}.wasm")
    );
    assert_eq!(
        std::fs::read(node.path(installed)).unwrap(),
        std::fs::read(test_artifacts::MACVLAN).unwrap()
    );
    assert!(
        support::files(&node.path("/etc/cni/net.d"))
            .iter()
            .all(|name| !name.contains(".tmp")),
        "no temporary file left"
    );

    // The cache is filled: a call with the installed cache does not compile.
    let dir = support::scratch();
    let netconf = dir.path().join("netconf.json");
    std::fs::write(
        &netconf,
        json!({"cniVersion": "1.0.0", "name": "n", "type": "macvlan", "master": "lo", "ipam": {}})
            .to_string(),
    )
    .unwrap();
    let run = Command::new(support::binary())
        .args([
            "plugin",
            "run",
            &node.path(installed).display().to_string(),
            "--command",
            "ADD",
        ])
        .arg("--config")
        .arg(&netconf)
        .args(["--sha256", &macvlan_digest, "--cache-dir"])
        .arg(node.path("/var/lib/multus-wasm/cache"))
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(log.contains("cache=Hit"), "{log}");
    assert!(
        !log.contains("compiled plugin"),
        "the first call after install must not compile: {log}"
    );

    // A second install pass compiles nothing and rewrites the same config.
    std::fs::copy(test_artifacts::STATIC, node.plugin_dir.join("static.wasm")).unwrap();
    let again = install(&node.args());
    assert!(again.status.success(), "{again:?}");
    let report: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["compiled"], json!(["static"]));
    assert_eq!(
        plugin_config(&node.config().unwrap())["wasmPlugins"]
            .as_object()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn an_old_primary_gets_a_conf_and_the_service_account_a_kubeconfig() {
    let node = FakeNode::new();
    std::fs::remove_file(node.path("/etc/cni/net.d/10-ptp.conflist")).unwrap();
    let account = support::scratch();
    std::fs::write(account.path().join("token"), "secret-token\n").unwrap();
    std::fs::write(
        account.path().join("ca.crt"),
        "-----BEGIN CERTIFICATE-----\n",
    )
    .unwrap();
    let mut args = node.args();
    args.extend([
        "--kubeconfig-from-service-account".into(),
        "--service-account-dir".into(),
        account.path().display().to_string(),
    ]);
    let output = Command::new(support::binary())
        .args(&args)
        .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
        .env("KUBERNETES_SERVICE_PORT", "443")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let config = node.config().unwrap();
    assert!(
        config.get("plugins").is_none(),
        "cniVersion 0.3.1 gets a .conf"
    );
    assert!(node.path("/etc/cni/net.d/00-multus-wasm.conf").exists());
    assert_eq!(config["clusterNetwork"], "/etc/cni/net.d/99-other.conf");
    assert_eq!(
        config["kubeconfig"],
        "/etc/cni/net.d/multus.d/multus-wasm.kubeconfig"
    );
    let kubeconfig_path = node.path("/etc/cni/net.d/multus.d/multus-wasm.kubeconfig");
    let kubeconfig = std::fs::read_to_string(&kubeconfig_path).unwrap();
    assert!(
        kubeconfig.contains("server: https://10.96.0.1:443"),
        "{kubeconfig}"
    );
    assert!(kubeconfig.contains("token: secret-token\n"), "{kubeconfig}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&kubeconfig_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn watch_regenerates_the_config_and_removes_it_on_shutdown() {
    let node = FakeNode::new();
    let mut args = node.args();
    args.extend([
        "--watch".into(),
        "--interval-ms".into(),
        "100".into(),
        "--cleanup-on-exit".into(),
        "--skip-binary-copy".into(),
    ]);
    let mut child = Command::new(support::binary())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cluster_network = |node: &FakeNode| {
        node.config()
            .map(|config| plugin_config(&config)["clusterNetwork"].clone())
    };
    wait_for("the first config", || {
        cluster_network(&node) == Some(json!("/etc/cni/net.d/10-ptp.conflist"))
    });

    // A new primary that sorts first takes over.
    std::fs::write(
        node.path("/etc/cni/net.d/05-calico.conflist"),
        json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "calico"}]})
            .to_string(),
    )
    .unwrap();
    wait_for("the new primary", || {
        cluster_network(&node) == Some(json!("/etc/cni/net.d/05-calico.conflist"))
    });

    // The plugin ConfigMap changes (kubelet swaps the ..data symlink): the
    // registered plugins follow.
    let swapped = node.root.path().join("configmap-v2");
    std::fs::create_dir_all(&swapped).unwrap();
    std::fs::copy(
        node.plugin_dir.join("macvlan.wasm"),
        swapped.join("macvlan.wasm"),
    )
    .unwrap();
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(node.plugin_dir.join("plugins.json")).unwrap(),
    )
    .unwrap();
    std::fs::write(
        swapped.join("plugins.json"),
        json!({"macvlan": manifest["macvlan"]}).to_string(),
    )
    .unwrap();
    std::fs::remove_dir_all(&node.plugin_dir).unwrap();
    std::os::unix::fs::symlink(&swapped, &node.plugin_dir).unwrap();
    wait_for("the new plugin set", || {
        node.config()
            .map(|config| {
                plugin_config(&config)["wasmPlugins"]
                    .as_object()
                    .map(|plugins| plugins.len())
                    == Some(1)
            })
            .unwrap_or(false)
    });

    // SIGTERM: the watcher removes our config and exits.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the watcher did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(node.config().is_none(), "config removed on shutdown");
    assert!(
        node.path("/etc/cni/net.d/05-calico.conflist").exists(),
        "the primary is left alone"
    );
}

#[test]
fn verify_and_compile_report_on_the_plugin_set() {
    let node = FakeNode::new();
    let output = Command::new(support::binary())
        .args(["plugin", "verify"])
        .arg(&node.plugin_dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["macvlan"]["ok"], true);
    assert_eq!(report["macvlan"]["abiVersion"], "0.1.0");
    assert_eq!(report["host-local"]["world"], "ipam");
    std::fs::write(node.plugin_dir.join("static.wasm"), b"not even wasm").unwrap();
    let output = Command::new(support::binary())
        .args(["plugin", "verify"])
        .arg(&node.plugin_dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let error: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        error["msg"]
            .as_str()
            .unwrap()
            .contains("1 plugin(s) failed"),
        "{error}"
    );

    // compile: a host config's plugins into its cache.
    let dir = support::scratch();
    let config = dir.path().join("00-multus-wasm.conf");
    std::fs::write(
        &config,
        json!({"cniVersion": "1.0.0", "name": "m", "type": "multus-wasm", "delegates": [{"type": "macvlan"}],
               "wasmCacheDir": dir.path().join("cache"), "wasmPlugins": {"macvlan": support::plugin(test_artifacts::MACVLAN)}})
        .to_string(),
    )
    .unwrap();
    let first: Value = serde_json::from_slice(
        &Command::new(support::binary())
            .args(["plugin", "compile", "--config"])
            .arg(&config)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(first["macvlan"]["cache"], "compiled");
    let second: Value = serde_json::from_slice(
        &Command::new(support::binary())
            .args(["plugin", "compile", "--config"])
            .arg(&config)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(second["macvlan"]["cache"], "hit");
    let _ = Path::new("");
}
