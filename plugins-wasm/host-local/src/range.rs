//! Ranges and range sets: canonicalization with the reference's defaults and
//! error texts, membership, overlap, and the round-robin iterator. Pure: no
//! host calls.
//!
//! A range is a subnet with an inclusive `rangeStart`..`rangeEnd` and a
//! gateway that is never handed out. A range set is a list of ranges of one
//! family; host-local allocates one address per range set.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use crate::address::{self, Cidr};

/// Why a range or a range set is invalid. The texts are the reference's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeError {
    /// A range without `subnet` (Go reports the nil address it could not use).
    MissingSubnet,
    /// The subnet leaves fewer than two host bits.
    TooSmall { subnet: String },
    /// The subnet's address and mask are of different families.
    FamilyMismatch,
    /// The subnet address is not the network address.
    HostBitsSet { prefix_len: u8, network: IpAddr },
    /// `rangeStart` is outside the subnet or after `rangeEnd`.
    StartOutside { start: IpAddr, subnet: String },
    /// `rangeEnd` is outside the subnet or before `rangeStart`.
    EndOutside { end: IpAddr, subnet: String },
    /// A range set with no range.
    EmptySet,
    /// A range set mixing IPv4 and IPv6 ranges.
    MixedFamilies,
    /// Two ranges of one set overlap.
    Overlap { first: String, second: String },
}

impl fmt::Display for RangeError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeError::MissingSubnet => write!(formatter, "IP <nil> not v4 nor v6"),
            RangeError::TooSmall { subnet } => {
                write!(formatter, "Network {subnet} too small to allocate from")
            }
            RangeError::FamilyMismatch => write!(formatter, "IPNet IP and Mask version mismatch"),
            RangeError::HostBitsSet {
                prefix_len,
                network,
            } => write!(
                formatter,
                "Network has host bits set. For a subnet mask of length {prefix_len} the network address is {network}"
            ),
            RangeError::StartOutside { start, subnet } => {
                write!(formatter, "RangeStart {start} not in network {subnet}")
            }
            RangeError::EndOutside { end, subnet } => {
                write!(formatter, "RangeEnd {end} not in network {subnet}")
            }
            RangeError::EmptySet => write!(formatter, "empty range set"),
            RangeError::MixedFamilies => write!(formatter, "mixed address families"),
            RangeError::Overlap { first, second } => {
                write!(formatter, "subnets {first} and {second} overlap")
            }
        }
    }
}

impl std::error::Error for RangeError {}

/// A range as configured: every field optional until canonicalized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSpec {
    pub subnet: Option<Cidr>,
    pub range_start: Option<IpAddr>,
    pub range_end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
}

/// A canonical range: the subnet is a network address, every field is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub network: IpAddr,
    pub prefix_len: u8,
    pub range_start: IpAddr,
    pub range_end: IpAddr,
    pub gateway: IpAddr,
}

/// Whether `address` is in `network/prefix_len` and between the bounds that
/// are known (the reference checks a half-built range the same way).
fn within(
    network: IpAddr,
    prefix_len: u8,
    range_start: Option<IpAddr>,
    range_end: Option<IpAddr>,
    address: IpAddr,
) -> bool {
    let address = address::canonical(address);
    if !address::in_network(network, prefix_len, address) {
        return false;
    }
    let value = address::to_int(address);
    if range_start.is_some_and(|start| value < address::to_int(start)) {
        return false;
    }
    if range_end.is_some_and(|end| value > address::to_int(end)) {
        return false;
    }
    true
}

