//! multus-wasm-shim: the CNI binary kubelet execs in thick mode. It forwards
//! the call (the CNI environment and the stdin netconf) to the node's
//! `multus-wasm daemon` over a unix socket, prints the daemon's output and
//! exits with the daemon's code. VERSION is answered here.
//!
//! Its netconf (Multus's shim field names):
//! `{"cniVersion": "1.0.0", "name": "multus-wasm-network", "type":
//! "multus-wasm-shim", "daemonSocketDir": "/run/multus-wasm",
//! "timeoutSeconds": 120}`.
//!
//! The protocol: `POST /cni HTTP/1.1` on `<daemonSocketDir>/multus-wasm.sock`
//! with `{"env": {<every CNI_* variable set, and MULTUS_WASM_NESTED>},
//! "config": <the stdin netconf, verbatim>}`; the daemon answers `200 OK`
//! with `{"code": <exit code>, "output": "<stdout>"}` for every CNI outcome.

mod http;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every CNI spec version the daemon (the host binary) speaks, oldest first.
const SUPPORTED_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];
/// The newest of them, VERSION's answer when the request names none.
const LATEST_VERSION: &str = "1.1.0";
/// The CNI commands, as `CNI_COMMAND` spells them.
const COMMANDS: [&str; 6] = ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"];
/// Set by multus-wasm on the delegates it execs; forwarded so the daemon
/// can refuse a nested call.
const NESTED_ENV: &str = "MULTUS_WASM_NESTED";
/// The socket's file name in `daemonSocketDir`.
const SOCKET_NAME: &str = "multus-wasm.sock";
/// `daemonSocketDir` when the netconf has none.
const DEFAULT_SOCKET_DIR: &str = "/run/multus-wasm";
/// `timeoutSeconds` when the netconf has none: kubelet's calls take long
/// while the daemon awaits the readiness indicator.
const DEFAULT_TIMEOUT_SECONDS: u64 = 120;
/// The most of a daemon's error body quoted in a message.
const MAX_QUOTED_BODY: usize = 1024;

const INVALID_ENVIRONMENT: u32 = 4;
const IO_FAILURE: u32 = 5;
const DECODING_FAILURE: u32 = 6;
const INVALID_NETWORK_CONFIG: u32 = 7;
const TRY_AGAIN_LATER: u32 = 11;
const INTERNAL: u32 = 999;

/// A CNI error, printed as the host prints one.
#[derive(Debug)]
struct CniError {
    code: u32,
    msg: String,
}

