//! Build the guests with a nested cargo, as wasmtime's test-programs do.
//!
//! The nested cargo gets its own target directory (sharing the outer one
//! deadlocks `cargo test`) and none of the variables the outer cargo or
//! clippy set for rustc, so a guest warning cannot break the outer build.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, also built for wasm32-wasip2)
const GUESTS: &[(&str, bool)] = &[
    ("macvlan", true),
    ("host-local", false),
    ("static", false),
    ("hostile", true),
    ("bad-import", false),
    ("abi-future", false),
    ("fixed-route", false),
];

/// Directories whose contents feed the guests.
const INPUTS: &[&str] = &[
    "guest-sdk",
    "plugins-wasm/macvlan",
    "plugins-wasm/host-local",
    "plugins-wasm/static",
    "tests/guests",
    "examples",
    "Cargo.toml",
    "Cargo.lock",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.join("../..").canonicalize().unwrap();
    for input in INPUTS {
        rerun_for(&workspace.join(input));
    }
    let target_dir = workspace.join("target/wasm-guests");

    build(
        &workspace,
        &target_dir,
        "wasm32-unknown-unknown",
        GUESTS.iter().map(|g| g.0),
    );
    build(
        &workspace,
        &target_dir,
        "wasm32-wasip2",
        GUESTS.iter().filter(|g| g.1).map(|g| g.0),
    );

    let mut out = String::new();
    for (package, wasip2) in GUESTS {
        let constant = package.to_uppercase().replace('-', "_");
        let file = package.replace('-', "_");
        let path = target_dir.join(format!("wasm32-unknown-unknown/guest/{file}.wasm"));
        assert!(
            path.exists(),
            "guest {package} was not built at {}",
            path.display()
        );
        writeln!(
            out,
            "pub const {constant}: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
        if *wasip2 {
            let path = target_dir.join(format!("wasm32-wasip2/guest/{file}.wasm"));
            assert!(
                path.exists(),
                "guest {package} was not built at {}",
                path.display()
            );
            writeln!(
                out,
                "pub const {constant}_WASIP2: &str = {:?};",
                path.display().to_string()
            )
            .unwrap();
        }
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    std::fs::write(out_dir.join("artifacts.rs"), out).unwrap();
}

fn build<'a>(
    workspace: &Path,
    target_dir: &Path,
    target: &str,
    packages: impl Iterator<Item = &'a str>,
) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args([
            "build",
            "--profile",
            "guest",
            "--target",
            target,
            "--target-dir",
        ])
        .arg(target_dir);
    for package in packages {
        command.args(["-p", package]);
    }
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        let inherited_rustc_setting = key.starts_with("CARGO_ENCODED_RUSTFLAGS")
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
            || key == "RUSTC_WRAPPER"
            || key == "RUSTC_WORKSPACE_WRAPPER"
            || key == "CARGO_TARGET_DIR"
            || key == "CARGO_BUILD_TARGET"
            || key.starts_with("CARGO_PROFILE_")
            || key == "CLIPPY_ARGS"
            || key == "CLIPPY_CONF_DIR";
        if inherited_rustc_setting {
            command.env_remove(key.as_ref());
        }
    }
    let status = command
        .status()
        .expect("failed to run cargo for the guests");
    assert!(
        status.success(),
        "building the guests for {target} failed: {status}"
    );
}

fn rerun_for(path: &Path) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if name == "target" {
                continue;
            }
            rerun_for(&entry.path());
        }
    } else {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
