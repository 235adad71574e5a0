//! Reports that wait for a debug file: a crash or event stored with frames that have no name, for
//! each build id whose file the collector did not have when it arrived (STORE.md, "Symbols"). When
//! the file comes, the collector symbolizes those reports again (`crate::symbolize`) and moves each
//! to the group its names give: [`Waits::resymbolized`], which counts a report in one group only,
//! whatever happens twice (two collectors, a retry after a crash).

use std::future::Future;

use lastword_spool::{EntryId, Kind};

use super::{AnyStore, Store, StoreError};

/// A report that waits for the debug file of a build id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// The report.
    pub id: EntryId,
    /// Crash or event.
    pub kind: Kind,
    /// Its application.
    pub app: String,
    /// Its group now.
    pub fingerprint: Option<String>,
    /// When it was written (sender's clock): its place in its group's first and last seen.
    pub created_ms: u64,
    /// Its body.
    pub body: String,
}

/// What symbolizing a waiting report again gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resymbolized {
    /// The report, as [`Waiting`] read it.
    pub waiting: Waiting,
    /// The new body, fingerprint and summary; `None` when the file named nothing (the report stays
    /// as it is and stops waiting for that file).
    pub changed: Option<Changed>,
    /// The build ids it still waits for (never the one whose file came).
    pub waits: Vec<String>,
}

/// A report's new body and what the collector derives from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    /// The body with the frames named.
    pub body: String,
    /// Its group now.
    pub fingerprint: Option<String>,
    /// Its summary now.
    pub summary: String,
}

/// What [`Waits::resymbolized`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Reports whose body was rewritten.
    pub rewritten: u64,
    /// Of those, reports that moved to another group.
    pub moved: u64,
}

/// The store's record of which reports wait for which debug files. Every backend implements it
/// next to its [`Store`] (store/sqlite/waits.rs, store/postgres/waits.rs).
pub trait Waits: Store {
    /// Every build id some stored report waits for, each once.
    fn waited_build_ids(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Up to `limit` reports that wait for `build_id`.
    fn waiting_for(
        &self,
        build_id: String,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Waiting>, StoreError>> + Send;

    /// How many reports wait for each build id, most waited for first (the "Debug files" page).
    fn wait_counts(&self, limit: u32) -> impl Future<Output = Result<Vec<(String, u64)>, StoreError>> + Send;

    /// In one transaction: each report stops waiting for `build_id` and waits for its `waits`
    /// instead; a changed one gets its new body, fingerprint and summary only if its fingerprint is
    /// still the one it was read with (so that applying the same result twice, or after another
    /// collector did, changes nothing), and then leaves its old group (count − 1, the row gone at 0;
    /// first and last seen stay as bounds) for its new one (count + 1, created if new with the report's
    /// summary as title).
    fn resymbolized(
        &self,
        build_id: String,
        done: Vec<Resymbolized>,
    ) -> impl Future<Output = Result<Applied, StoreError>> + Send;
}

impl Waits for AnyStore {
    async fn waited_build_ids(&self) -> Result<Vec<String>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.waited_build_ids().await,
            AnyStore::Postgres(s) => s.waited_build_ids().await,
        }
    }

    async fn waiting_for(&self, build_id: String, limit: u32) -> Result<Vec<Waiting>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.waiting_for(build_id, limit).await,
            AnyStore::Postgres(s) => s.waiting_for(build_id, limit).await,
        }
    }

    async fn wait_counts(&self, limit: u32) -> Result<Vec<(String, u64)>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.wait_counts(limit).await,
            AnyStore::Postgres(s) => s.wait_counts(limit).await,
        }
    }

    async fn resymbolized(&self, build_id: String, done: Vec<Resymbolized>) -> Result<Applied, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.resymbolized(build_id, done).await,
            AnyStore::Postgres(s) => s.resymbolized(build_id, done).await,
        }
    }
}

/// A [`Waiting`] of its columns, the id and kind checked.
pub(crate) fn waiting(
    id: String,
    kind: String,
    app: String,
    fingerprint: Option<String>,
    created_ms: u64,
    body: String,
) -> Result<Waiting, StoreError> {
    let id: EntryId = id.parse().map_err(|_| StoreError::BadRow { what: "reports.id", value: id.clone() })?;
    let kind: Kind =
        kind.parse().map_err(|_| StoreError::BadRow { what: "reports.kind", value: kind.clone() })?;
    Ok(Waiting { id, kind, app, fingerprint, created_ms, body })
}
