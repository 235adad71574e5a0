//! Sessions: one per open spool handle, alive while its owner holds an OS lock, and the recovery of
//! dead sessions' claims and writes (FORMAT.md, "Sessions and liveness").

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use rustix::fs::{FlockOperation, flock};

use crate::entry::{self, CorruptReason, EntryName};
use crate::error::{Result, SpoolError};
use crate::fsio::{self, Dir};
use crate::id::EntryId;
use crate::layout::{Layout, names_in};
use crate::quarantine::quarantine;
use crate::reaper;

/// A `.new` lock file older than this is a leftover of a session that died while starting.
const STALE_NEW_LOCK: Duration = Duration::from_secs(60);

/// The live session of this handle. Holding `lock` is what makes it alive.
#[derive(Debug)]
pub(crate) struct Session {
    pub sid: String,
    _lock: File,
}

/// One of the two directories of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessionDir {
    /// `writing/<sid>/`: entries being written, signal slots.
    Writing,
    /// `claimed/<sid>/`: entries claimed.
    Claimed,
}

impl SessionDir {
    pub fn parent(self, layout: &Layout) -> &Path {
        match self {
            SessionDir::Writing => &layout.writing,
            SessionDir::Claimed => &layout.claimed,
        }
    }
}

/// This session's `writing/<sid>/` and `claimed/<sid>/`, and whether each is there yet.
///
/// Opening a spool never needs a free block for them (on ext4 a new directory needs one): each is made
/// when the session starts if it can be; else taken over from a dead session whose directory recovery
/// emptied (a rename, which needs no block); else made at its first use (a write or a signal slot
/// for `writing/`, a claim for `claimed/`), where failing is that use's error.
///
/// Each is held open from its first use ([`Dir`]), so that the entries' calls are relative to it.
#[derive(Debug)]
pub(crate) struct OwnDirs {
    sid: String,
    writing: AtomicBool,
    claimed: AtomicBool,
    writing_dir: OnceLock<Arc<Dir>>,
    claimed_dir: OnceLock<Arc<Dir>>,
}

impl OwnDirs {
    fn flag(&self, which: SessionDir) -> &AtomicBool {
        match which {
            SessionDir::Writing => &self.writing,
            SessionDir::Claimed => &self.claimed,
        }
    }

    fn open_slot(&self, which: SessionDir) -> &OnceLock<Arc<Dir>> {
        match which {
            SessionDir::Writing => &self.writing_dir,
            SessionDir::Claimed => &self.claimed_dir,
        }
    }

    /// Where the directory is (or will be).
    pub fn path(&self, layout: &Layout, which: SessionDir) -> PathBuf {
        which.parent(layout).join(&self.sid)
    }

    /// Whether the directory is known to be there.
    pub fn has(&self, which: SessionDir) -> bool {
        self.flag(which).load(Ordering::Acquire)
    }

    /// The directory, made now (and fsynced into its parent) if it is not there yet, held open.
    pub fn ensure(&self, layout: &Layout, which: SessionDir) -> Result<&Arc<Dir>> {
        if let Some(dir) = self.open_slot(which).get() {
            return Ok(dir);
        }
        let path = self.path(layout, which);
        if !self.has(which) {
            // fsynced into its parent: an entry renamed into `claimed/<sid>/` must not vanish with
            // its directory after a power loss (claims themselves are not fsynced, FORMAT.md).
            let parent = which.parent(layout);
            fsio::create_dir(&path).map_err(|e| SpoolError::io("create directory", &path, e))?;
            fsio::sync_dir_at(parent).map_err(|e| SpoolError::io("fsync", parent, e))?;
            self.flag(which).store(true, Ordering::Release);
        }
        self.opened(which, &path)
    }

    /// The directory held open, if it is there: never made here (a claim's settle, which needs the
    /// directory its claim is in).
    pub fn existing(&self, layout: &Layout, which: SessionDir) -> Result<&Arc<Dir>> {
        if let Some(dir) = self.open_slot(which).get() {
            return Ok(dir);
        }
        self.opened(which, &self.path(layout, which))
    }

