//! A signal slot after `fork()`: the child's copy commits an entry of its own (its own file, its own
//! id), and the parent's commit afterwards is a second entry; neither overwrites the other.
// The test forks; the child calls only the async-signal-safe commit and `_exit`.
#![allow(unsafe_code)]

use lastword_spool::{FLAG_RAW_SIGNAL, Kind, Spool, SpoolOptions};

#[test]
fn a_forked_child_and_its_parent_commit_two_entries_through_one_reserved_slot() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
    let slot = spool.reserve_signal_slot().unwrap();
    // SAFETY: the child calls only `SignalSlot::commit` (async-signal-safe, as a crashing child's
    // signal handler would) and `_exit`, so it is sound after fork in a multi-threaded test process.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let code = match slot.commit(Kind::Crash, FLAG_RAW_SIGNAL, &[b"from the child"]) {
            Ok(_) => 0,
            Err(_) => 1,
        };
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the child committed: {status}");
    let parent = slot.commit(Kind::Crash, FLAG_RAW_SIGNAL, &[b"from the parent"]).unwrap();

    let view = spool.view();
    let listed = view.list().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let mut bodies = Vec::new();
    for item in &listed {
        let id = item.id.unwrap();
        bodies.push(view.read(id).unwrap().body);
    }
    bodies.sort();
    assert_eq!(bodies, [b"from the child".to_vec(), b"from the parent".to_vec()]);
    let child = listed.iter().map(|i| i.id.unwrap()).find(|&id| id != parent).unwrap();
    assert_ne!(child.random(), parent.random(), "the child drew id bits of its own");
}
