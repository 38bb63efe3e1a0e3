//! `multus-wasm daemon`: thick mode's node daemon. One per node; kubelet
//! execs `multus-wasm-shim`, which forwards each CNI call here over a
//! root-only unix socket (HTTP/1.1, see README). The daemon keeps what a
//! thin call rebuilds every time: one wasmtime engine with every plugin
//! loaded and pre-instantiated, informer caches of this node's pods and of
//! the NADs (see [`source`]), the host config. Each call still gets its own
//! kernel handles (its own pod-netns thread), its own journal and its own
//! store lock; calls for one container are serialized, others run side by
//! side.
//!
//! The attachment cache and the IPAM store are on disk, so a daemon killed
//! at any point leaves what its restart's DEL needs.

mod server;
pub mod metrics;
pub mod source;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Map, Value};

use crate::call::Effects;
use crate::cni::{CniCommand, CniError, requested_version, version_output};
use crate::cni_plugin;
use crate::config::MultusConfig;
use crate::k8s::NetworkSource;
use crate::k8s::local::LocalSource;
use crate::node::NodeEffects;
use crate::runner::NodePlugins;
use metrics::Metrics;
use source::CachedSource;

/// The default directory of the daemon's socket.
pub const DEFAULT_SOCKET_DIR: &str = "/run/multus-wasm";
/// The socket's file name in `socketDir` (the shim connects to it).
pub const SOCKET_NAME: &str = "multus-wasm.sock";

/// The daemon's config file: the host config plus `socketDir`, `nodeName`
/// and `metricsAddress`.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub host: MultusConfig,
    pub socket_dir: PathBuf,
    pub node_name: String,
    pub metrics_address: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("daemon config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Start(String),
}

impl DaemonConfig {
    /// Parse the daemon's config file.
    pub fn load(path: &Path) -> Result<Self, DaemonError> {
        let bad = |reason: String| DaemonError::Config {
            path: path.into(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|err| bad(err.to_string()))?;
        Self::parse(&bytes).map_err(bad)
    }

    /// Parse the daemon's config from its bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut fields: Map<String, Value> = serde_json::from_slice(bytes)
            .map_err(|err| format!("not a JSON object: {err}"))?;
        let text = |fields: &mut Map<String, Value>, key: &str| -> Result<Option<String>, String> {
            match fields.remove(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(text)) if text.is_empty() => Ok(None),
                Some(Value::String(text)) => Ok(Some(text)),
                Some(other) => Err(format!("{key} must be a string, not {other}")),
            }
        };
        let socket_dir = text(&mut fields, "socketDir")?
            .map(PathBuf::from)
            .unwrap_or_else(|| DEFAULT_SOCKET_DIR.into());
        let node_name = match text(&mut fields, "nodeName")? {
            Some(name) => name,
            None => std::env::var("NODE_NAME")
                .ok()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| {
                    rustix::system::uname()
                        .nodename()
                        .to_string_lossy()
                        .into_owned()
                }),
        };
        let metrics_address = text(&mut fields, "metricsAddress")?
            .map(|address| {
                address
                    .parse()
                    .map_err(|err| format!("metricsAddress {address:?}: {err}"))
            })
            .transpose()?;
        let parsed = MultusConfig::parse(&serde_json::to_vec(&fields).expect("json"))
            .map_err(|err| err.to_string())?;
        if !parsed.unknown_fields.is_empty() {
            tracing::warn!(fields = ?parsed.unknown_fields, "unknown fields in the daemon config are ignored");
        }
        Ok(DaemonConfig {
            host: parsed.config,
            socket_dir,
            node_name,
            metrics_address,
        })
    }

    pub fn socket_path(&self) -> PathBuf {
        self.socket_dir.join(SOCKET_NAME)
    }
}

/// What concurrent calls share.
pub struct Daemon {
    config: DaemonConfig,
    plugins: Arc<NodePlugins>,
    source: Arc<dyn NetworkSource>,
    cached: Option<Arc<CachedSource>>,
    plugins_loaded: Result<(), String>,
    metrics: Arc<Metrics>,
    containers: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("socket", &self.config.socket_path())
            .finish()
    }
}

/// The daemon's `Arc`'d source as a plain one (what `NodeEffects` takes).
struct SharedSource(Arc<dyn NetworkSource>);

