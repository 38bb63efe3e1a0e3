//! The fuzz target bodies. Each takes arbitrary bytes, must never panic on
//! its own, and asserts the invariants the parser promises; an assertion
//! failure is a finding, exactly like a panic inside the parser.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value, json};

use crate::annotations::{self, AnnotationError, NetworkSelectionElement};
use crate::cni::netconf::{LEGACY_ATTACHMENTS_KEY, VALID_ATTACHMENTS_KEY};
use crate::cni::{
    self, CniEnv, CniError, CniResult, CniVersion, GcAttachment, NetworkConfigList, PluginInjection,
};
use crate::config::{ConfigError, MultusConfig, ParsedConfig, PrimaryNetwork};

/// A fuzz target: its name (the cargo-fuzz target and corpus directory)
/// and its body.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub body: fn(&[u8]),
}

/// Every target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "annotations",
        body: annotations,
    },
    Target {
        name: "netconf",
        body: netconf,
    },
    Target {
        name: "result",
        body: result,
    },
    Target {
        name: "cni_env",
        body: cni_env,
    },
];

// ---- annotations ---------------------------------------------------------

const POD_NAMESPACE: &str = "default";
const MULTUS_NAMESPACE: &str = "kube-system";

/// `k8s.v1.cni.cncf.io/networks` and `v1.multus-cni.io/default-network`.
///
/// Invariants: every parsed element is valid (DNS-1123 name and namespace,
/// interface accepted by both interface-name validators, canonical `mac`
/// and `infiniband-guid`, parseable `ips`, `interfaceRequest` folded);
/// the comma form yields one element per non-empty item; the elements,
/// written back as the JSON form, parse to the same elements;
/// `parse_default_network` agrees with `parse_networks`; errors carry code
/// 6 (undecodable JSON only) or 7.
pub fn annotations(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_ifname_validators_agree(text);
    for piece in text.split([',', '/', '@', '"']) {
        check_ifname_validators_agree(piece);
        check_ifname_validators_agree(piece.trim());
    }

    let json_form = !text.trim().is_empty() && text.contains(['[', '{', '"']);
    match annotations::parse_networks(text, POD_NAMESPACE) {
        Ok(elements) => {
            for element in &elements {
                check_element(element);
            }
            if !json_form {
                let items = text.split(',').filter(|item| !item.trim().is_empty());
                assert_eq!(elements.len(), items.count(), "one element per comma item");
            }
            // The JSON form of the parsed elements names every namespace,
            // so another default namespace must not change anything.
            let written = serde_json::to_string(&elements).expect("elements serialize");
            let again = annotations::parse_networks(&written, "elsewhere")
                .unwrap_or_else(|error| panic!("re-parsing {written} failed: {error}"));
            assert!(
                json_equivalent(&to_value(&elements), &to_value(&again)),
                "JSON round trip changed the elements:\n{elements:?}\n{again:?}"
            );
        }
        Err(error) => check_annotation_error(&error, json_form),
    }

    let in_multus_namespace = annotations::parse_networks(text, MULTUS_NAMESPACE);
    let default_network = annotations::parse_default_network(text, MULTUS_NAMESPACE);
    match (&in_multus_namespace, &default_network) {
        (Ok(list), Ok(None)) => assert!(list.is_empty()),
        (Ok(list), Ok(Some(element))) => assert_eq!(list.as_slice(), std::slice::from_ref(element)),
        (Ok(list), Err(AnnotationError::TooManyDefaultNetworks { count, .. })) => {
            assert!(list.len() > 1 && *count == list.len())
        }
        (Err(list_error), Err(default_error)) => assert_eq!(list_error, default_error),
        (list, default) => {
            panic!("parse_networks {list:?} and parse_default_network {default:?} disagree")
        }
    }
}

