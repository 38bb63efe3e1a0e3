//! The command line for plugin authors and operators (everything but CNI
//! mode): `plugin inspect` and `plugin run`, which run a guest in the same
//! sandbox as production and print its plan without applying it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::cni::CniCommand as PluginCommand;
use crate::cni::{CniError, CniResult, CniVersion, parse_cni_args};
use crate::netlink::handles::{Handles, NetnsFile};
use crate::netlink::query::KernelLinks;
use crate::sandbox::{Limits, PluginRequest, Sandbox, World};
use crate::store::ipam::DirStore;

/// Where compiled plugins are cached unless told otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/multus-wasm/cache";

#[derive(Debug, Parser)]
#[command(
    name = "multus-wasm",
    version,
    about = "A Multus-compatible CNI meta-plugin whose delegates run as sandboxed WebAssembly components",
    long_about = "A Multus-compatible CNI meta-plugin whose delegates run as sandboxed WebAssembly components.\n\nWith CNI_COMMAND set in the environment it speaks the CNI protocol (stdin config, stdout result). Without it, it is this command line."
)]
struct Cli {
    /// Log level on stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Log format on stderr: text or json (one JSON object per line), e.g.
    /// for the daemon.
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect, verify, compile and try wasm plugins.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Install on this node: the binary into the CNI bin dir, the plugins
    /// (verified, precompiled) and the generated host config (what the
    /// DaemonSet runs).
    Install(Box<InstallArgs>),
    /// Remove what install wrote on this node, and only that: our config
    /// (`00-multus-wasm.*` in the conf dir, renamed copies included), the
    /// service-account kubeconfig, our binary and shim, and the state dir's
    /// plugins, compiled-code cache and daemon config. Safe to run again.
    Uninstall(UninstallArgs),
    /// Thick mode's node daemon: serve CNI calls forwarded by
    /// `multus-wasm-shim` on a root-only unix socket, with plugins and
    /// informer caches kept warm.
    Daemon(Box<DaemonArgs>),
}

#[derive(Debug, clap::Args)]
struct DaemonArgs {
    /// The daemon config: the host config plus `socketDir`, `nodeName` and
    /// `metricsAddress` (thick install writes it as
    /// `<state-dir>/daemon.conf`).
    #[arg(long)]
    config: PathBuf,
    /// Also keep the node's config in step, as `install --mode thick
    /// --watch` does (one long-running process per node): rewrite the shim
    /// config and the daemon config whenever the primary config, the
    /// plugins or the template change; the daemon follows its config file.
    #[arg(long)]
    keep_config: bool,
    /// Also serve /metrics and /healthz on this TCP address (overrides the
    /// config's `metricsAddress`).
    #[arg(long)]
    metrics_address: Option<std::net::SocketAddr>,
    #[command(flatten)]
    install: InstallArgs,
}

