//! The spool handle: open, durable write, claim, rescan, limits and eviction.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::claim::Claim;
use crate::counters;
use crate::entry::{self, CorruptReason, EntryName, HEADER_LEN, Header};
use crate::error::{Result, SpoolError};
use crate::fsio::{self, Dir};
use crate::id::{EntryId, now_millis};
use crate::kind::Kind;
use crate::layout::{Layout, names_in};
use crate::quarantine::quarantine;
use crate::query::{EntryState, SpoolView};
use crate::reaper::{self, Reaper};
use crate::session::{OwnDirs, Recovered, Session, SessionDir, recover_dead};
use crate::signal::SignalSlot;

/// Caps on the queue: the entries in `ready/` and `claimed/` of every session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of entry files. Default 64 MiB.
    pub max_bytes: u64,
    /// Number of entries. Default 10,000.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_bytes: 64 << 20, max_entries: 10_000 }
    }
}

/// How to open a spool.
#[derive(Clone, Debug)]
pub struct SpoolOptions {
    /// The caps on the queue. See [`Limits`].
    pub limits: Limits,
    /// Create the spool directory when it does not exist (default true). When false, a missing spool
    /// is [`SpoolError::NotFound`], an empty directory [`SpoolError::EmptyDirectory`].
    pub create: bool,
    /// How old this handle's view of `ready/` may get before a claim rescans the directory, so that
    /// entries written by other processes are seen (default 2 s). [`Spool::rescan`] refreshes at once.
    pub rescan_interval: Duration,
    /// Where [`Claim::ack`] deletes an entry (default [`Deletes::Auto`]).
    pub deletes: Deletes,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            create: true,
            rescan_interval: Duration::from_secs(2),
            deletes: Deletes::Auto,
        }
    }
}

/// Where an ack deletes the entry (FORMAT.md, "Ack"). Either way an acked entry is never sent again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Deletes {
    /// In the background, except on a file system that frees no blocks (tmpfs, ramfs), where an
    /// unlink costs less than the rename that defers it.
    #[default]
    Auto,
    /// In the background: the ack renames the entry to its acked name, and the session's threads
    /// delete it (on ext4 mounted with `discard`, an unlink waits for a synchronous discard).
    Background,
    /// At once: the ack unlinks the entry (format 1.0).
    Inline,
}

/// An open spool: a session that can write entries and claim them.
///
/// Cheap to clone (all clones are one session); `Send + Sync`. The session ends, and gives back what
/// it still holds, when the last clone, claim and signal slot are dropped.
#[derive(Clone, Debug)]
pub struct Spool {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub layout: Layout,
    pub sid: String,
    /// `ready/`, held open: claims, releases and writes name their entries relative to it.
    ready: Dir,
    limits: Limits,
    rescan_interval: Duration,
    index: Mutex<Index>,
    /// This session's `writing/<sid>/` and `claimed/<sid>/`, which may be made only at first use.
    pub own: OwnDirs,
    session: Option<Session>,
    /// Test hook: when set, closing behaves like the death of the process.
    abandoned: AtomicBool,
    /// What the recovery at open did.
    at_open: OnceLock<Recovered>,
    /// Claims that failed their checks and could not be quarantined yet (a full disk), with the
    /// reason: kept in this session's `claimed/`, tried again at every rescan.
    aside: Mutex<Vec<(EntryName, String)>>,
    /// Entries that claims found damaged and moved to `quarantine/` ([`Spool::quarantined_at_claim`]).
    quarantined_at_claim: AtomicU64,
    /// Whether this open made the spool (it had no VERSION yet).
    created: bool,
    /// Deletes this session's acked entries in the background.
    reaper: Reaper,
    /// Whether acks go through the reaper ([`Deletes`]).
    defer_deletes: bool,
}

/// This handle's view of the queue.
#[derive(Debug, Default)]
struct Index {
    ready: BTreeSet<EntryName>,
    ready_bytes: u64,
    claimed_entries: u64,
    claimed_bytes: u64,
    scanned: Option<Instant>,
}

