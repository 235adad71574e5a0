//! The library never prints: a crash report the spool refuses is told to the application's
//! diagnostics callback, with its OS cause said once. (`init` runs once per process: this file is
//! its own test binary.)

#![allow(clippy::unwrap_used, reason = "test: a failure is a test failure")]

use std::sync::{Arc, Mutex};

use lastword::spool::{Spool, SpoolOptions};
use lastword::upload::DiagnosticLevel;
use lastword_spool::fsio::Op;
use lastword_spool::fsio::faults;

#[test]
fn a_crash_report_the_spool_refuses_reaches_the_diagnostics_callback() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let said: Arc<Mutex<Vec<(DiagnosticLevel, String)>>> = Arc::default();
    let sink = Arc::clone(&said);
    let config = lastword::Config::new("diagnostics-test")
        .spool(&spool)
        .no_url()
        .signals(false)
        .diagnostics(move |level, message| sink.lock().unwrap().push((level, message.to_owned())));
    // lastword's hook calls the one before it, which would print the panic.
    std::panic::set_hook(Box::new(|_| {}));
    let _guard = lastword::init(config).unwrap();
    // The panic hook stores the report on the panicking thread: its first file creation fails.
    faults::fail(Op::Create, 0, libc::EIO);
    let caught = std::panic::catch_unwind(|| panic!("boom with a broken disk"));
    faults::clear();
    // The default hook again, so that a failed assertion below says why.
    drop(std::panic::take_hook());
    assert!(caught.is_err());
    let said = said.lock().unwrap().clone();
    let (level, message) = said
        .iter()
        .find(|(_, m)| m.contains("could not store the crash report"))
        .unwrap_or_else(|| panic!("the failed store is told: {said:?}"));
    assert_eq!(*level, DiagnosticLevel::Error, "{message}");
    assert_eq!(message.matches("os error 5").count(), 1, "the OS cause once: {message}");
    let stored = Spool::open(&spool, SpoolOptions::default()).unwrap().view().list().unwrap();
    assert!(stored.iter().all(|e| e.kind != Some(lastword::spool::Kind::Crash)), "no crash stored");
}
