//! Benchmarks of a log record's cost on the caller's thread: lastword against `tracing-appender`'s
//! non-blocking writer, in the same process.
//!
//! `cargo bench -p lastword --bench logs` (add `-- --quick` for a fast run) emits the same `tracing`
//! event (`warn!` with a message and two fields) through three paths, side by side in the criterion
//! group `log_record`:
//!
//! - `appender`: `tracing_subscriber::fmt` formatting each event on the caller's thread and handing
//!   the line to `tracing_appender::non_blocking`, whose worker thread appends it to a file. This is
//!   the baseline.
//! - `lastword_layer`: [`lastword::Layer`] on a `tracing_subscriber` registry: the record enters the
//!   breadcrumb ring and the bounded queue of lastword's log writer, whose thread stores it in the
//!   spool in batches.
//! - `lastword_log`: [`lastword::log`] with the message formatted by the caller, without `tracing`
//!   (shown for reference; the target compares the two subscribers).
//!
//! Only the caller's side is timed. Records are emitted in chunks of [`CHUNK`]; after each chunk,
//! untimed, both writers are drained (lastword's [`lastword::Guard::flush`]; for the appender, a wait
//! until its worker has written every line), so that neither queue fills up and turns records into
//! cheap drops. Both queues are larger than a chunk. The records dropped are counted anyway
//! (lastword: stored records and the `dropped_before` of the log batches read back from the spool;
//! the appender: its error counter) and printed.
//!
//! `lastword::init` runs once in this process (it installs process-wide hooks), with a spool in a
//! temporary directory, no collector and no signal handlers.
//!
//! Criterion runs one benchmark after the other; the target is a ratio, so the binary then measures
//! it again with the sides interleaved (the order alternating between rounds) and prints a table of
//! medians at the end; judge the target by that table:
//!
//! ```text
//! log record (caller's thread): lastword layer X ns, appender Y ns, ratio Z (target <= 1.0)
//! ```
//!
//! Under `cargo test --benches` (criterion's test mode), `--list` and `--profile-time` the table is
//! skipped.

use std::time::Duration;

use criterion::{Criterion, Throughput};
use lastword::report::LogBatch;
use lastword::spool::{Kind, Limits};
use lastword::{Config, Guard, Level};
use tempfile::TempDir;
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;

#[path = "../../tests/benches-common/stats.rs"]
mod stats;
use stats::{median, quantile, verdict};
#[path = "../../tests/benches-common/appender.rs"]
mod appender;
use appender::{Appender, time};
#[path = "../../tests/benches-common/mode.rs"]
mod mode;
use mode::RunMode;

/// Target from the issue: lastword no slower than the appender on the caller's thread.
const RATIO_TARGET: f64 = 1.0;

