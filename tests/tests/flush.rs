//! What a flush, an exit flush and a shutdown promise, against the scripted collector: `flush` is Ok
//! only when nothing is left to send, waits are as long as promised and no longer, an unreachable
//! collector costs no wait at exit, configuration errors are said once and not retried in a loop,
//! and the summary counts every claim in its own column.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lastword::spool::{EntryState, Kind, Spool, SpoolOptions};
use lastword::upload::{DiagnosticLevel, FlushError, Prepared, Uploader, UploaderConfig};
use lastword_tests::scripted::{Behaviour, TOKEN, TestCollector};

fn spool_with(dir: &std::path::Path, n: usize, kind: Kind) -> Spool {
    let spool = Spool::open(dir, SpoolOptions::default()).unwrap();
    for i in 0..n {
        spool.write(kind, format!(r#"{{"n":{i}}}"#).as_bytes()).unwrap();
    }
    spool
}

fn config(url: String) -> UploaderConfig {
    let mut c = UploaderConfig::new([url], "test-app").token(TOKEN);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.connect_timeout = Duration::from_secs(5);
    c
}

fn count(spool: &Spool, state: EntryState) -> usize {
    spool.view().list().unwrap().iter().filter(|e| e.state == state).count()
}

/// A port with nothing listening on it: connections are refused.
fn closed_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A listener that accepts TCP connections and never answers the websocket handshake.
fn silent_listener() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ingest", listener.local_addr().unwrap());
    (listener, url)
}

/// Diagnostics collected in memory.
fn collect_diagnostics(config: &mut UploaderConfig) -> Arc<Mutex<Vec<(DiagnosticLevel, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    config.diagnostics = Some(Arc::new(move |level, message: &str| {
        s.lock().unwrap().push((level, message.to_owned()));
    }));
    seen
}

fn wait_until(limit: Duration, what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------------------
// flush: Ok only when nothing is left to send
// ---------------------------------------------------------------------------------------------

#[test]
fn an_entry_answered_retry_later_is_not_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), 1, Kind::Event);
    let collector = TestCollector::start(Behaviour::RetryAlways(200));
    let uploader = Uploader::start(spool.clone(), config(collector.url())).unwrap();
    let start = Instant::now();
    let flushed = uploader.flush(Duration::from_millis(1500));
    let took = start.elapsed();
    assert_eq!(flushed, Err(FlushError::Timeout), "the entry is still in the spool");
    assert!(took >= Duration::from_millis(1400), "a flush waits out its deadline ({took:?})");
    assert!(collector.received() >= 2, "the delay is honoured and the report sent again");
    let summary = uploader.shutdown(Duration::from_millis(500));
    assert_eq!(count(&spool, EntryState::Ready), 1);
    assert!(collector.stored_ids().is_empty());
    assert_eq!((summary.deferred, summary.put_back), (1, 0), "{summary:?}");
    assert!(summary.all_answered() && !summary.all_delivered(), "{summary:?}");
}

#[test]
fn a_spool_error_never_answers_a_flush_ok() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), 0, Kind::Event);
    // The spool's ready/ is a file now: every scan fails.
    std::fs::rename(dir.path().join("ready"), dir.path().join("ready.gone")).unwrap();
    std::fs::write(dir.path().join("ready"), "not a directory").unwrap();
    let collector = TestCollector::start(Behaviour::Accept);
    let uploader = Uploader::start(spool, config(collector.url())).unwrap();
    assert_eq!(uploader.flush(Duration::from_millis(700)), Err(FlushError::Timeout));
    assert!(uploader.last_error().is_some_and(|e| e.contains("spool")), "{:?}", uploader.last_error());
    let _ = uploader.shutdown(Duration::from_millis(200));
}

// ---------------------------------------------------------------------------------------------
// Waits as long as promised, and no longer
// ---------------------------------------------------------------------------------------------

#[test]
fn flush_crashes_returns_by_its_timeout_while_a_connection_attempt_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), 1, Kind::Crash);
    let (_listener, url) = silent_listener();
    let uploader = Uploader::start(spool, config(url)).unwrap();
    std::thread::sleep(Duration::from_millis(100)); // the connection attempt is under way
    for timeout in [Duration::from_millis(600), Duration::from_millis(300)] {
        let start = Instant::now();
        assert_eq!(uploader.flush_crashes(timeout), Err(FlushError::Timeout));
        let took = start.elapsed();
        assert!(took >= timeout, "waits its timeout ({took:?})");
        assert!(took < timeout + Duration::from_millis(250), "and no longer: {took:?} for {timeout:?}");
        let start = Instant::now();
        assert_eq!(uploader.flush(timeout), Err(FlushError::Timeout));
        assert!(start.elapsed() < timeout + Duration::from_millis(250), "flush too: {:?}", start.elapsed());
    }
    let _ = uploader.shutdown(Duration::from_millis(100));
}

