//! The embedded store: one SQLite file, `DIR/lastword.sqlite`, in WAL mode with `synchronous=FULL`, so a
//! committed transaction survives a crash of the process and of the machine. The schema is described in
//! agent/collector/STORE.md; its version is SQLite's `user_version`.
//!
//! One connection, behind a mutex, used from blocking threads (`spawn_blocking`): the collector's
//! committer is the only writer, so the mutex is not contended on the ingest path. Readers (`lastword
//! store`, the web UI) open the file read-only on a connection of their own. The web UI's queries are
//! in `sqlite/reads.rs`; this file holds the schema, its migrations, the write and the
//! `lastword store` queries.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use lastword_spool::{EntryId, Kind};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

mod debug_files;
mod reads;
mod waits;

use super::batch;
use super::reads::{GroupItem, GroupQuery, GroupStats, Listed, ListedBody, LogQuery, Overview, Page, Tag};
use super::{
    Batch, Group, GroupFilter, KindGroup, LossesRow, Outcome, ReportFilter, ReportRow, Store, StoreError,
    StoredReport, backend, from_sql_int, to_sql_int,
};

/// The file name of the store inside its directory.
pub const FILE_NAME: &str = "lastword.sqlite";
/// The schema version this program writes (STORE.md).
pub const SCHEMA_VERSION: i64 = 5;

/// The schema of version 1. Never edited: later versions are [`MIGRATIONS`].
const SCHEMA: &str = "
CREATE TABLE reports (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    app         TEXT NOT NULL,
    release     TEXT,
    host        TEXT,
    created_ms  INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    fingerprint TEXT,
    summary     TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX reports_by_fingerprint ON reports (app, fingerprint) WHERE fingerprint IS NOT NULL;
CREATE TABLE groups (
    app           TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    title         TEXT NOT NULL,
    count         INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    PRIMARY KEY (app, fingerprint)
);
CREATE TABLE losses (
    app                   TEXT NOT NULL,
    host                  TEXT NOT NULL,
    release               TEXT,
    agent_name            TEXT NOT NULL,
    agent_version         TEXT NOT NULL,
    logs_dropped          INTEGER NOT NULL,
    evicted               INTEGER NOT NULL,
    quarantined           INTEGER NOT NULL,
    crash_loop_suppressed INTEGER NOT NULL,
    reported_ms           INTEGER NOT NULL,
    PRIMARY KEY (app, host)
);
";

/// The migrations after version 1 ([`SCHEMA`]), in order: `MIGRATIONS[n]` takes the schema from version
/// `n + 1` to `n + 2`. A new file gets `SCHEMA` and then every migration. Appended to, never edited.
const MIGRATIONS: &[&str] = &[
    // 1 -> 2: the web UI's overview counts the reports of the last two days from this index alone.
    "CREATE INDEX reports_by_received ON reports (received_ms, app, release, fingerprint);",
    // 2 -> 3: the tags of each report's scope, for `lastword store ... --tag KEY=VALUE`. Reports
    // stored before have none.
    "CREATE TABLE report_tags (
        id    TEXT NOT NULL,
        key   TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (key, value, id)
    ) WITHOUT ROWID;",
    // 3 -> 4: the events each agent dropped (queue full), beside its logs dropped. Rows of agents
    // that have not connected since read 0.
    "ALTER TABLE losses ADD COLUMN events_dropped INTEGER NOT NULL DEFAULT 0;",
    // 4 -> 5: the debug files uploaded (sqlite/debug_files.rs; the files are in DIR/debug-files/), and
    // which reports wait for which of them (store/waits.rs). Reports stored before wait for none.
    "CREATE TABLE debug_files (
        build_id    TEXT NOT NULL,
        kind        TEXT NOT NULL,
        file_name   TEXT NOT NULL,
        size        INTEGER NOT NULL,
        sha256      TEXT NOT NULL,
        uploaded_ms INTEGER NOT NULL,
        PRIMARY KEY (build_id, kind)
    ) WITHOUT ROWID;
    CREATE TABLE symbol_waits (
        build_id TEXT NOT NULL,
        id       TEXT NOT NULL,
        PRIMARY KEY (build_id, id)
    ) WITHOUT ROWID;
    CREATE INDEX symbol_waits_by_id ON symbol_waits (id);",
];

