//! The fake API server itself (tests/apiserver, crate `fake-apiserver`), driven by a real
//! kube-rs client (`Api::list`, `Api::watch`, `Api::patch_status`, …) and by
//! raw HTTP replaying exactly what kube's runtime watcher sends. Each test
//! has its own server on an ephemeral loopback port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use fake_apiserver::{FakeApiServer, NADS, PODS};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ListParams, Patch, PatchParams, PostParams, ResourceExt, VersionMatch, WatchEvent,
    WatchParams,
};
use kube::{Client, Config};
use multus_wasm::k8s::{NETWORK_STATUS_ANNOTATION, NetworkAttachmentDefinition};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn client(server: &FakeApiServer) -> Client {
    Client::try_from(Config::new(server.url().parse().expect("url"))).expect("client")
}

fn names<K: ResourceExt>(items: &[K]) -> Vec<String> {
    items
        .iter()
        .map(|item| {
            format!(
                "{}/{}",
                item.namespace().unwrap_or_default(),
                item.name_any()
            )
        })
        .collect()
}

fn version(text: &str) -> u64 {
    text.parse().expect("a numeric resourceVersion")
}

fn api_code(err: kube::Error) -> u16 {
    match err {
        kube::Error::Api(status) => status.code,
        other => panic!("not an API error: {other}"),
    }
}

/// The next item of a watch, within [`WAIT`]; `None` when the stream ended.
async fn next<K>(
    stream: &mut (impl Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
) -> Option<WatchEvent<K>> {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a watch event (or the end) within the wait")
        .map(|event| event.expect("a watch event"))
}

/// The next event that is not a bookmark.
async fn next_change<K>(
    stream: &mut (impl Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
) -> WatchEvent<K> {
    loop {
        match next(stream).await.expect("the watch goes on") {
            WatchEvent::Bookmark(_) => continue,
            event => return event,
        }
    }
}

/// (type, name, resourceVersion) of an event with an object.
fn describe<K: ResourceExt>(event: &WatchEvent<K>) -> (&'static str, String, u64) {
    let (kind, object) = match event {
        WatchEvent::Added(object) => ("ADDED", object),
        WatchEvent::Modified(object) => ("MODIFIED", object),
        WatchEvent::Deleted(object) => ("DELETED", object),
        other => panic!("not an object event: {other:?}"),
    };
    (
        kind,
        object.name_any(),
        version(&object.resource_version().expect("resourceVersion")),
    )
}

/// Wait for the stream to end (errors, e.g. a cut connection, allowed).
async fn ends<K>(stream: &mut (impl Stream<Item = kube::Result<WatchEvent<K>>> + Unpin)) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(None) => return,
            Ok(Some(Ok(WatchEvent::Bookmark(_)) | Err(_))) => continue,
            Ok(Some(Ok(event))) => panic!("an event instead of the end: {event:?}"),
            Err(_) => panic!("the watch did not end within {WAIT:?}"),
        }
    }
}

fn pods_on_nodes(server: &FakeApiServer) {
    server.add_pod_on_node("default", "a1", "uid-a1", "node-a", json!({}));
    server.add_pod_on_node("other", "a2", "uid-a2", "node-a", json!({}));
    server.add_pod_on_node("default", "b1", "uid-b1", "node-b", json!({}));
    server.add_pod("default", "d1", "uid-d1", json!({}));
}

