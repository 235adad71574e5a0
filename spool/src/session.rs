//! Sessions: one per open spool handle, alive while its owner holds an OS lock, and the recovery of
//! dead sessions' claims and writes (FORMAT.md, "Sessions and liveness").

use std::collections::{BTreeMap, BTreeSet};
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
            for dir in [layout.writing.join(&sid), layout.claimed.join(&sid)] {
                fsio::create_dir(&dir).map_err(|e| SpoolError::io("create directory", &dir, e))?;
            }
            return Ok(Self { sid, _lock: file });
        }
        Err(last_error.unwrap_or_else(|| {
            SpoolError::io("start session in", &layout.sessions, io::Error::other("gave up"))
        }))
    }

    /// Gives back what this session still holds and removes its files. Called on a clean close.
    pub fn close(self, layout: &Layout) -> Result<Recovered> {
        let mut report = Recovered::default();
        recover_session(layout, &self.sid, &mut report)?;
        remove_session_files(layout, &self.sid);
        Ok(report)
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
    /// Partial rewrites of a claimed entry removed (the claimed entry was put back as it was).
    pub unfinished_rewrites: u64,
}

/// Finds every session other than `own` whose owner is dead, and gives back what it held.
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
                Err(e) => return Err(SpoolError::io("lock", &lock_path, e.into())),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(SpoolError::io("open", &lock_path, e)),
        };
        recover_session(layout, &sid, &mut report)?;
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

/// Settles a session's unfinished writes, then moves its claims back to ready. The caller holds the
/// session's lock (or the session is its own).
///
/// An unfinished write that has the id of one of the session's claims is a rewrite of that claim
/// ([`crate::Claim::rewrite`]): complete, it replaces the claimed entry; partial, it is dropped and
/// the claimed entry stands.
fn recover_session(layout: &Layout, sid: &str, report: &mut Recovered) -> Result<()> {
    let claimed = layout.claimed.join(sid);
    let mut claims: BTreeMap<EntryId, OsString> = BTreeMap::new();
    // Files under names that do not parse go back too (and are quarantined from ready/).
    let mut others = Vec::new();
    for name in names_in(&claimed)? {
        match name.to_str().and_then(EntryName::parse) {
            Some(entry) => {
                claims.insert(entry.id(), name);
            }
            None => others.push(name),
        }
    }
    let writing = layout.writing.join(sid);
    let mut rescued_any = false;
    match fs::read_dir(&writing) {
        Ok(items) => {
            for item in items {
                let item = item.map_err(|e| SpoolError::io("read directory", &writing, e))?;
                let path = item.path();
                let bytes = match fs::read(&path) {
                    Ok(b) => b,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(SpoolError::io("read", &path, e)),
                };
                if bytes.is_empty() {
                    fsio::unlink(&path).map_err(|e| SpoolError::io("remove", &path, e))?;
                    report.removed_slots += 1;
                    continue;
                }
                let file_name = item.file_name();
                match entry::decode(&bytes, None) {
                    Ok((header, _)) => {
                        if let Some(old) = claims.remove(&header.id) {
                            // The rewrite was complete: it replaces the claimed entry.
                            let old = claimed.join(old);
                            match fsio::unlink(&old) {
                                Ok(()) => {}
                                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                                Err(e) => return Err(SpoolError::io("remove", &old, e)),
                            }
                        }
                        let name = EntryName::new(header.kind, header.id, bytes.len() as u64);
                        let target = layout.ready.join(name.to_string());
                        fsio::rename(&path, &target).map_err(|e| SpoolError::io("rescue", &path, e))?;
                        report.rescued += 1;
                        rescued_any = true;
                    }
                    Err(_)
                        if file_name
                            .to_str()
                            .and_then(EntryName::parse)
                            .is_some_and(|n| claims.contains_key(&n.id())) =>
                    {
                        // An unfinished rewrite of a claim that is still whole.
                        fsio::unlink(&path).map_err(|e| SpoolError::io("remove", &path, e))?;
                        report.unfinished_rewrites += 1;
                    }
                    Err(reason) => {
                        let why = format!("{}: {reason}", CorruptReason::PartialWrite);
                        // A signal slot's file is named `.slot-<id>`, and listings skip names starting
                        // with `.`: quarantine it without the dot, or it would be invisible to ls, stats
                        // and purge.
                        let visible = match file_name.to_string_lossy().trim_start_matches('.') {
                            "" => file_name.clone(),
                            name => OsString::from(name),
                        };
                        if quarantine(layout, &path, &visible, &why)? {
                            report.quarantined += 1;
                        }
                    }
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(SpoolError::io("read directory", &writing, e)),
    }
    for name in claims.into_values().chain(others) {
        match fsio::rename(&claimed.join(&name), &layout.ready.join(&name)) {
            Ok(()) => report.released += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::io("release", claimed.join(&name), e)),
        }
    }
    if rescued_any {
        let dir = fsio::open_dir(&layout.ready).map_err(|e| SpoolError::io("open", &layout.ready, e))?;
        fsio::sync_dir(&dir).map_err(|e| SpoolError::io("fsync", &layout.ready, e))?;
    }
    Ok(())
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
