//! The executor: applies an accepted plan with rtnetlink and journals every
//! op it applied with its inverse, so a failure anywhere is undone in
//! reverse and leaves the pod as it was.
//!
//! Links are created directly inside the pod namespace (one RTM_NEWLINK
//! from the host socket carrying `IFLA_NET_NS_FD`); every other op goes
//! through the socket opened inside the pod namespace. Sysctls are written by
//! a thread that entered the pod namespace, since `/proc/sys/net` resolves
//! against the writer's namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage, MacVlanMode as NlMacVlanMode};
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol, RouteScope as NlRouteScope};
use rtnetlink::{Handle, LinkMacVlan, LinkUnspec, RouteMessageBuilder};

use super::handles::{Handles, NetnsFile};
use super::query::{self, errno_of, is_no_such_device, libc_errno};
use crate::plan::{
    AddRoute, ApplyError, CheckedPlan, CreateMacvlan, LinkInfo, MacAddr, MacvlanMode, Op,
    RouteScope,
};

/// The interface group of every link a plan creates. A pod's DEL deletes
/// them all with one RTM_DELLINK for the group: the kernel then tears them
/// down in one batch (one RCU grace period, ~18 ms here) instead of one per
/// link.
pub const WASM_LINK_GROUP: u32 = 0x6d77_6173;

/// Set to an op index to make the executor fail just before applying that
/// op (a test hook for the rollback suites; never set in production).
pub const FAULT_ENV: &str = "MULTUS_WASM_FAULT_AT_OP";

/// The inverse of one applied op.
#[derive(Debug, Clone)]
enum Undo {
    /// The link this plan created, by index in the pod namespace.
    DeleteLink {
        index: u32,
    },
    Rename {
        index: u32,
        name: String,
    },
    SetDown {
        index: u32,
    },
    SetUp {
        index: u32,
    },
    SetPromisc {
        index: u32,
        on: bool,
    },
    SetAllmulti {
        index: u32,
        on: bool,
    },
    SetTxQueueLen {
        index: u32,
        len: u32,
    },
    SetMtu {
        index: u32,
        mtu: u32,
    },
    SetMac {
        index: u32,
        mac: MacAddr,
    },
    DeleteAddress {
        message: AddressMessage,
    },
    DeleteRoute {
        message: RouteMessage,
    },
    /// A route this plan deleted (a default route the meta-plugin removed).
    RestoreRoute {
        message: RouteMessage,
    },
    RestoreSysctl {
        key: String,
        value: String,
    },
}

impl Undo {
    /// The link an undo acts on, if any.
    fn link(&self) -> Option<u32> {
        match self {
            Undo::DeleteLink { index }
            | Undo::Rename { index, .. }
            | Undo::SetDown { index }
            | Undo::SetUp { index }
            | Undo::SetPromisc { index, .. }
            | Undo::SetAllmulti { index, .. }
            | Undo::SetTxQueueLen { index, .. }
            | Undo::SetMtu { index, .. }
            | Undo::SetMac { index, .. } => Some(*index),
            Undo::DeleteAddress { message } => Some(message.header.index),
            Undo::DeleteRoute { .. } | Undo::RestoreRoute { .. } | Undo::RestoreSysctl { .. } => {
                None
            }
        }
    }
}

/// What applying a plan left behind, in order.
#[derive(Debug, Default)]
pub struct Journal {
    entries: Vec<Undo>,
}

impl Journal {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Indexes (in the pod namespace) of the links this plan created.
    pub fn created_links(&self) -> Vec<u32> {
        self.entries
            .iter()
            .filter_map(|undo| match undo {
                Undo::DeleteLink { index } => Some(*index),
                _ => None,
            })
            .collect()
    }
}

/// Applies plans in one pod namespace.
pub struct Executor<'a> {
    handles: &'a Handles,
    netns: &'a NetnsFile,
    fault_at: Option<usize>,
}

fn sandbox_handle(handles: &Handles) -> &Handle {
    handles
        .sandbox
        .as_ref()
        .expect("the executor is built only with a sandbox handle")
}

