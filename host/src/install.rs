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
//!    primary config in the CNI conf dir (or `--primary-conf-dir`; or the
//!    `--primary-config` file) that is neither ours nor a meta-plugin's
//!    becomes the `clusterNetwork`; written atomically as
//!    `00-multus-wasm.conf` (or `.conflist` for cniVersion >= 1.0.0). No
//!    primary yet is no error: the config is left for the watcher.
//! 4. With `--watch`, every round compares the config files with what they
//!    should be (primary, re-read template, plugins) and rewrites what is
//!    missing or different; our config is removed on shutdown only when
//!    asked (`--cleanup-on-exit`, not for a DaemonSet).
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
    /// The file `config_template` was read from (a container path: the
    /// mounted ConfigMap); the watcher re-reads it every round.
    pub config_template_file: Option<PathBuf>,
    /// Fields set over the template (the Multus-named flags: `kubeconfig`,
    /// `logLevel`, `logFile`).
    pub config_overrides: Map<String, Value>,
    /// Pin the primary config to this file name (waited for when absent).
    pub primary_config: Option<String>,
    /// Read the primary config from this dir (a host path) instead of the
    /// conf dir.
    pub primary_conf_dir: Option<PathBuf>,
    /// The binary to install (default: this executable).
    pub binary: Option<PathBuf>,
    pub skip_binary_copy: bool,
    /// Written into the config as `readinessindicatorfile` (a host path):
    /// every call waits for it.
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
    #[error("no primary CNI config at {0} yet (waiting for the cluster network to write one)")]
    NoPrimary(PathBuf),
    #[error("plugin manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("config template {path}: {reason}")]
    Template { path: PathBuf, reason: String },
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
    /// No primary config yet (where it is looked for): ours is not written;
    /// the watcher writes it when the primary appears.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for_primary: Option<PathBuf>,
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

/// The config types of meta-plugins (Multus's and ours, thin and thick):
/// a config of one of these types is never the primary (a `00-multus.conf`
/// left by Multus would make us delegate to Multus, or to ourselves).
pub const META_PLUGIN_TYPES: [&str; 4] =
    ["multus", "multus-shim", "multus-wasm", "multus-wasm-shim"];

/// The type of a CNI config: its own `type`, or its first plugin's.
pub fn config_type(config: &Value) -> Option<&str> {
    config
        .get("type")
        .and_then(Value::as_str)
        .or_else(|| config.get("plugins")?.get(0)?.get("type")?.as_str())
}

/// Whether `config` is a meta-plugin's (see [`META_PLUGIN_TYPES`]).
pub fn is_meta_config(config: &Value) -> bool {
    config_type(config).is_some_and(|config_type| META_PLUGIN_TYPES.contains(&config_type))
}

/// Whether a file name may hold the primary config: libcni's extensions
/// (`.conf`, `.conflist`, `.json`) and not our prefix. A renamed copy of
/// ours (`00-multus-wasm.conflist.cilium_bak`) fails both.
pub fn is_candidate_name(name: &str) -> bool {
    !name.starts_with(OUR_CONFIG_PREFIX)
        && Path::new(name)
            .extension()
            .and_then(|extension| extension.to_str())
            .is_some_and(|extension| crate::attachments::CONF_FILE_EXTENSIONS.contains(&extension))
}

/// The primary among `listing` (file names with their content, `None` when
/// unreadable or not JSON): with `pinned`, that file only (any extension);
/// else, as Multus's auto mode, the first by name of the candidates
/// ([`is_candidate_name`]). Never ours, never a meta-plugin's config, never
/// one that is not a JSON object (a file still being written waits for the
/// next round).
pub fn choose_primary(listing: &[(String, Option<Value>)], pinned: Option<&str>) -> Option<String> {
    let mut usable: Vec<&str> = listing
        .iter()
        .filter(|(name, _)| match pinned {
            Some(pinned) => name == pinned && !name.starts_with(OUR_CONFIG_PREFIX),
            None => is_candidate_name(name),
        })
        .filter(|(_, value)| {
            value
                .as_ref()
                .is_some_and(|value| value.is_object() && !is_meta_config(value))
        })
        .map(|(name, _)| name.as_str())
        .collect();
    usable.sort_unstable();
    usable.first().map(|name| name.to_string())
}

