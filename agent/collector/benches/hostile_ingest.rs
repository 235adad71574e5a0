//! The collector under attack (issue 17), in one process, each phase against a fresh collector with a
//! SQLite store, and the baseline in the same run:
//!
//! 1. **baseline**: agents (websocket clients with a token, the uploader's window, 1 KiB crash
//!    reports) deliver their reports; no attacker.
//! 2. **idle sockets**: the same delivery while N sockets are held open without authenticating (half
//!    send nothing, half send half an upgrade request and stop: slowloris). N is in the thousands,
//!    bounded by the descriptors the process may open (the soft `ulimit -n` is raised to the hard
//!    one; every socket costs two descriptors here, the attacker's end and the collector's).
//! 3. **largest messages**: every connection sends its largest allowed message at once: a JSON
//!    report of `max_message_bytes`, then a `deflate` report that inflates to exactly
//!    `max_inflated_bytes`, then a compression bomb (twice that once inflated).
//!
//! Printed: reports delivered (accepted), refused (handshakes refused or failed), the time taken, and
//! the peak resident memory of the process (VmRSS of /proc/self/status, sampled every 10 ms) during
//! each phase, beside the baseline's. The collector's RSS is the process's (the attackers' side of a
//! socket costs a few hundred bytes of user memory).
//!
//! `cargo bench -p lastword-collector --bench hostile_ingest` (`-- --quick`: fewer reports and
//! sockets); `cargo test --benches` runs it small.

#![allow(clippy::unwrap_used, reason = "a benchmark: a failure is a failed run")]

#[path = "../../../tests/benches-common/mode.rs"]
mod mode;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use lastword_collector::server::{self as collect, Config, Limits, Tokens};
use lastword_collector::store::SqliteStore;
use lastword_protocol::{ClientMessage, Report, SUBPROTOCOL, ServerMessage, bearer};
use lastword_spool::{EntryId, Kind};
use mode::RunMode;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const TOKEN: &str = "bench-token";
/// Reports an agent keeps unanswered (the uploader's default window).
const WINDOW: usize = 256;

