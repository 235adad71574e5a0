//! What the spool does with what it cannot use: damaged entries and foreign files are quarantined
//! with a reason while the good entries are still delivered; a spool it does not understand, a path it
//! cannot use, a full disk, a failed fsync or a foreign owner give typed errors and change nothing.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use lastword_spool::fsio::{Op, faults};
use lastword_spool::{EntryName, EntryState, Kind, Limits, Spool, SpoolError, SpoolOptions, SpoolView};

use common::{all_names, by_state};

fn open(dir: &Path) -> Spool {
    Spool::open(dir, SpoolOptions::default()).expect("open the spool")
}

/// Writes two good entries around a crash entry (claimed first) whose file `damage` then changes,
/// drains the spool, and returns the quarantine reason of the damaged entry. Checks on the way that
/// both good entries are delivered, intact and in order, and that the damaged file is in quarantine
/// byte for byte as it was found.
fn quarantine_reason_after(damage: impl FnOnce(&Path)) -> String {
    let dir = tempfile::tempdir().expect("temporary directory");
    let good_before;
    let good_after;
    let victim_file;
    {
        let spool = open(dir.path());
        good_before = spool.write(Kind::Event, b"good entry before").expect("write");
        let victim = spool.write(Kind::Crash, &[7u8; 300]).expect("write");
        good_after = spool.write(Kind::Log, b"good entry after").expect("write");
        victim_file = dir.path().join("ready").join(EntryName::new(Kind::Crash, victim, 348).to_string());
        assert!(victim_file.is_file(), "the crash entry is in ready/ under its name");
    }
    damage(&victim_file);
    let damaged_bytes = fs::read(&victim_file).ok();

    let spool = open(dir.path());
    let mut delivered = Vec::new();
    while let Some(claim) = spool.claim().expect("claim goes past a damaged entry") {
        delivered.push((claim.id(), claim.body().to_vec()));
        claim.ack().expect("ack");
    }
    assert_eq!(
        delivered,
        vec![(good_before, b"good entry before".to_vec()), (good_after, b"good entry after".to_vec())],
        "the good entries are delivered intact, in order"
    );
    let quarantine = dir.path().join("quarantine");
    let file_name = victim_file.file_name().expect("a file name");
    let kept = quarantine.join(file_name);
    assert_eq!(fs::read(&kept).ok(), damaged_bytes, "quarantine keeps the file as it was found");
    let listed = by_state(&spool.view());
    let quarantined = &listed[&EntryState::Quarantined];
    assert_eq!(quarantined.len(), 1, "only the damaged entry is quarantined: {quarantined:?}");
    let mut reason_name = file_name.to_owned();
    reason_name.push(".reason");
    let reason = fs::read_to_string(quarantine.join(reason_name)).expect("a reason file beside it");
    assert_eq!(quarantined[0].reason.as_deref(), reason.lines().next(), "the listing shows the reason");
    reason
}

#[test]
fn truncated_entry_is_quarantined_with_a_length_reason_and_the_others_delivered() {
    let reason = quarantine_reason_after(|path| {
        let bytes = fs::read(path).expect("read the entry");
        fs::write(path, &bytes[..100]).expect("truncate the entry");
    });
    assert!(reason.starts_with("length mismatch: header says 348 bytes, file has 100"), "{reason}");
}

#[test]
fn entry_truncated_inside_its_header_is_quarantined_as_truncated() {
    let reason = quarantine_reason_after(|path| {
        let bytes = fs::read(path).expect("read the entry");
        fs::write(path, &bytes[..20]).expect("truncate the entry");
    });
    assert!(reason.starts_with("truncated: 20 bytes"), "{reason}");
}

#[test]
fn entry_with_a_flipped_bit_is_quarantined_with_a_checksum_reason() {
    let reason = quarantine_reason_after(|path| {
        let mut bytes = fs::read(path).expect("read the entry");
        bytes[200] ^= 0x04;
        fs::write(path, &bytes).expect("flip a bit");
    });
    assert!(reason.starts_with("checksum mismatch"), "{reason}");
}

