//! Exit time of a small application that links lastword and whose collector cannot be reached,
//! against the same application without lastword, measured in the same run.
//!
//! `cargo bench -p lastword --bench exit` (add `-- --quick` for fewer rounds). The application is this
//! bench binary itself, started again with `LASTWORD_EXIT_BENCH_APP` set: it calls `lastword::init`
//! (a spool in a temporary directory, the fatal-signal handlers, the uploader when a URL is given),
//! logs one error (one log batch to store at exit), and returns from `main`, so that the guard's drop
//! runs. Its exit time is the wall time from spawning the process to reaping it. Sides:
//!
//! - `without lastword`: the same binary and the same calls, without `init` (the record goes nowhere);
//! - `spool only`: `init` with no collector URL (a sidecar would deliver);
//! - `collector down`: a URL on `127.0.0.1` where nothing listens (the connection is refused);
//! - `token refused`: a URL on a small server in this process that answers every handshake with
//!   HTTP 401.
//!
//! Each side keeps one spool for all its runs, as an application does: the reports that could not be
//! delivered pile up in it (a few hundred entries by the end), and every start tries to deliver them.
//! The sides run in rounds, the order rotating between rounds, and the table gives for each side the
//! median exit time and the median of its difference with the `without lastword` run of the same round,
//! with the ratio of the medians:
//!
//! ```text
//! without lastword                  X ms
//! collector down (refused)          Y ms   +D ms (target <= 20 ms) ok, ratio R
//! of which the uploader (collector down minus spool only, same round): +U ms
//! the file system's own durable write of one small file (...): W ms; spool only minus it: +S ms
//! ```
//!
//! The spool-only side is what lastword costs an exit with no collector at all (opening the spool,
//! the log batch made durable at exit: a file and a directory fsync); the uploader's line is the part
//! of the uploader, which is what the target is about: an exit does not wait for a collector that
//! cannot be reached. The last line is the floor under the spool's part: the same durable write done
//! bare by this process on the same file system in each round (on an ext4 disk its two fsyncs are
//! most of an exit's cost; on tmpfs they are nearly free), and what the spool adds over it.
//!
//! Under `cargo test --benches` (no `--bench` argument) each side runs once, to see that it works.
//! With `LASTWORD_EXIT_BENCH_PHASES=1` in its environment, the application prints how long its
//! `init` and its guard's drop took, for a look at where the time goes.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../../tests/benches-common/stats.rs"]
mod stats;
use stats::{median, quantile, verdict};
#[path = "../../tests/benches-common/mode.rs"]
mod mode;
use mode::RunMode;

/// Target from the issue: exit time with the collector down, minus the exit time without lastword.
const TARGET_MS: f64 = 20.0;
const APP_ENV: &str = "LASTWORD_EXIT_BENCH_APP";
const SPOOL_ENV: &str = "LASTWORD_EXIT_BENCH_SPOOL";
const URL_ENV: &str = "LASTWORD_EXIT_BENCH_URL";

fn main() {
    if std::env::var_os(APP_ENV).is_some() {
        app();
        return;
    }
    let mode = RunMode::from_args();
    if mode.list {
        return;
    }
    let dry = mode.dry;
    let rounds = if dry {
        1
    } else if mode.quick {
        15
    } else {
        41
    };

    let down = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
        let addr = listener.local_addr().expect("its address");
        drop(listener);
        format!("ws://{addr}/ingest")
    };
    let refusing = refusing_server();
    let sides = [
        Side { name: "without lastword", url: None, lastword: false },
        Side { name: "lastword, spool only (no URL)", url: None, lastword: true },
        Side { name: "lastword, collector down (refused)", url: Some(down), lastword: true },
        Side { name: "lastword, token refused (HTTP 401)", url: Some(refusing), lastword: true },
    ];
    let dirs: Vec<tempfile::TempDir> =
        sides.iter().map(|_| tempfile::tempdir().expect("a temporary directory")).collect();
    let exe = std::env::current_exe().expect("this bench's path");

    // One run of each side first, untimed: the page cache and the spools' creation.
    for (side, dir) in sides.iter().zip(&dirs) {
        side.run(&exe, dir.path());
        // An application's spool was made long before this start (spool/FORMAT.md, "a settled
        // spool"): age the one just made the same way, not to time its creation in every round.
        if side.lastword {
            let version = std::fs::File::options().write(true).open(dir.path().join("VERSION"));
            let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
            version.and_then(|f| f.set_modified(long_ago)).expect("age the spool's VERSION");
        }
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    // The file system's own cost of what lastword's exit must do at least: one small file made
    // durable (write, fsync, rename, fsync of the directory), on the file system of the spools,
    // measured in every round beside the sides.
    let bare_dir = tempfile::tempdir().expect("a temporary directory");
    let mut bare = Vec::new();
    for round in 0..rounds {
        for k in 0..sides.len() {
            let i = (k + round) % sides.len();
            times[i].push(sides[i].run(&exe, dirs[i].path()));
        }
        bare.push(durable_write(bare_dir.path(), round));
    }
    let baseline = median(&mut times[0].clone());
    println!();
    println!(
        "lastword exit bench: {rounds} interleaved rounds, wall time from spawn to exit of a small app \
         (init, one error logged, return from main), ms"
    );
    for (i, side) in sides.iter().enumerate() {
        let mut t = times[i].clone();
        let (m, q1, q3) = (median(&mut t), quantile(&mut t, 0.25), quantile(&mut t, 0.75));
        if i == 0 {
            println!("  {:<38} {m:7.2} ms ({q1:.2}..{q3:.2})  the baseline", side.name);
            continue;
        }
        let mut diffs: Vec<f64> = times[i].iter().zip(&times[0]).map(|(a, b)| a - b).collect();
        let d = median(&mut diffs);
        let target = if side.url.is_some() {
            format!(" (target <= {TARGET_MS} ms) {}", verdict(d <= TARGET_MS))
        } else {
            String::new()
        };
        println!(
            "  {:<38} {m:7.2} ms ({q1:.2}..{q3:.2})  {d:+.2} ms{target}, ratio {:.2}",
            side.name,
            m / baseline
        );
    }
    // What the uploader adds to an exit with the collector down: against the spool-only side.
    let mut share: Vec<f64> = times[2].iter().zip(&times[1]).map(|(a, b)| a - b).collect();
    println!(
        "  of which the uploader (collector down minus spool only, same round): {:+.2} ms",
        median(&mut share)
    );
    let mut spool_over_bare: Vec<f64> =
        times[1].iter().zip(&times[0]).zip(&bare).map(|((a, b), w)| a - b - w).collect();
    println!(
        "  the file system's own durable write of one small file (write, fsync, rename, directory \
         fsync): {:.2} ms; spool only minus it: {:+.2} ms",
        median(&mut bare.clone()),
        median(&mut spool_over_bare)
    );
    let left: Vec<usize> = dirs.iter().map(|d| entries(&d.path().join("ready"))).collect();
    println!("  (entries left in each side's spool: {left:?}: what could not be delivered waits there)");
}

