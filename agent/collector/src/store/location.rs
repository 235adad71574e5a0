//! Where the store is, as `--store` (or `LASTWORD_STORE`) says: a directory for the embedded SQLite
//! store, or a `postgres://` URL for a PostgreSQL database that several collectors may share. And
//! [`AnyStore`], the store opened there.

use std::convert::Infallible;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use lastword_spool::EntryId;

use super::postgres::{self, PostgresStore};
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

impl FromStr for StoreLocation {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(if postgres::is_url(s) { Self::Postgres(s.to_owned()) } else { Self::Dir(PathBuf::from(s)) })
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

impl Store for AnyStore {
    async fn write(&self, batch: Batch) -> Result<Vec<Outcome>, StoreError> {
        match self {
            Self::Sqlite(s) => s.write(batch).await,
            Self::Postgres(s) => s.write(batch).await,
        }
    }

    async fn reports(&self, filter: ReportFilter) -> Result<Vec<ReportRow>, StoreError> {
        match self {
            Self::Sqlite(s) => s.reports(filter).await,
            Self::Postgres(s) => s.reports(filter).await,
        }
    }

    async fn report(&self, id: EntryId) -> Result<Option<StoredReport>, StoreError> {
        match self {
            Self::Sqlite(s) => s.report(id).await,
            Self::Postgres(s) => s.report(id).await,
        }
    }

    async fn groups(&self, app: Option<String>, limit: u32) -> Result<Vec<Group>, StoreError> {
        match self {
            Self::Sqlite(s) => s.groups(app, limit).await,
            Self::Postgres(s) => s.groups(app, limit).await,
        }
    }

    async fn groups_of(&self, filter: GroupFilter) -> Result<Vec<KindGroup>, StoreError> {
        match self {
            Self::Sqlite(s) => s.groups_of(filter).await,
            Self::Postgres(s) => s.groups_of(filter).await,
        }
    }

    async fn losses(&self) -> Result<Vec<LossesRow>, StoreError> {
        match self {
            Self::Sqlite(s) => s.losses().await,
            Self::Postgres(s) => s.losses().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_names_the_shared_store_and_anything_else_a_directory() {
        let url: StoreLocation = "postgres://u:pw@db/lastword".parse().unwrap_or_else(|e| match e {});
        assert_eq!(url, StoreLocation::Postgres("postgres://u:pw@db/lastword".into()));
        assert_eq!(url.to_string(), "postgres://u:***@db/lastword");
        let long: StoreLocation = "postgresql://db/x".parse().unwrap_or_else(|e| match e {});
        assert!(matches!(long, StoreLocation::Postgres(_)));
        let dir: StoreLocation = "/var/lib/lastword".parse().unwrap_or_else(|e| match e {});
        assert_eq!(dir, StoreLocation::Dir("/var/lib/lastword".into()));
    }
}
