//! The shared store: one PostgreSQL database that several collectors write at once. The schema is
//! described in agent/collector/STORE.md; its version is the row of `lastword_schema`, and the migrations below
//! are applied at start, under an advisory lock so that collectors starting together do not race.
//!
//! Exactly-once across collectors comes from the database: the report id is the primary key, reports
//! are inserted with `ON CONFLICT DO NOTHING ... RETURNING id`, and a crash group's count is raised, in
//! the same transaction, only by the rows that insert returned. A batch is one transaction; `write`
//! returns after its commit (`synchronous_commit` as the server has it: `on` by default, durable).
//!
//! Connections come from a bounded pool (deadpool-postgres). A database that is down, or a batch that
//! takes longer than [`WRITE_TIMEOUT`], makes `write` fail: the committer answers `retry_later`, and the
//! next batch tries a new connection, so the collector recovers by itself when the database returns.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use lastword_protocol::{Losses, Software};
use lastword_spool::{EntryId, Kind};
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;
use tokio_postgres_rustls::MakeRustlsConnect;

mod debug_files;
mod reads;
mod tls;
mod waits;

pub use reads::{UI_POOL_SIZE, UI_STATEMENT_TIMEOUT};

use super::batch;
use super::reads::{GroupItem, GroupQuery, GroupStats, Listed, ListedBody, LogQuery, Overview, Page, Tag};
use super::{
    Batch, Group, GroupFilter, KindGroup, LossesRow, Outcome, ReportFilter, ReportRow, Store, StoreError,
    StoredReport, backend, from_sql_int, to_sql_int,
};

/// The schema version this program writes (STORE.md).
pub const SCHEMA_VERSION: i64 = 5;
/// Connections the pool keeps at most: the committer uses one at a time, queries the others.
pub const POOL_SIZE: usize = 4;
/// Longest wait for a connection (from the pool or a new one) before the batch is refused.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a batch may take, commit included, before it is answered `retry_later`.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The migrations, in order: `MIGRATIONS[n]` takes the schema from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE reports (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    app         TEXT NOT NULL,
    release     TEXT,
    host        TEXT,
    created_ms  BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    fingerprint TEXT,
    summary     TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE UNIQUE INDEX reports_recent ON reports (seq);
CREATE INDEX reports_by_group ON reports (app, fingerprint, seq) WHERE fingerprint IS NOT NULL;
CREATE INDEX reports_by_release ON reports (app, release, seq);
CREATE INDEX reports_by_kind ON reports (kind, seq);
CREATE TABLE groups (
    app           TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    title         TEXT NOT NULL,
    count         BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    PRIMARY KEY (app, fingerprint)
);
CREATE INDEX groups_recent ON groups (last_seen_ms DESC, count DESC);
CREATE INDEX groups_by_count ON groups (count DESC);
CREATE TABLE losses (
    app                   TEXT NOT NULL,
    host                  TEXT NOT NULL,
    release               TEXT,
    agent_name            TEXT NOT NULL,
    agent_version         TEXT NOT NULL,
    logs_dropped          BIGINT NOT NULL,
    evicted               BIGINT NOT NULL,
    quarantined           BIGINT NOT NULL,
    crash_loop_suppressed BIGINT NOT NULL,
    reported_ms           BIGINT NOT NULL,
    PRIMARY KEY (app, host)
);
",
    // 2: the web UI's overview counts the reports of the last two days from this index alone (an
    // index-only scan where the visibility map allows it).
    "CREATE INDEX reports_by_received ON reports (received_ms) INCLUDE (app, release, fingerprint);",
    // 3: the tags of each report's scope, for `lastword store ... --tag KEY=VALUE`. Reports stored
    // before have none.
    "CREATE TABLE report_tags (
        id    TEXT NOT NULL,
        key   TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (key, value, id)
    );",
    // 4: the events each agent dropped (queue full), beside its logs dropped. Rows of agents that
    // have not connected since read 0.
    "ALTER TABLE losses ADD COLUMN events_dropped BIGINT NOT NULL DEFAULT 0;",
    // 5: the debug files uploaded, their bytes in 1 MiB chunks (postgres/debug_files.rs: the collectors
    // of one database share no disk), and which reports wait for which of them (store/waits.rs).
    // Reports stored before wait for none.
    "CREATE TABLE debug_files (
        build_id    TEXT NOT NULL,
        kind        TEXT NOT NULL,
        file_name   TEXT NOT NULL,
        size        BIGINT NOT NULL,
        sha256      TEXT NOT NULL,
        uploaded_ms BIGINT NOT NULL,
        PRIMARY KEY (build_id, kind)
    );
    CREATE INDEX debug_files_recent ON debug_files (uploaded_ms DESC);
    CREATE TABLE debug_file_chunks (
        build_id TEXT NOT NULL,
        kind     TEXT NOT NULL,
        seq      INTEGER NOT NULL,
        bytes    BYTEA NOT NULL,
        PRIMARY KEY (build_id, kind, seq)
    );
    CREATE TABLE symbol_waits (
        build_id TEXT NOT NULL,
        id       TEXT NOT NULL,
        PRIMARY KEY (build_id, id)
    );
    CREATE INDEX symbol_waits_by_id ON symbol_waits (id);",
];

