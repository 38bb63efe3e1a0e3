//! Small things most plugins need: a MAC address from config, this
//! attachment's interface in `prevResult`, and typos in a config caught
//! before they silently do nothing.

use crate::{CniResult, InterfaceInfo, PluginError};

/// A MAC address as written in a config or `runtimeConfig.mac`
/// (`c2:11:22:33:44:55`, `C2-11-22-33-44-55`), in the lowercase colon form
/// the host's ops take. The multicast bit must be clear (a unicast address,
/// as the kernel requires of a link), and the address must not be zero.
pub fn parse_mac(text: &str) -> Result<String, PluginError> {
    let bad =
        |why: &str| PluginError::invalid_config(format!("invalid MAC address {text:?}: {why}"));
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad("expected six hex bytes"));
    }
    let mut bytes = [0u8; 6];
    for (byte, part) in bytes.iter_mut().zip(&parts) {
        if part.len() != 2 {
            return Err(bad("expected six hex bytes"));
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad("expected six hex bytes"))?;
    }
    if bytes[0] & 1 == 1 {
        return Err(bad("a multicast address cannot be a link's"));
    }
    if bytes == [0; 6] {
        return Err(bad("all zero"));
    }
    Ok(bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// This attachment's interface in `prevResult` (a chained plugin's
/// `request.prev_result`): the one named `ifname` inside the sandbox
/// `netns` (an interface with no sandbox is the host's, not ours), with
/// its index, which `ip-config.interface-index` refers to.
pub fn sandbox_interface<'a>(
    prev: &'a CniResult,
    ifname: &str,
    netns: &str,
) -> Option<(u32, &'a InterfaceInfo)> {
    prev.interfaces
        .iter()
        .enumerate()
        .find(|(_, interface)| {
            interface.name == ifname
                && interface
                    .sandbox
                    .as_deref()
                    .is_some_and(|sandbox| netns.is_empty() || sandbox == netns)
        })
        .map(|(index, interface)| (index as u32, interface))
}

/// The fields every CNI config may carry, whatever the plugin.
pub const COMMON_FIELDS: &[&str] = &[
    "cniVersion",
    "cniVersions",
    "name",
    "type",
    "ipam",
    "dns",
    "args",
    "runtimeConfig",
    "capabilities",
    "prevResult",
];

/// Top-level keys of `config` that neither the CNI spec ([`COMMON_FIELDS`])
/// nor the plugin (`known`) defines: a typo (`"mtu "`, `"maser"`) that
/// serde would otherwise skip silently. Each comes with the known field it
/// most likely meant, if one is close. Log them, or refuse the config.
pub fn unknown_fields(config: &str, known: &[&str]) -> Vec<(String, Option<String>)> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(config)
    else {
        return Vec::new();
    };
    let all: Vec<&str> = COMMON_FIELDS.iter().chain(known).copied().collect();
    fields
        .keys()
        .filter(|key| !all.contains(&key.as_str()))
        .map(|key| {
            let closest = all
                .iter()
                .map(|candidate| {
                    (
                        distance(&key.to_lowercase(), &candidate.to_lowercase()),
                        candidate,
                    )
                })
                .filter(|(distance, _)| *distance <= 2)
                .min_by_key(|(distance, _)| *distance)
                .map(|(_, candidate)| candidate.to_string());
            (key.clone(), closest)
        })
        .collect()
}

/// [`unknown_fields`] as a CNI error (code 7) naming each unknown key and
/// what it probably meant; `Ok` when there is none.
pub fn refuse_unknown_fields(config: &str, known: &[&str]) -> Result<(), PluginError> {
    let unknown = unknown_fields(config, known);
    if unknown.is_empty() {
        return Ok(());
    }
    let described: Vec<String> = unknown
        .iter()
        .map(|(key, closest)| match closest {
            Some(closest) => format!("{key:?} (did you mean {closest:?}?)"),
            None => format!("{key:?}"),
        })
        .collect();
    Err(PluginError::invalid_config(format!(
        "unknown config field{}: {}",
        if described.len() == 1 { "" } else { "s" },
        described.join(", ")
    )))
}

/// Edit distance (insertions, deletions, substitutions).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_normalised_and_checked() {
        assert_eq!(parse_mac("C2-11-22-33-44-5A").unwrap(), "c2:11:22:33:44:5a");
        assert_eq!(parse_mac("c2:11:22:33:44:55").unwrap(), "c2:11:22:33:44:55");
        for bad in [
            "c2:11:22:33:44",
            "c2:11:22:33:44:55:66",
            "c2:11:22:33:44:5",
            "zz:11:22:33:44:55",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "",
        ] {
            let err = parse_mac(bad).unwrap_err();
            assert_eq!(err.code, crate::code::INVALID_NETWORK_CONFIG, "{bad}");
            assert!(err.msg.contains("invalid MAC"), "{bad}: {}", err.msg);
        }
    }

    fn interface(name: &str, sandbox: Option<&str>) -> InterfaceInfo {
        InterfaceInfo {
            name: name.into(),
            mac: None,
            mtu: None,
            sandbox: sandbox.map(str::to_owned),
        }
    }

    #[test]
    fn this_attachments_interface_is_the_sandbox_one_with_its_name() {
        let prev = CniResult {
            interfaces: vec![
                interface("net1", None),
                interface("net1", Some("/var/run/netns/other")),
                interface("net1", Some("/var/run/netns/pod")),
            ],
            ips: Vec::new(),
            routes: Vec::new(),
            dns: None,
        };
        let (index, found) = sandbox_interface(&prev, "net1", "/var/run/netns/pod").unwrap();
        assert_eq!(index, 2);
        assert_eq!(found.sandbox.as_deref(), Some("/var/run/netns/pod"));
        assert!(sandbox_interface(&prev, "net2", "/var/run/netns/pod").is_none());
        // Without a netns (DEL may have none), the first sandbox interface.
        assert_eq!(sandbox_interface(&prev, "net1", "").unwrap().0, 1);
    }

    #[test]
    fn a_misspelt_field_is_named_with_what_it_meant() {
        let config = r#"{"cniVersion": "1.0.0", "name": "n", "type": "tuning",
                         "mut": 9000, "maser": "ens3", "sysctl": {}, "zzzzzz": 1}"#;
        let unknown = unknown_fields(config, &["mtu", "master", "sysctl", "mac"]);
        assert_eq!(
            unknown,
            vec![
                ("maser".to_string(), Some("master".to_string())),
                ("mut".to_string(), Some("mtu".to_string())),
                ("zzzzzz".to_string(), None),
            ]
        );
        let err = refuse_unknown_fields(config, &["mtu", "master", "sysctl", "mac"]).unwrap_err();
        assert_eq!(err.code, crate::code::INVALID_NETWORK_CONFIG);
        assert!(
            err.msg.contains(r#""mut" (did you mean "mtu"?)"#),
            "{}",
            err.msg
        );
        assert!(refuse_unknown_fields(r#"{"name": "n", "mtu": 1}"#, &["mtu"]).is_ok());
    }
}
