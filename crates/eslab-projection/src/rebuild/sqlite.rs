//! The rebuild on SQLite: a shadow file beside the database, attached to the
//! writer and copied over the live tables in one write transaction.

use std::path::{Path, PathBuf};

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Executor, Sqlite};

use super::sealed::{Checkpoints, Finish, ShadowOps};
use super::{RebuildError, Result, db, suffix};
use crate::SqliteBackend;

/// The live writer pool and the shadow file.
#[derive(Debug)]
pub struct SqlitePlace {
    pool: SqlitePool,
    path: PathBuf,
}

/// The writer connection, with the shadow attached, inside the swap's transaction.
pub struct SqliteSwap {
    conn: PoolConnection<Sqlite>,
}

fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| crate::Error::Backend(format!("{v} does not fit in BIGINT").into()).into())
}

/// The file of the pool's main database (`None` in memory).
async fn main_file(pool: &SqlitePool, name: &str) -> Result<Option<PathBuf>> {
    let (file,): (String,) = sqlx::query_as("SELECT file FROM pragma_database_list WHERE name = 'main'")
        .fetch_one(pool)
        .await
        .map_err(db(name, "reading the database's file"))?;
    Ok(Some(PathBuf::from(file)).filter(|f| !f.as_os_str().is_empty()))
}

/// Removes a SQLite file and its journals.
fn remove_files(path: &Path) -> Result<()> {
    for tail in ["", "-journal", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{tail}", path.display()));
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(RebuildError::Io { path: file, source }),
        }
    }
    Ok(())
}

impl ShadowOps for SqliteBackend {
    type Place = SqlitePlace;
    type Swap = SqliteSwap;

    async fn ensure_live(&self, name: &str) -> Result<()> {
        if main_file(self.pool(), name).await?.is_none() {
            return Err(RebuildError::InMemory);
        }
        Ok(self.ensure_schema().await?)
    }

    async fn open_shadow(&self, name: &str) -> Result<(Self, SqlitePlace)> {
        let file = main_file(self.pool(), name).await?.ok_or(RebuildError::InMemory)?;
        let path = PathBuf::from(format!("{}.rebuild-{}", file.display(), suffix(name)));
        remove_files(&path)?;
        // A scratch file, thrown away if anything fails: no journal on disk, no fsync.
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Memory)
            .synchronous(SqliteSynchronous::Off);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(db(name, "creating the shadow file"))?;
        let backend = SqliteBackend::new(pool);
        backend.ensure_schema().await?;
        Ok((backend, SqlitePlace { pool: self.pool().clone(), path }))
    }

    async fn check_tables(&self, name: &str, tables: &[String]) -> Result<()> {
        for table in tables {
            let (found,): (bool,) = sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE)",
            )
            .bind(table)
            .fetch_one(self.pool())
            .await
            .map_err(db(name, "looking for the projection's tables"))?;
            if !found {
                let file = main_file(self.pool(), name).await?.unwrap_or_default();
                return Err(RebuildError::MissingTable {
                    projection: name.to_owned(),
                    table: table.clone(),
                    place: format!("file {}", file.display()),
                });
            }
        }
        Ok(())
    }

    async fn begin_swap(
        &self,
        place: &SqlitePlace,
        name: &str,
        _tables: &[String],
    ) -> Result<(Self::Swap, Checkpoints)> {
        let mut conn = place.pool.acquire().await.map_err(db(name, "opening the swap"))?;
        // Attached and in a transaction of our own making: never hand it back to the pool.
        conn.close_on_drop();
        sqlx::query("ATTACH DATABASE ? AS eslab_shadow")
            .bind(place.path.to_string_lossy().into_owned())
            .execute(&mut *conn)
            .await
            .map_err(db(name, "attaching the shadow"))?;
        conn.execute("BEGIN").await.map_err(db(name, "opening the swap"))?;
        // The first write takes the live database's write lock, so no live
        // batch commits until the swap does. (BEGIN IMMEDIATE would lock the
        // shadow too, which the swap may still have to write through its own
        // connection.)
        sqlx::query("UPDATE main.projection_checkpoints SET name = name WHERE name = ?")
            .bind(name)
            .execute(&mut *conn)
            .await
            .map_err(db(name, "locking the live database"))?;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT name, transaction_id, global_position FROM main.projection_checkpoints
             WHERE name = ?1 OR substr(name, 1, length(?2)) = ?2",
        )
        .bind(name)
        .bind(format!("{name}#"))
        .fetch_all(&mut *conn)
        .await
        .map_err(db(name, "reading the live checkpoints"))?;
        let rows = crate::sql::named_checkpoints(rows);
        Ok((SqliteSwap { conn }, rows))
    }

    async fn finish_swap(mut swap: SqliteSwap, _place: &SqlitePlace, finish: Finish<'_>) -> Result<()> {
        let copied = copy(&mut swap, finish).await;
        if copied.is_err() {
            Self::abort_swap(swap).await;
        }
        copied
    }

    async fn abort_swap(mut swap: SqliteSwap) {
        // Closing the connection (on drop) rolls back too; rolling back now frees the writer at once.
        if let Err(e) = swap.conn.execute("ROLLBACK").await {
            tracing::debug!(error = %e, "rolling the swap back failed; the connection is closed");
        }
    }

    async fn drop_shadow(&self, shadow: Self, place: SqlitePlace, _name: &str) -> Result<()> {
        shadow.pool().close().await;
        remove_files(&place.path)
    }
}

/// The swap's writes and commit.
async fn copy(swap: &mut SqliteSwap, finish: Finish<'_>) -> Result<()> {
    let Finish { name, tables, checkpoints } = finish;
    let conn = &mut *swap.conn;
    for table in tables {
        // sql-ident: table names checked by `ident` in Rebuild::prepare.
        let delete = format!("DELETE FROM main.{table}");
        conn.execute(delete.as_str()).await.map_err(db(name, "emptying a live table"))?;
        // sql-ident: table names checked by `ident` in Rebuild::prepare.
        let insert = format!("INSERT INTO main.{table} SELECT * FROM eslab_shadow.{table}");
        conn.execute(insert.as_str()).await.map_err(db(name, "copying a shadow table in"))?;
    }
    sqlx::query("DELETE FROM main.parked_events WHERE projection = ?")
        .bind(name)
        .execute(&mut *conn)
        .await
        .map_err(db(name, "swapping the parked events"))?;
    sqlx::query("INSERT INTO main.parked_events SELECT * FROM eslab_shadow.parked_events WHERE projection = ?")
        .bind(name)
        .execute(&mut *conn)
        .await
        .map_err(db(name, "swapping the parked events"))?;
    if let Some((names, at)) = checkpoints {
        for checkpoint in names {
            sqlx::query(
                "INSERT INTO main.projection_checkpoints (name, transaction_id, global_position, updated_at_ms)
                 VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET transaction_id = excluded.transaction_id,
                     global_position = excluded.global_position, updated_at_ms = excluded.updated_at_ms",
            )
            .bind(checkpoint)
            .bind(to_i64(at.transaction)?)
            .bind(to_i64(at.position.get())?)
            .bind(crate::sql::now_ms())
            .execute(&mut *conn)
            .await
            .map_err(db(name, "setting the checkpoints"))?;
        }
    }
    conn.execute("COMMIT").await.map_err(db(name, "committing the swap"))?;
    Ok(())
}
