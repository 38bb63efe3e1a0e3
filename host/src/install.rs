//! `multus-wasm install`: what the DaemonSet runs on every node (and what an
//! operator can run by hand).
//!
//! 1. Copy this binary atomically into the host's CNI bin dir (a temporary
//!    file renamed over the old one, so a runtime executing the old binary
//!    never sees "text file busy" or a torn file).
//! 2. Install the plugins shipped in a directory (the mounted ConfigMap):
//!    each is checked against the sha256 pinned in the plugin manifest and
//!    refused on mismatch (the others still install), copied into the
//!    node's state dir and precompiled into the node's cache, so the first
//!    CNI call does not compile. The manifest only selects files inside
//!    the plugin dir, it never names a path: types must be
//!    `[a-z0-9][a-z0-9-]*` (they name the installed file), files plain names
//!    opened through a `cap_std` directory (symlinks are followed only while
//!    they stay inside, as the ConfigMap's `<name> -> ..data/<name>` do),
//!    non-blocking, regular and at most [`MAX_PLUGIN_BYTES`]. A refused
//!    entry is logged by its name and reason only, never its digest.
//! 3. Write the host config like Multus's auto mode: the alphabetically first
//!    primary config in the CNI conf dir (skipping our own) becomes the
//!    `clusterNetwork`; written atomically as `00-multus-wasm.conf` (or
//!    `.conflist` for cniVersion >= 1.0.0).
//! 4. With `--watch`, keep the config in step when the primary config or the
//!    plugin directory changes (the ConfigMap mount's symlink swap), and
//!    remove our config on shutdown when asked.
//!
//! Every path is a host path; `--host-root` is where the host's root is
//! mounted in the container (`/host`), so the files are reached at
//! `<host-root><path>` and written into the config as `<path>`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::cni::CniVersion;
use crate::config::WasmLimits;
use crate::sandbox::{Limits, Sandbox, sha256_hex};

/// Our config's file name prefix; never taken as the primary config.
pub const OUR_CONFIG_PREFIX: &str = "00-multus-wasm";

/// The plugin manifest's name in the plugin dir.
pub const MANIFEST_FILE: &str = "plugins.json";

/// The largest plugin file install reads (4 MiB). A ConfigMap holds at most
/// 1 MiB, so no shipped plugin comes near it; the cap only keeps a hostile
/// entry (a huge or endless file) from being read without bound.
pub const MAX_PLUGIN_BYTES: u64 = 4 << 20;

/// The largest plugin manifest install reads (64 KiB).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 10;

/// The longest plugin type (a DNS label's 63 bytes).
pub const MAX_TYPE_LEN: usize = 63;

#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// Where the host's root is mounted (`/` when run on the host).
    pub host_root: PathBuf,
    /// The host's CNI bin dir.
    pub bin_dir: PathBuf,
    /// The host's CNI conf dir.
    pub conf_dir: PathBuf,
    /// The node's state dir: plugins and the compiled-code cache.
    pub state_dir: PathBuf,
    /// The shipped plugins (a container path: the mounted ConfigMap).
    pub plugin_dir: PathBuf,
    /// Extra host-config fields (kubeconfig, logFile, wasmLimits,
    /// allowedMasters, ...), merged into the generated config.
    pub config_template: Map<String, Value>,
    /// The binary to install (default: this executable).
    pub binary: Option<PathBuf>,
    pub skip_binary_copy: bool,
    /// Wait for this file (a host path) before writing the config.
    pub readiness_indicator_file: Option<PathBuf>,
    /// Write a kubeconfig for the host binary from this service-account
    /// directory (token, ca.crt; a container path) and the
    /// KUBERNETES_SERVICE_HOST/PORT environment.
    pub service_account_dir: Option<PathBuf>,
    /// Thick mode: install the shim, point kubelet at it, and write the host
    /// config for the daemon instead.
    pub thick: Option<ThickInstall>,
}

/// What thick mode installs besides the plugins.
#[derive(Debug, Clone)]
pub struct ThickInstall {
    /// The daemon's socket directory (a host path, written into the shim's
    /// config as `daemonSocketDir`).
    pub socket_dir: PathBuf,
    /// The shim binary to install (default: `multus-wasm-shim` next to this
    /// executable).
    pub shim: Option<PathBuf>,
}

