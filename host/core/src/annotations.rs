//! The pod's network-selection annotations, parsed and validated (pure).
//!
//! `k8s.v1.cni.cncf.io/networks` names the secondary networks of a pod, in
//! either of the two forms of the NPWG multi-net-spec: a comma-delimited list
//! of `[namespace/]name[@ifname]` or a JSON list of network selection
//! elements. `v1.multus-cni.io/default-network` uses the same grammar and
//! names at most one network, which replaces the cluster network.
//!
//! Where this parser departs from Multus (every one of them is stricter and
//! fails the pod with an error quoting the bad part):
//! - JSON elements get the same checks as the comma form: the name and the
//!   namespace must be DNS-1123 labels and `interface` obeys the ifname
//!   rules (Multus checks neither in the JSON form);
//! - an empty namespace before `/` or an empty interface name after `@` is
//!   an error (Multus lets them through);
//! - interface names also follow the kernel's own rules: no `:` and not `.`
//!   or `..`;
//! - `mac` must be a 6-byte address and `infiniband-guid` an 8 or 20-byte one
//!   (Multus accepts any length `net.ParseMAC` accepts for both); both are
//!   rewritten to lowercase colon-separated form;
//! - `ipam-claim-reference` is parsed and kept (Multus drops it).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The pod annotation naming its secondary networks.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";

/// The pod annotation that replaces the cluster network.
pub const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";

/// The longest interface name the kernel accepts (`IFNAMSIZ - 1`).
pub const MAX_IFNAME_BYTES: usize = 15;

/// One network a pod asks to be attached to, with the JSON keys of the
/// multi-net-spec. After [`parse_networks`] the namespace is always set and
/// `interfaceRequest` has been folded into `interface`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NetworkSelectionElement {
    /// The NetworkAttachmentDefinition's name.
    #[serde(default)]
    pub name: String,
    /// The NetworkAttachmentDefinition's namespace; defaults to the pod's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Requested addresses, each an IP or a CIDR, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ips: Option<Vec<String>>,
    /// Requested MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Requested InfiniBand GUID.
    #[serde(
        rename = "infiniband-guid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub infiniband_guid: Option<String>,
    /// Requested interface name inside the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The pre-3.2 Multus spelling of `interface`, used when `interface` is unset.
    #[serde(
        rename = "interfaceRequest",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub interface_request: Option<String>,
    /// Port mappings for the `portMappings` capability.
    #[serde(
        rename = "portMappings",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub port_mappings: Option<Vec<PortMapping>>,
    /// Traffic shaping for the `bandwidth` capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// A device ID for the `deviceID` capability (a Multus extension).
    #[serde(rename = "deviceID", default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Extra keys merged into the delegate config's `args.cni`.
    #[serde(rename = "cni-args", default, skip_serializing_if = "Option::is_none")]
    pub cni_args: Option<Map<String, Value>>,
    /// Gateways for the pod's default route; `Some(vec![])` selects this
    /// attachment's own default route (see `attachments::check_default_route`).
    #[serde(
        rename = "default-route",
        default,
        deserialize_with = "deserialize_gateways",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_route: Option<Vec<IpAddr>>,
    /// The IPAMClaim this attachment's address comes from (multi-net-spec v1.3).
    #[serde(
        rename = "ipam-claim-reference",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipam_claim_reference: Option<String>,
}

/// One `portMappings` entry, as the portmap plugin reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// The `bandwidth` request, as the bandwidth plugin reads it (bits per
/// second and bits; absent keys are zero, as in Go).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Bandwidth {
    #[serde(rename = "ingressRate", default)]
    pub ingress_rate: u64,
    #[serde(rename = "ingressBurst", default)]
    pub ingress_burst: u64,
    #[serde(rename = "egressRate", default)]
    pub egress_rate: u64,
    #[serde(rename = "egressBurst", default)]
    pub egress_burst: u64,
}

