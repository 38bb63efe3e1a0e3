//! ABI 0.1.0 over 0.2.0: a 0.1.0 plugin's values become the 0.2.0 WIT
//! values the rest of the sandbox converts and checks, and what the host
//! hands it goes the other way (dropping what 0.1.0 cannot carry). The
//! host services a 0.1.0 plugin imports are the 0.2.0 ones, through the
//! same [`StoreState`], so both versions run under the same limits.

use super::bindings::v0_1::{wit as old, wit_links as old_links, wit_log as old_log};
use super::bindings::v0_1::{wit_node_files as old_node_files, wit_store as old_store};
use super::bindings::{wit, wit_links, wit_log, wit_node_files, wit_store};
use super::state::StoreState;

/// A field-by-field conversion between the two versions' generated types.
pub(super) trait Cast<T> {
    fn cast(self) -> T;
}

macro_rules! cast_plain {
    ($($type:ty),*) => {
        $(impl Cast<$type> for $type {
            fn cast(self) -> $type {
                self
            }
        })*
    };
}

cast_plain!(String, u32, bool);

impl<A: Cast<B>, B> Cast<Option<B>> for Option<A> {
    fn cast(self) -> Option<B> {
        self.map(Cast::cast)
    }
}

impl<A: Cast<B>, B> Cast<Vec<B>> for Vec<A> {
    fn cast(self) -> Vec<B> {
        self.into_iter().map(Cast::cast).collect()
    }
}

impl Cast<(String, String)> for (String, String) {
    fn cast(self) -> (String, String) {
        self
    }
}

/// Records whose fields are the same in both versions.
macro_rules! cast_record {
    ($from:path => $to:path { $($field:ident),* $(,)? }) => {
        impl Cast<$to> for $from {
            fn cast(self) -> $to {
                let value = self;
                $to { $($field: value.$field.cast()),* }
            }
        }
    };
}

/// Enums with the same cases in both versions.
macro_rules! cast_enum {
    ($from:ident => $to:ident { $($case:ident),* $(,)? }) => {
        impl Cast<$to::$from> for old::$from {
            fn cast(self) -> $to::$from {
                match self {
                    $(old::$from::$case => $to::$from::$case),*
                }
            }
        }
        impl Cast<old::$from> for $to::$from {
            fn cast(self) -> old::$from {
                match self {
                    $($to::$from::$case => old::$from::$case),*
                }
            }
        }
    };
}

cast_enum!(Command => wit { Add, Del, Check, Status, Gc });
cast_enum!(MacvlanMode => wit { Bridge, Private, Vepa, Passthru, Source });
cast_enum!(Netns => wit { Host, Sandbox });
cast_enum!(IpFamily => wit { V4, V6 });
cast_enum!(RouteScope => wit { Universe, Site, Link, Host });

// What the host hands a 0.1.0 plugin.
cast_record!(wit::Attachment => old::Attachment { container_id, ifname });
cast_record!(wit::InterfaceInfo => old::InterfaceInfo { name, mac, mtu, sandbox });
cast_record!(wit::IpConfig => old::IpConfig { interface_index, address, gateway });
cast_record!(wit::Route => old::Route { dst, gw, mtu, advmss, priority, table, scope });
cast_record!(wit::Dns => old::Dns { nameservers, domain, search, options });
cast_record!(wit::CniResult => old::CniResult { interfaces, ips, routes, dns });

// What a 0.1.0 plugin returns.
cast_record!(old::InterfaceInfo => wit::InterfaceInfo { name, mac, mtu, sandbox });
cast_record!(old::IpConfig => wit::IpConfig { interface_index, address, gateway });
cast_record!(old::Route => wit::Route { dst, gw, mtu, advmss, priority, table, scope });
cast_record!(old::Dns => wit::Dns { nameservers, domain, search, options });
cast_record!(old::CniResult => wit::CniResult { interfaces, ips, routes, dns });
cast_record!(old::PluginError => wit::PluginError { code, msg, details });
cast_record!(old::CreateMacvlan => wit::CreateMacvlan { name, master, master_in_sandbox, mode, mtu, mac });
cast_record!(old::RenameLink => wit::RenameLink { name, new_name });
cast_record!(old::SetMtu => wit::SetMtu { link, mtu });
cast_record!(old::SetMac => wit::SetMac { link, mac });
cast_record!(old::AddAddress => wit::AddAddress { link, address });
cast_record!(old::AddRoute => wit::AddRoute { link, dst, gateway, metric, table, scope });
cast_record!(old::SetSysctl => wit::SetSysctl { key, value });

