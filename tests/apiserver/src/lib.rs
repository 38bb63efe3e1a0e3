//! A fake Kubernetes API server for the tests and `cargo xtask bench`:
//! plain HTTP/1.1 on loopback (an ephemeral port), holding pods and
//! NetworkAttachmentDefinitions with the wire semantics kube-rs (its `Api` and its `runtime` watcher,
//! metadata_watcher and reflector) relies on:
//!
//! - GET of one object, with 404 and a `Status` body when it is missing; an
//!   `Accept: application/json;as=PartialObjectMetadata…` header gets the
//!   metadata only, as from a real server.
//! - LIST of a collection, in all namespaces (`/api/v1/pods`) or one
//!   (`/api/v1/namespaces/<ns>/pods`), and the same for
//!   `network-attachment-definitions`: a `<Kind>List` whose
//!   `metadata.resourceVersion` is the version it was read at, honouring
//!   `fieldSelector`, `labelSelector`, `limit`/`continue` (a continue token
//!   reads the same snapshot as the first page, or gets 410 Expired once that
//!   version is compacted away) and `resourceVersion`/`resourceVersionMatch`
//!   (`Exact` reads that snapshot; anything else reads the current state).
//! - WATCH (`?watch=true`): a chunked response, one JSON event per line,
//!   with every change after `resourceVersion` (from the kept history), then
//!   the changes as they happen, until `timeoutSeconds` (capped, see
//!   [`FakeApiServer::set_watch_timeout_cap`]), [`FakeApiServer::break_watches`]
//!   or [`FakeApiServer::stop`]. `resourceVersion` unset or `"0"` starts with
//!   a synthetic ADDED for every current object, as the real server does;
//!   `sendInitialEvents=true` adds the `k8s.io/initial-events-end` BOOKMARK.
//!   A version older than the history kept gets HTTP 200 and an ERROR event
//!   carrying a 410 `Expired` Status, then the end of the stream: what the
//!   real server sends and what makes kube's watcher relist. With
//!   `allowWatchBookmarks=true` a BOOKMARK with the current version is sent
//!   before a watch ends at its timeout and on [`FakeApiServer::send_bookmarks`].
//!   A modification that moves an object into (out of) a watch's selectors
//!   is sent to that watch as ADDED (DELETED), as the real server does.
//! - PUT `pods/<name>/status`: 409 Conflict on a stale `resourceVersion`, and
//!   conflicts can be forced (as if someone else wrote first).
//! - PATCH `pods/<name>[/status]` (and a NAD) with
//!   `application/merge-patch+json` (RFC 7386); 415 for any other patch type,
//!   409 when the patch carries a stale `metadata.resourceVersion`. The status
//!   subresource keeps the spec, the main resource keeps the status.
//!
//! - POST `events` (core/v1, in a namespace): 201 with the Event as stored
//!   (`metadata.uid` and `resourceVersion` added); kept for
//!   [`FakeApiServer::events`], never watched. 400 for a body that is not an
//!   Event of that namespace; [`FakeApiServer::refuse_events`] makes every
//!   event POST fail with a given code (as RBAC without `create events`
//!   would, 403).
//!
//! Every write (from the test or over HTTP) bumps the one resourceVersion
//! counter and is recorded as a watch event. Connections are kept alive and
//! served concurrently (one thread each); [`FakeApiServer::stop`] plays
//! "API server gone": the listener closes and every open connection is cut.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// The resources served, as named in their URL paths (and as counted by
/// [`FakeApiServer::list_requests`] and [`FakeApiServer::watch_requests`]).
pub const PODS: &str = "pods";
pub const NADS: &str = "network-attachment-definitions";
/// Core/v1 Events (POST only).
pub const EVENTS: &str = "events";
const POD: &str = PODS;
const NAD: &str = NADS;
const NAD_API_VERSION: &str = "k8s.cni.cncf.io/v1";

/// The node of the pods made by [`FakeApiServer::add_pod`].
pub const DEFAULT_NODE: &str = "node-1";
/// Watch events kept by default; a watch from before the oldest gets 410.
pub const HISTORY_LIMIT: usize = 1000;
/// The longest a watch stays open by default, whatever `timeoutSeconds` asks.
pub const WATCH_TIMEOUT_CAP: Duration = Duration::from_secs(5);
/// The resourceVersion of an empty server; the first write gets the next.
const FIRST_VERSION: u64 = 100;
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";
const MERGE_PATCH: &str = "application/merge-patch+json";

/// (resource, namespace, name)
type Key = (String, String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Added,
    Modified,
    Deleted,
}

/// One write, as kept for the watches.
#[derive(Debug)]
struct Event {
    version: u64,
    kind: &'static str,
    change: Change,
    /// The object after the write; for a deletion, the last state with the
    /// deletion's resourceVersion (as the real server sends it).
    object: Value,
    /// The object before the write (`None` for an addition).
    previous: Option<Value>,
}

/// A watch being streamed: the events for it wait here until its thread
/// sends them, so compacting the history never affects an open watch.
struct OpenWatch {
    stream: TcpStream,
    kind: &'static str,
    queue: Vec<Arc<Event>>,
}

