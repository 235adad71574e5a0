//! The spool's typed errors.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::entry::CorruptReason;
use crate::id::EntryId;

/// Everything that can go wrong with a spool. Each variant names the path or id involved.
///
/// The message of [`SpoolError::Io`] includes the OS error's, which is therefore not also its
/// `source()`: a chain printed whole (`{:#}` of anyhow) says it once.
#[derive(Debug)]
pub enum SpoolError {
    /// The spool directory does not exist (and creating it was not asked for).
    NotFound {
        /// The path that was looked at.
        path: PathBuf,
    },
    /// The spool path is an empty directory: no spool was made there (and creating one was not
    /// asked for).
    EmptyDirectory {
        /// The path.
        path: PathBuf,
    },
    /// The spool path exists but is not a directory.
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The spool directory belongs to another user.
    ForeignOwner {
        /// The spool root.
        path: PathBuf,
        /// The owner's uid.
        owner: u32,
        /// The effective uid of this process.
        me: u32,
    },
    /// The spool is of a format version this code does not know, or has no version file.
    Version {
        /// The spool root.
        path: PathBuf,
        /// What the VERSION file said (or why it could not be read).
        found: String,
    },
    /// The disk is full (ENOSPC or EDQUOT). Nothing was written.
    NoSpace {
        /// The file being written.
        path: PathBuf,
    },
    /// The entry does not fit in the spool's limits even after evicting everything it may evict.
    Full {
        /// The size of the entry that was refused.
        size: u64,
        /// The byte limit.
        max_bytes: u64,
        /// The entry count limit.
        max_entries: u64,
    },
    /// An entry's bytes are damaged. When found while claiming, it has been quarantined.
    Corrupt {
        /// The entry file.
        path: PathBuf,
        /// What is wrong.
        reason: CorruptReason,
    },
    /// No entry with this id in the spool.
    NoSuchEntry {
        /// The id looked for.
        id: EntryId,
    },
    /// A signal slot can commit once; this one already did (or is doing so).
    SlotUsed,
    /// Any other I/O error, with the operation and the path.
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpoolError::NotFound { path } => write!(f, "no spool at {}", path.display()),
            SpoolError::EmptyDirectory { path } => {
                write!(f, "{} is an empty directory, not a spool", path.display())
            }
            SpoolError::NotADirectory { path } => write!(f, "{} is not a directory", path.display()),
            SpoolError::ForeignOwner { path, owner, me } => write!(
                f,
                "spool {} is owned by uid {owner}, not by this user (uid {me}); refusing to use it",
                path.display()
            ),
            SpoolError::Version { path, found } => {
                write!(
                    f,
                    "spool {} has format {found:?}; this lastword reads \"lastword-spool 1\"",
                    path.display()
                )
            }
            SpoolError::NoSpace { path } => write!(f, "no space left on the device for {}", path.display()),
            SpoolError::Full { size, max_bytes, max_entries } => write!(
                f,
                "spool is full: a {size}-byte entry does not fit in {max_bytes} bytes / {max_entries} entries \
                 even after eviction"
            ),
            SpoolError::Corrupt { path, reason } => write!(f, "corrupt entry {}: {reason}", path.display()),
            SpoolError::NoSuchEntry { id } => write!(f, "no entry with id {id}"),
            SpoolError::SlotUsed => f.write_str("signal slot already used"),
            SpoolError::Io { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for SpoolError {}

impl SpoolError {
    /// Wraps an I/O error, turning "disk full" into [`SpoolError::NoSpace`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if is_no_space(&source) {
            return SpoolError::NoSpace { path };
        }
        SpoolError::Io { op, path, source }
    }
}

impl SpoolError {
    /// Whether the error passes by itself (no file descriptor or memory left for a moment, an
    /// interrupted call: EMFILE, ENFILE, ENOMEM, ENOBUFS, EINTR, EAGAIN): the operation can be tried
    /// again as it is, and nothing was decided about the entry.
    pub fn is_transient(&self) -> bool {
        matches!(self, SpoolError::Io { source, .. } if crate::fsio::is_transient(source))
    }
}

/// ENOSPC or EDQUOT.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded
}

/// The spool's result type.
pub type Result<T, E = SpoolError> = std::result::Result<T, E>;
