//! The CNI result: one model in the shape of spec 1.1, read from any
//! version's JSON and written in any version's JSON.
//!
//! Shapes: 0.1.0/0.2.0 have `ip4`/`ip6` objects with their own routes and no
//! interfaces; 0.3.0/0.3.1/0.4.0 have `interfaces`, `ips` (with `version`),
//! `routes` and `dns`; 1.0.0/1.1.0 drop `ips[].version` and add the 1.1
//! interface and route fields. Conversions follow the reference library:
//!
//! - to 0.3.x/0.4.0: `ips[].version` is `"4"` or `"6"` by address family;
//!   interfaces lose `mtu`, `socketPath`, `pciID`; routes keep every field
//!   (the reference shares one route type between versions);
//! - to 0.1.0/0.2.0: `ip4` is the first IPv4 address, `ip6` the first IPv6
//!   one; each route goes to `ip4.routes` or `ip6.routes` by the family of
//!   its `dst`, only if that family has an address, keeping only `dst` and
//!   `gw`; interfaces and further addresses are dropped; no address at all
//!   is the error `cannot convert: no valid IP addresses`;
//! - from 0.1.0/0.2.0: `ips` is `ip4` then `ip6`, `routes` is `ip4.routes`
//!   then `ip6.routes`.
//!
//! Empty fields are omitted as the Go types' `omitempty` does; `dns` is
//! always present (as `{}` when empty) in 0.x and 1.0.0 output, as Debian's
//! 1.1.1 plugins print it, and omitted when empty in 1.1.0 output, as the
//! current reference library does.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::error::CniError;
use super::version::CniVersion;

/// A CNI result (the ADD output, a prevResult, an IPAM result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniResult {
    /// The version the result was read in or is meant for.
    pub cni_version: CniVersion,
    /// The interfaces created or used (empty for IPAM results).
    pub interfaces: Vec<Interface>,
    /// The addresses assigned.
    pub ips: Vec<IpConfig>,
    /// The routes configured.
    pub routes: Vec<Route>,
    /// DNS information for the container.
    pub dns: Dns,
}

/// An interface in a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// The interface name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// The hardware address, when known.
    #[serde(
        default,
        deserialize_with = "empty_string_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub mac: Option<String>,
    /// The MTU (1.1.0).
    #[serde(
        default,
        deserialize_with = "zero_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub mtu: Option<u32>,
    /// The network namespace path, for interfaces inside the container.
    #[serde(
        default,
        deserialize_with = "empty_string_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub sandbox: Option<String>,
    /// A socket path for userspace interfaces (1.1.0).
    #[serde(
        rename = "socketPath",
        default,
        deserialize_with = "empty_string_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    /// The PCI address of the device (1.1.0).
    #[serde(
        rename = "pciID",
        default,
        deserialize_with = "empty_string_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub pci_id: Option<String>,
}

/// An address in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into the result's interfaces; absent in IPAM results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// The address with its prefix length (host bits kept: `10.1.2.2/24`).
    pub address: IpNet,
    /// The default gateway for this subnet, if any.
    #[serde(
        default,
        deserialize_with = "optional_ip",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway: Option<IpAddr>,
}

/// A route in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The destination.
    pub dst: IpNet,
    /// The next hop; absent means the family's default gateway or a device route.
    #[serde(
        default,
        deserialize_with = "optional_ip",
        skip_serializing_if = "Option::is_none"
    )]
    pub gw: Option<IpAddr>,
    /// Route MTU (1.1.0).
    #[serde(
        default,
        deserialize_with = "zero_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    #[serde(
        default,
        deserialize_with = "zero_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub advmss: Option<u32>,
    /// Metric (1.1.0).
    #[serde(
        default,
        deserialize_with = "zero_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub priority: Option<u32>,
    /// Routing table (1.1.0); 0 is kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Scope (1.1.0): 0 global, 253 link, 254 host; 0 is kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

