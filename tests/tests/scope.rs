//! A crash carries the scope of its time: a panic its thread's block, a fatal signal the
//! process-wide scope (read by the signal handler without a lock). Real crashing children (the
//! crash app), their spool prepared as the sidecar prepares it.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use lastword::report::CrashReport;
use lastword::spool::{Kind, SpoolView};

const APP: &str = env!("CARGO_BIN_EXE_lastword-crash-app");

/// Runs the crash app's `case`, which crashes; returns its crash report as it will be uploaded.
fn crash_report(case: &str, spool: &Path) -> CrashReport {
    let out =
        Command::new(APP).arg(case).env("LASTWORD_SPOOL", spool).env_remove("LASTWORD_URL").output().unwrap();
    assert!(!out.status.success(), "{case} crashes");
    let view = SpoolView::open(spool).unwrap();
    let item = view.list().unwrap().into_iter().find(|e| e.kind == Some(Kind::Crash)).unwrap();
    let entry = view.read(item.id.unwrap()).unwrap();
    lastword::symbolize::readable(entry.header.flags, &entry.body).unwrap()
}

fn assert_process_scope(report: &CrashReport) {
    let scope = &report.scope;
    assert_eq!(scope.tags.get("region").map(String::as_str), Some("eu-west-1"), "{scope:?}");
    let user = scope.user.as_ref().unwrap();
    assert_eq!(
        (user.id.as_deref(), user.name.as_deref(), user.ip.as_deref()),
        (Some("42"), Some("ann"), Some("192.0.2.7"))
    );
    assert_eq!(scope.extra["build"]["sha"], "abc123");
    assert_eq!(report.context.environment.as_deref(), Some("canary"), "the scope's environment wins");
}

#[test]
fn a_fatal_signal_report_carries_the_process_wide_scope() {
    let dir = tempfile::tempdir().unwrap();
    let report = crash_report("segv-with-scope", &dir.path().join("spool"));
    assert_eq!(report.kind, "signal");
    assert_process_scope(&report);
    assert_eq!(report.scope.tags.get("block"), None, "a thread's block is not the process-wide scope");
}

#[test]
fn a_panic_report_carries_its_threads_scope() {
    let dir = tempfile::tempdir().unwrap();
    let report = crash_report("panic-with-scope", &dir.path().join("spool"));
    assert_eq!(report.kind, "panic");
    assert_process_scope(&report);
    assert_eq!(report.scope.tags.get("block").map(String::as_str), Some("panicking-thread"));
}