/// Where install and uninstall find the node's files.
#[derive(Debug, clap::Args)]
struct NodePaths {
    /// Where the host's root is mounted (`/host` in the DaemonSet).
    #[arg(long, default_value = "/")]
    host_root: PathBuf,
    /// The host's CNI bin dir (a host path).
    #[arg(long, default_value = "/opt/cni/bin")]
    bin_dir: PathBuf,
    /// The host's CNI conf dir (a host path).
    #[arg(long, default_value = "/etc/cni/net.d")]
    conf_dir: PathBuf,
    /// The node's state dir for plugins and the compiled-code cache (a host path).
    #[arg(long, default_value = "/var/lib/multus-wasm")]
    state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
struct UninstallArgs {
    #[command(flatten)]
    node: NodePaths,
}

#[derive(Debug, clap::Args)]
struct InstallArgs {
    #[command(flatten)]
    node: NodePaths,
    /// The shipped plugins: `plugins.json` ({"<type>": {"file", "sha256"}}) and the files.
    #[arg(long, default_value = "/etc/multus-wasm/plugins")]
    plugin_dir: PathBuf,
    /// thin: kubelet execs multus-wasm itself; thick: kubelet execs
    /// multus-wasm-shim, which forwards to `multus-wasm daemon`.
    #[arg(long, value_enum, default_value = "thin")]
    mode: InstallMode,
    /// Thick mode: the daemon's socket directory (a host path).
    #[arg(long, default_value = crate::daemon::DEFAULT_SOCKET_DIR)]
    socket_dir: PathBuf,
    /// Thick mode: the shim binary to install (default: multus-wasm-shim
    /// next to this executable).
    #[arg(long)]
    shim_binary: Option<PathBuf>,
    /// JSON with extra host-config fields (kubeconfig, logFile, wasmLimits,
    /// allowedMasters...). The watcher re-reads it every round: edits (a
    /// ConfigMap update) are applied without a restart.
    #[arg(long)]
    config_template: Option<PathBuf>,
    /// Pin the primary CNI config to this file name (in the primary conf
    /// dir); until it exists, our config is not written. Without it, the
    /// first config by name that is not a meta-plugin's (multus,
    /// multus-shim, multus-wasm, multus-wasm-shim) and not ours.
    #[arg(long)]
    primary_config: Option<String>,
    /// Read the primary CNI config from this dir (a host path) instead of
    /// the conf dir: the usual fix for the boot race, where kubelet must
    /// not see the primary before ours.
    #[arg(long)]
    primary_conf_dir: Option<PathBuf>,
    /// Multus's `--multus-kubeconfig-file-host`: the kubeconfig (a host
    /// path) written into the config as `kubeconfig`.
    #[arg(long, conflicts_with = "kubeconfig_from_service_account")]
    multus_kubeconfig_file_host: Option<PathBuf>,
    /// Multus's `--multus-log-level`: the config's `logLevel` (the CNI
    /// calls' log, not this command's `--log-level`).
    #[arg(long, value_parser = parse_log_level)]
    multus_log_level: Option<String>,
    /// Multus's `--multus-log-file`: the config's `logFile`.
    #[arg(long)]
    multus_log_file: Option<PathBuf>,
    /// The binary to install (default: this one).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Do not copy the binary.
    #[arg(long)]
    skip_binary_copy: bool,
    /// Written into the config as `readinessindicatorfile` (a host path):
    /// every CNI call waits for it (the primary network is ready).
    #[arg(long)]
    readiness_indicator_file: Option<PathBuf>,
    /// Keep running and keep the config in step with the primary config,
    /// the template and the plugins: every round compares the config files
    /// with what they should hold and rewrites them when missing (removed
    /// or renamed away) or different; a missing primary is waited for.
    #[arg(long)]
    watch: bool,
    /// With --watch: leave each round's outcome in this file (a container
    /// path, e.g. on an emptyDir) for `--check`.
    #[arg(long)]
    status_file: Option<PathBuf>,
    /// Probe a running watcher through its --status-file instead of
    /// installing (the DaemonSet's liveness and readiness probes), exit 0
    /// or 1: `alive`, a round ended within --check-max-age-seconds; `ready`,
    /// alive and the node's config is in place (not waiting for the
    /// primary, no failed write).
    #[arg(long, value_enum, requires = "status_file", conflicts_with = "watch")]
    check: Option<ProbeArg>,
    /// With --check: how old the last round may be.
    #[arg(long, default_value_t = 30)]
    check_max_age_seconds: u64,
    /// How often --watch looks for changes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// With --watch, remove our config when stopped (SIGTERM/SIGINT).
    /// Not for a DaemonSet: every rollout or restart would take the node's
    /// pod network away; use `multus-wasm uninstall` to remove it.
    /// Multus's `--cleanup-config-on-exit` is the same flag.
    #[arg(long, alias = "cleanup-config-on-exit")]
    cleanup_on_exit: bool,
    /// Write a kubeconfig for the host binary from the pod's service account.
    #[arg(long)]
    kubeconfig_from_service_account: bool,
    /// The service account directory (token, ca.crt).
    #[arg(long, default_value = "/var/run/secrets/kubernetes.io/serviceaccount")]
    service_account_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProbeArg {
    Alive,
    Ready,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InstallMode {
    Thin,
    Thick,
}

#[derive(Debug, Subcommand)]
enum PluginCmd {
    /// Print a plugin's sha256, ABI version, world, size and imports as JSON.
    Inspect {
        /// The plugin's `.wasm` file.
        file: PathBuf,
    },
    /// Run a plugin in the production sandbox and print its plan as JSON,
    /// applying nothing.
    Run(Box<RunArgs>),
    /// Check plugins: their digests against the pins, ABI versions, worlds
    /// and sizes. DIR holds `plugins.json` and the files; or use --config to
    /// check a host config's `wasmPlugins`.
    Verify {
        /// A plugin directory (with `plugins.json`).
        dir: Option<PathBuf>,
        /// A host config whose `wasmPlugins` to check instead.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Fill the compiled-code cache ahead of time for every plugin of a host
    /// config (with its `wasmLimits`, into its `wasmCacheDir`).
    Compile {
        /// The host config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Measure a plugin's costs in this sandbox: compiling it, and a cached
    /// call (load from the cache, instantiate, call); prints JSON.
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// The plugin's `.wasm` file.
    file: PathBuf,
    /// The network configuration (JSON) of the measured ADD call.
    #[arg(long)]
    config: PathBuf,
    /// An IPAM result (JSON) for a delegate.
    #[arg(long)]
    ipam_result: Option<PathBuf>,
    /// Cached calls to time.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Compiles to time.
    #[arg(long, default_value_t = 5)]
    compiles: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "UPPERCASE")]
enum CommandArg {
    Add,
    Del,
    Check,
    Status,
    Gc,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The plugin's `.wasm` file.
    file: PathBuf,
    /// The CNI command to run.
    #[arg(long, value_enum, ignore_case = true)]
    command: CommandArg,
    /// The network configuration (JSON) the plugin receives.
    #[arg(long)]
    config: PathBuf,
    /// CNI_IFNAME.
    #[arg(long, default_value = "net1")]
    ifname: String,
    /// CNI_CONTAINERID.
    #[arg(long, default_value = "plugin-run")]
    container_id: String,
    /// A network namespace whose links the plugin's queries see as the sandbox.
    #[arg(long)]
    netns: Option<PathBuf>,
    /// CNI_ARGS (`K=V;K=V`).
    #[arg(long)]
    args: Option<String>,
    /// An IPAM result (JSON) to hand a delegate, as the host does after IPAM.
    #[arg(long)]
    ipam_result: Option<PathBuf>,
    /// A previous result (JSON) for CHECK and DEL.
    #[arg(long)]
    prev_result: Option<PathBuf>,
    /// The state an earlier ADD's plan kept (its output's "state"), handed
    /// to the plugin on CHECK and DEL.
    #[arg(long)]
    state: Option<String>,
    /// Fuel budget of the call.
    #[arg(long)]
    fuel: Option<u64>,
    /// Wall-clock deadline of the call, in milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Memory cap, in MiB.
    #[arg(long)]
    memory_mib: Option<u64>,
    /// IPAM state directory (default: a fresh temporary directory).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The compiled-code cache.
    #[arg(long, env = "MULTUS_WASM_CACHE_DIR", default_value = DEFAULT_CACHE_DIR)]
    cache_dir: PathBuf,
    /// Compile in memory and cache nothing.
    #[arg(long)]
    no_cache: bool,
    /// The sha256 the plugin must have (as pinned in a host config).
    #[arg(long)]
    sha256: Option<String>,
    /// A host interface the plan may use as a macvlan master whatever its
    /// kind, as the host config's `allowedMasters` (repeatable).
    #[arg(long = "allowed-master")]
    allowed_masters: Vec<String>,
    /// Check the plan with this host config's `allowedMasters` and
    /// `allowedMacvlanModes`, as on that node. Without it (or
    /// --allowed-master), the production defaults: ordinary node
    /// interfaces as masters, modes bridge, private and vepa.
    #[arg(long)]
    host_config: Option<PathBuf>,
}

/// Run the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let level = crate::logging::parse_level(&cli.log_level)
        .unwrap_or(tracing::level_filters::LevelFilter::INFO);
    let format = cli.log_format.parse().unwrap_or_default();
    crate::logging::init_stderr(level, format);
    if cli.log_format.parse::<crate::config::LogFormat>().is_err() {
        tracing::warn!(format = %cli.log_format, "unknown --log-format: using text");
    }
    let outcome = match cli.command {
        Command::Plugin(PluginCmd::Inspect { file }) => inspect(&file),
        Command::Plugin(PluginCmd::Run(args)) => run(&args),
        Command::Plugin(PluginCmd::Bench(args)) => bench(&args),
        Command::Plugin(PluginCmd::Verify { dir, config }) => {
            verify(dir.as_deref(), config.as_deref())
        }
        Command::Plugin(PluginCmd::Compile { config }) => compile(&config),
        Command::Install(args) => install(&args),
        Command::Uninstall(args) => uninstall(&args),
        Command::Daemon(args) => daemon(&args),
    };
    match outcome {
        Ok(output) => {
            println!("{output}");
            0
        }
        Err(err) => {
            println!("{}", err.to_json(None));
            1
        }
    }
}

fn inspect(file: &Path) -> Result<String, CniError> {
    let sandbox = Sandbox::new(Limits::default(), None)?;
    let inspection = sandbox.inspect(file)?;
    Ok(serde_json::to_string_pretty(&inspection).unwrap_or_default())
}

fn read_json(path: &Path, what: &str) -> Result<(String, Value), CniError> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        CniError::io_failure(format!("cannot read {what} {}: {err}", path.display()))
    })?;
    let value = serde_json::from_str(&text).map_err(|err| {
        CniError::decoding_failure(format!(
            "{what} {} is not valid JSON: {err}",
            path.display()
        ))
    })?;
    Ok((text, value))
}

