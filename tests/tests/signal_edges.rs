//! Fatal signals at the edges, each in a real child process (`lastword-crash-app`): stack overflows on
//! every kind of thread, fork, libraries loaded after init, breakpoints, seccomp sandboxes, other
//! runtimes' fault handlers, and a failed init. Every case runs with and without lastword: the exit
//! status must be the same.

#![allow(clippy::unwrap_used)]

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Output};

use lastword::report::CrashReport;
use lastword::spool::{EntryId, FLAG_RAW_SIGNAL, Kind, SpoolView};
use lastword::symbolize::{RawReport, parse_raw};
use lastword_tests::crash_runs::{StoredCrash, command, crash_reports, describe};

const APP: &str = env!("CARGO_BIN_EXE_lastword-crash-app");

fn run(case: &str, spool: &Path, lastword: bool, env: &[(&str, &str)]) -> Output {
    command(APP, case, spool, lastword).envs(env.iter().copied()).output().unwrap()
}

/// Runs `case` without and with lastword, asserts the same exit status, and returns the run with
/// lastword and the crash entries it left in the spool.
fn crash(case: &str, env: &[(&str, &str)]) -> (Output, Vec<StoredCrash>) {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let without = run(case, &dir.path().join("unused"), false, env);
    let with = run(case, &spool, true, env);
    assert_eq!(
        describe(with.status),
        describe(without.status),
        "{case}: exit status differs with lastword; stderr with: {}\nstderr without: {}",
        String::from_utf8_lossy(&with.stderr),
        String::from_utf8_lossy(&without.stderr)
    );
    (with, crash_reports(&spool))
}

fn names(report: &CrashReport) -> Vec<String> {
    report.frames.iter().filter_map(|f| f.function.clone()).collect()
}

fn assert_names(report: &CrashReport, function: &str) {
    let names = names(report);
    assert!(
        names.iter().take(16).any(|n| n.ends_with(function)),
        "frames should name {function}: {names:#?}\n{:?}",
        report.symbolization_error
    );
}

/// The one signal report of a run; asserts there is exactly one crash report.
fn only_signal_report<'a>(found: &'a [StoredCrash], stderr: &[u8]) -> (&'a RawReport, &'a CrashReport) {
    assert_eq!(found.len(), 1, "one crash report; stderr: {}", String::from_utf8_lossy(stderr));
    let f = &found[0];
    (f.raw.as_ref().expect("a raw signal report"), &f.report)
}

/// A stack overflow report: titled so, with the stack copied from the first readable address above
/// the guard page, and the recursing function (`recurse`, `lw_recurse`) named in several frames.
fn assert_stack_overflow(raw: &RawReport, report: &CrashReport) {
    assert_eq!(report.signal.as_ref().unwrap().name, "SIGSEGV");
    assert!(report.message.starts_with("stack overflow"), "{}", report.message);
    assert!(!report.message.contains("0x"), "no address that changes every run: {}", report.message);
    assert!(!raw.stack.is_empty(), "the stack was copied");
    assert!(raw.stack_addr >= raw.sp, "the copy starts at or above sp");
    let recursing = names(report).iter().filter(|n| n.ends_with("recurse")).count();
    assert!(recursing >= 2, "the recursing function in more than one frame: {:#?}", names(report));
}

/// Runs a case that overflows a stack; returns its exit status and its one report, checked with
/// [`assert_stack_overflow`].
fn overflow(case: &str, env: &[(&str, &str)]) -> (ExitStatus, RawReport, CrashReport) {
    let (out, found) = crash(case, env);
    let (raw, report) = only_signal_report(&found, &out.stderr);
    assert_stack_overflow(raw, report);
    (out.status, raw.clone(), report.clone())
}

#[test]
fn stack_overflow_on_the_main_thread_carries_the_stack_and_says_stack_overflow() {
    let (_, _, report) = overflow("overflow", &[]);
    assert_eq!(report.thread.name.as_deref(), Some("main"));
}

#[test]
fn stack_overflow_on_a_std_thread_is_reported() {
    let (_, _, report) = overflow("overflow-thread", &[]);
    assert_eq!(report.thread.name.as_deref(), Some("deep"));
}