impl<'a> Executor<'a> {
    /// An executor for the pod namespace `netns`; `handles` must include a
    /// socket opened in it.
    pub fn new(handles: &'a Handles, netns: &'a NetnsFile) -> Self {
        let fault_at = std::env::var(FAULT_ENV)
            .ok()
            .and_then(|value| value.parse().ok());
        Executor {
            handles,
            netns,
            fault_at,
        }
    }

    fn sandbox(&self) -> &Handle {
        sandbox_handle(self.handles)
    }

    /// Apply the plan's ops in order. On failure everything applied is
    /// undone in reverse before the error is returned; on success the
    /// journal is returned so the caller can still undo (a later attachment
    /// failed). Only a plan the policy checked can be applied.
    ///
    /// In a DEL plan ([`CheckedPlan::is_del`]) a setting op whose link is
    /// gone (a restore after the link was deleted, or the pod's batch
    /// delete taking it meanwhile) is done: DEL succeeds on what is
    /// already gone. Any other failure fails the plan as on ADD.
    pub fn apply(&self, plan: &CheckedPlan) -> Result<Journal, ApplyError> {
        let ops = plan.ops();
        let restoring = plan.is_del();
        let _span = crate::timing::span("netlink");
        let runtime = self.handles.runtime.clone();
        runtime.block_on(async {
            let mut journal = Journal::default();
            for (index, op) in ops.iter().enumerate() {
                if self.fault_at == Some(index) {
                    let undo_errors = self.undo_async(std::mem::take(&mut journal)).await;
                    return Err(ApplyError::Injected {
                        index,
                        op: op.to_string(),
                        undo_errors,
                    });
                }
                if let Err(reason) = self.apply_op(op, &mut journal, restoring).await {
                    tracing::warn!(index, op = %op, %reason, "op failed, undoing the plan");
                    let undo_errors = self.undo_async(std::mem::take(&mut journal)).await;
                    return Err(ApplyError::Op {
                        index,
                        op: op.to_string(),
                        reason,
                        undo_errors,
                    });
                }
            }
            Ok(journal)
        })
    }

    /// Undo a journal in reverse; returns the errors (it keeps going).
    pub fn undo(&self, journal: Journal) -> Vec<String> {
        let runtime = self.handles.runtime.clone();
        runtime.block_on(self.undo_async(journal))
    }

    async fn undo_async(&self, journal: Journal) -> Vec<String> {
        // Deleting a created link takes its addresses, routes and sysctls
        // with it: skip the undos that only act on such a link.
        let created = journal.created_links();
        let mut errors = Vec::new();
        for undo in journal.entries.into_iter().rev() {
            let on_created_link = match &undo {
                Undo::DeleteLink { .. } => false,
                Undo::RestoreSysctl { .. } => false,
                other => other.link().is_some_and(|index| created.contains(&index)),
            };
            let on_deleted_route = matches!(&undo, Undo::DeleteRoute { message }
                if route_oif(message).is_some_and(|index| created.contains(&index)));
            if on_created_link || on_deleted_route {
                continue;
            }
            if let Err(reason) = self.undo_one(&undo).await {
                errors.push(format!("{undo:?}: {reason}"));
            }
        }
        errors
    }