fn read_result(
    path: Option<&Path>,
    what: &str,
    version: CniVersion,
) -> Result<Option<CniResult>, CniError> {
    let Some(path) = path else { return Ok(None) };
    let (_, value) = read_json(path, what)?;
    CniResult::from_value(&value, version).map(Some)
}

/// The limits of a CLI run: the defaults with the flags applied.
fn limits(args: &RunArgs) -> Limits {
    let mut limits = Limits::default();
    if let Some(fuel) = args.fuel {
        limits.fuel = fuel;
    }
    if let Some(timeout) = args.timeout_ms {
        limits.timeout = Duration::from_millis(timeout);
    }
    if let Some(memory) = args.memory_mib {
        limits.memory_bytes = (memory as usize) << 20;
    }
    limits
}

fn run(args: &RunArgs) -> Result<String, CniError> {
    let (config_text, config) = read_json(&args.config, "config")?;
    let version = CniVersion::from_config(&config)?;
    // The default cache is root's: say how to run without it.
    let cache_hint = |err: CniError| {
        let cache = args.cache_dir.display().to_string();
        if !args.no_cache && err.msg.contains(&cache) {
            let msg = format!(
                "{}; as a normal user run with --no-cache, or --cache-dir DIR of your own",
                err.msg
            );
            CniError { msg, ..err }
        } else {
            err
        }
    };
    let sandbox = Sandbox::new(
        limits(args),
        if args.no_cache {
            None
        } else {
            Some(args.cache_dir.as_path())
        },
    )
    .map_err(|err| cache_hint(err.into()))?;
    let name = args
        .file
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let plugin = sandbox
        .load(&name, &args.file, args.sha256.as_deref())
        .map_err(|err| cache_hint(err.into()))?;
    tracing::info!(
        plugin = %plugin.name,
        sha256 = %plugin.digest,
        cache = ?plugin.cache_outcome,
        world = %plugin.abi.world,
        "loaded plugin"
    );
    let runtime = crate::node::runtime()?;
    let netns = args
        .netns
        .as_deref()
        .map(NetnsFile::open)
        .transpose()
        .map_err(|err| CniError::invalid_environment(err.to_string()))?;
    let handles = Handles::open(runtime, netns.as_ref())
        .map_err(|err| CniError::internal(err.to_string()))?;
    let links = Box::new(KernelLinks::new(handles.clone()));
    let command = match args.command {
        CommandArg::Add => PluginCommand::Add,
        CommandArg::Del => PluginCommand::Del,
        CommandArg::Check => PluginCommand::Check,
        CommandArg::Status => PluginCommand::Status,
        CommandArg::Gc => PluginCommand::Gc,
    };
    let request = PluginRequest {
        command,
        container_id: args.container_id.clone(),
        netns: args
            .netns
            .as_ref()
            .map(|path| path.display().to_string())
            .unwrap_or_default(),
        ifname: args.ifname.clone(),
        args: match &args.args {
            Some(text) => parse_cni_args(text)?,
            None => Vec::new(),
        },
        config: config_text,
        prev_result: read_result(args.prev_result.as_deref(), "prev result", version)?,
        ipam_result: read_result(args.ipam_result.as_deref(), "IPAM result", version)?,
        valid_attachments: Vec::new(),
        state: args.state.clone(),
    };
    let (ops, result, state, stats) = match plugin.abi.world {
        World::Delegate => {
            let (plan, stats) = sandbox.call_delegate(&plugin, links, &request)?;
            // The production policy, with the production refusal.
            let mut rules = match &args.host_config {
                Some(path) => {
                    let config = host_config(path)?;
                    (config.allowed_masters, config.allowed_macvlan_modes)
                }
                None => (None, crate::config::default_macvlan_modes()),
            };
            if !args.allowed_masters.is_empty() {
                rules
                    .0
                    .get_or_insert_with(Vec::new)
                    .extend(args.allowed_masters.iter().cloned());
            }
            let masters = crate::plan::policy::MasterRules {
                allowed_masters: rules.0.as_deref(),
                macvlan_modes: &rules.1,
            };
            let mut checked = crate::runner::check_plan_of(
                (&plugin.name, &plugin.digest),
                plan,
                (command, &args.ifname),
                masters,
                |master| {
                    crate::netlink::query::host_link(&handles, master).map_err(CniError::internal)
                },
            )?;
            let result = checked.take_result();
            let state = checked.take_state();
            (checked.ops().to_vec(), result, state, stats)
        }
        World::Ipam => {
            let temp;
            let state_dir = match &args.state_dir {
                Some(dir) => dir.clone(),
                None => {
                    temp = tempfile::tempdir().map_err(|err| {
                        CniError::io_failure(format!("temporary state directory: {err}"))
                    })?;
                    temp.path().to_path_buf()
                }
            };
            let network = config.get("name").and_then(Value::as_str).unwrap_or("");
            let store = DirStore::open_locked(&state_dir, network, store_options(&sandbox))
                .map_err(|err| CniError::io_failure(err.to_string()))?;
            let (result, stats) = sandbox.call_ipam(&plugin, links, Box::new(store), &request)?;
            (Vec::new(), result, None, stats)
        }
    };
    tracing::info!(
        fuel = stats.fuel_consumed,
        instantiate_us = stats.instantiate_micros,
        call_us = stats.call_micros,
        "plugin call cost"
    );
    let result = match result {
        Some(result) => result.to_json(version)?,
        None => Value::Null,
    };
    let mut output = json!({ "ops": ops, "result": result });
    if let Some(state) = state {
        output["state"] = Value::String(state);
    }
    Ok(serde_json::to_string_pretty(&output).unwrap_or_default())
}

