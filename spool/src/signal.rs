//! Signal slots: one entry committed from a fatal-signal handler with async-signal-safe calls only
//! (FORMAT.md, "Signal slots").

use std::ffi::{CStr, CString};
use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, CWD, Mode, OFlags, fsync, openat, renameat, unlinkat};
use rustix::io::{Errno, pwrite};
use rustix::time::{ClockId, clock_gettime};

use crate::entry::{EntryName, HEADER_LEN, Header, NAME_MAX};
use crate::error::{Result, SpoolError};
use crate::id::{EntryId, fresh_random};
use crate::kind::Kind;
use crate::spool::Inner;

/// Everything needed to commit one entry from a signal handler, made in advance by
/// [`crate::Spool::reserve_signal_slot`]: an open empty file in this session's `writing/` directory,
/// its name, open descriptors of the two directories, and the random half of the entry's id.
///
/// [`SignalSlot::commit`] is async-signal-safe. Everything else (reserving, dropping) is not.
/// The slot keeps its session open while it exists.
pub struct SignalSlot {
    _inner: Arc<Inner>,
    file: OwnedFd,
    writing_dir: OwnedFd,
    ready_dir: OwnedFd,
    slot_name: CString,
    random: u128,
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
            used: AtomicBool::new(false),
        })
    }

    /// Commits one entry made of `body` (the concatenation of the parts) into `ready/`, durably.
    ///
    /// **Async-signal-safe.** It calls only `clock_gettime`, `pwrite`, `fsync` and `renameat` (raw
    /// system calls through `rustix`), computes the CRC32C in place, allocates nothing and takes no
    /// lock. It may be called from any thread, once: a second call returns [`SlotError::Used`].
    pub fn commit(&self, kind: Kind, flags: u16, body: &[&[u8]]) -> Result<EntryId, SlotError> {
        if self.used.swap(true, Ordering::SeqCst) {
            return Err(SlotError::Used);
        }
        let now = clock_gettime(ClockId::Realtime);
        let millis = u64::try_from(now.tv_sec).unwrap_or(0) * 1000
            + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000_000;
        let id = EntryId::from_parts(millis, self.random);
        let body_len: u64 = body.iter().map(|p| p.len() as u64).sum();
        let header = Header { kind, flags, id, created_millis: millis, body_len };
        let mut offset = 0u64;
        write_at(&self.file, &header.encode(body), &mut offset)?;
        for part in body {
            write_at(&self.file, part, &mut offset)?;
        }
        fsync(&self.file).map_err(|e| SlotError::Sys("fsync", e))?;
        let name = EntryName::new(kind, id, HEADER_LEN as u64 + body_len);
        let mut buf = [0u8; NAME_MAX + 1];
        let mut text = [0u8; NAME_MAX];
        let n = name.write_to(&mut text);
        buf[..n].copy_from_slice(&text[..n]);
        let target = CStr::from_bytes_until_nul(&buf).map_err(|_| SlotError::Sys("name", Errno::INVAL))?;
        renameat(&self.writing_dir, self.slot_name.as_c_str(), &self.ready_dir, target)
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
        if !self.is_used() {
            let _ = unlinkat(&self.writing_dir, self.slot_name.as_c_str(), AtFlags::empty());
        }
    }
}

impl fmt::Debug for SignalSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalSlot").field("slot", &self.slot_name).field("used", &self.is_used()).finish()
    }
}
