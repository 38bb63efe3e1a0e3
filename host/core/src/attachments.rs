//! Turning network selections into delegate specs: a NAD's config (or its
//! confDir fallback), `cni-args` injection, namespace isolation, interface
//! names, default-route decisions and the runtime arguments one delegate
//! gets.
//!
//! Everything here is a plain function of its inputs (the host reads
//! `confDir` for [`config_from_conf_files`]). Where this module
//! follows the NPWG multi-net-spec rather than Multus, the item's doc says so:
//! a requested `ips`/`mac` no delegate can honour is an error (Multus drops
//! it silently), and default-route filtering is per address family (Multus
//! removes both families' default routes everywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::annotations::{Bandwidth, NetworkSelectionElement, PortMapping};
pub use crate::plan::IpFamily;

/// The file extensions a confDir lookup considers, as libcni's `ConfFiles`.
pub const CONF_FILE_EXTENSIONS: &[&str] = &["conf", "json", "conflist"];

/// The runtimeConfig keys (and capability names) this module fills.
pub mod capability {
    pub const IPS: &str = "ips";
    pub const MAC: &str = "mac";
    pub const INFINIBAND_GUID: &str = "infinibandGUID";
    pub const PORT_MAPPINGS: &str = "portMappings";
    pub const BANDWIDTH: &str = "bandwidth";
    pub const DEVICE_ID: &str = "deviceID";
}

/// An attachment that cannot be built or would break the pod's networking.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// A NAD's `spec.config` is not JSON.
    #[error("undecodable config of network {network:?}: {message}")]
    ConfigDecode { network: String, message: String },
    /// A delegate config is not a JSON object.
    #[error("config of network {network:?} is not a JSON object")]
    ConfigNotAnObject { network: String },
    /// A delegate config's `name` is neither absent nor a string.
    #[error("config of network {network:?} has a \"name\" that is not a string")]
    NameNotAString { network: String },
    /// A delegate config has neither a `type` nor a `plugins` list.
    #[error("config of network {network:?}: delegate must have the 'type' or 'plugin' field")]
    NoTypeOrPlugins { network: String },
    /// A conflist plugin has no `type`.
    #[error(
        "config of network {network:?}: a plugin delegate must have the 'type' field (plugins[{index}] has none)"
    )]
    PluginWithoutType { network: String, index: usize },
    /// `confDir` exists but cannot be listed.
    #[error("cannot read cni dir {}: {source}", path.display())]
    ConfDirRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file in `confDir` cannot be read.
    #[error("error loading CNI config file {}: {source}", path.display())]
    ConfFileRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file in `confDir` is not JSON.
    #[error("error loading CNI config file {}: {message}", path.display())]
    ConfFileDecode { path: PathBuf, message: String },
    /// The matching `.conf`/`.json` file has no `type`.
    #[error("error loading CNI config file {}: no 'type'; perhaps this is a .conflist?", path.display())]
    ConfFileWithoutType { path: PathBuf },
    /// The matching `.conflist` file has no usable `plugins`.
    #[error("error loading CNI config file {}: no 'plugins' list, or a plugin without 'type'", path.display())]
    ConfListWithoutPlugins { path: PathBuf },
    /// No file in `confDir` has the NAD's name.
    #[error("no network available in the name {network} in cni dir {}", conf_dir.display())]
    NoNetworkInConfDir { network: String, conf_dir: PathBuf },
    /// `cni-args` cannot be merged because the config's `args` (or
    /// `args.cni`) is not an object.
    #[error("cannot merge cni-args into network {network:?}: {field} is not a JSON object")]
    ArgsNotAnObject { network: String, field: String },
    /// Namespace isolation forbids the pod from using the NAD's namespace.
    #[error(
        "namespace isolation enabled, annotation violates permission, pod is in namespace {pod_namespace} but refers to target namespace {target_namespace}"
    )]
    NamespaceIsolation {
        pod_namespace: String,
        target_namespace: String,
    },
    /// Two attachments end up with the same interface name.
    #[error("attachments {first:?} and {second:?} both use interface name {ifname:?}")]
    DuplicateIfname {
        ifname: String,
        first: String,
        second: String,
    },
    /// More than one default route of one family was requested.
    #[error("multus does not support ECMP for default-route: {family} default route requested by {}", .requests.join(" and "))]
    Ecmp {
        family: IpFamily,
        requests: Vec<String>,
    },
    /// A requested `ips`/`mac` that neither a declared capability nor a
    /// legacy CNI_ARGS reader of the delegate would honour.
    #[error("network {network:?} requests {capability} but no plugin of its delegate declares the {capability:?} capability and none of its types ({}) reads the legacy {legacy_argument}= argument; add \"capabilities\": {{\"{capability}\": true}} to its config", .types.join(", "))]
    MissingCapability {
        network: String,
        capability: &'static str,
        legacy_argument: &'static str,
        types: Vec<String>,
    },
    /// A NAD's `ipam.dataDir` points outside the operator's data roots.
    #[error(
        "network {network:?} sets ipam.dataDir {data_dir:?}, which is not under the operator's ipamDataRoots {roots:?}"
    )]
    DataDirOutsideRoots {
        network: String,
        data_dir: String,
        roots: Vec<PathBuf>,
    },
    /// A selection value could not be encoded into runtimeConfig.
    #[error("cannot encode {capability} of network {network:?} into runtimeConfig: {message}")]
    EncodeRuntimeConfig {
        network: String,
        capability: &'static str,
        message: String,
    },
}

impl AttachError {
    /// The CNI error code: 6 for undecodable JSON, 7 for an invalid config
    /// or selection, 999 for everything else (I/O, missing networks).
    pub fn cni_code(&self) -> u32 {
        match self {
            AttachError::ConfigDecode { .. } | AttachError::ConfFileDecode { .. } => 6,
            AttachError::ConfigNotAnObject { .. }
            | AttachError::NameNotAString { .. }
            | AttachError::NoTypeOrPlugins { .. }
            | AttachError::PluginWithoutType { .. }
            | AttachError::ConfFileWithoutType { .. }
            | AttachError::ConfListWithoutPlugins { .. }
            | AttachError::ArgsNotAnObject { .. }
            | AttachError::NamespaceIsolation { .. }
            | AttachError::DuplicateIfname { .. }
            | AttachError::Ecmp { .. }
            | AttachError::MissingCapability { .. }
            | AttachError::DataDirOutsideRoots { .. } => 7,
            AttachError::ConfDirRead { .. }
            | AttachError::ConfFileRead { .. }
            | AttachError::NoNetworkInConfDir { .. }
            | AttachError::EncodeRuntimeConfig { .. } => 999,
        }
    }
}

