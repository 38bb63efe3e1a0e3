//! The sandbox: one wasmtime engine per process, a fresh store per call, and
//! every limit a guest can hit.
//!
//! A call runs a verified component under a fuel budget, a wall-clock
//! deadline (epoch interruption driven by one ticker thread, and a timeout
//! on every WASI call that can block), a cap on all its memories together,
//! caps on its instances, memories and tables, and a wasm stack cap, then
//! checks what the guest returned (op count, string sizes) before converting
//! it into host-owned types. Each way a guest can fail maps to its own
//! [`SandboxError`] variant and CNI code, naming the plugin and its sha256.
//!
//! Architecture Invariant: the generated WIT types stay inside this module
//! (`bindings`, `state`, `convert`); callers see [`PluginRequest`],
//! [`crate::netlink::Plan`] and [`crate::cni::CniResult`].

mod abi;
pub mod bindings;
pub mod cache;
mod compat;
mod convert;
mod state;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine, Store, Trap};

pub use abi::{ABI_VERSION_REQ, Abi, AbiInfo, World};
pub use cache::{CacheOutcome, ModuleCache};

use crate::cni::CniResult;
use crate::netlink::query::LinkQueries;
use crate::plan::Plan;
use crate::store::ipam::IpamStore;
use state::{DeadlineHit, MemoryLimitHit, StoreState, TableLimitHit};

/// Interval of the epoch ticker; deadlines are precise to about this much.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Every limit a guest call runs under. These are configurable (host config
/// `wasmLimits`, CLI flags); the defaults suit the shipped plugins with a
/// wide margin (a host-local ADD burns well under 1% of the fuel).
///
/// Besides these, every call (store) is capped by constants: at most
/// [`MAX_INSTANCES`] core instances, [`MAX_MEMORIES`] linear memories,
/// [`MAX_TABLES`] tables and [`MAX_TABLE_ELEMENTS`] table elements in total
/// (the shipped Rust components, `wasm32-wasip2` builds included, have 3
/// core instances, 1 memory and 2 tables). Going over one fails the call
/// with [`SandboxError::Resources`], code 103 like the memory cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Fuel units (about one per wasm instruction).
    pub fuel: u64,
    /// Wall-clock deadline of one call: running wasm is interrupted at it,
    /// and a WASI call blocked in `wasi:io/poll` returns at it.
    #[serde(rename = "timeoutMs", serialize_with = "serialize_millis")]
    pub timeout: Duration,
    /// Cap on the plugin's linear memory, in bytes: all the memories of all
    /// its core instances together.
    pub memory_bytes: usize,
    /// Maximum wasm stack, in bytes (engine-wide).
    pub max_wasm_stack: usize,
    /// Maximum ops in one plan.
    pub max_ops: usize,
    /// Maximum bytes of any string a guest returns or logs.
    pub max_string_bytes: usize,
    /// Maximum log lines one call may write, through the log import and
    /// WASI stdout/stderr together (later lines are dropped).
    pub max_log_lines: usize,
}

/// Most core module instances one call may create.
pub const MAX_INSTANCES: usize = 64;
/// Most linear memories one call may create.
pub const MAX_MEMORIES: usize = 16;
/// Most tables one call may create.
pub const MAX_TABLES: usize = 64;
/// Most table elements all the tables of one call may hold together.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

fn serialize_millis<S: serde::Serializer>(
    value: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_u128(value.as_millis())
}

impl Limits {
    /// The limits of the host config's `wasmLimits` (unset fields keep the
    /// defaults).
    pub fn from_config(wasm: &crate::config::WasmLimits) -> Limits {
        let mut limits = Limits::default();
        if let Some(fuel) = wasm.fuel {
            limits.fuel = fuel;
        }
        if let Some(timeout) = wasm.timeout_ms {
            limits.timeout = Duration::from_millis(timeout);
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 200_000_000,
            timeout: Duration::from_millis(1000),
            memory_bytes: 32 << 20,
            max_wasm_stack: 512 << 10,
            max_ops: 256,
            max_string_bytes: 4096,
            max_log_lines: 256,
        }
    }
}

