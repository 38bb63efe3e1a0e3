//! The policy every plan passes before anything is applied.
//!
//! A plan may touch only the sandbox and only the interface its attachment
//! creates: `CNI_IFNAME`, or a temporary name that the same plan creates and
//! then renames to `CNI_IFNAME`. In the host namespace it may only name the
//! master of the one link it creates, and only a link nobody else depends
//! on (see [`MasterRules`]); the macvlan mode must be one the operator
//! allows on that master (`allowedMacvlanModes`). Sysctls are limited to the
//! interface's own `net/ipv4|ipv6/conf|neigh/<ifname>/<leaf>`, for writes
//! and reads alike. An ADD plan deletes nothing; a DEL plan only deletes
//! `CNI_IFNAME` or restores its settings (a chained plugin putting back what
//! its ADD changed); CHECK, STATUS and GC plans change nothing. A plan that
//! breaks any rule is refused whole.
//!
//! Architecture Invariant: the executor applies only plans this module has
//! accepted; this module is pure (no kernel access), so every rule is unit
//! tested.

use std::collections::{BTreeMap, HashSet};

use super::op::{LinkInfo, MacvlanMode, Op};
use super::{CheckedPlan, Plan};
use crate::cni::{CniCommand, validate_interface_name};

/// What the operator allows as a macvlan master (host config).
///
/// With `allowedMasters` set, exactly those host links may be masters.
/// Without it, a host link is a master only when it is an ordinary node
/// interface: a physical device (no kind), a bond, team or vlan, or a veth
/// whose peer is in the same namespace (as the seed's `ens3` here). Refused:
/// bridges, tunnels, dummies and other links created by network plugins, the
/// host end of a pod's or container's veth (peer in another namespace), and
/// links that do not exist.
#[derive(Debug, Clone, Copy)]
pub struct MasterRules<'a> {
    /// `allowedMasters`.
    pub allowed_masters: Option<&'a [String]>,
    /// `allowedMacvlanModes`: mode names per master, `"*"` for the rest.
    pub macvlan_modes: &'a BTreeMap<String, Vec<String>>,
}

/// Kinds of links that are ordinary node interfaces (`""`: no kind, a
/// physical device).
const ORDINARY_KINDS: &[&str] = &["", "bond", "team", "vlan", "veth"];

impl MasterRules<'_> {
    /// Whether host link `name` (as the kernel reports it, `None` when it
    /// does not exist) may be a master; the error says why not.
    pub fn check_host_master(&self, name: &str, link: Option<&LinkInfo>) -> Result<(), String> {
        let Some(link) = link else {
            return Err(format!(
                "master {name} does not exist in the host namespace"
            ));
        };
        if let Some(allowed) = self.allowed_masters {
            return if allowed.iter().any(|master| master == name) {
                Ok(())
            } else {
                Err(format!(
                    "master {name} is not in allowedMasters {allowed:?}"
                ))
            };
        }
        if !ORDINARY_KINDS.contains(&link.kind.as_str()) {
            return Err(format!(
                "master {name} is a {} link, which other pods or the node depend on; only ordinary node interfaces are masters unless allowedMasters lists it",
                link.kind
            ));
        }
        if link.kind == "veth" && link.peer_in_other_netns {
            return Err(format!(
                "master {name} is a veth whose peer is in another network namespace (a pod's or container's interface); only ordinary node interfaces are masters unless allowedMasters lists it"
            ));
        }
        Ok(())
    }

    /// Whether `mode` is allowed on `master`.
    pub fn check_mode(&self, master: &str, mode: MacvlanMode) -> Result<(), String> {
        let allowed = self
            .macvlan_modes
            .get(master)
            .or_else(|| self.macvlan_modes.get(crate::config::ANY_MASTER))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if allowed.iter().any(|name| name == mode.as_str()) {
            Ok(())
        } else {
            Err(format!(
                "macvlan mode {} is not allowed on master {master} (allowedMacvlanModes allows {allowed:?} there)",
                mode.as_str()
            ))
        }
    }
}

/// What a plan is checked against.
#[derive(Debug, Clone)]
pub struct PolicyContext<'a> {
    pub command: CniCommand,
    /// `CNI_IFNAME` of the attachment.
    pub ifname: &'a str,
    /// The operator's rules for masters.
    pub masters: MasterRules<'a>,
    /// The host links the plan names as masters, as read before the check
    /// (a name missing here does not exist).
    pub host_links: &'a BTreeMap<String, LinkInfo>,
}

