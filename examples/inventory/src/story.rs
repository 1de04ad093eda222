//! The whole story, on any store with its read-model backend: commands and
//! their answers, refusals, the projection and a live subscription.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use eslab_core::{
    Aggregate, Checkpoint, CommandError, CommandOptions, EventReader, EventStorage, EventStore, FeedFilter, Metadata,
    RecordedEvent, Repository, Result as StoreResult, Version, WakeUps,
};
use eslab_postgres::PostgresStore;
use eslab_projection::{Backend, PgBackend, ReadModel, Runner, SqliteBackend};
use eslab_sqlite::SqliteStore;
use futures_util::{Stream, StreamExt};

use crate::{Product, ProductCommand, StockError, StockLevel, StockLevels, StockTx, answer, reservation, stock_level};

/// Prints product events as they commit, until the story's last one (a release).
async fn print_live(live: impl Stream<Item = StoreResult<RecordedEvent>>) -> StoreResult<Vec<String>> {
    let mut live = std::pin::pin!(live);
    let mut seen = Vec::new();
    while let Some(event) = live.next().await {
        let event = event?;
        println!("  live: {} #{} {} {}", event.stream_id, event.stream_version, event.event_type, event.payload);
        seen.push(event.event_type.clone());
        if event.event_type == "Released" {
            break;
        }
    }
    Ok(seen)
}

/// Opens the store `url` names (`postgres://…`, in `schema`, or
/// `sqlite://…`) and its read-model backend, and runs the [`story`] on them.
///
/// # Errors
/// The store's, or the story's.
pub async fn run(url: &str, schema: &str) -> anyhow::Result<Told> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::connect(url, schema).await?;
        let backend = PgBackend::new(store.pool().clone());
        backend.ensure_schema().await?;
        story(EventStore::new(store), backend).await
    } else {
        let store = SqliteStore::connect(url).await?;
        // Through the store's one writer connection: projection batches queue behind appends.
        let backend = SqliteBackend::new(store.writer_pool().clone());
        backend.ensure_schema().await?;
        story(EventStore::new(store), backend).await
    }
}

/// Prints why `step` was refused, and checks that it was `expected`.
fn refused<T>(
    step: &str,
    result: Result<T, CommandError<StockError>>,
    expected: fn(&CommandError<StockError>) -> bool,
) -> anyhow::Result<()> {
    let Err(error) = result else { anyhow::bail!("{step} was not refused") };
    println!("{step}: refused: {error}");
    ensure!(expected(&error), "{step}: unexpected refusal {error:?}");
    Ok(())
}

/// What the story did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Told {
    /// The product, loaded from the store.
    pub product: Product,
    /// Its row in the read model, once the projection has drained.
    pub level: Option<StockLevel>,
    /// The event types the live subscription saw.
    pub live: Vec<String>,
}

/// The whole story on `events` (read models in `backend`, whose runner
/// tables exist): registers a product, receives stock, reserves (once with
/// four concurrent retries of one key), meets each refusal, releases; the
/// projection and a live subscription follow. Prints what happens and checks it.
///
/// # Errors
/// A store or backend failure, or an answer other than the expected one.
pub async fn story<S, B>(events: EventStore<S>, backend: B) -> anyhow::Result<Told>
where
    S: EventStorage + WakeUps + Clone + 'static,
    B: Backend<Tx: StockTx>,
{
    let backend = Arc::new(backend);
    StockLevels.create_tables(&*backend).await.map_err(|e| anyhow::anyhow!(e))?;
    let products: Repository<Product, S> = Repository::new(events.clone()).with_stream_locks(64);
    let sku = format!("lamp-{}", &uuid::Uuid::now_v7().simple().to_string()[24..]);

    // A live subscription from the feed's head, and the projection, in tasks of their own.
    let filter = FeedFilter::category(Product::KIND)?;
    let head = events.feed_head(&filter).await?.map_or(Checkpoint::START, |head| head.checkpoint);
    let live = tokio::spawn(print_live(events.subscribe(filter, head)));
    let runner = Runner::new(events.clone(), backend.clone(), Arc::new(StockLevels));
    let projection = runner.spawn(events.wake_ups().await);

    let plain = CommandOptions::new(Metadata::now().with_actor("warehouse"));
    let register = ProductCommand::Register { name: "Desk lamp".to_owned() };
    let done = products.run(&sku, &register, &plain, answer).await?;
    println!("register {sku}: {:?}", done.response());
    let done = products.run(&sku, &ProductCommand::Receive { quantity: 10 }, &plain, answer).await?;
    println!("receive 10: {:?}", done.response());

    let (reserve, options) = reservation(&sku, "order-1", 3)?;
    let done = products.run(&sku, &reserve, &options, answer).await?;
    println!("reserve 3 for order-1: {:?}", done.response());

    // Four concurrent tries of one request: one runs, the others get its answer.
    let (reserve, options) = reservation(&sku, "order-2", 7)?;
    let tries = (0..4).map(|_| {
        let (products, sku, reserve, options) = (products.clone(), sku.clone(), reserve.clone(), options.clone());
        tokio::spawn(async move { products.run(&sku, &reserve, &options, answer).await })
    });
    let mut answers = Vec::new();
    for outcome in futures_util::future::try_join_all(tries).await? {
        answers.push(outcome?);
    }
    let executed = answers.iter().filter(|o| !o.is_replayed()).count();
    let first = answers.first().context("no answer")?.response();
    println!("reserve 7 for order-2, 4 tries at once: {executed} executed, the others replayed, all got {first:?}");
    ensure!(executed == 1, "{executed} of the tries executed");
    ensure!(answers.iter().all(|o| o.response() == first), "the tries got different answers");

    let (reserve, options) = reservation(&sku, "order-3", 1)?;
    let result = products.run(&sku, &reserve, &options, answer).await;
    refused("reserve 1 for order-3", result, |e| matches!(e, CommandError::Rejected(StockError::Insufficient { .. })))?;
    let (reserve, options) = reservation(&sku, "order-2", 5)?;
    let result = products.run(&sku, &reserve, &options, answer).await;
    refused("reserve 5 for order-2", result, |e| matches!(e, CommandError::KeyReused { .. }))?;
    let (reserve, options) = reservation("ghost", "order-4", 1)?;
    let result = products.run("ghost", &reserve, &options, answer).await;
    refused("reserve 1 of ghost", result, |e| matches!(e, CommandError::NotFound { .. }))?;

    // `If-Match`: a command that expects an outdated version is refused; one with the current version runs.
    let release = ProductCommand::Release { quantity: 2 };
    let result = products.run(&sku, &release, &plain.clone().expecting(Version::new(3)), answer).await;
    refused("release 2 at version 3", result, |e| matches!(e, CommandError::WrongVersion { .. }))?;
    let current = plain.clone().expecting(products.load(&sku).await?.version);
    let done = products.run(&sku, &release, &current, answer).await?;
    println!("release 2 at version 4: {:?}", done.response());

    // A graceful stop drains what was committed, then releases the lease.
    let drained = projection.stop().await?;
    let level = stock_level(&*backend, &sku).await.map_err(|e| anyhow::anyhow!(e))?;
    println!("projection stopped ({drained} events drained); read model: {level:?}");
    let live =
        tokio::time::timeout(Duration::from_secs(10), live).await.context("the subscription fell behind")???;
    let product = products.load(&sku).await?.state;
    Ok(Told { product, level, live })
}
