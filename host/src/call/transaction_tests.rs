//! The meta-plugin's transaction with every effect faked (no root, no
//! guest): the order of what it does, and that a failure at any step
//! (source, IPAM, each op, each cache write, the status write) leaves
//! nothing behind: no link, no route change, no reservation, no cache,
//! and the cluster network DEL'd.

use serde_json::{Value, json};

use super::Call;
use crate::cni::{CniEnv, CniError};
use crate::config::MultusConfig;
use crate::fakes::{FakeEffects, KernelState};

const DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const CONTAINER: &str = "c0ffee";

fn config(extra: Value) -> MultusConfig {
    let mut value = json!({
        "cniVersion": "1.0.0", "name": "multus-wasm", "type": "multus-wasm",
        "delegates": [{"cniVersion": "1.0.0", "name": "cluster", "type": "ptp"}],
        "binDir": "/fake/bin", "cniDir": "/fake/cni",
        "wasmPlugins": {
            "macvlan": {"path": "/fake/macvlan.wasm", "sha256": DIGEST},
            "host-local": {"path": "/fake/host-local.wasm", "sha256": DIGEST}
        }
    });
    for (key, field) in extra.as_object().unwrap() {
        value[key] = field.clone();
    }
    MultusConfig::parse(value.to_string().as_bytes())
        .unwrap()
        .config
}

fn env(command: &str, netns: &str) -> CniEnv {
    CniEnv::from_vars([
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", CONTAINER),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/fake/bin"),
        (
            "CNI_ARGS",
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod;K8S_POD_UID=uid-1",
        ),
    ])
    .unwrap()
}

fn macvlan(name: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": "ens3",
           "ipam": {"type": "host-local"}})
}

/// A node with NADs `net-a` and `net-b` and a pod asking for `networks`.
fn node(networks: &str) -> FakeEffects {
    let effects = FakeEffects::new();
    effects.world.add_nad("default", "net-a", macvlan("net-a"));
    effects.world.add_nad("default", "net-b", macvlan("net-b"));
    effects.world.add_pod("default", "pod", "uid-1", networks);
    effects
}

fn run(effects: &FakeEffects, config: &MultusConfig, command: &str) -> Result<(), CniError> {
    let env = env(command, "/var/run/netns/pod");
    let call = Call {
        config,
        env: &env,
        effects,
    };
    match command {
        "ADD" => call.add().map(|_| ()),
        "DEL" => call.del(),
        "CHECK" => call.check(),
        other => panic!("{other}"),
    }
}

/// Nothing of the pod is left anywhere.
fn assert_nothing_left(effects: &FakeEffects, what: &str) {
    let world = &effects.world;
    assert_eq!(world.kernel(), KernelState::default(), "{what}: kernel");
    assert!(world.reservations().is_empty(), "{what}: reservations");
    assert!(world.cache.lock().unwrap().is_empty(), "{what}: cache");
}

fn count(events: &[String], prefix: &str) -> usize {
    events
        .iter()
        .filter(|event| event.starts_with(prefix))
        .count()
}

#[test]
fn an_add_runs_ipam_plan_and_cache_writes_in_order() {
    let effects = node("net-a,net-b");
    let config = config(json!({}));
    run(&effects, &config, "ADD").unwrap();
    let events = effects.world.events();
    let wanted = [
        "get-pod default/pod",
        "cache-progress pending,pending,pending",
        "exec ptp ADD eth0",
        "cache-progress added,pending,pending",
        "host-local ADD",
        "macvlan ADD",
        "op create-macvlan net1 on ens3 (bridge)",
        "cache-progress added,added,pending",
        "host-local ADD",
        "macvlan ADD",
        "op create-macvlan net2 on ens3 (bridge)",
        "cache-save added,added,added",
        "status default/pod",
    ];
    let mut position = 0;
    for want in wanted {
        let found = events[position..]
            .iter()
            .position(|event| event == want)
            .unwrap_or_else(|| panic!("{want:?} missing after {position} in {events:#?}"));
        position += found + 1;
    }
    let kernel = effects.world.kernel();
    assert_eq!(
        kernel.links.iter().collect::<Vec<_>>(),
        ["eth0", "net1", "net2"]
    );
    assert_eq!(
        effects.world.reservations(),
        ["net-a/10.1.0.2", "net-b/10.1.0.2"]
    );
    let statuses = effects.world.statuses.lock().unwrap().clone();
    let status: Value = serde_json::from_str(&statuses[0]).unwrap();
    assert_eq!(status.as_array().unwrap().len(), 3, "{status}");

    run(&effects, &config, "DEL").unwrap();
    let events = effects.world.events();
    assert_eq!(count(&events, "group-delete"), 1, "one batch delete");
    assert_eq!(
        count(&events, "macvlan DEL"),
        0,
        "no DEL plans after the batch"
    );
    assert_nothing_left(&effects, "after DEL");
    // DEL again: nothing to do, no error.
    run(&effects, &config, "DEL").unwrap();
}

