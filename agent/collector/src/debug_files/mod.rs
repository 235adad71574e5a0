//! Debug files: the ELF executables, shared objects and separate debug files (`objcopy
//! --only-keep-debug`) of the builds whose reports the collector holds, kept content-addressed by GNU
//! build id, so that a report from a stripped binary, or from a binary replaced before its report was
//! read, is symbolized on the collector (`crate::symbolize`), and so that `gdb`/`debuginfod-find`
//! fetch them over the debuginfod API.
//!
//! [`DebugFiles`] is the one handle the rest of the collector uses: [`DebugFiles::symbols`] gives the
//! local path of a file with symbols for a build id, [`DebugFiles::subscribe`] tells of each build id
//! whose file just arrived (the reports waiting for it are then symbolized again).
//!
//! Local layout (the SQLite store keeps it in `DIR/debug-files/`): `<dir>/<build id>/debuginfo` (a
//! file with DWARF or a symbol table: a separate debug file, or an unstripped binary) and
//! `<dir>/<build id>/executable` (the binary as shipped), the build id in lowercase hex; uploads are
//! staged in `<dir>/.incoming/` (same file system: the final step is a rename).
//!
//! Where the files are kept: with the SQLite store, in that directory, with a `debug_files` row each
//! in the store; with the PostgreSQL store, in the database (`debug_file_chunks`, shared by every
//! collector of it), the directory being this collector's cache, filled on a miss
//! ([`DebugFileStore`]). On a miss of both, the upstream debuginfod servers ([`Settings::upstreams`])
//! are asked, and what they give is kept like an upload; a build id none of them has is not asked
//! again for [`Settings::negative_ttl`].
//!
//! - [`elf`]: what a file holds (build id, symbols, DWARF, CFI), for `lastword debug-files check` and
//!   the check of an upload. [`http`]: the HTTP client of uploads and upstream fetches.
//! - An upload: [`DebugFiles::stage`] (a temporary file, size-limited, hashed as it is written), then
//!   [`DebugFiles::accept`] (verified, recorded, renamed into place durably, announced).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncWriteExt as _, BufWriter};
use tokio::sync::broadcast;

use crate::store::{AnyStore, DebugFileRow, DebugFileStore as _, StoreError};

pub mod elf;
pub mod http;
mod upstream;

pub use elf::{Contents, ElfError, ElfType};

/// What a debug file of a build is, as the debuginfod API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A file with the build's symbols: DWARF or at least a symbol table.
    Debuginfo,
    /// The binary as shipped (it may be stripped).
    Executable,
}

impl FileKind {
    /// The name of the file in a build id's directory, and of the debuginfod route.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Debuginfo => "debuginfo",
            FileKind::Executable => "executable",
        }
    }

    /// The kind [`name`](Self::name) gives, if `s` is one.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "debuginfo" => Some(FileKind::Debuginfo),
            "executable" => Some(FileKind::Executable),
            _ => None,
        }
    }
}

/// Is `id` a build id as the collector keys files by: lowercase hex, an even count of 2 to 128
/// digits. Nothing else ever becomes a path.
pub fn is_build_id(id: &str) -> bool {
    (2..=128).contains(&id.len())
        && id.len() % 2 == 0
        && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The largest debug file taken by default (an upload, a file from upstream): 1 GiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1 << 30;
/// How long an upstream fetch may take by default, its body included.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a build id that no upstream server had is not asked for again, by default.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(3600);

/// How the debug files are kept and found.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The largest file taken, in bytes ([`DEFAULT_MAX_FILE_BYTES`]).
    pub max_file_bytes: u64,
    /// Base URLs of debuginfod servers asked for what the collector lacks (`--debuginfod-upstream`).
    pub upstreams: Vec<String>,
    /// How long one upstream fetch may take ([`DEFAULT_UPSTREAM_TIMEOUT`]).
    pub upstream_timeout: Duration,
    /// How long a miss of every upstream server is remembered ([`DEFAULT_NEGATIVE_TTL`]).
    pub negative_ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            upstreams: Vec::new(),
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
        }
    }
}

