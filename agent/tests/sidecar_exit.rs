//! The exit codes of `lastword run` and `lastword drain` when delivery cannot finish: configuration
//! errors (exit 1, one line), a collector that keeps answering `retry_later` (drain waits out its
//! deadline: exit 4), and a claim still held when the deadline passes (exit 3), as real processes
//! against the scripted collector.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lastword::spool::{EntryState, Kind, Spool, SpoolOptions, SpoolView};
use lastword_tests::scripted::{Behaviour, TOKEN, TestCollector};

const BIN: &str = env!("CARGO_BIN_EXE_lastword");

fn fill(dir: &Path, n: usize) {
    let spool = Spool::open(dir, SpoolOptions::default()).unwrap();
    for i in 0..n {
        spool.write(Kind::Crash, format!(r#"{{"i":{i}}}"#).as_bytes()).unwrap();
    }
}

fn lastword(args: &[&str], spool: &Path, url: &str, token: &str) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .arg("--spool")
        .arg(spool)
        .env("LASTWORD_URL", url)
        .env("LASTWORD_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn count(dir: &Path, state: EntryState) -> usize {
    SpoolView::open(dir).unwrap().list().unwrap().iter().filter(|e| e.state == state).count()
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

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit 1, one line on stderr naming what is wrong (after the one that names the spool drained), and
/// every entry still in the spool.
fn assert_config_error(out: &Output, took: Duration, dir: &Path, n: usize, says: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(took < Duration::from_secs(5), "at once, not after retrying until a deadline: {took:?}");
    let why = err.lines().filter(|l| !l.starts_with("lastword: draining spool ")).count();
    assert_eq!(why, 1, "one clear line: {err}");
    assert!(err.contains(says), "{err}");
    assert_eq!(count(dir, EntryState::Ready), n, "nothing is lost");
}

#[test]
fn drain_with_a_refused_token_exits_1_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 3);
    let collector = TestCollector::start(Behaviour::Accept);
    let start = Instant::now();
    let out =
        lastword(&["drain", "--deadline", "20s"], dir.path(), &collector.url(), "wrong").output().unwrap();
    assert_config_error(&out, start.elapsed(), dir.path(), 3, "401");
}

#[test]
fn run_with_a_refused_token_exits_1_without_waiting_for_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 3);
    let collector = TestCollector::start(Behaviour::Accept);
    let child = lastword(&["run"], dir.path(), &collector.url(), "wrong").spawn().unwrap();
    let (out, took) = wait_exit(child, Duration::from_secs(15));
    assert_config_error(&out, took, dir.path(), 3, "401");
}

#[test]
fn drain_and_run_with_a_wrong_path_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 2);
    let collector = TestCollector::start(Behaviour::Accept);
    let url = format!("ws://{}/not-ingest", collector.addr);
    let start = Instant::now();
    let out = lastword(&["drain"], dir.path(), &url, TOKEN).output().unwrap();
    assert_config_error(&out, start.elapsed(), dir.path(), 2, "404");
    let child = lastword(&["run"], dir.path(), &url, TOKEN).spawn().unwrap();
    let (out, took) = wait_exit(child, Duration::from_secs(15));
    assert_config_error(&out, took, dir.path(), 2, "404");
}

#[test]
fn an_empty_or_missing_token_file_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 1);
    let collector = TestCollector::start(Behaviour::Accept);
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let missing = dir.path().join("no-such-token");
    for (file, says) in [(&empty, "empty"), (&missing, "no-such-token")] {
        for command in ["drain", "run"] {
            let start = Instant::now();
            let child = lastword(
                &[command, "--token-file", file.to_str().unwrap()],
                dir.path(),
                &collector.url(),
                "",
            )
            .spawn()
            .unwrap();
            let (out, _) = wait_exit(child, Duration::from_secs(15));
            assert_config_error(&out, start.elapsed(), dir.path(), 1, says);
        }
    }
    assert_eq!(collector.record.lock().unwrap().handshakes, 0, "nothing was tried without a token");
}

#[test]
fn a_missing_ca_file_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 1);
    let collector = TestCollector::start(Behaviour::Accept);
    for command in ["drain", "run"] {
        let start = Instant::now();
        let child =
            lastword(&[command, "--ca-file", "/nonexistent/ca.pem"], dir.path(), &collector.url(), TOKEN)
                .spawn()
                .unwrap();
        let (out, _) = wait_exit(child, Duration::from_secs(15));
        assert_config_error(&out, start.elapsed(), dir.path(), 1, "/nonexistent/ca.pem");
    }
}

#[test]
fn drain_against_retry_later_waits_out_its_deadline_and_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 2);
    let collector = TestCollector::start(Behaviour::RetryAlways(100));
    let start = Instant::now();
    let out =
        lastword(&["drain", "--deadline", "1500ms"], dir.path(), &collector.url(), TOKEN).output().unwrap();
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(took >= Duration::from_millis(1500), "waited out the deadline: {took:?}");
    assert!(collector.received() >= 4, "the delay was honoured, the reports sent again");
    assert!(stderr(&out).contains("deferred 2, put back 0"), "{}", stderr(&out));
    assert_eq!(count(dir.path(), EntryState::Ready), 2);
}

#[test]
fn drain_summary_shows_each_column_and_a_claim_held_past_the_deadline_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 1);
    // The collector reads the report and never answers: the claim is held past every deadline.
    let collector = TestCollector::start(Behaviour::Stall);
    let child =
        lastword(&["drain", "--deadline", "1s", "--grace", "300ms"], dir.path(), &collector.url(), TOKEN)
            .spawn()
            .unwrap();
    let (out, took) = wait_exit(child, Duration::from_secs(10));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(
        err.contains("delivered 0 (0 duplicates), skipped 0, quarantined 0, deferred 0, put back 1"),
        "{err}"
    );
    assert_eq!(count(dir.path(), EntryState::Ready), 1, "the held report is back in ready");
    assert_eq!(collector.received(), 1, "it was sent, and not answered");
}

#[test]
fn run_stopped_while_the_collector_answers_retry_later_exits_3_with_the_entries_deferred() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 2);
    let collector = TestCollector::start(Behaviour::RetryAlways(60_000));
    let child = lastword(&["run", "--grace", "500ms"], dir.path(), &collector.url(), TOKEN).spawn().unwrap();
    collector.wait_for(Duration::from_secs(10), "both reports sent", |r| r.received.len() >= 2);
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let (out, _) = wait_exit(child, Duration::from_secs(10));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "not delivered, so not 0: {err}");
    assert!(err.contains("deferred 2, put back 0"), "{err}");
    assert_eq!(count(dir.path(), EntryState::Ready), 2);
}
