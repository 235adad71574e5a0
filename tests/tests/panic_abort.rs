//! An application built with `panic = "abort"`: the panic is reported once (by the panic hook, not
//! again by the SIGABRT handler), and the process still dies of SIGABRT.
//!
//! The panic strategy is fixed per build, so this test builds the crash app itself with the
//! `panic-abort` profile, in a target directory of its own (`target/panic-abort-build`).

#![allow(clippy::unwrap_used)]

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;

use lastword::report::CrashReport;
use lastword::spool::{FLAG_RAW_SIGNAL, SpoolView};

#[test]
fn panic_abort_app_reports_the_panic_once_and_dies_of_sigabrt() {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = workspace.join("target").join("panic-abort-build");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--profile",
            "panic-abort",
            "-p",
            "lastword-tests",
            "--bin",
            "lastword-crash-app",
        ])
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap();
    assert!(build.success(), "building the crash app with panic = \"abort\" failed");
    let app = target.join("panic-abort").join("lastword-crash-app");

    let dir = tempfile::tempdir().unwrap();
    let without = Command::new(&app).arg("panic-main").env("LASTWORD_OFF", "1").output().unwrap();
    let spool = dir.path().join("spool");
    let with = Command::new(&app)
        .arg("panic-main")
        .env("LASTWORD_SPOOL", &spool)
        .env_remove("LASTWORD_URL")
        .output()
        .unwrap();
    assert_eq!(without.status.signal(), Some(libc::SIGABRT));
    assert_eq!(with.status.signal(), Some(libc::SIGABRT), "{}", String::from_utf8_lossy(&with.stderr));

    let view = SpoolView::open(&spool).unwrap();
    let crashes: Vec<_> = view
        .list()
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == Some(lastword::spool::Kind::Crash))
        .map(|e| view.read(e.id.unwrap()).unwrap())
        .collect();
    assert_eq!(crashes.len(), 1, "the panic, and not a second report for the abort that follows it");
    assert_eq!(crashes[0].header.flags & FLAG_RAW_SIGNAL, 0);
    let report: CrashReport = serde_json::from_slice(&crashes[0].body).unwrap();
    assert_eq!(report.message, "boom in main");
}