#[test]
fn stack_overflow_on_a_thread_made_with_pthread_create_is_reported() {
    let (status, raw, _) = overflow("overflow-pthread", &[]);
    assert_eq!(status.signal(), Some(libc::SIGSEGV));
    assert_ne!(raw.tid, u64::from(raw.pid), "not the main thread");
}

#[test]
fn stack_overflow_on_a_thread_that_existed_before_init_is_reported() {
    let (status, _, _) = overflow("overflow-pre-init-thread", &[]);
    assert_eq!(status.signal(), Some(libc::SIGSEGV));
}

/// Threads made just before `init` that have not run yet when init looks at them (glibc starts a
/// thread with every signal blocked, and on a loaded machine it may wait a while for a CPU; the crash
/// app keeps their CPU busy with a real-time thread until init is done, at most 300 ms): 8 of them a
/// run, 4 runs. Every one of those threads has an alternate stack once it runs, and the first one's
/// stack overflow is reported. (One run at a time: several real-time threads on one CPU would run
/// into the kernel's real-time throttling.)
#[test]
fn every_thread_made_just_before_init_gets_an_alternate_stack_even_if_it_runs_late() {
    let case = "overflow-pre-init-threads";
    let without = run(case, &tempfile::tempdir().unwrap().path().join("unused"), false, &[]);
    for _ in 0..4 {
        for (out, spool) in parallel_runs(case, 1) {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(describe(out.status), describe(without.status), "{stderr}");
            assert!(!stderr.contains("no alternate signal stack"), "{stderr}");
            let raws = raw_reports(&spool);
            assert_eq!(raws.len(), 1, "one report a run: {stderr}");
            assert_eq!(raws[0].fault.as_deref(), Some("stack-overflow"), "{stderr}");
        }
    }
}

#[test]
fn a_crash_in_a_forked_child_and_a_later_one_in_the_parent_are_two_reports_with_their_own_ids() {
    let (out, found) = crash("fork-crashes", &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "child: signal 11");
    assert_eq!(found.len(), 2, "child and parent; stderr: {}", String::from_utf8_lossy(&out.stderr));
    let pids: Vec<u32> = found.iter().map(|f| f.raw.as_ref().unwrap().pid).collect();
    assert_ne!(pids[0], pids[1], "one report from each process");
    for f in &found {
        assert_eq!(
            f.report.context.pid,
            f.raw.as_ref().unwrap().pid,
            "the context names the crashed process"
        );
        assert_names(&f.report, "null_deref");
    }
    assert_ne!(found[0].id.random(), found[1].id.random(), "each process has its own id state");
}

#[test]
fn ids_made_in_a_parent_and_its_forked_child_never_collide() {
    let dir = tempfile::tempdir().unwrap();
    let out = run("fork-ids", &dir.path().join("spool"), true, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut pairs = 0;
    for line in text.lines() {
        let (parent, child) = line.split_once(' ').unwrap();
        let (parent, child) = (EntryId::parse(parent).unwrap(), EntryId::parse(child).unwrap());
        assert_ne!(parent.random(), child.random(), "parent and child drew the same id bits: {line}");
        assert!(ids.insert(parent) && ids.insert(child), "an id seen twice: {line}");
        pairs += 1;
    }
    assert_eq!(pairs, 50);
}

/// A C library, built with `gcc -shared -fPIC -g` into `dir`.
fn c_library(dir: &Path, source: &str) -> std::path::PathBuf {
    let file = dir.join("lib.c");
    std::fs::write(&file, source).unwrap();
    let library = dir.join("libcrash.so");
    let gcc = Command::new("gcc")
        .args(["-shared", "-fPIC", "-g", "-O0", "-pthread", "-o"])
        .arg(&library)
        .arg(&file)
        .output()
        .expect("gcc runs (apt-get install gcc)");
    assert!(gcc.status.success(), "gcc: {}", String::from_utf8_lossy(&gcc.stderr));
    library
}

#[test]
fn a_crash_in_a_library_loaded_after_init_is_symbolized() {
    let dir = tempfile::tempdir().unwrap();
    let library = c_library(
        dir.path(),
        "__attribute__((noinline)) void lw_crash_in_c(void) { volatile int *p = 0; *p = 42; }\n",
    );
    let (out, found) = crash("dlopen-crash", &[("CRASH_APP_DSO", library.to_str().unwrap())]);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV));
    let (raw, report) = only_signal_report(&found, &out.stderr);
    let module = raw.modules.iter().find(|m| m.path.ends_with("libcrash.so")).expect("the library's module");
    assert!(module.build_id.len() >= 16, "its build id, read from memory: {}", module.build_id);
    assert_names(report, "lw_crash_in_c");
    assert_eq!(report.frames[0].module.as_deref(), Some(module.path.as_str()));
}

