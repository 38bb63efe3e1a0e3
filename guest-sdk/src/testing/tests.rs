use super::*;
use crate::{CreateMacvlan, SetFlag, SetMtu, SetSysctl, SetTxqueuelen};

fn host() -> MockHost {
    MockHost::new()
        .named("mine")
        .with_link(Netns::Host, "ens3", 1500)
        .with_link(Netns::Sandbox, "eth0", 1500)
}

fn plan(ops: Vec<NetlinkOp>) -> Plan {
    Plan {
        ops,
        cni_result: None,
        state: None,
    }
}

fn create(name: &str, master: &str) -> NetlinkOp {
    NetlinkOp::CreateMacvlan(CreateMacvlan {
        name: name.into(),
        master: master.into(),
        master_in_sandbox: false,
        mode: MacvlanMode::Bridge,
        mtu: None,
        mac: None,
    })
}

fn seed() -> Vec<NetlinkOp> {
    vec![
        create("net1", "ens3"),
        NetlinkOp::SetSysctl(SetSysctl {
            key: "net/ipv4/conf/net1/arp_notify".into(),
            value: "1".into(),
        }),
        NetlinkOp::AddAddress(crate::AddAddress {
            link: "net1".into(),
            address: "192.168.1.200/24".into(),
        }),
        NetlinkOp::SetLinkUp("net1".into()),
        NetlinkOp::AddRoute(crate::AddRoute {
            link: "net1".into(),
            dst: "0.0.0.0/0".into(),
            gateway: Some("192.168.1.1".into()),
            metric: None,
            table: None,
            scope: None,
        }),
    ]
}

fn add() -> Request {
    request(Command::Add, "{}")
}

#[test]
fn a_plan_touching_eth0_is_refused_as_the_host_refuses_it() {
    let host = host();
    let cases = [
        (
            NetlinkOp::SetLinkUp("eth0".into()),
            "plugin mine (sha256 mock): plan refused by policy: op 0 (set-link-up eth0): eth0 is not the interface this attachment creates (net1)",
        ),
        (
            NetlinkOp::SetSysctl(SetSysctl {
                key: "net/ipv4/ip_forward".into(),
                value: "1".into(),
            }),
            "plugin mine (sha256 mock): plan refused by policy: op 0 (set-sysctl net/ipv4/ip_forward=1): sysctl keys are net/ipv4|ipv6/conf|neigh/<interface>/<name>",
        ),
        (
            NetlinkOp::SetPromisc(SetFlag {
                link: "eth0".into(),
                on: true,
            }),
            "plugin mine (sha256 mock): plan refused by policy: op 0 (set-promisc eth0 on): eth0 is not the interface this attachment creates (net1)",
        ),
    ];
    for (op, message) in cases {
        let err = host.apply(&add(), &plan(vec![op])).unwrap_err();
        assert_eq!(err.code, 107);
        assert_eq!(err.msg, message);
    }
    let eth0 = host.get_link(Netns::Sandbox, "eth0").unwrap();
    assert!(eth0.up && !eth0.promisc, "nothing applied");
}

#[test]
fn the_seed_plan_applies_and_queries_see_it() {
    let host = host();
    host.apply(&add(), &plan(seed())).unwrap();
    let net1 = host.get_link(Netns::Sandbox, "net1").unwrap();
    assert_eq!(net1.kind, "macvlan");
    assert!(net1.up);
    assert_eq!(net1.master.as_deref(), Some("ens3"));
    assert_eq!(
        host.addresses(Netns::Sandbox, "net1"),
        vec!["192.168.1.200/24"]
    );
    assert_eq!(
        host.routes(Netns::Sandbox, "net1")[0].gw.as_deref(),
        Some("192.168.1.1")
    );
    assert_eq!(
        host.read_sysctl("net/ipv4/conf/net1/arp_notify").unwrap(),
        Some("1".into())
    );
    // The same plan again: the kernel's EEXIST, nothing changed.
    let err = host.apply(&add(), &plan(seed())).unwrap_err();
    assert_eq!(err.code, 999);
    assert!(
        err.msg
            .contains("op 0 (create-macvlan net1 on ens3 (bridge)) failed: file exists"),
        "{}",
        err.msg
    );
}

#[test]
fn a_failing_op_rolls_back_the_ops_before_it() {
    let host = host();
    host.fail_op(2, "invalid argument");
    let err = host.apply(&add(), &plan(seed())).unwrap_err();
    assert_eq!(err.code, 999);
    assert_eq!(
        err.msg,
        "plugin mine (sha256 mock): op 2 (add-address 192.168.1.200/24 on net1) failed: invalid argument"
    );
    assert!(host.get_link(Netns::Sandbox, "net1").is_none());
    assert_eq!(host.sysctl("net/ipv4/conf/net1/arp_notify"), None);
}