#[test]
fn shutdown_returns_within_grace_plus_the_close_bound_when_the_collector_never_answers() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), 20, Kind::Event);
    let collector = TestCollector::start(Behaviour::Stall);
    let mut cfg = config(collector.url()).window(5);
    cfg.close_bound = Duration::from_millis(300);
    let uploader = Uploader::start(spool.clone(), cfg).unwrap();
    collector.wait_for(Duration::from_secs(10), "a window in flight", |r| r.received.len() >= 5);
    let grace = Duration::from_millis(600);
    let start = Instant::now();
    let summary = uploader.shutdown(grace);
    let took = start.elapsed();
    assert!(took >= grace, "waits for answers until the deadline ({took:?})");
    assert!(took < grace + Duration::from_millis(300 + 200), "grace plus the close bound: {took:?}");
    assert_eq!(summary.put_back, 5, "{summary:?}");
    assert_eq!(count(&spool, EntryState::Ready), 20);
}

// ---------------------------------------------------------------------------------------------
// Configuration errors
// ---------------------------------------------------------------------------------------------

#[test]
fn a_refused_token_is_said_once_and_not_retried_in_a_tight_loop() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), 2, Kind::Event);
    let collector = TestCollector::start(Behaviour::Accept);
    let mut cfg = config(collector.url()).token("wrong");
    let seen = collect_diagnostics(&mut cfg);
    let uploader = Uploader::start(spool.clone(), cfg).unwrap();
    wait_until(Duration::from_secs(5), "the refusal", || collector.record.lock().unwrap().handshakes >= 1);
    std::thread::sleep(Duration::from_millis(1500));
    let handshakes = collector.record.lock().unwrap().handshakes;
    assert!(handshakes <= 2, "a refused token is not retried in a loop: {handshakes} handshakes in 1.5 s");
    let said: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, m)| m.contains("(HTTP 401)"))
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(said.len(), 1, "said once: {said:?}");
    let _ = uploader.shutdown(Duration::from_millis(200));
    assert_eq!(count(&spool, EntryState::Ready), 2, "nothing is lost");
}

#[test]
fn a_wrong_path_is_a_configuration_error_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), 1, Kind::Event);
    let collector = TestCollector::start(Behaviour::Accept);
    let mut cfg = config(format!("ws://{}/wrong", collector.addr));
    let seen = collect_diagnostics(&mut cfg);
    let uploader = Uploader::start(spool, cfg).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let handshakes = collector.record.lock().unwrap().handshakes;
    assert!((1..=2).contains(&handshakes), "{handshakes} handshakes in 1.5 s");
    let said = seen.lock().unwrap().iter().filter(|(_, m)| m.contains("(HTTP 404)")).count();
    assert_eq!(said, 1, "{:?}", seen.lock().unwrap());
    let _ = uploader.shutdown(Duration::from_millis(200));
}

#[test]
fn a_refused_connection_is_retried_with_backoff_not_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), 1, Kind::Event);
    let addr = closed_port();
    let mut cfg = config(format!("ws://{addr}/ingest"));
    let seen = collect_diagnostics(&mut cfg);
    let uploader = Uploader::start(spool, cfg).unwrap();
    // Backoff of 20..200 ms: several attempts in a second, and the collector then comes up.
    std::thread::sleep(Duration::from_millis(800));
    let attempts = seen.lock().unwrap().iter().filter(|(_, m)| m.contains("cannot reach")).count();
    assert!(attempts >= 2, "retried: {:?}", seen.lock().unwrap());
    let collector = TestCollector::start_on(addr, Behaviour::Accept);
    uploader.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(collector.stored_ids().len(), 1);
    let _ = uploader.shutdown(Duration::from_millis(200));
}

// ---------------------------------------------------------------------------------------------
// The summary's columns
// ---------------------------------------------------------------------------------------------

#[test]
fn skipped_entries_are_counted_as_skipped_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), 6, Kind::Event);
    let collector = TestCollector::start(Behaviour::Accept);
    let mut cfg = config(collector.url());
    // Entries with an odd number are skipped by a counted decision.
    cfg.prepare = Some(Arc::new(|claim: &mut lastword::spool::Claim| {
        let body = claim.body();
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if v["n"].as_u64().unwrap_or(0) % 2 == 1 {
            Ok(Prepared::Skip("odd".into()))
        } else {
            Ok(Prepared::Send(body.to_vec()))
        }
    }));
    let uploader = Uploader::start(spool.clone(), cfg).unwrap();
    uploader.flush(Duration::from_secs(10)).unwrap();
    let summary = uploader.shutdown(Duration::from_millis(500));
    assert_eq!(collector.stored_ids().len(), 3);
    assert_eq!((summary.delivered, summary.skipped), (3, 3), "{summary:?}");
    assert!(summary.all_delivered(), "a deliberate skip is settled: {summary:?}");
    assert!(spool.view().list().unwrap().is_empty());
}

