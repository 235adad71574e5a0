//! The web UI's read queries on the PostgreSQL store (`--store postgres://...`), with the same answers
//! as the SQLite ones for the same reports.
//!
//! The UI reads through a store of its own ([`PostgresStore::reader`]), whose pool is made from the
//! collector's settings: at most [`UI_POOL_SIZE`] connections, read-only sessions, and a server-side
//! [`UI_STATEMENT_TIMEOUT`]. People's page loads never take the committer's connections.
//!
//! Lists of reports are paged by `seq` (the order of arrival), through the indexes of the schema
//! (agent/collector/STORE.md): `reports_by_group` for a group's reports and its latest kind, `reports_by_kind`
//! for log batches (walked back in bounded steps when a filter is given), `reports_by_received` for the
//! overview's counts of the last two days, aggregated by the server. Bodies are `TEXT`; the JSON fields
//! the UI filters on are read with `body::jsonb`.

use std::time::Duration;

use deadpool_postgres::Object;
use tokio_postgres::Row;

use super::{
    LOSSES_COLUMNS, PostgresStore, REPORT_COLUMNS, backend, col, from_sql_int, group_row, losses_row,
    report_row, to_sql_int,
};
use crate::store::reads::{
    DETAILS_LIMIT, GROUP_COLUMNS, GROUP_STATS_LIMIT, GroupDetails, GroupItem, GroupQuery, GroupSort,
    GroupStats, HOUR_MS, Listed, ListedBody, LogQuery, Overview, Page, StatsTally, Tag, Tally, page,
};
use crate::store::{Group, LossesRow, StoreError};

/// The agents the overview lists at most.
const OVERVIEW_LOSSES: i64 = 500;
/// Connections the UI's pool keeps at most.
pub const UI_POOL_SIZE: usize = 2;
/// Longest a statement of the UI may run before the server cancels it (the page shows an error).
pub const UI_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Log batches of the first step of a filtered walk (each next step reads twice as many, up to
/// [`LOG_STEP_MAX`]).
const LOG_STEP: i64 = 1_000;
/// Log batches of a filtered walk's longest step.
const LOG_STEP_MAX: i64 = 16_000;

/// Whether a log batch's body holds the text `$5`: case-insensitively for ASCII only (`lower` under
/// the "C" collation), as SQLite's `LIKE`, and with no wildcard (`strpos` looks for the text as it is).
/// Less than half the time of `ILIKE` with an escaped pattern (37 against 90 ms over 15,000 reports),
/// which a UTF-8 database also runs as `lower` of both sides, and then matches a pattern.
const TEXT_MATCH: &str = "strpos(lower(body COLLATE \"C\"), lower($5::text COLLATE \"C\")) > 0";

/// The columns of a listed report: [`REPORT_COLUMNS`], then `seq` (column 9).
fn listed_columns() -> String {
    format!("{REPORT_COLUMNS}, seq")
}

fn listed(r: &Row, op: &'static str) -> Result<Listed, StoreError> {
    Ok(Listed { seq: col(r, 9, op)?, row: report_row(r, op)? })
}

/// The `ORDER BY` key of a sort. Titles compare byte by byte (`COLLATE "C"`), as SQLite's do.
fn order_key(sort: GroupSort) -> String {
    match sort {
        GroupSort::Title => "g.title COLLATE \"C\"".to_owned(),
        other => format!("g.{}", other.column()),
    }
}

/// The page of one group's reports: a backward range scan of `reports_by_group (app, fingerprint,
/// seq)`, in the order of the page. The cursor is a plain bound (no `IS NULL OR`), so the index bounds
/// the scan whatever the plan. A tag ($5 = $6) is one probe of report_tags' key (key, value, id) per
/// report.
const GROUP_REPORTS: &str = "WHERE app = $1 AND fingerprint = $2 AND seq < $3
      AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM report_tags t
           WHERE t.key = $5 AND t.value = $6::text AND t.id = reports.id))
    ORDER BY seq DESC LIMIT $4";

/// The latest loss counters of every agent (at most `limit` of them), by app and host.
pub(super) async fn losses(client: &Object, limit: i64) -> Result<Vec<LossesRow>, StoreError> {
    const OP: &str = "list losses";
    let rows = client
        .query(&format!("SELECT {LOSSES_COLUMNS} FROM losses ORDER BY app, host LIMIT $1"), &[&limit])
        .await
        .map_err(backend(OP))?;
    rows.iter().map(|r| losses_row(r, OP)).collect()
}

