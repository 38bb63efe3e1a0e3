//! A call's store data: the limiter, the host services a guest may reach
//! (link queries, the IPAM store, resolv.conf files, WASI with nothing
//! granted) and the guest's log output.

use std::future::Future;
use std::time::Instant;

use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, StoreContextMut};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;

use super::bindings::{self, wit, wit_links, wit_log, wit_node_files, wit_store};
use super::{
    Abi, Limits, MAX_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS, MAX_TABLES, World, convert,
};
use crate::netlink::IpFamily;
use crate::netlink::query::LinkQueries;
use crate::store::ipam::IpamStore;

/// The guest asked for more memory than its cap, counting every memory of
/// the store (`requested` is the total it would have reached).
#[derive(Debug)]
pub struct MemoryLimitHit {
    pub requested: usize,
}

impl std::fmt::Display for MemoryLimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory limit hit: all memories together would hold {} bytes",
            self.requested
        )
    }
}

impl std::error::Error for MemoryLimitHit {}

/// The guest asked for more table elements than the store may hold in total.
#[derive(Debug)]
pub struct TableLimitHit {
    pub requested: usize,
}

impl std::fmt::Display for TableLimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "table limit hit: all tables together would hold {} elements",
            self.requested
        )
    }
}

impl std::error::Error for TableLimitHit {}

/// The call's deadline passed while the guest was blocked in a WASI call
/// (epoch interruption only stops running wasm, never a blocked host call).
#[derive(Debug)]
pub struct DeadlineHit;

impl std::fmt::Display for DeadlineHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline passed while the guest was blocked in wasi:io/poll")
    }
}

impl std::error::Error for DeadlineHit {}

/// Bounds what one store (one call) may allocate: the bytes of all its
/// linear memories together, the elements of all its tables together, and
/// (through wasmtime's counts) its core instances, memories and tables.
///
/// A store lives for one call and memories never shrink, so the totals only
/// grow; a growth wasmtime fails after we allowed it is taken back.
pub struct GuestLimiter {
    memory_bytes: usize,
    memory_total: usize,
    last_memory_growth: usize,
    table_total: usize,
    last_table_growth: usize,
}

