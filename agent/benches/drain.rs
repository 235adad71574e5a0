//! Drain throughput of the shielded uploader against the collector's own ingest limit, and the cost
//! of an idle sidecar, with the baselines measured in the same run.
//!
//! `cargo bench -p lastword-agent --bench drain` (about five minutes, bounded: drain rounds stop
//! being started after 60 s per layout; `LASTWORD_IDLE_SECS=5` and `--quick` for a fast look;
//! `TMPDIR=/dev/shm` puts the spool and the store on a tmpfs, where unlinks issue no discard;
//! `LASTWORD_DRAIN_CORES=shared|split|both` chooses the layouts; `LASTWORD_DRAIN_PROFILE=drain` runs
//! one side alone, for a profiler, and prints how busy each CPU was and the CPU per thread name, the
//! threads that ended before the end of a measurement, such as the spool side's claimer and ackers and the
//! uploader's, counted together). It prints one table per layout at the end, then the idle sidecar's:
//!
//! ```text
//! layout (shared: any thread on any CPU; split: the collector on one CPU, the rest on another)
//! collector ingest limit (pipelined client, window W): X reports/s
//! spool alone (claims on one thread, acks on four, overlapped): S entries/s
//! uploader drain, window W: Y entries/s, Y/min(X, S) (target >= 0.85); Y/X (target >= 0.70)
//! CPU of this process per entry: ingest I µs, spool S µs (sum), drain D µs
//! shared only: the CPU cap of a drain on these cores, cores / (I + S), against min(X, S)
//! split only: how busy each CPU was; the agent's CPU per entry of the spool alone (s), of the
//!   bench's client alone (c) and of the drain (d): the uploader's own work d - s, and what 1e6 / d
//!   and 1e6 / (s + c) come to against min(X, S)
//! idle `lastword run`: RSS R MiB (target < 16), CPU C s in 30 s (target < 0.1); `sleep` for scale
//! ```
//!
//! **Layouts.** *Shared*: every thread may run on every CPU, as with a collector on the agent's own
//! machine; the drain then does the collector's work and the spool's on the same cores, and cannot
//! go faster than cores / (I + S) however well it overlaps them (the cap line; below 0.85 of the
//! slower half, the target is out of reach of any uploader on the machine). *Split*: the collector's
//! runtime (its workers and blocking threads) on one CPU, every other thread on another
//! (`sched_setaffinity`, inherited by the threads a pinned thread starts): as if the collector had a
//! machine of its own, as it has when deployed. Each baseline runs on the CPU its side has in the
//! drain, so the ratio measures how much of its own CPU's limit the uploader reaches. There the
//! agent's CPU is busy all through a drain: its rate is 1e6 over the µs that CPU spends per entry,
//! the spool's work plus the uploader's own, and the table gives the two, with the bench's client
//! (messages made before the clock starts, no spool) as the least an uploader's own work can cost.
//!
//! **Drain.** Each measurement starts the real collector ([`collect::run`] with a [`SqliteStore`] in a
//! fresh temporary directory, so no report is ever a duplicate) on `127.0.0.1:0` in this process, and
//! stops it gracefully afterwards. Two kinds of measurement, interleaved in every round (the order
//! rotating between rounds, so that a slow stretch of the disk lands on every side in turn):
//!
//! - *ingest*: one websocket connection sends 10,000 pre-built report messages, keeping up to the
//!   window unanswered (the pipelined client of `ingest.rs`), timed from connect to the last answer.
//!   With the window at the collector's `max_in_flight` this is the collector's own limit for one
//!   connection.
//! - *drain*: a spool holding 10,000 entries is drained by an [`Uploader`] configured as `lastword
//!   drain` configures it (the sidecar's prepare hook, one URL, a token), timed from
//!   [`Uploader::start`] until [`Uploader::flush`] returns; then [`Uploader::shutdown`], which must
//!   report every entry delivered. The spool is opened (and scanned) before the clock starts.
//!
//! Both send the same messages: the same 1 KiB JSON crash-like body, the same mix of kinds (mostly
//! logs, some events, a few crashes). The spool is filled by writing each entry file straight into
//! `ready/` with the bytes `Header::encode` and the name `EntryName` give (as `spool/benches/spool.rs`
//! does), without the temporary file, rename and fsyncs of `Spool::write`: the files are byte for byte
//! what `Spool::write_flagged(kind, FLAG_JSON, body)` makes, as lastword's own writers store their
//! JSON bodies (so the uploader sends them without parsing them again), and this saves about ten seconds of fsyncs per spool. A `syncfs` then
//! writes them back before the clock starts, so that the collector's fsyncs do not pay for them.
//!
//! Every measurement also takes this process's CPU time (`CLOCK_PROCESS_CPUTIME_ID`: the collector,
//! the uploader, the blocking pools and the spool's threads). A drain pays for both halves in one
//! process: on shared cores its rate is bounded by the cores over the sum of the two halves' CPU per
//! entry, not only by the slower half; the cap line of the shared table gives that bound, with the
//! load average (other work on the machine lowers it further).
//!
//! The spool and the store are on the same file system (the temporary directory), as with a collector
//! on the same machine: the collector's fsyncs commit the journal that the spool's renames and unlinks
//! go through too, so the drain pays for them where the ingest client does not. The per-measurement
//! lines on stderr show how much a run varies with the disk.
//!
//! The ratio of a round is drain / ingest at the collector's `max_in_flight`; the table gives the
//! medians over the rounds. A third baseline is the spool alone, used the way the uploader uses it:
//! one thread claims (rename, read) every entry of a filled spool while four threads ack (unlink) the
//! claimed ones in batches, so that claims and deletes overlap as in a drain; no network. (Claiming
//! and acking on one thread, as this bench once did, is not an upper bound: the uploader overlaps the
//! two and went faster than it.) A drain cannot go faster than the slower of its two halves, so each
//! drain line also gives its ratio to the slower of the collector and the spool: how much of what the
//! machine allows the uploader reaches. The round count is odd (the time budget stops the rounds only
//! after an odd one), so that each median is one of the rounds. The uploader is measured at its
//! default window (1024, the collector's `max_in_flight`) and at 32 (a default of before, and the window
//! of an application that wants to hold fewer claims).
//!
//! **Idle sidecar.** The real binary, `lastword run --spool EMPTY --url ws://ADDR/ingest`, against a
//! live collector, for `LASTWORD_IDLE_SECS` seconds (default 30). Its path is the one Cargo gives
//! benches at compile time (`CARGO_BIN_EXE_lastword`: `cargo bench` builds the package's binary
//! before its benches); if it is not there, the bench stops with a message saying how to build it.
//! Resident memory is `VmRSS` (and the peak `VmHWM`) of `/proc/PID/status`; CPU time is utime + stime
//! of `/proc/PID/stat` in clock ticks (`getconf CLK_TCK`), taken once the sidecar has opened its spool
//! and again at the end of the period, and also counted from the process start. A `sleep` process is
//! measured alongside for scale. Then SIGTERM, and the sidecar must exit 0.
//!
//! Under `cargo test --benches` (no `--bench` argument) every part runs once, small (300 entries, a
//! 1 s idle period), only to see that it works; the table is printed but proves nothing.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use lastword::protocol::{ClientMessage, Report, SUBPROTOCOL, bearer};
use lastword::spool::{EntryId, Kind, Limits as SpoolLimits, Spool, SpoolOptions};
use lastword::upload::{Uploader, UploaderConfig};
use lastword_collector::server::{self as collect, CollectError, Config, Limits, Tokens};
use lastword_collector::store::SqliteStore;
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_util::sync::CancellationToken;

