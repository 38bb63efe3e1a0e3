//! Native tests of the whole delegate against `MockHost`, mirroring the
//! reference's `macvlan_test.go` where it applies to a plan.

use guest_sdk::testing::{MockHost, request};
use guest_sdk::{
    AddAddress, AddRoute, CniResult, Command, CreateMacvlan, Delegate, Dns, InterfaceInfo,
    IpConfig, IpFamily, MacvlanMode, NetlinkOp, Netns, Plan, PluginError, Request, Route,
    RouteScope, SetSysctl,
};
use serde_json::{Value, json};

use crate::Macvlan;
use crate::tempname::candidate_name;

const NETNS: &str = "/var/run/netns/test";

/// The seed NAD's config.
fn seed_config() -> Value {
    json!({
        "cniVersion": "0.3.0",
        "name": "macvlan-conf",
        "type": "macvlan",
        "master": "ens3",
        "mode": "bridge",
        "ipam": {
            "type": "host-local",
            "subnet": "192.168.1.0/24",
            "rangeStart": "192.168.1.200",
            "rangeEnd": "192.168.1.216",
            "routes": [{ "dst": "0.0.0.0/0" }],
            "gateway": "192.168.1.1"
        }
    })
}

/// The seed config with `changes` merged in at the top level (`null`
/// removes a key).
fn config_with(changes: Value) -> Value {
    let mut config = seed_config();
    if let (Some(object), Value::Object(changes)) = (config.as_object_mut(), changes) {
        for (key, value) in changes {
            if value.is_null() {
                object.remove(&key);
            } else {
                object.insert(key, value);
            }
        }
    }
    config
}

fn l2_config() -> Value {
    config_with(json!({ "ipam": {} }))
}

fn ipam_result(ips: &[(&str, Option<&str>)], routes: Vec<Route>) -> CniResult {
    CniResult {
        interfaces: Vec::new(),
        ips: ips
            .iter()
            .map(|(address, gateway)| IpConfig {
                interface_index: None,
                address: (*address).into(),
                gateway: gateway.map(String::from),
            })
            .collect(),
        routes,
        dns: None,
    }
}

fn seed_ipam_result() -> CniResult {
    ipam_result(
        &[("192.168.1.200/24", Some("192.168.1.1"))],
        vec![Route::new("0.0.0.0/0", None)],
    )
}

fn add_request(config: &Value, ipam: Option<CniResult>) -> Request {
    let mut add = request(Command::Add, &config.to_string());
    add.ipam_result = ipam;
    add
}

/// A node with `ens3` (MTU 1500) in the host namespace.
fn node() -> MockHost {
    MockHost::new().with_link(Netns::Host, "ens3", 1500)
}

fn add(host: &MockHost, config: &Value, ipam: Option<CniResult>) -> Result<Plan, PluginError> {
    Macvlan::handle(host, add_request(config, ipam))
}

fn create_op(plan: &Plan) -> &CreateMacvlan {
    match plan.ops.first() {
        Some(NetlinkOp::CreateMacvlan(create)) => create,
        other => panic!("first op is not create-macvlan: {other:?}"),
    }
}

fn sysctl(key: &str, value: &str) -> NetlinkOp {
    NetlinkOp::SetSysctl(SetSysctl {
        key: key.into(),
        value: value.into(),
    })
}

fn address(address: &str) -> NetlinkOp {
    NetlinkOp::AddAddress(AddAddress {
        link: "net1".into(),
        address: address.into(),
    })
}

fn route_op(dst: &str, gateway: Option<&str>) -> NetlinkOp {
    NetlinkOp::AddRoute(AddRoute {
        link: "net1".into(),
        dst: dst.into(),
        gateway: gateway.map(String::from),
        metric: None,
        table: None,
        scope: None,
    })
}

fn up() -> NetlinkOp {
    NetlinkOp::SetLinkUp("net1".into())
}

fn routes_of(plan: &Plan) -> Vec<&AddRoute> {
    plan.ops
        .iter()
        .filter_map(|op| match op {
            NetlinkOp::AddRoute(route) => Some(route),
            _ => None,
        })
        .collect()
}

fn assert_error(result: Result<Plan, PluginError>, code: u32, msg: &str) {
    match result {
        Ok(plan) => panic!("expected error {msg:?}, got plan {plan:?}"),
        Err(error) => {
            assert_eq!(error.msg, msg);
            assert_eq!(error.code, code, "code of {msg:?}");
        }
    }
}

// ---------------------------------------------------------------- ADD

