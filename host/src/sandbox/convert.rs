//! Conversions between the generated WIT types and the host's own, with the
//! output limits applied to everything a guest returns.

use std::net::IpAddr;

use ipnet::IpNet;

use super::bindings::{wit, wit_links};
use super::{Limits, PluginRequest, SandboxError};
use crate::cni::CniCommand;
use crate::cni::{CniResult, CniVersion, Dns, Interface, IpConfig, Route};
use crate::netlink::{self, LinkInfo, MacAddr, MacvlanMode, Netns, Op, Plan, RouteScope};

/// Something wrong with a guest's output, before the plugin's name is known.
#[derive(Debug)]
pub(super) enum OutputProblem {
    Limit(String),
    Invalid(String),
}

impl OutputProblem {
    pub(super) fn into_error(self, plugin: &str, digest: &str) -> SandboxError {
        match self {
            OutputProblem::Limit(reason) => SandboxError::OutputLimit {
                plugin: plugin.into(),
                digest: digest.into(),
                reason,
            },
            OutputProblem::Invalid(reason) => SandboxError::InvalidOutput {
                plugin: plugin.into(),
                digest: digest.into(),
                reason,
            },
        }
    }
}

type Checked<T> = Result<T, OutputProblem>;

fn check_len(what: &str, text: &str, limits: &Limits) -> Checked<()> {
    if text.len() > limits.max_string_bytes {
        return Err(OutputProblem::Limit(format!(
            "{what} is {} bytes, over the {}-byte limit",
            text.len(),
            limits.max_string_bytes
        )));
    }
    Ok(())
}

fn check_count(what: &str, count: usize, limits: &Limits) -> Checked<()> {
    if count > limits.max_ops {
        return Err(OutputProblem::Limit(format!(
            "{count} {what}, over the limit of {}",
            limits.max_ops
        )));
    }
    Ok(())
}

fn text(what: &str, value: String, limits: &Limits) -> Checked<String> {
    check_len(what, &value, limits)?;
    Ok(value)
}

fn parse_net(what: &str, value: &str, limits: &Limits) -> Checked<IpNet> {
    check_len(what, value, limits)?;
    value.parse().map_err(|_| {
        OutputProblem::Invalid(format!(
            "{what} {value:?} is not an address with a prefix length"
        ))
    })
}

fn parse_ip(what: &str, value: &str, limits: &Limits) -> Checked<IpAddr> {
    check_len(what, value, limits)?;
    value
        .parse()
        .map_err(|_| OutputProblem::Invalid(format!("{what} {value:?} is not an IP address")))
}

fn parse_mac(what: &str, value: &str, limits: &Limits) -> Checked<MacAddr> {
    check_len(what, value, limits)?;
    value
        .parse()
        .map_err(|_| OutputProblem::Invalid(format!("{what} {value:?} is not a MAC address")))
}

pub(super) fn netns_from_wit(netns: wit::Netns) -> Netns {
    match netns {
        wit::Netns::Host => Netns::Host,
        wit::Netns::Sandbox => Netns::Sandbox,
    }
}

fn mode_from_wit(mode: wit::MacvlanMode) -> MacvlanMode {
    match mode {
        wit::MacvlanMode::Bridge => MacvlanMode::Bridge,
        wit::MacvlanMode::Private => MacvlanMode::Private,
        wit::MacvlanMode::Vepa => MacvlanMode::Vepa,
        wit::MacvlanMode::Passthru => MacvlanMode::Passthru,
        wit::MacvlanMode::Source => MacvlanMode::Source,
    }
}

fn mode_to_wit(mode: MacvlanMode) -> wit::MacvlanMode {
    match mode {
        MacvlanMode::Bridge => wit::MacvlanMode::Bridge,
        MacvlanMode::Private => wit::MacvlanMode::Private,
        MacvlanMode::Vepa => wit::MacvlanMode::Vepa,
        MacvlanMode::Passthru => wit::MacvlanMode::Passthru,
        MacvlanMode::Source => wit::MacvlanMode::Source,
    }
}

