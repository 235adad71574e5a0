//! `lastword drain` counts in its summary what the spool quarantined while the uploader claimed it
//! (issue 18, "the drain summary counts what it quarantined"): a truncated entry in `ready/` is moved
//! to `quarantine/` by `Spool::claim`, and the summary line says so. And a body flagged `FLAG_JSON`
//! that is not JSON (the flag lets the uploader send it unparsed, issue 21) costs one connection,
//! which the collector closes with 1007, and is then quarantined with the parser's reason.

#![allow(clippy::unwrap_used, reason = "a test: a failure here is a test failure")]

mod common;

use common::{Collector, sidecar_drain, stored_ids};
use lastword_spool::{EntryState, FLAG_JSON, Kind, Spool, SpoolOptions, SpoolView};

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
    let (code, stderr) = sidecar_drain(&spool_dir, &collector, "drain-test", "60s");
    assert_eq!(code, Some(0), "{stderr}");

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

#[test]
fn a_body_whose_json_flag_lies_costs_one_connection_and_is_quarantined_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let spool = Spool::open(&spool_dir, SpoolOptions::default()).unwrap();
    let mut good = std::collections::HashSet::new();
    for i in 0..3 {
        good.insert(spool.write_flagged(Kind::Log, FLAG_JSON, format!(r#"{{"n":{i}}}"#).as_bytes()).unwrap());
    }
    // A writer's bug: flagged as JSON, cut short. Sent unparsed, it makes a message that is not JSON.
    let liar = spool.write_flagged(Kind::Log, FLAG_JSON, br#"{"message":"cut"#).unwrap();
    for i in 3..6 {
        good.insert(spool.write_flagged(Kind::Log, FLAG_JSON, format!(r#"{{"n":{i}}}"#).as_bytes()).unwrap());
    }
    drop(spool);

    let store = dir.path().join("store");
    let collector = Collector::start(&store, &[]);
    let (code, stderr) = sidecar_drain(&spool_dir, &collector, "drain-test", "60s");
    assert_eq!(code, Some(0), "the drain ends, everything settled: {stderr}");
    assert!(
        stderr.contains("every report body is checked"),
        "the uploader says it checks from then on: {stderr}"
    );

    let listed = SpoolView::open(&spool_dir).unwrap().list().unwrap();
    let quarantined: Vec<_> = listed.iter().filter(|l| l.state == EntryState::Quarantined).collect();
    assert_eq!(quarantined.len(), 1, "only the liar is quarantined: {listed:?}");
    assert_eq!(quarantined[0].id, Some(liar));
    assert!(listed.iter().all(|l| l.state == EntryState::Quarantined), "nothing else is left: {listed:?}");
    let reason = std::fs::read_dir(spool_dir.join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".reason"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .expect("a reason file beside the quarantined entry");
    assert!(reason.contains("not JSON"), "the reason is the parser's: {reason}");
    let summary = stderr.lines().find(|l| l.starts_with("lastword: delivered")).unwrap_or_else(|| {
        panic!("a summary line in: {stderr}");
    });
    assert!(summary.contains("delivered 6 "), "the others are delivered: {summary}");
    assert!(summary.contains("quarantined 1,"), "{summary}");
    drop(collector);
    let stored = stored_ids(&store);
    assert_eq!(stored, good, "the store holds the six good reports and not the liar");
}
