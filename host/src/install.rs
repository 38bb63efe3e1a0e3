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
//!    CNI call does not compile.
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
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::cni::CniVersion;
use crate::config::WasmLimits;
use crate::sandbox::{Limits, Sandbox, sha256_hex};

/// Our config's file name prefix; never taken as the primary config.
pub const OUR_CONFIG_PREFIX: &str = "00-multus-wasm";

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
}

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
    if let Some(parent) = destination.parent() {
        std::fs::create_dir_all(parent).map_err(|err| file_error(parent, err))?;
    }
    crate::store::write_atomically(destination, &bytes, mode)
        .map_err(|err| file_error(destination, err))
}

/// The plugin manifest of a plugin dir: `plugins.json`, `{"<type>": {"file", "sha256"}}`.
pub fn read_manifest(plugin_dir: &Path) -> Result<BTreeMap<String, ManifestEntry>, InstallError> {
    let path = plugin_dir.join("plugins.json");
    let text = std::fs::read(&path).map_err(|err| InstallError::Manifest {
        path: path.clone(),
        reason: err.to_string(),
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
    let manifest = read_manifest(&options.plugin_dir)?;
    let cache_dir = options.state_dir.join("cache");
    let sandbox = Sandbox::new(options.limits(), Some(&options.local(&cache_dir)))
        .map_err(|err| file_error(&cache_dir, err))?;
    let mut registered = Map::new();
    for (plugin_type, entry) in manifest {
        let source = options.plugin_dir.join(&entry.file);
        let outcome = (|| {
            let bytes = std::fs::read(&source)
                .map_err(|err| format!("cannot read {}: {err}", source.display()))?;
            let digest = sha256_hex(&bytes);
            if !digest.eq_ignore_ascii_case(&entry.sha256) {
                return Err(format!(
                    "{} has sha256 {digest} but the manifest pins {}: refusing it",
                    source.display(),
                    entry.sha256
                ));
            }
            let host_path = options
                .state_dir
                .join("plugins")
                .join(format!("{plugin_type}-{digest}.wasm"));
            let local = options.local(&host_path);
            if !local.exists() {
                install_file(&source, &local, 0o644).map_err(|err| err.to_string())?;
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
                tracing::error!(plugin = %plugin_type, %reason, "plugin refused");
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
        let source = match &options.binary {
            Some(binary) => binary.clone(),
            None => std::env::current_exe()
                .map_err(|err| file_error(Path::new("/proc/self/exe"), err))?,
        };
        let destination = options.bin_dir.join("multus-wasm");
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
    let manifest_path = options.plugin_dir.join("plugins.json");
    let manifest = std::fs::read(&manifest_path).unwrap_or_default();
    hasher.extend_from_slice(&manifest);
    if let Ok(entries) = read_manifest(&options.plugin_dir) {
        for entry in entries.values() {
            hasher.extend(std::fs::read(options.plugin_dir.join(&entry.file)).unwrap_or_default());
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
}
