//! The CNI protocol, as pure functions: the environment (`CNI_COMMAND` and
//! friends), versions, error JSON, results in every spec version with the
//! conversions between them, and network configuration lists with the
//! per-plugin config a runtime derives from them.
//!
//! Nothing here reads the process environment, stdin or files: callers pass
//! env pairs and stdin bytes in and print what comes back. This module uses
//! only std, serde, serde_json, thiserror and ipnet, and no other host
//! module.

pub mod env;
pub mod error;
pub mod netconf;
pub mod result;
pub mod version;

pub use env::{
    CniCommand, CniEnv, MAX_INTERFACE_NAME_LENGTH, format_cni_args, parse_cni_args,
    validate_container_id, validate_interface_name,
};
pub use error::CniError;
pub use netconf::{
    GcAttachment, NetworkConfigList, PluginInjection, declared_capabilities, decode_config,
    plugin_config, valid_attachments, validate_network_name,
};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::{
    CniVersion, SUPPORTED_VERSIONS, requested_version, select_version, version_output,
};
