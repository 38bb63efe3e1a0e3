//! Read-only queries against the kernel: links, default routes, addresses
//! and routes, in the host or the pod namespace. They answer the guests'
//! `links` imports and the executor's lookups.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
    MacVlanMode as NlMacVlanMode,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::handles::Handles;
use crate::cni::Route;
use crate::plan::{IpFamily, LinkInfo, MacAddr, MacvlanMode, Netns};

const RT_TABLE_MAIN: u32 = 254;

/// A link by name; `None` when there is no such link.
pub async fn link_by_name(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkInfo>, rtnetlink::Error> {
    Ok(link_message_by_name(handle, name)
        .await?
        .map(|message| link_info(&message)))
}

async fn link_message_by_name(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(message)) => Ok(Some(message)),
        Ok(None) => Ok(None),
        Err(err) if is_no_such_device(&err) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The index of a link's lower device (`IFLA_LINK`, a macvlan's master) or
/// else its master (`IFLA_MASTER`), and whether that index is in another
/// namespace (`IFLA_LINK_NETNSID`).
fn lower_of(message: &LinkMessage) -> Option<(u32, bool)> {
    let mut lower = None;
    let mut controller = None;
    let mut other_netns = false;
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::Link(index) if *index != 0 && *index != message.header.index => {
                lower = Some(*index)
            }
            LinkAttribute::Controller(index) if *index != 0 => controller = Some(*index),
            LinkAttribute::LinkNetNsId(_) => other_netns = true,
            _ => {}
        }
    }
    match (lower, controller) {
        (Some(index), _) => Some((index, other_netns)),
        (None, Some(index)) => Some((index, false)),
        (None, None) => None,
    }
}

/// A link by index; `None` when there is no such link.
pub async fn link_by_index(
    handle: &Handle,
    index: u32,
) -> Result<Option<LinkInfo>, rtnetlink::Error> {
    let mut links = handle.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(Some(message)) => Ok(Some(link_info(&message))),
        Ok(None) => Ok(None),
        Err(err) if is_no_such_device(&err) => Ok(None),
        Err(err) => Err(err),
    }
}

/// ENODEV, or the kernel's other ways of saying the link is not there.
pub fn is_no_such_device(err: &rtnetlink::Error) -> bool {
    errno_of(err).is_some_and(|errno| errno == libc_errno::ENODEV || errno == libc_errno::ENOENT)
}

/// The positive errno of a kernel error reply.
pub fn errno_of(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(message) => message.code.map(|code| -code.get()),
        _ => None,
    }
}

pub mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const ESRCH: i32 = 3;
    pub const ENODEV: i32 = 19;
    pub const EEXIST: i32 = 17;
    pub const EADDRNOTAVAIL: i32 = 99;
}