/// Why a plugin was refused or a call failed. Every variant names the plugin
/// and, once it is known, its sha256.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The plugin file could not be read.
    #[error("cannot read plugin {plugin} at {path}: {source}")]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file's digest differs from the one pinned in the config.
    #[error(
        "plugin {plugin} at {path} has sha256 {actual} but the config pins {expected}: refusing it"
    )]
    DigestMismatch {
        plugin: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// The file is not a loadable WebAssembly component.
    #[error("plugin {plugin} (sha256 {digest}) is not a valid WebAssembly component: {reason}")]
    NotAComponent {
        plugin: String,
        digest: String,
        reason: String,
    },
    /// The component speaks an ABI version this host does not know.
    #[error(
        "plugin {plugin} (sha256 {digest}) exports {export}, an ABI version this host does not support (it supports multus-wasm:plugin {ABI_VERSION_REQ})"
    )]
    UnsupportedAbi {
        plugin: String,
        digest: String,
        export: String,
    },
    /// The component exports no plugin interface at all.
    #[error(
        "plugin {plugin} (sha256 {digest}) exports no multus-wasm plugin interface (expected multus-wasm:plugin/delegate or multus-wasm:plugin/ipam {ABI_VERSION_REQ})"
    )]
    NoPluginExport { plugin: String, digest: String },
    /// The component imports something the host does not provide.
    #[error(
        "plugin {plugin} (sha256 {digest}) imports {import}, which this host does not provide to {world} plugins"
    )]
    UnknownImport {
        plugin: String,
        digest: String,
        import: String,
        world: World,
    },
    /// A delegate was used as IPAM or the other way round.
    #[error("plugin {plugin} (sha256 {digest}) is a {actual} plugin, not a {expected} plugin")]
    WrongWorld {
        plugin: String,
        digest: String,
        actual: World,
        expected: World,
    },
    /// The call ran past its wall-clock deadline.
    #[error("plugin {plugin} (sha256 {digest}) exceeded its deadline of {timeout_ms} ms")]
    Deadline {
        plugin: String,
        digest: String,
        timeout_ms: u128,
    },
    /// The call burnt its whole fuel budget.
    #[error("plugin {plugin} (sha256 {digest}) ran out of fuel (budget {fuel} units)")]
    Fuel {
        plugin: String,
        digest: String,
        fuel: u64,
    },
    /// The guest tried to grow its memories past the cap (their total).
    #[error(
        "plugin {plugin} (sha256 {digest}) exceeded its memory limit of {limit_bytes} bytes, the plugin's total over all its memories (it asked for {requested_bytes} bytes in total)"
    )]
    Memory {
        plugin: String,
        digest: String,
        limit_bytes: usize,
        requested_bytes: usize,
    },
    /// The guest went over a count every call is capped to: core instances,
    /// memories, tables or table elements (code 103, as memory).
    #[error(
        "plugin {plugin} (sha256 {digest}) exceeded the sandbox's limit of {limit} {what} per call (asked for {requested})"
    )]
    Resources {
        plugin: String,
        digest: String,
        what: &'static str,
        limit: usize,
        requested: usize,
    },
    /// The guest overflowed its wasm stack.
    #[error("plugin {plugin} (sha256 {digest}) overflowed its wasm stack ({limit_bytes} bytes)")]
    Stack {
        plugin: String,
        digest: String,
        limit_bytes: usize,
    },
    /// The guest panicked (the SDK reports the panic message before aborting).
    #[error("plugin {plugin} (sha256 {digest}) panicked: {message}")]
    Panic {
        plugin: String,
        digest: String,
        message: String,
    },
    /// Any other trap.
    #[error("plugin {plugin} (sha256 {digest}) trapped: {trap}")]
    Trap {
        plugin: String,
        digest: String,
        trap: String,
    },
    /// The guest returned more than the limits allow.
    #[error("plugin {plugin} (sha256 {digest}) returned output over the limit: {reason}")]
    OutputLimit {
        plugin: String,
        digest: String,
        reason: String,
    },
    /// The guest returned something unparsable (an address that is not one...).
    #[error("plugin {plugin} (sha256 {digest}) returned an invalid plan: {reason}")]
    InvalidOutput {
        plugin: String,
        digest: String,
        reason: String,
    },
    /// The guest returned its own CNI error.
    #[error("{msg}")]
    Plugin {
        code: u32,
        msg: String,
        details: String,
    },
    /// The compiled-code cache directory cannot be used.
    #[error("compiled-code cache: {0}")]
    CacheDir(cache::CacheError),
    /// The compiled-code cache failed in a way that is not a miss.
    #[error("plugin {plugin}: compiled-code cache: {source}")]
    Cache {
        plugin: String,
        source: cache::CacheError,
    },
    /// wasmtime itself failed (engine creation, linking).
    #[error("wasmtime: {0}")]
    Engine(String),
}