/// A CNI config file of `confDir`: its path and its bytes (or why they
/// could not be read), as the host read them, in name order.
#[derive(Debug)]
pub struct ConfFile {
    pub path: PathBuf,
    pub bytes: Result<Vec<u8>, io::Error>,
}

/// The delegate config of a NAD whose `spec.config` is `text`.
///
/// The text is parsed as JSON and gets `"name": nad_name` when its name is
/// missing, `null` or empty (multi-net-spec §3.4.2); everything else is kept
/// verbatim. The config must name a plugin: `type`, or a `plugins` list
/// whose every entry has a `type` (Multus checks only the first).
pub fn config_from_spec(nad_name: &str, text: &str) -> Result<Value, AttachError> {
    let mut config: Value =
        serde_json::from_str(text).map_err(|error| AttachError::ConfigDecode {
            network: nad_name.to_string(),
            message: error.to_string(),
        })?;
    let Value::Object(fields) = &mut config else {
        return Err(AttachError::ConfigNotAnObject {
            network: nad_name.to_string(),
        });
    };
    match fields.get("name") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) if name.is_empty() => {}
        Some(Value::String(_)) => {
            check_delegate_config(nad_name, &config)?;
            return Ok(config);
        }
        Some(_) => {
            return Err(AttachError::NameNotAString {
                network: nad_name.to_string(),
            });
        }
    }
    fields.insert("name".to_string(), Value::String(nad_name.to_string()));
    check_delegate_config(nad_name, &config)?;
    Ok(config)
}

/// The delegate config of a NAD without `spec.config`: the first of
/// `files` (confDir's `.conf`, `.json`, `.conflist` files, in name order)
/// whose `name` equals the NAD name. As with Multus, a file that cannot be
/// read or is not JSON fails the lookup (the broken file may be the one
/// wanted).
pub fn config_from_conf_files(
    nad_name: &str,
    conf_dir: &Path,
    files: Vec<ConfFile>,
) -> Result<Value, AttachError> {
    for file in files {
        let path = file.path;
        let bytes = file.bytes.map_err(|source| AttachError::ConfFileRead {
            path: path.clone(),
            source,
        })?;
        let config: Value =
            serde_json::from_slice(&bytes).map_err(|error| AttachError::ConfFileDecode {
                path: path.clone(),
                message: error.to_string(),
            })?;
        if config.get("name").and_then(Value::as_str) != Some(nad_name) {
            continue;
        }
        if path.extension() == Some(OsStr::new("conflist")) {
            let plugins_ok = config
                .get("plugins")
                .and_then(Value::as_array)
                .is_some_and(|plugins| !plugins.is_empty() && plugins.iter().all(has_type));
            if !plugins_ok {
                return Err(AttachError::ConfListWithoutPlugins { path });
            }
        } else if !has_type(&config) {
            return Err(AttachError::ConfFileWithoutType { path });
        }
        return Ok(config);
    }
    Err(AttachError::NoNetworkInConfDir {
        network: nad_name.to_string(),
        conf_dir: conf_dir.to_path_buf(),
    })
}

fn has_type(config: &Value) -> bool {
    config
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|plugin_type| !plugin_type.is_empty())
}

/// Whether a delegate config is a conflist: no `type`, a `plugins` list.
pub fn is_conflist(config: &Value) -> bool {
    !has_type(config) && config.get("plugins").is_some_and(Value::is_array)
}

/// Checks that a delegate config names a plugin: a non-empty `type`, or a
/// non-empty `plugins` list whose every entry has a non-empty `type`.
pub fn check_delegate_config(network: &str, config: &Value) -> Result<(), AttachError> {
    if !config.is_object() {
        return Err(AttachError::ConfigNotAnObject {
            network: network.to_string(),
        });
    }
    if has_type(config) {
        return Ok(());
    }
    let plugins = match config.get("plugins").and_then(Value::as_array) {
        Some(plugins) if !plugins.is_empty() => plugins,
        _ => {
            return Err(AttachError::NoTypeOrPlugins {
                network: network.to_string(),
            });
        }
    };
    match plugins.iter().position(|plugin| !has_type(plugin)) {
        Some(index) => Err(AttachError::PluginWithoutType {
            network: network.to_string(),
            index,
        }),
        None => Ok(()),
    }
}

/// The plugin configs of a delegate: the `plugins` of a conflist, else the
/// config itself.
pub fn plugin_configs(config: &Value) -> Vec<&Value> {
    match config.get("plugins").and_then(Value::as_array) {
        Some(plugins) if is_conflist(config) => plugins.iter().collect(),
        _ => vec![config],
    }
}

/// The capabilities some plugin of the delegate declares `true`.
pub fn declared_capabilities(config: &Value) -> BTreeSet<String> {
    plugin_configs(config)
        .into_iter()
        .flat_map(crate::cni::declared_capabilities)
        .map(str::to_owned)
        .collect()
}

