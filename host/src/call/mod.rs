//! The meta-plugin: what Multus does for a pod, command by command.
//!
//! ADD resolves the attachments (the cluster network or the inline
//! `delegates`, then `defaultNetworks`, then the pod's
//! `k8s.v1.cni.cncf.io/networks` annotation, each NAD turned into a delegate
//! config), names their interfaces, writes the attachment cache, runs them
//! in order, applies the default-route choice, writes network-status and
//! returns the cluster network's result. Any failure DELs what was added, in
//! reverse, and removes the cache: a failed ADD leaves nothing behind.
//! DEL, CHECK and GC run from the cache, so they work after the NAD or the
//! API server is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::annotations::{self, DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION};
use crate::attachments::{self, DefaultRouteAction, DelegateSpec, LegacyArgsSupport};
use crate::cni::{
    CniEnv, CniError, CniResult, CniVersion, GcAttachment, NetworkConfigList, Route,
    valid_attachments,
};
use crate::confdir::nad_config;
use crate::config::MultusConfig;
use crate::devices;
use crate::k8s::{NetworkSource, PodEvent, PodInfo};
use crate::netlink::Kernel;
use crate::plan::{AddRoute, IpFamily, Op, Plan, policy};
use crate::runner::{Attachment, CallContext, IpamStores, LinkPlans, Resolver};
use crate::status;
use crate::store::cache::{AttachmentState, CacheStore, CachedAttachment, ContainerRecord};
use crate::store::devinfo::{self, DeviceInfoFiles};

/// The capability under which a delegate gets its device-info file
/// (`runtimeConfig.CNIDeviceInfoFile`), as Multus passes it.
const DEVICE_INFO_CAPABILITY: &str = "CNIDeviceInfoFile";

/// The world one call acts on: where pods and NADs come from, where the
/// attachment cache lives, the plugins, the IPAM stores and the kernel. The
/// real one is files, the API, wasmtime and netlink; the unit tests' is
/// in memory.
pub trait Effects {
    fn source(&self) -> &dyn NetworkSource;
    fn cache(&self) -> &dyn CacheStore;
    fn plugins(&self) -> &dyn Resolver;
    fn stores(&self) -> Arc<dyn IpamStores>;
    /// The kernel of a call in the pod namespace `netns_path` (which may be
    /// gone: see [`Kernel::has_netns`]).
    fn kernel(&self, netns_path: &str) -> Result<Box<dyn Kernel>, CniError>;
    /// The device IDs kubelet allocated to pod `namespace/name`, by resource
    /// name, from its pod-resources API at `socket`.
    fn pod_devices(
        &self,
        socket: &Path,
        namespace: &str,
        name: &str,
    ) -> Result<BTreeMap<String, Vec<String>>, CniError>;
}

/// Plugin types that honour the legacy `CNI_ARGS` `IP=` (requested IPs).
const LEGACY_IP_TYPES: &[&str] = &["host-local", "static"];
/// Plugin types that honour the legacy `CNI_ARGS` `MAC=`.
const LEGACY_MAC_TYPES: &[&str] = &["macvlan", "tuning", "bridge"];

/// The pod a call is for, from `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodRef {
    pub fn from_args(args: &[(String, String)]) -> Option<PodRef> {
        let get = |key: &str| {
            args.iter()
                .rev()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value.clone())
                .unwrap_or_default()
        };
        let pod = PodRef {
            namespace: get("K8S_POD_NAMESPACE"),
            name: get("K8S_POD_NAME"),
            uid: get("K8S_POD_UID"),
        };
        (!pod.namespace.is_empty() && !pod.name.is_empty()).then_some(pod)
    }

    fn label(&self, container_id: &str) -> String {
        if self.name.is_empty() {
            container_id.to_string()
        } else {
            format!("{}/{}/{}", self.namespace, self.name, self.uid)
        }
    }
}

/// One CNI call of the meta-plugin.
pub struct Call<'a> {
    pub config: &'a MultusConfig,
    pub env: &'a CniEnv,
    pub effects: &'a dyn Effects,
}

impl std::fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call").field("env", &self.env).finish()
    }
}

fn attach_error(err: attachments::AttachError) -> CniError {
    CniError::new(err.cni_code(), err.to_string())
}

fn annotation_error(err: annotations::AnnotationError) -> CniError {
    CniError::new(err.cni_code(), err.to_string())
}

/// The CNI args every delegate of this call gets: `IgnoreUnknown=true`
/// first (the reference plugins reject unknown keys otherwise), then the
/// runtime's CNI_ARGS as given.
fn base_cni_args(env: &CniEnv) -> Vec<(String, String)> {
    let mut args = vec![("IgnoreUnknown".to_string(), "true".to_string())];
    args.extend(
        env.args
            .iter()
            .filter(|(key, _)| key != "IgnoreUnknown")
            .cloned(),
    );
    args
}

impl<'a> Call<'a> {
    fn container_id(&self) -> &str {
        self.env.container_id.as_deref().unwrap_or_default()
    }

    fn cache(&self) -> &dyn CacheStore {
        self.effects.cache()
    }

