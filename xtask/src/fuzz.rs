//! `cargo xtask fuzz [--seconds N] [TARGET...]`: a time-boxed run of every
//! cargo-fuzz target in `fuzz/`, failing on any crash.
//!
//! The targets are built with the stable toolchain and `--sanitizer none`
//! (the sanitizers need nightly's `-Zsanitizer`; the code under test is
//! safe Rust, so libFuzzer's coverage-guided search and the targets' own
//! assertions are what finds bugs). cargo-fuzz is installed from crates.io
//! when missing.
//!
//! Each target starts from the checked-in seeds (`fuzz/corpus/<target>/`,
//! read only) plus a working corpus in `fuzz/target/fuzz-corpus/<target>/`
//! that keeps what earlier runs found, with the shared dictionary
//! `fuzz/cni.dict` (JSON syntax and every key the parsers know). A crash
//! leaves its input in `fuzz/artifacts/<target>/`; reproduce it with
//! `cargo fuzz run --fuzz-dir fuzz --sanitizer none <target> <artifact>`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::util::{self, Result, workspace_root};

/// The default time each target runs, in seconds.
const DEFAULT_SECONDS: u64 = 20;

/// The cargo-fuzz release this workflow was written against.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// A single input taking longer than this (seconds) counts as a hang.
const INPUT_TIMEOUT_SECONDS: u64 = 10;

const USAGE: &str = "usage: cargo xtask fuzz [--seconds N] [TARGET...]";

pub fn run(args: &[String]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut wanted: Vec<String> = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().ok_or(USAGE)?;
                seconds = value
                    .parse()
                    .ok()
                    .filter(|seconds| *seconds > 0)
                    .ok_or_else(|| format!("--seconds {value:?}: expected a positive integer"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other if other.starts_with('-') => {
                return Err(format!("unknown option {other}: {USAGE}"));
            }
            target => wanted.push(target.to_string()),
        }
    }

    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    ensure_cargo_fuzz()?;
    let targets = list_targets(&fuzz_dir)?;
    if let Some(unknown) = wanted.iter().find(|target| !targets.contains(target)) {
        return Err(format!(
            "no fuzz target {unknown:?} (targets: {})",
            targets.join(", ")
        ));
    }
    let targets: Vec<String> = if wanted.is_empty() { targets } else { wanted };

    let started = Instant::now();
    // The seeds still reach the parsers' success paths and pass every body.
    util::run(fuzz_command(&fuzz_dir).arg("test"))?;
    // One build for every target (a no-op when nothing changed).
    util::run(cargo_fuzz(&fuzz_dir).args(["build", "--sanitizer", "none"]))?;
    let built = started.elapsed();

    let mut failed = Vec::new();
    for target in &targets {
        let working = fuzz_dir.join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&working).map_err(|err| format!("{}: {err}", working.display()))?;
        let seeds = fuzz_dir.join("corpus").join(target);
        let mut command = cargo_fuzz(&fuzz_dir);
        command
            .args(["run", "--sanitizer", "none", target])
            .arg(&working)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
            .arg(format!("-dict={}", fuzz_dir.join("cni.dict").display()))
            .arg("-print_final_stats=1");
        eprintln!("fuzzing {target} for {seconds}s");
        if let Err(err) = util::run(&mut command) {
            eprintln!("{err}");
            failed.push(target.clone());
        }
    }

    eprintln!(
        "fuzz: {} target(s), {seconds}s each; build and seed tests {:.0}s, total {:.0}s",
        targets.len(),
        built.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        return Ok(());
    }
    Err(format!(
        "crash or failed assertion in {}: inputs in {} (reproduce with `cargo fuzz run --fuzz-dir fuzz --sanitizer none <target> <file>`)",
        failed.join(", "),
        fuzz_dir.join("artifacts").display()
    ))
}

/// cargo for the fuzz project: its own target directory, whatever the
/// caller's environment says.
fn fuzz_command(fuzz_dir: &Path) -> Command {
    let mut command = util::cargo();
    command
        .current_dir(fuzz_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR");
    command
}

/// `cargo fuzz` with the fuzz project named explicitly.
fn cargo_fuzz(fuzz_dir: &Path) -> Command {
    let mut command = fuzz_command(fuzz_dir);
    command.arg("fuzz");
    command
}

/// Installs cargo-fuzz from crates.io when `cargo fuzz` is not available.
fn ensure_cargo_fuzz() -> Result<()> {
    if util::output(util::cargo().args(["fuzz", "--version"])).is_ok() {
        return Ok(());
    }
    util::run(util::cargo().args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
}

fn list_targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let listed = util::output(cargo_fuzz(fuzz_dir).arg("list"))?;
    let targets: Vec<String> = listed
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect();
    if targets.is_empty() {
        return Err(format!("no fuzz targets in {}", fuzz_dir.display()));
    }
    Ok(targets)
}
