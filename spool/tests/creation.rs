//! Several creators of one new spool at the same moment: threads with handles of their own, and
//! processes. Every one of them opens it, whoever was first, and the spool works for all.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use lastword_spool::fsio::{Op, faults};
use lastword_spool::{Kind, Spool, SpoolError, SpoolOptions, VERSION_TEXT};

use common::{child_command, child_role, env_count, wait_bounded};

const CHILD_TEST: &str = "child_process_plays_the_role_its_parent_gave_it";
const EIO: i32 = 5;
/// Creators per round (processes or threads).
const CREATORS: u64 = 4;
/// The spread of the creators' start times in a round. On a tmpfs a creator's whole open takes tens of
/// microseconds, so that over the rounds every step of one falls between two steps of another.
const STAGGER_MICROS: u64 = 200;

/// A fresh directory for the rounds: on /dev/shm (a tmpfs, where opening costs no disk flush, so that
/// many rounds run in little time) when the machine has it, else in the temporary directory.
fn base_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("temporary directory")
}

/// The spool a round works on: a path that does not exist yet, two levels below `base`.
fn round_path(base: &Path, round: u64) -> std::path::PathBuf {
    base.join(format!("round-{round}")).join("spool")
}

/// A short, different wait for each round and creator, so that over the rounds one creator's steps
/// fall between every pair of the other's.
fn stagger(round: u64, creator: u64) {
    let micros = (round * 7919 + creator * 104_729) % STAGGER_MICROS;
    std::thread::sleep(Duration::from_micros(micros));
}

/// The entry point of every child of this file; passes at once in an ordinary test run.
#[test]
fn child_process_plays_the_role_its_parent_gave_it() {
    let Some(base) = child_role("creator") else { return };
    let me: u64 = std::env::var("CREATOR").ok().and_then(|v| v.parse().ok()).expect("CREATOR");
    // One line on stdin per round: its number. Open that round's spool, say how it went.
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let Ok(round) = line.trim().parse::<u64>() else { break };
        stagger(round, me);
        let answer = match Spool::open(round_path(&base, round), SpoolOptions::default()) {
            Ok(spool) => match spool.write(Kind::Log, b"{}") {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("write failed: {e}"),
            },
            Err(e) => format!("open failed: {e}"),
        };
        writeln!(out, "@{round} {answer}").expect("stdout is the parent's pipe");
        out.flush().expect("stdout is the parent's pipe");
    }
}

#[test]
fn processes_creating_one_spool_at_the_same_moment_both_open_it() {
    let rounds = env_count("LASTWORD_SPOOL_CREATION_ROUNDS", 3000);
    let base = base_dir();
    let mut children = Vec::new();
    for creator in 0..CREATORS {
        let mut cmd = child_command(CHILD_TEST, "creator", base.path());
        cmd.env("CREATOR", creator.to_string()).stdin(Stdio::piped());
        let mut child = cmd.spawn().expect("start a creator");
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        children.push((child, stdin, stdout.lines()));
    }
    let mut failures = Vec::new();
    for round in 0..rounds {
        for (_, stdin, _) in &mut children {
            writeln!(stdin, "{round}").expect("the creator reads its rounds");
            stdin.flush().expect("the creator reads its rounds");
        }
        for (_, _, lines) in &mut children {
            let answer = loop {
                let line = lines.next().expect("the creator answers every round").expect("read");
                if let Some(at) = line.find('@') {
                    break line[at + 1..].to_owned();
                }
            };
            let (got, text) = answer.split_once(' ').expect("@<round> <answer>");
            assert_eq!(got, round.to_string());
            if text != "ok" {
                failures.push(format!("round {round}: {text}"));
            }
        }
        let version = std::fs::read_to_string(round_path(base.path(), round).join("VERSION"));
        assert_eq!(version.ok().as_deref(), Some(VERSION_TEXT), "round {round}");
    }
    for (mut child, stdin, _) in children {
        drop(stdin);
        assert!(wait_bounded(&mut child).success());
    }
    assert!(failures.is_empty(), "{} of {rounds} rounds failed: {failures:#?}", failures.len());
}

