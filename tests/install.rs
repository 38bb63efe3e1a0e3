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
    assert_eq!(report["macvlan"]["abiVersion"], "0.2.0");
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

// ---------------------------------------------------------------------------
// A hostile plugin manifest: the manifest selects files inside the plugin dir
// and never names a path. Each test builds a plugin dir laid out like a real
// ConfigMap mount (`..2026_12_04_x/` with the files, `..data` -> it, `<name>`
// -> `..data/<name>`) with one good plugin and the hostile entry, under its
// own scratch dir:
//
//   <scratch>/host/          the node's root (--host-root)
//   <scratch>/configmap/     the plugin dir (--plugin-dir)
//   <scratch>/outside/shadow a root-only (0600) file outside the plugin dir

use std::collections::BTreeMap;
use std::io::Read;

const DATA: &str = "..2026_12_04_x";
const STATE: &str = "host/var/lib/multus-wasm";
const CONFIG: &str = "host/etc/cni/net.d/00-multus-wasm.conflist";
const SECRET: &[u8] = b"root:$6$not-for-your-eyes:19000:0:99999:7:::\n";

struct Mount {
    scratch: tempfile::TempDir,
    manifest: serde_json::Map<String, Value>,
}

/// What one install run printed.
struct Ran {
    code: Option<i32>,
    report: Value,
    log: String,
}

impl Mount {
    /// A node with a primary config and a ConfigMap mount holding the good
    /// plugin `macvlan`.
    fn new() -> Mount {
        let scratch = support::scratch();
        let conf = scratch.path().join("host/etc/cni/net.d");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(scratch.path().join("host/var/lib")).unwrap();
        std::fs::write(
            conf.join("10-ptp.conflist"),
            json!({"cniVersion": "1.0.0", "name": "ptp-net", "plugins": [{"type": "ptp"}]})
                .to_string(),
        )
        .unwrap();
        std::fs::create_dir_all(scratch.path().join("configmap").join(DATA)).unwrap();
        std::os::unix::fs::symlink(DATA, scratch.path().join("configmap/..data")).unwrap();
        let outside = scratch.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(outside.join("shadow"))
            .unwrap();
        std::fs::write(outside.join("shadow"), SECRET).unwrap();
        let mut mount = Mount {
            scratch,
            manifest: serde_json::Map::new(),
        };
        mount.add_file(
            "macvlan.wasm",
            &std::fs::read(test_artifacts::MACVLAN).unwrap(),
        );
        mount.pin("macvlan", "macvlan.wasm", &macvlan_digest());
        mount
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.scratch.path().join(relative)
    }

    fn plugin_dir(&self) -> PathBuf {
        self.path("configmap")
    }

    fn secret(&self) -> PathBuf {
        self.path("outside/shadow")
    }

