//! Ingest throughput of 1 KiB crash reports over 1, 8 and 64 concurrent connections: the collector with
//! its durable SQLite store (WAL, synchronous=FULL, group commit) against a bare tokio-tungstenite echo
//! server that answers each frame with a tiny frame and stores nothing (the transport's own limit), in
//! the same run and the same process. Each connection keeps as many reports unanswered as the collector's welcome allows by default
//! (`max_in_flight`), as uploaders do; the echo server's clients keep the same window.
//!
//! `cargo bench -p lastword-agent --bench ingest`; criterion prints each figure, and a summary with the
//! collector/echo ratio is printed at the end.

#![allow(clippy::unwrap_used, reason = "a benchmark: a failure is a failed run")]

mod client;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use client::{TOKEN, Ws, connect, round};
use criterion::{BenchmarkId, Criterion, Throughput};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use lastword::protocol::SUBPROTOCOL;
use lastword_agent::collect::{self, Config, Limits, SqliteStore, Tokens};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;

const CONNECTIONS: [usize; 3] = [1, 8, 64];

/// (server, connections) -> (reports, time), over every round of the run.
type Totals = BTreeMap<(&'static str, usize), (u64, Duration)>;

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