#[path = "../../tests/benches-common/stats.rs"]
mod stats;
use stats::{median, quantile, verdict};
#[path = "../../tests/benches-common/mode.rs"]
mod mode;
use mode::RunMode;
#[path = "../../tests/benches-common/disk.rs"]
mod disk;
use disk::{put_ready, settle_disk};

/// Targets from the issues: the drain against the collector alone (issue 4), and against the slower
/// of the collector and the spool's own limit (issue 21, on the real disk and on tmpfs).
const DRAIN_RATIO_TARGET: f64 = 0.70;
const DRAIN_BOUND_TARGET: f64 = 0.85;
const IDLE_RSS_TARGET_MIB: f64 = 16.0;
const IDLE_CPU_TARGET_S: f64 = 0.1;
/// The period the CPU target is stated for.
const IDLE_TARGET_PERIOD_S: f64 = 30.0;

const TOKEN: &str = "bench-token";
/// Entries drained (and reports ingested) per measurement.
const ENTRIES: usize = 10_000;
const ENTRIES_DRY: usize = 300;
const BODY_LEN: usize = 1024;
/// The collector's window, which its welcome announces.
const FULL_WINDOW: usize = collect::DEFAULT_MAX_IN_FLIGHT as usize;
/// The uploader's default window (`UploaderConfig::new`, `lastword run --window`).
const DEFAULT_WINDOW: usize = 1024;
/// A small window, for comparison.
const SMALL_WINDOW: usize = 32;
/// Rounds of the drain table are not started after this long.
const DRAIN_BUDGET: Duration = Duration::from_secs(60);
/// Bound on one drain or ingest measurement: a stalled run fails the bench instead of hanging it.
const RUN_BOUND: Duration = Duration::from_secs(60);

fn main() {
    let run = RunMode::from_args();
    if run.list {
        return;
    }
    let mode = Plan::new(run);
    let entries = if mode.dry { ENTRIES_DRY } else { ENTRIES };
    let body = body(BODY_LEN);
    let messages = messages(entries, &body);

    if let Some((side, times)) = profile_side() {
        // For `perf record`: one side only, measured `times` times, no table.
        let place = Place::new(mode.layouts[0]);
        for _ in 0..times {
            let before = thread_cpu();
            let process_before = process_cpu();
            measure(&place, side, &body, &messages);
            let after = thread_cpu();
            let process_after = process_cpu();
            // CPU per thread name over the measurement (setup included), of the threads alive at its
            // end: where the time went, beside what a profiler says. Threads that ended before
            // (the spool-alone side's claimer and ackers, an uploader's runtime and blocking pool) are no
            // longer in /proc: what the process used beyond the living threads is theirs.
            let mut by_name: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
            for (tid, (name, ticks)) in &after {
                let was = before.get(tid).map_or(0, |(_, t)| *t);
                *by_name.entry(name.clone()).or_default() += ticks.saturating_sub(was) as f64;
            }
            let tick = clock_ticks_per_second();
            let living: f64 = by_name.values().sum();
            let process = process_after.saturating_sub(process_before).as_secs_f64() * tick;
            by_name.insert("(threads ended by the end)".into(), (process - living).max(0.0));
            let per_entry: Vec<String> = by_name
                .iter()
                .filter(|(_, t)| **t > 0.0)
                .map(|(name, t)| format!("{name} {:.1}", t / tick * 1e6 / messages.len() as f64))
                .collect();
            eprintln!("  CPU per thread name, µs/entry (setup included): {}", per_entry.join(", "));
        }
        return;
    }
    let mut table = Vec::new();
    for layout in &mode.layouts {
        let place = Place::new(*layout);
        table.extend(drain_table(&place, &mode, &body, &messages));
        table.push(String::new());
    }
    let place = Place::new(Layout::Shared);
    table.extend(idle_table(place.collector(), mode.idle));

    println!();
    println!("lastword-agent drain bench: medians of interleaved runs in this process");
    for line in &table {
        println!("  {line}");
    }
}

