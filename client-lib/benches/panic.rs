//! Benchmarks of a panic's way to a durable crash report, against a bare durable write of the same
//! bytes.
//!
//! `cargo bench -p lastword --bench panic` (add `-- --quick` for a fast run) times, in the criterion
//! group `panic_to_durable_report`:
//!
//! - `hook_full`: `catch_unwind(|| panic!(..))` with lastword's panic hook installed: backtrace
//!   capture and symbolization (`backtrace::Backtrace::new()`), the report, the crash-loop check (a
//!   small flock'd JSON file under the spool's `client/`, rewritten with an fsync) and the durable
//!   spool write. Nothing is suppressed (`crash_loop_per_hour(u32::MAX)`) and nothing waits for a
//!   collector (no URL, `panic_delivery(Duration::ZERO)`).
//! - `store_prebuilt`: the hook without the backtrace: [`lastword::store_crash_for_bench`] (a
//!   doc-hidden function that runs what the hook runs once the report is built) with a clone of a
//!   report the hook made, so crash-loop check, encoding and spool write, with nothing subtracted.
//! - `backtrace_hook` and `noop_hook`: the same `catch_unwind(|| panic!(..))` with lastword's hook
//!   swapped out for one that only symbolizes as lastword's does (`Backtrace::new()`, then every
//!   frame's demangled name, file, line and address as strings), and for one that does nothing.
//!   Their difference is the symbolization, at the depth of the stack where the hook runs.
//! - `bare`: the same JSON bytes written with plain `std` calls on the same file system: create a
//!   temporary file, write, fsync, rename into a directory, fsync that directory.
//!
//! The default panic message is silenced before `lastword::init` (lastword's hook chains to the hook
//! installed before it). `init` runs once in this process, with a spool in a temporary directory; the
//! spool's `ready/` is emptied between batches, untimed. The first panic of the process, which also
//! loads the executable's debug information for symbolization, is timed once on its own.
//!
//! Criterion runs one benchmark after the other, and the fsyncs of a shared VM vary from one second
//! to the next, so the binary then measures every side again, interleaved in rounds (the order
//! alternating), and prints a table of medians at the end; judge the target by that table:
//!
//! ```text
//! full hook X µs; without symbolization Y µs; symbolization alone Z µs; bare W µs;
//! ratio without symbolization / bare R (target < 3)
//! ```
//!
//! Under `cargo test --benches` (criterion's test mode), `--list` and `--profile-time` the table is
//! skipped.

use std::fs::{self, File};
use std::hint::black_box;
use std::panic::PanicHookInfo;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use lastword::report::{CrashReport, Frame, strip_hash};
use lastword::spool::{Kind, Limits};
use lastword::{Config, Guard};
use tempfile::TempDir;

#[path = "../../benches-common/stats.rs"]
mod stats;
use stats::{median, quantile, verdict};
#[path = "../../benches-common/disk.rs"]
mod disk;
use disk::{BareWriter, settle_disk};

/// Target from the issue: the durable report without symbolization, against the bare write.
const RATIO_TARGET: f64 = 3.0;

type Hook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

fn main() {
    let mode = RunMode::from_args();
    // lastword's hook calls the one installed before it, which would print every panic.
    std::panic::set_hook(Box::new(|_| {}));
    let mut sides = Sides::new();

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10)
        .configure_from_args();
    settle_disk(sides.dir.path());
    let mut group = c.benchmark_group("panic_to_durable_report");
    // Each operation takes about a millisecond: flat sampling, not a linear ramp.
    group.sampling_mode(SamplingMode::Flat);
    for side in Side::ALL {
        group.bench_function(side.name(), |b| b.iter_custom(|n| sides.run(side, n)));
    }
    group.finish();

    let table = mode.measure.then(|| interleaved(&mut sides, &mode));
    c.final_summary();
    if let Some(table) = table {
        println!();
        println!("lastword panic: medians of interleaved runs in this process");
        for line in &table {
            println!("  {line}");
        }
    }
}

/// What the command line asks for, as far as this file cares.
struct RunMode {
    /// Criterion measures (as opposed to test, list or profile mode): also print the table.
    measure: bool,
    /// `--quick`: fewer rounds for the table.
    quick: bool,
}

