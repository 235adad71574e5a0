//! What the web UI reads from a store: the [`UiStore`] trait (read-only, paged queries), its SQLite
//! implementation, [`SqliteUiStore`], which opens the collector's file read-only on its own connection
//! so that people's page loads never wait for the collector's writer (WAL readers do not block it), and
//! [`AnyUiStore`], either backend (the PostgreSQL one is in `postgres.rs`). The overview's counts
//! (`Tally`) and a group's releases and trend (`GroupDetails`) are computed here, the same for
//! both backends.
//!
//! Lists of reports are paged by a cursor (`seq`, the position of arrival: SQLite's rowid, PostgreSQL's
//! `seq` column), never by an offset, so a page costs the same at the end of a store of 100,000 reports
//! as at its start.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use lastword_protocol::{Losses, Software};
use lastword_spool::{EntryId, Kind};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::postgres::PostgresUiStore;
use crate::store::AnyStore;
use crate::store::{Group, LossesRow, ReportRow, StoreError, StoredReport};

/// Hours in the overview's chart.
pub const CHART_HOURS: usize = 24;
/// Days in a crash group's trend.
pub const TREND_DAYS: usize = 7;
/// Days in the chart of a crash group's page.
pub const GROUP_CHART_DAYS: usize = 30;
/// The newest occurrences of a group that its page's chart and breakdowns count: a page load reads at
/// most this many rows, whatever the size of the group.
pub const GROUP_STATS_LIMIT: u32 = 10_000;
pub(super) const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// A report row and its place in the order of arrival.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The position of arrival: larger is later. The cursor of paged lists.
    pub seq: i64,
    /// The row.
    pub row: ReportRow,
}

/// A log batch (or any report) with its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedBody {
    /// The row and its place.
    pub listed: Listed,
    /// The body, JSON text.
    pub body: String,
}

/// One page of a list ordered by arrival, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The cursor of the next (older) page, if there is one: pass it as `before`.
    pub next_before: Option<i64>,
}

/// How crash groups are ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GroupSort {
    /// Most recently seen first.
    #[default]
    LastSeen,
    /// Earliest first seen first... or last, with `descending`.
    FirstSeen,
    /// By number of reports.
    Count,
    /// By title.
    Title,
}

impl GroupSort {
    /// The name used in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LastSeen => "last_seen",
            Self::FirstSeen => "first_seen",
            Self::Count => "count",
            Self::Title => "title",
        }
    }

    /// The sort named in a URL; the default for anything else.
    pub fn parse(s: &str) -> Self {
        match s {
            "first_seen" => Self::FirstSeen,
            "count" => Self::Count,
            "title" => Self::Title,
            _ => Self::LastSeen,
        }
    }

    /// The column of `groups` this sort orders by.
    pub(super) fn column(self) -> &'static str {
        match self {
            Self::LastSeen => "last_seen_ms",
            Self::FirstSeen => "first_seen_ms",
            Self::Count => "count",
            Self::Title => "title",
        }
    }
}

/// Which crash groups to list.
#[derive(Clone, Debug, Default)]
pub struct GroupQuery {
    /// Only this application's.
    pub app: Option<String>,
    /// Only groups with a report of this release.
    pub release: Option<String>,
    /// Only groups of this `type` (of their latest report): `panic`, `signal` or `event`.
    pub kind: Option<String>,
    /// Only groups with a report that carries this scope tag (key, value).
    pub tag: Option<Tag>,
    /// The order.
    pub sort: GroupSort,
    /// Largest first (the default of the UI).
    pub descending: bool,
    /// Groups skipped (groups are few: one per distinct crash).
    pub offset: u32,
    /// At most this many.
    pub limit: u32,
}

/// A scope tag a list is filtered by: reports whose scope has `key` set to `value` (the
/// `report_tags` table of both stores).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// The tag's key.
    pub key: String,
    /// Its value.
    pub value: String,
}

impl Tag {
    /// The tag of `KEY=VALUE` (split at the first `=`; the key not empty), as the pages' forms and
    /// `lastword store --tag` write it.
    pub fn parse(text: &str) -> Option<Self> {
        let (key, value) = text.split_once('=')?;
        let key = key.trim();
        (!key.is_empty()).then(|| Self { key: key.to_owned(), value: value.trim().to_owned() })
    }

    /// `KEY=VALUE`, as [`parse`](Self::parse) reads it.
    pub fn as_param(&self) -> String {
        format!("{}={}", self.key, self.value)
    }
}

