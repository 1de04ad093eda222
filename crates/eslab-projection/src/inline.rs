//! Inline projections: a projection applied inside the append's own
//! transaction, so a reader sees the read model change together with the
//! events (read-your-writes), and a handler error rolls the append back.
//!
//! [`Inline`] wraps a store and is itself an [`EventAppender`] and
//! [`EventReader`], so a [`Repository`](eslab_core::Repository) over it runs
//! the projection on every command. The price is write latency: the handler's
//! statements run inside the append's transaction (on SQLite, while holding
//! the single writer).
//!
//! Only appends made through the wrapper run the projection. If other writers
//! append to the same store, also run the projection asynchronously with a
//! [`Runner`](crate::Runner): a handler that ignores events at or below the
//! row's version (as the bank's read models do) makes the two safe together.

use std::future::Future;
use std::sync::Arc;

use eslab_core::{
    AppendResult, Checkpoint, EventAppender, EventReader, FeedFilter, FeedHead, RecordedEvent, StreamAppend, StreamId,
    Version,
};

use crate::backend::{Backend, Projection};
use crate::{Error, Result};

/// A store whose appends can run inside a transaction of the read-model
/// backend `B` (same database).
pub trait InlineStore<B: Backend>: EventReader + EventAppender + Clone + 'static {
    /// Opens a transaction of `backend` that [`append_in`](Self::append_in) can write events in.
    fn begin_append(&self, backend: &B) -> impl Future<Output = Result<B::Tx>> + Send;

    /// Appends inside `tx` (visible once `tx` commits).
    fn append_in(
        &self,
        tx: &mut B::Tx,
        appends: Vec<StreamAppend>,
    ) -> impl Future<Output = eslab_core::Result<Vec<AppendResult>>> + Send;

    /// Commits `tx`, then wakes the store's live readers.
    fn commit_append(
        &self,
        backend: &B,
        tx: B::Tx,
        results: &[AppendResult],
    ) -> impl Future<Output = Result<()>> + Send;
}

/// A store whose appends also apply an inline projection in the same
/// transaction. Clones share the backend and the projection.
#[derive(Debug)]
pub struct Inline<S, B, P> {
    store: S,
    backend: Arc<B>,
    projection: Arc<P>,
}

impl<S: Clone, B, P> Clone for Inline<S, B, P> {
    fn clone(&self) -> Self {
        Inline { store: self.store.clone(), backend: self.backend.clone(), projection: self.projection.clone() }
    }
}

impl<S, B, P> Inline<S, B, P>
where
    S: InlineStore<B>,
    B: Backend,
    P: Projection<B>,
{
    /// `store` with `projection` applied inline, writing through `backend`
    /// (which must be on the store's own database: the store's pool on
    /// PostgreSQL, its writer pool on SQLite).
    pub fn new(store: S, backend: Arc<B>, projection: Arc<P>) -> Self {
        Inline { store, backend, projection }
    }

    /// The wrapped store (its appends do not run the projection).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Appends and applies the projection to the recorded events (those its
    /// filter passes) in one transaction. A handler error rolls everything
    /// back and is returned as [`Error::Rejected`]; nothing is recorded.
    pub async fn append_inline(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        let mut tx = self.store.begin_append(&self.backend).await?;
        let results = self.store.append_in(&mut tx, appends).await?;
        let filter = self.projection.filter();
        let mut events: Vec<RecordedEvent> = results
            .iter()
            .flat_map(|r| r.events.iter())
            .filter(|event| filter.matches(&event.stream_id))
            .cloned()
            .collect();
        // An `EventStore` over this one sealed their personal data: the
        // projection sees it opened, as a reader of the feed does.
        if let Some(keys) = self.store.personal_keys() {
            eslab_core::personal::open_events(keys.as_ref(), &mut events).await?;
        }
        for event in &events {
            if let Err(source) = self.projection.apply(&mut tx, event).await {
                drop(tx);
                return Err(Error::Rejected {
                    projection: self.projection.name().to_owned(),
                    stream: event.stream_id.clone(),
                    version: event.stream_version,
                    source,
                });
            }
        }
        self.store.commit_append(&self.backend, tx, &results).await?;
        Ok(results)
    }
}