#[test]
fn seed_config_gives_exactly_the_reference_op_list_and_result() {
    let plan = add(&node(), &seed_config(), Some(seed_ipam_result())).unwrap();
    assert_eq!(
        plan.ops,
        vec![
            NetlinkOp::CreateMacvlan(CreateMacvlan {
                name: "net1".into(),
                master: "ens3".into(),
                master_in_sandbox: false,
                mode: MacvlanMode::Bridge,
                mtu: None,
                mac: None,
            }),
            sysctl("net/ipv4/conf/net1/arp_notify", "1"),
            sysctl("net/ipv6/conf/net1/ndisc_notify", "1"),
            address("192.168.1.200/24"),
            up(),
            route_op("0.0.0.0/0", Some("192.168.1.1")),
        ]
    );
    assert_eq!(
        plan.cni_result,
        Some(CniResult {
            interfaces: vec![InterfaceInfo {
                name: "net1".into(),
                mac: None,
                mtu: None,
                sandbox: Some(NETNS.into()),
            }],
            ips: vec![IpConfig {
                interface_index: Some(0),
                address: "192.168.1.200/24".into(),
                gateway: Some("192.168.1.1".into()),
            }],
            routes: vec![Route::new("0.0.0.0/0", None)],
            dns: None,
        })
    );
}

#[test]
fn every_mode_maps_to_its_netlink_mode() {
    for (text, mode) in [
        ("bridge", MacvlanMode::Bridge),
        ("", MacvlanMode::Bridge),
        ("private", MacvlanMode::Private),
        ("vepa", MacvlanMode::Vepa),
        ("passthru", MacvlanMode::Passthru),
        ("source", MacvlanMode::Source),
    ] {
        let plan = add(
            &node(),
            &config_with(json!({ "mode": text })),
            Some(seed_ipam_result()),
        )
        .unwrap();
        assert_eq!(create_op(&plan).mode, mode, "mode {text:?}");
    }
    let absent = add(
        &node(),
        &config_with(json!({ "mode": null })),
        Some(seed_ipam_result()),
    )
    .unwrap();
    assert_eq!(create_op(&absent).mode, MacvlanMode::Bridge);
}

#[test]
fn an_unknown_mode_is_rejected_before_any_op() {
    assert_error(
        add(
            &node(),
            &config_with(json!({ "mode": "l3" })),
            Some(seed_ipam_result()),
        ),
        999,
        "unknown macvlan mode: \"l3\"",
    );
}

#[test]
fn mtu_must_lie_between_zero_and_the_master_mtu() {
    let inherit = add(
        &node(),
        &config_with(json!({ "mtu": 0 })),
        Some(seed_ipam_result()),
    )
    .unwrap();
    assert_eq!(create_op(&inherit).mtu, None);
    let at_master = add(
        &node(),
        &config_with(json!({ "mtu": 1500 })),
        Some(seed_ipam_result()),
    )
    .unwrap();
    assert_eq!(create_op(&at_master).mtu, Some(1500));
    let below = add(
        &node(),
        &config_with(json!({ "mtu": 1280 })),
        Some(seed_ipam_result()),
    )
    .unwrap();
    assert_eq!(create_op(&below).mtu, Some(1280));
    assert_error(
        add(
            &node(),
            &config_with(json!({ "mtu": 9000 })),
            Some(seed_ipam_result()),
        ),
        999,
        "invalid MTU 9000, must be [0, master MTU(1500)]",
    );
    assert_error(
        add(
            &node(),
            &config_with(json!({ "mtu": 1501 })),
            Some(seed_ipam_result()),
        ),
        999,
        "invalid MTU 1501, must be [0, master MTU(1500)]",
    );
    assert_error(
        add(
            &node(),
            &config_with(json!({ "mtu": -1 })),
            Some(seed_ipam_result()),
        ),
        999,
        "invalid MTU -1, must be [0, master MTU(1500)]",
    );
    let small_master = MockHost::new().with_link(Netns::Host, "ens3", 1400);
    assert_error(
        add(
            &small_master,
            &config_with(json!({ "mtu": 1500 })),
            Some(seed_ipam_result()),
        ),
        999,
        "invalid MTU 1500, must be [0, master MTU(1400)]",
    );
}

