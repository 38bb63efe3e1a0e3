//! Whole-plugin tests against the SDK's mock host: the upstream host-local
//! and allocator test tables, the reference's observed behaviour, and the
//! store layout the reference binary shares.

use std::cell::RefCell;
use std::collections::BTreeMap;

use guest_sdk::testing::{self, MockHost};
use guest_sdk::{
    Attachment, CniResult, Command, Dns, Host, IpFamily, Ipam, IpamHost, Level, LinkInfo, Netns,
    PluginError, Request, Route,
};

use crate::HostLocal;

const IFNAME: &str = "eth0";

/// A full network configuration around an `ipam` object.
fn net(ipam: &str) -> String {
    net_with("1.0.0", ipam)
}

fn net_with(cni_version: &str, ipam: &str) -> String {
    format!(
        r#"{{"cniVersion":"{cni_version}","name":"mynet","type":"macvlan","master":"foo0","ipam":{ipam}}}"#
    )
}

fn call(
    host: &dyn IpamHost,
    command: Command,
    config: &str,
    container_id: &str,
    ifname: &str,
) -> Result<Option<CniResult>, PluginError> {
    let mut request: Request = testing::request(command, config);
    request.container_id = container_id.into();
    request.ifname = ifname.into();
    HostLocal::handle(host, request)
}

fn add(host: &dyn IpamHost, config: &str, container_id: &str) -> Result<CniResult, PluginError> {
    add_on(host, config, container_id, IFNAME)
}

fn add_on(
    host: &dyn IpamHost,
    config: &str,
    container_id: &str,
    ifname: &str,
) -> Result<CniResult, PluginError> {
    let result = call(host, Command::Add, config, container_id, ifname)?;
    Ok(result.expect("ADD returns a result"))
}

fn add_with_args(
    host: &dyn IpamHost,
    config: &str,
    container_id: &str,
    args: &[(&str, &str)],
) -> Result<CniResult, PluginError> {
    let mut request = testing::request(Command::Add, config);
    request.container_id = container_id.into();
    request.ifname = IFNAME.into();
    request.args = args
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    Ok(HostLocal::handle(host, request)?.expect("ADD returns a result"))
}

fn del(host: &dyn IpamHost, config: &str, container_id: &str) -> Result<(), PluginError> {
    del_on(host, config, container_id, IFNAME)
}

fn del_on(
    host: &dyn IpamHost,
    config: &str,
    container_id: &str,
    ifname: &str,
) -> Result<(), PluginError> {
    let result = call(host, Command::Del, config, container_id, ifname)?;
    assert_eq!(result, None, "DEL returns no result");
    Ok(())
}

/// The addresses of a result, with prefix.
fn addresses(result: &CniResult) -> Vec<String> {
    result.ips.iter().map(|ip| ip.address.clone()).collect()
}

fn single_address(result: Result<CniResult, PluginError>) -> String {
    let result = result.expect("ADD succeeds");
    assert_eq!(result.ips.len(), 1, "one address: {:?}", result.ips);
    result.ips[0].address.clone()
}

