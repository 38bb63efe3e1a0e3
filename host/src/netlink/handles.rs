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
    /// The thread inside the pod's namespace (when there is a pod).
    pub netns_thread: Option<Arc<NetnsThread>>,
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
        let (sandbox, netns_thread) = match netns {
            Some(netns) => {
                let thread = NetnsThread::spawn(netns)?;
                (
                    Some(open_in(&runtime, netns, &thread)?),
                    Some(Arc::new(thread)),
                )
            }
            None => (None, None),
        };
        Ok(Handles {
            runtime,
            host,
            sandbox,
            netns_thread,
        })
    }
}

/// A thread that entered the pod's network namespace and stays there for
/// the call: it creates the pod's netlink socket and does the work that
/// must run inside the namespace (`/proc/sys/net` writes), so the calling
/// thread never leaves the host namespace and no thread is spawned per op.
pub struct NetnsThread {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Job>>,
}

type Job = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for NetnsThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetnsThread")
    }
}

impl NetnsThread {
    /// Spawn the thread and enter `netns` in it.
    pub fn spawn(netns: &NetnsFile) -> Result<NetnsThread, NetnsError> {
        let fd = netns.file.try_clone().map_err(|source| NetnsError::Open {
            path: netns.path.clone(),
            source,
        })?;
        let (jobs, receiver) = std::sync::mpsc::channel::<Job>();
        let (ready_sender, ready) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("pod-netns".into())
            .spawn(move || {
                let entered = rustix::thread::move_into_link_name_space(
                    fd.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                );
                drop(fd);
                let failed = entered.is_err();
                let _ = ready_sender.send(entered.map_err(std::io::Error::from));
                if failed {
                    return;
                }
                for job in receiver {
                    job();
                }
            })
            .map_err(|source| NetnsError::Socket {
                netns: Some(netns.path.clone()),
                source,
            })?;
        let entered = ready
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("netns thread died")));
        entered.map_err(|source| NetnsError::Socket {
            netns: Some(netns.path.clone()),
            source,
        })?;
        Ok(NetnsThread {
            jobs: std::sync::Mutex::new(jobs),
        })
    }

    /// Run `job` inside the namespace and wait for its result.
    pub fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        self.submit(job)?
            .recv()
            .map_err(|_| "the netns thread died".to_string())
    }

    /// Start `job` inside the namespace; its result arrives on the receiver.
    pub fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::sync::mpsc::Receiver<T>, String> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let boxed: Job = Box::new(move || {
            let _ = sender.send(job());
        });
        self.jobs
            .lock()
            .map_err(|_| "netns thread lock poisoned".to_string())?
            .send(boxed)
            .map_err(|_| "the netns thread is gone".to_string())?;
        Ok(receiver)
    }
}

/// Create the pod's netlink socket on its netns thread.
fn open_in(
    runtime: &Arc<Runtime>,
    netns: &NetnsFile,
    thread: &NetnsThread,
) -> Result<Handle, NetnsError> {
    let runtime_handle = runtime.handle().clone();
    let socket_error = |source| NetnsError::Socket {
        netns: Some(netns.path.clone()),
        source,
    };
    let opened = thread
        .run(move || {
            let _entered = runtime_handle.enter();
            rtnetlink::new_connection()
        })
        .map_err(|reason| socket_error(std::io::Error::other(reason)))?;
    let (connection, handle, _) = opened.map_err(socket_error)?;
    runtime.spawn(connection);
    Ok(handle)
}
