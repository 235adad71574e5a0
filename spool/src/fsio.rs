//! The seam through which the spool's ordinary paths reach the disk.
//!
//! Every file-system call of the write, claim, ack, release, quarantine and recovery paths goes
//! through this module, so that tests (and the `fault-injection` feature) can make a chosen call fail
//! on the calling thread: a full disk in the middle of a write, a failed fsync, a failed rename. The
//! signal-safe path (`signal.rs`) does not come through here: it makes raw system calls only.
//!
//! The calls of the claim, ack, release and write paths are made relative to a directory held open
//! ([`Dir`]: `openat`, `renameat`, `unlinkat` with a bare entry name), so that the kernel does not walk
//! the spool's whole path again for every entry.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, CWD, Mode, OFlags};

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
    /// Reading a whole file (a claim reads its entry; recovery reads what a dead session left).
    Read,
    /// Listing a directory.
    ListDir,
    /// Making a directory that is not there yet (an existing one is found, as the OS finds it before
    /// it looks for space).
    CreateDir,
}

/// A directory held open, and its path (for messages, and for faults planned by path).
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the directory at `path` (`O_DIRECTORY`: anything else is an error).
    pub fn open(path: &Path) -> io::Result<Self> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(CWD, path, flags, Mode::empty())?;
        Ok(Self { fd, path: path.to_path_buf() })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Creates the new file `name` in `dir` (`O_EXCL`).
pub(crate) fn create_new_at(dir: &Dir, name: &str) -> io::Result<File> {
    faults::check_in(Op::Create, dir, name)?;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    Ok(File::from(rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(FILE_MODE))?))
}

/// Renames `from_name` in `from` to `to_name` in `to`.
pub(crate) fn rename_at(from: &Dir, from_name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
    faults::check_in(Op::Rename, from, from_name)?;
    rustix::fs::renameat(from, from_name, to, to_name).map_err(io::Error::from)
}

/// Deletes the file `name` in `dir`.
pub(crate) fn unlink_at(dir: &Dir, name: &str) -> io::Result<()> {
    faults::check_in(Op::Unlink, dir, name)?;
    rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(io::Error::from)
}

/// Deletes the file `name` in `dir`, outside the fault seam: the clean-up of a failed step, whose
/// failure changes nothing (as `std::fs::remove_file` after a failed write).
pub(crate) fn remove_quietly_at(dir: &Dir, name: &str) {
    let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
}

/// Entries up to this size are read with one `read` into a buffer of the size their name gives.
const ONE_READ_MAX: usize = 1 << 20;

/// Reads the entry `name` of `dir` whose name says it is `size` bytes long, as [`read`] does (a
/// regular file only, never a FIFO, device, directory or link), with fewer calls: its name gives the
/// size, so no `fstat` comes before the read, and a read that returns exactly `size` bytes of the
/// `size + 1` asked for has met the end of a regular file (a read returns less than asked of a
/// regular file only at its end). Whatever else happens (a shorter or longer file, an error: a
/// directory, a FIFO) is looked at with `fstat` and read as [`read`] reads, so the entry's checks see
/// the file as it is and a reason says what it is.
pub(crate) fn read_entry_at(dir: &Dir, name: &str, size: u64) -> io::Result<Vec<u8>> {
    use rustix::io::Errno;
    faults::check_in(Op::Read, dir, name)?;
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC;
    let mut file = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(e) => {
            // As in `read`: a symbolic link (ELOOP) or a socket (ENXIO) is said for what it is.
            if matches!(e, Errno::LOOP | Errno::NXIO)
                && let Ok(meta) = fs::symlink_metadata(dir.join(name))
                && !meta.is_file()
            {
                return Err(not_a_regular_file(meta.file_type()));
            }
            return Err(e.into());
        }
    };
    let mut bytes = Vec::new();
    if let Some(len) = usize::try_from(size).ok().filter(|len| *len <= ONE_READ_MAX) {
        bytes.try_reserve_exact(len + 1).map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
        bytes.resize(len + 1, 0);
        match file.read(&mut bytes) {
            Ok(n) if n == len => {
                bytes.truncate(len);
                return Ok(bytes);
            }
            Ok(n) => bytes.truncate(n),
            Err(_) => bytes.clear(),
        }
    }
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_a_regular_file(meta.file_type()));
    }
    let rest = usize::try_from(meta.len()).unwrap_or(usize::MAX).saturating_sub(bytes.len());
    bytes.try_reserve_exact(rest).map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
    // What the first read took is kept: the file is read on from where it stopped.
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
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

pub(crate) fn sync_dir(dir: impl AsFd) -> io::Result<()> {
    faults::check(Op::SyncDir)?;
    rustix::fs::fsync(dir).map_err(io::Error::from)
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
    use rustix::fs::{RenameFlags, renameat_with};
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

    /// [`check_at`] for `name` in `dir` (its path is made only when a fault is planned by path).
    pub(crate) fn check_in(op: Op, dir: &super::Dir, name: &str) -> io::Result<()> {
        check(op)?;
        if AT.with(|p| p.borrow().is_empty()) {
            return Ok(());
        }
        check_at(op, &dir.join(name))
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
    #[inline(always)]
    pub(crate) fn check_in(_: Op, _: &super::Dir, _: &str) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_read_whole_whatever_size_its_name_gives() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open(tmp.path()).unwrap();
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(tmp.path().join("e"), &bytes).unwrap();
        // Exactly (one read), shorter and longer than the file, and a size too large to read at once:
        // the checks must see the file as it is.
        for size in [5000, 0, 48, 4999, 5001, 1 << 40] {
            assert_eq!(read_entry_at(&dir, "e", size).unwrap(), bytes, "size {size}");
        }
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        let e = read_entry_at(&dir, "d", 5000).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a directory)");
        std::os::unix::fs::symlink(tmp.path().join("e"), tmp.path().join("l")).unwrap();
        let e = read_entry_at(&dir, "l", 5000).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a symbolic link)");
    }
}