impl Index {
    fn entries(&self) -> u64 {
        self.ready.len() as u64 + self.claimed_entries
    }
    fn bytes(&self) -> u64 {
        self.ready_bytes + self.claimed_bytes
    }
    fn insert_ready(&mut self, name: EntryName) {
        if self.ready.insert(name) {
            self.ready_bytes += name.size();
        }
    }
    fn remove_ready(&mut self, name: &EntryName) -> bool {
        let removed = self.ready.remove(name);
        if removed {
            self.ready_bytes -= name.size();
        }
        removed
    }
    fn fits(&self, size: u64, limits: &Limits) -> bool {
        self.entries() < limits.max_entries && self.bytes().saturating_add(size) <= limits.max_bytes
    }
}

impl Spool {
    /// Opens (or creates) the spool at `path`, starts a session and recovers what dead sessions held.
    ///
    /// What dead sessions left damaged never makes this fail: it is quarantined, or skipped and
    /// counted when even that cannot be done (see [`Spool::recovered_at_open`]). Once the spool exists,
    /// opening needs no free block on the disk: this session's directories are made later if they
    /// cannot be made now (FORMAT.md, "Sessions and liveness"), and a write or claim that cannot make
    /// them fails with [`SpoolError::NoSpace`] naming the directory. Any number of processes and
    /// threads may create the same new spool at once; each of them opens it.
    pub fn open(path: impl AsRef<Path>, options: SpoolOptions) -> Result<Self> {
        let (layout, created) = Layout::open(path.as_ref(), options.create)?;
        if !options.create {
            // Opening for work needs the state directories; a spool made by `create` has them.
            layout.create_state_dirs(false)?;
        }
        let ready = Dir::open(&layout.ready).map_err(|e| SpoolError::io("open", &layout.ready, e))?;
        let (session, own) = Session::start(&layout)?;
        let defer_deletes = match options.deletes {
            Deletes::Background => true,
            Deletes::Inline => false,
            Deletes::Auto => !frees_no_blocks(&ready),
        };
        let inner = Inner {
            own,
            sid: session.sid.clone(),
            layout,
            ready,
            limits: options.limits,
            rescan_interval: options.rescan_interval,
            index: Mutex::new(Index::default()),
            session: Some(session),
            abandoned: AtomicBool::new(false),
            at_open: OnceLock::new(),
            aside: Mutex::new(Vec::new()),
            quarantined_at_claim: AtomicU64::new(0),
            created,
            reaper: Reaper::default(),
            defer_deletes,
        };
        let spool = Self { inner: Arc::new(inner) };
        let recovered = {
            let mut index = spool.inner.lock_index();
            spool.inner.rescan_locked(&mut index)?
        };
        let _ = spool.inner.at_open.set(recovered);
        Ok(spool)
    }

    /// What opening found and settled: dead sessions recovered, entries put back or rescued, files
    /// quarantined, and leftovers skipped because they could be neither recovered nor quarantined
    /// (they stay where they are; the next scan tries again).
    pub fn recovered_at_open(&self) -> Recovered {
        self.inner.at_open.get().cloned().unwrap_or_default()
    }

    /// Whether this open created the spool ([`SpoolOptions::create`], and no spool was there yet; of
    /// several creators at the same moment, each may say so).
    pub fn created_at_open(&self) -> bool {
        self.inner.created
    }

    /// The spool's root directory.
    pub fn path(&self) -> &Path {
        &self.inner.layout.root
    }

    /// This handle's session id.
    pub fn session_id(&self) -> &str {
        &self.inner.sid
    }

    /// The limits this handle enforces.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// A read-only view for listings and stats.
    pub fn view(&self) -> SpoolView {
        SpoolView::from_layout(self.inner.layout.clone())
    }

