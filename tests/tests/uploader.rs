//! The shielded uploader against a scripted collector: delivery, the window, the shutdown phases
//! and their deadline, retry-later, rejection, reconnection, and independence from the host's runtime.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use lastword::spool::{EntryState, Kind, Spool, SpoolOptions};
use lastword::upload::{FlushError, Uploader, UploaderConfig};
use lastword_tests::scripted::{Behaviour, TOKEN, TestCollector};

fn spool_with(dir: &std::path::Path, n: usize) -> (Spool, Vec<lastword::spool::EntryId>) {
    let spool = Spool::open(dir, SpoolOptions::default()).unwrap();
    let ids =
        (0..n).map(|i| spool.write(Kind::Event, format!(r#"{{"n":{i}}}"#).as_bytes()).unwrap()).collect();
    (spool, ids)
}

fn config(url: String) -> UploaderConfig {
    let mut c = UploaderConfig::new([url], "test-app").token(TOKEN);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.connect_timeout = Duration::from_secs(2);
    c
}

fn count(spool: &Spool, state: EntryState) -> usize {
    spool.view().list().unwrap().iter().filter(|e| e.state == state).count()
}

#[test]
fn flush_delivers_every_entry_once_and_empties_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, ids) = spool_with(dir.path(), 200);
    let collector = TestCollector::start(Behaviour::Accept);
    let uploader = Uploader::start(spool.clone(), config(collector.url())).unwrap();
    uploader.flush(Duration::from_secs(20)).unwrap();
    let stored = collector.stored_ids();
    assert_eq!(stored.len(), ids.len());
    assert!(ids.iter().all(|id| stored.get(id) == Some(&1)));
    assert!(spool.view().list().unwrap().is_empty(), "delivered entries are deleted");
    let summary = uploader.shutdown(Duration::from_secs(2));
    assert_eq!(summary.delivered, 200);
    assert!(summary.all_delivered(), "{summary:?}");
}

#[test]
fn never_more_than_the_window_unanswered() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = spool_with(dir.path(), 100);
    let collector = TestCollector::start(Behaviour::Slow(20));
    let uploader = Uploader::start(spool, config(collector.url()).window(7)).unwrap();
    uploader.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(collector.stored_ids().len(), 100);
    let max = collector.record.lock().unwrap().max_unanswered;
    assert!(max <= 7, "at most the window in flight, saw {max}");
    assert!(max >= 2, "the window is used, saw {max}");
    let _ = uploader.shutdown(Duration::from_secs(1));
}

#[test]
fn window_bytes_bounds_the_bodies_claimed_and_unanswered() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    // Random characters, so that the message (deflated and base64-encoded above 8 KiB) is as long
    // as the body: what the bound counts is the messages held.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let pad: String = (0..10_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            char::from(ALPHABET[(seed % 64) as usize])
        })
        .collect();
    let body = format!(r#"{{"pad":"{pad}"}}"#);
    for _ in 0..40 {
        spool.write(Kind::Event, body.as_bytes()).unwrap();
    }
    let collector = TestCollector::start(Behaviour::Stall);
    let mut cfg = config(collector.url()).window(100);
    cfg.window_bytes = 35_000;
    let uploader = Uploader::start(spool.clone(), cfg).unwrap();
    collector.wait_for(Duration::from_secs(10), "the first reports", |r| r.received.len() >= 4);
    // Claiming stops once the messages held reach the bound: 3 of them are under it, the 4th crosses it.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(collector.record.lock().unwrap().received.len(), 4);
    assert_eq!(count(&spool, EntryState::Claimed), 4, "no more is claimed while the bound is reached");
    let summary = uploader.shutdown(Duration::from_millis(200));
    assert_eq!(summary.put_back, 4, "{summary:?}");
    assert_eq!(count(&spool, EntryState::Ready), 40);
}

