//! Netlink: the plan's operations (`op`), and later the executor that
//! applies them in the pod's namespace.

pub mod executor;
pub mod handles;
pub mod op;
pub mod policy;
pub mod query;

pub use op::{CreateMacvlan, IpFamily, LinkInfo, MacAddr, MacvlanMode, Netns, Op, RouteScope};

use crate::cni::CniResult;

/// What a delegate plugin returns, converted and checked by the sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// The CNI result (ADD); `None` for other commands.
    pub result: Option<CniResult>,
}