pub(super) async fn overview(store: &PostgresStore, now_ms: u64) -> Result<Overview, StoreError> {
    const OP: &str = "read the overview";
    let client = store.client(OP).await?;
    let mut tally = Tally::new(now_ms);
    let (since, now) = tally.window();
    let (since, now, day) = (to_sql_int(since), to_sql_int(now), to_sql_int(tally.last_day_after()));
    // Counted by the server over reports_by_received (received_ms) INCLUDE (app, release,
    // fingerprint): the window's reports per app, release, group and day; the last day's per hour.
    let rows = client
        .query(
            "SELECT app, release, fingerprint, received_ms > $3 AS last_day, count(*) FROM reports
             WHERE received_ms BETWEEN $1 AND $2 GROUP BY 1, 2, 3, 4",
            &[&since, &now, &day],
        )
        .await
        .map_err(backend(OP))?;
    for r in &rows {
        let (app, release, fingerprint): (&str, Option<&str>, Option<&str>) =
            (col(r, 0, OP)?, col(r, 1, OP)?, col(r, 2, OP)?);
        tally.add_reports(app, release, fingerprint, col(r, 3, OP)?, from_sql_int(col(r, 4, OP)?));
    }
    let rows = client
        .query(
            "SELECT ($1 - received_ms) / $3 AS hours_ago, count(*) FROM reports
             WHERE received_ms > $2 AND received_ms <= $1 GROUP BY 1",
            &[&now, &day, &to_sql_int(HOUR_MS)],
        )
        .await
        .map_err(backend(OP))?;
    for r in &rows {
        tally.add_hour(from_sql_int(col(r, 0, OP)?), from_sql_int(col(r, 1, OP)?));
    }
    let (apps, fingerprints): (Vec<&str>, Vec<&str>) =
        tally.group_keys().map(|(a, f)| (a.as_str(), f.as_str())).unzip();
    let rows = client
        .query(
            &format!(
                "SELECT {GROUP_COLUMNS} FROM groups
                 WHERE (app, fingerprint) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
            ),
            &[&apps, &fingerprints],
        )
        .await
        .map_err(backend(OP))?;
    let groups = rows.iter().map(|r| group_row(r, OP)).collect::<Result<Vec<_>, _>>()?;
    let group_count: i64 = client
        .query_one("SELECT count(*) FROM groups", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(backend(OP))?;
    let losses = losses(&client, OVERVIEW_LOSSES).await?;
    Ok(tally.finish(groups, losses, from_sql_int(group_count)))
}

pub(super) async fn groups(
    store: &PostgresStore,
    q: GroupQuery,
    now_ms: u64,
) -> Result<(Vec<GroupItem>, bool), StoreError> {
    const OP: &str = "list crash groups";
    let client = store.client(OP).await?;
    // The kind of a group is the `type` of its latest report: one probe of reports_by_group per
    // group. Ties of the sort are broken by the group's key (SQLite: by the group's rowid).
    let sql = format!(
        "SELECT g.app, g.fingerprint, g.title, g.count, g.first_seen_ms, g.last_seen_ms, k.kind
         FROM groups g
         LEFT JOIN LATERAL (SELECT r.body::jsonb ->> 'type' AS kind FROM reports r
             WHERE r.app = g.app AND r.fingerprint = g.fingerprint ORDER BY r.seq DESC LIMIT 1) k ON true
         WHERE ($1::text IS NULL OR g.app = $1)
           AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM reports r
                WHERE r.app = g.app AND r.fingerprint = g.fingerprint AND r.release = $2))
           AND ($3::text IS NULL OR k.kind = $3)
           AND ($6::text IS NULL OR EXISTS (SELECT 1 FROM report_tags t JOIN reports r ON r.id = t.id
                WHERE t.key = $6 AND t.value = $7::text
                  AND r.app = g.app AND r.fingerprint = g.fingerprint))
         ORDER BY {key} {dir}, g.app, g.fingerprint LIMIT $4 OFFSET $5",
        key = order_key(q.sort),
        dir = if q.descending { "DESC" } else { "ASC" },
    );
    let (tag_key, tag_value) = q.tag.as_ref().map(|t| (&t.key, &t.value)).unzip();
    let rows = client
        .query(
            &sql,
            &[
                &q.app,
                &q.release,
                &q.kind,
                &(i64::from(q.limit) + 1),
                &i64::from(q.offset),
                &tag_key,
                &tag_value,
            ],
        )
        .await
        .map_err(backend(OP))?;
    let mut found = Vec::with_capacity(rows.len());
    for r in &rows {
        found.push((group_row(r, OP)?, col::<Option<String>>(r, 6, OP)?));
    }
    let more = found.len() > q.limit as usize;
    found.truncate(q.limit as usize);
    // The releases and trends of the whole page in one query: the newest reports of each group.
    let (apps, fingerprints): (Vec<&str>, Vec<&str>) =
        found.iter().map(|(g, _)| (g.app.as_str(), g.fingerprint.as_str())).unzip();
    let rows = client
        .query(
            &format!(
                "SELECT t.i, r.release, r.created_ms
                 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(app, fingerprint, i)
                 CROSS JOIN LATERAL (SELECT release, created_ms FROM reports r
                     WHERE r.app = t.app AND r.fingerprint = t.fingerprint
                     ORDER BY r.seq DESC LIMIT {DETAILS_LIMIT}) r"
            ),
            &[&apps, &fingerprints],
        )
        .await
        .map_err(backend(OP))?;
    let mut details: Vec<GroupDetails> = found.iter().map(|_| GroupDetails::new(now_ms)).collect();
    for r in &rows {
        let i: i64 = col(r, 0, OP)?;
        let seen = usize::try_from(i - 1)
            .ok()
            .and_then(|i| details.get_mut(i))
            .ok_or_else(|| StoreError::BadRow { what: "the ordinality of a group", value: i.to_string() })?;
        seen.add(col(r, 1, OP)?, from_sql_int(col(r, 2, OP)?));
    }
    let items = found.into_iter().zip(details).map(|((group, kind), seen)| seen.item(group, kind)).collect();
    Ok((items, more))
}

