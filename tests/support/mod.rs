//! Shared by the integration tests: unique names, network namespaces that
//! clean up after themselves, the built guests with their digests, and
//! running the real `multus-wasm` binary (see [`binary`]) with the CNI
//! protocol.
//!
//! Every test that touches the kernel uses its own "node" namespace (with its
//! own veth `ens3`), its own pod namespaces and its own directories, so the
//! tests run in parallel and leave nothing behind even when they fail.

#![allow(dead_code)]

pub use fake_apiserver as apiserver;
pub mod cluster;
pub mod podresources;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

use serde_json::{Value, json};

/// The `multus-wasm` executable under test: `<target>/<profile>/multus-wasm`,
/// where cargo put it, beside the `deps/` directory that holds this test
/// executable (`<target>/<profile>/deps/<suite>-<hash>`).
///
/// cargo sets `CARGO_BIN_EXE_multus-wasm` only for the host package's own
/// tests, and these suites are another package, so nothing builds the binary
/// for them: `cargo build -p multus-wasm` does (so do `cargo xtask test` and
/// `cargo test --workspace`). Panics, saying so, when it is missing or when a
/// source file it was built from is newer than it (the file list is its
/// dep-info `multus-wasm.d`, the one cargo checks itself), so a suite never
/// runs a stale binary.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(locate_binary)
}

fn locate_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().filter(|dir| dir.ends_with("deps"));
    let Some(profile_dir) = deps.and_then(Path::parent) else {
        panic!(
            "{} is not in a cargo target directory (<target>/<profile>/deps/): \
             cannot find multus-wasm beside it",
            exe.display()
        );
    };
    let build = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => "cargo build -p multus-wasm".to_string(),
        Some("release") => "cargo build -p multus-wasm --release".to_string(),
        Some(profile) => format!("cargo build -p multus-wasm --profile {profile}"),
        None => "cargo build -p multus-wasm".to_string(),
    };
    let binary = profile_dir.join("multus-wasm");
    let built = modified(&binary).unwrap_or_else(|err| {
        panic!(
            "{}: {err}: build it first: {build} (cargo xtask test does this)",
            binary.display()
        )
    });
    let dep_info = profile_dir.join("multus-wasm.d");
    if let Ok(text) = std::fs::read_to_string(&dep_info) {
        for source in dep_info_sources(&text) {
            let changed = modified(&source).map_or(true, |time| time > built);
            assert!(
                !changed,
                "{} is older than {} (changed or removed since it was built): \
                 rebuild it: {build} (cargo xtask test does this)",
                binary.display(),
                source.display()
            );
        }
    }
    binary
}

fn modified(path: &Path) -> std::io::Result<SystemTime> {
    std::fs::metadata(path)?.modified()
}

/// The prerequisites of a Makefile-style dep-info file (`target: a b\ c`).
fn dep_info_sources(text: &str) -> Vec<PathBuf> {
    let mut sources = Vec::new();
    for line in text.lines() {
        let Some((_, prerequisites)) = line.split_once(": ") else {
            continue;
        };
        let mut current = String::new();
        let mut chars = prerequisites.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => current.extend(chars.next()),
                ' ' | '\t' => {
                    if !current.is_empty() {
                        sources.push(PathBuf::from(std::mem::take(&mut current)));
                    }
                }
                _ => current.push(c),
            }
        }
        if !current.is_empty() {
            sources.push(PathBuf::from(current));
        }
    }
    sources
}

/// Fail (never skip) when the test cannot run here.
pub fn require_root() {
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "this test creates network namespaces and must run as root (cargo xtask test does)"
    );
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call: `<prefix><pid><n>`,
/// at most 15 bytes so it can name an interface.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let name = format!("{prefix}{:x}{n:x}", std::process::id() % 0xfffff);
    assert!(name.len() <= 15, "{name} is too long for an interface name");
    name
}