/// Why one network of an annotation is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionFieldError {
    /// The network name is missing or empty.
    #[error("network name is empty")]
    EmptyName,
    /// The network name is not a DNS-1123 label.
    #[error(
        "network name {0:?} is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)"
    )]
    NameNotDns1123(String),
    /// The text before `/` is empty.
    #[error("namespace before '/' is empty")]
    EmptyNamespace,
    /// The namespace is not a DNS-1123 label.
    #[error(
        "namespace {0:?} is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)"
    )]
    NamespaceNotDns1123(String),
    /// The comma form has more than one `/`.
    #[error("more than one '/' (expected [namespace/]name[@interface])")]
    TooManySlashes,
    /// The comma form has more than one `@`.
    #[error("more than one '@' (expected [namespace/]name[@interface])")]
    TooManyAts,
    /// The requested interface name is empty.
    #[error("interface name is empty")]
    EmptyInterface,
    /// The requested interface name is longer than the kernel allows.
    #[error("interface name {0:?} is longer than {MAX_IFNAME_BYTES} bytes")]
    InterfaceTooLong(String),
    /// The requested interface name holds whitespace, `/` or `:`, or is `.` or `..`.
    #[error("interface name {0:?} is not allowed (no whitespace, '/' or ':', and not '.' or '..')")]
    InterfaceNotAllowed(String),
    /// `mac` is not a 6-byte hardware address.
    #[error("mac {0:?} is not a 6-byte MAC address")]
    InvalidMac(String),
    /// `infiniband-guid` is not an 8 or 20-byte hardware address.
    #[error("infiniband-guid {0:?} is not an 8 or 20-byte hardware address")]
    InvalidInfinibandGuid(String),
    /// An `ips` entry is neither an IP address nor a CIDR.
    #[error("ips entry {0:?} is neither an IP address nor a CIDR")]
    InvalidIp(String),
}

/// An annotation that cannot be used; each message quotes the bad part and
/// the whole annotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    /// The value looks like JSON but does not decode.
    #[error("undecodable JSON in annotation {annotation:?}: {message}")]
    Decode { annotation: String, message: String },
    /// The JSON value is not a list.
    #[error("annotation {annotation:?} is not a JSON list of network selection elements")]
    NotAList { annotation: String },
    /// A JSON element does not have the shape of a network selection element.
    #[error("invalid network element {element} in annotation {annotation:?}: {message}")]
    MalformedElement {
        element: String,
        annotation: String,
        message: String,
    },
    /// One network (a comma item or a JSON element's name) fails validation.
    #[error("invalid network {item:?} in annotation {annotation:?}: {reason}")]
    InvalidNetwork {
        item: String,
        annotation: String,
        #[source]
        reason: SelectionFieldError,
    },
    /// The default-network annotation names more than one network.
    #[error(
        "more than one default network is specified in annotation {annotation:?} ({count} networks)"
    )]
    TooManyDefaultNetworks { annotation: String, count: usize },
}

impl AnnotationError {
    /// The CNI error code: 6 for undecodable JSON, 7 for an invalid annotation.
    pub fn cni_code(&self) -> u32 {
        match self {
            AnnotationError::Decode { .. } => 6,
            AnnotationError::NotAList { .. }
            | AnnotationError::MalformedElement { .. }
            | AnnotationError::InvalidNetwork { .. }
            | AnnotationError::TooManyDefaultNetworks { .. } => 7,
        }
    }
}

/// Parses `k8s.v1.cni.cncf.io/networks`. An empty or blank value means no
/// secondary networks. Networks without a namespace get `pod_namespace`.
///
/// Any invalid network fails the whole annotation, as Multus does; the
/// multi-net-spec says such an annotation "shall be invalid and ignored",
/// but ignoring it would silently start the pod without the networks it
/// asked for.
pub fn parse_networks(
    value: &str,
    pod_namespace: &str,
) -> Result<Vec<NetworkSelectionElement>, AnnotationError> {
    parse_selection(value, pod_namespace)
}