    fn opened(&self, which: SessionDir, path: &Path) -> Result<&Arc<Dir>> {
        let dir = Dir::open(path).map_err(|e| SpoolError::io("open", path, e))?;
        // Two threads may open it at once: one of the two is kept.
        Ok(self.open_slot(which).get_or_init(|| Arc::new(dir)))
    }

    /// Takes over `dead`, an emptied directory of a dead session, as this session's own, if this
    /// session has none yet. Returns whether it did.
    fn take_over(&self, layout: &Layout, which: SessionDir, dead: &Path) -> bool {
        if self.has(which) || !is_empty_dir(dead) {
            return false;
        }
        if fsio::rename_noreplace(dead, &self.path(layout, which)).is_err() {
            return false;
        }
        // Durable like a directory made here; if the fsync fails, a power loss may give the
        // directory back its old name, a dead session's, that the next recovery settles.
        let _ = fsio::sync_dir_at(which.parent(layout));
        self.flag(which).store(true, Ordering::Release);
        true
    }
}

impl Session {
    /// Starts a session: creates and locks its lock file, then makes its directories if it can (see
    /// [`OwnDirs`]: a full disk does not stop a session from starting).
    pub fn start(layout: &Layout) -> Result<(Self, OwnDirs)> {
        let mut last_error = None;
        for _ in 0..3 {
            let sid = EntryId::generate().to_string();
            let new = layout.sessions.join(format!(".{sid}.new"));
            let file = fsio::create_new(&new).map_err(|e| SpoolError::io("create", &new, e))?;
            flock(&file, FlockOperation::LockExclusive)
                .map_err(|e| SpoolError::io("lock", &new, e.into()))?;
            let lock_path = layout.session_lock(&sid);
            if let Err(e) = fsio::rename(&new, &lock_path) {
                let _ = fs::remove_file(&new);
                last_error = Some(SpoolError::io("rename", &new, e));
                continue;
            }
            let dirs = OwnDirs {
                sid: sid.clone(),
                writing: AtomicBool::new(false),
                claimed: AtomicBool::new(false),
                writing_dir: OnceLock::new(),
                claimed_dir: OnceLock::new(),
            };
            for which in [SessionDir::Writing, SessionDir::Claimed] {
                // A directory that cannot be made (a full disk) is taken over from a dead session by
                // recovery, or made at first use. One that was made but not fsynced is an I/O error.
                let path = dirs.path(layout, which);
                if fsio::create_dir(&path).is_ok() {
                    let parent = which.parent(layout);
                    fsio::sync_dir_at(parent).map_err(|e| SpoolError::io("fsync", parent, e))?;
                    dirs.flag(which).store(true, Ordering::Release);
                }
            }
            return Ok((Self { sid, _lock: file }, dirs));
        }
        Err(last_error.unwrap_or_else(|| {
            SpoolError::io("start session in", &layout.sessions, io::Error::other("gave up"))
        }))
    }

    /// Gives back what this session still holds and removes its files. Called on a clean close.
    /// `reaped`: the reaper deleted what it was given; if not (it is still at work), the acked files
    /// left are not deleted here but by the next recovery, which then removes `claimed/<sid>/`.
    pub fn close(self, layout: &Layout, reaped: bool) -> Recovered {
        let mut report = Recovery::default();
        if reaped {
            delete_acked(layout, &self.sid, &mut report);
        }
        recover_session(layout, &self.sid, &mut report);
        remove_session_files(layout, &self.sid, None);
        report.done
    }
}

fn is_empty_dir(path: &Path) -> bool {
    fsio::read_dir(path).is_ok_and(|mut items| items.next().is_none())
}