#[test]
fn a_source_failure_changes_nothing() {
    let effects = node("net-a");
    effects.world.faults().get_pod = true;
    let err = run(&effects, &config(json!({})), "ADD").unwrap_err();
    assert_eq!(err.code, 11, "{err}");
    let events = effects.world.events();
    assert_eq!(events, ["get-pod default/pod"], "nothing after the pod GET");
    assert_nothing_left(&effects, "source failure");
}

#[test]
fn a_missing_nad_changes_nothing() {
    let effects = node("net-a,absent");
    let err = run(&effects, &config(json!({})), "ADD").unwrap_err();
    assert_eq!(err.code, 7, "{err}");
    assert!(err.msg.contains("absent"), "{err}");
    assert_eq!(count(&effects.world.events(), "exec"), 0);
    assert_nothing_left(&effects, "missing NAD");
}

#[test]
fn an_ipam_failure_rolls_back_what_came_before() {
    let effects = node("net-a");
    effects.world.faults().ipam = true;
    let err = run(&effects, &config(json!({})), "ADD").unwrap_err();
    assert!(err.msg.contains("injected IPAM failure"), "{err}");
    assert!(err.msg.contains("default/net-a"), "{err}");
    let events = effects.world.events();
    assert_eq!(
        count(&events, "exec ptp DEL"),
        1,
        "the cluster network is DEL'd"
    );
    assert_eq!(count(&events, "op "), 0, "no op reached the kernel");
    assert_nothing_left(&effects, "IPAM failure");
}

#[test]
fn a_delegate_failure_releases_its_ipam_and_rolls_back() {
    let effects = node("net-a");
    effects.world.faults().delegate = true;
    let err = run(&effects, &config(json!({})), "ADD").unwrap_err();
    assert!(err.msg.contains("injected delegate failure"), "{err}");
    assert_eq!(count(&effects.world.events(), "host-local DEL"), 1);
    assert_nothing_left(&effects, "delegate failure");
}

#[test]
fn a_failure_at_every_op_leaves_nothing() {
    // The plan of the first attachment (net1) and of the second (net2):
    // create, address, up, route: 4 ops each.
    for op in 0..8 {
        let effects = node("net-a,net-b");
        effects.world.faults().op = Some(op);
        let err = run(&effects, &config(json!({})), "ADD")
            .expect_err(&format!("op {op} must fail the ADD"));
        assert!(err.msg.contains("injected: EINVAL"), "op {op}: {err}");
        let events = effects.world.events();
        assert_eq!(count(&events, "exec ptp DEL"), 1, "op {op}: {events:#?}");
        if op >= 4 {
            assert_eq!(count(&events, "macvlan DEL"), 1, "op {op}: net1 is DEL'd");
        }
        assert_nothing_left(&effects, &format!("failure at op {op}"));
    }
}

#[test]
fn a_failure_at_every_cache_write_leaves_nothing() {
    // progress (all pending), after eth0, after net1, final save.
    for write in 0..4 {
        let effects = node("net-a,net-b");
        effects.world.faults().cache_write = Some(write);
        let err = run(&effects, &config(json!({})), "ADD")
            .expect_err(&format!("write {write} must fail the ADD"));
        assert!(
            err.msg.contains("injected: disk full"),
            "write {write}: {err}"
        );
        let events = effects.world.events();
        assert_eq!(count(&events, "status"), 0, "write {write}: no status");
        assert_nothing_left(&effects, &format!("failure at cache write {write}"));
    }
}

