// Bake libtorch's directory into the run path of this crate's test binaries, so
// they start without LD_LIBRARY_PATH (LIBTORCH comes from .cargo/config.toml).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}/lib");
    }
}
