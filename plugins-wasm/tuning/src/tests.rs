use guest_sdk::testing::{MockHost, request};
use guest_sdk::{CniResult, Command, InterfaceInfo, NetlinkOp, Netns, SetFlag};

use super::*;

const NETNS: &str = "/var/run/netns/test";

fn prev() -> CniResult {
    let mut result = CniResult::empty();
    result.interfaces.push(InterfaceInfo {
        name: "net1".into(),
        mac: Some("02:00:00:00:00:02".into()),
        mtu: None,
        sandbox: Some(NETNS.into()),
    });
    result
}

fn host() -> MockHost {
    MockHost::new()
        .with_link(Netns::Sandbox, "net1", 1500)
        .with_sysctl("net/ipv4/conf/net1/arp_notify", "0")
}

fn add_request(config: &str) -> Request {
    let mut request = request(Command::Add, config);
    request.prev_result = Some(prev());
    request
}

const FULL: &str = r#"{"cniVersion":"1.0.0","name":"t","type":"tuning",
    "sysctl":{"net.ipv4.conf.IFNAME.arp_notify":"1"},
    "mac":"c2:11:22:33:44:55","promisc":true,"mtu":1400,"allmulti":true,"txQLen":2000}"#;

#[test]
fn add_sets_each_field_and_keeps_what_it_changed() {
    let plan = TuningPlugin::handle(&host(), add_request(FULL)).unwrap();
    let link = || "net1".to_string();
    assert_eq!(
        plan.ops,
        vec![
            NetlinkOp::SetSysctl(SetSysctl {
                key: "net/ipv4/conf/net1/arp_notify".into(),
                value: "1".into()
            }),
            NetlinkOp::SetLinkDown(link()),
            NetlinkOp::SetMac(SetMac {
                link: link(),
                mac: "c2:11:22:33:44:55".into()
            }),
            NetlinkOp::SetLinkUp(link()),
            NetlinkOp::SetPromisc(SetFlag {
                link: link(),
                on: true
            }),
            NetlinkOp::SetMtu(SetMtu {
                link: link(),
                mtu: 1400
            }),
            NetlinkOp::SetAllmulti(SetFlag {
                link: link(),
                on: true
            }),
            NetlinkOp::SetTxqueuelen(SetTxqueuelen {
                link: link(),
                len: 2000
            }),
        ]
    );
    let saved: Saved = serde_json::from_str(plan.state.as_deref().unwrap()).unwrap();
    assert_eq!(
        saved,
        Saved {
            mac: Some("02:00:00:00:00:02".into()),
            mtu: Some(1500),
            promisc: Some(false),
            allmulti: Some(false),
            tx_qlen: Some(1000),
            sysctls: vec![("net/ipv4/conf/net1/arp_notify".into(), "0".into())],
        }
    );
    // The result is prevResult with the new MAC.
    let result = plan.cni_result.unwrap();
    assert_eq!(
        result.interfaces[0].mac.as_deref(),
        Some("c2:11:22:33:44:55")
    );
}

#[test]
fn only_changed_settings_are_saved_and_promisc_false_does_nothing() {
    let config = r#"{"cniVersion":"1.0.0","name":"t","type":"tuning","mtu":9000,"promisc":false}"#;
    let plan = TuningPlugin::handle(&host(), add_request(config)).unwrap();
    assert_eq!(plan.ops.len(), 1);
    assert_eq!(plan.state.as_deref(), Some(r#"{"mtu":1500}"#));
    assert_eq!(plan.cni_result.unwrap(), prev());
}

#[test]
fn the_mac_comes_from_args_then_runtime_config_then_config_then_cni_args() {
    let mac_of = |config: &str, cni_args: &[(&str, &str)]| {
        let mut request = add_request(config);
        request.args = cni_args
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        let plan = TuningPlugin::handle(&host(), request).unwrap();
        plan.ops.iter().find_map(|op| match op {
            NetlinkOp::SetMac(set) => Some(set.mac.clone()),
            _ => None,
        })
    };
    let args = [("IgnoreUnknown", "true"), ("MAC", "c2:00:00:00:00:01")];
    let base = r#""cniVersion":"1.0.0","name":"t","type":"tuning""#;
    assert_eq!(
        mac_of(&format!("{{{base}}}"), &args).as_deref(),
        Some("c2:00:00:00:00:01")
    );
    let config = format!(r#"{{{base},"mac":"c2:00:00:00:00:02"}}"#);
    assert_eq!(mac_of(&config, &args).as_deref(), Some("c2:00:00:00:00:02"));
    let config = format!(
        r#"{{{base},"mac":"c2:00:00:00:00:02","runtimeConfig":{{"mac":"C2-00-00-00-00-03"}}}}"#
    );
    assert_eq!(mac_of(&config, &args).as_deref(), Some("c2:00:00:00:00:03"));
    let config = format!(
        r#"{{{base},"mac":"c2:00:00:00:00:02","runtimeConfig":{{"mac":"c2:00:00:00:00:03"}},"args":{{"cni":{{"mac":"c2:00:00:00:00:04"}}}}}}"#
    );
    assert_eq!(mac_of(&config, &args).as_deref(), Some("c2:00:00:00:00:04"));
}

#[test]
fn bad_configs_name_what_is_wrong() {
    let cases = [
        (
            r#"{"cniVersion":"1.0.0","name":"t","type":"tuning","sysctl":{"net.core.somaxconn":"1024"}}"#,
            "own interface's sysctls",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"t","type":"tuning","sysctl":{"net.ipv4.conf.eth0.forwarding":"1"}}"#,
            "own interface's sysctls",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"t","type":"tuning","sysctl":{"net.ipv4.conf.IFNAME.arp_notify":"1","net/ipv4/conf/IFNAME/arp_notify":"0"}}"#,
            "duplicated sysctl keys",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"t","type":"tuning","mac":"01:00:5e:00:00:01"}"#,
            "multicast",
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"t","type":"tuning","sysctl":{"net.ipv4.conf.IFNAME.no_such":"1"}}"#,
            "does not exist",
        ),
    ];
    for (config, message) in cases {
        let err = TuningPlugin::handle(&host(), add_request(config)).unwrap_err();
        assert!(err.msg.contains(message), "{config}: {}", err.msg);
    }
    let err = TuningPlugin::handle(
        &host(),
        request(
            Command::Add,
            r#"{"cniVersion":"1.0.0","name":"t","type":"tuning"}"#,
        ),
    )
    .unwrap_err();
    assert_eq!(err.msg, "Required prevResult missing");
}

