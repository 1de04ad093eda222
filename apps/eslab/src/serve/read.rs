//! The query side: the bank's read models behind eslab-bank's one query trait
//! ([`BankQueries`]), wherever the store keeps them (the in-memory projection
//! backend, or SQLite or PostgreSQL through [`SqlViews`]).

use std::sync::Arc;

use eslab_bank::{AccountSummary, BankQueries, SqlViews, TransferView};
use eslab_projection::memory::MemoryBackend;

use super::error::ApiError;

/// The read models of the running store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReadModels(Arc<dyn BankQueries>);

impl ReadModels {
    /// Read models answered by `queries`.
    pub fn new(queries: impl BankQueries + 'static) -> Self {
        ReadModels(Arc::new(queries))
    }

    /// One account's summary.
    pub async fn account(&self, id: &str) -> Result<Option<AccountSummary>, ApiError> {
        Ok(self.0.account(id).await?)
    }

    /// Up to `limit` accounts whose id sorts after `after`, by id.
    pub async fn accounts(&self, after: Option<&str>, limit: u32) -> Result<Vec<AccountSummary>, ApiError> {
        Ok(self.0.accounts(after, limit).await?)
    }

    /// One transfer's status row.
    pub async fn transfer(&self, id: &str) -> Result<Option<TransferView>, ApiError> {
        Ok(self.0.transfer(id).await?)
    }
}

impl From<MemoryBackend> for ReadModels {
    fn from(backend: MemoryBackend) -> Self {
        ReadModels::new(backend)
    }
}

impl From<sqlx::SqlitePool> for ReadModels {
    fn from(pool: sqlx::SqlitePool) -> Self {
        ReadModels::new(SqlViews::new(pool))
    }
}

impl From<sqlx::PgPool> for ReadModels {
    fn from(pool: sqlx::PgPool) -> Self {
        ReadModels::new(SqlViews::new(pool))
    }
}
