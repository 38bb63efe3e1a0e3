//! The CNI error object: a numeric code, a message and optional details,
//! printed on stdout as JSON when a command fails.
//!
//! Codes 0-99 are reserved by the spec; 999 is the code the reference Go
//! plugins use for errors that carry no code of their own.

use serde::{Deserialize, Serialize};

/// A CNI protocol error (`{"code", "msg", "details"}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.display_text())]
pub struct CniError {
    /// The CNI error code (see the associated constants).
    pub code: u32,
    /// A short description of the error.
    pub msg: String,
    /// Longer details; empty when there are none.
    pub details: String,
}

/// The wire shape of an error, in the field order the spec shows.
#[derive(Serialize)]
struct ErrorWire<'a> {
    #[serde(rename = "cniVersion", skip_serializing_if = "Option::is_none")]
    cni_version: Option<&'a str>,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a str>,
}

/// The owned variant of [`ErrorWire`] used when reading another plugin's output.
#[derive(Deserialize)]
struct ErrorWireOwned {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

impl CniError {
    /// 1: the plugin does not support the requested CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// 2: a network configuration field is not supported (msg names key and value).
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// 3: the container is unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// 4: a required environment variable is missing or invalid.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// 5: an I/O failure, such as reading stdin.
    pub const IO_FAILURE: u32 = 5;
    /// 6: content (configuration, result, version request) failed to decode.
    pub const DECODING_FAILURE: u32 = 6;
    /// 7: the network configuration is invalid.
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// 11: a transient failure; the runtime should try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// 50: STATUS: the plugin cannot service ADD requests.
    pub const NOT_AVAILABLE: u32 = 50;
    /// 51: STATUS: not available, and existing containers may have limited connectivity.
    pub const NOT_AVAILABLE_LIMITED_CONNECTIVITY: u32 = 51;
    /// 999: an internal error that carries no more specific code.
    pub const INTERNAL: u32 = 999;

    /// An error with a code and a message and no details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// This error with `details` set.
    #[must_use]
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Code 1: incompatible CNI version.
    pub fn incompatible_version(msg: impl Into<String>) -> Self {
        Self::new(Self::INCOMPATIBLE_VERSION, msg)
    }

    /// Code 2: unsupported field in the network configuration.
    pub fn unsupported_field(msg: impl Into<String>) -> Self {
        Self::new(Self::UNSUPPORTED_FIELD, msg)
    }

    /// Code 3: unknown container.
    pub fn unknown_container(msg: impl Into<String>) -> Self {
        Self::new(Self::UNKNOWN_CONTAINER, msg)
    }

    /// Code 4: invalid or missing environment variables.
    pub fn invalid_environment(msg: impl Into<String>) -> Self {
        Self::new(Self::INVALID_ENVIRONMENT, msg)
    }

    /// Code 5: I/O failure.
    pub fn io_failure(msg: impl Into<String>) -> Self {
        Self::new(Self::IO_FAILURE, msg)
    }

    /// Code 6: failed to decode content.
    pub fn decoding_failure(msg: impl Into<String>) -> Self {
        Self::new(Self::DECODING_FAILURE, msg)
    }

    /// Code 7: invalid network configuration.
    pub fn invalid_network_config(msg: impl Into<String>) -> Self {
        Self::new(Self::INVALID_NETWORK_CONFIG, msg)
    }

    /// Code 11: try again later.
    pub fn try_again_later(msg: impl Into<String>) -> Self {
        Self::new(Self::TRY_AGAIN_LATER, msg)
    }

    /// Code 50: the plugin is not available.
    pub fn not_available(msg: impl Into<String>) -> Self {
        Self::new(Self::NOT_AVAILABLE, msg)
    }

    /// Code 51: not available, existing containers may have limited connectivity.
    pub fn not_available_limited_connectivity(msg: impl Into<String>) -> Self {
        Self::new(Self::NOT_AVAILABLE_LIMITED_CONNECTIVITY, msg)
    }

    /// Code 999: internal error.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(Self::INTERNAL, msg)
    }

