//! The macvlan network configuration: its JSON fields, and their resolution
//! against the links the host reports (default master, master MTU) and the
//! overrides from `CNI_ARGS` and `runtimeConfig`.
//!
//! ADD and CHECK resolve the whole configuration, as the reference's
//! `loadConf` does; DEL reads none of it.

use guest_sdk::netconf::{DnsConf, IpamRef, cni_args, parse};
use guest_sdk::{Dns, Host, IpFamily, LinkInfo, MacvlanMode, Netns, PluginError, Request};
use serde::Deserialize;

use crate::mac::normalise_mac;

/// The fields of the network configuration macvlan reads. Absent and `null`
/// read as the zero value, as with Go's `encoding/json`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MacvlanNetConf {
    #[serde(default)]
    master: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    link_in_container: Option<bool>,
    #[serde(default)]
    ipam: Option<IpamRef>,
    #[serde(default)]
    dns: Option<DnsConf>,
    /// Go matches JSON keys case-insensitively and the upstream tests send
    /// `RuntimeConfig`; accept both spellings.
    #[serde(default, alias = "RuntimeConfig")]
    runtime_config: Option<RuntimeConf>,
}

#[derive(Debug, Default, Deserialize)]
struct RuntimeConf {
    #[serde(default)]
    mac: Option<String>,
}

/// The `CNI_ARGS` keys macvlan knows (besides `IgnoreUnknown`).
const KNOWN_CNI_ARGS: &[&str] = &["MAC"];

/// A macvlan configuration with every default and override applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MacvlanSettings {
    /// The master link, as found by the host.
    pub master: LinkInfo,
    /// The master lives in the sandbox (`linkInContainer`).
    pub master_in_sandbox: bool,
    pub mode: MacvlanMode,
    /// `None` inherits the master's MTU.
    pub mtu: Option<u32>,
    /// The requested MAC, lowercase and colon-separated.
    pub mac: Option<String>,
    /// An IPAM plugin is configured (`ipam.type` set); otherwise L2 mode.
    pub layer3: bool,
    /// The configuration's `dns`, copied into the result.
    pub dns: Option<Dns>,
}

/// Parse the request's configuration and resolve it, in the reference's
/// order: default master, master lookup, MTU bounds, `CNI_ARGS`,
/// `runtimeConfig`, mode, MAC syntax.
pub(crate) fn resolve(host: &dyn Host, request: &Request) -> Result<MacvlanSettings, PluginError> {
    let conf: MacvlanNetConf = parse(&request.config)?;
    let master_in_sandbox = conf.link_in_container.unwrap_or(false);
    let master_netns = if master_in_sandbox {
        Netns::Sandbox
    } else {
        Netns::Host
    };

    let master_name = conf.master.clone().unwrap_or_default();
    let master = if master_name.is_empty() {
        host.default_route_link(master_netns, IpFamily::V4)
            .or_else(|| host.default_route_link(master_netns, IpFamily::V6))
            .ok_or_else(|| PluginError::internal("no default route interface found"))?
    } else {
        host.get_link(master_netns, &master_name).ok_or_else(|| {
            PluginError::internal(format!(
                "failed to lookup master {master_name:?}: Link not found"
            ))
        })?
    };

    let requested_mtu = conf.mtu.unwrap_or(0);
    if requested_mtu < 0 || requested_mtu > i64::from(master.mtu) {
        return Err(PluginError::internal(format!(
            "invalid MTU {requested_mtu}, must be [0, master MTU({})]",
            master.mtu
        )));
    }
    let mtu = u32::try_from(requested_mtu)
        .ok()
        .filter(|mtu_value| *mtu_value > 0);

    let mut mac_text = conf.mac.clone().unwrap_or_default();
    if !request.args.is_empty() {
        let cni_args = cni_args(&request.args, KNOWN_CNI_ARGS)?;
        if let Some(mac_arg) = cni_args.get("MAC").filter(|value| !value.is_empty()) {
            mac_text = mac_arg.clone();
        }
    }
    if let Some(runtime_mac) = conf
        .runtime_config
        .as_ref()
        .and_then(|runtime| runtime.mac.as_ref())
        .filter(|value| !value.is_empty())
    {
        mac_text = runtime_mac.clone();
    }

    let mode = parse_mode(conf.mode.as_deref().unwrap_or(""))?;

    let mac = if mac_text.is_empty() {
        None
    } else {
        Some(normalise_mac(&mac_text).ok_or_else(|| {
            PluginError::internal(format!(
                "invalid args {mac_text} for MAC addr: address {mac_text}: invalid MAC address"
            ))
        })?)
    };

    let layer3 = conf
        .ipam
        .as_ref()
        .is_some_and(|ipam| !ipam.plugin_type.is_empty());
    let dns = conf.dns.map(Dns::from).filter(|dns| !dns.is_empty());

    Ok(MacvlanSettings {
        master,
        master_in_sandbox,
        mode,
        mtu,
        mac,
        layer3,
        dns,
    })
}

/// The `mode` field; empty means bridge. Unlike the reference, `source` is
/// supported.
pub(crate) fn parse_mode(text: &str) -> Result<MacvlanMode, PluginError> {
    match text {
        "" | "bridge" => Ok(MacvlanMode::Bridge),
        "private" => Ok(MacvlanMode::Private),
        "vepa" => Ok(MacvlanMode::Vepa),
        "passthru" => Ok(MacvlanMode::Passthru),
        "source" => Ok(MacvlanMode::Source),
        other => Err(PluginError::internal(format!(
            "unknown macvlan mode: {other:?}"
        ))),
    }
}

/// The configuration spelling of a mode.
pub(crate) fn mode_name(mode: MacvlanMode) -> &'static str {
    match mode {
        MacvlanMode::Bridge => "bridge",
        MacvlanMode::Private => "private",
        MacvlanMode::Vepa => "vepa",
        MacvlanMode::Passthru => "passthru",
        MacvlanMode::Source => "source",
    }
}