/// The resident memory of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The peak of [`rss`] while it runs, sampled on a thread of its own.
struct Peak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peak {
    fn start() -> Self {
        let peak = Arc::new(AtomicU64::new(rss()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (Arc::clone(&peak), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self { peak, stop, thread: Some(thread) }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.peak.load(Ordering::Relaxed).max(rss())
    }
}

/// Raises the soft descriptor limit to the hard one; returns the limit in force.
fn raise_nofile() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
    getrlimit(Resource::Nofile).current.unwrap_or(1 << 20)
}

struct Collector {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), collect::CollectError>>,
    _dir: tempfile::TempDir,
}

async fn start(limits: Limits) -> Collector {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config { tokens: Tokens::from_list([TOKEN]), tls: None, limits, symbols: None };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(collect::run(listener, config, store, async move {
        let _ = stopped.await;
    }));
    Collector { addr, stop, task, _dir: dir }
}

impl Collector {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

type Ws = WebSocketStream<TcpStream>;

/// Connects with the token and says hello; `None` if the collector refused or dropped the connection.
async fn agent_connect(addr: SocketAddr) -> Option<Ws> {
    let mut request = format!("ws://{addr}/ingest").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
    request.headers_mut().insert("Authorization", HeaderValue::from_str(&bearer(TOKEN)).unwrap());
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await.ok()?.ok()?;
    let _ = tcp.set_nodelay(true);
    let (mut ws, _) =
        tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::client_async(request, tcp))
            .await
            .ok()?
            .ok()?;
    let hello = r#"{"type":"hello","protocol":1,"agent":{"name":"bench","version":"0"},"app":"bench"}"#;
    ws.send(Message::text(hello)).await.ok()?;
    match ws.next().await {
        Some(Ok(Message::Text(_))) => Some(ws),
        _ => None,
    }
}

/// A 1 KiB crash report.
fn crash_report() -> String {
    let frames: Vec<String> =
        (0..12).map(|i| format!(r#"{{"function":"app::module::function_{i}","line":{i}}}"#)).collect();
    let body = format!(
        r#"{{"message":"panicked at src/worker.rs:17: index out of bounds","frames":[{}],"pad":"{}"}}"#,
        frames.join(","),
        "p".repeat(330)
    );
    ClientMessage::Report(
        Report::new(EntryId::generate(), Kind::Crash, 1_764_165_000_000, body.as_bytes()).unwrap(),
    )
    .to_json()
}

/// What the agents achieved.
#[derive(Default, Clone, Copy)]
struct Delivery {
    delivered: u64,
    refused: u64,
    took: Duration,
}

/// `agents` agents deliver `reports` each, retrying a refused connection after 50 ms for up to 10 s.
async fn deliver(addr: SocketAddr, agents: usize, reports: usize) -> Delivery {
    let start = Instant::now();
    let tasks: Vec<_> = (0..agents)
        .map(|_| {
            tokio::spawn(async move {
                let (mut delivered, mut refused) = (0u64, 0u64);
                let deadline = Instant::now() + Duration::from_secs(10);
                let mut ws = loop {
                    match agent_connect(addr).await {
                        Some(ws) => break ws,
                        None if Instant::now() < deadline => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        None => return (delivered, refused + 1),
                    }
                };
                let (mut sent, mut answered) = (0usize, 0usize);
                while answered < reports {
                    while sent < reports && sent - answered < WINDOW {
                        if ws.feed(Message::text(crash_report())).await.is_err() {
                            return (delivered, refused);
                        }
                        sent += 1;
                    }
                    if ws.flush().await.is_err() {
                        return (delivered, refused);
                    }
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => {
                            answered += 1;
                            delivered += u64::from(t.starts_with(r#"{"type":"accepted""#));
                        }
                        Some(Ok(_)) => {}
                        _ => return (delivered, refused),
                    }
                }
                let _ = ws.close(None).await;
                (delivered, refused)
            })
        })
        .collect();
    let mut total = Delivery::default();
    for t in tasks {
        let (d, r) = t.await.unwrap();
        total.delivered += d;
        total.refused += r;
    }
    total.took = start.elapsed();
    total
}

/// Opens `n` sockets that never authenticate: half silent, half with half an upgrade request.
async fn attackers(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let Ok(mut tcp) = TcpStream::connect(addr).await else { break };
        if i % 2 == 1 {
            let _ = tcp.write_all(b"GET /ingest HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n").await;
        }
        held.push(tcp);
    }
    held
}

/// A `deflate` report of a JSON string of exactly `len` bytes once inflated.
fn inflating_to(len: usize) -> String {
    let mut body = vec![b'a'; len];
    body[0] = b'"';
    body[len - 1] = b'"';
    ClientMessage::Report(Report::new(EntryId::generate(), Kind::Log, 1, &body).unwrap()).to_json()
}

/// A JSON report whose message is `len` bytes long.
fn json_of(len: usize) -> String {
    let head =
        format!(r#"{{"type":"report","id":"{}","kind":"log","created_ms":1,"body":""#, EntryId::generate());
    let pad = len - head.len() - 2;
    format!("{head}{}\"}}", "a".repeat(pad))
}

/// Answers to `messages` sent on `connections` connections at once (each connection sends one
/// message and reads its answer): (accepted, rejected too_large, retry_later, other).
async fn all_send(addr: SocketAddr, connections: usize, message: Arc<String>) -> [u64; 4] {
    let mut pool = Vec::new();
    for _ in 0..connections {
        if let Some(ws) = agent_connect(addr).await {
            pool.push(ws);
        }
    }
    let tasks: Vec<_> = pool
        .into_iter()
        .map(|mut ws| {
            let message = Arc::clone(&message);
            tokio::spawn(async move {
                // Each connection sends its own copy, as a real client would (same id: duplicates
                // cost the store nothing, so the figure is the collector's).
                ws.send(Message::text(message.as_str())).await.ok()?;
                let answer = loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => {
                            break serde_json::from_str::<ServerMessage>(&t).ok()?;
                        }
                        Some(Ok(_)) => {}
                        _ => return None,
                    }
                };
                let _ = ws.close(None).await;
                Some(answer)
            })
        })
        .collect();
    let mut counts = [0u64; 4];
    for t in tasks {
        let slot = match t.await.unwrap() {
            Some(ServerMessage::Accepted { .. } | ServerMessage::Duplicate { .. }) => 0,
            Some(ServerMessage::Rejected { .. }) => 1,
            Some(ServerMessage::RetryLater { .. }) => 2,
            _ => 3,
        };
        counts[slot] += 1;
    }
    counts
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn main() {
    let mode = RunMode::from_args();
    if mode.list {
        return;
    }
    let small = mode.dry || mode.quick;
    let nofile = raise_nofile();
    // Two descriptors a socket (both ends here), a margin for the rest of the process.
    let budget = usize::try_from(nofile.saturating_sub(512) / 2).unwrap_or(usize::MAX);
    let idle = if mode.dry { 200 } else { budget.min(if small { 2_000 } else { 8_000 }) };
    let (agents, reports) = if mode.dry {
        (4, 50)
    } else if small {
        (8, 500)
    } else {
        (8, 2_500)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let limits = Limits {
            // The attackers are held all through the delivery: the worst case of the deadline.
            handshake_timeout_ms: 60_000,
            max_handshakes: idle + 1024,
            ..Limits::default()
        };

        let peak = Peak::start();
        let before = rss();
        let collector = start(limits.clone()).await;
        let baseline = deliver(collector.addr, agents, reports).await;
        collector.stop().await;
        let baseline_peak = peak.finish();

        let peak = Peak::start();
        let collector = start(limits.clone()).await;
        let held = attackers(collector.addr, idle).await;
        let opened = held.len();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let attacked = deliver(collector.addr, agents, reports).await;
        let attacked_rss = rss();
        drop(held);
        collector.stop().await;
        let attacked_peak = peak.finish();

        println!("\nhostile ingest: {agents} agents x {reports} reports of 1 KiB; ulimit -n {nofile}");
        println!(
            "{:<34} {:>10} {:>8} {:>9} {:>12} {:>14}",
            "phase", "delivered", "refused", "time s", "reports/s", "peak RSS MiB"
        );
        let row = |name: &str, d: Delivery, peak: u64| {
            println!(
                "{name:<34} {:>10} {:>8} {:>9.2} {:>12.0} {:>14.1}",
                d.delivered,
                d.refused,
                d.took.as_secs_f64(),
                d.delivered as f64 / d.took.as_secs_f64().max(f64::MIN_POSITIVE),
                mib(peak)
            );
        };
        row("baseline (no attackers)", baseline, baseline_peak);
        row(&format!("{opened} unauthenticated sockets held"), attacked, attacked_peak);
        println!(
            "(RSS before: {:.1} MiB; with the sockets held: {:.1} MiB, {:.0} bytes a socket over the baseline's peak)",
            mib(before),
            mib(attacked_rss),
            attacked_rss.saturating_sub(baseline_peak) as f64 / opened.max(1) as f64
        );
        assert_eq!(baseline.delivered, (agents * reports) as u64, "the baseline delivers everything");
        assert_eq!(attacked.delivered, (agents * reports) as u64, "the agents deliver everything under attack");

        // Every connection sends its largest allowed message at once.
        let connections = if mode.dry { 8 } else if small { 32 } else { 128 };
        let limits = Limits {
            max_message_bytes: 1 << 20,
            max_inflated_bytes: 16 << 20,
            queue_bytes: 64 << 20,
            ..Limits::default()
        };
        let collector = start(limits.clone()).await;
        println!(
            "\n{connections} connections each sending its largest message (max_message_bytes {} MiB, \
             max_inflated_bytes {} MiB, queue_bytes {} MiB)",
            limits.max_message_bytes >> 20,
            limits.max_inflated_bytes >> 20,
            limits.queue_bytes >> 20
        );
        println!(
            "{:<34} {:>9} {:>9} {:>12} {:>6} {:>14} {:>12}",
            "message", "accepted", "rejected", "retry_later", "lost", "peak RSS MiB", "over base"
        );
        let cases: [(&str, String); 3] = [
            ("JSON of max_message_bytes", json_of(limits.max_message_bytes)),
            ("deflate inflating to the limit", inflating_to(limits.max_inflated_bytes)),
            ("bomb (twice the limit inflated)", inflating_to(2 * limits.max_inflated_bytes)),
        ];
        for (name, message) in cases {
            let base = rss();
            let peak = Peak::start();
            let [accepted, rejected, retry, lost] = all_send(collector.addr, connections, Arc::new(message)).await;
            let top = peak.finish();
            println!(
                "{name:<34} {accepted:>9} {rejected:>9} {retry:>12} {lost:>6} {:>14.1} {:>12.1}",
                mib(top),
                mib(top.saturating_sub(base))
            );
        }
        collector.stop().await;
        println!(
            "(bounded by queue_bytes for the bodies waiting for the store, plus per connection its read \
             buffer and one message; without the streaming limit a bomb would have inflated to 32 MiB on each)"
        );
    });
}
