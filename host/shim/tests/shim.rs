//! The shim binary against a stand-in daemon: a unix socket in a temporary
//! directory answering with real HTTP/1.1.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SHIM: &str = env!("CARGO_BIN_EXE_multus-wasm-shim");

/// What one shim run did.
#[derive(Debug)]
struct Outcome {
    code: i32,
    stdout: String,
    elapsed: Duration,
}

impl Outcome {
    /// stdout as the CNI error object it must be.
    fn error(&self) -> Value {
        assert_eq!(self.code, 1, "{self:?}");
        assert!(self.stdout.ends_with('\n'), "{self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| panic!("{err}: {self:?}"))
    }
}

/// Runs the shim with exactly `env` (nothing inherited) and `stdin`.
fn shim(env: &[(&str, &str)], stdin: &str) -> Outcome {
    let started = Instant::now();
    let mut child = Command::new(SHIM)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the shim");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    Outcome {
        code: output.status.code().expect("exited"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        elapsed: started.elapsed(),
    }
}

const ADD: [(&str, &str); 6] = [
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "abc123"),
    ("CNI_NETNS", "/var/run/netns/pod"),
    ("CNI_IFNAME", "eth0"),
    (
        "CNI_ARGS",
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
    ),
    ("CNI_PATH", "/opt/cni/bin"),
];

/// The shim's netconf pointing at `dir`, with `extra` fields.
fn netconf(dir: &Path, extra: &str) -> String {
    format!(
        r#"{{"cniVersion": "1.0.0", "name": "multus-wasm-network", "type": "multus-wasm-shim", "daemonSocketDir": {}{extra}}}"#,
        json!(dir.to_str().unwrap())
    )
}

/// An HTTP response with a Content-Length body.
fn http(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A 200 answer carrying `code` and `output`.
fn answer(code: i32, output: &str) -> Vec<u8> {
    http(
        "200 OK",
        &json!({"code": code, "output": output}).to_string(),
    )
}

/// A stand-in daemon listening in its own temporary directory.
struct Daemon {
    dir: tempfile::TempDir,
    requests: mpsc::Receiver<Vec<u8>>,
    /// Dropped with the daemon: lets a silent connection go.
    _release: mpsc::Sender<()>,
}

impl Daemon {
    /// Answers the first request with `response` (sent in pieces, to
    /// exercise the shim's reading) and closes.
    fn answering(response: Vec<u8>) -> Daemon {
        Self::start(Some(response))
    }

    /// Accepts a connection, reads the request and never answers.
    fn silent() -> Daemon {
        Self::start(None)
    }

    fn start(response: Option<Vec<u8>>) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("multus-wasm.sock")).unwrap();
        let (request_tx, requests) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let request = read_request(&mut stream);
            let _ = request_tx.send(request);
            match response {
                Some(response) => {
                    for piece in response.chunks(7) {
                        if stream.write_all(piece).is_err() {
                            return;
                        }
                        stream.flush().unwrap();
                    }
                }
                // Hold the connection open until the test is done.
                None => {
                    let _ = released.recv();
                }
            }
        });
        Daemon {
            dir,
            requests,
            _release: release,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("multus-wasm.sock")
    }

    /// The request the shim sent.
    fn request(&self) -> Vec<u8> {
        self.requests
            .recv_timeout(Duration::from_secs(10))
            .expect("the shim sent a request")
    }
}

/// Reads one request: the head, then Content-Length bytes of body.
fn read_request(stream: &mut UnixStream) -> Vec<u8> {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap() == 0 {
            return request;
        }
        request.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&request).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .map(|value| value.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    request.extend_from_slice(&body);
    request
}

#[test]
fn the_request_is_post_cni_with_every_cni_variable_and_the_netconf_verbatim() {
    let daemon = Daemon::answering(answer(0, ""));
    let config = netconf(
        daemon.path(),
        r#", "zeta": {"nested": [1, 2.50, null]}, "alpha": "a\u00e9"  "#,
    );
    let mut env = ADD.to_vec();
    env.extend([
        ("MULTUS_WASM_NESTED", "1"),
        ("CNI_FUTURE_VARIABLE", "x"),
        ("CNI_NETNS_EMPTY", ""),
        ("HOME", "/root"),
        ("PATH", "/usr/bin"),
    ]);
    let outcome = shim(&env, &format!("\n{config}\n"));
    assert_eq!((outcome.code, outcome.stdout.as_str()), (0, ""));

    let request = String::from_utf8(daemon.request()).unwrap();
    let (head, body) = request.split_once("\r\n\r\n").unwrap();
    assert_eq!(
        head.split("\r\n").collect::<Vec<_>>(),
        [
            "POST /cni HTTP/1.1",
            "Host: multus-wasm",
            "Content-Type: application/json",
            &format!("Content-Length: {}", body.len()),
            "Connection: close",
        ]
    );
    let parsed: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        parsed,
        json!({
            "env": {
                "CNI_COMMAND": "ADD",
                "CNI_CONTAINERID": "abc123",
                "CNI_NETNS": "/var/run/netns/pod",
                "CNI_IFNAME": "eth0",
                "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
                "CNI_PATH": "/opt/cni/bin",
                "CNI_FUTURE_VARIABLE": "x",
                "CNI_NETNS_EMPTY": "",
                "MULTUS_WASM_NESTED": "1",
            },
            "config": serde_json::from_str::<Value>(&config).unwrap(),
        })
    );
    // Verbatim: the netconf's own bytes, key order and number spelling kept.
    assert!(
        body.ends_with(&format!(r#","config":{}}}"#, config.trim())),
        "{body}"
    );
}

#[test]
fn a_successful_answer_is_printed_and_its_code_is_the_exit_code() {
    let result = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[]}"#;
    let daemon = Daemon::answering(answer(0, result));
    let outcome = shim(&ADD, &netconf(daemon.path(), ""));
    assert_eq!(outcome.code, 0, "{outcome:?}");
    assert_eq!(outcome.stdout, format!("{result}\n"));
}

