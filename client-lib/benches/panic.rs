//! Benchmarks of a panic's way to a durable crash report (what the panicking program waits for),
//! against a bare durable write of the same bytes, measured in the same run.
//!
//! `cargo bench -p lastword --bench panic` measures the release build (the bench profile: optimized,
//! line tables); `cargo bench -p lastword --bench panic --profile dev` the debug build. Add
//! `-- --quick` for a fast run. In the criterion group `panic_to_durable_report`:
//!
//! - `hook`: `catch_unwind(|| panic!(..))` with lastword's panic hook installed: the raw capture (an
//!   unresolved backtrace, the modules the addresses are in), the crash-loop decision (a small
//!   flock'd JSON file under the spool's `client/`, replaced without an fsync), the report's JSON and
//!   the durable spool write. Nothing is suppressed (`crash_loop_per_hour(u32::MAX)`) and nothing
//!   waits for a collector (no URL, `panic_delivery(Duration::ZERO)`).
//! - `store_prebuilt`: the hook without the capture: [`lastword::store_crash_for_bench`] (a
//!   doc-hidden function that runs what the hook runs once the report is built) with a clone of a
//!   report the hook made: crash-loop decision, encoding and spool write.
//! - `noop_hook`: the same `catch_unwind(|| panic!(..))` with a hook that does nothing: what a panic
//!   costs without lastword.
//! - `bare`: the same bytes (the entry's 48-byte header and the report) written with plain `std`
//!   calls on the same file system: create a temporary file, write, fsync, rename into a directory,
//!   fsync that directory.
//!
//! The default panic message is silenced before `lastword::init` (lastword's hook chains to the hook
//! installed before it). `init` runs once in this process, with a spool in a temporary directory; the
//! spool's `ready/` is emptied between batches, untimed.
//!
//! The first panic of a process is measured in fresh processes: the bench runs itself again as a
//! child (`LASTWORD_PANIC_BENCH_CHILD`), which sets lastword up, times its first panic, then one bare
//! write of the same bytes, and prints both.
//!
//! Criterion runs one benchmark after the other, and the fsyncs of a shared VM vary from one second
//! to the next, so the binary then measures every side again, interleaved in rounds (the order
//! alternating), and prints a table of medians at the end; judge the target by that table:
//!
//! ```text
//! warm: hook X µs; bare W µs; ratio R (target ≤ 1.5)
//! first panic of a process: hook X µs; bare W µs; ratio R (target ≤ 1.5)
//! ```
//!
//! Under `cargo test --benches` (criterion's test mode), `--list` and `--profile-time` the table is
//! skipped.

use std::fs::{self, File};
use std::hint::black_box;
use std::panic::PanicHookInfo;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use lastword::report::CrashReport;
use lastword::spool::{Kind, Limits};
use lastword::{Config, Guard};
use tempfile::TempDir;

#[path = "../../tests/benches-common/stats.rs"]
mod stats;
use stats::{median, quantile, verdict};
#[path = "../../tests/benches-common/mode.rs"]
mod mode;
use mode::RunMode;
#[path = "../../tests/benches-common/disk.rs"]
mod disk;
use disk::{BareWriter, settle_disk};

/// Target from the issue: panic → durable report, against the bare durable write of the same size.
const RATIO_TARGET: f64 = 1.5;
/// Set in a child process: the directory it works in.
const CHILD_ENV: &str = "LASTWORD_PANIC_BENCH_CHILD";
/// The entry header the spool writes before the body (the bare write writes as many bytes).
const HEADER: [u8; lastword::spool::HEADER_LEN] = [0; lastword::spool::HEADER_LEN];

type Hook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