#[test]
fn a_status_write_failure_rolls_back_everything() {
    let effects = node("net-a");
    effects.world.faults().status_write = true;
    let err = run(&effects, &config(json!({})), "ADD").unwrap_err();
    assert_eq!(err.code, 11, "{err}");
    assert!(err.msg.contains("network-status"), "{err}");
    assert_nothing_left(&effects, "status failure");
}

#[test]
fn a_locked_store_is_code_11_naming_the_network() {
    let effects = node("net-a");
    effects.world.faults().store_locked = true;
    let err = run(&effects, &config(json!({})), "ADD").unwrap_err();
    assert_eq!(err.code, 11, "{err}");
    assert!(err.msg.contains("network net-a's IPAM store"), "{err}");
    assert_nothing_left(&effects, "locked store");
}

#[test]
fn default_routes_are_ops_and_a_rollback_restores_them() {
    let annotation = r#"[{"name": "net-a", "default-route": ["10.1.0.1"]}]"#;
    let effects = node(annotation);
    run(&effects, &config(json!({})), "ADD").unwrap();
    let events = effects.world.events();
    assert!(
        events.contains(&"op remove-default-routes V4 on eth0".to_string()),
        "{events:#?}"
    );
    assert!(events.contains(&"op remove-default-routes V4 on net1".to_string()));
    assert!(events.contains(&"op add-route 0.0.0.0/0 on net1 via 10.1.0.1".to_string()));
    let routes: Vec<_> = effects
        .world
        .kernel()
        .routes
        .into_iter()
        .filter(|(_, dst, _)| dst.prefix_len() == 0)
        .map(|(link, _, gateway)| (link, gateway.unwrap().to_string()))
        .collect();
    assert_eq!(routes, [("net1".to_string(), "10.1.0.1".to_string())]);

    // The same pod whose status write fails: eth0's default route, which
    // the edit removed, is back before the cluster network is DEL'd.
    let effects = node(annotation);
    effects.world.faults().status_write = true;
    run(&effects, &config(json!({})), "ADD").unwrap_err();
    let events = effects.world.events();
    let restored = events
        .iter()
        .position(|event| event.starts_with("undo RestoreRoute(\"eth0\""))
        .unwrap_or_else(|| panic!("eth0's route is not restored: {events:#?}"));
    let deleted = events
        .iter()
        .position(|event| event == "exec ptp DEL eth0")
        .unwrap();
    assert!(restored < deleted, "{events:#?}");
    assert_nothing_left(&effects, "rolled back default routes");
}

#[test]
fn a_del_after_a_partial_add_cleans_up_from_the_cache() {
    // An ADD killed right after net1's plan was applied: its progress
    // record (every attachment pending), the links, net1's reservation.
    let effects = node("net-a,net-b");
    // A killed ADD leaves its progress record and the kernel as they were
    // at the kill: rebuild that state by hand.
    let mut record =
        crate::store::cache::ContainerRecord::new(CONTAINER, "/var/run/netns/pod", "eth0");
    let config = config(json!({}));
    let env = env("ADD", "/var/run/netns/pod");
    let call = Call {
        config: &config,
        env: &env,
        effects: &effects,
    };
    let pod = effects.world.pods.lock().unwrap()["default/pod"].clone();
    let mut specs = call.build_specs(Some(&pod)).unwrap();
    crate::attachments::assign_ifnames(&mut specs, "eth0").unwrap();
    record.attachments = call.cached_attachments(&specs).unwrap();
    effects
        .world
        .cache
        .lock()
        .unwrap()
        .insert(CONTAINER.into(), record);
    {
        let mut kernel = effects.world.kernel.lock().unwrap();
        kernel.links.insert("eth0".into());
        kernel.links.insert("net1".into());
        kernel.plan_links.insert("net1".into());
    }
    effects
        .world
        .stores
        .lock()
        .unwrap()
        .entry("net-a".into())
        .or_default()
        .insert("10.1.0.2".into(), format!("{CONTAINER}\r\nnet1"));

    run(&effects, &config, "DEL").unwrap();
    let events = effects.world.events();
    assert!(
        events.contains(&"exec ptp DEL eth0".to_string()),
        "{events:#?}"
    );
    assert_nothing_left(&effects, "DEL after a partial ADD");
}