fn store(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn host_with(entries: &[(&str, &str)]) -> MockHost {
    entries.iter().fold(MockHost::new(), |host, (key, value)| {
        host.with_store_entry(key, value)
    })
}

/// `ranges` with one range set made of plain subnets.
fn subnets_ipam(subnets: &[&str]) -> String {
    let ranges: Vec<String> = subnets
        .iter()
        .map(|subnet| format!(r#"{{"subnet":"{subnet}"}}"#))
        .collect();
    format!(
        r#"{{"type":"host-local","ranges":[[{}]]}}"#,
        ranges.join(",")
    )
}

#[test]
fn seed_range_hands_out_200_201_202_in_reference_format() {
    let config = net(
        r#"{"type":"host-local","subnet":"192.168.1.0/24","rangeStart":"192.168.1.200",
            "rangeEnd":"192.168.1.216","gateway":"192.168.1.1"}"#,
    );
    let host = MockHost::new();
    let first = add(&host, &config, "pod-a").expect("first ADD");
    assert_eq!(
        first,
        CniResult {
            interfaces: Vec::new(),
            ips: vec![guest_sdk::IpConfig {
                interface_index: None,
                address: "192.168.1.200/24".into(),
                gateway: Some("192.168.1.1".into()),
            }],
            routes: Vec::new(),
            dns: None,
        }
    );
    assert_eq!(
        single_address(add(&host, &config, "pod-b")),
        "192.168.1.201/24"
    );
    assert_eq!(
        single_address(add(&host, &config, "pod-c")),
        "192.168.1.202/24"
    );
    assert_eq!(
        host.store(),
        store(&[
            ("192.168.1.200", "pod-a\r\neth0"),
            ("192.168.1.201", "pod-b\r\neth0"),
            ("192.168.1.202", "pod-c\r\neth0"),
            ("last_reserved_ip.0", "192.168.1.202"),
        ])
    );
}

/// The allocator's round-robin table: (subnets, taken, last reserved, expected).
#[test]
fn round_robin_table() {
    let cases: &[(&[&str], &[&str], &str, &str)] = &[
        // fresh start
        (&["10.0.0.0/29"], &[], "", "10.0.0.2"),
        (&["2001:db8:1::0/64"], &[], "", "2001:db8:1::2"),
        (&["10.0.0.0/30"], &[], "", "10.0.0.2"),
        (&["10.0.0.0/29"], &["10.0.0.2"], "", "10.0.0.3"),
        // the address after the last reserved one
        (&["10.0.0.0/29"], &[], "10.0.0.5", "10.0.0.6"),
        (
            &["10.0.0.0/29"],
            &["10.0.0.4", "10.0.0.5"],
            "10.0.0.3",
            "10.0.0.6",
        ),
        // round to the beginning
        (&["10.0.0.0/29"], &["10.0.0.6"], "10.0.0.5", "10.0.0.2"),
        // a last address outside the range is ignored
        (&["10.0.0.0/29"], &["10.0.0.2"], "10.0.0.128", "10.0.0.3"),
        // full except the last address itself: wrap and take it
        (
            &["10.0.0.0/29"],
            &["10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"],
            "10.0.0.3",
            "10.0.0.3",
        ),
        // several subnets in one set
        (&["10.0.0.0/30", "10.0.1.0/30"], &[], "", "10.0.0.2"),
        (&["10.0.0.0/30", "10.0.1.0/30"], &[], "10.0.0.2", "10.0.1.2"),
        (
            &["10.0.0.0/30", "10.0.1.0/30", "10.0.2.0/30"],
            &[],
            "10.0.2.2",
            "10.0.0.2",
        ),
    ];
    for (index, (subnets, taken, last, expected)) in cases.iter().enumerate() {
        let mut entries: Vec<(&str, &str)> = taken.iter().map(|ip| (*ip, "id")).collect();
        if !last.is_empty() {
            entries.push(("last_reserved_ip.0", last));
        }
        let host = host_with(&entries);
        let result = add(&host, &net(&subnets_ipam(subnets)), "ID")
            .unwrap_or_else(|err| panic!("case {index}: {}", err.msg));
        let address = result.ips[0].address.split('/').next().unwrap_or_default();
        assert_eq!(address, *expected, "case {index}");

        let mut expected_store = store(&entries);
        expected_store.insert(expected.to_string(), "ID\r\neth0".into());
        expected_store.insert("last_reserved_ip.0".into(), expected.to_string());
        assert_eq!(host.store(), expected_store, "case {index}");
    }
}

#[test]
fn broadcast_address_is_never_allocated() {
    let config = net(&subnets_ipam(&["192.168.1.0/29"]));
    let host = MockHost::new();
    for host_part in 2..7 {
        assert_eq!(
            single_address(add(&host, &config, &format!("ID{host_part}"))),
            format!("192.168.1.{host_part}/29")
        );
    }
    let err = add(&host, &config, "ID8").expect_err("range exhausted");
    assert_eq!(
        err.msg,
        "failed to allocate for range 0: no IP addresses available in range set: 192.168.1.1-192.168.1.6"
    );
    assert_eq!(err.code, 999);
    assert!(!host.store().contains_key("192.168.1.7"));
}

#[test]
fn release_then_add_moves_on_round_robin() {
    let config = net(&subnets_ipam(&["192.168.1.0/29"]));
    let host = MockHost::new();
    assert_eq!(single_address(add(&host, &config, "ID")), "192.168.1.2/29");
    del(&host, &config, "ID").expect("DEL");
    assert_eq!(single_address(add(&host, &config, "ID")), "192.168.1.3/29");
    assert_eq!(
        host.store(),
        store(&[
            ("192.168.1.3", "ID\r\neth0"),
            ("last_reserved_ip.0", "192.168.1.3")
        ])
    );
}

#[test]
fn requested_address_is_allocated_then_unavailable() {
    let config = net(&subnets_ipam(&["192.168.1.0/29"]));
    let host = MockHost::new();
    let result = add_with_args(&host, &config, "ID", &[("IP", "192.168.1.5")]);
    assert_eq!(single_address(result), "192.168.1.5/29");
    assert_eq!(
        host.store().get("last_reserved_ip.0").map(String::as_str),
        Some("192.168.1.5")
    );
    // No duplicate check on the requested path: the same owner asking again
    // fails only because the address is taken.
    let err = add_with_args(&host, &config, "ID", &[("IP", "192.168.1.5")])
        .expect_err("already reserved");
    assert_eq!(
        err.msg,
        "failed to allocate for range 0: requested IP address 192.168.1.5 is not available in range set 192.168.1.1-192.168.1.6"
    );
    assert_eq!(err.code, 999);
    assert_eq!(
        host.store(),
        store(&[
            ("192.168.1.5", "ID\r\neth0"),
            ("last_reserved_ip.0", "192.168.1.5")
        ])
    );
}

#[test]
fn requested_address_outside_the_range_bounds_fails() {
    let cases = [
        (r#""rangeEnd":"192.168.1.4""#, "192.168.1.5"),
        (r#""rangeStart":"192.168.1.3""#, "192.168.1.2"),
    ];
    for (bound, requested) in cases {
        let config = net(&format!(
            r#"{{"type":"host-local","ranges":[[{{"subnet":"192.168.1.0/29",{bound}}}]]}}"#
        ));
        let host = MockHost::new();
        let err = add_with_args(&host, &config, "ID", &[("IP", requested)])
            .expect_err("outside the range");
        assert_eq!(
            err.msg,
            format!("failed to allocate all requested IPs: {requested}")
        );
        assert_eq!(err.code, 999);
        // The address the set allocated meanwhile is released again, but the
        // reference's last_reserved_ip quirk leaves the position advanced.
        let store = host.store();
        assert_eq!(store.len(), 1, "{store:?}");
        assert!(store.contains_key("last_reserved_ip.0"));
    }
}

#[test]
fn requested_gateway_is_refused() {
    let config = net(&subnets_ipam(&["10.1.2.0/24"]));
    let host = MockHost::new();
    let err = add_with_args(&host, &config, "ID", &[("IP", "10.1.2.1")]).expect_err("gateway");
    assert_eq!(
        err.msg,
        "failed to allocate for range 0: requested ip 10.1.2.1 is subnet's gateway"
    );
    assert_eq!(err.code, 999);
    assert!(host.store().is_empty());
}

#[test]
fn exhausted_range_sets_report_the_reference_error() {
    let cases: &[(&[&str], &[&str], &str)] = &[
        (&["10.0.0.0/30"], &["10.0.0.2"], "10.0.0.1-10.0.0.2"),
        (
            &["10.0.0.0/29"],
            &["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"],
            "10.0.0.1-10.0.0.6",
        ),
        (
            &["10.0.0.0/30", "10.0.1.0/30"],
            &["10.0.0.2", "10.0.1.2"],
            "10.0.0.1-10.0.0.2,10.0.1.1-10.0.1.2",
        ),
    ];
    for (subnets, taken, range_set) in cases {
        let entries: Vec<(&str, &str)> = taken.iter().map(|ip| (*ip, "id")).collect();
        let host = host_with(&entries);
        let err = add(&host, &net(&subnets_ipam(subnets)), "ID").expect_err("exhausted");
        assert_eq!(
            err.msg,
            format!(
                "failed to allocate for range 0: no IP addresses available in range set: {range_set}"
            )
        );
        assert_eq!(err.code, 999);
        assert_eq!(host.store(), store(&entries));
    }
}

#[test]
fn last_address_of_one_range_continues_in_the_next() {
    let config = net(r#"{"type":"host-local","ranges":[[
            {"subnet":"192.168.1.0/30","rangeStart":"192.168.1.0","rangeEnd":"192.168.1.3"},
            {"subnet":"192.168.2.0/30","rangeStart":"192.168.2.0","rangeEnd":"192.168.2.3"}]]}"#);
    let host = host_with(&[("last_reserved_ip.0", "192.168.1.3")]);
    assert_eq!(single_address(add(&host, &config, "ID")), "192.168.2.0/30");
    let fresh = MockHost::new();
    assert_eq!(single_address(add(&fresh, &config, "ID")), "192.168.1.0/30");
}

#[test]
fn last_reserved_value_is_parsed_without_trimming() {
    let config = net(&subnets_ipam(&["10.0.0.0/29"]));
    let host = host_with(&[("last_reserved_ip.0", "10.0.0.5\n")]);
    assert_eq!(single_address(add(&host, &config, "ID")), "10.0.0.2/29");
    assert_eq!(
        host.store().get("last_reserved_ip.0").map(String::as_str),
        Some("10.0.0.2")
    );
}

const DUAL_STACK: &str = r#"{"type":"host-local","dataDir":"/var/lib/cni/networks",
    "resolvConf":"/etc/host-local/resolv.conf",
    "ranges":[[{"subnet":"10.1.2.0/24"},{"subnet":"10.2.2.0/24"}],[{"subnet":"2001:db8:1::0/64"}]],
    "routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"},{"dst":"192.168.0.0/16","gw":"1.1.1.1"},
              {"dst":"2001:db8:2::0/64","gw":"2001:db8:3::1"}]}"#;

