//! The macvlan delegate as a multus-wasm plugin, with the behaviour of the
//! reference macvlan from containernetworking/plugins.
//!
//! ADD returns a plan that creates a macvlan on the configured master
//! directly in the sandbox, configures the addresses and routes of the IPAM
//! result the host already obtained, and the CNI result; DEL deletes the
//! link if it is still there; CHECK compares the sandbox against
//! `prevResult`. Unlike the reference, mode `source` is supported.

mod add;
mod check;
mod conf;
mod mac;
mod tempname;

#[cfg(test)]
mod tests;

use guest_sdk::{Command, Delegate, Host, NetlinkOp, Netns, Plan, PluginError, Request};

/// The macvlan delegate.
#[derive(Debug)]
pub struct Macvlan;

impl Delegate for Macvlan {
    fn handle(host: &dyn Host, request: Request) -> Result<Plan, PluginError> {
        match request.command {
            Command::Add => add::plan_add(host, &request),
            Command::Del => Ok(plan_del(host, &request)),
            Command::Check => check::check(host, &request).map(|()| Plan::empty()),
            Command::Status | Command::Gc => Ok(Plan::empty()),
        }
    }
}

/// DEL: delete the link if the sandbox still has it. Reads no configuration,
/// so it succeeds even when the master or the config is gone; the host runs
/// IPAM DEL itself.
fn plan_del(host: &dyn Host, request: &Request) -> Plan {
    if request.netns.is_empty() || host.get_link(Netns::Sandbox, &request.ifname).is_none() {
        return Plan::empty();
    }
    Plan {
        ops: vec![NetlinkOp::DeleteLink(request.ifname.clone())],
        cni_result: None,
        state: None,
    }
}

guest_sdk::export_plugin!(delegate: Macvlan);
