//! Where the store is, as `--store` (or `LASTWORD_STORE`) says: a directory for the embedded SQLite
//! store, or a `postgres://` URL for a PostgreSQL database that several collectors may share. And
//! [`AnyStore`], the store opened there.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use lastword_spool::EntryId;

use super::postgres::{self, PostgresStore};
use super::reads::{GroupItem, GroupQuery, GroupStats, Listed, ListedBody, LogQuery, Overview, Page, Tag};
use super::sqlite::SqliteStore;
use super::{
    Batch, Group, GroupFilter, KindGroup, LossesRow, Outcome, ReportFilter, ReportRow, Store, StoreError,
    StoredReport,
};

/// The value of `--store`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A directory: the SQLite store `DIR/lastword.sqlite`.
    Dir(PathBuf),
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
}

/// A `--store` URL of a scheme the collector does not speak.
#[derive(Debug, thiserror::Error)]
#[error("unknown scheme {scheme}:// of a store: give a directory (the SQLite store) or a postgres:// URL")]
pub struct UnknownScheme {
    /// The scheme given.
    pub scheme: String,
}

impl FromStr for StoreLocation {
    type Err = UnknownScheme;

    /// A `postgres://` or `postgresql://` URL, else any other `SCHEME://` is refused (a typo or another
    /// database must not become a directory named `sqlite:`), else a directory.
    fn from_str(s: &str) -> Result<Self, UnknownScheme> {
        if postgres::is_url(s) {
            return Ok(Self::Postgres(s.to_owned()));
        }
        if let Some((scheme, _)) = s.split_once("://")
            && let mut chars = scheme.chars()
            && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Err(UnknownScheme { scheme: scheme.to_owned() });
        }
        Ok(Self::Dir(PathBuf::from(s)))
    }
}

impl From<PathBuf> for StoreLocation {
    fn from(dir: PathBuf) -> Self {
        Self::Dir(dir)
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Shows the directory, or the URL without its password.
impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir(dir) => write!(f, "{}", dir.display()),
            Self::Postgres(url) => f.write_str(&postgres::redacted(url)),
        }
    }
}

impl StoreLocation {
    /// Opens the store for the collector: creates or migrates its schema.
    pub async fn open(&self) -> Result<AnyStore, StoreError> {
        match self {
            Self::Dir(dir) => {
                let dir = dir.clone();
                let store = tokio::task::spawn_blocking(move || SqliteStore::open(&dir))
                    .await
                    .map_err(|e| StoreError::Backend { op: "open the store", source: Box::new(e) })??;
                Ok(AnyStore::Sqlite(store))
            }
            Self::Postgres(url) => Ok(AnyStore::Postgres(PostgresStore::open(url).await?)),
        }
    }

    /// Opens an existing store for queries, changing nothing.
    pub async fn open_read_only(&self) -> Result<AnyStore, StoreError> {
        match self {
            Self::Dir(dir) => {
                let dir = dir.clone();
                let store =
                    tokio::task::spawn_blocking(move || SqliteStore::open_read_only(&dir))
                        .await
                        .map_err(|e| StoreError::Backend { op: "open the store", source: Box::new(e) })??;
                Ok(AnyStore::Sqlite(store))
            }
            Self::Postgres(url) => Ok(AnyStore::Postgres(PostgresStore::open_read_only(url).await?)),
        }
    }
}

/// The store `--store` named: either backend, behind the one [`Store`] interface.
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// The embedded store.
    Sqlite(SqliteStore),
    /// The shared store.
    Postgres(PostgresStore),
}

impl AnyStore {
    /// A reader of the same store for the web UI, never the collector's own connections: the SQLite
    /// file opened read-only on a connection of its own, or a pool of read-only sessions of its own on
    /// the PostgreSQL database (which connects at the first page load).
    pub async fn reader(&self) -> Result<AnyStore, StoreError> {
        match self {
            Self::Sqlite(sqlite) => {
                let sqlite = sqlite.clone();
                let reader = tokio::task::spawn_blocking(move || sqlite.reader())
                    .await
                    .map_err(|e| StoreError::Backend { op: "open the store", source: Box::new(e) })??;
                Ok(Self::Sqlite(reader))
            }
            Self::Postgres(postgres) => Ok(Self::Postgres(postgres.reader()?)),
        }
    }
}

