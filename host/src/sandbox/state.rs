//! A call's store data: the limiter, the host services a guest may reach
//! (link queries, the IPAM store, resolv.conf files, WASI with nothing
//! granted) and the guest's log output.

use ipnet::IpNet;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self, wit, wit_links, wit_log, wit_node_files, wit_store};
use super::{Limits, World, convert};
use crate::cni::Route;
use crate::netlink::{IpFamily, LinkInfo, Netns};

/// Read-only link queries a guest may make, answered by the host.
pub trait LinkQueries: Send {
    fn get_link(&mut self, netns: Netns, name: &str) -> Option<LinkInfo>;
    fn default_route_link(&mut self, netns: Netns, family: IpFamily) -> Option<LinkInfo>;
    fn addresses(&mut self, netns: Netns, name: &str) -> Vec<IpNet>;
    fn routes(&mut self, netns: Netns, name: &str) -> Vec<Route>;
}

/// Answers every query with "nothing there" (no netns to look into).
#[derive(Debug, Default)]
pub struct NoLinks;

impl LinkQueries for NoLinks {
    fn get_link(&mut self, _: Netns, _: &str) -> Option<LinkInfo> {
        None
    }
    fn default_route_link(&mut self, _: Netns, _: IpFamily) -> Option<LinkInfo> {
        None
    }
    fn addresses(&mut self, _: Netns, _: &str) -> Vec<IpNet> {
        Vec::new()
    }
    fn routes(&mut self, _: Netns, _: &str) -> Vec<Route> {
        Vec::new()
    }
}

/// The key/value store of one network, with the network's lock held.
pub trait IpamStore: Send {
    fn get(&mut self, key: &str) -> Result<Option<String>, String>;
    fn list(&mut self) -> Result<Vec<String>, String>;
    fn compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, String>;
    fn delete(&mut self, key: &str) -> Result<bool, String>;
}

/// The guest asked for more memory than its cap.
#[derive(Debug)]
pub struct MemoryLimitHit {
    pub requested: usize,
}

impl std::fmt::Display for MemoryLimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "memory limit hit growing to {} bytes", self.requested)
    }
}

impl std::error::Error for MemoryLimitHit {}