struct State {
    objects: BTreeMap<Key, Value>,
    /// The resourceVersion of the last write.
    version: u64,
    history: VecDeque<Arc<Event>>,
    /// Watches (and snapshot reads) from a version older than this get 410.
    compacted: u64,
    history_limit: usize,
    /// Status writes still to answer with a conflict (someone else wrote).
    conflicts_to_force: u32,
    /// Events POSTed and accepted, in order.
    k8s_events: Vec<Value>,
    /// The code every event POST gets instead of 201.
    refuse_events: Option<u16>,
    /// Every request: "METHOD path".
    log: Vec<String>,
    /// Every request: "METHOD path?query" (as sent).
    log_with_query: Vec<String>,
    lists: BTreeMap<&'static str, usize>,
    watches: BTreeMap<&'static str, usize>,
    next_connection: u64,
    connections: HashMap<u64, TcpStream>,
    open_watches: HashMap<u64, OpenWatch>,
    bookmark_round: u64,
    watch_timeout_cap: Duration,
    stopped: bool,
}

impl State {
    fn new() -> State {
        State {
            objects: BTreeMap::new(),
            version: FIRST_VERSION,
            history: VecDeque::new(),
            compacted: FIRST_VERSION,
            history_limit: HISTORY_LIMIT,
            conflicts_to_force: 0,
            k8s_events: Vec::new(),
            refuse_events: None,
            log: Vec::new(),
            log_with_query: Vec::new(),
            lists: BTreeMap::new(),
            watches: BTreeMap::new(),
            next_connection: 0,
            connections: HashMap::new(),
            open_watches: HashMap::new(),
            bookmark_round: 0,
            watch_timeout_cap: WATCH_TIMEOUT_CAP,
            stopped: false,
        }
    }

    /// Write `new` (or delete, with `None`) the object at `key`: bump the
    /// version, record the event, queue it for the open watches. Returns the
    /// object as stored (or as deleted); `None` when deleting nothing.
    fn commit(
        &mut self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        new: Option<Value>,
    ) -> Option<Value> {
        let key = (kind.to_string(), namespace.to_string(), name.to_string());
        let previous = self.objects.get(&key).cloned();
        let (change, mut object) = match (new, &previous) {
            (Some(object), None) => (Change::Added, object),
            (Some(object), Some(_)) => (Change::Modified, object),
            (None, Some(previous)) => (Change::Deleted, previous.clone()),
            (None, None) => return None,
        };
        self.version += 1;
        if !object["metadata"].is_object() {
            object["metadata"] = json!({});
        }
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        object["metadata"]["namespace"] = json!(namespace);
        object["metadata"]["name"] = json!(name);
        if change == Change::Deleted {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, object.clone());
        }
        let event = Arc::new(Event {
            version: self.version,
            kind,
            change,
            object: object.clone(),
            previous,
        });
        for watch in self.open_watches.values_mut() {
            if watch.kind == kind {
                watch.queue.push(event.clone());
            }
        }
        self.history.push_back(event);
        self.trim_history();
        Some(object)
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.version;
            }
        }
    }

    /// The objects of `kind` as they were at `version`, by (namespace, name);
    /// `None` when that version is compacted away.
    fn objects_at(&self, kind: &str, version: u64) -> Option<BTreeMap<(String, String), Value>> {
        if version < self.compacted {
            return None;
        }
        let mut objects: BTreeMap<(String, String), Value> = self
            .objects
            .iter()
            .filter(|((k, _, _), _)| k == kind)
            .map(|((_, namespace, name), object)| {
                ((namespace.clone(), name.clone()), object.clone())
            })
            .collect();
        for event in self
            .history
            .iter()
            .rev()
            .take_while(|event| event.version > version)
        {
            if event.kind != kind {
                continue;
            }
            let key = (
                str_at(&event.object, "/metadata/namespace"),
                str_at(&event.object, "/metadata/name"),
            );
            match &event.previous {
                None => {
                    objects.remove(&key);
                }
                Some(previous) => {
                    objects.insert(key, previous.clone());
                }
            }
        }
        Some(objects)
    }
}