#[test]
fn a_failed_batch_delete_falls_back_to_each_plan() {
    let effects = node("net-a");
    let config = config(json!({}));
    run(&effects, &config, "ADD").unwrap();
    effects.world.faults().group_delete = true;
    run(&effects, &config, "DEL").unwrap();
    let events = effects.world.events();
    assert_eq!(count(&events, "macvlan DEL"), 1, "{events:#?}");
    assert!(events.contains(&"op delete-link net1".to_string()));
    assert_nothing_left(&effects, "DEL by plans");
}

#[test]
fn a_nad_cannot_name_a_native_plugin_the_operator_did_not_allow() {
    let effects = node("evil-net");
    effects.plugins_native(&["evil"]);
    effects.world.add_nad(
        "default",
        "evil-net",
        json!({"cniVersion": "1.0.0", "name": "evil-net", "type": "evil"}),
    );
    let err = run(&effects, &config(json!({})), "ADD").unwrap_err();
    assert_eq!(err.code, 7, "{err}");
    assert!(err.msg.contains("nativePlugins"), "{err}");
    assert_eq!(count(&effects.world.events(), "exec evil"), 0);
    assert_nothing_left(&effects, "refused native plugin");

    // Allowed by the operator, the same NAD runs.
    let effects = node("evil-net");
    effects.plugins_native(&["evil"]);
    effects.world.add_nad(
        "default",
        "evil-net",
        json!({"cniVersion": "1.0.0", "name": "evil-net", "type": "evil"}),
    );
    run(&effects, &config(json!({"nativePlugins": ["evil"]})), "ADD").unwrap();
    assert_eq!(count(&effects.world.events(), "exec evil ADD"), 1);
}

#[test]
fn check_runs_every_attachment_against_its_result() {
    let effects = node("net-a");
    let config = config(json!({}));
    run(&effects, &config, "ADD").unwrap();
    run(&effects, &config, "CHECK").unwrap();
    let events = effects.world.events();
    assert_eq!(count(&events, "exec ptp CHECK"), 1);
    assert_eq!(count(&events, "host-local CHECK"), 1);
    assert_eq!(count(&events, "macvlan CHECK"), 1);
}

#[test]
fn a_successful_add_records_an_added_interface_event_per_attachment() {
    let effects = node("net-a,net-b");
    run(&effects, &config(json!({})), "ADD").unwrap();
    assert_eq!(
        effects.world.k8s_events(),
        [
            "default/pod (uid-1) Normal AddedInterface: Add eth0 [10.244.0.5/24] from cluster",
            "default/pod (uid-1) Normal AddedInterface: Add net1 [10.1.0.2/24] from default/net-a",
            "default/pod (uid-1) Normal AddedInterface: Add net2 [10.1.0.2/24] from default/net-b",
        ]
    );
    // DEL sends none.
    run(&effects, &config(json!({})), "DEL").unwrap();
    assert_eq!(effects.world.k8s_events().len(), 3);
}

#[test]
fn a_missing_nad_records_no_network_found() {
    let effects = node("net-a,absent");
    run(&effects, &config(json!({})), "ADD").unwrap_err();
    assert_eq!(
        effects.world.k8s_events(),
        [
            "default/pod (uid-1) Warning NoNetworkFound: cannot find a network-attachment-definition (absent) in namespace (default): pod default/pod asks for it in k8s.v1.cni.cncf.io/networks"
        ]
    );
}

#[test]
fn a_del_that_rebuilds_its_attachments_sends_no_event() {
    let effects = node("net-a,absent");
    run(&effects, &config(json!({})), "DEL").unwrap();
    assert!(effects.world.k8s_events().is_empty());
}

