//! Sessions: one per open spool handle, alive while its owner holds an OS lock, and the recovery of
//! dead sessions' claims and writes (FORMAT.md, "Sessions and liveness").

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rustix::fs::{FlockOperation, flock};

use crate::entry::{self, CorruptReason, EntryName};
use crate::error::{Result, SpoolError};
use crate::fsio;
use crate::id::EntryId;
use crate::layout::{Layout, names_in};
use crate::quarantine::quarantine;

/// A `.new` lock file older than this is a leftover of a session that died while starting.
const STALE_NEW_LOCK: Duration = Duration::from_secs(60);

/// The live session of this handle. Holding `lock` is what makes it alive.
#[derive(Debug)]
pub(crate) struct Session {
    pub sid: String,
    _lock: File,
}

impl Session {
    /// Starts a session: creates and locks its lock file, then its directories.
    pub fn start(layout: &Layout) -> Result<Self> {
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
            // fsynced into their parents: an entry renamed into `claimed/<sid>/` must not vanish with
            // its directory after a power loss (claims themselves are not fsynced, FORMAT.md).
            for (parent, dir) in
                [(&layout.writing, layout.writing.join(&sid)), (&layout.claimed, layout.claimed.join(&sid))]
            {
                fsio::create_dir(&dir).map_err(|e| SpoolError::io("create directory", &dir, e))?;
                fsio::sync_dir_at(parent).map_err(|e| SpoolError::io("fsync", parent, e))?;
            }
            return Ok(Self { sid, _lock: file });
        }
        Err(last_error.unwrap_or_else(|| {
            SpoolError::io("start session in", &layout.sessions, io::Error::other("gave up"))
        }))
    }

    /// Gives back what this session still holds and removes its files. Called on a clean close.
    pub fn close(self, layout: &Layout) -> Recovered {
        let mut report = Recovered::default();
        recover_session(layout, &self.sid, &mut report);
        remove_session_files(layout, &self.sid);
        report
    }
}

/// What a recovery did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// Files that could be neither recovered nor quarantined (a full disk, an I/O error): left where
    /// they are, for the next recovery to try again. Never a reason for opening the spool to fail.
    pub skipped: u64,
}

impl Recovered {
    /// Adds what another recovery did.
    pub fn add(&mut self, other: Recovered) {
        self.sessions += other.sessions;
        self.released += other.released;
        self.rescued += other.rescued;
        self.quarantined += other.quarantined;
        self.removed_slots += other.removed_slots;
        self.skipped += other.skipped;
    }

    /// Whether anything needed a person's attention: something quarantined or skipped.
    pub fn damaged(&self) -> bool {
        self.quarantined > 0 || self.skipped > 0
    }
}

/// Finds every session other than `own` whose owner is dead, and gives back what it held.
///
/// What one dead session left never makes this fail: a file that can be neither recovered nor
/// quarantined is counted in [`Recovered::skipped`] and left for the next recovery. Only a spool
/// whose state directories cannot be listed is an error.
pub(crate) fn recover_dead(layout: &Layout, own: &str) -> Result<Recovered> {
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
    sids.remove(own);
    let mut report = Recovered::default();
    for sid in sids {
        let lock_path = layout.session_lock(&sid);
        let lock = match File::open(&lock_path) {
            Ok(f) => match flock(&f, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => Some(f),
                Err(rustix::io::Errno::WOULDBLOCK) => continue, // alive
                Err(_) => {
                    // Liveness unknown: leave the session alone, as if it were alive.
                    report.skipped += 1;
                    continue;
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(_) => {
                report.skipped += 1;
                continue;
            }
        };
        recover_session(layout, &sid, &mut report);
        remove_session_files(layout, &sid);
        report.sessions += 1;
        drop(lock);
    }
    remove_stale_new_locks(layout);
    Ok(report)
}

fn layout_dir_is_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Moves a session's claims back to ready and settles its unfinished writes. The caller holds the
/// session's lock (or the session is its own). What cannot be moved is counted as skipped and stays.
fn recover_session(layout: &Layout, sid: &str, report: &mut Recovered) {
    let claimed = layout.claimed.join(sid);
    match names_in(&claimed) {
        Ok(names) => {
            for name in names {
                match fsio::rename(&claimed.join(&name), &layout.ready.join(&name)) {
                    Ok(()) => report.released += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(_) => report.skipped += 1,
                }
            }
        }
        Err(_) => report.skipped += 1,
    }
    let writing = layout.writing.join(sid);
    let items = match fs::read_dir(&writing) {
        Ok(items) => items,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(_) => {
            report.skipped += 1;
            return;
        }
    };
    let mut rescued_any = false;
    for item in items {
        let Ok(item) = item else {
            report.skipped += 1;
            break;
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
            Err(_) => report.skipped += 1,
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
            Err(e) => {
                set_aside(format!("left by a dead session: cannot tell what it is: {e}"), report);
                continue;
            }
        }
        let bytes = match fsio::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                set_aside(format!("left by a dead session: cannot read it: {e}"), report);
                continue;
            }
        };
        if bytes.is_empty() {
            match fsio::unlink(&path) {
                Ok(()) => report.removed_slots += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => report.skipped += 1,
            }
            continue;
        }
        match entry::decode(&bytes, None) {
            Ok((header, _)) => {
                let name = EntryName::new(header.kind, header.id, bytes.len() as u64);
                let target = layout.ready.join(name.to_string());
                match fsio::rename(&path, &target) {
                    Ok(()) => {
                        report.rescued += 1;
                        rescued_any = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(_) => report.skipped += 1,
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

/// Removes a settled session's directories and lock file. Failures leave a harmless empty directory
/// that the next recovery tries again.
fn remove_session_files(layout: &Layout, sid: &str) {
    let _ = fs::remove_dir(layout.writing.join(sid));
    let _ = fs::remove_dir(layout.claimed.join(sid));
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