fn resolv_dns() -> Dns {
    Dns {
        nameservers: vec!["192.0.2.3".into()],
        domain: None,
        search: Vec::new(),
        options: Vec::new(),
    }
}

#[test]
fn dual_stack_add_and_del_with_routes_and_dns() {
    let config = net(DUAL_STACK);
    let host = MockHost::new().with_resolv_conf("/etc/host-local/resolv.conf", resolv_dns());
    let result = add(&host, &config, "dummy").expect("ADD");
    assert_eq!(addresses(&result), ["10.1.2.2/24", "2001:db8:1::2/64"]);
    let gateways: Vec<Option<&str>> = result.ips.iter().map(|ip| ip.gateway.as_deref()).collect();
    assert_eq!(gateways, [Some("10.1.2.1"), Some("2001:db8:1::1")]);
    assert!(result.ips.iter().all(|ip| ip.interface_index.is_none()));
    assert!(result.interfaces.is_empty());
    assert_eq!(
        result.routes,
        vec![
            Route::new("0.0.0.0/0", None),
            Route::new("::/0", None),
            Route::new("192.168.0.0/16", Some("1.1.1.1".into())),
            Route::new("2001:db8:2::/64", Some("2001:db8:3::1".into())),
        ]
    );
    assert_eq!(result.dns, Some(resolv_dns()));
    assert_eq!(
        host.store(),
        store(&[
            ("10.1.2.2", "dummy\r\neth0"),
            ("2001:db8:1::2", "dummy\r\neth0"),
            ("last_reserved_ip.0", "10.1.2.2"),
            ("last_reserved_ip.1", "2001:db8:1::2"),
        ])
    );

    del(&host, &config, "dummy").expect("DEL");
    assert_eq!(
        host.store(),
        store(&[
            ("last_reserved_ip.0", "10.1.2.2"),
            ("last_reserved_ip.1", "2001:db8:1::2"),
        ])
    );
}

