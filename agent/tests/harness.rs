//! The reliability harness: faults injected while applications write, sidecars drain and a collector
//! stores, then one table of figures. The promise it checks: nothing whose write returned is lost,
//! nothing is stored twice.
//!
//! - kill -9 of application processes while they write, at random moments;
//! - kill -9 of sidecars while they drain, another one taking over;
//! - kill -9 and restart of the collector while sidecars send;
//! - load: many application processes writing at once into one spool, two sidecars draining it.
//!
//! CI runs the short version (`cargo test --workspace`). The long one, hundreds of rounds of each fault:
//!
//! ```sh
//! cargo test -p lastword-agent --release --test harness -- --ignored --nocapture
//! ```
//!
//! Collectors that stall, answer slowly or close mid-stream are tested against the uploader in
//! tests/tests/uploader.rs and agent/tests/sidecar.rs; corrupt spool files in spool/tests/bad_input.rs;
//! a full disk in tests/tests/full_disk.rs; hostile clients of the collector in agent/tests/ingest.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lastword::spool::{EntryId, EntryState, Kind, Spool, SpoolOptions, SpoolView};

const BIN: &str = env!("CARGO_BIN_EXE_lastword");
const TOKEN: &str = "harness-token";

/// A small xorshift generator: reproducible with the seed it prints.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed =
            std::env::var("LASTWORD_HARNESS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
                    | 1
            });
        println!("harness seed: {seed} (LASTWORD_HARNESS_SEED replays it)");
        Self(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Entry point of the child roles; a no-op when run as a test.
#[test]
fn harness_child() {
    let Ok(role) = std::env::var("HARNESS_ROLE") else { return };
    let spool = PathBuf::from(std::env::var("HARNESS_SPOOL").unwrap());
    let count: u64 = std::env::var("HARNESS_COUNT").unwrap().parse().unwrap();
    assert_eq!(role, "writer");
    let spool = Spool::open(&spool, SpoolOptions::default()).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0..count {
        let kind = match i % 3 {
            0 => Kind::Crash,
            1 => Kind::Event,
            _ => Kind::Log,
        };
        let body =
            format!(r#"{{"type":"harness","seq":{i},"pid":{},"message":"report {i}"}}"#, std::process::id());
        let id = spool.write(kind, body.as_bytes()).unwrap();
        // Reported only after write returned: from here on the entry must never be lost.
        writeln!(out, "W {id}").unwrap();
        out.flush().unwrap();
    }
}

/// A writer process; its reported ids land in `written`.
fn writer(
    spool: &Path,
    count: u64,
    written: &Arc<Mutex<HashSet<EntryId>>>,
) -> (Child, std::thread::JoinHandle<()>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "harness_child", "--nocapture", "--test-threads=1", "--quiet"])
        .env("HARNESS_ROLE", "writer")
        .env("HARNESS_SPOOL", spool)
        .env("HARNESS_COUNT", count.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let written = written.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("W ").and_then(|s| EntryId::parse(s).ok()) {
                written.lock().unwrap().insert(id);
            }
        }
    });
    (child, reader)
}

struct Collector {
    child: Child,
    listen: String,
    url: String,
    store: PathBuf,
    tokens: PathBuf,
}

impl Collector {
    fn start(store: &Path, tokens: &Path, listen: &str) -> Self {
        Self::start_with(store, tokens, listen, &[])
    }

