//! Network configurations with libcni semantics: a `.conflist` (or a single
//! plugin config taken as a one-plugin list), the per-plugin config the
//! runtime derives from it (injected `name`, `cniVersion`, `prevResult`,
//! `runtimeConfig`, GC attachments), and the GC attachment list.
//!
//! Everything works on `serde_json::Value`, so fields this module does not
//! know pass through unchanged.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::env::is_cni_identifier;
use super::error::CniError;
use super::result::CniResult;
use super::version::{CniVersion, select_version};

/// The GC attachment keys: the spec's name and the one the 1.1.0 spec text
/// used by mistake (libcni injects both, and plugins may read either).
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
/// The misspelled key from the 1.1.0 spec text, read as a fallback.
pub const LEGACY_ATTACHMENTS_KEY: &str = "cni.dev/attachments";

/// A network: its name, chosen version, flags and plugins in order.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    /// The network name (`name`).
    pub name: String,
    /// The version chosen from `cniVersion` and `cniVersions`.
    pub cni_version: CniVersion,
    /// `disableCheck`: CHECK succeeds without calling the plugins.
    pub disable_check: bool,
    /// `disableGC`: GC does nothing.
    pub disable_gc: bool,
    /// Each plugin's config exactly as given (a JSON object with `type`).
    pub plugins: Vec<Value>,
    /// Whether the input was a single plugin config rather than a list.
    pub from_single_config: bool,
}

/// A `(container id, interface name)` pair that GC must keep.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GcAttachment {
    /// The container id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name in the container.
    pub ifname: String,
}

/// What the runtime adds to one plugin's config (see [`plugin_config`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct PluginInjection<'a> {
    /// The previous result (ADD: the previous plugin's; DEL/CHECK: the
    /// cached one), written in the list's version as `prevResult`.
    pub prev_result: Option<&'a CniResult>,
    /// The runtime's capability arguments (capability name -> value); only
    /// the ones the plugin declares `true` in `capabilities` are passed.
    pub capability_args: Option<&'a Map<String, Value>>,
    /// For GC: the attachments to keep, written under both GC keys.
    pub valid_attachments: Option<&'a [GcAttachment]>,
}

/// Decodes a config from stdin: JSON that must be an object (code 6 otherwise).
pub fn decode_config(stdin: &[u8]) -> Result<Value, CniError> {
    let value: Value = serde_json::from_slice(stdin).map_err(|error| {
        CniError::decoding_failure(format!("error decoding network config: {error}"))
    })?;
    if !value.is_object() {
        return Err(CniError::decoding_failure(format!(
            "error decoding network config: expected a JSON object, got {}",
            json_kind(&value)
        )));
    }
    Ok(value)
}

