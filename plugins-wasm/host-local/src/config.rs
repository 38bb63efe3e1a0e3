//! The host-local network configuration: parsing, range canonicalization and
//! the requested addresses, with the reference's field names, defaults,
//! ordering and error texts. Pure: no host calls.
//!
//! The reference decodes with Go's `encoding/json`, which matches keys
//! case-insensitively (`RuntimeConfig` works) and treats `null` as absent;
//! [`lookup`] does the same (an exact key wins over a case variant).

use std::fmt;
use std::net::IpAddr;

use guest_sdk::{PluginError, Route, code};
use serde_json::{Map, Value};

use crate::address::{self, Cidr};
use crate::range::{RangeError, RangeSet, RangeSpec};

/// The CNI_ARGS keys host-local knows (`IgnoreUnknown` is handled by the SDK).
const KNOWN_CNI_ARGS: &[&str] = &["IP"];

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    /// The configuration is not JSON at all (code 6).
    NotJson { reason: String },
    /// A field has the wrong JSON type (code 6).
    WrongType {
        path: String,
        expected: &'static str,
        found: String,
    },
    /// `rangeStart`, `rangeEnd`, `gateway` or a route's `gw` is not an
    /// address (Go `net.IP`).
    InvalidIp { text: String },
    /// A `subnet` or a route's `dst` is not a prefix (Go `net.ParseCIDR`).
    InvalidCidr { text: String },
    /// An entry of `args.cni.ips` or `runtimeConfig.ips` is not an address,
    /// with or without prefix (CNI `ip.IP`).
    InvalidRequestedIp { text: String },
    /// An empty string in `args.cni.ips` or `runtimeConfig.ips`.
    EmptyRequestedIp,
    /// `IP=` in CNI_ARGS is not an address.
    InvalidIpArg { value: String },
    /// CNI_ARGS has a key host-local does not know (the SDK's error).
    CniArgs(PluginError),
    /// A route without `dst`.
    MissingRouteDst { index: usize },
    /// No `ipam` object.
    MissingIpam,
    /// Neither `subnet`, `ranges` nor `runtimeConfig.ipRanges`.
    NoRanges,
    /// A range set (counted after `runtimeConfig.ipRanges` and the legacy
    /// range were put first) is invalid.
    InvalidRangeSet { index: usize, source: RangeError },
    /// More than one range set of a family for a CNI version before 0.3.0.
    TooManyAddresses { cni_version: String },
    /// Two range sets overlap.
    RangeSetsOverlap { first: usize, second: usize },
}