fn median_micros(samples: &mut [std::time::Duration]) -> f64 {
    samples.sort();
    samples
        .get(samples.len() / 2)
        .map(|sample| sample.as_secs_f64() * 1e6)
        .unwrap_or(0.0)
}

/// Per-call costs: compile (no cache), then per cached call: load from the
/// cache (deserialize + link), instantiate + call, and the whole.
fn bench(args: &BenchArgs) -> Result<String, CniError> {
    use std::time::Instant;
    let (config_text, config) = read_json(&args.config, "config")?;
    let version = CniVersion::from_config(&config)?;
    let bytes = std::fs::read(&args.file)
        .map_err(|err| CniError::io_failure(format!("{}: {err}", args.file.display())))?;
    let digest = crate::sandbox::sha256_hex(&bytes);
    let mut compiles = Vec::new();
    for _ in 0..args.compiles.max(1) {
        let sandbox = Sandbox::new(Limits::default(), None)?;
        let started = Instant::now();
        sandbox.load("bench", &args.file, Some(&digest))?;
        compiles.push(started.elapsed());
    }
    let cache = tempfile::tempdir().map_err(|err| CniError::io_failure(err.to_string()))?;
    let cache_dir = cache.path().join("cache");
    Sandbox::new(Limits::default(), Some(&cache_dir))?.load("bench", &args.file, Some(&digest))?;
    let request = PluginRequest {
        command: PluginCommand::Add,
        container_id: "bench".into(),
        netns: String::new(),
        ifname: "net1".into(),
        args: Vec::new(),
        config: config_text,
        prev_result: None,
        ipam_result: read_result(args.ipam_result.as_deref(), "IPAM result", version)?,
        valid_attachments: Vec::new(),
        state: None,
    };
    let state = tempfile::tempdir().map_err(|err| CniError::io_failure(err.to_string()))?;
    let network = config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("bench")
        .to_string();
    let runtime = crate::node::runtime()?;
    let handles =
        Handles::open(runtime, None).map_err(|err| CniError::internal(err.to_string()))?;
    let (mut loads, mut calls, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    let mut fuel = 0;
    for iteration in 0..args.iterations.max(1) {
        let started = Instant::now();
        let sandbox = Sandbox::new(Limits::default(), Some(&cache_dir))?;
        let plugin = sandbox.load("bench", &args.file, Some(&digest))?;
        let loaded = Instant::now();
        let stats = match plugin.abi.world {
            World::Delegate => {
                let links = Box::new(KernelLinks::new(handles.clone()));
                sandbox.call_delegate(&plugin, links, &request)?.1
            }
            World::Ipam => {
                let mut request = request.clone();
                request.container_id = format!("bench-{iteration}");
                let store = DirStore::open_locked(state.path(), &network, store_options(&sandbox))
                    .map_err(|err| CniError::io_failure(err.to_string()))?;
                sandbox
                    .call_ipam(
                        &plugin,
                        Box::new(crate::netlink::query::NoLinks),
                        Box::new(store),
                        &request,
                    )?
                    .1
            }
        };
        let finished = Instant::now();
        fuel = stats.fuel_consumed;
        loads.push(loaded - started);
        calls.push(finished - loaded);
        totals.push(finished - started);
        if plugin.abi.world == World::Ipam && iteration % 8 == 7 {
            // Keep the range from running out: start over with a fresh store.
            let _ = std::fs::remove_dir_all(state.path().join(&network));
        }
    }
    let output = json!({
        "plugin": args.file,
        "sizeBytes": bytes.len(),
        "compileMillis": median_micros(&mut compiles) / 1000.0,
        "cachedLoadMicros": median_micros(&mut loads),
        "instantiateAndCallMicros": median_micros(&mut calls),
        "cachedCallTotalMicros": median_micros(&mut totals),
        "fuelPerCall": fuel,
        "iterations": args.iterations,
    });
    Ok(serde_json::to_string_pretty(&output).unwrap_or_default())
}

fn host_config(path: &Path) -> Result<crate::config::MultusConfig, CniError> {
    let bytes = std::fs::read(path)
        .map_err(|err| CniError::io_failure(format!("cannot read {}: {err}", path.display())))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|err| {
        CniError::decoding_failure(format!("{} is not JSON: {err}", path.display()))
    })?;
    // A .conflist holds our config as its first plugin.
    let config = match value.get("plugins").and_then(|plugins| plugins.get(0)) {
        Some(plugin) => serde_json::to_vec(plugin).unwrap_or_default(),
        None => bytes,
    };
    crate::config::MultusConfig::parse(&config)
        .map(|parsed| parsed.config)
        .map_err(|err| CniError::new(err.cni_code(), format!("{}: {err}", path.display())))
}

