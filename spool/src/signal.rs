//! Signal slots: one entry committed from a fatal-signal handler with async-signal-safe calls only
//! (FORMAT.md, "Signal slots").

use std::ffi::{CStr, CString};
use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, CWD, Mode, OFlags, fsync, mkdirat, openat, renameat, unlinkat};
use rustix::io::{Errno, pwrite};
use rustix::process::{Pid, getpid};
use rustix::time::{ClockId, clock_gettime};

use crate::entry::{EntryName, HEADER_LEN, Header, NAME_MAX};
use crate::error::{Result, SpoolError};
use crate::id::{EntryId, ID_TEXT_LEN, fresh_random, signal_safe_random};
use crate::kind::Kind;
use crate::session::SessionDir;
use crate::spool::Inner;

/// Everything needed to commit one entry from a signal handler, made in advance by
/// [`crate::Spool::reserve_signal_slot`]: an open empty file in this session's `writing/` directory,
/// its name, open descriptors of the directories, and the random half of the entry's id.
///
/// [`SignalSlot::commit`] is async-signal-safe. Everything else (reserving, dropping) is not.
/// The slot keeps its session open while it exists.
///
/// When the session's `writing/<sid>/` directory or the slot file cannot be made at reserve time (a
/// full disk: on ext4 a new directory needs a free block), the slot is reserved without them
/// ([`SignalSlot::is_prepared`] is false) and its commit makes them, with `mkdirat` and `openat`
/// (both async-signal-safe), by then perhaps with space again. Only a spool whose `writing/` or
/// `ready/` cannot be opened makes reserving fail.
///
/// After `fork()` the child has a copy of the slot: the same open file and the same random half of
/// the id. A commit in a process other than the one that reserved the slot therefore never touches
/// that file: it creates a slot file of its own (`openat` with `O_CREAT|O_EXCL`) under a fresh
/// random id (`getrandom`), both async-signal-safe, so that parent and child each commit their own
/// entry and no two entries share an id.
pub struct SignalSlot {
    _inner: Arc<Inner>,
    /// The file and directory made at reserve time, when they could be.
    prepared: Option<Prepared>,
    /// `writing/`, and the name of this session's directory in it, for a commit without `prepared`.
    writing_parent: OwnedFd,
    sid: CString,
    ready_dir: OwnedFd,
    random: u128,
    /// The process that reserved the slot.
    pid: Pid,
    used: AtomicBool,
}

/// The open slot file `writing/<sid>/<slot_name>` and its directory.
struct Prepared {
    writing_dir: OwnedFd,
    file: OwnedFd,
    slot_name: CString,
}

/// Why a signal slot could not commit. Carries no allocation, so that it can be made in a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// The slot already committed (or another thread is committing it).
    Used,
    /// A system call failed; which one, and its errno.
    Sys(&'static str, Errno),
}

impl fmt::Display for SlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotError::Used => f.write_str("signal slot already used"),
            SlotError::Sys(call, errno) => write!(f, "{call} failed: {errno}"),
        }
    }
}

impl std::error::Error for SlotError {}

fn open_dir_at(dir: impl rustix::fd::AsFd, path: &std::path::Path) -> Result<OwnedFd> {
    openat(dir, path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| SpoolError::io("open", path, e.into()))
}

impl SignalSlot {
    pub(crate) fn reserve(inner: Arc<Inner>) -> Result<Self> {
        let writing_parent = open_dir_at(CWD, &inner.layout.writing)?;
        let ready_dir = open_dir_at(CWD, &inner.layout.ready)?;
        let sid = CString::new(inner.sid.as_str()).map_err(|e| {
            SpoolError::io(
                "name",
                &inner.layout.writing,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            )
        })?;
        let prepared = Self::prepare(&inner).ok();
        // Warm up what commit uses, so that the handler does not run any first-use initialisation:
        // the CRC32C implementation picks its CPU path on first use.
        let _ =
            Header { kind: Kind::Crash, flags: 0, id: EntryId::from_u128(0), created_millis: 0, body_len: 0 }
                .encode(&[b"warm"]);
        let _ = clock_gettime(ClockId::Realtime);
        Ok(Self {
            _inner: inner,
            prepared,
            writing_parent,
            sid,
            ready_dir,
            random: fresh_random(),
            pid: getpid(),
            used: AtomicBool::new(false),
        })
    }

