//! The seam through which the spool's ordinary paths reach the disk.
//!
//! Every file-system call of the write, claim, ack, release, quarantine and recovery paths goes
//! through this module, so that tests (and the `fault-injection` feature) can make a chosen call fail
//! on the calling thread: a full disk in the middle of a write, a failed fsync, a failed rename. The
//! signal-safe path (`signal.rs`) does not come through here: it makes raw system calls only.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Mode of every file the spool creates.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Mode of every directory the spool creates.
pub(crate) const DIR_MODE: u32 = 0o700;

/// The disk operations that a fault can be injected into.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    /// Creating a new file.
    Create,
    /// Writing to a file. An injected fault writes the first half of the buffer, then fails.
    Write,
    /// fsync of a file.
    Sync,
    /// fsync of a directory.
    SyncDir,
    /// Renaming a file.
    Rename,
    /// Deleting a file.
    Unlink,
    /// Reading a whole file (recovery reads what a dead session left).
    Read,
    /// Listing a directory.
    ListDir,
    /// Making a directory that is not there yet (an existing one is found, as the OS finds it before
    /// it looks for space).
    CreateDir,
}

pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    faults::check_at(Op::Create, path)?;
    OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(path)
}

pub(crate) fn write_all(file: &mut File, bytes: &[u8]) -> io::Result<()> {
    if let Err(e) = faults::check(Op::Write) {
        let _ = file.write_all(&bytes[..bytes.len() / 2]);
        return Err(e);
    }
    file.write_all(bytes)
}

pub(crate) fn sync(file: &File) -> io::Result<()> {
    faults::check(Op::Sync)?;
    file.sync_all()
}

pub(crate) fn sync_dir(dir: &File) -> io::Result<()> {
    faults::check(Op::SyncDir)?;
    dir.sync_all()
}

pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    faults::check_at(Op::Rename, from)?;
    fs::rename(from, to)
}

pub(crate) fn unlink(path: &Path) -> io::Result<()> {
    faults::check_at(Op::Unlink, path)?;
    fs::remove_file(path)
}

/// Reads a whole regular file. Anything else is an `InvalidInput` error that says what it is, without
/// blocking or following it: a FIFO (reading one blocks until someone writes), a device, a directory,
/// a symbolic link (an entry name pointing at a file elsewhere is not read and sent).
pub(crate) fn read(path: &Path) -> io::Result<Vec<u8>> {
    faults::check_at(Op::Read, path)?;
    let flags = rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOFOLLOW;
    let mut file = match OpenOptions::new().read(true).custom_flags(flags.bits() as i32).open(path) {
        Ok(file) => file,
        Err(e) => {
            // O_NOFOLLOW refuses a symbolic link with ELOOP, and a socket cannot be opened (ENXIO):
            // say what it is rather than "too many levels of symbolic links".
            use rustix::io::Errno;
            if matches!(Errno::from_io_error(&e), Some(Errno::LOOP | Errno::NXIO))
                && let Ok(meta) = fs::symlink_metadata(path)
                && !meta.is_file()
            {
                return Err(not_a_regular_file(meta.file_type()));
            }
            return Err(e);
        }
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_a_regular_file(meta.file_type()));
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(usize::try_from(meta.len()).unwrap_or(usize::MAX))
        .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn not_a_regular_file(t: fs::FileType) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("not a regular file ({})", type_name(t)))
}

/// Whether an error passes by itself and says nothing about the file: no file descriptor or memory
/// left for a moment, an interrupted call (EMFILE, ENFILE, ENOMEM, ENOBUFS, EINTR, EAGAIN).
pub(crate) fn is_transient(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::OutOfMemory)
        || Errno::from_io_error(e).is_some_and(|errno| {
            matches!(
                errno,
                Errno::MFILE | Errno::NFILE | Errno::NOMEM | Errno::NOBUFS | Errno::INTR | Errno::AGAIN
            )
        })
}

