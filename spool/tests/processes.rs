//! Several processes on one spool: concurrent claimers each get every entry exactly once, and the
//! claims of a process killed with SIGKILL come back to ready/ at the next scan, while the claims of a
//! live (blocked) process are left alone. No timeout is involved anywhere.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Stdio;

use lastword_spool::{EntryId, EntryState, Kind, Recovered, Spool, SpoolOptions};

use common::{Mark, by_state, child_command, child_role, report, spawn, wait_bounded};

const CHILD_TEST: &str = "child_process_plays_the_role_its_parent_gave_it";
const CLAIMS_ENV: &str = "LASTWORD_SPOOL_TEST_CLAIMS";

fn open(dir: &Path) -> Spool {
    Spool::open(dir, SpoolOptions::default()).expect("open the spool")
}

/// Reads one line from stdin (or waits for its end).
fn wait_for_stdin() {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

/// The entry point of every child of this file; passes at once in an ordinary test run.
#[test]
fn child_process_plays_the_role_its_parent_gave_it() {
    if let Some(dir) = child_role("claimer") {
        // Open, say so, wait for the parent's go (so that all claimers start together), drain.
        let spool = open(&dir);
        report("READY", spool.session_id());
        wait_for_stdin();
        let mut acked = 0u64;
        while let Some(claim) = spool.claim().expect("claim") {
            let id = claim.id();
            claim.ack().expect("ack");
            report("ACKED", &id.to_string());
            acked += 1;
        }
        report("DONE", &acked.to_string());
    } else if let Some(dir) = child_role("holder") {
        // Claim some entries and hold them until killed.
        let spool = open(&dir);
        let n: usize =
            std::env::var(CLAIMS_ENV).ok().and_then(|v| v.parse().ok()).expect("how many to claim");
        let mut held = Vec::new();
        for _ in 0..n {
            let claim = spool.claim().expect("claim").expect("an entry to claim");
            report("HELD", &claim.id().to_string());
            held.push(claim);
        }
        report("BLOCKED", spool.session_id());
        wait_for_stdin();
        drop(held);
    }
}

fn ids(marks: &[Mark], tag: &str) -> Vec<EntryId> {
    marks.iter().filter(|m| m.tag == tag).map(|m| m.text.parse().expect("an id")).collect()
}

#[test]
fn concurrent_claimer_processes_ack_every_entry_exactly_once() {
    const ENTRIES: usize = 2000;
    const CHILDREN: usize = 4;
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut written = BTreeSet::new();
    {
        let spool = open(dir.path());
        for n in 0..ENTRIES {
            let kind = [Kind::Crash, Kind::Event, Kind::Log][n % 3];
            written.insert(spool.write(kind, format!("entry {n}").as_bytes()).expect("write"));
        }
    }
    let mut children = Vec::new();
    for _ in 0..CHILDREN {
        let mut cmd = child_command(CHILD_TEST, "claimer", dir.path());
        cmd.stdin(Stdio::piped());
        children.push(spawn(cmd));
    }
    for (_, marks) in &children {
        marks.wait_for("READY");
    }
    for (child, _) in &mut children {
        child.stdin.take().expect("stdin is piped").write_all(b"go\n").expect("tell the child to go");
    }
    let mut acks: BTreeMap<EntryId, usize> = BTreeMap::new();
    let mut busy_children = 0;
    for (mut child, marks) in children {
        let status = wait_bounded(&mut child);
        assert!(status.success(), "a claimer failed: {status}");
        let marks = marks.all();
        let acked = ids(&marks, "ACKED");
        let done: Vec<_> = marks.iter().filter(|m| m.tag == "DONE").collect();
        assert_eq!(done.len(), 1, "the claimer finished its drain");
        assert_eq!(done[0].text, acked.len().to_string());
        if !acked.is_empty() {
            busy_children += 1;
        }
        for id in acked {
            *acks.entry(id).or_default() += 1;
        }
    }
    let twice: Vec<_> = acks.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "entries acked more than once: {twice:?}");
    assert_eq!(acks.keys().copied().collect::<BTreeSet<_>>(), written, "every entry is acked");
    assert!(busy_children >= 2, "the claimers ran at the same time ({busy_children} got entries)");
    let view = lastword_spool::SpoolView::open(dir.path()).expect("view");
    assert_eq!(view.list().expect("list"), Vec::new(), "the spool is empty");
}

