//! `eslab rebuild <projection>`: replay the whole feed into shadow tables,
//! then swap them in atomically, while the live read model keeps serving.
//!
//! - PostgreSQL: the shadow is a schema of its own (`<schema>_rebuild`); the
//!   swap is one transaction that locks the live tables, drops them and moves
//!   the shadow tables into the store's schema (readers wait only for the
//!   swap itself, milliseconds).
//! - SQLite: the shadow is a file next to the database; the swap attaches it
//!   and copies its rows over the live ones in one write transaction (WAL
//!   readers keep reading the old rows until the commit).
//!
//! The projection's checkpoints (every partition's) and parked events are
//! swapped with the tables, so a live runner resumes exactly after what the
//! rebuilt tables reflect.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use eslab_bank::{BankViews, SqlViews, ViewsTx, upcasters};
use eslab_core::{Checkpoint, EventReader, EventStorage, EventStore, FeedFilter};
use eslab_projection::{Backend, Outcome, PgBackend, Runner, RunnerOptions, SqliteBackend};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::{Connection, Executor};

use crate::projections::{BANK_VIEWS, TRANSFER_PROCESS};
use crate::store::AnyStore;

/// The read-model tables of the bank views, swapped together.
pub const TABLES: [&str; 3] = ["account_summary", "account_history", "transfer_status"];

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Events replayed.
    pub events: u64,
    /// The checkpoint the swapped-in tables reflect.
    pub checkpoint: Checkpoint,
}

/// A replayed shadow copy, ready to be swapped in.
#[derive(Debug)]
pub struct Shadow {
    rebuilt: Rebuilt,
    kind: ShadowKind,
}

#[derive(Debug)]
enum ShadowKind {
    Postgres { store: eslab_postgres::PostgresStore, schema: String, pool: sqlx::PgPool },
    Sqlite { store: eslab_sqlite::SqliteStore, path: PathBuf, pool: sqlx::SqlitePool },
}

/// A progress bar on stderr: events replayed, events/s and ETA.
pub fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{spinner} rebuilding [{bar:40}] {pos}/{len} events, {per_sec}, ETA {eta} ({elapsed})",
    )
    .map_or_else(|_| ProgressStyle::default_bar(), |s| s.progress_chars("=> "));
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn check_projection(projection: &str) -> anyhow::Result<()> {
    if projection == TRANSFER_PROCESS {
        bail!("{TRANSFER_PROCESS} is a process manager: its effects are events, there is no read model to rebuild");
    }
    if projection != BANK_VIEWS {
        bail!("unknown projection {projection:?}; the one with read models is {BANK_VIEWS}");
    }
    Ok(())
}

/// Replays the whole feed into `backend` with the bank views, reporting progress.
async fn replay<S, B>(store: S, backend: B, progress: &ProgressBar) -> anyhow::Result<Rebuilt>
where
    S: EventStorage + Clone + 'static,
    B: Backend,
    B::Tx: ViewsTx,
{
    let store = EventStore::new(store).with_upcasters(upcasters());
    let head = store.feed_head(&FeedFilter::All).await?;
    progress.set_length(head.map_or(0, |h| h.checkpoint.position.get()));
    let runner = Runner::new(store, Arc::new(backend), Arc::new(BankViews)).with_options(RunnerOptions {
        batch_size: 2_000,
        owner: format!("rebuild-{}", uuid::Uuid::now_v7()),
        ..RunnerOptions::default()
    });
    let mut events = 0_u64;
    loop {
        match runner.run_once().await? {
            Outcome::Processed { events: n, .. } => {
                let n = u64::try_from(n).unwrap_or(u64::MAX);
                events = events.saturating_add(n);
                progress.inc(n);
                if progress.position() > progress.length().unwrap_or(0) {
                    progress.set_length(progress.position());
                }
            }
            Outcome::Idle => break,
            Outcome::NotLeader => bail!("the shadow projection's lease is held by someone else"),
        }
    }
    progress.finish();
    Ok(Rebuilt { events, checkpoint: runner.checkpoint().await? })
}