#[tokio::test]
async fn a_list_with_a_field_selector_returns_only_that_nodes_pods() {
    let server = FakeApiServer::start();
    pods_on_nodes(&server);
    let client = client(&server);
    let all: Api<Pod> = Api::all(client.clone());

    let list = all
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .expect("list");
    assert_eq!(names(&list.items), ["default/a1", "other/a2"]);
    assert_eq!(
        list.metadata.resource_version.as_deref(),
        Some(&*server.resource_version())
    );
    assert_eq!(list.metadata.continue_, None);
    for pod in &list.items {
        let stored = server
            .pod(&pod.namespace().unwrap(), &pod.name_any())
            .unwrap();
        assert_eq!(
            pod.resource_version().as_deref(),
            stored["metadata"]["resourceVersion"].as_str()
        );
        assert_eq!(
            pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some("node-a")
        );
    }

    let default: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = default
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .unwrap();
    assert_eq!(names(&list.items), ["default/a1"]);
    let list = default
        .list(
            &ListParams::default()
                .fields(&format!("spec.nodeName={}", fake_apiserver::DEFAULT_NODE)),
        )
        .await
        .unwrap();
    assert_eq!(
        names(&list.items),
        ["default/d1"],
        "add_pod schedules to the default node"
    );
    let list = all
        .list(&ListParams::default().fields("metadata.name=b1"))
        .await
        .unwrap();
    assert_eq!(names(&list.items), ["default/b1"]);
    let list = all
        .list(&ListParams::default().fields("spec.nodeName!=node-a,metadata.namespace=default"))
        .await
        .unwrap();
    assert_eq!(names(&list.items), ["default/b1", "default/d1"]);

    // Label selectors: empty selects all; equality and existence work.
    let list = all.list(&ListParams::default().labels("")).await.unwrap();
    assert_eq!(list.items.len(), 4);
    server.modify_pod("default", "b1", |pod| {
        pod["metadata"]["labels"] = json!({"app": "web"})
    });
    for (selector, expected) in [
        ("app=web", vec!["default/b1"]),
        ("app", vec!["default/b1"]),
        ("app in (web,db)", vec!["default/b1"]),
        ("!app", vec!["default/a1", "default/d1", "other/a2"]),
        ("app!=web", vec!["default/a1", "default/d1", "other/a2"]),
    ] {
        let list = all
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        assert_eq!(names(&list.items), expected, "{selector}");
    }

    // A field the server does not index is refused, as by a real server.
    let err = all
        .list(&ListParams::default().fields("spec.hostname=x"))
        .await
        .unwrap_err();
    assert_eq!(api_code(err), 400);

    // NADs, in every namespace and in one.
    server.add_nad("default", "net-a", "{\"type\":\"macvlan\"}");
    server.add_nad("other", "net-b", "{\"type\":\"bridge\"}");
    let nads: Api<NetworkAttachmentDefinition> = Api::all(client.clone());
    let list = nads.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&list.items), ["default/net-a", "other/net-b"]);
    assert_eq!(
        list.items[1].spec.config.as_deref(),
        Some("{\"type\":\"bridge\"}")
    );
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), "other");
    let list = nads.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&list.items), ["other/net-b"]);
    let list = nads.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("net-b"));

    assert_eq!(server.list_requests(PODS), 12, "the refused one counts");
    assert_eq!(server.list_requests(NADS), 3);
    assert_eq!(server.watch_requests(PODS), 0);
    let sent = server.requests_with_query();
    assert!(
        sent.contains(&"GET /api/v1/pods?&fieldSelector=spec.nodeName%3Dnode-a".to_string()),
        "{sent:#?}"
    );
    assert!(
        sent.contains(&"GET /apis/k8s.cni.cncf.io/v1/network-attachment-definitions?".to_string()),
        "{sent:#?}"
    );
    assert!(server.requests().contains(&"GET /api/v1/pods".to_string()));
}