#[test]
fn a_sandbox_refusal_records_plugin_refused_and_no_added_interface() {
    let effects = node("net-a");
    effects.world.faults().delegate_fuel = true;
    let err = run(&effects, &config(json!({})), "ADD").unwrap_err();
    assert_eq!(err.code, crate::sandbox::code::FUEL, "{err}");
    let events = effects.world.k8s_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].starts_with(
            "default/pod (uid-1) Warning PluginRefused: [default/pod/uid-1:net-a]: error adding container to network \"default/net-a\""
        )
            && events[0].contains("ran out of fuel"),
        "{events:?}"
    );
    assert_nothing_left(&effects, "refused");
}

#[test]
fn an_event_that_cannot_be_sent_does_not_fail_the_add() {
    let effects = node("net-a");
    effects.world.faults().send_event = true;
    run(&effects, &config(json!({})), "ADD").unwrap();
    assert!(effects.world.k8s_events().is_empty());
    assert_eq!(effects.world.kernel().links.len(), 2);
}

#[test]
fn check_skips_an_attachment_older_than_check() {
    let effects = node("net-a,net-b");
    let mut old = macvlan("net-a");
    old["cniVersion"] = json!("0.3.0");
    effects.world.add_nad("default", "net-a", old);
    let config = config(json!({}));
    run(&effects, &config, "ADD").unwrap();
    run(&effects, &config, "CHECK").unwrap();
    let events = effects.world.events();
    // The cluster network and net-b are checked, net-a (0.3.0) is not.
    assert_eq!(count(&events, "exec ptp CHECK"), 1, "{events:#?}");
    assert_eq!(count(&events, "macvlan CHECK"), 1, "{events:#?}");
    assert_eq!(count(&events, "host-local CHECK"), 1, "{events:#?}");
}

#[test]
fn a_nad_whose_type_is_a_wasm_ipam_plugin_runs_the_allowed_native_binary() {
    let ipam_as_type = json!({"cniVersion": "1.0.0", "name": "hl-net", "type": "host-local", "subnet": "10.9.0.0/24"});
    let effects = node("hl-net");
    effects.plugins_native(&["host-local"]);
    effects
        .world
        .add_nad("default", "hl-net", ipam_as_type.clone());
    let config = config(json!({}));
    run(&effects, &config, "ADD").unwrap();
    let events = effects.world.events();
    assert_eq!(count(&events, "exec host-local ADD net1"), 1, "{events:#?}");
    assert_eq!(count(&events, "host-local ADD"), 0, "{events:#?}");
    run(&effects, &config, "DEL").unwrap();
    assert_eq!(
        count(&effects.world.events(), "exec host-local DEL net1"),
        1
    );

    // Not allowed natively: code 7 naming the plugin as an IPAM plugin.
    let effects = node("hl-net");
    effects.plugins_native(&["host-local"]);
    effects.world.add_nad("default", "hl-net", ipam_as_type);
    let err = run(&effects, &config_with_native(&["ptp"]), "ADD").unwrap_err();
    assert_eq!(err.code, 7, "{err}");
    assert!(
        err.msg.contains("default/hl-net")
            && err.msg.contains("\"host-local\", which is an IPAM plugin")
            && err.msg.contains("nativePlugins"),
        "{err}"
    );
    assert_eq!(count(&effects.world.events(), "exec host-local"), 0);
    assert_nothing_left(&effects, "refused IPAM plugin as type");
}

fn config_with_native(types: &[&str]) -> MultusConfig {
    config(json!({"nativePlugins": types}))
}

/// A node whose NAD `net-d` is the wasm macvlan with the native `dhcp` IPAM
/// (the fake's needs the link in the pod to lease and to release).
fn dhcp_node() -> FakeEffects {
    let effects = FakeEffects::new();
    effects.plugins_native(&["dhcp"]);
    effects.world.add_nad(
        "default",
        "net-d",
        json!({"cniVersion": "1.0.0", "name": "net-d", "type": "macvlan", "master": "ens3",
               "ipam": {"type": "dhcp"}}),
    );
    effects.world.add_pod("default", "pod", "uid-1", "net-d");
    effects
}