fn main() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        first_panic_child(Path::new(&dir));
        return;
    }
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

    let table = mode.measure.then(|| {
        let mut table = interleaved(&mut sides, &mode);
        table.extend(first_panics(&mode));
        table
    });
    c.final_summary();
    if let Some(table) = table {
        let build = if cfg!(debug_assertions) { "debug build" } else { "release build" };
        println!();
        println!("lastword panic ({build}): medians of interleaved runs in this process");
        for line in &table {
            println!("  {line}");
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Bare,
    Hook,
    StorePrebuilt,
    NoopHook,
}

impl Side {
    const ALL: [Side; 4] = [Side::Bare, Side::Hook, Side::StorePrebuilt, Side::NoopHook];

    fn name(self) -> &'static str {
        match self {
            Side::Bare => "bare",
            Side::Hook => "hook",
            Side::StorePrebuilt => "store_prebuilt",
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

/// lastword set up for a benchmark in `dir`.
fn init(dir: &Path) -> Guard {
    lastword::init(
        Config::new("lastword-bench")
            .spool(dir.join("spool"))
            .no_url()
            .signals(false)
            .panic_delivery(Duration::ZERO)
            .crash_loop_per_hour(u32::MAX)
            .limits(Limits { max_bytes: u64::MAX, max_entries: u64::MAX }),
    )
    .expect("lastword::init runs once, at the start of the bench")
}

/// lastword set up once in this process, a report it made, and the bare baseline beside its spool.
struct Sides {
    dir: TempDir,
    guard: Guard,
    /// A report lastword's hook stored, as read back from the spool, and its stored bytes.
    report: CrashReport,
    body: Vec<u8>,
    bare: BareWriter,
}

impl Sides {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("lastword-panic-bench-")
            .tempdir_in(std::env::temp_dir())
            .expect("create a temporary directory");
        let guard = init(dir.path());
        panic_once();
        let claim = guard.spool().claim().expect("claim").expect("the hook stored the first panic");
        assert_eq!(claim.kind(), Kind::Crash);
        let body = claim.body().to_vec();
        let report: CrashReport = serde_json::from_slice(&body).expect("the stored report's JSON");
        assert!(!report.frames.is_empty(), "the raw capture has the frames' addresses");
        claim.ack().expect("ack the first report");
        let bare = BareWriter::new(&dir.path().join("bare"));
        Self { dir, guard, report, body, bare }
    }

    /// Runs `n` operations of `side`; returns the time they took. Clears what they wrote, untimed.
    fn run(&mut self, side: Side, n: u64) -> Duration {
        let start = Instant::now();
        match side {
            Side::Bare => (0..n).for_each(|_| self.bare.write(Kind::Crash, &[&HEADER, &self.body])),
            Side::Hook => (0..n).for_each(|_| panic_once()),
            Side::StorePrebuilt => (0..n).for_each(|_| {
                lastword::store_crash_for_bench(self.report.clone()).expect("the report is stored");
            }),
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
    let mut t: [Vec<f64>; 4] = Default::default();
    let (mut ratio, mut capture) = (Vec::new(), Vec::new());
    for round in 0..mode.rounds(21) {
        let mut order = Side::ALL;
        if round % 2 == 1 {
            order.reverse();
        }
        let mut r = [0.0; 4];
        for side in order {
            r[side as usize] = us(sides.run(side, BATCH));
        }
        for (all, one) in t.iter_mut().zip(r) {
            all.push(one);
        }
        let [bare, hook, store, noop] = r;
        ratio.push(hook / bare);
        capture.push(hook - store - noop);
    }
    let [mut bare, mut hook, mut store, mut noop] = t;
    let ratio_median = median(&mut ratio);
    vec![
        format!(
            "report: {} bytes of JSON (the raw capture), {} frames",
            sides.body.len(),
            sides.report.frames.len()
        ),
        format!(
            "warm: hook (catch_unwind(panic!) with lastword's hook) {:.0} µs; bare write+fsync+rename+fsync(dir) \
             of the same {} bytes {:.0} µs",
            median(&mut hook),
            HEADER.len() + sides.body.len(),
            median(&mut bare),
        ),
        format!(
            "warm: ratio hook / bare {ratio_median:.2} (target ≤ {RATIO_TARGET}) {} [{} rounds of {BATCH}, \
             quartiles {:.2}..{:.2}]",
            verdict(ratio_median <= RATIO_TARGET),
            ratio.len(),
            quantile(&mut ratio, 0.25),
            quantile(&mut ratio, 0.75),
        ),
        format!(
            "warm, in parts: decide+encode+store (store_crash_for_bench) {:.0} µs; a panic without lastword \
             (no-op hook) {:.0} µs; the capture (hook less those) {:.0} µs",
            median(&mut store),
            median(&mut noop),
            median(&mut capture),
        ),
    ]
}

/// Runs fresh processes that each time their first panic and then a bare write of the same bytes.
fn first_panics(mode: &RunMode) -> Vec<String> {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let runs = mode.rounds(15);
    let (mut hook, mut bare, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let dir = tempfile::tempdir().expect("a directory for the child");
        let out = Command::new(&exe).env(CHILD_ENV, dir.path()).output().expect("run the bench as a child");
        assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let mut numbers = text.split_whitespace().filter_map(|w| w.parse::<f64>().ok());
        let (Some(h), Some(b)) = (numbers.next(), numbers.next()) else { panic!("child printed {text:?}") };
        hook.push(h);
        bare.push(b);
        ratio.push(h / b);
    }
    let ratio_median = median(&mut ratio);
    vec![
        format!(
            "first panic of a process: hook {:.0} µs; bare write of the same bytes, first of that process \
             {:.0} µs",
            median(&mut hook),
            median(&mut bare)
        ),
        format!(
            "first panic of a process: ratio hook / bare {ratio_median:.2} (target ≤ {RATIO_TARGET}) {} \
             [{runs} processes, quartiles {:.2}..{:.2}]",
            verdict(ratio_median <= RATIO_TARGET),
            quantile(&mut ratio, 0.25),
            quantile(&mut ratio, 0.75),
        ),
    ]
}

/// In a child: set up, time the first panic (to its durable report), then one bare write of the
/// stored bytes; print both in microseconds.
fn first_panic_child(dir: &Path) {
    std::panic::set_hook(Box::new(|_| {}));
    let guard = init(dir);
    let start = Instant::now();
    panic_once();
    let hook = start.elapsed();
    let claim = guard.spool().claim().expect("claim").expect("the hook stored the panic");
    let body = claim.body().to_vec();
    claim.ack().expect("ack");
    let mut bare = BareWriter::new(&dir.join("bare"));
    let start = Instant::now();
    bare.write(Kind::Crash, &[&HEADER, &body]);
    let bare_time = start.elapsed();
    println!("{} {}", hook.as_secs_f64() * 1e6, bare_time.as_secs_f64() * 1e6);
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
