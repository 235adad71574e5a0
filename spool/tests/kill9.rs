//! The crash-consistency promise under SIGKILL: a child writes, claims and acks entries as fast as it
//! can and is killed at random moments; after every kill the parent opens the spool and checks that
//! every entry whose `write` returned (and that was not acked) is there and intact, that `ready/` holds
//! no partial entry, that the dead child's claims and writes were recovered, and that nothing but a
//! dead writer's partial write is ever quarantined.
//!
//! `LASTWORD_KILL_ROUNDS` sets the number of rounds (default 100, enough to land kills in every step of
//! a write); `LASTWORD_KILL_SEED` replays a run.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lastword_spool::{EntryId, EntryName, EntryState, Kind, Spool, SpoolOptions, SpoolView, decode};

use common::{all_names, child_command, child_role, env_count, report, spawn, wait_bounded};

const CHILD_TEST: &str = "child_process_churns_the_spool_until_killed";

/// A small xorshift generator: the test needs a little randomness and a seed to replay it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A body that says how it should look: an 8-byte seed, then a pattern of a length made from it.
fn body(seed: u64) -> Vec<u8> {
    let mut out = seed.to_le_bytes().to_vec();
    let len = (seed % 1500) as usize;
    out.extend((0..len).map(|i| ((seed >> (i % 57)) as u8) ^ (i as u8)));
    out
}

fn body_is_intact(bytes: &[u8]) -> bool {
    let Some(seed) = bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else { return false };
    bytes == body(u64::from_le_bytes(seed))
}

fn kind_of(seed: u64) -> Kind {
    [Kind::Crash, Kind::Event, Kind::Log][(seed % 3) as usize]
}

/// The child: writes, claims, acks and releases in a loop until it is killed.
#[test]
fn child_process_churns_the_spool_until_killed() {
    let Some(dir) = child_role("churn") else { return };
    let spool = Spool::open(&dir, SpoolOptions::default()).expect("open the spool");
    report("S", spool.session_id());
    let mut rng = Rng(u64::from(std::process::id()) | 1);
    for n in 0u64.. {
        let seed = rng.next();
        let id = spool.write(kind_of(seed), &body(seed)).expect("write");
        report("W", &id.to_string());
        // Ack one per write while the queue is short and two once it is longer, so that every round
        // starts with a few dozen entries written (and checked) by earlier rounds.
        let acks = if spool.queued().0 > 30 { 2 } else { 1 };
        for _ in 0..acks {
            if let Some(claim) = spool.claim().expect("claim") {
                report("A", &claim.id().to_string());
                claim.ack().expect("ack");
            }
        }
        if n % 3 == 0 {
            // Hold one for a moment and let it go again, so that kills also land on a release.
            let held = spool.claim().expect("claim");
            drop(held);
        }
    }
}

