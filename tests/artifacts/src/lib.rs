//! Paths of the WebAssembly components the tests load, built by this crate's
//! build script with a nested cargo (its own target directory) for
//! `wasm32-unknown-unknown` and, where listed, `wasm32-wasip2`.
//!
//! Each guest is a constant `<NAME>` (wasm32-unknown-unknown) and, when built
//! for it, `<NAME>_WASIP2`, holding the absolute path of the `.wasm` file.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