impl RangeSpec {
    /// Fill in the defaults (gateway and `rangeStart` = network + 1,
    /// `rangeEnd` = last address, minus one for IPv4) and check the range.
    pub fn canonicalize(&self) -> Result<Range, RangeError> {
        let subnet = self.subnet.ok_or(RangeError::MissingSubnet)?;
        let family_bits = address::family_bits(subnet.address);
        if subnet.prefix_len > subnet.mask_bits.saturating_sub(2) {
            return Err(RangeError::TooSmall {
                subnet: subnet.to_string(),
            });
        }
        if family_bits != subnet.mask_bits {
            return Err(RangeError::FamilyMismatch);
        }
        let network = address::network_of(subnet.address, subnet.prefix_len);
        if network != subnet.address {
            return Err(RangeError::HostBitsSet {
                prefix_len: subnet.prefix_len,
                network,
            });
        }
        let prefix_len = subnet.prefix_len;
        let subnet_text = subnet.to_string();
        let first_host = address::next(network);
        let gateway = self.gateway.map(address::canonical).unwrap_or(first_host);

        let explicit_start = self.range_start.map(address::canonical);
        let explicit_end = self.range_end.map(address::canonical);
        let range_start = match explicit_start {
            Some(start) => {
                if !within(network, prefix_len, None, explicit_end, start) {
                    return Err(RangeError::StartOutside {
                        start,
                        subnet: subnet_text,
                    });
                }
                start
            }
            None => first_host,
        };
        let range_end = match explicit_end {
            Some(end) => {
                if !within(network, prefix_len, Some(range_start), None, end) {
                    return Err(RangeError::EndOutside {
                        end,
                        subnet: subnet_text,
                    });
                }
                end
            }
            // The IPv4 broadcast address is never handed out by default.
            None => match address::last_of(network, prefix_len) {
                IpAddr::V4(broadcast) => {
                    IpAddr::V4(Ipv4Addr::from(u32::from(broadcast).saturating_sub(1)))
                }
                last => last,
            },
        };
        Ok(Range {
            network,
            prefix_len,
            range_start,
            range_end,
            gateway,
        })
    }
}

impl Range {
    /// Whether `address` is in the subnet and between `rangeStart` and
    /// `rangeEnd` (inclusive).
    pub fn contains(&self, address: IpAddr) -> bool {
        within(
            self.network,
            self.prefix_len,
            Some(self.range_start),
            Some(self.range_end),
            address,
        )
    }

    /// Whether the two ranges share an address (never across families).
    pub fn overlaps(&self, other: &Range) -> bool {
        if address::family_bits(self.range_start) != address::family_bits(other.range_start) {
            return false;
        }
        self.contains(other.range_start)
            || self.contains(other.range_end)
            || other.contains(self.range_start)
            || other.contains(self.range_end)
    }

    /// Whether the range holds IPv4 addresses.
    pub fn is_ipv4(&self) -> bool {
        self.range_start.is_ipv4()
    }
}

impl fmt::Display for Range {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}-{}", self.range_start, self.range_end)
    }
}

/// Canonical ranges of one family that never overlap, tried in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range>,
}

impl RangeSet {
    /// Canonicalize every range and check the set: not empty, one family, no
    /// overlap between its ranges.
    pub fn canonicalize(specs: &[RangeSpec]) -> Result<RangeSet, RangeError> {
        if specs.is_empty() {
            return Err(RangeError::EmptySet);
        }
        let mut ranges: Vec<Range> = Vec::with_capacity(specs.len());
        for spec in specs {
            let range = spec.canonicalize()?;
            if let Some(first) = ranges.first()
                && first.is_ipv4() != range.is_ipv4()
            {
                return Err(RangeError::MixedFamilies);
            }
            ranges.push(range);
        }
        for (index, first) in ranges.iter().enumerate() {
            for second in &ranges[index + 1..] {
                if first.overlaps(second) {
                    return Err(RangeError::Overlap {
                        first: first.to_string(),
                        second: second.to_string(),
                    });
                }
            }
        }
        Ok(RangeSet { ranges })
    }

