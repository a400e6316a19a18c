//! Nothing to generate: this build script exists so that `protoc-bin-vendored` (a build
//! dependency) is downloaded, which the `PROTOC` shim in `tools/protoc` needs to build
//! etcd-client on a fresh machine.

fn main() {
    // Fails the build early with a clear message if the vendored protoc is missing.
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("protoc-bin-vendored ships protoc");
    assert!(protoc.exists(), "vendored protoc missing at {}", protoc.display());
    println!("cargo:rerun-if-changed=build.rs");
}
