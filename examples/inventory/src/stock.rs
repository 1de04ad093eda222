//! The stock-level read model: one row per product in `stock_levels`, kept
//! by the [`StockLevels`] projection. One type serves PostgreSQL and SQLite:
//! the SQL is written once, generic over the sqlx database ([`StockTx`]).

use std::future::Future;

use eslab_core::{Aggregate, BoxError, Codec, FeedFilter, JsonCodec, RecordedEvent};
use eslab_projection::{Backend, HandlerError, Projection, ReadModel};

use crate::product::{Product, ProductEvent};

/// One product's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLevel {
    /// The product id (the stream's `<id>`).
    pub sku: String,
    /// Its name.
    pub name: String,
    /// Units in the warehouse.
    pub on_hand: i64,
    /// Units reserved.
    pub reserved: i64,
    /// The product's stream version the row reflects.
    pub version: i64,
}

/// The projection of product events into `stock_levels`.
#[derive(Debug, Clone, Copy)]
pub struct StockLevels;

impl StockLevels {
    /// Its name: the key of its checkpoint, lease and parked events.
    pub const NAME: &'static str = "stock-levels";
}

/// What the read model needs of a backend's transaction. Implemented once
/// below, for the transaction of any sqlx database that binds and reads text
/// and integers: PostgreSQL's and SQLite's.
pub trait StockTx: Send {
    /// Creates `stock_levels` if it does not exist.
    fn create_table(&mut self) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    /// Inserts a product's row (a no-op if it exists).
    fn insert(&mut self, sku: &str, name: &str, version: i64) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    /// Adds to a row's counts, unless it already reflects `version`.
    fn add(
        &mut self,
        sku: &str,
        on_hand: i64,
        reserved: i64,
        version: i64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    /// One product's row.
    fn level(&mut self, sku: &str) -> impl Future<Output = Result<Option<StockLevel>, sqlx::Error>> + Send;
}

impl<DB> StockTx for sqlx::Transaction<'static, DB>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> (String, String, i64, i64, i64): sqlx::FromRow<'r, DB::Row>,
{
    async fn create_table(&mut self) -> Result<(), sqlx::Error> {
        let ddl = "CREATE TABLE IF NOT EXISTS stock_levels (sku TEXT PRIMARY KEY, name TEXT NOT NULL,
                   on_hand BIGINT NOT NULL, reserved BIGINT NOT NULL, version BIGINT NOT NULL)";
        sqlx::query(ddl).execute(&mut **self).await.map(drop)
    }

    async fn insert(&mut self, sku: &str, name: &str, version: i64) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO stock_levels (sku, name, on_hand, reserved, version) VALUES ($1, $2, 0, 0, $3)
                   ON CONFLICT (sku) DO NOTHING";
        sqlx::query(sql).bind(sku).bind(name).bind(version).execute(&mut **self).await.map(drop)
    }

    async fn add(&mut self, sku: &str, on_hand: i64, reserved: i64, version: i64) -> Result<(), sqlx::Error> {
        let sql = "UPDATE stock_levels SET on_hand = on_hand + $2, reserved = reserved + $3, version = $4
                   WHERE sku = $1 AND version < $4";
        let query = sqlx::query(sql).bind(sku).bind(on_hand).bind(reserved).bind(version);
        query.execute(&mut **self).await.map(drop)
    }

    async fn level(&mut self, sku: &str) -> Result<Option<StockLevel>, sqlx::Error> {
        let sql = "SELECT sku, name, on_hand, reserved, version FROM stock_levels WHERE sku = $1";
        let row: Option<(String, String, i64, i64, i64)> =
            sqlx::query_as(sql).bind(sku).fetch_optional(&mut **self).await?;
        Ok(row.map(|(sku, name, on_hand, reserved, version)| StockLevel { sku, name, on_hand, reserved, version }))
    }
}

impl<B: Backend<Tx: StockTx>> Projection<B> for StockLevels {
    fn name(&self) -> &str {
        StockLevels::NAME
    }

    fn filter(&self) -> FeedFilter {
        FeedFilter::Category(Product::KIND.to_owned())
    }

    async fn apply(&self, tx: &mut B::Tx, event: &RecordedEvent) -> Result<(), HandlerError> {
        let sku = event.stream_id.id();
        let refuse = |e: &dyn std::error::Error| HandlerError::new(e.to_string()); // parks the product's stream
        let version = i64::try_from(event.stream_version.get()).map_err(|e| refuse(&e).with_source(e))?;
        let decoded: ProductEvent = JsonCodec.decode(event).map_err(|e| refuse(&e).with_source(e))?;
        let written = match decoded {
            ProductEvent::Registered { name } => tx.insert(sku, &name, version).await,
            ProductEvent::Received { quantity } => tx.add(sku, quantity.into(), 0, version).await,
            ProductEvent::Reserved { quantity } => tx.add(sku, 0, quantity.into(), version).await,
            ProductEvent::Released { quantity } => tx.add(sku, 0, -i64::from(quantity), version).await,
        };
        // A database error may pass: the batch is rolled back and tried again.
        written.map_err(|e| HandlerError::transient(e.to_string()).with_source(e))
    }
}

/// The table it owns, for a [`Rebuild`](eslab_projection::Rebuild) (and to create it).
impl<B: Backend<Tx: StockTx>> ReadModel<B> for StockLevels {
    fn tables(&self) -> Vec<String> {
        vec!["stock_levels".to_owned()]
    }

    async fn create_tables(&self, backend: &B) -> Result<(), BoxError> {
        let mut tx = backend.begin().await?;
        tx.create_table().await?;
        Ok(backend.commit(tx).await?)
    }
}

/// One product's row, read through `backend` (a transaction rolled back after the read).
///
/// # Errors
/// The backend's.
pub async fn stock_level<B: Backend<Tx: StockTx>>(backend: &B, sku: &str) -> Result<Option<StockLevel>, BoxError> {
    let mut tx = backend.begin().await?;
    Ok(tx.level(sku).await?)
}