impl<S, B, P> EventAppender for Inline<S, B, P>
where
    S: InlineStore<B>,
    B: Backend,
    P: Projection<B>,
{
    /// Appends through [`append_inline`](Inline::append_inline); a handler
    /// error comes back as `eslab_core::Error::Backend` wrapping this crate's
    /// [`Error::Rejected`] (see [`Error::from_store`]).
    async fn append_streams(&self, appends: Vec<StreamAppend>) -> eslab_core::Result<Vec<AppendResult>> {
        self.append_inline(appends).await.map_err(Error::into_store)
    }

    /// Refused with `eslab_core::Error::InvalidRequest`: a conditional append
    /// does not run inside an inline projection's transaction (yet). Append
    /// through the store, and project asynchronously.
    async fn append_if(
        &self,
        _appends: Vec<StreamAppend>,
        _condition: eslab_core::AppendCondition,
    ) -> eslab_core::Result<Vec<AppendResult>> {
        Err(eslab_core::Error::InvalidRequest(
            "conditional appends (append_if) do not run through an inline projection".into(),
        ))
    }
}

impl<S, B, P> EventReader for Inline<S, B, P>
where
    S: InlineStore<B>,
    B: Backend,
    P: Projection<B>,
{
    fn personal_keys(&self) -> Option<std::sync::Arc<dyn eslab_core::KeyStore>> {
        self.store.personal_keys()
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> eslab_core::Result<Vec<RecordedEvent>> {
        self.store.read_stream(stream, from, limit).await
    }

    async fn read_stream_lean(
        &self,
        stream: &StreamId,
        from: Version,
        limit: usize,
    ) -> eslab_core::Result<Vec<eslab_core::LeanEvent>> {
        self.store.read_stream_lean(stream, from, limit).await
    }

    async fn read_feed(
        &self,
        filter: &FeedFilter,
        after: Checkpoint,
        limit: usize,
    ) -> eslab_core::Result<Vec<RecordedEvent>> {
        self.store.read_feed(filter, after, limit).await
    }

    async fn stream_version(&self, stream: &StreamId) -> eslab_core::Result<Version> {
        self.store.stream_version(stream).await
    }

    async fn read_query(&self, query: &eslab_core::Query) -> eslab_core::Result<eslab_core::QueryRead> {
        self.store.read_query(query).await
    }

    async fn feed_head(&self, filter: &FeedFilter) -> eslab_core::Result<Option<FeedHead>> {
        self.store.feed_head(filter).await
    }
}

#[cfg(feature = "postgres")]
impl InlineStore<crate::PgBackend> for eslab_postgres::PostgresStore {
    async fn begin_append(&self, backend: &crate::PgBackend) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        backend.begin().await
    }

    async fn append_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        appends: Vec<StreamAppend>,
    ) -> eslab_core::Result<Vec<AppendResult>> {
        self.append_in_tx(tx, appends).await
    }

    async fn commit_append(
        &self,
        backend: &crate::PgBackend,
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
        results: &[AppendResult],
    ) -> Result<()> {
        backend.commit(tx).await?;
        self.notify_committed(results);
        Ok(())
    }
}

#[cfg(feature = "sqlite")]
impl InlineStore<crate::SqliteBackend> for eslab_sqlite::SqliteStore {
    async fn begin_append(&self, _backend: &crate::SqliteBackend) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        // The store's writer, where the backend writes too (it must be built
        // on `writer_pool()`): one connection, so no SQLITE_BUSY half-way.
        Ok(self.begin_write().await?)
    }

    async fn append_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        appends: Vec<StreamAppend>,
    ) -> eslab_core::Result<Vec<AppendResult>> {
        self.append_in_tx(tx, appends).await
    }

    async fn commit_append(
        &self,
        backend: &crate::SqliteBackend,
        tx: sqlx::Transaction<'static, sqlx::Sqlite>,
        results: &[AppendResult],
    ) -> Result<()> {
        backend.commit(tx).await?;
        self.notify_committed(results);
        Ok(())
    }
}
