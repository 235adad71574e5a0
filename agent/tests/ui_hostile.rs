//! Slowloris against `lastword collect --ui` (issue 17): hundreds of sockets that send a request head
//! a byte at a time, and reconnect when closed, while a real sidecar (`lastword run`) delivers to the
//! same process and a person loads a page. The collector runs with 320 descriptors (`prlimit`), so
//! a UI that kept every socket open would run out of them and stop ingest too. Prints its figures
//! (`--nocapture`): sockets held, page load time, reports delivered, against the same run's baseline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lastword::spool::{Kind, Spool, SpoolOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const BIN: &str = env!("CARGO_BIN_EXE_lastword");
const TOKEN: &str = "slowloris-test-token";
/// Descriptors the collector may open.
const NOFILE: u32 = 320;
/// Attacking addresses (127.0.0.2 ...) and sockets from each: 400 in all, more than NOFILE.
const ATTACKERS: u8 = 4;
const SOCKETS_EACH: usize = 100;
/// Reports the sidecar delivers in each phase.
const REPORTS: usize = 50;
/// A page must load within this under attack (the header timeout is 10 s: a page that waited for a
/// slot to free would take about that; the margin is for a loaded machine).
const PAGE_BOUND: Duration = Duration::from_secs(8);

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `lastword collect --ui 127.0.0.1:0` under `prlimit --nofile`: (the process, ingest URL, UI address).
fn collector(store: &Path) -> (Killed, String, SocketAddr) {
    let mut child = Command::new("prlimit")
        .arg(format!("--nofile={NOFILE}:{NOFILE}"))
        .arg("--")
        .arg(BIN)
        .args(["collect", "--listen", "127.0.0.1:0", "--ui", "127.0.0.1:0", "--store"])
        .arg(store)
        .env("LASTWORD_TOKENS", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("prlimit and lastword start (prlimit is util-linux)");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first.trim().strip_prefix("listening on ").expect("the listening line").to_owned();
    let second = lines.next().unwrap().unwrap();
    let ui = second
        .trim()
        .strip_prefix("web UI on http://")
        .and_then(|r| r.strip_suffix('/'))
        .expect("the UI line")
        .parse()
        .unwrap();
    (Killed(child), url, ui)
}

fn sidecar(spool: &Path, url: &str) -> Killed {
    Killed(
        Command::new(BIN)
            .args(["run", "--window", "16", "--grace", "2s", "--url", url])
            .arg("--spool")
            .arg(spool)
            .env("LASTWORD_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn stored(store: &Path) -> usize {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        store.join("lastword.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return 0;
    };
    db.query_row("SELECT count(*) FROM reports", [], |r| r.get::<_, i64>(0)).map_or(0, |n| n as usize)
}

/// Writes `n` events into the spool of `spool_dir`, starts a sidecar on it (a new one: another
/// process's writes reach a running sidecar at its next rescan, 30 s), and waits until the store
/// holds `total`: the time from the sidecar's start.
async fn deliver(spool_dir: &Path, url: &str, store: &Path, n: usize, total: usize) -> Option<Duration> {
    let spool = Spool::open(spool_dir, SpoolOptions::default()).unwrap();
    for i in 0..n {
        spool.write(Kind::Event, format!(r#"{{"type":"slowloris","seq":{i}}}"#).as_bytes()).unwrap();
    }
    drop(spool);
    let started = Instant::now();
    let _sidecar = sidecar(spool_dir, url);
    while started.elapsed() < Duration::from_secs(60) {
        if stored(store) >= total {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The time one GET / from 127.0.0.1 takes to answer 200, or why it did not.
async fn page_load(ui: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let load = async {
        let mut tcp = tokio::net::TcpStream::connect(ui).await.map_err(|e| e.to_string())?;
        tcp.write_all(format!("GET / HTTP/1.0\r\nHost: {ui}\r\n\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw);
        if text.starts_with("HTTP/1.0 200") && text.contains("</html>") {
            Ok(started.elapsed())
        } else {
            Err(format!("answer: {:?}", text.lines().next()))
        }
    };
    tokio::time::timeout(Duration::from_secs(30), load).await.map_err(|_| "no answer in 30 s".to_owned())?
}

/// One slowloris socket of `from`, for as long as `run`: connects, sends a head a byte a second,
/// reconnects when the server closes it. `held` counts it while it is open.
async fn slowloris(
    from: IpAddr,
    ui: SocketAddr,
    run: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
    opened: Arc<AtomicUsize>,
) {
    let head = format!("GET / HTTP/1.1\r\nHost: {ui}\r\nX-Slow: ");
    while run.load(Ordering::Relaxed) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        let Ok(Ok(mut tcp)) = tokio::time::timeout(Duration::from_secs(5), socket.connect(ui)).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        held.fetch_add(1, Ordering::Relaxed);
        let mut bytes = head.bytes().chain(std::iter::repeat(b'a'));
        let mut buf = [0u8; 256];
        while run.load(Ordering::Relaxed) {
            let Some(b) = bytes.next() else { break };
            if tcp.write_all(&[b]).await.is_err() {
                break;
            }
            // A read ends when the server answers or closes; else a second passes.
            if tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await.is_ok() {
                break;
            }
        }
        held.fetch_sub(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_the_ui_stops_neither_pages_nor_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let spool_dir = dir.path().join("spool");
    let (collector, url, ui) = collector(&store);
    let pid = collector.0.id();
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());

    // Baseline: no attacker.
    let base_page = page_load(ui).await.expect("a page loads");
    let base_fds = fds();
    let base_delivery =
        deliver(&spool_dir, &url, &store, REPORTS, REPORTS).await.expect("the sidecar delivers");

    // The attack: 400 sockets from 4 addresses, kept up for the whole phase.
    let run = Arc::new(AtomicBool::new(true));
    let held = Arc::new(AtomicUsize::new(0));
    let opened = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    for a in 0..ATTACKERS {
        for _ in 0..SOCKETS_EACH {
            let from = IpAddr::from([127, 0, 0, 2 + a]);
            attackers.push(tokio::spawn(slowloris(from, ui, run.clone(), held.clone(), opened.clone())));
        }
    }
    // Let them connect and settle (past one header timeout, so reconnections are part of it).
    let mut peak_held = 0;
    for _ in 0..24 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak_held = peak_held.max(held.load(Ordering::Relaxed));
    }
    let fds_before = fds();
    let attack_page = page_load(ui).await;
    let attack_delivery = deliver(&spool_dir, &url, &store, REPORTS, 2 * REPORTS).await;
    let fds_after = fds();
    let attack_page_2 = page_load(ui).await;
    peak_held = peak_held.max(held.load(Ordering::Relaxed));
    let held_at_end = held.load(Ordering::Relaxed);
    run.store(false, Ordering::Relaxed);
    for a in attackers {
        let _ = a.await;
    }

    println!(
        "slowloris on the web UI ({} sockets from {ATTACKERS} addresses, collector with {NOFILE} descriptors):",
        ATTACKERS as usize * SOCKETS_EACH
    );
    println!(
        "  baseline:     page {base_page:?}, {REPORTS} reports delivered in {base_delivery:?}, {base_fds} descriptors open"
    );
    println!(
        "  under attack: page {attack_page:?} then {attack_page_2:?}, {REPORTS} reports delivered in {attack_delivery:?}; \
         sockets connected {}, open (client side) at peak {peak_held}, at the end {held_at_end}; \
         collector descriptors {fds_before} / {fds_after} (before / after the page and delivery); stored {}",
        opened.load(Ordering::Relaxed),
        stored(&store)
    );
    let attack_page = attack_page.expect("a page loads under attack");
    assert!(attack_page < PAGE_BOUND, "page under attack took {attack_page:?}");
    let attack_page_2 = attack_page_2.expect("a page loads under attack");
    assert!(attack_page_2 < PAGE_BOUND, "page under attack took {attack_page_2:?}");
    attack_delivery.expect("the sidecar delivers under attack");
    assert_eq!(stored(&store), 2 * REPORTS);
}

/// `--ui-tls-cert`/`--ui-tls-key` and `--ui-host` on the command line: the UI line says https, a TLS
/// client is served for the name given and for localhost, and a foreign name gets 421.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_flags_serve_https_for_the_names_given() {
    use tokio_rustls::rustls::{self, pki_types::ServerName};
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let mut child = Command::new(BIN)
        .args(["collect", "--listen", "127.0.0.1:0", "--ui", "127.0.0.1:0", "--store"])
        .arg(dir.path().join("store"))
        .arg("--ui-tls-cert")
        .arg(&cert)
        .arg("--ui-tls-key")
        .arg(&key)
        .args(["--ui-host", "crash.example.com"])
        .env("LASTWORD_TOKENS", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let _collector = Killed(child);
    let _listening = lines.next().unwrap().unwrap();
    let line = lines.next().unwrap().unwrap();
    let ui: SocketAddr = line
        .trim()
        .strip_prefix("web UI on https://")
        .and_then(|r| r.strip_suffix('/'))
        .unwrap_or_else(|| panic!("an https UI line: {line:?}"))
        .parse()
        .unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let status = |host: String| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(ui).await.unwrap();
            let mut tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
            tls.write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
            let mut raw = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut raw)).await;
            let text = String::from_utf8_lossy(&raw).into_owned();
            text.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()).unwrap_or_else(|| panic!("{text}"))
        }
    };
    assert_eq!(status(format!("localhost:{}", ui.port())).await, 200);
    assert_eq!(status("crash.example.com".into()).await, 200);
    assert_eq!(status(format!("attacker.example:{}", ui.port())).await, 421);
}
