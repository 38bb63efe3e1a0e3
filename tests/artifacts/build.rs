//! Build the guests with a nested cargo, as wasmtime's test-programs do.
//!
//! The guests are the ones the workspace lists once, in the root
//! `Cargo.toml`'s `[workspace.metadata.multus-wasm]` (`shipped` and
//! `test-guests`; `wasip2 = true` also builds one for `wasm32-wasip2`).
//!
//! The nested cargo gets its own target directory (sharing the outer one
//! deadlocks `cargo test`) and none of the variables the outer cargo or
//! clippy set for rustc, so a guest warning cannot break the outer build.
//!
//! It then generates the components that attack the sandbox's per-call caps
//! (see [`GENERATED`]): the hostile guest with many extra core instances
//! appended, so each still loads as a delegate.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use wasm_encoder::{
    BlockType, CodeSection, ComponentSection, Encode, Function, FunctionSection, InstanceSection,
    Instruction, MemArg, MemorySection, MemoryType, Module, ModuleArg, ModuleSection, RefType,
    StartSection, TableSection, TableType, TypeSection, ValType,
};

/// The parts of the root `Cargo.toml` read here.
#[derive(Deserialize)]
struct RootManifest {
    workspace: Workspace,
}

#[derive(Deserialize)]
struct Workspace {
    members: Vec<String>,
    metadata: WorkspaceMetadata,
}

#[derive(Deserialize)]
struct WorkspaceMetadata {
    #[serde(rename = "multus-wasm")]
    multus_wasm: GuestLists,
}

#[derive(Deserialize)]
struct GuestLists {
    shipped: Vec<Guest>,
    #[serde(rename = "test-guests")]
    test_guests: Vec<Guest>,
}

#[derive(Deserialize)]
struct Guest {
    package: String,
    /// Also built for wasm32-wasip2.
    #[serde(default)]
    wasip2: bool,
}

#[derive(Deserialize)]
struct MemberManifest {
    package: Option<MemberPackage>,
}

#[derive(Deserialize)]
struct MemberPackage {
    name: String,
}

/// Every guest of the root manifest's lists, and the files whose changes
/// must rebuild them: the manifest and lockfile, the cargo config (the
/// guests' linker flags), the SDK and each guest's package directory.
fn guests(workspace: &Path) -> (Vec<Guest>, Vec<PathBuf>) {
    let manifest_path = workspace.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest_path).unwrap();
    let manifest: RootManifest = basic_toml::from_str(&text)
        .unwrap_or_else(|err| panic!("{}: {err}", manifest_path.display()));
    let lists = manifest.workspace.metadata.multus_wasm;
    let guests: Vec<Guest> = lists.shipped.into_iter().chain(lists.test_guests).collect();
    let mut inputs: Vec<PathBuf> = [
        manifest_path,
        workspace.join("Cargo.lock"),
        workspace.join(".cargo"),
        workspace.join("guest-sdk"),
    ]
    .into_iter()
    .filter(|path| path.exists())
    .collect();
    for guest in &guests {
        let member = manifest
            .workspace
            .members
            .iter()
            .map(|member| workspace.join(member))
            .find(|dir| {
                let path = dir.join("Cargo.toml");
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
                let member: MemberManifest = basic_toml::from_str(&text)
                    .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
                member
                    .package
                    .is_some_and(|package| package.name == guest.package)
            })
            .unwrap_or_else(|| {
                panic!(
                    "guest {} (Cargo.toml, [workspace.metadata.multus-wasm]) is not a workspace member",
                    guest.package
                )
            });
        inputs.push(member);
    }
    (guests, inputs)
}

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.join("../..").canonicalize().unwrap();
    let (guests, inputs) = guests(&workspace);
    for input in &inputs {
        rerun_for(input);
    }
    let target_dir = workspace.join("target/wasm-guests");

    build(
        &workspace,
        &target_dir,
        "wasm32-unknown-unknown",
        guests.iter().map(|guest| guest.package.as_str()),
    );
    build(
        &workspace,
        &target_dir,
        "wasm32-wasip2",
        guests
            .iter()
            .filter(|guest| guest.wasip2)
            .map(|guest| guest.package.as_str()),
    );

    let mut out = String::new();
    for Guest { package, wasip2 } in &guests {
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
    generate(&target_dir, &mut out);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    std::fs::write(out_dir.join("artifacts.rs"), out).unwrap();
}

/// A core module appended to the hostile guest, and how many times it is
/// instantiated when the component is.
struct Extra {
    /// Pages (64 KiB) of its one memory, if it has one.
    memory_pages: Option<u64>,
    /// Whether its start function writes a byte to every 4 KiB of that
    /// memory, so that each instance really costs its size in RSS.
    touch: bool,
    /// Tables it defines, and the elements of each.
    tables: u32,
    table_elements: u64,
    instances: u32,
}