/// `LASTWORD_DRAIN_PROFILE=SIDE[xN]` (SIDE one of `ingest`, `spool`, `drain`, `drain32`): measure that
/// side alone N times (default 3) and print nothing but its lines, so that a profiler (`perf record
/// -g`) sees that side's work only.
fn profile_side() -> Option<(Side, usize)> {
    let spec = std::env::var("LASTWORD_DRAIN_PROFILE").ok()?;
    let (name, times) = spec.split_once('x').unwrap_or((&spec, "3"));
    let side = match name {
        "ingest" => Side::Ingest(FULL_WINDOW),
        "spool" => Side::Spool,
        "drain" => Side::Drain(DEFAULT_WINDOW),
        "drain32" => Side::Drain(SMALL_WINDOW),
        other => panic!("LASTWORD_DRAIN_PROFILE: unknown side {other:?} (ingest, spool, drain, drain32)"),
    };
    let times = times.parse().unwrap_or_else(|_| panic!("LASTWORD_DRAIN_PROFILE: {times:?} is not a count"));
    Some((side, times))
}

/// What the command line and the environment ask for, beyond the mode.
struct Plan {
    /// Test mode: one small run of each part.
    dry: bool,
    /// Rounds of the interleaved drain measurements: odd, so the median is one of them.
    rounds: usize,
    /// Length of the idle period.
    idle: Duration,
    /// The placements of threads on cores to measure, one drain table each (`LASTWORD_DRAIN_CORES`).
    layouts: Vec<Layout>,
}

impl Plan {
    fn new(mode: RunMode) -> Self {
        let rounds = if mode.dry {
            1
        } else if mode.quick {
            3
        } else {
            5
        };
        let idle_secs = std::env::var("LASTWORD_IDLE_SECS").ok().map(|s| {
            s.parse::<f64>().ok().filter(|v| *v > 0.0 && v.is_finite()).unwrap_or_else(|| {
                panic!("LASTWORD_IDLE_SECS must be a positive number of seconds, not {s:?}")
            })
        });
        let idle =
            Duration::from_secs_f64(idle_secs.unwrap_or(if mode.dry { 1.0 } else { IDLE_TARGET_PERIOD_S }));
        Self { dry: mode.dry, rounds, idle, layouts: Layout::from_env() }
    }
}

// ---------------------------------------------------------------------------------------------
// Where the threads run
// ---------------------------------------------------------------------------------------------

/// How the threads of a measurement are placed on the machine's cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// Every thread may run on every core: a collector on the same machine as the agent, competing
    /// for the same cores.
    Shared,
    /// The collector's threads on one core, every other thread (the ingest client, the uploader,
    /// the spool's threads) on another: as if the collector ran on a machine of its own, which is
    /// how a collector is deployed. Each side's baseline then has the core it has in the drain.
    Split {
        /// The CPU of the collector's runtime (its workers and blocking threads).
        collector: usize,
        /// The CPU of everything else.
        agent: usize,
    },
}

impl Layout {
    /// `LASTWORD_DRAIN_CORES`: `shared`, `split`, or `both` (the default where this process may run
    /// on two CPUs or more; elsewhere `shared` only).
    fn from_env() -> Vec<Layout> {
        let allowed = allowed_cpus();
        let split = match allowed.as_slice() {
            [collector, agent, ..] => Some(Layout::Split { collector: *collector, agent: *agent }),
            _ => None,
        };
        let spec = std::env::var("LASTWORD_DRAIN_CORES").unwrap_or_else(|_| "both".into());
        let need_split = || {
            split.unwrap_or_else(|| {
                panic!("LASTWORD_DRAIN_CORES={spec}: this process may run on {allowed:?} only")
            })
        };
        match spec.as_str() {
            "shared" => vec![Layout::Shared],
            "split" => vec![need_split()],
            "both" => std::iter::once(Layout::Shared).chain(split).collect(),
            other => panic!("LASTWORD_DRAIN_CORES: {other:?} is not one of shared, split, both"),
        }
    }

    fn describe(self) -> String {
        match self {
            Layout::Shared => {
                format!("cores shared: every thread on any of CPUs {:?}", allowed_cpus())
            }
            Layout::Split { collector, agent } => format!(
                "cores split: the collector on CPU {collector}, everything else (client, uploader, spool) on CPU \
                 {agent}"
            ),
        }
    }
}

/// The CPUs this process may run on, as it started.
fn allowed_cpus() -> Vec<usize> {
    static ALLOWED: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
    ALLOWED
        .get_or_init(|| {
            let set = rustix::thread::sched_getaffinity(None).expect("read this thread's CPU affinity");
            (0..rustix::thread::CpuSet::MAX_CPU).filter(|&cpu| set.is_set(cpu)).collect()
        })
        .clone()
}

/// Puts the calling thread on `cpus`; threads it starts afterwards inherit them.
fn pin_to(cpus: &[usize]) {
    let mut set = rustix::thread::CpuSet::new();
    for &cpu in cpus {
        set.set(cpu);
    }
    rustix::thread::sched_setaffinity(None, &set).unwrap_or_else(|e| panic!("run on CPUs {cpus:?}: {e}"));
}

/// The runtimes of one layout: the agent's side (the ingest client; the uploader makes its own
/// runtime on a thread it starts, which inherits the main thread's CPUs) and the collector's.
struct Place {
    layout: Layout,
    agent: Runtime,
    /// The collector's own runtime when it has a core of its own.
    collector: Option<Runtime>,
}

impl Place {
    /// Pins the main thread for `layout` (every thread started from here on inherits that) and
    /// builds the runtimes.
    fn new(layout: Layout) -> Self {
        let build =
            || tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
        match layout {
            Layout::Shared => {
                pin_to(&allowed_cpus());
                Self { layout, agent: build(), collector: None }
            }
            Layout::Split { collector, agent } => {
                pin_to(&[agent]);
                let collector_rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("collector-rt")
                    .on_thread_start(move || pin_to(&[collector]))
                    .enable_all()
                    .build()
                    .expect("the collector's tokio runtime");
                Self { layout, agent: build(), collector: Some(collector_rt) }
            }
        }
    }

    fn collector(&self) -> &Runtime {
        self.collector.as_ref().unwrap_or(&self.agent)
    }
}

// ---------------------------------------------------------------------------------------------
// The collector under test
// ---------------------------------------------------------------------------------------------

