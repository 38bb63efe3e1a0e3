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
use std::path::Path;

use serde_json::{Map, Value};

use crate::annotations::{self, DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION};
use crate::attachments::{self, DefaultRouteAction, DelegateSpec, LegacyArgsSupport, nad_config};
use crate::cni::{CniEnv, CniError, CniResult, CniVersion, GcAttachment, Route, valid_attachments};
use crate::config::MultusConfig;
use crate::delegate::{Attachment, Node};
use crate::k8s::{NetworkSource, PodInfo};
use crate::netlink::executor;
use crate::status;
use crate::store::cache::{AttachmentCache, AttachmentState, CachedAttachment, ContainerRecord};

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
    pub source: &'a dyn NetworkSource,
    pub node: &'a Node<'a>,
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

    fn cache(&self) -> AttachmentCache {
        AttachmentCache::new(&self.config.cni_dir)
    }

    /// Resolve a network name or path (clusterNetwork, defaultNetworks):
    /// a path (contains `/`): a directory's first `.conf`/`.conflist`, or the
    /// file; a name: the NAD in multusNamespace, else the confDir file whose
    /// `name` matches.
    fn resolve_network(&self, reference: &str) -> Result<(String, Value), CniError> {
        if reference.contains('/') {
            let path = Path::new(reference);
            let file = if path.is_dir() {
                first_conf_file(path)?
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
        if let Some(nad) = self.source.get_nad(namespace, reference)? {
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
                let (name, config) = self.resolve_network(cluster_network)?;
                let name = config
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or(name);
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
            let nad = self
                .source
                .get_nad(&selection.namespace, &selection.name)?
                .ok_or_else(|| {
                    CniError::invalid_network_config(format!(
                        "cannot find the default network {}/{} (v1.multus-cni.io/default-network)",
                        selection.namespace, selection.name
                    ))
                })?;
            let config = nad_config(
                &selection.name,
                nad.config.as_deref(),
                &self.config.conf_dir,
            )
            .map_err(attach_error)?;
            let mut spec =
                DelegateSpec::from_selection(&selection, config).map_err(attach_error)?;
            spec.is_master = true;
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
                let nad = self.source.get_nad(&selection.namespace, &selection.name)?.ok_or_else(|| {
                    CniError::invalid_network_config(format!(
                        "cannot find a network-attachment-definition ({}) in namespace ({}): pod {}/{} asks for it in {NETWORKS_ANNOTATION}",
                        selection.name, selection.namespace, pod.namespace, pod.name
                    ))
                })?;
                let config = nad_config(
                    &selection.name,
                    nad.config.as_deref(),
                    &self.config.conf_dir,
                )
                .map_err(attach_error)?;
                specs.push(DelegateSpec::from_selection(&selection, config).map_err(attach_error)?);
            }
        }
        Ok(specs)
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
                let mut capability_args = runtime_config.clone();
                let mut cni_args = base_args.clone();
                if !spec.is_master {
                    let declared = attachments::declared_capabilities(&spec.config);
                    capability_args.extend(
                        attachments::capability_args(spec, &declared, &legacy)
                            .map_err(attach_error)?,
                    );
                    cni_args.extend(attachments::legacy_cni_args(spec));
                }
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
                })
            })
            .collect()
    }

    fn pod(&self) -> Result<(Option<PodRef>, Option<PodInfo>), CniError> {
        let Some(pod_ref) = PodRef::from_args(&self.env.args) else {
            return Ok((None, None));
        };
        let pod = self.source.get_pod(&pod_ref.namespace, &pod_ref.name)?;
        Ok((Some(pod_ref), pod))
    }

    /// ADD: attach every network; returns the cluster network's result in
    /// the config's cniVersion.
    pub fn add(&self) -> Result<Value, CniError> {
        let version = CniVersion::parse(&self.config.cni_version)?;
        wait_for_readiness(self.config.readiness_indicator_file.as_deref())?;
        let container_id = self.container_id().to_string();
        let ifname = self.env.ifname.clone().unwrap_or_default();
        let (pod_ref, pod) = self.pod()?;
        if let (Some(pod_ref), None) = (&pod_ref, &pod)
            && self.source.missing_pod_was_deleted()
        {
            // As Multus: the pod is gone; let the runtime tear the sandbox down.
            tracing::warn!(pod = %pod_ref.label(&container_id), "pod not found: returning an empty result");
            return CniResult::empty(version).to_json(version);
        }
        if let (Some(pod_ref), Some(pod)) = (&pod_ref, &pod)
            && !pod_ref.uid.is_empty()
            && !pod.uid.is_empty()
            && pod_ref.uid != pod.uid
        {
            return Err(CniError::invalid_environment(format!(
                "expected pod UID {} but got {} from the API for pod {}/{}",
                pod_ref.uid, pod.uid, pod.namespace, pod.name
            )));
        }
        let label = pod_ref.clone().unwrap_or_default().label(&container_id);
        let mut specs = self.build_specs(pod.as_ref())?;
        attachments::assign_ifnames(&mut specs, &ifname).map_err(attach_error)?;
        let actions = attachments::check_default_route(&specs).map_err(attach_error)?;
        let handles = self.node.handles()?;
        for spec in specs.iter().filter(|spec| !spec.is_master) {
            if executor::link_exists(&handles, &spec.ifname).map_err(CniError::internal)? {
                return Err(CniError::invalid_network_config(format!(
                    "cannot attach {} to the pod: interface {} already exists in {}",
                    spec.name, spec.ifname, self.node.netns_path
                )));
            }
        }

        let mut record = ContainerRecord::new(&container_id, &self.node.netns_path, &ifname);
        if let Some(pod_ref) = &pod_ref {
            record.pod_namespace = pod_ref.namespace.clone();
            record.pod_name = pod_ref.name.clone();
            record.pod_uid = pod_ref.uid.clone();
        }
        record.attachments = self.cached_attachments(&specs)?;
        self.trust_operator_types(&record);
        let cache = self.cache();
        cache.save_progress(&record)?;

        let mut statuses = Vec::new();
        for (index, action) in actions.iter().enumerate() {
            let outcome = self.add_one(&record.attachments[index], action);
            match outcome {
                Ok(result) => {
                    let cached = &mut record.attachments[index];
                    statuses.extend(status::entries(
                        &cached.name,
                        &cached.ifname,
                        cached.is_master,
                        &result,
                    ));
                    cached.result = Some(result.to_json(CniVersion::V1_1_0)?);
                    cached.state = AttachmentState::Added;
                    let last = index + 1 == actions.len();
                    let saved = if last {
                        cache.save(&record)
                    } else {
                        cache.save_progress(&record)
                    };
                    if let Err(err) = saved {
                        self.rollback(&record, index + 1);
                        let _ = cache.remove(&container_id);
                        return Err(err.into());
                    }
                }
                Err(err) => {
                    let name = record.attachments[index].name.clone();
                    let network = record.attachments[index]
                        .config
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    tracing::error!(pod = %label, attachment = %name, error = %err, "ADD failed, rolling back");
                    self.rollback(&record, index);
                    if let Err(cache_err) = cache.remove(&container_id) {
                        tracing::error!(error = %cache_err, "removing the attachment cache after rollback failed");
                    }
                    return Err(CniError::new(
                        err.code,
                        format!(
                            "[{label}:{network}]: error adding container to network {name:?}: {}",
                            err.msg
                        ),
                    )
                    .with_details(err.details));
                }
            }
        }

        if let Some(pod_ref) = &pod_ref
            && pod.is_some()
        {
            let annotation = status::annotation(&statuses);
            if let Err(err) =
                self.source
                    .set_network_status(&pod_ref.namespace, &pod_ref.name, &annotation)
            {
                tracing::error!(pod = %label, error = %err, "writing network-status failed, rolling back");
                self.rollback(&record, record.attachments.len());
                let _ = cache.remove(&container_id);
                return Err(CniError::try_again_later(format!(
                    "[{label}]: failed to set the network-status annotation: {err}"
                )));
            }
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

    /// Let NAD attachments use the plugin types of the operator's own
    /// attachments in `record` (with `nativePlugins` unset).
    fn trust_operator_types(&self, record: &ContainerRecord) {
        self.node.add_operator_types(
            record
                .attachments
                .iter()
                .filter(|cached| cached.is_operator())
                .map(|cached| &cached.config),
        );
    }

    fn attachment<'r>(&self, cached: &'r CachedAttachment) -> Attachment<'r> {
        Attachment {
            name: &cached.name,
            operator: cached.is_operator(),
            config: &cached.config,
            ifname: &cached.ifname,
            cni_args: &cached.cni_args,
            capability_args: &cached.capability_args,
        }
    }

    /// ADD one attachment, then apply its default-route decision to the pod
    /// and to its result.
    fn add_one(
        &self,
        cached: &CachedAttachment,
        action: &DefaultRouteAction,
    ) -> Result<CniResult, CniError> {
        let mut result = self.node.add(&self.attachment(cached))?;
        let touches_routes =
            action.remove_v4_default || action.remove_v6_default || !action.add_gateways.is_empty();
        if touches_routes && (!result.interfaces.is_empty() || !result.ips.is_empty()) {
            let handles = self.node.handles()?;
            let outcome = (|| {
                for (remove, ipv6) in [
                    (action.remove_v4_default, false),
                    (action.remove_v6_default, true),
                ] {
                    if remove {
                        executor::remove_default_routes(&handles, &cached.ifname, ipv6)
                            .map_err(CniError::internal)?;
                        result.routes.retain(|route| {
                            !(route.dst.prefix_len() == 0 && route.dst.addr().is_ipv6() == ipv6)
                        });
                    }
                }
                for gateway in &action.add_gateways {
                    executor::add_default_route(&handles, &cached.ifname, *gateway)
                        .map_err(CniError::internal)?;
                    let dst = if gateway.is_ipv6() {
                        "::/0"
                    } else {
                        "0.0.0.0/0"
                    };
                    result
                        .routes
                        .push(Route::new(dst.parse().expect("literal"), Some(*gateway)));
                }
                Ok::<(), CniError>(())
            })();
            if let Err(err) = outcome {
                let _ = self.node.del(&self.attachment(cached), Some(&result));
                return Err(err);
            }
        }
        Ok(result)
    }

    /// DEL the first `count` attachments, in reverse; errors are logged.
    /// A failed attachment is not among them: `Node::add` has already
    /// cleaned up after it (and DELing it could remove an interface that
    /// was in the pod before, such as a `net1` that made the ADD fail).
    fn rollback(&self, record: &ContainerRecord, count: usize) {
        for cached in record.attachments[..count].iter().rev() {
            let result = cached.parsed_result();
            if let Err(err) = self.node.del(&self.attachment(cached), result.as_ref()) {
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
            None => match self.rebuild_for_del() {
                Some(record) => record,
                None => {
                    tracing::info!(container = %container_id, "no attachment cache and nothing to rebuild: DEL is a no-op");
                    return Ok(());
                }
            },
        };
        self.trust_operator_types(&record);
        // Tear down every wasm-created link of the pod in one kernel batch,
        // on the pod's netns thread; meanwhile release IPAM and run the
        // native plugins' DELs. Only if the batch fails do the wasm
        // delegates' own DEL plans run.
        let pending = if self.node.has_netns() {
            self.node
                .handles()
                .ok()
                .and_then(|handles| executor::start_link_group_delete(&handles))
                .and_then(|started| {
                    started
                        .map_err(|err| tracing::warn!(error = %err, "batch delete not started"))
                        .ok()
                })
        } else {
            None
        };
        let mut errors = Vec::new();
        for cached in record.attachments.iter().rev() {
            let result = cached.parsed_result();
            let attachment = self.attachment(cached);
            let outcome = match &pending {
                Some(_) => self
                    .node
                    .del_after_batch_delete(&attachment, result.as_ref()),
                None => self.node.del(&attachment, result.as_ref()),
            };
            if let Err(err) = outcome {
                errors.push(format!("{}: {err}", cached.name));
            }
        }
        if let Some(pending) = pending {
            match pending.wait() {
                Ok(deleted) => tracing::debug!(deleted, "batch delete of the pod's wasm links"),
                Err(err) => {
                    tracing::warn!(error = %err, "batch delete failed; deleting link by link");
                    for cached in record.attachments.iter().rev() {
                        let result = cached.parsed_result();
                        if let Err(err) = self.node.del(&self.attachment(cached), result.as_ref()) {
                            errors.push(format!("{}: {err}", cached.name));
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            cache.remove(&container_id)?;
            Ok(())
        } else {
            Err(CniError::internal(format!(
                "DEL of {container_id}: {}",
                errors.join(" / ")
            )))
        }
    }

    /// The attachments DEL can still find without a cache: the config's
    /// delegates or cluster network (the pod's own networks are unknown
    /// without the pod, which Multus also gives up on).
    fn rebuild_for_del(&self) -> Option<ContainerRecord> {
        let ifname = self.env.ifname.clone().unwrap_or_default();
        let (_, pod) = self.pod().ok()?;
        let mut specs = self.build_specs(pod.as_ref()).ok()?;
        attachments::assign_ifnames(&mut specs, &ifname).ok()?;
        let mut record = ContainerRecord::new(self.container_id(), &self.node.netns_path, &ifname);
        record.attachments = self.cached_attachments(&specs).ok()?;
        Some(record)
    }

    /// CHECK every attachment against its cached result.
    pub fn check(&self) -> Result<(), CniError> {
        let container_id = self.container_id();
        let record = self.cache().load(container_id)?.ok_or_else(|| {
            CniError::unknown_container(format!(
                "no attachments recorded for container {container_id}"
            ))
        })?;
        self.trust_operator_types(&record);
        for cached in &record.attachments {
            let result = cached.parsed_result().ok_or_else(|| {
                CniError::internal(format!(
                    "attachment {} of {container_id} never completed ADD",
                    cached.name
                ))
            })?;
            self.node
                .check(&self.attachment(cached), &result)
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
        let mut networks: BTreeMap<String, (Value, bool, Vec<GcAttachment>)> = BTreeMap::new();
        for container_id in cache.container_ids()? {
            let record = match cache.load(&container_id) {
                Ok(Some(record)) => record,
                Ok(None) => continue,
                Err(err) => {
                    errors.push(err.to_string());
                    continue;
                }
            };
            self.trust_operator_types(&record);
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
                        .or_insert_with(|| {
                            (cached.config.clone(), cached.is_operator(), Vec::new())
                        })
                        .2
                        .push(GcAttachment {
                            container_id: container_id.clone(),
                            ifname: cached.ifname.clone(),
                        });
                }
                continue;
            }
            let node = match self.node.for_container(&container_id, &record.netns) {
                Ok(node) => node,
                Err(err) => {
                    errors.push(err.to_string());
                    continue;
                }
            };
            let stale = Call {
                node: &node,
                ..*self
            };
            let mut failed = false;
            for cached in record.attachments.iter().rev() {
                let result = cached.parsed_result();
                if let Err(err) = node.del(&stale.attachment(cached), result.as_ref()) {
                    errors.push(format!("{container_id} {}: {err}", cached.name));
                    failed = true;
                }
            }
            if !failed {
                let _ = cache.remove(&container_id);
            }
        }
        for (_, (config, operator, keep)) in networks {
            if let Err(err) = self.node.gc(&config, operator, &keep) {
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
            self.node
                .wasm_plugin(plugin_type)
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
        self.node.status(&master)
    }
}

/// The lexically first `.conf`/`.conflist`/`.json` file in `dir`.
fn first_conf_file(dir: &Path) -> Result<std::path::PathBuf, CniError> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|err| {
            CniError::invalid_network_config(format!("cannot read {}: {err}", dir.display()))
        })?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && matches!(
                    path.extension().and_then(|ext| ext.to_str()),
                    Some("conf" | "conflist" | "json")
                )
        })
        .collect();
    files.sort();
    files.into_iter().next().ok_or_else(|| {
        CniError::invalid_network_config(format!("no network config in {}", dir.display()))
    })
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
