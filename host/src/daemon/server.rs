//! The daemon's HTTP/1.1 server (hyper) on the root-only unix socket, and
//! on `metricsAddress` (TCP) when set:
//!
//! - `POST /cni`: `{"env": {CNI_* ...}, "config": <netconf>}` →
//!   `200 {"code": <exit code>, "output": "<stdout>"}`, for every CNI
//!   outcome (400 for a request that is not that JSON);
//! - `GET /healthz`: `200 ok`, or `503` with why not (caches not synced, a
//!   plugin that does not load);
//! - `GET /metrics`: Prometheus text.
//!
//! A CNI call runs on a thread of its own: it blocks on netlink and on the
//! API while the runtime keeps serving.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, UnixListener};

use super::{Daemon, DaemonError, SOCKET_NAME};

/// Bind `<socket_dir>/multus-wasm.sock`: the directory 0700 and the socket
/// 0600 (root-only: whoever can talk to it can attach pods), a stale
/// socket from a killed daemon replaced.
pub fn bind(socket_dir: &Path) -> Result<UnixListener, DaemonError> {
    let socket_error = |path: &Path, source| DaemonError::Socket {
        path: path.into(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(socket_dir)
        .map_err(|err| socket_error(socket_dir, err))?;
    std::fs::set_permissions(socket_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|err| socket_error(socket_dir, err))?;
    let path = socket_dir.join(SOCKET_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!(socket = %path.display(), "replaced a stale socket"),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(socket_error(&path, err)),
    }
    let listener = UnixListener::bind(&path).map_err(|err| socket_error(&path, err))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|err| socket_error(&path, err))?;
    Ok(listener)
}

pub async fn serve_unix(listener: UnixListener, daemon: Arc<Daemon>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => spawn_connection(TokioIo::new(stream), daemon.clone()),
            Err(err) => tracing::warn!(error = %err, "accept on the socket failed"),
        }
    }
}

pub async fn serve_tcp(address: SocketAddr, daemon: Arc<Daemon>) {
    let listener = match TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(%address, error = %err, "cannot serve metrics");
            return;
        }
    };
    tracing::info!(%address, "serving /metrics and /healthz");
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            spawn_connection(TokioIo::new(stream), daemon.clone());
        }
    }
}

fn spawn_connection<I>(io: TokioIo<I>, daemon: Arc<Daemon>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = service_fn(move |request| handle(request, daemon.clone()));
        if let Err(err) = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await
        {
            tracing::debug!(error = %err, "connection ended");
        }
    });
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("a valid response")
}

async fn handle(
    request: Request<Incoming>,
    daemon: Arc<Daemon>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    Ok(match (request.method().clone(), path.as_str()) {
        (Method::POST, "/cni") => cni(request, daemon).await,
        (Method::GET, "/healthz") => match daemon.health() {
            Ok(()) => respond(StatusCode::OK, "text/plain", "ok\n"),
            Err(reason) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {reason}\n"),
            ),
        },
        (Method::GET, "/metrics") => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            daemon.metrics.encode(),
        ),
        (method, path) => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no route for {method} {path}\n"),
        ),
    })
}

async fn cni(request: Request<Incoming>, daemon: Arc<Daemon>) -> Response<Full<Bytes>> {
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => {
            return respond(StatusCode::BAD_REQUEST, "text/plain", format!("{err}\n"));
        }
    };
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    let (env, config) = match parsed {
        Ok(Value::Object(mut fields)) => match (fields.remove("env"), fields.remove("config")) {
            (Some(Value::Object(env)), Some(config)) => (env, config),
            _ => {
                return respond(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "expected {\"env\": {...}, \"config\": {...}}\n",
                );
            }
        },
        _ => {
            return respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "the body is not a JSON object\n",
            );
        }
    };
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("cni-call".into())
        .spawn(move || {
            let _ = sender.send(daemon.cni(&env, &config));
        });
    if let Err(err) = spawned {
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("cannot start a call thread: {err}\n"),
        );
    }
    match receiver.await {
        Ok((code, output)) => respond(
            StatusCode::OK,
            "application/json",
            json!({"code": code, "output": output}).to_string(),
        ),
        Err(_) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "the call thread died\n",
        ),
    }
}

/// SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