pub struct GuestLimiter {
    memory_bytes: usize,
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return Err(wasmtime::Error::new(MemoryLimitHit { requested: desired }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

struct Wasi {
    ctx: WasiCtx,
    table: ResourceTable,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

pub struct StoreState {
    plugin: String,
    digest: String,
    limits: Limits,
    pub(super) limiter: GuestLimiter,
    links: Box<dyn LinkQueries>,
    ipam_store: Option<Box<dyn IpamStore>>,
    log_lines: usize,
    panic_message: Option<String>,
    wasi: Option<Wasi>,
}

impl StoreState {
    pub(super) fn new(
        plugin: &str,
        digest: &str,
        limits: Limits,
        links: Box<dyn LinkQueries>,
        ipam_store: Option<Box<dyn IpamStore>>,
        uses_wasi: bool,
    ) -> Self {
        let mut state = StoreState {
            plugin: plugin.into(),
            digest: digest.into(),
            limits,
            limiter: GuestLimiter {
                memory_bytes: limits.memory_bytes,
            },
            links,
            ipam_store,
            log_lines: 0,
            panic_message: None,
            wasi: None,
        };
        if uses_wasi {
            state.wasi = Some(state.build_wasi());
        }
        state
    }

    /// WASI with nothing granted: no preopens, env, args, network or name
    /// lookups; stdout and stderr captured (bounded) for the host log.
    fn build_wasi(&self) -> Wasi {
        let stdout = MemoryOutputPipe::new(self.limits.max_string_bytes * 4);
        let stderr = MemoryOutputPipe::new(self.limits.max_string_bytes * 4);
        let ctx = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Wasi {
            ctx,
            table: ResourceTable::new(),
            stdout,
            stderr,
        }
    }

    /// The message of the guest's panic, when the SDK reported one.
    pub(super) fn take_panic_message(&mut self) -> Option<String> {
        self.panic_message.take()
    }

    /// Move what a WASI guest wrote to stdout/stderr into the host log.
    pub(super) fn flush_wasi_output(&mut self) {
        let Some(wasi) = &self.wasi else { return };
        for (stream, pipe) in [("stdout", &wasi.stdout), ("stderr", &wasi.stderr)] {
            let contents = pipe.contents();
            for line in String::from_utf8_lossy(&contents).lines() {
                tracing::info!(plugin = %self.plugin, stream, "{line}");
            }
        }
    }

    fn check_key(&self, key: &str) -> Result<(), String> {
        if key.len() > self.limits.max_string_bytes.min(255) {
            return Err(format!("key of {} bytes is too long", key.len()));
        }
        Ok(())
    }

    fn store(&mut self) -> Result<&mut Box<dyn IpamStore>, String> {
        self.ipam_store
            .as_mut()
            .ok_or_else(|| "no ipam store for this call".to_string())
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        if self.wasi.is_none() {
            self.wasi = Some(self.build_wasi());
        }
        let wasi = self.wasi.as_mut().expect("just set");
        WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut wasi.table,
        }
    }
}

impl wit::Host for StoreState {}

impl wit_log::Host for StoreState {
    fn log(&mut self, level: wit_log::Level, message: String) {
        let mut message = message;
        if message.len() > self.limits.max_string_bytes {
            let mut cut = self.limits.max_string_bytes;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        if level == wit_log::Level::Error && message.starts_with("plugin panicked: ") {
            self.panic_message = Some(message["plugin panicked: ".len()..].to_string());
        }
        self.log_lines += 1;
        if self.log_lines > self.limits.max_log_lines {
            if self.log_lines == self.limits.max_log_lines + 1 {
                tracing::warn!(plugin = %self.plugin, sha256 = %self.digest, "log line limit reached, dropping the rest");
            }
            return;
        }
        let plugin = self.plugin.as_str();
        match level {
            wit_log::Level::Error => tracing::error!(plugin, "{message}"),
            wit_log::Level::Warn => tracing::warn!(plugin, "{message}"),
            wit_log::Level::Info => tracing::info!(plugin, "{message}"),
            wit_log::Level::Debug => tracing::debug!(plugin, "{message}"),
            wit_log::Level::Trace => tracing::trace!(plugin, "{message}"),
        }
    }
}

impl wit_links::Host for StoreState {
    fn get_link(&mut self, netns: wit::Netns, name: String) -> Option<wit_links::LinkInfo> {
        self.links
            .get_link(convert::netns_from_wit(netns), &name)
            .map(convert::link_to_wit)
    }

    fn default_route_link(
        &mut self,
        netns: wit::Netns,
        family: wit::IpFamily,
    ) -> Option<wit_links::LinkInfo> {
        let family = match family {
            wit::IpFamily::V4 => IpFamily::V4,
            wit::IpFamily::V6 => IpFamily::V6,
        };
        self.links
            .default_route_link(convert::netns_from_wit(netns), family)
            .map(convert::link_to_wit)
    }

    fn addresses(&mut self, netns: wit::Netns, name: String) -> Vec<String> {
        self.links
            .addresses(convert::netns_from_wit(netns), &name)
            .into_iter()
            .map(|address| address.to_string())
            .collect()
    }

    fn routes(&mut self, netns: wit::Netns, name: String) -> Vec<wit::Route> {
        self.links
            .routes(convert::netns_from_wit(netns), &name)
            .iter()
            .map(convert::route_to_wit)
            .collect()
    }
}

impl wit_store::Host for StoreState {
    fn get(&mut self, key: String) -> Result<Option<String>, String> {
        self.check_key(&key)?;
        self.store()?.get(&key)
    }

    fn list(&mut self) -> Result<Vec<String>, String> {
        self.store()?.list()
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<String>,
        new: Option<String>,
    ) -> Result<bool, String> {
        self.check_key(&key)?;
        if new
            .as_ref()
            .is_some_and(|value| value.len() > self.limits.max_string_bytes)
        {
            return Err("value is too long".into());
        }
        self.store()?
            .compare_and_swap(&key, expected.as_deref(), new.as_deref())
    }

    fn delete(&mut self, key: String) -> Result<bool, String> {
        self.check_key(&key)?;
        self.store()?.delete(&key)
    }
}

impl wit_node_files::Host for StoreState {
    fn read_resolv_conf(&mut self, path: String) -> Result<wit::Dns, String> {
        let dns =
            crate::resolv::read(std::path::Path::new(&path)).map_err(|err| err.to_string())?;
        Ok(convert::dns_to_wit(&dns))
    }
}

/// The linker of one world, with WASI (nothing granted) when the plugin
/// imports it. Built on first use: a call pays only for the linkers its
/// plugins need (WASI's is the large one).
pub(super) fn build_linker(
    engine: &Engine,
    world: World,
    wasi: bool,
) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    match world {
        World::Delegate => bindings::delegate::DelegatePlugin::add_to_linker::<_, HasSelf<_>>(
            &mut linker,
            |state| state,
        )?,
        World::Ipam => {
            bindings::ipam::IpamPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?
        }
    }
    if wasi {
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    }
    Ok(linker)
}
