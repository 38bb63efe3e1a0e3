//! Generate the pod-resources client and server from proto/ with a pure-Rust
//! protobuf compiler (protox): no `protoc` needed to build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/podresources.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .server_mod_attribute("v1", r#"#[cfg(feature = "server")]"#)
        .compile_fds(descriptors)?;
    Ok(())
}
