//! A spool that a dead session (or a person, or a full disk) left damaged still opens: what cannot be
//! recovered is quarantined with a reason if it can be, skipped and counted if not, and the good
//! entries are delivered as usual. Nothing is deleted, and opening never fails because of a leftover.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use lastword_spool::fsio::{Op, faults};
use lastword_spool::{EntryState, Kind, Spool, SpoolOptions};

use common::{all_names, by_state};

/// A session id of a session that no process holds (no lock file): a dead one.
const DEAD: &str = "01HZZZZZZZZZZZZZZZZZZDEAD0";
const ENOSPC: i32 = 28;
const EIO: i32 = 5;
const EACCES: i32 = 13;

fn open(dir: &Path) -> Spool {
    Spool::open(dir, SpoolOptions::default()).expect("a damaged spool still opens")
}

/// A spool with one good crash entry in it, and the `writing/` folder of a dead session.
fn spool_with_a_dead_writer() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    open(dir.path()).write(Kind::Crash, b"{\"good\":true}").expect("write");
    let writing = dir.path().join("writing").join(DEAD);
    fs::create_dir(&writing).expect("the dead session's writing folder");
    (dir, writing)
}

/// Claims and acks everything; returns the bodies.
fn drain(spool: &Spool) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    while let Some(claim) = spool.claim().expect("claim") {
        bodies.push(claim.body().to_vec());
        claim.ack().expect("ack");
    }
    bodies
}

fn quarantine_reasons(spool: &Spool) -> Vec<(String, String)> {
    by_state(&spool.view())
        .remove(&EntryState::Quarantined)
        .unwrap_or_default()
        .into_iter()
        .map(|l| (l.file_name, l.reason.unwrap_or_default()))
        .collect()
}

#[test]
fn a_stray_directory_in_a_dead_sessions_writing_folder_is_quarantined_and_the_spool_opens() {
    let (dir, writing) = spool_with_a_dead_writer();
    let stray = writing.join("0-01HZZZZZZZZZZZZZZZZZZZZZZZ-48.crash");
    fs::create_dir(&stray).expect("a directory where a file should be");
    fs::write(stray.join("inside"), b"kept").expect("something inside it");

    let spool = open(dir.path());
    let recovered = spool.recovered_at_open();
    assert_eq!((recovered.sessions, recovered.quarantined, recovered.skipped), (1, 1, 0), "{recovered:?}");
    assert_eq!(drain(&spool), vec![b"{\"good\":true}".to_vec()], "the good entry is delivered");
    let reasons = quarantine_reasons(&spool);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].1.contains("not a regular file"), "{reasons:?}");
    let kept = dir.path().join("quarantine").join(&reasons[0].0).join("inside");
    assert_eq!(fs::read(kept).expect("moved whole"), b"kept", "nothing is deleted");
    assert!(!writing.exists(), "the dead session is settled");
}

#[test]
fn a_fifo_in_a_dead_sessions_writing_folder_is_quarantined_without_being_read() {
    let (dir, writing) = spool_with_a_dead_writer();
    let fifo = writing.join("2-01HZZZZZZZZZZZZZZZZZZZZZZZ-60.log");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(made.success());

    // Reading a FIFO without a writer blocks for ever: open on a thread, with a bounded wait.
    let (tx, rx) = mpsc::channel();
    let root = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(Spool::open(&root, SpoolOptions::default()).map(|s| s.recovered_at_open()));
    });
    let recovered = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("open returns: a leftover that is not a regular file is never read")
        .expect("the spool opens");
    assert_eq!(recovered.quarantined, 1, "{recovered:?}");
    let spool = open(dir.path());
    let reasons = quarantine_reasons(&spool);
    assert!(reasons.iter().any(|(_, r)| r.contains("not a regular file")), "{reasons:?}");
}

#[test]
fn a_partial_write_that_cannot_be_quarantined_on_a_full_disk_is_skipped_counted_and_kept() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path());
    spool.write(Kind::Crash, b"{\"good\":true}").expect("write");
    // A session dies in the middle of a write while this one is open.
    let writing = dir.path().join("writing").join(DEAD);
    fs::create_dir(&writing).expect("the dead session's writing folder");
    fs::write(partial_in(&writing), b"LWSP half of a crash report").expect("a partial write");
    // The disk is full when the quarantine reason is written.
    faults::fail(Op::Create, 0, ENOSPC);
    let recovered = spool.recover().expect("recovery goes on past what it cannot move");
    faults::clear();
    assert_eq!((recovered.quarantined, recovered.skipped), (0, 1), "{recovered:?}");
    assert_eq!(all_names(&writing), vec!["0-01HZZZZZZZZZZZZZZZZZZZZZZZ-300.crash"], "left where it was");
    // Once there is space again, the next scan (here, a claim's) quarantines it.
    assert_eq!(drain(&spool), vec![b"{\"good\":true}".to_vec()], "the good entry is still delivered");
    assert!(!writing.exists());
    let reasons = quarantine_reasons(&spool);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].1.starts_with("partial write by a dead session"), "{reasons:?}");
}