/// A crash or event group with what its row in the list shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupItem {
    /// The group.
    pub group: Group,
    /// `panic`, `signal` or `event` (the `type` of its latest report), if known.
    pub kind: Option<String>,
    /// The releases of its reports.
    pub releases: Vec<String>,
    /// Reports per day (by the sender's clock) over the last [`TREND_DAYS`] days, oldest first.
    pub trend: [u64; TREND_DAYS],
}

/// Which log batches to list.
#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    /// Only this application's.
    pub app: Option<String>,
    /// Only batches with a record of one of these levels (upper case).
    pub levels: Vec<String>,
    /// Only batches written at or after this time (ms since the Unix epoch).
    pub from_ms: Option<u64>,
    /// Only batches written before this time.
    pub to_ms: Option<u64>,
    /// Only batches whose text contains this (case-insensitive for ASCII).
    pub text: Option<String>,
    /// Only batches that arrived before this cursor.
    pub before: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// A crash group that is new or rising, for the overview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Movement {
    /// The group.
    pub group: Group,
    /// Reports received in the last 24 hours.
    pub last_day: u64,
    /// Reports received in the 24 hours before.
    pub day_before: u64,
    /// First seen in the last 24 hours.
    pub new: bool,
}

/// An application and the releases it was seen with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppSeen {
    /// The application.
    pub app: String,
    /// Its releases, with reports received in the window.
    pub releases: BTreeMap<String, u64>,
    /// Reports received in the window.
    pub reports: u64,
}

/// What the overview shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overview {
    /// Reports received per hour, oldest first; the last is the current hour.
    pub hourly: [u64; CHART_HOURS],
    /// Crash groups first seen in the last day, or with more reports in it than in the day before.
    pub moving: Vec<Movement>,
    /// Applications and releases that sent reports in the last two days.
    pub apps: Vec<AppSeen>,
    /// The latest loss counters of every agent.
    pub losses: Vec<LossesRow>,
    /// Crash groups in the store.
    pub group_count: u64,
}

/// A crash group's occurrences per day and by release and host, for its page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Occurrences (by creation time) per UTC day, the oldest of [`GROUP_CHART_DAYS`] days first,
    /// today last.
    pub daily: Vec<u64>,
    /// Occurrences per release, the most first (`""` for reports without one).
    pub releases: Vec<(String, u64)>,
    /// Occurrences per host, the most first (`""` for reports without one).
    pub hosts: Vec<(String, u64)>,
    /// The occurrences counted: at most [`GROUP_STATS_LIMIT`], the newest.
    pub counted: u64,
    /// Whether the group has more occurrences than were counted.
    pub capped: bool,
}

/// Counts a group's occurrences into [`GroupStats`], the same for both backends.
pub(super) struct StatsTally {
    chart_start: u64,
    daily: Vec<u64>,
    releases: HashMap<String, u64>,
    hosts: HashMap<String, u64>,
    counted: u64,
}

impl StatsTally {
    /// Nothing counted yet, for the page at `now_ms`.
    pub(super) fn new(now_ms: u64) -> Self {
        Self {
            chart_start: (now_ms / DAY_MS + 1).saturating_sub(GROUP_CHART_DAYS as u64) * DAY_MS,
            daily: vec![0; GROUP_CHART_DAYS],
            releases: HashMap::new(),
            hosts: HashMap::new(),
            counted: 0,
        }
    }

    /// Counts one occurrence.
    pub(super) fn add(&mut self, release: Option<&str>, host: Option<&str>, created: u64) {
        self.counted += 1;
        *self.releases.entry(release.unwrap_or_default().to_owned()).or_default() += 1;
        *self.hosts.entry(host.unwrap_or_default().to_owned()).or_default() += 1;
        if created >= self.chart_start
            && let Ok(day) = usize::try_from((created - self.chart_start) / DAY_MS)
            && let Some(n) = self.daily.get_mut(day)
        {
            *n += 1;
        }
    }

    /// The stats of rows read with a limit of `limit`.
    pub(super) fn finish(self, limit: u32) -> GroupStats {
        let sorted = |m: HashMap<String, u64>| {
            let mut v: Vec<(String, u64)> = m.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v
        };
        GroupStats {
            capped: self.counted >= u64::from(limit),
            daily: self.daily,
            releases: sorted(self.releases),
            hosts: sorted(self.hosts),
            counted: self.counted,
        }
    }
}

