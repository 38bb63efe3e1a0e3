//! Helpers shared by the workflows: commands, toolchain and package checks.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;

pub type Result<T> = std::result::Result<T, String>;

/// The guests, as the root `Cargo.toml` lists them once
/// (`[workspace.metadata.multus-wasm]`; tests/artifacts/build.rs reads the
/// same lists).
#[derive(Debug, Deserialize)]
pub struct Guests {
    /// The shipped plugins.
    pub shipped: Vec<Shipped>,
    /// Guests only the tests load.
    #[serde(rename = "test-guests")]
    pub test_guests: Vec<TestGuest>,
}

#[derive(Debug, Deserialize)]
pub struct Shipped {
    pub package: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
}

#[derive(Debug, Deserialize)]
pub struct TestGuest {
    pub package: String,
}

impl Guests {
    /// Every guest package, shipped first.
    pub fn packages(&self) -> Vec<&str> {
        self.shipped
            .iter()
            .map(|guest| guest.package.as_str())
            .chain(self.test_guests.iter().map(|guest| guest.package.as_str()))
            .collect()
    }
}

pub fn guests() -> Result<Guests> {
    #[derive(Deserialize)]
    struct Manifest {
        workspace: Workspace,
    }
    #[derive(Deserialize)]
    struct Workspace {
        metadata: Metadata,
    }
    #[derive(Deserialize)]
    struct Metadata {
        #[serde(rename = "multus-wasm")]
        multus_wasm: Guests,
    }
    let path = workspace_root().join("Cargo.toml");
    let text =
        std::fs::read_to_string(&path).map_err(|err| format!("{}: {err}", path.display()))?;
    let manifest: Manifest = basic_toml::from_str(&text).map_err(|err| {
        format!(
            "{}: [workspace.metadata.multus-wasm]: {err}",
            path.display()
        )
    })?;
    Ok(manifest.workspace.metadata.multus_wasm)
}

/// Named steps and how long each took, printed as a table at the end.
#[derive(Debug, Default)]
pub struct Timings {
    steps: Vec<(String, Duration, bool)>,
}

impl Timings {
    /// Run `step`, recording its wall-clock time and whether it passed.
    pub fn step<T>(&mut self, name: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        eprintln!("== {name}");
        let started = Instant::now();
        let outcome = step();
        self.steps
            .push((name.to_string(), started.elapsed(), outcome.is_ok()));
        outcome
    }

    pub fn print(&self) {
        if self.steps.is_empty() {
            return;
        }
        let total: Duration = self.steps.iter().map(|(_, time, _)| *time).sum();
        eprintln!("\nwall-clock time per step:");
        for (name, time, ok) in &self.steps {
            let outcome = if *ok { "" } else { "  FAILED" };
            eprintln!("  {name:<38} {:>7.1}s{outcome}", time.as_secs_f64());
        }
        eprintln!("  {:<38} {:>7.1}s", "total", total.as_secs_f64());
    }
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The cargo that runs us.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Run `command`, echoing it; an error if it fails.
pub fn run(command: &mut Command) -> Result<()> {
    eprintln!("+ {command:?}");
    let status = command
        .status()
        .map_err(|err| format!("failed to start {command:?}: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {status}"))
    }
}