const INSERT_WAIT: &str = "INSERT INTO symbol_waits (build_id, id) VALUES (?1, ?2) ON CONFLICT DO NOTHING";

const INSERT_TAG: &str =
    "INSERT INTO report_tags (id, key, value) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";

const INSERT_REPORT: &str = "INSERT INTO reports
    (id, kind, app, release, host, created_ms, received_ms, fingerprint, summary, body)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING";

const UPSERT_GROUP: &str = "INSERT INTO groups (app, fingerprint, title, count, first_seen_ms, last_seen_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT (app, fingerprint) DO UPDATE SET count = count + excluded.count,
        first_seen_ms = min(first_seen_ms, excluded.first_seen_ms),
        last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)";

const UPSERT_LOSSES: &str = "INSERT INTO losses (app, host, release, agent_name, agent_version,
        logs_dropped, evicted, quarantined, crash_loop_suppressed, reported_ms, events_dropped)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
    ON CONFLICT (app, host) DO UPDATE SET release = excluded.release, agent_name = excluded.agent_name,
        agent_version = excluded.agent_version, logs_dropped = excluded.logs_dropped,
        evicted = excluded.evicted, quarantined = excluded.quarantined,
        crash_loop_suppressed = excluded.crash_loop_suppressed, reported_ms = excluded.reported_ms,
        events_dropped = excluded.events_dropped";

/// Groups with the kind of their reports (any one of them: a fingerprint is of one kind), filtered by
/// app (?1), kind (?2) and a tag (?3 = ?4) some report of the group has; ?5 the limit.
const GROUPS_OF: &str = "SELECT app, fingerprint, title, count, first_seen_ms, last_seen_ms, kind FROM (
        SELECT g.*, (SELECT r.kind FROM reports r WHERE r.app = g.app AND r.fingerprint = g.fingerprint
                     LIMIT 1) AS kind
        FROM groups g WHERE (?1 IS NULL OR g.app = ?1)
    ) AS x
    WHERE (?2 IS NULL OR coalesce(x.kind, 'crash') = ?2)
      AND (?3 IS NULL OR EXISTS (SELECT 1 FROM report_tags t JOIN reports r ON r.id = t.id
                                 WHERE t.key = ?3 AND t.value = ?4
                                   AND r.app = x.app AND r.fingerprint = x.fingerprint))
    ORDER BY last_seen_ms DESC, count DESC LIMIT ?5";

const REPORT_COLUMNS: &str = "id, kind, app, release, host, created_ms, received_ms, fingerprint, summary";

