//! The PostgreSQL store's record of reports waiting for debug files (store/waits.rs). Several
//! collectors may symbolize the same reports at once: the rewrite of a report is conditional on the
//! fingerprint it was read with, so only the first moves it between groups.

use super::super::waits::{Applied, Resymbolized, Waiting, Waits, waiting};
use super::{PostgresStore, backend, col, from_sql_int, to_sql_int};
use crate::store::StoreError;

impl Waits for PostgresStore {
    async fn waited_build_ids(&self) -> Result<Vec<String>, StoreError> {
        const OP: &str = "list the build ids reports wait for";
        let client = self.client(OP).await?;
        let rows =
            client.query("SELECT DISTINCT build_id FROM symbol_waits", &[]).await.map_err(backend(OP))?;
        rows.iter().map(|r| col(r, 0, OP)).collect()
    }

    async fn waiting_for(&self, build_id: String, limit: u32) -> Result<Vec<Waiting>, StoreError> {
        const OP: &str = "list the reports that wait for a debug file";
        let client = self.client(OP).await?;
        let rows = client
            .query(
                "SELECT r.id, r.kind, r.app, r.fingerprint, r.created_ms, r.body
                 FROM symbol_waits w JOIN reports r ON r.id = w.id
                 WHERE w.build_id = $1 ORDER BY w.id LIMIT $2",
                &[&build_id, &i64::from(limit)],
            )
            .await
            .map_err(backend(OP))?;
        rows.iter()
            .map(|r| {
                waiting(
                    col(r, 0, OP)?,
                    col(r, 1, OP)?,
                    col(r, 2, OP)?,
                    col(r, 3, OP)?,
                    from_sql_int(col(r, 4, OP)?),
                    col(r, 5, OP)?,
                )
            })
            .collect()
    }

    async fn wait_counts(&self, limit: u32) -> Result<Vec<(String, u64)>, StoreError> {
        const OP: &str = "count the reports that wait for debug files";
        let client = self.client(OP).await?;
        let rows = client
            .query(
                "SELECT build_id, count(*) AS n FROM symbol_waits GROUP BY build_id
                 ORDER BY n DESC, build_id LIMIT $1",
                &[&i64::from(limit)],
            )
            .await
            .map_err(backend(OP))?;
        rows.iter().map(|r| Ok((col(r, 0, OP)?, from_sql_int(col(r, 1, OP)?)))).collect()
    }

    async fn resymbolized(&self, build_id: String, done: Vec<Resymbolized>) -> Result<Applied, StoreError> {
        const OP: &str = "store reports symbolized again";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.map_err(backend(OP))?;
        let mut applied = Applied::default();
        let unwait =
            tx.prepare_cached("DELETE FROM symbol_waits WHERE id = $1").await.map_err(backend(OP))?;
        let wait = tx
            .prepare_cached("INSERT INTO symbol_waits (build_id, id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .await
            .map_err(backend(OP))?;
        let rewrite = tx
            .prepare_cached(
                "UPDATE reports SET body = $1, fingerprint = $2, summary = $3
                 WHERE id = $4 AND fingerprint IS NOT DISTINCT FROM $5",
            )
            .await
            .map_err(backend(OP))?;
        let leave = tx
            .prepare_cached("UPDATE groups SET count = count - 1 WHERE app = $1 AND fingerprint = $2")
            .await
            .map_err(backend(OP))?;
        let gone = tx
            .prepare_cached("DELETE FROM groups WHERE app = $1 AND fingerprint = $2 AND count <= 0")
            .await
            .map_err(backend(OP))?;
        let join = tx
            .prepare_cached(
                "INSERT INTO groups AS g (app, fingerprint, title, count, first_seen_ms, last_seen_ms)
                 VALUES ($1, $2, $3, 1, $4, $4)
                 ON CONFLICT (app, fingerprint) DO UPDATE SET count = g.count + 1,
                     first_seen_ms = least(g.first_seen_ms, excluded.first_seen_ms),
                     last_seen_ms = greatest(g.last_seen_ms, excluded.last_seen_ms)",
            )
            .await
            .map_err(backend(OP))?;
        for r in &done {
            let w = &r.waiting;
            let id = w.id.to_string();
            tx.execute(&unwait, &[&id]).await.map_err(backend(OP))?;
            for other in r.waits.iter().filter(|b| **b != build_id) {
                tx.execute(&wait, &[other, &id]).await.map_err(backend(OP))?;
            }
            let Some(changed) = &r.changed else { continue };
            let n = tx
                .execute(
                    &rewrite,
                    &[&changed.body, &changed.fingerprint, &changed.summary, &id, &w.fingerprint],
                )
                .await
                .map_err(backend(OP))?;
            if n == 0 {
                // Changed since it was read (another collector was first): nothing to move.
                continue;
            }
            applied.rewritten += 1;
            if changed.fingerprint == w.fingerprint {
                continue;
            }
            applied.moved += 1;
            if let Some(old) = &w.fingerprint {
                tx.execute(&leave, &[&w.app, old]).await.map_err(backend(OP))?;
                tx.execute(&gone, &[&w.app, old]).await.map_err(backend(OP))?;
            }
            if let Some(new) = &changed.fingerprint {
                let at = to_sql_int(w.created_ms);
                tx.execute(&join, &[&w.app, new, &changed.summary, &at]).await.map_err(backend(OP))?;
            }
        }
        tx.commit().await.map_err(backend(OP))?;
        Ok(applied)
    }
}