#[test]
fn unreadable_resolv_conf_fails_before_allocating() {
    let config = net(DUAL_STACK);
    let host = MockHost::new();
    let err = add(&host, &config, "dummy").expect_err("no resolv.conf");
    assert_eq!(
        err.msg,
        "failed to read resolvConf /etc/host-local/resolv.conf: open /etc/host-local/resolv.conf: no such file or directory"
    );
    assert_eq!(err.code, 5);
    assert!(host.store().is_empty());
}

#[test]
fn del_releases_only_the_given_interface() {
    let config = net(&subnets_ipam(&["10.1.2.0/24"]));
    let host = MockHost::new();
    assert_eq!(
        single_address(add_on(&host, &config, "dummy", "eth0")),
        "10.1.2.2/24"
    );
    assert_eq!(
        single_address(add_on(&host, &config, "dummy", "eth1")),
        "10.1.2.3/24"
    );
    del_on(&host, &config, "dummy", "eth0").expect("DEL eth0");
    assert_eq!(
        host.store(),
        store(&[
            ("10.1.2.3", "dummy\r\neth1"),
            ("last_reserved_ip.0", "10.1.2.3")
        ])
    );
}

#[test]
fn repeated_add_for_the_same_attachment_is_refused() {
    let config = net(&subnets_ipam(&["10.1.2.0/24"]));
    let host = MockHost::new();
    assert_eq!(single_address(add(&host, &config, "dummy")), "10.1.2.2/24");
    let err = add(&host, &config, "dummy").expect_err("duplicate");
    assert_eq!(
        err.msg,
        "failed to allocate for range 0: 10.1.2.2 has been allocated to dummy, duplicate allocation is not allowed"
    );
    assert_eq!(err.code, 999);
    assert_eq!(single_address(add(&host, &config, "other")), "10.1.2.3/24");
    let err = add(&host, &config, "dummy").expect_err("still a duplicate");
    assert!(err.msg.contains("10.1.2.2 has been allocated to dummy"));
    del(&host, &config, "dummy").expect("DEL dummy");
    del(&host, &config, "other").expect("DEL other");
    assert_eq!(host.store(), store(&[("last_reserved_ip.0", "10.1.2.3")]));
}

#[test]
fn legacy_reservations_count_as_duplicates_and_are_released() {
    let config = net(&subnets_ipam(&["10.1.2.0/24"]));
    let host = host_with(&[("10.1.2.2", "dummy")]);
    let err = add(&host, &config, "dummy").expect_err("legacy duplicate");
    assert!(
        err.msg
            .ends_with("10.1.2.2 has been allocated to dummy, duplicate allocation is not allowed")
    );
    call(&host, Command::Check, &config, "dummy", IFNAME).expect("CHECK finds legacy");
    del(&host, &config, "dummy").expect("DEL");
    assert!(host.store().is_empty());
}

#[test]
fn legacy_reservations_stay_when_current_ones_are_released() {
    let config = net(&subnets_ipam(&["10.1.2.0/24"]));
    let host = host_with(&[("10.1.2.2", "dummy"), ("10.1.2.3", "dummy\r\neth0")]);
    del(&host, &config, "dummy").expect("DEL");
    assert_eq!(host.store(), store(&[("10.1.2.2", "dummy")]));
}

#[test]
fn del_of_an_unknown_container_succeeds_and_changes_nothing() {
    let config = net(&subnets_ipam(&["10.1.2.0/24"]));
    let entries = [
        ("10.1.2.2", "other\r\neth0"),
        ("last_reserved_ip.0", "10.1.2.2"),
    ];
    let host = host_with(&entries);
    del(&host, &config, "unknown").expect("DEL");
    del(&host, &config, "unknown").expect("DEL again");
    assert_eq!(host.store(), store(&entries));
}

#[test]
fn whitespace_around_ids_and_values_is_ignored() {
    let config = net(&subnets_ipam(&["10.1.2.0/24"]));
    let host = MockHost::new();
    assert_eq!(
        single_address(add(&host, &config, "   dummy\n ")),
        "10.1.2.2/24"
    );
    assert_eq!(
        host.store().get("10.1.2.2").map(String::as_str),
        Some("dummy\r\neth0")
    );
    del(&host, &config, "   dummy\n ").expect("DEL");
    assert!(!host.store().contains_key("10.1.2.2"));

    let host = host_with(&[("10.1.2.7", "  dummy\r\neth0\n")]);
    call(&host, Command::Check, &config, "dummy", IFNAME).expect("CHECK");
    del(&host, &config, "dummy").expect("DEL");
    assert!(host.store().is_empty());
}