    /// Writes an entry durably: when this returns `Ok`, the entry survives a crash of the process or
    /// of the machine, and it is in `ready/` for any claimer to take.
    ///
    /// If the spool's limits would be exceeded, older entries of the same or lower priority are
    /// evicted first (logs, then events, then crashes, oldest first; see FORMAT.md). On any error the
    /// entry is not written (a temporary file is removed; a failed fsync is not retried).
    pub fn write(&self, kind: Kind, body: &[u8]) -> Result<EntryId> {
        self.write_flagged(kind, 0, body)
    }

    /// [`Spool::write`] with header flags (see [`crate::FLAG_RAW_SIGNAL`]).
    pub fn write_flagged(&self, kind: Kind, flags: u16, body: &[u8]) -> Result<EntryId> {
        self.write_with_id(kind, flags, EntryId::generate(), body)
    }

    /// [`Spool::write_flagged`] under an id the caller made before (with [`EntryId::generate`]), for
    /// a writer that hands out an entry's id before it writes the entry (an event queued for a
    /// background writer). The id must not have been written before; it is time-ordered among the
    /// ids of this process as it was when it was made, not when it is written.
    pub fn write_with_id(&self, kind: Kind, flags: u16, id: EntryId, body: &[u8]) -> Result<EntryId> {
        let inner = &self.inner;
        let size = (HEADER_LEN + body.len()) as u64;
        self.make_room(kind, size)?;
        let header = Header { kind, flags, id, created_millis: now_millis(), body_len: body.len() as u64 };
        let name = EntryName::new(kind, id, size);
        let file_name = name.to_string();
        let writing = inner.own.ensure(&inner.layout, SessionDir::Writing)?;
        let written = (|| -> io::Result<()> {
            let mut file = fsio::create_new_at(writing, &file_name)?;
            fsio::write_all(&mut file, &header.encode(&[body]))?;
            fsio::write_all(&mut file, body)?;
            fsio::sync(&file)?;
            drop(file);
            fsio::rename_at(writing, &file_name, &inner.ready, &file_name)
        })();
        if let Err(e) = written {
            fsio::remove_quietly_at(writing, &file_name);
            return Err(SpoolError::io("write", writing.join(&file_name), e));
        }
        if let Err(e) = fsio::sync_dir(&inner.ready) {
            // The rename may not survive a crash, and the caller is told the entry was not written:
            // take it out of ready/ again so that it is not delivered behind the caller's back (a
            // claimer that took it in the meantime keeps it; a failed fsync is never retried).
            fsio::remove_quietly_at(&inner.ready, &file_name);
            return Err(SpoolError::io("fsync", &inner.layout.ready, e));
        }
        inner.lock_index().insert_ready(name);
        Ok(id)
    }

    /// Evicts what must go for an entry of `kind` and `size` to fit, or refuses it.
    fn make_room(&self, kind: Kind, size: u64) -> Result<()> {
        let inner = &self.inner;
        let limits = inner.limits;
        let full = || SpoolError::Full { size, max_bytes: limits.max_bytes, max_entries: limits.max_entries };
        if size > limits.max_bytes || limits.max_entries == 0 {
            return Err(full());
        }
        let mut index = inner.lock_index();
        if index.fits(size, &limits) {
            return Ok(());
        }
        inner.rescan_locked(&mut index)?;
        if index.fits(size, &limits) {
            return Ok(());
        }
        // Candidates: lower or equal importance, least important first, oldest first.
        let mut candidates: Vec<EntryName> =
            index.ready.iter().filter(|n| n.priority() >= kind.priority()).copied().collect();
        candidates.sort_by(|a, b| b.priority().cmp(&a.priority()).then(a.id().cmp(&b.id())));
        let evictable_bytes: u64 = candidates.iter().map(EntryName::size).sum();
        let evictable = candidates.len() as u64;
        let after_entries = index.entries() - evictable;
        let after_bytes = index.bytes() - evictable_bytes;
        if after_entries >= limits.max_entries || after_bytes.saturating_add(size) > limits.max_bytes {
            return Err(full());
        }
        let mut evicted = 0;
        for name in candidates {
            if index.fits(size, &limits) {
                break;
            }
            let path = inner.layout.ready.join(name.to_string());
            match fsio::unlink(&path) {
                Ok(()) => evicted += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {} // claimed or gone meanwhile
                Err(e) => {
                    // Count what is already gone before reporting the failure.
                    let _ = counters::add_evicted(&inner.layout, evicted);
                    return Err(SpoolError::io("evict", &path, e));
                }
            }
            index.remove_ready(&name);
        }
        if evicted > 0 {
            counters::add_evicted(&inner.layout, evicted)?;
        }
        if index.fits(size, &limits) { Ok(()) } else { Err(full()) }
    }

