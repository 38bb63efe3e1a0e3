//! A wasm plugin's part of an attachment: the delegate's plan, checked by
//! the policy and applied through the kernel; its IPAM with the network's
//! store locked.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

use super::{Attachment, CallContext, IpamExtra, Runner, expect_world, ipam_type};
use crate::cni::{CniCommand, CniError, CniResult, CniVersion};
use crate::netlink::Refusals;
use crate::plan::ipam::{self, IpamOrder};
use crate::plan::policy::{self, MasterRules, PolicyContext};
use crate::plan::{CheckedPlan, Plan};
use crate::sandbox::{Guest, PluginRequest, SandboxError, World};
use crate::store::ipam::{DEFAULT_DATA_DIR, DEFAULT_MAX_KEYS, IpamStore, StoreError, StoreOptions};

fn request(
    context: &CallContext<'_>,
    command: CniCommand,
    attachment: &Attachment<'_>,
    config: &Value,
) -> PluginRequest {
    PluginRequest {
        command,
        container_id: context.container_id.into(),
        netns: context.netns_path.into(),
        ifname: attachment.ifname.into(),
        args: attachment.cni_args.to_vec(),
        config: config.to_string(),
        prev_result: None,
        ipam_result: None,
        valid_attachments: Vec::new(),
        state: None,
    }
}

/// Run a delegate. When it fails after a host link was hidden from its
/// queries, the failure is that policy refusal (the plugin could only
/// report "not found").
fn call_delegate(
    context: &CallContext<'_>,
    guest: &dyn Guest,
    request: &PluginRequest,
) -> Result<Plan, CniError> {
    expect_world(guest, World::Delegate)?;
    let refusals = Refusals::default();
    let links = context
        .kernel
        .guest_links(context.config.allowed_masters.clone(), refusals.clone())?;
    guest.delegate(request, links).map_err(|err| {
        let hidden = refusals
            .lock()
            .ok()
            .and_then(|found| found.first().cloned());
        match (&err, hidden) {
            (SandboxError::Plugin { .. }, Some(reason)) => CniError::new(
                policy::POLICY_CODE,
                format!(
                    "plugin {} (sha256 {}): refused by policy: {reason} (the plugin said: {err})",
                    guest.name(),
                    guest.digest()
                ),
            ),
            _ => err.into(),
        }
    })
}

/// `err` (a failed op of the plugin's plan) naming the plugin and its
/// sha256, as every error of a wasm plugin does.
fn named(guest: &dyn Guest, err: CniError) -> CniError {
    CniError {
        msg: format!(
            "plugin {} (sha256 {}): {}",
            guest.name(),
            guest.digest(),
            err.msg
        ),
        ..err
    }
}

/// The policy check of a plugin's plan (with the facts about the host
/// links it names as masters), its refusal naming the plugin and sha256.
fn check_plan(
    context: &CallContext<'_>,
    guest: &dyn Guest,
    plan: Plan,
    command: CniCommand,
    ifname: &str,
) -> Result<CheckedPlan, CniError> {
    let masters = MasterRules {
        allowed_masters: context.config.allowed_masters.as_deref(),
        macvlan_modes: &context.config.allowed_macvlan_modes,
    };
    check_plan_of(
        (guest.name(), guest.digest()),
        plan,
        (command, ifname),
        masters,
        |master| context.kernel.host_link(master),
    )
}

/// The policy check of plugin `(name, sha256)`'s plan for `(command,
/// ifname)`, asking `host_link` about the host links it names as masters:
/// what an attach does, and what `multus-wasm plugin run` does, with the
/// same refusal (code 107, naming the plugin and sha256).
pub fn check_plan_of(
    (name, digest): (&str, &str),
    plan: Plan,
    (command, ifname): (CniCommand, &str),
    masters: MasterRules<'_>,
    host_link: impl Fn(&str) -> Result<Option<crate::plan::LinkInfo>, CniError>,
) -> Result<CheckedPlan, CniError> {
    let mut host_links = BTreeMap::new();
    for master in policy::host_masters(&plan.ops) {
        if let Some(info) = host_link(master)? {
            host_links.insert(master.to_string(), info);
        }
    }
    let policy_context = PolicyContext {
        command,
        ifname,
        masters,
        host_links: &host_links,
    };
    policy::check(plan, &policy_context).map_err(|violation| {
        CniError::new(
            policy::POLICY_CODE,
            format!("plugin {name} (sha256 {digest}): {violation}"),
        )
    })
}