struct Shared {
    state: Mutex<State>,
    /// Signalled on every write, break, bookmark round and stop.
    changed: Condvar,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct FakeApiServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    /// The network namespace the listener lives in (`None`: the test's own).
    netns: Option<String>,
}

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
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            changed: Condvar::new(),
        });
        let accepting = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let id = {
                    let mut state = lock(&accepting);
                    if state.stopped {
                        break;
                    }
                    let Ok(clone) = stream.try_clone() else {
                        continue;
                    };
                    state.next_connection += 1;
                    let id = state.next_connection;
                    state.connections.insert(id, clone);
                    id
                };
                let shared = accepting.clone();
                std::thread::spawn(move || serve(stream, &shared, id));
            }
        });
        FakeApiServer {
            address,
            shared,
            netns,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// A write from the test itself: committed and announced to the watches.
    fn write(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        object: Option<Value>,
    ) -> Option<Value> {
        let written = self.lock().commit(kind, namespace, name, object);
        self.shared.changed.notify_all();
        written
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

    /// Add (or replace) pod `namespace/name` on [`DEFAULT_NODE`].
    pub fn add_pod(&self, namespace: &str, name: &str, uid: &str, annotations: Value) {
        self.add_pod_on_node(namespace, name, uid, DEFAULT_NODE, annotations);
    }

    /// Add (or replace) pod `namespace/name` scheduled to `node`
    /// (`spec.nodeName`), running.
    pub fn add_pod_on_node(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        node: &str,
        annotations: Value,
    ) {
        self.write(
            POD,
            namespace,
            name,
            Some(json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"uid": uid, "annotations": annotations},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "alpine"}]},
                "status": {"phase": "Running"}
            })),
        );
    }

    /// Change pod `namespace/name` with `change` (a MODIFIED event); the
    /// pod as stored, `None` if there is no such pod.
    pub fn modify_pod(
        &self,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let written = {
            let mut state = self.lock();
            let mut pod = state
                .objects
                .get(&(POD.into(), namespace.into(), name.into()))?
                .clone();
            change(&mut pod);
            state.commit(POD, namespace, name, Some(pod))
        };
        self.shared.changed.notify_all();
        written
    }

    pub fn delete_pod(&self, namespace: &str, name: &str) {
        self.write(POD, namespace, name, None);
    }

    pub fn add_nad(&self, namespace: &str, name: &str, config: &str) {
        self.add_nad_annotated(namespace, name, config, json!({}));
    }

    /// Add (or replace) NAD `namespace/name` with these annotations (e.g.
    /// `k8s.v1.cni.cncf.io/resourceName`).
    pub fn add_nad_annotated(&self, namespace: &str, name: &str, config: &str, annotations: Value) {
        self.write(
            NAD,
            namespace,
            name,
            Some(json!({
                "apiVersion": NAD_API_VERSION,
                "kind": "NetworkAttachmentDefinition",
                "metadata": {"annotations": annotations},
                "spec": {"config": config}
            })),
        );
    }

    pub fn delete_nad(&self, namespace: &str, name: &str) {
        self.write(NAD, namespace, name, None);
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(POD.into(), namespace.into(), name.into()))
            .cloned()
    }

    pub fn nad(&self, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(NAD.into(), namespace.into(), name.into()))
            .cloned()
    }

    /// The pod's annotation `key`, if set.
    pub fn pod_annotation(&self, namespace: &str, name: &str, key: &str) -> Option<String> {
        self.pod(namespace, name)?["metadata"]["annotations"][key]
            .as_str()
            .map(str::to_owned)
    }

    /// The resourceVersion of the last write.
    pub fn resource_version(&self) -> String {
        self.lock().version.to_string()
    }

    /// Make the next `count` status writes conflict: before each, the pod
    /// is modified by "someone else" (its resourceVersion bumped, a MODIFIED
    /// event). A PUT then gets 409; a merge PATCH gets 409 only when it
    /// carries `metadata.resourceVersion` (without one it applies to the
    /// latest version, as on a real server).
    pub fn force_status_conflicts(&self, count: u32) {
        self.lock().conflicts_to_force = count;
    }

    /// Every Event accepted so far, as stored, in order.
    pub fn events(&self) -> Vec<Value> {
        self.lock().k8s_events.clone()
    }

    /// Answer every event POST with `code` (a `Status` of that code) and
    /// keep nothing; `None` accepts them again.
    pub fn refuse_events(&self, code: Option<u16>) {
        self.lock().refuse_events = code;
    }

    /// Every request so far, as "METHOD path" (no query string).
    pub fn requests(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// Every request so far, as "METHOD path?query" (the query as sent).
    pub fn requests_with_query(&self) -> Vec<String> {
        self.lock().log_with_query.clone()
    }

    /// How many LISTs of `resource` ([`PODS`] or [`NADS`]) were asked for.
    pub fn list_requests(&self, resource: &str) -> usize {
        self.lock().lists.get(resource).copied().unwrap_or(0)
    }

    /// How many WATCHes of `resource` ([`PODS`] or [`NADS`]) were asked for.
    pub fn watch_requests(&self, resource: &str) -> usize {
        self.lock().watches.get(resource).copied().unwrap_or(0)
    }

    /// How many watch streams are open now.
    pub fn open_watches(&self) -> usize {
        self.lock().open_watches.len()
    }

    /// Forget every event so far (as an etcd compaction): a watch or a
    /// snapshot read from an older resourceVersion now gets 410 Gone. Open
    /// watches go on unaffected.
    pub fn compact_history(&self) {
        let mut state = self.lock();
        state.history.clear();
        state.compacted = state.version;
    }

    /// Keep at most `limit` events (the oldest are compacted away).
    pub fn set_history_limit(&self, limit: usize) {
        let mut state = self.lock();
        state.history_limit = limit;
        state.trim_history();
    }

    /// The longest a watch stays open (instead of its `timeoutSeconds`, when
    /// shorter). Watches already open keep theirs.
    pub fn set_watch_timeout_cap(&self, cap: Duration) {
        self.lock().watch_timeout_cap = cap;
    }

    /// Cut every open watch stream now, mid-stream (as a restarting API
    /// server does); the clients see an incomplete chunked body.
    pub fn break_watches(&self) {
        let watches: Vec<OpenWatch> = self
            .lock()
            .open_watches
            .drain()
            .map(|(_, watch)| watch)
            .collect();
        for watch in watches {
            let _ = watch.stream.shutdown(Shutdown::Both);
        }
        self.shared.changed.notify_all();
    }

    /// Send a BOOKMARK with the current resourceVersion on every open watch
    /// that allows bookmarks (the real server sends them about once a minute).
    pub fn send_bookmarks(&self) {
        self.lock().bookmark_round += 1;
        self.shared.changed.notify_all();
    }

    /// Stop answering: the listener closes, connections are refused, and
    /// every open connection (watches included) is cut.
    pub fn stop(&self) {
        let connections = {
            let mut state = self.lock();
            if state.stopped {
                return;
            }
            state.stopped = true;
            state.open_watches.clear();
            std::mem::take(&mut state.connections)
        };
        self.shared.changed.notify_all();
        for connection in connections.values() {
            let _ = connection.shutdown(Shutdown::Both);
        }
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

// ---------------------------------------------------------------------------
// Objects on the wire

fn str_at(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn kind_of(resource: &str) -> &'static str {
    if resource == POD {
        "Pod"
    } else {
        "NetworkAttachmentDefinition"
    }
}

fn api_version_of(resource: &str) -> &'static str {
    if resource == POD {
        "v1"
    } else {
        NAD_API_VERSION
    }
}

/// The object as a `PartialObjectMetadata` (what a metadata request gets).
fn partial(object: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": object["metadata"].clone()
    })
}