/// Replays `projection` into fresh shadow tables (the live ones keep serving).
pub async fn prepare(store: &AnyStore, projection: &str, progress: &ProgressBar) -> anyhow::Result<Shadow> {
    check_projection(projection)?;
    match store {
        AnyStore::Memory(_) => bail!("the memory store keeps no read models between runs: nothing to rebuild"),
        AnyStore::Postgres(pg) => {
            let main = PgBackend::new(pg.pool().clone());
            main.ensure_schema().await?;
            SqlViews::new(pg.pool().clone()).ensure_schema().await?;
            let schema = format!("{}_rebuild", pg.schema());
            if schema.len() > 63 {
                bail!("schema name {:?} is too long for a shadow schema beside it", pg.schema());
            }
            // The name is the store's validated schema name plus a suffix: quoting is enough.
            // sql-ident: the store's validated schema name plus "_rebuild".
            pg.pool().execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE").as_str()).await?;
            // sql-ident: the store's validated schema name plus "_rebuild".
            pg.pool().execute(format!("CREATE SCHEMA \"{schema}\"").as_str()).await?;
            // sql-ident: the store's validated schema name plus "_rebuild".
            let search_path = format!("SET search_path TO \"{schema}\"");
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(2)
                .after_connect(move |conn, _| {
                    let sql = search_path.clone();
                    Box::pin(async move {
                        conn.execute(sql.as_str()).await?;
                        Ok(())
                    })
                })
                .connect_with((*pg.pool().connect_options()).clone())
                .await
                .context("connecting the shadow schema's pool")?;
            let backend = PgBackend::new(pool.clone());
            backend.ensure_schema().await?;
            SqlViews::new(pool.clone()).ensure_schema().await?;
            let rebuilt = replay(pg.clone(), backend, progress).await?;
            Ok(Shadow { rebuilt, kind: ShadowKind::Postgres { store: pg.clone(), schema, pool } })
        }
        AnyStore::Sqlite(s) => {
            let main = SqliteBackend::new(s.writer_pool().clone());
            main.ensure_schema().await?;
            SqlViews::new(s.writer_pool().clone()).ensure_schema().await?;
            let file = s.writer_pool().connect_options().get_filename().to_owned();
            if file.as_os_str().is_empty() || file.to_string_lossy().contains(":memory:") {
                bail!("an in-memory SQLite database keeps no read models between runs: nothing to rebuild");
            }
            let path = PathBuf::from(format!("{}.rebuild", file.display()));
            remove_sqlite_file(&path)?;
            // A scratch file: thrown away if anything fails, so no fsync.
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Memory)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Off);
            let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
            let backend = SqliteBackend::new(pool.clone());
            backend.ensure_schema().await?;
            SqlViews::new(pool.clone()).ensure_schema().await?;
            let rebuilt = replay(s.clone(), backend, progress).await?;
            Ok(Shadow { rebuilt, kind: ShadowKind::Sqlite { store: s.clone(), path, pool } })
        }
    }
}

fn remove_sqlite_file(path: &std::path::Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let p = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
        }
    }
    Ok(())
}

impl Shadow {
    /// What the shadow holds.
    pub fn rebuilt(&self) -> Rebuilt {
        self.rebuilt
    }

