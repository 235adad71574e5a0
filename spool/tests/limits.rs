//! Limits and eviction: logs go first, then events, then crashes, oldest first; nothing more important
//! than the entry being written is evicted; claimed entries never are; every eviction is counted, and
//! the count is kept on disk.

use std::collections::BTreeSet;
use std::path::Path;

use lastword_spool::{EntryId, HEADER_LEN, Kind, Limits, Spool, SpoolError, SpoolOptions};

fn open(dir: &Path, max_entries: u64, max_bytes: u64) -> Spool {
    let options = SpoolOptions { limits: Limits { max_bytes, max_entries }, ..SpoolOptions::default() };
    Spool::open(dir, options).expect("open the spool")
}

/// The ids in ready/ and claimed/.
fn queued(spool: &Spool) -> BTreeSet<EntryId> {
    spool.view().list().expect("list").into_iter().filter_map(|i| i.id).collect()
}

fn evicted(spool: &Spool) -> u64 {
    spool.view().stats().expect("stats").evicted
}

#[test]
fn eviction_takes_logs_oldest_first_then_events_then_crashes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path(), 5, 1 << 20);
    let log1 = spool.write(Kind::Log, b"log 1").expect("write");
    let event1 = spool.write(Kind::Event, b"event 1").expect("write");
    let log2 = spool.write(Kind::Log, b"log 2").expect("write");
    let crash1 = spool.write(Kind::Crash, b"crash 1").expect("write");
    let event2 = spool.write(Kind::Event, b"event 2").expect("write");
    assert_eq!(evicted(&spool), 0, "five entries fit");
    for (n, expected_victim) in [log1, log2, event1, event2, crash1].into_iter().enumerate() {
        let before = queued(&spool);
        let new = spool.write(Kind::Crash, b"a newer crash").expect("a crash makes room");
        let after = queued(&spool);
        let gone: Vec<_> = before.difference(&after).copied().collect();
        assert_eq!(gone, [expected_victim], "eviction number {n}");
        assert!(after.contains(&new));
        assert_eq!(after.len(), 5);
        assert_eq!(evicted(&spool), n as u64 + 1, "every eviction is counted");
    }
}

#[test]
fn log_never_evicts_a_crash_and_is_refused_as_full_without_evicting_anything() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let entry = |body: usize| (HEADER_LEN + body) as u64;
    // Room for a crash of 100 and a log of 52 bytes of body, not for a second log of 100.
    let spool = open(dir.path(), 10, entry(100) + entry(52));
    let crash = spool.write(Kind::Crash, &[0; 100]).expect("write");
    let log = spool.write(Kind::Log, &[1; 52]).expect("write");
    let err = spool.write(Kind::Log, &[2; 100]).expect_err("only the crash could make room");
    assert!(matches!(err, SpoolError::Full { size, .. } if size == entry(100)), "{err:?}");
    assert_eq!(queued(&spool), BTreeSet::from([crash, log]), "a refused write evicts nothing");
    assert_eq!(evicted(&spool), 0);
    let err = spool.write(Kind::Event, &[3; 100]).expect_err("an event does not evict a crash either");
    assert!(matches!(err, SpoolError::Full { .. }), "{err:?}");
    // A log may evict an older log.
    let newer = spool.write(Kind::Log, &[4; 52]).expect("a log evicts an older log");
    assert_eq!(queued(&spool), BTreeSet::from([crash, newer]));
    assert_eq!(evicted(&spool), 1);

    // The same by count: two crashes fill a two-entry spool for good, as far as a log is concerned.
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path(), 2, 1 << 20);
    spool.write(Kind::Crash, b"1").expect("write");
    spool.write(Kind::Crash, b"2").expect("write");
    let err = spool.write(Kind::Log, b"3").expect_err("full of crashes");
    assert!(matches!(err, SpoolError::Full { max_entries: 2, .. }), "{err:?}");
    assert_eq!(evicted(&spool), 0);
}

#[test]
fn claimed_entries_are_never_evicted() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path(), 3, 1 << 20);
    let log1 = spool.write(Kind::Log, b"1").expect("write");
    spool.write(Kind::Log, b"2").expect("write");
    let log3 = spool.write(Kind::Log, b"3").expect("write");
    let held = spool.claim().expect("claim").expect("the oldest log");
    assert_eq!(held.id(), log1);
    let crash1 = spool.write(Kind::Crash, b"c1").expect("write");
    assert_eq!(queued(&spool), BTreeSet::from([log1, log3, crash1]), "the claimed oldest log stays");
    let crash2 = spool.write(Kind::Crash, b"c2").expect("write");
    assert_eq!(queued(&spool), BTreeSet::from([log1, crash1, crash2]));
    // A crash may evict a crash, but not a claimed log.
    let crash3 = spool.write(Kind::Crash, b"c3").expect("write");
    assert_eq!(queued(&spool), BTreeSet::from([log1, crash2, crash3]));
    // Everything in ready/ claimed: nothing can be evicted, even for a crash.
    let c2 = spool.claim().expect("claim").expect("crash 2");
    let c3 = spool.claim().expect("claim").expect("crash 3");
    let err = spool.write(Kind::Crash, b"c4").expect_err("only claimed entries left");
    assert!(matches!(err, SpoolError::Full { .. }), "{err:?}");
    assert_eq!(evicted(&spool), 3);
    for claim in [held, c2, c3] {
        claim.ack().expect("a claim survives the writes around it");
    }
}

#[test]
fn evicted_counter_counts_every_eviction_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let small = (HEADER_LEN + 10) as u64;
    {
        let spool = open(dir.path(), 100, 10 * small);
        for n in 0..10u8 {
            spool.write(Kind::Log, &[n; 10]).expect("write");
        }
        // One entry the size of four small ones evicts four.
        spool.write(Kind::Event, &vec![9; 4 * small as usize - HEADER_LEN]).expect("write");
        assert_eq!(evicted(&spool), 4);
        assert_eq!(queued(&spool).len(), 7);
    }
    let spool = open(dir.path(), 100, 10 * small);
    assert_eq!(evicted(&spool), 4, "the count is on disk");
    spool.write(Kind::Crash, &[1; 10]).expect("write");
    assert_eq!(evicted(&spool), 5, "later evictions add to it");
}

#[test]
fn entry_larger_than_max_bytes_is_full_and_evicts_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path(), 100, 200);
    let log = spool.write(Kind::Log, b"small").expect("write");
    let err = spool.write(Kind::Crash, &[0; 200]).expect_err("larger than the spool");
    assert!(
        matches!(err, SpoolError::Full { size, max_bytes: 200, .. } if size == 200 + HEADER_LEN as u64),
        "{err:?}"
    );
    assert_eq!(queued(&spool), BTreeSet::from([log]));
    assert_eq!(evicted(&spool), 0);
}