#[test]
fn stack_overflow_on_a_thread_that_a_c_library_made_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let library = c_library(
        dir.path(),
        r#"#include <pthread.h>
__attribute__((noinline)) int lw_recurse(int n) { volatile char frame[256]; frame[0] = (char)n; return lw_recurse(n + 1) + frame[0]; }
static void *lw_start(void *arg) { (void)arg; lw_recurse(0); return 0; }
void lw_overflow_in_c_thread(void) { pthread_t t; pthread_create(&t, 0, lw_start, 0); pthread_join(t, 0); }
"#,
    );
    let env =
        [("CRASH_APP_DSO", library.to_str().unwrap()), ("CRASH_APP_DSO_CALL", "lw_overflow_in_c_thread")];
    let (status, _, report) = overflow("dlopen-crash", &env);
    assert_eq!(status.signal(), Some(libc::SIGSEGV));
    assert!(names(&report).iter().any(|n| n == "lw_recurse"), "the C function: {:#?}", names(&report));
}

#[test]
fn a_breakpoint_trap_is_reported_and_dies_of_sigtrap() {
    let (out, found) = crash("trap", &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGTRAP));
    let (_, report) = only_signal_report(&found, &out.stderr);
    assert_eq!(report.signal.as_ref().unwrap().name, "SIGTRAP");
    assert_names(report, "trap");
}

#[test]
fn under_seccomp_without_process_vm_readv_the_stack_is_still_read() {
    let (out, found) = crash("seccomp-no-vm-readv", &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV));
    let (raw, report) = only_signal_report(&found, &out.stderr);
    assert!(!raw.stack.is_empty(), "read another way");
    assert_names(report, "null_deref");
    assert_names(report, "crash_app::main");
}

#[test]
fn under_seccomp_without_any_memory_read_the_report_says_what_is_missing() {
    let (out, found) = crash("seccomp-no-memory-read", &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV));
    let (raw, report) = only_signal_report(&found, &out.stderr);
    assert!(raw.stack.is_empty());
    assert_eq!(report.signal.as_ref().unwrap().name, "SIGSEGV");
    assert!(report.registers.iter().any(|(n, _)| n == "rip" || n == "x0"), "the registers are there");
    assert_eq!(report.thread.name.as_deref(), Some("main"));
    assert!(report.frames[0].function.is_some(), "the program counter's frame is symbolized");
    let note = report.symbolization_error.as_deref().unwrap_or_default();
    assert!(note.contains("stack not captured") && note.contains("EPERM"), "says what is missing: {note}");
}

