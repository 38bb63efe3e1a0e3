//! Bindings generated from `wit/plugin.wit`, one module per world.
//!
//! The `ipam` world reuses the `delegate` world's types, so a `Request` or a
//! `CniResult` is one Rust type whichever world a plugin exports. Plugin
//! authors use the re-exports at the crate root, not these modules.

#![allow(missing_docs, clippy::all)]

pub mod delegate {
    wit_bindgen::generate!({
        path: "wit",
        world: "delegate-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_delegate_plugin",
        additional_derives: [PartialEq],
    });
}

pub mod ipam {
    wit_bindgen::generate!({
        path: "wit",
        world: "ipam-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_ipam_plugin",
        additional_derives: [PartialEq],
        with: {
            "multus-wasm:plugin/types@0.2.0": crate::bindings::delegate::multus_wasm::plugin::types,
            "multus-wasm:plugin/log@0.2.0": crate::bindings::delegate::multus_wasm::plugin::log,
            "multus-wasm:plugin/links@0.2.0": crate::bindings::delegate::multus_wasm::plugin::links,
        },
    });
}
