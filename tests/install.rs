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
