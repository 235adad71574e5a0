//! Several `lastword collect` processes on one PostgreSQL database (a throwaway server,
//! tests/src/postgres.rs): uploaders with two URLs fail over when a collector is killed with SIGKILL,
//! and a database stopped under load makes the collector answer retry_later and recover by itself. In
//! both, every report is stored exactly once and every crash group counts exactly its crashes. And the
//! web UI of a collector on the database.

#![allow(clippy::unwrap_used, reason = "test helpers: a failure is a test failure")]

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use lastword::protocol::ServerMessage;
use lastword::spool::{Spool, SpoolOptions};
use lastword::upload::{Uploader, UploaderConfig};
use lastword_collector::server::Limits;
use lastword_collector::store::PostgresStore;
use lastword_spool::{EntryId, Kind};
use lastword_tests::postgres::TempPostgres;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Checks what the database holds: exactly `expected`, once each, and group counts that match.
fn assert_stored_exactly(pg: &TempPostgres, db: &str, expected: &HashSet<EntryId>) {
    let ids = pg.psql(db, "SELECT id FROM reports");
    let stored: Vec<EntryId> = ids.lines().map(|l| l.parse().unwrap()).collect();
    let unique: HashSet<EntryId> = stored.iter().copied().collect();
    assert_eq!(stored.len(), unique.len(), "a report id is stored once");
    assert_eq!(unique.len(), expected.len(), "every report is stored");
    assert!(unique == *expected, "the stored ids are the ids sent");
    let off = pg.psql(
        db,
        "SELECT count(*) FROM groups g WHERE g.count != (SELECT count(*) FROM reports r
            WHERE r.app = g.app AND r.fingerprint = g.fingerprint)",
    );
    assert_eq!(off, "0", "every group counts exactly its stored crashes");
    // Crashes and events are grouped (log batches are not).
    let crashes = pg.psql(db, "SELECT count(*) FROM reports WHERE kind IN ('crash', 'event')");
    assert_eq!(pg.psql(db, "SELECT coalesce(sum(count), 0) FROM groups"), crashes);
}