/// Parses `v1.multus-cni.io/default-network`: the same grammar, the
/// namespace defaults to `multus_namespace`, and at most one network.
pub fn parse_default_network(
    value: &str,
    multus_namespace: &str,
) -> Result<Option<NetworkSelectionElement>, AnnotationError> {
    let mut networks = parse_selection(value, multus_namespace)?;
    if networks.len() > 1 {
        return Err(AnnotationError::TooManyDefaultNetworks {
            annotation: value.to_string(),
            count: networks.len(),
        });
    }
    Ok(networks.pop())
}

/// Checks an interface name against the kernel's rules: 1 to 15 bytes, no
/// whitespace, `/` or `:`, and not `.` or `..`.
pub fn validate_ifname(ifname: &str) -> Result<(), SelectionFieldError> {
    if ifname.is_empty() {
        return Err(SelectionFieldError::EmptyInterface);
    }
    if ifname.len() > MAX_IFNAME_BYTES {
        return Err(SelectionFieldError::InterfaceTooLong(ifname.to_string()));
    }
    let forbidden_char = ifname
        .chars()
        .any(|character| character.is_whitespace() || character == '/' || character == ':');
    if forbidden_char || ifname == "." || ifname == ".." {
        return Err(SelectionFieldError::InterfaceNotAllowed(ifname.to_string()));
    }
    Ok(())
}

/// Whether `text` is a DNS-1123 label as Multus checks it:
/// `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$` (no length limit).
pub fn is_dns1123_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    let alphanumeric = |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    alphanumeric(first)
        && alphanumeric(last)
        && bytes.iter().all(|byte| alphanumeric(byte) || *byte == b'-')
}

/// Parses a hardware address the way Go's `net.ParseMAC` does: groups of
/// two hex digits separated by `:` or `-`, or groups of four separated by
/// `.`; returns the bytes (6, 8 or 20 of them).
pub fn parse_hardware_address(text: &str) -> Option<Vec<u8>> {
    let separator = text
        .chars()
        .find(|character| matches!(character, ':' | '-' | '.'))?;
    let group_digits = if separator == '.' { 4 } else { 2 };
    let mut bytes = Vec::new();
    for group in text.split(separator) {
        if group.len() != group_digits || !group.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return None;
        }
        for pair_start in (0..group_digits).step_by(2) {
            let pair = group.get(pair_start..pair_start + 2)?;
            bytes.push(u8::from_str_radix(pair, 16).ok()?);
        }
    }
    matches!(bytes.len(), 6 | 8 | 20).then_some(bytes)
}

/// Lowercase, colon-separated form of a hardware address.
fn format_hardware_address(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 3);
    for (index, byte) in bytes.iter().enumerate() {
        if index > 0 {
            text.push(':');
        }
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

fn parse_selection(
    value: &str,
    default_namespace: &str,
) -> Result<Vec<NetworkSelectionElement>, AnnotationError> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    if value.contains(['[', '{', '"']) {
        parse_json_form(value, default_namespace)
    } else {
        parse_comma_form(value, default_namespace)
    }
}

fn parse_comma_form(
    value: &str,
    default_namespace: &str,
) -> Result<Vec<NetworkSelectionElement>, AnnotationError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            parse_comma_item(item, default_namespace).map_err(|reason| {
                AnnotationError::InvalidNetwork {
                    item: item.to_string(),
                    annotation: value.to_string(),
                    reason,
                }
            })
        })
        .collect()
}