/// The read queries of the web UI. A backend that blocks does its work on a blocking thread. Every
/// method changes nothing and is cancel safe.
pub trait UiStore: Send + Sync + 'static {
    /// The overview at `now_ms` (collector's clock).
    fn overview(&self, now_ms: u64) -> impl Future<Output = Result<Overview, StoreError>> + Send;

    /// A page of crash groups; the flag says whether more follow.
    fn groups(
        &self,
        query: GroupQuery,
        now_ms: u64,
    ) -> impl Future<Output = Result<(Vec<GroupItem>, bool), StoreError>> + Send;

    /// One crash group.
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

    /// A group's occurrences per day over [`GROUP_CHART_DAYS`] days up to `now_ms`, and by release
    /// and host: of its newest [`GROUP_STATS_LIMIT`] reports.
    fn group_stats(
        &self,
        app: String,
        fingerprint: String,
        now_ms: u64,
    ) -> impl Future<Output = Result<GroupStats, StoreError>> + Send;

    /// One report with its body.
    fn report(&self, id: EntryId) -> impl Future<Output = Result<Option<StoredReport>, StoreError>> + Send;

    /// A page of log batches, newest first.
    fn logs(&self, query: LogQuery) -> impl Future<Output = Result<Page<ListedBody>, StoreError>> + Send;
}

/// The store the collector's `--store` names, whichever backend, behind the one [`UiStore`] interface.
#[derive(Clone, Debug)]
pub enum AnyUiStore {
    /// The embedded store, read on a read-only connection.
    Sqlite(SqliteUiStore),
    /// The shared store, read on a read-only pool of its own.
    Postgres(PostgresUiStore),
}

impl AnyUiStore {
    /// The UI's reader of the collector's `store`: its SQLite file opened read-only, or a pool of
    /// read-only connections to its PostgreSQL database (which connects at the first page load).
    pub async fn for_store(store: &AnyStore) -> Result<Self, StoreError> {
        match store {
            AnyStore::Sqlite(sqlite) => {
                let path = sqlite.path().to_owned();
                let opened = tokio::task::spawn_blocking(move || SqliteUiStore::open(&path))
                    .await
                    .map_err(|e| StoreError::Backend { op: "open the store", source: Box::new(e) })??;
                Ok(Self::Sqlite(opened))
            }
            AnyStore::Postgres(postgres) => Ok(Self::Postgres(PostgresUiStore::for_store(postgres)?)),
        }
    }
}

impl UiStore for AnyUiStore {
    async fn overview(&self, now_ms: u64) -> Result<Overview, StoreError> {
        match self {
            Self::Sqlite(s) => s.overview(now_ms).await,
            Self::Postgres(s) => s.overview(now_ms).await,
        }
    }

    async fn groups(&self, query: GroupQuery, now_ms: u64) -> Result<(Vec<GroupItem>, bool), StoreError> {
        match self {
            Self::Sqlite(s) => s.groups(query, now_ms).await,
            Self::Postgres(s) => s.groups(query, now_ms).await,
        }
    }

    async fn group(&self, app: String, fingerprint: String) -> Result<Option<Group>, StoreError> {
        match self {
            Self::Sqlite(s) => s.group(app, fingerprint).await,
            Self::Postgres(s) => s.group(app, fingerprint).await,
        }
    }

    async fn group_reports(
        &self,
        app: String,
        fingerprint: String,
        tag: Option<Tag>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page<Listed>, StoreError> {
        match self {
            Self::Sqlite(s) => s.group_reports(app, fingerprint, tag, before, limit).await,
            Self::Postgres(s) => s.group_reports(app, fingerprint, tag, before, limit).await,
        }
    }

    async fn group_stats(
        &self,
        app: String,
        fingerprint: String,
        now_ms: u64,
    ) -> Result<GroupStats, StoreError> {
        match self {
            Self::Sqlite(s) => s.group_stats(app, fingerprint, now_ms).await,
            Self::Postgres(s) => s.group_stats(app, fingerprint, now_ms).await,
        }
    }

    async fn report(&self, id: EntryId) -> Result<Option<StoredReport>, StoreError> {
        match self {
            Self::Sqlite(s) => s.report(id).await,
            Self::Postgres(s) => s.report(id).await,
        }
    }

    async fn logs(&self, query: LogQuery) -> Result<Page<ListedBody>, StoreError> {
        match self {
            Self::Sqlite(s) => s.logs(query).await,
            Self::Postgres(s) => s.logs(query).await,
        }
    }
}

/// The SQLite store of the collector, read on a read-only connection of the UI's own.
#[derive(Clone)]
pub struct SqliteUiStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteUiStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteUiStore").field("path", &self.path).finish_non_exhaustive()
    }
}