/// The SQLite store of one directory.
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the store in `dir` for the collector, creating the directory, the file and the schema when
    /// they are missing. Blocking: call it before serving, or from a blocking thread.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(FILE_NAME);
        let fail = |e: BackendError| StoreError::Open { path: path.clone(), source: e };
        std::fs::create_dir_all(dir).map_err(|e| fail(Box::new(e)))?;
        let mut conn = Connection::open(&path).map_err(|e| fail(Box::new(e)))?;
        // WAL: readers (people's queries) never block the writer. FULL: the WAL is fsynced at every
        // commit, so an answered `accepted` survives a power cut, not only a crash of the process.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;
             PRAGMA cache_size = -16000; PRAGMA wal_autocheckpoint = 4000;",
        )
        .map_err(|e| fail(Box::new(e)))?;
        let mode: String =
            conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(|e| fail(Box::new(e)))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(fail(format!("journal_mode is {mode}, not wal").into()));
        }
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| fail(Box::new(e)))?;
        let version: i64 =
            tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| fail(Box::new(e)))?;
        match version {
            SCHEMA_VERSION => {}
            found if (0..SCHEMA_VERSION).contains(&found) => {
                if found == 0 {
                    tx.execute_batch(SCHEMA).map_err(|e| fail(Box::new(e)))?;
                }
                for sql in MIGRATIONS.iter().skip(usize::try_from(found.max(1) - 1).unwrap_or(0)) {
                    tx.execute_batch(sql).map_err(|e| fail(Box::new(e)))?;
                }
                tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(|e| fail(Box::new(e)))?;
            }
            found => return Err(StoreError::Version { path, found, known: SCHEMA_VERSION }),
        }
        tx.commit().map_err(|e| fail(Box::new(e)))?;
        Ok(Self { path, conn: Arc::new(Mutex::new(conn)) })
    }

    /// Opens an existing store in `dir` read-only, for queries. Blocking.
    pub fn open_read_only(dir: &Path) -> Result<Self, StoreError> {
        Self::read_only_file(dir.join(FILE_NAME))
    }

    /// The same store opened again, read-only, on a connection of its own: the web UI's reader, whose
    /// reads never wait for the collector's writer (WAL readers do not block it). Blocking.
    pub fn reader(&self) -> Result<Self, StoreError> {
        Self::read_only_file(self.path.clone())
    }

    fn read_only_file(path: PathBuf) -> Result<Self, StoreError> {
        if !path.is_file() {
            return Err(StoreError::Missing { path });
        }
        let fail = |e: rusqlite::Error| StoreError::Open { path: path.clone(), source: Box::new(e) };
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(fail)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(fail)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(fail)?;
        if version != SCHEMA_VERSION {
            return Err(StoreError::Version { path, found: version, known: SCHEMA_VERSION });
        }
        Ok(Self { path, conn: Arc::new(Mutex::new(conn)) })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection on a blocking thread.
    async fn with_conn<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held can only have happened inside rusqlite calls, after
            // which the transaction (if any) was rolled back by its Drop: the connection is usable.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Backend { op, source: Box::new(e) })?
    }
}

type BackendError = super::BackendError;

fn write_batch(conn: &mut Connection, batch: &Batch) -> rusqlite::Result<Vec<Outcome>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let effects = {
        let mut insert = tx.prepare_cached(INSERT_REPORT)?;
        let mut insert_tag = tx.prepare_cached(INSERT_TAG)?;
        let mut insert_wait = tx.prepare_cached(INSERT_WAIT)?;
        let mut inserted = Vec::with_capacity(batch.reports.len());
        for r in &batch.reports {
            let new = insert.execute(params![
                r.id.to_string(),
                r.kind.as_str(),
                r.origin.app,
                r.origin.release,
                r.origin.host,
                to_sql_int(r.created_ms),
                to_sql_int(r.received_ms),
                r.fingerprint,
                r.summary,
                r.body,
            ])? == 1;
            if new {
                for (key, value) in crate::fingerprint::tags(&r.body) {
                    insert_tag.execute(params![r.id.to_string(), key, value])?;
                }
                for build_id in &r.waits {
                    insert_wait.execute(params![build_id, r.id.to_string()])?;
                }
            }
            inserted.push(new);
        }
        let effects = batch::effects(&batch.reports, |i| inserted[i]);
        // Crashes of one group in one batch raise its row once (same result, fewer B-tree updates).
        let mut group = tx.prepare_cached(UPSERT_GROUP)?;
        for g in &effects.gains {
            group.execute(params![
                g.app,
                g.fingerprint,
                g.title,
                g.count,
                to_sql_int(g.first_ms),
                to_sql_int(g.last_ms)
            ])?;
        }
        let mut losses = tx.prepare_cached(UPSERT_LOSSES)?;
        for l in batch::latest_losses(&batch.losses) {
            let o = &l.origin;
            losses.execute(params![
                o.app,
                o.host.as_deref().unwrap_or(""),
                o.release,
                o.agent.name,
                o.agent.version,
                to_sql_int(l.losses.logs_dropped),
                to_sql_int(l.losses.evicted),
                to_sql_int(l.losses.quarantined),
                to_sql_int(l.losses.crash_loop_suppressed),
                to_sql_int(l.received_ms),
                to_sql_int(l.losses.events_dropped),
            ])?;
        }
        effects
    };
    tx.commit()?;
    Ok(effects.outcomes)
}

fn report_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, ReportRow)> {
    report_row_at(r, 0)
}

