//! Native tests of the whole plugin against `MockHost`, mirroring the
//! reference's `static_test.go`.

use guest_sdk::testing::{MockHost, request};
use guest_sdk::{CniResult, Command, Dns, IpConfig, Ipam, PluginError, Request, Route};
use serde_json::{Value, json};

use crate::Static;
use crate::conf::supports_multiple_ips;

const VERSIONS: &[&str] = &[
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

fn config(version: &str, ipam: Value) -> Value {
    json!({
        "cniVersion": version,
        "name": "mynet",
        "type": "macvlan",
        "master": "foo0",
        "ipam": ipam
    })
}

fn add_request(config: &Value, args: &[(&str, &str)]) -> Request {
    let mut add = request(Command::Add, &config.to_string());
    add.args = args
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    add
}

fn add(config: &Value, args: &[(&str, &str)]) -> Result<Option<CniResult>, PluginError> {
    Static::handle(&MockHost::new(), add_request(config, args))
}

fn ip(address: &str, gateway: Option<&str>) -> IpConfig {
    IpConfig {
        interface_index: None,
        address: address.into(),
        gateway: gateway.map(String::from),
    }
}

fn route(dst: &str, gw: Option<&str>) -> Route {
    Route::new(dst, gw.map(String::from))
}

fn assert_error(result: Result<Option<CniResult>, PluginError>, msg: &str) {
    match result {
        Ok(value) => panic!("expected error {msg:?}, got {value:?}"),
        Err(error) => {
            assert_eq!(error.msg, msg);
            assert_eq!(error.code, 999, "code of {msg:?}");
        }
    }
}

fn two_address_ipam() -> Value {
    json!({
        "type": "static",
        "addresses": [
            { "address": "10.10.0.1/24", "gateway": "10.10.0.254" },
            { "address": "3ffe:ffff:0:01ff::1/64", "gateway": "3ffe:ffff:0::1" }
        ],
        "routes": [
            { "dst": "0.0.0.0/0" },
            { "dst": "192.168.0.0/16", "gw": "10.10.5.1" },
            { "dst": "3ffe:ffff:0:01ff::1/64" }
        ],
        "dns": {
            "nameservers": ["8.8.8.8"],
            "domain": "example.com",
            "search": ["example.com"]
        }
    })
}

#[test]
fn add_returns_configured_addresses_routes_and_dns() {
    for version in VERSIONS {
        let result = add(&config(version, two_address_ipam()), &[])
            .unwrap()
            .unwrap();
        assert_eq!(
            result,
            CniResult {
                interfaces: Vec::new(),
                ips: vec![
                    ip("10.10.0.1/24", Some("10.10.0.254")),
                    ip("3ffe:ffff:0:1ff::1/64", Some("3ffe:ffff::1")),
                ],
                routes: vec![
                    route("0.0.0.0/0", None),
                    route("192.168.0.0/16", Some("10.10.5.1")),
                    route("3ffe:ffff:0:1ff::1/64", None),
                ],
                dns: Some(Dns {
                    nameservers: vec!["8.8.8.8".into()],
                    domain: Some("example.com".into()),
                    search: vec!["example.com".into()],
                    options: Vec::new(),
                }),
            },
            "version {version}"
        );
    }
}

#[test]
fn add_keeps_ecmp_routes_and_route_details() {
    let ipam = json!({
        "type": "static",
        "addresses": [{ "address": "10.10.0.1/24", "gateway": "10.10.0.254" }],
        "routes": [
            { "dst": "0.0.0.0/0", "gw": "10.10.0.254" },
            { "dst": "0.0.0.0/0", "gw": "10.10.0.253" },
            { "dst": "10.20.0.0/16", "mtu": 1400, "advmss": 1360, "priority": 10, "table": 100, "scope": 253 },
            { "dst": "10.30.0.0/16", "mtu": 0, "priority": 0, "table": 0 }
        ]
    });
    let result = add(&config("1.1.0", ipam), &[]).unwrap().unwrap();
    let mut detailed = route("10.20.0.0/16", None);
    detailed.mtu = Some(1400);
    detailed.advmss = Some(1360);
    detailed.priority = Some(10);
    detailed.table = Some(100);
    detailed.scope = Some(253);
    let mut zeros = route("10.30.0.0/16", None);
    zeros.table = Some(0);
    assert_eq!(
        result.routes,
        vec![
            route("0.0.0.0/0", Some("10.10.0.254")),
            route("0.0.0.0/0", Some("10.10.0.253")),
            detailed,
            zeros,
        ]
    );
    // No dns configured: none in the result.
    assert_eq!(result.dns, None);
}

#[test]
fn no_addresses_gives_an_empty_allocation() {
    let result = add(&config("1.0.0", json!({ "type": "static" })), &[])
        .unwrap()
        .unwrap();
    assert_eq!(result, CniResult::empty());
}

#[test]
fn del_gc_and_status_do_nothing_and_static_keeps_no_state() {
    let host = MockHost::new();
    for command in [Command::Del, Command::Gc, Command::Status] {
        let reply = Static::handle(&host, request(command, "{not json")).unwrap();
        assert_eq!(reply, None, "{command:?}");
    }
    // Unknown container on DEL with a full config: still fine.
    let mut del = request(
        Command::Del,
        &config("1.0.0", two_address_ipam()).to_string(),
    );
    del.container_id = "unknown".into();
    assert_eq!(Static::handle(&host, del).unwrap(), None);
    let added = Static::handle(
        &host,
        add_request(&config("1.0.0", two_address_ipam()), &[]),
    );
    assert!(added.unwrap().is_some());
    assert!(host.store().is_empty());
}

#[test]
fn cni_args_ip_and_gateway_add_an_address() {
    let static_only = json!({ "type": "static", "routes": [{ "dst": "0.0.0.0/0" }] });
    for version in VERSIONS {
        let result = add(
            &config(version, static_only.clone()),
            &[("IP", "10.10.0.1/24"), ("GATEWAY", "10.10.0.254")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(result.ips, vec![ip("10.10.0.1/24", Some("10.10.0.254"))]);
        assert_eq!(result.routes, vec![route("0.0.0.0/0", None)]);
    }
}

#[test]
fn cni_args_gateway_goes_to_each_address_whose_subnet_contains_it() {
    let static_only = json!({ "type": "static" });
    for version in VERSIONS {
        let outcome = add(
            &config(version, static_only.clone()),
            &[
                ("IP", "10.10.0.1/24, 11.11.0.1/24"),
                ("GATEWAY", "10.10.0.254"),
            ],
        );
        if !supports_multiple_ips(version) {
            assert_error(
                outcome,
                &format!("CNI version {version} does not support more than 1 address per family"),
            );
            continue;
        }
        assert_eq!(
            outcome.unwrap().unwrap().ips,
            vec![
                ip("10.10.0.1/24", Some("10.10.0.254")),
                ip("11.11.0.1/24", None),
            ],
            "version {version}"
        );
    }
    // Several gateways, one per family; the later match wins.
    let result = add(
        &config("1.0.0", static_only),
        &[
            ("IP", "10.10.0.1/24,2001:db8::5/64"),
            ("GATEWAY", "10.10.0.254,2001:db8::1,10.10.0.253"),
        ],
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        result.ips,
        vec![
            ip("10.10.0.1/24", Some("10.10.0.253")),
            ip("2001:db8::5/64", Some("2001:db8::1")),
        ]
    );
}

#[test]
fn cni_args_ip_is_appended_to_configured_addresses_and_gateway_skips_them() {
    // The reference parses configured addresses only after CNI_ARGS, so a
    // GATEWAY never reaches them.
    let ipam = json!({
        "type": "static",
        "addresses": [{ "address": "10.10.0.1/24" }]
    });
    let result = add(
        &config("1.0.0", ipam),
        &[("IP", "10.10.0.2/24"), ("GATEWAY", "10.10.0.254")],
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        result.ips,
        vec![
            ip("10.10.0.1/24", None),
            ip("10.10.0.2/24", Some("10.10.0.254")),
        ]
    );
}

#[test]
fn cni_args_need_known_keys_unless_ignore_unknown() {
    let static_only = config("1.0.0", json!({ "type": "static" }));
    let error = add(&static_only, &[("K8S_POD_NAME", "pod")]).unwrap_err();
    assert_eq!(error.msg, "ARGS: unknown args [\"K8S_POD_NAME=pod\"]");
    let result = add(
        &static_only,
        &[
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAME", "pod"),
            ("IP", "10.10.0.1/24"),
        ],
    )
    .unwrap()
    .unwrap();
    assert_eq!(result.ips, vec![ip("10.10.0.1/24", None)]);
}

#[test]
fn runtime_config_ips_replace_configured_addresses() {
    for key in ["runtimeConfig", "RuntimeConfig"] {
        let mut conf = config("1.0.0", two_address_ipam());
        conf["capabilities"] = json!({ "ips": true });
        conf[key] = json!({ "ips": ["10.10.0.9/24", "3ffe:ffff:0:01ff::9/64"] });
        let result = add(&conf, &[]).unwrap().unwrap();
        assert_eq!(
            result.ips,
            vec![ip("10.10.0.9/24", None), ip("3ffe:ffff:0:1ff::9/64", None)],
            "{key}"
        );
        // Routes and dns still come from the config.
        assert_eq!(result.routes.len(), 3);
        assert!(result.dns.is_some());
    }
}

#[test]
fn args_cni_ips_replace_configured_addresses() {
    let mut conf = config("1.0.0", two_address_ipam());
    conf["args"] = json!({ "cni": { "ips": ["10.10.0.8/24", "3ffe:ffff:0:01ff::8/64"] } });
    let result = add(&conf, &[]).unwrap().unwrap();
    assert_eq!(
        result.ips,
        vec![ip("10.10.0.8/24", None), ip("3ffe:ffff:0:1ff::8/64", None)]
    );
}

#[test]
fn precedence_is_runtime_config_then_args_then_cni_args() {
    let mut conf = config("1.0.0", json!({ "type": "static" }));
    conf["runtimeConfig"] = json!({ "ips": ["10.10.0.1/24", "3ffe:ffff:0:01ff::1/64"] });
    conf["args"] = json!({ "cni": { "ips": ["10.10.0.2/24", "3ffe:ffff:0:01ff::2/64"] } });
    let cni_args = [
        ("IP", "10.10.0.3/24,11.11.0.3/24"),
        ("GATEWAY", "10.10.0.254"),
    ];
    let result = add(&conf, &cni_args).unwrap().unwrap();
    assert_eq!(
        result.ips,
        vec![ip("10.10.0.1/24", None), ip("3ffe:ffff:0:1ff::1/64", None)]
    );

    // Without runtimeConfig, args.cni.ips win over CNI_ARGS (and drop their gateway).
    conf.as_object_mut().unwrap().remove("runtimeConfig");
    let result = add(&conf, &cni_args).unwrap().unwrap();
    assert_eq!(
        result.ips,
        vec![ip("10.10.0.2/24", None), ip("3ffe:ffff:0:1ff::2/64", None)]
    );

    // Empty lists do not replace anything.
    conf["args"] = json!({ "cni": { "ips": [] } });
    conf["runtimeConfig"] = json!({ "ips": [] });
    let result = add(&conf, &cni_args).unwrap().unwrap();
    assert_eq!(
        result.ips,
        vec![
            ip("10.10.0.3/24", Some("10.10.0.254")),
            ip("11.11.0.3/24", None)
        ]
    );
}

#[test]
fn a_missing_ipam_key_is_an_error_whatever_else_is_set() {
    let no_ipam = json!({ "cniVersion": "1.0.0", "name": "mynet", "type": "macvlan" });
    assert_error(
        add(
            &no_ipam,
            &[("IP", "10.10.0.1/24"), ("GATEWAY", "10.10.0.254")],
        ),
        "IPAM config missing 'ipam' key",
    );
    let mut with_runtime = no_ipam.clone();
    with_runtime["runtimeConfig"] = json!({ "ips": ["10.10.0.1/24"] });
    assert_error(add(&with_runtime, &[]), "IPAM config missing 'ipam' key");
    let mut null_ipam = no_ipam;
    null_ipam["ipam"] = Value::Null;
    assert_error(add(&null_ipam, &[]), "IPAM config missing 'ipam' key");
}

#[test]
fn invalid_cidrs_are_reported_per_source() {
    let bare = "10.10.0.1";
    assert_error(
        add(
            &config(
                "1.0.0",
                json!({ "type": "static", "addresses": [{ "address": bare }] }),
            ),
            &[],
        ),
        "the 'address' field is expected to be in CIDR notation, got: '10.10.0.1'",
    );
    assert_error(
        add(
            &config("1.0.0", json!({ "type": "static", "addresses": [{}] })),
            &[],
        ),
        "the 'address' field is expected to be in CIDR notation, got: ''",
    );
    let static_only = config("1.0.0", json!({ "type": "static" }));
    assert_error(
        add(&static_only, &[("IP", bare)]),
        "the 'ip' field is expected to be in CIDR notation, got: '10.10.0.1'",
    );
    let mut with_args = static_only.clone();
    with_args["args"] = json!({ "cni": { "ips": [bare] } });
    assert_error(
        add(&with_args, &[]),
        "an entry in the 'ips' field is NOT in CIDR notation, got: '10.10.0.1'",
    );
    let mut with_runtime = static_only;
    with_runtime["RuntimeConfig"] = json!({ "ips": [bare] });
    assert_error(
        add(&with_runtime, &[]),
        "an entry in the 'ips' field is NOT in CIDR notation, got: '10.10.0.1'",
    );
}

#[test]
fn a_replaced_configured_address_is_never_validated() {
    let mut conf = config(
        "1.0.0",
        json!({ "type": "static", "addresses": [{ "address": "not-a-cidr" }] }),
    );
    conf["runtimeConfig"] = json!({ "ips": ["10.10.0.1/24"] });
    let result = add(&conf, &[]).unwrap().unwrap();
    assert_eq!(result.ips, vec![ip("10.10.0.1/24", None)]);
}

#[test]
fn invalid_gateways_and_routes_are_rejected() {
    let static_only = config("1.0.0", json!({ "type": "static" }));
    assert_error(
        add(
            &static_only,
            &[("IP", "10.10.0.1/24"), ("GATEWAY", " nope")],
        ),
        "invalid gateway address:  nope",
    );
    assert_error(
        add(
            &config(
                "1.0.0",
                json!({ "type": "static", "addresses": [{ "address": "10.10.0.1/24", "gateway": "10.10.0" }] }),
            ),
            &[],
        ),
        "invalid IP address: 10.10.0",
    );
    // An empty configured gateway means none.
    let result = add(
        &config(
            "1.0.0",
            json!({ "type": "static", "addresses": [{ "address": "10.10.0.1/24", "gateway": "" }] }),
        ),
        &[],
    )
    .unwrap()
    .unwrap();
    assert_eq!(result.ips, vec![ip("10.10.0.1/24", None)]);
    assert_error(
        add(
            &config(
                "1.0.0",
                json!({ "type": "static", "routes": [{ "dst": "10.0.0.0" }] }),
            ),
            &[],
        ),
        "invalid CIDR address: 10.0.0.0",
    );
    assert_error(
        add(
            &config(
                "1.0.0",
                json!({ "type": "static", "routes": [{ "dst": "10.0.0.0/8", "gw": "x" }] }),
            ),
            &[],
        ),
        "invalid IP address: x",
    );
}

#[test]
fn old_versions_allow_one_address_per_family() {
    let dual = json!({
        "type": "static",
        "addresses": [
            { "address": "10.10.0.1/24" },
            { "address": "3ffe:ffff:0:01ff::1/64" }
        ]
    });
    for version in ["", "0.1.0", "0.2.0"] {
        let result = add(&config(version, dual.clone()), &[]).unwrap().unwrap();
        assert_eq!(result.ips.len(), 2, "version {version:?}");
    }
    let two_v6 = json!({
        "type": "static",
        "addresses": [
            { "address": "3ffe:ffff:0:01ff::1/64" },
            { "address": "3ffe:ffff:0:01ff::2/64" }
        ]
    });
    assert_error(
        add(&config("0.2.0", two_v6.clone()), &[]),
        "CNI version 0.2.0 does not support more than 1 address per family",
    );
    assert_eq!(
        add(&config("0.3.0", two_v6), &[])
            .unwrap()
            .unwrap()
            .ips
            .len(),
        2
    );
}

#[test]
fn version_comparison_follows_the_cni_library() {
    for (version, expected) in [
        ("", false),
        ("0.1.0", false),
        ("0.2.0", false),
        ("0.2.9", false),
        ("0.3.0", true),
        ("0.3", true),
        ("0.4.0", true),
        ("1", true),
        ("1.1.0", true),
        ("x.y", false),
        ("1.0.0.0", false),
    ] {
        assert_eq!(supports_multiple_ips(version), expected, "{version:?}");
    }
}

#[test]
fn a_config_that_is_not_json_is_a_decoding_error() {
    let error = Static::handle(&MockHost::new(), request(Command::Add, "{not json")).unwrap_err();
    assert_eq!(error.code, 6);
}

// ---------------------------------------------------------------- CHECK

fn check(config: &Value, prev: Option<CniResult>) -> Result<Option<CniResult>, PluginError> {
    let mut check = request(Command::Check, &config.to_string());
    check.prev_result = prev;
    Static::handle(&MockHost::new(), check)
}

fn prev_with(ips: Vec<IpConfig>) -> CniResult {
    CniResult {
        ips,
        ..CniResult::empty()
    }
}

#[test]
fn check_passes_when_prev_result_carries_the_configured_gateways() {
    let conf = config("1.0.0", two_address_ipam());
    let prev = add(&conf, &[]).unwrap();
    assert_eq!(check(&conf, prev).unwrap(), None);
    // Spelled differently but the same addresses.
    let spelled = prev_with(vec![
        ip("10.10.0.1/24", Some("10.10.0.254")),
        ip("3ffe:ffff:0:01ff::1/64", Some("3ffe:ffff:0:0::1")),
    ]);
    assert_eq!(check(&conf, Some(spelled)).unwrap(), None);
}

#[test]
fn check_requires_a_prev_result_after_a_valid_config() {
    assert_error(
        check(&config("1.0.0", two_address_ipam()), None),
        "Required prevResult missing",
    );
    // A config error is reported first.
    assert_error(
        check(&json!({ "cniVersion": "1.0.0", "name": "mynet" }), None),
        "IPAM config missing 'ipam' key",
    );
}

#[test]
fn check_fails_when_a_configured_gateway_differs() {
    let conf = config("1.0.0", two_address_ipam());
    let prev = prev_with(vec![
        ip("10.10.0.1/24", Some("10.10.0.254")),
        ip("3ffe:ffff:0:1ff::1/64", Some("3ffe:ffff::2")),
    ]);
    assert_error(
        check(&conf, Some(prev)),
        "static: Failed to match addr 3ffe:ffff:0:1ff::1 on interface net1",
    );
    let no_gateway = prev_with(vec![ip("10.10.0.1/24", None)]);
    assert_error(
        check(&conf, Some(no_gateway)),
        "static: Failed to match addr 10.10.0.1 on interface net1",
    );
}

#[test]
fn check_ignores_absent_addresses_and_unconfigured_gateways() {
    let conf = config("1.0.0", two_address_ipam());
    // Neither configured address is in prevResult: nothing to compare.
    let unrelated = prev_with(vec![ip("192.0.2.1/24", Some("192.0.2.254"))]);
    assert_eq!(check(&conf, Some(unrelated)).unwrap(), None);
    // No gateway configured: any gateway in prevResult is fine.
    let no_gateway_conf = config(
        "1.0.0",
        json!({ "type": "static", "addresses": [{ "address": "10.10.0.1/24" }] }),
    );
    let other_gateway = prev_with(vec![ip("10.10.0.1/24", Some("10.10.0.1"))]);
    assert_eq!(check(&no_gateway_conf, Some(other_gateway)).unwrap(), None);
}