#[test]
fn args_ips_pick_the_address() {
    let config = r#"{"cniVersion":"1.0.0","name":"mynet","args":{"cni":{"ips":["10.1.2.88"]}},
        "ipam":{"type":"host-local","subnet":"10.1.2.0/24"}}"#;
    let host = MockHost::new();
    assert_eq!(single_address(add(&host, config, "dummy")), "10.1.2.88/24");
    assert_eq!(
        host.store(),
        store(&[
            ("10.1.2.88", "dummy\r\neth0"),
            ("last_reserved_ip.0", "10.1.2.88")
        ])
    );
}

#[test]
fn requested_ips_from_several_sources_are_merged_and_deduplicated() {
    let config = r#"{"cniVersion":"1.0.0","name":"mynet",
        "args":{"cni":{"ips":["10.1.2.88/24"]}},
        "runtimeConfig":{"ips":["2001:db8:1::999/64"]},
        "ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.2.0/24"}],[{"subnet":"2001:db8:1::/48"}]]}}"#;
    let host = MockHost::new();
    let result = add_with_args(&host, config, "dummy", &[("IP", "10.1.2.88")]).expect("ADD");
    assert_eq!(addresses(&result), ["10.1.2.88/24", "2001:db8:1::999/48"]);
}

#[test]
fn mapped_ipv4_requests_use_the_ipv4_key() {
    let config = net(&subnets_ipam(&["10.1.2.0/24"]));
    let host = MockHost::new();
    let result = add_with_args(&host, &config, "dummy", &[("IP", "::ffff:10.1.2.50")]);
    assert_eq!(single_address(result), "10.1.2.50/24");
    assert!(host.store().contains_key("10.1.2.50"));
}

#[test]
fn custom_ips_across_two_ipv4_range_sets() {
    let ipam =
        r#"{"type":"host-local","ranges":[[{"subnet":"10.1.2.0/24"}],[{"subnet":"10.1.3.0/24"}]]}"#;
    let config = |version: &str| {
        format!(
            r#"{{"cniVersion":"{version}","name":"mynet","args":{{"cni":{{"ips":["10.1.2.88","10.1.3.77"]}}}},"ipam":{ipam}}}"#
        )
    };
    let host = MockHost::new();
    let result = add(&host, &config("0.3.1"), "dummy").expect("ADD");
    assert_eq!(addresses(&result), ["10.1.2.88/24", "10.1.3.77/24"]);
    assert_eq!(
        host.store(),
        store(&[
            ("10.1.2.88", "dummy\r\neth0"),
            ("10.1.3.77", "dummy\r\neth0"),
            ("last_reserved_ip.0", "10.1.2.88"),
            ("last_reserved_ip.1", "10.1.3.77"),
        ])
    );

    let fresh = MockHost::new();
    let err = add(&fresh, &config("0.2.0"), "dummy").expect_err("0.2.0");
    assert_eq!(
        err.msg,
        "CNI version 0.2.0 does not support more than 1 address per family"
    );
    assert_eq!(err.code, 7);
    assert!(fresh.store().is_empty());
}

#[test]
fn custom_ips_across_families() {
    let config = r#"{"cniVersion":"1.0.0","name":"mynet",
        "args":{"cni":{"ips":["10.1.2.88","2001:db8:1::999"]}},
        "ipam":{"type":"host-local","ranges":[
            [{"subnet":"172.16.1.0/24"},{"subnet":"10.1.2.0/24"}],[{"subnet":"2001:db8:1::/48"}]]}}"#;
    let host = MockHost::new();
    let result = add(&host, config, "dummy").expect("ADD");
    assert_eq!(addresses(&result), ["10.1.2.88/24", "2001:db8:1::999/48"]);
    let gateways: Vec<Option<&str>> = result.ips.iter().map(|ip| ip.gateway.as_deref()).collect();
    assert_eq!(gateways, [Some("10.1.2.1"), Some("2001:db8:1::1")]);
}

#[test]
fn unused_requested_ip_fails_and_releases_but_keeps_last_reserved() {
    let config = r#"{"cniVersion":"1.0.0","name":"mynet",
        "args":{"cni":{"ips":["10.1.2.88","10.1.2.77"]}},
        "ipam":{"type":"host-local","subnet":"10.1.2.0/24"}}"#;
    let host = MockHost::new();
    let err = add(&host, config, "dummy").expect_err("two addresses for one set");
    assert_eq!(err.msg, "failed to allocate all requested IPs: 10.1.2.77");
    assert_eq!(err.code, 999);
    // The reservation is undone; last_reserved_ip stays advanced, as in the
    // reference.
    assert_eq!(host.store(), store(&[("last_reserved_ip.0", "10.1.2.88")]));
}

#[test]
fn failure_in_a_later_range_set_releases_earlier_reservations() {
    let config = net(
        r#"{"type":"host-local","ranges":[[{"subnet":"10.1.2.0/24"}],[{"subnet":"10.9.0.0/30"}]]}"#,
    );
    let host = host_with(&[
        ("10.9.0.2", "other\r\neth0"),
        ("10.1.2.9", "mine-not\r\neth0"),
    ]);
    let err = add(&host, &config, "dummy").expect_err("set 1 is full");
    assert_eq!(
        err.msg,
        "failed to allocate for range 1: no IP addresses available in range set: 10.9.0.1-10.9.0.2"
    );
    assert_eq!(
        host.store(),
        store(&[
            ("10.1.2.9", "mine-not\r\neth0"),
            ("10.9.0.2", "other\r\neth0"),
            ("last_reserved_ip.0", "10.1.2.2"),
        ])
    );
    // The quirk's visible effect: the next allocation skips 10.1.2.2.
    let free = MockHost::new().with_store_entry("last_reserved_ip.0", "10.1.2.2");
    let single = net(&subnets_ipam(&["10.1.2.0/24"]));
    assert_eq!(single_address(add(&free, &single, "next")), "10.1.2.3/24");
}