    /// A file the way kubelet projects a key: in the data dir, linked by name.
    fn add_file(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.plugin_dir().join(DATA).join(name), bytes).unwrap();
        self.link_key(name);
    }

    /// `<name> -> ..data/<name>`.
    fn link_key(&self, name: &str) {
        std::os::unix::fs::symlink(format!("..data/{name}"), self.plugin_dir().join(name)).unwrap();
    }

    fn pin(&mut self, plugin_type: &str, file: &str, sha256: &str) {
        self.manifest
            .insert(plugin_type.into(), json!({"file": file, "sha256": sha256}));
    }

    /// Write plugins.json and run `install`.
    fn install(&self) -> Ran {
        self.write_manifest();
        self.run_install()
    }

    fn write_manifest(&self) {
        self.add_file(
            "plugins.json",
            Value::Object(self.manifest.clone()).to_string().as_bytes(),
        );
    }

    /// Run `install` (skipping the binary copy, so the only write outside
    /// the state dir is our config), failing the test if it runs longer
    /// than 20 s.
    fn run_install(&self) -> Ran {
        let mut child = Command::new(support::binary())
            .arg("install")
            .arg("--host-root")
            .arg(self.path("host"))
            .arg("--plugin-dir")
            .arg(self.plugin_dir())
            .arg("--skip-binary-copy")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run install");
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = pipe.read_to_end(&mut text);
                String::from_utf8_lossy(&text).into_owned()
            })
        };
        let stdout = drain(Box::new(child.stdout.take().unwrap()));
        let stderr = drain(Box::new(child.stderr.take().unwrap()));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("install hung for more than 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = stdout.join().unwrap();
        let stderr = stderr.join().unwrap();
        let printed: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|err| panic!("stdout is JSON ({err}): {stdout}\n{stderr}"));
        // A refused plugin makes install fail with the report as details.
        let report = match printed["details"].as_str() {
            Some(details) => serde_json::from_str(details).unwrap(),
            None => printed,
        };
        Ran {
            code: status.code(),
            report,
            log: format!("{stdout}\n{stderr}"),
        }
    }

    /// Every entry under the scratch dir (symlinks not followed), with what
    /// identifies its content; directories by kind, mode and inode only
    /// (their entries are listed themselves).
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
            use std::os::unix::fs::MetadataExt;
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let kind = meta.file_type();
                let desc = if kind.is_dir() {
                    walk(root, &path, out);
                    format!("dir {:o} {}", meta.mode(), meta.ino())
                } else if kind.is_symlink() {
                    format!("link {}", std::fs::read_link(&path).unwrap().display())
                } else if kind.is_file() && meta.len() <= 1 << 20 {
                    let bytes = std::fs::read(&path).unwrap();
                    format!(
                        "file {:o} {} {}.{} {}",
                        meta.mode(),
                        meta.ino(),
                        meta.ctime(),
                        meta.ctime_nsec(),
                        support::sha256_hex(&bytes)
                    )
                } else {
                    format!(
                        "other {:o} {} {} {} {}.{}",
                        meta.mode(),
                        meta.ino(),
                        meta.len(),
                        meta.mtime_nsec(),
                        meta.ctime(),
                        meta.ctime_nsec()
                    )
                };
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), desc);
            }
        }
        let mut out = BTreeMap::new();
        walk(self.scratch.path(), self.scratch.path(), &mut out);
        out
    }

    /// Install with the manifest as set up, and check what every hostile
    /// case must hold: `plugin_type` refused with a reason containing one of
    /// `reasons` and naming `file`, macvlan installed, nothing written
    /// outside the state dir but our config, the state dir holding only
    /// macvlan, and no log line carrying `hidden_digest` or the secret.
    fn refuses(&self, plugin_type: &str, file: &str, reasons: &[&str], hidden_digest: &str) -> Ran {
        self.write_manifest();
        let before = self.snapshot();
        let ran = self.run_install();
        let after = self.snapshot();
        let report = &ran.report;
        assert_eq!(
            ran.code,
            Some(1),
            "a refused plugin fails the pass: {}",
            ran.log
        );
        let reason = report["refused"][plugin_type]
            .as_str()
            .unwrap_or_else(|| panic!("{plugin_type:?} is refused: {report}"));
        assert!(
            reasons.iter().any(|expected| reason.contains(expected)),
            "{plugin_type:?}: {reason:?} should say one of {reasons:?}"
        );
        if !file.is_empty() {
            assert!(
                reason.contains(&format!("{file:?}")),
                "{reason:?} names the file"
            );
        }
        assert!(ran.log.contains("plugin refused"), "{}", ran.log);
        let installed = format!(
            "/var/lib/multus-wasm/plugins/macvlan-{}.wasm",
            macvlan_digest()
        );
        assert_eq!(
            report["installed"],
            json!({"macvlan": installed}),
            "{report}"
        );
        assert_eq!(
            std::fs::read(self.path("host").join(installed.trim_start_matches('/'))).unwrap(),
            std::fs::read(test_artifacts::MACVLAN).unwrap()
        );
        assert_eq!(
            support::files(&self.path(STATE).join("plugins")),
            [format!("macvlan-{}.wasm", macvlan_digest())],
            "only the good plugin is in the state dir"
        );

        let changed: Vec<&PathBuf> = before
            .keys()
            .chain(after.keys())
            .filter(|path| before.get(*path) != after.get(*path))
            .filter(|path| !path.starts_with(STATE))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            changed,
            [&PathBuf::from(CONFIG)],
            "nothing but our config was written outside the state dir"
        );
        let config = std::fs::read_to_string(self.path(CONFIG)).unwrap();
        let registered: Value = serde_json::from_str(&config).unwrap();
        assert_eq!(
            plugin_config(&registered)["wasmPlugins"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["macvlan"]
        );

        assert!(
            !ran.log.contains(hidden_digest) && !config.contains(hidden_digest),
            "the refused file's sha256 is never printed: {}",
            ran.log
        );
        assert!(!ran.log.contains("not-for-your-eyes"), "{}", ran.log);
        ran
    }
}