    async fn undo_one(&self, undo: &Undo) -> Result<(), String> {
        let handle = self.sandbox();
        let ignore_gone = |err: rtnetlink::Error| {
            if is_no_such_device(&err)
                || errno_of(&err).is_some_and(|errno| {
                    errno == libc_errno::ESRCH || errno == libc_errno::EADDRNOTAVAIL
                })
            {
                Ok(())
            } else {
                Err(err.to_string())
            }
        };
        match undo {
            Undo::DeleteLink { index } => handle
                .link()
                .del(*index)
                .execute()
                .await
                .or_else(ignore_gone),
            Undo::Rename { index, name } => handle
                .link()
                .set(
                    LinkUnspec::new_with_index(*index)
                        .name(name.clone())
                        .build(),
                )
                .execute()
                .await
                .or_else(ignore_gone),
            Undo::SetDown { index } => handle
                .link()
                .set(LinkUnspec::new_with_index(*index).down().build())
                .execute()
                .await
                .or_else(ignore_gone),
            Undo::SetUp { index } => handle
                .link()
                .set(LinkUnspec::new_with_index(*index).up().build())
                .execute()
                .await
                .or_else(ignore_gone),
            Undo::SetPromisc { index, on } => handle
                .link()
                .set(LinkUnspec::new_with_index(*index).promiscuous(*on).build())
                .execute()
                .await
                .or_else(ignore_gone),
            Undo::SetAllmulti { index, on } => handle
                .link()
                .set(LinkUnspec::new_with_index(*index).allmulticast(*on).build())
                .execute()
                .await
                .or_else(ignore_gone),
            Undo::SetTxQueueLen { index, len } => handle
                .link()
                .set(LinkUnspec::new_with_index(*index).txqueuelen(*len).build())
                .execute()
                .await
                .or_else(ignore_gone),
            Undo::SetMtu { index, mtu } => handle
                .link()
                .set(LinkUnspec::new_with_index(*index).mtu(*mtu).build())
                .execute()
                .await
                .or_else(ignore_gone),
            Undo::SetMac { index, mac } => handle
                .link()
                .set(
                    LinkUnspec::new_with_index(*index)
                        .address(mac.0.to_vec())
                        .build(),
                )
                .execute()
                .await
                .or_else(ignore_gone),
            Undo::DeleteAddress { message } => handle
                .address()
                .del(message.clone())
                .execute()
                .await
                .or_else(ignore_gone),
            Undo::DeleteRoute { message } => handle
                .route()
                .del(message.clone())
                .execute()
                .await
                .or_else(ignore_gone),
            Undo::RestoreRoute { message } => match add_route(handle, message.clone()).await {
                Err(err) if errno_of(&err) == Some(libc_errno::EEXIST) => Ok(()),
                other => other.or_else(ignore_gone),
            },
            Undo::RestoreSysctl { key, value } => {
                write_sysctl(self.handles, key, value, true).map(|_| ())
            }
        }
    }

    async fn index_of(&self, name: &str) -> Result<u32, String> {
        match query::link_by_name(self.sandbox(), name).await {
            Ok(Some(link)) => Ok(link.index),
            Ok(None) => Err(format!("link {name} not found in the pod")),
            Err(err) => Err(format!("looking up {name}: {err}")),
        }
    }

    /// The link a setting op names, as it is now; `None` when it is gone
    /// and `restoring` (a DEL plan), an error when it is gone otherwise.
    async fn current(&self, link: &str, restoring: bool) -> Result<Option<LinkInfo>, String> {
        match query::link_by_name(self.sandbox(), link).await {
            Ok(Some(found)) => Ok(Some(found)),
            Ok(None) if restoring => {
                tracing::info!(link, "link gone: nothing to restore");
                Ok(None)
            }
            Ok(None) => Err(format!("link {link} not found in the pod")),
            Err(err) => Err(format!("looking up {link}: {err}")),
        }
    }

    /// Set one link attribute with RTM_SETLINK; when `restoring`, a link
    /// that vanished meanwhile is not an error.
    async fn set_link(
        &self,
        message: LinkMessage,
        restoring: bool,
        what: impl FnOnce(rtnetlink::Error) -> String,
    ) -> Result<bool, String> {
        match self.sandbox().link().set(message).execute().await {
            Ok(()) => Ok(true),
            Err(err) if restoring && is_no_such_device(&err) => Ok(false),
            Err(err) => Err(what(err)),
        }
    }