/// CNI error codes of sandbox failures (plugin-specific range, >= 100), one
/// per kind so an operator can tell them apart without reading the message.
pub mod code {
    pub use crate::cni::error::{HOST_RESERVED, REMAPPED};

    pub const PLUGIN_REFUSED: u32 = 100;
    pub const DEADLINE: u32 = 101;
    pub const FUEL: u32 = 102;
    pub const MEMORY: u32 = 103;
    pub const STACK: u32 = 104;
    pub const TRAP: u32 = 105;
    pub const OUTPUT: u32 = 106;
}

impl SandboxError {
    /// The CNI error code for this failure.
    pub fn cni_code(&self) -> u32 {
        match self {
            SandboxError::Read { .. } => 5,
            SandboxError::DigestMismatch { .. }
            | SandboxError::NotAComponent { .. }
            | SandboxError::UnsupportedAbi { .. }
            | SandboxError::NoPluginExport { .. }
            | SandboxError::UnknownImport { .. }
            | SandboxError::WrongWorld { .. } => code::PLUGIN_REFUSED,
            SandboxError::Deadline { .. } => code::DEADLINE,
            SandboxError::Fuel { .. } => code::FUEL,
            SandboxError::Memory { .. } | SandboxError::Resources { .. } => code::MEMORY,
            SandboxError::Stack { .. } => code::STACK,
            SandboxError::Panic { .. } | SandboxError::Trap { .. } => code::TRAP,
            SandboxError::OutputLimit { .. } | SandboxError::InvalidOutput { .. } => code::OUTPUT,
            SandboxError::Plugin { code, .. } => *code,
            SandboxError::CacheDir(_) | SandboxError::Cache { .. } | SandboxError::Engine(_) => 999,
        }
    }

    /// Extra context for the CNI error's `details`.
    pub fn details(&self) -> String {
        match self {
            SandboxError::Plugin { details, .. } => details.clone(),
            _ => String::new(),
        }
    }
}

/// What a plugin is asked, in host-owned types.
#[derive(Debug, Clone)]
pub struct PluginRequest {
    pub command: crate::cni::CniCommand,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: Vec<(String, String)>,
    /// The delegate's network configuration as the runtime would pass it.
    pub config: String,
    pub prev_result: Option<CniResult>,
    pub ipam_result: Option<CniResult>,
    pub valid_attachments: Vec<(String, String)>,
    /// What this plugin's ADD kept for the attachment (CHECK, DEL).
    pub state: Option<String>,
}

/// What a call returned besides the plan: how much it cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallStats {
    pub fuel_consumed: u64,
    pub instantiate_micros: u64,
    pub call_micros: u64,
}

/// A plugin that passed every check at load time: digest, component, ABI
/// version, imports. Cheap to call many times.
pub struct Plugin {
    pub name: String,
    pub digest: String,
    pub path: PathBuf,
    pub abi: AbiInfo,
    /// Whether the plugin was compiled by this load or came from the cache.
    pub cache_outcome: CacheOutcome,
    pre: InstancePre<StoreState>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("path", &self.path)
            .field("abi", &self.abi)
            .finish()
    }
}

/// The engine, its linkers and the compiled-code cache.
pub struct Sandbox {
    engine: Engine,
    limits: Limits,
    cache: Option<ModuleCache>,
    /// One linker per (ABI, world, uses WASI), built on first use.
    linkers: [std::sync::OnceLock<Linker<StoreState>>; 8],
    ticker: Once,
}