fn parse_comma_item(
    item: &str,
    default_namespace: &str,
) -> Result<NetworkSelectionElement, SelectionFieldError> {
    // Each part is trimmed, as Multus does (`" ns / net @ if0 "`).
    let slash_parts: Vec<&str> = item.split('/').map(str::trim).collect();
    let (namespace, name_and_interface) = match slash_parts.as_slice() {
        [name_and_interface] => (None, *name_and_interface),
        [namespace, name_and_interface] => (Some(*namespace), *name_and_interface),
        _ => return Err(SelectionFieldError::TooManySlashes),
    };
    let at_parts: Vec<&str> = name_and_interface.split('@').map(str::trim).collect();
    let (name, interface) = match at_parts.as_slice() {
        [name] => (*name, None),
        [name, interface] => (*name, Some(*interface)),
        _ => return Err(SelectionFieldError::TooManyAts),
    };
    if namespace == Some("") {
        return Err(SelectionFieldError::EmptyNamespace);
    }
    if interface == Some("") {
        return Err(SelectionFieldError::EmptyInterface);
    }
    let mut element = NetworkSelectionElement {
        name: name.to_string(),
        namespace: namespace.unwrap_or_default().to_string(),
        interface: interface.map(str::to_string),
        ..NetworkSelectionElement::default()
    };
    validate_element(&mut element, default_namespace)?;
    Ok(element)
}

fn parse_json_form(
    value: &str,
    default_namespace: &str,
) -> Result<Vec<NetworkSelectionElement>, AnnotationError> {
    let decoded: Value = serde_json::from_str(value).map_err(|error| AnnotationError::Decode {
        annotation: value.to_string(),
        message: error.to_string(),
    })?;
    let Value::Array(elements) = decoded else {
        return Err(AnnotationError::NotAList {
            annotation: value.to_string(),
        });
    };
    elements
        .into_iter()
        .map(|element_value| {
            let element_text = element_value.to_string();
            let mut element =
                NetworkSelectionElement::deserialize(element_value).map_err(|error| {
                    AnnotationError::MalformedElement {
                        element: element_text.clone(),
                        annotation: value.to_string(),
                        message: error.to_string(),
                    }
                })?;
            let item = if element.name.is_empty() {
                element_text
            } else {
                element.name.clone()
            };
            validate_element(&mut element, default_namespace).map_err(|reason| {
                AnnotationError::InvalidNetwork {
                    item,
                    annotation: value.to_string(),
                    reason,
                }
            })?;
            Ok(element)
        })
        .collect()
}

/// Validates one element in place: defaults the namespace, folds the legacy
/// `interfaceRequest`, and rewrites `mac` and `infiniband-guid` canonically.
fn validate_element(
    element: &mut NetworkSelectionElement,
    default_namespace: &str,
) -> Result<(), SelectionFieldError> {
    if element.name.is_empty() {
        return Err(SelectionFieldError::EmptyName);
    }
    if !is_dns1123_label(&element.name) {
        return Err(SelectionFieldError::NameNotDns1123(element.name.clone()));
    }
    if element.namespace.is_empty() {
        element.namespace = default_namespace.to_string();
    } else if !is_dns1123_label(&element.namespace) {
        return Err(SelectionFieldError::NamespaceNotDns1123(
            element.namespace.clone(),
        ));
    }

    let requested_interface = element.interface.take().filter(|name| !name.is_empty());
    let legacy_interface = element
        .interface_request
        .take()
        .filter(|name| !name.is_empty());
    element.interface = requested_interface.or(legacy_interface);
    if let Some(interface) = &element.interface {
        validate_ifname(interface)?;
    }

    if let Some(mac) = &element.mac {
        match parse_hardware_address(mac) {
            Some(bytes) if bytes.len() == 6 => element.mac = Some(format_hardware_address(&bytes)),
            _ => return Err(SelectionFieldError::InvalidMac(mac.clone())),
        }
    }
    if let Some(guid) = &element.infiniband_guid {
        match parse_hardware_address(guid) {
            Some(bytes) if bytes.len() == 8 || bytes.len() == 20 => {
                element.infiniband_guid = Some(format_hardware_address(&bytes));
            }
            _ => return Err(SelectionFieldError::InvalidInfinibandGuid(guid.clone())),
        }
    }
    for address in element.ips.iter().flatten() {
        let is_ip = address.parse::<IpAddr>().is_ok() || address.parse::<IpNet>().is_ok();
        if !is_ip {
            return Err(SelectionFieldError::InvalidIp(address.clone()));
        }
    }
    Ok(())
}

