//! Running one attachment: every plugin of its config is resolved once into
//! a [`Runner`] (a wasm component in the sandbox, or a native binary the
//! operator allows), then ADD, DEL, CHECK, GC or STATUS runs plugin by
//! plugin, each ADD getting the previous plugin's result.
//!
//! A wasm delegate's ADD (see `wasm`): a wasm IPAM plugin first (with the
//! network's store locked), then the delegate with the IPAM result, its
//! plan checked by the policy and applied through the [`Kernel`]; any
//! failure after IPAM releases the allocation, and a failed apply has
//! already undone itself. A native IPAM binary (the reference `dhcp` needs
//! the link) runs after the delegate's link-only plan is applied, and its
//! addresses and routes are host-built ops through the same policy and
//! executor; a failure after the link runs IPAM DEL, then undoes the link.
//!
//! Everything that reaches outside goes through a seam: [`Resolver`]
//! (loading wasm plugins, finding and exec'ing binaries), [`IpamStores`]
//! and [`Kernel`], so the whole flow is unit-tested with fakes.

pub mod native;
mod wasm;
pub use wasm::check_plan_of;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use crate::cni::{
    CniCommand, CniError, CniResult, GcAttachment, NetworkConfigList, PluginInjection,
    plugin_config,
};
use crate::config::{MultusConfig, WasmPlugin};
use crate::netlink::Kernel;
use crate::sandbox::{Guest, Limits, LoadedPlugin, Sandbox, SandboxError, World};
use crate::store::cache::PluginStates;
use crate::store::ipam::{DirStore, IpamStore, StoreError, StoreOptions};
pub use native::ExecContext;

/// How one plugin type runs.
#[derive(Clone)]
pub enum Runner {
    /// A wasm component registered in `wasmPlugins`, loaded and checked.
    Wasm(Arc<dyn Guest>),
    /// A native CNI binary the operator allows for this attachment.
    Native(PathBuf),
}

/// Where plugins come from: the seam between the attachment flow and the
/// sandbox and `binDir`. Shared by concurrent calls.
pub trait Resolver: Send + Sync {
    /// The wasm plugin registered for `plugin_type`, loaded (once) and
    /// checked; `None` when the type is not registered. A registered plugin
    /// that cannot be loaded is an error, never a fallback to a binary.
    fn wasm(&self, plugin_type: &str) -> Result<Option<Arc<dyn Guest>>, CniError>;
    /// The binary of native plugin `plugin_type` in `bin_dirs`.
    fn find_binary(&self, plugin_type: &str, bin_dirs: &[PathBuf]) -> Result<PathBuf, CniError>;
    /// Exec a native plugin with the CNI protocol.
    fn exec(
        &self,
        binary: &Path,
        command: CniCommand,
        config: &Value,
        context: &ExecContext<'_>,
    ) -> Result<Option<CniResult>, CniError>;
}

/// Opening a network's IPAM store (with its lock).
pub trait IpamStores: Send + Sync {
    fn open(
        &self,
        data_dir: &Path,
        network: &str,
        options: StoreOptions,
    ) -> Result<Box<dyn IpamStore>, StoreError>;
}

/// The node's IPAM stores: the reference host-local's directories.
#[derive(Debug, Default)]
pub struct DirStores;

impl IpamStores for DirStores {
    fn open(
        &self,
        data_dir: &Path,
        network: &str,
        options: StoreOptions,
    ) -> Result<Box<dyn IpamStore>, StoreError> {
        Ok(Box::new(DirStore::open_locked(data_dir, network, options)?))
    }
}

/// The node's plugins: the sandbox (created on first use) and every wasm
/// plugin loaded so far, shared by concurrent calls; native binaries are
/// exec'd as libcni does.
pub struct NodePlugins {
    registered: BTreeMap<String, WasmPlugin>,
    limits: Limits,
    cache_dir: PathBuf,
    sandbox: Mutex<Option<Arc<Sandbox>>>,
    loaded: Mutex<HashMap<String, Arc<LoadedPlugin>>>,
}