pub(super) fn link_to_wit(link: LinkInfo) -> wit_links::LinkInfo {
    wit_links::LinkInfo {
        name: link.name,
        index: link.index,
        mtu: link.mtu,
        mac: link.mac.map(|mac| mac.to_string()).unwrap_or_default(),
        kind: link.kind,
        up: link.up,
        macvlan_mode: link.macvlan_mode.map(mode_to_wit),
        promisc: link.promisc,
        allmulti: link.allmulti,
        txqueuelen: link.txqueuelen,
        master: link.master,
        master_mtu: link.master_mtu,
    }
}

pub(super) fn route_to_wit(route: &Route) -> wit::Route {
    wit::Route {
        dst: route.dst.to_string(),
        gw: route.gw.map(|gw| gw.to_string()),
        mtu: route.mtu,
        advmss: route.advmss,
        priority: route.priority,
        table: route.table,
        scope: route.scope,
    }
}

pub(super) fn dns_to_wit(dns: &Dns) -> wit::Dns {
    wit::Dns {
        nameservers: dns.nameservers.clone(),
        domain: dns.domain.clone(),
        search: dns.search.clone(),
        options: dns.options.clone(),
    }
}

fn result_to_wit(result: &CniResult) -> wit::CniResult {
    wit::CniResult {
        interfaces: result
            .interfaces
            .iter()
            .map(|interface| wit::InterfaceInfo {
                name: interface.name.clone(),
                mac: interface.mac.clone(),
                mtu: interface.mtu,
                sandbox: interface.sandbox.clone(),
            })
            .collect(),
        ips: result
            .ips
            .iter()
            .map(|ip| wit::IpConfig {
                interface_index: ip.interface.map(|index| index as u32),
                address: ip.address.to_string(),
                gateway: ip.gateway.map(|gateway| gateway.to_string()),
            })
            .collect(),
        routes: result.routes.iter().map(route_to_wit).collect(),
        dns: (!result.dns.is_empty()).then(|| dns_to_wit(&result.dns)),
    }
}

pub(super) fn request_to_wit(request: &PluginRequest) -> wit::Request {
    wit::Request {
        command: match request.command {
            CniCommand::Add => wit::Command::Add,
            CniCommand::Del => wit::Command::Del,
            CniCommand::Check => wit::Command::Check,
            CniCommand::Status => wit::Command::Status,
            CniCommand::Gc => wit::Command::Gc,
            // Never asked of a plugin: the host answers VERSION itself.
            CniCommand::Version => wit::Command::Status,
        },
        container_id: request.container_id.clone(),
        netns: request.netns.clone(),
        ifname: request.ifname.clone(),
        args: request.args.clone(),
        config: request.config.clone(),
        prev_result: request.prev_result.as_ref().map(result_to_wit),
        ipam_result: request.ipam_result.as_ref().map(result_to_wit),
        valid_attachments: request
            .valid_attachments
            .iter()
            .map(|(container_id, ifname)| wit::Attachment {
                container_id: container_id.clone(),
                ifname: ifname.clone(),
            })
            .collect(),
        state: request.state.clone(),
    }
}

/// Whether a plugin that declares `versions` (ABI 0.2.0 `cni-versions`)
/// supports the `cniVersion` of `config`; the refusal is the plugin's
/// error, code 1 (incompatible CNI version), naming what it supports.
pub(super) fn check_cni_versions(
    versions: &[String],
    config: &str,
) -> Result<(), wit::PluginError> {
    let wanted = serde_json::from_str::<serde_json::Value>(config)
        .ok()
        .and_then(|config| config.get("cniVersion")?.as_str().map(str::to_string));
    let Some(wanted) = wanted else {
        return Ok(());
    };
    if versions.contains(&wanted) {
        return Ok(());
    }
    // The list is the guest's: shown bounded.
    let shown: Vec<&str> = versions
        .iter()
        .take(16)
        .map(|version| &version[..version.len().min(16)])
        .collect();
    Err(wit::PluginError {
        code: crate::cni::CniError::INCOMPATIBLE_VERSION,
        msg: format!(
            "the network's cniVersion {wanted:?} is not one this plugin supports ({})",
            shown.join(", ")
        ),
        details: String::new(),
    })
}

