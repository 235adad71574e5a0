//! Helpers shared by the spool's integration tests: re-executing the test binary as a child process,
//! reading the child's marked output lines, and bounded waits.
//!
//! A child is the test binary itself, run with `--exact <child test> --nocapture --test-threads=1` and
//! `ROLE_ENV` set; the child "test" returns at once when `ROLE_ENV` is absent, so that it passes in
//! the ordinary run. Children print their reports as `@<TAG> <text>` and the parent looks for the `@`
//! anywhere in a line (the test harness may print its own words before it on the same line).
#![allow(dead_code)] // each test file uses a different part of this module

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use lastword_spool::{EntryState, SpoolView};

/// Selects the role of a child process; absent in the parent.
pub const ROLE_ENV: &str = "LASTWORD_SPOOL_TEST_ROLE";
/// The spool directory a child works on.
pub const DIR_ENV: &str = "LASTWORD_SPOOL_TEST_DIR";
/// How long a parent waits for any one thing a child should do quickly.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The role and spool directory of this process, when it was started as a child for `role`.
pub fn child_role(role: &str) -> Option<PathBuf> {
    let my_role = std::env::var(ROLE_ENV).ok()?;
    if my_role != role {
        return None;
    }
    Some(PathBuf::from(std::env::var_os(DIR_ENV).expect("a child is given its spool directory")))
}

/// A command that runs the test `child_test` of this test binary as a child with `role` on `dir`.
pub fn child_command(child_test: &str, role: &str, dir: &Path) -> Command {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", child_test, "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// Prints `@<tag> <text>` on stdout as one `write` (so a kill cannot cut a line) and flushes it.
pub fn report(tag: &str, text: &str) {
    let line = format!("@{tag} {text}\n");
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes()).expect("stdout of a child is a pipe the parent reads");
    out.flush().expect("stdout of a child is a pipe the parent reads");
}

/// A marked line of a child: its tag and the text after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub tag: String,
    pub text: String,
}

/// The mark in one line of output, if it has one.
pub fn parse_mark(line: &str) -> Option<Mark> {
    let at = line.find('@')?;
    let rest = &line[at + 1..];
    let (tag, text) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Mark { tag: tag.to_owned(), text: text.trim_end().to_owned() })
}

/// Reads a child's stdout on a thread: every mark is sent to `marks` as it arrives, and the whole
/// list is returned by the thread at the end of the output (when the child is gone).
pub struct Marks {
    pub live: Receiver<Mark>,
    thread: Option<JoinHandle<Vec<Mark>>>,
}

impl Marks {
    pub fn read(stdout: ChildStdout) -> Self {
        let (tx, live) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut all = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(mark) = parse_mark(&line) {
                    let _ = tx.send(mark.clone());
                    all.push(mark);
                }
            }
            all
        });
        Self { live, thread: Some(thread) }
    }

    /// Waits (at most `PATIENCE`) for the next mark with `tag`, skipping others.
    pub fn wait_for(&self, tag: &str) -> Mark {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.live.recv_timeout(left) {
                Ok(mark) if mark.tag == tag => return mark,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("no @{tag} from the child within {PATIENCE:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("the child ended before printing @{tag}"),
            }
        }
    }

    /// Every mark the child printed; call after the child has exited.
    pub fn all(mut self) -> Vec<Mark> {
        self.thread.take().expect("all() is called once").join().expect("the reader thread does not panic")
    }
}

/// Starts `cmd` and returns the child with its marks reader.
pub fn spawn(mut cmd: Command) -> (Child, Marks) {
    let mut child = cmd.spawn().expect("start a child test process");
    let stdout = child.stdout.take().expect("stdout is piped");
    (child, Marks::read(stdout))
}

/// Waits for `child` to exit, at most `PATIENCE`; kills it (and fails) if it does not.
pub fn wait_bounded(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} did not exit within {PATIENCE:?}", child.id());
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Reads a numeric env var for the long runs, with a default for CI.
pub fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Every file in the spool, per state.
pub fn by_state(view: &SpoolView) -> BTreeMap<EntryState, Vec<lastword_spool::Listed>> {
    let mut out: BTreeMap<EntryState, Vec<lastword_spool::Listed>> = BTreeMap::new();
    for item in view.list().expect("list the spool") {
        out.entry(item.state).or_default().push(item);
    }
    out
}

/// Names of every file (dot files included) directly in `dir`; a missing directory is empty.
pub fn all_names(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(items) => {
            let mut names: Vec<String> = items
                .map(|i| i.expect("read a directory entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read directory {}: {e}", dir.display()),
    }
}