/// `(type, path, pinned sha256)` of every plugin to check.
fn plugins_to_check(
    dir: Option<&Path>,
    config: Option<&Path>,
) -> Result<Vec<(String, PathBuf, String)>, CniError> {
    match (dir, config) {
        (Some(dir), None) => Ok(crate::install::read_manifest(dir)
            .map_err(|err| CniError::invalid_network_config(err.to_string()))?
            .into_iter()
            .map(|(plugin_type, entry)| (plugin_type, dir.join(entry.file), entry.sha256))
            .collect()),
        (None, Some(config)) => Ok(host_config(config)?
            .wasm_plugins
            .into_iter()
            .map(|(plugin_type, plugin)| (plugin_type, plugin.path, plugin.sha256))
            .collect()),
        _ => Err(CniError::invalid_environment(
            "give a plugin directory or --config (one of them)",
        )),
    }
}

fn verify(dir: Option<&Path>, config: Option<&Path>) -> Result<String, CniError> {
    let sandbox = Sandbox::new(Limits::default(), None)?;
    let mut failures = 0;
    let mut report = serde_json::Map::new();
    for (plugin_type, path, pinned) in plugins_to_check(dir, config)? {
        let entry = match sandbox.inspect(&path) {
            Ok(inspection) if !inspection.sha256.eq_ignore_ascii_case(&pinned) => {
                failures += 1;
                json!({"ok": false, "path": path, "sha256": inspection.sha256, "pinned": pinned,
                       "error": format!("sha256 {} does not match the pinned {pinned}", inspection.sha256)})
            }
            Ok(inspection) => json!({"ok": true, "path": path, "sha256": inspection.sha256,
                                     "abiVersion": inspection.abi_version, "world": inspection.world,
                                     "size": inspection.size}),
            Err(err) => {
                failures += 1;
                json!({"ok": false, "path": path, "pinned": pinned, "error": err.to_string()})
            }
        };
        report.insert(plugin_type, entry);
    }
    let text = serde_json::to_string_pretty(&Value::Object(report)).unwrap_or_default();
    if failures == 0 {
        Ok(text)
    } else {
        Err(CniError::new(
            crate::sandbox::code::PLUGIN_REFUSED,
            format!("{failures} plugin(s) failed verification"),
        )
        .with_details(text))
    }
}