    fn start_with(store: &Path, tokens: &Path, listen: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["collect", "--listen", listen])
            .args(extra)
            .arg("--store")
            .arg(store)
            .arg("--token-file")
            .arg(tokens)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix("listening on ").expect("the collector's first line").to_owned();
        let listen = url.trim_start_matches("ws://").trim_end_matches("/ingest").to_owned();
        Self { child, listen, url, store: store.into(), tokens: tokens.into() }
    }

    /// kill -9, then a new collector on the same address and store.
    fn kill_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The port is free again once the dead process's socket is gone.
            if std::net::TcpListener::bind(&self.listen).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "the collector's port stayed busy");
            std::thread::sleep(Duration::from_millis(20));
        }
        *self = Self::start(&self.store.clone(), &self.tokens.clone(), &self.listen.clone());
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sidecar(spool: &Path, url: &str) -> Child {
    Command::new(BIN)
        .args(["run", "--window", "16", "--grace", "2s", "--url", url])
        .arg("--spool")
        .arg(spool)
        .env("LASTWORD_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn stored_ids(store: &Path) -> (BTreeSet<String>, u64, u64, u64) {
    let db = rusqlite::Connection::open_with_flags(
        store.join("lastword.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = db.prepare("SELECT id FROM reports").unwrap();
    let ids: BTreeSet<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    let count = |sql: &str| -> u64 { db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64 };
    let twice = count("SELECT COUNT(*) FROM (SELECT id FROM reports GROUP BY id HAVING COUNT(*) > 1)");
    // Crashes and events are grouped (log batches are not).
    let crashes = count("SELECT COUNT(*) FROM reports WHERE kind IN ('crash', 'event')");
    let group_total = count("SELECT COALESCE(SUM(count), 0) FROM groups");
    (ids, twice, crashes, group_total)
}

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

struct Figures {
    written: u64,
    delivered: u64,
    stored: u64,
    lost: u64,
    stored_twice: u64,
    faults: u64,
    seconds: f64,
}

fn print_table(title: &str, f: &Figures) {
    println!("\n{title}");
    println!("  {:<34} {:>8}", "reports written (write returned)", f.written);
    println!("  {:<34} {:>8}", "delivered (acked, gone from spool)", f.delivered);
    println!("  {:<34} {:>8}", "stored", f.stored);
    println!("  {:<34} {:>8}   (must be 0)", "lost", f.lost);
    println!("  {:<34} {:>8}   (must be 0)", "stored twice", f.stored_twice);
    println!("  {:<34} {:>8}", "faults injected", f.faults);
    println!("  {:<34} {:>8.0}", "reports/s end to end", f.stored as f64 / f.seconds.max(0.001));
}

/// Writers, sidecars and the collector all killed at random moments, for `rounds` rounds.
fn chaos(rounds: u64) -> Figures {
    let mut rng = Rng::new();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = dir.path().join("store");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    Spool::open(&spool, SpoolOptions::default()).unwrap();
    let mut collector = Collector::start(&store, &tokens, "127.0.0.1:0");
    let written = Arc::new(Mutex::new(HashSet::new()));
    let mut sidecars = vec![sidecar(&spool, &collector.url), sidecar(&spool, &collector.url)];
    let mut faults = 0;
    let start = Instant::now();
    for round in 0..rounds {
        // An application writes, and is killed at a random moment.
        let (mut app, reader) = writer(&spool, 20 + rng.below(40), &written);
        std::thread::sleep(Duration::from_millis(rng.below(30)));
        if rng.below(4) > 0 {
            let _ = app.kill();
            faults += 1;
        }
        app.wait().unwrap();
        reader.join().unwrap();
        // A sidecar dies; another takes over.
        if rng.below(3) == 0 {
            let i = rng.below(sidecars.len() as u64) as usize;
            let _ = sidecars[i].kill();
            sidecars[i].wait().unwrap();
            sidecars[i] = sidecar(&spool, &collector.url);
            faults += 1;
        }
        // Now and then the collector dies and comes back.
        if round % 10 == 9 {
            collector.kill_and_restart();
            faults += 1;
        }
    }
    // No more faults: everything written must arrive.
    let written = written.lock().unwrap().clone();
    wait_until(Duration::from_secs(60), "the spool to drain", || {
        let (ids, ..) = stored_ids(&store);
        written.iter().all(|id| ids.contains(&id.to_string()))
            // What is left may only be partial writes of killed writers (writing/, or quarantined once
            // recovered): never anything a writer was told was written.
            && SpoolView::open(&spool)
                .unwrap()
                .list()
                .unwrap()
                .iter()
                .all(|e| matches!(e.state, EntryState::Quarantined | EntryState::Writing))
    });
    let seconds = start.elapsed().as_secs_f64();
    for mut s in sidecars {
        Command::new("kill").args(["-TERM", &s.id().to_string()]).status().unwrap();
        let status = s.wait().unwrap();
        assert_eq!(status.code(), Some(0), "a sidecar that is asked to stop with nothing in flight exits 0");
    }
    let (ids, stored_twice, crashes, group_total) = stored_ids(&store);
    assert_eq!(crashes, group_total, "every crash and event counted once in its group");
    let lost = written.iter().filter(|id| !ids.contains(&id.to_string())).count() as u64;
    // Quarantine may hold partial writes of killed writers, never a written entry.
    for e in SpoolView::open(&spool).unwrap().list().unwrap() {
        if e.state == EntryState::Quarantined {
            assert!(e.reason.as_deref().unwrap_or_default().contains("partial write"), "{e:?}");
        }
        assert!(!e.id.is_some_and(|id| written.contains(&id)), "{e:?}");
    }
    Figures {
        written: written.len() as u64,
        delivered: ids.len() as u64,
        stored: ids.len() as u64,
        lost,
        stored_twice,
        faults,
        seconds,
    }
}

/// `processes` writers at once into one spool, two sidecars draining it to one collector.
fn load(processes: u64, each: u64) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = dir.path().join("store");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    Spool::open(&spool, SpoolOptions::default()).unwrap();
    let collector = Collector::start(&store, &tokens, "127.0.0.1:0");
    let written = Arc::new(Mutex::new(HashSet::new()));
    let sidecars = [sidecar(&spool, &collector.url), sidecar(&spool, &collector.url)];
    let start = Instant::now();
    let writers: Vec<_> = (0..processes).map(|_| writer(&spool, each, &written)).collect();
    for (mut child, reader) in writers {
        assert!(child.wait().unwrap().success());
        reader.join().unwrap();
    }
    let written = written.lock().unwrap().clone();
    assert_eq!(written.len() as u64, processes * each);
    wait_until(Duration::from_secs(120), "every report stored", || {
        stored_ids(&store).0.len() >= written.len()
    });
    let seconds = start.elapsed().as_secs_f64();
    for mut s in sidecars {
        Command::new("kill").args(["-TERM", &s.id().to_string()]).status().unwrap();
        assert_eq!(s.wait().unwrap().code(), Some(0));
    }
    let (ids, stored_twice, ..) = stored_ids(&store);
    let lost = written.iter().filter(|id| !ids.contains(&id.to_string())).count() as u64;
    assert!(SpoolView::open(&spool).unwrap().list().unwrap().is_empty());
    Figures {
        written: written.len() as u64,
        delivered: ids.len() as u64,
        stored: ids.len() as u64,
        lost,
        stored_twice,
        faults: 0,
        seconds,
    }
}

fn check(f: &Figures) {
    assert_eq!(f.lost, 0, "lost reports");
    assert_eq!(f.stored_twice, 0, "reports stored twice");
    assert!(f.stored >= f.written, "stored at least what was written");
}

#[test]
fn harness_short_chaos_loses_nothing_and_stores_nothing_twice() {
    let f = chaos(30);
    print_table("lastword reliability harness: kill -9 of apps, sidecars and the collector (short run)", &f);
    check(&f);
    assert!(f.faults >= 20);
}

#[test]
fn harness_short_load_of_50_writer_processes() {
    let f = load(50, 10);
    print_table("lastword load: 50 processes writing, two sidecars, one collector (short run)", &f);
    check(&f);
}

#[test]
#[ignore = "long run (minutes): cargo test -p lastword-agent --release --test harness -- --ignored --nocapture"]
fn harness_long_chaos() {
    let rounds = std::env::var("LASTWORD_HARNESS_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    let f = chaos(rounds);
    print_table(&format!("lastword reliability harness: {rounds} rounds of faults"), &f);
    check(&f);
}

#[test]
#[ignore = "long run (minutes): cargo test -p lastword-agent --release --test harness -- --ignored --nocapture"]
fn harness_long_load() {
    let f = load(50, 200);
    print_table("lastword load: 50 processes x 200 reports, two sidecars, one collector", &f);
    check(&f);
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn thousands_of_idle_and_garbage_connections_leave_the_collector_serving_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let collector = Collector::start_with(
        &dir.path().join("store"),
        &tokens,
        "127.0.0.1:0",
        &["--max-connections", "200", "--handshake-timeout-ms", "1000"],
    );
    let before = rss_kib(collector.child.id());
    // 3000 connections: half send nothing, half send garbage instead of a handshake; a few send a
    // handshake without a token.
    let mut hostile = Vec::new();
    for i in 0..3000 {
        let Ok(mut s) = std::net::TcpStream::connect(&collector.listen) else { continue };
        if i % 2 == 0 {
            let _ = s.write_all(b"\x00\xff garbage garbage garbage\r\n\r\n");
        }
        if i % 500 == 0 {
            let _ = s.write_all(
                b"GET /ingest HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            );
        }
        hostile.push(s);
    }
    let during = rss_kib(collector.child.id());
    // A good agent is still served.
    let ids: Vec<EntryId> = {
        let spool = Spool::open(&spool, SpoolOptions::default()).unwrap();
        (0..50)
            .map(|i| spool.write(Kind::Crash, format!(r#"{{"message":"m{i}"}}"#).as_bytes()).unwrap())
            .collect()
    };
    let out = Command::new(BIN)
        .args(["drain", "--deadline", "30s", "--url", &collector.url])
        .arg("--spool")
        .arg(&spool)
        .env("LASTWORD_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let (stored, ..) = stored_ids(&collector.store);
    assert!(ids.iter().all(|id| stored.contains(&id.to_string())));
    drop(hostile);
    println!("collector memory: {} KiB before, {} KiB with 3000 hostile connections", before, during);
    assert!(during < before + 64 * 1024, "memory stays bounded: {before} KiB -> {during} KiB");
}