fn macvlan_digest() -> String {
    support::sha256_hex(&std::fs::read(test_artifacts::MACVLAN).unwrap())
}

fn secret_digest() -> String {
    support::sha256_hex(SECRET)
}

#[test]
fn a_type_with_dot_dot_cannot_write_outside_the_state_dir() {
    let mut mount = Mount::new();
    // A real plugin, pinned right: the old install wrote it to
    // <state>/plugins/../../../../../escaped-<sha256>.wasm, i.e. <scratch>/.
    let evil = std::fs::read(test_artifacts::STATIC).unwrap();
    let digest = support::sha256_hex(&evil);
    mount.add_file("evil.wasm", &evil);
    let key = "../../../../../escaped";
    mount.pin(key, "evil.wasm", &digest);
    mount.refuses(
        key,
        "",
        &["invalid plugin type", "\"../../../../../escaped\""],
        &digest,
    );
    assert!(
        support::files(mount.scratch.path())
            .iter()
            .all(|name| !name.starts_with("escaped")),
        "nothing at the ../ target"
    );
    assert!(!mount.path("host/var/lib/escaped").exists());
}

#[test]
fn types_with_uppercase_a_slash_or_too_long_are_refused() {
    for key in ["Macvlan", "sub/evil", "-lead", &"x".repeat(64)] {
        let mut mount = Mount::new();
        let evil = std::fs::read(test_artifacts::STATIC).unwrap();
        let digest = support::sha256_hex(&evil);
        mount.add_file("evil.wasm", &evil);
        mount.pin(key, "evil.wasm", &digest);
        mount.refuses(key, "", &["invalid plugin type"], &digest);
        assert!(!mount.path(STATE).join("plugins/sub").exists());
    }
}

#[test]
fn a_file_with_dot_dot_is_refused() {
    let mut mount = Mount::new();
    // From the mount: configmap/../outside/shadow, pinned right.
    mount.pin("evil", "../outside/shadow", &secret_digest());
    mount.refuses(
        "evil",
        "../outside/shadow",
        &["invalid file name"],
        &secret_digest(),
    );
}

#[test]
fn a_file_with_an_absolute_path_to_a_root_only_file_is_refused() {
    let mut mount = Mount::new();
    let secret = mount.secret().display().to_string();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    mount.pin("evil", &secret, &secret_digest());
    mount.refuses("evil", &secret, &["invalid file name"], &secret_digest());
}

#[test]
fn a_file_symlinked_outside_the_dir_is_refused() {
    let mut mount = Mount::new();
    // Relative, through the ConfigMap's own chain: evil.wasm -> ..data/evil.wasm
    // -> ../../outside/shadow.
    std::os::unix::fs::symlink(
        "../../outside/shadow",
        mount.plugin_dir().join(DATA).join("evil.wasm"),
    )
    .unwrap();
    mount.link_key("evil.wasm");
    // Absolute.
    std::os::unix::fs::symlink(mount.secret(), mount.plugin_dir().join("abs.wasm")).unwrap();
    mount.pin("evil", "evil.wasm", &secret_digest());
    mount.pin("abs", "abs.wasm", &secret_digest());
    let ran = mount.refuses("evil", "evil.wasm", &["cannot open"], &secret_digest());
    let reason = ran.report["refused"]["abs"].as_str().unwrap();
    assert!(reason.contains("cannot open \"abs.wasm\""), "{reason}");
    assert!(!ran.log.contains(&secret_digest()));
}

