//! Ingest of 1 KiB crash reports over 8 connections into three set-ups, in the same run and the same
//! process: the collector over its SQLite store; one collector over the PostgreSQL store; two
//! collectors over the same PostgreSQL database, the connections split between them. The PostgreSQL
//! server is a throwaway one (tests/src/postgres.rs: fsync off, so the figures are the collectors' and
//! the protocol's, not this machine's disk). At the end it prints reports/s and the ratio
//! two-collectors / one-collector.
//!
//! All three share the process's cores, so on a small machine the ratio says how much the second
//! collector costs or gains through the database (contention on rows, transactions), not how far
//! a second machine would take it.
//!
//! `cargo bench -p lastword-agent --bench scale_out`

#![allow(clippy::unwrap_used, reason = "a benchmark: a failure is a failed run")]

mod client;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use client::{TOKEN, Ws, connect, round};
use criterion::{BenchmarkId, Criterion, Throughput};
use lastword_collector::server::{self as collect, Config, Limits, Tokens};
use lastword_collector::store::{PostgresStore, SqliteStore, Waits};
use lastword_tests::postgres::TempPostgres;
use tokio::net::TcpListener;

const CONNECTIONS: usize = 8;

async fn serve(store: impl Waits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config =
        Config { tokens: Tokens::from_list([TOKEN]), tls: None, limits: Limits::default(), symbols: None };
    tokio::spawn(collect::run(listener, config, store, std::future::pending()));
    addr
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let pg = TempPostgres::start();
    let one_url = pg.create_database("one");
    let two_url = pg.create_database("two");
    let setups: Vec<(&'static str, Vec<SocketAddr>)> = runtime.block_on(async {
        let sqlite = serve(SqliteStore::open(store_dir.path()).unwrap()).await;
        let one = serve(PostgresStore::open(&one_url).await.unwrap()).await;
        let two_a = serve(PostgresStore::open(&two_url).await.unwrap()).await;
        let two_b = serve(PostgresStore::open(&two_url).await.unwrap()).await;
        vec![
            ("sqlite", vec![sqlite]),
            ("postgres_1_collector", vec![one]),
            ("postgres_2_collectors", vec![two_a, two_b]),
        ]
    });

    let totals: Mutex<BTreeMap<&'static str, (u64, Duration)>> = Mutex::default();
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1500))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let mut group = criterion.benchmark_group("scale_out_1KiB");
    group.throughput(Throughput::Elements(1));
    for (name, addrs) in &setups {
        group.bench_with_input(BenchmarkId::new(*name, CONNECTIONS), &CONNECTIONS, |b, &connections| {
            // The connections go round-robin over the set-up's collectors.
            let mut pool: Vec<Ws> = runtime.block_on(futures_util::future::join_all(
                (0..connections).map(|i| connect(addrs[i % addrs.len()])),
            ));
            b.iter_custom(|iters| {
                let took = runtime.block_on(round(&mut pool, iters, true));
                let mut totals = totals.lock().unwrap();
                let entry = totals.entry(*name).or_default();
                entry.0 += iters;
                entry.1 += took;
                took
            });
        });
    }
    group.finish();
    criterion.final_summary();

    let totals = totals.lock().unwrap();
    let rate = |name: &str| {
        let (n, t): (u64, Duration) = totals.get(name).copied().unwrap_or_default();
        n as f64 / t.as_secs_f64().max(f64::MIN_POSITIVE)
    };
    println!(
        "\ningest of 1 KiB reports over {CONNECTIONS} connections, reports/s (all rounds, warm-up included)"
    );
    for (name, _) in &setups {
        println!("{name:>22}  {:>10.0}", rate(name));
    }
    let ratio = rate("postgres_2_collectors") / rate("postgres_1_collector").max(f64::MIN_POSITIVE);
    println!("{:>22}  {ratio:>10.2}", "two / one collector");
    drop(runtime);
    drop(pg);
}
