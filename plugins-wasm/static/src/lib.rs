//! static IPAM as a multus-wasm plugin, with the behaviour of the reference
//! static plugin from containernetworking/plugins.
//!
//! ADD returns the configured addresses, routes and DNS (after the
//! `CNI_ARGS`, `args.cni.ips` and `runtimeConfig.ips` overrides); CHECK
//! compares the configured gateways with `prevResult`; DEL, GC and STATUS
//! have nothing to do. static keeps no state: it never touches the store.

mod conf;

#[cfg(test)]
mod tests;

use guest_sdk::{CniResult, Command, Ipam, IpamHost, PluginError, Request};

use guest_sdk::cidr::{Cidr, parse_ip};

/// The static IPAM plugin.
#[derive(Debug)]
pub struct Static;

impl Ipam for Static {
    fn handle(_host: &dyn IpamHost, request: Request) -> Result<Option<CniResult>, PluginError> {
        match request.command {
            Command::Add => conf::resolve(&request).map(|config| Some(config.into_result())),
            Command::Check => check(&request).map(|()| None),
            Command::Del | Command::Gc | Command::Status => Ok(None),
        }
    }
}

/// CHECK: each configured address that `prevResult` lists must carry the
/// configured gateway there (when one is configured). Addresses missing from
/// `prevResult` are not an error, as in the reference.
fn check(request: &Request) -> Result<(), PluginError> {
    let config = conf::resolve(request)?;
    let prev_result = request
        .prev_result
        .as_ref()
        .ok_or_else(|| PluginError::internal("Required prevResult missing"))?;
    let prev_ips = prev_result
        .ips
        .iter()
        .map(|ip_config| {
            let address = Cidr::parse(&ip_config.address).ok_or_else(|| {
                PluginError::internal(format!(
                    "prevResult has an invalid address {:?}",
                    ip_config.address
                ))
            })?;
            let gateway = ip_config.gateway.as_deref().and_then(parse_ip);
            Ok((address, gateway))
        })
        .collect::<Result<Vec<_>, PluginError>>()?;
    for configured in &config.addresses {
        let Some((prev_address, prev_gateway)) = prev_ips
            .iter()
            .find(|(prev_address, _)| prev_address.address == configured.address.address)
        else {
            continue;
        };
        if let Some(gateway) = configured.gateway
            && *prev_gateway != Some(gateway)
        {
            return Err(PluginError::internal(format!(
                "static: Failed to match addr {} on interface {}",
                prev_address.address, request.ifname
            )));
        }
    }
    Ok(())
}

guest_sdk::export_plugin!(ipam: Static);