#[tokio::test]
async fn pages_of_a_list_read_one_snapshot_until_it_is_compacted() {
    let server = FakeApiServer::start();
    for name in ["p1", "p2", "p3", "p4", "p5"] {
        server.add_pod_on_node("default", name, name, "node-a", json!({}));
    }
    let pods: Api<Pod> = Api::all(client(&server));
    let lp = ListParams::default()
        .fields("spec.nodeName=node-a")
        .limit(2);
    let first = pods.list(&lp).await.unwrap();
    let snapshot = first.metadata.resource_version.clone().unwrap();
    assert_eq!(names(&first.items), ["default/p1", "default/p2"]);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().expect("a continue token");

    // Changes between pages are not seen: the pages read the first's version.
    server.delete_pod("default", "p5");
    server.add_pod_on_node("default", "p6", "p6", "node-a", json!({}));
    let second = pods.list(&lp.clone().continue_token(&token)).await.unwrap();
    assert_eq!(names(&second.items), ["default/p3", "default/p4"]);
    assert_eq!(
        second.metadata.resource_version.as_deref(),
        Some(&*snapshot)
    );
    let third = pods
        .list(
            &lp.clone()
                .continue_token(second.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(names(&third.items), ["default/p5"]);
    assert_eq!(third.metadata.continue_, None);

    // An exact read of that version sees the same; a fresh list sees now.
    let exact = pods
        .list(
            &ListParams::default()
                .at(&snapshot)
                .matching(VersionMatch::Exact),
        )
        .await
        .unwrap();
    assert_eq!(exact.items.len(), 5);
    let now = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        names(&now.items),
        [
            "default/p1",
            "default/p2",
            "default/p3",
            "default/p4",
            "default/p6"
        ]
    );
    let any = pods.list(&ListParams::default().match_any()).await.unwrap();
    assert_eq!(any.items.len(), 5);

    server.compact_history();
    let err = pods
        .list(&lp.clone().continue_token(&token))
        .await
        .unwrap_err();
    assert_eq!(api_code(err), 410);
    let err = pods
        .list(
            &ListParams::default()
                .at(&snapshot)
                .matching(VersionMatch::Exact),
        )
        .await
        .unwrap_err();
    assert_eq!(api_code(err), 410);
    let sent = server.requests_with_query();
    assert!(
        sent.contains(&format!(
            "GET /api/v1/pods?&fieldSelector=spec.nodeName%3Dnode-a&limit=2&continue={}",
            token.replace('/', "%2F")
        )),
        "{sent:#?}"
    );
    assert!(sent.contains(
        &"GET /api/v1/pods?&resourceVersion=0&resourceVersionMatch=NotOlderThan".to_string()
    ));
}

#[tokio::test]
async fn a_watch_from_the_lists_version_sees_every_later_change_in_order() {
    let server = FakeApiServer::start();
    server.set_watch_timeout_cap(Duration::from_secs(60));
    pods_on_nodes(&server);
    let client = client(&server);
    let pods: Api<Pod> = Api::all(client.clone());
    let list = pods
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .unwrap();
    let listed = list.metadata.resource_version.unwrap();

    // Changes before the watch starts come from the history.
    server.add_pod_on_node("default", "a3", "uid-a3", "node-a", json!({}));
    server.add_pod_on_node("default", "b2", "uid-b2", "node-b", json!({}));
    server.modify_pod("default", "a1", |pod| {
        pod["metadata"]["annotations"]["touched"] = json!("yes");
    });
    server.delete_pod("other", "a2");
    server.modify_pod("default", "b1", |pod| {
        pod["spec"]["nodeName"] = json!("node-a")
    });
    server.modify_pod("default", "a3", |pod| {
        pod["spec"]["nodeName"] = json!("node-b")
    });
    server.delete_pod("default", "b2");

    let wp = WatchParams::default()
        .fields("spec.nodeName=node-a")
        .timeout(290);
    let mut stream = pods.watch(&wp, &listed).await.expect("watch").boxed();
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(describe(&next_change(&mut stream).await));
    }
    let kinds: Vec<(&str, &str)> = seen
        .iter()
        .map(|(kind, name, _)| (*kind, name.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("ADDED", "a3"),
            ("MODIFIED", "a1"),
            ("DELETED", "a2"),
            ("ADDED", "b1"),   // moved onto the node
            ("DELETED", "a3"), // moved off it
        ]
    );
    let versions: Vec<u64> = seen.iter().map(|(_, _, version)| *version).collect();
    assert!(
        versions.windows(2).all(|pair| pair[0] < pair[1]),
        "{versions:?}"
    );
    assert!(versions[0] > version(&listed));

    // Other requests go on while the watch is open; later changes are live.
    let default: Api<Pod> = Api::namespaced(client.clone(), "default");
    assert!(default.get_opt("a1").await.unwrap().is_some());
    assert_eq!(server.open_watches(), 1);
    server.delete_pod("default", "a1");
    let (kind, name, deleted) = describe(&next_change(&mut stream).await);
    assert_eq!((kind, name.as_str()), ("DELETED", "a1"));
    assert_eq!(deleted.to_string(), server.resource_version());
    assert!(deleted > versions[4]);

    // A watch from "0" starts with the current state, as ADDED events.
    let mut from_any = pods.watch(&wp, "0").await.unwrap().boxed();
    let event = next_change(&mut from_any).await;
    assert_eq!(describe(&event).0, "ADDED");
    assert_eq!(describe(&event).1, "b1");
    server.add_pod_on_node("default", "a4", "uid-a4", "node-a", json!({}));
    assert_eq!(describe(&next_change(&mut from_any).await).1, "a4");
    assert_eq!(describe(&next_change(&mut stream).await).1, "a4");
    assert_eq!(server.watch_requests(PODS), 2);
    assert_eq!(server.list_requests(PODS), 1);

    // A streaming list ends its initial events with the marked bookmark.
    let nads: Api<NetworkAttachmentDefinition> = Api::all(client.clone());
    server.add_nad("default", "net", "{}");
    let mut initial = nads
        .watch(&WatchParams::default().initial_events(), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(describe(&next(&mut initial).await.unwrap()).1, "net");
    match next(&mut initial).await.unwrap() {
        WatchEvent::Bookmark(bookmark) => {
            assert_eq!(
                bookmark.metadata.resource_version,
                server.resource_version()
            );
            assert_eq!(
                bookmark
                    .metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str),
                Some("true")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_metadata_watch_gets_partial_objects() {
    let server = FakeApiServer::start();
    server.set_watch_timeout_cap(Duration::from_secs(60));
    let nads: Api<NetworkAttachmentDefinition> = Api::all(client(&server));
    let listed = nads.list_metadata(&ListParams::default()).await.unwrap();
    let mut stream = nads
        .watch_metadata(
            &WatchParams::default(),
            listed.metadata.resource_version.as_deref().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    server.add_nad("kube-system", "net", "{}");
    match next_change(&mut stream).await {
        WatchEvent::Added(partial) => {
            assert_eq!(partial.metadata.name.as_deref(), Some("net"));
            assert_eq!(partial.types.unwrap().kind, "PartialObjectMetadata");
        }
        other => panic!("{other:?}"),
    }
    server.delete_nad("kube-system", "net");
    assert!(matches!(
        next_change(&mut stream).await,
        WatchEvent::Deleted(_)
    ));
}

#[tokio::test]
async fn a_watch_from_a_compacted_version_gets_410_gone() {
    let server = FakeApiServer::start();
    server.set_watch_timeout_cap(Duration::from_secs(60));
    let pods: Api<Pod> = Api::all(client(&server));
    let listed = pods.list(&ListParams::default()).await.unwrap();
    let old = listed.metadata.resource_version.unwrap();
    server.add_pod("default", "p", "uid-p", json!({}));

    // Open watches survive a compaction.
    let mut open = pods
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    server.compact_history();
    assert_eq!(describe(&next_change(&mut open).await).1, "p");

    let mut stream = pods
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match next(&mut stream).await {
        Some(WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(
        next(&mut stream).await.is_none(),
        "the stream ends after the error"
    );

    // From the current version a watch works.
    let now = server.resource_version();
    let mut stream = pods
        .watch(&WatchParams::default(), &now)
        .await
        .unwrap()
        .boxed();
    server.delete_pod("default", "p");
    assert_eq!(describe(&next_change(&mut stream).await).0, "DELETED");
    assert_eq!(describe(&next_change(&mut open).await).0, "DELETED");

    // The history is bounded: the oldest events are compacted away.
    server.set_history_limit(2);
    let before = server.resource_version();
    for name in ["q1", "q2", "q3"] {
        server.add_pod("default", name, name, json!({}));
    }
    let mut stream = pods
        .watch(&WatchParams::default(), &before)
        .await
        .unwrap()
        .boxed();
    assert!(
        matches!(next(&mut stream).await, Some(WatchEvent::Error(status)) if status.code == 410)
    );
    let after_first = (version(&before) + 1).to_string();
    let mut stream = pods
        .watch(&WatchParams::default(), &after_first)
        .await
        .unwrap()
        .boxed();
    assert_eq!(describe(&next_change(&mut stream).await).1, "q2");
    assert_eq!(describe(&next_change(&mut stream).await).1, "q3");
}

#[tokio::test]
async fn break_watches_ends_every_open_stream() {
    let server = FakeApiServer::start();
    server.set_watch_timeout_cap(Duration::from_secs(60));
    let client = client(&server);
    let pods: Api<Pod> = Api::all(client.clone());
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), "default");
    let now = server.resource_version();
    let mut pod_watch = pods
        .watch(&WatchParams::default(), &now)
        .await
        .unwrap()
        .boxed();
    let mut nad_watch = nads
        .watch(&WatchParams::default(), &now)
        .await
        .unwrap()
        .boxed();
    assert_eq!(server.open_watches(), 2);

    server.break_watches();
    ends(&mut pod_watch).await;
    ends(&mut nad_watch).await;
    assert_eq!(server.open_watches(), 0);

    // Resuming from the last version seen misses nothing.
    server.add_nad("default", "net", "{}");
    let mut nad_watch = nads
        .watch(&WatchParams::default(), &now)
        .await
        .unwrap()
        .boxed();
    assert_eq!(
        describe(&next_change(&mut nad_watch).await),
        ("ADDED", "net".into(), version(&now) + 1)
    );
    assert_eq!(server.watch_requests(PODS), 1);
    assert_eq!(server.watch_requests(NADS), 2);

    // stop() ends them too.
    server.stop();
    ends(&mut nad_watch).await;
}

#[tokio::test]
async fn a_watch_ends_at_its_timeout_with_a_bookmark() {
    let server = FakeApiServer::start();
    server.set_watch_timeout_cap(Duration::from_secs(1));
    let pods: Api<Pod> = Api::all(client(&server));
    server.add_pod_on_node("default", "elsewhere", "uid", "node-b", json!({}));
    let from = server.resource_version();
    let wp = WatchParams::default().fields("spec.nodeName=node-a");
    let mut stream = pods.watch(&wp, &from).await.unwrap().boxed();
    server.modify_pod("default", "elsewhere", |pod| {
        pod["metadata"]["labels"] = json!({"a": "b"})
    });
    let started = Instant::now();
    match next(&mut stream).await {
        // The filtered-out change is not sent, but the bookmark moves past it.
        Some(WatchEvent::Bookmark(bookmark)) => {
            assert_eq!(
                bookmark.metadata.resource_version,
                server.resource_version()
            );
            assert_eq!(bookmark.types.kind, "Pod");
        }
        other => panic!("{other:?}"),
    }
    assert!(next(&mut stream).await.is_none());
    assert!(started.elapsed() < Duration::from_secs(5));

    // Without bookmarks the stream just ends; send_bookmarks asks for one.
    let mut quiet = pods
        .watch(&wp.clone().disable_bookmarks(), &from)
        .await
        .unwrap()
        .boxed();
    assert!(next(&mut quiet).await.is_none());
    server.set_watch_timeout_cap(Duration::from_secs(60));
    let mut stream = pods.watch(&wp, &from).await.unwrap().boxed();
    server.send_bookmarks();
    assert!(matches!(
        next(&mut stream).await,
        Some(WatchEvent::Bookmark(_))
    ));
}

#[tokio::test]
async fn a_merge_patch_of_the_status_changes_only_what_it_names() {
    let server = FakeApiServer::start();
    server.set_watch_timeout_cap(Duration::from_secs(60));
    server.add_pod_on_node("default", "p", "uid-p", "node-a", json!({"keep": "me"}));
    let before = server.pod("default", "p").unwrap();
    let pods: Api<Pod> = Api::namespaced(client(&server), "default");
    let mut watch = pods
        .watch(&WatchParams::default(), &server.resource_version())
        .await
        .unwrap()
        .boxed();

    let status = r#"[{"name":"default/net","interface":"net1"}]"#;
    let patch = json!({"metadata": {"annotations": {NETWORK_STATUS_ANNOTATION: status}}});
    let patched = pods
        .patch_status("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("merge patch of the status");
    let annotations = patched.annotations();
    assert_eq!(
        annotations
            .get(NETWORK_STATUS_ANNOTATION)
            .map(String::as_str),
        Some(status)
    );
    assert_eq!(annotations.get("keep").map(String::as_str), Some("me"));
    let stored = server.pod("default", "p").unwrap();
    let mut expected = before.clone();
    expected["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION] = json!(status);
    expected["metadata"]["resourceVersion"] =
        json!((version(before["metadata"]["resourceVersion"].as_str().unwrap()) + 1).to_string());
    assert_eq!(
        stored, expected,
        "only the annotation (and the version) changed"
    );
    match next_change(&mut watch).await {
        WatchEvent::Modified(pod) => {
            assert_eq!(
                pod.annotations()
                    .get(NETWORK_STATUS_ANNOTATION)
                    .map(String::as_str),
                Some(status)
            );
            assert_eq!(pod.resource_version(), patched.resource_version());
        }
        other => panic!("{other:?}"),
    }

    // The status subresource keeps the spec; the main resource the status.
    let patch = json!({"spec": {"nodeName": "elsewhere"}, "status": {"phase": "Succeeded"}});
    let patched = pods
        .patch_status("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(patched.spec.unwrap().node_name.as_deref(), Some("node-a"));
    assert_eq!(
        patched.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    let patch = json!({"metadata": {"labels": {"app": "web"}, "annotations": {"keep": null}}, "status": {"phase": "Failed"}});
    let patched = pods
        .patch("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(
        patched.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(patched.labels().get("app").map(String::as_str), Some("web"));
    assert!(
        !patched.annotations().contains_key("keep"),
        "null removes (RFC 7386)"
    );
    assert!(
        patched
            .annotations()
            .contains_key(NETWORK_STATUS_ANNOTATION)
    );
    assert!(matches!(
        next_change(&mut watch).await,
        WatchEvent::Modified(_)
    ));
    assert!(matches!(
        next_change(&mut watch).await,
        WatchEvent::Modified(_)
    ));

    // A patch that changes nothing writes nothing.
    let unchanged = pods
        .patch("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(unchanged.resource_version(), patched.resource_version());

    // A stale resourceVersion in the patch conflicts; without one, a patch
    // applies to the latest version even after someone else wrote.
    let stale = json!({"metadata": {"resourceVersion": before["metadata"]["resourceVersion"], "labels": {"x": "y"}}});
    let err = pods
        .patch_status("p", &PatchParams::default(), &Patch::Merge(&stale))
        .await
        .unwrap_err();
    assert_eq!(api_code(err), 409);
    server.force_status_conflicts(1);
    let latest = version(&server.resource_version());
    let patched = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(version(&patched.resource_version().unwrap()), latest + 2);

    // Missing pod: 404. Other patch types: 415.
    let err = pods
        .patch_status("gone", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_err();
    assert_eq!(api_code(err), 404);
    let err = pods
        .patch_status("p", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap_err();
    assert_eq!(api_code(err), 415);
    let err = pods
        .patch("p", &PatchParams::apply("test"), &Patch::Apply(&patch))
        .await
        .unwrap_err();
    assert_eq!(api_code(err), 415);
    let requests = server.requests();
    assert!(
        requests.contains(&"PATCH /api/v1/namespaces/default/pods/p/status".to_string()),
        "{requests:#?}"
    );
    assert!(requests.contains(&"PATCH /api/v1/namespaces/default/pods/p".to_string()));
}

#[tokio::test]
async fn get_put_and_conflicts_are_unchanged() {
    let server = FakeApiServer::start();
    server.set_watch_timeout_cap(Duration::from_secs(60));
    let client = client(&server);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    assert!(pods.get_opt("missing").await.unwrap().is_none());
    let err = pods.get("missing").await.unwrap_err();
    assert_eq!(api_code(err), 404);
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(client.clone(), "default");
    assert!(nads.get_opt("missing").await.unwrap().is_none());

    server.add_pod(
        "default",
        "p",
        "uid-p",
        json!({"k8s.v1.cni.cncf.io/networks": "net"}),
    );
    server.add_nad("default", "net", "{\"cniVersion\":\"1.0.0\"}");
    let net = nads.get("net").await.unwrap();
    assert_eq!(
        net.spec.config.as_deref(),
        Some("{\"cniVersion\":\"1.0.0\"}")
    );
    let mut watch = pods
        .watch(&WatchParams::default(), &server.resource_version())
        .await
        .unwrap()
        .boxed();

    let mut pod = pods.get("p").await.unwrap();
    assert_eq!(pod.metadata.uid.as_deref(), Some("uid-p"));
    pod.annotations_mut()
        .insert(NETWORK_STATUS_ANNOTATION.into(), "[]".into());
    let written = pods
        .replace_status("p", &PostParams::default(), &pod)
        .await
        .unwrap();
    assert_eq!(
        server
            .pod_annotation("default", "p", NETWORK_STATUS_ANNOTATION)
            .as_deref(),
        Some("[]")
    );
    assert_eq!(
        describe(&next_change(&mut watch).await),
        (
            "MODIFIED",
            "p".into(),
            version(&written.resource_version().unwrap())
        )
    );

    // The same (now stale) object again: 409.
    let err = pods
        .replace_status("p", &PostParams::default(), &pod)
        .await
        .unwrap_err();
    assert_eq!(api_code(err), 409);

    // A forced conflict: someone else writes first (an event of its own).
    let mut pod = pods.get("p").await.unwrap();
    server.force_status_conflicts(1);
    let err = pods
        .replace_status("p", &PostParams::default(), &pod)
        .await
        .unwrap_err();
    assert_eq!(api_code(err), 409);
    assert_eq!(describe(&next_change(&mut watch).await).0, "MODIFIED");
    pod = pods.get("p").await.unwrap();
    pods.replace_status("p", &PostParams::default(), &pod)
        .await
        .unwrap();

    let requests = server.requests();
    let puts = requests
        .iter()
        .filter(|request| *request == "PUT /api/v1/namespaces/default/pods/p/status")
        .count();
    assert_eq!(puts, 4, "{requests:#?}");
    assert!(
        requests.iter().all(|request| !request.contains('?')),
        "{requests:#?}"
    );
    assert!(requests.contains(&"GET /api/v1/namespaces/default/pods/p".to_string()));
}

// --- Raw HTTP: exactly what kube's runtime watcher sends -------------------

/// Send a request on `stream`; the status line and headers of the answer.
fn send(
    reader: &mut BufReader<TcpStream>,
    request: &str,
    headers: &str,
    body: &str,
) -> (String, Vec<String>) {
    let text = format!("{request} HTTP/1.1\r\nhost: fake\r\n{headers}\r\n{body}");
    reader.get_mut().write_all(text.as_bytes()).unwrap();
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim_end().is_empty() {
            break;
        }
        lines.push(line.trim_end().to_ascii_lowercase());
    }
    (status.trim_end().to_string(), lines)
}

fn body(reader: &mut BufReader<TcpStream>, headers: &[String]) -> Value {
    let length: usize = headers
        .iter()
        .find_map(|header| header.strip_prefix("content-length: "))
        .expect("content-length")
        .parse()
        .unwrap();
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// The chunks of a chunked body, to its end: each must be one JSON line.
fn chunks(reader: &mut BufReader<TcpStream>) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).unwrap();
        let size = usize::from_str_radix(size.trim_end(), 16).unwrap();
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).unwrap();
        assert!(chunk.ends_with(b"\r\n"));
        if size == 0 {
            return events;
        }
        let line = &chunk[..size];
        assert_eq!(line.last(), Some(&b'\n'), "one event per line");
        assert_eq!(line.iter().filter(|byte| **byte == b'\n').count(), 1);
        events.push(serde_json::from_slice(line).unwrap());
    }
}

#[test]
fn the_runtime_watchers_requests_on_the_wire() {
    let server = FakeApiServer::start();
    server.set_watch_timeout_cap(Duration::from_secs(1));
    pods_on_nodes(&server);
    let stream = TcpStream::connect(server.url().trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(stream);

    // watcher::Config::default().fields(..): the paged initial list...
    let (status, headers) = send(
        &mut reader,
        "GET /api/v1/pods?&fieldSelector=spec.nodeName%3Dnode-a&limit=500",
        "",
        "",
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains(&"content-type: application/json".to_string()));
    let list = body(&mut reader, &headers);
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let listed = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(list["metadata"].get("continue").is_none());

    // ...then the watch from its version, on the same (kept-alive) connection.
    server.add_pod_on_node("default", "a3", "uid-a3", "node-a", json!({}));
    let (status, headers) = send(
        &mut reader,
        &format!(
            "GET /api/v1/pods?&watch=true&timeoutSeconds=290&fieldSelector=spec.nodeName%3Dnode-a&allowWatchBookmarks=true&resourceVersion={listed}"
        ),
        "",
        "",
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains(&"transfer-encoding: chunked".to_string()),
        "{headers:?}"
    );
    let events = chunks(&mut reader);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["kind"], "Pod");
    assert_eq!(events[0]["object"]["metadata"]["name"], "a3");
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(
        events[1]["object"]["metadata"]["resourceVersion"],
        server.resource_version()
    );

    // metadata_watcher: the same with the PartialObjectMetadata Accept.
    let (_, headers) = send(
        &mut reader,
        "GET /apis/k8s.cni.cncf.io/v1/network-attachment-definitions?&limit=500",
        "accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1\r\ncontent-type: application/json\r\n",
        "",
    );
    let list = body(&mut reader, &headers);
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    server.compact_history();
    let (status, headers) = send(
        &mut reader,
        &format!(
            "GET /apis/k8s.cni.cncf.io/v1/network-attachment-definitions?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion={listed}"
        ),
        "accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1\r\ncontent-type: application/json\r\n",
        "",
    );
    // Too old: 200, one ERROR event with a 410 Status, the end.
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains(&"transfer-encoding: chunked".to_string()));
    let events = chunks(&mut reader);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["kind"], "Status");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");

    // A merge patch of the status, as the node daemon sends it.
    let patch = json!({"metadata": {"annotations": {NETWORK_STATUS_ANNOTATION: "[]"}}}).to_string();
    let (status, headers) = send(
        &mut reader,
        "PATCH /api/v1/namespaces/default/pods/a1/status?",
        &format!(
            "accept: application/json\r\ncontent-type: application/merge-patch+json\r\ncontent-length: {}\r\n",
            patch.len()
        ),
        &patch,
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        body(&mut reader, &headers)["metadata"]["annotations"][NETWORK_STATUS_ANNOTATION],
        "[]"
    );
    assert_eq!(server.list_requests(PODS), 1);
    assert_eq!(server.list_requests(NADS), 1);
    assert_eq!(server.watch_requests(PODS), 1);
    assert_eq!(server.watch_requests(NADS), 1);
}

#[tokio::test]
async fn events_are_created_kept_and_can_be_refused() {
    use k8s_openapi::api::core::v1::Event;
    use multus_wasm::k8s::{PodEvent, PodInfo};
    let server = FakeApiServer::start();
    let client = client(&server);
    let pod = PodInfo {
        namespace: "default".into(),
        name: "samplepod".into(),
        uid: "uid-ev".into(),
        annotations: Default::default(),
    };
    let added = PodEvent::added_interface(
        "net1",
        &["192.168.1.200/24".to_string()],
        "default/macvlan-conf",
    );
    multus_wasm::k8s::api::post_event(&client, &pod, &added)
        .await
        .expect("201");
    let events = server.events();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event["kind"], "Event");
    assert_eq!(event["metadata"]["namespace"], "default");
    assert_eq!(event["metadata"]["uid"], "event-1");
    assert!(
        event["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("samplepod."),
        "{event}"
    );
    assert_eq!(
        event["involvedObject"],
        json!({"apiVersion": "v1", "kind": "Pod", "namespace": "default", "name": "samplepod", "uid": "uid-ev"})
    );
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["reason"], "AddedInterface");
    assert_eq!(
        event["message"],
        "Add net1 [192.168.1.200/24] from default/macvlan-conf"
    );
    assert_eq!(event["source"]["component"], "multus-wasm");
    assert_eq!(event["count"], 1);
    assert!(
        server
            .requests()
            .contains(&"POST /api/v1/namespaces/default/events".to_string())
    );

    // kube's typed client reads the 201 back as an Event.
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let mut other: Event = serde_json::from_value(events[0].clone()).unwrap();
    other.metadata.uid = None;
    other.metadata.name = Some("samplepod.2".into());
    let created = api.create(&PostParams::default(), &other).await.unwrap();
    assert_eq!(created.metadata.uid.as_deref(), Some("event-2"));

    // Not an event of this namespace, a GET, a refusal: nothing kept.
    let elsewhere: Api<Event> = Api::namespaced(client.clone(), "kube-system");
    assert_eq!(
        api_code(
            elsewhere
                .create(&PostParams::default(), &other)
                .await
                .unwrap_err()
        ),
        400
    );
    assert_eq!(api_code(api.get("samplepod.2").await.unwrap_err()), 405);
    for code in [403, 500] {
        server.refuse_events(Some(code));
        let err = multus_wasm::k8s::api::post_event(&client, &pod, &added)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&code.to_string()), "{err}");
    }
    server.refuse_events(None);
    assert_eq!(server.events().len(), 2);
}