/// The daemon's config in the state dir (thick mode): the host config plus
/// `socketDir`.
pub const DAEMON_CONFIG: &str = "daemon.conf";

/// One entry of the plugin manifest (`plugins.json` in the plugin dir).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ManifestEntry {
    pub file: String,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("no primary CNI config in {0} (waiting for the cluster network to write one)")]
    NoPrimary(PathBuf),
    #[error("plugin manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("still waiting for the readiness indicator file {0}")]
    NotReady(PathBuf),
}

/// Why a plugin type or file of the manifest is refused, or a file of the
/// plugin dir could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PluginFileError {
    #[error("invalid plugin type {name:?}: {reason}")]
    InvalidType { name: String, reason: &'static str },
    #[error("invalid file name {name:?}: {reason}")]
    InvalidFileName { name: String, reason: &'static str },
    #[error("cannot open {name:?} inside the plugin dir: {source}")]
    Open {
        name: String,
        source: std::io::Error,
    },
    #[error("{name:?} is not a regular file (a {kind})")]
    NotRegular { name: String, kind: &'static str },
    #[error("{name:?} is larger than the {cap}-byte cap")]
    TooLarge { name: String, cap: u64 },
    #[error("cannot read {name:?}: {source}")]
    Read {
        name: String,
        source: std::io::Error,
    },
}

/// A plugin type (a manifest key): `[a-z0-9][a-z0-9-]*`, at most
/// [`MAX_TYPE_LEN`] bytes. It names the installed file, so it can never be
/// a path.
pub fn check_plugin_type(name: &str) -> Result<(), PluginFileError> {
    let invalid = |reason| PluginFileError::InvalidType {
        name: name.to_string(),
        reason,
    };
    let bytes = name.as_bytes();
    match bytes.first() {
        None => return Err(invalid("it is empty")),
        Some(first) if !(first.is_ascii_lowercase() || first.is_ascii_digit()) => {
            return Err(invalid("it must start with a-z or 0-9"));
        }
        Some(_) => {}
    }
    if bytes.len() > MAX_TYPE_LEN {
        return Err(invalid("it is longer than 63 bytes"));
    }
    if !bytes
        .iter()
        .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'-')
    {
        return Err(invalid("only a-z, 0-9 and '-' are allowed"));
    }
    Ok(())
}

/// A manifest `file`: a plain name inside the plugin dir (no `/`, not `.`
/// or `..`, no NUL, not empty).
pub fn check_file_name(name: &str) -> Result<(), PluginFileError> {
    let invalid = |reason| PluginFileError::InvalidFileName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name == "." || name == ".." {
        return Err(invalid("it names a directory"));
    }
    if name.contains('/') {
        return Err(invalid(
            "it must be a plain name in the plugin dir, not a path",
        ));
    }
    if name.contains('\0') {
        return Err(invalid("it contains a NUL byte"));
    }
    Ok(())
}

/// Open the plain file `name` inside `dir` and read it whole, if it is a
/// regular file of at most `cap` bytes. The open cannot leave `dir` (a
/// symlink is followed only while it stays inside), is non-blocking (a FIFO
/// cannot hang us) and the type and size are checked on the opened handle;
/// at most `cap + 1` bytes are ever read.
pub fn read_in_dir(dir: &Dir, name: &str, cap: u64) -> Result<Vec<u8>, PluginFileError> {
    check_file_name(name)?;
    let mut options = OpenOptions::new();
    options
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32);
    let file = dir
        .open_with(name, &options)
        .map_err(|source| PluginFileError::Open {
            name: name.to_string(),
            source,
        })?;
    let read_error = |source| PluginFileError::Read {
        name: name.to_string(),
        source,
    };
    let metadata = file.metadata().map_err(read_error)?;
    if !metadata.is_file() {
        return Err(PluginFileError::NotRegular {
            name: name.to_string(),
            kind: file_kind(&metadata.file_type()),
        });
    }
    let too_large = || PluginFileError::TooLarge {
        name: name.to_string(),
        cap,
    };
    if metadata.len() > cap {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    Ok(bytes)
}

fn file_kind(file_type: &cap_std::fs::FileType) -> &'static str {
    use cap_std::fs::FileTypeExt;
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_fifo() {
        "fifo"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// The plugin dir, for [`read_in_dir`].
fn open_plugin_dir(plugin_dir: &Path) -> std::io::Result<Dir> {
    Dir::open_ambient_dir(plugin_dir, cap_std::ambient_authority())
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> InstallError {
    InstallError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// What one install pass did.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallReport {
    pub binary: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub primary: Option<PathBuf>,
    /// type -> installed path (host path)
    pub installed: BTreeMap<String, PathBuf>,
    /// type -> why it was refused
    pub refused: BTreeMap<String, String>,
    /// types compiled by this pass (the others were already cached)
    pub compiled: Vec<String>,
    /// thick mode: the daemon's config (host path)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon_config: Option<PathBuf>,
}

impl InstallOptions {
    /// `<host-root><path>`: a host path as seen from here.
    pub fn local(&self, host_path: &Path) -> PathBuf {
        let relative = host_path.strip_prefix("/").unwrap_or(host_path);
        self.host_root.join(relative)
    }

    fn limits(&self) -> Limits {
        let wasm_limits: WasmLimits = self
            .config_template
            .get("wasmLimits")
            .and_then(|value| serde_json::from_value(value.clone()).ok())
            .unwrap_or_default();
        Limits::from_config(&wasm_limits)
    }
}

/// Copy `source` to `destination` atomically with `mode`.
fn install_file(source: &Path, destination: &Path, mode: u32) -> Result<(), InstallError> {
    let bytes = std::fs::read(source).map_err(|err| file_error(source, err))?;
    write_file(&bytes, destination, mode)
}

/// Write `bytes` to `destination` atomically with `mode`.
fn write_file(bytes: &[u8], destination: &Path, mode: u32) -> Result<(), InstallError> {
    if let Some(parent) = destination.parent() {
        std::fs::create_dir_all(parent).map_err(|err| file_error(parent, err))?;
    }
    crate::store::write_atomically(destination, bytes, mode)
        .map_err(|err| file_error(destination, err))
}

/// The plugin manifest of a plugin dir: `plugins.json`, `{"<type>": {"file", "sha256"}}`.
pub fn read_manifest(plugin_dir: &Path) -> Result<BTreeMap<String, ManifestEntry>, InstallError> {
    let dir = open_plugin_dir(plugin_dir).map_err(|err| InstallError::Manifest {
        path: plugin_dir.join(MANIFEST_FILE),
        reason: format!("cannot open the plugin dir: {err}"),
    })?;
    read_manifest_in(&dir, plugin_dir)
}

/// The manifest in the opened plugin dir (`plugin_dir` names it in errors).
fn read_manifest_in(
    dir: &Dir,
    plugin_dir: &Path,
) -> Result<BTreeMap<String, ManifestEntry>, InstallError> {
    let path = plugin_dir.join(MANIFEST_FILE);
    let text = read_in_dir(dir, MANIFEST_FILE, MAX_MANIFEST_BYTES).map_err(|err| {
        InstallError::Manifest {
            path: path.clone(),
            reason: err.to_string(),
        }
    })?;
    serde_json::from_slice(&text).map_err(|err| InstallError::Manifest {
        path,
        reason: err.to_string(),
    })
}

/// The primary config: the lexically first `.conf`/`.conflist`/`.json` in
/// the conf dir that is not ours.
pub fn find_primary(conf_dir: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(conf_dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            path.is_file()
                && !name.starts_with(OUR_CONFIG_PREFIX)
                && matches!(
                    path.extension().and_then(|ext| ext.to_str()),
                    Some("conf" | "conflist" | "json")
                )
        })
        .collect();
    candidates.sort();
    candidates.into_iter().next()
}

/// Capabilities the primary declares (top level or any plugin), which the
/// runtime then passes to us.
fn capabilities(primary: &Value) -> Map<String, Value> {
    let mut capabilities = Map::new();
    let mut collect = |value: &Value| {
        if let Some(map) = value.get("capabilities").and_then(Value::as_object) {
            for (name, enabled) in map {
                if enabled.as_bool() == Some(true) {
                    capabilities.insert(name.clone(), Value::Bool(true));
                }
            }
        }
    };
    collect(primary);
    for plugin in primary
        .get("plugins")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        collect(plugin);
    }
    capabilities
}

/// Verify, copy and precompile the plugins; returns the `wasmPlugins`
/// entries (host paths) of those that passed.
fn install_plugins(
    options: &InstallOptions,
    report: &mut InstallReport,
) -> Result<Map<String, Value>, InstallError> {
    let plugin_dir =
        open_plugin_dir(&options.plugin_dir).map_err(|err| file_error(&options.plugin_dir, err))?;
    let manifest = read_manifest_in(&plugin_dir, &options.plugin_dir)?;
    let cache_dir = options.state_dir.join("cache");
    let sandbox = Sandbox::new(options.limits(), Some(&options.local(&cache_dir)))
        .map_err(|err| file_error(&cache_dir, err))?;
    let mut registered = Map::new();
    for (plugin_type, entry) in manifest {
        let outcome = (|| {
            check_plugin_type(&plugin_type).map_err(|err| err.to_string())?;
            let bytes = read_in_dir(&plugin_dir, &entry.file, MAX_PLUGIN_BYTES)
                .map_err(|err| err.to_string())?;
            let digest = sha256_hex(&bytes);
            if !digest.eq_ignore_ascii_case(&entry.sha256) {
                // Neither digest is repeated: the reason is logged.
                return Err(format!(
                    "{:?} does not have the sha256 the manifest pins: refusing it",
                    entry.file
                ));
            }
            // Named by the checked type and our own digest only.
            let host_path = options
                .state_dir
                .join("plugins")
                .join(format!("{plugin_type}-{digest}.wasm"));
            let local = options.local(&host_path);
            if !local.exists() {
                write_file(&bytes, &local, 0o644).map_err(|err| err.to_string())?;
            }
            let plugin = sandbox
                .load(&plugin_type, &local, Some(&digest))
                .map_err(|err| err.to_string())?;
            Ok((host_path, digest, plugin.cache_outcome))
        })();
        match outcome {
            Ok((host_path, digest, cache_outcome)) => {
                if cache_outcome == crate::sandbox::CacheOutcome::Compiled {
                    report.compiled.push(plugin_type.clone());
                }
                tracing::info!(plugin = %plugin_type, sha256 = %digest, path = %host_path.display(), "plugin installed");
                report
                    .installed
                    .insert(plugin_type.clone(), host_path.clone());
                registered.insert(plugin_type, json!({"path": host_path, "sha256": digest}));
            }
            Err(reason) => {
                // Debug-quoted: a hostile key cannot forge a log line.
                tracing::error!(plugin = ?plugin_type, %reason, "plugin refused");
                report.refused.insert(plugin_type, reason);
            }
        }
    }
    Ok(registered)
}

/// The host config for `primary` (a host path, read at `primary_local`).
fn generate_config(
    options: &InstallOptions,
    primary: &Path,
    primary_value: &Value,
    wasm_plugins: Map<String, Value>,
) -> Value {
    let cni_version = primary_value
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("1.0.0")
        .to_string();
    let mut config = Map::new();
    config.insert("cniVersion".into(), json!(cni_version));
    config.insert("name".into(), json!("multus-wasm-network"));
    config.insert("type".into(), json!("multus-wasm"));
    let capabilities = capabilities(primary_value);
    if !capabilities.is_empty() {
        config.insert("capabilities".into(), Value::Object(capabilities));
    }
    config.insert("clusterNetwork".into(), json!(primary));
    config.insert("binDir".into(), json!(options.bin_dir));
    config.insert(
        "wasmCacheDir".into(),
        json!(options.state_dir.join("cache")),
    );
    config.insert("wasmPlugins".into(), Value::Object(wasm_plugins));
    for (key, value) in &options.config_template {
        if !config.contains_key(key) || key == "name" {
            config.insert(key.clone(), value.clone());
        }
    }
    let value = Value::Object(config);
    let uses_list =
        CniVersion::parse(&cni_version).is_ok_and(|version| version >= CniVersion::V1_0_0);
    if uses_list {
        json!({"cniVersion": cni_version, "name": "multus-wasm-network", "plugins": [value]})
    } else {
        value
    }
}

/// Thick mode's config for kubelet: the shim, pointed at the daemon, with
/// the host config's version and capabilities (so the runtime still passes
/// runtimeConfig), a list for cniVersion >= 1.0.0 as the host config is.
fn shim_config(host_config: &Value, socket_dir: &Path) -> Value {
    let inner = match host_config
        .get("plugins")
        .and_then(|plugins| plugins.get(0))
    {
        Some(plugin) => plugin,
        None => host_config,
    };
    let cni_version = host_config["cniVersion"].clone();
    let mut shim = json!({
        "cniVersion": cni_version,
        "name": "multus-wasm-network",
        "type": "multus-wasm-shim",
        "daemonSocketDir": socket_dir,
    });
    if let Some(capabilities) = inner.get("capabilities") {
        shim["capabilities"] = capabilities.clone();
    }
    if host_config.get("plugins").is_some() {
        json!({"cniVersion": cni_version, "name": "multus-wasm-network", "plugins": [shim]})
    } else {
        shim
    }
}

/// The file name of our config for `config` (`.conflist` for a list).
fn config_file_name(config: &Value) -> &'static str {
    if config.get("plugins").is_some() {
        "00-multus-wasm.conflist"
    } else {
        "00-multus-wasm.conf"
    }
}

