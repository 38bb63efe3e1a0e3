//! The static IPAM configuration and where its addresses come from.
//!
//! In the reference's order: `ipam.addresses`, then `CNI_ARGS` `IP=` (added
//! to them) with `GATEWAY=` (given to each of those `IP=` addresses whose
//! subnet contains it), then `args.cni.ips` (replacing everything before),
//! then `runtimeConfig.ips` (replacing everything before). A configured
//! address is validated only if it survives those replacements, as in the
//! reference.

use std::net::IpAddr;

use guest_sdk::netconf::{DnsConf, cni_args, parse};
use guest_sdk::{CniResult, Dns, IpConfig, PluginError, Request, Route};
use serde::Deserialize;

use guest_sdk::cidr::{Cidr, parse_ip};

/// The fields of the (parent's) network configuration static reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StaticNetConf {
    #[serde(default)]
    cni_version: Option<String>,
    #[serde(default)]
    ipam: Option<StaticIpamConf>,
    /// Go matches JSON keys case-insensitively and the upstream tests send
    /// `RuntimeConfig`; accept both spellings.
    #[serde(default, alias = "RuntimeConfig")]
    runtime_config: Option<IpsConf>,
    #[serde(default)]
    args: Option<ArgsConf>,
}

#[derive(Debug, Default, Deserialize)]
struct StaticIpamConf {
    #[serde(default)]
    addresses: Option<Vec<AddressConf>>,
    #[serde(default)]
    routes: Option<Vec<RouteConf>>,
    #[serde(default)]
    dns: Option<DnsConf>,
}

