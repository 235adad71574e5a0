//! Benchmark of a handled error's cost on the caller's thread: [`lastword::capture_error`] against
//! `tracing::error!` with the error as a field, formatted by `tracing_subscriber::fmt` and handed to
//! `tracing-appender`'s non-blocking writer (the baseline), in the same process.
//!
//! `cargo bench -p lastword --bench events` (add `-- --quick` for a fast run). Both sides report the
//! same error (a `ParseIntError` wrapped in an error of the application's, two levels deep) from the
//! same call depth:
//!
//! - `appender`: `tracing::error!(error = %e, source = %e.source(), "lookup failed")`: the line is
//!   formatted on the caller's thread and queued for the appender's worker, which writes a file.
//! - `capture_error`: the raw capture (the return addresses of the caller's stack, its modules), the
//!   error's type, message and chain, and a `try_send` to lastword's event writer, which stores each
//!   event in the spool on its own thread.
//!
//! Only the caller's side is timed. Events are captured in chunks of [`CHUNK`]; after each chunk,
//! untimed, both writers are drained (`lastword::flush`, then the events read back and acked; for the
//! appender, a wait until its worker wrote every line), so that no queue fills up and turns events
//! into cheap drops; the drops are counted anyway and printed. The spool is on `/dev/shm` where there
//! is one (the writer's fsyncs are not what is measured).
//!
//! The binary then measures the ratio again with the sides interleaved (the order alternating between
//! rounds) and prints the median of the rounds' ratios; judge the target by it:
//!
//! ```text
//! capture_error (caller's thread): lastword X ns, appender Y ns, ratio Z (target <= 2.0)
//! ```

use std::error::Error;
use std::fmt;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use lastword::report::EventReport;
use lastword::spool::{Kind, Limits};
use lastword::{Config, Guard, Level};
use tempfile::TempDir;

#[path = "../../tests/benches-common/stats.rs"]
mod stats;
use stats::{median, quantile, verdict};
#[path = "../../tests/benches-common/appender.rs"]
mod appender;
use appender::{Appender, time};
#[path = "../../tests/benches-common/mode.rs"]
mod mode;
use mode::RunMode;

/// Target from the issue: capture_error at most twice the appender's cost on the caller's thread.
const RATIO_TARGET: f64 = 2.0;
/// Events between two drains.
const CHUNK: u64 = 512;
/// lastword's event queue: above a chunk.
const EVENT_QUEUE: usize = 4096;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The application's error, with a cause.
#[derive(Debug)]
struct LookupError {
    id: u64,
    source: std::num::ParseIntError,
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "order {} not found", self.id)
    }
}

impl Error for LookupError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.source)
    }
}

fn error(id: u64) -> LookupError {
    LookupError { id, source: "x".parse::<u32>().expect_err("not a number") }
}

#[inline(never)]
fn with_tracing(e: &LookupError) {
    tracing::error!(error = %e, source = %e.source, "lookup failed");
}

#[inline(never)]
fn with_lastword(e: &LookupError) {
    std::hint::black_box(lastword::capture_error(e));
}

/// The stack walk alone, as the capture does it (the `backtrace` crate's `trace`, return addresses
/// only): shown for reference, to tell the walk's share of `capture_error` from the rest.
#[inline(never)]
fn walk_only(_: &LookupError) {
    let mut ips = Vec::with_capacity(32);
    backtrace::trace(|frame| {
        ips.push(frame.ip() as usize);
        ips.len() < 128
    });
    std::hint::black_box(ips);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Appender,
    Lastword,
}

struct Sides {
    _dir: TempDir,
    lastword: Guard,
    lastword_sent: u64,
    lastword_stored: u64,
    lastword_dropped: u64,
    appender: Appender,
}

impl Sides {
    fn new() -> Self {
        let base = std::path::Path::new("/dev/shm");
        let base = if base.is_dir() { base.to_path_buf() } else { std::env::temp_dir() };
        let dir = tempfile::Builder::new()
            .prefix("lastword-events-bench-")
            .tempdir_in(base)
            .expect("create a temporary directory");
        let lastword = lastword::init(
            Config::new("lastword-bench")
                .spool(dir.path().join("spool"))
                .no_url()
                .signals(true)
                .log_level(Level::Error)
                .event_queue(EVENT_QUEUE)
                .limits(Limits { max_bytes: u64::MAX, max_entries: u64::MAX }),
        )
        .expect("lastword::init runs once, at the start of the bench");
        let appender = Appender::new(dir.path());
        Self { _dir: dir, lastword, lastword_sent: 0, lastword_stored: 0, lastword_dropped: 0, appender }
    }

