//! A delegate that misbehaves on request. Its netconf's `behaviour` picks
//! what it does, so one component exercises every sandbox limit and every
//! policy rule:
//!
//! - `loop`: spins forever (deadline, fuel);
//! - `memory-bomb`: allocates until it cannot (memory cap);
//! - `recursion`: recurses without bound (wasm stack);
//! - `huge-plan`: returns `count` ops (op cap);
//! - `long-string`: returns an op whose link name is `count` bytes (string cap);
//! - `panic`: panics with `message`;
//! - `print`: writes `message` to stdout and stderr, then returns an empty plan;
//! - `print-lines`: writes `count` numbered lines `<message> <n>` to stdout,
//!   then returns an empty plan (log line cap);
//! - `sleep`: `std::thread::sleep` for `count` milliseconds, then returns an
//!   empty plan (built for wasm32-wasip2, the sleep waits in `wasi:io/poll`);
//! - `error`: returns a CNI error with `code`, `message` and `details`;
//! - `plan`: returns the ops in `ops` verbatim (policy tests), `del_ops`
//!   instead on DEL when given, and `state` as its state;
//! - `log`: logs `message` at every level and returns an empty plan;
//! - `huge-state`: an empty plan whose state is `count` bytes;
//! - `read-sysctl`: fails with what `read-sysctl` of key `message` returned;
//! - `link-info`: fails with what `get-link` of pod link `message` returned.

use guest_sdk::{
    AddAddress, AddRoute, CreateMacvlan, Delegate, Host, Level, MacvlanMode, NetlinkOp, Plan,
    PluginError, RenameLink, Request, SetFlag, SetMac, SetMtu, SetSysctl, SetTxqueuelen,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Conf {
    behaviour: String,
    #[serde(default)]
    count: usize,
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: u32,
    #[serde(default)]
    details: String,
    #[serde(default)]
    ops: Vec<OpSpec>,
    /// The ops of DEL, when different from `ops`.
    #[serde(default)]
    del_ops: Option<Vec<OpSpec>>,
    /// The state an ADD keeps (so that DEL runs even in a batch delete).
    #[serde(default)]
    state: Option<String>,
}

/// The ops a `plan` behaviour returns, in a JSON form.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
enum OpSpec {
    CreateMacvlan {
        name: String,
        master: String,
        #[serde(default)]
        master_in_sandbox: bool,
    },
    RenameLink {
        name: String,
        new_name: String,
    },
    SetLinkUp {
        link: String,
    },
    SetMtu {
        link: String,
        mtu: u32,
    },
    SetMac {
        link: String,
        mac: String,
    },
    AddAddress {
        link: String,
        address: String,
    },
    AddRoute {
        link: String,
        dst: String,
        #[serde(default)]
        gateway: Option<String>,
    },
    SetSysctl {
        key: String,
        value: String,
    },
    DeleteLink {
        link: String,
    },
    SetLinkDown {
        link: String,
    },
    SetPromisc {
        link: String,
        on: bool,
    },
    SetAllmulti {
        link: String,
        on: bool,
    },
    SetTxqueuelen {
        link: String,
        len: u32,
    },
}

impl From<OpSpec> for NetlinkOp {
    fn from(spec: OpSpec) -> Self {
        match spec {
            OpSpec::CreateMacvlan {
                name,
                master,
                master_in_sandbox,
            } => NetlinkOp::CreateMacvlan(CreateMacvlan {
                name,
                master,
                master_in_sandbox,
                mode: MacvlanMode::Bridge,
                mtu: None,
                mac: None,
            }),
            OpSpec::RenameLink { name, new_name } => {
                NetlinkOp::RenameLink(RenameLink { name, new_name })
            }
            OpSpec::SetLinkUp { link } => NetlinkOp::SetLinkUp(link),
            OpSpec::SetMtu { link, mtu } => NetlinkOp::SetMtu(SetMtu { link, mtu }),
            OpSpec::SetMac { link, mac } => NetlinkOp::SetMac(SetMac { link, mac }),
            OpSpec::AddAddress { link, address } => {
                NetlinkOp::AddAddress(AddAddress { link, address })
            }
            OpSpec::AddRoute { link, dst, gateway } => NetlinkOp::AddRoute(AddRoute {
                link,
                dst,
                gateway,
                metric: None,
                table: None,
                scope: None,
            }),
            OpSpec::SetSysctl { key, value } => NetlinkOp::SetSysctl(SetSysctl { key, value }),
            OpSpec::DeleteLink { link } => NetlinkOp::DeleteLink(link),
            OpSpec::SetLinkDown { link } => NetlinkOp::SetLinkDown(link),
            OpSpec::SetPromisc { link, on } => NetlinkOp::SetPromisc(SetFlag { link, on }),
            OpSpec::SetAllmulti { link, on } => NetlinkOp::SetAllmulti(SetFlag { link, on }),
            OpSpec::SetTxqueuelen { link, len } => {
                NetlinkOp::SetTxqueuelen(SetTxqueuelen { link, len })
            }
        }
    }
}

pub struct Hostile;

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64, sink: &mut [u64; 16]) -> u64 {
    sink[(depth % 16) as usize] = depth;
    let mut local = [depth; 16];
    local[0] = recurse(depth + 1, &mut local);
    local[0] + sink[0]
}

