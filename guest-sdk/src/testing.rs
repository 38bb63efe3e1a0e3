//! A mock host for unit-testing plugin logic natively (`cargo test`).
//!
//! [`MockHost`] answers a plugin's queries from an in-memory model of the
//! host's and the pod's links, and [`MockHost::apply`] runs a plan against
//! that model the way the host does: first the host's own policy (the same
//! code, from `multus-wasm-core`: a refusal is code 107 with the host's
//! message), then each op with the kernel's behaviour where it matters
//! (EEXIST, ENODEV, an MTU above the master's), rolling everything back
//! when one fails. Queries then see what the plan left, so a test can run
//! ADD, apply it, and CHECK or DEL against the result.
//!
//! ```ignore
//! let host = MockHost::new().with_link(Netns::Host, "ens3", 1500);
//! let request = testing::request(Command::Add, CONFIG);
//! let plan = MyMacvlan::handle(&host, request.clone()).unwrap();
//! host.apply(&request, &plan).unwrap();
//! assert_eq!(host.get_link(Netns::Sandbox, "net1").unwrap().mtu, 1500);
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

use multus_wasm_core::cni::CniCommand;
use multus_wasm_core::plan::policy::{self, MasterRules, PolicyContext};
use multus_wasm_core::plan::{self as core_plan, ApplyError, Op};

use crate::{
    Command, Dns, Host, IpFamily, IpamHost, Level, LinkInfo, MacvlanMode, NetlinkOp, Netns, Plan,
    PluginError, Request, Route, RouteScope,
};

/// The digest the mock host names in its messages, where the host names
/// the plugin's sha256.
pub const MOCK_DIGEST: &str = "mock";

/// A request as a runtime would send it: container `dummy`, netns
/// `/var/run/netns/test`, ifname `net1`, no CNI_ARGS.
pub fn request(command: Command, config: &str) -> Request {
    Request {
        command,
        container_id: "dummy".into(),
        netns: "/var/run/netns/test".into(),
        ifname: "net1".into(),
        args: Vec::new(),
        config: config.into(),
        prev_result: None,
        ipam_result: None,
        valid_attachments: Vec::new(),
        state: None,
    }
}

#[derive(Debug, Clone)]
struct MockLink {
    netns: Netns,
    info: LinkInfo,
    addresses: Vec<String>,
    routes: Vec<Route>,
    /// A host link: a veth whose peer is in another namespace (a pod's).
    peer_in_other_netns: bool,
}

/// The part of the model a plan changes (rolled back as a whole).
#[derive(Debug, Clone, Default)]
struct Model {
    links: Vec<MockLink>,
    sysctls: BTreeMap<String, String>,
    next_index: u32,
}

impl Model {
    /// A new link (up, MTU `mtu`, a MAC from its index), added to the model.
    fn add(&mut self, netns: Netns, name: &str, mtu: u32, kind: &str) -> &mut MockLink {
        let index = self.next_index;
        self.next_index += 1;
        self.links.push(MockLink {
            netns,
            info: LinkInfo {
                name: name.into(),
                index,
                mtu,
                mac: format!("02:00:00:00:00:{:02x}", index & 0xff),
                kind: kind.into(),
                up: true,
                macvlan_mode: None,
                promisc: false,
                allmulti: false,
                txqueuelen: 1000,
                master: None,
                master_mtu: None,
            },
            addresses: Vec::new(),
            routes: Vec::new(),
            peer_in_other_netns: false,
        });
        self.links.last_mut().expect("just pushed")
    }
}

/// Links, default routes, sysctls, a key/value store and resolv.conf
/// files, all in memory; every log line is recorded.
#[derive(Debug)]
pub struct MockHost {
    name: String,
    model: RefCell<Model>,
    default_routes: Vec<(Netns, IpFamily, String)>,
    resolv_confs: BTreeMap<String, Dns>,
    store: RefCell<BTreeMap<String, String>>,
    logs: RefCell<Vec<(Level, String)>>,
    allowed_masters: Option<Vec<String>>,
    macvlan_modes: BTreeMap<String, Vec<String>>,
    faults: RefCell<BTreeMap<usize, String>>,
    ifname: RefCell<String>,
}