/// The largest CNI config install reads as a primary candidate (1 MiB).
const MAX_PRIMARY_BYTES: u64 = 1 << 20;

/// The files of `dir` that may be the primary, with their JSON content:
/// the pinned name alone, or the dir's configs ([`crate::confdir`]).
fn list_primary_candidates(dir: &Path, pinned: Option<&str>) -> Vec<(String, Option<Value>)> {
    let paths = match pinned {
        Some(name) => {
            let path = dir.join(name);
            if path.is_file() {
                vec![path]
            } else {
                Vec::new()
            }
        }
        None => crate::confdir::config_files(dir).unwrap_or_default(),
    };
    paths
        .into_iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            let read = std::fs::File::open(&path)
                .and_then(|file| file.take(MAX_PRIMARY_BYTES).read_to_end(&mut bytes));
            let value = read.ok().and_then(|_| serde_json::from_slice(&bytes).ok());
            if value.is_none() {
                tracing::debug!(file = %path.display(), "not a JSON config (yet): skipped as a primary");
            }
            Some((name, value))
        })
        .collect()
}

/// Whether our file holding `current` (`None`: missing) must be rewritten
/// to hold `wanted`: missing, not JSON, or different content. Formatting
/// alone is no difference.
pub fn needs_rewrite(current: Option<&[u8]>, wanted: &Value) -> bool {
    match current.and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok()) {
        Some(current) => current != *wanted,
        None => true,
    }
}

/// Read a config template: a JSON object.
pub fn read_template(path: &Path) -> Result<Map<String, Value>, InstallError> {
    let error = |reason: String| InstallError::Template {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|err| error(err.to_string()))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(error("must hold a JSON object".into())),
        Err(err) => Err(error(format!("not JSON: {err}"))),
    }
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
    for (key, value) in &options.config_overrides {
        config.insert(key.clone(), value.clone());
    }
    if let Some(indicator) = &options.readiness_indicator_file {
        config.insert("readinessindicatorfile".into(), json!(indicator));
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

/// Our config's two spellings.
const OUR_CONFIG_NAMES: [&str; 2] = ["00-multus-wasm.conf", "00-multus-wasm.conflist"];

/// Remove our config (both spellings).
pub fn remove_config(options: &InstallOptions) {
    for name in OUR_CONFIG_NAMES {
        let _ = std::fs::remove_file(options.local(&options.conf_dir.join(name)));
    }
}

/// Copy the binary (or, thick, the shim) into the bin dir, unless skipped.
fn install_binary(
    options: &InstallOptions,
    report: &mut InstallReport,
) -> Result<(), InstallError> {
    if options.skip_binary_copy {
        return Ok(());
    }
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
    Ok(())
}

/// What the node's config files should hold.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The primary config (a host path).
    pub primary: PathBuf,
    /// Our config's file name in the conf dir and its content.
    pub name: &'static str,
    pub config: Value,
    /// Thick mode: the daemon's config.
    pub daemon: Option<Value>,
}