/// A refused plan: which op broke which rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plan refused by policy: op {index} ({op}): {reason}")]
pub struct PolicyViolation {
    pub index: usize,
    pub op: String,
    pub reason: String,
}

/// CNI code of a policy refusal (plugin-specific range).
pub const POLICY_CODE: u32 = 107;

impl From<PolicyViolation> for crate::cni::CniError {
    fn from(violation: PolicyViolation) -> Self {
        crate::cni::CniError::new(POLICY_CODE, violation.to_string())
    }
}

/// A link name the kernel accepts: 1-15 bytes, no `/`, `:` or whitespace,
/// not `.` or `..`.
fn check_name(name: &str) -> Result<(), String> {
    validate_interface_name(name).map_err(|err| err.msg)
}

/// The host links `ops` name as masters: what the caller reads from the
/// kernel before [`check`].
pub fn host_masters(ops: &[Op]) -> Vec<&str> {
    ops.iter()
        .filter_map(|op| match op {
            Op::CreateMacvlan(create) if !create.master_in_sandbox => Some(create.master.as_str()),
            _ => None,
        })
        .collect()
}

/// Check a plugin's plan against the policy; only an accepted plan becomes
/// a [`CheckedPlan`].
pub fn check(plan: Plan, context: &PolicyContext<'_>) -> Result<CheckedPlan, PolicyViolation> {
    check_ops(&plan.ops, context)?;
    Ok(CheckedPlan::new(
        plan,
        context.ifname,
        context.command == CniCommand::Del,
    ))
}

/// Check the meta-plugin's own plan for the attachment `ifname`: it may
/// only remove and add default routes through `ifname` (the
/// `default-route` choice of the pod's annotation).
pub fn check_default_routes(plan: Plan, ifname: &str) -> Result<CheckedPlan, PolicyViolation> {
    for (index, op) in plan.ops.iter().enumerate() {
        let allowed = match op {
            Op::RemoveDefaultRoutes { link, .. } => link == ifname,
            Op::AddRoute(route) => route.link == ifname && route.dst.prefix_len() == 0,
            _ => false,
        };
        if !allowed {
            return Err(PolicyViolation {
                index,
                op: op.to_string(),
                reason: format!("the meta-plugin only edits default routes through {ifname}"),
            });
        }
    }
    Ok(CheckedPlan::new(plan, ifname, false))
}

