//! ADD: the plan that creates the macvlan in the sandbox, configures it
//! from the IPAM result, and the CNI result that describes it.
//!
//! Op order follows the reference: create (under a temporary name and
//! rename when the host namespace already has `ifname`), then for L3 the
//! `arp_notify`/`ndisc_notify` sysctls, the IPv6 sysctls when an IPv6
//! address follows, the addresses, link up and the routes; for L2 only link
//! up.

use std::net::IpAddr;

use guest_sdk::{
    AddAddress, AddRoute, CniResult, CreateMacvlan, Host, InterfaceInfo, IpConfig, NetlinkOp,
    Netns, Plan, PluginError, RenameLink, Request, Route, RouteScope, SetSysctl,
};

use crate::conf::{MacvlanSettings, resolve};
use crate::tempname::temporary_name;
use guest_sdk::cidr::{Cidr, parse_ip};

/// The plan and result of an ADD.
pub(crate) fn plan_add(host: &dyn Host, request: &Request) -> Result<Plan, PluginError> {
    let settings = resolve(host, request)?;
    let ifname = request.ifname.as_str();
    if host.get_link(Netns::Sandbox, ifname).is_some() {
        return Err(PluginError::internal(format!(
            "failed to rename macvlan to {ifname:?}: file exists"
        )));
    }
    let addressing = if settings.layer3 {
        Some(Addressing::from_ipam_result(request)?)
    } else {
        None
    };

    // A link created from the host namespace collides with a host link of
    // the same name; one created inside the sandbox does not.
    let host_has_ifname =
        !settings.master_in_sandbox && host.get_link(Netns::Host, ifname).is_some();
    let temporary = if host_has_ifname {
        Some(temporary_name(host, &request.container_id, ifname)?)
    } else {
        None
    };

    let mut ops = vec![create_op(&settings, temporary.as_deref().unwrap_or(ifname))];
    if let Some(temporary) = temporary {
        ops.push(NetlinkOp::RenameLink(RenameLink {
            name: temporary,
            new_name: ifname.to_owned(),
        }));
    }
    match &addressing {
        Some(addressing) => ops.extend(addressing.ops(ifname)?),
        None => ops.push(NetlinkOp::SetLinkUp(ifname.to_owned())),
    }

    let interface = InterfaceInfo {
        name: ifname.to_owned(),
        mac: settings.mac.clone(),
        mtu: None,
        sandbox: Some(request.netns.clone()),
    };
    let cni_result = CniResult {
        interfaces: vec![interface],
        ips: addressing
            .as_ref()
            .map(Addressing::result_ips)
            .unwrap_or_default(),
        routes: addressing
            .as_ref()
            .map(Addressing::result_routes)
            .unwrap_or_default(),
        dns: settings.dns.clone(),
    };
    Ok(Plan {
        ops,
        cni_result: Some(cni_result),
        state: None,
    })
}

fn create_op(settings: &MacvlanSettings, name: &str) -> NetlinkOp {
    NetlinkOp::CreateMacvlan(CreateMacvlan {
        name: name.to_owned(),
        master: settings.master.name.clone(),
        master_in_sandbox: settings.master_in_sandbox,
        mode: settings.mode,
        mtu: settings.mtu,
        mac: settings.mac.clone(),
    })
}

/// One `ips[]` entry of the IPAM result, parsed.
#[derive(Debug, Clone)]
struct ParsedIp {
    address: Cidr,
    gateway: Option<IpAddr>,
}

/// One `routes[]` entry of the IPAM result, parsed; the other fields are
/// kept as given.
#[derive(Debug, Clone)]
struct ParsedRoute {
    dst: Cidr,
    gateway: Option<IpAddr>,
    route: Route,
}

/// The addresses and routes of the IPAM result.
#[derive(Debug, Clone)]
struct Addressing {
    ips: Vec<ParsedIp>,
    routes: Vec<ParsedRoute>,
}

impl Addressing {
    /// Parse the IPAM result the host ran for this ADD; it must hold at
    /// least one address. Its `dns` and `interfaces` are ignored.
    fn from_ipam_result(request: &Request) -> Result<Addressing, PluginError> {
        let ipam_result = request
            .ipam_result
            .as_ref()
            .filter(|result| !result.ips.is_empty())
            .ok_or_else(|| PluginError::internal("IPAM plugin returned missing IP config"))?;
        let ips = ipam_result
            .ips
            .iter()
            .map(|ip_config| {
                let address = Cidr::parse(&ip_config.address).ok_or_else(|| {
                    PluginError::internal(format!(
                        "IPAM result has an invalid address {:?}",
                        ip_config.address
                    ))
                })?;
                let gateway = parse_optional_ip(ip_config.gateway.as_deref(), "gateway")?;
                Ok(ParsedIp { address, gateway })
            })
            .collect::<Result<Vec<_>, PluginError>>()?;
        let routes = ipam_result
            .routes
            .iter()
            .map(|route| {
                let dst = Cidr::parse(&route.dst).ok_or_else(|| {
                    PluginError::internal(format!(
                        "IPAM result has an invalid route destination {:?}",
                        route.dst
                    ))
                })?;
                let gateway = parse_optional_ip(route.gw.as_deref(), "route gateway")?;
                Ok(ParsedRoute {
                    dst,
                    gateway,
                    route: route.clone(),
                })
            })
            .collect::<Result<Vec<_>, PluginError>>()?;
        Ok(Addressing { ips, routes })
    }

