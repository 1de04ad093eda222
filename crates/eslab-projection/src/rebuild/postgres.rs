//! The rebuild on PostgreSQL: a shadow schema beside the live one, swapped in
//! with `ALTER TABLE … SET SCHEMA` in one transaction.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Executor, Postgres, Transaction};

use super::sealed::{Checkpoints, Finish, ShadowOps};
use super::{RebuildError, Result, db, ident, suffix};
use crate::PgBackend;

/// The live and shadow schemas (validated identifiers).
#[derive(Debug)]
pub struct PgPlace {
    live: String,
    shadow: String,
    pool: PgPool,
}

fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| crate::Error::Backend(format!("{v} does not fit in BIGINT").into()).into())
}

/// The schema unqualified names resolve to on `pool`.
async fn current_schema(pool: &PgPool, name: &str) -> Result<String> {
    let (schema,): (Option<String>,) =
        sqlx::query_as("SELECT current_schema()").fetch_one(pool).await.map_err(db(name, "reading the schema"))?;
    let schema = schema.ok_or(RebuildError::InvalidName {
        what: "schema",
        name: String::new(),
        why: "the connection's search_path names no existing schema",
    })?;
    ident("schema", &schema)?;
    Ok(schema)
}

impl ShadowOps for PgBackend {
    type Place = PgPlace;
    type Swap = Transaction<'static, Postgres>;

    async fn ensure_live(&self, _name: &str) -> Result<()> {
        Ok(self.ensure_schema().await?)
    }

    async fn open_shadow(&self, name: &str) -> Result<(Self, PgPlace)> {
        let live = current_schema(self.pool(), name).await?;
        let shadow = format!("{live}_rebuild_{}", suffix(name));
        ident("shadow schema", &shadow)?;
        // sql-ident: the live schema and the projection's name, checked by `ident`.
        let drop = format!("DROP SCHEMA IF EXISTS \"{shadow}\" CASCADE");
        self.pool().execute(drop.as_str()).await.map_err(db(name, "dropping an old shadow schema"))?;
        // sql-ident: checked by `ident` above.
        let create = format!("CREATE SCHEMA \"{shadow}\"");
        self.pool().execute(create.as_str()).await.map_err(db(name, "creating the shadow schema"))?;
        // sql-ident: checked by `ident` above.
        let search_path = format!("SET search_path TO \"{shadow}\"");
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .after_connect(move |conn, _| {
                let sql = search_path.clone();
                Box::pin(async move {
                    conn.execute(sql.as_str()).await?;
                    Ok(())
                })
            })
            .connect_with((*self.pool().connect_options()).clone())
            .await
            .map_err(db(name, "connecting to the shadow schema"))?;
        let backend = PgBackend::new(pool);
        backend.ensure_schema().await?;
        Ok((backend, PgPlace { live, shadow, pool: self.pool().clone() }))
    }

    async fn check_tables(&self, name: &str, tables: &[String]) -> Result<()> {
        let schema = current_schema(self.pool(), name).await?;
        for table in tables {
            let (found,): (bool,) = sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2)",
            )
            .bind(&schema)
            .bind(table.to_ascii_lowercase())
            .fetch_one(self.pool())
            .await
            .map_err(db(name, "looking for the projection's tables"))?;
            if !found {
                return Err(RebuildError::MissingTable {
                    projection: name.to_owned(),
                    table: table.clone(),
                    place: format!("schema {schema}"),
                });
            }
        }
        Ok(())
    }

    async fn begin_swap(&self, place: &PgPlace, name: &str, tables: &[String]) -> Result<(Self::Swap, Checkpoints)> {
        let live = &place.live;
        let mut tx = place.pool.begin().await.map_err(db(name, "opening the swap"))?;
        let list = tables.iter().map(|t| format!("\"{live}\".{t}")).collect::<Vec<_>>().join(", ");
        // sql-ident: the live schema and table names, checked by `ident` (open_shadow, prepare).
        let lock = format!("LOCK TABLE {list} IN ACCESS EXCLUSIVE MODE");
        tx.execute(lock.as_str()).await.map_err(db(name, "locking the live tables"))?;
        // sql-ident: the live schema, checked by `ident` in open_shadow.
        let select = format!(
            "SELECT name, transaction_id, global_position FROM \"{live}\".projection_checkpoints
             WHERE name = $1 OR substr(name, 1, length($2)) = $2 FOR UPDATE"
        );
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(&select)
            .bind(name)
            .bind(format!("{name}#"))
            .fetch_all(&mut *tx)
            .await
            .map_err(db(name, "reading the live checkpoints"))?;
        let rows = crate::sql::named_checkpoints(rows);
        Ok((tx, rows))
    }

    async fn finish_swap(mut tx: Self::Swap, place: &PgPlace, finish: Finish<'_>) -> Result<()> {
        let Finish { name, tables, checkpoints } = finish;
        let (live, shadow) = (&place.live, &place.shadow);
        for table in tables {
            // sql-ident: the live schema and table names, checked by `ident` (open_shadow, prepare).
            let drop = format!("DROP TABLE \"{live}\".{table}");
            tx.execute(drop.as_str()).await.map_err(db(name, "dropping a live table"))?;
            // sql-ident: the schemas and table names, checked by `ident` (open_shadow, prepare).
            let set = format!("ALTER TABLE \"{shadow}\".{table} SET SCHEMA \"{live}\"");
            tx.execute(set.as_str()).await.map_err(db(name, "moving a shadow table in"))?;
        }
        // sql-ident: the live schema, checked by `ident` in open_shadow.
        let delete = format!("DELETE FROM \"{live}\".parked_events WHERE projection = $1");
        sqlx::query(&delete).bind(name).execute(&mut *tx).await.map_err(db(name, "swapping the parked events"))?;
        // sql-ident: the schemas, checked by `ident` in open_shadow.
        let insert = format!(
            "INSERT INTO \"{live}\".parked_events SELECT * FROM \"{shadow}\".parked_events WHERE projection = $1"
        );
        sqlx::query(&insert).bind(name).execute(&mut *tx).await.map_err(db(name, "swapping the parked events"))?;
        if let Some((names, at)) = checkpoints {
            // sql-ident: the live schema, checked by `ident` in open_shadow.
            let upsert = format!(
                "INSERT INTO \"{live}\".projection_checkpoints (name, transaction_id, global_position, updated_at_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET transaction_id = excluded.transaction_id,
                     global_position = excluded.global_position, updated_at_ms = excluded.updated_at_ms"
            );
            for checkpoint in names {
                sqlx::query(&upsert)
                    .bind(checkpoint)
                    .bind(to_i64(at.transaction)?)
                    .bind(to_i64(at.position.get())?)
                    .bind(crate::sql::now_ms())
                    .execute(&mut *tx)
                    .await
                    .map_err(db(name, "setting the checkpoints"))?;
            }
        }
        tx.commit().await.map_err(db(name, "committing the swap"))
    }

    async fn abort_swap(tx: Self::Swap) {
        // Dropping rolls back too; rolling back now frees the live tables at once.
        if let Err(e) = tx.rollback().await {
            tracing::debug!(error = %e, "rolling the swap back failed; the connection is dropped");
        }
    }

    async fn drop_shadow(&self, shadow: Self, place: PgPlace, name: &str) -> Result<()> {
        shadow.pool().close().await;
        // sql-ident: checked by `ident` in open_shadow.
        let drop = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", place.shadow);
        self.pool().execute(drop.as_str()).await.map_err(db(name, "dropping the shadow schema"))?;
        Ok(())
    }
}