#[test]
fn threads_with_handles_of_their_own_creating_one_spool_all_open_it() {
    let rounds = env_count("LASTWORD_SPOOL_CREATION_ROUNDS", 3000);
    let base = base_dir();
    let mut failures = Vec::new();
    for round in 0..rounds {
        let path = round_path(base.path(), round);
        let barrier = Arc::new(Barrier::new(CREATORS as usize));
        let creators: Vec<_> = (0..CREATORS)
            .map(|creator| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    stagger(round, creator);
                    Spool::open(&path, SpoolOptions::default()).map(|spool| spool.write(Kind::Log, b"{}"))
                })
            })
            .collect();
        for creator in creators {
            match creator.join().expect("a creator does not panic") {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => failures.push(format!("round {round}: write failed: {e}")),
                Err(e) => failures.push(format!("round {round}: open failed: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{} of {rounds} rounds failed: {failures:#?}", failures.len());
}

#[test]
fn every_directory_a_new_spool_makes_is_fsynced_into_its_parent() {
    // Fail the first, second, ... directory fsync of a creation in turn, and note which directory each
    // one was: together they are every directory the creation made a new entry in.
    let base = tempfile::tempdir().expect("temporary directory");
    let mut synced = Vec::new();
    for nth in 0..20u32 {
        let root = base.path().join(format!("try-{nth}")).join("spool");
        faults::fail(Op::SyncDir, nth, EIO);
        let opened = Spool::open(&root, SpoolOptions::default());
        faults::clear();
        match opened {
            Ok(_) => break,
            Err(SpoolError::Io { path, .. }) => {
                let try_dir = base.path().join(format!("try-{nth}"));
                let relative = path.strip_prefix(&try_dir).map_or_else(
                    |_| if path == base.path() { "<base>".into() } else { path.display().to_string() },
                    |p| p.display().to_string(),
                );
                synced.push(relative);
            }
            Err(e) => panic!("a failed fsync is an I/O error: {e}"),
        }
    }
    for dir in [
        "<base>",        // try-N/ made in it
        "",              // spool/ made in try-N/
        "spool/VERSION", // VERSION renamed into spool/ (the error names the file)
        "spool",         // ready/, sessions/, ... made in spool/
        "spool/writing", // writing/<sid>/
        "spool/claimed", // claimed/<sid>/
    ] {
        assert!(synced.iter().any(|s| s == dir), "no fsync for {dir:?}: {synced:?}");
    }
}

#[test]
fn a_creator_that_finds_the_spool_made_fsyncs_its_parents_all_the_same() {
    // Another creator may have made the root and the state directories an instant ago and not have
    // fsynced them yet: a creator that finds them fsyncs the root's parent and the root.
    let base = tempfile::tempdir().expect("temporary directory");
    let root = base.path().join("spool");
    drop(Spool::open(&root, SpoolOptions::default()).expect("create"));
    let mut synced = Vec::new();
    for nth in 0..2u32 {
        faults::fail(Op::SyncDir, nth, EIO);
        let opened = Spool::open(&root, SpoolOptions::default());
        faults::clear();
        match opened {
            Err(SpoolError::Io { path, .. }) => synced.push(path),
            other => panic!("fsync {nth} of opening an existing spool: {other:?}"),
        }
    }
    assert_eq!(synced, [base.path().to_path_buf(), root.clone()], "the root's parent, then the root");
}

#[test]
fn a_settled_spool_opens_without_fsyncing_its_root_or_the_roots_parent() {
    // Made more than a minute ago (FORMAT.md, "a settled spool"): its creator fsynced it then, so an
    // application's start on it costs no directory fsync of the root or above it.
    let base = tempfile::tempdir().expect("temporary directory");
    let root = base.path().join("spool");
    drop(Spool::open(&root, SpoolOptions::default()).expect("create"));
    let version = std::fs::File::options().write(true).open(root.join("VERSION")).expect("VERSION");
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(120);
    version.set_modified(long_ago).expect("age VERSION");
    faults::fail(Op::SyncDir, 0, EIO);
    let opened = Spool::open(&root, SpoolOptions::default());
    faults::clear();
    match opened {
        Err(SpoolError::Io { path, .. }) => {
            assert!(path.starts_with(root.join("writing")), "the first fsync is a session's: {path:?}")
        }
        other => panic!("the session directory's fsync failed, and so did the open: {other:?}"),
    }
}
