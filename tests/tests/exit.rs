//! How an application that links lastword exits, as real processes: this test binary runs itself
//! again as the application (the `child` test, selected by `EXIT_CHILD`), with `lastword::init`,
//! one log record and the guard's drop (or `std::process::exit`), and reports how long the drop took.
//!
//! - the guard's drop returns within its exit deadline, whatever the collector does;
//! - with nothing in flight and a collector that cannot be reached, the exit does not wait;
//! - `retry_later` at exit: honoured when the delay fits in the deadline, else the report stays in
//!   the spool, the same way every time;
//! - an error logged right before `std::process::exit(n)` is durable.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lastword::spool::{Spool, SpoolOptions};
use lastword_tests::scripted::{Behaviour, TOKEN, TestCollector};

/// The application side, when `EXIT_CHILD` is set; a no-op test otherwise.
#[test]
fn child() {
    let Ok(case) = std::env::var("EXIT_CHILD") else { return };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut config = lastword::Config::new("exit-app").spool(env("CHILD_SPOOL").unwrap()).no_url();
    if let Some(url) = env("CHILD_URL") {
        config = config.url(url);
    }
    if let Some(token) = env("CHILD_TOKEN") {
        config = config.token(token);
    }
    if let Some(ms) = env("CHILD_DEADLINE_MS") {
        config = config.exit_deadline(Duration::from_millis(ms.parse().unwrap()));
    }
    // The library never prints: its diagnostics go to tracing when no callback takes them, and an
    // application's subscriber writes them where it wants (here stderr, which the tests read).
    let subscriber = tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let guard = lastword::init(config).unwrap();
    lastword::log(lastword::Level::Error, "exit_app", "last words before the exit");
    match case.as_str() {
        "drop" => {
            let start = Instant::now();
            drop(guard);
            println!("drop_ms={}", start.elapsed().as_millis());
        }
        "process-exit" => {
            // The guard is never dropped: std::process::exit runs no destructors.
            let _guard = guard;
            std::process::exit(3);
        }
        other => panic!("unknown case {other}"),
    }
}

struct Run {
    out: Output,
    drop_ms: Option<u64>,
}

fn run_child(case: &str, spool: &Path, url: Option<&str>, token: &str, deadline_ms: Option<u64>) -> Run {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env("EXIT_CHILD", case)
        .env("CHILD_SPOOL", spool)
        .env("CHILD_URL", url.unwrap_or_default())
        .env("CHILD_TOKEN", token)
        .env("CHILD_DEADLINE_MS", deadline_ms.map(|d| d.to_string()).unwrap_or_default())
        .env_remove("LASTWORD_URL")
        .env_remove("LASTWORD_TOKEN")
        .env_remove("LASTWORD_SPOOL");
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // libtest may print its "test child ... " on the same line.
    let drop_ms = stdout.lines().find_map(|l| {
        let value = &l[l.find("drop_ms=")? + "drop_ms=".len()..];
        value.split_whitespace().next()?.parse().ok()
    });
    Run { out, drop_ms }
}

fn stderr(run: &Run) -> String {
    String::from_utf8_lossy(&run.out.stderr).into_owned()
}

/// Both outputs, for a failure message.
fn outputs(run: &Run) -> String {
    format!("{}\n(stdout: {})", stderr(run), String::from_utf8_lossy(&run.out.stdout))
}

/// The bodies of the entries in a spool (claimed and put back again).
fn bodies(dir: &Path) -> Vec<String> {
    let spool = Spool::open(dir, SpoolOptions::default()).unwrap();
    let mut claims = Vec::new();
    while let Some(c) = spool.claim().unwrap() {
        claims.push(c);
    }
    claims.iter().map(|c| String::from_utf8_lossy(c.body()).into_owned()).collect()
}

fn the_log_record_is_in(dir: &Path) -> bool {
    bodies(dir).iter().any(|b| b.contains("last words before the exit"))
}