    /// The ops that configure `ifname` once it exists under that name.
    fn ops(&self, ifname: &str) -> Result<Vec<NetlinkOp>, PluginError> {
        let mut ops = vec![
            sysctl(format!("net/ipv4/conf/{ifname}/arp_notify"), "1"),
            sysctl(format!("net/ipv6/conf/{ifname}/ndisc_notify"), "1"),
        ];
        if self.ips.iter().any(|ip| !ip.address.is_ipv4()) {
            ops.push(sysctl(format!("net/ipv6/conf/{ifname}/disable_ipv6"), "0"));
            ops.push(sysctl(
                format!("net/ipv6/conf/{ifname}/keep_addr_on_down"),
                "1",
            ));
        }
        for ip in &self.ips {
            ops.push(NetlinkOp::AddAddress(AddAddress {
                link: ifname.to_owned(),
                address: ip.address.to_string(),
            }));
        }
        ops.push(NetlinkOp::SetLinkUp(ifname.to_owned()));

        // The first gateway of each family stands in for routes without one.
        let first_gateway = |want_ipv4: bool| {
            self.ips
                .iter()
                .filter_map(|ip| ip.gateway)
                .find(|gateway| gateway.is_ipv4() == want_ipv4)
        };
        let ipv4_gateway = first_gateway(true);
        let ipv6_gateway = first_gateway(false);
        for parsed in &self.routes {
            let family_gateway = if parsed.dst.is_ipv4() {
                ipv4_gateway
            } else {
                ipv6_gateway
            };
            let gateway = parsed.gateway.or(family_gateway);
            ops.push(NetlinkOp::AddRoute(AddRoute {
                link: ifname.to_owned(),
                dst: parsed.dst.to_string(),
                gateway: gateway.map(|gateway| gateway.to_string()),
                // Go's netlink omits a zero priority and a zero table.
                metric: parsed.route.priority.filter(|priority| *priority > 0),
                table: parsed.route.table.filter(|table| *table > 0),
                scope: parsed
                    .route
                    .scope
                    .map(|scope| route_scope(scope, &parsed.route.dst))
                    .transpose()?,
            }));
        }
        Ok(ops)
    }

    /// The result's `ips`: every address on interface 0.
    fn result_ips(&self) -> Vec<IpConfig> {
        self.ips
            .iter()
            .map(|ip| IpConfig {
                interface_index: Some(0),
                address: ip.address.to_string(),
                gateway: ip.gateway.map(|gateway| gateway.to_string()),
            })
            .collect()
    }

    /// The result's `routes`: the IPAM routes, addresses canonicalised.
    fn result_routes(&self) -> Vec<Route> {
        self.routes
            .iter()
            .map(|parsed| Route {
                dst: parsed.dst.to_string(),
                gw: parsed.gateway.map(|gateway| gateway.to_string()),
                ..parsed.route.clone()
            })
            .collect()
    }
}

fn parse_optional_ip(text: Option<&str>, what: &str) -> Result<Option<IpAddr>, PluginError> {
    match text.filter(|text| !text.is_empty()) {
        None => Ok(None),
        Some(text) => parse_ip(text).map(Some).ok_or_else(|| {
            PluginError::internal(format!("IPAM result has an invalid {what} {text:?}"))
        }),
    }
}

fn sysctl(key: String, value: &str) -> NetlinkOp {
    NetlinkOp::SetSysctl(SetSysctl {
        key,
        value: value.to_owned(),
    })
}

/// A route's numeric scope (`rtm_scope`) as the ABI's enum.
fn route_scope(scope: u32, dst: &str) -> Result<RouteScope, PluginError> {
    match scope {
        0 => Ok(RouteScope::Universe),
        200 => Ok(RouteScope::Site),
        253 => Ok(RouteScope::Link),
        254 => Ok(RouteScope::Host),
        other => Err(PluginError::internal(format!(
            "IPAM result route {dst:?} has unsupported scope {other}"
        ))),
    }
}