/// The [`REPORT_COLUMNS`] of `r` from column `first` on: the id and kind as text (for [`checked`]),
/// and the row.
pub(super) fn report_row_at(
    r: &rusqlite::Row<'_>,
    first: usize,
) -> rusqlite::Result<(String, String, ReportRow)> {
    let at = |i: usize| first + i;
    Ok((
        r.get(at(0))?,
        r.get(at(1))?,
        ReportRow {
            id: EntryId::from_u128(0),
            kind: Kind::Crash,
            app: r.get(at(2))?,
            release: r.get(at(3))?,
            host: r.get(at(4))?,
            created_ms: from_sql_int(r.get(at(5))?),
            received_ms: from_sql_int(r.get(at(6))?),
            fingerprint: r.get(at(7))?,
            summary: r.get(at(8))?,
        },
    ))
}

/// A group of its first six columns: app, fingerprint, title, count, first and last seen.
pub(super) fn group_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Group> {
    Ok(Group {
        app: r.get(0)?,
        fingerprint: r.get(1)?,
        title: r.get(2)?,
        count: from_sql_int(r.get(3)?),
        first_seen_ms: from_sql_int(r.get(4)?),
        last_seen_ms: from_sql_int(r.get(5)?),
    })
}

/// Fills in the id and kind read as text, refusing values this program did not write.
pub(super) fn checked((id, kind, mut row): (String, String, ReportRow)) -> Result<ReportRow, StoreError> {
    row.id = id.parse().map_err(|_| StoreError::BadRow { what: "reports.id", value: id.clone() })?;
    row.kind = kind.parse().map_err(|_| StoreError::BadRow { what: "reports.kind", value: kind.clone() })?;
    Ok(row)
}

impl Store for SqliteStore {
    async fn write(&self, batch: Batch) -> Result<Vec<Outcome>, StoreError> {
        self.with_conn("write a batch", move |conn| {
            write_batch(conn, &batch).map_err(backend("write a batch"))
        })
        .await
    }

    async fn reports(&self, filter: ReportFilter) -> Result<Vec<ReportRow>, StoreError> {
        self.with_conn("list reports", move |conn| {
            let sql = format!(
                "SELECT {REPORT_COLUMNS} FROM reports
                 WHERE (?1 IS NULL OR app = ?1) AND (?2 IS NULL OR kind = ?2) AND (?3 IS NULL OR fingerprint = ?3)
                   AND (?5 IS NULL OR id IN (SELECT id FROM report_tags WHERE key = ?5 AND value = ?6))
                 ORDER BY rowid DESC LIMIT ?4"
            );
            let mut stmt = conn.prepare(&sql).map_err(backend("list reports"))?;
            let (key, value) = filter.tag.unzip();
            let rows = stmt
                .query_map(
                    params![filter.app, filter.kind.map(Kind::as_str), filter.fingerprint, filter.limit, key, value],
                    report_row,
                )
                .map_err(backend("list reports"))?;
            rows.map(|r| r.map_err(backend("list reports")).and_then(checked)).collect()
        })
        .await
    }

    async fn report(&self, id: EntryId) -> Result<Option<StoredReport>, StoreError> {
        self.with_conn("read a report", move |conn| {
            let sql = format!("SELECT {REPORT_COLUMNS}, body FROM reports WHERE id = ?1");
            let found = conn
                .query_row(&sql, params![id.to_string()], |r| Ok((report_row(r)?, r.get::<_, String>(9)?)))
                .optional()
                .map_err(backend("read a report"))?;
            found.map(|(row, body)| Ok(StoredReport { row: checked(row)?, body })).transpose()
        })
        .await
    }