fn backend(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Backend { op, source: Box::new(e) }
}

fn from_sql_int(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const LISTED_COLUMNS: &str =
    "rowid, id, kind, app, release, host, created_ms, received_ms, fingerprint, summary";

fn listed(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, String, ReportRow)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        ReportRow {
            id: EntryId::from_u128(0),
            kind: Kind::Crash,
            app: r.get(3)?,
            release: r.get(4)?,
            host: r.get(5)?,
            created_ms: from_sql_int(r.get(6)?),
            received_ms: from_sql_int(r.get(7)?),
            fingerprint: r.get(8)?,
            summary: r.get(9)?,
        },
    ))
}

fn checked((seq, id, kind, mut row): (i64, String, String, ReportRow)) -> Result<Listed, StoreError> {
    row.id = id.parse().map_err(|_| StoreError::BadRow { what: "reports.id", value: id.clone() })?;
    row.kind = kind.parse().map_err(|_| StoreError::BadRow { what: "reports.kind", value: kind.clone() })?;
    Ok(Listed { seq, row })
}

fn group_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Group> {
    Ok(Group {
        app: r.get(0)?,
        fingerprint: r.get(1)?,
        title: r.get(2)?,
        count: from_sql_int(r.get(3)?),
        first_seen_ms: from_sql_int(r.get(4)?),
        last_seen_ms: from_sql_int(r.get(5)?),
    })
}

pub(super) const GROUP_COLUMNS: &str = "app, fingerprint, title, count, first_seen_ms, last_seen_ms";

/// `LIKE` pattern of "contains `text`", with `\` as the escape character.
pub(super) fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// The reports of a group read for its row in the list (releases and trend), newest first.
pub(super) const DETAILS_LIMIT: u32 = 10_000;

/// The overview's counts of the reports received in its window, the last two days (`since ..= now`),
/// fed by every backend in the way that suits it (SQLite: each report, read from the covering index
/// `reports_by_received`; PostgreSQL: counts aggregated by the server), so that both show the same
/// overview of the same reports.
pub(super) struct Tally {
    now_ms: u64,
    since: u64,
    hourly: [u64; CHART_HOURS],
    /// app -> fingerprint -> (reports in the last day, in the day before).
    per_group: HashMap<String, HashMap<String, (u64, u64)>>,
    apps: BTreeMap<String, AppSeen>,
}

impl Tally {
    /// Empty counts for the overview at `now_ms`.
    pub(super) fn new(now_ms: u64) -> Self {
        Self {
            now_ms,
            since: now_ms.saturating_sub(2 * DAY_MS),
            hourly: [0; CHART_HOURS],
            per_group: HashMap::new(),
            apps: BTreeMap::new(),
        }
    }

    /// The window: reports received from `since` to `now`, both included (collector's clock).
    pub(super) fn window(&self) -> (u64, u64) {
        (self.since, self.now_ms)
    }

    /// The start of the last day: reports received after it (not at it) are in the last day and in
    /// the chart.
    pub(super) fn last_day_after(&self) -> u64 {
        self.now_ms.saturating_sub(DAY_MS)
    }

    /// Counts one report received at `received`; one outside the window is not counted.
    pub(super) fn add(&mut self, app: &str, release: Option<&str>, fingerprint: Option<&str>, received: u64) {
        if received < self.since || received > self.now_ms {
            return;
        }
        let age = self.now_ms - received;
        self.add_hour(age / HOUR_MS, 1);
        self.add_reports(app, release, fingerprint, age < DAY_MS, 1);
    }

    /// Counts `n` reports received `hours_ago` whole hours before now; none past the chart.
    pub(super) fn add_hour(&mut self, hours_ago: u64, n: u64) {
        if let Ok(hours_ago) = usize::try_from(hours_ago)
            && hours_ago < CHART_HOURS
        {
            self.hourly[CHART_HOURS - 1 - hours_ago] += n;
        }
    }