#[test]
fn the_guard_drop_returns_within_the_exit_deadline_when_the_handshake_never_ends() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ingest", listener.local_addr().unwrap());
    let run = run_child("drop", dir.path(), Some(&url), TOKEN, Some(1000));
    let ms = run.drop_ms.unwrap_or_else(|| panic!("no drop time: {}", outputs(&run)));
    assert!(ms < 1000 + 250, "the drop took {ms} ms for a deadline of 1000 ms");
    assert!(the_log_record_is_in(dir.path()), "the record is durable in the spool");
}

#[test]
fn the_guard_drop_returns_within_the_exit_deadline_when_the_collector_never_answers() {
    let dir = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(Behaviour::Stall);
    let run = run_child("drop", dir.path(), Some(&collector.url()), TOKEN, Some(1000));
    let ms = run.drop_ms.unwrap_or_else(|| panic!("no drop time: {}", outputs(&run)));
    assert!(ms < 1000 + 250, "the drop took {ms} ms for a deadline of 1000 ms");
    assert!(ms >= 500, "it waited for the answer while it could ({ms} ms)");
    assert_eq!(collector.received(), 1, "the report was sent");
    assert!(the_log_record_is_in(dir.path()), "unanswered, it is back in the spool");
}

#[test]
fn the_exit_does_not_wait_for_a_collector_that_refuses_connections() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("ws://{addr}/ingest");
    let run = run_child("drop", dir.path(), Some(&url), TOKEN, None);
    let ms = run.drop_ms.unwrap_or_else(|| panic!("no drop time: {}", outputs(&run)));
    assert!(ms < 300, "the drop took {ms} ms with the collector down (deadline 2 s)");
    assert!(the_log_record_is_in(dir.path()), "the record waits in the spool for the next start");
}

#[test]
fn the_exit_does_not_wait_for_a_collector_that_refuses_the_token_and_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let collector = TestCollector::start(Behaviour::Accept);
    let run = run_child("drop", dir.path(), Some(&collector.url()), "wrong-token", None);
    let ms = run.drop_ms.unwrap_or_else(|| panic!("no drop time: {}", outputs(&run)));
    assert!(ms < 300, "the drop took {ms} ms with the token refused (deadline 2 s)");
    let err = stderr(&run);
    let lines: Vec<_> = err.lines().filter(|l| l.contains("401")).collect();
    assert_eq!(lines.len(), 1, "said once, through the application's tracing subscriber: {err}");
    assert!(the_log_record_is_in(dir.path()));
    assert!(collector.stored_ids().is_empty());
}

#[test]
fn retry_later_at_exit_beyond_the_deadline_leaves_the_report_in_the_spool_every_time() {
    let collector = TestCollector::start(Behaviour::RetryAlways(10_000));
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let run = run_child("drop", dir.path(), Some(&collector.url()), TOKEN, Some(2000));
        let ms = run.drop_ms.unwrap_or_else(|| panic!("no drop time: {}", outputs(&run)));
        assert!(ms < 500, "round {round}: the drop took {ms} ms: a 10 s delay does not fit in 2 s");
        assert!(the_log_record_is_in(dir.path()), "round {round}: left in the spool");
    }
    assert!(collector.stored_ids().is_empty());
    assert!(collector.received() >= 5, "each run sent its report once");
}

#[test]
fn retry_later_at_exit_within_the_deadline_is_honoured_every_time() {
    let collector = TestCollector::start(Behaviour::RetryOnce(300));
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let before = collector.stored_ids().len();
        let run = run_child("drop", dir.path(), Some(&collector.url()), TOKEN, Some(2000));
        let ms = run.drop_ms.unwrap_or_else(|| panic!("no drop time: {}", outputs(&run)));
        assert_eq!(collector.stored_ids().len(), before + 1, "round {round}: delivered after the delay");
        assert!(ms >= 300, "round {round}: the delay was waited ({ms} ms)");
        assert!(ms < 2000 + 250, "round {round}: within the deadline ({ms} ms)");
        assert!(!the_log_record_is_in(dir.path()), "round {round}: delivered, so gone from the spool");
    }
}

#[test]
fn an_error_logged_right_before_process_exit_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let run = run_child("process-exit", dir.path(), None, TOKEN, None);
    assert_eq!(run.out.status.code(), Some(3), "{}", outputs(&run));
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(the_log_record_is_in(dir.path()), "the queued record was written out at exit");
}
