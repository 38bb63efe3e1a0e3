//! Fuzz target bodies for the host's pure parsers, which live in the core
//! crate (`host/core`, package `multus-wasm-core`): it depends only on
//! serde, serde_json, thiserror and ipnet, so building the fuzz targets
//! does not build wasmtime, kube or tokio and takes seconds. The cargo-fuzz
//! entry points (`fuzz_targets/*.rs`) and the seed-corpus test
//! (`tests/corpus.rs`) both call the functions of [`targets`].
//!
//! Run with `cargo xtask fuzz [--seconds N] [TARGET...]` from the
//! repository root (stable toolchain, `cargo fuzz --sanitizer none`).

pub use multus_wasm_core::{annotations, cni, config};

pub mod targets;
