//! The examples in client-lib/examples, run as the README tells users to run them.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lastword::report::{CrashReport, LogBatch};
use lastword::spool::{Kind, SpoolView};

/// `cargo test` builds the package's examples next to the test binaries: target/<profile>/examples.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} is missing: cargo test builds the examples first", path.display());
    path
}

fn bodies(spool: &Path, kind: Kind) -> Vec<Vec<u8>> {
    let view = SpoolView::open(spool).unwrap();
    view.list()
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == Some(kind))
        .map(|e| view.read(e.id.unwrap()).unwrap().body)
        .collect()
}

#[test]
fn cli_example_counts_then_reports_its_panic_and_logs() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let ok = Command::new(example("cli"))
        .arg("2")
        .env("LASTWORD_SPOOL", &spool)
        .env_remove("LASTWORD_URL")
        .output()
        .unwrap();
    assert!(ok.status.success());
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "1\n2\n");
    let crash = Command::new(example("cli"))
        .arg("3")
        .env("LASTWORD_SPOOL", &spool)
        .env_remove("LASTWORD_URL")
        .output()
        .unwrap();
    assert_eq!(crash.status.code(), Some(101));
    assert!(String::from_utf8_lossy(&crash.stderr).contains("[WARN] 3 is too many"), "console logging stays");
    let crashes = bodies(&spool, Kind::Crash);
    assert_eq!(crashes.len(), 1);
    let report: CrashReport = serde_json::from_slice(&crashes[0]).unwrap();
    assert_eq!(report.message, "cannot count past 2 (asked for 3)");
    assert!(report.breadcrumbs.iter().any(|b| b.message == "3 is too many"));
    let logs: Vec<LogBatch> =
        bodies(&spool, Kind::Log).iter().map(|b| serde_json::from_slice(b).unwrap()).collect();
    assert!(logs.iter().flat_map(|b| &b.records).any(|r| r.message == "3 is too many"), "Warn is stored");
}

#[test]
fn tokio_service_example_reports_the_task_panic_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut child = Command::new(example("tokio_service"))
        .env("LASTWORD_SPOOL", &spool)
        .env_remove("LASTWORD_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success(), "a graceful shutdown on SIGTERM");
    let crashes = bodies(&spool, Kind::Crash);
    assert_eq!(crashes.len(), 1);
    let report: CrashReport = serde_json::from_slice(&crashes[0]).unwrap();
    assert_eq!(report.message, "request handler bug");
    assert!(
        report
            .breadcrumbs
            .iter()
            .any(|b| b.message.contains("malformed request") && b.message.contains("request=17"))
    );
    let logs: Vec<LogBatch> =
        bodies(&spool, Kind::Log).iter().map(|b| serde_json::from_slice(b).unwrap()).collect();
    assert!(logs.iter().flat_map(|b| &b.records).any(|r| r.message.contains("a request handler panicked")));
}

#[test]
fn spool_only_example_writes_to_the_spool_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("app-spool");
    let out = Command::new(example("spool_only")).arg(&spool).env_remove("LASTWORD_URL").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(bodies(&spool, Kind::Log).len(), 1);
}