#[test]
fn del_restores_what_add_saved_and_nothing_without_state_or_link() {
    let add = TuningPlugin::handle(&host(), add_request(FULL)).unwrap();
    let mut del_request = request(Command::Del, FULL);
    del_request.prev_result = Some(prev());
    del_request.state = add.state.clone();
    // The link as ADD left it: new MAC, up.
    let changed = MockHost::new().with_macvlan(
        "net1",
        guest_sdk::MacvlanMode::Bridge,
        "c2:11:22:33:44:55",
        &[],
        Vec::new(),
    );
    let plan = TuningPlugin::handle(&changed, del_request.clone()).unwrap();
    let link = || "net1".to_string();
    assert_eq!(
        plan.ops,
        vec![
            NetlinkOp::SetSysctl(SetSysctl {
                key: "net/ipv4/conf/net1/arp_notify".into(),
                value: "0".into()
            }),
            NetlinkOp::SetLinkDown(link()),
            NetlinkOp::SetMac(SetMac {
                link: link(),
                mac: "02:00:00:00:00:02".into()
            }),
            NetlinkOp::SetLinkUp(link()),
            NetlinkOp::SetMtu(SetMtu {
                link: link(),
                mtu: 1500
            }),
            NetlinkOp::SetPromisc(SetFlag {
                link: link(),
                on: false
            }),
            NetlinkOp::SetAllmulti(SetFlag {
                link: link(),
                on: false
            }),
            NetlinkOp::SetTxqueuelen(SetTxqueuelen {
                link: link(),
                len: 1000
            }),
        ]
    );
    assert!(plan.state.is_none());
    let mut no_state = del_request.clone();
    no_state.state = None;
    assert!(
        TuningPlugin::handle(&changed, no_state)
            .unwrap()
            .ops
            .is_empty()
    );
    assert!(
        TuningPlugin::handle(&MockHost::new(), del_request)
            .unwrap()
            .ops
            .is_empty()
    );
}

#[test]
fn check_compares_the_link_with_the_config() {
    let config = r#"{"cniVersion":"1.0.0","name":"t","type":"tuning","mtu":1400}"#;
    let mut check_request = request(Command::Check, config);
    check_request.prev_result = Some(prev());
    let err = TuningPlugin::handle(&host(), check_request.clone()).unwrap_err();
    assert!(
        err.msg
            .contains("configured MTU of net1 is 1400, current value is 1500"),
        "{}",
        err.msg
    );
    let tuned = MockHost::new().with_link(Netns::Sandbox, "net1", 1400);
    TuningPlugin::handle(&tuned, check_request).unwrap();
}

#[test]
fn add_check_and_del_through_the_hosts_policy_leave_the_link_as_it_was() {
    let host = host().named("tuning");
    let before = host.get_link(Netns::Sandbox, "net1").unwrap();
    let add = add_request(FULL);
    let plan = TuningPlugin::handle(&host, add.clone()).unwrap();
    host.apply(&add, &plan).unwrap();
    let tuned = host.get_link(Netns::Sandbox, "net1").unwrap();
    assert_eq!(
        (
            tuned.mac.as_str(),
            tuned.mtu,
            tuned.promisc,
            tuned.allmulti,
            tuned.txqueuelen
        ),
        ("c2:11:22:33:44:55", 1400, true, true, 2000)
    );
    assert_eq!(
        host.sysctl("net/ipv4/conf/net1/arp_notify").as_deref(),
        Some("1")
    );

    let mut check = request(Command::Check, FULL);
    check.prev_result = plan.cni_result.clone();
    check.state = plan.state.clone();
    TuningPlugin::handle(&host, check).unwrap();

    let mut del = request(Command::Del, FULL);
    del.prev_result = plan.cni_result.clone();
    del.state = plan.state.clone();
    let restore = TuningPlugin::handle(&host, del.clone()).unwrap();
    host.apply(&del, &restore).unwrap();
    assert_eq!(host.get_link(Netns::Sandbox, "net1").unwrap(), before);
    assert_eq!(
        host.sysctl("net/ipv4/conf/net1/arp_notify").as_deref(),
        Some("0")
    );
}
