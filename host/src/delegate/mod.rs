//! Delegates: running one attachment's network configuration, plugin by
//! plugin, as a wasm plugin in the sandbox when one is registered for the
//! plugin's `type`, else as the native binary of that name.
//!
//! A wasm delegate's ADD: run its IPAM first (a wasm IPAM plugin with the
//! network's store locked, or the IPAM binary), hand the result to the
//! delegate, check its plan against the policy, apply it, fill the result's
//! MACs from the kernel. Any failure after IPAM releases the IPAM allocation;
//! a failed apply has already undone itself. DEL runs the delegate's plan
//! (if the pod's namespace still exists), then IPAM DEL, and keeps going
//! after errors.

pub mod exec;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::cni::{
    CniCommand, CniError, CniResult, GcAttachment, NetworkConfigList, PluginInjection,
    plugin_config,
};
use crate::config::MultusConfig;
use crate::netlink::executor::{self, Executor};
use crate::netlink::handles::{Handles, NetnsError, NetnsFile};
use crate::netlink::policy::{self, MasterRules, PolicyContext};
use crate::netlink::query::{GuestLinks, link_by_name};
use crate::sandbox::{
    IpamStore, Limits, Plugin, PluginCommand, PluginRequest, Sandbox, SandboxError, World,
};
use crate::store::ipam::{DEFAULT_DATA_DIR, DEFAULT_MAX_KEYS, DirStore, StoreError, StoreOptions};
use exec::ExecContext;

/// Everything one CNI call needs to run delegates: the config, the
/// sandbox and loaded plugins, netlink handles, the pod's namespace.
pub struct Node<'a> {
    pub config: &'a MultusConfig,
    pub container_id: String,
    /// `CNI_NETNS` as given (may be empty on DEL).
    pub netns_path: String,
    netns: Option<NetnsFile>,
    runtime: Arc<tokio::runtime::Runtime>,
    handles: RefCell<Option<Handles>>,
    sandbox: RefCell<Option<Rc<Sandbox>>>,
    plugins: RefCell<HashMap<String, Rc<Plugin>>>,
    bin_dirs: Vec<PathBuf>,
    /// Plugin types of the operator's own attachments in this call: with
    /// `nativePlugins` unset, a NAD may use them too.
    operator_types: RefCell<BTreeSet<String>>,
}

impl std::fmt::Debug for Node<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("container_id", &self.container_id)
            .field("netns", &self.netns_path)
            .finish()
    }
}

/// The limits of wasm calls, from the host config's `wasmLimits`.
pub fn limits_from_config(config: &MultusConfig) -> Limits {
    limits_from(&config.wasm_limits)
}

/// The sandbox limits for `wasmLimits` (unset fields keep the defaults).
pub fn limits_from(wasm: &crate::config::WasmLimits) -> Limits {
    let mut limits = Limits::default();
    if let Some(fuel) = wasm.fuel {
        limits.fuel = fuel;
    }
    if let Some(timeout) = wasm.timeout_ms {
        limits.timeout = std::time::Duration::from_millis(timeout);
    }
    if let Some(memory) = wasm.memory_mib {
        limits.memory_bytes = (memory as usize) << 20;
    }
    if let Some(stack) = wasm.max_stack_kib {
        limits.max_wasm_stack = (stack as usize) << 10;
    }
    if let Some(ops) = wasm.max_ops {
        limits.max_ops = ops as usize;
    }
    if let Some(bytes) = wasm.max_string_bytes {
        limits.max_string_bytes = bytes as usize;
    }
    limits
}

/// One attachment to run: its config (single or conflist), interface,
/// CNI_ARGS and runtimeConfig values.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    /// For messages: `<ns>/<nad>` or the cluster network's name.
    pub name: &'a str,
    /// Written by the operator (cluster network, `delegates`,
    /// `defaultNetworks`): its native plugins are not limited by
    /// `nativePlugins`.
    pub operator: bool,
    pub config: &'a Value,
    pub ifname: &'a str,
    pub cni_args: &'a [(String, String)],
    pub capability_args: &'a Map<String, Value>,
}

