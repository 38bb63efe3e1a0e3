//! CNI spec versions: the supported set, their order, what each allows, the
//! VERSION command's output and the choice of a configuration's version from
//! `cniVersion` and `cniVersions`.
//!
//! A missing or empty `cniVersion` means 0.1.0, as in the reference library.
//! A version is supported only when it is spelled exactly as one of
//! [`SUPPORTED_VERSIONS`] (the reference compares strings).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::error::CniError;

/// Every version this implementation speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// A supported CNI spec version; ordered oldest to newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// 0.1.0 (also what a missing `cniVersion` means).
    V0_1_0,
    /// 0.2.0.
    V0_2_0,
    /// 0.3.0.
    V0_3_0,
    /// 0.3.1.
    V0_3_1,
    /// 0.4.0: adds CHECK and prevResult on DEL.
    V0_4_0,
    /// 1.0.0.
    V1_0_0,
    /// 1.1.0: adds GC and STATUS.
    V1_1_0,
}

impl CniVersion {
    /// Every supported version, oldest first.
    pub const ALL: [CniVersion; 7] = [
        CniVersion::V0_1_0,
        CniVersion::V0_2_0,
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The newest supported version.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// The version a configuration without `cniVersion` has.
    pub const DEFAULT: CniVersion = CniVersion::V0_1_0;

    /// The version as the spec spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_1_0 => "0.1.0",
            CniVersion::V0_2_0 => "0.2.0",
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// The supported version spelled exactly `text`, if any (no default for "").
    pub fn from_exact(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|version| version.as_str() == text)
    }

    /// Parses a configuration's `cniVersion`: empty means 0.1.0; anything not
    /// supported is code 1 `incompatible CNI versions`.
    pub fn parse(text: &str) -> Result<Self, CniError> {
        if text.is_empty() {
            return Ok(Self::DEFAULT);
        }
        Self::from_exact(text).ok_or_else(|| incompatible(&format!("config is {text:?}")))
    }

    /// The version of a configuration or request object, from its
    /// `cniVersion` and `cniVersions` fields (see [`select_version`]).
    pub fn from_config(config: &Value) -> Result<Self, CniError> {
        select_version(config.get("cniVersion"), config.get("cniVersions"))
    }

    /// CHECK exists from 0.4.0 on.
    pub fn allows_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// GC and STATUS exist from 1.1.0 on.
    pub fn allows_gc_status(self) -> bool {
        self >= CniVersion::V1_1_0
    }