pub fn sh(args: &[&str]) -> String {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn sh_ok(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
    /// Links the kernel created with the namespace besides `lo`: the
    /// fallback devices of loaded tunnel modules (`tunl0` with ipip, as on
    /// Calico nodes, `sit0`, `gre0`, ...), which depend on the host.
    pub host_links: Vec<String>,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        sh(&["ip", "netns", "add", &name]);
        let mut netns = Netns {
            name,
            host_links: Vec::new(),
        };
        netns.host_links = all_link_names(&netns)
            .into_iter()
            .filter(|link| link != "lo")
            .collect();
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// `ip -n <ns> <args>`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    pub fn has_link(&self, name: &str) -> bool {
        sh_ok(&["ip", "-n", &self.name, "link", "show", "dev", name])
    }

    /// `ip -j` output of `args`, parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["ip", "-j", "-n", &self.name];
        full.extend_from_slice(args);
        serde_json::from_str(&sh(&full)).unwrap_or(Value::Null)
    }

    /// IPv4 and IPv6 addresses of `dev` as `addr/prefix`.
    pub fn addresses(&self, dev: &str) -> Vec<String> {
        let value = self.ip_json(&["addr", "show", "dev", dev]);
        value[0]["addr_info"]
            .as_array()
            .map(|infos| {
                infos
                    .iter()
                    .filter(|info| info["scope"] != "link")
                    .map(|info| {
                        format!(
                            "{}/{}",
                            info["local"].as_str().unwrap_or(""),
                            info["prefixlen"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The sysctl `key` (dotted or slashed) inside the namespace.
    pub fn sysctl(&self, key: &str) -> String {
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.name,
            "cat",
            &format!("/proc/sys/{}", key.replace('.', "/")),
        ])
        .trim()
        .to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Names of the links of `netns`, sorted, without the ones the host's
/// kernel put in every new namespace ([`Netns::host_links`]): `["lo"]` for
/// a namespace nothing was added to, on any host.
pub fn link_names(netns: &Netns) -> Vec<String> {
    all_link_names(netns)
        .into_iter()
        .filter(|link| !netns.host_links.contains(link))
        .collect()
}

fn all_link_names(netns: &Netns) -> Vec<String> {
    let mut names: Vec<String> = netns
        .ip_json(&["link", "show"])
        .as_array()
        .map(|links| {
            links
                .iter()
                .filter_map(|link| link["ifname"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A node: a namespace holding `ens3` (one end of a veth pair, up), where
/// the CNI binary runs.
pub struct Node {
    pub netns: Netns,
    pub master: String,
}

impl Node {
    pub fn new() -> Node {
        Self::with_master("ens3")
    }

    pub fn with_master(master: &str) -> Node {
        require_root();
        let netns = Netns::new("mwn");
        netns.ip(&[
            "link",
            "add",
            master,
            "type",
            "veth",
            "peer",
            "name",
            "ens3-peer",
        ]);
        netns.ip(&["link", "set", master, "up"]);
        netns.ip(&["link", "set", "ens3-peer", "up"]);
        Node {
            netns,
            master: master.into(),
        }
    }
}

/// A guest's path and sha256.
pub fn plugin(path: &str) -> Value {
    let bytes = std::fs::read(path).expect("built guest");
    json!({"path": path, "sha256": sha256_hex(&bytes)})
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The shipped plugins, registered by type.
pub fn shipped_plugins() -> Value {
    json!({
        "macvlan": plugin(test_artifacts::MACVLAN),
        "host-local": plugin(test_artifacts::HOST_LOCAL),
        "static": plugin(test_artifacts::STATIC),
        "tuning": plugin(test_artifacts::TUNING),
    })
}

/// A scratch directory for one test (removed on drop).
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mwtest-")
        .tempdir()
        .expect("temporary directory")
}

/// A host config in delegates mode (Multus's no-cluster mode) with our
/// plugins registered and every directory under `dir`.
pub fn delegates_config(dir: &Path, delegates: Vec<Value>) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "multus-wasm-test",
        "type": "multus-wasm",
        "delegates": delegates,
        "binDir": "/usr/lib/cni",
        "cniDir": dir.join("cni"),
        "confDir": dir.join("net.d"),
        "manifestDir": dir.join("manifests"),
        "ipamDataRoots": [dir],
        "wasmCacheDir": dir.join("cache"),
        "wasmPlugins": shipped_plugins(),
        "logFile": dir.join("multus-wasm.log"),
        "logLevel": "debug",
        "logToStderr": false
    })
}

/// The seed's macvlan netconf with host-local state under `data_dir`.
pub fn seed_netconf(data_dir: &Path) -> Value {
    json!({
        "cniVersion": "0.3.0",
        "name": "macvlan-conf",
        "type": "macvlan",
        "master": "ens3",
        "mode": "bridge",
        "ipam": {
            "type": "host-local",
            "subnet": "192.168.1.0/24",
            "rangeStart": "192.168.1.200",
            "rangeEnd": "192.168.1.216",
            "routes": [{"dst": "0.0.0.0/0"}],
            "gateway": "192.168.1.1",
            "dataDir": data_dir
        }
    })
}

/// A CNI invocation: env + stdin, run inside the node namespace.
pub struct Cni<'a> {
    pub node: &'a Node,
    pub binary: PathBuf,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub extra_env: Vec<(String, String)>,
}

pub struct CniOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CniOutput {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| {
            panic!(
                "stdout is not JSON ({err}): {:?} stderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "CNI call failed: stdout {} stderr {}",
            self.stdout, self.stderr
        );
        self
    }

    /// The CNI error code printed on failure.
    pub fn error_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected a failure, got {}", self.stdout);
        self.json()["code"]
            .as_u64()
            .expect("error JSON with a code")
    }
}

impl<'a> Cni<'a> {
    pub fn new(node: &'a Node, pod: &Netns, container_id: &str) -> Cni<'a> {
        Cni {
            node,
            binary: binary().to_path_buf(),
            container_id: container_id.into(),
            netns: pod.path(),
            ifname: "eth0".into(),
            args: String::new(),
            extra_env: Vec::new(),
        }
    }

    pub fn call(&self, command: &str, config: &Value) -> CniOutput {
        self.call_raw(
            command,
            serde_json::to_vec(config).expect("json").as_slice(),
        )
    }

    pub fn call_raw(&self, command: &str, stdin: &[u8]) -> CniOutput {
        self.call_bounded(command, stdin, None)
    }

    /// Like [`Cni::call`], failing the test (after killing the process) if
    /// the call runs longer than `limit`: a bound on a hang, not a timing.
    pub fn call_within(
        &self,
        command: &str,
        config: &Value,
        limit: std::time::Duration,
    ) -> CniOutput {
        let stdin = serde_json::to_vec(config).expect("json");
        self.call_bounded(command, &stdin, Some(limit))
    }

    fn call_bounded(
        &self,
        command: &str,
        stdin: &[u8],
        limit: Option<std::time::Duration>,
    ) -> CniOutput {
        let mut child = Command::new("ip");
        child
            .args(["netns", "exec", &self.node.netns.name])
            .arg(&self.binary)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", &self.netns)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_PATH", "/usr/lib/cni")
            .env("CNI_ARGS", &self.args)
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut spawned = child.spawn().expect("spawn multus-wasm");
        spawned
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("write stdin");
        if let Some(limit) = limit {
            let started = std::time::Instant::now();
            while spawned.try_wait().expect("try_wait").is_none() {
                if started.elapsed() > limit {
                    let _ = spawned.kill();
                    let _ = spawned.wait();
                    panic!("{command} still running after {limit:?}: it hangs");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        let output: Output = spawned.wait_with_output().expect("wait");
        CniOutput {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Files in a directory (empty when it does not exist).
pub fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