    /// Claims the oldest entry of the highest priority in `ready/`, or `None` if there is none.
    ///
    /// The claim is exclusive across threads and processes (an atomic rename). The returned guard
    /// gives the entry back to `ready/` when dropped without [`Claim::ack`]. An entry that fails its
    /// checks is quarantined with the reason and the next one is tried.
    pub fn claim(&self) -> Result<Option<Claim>> {
        let inner = &self.inner;
        loop {
            let taken = {
                let mut index = inner.lock_index();
                let stale = index.scanned.is_none_or(|t| t.elapsed() >= inner.rescan_interval);
                if stale || index.ready.is_empty() {
                    inner.rescan_locked(&mut index)?;
                }
                let Some(name) = index.ready.pop_first() else { return Ok(None) };
                index.ready_bytes -= name.size();
                // Made at the first claim if opening could not make it (a full disk): then the claim
                // fails with that error, and the entry stays ready.
                let claimed_dir = match inner.own.ensure(&inner.layout, SessionDir::Claimed) {
                    Ok(dir) => dir,
                    Err(e) => {
                        index.insert_ready(name);
                        return Err(e);
                    }
                };
                let file_name = name.to_string();
                match fsio::rename_at(&inner.ready, &file_name, claimed_dir, &file_name) {
                    Ok(()) => {
                        index.claimed_entries += 1;
                        index.claimed_bytes += name.size();
                        (name, file_name, claimed_dir)
                    }
                    // Another claimer took it, or it was evicted: it is not ours.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        index.insert_ready(name);
                        return Err(SpoolError::io("claim", inner.layout.ready.join(&file_name), e));
                    }
                }
            };
            let (name, file_name, claimed_dir) = taken;
            // The name gives the size: one read, no fstat (fsio::read_entry_at).
            let bytes = match fsio::read_entry_at(claimed_dir, &file_name, name.size()) {
                Ok(bytes) => bytes,
                Err(e) if fsio::is_transient(&e) => {
                    // Says nothing about the entry (no file descriptor or memory left for a moment):
                    // it goes back, and the caller tries again later.
                    let _ = inner.settle(&name, Settle::Release);
                    return Err(SpoolError::io("read", claimed_dir.join(&file_name), e));
                }
                Err(e) => {
                    // An entry that cannot be read (an I/O error, a directory under an entry name)
                    // would block every entry behind it if it went back to ready/: move it aside
                    // with the reason instead, and go on with the next one.
                    inner.set_aside(&name, format!("cannot read the entry: {e}"))?;
                    continue;
                }
            };
            match entry::decode(&bytes, Some(&name)) {
                Ok((header, _)) => {
                    let mut body = bytes;
                    body.drain(..HEADER_LEN);
                    return Ok(Some(Claim::new(self.inner.clone(), name, header, body)));
                }
                Err(reason) => inner.set_aside(&name, reason.to_string())?,
            }
        }
    }

    /// Re-reads the spool directories: sees entries written by other processes, recovers what dead
    /// sessions held, and quarantines foreign files in `ready/` (one that cannot be moved is left
    /// where it is, and never claimed).
    pub fn rescan(&self) -> Result<()> {
        let mut index = self.inner.lock_index();
        self.inner.rescan_locked(&mut index).map(|_| ())
    }

    /// Recovers the claims and unfinished writes of dead sessions now, and says what it did.
    pub fn recover(&self) -> Result<Recovered> {
        recover_dead(&self.inner.layout, &self.inner.own).map(|r| r.done)
    }

    /// How many entries this session's claims have moved to `quarantine/` since it opened, because
    /// they failed their checks ([`Spool::claim`] goes on with the next one): what an uploader adds
    /// to the entries it quarantined itself.
    pub fn quarantined_at_claim(&self) -> u64 {
        self.inner.quarantined_at_claim.load(Ordering::SeqCst)
    }

    /// Entries in `ready/` as this handle last saw them (see [`Spool::rescan`]).
    pub fn ready_count(&self) -> u64 {
        self.inner.lock_index().ready.len() as u64
    }

    /// The kind of the entry a claim would take next (crashes sort first), as this handle last saw
    /// `ready/`.
    pub fn first_ready_kind(&self) -> Option<Kind> {
        self.inner.lock_index().ready.first().map(EntryName::kind)
    }

    /// Entries in `ready/` and `claimed/` as this handle last saw them: (entries, bytes).
    pub fn queued(&self) -> (u64, u64) {
        let index = self.inner.lock_index();
        (index.entries(), index.bytes())
    }

    /// Deletes, on a person's request, the entries that `what` selects: ready entries and quarantined
    /// files (with their reasons). Entries claimed by a live session are never deleted; they are
    /// counted in [`Purged::skipped_claimed`]. Nothing else in the spool deletes quarantined files.
    pub fn purge(&self, what: &Purge) -> Result<Purged> {
        let inner = &self.inner;
        let mut purged = Purged::default();
        let now = now_millis();
        let selected = |id: Option<EntryId>| match what {
            Purge::Id(want) => id == Some(*want),
            Purge::OlderThan(age) => id.is_some_and(|id| {
                now.saturating_sub(id.millis()) >= u64::try_from(age.as_millis()).unwrap_or(u64::MAX)
            }),
            Purge::Quarantined => false,
        };
        let mut index = inner.lock_index();
        inner.rescan_locked(&mut index)?;
        for item in self.view().list()? {
            let path = item.path();
            let chosen = match item.state {
                EntryState::Ready => selected(item.id),
                EntryState::Quarantined => matches!(what, Purge::Quarantined) || selected(item.id),
                EntryState::Claimed => {
                    if selected(item.id) {
                        purged.skipped_claimed += 1;
                    }
                    false
                }
                EntryState::Writing => false,
            };
            if !chosen {
                continue;
            }
            // A quarantined leftover may be a directory (a dead session's stray one): a person's
            // purge deletes it with what is inside.
            let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
            let removed = if is_dir { std::fs::remove_dir_all(path) } else { fsio::unlink(path) };
            match removed {
                Ok(()) => {
                    purged.entries += 1;
                    purged.bytes += item.size;
                    if item.state == EntryState::Quarantined {
                        let _ = std::fs::remove_file(crate::quarantine::reason_path(&inner.layout, path));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(SpoolError::io("purge", path, e)),
            }
        }
        inner.rescan_locked(&mut index)?;
        Ok(purged)
    }

    /// Adds `n` to the persistent counter `name` (1 to 64 of `a-z`, `0-9`, `_`; not `lock`), durably,
    /// under the counters' lock shared by every process on the spool; returns the new total. The
    /// spool itself keeps `evicted`; others are the callers' (FORMAT.md, `counters/`).
    pub fn add_to_counter(&self, name: &str, n: u64) -> Result<u64> {
        counters::add(&self.inner.layout, name, n)
    }

    /// Reserves what a fatal-signal handler needs to commit one entry without allocating or locking.
    /// See [`SignalSlot`]: on a full disk the slot is reserved without its file, which its commit
    /// makes ([`SignalSlot::is_prepared`]).
    pub fn reserve_signal_slot(&self) -> Result<SignalSlot> {
        SignalSlot::reserve(self.inner.clone())
    }

    /// Test hook: closes this session the way the death of its process would, leaving its claims and
    /// unfinished writes for recovery. Every clone, claim and slot of this session must be dropped
    /// afterwards for the session's lock to go.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn abandon(&self) {
        self.inner.abandoned.store(true, Ordering::SeqCst);
    }

    /// Test hook: acked entries of this session are not deleted before it closes (they stay under
    /// their acked names, FORMAT.md "Ack"), so that a test can look at them, or kill the process
    /// while they are there. Only with [`Deletes::Background`] (or `Auto` where that applies).
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn hold_deletes(&self) {
        self.inner.reaper.hold();
    }
}