impl<'a> Node<'a> {
    /// Prepare a call for `container_id` in `netns_path`. A netns that does
    /// not exist is `Ok` here (DEL tolerates it); one that is not a network
    /// namespace is an error.
    pub fn new(
        config: &'a MultusConfig,
        runtime: Arc<tokio::runtime::Runtime>,
        container_id: &str,
        netns_path: &str,
        cni_path: &[String],
    ) -> Result<Self, CniError> {
        let netns = if netns_path.is_empty() {
            None
        } else {
            match NetnsFile::open(Path::new(netns_path)) {
                Ok(netns) => Some(netns),
                Err(NetnsError::Missing { .. }) => None,
                Err(err) => return Err(CniError::invalid_environment(err.to_string())),
            }
        };
        let mut bin_dirs = vec![config.bin_dir.clone()];
        bin_dirs.extend(cni_path.iter().map(PathBuf::from));
        Ok(Node {
            config,
            container_id: container_id.into(),
            netns_path: netns_path.into(),
            netns,
            runtime,
            handles: RefCell::new(None),
            sandbox: RefCell::new(None),
            plugins: RefCell::new(HashMap::new()),
            bin_dirs,
            operator_types: RefCell::new(BTreeSet::new()),
        })
    }

    /// A node for another container of the same call (GC of stale pods),
    /// sharing the config, runtime, sandbox and loaded plugins.
    pub fn for_container(
        &self,
        container_id: &str,
        netns_path: &str,
    ) -> Result<Node<'a>, CniError> {
        let cni_path: Vec<String> = self.bin_dirs[1..]
            .iter()
            .map(|dir| dir.display().to_string())
            .collect();
        let node = Node::new(
            self.config,
            self.runtime.clone(),
            container_id,
            netns_path,
            &cni_path,
        )?;
        *node.sandbox.borrow_mut() = self.sandbox.borrow().clone();
        *node.plugins.borrow_mut() = self.plugins.borrow().clone();
        *node.operator_types.borrow_mut() = self.operator_types.borrow().clone();
        Ok(node)
    }

    /// Record the plugin types of the operator's own attachments of this
    /// call (every plugin and IPAM type of their configs).
    pub fn add_operator_types<'c>(&self, configs: impl IntoIterator<Item = &'c Value>) {
        let mut types = self.operator_types.borrow_mut();
        for config in configs {
            types.extend(crate::attachments::delegate_types(config));
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
        exec::refuse_meta_plugin(plugin_type)?;
        if attachment.operator
            || self.config.native_plugin_allowed(plugin_type)
            || (self.config.native_plugins.is_none()
                && self.operator_types.borrow().contains(plugin_type))
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
    /// `config`, if the operator allows it (see [`Self::check_native_type`]).
    /// A native plugin execs its own `ipam.type` from the same path, so that
    /// type is checked too; neither may be this very binary under another
    /// name.
    fn native_binary(
        &self,
        plugin_type: &str,
        attachment: &Attachment<'_>,
        config: &Value,
    ) -> Result<PathBuf, CniError> {
        self.check_native_type(plugin_type, attachment)?;
        let binary = exec::find_plugin(plugin_type, &self.bin_dirs)?;
        exec::refuse_self(plugin_type, &binary)?;
        if let Some(ipam_type) = ipam_type(config).filter(|ipam_type| ipam_type != plugin_type) {
            self.check_native_type(&ipam_type, attachment)?;
            if let Ok(ipam_binary) = exec::find_plugin(&ipam_type, &self.bin_dirs) {
                exec::refuse_self(&ipam_type, &ipam_binary)?;
            }
        }
        Ok(binary)
    }

    /// Whether the pod's network namespace exists.
    pub fn has_netns(&self) -> bool {
        self.netns.is_some()
    }

    pub fn netns(&self) -> Option<&NetnsFile> {
        self.netns.as_ref()
    }

    /// The netlink handles (host, and pod when it exists), opened once.
    pub fn handles(&self) -> Result<Handles, CniError> {
        if let Some(handles) = self.handles.borrow().as_ref() {
            return Ok(handles.clone());
        }
        let _span = crate::timing::span("netlink");
        let handles = Handles::open(self.runtime.clone(), self.netns.as_ref())
            .map_err(|err| CniError::internal(err.to_string()))?;
        *self.handles.borrow_mut() = Some(handles.clone());
        Ok(handles)
    }

    fn sandbox(&self) -> Result<Rc<Sandbox>, CniError> {
        if let Some(sandbox) = self.sandbox.borrow().as_ref() {
            return Ok(sandbox.clone());
        }
        let sandbox = Rc::new(Sandbox::new(
            limits_from_config(self.config),
            Some(&self.config.wasm_cache_dir),
        )?);
        *self.sandbox.borrow_mut() = Some(sandbox.clone());
        Ok(sandbox)
    }

    /// The wasm plugin registered for `plugin_type`, loaded once per call.
    pub fn wasm_plugin(&self, plugin_type: &str) -> Result<Option<Rc<Plugin>>, CniError> {
        let Some(registered) = self.config.wasm_plugins.get(plugin_type) else {
            return Ok(None);
        };
        if let Some(plugin) = self.plugins.borrow().get(plugin_type) {
            return Ok(Some(plugin.clone()));
        }
        let _span = crate::timing::span("plugin-load");
        let sandbox = self.sandbox()?;
        let plugin =
            Rc::new(sandbox.load(plugin_type, &registered.path, Some(&registered.sha256))?);
        tracing::debug!(plugin = plugin_type, sha256 = %plugin.digest, cache = ?plugin.cache_outcome, "loaded wasm plugin");
        self.plugins
            .borrow_mut()
            .insert(plugin_type.into(), plugin.clone());
        Ok(Some(plugin))
    }

    fn exec_context<'c>(&'c self, attachment: &'c Attachment<'_>) -> ExecContext<'c> {
        ExecContext {
            bin_dirs: &self.bin_dirs,
            container_id: &self.container_id,
            netns: &self.netns_path,
            ifname: attachment.ifname,
            args: attachment.cni_args,
        }
    }

    /// The link queries a guest gets (host links limited to possible
    /// masters) and where the hidden ones are recorded.
    fn links(&self) -> Result<(Box<GuestLinks>, Refusals), CniError> {
        let refusals = Refusals::default();
        let links = GuestLinks::new(
            self.handles()?,
            self.config.allowed_masters.clone(),
            refusals.clone(),
        );
        Ok((Box::new(links), refusals))
    }

    /// Run a delegate; when it fails after a host link was hidden from it,
    /// the failure is that policy refusal (the plugin could only report
    /// "not found").
    fn call_delegate(
        &self,
        plugin: &Plugin,
        request: &PluginRequest,
    ) -> Result<(crate::netlink::Plan, crate::sandbox::CallStats), CniError> {
        let sandbox = self.sandbox()?;
        let (links, refusals) = self.links()?;
        sandbox
            .call_delegate(plugin, links, request)
            .map_err(|err| match (&err, refusals.lock().ok().and_then(|r| r.first().cloned())) {
                (SandboxError::Plugin { .. }, Some(reason)) => CniError::new(
                    policy::POLICY_CODE,
                    format!(
                        "plugin {} (sha256 {}): refused by policy: {reason} (the plugin said: {err})",
                        plugin.name, plugin.digest
                    ),
                ),
                _ => err.into(),
            })
    }

    fn request(
        &self,
        command: PluginCommand,
        attachment: &Attachment<'_>,
        config: &Value,
    ) -> PluginRequest {
        PluginRequest {
            command,
            container_id: self.container_id.clone(),
            netns: self.netns_path.clone(),
            ifname: attachment.ifname.into(),
            args: attachment.cni_args.to_vec(),
            config: config.to_string(),
            prev_result: None,
            ipam_result: None,
            valid_attachments: Vec::new(),
        }
    }

    /// ADD one attachment: every plugin of its config in order, each getting
    /// the previous one's result. Returns the last result, in the config's
    /// version. On failure the caller DELs the attachment (every plugin, in
    /// reverse), as Multus does.
    pub fn add(&self, attachment: &Attachment<'_>) -> Result<CniResult, CniError> {
        let list = NetworkConfigList::from_value(attachment.config.clone())?;
        let mut previous: Option<CniResult> = None;
        for index in 0..list.plugins.len() {
            let injection = PluginInjection {
                prev_result: previous.as_ref(),
                capability_args: Some(attachment.capability_args),
                valid_attachments: None,
            };
            let config = plugin_config(&list, index, &injection)?;
            let plugin_type = list.plugin_type(index).unwrap_or_default();
            let outcome = match self.wasm_plugin(plugin_type)? {
                // A wasm plugin's failed ADD has already undone itself.
                Some(plugin) => self.wasm_add(&plugin, attachment, &config, previous.as_ref()),
                None => self.exec_add(plugin_type, attachment, &config),
            };
            match outcome.and_then(|result| result.convert_to(list.cni_version)) {
                Ok(result) => previous = Some(result),
                Err(err) => {
                    if let Err(undo) = self.del_plugins(
                        attachment,
                        &list,
                        index,
                        previous.as_ref(),
                        LinkPlans::Run,
                    ) {
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

    /// ADD through a native plugin; on failure it gets a DEL, as libcni's
    /// callers do, so it can clean up what it half did.
    fn exec_add(
        &self,
        plugin_type: &str,
        attachment: &Attachment<'_>,
        config: &Value,
    ) -> Result<CniResult, CniError> {
        let binary = self.native_binary(plugin_type, attachment, config)?;
        let context = self.exec_context(attachment);
        let added =
            exec::exec_plugin(&binary, CniCommand::Add, config, &context).and_then(|result| {
                result
                    .ok_or_else(|| CniError::internal(format!("{plugin_type} returned no result")))
            });
        if added.is_err()
            && let Err(err) = exec::exec_plugin(&binary, CniCommand::Del, config, &context)
        {
            tracing::error!(plugin = plugin_type, error = %err, "DEL after a failed ADD failed");
        }
        added
    }

    fn wasm_add(
        &self,
        plugin: &Plugin,
        attachment: &Attachment<'_>,
        config: &Value,
        previous: Option<&CniResult>,
    ) -> Result<CniResult, CniError> {
        if plugin.abi.world != World::Delegate {
            return Err(SandboxError::WrongWorld {
                plugin: plugin.name.clone(),
                digest: plugin.digest.clone(),
                actual: plugin.abi.world,
                expected: World::Delegate,
            }
            .into());
        }
        let netns = self.netns.as_ref().ok_or_else(|| {
            CniError::invalid_environment(format!("netns {} does not exist", self.netns_path))
        })?;
        let ipam_type = ipam_type(config);
        let ipam_result = match &ipam_type {
            Some(ipam_type) => {
                self.ipam(ipam_type, PluginCommand::Add, attachment, config, None)?
            }
            None => None,
        };
        let outcome = (|| {
            let mut request = self.request(PluginCommand::Add, attachment, config);
            request.prev_result = previous.cloned();
            request.ipam_result = ipam_result.clone();
            let (plan, stats) = self.call_delegate(plugin, &request)?;
            tracing::debug!(plugin = %plugin.name, ops = plan.ops.len(), fuel = stats.fuel_consumed, call_us = stats.call_micros, "delegate planned");
            self.check_plan(plugin, &plan.ops, PluginCommand::Add, attachment.ifname)?;
            let handles = self.handles()?;
            let executor = Executor::new(&handles, netns);
            let journal = executor.apply(&plan.ops)?;
            let mut result = plan
                .result
                .unwrap_or_else(|| CniResult::empty(crate::cni::CniVersion::V1_1_0));
            for interface in &mut result.interfaces {
                let created_here = interface.name == attachment.ifname
                    || interface.sandbox.as_deref() == Some(self.netns_path.as_str());
                if created_here {
                    match executor::link_mac(&handles, &interface.name) {
                        Some(mac) => interface.mac = Some(mac.to_string()),
                        None => {
                            let errors = executor.undo(journal);
                            return Err(CniError::internal(format!(
                                "plugin {} reported interface {} but it is not in the pod{}",
                                plugin.name,
                                interface.name,
                                if errors.is_empty() {
                                    String::new()
                                } else {
                                    format!(" (undo: {})", errors.join("; "))
                                }
                            )));
                        }
                    }
                    interface.sandbox = Some(self.netns_path.clone());
                }
            }
            Ok(result)
        })();
        if outcome.is_err()
            && let Some(ipam_type) = &ipam_type
            && ipam_result.is_some()
            && let Err(err) = self.ipam(ipam_type, PluginCommand::Del, attachment, config, None)
        {
            tracing::error!(ipam = %ipam_type, error = %err, "releasing the IPAM allocation after a failed ADD also failed");
        }
        outcome
    }

    /// Run the IPAM plugin `ipam_type` for `command`: a wasm IPAM plugin
    /// (with the network's store, locked for the call) or the binary.
    fn ipam(
        &self,
        ipam_type: &str,
        command: PluginCommand,
        attachment: &Attachment<'_>,
        config: &Value,
        extra: Option<IpamExtra<'_>>,
    ) -> Result<Option<CniResult>, CniError> {
        match self.wasm_plugin(ipam_type)? {
            Some(plugin) => {
                if plugin.abi.world != World::Ipam {
                    return Err(SandboxError::WrongWorld {
                        plugin: plugin.name.clone(),
                        digest: plugin.digest.clone(),
                        actual: plugin.abi.world,
                        expected: World::Ipam,
                    }
                    .into());
                }
                let sandbox = self.sandbox()?;
                let mut request = self.request(command, attachment, config);
                if let Some(extra) = extra {
                    request.prev_result = extra.prev_result.cloned();
                    request.valid_attachments = extra.valid_attachments.to_vec();
                }
                let lock_timeout = Arc::new(std::sync::Mutex::new(None));
                let options = StoreOptions {
                    lock_deadline: std::time::Instant::now() + sandbox.limits().timeout,
                    max_keys: self
                        .config
                        .wasm_limits
                        .store_max_keys
                        .map_or(DEFAULT_MAX_KEYS, |keys| keys as usize),
                };
                let store = LazyStore::new(config, options, lock_timeout.clone());
                let (links, _) = self.links()?;
                let outcome = sandbox.call_ipam(&plugin, links, Box::new(store), &request);
                if let Some(message) = lock_timeout.lock().ok().and_then(|slot| slot.clone()) {
                    return Err(CniError::try_again_later(format!(
                        "plugin {} (sha256 {}): {message}",
                        plugin.name, plugin.digest
                    )));
                }
                Ok(outcome?.0)
            }
            None => {
                let binary = self.native_binary(ipam_type, attachment, config)?;
                let command = match command {
                    PluginCommand::Add => CniCommand::Add,
                    PluginCommand::Del => CniCommand::Del,
                    PluginCommand::Check => CniCommand::Check,
                    PluginCommand::Status => CniCommand::Status,
                    PluginCommand::Gc => CniCommand::Gc,
                };
                exec::exec_plugin(&binary, command, config, &self.exec_context(attachment))
            }
        }
    }

    /// DEL one attachment: every plugin in reverse, each with the cached
    /// result as prevResult (configs ≥ 0.4.0). Keeps going after errors and
    /// returns them all.
    pub fn del(
        &self,
        attachment: &Attachment<'_>,
        cached: Option<&CniResult>,
    ) -> Result<(), CniError> {
        let list = NetworkConfigList::from_value(attachment.config.clone())?;
        self.del_plugins(
            attachment,
            &list,
            list.plugins.len(),
            cached,
            LinkPlans::Run,
        )
    }

    /// DEL one attachment whose wasm-created links are already deleted (the
    /// pod's batch delete): wasm delegates are not called, since a DEL plan
    /// may only delete the attachment's link; their IPAM is released and
    /// native plugins run as usual.
    pub fn del_after_batch_delete(
        &self,
        attachment: &Attachment<'_>,
        cached: Option<&CniResult>,
    ) -> Result<(), CniError> {
        let list = NetworkConfigList::from_value(attachment.config.clone())?;
        self.del_plugins(
            attachment,
            &list,
            list.plugins.len(),
            cached,
            LinkPlans::Skip,
        )
    }

    /// DEL the first `count` plugins of `list`, in reverse.
    fn del_plugins(
        &self,
        attachment: &Attachment<'_>,
        list: &NetworkConfigList,
        count: usize,
        cached: Option<&CniResult>,
        link_plans: LinkPlans,
    ) -> Result<(), CniError> {
        let prev_result = cached.filter(|_| list.cni_version.passes_prev_result_on_del());
        let mut errors = Vec::new();
        for index in (0..count).rev() {
            let injection = PluginInjection {
                prev_result,
                capability_args: Some(attachment.capability_args),
                valid_attachments: None,
            };
            let outcome = plugin_config(list, index, &injection).and_then(|config| {
                let plugin_type = list.plugin_type(index).unwrap_or_default();
                if link_plans == LinkPlans::Skip
                    && self.config.wasm_plugins.contains_key(plugin_type)
                {
                    return self.ipam_del(attachment, &config, prev_result);
                }
                match self.wasm_plugin(plugin_type)? {
                    Some(plugin) => self.wasm_del(&plugin, attachment, &config, prev_result),
                    None => {
                        let binary = self.native_binary(plugin_type, attachment, &config)?;
                        exec::exec_plugin(
                            &binary,
                            CniCommand::Del,
                            &config,
                            &self.exec_context(attachment),
                        )
                        .map(|_| ())
                    }
                }
            });
            if let Err(err) = outcome {
                errors.push(err);
            }
        }
        join_errors(errors)
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
                    &ipam_type,
                    PluginCommand::Del,
                    attachment,
                    config,
                    Some(IpamExtra {
                        prev_result,
                        valid_attachments: &[],
                    }),
                )
                .map(|_| ()),
            None => Ok(()),
        }
    }

    fn wasm_del(
        &self,
        plugin: &Plugin,
        attachment: &Attachment<'_>,
        config: &Value,
        prev_result: Option<&CniResult>,
    ) -> Result<(), CniError> {
        let mut errors = Vec::new();
        if let Some(netns) = &self.netns {
            let outcome = (|| {
                let mut request = self.request(PluginCommand::Del, attachment, config);
                request.prev_result = prev_result.cloned();
                let (plan, _) = self.call_delegate(plugin, &request)?;
                self.check_plan(plugin, &plan.ops, PluginCommand::Del, attachment.ifname)?;
                let handles = self.handles()?;
                Executor::new(&handles, netns).apply(&plan.ops)?;
                Ok::<(), CniError>(())
            })();
            if let Err(err) = outcome {
                errors.push(err);
            }
        }
        if let Err(err) = self.ipam_del(attachment, config, prev_result) {
            errors.push(err);
        }
        join_errors(errors)
    }

    /// CHECK one attachment against its cached result.
    pub fn check(&self, attachment: &Attachment<'_>, cached: &CniResult) -> Result<(), CniError> {
        let list = NetworkConfigList::from_value(attachment.config.clone())?;
        if list.disable_check {
            return Ok(());
        }
        if !list.cni_version.allows_check() {
            return Err(CniError::incompatible_version(format!(
                "network {} has cniVersion {}: CHECK needs 0.4.0 or later",
                list.name, list.cni_version
            )));
        }
        for index in 0..list.plugins.len() {
            let injection = PluginInjection {
                prev_result: Some(cached),
                capability_args: Some(attachment.capability_args),
                valid_attachments: None,
            };
            let config = plugin_config(&list, index, &injection)?;
            let plugin_type = list.plugin_type(index).unwrap_or_default();
            match self.wasm_plugin(plugin_type)? {
                Some(plugin) => {
                    if let Some(ipam_type) = ipam_type(&config) {
                        self.ipam(
                            &ipam_type,
                            PluginCommand::Check,
                            attachment,
                            &config,
                            Some(IpamExtra {
                                prev_result: Some(cached),
                                valid_attachments: &[],
                            }),
                        )?;
                    }
                    let mut request = self.request(PluginCommand::Check, attachment, &config);
                    request.prev_result = Some(cached.clone());
                    let (plan, _) = self.call_delegate(&plugin, &request)?;
                    self.check_plan(&plugin, &plan.ops, PluginCommand::Check, attachment.ifname)?;
                }
                None => {
                    let binary = self.native_binary(plugin_type, attachment, &config)?;
                    exec::exec_plugin(
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
    /// keep. Keeps going after errors.
    pub fn gc(
        &self,
        config: &Value,
        operator: bool,
        keep: &[GcAttachment],
    ) -> Result<(), CniError> {
        let list = NetworkConfigList::from_value(config.clone())?;
        if list.disable_gc {
            return Ok(());
        }
        let empty = Map::new();
        let attachment = Attachment {
            name: &list.name,
            operator,
            config,
            ifname: "",
            cni_args: &[],
            capability_args: &empty,
        };
        let pairs: Vec<(String, String)> = keep
            .iter()
            .map(|attachment| (attachment.container_id.clone(), attachment.ifname.clone()))
            .collect();
        let mut errors = Vec::new();
        for index in 0..list.plugins.len() {
            let injection = PluginInjection {
                prev_result: None,
                capability_args: None,
                valid_attachments: Some(keep),
            };
            let outcome = plugin_config(&list, index, &injection).and_then(|plugin_config| {
                let plugin_type = list.plugin_type(index).unwrap_or_default();
                match self.wasm_plugin(plugin_type)? {
                    Some(_) => match ipam_type(&plugin_config) {
                        Some(ipam_type) => self
                            .ipam(
                                &ipam_type,
                                PluginCommand::Gc,
                                &attachment,
                                &plugin_config,
                                Some(IpamExtra {
                                    prev_result: None,
                                    valid_attachments: &pairs,
                                }),
                            )
                            .map(|_| ()),
                        None => Ok(()),
                    },
                    None if list.cni_version.allows_gc_status() => {
                        let binary =
                            self.native_binary(plugin_type, &attachment, &plugin_config)?;
                        exec::exec_plugin(
                            &binary,
                            CniCommand::Gc,
                            &plugin_config,
                            &self.exec_context(&attachment),
                        )
                        .map(|_| ())
                    }
                    None => Ok(()),
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
    pub fn status(&self, config: &Value) -> Result<(), CniError> {
        let list = NetworkConfigList::from_value(config.clone())?;
        let empty = Map::new();
        let attachment = Attachment {
            name: &list.name,
            operator: true,
            config,
            ifname: "",
            cni_args: &[],
            capability_args: &empty,
        };
        for index in 0..list.plugins.len() {
            let plugin_config = plugin_config(&list, index, &PluginInjection::default())?;
            let plugin_type = list.plugin_type(index).unwrap_or_default();
            let not_available = |err: CniError| CniError::not_available(err.to_string());
            for name in std::iter::once(plugin_type.to_string()).chain(ipam_type(&plugin_config)) {
                match self.wasm_plugin(&name).map_err(not_available)? {
                    Some(_) => {}
                    None => {
                        let binary = self
                            .native_binary(&name, &attachment, &plugin_config)
                            .map_err(not_available)?;
                        if name == plugin_type && list.cni_version.allows_gc_status() {
                            exec::exec_plugin(
                                &binary,
                                CniCommand::Status,
                                &plugin_config,
                                &self.exec_context(&attachment),
                            )?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Node<'_> {
    /// The policy check of a plan, its refusal naming the plugin and its
    /// sha256 like every other plugin error.
    fn check_plan(
        &self,
        plugin: &Plugin,
        ops: &[crate::netlink::Op],
        command: PluginCommand,
        ifname: &str,
    ) -> Result<(), CniError> {
        let mut host_links = BTreeMap::new();
        let masters = policy::host_masters(ops);
        if !masters.is_empty() {
            let handles = self.handles()?;
            for master in masters {
                let found = handles
                    .runtime
                    .block_on(link_by_name(&handles.host, master))
                    .map_err(|err| {
                        CniError::internal(format!("looking up master {master}: {err}"))
                    })?;
                if let Some(info) = found {
                    host_links.insert(master.to_string(), info);
                }
            }
        }
        let context = PolicyContext {
            command,
            ifname,
            masters: MasterRules {
                allowed_masters: self.config.allowed_masters.as_deref(),
                macvlan_modes: &self.config.allowed_macvlan_modes,
            },
            host_links: &host_links,
        };
        policy::check(ops, &context).map_err(|violation| {
            CniError::new(
                policy::POLICY_CODE,
                format!(
                    "plugin {} (sha256 {}): {violation}",
                    plugin.name, plugin.digest
                ),
            )
        })
    }
}

/// Host links hidden from a guest's queries, with the reason.
type Refusals = Arc<std::sync::Mutex<Vec<String>>>;

/// Whether a DEL runs the wasm delegates' plans (their links still exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkPlans {
    Run,
    Skip,
}

/// What IPAM CHECK, DEL and GC get besides the config.
#[derive(Debug, Clone, Copy)]
struct IpamExtra<'a> {
    prev_result: Option<&'a CniResult>,
    valid_attachments: &'a [(String, String)],
}

/// `ipam.type` of a plugin config, when set.
pub fn ipam_type(config: &Value) -> Option<String> {
    config
        .get("ipam")
        .and_then(|ipam| ipam.get("type"))
        .and_then(Value::as_str)
        .filter(|ipam_type| !ipam_type.is_empty())
        .map(str::to_owned)
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

/// The IPAM store of a network, opened (and locked) on first use: a wasm
/// IPAM plugin that keeps no state (static) never creates a directory.
/// The directory is `<ipam.dataDir or /var/lib/cni/networks>/<name>`, as the
/// reference host-local uses it.
struct LazyStore {
    data_dir: PathBuf,
    network: String,
    options: StoreOptions,
    store: Option<DirStore>,
    /// Set when the network's lock could not be taken before the deadline:
    /// the call then fails with code 11 whatever the plugin makes of it.
    lock_timeout: Arc<std::sync::Mutex<Option<String>>>,
}

impl LazyStore {
    fn new(
        config: &Value,
        options: StoreOptions,
        lock_timeout: Arc<std::sync::Mutex<Option<String>>>,
    ) -> Self {
        let data_dir = config
            .get("ipam")
            .and_then(|ipam| ipam.get("dataDir"))
            .and_then(Value::as_str)
            .filter(|dir| !dir.is_empty())
            .unwrap_or(DEFAULT_DATA_DIR);
        LazyStore {
            data_dir: PathBuf::from(data_dir),
            network: config
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            options,
            store: None,
            lock_timeout,
        }
    }

    fn open(&mut self) -> Result<&mut DirStore, String> {
        if self.store.is_none() {
            let store = DirStore::open_locked(&self.data_dir, &self.network, self.options)
                .map_err(|err| {
                    if matches!(err, StoreError::Locked { .. })
                        && let Ok(mut slot) = self.lock_timeout.lock()
                    {
                        *slot = Some(err.to_string());
                    }
                    err.to_string()
                })?;
            self.store = Some(store);
        }
        Ok(self.store.as_mut().expect("just opened"))
    }
}

impl IpamStore for LazyStore {
    fn get(&mut self, key: &str) -> Result<Option<String>, String> {
        self.open()?.get(key)
    }
    fn list(&mut self) -> Result<Vec<String>, String> {
        self.open()?.list()
    }
    fn compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, String> {
        self.open()?.compare_and_swap(key, expected, new)
    }
    fn delete(&mut self, key: &str) -> Result<bool, String> {
        self.open()?.delete(key)
    }
}
