//! Signal slots: one entry committed from a fatal-signal handler with async-signal-safe calls only
//! (FORMAT.md, "Signal slots").

use std::ffi::{CStr, CString};
use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, CWD, Mode, OFlags, fsync, openat, renameat, unlinkat};
use rustix::io::{Errno, pwrite};
use rustix::process::{Pid, getpid};
use rustix::time::{ClockId, clock_gettime};

use crate::entry::{EntryName, HEADER_LEN, Header, NAME_MAX};
use crate::error::{Result, SpoolError};
use crate::id::{EntryId, ID_TEXT_LEN, fresh_random, signal_safe_random};
use crate::kind::Kind;
use crate::spool::Inner;

/// Everything needed to commit one entry from a signal handler, made in advance by
/// [`crate::Spool::reserve_signal_slot`]: an open empty file in this session's `writing/` directory,
/// its name, open descriptors of the two directories, and the random half of the entry's id.
///
/// [`SignalSlot::commit`] is async-signal-safe. Everything else (reserving, dropping) is not.
/// The slot keeps its session open while it exists.
///
/// After `fork()` the child has a copy of the slot: the same open file and the same random half of
/// the id. A commit in a process other than the one that reserved the slot therefore never touches
/// that file: it creates a slot file of its own (`openat` with `O_CREAT|O_EXCL`) under a fresh
/// random id (`getrandom`), both async-signal-safe, so that parent and child each commit their own
/// entry and no two entries share an id.
pub struct SignalSlot {
    _inner: Arc<Inner>,
    file: OwnedFd,
    writing_dir: OwnedFd,
    ready_dir: OwnedFd,
    slot_name: CString,
    random: u128,
    /// The process that reserved the slot.
    pid: Pid,
    used: AtomicBool,
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

impl SignalSlot {
    pub(crate) fn reserve(inner: Arc<Inner>) -> Result<Self> {
        let writing_path = inner.layout.writing.join(&inner.sid);
        let open_dir = |path: &std::path::Path| {
            openat(CWD, path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| SpoolError::io("open", path, e.into()))
        };
        let writing_dir = open_dir(&writing_path)?;
        let ready_dir = open_dir(&inner.layout.ready)?;
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
        // Warm up what commit uses, so that the handler does not run any first-use initialisation:
        // the CRC32C implementation picks its CPU path on first use.
        let _ =
            Header { kind: Kind::Crash, flags: 0, id: EntryId::from_u128(0), created_millis: 0, body_len: 0 }
                .encode(&[b"warm"]);
        let _ = clock_gettime(ClockId::Realtime);
        Ok(Self {
            _inner: inner,
            file,
            writing_dir,
            ready_dir,
            slot_name,
            random: fresh_random(),
            pid: getpid(),
            used: AtomicBool::new(false),
        })
    }

    /// Commits one entry made of `body` (the concatenation of the parts) into `ready/`, durably.
    ///
    /// **Async-signal-safe.** It calls only `getpid`, `clock_gettime`, `pwrite`, `fsync` and
    /// `renameat` (raw system calls through `rustix`), and in a forked child also `getrandom`,
    /// `openat` and `close`; it computes the CRC32C in place, allocates nothing and takes no lock. It
    /// may be called from any thread, once per process: a second call returns [`SlotError::Used`].
    pub fn commit(&self, kind: Kind, flags: u16, body: &[&[u8]]) -> Result<EntryId, SlotError> {
        if self.used.swap(true, Ordering::SeqCst) {
            return Err(SlotError::Used);
        }
        let now = clock_gettime(ClockId::Realtime);
        let millis = u64::try_from(now.tv_sec).unwrap_or(0) * 1000
            + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000_000;
        if getpid() == self.pid {
            return self.commit_into(
                &self.file,
                self.slot_name.as_c_str(),
                millis,
                self.random,
                kind,
                flags,
                body,
            );
        }
        // A forked child: a slot file and an id of its own.
        let random = signal_safe_random();
        let mut name = [0u8; 6 + ID_TEXT_LEN + 1];
        name[..6].copy_from_slice(b".slot-");
        let mut text = [0u8; ID_TEXT_LEN];
        EntryId::from_parts(millis, random).encode(&mut text);
        name[6..6 + ID_TEXT_LEN].copy_from_slice(&text);
        let name = CStr::from_bytes_until_nul(&name).map_err(|_| SlotError::Sys("name", Errno::INVAL))?;
        let file = openat(
            &self.writing_dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| SlotError::Sys("openat", e))?;
        self.commit_into(&file, name, millis, random, kind, flags, body)
    }

    /// Writes the entry into `file` (the slot file `slot_name` in `writing/<sid>/`), then renames it
    /// into `ready/`. Async-signal-safe (see [`SignalSlot::commit`]).
    #[allow(clippy::too_many_arguments)]
    fn commit_into(
        &self,
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
        renameat(&self.writing_dir, slot_name, &self.ready_dir, target)
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
        if !self.is_used() && getpid() == self.pid {
            let _ = unlinkat(&self.writing_dir, self.slot_name.as_c_str(), AtFlags::empty());
        }
    }
}

impl fmt::Debug for SignalSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalSlot").field("slot", &self.slot_name).field("used", &self.is_used()).finish()
    }
}