#[test]
fn mac_precedence_is_config_then_cni_args_then_runtime_config() {
    let from_config = config_with(json!({ "mac": "c2:00:00:00:00:01" }));
    let plan = add(&node(), &from_config, Some(seed_ipam_result())).unwrap();
    assert_eq!(create_op(&plan).mac.as_deref(), Some("c2:00:00:00:00:01"));
    assert_eq!(
        plan.cni_result.as_ref().unwrap().interfaces[0]
            .mac
            .as_deref(),
        Some("c2:00:00:00:00:01")
    );

    let mut with_args = add_request(&from_config, Some(seed_ipam_result()));
    with_args.args = vec![
        ("IgnoreUnknown".into(), "true".into()),
        ("MAC".into(), "c2:11:22:33:44:55".into()),
    ];
    let plan = Macvlan::handle(&node(), with_args.clone()).unwrap();
    assert_eq!(create_op(&plan).mac.as_deref(), Some("c2:11:22:33:44:55"));

    let mut runtime = from_config.clone();
    runtime["runtimeConfig"] = json!({ "mac": "C2:AA:BB:CC:DD:EE" });
    with_args.config = runtime.to_string();
    let plan = Macvlan::handle(&node(), with_args.clone()).unwrap();
    assert_eq!(create_op(&plan).mac.as_deref(), Some("c2:aa:bb:cc:dd:ee"));
    assert_eq!(
        plan.cni_result.as_ref().unwrap().interfaces[0]
            .mac
            .as_deref(),
        Some("c2:aa:bb:cc:dd:ee")
    );

    // An empty MAC= does not override the config's.
    let mut empty_arg = add_request(&from_config, Some(seed_ipam_result()));
    empty_arg.args = vec![("MAC".into(), String::new())];
    let plan = Macvlan::handle(&node(), empty_arg).unwrap();
    assert_eq!(create_op(&plan).mac.as_deref(), Some("c2:00:00:00:00:01"));
}

#[test]
fn runtime_config_mac_is_read_under_the_go_spelling_too() {
    // The upstream test sends `RuntimeConfig`; Go's JSON is case-insensitive.
    let config = config_with(json!({
        "ipam": {},
        "capabilities": { "mac": true },
        "RuntimeConfig": { "mac": "c2:11:22:33:44:55" }
    }));
    let plan = add(&node(), &config, None).unwrap();
    assert_eq!(create_op(&plan).mac.as_deref(), Some("c2:11:22:33:44:55"));
}

#[test]
fn an_invalid_mac_fails_with_the_reference_text() {
    assert_error(
        add(
            &node(),
            &config_with(json!({ "mac": "c2:11:22" })),
            Some(seed_ipam_result()),
        ),
        999,
        "invalid args c2:11:22 for MAC addr: address c2:11:22: invalid MAC address",
    );
    let mut with_args = add_request(&seed_config(), Some(seed_ipam_result()));
    with_args.args = vec![("MAC".into(), "zz".into())];
    assert_error(
        Macvlan::handle(&node(), with_args),
        999,
        "invalid args zz for MAC addr: address zz: invalid MAC address",
    );
}

#[test]
fn unknown_cni_args_fail_unless_ignored() {
    let mut with_args = add_request(&seed_config(), Some(seed_ipam_result()));
    with_args.args = vec![("K8S_POD_NAME".into(), "pod".into())];
    assert_error(
        Macvlan::handle(&node(), with_args.clone()),
        7,
        "ARGS: unknown args [\"K8S_POD_NAME=pod\"]",
    );
    with_args.args.push(("IgnoreUnknown".into(), "1".into()));
    let plan = Macvlan::handle(&node(), with_args).unwrap();
    assert_eq!(create_op(&plan).mac, None);
}

#[test]
fn the_default_master_is_the_first_default_route_link_v4_then_v6() {
    let no_master = config_with(json!({ "master": null }));
    let v4_and_v6 = MockHost::new()
        .with_link(Netns::Host, "eth4", 1500)
        .with_link(Netns::Host, "eth6", 1500)
        .with_default_route(Netns::Host, IpFamily::V6, "eth6")
        .with_default_route(Netns::Host, IpFamily::V4, "eth4");
    let plan = add(&v4_and_v6, &no_master, Some(seed_ipam_result())).unwrap();
    assert_eq!(create_op(&plan).master, "eth4");

    let v6_only = MockHost::new()
        .with_link(Netns::Host, "eth6", 1500)
        .with_default_route(Netns::Host, IpFamily::V6, "eth6");
    let plan = add(&v6_only, &no_master, Some(seed_ipam_result())).unwrap();
    assert_eq!(create_op(&plan).master, "eth6");

    // An empty master counts as absent.
    let empty_master = config_with(json!({ "master": "" }));
    let plan = add(&v6_only, &empty_master, Some(seed_ipam_result())).unwrap();
    assert_eq!(create_op(&plan).master, "eth6");

    // A default route in the sandbox does not count without linkInContainer.
    let sandbox_route_only = MockHost::new()
        .with_link(Netns::Sandbox, "eth0", 1500)
        .with_default_route(Netns::Sandbox, IpFamily::V4, "eth0");
    assert_error(
        add(&sandbox_route_only, &no_master, Some(seed_ipam_result())),
        999,
        "no default route interface found",
    );
}

