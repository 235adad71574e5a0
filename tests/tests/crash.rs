//! Every crash kind, each in its own child process (`lastword-crash-app`): the exit status is the
//! same as without lastword, the report is in the spool (or delivered), and its frames name the
//! function that crashed.

#![allow(clippy::unwrap_used)]

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Output};
use std::time::Duration;

use lastword::report::CrashReport;
use lastword::spool::{Kind, Spool, SpoolOptions, SpoolView};
use lastword_tests::crash_runs::{command, crash_reports, describe};
use lastword_tests::scripted::{Behaviour, TOKEN, TestCollector};

const APP: &str = env!("CARGO_BIN_EXE_lastword-crash-app");

fn run(case: &str, spool: &Path, lastword: bool, url: Option<&str>) -> Output {
    run_with(case, spool, lastword, url, &[])
}

fn run_with(case: &str, spool: &Path, lastword: bool, url: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut c = command(APP, case, spool, lastword);
    c.envs(env.iter().copied()).env("LASTWORD_TOKEN", TOKEN);
    if let Some(url) = url {
        c.env("LASTWORD_URL", url);
    }
    c.output().unwrap()
}

/// Runs `case` with and without lastword; asserts the same exit status; returns the crash reports
/// found in the spool, symbolized as the uploader would.
fn crash(case: &str) -> (ExitStatus, Vec<CrashReport>, Output) {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let without = run(case, &dir.path().join("unused"), false, None);
    let with = run(case, &spool, true, None);
    assert_eq!(
        describe(with.status),
        describe(without.status),
        "{case}: exit status differs with lastword; stderr: {}",
        String::from_utf8_lossy(&with.stderr)
    );
    (with.status, reports(&spool), with)
}

fn reports(spool: &Path) -> Vec<CrashReport> {
    crash_reports(spool).into_iter().map(|c| c.report).collect()
}

fn names(report: &CrashReport) -> Vec<String> {
    report.frames.iter().filter_map(|f| f.function.clone()).collect()
}

fn assert_names(report: &CrashReport, function: &str) {
    let names = names(report);
    assert!(
        names.iter().take(12).any(|n| n.ends_with(function)),
        "frames should name {function}: {names:#?}\n{:?}",
        report.symbolization_error
    );
}

#[test]
fn panic_in_main_is_reported_with_message_location_context_and_breadcrumbs() {
    let (status, reports, out) = crash("panic-main");
    assert_eq!(status.code(), Some(101));
    assert!(String::from_utf8_lossy(&out.stderr).contains("boom in main"), "the default hook still prints");
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.kind, "panic");
    assert_eq!(r.message, "boom in main");
    assert!(r.location.as_ref().unwrap().file.ends_with("crash_app.rs"));
    assert_eq!(r.thread.name.as_deref(), Some("main"));
    assert_eq!(r.context.app, "crash-app");
    assert_eq!(r.context.release.as_deref(), Some("1.0.0"));
    assert!(r.context.pid > 0);
    assert_names(r, "crash_app::main");
    let crumbs: Vec<_> = r.breadcrumbs.iter().map(|b| b.message.as_str()).collect();
    assert_eq!(crumbs, ["starting the case", "about to run panic-main"]);
    assert_eq!(r.fingerprint.len(), 16);
}

#[test]
fn panic_in_a_thread_names_the_thread() {
    let (status, reports, _) = crash("panic-thread");
    assert_eq!(status.code(), Some(0));
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].thread.name.as_deref(), Some("worker"));
    assert_eq!(reports[0].message, "boom in a thread");
}

#[test]
fn panic_in_a_tokio_task_is_reported() {
    let (status, reports, _) = crash("panic-tokio");
    assert_eq!(status.code(), Some(0));
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].message, "boom in a task");
}

