//! A fake Kubernetes API server for the tests: plain HTTP/1.1 on loopback
//! (an ephemeral port), holding pods and NetworkAttachmentDefinitions with
//! the semantics the host relies on: 404 with a `Status` body for a missing
//! object, a `resourceVersion` bumped on every write, and 409 Conflict for a
//! status update carrying a stale `resourceVersion`. It can also be told to
//! make the next status write conflict (as if someone else wrote first) and
//! can be shut down to play "API server gone".

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

#[derive(Default)]
struct State {
    /// (kind, namespace, name) -> object
    objects: BTreeMap<(String, String, String), Value>,
    next_version: u64,
    /// Status writes still to answer with a conflict (someone else wrote).
    conflicts_to_force: u32,
    /// Every request: "METHOD path".
    log: Vec<String>,
}

pub struct FakeApiServer {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    stopped: Arc<AtomicBool>,
    /// The network namespace the listener lives in (`None`: the test's own).
    netns: Option<String>,
}

const POD: &str = "pods";
const NAD: &str = "network-attachment-definitions";

impl FakeApiServer {
    pub fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
        Self::serve_on(listener, None)
    }

    /// A server listening on the loopback of the network namespace at
    /// `netns` (e.g. a test node's, where the CNI binary runs and where the
    /// test's own loopback cannot be reached).
    pub fn start_in_netns(netns: &str) -> FakeApiServer {
        let path = netns.to_string();
        let listener = std::thread::spawn(move || {
            in_netns(&path);
            TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port")
        })
        .join()
        .expect("binding in the namespace");
        Self::serve_on(listener, Some(netns.to_string()))
    }

    fn serve_on(listener: TcpListener, netns: Option<String>) -> FakeApiServer {
        let address = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State {
            next_version: 100,
            ..State::default()
        }));
        let stopped = Arc::new(AtomicBool::new(false));
        let (thread_state, thread_stopped) = (state.clone(), stopped.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = thread_state.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        FakeApiServer {
            address,
            state,
            stopped,
            netns,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Write a kubeconfig for this server (no auth) into `dir`.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    fn insert(&self, kind: &str, namespace: &str, name: &str, mut object: Value) {
        let mut state = self.state.lock().unwrap();
        state.next_version += 1;
        object["metadata"]["resourceVersion"] = json!(state.next_version.to_string());
        object["metadata"]["namespace"] = json!(namespace);
        object["metadata"]["name"] = json!(name);
        state
            .objects
            .insert((kind.into(), namespace.into(), name.into()), object);
    }

    pub fn add_pod(&self, namespace: &str, name: &str, uid: &str, annotations: Value) {
        self.insert(
            POD,
            namespace,
            name,
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"uid": uid, "annotations": annotations},
                "spec": {"containers": [{"name": "c", "image": "alpine"}]}
            }),
        );
    }

    pub fn add_nad(&self, namespace: &str, name: &str, config: &str) {
        self.insert(
            NAD,
            namespace,
            name,
            json!({
                "apiVersion": "k8s.cni.cncf.io/v1",
                "kind": "NetworkAttachmentDefinition",
                "metadata": {},
                "spec": {"config": config}
            }),
        );
    }

    pub fn delete_nad(&self, namespace: &str, name: &str) {
        self.state
            .lock()
            .unwrap()
            .objects
            .remove(&(NAD.into(), namespace.into(), name.into()));
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&(POD.into(), namespace.into(), name.into()))
            .cloned()
    }

    /// The pod's annotation `key`, if set.
    pub fn pod_annotation(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        self.pod(namespace, name)?["metadata"]["annotations"][key]
            .as_str()
            .map(str::to_owned)
    }

    /// Make the next `count` status writes conflict: before each, the pod
    /// is modified by "someone else" (its resourceVersion bumped).
    pub fn force_status_conflicts(&self, count: u32) {
        self.state.lock().unwrap().conflicts_to_force = count;
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// Stop answering: the listener closes, connections are refused.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and drops the listener
        // (from the listener's namespace).
        let address = self.address;
        match &self.netns {
            None => {
                let _ = TcpStream::connect(address);
            }
            Some(netns) => {
                let netns = netns.clone();
                let _ = std::thread::spawn(move || {
                    // Once the namespace is deleted nobody can reach the listener.
                    if std::fs::metadata(&netns).is_ok() {
                        in_netns(&netns);
                        let _ = TcpStream::connect(address);
                    }
                })
                .join();
            }
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Move the calling thread into the network namespace at `path`.
fn in_netns(path: &str) {
    use std::os::fd::AsFd;
    let file = std::fs::File::open(path).unwrap_or_else(|err| panic!("open {path}: {err}"));
    rustix::thread::move_into_link_name_space(
        file.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .unwrap_or_else(|err| panic!("setns {path}: {err}"));
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

fn handle(method: &str, path: &str, body: &[u8], state: &Mutex<State>) -> (u16, Value) {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let mut state = state.lock().unwrap();
    state.log.push(format!("{method} {path}"));
    // /api/v1/namespaces/{ns}/pods/{name}[/status]
    // /apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions/{name}
    let (kind, namespace, name, subresource) = match parts.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", name] => (POD, *ns, *name, None),
        ["api", "v1", "namespaces", ns, "pods", name, sub] => (POD, *ns, *name, Some(*sub)),
        [
            "apis",
            "k8s.cni.cncf.io",
            "v1",
            "namespaces",
            ns,
            "network-attachment-definitions",
            name,
        ] => (NAD, *ns, *name, None),
        _ => return status(404, "NotFound", &format!("no route for {path}")),
    };
    let key = (kind.to_string(), namespace.to_string(), name.to_string());
    match (method, subresource) {
        ("GET", None) => match state.objects.get(&key) {
            Some(object) => (200, object.clone()),
            None => status(404, "NotFound", &format!("{kind} \"{name}\" not found")),
        },
        ("PUT", Some("status")) if kind == POD => {
            let Some(current) = state.objects.get(&key).cloned() else {
                return status(404, "NotFound", &format!("pods \"{name}\" not found"));
            };
            if state.conflicts_to_force > 0 {
                state.conflicts_to_force -= 1;
                state.next_version += 1;
                let version = state.next_version.to_string();
                if let Some(object) = state.objects.get_mut(&key) {
                    object["metadata"]["resourceVersion"] = json!(version);
                }
            }
            let current_version = state.objects[&key]["metadata"]["resourceVersion"].clone();
            let Ok(mut update) = serde_json::from_slice::<Value>(body) else {
                return status(400, "BadRequest", "body is not JSON");
            };
            if update["metadata"]["resourceVersion"] != current_version {
                return status(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on pods \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                    ),
                );
            }
            // A status update changes metadata (annotations) and status only.
            state.next_version += 1;
            let mut stored = current;
            stored["metadata"]["annotations"] = update["metadata"]["annotations"].take();
            stored["metadata"]["resourceVersion"] = json!(state.next_version.to_string());
            if !update["status"].is_null() {
                stored["status"] = update["status"].take();
            }
            state.objects.insert(key, stored.clone());
            (200, stored)
        }
        _ => status(405, "MethodNotAllowed", &format!("{method} {path}")),
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, path) = (method.to_string(), path.to_string());
        let mut content_length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (code, value) = handle(&method, &path, &body, state);
        let body = serde_json::to_vec(&value).expect("json");
        let reason = match code {
            200 => "OK",
            404 => "Not Found",
            409 => "Conflict",
            _ => "Error",
        };
        let head = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&body).is_err() {
            return;
        }
    }
}