    /// `binDir`, then the runtime's `CNI_PATH`.
    /// Record `event` about `pod` (when the call has one and is an ADD: a
    /// DEL rebuilding its attachments sends none); a failure is logged,
    /// never the call's.
    fn send_event(&self, pod: Option<&PodInfo>, event: PodEvent) {
        let Some(pod) = pod.filter(|_| self.env.command == crate::cni::CniCommand::Add) else {
            return;
        };
        match self.effects.source().send_event(pod, &event) {
            Ok(()) => {
                tracing::debug!(reason = event.reason, message = %event.message, "event recorded")
            }
            Err(err) => {
                tracing::warn!(reason = event.reason, error = %err, "sending the pod event failed")
            }
        }
    }

    fn bin_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.config.bin_dir.clone()];
        dirs.extend(self.env.cni_path.iter().map(PathBuf::from));
        dirs
    }

    /// Resolve a network name or path (clusterNetwork, defaultNetworks):
    /// a path (contains `/`): a directory's first `.conf`/`.conflist`, or the
    /// file; a name: the NAD in multusNamespace, else the confDir file whose
    /// `name` matches.
    fn resolve_network(&self, reference: &str) -> Result<(String, Value), CniError> {
        if reference.contains('/') {
            let path = Path::new(reference);
            let file = if path.is_dir() {
                crate::confdir::config_files(path)
                    .map_err(|err| {
                        CniError::invalid_network_config(format!(
                            "cannot read {}: {err}",
                            path.display()
                        ))
                    })?
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        CniError::invalid_network_config(format!(
                            "no network config in {}",
                            path.display()
                        ))
                    })?
            } else {
                path.to_path_buf()
            };
            let text = std::fs::read(&file).map_err(|err| {
                CniError::invalid_network_config(format!(
                    "cannot read network config {}: {err}",
                    file.display()
                ))
            })?;
            let config: Value = serde_json::from_slice(&text).map_err(|err| {
                CniError::decoding_failure(format!(
                    "network config {} is not valid JSON: {err}",
                    file.display()
                ))
            })?;
            let name = config
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            return Ok((name, config));
        }
        let namespace = &self.config.multus_namespace;
        if let Some(nad) = self.effects.source().get_nad(namespace, reference)? {
            let config = nad_config(reference, nad.config.as_deref(), &self.config.conf_dir)
                .map_err(attach_error)?;
            return Ok((format!("{namespace}/{reference}"), config));
        }
        let config = nad_config(reference, None, &self.config.conf_dir).map_err(attach_error)?;
        Ok((reference.to_string(), config))
    }

    /// Every attachment of the pod, in order, interfaces named.
    fn build_specs(&self, pod: Option<&PodInfo>) -> Result<Vec<DelegateSpec>, CniError> {
        let mut specs = Vec::new();
        match &self.config.cluster_network {
            Some(cluster_network) => {
                // Named `<namespace>/<name>` when it comes from a NAD (as
                // Multus names it in network-status), else by its config.
                let (name, config) = self.resolve_network(cluster_network)?;
                specs.push(DelegateSpec::cluster_network(name, config));
            }
            None => {
                for (index, delegate) in self.config.delegates.iter().enumerate() {
                    let name = delegate
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let mut spec = DelegateSpec::cluster_network(name, delegate.clone());
                    spec.is_master = index == 0;
                    specs.push(spec);
                }
            }
        }
        let pod_namespace = pod.map(|pod| pod.namespace.as_str()).unwrap_or_default();
        if !self
            .config
            .system_namespaces
            .iter()
            .any(|ns| ns == pod_namespace)
        {
            for reference in &self.config.default_networks {
                let (name, config) = self.resolve_network(reference)?;
                let mut spec = DelegateSpec::cluster_network(name, config);
                spec.is_master = false;
                specs.push(spec);
            }
        }
        let Some(pod) = pod else {
            return Ok(specs);
        };
        let specs = self.pod_specs(specs, pod)?;
        for spec in specs.iter().filter(|spec| !spec.operator) {
            attachments::check_ipam_data_dirs(
                &spec.name,
                &spec.config,
                &self.config.ipam_data_roots,
            )
            .map_err(attach_error)?;
        }
        Ok(specs)
    }

    /// The attachments the pod's annotations add to (or replace in) the
    /// operator's `specs`.
    fn pod_specs(
        &self,
        mut specs: Vec<DelegateSpec>,
        pod: &PodInfo,
    ) -> Result<Vec<DelegateSpec>, CniError> {
        if let Some(value) = pod.annotations.get(DEFAULT_NETWORK_ANNOTATION)
            && let Some(selection) =
                annotations::parse_default_network(value, &self.config.multus_namespace)
                    .map_err(annotation_error)?
        {
            let Some(nad) = self
                .effects
                .source()
                .get_nad(&selection.namespace, &selection.name)?
            else {
                let message = format!(
                    "cannot find the default network {}/{} (v1.multus-cni.io/default-network)",
                    selection.namespace, selection.name
                );
                self.send_event(Some(pod), PodEvent::no_network_found(message.clone()));
                return Err(CniError::invalid_network_config(message));
            };
            let config = nad_config(
                &selection.name,
                nad.config.as_deref(),
                &self.config.conf_dir,
            )
            .map_err(attach_error)?;
            let mut spec =
                DelegateSpec::from_selection(&selection, config).map_err(attach_error)?;
            spec.is_master = true;
            spec.resource_name = nad.resource_name.clone();
            if specs.is_empty() {
                specs.push(spec);
            } else {
                specs[0] = spec;
            }
        }
        if let Some(value) = pod.annotations.get(NETWORKS_ANNOTATION) {
            for selection in
                annotations::parse_networks(value, &pod.namespace).map_err(annotation_error)?
            {
                attachments::check_namespace_isolation(
                    &pod.namespace,
                    &selection.namespace,
                    self.config.namespace_isolation,
                    &self.config.global_namespaces,
                )
                .map_err(attach_error)?;
                let Some(nad) = self
                    .effects
                    .source()
                    .get_nad(&selection.namespace, &selection.name)?
                else {
                    let message = format!(
                        "cannot find a network-attachment-definition ({}) in namespace ({}): pod {}/{} asks for it in {NETWORKS_ANNOTATION}",
                        selection.name, selection.namespace, pod.namespace, pod.name
                    );
                    self.send_event(Some(pod), PodEvent::no_network_found(message.clone()));
                    return Err(CniError::invalid_network_config(message));
                };
                let config = nad_config(
                    &selection.name,
                    nad.config.as_deref(),
                    &self.config.conf_dir,
                )
                .map_err(attach_error)?;
                let mut spec =
                    DelegateSpec::from_selection(&selection, config).map_err(attach_error)?;
                spec.resource_name = nad.resource_name.clone();
                specs.push(spec);
            }
        }
        Ok(specs)
    }

    /// Multus's device-plugin handling: every attachment whose NAD names a
    /// `k8s.v1.cni.cncf.io/resourceName` gets the next of the devices
    /// kubelet allocated to the pod for that resource (asked of kubelet's
    /// pod-resources API only when some attachment needs one).
    fn assign_devices(
        &self,
        specs: &mut [DelegateSpec],
        pod: Option<&PodInfo>,
    ) -> Result<(), CniError> {
        let Some(pod) = pod else { return Ok(()) };
        if specs.iter().all(|spec| spec.resource_name.is_none()) {
            return Ok(());
        }
        let allocated = self.effects.pod_devices(
            &self.config.pod_resources_socket,
            &pod.namespace,
            &pod.name,
        )?;
        tracing::debug!(?allocated, "the pod's devices");
        devices::assign_device_ids(
            specs,
            &allocated,
            &format!("{}/{}", pod.namespace, pod.name),
        )
        .map_err(|err| CniError::new(err.cni_code(), err.to_string()))
    }

    /// The cache entries (config, args, runtimeConfig) for `specs`.
    fn cached_attachments(
        &self,
        specs: &[DelegateSpec],
    ) -> Result<Vec<CachedAttachment>, CniError> {
        let legacy = LegacyArgsSupport::new(
            LEGACY_IP_TYPES.iter().copied(),
            LEGACY_MAC_TYPES.iter().copied(),
        );
        let base_args = base_cni_args(self.env);
        let runtime_config: Map<String, Value> = self
            .config
            .runtime_config
            .as_ref()
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        specs
            .iter()
            .map(|spec| {
                // Every attachment gets what its selection asked for, the
                // default-network annotation's (the master) included, as in
                // Multus; the operator's own networks ask for nothing.
                let mut capability_args = runtime_config.clone();
                let mut cni_args = base_args.clone();
                let declared = attachments::declared_capabilities(&spec.config);
                capability_args.extend(
                    attachments::capability_args(spec, &declared, &legacy).map_err(attach_error)?,
                );
                if spec.device_id.is_some() && declared.contains(DEVICE_INFO_CAPABILITY) {
                    let file = devices::cni_device_info_file(
                        &self.config.device_info_dir,
                        &spec.name,
                        self.container_id(),
                        &spec.ifname,
                    );
                    capability_args.insert(
                        DEVICE_INFO_CAPABILITY.into(),
                        Value::String(file.display().to_string()),
                    );
                }
                cni_args.extend(attachments::legacy_cni_args(spec));
                Ok(CachedAttachment {
                    name: spec.name.clone(),
                    ifname: spec.ifname.clone(),
                    is_master: spec.is_master,
                    operator: Some(spec.operator),
                    config: spec.config.clone(),
                    cni_args,
                    capability_args,
                    state: AttachmentState::Pending,
                    result: None,
                    plugin_state: Default::default(),
                })
            })
            .collect()
    }

    fn pod(&self) -> Result<(Option<PodRef>, Option<PodInfo>), CniError> {
        let Some(pod_ref) = PodRef::from_args(&self.env.args) else {
            return Ok((None, None));
        };
        let pod = self
            .effects
            .source()
            .get_pod(&pod_ref.namespace, &pod_ref.name, &pod_ref.uid)?;
        Ok((Some(pod_ref), pod))
    }

    /// The attachments of `record`, their configs parsed once.
    fn parse_lists(record: &ContainerRecord) -> Vec<Result<NetworkConfigList, CniError>> {
        record
            .attachments
            .iter()
            .map(|cached| NetworkConfigList::from_value(cached.config.clone()))
            .collect()
    }

    /// The plugin types of the operator's own attachments in `record`: with
    /// `nativePlugins` unset, NAD attachments may use them too.
    fn operator_types(record: &ContainerRecord) -> BTreeSet<String> {
        record
            .attachments
            .iter()
            .filter(|cached| cached.is_operator())
            .flat_map(|cached| attachments::delegate_types(&cached.config))
            .collect()
    }

    fn context<'c>(
        &'c self,
        kernel: &'c dyn Kernel,
        container_id: &'c str,
        netns_path: &'c str,
        bin_dirs: &'c [PathBuf],
        operator_types: &'c BTreeSet<String>,
    ) -> CallContext<'c> {
        CallContext {
            config: self.config,
            plugins: self.effects.plugins(),
            stores: self.effects.stores(),
            kernel,
            container_id,
            netns_path,
            bin_dirs,
            operator_types,
        }
    }

    /// ADD: attach every network; returns the cluster network's result in
    /// the config's cniVersion.
    pub fn add(&self) -> Result<Value, CniError> {
        let version = CniVersion::parse(&self.config.cni_version)?;
        wait_for_readiness(self.config.readiness_indicator_file.as_deref())?;
        let container_id = self.container_id().to_string();
        let netns_path = self.env.netns.clone().unwrap_or_default();
        let ifname = self.env.ifname.clone().unwrap_or_default();
        let kernel = self.effects.kernel(&netns_path)?;
        if !kernel.has_netns() {
            return Err(CniError::invalid_environment(format!(
                "netns {netns_path} does not exist"
            )));
        }
        let (pod_ref, pod) = self.pod()?;
        if let (Some(pod_ref), None) = (&pod_ref, &pod)
            && self.effects.source().missing_pod_was_deleted()
        {
            // As Multus: the pod is gone; let the runtime tear the sandbox down.
            tracing::warn!(pod = %pod_ref.label(&container_id), "pod not found: returning an empty result");
            return CniResult::empty(version).to_json(version);
        }
        if let (Some(pod_ref), Some(pod)) = (&pod_ref, &pod) {
            // A static pod's mirror in the API has a UID of its own.
            crate::pod::check_pod_uid(
                &pod.namespace,
                &pod.name,
                &pod_ref.uid,
                &pod.uid,
                &pod.annotations,
            )
            .map_err(|err| CniError::new(err.cni_code(), err.to_string()))?;
        }
        let label = pod_ref.clone().unwrap_or_default().label(&container_id);
        let mut specs = self.build_specs(pod.as_ref())?;
        self.assign_devices(&mut specs, pod.as_ref())?;
        attachments::assign_ifnames(&mut specs, &ifname).map_err(attach_error)?;
        let actions = attachments::check_default_route(&specs).map_err(attach_error)?;
        for spec in specs.iter().filter(|spec| !spec.is_master) {
            if kernel.pod_link(&spec.ifname)?.is_some() {
                return Err(CniError::invalid_network_config(format!(
                    "cannot attach {} to the pod: interface {} already exists in {netns_path}",
                    spec.name, spec.ifname
                )));
            }
        }

        let mut record = ContainerRecord::new(&container_id, &netns_path, &ifname);
        if let Some(pod_ref) = &pod_ref {
            record.pod_namespace = pod_ref.namespace.clone();
            record.pod_name = pod_ref.name.clone();
            record.pod_uid = pod_ref.uid.clone();
        }
        record.attachments = self.cached_attachments(&specs)?;
        let lists = Self::parse_lists(&record)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        // The device plugins' device info for the delegates, removed again
        // unless the whole ADD succeeds.
        let mut device_info = DeviceInfoFiles::default();
        let device_info_files: Vec<Option<PathBuf>> = specs
            .iter()
            .map(|spec| match (&spec.resource_name, &spec.device_id) {
                (Some(resource), Some(device_id)) => Some(device_info.copy_from_device_plugin(
                    &self.config.device_info_dir,
                    resource,
                    device_id,
                    (&spec.name, &container_id, &spec.ifname),
                )),
                _ => None,
            })
            .collect();
        let operator_types = Self::operator_types(&record);
        let bin_dirs = self.bin_dirs();
        let context = self.context(
            kernel.as_ref(),
            &container_id,
            &netns_path,
            &bin_dirs,
            &operator_types,
        );
        let cache = self.cache();
        cache.save_progress(&record)?;

        let mut route_edits = Vec::new();
        let mut statuses = Vec::new();
        // AddedInterface events, sent once the whole ADD has succeeded.
        let mut added = Vec::new();
        for (index, action) in actions.iter().enumerate() {
            let outcome = self.add_one(
                &context,
                &record.attachments[index],
                &lists[index],
                action,
                &mut route_edits,
            );
            match outcome {
                Ok(result) => {
                    let cached = &mut record.attachments[index];
                    added.push(PodEvent::added_interface(
                        &cached.ifname,
                        &result
                            .ips
                            .iter()
                            .map(|ip| ip.address.to_string())
                            .collect::<Vec<_>>(),
                        &cached.name,
                    ));
                    let mut entries =
                        status::entries(&cached.name, &cached.ifname, cached.is_master, &result);
                    if let Some(path) = &device_info_files[index] {
                        match devinfo::read(path) {
                            Ok(info) => {
                                for entry in &mut entries {
                                    entry.device_info = info.clone();
                                }
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, "the attachment's device info is unusable")
                            }
                        }
                    }
                    statuses.extend(entries);
                    cached.result = Some(result.to_json(CniVersion::V1_1_0)?);
                    cached.state = AttachmentState::Added;
                    let last = index + 1 == actions.len();
                    let saved = if last {
                        cache.save(&record)
                    } else {
                        cache.save_progress(&record)
                    };
                    if let Err(err) = saved {
                        self.rollback(&context, &record, &lists, index + 1, &route_edits);
                        let _ = cache.remove(&container_id);
                        return Err(err.into());
                    }
                }
                Err(err) => {
                    let name = record.attachments[index].name.clone();
                    let network = lists[index].name.clone();
                    tracing::error!(pod = %label, attachment = %name, error = %err, "ADD failed, rolling back");
                    self.rollback(&context, &record, &lists, index, &route_edits);
                    if let Err(cache_err) = cache.remove(&container_id) {
                        tracing::error!(error = %cache_err, "removing the attachment cache after rollback failed");
                    }
                    let error = CniError::new(
                        err.code,
                        format!(
                            "[{label}:{network}]: error adding container to network {name:?}: {}",
                            err.msg
                        ),
                    )
                    .with_details(err.details);
                    if crate::cni::error::HOST_RESERVED.contains(&error.code) {
                        self.send_event(pod.as_ref(), PodEvent::plugin_refused(error.msg.clone()));
                    }
                    return Err(error);
                }
            }
        }

        if let Some(pod_ref) = &pod_ref
            && pod.is_some()
        {
            let annotation = status::annotation(&statuses);
            if let Err(err) = self.effects.source().set_network_status(
                &pod_ref.namespace,
                &pod_ref.name,
                &annotation,
            ) {
                tracing::error!(pod = %label, error = %err, "writing network-status failed, rolling back");
                self.rollback(
                    &context,
                    &record,
                    &lists,
                    record.attachments.len(),
                    &route_edits,
                );
                let _ = cache.remove(&container_id);
                return Err(CniError::try_again_later(format!(
                    "[{label}]: failed to set the network-status annotation: {err}"
                )));
            }
        }

        device_info.keep();
        for event in added {
            self.send_event(pod.as_ref(), event);
        }
        let master = record
            .attachments
            .iter()
            .find(|attachment| attachment.is_master)
            .or(record.attachments.first())
            .and_then(CachedAttachment::parsed_result)
            .unwrap_or_else(|| CniResult::empty(version));
        master.to_json(version)
    }

    /// The runner's view of a cached attachment.
    fn attachment<'r>(cached: &'r CachedAttachment, list: &'r NetworkConfigList) -> Attachment<'r> {
        Attachment {
            name: &cached.name,
            operator: cached.is_operator(),
            list,
            ifname: &cached.ifname,
            cni_args: &cached.cni_args,
            capability_args: &cached.capability_args,
            plugin_state: &cached.plugin_state,
        }
    }

    /// ADD one attachment, then apply its default-route decision to the pod
    /// (as a checked plan of the meta-plugin's own, journaled in
    /// `route_edits` so a rollback restores the routes) and to its result.
    fn add_one(
        &self,
        context: &CallContext<'_>,
        cached: &CachedAttachment,
        list: &NetworkConfigList,
        action: &DefaultRouteAction,
        route_edits: &mut Vec<usize>,
    ) -> Result<CniResult, CniError> {
        let attachment = Self::attachment(cached, list);
        let mut result = context.add(&attachment)?;
        if result.interfaces.is_empty() && result.ips.is_empty() {
            return Ok(result);
        }
        let ops = default_route_ops(action, &cached.ifname);
        if ops.is_empty() {
            return Ok(result);
        }
        let edited = policy::check_default_routes(Plan::of_ops(ops), &cached.ifname)
            .map_err(CniError::from)
            .and_then(|plan| context.kernel.apply(&plan).map_err(CniError::from));
        match edited {
            Ok(applied) => {
                route_edits.push(applied);
                apply_default_routes_to_result(action, &mut result);
                Ok(result)
            }
            Err(err) => {
                let _ = context.del(&attachment, Some(&result), LinkPlans::Run);
                Err(err)
            }
        }
    }

    /// Undo the default-route edits, then DEL the first `count` attachments,
    /// in reverse; errors are logged. A failed attachment is not among them:
    /// the runner has already cleaned up after it (and DELing it could
    /// remove an interface that was in the pod before, such as a `net1`
    /// that made the ADD fail).
    fn rollback(
        &self,
        context: &CallContext<'_>,
        record: &ContainerRecord,
        lists: &[NetworkConfigList],
        count: usize,
        route_edits: &[usize],
    ) {
        for applied in route_edits.iter().rev() {
            for err in context.kernel.undo(*applied) {
                tracing::error!(error = %err, "restoring default routes failed");
            }
        }
        for (cached, list) in record.attachments[..count].iter().zip(lists).rev() {
            let result = cached.parsed_result();
            let attachment = Self::attachment(cached, list);
            if let Err(err) = context.del(&attachment, result.as_ref(), LinkPlans::Run) {
                tracing::error!(attachment = %cached.name, error = %err, "rollback DEL failed");
            }
        }
    }

    /// DEL: every attachment from the cache, in reverse. Without a cache
    /// (ADD never ran, or DEL already finished), rebuild the attachments from
    /// the config when possible, else succeed: DEL never fails on what is
    /// already gone. The cache is kept when a delegate's DEL fails, so the
    /// runtime's retry can finish the job.
    pub fn del(&self) -> Result<(), CniError> {
        let container_id = self.container_id().to_string();
        let netns_path = self.env.netns.clone().unwrap_or_default();
        let cache = self.cache();
        let record = match cache.load(&container_id) {
            Ok(record) => record,
            Err(err) => {
                tracing::error!(error = %err, "unreadable attachment cache: nothing to delete from it");
                let _ = cache.remove(&container_id);
                None
            }
        };
        let record = match record {
            Some(record) => record,
            None => match self.rebuild_for_del(&netns_path) {
                Some(record) => record,
                None => {
                    tracing::info!(container = %container_id, "no attachment cache and nothing to rebuild: DEL is a no-op");
                    return Ok(());
                }
            },
        };
        let kernel = self.effects.kernel(&netns_path)?;
        let errors = self.del_record(kernel.as_ref(), &record, &netns_path);
        for cached in record
            .attachments
            .iter()
            .filter(|cached| has_device(&cached.config))
        {
            devinfo::remove(&devices::cni_device_info_file(
                &self.config.device_info_dir,
                &cached.name,
                &container_id,
                &cached.ifname,
            ));
        }
        if errors.is_empty() {
            cache.remove(&container_id)?;
            Ok(())
        } else {
            // The first failure's code (a policy refusal stays 107).
            let code = errors[0].code;
            let described: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Err(CniError::new(
                code,
                format!("DEL of {container_id}: {}", described.join(" / ")),
            ))
        }
    }

    /// DEL every attachment of `record` in `kernel`'s pod; the errors.
    ///
    /// First the native IPAM of wasm delegates (dhcp), which releases
    /// through the link. Then every wasm-created link of the pod goes in one
    /// kernel batch, on the pod's netns thread; meanwhile the other IPAM is
    /// released and native plugins run their DELs. Only if the batch fails
    /// do the wasm delegates' own DEL plans run.
    fn del_record(
        &self,
        kernel: &dyn Kernel,
        record: &ContainerRecord,
        netns_path: &str,
    ) -> Vec<CniError> {
        let lists = Self::parse_lists(record);
        let operator_types = Self::operator_types(record);
        let bin_dirs = self.bin_dirs();
        let context = self.context(
            kernel,
            &record.container_id,
            netns_path,
            &bin_dirs,
            &operator_types,
        );
        let mut errors = Vec::new();
        if kernel.has_netns() {
            // Native IPAM of wasm delegates (dhcp) releases through the link:
            // before the batch takes it.
            // (An unparsable list is reported once, below.)
            for (cached, list) in record.attachments.iter().zip(&lists).rev() {
                let Ok(list) = list else { continue };
                let result = cached.parsed_result();
                if let Err(err) =
                    context.release_link_ipam(&Self::attachment(cached, list), result.as_ref())
                {
                    errors.push(of_attachment(&cached.name, err));
                }
            }
        }
        let batch = match kernel.start_group_delete() {
            Ok(started) => started,
            Err(err) => {
                tracing::warn!(error = %err, "batch delete not started");
                false
            }
        };
        let link_plans = if batch {
            LinkPlans::Skip
        } else {
            LinkPlans::Run
        };
        let each = |link_plans: LinkPlans, errors: &mut Vec<CniError>| {
            for (cached, list) in record.attachments.iter().zip(&lists).rev() {
                let outcome = list.as_ref().map_err(Clone::clone).and_then(|list| {
                    let result = cached.parsed_result();
                    context.del(&Self::attachment(cached, list), result.as_ref(), link_plans)
                });
                if let Err(err) = outcome {
                    errors.push(of_attachment(&cached.name, err));
                }
            }
        };
        each(link_plans, &mut errors);
        if batch {
            match kernel.finish_group_delete() {
                Ok(deleted) => tracing::debug!(deleted, "batch delete of the pod's wasm links"),
                Err(err) => {
                    tracing::warn!(error = %err, "batch delete failed; deleting link by link");
                    each(LinkPlans::Run, &mut errors);
                }
            }
        }
        errors
    }

    /// The attachments DEL can still find without a cache: the config's
    /// delegates or cluster network (the pod's own networks are unknown
    /// without the pod, which Multus also gives up on).
    fn rebuild_for_del(&self, netns_path: &str) -> Option<ContainerRecord> {
        let ifname = self.env.ifname.clone().unwrap_or_default();
        let (_, pod) = self.pod().ok()?;
        let mut specs = self.build_specs(pod.as_ref()).ok()?;
        attachments::assign_ifnames(&mut specs, &ifname).ok()?;
        let mut record = ContainerRecord::new(self.container_id(), netns_path, &ifname);
        record.attachments = self.cached_attachments(&specs).ok()?;
        Some(record)
    }

    /// CHECK every attachment against its cached result.
    pub fn check(&self) -> Result<(), CniError> {
        let container_id = self.container_id();
        let netns_path = self.env.netns.clone().unwrap_or_default();
        let kernel = self.effects.kernel(&netns_path)?;
        if !kernel.has_netns() {
            return Err(CniError::invalid_environment(format!(
                "netns {netns_path} does not exist"
            )));
        }
        let record = self.cache().load(container_id)?.ok_or_else(|| {
            CniError::unknown_container(format!(
                "no attachments recorded for container {container_id}"
            ))
        })?;
        let operator_types = Self::operator_types(&record);
        let bin_dirs = self.bin_dirs();
        let context = self.context(
            kernel.as_ref(),
            container_id,
            &netns_path,
            &bin_dirs,
            &operator_types,
        );
        for (cached, list) in record.attachments.iter().zip(Self::parse_lists(&record)) {
            let list = list?;
            let result = cached.parsed_result().ok_or_else(|| {
                CniError::internal(format!(
                    "attachment {} of {container_id} never completed ADD",
                    cached.name
                ))
            })?;
            context
                .check(&Self::attachment(cached, &list), &result)
                .map_err(|err| {
                    CniError::new(
                        err.code,
                        format!("{} ({}): {}", cached.name, cached.ifname, err.msg),
                    )
                })?;
        }
        Ok(())
    }

    /// GC: DEL every cached pod the runtime no longer lists, then GC every
    /// network still in use (their IPAM releases what no attachment holds).
    pub fn gc(&self, stdin_config: &Value) -> Result<(), CniError> {
        let Some(valid) = valid_attachments(stdin_config)? else {
            tracing::info!("GC without cni.dev/valid-attachments: nothing to do");
            return Ok(());
        };
        let valid_containers: BTreeSet<&str> = valid
            .iter()
            .map(|attachment| attachment.container_id.as_str())
            .collect();
        let cache = self.cache();
        let mut errors = Vec::new();
        let mut networks: BTreeMap<String, (CachedAttachment, Vec<GcAttachment>)> = BTreeMap::new();
        let mut operator_types = BTreeSet::new();
        for container_id in cache.container_ids()? {
            let record = match cache.load(&container_id) {
                Ok(Some(record)) => record,
                Ok(None) => continue,
                Err(err) => {
                    errors.push(err.to_string());
                    continue;
                }
            };
            operator_types.extend(Self::operator_types(&record));
            if valid_containers.contains(container_id.as_str()) {
                for cached in &record.attachments {
                    let network = cached
                        .config
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    networks
                        .entry(network)
                        .or_insert_with(|| (cached.clone(), Vec::new()))
                        .1
                        .push(GcAttachment {
                            container_id: container_id.clone(),
                            ifname: cached.ifname.clone(),
                        });
                }
                continue;
            }
            let stale = self
                .effects
                .kernel(&record.netns)
                .map(|kernel| self.del_record(kernel.as_ref(), &record, &record.netns));
            match stale {
                Ok(failed) if failed.is_empty() => {
                    let _ = cache.remove(&container_id);
                }
                Ok(failed) => errors.extend(
                    failed
                        .into_iter()
                        .map(|failure| format!("{container_id} {failure}")),
                ),
                Err(err) => errors.push(err.to_string()),
            }
        }
        let netns_path = self.env.netns.clone().unwrap_or_default();
        let kernel = self.effects.kernel(&netns_path)?;
        let bin_dirs = self.bin_dirs();
        let context = self.context(
            kernel.as_ref(),
            self.container_id(),
            &netns_path,
            &bin_dirs,
            &operator_types,
        );
        let empty = Map::new();
        for (_, (cached, keep)) in networks {
            let outcome = NetworkConfigList::from_value(cached.config.clone()).and_then(|list| {
                let attachment = Attachment {
                    name: &cached.name,
                    operator: cached.is_operator(),
                    list: &list,
                    ifname: "",
                    cni_args: &[],
                    capability_args: &empty,
                    plugin_state: &cached.plugin_state,
                };
                context.gc(&attachment, &keep)
            });
            if let Err(err) = outcome {
                errors.push(err.to_string());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(CniError::internal(format!("GC: {}", errors.join(" / "))))
        }
    }

    /// STATUS: the cluster network (or delegates) can service ADD, and every
    /// registered wasm plugin loads.
    pub fn status(&self) -> Result<(), CniError> {
        wait_for_readiness(self.config.readiness_indicator_file.as_deref())
            .map_err(|err| CniError::not_available(err.msg))?;
        for plugin_type in self.config.wasm_plugins.keys() {
            self.effects
                .plugins()
                .wasm(plugin_type)
                .map_err(|err| CniError::not_available(err.to_string()))?;
        }
        let master = match &self.config.cluster_network {
            Some(reference) => self.resolve_network(reference).map(|(_, config)| config),
            None => self
                .config
                .delegates
                .first()
                .cloned()
                .ok_or_else(|| CniError::not_available("no delegates configured")),
        }
        .map_err(|err| CniError::not_available(err.to_string()))?;
        let list = NetworkConfigList::from_value(master)?;
        let netns_path = self.env.netns.clone().unwrap_or_default();
        let kernel = self.effects.kernel(&netns_path)?;
        let bin_dirs = self.bin_dirs();
        let operator_types = BTreeSet::new();
        let context = self.context(
            kernel.as_ref(),
            self.container_id(),
            &netns_path,
            &bin_dirs,
            &operator_types,
        );
        let empty = Map::new();
        context.status(&Attachment {
            name: &list.name,
            operator: true,
            list: &list,
            ifname: "",
            cni_args: &[],
            capability_args: &empty,
            plugin_state: &Default::default(),
        })
    }
}