/// Run `command` and return its stdout; an error if it fails.
pub fn output(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .map_err(|err| format!("failed to start {command:?}: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} failed: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub fn is_root() -> bool {
    output(Command::new("id").arg("-u"))
        .map(|uid| uid.trim() == "0")
        .unwrap_or(false)
}

/// Install the wasm targets with rustup when missing.
pub fn ensure_wasm_targets() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    let missing: Vec<&str> = ["wasm32-unknown-unknown", "wasm32-wasip2"]
        .into_iter()
        .filter(|target| !installed.lines().any(|line| line.trim() == *target))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    run(Command::new("rustup")
        .args(["target", "add"])
        .args(&missing))
}

/// The reference plugins (Debian's containernetworking-plugins, in
/// /usr/lib/cni), ping and dnsmasq, installed with apt when missing.
pub fn ensure_reference_plugins() -> Result<()> {
    let have_ping = std::path::Path::new("/usr/bin/ping").exists()
        || std::path::Path::new("/bin/ping").exists();
    // dnsmasq: the DHCP server of the dhcp IPAM tests (`netns_dhcp`).
    let have_dnsmasq = std::path::Path::new("/usr/sbin/dnsmasq").exists();
    if std::path::Path::new("/usr/lib/cni/macvlan").exists() && have_ping && have_dnsmasq {
        return Ok(());
    }
    if !is_root() {
        return Err("the reference plugins (/usr/lib/cni), ping or dnsmasq are missing and installing them needs root".into());
    }
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "containernetworking-plugins",
            "iproute2",
            "iputils-ping",
            // The binary only: the `dnsmasq` package also starts a DNS
            // service on the machine.
            "dnsmasq-base",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Built plugins as arguments for an inner run: `type=path=sha256`.
pub fn plugin_args(plugins: &[(String, PathBuf, String)]) -> Vec<String> {
    plugins
        .iter()
        .map(|(plugin_type, path, digest)| format!("{plugin_type}={}={digest}", path.display()))
        .collect()
}

/// The host config's `wasmPlugins` from [`plugin_args`] arguments.
pub fn wasm_plugins(args: &[String]) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut plugins = serde_json::Map::new();
    for spec in args {
        let mut parts = spec.splitn(3, '=');
        let (Some(plugin_type), Some(path), Some(digest)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("bad plugin argument {spec:?}"));
        };
        plugins.insert(
            plugin_type.into(),
            serde_json::json!({"path": path, "sha256": digest}),
        );
    }
    Ok(plugins)
}

/// Whether an ELF64 little-endian executable is statically linked: it names
/// no ELF interpreter (PT_INTERP) and its dynamic section, if any (a
/// static-pie has one), needs no shared library (DT_NEEDED).
pub fn check_static(elf: &[u8]) -> Result<()> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) || elf.get(4) != Some(&2) {
        return Err("not an ELF64 file".into());
    }
    let read = |at: usize, width: usize| -> Option<usize> {
        let bytes = elf.get(at..at.checked_add(width)?)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0usize, |value, byte| (value << 8) | *byte as usize),
        )
    };
    const PT_DYNAMIC: usize = 2;
    const PT_INTERP: usize = 3;
    const DT_NEEDED: usize = 1;
    let truncated = || "truncated ELF header".to_string();
    let (offset, size, count) = (
        read(0x20, 8).ok_or_else(truncated)?,
        read(0x36, 2).ok_or_else(truncated)?,
        read(0x38, 2).ok_or_else(truncated)?,
    );
    for index in 0..count {
        let header = offset + index * size;
        match read(header, 4).ok_or_else(truncated)? {
            PT_INTERP => {
                return Err("it names an ELF interpreter: dynamically linked".into());
            }
            PT_DYNAMIC => {
                let (start, length) = (
                    read(header + 8, 8).ok_or_else(truncated)?,
                    read(header + 32, 8).ok_or_else(truncated)?,
                );
                for entry in (start..start + length).step_by(16) {
                    if read(entry, 8) == Some(DT_NEEDED) {
                        return Err("it needs shared libraries (DT_NEEDED)".into());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_static;

    #[test]
    fn a_dynamically_linked_executable_is_not_static() {
        // This test binary is linked against the system's libc.
        let elf = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(check_static(&elf).is_err());
    }

    #[test]
    fn an_executable_without_interpreter_or_needed_libraries_is_static() {
        // An ELF64 header with no program headers at all.
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[0x36] = 56;
        assert_eq!(check_static(&elf), Ok(()));
        assert!(check_static(b"#!/bin/sh\n").is_err());
    }
}