pub(super) async fn group(
    store: &PostgresStore,
    app: String,
    fingerprint: String,
) -> Result<Option<Group>, StoreError> {
    const OP: &str = "read a crash group";
    let client = store.client(OP).await?;
    let row = client
        .query_opt(
            &format!("SELECT {GROUP_COLUMNS} FROM groups WHERE app = $1 AND fingerprint = $2"),
            &[&app, &fingerprint],
        )
        .await
        .map_err(backend(OP))?;
    row.map(|r| group_row(&r, OP)).transpose()
}

pub(super) async fn group_reports(
    store: &PostgresStore,
    app: String,
    fingerprint: String,
    tag: Option<Tag>,
    before: Option<i64>,
    limit: u32,
) -> Result<Page<Listed>, StoreError> {
    const OP: &str = "list a group's reports";
    let client = store.client(OP).await?;
    let sql = format!("SELECT {} FROM reports {GROUP_REPORTS}", listed_columns());
    let (key, value) = tag.map(|t| (t.key, t.value)).unzip();
    let rows = client
        .query(
            &sql,
            &[&app, &fingerprint, &before.unwrap_or(i64::MAX), &(i64::from(limit) + 1), &key, &value],
        )
        .await
        .map_err(backend(OP))?;
    let items = rows.iter().map(|r| listed(r, OP)).collect::<Result<Vec<_>, _>>()?;
    Ok(page(items, limit, |l| l.seq))
}

pub(super) async fn group_stats(
    store: &PostgresStore,
    app: String,
    fingerprint: String,
    now_ms: u64,
) -> Result<GroupStats, StoreError> {
    const OP: &str = "count a group's occurrences";
    let client = store.client(OP).await?;
    // The newest of the group, walked back on reports_by_group (app, fingerprint, seq).
    let rows = client
        .query(
            "SELECT release, host, created_ms FROM reports WHERE app = $1 AND fingerprint = $2
             ORDER BY seq DESC LIMIT $3",
            &[&app, &fingerprint, &i64::from(GROUP_STATS_LIMIT)],
        )
        .await
        .map_err(backend(OP))?;
    let mut tally = StatsTally::new(now_ms);
    for r in &rows {
        let release: Option<&str> = col(r, 0, OP)?;
        let host: Option<&str> = col(r, 1, OP)?;
        tally.add(release, host, from_sql_int(col(r, 2, OP)?));
    }
    Ok(tally.finish(GROUP_STATS_LIMIT))
}