#[test]
fn the_kernel_refuses_an_mtu_above_the_masters() {
    let host = host();
    let mut ops = seed();
    ops.push(NetlinkOp::SetMtu(SetMtu {
        link: "net1".into(),
        mtu: 9000,
    }));
    let err = host.apply(&add(), &plan(ops)).unwrap_err();
    assert!(
        err.msg.contains("op 5 (set-mtu net1 9000) failed"),
        "{}",
        err.msg
    );
    assert!(host.get_link(Netns::Sandbox, "net1").is_none());
}

#[test]
fn masters_follow_the_operators_rules() {
    let host = MockHost::new()
        .with_host_link("cni0", "bridge", 1500)
        .with_pod_veth("veth12345678");
    for master in ["cni0", "veth12345678", "missing"] {
        let err = host
            .apply(&add(), &plan(vec![create("net1", master)]))
            .unwrap_err();
        assert_eq!(err.code, 107, "{master}: {}", err.msg);
    }
    let allowed = MockHost::new()
        .with_host_link("cni0", "bridge", 1500)
        .with_allowed_masters(&["cni0"]);
    allowed
        .apply(&add(), &plan(vec![create("net1", "cni0")]))
        .unwrap();
}

#[test]
fn a_del_plan_restores_its_interface_and_nothing_else() {
    let host = host();
    host.apply(&add(), &plan(seed())).unwrap();
    host.apply(
        &add(),
        &plan(vec![NetlinkOp::SetTxqueuelen(SetTxqueuelen {
            link: "net1".into(),
            len: 2000,
        })]),
    )
    .unwrap();
    let del = request(Command::Del, "{}");
    let restore = NetlinkOp::SetTxqueuelen(SetTxqueuelen {
        link: "net1".into(),
        len: 1000,
    });
    host.apply(&del, &plan(vec![restore.clone()])).unwrap();
    assert_eq!(
        host.get_link(Netns::Sandbox, "net1").unwrap().txqueuelen,
        1000
    );
    let err = host
        .apply(
            &del,
            &plan(vec![NetlinkOp::AddAddress(crate::AddAddress {
                link: "net1".into(),
                address: "10.0.0.2/24".into(),
            })]),
        )
        .unwrap_err();
    assert_eq!(err.code, 107);
    assert!(err.msg.contains("restore its settings"), "{}", err.msg);
    // Restoring after the link is gone is nothing to do, as on the host.
    host.apply(&del, &plan(vec![NetlinkOp::DeleteLink("net1".into())]))
        .unwrap();
    host.apply(&del, &plan(vec![restore])).unwrap();
}

#[test]
fn sysctl_reads_follow_the_hosts_rule() {
    let host = host().with_sysctl("net/ipv4/conf/eth0/forwarding", "1");
    let err = host
        .read_sysctl("net/ipv4/conf/eth0/forwarding")
        .unwrap_err();
    assert!(
        err.contains("not the interface of this attachment"),
        "{err}"
    );
    let err = host.read_sysctl("net/ipv4/ip_forward").unwrap_err();
    assert!(err.contains("outside"), "{err}");
    assert_eq!(
        host.read_sysctl("net/ipv4/conf/net1/arp_notify").unwrap(),
        None
    );
}

#[test]
fn an_unparsable_address_is_an_invalid_plan() {
    let err = host()
        .apply(
            &add(),
            &plan(vec![
                create("net1", "ens3"),
                NetlinkOp::AddAddress(crate::AddAddress {
                    link: "net1".into(),
                    address: "192.168.1.300/24".into(),
                }),
            ]),
        )
        .unwrap_err();
    assert_eq!(err.code, 106);
    assert!(
        err.msg.contains("op 1: address \"192.168.1.300/24\""),
        "{}",
        err.msg
    );
}

#[test]
fn compare_and_swap_only_swaps_on_expected_value() {
    let host = MockHost::new();
    assert!(host.store_compare_and_swap("k", None, Some("a")).unwrap());
    assert!(!host.store_compare_and_swap("k", None, Some("b")).unwrap());
    assert!(
        host.store_compare_and_swap("k", Some("a"), Some("b"))
            .unwrap()
    );
    assert_eq!(host.store_get("k").unwrap().as_deref(), Some("b"));
    assert!(host.store_compare_and_swap("k", Some("b"), None).unwrap());
    assert!(!host.store_delete("k").unwrap());
}

#[test]
fn default_route_link_resolves_through_the_link_table() {
    let host = MockHost::new()
        .with_link(Netns::Host, "ens3", 1400)
        .with_default_route(Netns::Host, IpFamily::V4, "ens3");
    assert_eq!(
        host.default_route_link(Netns::Host, IpFamily::V4)
            .unwrap()
            .mtu,
        1400
    );
    assert!(host.default_route_link(Netns::Host, IpFamily::V6).is_none());
    assert!(
        host.default_route_link(Netns::Sandbox, IpFamily::V4)
            .is_none()
    );
}
