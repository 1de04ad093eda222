//! What a program needs of the concrete store beyond the store traits, and
//! running code generic over it on the store that was opened.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use eslab_core::{EventStorage, WakeUpStream, WakeUps};
use eslab_memory::MemoryStore;
use eslab_postgres::PostgresStore;
use eslab_projection::memory::MemoryBackend;
use eslab_projection::{Backend, PgBackend, SqliteBackend, Wakeup};
use eslab_sqlite::SqliteStore;
use futures_util::StreamExt;

use crate::Error;

/// A store this crate opens (memory, SQLite, PostgreSQL), with what a
/// program wires to it: the projection backend that keeps read models,
/// checkpoints and parked events beside the events, and where read models
/// are queried.
pub trait Store: EventStorage + WakeUps + Clone + Debug + Send + Sync + 'static {
    /// The projection backend: in memory, or tables in the store's database.
    type Backend: Backend + Clone + Debug;
    /// Where read-model queries go: the memory backend itself, SQLite's
    /// read-only pool, PostgreSQL's pool.
    type Reader: Clone + Debug + Send + Sync + 'static;
    /// A short description for people.
    const DESCRIPTION: &'static str;
    /// Whether what it holds outlives the process.
    const DURABLE: bool;

    /// The projection backends of this store, the runner's tables created.
    fn backends(&self) -> impl Future<Output = Result<Backends<Self>, Error>> + Send;
}

/// The projection backends of a store ([`Store::backends`]).
#[derive(Debug, Clone)]
pub struct Backends<S: Store> {
    /// Where read models (and their checkpoints) are written: the store's
    /// database, through SQLite's single writer so that batches queue behind
    /// appends; one shared backend in memory.
    pub views: S::Backend,
    /// For a projection that appends events from inside its batch (a process
    /// manager): on SQLite a connection of its own, since the batch holds the
    /// writer its appends need; elsewhere the same as `views`.
    pub appending: S::Backend,
    /// Where the read models written through `views` are queried.
    pub reader: S::Reader,
}

impl Store for MemoryStore {
    type Backend = MemoryBackend;
    type Reader = MemoryBackend;
    const DESCRIPTION: &'static str = "in memory (nothing is kept)";
    const DURABLE: bool = false;

    async fn backends(&self) -> Result<Backends<Self>, Error> {
        let backend = MemoryBackend::new();
        Ok(Backends { views: backend.clone(), appending: backend.clone(), reader: backend })
    }
}

impl Store for SqliteStore {
    type Backend = SqliteBackend;
    type Reader = sqlx::SqlitePool;
    const DESCRIPTION: &'static str = "SQLite";
    const DURABLE: bool = true;

    async fn backends(&self) -> Result<Backends<Self>, Error> {
        let views = SqliteBackend::new(self.writer_pool().clone()).immediate();
        views.ensure_schema().await?;
        let options = (*self.writer_pool().connect_options()).clone().busy_timeout(Duration::from_secs(10));
        // Connected on first use: most programs never append from a projection.
        let own = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_lazy_with(options);
        Ok(Backends { views, appending: SqliteBackend::new(own), reader: self.reader_pool().clone() })
    }
}

impl Store for PostgresStore {
    type Backend = PgBackend;
    type Reader = sqlx::PgPool;
    const DESCRIPTION: &'static str = "PostgreSQL";
    const DURABLE: bool = true;

    async fn backends(&self) -> Result<Backends<Self>, Error> {
        let views = PgBackend::new(self.pool().clone());
        views.ensure_schema().await?;
        Ok(Backends { views: views.clone(), appending: views, reader: self.pool().clone() })
    }
}

/// Code that runs on the concrete store, whichever was opened: implement it
/// once, generic over `S: Store` (with whatever bounds the code needs of
/// `S::Backend`), and run it with [`AnyStore::visit`](crate::AnyStore::visit)
/// (or [`visit_durable`](crate::AnyStore::visit_durable)).
pub trait StoreVisitor<S: Store> {
    /// What the code returns.
    type Output;

    /// Runs on `store`.
    fn visit(self, store: S) -> impl Future<Output = Self::Output>;
}

/// Runs the wrapped visitor on the durable stores; refuses the memory store.
pub(crate) struct Durable<V>(pub(crate) V);

impl<V: StoreVisitor<SqliteStore>> StoreVisitor<MemoryStore> for Durable<V> {
    type Output = Result<V::Output, Error>;

    async fn visit(self, _store: MemoryStore) -> Self::Output {
        Err(Error::NotDurable)
    }
}

impl<V: StoreVisitor<SqliteStore>> StoreVisitor<SqliteStore> for Durable<V> {
    type Output = Result<V::Output, Error>;

    async fn visit(self, store: SqliteStore) -> Self::Output {
        Ok(self.0.visit(store).await)
    }
}

impl<V: StoreVisitor<PostgresStore>> StoreVisitor<PostgresStore> for Durable<V> {
    type Output = Result<V::Output, Error>;

    async fn visit(self, store: PostgresStore) -> Self::Output {
        Ok(self.0.visit(store).await)
    }
}

/// A store's wake-ups ([`WakeUps`]: SQLite's and memory's commit signal,
/// PostgreSQL's `LISTEN`) as a projection runner's [`Wakeup`]; once they
/// end, the runner only polls.
pub struct StoreWakeUps(WakeUpStream);

impl StoreWakeUps {
    /// The wake-ups of `store`.
    pub async fn of<S: WakeUps>(store: &S) -> StoreWakeUps {
        StoreWakeUps(store.wake_ups().await)
    }
}

impl Debug for StoreWakeUps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWakeUps").finish_non_exhaustive()
    }
}

impl Wakeup for StoreWakeUps {
    async fn wait(&mut self) {
        if self.0.next().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}