fn render(object: &Value, metadata_only: bool) -> Value {
    if metadata_only {
        partial(object)
    } else {
        object.clone()
    }
}

fn bookmark(resource: &str, version: u64, metadata_only: bool, initial_events_end: bool) -> Value {
    let (api_version, kind) = if metadata_only {
        ("meta.k8s.io/v1", "PartialObjectMetadata")
    } else {
        (api_version_of(resource), kind_of(resource))
    };
    let mut metadata = json!({"resourceVersion": version.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({INITIAL_EVENTS_END: "true"});
    }
    json!({"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind, "metadata": metadata}})
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

fn too_old(version: u64, oldest: u64) -> (u16, Value) {
    status(
        410,
        "Expired",
        &format!("too old resource version: {version} ({oldest})"),
    )
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target) = target else {
        unreachable!()
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Set `to[key]` to `from[key]` (removing it when `from` has none).
fn keep(to: &mut Value, from: &Value, key: &str) {
    let (Some(to), Some(from)) = (to.as_object_mut(), from.as_object()) else {
        return;
    };
    match from.get(key) {
        Some(value) => {
            to.insert(key.into(), value.clone());
        }
        None => {
            to.remove(key);
        }
    }
}

// ---------------------------------------------------------------------------
// Selectors

enum FieldTerm {
    Equal(String, String),
    NotEqual(String, String),
}

enum LabelTerm {
    Equal(String, String),
    NotEqual(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// What a LIST or WATCH selects: a namespace (from the path) and selectors.
struct Filter {
    namespace: Option<String>,
    fields: Vec<FieldTerm>,
    labels: Vec<LabelTerm>,
}

/// The fields a selector may name, per resource, as the real server allows.
fn field_supported(resource: &str, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || (resource == POD
            && matches!(
                field,
                "spec.nodeName"
                    | "spec.restartPolicy"
                    | "spec.schedulerName"
                    | "spec.serviceAccountName"
                    | "spec.hostNetwork"
                    | "status.phase"
                    | "status.podIP"
                    | "status.nominatedNodeName"
            ))
}

fn field_value(object: &Value, field: &str) -> String {
    let pointer = format!("/{}", field.replace('.', "/"));
    match object.pointer(&pointer) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Bool(flag)) => flag.to_string(),
        None if field == "spec.hostNetwork" => "false".into(),
        _ => String::new(),
    }
}

/// `text` split at the commas outside parentheses.
fn split_terms(text: &str) -> Vec<String> {
    let (mut terms, mut current, mut depth) = (Vec::new(), String::new(), 0);
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    terms.push(current);
    terms
        .into_iter()
        .map(|term| term.trim().to_string())
        .filter(|term| !term.is_empty())
        .collect()
}

fn parse_set(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|value| value.trim().to_string())
            .collect(),
    )
}

fn parse_label_term(term: &str) -> Option<LabelTerm> {
    let valid = |key: &str| !key.is_empty() && !key.contains(char::is_whitespace);
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        return valid(key).then(|| LabelTerm::NotExists(key.into()));
    }
    if let Some((key, set)) = term.split_once(" notin ") {
        return Some(LabelTerm::NotIn(key.trim().into(), parse_set(set)?));
    }
    if let Some((key, set)) = term.split_once(" in ") {
        return Some(LabelTerm::In(key.trim().into(), parse_set(set)?));
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Some(LabelTerm::NotEqual(key.trim().into(), value.trim().into()));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Some(LabelTerm::Equal(key.trim().into(), value.trim().into()));
    }
    valid(term).then(|| LabelTerm::Exists(term.into()))
}

impl Filter {
    fn parse(
        resource: &str,
        namespace: Option<&str>,
        request: &Request,
    ) -> Result<Filter, (u16, Value)> {
        let mut fields = Vec::new();
        for term in split_terms(request.param("fieldSelector").unwrap_or_default()) {
            let parsed = if let Some((field, value)) = term.split_once("!=") {
                FieldTerm::NotEqual(field.trim().into(), value.trim().into())
            } else if let Some((field, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                FieldTerm::Equal(field.trim().into(), value.trim().into())
            } else {
                return Err(status(
                    400,
                    "BadRequest",
                    &format!("invalid field selector: {term}"),
                ));
            };
            let (FieldTerm::Equal(field, _) | FieldTerm::NotEqual(field, _)) = &parsed;
            if !field_supported(resource, field) {
                return Err(status(
                    400,
                    "BadRequest",
                    &format!("field label not supported: {field}"),
                ));
            }
            fields.push(parsed);
        }
        let mut labels = Vec::new();
        for term in split_terms(request.param("labelSelector").unwrap_or_default()) {
            let Some(parsed) = parse_label_term(&term) else {
                return Err(status(
                    400,
                    "BadRequest",
                    &format!("unable to parse requirement: {term}"),
                ));
            };
            labels.push(parsed);
        }
        Ok(Filter {
            namespace: namespace.map(str::to_owned),
            fields,
            labels,
        })
    }

    fn matches(&self, object: &Value) -> bool {
        if let Some(namespace) = &self.namespace
            && str_at(object, "/metadata/namespace") != *namespace
        {
            return false;
        }
        let fields = self.fields.iter().all(|term| match term {
            FieldTerm::Equal(field, value) => field_value(object, field) == *value,
            FieldTerm::NotEqual(field, value) => field_value(object, field) != *value,
        });
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels[key].as_str().map(str::to_owned);
        fields
            && self.labels.iter().all(|term| match term {
                LabelTerm::Equal(key, value) => label(key).as_ref() == Some(value),
                LabelTerm::NotEqual(key, value) => label(key).as_ref() != Some(value),
                LabelTerm::In(key, values) => label(key).is_some_and(|v| values.contains(&v)),
                LabelTerm::NotIn(key, values) => !label(key).is_some_and(|v| values.contains(&v)),
                LabelTerm::Exists(key) => label(key).is_some(),
                LabelTerm::NotExists(key) => label(key).is_none(),
            })
    }

    /// `event` as this watch sees it: an object moving into the selection
    /// is ADDED, one moving out of it DELETED.
    fn translate(&self, event: &Event, metadata_only: bool) -> Option<Value> {
        let was = event
            .previous
            .as_ref()
            .is_some_and(|previous| self.matches(previous));
        let is = event.change != Change::Deleted && self.matches(&event.object);
        let kind = match (was, is) {
            (false, true) => "ADDED",
            (true, true) => "MODIFIED",
            (true, false) => "DELETED",
            (false, false) => return None,
        };
        Some(json!({"type": kind, "object": render(&event.object, metadata_only)}))
    }
}

// ---------------------------------------------------------------------------
// Requests

struct Request {
    method: String,
    path: String,
    /// The query string as sent (without the `?`).
    query: Option<String>,
    params: Vec<(String, String)>,
    accept: String,
    content_type: String,
    body: Vec<u8>,
    close: bool,
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn flag(&self, name: &str) -> Option<bool> {
        self.param(name)
            .map(|value| matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True"))
    }

    fn metadata_only(&self) -> bool {
        self.accept.contains("as=PartialObjectMetadata")
    }
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

fn read_line(reader: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_string()),
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let request_line = read_line(reader)?;
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut close = parts.next() == Some("HTTP/1.0");
    let (mut content_length, mut chunked) = (0usize, false);
    let (mut accept, mut content_type) = (String::new(), String::new());
    loop {
        let header = read_line(reader)?;
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => content_length = value.parse().unwrap_or(0),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "accept" => accept = value.to_string(),
            "content-type" => content_type = value.to_string(),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let size = read_line(reader)?;
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !read_line(reader)?.is_empty() {}
                break;
            }
            let mut chunk = vec![0u8; size];
            reader.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk);
            read_line(reader)?;
        }
    } else {
        body.resize(content_length, 0);
        reader.read_exact(&mut body).ok()?;
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (target, None),
    };
    let params = query.as_deref().map(parse_query).unwrap_or_default();
    Some(Request {
        method,
        path,
        query,
        params,
        accept,
        content_type,
        body,
        close,
    })
}

/// Where a request goes: a collection (`name` unset) or one object.
struct Route<'a> {
    resource: &'static str,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

fn route(path: &str) -> Option<Route<'_>> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (resource, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] if rest.contains(&EVENTS) => (EVENTS, rest),
        ["api", "v1", rest @ ..] => (POD, rest),
        ["apis", "k8s.cni.cncf.io", "v1", rest @ ..] => (NAD, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] => (Some(*namespace), rest),
        _ => (None, rest),
    };
    let (name, subresource) = match rest {
        [plural] if *plural == resource => (None, None),
        [plural, name] if *plural == resource && namespace.is_some() => (Some(*name), None),
        [plural, name, sub] if *plural == resource && namespace.is_some() => {
            (Some(*name), Some(*sub))
        }
        _ => return None,
    };
    Some(Route {
        resource,
        namespace,
        name,
        subresource,
    })
}

