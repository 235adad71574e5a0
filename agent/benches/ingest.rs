//! Ingest throughput of 1 KiB crash reports over 1, 8 and 64 concurrent connections: the collector with
//! its durable SQLite store (WAL, synchronous=FULL, group commit) against a bare tokio-tungstenite echo
//! server that answers each frame with a tiny frame and stores nothing (the transport's own limit), in
//! the same run and the same process. Each connection keeps as many reports unanswered as the collector's welcome allows by default
//! (`max_in_flight`), as uploaders do; the echo server's clients keep the same window.
//!
//! `cargo bench -p lastword-agent --bench ingest`; criterion prints each figure, and a summary with the
//! collector/echo ratio is printed at the end.

#![allow(clippy::unwrap_used, reason = "a benchmark: a failure is a failed run")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use lastword::protocol::{SUBPROTOCOL, bearer};
use lastword_agent::collect::{self, Config, Limits, SqliteStore, Tokens};
use lastword_spool::EntryId;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

const TOKEN: &str = "bench-token";
/// Reports a connection keeps unanswered: what the collector's welcome allows by default.
const WINDOW: u64 = collect::DEFAULT_MAX_IN_FLIGHT as u64;
const CONNECTIONS: [usize; 3] = [1, 8, 64];

type Ws = WebSocketStream<TcpStream>;
/// (server, connections) -> (reports, time), over every round of the run.
type Totals = BTreeMap<(&'static str, usize), (u64, Duration)>;

/// A report message of about 1 KiB (the body is a crash with a message and frames), split around its id
/// so that making one costs the client little: the figures are the servers', not the client's.
struct Template {
    head: String,
    tail: String,
}

impl Template {
    fn new() -> Self {
        let frames: Vec<String> =
            (0..12).map(|i| format!(r#"{{"function":"app::module::function_{i}","line":{i}}}"#)).collect();
        let tail = format!(
            r#"","kind":"crash","created_ms":1764165000000,"body":{{"message":"panicked at src/worker.rs:17: index out of bounds","thread":"worker-3","frames":[{}],"pad":"{}"}}}}"#,
            frames.join(","),
            "p".repeat(330)
        );
        Self { head: r#"{"type":"report","id":""#.to_owned(), tail }
    }

    fn report(&self) -> String {
        let mut id = [0u8; 26];
        EntryId::generate().encode(&mut id);
        let mut text = String::with_capacity(self.head.len() + 26 + self.tail.len());
        text.push_str(&self.head);
        text.push_str(std::str::from_utf8(&id).unwrap());
        text.push_str(&self.tail);
        text
    }
}

#[allow(clippy::result_large_err, reason = "the shape of tungstenite's Callback")]
fn name_subprotocol(_: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    response.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
    Ok(response)
}

async fn echo_server(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, name_subprotocol).await else { return };
            // Answer every frame with a tiny frame; one flush for all the frames already read.
            while let Some(Ok(message)) = ws.next().await {
                if !message.is_text() {
                    continue;
                }
                let mut answers = 1;
                while let Some(Some(Ok(m))) = ws.next().now_or_never() {
                    answers += usize::from(m.is_text());
                }
                for _ in 0..answers {
                    if ws.feed(Message::text(r#"{"type":"ok"}"#)).await.is_err() {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn connect(addr: SocketAddr) -> Ws {
    let mut request = format!("ws://{addr}/ingest").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
    request.headers_mut().insert("Authorization", HeaderValue::from_str(&bearer(TOKEN)).unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    let hello = r#"{"type":"hello","protocol":1,"agent":{"name":"bench","version":"0"},"app":"bench"}"#;
    ws.send(Message::text(hello)).await.unwrap();
    ws.next().await.unwrap().unwrap(); // the welcome (or the echo's answer)
    ws
}

/// Sends `n` reports on `ws` with up to WINDOW unanswered, and waits for every answer.
async fn pump(mut ws: Ws, n: u64, expect_accepted: bool) -> Ws {
    static TEMPLATE: std::sync::LazyLock<Template> = std::sync::LazyLock::new(Template::new);
    let (mut sent, mut answered) = (0, 0);
    while answered < n {
        while sent < n && sent - answered < WINDOW {
            ws.feed(Message::text(TEMPLATE.report())).await.unwrap();
            sent += 1;
        }
        ws.flush().await.unwrap();
        let mut check = |m: Message| {
            let text = m.into_text().unwrap();
            assert!(!expect_accepted || text.starts_with(r#"{"type":"accepted""#), "{text}");
            answered += 1;
        };
        check(ws.next().await.unwrap().unwrap());
        while let Some(Some(Ok(m))) = ws.next().now_or_never() {
            check(m);
        }
    }
    ws
}

/// Sends `total` reports spread over the connections; returns the time it took.
async fn round(pool: &mut Vec<Ws>, total: u64, expect_accepted: bool) -> Duration {
    let k = pool.len() as u64;
    let start = Instant::now();
    let tasks: Vec<_> = pool
        .drain(..)
        .enumerate()
        .map(|(i, ws)| {
            let n = total / k + u64::from((i as u64) < total % k);
            tokio::spawn(pump(ws, n, expect_accepted))
        })
        .collect();
    for t in tasks {
        pool.push(t.await.unwrap());
    }
    start.elapsed()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let (echo_addr, collector_addr) = runtime.block_on(async {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(echo_server(echo));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let collector_addr = listener.local_addr().unwrap();
        let config = Config { tokens: Tokens::from_list([TOKEN]), tls: None, limits: Limits::default() };
        let store = SqliteStore::open(store_dir.path()).unwrap();
        tokio::spawn(collect::run(listener, config, store, std::future::pending()));
        (echo_addr, collector_addr)
    });

    let totals: Mutex<Totals> = Mutex::default();
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1500))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let mut group = criterion.benchmark_group("ingest_1KiB");
    group.throughput(Throughput::Elements(1));
    for connections in CONNECTIONS {
        for (server, addr) in [("echo", echo_addr), ("collector", collector_addr)] {
            group.bench_with_input(BenchmarkId::new(server, connections), &connections, |b, &connections| {
                let mut pool: Vec<Ws> =
                    runtime.block_on(futures_util::future::join_all((0..connections).map(|_| connect(addr))));
                b.iter_custom(|iters| {
                    let took = runtime.block_on(round(&mut pool, iters, server == "collector"));
                    let mut totals = totals.lock().unwrap();
                    let entry = totals.entry((server, connections)).or_default();
                    entry.0 += iters;
                    entry.1 += took;
                    took
                });
            });
        }
    }
    group.finish();
    criterion.final_summary();

    let totals = totals.lock().unwrap();
    let rate = |server, c| {
        let (n, t): (u64, Duration) = totals.get(&(server, c)).copied().unwrap_or_default();
        n as f64 / t.as_secs_f64().max(f64::MIN_POSITIVE)
    };
    println!("\ningest of 1 KiB reports, reports/s (all rounds of the run, warm-up included)");
    println!("{:>11}  {:>12}  {:>12}  {:>16}", "connections", "echo", "collector", "collector/echo");
    for c in CONNECTIONS {
        let (echo, collector) = (rate("echo", c), rate("collector", c));
        println!("{c:>11}  {echo:>12.0}  {collector:>12.0}  {:>15.0}%", 100.0 * collector / echo);
    }
}
