//! The SQLite store's record of reports waiting for debug files (store/waits.rs).

use rusqlite::{Connection, params};

use super::super::waits::{Applied, Resymbolized, Waiting, Waits, waiting};
use super::super::{StoreError, backend, from_sql_int, to_sql_int};
use super::{SqliteStore, UPSERT_GROUP};

const INSERT_WAIT: &str = super::INSERT_WAIT;

impl Waits for SqliteStore {
    async fn waited_build_ids(&self) -> Result<Vec<String>, StoreError> {
        const OP: &str = "list the build ids reports wait for";
        self.with_conn(OP, |conn| {
            let mut stmt = conn.prepare("SELECT DISTINCT build_id FROM symbol_waits").map_err(backend(OP))?;
            let ids = stmt.query_map([], |r| r.get(0)).map_err(backend(OP))?;
            ids.collect::<Result<Vec<String>, _>>().map_err(backend(OP))
        })
        .await
    }

    async fn waiting_for(&self, build_id: String, limit: u32) -> Result<Vec<Waiting>, StoreError> {
        const OP: &str = "list the reports that wait for a debug file";
        self.with_conn(OP, move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT r.id, r.kind, r.app, r.fingerprint, r.created_ms, r.body
                     FROM symbol_waits w JOIN reports r ON r.id = w.id
                     WHERE w.build_id = ?1 ORDER BY w.id LIMIT ?2",
                )
                .map_err(backend(OP))?;
            let rows = stmt
                .query_map(params![build_id, i64::from(limit)], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })
                .map_err(backend(OP))?;
            let mut out = Vec::new();
            for row in rows {
                let (id, kind, app, fingerprint, created_ms, body) = row.map_err(backend(OP))?;
                out.push(waiting(id, kind, app, fingerprint, from_sql_int(created_ms), body)?);
            }
            Ok(out)
        })
        .await
    }

    async fn wait_counts(&self, limit: u32) -> Result<Vec<(String, u64)>, StoreError> {
        const OP: &str = "count the reports that wait for debug files";
        self.with_conn(OP, move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT build_id, count(*) AS n FROM symbol_waits GROUP BY build_id
                     ORDER BY n DESC, build_id LIMIT ?1",
                )
                .map_err(backend(OP))?;
            let rows = stmt
                .query_map([i64::from(limit)], |r| Ok((r.get(0)?, from_sql_int(r.get(1)?))))
                .map_err(backend(OP))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend(OP))
        })
        .await
    }

    async fn resymbolized(&self, build_id: String, done: Vec<Resymbolized>) -> Result<Applied, StoreError> {
        const OP: &str = "store reports symbolized again";
        self.with_conn(OP, move |conn| apply(conn, &build_id, &done).map_err(backend(OP))).await
    }
}

fn apply(conn: &mut Connection, build_id: &str, done: &[Resymbolized]) -> rusqlite::Result<Applied> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut applied = Applied::default();
    {
        let mut unwait = tx.prepare_cached("DELETE FROM symbol_waits WHERE id = ?1")?;
        let mut wait = tx.prepare_cached(INSERT_WAIT)?;
        let mut rewrite = tx.prepare_cached(
            "UPDATE reports SET body = ?1, fingerprint = ?2, summary = ?3 WHERE id = ?4 AND fingerprint IS ?5",
        )?;
        let mut leave =
            tx.prepare_cached("UPDATE groups SET count = count - 1 WHERE app = ?1 AND fingerprint = ?2")?;
        let mut gone =
            tx.prepare_cached("DELETE FROM groups WHERE app = ?1 AND fingerprint = ?2 AND count <= 0")?;
        let mut join = tx.prepare_cached(UPSERT_GROUP)?;
        for r in done {
            let w = &r.waiting;
            let id = w.id.to_string();
            unwait.execute([&id])?;
            for other in r.waits.iter().filter(|b| *b != build_id) {
                wait.execute(params![other, id])?;
            }
            let Some(changed) = &r.changed else { continue };
            if rewrite.execute(params![
                changed.body,
                changed.fingerprint,
                changed.summary,
                id,
                w.fingerprint
            ])? == 0
            {
                // Changed since it was read (another collector was first): nothing to move.
                continue;
            }
            applied.rewritten += 1;
            if changed.fingerprint == w.fingerprint {
                continue;
            }
            applied.moved += 1;
            if let Some(old) = &w.fingerprint {
                leave.execute(params![w.app, old])?;
                gone.execute(params![w.app, old])?;
            }
            if let Some(new) = &changed.fingerprint {
                let at = to_sql_int(w.created_ms);
                join.execute(params![w.app, new, changed.summary, 1, at, at])?;
            }
        }
    }
    tx.commit()?;
    Ok(applied)
}