#[test]
fn the_default_master_bounds_the_mtu() {
    let host = MockHost::new()
        .with_link(Netns::Host, "eth4", 1400)
        .with_default_route(Netns::Host, IpFamily::V4, "eth4");
    assert_error(
        add(
            &host,
            &config_with(json!({ "master": null, "mtu": 1500 })),
            None,
        ),
        999,
        "invalid MTU 1500, must be [0, master MTU(1400)]",
    );
}

#[test]
fn a_missing_master_fails_with_the_reference_text() {
    assert_error(
        add(&MockHost::new(), &seed_config(), Some(seed_ipam_result())),
        999,
        "failed to lookup master \"ens3\": Link not found",
    );
    // A master of that name in the sandbox does not count without linkInContainer.
    let in_sandbox = MockHost::new().with_link(Netns::Sandbox, "ens3", 1500);
    assert_error(
        add(&in_sandbox, &seed_config(), Some(seed_ipam_result())),
        999,
        "failed to lookup master \"ens3\": Link not found",
    );
}

#[test]
fn link_in_container_looks_the_master_up_in_the_sandbox() {
    let host = MockHost::new()
        .with_link(Netns::Sandbox, "eth1", 9000)
        // A host link named like ifname is irrelevant when the link is
        // created inside the sandbox.
        .with_link(Netns::Host, "net1", 1500);
    let config = config_with(json!({ "master": "eth1", "linkInContainer": true, "mtu": 9000 }));
    let plan = add(&host, &config, Some(seed_ipam_result())).unwrap();
    assert_eq!(
        plan.ops[0],
        NetlinkOp::CreateMacvlan(CreateMacvlan {
            name: "net1".into(),
            master: "eth1".into(),
            master_in_sandbox: true,
            mode: MacvlanMode::Bridge,
            mtu: Some(9000),
            mac: None,
        })
    );
    assert!(
        !plan
            .ops
            .iter()
            .any(|op| matches!(op, NetlinkOp::RenameLink(_)))
    );

    assert_error(
        add(&node(), &config, Some(seed_ipam_result())),
        999,
        "failed to lookup master \"eth1\": Link not found",
    );

    let default_in_sandbox = MockHost::new()
        .with_link(Netns::Sandbox, "eth1", 1500)
        .with_default_route(Netns::Sandbox, IpFamily::V4, "eth1")
        .with_link(Netns::Host, "ens3", 1500)
        .with_default_route(Netns::Host, IpFamily::V4, "ens3");
    let config = config_with(json!({ "master": null, "linkInContainer": true }));
    let plan = add(&default_in_sandbox, &config, Some(seed_ipam_result())).unwrap();
    assert_eq!(create_op(&plan).master, "eth1");
    assert!(create_op(&plan).master_in_sandbox);
}

#[test]
fn a_host_link_named_like_ifname_makes_a_temporary_name_then_a_rename() {
    let host = node().with_link(Netns::Host, "net1", 1500);
    let plan = add(&host, &seed_config(), Some(seed_ipam_result())).unwrap();
    let temporary = candidate_name("dummy", "net1", 0);
    assert!(temporary.len() <= 15);
    assert_eq!(create_op(&plan).name, temporary);
    assert_eq!(
        plan.ops[1],
        NetlinkOp::RenameLink(guest_sdk::RenameLink {
            name: temporary.clone(),
            new_name: "net1".into(),
        })
    );
    // Everything after the rename uses the final name.
    assert_eq!(plan.ops[2], sysctl("net/ipv4/conf/net1/arp_notify", "1"));
    assert_eq!(plan.ops.len(), 7);
    assert_eq!(plan.cni_result.unwrap().interfaces[0].name, "net1");

    // Deterministic: the same attachment plans the same name.
    let again = add(&host, &seed_config(), Some(seed_ipam_result())).unwrap();
    assert_eq!(create_op(&again).name, temporary);
}

#[test]
fn an_ifname_already_in_the_sandbox_fails_before_any_op() {
    let host = node().with_link(Netns::Sandbox, "net1", 1500);
    assert_error(
        add(&host, &seed_config(), Some(seed_ipam_result())),
        999,
        "failed to rename macvlan to \"net1\": file exists",
    );
    assert_error(
        add(&host, &l2_config(), None),
        999,
        "failed to rename macvlan to \"net1\": file exists",
    );
}

