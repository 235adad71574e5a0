//! The crash app in other build profiles than the test's own, for the tests of frames and grouping
//! and of `panic = "abort"`.
//!
//! Building inside `cargo test` costs CI minutes, so the app is built once per profile, and the other
//! debug-info variants are derived from the release binary with binutils' `strip`, which is what they
//! are: the same code with less debug information.
//!
//! | variant | made by | debug information |
//! |---|---|---|
//! | [`Variant::Dev`] | the test's own build (`CARGO_BIN_EXE_…`) | full DWARF |
//! | [`Variant::LineTables`] | `cargo build --release` (this workspace's release profile) | `debug = "line-tables-only"` |
//! | [`Variant::Symbols`] | `strip --strip-debug` of the release binary, in `symbols-only/` | symbol table only (cargo's default release) |
//! | [`Variant::Stripped`] | `strip --strip-all` of the release binary, in `stripped/` | none |
//!
//! The nested builds run [`cargo`] without the variables `cargo test` sets for the test process
//! (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, ...): they differ between the test packages, and build
//! scripts watch some of them (ring's watches these two), so each package's tests rebuilt ring and
//! everything above it in the release profile where another package's tests had built it (77 s on
//! a 2-core machine, in every CI run).
//!
//! [`debug_file`] is the stripped build's separate debug file (`objcopy --only-keep-debug` of the
//! release binary): what a deployment keeps of a stripped build, and uploads to its collector.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One build of the crash app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Dev,
    LineTables,
    Symbols,
    Stripped,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Variant::Dev, Variant::LineTables, Variant::Symbols, Variant::Stripped];
}

/// The workspace root, canonical (so that paths compare equal to what the crashed process saw).
fn workspace() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

/// `cargo` (the one running the tests) without what `cargo test` set for this test process: the
/// `CARGO_PKG_*`, `CARGO_MANIFEST_*` and `CARGO_BIN_EXE_*` variables and the crate's own, which
/// would reach the build scripts that watch them and rebuild what another test package's nested
/// build (or the outer build) made. The user's own settings (`CARGO_HOME`, `CARGO_BUILD_*`,
/// `RUSTFLAGS`, ...) are kept as the outer build had them.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let name_s = name.to_string_lossy();
        let set_by_cargo_test =
            ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_EXE_"].iter().any(|p| name_s.starts_with(p))
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                ]
                .contains(&name_s.as_ref());
        if set_by_cargo_test {
            command.env_remove(&name);
        }
    }
    command
}

/// Runs `cargo build` for the crash app with `profile` into `target_dir`; returns the binary.
fn cargo_build(profile: &str, target_dir: &Path) -> PathBuf {
    let status = cargo()
        .args([
            "build",
            "--quiet",
            "--profile",
            profile,
            "-p",
            "lastword-tests",
            "--bin",
            "lastword-crash-app",
        ])
        .current_dir(workspace())
        .env("CARGO_TARGET_DIR", target_dir)
        .status()
        .unwrap();
    assert!(status.success(), "building the crash app with the {profile} profile failed");
    let dir = if profile == "dev" { "debug" } else { profile };
    target_dir.join(dir).join("lastword-crash-app")
}

/// The crash app built with the release profile (line tables only), once per test process, in the
/// workspace's own target directory (the `lastword demo` of CI builds release there too).
pub fn release() -> &'static PathBuf {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    APP.get_or_init(|| cargo_build("release", &workspace().join("target")))
}

/// The crash app built with `panic = "abort"` (the `panic-abort` profile), in a target directory of
/// its own, shared with tests/tests/panic_abort.rs.
pub fn panic_abort() -> &'static PathBuf {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    APP.get_or_init(|| cargo_build("panic-abort", &workspace().join("target").join("panic-abort-build")))
}

/// The binary of `variant`; `dev` is the test's own build of the app. The stripped variants are made
/// once per test process, beside the release binary.
pub fn app(variant: Variant, dev: &str) -> PathBuf {
    static SYMBOLS: OnceLock<PathBuf> = OnceLock::new();
    static STRIPPED: OnceLock<PathBuf> = OnceLock::new();
    // Under the same file name as the release binary, in a directory of their own: a deployed binary
    // keeps its name whatever was stripped from it (and the app's crate is told by that name).
    let strip = |flag: &str, dir: &str| {
        let release = release();
        let dir = release.with_file_name(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(release.file_name().unwrap());
        let status = Command::new("strip").arg(flag).arg(release).arg("-o").arg(&out).status().unwrap();
        assert!(status.success(), "strip {flag} failed");
        out
    };
    match variant {
        Variant::Dev => PathBuf::from(dev),
        Variant::LineTables => release().clone(),
        Variant::Symbols => SYMBOLS.get_or_init(|| strip("--strip-debug", "symbols-only")).clone(),
        Variant::Stripped => STRIPPED.get_or_init(|| strip("--strip-all", "stripped")).clone(),
    }
}

/// The separate debug file of [`Variant::Stripped`]: `objcopy --only-keep-debug` of the release binary
/// (its symbol table, line tables and build id note; no code), made once per test process.
pub fn debug_file() -> PathBuf {
    static DEBUG: OnceLock<PathBuf> = OnceLock::new();
    DEBUG.get_or_init(|| keep_debug(release())).clone()
}

/// `objcopy --only-keep-debug` of `binary`, in `debug-files/` beside it.
fn keep_debug(binary: &Path) -> PathBuf {
    let dir = binary.with_file_name("debug-files");
    std::fs::create_dir_all(&dir).unwrap();
    let name = binary.file_name().unwrap().to_string_lossy();
    let out = dir.join(format!("{name}.debug"));
    let status = Command::new("objcopy").arg("--only-keep-debug").arg(binary).arg(&out).status().unwrap();
    assert!(status.success(), "objcopy --only-keep-debug failed");
    out
}

/// The crash app built with the dev profile (full DWARF of it and every dependency: a debug file of
/// about 100 MB), stripped, and its separate debug file: (stripped binary, debug file). Built once
/// per process in the workspace's target directory, for the benchmark of loading a large debug file.
pub fn dev_stripped_and_debug_file() -> (PathBuf, PathBuf) {
    static BOTH: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BOTH.get_or_init(|| {
        let dev = cargo_build("dev", &workspace().join("target"));
        let debug = keep_debug(&dev);
        let dir = dev.with_file_name("stripped-dev");
        std::fs::create_dir_all(&dir).unwrap();
        let stripped = dir.join(dev.file_name().unwrap());
        let status =
            Command::new("strip").arg("--strip-all").arg(&dev).arg("-o").arg(&stripped).status().unwrap();
        assert!(status.success(), "strip --strip-all failed");
        (stripped, debug)
    })
    .clone()
}