/// Deserializes `default-route`, naming the entry that is not an IP.
fn deserialize_gateways<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<IpAddr>>, D::Error> {
    let texts: Option<Vec<String>> = Option::deserialize(deserializer)?;
    texts
        .map(|texts| {
            texts
                .into_iter()
                .map(|text| {
                    text.parse::<IpAddr>()
                        .map_err(|_| serde::de::Error::custom(InvalidGateway(text.clone())))
                })
                .collect()
        })
        .transpose()
}

/// A `default-route` entry that is not an IP address.
struct InvalidGateway(String);

impl fmt::Display for InvalidGateway {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "default-route entry {:?} is not an IP address",
            self.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn comma(name: &str, namespace: &str, interface: Option<&str>) -> NetworkSelectionElement {
        NetworkSelectionElement {
            name: name.into(),
            namespace: namespace.into(),
            interface: interface.map(Into::into),
            ..NetworkSelectionElement::default()
        }
    }

    #[test]
    fn comma_form_table() {
        let cases: Vec<(&str, Vec<NetworkSelectionElement>)> = vec![
            ("", vec![]),
            ("   ", vec![]),
            ("net-a", vec![comma("net-a", "pods", None)]),
            (
                " net-a , other/net-b ,net-c@eth5, ns/net-d@eth6",
                vec![
                    comma("net-a", "pods", None),
                    comma("net-b", "other", None),
                    comma("net-c", "pods", Some("eth5")),
                    comma("net-d", "ns", Some("eth6")),
                ],
            ),
            (
                "a,,b,",
                vec![comma("a", "pods", None), comma("b", "pods", None)],
            ),
            (
                "a,a",
                vec![comma("a", "pods", None), comma("a", "pods", None)],
            ),
            (
                "x@abcdefghijklmno",
                vec![comma("x", "pods", Some("abcdefghijklmno"))],
            ),
            // Whitespace around '/', '@' and each comma part is trimmed, as
            // Multus does.
            (
                " default / net2 @ sp0 , net1 ",
                vec![
                    comma("net2", "default", Some("sp0")),
                    comma("net1", "pods", None),
                ],
            ),
            (
                "\tns/net-a@\teth1\n,\n other /net-b",
                vec![
                    comma("net-a", "ns", Some("eth1")),
                    comma("net-b", "other", None),
                ],
            ),
        ];
        for (annotation, expected) in cases {
            let parsed = parse_networks(annotation, "pods")
                .unwrap_or_else(|error| panic!("{annotation:?} should parse: {error}"));
            assert_eq!(parsed, expected, "annotation {annotation:?}");
        }
    }