/// `err` of attachment `name`, its message saying so, its code kept.
fn of_attachment(name: &str, err: CniError) -> CniError {
    CniError {
        msg: format!("{name}: {}", err.msg),
        ..err
    }
}

/// The meta-plugin's own ops for an attachment's default-route decision:
/// remove its delegate's default routes of a family, add the requested
/// gateways.
/// Whether a delegate config was given a device (`deviceID`, at the top or
/// in its first plugin).
fn has_device(config: &Value) -> bool {
    config.get("deviceID").is_some()
        || config
            .get("plugins")
            .and_then(|plugins| plugins.get(0))
            .is_some_and(|plugin| plugin.get("deviceID").is_some())
}

fn default_route_ops(action: &DefaultRouteAction, ifname: &str) -> Vec<Op> {
    let mut ops = Vec::new();
    for (remove, family) in [
        (action.remove_v4_default, IpFamily::V4),
        (action.remove_v6_default, IpFamily::V6),
    ] {
        if remove {
            ops.push(Op::RemoveDefaultRoutes {
                link: ifname.into(),
                family,
            });
        }
    }
    for gateway in &action.add_gateways {
        ops.push(Op::AddRoute(AddRoute {
            link: ifname.into(),
            dst: default_destination(gateway.is_ipv6()),
            gateway: Some(*gateway),
            metric: None,
            table: None,
            scope: None,
        }));
    }
    ops
}