/// Writes `entries` entries and starts a child that claims `claims` of them and blocks; returns the
/// child, its held ids and its session id.
fn start_holder(
    dir: &Path,
    entries: usize,
    claims: usize,
) -> (std::process::Child, common::Marks, Vec<EntryId>, String, Vec<EntryId>) {
    let spool = open(dir);
    let written: Vec<EntryId> =
        (0..entries).map(|n| spool.write(Kind::Event, &[n as u8; 64]).expect("write")).collect();
    drop(spool);
    let mut cmd = child_command(CHILD_TEST, "holder", dir);
    cmd.stdin(Stdio::piped()).env(CLAIMS_ENV, claims.to_string());
    let (child, marks) = spawn(cmd);
    let mut held = Vec::new();
    for _ in 0..claims {
        held.push(marks.wait_for("HELD").text.parse().expect("an id"));
    }
    let sid = marks.wait_for("BLOCKED").text;
    (child, marks, held, sid, written)
}

/// The ids per state, and the sessions that hold claimed ones.
fn states(spool: &Spool) -> (BTreeSet<EntryId>, BTreeSet<EntryId>, BTreeSet<String>) {
    let listed = by_state(&spool.view());
    let ids = |state| -> BTreeSet<EntryId> {
        listed.get(&state).into_iter().flatten().filter_map(|i| i.id).collect()
    };
    let holders = listed.get(&EntryState::Claimed).into_iter().flatten().filter_map(|i| i.session.clone());
    (ids(EntryState::Ready), ids(EntryState::Claimed), holders.collect())
}

#[test]
fn rescan_leaves_a_live_process_claims_and_takes_them_back_once_it_is_killed() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (mut child, _marks, held, sid, written) = start_holder(dir.path(), 5, 3);
    let held: BTreeSet<EntryId> = held.into_iter().collect();
    let free: BTreeSet<EntryId> = written.iter().copied().filter(|id| !held.contains(id)).collect();

    let spool = open(dir.path());
    spool.rescan().expect("rescan");
    assert_eq!(spool.recover().expect("recover"), Recovered::default(), "a live session is not dead");
    let (ready, claimed, holders) = states(&spool);
    assert_eq!((&ready, &claimed), (&free, &held), "the live child keeps its claims");
    assert_eq!(holders, BTreeSet::from([sid.clone()]));
    // Claiming takes only the free entries, then finds nothing (a claim rescans when it runs dry).
    let mine: Vec<_> =
        (0..free.len()).map(|_| spool.claim().expect("claim").expect("a free entry")).collect();
    assert_eq!(mine.iter().map(|c| c.id()).collect::<BTreeSet<_>>(), free);
    assert!(spool.claim().expect("claim").is_none(), "a live process's claims are not taken");
    drop(mine);

    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    spool.rescan().expect("rescan");
    let (ready, claimed, _) = states(&spool);
    assert_eq!(ready, written.iter().copied().collect(), "the dead child's claims are back in ready/");
    assert!(claimed.is_empty());
    assert!(!dir.path().join("claimed").join(&sid).exists(), "the dead session's directory is gone");
    assert!(!dir.path().join("sessions").join(format!("{sid}.lock")).exists(), "and its lock file");
    let mut delivered = BTreeSet::new();
    while let Some(claim) = spool.claim().expect("claim") {
        delivered.insert(claim.id());
        claim.ack().expect("ack");
    }
    assert_eq!(delivered, written.into_iter().collect());
}

#[test]
fn open_after_a_process_is_killed_gives_its_claims_back() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (mut child, _marks, held, sid, written) = start_holder(dir.path(), 4, 4);
    assert_eq!(held, written, "the child claims in order");
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    let before = by_state(&lastword_spool::SpoolView::open(dir.path()).expect("view"));
    assert_eq!(before[&EntryState::Claimed].len(), 4, "a view changes nothing: still claimed");

    let spool = open(dir.path());
    let (ready, claimed, _) = states(&spool);
    assert_eq!(ready, written.iter().copied().collect(), "open recovered the dead child's claims");
    assert!(claimed.is_empty());
    assert!(!dir.path().join("claimed").join(&sid).exists());
    for id in written {
        let claim = spool.claim().expect("claim").expect("an entry");
        assert_eq!(claim.id(), id, "recovered entries keep their order");
        claim.ack().expect("ack");
    }
}
