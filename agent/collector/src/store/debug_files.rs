//! What the stores keep of debug files ([`DebugFileStore`]), beside the [`Store`](super::Store) of
//! reports: a `debug_files` row per build id and kind (both backends), and, in the PostgreSQL store,
//! the file's bytes themselves in 1 MiB chunks (`debug_file_chunks`), because collectors that share a
//! database share no disk. The SQLite store's files are on disk beside it, `DIR/debug-files/`, kept by
//! [`DebugFiles`](crate::debug_files::DebugFiles). The SQL is in each backend's `debug_files.rs`;
//! both formats are in agent/collector/STORE.md.

use std::future::Future;
use std::path::PathBuf;

use crate::debug_files::FileKind;

use super::StoreError;

/// The size of one chunk of a file kept in the PostgreSQL store: no value larger than this is ever
/// held whole, written or read.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// One debug file the store knows of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugFileRow {
    /// The GNU build id, lowercase hex.
    pub build_id: String,
    /// Debuginfo or executable.
    pub kind: FileKind,
    /// The file's name when it was uploaded (its last path component), for people.
    pub file_name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
    /// When it was stored (ms since the Unix epoch).
    pub uploaded_ms: u64,
}

/// The debug files of a store.
pub trait DebugFileStore: Send + Sync + 'static {
    /// Records the verified file at `file` as `row` (replacing a row of the same build id and kind).
    /// The SQLite store records the row only (the file itself is kept on disk by its caller); the
    /// PostgreSQL store keeps its bytes too, in the same transaction, read from `file` one chunk at a
    /// time.
    fn put_debug_file(
        &self,
        row: DebugFileRow,
        file: PathBuf,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The row of `build_id` and `kind`, if the store has one.
    fn debug_file(
        &self,
        build_id: String,
        kind: FileKind,
    ) -> impl Future<Output = Result<Option<DebugFileRow>, StoreError>> + Send;

    /// The files the store knows of, the most recently uploaded first, at most `limit`.
    fn debug_files(&self, limit: u32) -> impl Future<Output = Result<Vec<DebugFileRow>, StoreError>> + Send;

    /// Whether the store keeps the files' bytes itself (PostgreSQL), so that
    /// [`copy_debug_file`](Self::copy_debug_file) can fill a local cache.
    fn keeps_bytes(&self) -> bool;

    /// Writes the bytes of `build_id`'s `kind` into the file `to` (created or truncated), one chunk at
    /// a time; its row, or `None` when the store has no bytes of it (always `None` for SQLite).
    fn copy_debug_file(
        &self,
        build_id: String,
        kind: FileKind,
        to: PathBuf,
    ) -> impl Future<Output = Result<Option<DebugFileRow>, StoreError>> + Send;
}