    /// From 0.4.0 on the runtime passes the cached ADD result as
    /// `prevResult` on DEL (and CHECK).
    pub fn passes_prev_result_on_del(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// 0.1.0 and 0.2.0 results use the `ip4`/`ip6` shape.
    pub fn has_legacy_result_shape(self) -> bool {
        self <= CniVersion::V0_2_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for CniVersion {
    type Err = CniError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl Serialize for CniVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CniVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The supported list as text for error details: `["0.1.0", "0.2.0", ...]`.
fn supported_list_text() -> String {
    let quoted: Vec<String> = SUPPORTED_VERSIONS
        .iter()
        .map(|version| format!("{version:?}"))
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// Code 1 `incompatible CNI versions` with `<offered>, plugin supports [...]` as details.
fn incompatible(offered: &str) -> CniError {
    CniError::incompatible_version("incompatible CNI versions").with_details(format!(
        "{offered}, plugin supports {}",
        supported_list_text()
    ))
}

/// Whether `text` is a syntactically valid version: up to three
/// dot-separated unsigned integers (the reference's `ParseVersion`).
fn is_version_syntax(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() <= 3
        && parts
            .iter()
            .all(|part| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit()))
}

/// Chooses a configuration's version from its `cniVersion` and
/// `cniVersions` fields (spec 1.1 §1.5): the highest supported version among
/// all that are offered; versions this implementation does not know are
/// skipped. Without `cniVersions`, `cniVersion` alone decides (missing or
/// empty means 0.1.0; unsupported is code 1). A `cniVersions` that is not a
/// list of version strings is code 7; when nothing offered is supported,
/// code 1.
pub fn select_version(
    cni_version: Option<&Value>,
    cni_versions: Option<&Value>,
) -> Result<CniVersion, CniError> {
    let declared = match cni_version {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.is_empty() => None,
        Some(Value::String(text)) => Some(text.as_str()),
        Some(other) => {
            return Err(CniError::invalid_network_config(format!(
                "invalid cniVersion {other}: must be a string"
            )));
        }
    };
    let offered_list = match cni_versions {
        None | Some(Value::Null) => {
            return declared.map_or(Ok(CniVersion::DEFAULT), CniVersion::parse);
        }
        Some(Value::Array(entries)) => entries,
        Some(other) => {
            return Err(CniError::invalid_network_config(format!(
                "invalid cniVersions {other}: must be a list of version strings"
            )));
        }
    };
    let mut offered: Vec<&str> = Vec::with_capacity(offered_list.len() + 1);
    for (index, entry) in offered_list.iter().enumerate() {
        let Some(text) = entry.as_str().filter(|text| is_version_syntax(text)) else {
            return Err(CniError::invalid_network_config(format!(
                "invalid cniVersions entry {entry} at index {index}: must be a version string like \"1.0.0\""
            )));
        };
        offered.push(text);
    }
    if let Some(text) = declared {
        if !is_version_syntax(text) {
            return Err(CniError::invalid_network_config(format!(
                "invalid cniVersion {text:?}: must be a version string like \"1.0.0\""
            )));
        }
        offered.push(text);
    }
    if offered.is_empty() {
        return Ok(CniVersion::DEFAULT);
    }
    offered
        .iter()
        .filter_map(|text| CniVersion::from_exact(text))
        .max()
        .ok_or_else(|| incompatible(&format!("config offers {offered:?}")))
}

/// The version a VERSION request asks about: the `cniVersion` of the stdin
/// object, if stdin is such an object with a non-empty one. Anything else
/// (empty stdin, not JSON) yields `None`; VERSION never fails on its input.
pub fn requested_version(stdin: &[u8]) -> Option<String> {
    let request: Value = serde_json::from_slice(stdin).ok()?;
    request
        .get("cniVersion")
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

/// The VERSION command's output:
/// `{"cniVersion":"<requested or 1.1.0>","supportedVersions":[...]}`.
pub fn version_output(requested: Option<&str>) -> String {
    #[derive(Serialize)]
    struct VersionWire<'a> {
        #[serde(rename = "cniVersion")]
        cni_version: &'a str,
        #[serde(rename = "supportedVersions")]
        supported_versions: &'a [&'a str],
    }
    let cni_version = requested
        .filter(|text| !text.is_empty())
        .unwrap_or(CniVersion::LATEST.as_str());
    let wire = VersionWire {
        cni_version,
        supported_versions: &SUPPORTED_VERSIONS,
    };
    // A struct of strings always serializes; keep a literal fallback anyway.
    serde_json::to_string(&wire).unwrap_or_else(|_| String::from(r#"{"cniVersion":"1.1.0"}"#))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_supported_version_parses_to_itself_and_order_follows_the_list() {
        for (index, text) in SUPPORTED_VERSIONS.iter().enumerate() {
            let version = CniVersion::parse(text).unwrap();
            assert_eq!(version.as_str(), *text);
            assert_eq!(version.to_string(), *text);
            assert_eq!(CniVersion::ALL[index], version);
        }
        for pair in CniVersion::ALL.windows(2) {
            assert!(pair[0] < pair[1], "{} < {}", pair[0], pair[1]);
        }
        assert_eq!(CniVersion::LATEST, CniVersion::V1_1_0);
    }

    #[test]
    fn empty_version_means_0_1_0() {
        assert_eq!(CniVersion::parse("").unwrap(), CniVersion::V0_1_0);
        assert_eq!(
            CniVersion::from_config(&json!({"name": "n"})).unwrap(),
            CniVersion::V0_1_0
        );
        assert_eq!(
            CniVersion::from_config(&json!({"cniVersion": ""})).unwrap(),
            CniVersion::V0_1_0
        );
        assert_eq!(
            CniVersion::from_config(&json!({"cniVersion": null})).unwrap(),
            CniVersion::V0_1_0
        );
    }

    #[test]
    fn unsupported_version_is_code_1_naming_the_version_and_the_list() {
        for text in ["1.2.0", "0.5.0", "1.0", "v1.0.0", "1.0.0 "] {
            let error = CniVersion::parse(text).unwrap_err();
            assert_eq!(error.code, CniError::INCOMPATIBLE_VERSION, "{text}");
            assert_eq!(error.msg, "incompatible CNI versions");
            assert!(
                error.details.contains(&format!("{text:?}")),
                "{}",
                error.details
            );
            assert!(
                error
                    .details
                    .contains(r#""0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0""#)
            );
        }
    }

    #[test]
    fn command_support_follows_the_version() {
        let check: Vec<bool> = CniVersion::ALL
            .iter()
            .map(|version| version.allows_check())
            .collect();
        assert_eq!(check, [false, false, false, false, true, true, true]);
        let gc_status: Vec<bool> = CniVersion::ALL
            .iter()
            .map(|version| version.allows_gc_status())
            .collect();
        assert_eq!(gc_status, [false, false, false, false, false, false, true]);
        let prev_on_del: Vec<bool> = CniVersion::ALL
            .iter()
            .map(|version| version.passes_prev_result_on_del())
            .collect();
        assert_eq!(prev_on_del, [false, false, false, false, true, true, true]);
        let legacy: Vec<bool> = CniVersion::ALL
            .iter()
            .map(|version| version.has_legacy_result_shape())
            .collect();
        assert_eq!(legacy, [true, true, false, false, false, false, false]);
    }

    #[test]
    fn serde_uses_the_spelled_version() {
        assert_eq!(
            serde_json::to_value(CniVersion::V0_3_1).unwrap(),
            json!("0.3.1")
        );
        let parsed: CniVersion = serde_json::from_value(json!("1.0.0")).unwrap();
        assert_eq!(parsed, CniVersion::V1_0_0);
        assert!(serde_json::from_value::<CniVersion>(json!("7.0.0")).is_err());
    }

    #[test]
    fn selection_without_cni_versions_uses_cni_version() {
        assert_eq!(
            select_version(Some(&json!("0.4.0")), None).unwrap(),
            CniVersion::V0_4_0
        );
        assert_eq!(select_version(None, None).unwrap(), CniVersion::V0_1_0);
        assert_eq!(
            select_version(Some(&json!("9.9.9")), None)
                .unwrap_err()
                .code,
            1
        );
        assert_eq!(select_version(Some(&json!(1)), None).unwrap_err().code, 7);
    }

    #[test]
    fn selection_picks_the_highest_supported_offer() {
        let pick = |declared: Value, list: Value| {
            let declared = if declared.is_null() {
                None
            } else {
                Some(declared)
            };
            select_version(declared.as_ref(), Some(&list))
        };
        assert_eq!(
            pick(json!("0.4.0"), json!(["1.0.0", "0.3.1"])).unwrap(),
            CniVersion::V1_0_0
        );
        assert_eq!(
            pick(json!("1.1.0"), json!(["1.0.0"])).unwrap(),
            CniVersion::V1_1_0
        );
        // versions newer than this implementation are skipped
        assert_eq!(
            pick(json!("1.0.0"), json!(["1.1.0", "2.0.0", "1.5"])).unwrap(),
            CniVersion::V1_1_0
        );
        assert_eq!(
            pick(Value::Null, json!(["0.3.0", "3.0.0"])).unwrap(),
            CniVersion::V0_3_0
        );
        // unknown versions that sort below the newest are skipped too
        assert_eq!(
            pick(json!("0.5.0"), json!(["0.4.0"])).unwrap(),
            CniVersion::V0_4_0
        );
        // nothing offered at all
        assert_eq!(pick(Value::Null, json!([])).unwrap(), CniVersion::V0_1_0);
    }

    #[test]
    fn selection_rejects_malformed_lists_and_unsupported_offers() {
        let wrong_type = select_version(None, Some(&json!("1.0.0"))).unwrap_err();
        assert_eq!(wrong_type.code, 7);
        assert!(wrong_type.msg.contains("cniVersions"), "{}", wrong_type.msg);

        let not_a_string = select_version(None, Some(&json!(["1.0.0", 4]))).unwrap_err();
        assert_eq!(not_a_string.code, 7);
        assert!(not_a_string.msg.contains("index 1"), "{}", not_a_string.msg);

        let not_a_version = select_version(None, Some(&json!(["one"]))).unwrap_err();
        assert_eq!(not_a_version.code, 7);
        assert!(
            not_a_version.msg.contains("\"one\""),
            "{}",
            not_a_version.msg
        );

        let bad_declared =
            select_version(Some(&json!("x.y")), Some(&json!(["1.0.0"]))).unwrap_err();
        assert_eq!(bad_declared.code, 7);

        let none_supported =
            select_version(Some(&json!("2.0.0")), Some(&json!(["3.0.0"]))).unwrap_err();
        assert_eq!(none_supported.code, 1);
        assert!(
            none_supported.details.contains("3.0.0"),
            "{}",
            none_supported.details
        );
    }

    #[test]
    fn version_output_echoes_the_request_or_the_latest() {
        let default: Value = serde_json::from_str(&version_output(None)).unwrap();
        assert_eq!(
            default,
            json!({"cniVersion": "1.1.0", "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
        assert!(version_output(None).starts_with(r#"{"cniVersion":"1.1.0","supportedVersions":["#));
        let echoed: Value = serde_json::from_str(&version_output(Some("0.4.0"))).unwrap();
        assert_eq!(echoed["cniVersion"], "0.4.0");
        let empty: Value = serde_json::from_str(&version_output(Some(""))).unwrap();
        assert_eq!(empty["cniVersion"], "1.1.0");
    }

    #[test]
    fn requested_version_reads_stdin_leniently() {
        assert_eq!(
            requested_version(br#"{"cniVersion":"1.0.0"}"#).as_deref(),
            Some("1.0.0")
        );
        assert_eq!(requested_version(br#"{"cniVersion":""}"#), None);
        assert_eq!(requested_version(b""), None);
        assert_eq!(requested_version(b"garbage"), None);
        assert_eq!(requested_version(br#"{"cniVersion":3}"#), None);
    }
}
