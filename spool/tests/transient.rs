//! An error that passes (no file descriptor left, no memory, an interrupted call) never quarantines a
//! good entry and never moves the backlog out of `ready/`: the entry goes back and the claim (or the
//! recovery) reports it, for the caller to try again. Only errors about the file itself (not a regular
//! file, a link, an I/O error, a bad header or checksum) quarantine it.

mod common;

use std::fs;
use std::path::Path;

use lastword_spool::fsio::{Op, faults};
use lastword_spool::{EntryId, EntryState, Kind, Spool, SpoolOptions};

use common::{all_names, by_state};

const EINTR: i32 = 4;
const EAGAIN: i32 = 11;
const ENOMEM: i32 = 12;
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;
const ENOSPC: i32 = 28;
/// A session id of a session that no process holds (no lock file): a dead one.
const DEAD: &str = "01HZZZZZZZZZZZZZZZZZZDEAD0";

fn open(dir: &Path) -> Spool {
    Spool::open(dir, SpoolOptions::default()).expect("open")
}

/// The ids in a state, in order.
fn ids(spool: &Spool, state: EntryState) -> Vec<Option<EntryId>> {
    let mut ids: Vec<_> =
        by_state(&spool.view()).remove(&state).unwrap_or_default().into_iter().map(|l| l.id).collect();
    ids.sort();
    ids
}

/// Writes a crash entry, then damages its body so that its checksum fails.
fn damaged_entry(spool: &Spool) -> EntryId {
    let id = spool.write(Kind::Crash, b"{\"soon\":\"damaged\"}").expect("write");
    let path = by_state(&spool.view())[&EntryState::Ready]
        .iter()
        .find(|l| l.id == Some(id))
        .expect("the entry")
        .path()
        .to_path_buf();
    let mut bytes = fs::read(&path).expect("read");
    bytes[50] ^= 1;
    fs::write(&path, bytes).expect("flip a bit");
    id
}

#[test]
fn a_transient_read_error_puts_the_entry_back_and_the_claim_fails_for_the_caller_to_retry() {
    for errno in [EMFILE, ENFILE, ENOMEM, EINTR, EAGAIN] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let spool = open(dir.path());
        let first = spool.write(Kind::Crash, b"{\"n\":1}").expect("write");
        let second = spool.write(Kind::Crash, b"{\"n\":2}").expect("write");
        faults::fail(Op::Read, 0, errno);
        let claimed = spool.claim();
        faults::clear();
        let err = claimed.expect_err("the claim reports the error");
        assert!(err.is_transient(), "errno {errno}: {err:?}");
        assert_eq!(ids(&spool, EntryState::Ready), [Some(first), Some(second)], "errno {errno}: all back");
        assert!(ids(&spool, EntryState::Quarantined).is_empty(), "errno {errno}: a good entry is kept");
        assert!(ids(&spool, EntryState::Claimed).is_empty(), "errno {errno}: nothing stranded");
        let claim = spool.claim().expect("claim").expect("the entry, the next time");
        assert_eq!(claim.id(), first, "errno {errno}");
        claim.ack().expect("ack");
    }
}

#[test]
fn a_transient_error_writing_the_quarantine_reason_puts_the_entry_back() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path());
    let bad = damaged_entry(&spool);
    let good = spool.write(Kind::Log, b"good").expect("write");
    faults::fail(Op::Create, 0, EMFILE);
    let claimed = spool.claim();
    faults::clear();
    assert!(claimed.expect_err("the claim reports the error").is_transient());
    assert_eq!(ids(&spool, EntryState::Ready), [Some(bad), Some(good)], "nothing moved");
    assert!(ids(&spool, EntryState::Claimed).is_empty());
    // The next claim quarantines the damaged entry and returns the good one.
    let claim = spool.claim().expect("claim").expect("the good entry");
    assert_eq!(claim.id(), good);
    claim.ack().expect("ack");
    assert_eq!(ids(&spool, EntryState::Quarantined), [Some(bad)]);
}

#[test]
fn a_damaged_entry_kept_aside_on_a_full_disk_is_quarantined_at_the_next_rescan() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path());
    let bad = damaged_entry(&spool);
    let good = spool.write(Kind::Log, b"good").expect("write");
    faults::fail(Op::Create, 0, ENOSPC);
    let claimed = spool.claim();
    faults::clear();
    let claim = claimed.expect("claim goes past what it cannot quarantine").expect("the good entry");
    assert_eq!(claim.id(), good);
    assert_eq!(ids(&spool, EntryState::Claimed), [Some(bad), Some(good)], "kept out of the way");
    spool.rescan().expect("rescan");
    assert_eq!(ids(&spool, EntryState::Quarantined), [Some(bad)], "with room, quarantined now");
    assert_eq!(ids(&spool, EntryState::Claimed), [Some(good)]);
    claim.ack().expect("ack");
}

#[test]
fn a_transient_read_error_in_recovery_leaves_a_complete_entry_for_the_next_recovery() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path());
    // A complete entry in a dead session's writing/ (it died between fsync and rename).
    let id = spool.write(Kind::Crash, b"{\"complete\":true}").expect("write");
    let ready = by_state(&spool.view())[&EntryState::Ready][0].path().to_path_buf();
    let writing = dir.path().join("writing").join(DEAD);
    fs::create_dir(&writing).expect("a dead session's writing/");
    fs::rename(&ready, writing.join(ready.file_name().expect("a name"))).expect("move it there");

    faults::fail(Op::Read, 0, EMFILE);
    let recovered = spool.recover().expect("recover");
    faults::clear();
    assert_eq!((recovered.quarantined, recovered.skipped), (0, 1), "{recovered:?}");
    assert_eq!(all_names(&writing).len(), 1, "left for the next recovery");
    let recovered = spool.recover().expect("recover");
    assert_eq!(recovered.rescued, 1, "{recovered:?}");
    assert_eq!(spool.view().read(id).expect("rescued").body, b"{\"complete\":true}");
}
