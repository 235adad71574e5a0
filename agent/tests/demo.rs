//! `lastword demo`, the README's first command: it exits 0 only when every report the example
//! application wrote reached the collector's store once, and says so.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn demo_delivers_every_report_of_the_crashing_app_once() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let out =
        Command::new(env!("CARGO_BIN_EXE_lastword")).arg("demo").arg("--dir").arg(&work).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("killed by SIGSEGV"), "{stdout}");
    assert!(stdout.contains("every report arrived, once."), "{stdout}");
    assert!(
        stdout.contains("demo_app::write_through_a_null_pointer"),
        "the signal crash is symbolized: {stdout}"
    );
    assert!(stdout.contains("an order has three words"), "the panic in the thread: {stdout}");
    assert!(stdout.contains("app demo-app"), "the store names the application from the report: {stdout}");
    assert!(stdout.contains("stored 1 time(s)") && !stdout.contains("stored 0 time(s)"), "{stdout}");
    // The spool and the store are left for the user to look at.
    assert!(work.join("spool").is_dir() && work.join("store").is_dir());
}
