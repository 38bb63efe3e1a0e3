//! CNI mode: read the environment and stdin, run the command, print the
//! result (or the error JSON) on stdout and return the exit code.

use std::io::Read;
use std::sync::Arc;

use crate::call::Call;
use crate::cni::{CniCommand, CniEnv, CniError, requested_version, version_output};
use crate::config::MultusConfig;
use crate::node::NodeEffects;
use crate::runner::NodePlugins;

/// Run one CNI command from the process environment; returns the exit code.
pub fn main() -> i32 {
    let started = std::time::Instant::now();
    let mut stdin = Vec::new();
    if let Err(err) = std::io::stdin().read_to_end(&mut stdin) {
        let error = CniError::io_failure(format!("failed to read stdin: {err}"));
        println!("{}", error.to_json(None));
        return 1;
    }
    let (output, code) = run(std::env::vars(), &stdin);
    if !output.is_empty() {
        println!("{output}");
    }
    if std::env::var_os(crate::timing::ENV).is_some() {
        let mut report = crate::timing::report();
        report["total"] = serde_json::json!(started.elapsed().as_micros() as u64);
        eprintln!("{report}");
    }
    code
}

/// Run one CNI command; returns what to print on stdout and the exit code.
pub fn run(vars: impl IntoIterator<Item = (String, String)>, stdin: &[u8]) -> (String, i32) {
    // Made once logging is set up (a span made before is disabled for good);
    // entered for the rest of the call and for its error line.
    let mut span = tracing::Span::none();
    let outcome = (|| {
        let env = cni_env(vars)?;
        if env.command == CniCommand::Version {
            return Ok(version_output(requested_version(stdin).as_deref()));
        }
        let parse_span = crate::timing::span("config");
        let parsed = MultusConfig::parse(stdin)
            .map_err(|err| CniError::new(err.cni_code(), err.to_string()))?;
        let config = parsed.config;
        crate::logging::init_cni(&config);
        span = crate::logging::call_span(&env);
        let _entered = span.enter();
        // At error level, so that the default level (panic) shows them.
        for warning in &parsed.warnings {
            tracing::error!("{warning}");
        }
        if !parsed.unknown_fields.is_empty() {
            tracing::warn!(fields = ?parsed.unknown_fields, "unknown fields in the multus-wasm config are ignored");
        }
        let stdin_value = stdin_value(stdin)?;
        drop(parse_span);
        let runtime = crate::node::runtime()?;
        let plugins = Arc::new(NodePlugins::new(&config));
        let effects = NodeEffects::new(&config, runtime, plugins)?;
        execute(&env, &config, &stdin_value, &effects)
    })();
    let _entered = span.enter();
    respond(stdin, outcome)
}

/// Turn a command's outcome into what to print and the exit code; errors
/// are logged and printed as CNI error JSON in the requested version.
pub fn answer(stdin: &[u8], outcome: impl FnOnce() -> Result<String, CniError>) -> (String, i32) {
    respond(stdin, outcome())
}

/// [`answer`] for an outcome already computed.
pub fn respond(stdin: &[u8], outcome: Result<String, CniError>) -> (String, i32) {
    let version = requested_version(stdin);
    match outcome {
        Ok(output) => (output, 0),
        Err(err) => {
            tracing::error!(code = err.code, error = %err, "CNI command failed");
            (err.to_json(version.as_deref()), 1)
        }
    }
}

/// The CNI environment of a call, refusing a nested one: a multus-wasm
/// exec'd by multus-wasm gets a network config on stdin, not a host config.
pub fn cni_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<CniEnv, CniError> {
    let vars: Vec<(String, String)> = vars.into_iter().collect();
    if vars
        .iter()
        .any(|(key, _)| key == crate::runner::native::NESTED_ENV)
    {
        return Err(CniError::invalid_network_config(
            "multus-wasm was exec'd as a delegate of multus-wasm: a nested call is refused (its stdin is a network config, not a host config)",
        ));
    }
    CniEnv::from_vars(vars)
}

/// stdin as JSON (GC reads its valid attachments from it).
pub fn stdin_value(stdin: &[u8]) -> Result<serde_json::Value, CniError> {
    serde_json::from_slice(stdin)
        .map_err(|err| CniError::decoding_failure(format!("error decoding network config: {err}")))
}

/// Run `env`'s command (not VERSION) under `config` with `effects`.
pub fn execute(
    env: &CniEnv,
    config: &MultusConfig,
    stdin_value: &serde_json::Value,
    effects: &dyn crate::call::Effects,
) -> Result<String, CniError> {
    tracing::info!(command = %env.command, container = ?env.container_id, netns = ?env.netns, ifname = ?env.ifname, "CNI call");
    let call = Call {
        config,
        env,
        effects,
    };
    match env.command {
        CniCommand::Add => call.add().map(|result| result.to_string()),
        CniCommand::Del => call.del().map(|()| String::new()),
        CniCommand::Check => call.check().map(|()| String::new()),
        CniCommand::Gc => call.gc(stdin_value).map(|()| String::new()),
        CniCommand::Status => call.status().map(|()| String::new()),
        CniCommand::Version => Ok(version_output(None)),
    }
}
