//! IP addresses and prefixes as the reference plugin's Go code sees them.
//!
//! Go keeps an IPv4 address that arrives in IPv6 form (`::ffff:a.b.c.d`) as
//! IPv4 (`net.IP.To4`), prints addresses in RFC 5952 form and parses a prefix
//! without masking it (`10.1.2.3/24` stays `10.1.2.3` with a /24 mask). The
//! store's keys are those printed forms, so every address that reaches a key
//! or a message goes through [`canonical`] and `Display`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Bits in an IPv4 address.
pub const IPV4_BITS: u8 = 32;
/// Bits in an IPv6 address.
pub const IPV6_BITS: u8 = 128;

/// The address with an IPv4-mapped IPv6 address turned into IPv4, as Go's
/// `To4` does.
pub fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Parse an address without prefix (Go `net.ParseIP`), canonicalized.
pub fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>().ok().map(canonical)
}

/// Parse `<ip>` or `<ip>/<prefix>` (the CNI `ip.ParseIP` used for requested
/// addresses) and keep only the address, canonicalized.
pub fn parse_ip_ignoring_prefix(text: &str) -> Option<IpAddr> {
    if text.contains('/') {
        Cidr::parse(text).map(|cidr| cidr.address)
    } else {
        parse_ip(text)
    }
}

/// The number of bits in an address of this family.
pub fn family_bits(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => IPV4_BITS,
        IpAddr::V6(_) => IPV6_BITS,
    }
}