impl Route {
    /// A route with only a destination and an optional gateway.
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Self {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS information in a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name server addresses, in priority order.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(
        default,
        deserialize_with = "empty_string_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub domain: Option<String>,
    /// Search domains, in priority order.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub options: Vec<String>,
}

impl Dns {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

// ---- wire shapes -------------------------------------------------------

/// 1.0.0 / 1.1.0.
#[derive(Serialize, Deserialize)]
struct ResultWire100 {
    #[serde(rename = "cniVersion", default, skip_deserializing)]
    cni_version: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    interfaces: Vec<Interface>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    ips: Vec<IpConfig>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    routes: Vec<Route>,
    #[serde(default, deserialize_with = "null_as_default")]
    dns: Dns,
}

/// 0.3.0 / 0.3.1 / 0.4.0.
#[derive(Serialize, Deserialize)]
struct ResultWire040 {
    #[serde(rename = "cniVersion", default, skip_deserializing)]
    cni_version: String,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    interfaces: Vec<InterfaceWire040>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    ips: Vec<IpConfigWire040>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    routes: Vec<Route>,
    #[serde(default, deserialize_with = "null_as_default")]
    dns: Dns,
}

#[derive(Serialize, Deserialize)]
struct InterfaceWire040 {
    #[serde(default, deserialize_with = "null_as_default")]
    name: String,
    #[serde(
        default,
        deserialize_with = "empty_string_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    mac: Option<String>,
    #[serde(
        default,
        deserialize_with = "empty_string_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    sandbox: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct IpConfigWire040 {
    /// Written from the address family; ignored when read.
    #[serde(default, skip_deserializing)]
    version: &'static str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: IpNet,
    #[serde(
        default,
        deserialize_with = "optional_ip",
        skip_serializing_if = "Option::is_none"
    )]
    gateway: Option<IpAddr>,
}

/// 0.1.0 / 0.2.0.
#[derive(Serialize, Deserialize)]
struct ResultWire020 {
    #[serde(rename = "cniVersion", default, skip_deserializing)]
    cni_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip4: Option<IpConfigWire020>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip6: Option<IpConfigWire020>,
    #[serde(default, deserialize_with = "null_as_default")]
    dns: Dns,
}

#[derive(Serialize, Deserialize)]
struct IpConfigWire020 {
    ip: IpNet,
    #[serde(
        default,
        deserialize_with = "optional_ip",
        skip_serializing_if = "Option::is_none"
    )]
    gateway: Option<IpAddr>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    routes: Vec<Route>,
}

// ---- lenient field readers (Go's zero-value semantics) -----------------

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn empty_string_as_none<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.filter(|text| !text.is_empty()))
}

fn zero_as_none<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    Ok(Option::<u32>::deserialize(deserializer)?.filter(|number| *number != 0))
}

fn optional_ip<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<IpAddr>, D::Error> {
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("invalid IP address {text:?}"))),
    }
}

// ---- the model ---------------------------------------------------------

fn is_ipv4(network: &IpNet) -> bool {
    matches!(network, IpNet::V4(_))
}

fn decode<T: DeserializeOwned>(value: &Value, version: CniVersion) -> Result<T, CniError> {
    T::deserialize(value).map_err(|error| {
        CniError::decoding_failure(format!(
            "failed to decode CNI result (version {version}): {error}"
        ))
    })
}

impl CniResult {
    /// An empty result of `cni_version`.
    pub fn empty(cni_version: CniVersion) -> Self {
        Self {
            cni_version,
            interfaces: Vec::new(),
            ips: Vec::new(),
            routes: Vec::new(),
            dns: Dns::default(),
        }
    }

