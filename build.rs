// Bake libtorch's directory into the run path of the premem binary and its tests, so
// they start without LD_LIBRARY_PATH (LIBTORCH comes from .cargo/config.toml).
// Record the git revision for run records and reports.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}/lib");
    }
    for path in [".git/HEAD", ".git/refs/heads"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    // Set from outside where there is no .git (the container build passes
    // its GIT_REVISION build argument).
    println!("cargo:rerun-if-env-changed=PREMEM_GIT_REVISION");
    let given = std::env::var("PREMEM_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty());
    let revision = given.unwrap_or_else(|| {
        std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    });
    println!("cargo:rustc-env=PREMEM_GIT_REVISION={revision}");
}
