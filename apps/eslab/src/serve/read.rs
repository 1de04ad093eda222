//! The query side: the bank's read models behind eslab-bank's one query trait
//! ([`BankQueries`]), wherever the store keeps them (the in-memory projection
//! backend, or SQLite or PostgreSQL through [`SqlViews`]).

use std::sync::Arc;

use eslab_bank::{AccountSummary, BankQueries, BankViews, SqlViews, TransferView};
use eslab_core::Subject;
use eslab_projection::memory::MemoryBackend;
use eslab_projection::{Backend, Projection};
use futures_util::future::BoxFuture;

use super::error::ApiError;

/// The read models of the running store. Cheap to clone.
#[derive(Clone)]
pub struct ReadModels {
    queries: Arc<dyn BankQueries>,
    eraser: Option<Arc<dyn Erase>>,
}

impl std::fmt::Debug for ReadModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModels").field("queries", &self.queries).field("erases", &self.eraser.is_some()).finish()
    }
}

/// Erases a forgotten data subject from the read models and the parked
/// events where they are written ([`eslab_projection::forget_subject`] with
/// the bank's views).
pub trait Erase: Send + Sync {
    /// Erases `subject`; returns how many parked events it rewrote.
    fn erase<'a>(&'a self, subject: &'a Subject) -> BoxFuture<'a, eslab_projection::Result<u64>>;
}

impl<B> Erase for B
where
    B: Backend,
    BankViews: Projection<B>,
{
    fn erase<'a>(&'a self, subject: &'a Subject) -> BoxFuture<'a, eslab_projection::Result<u64>> {
        Box::pin(eslab_projection::forget_subject(self, &BankViews, subject))
    }
}

impl ReadModels {
    /// Read models answered by `queries`.
    pub fn new(queries: impl BankQueries + 'static) -> Self {
        ReadModels { queries: Arc::new(queries), eraser: None }
    }

    /// Erases forgotten subjects through `backend` (where the views are written).
    #[must_use]
    pub fn with_eraser(mut self, backend: impl Erase + 'static) -> Self {
        self.eraser = Some(Arc::new(backend));
        self
    }

    /// Erases a forgotten subject from the read models and parked events
    /// (nothing without an eraser: read models kept elsewhere erase themselves).
    pub async fn erase(&self, subject: &Subject) -> Result<u64, ApiError> {
        match &self.eraser {
            Some(eraser) => eraser.erase(subject).await.map_err(|e| ApiError::Internal(Box::new(e))),
            None => Ok(0),
        }
    }

    /// One account's summary.
    pub async fn account(&self, id: &str) -> Result<Option<AccountSummary>, ApiError> {
        Ok(self.queries.account(id).await?)
    }

    /// Up to `limit` accounts whose id sorts after `after`, by id.
    pub async fn accounts(&self, after: Option<&str>, limit: u32) -> Result<Vec<AccountSummary>, ApiError> {
        Ok(self.queries.accounts(after, limit).await?)
    }

    /// One transfer's status row.
    pub async fn transfer(&self, id: &str) -> Result<Option<TransferView>, ApiError> {
        Ok(self.queries.transfer(id).await?)
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
