//! The SDK for multus-wasm plugins.
//!
//! A plugin is a library crate built as a WebAssembly component. Its author
//! implements [`Delegate`] (a plugin that creates an interface: it returns a
//! [`Plan`] of netlink operations plus the CNI result) or [`Ipam`] (an IPAM
//! plugin: it returns a CNI result and keeps state in the host's
//! [`IpamHost`] store), then calls [`export_plugin!`] once.
//!
//! Every call from a plugin to the host goes through the [`Host`] and
//! [`IpamHost`] traits, so the plugin's logic runs natively under
//! `cargo test` against [`testing::MockHost`] and unchanged inside the sandbox.
//! See the crate README for a walk from `cargo new` to a built component.

pub mod bindings;
pub mod cidr;
pub mod helpers;
pub mod netconf;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wasm;

pub use bindings::delegate::multus_wasm::plugin::links::LinkInfo;
pub use bindings::delegate::multus_wasm::plugin::log::Level;
pub use bindings::delegate::multus_wasm::plugin::types::{
    AddAddress, AddRoute, Attachment, CniResult, Command, CreateMacvlan, Dns, InterfaceInfo,
    IpConfig, IpFamily, MacvlanMode, NetlinkOp, Netns, Plan, PluginError, RenameLink, Request,
    Route, RouteScope, SetFlag, SetMac, SetMtu, SetSysctl, SetTxqueuelen,
};
#[doc(hidden)]
pub use std::string::String as __String;
#[doc(hidden)]
pub use std::vec::Vec as __Vec;

/// The ABI version this SDK builds plugins for (the WIT package version).
pub const ABI_VERSION: &str = "0.2.0";

/// Every CNI version a plugin can support (what [`Delegate::CNI_VERSIONS`]
/// and [`Ipam::CNI_VERSIONS`] default to).
pub const ALL_CNI_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// CNI error codes (spec 1.1, "Error codes").
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// Unclassified failure (the reference plugins' `ErrInternal`).
    pub const INTERNAL: u32 = 999;
}

impl PluginError {
    /// An error with a CNI code and a message.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        PluginError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Code 7: the network configuration is invalid.
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_NETWORK_CONFIG, msg)
    }

    /// Code 999: a failure with no more specific CNI code.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(code::INTERNAL, msg)
    }

    /// The same error with `details` set.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
}

/// What every plugin may ask of the host: logging and read-only link queries.
pub trait Host {
    /// Write a line to the host's log under this plugin's name.
    fn log(&self, level: Level, message: &str);
    /// A link by name in the host or sandbox namespace.
    fn get_link(&self, netns: Netns, name: &str) -> Option<LinkInfo>;
    /// The link of the first default route of `family`.
    fn default_route_link(&self, netns: Netns, family: IpFamily) -> Option<LinkInfo>;
    /// Addresses (with prefix length) on a link.
    fn addresses(&self, netns: Netns, name: &str) -> Vec<String>;
    /// Routes through a link, main table.
    fn routes(&self, netns: Netns, name: &str) -> Vec<Route>;
    /// A sysctl in the sandbox (`net/ipv4/conf/net1/arp_notify`), trailing
    /// newline removed; `Ok(None)` when it does not exist. Only the keys a
    /// plan may write for this attachment's interface; others are an error.
    fn read_sysctl(&self, key: &str) -> Result<Option<String>, String>;
}

/// What an IPAM plugin may ask of the host on top of [`Host`]: the network's
/// key/value store (the host holds the network's lock for the whole call) and
/// resolv.conf files.
pub trait IpamHost: Host {
    /// The value of `key`, if present.
    fn store_get(&self, key: &str) -> Result<Option<String>, String>;
    /// Every key, sorted.
    fn store_list(&self) -> Result<Vec<String>, String>;
    /// Set `key` to `new` (`None` deletes) if its value is `expected`
    /// (`None`: absent); returns whether the swap happened.
    fn store_compare_and_swap(
        &self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, String>;
    /// Delete `key`; returns whether it existed.
    fn store_delete(&self, key: &str) -> Result<bool, String>;
    /// A resolv.conf-format file, parsed by the host.
    fn read_resolv_conf(&self, path: &str) -> Result<Dns, String>;
}

/// A delegate plugin: turns a request into a plan.
pub trait Delegate {
    /// The CNI versions this plugin supports: the host refuses a network
    /// whose `cniVersion` is not among them (code 1) before calling
    /// [`Delegate::handle`].
    const CNI_VERSIONS: &'static [&'static str] = ALL_CNI_VERSIONS;
    /// Handle one CNI command. ADD returns the ops that create the interface
    /// and the CNI result; DEL returns the ops that remove it; CHECK returns an
    /// empty plan or an error.
    fn handle(host: &dyn Host, request: Request) -> Result<Plan, PluginError>;
}