#[test]
fn double_panic_keeps_the_first_report_and_aborts_as_before() {
    let (status, reports, _) = crash("double-panic");
    assert_eq!(status.signal(), Some(libc::SIGABRT));
    let messages: Vec<_> = reports.iter().map(|r| r.message.as_str()).collect();
    assert!(messages.contains(&"first panic"), "{messages:?}");
    assert!(!reports.iter().any(|r| r.kind == "signal"), "the abort that follows is not a second crash");
}

#[test]
fn null_dereference_is_a_sigsegv_report_naming_the_function() {
    let (status, reports, _) = crash("segv");
    assert_eq!(status.signal(), Some(libc::SIGSEGV));
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.kind, "signal");
    let signal = r.signal.as_ref().unwrap();
    assert_eq!(signal.name, "SIGSEGV");
    assert_eq!(signal.address.as_deref(), Some("0x0"));
    assert_eq!(r.context.app, "crash-app");
    assert!(r.registers.iter().any(|(n, _)| n == "rip" || n == "x0"));
    assert_names(r, "null_deref");
    // The last log records, read by the handler from the lock-free ring.
    let crumbs: Vec<_> = r.breadcrumbs.iter().map(|b| (b.level.as_str(), b.message.as_str())).collect();
    assert_eq!(crumbs, [("INFO", "starting the case"), ("WARN", "about to run segv")]);
    assert!(r.breadcrumbs.iter().all(|b| b.target == "crash_app" && b.ts_ms > 0));
}

#[test]
fn abort_is_a_sigabrt_report_naming_the_caller() {
    let (status, reports, _) = crash("abort");
    assert_eq!(status.signal(), Some(libc::SIGABRT));
    assert_eq!(reports.len(), 1);
    assert_names(&reports[0], "call_abort");
}

#[test]
fn a_panic_out_of_an_extern_c_function_is_one_report() {
    let (status, reports, _) = crash("panic-extern-c");
    assert_eq!(status.signal(), Some(libc::SIGABRT));
    let messages: Vec<_> = reports.iter().map(|r| (r.kind.as_str(), r.message.as_str())).collect();
    // Not std's "panic in a function that cannot unwind" that follows it, nor the abort after that.
    assert_eq!(messages, [("panic", "boom in a callback")]);
}

#[test]
fn an_abort_after_a_caught_panic_is_a_crash_of_its_own() {
    let (status, reports, _) = crash("panic-caught-then-abort");
    assert_eq!(status.signal(), Some(libc::SIGABRT));
    assert_eq!(reports.len(), 2, "the panic and the abort: {reports:#?}");
    let panic = reports.iter().find(|r| r.kind == "panic").expect("the caught panic's report");
    assert_eq!(panic.message, "caught and survived");
    let abort = reports.iter().find(|r| r.kind == "signal").expect("the abort's report");
    assert_eq!(abort.signal.as_ref().unwrap().name, "SIGABRT");
    assert_names(abort, "call_abort");
}

#[test]
fn illegal_instruction_is_a_sigill_report() {
    let (status, reports, _) = crash("ill");
    assert_eq!(status.signal(), Some(libc::SIGILL));
    assert_eq!(reports.len(), 1);
    assert_names(&reports[0], "illegal_instruction");
}

#[test]
fn division_by_zero_is_a_sigfpe_report() {
    let (status, reports, _) = crash("fpe");
    assert_eq!(status.signal(), Some(libc::SIGFPE));
    assert_eq!(reports.len(), 1);
    assert_names(&reports[0], "divide_by_zero");
}

#[test]
fn touching_a_mapping_past_its_file_is_a_sigbus_report() {
    let (status, reports, _) = crash("bus");
    assert_eq!(status.signal(), Some(libc::SIGBUS));
    assert_eq!(reports.len(), 1);
    assert_names(&reports[0], "bus_error");
}

#[test]
fn stack_overflow_is_reported_and_dies_as_before() {
    let (status, reports, out) = crash("overflow");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "Rust's own overflow handler still aborts");
    assert!(String::from_utf8_lossy(&out.stderr).contains("overflowed its stack"));
    assert_eq!(reports.len(), 1, "one report, not one per signal");
    assert_eq!(reports[0].signal.as_ref().unwrap().name, "SIGSEGV");
    assert_names(&reports[0], "recurse");
}