/// A runtime that owns faults on one page (a GC, a JIT, a wasm engine) handled three of its own
/// faults; the null dereference after them is reported once, as the crash it is.
fn assert_runtime_kept_its_faults(case: &str) {
    let (out, found) = crash(case, &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("the runtime handled 3 faults"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (_, report) = only_signal_report(&found, &out.stderr);
    assert_eq!(report.signal.as_ref().unwrap().address.as_deref(), Some("0x0"), "the null dereference");
    assert_names(report, "null_deref");
}

#[test]
fn a_runtime_fault_handler_installed_before_init_keeps_its_faults() {
    assert_runtime_kept_its_faults("runtime-before-init");
}

#[test]
fn a_runtime_fault_handler_installed_after_init_keeps_its_faults() {
    assert_runtime_kept_its_faults("runtime-after-init");
}

#[test]
fn signal_reports_name_the_main_thread_and_carry_the_uptime() {
    let (out, found) = crash("segv-after-sleep", &[]);
    let (raw, report) = only_signal_report(&found, &out.stderr);
    assert_eq!(raw.tid, u64::from(raw.pid));
    assert_eq!(report.thread.name.as_deref(), Some("main"));
    let uptime = report.context.uptime_ms;
    assert!((250..60_000).contains(&uptime), "slept 300 ms after init: {uptime}");
}

#[test]
fn an_abort_report_carries_no_fault_address() {
    let (out, found) = crash("abort", &[]);
    let (raw, report) = only_signal_report(&found, &out.stderr);
    assert_eq!(raw.addr, None);
    let signal = report.signal.as_ref().unwrap();
    assert_eq!(signal.name, "SIGABRT");
    assert_eq!(signal.address, None);
    assert!(!report.message.contains(" at "), "{}", report.message);
}

/// `init` failed (out of file descriptors) after the spool opened, in several attempts; then a
/// retried init worked: the crash is reported once, in the retried init's spool only.
fn assert_retried_init_reports(case: &str, kind: &str) {
    let (out, found) = crash(case, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("the retried init succeeded"), "{stdout}");
    let reports: Vec<_> = found.iter().map(|f| (f.report.kind.as_str(), f.report.message.as_str())).collect();
    assert_eq!(reports.len(), 1, "one report in the retried init's spool: {reports:?}\n{stdout}");
    assert_eq!(reports[0].0, kind);
}

fn attempts_left_nothing(case: &str, kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let out = run(case, &spool, true, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("failed"), "{stdout}");
    let reports = crash_reports(&spool);
    assert_eq!(reports.len(), 1, "one report, in the retried init's spool\n{stdout}");
    assert_eq!(reports[0].report.kind, kind);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("attempt-") {
            let ready = path.join("ready");
            let left: Vec<_> = std::fs::read_dir(&ready).map(|d| d.flatten().collect()).unwrap_or_default();
            assert!(left.is_empty(), "a failed init left something behind in {}: {left:?}", ready.display());
        }
    }
}

#[test]
fn a_failed_init_leaves_no_panic_hook_behind_and_a_retried_init_reports_the_panic() {
    assert_retried_init_reports("init-retry-panic", "panic");
    attempts_left_nothing("init-retry-panic", "panic");
}

#[test]
fn a_failed_init_leaves_no_signal_handler_behind_and_a_retried_init_reports_the_signal() {
    assert_retried_init_reports("init-retry-segv", "signal");
    attempts_left_nothing("init-retry-segv", "signal");
}

/// Runs `n` children of `case` with lastword at the same time, each on a spool of its own; returns
/// each one's output and spool (the directories live until the caller drops them).
fn parallel_runs(case: &str, n: usize) -> Vec<(Output, tempfile::TempDir)> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let child = command(APP, case, &dir.path().join("spool"), true)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (child, dir)
        })
        .collect();
    children.into_iter().map(|(child, dir)| (child.wait_with_output().unwrap(), dir)).collect()
}

/// The crash entries of the spool in `dir`, parsed as raw signal reports but not symbolized (fast):
/// every crash entry must be one.
fn raw_reports(dir: &tempfile::TempDir) -> Vec<RawReport> {
    let Ok(view) = SpoolView::open(dir.path().join("spool")) else { return Vec::new() };
    let mut out = Vec::new();
    for item in view.list().unwrap() {
        let Some(id) = item.id.filter(|_| item.kind == Some(Kind::Crash)) else { continue };
        let entry = view.read(id).unwrap();
        assert_ne!(entry.header.flags & FLAG_RAW_SIGNAL, 0, "a raw signal report");
        out.push(parse_raw(&entry.body).unwrap());
    }
    out
}

/// Two threads pass a barrier and both dereference null, 20 runs (4 at a time): every run dies of
/// SIGSEGV with exactly one report. (std's SIGSEGV handler, which lastword calls first, puts SIG_DFL
/// in place for a fault that is not its own; the second thread must not meet it while the first
/// one's report is being written.)
#[test]
fn two_threads_crashing_at_once_leave_exactly_one_report() {
    let case = "two-threads-segv-at-once";
    let without = run(case, &tempfile::tempdir().unwrap().path().join("unused"), false, &[]);
    assert_eq!(without.status.signal(), Some(libc::SIGSEGV));
    let mut failures = Vec::new();
    for _ in 0..5 {
        for (out, spool) in parallel_runs(case, 4) {
            let raws = raw_reports(&spool);
            if out.status.signal() != Some(libc::SIGSEGV) || raws.len() != 1 {
                failures.push(format!("{}, {} reports", describe(out.status), raws.len()));
            } else {
                assert_eq!(raws[0].signal, libc::SIGSEGV);
                assert_eq!(raws[0].addr, Some(0));
            }
        }
    }
    assert!(failures.is_empty(), "runs without exactly one report: {failures:?}");
}