/// `$call` on whichever backend `$store` holds, bound to `$s`: the one dispatch of [`AnyStore`].
macro_rules! on_backend {
    ($store:expr, $s:ident => $call:expr) => {
        match $store {
            AnyStore::Sqlite($s) => $call,
            AnyStore::Postgres($s) => $call,
        }
    };
}

impl Store for AnyStore {
    async fn write(&self, batch: Batch) -> Result<Vec<Outcome>, StoreError> {
        on_backend!(self, s => s.write(batch).await)
    }

    async fn reports(&self, filter: ReportFilter) -> Result<Vec<ReportRow>, StoreError> {
        on_backend!(self, s => s.reports(filter).await)
    }

    async fn report(&self, id: EntryId) -> Result<Option<StoredReport>, StoreError> {
        on_backend!(self, s => s.report(id).await)
    }

    async fn groups(&self, app: Option<String>, limit: u32) -> Result<Vec<Group>, StoreError> {
        on_backend!(self, s => s.groups(app, limit).await)
    }

    async fn groups_of(&self, filter: GroupFilter) -> Result<Vec<KindGroup>, StoreError> {
        on_backend!(self, s => s.groups_of(filter).await)
    }

    async fn losses(&self) -> Result<Vec<LossesRow>, StoreError> {
        on_backend!(self, s => s.losses().await)
    }

    async fn overview(&self, now_ms: u64) -> Result<Overview, StoreError> {
        on_backend!(self, s => s.overview(now_ms).await)
    }

    async fn group_page(&self, query: GroupQuery, now_ms: u64) -> Result<(Vec<GroupItem>, bool), StoreError> {
        on_backend!(self, s => s.group_page(query, now_ms).await)
    }

    async fn group(&self, app: String, fingerprint: String) -> Result<Option<Group>, StoreError> {
        on_backend!(self, s => s.group(app, fingerprint).await)
    }

    async fn group_reports(
        &self,
        app: String,
        fingerprint: String,
        tag: Option<Tag>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page<Listed>, StoreError> {
        on_backend!(self, s => s.group_reports(app, fingerprint, tag, before, limit).await)
    }

    async fn group_stats(
        &self,
        app: String,
        fingerprint: String,
        now_ms: u64,
    ) -> Result<GroupStats, StoreError> {
        on_backend!(self, s => s.group_stats(app, fingerprint, now_ms).await)
    }

    async fn logs(&self, query: LogQuery) -> Result<Page<ListedBody>, StoreError> {
        on_backend!(self, s => s.logs(query).await)
    }
}

impl super::DebugFileStore for AnyStore {
    async fn put_debug_file(&self, row: super::DebugFileRow, file: PathBuf) -> Result<(), StoreError> {
        on_backend!(self, s => s.put_debug_file(row, file).await)
    }

    async fn debug_file(
        &self,
        build_id: String,
        kind: crate::debug_files::FileKind,
    ) -> Result<Option<super::DebugFileRow>, StoreError> {
        on_backend!(self, s => s.debug_file(build_id, kind).await)
    }

    async fn debug_files(&self, limit: u32) -> Result<Vec<super::DebugFileRow>, StoreError> {
        on_backend!(self, s => s.debug_files(limit).await)
    }

    fn keeps_bytes(&self) -> bool {
        on_backend!(self, s => s.keeps_bytes())
    }

    async fn copy_debug_file(
        &self,
        build_id: String,
        kind: crate::debug_files::FileKind,
        to: PathBuf,
    ) -> Result<Option<super::DebugFileRow>, StoreError> {
        on_backend!(self, s => s.copy_debug_file(build_id, kind, to).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_names_the_shared_store_and_anything_else_a_directory() {
        let url: StoreLocation = "postgres://u:pw@db/lastword".parse().expect("a store");
        assert_eq!(url, StoreLocation::Postgres("postgres://u:pw@db/lastword".into()));
        assert_eq!(url.to_string(), "postgres://u:***@db/lastword");
        let long: StoreLocation = "postgresql://db/x".parse().expect("a store");
        assert!(matches!(long, StoreLocation::Postgres(_)));
        let dir: StoreLocation = "/var/lib/lastword".parse().expect("a store");
        assert_eq!(dir, StoreLocation::Dir("/var/lib/lastword".into()));
        let colon: StoreLocation = "backup:2026/x://y".parse().expect("not a URL: a directory");
        assert_eq!(colon, StoreLocation::Dir("backup:2026/x://y".into()));
        let err = "sqlite:///var/lib/x".parse::<StoreLocation>().expect_err("an unknown scheme");
        assert_eq!(err.scheme, "sqlite");
    }
}