/// Every explicit `ipam.dataDir` of the delegate's plugins must be an
/// absolute, normalized path under one of `roots` (component-wise), so a
/// NAD cannot make an IPAM plugin create directories, or write
/// reservations, anywhere else on the node. An unset `dataDir` is the
/// plugin's own default.
pub fn check_ipam_data_dirs(
    network: &str,
    config: &Value,
    roots: &[PathBuf],
) -> Result<(), AttachError> {
    for plugin in plugin_configs(config) {
        let Some(data_dir) = plugin.get("ipam").and_then(|ipam| ipam.get("dataDir")) else {
            continue;
        };
        let text = match data_dir {
            Value::Null => continue,
            Value::String(text) if text.is_empty() => continue,
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let path = std::path::Path::new(&text);
        let inside = crate::config::is_normal_absolute(path)
            && roots.iter().any(|root| path.starts_with(root));
        if !inside {
            return Err(AttachError::DataDirOutsideRoots {
                network: network.into(),
                data_dir: text,
                roots: roots.to_vec(),
            });
        }
    }
    Ok(())
}

/// Every plugin `type` and `ipam.type` of the delegate.
pub fn delegate_types(config: &Value) -> BTreeSet<String> {
    let mut types = BTreeSet::new();
    for plugin in plugin_configs(config) {
        let plugin_type = plugin.get("type").and_then(Value::as_str);
        let ipam_type = plugin
            .get("ipam")
            .and_then(|ipam| ipam.get("type"))
            .and_then(Value::as_str);
        for found in [plugin_type, ipam_type].into_iter().flatten() {
            if !found.is_empty() {
                types.insert(found.to_string());
            }
        }
    }
    types
}

/// Merges `cni_args` into the config's `args.cni`, the annotation's keys
/// winning over the NAD's (multi-net-spec §4.1.2.1.6); into every plugin of
/// a conflist. Other keys of `args` are kept. An empty map changes nothing.
/// Unlike Multus, an `args` or `args.cni` that is not an object is an error
/// rather than silently replaced.
pub fn inject_cni_args(
    config: &mut Value,
    cni_args: &Map<String, Value>,
) -> Result<(), AttachError> {
    if cni_args.is_empty() {
        return Ok(());
    }
    let network = config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let args_error = |prefix: &str, field: &str| AttachError::ArgsNotAnObject {
        network: network.clone(),
        field: match (prefix.is_empty(), field.is_empty()) {
            (true, true) => "the config".to_string(),
            (true, false) => field.to_string(),
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{field}"),
        },
    };
    if is_conflist(config) {
        if let Some(Value::Array(plugins)) = config.get_mut("plugins") {
            for (index, plugin) in plugins.iter_mut().enumerate() {
                merge_cni_args(plugin, cni_args)
                    .map_err(|field| args_error(&format!("plugins[{index}]"), field))?;
            }
        }
        Ok(())
    } else {
        merge_cni_args(config, cni_args).map_err(|field| args_error("", field))
    }
}

/// Merges into `target.args.cni`; on failure names the field that is not an
/// object ("" for `target` itself).
fn merge_cni_args(target: &mut Value, cni_args: &Map<String, Value>) -> Result<(), &'static str> {
    let Value::Object(fields) = target else {
        return Err("");
    };
    let args = object_entry(fields, "args").ok_or("args")?;
    let cni = object_entry(args, "cni").ok_or("args.cni")?;
    for (key, value) in cni_args {
        cni.insert(key.clone(), value.clone());
    }
    Ok(())
}

/// The object under `key`, created when absent or `null`; `None` when the
/// key holds something else.
fn object_entry<'map>(
    fields: &'map mut Map<String, Value>,
    key: &str,
) -> Option<&'map mut Map<String, Value>> {
    let entry = fields
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if entry.is_null() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut()
}

/// Multus's namespace isolation: with `enabled`, a pod may only use NADs of
/// its own namespace or of `global_namespaces`. Not applied to the cluster
/// network, `defaultNetworks` or the default-network annotation.
pub fn check_namespace_isolation(
    pod_namespace: &str,
    target_namespace: &str,
    enabled: bool,
    global_namespaces: &[String],
) -> Result<(), AttachError> {
    let allowed = !enabled
        || pod_namespace == target_namespace
        || global_namespaces
            .iter()
            .any(|namespace| namespace == target_namespace);
    if allowed {
        Ok(())
    } else {
        Err(AttachError::NamespaceIsolation {
            pod_namespace: pod_namespace.to_string(),
            target_namespace: target_namespace.to_string(),
        })
    }
}

/// One attachment: the delegate config and what the pod asked of it.
#[derive(Debug, Clone, PartialEq)]
pub struct DelegateSpec {
    /// `<namespace>/<nad>`, or the cluster network's name; used for
    /// network-status and messages (not the CNI `name`, which stays in
    /// `config` and keys the result cache).
    pub name: String,
    /// The delegate config (single or conflist), `cni-args` already merged.
    pub config: Value,
    /// The interface name the selection asked for.
    pub interface_request: Option<String>,
    /// The final interface name; empty until [`assign_ifnames`].
    pub ifname: String,
    /// The cluster network (or its replacement by the default-network annotation).
    pub is_master: bool,
    /// Written by the operator (clusterNetwork, `delegates`,
    /// `defaultNetworks`) rather than chosen through a pod annotation: its
    /// plugin types may run natively whatever `nativePlugins` says, and its
    /// `ipam.dataDir` is not limited to `ipamDataRoots`.
    pub operator: bool,
    /// Requested addresses (IP or CIDR, as written).
    pub ips: Vec<String>,
    /// Requested MAC, lowercase colon form.
    pub mac: Option<String>,
    /// Requested InfiniBand GUID.
    pub infiniband_guid: Option<String>,
    /// The device ID: asked for by the pod's annotation, or (replacing
    /// it) the device kubelet allocated for `resource_name`.
    pub device_id: Option<String>,
    /// The NAD's `k8s.v1.cni.cncf.io/resourceName`: this attachment needs
    /// one of the pod's devices of that resource ([`crate::devices`]).
    pub resource_name: Option<String>,
    /// The selection's `cni-args` (already merged into `config`).
    pub cni_args: Option<Map<String, Value>>,
    /// Requested port mappings.
    pub port_mappings: Vec<PortMapping>,
    /// Requested traffic shaping.
    pub bandwidth: Option<Bandwidth>,
    /// Requested default-route gateways (see [`check_default_route`]).
    pub default_route: Option<Vec<IpAddr>>,
}

impl DelegateSpec {
    /// The cluster network's attachment: the master, nothing requested.
    pub fn cluster_network(name: impl Into<String>, config: Value) -> DelegateSpec {
        DelegateSpec {
            name: name.into(),
            config,
            interface_request: None,
            ifname: String::new(),
            is_master: true,
            operator: true,
            ips: Vec::new(),
            mac: None,
            infiniband_guid: None,
            device_id: None,
            resource_name: None,
            cni_args: None,
            port_mappings: Vec::new(),
            bandwidth: None,
            default_route: None,
        }
    }

