//! The guest-sdk README, followed literally: its files are written into a
//! crate made with `cargo new` outside the workspace, against a copy of the
//! SDK (which must stand alone), its commands run (`cargo test`, the wasm
//! build, `multus-wasm plugin inspect` and `plugin run`), and its NAD must
//! parse and chain the plugin after macvlan. The README's `src/lib.rs` is
//! also the in-repo example (`examples/fixed-route`), which CI tests natively
//! and loads as a component.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/README.md"))
        .unwrap()
}

/// The `<!-- file: NAME -->` code blocks of the README.
fn files(readme: &str) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut rest = readme;
    while let Some(start) = rest.find("<!-- file: ") {
        let after = &rest[start + "<!-- file: ".len()..];
        let name_end = after.find(" -->").expect("marker ends");
        let name = after[..name_end].to_string();
        let fence = after.find("```").expect("a code block follows the marker");
        let body_start = fence + after[fence..].find('\n').expect("fence line") + 1;
        let body_end = body_start + after[body_start..].find("```").expect("fence closes");
        files.insert(name, after[body_start..body_end].to_string());
        rest = &after[body_end..];
    }
    files
}

#[test]
fn the_readme_example_is_the_example_crate() {
    let files = files(&readme());
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fixed-route/src/lib.rs"),
    )
    .unwrap();
    assert_eq!(
        files["src/lib.rs"], example,
        "guest-sdk/README.md and examples/fixed-route/src/lib.rs drifted apart"
    );
}

#[test]
fn the_example_component_plans_its_route() {
    let dir = support::scratch();
    let docs = files(&readme());
    for name in ["netconf.json", "prev.json"] {
        std::fs::write(dir.path().join(name), &docs[name]).unwrap();
    }
    let output = Command::new(support::binary())
        .args([
            "plugin",
            "run",
            test_artifacts::FIXED_ROUTE,
            "--command",
            "ADD",
            "--ifname",
            "net1",
            "--no-cache",
        ])
        .arg("--config")
        .arg(dir.path().join("netconf.json"))
        .arg("--prev-result")
        .arg(dir.path().join("prev.json"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let plan: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        plan["ops"],
        serde_json::json!([{"op": "add-route", "link": "net1", "dst": "10.100.0.0/16", "gateway": "192.168.1.254"}])
    );
    assert_eq!(plan["result"]["ips"][0]["address"], "192.168.1.200/24");
    assert_eq!(plan["result"]["routes"][0]["dst"], "10.100.0.0/16");

    // The NAD from the docs parses and chains fixed-route after macvlan.
    let nad: Value = serde_yaml::from_str(&docs["nad.yaml"]).unwrap();
    let config: Value = serde_json::from_str(nad["spec"]["config"].as_str().unwrap()).unwrap();
    assert_eq!(config["plugins"][0]["type"], "macvlan");
    assert_eq!(config["plugins"][1]["type"], "fixed-route");
}

fn run(command: &mut Command) -> std::process::Output {
    for key in [
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
    ] {
        command.env_remove(key);
    }
    let output = command.output().expect("spawn");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn the_walkthrough_works_from_cargo_new() {
    let dir = support::scratch();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(&cargo)
        .current_dir(dir.path())
        .args(["new", "--lib", "fixed-route"]));
    let krate = dir.path().join("fixed-route");
    // The SDK as an author outside this repository has it: a copy of the
    // directory and of the host's core beside it (its native tests use the
    // host's policy), with no workspace above them to inherit from.
    let sdk = dir.path().join("vendor/guest-sdk");
    let core = dir.path().join("vendor/host/core");
    std::fs::create_dir_all(core.parent().unwrap()).unwrap();
    for (from, to) in [("../guest-sdk", &sdk), ("../host/core", &core)] {
        run(Command::new("cp")
            .arg("-r")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(from))
            .arg(to));
    }
    for (name, content) in files(&readme()) {
        let content = content.replace("/path/to/multus-wasm/guest-sdk", sdk.to_str().unwrap());
        let path = krate.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    // Its own lockfile and target: this is someone else's project. Reuse
    // the repository's lockfile so the versions are the ones CI already has.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"),
        krate.join("Cargo.lock"),
    )
    .unwrap();
    let test = run(Command::new(&cargo).current_dir(&krate).args(["test"]));
    assert!(
        String::from_utf8_lossy(&test.stdout).contains("4 passed"),
        "{}",
        String::from_utf8_lossy(&test.stdout)
    );
    run(Command::new(&cargo).current_dir(&krate).args([
        "build",
        "--release",
        "--target",
        "wasm32-unknown-unknown",
    ]));
    let wasm = krate.join("target/wasm32-unknown-unknown/release/fixed_route.wasm");
    let inspect = run(Command::new(support::binary())
        .arg("plugin")
        .arg("inspect")
        .arg(&wasm));
    let inspection: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(inspection["world"], "delegate");
    assert_eq!(inspection["usesWasi"], false);
    let plan = run(Command::new(support::binary())
        .current_dir(&krate)
        .arg("plugin")
        .arg("run")
        .arg(&wasm)
        .args([
            "--command",
            "ADD",
            "--config",
            "netconf.json",
            "--prev-result",
            "prev.json",
            "--ifname",
            "net1",
            "--no-cache",
        ]));
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["ops"][0]["op"], "add-route");
    assert_eq!(plan["ops"][0]["dst"], "10.100.0.0/16");
}
