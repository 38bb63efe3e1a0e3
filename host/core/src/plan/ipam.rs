//! A wasm delegate's IPAM: when it runs, and (when it runs after the link)
//! the ops that configure the pod's interface from its result.
//!
//! A wasm IPAM plugin (host-local, static) runs before the delegate, which
//! gets its result and plans link and addresses at once. A native IPAM
//! binary runs after the delegate's link exists: the reference `dhcp`
//! enters the pod's namespace, finds `CNI_IFNAME` and sends its DISCOVER
//! from it, as the reference plugins order it themselves (link, then IPAM).
//! The delegate then plans only the link (its config without `ipam`), and
//! the host configures the IPAM result's addresses and routes with the ops
//! built here, through the same policy check and journaled executor.

use std::net::IpAddr;

use serde_json::Value;

use super::op::{AddRoute, Op, RouteScope};
use crate::cni::CniResult;

/// When a wasm delegate's IPAM runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpamOrder {
    /// No `ipam.type`: the delegate alone.
    None,
    /// Wasm IPAM: first; the delegate gets its result and plans everything.
    BeforeDelegate,
    /// Native IPAM: after the delegate's link exists, before its addresses.
    AfterLink,
}

/// The order for a wasm delegate whose `ipam.type` is `ipam_type`, which is
/// a registered wasm plugin when `ipam_is_wasm`.
pub fn ipam_order(ipam_type: Option<&str>, ipam_is_wasm: bool) -> IpamOrder {
    match ipam_type {
        None => IpamOrder::None,
        Some(_) if ipam_is_wasm => IpamOrder::BeforeDelegate,
        Some(_) => IpamOrder::AfterLink,
    }
}

/// The config the delegate plans only the link with: `config` without its
/// `ipam` (a delegate without IPAM is L2: link and link up).
pub fn link_only_config(config: &Value) -> Value {
    let mut config = config.clone();
    if let Some(object) = config.as_object_mut() {
        object.remove("ipam");
    }
    config
}

/// An IPAM result the host cannot configure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamResultError {
    /// No address: an L3 interface needs one (the reference's message).
    #[error("IPAM plugin {ipam_type} returned missing IP config")]
    NoAddress { ipam_type: String },
    /// A route scope the netlink ops cannot express.
    #[error("IPAM plugin {ipam_type} returned route {dst} with unsupported scope {scope}")]
    Scope {
        ipam_type: String,
        dst: String,
        scope: u32,
    },
}

/// The ops that configure `ifname` from the IPAM result, as the reference
/// plugins' `ipam.ConfigureIface` does after their own sysctls:
/// `arp_notify`/`ndisc_notify`, the IPv6 sysctls when an IPv6 address
/// follows, every address, link up, then every route (a route without a
/// gateway gets the first gateway of its family among the addresses).
pub fn address_ops(
    ipam_type: &str,
    ifname: &str,
    result: &CniResult,
) -> Result<Vec<Op>, IpamResultError> {
    if result.ips.is_empty() {
        return Err(IpamResultError::NoAddress {
            ipam_type: ipam_type.into(),
        });
    }
    let link = || ifname.to_string();
    let sysctl = |family: &str, leaf: &str, value: &str| Op::SetSysctl {
        key: format!("net/{family}/conf/{ifname}/{leaf}"),
        value: value.into(),
    };
    let mut ops = vec![
        sysctl("ipv4", "arp_notify", "1"),
        sysctl("ipv6", "ndisc_notify", "1"),
    ];
    if result.ips.iter().any(|ip| ip.address.addr().is_ipv6()) {
        ops.push(sysctl("ipv6", "disable_ipv6", "0"));
        ops.push(sysctl("ipv6", "keep_addr_on_down", "1"));
    }
    for ip in &result.ips {
        ops.push(Op::AddAddress {
            link: link(),
            address: ip.address,
        });
    }
    ops.push(Op::SetLinkUp { link: link() });
    let first_gateway = |ipv4: bool| {
        result
            .ips
            .iter()
            .filter_map(|ip| ip.gateway)
            .find(|gateway: &IpAddr| gateway.is_ipv4() == ipv4)
    };
    for route in &result.routes {
        let scope = match route.scope {
            None => None,
            Some(scope) => Some(route_scope(scope).ok_or_else(|| IpamResultError::Scope {
                ipam_type: ipam_type.into(),
                dst: route.dst.to_string(),
                scope,
            })?),
        };
        ops.push(Op::AddRoute(AddRoute {
            link: link(),
            dst: route.dst,
            gateway: route
                .gw
                .or_else(|| first_gateway(route.dst.addr().is_ipv4())),
            metric: route.priority.filter(|metric| *metric > 0),
            table: route.table.filter(|table| *table > 0),
            scope,
        }));
    }
    Ok(ops)
}