    /// Reads a result of any supported version from JSON text. A result
    /// without `cniVersion` (or with an empty one) is read as
    /// `assumed_version`, as the reference does for prevResult and plugin
    /// output. Code 6 for undecodable JSON, code 1 for an unsupported version.
    pub fn parse(json: &[u8], assumed_version: CniVersion) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(json).map_err(|error| {
            CniError::decoding_failure(format!("failed to decode CNI result: {error}"))
        })?;
        Self::from_value(&value, assumed_version)
    }

    /// Like [`CniResult::parse`], from an already decoded JSON value.
    pub fn from_value(value: &Value, assumed_version: CniVersion) -> Result<Self, CniError> {
        let Some(object) = value.as_object() else {
            return Err(CniError::decoding_failure(format!(
                "failed to decode CNI result: expected a JSON object, got {value}"
            )));
        };
        let version = match object.get("cniVersion") {
            None | Some(Value::Null) => assumed_version,
            Some(Value::String(text)) if text.is_empty() => assumed_version,
            Some(Value::String(text)) => CniVersion::from_exact(text).ok_or_else(|| {
                CniError::incompatible_version(format!("unsupported CNI result version {text:?}"))
            })?,
            Some(other) => {
                return Err(CniError::decoding_failure(format!(
                    "failed to decode CNI result: cniVersion {other} is not a string"
                )));
            }
        };
        if version.has_legacy_result_shape() {
            let wire: ResultWire020 = decode(value, version)?;
            let mut result = Self::empty(version);
            result.dns = wire.dns;
            for config in [wire.ip4, wire.ip6].into_iter().flatten() {
                result.ips.push(IpConfig {
                    interface: None,
                    address: config.ip,
                    gateway: config.gateway,
                });
                result.routes.extend(config.routes);
            }
            Ok(result)
        } else if version < CniVersion::V1_0_0 {
            let wire: ResultWire040 = decode(value, version)?;
            Ok(Self {
                cni_version: version,
                interfaces: wire
                    .interfaces
                    .into_iter()
                    .map(|interface| Interface {
                        name: interface.name,
                        mac: interface.mac,
                        sandbox: interface.sandbox,
                        ..Interface::default()
                    })
                    .collect(),
                ips: wire
                    .ips
                    .into_iter()
                    .map(|ip| IpConfig {
                        interface: ip.interface,
                        address: ip.address,
                        gateway: ip.gateway,
                    })
                    .collect(),
                routes: wire.routes,
                dns: wire.dns,
            })
        } else {
            let wire: ResultWire100 = decode(value, version)?;
            Ok(Self {
                cni_version: version,
                interfaces: wire.interfaces,
                ips: wire.ips,
                routes: wire.routes,
                dns: wire.dns,
            })
        }
    }

    /// This result as JSON in exactly `version`'s shape, with `cniVersion`
    /// set to `version`. Fails only for 0.1.0/0.2.0 when there is no
    /// address to put in `ip4` or `ip6` (code 999, as in the reference).
    pub fn to_json(&self, version: CniVersion) -> Result<Value, CniError> {
        let cni_version = version.as_str().to_owned();
        let encoded = if version.has_legacy_result_shape() {
            self.legacy_wire(cni_version).and_then(|wire| encode(&wire))
        } else if version < CniVersion::V1_0_0 {
            encode(&ResultWire040 {
                cni_version,
                interfaces: self
                    .interfaces
                    .iter()
                    .map(|interface| InterfaceWire040 {
                        name: interface.name.clone(),
                        mac: interface.mac.clone(),
                        sandbox: interface.sandbox.clone(),
                    })
                    .collect(),
                ips: self
                    .ips
                    .iter()
                    .map(|ip| IpConfigWire040 {
                        version: if is_ipv4(&ip.address) { "4" } else { "6" },
                        interface: ip.interface,
                        address: ip.address,
                        gateway: ip.gateway,
                    })
                    .collect(),
                routes: self.routes.clone(),
                dns: self.dns.clone(),
            })
        } else {
            encode(&ResultWire100 {
                cni_version,
                interfaces: self.interfaces.clone(),
                ips: self.ips.clone(),
                routes: self.routes.clone(),
                dns: self.dns.clone(),
            })
        };
        let mut value = encoded?;
        if version >= CniVersion::V1_1_0
            && self.dns.is_empty()
            && let Some(object) = value.as_object_mut()
        {
            object.remove("dns");
        }
        Ok(value)
    }

    /// This result converted to `version`: the same as writing it in that
    /// version's shape and reading it back, so whatever that shape cannot
    /// hold is dropped.
    pub fn convert_to(&self, version: CniVersion) -> Result<CniResult, CniError> {
        Self::from_value(&self.to_json(version)?, version)
    }

    fn legacy_wire(&self, cni_version: String) -> Result<ResultWire020, CniError> {
        let first_of_family = |want_v4: bool| {
            self.ips
                .iter()
                .find(|ip| is_ipv4(&ip.address) == want_v4)
                .map(|ip| IpConfigWire020 {
                    ip: ip.address,
                    gateway: ip.gateway,
                    routes: Vec::new(),
                })
        };
        let mut ip4 = first_of_family(true);
        let mut ip6 = first_of_family(false);
        for route in &self.routes {
            let family_config = if is_ipv4(&route.dst) {
                ip4.as_mut()
            } else {
                ip6.as_mut()
            };
            if let Some(config) = family_config {
                config.routes.push(Route::new(route.dst, route.gw));
            }
        }
        if ip4.is_none() && ip6.is_none() {
            return Err(CniError::internal("cannot convert: no valid IP addresses"));
        }
        Ok(ResultWire020 {
            cni_version,
            ip4,
            ip6,
            dns: self.dns.clone(),
        })
    }
}