#[test]
fn a_native_ipam_runs_once_the_wasm_link_exists_and_its_addresses_are_host_ops() {
    let effects = dhcp_node();
    let config = config(json!({}));
    run(&effects, &config, "ADD").unwrap();
    let events = effects.world.events();
    let wanted = [
        "macvlan ADD",
        "op create-macvlan net1 on ens3 (bridge)",
        "exec dhcp ADD net1",
        "op add-address 192.168.9.2/24 on net1",
        "op add-route 10.9.0.0/16 on net1 via 192.168.9.1",
        "cache-save added,added",
    ];
    let mut position = 0;
    for want in wanted {
        let found = events[position..]
            .iter()
            .position(|event| event == want)
            .unwrap_or_else(|| panic!("{want:?} missing after {position} in {events:#?}"));
        position += found + 1;
    }
    assert_eq!(count(&events, "macvlan ADD"), 1);
    let kernel = effects.world.kernel();
    assert!(
        kernel
            .addresses
            .contains(&("net1".into(), "192.168.9.2/24".parse().unwrap())),
        "{kernel:?}"
    );
    assert_eq!(effects.world.reservations(), ["dhcp-server/192.168.9.2"]);
    // The attachment's result carries the lease, on net1.
    let statuses = effects.world.statuses.lock().unwrap().clone();
    let status: Value = serde_json::from_str(&statuses[0]).unwrap();
    let net1 = status
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["interface"] == "net1")
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(net1["ips"], json!(["192.168.9.2"]), "{status}");

    run(&effects, &config, "CHECK").unwrap();
    run(&effects, &config, "DEL").unwrap();
    let events = effects.world.events();
    let release = events
        .iter()
        .position(|event| event == "exec dhcp DEL net1");
    let batch = events
        .iter()
        .position(|event| event.starts_with("group-delete"));
    assert!(
        release.is_some() && release < batch,
        "the lease is released before the links go: {events:#?}"
    );
    assert_nothing_left(&effects, "after DEL");
}

#[test]
fn a_failure_after_the_link_releases_the_lease_and_removes_the_link() {
    // net1's link plan: create, up (ops 0, 1); then the lease's: 2 sysctls,
    // address, up, route (ops 2-6).
    for op in 0..7 {
        let effects = dhcp_node();
        effects.world.faults().op = Some(op);
        let err = run(&effects, &config(json!({})), "ADD")
            .expect_err(&format!("op {op} must fail the ADD"));
        assert!(err.msg.contains("injected: EINVAL"), "op {op}: {err}");
        let events = effects.world.events();
        assert_eq!(
            count(&events, "exec dhcp ADD"),
            usize::from(op >= 2),
            "op {op}: {events:#?}"
        );
        assert_nothing_left(&effects, &format!("failure at op {op}"));
    }
    // The IPAM plugin fails after it leased: its DEL runs while the link
    // exists (so the lease is released), then the link is undone.
    let effects = dhcp_node();
    effects.world.faults().native_ipam = true;
    let err = run(&effects, &config(json!({})), "ADD").unwrap_err();
    assert!(err.msg.contains("injected dhcp failure"), "{err}");
    assert!(
        err.msg
            .contains("IPAM plugin dhcp for net1 of network default/net-d"),
        "{err}"
    );
    assert_eq!(count(&effects.world.events(), "exec dhcp DEL net1"), 1);
    assert_nothing_left(&effects, "dhcp failure");

    let effects_without_lease = dhcp_node();
    effects_without_lease.plugins.native.lock().unwrap().clear();
    let err = run(&effects_without_lease, &config(json!({})), "ADD").unwrap_err();
    assert!(err.msg.contains("dhcp"), "{err}");
    assert_eq!(
        count(&effects_without_lease.world.events(), "op create-macvlan"),
        0,
        "a missing IPAM binary is found before the link is made"
    );
    assert_nothing_left(&effects_without_lease, "missing dhcp binary");
}