/// ADD through a wasm delegate. A wasm IPAM plugin runs first and the
/// delegate plans link and addresses with its result; a native IPAM binary
/// runs once the delegate's link exists (see [`add_link_then_ipam`]).
pub(super) fn add(
    context: &CallContext<'_>,
    guest: &dyn Guest,
    attachment: &Attachment<'_>,
    index: usize,
    config: &Value,
    previous: Option<&CniResult>,
) -> Result<CniResult, CniError> {
    expect_world(guest, World::Delegate)?;
    if !context.kernel.has_netns() {
        return Err(CniError::invalid_environment(format!(
            "netns {} does not exist",
            context.netns_path
        )));
    }
    let ipam_type = ipam_type(config);
    let ipam_is_wasm = match ipam_type {
        Some(ipam_type) => context.plugins.wasm(ipam_type)?.is_some(),
        None => false,
    };
    match (ipam::ipam_order(ipam_type, ipam_is_wasm), ipam_type) {
        (IpamOrder::AfterLink, Some(ipam_type)) => add_link_then_ipam(
            context, guest, attachment, index, config, previous, ipam_type,
        ),
        _ => add_ipam_first(
            context, guest, attachment, index, config, previous, ipam_type,
        ),
    }
}

/// Wasm IPAM (or none) first, then the delegate's plan with its result,
/// policy, apply. Any failure after IPAM releases the allocation; a failed
/// apply has undone itself.
fn add_ipam_first(
    context: &CallContext<'_>,
    guest: &dyn Guest,
    attachment: &Attachment<'_>,
    index: usize,
    config: &Value,
    previous: Option<&CniResult>,
    ipam_type: Option<&str>,
) -> Result<CniResult, CniError> {
    let ipam_result = match ipam_type {
        Some(ipam_type) => context.ipam(
            ipam_type,
            CniCommand::Add,
            attachment,
            config,
            IpamExtra::default(),
        )?,
        None => None,
    };
    let outcome = apply_delegate(
        context,
        guest,
        (attachment, index),
        config,
        previous,
        ipam_result.clone(),
    )
    .map(|(result, _)| result);
    if outcome.is_err()
        && let Some(ipam_type) = ipam_type
        && ipam_result.is_some()
    {
        release_after_failure(context, ipam_type, attachment, config);
    }
    outcome
}

/// Native IPAM (the reference `dhcp` needs the link in the pod): the
/// delegate plans only the link (its config without `ipam`), which is
/// applied; then the IPAM binary's ADD; then the result's addresses and
/// routes as host-built ops through the same policy check and journaled
/// executor, merged into the delegate's result. Any failure after the link
/// runs the IPAM DEL (while the link still exists, so a DHCP lease is
/// released from it) and undoes the link.
fn add_link_then_ipam(
    context: &CallContext<'_>,
    guest: &dyn Guest,
    attachment: &Attachment<'_>,
    index: usize,
    config: &Value,
    previous: Option<&CniResult>,
    ipam_type: &str,
) -> Result<CniResult, CniError> {
    // Allowed and present before anything is created.
    let Runner::Native(binary) = context.runner(ipam_type, attachment, config)? else {
        return Err(CniError::internal(format!(
            "IPAM type {ipam_type} changed from native to wasm during the call"
        )));
    };
    let link_config = ipam::link_only_config(config);
    let (link_result, link_applied) = apply_delegate(
        context,
        guest,
        (attachment, index),
        &link_config,
        previous,
        None,
    )?;
    let exec = context.exec_context(attachment);
    let outcome = (|| {
        let ipam_result = context
            .plugins
            .exec(&binary, CniCommand::Add, config, &exec)
            .and_then(|result| {
                result.ok_or_else(|| {
                    CniError::internal(format!("IPAM plugin {ipam_type} returned no result"))
                })
            })
            .map_err(|err| {
                CniError::new(
                    err.code,
                    format!(
                        "IPAM plugin {ipam_type} for {} of network {} (run once the link existed; the link was removed): {}{}",
                        attachment.ifname,
                        attachment.name,
                        err.msg,
                        if ipam_type == "dhcp" {
                            " (the dhcp IPAM needs its daemon, `dhcp daemon`, running on the node at the config's daemonSocketPath or /run/cni/dhcp.sock, and a DHCP server answering on the master's segment)"
                        } else {
                            ""
                        }
                    ),
                )
                .with_details(err.details)
            })?;
        let ops = ipam::address_ops(ipam_type, attachment.ifname, &ipam_result)
            .map_err(|err| CniError::internal(err.to_string()))?;
        let no_masters = BTreeMap::new();
        let policy_context = PolicyContext {
            command: CniCommand::Add,
            ifname: attachment.ifname,
            masters: MasterRules {
                allowed_masters: context.config.allowed_masters.as_deref(),
                macvlan_modes: &context.config.allowed_macvlan_modes,
            },
            host_links: &no_masters,
        };
        let checked = policy::check(Plan::of_ops(ops), &policy_context).map_err(|violation| {
            CniError::new(
                policy::POLICY_CODE,
                format!("the addresses of IPAM plugin {ipam_type}'s result: {violation}"),
            )
        })?;
        context.kernel.apply(&checked).map_err(|err| {
            let err = CniError::from(err);
            CniError {
                msg: format!(
                    "the addresses of IPAM plugin {ipam_type}'s result: {}",
                    err.msg
                ),
                ..err
            }
        })?;
        Ok(ipam::merge_ipam_result(
            link_result,
            &ipam_result,
            attachment.ifname,
        ))
    })();
    if outcome.is_err() {
        // The IPAM plugin may have kept state even when its ADD failed (the
        // reference callers DEL after a failed ADD too).
        release_after_failure(context, ipam_type, attachment, config);
        let errors = context.kernel.undo(link_applied);
        if !errors.is_empty() {
            tracing::error!(errors = %errors.join("; "), "undoing the link after a failed IPAM also failed");
        }
    }
    outcome
}