    #[test]
    fn comma_form_errors_table() {
        let cases = [
            (
                "Bad_Name,foo",
                r#"invalid network "Bad_Name" in annotation "Bad_Name,foo": network name "Bad_Name" is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)"#,
            ),
            (
                "a/b/c",
                r#"invalid network "a/b/c" in annotation "a/b/c": more than one '/' (expected [namespace/]name[@interface])"#,
            ),
            (
                "ok, b@if1@if2",
                r#"invalid network "b@if1@if2" in annotation "ok, b@if1@if2": more than one '@' (expected [namespace/]name[@interface])"#,
            ),
            (
                "NS/net",
                r#"invalid network "NS/net" in annotation "NS/net": namespace "NS" is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)"#,
            ),
            (
                "/net",
                r#"invalid network "/net" in annotation "/net": namespace before '/' is empty"#,
            ),
            (
                "ns/",
                r#"invalid network "ns/" in annotation "ns/": network name is empty"#,
            ),
            (
                "net@",
                r#"invalid network "net@" in annotation "net@": interface name is empty"#,
            ),
            (
                "net@abcdefghijklmnop",
                r#"invalid network "net@abcdefghijklmnop" in annotation "net@abcdefghijklmnop": interface name "abcdefghijklmnop" is longer than 15 bytes"#,
            ),
            (
                "net@a:b",
                r#"invalid network "net@a:b" in annotation "net@a:b": interface name "a:b" is not allowed (no whitespace, '/' or ':', and not '.' or '..')"#,
            ),
            (
                "net@..",
                r#"invalid network "net@.." in annotation "net@..": interface name ".." is not allowed (no whitespace, '/' or ':', and not '.' or '..')"#,
            ),
            (
                "-net",
                r#"invalid network "-net" in annotation "-net": network name "-net" is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)"#,
            ),
            // Trimming does not make an empty part valid.
            (
                " / net",
                r#"invalid network "/ net" in annotation " / net": namespace before '/' is empty"#,
            ),
            (
                "net @ ",
                r#"invalid network "net @" in annotation "net @ ": interface name is empty"#,
            ),
            (
                "my net",
                r#"invalid network "my net" in annotation "my net": network name "my net" is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)"#,
            ),
        ];
        for (annotation, expected) in cases {
            let error = parse_networks(annotation, "pods")
                .expect_err(&format!("{annotation:?} should be rejected"));
            assert_eq!(error.to_string(), expected, "annotation {annotation:?}");
            assert_eq!(error.cni_code(), 7, "annotation {annotation:?}");
        }
    }

