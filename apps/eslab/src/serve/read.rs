//! The query side: the bank's read models, wherever the store keeps them.

use eslab_bank::{AccountSummary, MemoryViews, SqlViews, TransferView};
use eslab_projection::memory::MemoryBackend;

use super::error::ApiError;

/// The read models of the running store.
#[derive(Debug, Clone)]
pub enum ReadModels {
    /// In the in-memory projection backend.
    Memory(MemoryBackend),
    /// In the SQLite file (read through the store's reader pool).
    Sqlite(SqlViews<sqlx::SqlitePool>),
    /// In the PostgreSQL schema.
    Postgres(SqlViews<sqlx::PgPool>),
}

impl ReadModels {
    /// One account's summary.
    pub async fn account(&self, id: &str) -> Result<Option<AccountSummary>, ApiError> {
        Ok(match self {
            ReadModels::Memory(m) => m.account_summaries().into_iter().find(|a| a.id == id),
            ReadModels::Sqlite(v) => v.account(id).await?,
            ReadModels::Postgres(v) => v.account(id).await?,
        })
    }

    /// Up to `limit` accounts whose id sorts after `after`, by id.
    pub async fn accounts(&self, after: Option<&str>, limit: u32) -> Result<Vec<AccountSummary>, ApiError> {
        let sql_limit = i64::from(limit);
        Ok(match self {
            ReadModels::Memory(m) => {
                let mut rows: Vec<_> = m
                    .account_summaries()
                    .into_iter()
                    .filter(|a| after.is_none_or(|after| a.id.as_str() > after))
                    .collect();
                rows.sort_by(|a, b| a.id.cmp(&b.id));
                rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                rows
            }
            ReadModels::Sqlite(v) => v.accounts(after, sql_limit).await?,
            ReadModels::Postgres(v) => v.accounts(after, sql_limit).await?,
        })
    }

    /// One transfer's status row.
    pub async fn transfer(&self, id: &str) -> Result<Option<TransferView>, ApiError> {
        Ok(match self {
            ReadModels::Memory(m) => m.transfers().into_iter().find(|t| t.id == id),
            ReadModels::Sqlite(v) => v.transfer(id).await?,
            ReadModels::Postgres(v) => v.transfer(id).await?,
        })
    }
}

impl From<MemoryBackend> for ReadModels {
    fn from(backend: MemoryBackend) -> Self {
        ReadModels::Memory(backend)
    }
}

impl From<sqlx::SqlitePool> for ReadModels {
    fn from(pool: sqlx::SqlitePool) -> Self {
        ReadModels::Sqlite(SqlViews::new(pool))
    }
}

impl From<sqlx::PgPool> for ReadModels {
    fn from(pool: sqlx::PgPool) -> Self {
        ReadModels::Postgres(SqlViews::new(pool))
    }
}