    /// Makes this session's `writing/<sid>/` if needed, and the empty slot file in it.
    fn prepare(inner: &Inner) -> Result<Prepared> {
        let writing_path = inner.own.ensure(&inner.layout, SessionDir::Writing)?.path().to_path_buf();
        // The slot holds a descriptor of its own, which its commit uses.
        let writing_dir = open_dir_at(CWD, &writing_path)?;
        let slot_name = format!(".slot-{}", EntryId::generate());
        let file = openat(
            &writing_dir,
            slot_name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| SpoolError::io("create", writing_path.join(&slot_name), e.into()))?;
        let slot_name = CString::new(slot_name).map_err(|e| {
            SpoolError::io("name", &writing_path, std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        })?;
        Ok(Prepared { writing_dir, file, slot_name })
    }

    /// Whether the slot's file was made at reserve time. When not (the disk was full), the commit
    /// makes it, and this session's `writing/` directory if it has none yet.
    pub fn is_prepared(&self) -> bool {
        self.prepared.is_some()
    }

    /// Commits one entry made of `body` (the concatenation of the parts) into `ready/`, durably.
    ///
    /// **Async-signal-safe.** It calls only `getpid`, `clock_gettime`, `pwrite`, `fsync` and
    /// `renameat` (raw system calls through `rustix`); in a forked child, or for a slot that could not
    /// be prepared at reserve time, also `getrandom` (a child only), `mkdirat`, `openat` and `close`.
    /// It computes the CRC32C in place, allocates nothing and takes no lock. It may be called from any
    /// thread, once per process: a second call returns [`SlotError::Used`].
    pub fn commit(&self, kind: Kind, flags: u16, body: &[&[u8]]) -> Result<EntryId, SlotError> {
        if self.used.swap(true, Ordering::SeqCst) {
            return Err(SlotError::Used);
        }
        let now = clock_gettime(ClockId::Realtime);
        let millis = u64::try_from(now.tv_sec).unwrap_or(0) * 1000
            + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000_000;
        let reserver = getpid() == self.pid;
        if reserver && let Some(p) = &self.prepared {
            return self.commit_into(
                &p.writing_dir,
                &p.file,
                p.slot_name.as_c_str(),
                millis,
                self.random,
                kind,
                flags,
                body,
            );
        }
        // A forked child (a slot file and an id of its own), or a slot made without its file: make
        // the file now, and this session's directory if it is not there yet.
        let random = if reserver { self.random } else { signal_safe_random() };
        let made_dir;
        let writing_dir = match &self.prepared {
            Some(p) => &p.writing_dir,
            None => {
                match mkdirat(&self.writing_parent, self.sid.as_c_str(), Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(SlotError::Sys("mkdirat", e)),
                }
                made_dir = openat(
                    &self.writing_parent,
                    self.sid.as_c_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| SlotError::Sys("openat", e))?;
                &made_dir
            }
        };
        let mut name = [0u8; 6 + ID_TEXT_LEN + 1];
        name[..6].copy_from_slice(b".slot-");
        let mut text = [0u8; ID_TEXT_LEN];
        EntryId::from_parts(millis, random).encode(&mut text);
        name[6..6 + ID_TEXT_LEN].copy_from_slice(&text);
        let name = CStr::from_bytes_until_nul(&name).map_err(|_| SlotError::Sys("name", Errno::INVAL))?;
        let file = openat(
            writing_dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| SlotError::Sys("openat", e))?;
        self.commit_into(writing_dir, &file, name, millis, random, kind, flags, body)
    }

    /// Writes the entry into `file` (the slot file `slot_name` in `writing_dir`, this session's
    /// `writing/<sid>/`), then renames it into `ready/`. Async-signal-safe (see [`SignalSlot::commit`]).
    #[allow(clippy::too_many_arguments)]
    fn commit_into(
        &self,
        writing_dir: &OwnedFd,
        file: &OwnedFd,
        slot_name: &CStr,
        millis: u64,
        random: u128,
        kind: Kind,
        flags: u16,
        body: &[&[u8]],
    ) -> Result<EntryId, SlotError> {
        let id = EntryId::from_parts(millis, random);
        let body_len: u64 = body.iter().map(|p| p.len() as u64).sum();
        let header = Header { kind, flags, id, created_millis: millis, body_len };
        let mut offset = 0u64;
        write_at(file, &header.encode(body), &mut offset)?;
        for part in body {
            write_at(file, part, &mut offset)?;
        }
        fsync(file).map_err(|e| SlotError::Sys("fsync", e))?;
        let name = EntryName::new(kind, id, HEADER_LEN as u64 + body_len);
        let mut buf = [0u8; NAME_MAX + 1];
        let mut text = [0u8; NAME_MAX];
        let n = name.write_to(&mut text);
        buf[..n].copy_from_slice(&text[..n]);
        let target = CStr::from_bytes_until_nul(&buf).map_err(|_| SlotError::Sys("name", Errno::INVAL))?;
        renameat(writing_dir, slot_name, &self.ready_dir, target)
            .map_err(|e| SlotError::Sys("renameat", e))?;
        fsync(&self.ready_dir).map_err(|e| SlotError::Sys("fsync directory", e))?;
        Ok(id)
    }

    /// Whether the slot has been committed (or a commit has started).
    pub fn is_used(&self) -> bool {
        self.used.load(Ordering::SeqCst)
    }
}

/// `pwrite` until all of `bytes` is written. Async-signal-safe.
fn write_at(fd: &OwnedFd, mut bytes: &[u8], offset: &mut u64) -> Result<(), SlotError> {
    while !bytes.is_empty() {
        match pwrite(fd, bytes, *offset) {
            Ok(0) => return Err(SlotError::Sys("pwrite", Errno::IO)),
            Ok(n) => {
                bytes = &bytes[n..];
                *offset += n as u64;
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(SlotError::Sys("pwrite", e)),
        }
    }
    Ok(())
}

impl Drop for SignalSlot {
    fn drop(&mut self) {
        // Only the process that reserved the slot removes its file (a forked child's copy of the slot
        // is the parent's file).
        if !self.is_used()
            && getpid() == self.pid
            && let Some(p) = &self.prepared
        {
            let _ = unlinkat(&p.writing_dir, p.slot_name.as_c_str(), AtFlags::empty());
        }
    }
}

impl fmt::Debug for SignalSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalSlot")
            .field("slot", &self.prepared.as_ref().map(|p| &p.slot_name))
            .field("used", &self.is_used())
            .finish()
    }
}