#[test]
fn a_file_symlinked_to_dev_zero_is_refused_promptly() {
    let mut mount = Mount::new();
    std::os::unix::fs::symlink("/dev/zero", mount.plugin_dir().join(DATA).join("zero.wasm"))
        .unwrap();
    mount.link_key("zero.wasm");
    let started = Instant::now();
    mount.pin("zero", "zero.wasm", &"0".repeat(64));
    mount.refuses(
        "zero",
        "zero.wasm",
        &["cannot open", "not a regular file"],
        &support::sha256_hex(&vec![0; 4 << 20]),
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_fifo_does_not_hang_install() {
    let mut mount = Mount::new();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        mount.plugin_dir().join(DATA).join("pipe.wasm"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    mount.link_key("pipe.wasm");
    mount.pin("pipe", "pipe.wasm", &"0".repeat(64));
    // run_install's guard fails the test after 20 s.
    mount.refuses(
        "pipe",
        "pipe.wasm",
        &["not a regular file (a fifo)"],
        &"0".repeat(64),
    );
}

#[test]
fn a_file_over_the_cap_is_refused() {
    let mut mount = Mount::new();
    let big = mount.plugin_dir().join(DATA).join("big.wasm");
    let size = (4 << 20) + 1;
    std::fs::File::create(&big).unwrap().set_len(size).unwrap();
    mount.link_key("big.wasm");
    // Pinned right: only the size refuses it.
    let digest = support::sha256_hex(&vec![0; size as usize]);
    mount.pin("big", "big.wasm", &digest);
    mount.refuses(
        "big",
        "big.wasm",
        &["larger than the 4194304-byte cap"],
        &digest,
    );
}

#[test]
fn a_hostile_manifest_fails_promptly() {
    for make in ["zero", "fifo"] {
        let mount = Mount::new();
        let data = mount.plugin_dir().join(DATA).join("plugins.json");
        match make {
            "zero" => std::os::unix::fs::symlink("/dev/zero", &data).unwrap(),
            _ => rustix::fs::mknodat(
                rustix::fs::CWD,
                &data,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o644),
                0,
            )
            .unwrap(),
        }
        mount.link_key("plugins.json");
        let ran = mount.run_install();
        assert_eq!(ran.code, Some(1), "{}", ran.log);
        let msg = ran.report["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains("plugins.json")
                && (msg.contains("cannot open") || msg.contains("not a regular file")),
            "{make}: {msg}"
        );
        assert!(!mount.path(STATE).join("plugins").exists());
        assert!(!mount.path(CONFIG).exists());
    }
}

#[test]
fn the_configmap_layout_installs_through_its_symlinks() {
    let mut mount = Mount::new();
    let digest = support::sha256_hex(&std::fs::read(test_artifacts::HOST_LOCAL).unwrap());
    mount.add_file(
        "host-local.wasm",
        &std::fs::read(test_artifacts::HOST_LOCAL).unwrap(),
    );
    mount.pin("host-local", "host-local.wasm", &digest);
    let ran = mount.install();
    assert_eq!(ran.code, Some(0), "{}", ran.log);
    assert_eq!(ran.report["refused"], json!({}));
    assert_eq!(ran.report["compiled"], json!(["host-local", "macvlan"]));
    assert_eq!(
        ran.report["installed"]["host-local"],
        format!("/var/lib/multus-wasm/plugins/host-local-{digest}.wasm")
    );
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(mount.path(CONFIG)).unwrap()).unwrap();
    assert_eq!(
        plugin_config(&config)["wasmPlugins"]["host-local"]["sha256"],
        digest
    );
}

// ---------------------------------------------------------------------------
// Operating the config over a node's life (issue #12): restarts, boot order,
// removal by others, template edits, migration from Multus, uninstall.

/// `install --watch` running on a fake node, killed when dropped; its log
/// is kept beside the node for failure messages.
struct Watcher {
    child: std::process::Child,
    log: tempfile::TempDir,
}

impl Watcher {
    fn start(args: Vec<String>) -> Watcher {
        let log = support::scratch();
        let mut args = args;
        args.extend([
            "--watch".into(),
            "--interval-ms".into(),
            "100".into(),
            "--skip-binary-copy".into(),
        ]);
        let child = Command::new(support::binary())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        Watcher { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path().join("stderr")).unwrap_or_default()
    }

    /// SIGTERM, as kubelet stops the container; it must exit 0.
    fn terminate(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}: {}", self.log());
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the watcher did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cluster_network(node: &FakeNode) -> Option<Value> {
    node.config()
        .map(|config| plugin_config(&config)["clusterNetwork"].clone())
}

/// Holds for `duration`: `condition` is checked every 50 ms.
fn stays(what: &str, duration: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while started.elapsed() < duration {
        assert!(condition(), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const CONFLIST: &str = "/etc/cni/net.d/00-multus-wasm.conflist";

#[test]
fn the_config_survives_a_watcher_restart_and_a_second_install() {
    let node = FakeNode::new();
    let watcher = Watcher::start(node.args());
    wait_for("the first config", || node.config().is_some());
    let written = node.config().unwrap();
    // SIGTERM without --cleanup-on-exit: a rollout or restart keeps it.
    watcher.terminate();
    assert_eq!(node.config(), Some(written.clone()), "kept on SIGTERM");
    // The next pod's init step and watcher leave it as it is.
    let again = install(&node.args());
    assert!(again.status.success(), "{again:?}");
    assert_eq!(node.config(), Some(written.clone()));
    let watcher = Watcher::start(node.args());
    stays(
        "the restarted watcher keeps it",
        Duration::from_millis(800),
        || node.config() == Some(written.clone()),
    );
    watcher.terminate();
    assert_eq!(node.config(), Some(written));
}

#[test]
fn without_a_primary_install_succeeds_and_the_watcher_writes_it_when_it_appears() {
    let node = FakeNode::new();
    let conf = node.path("/etc/cni/net.d");
    let ptp = std::fs::read(conf.join("10-ptp.conflist")).unwrap();
    std::fs::remove_file(conf.join("10-ptp.conflist")).unwrap();
    std::fs::remove_file(conf.join("99-other.conf")).unwrap();

    // The init step: binary and plugins installed, exit 0, no config.
    let output = install(&node.args());
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["waitingForPrimary"], "/etc/cni/net.d", "{report}");
    assert!(report["config"].is_null(), "{report}");
    assert!(node.path("/opt/cni/bin/multus-wasm").exists());
    assert_eq!(report["installed"].as_object().unwrap().len(), 3);
    assert!(node.config().is_none());

    // The watcher waits, then writes the config as soon as the primary
    // appears.
    let watcher = Watcher::start(node.args());
    stays(
        "no config without a primary",
        Duration::from_millis(600),
        || node.config().is_none(),
    );
    std::fs::write(conf.join("10-ptp.conflist"), ptp).unwrap();
    wait_for("the config for the late primary", || {
        cluster_network(&node) == Some(json!("/etc/cni/net.d/10-ptp.conflist"))
    });
    assert!(
        watcher.log().contains("no primary CNI config"),
        "{}",
        watcher.log()
    );
    watcher.terminate();
}

#[test]
fn the_watcher_restores_its_config_after_removal_and_rename() {
    let node = FakeNode::new();
    let watcher = Watcher::start(node.args());
    wait_for("the first config", || node.config().is_some());
    let written = node.config().unwrap();

    std::fs::remove_file(node.path(CONFLIST)).unwrap();
    wait_for("the config back after removal", || {
        node.config() == Some(written.clone())
    });

    // Cilium's exclusive mode renames other configs away.
    let renamed = node.path("/etc/cni/net.d/00-multus-wasm.conflist.cilium_bak");
    std::fs::rename(node.path(CONFLIST), &renamed).unwrap();
    wait_for("the config back after a rename", || {
        node.config() == Some(written.clone())
    });
    assert!(renamed.exists(), "the renamed copy is not ours to touch");
    // Changed content is put back too.
    let mut tampered = written.clone();
    plugin_config_mut(&mut tampered)["clusterNetwork"] = json!("/etc/cni/net.d/99-other.conf");
    std::fs::write(node.path(CONFLIST), tampered.to_string()).unwrap();
    wait_for("the config back after an edit", || {
        node.config() == Some(written.clone())
    });
    watcher.terminate();
}

fn plugin_config_mut(config: &mut Value) -> &mut Value {
    if config.get("plugins").is_some() {
        &mut config["plugins"][0]
    } else {
        config
    }
}

#[test]
fn a_template_edit_is_applied_without_a_restart() {
    let node = FakeNode::new();
    let template_dir = support::scratch();
    let template = template_dir.path().join("config-template.json");
    std::fs::write(&template, json!({"logLevel": "debug"}).to_string()).unwrap();
    let mut args = node.args();
    args.extend(["--config-template".into(), template.display().to_string()]);
    let watcher = Watcher::start(args);
    wait_for("the template's logLevel", || {
        node.config()
            .is_some_and(|config| plugin_config(&config)["logLevel"] == "debug")
    });
    std::fs::write(
        &template,
        json!({"logLevel": "error", "allowedMasters": ["eth9"]}).to_string(),
    )
    .unwrap();
    wait_for("the edited template", || {
        node.config().is_some_and(|config| {
            let ours = plugin_config(&config);
            ours["logLevel"] == "error" && ours["allowedMasters"] == json!(["eth9"])
        })
    });
    // A broken edit keeps the last good template.
    std::fs::write(&template, "{not json").unwrap();
    stays("the last good template", Duration::from_millis(600), || {
        node.config()
            .is_some_and(|config| plugin_config(&config)["logLevel"] == "error")
    });
    watcher.terminate();
}

#[test]
fn a_leftover_multus_config_is_never_the_primary() {
    let node = FakeNode::new();
    let conf = node.path("/etc/cni/net.d");
    std::fs::write(
        conf.join("00-multus.conf"),
        json!({"cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus",
               "delegates": [{"type": "ptp"}]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        conf.join("01-multus-shim.conflist"),
        json!({"cniVersion": "1.0.0", "name": "multus-cni-network",
               "plugins": [{"type": "multus-shim"}]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        conf.join("02-old.conf"),
        json!({"cniVersion": "1.0.0", "name": "x", "type": "multus-wasm-shim"}).to_string(),
    )
    .unwrap();
    let output = install(&node.args());
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        cluster_network(&node),
        Some(json!("/etc/cni/net.d/10-ptp.conflist"))
    );
    assert!(conf.join("00-multus.conf").exists(), "left in place");
}

#[test]
fn a_pinned_primary_and_a_separate_primary_dir() {
    let node = FakeNode::new();
    // Pinned: the later file, not the first by name.
    let mut args = node.args();
    args.extend(["--primary-config".into(), "99-other.conf".into()]);
    let output = install(&args);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        cluster_network(&node),
        Some(json!("/etc/cni/net.d/99-other.conf"))
    );

    // Another dir, pinned, absent at first: no config is written from the
    // conf dir's configs; the watcher writes it when the pinned one appears.
    std::fs::remove_file(node.path("/etc/cni/net.d/00-multus-wasm.conf")).unwrap();
    let mut args = node.args();
    args.extend([
        "--primary-conf-dir".into(),
        "/etc/cni/primary".into(),
        "--primary-config".into(),
        "10-calico.conflist".into(),
    ]);
    let output = install(&args);
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["waitingForPrimary"],
        "/etc/cni/primary/10-calico.conflist"
    );
    assert!(node.config().is_none());
    let watcher = Watcher::start(args);
    stays(
        "waiting for the pinned primary",
        Duration::from_millis(600),
        || node.config().is_none(),
    );
    let primary_dir = node.path("/etc/cni/primary");
    std::fs::create_dir_all(&primary_dir).unwrap();
    std::fs::write(
        primary_dir.join("05-first.conflist"),
        json!({"cniVersion": "1.0.0", "name": "first", "plugins": [{"type": "bridge"}]})
            .to_string(),
    )
    .unwrap();
    std::fs::write(
        primary_dir.join("10-calico.conflist"),
        json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "calico"}]})
            .to_string(),
    )
    .unwrap();
    wait_for("the config for the pinned primary in its dir", || {
        cluster_network(&node) == Some(json!("/etc/cni/primary/10-calico.conflist"))
    });
    watcher.terminate();

    // The dir alone: its first config.
    std::fs::remove_file(node.path(CONFLIST)).unwrap();
    let mut args = node.args();
    args.extend(["--primary-conf-dir".into(), "/etc/cni/primary".into()]);
    let output = install(&args);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        cluster_network(&node),
        Some(json!("/etc/cni/primary/05-first.conflist"))
    );
}

