//! Symbolizing stored reports again when their debug file arrives (issue 20), against the store's own
//! limit measured in the same run:
//!
//! - **resymbolize**: N crash reports of one stripped build (the crash app's release build, stripped,
//!   its real SIGSEGV report copied N times under new ids) wait in a SQLite store for the build's debug
//!   file (`objcopy --only-keep-debug`); the file is there; `symbolize::resymbolize` reads them 500 at
//!   a time, names their frames with a cold symbolizer (the file is loaded once, inside the clock),
//!   moves each to its new group and commits each page. Target: 10,000 reports in under 10 s.
//! - **the store's own limit** (baseline): the same N reports in a store of their own, the same
//!   pages committed by `Waits::resymbolized` with the named body computed before the clock starts:
//!   what reading, rewriting and moving them costs without symbolization.
//! - **a large debug file**: the crash app's dev build (full DWARF of it and its dependencies, about
//!   100 MB) stripped, one of its reports named with a cold symbolizer (loading the file) and then
//!   again warm (cached after).
//!
//! `cargo bench -p lastword-collector --bench resymbolize` (`-- --quick`: 2,000 reports);
//! `cargo test --benches` runs it with 50 reports and without the large file.

#![allow(clippy::unwrap_used, reason = "a benchmark: a failure is a failed run")]

#[path = "../../../tests/benches-common/mode.rs"]
mod mode;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lastword::spool::{Kind as SpoolKind, SpoolView};
use lastword::symbolize::readable;
use lastword_collector::debug_files::DebugFiles;
use lastword_collector::fingerprint;
use lastword_collector::store::waits::{Changed, Resymbolized};
use lastword_collector::store::{Batch, NewReport, Origin, SqliteStore, Store as _, Waits as _};
use lastword_collector::symbolize::{PAGE, Symbols, resymbolize};
use lastword_protocol::Software;
use lastword_spool::{EntryId, Kind};
use lastword_tests::builds::{Variant, app, debug_file, dev_stripped_and_debug_file};
use mode::RunMode;

/// The crash report (JSON) of `case` run by `binary`, as its sidecar would deliver it: symbolized on
/// its machine, which for a stripped binary leaves the executable's frames unnamed.
fn report_of(binary: &Path, case: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let out = Command::new(binary)
        .arg(case)
        .env("LASTWORD_SPOOL", &spool)
        .env_remove("LASTWORD_URL")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{case} crashes");
    let view = SpoolView::open(&spool).unwrap();
    let item = view.list().unwrap().into_iter().find(|e| e.kind == Some(SpoolKind::Crash)).unwrap();
    let entry = view.read(item.id.unwrap()).unwrap();
    serde_json::to_string(&readable(entry.header.flags, &entry.body).unwrap()).unwrap()
}

/// The build id the executable's frames of `body` wait for.
fn build_id_of(body: &str, binary: &Path) -> String {
    let report: lastword::report::CrashReport = serde_json::from_str(body).unwrap();
    let own = report.frames.iter().find(|f| f.module.as_deref() == binary.to_str()).unwrap();
    own.build_id.clone().unwrap()
}

fn origin() -> Arc<Origin> {
    Arc::new(Origin {
        agent: Software { name: "lastword".into(), version: "0".into() },
        app: "crash-app".into(),
        release: None,
        host: Some("h".into()),
    })
}

/// A store in `dir` holding `n` copies of `body`, each waiting for `build_id`.
async fn filled(dir: &Path, body: &str, build_id: &str, n: usize) -> SqliteStore {
    let store = SqliteStore::open(dir).unwrap();
    let derived = fingerprint::digest(Kind::Crash, body);
    let origin = origin();
    let mut left = n;
    while left > 0 {
        let take = left.min(1000);
        left -= take;
        let reports = (0..take)
            .map(|i| NewReport {
                id: EntryId::generate(),
                kind: Kind::Crash,
                origin: Arc::clone(&origin),
                created_ms: 1_000 + i as u64,
                received_ms: 1_000 + i as u64,
                fingerprint: derived.fingerprint.clone(),
                summary: derived.summary.clone(),
                body: body.to_owned(),
                waits: vec![build_id.to_owned()],
            })
            .collect();
        store.write(Batch { reports, losses: vec![] }).await.unwrap();
    }
    store
}

/// A debug files directory holding `file` as the debuginfo of `build_id`.
fn files_with(dir: &Path, build_id: &str, file: &Path) -> DebugFiles {
    let at = dir.join(build_id);
    std::fs::create_dir_all(&at).unwrap();
    std::fs::copy(file, at.join("debuginfo")).unwrap();
    DebugFiles::in_dir(dir)
}

