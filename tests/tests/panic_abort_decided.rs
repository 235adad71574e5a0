//! With `panic = "abort"`, a panic that the hook decided not to store (dropped by `before_send`, or
//! beyond the crash-loop limit) is handled: the abort that follows it is not reported in its place.

#![allow(clippy::unwrap_used)]

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};

use lastword::spool::{Kind, SpoolView};
use lastword_tests::builds::panic_abort;

fn run(spool: &Path, case: &str, env: &[(&str, &str)]) -> Output {
    Command::new(panic_abort())
        .arg(case)
        .envs(env.iter().copied())
        .env("LASTWORD_SPOOL", spool)
        .env_remove("LASTWORD_URL")
        .output()
        .unwrap()
}

/// The crash entries in `spool`: (header flags, body).
fn crashes(spool: &Path) -> Vec<(u16, String)> {
    let view = SpoolView::open(spool).unwrap();
    view.list()
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == Some(Kind::Crash))
        .map(|e| view.read(e.id.unwrap()).unwrap())
        .map(|e| (e.header.flags, String::from_utf8_lossy(&e.body).into_owned()))
        .collect()
}

#[test]
fn a_panic_dropped_by_before_send_does_not_come_back_as_an_abort_report() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let out = run(&spool, "panic-drop-me", &[("CRASH_APP_SCRUB", "1")]);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{}", String::from_utf8_lossy(&out.stderr));
    let flags: Vec<u16> = crashes(&spool).iter().map(|(flags, _)| *flags).collect();
    assert_eq!(
        flags, [0u16; 0],
        "dropped means dropped: no report of the abort either (flags of the entries)"
    );
}

#[test]
fn a_panic_beyond_the_crash_loop_limit_does_not_come_back_as_an_abort_report() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    for _ in 0..3 {
        let out = run(&spool, "panic-main", &[("CRASH_APP_LOOP_LIMIT", "1")]);
        assert_eq!(out.status.signal(), Some(libc::SIGABRT));
    }
    let crashes = crashes(&spool);
    let flags: Vec<u16> = crashes.iter().map(|(flags, _)| *flags).collect();
    assert_eq!(flags.len(), 1, "the first panic only (flags of the entries: {flags:?})");
    assert!(crashes[0].1.contains("boom in main"));
}
