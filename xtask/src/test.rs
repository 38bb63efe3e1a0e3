//! `cargo xtask test [unit|component|netns|all] [-- ARGS...]`: the test
//! tiers, one at a time (default `all`).
//!
//! - `unit`: every package's own tests (`--lib`, `--bins`, doc tests) for
//!   the host, its core crate, the guest SDK, the guests (natively) and
//!   xtask, and the shim's tests (against a stand-in daemon socket). Builds
//!   no guest and needs no root.
//! - `component`: the suites that load built guests and exec the binary but
//!   create no network namespace: sandbox, cli, install, deploy, sdk_docs,
//!   apiserver_fake (root only for the few tests that run the binary as
//!   another user or with fewer capabilities, through setpriv).
//! - `netns`: the suites that create network namespaces (root):
//!   netns_macvlan, netns_dhcp, differential, meta, reliability, security,
//!   thick, devices, tuning.
//! - `all`: unit, component, netns, then a bounded fuzz run.
//!
//! The component and netns tiers first build the binary and every suite
//! once (`cargo build -p multus-wasm -p multus-wasm-shim`, `cargo test -p multus-wasm-tests
//! --no-run`, which also builds the guests), so the tiers only run them.
//! ARGS go to every `cargo test` a tier runs: a test-name filter, or
//! `-- --nocapture` for the test harness.

use crate::util::{self, Result, Timings, workspace_root};

const USAGE: &str = "usage: cargo xtask test [unit|component|netns|all] [-- CARGO_TEST_ARGS...]";

/// The package holding the integration suites.
const SUITES_PACKAGE: &str = "multus-wasm-tests";

/// Suites that need built guests but no network namespace.
const COMPONENT_SUITES: &[&str] = &[
    "sandbox",
    "cli",
    "install",
    "deploy",
    "sdk_docs",
    "apiserver_fake",
];

/// Suites that need root and network namespaces.
const NETNS_SUITES: &[&str] = &[
    "netns_macvlan",
    "netns_dhcp",
    "differential",
    "meta",
    "reliability",
    "security",
    "thick",
    "devices",
    "tuning",
];

/// Library packages whose docs hold code examples (doc tests).
const DOC_TESTED: &[&str] = &["guest-sdk"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tier {
    Unit,
    Component,
    Netns,
    All,
}

pub fn run(args: &[String]) -> Result<()> {
    let (tier, extra) = parse(args)?;
    let mut timings = Timings::default();
    let outcome = run_tier(tier, &extra, &mut timings);
    timings.print();
    outcome
}

fn parse(args: &[String]) -> Result<(Tier, Vec<String>)> {
    let (ours, extra) = match args.iter().position(|arg| arg == "--") {
        Some(at) => (&args[..at], args[at + 1..].to_vec()),
        None => (args, Vec::new()),
    };
    let tier = match ours {
        [] => Tier::All,
        [tier] => match tier.as_str() {
            "unit" => Tier::Unit,
            "component" => Tier::Component,
            "netns" => Tier::Netns,
            "all" => Tier::All,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown tier {other:?}: {USAGE}")),
        },
        _ => return Err(format!("one tier at most, then `--`: {USAGE}")),
    };
    Ok((tier, extra))
}

fn run_tier(tier: Tier, extra: &[String], timings: &mut Timings) -> Result<()> {
    if matches!(tier, Tier::Netns | Tier::All) {
        // Before any build: the netns tier cannot run without it.
        require_root()?;
    }
    if tier != Tier::Unit {
        util::ensure_wasm_targets()?;
    }
    if matches!(tier, Tier::Netns | Tier::All) {
        util::ensure_reference_plugins()?;
    }
    if matches!(tier, Tier::Unit | Tier::All) {
        unit(extra, timings)?;
    }
    if tier == Tier::Unit {
        return Ok(());
    }
    build(timings)?;
    if matches!(tier, Tier::Component | Tier::All) {
        timings.step("test component", || suites(COMPONENT_SUITES, extra))?;
    }
    if matches!(tier, Tier::Netns | Tier::All) {
        timings.step("test netns", || suites(NETNS_SUITES, extra))?;
    }
    if tier == Tier::All {
        // A bounded fuzzing run of the parsers (annotations, netconf,
        // results, CNI env), 10 s per target.
        timings.step("fuzz (10 s per target)", || {
            crate::fuzz::run(&["--seconds".into(), "10".into()])
        })?;
    }
    Ok(())
}

fn require_root() -> Result<()> {
    if util::is_root() {
        return Ok(());
    }
    Err(
        "the netns tier creates network namespaces and veths (CAP_NET_ADMIN, CAP_SYS_ADMIN): \
         run it as root, or run `cargo xtask test unit` / `cargo xtask test component`"
            .into(),
    )
}

/// `cargo test --locked` at the workspace root.
fn cargo_test() -> std::process::Command {
    let mut command = util::cargo();
    command
        .current_dir(workspace_root())
        .args(["test", "--locked"]);
    command
}

/// Each package's own tests. One cargo per group, so that each group's
/// dependencies keep the features that group's own build gives them (the
/// host's are the ones `cargo build -p multus-wasm` builds, and are reused
/// by the tiers after this one) instead of a union that rebuilds them.
fn unit(extra: &[String], timings: &mut Timings) -> Result<()> {
    let guests = util::guests()?;
    timings.step("test unit: host, core, pod-resources client", || {
        util::run(
            cargo_test()
                .args([
                    "-p",
                    "multus-wasm",
                    "-p",
                    "multus-wasm-core",
                    "-p",
                    "multus-wasm-podresources",
                    "--lib",
                    "--bins",
                ])
                .args(extra),
        )
    })?;
    timings.step("test unit: guest-sdk, guests", || {
        let mut command = cargo_test();
        command.args(["-p", "guest-sdk"]);
        for package in guests.packages() {
            command.args(["-p", package]);
        }
        util::run(command.args(["--lib", "--bins"]).args(extra))?;
        let mut doc = cargo_test();
        for package in DOC_TESTED {
            doc.args(["-p", package]);
        }
        util::run(doc.arg("--doc").args(extra))
    })?;
    timings.step("test unit: shim", || {
        util::run(cargo_test().args(["-p", "multus-wasm-shim"]).args(extra))
    })?;
    timings.step("test unit: xtask", || {
        util::run(cargo_test().args(["-p", "xtask", "--bins"]).args(extra))
    })
}

/// The binaries the suites exec (host and shim), then every suite (and so
/// every guest), once.
fn build(timings: &mut Timings) -> Result<()> {
    timings.step("build binaries", || {
        util::run(util::cargo().current_dir(workspace_root()).args([
            "build",
            "--locked",
            "-p",
            "multus-wasm",
            "-p",
            "multus-wasm-shim",
        ]))
    })?;
    timings.step("build suites and guests", || {
        util::run(cargo_test().args(["-p", SUITES_PACKAGE, "--no-run"]))
    })
}

fn suites(names: &[&str], extra: &[String]) -> Result<()> {
    let mut command = cargo_test();
    command.args(["-p", SUITES_PACKAGE]);
    for name in names {
        command.args(["--test", name]);
    }
    util::run(command.args(extra))
}
