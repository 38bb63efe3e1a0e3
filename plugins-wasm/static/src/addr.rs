//! IP addresses and prefixes as a CNI result spells them
//! (`10.10.0.1/24`, `3ffe:ffff:0:1ff::1`), parsed with the rules of Go's
//! `net.ParseCIDR` and `net.ParseIP` that the reference static plugin uses.

use std::fmt;
use std::net::IpAddr;

/// An address with its prefix length; the address keeps its host bits
/// (`10.10.0.1/24` stays `10.10.0.1/24`).
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
        let address_bits = if address.is_ipv4() { 32 } else { 128 };
        if prefix_len > address_bits {
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

    /// Whether `ip` lies in this prefix (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(network), IpAddr::V4(candidate)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(candidate) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(candidate)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(candidate) & mask
            }
            _ => false,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_host_bits_and_canonicalises_ipv6() {
        assert_eq!(
            Cidr::parse("3ffe:ffff:0:01ff::1/64").unwrap().to_string(),
            "3ffe:ffff:0:1ff::1/64"
        );
        assert_eq!(
            Cidr::parse("10.10.0.1/24").unwrap().to_string(),
            "10.10.0.1/24"
        );
        for bad in [
            "10.10.0.1",
            "10.10.0.1/33",
            "10.10.0.1/x",
            "::1/129",
            "10.10.0.1/-1",
            "",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad} should not parse");
        }
    }

    #[test]
    fn contains_compares_the_network_bits_of_one_family() {
        let cidr = Cidr::parse("10.10.0.1/24").unwrap();
        assert!(cidr.contains("10.10.0.254".parse().unwrap()));
        assert!(!cidr.contains("10.10.1.1".parse().unwrap()));
        assert!(!cidr.contains("::ffff:10.10.0.254".parse().unwrap()));
        let everything = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(everything.contains("192.0.2.1".parse().unwrap()));
        let v6 = Cidr::parse("3ffe:ffff:0:1ff::1/64").unwrap();
        assert!(v6.contains("3ffe:ffff:0:1ff::fe".parse().unwrap()));
        assert!(!v6.contains("3ffe:ffff:0:2ff::1".parse().unwrap()));
        assert!(
            Cidr::parse("2001:db8::1/128")
                .unwrap()
                .contains("2001:db8::1".parse().unwrap())
        );
    }
}