/// The generated components: (constant, what is appended to the hostile
/// guest). With the host's defaults (32 MiB, 64 instances, 16 memories, 64
/// tables, 100000 table elements), each one goes over exactly one cap.
const GENERATED: &[(&str, Extra)] = &[
    // 150 instances of 32 MiB, every page touched: 4.8 GB if only each
    // memory were capped.
    (
        "MANY_BIG_MEMORIES",
        Extra {
            memory_pages: Some(512),
            touch: true,
            tables: 0,
            table_elements: 0,
            instances: 150,
        },
    ),
    (
        "MANY_INSTANCES",
        Extra {
            memory_pages: None,
            touch: false,
            tables: 0,
            table_elements: 0,
            instances: 150,
        },
    ),
    (
        "MANY_MEMORIES",
        Extra {
            memory_pages: Some(1),
            touch: false,
            tables: 0,
            table_elements: 0,
            instances: 40,
        },
    ),
    (
        "MANY_TABLES",
        Extra {
            memory_pages: None,
            touch: false,
            tables: 2,
            table_elements: 1,
            instances: 40,
        },
    ),
    (
        "BIG_TABLES",
        Extra {
            memory_pages: None,
            touch: false,
            tables: 1,
            table_elements: 60_000,
            instances: 2,
        },
    ),
];

fn generate(target_dir: &Path, out: &mut String) {
    let hostile = target_dir.join("wasm32-unknown-unknown/guest/hostile.wasm");
    let base = std::fs::read(&hostile).unwrap();
    let dir = target_dir.join("generated");
    std::fs::create_dir_all(&dir).unwrap();
    for (constant, extra) in GENERATED {
        let path = dir.join(format!(
            "{}.wasm",
            constant.to_lowercase().replace('_', "-")
        ));
        std::fs::write(
            &path,
            with_instances(&base, &extra_module(extra), extra.instances),
        )
        .unwrap();
        writeln!(
            out,
            "pub const {constant}: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
    }
}

fn extra_module(extra: &Extra) -> Module {
    let mut module = Module::new();
    if extra.touch {
        let mut types = TypeSection::new();
        let none: [ValType; 0] = [];
        types.ty().function(none, none);
        module.section(&types);
        let mut functions = FunctionSection::new();
        functions.function(0);
        module.section(&functions);
    }
    if extra.tables > 0 {
        let mut tables = TableSection::new();
        for _ in 0..extra.tables {
            tables.table(TableType {
                element_type: RefType::FUNCREF,
                table64: false,
                minimum: extra.table_elements,
                maximum: None,
                shared: false,
            });
        }
        module.section(&tables);
    }
    if let Some(pages) = extra.memory_pages {
        let mut memories = MemorySection::new();
        memories.memory(MemoryType {
            minimum: pages,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        module.section(&memories);
    }
    if extra.touch {
        let bytes = i32::try_from(extra.memory_pages.unwrap() * 65536).unwrap();
        module.section(&StartSection { function_index: 0 });
        // for (i = 0; i < bytes; i += 4096) memory[i] = 1
        let mut touch = Function::new([(1, ValType::I32)]);
        for instruction in [
            Instruction::Loop(BlockType::Empty),
            Instruction::LocalGet(0),
            Instruction::I32Const(1),
            Instruction::I32Store8(MemArg {
                offset: 0,
                align: 0,
                memory_index: 0,
            }),
            Instruction::LocalGet(0),
            Instruction::I32Const(4096),
            Instruction::I32Add,
            Instruction::LocalTee(0),
            Instruction::I32Const(bytes),
            Instruction::I32LtU,
            Instruction::BrIf(0),
            Instruction::End,
            Instruction::End,
        ] {
            touch.instruction(&instruction);
        }
        let mut code = CodeSection::new();
        code.function(&touch);
        module.section(&code);
    }
    module
}

/// `component` with `module` appended and instantiated `count` times (core
/// instance sections may follow the exports; they run at instantiation).
fn with_instances(component: &[u8], module: &Module, count: u32) -> Vec<u8> {
    let module_index = core_modules(component);
    let mut bytes = component.to_vec();
    let section = ModuleSection(module);
    bytes.push(section.id());
    section.encode(&mut bytes);
    let mut instances = InstanceSection::new();
    for _ in 0..count {
        instances.instantiate(module_index, Vec::<(&str, ModuleArg)>::new());
    }
    bytes.push(instances.id());
    instances.encode(&mut bytes);
    bytes
}

/// How many core modules a component's top level defines (wit-component
/// defines each in its own core module section and never aliases one).
fn core_modules(component: &[u8]) -> u32 {
    assert!(
        component.starts_with(b"\0asm\x0d\x00\x01\x00"),
        "not a component"
    );
    let mut at = 8;
    let mut count = 0;
    while at < component.len() {
        let id = component[at];
        at += 1;
        let mut size = 0usize;
        let mut shift = 0;
        loop {
            let byte = component[at];
            at += 1;
            size |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        if id == 1 {
            count += 1;
        }
        at += size;
    }
    assert_eq!(at, component.len(), "truncated component");
    count
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
