//! The tuning config, with the reference plugin's sources and precedence:
//! `CNI_ARGS` `MAC` < `runtimeConfig.mac` < `args.cni.{mac, mtu, promisc,
//! allmulti, txQLen, sysctl}` (sysctls merged into the config's).

use std::collections::BTreeMap;

use guest_sdk::netconf;
use guest_sdk::{PluginError, Request, helpers};
use serde::Deserialize;

/// The fields of a tuning config besides the CNI ones.
pub const KNOWN_FIELDS: &[&str] = &[
    "sysctl", "mac", "promisc", "mtu", "allmulti", "txQLen", "dataDir",
];

// Typed all the way down (no flattened `NetConf`, no `serde_json::Value`):
// each of those adds a generic deserializer to the component.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    args: Option<Args>,
    #[serde(default)]
    runtime_config: Option<RuntimeConfig>,
    #[serde(default)]
    sysctl: BTreeMap<String, String>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    promisc: bool,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    allmulti: Option<bool>,
    #[serde(default, rename = "txQLen")]
    tx_qlen: Option<u32>,
    /// The reference keeps its backups there; here the host keeps them
    /// with the attachment, so it is accepted and unused.
    #[serde(default)]
    #[allow(dead_code)]
    data_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Args {
    #[serde(default)]
    cni: Option<ArgsCni>,
}

#[derive(Debug, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(default)]
    mac: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArgsCni {
    #[serde(default)]
    sysctl: Option<BTreeMap<String, String>>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    promisc: Option<bool>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    allmulti: Option<bool>,
    #[serde(default, rename = "txQLen")]
    tx_qlen: Option<u32>,
}

/// What to set on the interface; `None` leaves a setting alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// Keys relative to /proc/sys (`net/ipv4/conf/net1/arp_notify`).
    pub sysctls: BTreeMap<String, String>,
    /// Lowercase colon form.
    pub mac: Option<String>,
    /// Only `true` acts (as in the reference, `false` turns nothing off).
    pub promisc: bool,
    pub mtu: Option<u32>,
    pub allmulti: Option<bool>,
    pub tx_qlen: Option<u32>,
}

/// A sysctl key as configured (`net.ipv4.conf.IFNAME.arp_filter`, dots or
/// slashes, the first `IFNAME` standing for the interface) as the key the
/// host takes, relative to /proc/sys. Only the interface's own
/// `net.ipv4|ipv6.conf|neigh.<ifname>.<name>` are allowed here.
pub fn sysctl_key(key: &str, ifname: &str) -> Result<String, PluginError> {
    let path = key.replace('.', "/").replacen("IFNAME", ifname, 1);
    let parts: Vec<&str> = path.split('/').collect();
    let allowed = matches!(
        parts.as_slice(),
        ["net", "ipv4" | "ipv6", "conf" | "neigh", interface, leaf]
            if *interface == ifname && !leaf.is_empty()
    );
    if !allowed {
        return Err(PluginError::invalid_config(format!(
            "sysctl {key:?}: a network may only set its own interface's sysctls, net.ipv4|ipv6.conf|neigh.{ifname}.<name> (write IFNAME for the interface)"
        )));
    }
    Ok(path)
}

/// Parse and merge the request's tuning settings.
pub fn parse(request: &Request) -> Result<Tuning, PluginError> {
    if request.ifname.contains('/') {
        return Err(PluginError::invalid_config(format!(
            "invalid interface name {:?}: it contains '/'",
            request.ifname
        )));
    }
    let raw: Raw = netconf::parse(&request.config)?;
    let cni_args = netconf::cni_args(&request.args, &["MAC"])?;
    let args_cni = raw.args.and_then(|args| args.cni).unwrap_or_default();
    let runtime_mac = raw.runtime_config.and_then(|runtime| runtime.mac);

    let mut config_sysctls = raw.sysctl.clone();
    if let Some(extra) = args_cni.sysctl {
        config_sysctls.extend(extra);
    }
    let mut sysctls = BTreeMap::new();
    for (key, value) in &config_sysctls {
        let path = sysctl_key(key, &request.ifname)?;
        if sysctls.insert(path, value.clone()).is_some() {
            return Err(PluginError::invalid_config(
                "duplicated sysctl keys are not allowed",
            ));
        }
    }
    let mac = args_cni
        .mac
        .or(runtime_mac)
        .or(raw.mac)
        .or_else(|| cni_args.get("MAC").cloned())
        .filter(|mac| !mac.is_empty())
        .map(|mac| helpers::parse_mac(&mac))
        .transpose()?;
    let tuning = Tuning {
        sysctls,
        mac,
        promisc: args_cni.promisc.unwrap_or(raw.promisc),
        mtu: args_cni.mtu.or(raw.mtu),
        allmulti: args_cni.allmulti.or(raw.allmulti),
        tx_qlen: args_cni.tx_qlen.or(raw.tx_qlen),
    };
    Ok(tuning)
}