fn compile(config_path: &Path) -> Result<String, CniError> {
    let config = host_config(config_path)?;
    let sandbox = Sandbox::new(
        Limits::from_config(&config.wasm_limits),
        Some(&config.wasm_cache_dir),
    )?;
    let mut report = serde_json::Map::new();
    for (plugin_type, plugin) in &config.wasm_plugins {
        let loaded = sandbox.load(plugin_type, &plugin.path, Some(&plugin.sha256))?;
        report.insert(
            plugin_type.clone(),
            json!({"sha256": loaded.digest, "cache": loaded.cache_outcome}),
        );
    }
    Ok(serde_json::to_string_pretty(&Value::Object(report)).unwrap_or_default())
}

/// `--multus-log-level`: a level the host config accepts.
fn parse_log_level(text: &str) -> Result<String, String> {
    text.parse::<crate::config::LogLevel>()
        .map(|_| text.to_string())
        .map_err(|err| err.to_string())
}

fn install_options(args: &InstallArgs) -> Result<crate::install::InstallOptions, CniError> {
    let config_template = match &args.config_template {
        Some(path) => crate::install::read_template(path)
            .map_err(|err| CniError::invalid_network_config(err.to_string()))?,
        None => serde_json::Map::new(),
    };
    let mut config_overrides = serde_json::Map::new();
    if let Some(kubeconfig) = &args.multus_kubeconfig_file_host {
        config_overrides.insert("kubeconfig".into(), json!(kubeconfig));
    }
    if let Some(level) = &args.multus_log_level {
        config_overrides.insert("logLevel".into(), json!(level));
    }
    if let Some(file) = &args.multus_log_file {
        config_overrides.insert("logFile".into(), json!(file));
    }
    if let Some(name) = &args.primary_config {
        crate::install::check_file_name(name)
            .map_err(|err| CniError::invalid_environment(format!("--primary-config: {err}")))?;
    }
    Ok(crate::install::InstallOptions {
        host_root: args.node.host_root.clone(),
        bin_dir: args.node.bin_dir.clone(),
        conf_dir: args.node.conf_dir.clone(),
        state_dir: args.node.state_dir.clone(),
        plugin_dir: args.plugin_dir.clone(),
        config_template,
        config_template_file: args.config_template.clone(),
        config_overrides,
        primary_config: args.primary_config.clone(),
        primary_conf_dir: args.primary_conf_dir.clone(),
        binary: args.binary.clone(),
        skip_binary_copy: args.skip_binary_copy,
        readiness_indicator_file: args.readiness_indicator_file.clone(),
        service_account_dir: args
            .kubeconfig_from_service_account
            .then(|| args.service_account_dir.clone()),
        thick: (args.mode == InstallMode::Thick).then(|| crate::install::ThickInstall {
            socket_dir: args.socket_dir.clone(),
            shim: args.shim_binary.clone(),
        }),
    })
}

