//! The host's own CNI config (`00-multus.conf` style), parsed with Multus's
//! field names and defaults plus the keys that configure the wasm sandbox.
//!
//! Parsing is pure: [`MultusConfig::parse`] takes the stdin bytes and
//! returns the config with every default applied and the list of top-level
//! keys it did not know, which the caller logs (they are reported, never
//! silently dropped). A key whose value has the wrong type is an error
//! naming the key. Our own nested objects (`wasmPlugins` entries,
//! `wasmLimits`) reject unknown keys, so a typo in a limit cannot silently
//! leave it unset.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Where file-backed NADs and CNI names are looked up by default.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/multus/net.d";
/// The default scratch and result cache directory.
pub const DEFAULT_CNI_DIR: &str = "/var/lib/cni/multus";
/// The default directory of delegate binaries.
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
/// The default namespace of the cluster network and default networks.
pub const DEFAULT_MULTUS_NAMESPACE: &str = "kube-system";
/// The default list of namespaces whose pods get no `defaultNetworks`.
pub const DEFAULT_SYSTEM_NAMESPACES: &[&str] = &["kube-system"];
/// The default list of namespaces any pod may use with namespace isolation.
pub const DEFAULT_GLOBAL_NAMESPACES: &[&str] = &["default"];
/// The default directory of compiled wasm plugins.
pub const DEFAULT_WASM_CACHE_DIR: &str = "/var/lib/multus-wasm/cache";
/// The default directory of NAD and pod manifests used without a cluster.
pub const DEFAULT_MANIFEST_DIR: &str = "/etc/multus-wasm/manifests";
/// The native plugin types a NAD may name when `nativePlugins` is unset:
/// the reference plugins a Multus user expects, less `host-device` (it moves
/// a node interface into the pod). The operator's own networks (cluster
/// network, `delegates`, `defaultNetworks`) may always run their types.
pub const DEFAULT_NATIVE_PLUGINS: &[&str] = &[
    "bandwidth",
    "bridge",
    "dhcp",
    "dummy",
    "firewall",
    "host-local",
    "ipvlan",
    "loopback",
    "macvlan",
    "portmap",
    "ptp",
    "sbr",
    "static",
    "tap",
    "tuning",
    "vlan",
    "vrf",
];
/// Names of meta-plugins that are never exec'd as delegates, whatever
/// `nativePlugins` says: ours and Multus's (a nested meta-plugin would take
/// the NAD's JSON as its whole host config).
pub const META_PLUGIN_NAMES: &[&str] =
    &["multus-wasm", "multus-wasm-shim", "multus", "multus-shim"];
/// The macvlan modes allowed on a master when `allowedMacvlanModes` does not
/// say otherwise: the ones that leave the master and its other children alone.
pub const DEFAULT_MACVLAN_MODES: &[&str] = &["bridge", "private", "vepa"];
/// Every macvlan mode name.
pub const MACVLAN_MODES: &[&str] = &["bridge", "private", "vepa", "passthru", "source"];
/// The key of `allowedMacvlanModes` that applies to every master not listed.
pub const ANY_MASTER: &str = "*";

/// `allowedMacvlanModes` when the host config does not set it: the
/// [`DEFAULT_MACVLAN_MODES`] on every master.
pub fn default_macvlan_modes() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([(ANY_MASTER.to_string(), owned(DEFAULT_MACVLAN_MODES))])
}
/// The default IPAM data root (the reference host-local's default dataDir).
pub const DEFAULT_IPAM_DATA_ROOT: &str = "/var/lib/cni/networks";

/// Multus's log levels, from least to most verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    #[default]
    Panic,
    Error,
    Verbose,
    Debug,
}

impl FromStr for LogLevel {
    type Err = ConfigError;

    /// Accepts the four names in any letter case, as Multus does.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "panic" => Ok(LogLevel::Panic),
            "error" => Ok(LogLevel::Error),
            "verbose" => Ok(LogLevel::Verbose),
            "debug" => Ok(LogLevel::Debug),
            _ => Err(ConfigError::InvalidLogLevel {
                value: text.to_string(),
            }),
        }
    }
}

/// The format of log lines (`logFormat`, ours): text (tracing's default
/// format) or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "unknown logFormat {text:?} (expected text or json): using text"
            )),
        }
    }
}

/// Log file rotation (`logOptions`), with Multus's defaults applied; it
/// only matters when `logFile` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// `maxAge`: days to keep rotated files.
    pub max_age_days: u32,
    /// `maxSize`: size in MiB at which the file rotates.
    pub max_size_mib: u32,
    /// `maxBackups`: rotated files to keep.
    pub max_backups: u32,
    /// `compress`: gzip rotated files.
    pub compress: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            max_age_days: 5,
            max_size_mib: 100,
            max_backups: 5,
            compress: true,
        }
    }
}

/// One registered wasm plugin: the component file and its pinned digest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmPlugin {
    /// The `.wasm` component file (an absolute path).
    pub path: PathBuf,
    /// The file's sha256, 64 lowercase hex digits.
    pub sha256: String,
}