/// Remove our config (both spellings).
pub fn remove_config(options: &InstallOptions) {
    for name in ["00-multus-wasm.conf", "00-multus-wasm.conflist"] {
        let _ = std::fs::remove_file(options.local(&options.conf_dir.join(name)));
    }
}

/// One full pass: binary, plugins, config.
pub fn install_once(options: &InstallOptions) -> Result<InstallReport, InstallError> {
    let mut report = InstallReport::default();
    if !options.skip_binary_copy {
        let this =
            || std::env::current_exe().map_err(|err| file_error(Path::new("/proc/self/exe"), err));
        let (source, name) = match &options.thick {
            None => (
                match &options.binary {
                    Some(binary) => binary.clone(),
                    None => this()?,
                },
                "multus-wasm",
            ),
            Some(thick) => (
                match &thick.shim {
                    Some(shim) => shim.clone(),
                    None => this()?.with_file_name("multus-wasm-shim"),
                },
                "multus-wasm-shim",
            ),
        };
        let destination = options.bin_dir.join(name);
        install_file(&source, &options.local(&destination), 0o755)?;
        report.binary = Some(destination);
    }
    let wasm_plugins = install_plugins(options, &mut report)?;
    if let Some(indicator) = &options.readiness_indicator_file {
        let local = options.local(indicator);
        if !local.exists() {
            return Err(InstallError::NotReady(indicator.clone()));
        }
    }
    let conf_dir = options.local(&options.conf_dir);
    let primary_local =
        find_primary(&conf_dir).ok_or_else(|| InstallError::NoPrimary(options.conf_dir.clone()))?;
    let primary_name = primary_local.file_name().expect("a file").to_owned();
    let primary = options.conf_dir.join(&primary_name);
    let primary_value: Value = serde_json::from_slice(
        &std::fs::read(&primary_local).map_err(|err| file_error(&primary_local, err))?,
    )
    .map_err(|err| file_error(&primary_local, format!("not JSON: {err}")))?;
    let mut config = generate_config(options, &primary, &primary_value, wasm_plugins);
    if let Some(kubeconfig) = write_kubeconfig(options)? {
        let target = match config
            .get_mut("plugins")
            .and_then(|plugins| plugins.get_mut(0))
        {
            Some(plugin) => plugin,
            None => &mut config,
        };
        target["kubeconfig"] = json!(kubeconfig);
    }
    if let Some(thick) = &options.thick {
        // The daemon runs the host config; kubelet runs the shim.
        let mut host_config = match config.get("plugins").and_then(|plugins| plugins.get(0)) {
            Some(plugin) => plugin.clone(),
            None => config.clone(),
        };
        host_config["cniVersion"] = config["cniVersion"].clone();
        host_config["socketDir"] = json!(thick.socket_dir);
        let daemon_config = options.state_dir.join(DAEMON_CONFIG);
        let bytes = serde_json::to_vec_pretty(&host_config).expect("json");
        crate::store::write_atomically(&options.local(&daemon_config), &bytes, 0o600)
            .map_err(|err| file_error(&daemon_config, err))?;
        report.daemon_config = Some(daemon_config);
        config = shim_config(&config, &thick.socket_dir);
    }
    let name = config_file_name(&config);
    let stale = if name.ends_with(".conflist") {
        "00-multus-wasm.conf"
    } else {
        "00-multus-wasm.conflist"
    };
    let _ = std::fs::remove_file(conf_dir.join(stale));
    let destination = options.conf_dir.join(name);
    let bytes = serde_json::to_vec_pretty(&config).expect("json");
    crate::store::write_atomically(&options.local(&destination), &bytes, 0o600)
        .map_err(|err| file_error(&destination, err))?;
    tracing::info!(config = %destination.display(), primary = %primary.display(), "host config written");
    report.config = Some(destination);
    report.primary = Some(primary);
    Ok(report)
}