#[test]
fn shutdown_with_a_collector_that_never_answers_returns_by_the_deadline_and_puts_claims_back() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = spool_with(dir.path(), 50);
    let collector = TestCollector::start(Behaviour::Stall);
    let uploader = Uploader::start(spool.clone(), config(collector.url()).window(10)).unwrap();
    collector.wait_for(Duration::from_secs(10), "a full window sent", |r| r.received.len() >= 10);
    assert_eq!(count(&spool, EntryState::Claimed), 10, "the window is claimed");
    let grace = Duration::from_millis(800);
    let start = Instant::now();
    let summary = uploader.shutdown(grace);
    let took = start.elapsed();
    assert!(took >= grace, "waits for answers until the deadline ({took:?})");
    assert!(took < grace + Duration::from_millis(1500), "returns by the deadline plus a bound ({took:?})");
    assert_eq!(summary.put_back, 10, "{summary:?}");
    assert_eq!(summary.delivered, 0);
    assert!(!summary.all_delivered());
    assert_eq!(count(&spool, EntryState::Claimed), 0);
    assert_eq!(count(&spool, EntryState::Ready), 50, "every entry is back in ready");
}

#[test]
fn shutdown_waits_for_answers_in_flight_then_stops_claiming() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = spool_with(dir.path(), 40);
    let collector = TestCollector::start(Behaviour::Slow(300));
    let uploader = Uploader::start(spool.clone(), config(collector.url()).window(5)).unwrap();
    collector.wait_for(Duration::from_secs(10), "first reports", |r| r.received.len() >= 5);
    let summary = uploader.shutdown(Duration::from_secs(5));
    assert!(summary.all_delivered(), "answers in flight arrive before the deadline: {summary:?}");
    assert!(summary.delivered >= 5 && summary.delivered < 40, "stops claiming: {summary:?}");
    assert_eq!(count(&spool, EntryState::Ready) as u64, 40 - summary.delivered);
    assert_eq!(collector.stored_ids().len() as u64, summary.delivered);
}

#[test]
fn collector_down_keeps_entries_then_delivers_them_when_it_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, ids) = spool_with(dir.path(), 20);
    // A port with nothing listening: bind, learn it, close.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let uploader = Uploader::start(spool.clone(), config(format!("ws://{addr}/ingest"))).unwrap();
    let start = Instant::now();
    while uploader.last_error().is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "the uploader tries to connect");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(uploader.flush(Duration::from_millis(300)), Err(FlushError::Timeout));
    assert_eq!(count(&spool, EntryState::Ready), 20, "nothing is lost while the collector is down");
    let collector = TestCollector::start_on(addr, Behaviour::Accept);
    uploader.flush(Duration::from_secs(20)).unwrap();
    let stored = collector.stored_ids();
    assert!(ids.iter().all(|id| stored.get(id) == Some(&1)));
    let summary = uploader.shutdown(Duration::from_secs(1));
    assert!(summary.all_delivered(), "{summary:?}");
}

#[test]
fn connection_dropped_mid_stream_is_retried_and_each_report_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, ids) = spool_with(dir.path(), 60);
    let collector = TestCollector::start(Behaviour::DropAfter(7));
    let uploader = Uploader::start(spool.clone(), config(collector.url()).window(4)).unwrap();
    collector.wait_for(Duration::from_secs(10), "two connections", |r| r.connections >= 2);
    collector.set(Behaviour::Accept);
    uploader.flush(Duration::from_secs(30)).unwrap();
    let stored = collector.stored_ids();
    assert!(ids.iter().all(|id| stored.contains_key(id)), "every report stored");
    assert_eq!(stored.len(), ids.len());
    assert!(spool.view().list().unwrap().is_empty());
    let _ = uploader.shutdown(Duration::from_secs(1));
}

