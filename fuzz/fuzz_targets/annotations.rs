#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| multus_wasm_fuzz::targets::annotations(data));