/// Write `<conf-dir>/multus.d/multus-wasm.kubeconfig` (0600) from the
/// service account, with the CA next to it; returns its host path.
fn write_kubeconfig(options: &InstallOptions) -> Result<Option<PathBuf>, InstallError> {
    let Some(account) = &options.service_account_dir else {
        return Ok(None);
    };
    let token_path = account.join("token");
    let token = std::fs::read_to_string(&token_path).map_err(|err| file_error(&token_path, err))?;
    let ca_path = account.join("ca.crt");
    let ca = std::fs::read(&ca_path).map_err(|err| file_error(&ca_path, err))?;
    let host = std::env::var("KUBERNETES_SERVICE_HOST")
        .map_err(|_| file_error(account, "KUBERNETES_SERVICE_HOST is not set"))?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let server = if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    };
    let dir = options.conf_dir.join("multus.d");
    let ca_host_path = dir.join("multus-wasm-ca.crt");
    let kubeconfig_path = dir.join("multus-wasm.kubeconfig");
    std::fs::create_dir_all(options.local(&dir)).map_err(|err| file_error(&dir, err))?;
    crate::store::write_atomically(&options.local(&ca_host_path), &ca, 0o644)
        .map_err(|err| file_error(&ca_host_path, err))?;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: multus-wasm\n  user:\n    token: {}\ncontexts:\n- name: multus-wasm\n  context:\n    cluster: local\n    user: multus-wasm\ncurrent-context: multus-wasm\n",
        ca_host_path.display(),
        token.trim()
    );
    crate::store::write_atomically(
        &options.local(&kubeconfig_path),
        kubeconfig.as_bytes(),
        0o600,
    )
    .map_err(|err| file_error(&kubeconfig_path, err))?;
    Ok(Some(kubeconfig_path))
}