#[test]
fn l2_mode_only_creates_and_sets_up() {
    for config in [l2_config(), config_with(json!({ "ipam": null }))] {
        // An IPAM result is ignored in L2 mode.
        let plan = add(&node(), &config, Some(seed_ipam_result())).unwrap();
        assert_eq!(plan.ops.len(), 2, "{config}");
        assert!(matches!(plan.ops[0], NetlinkOp::CreateMacvlan(_)));
        assert_eq!(plan.ops[1], up());
        let result = plan.cni_result.unwrap();
        assert!(result.ips.is_empty());
        assert!(result.routes.is_empty());
        assert_eq!(result.interfaces.len(), 1);
        assert_eq!(result.interfaces[0].sandbox.as_deref(), Some(NETNS));
    }
    let with_mac = config_with(json!({ "ipam": {}, "mac": "c2:11:22:33:44:55" }));
    let plan = add(&node(), &with_mac, None).unwrap();
    assert_eq!(
        plan.cni_result.unwrap().interfaces[0].mac.as_deref(),
        Some("c2:11:22:33:44:55")
    );
}

#[test]
fn layer3_without_ipam_ips_fails_with_missing_ip_config() {
    assert_error(
        add(&node(), &seed_config(), None),
        999,
        "IPAM plugin returned missing IP config",
    );
    assert_error(
        add(&node(), &seed_config(), Some(ipam_result(&[], vec![]))),
        999,
        "IPAM plugin returned missing IP config",
    );
}

#[test]
fn ipv6_addresses_enable_ipv6_before_the_addresses() {
    let ipv6 = ipam_result(
        &[("2001:db8:1::2/64", Some("2001:db8:1::1"))],
        vec![Route::new("::/0", None)],
    );
    let plan = add(&node(), &seed_config(), Some(ipv6)).unwrap();
    assert_eq!(
        plan.ops[1..],
        [
            sysctl("net/ipv4/conf/net1/arp_notify", "1"),
            sysctl("net/ipv6/conf/net1/ndisc_notify", "1"),
            sysctl("net/ipv6/conf/net1/disable_ipv6", "0"),
            sysctl("net/ipv6/conf/net1/keep_addr_on_down", "1"),
            address("2001:db8:1::2/64"),
            up(),
            route_op("::/0", Some("2001:db8:1::1")),
        ]
    );
    // IPv4 only: no IPv6 sysctls beyond ndisc_notify.
    let v4 = add(&node(), &seed_config(), Some(seed_ipam_result())).unwrap();
    assert!(!v4.ops.iter().any(|op| matches!(
        op,
        NetlinkOp::SetSysctl(SetSysctl { key, .. }) if key.ends_with("disable_ipv6")
    )));
}

#[test]
fn dual_stack_routes_take_the_gateway_of_their_family() {
    let dual = ipam_result(
        &[
            ("10.1.2.2/24", Some("10.1.2.1")),
            ("2001:db8:1::2/64", Some("2001:db8:1::1")),
        ],
        vec![
            Route::new("0.0.0.0/0", None),
            Route::new("::/0", None),
            Route::new("10.200.0.0/16", Some("10.1.2.254".into())),
            Route::new("2001:db8:2::/64", Some("2001:db8:3::1".into())),
        ],
    );
    let plan = add(&node(), &seed_config(), Some(dual)).unwrap();
    assert_eq!(
        plan.ops[1..],
        [
            sysctl("net/ipv4/conf/net1/arp_notify", "1"),
            sysctl("net/ipv6/conf/net1/ndisc_notify", "1"),
            sysctl("net/ipv6/conf/net1/disable_ipv6", "0"),
            sysctl("net/ipv6/conf/net1/keep_addr_on_down", "1"),
            address("10.1.2.2/24"),
            address("2001:db8:1::2/64"),
            up(),
            route_op("0.0.0.0/0", Some("10.1.2.1")),
            route_op("::/0", Some("2001:db8:1::1")),
            route_op("10.200.0.0/16", Some("10.1.2.254")),
            route_op("2001:db8:2::/64", Some("2001:db8:3::1")),
        ]
    );
    let result = plan.cni_result.unwrap();
    assert_eq!(result.ips.len(), 2);
    assert!(result.ips.iter().all(|ip| ip.interface_index == Some(0)));
    // The result keeps the IPAM routes as they were (no filled-in gateways).
    assert_eq!(result.routes[0], Route::new("0.0.0.0/0", None));
    assert_eq!(result.routes.len(), 4);
}

#[test]
fn route_gateway_falls_back_to_the_first_gateway_of_the_family_or_none() {
    let ipam = ipam_result(
        &[
            ("10.1.2.2/24", None),
            ("10.1.3.2/24", Some("10.1.3.1")),
            ("10.1.4.2/24", Some("10.1.4.1")),
        ],
        vec![
            Route::new("0.0.0.0/0", None),
            Route::new("::/0", None),
            Route::new("192.168.0.0/16", Some("10.1.2.254".into())),
        ],
    );
    let plan = add(&node(), &seed_config(), Some(ipam)).unwrap();
    let routes = routes_of(&plan);
    assert_eq!(routes[0].gateway.as_deref(), Some("10.1.3.1"));
    assert_eq!(routes[1].gateway, None);
    assert_eq!(routes[2].gateway.as_deref(), Some("10.1.2.254"));
    // No IPv6 address, so no IPv6 sysctls even with an IPv6 route.
    assert!(
        !plan
            .ops
            .contains(&sysctl("net/ipv6/conf/net1/disable_ipv6", "0"))
    );
}