impl Inner {
    fn lock_index(&self) -> MutexGuard<'_, Index> {
        // A panic while the index was locked can leave it stale but never unsafe; the next rescan
        // rebuilds it from the disk.
        self.index.lock().unwrap_or_else(|poisoned| {
            let mut index = poisoned.into_inner();
            index.scanned = None;
            index
        })
    }

    pub(crate) fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    fn rescan_locked(&self, index: &mut Index) -> Result<Recovered> {
        let mut recovery = recover_dead(&self.layout, &self.own)?;
        let mut fresh = Index::default();
        for file_name in names_in(&self.layout.ready)? {
            match file_name.to_str().and_then(EntryName::parse) {
                Some(name) => fresh.insert_ready(name),
                None => {
                    let path = self.layout.ready.join(&file_name);
                    let why = CorruptReason::ForeignName.to_string();
                    match quarantine(&self.layout, &path, &file_name, &why) {
                        Ok(true) => recovery.done.quarantined += 1,
                        Ok(false) => {}
                        Err(e) => recovery.done.skip(&path, format!("cannot quarantine it ({why}): {e}")),
                    }
                }
            }
        }
        self.retry_aside();
        for sid in names_in(&self.layout.claimed)? {
            let dir = self.layout.claimed.join(&sid);
            if !dir.is_dir() {
                continue;
            }
            // A session's directory that cannot be listed (mode 000, EIO) is left for a person, as
            // recovery leaves it: its entries are not counted, and nothing else stops.
            let names = match names_in(&dir) {
                Ok(names) => names,
                Err(e) => {
                    recovery.unlisted(&dir, e);
                    continue;
                }
            };
            for file_name in names {
                if let Some(name) = file_name.to_str().and_then(EntryName::parse) {
                    fresh.claimed_entries += 1;
                    fresh.claimed_bytes += name.size();
                }
            }
        }
        fresh.scanned = Some(Instant::now());
        *index = fresh;
        Ok(recovery.done)
    }

    /// Quarantines one of this session's claims that cannot be delivered. If that fails for a
    /// reason that passes by itself (EMFILE, ...), the entry goes back to `ready/` and the error is
    /// returned, for the caller to try again later. If it fails otherwise (a full disk: the reason
    /// cannot be written), the entry stays in this session's `claimed/` directory, out of the way of
    /// the entries behind it, and every rescan tries again; the session's close puts it back.
    fn set_aside(&self, name: &EntryName, reason: String) -> Result<()> {
        match self.settle(name, Settle::Quarantine(&reason)) {
            Ok(()) => {
                self.quarantined_at_claim.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            Err(e) if e.is_transient() => {
                let _ = self.settle(name, Settle::Release);
                Err(e)
            }
            Err(_) => {
                self.lock_aside().push((*name, reason));
                Ok(())
            }
        }
    }

    fn lock_aside(&self) -> MutexGuard<'_, Vec<(EntryName, String)>> {
        self.aside.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tries again to quarantine the claims that [`Inner::set_aside`] had to keep. The caller holds
    /// the index lock, and counts the claims afresh afterwards.
    fn retry_aside(&self) {
        let mut aside = self.lock_aside();
        if aside.is_empty() {
            return;
        }
        let claimed = self.own.path(&self.layout, SessionDir::Claimed);
        aside.retain(|(name, reason)| {
            let file_name = name.to_string();
            let done = quarantine(&self.layout, &claimed.join(&file_name), file_name.as_ref(), reason);
            if matches!(done, Ok(true)) {
                self.quarantined_at_claim.fetch_add(1, Ordering::SeqCst);
            }
            done.is_err()
        });
    }

    /// A claim of this session was rewritten from `old` to `new` (another size).
    pub(crate) fn rewritten(&self, old: EntryName, new: EntryName) {
        let mut index = self.lock_index();
        index.claimed_bytes = index.claimed_bytes.saturating_sub(old.size()) + new.size();
    }

    /// Acks the claimed entry `file_name` of `claimed` (this session's `claimed/<sid>/`): renames it
    /// to its acked name, for the reaper to delete in the background (FORMAT.md, "Ack"). Where that
    /// cannot be done (the rename fails, no reaper thread in this process), the entry is deleted
    /// here, as a format 1.0 ack does.
    fn ack(&self, claimed: &Arc<Dir>, file_name: &str) -> io::Result<()> {
        if !self.defer_deletes {
            return fsio::unlink_at(claimed, file_name);
        }
        let acked = reaper::acked_name(file_name);
        if fsio::rename_at(claimed, file_name, claimed, &acked).is_err() {
            return fsio::unlink_at(claimed, file_name);
        }
        match self.reaper.delete_later((claimed.clone(), acked)) {
            Ok(()) => Ok(()),
            // Acked already: from here on it is never an entry again, whether or not this succeeds.
            Err((dir, acked)) => {
                let _ = fsio::unlink_at(&dir, &acked);
                Ok(())
            }
        }
    }

    /// Moves one of this session's claims: acked (deleted), released (back to ready) or quarantined.
    pub(crate) fn settle(&self, name: &EntryName, how: Settle<'_>) -> Result<()> {
        let file_name = name.to_string();
        let claimed = self.own.existing(&self.layout, SessionDir::Claimed)?;
        let result = match how {
            Settle::Ack => {
                self.ack(claimed, &file_name).map_err(|e| SpoolError::io("ack", claimed.join(&file_name), e))
            }
            Settle::Release => fsio::rename_at(claimed, &file_name, &self.ready, &file_name)
                .map_err(|e| SpoolError::io("release", claimed.join(&file_name), e)),
            Settle::Quarantine(reason) => {
                quarantine(&self.layout, &claimed.join(&file_name), file_name.as_ref(), reason).map(|_| ())
            }
        };
        if result.is_ok() {
            let mut index = self.lock_index();
            index.claimed_entries = index.claimed_entries.saturating_sub(1);
            index.claimed_bytes = index.claimed_bytes.saturating_sub(name.size());
            if matches!(how, Settle::Release) {
                index.insert_ready(*name);
            }
        }
        result
    }
}