const INSERT_WAITS: &str = "INSERT INTO symbol_waits (build_id, id)
    SELECT * FROM unnest($1::text[], $2::text[]) AS t(build_id, id)
    ORDER BY build_id, id
    ON CONFLICT DO NOTHING";

const INSERT_TAGS: &str = "INSERT INTO report_tags (id, key, value)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS t(id, key, value)
    ORDER BY key, value, id
    ON CONFLICT DO NOTHING";

/// Groups with the kind of their reports (see the SQLite store's `GROUPS_OF`): app $1, kind $2, a
/// tag $3 = $4, limit $5.
const GROUPS_OF: &str = "SELECT app, fingerprint, title, count, first_seen_ms, last_seen_ms, kind FROM (
        SELECT g.*, (SELECT r.kind FROM reports r WHERE r.app = g.app AND r.fingerprint = g.fingerprint
                     LIMIT 1) AS kind
        FROM groups g WHERE ($1::text IS NULL OR g.app = $1)
    ) AS x
    WHERE ($2::text IS NULL OR coalesce(x.kind, 'crash') = $2)
      AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM report_tags t JOIN reports r ON r.id = t.id
                                       WHERE t.key = $3 AND t.value = $4::text
                                         AND r.app = x.app AND r.fingerprint = x.fingerprint))
    ORDER BY last_seen_ms DESC, count DESC LIMIT $5";

/// The key of the advisory lock held while the schema is checked and migrated ("lastword" in ASCII).
const MIGRATION_LOCK: i64 = 0x6c61_7374_776f_7264;

// Rows in id order (and groups and losses in key order below): two collectors whose batches share ids
// wait for each other's rows in the same order, so they cannot deadlock.
const INSERT_REPORTS: &str = "INSERT INTO reports
    (id, kind, app, release, host, created_ms, received_ms, fingerprint, summary, body)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
        $7::bigint[], $8::text[], $9::text[], $10::text[])
        AS t(id, kind, app, release, host, created_ms, received_ms, fingerprint, summary, body)
    ORDER BY id
    ON CONFLICT (id) DO NOTHING RETURNING id";

const UPSERT_GROUPS: &str =
    "INSERT INTO groups AS g (app, fingerprint, title, count, first_seen_ms, last_seen_ms)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
        AS t(app, fingerprint, title, count, first_seen_ms, last_seen_ms)
    ORDER BY app, fingerprint
    ON CONFLICT (app, fingerprint) DO UPDATE SET count = g.count + excluded.count,
        first_seen_ms = least(g.first_seen_ms, excluded.first_seen_ms),
        last_seen_ms = greatest(g.last_seen_ms, excluded.last_seen_ms)";

const UPSERT_LOSSES: &str = "INSERT INTO losses (app, host, release, agent_name, agent_version,
        logs_dropped, evicted, quarantined, crash_loop_suppressed, reported_ms, events_dropped)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
        $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[])
        AS t(app, host, release, agent_name, agent_version, logs_dropped, evicted, quarantined,
            crash_loop_suppressed, reported_ms, events_dropped)
    ORDER BY app, host
    ON CONFLICT (app, host) DO UPDATE SET release = excluded.release, agent_name = excluded.agent_name,
        agent_version = excluded.agent_version, logs_dropped = excluded.logs_dropped,
        evicted = excluded.evicted, quarantined = excluded.quarantined,
        crash_loop_suppressed = excluded.crash_loop_suppressed, reported_ms = excluded.reported_ms,
        events_dropped = excluded.events_dropped";