impl ConfigError {
    /// The CNI error code: 6 when the JSON cannot be decoded, 7 otherwise.
    pub fn code(&self) -> u32 {
        match self {
            ConfigError::NotJson { .. } | ConfigError::WrongType { .. } => code::DECODING_FAILURE,
            ConfigError::CniArgs(error) => error.code,
            _ => code::INVALID_NETWORK_CONFIG,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::NotJson { reason } => {
                write!(formatter, "failed to load netconf: {reason}")
            }
            ConfigError::WrongType {
                path,
                expected,
                found,
            } => write!(
                formatter,
                "failed to load netconf: {path}: expected {expected}, got {found}"
            ),
            ConfigError::InvalidIp { text } => write!(formatter, "invalid IP address: {text}"),
            ConfigError::InvalidCidr { text } => write!(formatter, "invalid CIDR address: {text}"),
            ConfigError::InvalidRequestedIp { text } => {
                write!(formatter, "invalid IP address {text}")
            }
            ConfigError::EmptyRequestedIp => {
                write!(formatter, "cannot understand ip: IP <nil> not v4 nor v6")
            }
            ConfigError::InvalidIpArg { value } => write!(
                formatter,
                "ARGS: error parsing value of pair \"IP={value}\": invalid IP address {value}"
            ),
            ConfigError::CniArgs(error) => formatter.write_str(&error.msg),
            ConfigError::MissingRouteDst { index } => {
                write!(formatter, "ipam.routes[{index}]: missing dst")
            }
            ConfigError::MissingIpam => write!(formatter, "IPAM config missing 'ipam' key"),
            ConfigError::NoRanges => write!(formatter, "no IP ranges specified"),
            ConfigError::InvalidRangeSet { index, source } => {
                write!(formatter, "invalid range set {index}: {source}")
            }
            ConfigError::TooManyAddresses { cni_version } => write!(
                formatter,
                "CNI version {cni_version} does not support more than 1 address per family"
            ),
            ConfigError::RangeSetsOverlap { first, second } => {
                write!(formatter, "range set {first} overlaps with {second}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for PluginError {
    fn from(error: ConfigError) -> Self {
        PluginError::new(error.code(), error.to_string())
    }
}

/// A loaded host-local configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct IpamConfig {
    /// The network name (`name`); the host names the store after it.
    pub name: String,
    /// `cniVersion` as given.
    pub cni_version: String,
    /// `ipam.type`.
    pub plugin_type: String,
    /// `ipam.dataDir`; the host decides where the store lives.
    pub data_dir: Option<String>,
    /// `ipam.resolvConf`, when set and not empty.
    pub resolv_conf: Option<String>,
    /// `ipam.routes`, returned verbatim.
    pub routes: Vec<Route>,
    /// `runtimeConfig.ipRanges` ++ the legacy single range ++ `ipam.ranges`.
    pub ranges: Vec<RangeSet>,
    /// CNI_ARGS `IP` ++ `args.cni.ips` ++ `runtimeConfig.ips`, prefixes
    /// dropped, duplicates kept.
    pub requested_ips: Vec<IpAddr>,
}

/// Load the configuration a host-local call receives (the whole network
/// configuration) together with the call's CNI_ARGS.
pub fn load(config_json: &str, cni_args: &[(String, String)]) -> Result<IpamConfig, ConfigError> {
    let root: Value = serde_json::from_str(config_json).map_err(|error| ConfigError::NotJson {
        reason: error.to_string(),
    })?;
    let root = as_object("netconf", &root)?;
    let name = optional_string("name", root, "name")?.unwrap_or_default();
    let cni_version = optional_string("cniVersion", root, "cniVersion")?.unwrap_or_default();

    let runtime_config = lookup(root, "runtimeConfig")
        .map(|value| as_object("runtimeConfig", value))
        .transpose()?;
    let runtime_ranges = match runtime_config.and_then(|object| lookup(object, "ipRanges")) {
        Some(value) => parse_range_sets("runtimeConfig.ipRanges", value)?,
        None => Vec::new(),
    };
    let runtime_ips = match runtime_config.and_then(|object| lookup(object, "ips")) {
        Some(value) => parse_requested_ips("runtimeConfig.ips", value)?,
        None => Vec::new(),
    };
    let args_cni = match lookup(root, "args") {
        Some(value) => lookup(as_object("args", value)?, "cni")
            .map(|value| as_object("args.cni", value))
            .transpose()?,
        None => None,
    };
    let args_ips = match args_cni.and_then(|object| lookup(object, "ips")) {
        Some(value) => parse_requested_ips("args.cni.ips", value)?,
        None => Vec::new(),
    };
    let ipam = lookup(root, "ipam")
        .map(|value| as_object("ipam", value))
        .transpose()?;
    let parsed_ipam = ipam.map(parse_ipam).transpose()?;
    let Some(parsed_ipam) = parsed_ipam else {
        return Err(ConfigError::MissingIpam);
    };

    let mut requested = Vec::new();
    let env_args =
        guest_sdk::netconf::cni_args(cni_args, KNOWN_CNI_ARGS).map_err(ConfigError::CniArgs)?;
    if let Some(value) = env_args.get("IP").filter(|value| !value.is_empty()) {
        let address =
            address::parse_ip_ignoring_prefix(value).ok_or_else(|| ConfigError::InvalidIpArg {
                value: value.clone(),
            })?;
        requested.push(Some(address));
    }
    requested.extend(args_ips);
    requested.extend(runtime_ips);
    let requested_ips = requested
        .into_iter()
        .map(|address| address.ok_or(ConfigError::EmptyRequestedIp))
        .collect::<Result<Vec<_>, _>>()?;

    let mut range_specs = runtime_ranges;
    if let Some(legacy) = parsed_ipam.legacy_range {
        range_specs.push(vec![legacy]);
    }
    range_specs.extend(parsed_ipam.ranges);
    if range_specs.is_empty() {
        return Err(ConfigError::NoRanges);
    }

    let mut ranges = Vec::with_capacity(range_specs.len());
    for (index, specs) in range_specs.iter().enumerate() {
        let set = RangeSet::canonicalize(specs)
            .map_err(|source| ConfigError::InvalidRangeSet { index, source })?;
        ranges.push(set);
    }

    let ipv4_sets = ranges.iter().filter(|set| set.is_ipv4()).count();
    let ipv6_sets = ranges.len() - ipv4_sets;
    if (ipv4_sets > 1 || ipv6_sets > 1) && !version_at_least(&cni_version, (0, 3, 0)) {
        return Err(ConfigError::TooManyAddresses { cni_version });
    }

    for (first, first_set) in ranges.iter().enumerate() {
        for (offset, second_set) in ranges[first + 1..].iter().enumerate() {
            if first_set.overlaps(second_set) {
                return Err(ConfigError::RangeSetsOverlap {
                    first,
                    second: first + 1 + offset,
                });
            }
        }
    }

    Ok(IpamConfig {
        name,
        cni_version,
        plugin_type: parsed_ipam.plugin_type,
        data_dir: parsed_ipam.data_dir,
        resolv_conf: parsed_ipam.resolv_conf,
        routes: parsed_ipam.routes,
        ranges,
        requested_ips,
    })
}

/// The `ipam` object before the range sets are assembled.
struct ParsedIpam {
    plugin_type: String,
    data_dir: Option<String>,
    resolv_conf: Option<String>,
    routes: Vec<Route>,
    legacy_range: Option<RangeSpec>,
    ranges: Vec<Vec<RangeSpec>>,
}

fn parse_ipam(ipam: &Map<String, Value>) -> Result<ParsedIpam, ConfigError> {
    let plugin_type = optional_string("ipam.type", ipam, "type")?.unwrap_or_default();
    let data_dir = optional_string("ipam.dataDir", ipam, "dataDir")?.filter(|dir| !dir.is_empty());
    let resolv_conf =
        optional_string("ipam.resolvConf", ipam, "resolvConf")?.filter(|path| !path.is_empty());
    let routes = match lookup(ipam, "routes") {
        Some(value) => parse_routes(value)?,
        None => Vec::new(),
    };
    // The legacy single range sits at the top of `ipam` and only counts
    // when it has a subnet.
    let legacy = parse_range("ipam", ipam)?;
    let legacy_range = legacy.subnet.is_some().then_some(legacy);
    let ranges = match lookup(ipam, "ranges") {
        Some(value) => parse_range_sets("ipam.ranges", value)?,
        None => Vec::new(),
    };
    Ok(ParsedIpam {
        plugin_type,
        data_dir,
        resolv_conf,
        routes,
        legacy_range,
        ranges,
    })
}

fn parse_range_sets(path: &str, value: &Value) -> Result<Vec<Vec<RangeSpec>>, ConfigError> {
    as_array(path, value)?
        .iter()
        .enumerate()
        .map(|(set_index, set)| {
            let set_path = format!("{path}[{set_index}]");
            match set {
                Value::Null => Ok(Vec::new()),
                _ => as_array(&set_path, set)?
                    .iter()
                    .enumerate()
                    .map(|(range_index, range)| {
                        let range_path = format!("{set_path}[{range_index}]");
                        match range {
                            Value::Null => Ok(RangeSpec::default()),
                            _ => parse_range(&range_path, as_object(&range_path, range)?),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

fn parse_range(path: &str, object: &Map<String, Value>) -> Result<RangeSpec, ConfigError> {
    let subnet = match optional_string(&format!("{path}.subnet"), object, "subnet")? {
        Some(text) => Some(Cidr::parse(&text).ok_or(ConfigError::InvalidCidr { text })?),
        None => None,
    };
    Ok(RangeSpec {
        subnet,
        range_start: optional_ip(&format!("{path}.rangeStart"), object, "rangeStart")?,
        range_end: optional_ip(&format!("{path}.rangeEnd"), object, "rangeEnd")?,
        gateway: optional_ip(&format!("{path}.gateway"), object, "gateway")?,
    })
}

fn parse_routes(value: &Value) -> Result<Vec<Route>, ConfigError> {
    as_array("ipam.routes", value)?
        .iter()
        .enumerate()
        .map(|(index, route)| {
            let path = format!("ipam.routes[{index}]");
            let object = as_object(&path, route)?;
            let dst_text = optional_string(&format!("{path}.dst"), object, "dst")?
                .ok_or(ConfigError::MissingRouteDst { index })?;
            let dst = Cidr::parse(&dst_text).ok_or(ConfigError::InvalidCidr { text: dst_text })?;
            let gw = optional_ip(&format!("{path}.gw"), object, "gw")?;
            // Go's `omitempty` ints: zero means unset. `table` and `scope`
            // are pointers, so zero is a value.
            let nonzero = |field: &str| -> Result<Option<u32>, ConfigError> {
                Ok(optional_u32(&format!("{path}.{field}"), object, field)?
                    .filter(|value| *value != 0))
            };
            Ok(Route {
                dst: dst.to_string(),
                gw: gw.map(|address| address.to_string()),
                mtu: nonzero("mtu")?,
                advmss: nonzero("advmss")?,
                priority: nonzero("priority")?,
                table: optional_u32(&format!("{path}.table"), object, "table")?,
                scope: optional_u32(&format!("{path}.scope"), object, "scope")?,
            })
        })
        .collect()
}

/// Requested addresses; an empty string is kept as `None` so that it fails
/// after CNI_ARGS, as in the reference.
fn parse_requested_ips(path: &str, value: &Value) -> Result<Vec<Option<IpAddr>>, ConfigError> {
    as_array(path, value)?
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let text = as_string(&format!("{path}[{index}]"), item)?;
            if text.is_empty() {
                return Ok(None);
            }
            address::parse_ip_ignoring_prefix(text)
                .map(Some)
                .ok_or_else(|| ConfigError::InvalidRequestedIp {
                    text: text.to_owned(),
                })
        })
        .collect()
}

/// `cniVersion` >= `minimum`, with the CNI library's parsing: empty means
/// 0.1.0, up to three dot-separated integers; unparsable is not greater.
fn version_at_least(version: &str, minimum: (i64, i64, i64)) -> bool {
    if version.is_empty() {
        return (0, 1, 0) >= minimum;
    }
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() > 3 {
        return false;
    }
    let mut numbers = [0i64; 3];
    for (slot, part) in numbers.iter_mut().zip(&parts) {
        match part.parse::<i64>() {
            Ok(number) => *slot = number,
            Err(_) => return false,
        }
    }
    (numbers[0], numbers[1], numbers[2]) >= minimum
}

/// A field of a JSON object the way Go finds it: the exact key, else a key
/// equal ignoring ASCII case; `null` counts as absent.
pub fn lookup<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let value = object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })?;
    (!value.is_null()).then_some(value)
}

/// A short rendering of a JSON value for error messages.
fn describe(value: &Value) -> String {
    const LIMIT: usize = 64;
    let text = value.to_string();
    if text.chars().count() <= LIMIT {
        text
    } else {
        let shortened: String = text.chars().take(LIMIT).collect();
        format!("{shortened}...")
    }
}

fn wrong_type(path: &str, expected: &'static str, value: &Value) -> ConfigError {
    ConfigError::WrongType {
        path: path.to_owned(),
        expected,
        found: describe(value),
    }
}

fn as_object<'a>(path: &str, value: &'a Value) -> Result<&'a Map<String, Value>, ConfigError> {
    value
        .as_object()
        .ok_or_else(|| wrong_type(path, "an object", value))
}

fn as_array<'a>(path: &str, value: &'a Value) -> Result<&'a Vec<Value>, ConfigError> {
    value
        .as_array()
        .ok_or_else(|| wrong_type(path, "a list", value))
}

fn as_string<'a>(path: &str, value: &'a Value) -> Result<&'a str, ConfigError> {
    value
        .as_str()
        .ok_or_else(|| wrong_type(path, "a string", value))
}