impl NetworkSource for SharedSource {
    fn get_pod(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<Option<crate::k8s::PodInfo>, crate::k8s::SourceError> {
        self.0.get_pod(namespace, name, uid)
    }
    fn get_nad(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<crate::k8s::NadInfo>, crate::k8s::SourceError> {
        self.0.get_nad(namespace, name)
    }
    fn set_network_status(
        &self,
        namespace: &str,
        name: &str,
        status: &str,
    ) -> Result<(), crate::k8s::SourceError> {
        self.0.set_network_status(namespace, name, status)
    }
    fn missing_pod_was_deleted(&self) -> bool {
        self.0.missing_pod_was_deleted()
    }
}

impl Daemon {
    /// Everything the daemon keeps warm: plugins loaded (compiled code from
    /// the cache), caches started on `handle` (with a kubeconfig) or the
    /// manifest directory.
    pub fn new(config: DaemonConfig, handle: &tokio::runtime::Handle) -> Result<Self, DaemonError> {
        let metrics = Arc::new(Metrics::new());
        let plugins = Arc::new(NodePlugins::new(&config.host));
        let plugins_loaded = plugins.load_all().map_err(|err| err.to_string());
        if let Err(err) = &plugins_loaded {
            tracing::error!(error = %err, "a registered plugin does not load");
        }
        let (source, cached): (Arc<dyn NetworkSource>, _) = match &config.host.kubeconfig {
            Some(kubeconfig) => {
                let client = handle
                    .block_on(crate::k8s::api::client(kubeconfig))
                    .map_err(|err| DaemonError::Start(err.to_string()))?;
                let cached = Arc::new(CachedSource::start(
                    handle.clone(),
                    client,
                    &config.node_name,
                    metrics.clone(),
                ));
                (cached.clone(), Some(cached))
            }
            None => (
                Arc::new(LocalSource::new(&config.host.manifest_dir)),
                None,
            ),
        };
        Ok(Daemon {
            config,
            plugins,
            source,
            cached,
            plugins_loaded,
            metrics,
            containers: Mutex::new(HashMap::new()),
        })
    }

    /// Ready to serve: the caches have listed and every plugin loaded.
    pub fn health(&self) -> Result<(), String> {
        if let Some(cached) = &self.cached
            && !cached.synced()
        {
            return Err("the pod and NAD caches have not synced yet".into());
        }
        self.plugins_loaded.clone()
    }

    fn container_lock(&self, container_id: &str) -> Arc<Mutex<()>> {
        let mut containers = self.containers.lock().expect("containers lock");
        containers.retain(|_, lock| Arc::strong_count(lock) > 1);
        containers
            .entry(container_id.to_string())
            .or_default()
            .clone()
    }

    /// One CNI call forwarded by the shim: `env` (the CNI variables) and
    /// `netconf` (its stdin). Returns the exit code and what the shim
    /// prints. Runs on a thread of its own (it blocks on netlink and the
    /// API).
    pub fn cni(&self, env: &Map<String, Value>, netconf: &Value) -> (i32, String) {
        let started = Instant::now();
        let stdin = serde_json::to_vec(netconf).expect("json");
        let vars = env
            .iter()
            .filter_map(|(key, value)| value.as_str().map(|value| (key.clone(), value.to_string())));
        let mut command = String::from("unknown");
        let (output, code) = cni_plugin::answer(&stdin, || {
            let env = cni_plugin::cni_env(vars)?;
            command = env.command.as_str().to_string();
            if env.command == CniCommand::Version {
                return Ok(version_output(requested_version(&stdin).as_deref()));
            }
            let mut config = self.config.host.clone();
            if let Some(version) = netconf.get("cniVersion").and_then(Value::as_str) {
                config.cni_version = version.to_string();
            }
            let lock = env.container_id.as_deref().map(|id| self.container_lock(id));
            let _serialized = lock.as_ref().map(|lock| lock.lock());
            let effects = self.effects(&config)?;
            cni_plugin::execute(&env, &config, netconf, &effects)
        });
        let cni_code = if code == 0 {
            0
        } else {
            serde_json::from_str::<Value>(&output)
                .ok()
                .and_then(|error| error.get("code").and_then(Value::as_u64))
                .unwrap_or(999) as u32
        };
        let steps = crate::timing::take();
        self.metrics
            .request(&command, cni_code, started.elapsed(), &steps);
        (code, output)
    }

    fn effects(&self, config: &MultusConfig) -> Result<impl Effects, CniError> {
        NodeEffects::with_source(
            config,
            crate::node::runtime()?,
            self.plugins.clone(),
            Box::new(SharedSource(self.source.clone())),
        )
    }
}

/// Run the daemon until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> Result<(), DaemonError> {
    let config = DaemonConfig::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| DaemonError::Start(format!("tokio runtime: {err}")))?;
    let socket_path = config.socket_path();
    let metrics_address = config.metrics_address;
    let daemon = Arc::new(Daemon::new(config.clone(), runtime.handle())?);
    let listener = runtime.block_on(async { server::bind(&config.socket_dir) })?;
    tracing::info!(socket = %socket_path.display(), node = %config.node_name, "multus-wasm daemon serving");
    runtime.block_on(async {
        let unix = tokio::spawn(server::serve_unix(listener, daemon.clone()));
        let tcp = match metrics_address {
            Some(address) => Some(tokio::spawn(server::serve_tcp(address, daemon.clone()))),
            None => None,
        };
        server::shutdown_signal().await;
        tracing::info!("shutting down");
        unix.abort();
        if let Some(tcp) = tcp {
            tcp.abort();
        }
    });
    let _ = std::fs::remove_file(&socket_path);
    Ok(())
}
