//! Where the collector keeps what it received: the backend-neutral [`Store`] trait and the rows it deals
//! in; [`sqlite`]: the embedded backend; [`postgres`]: the shared one, for several collectors on one
//! database (both formats: agent/collector/STORE.md); [`location`]: `--store`, and [`AnyStore`],
//! whichever of the two it names.

mod batch;
pub mod debug_files;
pub mod location;
pub mod postgres;
pub mod reads;
pub mod sqlite;
pub mod waits;

pub use debug_files::{DebugFileRow, DebugFileStore};
pub use location::{AnyStore, StoreLocation};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use waits::Waits;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use lastword_protocol::{Losses, Software};
use lastword_spool::{EntryId, Kind};
use serde::Serialize;

use reads::{GroupItem, GroupQuery, GroupStats, Listed, ListedBody, LogQuery, Overview, Page, Tag};

/// Any error of a backend, boxed so that the trait names no backend's types.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the store could not do what was asked.
///
/// The messages of [`StoreError::Open`] and [`StoreError::Backend`] include the backend's, which is
/// therefore not also their `source()`: a chain printed whole (`{:#}` of anyhow) says it once (as
/// `SpoolError` does).
#[derive(Debug)]
pub enum StoreError {
    /// The store could not be opened or created.
    Open {
        /// The store's file or directory.
        path: PathBuf,
        /// What the backend said.
        source: BackendError,
    },
    /// There is no store where one was expected.
    Missing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The store was written by a newer program.
    Version {
        /// The store's file.
        path: PathBuf,
        /// The version found.
        found: i64,
        /// The newest version this program knows.
        known: i64,
    },
    /// An operation failed; nothing of it was stored.
    Backend {
        /// What was being done.
        op: &'static str,
        /// What the backend said.
        source: BackendError,
    },
    /// A row read back does not make sense (hand-edited or damaged store).
    BadRow {
        /// The column.
        what: &'static str,
        /// Its value.
        value: String,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Open { path, source } => {
                write!(f, "cannot open the store at {}: {}", path.display(), Causes(&**source))
            }
            StoreError::Missing { path } => {
                write!(f, "no store at {} (`lastword collect --store` creates one)", path.display())
            }
            StoreError::Version { path, found, known } => write!(
                f,
                "the store at {} has schema version {found}; this program knows versions up to {known}",
                path.display()
            ),
            StoreError::Backend { op, source } => {
                write!(f, "the store failed to {op}: {}", Causes(&**source))
            }
            StoreError::BadRow { what, value } => write!(f, "the store holds a bad row ({what}): {value:?}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// An error and the causes under it, each said once, on one line ("a: b: c"): tokio-postgres says
/// only "db error" of a database error, with the server's reason in its source. A cause whose text
/// is already shown (rusqlite's and io's errors often repeat theirs) is not repeated. Of a
/// PostgreSQL error only its severity, message and SQLSTATE are said: its detail may quote the
/// refused row (a report's body), which has no place in a log line.
struct Causes<'a>(&'a (dyn std::error::Error + 'static));

/// The longest text said of one cause, in characters.
const CAUSE_CHARS: usize = 300;

fn cause_text(e: &(dyn std::error::Error + 'static)) -> String {
    let text = match e.downcast_ref::<tokio_postgres::error::DbError>() {
        Some(db) => format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(CAUSE_CHARS).collect()
}

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = cause_text(self.0);
        f.write_str(&shown)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause_text(cause);
            if !text.is_empty() && !shown.contains(&text) {
                write!(f, ": {text}")?;
                shown = text;
            }
            next = cause.source();
        }
        Ok(())
    }
}

/// Who sent a connection's reports, from its `hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The sending agent.
    pub agent: Software,
    /// The application.
    pub app: String,
    /// The application's release, if given.
    pub release: Option<String>,
    /// The host, if given.
    pub host: Option<String>,
}

/// A report ready to be stored: checked, inflated, fingerprinted.
#[derive(Clone, Debug)]
pub struct NewReport {
    /// The idempotency key.
    pub id: EntryId,
    /// Crash, event or log.
    pub kind: Kind,
    /// Who sent it (shared by every report of a connection).
    pub origin: Arc<Origin>,
    /// When the entry was written, by the sender's clock (ms since the Unix epoch).
    pub created_ms: u64,
    /// When the collector read it (ms since the Unix epoch).
    pub received_ms: u64,
    /// For crashes and events: the group key (fingerprint.rs).
    pub fingerprint: Option<String>,
    /// One line for people (the body's `message`, or a crash's top function); may be empty.
    pub summary: String,
    /// The body: JSON text, inflated.
    pub body: String,
    /// The build ids of the debug files that would name its unnamed frames and that the collector
    /// did not have (crashes and events; [`waits`]).
    pub waits: Vec<String>,
}

/// An agent's loss counters, from a `hello`.
#[derive(Clone, Debug)]
pub struct AgentLosses {
    /// Who sent them.
    pub origin: Arc<Origin>,
    /// The counters.
    pub losses: Losses,
    /// When the hello was read (ms since the Unix epoch).
    pub received_ms: u64,
}

/// Everything the committer took from its queue at once: written in one transaction.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// The reports, in the order they were queued.
    pub reports: Vec<NewReport>,
    /// Loss counters to record (the latest per app and host wins).
    pub losses: Vec<AgentLosses>,
}

/// What became of one report of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The id was new: the report was stored (and its crash group counted).
    Inserted,
    /// The id was stored before (by an earlier batch or earlier in this one): nothing changed.
    Duplicate,
}

