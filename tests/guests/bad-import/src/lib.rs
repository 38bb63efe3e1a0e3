//! A delegate that imports `test:bad-import/spawn`, which no host provides:
//! the host must refuse to load it, naming the import.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "wit", world: "bad-import", generate_all });

use exports::multus_wasm::plugin::delegate::{Guest, Plan, PluginError, Request};

struct BadImport;

impl Guest for BadImport {
    fn cni_versions() -> Vec<String> {
        vec!["1.0.0".into()]
    }
    fn handle(request: Request) -> Result<Plan, PluginError> {
        let output = test::bad_import::spawn::run(&request.config);
        Err(PluginError {
            code: 999,
            msg: output,
            details: String::new(),
        })
    }
}

export!(BadImport);