    async fn groups(&self, app: Option<String>, limit: u32) -> Result<Vec<Group>, StoreError> {
        self.with_conn("list groups", move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT app, fingerprint, title, count, first_seen_ms, last_seen_ms FROM groups
                     WHERE (?1 IS NULL OR app = ?1) ORDER BY last_seen_ms DESC, count DESC LIMIT ?2",
                )
                .map_err(backend("list groups"))?;
            let rows = stmt.query_map(params![app, limit], group_row).map_err(backend("list groups"))?;
            rows.collect::<rusqlite::Result<_>>().map_err(backend("list groups"))
        })
        .await
    }

    async fn groups_of(&self, filter: GroupFilter) -> Result<Vec<KindGroup>, StoreError> {
        const OP: &str = "list groups";
        self.with_conn(OP, move |conn| {
            let mut stmt = conn.prepare_cached(GROUPS_OF).map_err(backend(OP))?;
            let (key, value) = filter.tag.unzip();
            let rows = stmt
                .query_map(
                    params![filter.app, filter.kind.map(Kind::as_str), key, value, filter.limit],
                    |r| Ok((r.get::<_, Option<String>>(6)?, group_row(r)?)),
                )
                .map_err(backend(OP))?;
            let mut out = Vec::new();
            for row in rows {
                let (kind, group) = row.map_err(backend(OP))?;
                // A group whose reports were purged since has no kind left to tell: a crash group
                // (groups were only crashes' before events).
                let kind = match kind {
                    None => Kind::Crash,
                    Some(k) => {
                        k.parse().map_err(|_| StoreError::BadRow { what: "reports.kind", value: k })?
                    }
                };
                out.push(KindGroup { kind, group });
            }
            Ok(out)
        })
        .await
    }

    async fn losses(&self) -> Result<Vec<LossesRow>, StoreError> {
        self.with_conn("list losses", move |conn| reads::losses(conn, u32::MAX)).await
    }

    async fn overview(&self, now_ms: u64) -> Result<Overview, StoreError> {
        self.with_conn("read the overview", move |conn| reads::overview(conn, now_ms)).await
    }

    async fn group_page(&self, query: GroupQuery, now_ms: u64) -> Result<(Vec<GroupItem>, bool), StoreError> {
        self.with_conn("list crash groups", move |conn| reads::groups(conn, &query, now_ms)).await
    }

    async fn group(&self, app: String, fingerprint: String) -> Result<Option<Group>, StoreError> {
        self.with_conn("read a crash group", move |conn| reads::group(conn, &app, &fingerprint)).await
    }

    async fn group_reports(
        &self,
        app: String,
        fingerprint: String,
        tag: Option<Tag>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page<Listed>, StoreError> {
        self.with_conn("list a group's reports", move |conn| {
            reads::group_reports(conn, &app, &fingerprint, tag, before, limit)
        })
        .await
    }

    async fn group_stats(
        &self,
        app: String,
        fingerprint: String,
        now_ms: u64,
    ) -> Result<GroupStats, StoreError> {
        self.with_conn("count a group's occurrences", move |conn| {
            reads::group_stats(conn, &app, &fingerprint, now_ms)
        })
        .await
    }

    async fn logs(&self, query: LogQuery) -> Result<Page<ListedBody>, StoreError> {
        self.with_conn("list log batches", move |conn| reads::logs(conn, &query)).await
    }
}

#[cfg(test)]
mod tests {
    use lastword_protocol::{Losses, Software};

    use super::*;
    use crate::store::{AgentLosses, NewReport, Origin};

    fn origin(app: &str, host: Option<&str>) -> Arc<Origin> {
        Arc::new(Origin {
            agent: Software { name: "lastword".into(), version: "0.1.0".into() },
            app: app.into(),
            release: Some("1.0".into()),
            host: host.map(Into::into),
        })
    }

