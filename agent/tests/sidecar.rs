//! `lastword run`, `drain`, `ls`, `show`, `stats` and `purge` as real processes, against a scripted
//! collector: exit codes, the spool's contents afterwards, and the shutdown deadline.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lastword::spool::{EntryState, Kind, Spool, SpoolOptions, SpoolView};
use lastword_tests::scripted::{Behaviour, TOKEN, TestCollector};

const BIN: &str = env!("CARGO_BIN_EXE_lastword");

fn fill(dir: &Path, n: usize) -> Vec<lastword::spool::EntryId> {
    let spool = Spool::open(dir, SpoolOptions::default()).unwrap();
    (0..n).map(|i| spool.write(Kind::Crash, format!(r#"{{"i":{i}}}"#).as_bytes()).unwrap()).collect()
}

fn lastword(args: &[&str], spool: &Path, url: &str) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .arg("--spool")
        .arg(spool)
        .env("LASTWORD_URL", url)
        .env("LASTWORD_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn count(dir: &Path, state: EntryState) -> usize {
    SpoolView::open(dir).unwrap().list().unwrap().iter().filter(|e| e.state == state).count()
}

fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn wait_exit(child: Child, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = child;
    loop {
        if child.try_wait().unwrap().is_some() {
            return (child.wait_with_output().unwrap(), start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("lastword did not exit within {limit:?}: {:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_until(limit: Duration, what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn run_drains_then_sigterm_exits_0_with_an_empty_spool() {
    let dir = tempfile::tempdir().unwrap();
    let ids = fill(dir.path(), 50);
    let collector = TestCollector::start(Behaviour::Accept);
    let child = lastword(&["run"], dir.path(), &collector.url()).spawn().unwrap();
    collector.wait_for(Duration::from_secs(20), "all stored", |r| r.stored.len() == 50);
    wait_until(Duration::from_secs(10), "acks", || {
        SpoolView::open(dir.path()).unwrap().list().unwrap().is_empty()
    });
    sigterm(&child);
    let (out, _) = wait_exit(child, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stored = collector.stored_ids();
    assert!(ids.iter().all(|id| stored.contains_key(id)));
}

#[test]
fn run_wakes_on_new_entries_without_waiting_for_the_periodic_rescan() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 0);
    let collector = TestCollector::start(Behaviour::Accept);
    let child = lastword(&["run"], dir.path(), &collector.url()).spawn().unwrap();
    // Give the sidecar its start (the spool is empty); then write from another "process" (handle).
    std::thread::sleep(Duration::from_millis(300));
    let ids = fill(dir.path(), 3);
    // The safety-net rescan is every 30 s; a delivery well before that comes from the notification.
    collector.wait_for(Duration::from_secs(5), "delivery woken by the file system", |r| r.stored.len() == 3);
    sigterm(&child);
    let (out, _) = wait_exit(child, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0));
    assert!(ids.iter().all(|id| collector.stored_ids().contains_key(id)));
}

#[test]
fn sigterm_with_a_collector_that_never_answers_exits_3_by_the_grace_and_keeps_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 40);
    let collector = TestCollector::start(Behaviour::Stall);
    let child = lastword(&["run", "--grace", "700ms", "--window", "8"], dir.path(), &collector.url())
        .spawn()
        .unwrap();
    collector.wait_for(Duration::from_secs(20), "a window in flight", |r| r.received.len() >= 8);
    sigterm(&child);
    let (out, took) = wait_exit(child, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(took < Duration::from_millis(700 + 2000), "returned by the grace plus a bound: {took:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("put back 8"));
    assert_eq!(count(dir.path(), EntryState::Ready), 40, "every entry is back in ready");
    assert_eq!(count(dir.path(), EntryState::Claimed), 0);
}

#[test]
fn sigterm_during_a_drain_delivers_what_is_in_flight_and_leaves_the_rest_ready() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 200);
    let collector = TestCollector::start(Behaviour::Slow(100));
    let child =
        lastword(&["run", "--grace", "5s", "--window", "4"], dir.path(), &collector.url()).spawn().unwrap();
    collector.wait_for(Duration::from_secs(20), "some delivered", |r| r.stored.len() >= 8);
    sigterm(&child);
    let (out, _) = wait_exit(child, Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(0), "answers in flight arrive within the grace");
    let stored = collector.stored_ids().len();
    assert!(stored < 200, "it stopped claiming");
    assert_eq!(count(dir.path(), EntryState::Ready), 200 - stored, "the rest waits in ready");
    assert_eq!(count(dir.path(), EntryState::Claimed), 0);
}

#[test]
fn drain_exits_0_when_everything_is_delivered_and_4_when_the_collector_is_down() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 30);
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let out = lastword(&["drain", "--deadline", "1s"], dir.path(), &format!("ws://{down}")).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(dir.path(), EntryState::Ready), 30);
    let collector = TestCollector::start(Behaviour::Accept);
    let out = lastword(&["drain", "--deadline", "20s"], dir.path(), &collector.url()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(SpoolView::open(dir.path()).unwrap().list().unwrap().is_empty());
    assert_eq!(collector.stored_ids().len(), 30);
}

#[test]
fn two_sidecars_on_one_spool_never_send_the_same_entry() {
    let dir = tempfile::tempdir().unwrap();
    let ids = fill(dir.path(), 300);
    let collector = TestCollector::start(Behaviour::Slow(5));
    let a = lastword(&["run", "--window", "8"], dir.path(), &collector.url()).spawn().unwrap();
    let b = lastword(&["run", "--window", "8"], dir.path(), &collector.url()).spawn().unwrap();
    collector.wait_for(Duration::from_secs(30), "all stored", |r| r.stored.len() == 300);
    sigterm(&a);
    sigterm(&b);
    assert_eq!(wait_exit(a, Duration::from_secs(10)).0.status.code(), Some(0));
    assert_eq!(wait_exit(b, Duration::from_secs(10)).0.status.code(), Some(0));
    let record = collector.record.lock().unwrap();
    assert_eq!(record.received.len(), 300, "each entry sent once: no two agents held the same one");
    assert_eq!(record.duplicates, 0);
    assert!(record.connections >= 2, "both agents worked");
    assert!(ids.iter().all(|id| record.stored.contains_key(id)));
}

#[test]
fn ls_show_stats_and_purge_tell_what_is_in_a_spool() {
    let dir = tempfile::tempdir().unwrap();
    let ids = fill(dir.path(), 2);
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).arg("--spool").arg(dir.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let ls = run(&["ls"]);
    assert!(ids.iter().all(|id| ls.contains(&id.to_string())), "{ls}");
    let listed: serde_json::Value = serde_json::from_str(&run(&["ls", "--json", "--kind", "crash"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let show = run(&["show", &ids[0].to_string()]);
    assert!(show.contains("\"i\": 0"), "{show}");
    let stats: serde_json::Value = serde_json::from_str(&run(&["stats", "--json"])).unwrap();
    assert_eq!(stats["totals"]["ready"]["entries"], 2);
    let dry = run(&["purge", "--id", &ids[1].to_string()]);
    assert!(dry.contains("1 entries would be deleted"), "{dry}");
    assert_eq!(count(dir.path(), EntryState::Ready), 2, "a dry run deletes nothing");
    run(&["purge", "--id", &ids[1].to_string(), "--yes"]);
    assert_eq!(count(dir.path(), EntryState::Ready), 1);
}

#[test]
fn a_missing_or_foreign_spool_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let out = Command::new(BIN).args(["stats", "--spool"]).arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no spool at"), "{err}");
    assert!(!err.contains("panicked"));
    std::fs::write(dir.path().join("VERSION"), "lastword-spool 9\n").unwrap();
    let out = Command::new(BIN).args(["ls", "--spool"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lastword-spool 9"));
    let out = Command::new(BIN).args(["show", "not-an-id", "--spool"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad id is a usage error");
}

#[test]
fn a_url_that_can_never_work_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 0);
    let out = lastword(&["drain"], dir.path(), "http://127.0.0.1:1/").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "refused with the arguments, a usage error");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ws:// or wss://"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