/// The config for the current primary, template and plugins (writing the
/// service account's kubeconfig when it changed); `NoPrimary` while there
/// is none.
pub fn desired_config(
    options: &InstallOptions,
    wasm_plugins: &Map<String, Value>,
) -> Result<Desired, InstallError> {
    let primary_dir = options
        .primary_conf_dir
        .as_ref()
        .unwrap_or(&options.conf_dir);
    let pinned = options.primary_config.as_deref();
    let listing = list_primary_candidates(&options.local(primary_dir), pinned);
    let Some(name) = choose_primary(&listing, pinned) else {
        return Err(InstallError::NoPrimary(match pinned {
            Some(pinned) => primary_dir.join(pinned),
            None => primary_dir.clone(),
        }));
    };
    let primary_value = listing
        .into_iter()
        .find_map(|(candidate, value)| (candidate == name).then_some(value).flatten())
        .unwrap_or_default();
    let primary = primary_dir.join(&name);
    let mut config = generate_config(options, &primary, &primary_value, wasm_plugins.clone());
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
    let mut daemon = None;
    if let Some(thick) = &options.thick {
        // The daemon runs the host config; kubelet runs the shim.
        let mut host_config = match config.get("plugins").and_then(|plugins| plugins.get(0)) {
            Some(plugin) => plugin.clone(),
            None => config.clone(),
        };
        host_config["cniVersion"] = config["cniVersion"].clone();
        host_config["socketDir"] = json!(thick.socket_dir);
        daemon = Some(host_config);
        config = shim_config(&config, &thick.socket_dir);
    }
    Ok(Desired {
        primary,
        name: config_file_name(&config),
        config,
        daemon,
    })
}

/// Write `value` as JSON at `host_path` (0600) unless the file already
/// holds it ([`needs_rewrite`]); returns whether it wrote.
fn write_json_if_changed(
    options: &InstallOptions,
    host_path: &Path,
    value: &Value,
) -> Result<bool, InstallError> {
    let local = options.local(host_path);
    let current = std::fs::read(&local).ok();
    if !needs_rewrite(current.as_deref(), value) {
        return Ok(false);
    }
    let bytes = serde_json::to_vec_pretty(value).expect("json");
    write_file(&bytes, &local, 0o600)?;
    Ok(true)
}

/// Make the node's files hold `desired`: compared by content, rewritten
/// when missing (removed, or renamed away) or different; the other spelling
/// of ours removed. Returns whether anything was written.
pub fn sync_config(options: &InstallOptions, desired: &Desired) -> Result<bool, InstallError> {
    let mut wrote = false;
    if let Some(daemon) = &desired.daemon {
        wrote |= write_json_if_changed(options, &options.state_dir.join(DAEMON_CONFIG), daemon)?;
    }
    for stale in OUR_CONFIG_NAMES
        .iter()
        .filter(|name| **name != desired.name)
    {
        let _ = std::fs::remove_file(options.local(&options.conf_dir.join(stale)));
    }
    wrote |= write_json_if_changed(
        options,
        &options.conf_dir.join(desired.name),
        &desired.config,
    )?;
    Ok(wrote)
}

/// One full pass: binary, plugins, config. A missing primary is no error:
/// the binary and plugins are installed, our config is not written
/// (`waiting_for_primary`), and the watcher writes it later.
pub fn install_once(options: &InstallOptions) -> Result<InstallReport, InstallError> {
    let mut report = InstallReport::default();
    install_binary(options, &mut report)?;
    let wasm_plugins = install_plugins(options, &mut report)?;
    match desired_config(options, &wasm_plugins) {
        Ok(desired) => {
            if sync_config(options, &desired)? {
                tracing::info!(config = %options.conf_dir.join(desired.name).display(), primary = %desired.primary.display(), "host config written");
            }
            report.config = Some(options.conf_dir.join(desired.name));
            report.primary = Some(desired.primary);
            if desired.daemon.is_some() {
                report.daemon_config = Some(options.state_dir.join(DAEMON_CONFIG));
            }
        }
        Err(InstallError::NoPrimary(place)) => {
            tracing::info!(primary = %place.display(), "no primary CNI config yet: our config is not written (the watcher writes it when the primary appears)");
            report.waiting_for_primary = Some(place);
        }
        Err(err) => return Err(err),
    }
    Ok(report)
}

/// Write `bytes` at `host_path` with `mode` unless it already holds them.
fn write_bytes_if_changed(
    options: &InstallOptions,
    host_path: &Path,
    bytes: &[u8],
    mode: u32,
) -> Result<(), InstallError> {
    let local = options.local(host_path);
    if std::fs::read(&local).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    write_file(bytes, &local, mode)
}

