//! Compiles the example protos with the vendored protoc; type URLs use the standard
//! `type.googleapis.com` domain (prost's default `/pkg.Msg` is rejected by GoVerse clients).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.enable_type_names();
    config.type_name_domain(["."], "type.googleapis.com");
    config.compile_protos(
        &["proto/counter.proto", "proto/greeter.proto", "proto/chat.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