fn default_destination(ipv6: bool) -> ipnet::IpNet {
    if ipv6 {
        "::/0".parse().expect("literal")
    } else {
        "0.0.0.0/0".parse().expect("literal")
    }
}

/// The same decision, reflected in the attachment's result.
fn apply_default_routes_to_result(action: &DefaultRouteAction, result: &mut CniResult) {
    for (remove, ipv6) in [
        (action.remove_v4_default, false),
        (action.remove_v6_default, true),
    ] {
        if remove {
            result.routes.retain(|route| {
                !(route.dst.prefix_len() == 0 && route.dst.addr().is_ipv6() == ipv6)
            });
        }
    }
    for gateway in &action.add_gateways {
        result.routes.push(Route::new(
            default_destination(gateway.is_ipv6()),
            Some(*gateway),
        ));
    }
}

/// Wait (up to 45 s, as Multus) for the readiness indicator file.
fn wait_for_readiness(path: Option<&Path>) -> Result<(), CniError> {
    let Some(path) = path else { return Ok(()) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    while !path.exists() {
        if std::time::Instant::now() >= deadline {
            return Err(CniError::try_again_later(format!(
                "have you checked that your default network is ready? still waiting for readinessindicatorfile @ {}",
                path.display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_refs_need_namespace_and_name() {
        let args = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            PodRef::from_args(&args(&[
                ("K8S_POD_NAMESPACE", "default"),
                ("K8S_POD_NAME", "samplepod"),
                ("K8S_POD_UID", "u1")
            ])),
            Some(PodRef {
                namespace: "default".into(),
                name: "samplepod".into(),
                uid: "u1".into()
            })
        );
        assert_eq!(
            PodRef::from_args(&args(&[("K8S_POD_NAME", "samplepod")])),
            None
        );
    }

    #[test]
    fn delegates_get_ignore_unknown_first() {
        let env = CniEnv::from_vars([
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAME=p;IgnoreUnknown=1"),
        ])
        .unwrap();
        assert_eq!(
            base_cni_args(&env),
            vec![
                ("IgnoreUnknown".to_string(), "true".to_string()),
                ("K8S_POD_NAME".to_string(), "p".to_string())
            ]
        );
    }
}

#[cfg(test)]
mod transaction_tests;