impl std::fmt::Debug for NodePlugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodePlugins")
            .field("registered", &self.registered.keys())
            .finish()
    }
}

impl NodePlugins {
    /// The plugins registered in `config` (`wasmPlugins`, `wasmLimits`,
    /// `wasmCacheDir`).
    pub fn new(config: &MultusConfig) -> Self {
        NodePlugins {
            registered: config.wasm_plugins.clone(),
            limits: Limits::from_config(&config.wasm_limits),
            cache_dir: config.wasm_cache_dir.clone(),
            sandbox: Mutex::new(None),
            loaded: Mutex::new(HashMap::new()),
        }
    }

    fn sandbox(&self) -> Result<Arc<Sandbox>, CniError> {
        let mut slot = self.sandbox.lock().expect("sandbox lock");
        if let Some(sandbox) = slot.as_ref() {
            return Ok(sandbox.clone());
        }
        let sandbox = Arc::new(Sandbox::new(self.limits, Some(&self.cache_dir))?);
        *slot = Some(sandbox.clone());
        Ok(sandbox)
    }

    /// Load every registered plugin now (a daemon's warm-up, STATUS).
    pub fn load_all(&self) -> Result<(), CniError> {
        for plugin_type in self.registered.keys() {
            self.wasm(plugin_type)?;
        }
        Ok(())
    }

    /// The registered plugin types.
    pub fn registered(&self) -> impl Iterator<Item = &str> {
        self.registered.keys().map(String::as_str)
    }
}

impl Resolver for NodePlugins {
    fn wasm(&self, plugin_type: &str) -> Result<Option<Arc<dyn Guest>>, CniError> {
        let Some(registered) = self.registered.get(plugin_type) else {
            return Ok(None);
        };
        let mut loaded = self.loaded.lock().expect("plugins lock");
        if let Some(plugin) = loaded.get(plugin_type) {
            return Ok(Some(plugin.clone()));
        }
        let _span = crate::timing::span("plugin-load");
        let sandbox = self.sandbox()?;
        let plugin = sandbox.load(plugin_type, &registered.path, Some(&registered.sha256))?;
        tracing::debug!(plugin = plugin_type, sha256 = %plugin.digest, cache = ?plugin.cache_outcome, "loaded wasm plugin");
        let plugin = Arc::new(LoadedPlugin { sandbox, plugin });
        loaded.insert(plugin_type.into(), plugin.clone());
        Ok(Some(plugin))
    }

    fn find_binary(&self, plugin_type: &str, bin_dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
        native::find_plugin(plugin_type, bin_dirs)
    }

    fn exec(
        &self,
        binary: &Path,
        command: CniCommand,
        config: &Value,
        context: &ExecContext<'_>,
    ) -> Result<Option<CniResult>, CniError> {
        native::exec_plugin(binary, command, config, context)
    }
}

/// Everything one CNI call runs attachments with; per call.
pub struct CallContext<'a> {
    pub config: &'a MultusConfig,
    pub plugins: &'a dyn Resolver,
    pub stores: Arc<dyn IpamStores>,
    pub kernel: &'a dyn Kernel,
    pub container_id: &'a str,
    /// `CNI_NETNS` as given (may be empty on DEL).
    pub netns_path: &'a str,
    /// `binDir`, then `CNI_PATH`.
    pub bin_dirs: &'a [PathBuf],
    /// Plugin types of the operator's own attachments in this call: with
    /// `nativePlugins` unset, a NAD may use them too.
    pub operator_types: &'a BTreeSet<String>,
}

impl std::fmt::Debug for CallContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("container_id", &self.container_id)
            .field("netns", &self.netns_path)
            .finish()
    }
}

/// One attachment to run: its config (parsed once), interface, CNI_ARGS
/// and runtimeConfig values.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    /// For messages: `<ns>/<nad>` or the cluster network's name.
    pub name: &'a str,
    /// Written by the operator (cluster network, `delegates`,
    /// `defaultNetworks`): its native plugins are not limited by
    /// `nativePlugins`.
    pub operator: bool,
    pub list: &'a NetworkConfigList,
    pub ifname: &'a str,
    pub cni_args: &'a [(String, String)],
    pub capability_args: &'a Map<String, Value>,
    /// What its wasm plugins keep for it (ABI 0.2.0 `state`), by plugin
    /// index: read on CHECK and DEL, written by each ADD.
    pub plugin_state: &'a PluginStates,
}

