//! The `multus-wasm` binary: a CNI plugin when `CNI_COMMAND` is set, a CLI
//! for plugin authors and operators otherwise.

fn main() {
    let code = if std::env::var_os("CNI_COMMAND").is_some() {
        multus_wasm::cni_plugin::main()
    } else {
        multus_wasm::cli::main()
    };
    std::process::exit(code);
}