/// A runtime's one-shot handler (SA_RESETHAND) installed before init fixes its own fault: no report,
/// and lastword is still there for the real crash that follows.
#[test]
fn a_one_shot_runtime_handler_keeps_its_fault_and_lastword_stays_installed() {
    let (out, found) = crash("runtime-one-shot-before-init", &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("the runtime handled 1 faults"), "{stdout}");
    let (_, report) = only_signal_report(&found, &out.stderr);
    assert_eq!(report.signal.as_ref().unwrap().address.as_deref(), Some("0x0"), "the null dereference");
    assert_names(report, "null_deref");
}

/// A handler before init that gives a fault up by putting the default back and raising the signal
/// again (with SA_NODEFER, so that it arrives at once): the fault is reported before the process dies.
#[test]
fn a_previous_handler_that_resets_and_raises_again_still_lets_the_fault_be_reported() {
    let (out, found) = crash("runtime-reraise-before-init", &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV));
    let (_, report) = only_signal_report(&found, &out.stderr);
    assert_eq!(report.signal.as_ref().unwrap().address.as_deref(), Some("0x0"), "the fault itself");
    assert_names(report, "null_deref");
}

/// A runtime's handler (C, installed before init) that leaves its own faults with `siglongjmp`:
/// afterwards a handler the application installs with `sigaction` is in place (lastword holds back
/// nothing outside its call of that handler) and takes the next fault, as without lastword.
#[test]
fn after_a_previous_handler_jumped_out_new_dispositions_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let library = c_library(
        dir.path(),
        r#"#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
static sigjmp_buf env;
static char *page;
static struct sigaction previous;
static void runtime_handler(int sig, siginfo_t *info, void *context) {
    (void)context;
    if ((char *)info->si_addr >= page && (char *)info->si_addr < page + 4096) siglongjmp(env, 1);
    sigaction(sig, &previous, 0);
}
void lw_runtime_install(void) {
    page = mmap(0, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = runtime_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous);
}
void lw_runtime_touch(void) {
    if (sigsetjmp(env, 1)) return;
    volatile char c = *page;
    (void)c;
}
static void exit_handler(int sig) { (void)sig; write(1, "the application's handler ran\n", 30); _exit(42); }
void lw_install_exit_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = exit_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, 0);
}
"#,
    );
    let (out, found) = crash("runtime-longjmp", &[("CRASH_APP_DSO", library.to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(42), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("the runtime jumped back") && stdout.contains("the application's handler ran"),
        "{stdout}"
    );
    assert!(found.is_empty(), "the application's handler took the fault");
}

/// A sent SIGSEGV that std's handler takes (it puts SIG_DFL in place and the program goes on, with
/// lastword as without): no report for it, lastword stays installed, and the null dereference after
/// it is the one report.
#[test]
fn a_sent_signal_that_a_previous_handler_survives_is_not_a_crash() {
    let (out, found) = crash("raise-segv-then-crash", &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("survived a sent SIGSEGV; SIGSEGV at SIG_DFL now: false"), "{stdout}");
    let (raw, report) = only_signal_report(&found, &out.stderr);
    assert_eq!(raw.addr, Some(0), "the null dereference, not the sent signal");
    assert_names(report, "null_deref");
}

/// A breakpoint with SIGTRAP ignored: the kernel puts the default action back for a synchronous
/// signal that is ignored, so the process dies of SIGTRAP, with lastword as without; one report.
#[test]
fn a_breakpoint_with_sigtrap_ignored_dies_of_sigtrap_and_is_reported() {
    let (out, found) = crash("trap-ignored", &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGTRAP));
    let (raw, report) = only_signal_report(&found, &out.stderr);
    assert!(raw.code > 0, "the breakpoint, a fault: code {}", raw.code);
    assert_names(report, "trap");
}

