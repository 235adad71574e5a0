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
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Collector, STEP, assert_store_consistent, binary, db, sidecar_drain};
use lastword_tests::builds::{Variant, app, debug_file};
use lastword_tests::postgres::TempPostgres;
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
    let (code, stderr) = sidecar_drain(spool, collector, "crash-app", "30s");
    assert_eq!(code, Some(0), "{stderr}");
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

/// The token of the collectors' upload API in these tests.
const UPLOAD_TOKEN: &str = "upload-token-e2e";

/// `lastword collect` on `store` (a directory or a URL) with its UI (which takes uploads) on a port
/// of its own; returns the collector and the UI's base URL.
fn with_uploads(store: &Path, tokens: &Path) -> (Collector, String) {
    let file = tokens.join("upload.token");
    std::fs::write(&file, format!("{UPLOAD_TOKEN}\n")).unwrap();
    let args = ["--ui", "127.0.0.1:0", "--upload-token-file", file.to_str().unwrap()];
    let collector = Collector::start(store, &args);
    let line = collector.stdout.recv_timeout(STEP).expect("the UI line");
    let ui = line.trim().strip_prefix("web UI on ").expect("the UI line").trim_end_matches('/').to_owned();
    (collector, ui)
}

/// `lastword debug-files upload` of `file` to the collector's UI at `ui`.
fn upload(ui: &str, tokens: &Path, file: &Path) {
    let out = Command::new(binary())
        .args(["debug-files", "upload", "--url", ui, "--token-file"])
        .arg(tokens.join("upload.token"))
        .arg(file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The first in-app function of the stored report `id` in the PostgreSQL database `db` of `pg`.
fn pg_top_in_app(pg: &TempPostgres, db: &str, id: &str) -> String {
    pg.psql(
        db,
        &format!(
            "SELECT coalesce((SELECT f->>'function' FROM reports r, jsonb_array_elements(r.body::jsonb->'frames') f
               WHERE r.id = '{id}' AND f->>'in_app' = 'true' LIMIT 1), '')"
        ),
    )
}

#[test]
fn a_debug_file_uploaded_to_one_collector_names_what_another_stored_on_one_postgres_database() {
    let stripped = app(Variant::Stripped, "");
    let debug = debug_file();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let pg = TempPostgres::start();
    let url = pg.create_database("symbols");
    let (a_tokens, b_tokens) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_tokens).unwrap();
    std::fs::create_dir_all(&b_tokens).unwrap();
    // Each collector has its own cache of debug files; they share the database.
    let cache = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let start = |tokens: &Path, cache_dir: String| {
        let file = tokens.join("upload.token");
        std::fs::write(&file, format!("{UPLOAD_TOKEN}\n")).unwrap();
        let args = [
            "--ui",
            "127.0.0.1:0",
            "--upload-token-file",
            file.to_str().unwrap(),
            "--debug-files-cache",
            &cache_dir,
        ];
        let collector = Collector::start(Path::new(&url), &args);
        let line = collector.stdout.recv_timeout(STEP).expect("the UI line");
        let ui =
            line.trim().strip_prefix("web UI on ").expect("the UI line").trim_end_matches('/').to_owned();
        (collector, ui)
    };
    let (a, a_ui) = start(&a_tokens, cache("cache-a"));
    let (b, _b_ui) = start(&b_tokens, cache("cache-b"));

    // B stores a raw crash, waiting for the build's debug file.
    crash(&stripped, "segv", &spool);
    drain(&spool, &b);
    let id = pg.psql("symbols", "SELECT id FROM reports WHERE kind = 'crash'");
    assert_eq!(pg_top_in_app(&pg, "symbols", &id), "", "raw frames first");
    let raw_group = pg.psql("symbols", "SELECT fingerprint FROM reports WHERE kind = 'crash'");

    // The file is uploaded to A, which names the report B stored.
    upload(&a_ui, &a_tokens, &debug);
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg_top_in_app(&pg, "symbols", &id).is_empty() {
        assert!(Instant::now() < deadline, "the report B stored is named after the upload to A");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pg_top_in_app(&pg, "symbols", &id).ends_with("null_deref"));
    let named_group = pg.psql("symbols", "SELECT fingerprint FROM reports WHERE kind = 'crash'");
    assert_ne!(named_group, raw_group);
    let groups = pg.psql("symbols", "SELECT string_agg(fingerprint || '=' || count, ',') FROM groups");
    assert_eq!(groups, format!("{named_group}=1"), "moved, counted once");

    // The same crash again, delivered to B now: B finds the file in the database, names it at ingest.
    crash(&stripped, "segv", &spool);
    drain(&spool, &b);
    let groups = pg.psql("symbols", "SELECT string_agg(fingerprint || '=' || count, ',') FROM groups");
    assert_eq!(groups, format!("{named_group}=2"), "named at ingest by the other collector");
    drop((a, b));
}

#[test]
fn a_debug_file_uploaded_while_the_collector_runs_names_the_reports_that_wait_for_it() {
    let stripped = app(Variant::Stripped, "");
    let dir = tempfile::tempdir().unwrap();
    let (store, spool) = (dir.path().join("store"), dir.path().join("spool"));
    let (collector, ui) = with_uploads(&store, dir.path());
    crash(&stripped, "segv", &spool);
    crash(&stripped, "panic-none-first", &spool);
    drain(&spool, &collector);
    let all = crashes(&store);
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|(_, _, body)| first_in_app(body).is_null()), "raw frames first: {all:#?}");
    upload(&ui, dir.path(), &debug_file());
    let all = until(&store, "the reports named after the upload", |all| {
        all.iter().all(|(_, _, body)| !first_in_app(body).is_null())
    });
    let (signal, panic) = (of_type(&all, "signal"), of_type(&all, "panic"));
    assert!(first_in_app(&signal[0].2)["function"].as_str().unwrap().ends_with("null_deref"));
    let panic_top = &panic[0].2["frames"][0];
    assert!(panic_top["function"].as_str().unwrap().ends_with("first_lookup"), "{panic_top:#}");
    assert_eq!(panic_top["line"], line_of("expect(\"the first lookup found nothing\")"), "{panic_top:#}");
    assert_store_consistent(&store);
}