#[test]
fn garbage_file_with_an_entry_name_is_quarantined_with_a_magic_reason() {
    let reason = quarantine_reason_after(|path| {
        let garbage: Vec<u8> = (0..348u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        fs::write(path, &garbage).expect("replace the entry by garbage");
    });
    assert!(reason.starts_with("bad magic"), "{reason}");
}

#[test]
fn entry_of_an_unknown_format_version_is_quarantined_with_a_version_reason() {
    let reason = quarantine_reason_after(|path| {
        let mut bytes = fs::read(path).expect("read the entry");
        bytes[4..6].copy_from_slice(&2u16.to_le_bytes());
        fs::write(path, &bytes).expect("change the version");
    });
    assert!(reason.starts_with("unknown entry format version 2"), "{reason}");
}

#[test]
fn foreign_file_name_in_ready_is_quarantined_and_the_entries_delivered() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path());
    let first = spool.write(Kind::Crash, b"one").expect("write");
    let second = spool.write(Kind::Event, b"two").expect("write");
    fs::write(dir.path().join("ready").join("notes.txt"), b"not an entry").expect("foreign file");
    fs::write(dir.path().join("ready").join(".hidden"), b"ignored").expect("dot file");
    spool.rescan().expect("rescan");
    let mut delivered = Vec::new();
    while let Some(claim) = spool.claim().expect("claim") {
        delivered.push(claim.id());
        claim.ack().expect("ack");
    }
    assert_eq!(delivered, [first, second]);
    let quarantine = dir.path().join("quarantine");
    assert_eq!(fs::read(quarantine.join("notes.txt")).expect("kept"), b"not an entry");
    let reason = fs::read_to_string(quarantine.join("notes.txt.reason")).expect("reason");
    assert!(reason.starts_with("file name is not an entry name (foreign file)"), "{reason}");
    assert!(dir.path().join("ready/.hidden").exists(), "names starting with a dot are left alone");
}

/// Every path under `root` with its mode and contents (directories have none).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, Option<Vec<u8>>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).expect("stat");
        if meta.is_dir() {
            for item in fs::read_dir(&path).expect("read directory") {
                stack.push(item.expect("directory entry").path());
            }
            out.insert(path, (meta.mode(), None));
        } else {
            out.insert(path.clone(), (meta.mode(), Some(fs::read(&path).expect("read"))));
        }
    }
    out
}

#[test]
fn spool_of_another_format_version_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let spool = open(dir.path());
        spool.write(Kind::Crash, b"from a future version").expect("write");
    }
    fs::write(dir.path().join("VERSION"), "lastword-spool 2\n").expect("pretend a newer format");
    let before = snapshot(dir.path());
    let err = Spool::open(dir.path(), SpoolOptions::default()).expect_err("a version 2 spool is refused");
    assert!(matches!(&err, SpoolError::Version { found, .. } if found == "lastword-spool 2\n"), "{err:?}");
    let err = SpoolView::open(dir.path()).expect_err("a view refuses it too");
    assert!(matches!(err, SpoolError::Version { .. }), "{err:?}");
    assert_eq!(snapshot(dir.path()), before, "nothing in a refused spool changes");
}

#[test]
fn non_empty_directory_without_version_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().expect("temporary directory");
    fs::write(dir.path().join("photo.jpg"), b"someone else's file").expect("write");
    let before = snapshot(dir.path());
    let err = Spool::open(dir.path(), SpoolOptions::default()).expect_err("not a spool");
    assert!(matches!(err, SpoolError::Version { .. }), "{err:?}");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn missing_directory_without_create_is_not_found() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let missing = dir.path().join("nope");
    let err = Spool::open(&missing, SpoolOptions { create: false, ..SpoolOptions::default() })
        .expect_err("no spool there");
    assert!(matches!(&err, SpoolError::NotFound { path } if *path == missing), "{err:?}");
    assert!(!missing.exists(), "nothing was created");
    let err = SpoolView::open(&missing).expect_err("no spool there");
    assert!(matches!(err, SpoolError::NotFound { .. }), "{err:?}");
}