    fn crash(id: EntryId, fingerprint: &str, created_ms: u64) -> NewReport {
        NewReport {
            id,
            kind: Kind::Crash,
            origin: origin("app", Some("h")),
            created_ms,
            received_ms: created_ms + 1,
            fingerprint: Some(fingerprint.into()),
            summary: format!("crash {fingerprint}"),
            body: r#"{"message":"boom"}"#.into(),
            waits: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_report_id_is_stored_once_and_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let (a, b) = (EntryId::generate(), EntryId::generate());
        let batch =
            Batch { reports: vec![crash(a, "g", 10), crash(a, "g", 10), crash(b, "g", 30)], losses: vec![] };
        let outcomes = store.write(batch).await.unwrap();
        assert_eq!(outcomes, [Outcome::Inserted, Outcome::Duplicate, Outcome::Inserted]);
        let again = store.write(Batch { reports: vec![crash(b, "g", 30)], losses: vec![] }).await.unwrap();
        assert_eq!(again, [Outcome::Duplicate]);
        let groups = store.groups(None, 10).await.unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!((groups[0].count, groups[0].first_seen_ms, groups[0].last_seen_ms), (2, 10, 30));
        assert_eq!(groups[0].title, "crash g");
        let rows = store.reports(ReportFilter { limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [b, a]);
        let shown = store.report(a).await.unwrap().unwrap();
        assert_eq!(shown.body, r#"{"message":"boom"}"#);
        assert_eq!(shown.row.release.as_deref(), Some("1.0"));
        assert!(store.report(EntryId::generate()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_latest_losses_per_app_and_host_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let losses = |n, host| AgentLosses {
            origin: origin("app", host),
            losses: Losses { evicted: n, ..Losses::default() },
            received_ms: n,
        };
        let batch =
            Batch { reports: vec![], losses: vec![losses(1, None), losses(2, None), losses(5, Some("b"))] };
        store.write(batch).await.unwrap();
        let rows = store.losses().await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].host.as_str(), rows[0].losses.evicted), ("", 2));
        assert_eq!((rows[1].host.as_str(), rows[1].losses.evicted), ("b", 5));
    }

    #[tokio::test]
    async fn a_store_reopens_and_is_readable_read_only() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(SqliteStore::open_read_only(dir.path()), Err(StoreError::Missing { .. })));
        let id = EntryId::generate();
        {
            let store = SqliteStore::open(dir.path()).unwrap();
            store.write(Batch { reports: vec![crash(id, "g", 1)], losses: vec![] }).await.unwrap();
        }
        let reopened = SqliteStore::open(dir.path()).unwrap();
        let outcome =
            reopened.write(Batch { reports: vec![crash(id, "g", 1)], losses: vec![] }).await.unwrap();
        assert_eq!(outcome, [Outcome::Duplicate]);
        drop(reopened);
        let reader = SqliteStore::open_read_only(dir.path()).unwrap();
        assert!(reader.report(id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_store_of_schema_version_1_is_migrated_and_keeps_its_reports() {
        let dir = tempfile::tempdir().unwrap();
        let id = EntryId::generate();
        {
            // A store as version 1 made it: its schema, one report.
            let conn = Connection::open(dir.path().join(FILE_NAME)).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO reports (id, kind, app, created_ms, received_ms, summary, body)
                 VALUES (?1, 'log', 'app', 1, 2, '', '{}')",
                params![id.to_string()],
            )
            .unwrap();
        }
        let old = SqliteStore::open_read_only(dir.path()).unwrap_err();
        assert!(matches!(old, StoreError::Version { found: 1, known: SCHEMA_VERSION, .. }), "{old}");
        let store = SqliteStore::open(dir.path()).unwrap();
        assert!(store.report(id).await.unwrap().is_some());
        drop(store);
        let reader = SqliteStore::open_read_only(dir.path()).unwrap();
        {
            let conn = reader.conn.lock().unwrap();
            let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
            assert_eq!(version, SCHEMA_VERSION);
            let indexes: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'reports_by_received'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(indexes, 1);
        }
        assert!(reader.report(id).await.unwrap().is_some());
    }

    #[test]
    fn a_new_store_has_the_schema_of_a_migrated_one() {
        let fresh = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(fresh.path()).unwrap());
        let old = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(old.path().join(FILE_NAME)).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        drop(SqliteStore::open(old.path()).unwrap());
        let schema = |dir: &Path| {
            let conn = Connection::open(dir.join(FILE_NAME)).unwrap();
            let mut stmt = conn.prepare("SELECT type, name, sql FROM sqlite_master ORDER BY name").unwrap();
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?))
                })
                .unwrap();
            rows.collect::<rusqlite::Result<Vec<_>>>().unwrap()
        };
        assert_eq!(schema(fresh.path()), schema(old.path()));
    }
}