/// Records emitted between two drains of the writers.
const CHUNK: u64 = 8_192;
/// lastword's log queue: well above a chunk, so that a drained queue never fills within one.
const LASTWORD_QUEUE: usize = 1 << 16;
/// How long a drain may take before the bench gives up.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    let mode = RunMode::from_args();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
        .configure_from_args();

    let mut sides = Sides::new();
    let mut group = c.benchmark_group("log_record");
    group.throughput(Throughput::Elements(1));
    group.bench_function("appender", |b| b.iter_custom(|n| sides.run(Side::Appender, n)));
    group.bench_function("lastword_layer", |b| b.iter_custom(|n| sides.run(Side::LastwordLayer, n)));
    group.bench_function("lastword_log", |b| b.iter_custom(|n| sides.run(Side::LastwordLog, n)));
    group.finish();

    let table = mode.measure.then(|| interleaved(&mut sides, &mode));
    let losses = sides.finish();

    c.final_summary();
    if let Some(table) = table {
        println!();
        println!("lastword logs: medians of interleaved runs in this process");
        for line in table.iter().chain(&losses) {
            println!("  {line}");
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Appender,
    LastwordLayer,
    LastwordLog,
}

/// The event every side emits: a warning with a message and two fields, as an application logs.
#[inline(never)]
fn emit(i: u64) {
    tracing::warn!(target: "bench", request = i, user = "alice", "upstream answered slowly");
}

/// The same record for [`lastword::log`], formatted by the caller as the layer would.
#[inline(never)]
fn log_direct(i: u64) {
    lastword::log(Level::Warn, "bench", format!("\"upstream answered slowly\" request={i} user=\"alice\""));
}

/// Both writers, set up once in this process.
struct Sides {
    _dir: TempDir,
    lastword: Guard,
    lastword_dispatch: Dispatch,
    /// Records sent to lastword, stored records read back, and drops reported by the batches.
    lastword_sent: u64,
    lastword_stored: u64,
    lastword_dropped: u64,
    appender: Appender,
}

impl Sides {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lastword-logs-bench-")
            .tempdir_in(std::env::temp_dir())
            .expect("create a temporary directory");
        let lastword = lastword::init(
            Config::new("lastword-bench")
                .spool(dir.path().join("spool"))
                .no_url()
                // Signal handlers on, as an application has them: each record also enters the
                // fatal-signal report's breadcrumb ring.
                .signals(true)
                .log_level(Level::Warn)
                .log_queue(LASTWORD_QUEUE)
                .limits(Limits { max_bytes: u64::MAX, max_entries: u64::MAX }),
        )
        .expect("lastword::init runs once, at the start of the bench");
        let lastword_dispatch =
            Dispatch::new(tracing_subscriber::registry().with(lastword::Layer::default()));

        let appender = Appender::new(dir.path());
        Self {
            _dir: dir,
            lastword,
            lastword_dispatch,
            lastword_sent: 0,
            lastword_stored: 0,
            lastword_dropped: 0,
            appender,
        }
    }

    /// Emits `n` records through `side` in chunks, draining after each; returns the time spent
    /// emitting only.
    fn run(&mut self, side: Side, n: u64) -> Duration {
        let mut timed = Duration::ZERO;
        let mut next = 0;
        while next < n {
            let end = (next + CHUNK).min(n);
            timed += match side {
                Side::Appender => tracing::dispatcher::with_default(&self.appender.dispatch, || {
                    time(|| (next..end).for_each(emit))
                }),
                Side::LastwordLayer => tracing::dispatcher::with_default(&self.lastword_dispatch, || {
                    time(|| (next..end).for_each(emit))
                }),
                Side::LastwordLog => time(|| (next..end).for_each(log_direct)),
            };
            match side {
                Side::Appender => {
                    self.appender.sent += end - next;
                    self.appender.drain(DRAIN_TIMEOUT);
                }
                Side::LastwordLayer | Side::LastwordLog => {
                    self.lastword_sent += end - next;
                    self.drain_lastword();
                }
            }
            next = end;
        }
        timed
    }

    /// Stores lastword's queued records, then reads the log batches back out of the spool (as the
    /// uploader would), counting the records stored and the drops the batches report.
    fn drain_lastword(&mut self) {
        self.lastword.flush(DRAIN_TIMEOUT).expect("lastword's log writer drains its queue");
        let spool = self.lastword.spool();
        while let Some(claim) = spool.claim().expect("claim a log batch") {
            assert_eq!(claim.kind(), Kind::Log, "only log batches are written in this bench");
            let batch: LogBatch = serde_json::from_slice(claim.body()).expect("a log batch's JSON");
            self.lastword_stored += batch.records.len() as u64;
            self.lastword_dropped += batch.dropped_before;
            claim.ack().expect("ack a log batch");
        }
    }

    /// Stops both writers; returns the lines that say what each lost.
    fn finish(mut self) -> Vec<String> {
        let appender = self.appender.finish();
        vec![
            format!(
                "lastword: {} records sent, {} stored, {} dropped (queue full)",
                self.lastword_sent, self.lastword_stored, self.lastword_dropped
            ),
            appender,
        ]
    }
}

/// Alternates the sides one chunk at a time; the ratio is the median of the rounds' ratios, so that
/// a slow stretch of the machine weighs on both sides of a round alike.
fn interleaved(sides: &mut Sides, mode: &RunMode) -> Vec<String> {
    const ORDERS: [[Side; 3]; 2] = [
        [Side::Appender, Side::LastwordLayer, Side::LastwordLog],
        [Side::LastwordLog, Side::LastwordLayer, Side::Appender],
    ];
    let per_record = |d: Duration| d.as_secs_f64() * 1e9 / CHUNK as f64;
    // One round to warm up, not counted.
    for side in ORDERS[0] {
        sides.run(side, CHUNK);
    }
    let (mut appender, mut layer, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ratios, mut direct_ratios) = (Vec::new(), Vec::new());
    for round in 0..mode.rounds(31) {
        let (mut a, mut l, mut d) = (0.0, 0.0, 0.0);
        for side in ORDERS[round % 2] {
            let ns = per_record(sides.run(side, CHUNK));
            match side {
                Side::Appender => a = ns,
                Side::LastwordLayer => l = ns,
                Side::LastwordLog => d = ns,
            }
        }
        appender.push(a);
        layer.push(l);
        direct.push(d);
        ratios.push(l / a);
        direct_ratios.push(d / a);
    }
    let ratio = median(&mut ratios);
    vec![
        format!(
            "log record (caller's thread): lastword layer {:.0} ns, appender {:.0} ns, ratio {:.2} \
             (target <= {RATIO_TARGET:.1}) {} [{} rounds of {CHUNK}, ratio quartiles {:.2}..{:.2}]",
            median(&mut layer),
            median(&mut appender),
            ratio,
            verdict(ratio <= RATIO_TARGET),
            ratios.len(),
            quantile(&mut ratios, 0.25),
            quantile(&mut ratios, 0.75),
        ),
        format!(
            "lastword::log, no tracing (reference): {:.0} ns, ratio to the appender {:.2}",
            median(&mut direct),
            median(&mut direct_ratios),
        ),
    ]
}
