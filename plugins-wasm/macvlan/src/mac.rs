//! Ethernet MAC addresses in the notations Go's `net.ParseMAC` accepts for a
//! 6-byte address: `c2:11:22:33:44:55`, `c2-11-22-33-44-55` and
//! `c211.2233.4455`.

/// Parse a 6-byte MAC and return it as the kernel prints it: lowercase,
/// colon-separated. `None` when `text` is not a 6-byte MAC.
pub(crate) fn normalise_mac(text: &str) -> Option<String> {
    let bytes = parse_mac(text)?;
    let octets: Vec<String> = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    Some(octets.join(":"))
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let groups: Vec<&str> = if text.len() == 17 && text.contains(':') {
        text.split(':').collect()
    } else if text.len() == 17 && text.contains('-') {
        text.split('-').collect()
    } else if text.len() == 14 && text.contains('.') {
        // Three groups of four hex digits, each holding two octets.
        let mut octet_groups = Vec::with_capacity(6);
        for quad in text.split('.') {
            if quad.len() != 4 || !quad.is_char_boundary(2) {
                return None;
            }
            octet_groups.push(&quad[..2]);
            octet_groups.push(&quad[2..]);
        }
        octet_groups
    } else {
        return None;
    };
    if groups.len() != 6 {
        return None;
    }
    let mut bytes = [0u8; 6];
    for (slot, group) in bytes.iter_mut().zip(&groups) {
        if group.len() != 2 || !group.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return None;
        }
        *slot = u8::from_str_radix(group, 16).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_go_notations() {
        for text in ["C2:11:22:33:44:55", "c2-11-22-33-44-55", "c211.2233.4455"] {
            assert_eq!(
                normalise_mac(text).as_deref(),
                Some("c2:11:22:33:44:55"),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_malformed_macs() {
        for text in [
            "",
            "c2:11:22:33:44",
            "c2:11:22:33:44:55:66",
            "c2:11:22:33:44:5g",
            "c2:11-22:33:44:55",
            "c2:11:22:33:4:555",
            "c211.2233.445",
            "c2112233.4455.",
            "+2:11:22:33:44:55",
        ] {
            assert_eq!(normalise_mac(text), None, "{text} should not parse");
        }
    }
}