/// An IPAM plugin: allocates and releases addresses.
pub trait Ipam {
    /// The CNI versions this plugin supports, as [`Delegate::CNI_VERSIONS`].
    const CNI_VERSIONS: &'static [&'static str] = ALL_CNI_VERSIONS;
    /// Handle one CNI command: ADD returns the allocation, the others `None`.
    fn handle(host: &dyn IpamHost, request: Request) -> Result<Option<CniResult>, PluginError>;
}

impl Plan {
    /// A plan with no ops and no result (DEL of something already gone, CHECK).
    pub fn empty() -> Self {
        Plan {
            ops: Vec::new(),
            cni_result: None,
            state: None,
        }
    }
}

impl CniResult {
    /// A result with nothing in it.
    pub fn empty() -> Self {
        CniResult {
            interfaces: Vec::new(),
            ips: Vec::new(),
            routes: Vec::new(),
            dns: None,
        }
    }
}

impl Route {
    /// A route to `dst` (with prefix length), optionally via `gw`.
    pub fn new(dst: impl Into<String>, gw: Option<String>) -> Self {
        Route {
            dst: dst.into(),
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

impl Dns {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// Export a type as this component's plugin, once per crate:
///
/// ```ignore
/// guest_sdk::export_plugin!(delegate: MyMacvlan);
/// guest_sdk::export_plugin!(ipam: MyAllocator);
/// ```
///
/// The type implements [`Delegate`] or [`Ipam`]. On native targets the macro
/// expands to nothing, so the same crate builds for `cargo test`.
#[macro_export]
macro_rules! export_plugin {
    (delegate: $plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Export;
            impl $crate::bindings::delegate::exports::multus_wasm::plugin::delegate::Guest for Export {
                fn cni_versions() -> $crate::__Vec<$crate::__String> {
                    $crate::wasm::versions(<$plugin as $crate::Delegate>::CNI_VERSIONS)
                }
                fn handle(
                    request: $crate::Request,
                ) -> ::core::result::Result<$crate::Plan, $crate::PluginError> {
                    $crate::wasm::run_delegate::<$plugin>(request)
                }
            }
            $crate::bindings::delegate::__export_delegate_plugin!(Export with_types_in $crate::bindings::delegate);
        };
    };
    (ipam: $plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Export;
            impl $crate::bindings::ipam::exports::multus_wasm::plugin::ipam::Guest for Export {
                fn cni_versions() -> $crate::__Vec<$crate::__String> {
                    $crate::wasm::versions(<$plugin as $crate::Ipam>::CNI_VERSIONS)
                }
                fn handle(
                    request: $crate::Request,
                ) -> ::core::result::Result<
                    ::core::option::Option<$crate::CniResult>,
                    $crate::PluginError,
                > {
                    $crate::wasm::run_ipam::<$plugin>(request)
                }
            }
            $crate::bindings::ipam::__export_ipam_plugin!(Export with_types_in $crate::bindings::ipam);
        };
    };
}

#[cfg(test)]
mod tests {
    /// A released ABI never changes: the WIT of the current version must
    /// equal its frozen copy (bump the package version to change the ABI).
    #[test]
    fn the_wit_of_a_released_version_is_frozen() {
        let current = include_str!("../wit/plugin.wit");
        let frozen = include_str!("../wit-frozen/0.2.0/plugin.wit");
        assert!(current.contains("package multus-wasm:plugin@0.2.0;"));
        assert_eq!(
            current, frozen,
            "wit/plugin.wit changed while still at 0.2.0: bump the version and freeze a copy"
        );
        assert_eq!(super::ABI_VERSION, "0.2.0");
        let previous = include_str!("../wit-frozen/0.1.0/plugin.wit");
        assert!(previous.contains("package multus-wasm:plugin@0.1.0;"));
    }
}