    /// A selected network's attachment, named `<namespace>/<name>`, with the
    /// selection's `cni-args` merged into `config`. Set `is_master`
    /// afterwards for the default-network annotation's network.
    pub fn from_selection(
        selection: &NetworkSelectionElement,
        mut config: Value,
    ) -> Result<DelegateSpec, AttachError> {
        if let Some(cni_args) = &selection.cni_args {
            inject_cni_args(&mut config, cni_args)?;
        }
        let interface_request = selection
            .interface
            .clone()
            .or_else(|| selection.interface_request.clone())
            .filter(|name| !name.is_empty());
        Ok(DelegateSpec {
            name: format!("{}/{}", selection.namespace, selection.name),
            config,
            interface_request,
            ifname: String::new(),
            is_master: false,
            operator: false,
            ips: selection.ips.clone().unwrap_or_default(),
            mac: selection.mac.clone(),
            infiniband_guid: selection.infiniband_guid.clone(),
            device_id: selection.device_id.clone(),
            resource_name: None,
            cni_args: selection.cni_args.clone(),
            port_mappings: selection.port_mappings.clone().unwrap_or_default(),
            bandwidth: selection.bandwidth,
            default_route: selection.default_route.clone(),
        })
    }

    /// The CNI network name (the config's `name`), which keys the result cache.
    pub fn cni_network_name(&self) -> &str {
        self.config
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// Gives every attachment its interface name: the requested one, else
/// `cni_ifname` for the master, else `net<position>`.
///
/// As in Multus, `<position>` is the attachment's index in the whole list
/// (cluster network first), not a counter of unnamed interfaces: with the
/// cluster network, `a@foo` and `b`, `b` gets `net2`. Two attachments with
/// the same final name are an error naming both (Multus only notices when
/// the second ADD finds the interface already in the netns).
pub fn assign_ifnames(specs: &mut [DelegateSpec], cni_ifname: &str) -> Result<(), AttachError> {
    for (position, spec) in specs.iter_mut().enumerate() {
        spec.ifname = match &spec.interface_request {
            Some(requested) => requested.clone(),
            None if spec.is_master => cni_ifname.to_string(),
            None => format!("net{position}"),
        };
    }
    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    for spec in specs.iter() {
        if let Some(first) = owners.insert(&spec.ifname, &spec.name) {
            return Err(AttachError::DuplicateIfname {
                ifname: spec.ifname.clone(),
                first: first.to_string(),
                second: spec.name.clone(),
            });
        }
    }
    Ok(())
}

/// What to do with one attachment's default routes after its ADD.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DefaultRouteAction {
    /// Delete the IPv4 default routes (`0.0.0.0/0` or no destination) on
    /// this attachment's interface.
    pub remove_v4_default: bool,
    /// Delete the IPv6 default routes (`::/0` or no destination) on it.
    pub remove_v6_default: bool,
    /// Then add a default route via each of these gateways on it.
    pub add_gateways: Vec<IpAddr>,
}

/// Checks the `default-route` requests and decides, per attachment (same
/// order as `specs`), which default routes to remove and which to add.
///
/// - At most one IPv4 and one IPv6 default route may be requested across
///   all attachments (`multus does not support ECMP for default-route`).
/// - A gateway of family F on attachment A: every attachment, A included,
///   drops its delegate's F default routes, then A adds the gateway.
/// - `default-route: []` on A selects A's own delegate-provided default
///   routes, for both families: A keeps them and every other attachment
///   drops its own. It therefore claims both families, so another
///   attachment requesting any default route conflicts with it (the spec:
///   the key "must only be set on one item").
///
/// Multus removes both families' default routes from every attachment as
/// soon as any default route is requested, so a v4 request also deleted
/// eth0's v6 default route. This follows the multi-net-spec §4.1.2.1.9 per
/// family instead: a family nobody requested keeps its routes everywhere.
pub fn check_default_route(specs: &[DelegateSpec]) -> Result<Vec<DefaultRouteAction>, AttachError> {
    let mut v4_claims: Vec<(usize, Option<IpAddr>)> = Vec::new();
    let mut v6_claims: Vec<(usize, Option<IpAddr>)> = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        match &spec.default_route {
            None => {}
            Some(gateways) if gateways.is_empty() => {
                v4_claims.push((index, None));
                v6_claims.push((index, None));
            }
            Some(gateways) => {
                for gateway in gateways {
                    match IpFamily::of(gateway) {
                        IpFamily::V4 => v4_claims.push((index, Some(*gateway))),
                        IpFamily::V6 => v6_claims.push((index, Some(*gateway))),
                    }
                }
            }
        }
    }
    for (family, claims) in [(IpFamily::V4, &v4_claims), (IpFamily::V6, &v6_claims)] {
        if claims.len() > 1 {
            let requests = claims
                .iter()
                .map(|(index, gateway)| {
                    let name = specs.get(*index).map_or("", |spec| spec.name.as_str());
                    match gateway {
                        Some(gateway) => format!("{name:?} via {gateway}"),
                        None => format!("{name:?} (default-route: [])"),
                    }
                })
                .collect();
            return Err(AttachError::Ecmp { family, requests });
        }
    }
    // The attachment that owns the family's default route, and whether it
    // replaces its delegate's route with an explicit gateway.
    let remove_default = |claim: Option<&(usize, Option<IpAddr>)>, index: usize| match claim {
        None => false,
        Some((owner, gateway)) => *owner != index || gateway.is_some(),
    };
    Ok(specs
        .iter()
        .enumerate()
        .map(|(index, spec)| DefaultRouteAction {
            remove_v4_default: remove_default(v4_claims.first(), index),
            remove_v6_default: remove_default(v6_claims.first(), index),
            add_gateways: spec.default_route.clone().unwrap_or_default(),
        })
        .collect())
}

/// Which delegate types read the legacy `IP=` and `MAC=` CNI_ARGS. A type
/// matches when it is the `type` or the `ipam.type` of any plugin of the
/// delegate. For the reference plugins: `IP=` is read by host-local and
/// static, `MAC=` by macvlan (and bridge, tuning).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LegacyArgsSupport {
    /// Types that read `IP=`.
    pub ip_types: BTreeSet<String>,
    /// Types that read `MAC=`.
    pub mac_types: BTreeSet<String>,
}

impl LegacyArgsSupport {
    pub fn new<Name: Into<String>>(
        ip_types: impl IntoIterator<Item = Name>,
        mac_types: impl IntoIterator<Item = Name>,
    ) -> LegacyArgsSupport {
        LegacyArgsSupport {
            ip_types: ip_types.into_iter().map(Into::into).collect(),
            mac_types: mac_types.into_iter().map(Into::into).collect(),
        }
    }
}

