//! multus-wasm: a Multus-compatible CNI meta-plugin whose delegates run as
//! sandboxed WebAssembly components. See ARCHITECTURE.md for the code map.

pub use multus_wasm_core::{annotations, attachments, cni, config, devices, plan, pod, status};

pub mod call;
pub mod cli;
pub mod cni_plugin;
pub mod confdir;
pub mod daemon;
#[cfg(test)]
pub(crate) mod fakes;
pub mod install;
pub mod k8s;
pub mod logging;
pub mod netlink;
pub mod node;
pub mod resolv;
pub mod runner;
pub mod sandbox;
pub mod store;
pub mod timing;