/// What a recovery did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Dead sessions cleaned up.
    pub sessions: u64,
    /// Claimed entries put back into `ready/`.
    pub released: u64,
    /// Complete entries found in a dead writer's `writing/` directory and moved into `ready/`.
    pub rescued: u64,
    /// Partial writes moved to quarantine.
    pub quarantined: u64,
    /// Empty (unused) signal slots removed.
    pub removed_slots: u64,
    /// Files and directories that could be neither recovered nor quarantined (a full disk, an I/O
    /// error, a directory that cannot be listed): left where they are, for the next recovery to try
    /// again. Never a reason for opening the spool to fail.
    pub skipped: u64,
    /// The first of the skipped ones, and why, for a person to look at.
    pub first_skipped: Option<Skipped>,
    /// Partial rewrites of a claimed entry removed (the claimed entry was put back as it was).
    pub unfinished_rewrites: u64,
    /// Entries a session had acked and not deleted yet when it ended, deleted (never sent again).
    pub acked: u64,
}

/// A file or directory that recovery left where it was, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Where it is.
    pub path: PathBuf,
    /// What went wrong with it.
    pub error: String,
}

impl Recovered {
    /// Whether anything needed a person's attention: something quarantined or skipped.
    pub fn damaged(&self) -> bool {
        self.quarantined > 0 || self.skipped > 0
    }

    /// Counts one more skipped file, keeping the first one's path and error.
    pub(crate) fn skip(&mut self, path: &Path, error: impl std::fmt::Display) {
        self.skipped += 1;
        if self.first_skipped.is_none() {
            self.first_skipped = Some(Skipped { path: path.to_path_buf(), error: error.to_string() });
        }
    }
}

/// A recovery under way: what it did, and the directories it could not list (so that a later count
/// over the same directories does not count them twice).
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    pub done: Recovered,
    pub unlisted: BTreeSet<PathBuf>,
}

impl Recovery {
    /// Counts a directory that cannot be listed as skipped, once.
    pub fn unlisted(&mut self, dir: &Path, error: impl std::fmt::Display) {
        if self.unlisted.insert(dir.to_path_buf()) {
            self.done.skip(dir, error);
        }
    }
}

/// Finds every session other than `own` whose owner is dead, and gives back what it held.
///
/// What one dead session left never makes this fail: a file that can be neither recovered nor
/// quarantined, or a session directory that cannot be listed, is counted in [`Recovered::skipped`]
/// and left for the next recovery. Only a spool whose state directories (`claimed/`, `writing/`,
/// `sessions/`) cannot be listed is an error.
///
/// A dead session's directory that recovery emptied becomes this session's own (`own`) when this
/// session has none yet: see [`OwnDirs`].
pub(crate) fn recover_dead(layout: &Layout, own: &OwnDirs) -> Result<Recovery> {
    let mut sids = BTreeSet::new();
    for dir in [&layout.claimed, &layout.writing] {
        for name in names_in(dir)? {
            if let Some(name) = name.to_str()
                && layout_dir_is_dir(&dir.join(name))
            {
                sids.insert(name.to_owned());
            }
        }
    }
    for name in names_in(&layout.sessions)? {
        if let Some(sid) = name.to_str().and_then(|n| n.strip_suffix(".lock")) {
            sids.insert(sid.to_owned());
        }
    }
    sids.remove(&own.sid);
    let mut report = Recovery::default();
    for sid in sids {
        let lock_path = layout.session_lock(&sid);
        let lock = match File::open(&lock_path) {
            Ok(f) => match flock(&f, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => Some(f),
                Err(rustix::io::Errno::WOULDBLOCK) => continue, // alive
                Err(e) => {
                    // Liveness unknown: leave the session alone, as if it were alive.
                    report.done.skip(&lock_path, format!("cannot lock it: {}", io::Error::from(e)));
                    continue;
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                report.done.skip(&lock_path, format!("cannot open it: {e}"));
                continue;
            }
        };
        delete_acked(layout, &sid, &mut report);
        recover_session(layout, &sid, &mut report);
        remove_session_files(layout, &sid, Some(own));
        report.done.sessions += 1;
        drop(lock);
    }
    remove_stale_new_locks(layout);
    Ok(report)
}

/// Deletes the entries session `sid` acked and had not deleted yet (`claimed/<sid>/.acked.<name>`,
/// FORMAT.md, "Ack"): delivered, they are never put back. One that cannot be deleted is counted as
/// skipped and stays, for the next recovery; it is not an entry to any reader meanwhile.
fn delete_acked(layout: &Layout, sid: &str, recovery: &mut Recovery) {
    let claimed = layout.claimed.join(sid);
    let items = match fsio::read_dir(&claimed) {
        Ok(items) => items,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            recovery.unlisted(&claimed, e);
            return;
        }
    };
    for item in items {
        let Ok(item) = item else {
            // Listed again (and counted) by recover_session.
            break;
        };
        if !reaper::is_acked(item.file_name().as_encoded_bytes()) {
            continue;
        }
        let path = item.path();
        match fsio::unlink(&path) {
            Ok(()) => recovery.done.acked += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => recovery.done.skip(&path, format!("cannot delete an acked entry: {e}")),
        }
    }
}