/// Whether a DEL runs the wasm delegates' plans (their links still exist)
/// or only releases their IPAM (the pod's batch delete took the links; a
/// native IPAM that needs the link was released before it, by
/// [`CallContext::release_link_ipam`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPlans {
    Run,
    Skip,
}

/// What IPAM CHECK, DEL and GC get besides the config.
#[derive(Debug, Clone, Copy, Default)]
struct IpamExtra<'a> {
    prev_result: Option<&'a CniResult>,
    valid_attachments: &'a [(String, String)],
}

/// `ipam.type` of a plugin config, when set.
pub fn ipam_type(config: &Value) -> Option<&str> {
    config
        .get("ipam")
        .and_then(|ipam| ipam.get("type"))
        .and_then(Value::as_str)
        .filter(|ipam_type| !ipam_type.is_empty())
}

/// One error, or all of them joined (DEL and GC keep going).
fn join_errors(mut errors: Vec<CniError>) -> Result<(), CniError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => {
            let code = errors[0].code;
            let msg = errors
                .iter()
                .map(|err| err.to_string())
                .collect::<Vec<_>>()
                .join(" / ");
            Err(CniError::new(code, msg))
        }
    }
}

/// The error of a plugin used in the wrong role (a delegate as IPAM...).
fn expect_world(guest: &dyn Guest, expected: World) -> Result<(), CniError> {
    if guest.world() == expected {
        return Ok(());
    }
    Err(SandboxError::WrongWorld {
        plugin: guest.name().into(),
        digest: guest.digest().into(),
        actual: guest.world(),
        expected,
    }
    .into())
}