fn start_collector(url: &str) -> Collector {
    Collector::start(Path::new(url), &["--retry-delay-ms", "50"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_on_one_database_lose_nothing_when_one_is_killed_and_clients_fail_over() {
    const CLIENTS: usize = 100;
    const REPORTS: usize = 8;
    let pg = TempPostgres::start();
    let url = pg.create_database("scale");
    let mut first = start_collector(&url);
    let second = start_collector(&url);
    let dir = tempfile::tempdir().unwrap();
    // Entries are written by a few threads at once: each write is fsynced, and the disk is shared.
    let write_halves = |spools: &[Spool]| -> Vec<EntryId> {
        std::thread::scope(|scope| {
            let writers: Vec<_> = spools
                .chunks(CLIENTS / 4)
                .enumerate()
                .map(|(k, chunk)| {
                    scope.spawn(move || {
                        let mut ids = Vec::new();
                        for (i, spool) in chunk.iter().enumerate() {
                            let c = k * (CLIENTS / 4) + i;
                            for n in 0..REPORTS / 2 {
                                ids.push(
                                    spool.write(Kind::Crash, crash_body((c + n) % 5, n).as_bytes()).unwrap(),
                                );
                            }
                        }
                        ids
                    })
                })
                .collect();
            writers.into_iter().flat_map(|w| w.join().unwrap()).collect()
        })
    };
    let spools: Vec<Spool> = (0..CLIENTS)
        .map(|c| Spool::open(dir.path().join(format!("spool-{c}")), SpoolOptions::default()).unwrap())
        .collect();
    let mut all: HashSet<EntryId> = write_halves(&spools).into_iter().collect();
    // Every spool has its first half before any uploader starts, so that the kill finds clients
    // mid-stream; the second half is written after the kill, so that every client whose first URL
    // was the dead collector must fail over.
    let mut uploaders = Vec::new();
    for (c, spool) in spools.into_iter().enumerate() {
        // Half the clients name the first collector first, half the second: both serve.
        let urls = if c % 2 == 0 { [&first.url, &second.url] } else { [&second.url, &first.url] };
        let mut config = UploaderConfig::new(urls.map(String::clone), format!("app-{}", c % 3)).token(TOKEN);
        config.backoff_initial = Duration::from_millis(20);
        config.backoff_max = Duration::from_millis(200);
        config.connect_timeout = Duration::from_secs(2);
        config.answer_timeout = Duration::from_secs(5);
        uploaders.push((spool.clone(), Uploader::start(spool, config.window(4)).unwrap()));
    }
    let delivered = |uploaders: &[(Spool, Uploader)]| -> u64 {
        uploaders.iter().map(|(_, u)| u.progress().delivered).sum()
    };
    // Kill the first collector once a tenth of the first half is answered: mid-stream.
    let deadline = Instant::now() + STEP;
    while delivered(&uploaders) < (CLIENTS * REPORTS / 20) as u64 {
        assert!(Instant::now() < deadline, "too slow before the kill");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    let spools: Vec<Spool> = uploaders.iter().map(|(spool, _)| spool.clone()).collect();
    all.extend(write_halves(&spools));
    for (_, uploader) in &uploaders {
        uploader.wake();
    }
    let deadline = Instant::now() + STEP * 2;
    while delivered(&uploaders) < all.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "the clients did not fail over in time: {}",
            delivered(&uploaders)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut connections = 0;
    for (spool, uploader) in uploaders {
        let summary =
            tokio::task::spawn_blocking(move || uploader.shutdown(Duration::from_secs(1))).await.unwrap();
        connections += summary.connections;
        assert!(spool.view().list().unwrap().is_empty(), "every entry was acknowledged and deleted");
    }
    assert!(connections > CLIENTS as u64, "the kill made clients connect again ({connections})");
    assert_stored_exactly(&pg, "scale", &all);
    // The queries for people read the same database.
    let out = std::process::Command::new(binary())
        .args(["store", "groups", "--json", "--limit", "100", "--store", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let groups: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let counted: u64 = groups.as_array().unwrap().iter().map(|g| g["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, all.len() as u64);
    drop(second);
}

/// The answers a client got.
#[derive(Default)]
struct Tally {
    accepted: Mutex<HashSet<EntryId>>,
    answered: AtomicUsize,
    retry_later: AtomicUsize,
}

/// Sends `reports` over one connection at a time with a window, sending again whatever was not
/// answered `accepted` or `duplicate` (after the delay a retry_later asks for).
async fn deliver(addr: SocketAddr, reports: Vec<(EntryId, String)>, tally: Arc<Tally>) {
    const WINDOW: usize = 8;
    let deadline = Instant::now() + STEP * 3;
    let mut todo: VecDeque<(EntryId, String)> = reports.into();
    while !todo.is_empty() {
        assert!(Instant::now() < deadline, "could not deliver everything in time");
        let Ok(mut ws) = connect(addr, Some(TOKEN)).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        hello(&mut ws, "db-restart").await;
        let mut in_flight: HashMap<EntryId, String> = HashMap::new();
        loop {
            while in_flight.len() < WINDOW {
                let Some((id, text)) = todo.pop_front() else { break };
                ws.feed(Message::text(text.clone())).await.unwrap();
                in_flight.insert(id, text);
            }
            ws.flush().await.unwrap();
            if in_flight.is_empty() {
                bye(ws).await;
                break;
            }
            let next = tokio::time::timeout(STEP, ws.next()).await;
            let Ok(Some(Ok(Message::Text(text)))) = next else {
                todo.extend(in_flight.drain());
                break;
            };
            match serde_json::from_str::<ServerMessage>(&text).unwrap() {
                ServerMessage::Accepted { id } => {
                    in_flight.remove(&id);
                    tally.accepted.lock().unwrap().insert(id);
                    tally.answered.fetch_add(1, Ordering::SeqCst);
                }
                ServerMessage::Duplicate { id } => {
                    in_flight.remove(&id);
                    tally.answered.fetch_add(1, Ordering::SeqCst);
                }
                ServerMessage::RetryLater { id, delay_ms } => {
                    tally.retry_later.fetch_add(1, Ordering::SeqCst);
                    let text = in_flight.remove(&id).unwrap();
                    todo.push_back((id, text));
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_stopped_under_load_means_retry_later_and_the_collector_recovers_by_itself() {
    const CLIENTS: usize = 8;
    const REPORTS: usize = 60;
    let mut pg = TempPostgres::start();
    let url = pg.create_database("restart");
    let collector = start_collector(&url);
    let tally = Arc::new(Tally::default());
    let mut all = HashSet::new();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let reports: Vec<(EntryId, String)> = (0..REPORTS)
            .map(|n| {
                let id = EntryId::generate();
                (id, report_text(id, Kind::Crash, &crash_body((c + n) % 4, n)))
            })
            .collect();
        all.extend(reports.iter().map(|(id, _)| *id));
        clients.push(tokio::spawn(deliver(collector.addr, reports, Arc::clone(&tally))));
    }
    let deadline = Instant::now() + STEP;
    while tally.answered.load(Ordering::SeqCst) < CLIENTS * REPORTS / 4 {
        assert!(Instant::now() < deadline, "too slow before the database stops");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Stop the database as a crash would, with batches in flight.
    let pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    let accepted_before = tally.accepted.lock().unwrap().len();
    let retries_before = tally.retry_later.load(Ordering::SeqCst);
    let deadline = Instant::now() + STEP;
    while tally.retry_later.load(Ordering::SeqCst) < retries_before + CLIENTS {
        assert!(Instant::now() < deadline, "no retry_later while the database is down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // While it is down nothing more is accepted (at most the batch that was committing at the stop).
    let accepted_while_down = tally.accepted.lock().unwrap().len() - accepted_before;
    assert!(accepted_while_down <= CLIENTS * 8, "{accepted_while_down} accepted with the database down");
    let mut pg = tokio::task::spawn_blocking(move || {
        let mut pg = pg;
        pg.restart_after_stop();
        pg
    })
    .await
    .unwrap();
    for c in clients {
        tokio::time::timeout(STEP * 4, c).await.unwrap().unwrap();
    }
    assert_stored_exactly(&pg, "restart", &all);
    let accepted = tally.accepted.lock().unwrap().clone();
    let stored: HashSet<EntryId> =
        pg.psql("restart", "SELECT id FROM reports").lines().map(|l| l.parse().unwrap()).collect();
    assert!(accepted.is_subset(&stored), "everything answered accepted is stored");
    drop(collector);
    pg.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_too_slow_to_commit_means_retry_later_and_the_resend_is_stored_once() {
    let pg = TempPostgres::start();
    let url = pg.create_database("slow");
    let store = PostgresStore::open(&url).await.unwrap().with_write_timeout(Duration::from_millis(500));
    let server = Server::start(Limits::default(), store).await;
    // Someone holds the reports table for 3 s: the batch cannot commit in time.
    let pg = Arc::new(pg);
    let locker = {
        let pg = Arc::clone(&pg);
        std::thread::spawn(move || pg.psql("slow", "BEGIN; LOCK TABLE reports; SELECT pg_sleep(3); COMMIT;"))
    };
    let deadline = Instant::now() + STEP;
    while pg.psql("slow", "SELECT count(*) FROM pg_locks WHERE relation = 'reports'::regclass AND granted AND mode = 'AccessExclusiveLock'") != "1" {
        assert!(Instant::now() < deadline, "the lock was not taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut ws = connect(server.addr, Some(TOKEN)).await.unwrap();
    hello(&mut ws, "slow").await;
    let id = EntryId::generate();
    let text = report_text(id, Kind::Crash, &crash_body(1, 0));
    let started = Instant::now();
    send(&mut ws, text.clone()).await;
    assert!(matches!(recv(&mut ws).await, ServerMessage::RetryLater { id: got, .. } if got == id));
    assert!(started.elapsed() < Duration::from_secs(3), "answered before the lock went away");
    tokio::task::spawn_blocking(move || locker.join().unwrap()).await.unwrap();
    send(&mut ws, text).await;
    let answer = recv(&mut ws).await;
    assert!(
        matches!(answer, ServerMessage::Accepted { id: got } | ServerMessage::Duplicate { id: got } if got == id),
        "{answer:?}"
    );
    bye(ws).await;
    server.stop().await.unwrap();
    assert_stored_exactly(&pg, "slow", &HashSet::from([id]));
}

/// One HTTP/1.0 GET: the status and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut raw)).await.unwrap().unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.split(' ').nth(1).unwrap().parse().unwrap(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_on_postgres_serves_its_web_ui() {
    let pg = TempPostgres::start();
    let url = pg.create_database("ui");
    let collector = Collector::start(Path::new(&url), &["--ui", "127.0.0.1:0"]);
    let line = collector.stdout.recv_timeout(STEP).expect("the web UI line in time");
    let ui: SocketAddr = line
        .strip_prefix("web UI on http://")
        .and_then(|a| a.strip_suffix('/'))
        .unwrap_or_else(|| panic!("odd second line {line:?}"))
        .parse()
        .unwrap();
    let mut ws = connect(collector.addr, Some(TOKEN)).await.unwrap();
    hello(&mut ws, "webshop").await;
    let id = EntryId::generate();
    send(&mut ws, report_text(id, Kind::Crash, &crash_body(1, 0))).await;
    assert!(matches!(recv(&mut ws).await, ServerMessage::Accepted { id: got } if got == id));
    bye(ws).await;

    let (status, home) = http_get(ui, "/").await;
    assert_eq!(status, 200, "{home}");
    assert!(home.contains("Reports received per hour") && home.contains("webshop"), "{home}");
    let (status, groups) = http_get(ui, "/groups?app=webshop").await;
    assert_eq!(status, 200, "{groups}");
    assert!(groups.contains("<td class=\"num count\">1</td>"), "{groups}");
    let (status, report) = http_get(ui, &format!("/reports/{id}")).await;
    assert_eq!(status, 200, "{report}");
    assert!(report.contains(&id.to_string()), "{report}");
    // The UI's sessions are its own, read-only, and named apart from the collector's.
    let readers = pg.psql(
        "ui",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lastword collect (reader)'",
    );
    assert_ne!(readers, "0", "the UI reads on its own connections");
    drop(collector);
}
