//! `cargo xtask release`: what ships, built as it ships and checked.
//!
//! 1. The plugins (`cargo xtask plugins`), each held to [`PLUGIN_BUDGET`]:
//!    one plugin is one ConfigMap, which with the last-applied annotation
//!    `kubectl apply` adds (the object again, base64 inside JSON) must stay
//!    under the API's 256 KiB annotation limit.
//! 2. The node binaries (`multus-wasm`, `multus-wasm-shim`) for
//!    [`STATIC_TARGET`]: statically linked, so the binary the DaemonSet
//!    copies onto the host runs whatever libc the node has (RHEL 8, Ubuntu
//!    20.04, Amazon Linux 2 ship a glibc older than the build machine's).
//!    Each must name no ELF interpreter and need no shared library; the
//!    static `multus-wasm` then verifies the built plugins, so the binary is
//!    known to run. `deploy/Dockerfile` builds the same way.

use std::process::Command;

use crate::util::{self, Result, workspace_root};

/// The node binaries' target: musl, linked statically.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

/// The largest plugin a release ships (180 KiB): its ConfigMap, base64 in
/// JSON and again in the last-applied annotation, stays under 256 KiB.
pub const PLUGIN_BUDGET: u64 = 180 * 1024;

/// The binaries the DaemonSet installs on the node.
const NODE_BINARIES: [&str; 2] = ["multus-wasm", "multus-wasm-shim"];

pub fn run(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        return Err("usage: cargo xtask release".into());
    }
    let plugins = crate::plugins()?;
    ensure_static_toolchain()?;
    let root = workspace_root();
    let mut build = util::cargo();
    build
        .current_dir(&root)
        .args(["build", "--release", "--locked", "--target", STATIC_TARGET]);
    for binary in NODE_BINARIES {
        build.args(["-p", binary]);
    }
    util::run(&mut build)?;
    // Where cargo put them: CARGO_TARGET_DIR when set, else target/.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let out = target_dir.join(STATIC_TARGET).join("release");
    for binary in NODE_BINARIES {
        let path = out.join(binary);
        let elf = std::fs::read(&path).map_err(|err| format!("{}: {err}", path.display()))?;
        util::check_static(&elf).map_err(|err| format!("{}: {err}", path.display()))?;
        println!(
            "{binary:>17}  {:>9} bytes  statically linked  {}",
            elf.len(),
            path.display()
        );
    }
    // The static binary runs here: it verifies every shipped plugin
    // against the manifest (digest, ABI, world).
    let plugin_dir = plugins
        .first()
        .and_then(|(_, path, _)| path.parent())
        .ok_or("no plugin was built")?;
    util::run(
        Command::new(out.join("multus-wasm"))
            .args(["plugin", "verify"])
            .arg(plugin_dir),
    )
    .map_err(|err| format!("the static multus-wasm cannot verify the plugins: {err}"))?;
    println!("release check passed: plugins within budget, node binaries static");
    Ok(())
}

/// The musl target, and musl-gcc for the C parts of dependencies.
fn ensure_static_toolchain() -> Result<()> {
    util::run(Command::new("rustup").args(["target", "add", STATIC_TARGET]))?;
    if util::output(Command::new("sh").args(["-c", "command -v musl-gcc"])).is_ok() {
        return Ok(());
    }
    if !util::is_root() {
        return Err("musl-gcc is missing (Debian: apt-get install musl-tools), and installing it needs root".into());
    }
    util::run(Command::new("apt-get").arg("update"))?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "musl-tools"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