enum Reply {
    Json(u16, Value),
    Watch(Watch),
    /// The server is stopped: drop the connection unanswered.
    Close,
}

impl From<(u16, Value)> for Reply {
    fn from((code, value): (u16, Value)) -> Reply {
        Reply::Json(code, value)
    }
}

fn handle(request: &Request, shared: &Shared, connection: u64) -> Reply {
    let mut state = lock(shared);
    if state.stopped {
        return Reply::Close;
    }
    let Request { method, path, .. } = request;
    state.log.push(format!("{method} {path}"));
    let query = request.query.as_ref().map(|query| format!("?{query}"));
    state
        .log_with_query
        .push(format!("{method} {path}{}", query.unwrap_or_default()));
    let Some(route) = route(path) else {
        return status(404, "NotFound", &format!("no route for {path}")).into();
    };
    let reply = match (method.as_str(), route.name, route.subresource) {
        ("POST", None, None) if route.resource == EVENTS && route.namespace.is_some() => {
            post_event(
                &mut state,
                route.namespace.unwrap_or_default(),
                &request.body,
            )
            .into()
        }
        _ if route.resource == EVENTS => {
            status(405, "MethodNotAllowed", &format!("{method} {path}")).into()
        }
        ("GET", None, None) if request.flag("watch") == Some(true) => {
            start_watch(&mut state, &route, request, connection)
        }
        ("GET", None, None) => list(&mut state, &route, request).into(),
        ("GET", Some(name), None) | ("GET", Some(name), Some("status")) => {
            let namespace = route.namespace.unwrap_or_default();
            let key = (
                route.resource.to_string(),
                namespace.to_string(),
                name.to_string(),
            );
            match state.objects.get(&key) {
                Some(object) => Reply::Json(200, render(object, request.metadata_only())),
                None => status(
                    404,
                    "NotFound",
                    &format!("{} \"{name}\" not found", route.resource),
                )
                .into(),
            }
        }
        ("PUT", Some(name), Some("status")) if route.resource == POD => put_status(
            &mut state,
            route.namespace.unwrap_or_default(),
            name,
            &request.body,
        )
        .into(),
        ("PATCH", Some(name), None) => patch(&mut state, &route, name, request).into(),
        ("PATCH", Some(name), Some("status")) if route.resource == POD => {
            patch(&mut state, &route, name, request).into()
        }
        _ => status(405, "MethodNotAllowed", &format!("{method} {path}")).into(),
    };
    drop(state);
    shared.changed.notify_all();
    reply
}