/// Write `<conf-dir>/multus.d/multus-wasm.kubeconfig` (0600) from the
/// service account, with the CA next to it (each only when it changed);
/// returns its host path.
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
    let ca_host_path = dir.join(KUBECONFIG_CA);
    let kubeconfig_path = dir.join(KUBECONFIG);
    write_bytes_if_changed(options, &ca_host_path, &ca, 0o644)?;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: multus-wasm\n  user:\n    token: {}\ncontexts:\n- name: multus-wasm\n  context:\n    cluster: local\n    user: multus-wasm\ncurrent-context: multus-wasm\n",
        ca_host_path.display(),
        token.trim()
    );
    write_bytes_if_changed(options, &kubeconfig_path, kubeconfig.as_bytes(), 0o600)?;
    Ok(Some(kubeconfig_path))
}

/// The service-account kubeconfig and its CA, in `<conf-dir>/multus.d/`.
const KUBECONFIG: &str = "multus-wasm.kubeconfig";
const KUBECONFIG_CA: &str = "multus-wasm-ca.crt";

/// A fingerprint of what the installed plugins depend on: the plugin dir's
/// manifest and plugin files (the ConfigMap's `..data` symlink swap
/// changes it) and the template's `wasmLimits` (they shape the compiled
/// code). The config itself is compared by content every round.
pub fn fingerprint(options: &InstallOptions) -> String {
    let mut hasher = Vec::new();
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
    if let Some(limits) = options.config_template.get("wasmLimits") {
        hasher.extend_from_slice(limits.to_string().as_bytes());
    }
    sha256_hex(&hasher)
}

/// Install, then keep the node's config in step until `stop` returns true.
/// Every round re-reads the template, re-installs the plugins when they
/// changed, and compares the config files with what they should hold
/// (rewriting them when missing, renamed away or different); a missing
/// primary is waited for. Only with `cleanup` is our config removed at the
/// end: a DaemonSet must not pass it, or every rollout (and every restart)
/// takes the node's pod network away until the next pod writes it again.
///
/// With `status_file`, every round leaves its outcome there for the
/// DaemonSet's probes ([`check_watch_status`]).
pub fn watch(
    options: &InstallOptions,
    interval: Duration,
    cleanup: bool,
    status_file: Option<&Path>,
    stop: &dyn Fn() -> bool,
) -> Result<(), InstallError> {
    let mut state = WatchState {
        options: options.clone(),
        plugins: None,
        last_note: String::new(),
    };
    while !stop() {
        let status = state.round();
        if let Some(path) = status_file
            && let Err(err) = write_watch_status(path, &status)
        {
            state.note(format!(
                "cannot write the status file {}: {err}",
                path.display()
            ));
        }
        let mut slept = Duration::ZERO;
        while slept < interval && !stop() {
            std::thread::sleep(Duration::from_millis(50));
            slept += Duration::from_millis(50);
        }
    }
    if cleanup {
        remove_config(options);
        tracing::info!("removed our host config on shutdown (--cleanup-on-exit)");
    }
    Ok(())
}

/// What the watcher keeps between rounds.
struct WatchState {
    options: InstallOptions,
    /// The plugin fingerprint and the `wasmPlugins` installed for it.
    plugins: Option<(String, Map<String, Value>)>,
    /// The last warning or waiting note, logged once until it changes.
    last_note: String,
}

impl WatchState {
    fn note(&mut self, note: String) {
        if note != self.last_note {
            tracing::warn!("{note}");
            self.last_note = note;
        }
    }

