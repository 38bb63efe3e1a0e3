//! Serde helpers for the network configuration a plugin receives as JSON.
//!
//! Plugin-specific fields are free-form, so a plugin declares its own struct
//! and parses it with [`parse`]; the fields every CNI config shares are in
//! [`NetConf`] (flatten it into yours).

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{Dns, PluginError, code};

/// Parse the request's config into `T`; a decoding failure is CNI code 6.
pub fn parse<T: DeserializeOwned>(config: &str) -> Result<T, PluginError> {
    serde_json::from_str(config).map_err(|err| {
        PluginError::new(
            code::DECODING_FAILURE,
            format!("failed to load netconf: {err}"),
        )
    })
}

/// The fields every CNI network configuration shares.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default)]
    pub ipam: Option<IpamRef>,
    #[serde(default)]
    pub dns: Option<DnsConf>,
    /// `args`, free-form (`args.cni.ips`, ...).
    #[serde(default)]
    pub args: Option<serde_json::Value>,
    /// `runtimeConfig`, free-form (`ips`, `mac`, ...).
    #[serde(default)]
    pub runtime_config: Option<serde_json::Value>,
}

/// The `ipam` object as a delegate sees it: only its type matters.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpamRef {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
}

/// The `dns` object of a network configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct DnsConf {
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

impl From<DnsConf> for Dns {
    fn from(conf: DnsConf) -> Self {
        Dns {
            nameservers: conf.nameservers,
            domain: conf.domain.filter(|domain| !domain.is_empty()),
            search: conf.search,
            options: conf.options,
        }
    }
}

/// `CNI_ARGS` with the reference plugins' rules: every key must be one the
/// plugin knows or `IgnoreUnknown` must be `1`/`true`; a later value of the
/// same key wins.
pub fn cni_args(
    pairs: &[(String, String)],
    known: &[&str],
) -> Result<std::collections::BTreeMap<String, String>, PluginError> {
    let ignore_unknown = pairs.iter().any(|(key, value)| {
        key == "IgnoreUnknown" && matches!(value.to_ascii_lowercase().as_str(), "1" | "true")
    });
    let mut values = std::collections::BTreeMap::new();
    let mut unknown = Vec::new();
    for (key, value) in pairs {
        if key == "IgnoreUnknown" {
            continue;
        }
        if known.contains(&key.as_str()) {
            values.insert(key.clone(), value.clone());
        } else if !ignore_unknown {
            unknown.push(format!("{key}={value}"));
        }
    }
    if !unknown.is_empty() {
        return Err(PluginError::invalid_config(format!(
            "ARGS: unknown args {unknown:?}"
        )));
    }
    Ok(values)
}

/// A string array under `path` in a free-form JSON object (for example
/// `args.cni.ips` or `runtimeConfig.ips`); absent is empty.
pub fn string_list(
    value: Option<&serde_json::Value>,
    path: &[&str],
) -> Result<Vec<String>, PluginError> {
    let mut cursor = match value {
        Some(value) => value,
        None => return Ok(Vec::new()),
    };
    for key in path {
        match cursor.get(key) {
            Some(next) => cursor = next,
            None => return Ok(Vec::new()),
        }
    }
    match cursor {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| {
                    PluginError::new(
                        code::DECODING_FAILURE,
                        format!("{}: expected a list of strings, got {item}", path.join(".")),
                    )
                })
            })
            .collect(),
        other => Err(PluginError::new(
            code::DECODING_FAILURE,
            format!(
                "{}: expected a list of strings, got {other}",
                path.join(".")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn unknown_cni_args_fail_unless_ignored() {
        let err = cni_args(&pairs(&[("K8S_POD_NAME", "x")]), &["MAC"]).unwrap_err();
        assert_eq!(err.msg, "ARGS: unknown args [\"K8S_POD_NAME=x\"]");
        let ok = cni_args(
            &pairs(&[
                ("IgnoreUnknown", "true"),
                ("K8S_POD_NAME", "x"),
                ("MAC", "m"),
            ]),
            &["MAC"],
        )
        .unwrap();
        assert_eq!(ok.get("MAC").map(String::as_str), Some("m"));
        assert_eq!(ok.len(), 1);
    }

    #[test]
    fn string_list_reads_nested_arrays() {
        let value: serde_json::Value =
            serde_json::from_str(r#"{"cni":{"ips":["10.0.0.1","10.0.0.2"]}}"#).unwrap();
        assert_eq!(
            string_list(Some(&value), &["cni", "ips"]).unwrap(),
            vec!["10.0.0.1", "10.0.0.2"]
        );
        assert!(
            string_list(Some(&value), &["cni", "mac"])
                .unwrap()
                .is_empty()
        );
        let bad: serde_json::Value = serde_json::from_str(r#"{"ips":"10.0.0.1"}"#).unwrap();
        assert_eq!(string_list(Some(&bad), &["ips"]).unwrap_err().code, 6);
    }

    #[test]
    fn parse_reports_decoding_errors_with_code_6() {
        let err = parse::<NetConf>("{not json").unwrap_err();
        assert_eq!(err.code, 6);
        let conf =
            parse::<NetConf>(r#"{"name":"n","type":"macvlan","ipam":{"type":"host-local"}}"#)
                .unwrap();
        assert_eq!(conf.ipam.unwrap().plugin_type, "host-local");
    }
}
