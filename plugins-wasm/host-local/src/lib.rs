//! host-local IPAM as a multus-wasm plugin, with the behaviour and the
//! on-disk state of the reference host-local (containernetworking/plugins).
//!
//! - [`config`] parses the network configuration and canonicalizes its
//!   ranges (pure);
//! - [`range`] holds ranges, range sets and the round-robin order (pure);
//! - [`allocator`] reserves and releases addresses in the host's key/value
//!   store, which the host keeps as the reference's `<dataDir>/<network>/`
//!   directory and locks for the whole call.
//!
//! ADD returns one address per range set; DEL releases the container's
//! reservations; CHECK verifies it holds one; GC (which the reference does
//! not implement) releases reservations of attachments that are no longer
//! valid; STATUS always succeeds.

pub mod address;
pub mod allocator;
pub mod config;
pub mod range;

use guest_sdk::{CniResult, Command, Ipam, IpamHost, PluginError, Request};

/// The host-local IPAM plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostLocal;

impl Ipam for HostLocal {
    fn handle(host: &dyn IpamHost, request: Request) -> Result<Option<CniResult>, PluginError> {
        if request.command == Command::Status {
            return Ok(None);
        }
        // Every other command needs a valid configuration, as in the
        // reference (an invalid one makes even DEL fail).
        let config = config::load(&request.config, &request.args)?;
        match request.command {
            Command::Add => allocator::add(host, &config, &request.container_id, &request.ifname)
                .map(Some)
                .map_err(PluginError::from),
            Command::Del => allocator::release(host, &request.container_id, &request.ifname)
                .map(|()| None)
                .map_err(PluginError::from),
            Command::Check => allocator::check(host, &request.container_id, &request.ifname)
                .map(|()| None)
                .map_err(PluginError::from),
            Command::Gc => allocator::collect_garbage(host, &request.valid_attachments)
                .map(|()| None)
                .map_err(PluginError::from),
            Command::Status => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests;

guest_sdk::export_plugin!(ipam: HostLocal);
