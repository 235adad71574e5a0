//! Production binaries symbolized on the collector (issue 20): the crash app built stripped, its
//! separate debug file (`objcopy --only-keep-debug`), a SIGSEGV and a panic delivered by the real
//! sidecar (`lastword drain`) to a real `lastword collect`. Without the debug file the reports keep
//! raw frames (module, build id, offset) and wait for it; with it (it arrived while the collector was
//! down) the collector names them at its next start, moves the crash to the group its names give,
//! counted once; a crash delivered after that is named at ingest and joins the same group; and that
//! group is the one an unstripped build of the same code gets on its own machine.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers: a failure is a test failure")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Collector, TOKEN, assert_store_consistent, binary, db};
use lastword_tests::builds::{Variant, app, debug_file};
use serde_json::Value;

/// Runs `case` of `binary` on `spool` (no uploader: the sidecar delivers).
fn crash(binary: &Path, case: &str, spool: &Path) {
    let out = Command::new(binary)
        .arg(case)
        .env("LASTWORD_SPOOL", spool)
        .env_remove("LASTWORD_URL")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{case} crashes");
}

/// Delivers `spool` to `collector` with the sidecar, as a deployment would.
fn drain(spool: &Path, collector: &Collector) {
    let out = Command::new(binary())
        .args(["drain", "--deadline", "30s", "--app", "crash-app", "--url", &collector.url])
        .arg("--spool")
        .arg(spool)
        .env("LASTWORD_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The stored crash reports: (id, fingerprint, body), oldest first.
fn crashes(store: &Path) -> Vec<(String, String, Value)> {
    let conn = db(store);
    let mut stmt = conn
        .prepare("SELECT id, fingerprint, body FROM reports WHERE kind = 'crash' ORDER BY rowid")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?)))
        .unwrap()
        .map(|row| {
            let (id, fingerprint, body) = row.unwrap();
            (id, fingerprint, serde_json::from_str(&body).unwrap())
        })
        .collect()
}

fn of_type<'a>(all: &'a [(String, String, Value)], kind: &str) -> Vec<&'a (String, String, Value)> {
    all.iter().filter(|(_, _, body)| body["type"] == kind).collect()
}

/// The frames of `body` in the module `path`.
fn own_frames<'a>(body: &'a Value, path: &Path) -> Vec<&'a Value> {
    let path = path.to_str().unwrap();
    body["frames"].as_array().unwrap().iter().filter(|f| f["module"] == path).collect()
}