/// The request as a 0.1.0 plugin sees it (it has no `state`).
pub(super) fn request(request: wit::Request) -> old::Request {
    old::Request {
        command: request.command.cast(),
        container_id: request.container_id,
        netns: request.netns,
        ifname: request.ifname,
        args: request.args,
        config: request.config,
        prev_result: request.prev_result.cast(),
        ipam_result: request.ipam_result.cast(),
        valid_attachments: request.valid_attachments.cast(),
    }
}

impl Cast<wit::NetlinkOp> for old::NetlinkOp {
    fn cast(self) -> wit::NetlinkOp {
        match self {
            old::NetlinkOp::CreateMacvlan(op) => wit::NetlinkOp::CreateMacvlan(op.cast()),
            old::NetlinkOp::RenameLink(op) => wit::NetlinkOp::RenameLink(op.cast()),
            old::NetlinkOp::SetLinkUp(link) => wit::NetlinkOp::SetLinkUp(link),
            old::NetlinkOp::SetMtu(op) => wit::NetlinkOp::SetMtu(op.cast()),
            old::NetlinkOp::SetMac(op) => wit::NetlinkOp::SetMac(op.cast()),
            old::NetlinkOp::AddAddress(op) => wit::NetlinkOp::AddAddress(op.cast()),
            old::NetlinkOp::AddRoute(op) => wit::NetlinkOp::AddRoute(op.cast()),
            old::NetlinkOp::SetSysctl(op) => wit::NetlinkOp::SetSysctl(op.cast()),
            old::NetlinkOp::DeleteLink(link) => wit::NetlinkOp::DeleteLink(link),
        }
    }
}

/// A 0.1.0 plan (it keeps no state).
pub(super) fn plan(plan: old::Plan) -> wit::Plan {
    wit::Plan {
        ops: plan.ops.cast(),
        cni_result: plan.cni_result.cast(),
        state: None,
    }
}

pub(super) fn result(result: old::CniResult) -> wit::CniResult {
    result.cast()
}

pub(super) fn error(error: old::PluginError) -> wit::PluginError {
    error.cast()
}

fn link(link: wit_links::LinkInfo) -> old_links::LinkInfo {
    old_links::LinkInfo {
        name: link.name,
        index: link.index,
        mtu: link.mtu,
        mac: link.mac,
        kind: link.kind,
        up: link.up,
        macvlan_mode: link.macvlan_mode.map(Cast::cast),
    }
}

impl old::Host for StoreState {}

impl old_log::Host for StoreState {
    fn log(&mut self, level: old_log::Level, message: String) {
        let level = match level {
            old_log::Level::Error => wit_log::Level::Error,
            old_log::Level::Warn => wit_log::Level::Warn,
            old_log::Level::Info => wit_log::Level::Info,
            old_log::Level::Debug => wit_log::Level::Debug,
            old_log::Level::Trace => wit_log::Level::Trace,
        };
        wit_log::Host::log(self, level, message)
    }
}

impl old_links::Host for StoreState {
    fn get_link(&mut self, netns: old::Netns, name: String) -> Option<old_links::LinkInfo> {
        wit_links::Host::get_link(self, netns.cast(), name).map(link)
    }

    fn default_route_link(
        &mut self,
        netns: old::Netns,
        family: old::IpFamily,
    ) -> Option<old_links::LinkInfo> {
        wit_links::Host::default_route_link(self, netns.cast(), family.cast()).map(link)
    }

    fn addresses(&mut self, netns: old::Netns, name: String) -> Vec<String> {
        wit_links::Host::addresses(self, netns.cast(), name)
    }

    fn routes(&mut self, netns: old::Netns, name: String) -> Vec<old::Route> {
        wit_links::Host::routes(self, netns.cast(), name).cast()
    }
}

impl old_store::Host for StoreState {
    fn get(&mut self, key: String) -> Result<Option<String>, String> {
        wit_store::Host::get(self, key)
    }

    fn list(&mut self) -> Result<Vec<String>, String> {
        wit_store::Host::list(self)
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<String>,
        new: Option<String>,
    ) -> Result<bool, String> {
        wit_store::Host::compare_and_swap(self, key, expected, new)
    }

    fn delete(&mut self, key: String) -> Result<bool, String> {
        wit_store::Host::delete(self, key)
    }
}

impl old_node_files::Host for StoreState {
    fn read_resolv_conf(&mut self, path: String) -> Result<old::Dns, String> {
        wit_node_files::Host::read_resolv_conf(self, path).map(Cast::cast)
    }
}