/// A guest's result, checked and parsed. Its version is 1.1.0 (the WIT
/// shape); the caller converts it to whatever version it prints.
pub(super) fn result_from_wit(result: wit::CniResult, limits: &Limits) -> Checked<CniResult> {
    check_count("interfaces", result.interfaces.len(), limits)?;
    check_count("ips", result.ips.len(), limits)?;
    check_count("routes", result.routes.len(), limits)?;
    let interfaces = result
        .interfaces
        .into_iter()
        .map(|interface| {
            Ok(Interface {
                name: text("interface name", interface.name, limits)?,
                mac: interface
                    .mac
                    .map(|mac| parse_mac("interface mac", &mac, limits).map(|mac| mac.to_string()))
                    .transpose()?,
                mtu: interface.mtu,
                sandbox: interface
                    .sandbox
                    .map(|sandbox| text("interface sandbox", sandbox, limits))
                    .transpose()?,
                socket_path: None,
                pci_id: None,
            })
        })
        .collect::<Checked<Vec<_>>>()?;
    let ips = result
        .ips
        .into_iter()
        .map(|ip| {
            let interface = ip.interface_index.map(|index| index as usize);
            if let Some(index) = interface
                && index >= interfaces.len()
            {
                return Err(OutputProblem::Invalid(format!(
                    "ip {} names interface {index}, but the result has {} interfaces",
                    ip.address,
                    interfaces.len()
                )));
            }
            Ok(IpConfig {
                interface,
                address: parse_net("ip address", &ip.address, limits)?,
                gateway: ip
                    .gateway
                    .map(|gateway| parse_ip("gateway", &gateway, limits))
                    .transpose()?,
            })
        })
        .collect::<Checked<Vec<_>>>()?;
    let routes = result
        .routes
        .into_iter()
        .map(|route| {
            Ok(Route {
                dst: parse_net("route dst", &route.dst, limits)?,
                gw: route
                    .gw
                    .map(|gw| parse_ip("route gw", &gw, limits))
                    .transpose()?,
                mtu: route.mtu,
                advmss: route.advmss,
                priority: route.priority,
                table: route.table,
                scope: route.scope,
            })
        })
        .collect::<Checked<Vec<_>>>()?;
    let dns = match result.dns {
        Some(dns) => {
            check_count("nameservers", dns.nameservers.len(), limits)?;
            check_count("search domains", dns.search.len(), limits)?;
            check_count("dns options", dns.options.len(), limits)?;
            Dns {
                nameservers: dns
                    .nameservers
                    .into_iter()
                    .map(|server| text("nameserver", server, limits))
                    .collect::<Checked<_>>()?,
                domain: dns
                    .domain
                    .map(|domain| text("domain", domain, limits))
                    .transpose()?,
                search: dns
                    .search
                    .into_iter()
                    .map(|search| text("search domain", search, limits))
                    .collect::<Checked<_>>()?,
                options: dns
                    .options
                    .into_iter()
                    .map(|option| text("dns option", option, limits))
                    .collect::<Checked<_>>()?,
            }
        }
        None => Dns::default(),
    };
    Ok(CniResult {
        cni_version: CniVersion::V1_1_0,
        interfaces,
        ips,
        routes,
        dns,
    })
}

