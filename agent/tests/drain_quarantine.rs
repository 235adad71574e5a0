//! `lastword drain` counts in its summary what the spool quarantined while the uploader claimed it
//! (issue 18, "the drain summary counts what it quarantined"): a truncated entry in `ready/` is moved
//! to `quarantine/` by `Spool::claim`, and the summary line says so.

#![allow(clippy::unwrap_used, reason = "a test: a failure here is a test failure")]

mod common;

use std::process::{Command, Stdio};

use common::{Collector, TOKEN, binary};
use lastword_spool::{EntryState, Kind, Spool, SpoolOptions, SpoolView};

#[test]
fn drain_summary_counts_an_entry_the_spool_quarantined_at_claim() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let spool = Spool::open(&spool_dir, SpoolOptions::default()).unwrap();
    spool.write(Kind::Log, br#"{"type":"logs","records":[]}"#).unwrap();
    let bad = spool.write(Kind::Crash, br#"{"message":"this entry is cut short below"}"#).unwrap();
    drop(spool);
    // Cut the second entry short: its name still says its length, its bytes do not have it.
    let ready = spool_dir.join("ready");
    let bad_file = std::fs::read_dir(&ready)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().contains(&bad.to_string()))
        .expect("the entry to damage is in ready/");
    let bytes = std::fs::read(&bad_file).unwrap();
    std::fs::write(&bad_file, &bytes[..bytes.len() - 10]).unwrap();

    let store = dir.path().join("store");
    let collector = Collector::start(&store, &[]);
    let out = Command::new(binary())
        .args(["drain", "--deadline", "30s", "--app", "drain-test", "--url", &collector.url])
        .arg("--spool")
        .arg(&spool_dir)
        .env("LASTWORD_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    let listed = SpoolView::open(&spool_dir).unwrap().list().unwrap();
    let quarantined: Vec<_> = listed.iter().filter(|l| l.state == EntryState::Quarantined).collect();
    assert_eq!(quarantined.len(), 1, "the truncated entry is quarantined: {listed:?}");
    assert!(listed.iter().all(|l| l.state == EntryState::Quarantined), "nothing else is left: {listed:?}");
    let summary = stderr.lines().find(|l| l.starts_with("lastword: delivered")).unwrap_or_else(|| {
        panic!("a summary line in: {stderr}");
    });
    assert!(summary.contains("delivered 1 "), "the good entry is delivered: {summary}");
    assert!(summary.contains("quarantined 1,"), "the quarantined entry is counted: {summary}");
}