pub(crate) const REPORT_COLUMNS: &str =
    "id, kind, app, release, host, created_ms, received_ms, fingerprint, summary";

/// A PostgreSQL store, shared by every collector that names the same database.
#[derive(Clone)]
pub struct PostgresStore {
    /// The URL without its password, for messages.
    shown: String,
    /// The connection settings, for the readers' pool of [`read_only_pool`](Self::read_only_pool).
    config: Arc<tokio_postgres::Config>,
    /// The TLS connector of the URL's `sslmode` and `sslrootcert` ([`tls`]), for the readers' pool too.
    tls: MakeRustlsConnect,
    pool: Pool,
    write_timeout: Duration,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("url", &self.shown).finish_non_exhaustive()
    }
}

/// Whether `s` names a PostgreSQL database rather than a SQLite directory.
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// `url` with any password replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<&str> = query
                .split('&')
                .map(|p| if p.starts_with("password=") { "password=***" } else { p })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl PostgresStore {
    /// Connects to the database at `url` for the collector: creates the schema or migrates it to
    /// [`SCHEMA_VERSION`], and refuses a schema newer than that.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let store = Self::pool(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects to the database at `url` for queries: changes nothing, and refuses a database without
    /// lastword's schema or with another version of it.
    pub async fn open_read_only(url: &str) -> Result<Self, StoreError> {
        let store = Self::pool(url).await?;
        let client = store.client("open the store").await?;
        let exists: bool = client
            .query_one("SELECT to_regclass('lastword_schema') IS NOT NULL", &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| store.open_error(e))?;
        if !exists {
            return Err(StoreError::Missing { path: store.shown.clone().into() });
        }
        let found = Self::version(&client).await.map_err(|e| store.open_error(e))?;
        if found != SCHEMA_VERSION {
            return Err(StoreError::Version {
                path: store.shown.clone().into(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        Ok(store)
    }

    /// Sets the longest a batch may take before it is answered `retry_later` ([`WRITE_TIMEOUT`] by
    /// default).
    #[must_use]
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The database's URL, without its password.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// A pool of its own, on the same database, for readers such as the web UI: at most `size`
    /// connections whose sessions are read-only (`default_transaction_read_only`) and whose statements
    /// are cancelled by the server after `statement_timeout`. Readers never take the collector's
    /// connections, so a slow page cannot delay a batch.
    pub fn read_only_pool(&self, size: usize, statement_timeout: Duration) -> Result<Pool, StoreError> {
        let mut config = tokio_postgres::Config::clone(&self.config);
        config.application_name("lastword collect (reader)");
        // After any options of the URL, so that these win.
        let options = format!(
            "{} -c default_transaction_read_only=on -c statement_timeout={}",
            config.get_options().unwrap_or_default(),
            statement_timeout.as_millis()
        );
        config.options(options.trim_start());
        build_pool(config, self.tls.clone(), size)
            .map_err(|e| StoreError::Open { path: self.shown.clone().into(), source: e })
    }

    /// The web UI's reader of this store: the same database on a pool of its own
    /// ([`read_only_pool`](Self::read_only_pool), [`reads::UI_POOL_SIZE`] read-only sessions whose
    /// statements the server cancels after [`reads::UI_STATEMENT_TIMEOUT`]). Connects lazily: the
    /// first page load connects.
    pub fn reader(&self) -> Result<Self, StoreError> {
        let pool = self.read_only_pool(reads::UI_POOL_SIZE, reads::UI_STATEMENT_TIMEOUT)?;
        Ok(Self { pool, ..self.clone() })
    }

    /// The pool of `url`, which connects lazily. `sslmode` and `sslrootcert` are read here ([`tls`]);
    /// the rest of the URL is tokio-postgres's.
    async fn pool(url: &str) -> Result<Self, StoreError> {
        let shown = redacted(url);
        let fail = |e: super::BackendError| StoreError::Open { path: shown.clone().into(), source: e };
        let (rest, settings) = tls::split(url).map_err(|e| fail(Box::new(e)))?;
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e| fail(Box::new(e)))?;
        config.ssl_mode(settings.mode.for_postgres());
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("lastword collect");
        // Reads a root file or the system's roots: off the runtime's threads.
        let tls = tokio::task::spawn_blocking(move || settings.connector())
            .await
            .map_err(|e| fail(Box::new(e)))?
            .map_err(|e| fail(Box::new(e)))?;
        let pool = build_pool(config.clone(), tls.clone(), POOL_SIZE).map_err(fail)?;
        Ok(Self { shown, config: Arc::new(config), tls, pool, write_timeout: WRITE_TIMEOUT })
    }

    fn open_error(&self, e: tokio_postgres::Error) -> StoreError {
        StoreError::Open { path: self.shown.clone().into(), source: said(&e) }
    }

    async fn client(&self, op: &'static str) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Backend { op, source: pool_said(e) })
    }

    async fn version(client: &impl deadpool_postgres::GenericClient) -> Result<i64, tokio_postgres::Error> {
        let row =
            client.query_one("SELECT coalesce(max(version), 0)::bigint FROM lastword_schema", &[]).await?;
        row.try_get(0)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Open { path: self.shown.clone().into(), source: pool_said(e) })?;
        let tx = client.transaction().await.map_err(|e| self.open_error(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| self.open_error(e))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS lastword_schema (version BIGINT NOT NULL)")
            .await
            .map_err(|e| self.open_error(e))?;
        let found = Self::version(&tx).await.map_err(|e| self.open_error(e))?;
        let known = SCHEMA_VERSION;
        if found > known {
            return Err(StoreError::Version { path: self.shown.clone().into(), found, known });
        }
        for (from, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
            tx.batch_execute(sql).await.map_err(|e| self.open_error(e))?;
            let to = i64::try_from(from + 1).unwrap_or(i64::MAX);
            tx.execute("DELETE FROM lastword_schema", &[]).await.map_err(|e| self.open_error(e))?;
            tx.execute("INSERT INTO lastword_schema (version) VALUES ($1)", &[&to])
                .await
                .map_err(|e| self.open_error(e))?;
        }
        tx.commit().await.map_err(|e| self.open_error(e))
    }
}

/// What `e` and each error under it say, on one line. tokio-postgres's own message is only its kind
/// ("db error", "error performing TLS handshake"): the server's words or rustls's reason (a wrong root,
/// a name the certificate does not hold) are its source. A server's DETAIL and HINT lines are joined.
fn said(e: &(dyn std::error::Error + 'static)) -> super::BackendError {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text.replace('\n', " ").into()
}

/// [`said`] of a pool's error: a connection's own error without deadpool's preamble.
fn pool_said(e: deadpool_postgres::PoolError) -> super::BackendError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => said(&e),
        other => said(&other),
    }
}

/// A pool of at most `size` connections made with `config` and the TLS connector `tls`, each waited
/// for at most [`CONNECT_TIMEOUT`].
fn build_pool(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    size: usize,
) -> Result<Pool, super::BackendError> {
    let manager =
        Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let pool = Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()?;
    Ok(pool)
}

async fn write_batch(client: &mut Object, batch: &Batch) -> Result<Vec<Outcome>, tokio_postgres::Error> {
    // A report id twice in one batch: only its first occurrence is sent; the others are duplicates.
    let mut seen = HashSet::with_capacity(batch.reports.len());
    let firsts: Vec<_> = batch.reports.iter().filter(|r| seen.insert(r.id)).collect();
    let tx = client.transaction().await?;
    let mut inserted = HashSet::with_capacity(firsts.len());
    if !firsts.is_empty() {
        let ids: Vec<String> = firsts.iter().map(|r| r.id.to_string()).collect();
        let kinds: Vec<&str> = firsts.iter().map(|r| r.kind.as_str()).collect();
        let apps: Vec<&str> = firsts.iter().map(|r| r.origin.app.as_str()).collect();
        let releases: Vec<Option<&str>> = firsts.iter().map(|r| r.origin.release.as_deref()).collect();
        let hosts: Vec<Option<&str>> = firsts.iter().map(|r| r.origin.host.as_deref()).collect();
        let created: Vec<i64> = firsts.iter().map(|r| to_sql_int(r.created_ms)).collect();
        let received: Vec<i64> = firsts.iter().map(|r| to_sql_int(r.received_ms)).collect();
        let fingerprints: Vec<Option<&str>> = firsts.iter().map(|r| r.fingerprint.as_deref()).collect();
        let summaries: Vec<&str> = firsts.iter().map(|r| r.summary.as_str()).collect();
        let bodies: Vec<&str> = firsts.iter().map(|r| r.body.as_str()).collect();
        let insert = tx.prepare_cached(INSERT_REPORTS).await?;
        let rows = tx
            .query(
                &insert,
                &[
                    &ids,
                    &kinds,
                    &apps,
                    &releases,
                    &hosts,
                    &created,
                    &received,
                    &fingerprints,
                    &summaries,
                    &bodies,
                ],
            )
            .await?;
        for row in rows {
            inserted.insert(row.try_get::<_, String>(0)?);
        }
        // The scope's tags of the rows really inserted, in the same transaction.
        let (mut tag_ids, mut keys, mut values) = (vec![], vec![], vec![]);
        for (r, id) in firsts.iter().zip(&ids) {
            if inserted.contains(id) {
                for (key, value) in crate::fingerprint::tags(&r.body) {
                    tag_ids.push(id.as_str());
                    keys.push(key);
                    values.push(value);
                }
            }
        }
        if !tag_ids.is_empty() {
            let insert = tx.prepare_cached(INSERT_TAGS).await?;
            tx.execute(&insert, &[&tag_ids, &keys, &values]).await?;
        }
        // The debug files the rows really inserted wait for, in the same transaction.
        let (mut wait_builds, mut wait_ids) = (vec![], vec![]);
        for (r, id) in firsts.iter().zip(&ids) {
            if inserted.contains(id) {
                for build_id in &r.waits {
                    wait_builds.push(build_id.as_str());
                    wait_ids.push(id.as_str());
                }
            }
        }
        if !wait_ids.is_empty() {
            let insert = tx.prepare_cached(INSERT_WAITS).await?;
            tx.execute(&insert, &[&wait_builds, &wait_ids]).await?;
        }
    }
    // Only the rows really inserted raise their group: a duplicate that another collector stored
    // first counts nothing here.
    let effects = batch::effects(&batch.reports, |i| inserted.contains(&batch.reports[i].id.to_string()));
    if !effects.gains.is_empty() {
        let (mut apps, mut fps, mut titles, mut counts, mut firsts, mut lasts) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for g in &effects.gains {
            apps.push(g.app);
            fps.push(g.fingerprint);
            titles.push(g.title);
            counts.push(g.count);
            firsts.push(to_sql_int(g.first_ms));
            lasts.push(to_sql_int(g.last_ms));
        }
        let upsert = tx.prepare_cached(UPSERT_GROUPS).await?;
        tx.execute(&upsert, &[&apps, &fps, &titles, &counts, &firsts, &lasts]).await?;
    }
    if !batch.losses.is_empty() {
        let (mut apps, mut hosts, mut releases, mut names, mut versions) =
            (vec![], vec![], vec![], vec![], vec![]);
        let mut nums: [Vec<i64>; 6] = Default::default();
        for l in batch::latest_losses(&batch.losses) {
            apps.push(l.origin.app.as_str());
            hosts.push(l.origin.host.as_deref().unwrap_or(""));
            releases.push(l.origin.release.as_deref());
            names.push(l.origin.agent.name.as_str());
            versions.push(l.origin.agent.version.as_str());
            nums[0].push(to_sql_int(l.losses.logs_dropped));
            nums[1].push(to_sql_int(l.losses.evicted));
            nums[2].push(to_sql_int(l.losses.quarantined));
            nums[3].push(to_sql_int(l.losses.crash_loop_suppressed));
            nums[4].push(to_sql_int(l.received_ms));
            nums[5].push(to_sql_int(l.losses.events_dropped));
        }
        let upsert = tx.prepare_cached(UPSERT_LOSSES).await?;
        tx.execute(
            &upsert,
            &[
                &apps, &hosts, &releases, &names, &versions, &nums[0], &nums[1], &nums[2], &nums[3],
                &nums[4], &nums[5],
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(effects.outcomes)
}

/// Column `i` of `r`; a value of another type than the schema's is an error, not a panic.
pub(crate) fn col<'a, T: FromSql<'a>>(r: &'a Row, i: usize, op: &'static str) -> Result<T, StoreError> {
    r.try_get(i).map_err(backend(op))
}

/// The [`ReportRow`] of the first columns of `r`, which are [`REPORT_COLUMNS`].
/// A row of `groups`: app, fingerprint, title, count, first_seen_ms, last_seen_ms.
pub(crate) fn group_row(r: &Row, op: &'static str) -> Result<Group, StoreError> {
    Ok(Group {
        app: col(r, 0, op)?,
        fingerprint: col(r, 1, op)?,
        title: col(r, 2, op)?,
        count: from_sql_int(col(r, 3, op)?),
        first_seen_ms: from_sql_int(col(r, 4, op)?),
        last_seen_ms: from_sql_int(col(r, 5, op)?),
    })
}

const REPORT_OP: &str = "read a report";

/// One report with its body, on `client` (the collector's pool or the web UI's).
pub(crate) async fn read_report(
    client: &tokio_postgres::Client,
    id: EntryId,
) -> Result<Option<StoredReport>, StoreError> {
    let sql = format!("SELECT {REPORT_COLUMNS}, body FROM reports WHERE id = $1");
    let row = client.query_opt(&sql, &[&id.to_string()]).await.map_err(backend(REPORT_OP))?;
    row.map(|r| Ok(StoredReport { row: report_row(&r, REPORT_OP)?, body: col(&r, 9, REPORT_OP)? }))
        .transpose()
}

/// The columns [`losses_row`] reads, in its order.
pub(crate) const LOSSES_COLUMNS: &str =
    "app, host, release, agent_name, agent_version, logs_dropped, evicted,
    quarantined, crash_loop_suppressed, reported_ms, events_dropped";

/// A row of `losses`, selected with [`LOSSES_COLUMNS`].
pub(crate) fn losses_row(r: &Row, op: &'static str) -> Result<LossesRow, StoreError> {
    Ok(LossesRow {
        app: col(r, 0, op)?,
        host: col(r, 1, op)?,
        release: col(r, 2, op)?,
        agent: Software { name: col(r, 3, op)?, version: col(r, 4, op)? },
        losses: Losses {
            logs_dropped: from_sql_int(col(r, 5, op)?),
            evicted: from_sql_int(col(r, 6, op)?),
            quarantined: from_sql_int(col(r, 7, op)?),
            crash_loop_suppressed: from_sql_int(col(r, 8, op)?),
            events_dropped: from_sql_int(col(r, 10, op)?),
        },
        reported_ms: from_sql_int(col(r, 9, op)?),
    })
}

pub(crate) fn report_row(r: &Row, op: &'static str) -> Result<ReportRow, StoreError> {
    let id: String = col(r, 0, op)?;
    let kind: String = col(r, 1, op)?;
    Ok(ReportRow {
        id: id.parse().map_err(|_| StoreError::BadRow { what: "reports.id", value: id.clone() })?,
        kind: kind.parse().map_err(|_| StoreError::BadRow { what: "reports.kind", value: kind.clone() })?,
        app: col(r, 2, op)?,
        release: col(r, 3, op)?,
        host: col(r, 4, op)?,
        created_ms: from_sql_int(col(r, 5, op)?),
        received_ms: from_sql_int(col(r, 6, op)?),
        fingerprint: col(r, 7, op)?,
        summary: col(r, 8, op)?,
    })
}

impl Store for PostgresStore {
    async fn write(&self, batch: Batch) -> Result<Vec<Outcome>, StoreError> {
        const OP: &str = "write a batch";
        let mut client = self.client(OP).await?;
        match tokio::time::timeout(self.write_timeout, write_batch(&mut client, &batch)).await {
            Ok(result) => result.map_err(backend(OP)),
            Err(_) => {
                // The transaction may be anywhere, even committing: close this connection rather than
                // hand it back to the pool (the server rolls back what was not committed). The reports
                // are answered retry_later; if they were committed after all, their resend is a
                // duplicate.
                drop(Object::take(client));
                Err(StoreError::Backend {
                    op: OP,
                    source: format!("no commit within {WRITE_TIMEOUT:?}").into(),
                })
            }
        }
    }

    async fn reports(&self, filter: ReportFilter) -> Result<Vec<ReportRow>, StoreError> {
        const OP: &str = "list reports";
        let client = self.client(OP).await?;
        let sql = format!(
            "SELECT {REPORT_COLUMNS} FROM reports
             WHERE ($1::text IS NULL OR app = $1) AND ($2::text IS NULL OR kind = $2)
                AND ($3::text IS NULL OR fingerprint = $3)
                AND ($5::text IS NULL OR id IN (SELECT id FROM report_tags WHERE key = $5 AND value = $6::text))
             ORDER BY seq DESC LIMIT $4"
        );
        let (key, value) = filter.tag.unzip();
        let rows = client
            .query(
                &sql,
                &[
                    &filter.app,
                    &filter.kind.map(Kind::as_str),
                    &filter.fingerprint,
                    &i64::from(filter.limit),
                    &key,
                    &value,
                ],
            )
            .await
            .map_err(backend(OP))?;
        rows.iter().map(|r| report_row(r, OP)).collect()
    }

    async fn report(&self, id: EntryId) -> Result<Option<StoredReport>, StoreError> {
        read_report(&*self.client(REPORT_OP).await?, id).await
    }

    async fn groups(&self, app: Option<String>, limit: u32) -> Result<Vec<Group>, StoreError> {
        const OP: &str = "list groups";
        let client = self.client(OP).await?;
        let rows = client
            .query(
                "SELECT app, fingerprint, title, count, first_seen_ms, last_seen_ms FROM groups
                 WHERE ($1::text IS NULL OR app = $1) ORDER BY last_seen_ms DESC, count DESC LIMIT $2",
                &[&app, &i64::from(limit)],
            )
            .await
            .map_err(backend(OP))?;
        rows.iter().map(|r| group_row(r, OP)).collect()
    }

    async fn groups_of(&self, filter: GroupFilter) -> Result<Vec<KindGroup>, StoreError> {
        const OP: &str = "list groups";
        let client = self.client(OP).await?;
        let (key, value) = filter.tag.unzip();
        let rows = client
            .query(
                GROUPS_OF,
                &[&filter.app, &filter.kind.map(Kind::as_str), &key, &value, &i64::from(filter.limit)],
            )
            .await
            .map_err(backend(OP))?;
        rows.iter()
            .map(|r| {
                let kind: Option<String> = col(r, 6, OP)?;
                // A group whose reports were all purged: groups were only crashes' before events.
                let kind = match kind {
                    None => Kind::Crash,
                    Some(k) => {
                        k.parse().map_err(|_| StoreError::BadRow { what: "reports.kind", value: k })?
                    }
                };
                Ok(KindGroup { kind, group: group_row(r, OP)? })
            })
            .collect()
    }

    async fn losses(&self) -> Result<Vec<LossesRow>, StoreError> {
        reads::losses(&self.client("list losses").await?, i64::MAX).await
    }

    async fn overview(&self, now_ms: u64) -> Result<Overview, StoreError> {
        reads::overview(self, now_ms).await
    }

    async fn group_page(&self, query: GroupQuery, now_ms: u64) -> Result<(Vec<GroupItem>, bool), StoreError> {
        reads::groups(self, query, now_ms).await
    }

    async fn group(&self, app: String, fingerprint: String) -> Result<Option<Group>, StoreError> {
        reads::group(self, app, fingerprint).await
    }

    async fn group_reports(
        &self,
        app: String,
        fingerprint: String,
        tag: Option<Tag>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page<Listed>, StoreError> {
        reads::group_reports(self, app, fingerprint, tag, before, limit).await
    }

    async fn group_stats(
        &self,
        app: String,
        fingerprint: String,
        now_ms: u64,
    ) -> Result<GroupStats, StoreError> {
        reads::group_stats(self, app, fingerprint, now_ms).await
    }

    async fn logs(&self, query: LogQuery) -> Result<Page<ListedBody>, StoreError> {
        reads::logs(self, query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(redacted("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(
            redacted("postgres://u@h/db?password=x&sslmode=disable"),
            "postgres://u@h/db?password=***&sslmode=disable"
        );
        assert_eq!(redacted("postgresql://h/db"), "postgresql://h/db");
    }
}