/// An Event POSTed to `namespace`: kept and echoed with a uid and version.
fn post_event(state: &mut State, namespace: &str, body: &[u8]) -> (u16, Value) {
    if let Some(code) = state.refuse_events {
        let reason = match code {
            403 => "Forbidden",
            500 => "InternalError",
            _ => "Refused",
        };
        return status(
            code,
            reason,
            &format!("events is refused in the namespace \"{namespace}\""),
        );
    }
    let Ok(mut event) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "body is not JSON");
    };
    let in_namespace = match &event["metadata"]["namespace"] {
        Value::Null => true,
        Value::String(ns) => ns == namespace,
        _ => false,
    };
    if !event.is_object()
        || !in_namespace
        || !event["involvedObject"].is_object()
        || !event["reason"].is_string()
    {
        return status(
            400,
            "BadRequest",
            "not an Event of this namespace (metadata.namespace, involvedObject, reason)",
        );
    }
    let index = state.k8s_events.len() + 1;
    event["apiVersion"] = json!("v1");
    event["kind"] = json!("Event");
    event["metadata"]["namespace"] = json!(namespace);
    event["metadata"]["uid"] = json!(format!("event-{index}"));
    event["metadata"]["resourceVersion"] = json!(index.to_string());
    state.k8s_events.push(event.clone());
    (201, event)
}

/// Someone else writes the pod first (its resourceVersion bumped).
fn force_conflict(state: &mut State, namespace: &str, name: &str) {
    if state.conflicts_to_force == 0 {
        return;
    }
    state.conflicts_to_force -= 1;
    let key = (POD.to_string(), namespace.to_string(), name.to_string());
    if let Some(pod) = state.objects.get(&key).cloned() {
        state.commit(POD, namespace, name, Some(pod));
    }
}

fn conflict(resource: &str, name: &str) -> (u16, Value) {
    status(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
    )
}

fn put_status(state: &mut State, namespace: &str, name: &str, body: &[u8]) -> (u16, Value) {
    let key = (POD.to_string(), namespace.to_string(), name.to_string());
    if !state.objects.contains_key(&key) {
        return status(404, "NotFound", &format!("pods \"{name}\" not found"));
    }
    force_conflict(state, namespace, name);
    let current = state.objects[&key].clone();
    let Ok(mut update) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "body is not JSON");
    };
    if update["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
        return conflict(POD, name);
    }
    // A status update changes metadata (annotations) and status only.
    let mut stored = current;
    stored["metadata"]["annotations"] = update["metadata"]["annotations"].take();
    if !update["status"].is_null() {
        stored["status"] = update["status"].take();
    }
    let stored = state
        .commit(POD, namespace, name, Some(stored))
        .expect("a write");
    (200, stored)
}

fn patch(state: &mut State, route: &Route, name: &str, request: &Request) -> (u16, Value) {
    let media_type = request
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if !media_type.eq_ignore_ascii_case(MERGE_PATCH) {
        return status(
            415,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types include: {MERGE_PATCH}"
            ),
        );
    }
    let resource = route.resource;
    let namespace = route.namespace.unwrap_or_default();
    let key = (
        resource.to_string(),
        namespace.to_string(),
        name.to_string(),
    );
    if !state.objects.contains_key(&key) {
        return status(404, "NotFound", &format!("{resource} \"{name}\" not found"));
    }
    let Ok(patch) = serde_json::from_slice::<Value>(&request.body) else {
        return status(400, "BadRequest", "the patch is not JSON");
    };
    if !patch.is_object() {
        return status(
            422,
            "Invalid",
            "a merge patch of an object must be an object",
        );
    }
    if route.subresource == Some("status") {
        force_conflict(state, namespace, name);
    }
    let current = state.objects[&key].clone();
    if let Some(version) = patch.pointer("/metadata/resourceVersion")
        && !version.is_null()
        && *version != current["metadata"]["resourceVersion"]
    {
        return conflict(resource, name);
    }
    let mut merged = current.clone();
    merge_patch(&mut merged, &patch);
    if !merged["metadata"].is_object() {
        return status(422, "Invalid", "metadata must be an object");
    }
    // What the server owns, and what this endpoint does not change.
    keep(&mut merged, &current, "apiVersion");
    keep(&mut merged, &current, "kind");
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        keep(&mut merged["metadata"], &current["metadata"], field);
    }
    match route.subresource {
        Some(_) => keep(&mut merged, &current, "spec"),
        None if resource == POD => keep(&mut merged, &current, "status"),
        None => {}
    }
    if merged == current {
        // Nothing changes: no write, no new resourceVersion (as a real server).
        return (200, render(&current, request.metadata_only()));
    }
    let stored = state
        .commit(resource, namespace, name, Some(merged))
        .expect("a write");
    (200, render(&stored, request.metadata_only()))
}