    /// The ranges, in configuration order.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    /// The first range that contains `address`.
    pub fn range_for(&self, address: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|range| range.contains(address))
    }

    /// Whether some range contains `address`.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.range_for(address).is_some()
    }

    /// Whether a range of this set overlaps a range of `other`.
    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.ranges
            .iter()
            .any(|range| other.ranges.iter().any(|theirs| range.overlaps(theirs)))
    }

    /// Whether the set holds IPv4 addresses.
    pub fn is_ipv4(&self) -> bool {
        self.ranges.first().is_some_and(Range::is_ipv4)
    }

    /// The round-robin candidates: after `last_reserved` when it lies in the
    /// set (so allocation continues where the previous one stopped, wrapping
    /// round to end on `last_reserved` itself), otherwise from the first
    /// range's `rangeStart`. Gateways are skipped.
    pub fn candidates(&self, last_reserved: Option<IpAddr>) -> Candidates<'_> {
        let resume = last_reserved.and_then(|last| {
            self.ranges
                .iter()
                .position(|range| range.contains(last))
                .map(|range_index| (range_index, address::canonical(last)))
        });
        match resume {
            Some((range_index, last)) => Candidates {
                set: self,
                range_index,
                cursor: Some(last),
                start: None,
            },
            None => Candidates {
                set: self,
                range_index: 0,
                cursor: None,
                start: None,
            },
        }
    }
}

impl fmt::Display for RangeSet {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, range) in self.ranges.iter().enumerate() {
            if index > 0 {
                formatter.write_str(",")?;
            }
            write!(formatter, "{range}")?;
        }
        Ok(())
    }
}

/// The addresses of a range set in round-robin order, each with its range;
/// ends after one full turn.
#[derive(Debug, Clone)]
pub struct Candidates<'a> {
    set: &'a RangeSet,
    range_index: usize,
    /// The last address returned (or the last reserved one before the first).
    cursor: Option<IpAddr>,
    /// The first candidate; meeting it again ends the turn.
    start: Option<IpAddr>,
}

impl<'a> Candidates<'a> {
    /// The first candidate, the one whose return ends the turn.
    pub fn start(&self) -> Option<IpAddr> {
        self.start
    }

    /// Move to the next address; `None` once the turn is complete.
    fn advance(&mut self) -> Option<IpAddr> {
        let ranges = &self.set.ranges;
        let current_range = ranges.get(self.range_index)?;
        let Some(cursor) = self.cursor else {
            // A fresh start: rangeStart of the first range is the first candidate.
            self.start = Some(current_range.range_start);
            self.cursor = Some(current_range.range_start);
            return Some(current_range.range_start);
        };
        let candidate = if cursor == current_range.range_end {
            self.range_index = (self.range_index + 1) % ranges.len();
            ranges.get(self.range_index)?.range_start
        } else {
            address::next(cursor)
        };
        self.cursor = Some(candidate);
        match self.start {
            None => self.start = Some(candidate),
            Some(start) if start == candidate => return None,
            Some(_) => {}
        }
        Some(candidate)
    }
}