/// The real collector, on a port of the OS's choosing, with a fresh store.
struct Collector {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), CollectError>>,
    _store: TempDir,
}

impl Collector {
    fn start(runtime: &Runtime) -> Self {
        let store_dir = bench_dir("lastword-drain-store-");
        let store = SqliteStore::open(store_dir.path()).expect("open the collector's store");
        let stop = CancellationToken::new();
        let (addr, task) = runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the collector on 127.0.0.1:0");
            let addr = listener.local_addr().expect("the collector's address");
            let config = Config {
                tokens: Tokens::from_list([TOKEN]),
                tls: None,
                limits: Limits::default(),
                symbols: None,
            };
            (addr, tokio::spawn(collect::run(listener, config, store, stop.clone().cancelled_owned())))
        });
        Self { addr, stop, task, _store: store_dir }
    }

    fn url(&self) -> String {
        format!("ws://{}/ingest", self.addr)
    }

    /// Stops the collector the way SIGTERM does and waits for it (every report committed).
    fn stop(self, runtime: &Runtime) {
        self.stop.cancel();
        runtime
            .block_on(self.task)
            .expect("the collector task does not panic")
            .expect("the collector stops cleanly");
    }
}

// ---------------------------------------------------------------------------------------------
// Drain against ingest
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The pipelined websocket client, with this window.
    Ingest(usize),
    /// The uploader, with this window.
    Drain(usize),
    /// The spool alone, no network: one thread claims (rename, read) every entry while others ack
    /// (unlink) them, overlapped as in a drain.
    Spool,
}

impl Side {
    fn label(self) -> String {
        match self {
            Side::Ingest(w) => format!("collector ingest, pipelined client, window {w}"),
            Side::Drain(w) => format!("uploader drain from the spool, window {w}"),
            Side::Spool => format!("spool alone: claim on 1 thread, ack on {SPOOL_ACKERS}, no network"),
        }
    }
}

/// The sides of every round; the first is the baseline of the ratios.
const SIDES: [Side; 4] =
    [Side::Ingest(FULL_WINDOW), Side::Spool, Side::Drain(SMALL_WINDOW), Side::Drain(DEFAULT_WINDOW)];

