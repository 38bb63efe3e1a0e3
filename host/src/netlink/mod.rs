//! Netlink: the executor that applies checked plans in the pod's namespace,
//! the sockets and the pod-namespace thread it uses, and the query side
//! (links, routes, addresses) that answers guests and the host. The rest of
//! the host reaches the kernel only through [`Kernel`].

pub mod executor;
pub mod handles;
pub mod kernel;
pub mod query;

pub use crate::plan::{
    CreateMacvlan, IpFamily, LinkInfo, MacAddr, MacvlanMode, Netns, Op, Plan, RouteScope,
};

use std::sync::{Arc, Mutex};

use crate::cni::CniError;
use crate::plan::{ApplyError, CheckedPlan};
use query::LinkQueries;

/// Host links hidden from a guest's queries, with the reason (see
/// [`query::GuestLinks`]).
pub type Refusals = Arc<Mutex<Vec<String>>>;

/// The kernel as one call sees it: the pod's network namespace and the
/// host's. The only way to change it is [`Kernel::apply`] with a plan the
/// policy checked; everything else reads.
pub trait Kernel {
    /// Whether the pod's network namespace exists.
    fn has_netns(&self) -> bool;
    /// A link of the pod by name.
    fn pod_link(&self, name: &str) -> Result<Option<LinkInfo>, CniError>;
    /// A link of the host namespace by name.
    fn host_link(&self, name: &str) -> Result<Option<LinkInfo>, CniError>;
    /// The link queries a guest gets: host links limited to what may be a
    /// master under `allowed_masters`, hidden ones recorded in `refusals`.
    fn guest_links(
        &self,
        allowed_masters: Option<Vec<String>>,
        refusals: Refusals,
    ) -> Result<Box<dyn LinkQueries>, CniError>;
    /// Apply a checked plan; on failure everything it applied is undone.
    /// Returns a handle for [`Kernel::undo`].
    fn apply(&self, plan: &CheckedPlan) -> Result<usize, ApplyError>;
    /// Undo an applied plan in reverse; returns the errors (it keeps going).
    fn undo(&self, applied: usize) -> Vec<String>;
    /// Start deleting every link plans created in the pod, in one kernel
    /// batch; `Ok(false)` when there is no pod namespace.
    fn start_group_delete(&self) -> Result<bool, String>;
    /// Wait for the batch delete; whether it deleted anything.
    fn finish_group_delete(&self) -> Result<bool, String>;
}