impl Default for MockHost {
    fn default() -> Self {
        MockHost {
            name: "mock".into(),
            model: RefCell::new(Model {
                next_index: 2,
                ..Model::default()
            }),
            default_routes: Vec::new(),
            resolv_confs: BTreeMap::new(),
            store: RefCell::new(BTreeMap::new()),
            logs: RefCell::new(Vec::new()),
            allowed_masters: None,
            macvlan_modes: multus_wasm_core::config::default_macvlan_modes(),
            faults: RefCell::new(BTreeMap::new()),
            ifname: RefCell::new("net1".into()),
        }
    }
}

impl MockHost {
    /// An empty host; the operator's master rules are the host's defaults
    /// (ordinary node interfaces as masters, modes bridge, private, vepa).
    pub fn new() -> Self {
        Self::default()
    }

    /// The plugin name messages use (`plugin <name> (sha256 mock): ...`).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    /// Add a plain link (kind `veth` with its peer beside it, up) with a
    /// generated MAC.
    pub fn with_link(mut self, netns: Netns, name: &str, mtu: u32) -> Self {
        self.model.get_mut().add(netns, name, mtu, "veth");
        self
    }

    /// Add a host link of `kind` (`""` for a physical device, `bridge`,
    /// `vxlan`...), which the master rules judge by its kind.
    pub fn with_host_link(mut self, name: &str, kind: &str, mtu: u32) -> Self {
        self.model.get_mut().add(Netns::Host, name, mtu, kind);
        self
    }

    /// Add a host veth whose peer is in another namespace (a pod's end):
    /// not a master unless `allowedMasters` lists it.
    pub fn with_pod_veth(mut self, name: &str) -> Self {
        let link = self.model.get_mut().add(Netns::Host, name, 1500, "veth");
        link.peer_in_other_netns = true;
        self
    }

    /// Add a macvlan link with addresses and routes (for CHECK tests).
    pub fn with_macvlan(
        mut self,
        name: &str,
        mode: MacvlanMode,
        mac: &str,
        addresses: &[&str],
        routes: Vec<Route>,
    ) -> Self {
        let link = self
            .model
            .get_mut()
            .add(Netns::Sandbox, name, 1500, "macvlan");
        link.info.mac = mac.into();
        link.info.macvlan_mode = Some(mode);
        link.addresses = addresses.iter().map(|a| a.to_string()).collect();
        link.routes = routes;
        self
    }

    /// Make `name` the link of the default route of `family` in `netns`.
    pub fn with_default_route(mut self, netns: Netns, family: IpFamily, name: &str) -> Self {
        self.default_routes.push((netns, family, name.into()));
        self
    }

    /// Serve `dns` for the resolv.conf at `path`.
    pub fn with_resolv_conf(mut self, path: &str, dns: Dns) -> Self {
        self.resolv_confs.insert(path.into(), dns);
        self
    }

    /// Serve `value` for sysctl `key` (relative to /proc/sys).
    pub fn with_sysctl(mut self, key: &str, value: &str) -> Self {
        self.model
            .get_mut()
            .sysctls
            .insert(key.into(), value.into());
        self
    }

    /// The operator's `allowedMasters`.
    pub fn with_allowed_masters(mut self, masters: &[&str]) -> Self {
        self.allowed_masters = Some(masters.iter().map(|name| name.to_string()).collect());
        self
    }

    /// The operator's `allowedMacvlanModes` for `master` (`"*"`: the rest).
    pub fn with_macvlan_modes(mut self, master: &str, modes: &[&str]) -> Self {
        self.macvlan_modes.insert(
            master.into(),
            modes.iter().map(|mode| mode.to_string()).collect(),
        );
        self
    }

    /// The interface whose sysctls `read_sysctl` allows before any
    /// [`MockHost::apply`] sets it from a request (default `net1`).
    pub fn with_ifname(self, ifname: &str) -> Self {
        *self.ifname.borrow_mut() = ifname.into();
        self
    }