fn check_ifname_validators_agree(name: &str) {
    let annotation_rule = annotations::validate_ifname(name).is_ok();
    let cni_rule = cni::validate_interface_name(name).is_ok();
    assert_eq!(
        annotation_rule, cni_rule,
        "the two interface-name validators disagree on {name:?}"
    );
}

fn check_element(element: &NetworkSelectionElement) {
    assert!(annotations::is_dns1123_label(&element.name), "{element:?}");
    assert!(
        annotations::is_dns1123_label(&element.namespace),
        "{element:?}"
    );
    assert!(element.interface_request.is_none(), "{element:?}");
    if let Some(interface) = &element.interface {
        assert!(
            annotations::validate_ifname(interface).is_ok(),
            "{element:?}"
        );
        assert!(
            cni::validate_interface_name(interface).is_ok(),
            "{element:?}"
        );
    }
    if let Some(mac) = &element.mac {
        assert_canonical_hardware_address(mac, &[6]);
    }
    if let Some(guid) = &element.infiniband_guid {
        assert_canonical_hardware_address(guid, &[8, 20]);
    }
    for address in element.ips.iter().flatten() {
        assert!(
            address.parse::<IpAddr>().is_ok() || address.parse::<IpNet>().is_ok(),
            "ips entry {address:?} kept"
        );
    }
}

fn assert_canonical_hardware_address(text: &str, lengths: &[usize]) {
    let bytes = annotations::parse_hardware_address(text)
        .unwrap_or_else(|| panic!("canonical address {text:?} does not parse"));
    assert!(
        lengths.contains(&bytes.len()),
        "{text:?}: {} bytes",
        bytes.len()
    );
    let canonical: Vec<String> = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(text, canonical.join(":"), "address not canonical");
}

fn check_annotation_error(error: &AnnotationError, json_form: bool) {
    let code = error.cni_code();
    assert!(code == 6 || code == 7, "code {code} for {error:?}");
    if matches!(
        error,
        AnnotationError::Decode { .. }
            | AnnotationError::NotAList { .. }
            | AnnotationError::MalformedElement { .. }
    ) {
        assert!(json_form, "JSON error {error:?} for the comma form");
    }
    assert!(!error.to_string().is_empty());
}

// ---- netconf and host config -------------------------------------------

/// `MultusConfig::parse` and `NetworkConfigList::from_slice` on the same bytes.
pub fn netconf(data: &[u8]) {
    host_config(data);
    conflist(data);
}

/// Every top-level key the host config knows.
const KNOWN_CONFIG_KEYS: &[&str] = &[
    "cniVersion",
    "name",
    "type",
    "kubeconfig",
    "confDir",
    "cniDir",
    "binDir",
    "logFile",
    "logLevel",
    "logToStderr",
    "logOptions",
    "logFormat",
    "namespaceIsolation",
    "globalNamespaces",
    "clusterNetwork",
    "defaultNetworks",
    "delegates",
    "systemNamespaces",
    "multusNamespace",
    "readinessindicatorfile",
    "retryDeleteOnError",
    "auxiliaryCNIChainName",
    "capabilities",
    "runtimeConfig",
    "wasmPlugins",
    "wasmCacheDir",
    "wasmLimits",
    "allowedMasters",
    "manifestDir",
    "prevResult",
];