fn partial_in(writing: &Path) -> PathBuf {
    writing.join("0-01HZZZZZZZZZZZZZZZZZZZZZZZ-300.crash")
}

#[test]
fn a_partial_write_on_a_full_disk_does_not_make_open_fail() {
    let (dir, writing) = spool_with_a_dead_writer();
    fs::write(partial_in(&writing), b"LWSP half").expect("a partial write");
    // The first file created by open is its session's lock; the second, the quarantine reason.
    faults::fail(Op::Create, 1, ENOSPC);
    let spool = Spool::open(dir.path(), SpoolOptions::default());
    faults::clear();
    let spool = spool.expect("a leftover that cannot be moved does not stop the spool from opening");
    let recovered = spool.recovered_at_open();
    assert_eq!(recovered.skipped, 1, "{recovered:?}");
    let first = recovered.first_skipped.expect("what was skipped, and why");
    assert_eq!(first.path, partial_in(&writing), "the file left in place is named");
    assert!(first.error.contains("no space left"), "and why: {first:?}");
    let id = spool.write(Kind::Crash, b"{\"new\":true}").expect("the spool takes new entries");
    assert_eq!(spool.view().read(id).expect("read").body, b"{\"new\":true}");
}

#[test]
fn an_unreadable_leftover_is_quarantined_with_the_read_error() {
    let (dir, writing) = spool_with_a_dead_writer();
    fs::write(partial_in(&writing), b"LWSP whatever is on the bad sector").expect("a leftover");
    let spool = open(dir.path());
    let dead_again = dir.path().join("writing").join(DEAD);
    fs::create_dir(&dead_again).expect("a dead writer again");
    fs::write(partial_in(&dead_again), b"LWSP unreadable").expect("a leftover");
    faults::fail(Op::Read, 0, EIO);
    let recovered = spool.recover().expect("recovery goes on past a file it cannot read");
    faults::clear();
    assert_eq!((recovered.quarantined, recovered.skipped), (1, 0), "{recovered:?}");
    let reasons = quarantine_reasons(&spool);
    assert!(reasons.iter().any(|(_, r)| r.contains("cannot read")), "{reasons:?}");
}

#[test]
fn a_foreign_file_in_ready_that_cannot_be_quarantined_does_not_stop_the_spool() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path());
    let good = spool.write(Kind::Event, b"good").expect("write");
    fs::write(dir.path().join("ready").join("notes.txt"), b"a person's file").expect("a foreign file");
    faults::fail(Op::Create, 0, ENOSPC);
    let rescanned = spool.rescan();
    faults::clear();
    rescanned.expect("a foreign file that cannot be moved aside is skipped");
    let claim = spool.claim().expect("claim").expect("the good entry");
    assert_eq!(claim.id(), good);
    claim.ack().expect("ack");
    assert!(dir.path().join("ready/notes.txt").exists(), "left where it was, not deleted");
}

#[test]
fn a_damaged_entry_that_cannot_be_quarantined_does_not_stop_claims() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path());
    let bad = spool.write(Kind::Crash, b"soon damaged").expect("write");
    let good = spool.write(Kind::Log, b"good").expect("write");
    let bad_file = by_state(&spool.view())[&EntryState::Ready]
        .iter()
        .find(|l| l.id == Some(bad))
        .expect("the crash entry")
        .path()
        .to_path_buf();
    let mut bytes = fs::read(&bad_file).expect("read");
    bytes[50] ^= 1;
    fs::write(&bad_file, bytes).expect("flip a bit");
    faults::fail(Op::Create, 0, ENOSPC);
    let claimed = spool.claim();
    faults::clear();
    let claim = claimed.expect("claim goes past an entry it cannot quarantine").expect("the good entry");
    assert_eq!(claim.id(), good);
    claim.ack().expect("ack");
    drop(spool);
    // The damaged entry was kept, and is quarantined once that can be done.
    let spool = open(dir.path());
    assert!(spool.claim().expect("claim").is_none());
    let reasons = quarantine_reasons(&spool);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].1.contains("checksum"), "{reasons:?}");
}

#[test]
fn a_fifo_or_a_symbolic_link_under_an_entry_name_in_ready_is_quarantined_not_read() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path());
    let good = spool.write(Kind::Log, b"good").expect("write");
    let ready = dir.path().join("ready");
    let fifo = ready.join("0-01HZZZZZZZZZZZZZZZZZZZZZZZ-60.crash");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(made.success());
    let secret = dir.path().join("secret");
    fs::write(&secret, b"not for the collector").expect("a file outside the spool");
    std::os::unix::fs::symlink(&secret, ready.join("0-01HZZZZZZZZZZZZZZZZZZZZZZZ-69.crash"))
        .expect("symlink");

    // Reading a FIFO without a writer blocks for ever: claim on a thread, with a bounded wait.
    let (tx, rx) = mpsc::channel();
    let claimer = spool.clone();
    std::thread::spawn(move || {
        claimer.rescan().expect("rescan");
        let claimed = claimer.claim().map(|c| c.map(|c| (c.id(), c.body().to_vec(), c.ack())));
        let _ = tx.send(claimed);
    });
    let claimed = rx.recv_timeout(Duration::from_secs(30)).expect("claim returns: a FIFO is never read");
    let (id, body, acked) = claimed.expect("claim").expect("the good entry");
    assert_eq!((id, body.as_slice()), (good, &b"good"[..]));
    acked.expect("ack");
    let reasons = quarantine_reasons(&spool);
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|(_, r)| r.contains("not a regular file (a FIFO)")), "{reasons:?}");
    assert!(reasons.iter().all(|(_, r)| r.starts_with("cannot read the entry")), "{reasons:?}");
    assert_eq!(fs::read(&secret).expect("still there"), b"not for the collector");
}