fn drain_table(place: &Place, mode: &Plan, body: &[u8], messages: &[Message]) -> Vec<String> {
    let entries = messages.len();
    // One ingest to warm up (allocator, the binary's pages), not counted. No drain warm-up: each drain
    // has a fresh spool anyway, and a round of drains can cost a minute on a bad disk.
    if !mode.dry {
        measure(place, SIDES[0], body, messages);
    }
    // rates[side][round], ratios[side][round] against SIDES[0] of the same round.
    let mut rates = vec![Vec::new(); SIDES.len()];
    let mut ratios = vec![Vec::new(); SIDES.len()];
    // cpu[side][round]: this process's CPU time per entry, µs.
    let mut cpu = vec![Vec::new(); SIDES.len()];
    // busy[side][cpu][round]: how busy each CPU was; stolen[round]: the machine's share taken by the
    // host over the round.
    let mut busy: Vec<Vec<Vec<f64>>> = vec![Vec::new(); SIDES.len()];
    let mut stolen = Vec::new();
    // agent_us[side][round]: with the cores split, the agent's CPU time per entry, µs (how busy it
    // was, times the wall time, over the entries): whatever ran there, the spool's threads included.
    let mut agent_us = vec![Vec::new(); SIDES.len()];
    let begun = Instant::now();
    let mut rounds = 0;
    for round in 0..mode.rounds {
        // On a bad minute of a shared disk a drain can take ten times as long: keep the whole run
        // bounded rather than complete every round.
        // Stop only after an odd number of rounds, so that the median is one of them (of an even
        // number, the nearest-rank median is the upper of the middle two).
        if rounds % 2 == 1 && begun.elapsed() > DRAIN_BUDGET {
            eprintln!("drain bench: {rounds} rounds in {DRAIN_BUDGET:?}, the budget; skipping the rest");
            break;
        }
        rounds += 1;
        let mut this_round = [0.0; SIDES.len()];
        for k in 0..SIDES.len() {
            let i = (k + round) % SIDES.len();
            let took = measure(place, SIDES[i], body, messages);
            this_round[i] = entries as f64 / took.wall.as_secs_f64();
            cpu[i].push(took.cpu.as_secs_f64() * 1e6 / entries as f64);
            stolen.push(took.stolen.iter().sum::<f64>() / took.stolen.len().max(1) as f64);
            if let Layout::Split { agent, .. } = place.layout
                && let Some(b) = took.busy.get(agent)
            {
                agent_us[i].push(b * took.wall.as_secs_f64() * 1e6 / entries as f64);
            }
            for (c, b) in took.busy.iter().enumerate() {
                if busy[i].len() <= c {
                    busy[i].resize(c + 1, Vec::new());
                }
                busy[i][c].push(*b);
            }
        }
        for i in 0..SIDES.len() {
            rates[i].push(this_round[i]);
            ratios[i].push(this_round[i] / this_round[0]);
        }
    }
    let mut lines = vec![
        format!(
            "drain of {entries} entries of {} KiB over 1 connection, collector max_in_flight {FULL_WINDOW}, spool \
             and store on {} (TMPDIR); {rounds} rounds, entries/s (quartiles)",
            BODY_LEN >> 10,
            disk::fs_name(&std::env::temp_dir()),
        ),
        place.layout.describe(),
    ];
    // The drain cannot go faster than the slower of its two halves: the collector and the spool.
    let spool_i = SIDES.iter().position(|s| *s == Side::Spool).expect("a spool side");
    let bound: Vec<f64> = (0..rates[0].len()).map(|r| rates[0][r].min(rates[spool_i][r])).collect();
    for (i, side) in SIDES.iter().enumerate() {
        let of_bound: Vec<f64> = (0..rates[i].len()).map(|r| rates[i][r] / bound[r]).collect();
        let rate = median(&mut rates[i]);
        let spread = format!("({:.0}..{:.0})", quantile(&mut rates[i], 0.25), quantile(&mut rates[i], 0.75));
        let line = match side {
            Side::Ingest(_) if i == 0 => format!("{:<52} {rate:>8.0}/s {spread:<15} the limit", side.label()),
            Side::Ingest(_) | Side::Spool => {
                format!(
                    "{:<52} {rate:>8.0}/s {spread:<15} {:.2} of the limit",
                    side.label(),
                    median(&mut ratios[i])
                )
            }
            Side::Drain(_) => {
                let ratio = median(&mut ratios[i]);
                let of_bound = median(&mut of_bound.clone());
                format!(
                    "{:<52} {rate:>8.0}/s {spread:<15} {of_bound:.2} of the slower of collector and spool \
                     (target >= {DRAIN_BOUND_TARGET:.2}) {}; {ratio:.2} of the collector (target >= \
                     {DRAIN_RATIO_TARGET:.2}) {}",
                    side.label(),
                    verdict(of_bound >= DRAIN_BOUND_TARGET),
                    verdict(ratio >= DRAIN_RATIO_TARGET),
                )
            }
        };
        lines.push(line);
    }
    // Where the time goes when the cores are busy: a drain does the collector's work and the spool's
    // in one process, so when the machine has no core to spare for either half, its rate is bounded by
    // the sum of the two halves' CPU per entry rather than by the slower half.
    let cpu_of = |side: Side, cpu: &mut [Vec<f64>]| {
        let i = SIDES.iter().position(|s| *s == side).expect("a measured side");
        median(&mut cpu[i])
    };
    let (ingest, spool) = (cpu_of(SIDES[0], &mut cpu), cpu_of(Side::Spool, &mut cpu));
    let drains: Vec<String> = SIDES
        .iter()
        .filter(|s| matches!(s, Side::Drain(_)))
        .map(|s| match s {
            Side::Drain(w) => format!("drain (window {w}) {:.1}", cpu_of(*s, &mut cpu)),
            _ => unreachable!("filtered"),
        })
        .collect();
    lines.push(format!(
        "CPU of this process per entry, µs (medians): collector ingest {ingest:.1} (its client included), spool \
         alone {spool:.1} (sum {:.1}), {}; load average {:.1} at the end, {:.0}% of the CPUs stolen by the host \
         (median over the measurements, up to {:.0}%)",
        ingest + spool,
        drains.join(", "),
        load_average(),
        median(&mut stolen.clone()) * 100.0,
        stolen.iter().copied().fold(0.0, f64::max) * 100.0,
    ));
    if let Layout::Split { collector, agent } = place.layout {
        // Which CPU bounds the drain: the agent's side does the spool's work and the uploader's own
        // on its CPU; a CPU busy nearly all the time is the limit, one that idles is waiting.
        let mut of = |side: Side, c: usize| {
            let i = SIDES.iter().position(|s| *s == side).expect("a measured side");
            busy[i].get_mut(c).map_or(f64::NAN, |b| median(b) * 100.0)
        };
        let d = Side::Drain(DEFAULT_WINDOW);
        let (dc, da) = (of(d, collector), of(d, agent));
        let (sa, ic) = (of(Side::Spool, agent), of(SIDES[0], collector));
        lines.push(format!(
            "  CPUs busy (medians): drain (window {DEFAULT_WINDOW}) collector's CPU {dc:.0}%, agent's CPU {da:.0}%; \
             spool alone, agent's CPU {sa:.0}%; ingest, collector's CPU {ic:.0}%"
        ));
        // What the drain's rate comes to when its CPU is the limit: the spool's work per entry plus
        // the uploader's own. The bench's client (messages made before the clock starts, no spool,
        // no state) is the least an uploader's own work can cost on the same CPU.
        let mut us = |side: Side| {
            let i = SIDES.iter().position(|s| *s == side).expect("a measured side");
            median(&mut agent_us[i])
        };
        let (d_us, s_us, c_us) = (us(d), us(Side::Spool), us(SIDES[0]));
        let slower = median(&mut bound.clone());
        lines.push(format!(
            "  agent's CPU per entry, µs (medians): spool alone {s_us:.0}, the bench's client alone {c_us:.0} \
             (ingest), drain (window {DEFAULT_WINDOW}) {d_us:.0} (to a µs: the kernel counts busy time in ticks); \
             the uploader's own work {:.0} µs per entry; with its CPU all busy a drain reaches 1e6 / {d_us:.0} = \
             {:.0}/s, {:.2} of the slower of collector and spool, and one whose own work cost what the client's \
             does {:.2}",
            d_us - s_us,
            1e6 / d_us,
            1e6 / d_us / slower,
            1e6 / (s_us + c_us) / slower,
        ));
    }
    if place.layout == Layout::Shared {
        // The drain does the collector's work and the spool's on the same cores: however well the
        // uploader overlaps them, the cores cannot give it more than cores / (ingest + spool) entries
        // a second (less the client's share of the ingest figure, which the drain does not pay, and
        // plus the uploader's own work, which neither half includes).
        let cores = allowed_cpus().len() as f64;
        let slower = median(&mut bound.clone());
        let cap = cores * 1e6 / (ingest + spool);
        lines.push(format!(
            "  the CPU cap of a drain on these {cores:.0} cores: {cores:.0} / ({ingest:.1} + {spool:.1} µs) = {cap:.0}/s, \
             {:.2} of the slower of collector and spool ({slower:.0}/s){}",
            cap / slower,
            if cap < DRAIN_BOUND_TARGET * slower {
                format!(": the {DRAIN_BOUND_TARGET:.2} target is out of reach of any uploader on this machine")
            } else {
                String::new()
            }
        ));
    }
    lines
}

/// The one-minute load average of the machine (`/proc/loadavg`), or NaN.
fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// What one measurement took: wall time, and the CPU time of this whole process (collector, uploader,
/// blocking pools, the spool's threads) over the same span.
#[derive(Clone)]
struct Took {
    wall: Duration,
    cpu: Duration,
    /// How busy each CPU of the machine was over the span (0 to 1; any process's work, this one's
    /// included), by CPU number.
    busy: Vec<f64>,
    /// The share of each CPU the hypervisor gave to other machines over the span (steal).
    stolen: Vec<f64>,
}

