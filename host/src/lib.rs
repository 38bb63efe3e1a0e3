//! multus-wasm: a Multus-compatible CNI meta-plugin whose delegates run as
//! sandboxed WebAssembly components. See ARCHITECTURE.md for the code map.

pub mod annotations;
pub mod attachments;
pub mod cli;
pub mod cni;
pub mod cni_plugin;
pub mod config;
pub mod delegate;
pub mod install;
pub mod k8s;
pub mod logging;
pub mod multus;
pub mod netlink;
pub mod resolv;
pub mod sandbox;
pub mod status;
pub mod store;
pub mod timing;