/// Which reports to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportFilter {
    /// Only this application's.
    pub app: Option<String>,
    /// Only this kind.
    pub kind: Option<Kind>,
    /// Only this crash group.
    pub fingerprint: Option<String>,
    /// Only reports whose scope has this tag (key, value).
    pub tag: Option<(String, String)>,
    /// At most this many, newest (by received time) first.
    pub limit: u32,
}

/// Which groups to list ([`Store::groups_of`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupFilter {
    /// Only this application's.
    pub app: Option<String>,
    /// Only groups of this kind (crash or event).
    pub kind: Option<Kind>,
    /// Only groups with at least one report whose scope has this tag (key, value).
    pub tag: Option<(String, String)>,
    /// At most this many, most recently seen first.
    pub limit: u32,
}

/// A group and the kind of its reports (a fingerprint groups reports of one kind).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KindGroup {
    /// Crash or event.
    pub kind: Kind,
    /// The group.
    #[serde(flatten)]
    pub group: Group,
}

/// A stored report without its body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReportRow {
    /// The report id.
    pub id: EntryId,
    /// Its kind.
    pub kind: Kind,
    /// The application.
    pub app: String,
    /// The release.
    pub release: Option<String>,
    /// The host.
    pub host: Option<String>,
    /// When it was written (sender's clock).
    pub created_ms: u64,
    /// When the collector read it.
    pub received_ms: u64,
    /// The crash group, for crashes.
    pub fingerprint: Option<String>,
    /// One line for people.
    pub summary: String,
}

/// A stored report with its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReport {
    /// Everything but the body.
    pub row: ReportRow,
    /// The body, JSON text.
    pub body: String,
}

/// A group: the crashes (or the events) of one application with one fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Group {
    /// The application.
    pub app: String,
    /// The fingerprint.
    pub fingerprint: String,
    /// The summary of the first crash stored in the group.
    pub title: String,
    /// How many distinct reports the group holds.
    pub count: u64,
    /// The earliest `created_ms` among them.
    pub first_seen_ms: u64,
    /// The latest `created_ms` among them.
    pub last_seen_ms: u64,
}

/// The latest loss counters of one agent (app and host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LossesRow {
    /// The application.
    pub app: String,
    /// The host (empty when the agent sent none).
    pub host: String,
    /// The release in that hello.
    pub release: Option<String>,
    /// The agent in that hello.
    pub agent: Software,
    /// The counters.
    pub losses: Losses,
    /// When that hello was read.
    pub reported_ms: u64,
}