#[test]
fn route_priority_table_and_scope_are_carried() {
    let mut detailed = Route::new("10.0.0.0/8", None);
    detailed.priority = Some(100);
    detailed.table = Some(42);
    detailed.scope = Some(253);
    let mut zeros = Route::new("10.1.0.0/16", None);
    zeros.priority = Some(0);
    zeros.table = Some(0);
    zeros.scope = Some(0);
    let mut host_scope = Route::new("10.2.0.0/16", None);
    host_scope.scope = Some(254);
    let mut site_scope = Route::new("10.3.0.0/16", None);
    site_scope.scope = Some(200);
    let ipam = ipam_result(
        &[("10.1.2.2/24", None)],
        vec![detailed.clone(), zeros, host_scope, site_scope],
    );
    let plan = add(&node(), &seed_config(), Some(ipam)).unwrap();
    let routes = routes_of(&plan);
    assert_eq!(
        *routes[0],
        AddRoute {
            link: "net1".into(),
            dst: "10.0.0.0/8".into(),
            gateway: None,
            metric: Some(100),
            table: Some(42),
            scope: Some(RouteScope::Link),
        }
    );
    assert_eq!(
        (routes[1].metric, routes[1].table, routes[1].scope),
        (None, None, Some(RouteScope::Universe))
    );
    assert_eq!(routes[2].scope, Some(RouteScope::Host));
    assert_eq!(routes[3].scope, Some(RouteScope::Site));
    // The result keeps the route's 1.1 fields.
    assert_eq!(plan.cni_result.unwrap().routes[0], detailed);

    let mut odd_scope = Route::new("10.0.0.0/8", None);
    odd_scope.scope = Some(7);
    assert_error(
        add(
            &node(),
            &seed_config(),
            Some(ipam_result(&[("10.1.2.2/24", None)], vec![odd_scope])),
        ),
        999,
        "IPAM result route \"10.0.0.0/8\" has unsupported scope 7",
    );
}

#[test]
fn malformed_ipam_results_are_rejected() {
    assert_error(
        add(
            &node(),
            &seed_config(),
            Some(ipam_result(&[("10.1.2.2", None)], vec![])),
        ),
        999,
        "IPAM result has an invalid address \"10.1.2.2\"",
    );
    assert_error(
        add(
            &node(),
            &seed_config(),
            Some(ipam_result(&[("10.1.2.2/24", Some("nope"))], vec![])),
        ),
        999,
        "IPAM result has an invalid gateway \"nope\"",
    );
    assert_error(
        add(
            &node(),
            &seed_config(),
            Some(ipam_result(
                &[("10.1.2.2/24", None)],
                vec![Route::new("default", None)],
            )),
        ),
        999,
        "IPAM result has an invalid route destination \"default\"",
    );
}

#[test]
fn dns_comes_from_the_config_never_from_ipam() {
    let mut ipam = seed_ipam_result();
    ipam.dns = Some(Dns {
        nameservers: vec!["192.0.2.53".into()],
        domain: None,
        search: Vec::new(),
        options: Vec::new(),
    });
    let plan = add(&node(), &seed_config(), Some(ipam.clone())).unwrap();
    assert_eq!(plan.cni_result.unwrap().dns, None);

    let with_dns = config_with(json!({
        "dns": { "nameservers": ["10.1.2.1"], "domain": "example.com", "search": ["example.com"] }
    }));
    let plan = add(&node(), &with_dns, Some(ipam.clone())).unwrap();
    assert_eq!(
        plan.cni_result.unwrap().dns,
        Some(Dns {
            nameservers: vec!["10.1.2.1".into()],
            domain: Some("example.com".into()),
            search: vec!["example.com".into()],
            options: Vec::new(),
        })
    );

    let empty_dns = config_with(json!({ "dns": {} }));
    let plan = add(&node(), &empty_dns, Some(ipam)).unwrap();
    assert_eq!(plan.cni_result.unwrap().dns, None);
}

#[test]
fn a_config_that_is_not_json_is_a_decoding_error() {
    let mut broken = request(Command::Add, "{not json");
    broken.ipam_result = Some(seed_ipam_result());
    let error = Macvlan::handle(&node(), broken).unwrap_err();
    assert_eq!(error.code, 6);
    assert!(
        error.msg.starts_with("failed to load netconf: "),
        "{}",
        error.msg
    );
}