    /// The error as compact JSON: `{"cniVersion":..,"code":..,"msg":..,"details":..}`,
    /// with `cniVersion` only when given and `details` only when non-empty.
    pub fn to_json(&self, cni_version: Option<&str>) -> String {
        let wire = ErrorWire {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: Some(self.details.as_str()).filter(|details| !details.is_empty()),
        };
        // Serializing a struct of strings and an integer cannot fail; fall
        // back to a hand-built object rather than panic all the same.
        serde_json::to_string(&wire)
            .unwrap_or_else(|_| format!(r#"{{"code":{},"msg":"internal error"}}"#, self.code))
    }

    /// Reads an error another plugin printed on stdout. `None` when `output`
    /// is not an error object (no numeric `code`).
    pub fn from_json(output: &[u8]) -> Option<Self> {
        let wire: ErrorWireOwned = serde_json::from_slice(output).ok()?;
        Some(Self {
            code: foreign_code(wire.code),
            msg: wire.msg,
            details: wire.details,
        })
    }

    fn display_text(&self) -> String {
        if self.details.is_empty() {
            self.msg.clone()
        } else {
            format!("{}; {}", self.msg, self.details)
        }
    }
}

/// The codes that always mean this host's sandbox or policy refused
/// something (100 plugin refused .. 107 plan refused by the policy).
pub const HOST_RESERVED: std::ops::RangeInclusive<u32> = 100..=107;
/// What a plugin's code in [`HOST_RESERVED`] (or 0, not an error code)
/// becomes when the host passes it on.
pub const REMAPPED: u32 = 999;

/// A code a plugin reported, as this host passes it on: 0 and the codes in
/// [`HOST_RESERVED`] become [`REMAPPED`].
pub fn foreign_code(code: u32) -> u32 {
    if code == 0 || HOST_RESERVED.contains(&code) {
        REMAPPED
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn plugins_cannot_claim_the_sandbox_codes() {
        for (reported, passed_on) in [(0, 999), (7, 7), (100, 999), (107, 999), (108, 108)] {
            let error =
                CniError::from_json(format!(r#"{{"code": {reported}, "msg": "m"}}"#).as_bytes())
                    .unwrap();
            assert_eq!(error.code, passed_on, "{reported}");
        }
    }

    #[test]
    fn json_has_cni_version_only_when_given_and_details_only_when_non_empty() {
        let error = CniError::invalid_network_config("network too small");
        let without_version: Value = serde_json::from_str(&error.to_json(None)).unwrap();
        assert_eq!(
            without_version,
            json!({"code": 7, "msg": "network too small"})
        );

        let with_everything = error.clone().with_details("192.168.0.0/31");
        let text = with_everything.to_json(Some("1.1.0"));
        assert!(
            text.starts_with(r#"{"cniVersion":"1.1.0","code":7,"#),
            "{text}"
        );
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            parsed,
            json!({"cniVersion": "1.1.0", "code": 7, "msg": "network too small", "details": "192.168.0.0/31"})
        );
    }

    #[test]
    fn json_escapes_message_text() {
        let error = CniError::internal("bad \"value\"\n");
        let parsed: Value = serde_json::from_str(&error.to_json(None)).unwrap();
        assert_eq!(parsed["msg"], "bad \"value\"\n");
    }

    #[test]
    fn constructors_carry_the_spec_codes() {
        let cases = [
            (CniError::incompatible_version("x"), 1),
            (CniError::unsupported_field("x"), 2),
            (CniError::unknown_container("x"), 3),
            (CniError::invalid_environment("x"), 4),
            (CniError::io_failure("x"), 5),
            (CniError::decoding_failure("x"), 6),
            (CniError::invalid_network_config("x"), 7),
            (CniError::try_again_later("x"), 11),
            (CniError::not_available("x"), 50),
            (CniError::not_available_limited_connectivity("x"), 51),
            (CniError::internal("x"), 999),
        ];
        for (error, code) in cases {
            assert_eq!(error.code, code, "{error:?}");
        }
    }

    #[test]
    fn display_appends_details_like_the_go_library() {
        assert_eq!(CniError::internal("boom").to_string(), "boom");
        assert_eq!(
            CniError::internal("boom").with_details("why").to_string(),
            "boom; why"
        );
    }

    #[test]
    fn reads_a_plugin_error_from_stdout() {
        let output = br#"{
    "code": 999,
    "msg": "failed to allocate for range 0",
    "details": "no addresses"
}"#;
        let error = CniError::from_json(output).unwrap();
        assert_eq!(error.code, 999);
        assert_eq!(error.msg, "failed to allocate for range 0");
        assert_eq!(error.details, "no addresses");
        assert!(CniError::from_json(br#"{"cniVersion":"1.0.0","ips":[]}"#).is_none());
        assert!(CniError::from_json(b"not json").is_none());
    }
}