/// Per-call sandbox limits (`wasmLimits`); `None` leaves the sandbox's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WasmLimits {
    /// Fuel per call (deterministic budget).
    pub fuel: Option<u64>,
    /// Wall-clock deadline per call, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Linear memory cap, in MiB.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: Option<u64>,
    /// Wasm stack cap, in KiB.
    #[serde(rename = "maxStackKiB")]
    pub max_stack_kib: Option<u64>,
    /// Most netlink operations one plan may hold.
    pub max_ops: Option<u32>,
    /// Longest string a guest may return, in bytes.
    pub max_string_bytes: Option<u32>,
    /// Most keys one network's IPAM store may hold.
    pub store_max_keys: Option<u32>,
}

/// Where the pod's primary (master) network comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PrimaryNetwork<'config> {
    /// `clusterNetwork`: a NAD name, a CNI name in confDir, or a path.
    ClusterNetwork(&'config str),
    /// `delegates`: inline configs, the first being the master.
    Delegates(&'config [Value]),
}

/// The host config, every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct MultusConfig {
    /// `cniVersion`; empty when absent.
    pub cni_version: String,
    /// `name`; empty when absent.
    pub name: String,
    /// `type`; empty when absent.
    pub plugin_type: String,
    /// `kubeconfig`; `None` when absent or empty.
    pub kubeconfig: Option<PathBuf>,
    /// `confDir`.
    pub conf_dir: PathBuf,
    /// `cniDir`.
    pub cni_dir: PathBuf,
    /// `binDir`.
    pub bin_dir: PathBuf,
    /// `logFile`; `None` when absent or empty.
    pub log_file: Option<PathBuf>,
    /// `logLevel`; an unknown level is the default (reported in
    /// [`ParsedConfig::warnings`]): logging never fails a call.
    pub log_level: LogLevel,
    /// `logFormat` (ours): `text` (default) or `json`.
    pub log_format: LogFormat,
    /// `logToStderr` (default true).
    pub log_to_stderr: bool,
    /// `logOptions`.
    pub log_options: LogOptions,
    /// `namespaceIsolation`.
    pub namespace_isolation: bool,
    /// `globalNamespaces`, split from its comma-separated string.
    pub global_namespaces: Vec<String>,
    /// `clusterNetwork`; `None` when absent or empty. Wins over `delegates`.
    pub cluster_network: Option<String>,
    /// `defaultNetworks`.
    pub default_networks: Vec<String>,
    /// `delegates`, each kept verbatim (each is a JSON object).
    pub delegates: Vec<Value>,
    /// `systemNamespaces`.
    pub system_namespaces: Vec<String>,
    /// `multusNamespace`.
    pub multus_namespace: String,
    /// `readinessindicatorfile`; `None` when absent or empty.
    pub readiness_indicator_file: Option<PathBuf>,
    /// `retryDeleteOnError`.
    pub retry_delete_on_error: bool,
    /// `auxiliaryCNIChainName`; `None` when absent or empty.
    pub auxiliary_cni_chain_name: Option<String>,
    /// `capabilities`, as the runtime reads them.
    pub capabilities: BTreeMap<String, bool>,
    /// `runtimeConfig`, verbatim.
    pub runtime_config: Option<Value>,
    /// `wasmPlugins`: plugin type to component.
    pub wasm_plugins: BTreeMap<String, WasmPlugin>,
    /// `wasmCacheDir`.
    pub wasm_cache_dir: PathBuf,
    /// `wasmLimits`.
    pub wasm_limits: WasmLimits,
    /// `allowedMasters`: host interfaces a plan may create links on; `None`
    /// leaves the choice to the policy's default.
    pub allowed_masters: Option<Vec<String>>,
    /// `manifestDir`.
    pub manifest_dir: PathBuf,
    /// `nativePlugins`: the native plugin types a NAD's attachment may exec;
    /// `None` means [`DEFAULT_NATIVE_PLUGINS`].
    pub native_plugins: Option<Vec<String>>,
    /// `allowedMacvlanModes`: macvlan modes allowed per master name, with
    /// [`ANY_MASTER`] for the rest; a plain list in the config applies to
    /// every master.
    pub allowed_macvlan_modes: BTreeMap<String, Vec<String>>,
    /// `ipamDataRoots`: the directories under which a NAD's `ipam.dataDir`
    /// may point.
    pub ipam_data_roots: Vec<PathBuf>,
    /// `podResourcesSocket`: kubelet's pod-resources API, asked for the
    /// device of a NAD with a `k8s.v1.cni.cncf.io/resourceName`.
    pub pod_resources_socket: PathBuf,
    /// `deviceInfoDir`: the NPWG device-info directory (`dp/` written by
    /// device plugins, `cni/` by us for the delegates).
    pub device_info_dir: PathBuf,
}

/// Where kubelet serves the pod-resources API.
pub const DEFAULT_POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

/// The NPWG device-info directory.
pub const DEFAULT_DEVICE_INFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo";

