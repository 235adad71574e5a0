//! Signal slots: an entry committed from a real SIGSEGV handler (a child process reads a null
//! pointer) reaches ready/ intact, and the dead child leaves no slot behind once the spool is opened
//! again; a slot commits once, and an unused one is removed when dropped or when its process dies.
// The child installs a signal handler with libc::sigaction, and faults on purpose.
#![allow(unsafe_code)]

mod common;

use std::ffi::c_void;
use std::os::unix::process::ExitStatusExt;
use std::sync::OnceLock;

use lastword_spool::{
    EntryState, FLAG_RAW_SIGNAL, Kind, SignalSlot, SlotError, Spool, SpoolOptions, SpoolView,
};

use common::{all_names, by_state, child_command, child_role, report, spawn, wait_bounded};

const CHILD_TEST: &str = "child_process_crashes_or_holds_a_slot_as_told";

/// The slot the handler commits through. Reserved before the fault; never dropped.
static SLOT: OnceLock<SignalSlot> = OnceLock::new();

/// The body the handler writes, in parts (as a real handler would write header, registers, stack).
const BODY_PARTS: [&[u8]; 3] = [b"signal 11 (SIGSEGV) ", b"at address 0x0; ", b"raw report follows"];

/// The SIGSEGV handler: commits the crash entry, restores the default action and returns, so that the
/// faulting read runs again and kills the process the ordinary way. Async-signal-safe: an atomic
/// load (`OnceLock::get`), `SignalSlot::commit`, and `sigaction`.
extern "C" fn on_segv(_signal: libc::c_int, _info: *mut libc::siginfo_t, _context: *mut c_void) {
    if let Some(slot) = SLOT.get() {
        let _ = slot.commit(Kind::Crash, FLAG_RAW_SIGNAL, &BODY_PARTS);
    }
    // SAFETY: `sigaction` is a plain C struct for which all-zero bytes are a valid value (an empty mask,
    // no flags, the handler field set to SIG_DFL = 0 just below).
    let mut default: libc::sigaction = unsafe { std::mem::zeroed() };
    default.sa_sigaction = libc::SIG_DFL;
    // SAFETY: sigaction is async-signal-safe; `default` is a valid, initialised struct that lives across
    // the call, and a null old-action pointer is allowed.
    unsafe { libc::sigaction(libc::SIGSEGV, &default, std::ptr::null_mut()) };
}

fn install_segv_handler() {
    // SAFETY: all-zero bytes are a valid `sigaction` (see on_segv); the fields that matter are set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_segv as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `action.sa_mask` is a valid sigset_t owned by this frame.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: `action` is initialised and names a handler with the three-argument SA_SIGINFO signature;
    // the handler only makes async-signal-safe calls.
    let rc = unsafe { libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "install the SIGSEGV handler");
}

/// The entry point of this file's children; passes at once in an ordinary test run.
#[test]
fn child_process_crashes_or_holds_a_slot_as_told() {
    if let Some(dir) = child_role("segv") {
        let spool = Spool::open(&dir, SpoolOptions::default()).expect("open the spool");
        let slot = spool.reserve_signal_slot().expect("reserve a slot");
        SLOT.set(slot).expect("the slot is set once");
        install_segv_handler();
        report("ARMED", spool.session_id());
        let null = std::hint::black_box(std::ptr::null::<u64>());
        // SAFETY: not sound, on purpose: reading address 0 faults, and the fault is what this child is
        // for. The handler above commits the crash entry and the default action then ends the process.
        let value = unsafe { std::ptr::read_volatile(null) };
        report("SURVIVED", &value.to_string());
    } else if let Some(dir) = child_role("slot-holder") {
        let spool = Spool::open(&dir, SpoolOptions::default()).expect("open the spool");
        let slot = spool.reserve_signal_slot().expect("reserve a slot");
        report("RESERVED", spool.session_id());
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line); // held until the parent kills this process
        drop(slot);
    }
}

#[test]
fn crash_entry_committed_from_a_real_sigsegv_handler_is_delivered_intact() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (mut child, marks) = spawn(child_command(CHILD_TEST, "segv", dir.path()));
    let sid = marks.wait_for("ARMED").text;
    let status = wait_bounded(&mut child);
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "the child died of its fault: {status}");
    assert!(marks.all().iter().all(|m| m.tag != "SURVIVED"), "the fault stopped the child");

    // Before anyone recovers the dead session: the entry is already in ready/, its slot is not in
    // writing/ (the commit renamed it).
    let view = SpoolView::open(dir.path()).expect("view");
    let listed = by_state(&view);
    let ready = &listed[&EntryState::Ready];
    assert_eq!(ready.len(), 1, "exactly one entry: {listed:?}");
    assert_eq!(ready[0].kind, Some(Kind::Crash));
    let data = view.read(ready[0].id.expect("an entry name")).expect("the entry decodes intact");
    assert_eq!(data.body, BODY_PARTS.concat());
    assert_eq!(data.header.flags & FLAG_RAW_SIGNAL, FLAG_RAW_SIGNAL);
    assert_eq!(all_names(&dir.path().join("writing").join(&sid)), Vec::<String>::new());

    let spool = Spool::open(dir.path(), SpoolOptions::default()).expect("open after the crash");
    assert!(!dir.path().join("writing").join(&sid).exists(), "the dead child's writing/ is gone");
    assert_eq!(all_names(&dir.path().join("writing")), [spool.session_id().to_owned()]);
    let claim = spool.claim().expect("claim").expect("the crash entry");
    assert_eq!((claim.kind(), claim.flags(), claim.body()), (Kind::Crash, FLAG_RAW_SIGNAL, &data.body[..]));
    claim.ack().expect("ack");
    assert!(spool.claim().expect("claim").is_none(), "one crash, one entry");
}

