//! `--store` with a URL of a scheme the collector does not speak (`sqlite://`, `mysql://`) is a
//! configuration error (exit 1, one line) that names the two forms it takes and never shows the URL's
//! password, never a directory named `sqlite:` made in the working directory (issue 17).

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lastword");

/// `lastword args` in `dir`, with no LASTWORD_* setting from the test's environment but the tokens;
/// killed (and the test failed) if it runs longer than a refusal could take on a loaded machine.
fn lastword_in(dir: &std::path::Path, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).current_dir(dir).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LASTWORD_") {
            command.env_remove(name);
        }
    }
    command.env("LASTWORD_TOKENS", "a-token").stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("lastword {args:?} was not refused: it ran: {:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_store_url_of_an_unknown_scheme_is_refused_and_makes_no_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [&[&str]; 3] = [
        &["collect", "--listen", "127.0.0.1:0", "--store", "sqlite:///var/lib/lastword"],
        &["collect", "--listen", "127.0.0.1:0", "--store", "mysql://user:secret@db/lastword"],
        &["store", "groups", "--store", "sqlite://store"],
    ];
    for args in cases {
        let out = lastword_in(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.contains("unknown scheme"), "{args:?}: {stderr}");
        assert!(stderr.contains("postgres://"), "{args:?}: names what it takes: {stderr}");
        assert!(!stderr.contains("secret"), "{args:?}: a password is never printed: {stderr}");
        let made: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(made.is_empty(), "{args:?}: nothing made in the working directory: {made:?}");
    }
}

#[test]
fn a_directory_whose_name_has_a_colon_is_still_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = lastword_in(dir.path(), &["store", "groups", "--store", "backup:2026"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Not a URL: read as a directory, which is not there.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("backup:2026"), "{stderr}");
}