#[test]
fn the_readiness_indicator_and_the_multus_flags_go_into_the_config() {
    let node = FakeNode::new();
    let mut args = node.args();
    args.extend(
        [
            "--readiness-indicator-file=/run/flannel/subnet.env",
            "--multus-log-level=verbose",
            "--multus-log-file=/var/log/multus-wasm.log",
            "--multus-kubeconfig-file-host=/etc/cni/net.d/multus.d/multus.kubeconfig",
            "--cleanup-config-on-exit",
        ]
        .map(String::from),
    );
    // The indicator does not exist: install still succeeds and writes the
    // config; the calls wait for it.
    let output = install(&args);
    assert!(output.status.success(), "{output:?}");
    let config = node.config().expect("written before the indicator exists");
    let ours = plugin_config(&config);
    assert_eq!(ours["readinessindicatorfile"], "/run/flannel/subnet.env");
    assert_eq!(ours["logLevel"], "verbose");
    assert_eq!(ours["logFile"], "/var/log/multus-wasm.log");
    assert_eq!(
        ours["kubeconfig"],
        "/etc/cni/net.d/multus.d/multus.kubeconfig"
    );
    // The host's parser reads them (what every call does).
    let parsed = multus_wasm::config::MultusConfig::parse(&serde_json::to_vec(ours).unwrap())
        .expect("the generated config parses")
        .config;
    assert_eq!(
        parsed.readiness_indicator_file,
        Some(PathBuf::from("/run/flannel/subnet.env"))
    );
    // A level the host would refuse is refused here.
    let mut bad = node.args();
    bad.push("--multus-log-level=loud".into());
    assert_eq!(install(&bad).status.code(), Some(2));
}