/// The start of a measured span: this process's CPU clock and the machine's CPUs.
struct Span {
    cpu: Duration,
    cores: Vec<[f64; 2]>,
    start: Instant,
}

impl Span {
    fn begin() -> Self {
        Self { cpu: process_cpu(), cores: core_times(), start: Instant::now() }
    }

    /// The span so far; `wall` when the side measured its own (from its connect).
    fn end(self, wall: Option<Duration>) -> Took {
        let total = self.start.elapsed();
        let cpu = process_cpu().saturating_sub(self.cpu);
        let now = core_times();
        let share = |k: usize| -> Vec<f64> {
            now.iter().zip(&self.cores).map(|(a, b)| (a[k] - b[k]) / total.as_secs_f64()).collect()
        };
        Took { wall: wall.unwrap_or(total), cpu, busy: share(0), stolen: share(1) }
    }
}

/// For each CPU of the machine, the seconds it has run work (user, system, interrupts) and the
/// seconds the hypervisor took from it to run other machines (steal), from /proc/stat.
fn core_times() -> Vec<[f64; 2]> {
    let tick = clock_ticks_per_second();
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            // user nice system idle iowait irq softirq steal
            let f: Vec<u64> = l.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
            let at = |i: usize| f.get(i).copied().unwrap_or(0) as f64 / tick;
            [at(0) + at(1) + at(2) + at(5) + at(6), at(7)]
        })
        .collect()
}

/// Each live thread of this process: its name and CPU time (utime + stime, clock ticks), by thread id.
fn thread_cpu() -> std::collections::HashMap<String, (String, u64)> {
    let mut threads = std::collections::HashMap::new();
    let Ok(tasks) = fs::read_dir("/proc/self/task") else { return threads };
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let Ok(stat) = fs::read_to_string(task.path().join("stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        threads.insert(tid, (name, ticks(11) + ticks(12)));
    }
    threads
}

/// Shares as percentages, one per CPU.
fn percents(shares: &[f64]) -> String {
    shares.iter().map(|b| format!("{:.0}%", b * 100.0)).collect::<Vec<_>>().join(" ")
}

/// The CPU time this process has used so far (every thread).
fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
}

/// Times `f` by the wall clock and by this process's CPU clock.
fn timed(f: impl FnOnce() -> Duration) -> Took {
    let span = Span::begin();
    let wall = f();
    span.end(Some(wall))
}

/// One measurement against a fresh collector; returns the time the side took for all the entries.
fn measure(place: &Place, side: Side, body: &[u8], messages: &[Message]) -> Took {
    let begun = Instant::now();
    let n = messages.len() as f64;
    let cpu_line = |took: &Took| {
        format!(
            "CPU {:.0} ms, {:.1} µs/entry, {:.2} cores; CPUs busy {} (stolen by the host {})",
            took.cpu.as_secs_f64() * 1e3,
            took.cpu.as_secs_f64() * 1e6 / n,
            took.cpu.as_secs_f64() / took.wall.as_secs_f64(),
            percents(&took.busy),
            percents(&took.stolen),
        )
    };
    if side == Side::Spool {
        let took = spool_alone(messages.len(), body);
        eprintln!("{}: {:.0} ms, {}", side.label(), took.wall.as_secs_f64() * 1e3, cpu_line(&took));
        return took;
    }
    let collector = Collector::start(place.collector());
    let took = match side {
        Side::Ingest(window) => timed(|| {
            place.agent.block_on(async {
                let start = Instant::now();
                let ws = connect(collector.addr).await;
                tokio::time::timeout(RUN_BOUND, pump(ws, messages, window))
                    .await
                    .expect("the collector answers every report within the bound");
                start.elapsed()
            })
        }),
        Side::Drain(window) => drain(&collector, window, messages.len(), body),
        Side::Spool => unreachable!("measured above, without a collector"),
    };
    collector.stop(place.collector());
    eprintln!(
        "{}: {:.0} ms ({:.0} ms with setup), {}",
        side.label(),
        took.wall.as_secs_f64() * 1e3,
        begun.elapsed().as_secs_f64() * 1e3,
        cpu_line(&took)
    );
    took
}

/// A spool holding `entries` entries, written back to disk, and its directory.
fn filled_spool(entries: usize, body: &[u8]) -> (TempDir, PathBuf, Spool) {
    let dir = bench_dir("lastword-drain-spool-");
    let root = dir.path().join("spool");
    // No limits: 10,000 entries is the default cap, and eviction is not what is measured.
    let options = SpoolOptions {
        limits: SpoolLimits { max_bytes: u64::MAX, max_entries: u64::MAX },
        ..SpoolOptions::default()
    };
    drop(Spool::open(&root, options.clone()).expect("create the bench spool"));
    let ready = root.join("ready");
    for i in 0..entries {
        // Flagged as lastword's writers flag a JSON body: the uploader sends it without parsing it.
        put_ready(&ready, kind_of(i), lastword::spool::FLAG_JSON, body);
    }
    settle_disk(&root);
    let spool = Spool::open(&root, options).expect("open the filled spool");
    assert_eq!(spool.ready_count(), entries as u64, "the spool sees every entry put in ready/");
    (dir, root, spool)
}

/// Threads that delete acknowledged entries in the spool-alone side, as the uploader's background
/// deletes do (it runs up to six batches at once on the blocking pool).
const SPOOL_ACKERS: usize = 4;
/// Entries handed to an acker at once, as the uploader acks the answers of one read.
const SPOOL_ACK_BATCH: usize = 64;

