//! The operations a plan is made of, as the host owns them: parsed, typed
//! and printable. Guests return the WIT `netlink-op` variant; the sandbox
//! converts it into [`Op`] (rejecting unparsable addresses) before anything
//! else sees it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Which network namespace a query or op acts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Netns {
    Host,
    Sandbox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn of(address: &IpAddr) -> IpFamily {
        match address {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    Bridge,
    Private,
    Vepa,
    Passthru,
    Source,
}

impl MacvlanMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Passthru => "passthru",
            MacvlanMode::Source => "source",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteScope {
    Universe,
    Site,
    Link,
    Host,
}

/// A 48-bit MAC address, printed as lowercase colon-separated hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The text was not a 48-bit MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}")]
pub struct InvalidMac(pub String);

impl FromStr for MacAddr {
    type Err = InvalidMac;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 6];
        let mut parts = text.split([':', '-']);
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(|| InvalidMac(text.into()))?;
            if part.len() != 2 {
                return Err(InvalidMac(text.into()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| InvalidMac(text.into()))?;
        }
        if parts.next().is_some() {
            return Err(InvalidMac(text.into()));
        }
        Ok(MacAddr(bytes))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkInfo {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
    pub mac: Option<MacAddr>,
    /// `IFLA_INFO_KIND`; empty for devices without one.
    pub kind: String,
    pub up: bool,
    pub macvlan_mode: Option<MacvlanMode>,
    /// `IFF_PROMISC` is set.
    pub promisc: bool,
    /// `IFF_ALLMULTI` is set.
    pub allmulti: bool,
    /// `IFLA_TXQLEN`.
    pub txqueuelen: u32,
    /// The lower device (`IFLA_LINK`) of a macvlan or vlan, or the master
    /// (`IFLA_MASTER`) of a port, by name, when the querier may see it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// That device's MTU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_mtu: Option<u32>,
    /// The link's peer (of a veth) or lower device lives in another network
    /// namespace (`IFLA_LINK_NETNSID` is set).
    #[serde(skip)]
    pub peer_in_other_netns: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CreateMacvlan {
    pub name: String,
    pub master: String,
    pub master_in_sandbox: bool,
    pub mode: MacvlanMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AddRoute {
    pub link: String,
    pub dst: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<RouteScope>,
}

/// One operation of a plan. Every op acts in the sandbox netns; only
/// `CreateMacvlan` reads its master in the host namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    CreateMacvlan(CreateMacvlan),
    #[serde(rename_all = "kebab-case")]
    RenameLink {
        name: String,
        new_name: String,
    },
    SetLinkUp {
        link: String,
    },
    /// Bring a link down (ABI 0.2.0), e.g. before changing its MAC so the
    /// kernel regenerates its IPv6 link-local address.
    SetLinkDown {
        link: String,
    },
    /// Turn `IFF_PROMISC` on or off (ABI 0.2.0).
    SetPromisc {
        link: String,
        on: bool,
    },
    /// Turn `IFF_ALLMULTI` on or off (ABI 0.2.0).
    SetAllmulti {
        link: String,
        on: bool,
    },
    /// Set the transmit queue length, `IFLA_TXQLEN` (ABI 0.2.0).
    SetTxQueueLen {
        link: String,
        len: u32,
    },
    SetMtu {
        link: String,
        mtu: u32,
    },
    SetMac {
        link: String,
        mac: MacAddr,
    },
    AddAddress {
        link: String,
        address: IpNet,
    },
    AddRoute(AddRoute),
    SetSysctl {
        key: String,
        value: String,
    },
    DeleteLink {
        link: String,
    },
    /// Delete every main-table default route of `family` through `link`
    /// (the meta-plugin's `default-route` choice; plugins cannot ask for it).
    RemoveDefaultRoutes {
        link: String,
        family: IpFamily,
    },
}

impl Op {
    /// The op's name as it appears in plans and errors (`create-macvlan`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::CreateMacvlan(_) => "create-macvlan",
            Op::RenameLink { .. } => "rename-link",
            Op::SetLinkUp { .. } => "set-link-up",
            Op::SetLinkDown { .. } => "set-link-down",
            Op::SetPromisc { .. } => "set-promisc",
            Op::SetAllmulti { .. } => "set-allmulti",
            Op::SetTxQueueLen { .. } => "set-txqueuelen",
            Op::SetMtu { .. } => "set-mtu",
            Op::SetMac { .. } => "set-mac",
            Op::AddAddress { .. } => "add-address",
            Op::AddRoute(_) => "add-route",
            Op::SetSysctl { .. } => "set-sysctl",
            Op::DeleteLink { .. } => "delete-link",
            Op::RemoveDefaultRoutes { .. } => "remove-default-routes",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateMacvlan(create) => write!(
                f,
                "create-macvlan {} on {} ({})",
                create.name,
                create.master,
                create.mode.as_str()
            ),
            Op::RenameLink { name, new_name } => write!(f, "rename-link {name} to {new_name}"),
            Op::SetLinkUp { link } => write!(f, "set-link-up {link}"),
            Op::SetLinkDown { link } => write!(f, "set-link-down {link}"),
            Op::SetPromisc { link, on } => {
                write!(f, "set-promisc {link} {}", if *on { "on" } else { "off" })
            }
            Op::SetAllmulti { link, on } => {
                write!(f, "set-allmulti {link} {}", if *on { "on" } else { "off" })
            }
            Op::SetTxQueueLen { link, len } => write!(f, "set-txqueuelen {link} {len}"),
            Op::SetMtu { link, mtu } => write!(f, "set-mtu {link} {mtu}"),
            Op::SetMac { link, mac } => write!(f, "set-mac {link} {mac}"),
            Op::AddAddress { link, address } => write!(f, "add-address {address} on {link}"),
            Op::AddRoute(route) => {
                write!(f, "add-route {} on {}", route.dst, route.link)?;
                if let Some(gateway) = route.gateway {
                    write!(f, " via {gateway}")?;
                }
                Ok(())
            }
            Op::SetSysctl { key, value } => write!(f, "set-sysctl {key}={value}"),
            Op::DeleteLink { link } => write!(f, "delete-link {link}"),
            Op::RemoveDefaultRoutes { link, family } => {
                write!(f, "remove-default-routes {family:?} on {link}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_parse_and_print_lowercase() {
        let mac: MacAddr = "C2:11:22:33:44:55".parse().unwrap();
        assert_eq!(mac.to_string(), "c2:11:22:33:44:55");
        assert!("c2:11:22:33:44".parse::<MacAddr>().is_err());
        assert!("c2:11:22:33:44:55:66".parse::<MacAddr>().is_err());
        assert!("zz:11:22:33:44:55".parse::<MacAddr>().is_err());
    }

    #[test]
    fn ops_serialize_with_a_kebab_case_tag() {
        let op = Op::RenameLink {
            name: "mv01".into(),
            new_name: "net1".into(),
        };
        assert_eq!(
            serde_json::to_string(&op).unwrap(),
            r#"{"op":"rename-link","name":"mv01","new-name":"net1"}"#
        );
        let back: Op =
            serde_json::from_str(r#"{"op":"add-address","link":"net1","address":"10.0.0.2/24"}"#)
                .unwrap();
        assert_eq!(back.kind(), "add-address");
    }
}
