//! The seed corpus, run through every target body without libFuzzer, and
//! checked to still reach the parsers' success paths (a seed the parser
//! rejects only exercises its error path).

use std::path::PathBuf;

use multus_wasm_fuzz::annotations::parse_networks;
use multus_wasm_fuzz::cni::{CniEnv, CniResult, CniVersion, NetworkConfigList};
use multus_wasm_fuzz::config::MultusConfig;
use multus_wasm_fuzz::targets::TARGETS;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("read seed"))
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("seeds are UTF-8")
}

#[test]
fn every_seed_passes_its_target() {
    for target in TARGETS {
        for (_, bytes) in seeds(target.name) {
            (target.body)(&bytes);
        }
    }
}

#[test]
fn annotation_seeds_parse_unless_named_invalid() {
    for (name, bytes) in seeds("annotations") {
        let parsed = parse_networks(text(&bytes), "default");
        assert_eq!(
            parsed.is_ok(),
            !name.contains("invalid") && !name.contains("bad"),
            "{name}: {parsed:?}"
        );
    }
}

#[test]
fn netconf_seeds_parse() {
    for (name, bytes) in seeds("netconf") {
        if name.starts_with("host-") {
            let parsed = MultusConfig::parse(&bytes);
            assert!(parsed.is_ok(), "{name}: {parsed:?}");
        } else {
            // A NAD's config without `name` (Multus injects the NAD's name).
            let parsed = NetworkConfigList::from_slice(&bytes);
            assert_eq!(
                parsed.is_ok(),
                !name.ends_with("-unnamed"),
                "{name}: {parsed:?}"
            );
        }
    }
}

#[test]
fn result_seeds_parse_in_their_version() {
    for (name, bytes) in seeds("result") {
        let parsed = CniResult::parse(&bytes, CniVersion::LATEST);
        let result = parsed.unwrap_or_else(|error| panic!("{name}: {error}"));
        if let Some(version) = name.strip_prefix('v').and_then(|rest| rest.get(..5)) {
            assert_eq!(result.cni_version.as_str(), version, "{name}");
        }
    }
}

#[test]
fn env_seeds_parse_unless_named_bad() {
    for (name, bytes) in seeds("cni_env") {
        if name == "args" {
            continue;
        }
        let vars = text(&bytes)
            .lines()
            .map(|line| line.split_once('=').unwrap_or((line, "")));
        let parsed = CniEnv::from_vars(vars);
        assert_eq!(parsed.is_ok(), !name.contains("bad"), "{name}: {parsed:?}");
    }
}