#[test]
fn spool_path_at_or_under_a_regular_file_is_a_typed_error() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("plain");
    fs::write(&file, b"a file").expect("write");
    let err = Spool::open(&file, SpoolOptions::default()).expect_err("a file is not a spool");
    assert!(matches!(&err, SpoolError::NotADirectory { path } if *path == file), "{err:?}");
    for create in [true, false] {
        let under = file.join("spool");
        let err = Spool::open(&under, SpoolOptions { create, ..SpoolOptions::default() })
            .expect_err("nothing can be under a file");
        assert!(matches!(&err, SpoolError::Io { path, .. } if *path == under), "{err:?}");
    }
    assert_eq!(fs::read(&file).expect("read"), b"a file");
}

/// Files (dot files included) in this session's `writing/` directory.
fn leftovers(spool: &Spool) -> Vec<String> {
    all_names(&spool.path().join("writing").join(spool.session_id()))
}

#[test]
fn write_on_a_full_disk_is_no_space_leaves_nothing_and_the_next_write_succeeds() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path());
    let earlier = spool.write(Kind::Crash, b"written before the disk filled").expect("write");
    faults::fail(Op::Write, 0, libc::ENOSPC);
    let err = spool.write(Kind::Crash, &[1u8; 4096]).expect_err("the disk is full");
    faults::clear();
    assert!(matches!(err, SpoolError::NoSpace { .. }), "{err:?}");
    assert_eq!(leftovers(&spool), Vec::<String>::new(), "the temporary file is removed");
    let ready = all_names(&dir.path().join("ready"));
    assert_eq!(ready.len(), 1, "only the earlier entry is in ready/: {ready:?}");
    assert_eq!(spool.view().read(earlier).expect("intact").body, b"written before the disk filled");
    let next = spool.write(Kind::Crash, b"after").expect("the next write succeeds");
    let claim = spool.claim().expect("claim").expect("an entry");
    assert_eq!(claim.id(), earlier);
    claim.ack().expect("ack");
    let claim = spool.claim().expect("claim").expect("an entry");
    assert_eq!((claim.id(), claim.body()), (next, &b"after"[..]));
    claim.ack().expect("ack");
}

#[test]
fn write_whose_fsync_fails_is_an_error_and_never_reaches_ready() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path());
    let earlier = spool.write(Kind::Log, b"before").expect("write");
    faults::fail(Op::Sync, 0, libc::EIO);
    let err = spool.write(Kind::Crash, b"never durable").expect_err("fsync failed");
    faults::clear();
    assert!(
        matches!(&err, SpoolError::Io { source, .. } if source.raw_os_error() == Some(libc::EIO)),
        "{err:?}"
    );
    assert_eq!(leftovers(&spool), Vec::<String>::new(), "the temporary file is removed");
    let ready: Vec<_> = spool.view().list().expect("list").into_iter().map(|i| i.id).collect();
    assert_eq!(ready, [Some(earlier)], "the failed entry is not in the spool");
    let claim = spool.claim().expect("claim").expect("the earlier entry");
    assert_eq!(claim.id(), earlier, "no crash entry sneaks in before the log");
    claim.ack().expect("ack");
    assert!(spool.claim().expect("claim").is_none());
}

#[test]
fn spool_directories_are_0700_and_its_files_0600() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("made-by-the-spool");
    let limits = Limits { max_bytes: 1 << 20, max_entries: 2 };
    let spool = Spool::open(&root, SpoolOptions { limits, ..SpoolOptions::default() }).expect("open");
    for n in 0..3u8 {
        spool.write(Kind::Log, &[n; 10]).expect("write (the third evicts)");
    }
    let claim = spool.claim().expect("claim").expect("an entry");
    claim.quarantine("checking modes").expect("quarantine");
    let _held = spool.claim().expect("claim").expect("an entry");
    let _slot = spool.reserve_signal_slot().expect("slot");
    let mut checked = (0, 0);
    let tree = snapshot(&root);
    for (path, (mode, contents)) in &tree {
        let want = if contents.is_some() { 0o600 } else { 0o700 };
        assert_eq!(mode & 0o7777, want, "{} has mode {:o}", path.display(), mode & 0o7777);
        if contents.is_some() { checked.0 += 1 } else { checked.1 += 1 }
    }
    // VERSION, lock, a claimed entry, slot, quarantined entry and reason, counters: at least 7 files;
    // root, ready, sessions, writing(+sid), claimed(+sid), quarantine, counters: 9 directories.
    assert!(checked.0 >= 7 && checked.1 >= 9, "checked {checked:?} in {tree:#?}");
    assert_eq!(fs::metadata(&root).expect("stat").permissions().mode() & 0o777, 0o700);
}