/// The address as an integer (IPv4 in the low 32 bits), as the reference's
/// `ip.Cmp` compares addresses.
pub fn to_int(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of the family of `like` whose integer value is `value`
/// (truncated to the family's width).
fn from_int(value: u128, like: IpAddr) -> IpAddr {
    match like {
        // Truncation is the point: callers stay inside the family's width.
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(value as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// The mask of a prefix length within a family of `bits` bits, as an integer.
fn mask_int(prefix_len: u8, bits: u8) -> u128 {
    let all_ones = if bits >= IPV6_BITS {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    if prefix_len == 0 {
        0
    } else if prefix_len >= bits {
        all_ones
    } else {
        all_ones & !((1u128 << (bits - prefix_len)) - 1)
    }
}

/// The address that follows `address` (wrapping inside its family).
pub fn next(address: IpAddr) -> IpAddr {
    let bits = family_bits(address);
    let wrapped = to_int(address).wrapping_add(1) & mask_int(bits, bits);
    from_int(wrapped, address)
}

/// `address` with its host bits cleared.
pub fn network_of(address: IpAddr, prefix_len: u8) -> IpAddr {
    let bits = family_bits(address);
    from_int(to_int(address) & mask_int(prefix_len, bits), address)
}

/// The last address of the network `network/prefix_len` (the IPv4 broadcast).
pub fn last_of(network: IpAddr, prefix_len: u8) -> IpAddr {
    let bits = family_bits(network);
    from_int(to_int(network) | !mask_int(prefix_len, bits), network)
}

/// Whether `address` is in the network `network/prefix_len` (same family,
/// same masked bits).
pub fn in_network(network: IpAddr, prefix_len: u8, address: IpAddr) -> bool {
    if family_bits(network) != family_bits(address) {
        return false;
    }
    let mask = mask_int(prefix_len, family_bits(network));
    to_int(network) & mask == to_int(address) & mask
}

/// A prefix as Go's `net.ParseCIDR` reads it: the address as written
/// (canonicalized, host bits kept), the prefix length, and the width of the
/// mask, which follows the family the address was *written* in (so
/// `::ffff:10.0.0.0/120` is an IPv4 address with a 128-bit mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub mask_bits: u8,
}

impl Cidr {
    /// Parse `<ip>/<prefix>`; `None` when Go would say `invalid CIDR address`.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (address_text, prefix_text) = text.split_once('/')?;
        let written: IpAddr = address_text.parse().ok()?;
        if prefix_text.is_empty() || !prefix_text.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let mask_bits = family_bits(written);
        // Longer digit strings than any valid prefix fail here, like Go's `dtoi`.
        let prefix_len: u8 = prefix_text.parse().ok()?;
        if prefix_len > mask_bits {
            return None;
        }
        Some(Cidr {
            address: canonical(written),
            prefix_len,
            mask_bits,
        })
    }

    /// The prefix length as Go prints it next to the canonical address: a
    /// 128-bit mask on an IPv4 address loses its first 96 bits.
    pub fn display_prefix_len(&self) -> u8 {
        if family_bits(self.address) < self.mask_bits {
            self.prefix_len
                .saturating_sub(self.mask_bits - family_bits(self.address))
        } else {
            self.prefix_len
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.address, self.display_prefix_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn mapped_ipv4_addresses_become_ipv4() {
        assert_eq!(parse_ip("::ffff:10.1.2.3"), Some(ip("10.1.2.3")));
        assert_eq!(parse_ip("2001:DB8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_ip("10.1.2.3/24"), None);
        assert_eq!(parse_ip("010.1.2.3"), None);
        assert_eq!(parse_ip("fe80::1%eth0"), None);
    }

    #[test]
    fn requested_addresses_drop_their_prefix() {
        assert_eq!(
            parse_ip_ignoring_prefix("10.1.2.11/24"),
            Some(ip("10.1.2.11"))
        );
        assert_eq!(
            parse_ip_ignoring_prefix("2001:db8:1::11/64"),
            Some(ip("2001:db8:1::11"))
        );
        assert_eq!(parse_ip_ignoring_prefix("10.1.2.11/33"), None);
        assert_eq!(parse_ip_ignoring_prefix("bar"), None);
    }

    #[test]
    fn cidr_keeps_host_bits_and_the_written_mask_width() {
        let cidr = Cidr::parse("10.1.2.3/24").expect("valid");
        assert_eq!(cidr.address, ip("10.1.2.3"));
        assert_eq!((cidr.prefix_len, cidr.mask_bits), (24, 32));
        assert_eq!(cidr.to_string(), "10.1.2.3/24");

        let mapped = Cidr::parse("::ffff:10.0.0.0/127").expect("valid");
        assert_eq!(mapped.address, ip("10.0.0.0"));
        assert_eq!((mapped.prefix_len, mapped.mask_bits), (127, 128));
        assert_eq!(mapped.to_string(), "10.0.0.0/31");

        for bad in [
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "x/8",
            "::/129",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
        assert_eq!(
            Cidr::parse("2001:DB8:0:0:1::/80").map(|c| c.to_string()),
            Some("2001:db8:0:0:1::/80".to_string())
        );
    }

    #[test]
    fn arithmetic_stays_in_the_family() {
        assert_eq!(next(ip("10.0.0.255")), ip("10.0.1.0"));
        assert_eq!(next(ip("255.255.255.255")), ip("0.0.0.0"));
        assert_eq!(next(ip("2001:db8::ffff")), ip("2001:db8::1:0"));
        assert_eq!(network_of(ip("192.168.127.0"), 23), ip("192.168.126.0"));
        assert_eq!(
            network_of(ip("2001:db8:24:19ff::"), 63),
            ip("2001:db8:24:19fe::")
        );
        assert_eq!(last_of(ip("10.0.0.0"), 29), ip("10.0.0.7"));
        assert_eq!(
            last_of(ip("2001:db8:1::"), 64),
            ip("2001:db8:1::ffff:ffff:ffff:ffff")
        );
        assert_eq!(last_of(ip("0.0.0.0"), 0), ip("255.255.255.255"));
        assert!(in_network(ip("10.0.0.0"), 29, ip("10.0.0.7")));
        assert!(!in_network(ip("10.0.0.0"), 29, ip("10.0.0.8")));
        assert!(!in_network(ip("0.0.0.0"), 0, ip("::1")));
        assert!(to_int(ip("10.0.0.1")) < to_int(ip("::1:0:0")));
    }
}
