//! In-memory fakes of every effect a call has (for unit tests, which run
//! without root and build no guest): a kernel that models links, addresses
//! and routes and can fail at any op, an attachment cache that can fail at
//! any write, IPAM stores, pods and NADs, native plugins, and wasm plugins
//! standing in for macvlan and host-local.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::call::Effects;
use crate::cni::{CniCommand, CniError, CniResult, CniVersion};
use crate::k8s::{NadInfo, NetworkSource, PodInfo, SourceError};
use crate::netlink::query::{LinkQueries, NoLinks};
use crate::netlink::{Kernel, Refusals};
use crate::plan::{ApplyError, CheckedPlan, IpFamily, LinkInfo, MacAddr, Op, Plan};
use crate::runner::{ExecContext, IpamStores, Resolver};
use crate::sandbox::{Guest, PluginRequest, SandboxError, World};
use crate::store::cache::{CacheError, CacheStore, ContainerRecord};
use crate::store::ipam::{IpamStore, StoreError, StoreOptions};

/// What happened, in order, across every fake: the transaction's trace.
pub type Events = Arc<Mutex<Vec<String>>>;

fn log(events: &Events, event: String) {
    events.lock().unwrap().push(event);
}

/// The pod's namespace as the fake kernel models it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelState {
    pub links: BTreeSet<String>,
    pub addresses: BTreeSet<(String, IpNet)>,
    /// (link, destination, gateway)
    pub routes: BTreeSet<(String, IpNet, Option<IpAddr>)>,
    /// Links made by plans (what the pod's batch delete takes).
    pub plan_links: BTreeSet<String>,
}

/// How the fakes misbehave.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    pub get_pod: bool,
    pub status_write: bool,
    /// Fail the n-th op applied by the kernel (counting from 0 across plans).
    pub op: Option<usize>,
    /// Fail the n-th cache write (progress or final, counting from 0).
    pub cache_write: Option<usize>,
    pub group_delete: bool,
    /// Fail this type's wasm IPAM ADD.
    pub ipam: bool,
    /// Fail the wasm delegate's call.
    pub delegate: bool,
    /// The wasm delegate runs out of fuel (a sandbox refusal, code 102).
    pub delegate_fuel: bool,
    /// Sending a Kubernetes event fails.
    pub send_event: bool,
    /// The network's store is locked by someone else.
    pub store_locked: bool,
    /// The native `dhcp` fails its ADD after it leased.
    pub native_ipam: bool,
}

/// Everything a fake call shares.
#[derive(Clone, Default)]
pub struct Shared {
    pub events: Events,
    pub kernel: Arc<Mutex<KernelState>>,
    pub stores: Arc<Mutex<BTreeMap<String, BTreeMap<String, String>>>>,
    pub cache: Arc<Mutex<BTreeMap<String, ContainerRecord>>>,
    pub statuses: Arc<Mutex<Vec<String>>>,
    /// Kubernetes events sent: "<ns>/<pod> (<uid>) <type> <reason>: <message>".
    pub k8s_events: Arc<Mutex<Vec<String>>>,
    pub pods: Arc<Mutex<BTreeMap<String, PodInfo>>>,
    pub nads: Arc<Mutex<BTreeMap<String, String>>>,
    pub faults: Arc<Mutex<Faults>>,
    ops_applied: Arc<Mutex<usize>>,
    cache_writes: Arc<Mutex<usize>>,
}

impl Shared {
    pub fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap()
    }

    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    pub fn k8s_events(&self) -> Vec<String> {
        self.k8s_events.lock().unwrap().clone()
    }

    pub fn kernel(&self) -> KernelState {
        self.kernel.lock().unwrap().clone()
    }

    /// Every key of every IPAM store, as `<network>/<key>`.
    pub fn reservations(&self) -> Vec<String> {
        let stores = self.stores.lock().unwrap();
        stores
            .iter()
            .flat_map(|(network, keys)| {
                keys.keys()
                    .filter(|key| key.parse::<IpAddr>().is_ok())
                    .map(move |key| format!("{network}/{key}"))
            })
            .collect()
    }

    pub fn add_pod(&self, namespace: &str, name: &str, uid: &str, networks: &str) {
        let pod = PodInfo {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
            annotations: BTreeMap::from([(
                "k8s.v1.cni.cncf.io/networks".to_string(),
                networks.to_string(),
            )]),
        };
        self.pods
            .lock()
            .unwrap()
            .insert(format!("{namespace}/{name}"), pod);
    }

    pub fn add_nad(&self, namespace: &str, name: &str, config: Value) {
        self.nads
            .lock()
            .unwrap()
            .insert(format!("{namespace}/{name}"), config.to_string());
    }
}