#[test]
fn retry_later_is_honoured_not_spun_on() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, ids) = spool_with(dir.path(), 3);
    let collector = TestCollector::start(Behaviour::RetryOnce(400));
    let uploader = Uploader::start(spool, config(collector.url()).window(1)).unwrap();
    uploader.flush(Duration::from_secs(20)).unwrap();
    let record = collector.record.lock().unwrap();
    assert_eq!(record.stored.len(), 3);
    assert!(ids.iter().all(|id| record.stored.get(id) == Some(&1)));
    // Each id is sent twice: once refused, once accepted at least 400 ms later.
    for id in &ids {
        let times: Vec<Instant> = record.received.iter().filter(|(i, _)| i == id).map(|(_, t)| *t).collect();
        assert_eq!(times.len(), 2, "{id} sent {} times", times.len());
        assert!(times[1] - times[0] >= Duration::from_millis(400), "waited the delay");
    }
    drop(record);
    let _ = uploader.shutdown(Duration::from_secs(1));
}

#[test]
fn permanently_rejected_entries_are_quarantined_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = spool_with(dir.path(), 5);
    let collector = TestCollector::start(Behaviour::Reject);
    let uploader = Uploader::start(spool.clone(), config(collector.url())).unwrap();
    uploader.flush(Duration::from_secs(10)).unwrap();
    let summary = uploader.shutdown(Duration::from_secs(1));
    assert_eq!(summary.quarantined, 5);
    assert!(summary.all_delivered(), "a rejection is settled, not put back: {summary:?}");
    let list = spool.view().list().unwrap();
    assert_eq!(list.len(), 5);
    for item in list {
        assert_eq!(item.state, EntryState::Quarantined);
        assert!(item.reason.unwrap().contains("rejected by the collector: malformed"));
    }
    assert_eq!(collector.received(), 5, "never retried");
}

#[test]
fn wrong_token_is_reported_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = spool_with(dir.path(), 3);
    let collector = TestCollector::start(Behaviour::Accept);
    let uploader = Uploader::start(spool.clone(), config(collector.url()).token("wrong")).unwrap();
    let start = Instant::now();
    while !uploader.last_error().is_some_and(|e| e.contains("401")) {
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", uploader.last_error());
        std::thread::sleep(Duration::from_millis(10));
    }
    let summary = uploader.shutdown(Duration::from_millis(200));
    assert!(summary.all_delivered(), "nothing was claimed: {summary:?}");
    assert_eq!(count(&spool, EntryState::Ready), 3);
    assert_eq!(collector.received(), 0);
}

#[test]
fn shutting_down_the_host_runtime_does_not_cancel_uploads_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, ids) = spool_with(dir.path(), 30);
    let collector = TestCollector::start(Behaviour::Slow(150));
    let host = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // The application starts the uploader from inside its own runtime, then that runtime goes away
    // while reports are in flight.
    let uploader = host.block_on(async { Uploader::start(spool.clone(), config(collector.url())).unwrap() });
    collector.wait_for(Duration::from_secs(10), "reports in flight", |r| !r.received.is_empty());
    host.shutdown_timeout(Duration::from_millis(10));
    uploader.flush(Duration::from_secs(20)).unwrap();
    let stored = collector.stored_ids();
    assert!(ids.iter().all(|id| stored.get(id) == Some(&1)));
    let summary = uploader.shutdown(Duration::from_secs(1));
    assert!(summary.all_delivered());
}

#[test]
fn a_panic_on_another_thread_holding_a_claim_puts_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = spool_with(dir.path(), 1);
    let s = spool.clone();
    let joined = std::thread::spawn(move || {
        let _claim = s.claim().unwrap().unwrap();
        panic!("the host panics while holding a claim");
    })
    .join();
    assert!(joined.is_err());
    assert_eq!(count(&spool, EntryState::Ready), 1);
    let collector = TestCollector::start(Behaviour::Accept);
    let uploader = Uploader::start(spool, config(collector.url())).unwrap();
    uploader.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(collector.stored_ids().len(), 1);
    let _ = uploader.shutdown(Duration::from_secs(1));
}
