//! Reading a component's ABI: which plugin interface (and version) it
//! exports and what it imports, checked against what this host provides.

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Component;

use super::SandboxError;

/// The plugin ABI versions this host runs: any 0.1.x and any 0.2.x (the
/// component model linker matches imports and exports of one minor version
/// semver-compatibly).
pub const ABI_VERSION_REQ: &str = "0.1.x or 0.2.x";
const PACKAGE: &str = "multus-wasm:plugin";

/// A plugin ABI this host runs: the frozen 0.1.0, or the current 0.2.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Abi {
    #[serde(rename = "0.1")]
    V0_1,
    #[serde(rename = "0.2")]
    V0_2,
}

/// Which world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum World {
    Delegate,
    Ipam,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            World::Delegate => "delegate",
            World::Ipam => "ipam",
        })
    }
}

/// What a component declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AbiInfo {
    pub world: World,
    /// The ABI version of the exported interface (`0.2.0`).
    pub version: String,
    /// Which of the host's ABIs that is.
    pub abi: Abi,
    /// The exported interface's full name.
    pub export: String,
    /// Every import's full name.
    pub imports: Vec<String>,
    /// Whether it imports WASI (a `wasm32-wasip2` build).
    pub uses_wasi: bool,
}

/// Why a component is refused, before the plugin's name is attached.
#[derive(Debug)]
pub(super) enum AbiProblem {
    Unsupported { export: String },
    NoPluginExport,
    UnknownImport { import: String, world: World },
}

impl AbiProblem {
    pub(super) fn into_error(self, plugin: &str, digest: &str) -> SandboxError {
        let plugin = plugin.to_string();
        let digest = digest.to_string();
        match self {
            AbiProblem::Unsupported { export } => SandboxError::UnsupportedAbi {
                plugin,
                digest,
                export,
            },
            AbiProblem::NoPluginExport => SandboxError::NoPluginExport { plugin, digest },
            AbiProblem::UnknownImport { import, world } => SandboxError::UnknownImport {
                plugin,
                digest,
                import,
                world,
            },
        }
    }
}

/// True for a component binary (`\0asm` with the component layer), false for
/// a core module, a precompiled artifact or anything else.
pub fn looks_like_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [0x01, 0x00]
}

/// Split `ns:pkg/iface@1.2.3` into (`ns:pkg/iface`, `1.2.3`).
fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((base, version)) => (base, Some(version)),
        None => (name, None),
    }
}

fn supported_version(version: Option<&str>) -> Option<Abi> {
    let mut parts = version?.split('.');
    match (parts.next(), parts.next()) {
        (Some("0"), Some("1")) => Some(Abi::V0_1),
        (Some("0"), Some("2")) => Some(Abi::V0_2),
        _ => None,
    }
}

/// The interfaces of our package each world may import.
fn allowed_interfaces(world: World) -> &'static [&'static str] {
    match world {
        World::Delegate => &["types", "log", "links"],
        World::Ipam => &["types", "log", "links", "ipam-store", "node-files"],
    }
}

pub(super) fn inspect(engine: &Engine, component: &Component) -> Result<AbiInfo, AbiProblem> {
    let component_type = component.component_type();
    let mut found: Option<(World, String, String, Abi)> = None;
    let mut unsupported: Option<String> = None;
    for (name, _) in component_type.exports(engine) {
        let (base, version) = split_version(name);
        let world = match base
            .strip_prefix(PACKAGE)
            .and_then(|rest| rest.strip_prefix('/'))
        {
            Some("delegate") => World::Delegate,
            Some("ipam") => World::Ipam,
            _ if base.starts_with(PACKAGE) => {
                unsupported.get_or_insert_with(|| name.to_string());
                continue;
            }
            _ => continue,
        };
        if let Some(abi) = supported_version(version) {
            found = Some((
                world,
                version.unwrap_or_default().to_string(),
                name.to_string(),
                abi,
            ));
        } else {
            unsupported.get_or_insert_with(|| name.to_string());
        }
    }
    let (world, version, export, abi) = match (found, unsupported) {
        (Some(found), _) => found,
        (None, Some(export)) => return Err(AbiProblem::Unsupported { export }),
        (None, None) => return Err(AbiProblem::NoPluginExport),
    };
    let mut imports = Vec::new();
    let mut uses_wasi = false;
    for (name, _) in component_type.imports(engine) {
        imports.push(name.to_string());
        let (base, import_version) = split_version(name);
        if base.starts_with("wasi:") {
            uses_wasi = true;
            continue;
        }
        let interface = base
            .strip_prefix(PACKAGE)
            .and_then(|rest| rest.strip_prefix('/'));
        // Imports of the export's own ABI version only: the host links one
        // version's interfaces for a plugin.
        let allowed = interface
            .is_some_and(|interface| allowed_interfaces(world).contains(&interface))
            && supported_version(import_version) == Some(abi);
        if !allowed {
            return Err(AbiProblem::UnknownImport {
                import: name.to_string(),
                world,
            });
        }
    }
    Ok(AbiInfo {
        world,
        version,
        abi,
        export,
        imports,
        uses_wasi,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_0_1_and_0_2_versions_are_supported() {
        assert_eq!(supported_version(Some("0.1.0")), Some(Abi::V0_1));
        assert_eq!(supported_version(Some("0.1.7")), Some(Abi::V0_1));
        assert_eq!(supported_version(Some("0.2.0")), Some(Abi::V0_2));
        assert_eq!(supported_version(Some("0.9.0")), None);
        assert_eq!(supported_version(Some("1.1.0")), None);
        assert_eq!(supported_version(None), None);
    }

    #[test]
    fn component_magic_is_told_from_core_modules() {
        assert!(looks_like_component(b"\0asm\x0d\x00\x01\x00rest"));
        assert!(!looks_like_component(b"\0asm\x01\x00\x00\x00rest"));
        assert!(!looks_like_component(b"\x7fELF\x02\x01\x01\x00"));
        assert!(!looks_like_component(b"\0asm"));
    }
}