/// What kind of file this is, for reasons and messages.
pub(crate) fn type_name(t: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "an unknown kind of file"
    }
}

/// Creates a directory with mode 0700; an existing directory is fine. Returns whether this call made
/// it (the caller then fsyncs the parent, so that the new directory survives a power loss).
pub(crate) fn create_dir(path: &Path) -> io::Result<bool> {
    #[cfg(any(test, feature = "fault-injection"))]
    if !path.is_dir() {
        faults::check_at(Op::CreateDir, path)?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Renames `from` to `to` unless `to` exists (`renameat2(RENAME_NOREPLACE)`): a directory taken over
/// this way never replaces one that another thread made an instant ago.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    faults::check_at(Op::Rename, from)?;
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE).map_err(io::Error::from)
}

/// Lists a directory.
pub(crate) fn read_dir(path: &Path) -> io::Result<fs::ReadDir> {
    faults::check_at(Op::ListDir, path)?;
    fs::read_dir(path)
}

/// fsyncs the directory at `path` (after an entry in it was made, renamed or removed).
pub(crate) fn sync_dir_at(path: &Path) -> io::Result<()> {
    sync_dir(&open_dir(path)?)
}

/// Opens a directory for fsync.
pub(crate) fn open_dir(path: &Path) -> io::Result<File> {
    File::open(path)
}

#[cfg(any(test, feature = "fault-injection"))]
pub mod faults {
    //! Test-only fault injection: make the next operations of a kind fail on this thread.
    use super::Op;
    use std::cell::RefCell;
    use std::io;
    use std::path::{Path, PathBuf};

    thread_local! {
        static PLAN: RefCell<Vec<(Op, u32, i32)>> = const { RefCell::new(Vec::new()) };
        static AT: RefCell<Vec<(Op, PathBuf, i32)>> = const { RefCell::new(Vec::new()) };
    }

    /// Makes the `(skip + 1)`-th next `op` on this thread fail with the OS error `errno`
    /// (for example `libc::ENOSPC` = 28, `libc::EIO` = 5).
    pub fn fail(op: Op, skip: u32, errno: i32) {
        PLAN.with(|p| p.borrow_mut().push((op, skip, errno)));
    }

    /// Makes every `op` on this thread on exactly `path` fail with `errno`, until [`clear`]: a file
    /// or directory that stays unreadable (EACCES, EIO). Counts no skip and is not used up.
    pub fn fail_at(op: Op, path: &Path, errno: i32) {
        AT.with(|p| p.borrow_mut().push((op, path.to_path_buf(), errno)));
    }

    /// Removes every planned fault of this thread.
    pub fn clear() {
        PLAN.with(|p| p.borrow_mut().clear());
        AT.with(|p| p.borrow_mut().clear());
    }

    /// [`check`], then the faults planned for `path`.
    pub(crate) fn check_at(op: Op, path: &Path) -> io::Result<()> {
        check(op)?;
        AT.with(|p| match p.borrow().iter().find(|(o, at, _)| *o == op && at == path) {
            Some((_, _, errno)) => Err(io::Error::from_raw_os_error(*errno)),
            None => Ok(()),
        })
    }

    pub(crate) fn check(op: Op) -> io::Result<()> {
        PLAN.with(|p| {
            let mut plan = p.borrow_mut();
            let Some(i) = plan.iter().position(|(o, _, _)| *o == op) else { return Ok(()) };
            if plan[i].1 > 0 {
                plan[i].1 -= 1;
                return Ok(());
            }
            let (_, _, errno) = plan.remove(i);
            Err(io::Error::from_raw_os_error(errno))
        })
    }
}

#[cfg(not(any(test, feature = "fault-injection")))]
mod faults {
    use super::Op;
    #[inline(always)]
    pub(crate) fn check(_: Op) -> std::io::Result<()> {
        Ok(())
    }
    #[inline(always)]
    pub(crate) fn check_at(_: Op, _: &std::path::Path) -> std::io::Result<()> {
        Ok(())
    }
}