impl Delegate for Hostile {
    fn handle(host: &dyn Host, request: Request) -> Result<Plan, PluginError> {
        let conf: Conf = guest_sdk::netconf::parse(&request.config)?;
        match conf.behaviour.as_str() {
            "loop" => {
                let mut counter: u64 = 0;
                loop {
                    counter = std::hint::black_box(counter.wrapping_add(1));
                }
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "recursion" => {
                let mut sink = [0u64; 16];
                let total = recurse(0, &mut sink);
                Err(PluginError::internal(format!("unreachable: {total}")))
            }
            "huge-plan" => Ok(Plan {
                ops: (0..conf.count)
                    .map(|_| NetlinkOp::SetLinkUp(request.ifname.clone()))
                    .collect(),
                cni_result: None,
                state: None,
            }),
            "long-string" => Ok(Plan {
                ops: vec![NetlinkOp::SetLinkUp("x".repeat(conf.count))],
                cni_result: None,
                state: None,
            }),
            "huge-state" => Ok(Plan {
                ops: Vec::new(),
                cni_result: None,
                state: Some("s".repeat(conf.count)),
            }),
            "link-info" => Err(PluginError::internal(format!(
                "link-info {}: {:?}",
                conf.message,
                host.get_link(guest_sdk::Netns::Sandbox, &conf.message)
            ))),
            "read-sysctl" => Err(PluginError::internal(format!(
                "read-sysctl {}: {:?}",
                conf.message,
                host.read_sysctl(&conf.message)
            ))),
            "panic" => panic!("{}", conf.message),
            "print" => {
                println!("{}", conf.message);
                eprintln!("{}", conf.message);
                Ok(Plan::empty())
            }
            "print-lines" => {
                for n in 0..conf.count {
                    println!("{} {n}", conf.message);
                }
                Ok(Plan::empty())
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(conf.count as u64));
                Ok(Plan::empty())
            }
            "error" => Err(PluginError::new(conf.code, conf.message).with_details(conf.details)),
            "log" => {
                for level in [
                    Level::Error,
                    Level::Warn,
                    Level::Info,
                    Level::Debug,
                    Level::Trace,
                ] {
                    host.log(level, &conf.message);
                }
                Ok(Plan::empty())
            }
            "plan" => {
                let ops = match (request.command, conf.del_ops) {
                    (guest_sdk::Command::Del, Some(del_ops)) => del_ops,
                    _ => conf.ops,
                };
                Ok(Plan {
                    ops: ops.into_iter().map(NetlinkOp::from).collect(),
                    cni_result: None,
                    state: conf.state,
                })
            }
            other => Err(PluginError::invalid_config(format!(
                "unknown behaviour {other:?}"
            ))),
        }
    }
}

guest_sdk::export_plugin!(delegate: Hostile);