impl NetworkSource for Shared {
    fn get_pod(
        &self,
        namespace: &str,
        name: &str,
        _uid: &str,
    ) -> Result<Option<PodInfo>, SourceError> {
        log(&self.events, format!("get-pod {namespace}/{name}"));
        if self.faults().get_pod {
            return Err(SourceError::Api("injected: the API server is down".into()));
        }
        Ok(self
            .pods
            .lock()
            .unwrap()
            .get(&format!("{namespace}/{name}"))
            .cloned())
    }

    fn get_nad(&self, namespace: &str, name: &str) -> Result<Option<NadInfo>, SourceError> {
        Ok(self
            .nads
            .lock()
            .unwrap()
            .get(&format!("{namespace}/{name}"))
            .map(|config| NadInfo {
                namespace: namespace.into(),
                name: name.into(),
                config: Some(config.clone()),
                resource_name: None,
            }))
    }

    fn set_network_status(
        &self,
        namespace: &str,
        name: &str,
        status: &str,
    ) -> Result<(), SourceError> {
        log(&self.events, format!("status {namespace}/{name}"));
        if self.faults().status_write {
            return Err(SourceError::Api("injected: conflict after retries".into()));
        }
        self.statuses.lock().unwrap().push(status.into());
        Ok(())
    }

    fn send_event(&self, pod: &PodInfo, event: &crate::k8s::PodEvent) -> Result<(), SourceError> {
        if self.faults().send_event {
            return Err(SourceError::Api("injected: events are forbidden".into()));
        }
        self.k8s_events.lock().unwrap().push(format!(
            "{}/{} ({}) {} {}: {}",
            pod.namespace, pod.name, pod.uid, event.event_type, event.reason, event.message
        ));
        Ok(())
    }

    fn missing_pod_was_deleted(&self) -> bool {
        true
    }
}

impl CacheStore for Shared {
    fn load(&self, container_id: &str) -> Result<Option<ContainerRecord>, CacheError> {
        Ok(self.cache.lock().unwrap().get(container_id).cloned())
    }

    fn save_progress(&self, record: &ContainerRecord) -> Result<(), CacheError> {
        self.write("progress", record)
    }

    fn save(&self, record: &ContainerRecord) -> Result<(), CacheError> {
        self.write("save", record)
    }

    fn remove(&self, container_id: &str) -> Result<(), CacheError> {
        log(&self.events, format!("cache-remove {container_id}"));
        self.cache.lock().unwrap().remove(container_id);
        Ok(())
    }

    fn container_ids(&self) -> Result<Vec<String>, CacheError> {
        Ok(self.cache.lock().unwrap().keys().cloned().collect())
    }
}

impl Shared {
    fn write(&self, kind: &str, record: &ContainerRecord) -> Result<(), CacheError> {
        let states: Vec<String> = record
            .attachments
            .iter()
            .map(|cached| format!("{:?}", cached.state).to_lowercase())
            .collect();
        log(&self.events, format!("cache-{kind} {}", states.join(",")));
        let mut writes = self.cache_writes.lock().unwrap();
        let index = *writes;
        *writes += 1;
        if self.faults().cache_write == Some(index) {
            return Err(CacheError::Io {
                path: PathBuf::from("/fake/cache"),
                source: std::io::Error::other("injected: disk full"),
            });
        }
        self.cache
            .lock()
            .unwrap()
            .insert(record.container_id.clone(), record.clone());
        Ok(())
    }
}