    /// One round; returns whether the node's config is now in place and,
    /// if not, why.
    fn round(&mut self) -> WatchStatus {
        if let Some(path) = self.options.config_template_file.clone() {
            match read_template(&path) {
                Ok(template) => self.options.config_template = template,
                Err(err) => self.note(format!("{err}; keeping the last good template")),
            }
        }
        let current = fingerprint(&self.options);
        if self.plugins.as_ref().map(|(fingerprint, _)| fingerprint) != Some(&current) {
            let mut report = InstallReport::default();
            let installed = install_binary(&self.options, &mut report)
                .and_then(|()| install_plugins(&self.options, &mut report));
            match installed {
                Ok(wasm_plugins) => {
                    tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), "plugins installed");
                    self.plugins = Some((current, wasm_plugins));
                }
                Err(err) => {
                    let note = format!("install pass incomplete, retrying: {err}");
                    self.note(note.clone());
                    return WatchStatus::waiting(note);
                }
            }
        }
        let Some((_, wasm_plugins)) = &self.plugins else {
            return WatchStatus::waiting("plugins not installed yet".into());
        };
        let synced = desired_config(&self.options, wasm_plugins)
            .and_then(|desired| Ok((sync_config(&self.options, &desired)?, desired)));
        match synced {
            Ok((wrote, desired)) => {
                if wrote {
                    tracing::info!(config = %self.options.conf_dir.join(desired.name).display(), primary = %desired.primary.display(), "host config written");
                }
                self.last_note.clear();
                WatchStatus {
                    in_sync: true,
                    note: String::new(),
                }
            }
            Err(err) => {
                self.note(err.to_string());
                WatchStatus::waiting(err.to_string())
            }
        }
    }
}

/// What the watcher's last round left: whether the node's config holds
/// what it should (`inSync`), and if not, why (waiting for the primary, a
/// failed write...). Kept in the watcher's status file for the probes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchStatus {
    pub in_sync: bool,
    pub note: String,
}

impl WatchStatus {
    fn waiting(note: String) -> WatchStatus {
        WatchStatus {
            in_sync: false,
            note,
        }
    }
}

/// Write `status` to `path` (atomically, when it changed) and set the
/// file's modification time to now: its age tells the liveness probe when
/// the last round ended.
pub fn write_watch_status(path: &Path, status: &WatchStatus) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(status).expect("json");
    if std::fs::read(path).ok().as_deref() != Some(bytes.as_slice()) {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut file, &bytes)?;
        file.persist(path).map_err(|err| err.error)?;
    }
    std::fs::File::options()
        .write(true)
        .open(path)?
        .set_modified(std::time::SystemTime::now())
}

/// The DaemonSet's probes of a running watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A round ended within the allowed age (the watcher is not stuck).
    Alive,
    /// Alive, and the node's config is in place.
    Ready,
}

/// The verdict of `probe` on the watcher's status file (its content, and
/// how long ago its last round ended): `Ok` with a line to print, or why
/// the probe fails.
pub fn probe_verdict(
    probe: Probe,
    status: Option<(WatchStatus, Duration)>,
    max_age: Duration,
) -> Result<String, String> {
    let Some((status, age)) = status else {
        return Err("the watcher has not finished a round yet (no status file)".into());
    };
    if age > max_age {
        return Err(format!(
            "the watcher's last round ended {}s ago (more than {}s): it is stuck",
            age.as_secs(),
            max_age.as_secs()
        ));
    }
    match probe {
        Probe::Ready if !status.in_sync => Err(format!("not ready: {}", status.note)),
        Probe::Ready => Ok("ready: the node's config is in place".into()),
        Probe::Alive => Ok(format!(
            "alive: last round {}s ago{}",
            age.as_secs(),
            if status.in_sync {
                String::new()
            } else {
                format!(" ({})", status.note)
            }
        )),
    }
}

