//! Compiles the example protos with the vendored protoc; type URLs use the standard
//! `type.googleapis.com` domain (prost's default `/pkg.Msg` is rejected by GoVerse clients).
//! Also writes their `FileDescriptorSet` (`descriptors.bin`), which the object types register
//! so the gateway can call them with protobuf JSON.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.enable_type_names();
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    config.file_descriptor_set_path(out_dir.join("descriptors.bin"));
    config.type_name_domain(["."], "type.googleapis.com");
    // JSON for `verse call` and the docs: protobuf JSON's lowerCamelCase names, absent fields
    // default (the examples have no 64-bit or enum fields whose protobuf JSON differs).
    config.type_attribute(
        ".",
        "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default, rename_all = \"camelCase\")]",
    );
    config.compile_protos(
        &["proto/counter.proto", "proto/greeter.proto", "proto/chat.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