pub(super) async fn logs(store: &PostgresStore, q: LogQuery) -> Result<Page<ListedBody>, StoreError> {
    const OP: &str = "list log batches";
    let client = store.client(OP).await?;
    // reports_by_kind (kind, seq), walked back from the cursor. The text is found as
    // [`TEXT_MATCH`] says. A batch whose `records` is not an array has no level.
    let sql = format!(
        "SELECT {}, body FROM reports
         WHERE kind = 'log' AND seq < $1 AND seq >= $8 AND ($2::text IS NULL OR app = $2)
           AND ($3::bigint IS NULL OR created_ms >= $3) AND ($4::bigint IS NULL OR created_ms < $4)
           AND ($5::text IS NULL OR {TEXT_MATCH})
           AND (cardinality($6::text[]) = 0 OR EXISTS (SELECT 1 FROM jsonb_array_elements(
                CASE WHEN jsonb_typeof(body::jsonb -> 'records') = 'array'
                     THEN body::jsonb -> 'records' ELSE '[]'::jsonb END) e
                WHERE upper(e ->> 'level') = ANY($6)))
         ORDER BY seq DESC LIMIT $7",
        listed_columns()
    );
    let pattern = q.text.as_deref();
    let (from_ms, to_ms) = (q.from_ms.map(to_sql_int), q.to_ms.map(to_sql_int));
    let filtered =
        q.app.is_some() || from_ms.is_some() || to_ms.is_some() || pattern.is_some() || !q.levels.is_empty();
    // With a filter, the planner cannot tell how far back the page's batches are (it guesses a
    // filter keeps almost nothing, and would read and sort every batch): walk back in steps of a
    // bounded number of batches, each an index range, until the page is full or the batches end.
    let step_bounds = "SELECT min(seq), count(*) FROM (SELECT seq FROM reports
         WHERE kind = 'log' AND seq < $1 ORDER BY seq DESC LIMIT $2) w";
    let mut before = q.before.unwrap_or(i64::MAX);
    let mut step = LOG_STEP;
    let mut items = Vec::new();
    loop {
        let (low, read) = if filtered {
            let r = client.query_one(step_bounds, &[&before, &step]).await.map_err(backend(OP))?;
            (col::<Option<i64>>(&r, 0, OP)?.unwrap_or(before), col::<i64>(&r, 1, OP)?)
        } else {
            (i64::MIN, 0)
        };
        let wanted = i64::from(q.limit) + 1 - i64::try_from(items.len()).unwrap_or(i64::MAX);
        let rows = client
            .query(&sql, &[&before, &q.app, &from_ms, &to_ms, &pattern, &q.levels, &wanted, &low])
            .await
            .map_err(backend(OP))?;
        for r in &rows {
            items.push(ListedBody { listed: listed(r, OP)?, body: col(r, 10, OP)? });
        }
        if !filtered || items.len() > q.limit as usize || read < step {
            break;
        }
        before = low;
        step = (step * 2).min(LOG_STEP_MAX);
    }
    Ok(page(items, q.limit, |b| b.listed.seq))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lastword_protocol::Software;
    use lastword_spool::{EntryId, Kind};
    use lastword_tests::postgres::TempPostgres;

    use super::*;
    use crate::store::reads::LogQuery;
    use crate::store::{Batch, NewReport, Origin, Store};

    fn reports(n: u64) -> Vec<NewReport> {
        let origin = Arc::new(Origin {
            agent: Software { name: "lastword".into(), version: "0.1.0".into() },
            app: "app".into(),
            release: Some("1.0".into()),
            host: None,
        });
        (0..n)
            .map(|i| NewReport {
                id: EntryId::generate(),
                kind: if i % 3 == 0 { Kind::Log } else { Kind::Crash },
                origin: Arc::clone(&origin),
                created_ms: 1_000 + i,
                received_ms: 1_000 + i,
                fingerprint: (i % 3 != 0).then(|| format!("fp-{}", i % 20)),
                summary: String::new(),
                body: r#"{"type":"panic","records":[{"level":"INFO","message":"x"}]}"#.into(),
                waits: Vec::new(),
            })
            .collect()
    }

    async fn plan(ui: &PostgresStore, sql: &str) -> String {
        let client = ui.client("explain").await.expect("a connection");
        let rows = client.query(&format!("EXPLAIN {sql}"), &[]).await.expect("a plan");
        rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n")
    }

    #[tokio::test]
    async fn pages_of_reports_walk_the_schemas_indexes_without_sorting() {
        let pg = tokio::task::spawn_blocking(TempPostgres::start).await.expect("the server starts");
        let url = pg.create_database("plans");
        let store = PostgresStore::open(&url).await.expect("a new database store");
        store.write(Batch { reports: reports(3_000), losses: vec![] }).await.expect("written");
        pg.psql("plans", "ANALYZE");
        let ui = store.reader().expect("a reader");

        let group = plan(
            &ui,
            &format!(
                "SELECT {} FROM reports {}",
                listed_columns(),
                GROUP_REPORTS
                    .replace("$1", "'app'")
                    .replace("$2", "'fp-1'")
                    .replace("$3", "9223372036854775807")
                    .replace("$4", "51")
                    .replace("$5", "NULL")
                    .replace("$6", "NULL")
            ),
        )
        .await;
        assert!(group.contains("reports_by_group"), "{group}");
        assert!(!group.contains("Sort"), "{group}");

        let logs = plan(
            &ui,
            "SELECT seq FROM reports WHERE kind = 'log' AND seq < 9223372036854775807 ORDER BY seq DESC LIMIT 51",
        )
        .await;
        // reports_by_kind, or reports_recent when most rows are logs: either walks in the page's order.
        assert!(logs.contains("reports_by_kind") || logs.contains("reports_recent"), "{logs}");
        assert!(!logs.contains("Sort"), "{logs}");
    }

    #[tokio::test]
    async fn a_filtered_log_page_walks_back_over_several_steps_in_order() {
        let pg = tokio::task::spawn_blocking(TempPostgres::start).await.expect("the server starts");
        let url = pg.create_database("steps");
        let store = PostgresStore::open(&url).await.expect("a new database store");
        let origin = Arc::new(Origin {
            agent: Software { name: "lastword".into(), version: "0.1.0".into() },
            app: "app".into(),
            release: None,
            host: None,
        });
        // 6,000 log batches (more than the first steps read), one in 97 with the needle, and crashes
        // in between; written in the order of arrival.
        let mut expected = Vec::new();
        let written: Vec<NewReport> = (0..8_000u64)
            .map(|i| {
                let log = i % 4 != 0;
                let needle = log && i % 97 == 1;
                let id = EntryId::generate();
                if needle {
                    expected.push(id);
                }
                NewReport {
                    id,
                    kind: if log { Kind::Log } else { Kind::Crash },
                    origin: Arc::clone(&origin),
                    created_ms: 1_000 + i,
                    received_ms: 1_000 + i,
                    fingerprint: (!log).then(|| "fp".to_owned()),
                    summary: String::new(),
                    body: format!(
                        r#"{{"records":[{{"level":"INFO","message":"{}"}}]}}"#,
                        if needle { "a NEEDLE" } else { "hay" }
                    ),
                    waits: Vec::new(),
                }
            })
            .collect();
        for chunk in written.chunks(2_000) {
            store.write(Batch { reports: chunk.to_vec(), losses: vec![] }).await.expect("written");
        }
        expected.reverse();
        let ui = store.reader().expect("a reader");
        let mut found = Vec::new();
        let mut before = None;
        loop {
            let q = LogQuery { text: Some("needle".into()), before, limit: 20, ..LogQuery::default() };
            let page = ui.logs(q).await.expect("a page");
            assert!(page.items.len() <= 20);
            found.extend(page.items.iter().map(|b| b.listed.row.id));
            match page.next_before {
                Some(seq) => before = Some(seq),
                None => break,
            }
        }
        assert_eq!(found, expected);
    }

    #[tokio::test]
    async fn the_ui_reads_on_read_only_sessions_and_matches_text_like_sqlite() {
        let pg = tokio::task::spawn_blocking(TempPostgres::start).await.expect("the server starts");
        let url = pg.create_database("reader");
        let store = PostgresStore::open(&url).await.expect("a new database store");
        let ui = store.reader().expect("a reader");
        let client = ui.client("test").await.expect("a connection");
        let write = client.execute("DELETE FROM reports", &[]).await;
        assert!(write.is_err(), "a UI session could write");
        // Case-insensitive for ASCII only, as SQLite's LIKE; wildcards escaped.
        for (text, pattern, expected) in [
            ("Disk FULL on /var", "disk full", true),
            ("Émile", "émile", false),
            ("disk full", "disk_full", false),
            ("100% disk", "100%", true),
            ("100 disk", "100%", false),
        ] {
            let row = client
                .query_one(
                    &format!("SELECT {}", TEXT_MATCH.replace("$5", "$2").replace("body", "$1::text")),
                    &[&text, &pattern],
                )
                .await
                .expect("matched");
            assert_eq!(row.get::<_, bool>(0), expected, "{text:?} contains {pattern:?}");
        }
    }
}
