//! Compiles the coordinator protocol (Raft RPC and `CoordinatorService`) with the vendored
//! protoc; type URLs use the standard `type.googleapis.com` domain, and `bytes` fields are
//! `Bytes` so serialised entries are not copied.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    config.enable_type_names();
    config.type_name_domain(["."], "type.googleapis.com");
    config.bytes(["."]);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/coordinator.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
