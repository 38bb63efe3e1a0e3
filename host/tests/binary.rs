//! The binary answers the CNI `VERSION` command with every supported
//! version.
//!
//! The integration suites live in the `multus-wasm-tests` package (tests/)
//! and exec `target/<profile>/multus-wasm`; this test is here so that cargo
//! builds that binary whenever the host's tests are built (`cargo test
//! --workspace`): cargo builds a package's binaries for its integration
//! tests, and sets `CARGO_BIN_EXE_<name>` only for them.

use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn version_lists_every_supported_version() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_multus-wasm"))
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run multus-wasm");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(br#"{"cniVersion": "1.0.0"}"#)
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait for multus-wasm");
    assert!(
        output.status.success(),
        "VERSION failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("VERSION prints JSON");
    assert_eq!(answer["cniVersion"], "1.0.0");
    assert_eq!(
        answer["supportedVersions"],
        serde_json::json!(multus_wasm_core::cni::SUPPORTED_VERSIONS)
    );
}
