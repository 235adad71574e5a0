//! The crash-loop limit and `before_send` are decided once per report, when it is first prepared, and
//! that decision holds on every resend; the crash-loop hour is the crash's own; the count of crashes
//! the limit suppressed is kept in the spool, since its creation.
//!
//! The crashes are real (the crash app); the uploader is the sidecar's (`prepare_for_upload`), in this
//! process.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lastword::report::CrashReport;
use lastword::spool::{
    EntryId, EntryName, FLAG_RAW_SIGNAL, HEADER_LEN, Header, Kind, Spool, SpoolOptions, SpoolView,
};
use lastword::upload::{Uploader, UploaderConfig};
use lastword_tests::scripted::{Behaviour, Record, TOKEN, TestCollector};

const APP: &str = env!("CARGO_BIN_EXE_lastword-crash-app");
const HOUR_MS: u64 = 3_600_000;

fn crash_app(case: &str, spool: &Path, env: &[(&str, &str)]) {
    let out = Command::new(APP)
        .arg(case)
        .envs(env.iter().copied())
        .env("LASTWORD_SPOOL", spool)
        .env_remove("LASTWORD_URL")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{case} crashes");
}

/// An uploader set up as `lastword run` sets it up.
fn sidecar(spool: &Path, collector: &TestCollector) -> Uploader {
    let mut config = UploaderConfig::new([collector.url()], "crash-app").token(TOKEN);
    config.backoff_initial = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    config.prepare = Some(lastword::prepare_for_upload(spool));
    Uploader::start(Spool::open(spool, SpoolOptions::default()).unwrap(), config).unwrap()
}

/// The crash reports the collector stored (it stores the log batches too).
fn stored_crashes(record: &Record) -> Vec<(EntryId, CrashReport)> {
    record
        .bodies
        .iter()
        .filter(|(_, body)| !body.contains(r#""type":"logs""#))
        .map(|(id, body)| (*id, serde_json::from_str(body).unwrap()))
        .collect()
}

fn crash_entries(spool: &Path) -> usize {
    let view = SpoolView::open(spool).unwrap();
    view.list().unwrap().iter().filter(|e| e.kind == Some(Kind::Crash)).count()
}

/// The raw report of one real SIGSEGV of the crash app.
fn raw_segv(dir: &Path) -> Vec<u8> {
    let spool = dir.join("segv");
    crash_app("segv", &spool, &[]);
    let view = SpoolView::open(&spool).unwrap();
    let item = view.list().unwrap().into_iter().find(|e| e.kind == Some(Kind::Crash)).unwrap();
    let entry = view.read(item.id.unwrap()).unwrap();
    assert_ne!(entry.header.flags & FLAG_RAW_SIGNAL, 0);
    entry.body
}

/// Puts a raw signal report made at `created_ms` into `spool`'s ready/, as the signal handler's
/// commit does.
fn put_raw(spool: &Path, created_ms: u64, n: u128, body: &[u8]) -> EntryId {
    let id = EntryId::from_parts(created_ms, n);
    let header = Header {
        kind: Kind::Crash,
        flags: FLAG_RAW_SIGNAL,
        id,
        created_millis: created_ms,
        body_len: body.len() as u64,
    };
    let mut bytes = header.encode(&[body]).to_vec();
    bytes.extend_from_slice(body);
    let name = EntryName::new(Kind::Crash, id, (HEADER_LEN + body.len()) as u64);
    std::fs::write(spool.join("ready").join(name.to_string()), bytes).unwrap();
    id
}

#[test]
fn a_signal_report_answered_retry_later_fifty_times_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    crash_app("segv", &spool, &[]);
    let collector = TestCollector::start(Behaviour::RetryTimes { times: 50, delay_ms: 5 });
    let uploader = sidecar(&spool, &collector);
    collector.wait_for(Duration::from_secs(60), "the report, after fifty retry_later", |r| {
        stored_crashes(r).len() == 1
    });
    let _ = uploader.shutdown(Duration::from_secs(2));
    let record = collector.record.lock().unwrap();
    let stored = stored_crashes(&record);
    let (id, report) = &stored[0];
    assert_eq!(report.kind, "signal");
    let sent = record.received.iter().filter(|(i, _)| i == id).count();
    assert_eq!(sent, 51, "sent fifty-one times, never skipped");
    assert_eq!(crash_entries(&spool), 0, "acknowledged, then deleted");
}

#[test]
fn a_backlog_of_the_same_crash_over_three_hours_is_limited_per_hour_of_the_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let body = raw_segv(dir.path());
    let spool = dir.path().join("spool");
    drop(Spool::open(&spool, SpoolOptions::default()).unwrap());
    // Twelve a clock hour, three hours, the last ending five hours ago; the limit is ten an hour.
    let now = lastword::spool::EntryId::generate().millis();
    let first_hour = (now / HOUR_MS - 8) * HOUR_MS;
    let mut ids = Vec::new();
    for hour in 0..3 {
        for j in 0..12 {
            ids.push(put_raw(
                &spool,
                first_hour + hour * HOUR_MS + 60_000 + j * 240_000,
                u128::from(hour * 12 + j),
                &body,
            ));
        }
    }
    let collector = TestCollector::start(Behaviour::Accept);
    let uploader = sidecar(&spool, &collector);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while crash_entries(&spool) > 0 {
        assert!(std::time::Instant::now() < deadline, "the backlog is settled");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = uploader.shutdown(Duration::from_secs(2));
    let record = collector.record.lock().unwrap();
    assert_eq!(stored_crashes(&record).len(), 30, "ten of each hour, not ten in all");
    for hour in 0..3 {
        let stored: Vec<_> =
            ids[hour * 12..hour * 12 + 12].iter().filter(|id| record.stored.contains_key(id)).collect();
        assert_eq!(stored.len(), 10, "hour {hour}");
    }
    // The two suppressed in an hour travel with the next stored report of that crash: the first of
    // the next hour.
    let carried =
        |id: &EntryId| serde_json::from_str::<CrashReport>(&record.bodies[id]).unwrap().crash_loop_suppressed;
    assert_eq!(carried(&ids[0]), 0);
    assert_eq!(carried(&ids[12]), 2);
    assert_eq!(carried(&ids[24]), 2);
}

#[test]
fn crashes_suppressed_in_one_process_are_reported_by_a_later_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    for _ in 0..3 {
        crash_app("panic-main", &spool, &[("CRASH_APP_LOOP_LIMIT", "1")]);
    }
    assert_eq!(crash_entries(&spool), 1, "the first is stored, the next two suppressed");
    let collector = TestCollector::start(Behaviour::Accept);
    let uploader = sidecar(&spool, &collector);
    collector.wait_for(Duration::from_secs(20), "the stored report", |r| stored_crashes(r).len() == 1);
    let _ = uploader.shutdown(Duration::from_secs(2));
    let record = collector.record.lock().unwrap();
    assert_eq!(record.hellos[0].losses.crash_loop_suppressed, 2, "counted since the spool was made");
}
