//! `tuning` as a multus-wasm chained plugin: what the reference
//! `containernetworking/plugins` tuning does within the plugin ABI. After
//! the plugin that made the interface (macvlan...), it sets the
//! interface's own sysctls, MAC, MTU, promisc, allmulti and transmit queue
//! length; DEL puts back what ADD changed (from the state the host keeps
//! with the attachment); CHECK compares the interface with the config.
//!
//! Differences from the reference, each deliberate:
//! - Only the interface's own `net.ipv4|ipv6.conf|neigh.<ifname>.*`
//!   sysctls (the host's policy); others are refused with code 7.
//! - A MAC is changed with the link down (when it was up), so the kernel
//!   derives the IPv6 link-local address from the new MAC.
//! - DEL restores the sysctls it changed too, not only the link settings.
//! - Backups live in the host's attachment cache (plan state), not in
//!   `dataDir`, which is accepted and unused.

pub mod conf;

use guest_sdk::{
    Command, Delegate, Host, LinkInfo, NetlinkOp, Netns, Plan, PluginError, Request, SetFlag,
    SetMac, SetMtu, SetSysctl, SetTxqueuelen, helpers,
};
use serde::{Deserialize, Serialize};

use conf::Tuning;

pub struct TuningPlugin;

/// What ADD changed, as it was before: DEL puts it back. Only the settings
/// ADD changed are present.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Saved {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promisc: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allmulti: Option<bool>,
    #[serde(default, rename = "txQLen", skip_serializing_if = "Option::is_none")]
    pub tx_qlen: Option<u32>,
    /// Sysctl keys (relative to /proc/sys) and their values before ADD.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sysctls: Vec<(String, String)>,
}

impl Delegate for TuningPlugin {
    fn handle(host: &dyn Host, request: Request) -> Result<Plan, PluginError> {
        match request.command {
            Command::Add => add(host, &request),
            Command::Del => del(host, &request),
            Command::Check => check(host, &request).map(|()| Plan::empty()),
            Command::Status | Command::Gc => Ok(Plan::empty()),
        }
    }
}

fn the_link(host: &dyn Host, request: &Request) -> Result<LinkInfo, PluginError> {
    host.get_link(Netns::Sandbox, &request.ifname)
        .ok_or_else(|| {
            PluginError::internal(format!(
                "failed to get {}: Link not found in the pod",
                request.ifname
            ))
        })
}

fn required_prev(request: &Request) -> Result<&guest_sdk::CniResult, PluginError> {
    request
        .prev_result
        .as_ref()
        .ok_or_else(|| PluginError::invalid_config("Required prevResult missing"))
}

fn add(host: &dyn Host, request: &Request) -> Result<Plan, PluginError> {
    let tuning = conf::parse(request)?;
    let mut result = required_prev(request)?.clone();
    let link = the_link(host, request)?;
    let (ops, saved) = plan_settings(host, request, &link, &tuning)?;
    if let Some(mac) = &tuning.mac
        && let Some((index, _)) =
            helpers::sandbox_interface(&result, &request.ifname, &request.netns)
    {
        result.interfaces[index as usize].mac = Some(mac.clone());
    }
    let state = serde_json::to_string(&saved)
        .map_err(|err| PluginError::internal(format!("saving the previous settings: {err}")))?;
    Ok(Plan {
        ops,
        cni_result: Some(result),
        state: Some(state),
    })
}

/// The ops that apply `tuning` to `link`, and what they change, as it was.
pub fn plan_settings(
    host: &dyn Host,
    request: &Request,
    link: &LinkInfo,
    tuning: &Tuning,
) -> Result<(Vec<NetlinkOp>, Saved), PluginError> {
    let ifname = &request.ifname;
    let mut ops = Vec::new();
    let mut saved = Saved::default();
    for (key, value) in &tuning.sysctls {
        let before = host
            .read_sysctl(key)
            .map_err(|err| PluginError::internal(format!("reading sysctl {key}: {err}")))?
            .ok_or_else(|| {
                PluginError::invalid_config(format!(
                    "sysctl {key} does not exist for {ifname} (check its name)"
                ))
            })?;
        saved.sysctls.push((key.clone(), before));
        ops.push(NetlinkOp::SetSysctl(SetSysctl {
            key: key.clone(),
            value: value.clone(),
        }));
    }
    if let Some(mac) = &tuning.mac {
        saved.mac = Some(link.mac.clone());
        push_mac(&mut ops, ifname, mac, link.up);
    }
    if tuning.promisc {
        saved.promisc = Some(link.promisc);
        ops.push(NetlinkOp::SetPromisc(SetFlag {
            link: ifname.clone(),
            on: true,
        }));
    }
    if let Some(mtu) = tuning.mtu {
        saved.mtu = Some(link.mtu);
        ops.push(NetlinkOp::SetMtu(SetMtu {
            link: ifname.clone(),
            mtu,
        }));
    }
    if let Some(on) = tuning.allmulti {
        saved.allmulti = Some(link.allmulti);
        ops.push(NetlinkOp::SetAllmulti(SetFlag {
            link: ifname.clone(),
            on,
        }));
    }
    if let Some(len) = tuning.tx_qlen {
        saved.tx_qlen = Some(link.txqueuelen);
        ops.push(NetlinkOp::SetTxqueuelen(SetTxqueuelen {
            link: ifname.clone(),
            len,
        }));
    }
    Ok((ops, saved))
}