    async fn apply_op(
        &self,
        op: &Op,
        journal: &mut Journal,
        restoring: bool,
    ) -> Result<(), String> {
        let handle = self.sandbox();
        match op {
            Op::SetLinkDown { link } => {
                let Some(current) = self.current(link, restoring).await? else {
                    return Ok(());
                };
                let message = LinkUnspec::new_with_index(current.index).down().build();
                let set = self
                    .set_link(message, restoring, |err| {
                        format!("failed to set {link} down: {err}")
                    })
                    .await?;
                if set && current.up {
                    journal.entries.push(Undo::SetUp {
                        index: current.index,
                    });
                }
                Ok(())
            }
            Op::SetPromisc { link, on } => {
                let Some(current) = self.current(link, restoring).await? else {
                    return Ok(());
                };
                let message = LinkUnspec::new_with_index(current.index)
                    .promiscuous(*on)
                    .build();
                let set = self
                    .set_link(message, restoring, |err| {
                        format!("failed to set promisc {} on {link}: {err}", on_off(*on))
                    })
                    .await?;
                if set && current.promisc != *on {
                    journal.entries.push(Undo::SetPromisc {
                        index: current.index,
                        on: current.promisc,
                    });
                }
                Ok(())
            }
            Op::SetAllmulti { link, on } => {
                let Some(current) = self.current(link, restoring).await? else {
                    return Ok(());
                };
                let message = LinkUnspec::new_with_index(current.index)
                    .allmulticast(*on)
                    .build();
                let set = self
                    .set_link(message, restoring, |err| {
                        format!(
                            "failed to set allmulticast {} on {link}: {err}",
                            on_off(*on)
                        )
                    })
                    .await?;
                if set && current.allmulti != *on {
                    journal.entries.push(Undo::SetAllmulti {
                        index: current.index,
                        on: current.allmulti,
                    });
                }
                Ok(())
            }
            Op::SetTxQueueLen { link, len } => {
                let Some(current) = self.current(link, restoring).await? else {
                    return Ok(());
                };
                let message = LinkUnspec::new_with_index(current.index)
                    .txqueuelen(*len)
                    .build();
                let set = self
                    .set_link(message, restoring, |err| {
                        format!("failed to set the transmit queue length of {link} to {len}: {err}")
                    })
                    .await?;
                if set && current.txqueuelen != *len {
                    journal.entries.push(Undo::SetTxQueueLen {
                        index: current.index,
                        len: current.txqueuelen,
                    });
                }
                Ok(())
            }
            Op::CreateMacvlan(create) => self.create_macvlan(create, journal).await,
            Op::RenameLink { name, new_name } => {
                let index = self.index_of(name).await?;
                handle
                    .link()
                    .set(
                        LinkUnspec::new_with_index(index)
                            .name(new_name.clone())
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(|err| {
                        if errno_of(&err) == Some(libc_errno::EEXIST) {
                            format!("failed to rename {name} to {new_name:?}: file exists")
                        } else {
                            format!("failed to rename {name} to {new_name:?}: {err}")
                        }
                    })?;
                journal.entries.push(Undo::Rename {
                    index,
                    name: name.clone(),
                });
                Ok(())
            }
            Op::SetLinkUp { link } => {
                let Some(current) = self.current(link, restoring).await? else {
                    return Ok(());
                };
                let message = LinkUnspec::new_with_index(current.index).up().build();
                let set = self
                    .set_link(message, restoring, |err| {
                        format!("failed to set {link} up: {err}")
                    })
                    .await?;
                if set && !current.up {
                    journal.entries.push(Undo::SetDown {
                        index: current.index,
                    });
                }
                Ok(())
            }
            Op::SetMtu { link, mtu } => {
                let Some(current) = self.current(link, restoring).await? else {
                    return Ok(());
                };
                let message = LinkUnspec::new_with_index(current.index).mtu(*mtu).build();
                let set = self
                    .set_link(message, restoring, |err| {
                        format!("failed to set the MTU of {link} to {mtu}: {err}")
                    })
                    .await?;
                if set {
                    journal.entries.push(Undo::SetMtu {
                        index: current.index,
                        mtu: current.mtu,
                    });
                }
                Ok(())
            }
            Op::SetMac { link, mac } => {
                let Some(current) = self.current(link, restoring).await? else {
                    return Ok(());
                };
                let message = LinkUnspec::new_with_index(current.index)
                    .address(mac.0.to_vec())
                    .build();
                let set = self
                    .set_link(message, restoring, |err| {
                        format!("failed to set the MAC of {link} to {mac}: {err}")
                    })
                    .await?;
                if set && let Some(previous) = current.mac {
                    journal.entries.push(Undo::SetMac {
                        index: current.index,
                        mac: previous,
                    });
                }
                Ok(())
            }
            Op::AddAddress { link, address } => {
                let index = self.index_of(link).await?;
                let request = handle
                    .address()
                    .add(index, address.addr(), address.prefix_len());
                let message = address_message(index, *address);
                request
                    .execute()
                    .await
                    .map_err(|err| format!("failed to add IP addr {address} to {link:?}: {err}"))?;
                journal.entries.push(Undo::DeleteAddress { message });
                Ok(())
            }
            Op::AddRoute(route) => {
                let index = self.index_of(&route.link).await?;
                let message = route_message(route, index);
                add_route(handle, message.clone()).await.map_err(|err| {
                    format!("failed to add route '{}': {err}", describe_route(route))
                })?;
                journal.entries.push(Undo::DeleteRoute { message });
                Ok(())
            }
            Op::SetSysctl { key, value } => {
                if restoring
                    && let Some(link) = crate::plan::policy::sysctl_interface(key)
                    && self.current(link, restoring).await?.is_none()
                {
                    return Ok(());
                }
                let Some(previous) = write_sysctl(self.handles, key, value, restoring)? else {
                    tracing::info!(key, "sysctl gone with its link: nothing to restore");
                    return Ok(());
                };
                journal.entries.push(Undo::RestoreSysctl {
                    key: key.clone(),
                    value: previous,
                });
                Ok(())
            }
            Op::DeleteLink { link } => match query::link_by_name(handle, link).await {
                Ok(Some(found)) => handle
                    .link()
                    .del(found.index)
                    .execute()
                    .await
                    .or_else(|err| {
                        if is_no_such_device(&err) {
                            Ok(())
                        } else {
                            Err(format!("failed to delete {link}: {err}"))
                        }
                    }),
                Ok(None) => Ok(()),
                Err(err) => Err(format!("looking up {link}: {err}")),
            },
            Op::RemoveDefaultRoutes { link, family } => {
                let Some(found) = query::link_by_name(handle, link)
                    .await
                    .map_err(|err| format!("looking up {link}: {err}"))?
                else {
                    return Ok(());
                };
                for message in query::default_routes_via(handle, *family, found.index)
                    .await
                    .map_err(|err| format!("listing the default routes of {link}: {err}"))?
                {
                    handle
                        .route()
                        .del(message.clone())
                        .execute()
                        .await
                        .map_err(|err| format!("deleting a default route of {link}: {err}"))?;
                    journal.entries.push(Undo::RestoreRoute { message });
                }
                Ok(())
            }
        }
    }

    async fn create_macvlan(
        &self,
        create: &CreateMacvlan,
        journal: &mut Journal,
    ) -> Result<(), String> {
        let master_handle = if create.master_in_sandbox {
            self.sandbox()
        } else {
            &self.handles.host
        };
        let master = query::link_by_name(master_handle, &create.master)
            .await
            .map_err(|err| format!("failed to lookup master {:?}: {err}", create.master))?
            .ok_or_else(|| {
                format!(
                    "failed to lookup master {:?}: Link not found",
                    create.master
                )
            })?;
        let mut builder = LinkMacVlan::new(&create.name, master.index, nl_mode(create.mode))
            .append_extra_attribute(LinkAttribute::Group(WASM_LINK_GROUP));
        if let Some(mtu) = create.mtu.filter(|mtu| *mtu > 0) {
            builder = builder.mtu(mtu);
        }
        if let Some(mac) = create.mac {
            builder = builder.address(mac.0.to_vec());
        }
        let creator = if create.master_in_sandbox {
            self.sandbox()
        } else {
            builder = builder.setns_by_fd(self.netns.raw_fd());
            &self.handles.host
        };
        creator
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(|err| {
                if errno_of(&err) == Some(libc_errno::EEXIST) {
                    format!("failed to create macvlan {}: file exists", create.name)
                } else {
                    format!("failed to create macvlan {}: {err}", create.name)
                }
            })?;
        let index = self.index_of(&create.name).await?;
        journal.entries.push(Undo::DeleteLink { index });
        Ok(())
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

fn nl_mode(mode: MacvlanMode) -> NlMacVlanMode {
    match mode {
        MacvlanMode::Bridge => NlMacVlanMode::Bridge,
        MacvlanMode::Private => NlMacVlanMode::Private,
        MacvlanMode::Vepa => NlMacVlanMode::Vepa,
        MacvlanMode::Passthru => NlMacVlanMode::Passthrough,
        MacvlanMode::Source => NlMacVlanMode::Source,
    }
}

fn address_message(index: u32, address: IpNet) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.index = index;
    message.header.prefix_len = address.prefix_len();
    message.header.family = match address {
        IpNet::V4(_) => rtnetlink::packet_route::AddressFamily::Inet,
        IpNet::V6(_) => rtnetlink::packet_route::AddressFamily::Inet6,
    };
    message
        .attributes
        .push(AddressAttribute::Address(address.addr()));
    if let IpNet::V4(_) = address {
        message
            .attributes
            .push(AddressAttribute::Local(address.addr()));
    }
    message
}

fn route_scope(scope: RouteScope) -> NlRouteScope {
    match scope {
        RouteScope::Universe => NlRouteScope::Universe,
        RouteScope::Site => NlRouteScope::Site,
        RouteScope::Link => NlRouteScope::Link,
        RouteScope::Host => NlRouteScope::Host,
    }
}

/// The route as the reference installs it: main table unless given,
/// protocol boot, the gateway when there is one (else a device route).
fn route_message(route: &AddRoute, index: u32) -> RouteMessage {
    let mut message = match (route.dst, route.gateway) {
        (IpNet::V4(dst), gateway) => {
            let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst.network(), dst.prefix_len())
                .output_interface(index);
            if let Some(IpAddr::V4(gateway)) = gateway {
                builder = builder.gateway(gateway);
            }
            builder.build()
        }
        (IpNet::V6(dst), gateway) => {
            let mut builder = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(dst.network(), dst.prefix_len())
                .output_interface(index);
            if let Some(IpAddr::V6(gateway)) = gateway {
                builder = builder.gateway(gateway);
            }
            builder.build()
        }
    };
    message.header.protocol = RouteProtocol::Boot;
    if let Some(scope) = route.scope {
        message.header.scope = route_scope(scope);
    }
    if let Some(metric) = route.metric {
        message
            .attributes
            .push(rtnetlink::packet_route::route::RouteAttribute::Priority(
                metric,
            ));
    }
    if let Some(table) = route.table {
        if table < 256 {
            message.header.table = table as u8;
        } else {
            message.header.table = 252; // RT_TABLE_COMPAT: the attribute carries it
        }
        message
            .attributes
            .push(rtnetlink::packet_route::route::RouteAttribute::Table(table));
    }
    message
}

/// RTM_NEWROUTE with `NLM_F_CREATE` and without `NLM_F_EXCL`, as the
/// reference plugins add routes: a route to a destination that already has
/// one (the cluster network's default route) is added beside it instead of
/// failing with EEXIST.
async fn add_route(handle: &Handle, message: RouteMessage) -> Result<(), rtnetlink::Error> {
    use futures::StreamExt;
    use rtnetlink::packet_core::{
        NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
    };
    use rtnetlink::packet_route::RouteNetlinkMessage;
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::NewRoute(message));
    request.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
    let mut handle = handle.clone();
    let mut responses = handle.request(request)?;
    while let Some(response) = responses.next().await {
        if let NetlinkPayload::Error(err) = response.payload {
            return Err(rtnetlink::Error::NetlinkError(err));
        }
    }
    Ok(())
}