impl<'a> Iterator for Candidates<'a> {
    type Item = (IpAddr, &'a Range);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let candidate = self.advance()?;
            let range = self.set.ranges.get(self.range_index)?;
            if candidate != range.gateway {
                return Some((candidate, range));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn subnet(text: &str) -> RangeSpec {
        RangeSpec {
            subnet: Some(Cidr::parse(text).expect("test subnet")),
            ..RangeSpec::default()
        }
    }

    fn bounded(text: &str, start: Option<&str>, end: Option<&str>) -> RangeSpec {
        RangeSpec {
            range_start: start.map(ip),
            range_end: end.map(ip),
            ..subnet(text)
        }
    }

    fn canonical(spec: RangeSpec) -> Range {
        spec.canonicalize().expect("valid range")
    }

    #[test]
    fn ipv4_defaults_skip_network_and_broadcast() {
        let range = canonical(subnet("192.0.2.0/24"));
        assert_eq!(range.network, ip("192.0.2.0"));
        assert_eq!(range.prefix_len, 24);
        assert_eq!(range.range_start, ip("192.0.2.1"));
        assert_eq!(range.range_end, ip("192.0.2.254"));
        assert_eq!(range.gateway, ip("192.0.2.1"));

        let smaller = canonical(subnet("192.0.2.0/25"));
        assert_eq!(smaller.range_start, ip("192.0.2.1"));
        assert_eq!(smaller.range_end, ip("192.0.2.126"));
        assert_eq!(smaller.gateway, ip("192.0.2.1"));
    }

    #[test]
    fn ipv6_defaults_run_to_the_last_address() {
        let range = canonical(subnet("2001:DB8:1::/64"));
        assert_eq!(range.network, ip("2001:db8:1::"));
        assert_eq!(range.range_start, ip("2001:db8:1::1"));
        assert_eq!(range.range_end, ip("2001:db8:1::ffff:ffff:ffff:ffff"));
        assert_eq!(range.gateway, ip("2001:db8:1::1"));
    }

    #[test]
    fn explicit_fields_are_kept() {
        let range = canonical(RangeSpec {
            gateway: Some(ip("192.0.2.254")),
            ..bounded("192.0.2.0/24", Some("192.0.2.40"), Some("192.0.2.50"))
        });
        assert_eq!(range.range_start, ip("192.0.2.40"));
        assert_eq!(range.range_end, ip("192.0.2.50"));
        assert_eq!(range.gateway, ip("192.0.2.254"));
        assert_eq!(range.to_string(), "192.0.2.40-192.0.2.50");
    }

    #[test]
    fn host_bits_are_rejected_with_the_network_address() {
        let cases = [
            (
                "192.0.2.12/24",
                "Network has host bits set. For a subnet mask of length 24 the network address is 192.0.2.0",
            ),
            (
                "2001:DB8:1::24:19ff:fee1:c44a/64",
                "Network has host bits set. For a subnet mask of length 64 the network address is 2001:db8:1::",
            ),
            (
                "2001:DB8:24:19ff::/63",
                "Network has host bits set. For a subnet mask of length 63 the network address is 2001:db8:24:19fe::",
            ),
            (
                "192.168.127.0/23",
                "Network has host bits set. For a subnet mask of length 23 the network address is 192.168.126.0",
            ),
        ];
        for (text, expected) in cases {
            let err = subnet(text).canonicalize().expect_err(text);
            assert_eq!(err.to_string(), expected);
        }
    }

    #[test]
    fn tiny_and_inconsistent_subnets_are_rejected() {
        let err = subnet("192.0.2.0/31").canonicalize().expect_err("/31");
        assert_eq!(
            err.to_string(),
            "Network 192.0.2.0/31 too small to allocate from"
        );
        let err = subnet("2001:db8::/127").canonicalize().expect_err("/127");
        assert_eq!(
            err.to_string(),
            "Network 2001:db8::/127 too small to allocate from"
        );
        let err = subnet("::ffff:10.0.0.0/120")
            .canonicalize()
            .expect_err("mapped");
        assert_eq!(err, RangeError::FamilyMismatch);
        assert_eq!(err.to_string(), "IPNet IP and Mask version mismatch");
        let err = RangeSpec::default().canonicalize().expect_err("no subnet");
        assert_eq!(err.to_string(), "IP <nil> not v4 nor v6");
        assert!(canonical(subnet("10.0.0.0/30")).contains(ip("10.0.0.2")));
    }

    #[test]
    fn range_start_and_end_must_lie_in_the_network_and_in_order() {
        let err = bounded("192.0.2.0/24", Some("192.0.3.0"), None)
            .canonicalize()
            .expect_err("start");
        assert_eq!(
            err.to_string(),
            "RangeStart 192.0.3.0 not in network 192.0.2.0/24"
        );
        let err = bounded("192.0.2.0/24", None, Some("192.0.4.0"))
            .canonicalize()
            .expect_err("end");
        assert_eq!(
            err.to_string(),
            "RangeEnd 192.0.4.0 not in network 192.0.2.0/24"
        );
        let err = bounded("192.0.2.0/24", Some("192.0.2.50"), Some("192.0.2.40"))
            .canonicalize()
            .expect_err("reversed");
        assert_eq!(
            err.to_string(),
            "RangeStart 192.0.2.50 not in network 192.0.2.0/24"
        );
        // The network address itself is allowed when given explicitly.
        let range = canonical(bounded(
            "192.168.1.0/30",
            Some("192.168.1.0"),
            Some("192.168.1.3"),
        ));
        assert_eq!(range.range_start, ip("192.168.1.0"));
        assert_eq!(range.range_end, ip("192.168.1.3"));
    }

    #[test]
    fn containment_is_inclusive_of_both_bounds() {
        let v4 = canonical(bounded(
            "192.0.2.0/24",
            Some("192.0.2.40"),
            Some("192.0.2.50"),
        ));
        assert!(!v4.contains(ip("192.0.3.0")));
        assert!(!v4.contains(ip("192.0.2.39")));
        assert!(v4.contains(ip("192.0.2.40")));
        assert!(v4.contains(ip("192.0.2.50")));
        assert!(v4.contains(ip("::ffff:192.0.2.45")));
        assert!(!v4.contains(ip("192.0.2.51")));

        let v6 = canonical(bounded(
            "2001:DB8:1::/64",
            Some("2001:db8:1::40"),
            Some("2001:db8:1::50"),
        ));
        assert!(!v6.contains(ip("2001:db8:2::")));
        assert!(!v6.contains(ip("2001:db8:1::39")));
        assert!(v6.contains(ip("2001:db8:1::40")));
        assert!(v6.contains(ip("2001:db8:1::50")));
        assert!(!v6.contains(ip("2001:db8:1::51")));
    }

    #[test]
    fn overlap_detection_is_commutative() {
        let cases = [
            (subnet("10.0.0.0/24"), subnet("10.0.1.0/24"), false),
            (subnet("0.0.0.0/24"), subnet("::/24"), false),
            (subnet("10.0.0.0/24"), subnet("10.0.0.0/24"), true),
            (subnet("10.0.0.0/20"), subnet("10.0.1.0/24"), true),
            (
                bounded("10.0.0.0/24", None, Some("10.0.0.127")),
                bounded("10.0.0.0/24", Some("10.0.0.128"), None),
                false,
            ),
            (
                bounded("10.0.0.0/24", None, Some("10.0.0.127")),
                bounded("10.0.0.0/24", Some("10.0.0.127"), None),
                true,
            ),
        ];
        for (first, second, expected) in cases {
            let (first, second) = (canonical(first), canonical(second));
            assert_eq!(first.overlaps(&second), expected, "{first} vs {second}");
            assert_eq!(second.overlaps(&first), expected, "{second} vs {first}");
        }
    }

    #[test]
    fn range_sets_report_membership_and_their_text() {
        let set = RangeSet::canonicalize(&[subnet("192.168.0.0/24"), subnet("172.16.1.0/24")])
            .expect("valid set");
        assert!(set.contains(ip("192.168.0.55")));
        assert_eq!(set.range_for(ip("192.168.0.55")), set.ranges().first());
        assert_eq!(set.range_for(ip("192.168.99.99")), None);
        assert_eq!(
            set.to_string(),
            "192.168.0.1-192.168.0.254,172.16.1.1-172.16.1.254"
        );
        assert!(set.is_ipv4());
    }

    #[test]
    fn range_sets_reject_empty_mixed_and_overlapping_ranges() {
        assert_eq!(
            RangeSet::canonicalize(&[]).expect_err("empty").to_string(),
            "empty range set"
        );
        assert_eq!(
            RangeSet::canonicalize(&[subnet("10.1.0.0/22"), subnet("2001:db8:5::/64")])
                .expect_err("mixed")
                .to_string(),
            "mixed address families"
        );
        assert_eq!(
            RangeSet::canonicalize(&[subnet("192.168.0.0/20"), subnet("192.168.2.0/24")])
                .expect_err("overlap")
                .to_string(),
            "subnets 192.168.0.1-192.168.15.254 and 192.168.2.1-192.168.2.254 overlap"
        );
        // The first invalid range wins over later family problems.
        assert_eq!(
            RangeSet::canonicalize(&[subnet("10.1.0.0/22"), subnet("10.2.0.1/24")])
                .expect_err("host bits")
                .to_string(),
            "Network has host bits set. For a subnet mask of length 24 the network address is 10.2.0.0"
        );
    }

    #[test]
    fn range_sets_overlap_across_sets() {
        let wide = RangeSet::canonicalize(&[subnet("192.168.0.0/20")]).expect("valid");
        let narrow = RangeSet::canonicalize(&[subnet("192.168.2.0/24")]).expect("valid");
        let apart = RangeSet::canonicalize(&[subnet("192.168.16.0/24")]).expect("valid");
        assert!(wide.overlaps(&narrow));
        assert!(narrow.overlaps(&wide));
        assert!(!wide.overlaps(&apart));
    }

    fn addresses(set: &RangeSet, last: Option<&str>) -> Vec<String> {
        set.candidates(last.map(ip))
            .map(|(candidate, _)| candidate.to_string())
            .collect()
    }

    #[test]
    fn candidates_loop_once_from_the_beginning() {
        let set = RangeSet::canonicalize(&[subnet("192.168.1.0/29")]).expect("valid");
        let all = [
            "192.168.1.2",
            "192.168.1.3",
            "192.168.1.4",
            "192.168.1.5",
            "192.168.1.6",
        ];
        assert_eq!(addresses(&set, None), all);
        // After the last address the turn starts at the beginning again.
        assert_eq!(addresses(&set, Some("192.168.1.6")), all);
        // A last address outside the set is ignored.
        assert_eq!(addresses(&set, Some("10.0.0.1")), all);
    }

    #[test]
    fn candidates_loop_once_from_the_middle() {
        let set = RangeSet::canonicalize(&[subnet("192.168.1.0/29")]).expect("valid");
        assert_eq!(
            addresses(&set, Some("192.168.1.3")),
            [
                "192.168.1.4",
                "192.168.1.5",
                "192.168.1.6",
                "192.168.1.2",
                "192.168.1.3"
            ]
        );
    }

    #[test]
    fn candidates_cross_ranges_and_record_where_they_started() {
        let set = RangeSet::canonicalize(&[
            bounded("192.168.1.0/30", Some("192.168.1.0"), Some("192.168.1.3")),
            bounded("192.168.2.0/30", Some("192.168.2.0"), Some("192.168.2.3")),
        ])
        .expect("valid");

        let mut after_first_range = set.candidates(Some(ip("192.168.1.3")));
        let (first, range) = after_first_range.next().expect("a candidate");
        assert_eq!(first, ip("192.168.2.0"));
        assert_eq!(range.network, ip("192.168.2.0"));
        assert_eq!(after_first_range.start(), Some(ip("192.168.2.0")));

        let mut fresh = set.candidates(None);
        assert_eq!(
            fresh.next().map(|(candidate, _)| candidate),
            Some(ip("192.168.1.0"))
        );
        assert_eq!(fresh.start(), Some(ip("192.168.1.0")));
        // Gateways (.1 of each subnet) are skipped; network and broadcast are
        // in the explicit ranges and so are candidates.
        assert_eq!(
            addresses(&set, None),
            [
                "192.168.1.0",
                "192.168.1.2",
                "192.168.1.3",
                "192.168.2.0",
                "192.168.2.2",
                "192.168.2.3"
            ]
        );
    }

    #[test]
    fn a_range_holding_only_its_gateway_has_no_candidates() {
        let set = RangeSet::canonicalize(&[RangeSpec {
            gateway: Some(ip("10.9.0.100")),
            ..bounded("10.9.0.0/24", Some("10.9.0.100"), Some("10.9.0.100"))
        }])
        .expect("valid");
        assert!(addresses(&set, None).is_empty());
        assert!(addresses(&set, Some("10.9.0.100")).is_empty());

        let pair = RangeSet::canonicalize(&[RangeSpec {
            gateway: Some(ip("10.9.0.100")),
            ..bounded("10.9.0.0/24", Some("10.9.0.100"), Some("10.9.0.101"))
        }])
        .expect("valid");
        assert_eq!(addresses(&pair, None), ["10.9.0.101"]);
    }
}