/// IPAM DEL after a failed ADD; its own failure is only logged.
fn release_after_failure(
    context: &CallContext<'_>,
    ipam_type: &str,
    attachment: &Attachment<'_>,
    config: &Value,
) {
    if let Err(err) = context.ipam(
        ipam_type,
        CniCommand::Del,
        attachment,
        config,
        IpamExtra::default(),
    ) {
        tracing::error!(ipam = %ipam_type, error = %err, "releasing the IPAM allocation after a failed ADD also failed");
    }
}

/// The delegate's ADD plan (with `ipam_result`), checked and applied, and
/// the result's MACs read back; the plan's state is kept as plugin
/// `index`'s. Returns the result and the applied plan's handle for
/// [`crate::netlink::Kernel::undo`]; on failure nothing of the plan is left.
fn apply_delegate(
    context: &CallContext<'_>,
    guest: &dyn Guest,
    (attachment, index): (&Attachment<'_>, usize),
    config: &Value,
    previous: Option<&CniResult>,
    ipam_result: Option<CniResult>,
) -> Result<(CniResult, usize), CniError> {
    let mut delegate_request = request(context, CniCommand::Add, attachment, config);
    delegate_request.prev_result = previous.cloned();
    delegate_request.ipam_result = ipam_result;
    let plan = call_delegate(context, guest, &delegate_request)?;
    let mut checked = check_plan(context, guest, plan, CniCommand::Add, attachment.ifname)?;
    let applied = context
        .kernel
        .apply(&checked)
        .map_err(|err| named(guest, err.into()))?;
    let mut result = checked
        .take_result()
        .unwrap_or_else(|| CniResult::empty(CniVersion::V1_1_0));
    for interface in &mut result.interfaces {
        let created_here = interface.name == attachment.ifname
            || interface.sandbox.as_deref() == Some(context.netns_path);
        if !created_here {
            continue;
        }
        let mac = context
            .kernel
            .pod_link(&interface.name)
            .ok()
            .flatten()
            .and_then(|link| link.mac);
        match mac {
            Some(mac) => interface.mac = Some(mac.to_string()),
            None => {
                let errors = context.kernel.undo(applied);
                return Err(CniError::internal(format!(
                    "plugin {} reported interface {} but it is not in the pod{}",
                    guest.name(),
                    interface.name,
                    if errors.is_empty() {
                        String::new()
                    } else {
                        format!(" (undo: {})", errors.join("; "))
                    }
                )));
            }
        }
        interface.sandbox = Some(context.netns_path.into());
    }
    let mut states = attachment.plugin_state.borrow_mut();
    match checked.take_state() {
        Some(state) => states.insert(index, state),
        None => states.remove(&index),
    };
    Ok((result, applied))
}

/// DEL through a wasm delegate: its plan (when the pod's namespace still
/// exists), then IPAM DEL; keeps going after errors. A native IPAM (which
/// ran after the link on ADD) is released first, while the link exists: the
/// reference `dhcp` sends its DHCPRELEASE from it.
pub(super) fn del(
    context: &CallContext<'_>,
    guest: &dyn Guest,
    attachment: &Attachment<'_>,
    index: usize,
    config: &Value,
    prev_result: Option<&CniResult>,
) -> Result<(), CniError> {
    let mut errors = Vec::new();
    let ipam_first = context.ipam_needs_link(config);
    if ipam_first && let Err(err) = context.ipam_del(attachment, config, prev_result) {
        errors.push(err);
    }
    if context.kernel.has_netns() {
        let outcome = (|| {
            let mut delegate_request = request(context, CniCommand::Del, attachment, config);
            delegate_request.prev_result = prev_result.cloned();
            delegate_request.state = attachment.plugin_state.borrow().get(&index).cloned();
            let plan = call_delegate(context, guest, &delegate_request)?;
            let checked = check_plan(context, guest, plan, CniCommand::Del, attachment.ifname)?;
            context
                .kernel
                .apply(&checked)
                .map_err(|err| named(guest, err.into()))?;
            Ok::<(), CniError>(())
        })();
        if let Err(err) = outcome {
            errors.push(err);
        }
    }
    if !ipam_first && let Err(err) = context.ipam_del(attachment, config, prev_result) {
        errors.push(err);
    }
    super::join_errors(errors)
}

/// CHECK through a wasm delegate: its IPAM's CHECK, then the delegate's
/// (a CHECK plan changes nothing: the policy refuses any op).
pub(super) fn check(
    context: &CallContext<'_>,
    guest: &dyn Guest,
    attachment: &Attachment<'_>,
    index: usize,
    config: &Value,
    cached: &CniResult,
) -> Result<(), CniError> {
    if let Some(ipam_type) = ipam_type(config) {
        context.ipam(
            ipam_type,
            CniCommand::Check,
            attachment,
            config,
            IpamExtra {
                prev_result: Some(cached),
                valid_attachments: &[],
            },
        )?;
    }
    let mut delegate_request = request(context, CniCommand::Check, attachment, config);
    delegate_request.prev_result = Some(cached.clone());
    delegate_request.state = attachment.plugin_state.borrow().get(&index).cloned();
    let plan = call_delegate(context, guest, &delegate_request)?;
    check_plan(context, guest, plan, CniCommand::Check, attachment.ifname)?;
    Ok(())
}

/// A wasm IPAM plugin's call, with the network's store opened (and locked)
/// on first use, the wait for the lock bounded by the call's deadline.
pub(super) fn ipam(
    context: &CallContext<'_>,
    guest: &dyn Guest,
    command: CniCommand,
    attachment: &Attachment<'_>,
    config: &Value,
    extra: IpamExtra<'_>,
) -> Result<Option<CniResult>, CniError> {
    let mut ipam_request = request(context, command, attachment, config);
    ipam_request.prev_result = extra.prev_result.cloned();
    ipam_request.valid_attachments = extra.valid_attachments.to_vec();
    let lock_timeout = Arc::new(Mutex::new(None));
    let options = StoreOptions {
        lock_deadline: Instant::now() + guest.timeout(),
        max_keys: context
            .config
            .wasm_limits
            .store_max_keys
            .map_or(DEFAULT_MAX_KEYS, |keys| keys as usize),
    };
    let store = LazyStore::new(context, config, options, lock_timeout.clone());
    let links = context
        .kernel
        .guest_links(context.config.allowed_masters.clone(), Refusals::default())?;
    let outcome = guest.ipam(&ipam_request, links, Box::new(store));
    if let Some(message) = lock_timeout.lock().ok().and_then(|slot| slot.clone()) {
        return Err(CniError::try_again_later(format!(
            "plugin {} (sha256 {}): {message}",
            guest.name(),
            guest.digest()
        )));
    }
    Ok(outcome?)
}

/// The IPAM store of a network, opened (and locked) on first use: a wasm
/// IPAM plugin that keeps no state (static) never creates a directory.
/// The directory is `<ipam.dataDir or /var/lib/cni/networks>/<name>`, as the
/// reference host-local uses it.
struct LazyStore {
    stores: Arc<dyn super::IpamStores>,
    data_dir: PathBuf,
    network: String,
    options: StoreOptions,
    store: Option<Box<dyn IpamStore>>,
    /// Set when the network's lock could not be taken before the deadline:
    /// the call then fails with code 11 whatever the plugin makes of it.
    lock_timeout: Arc<Mutex<Option<String>>>,
}

impl LazyStore {
    fn new(
        context: &CallContext<'_>,
        config: &Value,
        options: StoreOptions,
        lock_timeout: Arc<Mutex<Option<String>>>,
    ) -> Self {
        let data_dir = config
            .get("ipam")
            .and_then(|ipam| ipam.get("dataDir"))
            .and_then(Value::as_str)
            .filter(|dir| !dir.is_empty())
            .unwrap_or(DEFAULT_DATA_DIR);
        LazyStore {
            stores: context.stores.clone(),
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

    fn open(&mut self) -> Result<&mut Box<dyn IpamStore>, String> {
        if self.store.is_none() {
            let store = self
                .stores
                .open(&self.data_dir, &self.network, self.options)
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