/// Why a debug file could not be taken or found.
#[derive(Debug, thiserror::Error)]
pub enum DebugFileError {
    /// A local file operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is larger than [`Settings::max_file_bytes`].
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The file is not ELF, or a damaged one.
    #[error("{0}")]
    Elf(#[from] ElfError),
    /// The file has no GNU build id.
    #[error("the file has no GNU build id")]
    NoBuildId,
    /// The file's build id is not the one it was sent for.
    #[error("the file's build id is {found}, not {expected}")]
    WrongBuildId {
        /// The build id of the URL.
        expected: String,
        /// The file's.
        found: String,
    },
    /// The file cannot be filed as the kind it was sent as.
    #[error("the file cannot be filed as {}: {why}", kind.name())]
    WrongKind {
        /// The kind asked for.
        kind: FileKind,
        /// Why not.
        why: &'static str,
    },
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A blocking task failed (a panic): nothing was stored.
    #[error("a background task failed: {0}")]
    Task(String),
}

impl DebugFileError {
    /// Whether the file itself is at fault (an answer of 4xx), rather than the collector (5xx).
    pub fn is_the_files(&self) -> bool {
        matches!(
            self,
            Self::TooLarge { .. }
                | Self::Elf(_)
                | Self::NoBuildId
                | Self::WrongBuildId { .. }
                | Self::WrongKind { .. }
        )
    }
}

/// What [`DebugFiles::accept`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// The file is new (or replaces another of the same build id and kind).
    Stored,
    /// The same bytes were there already: nothing changed.
    AlreadyThere,
}

/// An upload being written to its temporary file: [`DebugFiles::stage`].
#[derive(Debug)]
pub struct Staging {
    out: BufWriter<tokio::fs::File>,
    temp: tempfile::TempPath,
    size: u64,
    limit: u64,
    sha: Sha256,
}

impl Staging {
    /// Appends `bytes`; refuses to go past the size limit (the temporary file is removed on drop).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), DebugFileError> {
        self.size += bytes.len() as u64;
        if self.size > self.limit {
            return Err(DebugFileError::TooLarge { limit: self.limit });
        }
        self.sha.update(bytes);
        let temp = &self.temp;
        self.out.write_all(bytes).await.map_err(|source| DebugFileError::Io {
            what: "write",
            path: temp.to_path_buf(),
            source,
        })
    }

    /// Flushes and fsyncs the file: what [`DebugFiles::accept`] takes.
    pub async fn finish(mut self) -> Result<Staged, DebugFileError> {
        let io = |source| DebugFileError::Io { what: "write", path: self.temp.to_path_buf(), source };
        self.out.flush().await.map_err(io)?;
        self.out.get_ref().sync_all().await.map_err(io)?;
        Ok(Staged { temp: self.temp, size: self.size, sha256: hex::encode(self.sha.finalize()) })
    }
}

/// A file written whole and fsynced in the staging directory, not yet checked.
#[derive(Debug)]
pub struct Staged {
    temp: tempfile::TempPath,
    size: u64,
    sha256: String,
}

/// The collector's debug files. Cheap to clone: every clone is the same set.
#[derive(Clone, Debug)]
pub struct DebugFiles {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    arrivals: broadcast::Sender<String>,
    /// Where the rows (and with PostgreSQL the bytes) are kept; `None`: the directory alone.
    index: Option<AnyStore>,
    settings: Settings,
    upstream: Option<upstream::Upstream>,
}