#[test]
fn spool_owned_by_another_user_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let me = effective_uid();
    let (path, create) = if me == 0 {
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).expect("chown as root");
        (dir.path().to_path_buf(), true)
    } else {
        // Without root, a directory owned by root stands in for another user's; `create: false`
        // keeps the spool from writing there if the check were missing.
        (PathBuf::from("/"), false)
    };
    let before = if me == 0 { Some(snapshot(&path)) } else { None };
    let err = Spool::open(&path, SpoolOptions { create, ..SpoolOptions::default() })
        .expect_err("another user's spool is refused");
    let owner = fs::metadata(&path).expect("stat").uid();
    assert!(
        matches!(&err, SpoolError::ForeignOwner { owner: o, me: m, .. } if *o == owner && *m == me),
        "{err:?}"
    );
    if let Some(before) = before {
        assert_eq!(snapshot(&path), before, "nothing was created in another user's directory");
    }
}

/// The effective uid, read from /proc so that the test needs no unsafe code.
fn effective_uid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|l| l.starts_with("Uid:")).expect("a Uid line");
    line.split_whitespace().nth(2).and_then(|v| v.parse().ok()).expect("the effective uid")
}

#[test]
fn write_whose_directory_fsync_fails_is_an_error_and_not_left_in_ready() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spool = open(dir.path());
    let earlier = spool.write(Kind::Log, b"before").expect("write");
    faults::fail(Op::SyncDir, 0, libc::EIO);
    let err = spool.write(Kind::Crash, b"rename not durable").expect_err("the directory fsync failed");
    faults::clear();
    assert!(
        matches!(&err, SpoolError::Io { source, .. } if source.raw_os_error() == Some(libc::EIO)),
        "{err:?}"
    );
    assert_eq!(leftovers(&spool), Vec::<String>::new(), "no temporary file is left");
    let ids: Vec<_> = spool.view().list().expect("list").into_iter().map(|i| i.id).collect();
    assert_eq!(ids, [Some(earlier)], "an entry whose write failed is not delivered (FORMAT.md, Write)");
    let claim = spool.claim().expect("claim").expect("the earlier entry");
    assert_eq!(claim.id(), earlier);
    claim.ack().expect("ack");
    assert!(spool.claim().expect("claim").is_none());
}

#[test]
fn spool_whose_creator_was_killed_before_writing_version_still_opens() {
    // A creator killed between its temporary VERSION file and the rename leaves only that file (and
    // maybe one of its own pid, if the pid is reused).
    let dir = tempfile::tempdir().expect("temporary directory");
    let leftover = dir.path().join(".VERSION.4000000");
    fs::write(&leftover, "lastword-").expect("a half-written VERSION of a dead creator");
    fs::write(dir.path().join(format!(".VERSION.{}", std::process::id())), "").expect("same pid");
    let spool = Spool::open(dir.path(), SpoolOptions::default()).expect("a half-created spool opens");
    assert_eq!(
        fs::read_to_string(dir.path().join("VERSION")).expect("VERSION"),
        lastword_spool::VERSION_TEXT
    );
    let id = spool.write(Kind::Crash, b"works").expect("write");
    assert_eq!(spool.view().read(id).expect("read").body, b"works");
}

#[test]
fn an_empty_directory_without_create_is_not_a_spool_and_a_creator_says_it_created_one() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let err = Spool::open(dir.path(), SpoolOptions { create: false, ..SpoolOptions::default() })
        .expect_err("nothing there");
    assert!(matches!(&err, SpoolError::EmptyDirectory { path } if path == dir.path()), "{err:?}");
    assert_eq!(err.to_string(), format!("{} is an empty directory, not a spool", dir.path().display()));
    let err = SpoolView::open(dir.path()).expect_err("nothing there");
    assert!(matches!(err, SpoolError::EmptyDirectory { .. }), "{err:?}");
    assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0, "nothing was made");

    let made = Spool::open(dir.path(), SpoolOptions::default()).expect("create");
    assert!(made.created_at_open());
    drop(made);
    assert!(!Spool::open(dir.path(), SpoolOptions::default()).expect("open").created_at_open());
}