#[test]
fn a_cni_error_answer_is_printed_and_exits_1() {
    let error = r#"{"cniVersion":"1.0.0","code":7,"msg":"no such network"}"#;
    let daemon = Daemon::answering(answer(1, error));
    let outcome = shim(&ADD, &netconf(daemon.path(), ""));
    assert_eq!(outcome.code, 1, "{outcome:?}");
    assert_eq!(outcome.stdout, format!("{error}\n"));
}

#[test]
fn a_chunked_answer_is_read() {
    let body = json!({"code": 0, "output": "{\"cniVersion\":\"1.0.0\"}"}).to_string();
    let (first, second) = body.split_at(10);
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n{:x};ext=1\r\n{second}\r\n0\r\n\r\n",
        first.len(),
        second.len()
    );
    let daemon = Daemon::answering(response.into_bytes());
    let outcome = shim(&ADD, &netconf(daemon.path(), ""));
    assert_eq!(
        (outcome.code, outcome.stdout.as_str()),
        (0, "{\"cniVersion\":\"1.0.0\"}\n")
    );
}

#[test]
fn an_answer_ended_by_close_is_read() {
    let response = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"code\": 0, \"output\": \"\"}";
    let daemon = Daemon::answering(response.as_bytes().to_vec());
    let outcome = shim(&ADD, &netconf(daemon.path(), ""));
    assert_eq!((outcome.code, outcome.stdout.as_str()), (0, ""));
}

/// The error a failed call printed, checked for code, the netconf's
/// cniVersion and the message's mention of `needle`.
fn assert_error(outcome: &Outcome, code: u64, needle: &str) -> String {
    let error = outcome.error();
    assert_eq!(error["code"], code, "{outcome:?}");
    assert_eq!(error["cniVersion"], "1.0.0", "{outcome:?}");
    let msg = error["msg"].as_str().unwrap().to_owned();
    assert!(msg.contains(needle), "{needle:?} not in {msg}");
    msg
}

#[test]
fn no_socket_is_try_again_later_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("multus-wasm.sock");
    let outcome = shim(&ADD, &netconf(dir.path(), ""));
    let msg = assert_error(&outcome, 11, &socket.display().to_string());
    assert!(
        msg.starts_with("multus-wasm daemon not reachable at "),
        "{msg}"
    );
    assert!(
        msg.ends_with("is the multus-wasm DaemonSet running on this node?"),
        "{msg}"
    );
    assert!(outcome.elapsed < Duration::from_secs(3), "{outcome:?}");
}

#[test]
fn a_socket_nobody_listens_on_is_try_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("multus-wasm.sock");
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let outcome = shim(&ADD, &netconf(dir.path(), ""));
    let msg = assert_error(&outcome, 11, &socket.display().to_string());
    assert!(msg.contains("refused"), "{msg}");
    assert!(outcome.elapsed < Duration::from_secs(3), "{outcome:?}");
}

