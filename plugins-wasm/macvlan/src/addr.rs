//! IP addresses and prefixes as CNI results and netlink ops spell them
//! (`192.168.1.200/24`, `2001:db8::1`), parsed with the rules of Go's
//! `net.ParseCIDR` and `net.ParseIP` that the reference plugins use.

use std::fmt;
use std::net::IpAddr;

/// An address with its prefix length. The address keeps its host bits
/// (`10.1.2.3/24` stays `10.1.2.3/24`), as a CNI `ips[].address` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    /// Parse `address/prefix`; `None` when either half is malformed or the
    /// prefix is longer than the address.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (address_text, prefix_text) = text.split_once('/')?;
        let address = parse_ip(address_text)?;
        let all_digits = !prefix_text.is_empty()
            && prefix_text.len() <= 3
            && prefix_text.bytes().all(|byte| byte.is_ascii_digit());
        if !all_digits {
            return None;
        }
        let prefix_len: u8 = prefix_text.parse().ok()?;
        if prefix_len > address_bits(address) {
            return None;
        }
        Some(Cidr {
            address,
            prefix_len,
        })
    }

    pub fn is_ipv4(&self) -> bool {
        self.address.is_ipv4()
    }

    /// The same prefix with the host bits cleared (`10.1.2.3/24` gives
    /// `10.1.2.0/24`).
    pub fn network(&self) -> Cidr {
        let address = match self.address {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        };
        Cidr {
            address,
            prefix_len: self.prefix_len,
        }
    }

    /// True for `0.0.0.0/0` and `::/0`.
    pub fn is_default(&self) -> bool {
        self.prefix_len == 0
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.address, self.prefix_len)
    }
}

/// Parse a bare IPv4 or IPv6 address (no zone, no prefix).
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse().ok()
}

fn address_bits(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_host_bits_and_canonicalises_ipv6() {
        let cidr = Cidr::parse("3ffe:ffff:0:01ff::1/64").unwrap();
        assert_eq!(cidr.to_string(), "3ffe:ffff:0:1ff::1/64");
        assert!(!cidr.is_ipv4());
        let v4 = Cidr::parse("10.1.2.3/24").unwrap();
        assert_eq!(v4.to_string(), "10.1.2.3/24");
        assert_eq!(v4.network().to_string(), "10.1.2.0/24");
        assert!(v4.is_ipv4());
    }

    #[test]
    fn parse_rejects_what_go_rejects() {
        for bad in [
            "10.0.0.2",
            "10.0.0.2/",
            "10.0.0.2/33",
            "2001:db8::1/129",
            "10.0.0.2/+4",
            "10.0.0.256/24",
            "fe80::1%eth0/64",
            "/24",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad} should not parse");
        }
    }

    #[test]
    fn network_handles_zero_and_full_prefixes() {
        assert_eq!(
            Cidr::parse("10.9.8.7/0").unwrap().network().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            Cidr::parse("10.9.8.7/32").unwrap().network().to_string(),
            "10.9.8.7/32"
        );
        assert_eq!(
            Cidr::parse("2001:db8::ff/120")
                .unwrap()
                .network()
                .to_string(),
            "2001:db8::/120"
        );
        assert!(Cidr::parse("::/0").unwrap().is_default());
        assert!(!Cidr::parse("::/1").unwrap().is_default());
    }
}