/// A fingerprint of what the config depends on: the primary config's name
/// and content, and the plugin dir's manifest and plugin files (the
/// ConfigMap's `..data` symlink swap changes it).
pub fn fingerprint(options: &InstallOptions) -> String {
    let mut hasher = Vec::new();
    let conf_dir = options.local(&options.conf_dir);
    if let Some(primary) = find_primary(&conf_dir) {
        hasher.extend_from_slice(primary.to_string_lossy().as_bytes());
        hasher.extend(std::fs::read(&primary).unwrap_or_default());
    }
    // Read as install reads it: inside the dir, bounded, regular files only.
    if let Ok(plugin_dir) = open_plugin_dir(&options.plugin_dir) {
        let manifest =
            read_in_dir(&plugin_dir, MANIFEST_FILE, MAX_MANIFEST_BYTES).unwrap_or_default();
        hasher.extend_from_slice(&manifest);
        let entries: BTreeMap<String, ManifestEntry> =
            serde_json::from_slice(&manifest).unwrap_or_default();
        for (plugin_type, entry) in &entries {
            if check_plugin_type(plugin_type).is_ok() {
                hasher.extend(
                    read_in_dir(&plugin_dir, &entry.file, MAX_PLUGIN_BYTES).unwrap_or_default(),
                );
            }
        }
    }
    if let Some(indicator) = &options.readiness_indicator_file {
        hasher.push(options.local(indicator).exists() as u8);
    }
    if let Some(account) = &options.service_account_dir {
        hasher.extend(std::fs::read(account.join("token")).unwrap_or_default());
    }
    sha256_hex(&hasher)
}