fn continue_token(version: u64, namespace: &str, name: &str) -> String {
    format!("{version}/{namespace}/{name}")
}

fn parse_continue(token: &str) -> Option<(u64, String, String)> {
    let mut parts = token.splitn(3, '/');
    let version = parts.next()?.parse().ok()?;
    Some((
        version,
        parts.next()?.to_string(),
        parts.next()?.to_string(),
    ))
}

fn list(state: &mut State, route: &Route, request: &Request) -> (u16, Value) {
    let resource = route.resource;
    *state.lists.entry(resource).or_default() += 1;
    let filter = match Filter::parse(resource, route.namespace, request) {
        Ok(filter) => filter,
        Err(error) => return error,
    };
    let limit = match request.param("limit").filter(|limit| !limit.is_empty()) {
        None => None,
        Some(text) => match text.parse::<usize>() {
            Ok(0) => None,
            Ok(limit) => Some(limit),
            Err(_) => return status(400, "BadRequest", &format!("invalid limit: {text}")),
        },
    };
    let (version, after) = if let Some(token) =
        request.param("continue").filter(|token| !token.is_empty())
    {
        let Some((version, namespace, name)) = parse_continue(token) else {
            return status(400, "BadRequest", "continue key is not valid");
        };
        if version < state.compacted {
            return status(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            );
        }
        (version, Some((namespace, name)))
    } else {
        let wanted = request
            .param("resourceVersion")
            .filter(|version| !version.is_empty());
        match (
            wanted,
            request
                .param("resourceVersionMatch")
                .filter(|m| !m.is_empty()),
        ) {
            (None, Some(_)) => {
                return status(
                    400,
                    "BadRequest",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                );
            }
            (Some(text), Some("Exact")) => {
                let Ok(version) = text.parse::<u64>() else {
                    return status(
                        400,
                        "BadRequest",
                        &format!("invalid resource version: {text}"),
                    );
                };
                if version > state.version {
                    return status(
                        504,
                        "Timeout",
                        &format!(
                            "Too large resource version: {version}, current: {}",
                            state.version
                        ),
                    );
                }
                if version < state.compacted {
                    return too_old(version, state.compacted);
                }
                (version, None)
            }
            (_, Some(other)) if other != "NotOlderThan" => {
                return status(
                    400,
                    "BadRequest",
                    &format!("unsupported resourceVersionMatch: {other}"),
                );
            }
            // Unset ("most recent"), "0" ("any") or not older than: now.
            _ => (state.version, None),
        }
    };
    let Some(objects) = state.objects_at(resource, version) else {
        return too_old(version, state.compacted);
    };
    let metadata_only = request.metadata_only();
    let mut selected: Vec<((String, String), Value)> = objects
        .into_iter()
        .filter(|(key, object)| {
            after
                .as_ref()
                .is_none_or(|(namespace, name)| (&key.0, &key.1) > (namespace, name))
                && filter.matches(object)
        })
        .collect();
    let mut metadata = json!({"resourceVersion": version.to_string()});
    if let Some(limit) = limit
        && selected.len() > limit
    {
        let rest = selected.split_off(limit);
        let ((namespace, name), _) = &selected[limit - 1];
        metadata["continue"] = json!(continue_token(version, namespace, name));
        metadata["remainingItemCount"] = json!(rest.len());
    }
    let items: Vec<Value> = selected
        .into_iter()
        .map(|(_, mut object)| {
            if metadata_only {
                partial(&object)
            } else {
                // Items of a built-in kind's list carry no type (they are
                // in the list's); custom resources' items do.
                if resource == POD
                    && let Some(object) = object.as_object_mut()
                {
                    object.remove("apiVersion");
                    object.remove("kind");
                }
                object
            }
        })
        .collect();
    let (api_version, kind) = if metadata_only {
        (
            "meta.k8s.io/v1".to_string(),
            "PartialObjectMetadataList".to_string(),
        )
    } else {
        (
            api_version_of(resource).to_string(),
            format!("{}List", kind_of(resource)),
        )
    };
    (
        200,
        json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "items": items}),
    )
}

// ---------------------------------------------------------------------------
// Watches

struct Watch {
    resource: &'static str,
    filter: Filter,
    metadata_only: bool,
    bookmarks: bool,
    timeout: Duration,
    /// Event lines to send first (initial state, or the 410 ERROR).
    first: Vec<Value>,
    /// The stream ends after `first` (the 410 case).
    gone: bool,
    bookmark_round: u64,
}

