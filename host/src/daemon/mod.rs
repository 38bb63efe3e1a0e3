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

pub mod metrics;
mod server;
pub mod source;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};

use crate::call::Effects;
use crate::cni::{CniCommand, CniError, requested_version, version_output};
use crate::cni_plugin;
use crate::config::MultusConfig;
use crate::install::InstallOptions;
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
        let mut fields: Map<String, Value> =
            serde_json::from_slice(bytes).map_err(|err| format!("not a JSON object: {err}"))?;
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
        for warning in &parsed.warnings {
            tracing::warn!("{warning}");
        }
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

/// The config the daemon runs now, with its plugins loaded.
struct Loaded {
    modified: Option<SystemTime>,
    config: Arc<DaemonConfig>,
    plugins: Arc<NodePlugins>,
    plugins_loaded: Result<(), String>,
}

impl Loaded {
    fn new(config: DaemonConfig, modified: Option<SystemTime>) -> Self {
        let plugins = Arc::new(NodePlugins::new(&config.host));
        let plugins_loaded = plugins.load_all().map_err(|err| err.to_string());
        if let Err(err) = &plugins_loaded {
            tracing::error!(error = %err, "a registered plugin does not load");
        }
        Loaded {
            modified,
            config: Arc::new(config),
            plugins,
            plugins_loaded,
        }
    }
}

/// What concurrent calls share.
pub struct Daemon {
    config_path: PathBuf,
    loaded: RwLock<Loaded>,
    source: Arc<dyn NetworkSource>,
    cached: Option<Arc<CachedSource>>,
    metrics: Arc<Metrics>,
    containers: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("config", &self.config_path)
            .finish()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
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
    fn send_event(
        &self,
        pod: &crate::k8s::PodInfo,
        event: &crate::k8s::PodEvent,
    ) -> Result<(), crate::k8s::SourceError> {
        self.0.send_event(pod, event)
    }
}

impl Daemon {
    /// Everything the daemon keeps warm: plugins loaded (compiled code from
    /// the cache), caches started on `handle` (with a kubeconfig) or the
    /// manifest directory.
    pub fn new(config_path: &Path, handle: &tokio::runtime::Handle) -> Result<Self, DaemonError> {
        let handle = handle.clone();
        let stamp = modified(config_path);
        let config = DaemonConfig::load(config_path)?;
        let metrics = Arc::new(Metrics::new());
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
            None => (Arc::new(LocalSource::new(&config.host.manifest_dir)), None),
        };
        Ok(Daemon {
            config_path: config_path.into(),
            loaded: RwLock::new(Loaded::new(config, stamp)),
            source,
            cached,
            metrics,
            containers: Mutex::new(HashMap::new()),
        })
    }

    /// The current config and plugins, re-read when the config file
    /// changed (a thick install rewrites it when the primary network, the
    /// plugins or the template change). A file that no longer parses keeps
    /// the last good config.
    fn current(&self) -> (Arc<DaemonConfig>, Arc<NodePlugins>) {
        let stamp = modified(&self.config_path);
        {
            let loaded = self.loaded.read().expect("config lock");
            if loaded.modified == stamp {
                return (loaded.config.clone(), loaded.plugins.clone());
            }
        }
        let mut loaded = self.loaded.write().expect("config lock");
        if loaded.modified != stamp {
            match DaemonConfig::load(&self.config_path) {
                Ok(config) => {
                    tracing::info!(config = %self.config_path.display(), "config changed: reloading");
                    let same_plugins = config.host.wasm_plugins == loaded.config.host.wasm_plugins
                        && config.host.wasm_limits == loaded.config.host.wasm_limits
                        && config.host.wasm_cache_dir == loaded.config.host.wasm_cache_dir;
                    if same_plugins {
                        loaded.config = Arc::new(config);
                        loaded.modified = stamp;
                    } else {
                        *loaded = Loaded::new(config, stamp);
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "config changed but does not parse: keeping the last one");
                    loaded.modified = stamp;
                }
            }
        }
        (loaded.config.clone(), loaded.plugins.clone())
    }

    /// Ready to serve: the caches have listed and every plugin loaded.
    pub fn health(&self) -> Result<(), String> {
        if let Some(cached) = &self.cached
            && !cached.synced()
        {
            return Err("the pod and NAD caches have not synced yet".into());
        }
        self.current();
        self.loaded
            .read()
            .expect("config lock")
            .plugins_loaded
            .clone()
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
        let vars = env.iter().filter_map(|(key, value)| {
            value.as_str().map(|value| (key.clone(), value.to_string()))
        });
        let command = env
            .get("CNI_COMMAND")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        self.metrics.in_flight(&command, 1);
        let mut span = tracing::Span::none();
        let outcome = (|| {
            let env = cni_plugin::cni_env(vars)?;
            span = crate::logging::call_span(&env);
            let _entered = span.enter();
            if env.command == CniCommand::Version {
                return Ok(version_output(requested_version(&stdin).as_deref()));
            }
            let (daemon_config, plugins) = self.current();
            let mut config = daemon_config.host.clone();
            if let Some(version) = netconf.get("cniVersion").and_then(Value::as_str) {
                config.cni_version = version.to_string();
            }
            let lock = env
                .container_id
                .as_deref()
                .map(|id| self.container_lock(id));
            let _serialized = lock.as_ref().map(|lock| lock.lock());
            let effects = self.effects(&config, plugins)?;
            cni_plugin::execute(&env, &config, netconf, &effects)
        })();
        let (output, code) = {
            let _entered = span.enter();
            cni_plugin::respond(&stdin, outcome)
        };
        let cni_code = if code == 0 {
            0
        } else {
            serde_json::from_str::<Value>(&output)
                .ok()
                .and_then(|error| error.get("code").and_then(Value::as_u64))
                .unwrap_or(999) as u32
        };
        let steps = crate::timing::take();
        self.metrics.in_flight(&command, -1);
        self.metrics
            .request(&command, cni_code, started.elapsed(), &steps);
        (code, output)
    }

    fn effects(
        &self,
        config: &MultusConfig,
        plugins: Arc<NodePlugins>,
    ) -> Result<impl Effects, CniError> {
        NodeEffects::with_source(
            config,
            // Each call's own current-thread runtime drives its netlink
            // sockets on the call's thread: no hop to a shared runtime's
            // workers per query (measured: netlink 1.2 -> 0.7 ms, guest
            // calls 1.25 -> 0.78 ms per ADD).
            crate::node::runtime()?,
            plugins,
            Box::new(SharedSource(self.source.clone())),
        )
    }
}