/// `raise(SIGTRAP)` with SIGTRAP ignored does nothing, with lastword as without: no report, and
/// lastword stays installed (SIGTRAP is not left at SIG_IGN): the breakpoint after it is reported.
#[test]
fn a_sent_signal_that_was_ignored_is_ignored_and_lastword_stays_installed() {
    let (out, found) = crash("raise-trap-ignored", &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGTRAP));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("survived 3 ignored SIGTRAPs; SIGTRAP ignored now: false"), "{stdout}");
    let (raw, _) = only_signal_report(&found, &out.stderr);
    assert!(raw.code > 0, "the breakpoint is the one report, not a sent SIGTRAP: code {}", raw.code);
}

/// A sent signal whose previous disposition is a handler: that handler runs (once each), no report,
/// and lastword stays in front of it; the null dereference after them is the one report.
#[test]
fn a_sent_signal_goes_to_the_application_s_handler_and_lastword_stays_installed() {
    let (out, found) = crash("raise-trap-with-handler", &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("the handler saw 3 traps; SIGTRAP goes straight to it now: false"), "{stdout}");
    let (_, report) = only_signal_report(&found, &out.stderr);
    assert_eq!(report.signal.as_ref().unwrap().name, "SIGSEGV");
}

/// `abort()` with an application's SIGABRT handler that returns: the handler runs once, the process
/// still dies of SIGABRT (abort puts the default back), and the abort is reported once.
#[test]
fn an_abort_with_an_application_handler_runs_it_once_and_is_reported() {
    let (out, found) = crash("abort-with-handler", &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("the application's handler ran").count(), 1, "{stdout}");
    let (_, report) = only_signal_report(&found, &out.stderr);
    assert_eq!(report.signal.as_ref().unwrap().name, "SIGABRT");
}

/// A seccomp filter that kills the process on `process_vm_readv` (systemd's `@system-service`
/// without `SystemCallErrorNumber=`): the crash is still a SIGSEGV, with its report and its stack.
#[test]
fn under_a_seccomp_filter_that_kills_on_process_vm_readv_the_crash_is_reported() {
    let (out, found) = crash("seccomp-kill-vm-readv", &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{}", String::from_utf8_lossy(&out.stderr));
    let (raw, report) = only_signal_report(&found, &out.stderr);
    assert!(!raw.stack.is_empty(), "read through /proc/self/mem");
    assert_names(report, "null_deref");
}

/// A runtime handler that needs a 160 KiB frame runs on lastword's alternate stack (which it did
/// not ask for): the stack is large enough, the runtime handles its fault, the later crash is
/// reported.
#[test]
fn a_runtime_handler_with_a_large_frame_fits_on_the_alternate_stack() {
    let (out, found) = crash("runtime-big-frame-handler", &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("the runtime handled 1 faults"), "{stdout}");
    let (_, report) = only_signal_report(&found, &out.stderr);
    assert_names(report, "null_deref");
}

/// A std thread that kept std's own small alternate stack (it blocks the sweep's signal) overflows
/// its stack: std's handler prints its message and aborts, as without lastword, and lastword's report
/// of the overflow, written from that small stack, is there.
#[test]
fn stack_overflow_on_a_thread_with_std_s_small_alternate_stack_is_reported() {
    let (out, found) = crash("overflow-std-thread-std-stack", &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{}", String::from_utf8_lossy(&out.stderr));
    let (raw, report) = only_signal_report(&found, &out.stderr);
    assert_stack_overflow(raw, report);
    assert_eq!(report.thread.name.as_deref(), Some("std-stack"));
}

/// A thread that existed before init cannot take the sweep's signal for seconds (it waits in the
/// kernel for a vfork child): init does not wait for it past its bound, and afterwards the real-time
/// signal has its default disposition again (a SIGRTMAX ends the process, as without lastword),
/// without the late delivery doing it.
#[test]
fn after_init_the_sweep_signal_is_back_to_its_default() {
    let (out, found) = crash("sweep-signal-stuck-thread", &[]);
    assert_eq!(out.status.signal(), Some(libc::SIGRTMAX()), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(found.is_empty());
}