#[test]
fn a_panic_with_an_unwritable_spool_does_not_hang_and_still_prints() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let out = run("unwritable-spool-panic", &spool, true, None);
    assert_eq!(out.status.code(), Some(101));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("boom with no spool"), "{err}");
    assert!(err.contains("lastword: could not store the crash report"), "{err}");
}

#[test]
fn logs_at_or_above_the_level_reach_the_spool_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let out = run("logs", &spool, true, None);
    assert!(out.status.success());
    let view = SpoolView::open(&spool).unwrap();
    let mut messages = Vec::new();
    for item in view.list().unwrap() {
        assert_eq!(item.kind, Some(Kind::Log));
        let batch: lastword::report::LogBatch =
            serde_json::from_slice(&view.read(item.id.unwrap()).unwrap().body).unwrap();
        messages.extend(batch.records.into_iter().map(|r| r.message));
    }
    let errors: Vec<_> = (0..50).map(|i| format!("error {i}")).collect();
    assert_eq!(messages[0], "about to run logs");
    assert_eq!(messages[1..], errors[..], "Warn and above, in order; Info and Debug only as breadcrumbs");
}

#[test]
fn a_crash_while_the_collector_is_down_is_delivered_by_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("ws://{down}/ingest");
    let out = run("segv", &spool, true, Some(&url));
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV));
    assert_eq!(reports(&spool).len(), 1, "the crash waits in the spool");
    let collector = TestCollector::start_on(down, Behaviour::Accept);
    let out = run("ok", &spool, true, Some(&url));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    collector.wait_for(Duration::from_secs(10), "the earlier crash", |r| !r.stored.is_empty());
    let spool = Spool::open(&spool, SpoolOptions::default()).unwrap();
    assert!(
        spool.view().list().unwrap().iter().all(|e| e.kind != Some(Kind::Crash)),
        "delivered and deleted"
    );
}

#[test]
fn a_panic_reaches_a_live_collector_from_the_hook_even_when_the_process_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let collector = TestCollector::start(Behaviour::Accept);
    // The app panics in a thread, then calls process::exit: no destructor (no guard drop) runs, so
    // only the panic hook's bounded wait can have delivered the report.
    let out = run("panic-then-exit", &spool, true, Some(&collector.url()));
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(reports(&spool).is_empty(), "acknowledged by the collector, so deleted from the spool");
    assert!(!collector.stored_ids().is_empty());
}

#[test]
fn a_crash_loop_stores_the_same_crash_at_most_the_limit_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    for _ in 0..4 {
        let out = run_with("panic-main", &spool, true, None, &[("CRASH_APP_LOOP_LIMIT", "2")]);
        assert_eq!(out.status.code(), Some(101));
    }
    assert_eq!(reports(&spool).len(), 2, "the third and fourth start of the loop are not stored");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(spool.join("client/crashloop.json")).unwrap()).unwrap();
    let counts = state["fingerprints"].as_object().unwrap().values().next().unwrap();
    assert_eq!(counts["suppressed"], 2, "and they are counted, to travel with the next one: {state}");
    let total = std::fs::read_to_string(spool.join("counters/crash_loop_suppressed")).unwrap();
    assert_eq!(total, "2\n", "and in the spool's loss counter");
}

#[test]
fn before_send_scrubs_or_drops_a_report_before_it_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let scrub = [("CRASH_APP_SCRUB", "1")];
    assert_eq!(run_with("panic-main", &spool, true, None, &scrub).status.code(), Some(101));
    assert_eq!(run_with("panic-drop-me", &spool, true, None, &scrub).status.code(), Some(101));
    let reports = reports(&spool);
    assert_eq!(reports.len(), 1, "the dropped one is not stored");
    assert_eq!(reports[0].message, "[scrubbed] in main");
}