/// Opens the spool (recovering the dead child) and checks everything the test promises; returns how
/// many partial writes are in quarantine.
fn check_after_kill(
    dir: &Path,
    outstanding: &BTreeSet<EntryId>,
    ever_written: &BTreeSet<EntryId>,
    fresh: &[EntryId],
) -> usize {
    let spool = Spool::open(dir, SpoolOptions::default()).expect("open after the kill");
    let me = spool.session_id().to_owned();
    let view: SpoolView = spool.view();
    let listed = view.list().expect("list");
    let mut quarantined = 0;
    let mut ready = BTreeSet::new();
    for item in &listed {
        match item.state {
            EntryState::Ready => {
                let id = item.id.unwrap_or_else(|| panic!("a foreign file in ready/: {item:?}"));
                // Decoded here rather than with view.read(id), which lists the spool for each id.
                let bytes = fs::read(dir.join("ready").join(&item.file_name)).expect("read an entry");
                let (header, body) = decode(&bytes, EntryName::parse(&item.file_name).as_ref())
                    .unwrap_or_else(|e| panic!("a partial entry in ready/: {item:?}: {e}"));
                assert!(body_is_intact(body), "{id}: the body is not the one written");
                assert_eq!(header.kind, kind_of(u64::from_le_bytes(body[..8].try_into().expect("8 bytes"))));
                ready.insert(id);
            }
            EntryState::Quarantined => {
                let reason = item.reason.as_deref().unwrap_or_default();
                assert!(
                    reason.starts_with("partial write by a dead session"),
                    "only a dead writer's partial write may be quarantined: {item:?}"
                );
                assert!(
                    !item.id.is_some_and(|id| ever_written.contains(&id)),
                    "a committed entry was quarantined: {item:?}"
                );
                quarantined += 1;
            }
            EntryState::Claimed | EntryState::Writing => {
                panic!("left over after recovery: {item:?}")
            }
        }
    }
    let missing: Vec<_> = outstanding.difference(&ready).collect();
    assert!(missing.is_empty(), "entries written and never acked are missing: {missing:?}");
    for id in fresh {
        if outstanding.contains(id) {
            let data = view.read(*id).unwrap_or_else(|e| panic!("{id} written in this round: {e}"));
            assert!(body_is_intact(&data.body));
        }
    }
    // Only this session's directories and lock are left (dot files included, slots too).
    assert_eq!(all_names(&dir.join("claimed")), std::slice::from_ref(&me));
    assert_eq!(all_names(&dir.join("writing")), std::slice::from_ref(&me));
    assert_eq!(all_names(&dir.join("writing").join(&me)), Vec::<String>::new());
    let sessions: Vec<_> =
        all_names(&dir.join("sessions")).into_iter().filter(|n| !n.ends_with(".new")).collect();
    assert_eq!(sessions, [format!("{me}.lock")], "the dead child's lock file is gone");
    quarantined
}

#[test]
fn sigkill_at_random_moments_loses_no_written_entry_and_leaves_no_partial_one() {
    let rounds = env_count("LASTWORD_KILL_ROUNDS", 100);
    let seed = env_count(
        "LASTWORD_KILL_SEED",
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1,
    );
    eprintln!("kill -9 loop: {rounds} rounds, LASTWORD_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("temporary directory");
    Spool::open(dir.path(), SpoolOptions::default()).expect("create the spool");
    let mut outstanding = BTreeSet::new();
    let mut ever_written = BTreeSet::new();
    let (mut writes, mut acks, mut quarantined, mut checked) = (0, 0, 0, 0);
    for round in 0..rounds {
        let (mut child, marks) = spawn(child_command(CHILD_TEST, "churn", dir.path()));
        // Most kills land while the child is churning, after 0 to 2 of its writes returned (so that
        // a slow machine still gets writes in); some during its start (session creation).
        if rng.below(8) != 0 {
            marks.wait_for("S");
            for _ in 0..rng.below(3) {
                marks.wait_for("W");
            }
        }
        thread::sleep(Duration::from_micros(rng.below(4000)));
        child.kill().expect("SIGKILL the child");
        let status = wait_bounded(&mut child);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "round {round}: the child died of the kill, not of an error ({status})"
        );
        let mut fresh = Vec::new();
        for mark in marks.all() {
            let id = || mark.text.parse::<EntryId>().expect("an id");
            match mark.tag.as_str() {
                "W" => {
                    outstanding.insert(id());
                    ever_written.insert(id());
                    fresh.push(id());
                    writes += 1;
                }
                "A" => {
                    outstanding.remove(&id());
                    acks += 1;
                }
                _ => {}
            }
        }
        quarantined = check_after_kill(dir.path(), &outstanding, &ever_written, &fresh);
        checked += outstanding.len() as u64;
    }
    eprintln!(
        "kill -9 loop: {writes} writes and {acks} acks reported, {checked} written entries found \
         after a kill, {quarantined} partial writes quarantined"
    );
    assert!(writes > 0 && checked > 0, "the rounds had written entries to look for");
}