fn encode<T: Serialize>(wire: &T) -> Result<Value, CniError> {
    serde_json::to_value(wire)
        .map_err(|error| CniError::internal(format!("failed to encode CNI result: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture_020() -> Value {
        json!({"cniVersion": "0.2.0",
            "ip4": {"ip": "10.1.2.2/24", "gateway": "10.1.2.1",
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.2.254"}]},
            "ip6": {"ip": "2001:db8:1::2/64", "gateway": "2001:db8:1::1"},
            "dns": {"nameservers": ["192.0.2.3"], "search": ["example.com"]}})
    }

    fn fixture_040() -> Value {
        json!({"cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "mac": "5e:5d:f5:fb:42:1c", "sandbox": "/proc/15105/ns/net"}],
            "ips": [{"version": "4", "interface": 0, "address": "10.5.0.2/30", "gateway": "10.5.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}})
    }

    fn fixture_100() -> Value {
        json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "mac": "1e:18:51:ae:81:db", "sandbox": "/proc/14328/ns/net"}],
            "ips": [{"interface": 0, "address": "10.1.2.2/24", "gateway": "10.1.2.1"},
                    {"interface": 0, "address": "2001:db8:1::2/64", "gateway": "2001:db8:1::1"}],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.200.0.0/16", "gw": "10.1.2.254"}],
            "dns": {"nameservers": ["10.1.2.1"]}})
    }

    /// A 1.1.0 result using every field, with interleaved families.
    fn full_result() -> CniResult {
        CniResult {
            cni_version: CniVersion::V1_1_0,
            interfaces: vec![
                Interface {
                    name: "net1".into(),
                    mac: Some("c2:11:22:33:44:55".into()),
                    mtu: Some(1400),
                    sandbox: Some("/var/run/netns/pod".into()),
                    socket_path: Some("/run/vhost.sock".into()),
                    pci_id: Some("0000:04:00.5".into()),
                },
                Interface {
                    name: "host0".into(),
                    ..Interface::default()
                },
            ],
            ips: vec![
                IpConfig {
                    interface: Some(0),
                    address: "2001:db8:1::2/64".parse().unwrap(),
                    gateway: Some("2001:db8:1::1".parse().unwrap()),
                },
                IpConfig {
                    interface: Some(0),
                    address: "10.1.2.2/24".parse().unwrap(),
                    gateway: None,
                },
                IpConfig {
                    interface: Some(1),
                    address: "10.9.9.9/32".parse().unwrap(),
                    gateway: Some("10.9.9.1".parse().unwrap()),
                },
            ],
            routes: vec![
                Route {
                    dst: "::/0".parse().unwrap(),
                    gw: Some("2001:db8:1::1".parse().unwrap()),
                    mtu: Some(1300),
                    advmss: Some(1260),
                    priority: Some(100),
                    table: Some(0),
                    scope: Some(0),
                },
                Route::new("0.0.0.0/0".parse().unwrap(), None),
                Route {
                    dst: "192.168.0.0/16".parse().unwrap(),
                    gw: Some("10.1.2.254".parse().unwrap()),
                    mtu: None,
                    advmss: None,
                    priority: Some(5),
                    table: Some(100),
                    scope: Some(253),
                },
            ],
            dns: Dns {
                nameservers: vec!["10.1.2.1".into()],
                domain: Some("cluster.local".into()),
                search: vec!["svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            },
        }
    }

    /// What survives of `result` in `version`'s shape, in the order that
    /// shape yields when read back (the oracle for the round trips).
    fn expected_in(result: &CniResult, version: CniVersion) -> CniResult {
        let mut expected = result.clone();
        expected.cni_version = version;
        if version.has_legacy_result_shape() {
            let first_v4 = result.ips.iter().find(|ip| is_ipv4(&ip.address));
            let first_v6 = result.ips.iter().find(|ip| !is_ipv4(&ip.address));
            expected.interfaces.clear();
            expected.ips = [first_v4, first_v6]
                .into_iter()
                .flatten()
                .map(|ip| IpConfig {
                    interface: None,
                    ..ip.clone()
                })
                .collect();
            let family_routes = |want_v4: bool| {
                result
                    .routes
                    .iter()
                    .filter(move |route| is_ipv4(&route.dst) == want_v4)
                    .map(|route| Route::new(route.dst, route.gw))
            };
            expected.routes = Vec::new();
            if first_v4.is_some() {
                expected.routes.extend(family_routes(true));
            }
            if first_v6.is_some() {
                expected.routes.extend(family_routes(false));
            }
        } else if version < CniVersion::V1_0_0 {
            for interface in &mut expected.interfaces {
                interface.mtu = None;
                interface.socket_path = None;
                interface.pci_id = None;
            }
        }
        expected
    }

    #[test]
    fn reads_and_writes_the_0_2_0_fixture() {
        let result = CniResult::from_value(&fixture_020(), CniVersion::V1_0_0).unwrap();
        assert_eq!(result.cni_version, CniVersion::V0_2_0);
        assert!(result.interfaces.is_empty());
        let addresses: Vec<String> = result.ips.iter().map(|ip| ip.address.to_string()).collect();
        assert_eq!(addresses, ["10.1.2.2/24", "2001:db8:1::2/64"]);
        assert!(result.ips.iter().all(|ip| ip.interface.is_none()));
        assert_eq!(result.routes.len(), 2);
        assert_eq!(result.dns.search, ["example.com"]);
        assert_eq!(result.to_json(CniVersion::V0_2_0).unwrap(), fixture_020());
        let mut as_010 = fixture_020();
        as_010["cniVersion"] = json!("0.1.0");
        assert_eq!(result.to_json(CniVersion::V0_1_0).unwrap(), as_010);
    }

    #[test]
    fn reads_and_writes_the_0_4_0_fixture_with_empty_dns_object() {
        let result = CniResult::from_value(&fixture_040(), CniVersion::V1_0_0).unwrap();
        assert_eq!(result.cni_version, CniVersion::V0_4_0);
        assert_eq!(
            result.interfaces[0].sandbox.as_deref(),
            Some("/proc/15105/ns/net")
        );
        assert_eq!(result.ips[0].interface, Some(0));
        assert_eq!(result.to_json(CniVersion::V0_4_0).unwrap(), fixture_040());
        for version in [CniVersion::V0_3_0, CniVersion::V0_3_1] {
            let mut expected = fixture_040();
            expected["cniVersion"] = json!(version.as_str());
            assert_eq!(result.to_json(version).unwrap(), expected);
        }
    }

    #[test]
    fn reads_and_writes_the_1_0_0_fixture() {
        let result = CniResult::from_value(&fixture_100(), CniVersion::V0_1_0).unwrap();
        assert_eq!(result.cni_version, CniVersion::V1_0_0);
        assert_eq!(result.to_json(CniVersion::V1_0_0).unwrap(), fixture_100());
        let mut as_110 = fixture_100();
        as_110["cniVersion"] = json!("1.1.0");
        assert_eq!(result.to_json(CniVersion::V1_1_0).unwrap(), as_110);
    }

    #[test]
    fn converts_1_0_0_down_to_0_4_0_adding_ip_versions() {
        let result = CniResult::from_value(&fixture_100(), CniVersion::V1_0_0).unwrap();
        let expected = json!({"cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "mac": "1e:18:51:ae:81:db", "sandbox": "/proc/14328/ns/net"}],
            "ips": [{"version": "4", "interface": 0, "address": "10.1.2.2/24", "gateway": "10.1.2.1"},
                    {"version": "6", "interface": 0, "address": "2001:db8:1::2/64", "gateway": "2001:db8:1::1"}],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.200.0.0/16", "gw": "10.1.2.254"}],
            "dns": {"nameservers": ["10.1.2.1"]}});
        assert_eq!(result.to_json(CniVersion::V0_4_0).unwrap(), expected);
    }

    #[test]
    fn converts_1_0_0_down_to_0_2_0_by_family() {
        let result = CniResult::from_value(&fixture_100(), CniVersion::V1_0_0).unwrap();
        let expected = json!({"cniVersion": "0.2.0",
            "ip4": {"ip": "10.1.2.2/24", "gateway": "10.1.2.1",
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.200.0.0/16", "gw": "10.1.2.254"}]},
            "ip6": {"ip": "2001:db8:1::2/64", "gateway": "2001:db8:1::1"},
            "dns": {"nameservers": ["10.1.2.1"]}});
        assert_eq!(result.to_json(CniVersion::V0_2_0).unwrap(), expected);
    }

    #[test]
    fn converts_0_2_0_up_to_0_4_0_and_1_0_0() {
        let result = CniResult::from_value(&fixture_020(), CniVersion::V0_2_0).unwrap();
        let routes = json!([{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.2.254"}]);
        let dns = json!({"nameservers": ["192.0.2.3"], "search": ["example.com"]});
        assert_eq!(
            result.to_json(CniVersion::V0_4_0).unwrap(),
            json!({"cniVersion": "0.4.0",
                "ips": [{"version": "4", "address": "10.1.2.2/24", "gateway": "10.1.2.1"},
                        {"version": "6", "address": "2001:db8:1::2/64", "gateway": "2001:db8:1::1"}],
                "routes": routes, "dns": dns})
        );
        assert_eq!(
            result.to_json(CniVersion::V1_0_0).unwrap(),
            json!({"cniVersion": "1.0.0",
                "ips": [{"address": "10.1.2.2/24", "gateway": "10.1.2.1"},
                        {"address": "2001:db8:1::2/64", "gateway": "2001:db8:1::1"}],
                "routes": routes, "dns": dns})
        );
    }

    #[test]
    fn converts_0_4_0_up_to_1_1_0_dropping_ip_versions() {
        let result = CniResult::from_value(&fixture_040(), CniVersion::V0_4_0).unwrap();
        assert_eq!(
            result.to_json(CniVersion::V1_1_0).unwrap(),
            json!({"cniVersion": "1.1.0",
                "interfaces": [{"name": "eth0", "mac": "5e:5d:f5:fb:42:1c", "sandbox": "/proc/15105/ns/net"}],
                "ips": [{"interface": 0, "address": "10.5.0.2/30", "gateway": "10.5.0.1"}],
                "routes": [{"dst": "0.0.0.0/0"}]})
        );
    }

    #[test]
    fn spec_1_1_fields_survive_to_0_4_0_routes_but_not_interfaces_or_0_2_0() {
        let result = full_result();
        let in_110 = result.to_json(CniVersion::V1_1_0).unwrap();
        assert_eq!(in_110["interfaces"][0]["mtu"], 1400);
        assert_eq!(in_110["interfaces"][0]["socketPath"], "/run/vhost.sock");
        assert_eq!(in_110["interfaces"][0]["pciID"], "0000:04:00.5");
        assert_eq!(
            in_110["routes"][0],
            json!({"dst": "::/0", "gw": "2001:db8:1::1", "mtu": 1300, "advmss": 1260, "priority": 100, "table": 0, "scope": 0})
        );

        let in_040 = result.to_json(CniVersion::V0_4_0).unwrap();
        assert_eq!(
            in_040["interfaces"][0],
            json!({"name": "net1", "mac": "c2:11:22:33:44:55", "sandbox": "/var/run/netns/pod"})
        );
        assert_eq!(in_040["interfaces"][1], json!({"name": "host0"}));
        assert_eq!(in_040["routes"], in_110["routes"]);
        assert_eq!(in_040["ips"][0]["version"], "6");
        assert_eq!(in_040["ips"][1]["version"], "4");

        let in_020 = result.to_json(CniVersion::V0_2_0).unwrap();
        assert_eq!(
            in_020,
            json!({"cniVersion": "0.2.0",
                "ip4": {"ip": "10.1.2.2/24",
                        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.2.254"}]},
                "ip6": {"ip": "2001:db8:1::2/64", "gateway": "2001:db8:1::1",
                        "routes": [{"dst": "::/0", "gw": "2001:db8:1::1"}]},
                "dns": {"nameservers": ["10.1.2.1"], "domain": "cluster.local",
                        "search": ["svc.cluster.local"], "options": ["ndots:5"]}})
        );
    }

    #[test]
    fn legacy_output_drops_routes_of_a_family_without_an_address() {
        let mut result = CniResult::empty(CniVersion::V1_0_0);
        result.ips.push(IpConfig {
            interface: None,
            address: "10.0.0.2/24".parse().unwrap(),
            gateway: None,
        });
        result
            .routes
            .push(Route::new("::/0".parse().unwrap(), None));
        result.routes.push(Route::new(
            "10.1.0.0/16".parse().unwrap(),
            Some("10.0.0.1".parse().unwrap()),
        ));
        assert_eq!(
            result.to_json(CniVersion::V0_2_0).unwrap(),
            json!({"cniVersion": "0.2.0",
                "ip4": {"ip": "10.0.0.2/24", "routes": [{"dst": "10.1.0.0/16", "gw": "10.0.0.1"}]},
                "dns": {}})
        );
    }

    #[test]
    fn legacy_output_without_addresses_fails() {
        let mut result = CniResult::from_value(&fixture_040(), CniVersion::V0_4_0).unwrap();
        result.ips.clear();
        for version in [CniVersion::V0_1_0, CniVersion::V0_2_0] {
            let error = result.to_json(version).unwrap_err();
            assert_eq!(error.code, CniError::INTERNAL);
            assert_eq!(error.msg, "cannot convert: no valid IP addresses");
        }
        assert!(result.to_json(CniVersion::V0_3_0).is_ok());
    }

    #[test]
    fn empty_dns_is_an_object_up_to_1_0_0_and_omitted_in_1_1_0() {
        let mut result = CniResult::empty(CniVersion::V1_1_0);
        result.ips.push(IpConfig {
            interface: None,
            address: "10.0.0.2/24".parse().unwrap(),
            gateway: None,
        });
        for version in CniVersion::ALL {
            let value = result.to_json(version).unwrap();
            if version == CniVersion::V1_1_0 {
                assert!(value.get("dns").is_none(), "{value}");
            } else {
                assert_eq!(value["dns"], json!({}), "{version}");
            }
        }
        result.dns.nameservers.push("10.0.0.1".into());
        assert_eq!(
            result.to_json(CniVersion::V1_1_0).unwrap()["dns"],
            json!({"nameservers": ["10.0.0.1"]})
        );
    }

    #[test]
    fn ipam_result_omits_interfaces_and_interface_indexes() {
        let ipam = json!({"cniVersion": "1.0.0",
            "ips": [{"address": "10.1.2.2/24", "gateway": "10.1.2.1"}],
            "dns": {}});
        let result = CniResult::from_value(&ipam, CniVersion::V1_0_0).unwrap();
        assert!(result.interfaces.is_empty());
        assert_eq!(result.ips[0].interface, None);
        assert_eq!(result.to_json(CniVersion::V1_0_0).unwrap(), ipam);
        let empty = CniResult::empty(CniVersion::V1_0_0)
            .to_json(CniVersion::V1_0_0)
            .unwrap();
        assert_eq!(empty, json!({"cniVersion": "1.0.0", "dns": {}}));
    }

    #[test]
    fn missing_version_takes_the_assumed_one() {
        let legacy_shape = json!({"ip4": {"ip": "10.0.0.2/24"}});
        let as_legacy = CniResult::from_value(&legacy_shape, CniVersion::V0_2_0).unwrap();
        assert_eq!(as_legacy.cni_version, CniVersion::V0_2_0);
        assert_eq!(as_legacy.ips.len(), 1);
        let as_current = CniResult::from_value(&legacy_shape, CniVersion::V1_0_0).unwrap();
        assert_eq!(as_current.cni_version, CniVersion::V1_0_0);
        assert!(as_current.ips.is_empty());
        let empty_version = json!({"cniVersion": "", "ips": [{"address": "10.0.0.2/24"}]});
        let read = CniResult::from_value(&empty_version, CniVersion::V0_4_0).unwrap();
        assert_eq!((read.cni_version, read.ips.len()), (CniVersion::V0_4_0, 1));
    }

    #[test]
    fn go_zero_values_read_as_absent() {
        let value = json!({"cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mac": "", "sandbox": "", "mtu": 0, "socketPath": null}],
            "ips": [{"address": "10.0.0.2/24", "gateway": ""}],
            "routes": [{"dst": "0.0.0.0/0", "gw": null, "priority": 0, "table": 0}],
            "dns": null});
        let result = CniResult::from_value(&value, CniVersion::V1_1_0).unwrap();
        assert_eq!(
            result.interfaces[0],
            Interface {
                name: "eth0".into(),
                ..Interface::default()
            }
        );
        assert_eq!(result.ips[0].gateway, None);
        assert_eq!(result.routes[0].priority, None);
        assert_eq!(result.routes[0].table, Some(0));
        assert!(result.dns.is_empty());
    }

    #[test]
    fn address_host_bits_are_kept() {
        let value = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.2/24"}], "routes": [{"dst": "10.1.2.9/24"}]});
        let out = CniResult::from_value(&value, CniVersion::V1_0_0)
            .unwrap()
            .to_json(CniVersion::V1_0_0)
            .unwrap();
        assert_eq!(out["ips"][0]["address"], "10.1.2.2/24");
        assert_eq!(out["routes"][0]["dst"], "10.1.2.9/24");
    }

    #[test]
    fn bad_results_are_rejected_with_codes() {
        let unsupported =
            CniResult::from_value(&json!({"cniVersion": "9.0.0"}), CniVersion::V1_0_0).unwrap_err();
        assert_eq!(unsupported.code, CniError::INCOMPATIBLE_VERSION);
        assert!(unsupported.msg.contains("\"9.0.0\""), "{}", unsupported.msg);

        let cases = [
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.300/24"}]}),
            json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3"}]}),
            json!({"cniVersion": "1.0.0", "ips": [{"gateway": "10.0.0.1"}]}),
            json!({"cniVersion": "1.0.0", "routes": [{"dst": "0.0.0.0/0", "gw": "nope"}]}),
            json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "x"}]}),
            json!({"cniVersion": "0.2.0", "ip4": {"gateway": "10.0.0.1"}}),
            json!({"cniVersion": 1}),
            json!([1, 2]),
        ];
        for value in cases {
            let error = CniResult::from_value(&value, CniVersion::V1_0_0).unwrap_err();
            assert_eq!(error.code, CniError::DECODING_FAILURE, "{value}: {error}");
        }
        assert_eq!(
            CniResult::parse(b"{", CniVersion::V1_0_0).unwrap_err().code,
            CniError::DECODING_FAILURE
        );
        let gateway_error = CniResult::from_value(
            &json!({"cniVersion": "1.0.0", "routes": [{"dst": "0.0.0.0/0", "gw": "nope"}]}),
            CniVersion::V1_0_0,
        )
        .unwrap_err();
        assert!(
            gateway_error.msg.contains("\"nope\""),
            "{}",
            gateway_error.msg
        );
    }

    #[test]
    fn parse_reads_bytes() {
        let bytes = serde_json::to_vec(&fixture_100()).unwrap();
        let result = CniResult::parse(&bytes, CniVersion::V0_1_0).unwrap();
        assert_eq!(
            result,
            CniResult::from_value(&fixture_100(), CniVersion::V0_1_0).unwrap()
        );
    }

    #[test]
    fn every_version_pair_round_trips_through_json() {
        let original = full_result();
        for from in CniVersion::ALL {
            let written_from = original.to_json(from).unwrap();
            let read_from = CniResult::from_value(&written_from, CniVersion::V0_1_0).unwrap();
            assert_eq!(
                read_from,
                expected_in(&original, from),
                "write and read {from}"
            );
            for to in CniVersion::ALL {
                let written_to = read_from.to_json(to).unwrap();
                assert_eq!(written_to["cniVersion"], json!(to.as_str()));
                let read_to = CniResult::from_value(&written_to, CniVersion::V0_1_0).unwrap();
                let expected = expected_in(&expected_in(&original, from), to);
                assert_eq!(read_to, expected, "{from} -> {to}");
                assert_eq!(
                    read_from.convert_to(to).unwrap(),
                    expected,
                    "convert_to {from} -> {to}"
                );
                // converting back up never recovers what the lower shape dropped,
                // and the shared shape is a fixed point
                let back = read_to.to_json(from).unwrap();
                assert_eq!(
                    CniResult::from_value(&back, from).unwrap(),
                    expected_in(&expected, from),
                    "{from} -> {to} -> {from}"
                );
            }
        }
    }

    #[test]
    fn fixtures_round_trip_for_every_version_pair() {
        for fixture in [fixture_020(), fixture_040(), fixture_100()] {
            let original = CniResult::from_value(&fixture, CniVersion::V0_1_0).unwrap();
            for from in CniVersion::ALL {
                let in_from = original.convert_to(from).unwrap();
                for to in CniVersion::ALL {
                    let there = in_from.convert_to(to).unwrap();
                    let back = there.convert_to(from).unwrap();
                    assert_eq!(
                        back,
                        expected_in(&expected_in(&in_from, to), from),
                        "{from} -> {to} -> {from}"
                    );
                }
            }
        }
    }
}