    /// Counts `n` reports of the window of this app, release and (for crashes) group, received in
    /// the last day or in the day before; not in the chart (that is [`add_hour`](Self::add_hour)).
    pub(super) fn add_reports(
        &mut self,
        app: &str,
        release: Option<&str>,
        fingerprint: Option<&str>,
        last_day: bool,
        n: u64,
    ) {
        if let Some(fp) = fingerprint {
            let per_app = match self.per_group.get_mut(app) {
                Some(per_app) => per_app,
                None => self.per_group.entry(app.to_owned()).or_default(),
            };
            let counts = match per_app.get_mut(fp) {
                Some(counts) => counts,
                None => per_app.entry(fp.to_owned()).or_default(),
            };
            if last_day {
                counts.0 += n;
            } else {
                counts.1 += n;
            }
        }
        let seen = match self.apps.get_mut(app) {
            Some(seen) => seen,
            None => self.apps.entry(app.to_owned()).or_insert_with(|| AppSeen {
                app: app.to_owned(),
                releases: BTreeMap::new(),
                reports: 0,
            }),
        };
        seen.reports += n;
        let release = release.unwrap_or_default();
        match seen.releases.get_mut(release) {
            Some(count) => *count += n,
            None => {
                seen.releases.insert(release.to_owned(), n);
            }
        }
    }

    /// The `(app, fingerprint)` of the crash groups with reports in the two days.
    pub(super) fn group_keys(&self) -> impl Iterator<Item = (&String, &String)> {
        self.per_group.iter().flat_map(|(app, fps)| fps.keys().map(move |fp| (app, fp)))
    }

    /// The overview, given the rows of the groups of [`group_keys`](Self::group_keys) that the store
    /// has, its losses and its number of groups.
    pub(super) fn finish(self, groups: Vec<Group>, losses: Vec<LossesRow>, group_count: u64) -> Overview {
        let mut moving = Vec::new();
        for group in groups {
            let Some(&(last_day, day_before)) =
                self.per_group.get(&group.app).and_then(|fps| fps.get(&group.fingerprint))
            else {
                continue;
            };
            let new = group.first_seen_ms + DAY_MS >= self.now_ms;
            if new || last_day > day_before {
                moving.push(Movement { group, last_day, day_before, new });
            }
        }
        moving.sort_by(|a, b| {
            (b.last_day.saturating_sub(b.day_before), b.last_day)
                .cmp(&(a.last_day.saturating_sub(a.day_before), a.last_day))
        });
        moving.truncate(20);
        Overview { hourly: self.hourly, moving, apps: self.apps.into_values().collect(), losses, group_count }
    }
}

/// What a crash group's row in the list shows of its reports, fed with them newest first (at most
/// [`DETAILS_LIMIT`]).
pub(super) struct GroupDetails {
    trend_start: u64,
    releases: BTreeSet<String>,
    trend: [u64; TREND_DAYS],
}

impl GroupDetails {
    /// Nothing seen yet, for the list at `now_ms`.
    pub(super) fn new(now_ms: u64) -> Self {
        Self {
            trend_start: (now_ms / DAY_MS + 1).saturating_sub(TREND_DAYS as u64) * DAY_MS,
            releases: BTreeSet::new(),
            trend: [0; TREND_DAYS],
        }
    }

    /// Counts one report of the group.
    pub(super) fn add(&mut self, release: Option<String>, created: u64) {
        if let Some(release) = release {
            self.releases.insert(release);
        }
        if created >= self.trend_start
            && let Ok(day) = usize::try_from((created - self.trend_start) / DAY_MS)
            && day < TREND_DAYS
        {
            self.trend[day] += 1;
        }
    }

    /// The group's row in the list.
    pub(super) fn item(self, group: Group, kind: Option<String>) -> GroupItem {
        GroupItem { group, kind, releases: self.releases.into_iter().collect(), trend: self.trend }
    }
}

impl SqliteUiStore {
    /// Opens the store file `path` (`SqliteStore::path`) read-only. Blocking.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Missing { path: path.to_owned() });
        }
        let fail = |e: rusqlite::Error| StoreError::Open { path: path.to_owned(), source: Box::new(e) };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(fail)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(fail)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(fail)?;
        let known = crate::store::sqlite::SCHEMA_VERSION;
        if version != known {
            return Err(StoreError::Version { path: path.to_owned(), found: version, known });
        }
        Ok(Self { path: path.to_owned(), conn: Arc::new(Mutex::new(conn)) })
    }

    async fn with_conn<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // Read-only: a panic under the lock left nothing half-written.
            let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Backend { op, source: Box::new(e) })?
    }
}

/// Column `i` of `r`, text or NULL, borrowed from the row.
fn text_at<'r>(r: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<&'r str>> {
    r.get_ref(i)?
        .as_str_or_null()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
}