/// The result of [`MultusConfig::parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedConfig {
    pub config: MultusConfig,
    /// Top-level keys this host does not know, sorted; the caller logs them.
    pub unknown_fields: Vec<String>,
    /// Values replaced by their default (an unknown `logLevel` or
    /// `logFormat`), one message each; the caller logs them.
    pub warnings: Vec<String>,
}

/// A host config that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The bytes are not JSON.
    #[error("undecodable multus config: {message}")]
    Decode { message: String },
    /// The JSON is not an object.
    #[error("multus config is not a JSON object")]
    NotAnObject,
    /// A known key holds a value of the wrong type.
    #[error("invalid {field:?} in multus config: {message}")]
    InvalidField { field: String, message: String },
    /// `logLevel` is not one of Multus's levels.
    #[error("invalid logLevel {value:?}: expected one of panic, error, verbose, debug")]
    InvalidLogLevel { value: String },
    /// An entry of `delegates` is not a JSON object.
    #[error("delegates[{index}] in multus config is not a JSON object")]
    DelegateNotAnObject { index: usize },
    /// A `wasmPlugins` key is empty.
    #[error("wasmPlugins has an entry with an empty plugin type")]
    EmptyPluginType,
    /// A `wasmPlugins` entry has an empty path.
    #[error("wasm plugin {plugin:?} has an empty path")]
    EmptyPluginPath { plugin: String },
    /// A `wasmPlugins` path is relative (it would depend on the runtime's
    /// working directory).
    #[error("wasm plugin {plugin:?} has relative path {}: expected an absolute path", path.display())]
    RelativePluginPath { plugin: String, path: PathBuf },
    /// A `wasmPlugins` digest is not 64 lowercase hex digits.
    #[error(
        "wasm plugin {plugin:?} has invalid sha256 {value:?}: expected 64 lowercase hex digits"
    )]
    InvalidDigest { plugin: String, value: String },
    /// A `wasmLimits` value is zero, which would fail every call.
    #[error("wasmLimits.{limit} must be greater than zero")]
    ZeroLimit { limit: &'static str },
    /// Neither `clusterNetwork` nor `delegates` is set.
    #[error("at least one delegate/clusterNetwork must be specified")]
    NoPrimaryNetwork,
    /// `allowedMacvlanModes` names a mode that does not exist.
    #[error(
        "allowedMacvlanModes names unknown macvlan mode {mode:?}: expected bridge, private, vepa, passthru or source"
    )]
    UnknownMacvlanMode { mode: String },
    /// An `ipamDataRoots` entry is not an absolute, normalized path.
    #[error("ipamDataRoots entry {} must be an absolute path without . or .. components", path.display())]
    InvalidDataRoot { path: PathBuf },
}

impl ConfigError {
    /// The CNI error code: 6 for undecodable JSON, 7 for an invalid config.
    pub fn cni_code(&self) -> u32 {
        match self {
            ConfigError::Decode { .. } => 6,
            ConfigError::NotAnObject
            | ConfigError::InvalidField { .. }
            | ConfigError::InvalidLogLevel { .. }
            | ConfigError::DelegateNotAnObject { .. }
            | ConfigError::EmptyPluginType
            | ConfigError::EmptyPluginPath { .. }
            | ConfigError::RelativePluginPath { .. }
            | ConfigError::InvalidDigest { .. }
            | ConfigError::ZeroLimit { .. }
            | ConfigError::NoPrimaryNetwork
            | ConfigError::UnknownMacvlanMode { .. }
            | ConfigError::InvalidDataRoot { .. } => 7,
        }
    }
}