// ---------------------------------------------------------------- DEL

#[test]
fn del_deletes_the_link_when_the_sandbox_has_it() {
    let host = MockHost::new().with_link(Netns::Sandbox, "net1", 1500);
    let plan = Macvlan::handle(&host, request(Command::Del, &seed_config().to_string())).unwrap();
    assert_eq!(plan.ops, vec![NetlinkOp::DeleteLink("net1".into())]);
    assert_eq!(plan.cni_result, None);
}

#[test]
fn del_is_idempotent_and_needs_neither_master_nor_config() {
    // Link already gone: nothing to do.
    let plan = Macvlan::handle(&node(), request(Command::Del, &seed_config().to_string())).unwrap();
    assert_eq!(plan, Plan::empty());

    // No netns: nothing to do, even if a link of that name exists somewhere.
    let host = MockHost::new().with_link(Netns::Sandbox, "net1", 1500);
    let mut no_netns = request(Command::Del, &seed_config().to_string());
    no_netns.netns = String::new();
    assert_eq!(Macvlan::handle(&host, no_netns).unwrap(), Plan::empty());

    // The master is gone and the config does not even parse: still deleted.
    let plan = Macvlan::handle(&host, request(Command::Del, "{not json")).unwrap();
    assert_eq!(plan.ops, vec![NetlinkOp::DeleteLink("net1".into())]);
}

// ---------------------------------------------------------------- CHECK

const MAC: &str = "c2:11:22:33:44:55";

fn prev_result() -> CniResult {
    CniResult {
        interfaces: vec![InterfaceInfo {
            name: "net1".into(),
            mac: Some(MAC.into()),
            mtu: None,
            sandbox: Some(NETNS.into()),
        }],
        ips: vec![IpConfig {
            interface_index: Some(0),
            address: "192.168.1.200/24".into(),
            gateway: Some("192.168.1.1".into()),
        }],
        routes: vec![
            Route::new("0.0.0.0/0", None),
            Route::new("10.200.0.0/16", Some("192.168.1.254".into())),
        ],
        dns: None,
    }
}

/// The sandbox as the seed ADD left it.
fn kernel_routes() -> Vec<Route> {
    vec![
        Route::new("0.0.0.0/0", Some("192.168.1.1".into())),
        Route::new("192.168.1.0/24", None),
        Route::new("10.200.0.0/16", Some("192.168.1.254".into())),
    ]
}

fn configured_node(mode: MacvlanMode, addresses: &[&str], routes: Vec<Route>) -> MockHost {
    node().with_macvlan("net1", mode, MAC, addresses, routes)
}

fn healthy_node() -> MockHost {
    configured_node(MacvlanMode::Bridge, &["192.168.1.200/24"], kernel_routes())
}

fn check_with(
    host: &MockHost,
    config: &Value,
    prev: Option<CniResult>,
) -> Result<Plan, PluginError> {
    let mut check = request(Command::Check, &config.to_string());
    check.prev_result = prev;
    Macvlan::handle(host, check)
}

#[test]
fn check_passes_on_what_add_made() {
    let plan = check_with(&healthy_node(), &seed_config(), Some(prev_result())).unwrap();
    assert_eq!(plan, Plan::empty());
    // A MAC in another case still matches; a route with host bits matches its network.
    let mut prev = prev_result();
    prev.interfaces[0].mac = Some(MAC.to_uppercase());
    prev.routes.push(Route::new("10.200.1.1/16", None));
    assert!(check_with(&healthy_node(), &seed_config(), Some(prev)).is_ok());
}

#[test]
fn check_requires_a_prev_result() {
    assert_error(
        check_with(&healthy_node(), &seed_config(), None),
        999,
        "required prevResult missing",
    );
}

#[test]
fn check_resolves_the_config_first() {
    assert_error(
        check_with(&MockHost::new(), &seed_config(), Some(prev_result())),
        999,
        "failed to lookup master \"ens3\": Link not found",
    );
    assert_error(
        check_with(
            &healthy_node(),
            &config_with(json!({ "mtu": 9000 })),
            Some(prev_result()),
        ),
        999,
        "invalid MTU 9000, must be [0, master MTU(1500)]",
    );
}