    #[test]
    fn json_form_full_element() {
        let annotation = r#"[{
            "name": "macvlan-conf",
            "namespace": "other",
            "ips": ["10.1.1.5/24", "2001:db8::5"],
            "mac": "C2-11-22-33-44-55",
            "infiniband-guid": "00:11:22:33:44:55:66:77",
            "interface": "net9",
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 1000, "egressRate": 2000},
            "deviceID": "0000:03:00.1",
            "cni-args": {"foo": "bar", "n": 1},
            "default-route": ["10.1.1.1"],
            "ipam-claim-reference": "claim-1",
            "io.example/extension": true
        }]"#;
        let parsed = parse_networks(annotation, "pods").expect("valid");
        let expected = NetworkSelectionElement {
            name: "macvlan-conf".into(),
            namespace: "other".into(),
            ips: Some(vec!["10.1.1.5/24".into(), "2001:db8::5".into()]),
            mac: Some("c2:11:22:33:44:55".into()),
            infiniband_guid: Some("00:11:22:33:44:55:66:77".into()),
            interface: Some("net9".into()),
            interface_request: None,
            port_mappings: Some(vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Some("tcp".into()),
                host_ip: None,
            }]),
            bandwidth: Some(Bandwidth {
                ingress_rate: 1000,
                ingress_burst: 0,
                egress_rate: 2000,
                egress_burst: 0,
            }),
            device_id: Some("0000:03:00.1".into()),
            cni_args: json!({"foo": "bar", "n": 1}).as_object().cloned(),
            default_route: Some(vec!["10.1.1.1".parse().expect("ip")]),
            ipam_claim_reference: Some("claim-1".into()),
        };
        assert_eq!(parsed, vec![expected]);
    }

    #[test]
    fn json_form_table() {
        let cases: Vec<(&str, Vec<NetworkSelectionElement>)> = vec![
            (r#"[{"name":"a"}]"#, vec![comma("a", "pods", None)]),
            (r#"[]"#, vec![]),
            (
                r#"[{"name":"a","interfaceRequest":"legacy0"}]"#,
                vec![comma("a", "pods", Some("legacy0"))],
            ),
            (
                r#"[{"name":"a","interface":"new0","interfaceRequest":"legacy0"}]"#,
                vec![comma("a", "pods", Some("new0"))],
            ),
            (
                r#"[{"name":"a","interface":""}]"#,
                vec![comma("a", "pods", None)],
            ),
            (
                r#"[{"name":"a","cni-args":null,"default-route":null}]"#,
                vec![comma("a", "pods", None)],
            ),
            (
                r#"[{"name":"a","default-route":[]}]"#,
                vec![NetworkSelectionElement {
                    default_route: Some(vec![]),
                    ..comma("a", "pods", None)
                }],
            ),
            (
                r#"[{"name":"a","mac":"0011.2233.4455"}]"#,
                vec![NetworkSelectionElement {
                    mac: Some("00:11:22:33:44:55".into()),
                    ..comma("a", "pods", None)
                }],
            ),
        ];
        for (annotation, expected) in cases {
            let parsed = parse_networks(annotation, "pods")
                .unwrap_or_else(|error| panic!("{annotation:?} should parse: {error}"));
            assert_eq!(parsed, expected, "annotation {annotation:?}");
        }
    }

    #[test]
    fn json_form_errors_table() {
        let cases = [
            (
                r#"[{"name":"a"}"#,
                6,
                r#"undecodable JSON in annotation "[{\"name\":\"a\"}": EOF while parsing a list at line 1 column 13"#,
            ),
            (
                r#"{"name":"a"}"#,
                7,
                r#"annotation "{\"name\":\"a\"}" is not a JSON list of network selection elements"#,
            ),
            (
                r#"[{"ips":"10.1.1.1","name":"a"}]"#,
                7,
                r#"invalid network element {"ips":"10.1.1.1","name":"a"} in annotation "[{\"ips\":\"10.1.1.1\",\"name\":\"a\"}]": invalid type: string "10.1.1.1", expected a sequence"#,
            ),
            (
                r#"[{"default-route":["10.1.1.x"],"name":"a"}]"#,
                7,
                r#"invalid network element {"default-route":["10.1.1.x"],"name":"a"} in annotation "[{\"default-route\":[\"10.1.1.x\"],\"name\":\"a\"}]": default-route entry "10.1.1.x" is not an IP address"#,
            ),
            (
                r#"[{"name":"Bad_Name"}]"#,
                7,
                r#"invalid network "Bad_Name" in annotation "[{\"name\":\"Bad_Name\"}]": network name "Bad_Name" is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)"#,
            ),
            (
                r#"[{"namespace":"x"}]"#,
                7,
                r#"invalid network "{\"namespace\":\"x\"}" in annotation "[{\"namespace\":\"x\"}]": network name is empty"#,
            ),
            (
                r#"[{"name":"a","mac":"c2:11:22:33:44"}]"#,
                7,
                r#"invalid network "a" in annotation "[{\"name\":\"a\",\"mac\":\"c2:11:22:33:44\"}]": mac "c2:11:22:33:44" is not a 6-byte MAC address"#,
            ),
            (
                r#"[{"name":"a","mac":"00:11:22:33:44:55:66:77"}]"#,
                7,
                r#"invalid network "a" in annotation "[{\"name\":\"a\",\"mac\":\"00:11:22:33:44:55:66:77\"}]": mac "00:11:22:33:44:55:66:77" is not a 6-byte MAC address"#,
            ),
            (
                r#"[{"name":"a","infiniband-guid":"00:11:22:33:44:55"}]"#,
                7,
                r#"invalid network "a" in annotation "[{\"name\":\"a\",\"infiniband-guid\":\"00:11:22:33:44:55\"}]": infiniband-guid "00:11:22:33:44:55" is not an 8 or 20-byte hardware address"#,
            ),
            (
                r#"[{"name":"a","ips":["10.1.1.300"]}]"#,
                7,
                r#"invalid network "a" in annotation "[{\"name\":\"a\",\"ips\":[\"10.1.1.300\"]}]": ips entry "10.1.1.300" is neither an IP address nor a CIDR"#,
            ),
            (
                r#"[{"name":"a","interface":"eth 1"}]"#,
                7,
                r#"invalid network "a" in annotation "[{\"name\":\"a\",\"interface\":\"eth 1\"}]": interface name "eth 1" is not allowed (no whitespace, '/' or ':', and not '.' or '..')"#,
            ),
            (
                r#"[{"name":"a","namespace":"Bad"}]"#,
                7,
                r#"invalid network "a" in annotation "[{\"name\":\"a\",\"namespace\":\"Bad\"}]": namespace "Bad" is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)"#,
            ),
        ];
        for (annotation, code, expected) in cases {
            let error = parse_networks(annotation, "pods")
                .expect_err(&format!("{annotation:?} should be rejected"));
            assert_eq!(error.to_string(), expected, "annotation {annotation:?}");
            assert_eq!(error.cni_code(), code, "annotation {annotation:?}");
        }
    }

    #[test]
    fn json_form_is_chosen_by_quote_or_bracket() {
        // A bare quoted name has a '"', so it goes to the JSON parser and is
        // rejected as not being a list, exactly as Multus does.
        let error = parse_networks(r#""net-a""#, "pods").expect_err("not a list");
        assert!(matches!(error, AnnotationError::NotAList { .. }), "{error}");
    }

    #[test]
    fn default_network_table() {
        let parsed = parse_default_network("calico", "kube-system").expect("valid");
        assert_eq!(parsed, Some(comma("calico", "kube-system", None)));

        let parsed = parse_default_network("other/calico@eth9", "kube-system").expect("valid");
        assert_eq!(parsed, Some(comma("calico", "other", Some("eth9"))));

        let parsed = parse_default_network(r#"[{"name":"calico"}]"#, "kube-system").expect("valid");
        assert_eq!(parsed, Some(comma("calico", "kube-system", None)));

        assert_eq!(parse_default_network(" ", "kube-system"), Ok(None));

        let error = parse_default_network("a,b", "kube-system").expect_err("two networks");
        assert_eq!(
            error.to_string(),
            r#"more than one default network is specified in annotation "a,b" (2 networks)"#
        );
        assert_eq!(error.cni_code(), 7);
    }

    #[test]
    fn hardware_addresses() {
        let cases: [(&str, Option<usize>); 9] = [
            ("c2:11:22:33:44:55", Some(6)),
            ("C2-11-22-33-44-55", Some(6)),
            ("c211.2233.4455", Some(6)),
            ("00:11:22:33:44:55:66:77", Some(8)),
            (
                "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01",
                Some(20),
            ),
            ("c2:11:22:33:44", None),
            ("c2:11:22-33:44:55", None),
            ("c2:11:22:33:44:5g", None),
            ("c2:11:22:33:44:555", None),
        ];
        for (text, expected_length) in cases {
            assert_eq!(
                parse_hardware_address(text).map(|bytes| bytes.len()),
                expected_length,
                "{text:?}"
            );
        }
    }

    #[test]
    fn dns1123_labels() {
        for good in ["a", "a-b", "0", "net-1", "x9"] {
            assert!(is_dns1123_label(good), "{good:?} should be a label");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "é"] {
            assert!(!is_dns1123_label(bad), "{bad:?} should not be a label");
        }
    }

    #[test]
    fn serializes_with_the_spec_keys() {
        let element = NetworkSelectionElement {
            infiniband_guid: Some("00:11:22:33:44:55:66:77".into()),
            device_id: Some("dev".into()),
            cni_args: Some(Map::new()),
            default_route: Some(vec![]),
            ipam_claim_reference: Some("claim".into()),
            port_mappings: Some(vec![]),
            ..comma("a", "ns", Some("net1"))
        };
        let encoded = serde_json::to_value(&element).expect("serializable");
        assert_eq!(
            encoded,
            json!({
                "name": "a",
                "namespace": "ns",
                "interface": "net1",
                "infiniband-guid": "00:11:22:33:44:55:66:77",
                "deviceID": "dev",
                "cni-args": {},
                "default-route": [],
                "ipam-claim-reference": "claim",
                "portMappings": []
            })
        );
    }
}
