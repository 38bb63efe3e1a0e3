//! CHECK: the interface the previous ADD reported must still be there, as
//! it was made: a macvlan of the configured mode with the reported MAC,
//! carrying every reported address (and its prefix route) and every
//! reported route.

use guest_sdk::{CniResult, Host, Netns, PluginError, Request, Route};

use crate::conf::{mode_name, resolve};
use guest_sdk::cidr::{Cidr, parse_ip};

/// Check the sandbox against `prevResult`; `Ok` when everything matches.
pub(crate) fn check(host: &dyn Host, request: &Request) -> Result<(), PluginError> {
    // Resolving the configuration also checks that the master exists.
    let settings = resolve(host, request)?;
    let prev_result = request
        .prev_result
        .as_ref()
        .ok_or_else(|| PluginError::internal("required prevResult missing"))?;
    let ifname = request.ifname.as_str();

    let interface = prev_result
        .interfaces
        .iter()
        .find(|interface| {
            interface.name == ifname && interface.sandbox.as_deref().unwrap_or("") == request.netns
        })
        .ok_or_else(|| {
            PluginError::internal(format!(
                "sandbox in prevResult  doesn't match configured netns: {}",
                request.netns
            ))
        })?;

    let link = host.get_link(Netns::Sandbox, ifname).ok_or_else(|| {
        PluginError::internal(format!(
            "container Interface name in prevResult: {ifname} not found"
        ))
    })?;
    if interface.sandbox.as_deref().unwrap_or("").is_empty() {
        return Err(PluginError::internal(format!(
            "error: Container interface {ifname} should not be in host namespace"
        )));
    }
    if link.kind != "macvlan" {
        return Err(PluginError::internal(format!(
            "error: Container interface {ifname} not of type macvlan"
        )));
    }
    if link.macvlan_mode != Some(settings.mode) {
        let current_mode = link.macvlan_mode.map(mode_name).unwrap_or("unknown");
        return Err(PluginError::internal(format!(
            "container macvlan mode {current_mode} does not match expected value: {}",
            mode_name(settings.mode)
        )));
    }
    if let Some(expected_mac) = interface.mac.as_deref().filter(|mac| !mac.is_empty())
        && !expected_mac.eq_ignore_ascii_case(&link.mac)
    {
        return Err(PluginError::internal(format!(
            "interface {ifname} Mac {expected_mac} doesn't match container Mac: {}",
            link.mac
        )));
    }

    let routes = host.routes(Netns::Sandbox, ifname);
    check_addresses(host, ifname, prev_result, &routes)?;
    check_routes(prev_result, &routes)
}

/// Every reported address is on the link, and a route to its prefix exists.
fn check_addresses(
    host: &dyn Host,
    ifname: &str,
    prev_result: &CniResult,
    routes: &[Route],
) -> Result<(), PluginError> {
    let link_addresses: Vec<Cidr> = host
        .addresses(Netns::Sandbox, ifname)
        .iter()
        .filter_map(|address| Cidr::parse(address))
        .collect();
    for ip_config in &prev_result.ips {
        let expected = Cidr::parse(&ip_config.address).ok_or_else(|| {
            PluginError::internal(format!(
                "prevResult has an invalid address {:?}",
                ip_config.address
            ))
        })?;
        if !link_addresses.contains(&expected) {
            return Err(PluginError::internal(format!(
                "Failed to match addr {expected} on interface {ifname}"
            )));
        }
        let prefix = expected.network();
        let prefix_route_found = routes
            .iter()
            .any(|route| Cidr::parse(&route.dst).is_some_and(|dst| dst.network() == prefix));
        if !prefix_route_found {
            let gateway = ip_config.gateway.as_deref().unwrap_or("<nil>");
            return Err(PluginError::internal(format!(
                "Failed to find Gateway {gateway} for interface {ifname}"
            )));
        }
    }
    Ok(())
}

/// Every reported route is in the table. A default route matches any
/// default route of its family; others match on destination, and on gateway
/// when one was reported.
fn check_routes(prev_result: &CniResult, routes: &[Route]) -> Result<(), PluginError> {
    for expected in &prev_result.routes {
        let expected_dst = Cidr::parse(&expected.dst).ok_or_else(|| {
            PluginError::internal(format!(
                "Invalid static route found {}",
                describe_route(expected)
            ))
        })?;
        let expected_gateway = expected.gw.as_deref().and_then(parse_ip);
        let found = routes.iter().any(|route| {
            let Some(dst) = Cidr::parse(&route.dst) else {
                return false;
            };
            if dst.network() != expected_dst.network() {
                return false;
            }
            if expected_dst.is_default() {
                return true;
            }
            match expected_gateway {
                None => true,
                Some(gateway) => route.gw.as_deref().and_then(parse_ip) == Some(gateway),
            }
        });
        if !found {
            return Err(PluginError::internal(format!(
                "Expected Route {} not found in routing table",
                describe_route(expected)
            )));
        }
    }
    Ok(())
}

fn describe_route(route: &Route) -> String {
    match &route.gw {
        Some(gateway) => format!("{} via {gateway}", route.dst),
        None => route.dst.clone(),
    }
}