fn check_ops(ops: &[Op], context: &PolicyContext<'_>) -> Result<(), PolicyViolation> {
    let ifname = context.ifname;
    let violation = |index: usize, op: &Op, reason: String| PolicyViolation {
        index,
        op: op.to_string(),
        reason,
    };
    match context.command {
        CniCommand::Check | CniCommand::Status | CniCommand::Gc | CniCommand::Version => {
            if let Some(op) = ops.first() {
                return Err(violation(
                    0,
                    op,
                    "CHECK, STATUS and GC plans may not change anything".into(),
                ));
            }
            return Ok(());
        }
        CniCommand::Del => {
            for (index, op) in ops.iter().enumerate() {
                let outcome = match op {
                    Op::DeleteLink { link } if link == ifname => Ok(()),
                    Op::DeleteLink { link } => {
                        Err(format!("a DEL plan may only delete {ifname}, not {link}"))
                    }
                    _ => match restore_target(op) {
                        Some(link) if link == ifname => check_setting(op),
                        Some(link) => Err(format!(
                            "a DEL plan may only restore the settings of {ifname}, not {link}"
                        )),
                        None => Err(format!(
                            "a DEL plan may only delete {ifname} or restore its settings (mtu, mac, up/down, promisc, allmulti, txqueuelen, sysctls)"
                        )),
                    },
                };
                outcome.map_err(|reason| violation(index, op, reason))?;
            }
            return Ok(());
        }
        CniCommand::Add => {}
    }

    // Temporary names: created by this plan and renamed to CNI_IFNAME later in it.
    let renamed_to_ifname: HashSet<&str> = ops
        .iter()
        .filter_map(|op| match op {
            Op::RenameLink { name, new_name } if new_name == ifname => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let mut live: HashSet<&str> = HashSet::new();
    let mut created = false;
    let ours = |live: &HashSet<&str>, link: &str| -> Result<(), String> {
        check_name(link)?;
        if link == ifname || live.contains(link) {
            Ok(())
        } else {
            Err(format!(
                "{link} is not the interface this attachment creates ({ifname})"
            ))
        }
    };

    for (index, op) in ops.iter().enumerate() {
        let outcome: Result<(), String> = match op {
            Op::CreateMacvlan(create) => (|| {
                if created {
                    return Err("a plan may create only one link".into());
                }
                check_name(&create.name)?;
                check_name(&create.master)?;
                if create.name != ifname && !renamed_to_ifname.contains(create.name.as_str()) {
                    return Err(format!(
                        "the link must be named {ifname} or renamed to it by the same plan, not {}",
                        create.name
                    ));
                }
                if create.master == create.name || create.master == ifname {
                    return Err(format!("{} cannot be its own master", create.master));
                }
                if !create.master_in_sandbox {
                    context.masters.check_host_master(
                        &create.master,
                        context.host_links.get(&create.master),
                    )?;
                }
                context.masters.check_mode(&create.master, create.mode)?;
                created = true;
                if create.name != ifname {
                    live.insert(create.name.as_str());
                }
                Ok(())
            })(),
            Op::RenameLink { name, new_name } => (|| {
                check_name(new_name)?;
                if new_name != ifname {
                    return Err(format!("links may only be renamed to {ifname}"));
                }
                if !live.remove(name.as_str()) {
                    return Err(format!("{name} is not a link this plan created"));
                }
                Ok(())
            })(),
            Op::AddAddress { link, .. } => ours(&live, link),
            Op::AddRoute(route) => ours(&live, &route.link),
            Op::SetLinkUp { .. }
            | Op::SetLinkDown { .. }
            | Op::SetMtu { .. }
            | Op::SetMac { .. }
            | Op::SetPromisc { .. }
            | Op::SetAllmulti { .. }
            | Op::SetTxQueueLen { .. }
            | Op::SetSysctl { .. } => (|| {
                let link = restore_target(op).ok_or_else(|| {
                    "sysctl keys are net/ipv4|ipv6/conf|neigh/<interface>/<name>".to_string()
                })?;
                ours(&live, link)?;
                check_setting(op)
            })(),
            Op::DeleteLink { .. } => Err("an ADD plan may not delete links".into()),
            Op::RemoveDefaultRoutes { .. } => {
                Err("only the meta-plugin removes default routes".into())
            }
        };
        outcome.map_err(|reason| violation(index, op, reason))?;
    }
    Ok(())
}

/// The largest transmit queue a plan may set (the kernel's default is 1000).
pub const MAX_TXQUEUELEN: u32 = 100_000;

/// The link a setting op (one a DEL plan may use to restore what an ADD
/// changed) acts on; `None` for other ops and for a sysctl key outside the
/// allowed shapes.
fn restore_target(op: &Op) -> Option<&str> {
    match op {
        Op::SetLinkUp { link }
        | Op::SetLinkDown { link }
        | Op::SetMtu { link, .. }
        | Op::SetMac { link, .. }
        | Op::SetPromisc { link, .. }
        | Op::SetAllmulti { link, .. }
        | Op::SetTxQueueLen { link, .. } => Some(link),
        Op::SetSysctl { key, .. } => sysctl_interface(key),
        _ => None,
    }
}

/// The value rules of setting ops, whoever's link they name.
fn check_setting(op: &Op) -> Result<(), String> {
    match op {
        Op::SetSysctl { value, .. } if value.len() > 64 || value.chars().any(char::is_control) => {
            Err("sysctl values are short single-line strings".into())
        }
        Op::SetTxQueueLen { len, .. } if *len > MAX_TXQUEUELEN => Err(format!(
            "a transmit queue of {len} packets is over the limit of {MAX_TXQUEUELEN}"
        )),
        Op::SetMac { mac, .. } if mac.0[0] & 1 == 1 || mac.0 == [0; 6] => Err(format!(
            "{mac} is a multicast or zero address, not one an interface can have"
        )),
        _ => Ok(()),
    }
}

/// The interface a sysctl key is under, if it has one of the allowed
/// shapes `net/ipv4|ipv6/conf/<ifname>/<leaf>` or
/// `net/ipv4|ipv6/neigh/<ifname>/<leaf>` (relative to `/proc/sys`).
pub fn sysctl_interface(key: &str) -> Option<&str> {
    let mut parts = key.split('/');
    let (Some("net"), Some(family), Some(section), Some(interface), Some(leaf), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let leaf_ok = !leaf.is_empty()
        && leaf
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
    let interface_ok = !matches!(interface, "all" | "default" | "." | ".." | "");
    (matches!(family, "ipv4" | "ipv6")
        && matches!(section, "conf" | "neigh")
        && leaf_ok
        && interface_ok)
        .then_some(interface)
}

/// Whether a plugin working on attachment `ifname` may read sysctl `key`
/// (ABI 0.2.0 `read-sysctl`): the same keys it may write.
pub fn check_sysctl_read(key: &str, ifname: &str) -> Result<(), String> {
    match sysctl_interface(key) {
        Some(interface) if interface == ifname => Ok(()),
        Some(interface) => Err(format!(
            "sysctl {key} is under {interface}, not the interface of this attachment ({ifname})"
        )),
        None => Err(format!(
            "sysctl {key} is outside net/ipv4|ipv6/conf|neigh/<interface>/<name>"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::op::{AddRoute, CreateMacvlan, MacvlanMode};

    fn create(name: &str, master: &str) -> Op {
        Op::CreateMacvlan(CreateMacvlan {
            name: name.into(),
            master: master.into(),
            master_in_sandbox: false,
            mode: MacvlanMode::Bridge,
            mtu: None,
            mac: None,
        })
    }

    fn link(name: &str, kind: &str, peer_in_other_netns: bool) -> LinkInfo {
        LinkInfo {
            name: name.into(),
            index: 2,
            mtu: 1500,
            mac: None,
            kind: kind.into(),
            up: true,
            macvlan_mode: None,
            promisc: false,
            allmulti: false,
            txqueuelen: 1000,
            master: None,
            master_mtu: None,
            peer_in_other_netns,
        }
    }

    /// Every setting op (ABI 0.1.0 and 0.2.0) on `link`.
    fn settings(link: &str) -> Vec<Op> {
        let link = link.to_string();
        vec![
            Op::SetLinkDown { link: link.clone() },
            Op::SetMac {
                link: link.clone(),
                mac: "c2:11:22:33:44:55".parse().unwrap(),
            },
            Op::SetMtu {
                link: link.clone(),
                mtu: 1400,
            },
            Op::SetPromisc {
                link: link.clone(),
                on: true,
            },
            Op::SetAllmulti {
                link: link.clone(),
                on: false,
            },
            Op::SetTxQueueLen {
                link: link.clone(),
                len: 2000,
            },
            Op::SetSysctl {
                key: format!("net/ipv4/neigh/{link}/base_reachable_time_ms"),
                value: "30000".into(),
            },
            Op::SetSysctl {
                key: format!("net/ipv6/conf/{link}/accept_ra"),
                value: "0".into(),
            },
            Op::SetLinkUp { link },
        ]
    }

    #[test]
    fn a_chained_plugin_sets_and_restores_only_its_interface() {
        for command in [CniCommand::Add, CniCommand::Del] {
            let context = PolicyContext {
                command,
                ..add_context()
            };
            check_ops(&settings("net1"), &context)
                .unwrap_or_else(|err| panic!("{command:?}: {err}"));
            for (index, op) in settings("eth0").into_iter().enumerate() {
                let err = check_ops(&[op], &context).unwrap_err();
                assert!(err.reason.contains("eth0"), "{command:?} {index}: {err}");
            }
        }
        let del = PolicyContext {
            command: CniCommand::Del,
            ..add_context()
        };
        let address = Op::AddAddress {
            link: "net1".into(),
            address: "10.0.0.2/24".parse().unwrap(),
        };
        let err = check_ops(&[address], &del).unwrap_err();
        assert!(err.reason.contains("restore its settings"), "{err}");
        let err = check_ops(&[create("net1", "ens3")], &del).unwrap_err();
        assert!(err.reason.contains("restore its settings"), "{err}");
    }

    #[test]
    fn setting_values_are_bounded() {
        let cases = [
            (
                Op::SetTxQueueLen {
                    link: "net1".into(),
                    len: MAX_TXQUEUELEN + 1,
                },
                "over the limit",
            ),
            (
                Op::SetMac {
                    link: "net1".into(),
                    mac: "01:00:5e:00:00:01".parse().unwrap(),
                },
                "multicast",
            ),
            (
                Op::SetSysctl {
                    key: "net/ipv4/conf/net1/arp_notify".into(),
                    value: "1\n2".into(),
                },
                "single-line",
            ),
        ];
        for command in [CniCommand::Add, CniCommand::Del] {
            let context = PolicyContext {
                command,
                ..add_context()
            };
            for (op, reason) in &cases {
                let err = check_ops(std::slice::from_ref(op), &context).unwrap_err();
                assert!(err.reason.contains(reason), "{command:?}: {err}");
            }
        }
    }

    #[test]
    fn sysctl_reads_are_the_keys_a_plan_may_write() {
        check_sysctl_read("net/ipv4/conf/net1/arp_notify", "net1").unwrap();
        check_sysctl_read("net/ipv6/neigh/net1/retrans_time_ms", "net1").unwrap();
        let err = check_sysctl_read("net/ipv4/conf/eth0/forwarding", "net1").unwrap_err();
        assert!(err.contains("not the interface"), "{err}");
        for key in [
            "net/ipv4/ip_forward",
            "kernel/hostname",
            "net/ipv4/conf/all/forwarding",
            "net/ipv4/conf/net1/../../../../kernel/hostname",
        ] {
            let err = check_sysctl_read(key, "net1").unwrap_err();
            assert!(err.contains("outside"), "{key}: {err}");
        }
    }

    fn default_modes() -> &'static BTreeMap<String, Vec<String>> {
        static MODES: std::sync::LazyLock<BTreeMap<String, Vec<String>>> =
            std::sync::LazyLock::new(|| {
                BTreeMap::from([(
                    "*".to_string(),
                    vec!["bridge".into(), "private".into(), "vepa".into()],
                )])
            });
        &MODES
    }

    fn host_links() -> &'static BTreeMap<String, LinkInfo> {
        static LINKS: std::sync::LazyLock<BTreeMap<String, LinkInfo>> =
            std::sync::LazyLock::new(|| {
                [
                    link("ens3", "veth", false),
                    link("eth0", "", false),
                    link("ens3-peer", "veth", false),
                    link("veth1a2b3c4d", "veth", true),
                    link("cni0", "bridge", false),
                    link("flannel.1", "vxlan", false),
                    link("bond0", "bond", false),
                ]
                .into_iter()
                .map(|info| (info.name.clone(), info))
                .collect()
            });
        &LINKS
    }

    fn add_context() -> PolicyContext<'static> {
        PolicyContext {
            command: CniCommand::Add,
            ifname: "net1",
            masters: MasterRules {
                allowed_masters: None,
                macvlan_modes: default_modes(),
            },
            host_links: host_links(),
        }
    }

    fn seed_plan() -> Vec<Op> {
        vec![
            create("net1", "ens3"),
            Op::SetSysctl {
                key: "net/ipv4/conf/net1/arp_notify".into(),
                value: "1".into(),
            },
            Op::AddAddress {
                link: "net1".into(),
                address: "192.168.1.200/24".parse().unwrap(),
            },
            Op::SetLinkUp {
                link: "net1".into(),
            },
            Op::AddRoute(AddRoute {
                link: "net1".into(),
                dst: "0.0.0.0/0".parse().unwrap(),
                gateway: Some("192.168.1.1".parse().unwrap()),
                metric: None,
                table: None,
                scope: None,
            }),
        ]
    }

    #[test]
    fn the_seed_plan_is_accepted() {
        check_ops(&seed_plan(), &add_context()).unwrap();
    }

    #[test]
    fn a_temporary_name_is_accepted_only_when_renamed_to_ifname() {
        let plan = vec![
            create("mv1234abcd", "ens3"),
            Op::RenameLink {
                name: "mv1234abcd".into(),
                new_name: "net1".into(),
            },
            Op::SetLinkUp {
                link: "net1".into(),
            },
        ];
        check_ops(&plan, &add_context()).unwrap();
        let never_renamed = vec![create("mv1234abcd", "ens3")];
        let err = check_ops(&never_renamed, &add_context()).unwrap_err();
        assert_eq!(err.index, 0);
        assert!(err.reason.contains("renamed"), "{err}");
        let used_after_rename = vec![
            create("mvtmp", "ens3"),
            Op::RenameLink {
                name: "mvtmp".into(),
                new_name: "net1".into(),
            },
            Op::SetLinkUp {
                link: "mvtmp".into(),
            },
        ];
        assert_eq!(
            check_ops(&used_after_rename, &add_context())
                .unwrap_err()
                .index,
            2
        );
    }

    #[test]
    fn hostile_plans_are_refused_naming_the_op() {
        let cases: Vec<(Vec<Op>, usize, &str)> = vec![
            (
                vec![Op::SetLinkUp {
                    link: "eth0".into(),
                }],
                0,
                "not the interface",
            ),
            (
                vec![create("net1", "ens3"), create("net1", "ens3")],
                1,
                "only one link",
            ),
            (
                vec![Op::SetSysctl {
                    key: "net/ipv4/ip_forward".into(),
                    value: "1".into(),
                }],
                0,
                "sysctl keys are",
            ),
            (
                vec![Op::SetSysctl {
                    key: "net/ipv4/conf/all/forwarding".into(),
                    value: "1".into(),
                }],
                0,
                "sysctl keys are",
            ),
            (
                vec![Op::SetSysctl {
                    key: "net/ipv4/conf/eth0/forwarding".into(),
                    value: "1".into(),
                }],
                0,
                "not the interface",
            ),
            (
                vec![Op::SetSysctl {
                    key: "net/ipv4/conf/net1/../../../kernel/x".into(),
                    value: "1".into(),
                }],
                0,
                "sysctl keys are",
            ),
            (vec![create("net1", "net1")], 0, "its own master"),
            (vec![create("averyveryverylongname", "ens3")], 0, ""),
            (
                vec![Op::DeleteLink {
                    link: "net1".into(),
                }],
                0,
                "may not delete",
            ),
            (
                vec![Op::RenameLink {
                    name: "eth0".into(),
                    new_name: "net1".into(),
                }],
                0,
                "not a link this plan created",
            ),
        ];
        for (plan, index, reason) in cases {
            let err = check_ops(&plan, &add_context()).unwrap_err();
            assert_eq!(err.index, index, "{err}");
            assert!(err.reason.contains(reason), "{err}");
        }
    }

    #[test]
    fn masters_outside_allowed_masters_are_refused() {
        let allowed = vec!["ens3".to_string(), "cni0".to_string()];
        let context = PolicyContext {
            masters: MasterRules {
                allowed_masters: Some(&allowed),
                macvlan_modes: default_modes(),
            },
            ..add_context()
        };
        check_ops(&seed_plan(), &context).unwrap();
        let err = check_ops(&[create("net1", "eth0")], &context).unwrap_err();
        assert!(err.reason.contains("allowedMasters"), "{err}");
        // The operator's explicit choice wins over the kind rules.
        check_ops(&[create("net1", "cni0")], &context).unwrap();
    }

    #[test]
    fn without_allowed_masters_only_ordinary_node_interfaces_are_masters() {
        for master in ["ens3", "eth0", "bond0"] {
            check_ops(&[create("net1", master)], &add_context())
                .unwrap_or_else(|err| panic!("{master}: {err}"));
        }
        let cases = [
            ("veth1a2b3c4d", "peer is in another network namespace"),
            ("cni0", "is a bridge link"),
            ("flannel.1", "is a vxlan link"),
            ("nonexistent", "does not exist in the host namespace"),
        ];
        for (master, reason) in cases {
            let err = check_ops(&[create("net1", master)], &add_context()).unwrap_err();
            assert_eq!(err.index, 0);
            assert!(err.reason.contains(reason), "{master}: {err}");
        }
    }

    #[test]
    fn passthru_and_source_need_the_operator() {
        let with_mode = |master: &str, mode: MacvlanMode, in_sandbox: bool| {
            Op::CreateMacvlan(CreateMacvlan {
                name: "net1".into(),
                master: master.into(),
                master_in_sandbox: in_sandbox,
                mode,
                mtu: None,
                mac: None,
            })
        };
        for mode in [MacvlanMode::Bridge, MacvlanMode::Private, MacvlanMode::Vepa] {
            check_ops(&[with_mode("ens3", mode, false)], &add_context()).unwrap();
        }
        for mode in [MacvlanMode::Passthru, MacvlanMode::Source] {
            for in_sandbox in [false, true] {
                let err =
                    check_ops(&[with_mode("ens3", mode, in_sandbox)], &add_context()).unwrap_err();
                assert!(err.reason.contains("allowedMacvlanModes"), "{err}");
            }
        }
        let per_master = BTreeMap::from([
            ("*".to_string(), vec!["bridge".to_string()]),
            ("ens3".to_string(), vec!["passthru".to_string()]),
        ]);
        let context = PolicyContext {
            masters: MasterRules {
                allowed_masters: None,
                macvlan_modes: &per_master,
            },
            ..add_context()
        };
        check_ops(&[with_mode("ens3", MacvlanMode::Passthru, false)], &context).unwrap();
        assert!(check_ops(&[with_mode("ens3", MacvlanMode::Bridge, false)], &context).is_err());
        assert!(check_ops(&[with_mode("eth0", MacvlanMode::Passthru, false)], &context).is_err());
        check_ops(&[with_mode("eth0", MacvlanMode::Bridge, false)], &context).unwrap();
    }

    #[test]
    fn del_check_status_and_gc_plans_are_limited() {
        let del = PolicyContext {
            command: CniCommand::Del,
            ..add_context()
        };
        check_ops(
            &[Op::DeleteLink {
                link: "net1".into(),
            }],
            &del,
        )
        .unwrap();
        assert!(
            check_ops(
                &[Op::DeleteLink {
                    link: "eth0".into()
                }],
                &del
            )
            .is_err()
        );
        assert!(check_ops(&seed_plan(), &del).is_err());
        for command in [CniCommand::Check, CniCommand::Status, CniCommand::Gc] {
            let context = PolicyContext {
                command,
                ..add_context()
            };
            check_ops(&[], &context).unwrap();
            assert!(
                check_ops(
                    &[Op::SetLinkUp {
                        link: "net1".into()
                    }],
                    &context
                )
                .is_err()
            );
        }
    }

    #[test]
    fn only_checked_plans_come_out_and_default_route_plans_stay_on_their_link() {
        let checked = check(Plan::of_ops(seed_plan()), &add_context()).unwrap();
        assert_eq!(checked.ops(), seed_plan().as_slice());
        assert_eq!(checked.ifname(), "net1");
        let remove = |link: &str| Op::RemoveDefaultRoutes {
            link: link.into(),
            family: crate::plan::IpFamily::V4,
        };
        let gateway = Op::AddRoute(AddRoute {
            link: "net1".into(),
            dst: "0.0.0.0/0".parse().unwrap(),
            gateway: Some("192.168.1.1".parse().unwrap()),
            metric: None,
            table: None,
            scope: None,
        });
        check_default_routes(Plan::of_ops(vec![remove("net1"), gateway.clone()]), "net1").unwrap();
        assert!(check_default_routes(Plan::of_ops(vec![remove("eth0")]), "net1").is_err());
        assert!(check_default_routes(Plan::of_ops(seed_plan()), "net1").is_err());
        // A plugin cannot ask for the meta-plugin's op.
        let err = check_ops(&[remove("net1")], &add_context()).unwrap_err();
        assert!(err.reason.contains("only the meta-plugin"), "{err}");
    }

    #[test]
    fn sysctl_keys_name_their_interface() {
        assert_eq!(
            sysctl_interface("net/ipv6/conf/net1/ndisc_notify"),
            Some("net1")
        );
        assert_eq!(
            sysctl_interface("net/ipv4/conf/net1/arp_notify"),
            Some("net1")
        );
        assert_eq!(
            sysctl_interface("net/ipv4/neigh/net1/base_reachable_time_ms"),
            Some("net1")
        );
        assert_eq!(sysctl_interface("net/ipv4/route/net1/x"), None);
        assert_eq!(sysctl_interface("net/ipv4/neigh/default/gc_thresh1"), None);
        assert_eq!(sysctl_interface("net/ipv4/conf/default/arp_notify"), None);
        assert_eq!(sysctl_interface("net/ipv4/conf/net1/ARP"), None);
    }
}