fn start_watch(state: &mut State, route: &Route, request: &Request, connection: u64) -> Reply {
    let resource = route.resource;
    *state.watches.entry(resource).or_default() += 1;
    let filter = match Filter::parse(resource, route.namespace, request) {
        Ok(filter) => filter,
        Err(error) => return error.into(),
    };
    let metadata_only = request.metadata_only();
    let bookmarks = request.flag("allowWatchBookmarks") == Some(true);
    let send_initial = request.flag("sendInitialEvents");
    let timeout = request
        .param("timeoutSeconds")
        .and_then(|seconds| seconds.parse::<u64>().ok())
        .filter(|seconds| *seconds > 0)
        .map_or(state.watch_timeout_cap, |seconds| {
            Duration::from_secs(seconds).min(state.watch_timeout_cap)
        });
    let wanted = request.param("resourceVersion").unwrap_or_default();
    let mut first = Vec::new();
    let mut backlog = Vec::new();
    if wanted.is_empty() || wanted == "0" || send_initial == Some(true) {
        // Start from the current state: a synthetic ADDED per object.
        if send_initial != Some(false) {
            for ((kind, _, _), object) in &state.objects {
                if kind == resource && filter.matches(object) {
                    first.push(json!({"type": "ADDED", "object": render(object, metadata_only)}));
                }
            }
        }
        if send_initial == Some(true) && bookmarks {
            first.push(bookmark(resource, state.version, metadata_only, true));
        }
    } else {
        let Ok(version) = wanted.parse::<u64>() else {
            return status(
                400,
                "BadRequest",
                &format!("invalid resource version: {wanted}"),
            )
            .into();
        };
        if version < state.compacted {
            // As the real server: 200, then an ERROR event, then the end.
            let (_, gone) = too_old(version, state.compacted);
            return Reply::Watch(Watch {
                resource,
                filter,
                metadata_only,
                bookmarks,
                timeout,
                first: vec![json!({"type": "ERROR", "object": gone})],
                gone: true,
                bookmark_round: state.bookmark_round,
            });
        }
        backlog = state
            .history
            .iter()
            .filter(|event| event.version > version && event.kind == resource)
            .cloned()
            .collect();
    }
    let Some(stream) = state
        .connections
        .get(&connection)
        .and_then(|stream| stream.try_clone().ok())
    else {
        return Reply::Close;
    };
    state.open_watches.insert(
        connection,
        OpenWatch {
            stream,
            kind: resource,
            queue: backlog,
        },
    );
    Reply::Watch(Watch {
        resource,
        filter,
        metadata_only,
        bookmarks,
        timeout,
        first,
        gone: false,
        bookmark_round: state.bookmark_round,
    })
}

fn write_event(writer: &mut impl Write, event: &Value) -> io::Result<()> {
    let mut line = serde_json::to_vec(event).expect("json");
    line.push(b'\n');
    let mut chunk = format!("{:x}\r\n", line.len()).into_bytes();
    chunk.extend_from_slice(&line);
    chunk.extend_from_slice(b"\r\n");
    writer.write_all(&chunk)
}

enum Step {
    Events(Vec<Arc<Event>>),
    Bookmark(u64, u64),
    End(u64),
    Cut,
}

fn next_step(shared: &Shared, connection: u64, round: u64, deadline: Instant) -> Step {
    let mut state = lock(shared);
    loop {
        if state.stopped {
            return Step::Cut;
        }
        let version = state.version;
        let Some(watch) = state.open_watches.get_mut(&connection) else {
            return Step::Cut;
        };
        if !watch.queue.is_empty() {
            return Step::Events(std::mem::take(&mut watch.queue));
        }
        if state.bookmark_round != round {
            return Step::Bookmark(state.bookmark_round, version);
        }
        let now = Instant::now();
        if now >= deadline {
            return Step::End(version);
        }
        state = shared
            .changed
            .wait_timeout(state, deadline - now)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
    }
}

/// Stream `watch`; whether the connection can serve another request.
fn stream_watch(
    writer: &mut TcpStream,
    shared: &Shared,
    connection: u64,
    watch: Watch,
) -> io::Result<bool> {
    writer.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )?;
    for event in &watch.first {
        write_event(writer, event)?;
    }
    if watch.gone {
        writer.write_all(b"0\r\n\r\n")?;
        return Ok(true);
    }
    let deadline = Instant::now() + watch.timeout;
    let mut round = watch.bookmark_round;
    loop {
        match next_step(shared, connection, round, deadline) {
            Step::Events(events) => {
                for event in events {
                    if let Some(line) = watch.filter.translate(&event, watch.metadata_only) {
                        write_event(writer, &line)?;
                    }
                }
            }
            Step::Bookmark(new_round, version) => {
                round = new_round;
                if watch.bookmarks {
                    write_event(
                        writer,
                        &bookmark(watch.resource, version, watch.metadata_only, false),
                    )?;
                }
            }
            Step::End(version) => {
                if watch.bookmarks {
                    write_event(
                        writer,
                        &bookmark(watch.resource, version, watch.metadata_only, false),
                    )?;
                }
                writer.write_all(b"0\r\n\r\n")?;
                return Ok(true);
            }
            Step::Cut => {
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(false);
            }
        }
    }
}

fn write_json(writer: &mut impl Write, code: u16, value: &Value, close: bool) -> io::Result<()> {
    let body = serde_json::to_vec(value).expect("json");
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let connection = if close { "Connection: close\r\n" } else { "" };
    let mut response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\n{connection}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    writer.write_all(&response)
}

/// Serve the requests of one connection, one after the other (keep-alive).
fn serve(stream: TcpStream, shared: &Shared, connection: u64) {
    let _ = stream.set_nodelay(true);
    if let Ok(read_half) = stream.try_clone() {
        let mut reader = BufReader::new(read_half);
        let mut writer = stream;
        while let Some(request) = read_request(&mut reader) {
            let keep_alive = match handle(&request, shared, connection) {
                Reply::Json(code, value) => {
                    write_json(&mut writer, code, &value, request.close).is_ok()
                }
                Reply::Watch(watch) => {
                    let result = stream_watch(&mut writer, shared, connection, watch);
                    lock(shared).open_watches.remove(&connection);
                    result.unwrap_or(false)
                }
                Reply::Close => false,
            };
            if !keep_alive || request.close {
                break;
            }
        }
        let _ = writer.shutdown(Shutdown::Both);
    }
    lock(shared).connections.remove(&connection);
}