/// Run the daemon until SIGTERM or SIGINT. With `keep_config`, it also
/// keeps the node's config in step (the thick install's watch loop, on a
/// thread), waiting for its first config file to appear.
pub fn run(
    config_path: &Path,
    metrics_address: Option<SocketAddr>,
    keep_config: Option<(InstallOptions, Duration)>,
) -> Result<(), DaemonError> {
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = keep_config.map(|(options, interval)| {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("keep-config".into())
            .spawn(move || {
                if let Err(err) = crate::install::watch(&options, interval, false, None, &|| {
                    stop.load(Ordering::SeqCst)
                }) {
                    tracing::error!(error = %err, "keeping the node's config failed");
                }
            })
            .expect("spawning the config thread")
    });
    if watcher.is_some() {
        while !config_path.exists() {
            tracing::info!(config = %config_path.display(), "waiting for the first install pass to write the config");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|err| DaemonError::Start(format!("tokio runtime: {err}")))?,
    );
    let daemon = Arc::new(Daemon::new(config_path, runtime.handle())?);
    let (config, _) = daemon.current();
    let socket_path = config.socket_path();
    let listener = runtime.block_on(async { server::bind(&config.socket_dir) })?;
    tracing::info!(socket = %socket_path.display(), node = %config.node_name, "multus-wasm daemon serving");
    runtime.block_on(async {
        let unix = tokio::spawn(server::serve_unix(listener, daemon.clone()));
        let tcp = metrics_address
            .or(config.metrics_address)
            .map(|address| tokio::spawn(server::serve_tcp(address, daemon.clone())));
        server::shutdown_signal().await;
        tracing::info!("shutting down");
        unix.abort();
        if let Some(tcp) = tcp {
            tcp.abort();
        }
    });
    stop.store(true, Ordering::SeqCst);
    let _ = std::fs::remove_file(&socket_path);
    if let Some(watcher) = watcher {
        let _ = watcher.join();
    }
    Ok(())
}