#[test]
fn a_claim_task_that_outlives_the_session_is_put_back_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), 1, Kind::Event);
    let collector = TestCollector::start(Behaviour::Accept);
    let mut cfg = config(collector.url());
    // Preparing runs in the claim task, on the blocking pool (it may symbolize a crash for seconds,
    // or wait on a slow disk): this one is still preparing its claim when the session ends.
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Mutex::new(wait);
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = started.clone();
    cfg.prepare = Some(Arc::new(move |claim: &mut lastword::spool::Claim| {
        seen.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = wait.lock().unwrap().recv_timeout(Duration::from_secs(30));
        Ok(Prepared::Send(claim.body().to_vec()))
    }));
    let uploader = Uploader::start(spool.clone(), cfg).unwrap();
    wait_until(Duration::from_secs(5), "the claim being prepared", || {
        started.load(std::sync::atomic::Ordering::SeqCst)
    });
    let begun = std::time::Instant::now();
    let summary = uploader.shutdown(Duration::from_millis(300));
    assert!(begun.elapsed() < Duration::from_secs(2), "the shutdown kept its bound: {:?}", begun.elapsed());
    assert_eq!(summary.put_back, 1, "the claim held by the task counts: {summary:?}");
    assert!(!summary.all_delivered(), "{summary:?}");
    // Let the task end: its claim goes back to ready/, unsent.
    drop(release);
    wait_until(Duration::from_secs(10), "the claim back in ready/", || count(&spool, EntryState::Ready) == 1);
    assert!(collector.stored_ids().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Losses to report are work
// ---------------------------------------------------------------------------------------------

#[test]
fn losses_not_yet_reported_are_a_reason_to_connect() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), 0, Kind::Event);
    let collector = TestCollector::start(Behaviour::Accept);
    // Counted in the spool, by whichever process suppressed them (PROTOCOL.md).
    spool.add_to_counter("crash_loop_suppressed", 2).unwrap();
    let uploader = Uploader::start(spool, config(collector.url())).unwrap();
    uploader.flush(Duration::from_secs(5)).unwrap();
    collector.wait_for(Duration::from_secs(5), "a hello with the losses", |r| {
        r.hellos.iter().any(|h| h.losses.crash_loop_suppressed == 2)
    });
    let _ = uploader.shutdown(Duration::from_millis(200));
}

#[test]
fn finish_delivers_what_it_can_then_shuts_down_all_within_its_limit() {
    // Answers come: everything is delivered, well before the limit.
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), 5, Kind::Event);
    let collector = TestCollector::start(Behaviour::Slow(100));
    let uploader = Uploader::start(spool.clone(), config(collector.url())).unwrap();
    let summary = uploader.finish(Duration::from_secs(5));
    assert_eq!(summary.delivered, 5, "{summary:?}");
    assert!(summary.all_delivered());
    assert!(spool.view().list().unwrap().is_empty());
    // No answer comes: the limit holds, the close bound included, and every claim is back.
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), 5, Kind::Event);
    let collector = TestCollector::start(Behaviour::Stall);
    let uploader = Uploader::start(spool.clone(), config(collector.url())).unwrap();
    collector.wait_for(Duration::from_secs(10), "the reports sent", |r| r.received.len() == 5);
    let limit = Duration::from_millis(1000);
    let start = Instant::now();
    let summary = uploader.finish(limit);
    let took = start.elapsed();
    assert!(took < limit + Duration::from_millis(150), "{took:?} for a limit of {limit:?}");
    assert!(took >= limit - Duration::from_millis(300), "it waited for the answers while it could: {took:?}");
    assert_eq!(summary.put_back, 5, "{summary:?}");
    assert_eq!(count(&spool, EntryState::Ready), 5);
}

#[test]
fn flush_crashes_and_flush_at_exit_return_at_once_when_the_collector_cannot_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    let spool = spool_with(dir.path(), 2, Kind::Crash);
    let addr = closed_port();
    let uploader = Uploader::start(spool.clone(), config(format!("ws://{addr}/ingest"))).unwrap();
    wait_until(Duration::from_secs(5), "a failed attempt", || uploader.last_error().is_some());
    let start = Instant::now();
    assert!(matches!(uploader.flush_crashes(Duration::from_secs(2)), Err(FlushError::Unreachable(_))));
    assert!(matches!(uploader.flush_at_exit(Duration::from_secs(2)), Err(FlushError::Unreachable(_))));
    assert!(start.elapsed() < Duration::from_millis(500), "no wait: {:?}", start.elapsed());
    // A plain flush keeps trying until its deadline.
    assert_eq!(uploader.flush(Duration::from_millis(400)), Err(FlushError::Timeout));
    let _ = uploader.shutdown(Duration::from_millis(100));
    assert_eq!(count(&spool, EntryState::Ready), 2, "durable, for the next start");
}