fn op_from_wit(op: wit::NetlinkOp, limits: &Limits) -> Checked<Op> {
    Ok(match op {
        wit::NetlinkOp::CreateMacvlan(create) => Op::CreateMacvlan(netlink::CreateMacvlan {
            name: text("link name", create.name, limits)?,
            master: text("master name", create.master, limits)?,
            master_in_sandbox: create.master_in_sandbox,
            mode: mode_from_wit(create.mode),
            mtu: create.mtu,
            mac: create
                .mac
                .map(|mac| parse_mac("mac", &mac, limits))
                .transpose()?,
        }),
        wit::NetlinkOp::RenameLink(rename) => Op::RenameLink {
            name: text("link name", rename.name, limits)?,
            new_name: text("link name", rename.new_name, limits)?,
        },
        wit::NetlinkOp::SetLinkUp(link) => Op::SetLinkUp {
            link: text("link name", link, limits)?,
        },
        wit::NetlinkOp::SetMtu(set) => Op::SetMtu {
            link: text("link name", set.link, limits)?,
            mtu: set.mtu,
        },
        wit::NetlinkOp::SetMac(set) => Op::SetMac {
            mac: parse_mac("mac", &set.mac, limits)?,
            link: text("link name", set.link, limits)?,
        },
        wit::NetlinkOp::AddAddress(add) => Op::AddAddress {
            address: parse_net("address", &add.address, limits)?,
            link: text("link name", add.link, limits)?,
        },
        wit::NetlinkOp::AddRoute(add) => Op::AddRoute(crate::plan::AddRoute {
            dst: parse_net("route dst", &add.dst, limits)?,
            gateway: add
                .gateway
                .map(|gateway| parse_ip("route gateway", &gateway, limits))
                .transpose()?,
            link: text("link name", add.link, limits)?,
            metric: add.metric,
            table: add.table,
            scope: add.scope.map(|scope| match scope {
                wit::RouteScope::Universe => RouteScope::Universe,
                wit::RouteScope::Site => RouteScope::Site,
                wit::RouteScope::Link => RouteScope::Link,
                wit::RouteScope::Host => RouteScope::Host,
            }),
        }),
        wit::NetlinkOp::SetSysctl(set) => Op::SetSysctl {
            key: text("sysctl key", set.key, limits)?,
            value: text("sysctl value", set.value, limits)?,
        },
        wit::NetlinkOp::DeleteLink(link) => Op::DeleteLink {
            link: text("link name", link, limits)?,
        },
        wit::NetlinkOp::SetLinkDown(link) => Op::SetLinkDown {
            link: text("link name", link, limits)?,
        },
        wit::NetlinkOp::SetPromisc(set) => Op::SetPromisc {
            link: text("link name", set.link, limits)?,
            on: set.on,
        },
        wit::NetlinkOp::SetAllmulti(set) => Op::SetAllmulti {
            link: text("link name", set.link, limits)?,
            on: set.on,
        },
        wit::NetlinkOp::SetTxqueuelen(set) => Op::SetTxQueueLen {
            link: text("link name", set.link, limits)?,
            len: set.len,
        },
    })
}

pub(super) fn plan_from_wit(plan: wit::Plan, limits: &Limits) -> Checked<Plan> {
    check_count("ops", plan.ops.len(), limits)?;
    let ops = plan
        .ops
        .into_iter()
        .enumerate()
        .map(|(index, op)| {
            op_from_wit(op, limits).map_err(|problem| match problem {
                OutputProblem::Limit(reason) => {
                    OutputProblem::Limit(format!("op {index}: {reason}"))
                }
                OutputProblem::Invalid(reason) => {
                    OutputProblem::Invalid(format!("op {index}: {reason}"))
                }
            })
        })
        .collect::<Checked<Vec<_>>>()?;
    let result = plan
        .cni_result
        .map(|result| result_from_wit(result, limits))
        .transpose()?;
    let state = plan
        .state
        .map(|state| text("state", state, limits))
        .transpose()?;
    Ok(Plan { ops, result, state })
}

/// A guest's own CNI error, with its strings bounded, its message prefixed
/// with the plugin's name and sha256, and a code the host reserves
/// ([`super::code::HOST_RESERVED`]) replaced by [`super::code::REMAPPED`]: a
/// 101 always means the host's deadline, never a guest's say-so.
pub(super) fn plugin_error(
    error: wit::PluginError,
    limits: &Limits,
    plugin: &str,
    digest: &str,
) -> SandboxError {
    let bound = |mut text: String| {
        if text.len() > limits.max_string_bytes {
            let mut cut = limits.max_string_bytes;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("...");
        }
        text
    };
    let mut msg = format!("plugin {plugin} (sha256 {digest}): {}", bound(error.msg));
    let code = crate::cni::error::foreign_code(error.code);
    if code != error.code {
        msg.push_str(&format!(
            " (the plugin returned code {}, which only the host may use)",
            error.code
        ));
    }
    SandboxError::Plugin {
        code,
        msg,
        details: bound(error.details),
    }
}