struct Side {
    name: &'static str,
    url: Option<String>,
    lastword: bool,
}

impl Side {
    /// Runs the application once; its exit time in milliseconds.
    fn run(&self, exe: &Path, spool: &Path) -> f64 {
        let mut c = Command::new(exe);
        c.env(APP_ENV, if self.lastword { "with" } else { "without" })
            .env(SPOOL_ENV, spool)
            .env(URL_ENV, self.url.as_deref().unwrap_or_default())
            .env_remove("LASTWORD_URL")
            .env_remove("LASTWORD_SPOOL")
            .env_remove("LASTWORD_TOKEN");
        let start = Instant::now();
        let status = c.status().expect("run the application");
        let took = start.elapsed();
        assert!(status.success(), "{}: the application failed: {status}", self.name);
        took.as_secs_f64() * 1000.0
    }
}

/// The application: a command-line tool that reports an error and exits.
fn app() {
    let t0 = Instant::now();
    let with = std::env::var(APP_ENV).is_ok_and(|v| v == "with");
    let guard = if with {
        let spool = PathBuf::from(std::env::var_os(SPOOL_ENV).expect("the spool"));
        let mut config = lastword::Config::new("exit-bench").spool(spool).no_url().token("bench");
        if let Some(url) = std::env::var(URL_ENV).ok().filter(|u| !u.is_empty()) {
            config = config.url(url);
        }
        // The token refusal is said on stderr once per run: keep the bench's output clean (unless
        // the phases are asked for: then every diagnostic, with its time).
        if std::env::var_os("LASTWORD_EXIT_BENCH_PHASES").is_some() {
            config = config.diagnostics(move |_, m| eprintln!("{:?} {m}", t0.elapsed()));
        } else {
            config = config.diagnostics(|_, _| {});
        }
        Some(lastword::init(config).expect("lastword::init"))
    } else {
        None
    };
    let t1 = Instant::now();
    lastword::log(lastword::Level::Error, "exit_bench", "could not open the input file");
    let t2 = Instant::now();
    drop(guard);
    if std::env::var_os("LASTWORD_EXIT_BENCH_PHASES").is_some() {
        eprintln!("init {:?}, drop from {:?} to {:?}", t1 - t0, t2 - t0, t0.elapsed());
    }
}

/// A server that answers every websocket handshake with HTTP 401; its URL.
fn refusing_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let url = format!("ws://{}/ingest", listener.local_addr().expect("its address"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    url
}

/// One file of a log batch's size made durable the way the spool makes an entry durable; ms.
fn durable_write(dir: &Path, round: usize) -> f64 {
    let start = Instant::now();
    let tmp = dir.join(format!(".{round}.tmp"));
    let mut file = std::fs::File::create(&tmp).expect("create a file");
    file.write_all(&[b'x'; 416]).expect("write it");
    file.sync_all().expect("fsync it");
    std::fs::rename(&tmp, dir.join(format!("{round}.log"))).expect("rename it");
    std::fs::File::open(dir).and_then(|d| d.sync_all()).expect("fsync the directory");
    start.elapsed().as_secs_f64() * 1000.0
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}