/// The wire shape of an error, as the host's `CniError::to_json`.
#[derive(Serialize)]
struct ErrorWire<'a> {
    #[serde(rename = "cniVersion", skip_serializing_if = "Option::is_none")]
    cni_version: Option<&'a str>,
    code: u32,
    msg: &'a str,
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }

    fn to_json(&self, cni_version: Option<&str>) -> String {
        let wire = ErrorWire {
            cni_version,
            code: self.code,
            msg: &self.msg,
        };
        serde_json::to_string(&wire)
            .unwrap_or_else(|_| format!(r#"{{"code":{},"msg":"internal error"}}"#, self.code))
    }
}

/// What the daemon answers for every CNI outcome.
#[derive(Deserialize)]
struct Answer {
    code: i64,
    output: String,
}

/// The shim's own netconf fields.
#[derive(Debug)]
struct ShimConfig {
    socket_dir: PathBuf,
    timeout: Duration,
}

fn main() {
    let (output, code) = run(std::env::vars_os(), std::io::stdin());
    let mut stdout = std::io::stdout().lock();
    if !output.is_empty() {
        // Nothing useful can be done when stdout is gone.
        let _ = writeln!(stdout, "{output}");
        let _ = stdout.flush();
    }
    std::process::exit(code);
}

/// One CNI call: what to print on stdout and the exit code.
fn run(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    mut stdin: impl Read,
) -> (String, i32) {
    let mut input = Vec::new();
    if let Err(error) = stdin.read_to_end(&mut input) {
        let error = CniError::new(IO_FAILURE, format!("failed to read stdin: {error}"));
        return (error.to_json(None), 1);
    }
    let version = requested_version(&input);
    match call(vars, &input, version.as_deref()) {
        Ok(answer) => answer,
        Err(error) => (error.to_json(version.as_deref()), 1),
    }
}

fn call(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    stdin: &[u8],
    version: Option<&str>,
) -> Result<(String, i32), CniError> {
    let env = cni_env(vars)?;
    let command = env
        .get("CNI_COMMAND")
        .filter(|command| !command.is_empty())
        .ok_or_else(|| {
            CniError::new(
                INVALID_ENVIRONMENT,
                "required env variables [CNI_COMMAND] missing",
            )
        })?;
    if !COMMANDS.contains(&command.as_str()) {
        return Err(CniError::new(
            INVALID_ENVIRONMENT,
            format!("unknown CNI_COMMAND: {command}"),
        ));
    }
    if command == "VERSION" {
        return Ok((version_output(version), 0));
    }
    let config = ShimConfig::parse(stdin)?;
    let socket = config.socket_dir.join(SOCKET_NAME);
    let body = request_body(&env, stdin);
    match http::exchange(&socket, &body, config.timeout) {
        Ok(response) => answer(&socket, response),
        Err(error) => Err(exchange_error(&socket, &config, error)),
    }
}

/// The variables forwarded: every `CNI_*` one, and `MULTUS_WASM_NESTED`.
fn cni_env(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<BTreeMap<String, String>, CniError> {
    let mut env = BTreeMap::new();
    for (name, value) in vars {
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with("CNI_") || name == NESTED_ENV) {
            continue;
        }
        let value = value.into_string().map_err(|_| {
            CniError::new(INVALID_ENVIRONMENT, format!("{name} is not valid UTF-8"))
        })?;
        env.insert(name.to_owned(), value);
    }
    Ok(env)
}

/// `cniVersion` of the stdin object when it is a non-empty string.
fn requested_version(stdin: &[u8]) -> Option<String> {
    let request: Value = serde_json::from_slice(stdin).ok()?;
    request
        .get("cniVersion")
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

/// VERSION's output, as the host binary prints it.
fn version_output(requested: Option<&str>) -> String {
    #[derive(Serialize)]
    struct VersionWire<'a> {
        #[serde(rename = "cniVersion")]
        cni_version: &'a str,
        #[serde(rename = "supportedVersions")]
        supported_versions: &'a [&'a str],
    }
    let wire = VersionWire {
        cni_version: requested
            .filter(|text| !text.is_empty())
            .unwrap_or(LATEST_VERSION),
        supported_versions: &SUPPORTED_VERSIONS,
    };
    serde_json::to_string(&wire)
        .unwrap_or_else(|_| format!(r#"{{"cniVersion":"{LATEST_VERSION}"}}"#))
}

impl ShimConfig {
    /// Reads `daemonSocketDir` and `timeoutSeconds` from the netconf; `null`
    /// (and an empty directory) count as absent. Not JSON or not an object:
    /// code 6; a field of the wrong type: code 7.
    fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(stdin).map_err(|error| {
            CniError::new(
                DECODING_FAILURE,
                format!("undecodable multus-wasm-shim config: {error}"),
            )
        })?;
        let Value::Object(fields) = value else {
            return Err(CniError::new(
                DECODING_FAILURE,
                "multus-wasm-shim config is not a JSON object",
            ));
        };
        let invalid = |field: &str, expected: &str| {
            CniError::new(
                INVALID_NETWORK_CONFIG,
                format!("invalid {field:?} in multus-wasm-shim config: expected {expected}"),
            )
        };
        let socket_dir = match fields.get("daemonSocketDir") {
            None | Some(Value::Null) => PathBuf::from(DEFAULT_SOCKET_DIR),
            Some(Value::String(text)) if text.is_empty() => PathBuf::from(DEFAULT_SOCKET_DIR),
            Some(Value::String(text)) => PathBuf::from(text),
            Some(_) => return Err(invalid("daemonSocketDir", "a directory path")),
        };
        let timeout = match fields.get("timeoutSeconds") {
            None | Some(Value::Null) => Duration::from_secs(DEFAULT_TIMEOUT_SECONDS),
            Some(value) => value
                .as_f64()
                .filter(|seconds| *seconds > 0.0)
                .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
                .ok_or_else(|| invalid("timeoutSeconds", "a positive number of seconds"))?,
        };
        Ok(Self {
            socket_dir,
            timeout,
        })
    }
}

/// `{"env": {...}, "config": <stdin>}`, with the stdin bytes spliced in
/// verbatim (they are known to be one JSON object) so that nothing about
/// the netconf (key order, number spelling) changes on the way.
fn request_body(env: &BTreeMap<String, String>, stdin: &[u8]) -> Vec<u8> {
    let env = serde_json::to_vec(env).unwrap_or_else(|_| b"{}".to_vec());
    let config = stdin.trim_ascii();
    let mut body = Vec::with_capacity(env.len() + config.len() + 20);
    body.extend_from_slice(b"{\"env\":");
    body.extend_from_slice(&env);
    body.extend_from_slice(b",\"config\":");
    body.extend_from_slice(config);
    body.push(b'}');
    body
}

/// The daemon's response as the call's outcome.
fn answer(socket: &Path, response: http::Response) -> Result<(String, i32), CniError> {
    let body = String::from_utf8_lossy(&response.body);
    if response.status != 200 {
        let code = if (500..600).contains(&response.status) {
            TRY_AGAIN_LATER
        } else {
            INTERNAL
        };
        return Err(CniError::new(
            code,
            format!(
                "multus-wasm daemon at {} answered {:?}: {}",
                socket.display(),
                response.status_line,
                quoted(&body)
            ),
        ));
    }
    let unexpected = |problem: String| {
        CniError::new(
            INTERNAL,
            format!(
                "unexpected answer from the multus-wasm daemon at {}: {problem}; body: {}",
                socket.display(),
                quoted(&body)
            ),
        )
    };
    let answer: Answer = serde_json::from_slice(&response.body).map_err(|error| {
        unexpected(format!(
            "expected {{\"code\": <exit code>, \"output\": \"...\"}}: {error}"
        ))
    })?;
    let code = i32::try_from(answer.code)
        .ok()
        .filter(|code| (0..=255).contains(code))
        .ok_or_else(|| unexpected(format!("exit code {} is out of range", answer.code)))?;
    Ok((answer.output, code))
}

/// At most [`MAX_QUOTED_BODY`] bytes of `body`, quoted.
fn quoted(body: &str) -> String {
    if body.len() <= MAX_QUOTED_BODY {
        return format!("{body:?}");
    }
    let mut end = MAX_QUOTED_BODY;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?} ({} bytes in all)", &body[..end], body.len())
}