/// A MAC change: down first when the link is up, so the kernel derives the
/// link-local IPv6 address from the new MAC when it comes back up.
fn push_mac(ops: &mut Vec<NetlinkOp>, ifname: &str, mac: &str, up: bool) {
    if up {
        ops.push(NetlinkOp::SetLinkDown(ifname.into()));
    }
    ops.push(NetlinkOp::SetMac(SetMac {
        link: ifname.into(),
        mac: mac.into(),
    }));
    if up {
        ops.push(NetlinkOp::SetLinkUp(ifname.into()));
    }
}

/// DEL: put back what ADD changed, when the interface is still there; no
/// state (an ADD that never finished, a second DEL) or no interface is
/// nothing to do.
fn del(host: &dyn Host, request: &Request) -> Result<Plan, PluginError> {
    conf::parse(request)?;
    let Some(state) = request.state.as_deref() else {
        return Ok(Plan::empty());
    };
    if request.netns.is_empty() {
        return Ok(Plan::empty());
    }
    let Some(link) = host.get_link(Netns::Sandbox, &request.ifname) else {
        return Ok(Plan::empty());
    };
    let saved: Saved = serde_json::from_str(state).map_err(|err| {
        PluginError::internal(format!("the settings saved by ADD are unreadable: {err}"))
    })?;
    Ok(Plan {
        ops: restore_ops(&request.ifname, &link, &saved),
        cni_result: None,
        state: None,
    })
}

/// The ops that put `saved` back on `link`.
pub fn restore_ops(ifname: &str, link: &LinkInfo, saved: &Saved) -> Vec<NetlinkOp> {
    let mut ops = Vec::new();
    for (key, value) in &saved.sysctls {
        ops.push(NetlinkOp::SetSysctl(SetSysctl {
            key: key.clone(),
            value: value.clone(),
        }));
    }
    if let Some(mac) = saved.mac.as_deref().filter(|mac| *mac != link.mac) {
        push_mac(&mut ops, ifname, mac, link.up);
    }
    if let Some(mtu) = saved.mtu {
        ops.push(NetlinkOp::SetMtu(SetMtu {
            link: ifname.into(),
            mtu,
        }));
    }
    if let Some(on) = saved.promisc {
        ops.push(NetlinkOp::SetPromisc(SetFlag {
            link: ifname.into(),
            on,
        }));
    }
    if let Some(on) = saved.allmulti {
        ops.push(NetlinkOp::SetAllmulti(SetFlag {
            link: ifname.into(),
            on,
        }));
    }
    if let Some(len) = saved.tx_qlen {
        ops.push(NetlinkOp::SetTxqueuelen(SetTxqueuelen {
            link: ifname.into(),
            len,
        }));
    }
    ops
}

/// CHECK: the interface as configured (the reference's messages).
fn check(host: &dyn Host, request: &Request) -> Result<(), PluginError> {
    let tuning = conf::parse(request)?;
    required_prev(request)?;
    let link = the_link(host, request)?;
    let ifname = &request.ifname;
    for (key, value) in &tuning.sysctls {
        let current = host
            .read_sysctl(key)
            .map_err(|err| PluginError::internal(format!("reading sysctl {key}: {err}")))?
            .unwrap_or_default();
        if current != *value {
            return Err(PluginError::internal(format!(
                "Error: Tuning configured value of {key} is {value}, current value is {current}"
            )));
        }
    }
    if let Some(mac) = &tuning.mac
        && *mac != link.mac
    {
        return Err(PluginError::internal(format!(
            "Error: Tuning configured Ethernet of {ifname} is {mac}, current value is {}",
            link.mac
        )));
    }
    if tuning.promisc != link.promisc {
        return Err(PluginError::internal(format!(
            "Error: Tuning link {ifname} configured promisc is {}, current value is {}",
            tuning.promisc, link.promisc
        )));
    }
    if let Some(mtu) = tuning.mtu
        && mtu != link.mtu
    {
        return Err(PluginError::internal(format!(
            "Error: Tuning configured MTU of {ifname} is {mtu}, current value is {}",
            link.mtu
        )));
    }
    if let Some(on) = tuning.allmulti
        && on != link.allmulti
    {
        return Err(PluginError::internal(format!(
            "Error: Tuning configured all-multicast mode of {ifname} is {on}, current value is {}",
            link.allmulti
        )));
    }
    if let Some(len) = tuning.tx_qlen
        && len != link.txqueuelen
    {
        return Err(PluginError::internal(format!(
            "Error: Tuning configured Transmit Queue Length of {ifname} is {len}, current value is {}",
            link.txqueuelen
        )));
    }
    Ok(())
}

guest_sdk::export_plugin!(delegate: TuningPlugin);

#[cfg(test)]
mod tests;
