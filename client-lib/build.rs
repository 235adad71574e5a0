//! Decides whether the interposer of `src/signal/interpose.rs` (`pthread_create`, `sigaction`) is
//! built: the cfg `lastword_interposer`, for dynamically linked glibc targets with the `interpose`
//! feature on and no sanitizer. A sanitizer's runtime (linked statically by rustc) has interceptors
//! of its own for both functions that the interposer cannot find, and bypassing them breaks the
//! sanitizer; `cfg(sanitize)` is not available on stable Rust, hence this script
//! (`CARGO_CFG_SANITIZE` is set by cargo whenever `-Zsanitizer=...` is in the flags).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(lastword_interposer)");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let wanted = std::env::var_os("CARGO_FEATURE_INTERPOSE").is_some();
    let dynamic_glibc = var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && !var("CARGO_CFG_TARGET_FEATURE").split(',').any(|f| f == "crt-static");
    let sanitized = !var("CARGO_CFG_SANITIZE").is_empty();
    if wanted && dynamic_glibc && !sanitized {
        println!("cargo::rustc-cfg=lastword_interposer");
    }
}