/// The engine configuration every artifact is compiled for. Part of the
/// cache key: changing anything here invalidates compiled artifacts.
fn engine_config(limits: &Limits) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.consume_fuel(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(limits.max_wasm_stack);
    config.cranelift_nan_canonicalization(true);
    config
}

/// The sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut text = String::with_capacity(64);
    for byte in digest {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

impl Sandbox {
    /// An engine with `limits`, caching compiled code under `cache_dir`
    /// (`None`: compile in memory on every load, for one-off CLI use).
    pub fn new(limits: Limits, cache_dir: Option<&Path>) -> Result<Self, SandboxError> {
        let engine_span = crate::timing::span("engine");
        let engine = Engine::new(&engine_config(&limits))
            .map_err(|err| SandboxError::Engine(err.to_string()))?;
        drop(engine_span);
        let cache = match cache_dir {
            Some(dir) => Some(ModuleCache::new(dir, &engine).map_err(SandboxError::CacheDir)?),
            None => None,
        };
        Ok(Sandbox {
            engine,
            limits,
            cache,
            linkers: Default::default(),
            ticker: Once::new(),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn cache(&self) -> Option<&ModuleCache> {
        self.cache.as_ref()
    }

    fn linker(
        &self,
        abi: Abi,
        world: World,
        wasi: bool,
    ) -> Result<&Linker<StoreState>, SandboxError> {
        let slot = &self.linkers
            [(abi == Abi::V0_2) as usize * 4 + (world == World::Ipam) as usize * 2 + wasi as usize];
        if let Some(linker) = slot.get() {
            return Ok(linker);
        }
        let _span = crate::timing::span("linkers");
        let linker = state::build_linker(&self.engine, abi, world, wasi)
            .map_err(|err| SandboxError::Engine(err.to_string()))?;
        Ok(slot.get_or_init(|| linker))
    }

    /// Load the plugin registered as `name` from `path`.
    ///
    /// With a pinned digest and a cache, a cached artifact compiled from
    /// exactly that digest is used without reading the `.wasm` at all (so
    /// what runs is always the pinned code); otherwise the file is read, its
    /// digest checked against the pin, and the component compiled (once, under
    /// the cache's lock) and cached.
    pub fn load(
        &self,
        name: &str,
        path: &Path,
        pinned_sha256: Option<&str>,
    ) -> Result<Plugin, SandboxError> {
        let cached = match (pinned_sha256, &self.cache) {
            (Some(digest), Some(cache)) => {
                let _span = crate::timing::span("deserialize");
                cache.load(&self.engine, digest)
            }
            _ => None,
        };
        let (component, digest, cache_outcome) = match (cached, pinned_sha256) {
            (Some(component), Some(digest)) => (component, digest.to_string(), CacheOutcome::Hit),
            _ => {
                let bytes = std::fs::read(path).map_err(|source| SandboxError::Read {
                    plugin: name.into(),
                    path: path.into(),
                    source,
                })?;
                let digest = sha256_hex(&bytes);
                if let Some(expected) = pinned_sha256
                    && !expected.eq_ignore_ascii_case(&digest)
                {
                    return Err(SandboxError::DigestMismatch {
                        plugin: name.into(),
                        path: path.into(),
                        expected: expected.into(),
                        actual: digest,
                    });
                }
                self.compile(name, &digest, &bytes)?
            }
        };
        let abi = abi::inspect(&self.engine, &component)
            .map_err(|problem| problem.into_error(name, &digest))?;
        let linker = self.linker(abi.abi, abi.world, abi.uses_wasi)?;
        let pre = linker.instantiate_pre(&component).map_err(|err| {
            // Imports were checked by name in `abi::inspect`; what is left is a
            // type mismatch on an import the host does provide.
            SandboxError::UnknownImport {
                plugin: name.into(),
                digest: digest.clone(),
                import: format!("{err:#}"),
                world: abi.world,
            }
        })?;
        Ok(Plugin {
            name: name.into(),
            digest,
            path: path.into(),
            abi,
            cache_outcome,
            pre,
        })
    }

    fn compile(
        &self,
        name: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(Component, String, CacheOutcome), SandboxError> {
        let not_a_component = |reason: String| SandboxError::NotAComponent {
            plugin: name.into(),
            digest: digest.into(),
            reason,
        };
        if !abi::looks_like_component(bytes) {
            return Err(not_a_component(
                "not a component binary (a core module, a precompiled artifact, or not wasm at all)"
                    .into(),
            ));
        }
        match &self.cache {
            Some(cache) => {
                let (component, outcome) = cache
                    .load_or_compile(&self.engine, digest, bytes)
                    .map_err(|err| match err {
                        cache::CacheError::Compile(reason) => not_a_component(reason),
                        source => SandboxError::Cache {
                            plugin: name.into(),
                            source,
                        },
                    })?;
                Ok((component, digest.into(), outcome))
            }
            None => {
                let component = Component::new(&self.engine, bytes)
                    .map_err(|err| not_a_component(format!("{err:#}")))?;
                tracing::info!(plugin = name, sha256 = digest, "compiled plugin (no cache)");
                Ok((component, digest.into(), CacheOutcome::Compiled))
            }
        }
    }

    fn start_ticker(&self) {
        self.ticker.call_once(|| {
            let engine = self.engine.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .expect("spawning the epoch ticker thread");
        });
    }

    fn new_store(
        &self,
        plugin: &Plugin,
        ifname: &str,
        links: Box<dyn LinkQueries>,
        store: Option<Box<dyn IpamStore>>,
    ) -> Store<StoreState> {
        self.start_ticker();
        let state = StoreState::new(
            &plugin.name,
            &plugin.digest,
            ifname,
            self.limits,
            Instant::now() + self.limits.timeout,
            links,
            store,
            plugin.abi.uses_wasi,
        );
        let mut wasm_store = Store::new(&self.engine, state);
        wasm_store.limiter(|state| &mut state.limiter);
        // Fuel and epochs are both enabled in `engine_config`.
        let _ = wasm_store.set_fuel(self.limits.fuel);
        let ticks = self.limits.timeout.as_micros() / EPOCH_TICK.as_micros() + 1;
        wasm_store.set_epoch_deadline(ticks as u64);
        wasm_store.epoch_deadline_trap();
        wasm_store
    }

    /// Run a delegate plugin and return its validated, converted plan.
    pub fn call_delegate(
        &self,
        plugin: &Plugin,
        links: Box<dyn LinkQueries>,
        request: &PluginRequest,
    ) -> Result<(Plan, CallStats), SandboxError> {
        let abi = plugin.abi.abi;
        let (plan, stats) = self.run(
            plugin,
            World::Delegate,
            request,
            links,
            None,
            |store, pre| {
                let wit_request = convert::request_to_wit(request);
                if abi == Abi::V0_1 {
                    let instance = bindings::v0_1::delegate::DelegatePluginPre::new(pre.clone())?
                        .instantiate(&mut *store)?;
                    let instantiated = Instant::now();
                    let outcome = instance
                        .multus_wasm_plugin_delegate()
                        .call_handle(&mut *store, &compat::request(wit_request))?;
                    return Ok((
                        instantiated,
                        outcome.map(compat::plan).map_err(compat::error),
                    ));
                }
                let instance = bindings::delegate::DelegatePluginPre::new(pre.clone())?
                    .instantiate(&mut *store)?;
                let instantiated = Instant::now();
                let exports = instance.multus_wasm_plugin_delegate();
                let versions = exports.call_cni_versions(&mut *store)?;
                if let Err(refusal) = convert::check_cni_versions(&versions, &request.config) {
                    return Ok((instantiated, Err(refusal)));
                }
                let outcome = exports.call_handle(&mut *store, &wit_request)?;
                Ok((instantiated, outcome))
            },
        )?;
        let plan = convert::plan_from_wit(plan, &self.limits)
            .map_err(|problem| problem.into_error(&plugin.name, &plugin.digest))?;
        Ok((plan, stats))
    }

    /// Run an IPAM plugin: ADD returns the allocation, the others `None`.
    pub fn call_ipam(
        &self,
        plugin: &Plugin,
        links: Box<dyn LinkQueries>,
        ipam_store: Box<dyn IpamStore>,
        request: &PluginRequest,
    ) -> Result<(Option<CniResult>, CallStats), SandboxError> {
        let abi = plugin.abi.abi;
        let (result, stats) = self.run(
            plugin,
            World::Ipam,
            request,
            links,
            Some(ipam_store),
            |store, pre| {
                let wit_request = convert::request_to_wit(request);
                if abi == Abi::V0_1 {
                    let instance = bindings::v0_1::ipam::IpamPluginPre::new(pre.clone())?
                        .instantiate(&mut *store)?;
                    let instantiated = Instant::now();
                    let outcome = instance
                        .multus_wasm_plugin_ipam()
                        .call_handle(&mut *store, &compat::request(wit_request))?;
                    let outcome = outcome
                        .map(|result| result.map(compat::result))
                        .map_err(compat::error);
                    return Ok((instantiated, outcome));
                }
                let instance =
                    bindings::ipam::IpamPluginPre::new(pre.clone())?.instantiate(&mut *store)?;
                let instantiated = Instant::now();
                let exports = instance.multus_wasm_plugin_ipam();
                let versions = exports.call_cni_versions(&mut *store)?;
                if let Err(refusal) = convert::check_cni_versions(&versions, &request.config) {
                    return Ok((instantiated, Err(refusal)));
                }
                let outcome = exports.call_handle(&mut *store, &wit_request)?;
                Ok((instantiated, outcome))
            },
        )?;
        let result = result
            .map(|result| convert::result_from_wit(result, &self.limits))
            .transpose()
            .map_err(|problem| problem.into_error(&plugin.name, &plugin.digest))?;
        Ok((result, stats))
    }

    /// One call in a fresh store: `invoke` instantiates and calls; every
    /// trap maps to its own error, a guest error to its CNI error.
    fn run<T>(
        &self,
        plugin: &Plugin,
        world: World,
        request: &PluginRequest,
        links: Box<dyn LinkQueries>,
        ipam_store: Option<Box<dyn IpamStore>>,
        invoke: impl FnOnce(
            &mut Store<StoreState>,
            &InstancePre<StoreState>,
        )
            -> wasmtime::Result<(Instant, Result<T, bindings::wit::PluginError>)>,
    ) -> Result<(T, CallStats), SandboxError> {
        self.expect_world(plugin, world)?;
        let _span = crate::timing::span("guest-call");
        let mut store = self.new_store(plugin, &request.ifname, links, ipam_store);
        let started = Instant::now();
        let outcome = invoke(&mut store, &plugin.pre);
        let finished = Instant::now();
        store.data_mut().flush_wasi_output();
        let (instantiated, outcome) =
            outcome.map_err(|err| self.trap_error(plugin, &mut store, err))?;
        let stats = self.stats(&store, started, instantiated, finished);
        let value = outcome.map_err(|error| {
            convert::plugin_error(error, &self.limits, &plugin.name, &plugin.digest)
        })?;
        Ok((value, stats))
    }

    fn expect_world(&self, plugin: &Plugin, expected: World) -> Result<(), SandboxError> {
        if plugin.abi.world == expected {
            Ok(())
        } else {
            Err(SandboxError::WrongWorld {
                plugin: plugin.name.clone(),
                digest: plugin.digest.clone(),
                actual: plugin.abi.world,
                expected,
            })
        }
    }

    fn stats(
        &self,
        store: &Store<StoreState>,
        started: Instant,
        instantiated: Instant,
        finished: Instant,
    ) -> CallStats {
        CallStats {
            fuel_consumed: self.limits.fuel - store.get_fuel().unwrap_or(0),
            instantiate_micros: (instantiated - started).as_micros() as u64,
            call_micros: (finished - instantiated).as_micros() as u64,
        }
    }

    /// Map a wasmtime error from instantiation or a call to the distinct
    /// error of its cause.
    fn trap_error(
        &self,
        plugin: &Plugin,
        store: &mut Store<StoreState>,
        err: wasmtime::Error,
    ) -> SandboxError {
        let name = plugin.name.clone();
        let digest = plugin.digest.clone();
        if let Some(hit) = err.downcast_ref::<MemoryLimitHit>() {
            return SandboxError::Memory {
                plugin: name,
                digest,
                limit_bytes: self.limits.memory_bytes,
                requested_bytes: hit.requested,
            };
        }
        if let Some(hit) = err.downcast_ref::<TableLimitHit>() {
            return SandboxError::Resources {
                plugin: name,
                digest,
                what: "table elements",
                limit: MAX_TABLE_ELEMENTS,
                requested: hit.requested,
            };
        }
        if let Some((what, limit, requested)) = count_limit_hit(&err) {
            return SandboxError::Resources {
                plugin: name,
                digest,
                what,
                limit,
                requested,
            };
        }
        if err.downcast_ref::<DeadlineHit>().is_some() {
            return SandboxError::Deadline {
                plugin: name,
                digest,
                timeout_ms: self.limits.timeout.as_millis(),
            };
        }
        if let Some(trap) = err.downcast_ref::<Trap>() {
            match trap {
                Trap::OutOfFuel => {
                    return SandboxError::Fuel {
                        plugin: name,
                        digest,
                        fuel: self.limits.fuel,
                    };
                }
                Trap::Interrupt => {
                    return SandboxError::Deadline {
                        plugin: name,
                        digest,
                        timeout_ms: self.limits.timeout.as_millis(),
                    };
                }
                Trap::StackOverflow => {
                    return SandboxError::Stack {
                        plugin: name,
                        digest,
                        limit_bytes: self.limits.max_wasm_stack,
                    };
                }
                _ => {}
            }
        }
        if let Some(message) = store.data_mut().take_panic_message() {
            return SandboxError::Panic {
                plugin: name,
                digest,
                message,
            };
        }
        SandboxError::Trap {
            plugin: name,
            digest,
            trap: format!("{err:#}"),
        }
    }
}

/// The count wasmtime refused when instantiating past one of the limiter's
/// `instances`/`memories`/`tables` caps: (what, limit, requested).
///
/// wasmtime reports these with a plain message, "resource limit exceeded:
/// {instance,memory,table} count too high at N" (`bump_resource_counts`), not
/// a type; `tests/sandbox.rs` pins each message against real components.
fn count_limit_hit(err: &wasmtime::Error) -> Option<(&'static str, usize, usize)> {
    err.chain().find_map(|cause| {
        let message = cause.to_string();
        let rest = message.strip_prefix("resource limit exceeded: ")?;
        let (kind, count) = rest.split_once(" count too high at ")?;
        let requested = count.trim().parse().ok()?;
        let (what, limit) = match kind {
            "instance" => ("core instances", MAX_INSTANCES),
            "memory" => ("memories", MAX_MEMORIES),
            "table" => ("tables", MAX_TABLES),
            _ => return None,
        };
        Some((what, limit, requested))
    })
}

/// What the CLI's `plugin inspect` prints.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    pub abi_version: String,
    pub world: World,
    pub export: String,
    pub imports: Vec<String>,
    pub uses_wasi: bool,
}

impl Sandbox {
    /// Inspect a `.wasm` file without caching anything.
    pub fn inspect(&self, path: &Path) -> Result<Inspection, SandboxError> {
        let name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into());
        let bytes = std::fs::read(path).map_err(|source| SandboxError::Read {
            plugin: name.clone(),
            path: path.into(),
            source,
        })?;
        let digest = sha256_hex(&bytes);
        if !abi::looks_like_component(&bytes) {
            return Err(SandboxError::NotAComponent {
                plugin: name,
                digest,
                reason: "not a component binary".into(),
            });
        }
        let component =
            Component::new(&self.engine, &bytes).map_err(|err| SandboxError::NotAComponent {
                plugin: name.clone(),
                digest: digest.clone(),
                reason: format!("{err:#}"),
            })?;
        let abi = abi::inspect(&self.engine, &component)
            .map_err(|problem| problem.into_error(&name, &digest))?;
        Ok(Inspection {
            path: path.into(),
            sha256: digest,
            size: bytes.len() as u64,
            abi_version: abi.version.clone(),
            world: abi.world,
            export: abi.export.clone(),
            imports: abi.imports.clone(),
            uses_wasi: abi.uses_wasi,
        })
    }
}

/// A loaded wasm plugin as the rest of the host runs it: the seam the
/// attachment runner calls through (a fake stands in for it in unit tests,
/// which build no guest).
pub trait Guest: Send + Sync {
    /// The plugin's registered type.
    fn name(&self) -> &str;
    fn digest(&self) -> &str;
    /// Which interface it exports (delegate or IPAM).
    fn world(&self) -> World;
    /// The wall-clock deadline of one call (bounds the IPAM store's lock).
    fn timeout(&self) -> Duration;
    /// Run a delegate plugin.
    fn delegate(
        &self,
        request: &PluginRequest,
        links: Box<dyn LinkQueries>,
    ) -> Result<Plan, SandboxError>;
    /// Run an IPAM plugin (its store locked for the call).
    fn ipam(
        &self,
        request: &PluginRequest,
        links: Box<dyn LinkQueries>,
        store: Box<dyn IpamStore>,
    ) -> Result<Option<CniResult>, SandboxError>;
}

/// A plugin together with the sandbox (engine, limits) it was loaded into;
/// shared by concurrent calls.
pub struct LoadedPlugin {
    pub sandbox: Arc<Sandbox>,
    pub plugin: Plugin,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.plugin.fmt(f)
    }
}

impl Guest for LoadedPlugin {
    fn name(&self) -> &str {
        &self.plugin.name
    }

    fn digest(&self) -> &str {
        &self.plugin.digest
    }

    fn world(&self) -> World {
        self.plugin.abi.world
    }

    fn timeout(&self) -> Duration {
        self.sandbox.limits().timeout
    }

    fn delegate(
        &self,
        request: &PluginRequest,
        links: Box<dyn LinkQueries>,
    ) -> Result<Plan, SandboxError> {
        let (plan, stats) = self.sandbox.call_delegate(&self.plugin, links, request)?;
        tracing::debug!(plugin = %self.plugin.name, ops = plan.ops.len(), fuel = stats.fuel_consumed, call_us = stats.call_micros, "delegate planned");
        Ok(plan)
    }

    fn ipam(
        &self,
        request: &PluginRequest,
        links: Box<dyn LinkQueries>,
        store: Box<dyn IpamStore>,
    ) -> Result<Option<CniResult>, SandboxError> {
        let (result, stats) = self
            .sandbox
            .call_ipam(&self.plugin, links, store, request)?;
        tracing::debug!(plugin = %self.plugin.name, fuel = stats.fuel_consumed, call_us = stats.call_micros, "IPAM ran");
        Ok(result)
    }
}

impl From<SandboxError> for crate::cni::CniError {
    fn from(err: SandboxError) -> Self {
        crate::cni::CniError::new(err.cni_code(), err.to_string()).with_details(err.details())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasmtime_count_errors_map_to_the_cap_they_hit() {
        let err = wasmtime::Error::msg("resource limit exceeded: instance count too high at 65")
            .context("instantiating the component");
        assert_eq!(
            count_limit_hit(&err),
            Some(("core instances", MAX_INSTANCES, 65))
        );
        let err = wasmtime::Error::msg("resource limit exceeded: memory count too high at 17");
        assert_eq!(count_limit_hit(&err), Some(("memories", MAX_MEMORIES, 17)));
        let err = wasmtime::Error::msg("resource limit exceeded: table count too high at 66");
        assert_eq!(count_limit_hit(&err), Some(("tables", MAX_TABLES, 66)));
        let err = wasmtime::Error::msg("some other trap");
        assert_eq!(count_limit_hit(&err), None);
    }

    #[test]
    fn guest_codes_in_the_host_range_are_reserved() {
        assert!(code::HOST_RESERVED.contains(&code::PLUGIN_REFUSED));
        assert!(code::HOST_RESERVED.contains(&code::OUTPUT));
        assert!(code::HOST_RESERVED.contains(&crate::plan::policy::POLICY_CODE));
        assert!(!code::HOST_RESERVED.contains(&code::REMAPPED));
        assert!(!code::HOST_RESERVED.contains(&11));
    }
}