/// Whether the file system of `dir` keeps files in memory only (tmpfs, ramfs): an unlink there frees
/// no blocks and issues no discard. Unknown is no.
fn frees_no_blocks(dir: &Dir) -> bool {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    const RAMFS_MAGIC: u64 = 0x8584_58f6;
    #[allow(clippy::useless_conversion, reason = "f_type is i64 on some targets, u32 or i32 on others")]
    rustix::fs::fstatfs(dir).is_ok_and(|s| matches!(i64::from(s.f_type) as u64, TMPFS_MAGIC | RAMFS_MAGIC))
}

/// What [`Spool::purge`] deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purge {
    /// The entry with this id (ready or quarantined).
    Id(EntryId),
    /// Ready and quarantined entries made at least this long ago.
    OlderThan(Duration),
    /// Every quarantined file.
    Quarantined,
}

/// What [`Spool::purge`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    /// Files deleted.
    pub entries: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Selected entries left alone because a live session holds them.
    pub skipped_claimed: u64,
}

/// What becomes of a claim.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Settle<'a> {
    Ack,
    Release,
    Quarantine(&'a str),
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.abandoned() {
            self.reaper.abandon();
        }
        if let Some(session) = self.session.take()
            && !self.abandoned()
        {
            // The acked entries still being deleted: a bounded wait. What is left is deleted by the
            // next recovery (never sent again), and the thread goes on meanwhile.
            let reaped = self.reaper.finish(reaper::CLOSE_BOUND);
            // Nothing can be reported from a drop; whatever could not be settled here is recovered by
            // the next session that scans this spool, as if this process had died.
            session.close(&self.layout, reaped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_deletes_selected_ready_and_quarantined_files_but_never_live_claims() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
        let a = spool.write(Kind::Log, b"{}").unwrap();
        let b = spool.write(Kind::Log, b"{}").unwrap();
        let held = spool.claim().unwrap().unwrap();
        assert_eq!(held.id(), a);
        let q = spool.write(Kind::Event, b"{}").unwrap();
        let claim_q = spool.claim().unwrap().unwrap();
        assert_eq!(claim_q.id(), q);
        claim_q.quarantine("test").unwrap();

        let purged = spool.purge(&Purge::Id(a)).unwrap();
        assert_eq!((purged.entries, purged.skipped_claimed), (0, 1), "a live claim is not purged");
        let purged = spool.purge(&Purge::Quarantined).unwrap();
        assert_eq!(purged.entries, 1);
        assert!(
            std::fs::read_dir(dir.path().join("quarantine")).unwrap().next().is_none(),
            "reason removed too"
        );
        let purged = spool.purge(&Purge::OlderThan(Duration::ZERO)).unwrap();
        assert_eq!(purged.entries, 1, "b is ready and older than zero");
        let ids: Vec<_> = spool.view().list().unwrap().into_iter().filter_map(|l| l.id).collect();
        assert_eq!(ids, vec![a], "only the claimed entry is left");
        drop(held);
        let _ = b;
    }

    #[test]
    fn an_unreadable_entry_is_quarantined_and_does_not_block_the_ones_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
        // A directory under the name of an entry that sorts first.
        let blocker = EntryName::new(Kind::Crash, EntryId::from_parts(1, 1), 48);
        std::fs::create_dir(dir.path().join("ready").join(blocker.to_string())).unwrap();
        let good = spool.write(Kind::Log, b"{}").unwrap();
        spool.rescan().unwrap();
        let claim = spool.claim().unwrap().expect("the good entry");
        assert_eq!(claim.id(), good);
        let quarantined = spool.view().list().unwrap();
        let q = quarantined.iter().find(|l| l.state == crate::EntryState::Quarantined).unwrap();
        assert!(q.reason.as_deref().unwrap().starts_with("cannot read the entry"), "{q:?}");
        assert_eq!(spool.quarantined_at_claim(), 1, "counted for the uploader's summary");
        claim.ack().unwrap();
    }

    #[test]
    fn a_damaged_eviction_counter_is_kept_aside_not_reset_silently() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits { max_bytes: 1 << 20, max_entries: 1 };
        let spool = Spool::open(dir.path(), SpoolOptions { limits, ..SpoolOptions::default() }).unwrap();
        std::fs::write(dir.path().join("counters/evicted"), "garbage").unwrap();
        assert!(spool.view().evicted().is_err(), "a damaged counter is an error, not zero");
        spool.write(Kind::Log, b"{}").unwrap();
        spool.write(Kind::Log, b"{}").unwrap(); // evicts the first
        assert_eq!(spool.view().evicted().unwrap(), 1);
        let aside: Vec<_> = std::fs::read_dir(dir.path().join("counters"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("evicted.damaged-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read_to_string(dir.path().join("counters").join(&aside[0])).unwrap(), "garbage");
    }
}
