//! IP addresses and prefixes as CNI results and netlink ops spell them
//! (`192.168.1.200/24`, `2001:db8::1`), parsed with the rules of Go's
//! `net.ParseCIDR` and `net.ParseIP` that the reference plugins use.

use std::fmt;
use std::net::IpAddr;

/// An address with its prefix length. The address keeps its host bits
/// (`10.1.2.3/24` stays `10.1.2.3/24`), as a CNI `ips[].address` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix_len: u8,
}

fn address_bits(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
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

    /// True for `0.0.0.0/0` and `::/0`.
    pub fn is_default(&self) -> bool {
        self.prefix_len == 0
    }

    fn mask_v4(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0)
    }

    fn mask_v6(&self) -> u128 {
        u128::MAX
            .checked_shl(128 - u32::from(self.prefix_len))
            .unwrap_or(0)
    }

    /// The same prefix with the host bits cleared (`10.1.2.3/24` gives
    /// `10.1.2.0/24`).
    pub fn network(&self) -> Cidr {
        let address = match self.address {
            IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & self.mask_v4()).into()),
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & self.mask_v6()).into()),
        };
        Cidr {
            address,
            prefix_len: self.prefix_len,
        }
    }

    /// Whether `ip` lies in this prefix (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(network), IpAddr::V4(candidate)) => {
                u32::from(network) & self.mask_v4() == u32::from(candidate) & self.mask_v4()
            }
            (IpAddr::V6(network), IpAddr::V6(candidate)) => {
                u128::from(network) & self.mask_v6() == u128::from(candidate) & self.mask_v6()
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
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse().ok()
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
            "10.0.0.2/-1",
            "10.0.0.2/x",
            "10.0.0.256/24",
            "fe80::1%eth0/64",
            "/24",
            "",
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
