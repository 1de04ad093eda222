//! Eight concurrent tries of one reservation of the whole stock, without
//! stream locks (so they conflict and retry): one runs, all get its answer.
#![allow(clippy::unwrap_used)]

use eslab_core::{CommandOptions, EventStorage, EventStore, Repository};
use eslab_sqlite::SqliteStore;
use eslab_testing::pg::FreshSchema;
use inventory::{Product, ProductCommand, answer, reservation};

async fn concurrent_tries_get_one_answer<S: EventStorage + Clone + 'static>(events: EventStore<S>) {
    let products: Repository<Product, S> = Repository::new(events);
    let plain = CommandOptions::default();
    for round in 0..10 {
        let sku = format!("lamp-{round}");
        products.run(&sku, &ProductCommand::Register { name: "Lamp".into() }, &plain, answer).await.unwrap();
        products.run(&sku, &ProductCommand::Receive { quantity: 5 }, &plain, answer).await.unwrap();
        let (reserve, options) = reservation(&sku, "order", 5).unwrap();
        let tries = (0..8).map(|_| {
            let (products, sku, reserve, options) = (products.clone(), sku.clone(), reserve.clone(), options.clone());
            tokio::spawn(async move { products.run(&sku, &reserve, &options, answer).await.unwrap() })
        });
        let outcomes: Vec<_> = futures_util::future::try_join_all(tries).await.unwrap();
        assert_eq!(outcomes.iter().filter(|o| !o.is_replayed()).count(), 1, "round {round}");
        assert!(outcomes.iter().all(|o| o.response() == outcomes[0].response()), "round {round}");
        assert_eq!(products.load(&sku).await.unwrap().state.reserved, 5, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect(&format!("sqlite://{}", dir.path().join("keys.db").display())).await.unwrap();
    concurrent_tries_get_one_answer(EventStore::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_postgres() {
    let schema = FreshSchema::new("inventory");
    concurrent_tries_get_one_answer(EventStore::new(schema.open().await)).await;
    schema.drop_schema().await;
}