/// Read the watcher's status file at `path` and apply `probe`.
pub fn check_watch_status(path: &Path, probe: Probe, max_age: Duration) -> Result<String, String> {
    let status = match std::fs::read(path) {
        Ok(bytes) => {
            let status: WatchStatus = serde_json::from_slice(&bytes)
                .map_err(|err| format!("{} is not a watcher status: {err}", path.display()))?;
            let modified = std::fs::metadata(path)
                .and_then(|meta| meta.modified())
                .map_err(|err| format!("{}: {err}", path.display()))?;
            let age = modified.elapsed().unwrap_or(Duration::ZERO);
            Some((status, age))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(format!("{}: {err}", path.display())),
    };
    probe_verdict(probe, status, max_age)
}

/// The node paths `uninstall` cleans.
#[derive(Debug, Clone)]
pub struct UninstallOptions {
    pub host_root: PathBuf,
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub state_dir: PathBuf,
}

/// What `uninstall` removed (host paths) and what it could not.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UninstallReport {
    pub removed: Vec<PathBuf>,
    pub failed: BTreeMap<PathBuf, String>,
}

/// Remove what install wrote, and only that: our config in the conf dir
/// (`00-multus-wasm.*`, renamed copies included), the service-account
/// kubeconfig and CA in `multus.d/`, our binary and shim, and in the state
/// dir the plugins, the compiled-code cache and the daemon's config (the
/// state dir itself when nothing else is left in it). What is already
/// gone is no error, so it can run again.
pub fn uninstall(options: &UninstallOptions) -> UninstallReport {
    let local = |host_path: &Path| {
        options
            .host_root
            .join(host_path.strip_prefix("/").unwrap_or(host_path))
    };
    let mut targets = Vec::new();
    if let Ok(entries) = std::fs::read_dir(local(&options.conf_dir)) {
        let mut ours: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(&format!("{OUR_CONFIG_PREFIX}.")))
            .collect();
        ours.sort();
        targets.extend(ours.into_iter().map(|name| options.conf_dir.join(name)));
    }
    let multus_d = options.conf_dir.join("multus.d");
    targets.extend([multus_d.join(KUBECONFIG), multus_d.join(KUBECONFIG_CA)]);
    targets.extend(["multus-wasm", "multus-wasm-shim"].map(|name| options.bin_dir.join(name)));
    targets.extend(["plugins", "cache", DAEMON_CONFIG].map(|name| options.state_dir.join(name)));
    let mut report = UninstallReport::default();
    for target in targets {
        let path = local(&target);
        let removed = match std::fs::symlink_metadata(&path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => Err(err),
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
        };
        match removed {
            Ok(()) => report.removed.push(target),
            Err(err) => {
                report.failed.insert(target, err.to_string());
            }
        }
    }
    // Only when empty: anything else there is not ours to remove.
    if std::fs::remove_dir(local(&options.state_dir)).is_ok() {
        report.removed.push(options.state_dir.clone());
    }
    let _ = std::fs::remove_dir(local(&multus_d));
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probes_tell_a_stuck_watcher_from_one_waiting_for_the_primary() {
        let minute = Duration::from_secs(60);
        let waiting = WatchStatus {
            in_sync: false,
            note: "no primary CNI config in /etc/cni/net.d yet".into(),
        };
        let synced = WatchStatus {
            in_sync: true,
            note: String::new(),
        };
        let fresh = Duration::from_secs(2);
        // Waiting for the primary: alive (no restart), not ready, and why.
        assert!(probe_verdict(Probe::Alive, Some((waiting.clone(), fresh)), minute).is_ok());
        let not_ready = probe_verdict(Probe::Ready, Some((waiting, fresh)), minute).unwrap_err();
        assert!(not_ready.contains("no primary"), "{not_ready}");
        assert!(probe_verdict(Probe::Ready, Some((synced.clone(), fresh)), minute).is_ok());
        // A round too long ago: stuck, whatever it said.
        let stale = Duration::from_secs(61);
        for probe in [Probe::Alive, Probe::Ready] {
            let stuck = probe_verdict(probe, Some((synced.clone(), stale)), minute).unwrap_err();
            assert!(stuck.contains("stuck"), "{stuck}");
            assert!(probe_verdict(probe, None, minute).is_err(), "no round yet");
        }
    }

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
        let candidates = list_primary_candidates(dir.path(), None);
        assert_eq!(
            choose_primary(&candidates, None).as_deref(),
            Some("10-calico.conflist")
        );
    }

    fn listing(entries: &[(&str, Option<Value>)]) -> Vec<(String, Option<Value>)> {
        entries
            .iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect()
    }

    #[test]
    fn meta_plugin_configs_ours_and_renamed_copies_are_never_the_primary() {
        let calico = json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [{"type": "calico"}]});
        let multus = |plugin_type: &str| json!({"cniVersion": "0.3.1", "name": "multus-cni-network", "type": plugin_type});
        let multus_list =
            json!({"cniVersion": "1.0.0", "name": "m", "plugins": [{"type": "multus-shim"}]});
        let candidates = listing(&[
            ("00-multus.conf", Some(multus("multus"))),
            ("00-multus-shim.conf", Some(multus("multus-shim"))),
            ("00-multus.conflist", Some(multus_list)),
            ("01-old-wasm.conf", Some(multus("multus-wasm"))),
            ("01-old-wasm-shim.conf", Some(multus("multus-wasm-shim"))),
            ("00-multus-wasm.conflist", Some(calico.clone())),
            ("00-multus-wasm.conflist.cilium_bak", Some(calico.clone())),
            ("05-half-written.conflist", None),
            ("06-array.json", Some(json!([1]))),
            ("07-readme.txt", Some(calico.clone())),
            ("10-calico.conflist", Some(calico.clone())),
            ("20-flannel.conflist", Some(calico.clone())),
        ]);
        assert_eq!(
            choose_primary(&candidates, None).as_deref(),
            Some("10-calico.conflist")
        );
        // Without any usable one there is none.
        assert_eq!(choose_primary(&candidates[..10], None), None);
        assert!(!is_candidate_name("00-multus-wasm.conflist.cilium_bak"));
        assert!(!is_candidate_name("10-calico.conflist.cilium_bak"));
        assert!(is_candidate_name("10-calico.json"));
        assert_eq!(config_type(&json!({"plugins": [{"type": "x"}]})), Some("x"));
    }

    #[test]
    fn a_pinned_primary_is_that_file_or_none() {
        let calico = json!({"name": "c", "plugins": [{"type": "calico"}]});
        let candidates = listing(&[
            ("05-first.conflist", Some(calico.clone())),
            ("calico.conf.pinned", Some(calico.clone())),
            ("00-multus.conf", Some(json!({"type": "multus"}))),
            ("00-multus-wasm.conf", Some(calico.clone())),
        ]);
        assert_eq!(
            choose_primary(&candidates, Some("calico.conf.pinned")).as_deref(),
            Some("calico.conf.pinned"),
            "any extension when pinned"
        );
        assert_eq!(
            choose_primary(&candidates, Some("10-missing.conflist")),
            None
        );
        assert_eq!(choose_primary(&candidates, Some("00-multus.conf")), None);
        assert_eq!(
            choose_primary(&candidates, Some("00-multus-wasm.conf")),
            None
        );
    }

    #[test]
    fn a_rewrite_is_needed_when_missing_unreadable_or_different() {
        let wanted = json!({"cniVersion": "1.0.0", "plugins": [{"type": "multus-wasm"}]});
        assert!(needs_rewrite(None, &wanted));
        assert!(needs_rewrite(Some(b"{\"cniVersion\": \"1.0.0\""), &wanted));
        assert!(needs_rewrite(Some(b"{}"), &wanted));
        assert!(!needs_rewrite(Some(wanted.to_string().as_bytes()), &wanted));
        let pretty = serde_json::to_vec_pretty(&wanted).unwrap();
        assert!(
            !needs_rewrite(Some(&pretty), &wanted),
            "formatting is no difference"
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
            config_template_file: None,
            config_overrides: Map::new(),
            primary_config: None,
            primary_conf_dir: None,
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