impl RunMode {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let has = |flag: &str| args.iter().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
        // Criterion's own rule: without `--bench` (cargo test --benches) or with `--test`, it tests.
        let dry = !has("--bench") || has("--test") || has("--list");
        Self { measure: !dry && !has("--profile-time"), quick: has("--quick") }
    }

    /// Rounds of the interleaved table: odd, so the median is one of them.
    fn rounds(&self, full: usize) -> usize {
        if self.quick { (full / 3) | 1 } else { full | 1 }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Bare,
    HookFull,
    StorePrebuilt,
    BacktraceHook,
    NoopHook,
}

impl Side {
    const ALL: [Side; 5] =
        [Side::Bare, Side::HookFull, Side::StorePrebuilt, Side::BacktraceHook, Side::NoopHook];

    fn name(self) -> &'static str {
        match self {
            Side::Bare => "bare",
            Side::HookFull => "hook_full",
            Side::StorePrebuilt => "store_prebuilt",
            Side::BacktraceHook => "backtrace_hook",
            Side::NoopHook => "noop_hook",
        }
    }
}

/// The panic every side that panics raises.
#[inline(never)]
fn panic_once() {
    let result = std::panic::catch_unwind(|| panic!("bench: a panic to report"));
    assert!(black_box(result).is_err(), "the closure panics");
}

/// lastword set up once in this process, a report it made, and the bare baseline beside its spool.
struct Sides {
    dir: TempDir,
    guard: Guard,
    /// A report lastword's hook stored, as read back from the spool, and its stored bytes.
    report: CrashReport,
    body: Vec<u8>,
    /// The process's first panic, through lastword's hook (symbolization starts cold).
    first_panic: Duration,
    bare: BareWriter,
}

impl Sides {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lastword-panic-bench-")
            .tempdir_in(std::env::temp_dir())
            .expect("create a temporary directory");
        let guard = lastword::init(
            Config::new("lastword-bench")
                .spool(dir.path().join("spool"))
                .no_url()
                .signals(false)
                .panic_delivery(Duration::ZERO)
                .crash_loop_per_hour(u32::MAX)
                .limits(Limits { max_bytes: u64::MAX, max_entries: u64::MAX }),
        )
        .expect("lastword::init runs once, at the start of the bench");
        let start = Instant::now();
        panic_once();
        let first_panic = start.elapsed();
        let claim = guard.spool().claim().expect("claim").expect("the hook stored the first panic");
        assert_eq!(claim.kind(), Kind::Crash);
        let body = claim.body().to_vec();
        let report: CrashReport = serde_json::from_slice(&body).expect("the stored report's JSON");
        assert!(report.symbolized, "bench binaries carry line tables ([profile.bench])");
        claim.ack().expect("ack the first report");
        let bare = BareWriter::new(&dir.path().join("bare"));
        Self { dir, guard, report, body, first_panic, bare }
    }

    /// Runs `n` operations of `side`; returns the time they took. Clears what they wrote, untimed.
    fn run(&mut self, side: Side, n: u64) -> Duration {
        let start = Instant::now();
        match side {
            Side::Bare => (0..n).for_each(|_| self.bare.write(Kind::Crash, &[&self.body])),
            Side::HookFull => (0..n).for_each(|_| panic_once()),
            Side::StorePrebuilt => (0..n).for_each(|_| {
                lastword::store_crash_for_bench(self.report.clone()).expect("the report is stored");
            }),
            Side::BacktraceHook => {
                return with_hook(Box::new(|_| drop(black_box(symbolized_frames()))), || {
                    time(|| (0..n).for_each(|_| panic_once()))
                });
            }
            Side::NoopHook => {
                return with_hook(Box::new(|_| {}), || time(|| (0..n).for_each(|_| panic_once())));
            }
        }
        let elapsed = start.elapsed();
        match side {
            Side::Bare => remove_files_in(self.bare.ready()),
            _ => {
                let spool = self.guard.spool();
                let ready = spool.path().join("ready");
                let stored = fs::read_dir(&ready).expect("list the spool's ready/").count() as u64;
                assert_eq!(stored, n, "every panic was stored, none suppressed");
                remove_files_in(&ready);
                spool.rescan().expect("rescan the cleared spool");
            }
        }
        elapsed
    }
}

