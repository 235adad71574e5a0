//! A panic's report is durable before anything slow happens: the hook stores the raw capture
//! (addresses, modules, message, location, thread, breadcrumbs, context) and symbolization comes
//! later, when the report is prepared for upload.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lastword::report::CrashReport;
use lastword::spool::{FLAG_JSON, FLAG_UNSYMBOLIZED, Kind, Spool, SpoolOptions, SpoolView};
use lastword::upload::Prepared;

const APP: &str = env!("CARGO_BIN_EXE_lastword-crash-app");

/// The bodies of the crash entries in `spool`, as JSON.
fn crash_bodies(spool: &Path) -> Vec<serde_json::Value> {
    let Ok(view) = SpoolView::open(spool) else { return Vec::new() };
    view.list()
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == Some(Kind::Crash))
        .map(|e| serde_json::from_slice(&view.read(e.id.unwrap()).unwrap().body).unwrap())
        .collect()
}

#[test]
fn a_panic_report_is_durable_before_a_supervisor_kills_the_process_half_a_second_later() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut child = Command::new(APP)
        .arg("panic-thread-then-wait")
        .env("LASTWORD_SPOOL", &spool)
        .env_remove("LASTWORD_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "panic started");
    // The supervisor's grace: hundreds of times a durable write, on a loaded machine too; half of
    // what a debug build's symbolization takes (about a second, measured).
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let bodies = crash_bodies(&spool);
    assert_eq!(bodies.len(), 1, "the report was stored before the kill");
    assert_eq!(bodies[0]["message"], "boom before a kill");
    assert_eq!(bodies[0]["thread"]["name"], "worker");
}

#[test]
fn the_hook_stores_addresses_and_modules_and_leaves_names_to_later() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let out = Command::new(APP)
        .arg("panic-main")
        .env("LASTWORD_SPOOL", &spool)
        .env_remove("LASTWORD_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(101));
    let bodies = crash_bodies(&spool);
    assert_eq!(bodies.len(), 1);
    let body = &bodies[0];
    let frames = body["frames"].as_array().unwrap();
    assert!(frames.len() > 3, "{body:#}");
    assert!(frames.iter().all(|f| f.get("function").is_none_or(serde_json::Value::is_null)), "{body:#}");
    let modules = body["modules"].as_array().expect("the modules the frames are in");
    assert!(!modules.is_empty());
}

#[test]
fn the_first_preparation_symbolizes_the_capture_and_records_it_in_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let out = Command::new(APP)
        .arg("panic-main")
        .env("LASTWORD_SPOOL", &spool_dir)
        .env_remove("LASTWORD_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(101));
    let spool = Spool::open(&spool_dir, SpoolOptions::default()).unwrap();
    let mut claim = spool.claim().unwrap().expect("the crash, first in claim order");
    assert_eq!(claim.kind(), Kind::Crash);
    assert_eq!(
        claim.flags(),
        FLAG_UNSYMBOLIZED | FLAG_JSON,
        "stored as the raw capture, JSON as serde made it"
    );
    let prepare = lastword::prepare_for_upload(&spool_dir);
    let Prepared::Send(body) = prepare(&mut claim).unwrap() else { panic!("a panic is sent") };
    let report: CrashReport = serde_json::from_slice(&body).unwrap();
    assert!(report.symbolized);
    assert!(
        report.frames[0].function.as_deref().is_some_and(|f| f.ends_with("crash_app::main")),
        "{:#?}",
        report.frames
    );
    claim.release().unwrap();
    // A resend finds the prepared report in the entry: nothing is symbolized or decided again, and
    // the body, serde's, goes unparsed.
    let again = spool.claim().unwrap().unwrap();
    assert_eq!((again.flags(), again.body()), (FLAG_JSON, &body[..]));
}
