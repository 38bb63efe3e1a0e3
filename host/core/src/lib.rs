//! The pure core of multus-wasm: everything that decides, nothing that
//! performs. CNI types and protocol (`cni`), the host config (`config`),
//! network-selection annotations (`annotations`), attachments built from
//! NADs (`attachments`), the pod's UID check (`pod`), network-status
//! (`status`), and plans with the policy that checks them (`plan`).
//!
//! Architecture Invariant: this crate does no I/O. Its dependencies are
//! serde, serde_json, thiserror and ipnet; no tokio, rtnetlink, wasmtime or
//! kube. Everything here is unit-tested without root, and the fuzz targets
//! use it directly.

pub mod annotations;
pub mod attachments;
pub mod cni;
pub mod config;
pub mod devices;
pub mod plan;
pub mod pod;
pub mod status;