/// One applied op's inverse, as the fake kernel keeps it.
#[derive(Debug, Clone)]
enum Undo {
    RemoveLink(String),
    Rename { from: String, to: String },
    RemoveAddress(String, IpNet),
    RemoveRoute(String, IpNet, Option<IpAddr>),
    RestoreRoute(String, IpNet, Option<IpAddr>),
    Nothing,
}

/// The fake kernel of one call.
pub struct FakeKernel {
    world: Shared,
    has_netns: bool,
    journals: Mutex<Vec<Option<Vec<Undo>>>>,
    pending: Mutex<Option<Result<bool, String>>>,
}

fn family_of(net: &IpNet) -> IpFamily {
    if net.addr().is_ipv6() {
        IpFamily::V6
    } else {
        IpFamily::V4
    }
}

impl FakeKernel {
    fn apply_op(&self, state: &mut KernelState, op: &Op) -> Result<Vec<Undo>, String> {
        let need = |state: &KernelState, link: &str| {
            if state.links.contains(link) {
                Ok(())
            } else {
                Err(format!("link {link} not found in the pod"))
            }
        };
        Ok(match op {
            Op::CreateMacvlan(create) => {
                if state.links.contains(&create.name) {
                    return Err("file exists".into());
                }
                state.links.insert(create.name.clone());
                state.plan_links.insert(create.name.clone());
                vec![Undo::RemoveLink(create.name.clone())]
            }
            Op::RenameLink { name, new_name } => {
                need(state, name)?;
                state.links.remove(name);
                state.links.insert(new_name.clone());
                if state.plan_links.remove(name) {
                    state.plan_links.insert(new_name.clone());
                }
                vec![Undo::Rename {
                    from: new_name.clone(),
                    to: name.clone(),
                }]
            }
            Op::SetLinkUp { link }
            | Op::SetLinkDown { link }
            | Op::SetPromisc { link, .. }
            | Op::SetAllmulti { link, .. }
            | Op::SetTxQueueLen { link, .. }
            | Op::SetMtu { link, .. }
            | Op::SetMac { link, .. } => {
                need(state, link)?;
                vec![Undo::Nothing]
            }
            Op::SetSysctl { .. } => vec![Undo::Nothing],
            Op::AddAddress { link, address } => {
                need(state, link)?;
                state.addresses.insert((link.clone(), *address));
                vec![Undo::RemoveAddress(link.clone(), *address)]
            }
            Op::AddRoute(route) => {
                need(state, &route.link)?;
                let entry = (route.link.clone(), route.dst, route.gateway);
                if !state.routes.insert(entry) {
                    return Err("route exists".into());
                }
                vec![Undo::RemoveRoute(
                    route.link.clone(),
                    route.dst,
                    route.gateway,
                )]
            }
            Op::DeleteLink { link } => {
                remove_link(state, link);
                vec![Undo::Nothing]
            }
            Op::RemoveDefaultRoutes { link, family } => {
                let removed: Vec<_> = state
                    .routes
                    .iter()
                    .filter(|(on, dst, _)| {
                        on == link && dst.prefix_len() == 0 && family_of(dst) == *family
                    })
                    .cloned()
                    .collect();
                removed
                    .into_iter()
                    .map(|route| {
                        state.routes.remove(&route);
                        Undo::RestoreRoute(route.0, route.1, route.2)
                    })
                    .collect()
            }
        })
    }

    fn undo_all(&self, state: &mut KernelState, journal: Vec<Undo>) {
        for undo in journal.into_iter().rev() {
            log(&self.world.events, format!("undo {undo:?}"));
            match undo {
                Undo::RemoveLink(link) => remove_link(state, &link),
                Undo::Rename { from, to } => {
                    state.links.remove(&from);
                    state.links.insert(to.clone());
                    if state.plan_links.remove(&from) {
                        state.plan_links.insert(to);
                    }
                }
                Undo::RemoveAddress(link, address) => {
                    state.addresses.remove(&(link, address));
                }
                Undo::RemoveRoute(link, dst, gateway) => {
                    state.routes.remove(&(link, dst, gateway));
                }
                Undo::RestoreRoute(link, dst, gateway) => {
                    state.routes.insert((link, dst, gateway));
                }
                Undo::Nothing => {}
            }
        }
    }
}