/// The reports of the overview's window. The covering index reports_by_received (received_ms, app,
/// release, fingerprint) holds every column read: a range scan of the index, without a table row or a
/// sort.
const OVERVIEW_WINDOW: &str = "SELECT app, release, fingerprint, received_ms FROM reports
     WHERE received_ms BETWEEN ?1 AND ?2";

fn overview(conn: &Connection, now_ms: u64) -> Result<Overview, StoreError> {
    let op = "read the overview";
    let mut tally = Tally::new(now_ms);
    let (since, now) = tally.window();
    let mut stmt = conn.prepare_cached(OVERVIEW_WINDOW).map_err(backend(op))?;
    let mut rows = stmt.query(params![to_sql_int(since), to_sql_int(now)]).map_err(backend(op))?;
    while let Some(r) = rows.next().map_err(backend(op))? {
        // Borrowed, not copied: most rows only raise the counts of names already seen.
        let app = text_at(r, 0).map_err(backend(op))?.unwrap_or_default();
        let received: i64 = r.get(3).map_err(backend(op))?;
        tally.add(
            app,
            text_at(r, 1).map_err(backend(op))?,
            text_at(r, 2).map_err(backend(op))?,
            from_sql_int(received),
        );
    }
    drop(rows);
    let mut found = Vec::new();
    let mut group_stmt = conn
        .prepare_cached(&format!("SELECT {GROUP_COLUMNS} FROM groups WHERE app = ?1 AND fingerprint = ?2"))
        .map_err(backend(op))?;
    for (app, fp) in tally.group_keys() {
        if let Some(group) =
            group_stmt.query_row(params![app, fp], group_row).optional().map_err(backend(op))?
        {
            found.push(group);
        }
    }
    let group_count: i64 =
        conn.query_row("SELECT count(*) FROM groups", [], |r| r.get(0)).map_err(backend(op))?;
    Ok(tally.finish(found, losses(conn)?, from_sql_int(group_count)))
}

fn losses(conn: &Connection) -> Result<Vec<LossesRow>, StoreError> {
    let op = "list losses";
    let mut stmt = conn
        .prepare(
            "SELECT app, host, release, agent_name, agent_version, logs_dropped, evicted,
                quarantined, crash_loop_suppressed, reported_ms, events_dropped
             FROM losses ORDER BY app, host LIMIT 500",
        )
        .map_err(backend(op))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(LossesRow {
                app: r.get(0)?,
                host: r.get(1)?,
                release: r.get(2)?,
                agent: Software { name: r.get(3)?, version: r.get(4)? },
                losses: Losses {
                    logs_dropped: from_sql_int(r.get(5)?),
                    evicted: from_sql_int(r.get(6)?),
                    quarantined: from_sql_int(r.get(7)?),
                    crash_loop_suppressed: from_sql_int(r.get(8)?),
                    events_dropped: from_sql_int(r.get(10)?),
                },
                reported_ms: from_sql_int(r.get(9)?),
            })
        })
        .map_err(backend(op))?;
    rows.collect::<rusqlite::Result<_>>().map_err(backend(op))
}

fn groups(conn: &Connection, q: &GroupQuery, now_ms: u64) -> Result<(Vec<GroupItem>, bool), StoreError> {
    let op = "list crash groups";
    // The kind of a group is the `type` of its latest report (one index probe per group).
    let sql = format!(
        "SELECT {GROUP_COLUMNS}, (SELECT json_extract(r.body, '$.type') FROM reports r
                WHERE r.app = g.app AND r.fingerprint = g.fingerprint ORDER BY r.rowid DESC LIMIT 1) AS kind
         FROM groups g
         WHERE (?1 IS NULL OR g.app = ?1)
           AND (?2 IS NULL OR EXISTS (SELECT 1 FROM reports r
                WHERE r.app = g.app AND r.fingerprint = g.fingerprint AND r.release = ?2))
           AND (?3 IS NULL OR kind = ?3)
           AND (?6 IS NULL OR EXISTS (SELECT 1 FROM report_tags t JOIN reports r ON r.id = t.id
                WHERE t.key = ?6 AND t.value = ?7 AND r.app = g.app AND r.fingerprint = g.fingerprint))
         ORDER BY {} {}, g.rowid LIMIT ?4 OFFSET ?5",
        q.sort.column(),
        if q.descending { "DESC" } else { "ASC" },
    );
    let (tag_key, tag_value) = q.tag.as_ref().map(|t| (&t.key, &t.value)).unzip();
    let mut stmt = conn.prepare(&sql).map_err(backend(op))?;
    let rows = stmt
        .query_map(params![q.app, q.release, q.kind, q.limit + 1, q.offset, tag_key, tag_value], |r| {
            Ok((group_row(r)?, r.get::<_, Option<String>>(6)?))
        })
        .map_err(backend(op))?;
    let mut found: Vec<(Group, Option<String>)> =
        rows.collect::<rusqlite::Result<_>>().map_err(backend(op))?;
    let more = found.len() > q.limit as usize;
    found.truncate(q.limit as usize);
    let mut details = conn
        .prepare_cached(&format!(
            "SELECT release, created_ms FROM reports WHERE app = ?1 AND fingerprint = ?2
             ORDER BY rowid DESC LIMIT {DETAILS_LIMIT}"
        ))
        .map_err(backend(op))?;
    let mut items = Vec::with_capacity(found.len());
    for (group, kind) in found {
        let mut seen = GroupDetails::new(now_ms);
        let mut rows = details.query(params![group.app, group.fingerprint]).map_err(backend(op))?;
        while let Some(r) = rows.next().map_err(backend(op))? {
            seen.add(r.get(0).map_err(backend(op))?, from_sql_int(r.get(1).map_err(backend(op))?));
        }
        items.push(seen.item(group, kind));
    }
    Ok((items, more))
}