fn layout_dir_is_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Settles a session's unfinished writes, then moves its claims back to ready. The caller holds the
/// session's lock (or the session is its own). What cannot be moved is counted as skipped and stays.
///
/// An unfinished write that has the id of one of the session's claims is a rewrite of that claim
/// ([`crate::Claim::rewrite`]): complete, it replaces the claimed entry; partial, it is dropped and
/// the claimed entry stands.
fn recover_session(layout: &Layout, sid: &str, recovery: &mut Recovery) {
    let claimed = layout.claimed.join(sid);
    let mut claims: BTreeMap<EntryId, OsString> = BTreeMap::new();
    // Files under names that do not parse go back too (and are quarantined from ready/).
    let mut others = Vec::new();
    match names_in(&claimed) {
        Ok(names) => {
            for name in names {
                match name.to_str().and_then(EntryName::parse) {
                    Some(entry) => {
                        claims.insert(entry.id(), name);
                    }
                    None => others.push(name),
                }
            }
        }
        Err(e) => recovery.unlisted(&claimed, e),
    }
    settle_writes(layout, sid, &claimed, &mut claims, recovery);
    for name in claims.into_values().chain(others) {
        let path = claimed.join(&name);
        match fsio::rename(&path, &layout.ready.join(&name)) {
            Ok(()) => recovery.done.released += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => recovery.done.skip(&path, format!("cannot put it back into ready/: {e}")),
        }
    }
}

