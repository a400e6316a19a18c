//! Compiles `gate.proto` (GoVerse's client protocol) with the vendored protoc; type URLs use the
//! standard `type.googleapis.com` domain, so the first `Register` item packs as
//! `type.googleapis.com/gate.RegisterResponse`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    config.enable_type_names();
    config.type_name_domain(["."], "type.googleapis.com");
    // Requests that do not decode are INVALID_ARGUMENT (the protocol's "malformed input"),
    // not tonic's default INTERNAL: `grpc::GateCodec`.
    tonic_prost_build::configure().codec_path("crate::grpc::GateCodec").compile_with_config(
        config,
        &["proto/gate.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
