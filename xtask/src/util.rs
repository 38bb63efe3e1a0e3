//! Helpers shared by the workflows: commands, toolchain and package checks.

use std::path::PathBuf;
use std::process::Command;

pub type Result<T> = std::result::Result<T, String>;

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
/// /usr/lib/cni), installed with apt when missing.
pub fn ensure_reference_plugins() -> Result<()> {
    let have_ping = std::path::Path::new("/usr/bin/ping").exists()
        || std::path::Path::new("/bin/ping").exists();
    if std::path::Path::new("/usr/lib/cni/macvlan").exists() && have_ping {
        return Ok(());
    }
    if !is_root() {
        return Err("the reference plugins (/usr/lib/cni) or ping are missing and installing them needs root".into());
    }
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "containernetworking-plugins",
            "iproute2",
            "iputils-ping",
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