fn daemon(args: &DaemonArgs) -> Result<String, CniError> {
    let keep_config = if args.keep_config {
        let mut options = install_options(&args.install)?;
        options.thick.get_or_insert(crate::install::ThickInstall {
            socket_dir: args.install.socket_dir.clone(),
            shim: args.install.shim_binary.clone(),
        });
        Some((options, Duration::from_millis(args.install.interval_ms)))
    } else {
        None
    };
    crate::daemon::run(&args.config, args.metrics_address, keep_config)
        .map(|()| String::new())
        .map_err(|err| CniError::internal(err.to_string()))
}

fn uninstall(args: &UninstallArgs) -> Result<String, CniError> {
    let node = &args.node;
    let report = crate::install::uninstall(&crate::install::UninstallOptions {
        host_root: node.host_root.clone(),
        bin_dir: node.bin_dir.clone(),
        conf_dir: node.conf_dir.clone(),
        state_dir: node.state_dir.clone(),
    });
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    if report.failed.is_empty() {
        Ok(text)
    } else {
        Err(CniError::io_failure("some files could not be removed").with_details(text))
    }
}

fn install(args: &InstallArgs) -> Result<String, CniError> {
    if let (Some(probe), Some(status_file)) = (args.check, &args.status_file) {
        let probe = match probe {
            ProbeArg::Alive => crate::install::Probe::Alive,
            ProbeArg::Ready => crate::install::Probe::Ready,
        };
        let max_age = Duration::from_secs(args.check_max_age_seconds);
        return crate::install::check_watch_status(status_file, probe, max_age)
            .map(|verdict| json!({"ok": true, "verdict": verdict}).to_string())
            .map_err(CniError::try_again_later);
    }
    let options = install_options(args)?;
    if !args.watch {
        let report = crate::install::install_once(&options)
            .map_err(|err| CniError::internal(err.to_string()))?;
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        return if report.refused.is_empty() {
            Ok(text)
        } else {
            Err(CniError::new(
                crate::sandbox::code::PLUGIN_REFUSED,
                "some plugins were refused",
            )
            .with_details(text))
        };
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [rustix_signal::SIGTERM, rustix_signal::SIGINT] {
        rustix_signal::on(signal, stop.clone());
    }
    crate::install::watch(
        &options,
        Duration::from_millis(args.interval_ms),
        args.cleanup_on_exit,
        args.status_file.as_deref(),
        &|| stop.load(std::sync::atomic::Ordering::SeqCst),
    )
    .map_err(|err| CniError::internal(err.to_string()))?;
    Ok(json!({"stopped": true}).to_string())
}

/// SIGTERM/SIGINT handling for `install --watch`: a signal sets a flag.
mod rustix_signal {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    pub const SIGTERM: i32 = 15;
    pub const SIGINT: i32 = 2;

    static FLAGS: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

    extern "C" fn handler(_: i32) {
        if let Some(flag) = FLAGS.get() {
            flag.store(true, Ordering::SeqCst);
        }
    }

    unsafe extern "C" {
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    }

    /// Set `flag` when `signum` arrives.
    pub fn on(signum: i32, flag: Arc<AtomicBool>) {
        let _ = FLAGS.set(flag);
        // SAFETY: installing an async-signal-safe handler (an atomic store).
        unsafe {
            signal(signum, handler);
        }
    }
}

/// How the CLI opens a throwaway IPAM store: the call's deadline, the
/// default key cap.
fn store_options(sandbox: &Sandbox) -> crate::store::ipam::StoreOptions {
    crate::store::ipam::StoreOptions {
        lock_deadline: std::time::Instant::now() + sandbox.limits().timeout,
        max_keys: crate::store::ipam::DEFAULT_MAX_KEYS,
    }
}