/// The spool's own limit, used the way the uploader uses it: one thread claims (rename, read) every
/// entry of a filled spool while [`SPOOL_ACKERS`] threads ack (unlink) what was claimed, in batches,
/// so that claims and deletes overlap as they do in a drain. No network.
fn spool_alone(entries: usize, body: &[u8]) -> Took {
    let (_dir, _root, spool) = filled_spool(entries, body);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<lastword::spool::Claim>>(SPOOL_ACKERS * 2);
    let rx = std::sync::Mutex::new(rx);
    let span = Span::begin();
    let n = std::thread::scope(|scope| {
        for _ in 0..SPOOL_ACKERS {
            let acker = std::thread::Builder::new().name("spool-acker".into());
            acker
                .spawn_scoped(scope, || {
                    loop {
                        let batch = match rx.lock().expect("the ackers' channel").recv() {
                            Ok(batch) => batch,
                            Err(_) => return,
                        };
                        for claim in batch {
                            claim.ack().expect("ack an entry");
                        }
                    }
                })
                .expect("start an acker thread");
        }
        // Its own thread, named, so that a profile tells the claims from the setup.
        let claimer = std::thread::Builder::new().name("spool-claimer".into());
        let spool = &spool;
        let claimer = claimer
            .spawn_scoped(scope, move || {
                let mut n = 0;
                let mut batch = Vec::with_capacity(SPOOL_ACK_BATCH);
                while let Some(claim) = spool.claim().expect("claim an entry") {
                    assert_eq!(claim.body().len(), body.len());
                    batch.push(claim);
                    n += 1;
                    if batch.len() == SPOOL_ACK_BATCH {
                        tx.send(std::mem::take(&mut batch)).expect("hand a batch to the ackers");
                    }
                }
                if !batch.is_empty() {
                    tx.send(batch).expect("hand a batch to the ackers");
                }
                n
            })
            .expect("start the claiming thread");
        claimer.join().expect("the claiming thread does not panic")
    });
    let took = span.end(None);
    assert_eq!(n, entries, "every entry claimed once");
    assert_eq!(spool.ready_count(), 0, "every entry acked");
    took
}

/// Fills a spool with `entries` entries, then drains it with an uploader as `lastword drain` does.
fn drain(collector: &Collector, window: usize, entries: usize, body: &[u8]) -> Took {
    let (_dir, root, spool) = filled_spool(entries, body);

    let mut config = UploaderConfig::new([collector.url()], "bench").token(TOKEN).window(window);
    config.agent.name = "lastword-agent".into();
    config.prepare = Some(lastword::prepare_for_upload(&root));
    let span = Span::begin();
    let uploader = Uploader::start(spool, config).expect("start the uploader");
    let flushed = uploader.flush(RUN_BOUND);
    let took = span.end(None);
    let last_error = uploader.last_error();
    let summary = uploader.shutdown(Duration::from_secs(2));
    assert!(flushed.is_ok(), "drain did not finish: {flushed:?}, {summary:?}, last error {last_error:?}");
    assert_eq!(summary.delivered, entries as u64, "every entry delivered: {summary:?}");
    assert_eq!((summary.duplicates, summary.quarantined), (0, 0), "{summary:?}");
    if summary.deferred > 0 || summary.connections > 1 {
        eprintln!("  drain: {} answered retry_later, {} connections", summary.deferred, summary.connections);
    }
    took
}

type Ws = WebSocketStream<TcpStream>;