/// Whether `path` is a regular file.
async fn is_file(path: &Path) -> bool {
    tokio::fs::metadata(path).await.is_ok_and(|m| m.is_file())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl DebugFiles {
    /// The debug files kept under `dir` (see the module doc for the layout), with no store and no
    /// upstream: what is in the directory is what there is.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self::build(dir.into(), None, Settings::default(), None)
    }

    fn build(
        dir: PathBuf,
        index: Option<AnyStore>,
        settings: Settings,
        upstream: Option<upstream::Upstream>,
    ) -> Self {
        let (arrivals, _) = broadcast::channel(1024);
        DebugFiles { inner: Arc::new(Inner { dir, arrivals, index, settings, upstream }) }
    }

    /// The debug files of `store`: with SQLite in `DIR/debug-files/` beside it (`cache` is not used);
    /// with PostgreSQL in the database, `cache` (required) being this collector's local copies. Makes
    /// the directories.
    pub fn for_store(
        store: &AnyStore,
        cache: Option<PathBuf>,
        settings: Settings,
    ) -> Result<Self, DebugFileError> {
        let dir = match (store, cache) {
            (AnyStore::Sqlite(s), _) => s.path().parent().unwrap_or(Path::new(".")).join("debug-files"),
            (AnyStore::Postgres(_), Some(cache)) => cache,
            (AnyStore::Postgres(_), None) => {
                return Err(DebugFileError::Io {
                    what: "keep debug files without a cache directory for",
                    path: PathBuf::from(store_name(store)),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no cache directory given"),
                });
            }
        };
        let incoming = dir.join(".incoming");
        std::fs::create_dir_all(&incoming).map_err(|source| DebugFileError::Io {
            what: "create the directory",
            path: incoming.clone(),
            source,
        })?;
        let upstream = if settings.upstreams.is_empty() {
            None
        } else {
            let client = http::HttpClient::new().map_err(|e| DebugFileError::Io {
                what: "make an HTTP client for",
                path: PathBuf::from("the upstream debuginfod servers"),
                source: std::io::Error::other(e.to_string()),
            })?;
            Some(upstream::Upstream::new(&settings, client))
        };
        Ok(Self::build(dir, Some(store.clone()), settings, upstream))
    }

    /// The local directory the files are kept in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    fn local_path(&self, build_id: &str, kind: FileKind) -> PathBuf {
        self.inner.dir.join(build_id).join(kind.name())
    }

    /// The local path of the file that best symbolizes `build_id` (its `debuginfo`, else its
    /// `executable`), or `None` when the collector has neither (or `build_id` is not one). Looks in the
    /// directory, then (PostgreSQL) in the database, then asks the upstream servers; what it finds is
    /// kept locally.
    pub async fn symbols(&self, build_id: &str) -> Option<PathBuf> {
        if !is_build_id(build_id) {
            return None;
        }
        let kinds = [FileKind::Debuginfo, FileKind::Executable];
        for kind in kinds {
            let path = self.local_path(build_id, kind);
            if is_file(&path).await {
                return Some(path);
            }
        }
        for kind in kinds {
            match self.copy_from_store(build_id, kind).await {
                Ok(Some(path)) => return Some(path),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("debug files: cannot read {build_id}/{} from the store: {e}", kind.name())
                }
            }
        }
        for kind in kinds {
            if let Some(path) = self.fetch_from_upstream(build_id, kind).await {
                return Some(path);
            }
        }
        None
    }

    /// The local path of `build_id`'s file of `kind` (from the directory, the store or upstream, as
    /// [`symbols`](Self::symbols)), or `None`.
    pub async fn file(&self, build_id: &str, kind: FileKind) -> Result<Option<PathBuf>, DebugFileError> {
        if !is_build_id(build_id) {
            return Ok(None);
        }
        let path = self.local_path(build_id, kind);
        if is_file(&path).await {
            return Ok(Some(path));
        }
        if let Some(path) = self.copy_from_store(build_id, kind).await? {
            return Ok(Some(path));
        }
        Ok(self.fetch_from_upstream(build_id, kind).await)
    }

    /// What the collector holds of `build_id`'s `kind` (its row; a file in the directory alone, with
    /// no store, has a row made up from the file), without asking upstream.
    pub async fn stored(
        &self,
        build_id: &str,
        kind: FileKind,
    ) -> Result<Option<DebugFileRow>, DebugFileError> {
        if !is_build_id(build_id) {
            return Ok(None);
        }
        let local = self.local_path(build_id, kind);
        let row = match &self.inner.index {
            Some(index) => index.debug_file(build_id.to_owned(), kind).await?,
            None => None,
        };
        let keeps_bytes = self.inner.index.as_ref().is_some_and(|i| i.keeps_bytes());
        // With SQLite the file on disk is the file: a row without it (a failed rename) is not one.
        if keeps_bytes || is_file(&local).await { Ok(row) } else { Ok(None) }
    }

    /// The PostgreSQL store's copy of the file, copied into the local directory.
    async fn copy_from_store(
        &self,
        build_id: &str,
        kind: FileKind,
    ) -> Result<Option<PathBuf>, DebugFileError> {
        let Some(index) = self.inner.index.as_ref().filter(|i| i.keeps_bytes()) else { return Ok(None) };
        let temp = self.temp_file().await?;
        let (file, temp) = temp.into_parts();
        drop(file);
        if index.copy_debug_file(build_id.to_owned(), kind, temp.to_path_buf()).await?.is_none() {
            return Ok(None);
        }
        self.install(temp, build_id, kind).await.map(Some)
    }

    async fn fetch_from_upstream(&self, build_id: &str, kind: FileKind) -> Option<PathBuf> {
        let upstream = self.inner.upstream.as_ref()?;
        upstream.fetch(self, build_id, kind).await
    }

    async fn temp_file(&self) -> Result<tempfile::NamedTempFile, DebugFileError> {
        let incoming = self.inner.dir.join(".incoming");
        let made = incoming.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&made)?;
            tempfile::Builder::new().prefix(".part-").tempfile_in(&made)
        })
        .await
        .map_err(|e| DebugFileError::Task(e.to_string()))?
        .map_err(|source| DebugFileError::Io {
            what: "create a temporary file in",
            path: incoming,
            source,
        })
    }

    /// A new upload's temporary file, in the directory's `.incoming/` (removed if dropped before
    /// [`accept`](Self::accept)).
    pub async fn stage(&self) -> Result<Staging, DebugFileError> {
        let (file, temp) = self.temp_file().await?.into_parts();
        Ok(Staging {
            out: BufWriter::with_capacity(1 << 20, tokio::fs::File::from_std(file)),
            temp,
            size: 0,
            limit: self.inner.settings.max_file_bytes,
            sha: Sha256::new(),
        })
    }

    /// Takes a staged file as `build_id`'s `kind`: checks that it is ELF, that its build id is
    /// `build_id` and that it may be filed as `kind` (a `debuginfo` has symbols or DWARF, an
    /// `executable` holds code); records it in the store (with PostgreSQL, its bytes too); renames it
    /// into place and fsyncs the directory; then tells the subscribers. The same bytes again change
    /// nothing.
    pub async fn accept(
        &self,
        staged: Staged,
        build_id: &str,
        kind: FileKind,
        file_name: &str,
    ) -> Result<Accepted, DebugFileError> {
        let path = staged.temp.to_path_buf();
        let contents = tokio::task::spawn_blocking(move || elf::inspect(&path))
            .await
            .map_err(|e| DebugFileError::Task(e.to_string()))??;
        let found = contents.build_id.clone().ok_or(DebugFileError::NoBuildId)?;
        if found != build_id {
            return Err(DebugFileError::WrongBuildId { expected: build_id.to_owned(), found });
        }
        if !contents.may_be(kind) {
            let why = match kind {
                FileKind::Debuginfo => "it has neither a symbol table nor DWARF",
                FileKind::Executable => "it is a separate debug file, without the code",
            };
            return Err(DebugFileError::WrongKind { kind, why });
        }
        if let Some(row) = self.stored(build_id, kind).await?
            && row.sha256 == staged.sha256
            && row.size == staged.size
        {
            return Ok(Accepted::AlreadyThere);
        }
        let row = DebugFileRow {
            build_id: build_id.to_owned(),
            kind,
            file_name: file_name.to_owned(),
            size: staged.size,
            sha256: staged.sha256.clone(),
            uploaded_ms: now_ms(),
        };
        if let Some(index) = &self.inner.index {
            index.put_debug_file(row, staged.temp.to_path_buf()).await?;
        }
        self.install(staged.temp, build_id, kind).await?;
        self.announce(build_id);
        Ok(Accepted::Stored)
    }

    /// Renames `temp` to `build_id`'s `kind` in the directory and fsyncs the directories it changed.
    async fn install(
        &self,
        temp: tempfile::TempPath,
        build_id: &str,
        kind: FileKind,
    ) -> Result<PathBuf, DebugFileError> {
        let dir = self.inner.dir.clone();
        let at = dir.join(build_id);
        let dest = at.join(kind.name());
        let to = dest.clone();
        tokio::task::spawn_blocking(move || -> Result<(), DebugFileError> {
            let io = |what, path: &Path| {
                let path = path.to_owned();
                move |source| DebugFileError::Io { what, path, source }
            };
            let new_dir = !at.is_dir();
            std::fs::create_dir_all(&at).map_err(io("create the directory", &at))?;
            temp.persist(&to).map_err(|e| DebugFileError::Io {
                what: "rename into",
                path: to.clone(),
                source: e.error,
            })?;
            std::fs::File::open(&at).and_then(|d| d.sync_all()).map_err(io("fsync the directory", &at))?;
            if new_dir {
                std::fs::File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io("fsync the directory", &dir))?;
            }
            Ok(())
        })
        .await
        .map_err(|e| DebugFileError::Task(e.to_string()))??;
        Ok(dest)
    }

    /// The files the store knows of, the most recent first (none without a store).
    pub async fn list(&self, limit: u32) -> Result<Vec<DebugFileRow>, DebugFileError> {
        match &self.inner.index {
            Some(index) => Ok(index.debug_files(limit).await?),
            None => Ok(Vec::new()),
        }
    }

    /// The build ids of files as they arrive, from now on. A receiver that falls behind is told so
    /// (`RecvError::Lagged`) and should look at every waiting report again.
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.inner.arrivals.subscribe()
    }

    /// Tells the subscribers that a file of `build_id` has arrived (after it is durably in place).
    pub fn announce(&self, build_id: &str) {
        // No subscriber is not an error: nothing waits.
        let _ = self.inner.arrivals.send(build_id.to_owned());
    }
}

/// The store's name for messages.
fn store_name(store: &AnyStore) -> String {
    match store {
        AnyStore::Sqlite(s) => s.path().display().to_string(),
        AnyStore::Postgres(p) => p.url().to_owned(),
    }
}

/// The negative cache of the upstream servers: (build id, kind) → when it was found missing.
#[derive(Debug, Default)]
struct Misses(Mutex<HashMap<(String, FileKind), Instant>>);

impl Misses {
    fn fresh(&self, key: &(String, FileKind), ttl: Duration) -> bool {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(key).is_some_and(|at| at.elapsed() < ttl)
    }

    fn note(&self, key: (String, FileKind), ttl: Duration) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Bounded: old entries go first when it grows.
        if map.len() >= 100_000 {
            map.retain(|_, at| at.elapsed() < ttl);
        }
        map.insert(key, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lowercase_hex_of_even_length_is_a_build_id() {
        assert!(is_build_id("8f3eb1"));
        for bad in ["", "a", "8F3E", "../etc", "abc", "zz", &"a".repeat(130)] {
            assert!(!is_build_id(bad), "{bad:?}");
        }
    }
}
