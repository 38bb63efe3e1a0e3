//! `cargo xtask <command>`: the project's workflows.
//!
//! - `plugins`: release builds of the shipped plugins into `target/plugins/<type>.wasm`,
//!   each held to a size budget ([`release::PLUGIN_BUDGET`])
//! - `release`: the release check: the plugins, then the node binaries built
//!   statically (musl) and checked to need no shared library
//! - `demo [--mode thin|thick]`: build everything and replay the seed scenario
//!   on this machine (thick: through the shim and a node daemon)
//! - `test [unit|component|netns|all]`: install what the tests need, then
//!   run one test tier or all of them (see `test.rs`)
//! - `clippy`: clippy with `-D warnings` on every target of the workspace,
//!   then on the SDK and every guest for `wasm32-unknown-unknown`
//! - `bench`: the side-by-side benchmark against the reference plugins
//! - `fuzz`: a time-boxed run of every cargo-fuzz target in `fuzz/`
//!
//! The guests are listed once, in the root `Cargo.toml`
//! (`[workspace.metadata.multus-wasm]`).

mod bench;
mod bench_thick;
mod demo;
mod fuzz;
mod release;
mod test;
mod util;

use std::process::ExitCode;

use util::{Result, Timings, workspace_root};

const USAGE: &str = "usage: cargo xtask <plugins|release|demo|test|clippy|bench|fuzz> [args]";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let outcome = match command.as_str() {
        "plugins" => plugins().map(|_| ()),
        "release" => release::run(&rest),
        "demo" => demo::run(&rest),
        "demo-inner" => demo::inner(&rest),
        "test" => test::run(&rest),
        "clippy" => clippy(&rest),
        "bench" => bench::run(&rest),
        "bench-inner" => bench::inner(&rest),
        "fuzz" => fuzz::run(&rest),
        _ => Err(USAGE.into()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask {command}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Build the shipped plugins (profile `guest`, no WASI) and copy them to
/// `target/plugins/<type>.wasm`; returns (type, path, sha256).
pub fn plugins() -> Result<Vec<(String, std::path::PathBuf, String)>> {
    util::ensure_wasm_targets()?;
    let shipped = util::guests()?.shipped;
    let root = workspace_root();
    let target_dir = root.join("target/wasm-guests");
    let mut command = util::cargo();
    command
        .current_dir(&root)
        .args([
            "build",
            "--profile",
            "guest",
            "--target",
            "wasm32-unknown-unknown",
            "--target-dir",
        ])
        .arg(&target_dir);
    for plugin in &shipped {
        command.args(["-p", &plugin.package]);
    }
    util::run(&mut command)?;
    let out_dir = root.join("target/plugins");
    std::fs::create_dir_all(&out_dir).map_err(|err| format!("{}: {err}", out_dir.display()))?;
    let mut built = Vec::new();
    let mut over_budget = Vec::new();
    for plugin in &shipped {
        let plugin_type = &plugin.plugin_type;
        let source = target_dir.join(format!(
            "wasm32-unknown-unknown/guest/{}.wasm",
            plugin.package.replace('-', "_")
        ));
        let destination = out_dir.join(format!("{plugin_type}.wasm"));
        std::fs::copy(&source, &destination).map_err(|err| {
            format!(
                "copying {} to {}: {err}",
                source.display(),
                destination.display()
            )
        })?;
        let bytes = std::fs::read(&destination).map_err(|err| err.to_string())?;
        let digest = util::sha256_hex(&bytes);
        println!(
            "{plugin_type:>10}  {:>7} bytes (budget {})  sha256 {digest}  {}",
            bytes.len(),
            release::PLUGIN_BUDGET,
            destination.display()
        );
        if bytes.len() as u64 > release::PLUGIN_BUDGET {
            over_budget.push(format!("{plugin_type} ({} bytes)", bytes.len()));
        }
        built.push((plugin_type.to_string(), destination, digest));
    }
    if !over_budget.is_empty() {
        return Err(format!(
            "over the {}-byte plugin budget (one ConfigMap each, which must fit \
             the last-applied annotation of kubectl apply): {}",
            release::PLUGIN_BUDGET,
            over_budget.join(", ")
        ));
    }
    // The plugin manifest `multus-wasm install` reads, and a copy of the set
    // in deploy/base/plugins/ for `kubectl apply -k deploy/` (gitignored).
    let manifest: serde_json::Map<String, serde_json::Value> = built
        .iter()
        .map(|(plugin_type, _, digest)| {
            (
                plugin_type.clone(),
                serde_json::json!({"file": format!("{plugin_type}.wasm"), "sha256": digest}),
            )
        })
        .collect();
    let manifest = serde_json::to_vec_pretty(&manifest).expect("json");
    let deploy_dir = root.join("deploy/base/plugins");
    std::fs::create_dir_all(&deploy_dir)
        .map_err(|err| format!("{}: {err}", deploy_dir.display()))?;
    for dir in [&out_dir, &deploy_dir] {
        std::fs::write(dir.join("plugins.json"), &manifest).map_err(|err| err.to_string())?;
    }
    for (plugin_type, path, _) in &built {
        std::fs::copy(path, deploy_dir.join(format!("{plugin_type}.wasm")))
            .map_err(|err| err.to_string())?;
    }
    Ok(built)
}

/// Clippy with `-D warnings`: every target of every workspace package on
/// the host, then the SDK and every guest for `wasm32-unknown-unknown`.
/// Arguments go to both clippy runs, before the lint flags.
fn clippy(extra: &[String]) -> Result<()> {
    let guests = util::guests()?;
    let root = workspace_root();
    let mut timings = Timings::default();
    let outcome = (|| {
        timings.step("clippy host (workspace, all targets)", || {
            util::run(
                util::cargo()
                    .current_dir(&root)
                    .args(["clippy", "--workspace", "--all-targets", "--locked"])
                    .args(extra)
                    .args(["--", "-D", "warnings"]),
            )
        })?;
        timings.step("clippy wasm (SDK, guests)", || {
            util::ensure_wasm_targets()?;
            let mut command = util::cargo();
            command.current_dir(&root).args([
                "clippy",
                "--locked",
                "--target",
                "wasm32-unknown-unknown",
                "-p",
                "guest-sdk",
            ]);
            for package in guests.packages() {
                command.args(["-p", package]);
            }
            util::run(command.args(extra).args(["--", "-D", "warnings"]))
        })
    })();
    timings.print();
    outcome
}
