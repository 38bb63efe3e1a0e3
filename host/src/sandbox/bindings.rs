//! Host bindings generated from `guest-sdk/wit`, one module per world; the
//! ipam world reuses the delegate world's `types`, `log` and `links`.
//!
//! Architecture Invariant: nothing outside `sandbox` sees these types; they
//! are converted into host-owned types in `sandbox::convert`.

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