/// Install, then keep the config in step until `stop` returns true;
/// with `cleanup`, remove our config at the end.
pub fn watch(
    options: &InstallOptions,
    interval: Duration,
    cleanup: bool,
    stop: &dyn Fn() -> bool,
) -> Result<(), InstallError> {
    let mut last = String::new();
    while !stop() {
        let current = fingerprint(options);
        if current != last {
            match install_once(options) {
                Ok(report) => {
                    tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), "install pass");
                    last = current;
                }
                Err(err) => tracing::warn!(error = %err, "install pass incomplete, retrying"),
            }
        }
        let mut slept = Duration::ZERO;
        while slept < interval && !stop() {
            std::thread::sleep(Duration::from_millis(50));
            slept += Duration::from_millis(50);
        }
    }
    if cleanup {
        remove_config(options);
        tracing::info!("removed our host config on shutdown");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_is_the_first_config_that_is_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "00-multus-wasm.conflist",
            "20-flannel.conflist",
            "10-calico.conflist",
            "05-readme.txt",
        ] {
            std::fs::write(dir.path().join(name), "{}").unwrap();
        }
        assert_eq!(
            find_primary(dir.path()).unwrap(),
            dir.path().join("10-calico.conflist")
        );
    }

    #[test]
    fn capabilities_are_collected_from_the_primary() {
        let primary = json!({"plugins": [{"type": "calico"}, {"type": "portmap", "capabilities": {"portMappings": true}},
                                        {"type": "bandwidth", "capabilities": {"bandwidth": true, "x": false}}]});
        let caps = capabilities(&primary);
        assert_eq!(caps.len(), 2);
        assert_eq!(caps["portMappings"], true);
    }

    #[test]
    fn plugin_types_are_lowercase_labels() {
        for good in ["macvlan", "host-local", "0ptp", "a", &"x".repeat(63)] {
            assert!(check_plugin_type(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-macvlan",
            "Macvlan",
            "mac_vlan",
            "mac.vlan",
            "a/b",
            "../../etc/cron.d/x",
            "..",
            "x\0",
            "x\n",
            "é",
            &"x".repeat(64),
        ] {
            let err = check_plugin_type(bad).expect_err(bad);
            assert!(matches!(err, PluginFileError::InvalidType { .. }));
            assert!(
                err.to_string().contains(&format!("{bad:?}")),
                "the message names the type: {err}"
            );
        }
    }

    #[test]
    fn files_are_plain_names() {
        for good in ["macvlan.wasm", ".hidden", "..data-less", "a b"] {
            assert!(check_file_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "../x", "/dev/zero", "..data/x", "a/", "x\0y"] {
            let err = check_file_name(bad).expect_err(bad);
            assert!(matches!(err, PluginFileError::InvalidFileName { .. }));
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    /// A plugin dir laid out like a ConfigMap mount: the files in
    /// `..2026_12_04_x/`, `..data` -> it, `<name>` -> `..data/<name>`.
    fn configmap(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Dir) {
        let root = tempfile::tempdir().unwrap();
        let mount = root.path().join("mount");
        let data = mount.join("..2026_12_04_x");
        std::fs::create_dir_all(&data).unwrap();
        std::os::unix::fs::symlink("..2026_12_04_x", mount.join("..data")).unwrap();
        for (name, bytes) in files {
            std::fs::write(data.join(name), bytes).unwrap();
            std::os::unix::fs::symlink(format!("..data/{name}"), mount.join(name)).unwrap();
        }
        let dir = open_plugin_dir(&mount).unwrap();
        (root, dir)
    }

    #[test]
    fn the_configmap_layout_is_read_through_its_symlinks() {
        let (_root, dir) = configmap(&[("plugins.json", b"{}"), ("a.wasm", b"\0asm")]);
        assert_eq!(read_in_dir(&dir, "a.wasm", 4).unwrap(), b"\0asm");
        assert_eq!(
            read_in_dir(&dir, MANIFEST_FILE, MAX_MANIFEST_BYTES).unwrap(),
            b"{}"
        );
    }

    #[test]
    fn the_fingerprint_reads_the_plugin_dir_as_install_does() {
        let (root, _dir) = configmap(&[("a.wasm", b"one")]);
        let mount = root.path().join("mount");
        std::fs::write(root.path().join("secret"), b"root only").unwrap();
        std::os::unix::fs::symlink("/dev/zero", mount.join("zero")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            mount.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let pin = |file: &str| json!({"file": file, "sha256": "0"});
        std::fs::write(
            mount.join(MANIFEST_FILE),
            json!({"a": pin("a.wasm"), "zero": pin("zero"), "pipe": pin("fifo"),
                   "out": pin("../secret"), "../x": pin("a.wasm")})
            .to_string(),
        )
        .unwrap();
        let options = InstallOptions {
            host_root: root.path().join("host"),
            bin_dir: "/opt/cni/bin".into(),
            conf_dir: "/etc/cni/net.d".into(),
            state_dir: "/var/lib/multus-wasm".into(),
            plugin_dir: mount.clone(),
            config_template: Map::new(),
            binary: None,
            skip_binary_copy: true,
            readiness_indicator_file: None,
            service_account_dir: None,
            thick: None,
        };
        // Returns (neither /dev/zero nor the FIFO is read), and follows the
        // files the ConfigMap links.
        let first = fingerprint(&options);
        assert_eq!(first, fingerprint(&options));
        std::fs::write(mount.join("..2026_12_04_x/a.wasm"), b"two").unwrap();
        assert_ne!(first, fingerprint(&options));
        // The file outside is not part of it.
        let second = fingerprint(&options);
        std::fs::write(root.path().join("secret"), b"changed").unwrap();
        assert_eq!(second, fingerprint(&options));
    }

    #[test]
    fn reads_cannot_leave_the_dir_block_or_run_unbounded() {
        let (root, dir) = configmap(&[("a.wasm", b"12345")]);
        let mount = root.path().join("mount");
        let secret = root.path().join("secret");
        std::fs::write(&secret, b"root only").unwrap();
        std::os::unix::fs::symlink("../secret", mount.join("relative")).unwrap();
        std::os::unix::fs::symlink(&secret, mount.join("absolute")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", mount.join("zero")).unwrap();
        for name in ["relative", "absolute", "zero"] {
            assert!(
                matches!(
                    read_in_dir(&dir, name, MAX_PLUGIN_BYTES),
                    Err(PluginFileError::Open { .. })
                ),
                "{name} escapes the dir"
            );
        }
        assert!(matches!(
            read_in_dir(&dir, "../secret", MAX_PLUGIN_BYTES),
            Err(PluginFileError::InvalidFileName { .. })
        ));

        rustix::fs::mknodat(
            rustix::fs::CWD,
            mount.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let err = read_in_dir(&dir, "fifo", MAX_PLUGIN_BYTES).unwrap_err();
        assert!(
            matches!(err, PluginFileError::NotRegular { kind: "fifo", .. }),
            "{err}"
        );
        std::fs::create_dir(mount.join("subdir")).unwrap();
        assert!(matches!(
            read_in_dir(&dir, "subdir", MAX_PLUGIN_BYTES),
            Err(PluginFileError::NotRegular {
                kind: "directory",
                ..
            })
        ));

        // The cap: exactly at it is fine, one byte over is refused.
        assert_eq!(read_in_dir(&dir, "a.wasm", 5).unwrap(), b"12345");
        let err = read_in_dir(&dir, "a.wasm", 4).unwrap_err();
        assert!(
            matches!(err, PluginFileError::TooLarge { cap: 4, .. }),
            "{err}"
        );
        let big = std::fs::File::create(mount.join("big")).unwrap();
        big.set_len(MAX_PLUGIN_BYTES + 1).unwrap();
        assert!(matches!(
            read_in_dir(&dir, "big", MAX_PLUGIN_BYTES),
            Err(PluginFileError::TooLarge { .. })
        ));
    }
}