fn optional_string(
    path: &str,
    object: &Map<String, Value>,
    name: &str,
) -> Result<Option<String>, ConfigError> {
    lookup(object, name)
        .map(|value| as_string(path, value).map(str::to_owned))
        .transpose()
}

/// An address field (Go `net.IP`): an empty string is absent.
fn optional_ip(
    path: &str,
    object: &Map<String, Value>,
    name: &str,
) -> Result<Option<IpAddr>, ConfigError> {
    match optional_string(path, object, name)? {
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => address::parse_ip(&text)
            .map(Some)
            .ok_or(ConfigError::InvalidIp { text }),
        None => Ok(None),
    }
}

fn optional_u32(
    path: &str,
    object: &Map<String, Value>,
    name: &str,
) -> Result<Option<u32>, ConfigError> {
    lookup(object, name)
        .map(|value| {
            value
                .as_u64()
                .and_then(|number| u32::try_from(number).ok())
                .ok_or_else(|| wrong_type(path, "a non-negative 32-bit integer", value))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn no_args() -> Vec<(String, String)> {
        Vec::new()
    }

    fn args(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    /// The ranges of a loaded config as (start, end, gateway, network/prefix) texts.
    fn summary(config: &IpamConfig) -> Vec<Vec<(String, String, String, String)>> {
        config
            .ranges
            .iter()
            .map(|set| {
                set.ranges()
                    .iter()
                    .map(|range| {
                        (
                            range.range_start.to_string(),
                            range.range_end.to_string(),
                            range.gateway.to_string(),
                            format!("{}/{}", range.network, range.prefix_len),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    fn row(
        start: &str,
        end: &str,
        gateway: &str,
        subnet: &str,
    ) -> (String, String, String, String) {
        (start.into(), end.into(), gateway.into(), subnet.into())
    }

    fn error_of(config_json: &str) -> ConfigError {
        load(config_json, &no_args()).expect_err("config must be refused")
    }

    #[test]
    fn old_style_config_becomes_one_range_set() {
        let config = load(
            r#"{"cniVersion":"0.3.1","name":"mynet","type":"ipvlan","master":"foo0",
                "ipam":{"type":"host-local","subnet":"10.1.2.0/24","rangeStart":"10.1.2.9",
                        "rangeEnd":"10.1.2.20","gateway":"10.1.2.30"}}"#,
            &no_args(),
        )
        .expect("valid");
        assert_eq!(config.name, "mynet");
        assert_eq!(config.cni_version, "0.3.1");
        assert_eq!(config.plugin_type, "host-local");
        assert_eq!(
            summary(&config),
            vec![vec![row(
                "10.1.2.9",
                "10.1.2.20",
                "10.1.2.30",
                "10.1.2.0/24"
            )]]
        );
        assert!(config.requested_ips.is_empty());
        assert!(config.routes.is_empty());
        assert_eq!(config.resolv_conf, None);
    }

    #[test]
    fn new_style_config_keeps_set_and_range_order() {
        let config = load(
            r#"{"cniVersion":"0.3.1","name":"mynet","ipam":{"type":"host-local","ranges":[
                [{"subnet":"10.1.2.0/24","rangeStart":"10.1.2.9","rangeEnd":"10.1.2.20","gateway":"10.1.2.30"},
                 {"subnet":"10.1.4.0/24"}],
                [{"subnet":"11.1.2.0/24","rangeStart":"11.1.2.9","rangeEnd":"11.1.2.20","gateway":"11.1.2.30"}]]}}"#,
            &no_args(),
        )
        .expect("valid");
        assert_eq!(
            summary(&config),
            vec![
                vec![
                    row("10.1.2.9", "10.1.2.20", "10.1.2.30", "10.1.2.0/24"),
                    row("10.1.4.1", "10.1.4.254", "10.1.4.1", "10.1.4.0/24"),
                ],
                vec![row("11.1.2.9", "11.1.2.20", "11.1.2.30", "11.1.2.0/24")],
            ]
        );
    }

    #[test]
    fn runtime_ranges_come_first_then_the_legacy_range_then_ranges() {
        let config = load(
            r#"{"cniVersion":"0.3.1","name":"mynet",
                "runtimeConfig":{"irrelevant":"a","ipRanges":[[{"subnet":"12.1.3.0/24"}]]},
                "ipam":{"type":"host-local","subnet":"10.1.2.0/24","rangeStart":"10.1.2.9",
                        "rangeEnd":"10.1.2.20","gateway":"10.1.2.30",
                        "ranges":[[{"subnet":"11.1.2.0/24","rangeStart":"11.1.2.9",
                                    "rangeEnd":"11.1.2.20","gateway":"11.1.2.30"}]]}}"#,
            &no_args(),
        )
        .expect("valid");
        assert_eq!(
            summary(&config),
            vec![
                vec![row("12.1.3.1", "12.1.3.254", "12.1.3.1", "12.1.3.0/24")],
                vec![row("10.1.2.9", "10.1.2.20", "10.1.2.30", "10.1.2.0/24")],
                vec![row("11.1.2.9", "11.1.2.20", "11.1.2.30", "11.1.2.0/24")],
            ]
        );
    }

    const THREE_SETS: &str = r#"{"cniVersion":"0.3.1","name":"mynet",
        "args":{"cni":{"ips":ARGS_IPS}},
        "ipam":{"type":"host-local","ranges":[
            [{"subnet":"10.1.2.0/24","rangeStart":"10.1.2.9","rangeEnd":"10.1.2.20","gateway":"10.1.2.30"}],
            [{"subnet":"11.1.2.0/24","rangeStart":"11.1.2.9","rangeEnd":"11.1.2.20","gateway":"11.1.2.30"}],
            [{"subnet":"2001:db8:1::/64"}]]}}"#;

    #[test]
    fn cni_args_ip_is_read_with_or_without_prefix() {
        let config_json = THREE_SETS.replace("ARGS_IPS", "[]");
        for value in ["10.1.2.10", "10.1.2.10/24"] {
            let config = load(&config_json, &args(&[("IP", value)])).expect("valid");
            assert_eq!(config.requested_ips, vec![ip("10.1.2.10")], "{value}");
        }
        // An empty IP= is ignored; the last IP= wins.
        let config = load(&config_json, &args(&[("IP", "")])).expect("valid");
        assert!(config.requested_ips.is_empty());
        let config = load(
            &config_json,
            &args(&[("IP", "10.1.2.10"), ("IP", "10.1.2.12")]),
        )
        .expect("valid");
        assert_eq!(config.requested_ips, vec![ip("10.1.2.12")]);
    }

    #[test]
    fn requested_ips_are_env_then_args_then_runtime_config() {
        for ips in [
            r#"["10.1.2.11","11.11.11.11","2001:db8:1::11"]"#,
            r#"["10.1.2.11/24","11.11.11.11/24","2001:db8:1::11/64"]"#,
        ] {
            let config = load(
                &THREE_SETS.replace("ARGS_IPS", ips),
                &args(&[("IP", "10.1.2.10")]),
            )
            .expect("valid");
            assert_eq!(
                config.requested_ips,
                vec![
                    ip("10.1.2.10"),
                    ip("10.1.2.11"),
                    ip("11.11.11.11"),
                    ip("2001:db8:1::11")
                ]
            );
        }
        let config = load(
            r#"{"cniVersion":"0.3.1","name":"mynet",
                "runtimeConfig":{"ips":["192.168.0.1","192.168.0.5/24","2001:db8::1/64"]},
                "args":{"cni":{"ips":["10.1.2.3"]}},
                "ipam":{"type":"host-local","subnet":"10.1.2.0/24"}}"#,
            &no_args(),
        )
        .expect("valid");
        assert_eq!(
            config.requested_ips,
            vec![
                ip("10.1.2.3"),
                ip("192.168.0.1"),
                ip("192.168.0.5"),
                ip("2001:db8::1")
            ]
        );
    }

    #[test]
    fn bad_requested_ips_are_refused_with_the_reference_texts() {
        let config_json = THREE_SETS.replace("ARGS_IPS", "[]");
        let err = load(&config_json, &args(&[("IP", "foo")])).expect_err("bad IP=");
        assert_eq!(
            err.to_string(),
            "ARGS: error parsing value of pair \"IP=foo\": invalid IP address foo"
        );
        assert_eq!(err.code(), 7);
        let err = load(&config_json, &args(&[("K8S_POD_NAME", "x")])).expect_err("unknown");
        assert_eq!(err.to_string(), "ARGS: unknown args [\"K8S_POD_NAME=x\"]");
        assert_eq!(err.code(), 7);
        assert!(
            load(
                &config_json,
                &args(&[("IgnoreUnknown", "1"), ("K8S_POD_NAME", "x")])
            )
            .is_ok()
        );

        let err = error_of(&THREE_SETS.replace("ARGS_IPS", r#"["bar"]"#));
        assert_eq!(err.to_string(), "invalid IP address bar");
        let err = error_of(&THREE_SETS.replace("ARGS_IPS", r#"[""]"#));
        assert_eq!(
            err.to_string(),
            "cannot understand ip: IP <nil> not v4 nor v6"
        );
        let err = error_of(&THREE_SETS.replace("ARGS_IPS", r#""10.1.2.11""#));
        assert_eq!(err.code(), 6);
        assert_eq!(
            err.to_string(),
            "failed to load netconf: args.cni.ips: expected a list, got \"10.1.2.11\""
        );
    }

    #[test]
    fn range_set_overlaps_are_refused() {
        let err = error_of(
            r#"{"cniVersion":"0.3.1","name":"mynet","ipam":{"type":"host-local","ranges":[
                [{"subnet":"10.1.2.0/24"},{"subnet":"10.2.2.0/24"}],
                [{"subnet":"10.1.4.0/24"},{"subnet":"10.1.6.0/24"},{"subnet":"10.1.8.0/24"},{"subnet":"10.1.2.0/24"}]]}}"#,
        );
        assert_eq!(err.to_string(), "range set 0 overlaps with 1");
        assert_eq!(err.code(), 7);

        let err = error_of(
            r#"{"cniVersion":"0.3.1","name":"mynet","ipam":{"type":"host-local","ranges":[
                [{"subnet":"10.9.0.0/24"}],[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.1.0.0/25"}]]}}"#,
        );
        assert_eq!(err.to_string(), "range set 1 overlaps with 2");

        let err = error_of(
            r#"{"cniVersion":"0.3.1","name":"mynet","ipam":{"type":"host-local","ranges":[
                [{"subnet":"10.1.0.0/22"},{"subnet":"10.1.2.0/24"}]]}}"#,
        );
        assert_eq!(
            err.to_string(),
            "invalid range set 0: subnets 10.1.0.1-10.1.3.254 and 10.1.2.1-10.1.2.254 overlap"
        );
    }

    #[test]
    fn range_sets_must_not_mix_families() {
        let err = error_of(
            r#"{"cniVersion":"0.3.1","name":"mynet","ipam":{"type":"host-local","ranges":[
                [{"subnet":"10.1.0.0/22"},{"subnet":"2001:db8:5::/64"}]]}}"#,
        );
        assert_eq!(
            err.to_string(),
            "invalid range set 0: mixed address families"
        );
    }

    #[test]
    fn versions_before_0_3_0_allow_one_range_set_per_family() {
        let two_v4 = r#"{"cniVersion":"VERSION","name":"mynet","ipam":{"type":"host-local",
            "ranges":[[{"subnet":"10.1.2.0/24"}],[{"subnet":"11.1.2.0/24"}]]}}"#;
        for version in ["0.2.0", "0.1.0", ""] {
            let err = error_of(&two_v4.replace("VERSION", version));
            assert_eq!(
                err.to_string(),
                format!("CNI version {version} does not support more than 1 address per family")
            );
        }
        for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            assert!(
                load(&two_v4.replace("VERSION", version), &no_args()).is_ok(),
                "{version}"
            );
        }
        let dual = r#"{"cniVersion":"0.2.0","name":"mynet","ipam":{"type":"host-local",
            "ranges":[[{"subnet":"10.1.2.0/24"}],[{"subnet":"2001:db8:1::/48"}]]}}"#;
        assert!(load(dual, &no_args()).is_ok());
        assert!(version_at_least("1.0", (0, 3, 0)));
        assert!(!version_at_least("0.2.9", (0, 3, 0)));
        assert!(!version_at_least("x.y", (0, 3, 0)));
        assert!(!version_at_least("1.0.0.0", (0, 3, 0)));
    }

    #[test]
    fn missing_ipam_and_missing_ranges_are_refused() {
        let err = error_of(r#"{"cniVersion":"1.0.0","name":"mynet","type":"macvlan"}"#);
        assert_eq!(err.to_string(), "IPAM config missing 'ipam' key");
        assert_eq!(err.code(), 7);
        let err = error_of(r#"{"cniVersion":"1.0.0","name":"mynet","ipam":null}"#);
        assert_eq!(err, ConfigError::MissingIpam);
        let err = error_of(r#"{"cniVersion":"1.0.0","name":"mynet","ipam":{"type":"host-local"}}"#);
        assert_eq!(err.to_string(), "no IP ranges specified");
        // A legacy rangeStart without subnet does not make a range.
        let err = error_of(
            r#"{"cniVersion":"1.0.0","name":"mynet","ipam":{"type":"host-local","rangeStart":"10.0.0.2"}}"#,
        );
        assert_eq!(err, ConfigError::NoRanges);
        let err = error_of(
            r#"{"cniVersion":"1.0.0","name":"mynet","ipam":{"type":"host-local","ranges":[[]]}}"#,
        );
        assert_eq!(err.to_string(), "invalid range set 0: empty range set");
    }

    #[test]
    fn invalid_values_name_the_value() {
        let with = |ipam: &str| format!(r#"{{"cniVersion":"1.0.0","name":"n","ipam":{ipam}}}"#);
        let cases = [
            (
                r#"{"subnet":"10.9.0.0/29","rangeStart":"foo"}"#,
                "invalid IP address: foo",
            ),
            (
                r#"{"subnet":"10.9.0.0/33"}"#,
                "invalid CIDR address: 10.9.0.0/33",
            ),
            (r#"{"subnet":""}"#, "invalid CIDR address: "),
            (
                r#"{"ranges":[[{"rangeStart":"10.0.0.1"}]]}"#,
                "invalid range set 0: IP <nil> not v4 nor v6",
            ),
            (
                r#"{"subnet":"::ffff:10.0.0.0/120"}"#,
                "invalid range set 0: IPNet IP and Mask version mismatch",
            ),
            (
                r#"{"subnet":"10.9.0.0/31"}"#,
                "invalid range set 0: Network 10.9.0.0/31 too small to allocate from",
            ),
            (
                r#"{"subnet":"10.9.0.1/24"}"#,
                "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 10.9.0.0",
            ),
            (
                r#"{"subnet":"10.9.0.0/24","rangeStart":"10.9.1.0"}"#,
                "invalid range set 0: RangeStart 10.9.1.0 not in network 10.9.0.0/24",
            ),
            (
                r#"{"subnet":"10.9.0.0/24","rangeEnd":"10.9.1.0"}"#,
                "invalid range set 0: RangeEnd 10.9.1.0 not in network 10.9.0.0/24",
            ),
            (
                r#"{"subnet":"10.9.0.0/24","routes":[{"dst":"0.0.0.0/0","gw":"x"}]}"#,
                "invalid IP address: x",
            ),
            (
                r#"{"subnet":"10.9.0.0/24","routes":[{"gw":"10.9.0.1"}]}"#,
                "ipam.routes[0]: missing dst",
            ),
        ];
        for (ipam, expected) in cases {
            let err = error_of(&with(ipam));
            assert_eq!(err.to_string(), expected, "{ipam}");
            assert_eq!(err.code(), 7, "{ipam}");
        }
    }

    #[test]
    fn undecodable_configs_are_code_6() {
        let err = error_of("{not json");
        assert_eq!(err.code(), 6);
        assert!(err.to_string().starts_with("failed to load netconf: "));
        let err = error_of(r#"{"name":"n","ipam":{"subnet":24}}"#);
        assert_eq!(err.code(), 6);
        assert_eq!(
            err.to_string(),
            "failed to load netconf: ipam.subnet: expected a string, got 24"
        );
        let err = error_of(
            r#"{"name":"n","ipam":{"subnet":"10.0.0.0/24","routes":[{"dst":"0.0.0.0/0","mtu":-1}]}}"#,
        );
        assert_eq!(
            err.to_string(),
            "failed to load netconf: ipam.routes[0].mtu: expected a non-negative 32-bit integer, got -1"
        );
        let err = error_of("[]");
        assert_eq!(err.code(), 6);
        let plugin_error = PluginError::from(err);
        assert_eq!(plugin_error.code, 6);
        assert_eq!(
            plugin_error.msg,
            "failed to load netconf: netconf: expected an object, got []"
        );
    }

    #[test]
    fn keys_match_case_insensitively_like_go() {
        let config = load(
            r#"{"cniVersion":"1.0.0","name":"n",
                "RuntimeConfig":{"IPs":["10.7.0.5"]},
                "IPAM":{"Type":"host-local","Subnet":"10.7.0.0/29","ResolvConf":"/etc/r.conf",
                        "Routes":[{"Dst":"10.1.2.3/24"}]}}"#,
            &no_args(),
        )
        .expect("valid");
        assert_eq!(config.plugin_type, "host-local");
        assert_eq!(config.requested_ips, vec![ip("10.7.0.5")]);
        assert_eq!(config.resolv_conf.as_deref(), Some("/etc/r.conf"));
        assert_eq!(config.routes, vec![Route::new("10.1.2.3/24", None)]);
        assert_eq!(
            summary(&config),
            vec![vec![row("10.7.0.1", "10.7.0.6", "10.7.0.1", "10.7.0.0/29")]]
        );
        // An exact key wins over a case variant.
        let config = load(
            r#"{"name":"n","ipam":{"subnet":"10.7.0.0/29","SUBNET":"10.8.0.0/29"}}"#,
            &no_args(),
        )
        .expect("valid");
        assert_eq!(summary(&config)[0][0].3, "10.7.0.0/29");
    }

    #[test]
    fn routes_keep_every_given_field() {
        let config = load(
            r#"{"cniVersion":"1.1.0","name":"n","ipam":{"subnet":"10.0.0.0/24","routes":[
                {"dst":"0.0.0.0/0"},
                {"dst":"::/0"},
                {"dst":"192.168.0.0/16","gw":"1.1.1.1"},
                {"dst":"2001:db8:2::0/64","gw":"2001:DB8:3::1"},
                {"dst":"10.5.0.0/16","gw":"10.0.0.254","mtu":1400,"advmss":1360,"priority":100,"table":0,"scope":253},
                {"dst":"10.6.0.0/16","mtu":0,"priority":0}]}}"#,
            &no_args(),
        )
        .expect("valid");
        let mut full = Route::new("10.5.0.0/16", Some("10.0.0.254".into()));
        full.mtu = Some(1400);
        full.advmss = Some(1360);
        full.priority = Some(100);
        full.table = Some(0);
        full.scope = Some(253);
        assert_eq!(
            config.routes,
            vec![
                Route::new("0.0.0.0/0", None),
                Route::new("::/0", None),
                Route::new("192.168.0.0/16", Some("1.1.1.1".into())),
                Route::new("2001:db8:2::/64", Some("2001:db8:3::1".into())),
                full,
                Route::new("10.6.0.0/16", None),
            ]
        );
    }

    #[test]
    fn empty_address_fields_are_absent() {
        let config = load(
            r#"{"name":"n","ipam":{"subnet":"10.0.0.0/24","rangeStart":"","gateway":"","dataDir":"","resolvConf":""}}"#,
            &no_args(),
        )
        .expect("valid");
        assert_eq!(
            summary(&config),
            vec![vec![row(
                "10.0.0.1",
                "10.0.0.254",
                "10.0.0.1",
                "10.0.0.0/24"
            )]]
        );
        assert_eq!(config.data_dir, None);
        assert_eq!(config.resolv_conf, None);
    }
}
