//! Netlink handles: one socket in the host namespace and, when there is a
//! pod, one socket created inside the pod's namespace and kept for the whole
//! call (a netlink socket stays bound to the namespace it was created in).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rtnetlink::Handle;
use tokio::runtime::Runtime;

/// nsfs, where `/run/netns/*` bind mounts and `/proc/<pid>/ns/net` live.
const NSFS_MAGIC: i64 = 0x6e73_6673;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The netns path does not exist (the pod is gone).
    #[error("netns {path}: does not exist")]
    Missing { path: PathBuf },
    /// The netns path could not be opened.
    #[error("failed to open netns {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The path exists but is not a network namespace.
    #[error("{path} is not a network namespace")]
    NotANetns { path: PathBuf },
    /// A netlink socket could not be created.
    #[error("failed to open a netlink socket{}: {source}", in_netns(.netns))]
    Socket {
        netns: Option<PathBuf>,
        source: std::io::Error,
    },
}

fn in_netns(netns: &Option<PathBuf>) -> String {
    match netns {
        Some(path) => format!(" in {}", path.display()),
        None => String::new(),
    }
}

/// An open network namespace: the file keeps it alive and is what
/// `IFLA_NET_NS_FD` refers to when a link is created into it.
#[derive(Debug)]
pub struct NetnsFile {
    pub path: PathBuf,
    file: File,
}

impl NetnsFile {
    /// Open `path` and check that it is a network namespace.
    pub fn open(path: &Path) -> Result<Self, NetnsError> {
        let file = File::open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                NetnsError::Missing { path: path.into() }
            } else {
                NetnsError::Open {
                    path: path.into(),
                    source,
                }
            }
        })?;
        let stat = rustix::fs::fstatfs(&file).map_err(|errno| NetnsError::Open {
            path: path.into(),
            source: errno.into(),
        })?;
        let magic = stat.f_type as i64;
        if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
            return Err(NetnsError::NotANetns { path: path.into() });
        }
        Ok(NetnsFile {
            path: path.into(),
            file,
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for NetnsFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// The sockets of one call.
#[derive(Clone)]
pub struct Handles {
    pub runtime: Arc<Runtime>,
    pub host: Handle,
    pub sandbox: Option<Handle>,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles")
            .field("sandbox", &self.sandbox.is_some())
            .finish()
    }
}

impl Handles {
    /// Open the host socket, and one inside `netns` when given.
    pub fn open(runtime: Arc<Runtime>, netns: Option<&NetnsFile>) -> Result<Self, NetnsError> {
        let host = {
            let _entered = runtime.enter();
            let (connection, handle, _) =
                rtnetlink::new_connection().map_err(|source| NetnsError::Socket {
                    netns: None,
                    source,
                })?;
            runtime.spawn(connection);
            handle
        };
        let sandbox = match netns {
            Some(netns) => Some(open_in(&runtime, netns)?),
            None => None,
        };
        Ok(Handles {
            runtime,
            host,
            sandbox,
        })
    }
}

/// Create a socket inside `netns` from a short-lived thread that entered it,
/// so this thread never leaves the host namespace.
fn open_in(runtime: &Arc<Runtime>, netns: &NetnsFile) -> Result<Handle, NetnsError> {
    let runtime_handle = runtime.handle().clone();
    let fd = netns.file.as_fd();
    let socket_error = |source| NetnsError::Socket {
        netns: Some(netns.path.clone()),
        source,
    };
    let opened = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                rustix::thread::move_into_link_name_space(
                    fd,
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(std::io::Error::from)?;
                let _entered = runtime_handle.enter();
                rtnetlink::new_connection()
            })
            .join()
    });
    let (connection, handle, _) = match opened {
        Ok(result) => result.map_err(socket_error)?,
        Err(_) => return Err(socket_error(std::io::Error::other("netns thread panicked"))),
    };
    runtime.spawn(connection);
    Ok(handle)
}