#[test]
fn runtime_ip_ranges_are_allocated_first() {
    let config = r#"{"cniVersion":"1.0.0","name":"mynet",
        "runtimeConfig":{"ipRanges":[[{"subnet":"10.20.0.0/24"}]]},
        "ipam":{"type":"host-local","subnet":"10.1.2.0/24","ranges":[[{"subnet":"2001:db8:1::/64"}]]}}"#;
    let host = MockHost::new();
    let result = add(&host, config, "dummy").expect("ADD");
    assert_eq!(
        addresses(&result),
        ["10.20.0.2/24", "10.1.2.2/24", "2001:db8:1::2/64"]
    );
    assert_eq!(
        host.store().get("last_reserved_ip.1").map(String::as_str),
        Some("10.1.2.2")
    );
}

/// The sequence observed against the Debian binary (notes, section 3.2).
#[test]
fn observed_reference_sequence() {
    let config = net(
        r#"{"type":"host-local","subnet":"10.9.0.0/29","rangeStart":"10.9.0.1","rangeEnd":"10.9.0.6","gateway":"10.9.0.1"}"#,
    );
    let host = MockHost::new();
    assert_eq!(single_address(add(&host, &config, "a")), "10.9.0.2/29");
    let err = add(&host, &config, "a").expect_err("duplicate");
    assert_eq!(
        err.msg,
        "failed to allocate for range 0: 10.9.0.2 has been allocated to a, duplicate allocation is not allowed"
    );
    assert_eq!(single_address(add(&host, &config, "b")), "10.9.0.3/29");
    assert_eq!(
        single_address(add_with_args(&host, &config, "c", &[("IP", "10.9.0.6")])),
        "10.9.0.6/29"
    );
    assert_eq!(single_address(add(&host, &config, "d")), "10.9.0.4/29");
    assert_eq!(single_address(add(&host, &config, "e")), "10.9.0.5/29");
    let err = add(&host, &config, "f").expect_err("exhausted");
    assert_eq!(
        err.msg,
        "failed to allocate for range 0: no IP addresses available in range set: 10.9.0.1-10.9.0.6"
    );
    del(&host, &config, "a").expect("DEL a");
    del(&host, &config, "a").expect("DEL a again");
    assert_eq!(single_address(add(&host, &config, "g")), "10.9.0.2/29");
}

#[test]
fn a_range_whose_start_is_its_gateway_hands_out_the_rest() {
    let config = net(
        r#"{"type":"host-local","subnet":"10.9.0.0/24","rangeStart":"10.9.0.100","rangeEnd":"10.9.0.101","gateway":"10.9.0.100"}"#,
    );
    let host = MockHost::new();
    assert_eq!(single_address(add(&host, &config, "a")), "10.9.0.101/24");
    let err = add(&host, &config, "b").expect_err("only one address");
    assert!(
        err.msg
            .ends_with("no IP addresses available in range set: 10.9.0.100-10.9.0.101")
    );
}

#[test]
fn check_finds_current_and_legacy_reservations_only() {
    let config = net(&subnets_ipam(&["10.1.2.0/24"]));
    let host = MockHost::new();
    add(&host, &config, "dummy").expect("ADD");
    assert_eq!(
        call(&host, Command::Check, &config, "dummy", IFNAME).expect("CHECK"),
        None
    );
    let err = call(&host, Command::Check, &config, "zz", IFNAME).expect_err("unknown");
    assert_eq!(
        err.msg,
        "host-local: Failed to find address added by container zz"
    );
    assert_eq!(err.code, 999);
    // Another interface of the same container is not this attachment.
    let err = call(&host, Command::Check, &config, "dummy", "eth1").expect_err("other ifname");
    assert!(err.msg.ends_with("container dummy"));
    // last_reserved_ip.* never counts, even for an id that looks like an address.
    let err = call(&host, Command::Check, &config, "10.1.2.2", IFNAME).expect_err("id like an IP");
    assert!(err.msg.ends_with("container 10.1.2.2"));
}

#[test]
fn gc_releases_what_no_valid_attachment_holds() {
    let config = net(&subnets_ipam(&["10.1.2.0/24"]));
    let host = host_with(&[
        ("10.1.2.2", "a\r\neth0"),
        ("10.1.2.3", "b\r\neth0"),
        ("10.1.2.4", "c"),
        ("10.1.2.5", "d"),
        ("10.1.2.6", "a\r\neth1"),
        ("2001:db8::5", "garbage"),
        ("last_reserved_ip.0", "10.1.2.6"),
        ("lock", ""),
    ]);
    let mut request = testing::request(Command::Gc, &config);
    request.valid_attachments = vec![
        Attachment {
            container_id: "a".into(),
            ifname: "eth0".into(),
        },
        Attachment {
            container_id: "c".into(),
            ifname: "eth3".into(),
        },
    ];
    assert_eq!(HostLocal::handle(&host, request).expect("GC"), None);
    assert_eq!(
        host.store(),
        store(&[
            ("10.1.2.2", "a\r\neth0"),
            ("10.1.2.4", "c"),
            ("last_reserved_ip.0", "10.1.2.6"),
            ("lock", ""),
        ])
    );
}