fn route_oif(message: &RouteMessage) -> Option<u32> {
    message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            rtnetlink::packet_route::route::RouteAttribute::Oif(index) => Some(*index),
            _ => None,
        })
}

fn describe_route(route: &AddRoute) -> String {
    let mut text = route.dst.to_string();
    if let Some(gateway) = route.gateway {
        text.push_str(&format!(" via {gateway}"));
    }
    text.push_str(&format!(" dev {}", route.link));
    if let Some(metric) = route.metric {
        text.push_str(&format!(" metric {metric}"));
    }
    text
}

/// Write `/proc/sys/<key>` as seen from the pod namespace (on its netns
/// thread); returns the previous value, or `None` when the key does not
/// exist and `missing_ok` (its link is gone). The key was checked by the
/// policy (no `..`, fixed shape).
pub fn write_sysctl(
    handles: &Handles,
    key: &str,
    value: &str,
    missing_ok: bool,
) -> Result<Option<String>, String> {
    let thread = handles
        .netns_thread
        .as_ref()
        .ok_or_else(|| "no pod namespace to write sysctls in".to_string())?;
    let path = format!("/proc/sys/{key}");
    let value = value.to_string();
    let gone = move |err: &std::io::Error| missing_ok && err.kind() == std::io::ErrorKind::NotFound;
    thread.run(move || {
        let previous = match std::fs::read_to_string(&path) {
            Ok(previous) => previous,
            Err(err) if gone(&err) => return Ok(None),
            Err(err) => return Err(format!("failed to read {path}: {err}")),
        };
        match std::fs::write(&path, &value) {
            Ok(()) => Ok(Some(previous.trim_end_matches('\n').to_string())),
            Err(err) if gone(&err) => Ok(None),
            Err(err) => Err(format!("failed to write {value:?} to {path}: {err}")),
        }
    })?
}

