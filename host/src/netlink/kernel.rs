//! [`Kernel`] over netlink: the real kernel of one call. Sockets (and the
//! pod-namespace thread) are opened on first use, so a call that only runs
//! native plugins never opens one.

use std::sync::{Arc, Mutex, OnceLock};

use tokio::runtime::Runtime;

use super::Kernel;
use super::executor::{Executor, Journal, PendingGroupDelete, start_link_group_delete};
use super::handles::{Handles, NetnsError, NetnsFile};
use super::query::{self, GuestLinks, LinkQueries};
use crate::cni::CniError;
use crate::plan::{ApplyError, CheckedPlan, LinkInfo};

/// The kernel as one call sees it: the host namespace and the pod's.
pub struct NetlinkKernel {
    runtime: Arc<Runtime>,
    netns_path: String,
    netns: Option<NetnsFile>,
    handles: OnceLock<Handles>,
    /// Journals of applied plans, by the index [`Kernel::apply`] returned.
    journals: Mutex<Vec<Option<Journal>>>,
    pending_delete: Mutex<Option<PendingGroupDelete>>,
}

impl std::fmt::Debug for NetlinkKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkKernel")
            .field("netns", &self.netns_path)
            .finish()
    }
}

impl NetlinkKernel {
    /// The kernel of a call in `netns_path`. A netns that does not exist is
    /// fine here (DEL tolerates it; ADD checks [`Kernel::has_netns`]); a
    /// path that is not a network namespace is an error.
    pub fn new(runtime: Arc<Runtime>, netns_path: &str) -> Result<Self, CniError> {
        let netns = if netns_path.is_empty() {
            None
        } else {
            match NetnsFile::open(std::path::Path::new(netns_path)) {
                Ok(netns) => Some(netns),
                Err(NetnsError::Missing { .. }) => None,
                Err(err) => return Err(CniError::invalid_environment(err.to_string())),
            }
        };
        Ok(NetlinkKernel {
            runtime,
            netns_path: netns_path.into(),
            netns,
            handles: OnceLock::new(),
            journals: Mutex::new(Vec::new()),
            pending_delete: Mutex::new(None),
        })
    }

    fn handles(&self) -> Result<&Handles, CniError> {
        if let Some(handles) = self.handles.get() {
            return Ok(handles);
        }
        let _span = crate::timing::span("netlink");
        let handles = Handles::open(self.runtime.clone(), self.netns.as_ref())
            .map_err(|err| CniError::internal(err.to_string()))?;
        Ok(self.handles.get_or_init(|| handles))
    }

    fn executor(&self) -> Result<Executor<'_>, CniError> {
        let netns = self.netns.as_ref().ok_or_else(|| {
            CniError::invalid_environment(format!("netns {} does not exist", self.netns_path))
        })?;
        Ok(Executor::new(self.handles()?, netns))
    }
}

impl Kernel for NetlinkKernel {
    fn has_netns(&self) -> bool {
        self.netns.is_some()
    }

    fn pod_link(&self, name: &str) -> Result<Option<LinkInfo>, CniError> {
        if self.netns.is_none() {
            return Ok(None);
        }
        query::pod_link(self.handles()?, name).map_err(CniError::internal)
    }

    fn host_link(&self, name: &str) -> Result<Option<LinkInfo>, CniError> {
        query::host_link(self.handles()?, name).map_err(CniError::internal)
    }

    fn guest_links(
        &self,
        allowed_masters: Option<Vec<String>>,
        refusals: super::Refusals,
    ) -> Result<Box<dyn LinkQueries>, CniError> {
        Ok(Box::new(GuestLinks::new(
            self.handles()?.clone(),
            allowed_masters,
            refusals,
        )))
    }

    fn apply(&self, plan: &CheckedPlan) -> Result<usize, ApplyError> {
        let executor = self.executor().map_err(|err| ApplyError::Op {
            index: 0,
            op: plan
                .ops()
                .first()
                .map(|op| op.to_string())
                .unwrap_or_default(),
            reason: err.msg,
            undo_errors: Vec::new(),
        })?;
        let journal = executor.apply(plan)?;
        let mut journals = self.journals.lock().expect("journal lock");
        journals.push(Some(journal));
        Ok(journals.len() - 1)
    }

    fn undo(&self, applied: usize) -> Vec<String> {
        let journal = self
            .journals
            .lock()
            .expect("journal lock")
            .get_mut(applied)
            .and_then(Option::take);
        match (journal, self.executor()) {
            (Some(journal), Ok(executor)) => executor.undo(journal),
            (Some(_), Err(err)) => vec![err.msg],
            (None, _) => Vec::new(),
        }
    }

    fn start_group_delete(&self) -> Result<bool, String> {
        if self.netns.is_none() {
            return Ok(false);
        }
        let handles = self.handles().map_err(|err| err.msg)?;
        match start_link_group_delete(handles) {
            Some(Ok(pending)) => {
                *self.pending_delete.lock().expect("pending lock") = Some(pending);
                Ok(true)
            }
            Some(Err(err)) => Err(err),
            None => Ok(false),
        }
    }

    fn finish_group_delete(&self) -> Result<bool, String> {
        match self.pending_delete.lock().expect("pending lock").take() {
            Some(pending) => pending.wait(),
            None => Ok(false),
        }
    }
}