/// A place to keep reports, and the one interface of every backend (SQLite, PostgreSQL): what the
/// collector writes, what `lastword store` queries, and what the web UI reads (paged, read-only). Every
/// method may be called from async code; a backend that blocks does its work on a blocking thread.
///
/// The promise the collector builds on: [`Store::write`] returns `Ok` only once the whole batch is
/// durable (committed and synced), and then each report's [`Outcome`] says whether its id was new. On
/// `Err` nothing of the batch is stored. A report id is stored at most once, whatever is written later,
/// and a crash group's count is raised exactly when a crash of that group is inserted.
///
/// The query and read methods change nothing and are cancel safe.
pub trait Store: Send + Sync + 'static {
    /// Writes a batch in one transaction and makes it durable. Returns one outcome per report, in the
    /// batch's order.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in meaning: if the future is dropped, the batch may or may not have been
    /// committed. The collector never drops it.
    fn write(&self, batch: Batch) -> impl Future<Output = Result<Vec<Outcome>, StoreError>> + Send;

    /// Lists reports, newest first.
    fn reports(
        &self,
        filter: ReportFilter,
    ) -> impl Future<Output = Result<Vec<ReportRow>, StoreError>> + Send;

    /// One report with its body, if stored.
    fn report(&self, id: EntryId) -> impl Future<Output = Result<Option<StoredReport>, StoreError>> + Send;

    /// Lists crash groups, most recently seen first; only one application's if `app` is given.
    fn groups(
        &self,
        app: Option<String>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Group>, StoreError>> + Send;

    /// Lists groups of crashes and events, most recently seen first, with their kind, as `filter`
    /// says.
    fn groups_of(
        &self,
        filter: GroupFilter,
    ) -> impl Future<Output = Result<Vec<KindGroup>, StoreError>> + Send;

    /// The latest loss counters of every agent.
    fn losses(&self) -> impl Future<Output = Result<Vec<LossesRow>, StoreError>> + Send;

    /// The web UI's overview at `now_ms` (collector's clock).
    fn overview(&self, now_ms: u64) -> impl Future<Output = Result<Overview, StoreError>> + Send;

    /// A page of the web UI's list of groups; the flag says whether more follow.
    fn group_page(
        &self,
        query: GroupQuery,
        now_ms: u64,
    ) -> impl Future<Output = Result<(Vec<GroupItem>, bool), StoreError>> + Send;

    /// One group.
    fn group(
        &self,
        app: String,
        fingerprint: String,
    ) -> impl Future<Output = Result<Option<Group>, StoreError>> + Send;

    /// A page of a group's reports, newest first; with `tag`, only its reports that carry it.
    fn group_reports(
        &self,
        app: String,
        fingerprint: String,
        tag: Option<Tag>,
        before: Option<i64>,
        limit: u32,
    ) -> impl Future<Output = Result<Page<Listed>, StoreError>> + Send;

    /// A group's occurrences per day over [`reads::GROUP_CHART_DAYS`] days up to `now_ms`, and by
    /// release and host: of its newest [`reads::GROUP_STATS_LIMIT`] reports.
    fn group_stats(
        &self,
        app: String,
        fingerprint: String,
        now_ms: u64,
    ) -> impl Future<Output = Result<GroupStats, StoreError>> + Send;

    /// A page of log batches, newest first.
    fn logs(&self, query: LogQuery) -> impl Future<Output = Result<Page<ListedBody>, StoreError>> + Send;
}

/// `v` as an SQL `INTEGER`/`BIGINT` (saturated).
pub(crate) fn to_sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An SQL count or time as `u64` (a negative one, which the store never writes, as 0).
pub(crate) fn from_sql_int(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The [`StoreError::Backend`] of a failed `op`, whatever the backend's error type.
pub(crate) fn backend<E: std::error::Error + Send + Sync + 'static>(
    op: &'static str,
) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Backend { op, source: Box::new(e) }
}