/// A batch delete of the pod's wasm-created links, running on the pod's
/// netns thread while the caller goes on (the kernel spends most of it
/// waiting for an RCU grace period).
pub struct PendingGroupDelete {
    receiver: std::sync::mpsc::Receiver<Result<bool, String>>,
}

impl PendingGroupDelete {
    /// Whether there were links to delete, once the kernel has answered.
    pub fn wait(self) -> Result<bool, String> {
        let _span = crate::timing::span("netlink");
        self.receiver
            .recv()
            .unwrap_or_else(|_| Err("the netns thread died".into()))
    }
}

/// Start deleting every link of [`WASM_LINK_GROUP`] in the pod with one
/// RTM_DELLINK (the kernel tears them down in one batch); `None` when there
/// is no pod namespace.
pub fn start_link_group_delete(handles: &Handles) -> Option<Result<PendingGroupDelete, String>> {
    let thread = handles.netns_thread.as_ref()?;
    Some(
        thread
            .submit(delete_link_group_here)
            .map(|receiver| PendingGroupDelete { receiver }),
    )
}

/// RTM_DELLINK for the group, on a blocking netlink socket created on the
/// calling thread (which is inside the pod's namespace).
fn delete_link_group_here() -> Result<bool, String> {
    use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
    use rtnetlink::packet_route::RouteNetlinkMessage;
    use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
    let failed = |what: &str, err: &dyn std::fmt::Display| format!("batch delete: {what}: {err}");
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(|err| failed("socket", &err))?;
    socket.bind_auto().map_err(|err| failed("bind", &err))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|err| failed("connect", &err))?;
    let mut link = LinkMessage::default();
    link.attributes.push(LinkAttribute::Group(WASM_LINK_GROUP));
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::DelLink(link));
    request.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    request.header.sequence_number = 1;
    request.finalize();
    let mut buffer = vec![0; request.buffer_len()];
    request.serialize(&mut buffer);
    socket
        .send(&buffer, 0)
        .map_err(|err| failed("send", &err))?;
    let (reply, _) = socket
        .recv_from_full()
        .map_err(|err| failed("receive", &err))?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
        .map_err(|err| failed("decode", &err))?;
    match reply.payload {
        NetlinkPayload::Error(error) => match error.code {
            None => Ok(true),
            Some(code) if -code.get() == libc_errno::ENODEV => Ok(false),
            Some(code) => Err(format!(
                "batch delete of the pod's wasm links: {}",
                std::io::Error::from_raw_os_error(-code.get())
            )),
        },
        other => Err(format!("batch delete: unexpected reply {other:?}")),
    }
}
