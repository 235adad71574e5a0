//! A session's own directories (`writing/<sid>/`, `claimed/<sid>/`) are never what stops a spool from
//! opening: on a disk where a new directory needs a block that is not there (ext4 when full), the
//! session starts without them, takes over a dead session's emptied ones (a rename needs no block), or
//! makes them at first use, where failing is that use's clear error. A signal slot reserved without
//! room makes its file, and the directory, when it commits.
//!
//! The full disk is injected (`Op::CreateDir` fails with ENOSPC); agent/tests/full_disk_ext4.rs does
//! the same on a real, full ext4 file system.

mod common;

use std::fs;
use std::path::Path;

use lastword_spool::fsio::{Op, faults};
use lastword_spool::{EntryState, Kind, Spool, SpoolError, SpoolOptions};

use common::{all_names, by_state};

const ENOSPC: i32 = 28;
/// A session id of a session that no process holds (no lock file): a dead one.
const DEAD: &str = "01HZZZZZZZZZZZZZZZZZZDEAD0";

/// Opens `dir` while no new directory can be made.
fn open_on_a_full_disk(dir: &Path) -> Spool {
    for _ in 0..2 {
        faults::fail(Op::CreateDir, 0, ENOSPC);
    }
    let spool = Spool::open(dir, SpoolOptions::default());
    faults::clear();
    spool.expect("opening needs no new directory")
}

fn own(spool: &Spool, state: &str) -> std::path::PathBuf {
    spool.path().join(state).join(spool.session_id())
}

#[test]
fn a_spool_opens_when_its_session_directories_cannot_be_made_and_makes_them_at_first_use() {
    let dir = tempfile::tempdir().expect("temporary directory");
    drop(Spool::open(dir.path(), SpoolOptions::default()).expect("create the spool"));
    let spool = open_on_a_full_disk(dir.path());
    assert!(!own(&spool, "writing").exists() && !own(&spool, "claimed").exists());

    faults::fail(Op::CreateDir, 0, ENOSPC);
    let err = spool.write(Kind::Crash, b"{}").expect_err("no room for writing/<sid>");
    faults::clear();
    assert!(
        matches!(&err, SpoolError::NoSpace { path } if *path == own(&spool, "writing")),
        "the write says which directory it could not make: {err:?}"
    );
    let id = spool.write(Kind::Crash, b"{\"a\":1}").expect("with room, the first write makes it");
    assert!(own(&spool, "writing").is_dir());

    faults::fail(Op::CreateDir, 0, ENOSPC);
    let err = spool.claim().expect_err("no room for claimed/<sid>");
    faults::clear();
    assert!(
        matches!(&err, SpoolError::NoSpace { path } if *path == own(&spool, "claimed")),
        "the claim says which directory it could not make: {err:?}"
    );
    let ready = by_state(&spool.view()).remove(&EntryState::Ready).unwrap_or_default();
    assert_eq!(ready.len(), 1, "the entry stayed ready: {ready:?}");
    let claim = spool.claim().expect("claim").expect("with room, the first claim makes it");
    assert_eq!(claim.id(), id);
    claim.ack().expect("ack");
}

#[test]
fn a_signal_slot_reserved_without_room_makes_its_file_and_directory_when_it_commits() {
    let dir = tempfile::tempdir().expect("temporary directory");
    drop(Spool::open(dir.path(), SpoolOptions::default()).expect("create the spool"));
    let spool = open_on_a_full_disk(dir.path());
    faults::fail(Op::CreateDir, 0, ENOSPC);
    let slot = spool.reserve_signal_slot();
    faults::clear();
    let slot = slot.expect("a slot is reserved without room for its file");
    assert!(!slot.is_prepared());
    let id = slot.commit(Kind::Crash, 0, &[b"{\"sig\":", b"11}"]).expect("commit once there is room");
    assert_eq!(spool.view().read(id).expect("committed").body, b"{\"sig\":11}");
    assert_eq!(all_names(&own(&spool, "writing")), Vec::<String>::new(), "made by the commit, left empty");
    drop(slot);

    // A slot reserved after the directory exists is prepared as usual.
    let slot = spool.reserve_signal_slot().expect("reserve");
    assert!(slot.is_prepared());
    assert_eq!(all_names(&own(&spool, "writing")).len(), 1, "its empty file");
}

#[test]
fn a_dead_sessions_emptied_directories_become_the_new_sessions_own_when_it_cannot_make_them() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let dead = Spool::open(dir.path(), SpoolOptions::default()).expect("open");
    let first = dead.write(Kind::Crash, b"{\"n\":1}").expect("write");
    let second = dead.write(Kind::Log, b"{\"n\":2}").expect("write");
    let held = dead.claim().expect("claim").expect("the crash");
    let dead_sid = dead.session_id().to_owned();
    dead.abandon();
    drop(held);
    drop(dead);

    let spool = open_on_a_full_disk(dir.path());
    let recovered = spool.recovered_at_open();
    assert_eq!((recovered.sessions, recovered.released), (1, 1), "{recovered:?}");
    for state in ["writing", "claimed"] {
        assert_eq!(all_names(&dir.path().join(state)), [spool.session_id()], "{state}/ taken over");
    }
    // Still no room for a directory: the claims go into the one taken over.
    for _ in 0..10 {
        faults::fail(Op::CreateDir, 0, ENOSPC);
    }
    let mut delivered = Vec::new();
    let claimed = (|| -> Result<(), SpoolError> {
        while let Some(claim) = spool.claim()? {
            delivered.push(claim.id());
            claim.ack()?;
        }
        Ok(())
    })();
    faults::clear();
    claimed.expect("claims need no new directory");
    assert_eq!(delivered, [first, second]);
    assert!(!dir.path().join("claimed").join(&dead_sid).exists());
    assert!(!dir.path().join("sessions").join(format!("{dead_sid}.lock")).exists(), "settled");
}

#[test]
fn a_dead_sessions_directory_that_still_holds_a_leftover_is_not_taken_over() {
    let dir = tempfile::tempdir().expect("temporary directory");
    drop(Spool::open(dir.path(), SpoolOptions::default()).expect("create the spool"));
    let writing = dir.path().join("writing").join(DEAD);
    fs::create_dir(&writing).expect("a dead session's writing/");
    let partial = writing.join("0-01HZZZZZZZZZZZZZZZZZZZZZZZ-300.crash");
    fs::write(&partial, b"LWSP half of a crash report").expect("its partial write");

    // Neither a directory nor the quarantine reason can be made.
    faults::fail(Op::Create, 1, ENOSPC); // the first create is the session's lock
    let spool = open_on_a_full_disk(dir.path());
    assert_eq!(spool.recovered_at_open().skipped, 1, "{:?}", spool.recovered_at_open());
    assert_eq!(fs::read(&partial).expect("kept where it was"), b"LWSP half of a crash report");
    assert!(!own(&spool, "writing").exists(), "the leftover did not become this session's");
}
