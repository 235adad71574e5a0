//! Ingest throughput of 1 KiB crash reports over 1, 8 and 64 concurrent connections: the collector with
//! its durable SQLite store (WAL, synchronous=FULL, group commit), against two baselines measured in
//! the same run and the same process:
//!
//! - **the store's own limit** (the baseline that matters): the same reports, fingerprinted and built
//!   before the clock starts, committed straight into a [`SqliteStore`] of their own with
//!   [`Store::write`], one batch after the other, no network. A batch holds as many reports as the
//!   collector's group commit can gather at that many connections (each connection keeps `max_in_flight`
//!   unanswered; the committer takes at most `batch_max`). The collector cannot beat its store: the
//!   ratio collector/store is how much of it the network, the protocol and the group commit leave.
//! - a bare tokio-tungstenite **echo** server that answers each frame with a tiny frame and stores
//!   nothing (the transport's own limit), for context.
//!
//! Each connection keeps as many reports unanswered as the collector's welcome allows by default
//! (`max_in_flight`), as uploaders do; the echo server's clients keep the same window.
//!
//! `cargo bench -p lastword-agent --bench ingest`; criterion prints each figure, and a summary with the
//! collector/store and collector/echo ratios is printed at the end.

#![allow(clippy::unwrap_used, reason = "a benchmark: a failure is a failed run")]

mod client;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use client::{TOKEN, Ws, connect, round};
use criterion::{BenchmarkId, Criterion, Throughput};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use lastword_collector::server::{self as collect, Config, Limits, Tokens};
use lastword_collector::store::{Batch, NewReport, Origin};
use lastword_collector::store::{SqliteStore, Store as _};
use lastword_protocol::SUBPROTOCOL;
use lastword_spool::{EntryId, Kind};
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

/// The reports of one store batch, built (and fingerprinted, as a connection does) before the clock
/// starts.
fn store_batch(template: &client::Template, origin: &std::sync::Arc<Origin>, n: usize) -> Batch {
    let reports = (0..n)
        .map(|_| {
            let text = template.report();
            let message: serde_json::Value = serde_json::from_str(&text).unwrap();
            let body = message["body"].to_string();
            let digest = lastword_collector::fingerprint::digest(Kind::Crash, &body);
            let id: EntryId = message["id"].as_str().unwrap().parse().unwrap();
            NewReport {
                id,
                kind: Kind::Crash,
                origin: origin.clone(),
                created_ms: id.millis(),
                received_ms: id.millis(),
                fingerprint: digest.fingerprint,
                summary: digest.summary,
                body,
                waits: Vec::new(),
            }
        })
        .collect();
    Batch { reports, losses: Vec::new() }
}

/// Commits `total` reports straight into `store` in batches of `batch` (building them is not timed);
/// returns the time the commits took.
async fn store_round(store: &SqliteStore, total: u64, batch: usize) -> Duration {
    let template = client::Template::new();
    let origin = std::sync::Arc::new(Origin {
        agent: lastword_protocol::Software { name: "bench".into(), version: "0".into() },
        app: "bench".into(),
        release: None,
        host: None,
    });
    let mut left = total as usize;
    let mut took = Duration::ZERO;
    while left > 0 {
        let n = left.min(batch);
        let reports = store_batch(&template, &origin, n);
        let start = std::time::Instant::now();
        let outcomes = store.write(reports).await.unwrap();
        took += start.elapsed();
        assert_eq!(outcomes.len(), n);
        left -= n;
    }
    took
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
        let config = Config {
            tokens: Tokens::from_list([TOKEN]),
            tls: None,
            limits: Limits::default(),
            symbols: None,
        };
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
    let own_store_dir = tempfile::tempdir().unwrap();
    let own_store = SqliteStore::open(own_store_dir.path()).unwrap();
    let mut group = criterion.benchmark_group("ingest_1KiB");
    group.throughput(Throughput::Elements(1));
    for connections in CONNECTIONS {
        // The largest batch the group commit can gather from this many connections.
        let batch = (connections * client::WINDOW as usize).min(collect::DEFAULT_BATCH_MAX);
        group.bench_with_input(BenchmarkId::new("store", connections), &connections, |b, _| {
            b.iter_custom(|iters| {
                let took = runtime.block_on(store_round(&own_store, iters, batch));
                let mut totals = totals.lock().unwrap();
                let entry = totals.entry(("store", connections)).or_default();
                entry.0 += iters;
                entry.1 += took;
                took
            });
        });
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
    println!(
        "{:>11}  {:>12}  {:>12}  {:>12}  {:>15}  {:>15}",
        "connections", "store alone", "collector", "echo", "collector/store", "collector/echo"
    );
    for c in CONNECTIONS {
        let (store, echo, collector) = (rate("store", c), rate("echo", c), rate("collector", c));
        println!(
            "{c:>11}  {store:>12.0}  {collector:>12.0}  {echo:>12.0}  {:>14.0}%  {:>14.0}%",
            100.0 * collector / store,
            100.0 * collector / echo
        );
    }
    println!("(store alone: the same reports committed straight into a SqliteStore in batches of what the");
    println!(" group commit can gather at that many connections, no network: the collector's real limit)");
}
