//! The temporary name a macvlan is created under when the host namespace
//! already has a link named like the target interface.
//!
//! Guests have no randomness, so the name is derived from the attachment:
//! `mv` plus the 8 hex digits of an FNV-1a hash of the container id, the
//! interface name and an attempt counter. The same attachment always gets
//! the same name; a name already taken in either namespace moves on to the
//! next attempt.

use guest_sdk::{Host, Netns, PluginError};

/// How many candidate names to try before giving up.
const ATTEMPTS: u32 = 16;

const FNV_OFFSET_BASIS: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// A free temporary name for the macvlan that becomes `ifname` in the sandbox
/// of `container_id` (10 bytes, within the kernel's 15-byte limit).
pub(crate) fn temporary_name(
    host: &dyn Host,
    container_id: &str,
    ifname: &str,
) -> Result<String, PluginError> {
    for attempt in 0..ATTEMPTS {
        let candidate = candidate_name(container_id, ifname, attempt);
        let taken = candidate == ifname
            || host.get_link(Netns::Host, &candidate).is_some()
            || host.get_link(Netns::Sandbox, &candidate).is_some();
        if !taken {
            return Ok(candidate);
        }
    }
    Err(PluginError::internal(format!(
        "no free temporary name for macvlan {ifname:?} after {ATTEMPTS} attempts"
    )))
}

/// The `attempt`-th candidate name.
pub(crate) fn candidate_name(container_id: &str, ifname: &str, attempt: u32) -> String {
    let mut input = Vec::with_capacity(container_id.len() + ifname.len() + 5);
    input.extend_from_slice(container_id.as_bytes());
    input.push(0);
    input.extend_from_slice(ifname.as_bytes());
    input.extend_from_slice(&attempt.to_le_bytes());
    format!("mv{:08x}", fnv1a_32(&input))
}

/// The 32-bit FNV-1a hash of `bytes`.
fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_sdk::testing::MockHost;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn candidates_are_deterministic_short_and_distinct() {
        let first = candidate_name("dummy", "net1", 0);
        assert_eq!(first, candidate_name("dummy", "net1", 0));
        assert_eq!(first.len(), 10);
        assert!(first.starts_with("mv"));
        assert!(first[2..].bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(first, candidate_name("dummy", "net1", 1));
        assert_ne!(first, candidate_name("dummy", "net2", 0));
        assert_ne!(first, candidate_name("other", "net1", 0));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(candidate_name("ab", "c", 0), candidate_name("a", "bc", 0));
    }

    #[test]
    fn a_taken_candidate_moves_on_to_the_next_attempt() {
        let first = candidate_name("dummy", "net1", 0);
        let second = candidate_name("dummy", "net1", 1);
        let third = candidate_name("dummy", "net1", 2);
        let host = MockHost::new()
            .with_link(Netns::Host, &first, 1500)
            .with_link(Netns::Sandbox, &second, 1500);
        assert_eq!(temporary_name(&host, "dummy", "net1").unwrap(), third);
        assert_eq!(
            temporary_name(&MockHost::new(), "dummy", "net1").unwrap(),
            first
        );
    }

    #[test]
    fn gives_up_when_every_candidate_is_taken() {
        let mut host = MockHost::new();
        for attempt in 0..ATTEMPTS {
            host = host.with_link(Netns::Host, &candidate_name("dummy", "net1", attempt), 1500);
        }
        let error = temporary_name(&host, "dummy", "net1").unwrap_err();
        assert_eq!(error.code, 999);
        assert_eq!(
            error.msg,
            "no free temporary name for macvlan \"net1\" after 16 attempts"
        );
    }
}
