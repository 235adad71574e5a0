//! The PostgreSQL store's debug files: the `debug_files` rows and the files' bytes in
//! `debug_file_chunks`, [`CHUNK_BYTES`] a row (STORE.md), so that every collector of the database finds
//! a file uploaded to any of them, and no value larger than a chunk is ever held whole.

use std::path::PathBuf;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_postgres::IsolationLevel;

use super::PostgresStore;
use crate::debug_files::FileKind;
use crate::store::debug_files::{CHUNK_BYTES, DebugFileRow, DebugFileStore};
use crate::store::{StoreError, backend, from_sql_int, to_sql_int};

const UPSERT: &str = "INSERT INTO debug_files (build_id, kind, file_name, size, sha256, uploaded_ms)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (build_id, kind) DO UPDATE SET file_name = excluded.file_name, size = excluded.size,
        sha256 = excluded.sha256, uploaded_ms = excluded.uploaded_ms";

const COLUMNS: &str = "build_id, kind, file_name, size, sha256, uploaded_ms";

fn to_row(r: &tokio_postgres::Row) -> Result<DebugFileRow, StoreError> {
    let get = backend("read a debug file's row");
    let kind: String = r.try_get(1).map_err(get)?;
    let kind = FileKind::parse(&kind).ok_or(StoreError::BadRow { what: "debug_files.kind", value: kind })?;
    let get = || backend("read a debug file's row");
    Ok(DebugFileRow {
        build_id: r.try_get(0).map_err(get())?,
        kind,
        file_name: r.try_get(2).map_err(get())?,
        size: from_sql_int(r.try_get(3).map_err(get())?),
        sha256: r.try_get(4).map_err(get())?,
        uploaded_ms: from_sql_int(r.try_get(5).map_err(get())?),
    })
}

/// Reads into `buf` until it is full or the file ends; the count read.
async fn fill(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl DebugFileStore for PostgresStore {
    async fn put_debug_file(&self, row: DebugFileRow, file: PathBuf) -> Result<(), StoreError> {
        const OP: &str = "store a debug file";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.map_err(backend(OP))?;
        // The row first: it locks the build id and kind, so that two collectors storing the same file
        // at once take turns instead of mixing their chunks.
        tx.execute(
            UPSERT,
            &[
                &row.build_id,
                &row.kind.name(),
                &row.file_name,
                &to_sql_int(row.size),
                &row.sha256,
                &to_sql_int(row.uploaded_ms),
            ],
        )
        .await
        .map_err(backend(OP))?;
        tx.execute(
            "DELETE FROM debug_file_chunks WHERE build_id = $1 AND kind = $2",
            &[&row.build_id, &row.kind.name()],
        )
        .await
        .map_err(backend(OP))?;
        let insert = tx
            .prepare("INSERT INTO debug_file_chunks (build_id, kind, seq, bytes) VALUES ($1, $2, $3, $4)")
            .await
            .map_err(backend(OP))?;
        let mut source = tokio::fs::File::open(&file).await.map_err(backend(OP))?;
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut seq: i32 = 0;
        let mut total: u64 = 0;
        loop {
            let n = fill(&mut source, &mut buf).await.map_err(backend(OP))?;
            if n == 0 {
                break;
            }
            let chunk: &[u8] = &buf[..n];
            tx.execute(&insert, &[&row.build_id, &row.kind.name(), &seq, &chunk])
                .await
                .map_err(backend(OP))?;
            seq += 1;
            total += n as u64;
        }
        if total != row.size {
            return Err(StoreError::BadRow {
                what: "debug file size",
                value: format!("{total} != {}", row.size),
            });
        }
        tx.commit().await.map_err(backend(OP))
    }

    async fn debug_file(&self, build_id: String, kind: FileKind) -> Result<Option<DebugFileRow>, StoreError> {
        const OP: &str = "read a debug file's row";
        let client = self.client(OP).await?;
        let sql = format!("SELECT {COLUMNS} FROM debug_files WHERE build_id = $1 AND kind = $2");
        let found = client.query_opt(&sql, &[&build_id, &kind.name()]).await.map_err(backend(OP))?;
        found.as_ref().map(to_row).transpose()
    }

    async fn debug_files(&self, limit: u32) -> Result<Vec<DebugFileRow>, StoreError> {
        const OP: &str = "list debug files";
        let client = self.client(OP).await?;
        let sql =
            format!("SELECT {COLUMNS} FROM debug_files ORDER BY uploaded_ms DESC, build_id, kind LIMIT $1");
        let rows = client.query(&sql, &[&i64::from(limit)]).await.map_err(backend(OP))?;
        rows.iter().map(to_row).collect()
    }

    fn keeps_bytes(&self) -> bool {
        true
    }

    async fn copy_debug_file(
        &self,
        build_id: String,
        kind: FileKind,
        to: PathBuf,
    ) -> Result<Option<DebugFileRow>, StoreError> {
        const OP: &str = "read a debug file";
        let mut client = self.client(OP).await?;
        // One snapshot: a file replaced meanwhile by another collector is read whole, old or new.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(backend(OP))?;
        let sql = format!("SELECT {COLUMNS} FROM debug_files WHERE build_id = $1 AND kind = $2");
        let Some(found) = tx.query_opt(&sql, &[&build_id, &kind.name()]).await.map_err(backend(OP))? else {
            return Ok(None);
        };
        let row = to_row(&found)?;
        let select = tx
            .prepare("SELECT bytes FROM debug_file_chunks WHERE build_id = $1 AND kind = $2 AND seq = $3")
            .await
            .map_err(backend(OP))?;
        let mut out = tokio::fs::File::create(&to).await.map_err(backend(OP))?;
        let mut total: u64 = 0;
        for seq in 0i32.. {
            let Some(chunk) =
                tx.query_opt(&select, &[&build_id, &kind.name(), &seq]).await.map_err(backend(OP))?
            else {
                break;
            };
            let bytes: &[u8] = chunk.try_get(0).map_err(backend(OP))?;
            out.write_all(bytes).await.map_err(backend(OP))?;
            total += bytes.len() as u64;
        }
        if total != row.size {
            return Err(StoreError::BadRow {
                what: "debug_file_chunks",
                value: format!("{build_id}/{}: {total} bytes, the row says {}", kind.name(), row.size),
            });
        }
        out.sync_all().await.map_err(backend(OP))?;
        Ok(Some(row))
    }
}