/// Invariants: the error kind matches what the bytes are (not JSON, not an
/// object, or an invalid object), codes are 6 or 7; a parsed config has a
/// primary network, object delegates, no empty strings standing for
/// absent values, absolute wasm plugin paths with valid digests, no zero
/// limits; `unknown_fields` is exactly the input's keys the host does not
/// know, sorted; removing them and parsing again gives the same config.
fn host_config(data: &[u8]) {
    let decoded: Result<Value, _> = serde_json::from_slice(data);
    let parsed = match MultusConfig::parse(data) {
        Ok(parsed) => parsed,
        Err(error) => {
            match (&error, &decoded) {
                (ConfigError::Decode { .. }, Err(_)) => {}
                (ConfigError::NotAnObject, Ok(value)) => assert!(!value.is_object()),
                (_, Ok(Value::Object(_))) => {}
                _ => panic!("error {error:?} for input decoding as {decoded:?}"),
            }
            let code = error.cni_code();
            assert!(code == 6 || code == 7, "code {code} for {error:?}");
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    let Ok(Value::Object(object)) = decoded else {
        panic!("a config parsed from input that is not a JSON object");
    };
    check_config(&parsed);

    let mut expected_unknown: Vec<String> = object
        .keys()
        .filter(|key| !KNOWN_CONFIG_KEYS.contains(&key.as_str()))
        .cloned()
        .collect();
    expected_unknown.sort();
    assert_eq!(parsed.unknown_fields, expected_unknown, "unknown fields");

    let mut known_only = object.clone();
    for key in &parsed.unknown_fields {
        known_only.remove(key);
    }
    let bytes = serde_json::to_vec(&Value::Object(known_only)).expect("serialize");
    let again = MultusConfig::parse(&bytes).unwrap_or_else(|error| {
        panic!(
            "config without its unknown fields fails: {error}: {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert!(again.unknown_fields.is_empty());
    assert_configs_equivalent(&parsed.config, &again.config);
}

fn check_config(parsed: &ParsedConfig) {
    let config = &parsed.config;
    assert!(config.cluster_network.is_some() || !config.delegates.is_empty());
    assert!(config.delegates.iter().all(Value::is_object));
    match config.primary() {
        PrimaryNetwork::ClusterNetwork(name) => {
            assert_eq!(Some(name), config.cluster_network.as_deref())
        }
        PrimaryNetwork::Delegates(delegates) => {
            assert!(config.cluster_network.is_none());
            assert_eq!(delegates, config.delegates.as_slice());
        }
    }
    let optional_texts = [
        config.cluster_network.as_deref(),
        config.auxiliary_cni_chain_name.as_deref(),
        config.kubeconfig.as_deref().and_then(|path| path.to_str()),
        config.log_file.as_deref().and_then(|path| path.to_str()),
        config
            .readiness_indicator_file
            .as_deref()
            .and_then(|path| path.to_str()),
    ];
    assert!(optional_texts.iter().flatten().all(|text| !text.is_empty()));
    for path in [
        &config.conf_dir,
        &config.cni_dir,
        &config.bin_dir,
        &config.wasm_cache_dir,
        &config.manifest_dir,
    ] {
        assert!(!path.as_os_str().is_empty());
    }
    assert!(!config.multus_namespace.is_empty());
    for namespace in &config.global_namespaces {
        assert!(!namespace.is_empty() && namespace.trim() == namespace && !namespace.contains(','));
    }
    for (plugin_type, plugin) in &config.wasm_plugins {
        assert!(!plugin_type.is_empty());
        assert!(plugin.path.is_absolute(), "{plugin:?}");
        assert!(crate::config::is_sha256_hex(&plugin.sha256), "{plugin:?}");
    }
    let limits = config.wasm_limits;
    assert!(
        [
            limits.fuel,
            limits.timeout_ms,
            limits.memory_mib,
            limits.max_stack_kib
        ]
        .into_iter()
        .all(|limit| limit != Some(0))
            && limits.max_ops != Some(0)
            && limits.max_string_bytes != Some(0),
        "{limits:?}"
    );
    assert!(parsed.unknown_fields.is_sorted());
}

/// Configs equal up to float precision in the verbatim JSON fields.
fn assert_configs_equivalent(first: &MultusConfig, second: &MultusConfig) {
    let (mut first, mut second) = (first.clone(), second.clone());
    let first_json = (
        Value::Array(std::mem::take(&mut first.delegates)),
        first.runtime_config.take().unwrap_or(Value::Null),
    );
    let second_json = (
        Value::Array(std::mem::take(&mut second.delegates)),
        second.runtime_config.take().unwrap_or(Value::Null),
    );
    assert_eq!(first, second, "config changed when parsed again");
    assert!(
        json_equivalent(&first_json.0, &second_json.0)
            && json_equivalent(&first_json.1, &second_json.1),
        "delegates or runtimeConfig changed: {first_json:?} {second_json:?}"
    );
}

/// The prevResult injected into every plugin config.
fn prev_result() -> CniResult {
    let value = json!({"cniVersion": "1.1.0",
        "interfaces": [{"name": "net1", "mac": "c2:11:22:33:44:55", "mtu": 1400, "sandbox": "/var/run/netns/pod"}],
        "ips": [{"interface": 0, "address": "10.1.2.2/24", "gateway": "10.1.2.1"},
                {"interface": 0, "address": "2001:db8:1::2/64"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.2.1", "mtu": 1300, "table": 0}],
        "dns": {"nameservers": ["10.1.2.1"], "search": ["example.com"]}});
    CniResult::from_value(&value, CniVersion::LATEST).expect("fixture result")
}

/// Invariants: a parsed list has a valid name and at least one plugin,
/// each an object with a `type` free of `/`; a single config is a
/// one-plugin list without flags; every plugin's injected config has the
/// list's name and version, the prevResult written in that version, exactly
/// the declared capability args as `runtimeConfig`, the GC attachments
/// under both keys and every other field unchanged; an injected config
/// read back as a network gives the same name and version; errors are code
/// 1, 6 or 7 and survive their JSON form.
fn conflist(data: &[u8]) {
    let list = match NetworkConfigList::from_slice(data) {
        Ok(list) => list,
        Err(error) => {
            assert!(matches!(error.code, 1 | 6 | 7), "code for {error:?}");
            check_cni_error_json(&error);
            return;
        }
    };
    assert!(cni::validate_network_name(&list.name).is_ok(), "{list:?}");
    assert!(!list.plugins.is_empty());
    if list.from_single_config {
        assert!(list.plugins.len() == 1 && !list.disable_check && !list.disable_gc);
    }
    for index in 0..list.plugins.len() {
        let plugin_type = list.plugin_type(index).expect("every plugin has a type");
        assert!(!plugin_type.is_empty() && !plugin_type.contains('/'));
    }

    let prev = prev_result();
    let expected_prev = prev
        .convert_to(list.cni_version)
        .expect("the fixture converts to every version");
    let mut capability_args = Map::new();
    capability_args.insert(
        "portMappings".into(),
        json!([{"hostPort": 8080, "containerPort": 80}]),
    );
    capability_args.insert("mac".into(), json!("c2:11:22:33:44:55"));
    capability_args.insert("ips".into(), json!(["10.1.2.3/24"]));
    let attachments = vec![GcAttachment {
        container_id: "c1".into(),
        ifname: "net1".into(),
    }];
    let inject = PluginInjection {
        prev_result: Some(&prev),
        capability_args: Some(&capability_args),
        valid_attachments: Some(&attachments),
    };
    for (index, plugin) in list.plugins.iter().enumerate() {
        let original = plugin.as_object().expect("plugins are objects");
        let config = cni::plugin_config(&list, index, &inject)
            .unwrap_or_else(|error| panic!("plugin_config {index}: {error}"));
        let object = config.as_object().expect("an object");
        assert_eq!(object.get("name"), Some(&json!(list.name)));
        assert_eq!(
            object.get("cniVersion"),
            Some(&json!(list.cni_version.as_str()))
        );
        let prev_read = CniResult::from_value(&object["prevResult"], list.cni_version)
            .expect("the injected prevResult reads back");
        assert_eq!(prev_read, expected_prev);

        let declared = cni::declared_capabilities(plugin);
        let wanted: Map<String, Value> = capability_args
            .iter()
            .filter(|(name, _)| declared.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        if wanted.is_empty() {
            assert_eq!(object.get("runtimeConfig"), original.get("runtimeConfig"));
        } else {
            assert_eq!(object.get("runtimeConfig"), Some(&Value::Object(wanted)));
        }
        assert_eq!(
            cni::valid_attachments(&config).expect("injected attachments read back"),
            Some(attachments.clone())
        );
        let injected_keys = [
            "name",
            "cniVersion",
            "prevResult",
            "runtimeConfig",
            VALID_ATTACHMENTS_KEY,
            LEGACY_ATTACHMENTS_KEY,
        ];
        for (key, value) in original {
            if !injected_keys.contains(&key.as_str()) {
                assert_eq!(object.get(key), Some(value), "field {key:?} changed");
            }
        }

        // A plugin config read back as a network: same name and version,
        // unless the plugin offers versions of its own.
        if list.from_single_config || !original.contains_key("cniVersions") {
            let bare = cni::plugin_config(&list, index, &PluginInjection::default())
                .expect("plugin_config without injection");
            let reread = NetworkConfigList::from_value(bare).unwrap_or_else(|error| {
                panic!("plugin config {index} does not read back: {error}")
            });
            assert_eq!(reread.name, list.name);
            assert_eq!(reread.cni_version, list.cni_version);
            assert!(reread.from_single_config);
        }
    }
    assert!(cni::plugin_config(&list, list.plugins.len(), &PluginInjection::default()).is_err());
}

fn check_cni_error_json(error: &CniError) {
    assert!(!error.to_string().is_empty());
    for version in [None, Some("1.1.0")] {
        let text = error.to_json(version);
        let read = CniError::from_json(text.as_bytes())
            .unwrap_or_else(|| panic!("error JSON {text} does not read back"));
        assert_eq!(&read, error, "error JSON round trip");
    }
}

// ---- results -------------------------------------------------------------

/// A result read with every assumed version, then converted to every version.
///
/// Invariants: a result reads in the version its `cniVersion` names (or the
/// assumed one); writing it fails only for 0.1.0/0.2.0 without an address;
/// the JSON written for a version, as text, reads back as `convert_to` of
/// that version; conversion is idempotent; converting to the same version
/// and back never panics; 0.3.0 and later shapes keep every address, route
/// and DNS field; 0.1.0/0.2.0 keep the first address of each family and
/// only routes of a family with an address; 1.x -> 0.4.0 -> 1.x keeps the
/// addresses, routes and DNS and loses only the interface fields 0.4.0 lacks.
pub fn result(data: &[u8]) {
    let declared = serde_json::from_slice::<Value>(data)
        .ok()
        .and_then(|value| value.get("cniVersion").cloned());
    for assumed in CniVersion::ALL {
        let parsed = match CniResult::parse(data, assumed) {
            Ok(parsed) => parsed,
            Err(error) => {
                assert!(matches!(error.code, 1 | 6), "code for {error:?}");
                check_cni_error_json(&error);
                continue;
            }
        };
        let expected_version = match declared.as_ref().and_then(Value::as_str) {
            Some(text) if !text.is_empty() => CniVersion::from_exact(text).expect("supported"),
            _ => assumed,
        };
        assert_eq!(parsed.cni_version, expected_version);
        check_result(&parsed);
    }
}

fn check_result(result: &CniResult) {
    if result.cni_version.has_legacy_result_shape() {
        // `ip4` and `ip6` are read as given, whatever their family (as the
        // reference does), so only their number is bounded here.
        assert!(result.interfaces.is_empty());
        assert!(result.ips.len() <= 2 && result.ips.iter().all(|ip| ip.interface.is_none()));
    }
    for version in CniVersion::ALL {
        let writable = !(version.has_legacy_result_shape() && result.ips.is_empty());
        let written = result.to_json(version);
        assert_eq!(
            written.is_ok(),
            writable,
            "to_json({version}) of {result:?}: {written:?}"
        );
        let converted = result.convert_to(version);
        assert_eq!(
            converted.is_ok(),
            writable,
            "convert_to({version}): {converted:?}"
        );
        let (Ok(written), Ok(converted)) = (written, converted) else {
            continue;
        };
        assert_eq!(written.get("cniVersion"), Some(&json!(version.as_str())));
        let text = serde_json::to_vec(&written).expect("serialize");
        for assumed in [CniVersion::V0_1_0, CniVersion::LATEST] {
            let reread = CniResult::parse(&text, assumed).expect("written JSON reads back");
            assert_eq!(reread, converted, "text round trip in {version}");
        }
        assert_eq!(converted.cni_version, version);
        assert_eq!(
            converted.convert_to(version).as_ref(),
            Ok(&converted),
            "conversion to {version} is not idempotent"
        );
        // To the same version and back: must not panic (it may fail only
        // for the legacy shapes, which need an address).
        if let Ok(back) = converted.convert_to(result.cni_version) {
            assert_eq!(back.cni_version, result.cni_version);
        }

        if version.has_legacy_result_shape() {
            assert!(converted.interfaces.is_empty());
            check_legacy_ips(&converted.ips);
            let first = |v4: bool| {
                result
                    .ips
                    .iter()
                    .find(|ip| matches!(ip.address, IpNet::V4(_)) == v4)
                    .map(|ip| (ip.address, ip.gateway))
            };
            let kept: Vec<_> = converted
                .ips
                .iter()
                .map(|ip| (ip.address, ip.gateway))
                .collect();
            let expected: Vec<_> = [first(true), first(false)].into_iter().flatten().collect();
            assert_eq!(
                kept, expected,
                "legacy conversion keeps the first address per family"
            );
            for route in &converted.routes {
                let v4 = matches!(route.dst, IpNet::V4(_));
                assert!(
                    converted
                        .ips
                        .iter()
                        .any(|ip| matches!(ip.address, IpNet::V4(_)) == v4)
                );
                assert!(
                    route.mtu.is_none()
                        && route.advmss.is_none()
                        && route.priority.is_none()
                        && route.table.is_none()
                        && route.scope.is_none()
                );
            }
            assert_eq!(converted.dns, result.dns);
        } else {
            assert_eq!(converted.ips, result.ips, "addresses changed in {version}");
            assert_eq!(
                converted.routes, result.routes,
                "routes changed in {version}"
            );
            assert_eq!(converted.dns, result.dns, "dns changed in {version}");
            assert_eq!(converted.interfaces.len(), result.interfaces.len());
            for (after, before) in converted.interfaces.iter().zip(&result.interfaces) {
                assert_eq!(
                    (&after.name, &after.mac, &after.sandbox),
                    (&before.name, &before.mac, &before.sandbox)
                );
                if version >= CniVersion::V1_0_0 {
                    assert_eq!(after, before);
                }
            }
        }
    }

    if result.cni_version >= CniVersion::V1_0_0 {
        let down = result
            .convert_to(CniVersion::V0_4_0)
            .expect("1.x converts to 0.4.0");
        let up = down
            .convert_to(result.cni_version)
            .expect("0.4.0 converts to 1.x");
        let addresses =
            |result: &CniResult| -> Vec<IpNet> { result.ips.iter().map(|ip| ip.address).collect() };
        assert_eq!(
            addresses(&up),
            addresses(result),
            "1.x -> 0.4.0 -> 1.x changed ips"
        );
        assert_eq!(up.ips, result.ips);
        assert_eq!(up.routes, result.routes);
        assert_eq!(up.dns, result.dns);
    }
}

/// At most one address of each family, none bound to an interface.
fn check_legacy_ips(ips: &[cni::IpConfig]) {
    let v4 = ips
        .iter()
        .filter(|ip| matches!(ip.address, IpNet::V4(_)))
        .count();
    assert!(v4 <= 1 && ips.len() - v4 <= 1, "legacy ips {ips:?}");
    assert!(ips.iter().all(|ip| ip.interface.is_none()));
}

// ---- CNI environment -----------------------------------------------------

/// `CniEnv::from_vars` on `NAME=VALUE` lines, and `parse_cni_args` on the
/// whole input.
///
/// Invariants: `parse_cni_args` then `format_cni_args` gives back the text;
/// keys are non-empty and free of `=` and `;`; a parsed environment has
/// exactly the variables its command uses, validated, with `CNI_ARGS`
/// formatting back to the last value given and `CNI_PATH` split without
/// empty entries; errors are code 4.
pub fn cni_env(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match cni::parse_cni_args(text) {
        Ok(pairs) => {
            assert_eq!(cni::format_cni_args(&pairs), text, "CNI_ARGS round trip");
            for (key, value) in &pairs {
                assert!(!key.is_empty() && !key.contains(['=', ';']), "key {key:?}");
                assert!(!value.contains(';'), "value {value:?}");
            }
        }
        Err(error) => {
            assert_eq!(error.code, CniError::INVALID_ENVIRONMENT);
            check_cni_error_json(&error);
        }
    }

    let vars: Vec<(&str, &str)> = text
        .lines()
        .map(|line| line.split_once('=').unwrap_or((line, "")))
        .collect();
    let last = |name: &str| {
        vars.iter()
            .rev()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| *value)
            .filter(|value| !value.is_empty())
    };
    let env = match CniEnv::from_vars(vars.iter().copied()) {
        Ok(env) => env,
        Err(error) => {
            assert_eq!(error.code, CniError::INVALID_ENVIRONMENT, "{error:?}");
            check_cni_error_json(&error);
            return;
        }
    };
    assert_eq!(Some(env.command.as_str()), last("CNI_COMMAND"));
    if env.command.needs_attachment() {
        let container_id = env.container_id.as_deref().expect("container id");
        assert!(cni::validate_container_id(container_id).is_ok());
        assert_eq!(Some(container_id), last("CNI_CONTAINERID"));
        let ifname = env.ifname.as_deref().expect("ifname");
        assert!(cni::validate_interface_name(ifname).is_ok());
        assert!(annotations::validate_ifname(ifname).is_ok());
        assert_eq!(env.netns.as_deref(), last("CNI_NETNS"));
    } else {
        assert!(env.container_id.is_none() && env.netns.is_none() && env.ifname.is_none());
    }
    if env.command.needs_netns() {
        assert!(env.netns.is_some());
    }
    assert_eq!(
        cni::format_cni_args(&env.args),
        last("CNI_ARGS").unwrap_or("")
    );
    for entry in &env.cni_path {
        assert!(!entry.is_empty() && !entry.contains(':'));
    }
    let path_entries = last("CNI_PATH")
        .map(|path| path.split(':').filter(|entry| !entry.is_empty()).count())
        .unwrap_or(0);
    assert_eq!(env.cni_path.len(), path_entries);
}

// ---- helpers ---------------------------------------------------------------

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("serialize")
}

/// JSON equality where floats may differ in the last bits (serde_json
/// without `float_roundtrip` may read a written float back one ulp off).
fn json_equivalent(first: &Value, second: &Value) -> bool {
    match (first, second) {
        (Value::Number(a), Value::Number(b)) => {
            a == b
                || match (a.as_f64(), b.as_f64()) {
                    (Some(a), Some(b)) if a.is_finite() && b.is_finite() => {
                        (a - b).abs() <= 4.0 * f64::EPSILON * a.abs().max(b.abs())
                    }
                    _ => false,
                }
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| json_equivalent(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, a)| b.get(key).is_some_and(|b| json_equivalent(a, b)))
        }
        _ => first == second,
    }
}