impl MultusConfig {
    /// Parses the host config from the CNI stdin bytes. JSON `null` counts
    /// as absent, and so does an empty string for string and path keys,
    /// as in Multus.
    pub fn parse(bytes: &[u8]) -> Result<ParsedConfig, ConfigError> {
        let decoded: Value =
            serde_json::from_slice(bytes).map_err(|error| ConfigError::Decode {
                message: error.to_string(),
            })?;
        let Value::Object(mut fields) = decoded else {
            return Err(ConfigError::NotAnObject);
        };

        let mut warnings = Vec::new();
        let log_level = match take_string(&mut fields, "logLevel")? {
            Some(text) => text.parse().unwrap_or_else(|err: ConfigError| {
                warnings.push(format!("{err}: using the default (panic)"));
                LogLevel::default()
            }),
            None => LogLevel::default(),
        };
        let log_format = match take_string(&mut fields, "logFormat")? {
            Some(text) => text.parse().unwrap_or_else(|warning: String| {
                warnings.push(warning);
                LogFormat::default()
            }),
            None => LogFormat::default(),
        };
        let global_namespaces = match take_string(&mut fields, "globalNamespaces")? {
            Some(csv) => csv
                .split(',')
                .map(str::trim)
                .filter(|namespace| !namespace.is_empty())
                .map(str::to_string)
                .collect(),
            None => owned(DEFAULT_GLOBAL_NAMESPACES),
        };
        let delegates: Vec<Value> = take(&mut fields, "delegates")?.unwrap_or_default();
        if let Some(index) = delegates.iter().position(|delegate| !delegate.is_object()) {
            return Err(ConfigError::DelegateNotAnObject { index });
        }
        let cluster_network = take_string(&mut fields, "clusterNetwork")?;
        if cluster_network.is_none() && delegates.is_empty() {
            return Err(ConfigError::NoPrimaryNetwork);
        }

        let config = MultusConfig {
            cni_version: take_string(&mut fields, "cniVersion")?.unwrap_or_default(),
            name: take_string(&mut fields, "name")?.unwrap_or_default(),
            plugin_type: take_string(&mut fields, "type")?.unwrap_or_default(),
            kubeconfig: take_path(&mut fields, "kubeconfig")?,
            conf_dir: take_path(&mut fields, "confDir")?.unwrap_or_else(|| DEFAULT_CONF_DIR.into()),
            cni_dir: take_path(&mut fields, "cniDir")?.unwrap_or_else(|| DEFAULT_CNI_DIR.into()),
            bin_dir: take_path(&mut fields, "binDir")?.unwrap_or_else(|| DEFAULT_BIN_DIR.into()),
            log_file: take_path(&mut fields, "logFile")?,
            log_level,
            log_format,
            log_to_stderr: take(&mut fields, "logToStderr")?.unwrap_or(true),
            log_options: take_log_options(&mut fields)?,
            namespace_isolation: take(&mut fields, "namespaceIsolation")?.unwrap_or(false),
            global_namespaces,
            cluster_network,
            default_networks: take(&mut fields, "defaultNetworks")?.unwrap_or_default(),
            delegates,
            system_namespaces: take(&mut fields, "systemNamespaces")?
                .unwrap_or_else(|| owned(DEFAULT_SYSTEM_NAMESPACES)),
            multus_namespace: take_string(&mut fields, "multusNamespace")?
                .unwrap_or_else(|| DEFAULT_MULTUS_NAMESPACE.to_string()),
            readiness_indicator_file: take_path(&mut fields, "readinessindicatorfile")?,
            retry_delete_on_error: take(&mut fields, "retryDeleteOnError")?.unwrap_or(false),
            auxiliary_cni_chain_name: take_string(&mut fields, "auxiliaryCNIChainName")?,
            capabilities: take(&mut fields, "capabilities")?.unwrap_or_default(),
            runtime_config: take(&mut fields, "runtimeConfig")?,
            wasm_plugins: take_wasm_plugins(&mut fields)?,
            wasm_cache_dir: take_path(&mut fields, "wasmCacheDir")?
                .unwrap_or_else(|| DEFAULT_WASM_CACHE_DIR.into()),
            wasm_limits: take_wasm_limits(&mut fields)?,
            allowed_masters: take(&mut fields, "allowedMasters")?,
            manifest_dir: take_path(&mut fields, "manifestDir")?
                .unwrap_or_else(|| DEFAULT_MANIFEST_DIR.into()),
            native_plugins: take(&mut fields, "nativePlugins")?,
            allowed_macvlan_modes: take_macvlan_modes(&mut fields)?,
            ipam_data_roots: take_data_roots(&mut fields)?,
            pod_resources_socket: take_path(&mut fields, "podResourcesSocket")?
                .unwrap_or_else(|| DEFAULT_POD_RESOURCES_SOCKET.into()),
            device_info_dir: take_path(&mut fields, "deviceInfoDir")?
                .unwrap_or_else(|| DEFAULT_DEVICE_INFO_DIR.into()),
        };
        // Multus parses `prevResult` and never uses it; a runtime may send it.
        fields.remove("prevResult");
        let mut unknown_fields: Vec<String> = fields.keys().cloned().collect();
        unknown_fields.sort();

        Ok(ParsedConfig {
            config,
            unknown_fields,
            warnings,
        })
    }

    /// Whether a NAD's attachment may exec the native plugin `plugin_type`
    /// (the operator's own networks are not limited by this list).
    pub fn native_plugin_allowed(&self, plugin_type: &str) -> bool {
        match &self.native_plugins {
            Some(list) => list.iter().any(|allowed| allowed == plugin_type),
            None => DEFAULT_NATIVE_PLUGINS.contains(&plugin_type),
        }
    }

    /// The primary network: `clusterNetwork` when set (then `delegates` is
    /// ignored, as in Multus), else the inline `delegates`.
    pub fn primary(&self) -> PrimaryNetwork<'_> {
        match &self.cluster_network {
            Some(cluster_network) => PrimaryNetwork::ClusterNetwork(cluster_network),
            None => PrimaryNetwork::Delegates(&self.delegates),
        }
    }
}

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

/// Removes `key` and decodes it; `null` or absence is `None`.
fn take<T: DeserializeOwned>(
    fields: &mut Map<String, Value>,
    key: &str,
) -> Result<Option<T>, ConfigError> {
    match fields.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => {
            serde_json::from_value(value)
                .map(Some)
                .map_err(|error| ConfigError::InvalidField {
                    field: key.to_string(),
                    message: error.to_string(),
                })
        }
    }
}