fn route_scope(scope: u32) -> Option<RouteScope> {
    match scope {
        0 => Some(RouteScope::Universe),
        200 => Some(RouteScope::Site),
        253 => Some(RouteScope::Link),
        254 => Some(RouteScope::Host),
        _ => None,
    }
}

/// The delegate's link-only result with the IPAM result merged in: its
/// addresses on the interface named `ifname` (their `interface` index
/// points at it), its routes after the delegate's, and its DNS when the
/// delegate's config gave none.
pub fn merge_ipam_result(mut delegate: CniResult, ipam: &CniResult, ifname: &str) -> CniResult {
    let index = delegate
        .interfaces
        .iter()
        .position(|interface| interface.name == ifname);
    delegate.ips.extend(ipam.ips.iter().cloned().map(|mut ip| {
        ip.interface = index;
        ip
    }));
    delegate.routes.extend(ipam.routes.iter().cloned());
    if delegate.dns.is_empty() {
        delegate.dns = ipam.dns.clone();
    }
    delegate
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::CniVersion;
    use serde_json::json;

    fn result(value: Value) -> CniResult {
        CniResult::parse(value.to_string().as_bytes(), CniVersion::V1_0_0).unwrap()
    }

    #[test]
    fn only_native_ipam_runs_after_the_link() {
        assert_eq!(ipam_order(None, false), IpamOrder::None);
        assert_eq!(
            ipam_order(Some("host-local"), true),
            IpamOrder::BeforeDelegate
        );
        assert_eq!(ipam_order(Some("dhcp"), false), IpamOrder::AfterLink);
    }

    #[test]
    fn the_link_only_config_has_no_ipam_and_keeps_the_rest() {
        let config = json!({"type": "macvlan", "master": "ens3", "ipam": {"type": "dhcp"},
                            "dns": {"nameservers": ["10.0.0.1"]}});
        assert_eq!(
            link_only_config(&config),
            json!({"type": "macvlan", "master": "ens3", "dns": {"nameservers": ["10.0.0.1"]}})
        );
    }

    #[test]
    fn a_dhcp_result_becomes_sysctls_addresses_link_up_and_routes() {
        let dhcp = result(json!({"cniVersion": "1.0.0",
            "ips": [{"address": "192.168.1.57/24", "gateway": "192.168.1.1"}],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "192.168.1.254"}]}));
        let ops = address_ops("dhcp", "net1", &dhcp).unwrap();
        let printed: Vec<String> = ops.iter().map(ToString::to_string).collect();
        assert_eq!(
            printed,
            [
                "set-sysctl net/ipv4/conf/net1/arp_notify=1",
                "set-sysctl net/ipv6/conf/net1/ndisc_notify=1",
                "add-address 192.168.1.57/24 on net1",
                "set-link-up net1",
                "add-route 0.0.0.0/0 on net1 via 192.168.1.1",
                "add-route 10.9.0.0/16 on net1 via 192.168.1.254",
            ]
        );
    }

    #[test]
    fn the_built_ops_pass_the_policy_for_the_interface_only() {
        use crate::cni::CniCommand;
        use crate::plan::Plan;
        use crate::plan::policy::{self, MasterRules, PolicyContext};
        use std::collections::BTreeMap;
        let dhcp = result(json!({"cniVersion": "1.0.0",
            "ips": [{"address": "192.168.1.57/24", "gateway": "192.168.1.1"}, {"address": "fd00::9/64"}],
            "routes": [{"dst": "0.0.0.0/0"}]}));
        let modes = BTreeMap::new();
        let links = BTreeMap::new();
        let context = |ifname| PolicyContext {
            command: CniCommand::Add,
            ifname,
            masters: MasterRules {
                allowed_masters: None,
                macvlan_modes: &modes,
            },
            host_links: &links,
        };
        let ops = address_ops("dhcp", "net1", &dhcp).unwrap();
        assert!(policy::check(Plan::of_ops(ops.clone()), &context("net1")).is_ok());
        assert!(policy::check(Plan::of_ops(ops), &context("net2")).is_err());
    }

    #[test]
    fn ipv6_addresses_enable_ipv6_and_gateways_stay_in_their_family() {
        let dual = result(json!({"cniVersion": "1.0.0",
            "ips": [{"address": "192.168.1.5/24", "gateway": "192.168.1.1"},
                    {"address": "fd00::5/64", "gateway": "fd00::1"}],
            "routes": [{"dst": "::/0"}, {"dst": "10.0.0.0/8", "priority": 7, "table": 0, "scope": 253}]}));
        let ops = address_ops("dhcp", "net1", &dual).unwrap();
        assert!(ops.contains(&Op::SetSysctl {
            key: "net/ipv6/conf/net1/disable_ipv6".into(),
            value: "0".into()
        }));
        let routes: Vec<&AddRoute> = ops
            .iter()
            .filter_map(|op| match op {
                Op::AddRoute(route) => Some(route),
                _ => None,
            })
            .collect();
        assert_eq!(routes[0].gateway, Some("fd00::1".parse().unwrap()));
        assert_eq!(routes[1].gateway, Some("192.168.1.1".parse().unwrap()));
        assert_eq!(routes[1].metric, Some(7));
        assert_eq!(routes[1].table, None);
        assert_eq!(routes[1].scope, Some(RouteScope::Link));
    }

    #[test]
    fn a_result_without_addresses_or_with_an_odd_scope_is_refused() {
        let empty = result(json!({"cniVersion": "1.0.0"}));
        assert_eq!(
            address_ops("dhcp", "net1", &empty).unwrap_err().to_string(),
            "IPAM plugin dhcp returned missing IP config"
        );
        let odd = result(json!({"cniVersion": "1.0.0",
            "ips": [{"address": "192.168.1.5/24"}], "routes": [{"dst": "10.0.0.0/8", "scope": 17}]}));
        assert!(matches!(
            address_ops("dhcp", "net1", &odd),
            Err(IpamResultError::Scope { scope: 17, .. })
        ));
    }

    #[test]
    fn the_merged_result_points_addresses_at_the_pod_interface() {
        let delegate = result(json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "other"}, {"name": "net1", "sandbox": "/run/netns/p"}]}));
        let dhcp = result(json!({"cniVersion": "1.0.0",
            "ips": [{"address": "192.168.1.57/24", "gateway": "192.168.1.1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "192.168.1.1"}],
            "dns": {"nameservers": ["192.168.1.1"]}}));
        let merged = merge_ipam_result(delegate, &dhcp, "net1");
        assert_eq!(merged.ips.len(), 1);
        assert_eq!(merged.ips[0].interface, Some(1));
        assert_eq!(merged.routes.len(), 1);
        assert_eq!(merged.dns.nameservers, ["192.168.1.1"]);

        let with_dns = result(
            json!({"cniVersion": "1.0.0", "interfaces": [{"name": "net1"}],
            "dns": {"nameservers": ["10.0.0.1"]}}),
        );
        let merged = merge_ipam_result(with_dns, &dhcp, "net1");
        assert_eq!(
            merged.dns.nameservers,
            ["10.0.0.1"],
            "the config's dns wins"
        );
        assert_eq!(merged.ips[0].interface, Some(0));
    }
}