fn link_info(message: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        name: String::new(),
        index: message.header.index,
        mtu: 0,
        mac: None,
        kind: String::new(),
        up: message.header.flags.contains(LinkFlags::Up),
        macvlan_mode: None,
        promisc: message.header.flags.contains(LinkFlags::Promisc),
        allmulti: message.header.flags.contains(LinkFlags::Allmulti),
        txqueuelen: 0,
        master: None,
        master_mtu: None,
        peer_in_other_netns: false,
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => info.name = name.clone(),
            LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
            LinkAttribute::TxQueueLen(len) => info.txqueuelen = *len,
            LinkAttribute::LinkNetNsId(_) => info.peer_in_other_netns = true,
            LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(bytes);
                info.mac = Some(MacAddr(mac));
            }
            LinkAttribute::LinkInfo(infos) => {
                for item in infos {
                    match item {
                        NlLinkInfo::Kind(kind) => info.kind = kind_name(kind),
                        NlLinkInfo::Data(InfoData::MacVlan(data)) => {
                            for entry in data {
                                if let InfoMacVlan::Mode(mode) = entry {
                                    info.macvlan_mode = macvlan_mode(*mode);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    info
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::MacVlan => "macvlan".into(),
        InfoKind::MacVtap => "macvtap".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Dummy => "dummy".into(),
        InfoKind::IpVlan => "ipvlan".into(),
        InfoKind::Vlan => "vlan".into(),
        InfoKind::Vxlan => "vxlan".into(),
        InfoKind::Other(name) => name.clone(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn macvlan_mode(mode: NlMacVlanMode) -> Option<MacvlanMode> {
    match mode {
        NlMacVlanMode::Bridge => Some(MacvlanMode::Bridge),
        NlMacVlanMode::Private => Some(MacvlanMode::Private),
        NlMacVlanMode::Vepa => Some(MacvlanMode::Vepa),
        NlMacVlanMode::Passthrough => Some(MacvlanMode::Passthru),
        NlMacVlanMode::Source => Some(MacvlanMode::Source),
        _ => None,
    }
}

/// Every route of `family` in the kernel's main table.
async fn main_table_routes(
    handle: &Handle,
    family: IpFamily,
) -> Result<Vec<RouteMessage>, rtnetlink::Error> {
    let query = match family {
        IpFamily::V4 => RouteMessageBuilder::<Ipv4Addr>::new().build(),
        IpFamily::V6 => RouteMessageBuilder::<Ipv6Addr>::new().build(),
    };
    let routes: Vec<RouteMessage> = handle.route().get(query).execute().try_collect().await?;
    Ok(routes
        .into_iter()
        .filter(|route| route_table(route) == RT_TABLE_MAIN)
        .collect())
}

fn route_table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(route.header.table as u32)
}

fn route_address(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn route_oif(route: &RouteMessage) -> Option<u32> {
    route
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Oif(index) => Some(*index),
            _ => None,
        })
}

/// The link of the first default route of `family` (main table).
pub async fn default_route_link(
    handle: &Handle,
    family: IpFamily,
) -> Result<Option<LinkInfo>, rtnetlink::Error> {
    for route in main_table_routes(handle, family).await? {
        if route.header.destination_prefix_length != 0 {
            continue;
        }
        if let Some(index) = route_oif(&route) {
            return link_by_index(handle, index).await;
        }
    }
    Ok(None)
}

/// The main-table default routes of `family` whose output link is `index`.
pub async fn default_routes_via(
    handle: &Handle,
    family: IpFamily,
    index: u32,
) -> Result<Vec<RouteMessage>, rtnetlink::Error> {
    Ok(main_table_routes(handle, family)
        .await?
        .into_iter()
        .filter(|route| {
            route.header.destination_prefix_length == 0 && route_oif(route) == Some(index)
        })
        .collect())
}

/// A link of the pod by name (`None` without a pod namespace or link).
pub fn pod_link(handles: &Handles, name: &str) -> Result<Option<LinkInfo>, String> {
    let Some(handle) = handles.sandbox.as_ref() else {
        return Ok(None);
    };
    let _span = crate::timing::span("netlink");
    handles
        .runtime
        .block_on(link_by_name(handle, name))
        .map_err(|err| format!("looking up {name} in the pod: {err}"))
}

/// A link of the host namespace by name.
pub fn host_link(handles: &Handles, name: &str) -> Result<Option<LinkInfo>, String> {
    handles
        .runtime
        .block_on(link_by_name(&handles.host, name))
        .map_err(|err| format!("looking up {name} in the host namespace: {err}"))
}

/// Addresses (with prefix length) on the link `name`.
pub async fn addresses(handle: &Handle, name: &str) -> Result<Vec<IpNet>, rtnetlink::Error> {
    let Some(link) = link_by_name(handle, name).await? else {
        return Ok(Vec::new());
    };
    let messages: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(link.index)
        .execute()
        .try_collect()
        .await?;
    let mut result = Vec::new();
    for message in messages {
        if message.header.index != link.index {
            continue;
        }
        let local = message
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
        let address = local.or_else(|| {
            message
                .attributes
                .iter()
                .find_map(|attribute| match attribute {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
        });
        if let Some(ip) = address
            && let Ok(net) = IpNet::new(ip, message.header.prefix_len)
        {
            result.push(net);
        }
    }
    Ok(result)
}

/// Routes through the link `name` in the main table, both families.
pub async fn routes(handle: &Handle, name: &str) -> Result<Vec<Route>, rtnetlink::Error> {
    let Some(link) = link_by_name(handle, name).await? else {
        return Ok(Vec::new());
    };
    let mut result = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        for route in main_table_routes(handle, family).await? {
            if route_oif(&route) != Some(link.index) {
                continue;
            }
            let destination = route
                .attributes
                .iter()
                .find_map(|attribute| match attribute {
                    RouteAttribute::Destination(address) => route_address(address),
                    _ => None,
                });
            let destination = destination.unwrap_or(match family {
                IpFamily::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpFamily::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            });
            let Ok(dst) = IpNet::new(destination, route.header.destination_prefix_length) else {
                continue;
            };
            let gw = route
                .attributes
                .iter()
                .find_map(|attribute| match attribute {
                    RouteAttribute::Gateway(address) => route_address(address),
                    _ => None,
                });
            let priority = route
                .attributes
                .iter()
                .find_map(|attribute| match attribute {
                    RouteAttribute::Priority(priority) => Some(*priority),
                    _ => None,
                });
            result.push(Route {
                dst,
                gw,
                mtu: None,
                advmss: None,
                priority,
                table: None,
                scope: None,
            });
        }
    }
    Ok(result)
}

/// Read-only link queries a guest may make, answered by the host.
pub trait LinkQueries: Send {
    fn get_link(&mut self, netns: Netns, name: &str) -> Option<LinkInfo>;
    fn default_route_link(&mut self, netns: Netns, family: IpFamily) -> Option<LinkInfo>;
    fn addresses(&mut self, netns: Netns, name: &str) -> Vec<IpNet>;
    fn routes(&mut self, netns: Netns, name: &str) -> Vec<Route>;
    /// `/proc/sys/<key>` as the pod sees it, trailing newline removed;
    /// `Ok(None)` when it does not exist. The caller checked the key's
    /// shape (`policy::check_sysctl_read`).
    fn read_sysctl(&mut self, key: &str) -> Result<Option<String>, String>;
}

/// Answers every query with "nothing there" (no netns to look into).
#[derive(Debug, Default)]
pub struct NoLinks;

impl LinkQueries for NoLinks {
    fn get_link(&mut self, _: Netns, _: &str) -> Option<LinkInfo> {
        None
    }
    fn default_route_link(&mut self, _: Netns, _: IpFamily) -> Option<LinkInfo> {
        None
    }
    fn addresses(&mut self, _: Netns, _: &str) -> Vec<IpNet> {
        Vec::new()
    }
    fn routes(&mut self, _: Netns, _: &str) -> Vec<Route> {
        Vec::new()
    }
    fn read_sysctl(&mut self, _: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
}

/// Link queries against the kernel, for guests: the host namespace and,
/// when there is one, the pod's. Errors read as "nothing there" to the guest
/// and are logged.
pub struct KernelLinks {
    handles: Handles,
}

impl KernelLinks {
    pub fn new(handles: Handles) -> Self {
        KernelLinks { handles }
    }

    fn handle(&self, netns: Netns) -> Option<&Handle> {
        match netns {
            Netns::Host => Some(&self.handles.host),
            Netns::Sandbox => self.handles.sandbox.as_ref(),
        }
    }

    fn run<T: Default>(
        &self,
        netns: Netns,
        what: &str,
        query: impl AsyncFnOnce(&Handle) -> Result<T, rtnetlink::Error>,
    ) -> T {
        let Some(handle) = self.handle(netns) else {
            return T::default();
        };
        match self.handles.runtime.block_on(query(handle)) {
            Ok(value) => value,
            Err(err) => {
                tracing::warn!(?netns, query = what, error = %err, "link query failed");
                T::default()
            }
        }
    }
}

impl LinkQueries for KernelLinks {
    fn get_link(&mut self, netns: Netns, name: &str) -> Option<LinkInfo> {
        let host = self.handles.host.clone();
        self.run(netns, "get-link", async |handle| {
            let Some(message) = link_message_by_name(handle, name).await? else {
                return Ok(None);
            };
            let mut info = link_info(&message);
            // The master: in this namespace, or (a pod's macvlan on a node
            // interface) in the host's, where every plan's master is.
            if let Some((index, other_netns)) = lower_of(&message) {
                let lookup = if other_netns { &host } else { handle };
                if let Some(master) = link_by_index(lookup, index).await? {
                    info.master = Some(master.name);
                    info.master_mtu = Some(master.mtu);
                }
            }
            Ok(Some(info))
        })
    }

    fn default_route_link(&mut self, netns: Netns, family: IpFamily) -> Option<LinkInfo> {
        self.run(netns, "default-route-link", async |handle| {
            default_route_link(handle, family).await
        })
    }

    fn addresses(&mut self, netns: Netns, name: &str) -> Vec<IpNet> {
        self.run(netns, "addresses", async |handle| {
            addresses(handle, name).await
        })
    }

    fn routes(&mut self, netns: Netns, name: &str) -> Vec<Route> {
        self.run(netns, "routes", async |handle| routes(handle, name).await)
    }

    fn read_sysctl(&mut self, key: &str) -> Result<Option<String>, String> {
        read_sysctl(&self.handles, key)
    }
}

/// Most bytes of a sysctl a guest may read.
const MAX_SYSCTL_BYTES: u64 = 4096;

/// Read `/proc/sys/<key>` on the pod's netns thread (`/proc/sys/net`
/// resolves against the reader's namespace): no-follow, non-blocking,
/// bounded. `key` must be relative, without `..` or empty parts.
pub fn read_sysctl(handles: &Handles, key: &str) -> Result<Option<String>, String> {
    if key.starts_with('/') || key.split('/').any(|part| part.is_empty() || part == "..") {
        return Err(format!("sysctl key {key:?} is not a plain relative path"));
    }
    let thread = handles
        .netns_thread
        .as_ref()
        .ok_or_else(|| "no pod namespace to read sysctls in".to_string())?;
    let path = format!("/proc/sys/{key}");
    thread.run(move || {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
            )
            .open(&path);
        let file = match file {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(format!("failed to open {path}: {err}")),
        };
        let mut text = String::new();
        file.take(MAX_SYSCTL_BYTES)
            .read_to_string(&mut text)
            .map_err(|err| format!("failed to read {path}: {err}"))?;
        Ok(Some(text.trim_end_matches('\n').to_string()))
    })?
}

/// The link queries a guest gets: the pod's namespace in full, the host
/// namespace only for links the operator's master rules allow (others read
/// as missing, and the refusal is recorded so the host can report why the
/// plugin did not find its master). Host addresses and routes are never
/// shown.
pub struct GuestLinks {
    inner: KernelLinks,
    allowed_masters: Option<Vec<String>>,
    refusals: super::Refusals,
}

impl GuestLinks {
    /// Queries through `handles`, host links limited by `allowed_masters`
    /// (the host config's `allowedMasters`); refusals are pushed to
    /// `refusals`.
    pub fn new(
        handles: Handles,
        allowed_masters: Option<Vec<String>>,
        refusals: super::Refusals,
    ) -> Self {
        GuestLinks {
            inner: KernelLinks::new(handles),
            allowed_masters,
            refusals,
        }
    }

    /// A pod link's master, shown only when it is a pod link or a host
    /// link the guest may see.
    fn screen_master(&mut self, mut link: LinkInfo) -> LinkInfo {
        if link.peer_in_other_netns
            && let Some(master) = link.master.clone()
        {
            let modes = std::collections::BTreeMap::new();
            let rules = crate::plan::policy::MasterRules {
                allowed_masters: self.allowed_masters.as_deref(),
                macvlan_modes: &modes,
            };
            let host = self.inner.get_link(Netns::Host, &master);
            if rules.check_host_master(&master, host.as_ref()).is_err() {
                link.master = None;
                link.master_mtu = None;
            }
        }
        link
    }

    fn screen(&mut self, link: Option<LinkInfo>, asked: &str) -> Option<LinkInfo> {
        let link = link?;
        let modes = std::collections::BTreeMap::new();
        let rules = crate::plan::policy::MasterRules {
            allowed_masters: self.allowed_masters.as_deref(),
            macvlan_modes: &modes,
        };
        match rules.check_host_master(&link.name, Some(&link)) {
            Ok(()) => Some(link),
            Err(reason) => {
                tracing::debug!(query = asked, link = %link.name, "host link hidden from the plugin");
                if let Ok(mut refusals) = self.refusals.lock() {
                    refusals.push(reason);
                }
                None
            }
        }
    }
}

impl LinkQueries for GuestLinks {
    fn get_link(&mut self, netns: Netns, name: &str) -> Option<LinkInfo> {
        let link = self.inner.get_link(netns, name);
        match netns {
            Netns::Sandbox => link.map(|link| self.screen_master(link)),
            Netns::Host => self.screen(link, "get-link"),
        }
    }

    fn default_route_link(&mut self, netns: Netns, family: IpFamily) -> Option<LinkInfo> {
        let link = self.inner.default_route_link(netns, family);
        match netns {
            Netns::Sandbox => link,
            Netns::Host => self.screen(link, "default-route-link"),
        }
    }

    fn addresses(&mut self, netns: Netns, name: &str) -> Vec<IpNet> {
        match netns {
            Netns::Sandbox => self.inner.addresses(netns, name),
            Netns::Host => Vec::new(),
        }
    }

    fn routes(&mut self, netns: Netns, name: &str) -> Vec<Route> {
        match netns {
            Netns::Sandbox => self.inner.routes(netns, name),
            Netns::Host => Vec::new(),
        }
    }

    fn read_sysctl(&mut self, key: &str) -> Result<Option<String>, String> {
        self.inner.read_sysctl(key)
    }
}
