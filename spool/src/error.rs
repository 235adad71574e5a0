//! The spool's typed errors.

use std::io;
use std::path::PathBuf;

use crate::entry::CorruptReason;
use crate::id::EntryId;

/// Everything that can go wrong with a spool. Each variant names the path or id involved.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool directory does not exist (and creating it was not asked for).
    #[error("no spool at {path}")]
    NotFound {
        /// The path that was looked at.
        path: PathBuf,
    },
    /// The spool path is an empty directory: no spool was made there (and creating one was not
    /// asked for).
    #[error("{path} is an empty directory, not a spool")]
    EmptyDirectory {
        /// The path.
        path: PathBuf,
    },
    /// The spool path exists but is not a directory.
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The spool directory belongs to another user.
    #[error("spool {path} is owned by uid {owner}, not by this user (uid {me}); refusing to use it")]
    ForeignOwner {
        /// The spool root.
        path: PathBuf,
        /// The owner's uid.
        owner: u32,
        /// The effective uid of this process.
        me: u32,
    },
    /// The spool is of a format version this code does not know, or has no version file.
    #[error("spool {path} has format {found:?}; this lastword reads \"lastword-spool 1\"")]
    Version {
        /// The spool root.
        path: PathBuf,
        /// What the VERSION file said (or why it could not be read).
        found: String,
    },
    /// The disk is full (ENOSPC or EDQUOT). Nothing was written.
    #[error("no space left on the device for {path}")]
    NoSpace {
        /// The file being written.
        path: PathBuf,
    },
    /// The entry does not fit in the spool's limits even after evicting everything it may evict.
    #[error(
        "spool is full: a {size}-byte entry does not fit in {max_bytes} bytes / {max_entries} entries \
         even after eviction"
    )]
    Full {
        /// The size of the entry that was refused.
        size: u64,
        /// The byte limit.
        max_bytes: u64,
        /// The entry count limit.
        max_entries: u64,
    },
    /// An entry's bytes are damaged. When found while claiming, it has been quarantined.
    #[error("corrupt entry {path}: {reason}")]
    Corrupt {
        /// The entry file.
        path: PathBuf,
        /// What is wrong.
        reason: CorruptReason,
    },
    /// No entry with this id in the spool.
    #[error("no entry with id {id}")]
    NoSuchEntry {
        /// The id looked for.
        id: EntryId,
    },
    /// A signal slot can commit once; this one already did (or is doing so).
    #[error("signal slot already used")]
    SlotUsed,
    /// Any other I/O error, with the operation and the path.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

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