fn mib(path: &Path) -> f64 {
    std::fs::metadata(path).unwrap().len() as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let mode = RunMode::from_args();
    if mode.list {
        return;
    }
    let n = if mode.dry {
        50
    } else if mode.quick {
        2_000
    } else {
        10_000
    };
    let stripped = app(Variant::Stripped, "");
    let debug = debug_file();
    let body = report_of(&stripped, "segv");
    let build_id = build_id_of(&body, &stripped);
    let tmp = tempfile::tempdir().unwrap();

    // The baseline: the store's own work for the same pages, the named body made before the clock.
    let named_body = {
        let files = files_with(&tmp.path().join("files-0"), &build_id, &debug);
        let found = Symbols::new(files).at_ingest(Kind::Crash, &body).await;
        found.body.expect("the debug file names the report")
    };
    let derived = fingerprint::digest(Kind::Crash, &named_body);
    let base_store = filled(&tmp.path().join("base"), &body, &build_id, n).await;
    let started = Instant::now();
    let mut base_moved = 0;
    loop {
        let page = base_store.waiting_for(build_id.clone(), PAGE).await.unwrap();
        if page.is_empty() {
            break;
        }
        let done = page
            .into_iter()
            .map(|waiting| Resymbolized {
                waiting,
                changed: Some(Changed {
                    body: named_body.clone(),
                    fingerprint: derived.fingerprint.clone(),
                    summary: derived.summary.clone(),
                }),
                waits: Vec::new(),
            })
            .collect();
        base_moved += base_store.resymbolized(build_id.clone(), done).await.unwrap().moved;
    }
    let base = started.elapsed();

    // Measured: symbolization and the store, cold symbolizer.
    let store = filled(&tmp.path().join("store"), &body, &build_id, n).await;
    let symbols = Symbols::new(files_with(&tmp.path().join("files"), &build_id, &debug));
    let started = Instant::now();
    let done = resymbolize(&store, &symbols, &build_id).await.unwrap();
    let took = started.elapsed();
    assert_eq!((done.rewritten, done.moved, base_moved), (n as u64, n as u64, n as u64), "{done:?}");

    println!();
    println!(
        "resymbolize {n} stored reports of one build after its debug file ({:.1} MiB) arrived:",
        mib(&debug)
    );
    println!(
        "  store's own limit (same pages, body named before): {:>8.3} s  {:>8.0} reports/s",
        base.as_secs_f64(),
        n as f64 / base.as_secs_f64()
    );
    println!(
        "  resymbolize (symbolize + store, cold):             {:>8.3} s  {:>8.0} reports/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    println!(
        "  ratio resymbolize/store: {:.2}   symbolization per report: {:.0} µs",
        n as f64 / took.as_secs_f64() / (n as f64 / base.as_secs_f64()),
        (took.saturating_sub(base)).as_secs_f64() * 1e6 / n as f64
    );
    let scaled = took.as_secs_f64() * 10_000.0 / n as f64;
    println!(
        "  target: 10,000 reports in under 10 s: {:.2} s for 10,000 at this rate ({})",
        scaled,
        if scaled < 10.0 { "MET" } else { "MISSED" }
    );

    if mode.dry {
        println!("(dry run: the large debug file is not built)");
        return;
    }
    let (big, big_debug) = dev_stripped_and_debug_file();
    let big_body = report_of(&big, "segv");
    let big_id = build_id_of(&big_body, &big);
    let symbols = Symbols::new(files_with(&tmp.path().join("big-files"), &big_id, &big_debug));
    let time = |symbols: Symbols, body: String| async move {
        let started = Instant::now();
        let found = symbols.at_ingest(Kind::Crash, &body).await;
        assert!(found.body.is_some(), "the large debug file names the report");
        started.elapsed()
    };
    let cold = time(symbols.clone(), big_body.clone()).await;
    let mut warm = Vec::new();
    for _ in 0..mode.rounds(9) {
        warm.push(time(symbols.clone(), big_body.clone()).await);
    }
    warm.sort();
    let warm = warm[warm.len() / 2];
    println!();
    println!("a large debug file ({:.1} MiB, the crash app's dev build):", mib(&big_debug));
    println!("  first report (loads the file): {:>9.1} ms", ms(cold));
    println!("  next reports (cached), median: {:>9.3} ms", ms(warm));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