#[test]
fn a_daemon_that_never_answers_times_out_as_try_again_later() {
    let daemon = Daemon::silent();
    let outcome = shim(&ADD, &netconf(daemon.path(), r#", "timeoutSeconds": 1"#));
    assert_error(&outcome, 11, "did not answer within 1 s");
    assert_error(&outcome, 11, &daemon.socket().display().to_string());
    assert!(
        outcome.elapsed >= Duration::from_secs(1) && outcome.elapsed < Duration::from_secs(5),
        "{outcome:?}"
    );
    daemon.request();
}

#[test]
fn a_daemon_closing_mid_answer_is_try_again_later() {
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"code\":".to_vec();
    let daemon = Daemon::answering(response);
    let outcome = shim(&ADD, &netconf(daemon.path(), ""));
    assert_error(
        &outcome,
        11,
        "closed the connection before a complete answer",
    );
}

#[test]
fn http_5xx_is_try_again_later_and_4xx_is_internal() {
    for (status, code) in [
        ("503 Service Unavailable", 11),
        ("500 Internal Server Error", 11),
        ("400 Bad Request", 999),
        ("404 Not Found", 999),
    ] {
        let daemon = Daemon::answering(http(status, "daemon says why"));
        let outcome = shim(&ADD, &netconf(daemon.path(), ""));
        let msg = assert_error(&outcome, code, &format!("HTTP/1.1 {status}"));
        assert!(msg.contains("daemon says why"), "{msg}");
    }
}

#[test]
fn a_200_body_that_is_not_the_answer_is_internal() {
    for body in [
        "not json",
        r#"{"output": "x"}"#,
        r#"{"code": "0", "output": "x"}"#,
        r#"{"code": 0}"#,
        r#"{"code": 256, "output": ""}"#,
        "[]",
    ] {
        let daemon = Daemon::answering(http("200 OK", body));
        let outcome = shim(&ADD, &netconf(daemon.path(), ""));
        assert_error(
            &outcome,
            999,
            "unexpected answer from the multus-wasm daemon",
        );
    }
}

#[test]
fn a_reply_that_is_not_http_is_internal() {
    let daemon = Daemon::answering(b"SSH-2.0-OpenSSH_9.6\r\n".to_vec());
    let outcome = shim(&ADD, &netconf(daemon.path(), ""));
    assert_error(&outcome, 999, "not HTTP/1.1");
}

#[test]
fn version_is_answered_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let versions =
        r#""supportedVersions":["0.1.0","0.2.0","0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]"#;
    let outcome = shim(&[("CNI_COMMAND", "VERSION")], &netconf(dir.path(), ""));
    assert_eq!(outcome.code, 0);
    assert_eq!(
        outcome.stdout,
        format!("{{\"cniVersion\":\"1.0.0\",{versions}}}\n")
    );
    let outcome = shim(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(
        (outcome.code, outcome.stdout),
        (0, format!("{{\"cniVersion\":\"1.1.0\",{versions}}}\n"))
    );
}

#[test]
fn bad_stdin_is_code_6() {
    let outcome = shim(&ADD, "not json");
    let error = outcome.error();
    assert_eq!(error["code"], 6, "{outcome:?}");
    assert!(error.get("cniVersion").is_none(), "{outcome:?}");
    let outcome = shim(&ADD, r#"["cniVersion", "1.0.0"]"#);
    assert_eq!(outcome.error()["code"], 6, "{outcome:?}");
    assert_eq!(shim(&ADD, "").error()["code"], 6);
}

#[test]
fn a_missing_or_unknown_command_is_code_4() {
    let dir = tempfile::tempdir().unwrap();
    let config = netconf(dir.path(), "");
    let outcome = shim(&[("CNI_CONTAINERID", "abc")], &config);
    assert_eq!(
        outcome.error(),
        json!({"cniVersion": "1.0.0", "code": 4, "msg": "required env variables [CNI_COMMAND] missing"})
    );
    assert_eq!(shim(&[("CNI_COMMAND", "")], &config).error()["code"], 4);
    assert_eq!(
        shim(&[("CNI_COMMAND", "FOO")], &config).error(),
        json!({"cniVersion": "1.0.0", "code": 4, "msg": "unknown CNI_COMMAND: FOO"})
    );
}

#[test]
fn a_wrongly_typed_shim_field_is_code_7() {
    let dir = tempfile::tempdir().unwrap();
    let outcome = shim(&ADD, &netconf(dir.path(), r#", "timeoutSeconds": "soon""#));
    assert_error(&outcome, 7, "timeoutSeconds");
}

/// A listening socket with a backlog of 0, made by hand (std always asks
/// for a large backlog).
fn listen_with_backlog_0(path: &Path) -> UnixListener {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;

    // SAFETY: plain socket calls on a fresh descriptor and a zeroed,
    // NUL-terminated sockaddr_un; the descriptor is owned by the listener.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let mut address: libc::sockaddr_un = std::mem::zeroed();
        address.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_os_str().as_bytes();
        assert!(bytes.len() < address.sun_path.len(), "socket path too long");
        for (slot, byte) in address.sun_path.iter_mut().zip(bytes) {
            *slot = *byte as libc::c_char;
        }
        let length = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        let bound = libc::bind(fd, (&raw const address).cast::<libc::sockaddr>(), length);
        assert_eq!(bound, 0, "bind");
        assert_eq!(libc::listen(fd, 0), 0, "listen");
        UnixListener::from_raw_fd(fd)
    }
}

#[test]
fn a_daemon_whose_accept_queue_is_full_times_out_as_try_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("multus-wasm.sock");
    let _listener = listen_with_backlog_0(&socket);
    // Fill the accept queue with connections nobody accepts; the thread
    // blocks in connect(2) once it is full, as the shim's connect would.
    let filling = socket.clone();
    let (queued_tx, queued) = mpsc::channel();
    thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok(stream) = UnixStream::connect(&filling) {
            held.push(stream);
            let _ = queued_tx.send(());
        }
    });
    queued.recv_timeout(Duration::from_secs(5)).unwrap();
    // Give the filler time to block on the full queue.
    thread::sleep(Duration::from_millis(200));
    let outcome = shim(&ADD, &netconf(dir.path(), r#", "timeoutSeconds": 1"#));
    assert_error(&outcome, 11, "did not answer within 1 s");
    assert!(outcome.elapsed < Duration::from_secs(5), "{outcome:?}");
}