/// A page of one group's reports. The index reports_by_fingerprint (app, fingerprint) holds the rowid:
/// a range scan in the order of the page, whatever the size of the store. A tag (?5 = ?6) is one
/// probe of report_tags' key (key, value, id) per report.
fn group_reports_sql() -> String {
    format!(
        "SELECT {LISTED_COLUMNS} FROM reports
         WHERE app = ?1 AND fingerprint = ?2 AND (?3 IS NULL OR rowid < ?3)
           AND (?5 IS NULL OR EXISTS (SELECT 1 FROM report_tags t
                WHERE t.key = ?5 AND t.value = ?6 AND t.id = reports.id))
         ORDER BY rowid DESC LIMIT ?4"
    )
}

/// The page of `limit` items out of `items`, which holds one more when an older page follows.
pub(super) fn page<T>(mut items: Vec<T>, limit: u32, seq: impl Fn(&T) -> i64) -> Page<T> {
    let next_before = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(seq)
    } else {
        None
    };
    Page { items, next_before }
}

fn logs(conn: &Connection, q: &LogQuery) -> Result<Page<ListedBody>, StoreError> {
    let op = "list log batches";
    let levels = if q.levels.is_empty() { None } else { Some(q.levels.join(",")) };
    let sql = format!(
        "SELECT {LISTED_COLUMNS}, body FROM reports
         WHERE kind = 'log' AND (?1 IS NULL OR rowid < ?1) AND (?2 IS NULL OR app = ?2)
           AND (?3 IS NULL OR created_ms >= ?3) AND (?4 IS NULL OR created_ms < ?4)
           AND (?5 IS NULL OR body LIKE ?5 ESCAPE '\\')
           AND (?6 IS NULL OR EXISTS (SELECT 1 FROM json_each(body, '$.records') e
                WHERE instr(',' || ?6 || ',', ',' || upper(json_extract(e.value, '$.level')) || ',') > 0))
         ORDER BY rowid DESC LIMIT ?7"
    );
    let mut stmt = conn.prepare(&sql).map_err(backend(op))?;
    let rows = stmt
        .query_map(
            params![
                q.before,
                q.app,
                q.from_ms.map(to_sql_int),
                q.to_ms.map(to_sql_int),
                q.text.as_deref().map(contains_pattern),
                levels,
                q.limit + 1
            ],
            |r| Ok((listed(r)?, r.get::<_, String>(10)?)),
        )
        .map_err(backend(op))?;
    let mut items = Vec::new();
    for row in rows {
        let (l, body) = row.map_err(backend(op))?;
        items.push(ListedBody { listed: checked(l)?, body });
    }
    Ok(page(items, q.limit, |b| b.listed.seq))
}

impl UiStore for SqliteUiStore {
    async fn overview(&self, now_ms: u64) -> Result<Overview, StoreError> {
        self.with_conn("read the overview", move |conn| overview(conn, now_ms)).await
    }

    async fn groups(&self, query: GroupQuery, now_ms: u64) -> Result<(Vec<GroupItem>, bool), StoreError> {
        self.with_conn("list crash groups", move |conn| groups(conn, &query, now_ms)).await
    }

