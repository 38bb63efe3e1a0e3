//! The `k8s.v1.cni.cncf.io/network-status` annotation: one entry per
//! attachment interface, built from the attachments' results.
//!
//! Entries follow the multi-net-spec and Multus: `name` (`<ns>/<nad>`, or
//! the cluster network's name), `interface`, `ips` (without prefix length),
//! `mac`, `mtu`, `default` (the cluster network), `dns`, and `gateway` only
//! when the attachment has a default route (its gateway is the route's, or
//! else the first gateway of that family among the IPs, which is what the
//! plugin installed). Unlike Multus, an attachment whose result names no
//! pod interface still gets an entry, under its interface name (the spec
//! lists every attachment).

use serde::Serialize;

use crate::cni::{CniResult, CniVersion};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct DnsStatus {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkStatus {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub interface: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    pub dns: DnsStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<String>,
    /// The NPWG device information of the attachment's device (from its
    /// `CNIDeviceInfoFile`), as Multus reports it.
    #[serde(rename = "device-info", skip_serializing_if = "Option::is_none")]
    pub device_info: Option<serde_json::Value>,
}

/// The entries of one attachment named `name` on `ifname`.
pub fn entries(
    name: &str,
    ifname: &str,
    is_default: bool,
    result: &CniResult,
) -> Vec<NetworkStatus> {
    let result = result
        .convert_to(CniVersion::V1_1_0)
        .unwrap_or_else(|_| result.clone());
    let dns = DnsStatus {
        nameservers: result.dns.nameservers.clone(),
        domain: result.dns.domain.clone(),
        search: result.dns.search.clone(),
        options: result.dns.options.clone(),
    };
    let gateways: Vec<String> = result
        .routes
        .iter()
        .filter(|route| route.dst.prefix_len() == 0)
        .filter_map(|route| {
            route.gw.or_else(|| {
                result
                    .ips
                    .iter()
                    .filter(|ip| ip.address.addr().is_ipv4() == route.dst.addr().is_ipv4())
                    .find_map(|ip| ip.gateway)
            })
        })
        .map(|gateway| gateway.to_string())
        .collect();
    let sandbox_interfaces: Vec<usize> = result
        .interfaces
        .iter()
        .enumerate()
        .filter(|(_, interface)| {
            interface
                .sandbox
                .as_deref()
                .is_some_and(|sandbox| !sandbox.is_empty())
        })
        .map(|(index, _)| index)
        .collect();
    if sandbox_interfaces.is_empty() {
        return vec![NetworkStatus {
            name: name.into(),
            interface: ifname.into(),
            ips: result
                .ips
                .iter()
                .map(|ip| ip.address.addr().to_string())
                .collect(),
            mac: String::new(),
            mtu: None,
            default: is_default,
            dns,
            gateway: gateways,
            device_info: None,
        }];
    }
    let last = *sandbox_interfaces.last().expect("non-empty");
    sandbox_interfaces
        .iter()
        .enumerate()
        .map(|(position, &index)| {
            let interface = &result.interfaces[index];
            let ips = result
                .ips
                .iter()
                .filter(|ip| match ip.interface {
                    Some(owner) => owner == index,
                    None => index == last,
                })
                .map(|ip| ip.address.addr().to_string())
                .collect();
            NetworkStatus {
                name: name.into(),
                interface: interface.name.clone(),
                ips,
                mac: interface.mac.clone().unwrap_or_default(),
                mtu: interface.mtu,
                default: is_default && position == 0,
                dns: dns.clone(),
                gateway: if position == 0 {
                    gateways.clone()
                } else {
                    Vec::new()
                },
                device_info: None,
            }
        })
        .collect()
}

/// The annotation value: a JSON list of entries.
pub fn annotation(entries: &[NetworkStatus]) -> String {
    serde_json::to_string_pretty(entries).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(json: &str) -> CniResult {
        CniResult::parse(json.as_bytes(), CniVersion::V1_0_0).unwrap()
    }

    #[test]
    fn the_seed_attachment_gets_its_ip_mac_and_gateway() {
        let macvlan = result(
            r#"{"cniVersion":"0.3.0","interfaces":[{"name":"net1","mac":"02:11:22:33:44:55","sandbox":"/var/run/netns/pod"}],
                "ips":[{"version":"4","interface":0,"address":"192.168.1.200/24","gateway":"192.168.1.1"}],
                "routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#,
        );
        let status = entries("default/macvlan-conf", "net1", false, &macvlan);
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            serde_json::json!([{
                "name": "default/macvlan-conf",
                "interface": "net1",
                "ips": ["192.168.1.200"],
                "mac": "02:11:22:33:44:55",
                "dns": {},
                "gateway": ["192.168.1.1"]
            }])
        );
    }

    #[test]
    fn the_cluster_network_is_default_and_host_side_interfaces_are_skipped() {
        let ptp = result(
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"veth1234","mac":"aa:aa:aa:aa:aa:aa"},{"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"/var/run/netns/pod"}],
                "ips":[{"interface":1,"address":"10.244.0.5/24","gateway":"10.244.0.1"}],"dns":{"nameservers":["10.96.0.10"]}}"#,
        );
        let status = entries("ptp-net", "eth0", true, &ptp);
        assert_eq!(status.len(), 1);
        assert!(status[0].default);
        assert_eq!(status[0].interface, "eth0");
        assert_eq!(status[0].ips, vec!["10.244.0.5"]);
        assert!(status[0].gateway.is_empty(), "no default route, no gateway");
        assert_eq!(status[0].dns.nameservers, vec!["10.96.0.10"]);
    }

    #[test]
    fn a_result_without_pod_interfaces_is_listed_under_its_ifname() {
        let l3 = result(r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.2/16"}]}"#);
        let status = entries("default/l3", "net2", false, &l3);
        assert_eq!(status[0].interface, "net2");
        assert_eq!(status[0].ips, vec!["10.1.0.2"]);
    }
}