/// The runtimeConfig a delegate gets from its selection: `ips`, `mac`,
/// `infinibandGUID`, `portMappings`, `bandwidth` and `deviceID`, each only
/// when requested and when `declared_capabilities` (see
/// [`declared_capabilities`]) holds its capability.
///
/// A requested `ips` or `mac` without the capability is an error naming the
/// network and the capability (multi-net-spec: the attachment must fail;
/// Multus silently drops it, the most reported static-IP confusion), unless
/// a type of the delegate is in `legacy_args` for it, since those read the
/// `IP=`/`MAC=` of [`legacy_cni_args`]. The other keys are dropped silently
/// without their capability, as in Multus.
pub fn capability_args(
    spec: &DelegateSpec,
    declared_capabilities: &BTreeSet<String>,
    legacy_args: &LegacyArgsSupport,
) -> Result<Map<String, Value>, AttachError> {
    let declares = |capability: &str| declared_capabilities.contains(capability);
    let types = delegate_types(&spec.config);
    let missing =
        |capability: &'static str, legacy_argument: &'static str| AttachError::MissingCapability {
            network: spec.name.clone(),
            capability,
            legacy_argument,
            types: types.iter().cloned().collect(),
        };
    let encode = |capability: &'static str, value: Result<Value, serde_json::Error>| {
        value.map_err(|error| AttachError::EncodeRuntimeConfig {
            network: spec.name.clone(),
            capability,
            message: error.to_string(),
        })
    };

    let mut runtime_config = Map::new();
    if !spec.ips.is_empty() {
        if declares(capability::IPS) {
            let ips = spec.ips.iter().cloned().map(Value::String).collect();
            runtime_config.insert(capability::IPS.to_string(), Value::Array(ips));
        } else if types.is_disjoint(&legacy_args.ip_types) {
            return Err(missing(capability::IPS, "IP"));
        }
    }
    if let Some(mac) = &spec.mac {
        if declares(capability::MAC) {
            runtime_config.insert(capability::MAC.to_string(), Value::String(mac.clone()));
        } else if types.is_disjoint(&legacy_args.mac_types) {
            return Err(missing(capability::MAC, "MAC"));
        }
    }
    if let Some(guid) = &spec.infiniband_guid
        && declares(capability::INFINIBAND_GUID)
    {
        runtime_config.insert(
            capability::INFINIBAND_GUID.to_string(),
            Value::String(guid.clone()),
        );
    }
    if !spec.port_mappings.is_empty() && declares(capability::PORT_MAPPINGS) {
        let value = encode(
            capability::PORT_MAPPINGS,
            serde_json::to_value(&spec.port_mappings),
        )?;
        runtime_config.insert(capability::PORT_MAPPINGS.to_string(), value);
    }
    if let Some(bandwidth) = &spec.bandwidth
        && declares(capability::BANDWIDTH)
    {
        let value = encode(capability::BANDWIDTH, serde_json::to_value(bandwidth))?;
        runtime_config.insert(capability::BANDWIDTH.to_string(), value);
    }
    if let Some(device_id) = &spec.device_id
        && declares(capability::DEVICE_ID)
    {
        runtime_config.insert(
            capability::DEVICE_ID.to_string(),
            Value::String(device_id.clone()),
        );
    }
    Ok(runtime_config)
}