/// The `writing/<sid>/` part of [`recover_session`]: complete entries to ready/ (a complete rewrite
/// replacing its claim, which leaves `claims`), empty slots removed, unfinished rewrites of a claim
/// dropped, anything else quarantined, or skipped when it cannot be.
fn settle_writes(
    layout: &Layout,
    sid: &str,
    claimed: &Path,
    claims: &mut BTreeMap<EntryId, OsString>,
    recovery: &mut Recovery,
) {
    let writing = layout.writing.join(sid);
    let items = match fsio::read_dir(&writing) {
        Ok(items) => items,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            recovery.unlisted(&writing, format!("cannot list it: {e}"));
            return;
        }
    };
    let report = &mut recovery.done;
    let mut rescued_any = false;
    for item in items {
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                report.skip(&writing, format!("cannot list it: {e}"));
                break;
            }
        };
        let path = item.path();
        let file_name = item.file_name();
        // A signal slot's file is named `.slot-<id>`, and listings skip names starting with `.`:
        // quarantine it without the dot, or it would be invisible to ls, stats and purge.
        let visible = match file_name.to_string_lossy().trim_start_matches('.') {
            "" => file_name.clone(),
            name => OsString::from(name),
        };
        let set_aside = |why: String, report: &mut Recovered| match quarantine(layout, &path, &visible, &why)
        {
            Ok(true) => report.quarantined += 1,
            Ok(false) => {} // gone meanwhile
            Err(e) => report.skip(&path, format!("cannot quarantine it ({why}): {e}")),
        };
        // Only regular files are read: a directory cannot be, and a FIFO would block for ever.
        match item.file_type() {
            Ok(t) if t.is_file() => {}
            Ok(t) => {
                set_aside(
                    format!("left by a dead session: not a regular file ({})", fsio::type_name(t)),
                    report,
                );
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) if fsio::is_transient(&e) => {
                report.skip(&path, format!("cannot tell what it is, for now: {e}"));
                continue;
            }
            Err(e) => {
                set_aside(format!("left by a dead session: cannot tell what it is: {e}"), report);
                continue;
            }
        }
        let bytes = match fsio::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            // Says nothing about the file: the next recovery reads it again.
            Err(e) if fsio::is_transient(&e) => {
                report.skip(&path, format!("cannot read it, for now: {e}"));
                continue;
            }
            Err(e) => {
                set_aside(format!("left by a dead session: cannot read it: {e}"), report);
                continue;
            }
        };
        if bytes.is_empty() {
            match fsio::unlink(&path) {
                Ok(()) => report.removed_slots += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => report.skip(&path, format!("cannot remove an empty slot: {e}")),
            }
            continue;
        }
        match entry::decode(&bytes, None) {
            Ok((header, _)) => {
                if let Some(old) = claims.get(&header.id) {
                    // The rewrite was complete: it replaces the claimed entry.
                    let old = claimed.join(old);
                    match fsio::unlink(&old) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            // Both versions stay for the next recovery, which tries again.
                            report.skip(&old, format!("cannot remove the version a rewrite replaced: {e}"));
                            continue;
                        }
                    }
                    claims.remove(&header.id);
                }
                let name = EntryName::new(header.kind, header.id, bytes.len() as u64);
                let target = layout.ready.join(name.to_string());
                match fsio::rename(&path, &target) {
                    Ok(()) => {
                        report.rescued += 1;
                        rescued_any = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => report.skip(&path, format!("cannot move a complete entry to ready/: {e}")),
                }
            }
            Err(_)
                if file_name
                    .to_str()
                    .and_then(EntryName::parse)
                    .is_some_and(|n| claims.contains_key(&n.id())) =>
            {
                // An unfinished rewrite of a claim that is still whole.
                match fsio::unlink(&path) {
                    Ok(()) => report.unfinished_rewrites += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => report.skip(&path, format!("cannot remove an unfinished rewrite: {e}")),
                }
            }
            Err(reason) => set_aside(format!("{}: {reason}", CorruptReason::PartialWrite), report),
        }
    }
    if rescued_any {
        // A failure leaves the rescued entries where a crash may put them back into writing/; the
        // next recovery rescues them again (at least once, FORMAT.md).
        let _ = fsio::sync_dir_at(&layout.ready);
    }
}

/// Removes a settled session's directories and lock file, or gives an emptied directory to `heir`
/// (the live session that recovered this dead one) when it has none of its own yet. Failures leave a
/// harmless empty directory that the next recovery tries again.
fn remove_session_files(layout: &Layout, sid: &str, heir: Option<&OwnDirs>) {
    for which in [SessionDir::Writing, SessionDir::Claimed] {
        let dir = which.parent(layout).join(sid);
        if heir.is_some_and(|heir| heir.take_over(layout, which, &dir)) {
            continue;
        }
        let _ = fs::remove_dir(dir);
    }
    let _ = fs::remove_file(layout.session_lock(sid));
}

fn remove_stale_new_locks(layout: &Layout) {
    let Ok(items) = fs::read_dir(&layout.sessions) else { return };
    for item in items.flatten() {
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with('.') && name.ends_with(".new")) {
            continue;
        }
        let old = item
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() > STALE_NEW_LOCK);
        if old
            && let Ok(f) = File::open(item.path())
            && flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok()
        {
            let _ = fs::remove_file(item.path());
        }
    }
}