#[derive(Debug, Default, Deserialize)]
struct AddressConf {
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RouteConf {
    #[serde(default)]
    dst: Option<String>,
    #[serde(default)]
    gw: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    advmss: Option<u32>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
struct IpsConf {
    #[serde(default)]
    ips: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct ArgsConf {
    #[serde(default)]
    cni: Option<IpsConf>,
}

/// The `CNI_ARGS` keys static knows (besides `IgnoreUnknown`).
const KNOWN_CNI_ARGS: &[&str] = &["IP", "GATEWAY"];

/// One address static hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StaticAddress {
    pub address: Cidr,
    pub gateway: Option<IpAddr>,
}

/// The whole static configuration, every source applied and validated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StaticConfig {
    pub addresses: Vec<StaticAddress>,
    pub routes: Vec<Route>,
    pub dns: Option<Dns>,
}

impl StaticConfig {
    /// The ADD result: the addresses (on no interface), routes and DNS.
    pub fn into_result(self) -> CniResult {
        CniResult {
            interfaces: Vec::new(),
            ips: self
                .addresses
                .into_iter()
                .map(|address| IpConfig {
                    interface_index: None,
                    address: address.address.to_string(),
                    gateway: address.gateway.map(|gateway| gateway.to_string()),
                })
                .collect(),
            routes: self.routes,
            dns: self.dns,
        }
    }
}

/// An address before the sources are settled: a configured one is only
/// parsed if no later source replaces it.
enum Candidate {
    Configured {
        text: String,
        gateway: Option<IpAddr>,
    },
    Parsed(StaticAddress),
}

/// Parse the request's configuration and apply every address source.
pub(crate) fn resolve(request: &Request) -> Result<StaticConfig, PluginError> {
    let conf: StaticNetConf = parse(&request.config)?;
    let Some(ipam) = conf.ipam else {
        return Err(PluginError::internal("IPAM config missing 'ipam' key"));
    };
    // Go rejects a malformed gateway or route while decoding, before anything else.
    let mut candidates = ipam
        .addresses
        .unwrap_or_default()
        .into_iter()
        .map(|address_conf| {
            Ok(Candidate::Configured {
                text: address_conf.address.unwrap_or_default(),
                gateway: parse_json_ip(address_conf.gateway.as_deref())?,
            })
        })
        .collect::<Result<Vec<_>, PluginError>>()?;
    let routes = ipam
        .routes
        .unwrap_or_default()
        .into_iter()
        .map(parse_route)
        .collect::<Result<Vec<_>, PluginError>>()?;

    if !request.args.is_empty() {
        let cni_args = cni_args(&request.args, KNOWN_CNI_ARGS)?;
        apply_cni_args(&mut candidates, &cni_args)?;
    }
    let args_ips = conf
        .args
        .and_then(|args| args.cni)
        .and_then(|cni| cni.ips)
        .unwrap_or_default();
    if !args_ips.is_empty() {
        candidates = parse_ips_list(&args_ips)?;
    }
    let runtime_ips = conf
        .runtime_config
        .and_then(|runtime| runtime.ips)
        .unwrap_or_default();
    if !runtime_ips.is_empty() {
        candidates = parse_ips_list(&runtime_ips)?;
    }

    let addresses = candidates
        .into_iter()
        .map(|candidate| match candidate {
            Candidate::Parsed(address) => Ok(address),
            Candidate::Configured { text, gateway } => Cidr::parse(&text)
                .map(|address| StaticAddress { address, gateway })
                .ok_or_else(|| {
                    PluginError::internal(format!(
                        "the 'address' field is expected to be in CIDR notation, got: '{text}'"
                    ))
                }),
        })
        .collect::<Result<Vec<_>, PluginError>>()?;

    let cni_version = conf.cni_version.unwrap_or_default();
    let ipv4_count = addresses.iter().filter(|a| a.address.is_ipv4()).count();
    let ipv6_count = addresses.len() - ipv4_count;
    if (ipv4_count > 1 || ipv6_count > 1) && !supports_multiple_ips(&cni_version) {
        return Err(PluginError::internal(format!(
            "CNI version {cni_version} does not support more than 1 address per family"
        )));
    }

    Ok(StaticConfig {
        addresses,
        routes,
        dns: ipam.dns.map(Dns::from).filter(|dns| !dns.is_empty()),
    })
}

/// `IP=a/24,b/64` adds addresses; `GATEWAY=g1,g2` sets the gateway of each
/// `IP=` address whose subnet contains it (the last match wins).
fn apply_cni_args(
    candidates: &mut Vec<Candidate>,
    cni_args: &std::collections::BTreeMap<String, String>,
) -> Result<(), PluginError> {
    if let Some(ip_list) = cni_args.get("IP").filter(|value| !value.is_empty()) {
        for item in ip_list.split(',') {
            let ip_text = item.trim();
            let address = Cidr::parse(ip_text).ok_or_else(|| {
                PluginError::internal(format!(
                    "the 'ip' field is expected to be in CIDR notation, got: '{ip_text}'"
                ))
            })?;
            candidates.push(Candidate::Parsed(StaticAddress {
                address,
                gateway: None,
            }));
        }
    }
    if let Some(gateway_list) = cni_args.get("GATEWAY").filter(|value| !value.is_empty()) {
        for item in gateway_list.split(',') {
            let gateway = parse_ip(item.trim())
                .ok_or_else(|| PluginError::internal(format!("invalid gateway address: {item}")))?;
            for candidate in candidates.iter_mut() {
                if let Candidate::Parsed(address) = candidate
                    && address.address.contains(gateway)
                {
                    address.gateway = Some(gateway);
                }
            }
        }
    }
    Ok(())
}

/// `args.cni.ips` or `runtimeConfig.ips`: CIDRs without gateways.
fn parse_ips_list(ips: &[String]) -> Result<Vec<Candidate>, PluginError> {
    ips.iter()
        .map(|ip_text| {
            Cidr::parse(ip_text)
                .map(|address| {
                    Candidate::Parsed(StaticAddress {
                        address,
                        gateway: None,
                    })
                })
                .ok_or_else(|| {
                    PluginError::internal(format!(
                        "an entry in the 'ips' field is NOT in CIDR notation, got: '{ip_text}'"
                    ))
                })
        })
        .collect()
}

/// An IP as Go's `net.IP` decodes it from JSON: empty is none.
fn parse_json_ip(text: Option<&str>) -> Result<Option<IpAddr>, PluginError> {
    match text.filter(|text| !text.is_empty()) {
        None => Ok(None),
        Some(text) => parse_ip(text)
            .map(Some)
            .ok_or_else(|| PluginError::internal(format!("invalid IP address: {text}"))),
    }
}

/// A configured route, with its addresses canonicalised. Go omits a zero
/// `mtu`, `advmss` or `priority`; `table` and `scope` are kept as given.
fn parse_route(route: RouteConf) -> Result<Route, PluginError> {
    let dst_text = route.dst.unwrap_or_default();
    let dst = Cidr::parse(&dst_text)
        .ok_or_else(|| PluginError::internal(format!("invalid CIDR address: {dst_text}")))?;
    let gateway = parse_json_ip(route.gw.as_deref())?;
    Ok(Route {
        dst: dst.to_string(),
        gw: gateway.map(|gateway| gateway.to_string()),
        mtu: route.mtu.filter(|value| *value > 0),
        advmss: route.advmss.filter(|value| *value > 0),
        priority: route.priority.filter(|value| *value > 0),
        table: route.table,
        scope: route.scope,
    })
}

/// Whether `version` is at least 0.3.0, the first to allow several
/// addresses per family. Empty means 0.1.0; unparsable counts as older.
pub(crate) fn supports_multiple_ips(version: &str) -> bool {
    if version.is_empty() {
        return false;
    }
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() > 3 {
        return false;
    }
    let mut numbers = [0u64; 3];
    for (slot, part) in numbers.iter_mut().zip(&parts) {
        match part.parse() {
            Ok(number) => *slot = number,
            Err(_) => return false,
        }
    }
    numbers >= [0, 3, 0]
}