#[test]
fn unused_slot_of_a_killed_process_is_removed_by_recovery() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = Spool::open(dir.path(), SpoolOptions::default()).expect("open");
    let mut cmd = child_command(CHILD_TEST, "slot-holder", dir.path());
    cmd.stdin(std::process::Stdio::piped());
    let (mut child, marks) = spawn(cmd);
    let sid = marks.wait_for("RESERVED").text;
    let slots = all_names(&dir.path().join("writing").join(&sid));
    assert!(slots.len() == 1 && slots[0].starts_with(".slot-"), "the child's empty slot: {slots:?}");
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    let recovered = spool.recover().expect("recover");
    assert_eq!((recovered.sessions, recovered.removed_slots, recovered.quarantined), (1, 1, 0));
    assert!(!dir.path().join("writing").join(&sid).exists());
    assert_eq!(spool.view().list().expect("list"), Vec::new(), "an unused slot leaves no entry");
}

#[test]
fn slot_commits_once_and_a_second_commit_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = Spool::open(dir.path(), SpoolOptions::default()).expect("open");
    let slot = spool.reserve_signal_slot().expect("reserve");
    assert!(!slot.is_used());
    let id = slot.commit(Kind::Crash, FLAG_RAW_SIGNAL, &[b"first ", b"commit"]).expect("commit");
    assert!(slot.is_used());
    assert_eq!(slot.commit(Kind::Crash, 0, &[b"second"]), Err(SlotError::Used));
    drop(slot);
    let claim = spool.claim().expect("claim").expect("the committed entry");
    assert_eq!((claim.id(), claim.body(), claim.flags()), (id, &b"first commit"[..], FLAG_RAW_SIGNAL));
    claim.ack().expect("ack");
    assert!(spool.claim().expect("claim").is_none(), "the second commit wrote nothing");
}

#[test]
fn unused_slot_is_removed_when_dropped() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = Spool::open(dir.path(), SpoolOptions::default()).expect("open");
    let writing = dir.path().join("writing").join(spool.session_id());
    let slot = spool.reserve_signal_slot().expect("reserve");
    let names = all_names(&writing);
    assert!(names.len() == 1 && names[0].starts_with(".slot-"), "the slot's file: {names:?}");
    drop(slot);
    assert_eq!(all_names(&writing), Vec::<String>::new(), "the slot's file is removed");
    assert_eq!(spool.view().list().expect("list"), Vec::new());
}

#[test]
fn slot_cut_short_by_the_death_of_its_process_is_quarantined_where_listings_show_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = Spool::open(dir.path(), SpoolOptions::default()).expect("open");
    let mut cmd = child_command(CHILD_TEST, "slot-holder", dir.path());
    cmd.stdin(std::process::Stdio::piped());
    let (mut child, marks) = spawn(cmd);
    let sid = marks.wait_for("RESERVED").text;
    let writing = dir.path().join("writing").join(&sid);
    let slot_name = all_names(&writing).pop().expect("the child's slot");
    // What a handler killed in the middle of its commit leaves: the start of a header.
    let partial = b"LWSP\x01\x00\x30\x00\x00\x00";
    std::fs::write(writing.join(&slot_name), partial).expect("a partial commit");
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");

    let recovered = spool.recover().expect("recover");
    assert_eq!((recovered.sessions, recovered.quarantined, recovered.removed_slots), (1, 1, 0));
    assert!(!writing.exists(), "the dead child's writing/ is gone");
    let listed = by_state(&spool.view());
    let quarantined =
        listed.get(&EntryState::Quarantined).expect("the partial slot is listed as quarantined");
    assert_eq!(quarantined.len(), 1, "{listed:?}");
    let reason = quarantined[0].reason.as_deref().unwrap_or_default();
    assert!(reason.starts_with("partial write by a dead session"), "{reason}");
    let kept = dir.path().join("quarantine").join(&quarantined[0].file_name);
    assert_eq!(std::fs::read(kept).expect("kept"), partial, "kept byte for byte");
    assert_eq!(spool.view().stats().expect("stats").totals[&EntryState::Quarantined].entries, 1);
}