/// Like [`take`] for a string, treating `""` as absent.
fn take_string(fields: &mut Map<String, Value>, key: &str) -> Result<Option<String>, ConfigError> {
    Ok(take::<String>(fields, key)?.filter(|text| !text.is_empty()))
}

fn take_path(fields: &mut Map<String, Value>, key: &str) -> Result<Option<PathBuf>, ConfigError> {
    Ok(take_string(fields, key)?.map(PathBuf::from))
}

fn take_log_options(fields: &mut Map<String, Value>) -> Result<LogOptions, ConfigError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RawLogOptions {
        max_age: Option<u32>,
        max_size: Option<u32>,
        max_backups: Option<u32>,
        compress: Option<bool>,
    }
    let defaults = LogOptions::default();
    let Some(raw) = take::<RawLogOptions>(fields, "logOptions")? else {
        return Ok(defaults);
    };
    Ok(LogOptions {
        max_age_days: raw.max_age.unwrap_or(defaults.max_age_days),
        max_size_mib: raw.max_size.unwrap_or(defaults.max_size_mib),
        max_backups: raw.max_backups.unwrap_or(defaults.max_backups),
        compress: raw.compress.unwrap_or(defaults.compress),
    })
}

fn take_wasm_plugins(
    fields: &mut Map<String, Value>,
) -> Result<BTreeMap<String, WasmPlugin>, ConfigError> {
    let plugins: BTreeMap<String, WasmPlugin> = take(fields, "wasmPlugins")?.unwrap_or_default();
    for (plugin_type, plugin) in &plugins {
        if plugin_type.is_empty() {
            return Err(ConfigError::EmptyPluginType);
        }
        if plugin.path.as_os_str().is_empty() {
            return Err(ConfigError::EmptyPluginPath {
                plugin: plugin_type.clone(),
            });
        }
        if !plugin.path.is_absolute() {
            return Err(ConfigError::RelativePluginPath {
                plugin: plugin_type.clone(),
                path: plugin.path.clone(),
            });
        }
        if !is_sha256_hex(&plugin.sha256) {
            return Err(ConfigError::InvalidDigest {
                plugin: plugin_type.clone(),
                value: plugin.sha256.clone(),
            });
        }
    }
    Ok(plugins)
}

/// `allowedMacvlanModes`: a list (every master) or an object of master name
/// to list, `"*"` for the masters not named. Unset: bridge, private, vepa.
fn take_macvlan_modes(
    fields: &mut Map<String, Value>,
) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum RawModes {
        Everywhere(Vec<String>),
        PerMaster(BTreeMap<String, Vec<String>>),
    }
    let mut modes = match take::<RawModes>(fields, "allowedMacvlanModes")? {
        None => BTreeMap::new(),
        Some(RawModes::Everywhere(list)) => BTreeMap::from([(ANY_MASTER.to_string(), list)]),
        Some(RawModes::PerMaster(map)) => map,
    };
    modes
        .entry(ANY_MASTER.to_string())
        .or_insert_with(|| owned(DEFAULT_MACVLAN_MODES));
    for mode in modes.values().flatten() {
        if !MACVLAN_MODES.contains(&mode.as_str()) {
            return Err(ConfigError::UnknownMacvlanMode { mode: mode.clone() });
        }
    }
    Ok(modes)
}

/// `ipamDataRoots`: absolute, normalized directories.
fn take_data_roots(fields: &mut Map<String, Value>) -> Result<Vec<PathBuf>, ConfigError> {
    let roots: Vec<PathBuf> = take(fields, "ipamDataRoots")?
        .unwrap_or_else(|| vec![PathBuf::from(DEFAULT_IPAM_DATA_ROOT)]);
    for root in &roots {
        if !is_normal_absolute(root) {
            return Err(ConfigError::InvalidDataRoot { path: root.clone() });
        }
    }
    Ok(roots)
}

/// An absolute path made only of plain names (no `.`, `..`).
pub fn is_normal_absolute(path: &std::path::Path) -> bool {
    use std::path::Component;
    path.is_absolute()
        && path
            .components()
            .all(|component| matches!(component, Component::RootDir | Component::Normal(_)))
        && !path
            .to_string_lossy()
            .split('/')
            .any(|part| part == "." || part == "..")
}

fn take_wasm_limits(fields: &mut Map<String, Value>) -> Result<WasmLimits, ConfigError> {
    let limits: WasmLimits = take(fields, "wasmLimits")?.unwrap_or_default();
    let zero_limit = [
        ("fuel", limits.fuel == Some(0)),
        ("timeoutMs", limits.timeout_ms == Some(0)),
        ("memoryMiB", limits.memory_mib == Some(0)),
        ("maxStackKiB", limits.max_stack_kib == Some(0)),
        ("maxOps", limits.max_ops == Some(0)),
        ("maxStringBytes", limits.max_string_bytes == Some(0)),
        ("storeMaxKeys", limits.store_max_keys == Some(0)),
    ]
    .into_iter()
    .find(|(_, is_zero)| *is_zero);
    match zero_limit {
        Some((limit, _)) => Err(ConfigError::ZeroLimit { limit }),
        None => Ok(limits),
    }
}

