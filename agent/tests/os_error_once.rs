//! An error's OS cause is said once in the one line the binary prints: an error whose message holds
//! its cause does not also give it as its `source()`, which the binary's chain would print again
//! ("Not a directory (os error 20): Not a directory (os error 20)").
//!
//! The tests run as root, which every directory lets in: a file where a directory is expected makes
//! the OS refuse, for any user.

#![allow(clippy::unwrap_used, reason = "test: a failure is a test failure")]

use std::process::Command;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_lastword")
}

/// Runs the binary, expecting it to fail at once; its stderr.
fn failure(args: &[&str]) -> String {
    let out = Command::new(binary())
        .args(args)
        .env("LASTWORD_TOKENS", "t")
        .env_remove("LASTWORD_SPOOL")
        .env_remove("LASTWORD_URL")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    err
}

fn assert_said_once(err: &str, cause: &str) {
    let last = err.lines().last().unwrap_or_default();
    assert_eq!(last.matches(cause).count(), 1, "the cause once: {last}");
    assert_eq!(last.matches("(os error").count(), 1, "one OS error: {last}");
}

#[test]
fn a_store_where_a_file_is_says_not_a_directory_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let store = file.join("store");
    let err = failure(&["collect", "--listen", "127.0.0.1:0", "--store", store.to_str().unwrap()]);
    assert!(err.contains("cannot open the store"), "{err}");
    assert_said_once(&err, "Not a directory (os error 20)");
}

#[test]
fn a_spool_where_a_file_is_says_not_a_directory_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let spool = file.join("spool");
    let spool = spool.to_str().unwrap();
    let err =
        failure(&["drain", "--create", "--spool", spool, "--url", "ws://127.0.0.1:9/ingest", "--token", "t"]);
    assert!(err.contains("cannot open the spool"), "{err}");
    assert_said_once(&err, "Not a directory (os error 20)");
}

#[test]
fn a_missing_token_file_says_its_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-token-file");
    let store = dir.path().join("store");
    let err = failure(&[
        "collect",
        "--listen",
        "127.0.0.1:0",
        "--store",
        store.to_str().unwrap(),
        "--token-file",
        missing.to_str().unwrap(),
    ]);
    assert!(err.contains("cannot read the token file"), "{err}");
    assert_said_once(&err, "No such file or directory (os error 2)");
}
