//! The web UI's read queries on the SQLite store: each a function of a connection, which the store
//! runs on a blocking thread (`SqliteStore::with_conn`). The UI reads on a store opened read-only, on
//! a connection of its own (`AnyStore::reader`), so people's page loads never wait for the collector's
//! writer (WAL readers do not block it).

use lastword_protocol::{Losses, Software};
use rusqlite::{Connection, OptionalExtension, params};

use super::{backend, from_sql_int, group_row, to_sql_int};
use crate::store::reads::{
    DETAILS_LIMIT, GROUP_COLUMNS, GROUP_STATS_LIMIT, GroupDetails, GroupItem, GroupQuery, GroupStats, Listed,
    ListedBody, LogQuery, Overview, Page, StatsTally, Tag, Tally, contains_pattern, page,
};
use crate::store::{Group, LossesRow, ReportRow, StoreError};

/// The agents the overview lists at most.
const OVERVIEW_LOSSES: u32 = 500;

const LISTED_COLUMNS: &str =
    "rowid, id, kind, app, release, host, created_ms, received_ms, fingerprint, summary";

/// A listed report: its `rowid`, then the [`LISTED_COLUMNS`] that follow it.
fn listed(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, (String, String, ReportRow))> {
    Ok((r.get(0)?, super::report_row_at(r, 1)?))
}

fn checked((seq, row): (i64, (String, String, ReportRow))) -> Result<Listed, StoreError> {
    Ok(Listed { seq, row: super::checked(row)? })
}

/// Column `i` of `r`, text or NULL, borrowed from the row.
pub(super) fn text_at<'r>(r: &'r rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<&'r str>> {
    r.get_ref(i)?
        .as_str_or_null()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
}

/// The reports of the overview's window. The covering index reports_by_received (received_ms, app,
/// release, fingerprint) holds every column read: a range scan of the index, without a table row or a
/// sort.
const OVERVIEW_WINDOW: &str = "SELECT app, release, fingerprint, received_ms FROM reports
     WHERE received_ms BETWEEN ?1 AND ?2";

pub(super) fn overview(conn: &Connection, now_ms: u64) -> Result<Overview, StoreError> {
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
    Ok(tally.finish(found, losses(conn, OVERVIEW_LOSSES)?, from_sql_int(group_count)))
}

/// The latest loss counters of every agent (at most `limit` of them), by app and host.
pub(super) fn losses(conn: &Connection, limit: u32) -> Result<Vec<LossesRow>, StoreError> {
    let op = "list losses";
    let mut stmt = conn
        .prepare_cached(
            "SELECT app, host, release, agent_name, agent_version, logs_dropped, evicted,
                quarantined, crash_loop_suppressed, reported_ms, events_dropped
             FROM losses ORDER BY app, host LIMIT ?1",
        )
        .map_err(backend(op))?;
    let rows = stmt
        .query_map([limit], |r| {
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

pub(super) fn groups(
    conn: &Connection,
    q: &GroupQuery,
    now_ms: u64,
) -> Result<(Vec<GroupItem>, bool), StoreError> {
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
pub(super) fn group_reports_sql() -> String {
    format!(
        "SELECT {LISTED_COLUMNS} FROM reports
         WHERE app = ?1 AND fingerprint = ?2 AND (?3 IS NULL OR rowid < ?3)
           AND (?5 IS NULL OR EXISTS (SELECT 1 FROM report_tags t
                WHERE t.key = ?5 AND t.value = ?6 AND t.id = reports.id))
         ORDER BY rowid DESC LIMIT ?4"
    )
}

pub(super) fn logs(conn: &Connection, q: &LogQuery) -> Result<Page<ListedBody>, StoreError> {
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
/// One crash group.
pub(super) fn group(conn: &Connection, app: &str, fingerprint: &str) -> Result<Option<Group>, StoreError> {
    conn.query_row(
        &format!("SELECT {GROUP_COLUMNS} FROM groups WHERE app = ?1 AND fingerprint = ?2"),
        params![app, fingerprint],
        group_row,
    )
    .optional()
    .map_err(backend("read a crash group"))
}

/// A page of a group's reports, newest first; with `tag`, only its reports that carry it.
pub(super) fn group_reports(
    conn: &Connection,
    app: &str,
    fingerprint: &str,
    tag: Option<Tag>,
    before: Option<i64>,
    limit: u32,
) -> Result<Page<Listed>, StoreError> {
    let op = "list a group's reports";
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
}

/// A group's occurrences by day, release and host, of its newest [`GROUP_STATS_LIMIT`] reports.
pub(super) fn group_stats(
    conn: &Connection,
    app: &str,
    fingerprint: &str,
    now_ms: u64,
) -> Result<GroupStats, StoreError> {
    let op = "count a group's occurrences";
    // The newest of the group, through reports_by_fingerprint (app, fingerprint), which holds the
    // rowid: a range scan in the order of the limit.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_of_a_group_reads_its_index_without_sorting() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        crate::store::SqliteStore::open(dir.path()).expect("a new store");
        let ui = crate::store::SqliteStore::open_read_only(dir.path()).expect("opened read-only");
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
        crate::store::SqliteStore::open(dir.path()).expect("a new store");
        let ui = crate::store::SqliteStore::open_read_only(dir.path()).expect("opened read-only");
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
