//! The SQLite store's debug files: the `debug_files` table (STORE.md). The files themselves are on
//! disk in `DIR/debug-files/` (`crate::debug_files`).

use std::path::PathBuf;

use rusqlite::{OptionalExtension as _, params};

use super::SqliteStore;
use crate::debug_files::FileKind;
use crate::store::debug_files::{DebugFileRow, DebugFileStore};
use crate::store::{StoreError, backend, from_sql_int, to_sql_int};

const UPSERT: &str = "INSERT INTO debug_files (build_id, kind, file_name, size, sha256, uploaded_ms)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT (build_id, kind) DO UPDATE SET file_name = excluded.file_name, size = excluded.size,
        sha256 = excluded.sha256, uploaded_ms = excluded.uploaded_ms";

const COLUMNS: &str = "build_id, kind, file_name, size, sha256, uploaded_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, i64, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn to_row(
    (build_id, kind, file_name, size, sha256, uploaded_ms): (String, String, String, i64, String, i64),
) -> Result<DebugFileRow, StoreError> {
    let kind = FileKind::parse(&kind).ok_or(StoreError::BadRow { what: "debug_files.kind", value: kind })?;
    Ok(DebugFileRow {
        build_id,
        kind,
        file_name,
        size: from_sql_int(size),
        sha256,
        uploaded_ms: from_sql_int(uploaded_ms),
    })
}

impl DebugFileStore for SqliteStore {
    async fn put_debug_file(&self, row: DebugFileRow, _file: PathBuf) -> Result<(), StoreError> {
        self.with_conn("record a debug file", move |conn| {
            conn.execute(
                UPSERT,
                params![
                    row.build_id,
                    row.kind.name(),
                    row.file_name,
                    to_sql_int(row.size),
                    row.sha256,
                    to_sql_int(row.uploaded_ms)
                ],
            )
            .map_err(backend("record a debug file"))?;
            Ok(())
        })
        .await
    }

    async fn debug_file(&self, build_id: String, kind: FileKind) -> Result<Option<DebugFileRow>, StoreError> {
        self.with_conn("read a debug file's row", move |conn| {
            let sql = format!("SELECT {COLUMNS} FROM debug_files WHERE build_id = ?1 AND kind = ?2");
            let found = conn
                .query_row(&sql, params![build_id, kind.name()], row)
                .optional()
                .map_err(backend("read a debug file's row"))?;
            found.map(to_row).transpose()
        })
        .await
    }

    async fn debug_files(&self, limit: u32) -> Result<Vec<DebugFileRow>, StoreError> {
        self.with_conn("list debug files", move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM debug_files ORDER BY uploaded_ms DESC, build_id, kind LIMIT ?1"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(backend("list debug files"))?;
            let rows = stmt
                .query_map(params![limit], row)
                .map_err(backend("list debug files"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend("list debug files"))?;
            rows.into_iter().map(to_row).collect()
        })
        .await
    }

    fn keeps_bytes(&self) -> bool {
        false
    }

    async fn copy_debug_file(
        &self,
        _build_id: String,
        _kind: FileKind,
        _to: PathBuf,
    ) -> Result<Option<DebugFileRow>, StoreError> {
        Ok(None)
    }
}
