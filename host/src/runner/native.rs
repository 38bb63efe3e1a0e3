//! Native plugins: a CNI plugin binary from `binDir` (or `CNI_PATH`),
//! exec'd with the CNI protocol, as libcni does. This is how the cluster
//! network (ptp, calico, ...) and any plugin without a wasm one runs, when
//! the operator allows it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::cni::{CniCommand, CniError, CniResult, CniVersion, format_cni_args};

/// Where and how to exec one plugin.
#[derive(Debug, Clone)]
pub struct ExecContext<'a> {
    /// Directories searched in order for the plugin binary.
    pub bin_dirs: &'a [PathBuf],
    pub container_id: &'a str,
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a [(String, String)],
}

/// Set in the environment of every plugin we exec. A multus-wasm started
/// with it refuses to act: whatever path led a delegate back to this binary
/// (a copy under another name, a wrapper script), its stdin is a NAD's
/// config, never a host config.
pub const NESTED_ENV: &str = "MULTUS_WASM_NESTED";

/// Refuse the meta-plugins' own type names (ours and Multus's): as a
/// delegate, a meta-plugin takes the NAD's JSON as its whole host config.
pub fn refuse_meta_plugin(plugin_type: &str) -> Result<(), CniError> {
    let own_name = std::env::current_exe().ok().and_then(|exe| {
        exe.file_name()
            .map(|name| name.to_string_lossy().into_owned())
    });
    if crate::config::META_PLUGIN_NAMES.contains(&plugin_type)
        || own_name.as_deref() == Some(plugin_type)
    {
        return Err(meta_refusal(plugin_type));
    }
    Ok(())
}

/// Refuse `binary` when it is this very executable (under any name).
pub fn refuse_self(plugin_type: &str, binary: &Path) -> Result<(), CniError> {
    use std::os::unix::fs::MetadataExt;
    let same_file =
        |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
    if let (Ok(exe), Ok(candidate)) = (
        std::fs::metadata("/proc/self/exe"),
        std::fs::metadata(binary),
    ) && same_file(&exe, &candidate)
    {
        return Err(meta_refusal(plugin_type));
    }
    Ok(())
}

fn meta_refusal(plugin_type: &str) -> CniError {
    CniError::invalid_network_config(format!(
        "plugin type {plugin_type:?} is a meta-plugin (multus-wasm or Multus): it never runs as a delegate"
    ))
}

/// Find the binary for plugin type `plugin_type`.
pub fn find_plugin(plugin_type: &str, bin_dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    if plugin_type.is_empty() || plugin_type.contains('/') || plugin_type.starts_with('.') {
        return Err(CniError::invalid_network_config(format!(
            "invalid plugin name {plugin_type:?}"
        )));
    }
    for dir in bin_dirs {
        let candidate = dir.join(plugin_type);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(CniError::invalid_network_config(format!(
        "failed to find plugin {plugin_type:?} in path {:?}",
        bin_dirs
    )))
}

/// Exec `binary` for `command` with `config` on stdin. ADD returns the
/// result (parsed in the config's version); other commands return `None`.
/// A plugin's error JSON comes back as that error; a plugin that fails
/// without one gets its stderr in the message.
pub fn exec_plugin(
    binary: &Path,
    command: CniCommand,
    config: &Value,
    context: &ExecContext<'_>,
) -> Result<Option<CniResult>, CniError> {
    let _span = crate::timing::span("exec-delegate");
    let stdin = serde_json::to_vec(config).map_err(|err| {
        CniError::internal(format!("encoding config for {}: {err}", binary.display()))
    })?;
    let cni_path = std::env::join_paths(context.bin_dirs)
        .map(|path| path.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut child = Command::new(binary)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        )
        .env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", context.container_id)
        .env("CNI_NETNS", context.netns)
        .env("CNI_IFNAME", context.ifname)
        .env("CNI_ARGS", format_cni_args(context.args))
        .env("CNI_PATH", cni_path)
        .env(NESTED_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| {
            CniError::io_failure(format!("failed to exec {}: {err}", binary.display()))
        })?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits without reading stdin closes the pipe: not our error.
        let _ = input.write_all(&stdin);
    }
    let output = child
        .wait_with_output()
        .map_err(|err| CniError::io_failure(format!("waiting for {}: {err}", binary.display())))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.trim().is_empty() {
        tracing::debug!(plugin = %binary.display(), stderr = %stderr.trim(), "delegate stderr");
    }
    if !output.status.success() {
        if let Some(error) = CniError::from_json(&output.stdout) {
            // Its own code and details, and which plugin said it.
            let name = binary
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Err(CniError {
                msg: format!("plugin {name}: {}", error.msg),
                ..error
            });
        }
        let detail = if stderr.trim().is_empty() {
            format!("{}", output.status)
        } else {
            stderr.trim().to_string()
        };
        return Err(CniError::internal(format!(
            "netplugin {} failed: {detail}",
            binary.display()
        )));
    }
    if command != CniCommand::Add {
        return Ok(None);
    }
    let version = CniVersion::from_config(config)?;
    CniResult::parse(&output.stdout, version)
        .map(Some)
        .map_err(|err| CniError {
            msg: format!("the result of {}: {}", binary.display(), err.msg),
            ..err
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_cannot_name_a_path() {
        for name in ["../macvlan", "/bin/sh", "", ".hidden"] {
            assert_eq!(find_plugin(name, &[]).unwrap_err().code, 7, "{name}");
        }
    }

    #[test]
    fn meta_plugins_are_refused_by_name_and_by_identity() {
        for name in ["multus-wasm", "multus", "multus-shim", "multus-wasm-shim"] {
            let err = refuse_meta_plugin(name).unwrap_err();
            assert_eq!(err.code, 7, "{name}");
            assert!(err.msg.contains("meta-plugin"), "{err}");
        }
        refuse_meta_plugin("macvlan").unwrap();
        // The test binary itself, under whatever name it is found.
        let me = std::env::current_exe().unwrap();
        assert_eq!(refuse_self("innocent", &me).unwrap_err().code, 7);
        refuse_self("sh", Path::new("/bin/sh")).unwrap();
    }

    #[test]
    fn a_missing_plugin_names_the_search_path() {
        let err = find_plugin("nonexistent-plugin", &[PathBuf::from("/nonexistent")]).unwrap_err();
        assert!(err.msg.contains("nonexistent-plugin"), "{err}");
        assert!(err.msg.contains("/nonexistent"), "{err}");
    }
}
