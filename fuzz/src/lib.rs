//! Fuzz target bodies for the host's pure parsers.
//!
//! The host's pure modules are compiled straight from `host/src` with
//! `#[path]` (they use only std, serde, serde_json, thiserror and ipnet, and
//! refer to no other host module), so building the fuzz targets does not
//! build wasmtime, kube or tokio and takes seconds. The cargo-fuzz entry
//! points (`fuzz_targets/*.rs`) and the seed-corpus test
//! (`tests/corpus.rs`) both call the functions of [`targets`].
//!
//! Run with `cargo xtask fuzz [--seconds N] [TARGET...]` from the
//! repository root (stable toolchain, `cargo fuzz --sanitizer none`).

#[path = "../../host/src/annotations.rs"]
pub mod annotations;
#[path = "../../host/src/cni/mod.rs"]
pub mod cni;
#[path = "../../host/src/config.rs"]
pub mod config;

pub mod targets;