    async fn group(&self, app: String, fingerprint: String) -> Result<Option<Group>, StoreError> {
        self.with_conn("read a crash group", move |conn| {
            conn.query_row(
                &format!("SELECT {GROUP_COLUMNS} FROM groups WHERE app = ?1 AND fingerprint = ?2"),
                params![app, fingerprint],
                group_row,
            )
            .optional()
            .map_err(backend("read a crash group"))
        })
        .await
    }

    async fn group_reports(
        &self,
        app: String,
        fingerprint: String,
        tag: Option<Tag>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page<Listed>, StoreError> {
        let op = "list a group's reports";
        self.with_conn(op, move |conn| {
            let (key, value) = tag.map(|t| (t.key, t.value)).unzip();
            let mut stmt = conn.prepare_cached(&group_reports_sql()).map_err(backend(op))?;
            let rows = stmt
                .query_map(params![app, fingerprint, before, limit + 1, key, value], listed)
                .map_err(backend(op))?;
            let mut items = Vec::new();
            for row in rows {
                items.push(checked(row.map_err(backend(op))?)?);
            }
            Ok(page(items, limit, |l| l.seq))
        })
        .await
    }

    async fn group_stats(
        &self,
        app: String,
        fingerprint: String,
        now_ms: u64,
    ) -> Result<GroupStats, StoreError> {
        let op = "count a group's occurrences";
        self.with_conn(op, move |conn| {
            // The newest of the group, through reports_by_fingerprint (app, fingerprint), which
            // holds the rowid: a range scan in the order of the limit.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT release, host, created_ms FROM reports WHERE app = ?1 AND fingerprint = ?2
                     ORDER BY rowid DESC LIMIT ?3",
                )
                .map_err(backend(op))?;
            let mut tally = StatsTally::new(now_ms);
            let mut rows = stmt.query(params![app, fingerprint, GROUP_STATS_LIMIT]).map_err(backend(op))?;
            while let Some(r) = rows.next().map_err(backend(op))? {
                let created: i64 = r.get(2).map_err(backend(op))?;
                tally.add(
                    text_at(r, 0).map_err(backend(op))?,
                    text_at(r, 1).map_err(backend(op))?,
                    from_sql_int(created),
                );
            }
            Ok(tally.finish(GROUP_STATS_LIMIT))
        })
        .await
    }

    async fn report(&self, id: EntryId) -> Result<Option<StoredReport>, StoreError> {
        let op = "read a report";
        self.with_conn(op, move |conn| {
            let sql = format!("SELECT {LISTED_COLUMNS}, body FROM reports WHERE id = ?1");
            let found = conn
                .query_row(&sql, params![id.to_string()], |r| Ok((listed(r)?, r.get::<_, String>(10)?)))
                .optional()
                .map_err(backend(op))?;
            found.map(|(row, body)| Ok(StoredReport { row: checked(row)?.row, body })).transpose()
        })
        .await
    }

    async fn logs(&self, query: LogQuery) -> Result<Page<ListedBody>, StoreError> {
        self.with_conn("list log batches", move |conn| logs(conn, &query)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_of_a_group_reads_its_index_without_sorting() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = crate::store::SqliteStore::open(dir.path()).expect("a new store");
        let ui = SqliteUiStore::open(store.path()).expect("opened read-only");
        let conn = ui.conn.lock().expect("not poisoned");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", group_reports_sql()))
            .expect("prepared")
            .query_map(params!["app", "fp", 10, 50, None::<String>, None::<String>], |r| {
                r.get::<_, String>(3)
            })
            .expect("planned")
            .collect::<rusqlite::Result<_>>()
            .expect("read");
        let plan = plan.join("\n");
        assert!(plan.contains("reports_by_fingerprint"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn the_overview_counts_from_the_covering_index_alone() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = crate::store::SqliteStore::open(dir.path()).expect("a new store");
        let ui = SqliteUiStore::open(store.path()).expect("opened read-only");
        let conn = ui.conn.lock().expect("not poisoned");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {OVERVIEW_WINDOW}"))
            .expect("prepared")
            .query_map(params![0, 1], |r| r.get::<_, String>(3))
            .expect("planned")
            .collect::<rusqlite::Result<_>>()
            .expect("read");
        let plan = plan.join("\n");
        assert!(plan.contains("COVERING INDEX reports_by_received"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn contains_pattern_escapes_like_wildcards() {
        assert_eq!(contains_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }
}