    /// Make op `index` of the next applied plans fail with `reason` (as the
    /// kernel would: `"invalid argument"`, `"no such file or directory"`).
    pub fn fail_op(&self, index: usize, reason: &str) {
        self.faults.borrow_mut().insert(index, reason.into());
    }

    /// Pre-populate the IPAM store.
    pub fn with_store_entry(self, key: &str, value: &str) -> Self {
        self.store.borrow_mut().insert(key.into(), value.into());
        self
    }

    /// The IPAM store's contents.
    pub fn store(&self) -> BTreeMap<String, String> {
        self.store.borrow().clone()
    }

    /// Every line logged so far.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.logs.borrow().clone()
    }

    /// A sysctl's value in the model, whatever the read rule.
    pub fn sysctl(&self, key: &str) -> Option<String> {
        self.model.borrow().sysctls.get(key).cloned()
    }

    /// Apply `plan`, returned by the plugin for `request`, as the host
    /// does: the host's policy first (a refusal is code 107 with the
    /// host's message, nothing applied), then each op on the model; when an
    /// op fails (the kernel's answer, or a [`MockHost::fail_op`]), the ops
    /// before it are undone and the error is the host's (code 999,
    /// `plugin <name> (sha256 mock): op N (...) failed: ...`). An op the
    /// host cannot parse (an address, a MAC) is code 106, as on the host.
    pub fn apply(&self, request: &Request, plan: &Plan) -> Result<(), PluginError> {
        *self.ifname.borrow_mut() = request.ifname.clone();
        let prefix = format!("plugin {} (sha256 {MOCK_DIGEST})", self.name);
        let ops = plan
            .ops
            .iter()
            .enumerate()
            .map(|(index, op)| {
                core_op(op).map_err(|reason| {
                    PluginError::new(
                        106,
                        format!("{prefix} returned an invalid plan: op {index}: {reason}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let host_links: BTreeMap<String, core_plan::LinkInfo> = policy::host_masters(&ops)
            .into_iter()
            .filter_map(|master| self.core_link(Netns::Host, master))
            .map(|link| (link.name.clone(), link))
            .collect();
        let context = PolicyContext {
            command: core_command(request.command),
            ifname: &request.ifname,
            masters: MasterRules {
                allowed_masters: self.allowed_masters.as_deref(),
                macvlan_modes: &self.macvlan_modes,
            },
            host_links: &host_links,
        };
        let checked =
            policy::check(core_plan::Plan::of_ops(ops), &context).map_err(|violation| {
                PluginError::new(policy::POLICY_CODE, format!("{prefix}: {violation}"))
            })?;
        let before = self.model.borrow().clone();
        for (index, op) in checked.ops().iter().enumerate() {
            let outcome = match self.faults.borrow().get(&index) {
                Some(reason) => Err(reason.clone()),
                None => self.apply_op(op, checked.is_del()),
            };
            if let Err(reason) = outcome {
                *self.model.borrow_mut() = before;
                let err = ApplyError::Op {
                    index,
                    op: op.to_string(),
                    reason,
                    undo_errors: Vec::new(),
                };
                return Err(PluginError::internal(format!("{prefix}: {err}")));
            }
        }
        Ok(())
    }

    fn find(&self, netns: Netns, name: &str) -> Option<MockLink> {
        self.model
            .borrow()
            .links
            .iter()
            .find(|link| link.netns == netns && link.info.name == name)
            .cloned()
    }

    /// A link as the host's policy sees it.
    fn core_link(&self, netns: Netns, name: &str) -> Option<core_plan::LinkInfo> {
        let link = self.find(netns, name)?;
        Some(core_plan::LinkInfo {
            name: link.info.name.clone(),
            index: link.info.index,
            mtu: link.info.mtu,
            mac: link.info.mac.parse().ok(),
            kind: link.info.kind.clone(),
            up: link.info.up,
            macvlan_mode: link.info.macvlan_mode.map(core_mode),
            promisc: link.info.promisc,
            allmulti: link.info.allmulti,
            txqueuelen: link.info.txqueuelen,
            master: link.info.master.clone(),
            master_mtu: link.info.master_mtu,
            peer_in_other_netns: link.peer_in_other_netns,
        })
    }

    /// One checked op on the model, with the kernel's answers.
    fn apply_op(&self, op: &Op, restoring: bool) -> Result<(), String> {
        let mut model = self.model.borrow_mut();
        let position = |model: &Model, name: &str| {
            model
                .links
                .iter()
                .position(|link| link.netns == Netns::Sandbox && link.info.name == name)
        };
        // The pod link a setting op names; in a DEL plan a missing one is
        // nothing to restore, as on the host.
        let setting = |model: &Model, name: &str| match position(model, name) {
            Some(at) => Ok(Some(at)),
            None if restoring => Ok(None),
            None => Err(format!("link {name} not found in the pod")),
        };
        match op {
            Op::CreateMacvlan(create) => {
                let master_ns = if create.master_in_sandbox {
                    Netns::Sandbox
                } else {
                    Netns::Host
                };
                let master = model
                    .links
                    .iter()
                    .find(|link| link.netns == master_ns && link.info.name == create.master)
                    .cloned()
                    .ok_or_else(|| format!("master {} not found: Link not found", create.master))?;
                if position(&model, &create.name).is_some() {
                    return Err("file exists".into());
                }
                let mtu = create.mtu.unwrap_or(master.info.mtu);
                if mtu > master.info.mtu {
                    return Err(format!(
                        "invalid argument (MTU {mtu} is above the master's {})",
                        master.info.mtu
                    ));
                }
                let link = model.add(Netns::Sandbox, &create.name, mtu, "macvlan");
                link.info.up = false;
                link.info.macvlan_mode = Some(sdk_mode(create.mode));
                if let Some(mac) = create.mac {
                    link.info.mac = mac.to_string();
                }
                link.info.master = Some(master.info.name);
                link.info.master_mtu = Some(master.info.mtu);
            }
            Op::RenameLink { name, new_name } => {
                let at = position(&model, name).ok_or("no such device")?;
                if position(&model, new_name).is_some() {
                    return Err(format!(
                        "failed to rename {name} to {new_name:?}: file exists"
                    ));
                }
                model.links[at].info.name = new_name.clone();
            }
            Op::SetLinkUp { link } => {
                if let Some(at) = setting(&model, link)? {
                    model.links[at].info.up = true;
                }
            }
            Op::SetLinkDown { link } => {
                if let Some(at) = setting(&model, link)? {
                    model.links[at].info.up = false;
                }
            }
            Op::SetMtu { link, mtu } => {
                if let Some(at) = setting(&model, link)? {
                    let info = &mut model.links[at].info;
                    if *mtu < 68 || info.master_mtu.is_some_and(|master| *mtu > master) {
                        return Err(format!(
                            "failed to set the MTU of {link} to {mtu}: invalid argument"
                        ));
                    }
                    info.mtu = *mtu;
                }
            }
            Op::SetMac { link, mac } => {
                if let Some(at) = setting(&model, link)? {
                    model.links[at].info.mac = mac.to_string();
                }
            }
            Op::SetPromisc { link, on } => {
                if let Some(at) = setting(&model, link)? {
                    model.links[at].info.promisc = *on;
                }
            }
            Op::SetAllmulti { link, on } => {
                if let Some(at) = setting(&model, link)? {
                    model.links[at].info.allmulti = *on;
                }
            }
            Op::SetTxQueueLen { link, len } => {
                if let Some(at) = setting(&model, link)? {
                    model.links[at].info.txqueuelen = *len;
                }
            }
            Op::AddAddress { link, address } => {
                let at = position(&model, link).ok_or("no such device")?;
                let text = address.to_string();
                if model.links[at].addresses.contains(&text) {
                    return Err(format!(
                        "failed to add IP addr {address} to {link:?}: file exists"
                    ));
                }
                model.links[at].addresses.push(text);
            }
            Op::AddRoute(route) => {
                let at = position(&model, &route.link).ok_or("no such device")?;
                let new = Route {
                    dst: route.dst.to_string(),
                    gw: route.gateway.map(|gateway| gateway.to_string()),
                    mtu: None,
                    advmss: None,
                    priority: route.metric,
                    table: route.table,
                    scope: None,
                };
                let routes = &mut model.links[at].routes;
                if routes
                    .iter()
                    .any(|found| found.dst == new.dst && found.gw == new.gw)
                {
                    return Err(format!("failed to add route '{}': file exists", new.dst));
                }
                routes.push(new);
            }
            Op::SetSysctl { key, value } => {
                let link = policy::sysctl_interface(key).unwrap_or_default();
                if setting(&model, link)?.is_none() {
                    return Ok(());
                }
                model.sysctls.insert(key.clone(), value.clone());
            }
            Op::DeleteLink { link } => {
                if let Some(at) = position(&model, link) {
                    model.links.remove(at);
                    // Its conf and neigh sysctls go with it.
                    model
                        .sysctls
                        .retain(|key, _| policy::sysctl_interface(key) != Some(link.as_str()));
                }
            }
            Op::RemoveDefaultRoutes { .. } => {
                return Err("only the meta-plugin removes default routes".into());
            }
        }
        Ok(())
    }
}

fn core_command(command: Command) -> CniCommand {
    match command {
        Command::Add => CniCommand::Add,
        Command::Del => CniCommand::Del,
        Command::Check => CniCommand::Check,
        Command::Status => CniCommand::Status,
        Command::Gc => CniCommand::Gc,
    }
}

fn core_mode(mode: MacvlanMode) -> core_plan::MacvlanMode {
    match mode {
        MacvlanMode::Bridge => core_plan::MacvlanMode::Bridge,
        MacvlanMode::Private => core_plan::MacvlanMode::Private,
        MacvlanMode::Vepa => core_plan::MacvlanMode::Vepa,
        MacvlanMode::Passthru => core_plan::MacvlanMode::Passthru,
        MacvlanMode::Source => core_plan::MacvlanMode::Source,
    }
}

fn sdk_mode(mode: core_plan::MacvlanMode) -> MacvlanMode {
    match mode {
        core_plan::MacvlanMode::Bridge => MacvlanMode::Bridge,
        core_plan::MacvlanMode::Private => MacvlanMode::Private,
        core_plan::MacvlanMode::Vepa => MacvlanMode::Vepa,
        core_plan::MacvlanMode::Passthru => MacvlanMode::Passthru,
        core_plan::MacvlanMode::Source => MacvlanMode::Source,
    }
}

/// An SDK op as the host parses it; the error is the host's reason.
fn core_op(op: &NetlinkOp) -> Result<Op, String> {
    let mac = |what: &str, text: &str| {
        text.parse::<core_plan::MacAddr>()
            .map_err(|_| format!("{what} {text:?} is not a MAC address"))
    };
    let net = |what: &str, text: &str| {
        text.parse::<ipnet::IpNet>()
            .map_err(|_| format!("{what} {text:?} is not an address with a prefix length"))
    };
    Ok(match op {
        NetlinkOp::CreateMacvlan(create) => Op::CreateMacvlan(core_plan::CreateMacvlan {
            name: create.name.clone(),
            master: create.master.clone(),
            master_in_sandbox: create.master_in_sandbox,
            mode: core_mode(create.mode),
            mtu: create.mtu,
            mac: create
                .mac
                .as_deref()
                .map(|text| mac("mac", text))
                .transpose()?,
        }),
        NetlinkOp::RenameLink(rename) => Op::RenameLink {
            name: rename.name.clone(),
            new_name: rename.new_name.clone(),
        },
        NetlinkOp::SetLinkUp(link) => Op::SetLinkUp { link: link.clone() },
        NetlinkOp::SetLinkDown(link) => Op::SetLinkDown { link: link.clone() },
        NetlinkOp::SetMtu(set) => Op::SetMtu {
            link: set.link.clone(),
            mtu: set.mtu,
        },
        NetlinkOp::SetMac(set) => Op::SetMac {
            link: set.link.clone(),
            mac: mac("mac", &set.mac)?,
        },
        NetlinkOp::SetPromisc(set) => Op::SetPromisc {
            link: set.link.clone(),
            on: set.on,
        },
        NetlinkOp::SetAllmulti(set) => Op::SetAllmulti {
            link: set.link.clone(),
            on: set.on,
        },
        NetlinkOp::SetTxqueuelen(set) => Op::SetTxQueueLen {
            link: set.link.clone(),
            len: set.len,
        },
        NetlinkOp::AddAddress(add) => Op::AddAddress {
            link: add.link.clone(),
            address: net("address", &add.address)?,
        },
        NetlinkOp::AddRoute(add) => Op::AddRoute(core_plan::AddRoute {
            link: add.link.clone(),
            dst: net("route dst", &add.dst)?,
            gateway: add
                .gateway
                .as_deref()
                .map(|text| {
                    text.parse()
                        .map_err(|_| format!("route gateway {text:?} is not an IP address"))
                })
                .transpose()?,
            metric: add.metric,
            table: add.table,
            scope: add.scope.map(|scope| match scope {
                RouteScope::Universe => core_plan::RouteScope::Universe,
                RouteScope::Site => core_plan::RouteScope::Site,
                RouteScope::Link => core_plan::RouteScope::Link,
                RouteScope::Host => core_plan::RouteScope::Host,
            }),
        }),
        NetlinkOp::SetSysctl(set) => Op::SetSysctl {
            key: set.key.clone(),
            value: set.value.clone(),
        },
        NetlinkOp::DeleteLink(link) => Op::DeleteLink { link: link.clone() },
    })
}

impl Host for MockHost {
    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.into()));
    }
    fn get_link(&self, netns: Netns, name: &str) -> Option<LinkInfo> {
        self.find(netns, name).map(|link| link.info)
    }
    fn default_route_link(&self, netns: Netns, family: IpFamily) -> Option<LinkInfo> {
        self.default_routes
            .iter()
            .find(|(ns, fam, _)| *ns == netns && *fam == family)
            .and_then(|(ns, _, name)| self.get_link(*ns, name))
    }
    fn addresses(&self, netns: Netns, name: &str) -> Vec<String> {
        self.find(netns, name)
            .map(|link| link.addresses)
            .unwrap_or_default()
    }
    fn routes(&self, netns: Netns, name: &str) -> Vec<Route> {
        self.find(netns, name)
            .map(|link| link.routes)
            .unwrap_or_default()
    }
    /// The host's read rule (only the attachment's own keys), then the
    /// model's value.
    fn read_sysctl(&self, key: &str) -> Result<Option<String>, String> {
        policy::check_sysctl_read(key, &self.ifname.borrow())?;
        Ok(self.model.borrow().sysctls.get(key).cloned())
    }
}

impl IpamHost for MockHost {
    fn store_get(&self, key: &str) -> Result<Option<String>, String> {
        Ok(self.store.borrow().get(key).cloned())
    }
    fn store_list(&self) -> Result<Vec<String>, String> {
        Ok(self.store.borrow().keys().cloned().collect())
    }
    fn store_compare_and_swap(
        &self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, String> {
        let mut store = self.store.borrow_mut();
        if store.get(key).map(String::as_str) != expected {
            return Ok(false);
        }
        match new {
            Some(value) => store.insert(key.into(), value.into()),
            None => store.remove(key),
        };
        Ok(true)
    }
    fn store_delete(&self, key: &str) -> Result<bool, String> {
        Ok(self.store.borrow_mut().remove(key).is_some())
    }
    fn read_resolv_conf(&self, path: &str) -> Result<Dns, String> {
        self.resolv_confs
            .get(path)
            .cloned()
            .ok_or_else(|| format!("open {path}: no such file or directory"))
    }
}

#[cfg(test)]
mod tests;
