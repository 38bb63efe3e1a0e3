//! A delegate exporting `multus-wasm:plugin/delegate@0.9.0`: the host must
//! refuse it as an unknown ABI version before calling anything.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "wit", world: "delegate-plugin" });

use exports::multus_wasm::plugin::delegate::{Guest, Plan, Request};

struct Future;

impl Guest for Future {
    fn handle(request: Request) -> Result<Plan, String> {
        Ok(Plan {
            ops: vec![request.config],
        })
    }
}

export!(Future);