/// What lastword's hook does to get its frames, without the rest: `Backtrace::new()` (unwind and
/// resolve every frame's symbols), then each symbol's demangled name (hash stripped), file, line and
/// address as a [`Frame`], as `capture_frames` in `src/panic.rs` does.
fn symbolized_frames() -> Vec<Frame> {
    let trace = backtrace::Backtrace::new();
    let mut frames = Vec::new();
    for frame in trace.frames() {
        let address = format!("{:#x}", frame.ip() as usize);
        for symbol in frame.symbols() {
            frames.push(Frame {
                function: symbol.name().map(|n| strip_hash(&n.to_string())),
                file: symbol.filename().map(|p| p.display().to_string()),
                line: symbol.lineno(),
                address: address.clone(),
                module: None,
            });
        }
    }
    frames
}

/// Runs `f` with `hook` in place of lastword's panic hook, then puts lastword's back.
fn with_hook<T>(hook: Hook, f: impl FnOnce() -> T) -> T {
    let lastword = std::panic::take_hook();
    std::panic::set_hook(hook);
    let result = f();
    std::panic::set_hook(lastword);
    result
}

fn time(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// Alternates the sides in rounds of `BATCH` operations each; ratios and differences are taken
/// within a round, then their medians, so that a slow stretch of the disk weighs on a round's sides
/// alike.
fn interleaved(sides: &mut Sides, mode: &RunMode) -> Vec<String> {
    const BATCH: u64 = 16;
    settle_disk(sides.dir.path());
    let us = |d: Duration| d.as_secs_f64() * 1e6 / BATCH as f64;
    // One round to warm up, not counted.
    for side in Side::ALL {
        sides.run(side, BATCH);
    }
    let mut t: [Vec<f64>; 5] = Default::default();
    let (mut ratio, mut symbolization, mut full_less_symbolization) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..mode.rounds(21) {
        let mut order = Side::ALL;
        if round % 2 == 1 {
            order.reverse();
        }
        let mut r = [0.0; 5];
        for side in order {
            r[side as usize] = us(sides.run(side, BATCH));
        }
        for (all, one) in t.iter_mut().zip(r) {
            all.push(one);
        }
        let [bare, full, store, backtrace, noop] = r;
        ratio.push(store / bare);
        symbolization.push(backtrace - noop);
        full_less_symbolization.push(full - backtrace);
    }
    let [mut bare, mut full, mut store, mut backtrace, mut noop] = t;
    let ratio_median = median(&mut ratio);
    vec![
        format!("report: {} bytes of JSON, {} frames", sides.body.len(), sides.report.frames.len()),
        format!("full hook (catch_unwind(panic!) with lastword's hook): {:.0} µs", median(&mut full)),
        format!(
            "without symbolization (store_crash_for_bench, pre-built report): {:.0} µs \
             (cross-check, full hook less the symbolizing hook: {:.0} µs)",
            median(&mut store),
            median(&mut full_less_symbolization),
        ),
        format!(
            "symbolization alone (symbolizing hook {:.0} µs less no-op hook {:.0} µs): {:.0} µs",
            median(&mut backtrace),
            median(&mut noop),
            median(&mut symbolization),
        ),
        format!("bare write+fsync+rename+fsync(dir) of the same bytes: {:.0} µs", median(&mut bare)),
        format!(
            "ratio without symbolization / bare: {ratio_median:.2} (target < {RATIO_TARGET:.0}) {} \
             [{} rounds of {BATCH}, ratio quartiles {:.2}..{:.2}]",
            verdict(ratio_median < RATIO_TARGET),
            ratio.len(),
            quantile(&mut ratio, 0.25),
            quantile(&mut ratio, 0.75),
        ),
        format!(
            "first panic of the process (cold symbolization, one sample): {:.1} ms",
            sides.first_panic.as_secs_f64() * 1e3
        ),
    ]
}

/// Empties `dir`, then fsyncs it: that commits the unlinks here, untimed, rather than in the next
/// measured fsync.
fn remove_files_in(dir: &Path) {
    for item in fs::read_dir(dir).expect("list a bench directory") {
        let path = item.expect("list a bench directory").path();
        fs::remove_file(&path).expect("clear a bench directory");
    }
    File::open(dir).and_then(|d| d.sync_all()).expect("fsync a cleared bench directory");
}