    /// Swaps the shadow tables, checkpoints and parked events in, atomically.
    pub async fn swap(self) -> anyhow::Result<Rebuilt> {
        let at = self.rebuilt.checkpoint;
        match self.kind {
            ShadowKind::Postgres { store, schema, pool } => {
                pool.close().await;
                let main = store.schema().to_owned();
                let mut tx = store.pool().begin().await?;
                // Locking first: a live runner's batch in flight finishes before the swap.
                // sql-ident: table names from the constant TABLES.
                tx.execute(format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", TABLES.join(", ")).as_str()).await?;
                for table in TABLES {
                    // sql-ident: table names from the constant TABLES.
                    tx.execute(format!("DROP TABLE {table}").as_str()).await?;
                    // sql-ident: TABLES constant; schemas validated (store) and derived from it.
                    tx.execute(format!("ALTER TABLE \"{schema}\".{table} SET SCHEMA \"{main}\"").as_str()).await?;
                }
                let live: Vec<(String,)> = sqlx::query_as(
                    "SELECT name FROM projection_checkpoints WHERE name = $1 OR name LIKE $2 FOR UPDATE",
                )
                .bind(BANK_VIEWS)
                .bind(format!("{BANK_VIEWS}#%"))
                .fetch_all(&mut *tx)
                .await?;
                for name in checkpoint_names(live) {
                    sqlx::query(
                        "INSERT INTO projection_checkpoints (name, transaction_id, global_position, updated_at_ms)
                         VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET
                         transaction_id = excluded.transaction_id, global_position = excluded.global_position,
                         updated_at_ms = excluded.updated_at_ms",
                    )
                    .bind(name)
                    .bind(i64::try_from(at.transaction)?)
                    .bind(i64::try_from(at.position.get())?)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query("DELETE FROM parked_events WHERE projection = $1")
                    .bind(BANK_VIEWS)
                    .execute(&mut *tx)
                    .await?;
                // sql-ident: the shadow schema is the validated store schema plus "_rebuild".
                sqlx::query(&format!(
                    "INSERT INTO parked_events SELECT * FROM \"{schema}\".parked_events WHERE projection = $1"
                ))
                .bind(BANK_VIEWS)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                // sql-ident: the store's validated schema name plus "_rebuild".
                store.pool().execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE").as_str()).await?;
            }
            ShadowKind::Sqlite { store, path, pool } => {
                pool.close().await;
                let mut conn = store.writer_pool().acquire().await?;
                sqlx::query("ATTACH DATABASE ? AS shadow")
                    .bind(path.to_string_lossy().into_owned())
                    .execute(&mut *conn)
                    .await?;
                let swapped = swap_sqlite(&mut conn, at).await;
                if swapped.is_err() {
                    let _ = conn.execute("ROLLBACK").await;
                }
                let detached = sqlx::query("DETACH DATABASE shadow").execute(&mut *conn).await;
                if detached.is_err() {
                    // Never hand the writer back with the shadow attached.
                    let _ = conn.detach().close().await;
                }
                swapped?;
                remove_sqlite_file(&path)?;
            }
        }
        Ok(self.rebuilt)
    }
}

/// The projection's own checkpoint name plus every partition name the live side uses.
fn checkpoint_names(live: Vec<(String,)>) -> Vec<String> {
    let mut names: Vec<String> = live.into_iter().map(|(n,)| n).collect();
    if !names.iter().any(|n| n == BANK_VIEWS) {
        names.push(BANK_VIEWS.to_owned());
    }
    names
}

fn now_ms() -> i64 {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    i64::try_from(ms).unwrap_or(i64::MAX)
}

async fn swap_sqlite(conn: &mut sqlx::SqliteConnection, at: Checkpoint) -> anyhow::Result<()> {
    conn.execute("BEGIN IMMEDIATE").await?;
    for table in TABLES {
        // sql-ident: table names from the constant TABLES.
        conn.execute(format!("DELETE FROM main.{table}").as_str()).await?;
        // sql-ident: table names from the constant TABLES.
        conn.execute(format!("INSERT INTO main.{table} SELECT * FROM shadow.{table}").as_str()).await?;
    }
    let live: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM main.projection_checkpoints WHERE name = ? OR name LIKE ?")
            .bind(BANK_VIEWS)
            .bind(format!("{BANK_VIEWS}#%"))
            .fetch_all(&mut *conn)
            .await?;
    for name in checkpoint_names(live) {
        sqlx::query(
            "INSERT INTO main.projection_checkpoints (name, transaction_id, global_position, updated_at_ms)
             VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET transaction_id = excluded.transaction_id,
             global_position = excluded.global_position, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(name)
        .bind(i64::try_from(at.transaction)?)
        .bind(i64::try_from(at.position.get())?)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("DELETE FROM main.parked_events WHERE projection = ?").bind(BANK_VIEWS).execute(&mut *conn).await?;
    sqlx::query("INSERT INTO main.parked_events SELECT * FROM shadow.parked_events WHERE projection = ?")
        .bind(BANK_VIEWS)
        .execute(&mut *conn)
        .await?;
    conn.execute("COMMIT").await?;
    Ok(())
}

/// Rebuilds `projection`: [`prepare`], then [`Shadow::swap`].
pub async fn rebuild(store: &AnyStore, projection: &str, progress: &ProgressBar) -> anyhow::Result<Rebuilt> {
    prepare(store, projection, progress).await?.swap().await
}