/// The legacy CNI_ARGS for a selection's requests: `IP=a,b` when ips are
/// requested and `MAC=m` when a MAC is, in that order. Multus appends them
/// for every delegate (deprecated since 3.5 but relied upon: static IPAM
/// reads `IP=` without any capability).
pub fn legacy_cni_args(spec: &DelegateSpec) -> Vec<(String, String)> {
    let mut args = Vec::new();
    if !spec.ips.is_empty() {
        args.push(("IP".to_string(), spec.ips.join(",")));
    }
    if let Some(mac) = &spec.mac {
        args.push(("MAC".to_string(), mac.clone()));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_data_dirs_stay_under_the_operators_roots() {
        let roots = vec![PathBuf::from("/var/lib/cni/networks")];
        let with = |data_dir: Value| json!({"type": "macvlan", "ipam": {"type": "host-local", "dataDir": data_dir}});
        for ok in [
            json!("/var/lib/cni/networks"),
            json!("/var/lib/cni/networks/tenant-a"),
            json!(""),
            Value::Null,
        ] {
            check_ipam_data_dirs("n", &with(ok.clone()), &roots)
                .unwrap_or_else(|err| panic!("{ok}: {err}"));
        }
        check_ipam_data_dirs("n", &json!({"type": "bridge"}), &roots).unwrap();
        for bad in [
            json!("/etc/cron.d"),
            json!("/var/lib/cni/networks/../../../etc"),
            json!("/var/lib/cni/networks/./x"),
            json!("/var/lib/cni/networks-evil"),
            json!("relative/dir"),
            json!(42),
        ] {
            let err = check_ipam_data_dirs("tenant/net", &with(bad.clone()), &roots).unwrap_err();
            assert_eq!(err.cni_code(), 7, "{bad}");
            assert!(err.to_string().contains("ipamDataRoots"), "{err}");
        }
        // Every plugin of a conflist is checked.
        let list = json!({"cniVersion": "1.0.0", "name": "l", "plugins": [
            {"type": "macvlan", "ipam": {"type": "host-local", "dataDir": "/var/lib/cni/networks"}},
            {"type": "tuning", "ipam": {"dataDir": "/tmp/x"}}
        ]});
        assert!(check_ipam_data_dirs("l", &list, &roots).is_err());
    }
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn spec(name: &str) -> DelegateSpec {
        DelegateSpec {
            is_master: false,
            ..DelegateSpec::cluster_network(name, json!({"name": name, "type": "macvlan"}))
        }
    }

    #[test]
    fn nad_config_from_spec_table() {
        let cases: Vec<(&str, Value)> = vec![
            (
                r#"{"cniVersion":"1.0.0","name":"kept","type":"macvlan","master":"ens3"}"#,
                json!({"cniVersion":"1.0.0","name":"kept","type":"macvlan","master":"ens3"}),
            ),
            (
                r#"{"type":"macvlan"}"#,
                json!({"name":"nad","type":"macvlan"}),
            ),
            (
                r#"{"name":"","type":"macvlan"}"#,
                json!({"name":"nad","type":"macvlan"}),
            ),
            (
                r#"{"name":null,"type":"macvlan","x-unknown":{"a":1}}"#,
                json!({"name":"nad","type":"macvlan","x-unknown":{"a":1}}),
            ),
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"macvlan"},{"type":"tuning"}]}"#,
                json!({"cniVersion":"1.0.0","name":"nad","plugins":[{"type":"macvlan"},{"type":"tuning"}]}),
            ),
        ];
        for (spec_config, expected) in cases {
            let config = config_from_spec("nad", spec_config)
                .unwrap_or_else(|error| panic!("{spec_config} should resolve: {error}"));
            assert_eq!(config, expected, "spec.config {spec_config}");
        }
    }

    #[test]
    fn nad_config_from_spec_errors_table() {
        let cases = [
            (
                r#"{"type":"#,
                6,
                r#"undecodable config of network "nad": EOF while parsing a value at line 1 column 8"#,
            ),
            (
                r#"["a"]"#,
                7,
                r#"config of network "nad" is not a JSON object"#,
            ),
            (
                r#"{"name":3,"type":"macvlan"}"#,
                7,
                r#"config of network "nad" has a "name" that is not a string"#,
            ),
            (
                r#"{"name":"x"}"#,
                7,
                r#"config of network "nad": delegate must have the 'type' or 'plugin' field"#,
            ),
            (
                r#"{"plugins":[]}"#,
                7,
                r#"config of network "nad": delegate must have the 'type' or 'plugin' field"#,
            ),
            (
                r#"{"plugins":[{"type":"macvlan"},{"mtu":9000}]}"#,
                7,
                r#"config of network "nad": a plugin delegate must have the 'type' field (plugins[1] has none)"#,
            ),
        ];
        for (spec_config, code, expected) in cases {
            let error = config_from_spec("nad", spec_config)
                .expect_err(&format!("{spec_config} should be rejected"));
            assert_eq!(error.to_string(), expected, "spec.config {spec_config}");
            assert_eq!(error.cni_code(), code, "spec.config {spec_config}");
        }
    }

    #[test]
    fn cni_args_merge_table() {
        let annotation_args = object(json!({"foo": "annotation", "extra": 1}));
        let cases: Vec<(Value, Value)> = vec![
            (
                json!({"name": "n", "type": "macvlan"}),
                json!({"name": "n", "type": "macvlan", "args": {"cni": {"foo": "annotation", "extra": 1}}}),
            ),
            (
                json!({"name": "n", "type": "macvlan", "args": {"cni": {"foo": "nad", "keep": true}, "other": 2}}),
                json!({"name": "n", "type": "macvlan", "args": {"cni": {"foo": "annotation", "keep": true, "extra": 1}, "other": 2}}),
            ),
            (
                json!({"name": "n", "type": "macvlan", "args": null}),
                json!({"name": "n", "type": "macvlan", "args": {"cni": {"foo": "annotation", "extra": 1}}}),
            ),
            (
                json!({"name": "n", "plugins": [{"type": "macvlan"}, {"type": "tuning", "args": {"cni": {"foo": "nad"}}}]}),
                json!({"name": "n", "plugins": [
                    {"type": "macvlan", "args": {"cni": {"foo": "annotation", "extra": 1}}},
                    {"type": "tuning", "args": {"cni": {"foo": "annotation", "extra": 1}}}
                ]}),
            ),
        ];
        for (mut config, expected) in cases {
            let original = config.clone();
            inject_cni_args(&mut config, &annotation_args).expect("mergeable");
            assert_eq!(config, expected, "config {original}");
        }

        let mut untouched = json!({"name": "n", "type": "macvlan"});
        inject_cni_args(&mut untouched, &Map::new()).expect("empty args");
        assert_eq!(untouched, json!({"name": "n", "type": "macvlan"}));
    }

    #[test]
    fn cni_args_merge_errors() {
        let annotation_args = object(json!({"foo": "bar"}));
        let cases = [
            (
                json!({"name": "n", "type": "macvlan", "args": "x"}),
                r#"cannot merge cni-args into network "n": args is not a JSON object"#,
            ),
            (
                json!({"name": "n", "type": "macvlan", "args": {"cni": []}}),
                r#"cannot merge cni-args into network "n": args.cni is not a JSON object"#,
            ),
            (
                json!({"name": "n", "plugins": [{"type": "a"}, {"type": "b", "args": 1}]}),
                r#"cannot merge cni-args into network "n": plugins[1].args is not a JSON object"#,
            ),
            (
                json!({"name": "n", "plugins": ["a"]}),
                r#"cannot merge cni-args into network "n": plugins[0] is not a JSON object"#,
            ),
        ];
        for (mut config, expected) in cases {
            let error = inject_cni_args(&mut config, &annotation_args).expect_err("not mergeable");
            assert_eq!(error.to_string(), expected);
            assert_eq!(error.cni_code(), 7);
        }
    }

    #[test]
    fn namespace_isolation_table() {
        let global = vec!["default".to_string(), "shared".to_string()];
        let cases = [
            ("pods", "other", false, true),
            ("pods", "pods", true, true),
            ("pods", "default", true, true),
            ("pods", "shared", true, true),
            ("pods", "other", true, false),
        ];
        for (pod_namespace, target_namespace, enabled, allowed) in cases {
            let result =
                check_namespace_isolation(pod_namespace, target_namespace, enabled, &global);
            assert_eq!(
                result.is_ok(),
                allowed,
                "{pod_namespace} -> {target_namespace}, enabled {enabled}"
            );
        }
        let error =
            check_namespace_isolation("pods", "other", true, &global).expect_err("isolated");
        assert_eq!(
            error.to_string(),
            "namespace isolation enabled, annotation violates permission, pod is in namespace pods but refers to target namespace other"
        );
    }

    /// (attachment name, is master, requested interface)
    type IfnameEntry<'a> = (&'a str, bool, Option<&'a str>);

    #[test]
    fn ifname_assignment_table() {
        let build = |entries: &[IfnameEntry]| -> Vec<DelegateSpec> {
            entries
                .iter()
                .map(|(name, is_master, requested)| DelegateSpec {
                    is_master: *is_master,
                    interface_request: requested.map(Into::into),
                    ..spec(name)
                })
                .collect()
        };
        let cases: Vec<(Vec<IfnameEntry>, Vec<&str>)> = vec![
            (
                vec![
                    ("cluster", true, None),
                    ("ns/a", false, Some("foo")),
                    ("ns/b", false, None),
                ],
                vec!["eth0", "foo", "net2"],
            ),
            (
                vec![
                    ("cluster", true, None),
                    ("kube-system/extra", false, None),
                    ("ns/a", false, None),
                ],
                vec!["eth0", "net1", "net2"],
            ),
            (
                vec![
                    ("ns/default-net", true, Some("eth9")),
                    ("ns/a", false, None),
                ],
                vec!["eth9", "net1"],
            ),
            (
                vec![("ns/a", false, None), ("ns/a", false, None)],
                vec!["net0", "net1"],
            ),
        ];
        for (entries, expected) in cases {
            let mut specs = build(&entries);
            assign_ifnames(&mut specs, "eth0").expect("no collision");
            let names: Vec<&str> = specs.iter().map(|spec| spec.ifname.as_str()).collect();
            assert_eq!(names, expected, "entries {entries:?}");
        }

        let mut specs = build(&[
            ("cluster", true, None),
            ("ns/a", false, Some("net2")),
            ("ns/b", false, None),
        ]);
        let error = assign_ifnames(&mut specs, "eth0").expect_err("collision");
        assert_eq!(
            error.to_string(),
            r#"attachments "ns/a" and "ns/b" both use interface name "net2""#
        );
        assert_eq!(error.cni_code(), 7);

        let mut specs = build(&[("cluster", true, None), ("ns/a", false, Some("eth0"))]);
        let error = assign_ifnames(&mut specs, "eth0").expect_err("collision with master");
        assert!(
            matches!(error, AttachError::DuplicateIfname { .. }),
            "{error}"
        );
    }

    fn with_route(name: &str, gateways: Option<&[&str]>) -> DelegateSpec {
        DelegateSpec {
            default_route: gateways.map(|gateways| {
                gateways
                    .iter()
                    .map(|gateway| gateway.parse().expect("gateway"))
                    .collect()
            }),
            ..spec(name)
        }
    }

    fn action(remove_v4: bool, remove_v6: bool, gateways: &[&str]) -> DefaultRouteAction {
        DefaultRouteAction {
            remove_v4_default: remove_v4,
            remove_v6_default: remove_v6,
            add_gateways: gateways
                .iter()
                .map(|gateway| gateway.parse().expect("ip"))
                .collect(),
        }
    }

    #[test]
    fn default_route_table() {
        let cases: Vec<(Vec<DelegateSpec>, Vec<DefaultRouteAction>)> = vec![
            (
                vec![with_route("cluster", None), with_route("ns/a", None)],
                vec![action(false, false, &[]), action(false, false, &[])],
            ),
            (
                vec![
                    with_route("cluster", None),
                    with_route("ns/a", Some(&["10.1.1.254"])),
                ],
                vec![
                    action(true, false, &[]),
                    action(true, false, &["10.1.1.254"]),
                ],
            ),
            (
                vec![
                    with_route("cluster", None),
                    with_route("ns/a", Some(&["10.1.1.254"])),
                    with_route("ns/b", Some(&["2001:db8::1"])),
                ],
                vec![
                    action(true, true, &[]),
                    action(true, true, &["10.1.1.254"]),
                    action(true, true, &["2001:db8::1"]),
                ],
            ),
            (
                vec![
                    with_route("cluster", None),
                    with_route("ns/a", Some(&["10.1.1.254", "2001:db8::1"])),
                ],
                vec![
                    action(true, true, &[]),
                    action(true, true, &["10.1.1.254", "2001:db8::1"]),
                ],
            ),
            (
                vec![
                    with_route("cluster", None),
                    with_route("ns/a", Some(&[])),
                    with_route("ns/b", None),
                ],
                vec![
                    action(true, true, &[]),
                    action(false, false, &[]),
                    action(true, true, &[]),
                ],
            ),
        ];
        for (specs, expected) in cases {
            let actions = check_default_route(&specs).expect("valid");
            assert_eq!(
                actions,
                expected,
                "specs {:?}",
                specs
                    .iter()
                    .map(|spec| (&spec.name, &spec.default_route))
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn default_route_errors_table() {
        let cases = [
            (
                vec![
                    with_route("ns/a", Some(&["10.1.1.1"])),
                    with_route("ns/b", Some(&["10.2.2.1"])),
                ],
                r#"multus does not support ECMP for default-route: IPv4 default route requested by "ns/a" via 10.1.1.1 and "ns/b" via 10.2.2.1"#,
            ),
            (
                vec![with_route("ns/a", Some(&["2001:db8::1", "2001:db8::2"]))],
                r#"multus does not support ECMP for default-route: IPv6 default route requested by "ns/a" via 2001:db8::1 and "ns/a" via 2001:db8::2"#,
            ),
            (
                vec![
                    with_route("ns/a", Some(&[])),
                    with_route("ns/b", Some(&["2001:db8::1"])),
                ],
                r#"multus does not support ECMP for default-route: IPv6 default route requested by "ns/a" (default-route: []) and "ns/b" via 2001:db8::1"#,
            ),
        ];
        for (specs, expected) in cases {
            let error = check_default_route(&specs).expect_err("conflicting default routes");
            assert_eq!(error.to_string(), expected);
            assert_eq!(error.cni_code(), 7);
        }
    }

    fn reference_legacy() -> LegacyArgsSupport {
        LegacyArgsSupport::new(["host-local", "static"], ["macvlan"])
    }

    #[test]
    fn capability_args_table() {
        let requested = |config: Value| DelegateSpec {
            ips: vec!["10.1.1.5/24".into()],
            mac: Some("c2:11:22:33:44:55".into()),
            infiniband_guid: Some("00:11:22:33:44:55:66:77".into()),
            device_id: Some("0000:03:00.1".into()),
            resource_name: None,
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Some("tcp".into()),
                host_ip: None,
            }],
            bandwidth: Some(Bandwidth {
                ingress_rate: 1,
                ingress_burst: 2,
                egress_rate: 3,
                egress_burst: 4,
            }),
            ..DelegateSpec::from_selection(
                &NetworkSelectionElement {
                    name: "a".into(),
                    namespace: "ns".into(),
                    ..NetworkSelectionElement::default()
                },
                config,
            )
            .expect("spec")
        };
        let cases: Vec<(Value, Value)> = vec![
            (
                json!({"name": "a", "type": "sriov", "capabilities": {
                    "ips": true, "mac": true, "infinibandGUID": true, "deviceID": true,
                    "portMappings": true, "bandwidth": true
                }}),
                json!({
                    "ips": ["10.1.1.5/24"],
                    "mac": "c2:11:22:33:44:55",
                    "infinibandGUID": "00:11:22:33:44:55:66:77",
                    "deviceID": "0000:03:00.1",
                    "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                    "bandwidth": {"ingressRate": 1, "ingressBurst": 2, "egressRate": 3, "egressBurst": 4}
                }),
            ),
            (
                json!({"name": "a", "type": "macvlan", "ipam": {"type": "host-local"}}),
                json!({}),
            ),
            (
                json!({"name": "a", "plugins": [
                    {"type": "macvlan", "capabilities": {"ips": true, "mac": false}, "ipam": {"type": "static"}},
                    {"type": "portmap", "capabilities": {"portMappings": true}}
                ]}),
                json!({
                    "ips": ["10.1.1.5/24"],
                    "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
                }),
            ),
        ];
        for (config, expected) in cases {
            let delegate_spec = requested(config.clone());
            let declared = declared_capabilities(&delegate_spec.config);
            let runtime_config = capability_args(&delegate_spec, &declared, &reference_legacy())
                .unwrap_or_else(|error| panic!("{config} should be accepted: {error}"));
            assert_eq!(Value::Object(runtime_config), expected, "config {config}");
        }
    }

    #[test]
    fn capability_args_errors_table() {
        let cases = [
            (
                json!({"name": "a", "type": "macvlan", "ipam": {"type": "dhcp"}}),
                vec!["10.1.1.5/24"],
                None,
                r#"network "ns/a" requests ips but no plugin of its delegate declares the "ips" capability and none of its types (dhcp, macvlan) reads the legacy IP= argument; add "capabilities": {"ips": true} to its config"#,
            ),
            (
                json!({"name": "a", "type": "ipvlan", "ipam": {"type": "host-local"}}),
                vec![],
                Some("c2:11:22:33:44:55"),
                r#"network "ns/a" requests mac but no plugin of its delegate declares the "mac" capability and none of its types (host-local, ipvlan) reads the legacy MAC= argument; add "capabilities": {"mac": true} to its config"#,
            ),
        ];
        for (config, ips, mac, expected) in cases {
            let delegate_spec = DelegateSpec {
                name: "ns/a".into(),
                ips: ips.into_iter().map(Into::into).collect(),
                mac: mac.map(Into::into),
                ..DelegateSpec::cluster_network("ns/a", config.clone())
            };
            let declared = declared_capabilities(&delegate_spec.config);
            let error = capability_args(&delegate_spec, &declared, &reference_legacy())
                .expect_err(&format!("{config} should be rejected"));
            assert_eq!(error.to_string(), expected);
            assert_eq!(error.cni_code(), 7);
        }

        // With no legacy readers at all, even host-local needs the capability.
        let delegate_spec = DelegateSpec {
            ips: vec!["10.1.1.5".into()],
            ..DelegateSpec::cluster_network(
                "ns/a",
                json!({"type": "macvlan", "ipam": {"type": "host-local"}}),
            )
        };
        let error = capability_args(
            &delegate_spec,
            &BTreeSet::new(),
            &LegacyArgsSupport::default(),
        )
        .expect_err("no legacy readers");
        assert!(
            matches!(
                error,
                AttachError::MissingCapability {
                    capability: "ips",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn legacy_args_and_capability_helpers() {
        let delegate_spec = DelegateSpec {
            ips: vec!["10.1.1.5/24".into(), "2001:db8::5/64".into()],
            mac: Some("c2:11:22:33:44:55".into()),
            ..spec("ns/a")
        };
        assert_eq!(
            legacy_cni_args(&delegate_spec),
            vec![
                ("IP".to_string(), "10.1.1.5/24,2001:db8::5/64".to_string()),
                ("MAC".to_string(), "c2:11:22:33:44:55".to_string()),
            ]
        );
        assert!(legacy_cni_args(&spec("ns/b")).is_empty());

        let conflist = json!({"name": "n", "plugins": [
            {"type": "macvlan", "capabilities": {"ips": true, "mac": false}, "ipam": {"type": "host-local"}},
            {"type": "tuning", "capabilities": {"mac": true}}
        ]});
        assert_eq!(
            declared_capabilities(&conflist),
            BTreeSet::from(["ips".to_string(), "mac".to_string()])
        );
        assert_eq!(
            delegate_types(&conflist),
            BTreeSet::from([
                "host-local".to_string(),
                "macvlan".to_string(),
                "tuning".to_string()
            ])
        );
        let single = json!({"type": "macvlan", "capabilities": {"ips": "yes"}});
        assert!(
            declared_capabilities(&single).is_empty(),
            "only literal true declares"
        );
        assert!(is_conflist(&conflist) && !is_conflist(&single));
    }

    #[test]
    fn from_selection_builds_the_spec() {
        let selection = NetworkSelectionElement {
            name: "macvlan-conf".into(),
            namespace: "pods".into(),
            interface: Some("net7".into()),
            ips: Some(vec!["10.1.1.5/24".into()]),
            mac: Some("c2:11:22:33:44:55".into()),
            cni_args: Some(object(json!({"k": "v"}))),
            default_route: Some(vec!["10.1.1.1".parse().expect("ip")]),
            ..NetworkSelectionElement::default()
        };
        let delegate_spec =
            DelegateSpec::from_selection(&selection, json!({"name": "mvl", "type": "macvlan"}))
                .expect("spec");
        assert_eq!(delegate_spec.name, "pods/macvlan-conf");
        assert_eq!(delegate_spec.cni_network_name(), "mvl");
        assert_eq!(
            delegate_spec.config,
            json!({"name": "mvl", "type": "macvlan", "args": {"cni": {"k": "v"}}})
        );
        assert_eq!(delegate_spec.interface_request.as_deref(), Some("net7"));
        assert!(!delegate_spec.is_master);
        assert_eq!(delegate_spec.ips, vec!["10.1.1.5/24"]);
        assert_eq!(delegate_spec.mac.as_deref(), Some("c2:11:22:33:44:55"));
        assert_eq!(delegate_spec.default_route, selection.default_route);

        let master = DelegateSpec::cluster_network("calico", json!({"name": "k8s-pod-network"}));
        assert!(master.is_master);
        assert_eq!(master.name, "calico");
    }
}