async fn connect(addr: SocketAddr) -> Ws {
    let mut request = format!("ws://{addr}/ingest").into_client_request().expect("a valid request URL");
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL));
    request
        .headers_mut()
        .insert("Authorization", HeaderValue::from_str(&bearer(TOKEN)).expect("the token is a valid header"));
    let tcp = TcpStream::connect(addr).await.expect("connect to the collector");
    tcp.set_nodelay(true).expect("set TCP_NODELAY");
    let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await.expect("websocket handshake");
    let hello = r#"{"type":"hello","protocol":1,"agent":{"name":"bench","version":"0"},"app":"bench"}"#;
    ws.send(Message::text(hello)).await.expect("send the hello");
    let welcome = ws.next().await.expect("a welcome").expect("read the welcome");
    assert!(welcome.to_text().is_ok_and(|t| t.contains(r#""welcome""#)), "{welcome:?}");
    ws
}

/// Sends every message on `ws` with up to `window` unanswered, and waits for every answer, each of
/// which must be `accepted`.
async fn pump(mut ws: Ws, messages: &[Message], window: usize) {
    let n = messages.len();
    let (mut sent, mut answered) = (0, 0);
    while answered < n {
        while sent < n && sent - answered < window {
            ws.feed(messages[sent].clone()).await.expect("send a report");
            sent += 1;
        }
        ws.flush().await.expect("flush the reports");
        let mut check = |m: Message| {
            let text = m.into_text().expect("a text answer");
            assert!(text.starts_with(r#"{"type":"accepted""#), "{text}");
            answered += 1;
        };
        check(ws.next().await.expect("an answer").expect("read an answer"));
        while let Some(Some(Ok(m))) = ws.next().now_or_never() {
            check(m);
        }
    }
    let _ = ws.close(None).await;
}

/// The report messages the uploader would send for `entries` spool entries of `body`, built before
/// any clock starts. Their payloads are shared buffers, so sending a clone costs no copy.
fn messages(entries: usize, body: &[u8]) -> Vec<Message> {
    (0..entries)
        .map(|i| {
            let id = EntryId::generate();
            let report = Report::new(id, kind_of(i), id.millis(), body).expect("the bench body is JSON");
            Message::text(ClientMessage::Report(report).to_json())
        })
        .collect()
}

/// A crash-like JSON body of exactly `len` bytes (padded).
fn body(len: usize) -> Vec<u8> {
    let frames: Vec<String> =
        (0..12).map(|i| format!(r#"{{"function":"app::module::function_{i}","line":{i}}}"#)).collect();
    let head = format!(
        r#"{{"message":"panicked at src/worker.rs:17: index out of bounds","thread":"worker-3","frames":[{}],"pad":""#,
        frames.join(",")
    );
    let tail = r#""}"#;
    let pad = len.checked_sub(head.len() + tail.len()).expect("the body template fits in the length");
    let body = format!("{head}{}{tail}", "p".repeat(pad)).into_bytes();
    assert_eq!(body.len(), len);
    body
}

/// Mostly logs, some events, a few crashes, as a busy spool holds.
fn kind_of(i: usize) -> Kind {
    match i % 10 {
        0 => Kind::Crash,
        1..=3 => Kind::Event,
        _ => Kind::Log,
    }
}

fn bench_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().expect("create a temporary directory")
}

// ---------------------------------------------------------------------------------------------
// Idle sidecar
// ---------------------------------------------------------------------------------------------

/// The `lastword` binary Cargo built for this package's benches.
const BIN: &str = env!("CARGO_BIN_EXE_lastword");

/// What `/proc` says about a process at one moment.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rss_kib: u64,
    peak_rss_kib: u64,
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
}

impl Sample {
    fn of(pid: u32) -> Self {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        };
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
        // The command name (field 2) is in parentheses and may hold spaces: count from after it.
        // Field 3 (state) is then the first; utime and stime are fields 14 and 15.
        let after = &stat[stat.rfind(')').expect("a /proc/PID/stat line") + 1..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields[i].parse::<u64>().expect("a number of clock ticks in /proc/PID/stat");
        Self { rss_kib: kib("VmRSS:"), peak_rss_kib: kib("VmHWM:"), cpu_ticks: ticks(11) + ticks(12) }
    }
}

fn clock_ticks_per_second() -> f64 {
    // Asked once: a process started inside a measured span would be counted in it.
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(ask_clock_ticks)
}

fn ask_clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .expect("`getconf CLK_TCK` gives the clock ticks per second")
}

/// Kills a process this bench started when it goes out of scope, whatever happens meanwhile.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn idle_table(runtime: &Runtime, period: Duration) -> Vec<String> {
    let bin = PathBuf::from(BIN);
    assert!(
        bin.is_file(),
        "the lastword binary is not at {BIN}: build it with `cargo build --profile bench -p lastword-agent --bin \
         lastword` (cargo bench builds it before the benches)"
    );
    let tick = clock_ticks_per_second();
    let collector = Collector::start(runtime);
    let dir = bench_dir("lastword-drain-idle-");
    let spool = dir.path().join("spool");
    fs::create_dir(&spool).expect("create the empty spool directory");

    let started = Instant::now();
    let mut sidecar = Reaped(
        Command::new(&bin)
            .arg("run")
            .arg("--create")
            .arg("--spool")
            .arg(&spool)
            .arg("--url")
            .arg(collector.url())
            .env("LASTWORD_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {BIN}: {e}")),
    );
    let baseline = Reaped(
        Command::new("sleep")
            .arg(format!("{}", period.as_secs() + 60))
            .stdin(Stdio::null())
            .spawn()
            .expect("start `sleep`"),
    );
    // Started: the spool's layout exists (made by Spool::open before the uploader starts).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !spool.join("ready").is_dir() {
        assert!(Instant::now() < deadline, "the sidecar did not open its spool within 10 s");
        assert!(matches!(sidecar.0.try_wait(), Ok(None)), "the sidecar exited during startup");
        std::thread::sleep(Duration::from_millis(5));
    }
    let first = Sample::of(sidecar.0.id());
    let first_base = Sample::of(baseline.0.id());
    let measured_from = Instant::now();
    std::thread::sleep(period);
    let last = Sample::of(sidecar.0.id());
    let last_base = Sample::of(baseline.0.id());
    let measured = measured_from.elapsed().as_secs_f64();
    let lifetime = started.elapsed().as_secs_f64();

    // SIGTERM, then a bounded wait for exit 0.
    let stop = Instant::now();
    let pid = rustix::process::Pid::from_raw(i32::try_from(sidecar.0.id()).expect("a pid fits in an i32"))
        .expect("a child's pid is positive");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("send SIGTERM to the sidecar");
    let status = loop {
        if let Some(status) = sidecar.0.try_wait().expect("wait for the sidecar") {
            break status;
        }
        assert!(stop.elapsed() < Duration::from_secs(10), "the sidecar did not exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(5));
    };
    let exit_ms = stop.elapsed().as_secs_f64() * 1e3;
    let mut stderr = String::new();
    if let Some(mut pipe) = sidecar.0.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    assert_eq!(status.code(), Some(0), "the sidecar's exit after SIGTERM: {status}; stderr: {stderr}");
    drop(baseline);
    collector.stop(runtime);

    let mib = |kib: u64| kib as f64 / 1024.0;
    let secs = |ticks: u64| ticks as f64 / tick;
    let idle_cpu = secs(last.cpu_ticks - first.cpu_ticks);
    // The target is per 30 s: scale a shorter or longer period to it.
    let idle_cpu_30 = idle_cpu * IDLE_TARGET_PERIOD_S / measured;
    let rss = mib(last.rss_kib);
    vec![
        format!(
            "idle `lastword run` on an empty spool, live collector, {measured:.1} s (CPU in clock ticks of \
             1/{tick:.0} s)"
        ),
        format!(
            "{:<30} RSS {rss:>5.1} MiB (peak {:.1}) (target < {IDLE_RSS_TARGET_MIB:.0}) {}",
            "lastword run",
            mib(last.peak_rss_kib),
            verdict(rss < IDLE_RSS_TARGET_MIB),
        ),
        format!(
            "{:<30} CPU {idle_cpu:.3} s idle, {idle_cpu_30:.3} s per 30 s (target < {IDLE_CPU_TARGET_S}) {}; \
             {:.3} s in its {lifetime:.1} s life, startup included",
            "",
            verdict(idle_cpu_30 < IDLE_CPU_TARGET_S),
            secs(last.cpu_ticks),
        ),
        format!(
            "{:<30} RSS {:>5.1} MiB, CPU {:.3} s idle",
            "`sleep`, for scale",
            mib(last_base.rss_kib),
            secs(last_base.cpu_ticks - first_base.cpu_ticks),
        ),
        format!("{:<30} exit 0 {exit_ms:.0} ms after SIGTERM", "lastword run"),
    ]
}