/// Every file under `root` (not directories), with its content.
fn files_below(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn uninstall_removes_exactly_ours() {
    let node = FakeNode::new();
    // What is not ours: others' binaries, Multus's files, something else in
    // the state dir.
    for (path, bytes) in [
        ("/opt/cni/bin/ptp", &b"ptp"[..]),
        ("/opt/cni/bin/multus", b"multus"),
        ("/etc/cni/net.d/00-multus.conf.cilium_bak", b"{}"),
        ("/etc/cni/net.d/multus.d/multus.kubeconfig", b"theirs"),
        ("/var/lib/multus-wasm/notes", b"keep"),
    ] {
        std::fs::create_dir_all(node.path(path).parent().unwrap()).unwrap();
        std::fs::write(node.path(path), bytes).unwrap();
    }
    let before = files_below(node.root.path());

    let account = support::scratch();
    std::fs::write(account.path().join("token"), "t\n").unwrap();
    std::fs::write(account.path().join("ca.crt"), "ca\n").unwrap();
    let mut args = node.args();
    args.extend([
        "--kubeconfig-from-service-account".into(),
        "--service-account-dir".into(),
        account.path().display().to_string(),
    ]);
    let output = Command::new(support::binary())
        .args(&args)
        .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    // The thick files too, and a copy Cilium renamed away.
    let mut thick = node.args();
    thick.extend([
        "--mode=thick".into(),
        "--shim-binary".into(),
        support::binary().display().to_string(),
    ]);
    assert!(install(&thick).status.success());
    std::fs::copy(
        node.path(CONFLIST),
        node.path("/etc/cni/net.d/00-multus-wasm.conflist.cilium_bak"),
    )
    .unwrap();
    for ours in [
        "/opt/cni/bin/multus-wasm",
        "/opt/cni/bin/multus-wasm-shim",
        "/etc/cni/net.d/multus.d/multus-wasm.kubeconfig",
        "/var/lib/multus-wasm/daemon.conf",
        "/var/lib/multus-wasm/cache",
        "/var/lib/multus-wasm/plugins",
    ] {
        assert!(node.path(ours).exists(), "{ours} installed");
    }

    let uninstall = |node: &FakeNode| {
        let output = Command::new(support::binary())
            .args(["uninstall", "--host-root"])
            .arg(node.root.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let report = uninstall(&node);
    assert!(
        report["removed"]
            .as_array()
            .unwrap()
            .contains(&json!("/etc/cni/net.d/00-multus-wasm.conflist.cilium_bak")),
        "{report}"
    );
    assert_eq!(
        files_below(node.root.path()),
        before,
        "exactly what install wrote is gone, the rest untouched"
    );
    // Again: nothing left to remove, and no error.
    assert_eq!(uninstall(&node)["removed"], json!([]));
}

/// `install --check=<probe>` against a watcher's status file.
fn check(probe: &str, status_file: &Path, max_age: u64) -> Output {
    install(&[
        "install".into(),
        format!("--check={probe}"),
        format!("--status-file={}", status_file.display()),
        format!("--check-max-age-seconds={max_age}"),
    ])
}

#[test]
fn the_probes_follow_the_watcher_waiting_ready_and_stuck() {
    let node = FakeNode::new();
    let conf = node.path("/etc/cni/net.d");
    let ptp = std::fs::read(conf.join("10-ptp.conflist")).unwrap();
    std::fs::remove_file(conf.join("10-ptp.conflist")).unwrap();
    std::fs::remove_file(conf.join("99-other.conf")).unwrap();
    let status_dir = support::scratch();
    let status_file = status_dir.path().join("watch.json");
    // Before the first round: neither probe passes.
    assert!(!check("alive", &status_file, 30).status.success());

    let mut args = node.args();
    args.push(format!("--status-file={}", status_file.display()));
    let watcher = Watcher::start(args);
    wait_for("the first round", || status_file.exists());
    // Waiting for the primary: alive (kubelet must not restart it), not
    // ready, saying why.
    assert!(check("alive", &status_file, 30).status.success());
    let waiting = check("ready", &status_file, 30);
    assert!(!waiting.status.success());
    let message = String::from_utf8_lossy(&waiting.stdout);
    assert!(message.contains("no primary CNI config"), "{message}");

    std::fs::write(conf.join("10-ptp.conflist"), ptp).unwrap();
    wait_for("ready once the primary appears", || {
        check("ready", &status_file, 30).status.success()
    });
    assert!(node.config().is_some());

    // A watcher that no longer completes rounds is not alive.
    watcher.terminate();
    std::thread::sleep(Duration::from_millis(2100));
    let stuck = check("alive", &status_file, 1);
    assert!(!stuck.status.success());
    assert!(
        String::from_utf8_lossy(&stuck.stdout).contains("stuck"),
        "{stuck:?}"
    );
}

/// The thin DaemonSet's containers (deploy/base/daemonset.yaml).
fn thin_containers() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base/daemonset.yaml");
    let daemonset: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let pod = &daemonset["spec"]["template"]["spec"];
    pod["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(pod["containers"].as_array().unwrap())
        .cloned()
        .collect()
}

/// The bit of a capability in /proc/<pid>/status masks.
fn capability_bit(name: &str) -> u32 {
    match name {
        "CHOWN" => 0,
        "DAC_OVERRIDE" => 1,
        "DAC_READ_SEARCH" => 2,
        "FOWNER" => 3,
        "FSETID" => 4,
        other => panic!("the thin containers should not need CAP_{other}"),
    }
}

#[test]
fn the_thin_containers_install_and_watch_with_only_the_capabilities_they_are_granted() {
    support::require_root();
    for container in thin_containers() {
        let name = container["name"].as_str().unwrap().to_string();
        let security = &container["securityContext"];
        assert_ne!(
            security["privileged"], true,
            "{name} must not be privileged"
        );
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
        let granted: Vec<&str> = security["capabilities"]["add"]
            .as_array()
            .map(|caps| caps.iter().map(|cap| cap.as_str().unwrap()).collect())
            .unwrap_or_default();
        let bounding = std::iter::once("-all".to_string())
            .chain(granted.iter().map(|cap| format!("+{}", cap.to_lowercase())))
            .collect::<Vec<_>>()
            .join(",");
        let setpriv = |args: &[String]| {
            Command::new("setpriv")
                .arg(format!("--bounding-set={bounding}"))
                .arg("--inh-caps=-all")
                .arg("--no-new-privs")
                .args(args)
                .output()
                .expect("setpriv (util-linux)")
        };
        // What the container would hold: exactly the granted capabilities.
        let status = setpriv(&["cat".into(), "/proc/self/status".into()]);
        let effective = String::from_utf8_lossy(&status.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("CapEff:"))
            .map(|mask| u64::from_str_radix(mask.trim(), 16).unwrap())
            .unwrap();
        let wanted = granted
            .iter()
            .fold(0u64, |mask, cap| mask | 1 << capability_bit(cap));
        assert_eq!(effective, wanted, "{name}: the restriction is in force");

        // The install step, then one round of the watcher, on a node whose
        // dirs are root's (as hostPath DirectoryOrCreate makes them).
        let node = FakeNode::new();
        let mut args = vec![support::binary().display().to_string()];
        args.extend(node.args());
        let installed = setpriv(&args);
        assert!(
            installed.status.success(),
            "{name}: install needs more than {granted:?}: {}{}",
            String::from_utf8_lossy(&installed.stdout),
            String::from_utf8_lossy(&installed.stderr)
        );
        assert!(node.config().is_some(), "{name}");
        assert!(node.path("/opt/cni/bin/multus-wasm").exists(), "{name}");
        let status_dir = support::scratch();
        let status_file = status_dir.path().join("watch.json");
        std::fs::remove_file(node.path(CONFLIST)).unwrap();
        args.extend([
            "--watch".into(),
            "--interval-ms=100".into(),
            format!("--status-file={}", status_file.display()),
        ]);
        let log = support::scratch();
        let child = Command::new("setpriv")
            .arg(format!("--bounding-set={bounding}"))
            .args(["--inh-caps=-all", "--no-new-privs"])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let watcher = Watcher { child, log };
        wait_for("the restricted watcher restores the config", || {
            node.config().is_some() && check("ready", &status_file, 30).status.success()
        });
        watcher.terminate();
    }
}
