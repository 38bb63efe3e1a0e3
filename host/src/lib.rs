//! multus-wasm: a Multus-compatible CNI meta-plugin whose delegates run as
//! sandboxed WebAssembly components. See ARCHITECTURE.md for the code map.

pub mod cni;
pub mod error;
pub mod sandbox;