fn remove_link(state: &mut KernelState, link: &str) {
    state.links.remove(link);
    state.plan_links.remove(link);
    state.addresses.retain(|(on, _)| on != link);
    state.routes.retain(|(on, _, _)| on != link);
}

impl Kernel for FakeKernel {
    fn has_netns(&self) -> bool {
        self.has_netns
    }

    fn pod_link(&self, name: &str) -> Result<Option<LinkInfo>, CniError> {
        let state = self.world.kernel.lock().unwrap();
        Ok(state.links.contains(name).then(|| LinkInfo {
            name: name.into(),
            index: 2,
            mtu: 1500,
            mac: Some(MacAddr([0x02, 0, 0, 0, 0, 0x01])),
            kind: "macvlan".into(),
            up: true,
            macvlan_mode: None,
            promisc: false,
            allmulti: false,
            txqueuelen: 1000,
            master: None,
            master_mtu: None,
            peer_in_other_netns: false,
        }))
    }

    fn host_link(&self, name: &str) -> Result<Option<LinkInfo>, CniError> {
        Ok((name == "ens3").then(|| LinkInfo {
            name: name.into(),
            index: 3,
            mtu: 1500,
            mac: None,
            kind: "veth".into(),
            up: true,
            macvlan_mode: None,
            promisc: false,
            allmulti: false,
            txqueuelen: 1000,
            master: None,
            master_mtu: None,
            peer_in_other_netns: false,
        }))
    }

    fn guest_links(
        &self,
        _allowed_masters: Option<Vec<String>>,
        _refusals: Refusals,
    ) -> Result<Box<dyn LinkQueries>, CniError> {
        Ok(Box::new(NoLinks))
    }

    fn apply(&self, plan: &CheckedPlan) -> Result<usize, ApplyError> {
        let mut state = self.world.kernel.lock().unwrap();
        let mut journal = Vec::new();
        for (index, op) in plan.ops().iter().enumerate() {
            let applied = {
                let mut count = self.world.ops_applied.lock().unwrap();
                let this = *count;
                *count += 1;
                this
            };
            let outcome = if self.world.faults().op == Some(applied) {
                Err("injected: EINVAL".to_string())
            } else {
                self.apply_op(&mut state, op)
            };
            match outcome {
                Ok(undos) => {
                    log(&self.world.events, format!("op {op}"));
                    journal.extend(undos);
                }
                Err(reason) => {
                    log(&self.world.events, format!("op-failed {op}"));
                    self.undo_all(&mut state, journal);
                    return Err(ApplyError::Op {
                        index,
                        op: op.to_string(),
                        reason,
                        undo_errors: Vec::new(),
                    });
                }
            }
        }
        let mut journals = self.journals.lock().unwrap();
        journals.push(Some(journal));
        Ok(journals.len() - 1)
    }

    fn undo(&self, applied: usize) -> Vec<String> {
        let journal = self.journals.lock().unwrap()[applied].take();
        if let Some(journal) = journal {
            self.undo_all(&mut self.world.kernel.lock().unwrap(), journal);
        }
        Vec::new()
    }

    fn start_group_delete(&self) -> Result<bool, String> {
        if !self.has_netns {
            return Ok(false);
        }
        log(&self.world.events, "group-delete".into());
        let outcome = if self.world.faults().group_delete {
            Err("injected: EPERM".into())
        } else {
            let mut state = self.world.kernel.lock().unwrap();
            let links: Vec<String> = state.plan_links.iter().cloned().collect();
            for link in &links {
                remove_link(&mut state, link);
            }
            Ok(!links.is_empty())
        };
        *self.pending.lock().unwrap() = Some(outcome);
        Ok(true)
    }

    fn finish_group_delete(&self) -> Result<bool, String> {
        self.pending.lock().unwrap().take().unwrap_or(Ok(false))
    }
}