#[test]
fn check_needs_the_interface_in_prev_result_with_our_sandbox() {
    let mut other_sandbox = prev_result();
    other_sandbox.interfaces[0].sandbox = Some("/var/run/netns/other".into());
    assert_error(
        check_with(&healthy_node(), &seed_config(), Some(other_sandbox)),
        999,
        "sandbox in prevResult  doesn't match configured netns: /var/run/netns/test",
    );
    let mut other_name = prev_result();
    other_name.interfaces[0].name = "net2".into();
    assert_error(
        check_with(&healthy_node(), &seed_config(), Some(other_name)),
        999,
        "sandbox in prevResult  doesn't match configured netns: /var/run/netns/test",
    );
}

#[test]
fn check_fails_when_the_link_is_gone_or_not_a_macvlan() {
    assert_error(
        check_with(&node(), &seed_config(), Some(prev_result())),
        999,
        "container Interface name in prevResult: net1 not found",
    );
    let veth = node().with_link(Netns::Sandbox, "net1", 1500);
    assert_error(
        check_with(&veth, &seed_config(), Some(prev_result())),
        999,
        "error: Container interface net1 not of type macvlan",
    );
}

#[test]
fn check_fails_on_a_mode_mismatch() {
    let private = configured_node(MacvlanMode::Private, &["192.168.1.200/24"], kernel_routes());
    assert_error(
        check_with(&private, &seed_config(), Some(prev_result())),
        999,
        "container macvlan mode private does not match expected value: bridge",
    );
    assert!(
        check_with(
            &private,
            &config_with(json!({ "mode": "private" })),
            Some(prev_result())
        )
        .is_ok()
    );
}

#[test]
fn check_fails_on_a_mac_mismatch_unless_prev_result_has_none() {
    let mut prev = prev_result();
    prev.interfaces[0].mac = Some("c2:00:00:00:00:99".into());
    assert_error(
        check_with(&healthy_node(), &seed_config(), Some(prev.clone())),
        999,
        "interface net1 Mac c2:00:00:00:00:99 doesn't match container Mac: c2:11:22:33:44:55",
    );
    prev.interfaces[0].mac = None;
    assert!(check_with(&healthy_node(), &seed_config(), Some(prev)).is_ok());
}

#[test]
fn check_fails_when_an_address_or_its_prefix_route_is_missing() {
    let no_address = configured_node(MacvlanMode::Bridge, &[], kernel_routes());
    assert_error(
        check_with(&no_address, &seed_config(), Some(prev_result())),
        999,
        "Failed to match addr 192.168.1.200/24 on interface net1",
    );
    let other_prefix = configured_node(MacvlanMode::Bridge, &["192.168.1.200/25"], kernel_routes());
    assert_error(
        check_with(&other_prefix, &seed_config(), Some(prev_result())),
        999,
        "Failed to match addr 192.168.1.200/24 on interface net1",
    );
    let no_prefix_route = configured_node(
        MacvlanMode::Bridge,
        &["192.168.1.200/24"],
        vec![
            Route::new("0.0.0.0/0", Some("192.168.1.1".into())),
            Route::new("10.200.0.0/16", Some("192.168.1.254".into())),
        ],
    );
    assert_error(
        check_with(&no_prefix_route, &seed_config(), Some(prev_result())),
        999,
        "Failed to find Gateway 192.168.1.1 for interface net1",
    );
}

#[test]
fn check_fails_when_a_route_is_missing_or_has_another_gateway() {
    let no_default = configured_node(
        MacvlanMode::Bridge,
        &["192.168.1.200/24"],
        vec![
            Route::new("192.168.1.0/24", None),
            Route::new("10.200.0.0/16", Some("192.168.1.254".into())),
        ],
    );
    assert_error(
        check_with(&no_default, &seed_config(), Some(prev_result())),
        999,
        "Expected Route 0.0.0.0/0 not found in routing table",
    );
    let other_gateway = configured_node(
        MacvlanMode::Bridge,
        &["192.168.1.200/24"],
        vec![
            Route::new("0.0.0.0/0", Some("192.168.1.1".into())),
            Route::new("192.168.1.0/24", None),
            Route::new("10.200.0.0/16", Some("192.168.1.253".into())),
        ],
    );
    assert_error(
        check_with(&other_gateway, &seed_config(), Some(prev_result())),
        999,
        "Expected Route 10.200.0.0/16 via 192.168.1.254 not found in routing table",
    );
    // A default route matches whatever its gateway, as in the reference.
    let mut prev = prev_result();
    prev.routes[0].gw = Some("192.168.1.99".into());
    assert!(check_with(&healthy_node(), &seed_config(), Some(prev)).is_ok());
}

// ---------------------------------------------------------------- STATUS, GC

#[test]
fn status_and_gc_return_empty_plans_without_reading_anything() {
    for command in [Command::Status, Command::Gc] {
        let plan = Macvlan::handle(&MockHost::new(), request(command, "{not json")).unwrap();
        assert_eq!(plan, Plan::empty());
    }
}
