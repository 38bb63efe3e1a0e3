//! Host bindings generated from the plugin WIT, one module per world and ABI
//! version: the current ABI (`guest-sdk/wit`, 0.2.0) at the top level, the
//! frozen 0.1.0 (`guest-sdk/wit-frozen/0.1.0`) under [`v0_1`]. Each ipam
//! world reuses its delegate world's `types`, `log` and `links`.
//!
//! Architecture Invariant: nothing outside `sandbox` sees these types; they
//! are converted into host-owned types in `sandbox::convert` (0.1.0 through
//! `sandbox::compat` first).

#![allow(missing_docs, clippy::all)]

pub mod delegate {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "delegate-plugin",
    });
}

pub mod ipam {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "ipam-plugin",
        with: {
            "multus-wasm:plugin/types": crate::sandbox::bindings::delegate::multus_wasm::plugin::types,
            "multus-wasm:plugin/log": crate::sandbox::bindings::delegate::multus_wasm::plugin::log,
            "multus-wasm:plugin/links": crate::sandbox::bindings::delegate::multus_wasm::plugin::links,
        },
    });
}

pub use delegate::multus_wasm::plugin::links as wit_links;
pub use delegate::multus_wasm::plugin::log as wit_log;
pub use delegate::multus_wasm::plugin::types as wit;
pub use ipam::multus_wasm::plugin::ipam_store as wit_store;
pub use ipam::multus_wasm::plugin::node_files as wit_node_files;

/// ABI 0.1.0, frozen: the plugins built before 0.2.0 keep running.
pub mod v0_1 {
    pub mod delegate {
        wasmtime::component::bindgen!({
            path: "../guest-sdk/wit-frozen/0.1.0",
            world: "delegate-plugin",
        });
    }

    pub mod ipam {
        wasmtime::component::bindgen!({
            path: "../guest-sdk/wit-frozen/0.1.0",
            world: "ipam-plugin",
            with: {
                "multus-wasm:plugin/types": crate::sandbox::bindings::v0_1::delegate::multus_wasm::plugin::types,
                "multus-wasm:plugin/log": crate::sandbox::bindings::v0_1::delegate::multus_wasm::plugin::log,
                "multus-wasm:plugin/links": crate::sandbox::bindings::v0_1::delegate::multus_wasm::plugin::links,
            },
        });
    }

    pub use delegate::multus_wasm::plugin::links as wit_links;
    pub use delegate::multus_wasm::plugin::log as wit_log;
    pub use delegate::multus_wasm::plugin::types as wit;
    pub use ipam::multus_wasm::plugin::ipam_store as wit_store;
    pub use ipam::multus_wasm::plugin::node_files as wit_node_files;
}