/// A fake IPAM store: one network's keys in the world.
struct FakeStore {
    world: Shared,
    network: String,
}

impl IpamStore for FakeStore {
    fn get(&mut self, key: &str) -> Result<Option<String>, String> {
        let stores = self.world.stores.lock().unwrap();
        Ok(stores
            .get(&self.network)
            .and_then(|keys| keys.get(key))
            .cloned())
    }

    fn list(&mut self) -> Result<Vec<String>, String> {
        let stores = self.world.stores.lock().unwrap();
        Ok(stores
            .get(&self.network)
            .map(|keys| keys.keys().cloned().collect())
            .unwrap_or_default())
    }

    fn compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, String> {
        let mut stores = self.world.stores.lock().unwrap();
        let keys = stores.entry(self.network.clone()).or_default();
        if keys.get(key).map(String::as_str) != expected {
            return Ok(false);
        }
        match new {
            Some(value) => keys.insert(key.into(), value.into()),
            None => keys.remove(key),
        };
        Ok(true)
    }

    fn delete(&mut self, key: &str) -> Result<bool, String> {
        let mut stores = self.world.stores.lock().unwrap();
        Ok(stores
            .get_mut(&self.network)
            .is_some_and(|keys| keys.remove(key).is_some()))
    }
}

impl IpamStores for Shared {
    fn open(
        &self,
        data_dir: &Path,
        network: &str,
        _options: StoreOptions,
    ) -> Result<Box<dyn IpamStore>, StoreError> {
        if self.faults().store_locked {
            return Err(StoreError::Locked {
                network: network.into(),
                path: data_dir.join(network),
                waited_ms: 1000,
            });
        }
        Ok(Box::new(FakeStore {
            world: self.clone(),
            network: network.into(),
        }))
    }
}

/// A wasm plugin standing in for macvlan (delegate) or host-local (IPAM).
pub struct FakeGuest {
    name: String,
    world: Shared,
    kind: Role,
}

/// Which plugin a [`FakeGuest`] plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Macvlan,
    HostLocal,
}

fn plugin_error(guest: &str, msg: &str) -> SandboxError {
    SandboxError::Plugin {
        code: 11,
        msg: format!("plugin {guest} (sha256 fake): {msg}"),
        details: String::new(),
    }
}

fn result(value: Value) -> CniResult {
    CniResult::from_value(&value, CniVersion::V1_0_0).expect("a fake result")
}

impl Guest for FakeGuest {
    fn name(&self) -> &str {
        &self.name
    }

    fn digest(&self) -> &str {
        "fake"
    }