/// `lastword store show ID` as text.
fn show(store: &Path, id: &str) -> String {
    let out = Command::new(binary()).args(["store", "show", id, "--store"]).arg(store).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn first_in_app(body: &Value) -> &Value {
    body["frames"].as_array().unwrap().iter().find(|f| f["in_app"] == true).unwrap_or(&Value::Null)
}

/// The line of the crash app's source that holds `text`.
fn line_of(text: &str) -> u64 {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/src/bin/crash_app.rs");
    let source = std::fs::read_to_string(source).unwrap();
    let n = source.lines().position(|l| l.contains(text)).expect("the line is in the source");
    n as u64 + 1
}

/// How many reports wait for the debug file of `build_id`.
fn waits(store: &Path, build_id: &str) -> i64 {
    db(store)
        .query_row("SELECT count(*) FROM symbol_waits WHERE build_id = ?1", [build_id], |r| r.get(0))
        .unwrap()
}

/// Polls until `done` holds of the stored crashes, at most a minute.
fn until(
    store: &Path,
    what: &str,
    done: impl Fn(&[(String, String, Value)]) -> bool,
) -> Vec<(String, String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = crashes(store);
        if done(&all) {
            return all;
        }
        assert!(Instant::now() < deadline, "{what}: not in a minute: {all:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_stripped_builds_crashes_are_named_and_regrouped_on_the_collector_once_its_debug_file_is_there() {
    let stripped = app(Variant::Stripped, "");
    let debug = debug_file();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let spool = dir.path().join("spool");

    // 1. Without the debug file: raw frames, waiting for the executable's build id.
    let collector = Collector::start(&store, &[]);
    crash(&stripped, "segv", &spool);
    crash(&stripped, "panic-none-first", &spool);
    drain(&spool, &collector);
    let all = crashes(&store);
    let (signal, panic) = (of_type(&all, "signal"), of_type(&all, "panic"));
    assert_eq!((signal.len(), panic.len()), (1, 1), "{all:#?}");
    let (signal_id, raw_group, signal_body) = signal[0];
    let own = own_frames(signal_body, &stripped);
    assert!(!own.is_empty(), "the executable's frames are there: {signal_body:#}");
    assert!(own.iter().all(|f| f["function"].is_null() && f["offset"].is_string()), "{signal_body:#}");
    let build_id = own[0]["build_id"].as_str().expect("a build id").to_owned();
    assert_eq!(waits(&store, &build_id), 2, "both reports wait for the executable's debug file");
    let text = show(&store, signal_id);
    assert!(text.contains(&format!("upload the debug file of build id {build_id}")), "{text}");
    drop(collector);

    // 2. The debug file arrives (while the collector is down); at its start the collector names
    //    the waiting reports and moves the crash to its functions' group.
    let place = store.join("debug-files").join(&build_id);
    std::fs::create_dir_all(&place).unwrap();
    std::fs::copy(&debug, place.join("debuginfo")).unwrap();
    let collector = Collector::start(&store, &[]);
    let all = until(&store, "the reports named after the debug file came", |all| {
        all.iter().all(|(_, _, body)| !first_in_app(body).is_null())
    });
    let (signal, panic) = (of_type(&all, "signal"), of_type(&all, "panic"));
    let (id, named_group, body) = signal[0];
    assert_eq!(id, signal_id);
    assert!(first_in_app(body)["function"].as_str().unwrap().ends_with("null_deref"), "{body:#}");
    assert_eq!(first_in_app(body)["symbolized_by"], "collector");
    assert_ne!(named_group, raw_group, "the crash moved from its build's code group to its functions'");
    let panic_top = &panic[0].2["frames"][0];
    assert!(panic_top["function"].as_str().unwrap().ends_with("first_lookup"), "{:#}", panic[0].2);
    assert_eq!(panic_top["line"], line_of("expect(\"the first lookup found nothing\")"), "{panic_top:#}");
    assert!(panic_top["file"].as_str().unwrap().ends_with("crash_app.rs"));
    let count = |fingerprint: &str| {
        db(&store)
            .query_row(
                "SELECT coalesce(sum(count), 0) FROM groups WHERE fingerprint = ?1",
                [fingerprint],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
    };
    assert_eq!((count(raw_group), count(named_group)), (0, 1), "moved, counted once");
    assert_eq!(waits(&store, &build_id), 0, "nothing waits for a file that is there");
    let text = show(&store, signal_id);
    assert!(!text.contains(&format!("build id {build_id}")), "nothing asks for it any more: {text}");
    assert!(text.contains("named on the collector from uploaded debug files"), "{text}");
    assert!(text.contains("null_deref"), "{text}");
    assert_store_consistent(&store);

    // 3. The same crash again, delivered now: named at ingest, into the same group.
    crash(&stripped, "segv", &spool);
    drain(&spool, &collector);
    let all = crashes(&store);
    let signal = of_type(&all, "signal");
    assert_eq!(signal.len(), 2);
    assert_eq!(&signal[1].1, named_group, "named at ingest: {:#}", signal[1].2);
    assert_eq!(count(named_group), 2);
    assert_eq!(waits(&store, &build_id), 0);

    // 4. An unstripped build of the same code, symbolized on its own machine: the same group.
    let unstripped: PathBuf = app(Variant::LineTables, "");
    crash(&unstripped, "segv", &spool);
    drain(&spool, &collector);
    let all = crashes(&store);
    let signal = of_type(&all, "signal");
    assert_eq!(
        &signal[2].1, named_group,
        "the stripped build's named crash groups with the unstripped one's"
    );
    assert_eq!(count(named_group), 3);
    assert_store_consistent(&store);
}