/// Whether `text` is a sha256 digest written as 64 lowercase hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(value: Value) -> Result<ParsedConfig, ConfigError> {
        MultusConfig::parse(value.to_string().as_bytes())
    }

    #[test]
    fn defaults_for_a_minimal_config() {
        let parsed = parse(json!({
            "cniVersion": "1.0.0",
            "name": "multus-cni-network",
            "type": "multus-wasm",
            "clusterNetwork": "calico"
        }))
        .expect("valid");
        let expected = MultusConfig {
            cni_version: "1.0.0".into(),
            name: "multus-cni-network".into(),
            plugin_type: "multus-wasm".into(),
            kubeconfig: None,
            conf_dir: "/etc/cni/multus/net.d".into(),
            cni_dir: "/var/lib/cni/multus".into(),
            bin_dir: "/opt/cni/bin".into(),
            log_file: None,
            log_level: LogLevel::Panic,
            log_format: LogFormat::Text,
            log_to_stderr: true,
            log_options: LogOptions {
                max_age_days: 5,
                max_size_mib: 100,
                max_backups: 5,
                compress: true,
            },
            namespace_isolation: false,
            global_namespaces: vec!["default".into()],
            cluster_network: Some("calico".into()),
            default_networks: vec![],
            delegates: vec![],
            system_namespaces: vec!["kube-system".into()],
            multus_namespace: "kube-system".into(),
            readiness_indicator_file: None,
            retry_delete_on_error: false,
            auxiliary_cni_chain_name: None,
            capabilities: BTreeMap::new(),
            runtime_config: None,
            wasm_plugins: BTreeMap::new(),
            wasm_cache_dir: "/var/lib/multus-wasm/cache".into(),
            wasm_limits: WasmLimits::default(),
            allowed_masters: None,
            manifest_dir: "/etc/multus-wasm/manifests".into(),
            native_plugins: None,
            allowed_macvlan_modes: BTreeMap::from([(
                "*".to_string(),
                vec!["bridge".into(), "private".into(), "vepa".into()],
            )]),
            ipam_data_roots: vec!["/var/lib/cni/networks".into()],
            pod_resources_socket: "/var/lib/kubelet/pod-resources/kubelet.sock".into(),
            device_info_dir: "/var/run/k8s.cni.cncf.io/devinfo".into(),
        };
        assert_eq!(parsed.config, expected);
        assert!(parsed.unknown_fields.is_empty());
        assert_eq!(
            parsed.config.primary(),
            PrimaryNetwork::ClusterNetwork("calico")
        );
    }

    #[test]
    fn every_field_set() {
        let delegate = json!({"type": "bridge", "name": "cbr0"});
        let parsed = parse(json!({
            "cniVersion": "0.4.0",
            "name": "multus",
            "type": "multus-wasm",
            "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
            "confDir": "/tmp/conf",
            "cniDir": "/tmp/cni",
            "binDir": "/tmp/bin",
            "logFile": "/var/log/multus.log",
            "logLevel": "Debug",
            "logToStderr": false,
            "logOptions": {"maxAge": 1, "compress": false},
            "namespaceIsolation": true,
            "globalNamespaces": " shared , default ,,",
            "defaultNetworks": ["extra"],
            "delegates": [delegate],
            "systemNamespaces": [],
            "multusNamespace": "multus",
            "readinessindicatorfile": "/run/ready",
            "retryDeleteOnError": true,
            "auxiliaryCNIChainName": "aux",
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": []},
            "wasmPlugins": {"macvlan": {"path": "/plugins/macvlan.wasm", "sha256": DIGEST}},
            "wasmCacheDir": "/tmp/cache",
            "wasmLimits": {"fuel": 10, "timeoutMs": 20, "memoryMiB": 30, "maxStackKiB": 40, "maxOps": 50, "maxStringBytes": 60, "storeMaxKeys": 70},
            "allowedMasters": ["ens3"],
            "nativePlugins": ["ptp"],
            "allowedMacvlanModes": {"ens3": ["passthru"]},
            "ipamDataRoots": ["/srv/ipam"],
            "manifestDir": "/tmp/manifests",
            "prevResult": {"cniVersion": "0.4.0"}
        }))
        .expect("valid");
        let config = &parsed.config;
        assert_eq!(
            config.kubeconfig,
            Some("/etc/cni/net.d/multus.d/multus.kubeconfig".into())
        );
        assert_eq!(config.conf_dir, PathBuf::from("/tmp/conf"));
        assert_eq!(config.cni_dir, PathBuf::from("/tmp/cni"));
        assert_eq!(config.bin_dir, PathBuf::from("/tmp/bin"));
        assert_eq!(config.log_file, Some("/var/log/multus.log".into()));
        assert_eq!(config.log_level, LogLevel::Debug);
        assert!(!config.log_to_stderr);
        assert_eq!(
            config.log_options,
            LogOptions {
                max_age_days: 1,
                max_size_mib: 100,
                max_backups: 5,
                compress: false
            }
        );
        assert!(config.namespace_isolation);
        assert_eq!(config.global_namespaces, vec!["shared", "default"]);
        assert_eq!(config.default_networks, vec!["extra"]);
        assert_eq!(config.delegates, vec![delegate.clone()]);
        assert!(
            config.system_namespaces.is_empty(),
            "an explicit [] is kept"
        );
        assert_eq!(config.multus_namespace, "multus");
        assert_eq!(config.readiness_indicator_file, Some("/run/ready".into()));
        assert!(config.retry_delete_on_error);
        assert_eq!(config.auxiliary_cni_chain_name.as_deref(), Some("aux"));
        assert_eq!(config.capabilities.get("portMappings"), Some(&true));
        assert_eq!(config.runtime_config, Some(json!({"portMappings": []})));
        assert_eq!(
            config.wasm_plugins.get("macvlan"),
            Some(&WasmPlugin {
                path: "/plugins/macvlan.wasm".into(),
                sha256: DIGEST.into()
            })
        );
        assert_eq!(config.wasm_cache_dir, PathBuf::from("/tmp/cache"));
        assert_eq!(
            config.wasm_limits,
            WasmLimits {
                fuel: Some(10),
                timeout_ms: Some(20),
                memory_mib: Some(30),
                max_stack_kib: Some(40),
                max_ops: Some(50),
                max_string_bytes: Some(60),
                store_max_keys: Some(70),
            }
        );
        assert_eq!(config.native_plugins, Some(vec!["ptp".to_string()]));
        assert!(config.native_plugin_allowed("ptp") && !config.native_plugin_allowed("bridge"));
        assert_eq!(
            config.allowed_macvlan_modes,
            BTreeMap::from([
                ("ens3".to_string(), vec!["passthru".to_string()]),
                (
                    "*".to_string(),
                    vec!["bridge".into(), "private".into(), "vepa".into()]
                ),
            ])
        );
        assert_eq!(config.ipam_data_roots, vec![PathBuf::from("/srv/ipam")]);
        assert_eq!(config.allowed_masters, Some(vec!["ens3".to_string()]));
        assert_eq!(config.manifest_dir, PathBuf::from("/tmp/manifests"));
        assert_eq!(config.primary(), PrimaryNetwork::Delegates(&[delegate]));
        assert!(
            parsed.unknown_fields.is_empty(),
            "{:?}",
            parsed.unknown_fields
        );
    }

    #[test]
    fn unknown_fields_are_reported_sorted() {
        let parsed = parse(json!({
            "clusterNetwork": "calico",
            "cniConf": "/etc/cni/multus/net.d",
            "daemonSocketDir": "/run/multus",
            "confdir": "/typo"
        }))
        .expect("valid");
        assert_eq!(
            parsed.unknown_fields,
            vec!["cniConf", "confdir", "daemonSocketDir"]
        );
        assert_eq!(parsed.config.conf_dir, PathBuf::from(DEFAULT_CONF_DIR));
    }

    #[test]
    fn empty_strings_and_nulls_take_defaults() {
        let parsed = parse(json!({
            "clusterNetwork": "calico",
            "confDir": "",
            "multusNamespace": "",
            "globalNamespaces": "",
            "logLevel": "",
            "kubeconfig": "",
            "logToStderr": null,
            "systemNamespaces": null
        }))
        .expect("valid");
        let config = parsed.config;
        assert_eq!(config.conf_dir, PathBuf::from(DEFAULT_CONF_DIR));
        assert_eq!(config.multus_namespace, "kube-system");
        assert_eq!(config.global_namespaces, vec!["default"]);
        assert_eq!(config.log_level, LogLevel::Panic);
        assert_eq!(config.kubeconfig, None);
        assert!(config.log_to_stderr);
        assert_eq!(config.system_namespaces, vec!["kube-system"]);
    }

    #[test]
    fn cluster_network_wins_over_delegates() {
        let parsed = parse(json!({
            "clusterNetwork": "calico",
            "delegates": [{"type": "bridge"}]
        }))
        .expect("valid");
        assert_eq!(
            parsed.config.primary(),
            PrimaryNetwork::ClusterNetwork("calico")
        );
        assert_eq!(
            parsed.config.delegates.len(),
            1,
            "delegates are kept verbatim"
        );
    }

    #[test]
    fn errors_table() {
        let cases: Vec<(Value, u32, &str)> = vec![
            (
                json!({}),
                7,
                "at least one delegate/clusterNetwork must be specified",
            ),
            (
                json!({"clusterNetwork": "", "delegates": []}),
                7,
                "at least one delegate/clusterNetwork must be specified",
            ),
            (json!([1]), 7, "multus config is not a JSON object"),
            (
                json!({"clusterNetwork": "c", "logToStderr": "yes"}),
                7,
                r#"invalid "logToStderr" in multus config: invalid type: string "yes", expected a boolean"#,
            ),
            (
                json!({"clusterNetwork": "c", "globalNamespaces": ["default"]}),
                7,
                r#"invalid "globalNamespaces" in multus config: invalid type: sequence, expected a string"#,
            ),
            (
                json!({"delegates": [{"type": "bridge"}, "flannel"]}),
                7,
                "delegates[1] in multus config is not a JSON object",
            ),
            (
                json!({"clusterNetwork": "c", "wasmPlugins": {"macvlan": {"path": "/p.wasm", "sha256": DIGEST.to_uppercase()}}}),
                7,
                r#"wasm plugin "macvlan" has invalid sha256 "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF": expected 64 lowercase hex digits"#,
            ),
            (
                json!({"clusterNetwork": "c", "wasmPlugins": {"macvlan": {"path": "/p.wasm", "sha256": "abc"}}}),
                7,
                r#"wasm plugin "macvlan" has invalid sha256 "abc": expected 64 lowercase hex digits"#,
            ),
            (
                json!({"clusterNetwork": "c", "wasmPlugins": {"macvlan": {"path": "", "sha256": DIGEST}}}),
                7,
                r#"wasm plugin "macvlan" has an empty path"#,
            ),
            (
                json!({"clusterNetwork": "c", "wasmPlugins": {"macvlan": {"path": "plugins/p.wasm", "sha256": DIGEST}}}),
                7,
                r#"wasm plugin "macvlan" has relative path plugins/p.wasm: expected an absolute path"#,
            ),
            (
                json!({"clusterNetwork": "c", "wasmPlugins": {"macvlan": {"path": "/p.wasm", "sha256": DIGEST, "sha": 1}}}),
                7,
                r#"invalid "wasmPlugins" in multus config: unknown field `sha`, expected `path` or `sha256`"#,
            ),
            (
                json!({"clusterNetwork": "c", "wasmLimits": {"timeoutMS": 5}}),
                7,
                r#"invalid "wasmLimits" in multus config: unknown field `timeoutMS`, expected one of `fuel`, `timeoutMs`, `memoryMiB`, `maxStackKiB`, `maxOps`, `maxStringBytes`, `storeMaxKeys`"#,
            ),
            (
                json!({"clusterNetwork": "c", "allowedMacvlanModes": ["bridge", "passthrough"]}),
                7,
                r#"allowedMacvlanModes names unknown macvlan mode "passthrough": expected bridge, private, vepa, passthru or source"#,
            ),
            (
                json!({"clusterNetwork": "c", "ipamDataRoots": ["/var/lib/../../etc"]}),
                7,
                "ipamDataRoots entry /var/lib/../../etc must be an absolute path without . or .. components",
            ),
            (
                json!({"clusterNetwork": "c", "ipamDataRoots": ["relative/dir"]}),
                7,
                "ipamDataRoots entry relative/dir must be an absolute path without . or .. components",
            ),
            (
                json!({"clusterNetwork": "c", "wasmLimits": {"memoryMiB": 0}}),
                7,
                "wasmLimits.memoryMiB must be greater than zero",
            ),
            (
                json!({"clusterNetwork": "c", "wasmLimits": {"maxOps": -1}}),
                7,
                r#"invalid "wasmLimits" in multus config: invalid value: integer `-1`, expected u32"#,
            ),
        ];
        for (value, code, expected) in cases {
            let error = parse(value.clone()).expect_err(&format!("{value} should be rejected"));
            assert_eq!(error.to_string(), expected, "config {value}");
            assert_eq!(error.cni_code(), code, "config {value}");
        }
    }

    #[test]
    fn undecodable_bytes_have_code_6() {
        let error = MultusConfig::parse(b"{\"clusterNetwork\": ").expect_err("truncated");
        assert!(matches!(error, ConfigError::Decode { .. }), "{error}");
        assert_eq!(error.cni_code(), 6);
        assert!(
            error.to_string().starts_with("undecodable multus config: "),
            "{error}"
        );
    }

    #[test]
    fn log_levels_parse_case_insensitively() {
        let cases = [
            ("panic", LogLevel::Panic),
            ("ERROR", LogLevel::Error),
            ("Verbose", LogLevel::Verbose),
            ("debug", LogLevel::Debug),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<LogLevel>(), Ok(expected), "{text:?}");
        }
        assert!(LogLevel::Debug > LogLevel::Verbose && LogLevel::Error > LogLevel::Panic);
    }

    #[test]
    fn unknown_log_level_and_format_fall_back_with_a_warning() {
        let parsed = parse(json!({
            "clusterNetwork": "c",
            "logLevel": "info",
            "logFormat": "xml"
        }))
        .expect("parses");
        assert_eq!(parsed.config.log_level, LogLevel::Panic);
        assert_eq!(parsed.config.log_format, LogFormat::Text);
        assert_eq!(
            parsed.warnings,
            vec![
                r#"invalid logLevel "info": expected one of panic, error, verbose, debug: using the default (panic)"#.to_string(),
                r#"unknown logFormat "xml" (expected text or json): using text"#.to_string(),
            ]
        );
        let parsed = parse(json!({"clusterNetwork": "c", "logFormat": "JSON"})).expect("parses");
        assert_eq!(parsed.config.log_format, LogFormat::Json);
        assert!(parsed.warnings.is_empty());
    }
}
