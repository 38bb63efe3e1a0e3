//! The glue between the generated bindings and the author's traits, compiled
//! for wasm32 only: the [`Host`] implementation over the imports, the panic
//! hook and the `log` crate bridge.

use crate::bindings::delegate::multus_wasm::plugin::{links, log as host_log};
use crate::bindings::ipam::multus_wasm::plugin::{ipam_store, node_files};
use crate::{
    CniResult, Delegate, Dns, Host, IpFamily, Ipam, IpamHost, Level, LinkInfo, Netns, Plan,
    PluginError, Request, Route,
};

/// The host, reached through the component's imports.
pub struct WasmHost;

impl Host for WasmHost {
    fn log(&self, level: Level, message: &str) {
        host_log::log(level, message);
    }
    fn get_link(&self, netns: Netns, name: &str) -> Option<LinkInfo> {
        links::get_link(netns, name)
    }
    fn default_route_link(&self, netns: Netns, family: IpFamily) -> Option<LinkInfo> {
        links::default_route_link(netns, family)
    }
    fn addresses(&self, netns: Netns, name: &str) -> Vec<String> {
        links::addresses(netns, name)
    }
    fn routes(&self, netns: Netns, name: &str) -> Vec<Route> {
        links::routes(netns, name)
    }
    fn read_sysctl(&self, key: &str) -> Result<Option<String>, String> {
        links::read_sysctl(key)
    }
}

impl IpamHost for WasmHost {
    fn store_get(&self, key: &str) -> Result<Option<String>, String> {
        ipam_store::get(key)
    }
    fn store_list(&self) -> Result<Vec<String>, String> {
        ipam_store::list()
    }
    fn store_compare_and_swap(
        &self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, String> {
        ipam_store::compare_and_swap(key, expected, new)
    }
    fn store_delete(&self, key: &str) -> Result<bool, String> {
        ipam_store::delete(key)
    }
    fn read_resolv_conf(&self, path: &str) -> Result<Dns, String> {
        node_files::read_resolv_conf(path)
    }
}

struct HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let level = match record.level() {
            log::Level::Error => Level::Error,
            log::Level::Warn => Level::Warn,
            log::Level::Info => Level::Info,
            log::Level::Debug => Level::Debug,
            log::Level::Trace => Level::Trace,
        };
        host_log::log(level, &record.args().to_string());
    }
    fn flush(&self) {}
}

static LOGGER: HostLogger = HostLogger;

/// Route panics and the `log` crate into the host log. A panic then aborts
/// (guests are built with `panic = "abort"`), which the host reports as a trap
/// carrying this message.
fn install_hooks() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            host_log::log(Level::Error, &format!("plugin panicked: {info}"));
        }));
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
    });
}

/// A plugin's declared CNI versions, as the export returns them.
pub fn versions(declared: &[&str]) -> Vec<String> {
    declared.iter().map(|version| version.to_string()).collect()
}

pub fn run_delegate<P: Delegate>(request: Request) -> Result<Plan, PluginError> {
    install_hooks();
    P::handle(&WasmHost, request)
}

pub fn run_ipam<P: Ipam>(request: Request) -> Result<Option<CniResult>, PluginError> {
    install_hooks();
    P::handle(&WasmHost, request)
}