    fn run(&mut self, side: Side, n: u64) -> Duration {
        let errors: Vec<LookupError> = (0..CHUNK).map(error).collect();
        let mut timed = Duration::ZERO;
        let mut next = 0;
        while next < n {
            let end = (next + CHUNK).min(n);
            let chunk = &errors[..usize::try_from(end - next).unwrap_or(0)];
            timed += match side {
                Side::Appender => tracing::dispatcher::with_default(&self.appender.dispatch, || {
                    time(|| chunk.iter().for_each(with_tracing))
                }),
                Side::Lastword => time(|| chunk.iter().for_each(with_lastword)),
            };
            match side {
                Side::Appender => {
                    self.appender.sent += end - next;
                    self.appender.drain(DRAIN_TIMEOUT);
                }
                Side::Lastword => {
                    self.lastword_sent += end - next;
                    self.drain_lastword();
                }
            }
            next = end;
        }
        timed
    }

    fn drain_lastword(&mut self) {
        self.lastword.flush(DRAIN_TIMEOUT).expect("lastword's event writer drains its queue");
        let spool = self.lastword.spool();
        while let Some(claim) = spool.claim().expect("claim an event") {
            if claim.kind() == Kind::Event {
                let event: EventReport = serde_json::from_slice(claim.body()).expect("an event's JSON");
                self.lastword_stored += 1;
                self.lastword_dropped += event.dropped_before;
            }
            claim.ack().expect("ack an event");
        }
    }

    fn finish(mut self) -> Vec<String> {
        let appender = self.appender.finish();
        vec![
            format!(
                "lastword: {} events captured, {} stored, {} dropped (queue full)",
                self.lastword_sent, self.lastword_stored, self.lastword_dropped
            ),
            appender,
        ]
    }
}

fn main() {
    let RunMode { measure, quick, .. } = RunMode::from_args();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10)
        .configure_from_args();
    let mut sides = Sides::new();
    let mut group = c.benchmark_group("handled_error");
    group.throughput(Throughput::Elements(1));
    group.bench_function("appender", |b| b.iter_custom(|n| sides.run(Side::Appender, n)));
    group.bench_function("capture_error", |b| b.iter_custom(|n| sides.run(Side::Lastword, n)));
    group.finish();

    let table = measure.then(|| {
        let per_event = |d: Duration| d.as_secs_f64() * 1e9 / CHUNK as f64;
        for side in [Side::Appender, Side::Lastword] {
            sides.run(side, CHUNK);
        }
        let rounds = if quick { 11 } else { 31 };
        let (mut a, mut l, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [Side::Appender, Side::Lastword]
            } else {
                [Side::Lastword, Side::Appender]
            };
            let (mut na, mut nl) = (0.0, 0.0);
            for side in order {
                let ns = per_event(sides.run(side, CHUNK));
                match side {
                    Side::Appender => na = ns,
                    Side::Lastword => nl = ns,
                }
            }
            a.push(na);
            l.push(nl);
            ratios.push(nl / na);
        }
        let ratio = median(&mut ratios);
        format!(
            "capture_error (caller's thread): lastword {:.0} ns, appender {:.0} ns, ratio {:.2} \
             (target <= {RATIO_TARGET:.1}) {} [{} rounds of {CHUNK}, ratio quartiles {:.2}..{:.2}]",
            median(&mut l),
            median(&mut a),
            ratio,
            verdict(ratio <= RATIO_TARGET),
            ratios.len(),
            quantile(&mut ratios, 0.25),
            quantile(&mut ratios, 0.75),
        )
    });
    // The stack walk's share, for reference (same depth, same errors).
    let walk = measure.then(|| {
        let errors: Vec<LookupError> = (0..CHUNK).map(error).collect();
        let mut ns: Vec<f64> = (0..11)
            .map(|_| time(|| errors.iter().for_each(walk_only)).as_secs_f64() * 1e9 / CHUNK as f64)
            .collect();
        format!("of which the stack walk alone (backtrace::trace, for reference): {:.0} ns", median(&mut ns))
    });
    let losses = sides.finish();
    c.final_summary();
    if let Some(table) = table {
        println!();
        println!("lastword events: medians of interleaved runs in this process");
        for line in std::iter::once(&table).chain(&walk).chain(&losses) {
            println!("  {line}");
        }
    }
}