impl CallContext<'_> {
    fn exec_context<'c>(&'c self, attachment: &'c Attachment<'_>) -> ExecContext<'c> {
        ExecContext {
            bin_dirs: self.bin_dirs,
            container_id: self.container_id,
            netns: self.netns_path,
            ifname: attachment.ifname,
            args: attachment.cni_args,
        }
    }

    /// Whether `attachment` may exec native plugin `plugin_type`: a NAD's
    /// attachment only the types in `nativePlugins` (default: the reference
    /// set plus the operator's own networks' types); no attachment a
    /// meta-plugin (ours or Multus's).
    fn check_native_type(
        &self,
        plugin_type: &str,
        attachment: &Attachment<'_>,
    ) -> Result<(), CniError> {
        native::refuse_meta_plugin(plugin_type)?;
        if attachment.operator
            || self.config.native_plugin_allowed(plugin_type)
            || (self.config.native_plugins.is_none() && self.operator_types.contains(plugin_type))
        {
            return Ok(());
        }
        Err(CniError::invalid_network_config(format!(
            "network {} asks for plugin type {plugin_type:?}, which is neither a registered wasm plugin (wasmPlugins) nor a native plugin the operator allows (nativePlugins: {})",
            attachment.name,
            match &self.config.native_plugins {
                Some(list) => format!("{list:?}"),
                None => "unset, so the reference plugins and the cluster network's types".into(),
            }
        )))
    }

    /// The binary of native plugin `plugin_type`, to be exec'd with
    /// `config`, if the operator allows it. A native plugin execs its own
    /// `ipam.type` from the same path, so that type is checked too; neither
    /// may be this very binary under another name.
    fn native_binary(
        &self,
        plugin_type: &str,
        attachment: &Attachment<'_>,
        config: &Value,
    ) -> Result<PathBuf, CniError> {
        self.check_native_type(plugin_type, attachment)?;
        let binary = self.plugins.find_binary(plugin_type, self.bin_dirs)?;
        native::refuse_self(plugin_type, &binary)?;
        if let Some(ipam_type) = ipam_type(config).filter(|ipam_type| *ipam_type != plugin_type) {
            self.check_native_type(ipam_type, attachment)?;
            if let Ok(ipam_binary) = self.plugins.find_binary(ipam_type, self.bin_dirs) {
                native::refuse_self(ipam_type, &ipam_binary)?;
            }
        }
        Ok(binary)
    }

    /// Resolve `plugin_type` once into its runner.
    fn runner(
        &self,
        plugin_type: &str,
        attachment: &Attachment<'_>,
        config: &Value,
    ) -> Result<Runner, CniError> {
        match self.plugins.wasm(plugin_type)? {
            Some(guest) => Ok(Runner::Wasm(guest)),
            None => Ok(Runner::Native(self.native_binary(
                plugin_type,
                attachment,
                config,
            )?)),
        }
    }

    /// Resolve `plugin_type` as a network's own plugin (a `type` of its
    /// config, not its `ipam.type`). A wasm plugin that implements only the
    /// IPAM world (such as `static`) cannot be one; as Multus runs the
    /// native binary of that name as a main plugin, so do we, when the
    /// operator allows that binary for this attachment, else the error
    /// says what the plugin is and how to use it.
    fn delegate_runner(
        &self,
        plugin_type: &str,
        attachment: &Attachment<'_>,
        config: &Value,
    ) -> Result<Runner, CniError> {
        match self.runner(plugin_type, attachment, config)? {
            Runner::Wasm(guest) if guest.world() == World::Ipam => {
                if self.check_native_type(plugin_type, attachment).is_err() {
                    return Err(CniError::invalid_network_config(format!(
                        "network {} has type {plugin_type:?}, which is an IPAM plugin (registered in wasmPlugins as a wasm IPAM plugin, sha256 {}) and cannot be used as a network's type, and nativePlugins does not allow running the native {plugin_type} binary instead; use it as the delegate's \"ipam\": {{\"type\": \"{plugin_type}\"}}, or add {plugin_type:?} to nativePlugins",
                        attachment.name,
                        guest.digest(),
                    )));
                }
                tracing::info!(
                    network = %attachment.name,
                    plugin = plugin_type,
                    "the wasm plugin of this type is an IPAM plugin: running the native binary as the network's plugin"
                );
                Ok(Runner::Native(self.native_binary(
                    plugin_type,
                    attachment,
                    config,
                )?))
            }
            runner => Ok(runner),
        }
    }

    /// The config plugin `index` of the attachment receives.
    fn plugin(
        &self,
        attachment: &Attachment<'_>,
        index: usize,
        injection: &PluginInjection<'_>,
    ) -> Result<(String, Value), CniError> {
        let config = plugin_config(attachment.list, index, injection)?;
        let plugin_type = attachment
            .list
            .plugin_type(index)
            .unwrap_or_default()
            .to_string();
        Ok((plugin_type, config))
    }

    /// ADD one attachment: every plugin of its config in order, each getting
    /// the previous one's result. Returns the last result, in the config's
    /// version. A failure DELs the plugins before the failed one (a wasm
    /// plugin's failed ADD has already undone itself; a native one gets its
    /// DEL, as libcni's callers do).
    pub fn add(&self, attachment: &Attachment<'_>) -> Result<CniResult, CniError> {
        let list = attachment.list;
        let mut previous: Option<CniResult> = None;
        for index in 0..list.plugins.len() {
            let injection = PluginInjection {
                prev_result: previous.as_ref(),
                capability_args: Some(attachment.capability_args),
                valid_attachments: None,
            };
            let outcome = self
                .plugin(attachment, index, &injection)
                .and_then(|(plugin_type, config)| {
                    match self.delegate_runner(&plugin_type, attachment, &config)? {
                        Runner::Wasm(guest) => wasm::add(
                            self,
                            guest.as_ref(),
                            attachment,
                            index,
                            &config,
                            previous.as_ref(),
                        ),
                        Runner::Native(binary) => {
                            self.exec_add(&plugin_type, &binary, attachment, &config)
                        }
                    }
                })
                .and_then(|result| result.convert_to(list.cni_version));
            match outcome {
                Ok(result) => previous = Some(result),
                Err(err) => {
                    if let Err(undo) =
                        self.del_plugins(attachment, index, previous.as_ref(), LinkPlans::Run)
                    {
                        tracing::error!(network = %list.name, error = %undo, "DEL of the plugins before the failed one failed");
                    }
                    return Err(err);
                }
            }
        }
        previous.ok_or_else(|| {
            CniError::invalid_network_config(format!("network {} has no plugins", list.name))
        })
    }

    fn exec_add(
        &self,
        plugin_type: &str,
        binary: &Path,
        attachment: &Attachment<'_>,
        config: &Value,
    ) -> Result<CniResult, CniError> {
        let context = self.exec_context(attachment);
        let added = self
            .plugins
            .exec(binary, CniCommand::Add, config, &context)
            .and_then(|result| {
                result
                    .ok_or_else(|| CniError::internal(format!("{plugin_type} returned no result")))
            });
        if added.is_err()
            && let Err(err) = self.plugins.exec(binary, CniCommand::Del, config, &context)
        {
            tracing::error!(plugin = plugin_type, error = %err, "DEL after a failed ADD failed");
        }
        added
    }

    /// Run IPAM plugin `ipam_type` for `command`: a wasm IPAM plugin (with
    /// the network's store, locked for the call) or the native binary.
    fn ipam(
        &self,
        ipam_type: &str,
        command: CniCommand,
        attachment: &Attachment<'_>,
        config: &Value,
        extra: IpamExtra<'_>,
    ) -> Result<Option<CniResult>, CniError> {
        match self.runner(ipam_type, attachment, config)? {
            Runner::Wasm(guest) => {
                expect_world(guest.as_ref(), World::Ipam)?;
                wasm::ipam(self, guest.as_ref(), command, attachment, config, extra)
            }
            Runner::Native(binary) => {
                self.plugins
                    .exec(&binary, command, config, &self.exec_context(attachment))
            }
        }
    }

    /// Whether a wasm delegate's `ipam.type` runs natively, after the link
    /// (see [`crate::plan::ipam::ipam_order`]): its DEL must run while the
    /// link exists. A type that cannot be resolved counts as wasm (nothing
    /// to order).
    fn ipam_needs_link(&self, config: &Value) -> bool {
        ipam_type(config).is_some_and(|ipam_type| matches!(self.plugins.wasm(ipam_type), Ok(None)))
    }

    /// Before the pod's batch delete takes the links: the native IPAM of
    /// every wasm delegate of the attachment (the plugins in reverse), which
    /// needs the link to release (a DHCP lease). [`LinkPlans::Skip`] then
    /// leaves it out. Keeps going after errors.
    pub fn release_link_ipam(
        &self,
        attachment: &Attachment<'_>,
        cached: Option<&CniResult>,
    ) -> Result<(), CniError> {
        self.del_walk(
            attachment,
            attachment.list.plugins.len(),
            cached,
            |_, plugin_type, config, prev_result| match self.plugins.wasm(plugin_type)? {
                Some(_) if self.ipam_needs_link(config) => {
                    self.ipam_del(attachment, config, prev_result)
                }
                _ => Ok(()),
            },
        )
    }

    /// Release a wasm delegate's IPAM allocation (DEL).
    fn ipam_del(
        &self,
        attachment: &Attachment<'_>,
        config: &Value,
        prev_result: Option<&CniResult>,
    ) -> Result<(), CniError> {
        match ipam_type(config) {
            Some(ipam_type) => self
                .ipam(
                    ipam_type,
                    CniCommand::Del,
                    attachment,
                    config,
                    IpamExtra {
                        prev_result,
                        valid_attachments: &[],
                    },
                )
                .map(|_| ()),
            None => Ok(()),
        }
    }

    /// DEL one attachment: every plugin in reverse, each with the cached
    /// result as prevResult (configs ≥ 0.4.0). Keeps going after errors and
    /// returns them all. With [`LinkPlans::Skip`] (the pod's batch delete
    /// took the links), wasm delegates only release their IPAM.
    pub fn del(
        &self,
        attachment: &Attachment<'_>,
        cached: Option<&CniResult>,
        link_plans: LinkPlans,
    ) -> Result<(), CniError> {
        self.del_plugins(
            attachment,
            attachment.list.plugins.len(),
            cached,
            link_plans,
        )
    }

    /// DEL the first `count` plugins, in reverse.
    fn del_plugins(
        &self,
        attachment: &Attachment<'_>,
        count: usize,
        cached: Option<&CniResult>,
        link_plans: LinkPlans,
    ) -> Result<(), CniError> {
        self.del_walk(
            attachment,
            count,
            cached,
            |index, plugin_type, config, prev_result| {
                // A plugin that kept state for this attachment (a chained
                // plugin with settings to put back) gets its DEL even when
                // the batch delete takes the links.
                let kept_state = attachment.plugin_state.borrow().contains_key(&index);
                match self.delegate_runner(plugin_type, attachment, config)? {
                    Runner::Wasm(_) if link_plans == LinkPlans::Skip && !kept_state => {
                        if self.ipam_needs_link(config) {
                            // Released before the batch (release_link_ipam).
                            Ok(())
                        } else {
                            self.ipam_del(attachment, config, prev_result)
                        }
                    }
                    Runner::Wasm(guest) => {
                        wasm::del(self, guest.as_ref(), attachment, index, config, prev_result)
                    }
                    Runner::Native(binary) => self
                        .plugins
                        .exec(
                            &binary,
                            CniCommand::Del,
                            config,
                            &self.exec_context(attachment),
                        )
                        .map(|_| ()),
                }
            },
        )
    }

    /// The first `count` plugins of `attachment` in reverse, each with its
    /// injected config and the prevResult DEL passes (configs >= 0.4.0),
    /// handed to `each`; keeps going after errors and returns them all.
    fn del_walk(
        &self,
        attachment: &Attachment<'_>,
        count: usize,
        cached: Option<&CniResult>,
        each: impl Fn(usize, &str, &Value, Option<&CniResult>) -> Result<(), CniError>,
    ) -> Result<(), CniError> {
        let list = attachment.list;
        let prev_result = cached.filter(|_| list.cni_version.passes_prev_result_on_del());
        let mut errors = Vec::new();
        for index in (0..count).rev() {
            let injection = PluginInjection {
                prev_result,
                capability_args: Some(attachment.capability_args),
                valid_attachments: None,
            };
            let outcome = self
                .plugin(attachment, index, &injection)
                .and_then(|(plugin_type, config)| each(index, &plugin_type, &config, prev_result));
            if let Err(err) = outcome {
                errors.push(err);
            }
        }
        join_errors(errors)
    }

    /// CHECK one attachment against its cached result.
    ///
    /// A config older than CHECK (cniVersion below 0.4.0) cannot be
    /// checked. A pod's own attachment (from a NAD) is then skipped: Multus
    /// never CHECKs those at all, and an old NAD must not fail the pod's
    /// CHECK. The operator's own networks (cluster network, `delegates`,
    /// `defaultNetworks`) are refused, as libcni refuses them when Multus
    /// CHECKs its delegates (and as the plugin itself does).
    pub fn check(&self, attachment: &Attachment<'_>, cached: &CniResult) -> Result<(), CniError> {
        let list = attachment.list;
        if list.disable_check {
            return Ok(());
        }
        if !list.cni_version.allows_check() {
            if attachment.operator {
                return Err(CniError::incompatible_version(format!(
                    "network {} has cniVersion {}: CHECK needs 0.4.0 or later",
                    list.name, list.cni_version
                )));
            }
            tracing::info!(
                network = %attachment.name,
                cni_version = %list.cni_version,
                "CHECK skipped: the network's cniVersion predates CHECK (0.4.0)"
            );
            return Ok(());
        }
        for index in 0..list.plugins.len() {
            let injection = PluginInjection {
                prev_result: Some(cached),
                capability_args: Some(attachment.capability_args),
                valid_attachments: None,
            };
            let (plugin_type, config) = self.plugin(attachment, index, &injection)?;
            match self.delegate_runner(&plugin_type, attachment, &config)? {
                Runner::Wasm(guest) => {
                    wasm::check(self, guest.as_ref(), attachment, index, &config, cached)?
                }
                Runner::Native(binary) => {
                    self.plugins.exec(
                        &binary,
                        CniCommand::Check,
                        &config,
                        &self.exec_context(attachment),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// GC one network: every plugin (and wasm IPAM) gets the attachments to
    /// keep. Keeps going after errors. A config older than GC (cniVersion
    /// below 1.1.0) is skipped whole, wasm IPAM included, as libcni skips
    /// it: its stale attachments were DEL'd already.
    pub fn gc(&self, attachment: &Attachment<'_>, keep: &[GcAttachment]) -> Result<(), CniError> {
        let list = attachment.list;
        if list.disable_gc {
            return Ok(());
        }
        if !list.cni_version.allows_gc_status() {
            tracing::info!(
                network = %attachment.name,
                cni_version = %list.cni_version,
                "GC skipped: the network's cniVersion predates GC (1.1.0)"
            );
            return Ok(());
        }
        let pairs: Vec<(String, String)> = keep
            .iter()
            .map(|kept| (kept.container_id.clone(), kept.ifname.clone()))
            .collect();
        let mut errors = Vec::new();
        for index in 0..list.plugins.len() {
            let injection = PluginInjection {
                prev_result: None,
                capability_args: None,
                valid_attachments: Some(keep),
            };
            let outcome =
                self.plugin(attachment, index, &injection)
                    .and_then(|(plugin_type, config)| {
                        match self.delegate_runner(&plugin_type, attachment, &config)? {
                            Runner::Wasm(_) => match ipam_type(&config) {
                                Some(ipam_type) => self
                                    .ipam(
                                        ipam_type,
                                        CniCommand::Gc,
                                        attachment,
                                        &config,
                                        IpamExtra {
                                            prev_result: None,
                                            valid_attachments: &pairs,
                                        },
                                    )
                                    .map(|_| ()),
                                None => Ok(()),
                            },
                            Runner::Native(binary) => self
                                .plugins
                                .exec(
                                    &binary,
                                    CniCommand::Gc,
                                    &config,
                                    &self.exec_context(attachment),
                                )
                                .map(|_| ()),
                        }
                    });
            if let Err(err) = outcome {
                errors.push(err);
            }
        }
        join_errors(errors)
    }

    /// STATUS of one network: every wasm plugin it names must load (digest,
    /// ABI) and every binary must exist; native plugins of a ≥1.1.0 config
    /// get STATUS themselves.
    pub fn status(&self, attachment: &Attachment<'_>) -> Result<(), CniError> {
        let list = attachment.list;
        let not_available = |err: CniError| CniError::not_available(err.to_string());
        for index in 0..list.plugins.len() {
            let (plugin_type, config) =
                self.plugin(attachment, index, &PluginInjection::default())?;
            let own = std::iter::once((plugin_type.as_str(), true));
            let ipam = ipam_type(&config).map(|ipam_type| (ipam_type, false));
            for (name, is_own) in own.chain(ipam) {
                let runner = if is_own {
                    self.delegate_runner(name, attachment, &config)
                } else {
                    self.runner(name, attachment, &config)
                }
                .map_err(not_available)?;
                if let Runner::Native(binary) = runner
                    && is_own
                    && list.cni_version.allows_gc_status()
                {
                    self.plugins.exec(
                        &binary,
                        CniCommand::Status,
                        &config,
                        &self.exec_context(attachment),
                    )?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared<T: Send + Sync>() {}

    #[test]
    fn the_node_side_is_shareable_by_concurrent_calls() {
        // Compile-time: what a daemon shares between calls is Send + Sync.
        shared::<NodePlugins>();
        shared::<Sandbox>();
        shared::<LoadedPlugin>();
        shared::<Arc<dyn Guest>>();
        shared::<MultusConfig>();
        shared::<DirStores>();
    }
}
