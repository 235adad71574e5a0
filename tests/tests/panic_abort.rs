//! An application built with `panic = "abort"`: the panic is reported once (by the panic hook, not
//! again by the SIGABRT handler), and the process still dies of SIGABRT.
//!
//! The panic strategy is fixed per build, so this test builds the crash app itself with the
//! `panic-abort` profile, in a target directory of its own (`target/panic-abort-build`).

#![allow(clippy::unwrap_used)]

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use lastword::report::CrashReport;
use lastword::spool::{FLAG_RAW_SIGNAL, SpoolView};

/// The crash app built with `panic = "abort"`, once per test process.
fn app() -> &'static PathBuf {
    lastword_tests::builds::panic_abort()
}

/// The crash reports in `spool`: (raw signal report?, body).
fn crashes(spool: &Path) -> Vec<(bool, Vec<u8>)> {
    let view = SpoolView::open(spool).unwrap();
    view.list()
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == Some(lastword::spool::Kind::Crash))
        .map(|e| view.read(e.id.unwrap()).unwrap())
        .map(|entry| (entry.header.flags & FLAG_RAW_SIGNAL != 0, entry.body))
        .collect()
}

#[test]
fn panic_abort_app_reports_the_panic_once_and_dies_of_sigabrt() {
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    let without = Command::new(app).arg("panic-main").env("LASTWORD_OFF", "1").output().unwrap();
    let spool = dir.path().join("spool");
    let with = Command::new(app)
        .arg("panic-main")
        .env("LASTWORD_SPOOL", &spool)
        .env_remove("LASTWORD_URL")
        .output()
        .unwrap();
    assert_eq!(without.status.signal(), Some(libc::SIGABRT));
    assert_eq!(with.status.signal(), Some(libc::SIGABRT), "{}", String::from_utf8_lossy(&with.stderr));

    let crashes = crashes(&spool);
    assert_eq!(crashes.len(), 1, "the panic, and not a second report for the abort that follows it");
    assert!(!crashes[0].0, "a panic report, not a signal report");
    let report: CrashReport = serde_json::from_slice(&crashes[0].1).unwrap();
    assert_eq!(report.message, "boom in main");
}

#[test]
fn two_threads_panicking_at_once_give_two_panic_reports_and_no_abort_report() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let out = Command::new(app())
        .arg("two-panics-at-once")
        .env("LASTWORD_SPOOL", &spool)
        .env_remove("LASTWORD_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{}", String::from_utf8_lossy(&out.stderr));
    let crashes = crashes(&spool);
    assert!(
        crashes.iter().all(|(raw, _)| !raw),
        "the abort of \"first\", after \"second\" stored its report, is first's panic"
    );
    let mut messages: Vec<String> = crashes
        .iter()
        .map(|(_, body)| serde_json::from_slice::<CrashReport>(body).unwrap().message)
        .collect();
    messages.sort();
    assert_eq!(messages, ["first", "second"]);
}
