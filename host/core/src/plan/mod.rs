//! Plans: what a plugin (or the meta-plugin itself) wants done to the
//! kernel, as typed ops, and the policy that turns a plan into a
//! [`CheckedPlan`], the only thing the executor applies.
//!
//! Architecture Invariant: a [`CheckedPlan`] can only be made by
//! [`policy`]; nothing reaches the kernel that the policy did not accept.

pub mod ipam;
pub mod op;
pub mod policy;

pub use op::{
    AddRoute, CreateMacvlan, IpFamily, LinkInfo, MacAddr, MacvlanMode, Netns, Op, RouteScope,
};

use crate::cni::CniResult;

/// What a delegate plugin returns, converted by the sandbox: ops plus the
/// CNI result (ADD).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// The CNI result (ADD); `None` for other commands.
    pub result: Option<CniResult>,
    /// What the plugin keeps for this attachment (ABI 0.2.0, ADD): stored
    /// with the attachment cache once the ADD succeeds, handed back to the
    /// plugin on CHECK and DEL, removed with the cache.
    pub state: Option<String>,
}

impl Plan {
    /// A plan of `ops` with no result (the meta-plugin's own edits).
    pub fn of_ops(ops: Vec<Op>) -> Plan {
        Plan {
            ops,
            result: None,
            state: None,
        }
    }
}

/// A plan the policy accepted, for the attachment's interface `ifname`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedPlan {
    ops: Vec<Op>,
    result: Option<CniResult>,
    state: Option<String>,
    ifname: String,
    /// Checked as a DEL plan: its setting ops restore an interface that may
    /// already be gone.
    del: bool,
}

impl CheckedPlan {
    /// Only the policy makes checked plans.
    fn new(plan: Plan, ifname: &str, del: bool) -> CheckedPlan {
        CheckedPlan {
            ops: plan.ops,
            result: plan.result,
            state: plan.state,
            ifname: ifname.into(),
            del,
        }
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Whether the plan was checked as a DEL plan (its setting ops restore
    /// an interface DEL may find gone: the executor skips those).
    pub fn is_del(&self) -> bool {
        self.del
    }

    /// The interface the plan was checked for.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The plan's CNI result, taken out (the ops stay checked).
    pub fn take_result(&mut self) -> Option<CniResult> {
        self.result.take()
    }

    /// The plugin's per-attachment state, taken out.
    pub fn take_state(&mut self) -> Option<String> {
        self.state.take()
    }
}

/// Why a checked plan could not be applied; everything it applied before
/// the failure has been undone (the undo's own failures are listed).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An op failed in the kernel; everything applied before it was undone.
    #[error("op {index} ({op}) failed: {reason}{}", undo_note(.undo_errors))]
    Op {
        index: usize,
        op: String,
        reason: String,
        undo_errors: Vec<String>,
    },
    /// The test hook fired.
    #[error("injected fault before op {index} ({op}){}", undo_note(.undo_errors))]
    Injected {
        index: usize,
        op: String,
        undo_errors: Vec<String>,
    },
}

fn undo_note(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!("; undoing it also failed: {}", errors.join("; "))
    }
}

impl From<ApplyError> for crate::cni::CniError {
    fn from(err: ApplyError) -> Self {
        crate::cni::CniError::internal(err.to_string())
    }
}
