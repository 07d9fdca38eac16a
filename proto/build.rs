//! Generates the tonic client and server of `premem.proto` with the protoc
//! binary vendored by `protoc-bin-vendored` (no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    println!("cargo:rerun-if-changed=premem.proto");
    tonic_prost_build::configure().compile_protos(&["premem.proto"], &["."])?;
    Ok(())
}