fn exchange_error(socket: &Path, config: &ShimConfig, error: http::ExchangeError) -> CniError {
    const HINT: &str = "is the multus-wasm DaemonSet running on this node?";
    let socket = socket.display();
    let not_reachable =
        |reason: String| format!("multus-wasm daemon not reachable at {socket}: {reason}; {HINT}");
    match error {
        http::ExchangeError::Connect(error) => {
            CniError::new(TRY_AGAIN_LATER, not_reachable(error.to_string()))
        }
        http::ExchangeError::Io(error) => CniError::new(
            TRY_AGAIN_LATER,
            not_reachable(format!("connection failed: {error}")),
        ),
        http::ExchangeError::Closed { received } => CniError::new(
            TRY_AGAIN_LATER,
            not_reachable(format!(
                "the daemon closed the connection before a complete answer ({received} bytes received)"
            )),
        ),
        http::ExchangeError::TimedOut => CniError::new(
            TRY_AGAIN_LATER,
            format!(
                "multus-wasm daemon at {socket} did not answer within {} s (timeoutSeconds); {HINT}",
                seconds(config.timeout)
            ),
        ),
        http::ExchangeError::Malformed(problem) => CniError::new(
            INTERNAL,
            format!(
                "unexpected answer from the multus-wasm daemon at {socket}: not HTTP/1.1: {problem}"
            ),
        ),
    }
}

/// A duration in seconds, whole when it is whole.
fn seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        duration.as_secs().to_string()
    } else {
        duration.as_secs_f64().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_output_matches_the_host() {
        assert_eq!(
            version_output(None),
            r#"{"cniVersion":"1.1.0","supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        );
        assert!(version_output(Some("0.4.0")).starts_with(r#"{"cniVersion":"0.4.0","#));
    }

    #[test]
    fn error_json_matches_the_host_shape() {
        let error = CniError::new(11, "try \"again\"");
        assert_eq!(
            error.to_json(Some("1.0.0")),
            r#"{"cniVersion":"1.0.0","code":11,"msg":"try \"again\""}"#
        );
        assert_eq!(error.to_json(None), r#"{"code":11,"msg":"try \"again\""}"#);
    }

    #[test]
    fn shim_config_defaults_and_rejects_wrong_types() {
        let config = ShimConfig::parse(br#"{"daemonSocketDir": null}"#).unwrap();
        assert_eq!(config.socket_dir, Path::new(DEFAULT_SOCKET_DIR));
        assert_eq!(config.timeout, Duration::from_secs(120));
        let config =
            ShimConfig::parse(br#"{"daemonSocketDir": "/x", "timeoutSeconds": 0.5}"#).unwrap();
        assert_eq!(
            (config.socket_dir.as_path(), config.timeout),
            (Path::new("/x"), Duration::from_millis(500))
        );
        for bad in [
            &br#"{"daemonSocketDir": 3}"#[..],
            br#"{"timeoutSeconds": 0}"#,
            br#"{"timeoutSeconds": -1}"#,
            br#"{"timeoutSeconds": "5"}"#,
            br#"{"timeoutSeconds": 1e300}"#,
        ] {
            assert_eq!(ShimConfig::parse(bad).unwrap_err().code, 7);
        }
        assert_eq!(ShimConfig::parse(b"[]").unwrap_err().code, 6);
        assert_eq!(ShimConfig::parse(b"{").unwrap_err().code, 6);
    }

    #[test]
    fn request_body_splices_the_netconf_verbatim() {
        let env = BTreeMap::from([("CNI_COMMAND".to_owned(), "ADD".to_owned())]);
        let body = request_body(&env, b"\n {\"b\": 1.50, \"a\": [ ]} \n");
        assert_eq!(
            body,
            br#"{"env":{"CNI_COMMAND":"ADD"},"config":{"b": 1.50, "a": [ ]}}"#
        );
    }

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary() {
        let body = "é".repeat(MAX_QUOTED_BODY);
        let text = quoted(&body);
        assert!(
            text.ends_with(&format!("({} bytes in all)", body.len())),
            "{text}"
        );
    }
}
