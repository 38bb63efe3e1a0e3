//! The node's real [`Effects`]: pods and NADs from the API server or a
//! manifest directory, the attachment cache in `cniDir`, the plugins
//! (wasmtime, `binDir`), the IPAM directories and netlink.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tokio::runtime::Runtime;

use crate::call::Effects;
use crate::cni::CniError;
use crate::config::MultusConfig;
use crate::k8s::NetworkSource;
use crate::k8s::api::ApiSource;
use crate::k8s::local::LocalSource;
use crate::netlink::Kernel;
use crate::netlink::kernel::NetlinkKernel;
use crate::runner::{DirStores, IpamStores, NodePlugins, Resolver};
use crate::store::cache::{AttachmentCache, CacheStore};

/// The runtime one CNI call (or CLI command) runs its netlink and API I/O
/// on: current-thread, so a call costs no worker threads.
pub fn runtime() -> Result<Arc<Runtime>, CniError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|err| CniError::internal(format!("tokio runtime: {err}")))
}

/// The node's effects for calls under one host config.
pub struct NodeEffects {
    runtime: Arc<Runtime>,
    source: Box<dyn NetworkSource>,
    cache: AttachmentCache,
    plugins: Arc<NodePlugins>,
    stores: Arc<dyn IpamStores>,
}

impl std::fmt::Debug for NodeEffects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeEffects")
            .field("cache", &self.cache)
            .field("plugins", &self.plugins)
            .finish()
    }
}

impl NodeEffects {
    /// The effects of `config`: the API server when it names a kubeconfig,
    /// else its manifest directory; `plugins` shared with other calls.
    pub fn new(
        config: &MultusConfig,
        runtime: Arc<Runtime>,
        plugins: Arc<NodePlugins>,
    ) -> Result<Self, CniError> {
        let source: Box<dyn NetworkSource> = match &config.kubeconfig {
            Some(kubeconfig) => Box::new(ApiSource::new(runtime.clone(), kubeconfig)?),
            None => Box::new(LocalSource::new(&config.manifest_dir)),
        };
        Self::with_source(config, runtime, plugins, source)
    }

    /// The effects of `config` with pods and NADs from `source` (the
    /// daemon's caches).
    pub fn with_source(
        config: &MultusConfig,
        runtime: Arc<Runtime>,
        plugins: Arc<NodePlugins>,
        source: Box<dyn NetworkSource>,
    ) -> Result<Self, CniError> {
        Ok(NodeEffects {
            runtime,
            source,
            cache: AttachmentCache::new(&config.cni_dir),
            plugins,
            stores: Arc::new(DirStores),
        })
    }
}

impl Effects for NodeEffects {
    fn source(&self) -> &dyn NetworkSource {
        self.source.as_ref()
    }

    fn cache(&self) -> &dyn CacheStore {
        &self.cache
    }

    fn plugins(&self) -> &dyn Resolver {
        self.plugins.as_ref()
    }

    fn stores(&self) -> Arc<dyn IpamStores> {
        self.stores.clone()
    }

    fn kernel(&self, netns_path: &str) -> Result<Box<dyn Kernel>, CniError> {
        Ok(Box::new(NetlinkKernel::new(
            self.runtime.clone(),
            netns_path,
        )?))
    }

    fn pod_devices(
        &self,
        socket: &Path,
        namespace: &str,
        name: &str,
    ) -> Result<BTreeMap<String, Vec<String>>, CniError> {
        self.runtime
            .block_on(multus_wasm_podresources::pod_devices(
                socket,
                namespace,
                name,
                POD_RESOURCES_TIMEOUT,
            ))
            .map_err(|err| {
                CniError::try_again_later(format!(
                    "cannot learn the devices of pod {namespace}/{name}: {err}"
                ))
            })
    }
}

/// How long kubelet's pod-resources API may take to answer (as Multus).
const POD_RESOURCES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