impl GuestLimiter {
    fn new(memory_bytes: usize) -> Self {
        GuestLimiter {
            memory_bytes,
            memory_total: 0,
            last_memory_growth: 0,
            table_total: 0,
            last_table_growth: 0,
        }
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // `current` is 0 for a memory being created: then `desired` is its
        // initial size.
        let growth = desired.saturating_sub(current);
        let total = self.memory_total.saturating_add(growth);
        if total > self.memory_bytes {
            return Err(wasmtime::Error::new(MemoryLimitHit { requested: total }));
        }
        self.memory_total = total;
        self.last_memory_growth = growth;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_total -= std::mem::take(&mut self.last_memory_growth);
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let total = self.table_total.saturating_add(growth);
        if total > MAX_TABLE_ELEMENTS {
            return Err(wasmtime::Error::new(TableLimitHit { requested: total }));
        }
        self.table_total = total;
        self.last_table_growth = growth;
        Ok(true)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.table_total -= std::mem::take(&mut self.last_table_growth);
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
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
    /// `CNI_IFNAME` of the call: the only interface whose sysctls it reads.
    ifname: String,
    limits: Limits,
    /// When the call's wall-clock deadline passes; blocking WASI calls wait
    /// at most until then.
    deadline: Instant,
    pub(super) limiter: GuestLimiter,
    links: Box<dyn LinkQueries>,
    ipam_store: Option<Box<dyn IpamStore>>,
    log_lines: usize,
    panic_message: Option<String>,
    wasi: Option<Wasi>,
}

impl StoreState {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        plugin: &str,
        digest: &str,
        ifname: &str,
        limits: Limits,
        deadline: Instant,
        links: Box<dyn LinkQueries>,
        ipam_store: Option<Box<dyn IpamStore>>,
        uses_wasi: bool,
    ) -> Self {
        let mut state = StoreState {
            plugin: plugin.into(),
            digest: digest.into(),
            ifname: ifname.into(),
            limits,
            deadline,
            limiter: GuestLimiter::new(limits.memory_bytes),
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

    /// Move what a WASI guest wrote to stdout/stderr into the host log, each
    /// line counted against the same `max_log_lines` as the log import.
    pub(super) fn flush_wasi_output(&mut self) {
        let Some(wasi) = &self.wasi else { return };
        let outputs = [
            ("stdout", wasi.stdout.contents()),
            ("stderr", wasi.stderr.contents()),
        ];
        for (stream, contents) in outputs {
            for line in String::from_utf8_lossy(&contents).lines() {
                if !self.take_log_line() {
                    return;
                }
                tracing::info!(plugin = %self.plugin, stream, "{line}");
            }
        }
    }

    /// Count one guest log line; false once the call's `max_log_lines` are
    /// used up (the first line over the cap is replaced by one warning).
    fn take_log_line(&mut self) -> bool {
        self.log_lines = self.log_lines.saturating_add(1);
        if self.log_lines <= self.limits.max_log_lines {
            return true;
        }
        if self.log_lines == self.limits.max_log_lines + 1 {
            tracing::warn!(plugin = %self.plugin, sha256 = %self.digest, "log line limit reached, dropping the rest");
        }
        false
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
        if !self.take_log_line() {
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

    fn read_sysctl(&mut self, key: String) -> Result<Option<String>, String> {
        if key.len() > 255 {
            return Err(format!("sysctl key of {} bytes is too long", key.len()));
        }
        crate::plan::policy::check_sysctl_read(&key, &self.ifname)?;
        self.links.read_sysctl(&key)
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
    abi: Abi,
    world: World,
    wasi: bool,
) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    match (abi, world) {
        (Abi::V0_2, World::Delegate) => bindings::delegate::DelegatePlugin::add_to_linker::<
            _,
            HasSelf<_>,
        >(&mut linker, |state| state)?,
        (Abi::V0_2, World::Ipam) => {
            bindings::ipam::IpamPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?
        }
        (Abi::V0_1, World::Delegate) => bindings::v0_1::delegate::DelegatePlugin::add_to_linker::<
            _,
            HasSelf<_>,
        >(&mut linker, |state| state)?,
        (Abi::V0_1, World::Ipam) => {
            bindings::v0_1::ipam::IpamPlugin::add_to_linker::<_, HasSelf<_>>(
                &mut linker,
                |state| state,
            )?
        }
    }
    if wasi {
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bound_blocking_wasi(&mut linker, WASI_IO_POLL)?;
    }
    Ok(linker)
}

/// The `wasi:io/poll` instance wasmtime-wasi 48 registers (its WIT is
/// `wasi:io@0.2.12`; guests importing any 0.2.x are linked to it by semver).
const WASI_IO_POLL: &str = "wasi:io/poll@0.2.12";

/// Bound every WASI call that can block by the call's deadline.
///
/// Epoch interruption stops running wasm but never a host call, so a guest
/// sleeping in WASI would outlive `timeoutMs`. With nothing granted (no
/// preopens, no sockets or name lookups, stdin closed, stdout/stderr memory
/// pipes that are always ready) the only calls that wait are
/// `wasi:io/poll#poll` and `[method]pollable.block` on a clock pollable:
/// every `blocking-*` stream method waits on one of those always-ready
/// streams, and `pollable.ready` never waits. The two are defined again
/// here over the same resource table and the same async implementation that
/// wasmtime-wasi's sync versions run, under a tokio timeout at the deadline;
/// past it they fail with [`DeadlineHit`] (`SandboxError::Deadline`).
fn bound_blocking_wasi(linker: &mut Linker<StoreState>, instance: &str) -> wasmtime::Result<()> {
    // Without shadowing, defining them again fails exactly when
    // wasmtime-wasi defined them under these names: a wasmtime-wasi upgrade
    // that moves them fails here instead of leaving them unbounded.
    linker.allow_shadowing(false);
    {
        let mut poll = linker.instance(instance)?;
        let defined = poll.func_wrap("poll", bounded_poll).is_err()
            && poll
                .func_wrap("[method]pollable.block", bounded_block)
                .is_err();
        wasmtime::ensure!(
            defined,
            "wasmtime-wasi does not define {instance} poll and pollable.block: cannot bound them by the deadline"
        );
    }
    linker.allow_shadowing(true);
    {
        let mut poll = linker.instance(instance)?;
        poll.func_wrap("poll", bounded_poll)?;
        poll.func_wrap("[method]pollable.block", bounded_block)?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// `wasi:io/poll#poll`, waiting at most until the call's deadline.
fn bounded_poll(
    mut store: StoreContextMut<'_, StoreState>,
    (pollables,): (Vec<Resource<DynPollable>>,),
) -> wasmtime::Result<(Vec<u32>,)> {
    let deadline = store.data().deadline;
    let table = store.data_mut().ctx().table;
    let ready = until_deadline(deadline, async_poll::Host::poll(table, pollables))?;
    Ok((ready,))
}

/// `wasi:io/poll#[method]pollable.block`, waiting at most until the call's
/// deadline.
fn bounded_block(
    mut store: StoreContextMut<'_, StoreState>,
    (pollable,): (Resource<DynPollable>,),
) -> wasmtime::Result<()> {
    let deadline = store.data().deadline;
    let table = store.data_mut().ctx().table;
    until_deadline(deadline, async_poll::HostPollable::block(table, pollable))
}

/// Run `wait` (a WASI wait) until it completes or `deadline` passes,
/// whichever comes first, the way wasmtime-wasi's sync bindings run theirs.
fn until_deadline<T>(
    deadline: Instant,
    wait: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    wasmtime_wasi::runtime::in_tokio(async {
        tokio::time::timeout_at(deadline.into(), wait)
            .await
            .unwrap_or_else(|_elapsed| Err(wasmtime::Error::new(DeadlineHit)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn the_memory_cap_is_the_total_of_all_memories() {
        let mut limiter = GuestLimiter::new(32 * MIB);
        // A new memory asks from 0 to its initial size.
        assert!(limiter.memory_growing(0, 20 * MIB, None).unwrap());
        let err = limiter.memory_growing(0, 20 * MIB, None).unwrap_err();
        let hit = err.downcast_ref::<MemoryLimitHit>().unwrap();
        assert_eq!(hit.requested, 40 * MIB);
        // Growing a memory counts only the growth.
        assert!(limiter.memory_growing(20 * MIB, 30 * MIB, None).unwrap());
        assert!(limiter.memory_growing(30 * MIB, 33 * MIB, None).is_err());
        // A growth wasmtime failed after the limiter allowed it is given back.
        assert!(limiter.memory_growing(0, 2 * MIB, None).unwrap());
        limiter
            .memory_grow_failed(wasmtime::Error::msg("mmap failed"))
            .unwrap();
        assert!(limiter.memory_growing(0, 2 * MIB, None).unwrap());
        assert!(limiter.memory_growing(0, 1, None).is_err());
        // A request that overflows the address space is refused, not wrapped.
        let mut limiter = GuestLimiter::new(32 * MIB);
        assert!(limiter.memory_growing(0, 1, None).unwrap());
        assert!(limiter.memory_growing(0, usize::MAX, None).is_err());
    }

    #[test]
    fn table_elements_are_capped_in_total() {
        let mut limiter = GuestLimiter::new(32 * MIB);
        assert!(limiter.table_growing(0, 60_000, None).unwrap());
        let err = limiter.table_growing(0, 60_000, None).unwrap_err();
        assert_eq!(
            err.downcast_ref::<TableLimitHit>().unwrap().requested,
            120_000
        );
        assert!(
            limiter
                .table_growing(0, MAX_TABLE_ELEMENTS - 60_000, None)
                .unwrap()
        );
        assert!(limiter.instances() == MAX_INSTANCES);
        assert!(limiter.memories() == MAX_MEMORIES);
        assert!(limiter.tables() == MAX_TABLES);
    }

    #[test]
    fn the_wasi_linker_shadows_the_blocking_poll_calls() {
        let engine = Engine::new(&super::super::engine_config(&Limits::default())).unwrap();
        // `bound_blocking_wasi` fails unless wasmtime-wasi defined both
        // functions under the names it replaces.
        for abi in [Abi::V0_1, Abi::V0_2] {
            build_linker(&engine, abi, World::Delegate, true).unwrap();
            build_linker(&engine, abi, World::Ipam, true).unwrap();
        }
        // Under a name wasmtime-wasi does not use, the probe notices.
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        let err = bound_blocking_wasi(&mut linker, "wasi:io/poll@0.2.99").unwrap_err();
        assert!(err.to_string().contains("does not define"), "{err}");
    }
}