#[test]
fn gc_without_valid_attachments_releases_every_reservation() {
    let config = net(&subnets_ipam(&["10.1.2.0/24"]));
    let host = host_with(&[
        ("10.1.2.2", "a\r\neth0"),
        ("last_reserved_ip.0", "10.1.2.2"),
    ]);
    let request = testing::request(Command::Gc, &config);
    HostLocal::handle(&host, request).expect("GC");
    assert_eq!(host.store(), store(&[("last_reserved_ip.0", "10.1.2.2")]));
}

#[test]
fn status_succeeds_without_touching_anything() {
    let host = host_with(&[("10.1.2.2", "a\r\neth0")]);
    let request = testing::request(Command::Status, "{not json");
    assert_eq!(HostLocal::handle(&host, request).expect("STATUS"), None);
    assert_eq!(host.store(), store(&[("10.1.2.2", "a\r\neth0")]));
}

#[test]
fn invalid_configuration_fails_every_command_but_status() {
    let host = host_with(&[("10.1.2.2", "dummy\r\neth0")]);
    let bad = net(r#"{"type":"host-local","subnet":"10.1.2.1/24"}"#);
    for command in [Command::Add, Command::Del, Command::Check, Command::Gc] {
        let err = call(&host, command, &bad, "dummy", IFNAME).expect_err("invalid config");
        assert_eq!(err.code, 7);
        assert_eq!(
            err.msg,
            "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 10.1.2.0"
        );
    }
    let err = call(&host, Command::Add, "{", "dummy", IFNAME).expect_err("not JSON");
    assert_eq!(err.code, 6);
    let missing = r#"{"cniVersion":"1.0.0","name":"mynet","type":"macvlan"}"#;
    let err = call(&host, Command::Del, missing, "dummy", IFNAME).expect_err("no ipam");
    assert_eq!(err.msg, "IPAM config missing 'ipam' key");
    assert_eq!(host.store(), store(&[("10.1.2.2", "dummy\r\neth0")]));
}

/// A host whose store records every key it is asked about and fails the
/// operations a test names.
struct RecordingHost {
    inner: MockHost,
    touched: RefCell<Vec<String>>,
    fail_list: bool,
    fail_swap_of: Option<String>,
}

impl RecordingHost {
    fn new(inner: MockHost) -> Self {
        RecordingHost {
            inner,
            touched: RefCell::new(Vec::new()),
            fail_list: false,
            fail_swap_of: None,
        }
    }

    fn touched(&self) -> Vec<String> {
        self.touched.borrow().clone()
    }
}

impl Host for RecordingHost {
    fn log(&self, level: Level, message: &str) {
        self.inner.log(level, message);
    }
    fn get_link(&self, netns: Netns, name: &str) -> Option<LinkInfo> {
        self.inner.get_link(netns, name)
    }
    fn default_route_link(&self, netns: Netns, family: IpFamily) -> Option<LinkInfo> {
        self.inner.default_route_link(netns, family)
    }
    fn addresses(&self, netns: Netns, name: &str) -> Vec<String> {
        self.inner.addresses(netns, name)
    }
    fn routes(&self, netns: Netns, name: &str) -> Vec<Route> {
        self.inner.routes(netns, name)
    }
    fn read_sysctl(&self, key: &str) -> Result<Option<String>, String> {
        self.inner.read_sysctl(key)
    }
}

impl IpamHost for RecordingHost {
    fn store_get(&self, key: &str) -> Result<Option<String>, String> {
        self.touched.borrow_mut().push(key.into());
        self.inner.store_get(key)
    }
    fn store_list(&self) -> Result<Vec<String>, String> {
        if self.fail_list {
            return Err("read dir: permission denied".into());
        }
        self.inner.store_list()
    }
    fn store_compare_and_swap(
        &self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, String> {
        self.touched.borrow_mut().push(key.into());
        if self.fail_swap_of.as_deref() == Some(key) {
            return Err("write: no space left on device".into());
        }
        self.inner.store_compare_and_swap(key, expected, new)
    }
    fn store_delete(&self, key: &str) -> Result<bool, String> {
        self.touched.borrow_mut().push(key.into());
        self.inner.store_delete(key)
    }
    fn read_resolv_conf(&self, path: &str) -> Result<Dns, String> {
        self.inner.read_resolv_conf(path)
    }
}

#[test]
fn the_lock_key_is_never_touched() {
    let config = net(&subnets_ipam(&["10.1.2.0/24"]));
    let host = RecordingHost::new(host_with(&[("lock", ""), ("10.1.2.9", "x\r\neth0")]));
    add(&host, &config, "dummy").expect("ADD");
    call(&host, Command::Check, &config, "dummy", IFNAME).expect("CHECK");
    del(&host, &config, "dummy").expect("DEL");
    HostLocal::handle(&host, testing::request(Command::Gc, &config)).expect("GC");
    let touched = host.touched();
    assert!(touched.contains(&"10.1.2.9".to_string()), "{touched:?}");
    assert!(!touched.contains(&"lock".to_string()), "{touched:?}");
    assert_eq!(
        host.inner.store(),
        store(&[("last_reserved_ip.0", "10.1.2.2"), ("lock", "")])
    );
}

#[test]
fn store_failures_are_try_again_later() {
    let config = net(&subnets_ipam(&["10.1.2.0/24"]));

    // Recording the last address fails: the reservation is given back.
    let mut host = RecordingHost::new(MockHost::new());
    host.fail_swap_of = Some("last_reserved_ip.0".into());
    let err = add(&host, &config, "dummy").expect_err("store failure");
    assert_eq!(err.code, 11);
    assert_eq!(
        err.msg,
        "failed to allocate for range 0: store compare-and-swap last_reserved_ip.0: write: no space left on device"
    );
    assert!(host.inner.store().is_empty());

    // Reserving fails.
    let mut host = RecordingHost::new(MockHost::new());
    host.fail_swap_of = Some("10.1.2.2".into());
    let err = add(&host, &config, "dummy").expect_err("store failure");
    assert_eq!(err.code, 11);
    assert!(
        err.msg
            .starts_with("failed to allocate for range 0: store compare-and-swap 10.1.2.2:")
    );

    // Listing fails: DEL, CHECK and ADD's duplicate check report it.
    let mut host = RecordingHost::new(host_with(&[("10.1.2.2", "dummy\r\neth0")]));
    host.fail_list = true;
    for command in [Command::Del, Command::Check, Command::Gc] {
        let err = call(&host, command, &config, "dummy", IFNAME).expect_err("list fails");
        assert_eq!(err.code, 11);
        assert_eq!(err.msg, "store list: read dir: permission denied");
    }
    let err = add(&host, &config, "new").expect_err("list fails");
    assert_eq!(err.code, 11);
    assert_eq!(
        err.msg,
        "failed to allocate for range 0: store list: read dir: permission denied"
    );
    assert_eq!(host.inner.store(), store(&[("10.1.2.2", "dummy\r\neth0")]));

    // A failed release in DEL is reported after the others are done.
    let mut host = RecordingHost::new(host_with(&[
        ("10.1.2.2", "dummy\r\neth0"),
        ("10.1.2.3", "dummy\r\neth0"),
    ]));
    host.fail_swap_of = Some("10.1.2.2".into());
    let err = del(&host, &config, "dummy").expect_err("one release fails");
    assert_eq!(err.code, 11);
    assert_eq!(
        err.msg,
        "store compare-and-swap 10.1.2.2: write: no space left on device"
    );
    assert_eq!(host.inner.store(), store(&[("10.1.2.2", "dummy\r\neth0")]));
}

/// A dual-stack run recorded against the Debian host-local 1.1.1 binary: a
/// requested gateway, a requested address no set holds (both sets allocate,
/// then release, leaving last_reserved_ip advanced), then a plain ADD, a
/// duplicate and a taken requested address.
#[test]
fn recorded_dual_stack_run_of_the_reference_binary() {
    let config = net_with(
        "0.3.1",
        r#"{"type":"host-local","ranges":[[{"subnet":"10.9.0.0/29"}],
            [{"subnet":"2001:db8:1::/64","rangeStart":"2001:db8:1::ffff"}]]}"#,
    );
    let host = MockHost::new();
    let err = add_with_args(&host, &config, "c1", &[("IP", "10.9.0.1")]).expect_err("gateway");
    assert_eq!(
        err.msg,
        "failed to allocate for range 0: requested ip 10.9.0.1 is subnet's gateway"
    );
    let err = add_with_args(&host, &config, "c1", &[("IP", "2001:db8:1::1")]).expect_err("outside");
    assert_eq!(
        err.msg,
        "failed to allocate all requested IPs: 2001:db8:1::1"
    );
    let result = add(&host, &config, "c1").expect("ADD");
    assert_eq!(addresses(&result), ["10.9.0.3/29", "2001:db8:1::1:0/64"]);
    let gateways: Vec<Option<&str>> = result.ips.iter().map(|ip| ip.gateway.as_deref()).collect();
    assert_eq!(gateways, [Some("10.9.0.1"), Some("2001:db8:1::1")]);
    let err = add(&host, &config, "c1").expect_err("duplicate");
    assert_eq!(
        err.msg,
        "failed to allocate for range 0: 10.9.0.3 has been allocated to c1, duplicate allocation is not allowed"
    );
    let err = add_with_args(
        &host,
        &config,
        "c2",
        &[("IP", "10.9.0.3"), ("IgnoreUnknown", "1"), ("X", "1")],
    )
    .expect_err("taken");
    assert_eq!(
        err.msg,
        "failed to allocate for range 0: requested IP address 10.9.0.3 is not available in range set 10.9.0.1-10.9.0.6"
    );
    assert_eq!(
        host.store(),
        store(&[
            ("10.9.0.3", "c1\r\neth0"),
            ("2001:db8:1::1:0", "c1\r\neth0"),
            ("last_reserved_ip.0", "10.9.0.3"),
            ("last_reserved_ip.1", "2001:db8:1::1:0"),
        ])
    );
}