#[test]
fn an_unreadable_claimed_directory_of_a_dead_session_is_skipped_and_the_spool_opens_and_drains() {
    let dir = tempfile::tempdir().expect("temporary directory");
    open(dir.path()).write(Kind::Crash, b"{\"good\":true}").expect("write");
    let claimed = dir.path().join("claimed").join(DEAD);
    fs::create_dir(&claimed).expect("a dead session's claimed/");
    fs::write(claimed.join("0-01HZZZZZZZZZZZZZZZZZZZZZZZ-60.crash"), b"held by the dead session")
        .expect("its claim");
    // Mode 000 or a bad sector: the directory cannot be listed (root reads a mode 000 directory, so
    // the error is injected).
    faults::fail_at(Op::ListDir, &claimed, EACCES);
    let opened = Spool::open(dir.path(), SpoolOptions::default());
    let delivered = opened.as_ref().ok().map(drain);
    faults::clear();
    let spool = opened.expect("a claimed/ directory that cannot be listed does not stop the spool");
    let recovered = spool.recovered_at_open();
    assert_eq!(recovered.skipped, 1, "counted once: {recovered:?}");
    let first = recovered.first_skipped.expect("what was skipped, and why");
    assert_eq!(first.path, claimed);
    assert!(first.error.contains("Permission denied"), "{first:?}");
    assert_eq!(delivered.expect("claims"), vec![b"{\"good\":true}".to_vec()]);
    assert!(claimed.join("0-01HZZZZZZZZZZZZZZZZZZZZZZZ-60.crash").exists(), "left where it was");
    // Readable again: the next recovery puts its claim back.
    let recovered = spool.recover().expect("recover");
    assert_eq!((recovered.released, recovered.skipped), (1, 0), "{recovered:?}");
}

#[test]
fn a_symbolic_link_under_an_entry_name_is_quarantined_as_one() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path());
    let secret = dir.path().join("secret");
    fs::write(&secret, b"not for the collector").expect("a file outside the spool");
    let link = dir.path().join("ready").join("0-01HZZZZZZZZZZZZZZZZZZZZZZZ-69.crash");
    std::os::unix::fs::symlink(&secret, &link).expect("symlink");
    spool.rescan().expect("rescan");
    assert!(spool.claim().expect("claim").is_none(), "a link is never read");
    let reasons = quarantine_reasons(&spool);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert_eq!(reasons[0].1, "cannot read the entry: not a regular file (a symbolic link)", "{reasons:?}");
}

#[test]
fn an_io_errors_cause_is_said_once_in_its_chain() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path());
    let fifo = dir.path().join("ready").join("0-01HZZZZZZZZZZZZZZZZZZZZZZZ-60.crash");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(made.success());
    let id = lastword_spool::EntryId::parse("01HZZZZZZZZZZZZZZZZZZZZZZZ").expect("id");
    let err = spool.view().read(id).expect_err("a FIFO is not read");
    // The whole chain, as the binary prints it (anyhow's `{:#}`).
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert_eq!(message, format!("read {}: not a regular file (a FIFO)", fifo.display()));
}

#[test]
fn a_stray_directory_that_cannot_be_moved_is_skipped_and_named_with_why() {
    // A directory of mode 0555 cannot be moved to another directory by its owner (its `..` would
    // change); root can, so the refusal is injected.
    let (dir, writing) = spool_with_a_dead_writer();
    let stray = writing.join("stray");
    fs::create_dir(&stray).expect("a stray directory");
    faults::fail_at(Op::Rename, &stray, EACCES);
    let spool = Spool::open(dir.path(), SpoolOptions::default());
    faults::clear();
    let recovered = spool.expect("opens").recovered_at_open();
    assert_eq!((recovered.quarantined, recovered.skipped), (0, 1), "{recovered:?}");
    let first = recovered.first_skipped.expect("named");
    assert_eq!(first.path, stray);
    assert!(
        first
            .error
            .starts_with("cannot quarantine it (left by a dead session: not a regular file (a directory))")
            && first.error.ends_with("Permission denied (os error 13)"),
        "{first:?}"
    );
    assert!(stray.is_dir(), "left where it was");
}