/// Checks a network name: non-empty and matching
/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` (the rule the reference plugins apply);
/// code 7 otherwise. The name keys cache and IPAM paths, so nothing else may
/// pass.
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::invalid_network_config("missing network name"));
    }
    if !is_cni_identifier(name) {
        return Err(CniError::invalid_network_config(format!(
            "invalid network name {name:?}: must start with a letter or digit and contain only letters, digits, '_', '.' and '-'"
        )));
    }
    Ok(())
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Reads `disableCheck`/`disableGC`: a bool or the strings "true"/"false"
/// (any case); absent or null is false.
fn read_flag(object: &Map<String, Value>, key: &str) -> Result<bool, CniError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(text)) if text.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(CniError::invalid_network_config(format!(
            "invalid {key} value {other}: must be true or false"
        ))),
    }
}

/// The plugin's `type` if it is a non-empty string; an error if it is set to
/// something other than a string; `None` if absent or empty.
fn plugin_type(object: &Map<String, Value>) -> Result<Option<&str>, CniError> {
    match object.get("type") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => {
            if text.contains('/') {
                return Err(CniError::invalid_network_config(format!(
                    "invalid plugin type {text:?}: must not contain '/'"
                )));
            }
            Ok(Some(text))
        }
        Some(other) => Err(CniError::invalid_network_config(format!(
            "invalid plugin type {other}: must be a string"
        ))),
    }
}

impl NetworkConfigList {
    /// Reads a network from a config value: a list (has `plugins`) or a
    /// single plugin config (has `type`), which becomes a one-plugin list.
    /// The name must be valid ([`validate_network_name`]); the version is
    /// chosen by [`select_version`]; `disableCheck`/`disableGC` are read for
    /// lists. Code 6 for a non-object, code 7 for other invalid configs,
    /// code 1 for an unsupported version.
    pub fn from_value(value: Value) -> Result<Self, CniError> {
        let Value::Object(mut object) = value else {
            return Err(CniError::decoding_failure(format!(
                "error decoding network config: expected a JSON object, got {}",
                json_kind(&value)
            )));
        };
        let name_for_details = object
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let is_single = plugin_type(&object)?.is_some();
        if !is_single && !object.contains_key("plugins") {
            return Err(CniError::invalid_network_config(
                "delegate must have the 'type' or 'plugins' field",
            )
            .with_details(format!("network {name_for_details:?}")));
        }
        let name = match object.get("name") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(other) => {
                return Err(CniError::invalid_network_config(format!(
                    "invalid network name {other}: must be a string"
                )));
            }
        };
        validate_network_name(&name)?;
        let cni_version = select_version(object.get("cniVersion"), object.get("cniVersions"))?;

        if is_single {
            return Ok(Self {
                name,
                cni_version,
                disable_check: false,
                disable_gc: false,
                plugins: vec![Value::Object(object)],
                from_single_config: true,
            });
        }

        let disable_check = read_flag(&object, "disableCheck")?;
        let disable_gc = read_flag(&object, "disableGC")?;
        let Some(Value::Array(plugins)) = object.remove("plugins") else {
            return Err(CniError::invalid_network_config(format!(
                "invalid 'plugins' field in network {name:?}: must be a list"
            )));
        };
        if plugins.is_empty() {
            return Err(CniError::invalid_network_config(format!(
                "network {name:?} has no plugins"
            )));
        }
        for (index, plugin) in plugins.iter().enumerate() {
            let has_type = match plugin.as_object() {
                Some(plugin_object) => plugin_type(plugin_object)?.is_some(),
                None => false,
            };
            if !has_type {
                return Err(CniError::invalid_network_config(
                    "a plugin delegate must have the 'type' field",
                )
                .with_details(format!("plugin {index} of network {name:?}")));
            }
        }
        Ok(Self {
            name,
            cni_version,
            disable_check,
            disable_gc,
            plugins,
            from_single_config: false,
        })
    }

    /// [`decode_config`] then [`NetworkConfigList::from_value`].
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CniError> {
        Self::from_value(decode_config(bytes)?)
    }

    /// The `type` of plugin `index`.
    pub fn plugin_type(&self, index: usize) -> Option<&str> {
        self.plugins.get(index)?.get("type")?.as_str()
    }

    /// Whether any plugin declares `capability` as `true`.
    pub fn supports_capability(&self, capability: &str) -> bool {
        self.plugins
            .iter()
            .any(|plugin| declared_capabilities(plugin).contains(&capability))
    }
}

/// The capabilities a plugin config declares `true` in its `capabilities`
/// map (other values, including non-booleans, declare nothing).
pub fn declared_capabilities(plugin: &Value) -> Vec<&str> {
    plugin
        .get("capabilities")
        .and_then(Value::as_object)
        .map(|capabilities| {
            capabilities
                .iter()
                .filter(|(_, declared)| declared.as_bool() == Some(true))
                .map(|(capability, _)| capability.as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// The config plugin `index` of `list` receives on stdin: its own config
/// with the list's `name` and `cniVersion` set; `prevResult` (written in the
/// list's version) when given; `runtimeConfig` holding the capability
/// arguments the plugin declares `true`, replacing any `runtimeConfig` it
/// had, and left alone when none apply (as libcni does); and for GC the
/// attachments under both GC keys. Every other field is kept.
///
/// Errors: an index past the end (code 999); a prevResult that cannot be
/// written in the list's version (see [`CniResult::to_json`]).
pub fn plugin_config(
    list: &NetworkConfigList,
    index: usize,
    inject: &PluginInjection<'_>,
) -> Result<Value, CniError> {
    let Some(plugin_value @ Value::Object(original)) = list.plugins.get(index) else {
        return Err(CniError::internal(format!(
            "plugin index {index} out of range for network {:?} with {} plugins",
            list.name,
            list.plugins.len()
        )));
    };
    let mut config = original.clone();
    config.insert("name".to_owned(), Value::String(list.name.clone()));
    config.insert(
        "cniVersion".to_owned(),
        Value::String(list.cni_version.as_str().to_owned()),
    );
    if let Some(prev_result) = inject.prev_result {
        config.insert(
            "prevResult".to_owned(),
            prev_result.to_json(list.cni_version)?,
        );
    }
    if let Some(capability_args) = inject.capability_args {
        let runtime_config: Map<String, Value> = declared_capabilities(plugin_value)
            .into_iter()
            .filter_map(|capability| {
                capability_args
                    .get(capability)
                    .map(|argument| (capability.to_owned(), argument.clone()))
            })
            .collect();
        if !runtime_config.is_empty() {
            config.insert("runtimeConfig".to_owned(), Value::Object(runtime_config));
        }
    }
    if let Some(attachments) = inject.valid_attachments {
        let attachments_value = serde_json::to_value(attachments).map_err(|error| {
            CniError::internal(format!("failed to encode GC attachments: {error}"))
        })?;
        config.insert(VALID_ATTACHMENTS_KEY.to_owned(), attachments_value.clone());
        config.insert(LEGACY_ATTACHMENTS_KEY.to_owned(), attachments_value);
    }
    Ok(Value::Object(config))
}

/// The attachments a GC config says to keep, from
/// `cni.dev/valid-attachments` or else `cni.dev/attachments`. `None` when
/// neither key is present (or both are null): the caller decides what a GC
/// without a list means; an empty list means "keep nothing". Code 7 when the
/// value is not a list of `{"containerID", "ifname"}` objects.
pub fn valid_attachments(config: &Value) -> Result<Option<Vec<GcAttachment>>, CniError> {
    let present = |key: &'static str| {
        config
            .get(key)
            .filter(|value| !value.is_null())
            .map(|value| (key, value))
    };
    let Some((key, value)) =
        present(VALID_ATTACHMENTS_KEY).or_else(|| present(LEGACY_ATTACHMENTS_KEY))
    else {
        return Ok(None);
    };
    Vec::<GcAttachment>::deserialize(value).map(Some).map_err(|error| {
        CniError::invalid_network_config(format!(
            "invalid {key:?}: {error}: expected a list of {{\"containerID\", \"ifname\"}} objects"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conflist() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "macvlan-net",
            "disableCheck": "TRUE",
            "plugins": [
                {"type": "macvlan", "master": "ens3", "capabilities": {"mac": true, "ips": true, "bandwidth": false},
                 "ipam": {"type": "host-local", "subnet": "10.1.2.0/24"}, "kubernetes": {"kubeconfig": "/x"}},
                {"type": "tuning", "name": "ignored", "cniVersion": "0.3.1", "runtimeConfig": {"mac": "keep"},
                 "sysctl": {"net.core.somaxconn": "500"}}
            ]
        })
    }

    #[test]
    fn reads_a_conflist() {
        let list = NetworkConfigList::from_value(conflist()).unwrap();
        assert_eq!(list.name, "macvlan-net");
        assert_eq!(list.cni_version, CniVersion::V1_0_0);
        assert!(list.disable_check);
        assert!(!list.disable_gc);
        assert!(!list.from_single_config);
        assert_eq!(list.plugins.len(), 2);
        assert_eq!(list.plugins[0], conflist()["plugins"][0]);
        assert_eq!(list.plugin_type(1), Some("tuning"));
        assert_eq!(list.plugin_type(2), None);
        assert!(list.supports_capability("ips"));
        assert!(!list.supports_capability("bandwidth"));
    }

    #[test]
    fn reads_a_single_config_as_a_one_plugin_list() {
        let single = json!({"cniVersion": "0.4.0", "name": "net", "type": "macvlan", "disableCheck": true, "extra": [1, 2]});
        let list = NetworkConfigList::from_value(single.clone()).unwrap();
        assert_eq!(list.name, "net");
        assert_eq!(list.cni_version, CniVersion::V0_4_0);
        assert!(list.from_single_config);
        assert!(!list.disable_check, "disableCheck is a list field");
        assert_eq!(list.plugins, vec![single]);
    }

    #[test]
    fn type_wins_over_plugins_and_empty_type_means_a_list() {
        let both = json!({"name": "n", "type": "bridge", "plugins": [{"type": "x"}]});
        assert!(
            NetworkConfigList::from_value(both)
                .unwrap()
                .from_single_config
        );
        let empty_type = json!({"name": "n", "type": "", "plugins": [{"type": "x"}]});
        let list = NetworkConfigList::from_value(empty_type).unwrap();
        assert!(!list.from_single_config);
        assert_eq!(list.plugin_type(0), Some("x"));
    }

    #[test]
    fn rejects_configs_without_type_or_plugins() {
        let error =
            NetworkConfigList::from_value(json!({"name": "n", "cniVersion": "1.0.0"})).unwrap_err();
        assert_eq!(error.code, 7);
        assert_eq!(
            error.msg,
            "delegate must have the 'type' or 'plugins' field"
        );
        assert!(error.details.contains("\"n\""), "{}", error.details);
    }

    #[test]
    fn rejects_plugins_without_type() {
        for plugins in [
            json!([{"type": "a"}, {"master": "x"}]),
            json!([{"type": "a"}, "b"]),
            json!([{"type": "a"}, {"type": ""}]),
        ] {
            let error = NetworkConfigList::from_value(json!({"name": "n", "plugins": plugins}))
                .unwrap_err();
            assert_eq!(error.code, 7);
            assert_eq!(error.msg, "a plugin delegate must have the 'type' field");
            assert_eq!(error.details, "plugin 1 of network \"n\"");
        }
    }

    #[test]
    fn rejects_malformed_lists() {
        let cases = [
            (json!({"name": "n", "plugins": {}}), "must be a list"),
            (json!({"name": "n", "plugins": []}), "has no plugins"),
            (json!({"name": "n", "type": 3}), "must be a string"),
            (
                json!({"name": "n", "type": "../../bin/sh"}),
                "must not contain '/'",
            ),
            (
                json!({"name": "n", "plugins": [{"type": "a/b"}]}),
                "must not contain '/'",
            ),
            (
                json!({"name": "n", "disableGC": "yes", "plugins": [{"type": "a"}]}),
                "invalid disableGC value \"yes\"",
            ),
            (
                json!({"name": "n", "disableCheck": 1, "plugins": [{"type": "a"}]}),
                "invalid disableCheck value 1",
            ),
            (json!({"type": "a"}), "missing network name"),
            (json!({"name": "", "type": "a"}), "missing network name"),
            (
                json!({"name": "../etc", "type": "a"}),
                "invalid network name \"../etc\"",
            ),
            (json!({"name": 5, "type": "a"}), "invalid network name 5"),
            (
                json!({"name": "n", "type": "a", "cniVersions": "1.0.0"}),
                "cniVersions",
            ),
        ];
        for (value, message) in cases {
            let error = NetworkConfigList::from_value(value.clone()).unwrap_err();
            assert_eq!(error.code, 7, "{value}");
            assert!(error.msg.contains(message), "{value}: {}", error.msg);
        }
        assert_eq!(
            NetworkConfigList::from_value(json!([1])).unwrap_err().code,
            6
        );
        assert_eq!(
            NetworkConfigList::from_value(json!({"name": "n", "type": "a", "cniVersion": "2.0.0"}))
                .unwrap_err()
                .code,
            1
        );
    }

    #[test]
    fn flags_accept_bools_and_strings() {
        let list = |check: Value, gc: Value| {
            NetworkConfigList::from_value(json!({"name": "n", "disableCheck": check, "disableGC": gc, "plugins": [{"type": "a"}]}))
                .unwrap()
        };
        let parsed = list(json!(true), json!("true"));
        assert!(parsed.disable_check && parsed.disable_gc);
        let parsed = list(json!("False"), json!(false));
        assert!(!parsed.disable_check && !parsed.disable_gc);
        let parsed = list(Value::Null, json!("TRUE"));
        assert!(!parsed.disable_check && parsed.disable_gc);
    }

    #[test]
    fn list_version_comes_from_cni_versions_and_defaults_to_0_1_0() {
        let offered = json!({"name": "n", "cniVersion": "0.4.0", "cniVersions": ["1.0.0", "1.1.0", "2.0.0"], "plugins": [{"type": "a"}]});
        assert_eq!(
            NetworkConfigList::from_value(offered).unwrap().cni_version,
            CniVersion::V1_1_0
        );
        let unversioned = json!({"name": "n", "plugins": [{"type": "a"}]});
        let list = NetworkConfigList::from_value(unversioned).unwrap();
        assert_eq!(list.cni_version, CniVersion::V0_1_0);
        let config = plugin_config(&list, 0, &PluginInjection::default()).unwrap();
        assert_eq!(config["cniVersion"], "0.1.0");
    }

    #[test]
    fn from_slice_decodes_and_rejects_bad_json() {
        let bytes = serde_json::to_vec(&conflist()).unwrap();
        assert_eq!(
            NetworkConfigList::from_slice(&bytes).unwrap().name,
            "macvlan-net"
        );
        let error = NetworkConfigList::from_slice(b"{\"name\":").unwrap_err();
        assert_eq!(error.code, 6);
        assert!(
            error.msg.starts_with("error decoding network config"),
            "{}",
            error.msg
        );
        assert_eq!(decode_config(b"[]").unwrap_err().code, 6);
        assert_eq!(decode_config(br#"{"a":1}"#).unwrap(), json!({"a": 1}));
    }

    #[test]
    fn plugin_config_injects_name_and_version_and_keeps_unknown_fields() {
        let list = NetworkConfigList::from_value(conflist()).unwrap();
        let first = plugin_config(&list, 0, &PluginInjection::default()).unwrap();
        let mut expected = conflist()["plugins"][0].clone();
        expected["name"] = json!("macvlan-net");
        expected["cniVersion"] = json!("1.0.0");
        assert_eq!(first, expected);

        let second = plugin_config(&list, 1, &PluginInjection::default()).unwrap();
        assert_eq!(second["name"], "macvlan-net");
        assert_eq!(second["cniVersion"], "1.0.0");
        assert_eq!(second["sysctl"], json!({"net.core.somaxconn": "500"}));
        assert_eq!(second["runtimeConfig"], json!({"mac": "keep"}));
        assert!(second.get("prevResult").is_none());
    }

    #[test]
    fn plugin_config_passes_only_declared_capabilities() {
        let list = NetworkConfigList::from_value(conflist()).unwrap();
        let capability_args: Map<String, Value> = serde_json::from_value(json!({
            "mac": "c2:11:22:33:44:55",
            "ips": ["10.1.2.9/24"],
            "bandwidth": {"ingressRate": 1000},
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
        }))
        .unwrap();
        let injection = PluginInjection {
            capability_args: Some(&capability_args),
            ..PluginInjection::default()
        };
        let first = plugin_config(&list, 0, &injection).unwrap();
        assert_eq!(
            first["runtimeConfig"],
            json!({"mac": "c2:11:22:33:44:55", "ips": ["10.1.2.9/24"]})
        );
        // the second plugin declares nothing: its own runtimeConfig is left alone
        let second = plugin_config(&list, 1, &injection).unwrap();
        assert_eq!(second["runtimeConfig"], json!({"mac": "keep"}));

        // a declared capability replaces a runtimeConfig the plugin carried
        let carrying = json!({"name": "n", "type": "a", "capabilities": {"mac": true}, "runtimeConfig": {"old": 1}});
        let list = NetworkConfigList::from_value(carrying).unwrap();
        let config = plugin_config(&list, 0, &injection).unwrap();
        assert_eq!(config["runtimeConfig"], json!({"mac": "c2:11:22:33:44:55"}));

        // declared but not supplied by the runtime: nothing injected
        let declared_only = json!({"name": "n", "type": "a", "capabilities": {"portMappings": "true", "aliases": true}});
        let list = NetworkConfigList::from_value(declared_only).unwrap();
        let config = plugin_config(&list, 0, &injection).unwrap();
        assert!(config.get("runtimeConfig").is_none(), "{config}");
    }

    #[test]
    fn plugin_config_writes_prev_result_in_the_list_version() {
        let prev = CniResult::from_value(
            &json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.2/24", "gateway": "10.1.2.1"}]}),
            CniVersion::V1_0_0,
        )
        .unwrap();
        let injection = PluginInjection {
            prev_result: Some(&prev),
            ..PluginInjection::default()
        };

        let v040 = NetworkConfigList::from_value(
            json!({"name": "n", "cniVersion": "0.4.0", "plugins": [{"type": "a"}]}),
        )
        .unwrap();
        let config = plugin_config(&v040, 0, &injection).unwrap();
        assert_eq!(
            config["prevResult"],
            json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.2.2/24", "gateway": "10.1.2.1"}], "dns": {}})
        );

        let v020 =
            NetworkConfigList::from_value(json!({"name": "n", "cniVersion": "0.2.0", "type": "a"}))
                .unwrap();
        let config = plugin_config(&v020, 0, &injection).unwrap();
        assert_eq!(
            config["prevResult"]["ip4"],
            json!({"ip": "10.1.2.2/24", "gateway": "10.1.2.1"})
        );

        let empty = CniResult::empty(CniVersion::V1_0_0);
        let failing = PluginInjection {
            prev_result: Some(&empty),
            ..PluginInjection::default()
        };
        let error = plugin_config(&v020, 0, &failing).unwrap_err();
        assert_eq!(error.msg, "cannot convert: no valid IP addresses");
    }

    #[test]
    fn plugin_config_rejects_an_index_out_of_range() {
        let list = NetworkConfigList::from_value(conflist()).unwrap();
        let error = plugin_config(&list, 2, &PluginInjection::default()).unwrap_err();
        assert_eq!(error.code, 999);
        assert!(
            error.msg.contains("plugin index 2") && error.msg.contains("\"macvlan-net\""),
            "{}",
            error.msg
        );
    }

    #[test]
    fn gc_attachments_are_injected_under_both_keys_and_read_back() {
        let list = NetworkConfigList::from_value(
            json!({"name": "n", "cniVersion": "1.1.0", "plugins": [{"type": "host-local"}]}),
        )
        .unwrap();
        let attachments = vec![
            GcAttachment {
                container_id: "abc".into(),
                ifname: "eth0".into(),
            },
            GcAttachment {
                container_id: "def".into(),
                ifname: "net1".into(),
            },
        ];
        let injection = PluginInjection {
            valid_attachments: Some(&attachments),
            ..PluginInjection::default()
        };
        let config = plugin_config(&list, 0, &injection).unwrap();
        let expected = json!([{"containerID": "abc", "ifname": "eth0"}, {"containerID": "def", "ifname": "net1"}]);
        assert_eq!(config[VALID_ATTACHMENTS_KEY], expected);
        assert_eq!(config[LEGACY_ATTACHMENTS_KEY], expected);
        assert_eq!(valid_attachments(&config).unwrap(), Some(attachments));
    }

    #[test]
    fn valid_attachments_prefers_the_spec_key_and_falls_back() {
        let both = json!({
            "cni.dev/valid-attachments": [{"containerID": "new", "ifname": "eth0"}],
            "cni.dev/attachments": [{"containerID": "old", "ifname": "eth0"}]
        });
        assert_eq!(
            valid_attachments(&both).unwrap().unwrap()[0].container_id,
            "new"
        );
        let legacy = json!({"cni.dev/attachments": [{"containerID": "old", "ifname": "eth0"}]});
        assert_eq!(
            valid_attachments(&legacy).unwrap().unwrap()[0].container_id,
            "old"
        );
        let null_spec_key = json!({"cni.dev/valid-attachments": null, "cni.dev/attachments": []});
        assert_eq!(valid_attachments(&null_spec_key).unwrap(), Some(Vec::new()));
        assert_eq!(valid_attachments(&json!({"name": "n"})).unwrap(), None);
    }

    #[test]
    fn malformed_attachments_are_code_7() {
        for bad in [
            json!("x"),
            json!([{"containerID": "a"}]),
            json!([{"containerID": 1, "ifname": "eth0"}]),
        ] {
            let error = valid_attachments(&json!({"cni.dev/valid-attachments": bad})).unwrap_err();
            assert_eq!(error.code, 7, "{bad}");
            assert!(
                error.msg.contains("cni.dev/valid-attachments"),
                "{}",
                error.msg
            );
        }
    }

    #[test]
    fn declared_capabilities_ignore_false_and_non_booleans() {
        let plugin = json!({"capabilities": {"mac": true, "ips": false, "portMappings": "true"}});
        assert_eq!(declared_capabilities(&plugin), vec!["mac"]);
        assert!(declared_capabilities(&json!({"type": "a"})).is_empty());
    }
}
