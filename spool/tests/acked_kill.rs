//! An acked entry is never sent again, even when its process is killed between the ack's rename and
//! the background delete (FORMAT.md, "Ack"): a child acks entries with its deletes held back
//! ([`Spool::hold_deletes`]), so that the acked files are certainly on disk, and is killed with
//! SIGKILL; the next open deletes them and hands none of them out, while the entry the child had
//! only claimed goes back to `ready/` as before.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use lastword_spool::{Deletes, EntryId, EntryName, EntryState, Kind, Spool, SpoolOptions};

use common::{PATIENCE, all_names, by_state, child_command, child_role, report, spawn, wait_bounded};

const CHILD_TEST: &str = "child_acks_with_deletes_held_then_waits_to_be_killed";
/// Entries the child acks.
const ACKED: usize = 20;

fn options() -> SpoolOptions {
    // Background deletes whatever the file system (`Auto` deletes at once on a tmpfs).
    SpoolOptions { deletes: Deletes::Background, ..SpoolOptions::default() }
}

/// The child: claims and acks `ACKED` entries, claims one more without acking it, says so, and waits
/// for the kill.
#[test]
fn child_acks_with_deletes_held_then_waits_to_be_killed() {
    let Some(dir) = child_role("acker") else { return };
    let spool = Spool::open(&dir, options()).expect("open the spool");
    spool.hold_deletes();
    report("S", spool.session_id());
    for _ in 0..ACKED {
        let claim = spool.claim().expect("claim").expect("an entry the parent wrote");
        let id = claim.id();
        claim.ack().expect("ack");
        report("A", &id.to_string());
    }
    let kept = spool.claim().expect("claim").expect("the last entry");
    report("C", &kept.id().to_string());
    report("READY", "");
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(kept);
    panic!("the parent did not kill this child");
}

/// The ids of the acked files in `claimed/<sid>/`.
fn acked_files(dir: &Path, sid: &str) -> BTreeSet<EntryId> {
    all_names(&dir.join("claimed").join(sid))
        .iter()
        .filter_map(|n| n.strip_prefix(".acked."))
        .map(|n| EntryName::parse(n).unwrap_or_else(|| panic!("an acked file named {n}")).id())
        .collect()
}

#[test]
fn entries_acked_by_a_process_killed_before_their_delete_are_deleted_and_never_handed_out_again() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let writer = Spool::open(dir.path(), options()).expect("create the spool");
    let written: BTreeSet<EntryId> = (0..=ACKED)
        .map(|i| writer.write(Kind::Log, format!("{{\"n\":{i}}}").as_bytes()).expect("write"))
        .collect();
    drop(writer);

    let (mut child, marks) = spawn(child_command(CHILD_TEST, "acker", dir.path()));
    let sid = marks.wait_for("S").text;
    marks.wait_for("READY");
    // The acks are on disk under their acked names, not deleted yet: the kill lands between the
    // rename and the unlink of every one of them.
    let on_disk = acked_files(dir.path(), &sid);
    child.kill().expect("SIGKILL the child");
    let status = wait_bounded(&mut child);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "killed: {status}");
    let mut acked = BTreeSet::new();
    let mut kept = None;
    for mark in marks.all() {
        match mark.tag.as_str() {
            "A" => {
                acked.insert(mark.text.parse::<EntryId>().expect("an id"));
            }
            "C" => kept = Some(mark.text.parse::<EntryId>().expect("an id")),
            _ => {}
        }
    }
    let kept = kept.expect("the child said which entry it kept");
    assert_eq!(acked.len(), ACKED);
    assert_eq!(on_disk, acked, "every acked entry was on disk under its acked name at the kill");

    let spool = Spool::open(dir.path(), options()).expect("open after the kill");
    let recovered = spool.recovered_at_open();
    assert_eq!(recovered.acked, ACKED as u64, "the dead child's acked files were deleted: {recovered:?}");
    assert_eq!(recovered.released, 1, "the claim it had not acked went back: {recovered:?}");
    assert!(!recovered.damaged(), "{recovered:?}");
    assert!(!dir.path().join("claimed").join(&sid).exists(), "the dead child's claimed/ is gone");

    // Only the unacked entry is left, and it is the only one ever handed out again.
    let states = by_state(&spool.view());
    let ready: Vec<EntryId> =
        states.get(&EntryState::Ready).into_iter().flatten().filter_map(|l| l.id).collect();
    assert_eq!(ready, vec![kept]);
    assert!(written.contains(&kept));
    let claim = spool.claim().expect("claim").expect("the unacked entry");
    assert_eq!(claim.id(), kept);
    claim.ack().expect("ack");
    assert!(spool.claim().expect("claim").is_none(), "no acked entry is handed out again");
}