    fn world(&self) -> World {
        match self.kind {
            Role::Macvlan => World::Delegate,
            Role::HostLocal => World::Ipam,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn delegate(
        &self,
        request: &PluginRequest,
        _links: Box<dyn LinkQueries>,
    ) -> Result<Plan, SandboxError> {
        log(
            &self.world.events,
            format!("{} {}", self.name, request.command.as_str()),
        );
        if self.world.faults().delegate {
            return Err(plugin_error(&self.name, "injected delegate failure"));
        }
        if self.world.faults().delegate_fuel {
            return Err(SandboxError::Fuel {
                plugin: self.name.clone(),
                digest: "fake".into(),
                fuel: 1,
            });
        }
        let config: Value = serde_json::from_str(&request.config).unwrap();
        let ifname = request.ifname.clone();
        match request.command {
            CniCommand::Add => {
                let master = config["master"].as_str().unwrap_or("ens3").to_string();
                let ipam = request
                    .ipam_result
                    .clone()
                    .unwrap_or_else(|| CniResult::empty(CniVersion::V1_0_0));
                let mut ops = vec![Op::CreateMacvlan(crate::plan::CreateMacvlan {
                    name: ifname.clone(),
                    master,
                    master_in_sandbox: false,
                    mode: crate::plan::MacvlanMode::Bridge,
                    mtu: None,
                    mac: None,
                })];
                for ip in &ipam.ips {
                    ops.push(Op::AddAddress {
                        link: ifname.clone(),
                        address: ip.address,
                    });
                }
                ops.push(Op::SetLinkUp {
                    link: ifname.clone(),
                });
                for route in &ipam.routes {
                    ops.push(Op::AddRoute(crate::plan::AddRoute {
                        link: ifname.clone(),
                        dst: route.dst,
                        gateway: route.gw,
                        metric: None,
                        table: None,
                        scope: None,
                    }));
                }
                let mut result = ipam;
                result.interfaces = vec![crate::cni::Interface {
                    name: ifname,
                    mac: None,
                    mtu: None,
                    sandbox: Some(request.netns.clone()),
                    socket_path: None,
                    pci_id: None,
                }];
                for ip in &mut result.ips {
                    ip.interface = Some(0);
                }
                Ok(Plan {
                    ops,
                    result: Some(result),
                    state: None,
                })
            }
            CniCommand::Del => Ok(Plan::of_ops(vec![Op::DeleteLink { link: ifname }])),
            _ => Ok(Plan::of_ops(Vec::new())),
        }
    }

    fn ipam(
        &self,
        request: &PluginRequest,
        _links: Box<dyn LinkQueries>,
        mut store: Box<dyn IpamStore>,
    ) -> Result<Option<CniResult>, SandboxError> {
        log(
            &self.world.events,
            format!("{} {}", self.name, request.command.as_str()),
        );
        let owner = format!("{}\r\n{}", request.container_id, request.ifname);
        let failed = |err: String| plugin_error(&self.name, &err);
        match request.command {
            CniCommand::Add => {
                if self.world.faults().ipam {
                    return Err(plugin_error(&self.name, "injected IPAM failure"));
                }
                for host in 2..250 {
                    let ip = format!("10.1.0.{host}");
                    if store
                        .compare_and_swap(&ip, None, Some(&owner))
                        .map_err(failed)?
                    {
                        return Ok(Some(result(json!({
                            "cniVersion": "1.0.0",
                            "ips": [{"address": format!("{ip}/24"), "gateway": "10.1.0.1"}],
                            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]
                        }))));
                    }
                }
                Err(failed("no addresses left".into()))
            }
            CniCommand::Del => {
                for key in store.list().map_err(failed)? {
                    if store.get(&key).map_err(failed)?.as_deref() == Some(owner.as_str()) {
                        store.delete(&key).map_err(failed)?;
                    }
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

/// The plugins of the fake node: wasm `macvlan` and `host-local`, native
/// `ptp` (the cluster network: it makes `eth0` with a default route) and
/// any native type listed in `native`.
#[derive(Clone)]
pub struct FakePlugins {
    pub world: Shared,
    pub native: Arc<Mutex<BTreeSet<String>>>,
}

impl Resolver for FakePlugins {
    fn wasm(&self, plugin_type: &str) -> Result<Option<Arc<dyn Guest>>, CniError> {
        let kind = match plugin_type {
            "macvlan" => Role::Macvlan,
            "host-local" => Role::HostLocal,
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(FakeGuest {
            name: plugin_type.into(),
            world: self.world.clone(),
            kind,
        })))
    }

    fn find_binary(&self, plugin_type: &str, _bin_dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
        if plugin_type == "ptp" || self.native.lock().unwrap().contains(plugin_type) {
            Ok(PathBuf::from(format!("/fake/bin/{plugin_type}")))
        } else {
            Err(CniError::invalid_network_config(format!(
                "failed to find plugin {plugin_type:?}"
            )))
        }
    }

    fn exec(
        &self,
        binary: &Path,
        command: CniCommand,
        _config: &Value,
        context: &ExecContext<'_>,
    ) -> Result<Option<CniResult>, CniError> {
        let name = binary.file_name().unwrap().to_string_lossy().into_owned();
        log(
            &self.world.events,
            format!("exec {name} {} {}", command.as_str(), context.ifname),
        );
        let mut state = self.world.kernel.lock().unwrap();
        match (name.as_str(), command) {
            ("ptp", CniCommand::Add) => {
                state.links.insert(context.ifname.into());
                state.routes.insert((
                    context.ifname.into(),
                    "0.0.0.0/0".parse().unwrap(),
                    Some("10.244.0.1".parse().unwrap()),
                ));
                Ok(Some(result(json!({
                    "cniVersion": "1.0.0",
                    "interfaces": [{"name": context.ifname, "sandbox": context.netns}],
                    "ips": [{"address": "10.244.0.5/24", "gateway": "10.244.0.1", "interface": 0}],
                    "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}]
                }))))
            }
            ("ptp", CniCommand::Del) => {
                remove_link(&mut state, context.ifname);
                Ok(None)
            }
            // A DHCP client: it needs the link in the pod to get a lease,
            // and to release it (the server keeps a lease nobody released).
            ("dhcp", CniCommand::Add) => {
                if !state.links.contains(context.ifname) {
                    return Err(CniError::internal(format!(
                        "no link {} in the pod to send DHCPDISCOVER from",
                        context.ifname
                    )));
                }
                let owner = format!("{}/{}", context.container_id, context.ifname);
                let mut stores = self.world.stores.lock().unwrap();
                let leases = stores.entry("dhcp-server".into()).or_default();
                let host = (2..250)
                    .find(|host| !leases.contains_key(&format!("192.168.9.{host}")))
                    .expect("a free lease");
                let ip = format!("192.168.9.{host}");
                leases.insert(ip.clone(), owner);
                if self.world.faults().native_ipam {
                    return Err(CniError::internal("injected dhcp failure"));
                }
                Ok(Some(result(json!({
                    "cniVersion": "1.0.0",
                    "ips": [{"address": format!("{ip}/24"), "gateway": "192.168.9.1"}],
                    "routes": [{"dst": "10.9.0.0/16"}]
                }))))
            }
            ("dhcp", CniCommand::Del) => {
                if state.links.contains(context.ifname) {
                    let owner = format!("{}/{}", context.container_id, context.ifname);
                    let mut stores = self.world.stores.lock().unwrap();
                    if let Some(leases) = stores.get_mut("dhcp-server") {
                        leases.retain(|_, holder| *holder != owner);
                    }
                }
                Ok(None)
            }
            (_, CniCommand::Add) => Ok(Some(result(json!({"cniVersion": "1.0.0"})))),
            _ => Ok(None),
        }
    }
}

/// The fake node's effects.
pub struct FakeEffects {
    pub world: Shared,
    pub plugins: FakePlugins,
}

impl FakeEffects {
    pub fn new() -> Self {
        let world = Shared::default();
        FakeEffects {
            plugins: FakePlugins {
                world: world.clone(),
                native: Arc::default(),
            },
            world,
        }
    }

    /// Native binaries of these types exist in `binDir`.
    pub fn plugins_native(&self, types: &[&str]) {
        self.plugins
            .native
            .lock()
            .unwrap()
            .extend(types.iter().map(|name| name.to_string()));
    }
}

impl Effects for FakeEffects {
    fn source(&self) -> &dyn NetworkSource {
        &self.world
    }

    fn cache(&self) -> &dyn CacheStore {
        &self.world
    }

    fn plugins(&self) -> &dyn Resolver {
        &self.plugins
    }

    fn stores(&self) -> Arc<dyn IpamStores> {
        Arc::new(self.world.clone())
    }

    fn kernel(&self, netns_path: &str) -> Result<Box<dyn Kernel>, CniError> {
        Ok(Box::new(FakeKernel {
            world: self.world.clone(),
            has_netns: !netns_path.is_empty() && netns_path != "/var/run/netns/gone",
            journals: Mutex::new(Vec::new()),
            pending: Mutex::new(None),
        }))
    }

    /// The fake NADs name no device-plugin resource, so no call asks.
    fn pod_devices(
        &self,
        _socket: &std::path::Path,
        namespace: &str,
        name: &str,
    ) -> Result<BTreeMap<String, Vec<String>>, CniError> {
        Err(CniError::internal(format!(
            "the fake node has no kubelet (asked for {namespace}/{name})"
        )))
    }
}
