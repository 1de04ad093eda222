//! `eslab projections` and `eslab rebuild` on real SQLite and PostgreSQL:
//! list, parked, retry, skip; a rebuild whose readers see the old model until
//! the swap, and the folded truth after it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use eslab::projections::{AnyProjections, BANK_VIEWS, BankBackend, TRANSFER_PROCESS, print_list, print_parked};
use eslab::rebuild;
use eslab::serve::read::ReadModels;
use eslab_bank::{Account, AccountCommand, Amount, OverdraftLimit, Transfer, TransferCommand, ViewsTx, upcasters};
use eslab_core::{EventAppender, EventStore, ExpectedVersion, Metadata, NewEvent, Repository, StreamId};
use eslab_projection::Backend;
use eslab_runtime::{AnyStore, Store, StoreVisitor};
use eslab_testing::pg::FreshSchema;
use indicatif::ProgressBar;

/// A fresh store: a SQLite file in `dir`, or a fresh PostgreSQL schema (dropped by [`Fresh::drop`]).
struct Fresh {
    store: AnyStore,
    schema: Option<FreshSchema>,
}

impl Fresh {
    async fn sqlite(dir: &tempfile::TempDir) -> Fresh {
        let url = format!("sqlite://{}", dir.path().join("eslab.db").display());
        Fresh { store: AnyStore::open(&url).await.unwrap(), schema: None }
    }

    async fn postgres(_dir: &tempfile::TempDir) -> Fresh {
        let schema = FreshSchema::new("eslab_test");
        Fresh { store: AnyStore::Postgres(schema.open().await), schema: Some(schema) }
    }

    async fn drop(self) {
        if let Some(schema) = self.schema {
            schema.drop_schema().await;
        }
    }
}

fn eur() -> eslab_bank::Currency {
    "EUR".parse().unwrap()
}

/// Five accounts with 1 000 each and a dozen transfers (one to a closed account).
async fn seed_bank(store: &AnyStore) {
    let typed = EventStore::new(store.clone()).with_upcasters(upcasters());
    let accounts: Repository<Account, _> = Repository::new(typed.clone());
    let transfers: Repository<Transfer, _> = Repository::new(typed);
    for i in 0..5 {
        let id = format!("a{i}");
        let open = AccountCommand::Open { owner: id.clone(), currency: eur(), overdraft_limit: OverdraftLimit::NONE };
        accounts.execute(&id, &open, Metadata::now()).await.unwrap();
        let deposit = AccountCommand::Deposit { amount: Amount::new(1_000).unwrap(), currency: eur() };
        accounts.execute(&id, &deposit, Metadata::now()).await.unwrap();
    }
    let withdraw = AccountCommand::Withdraw { amount: Amount::new(1_000).unwrap(), currency: eur() };
    accounts.execute("a4", &withdraw, Metadata::now()).await.unwrap();
    accounts.execute("a4", &AccountCommand::Close, Metadata::now()).await.unwrap();
    for t in 0..12i64 {
        // Never to itself: the offset is 1..=4 (a4 is closed: those credits are refunded).
        let (from, to) = (format!("a{}", t % 4), format!("a{}", (t % 4 + 1 + (t / 4) % 4) % 5));
        let request = TransferCommand::Request { from, to, amount: Amount::new(50 + t).unwrap(), currency: eur() };
        transfers.execute(&format!("t{t}"), &request, Metadata::now()).await.unwrap();
    }
}

/// Every account summary equals the repository's fold; every transfer row its fold.
async fn assert_views_equal_the_fold(store: &AnyStore) {
    let typed = EventStore::new(store.clone()).with_upcasters(upcasters());
    let accounts: Repository<Account, _> = Repository::new(typed.clone());
    let transfers: Repository<Transfer, _> = Repository::new(typed);
    let views = views(store).await;
    let mut total = 0;
    for i in 0..5 {
        let id = format!("a{i}");
        let folded = accounts.load(&id).await.unwrap();
        let row = views.account(&id).await.unwrap().unwrap();
        assert_eq!((row.balance, row.version), (folded.state.balance.minor(), folded.version.get()), "{id}");
        total += row.balance;
    }
    assert_eq!(total, 4_000, "money conserved in the read model");
    for t in 0..12 {
        let folded = transfers.load(&format!("t{t}")).await.unwrap();
        let row = views.transfer(&format!("t{t}")).await.unwrap().unwrap();
        assert_eq!(row.status, folded.state.status, "t{t}");
        assert!(row.status.is_final());
    }
}

/// The read models of `store` as the service queries them (SQLite: through its reader pool).
struct Views;

impl<S: Store> StoreVisitor<S> for Views
where
    ReadModels: From<S::Reader>,
{
    type Output = ReadModels;

    async fn visit(self, store: S) -> ReadModels {
        ReadModels::from(store.backends().await.unwrap().reader)
    }
}

async fn views(store: &AnyStore) -> ReadModels {
    store.visit(Views).await
}

async fn balance_of_a0(store: &AnyStore) -> i64 {
    views(store).await.account("a0").await.unwrap().unwrap().balance
}

/// Corrupts the live summary of `a0` so that the old model is recognisable.
struct Corrupt;

impl<S: Store> StoreVisitor<S> for Corrupt
where
    S::Backend: BankBackend,
{
    type Output = ();

    async fn visit(self, store: S) {
        let backend = store.backends().await.unwrap().views;
        let mut tx = backend.begin().await.unwrap();
        let mut row = tx.summary("a0").await.unwrap().unwrap();
        row.balance += 999_999;
        tx.put_summary(&row).await.unwrap();
        backend.commit(tx).await.unwrap();
    }
}

macro_rules! cli_tests {
    ($module:ident, $fresh:path) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn list_parked_retry_and_skip() {
                let dir = tempfile::tempdir().unwrap();
                let fresh = $fresh(&dir).await;
                let store = fresh.store.clone();
                seed_bank(&store).await;
                // An event the bank views cannot decode parks its stream.
                let bad: StreamId = "account-bad".parse().unwrap();
                let bogus = NewEvent::new("Bogus", 1, serde_json::json!({}), Metadata::now());
                store.append(&bad, ExpectedVersion::NoStream, vec![bogus]).await.unwrap();

                let projections = AnyProjections::open(&store).await.unwrap();
                let before = projections.list().await.unwrap();
                assert_eq!(before.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), [BANK_VIEWS, TRANSFER_PROCESS]);
                assert!(before[0].lag.events > 0, "nothing applied yet: {before:?}");
                projections.catch_up().await.unwrap();
                let after = projections.list().await.unwrap();
                assert_eq!((after[0].lag.events, after[0].parked), (0, 1), "{after:?}");
                assert_eq!((after[1].lag.events, after[1].parked), (0, 0), "{after:?}");
                assert_eq!(after[0].lease_owner, None, "the lease was released");
                let mut table = Vec::new();
                print_list(&after, &mut table).unwrap();
                let table = String::from_utf8(table).unwrap();
                assert!(table.contains("PARKED") && table.lines().nth(1).unwrap().starts_with("bank-views"), "{table}");

                let parked = projections.parked(Some(BANK_VIEWS)).await.unwrap();
                assert_eq!(parked.len(), 1);
                assert_eq!(parked[0].event.stream_id, bad);
                let mut lines = Vec::new();
                print_parked(&parked, &mut lines).unwrap();
                assert!(String::from_utf8(lines).unwrap().contains("account-bad\t1\tBogus"));
                assert!(projections.parked(Some("nope")).await.is_err(), "unknown projection");

                let retried = projections.retry(BANK_VIEWS, &bad).await;
                assert!(retried.is_err(), "the event still cannot be decoded");
                assert_eq!(projections.parked(None).await.unwrap().len(), 1, "a failed retry changes nothing");
                let other: StreamId = "account-a0".parse().unwrap();
                assert!(projections.retry(BANK_VIEWS, &other).await.is_err(), "not parked");
                assert!(projections.skip("nope", &bad).await.is_err(), "unknown projection");
                assert_eq!(projections.skip(BANK_VIEWS, &bad).await.unwrap(), 0);
                assert!(projections.parked(None).await.unwrap().is_empty());
                assert_eq!(projections.list().await.unwrap()[0].parked, 0);
                assert_views_equal_the_fold(&store).await;
                fresh.drop().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rebuild_serves_the_old_model_then_swaps_in_the_fold() {
                let dir = tempfile::tempdir().unwrap();
                let fresh = $fresh(&dir).await;
                let store = fresh.store.clone();
                seed_bank(&store).await;
                let projections = AnyProjections::open(&store).await.unwrap();
                projections.catch_up().await.unwrap();
                assert_views_equal_the_fold(&store).await;
                store.visit(Corrupt).await;
                let old = balance_of_a0(&store).await;

                // Readers keep reading the live (old) model while the shadow is replayed.
                let reader_store = store.clone();
                let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
                let reader = tokio::spawn(async move {
                    let views = views(&reader_store).await;
                    let mut reads = 0;
                    loop {
                        let balance = views.account("a0").await.unwrap().unwrap().balance;
                        assert_eq!(balance, old, "old model served");
                        reads += 1;
                        if stopped.try_recv().is_ok() {
                            return reads;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                });
                let shadow = rebuild::prepare(&store, BANK_VIEWS, &ProgressBar::hidden()).await.unwrap();
                stop.send(()).unwrap();
                assert!(reader.await.unwrap() > 0);
                assert_eq!(balance_of_a0(&store).await, old, "not swapped yet");
                let replayed = shadow.rebuilt();
                assert!(replayed.events > 50, "{replayed:?}");

                let done = shadow.swap().await.unwrap();
                assert_eq!(done, replayed);
                assert_views_equal_the_fold(&store).await;
                let status = projections.list().await.unwrap();
                assert_eq!(
                    (status[0].checkpoint, status[0].lag.events),
                    (done.checkpoint, 0),
                    "checkpoint swapped too"
                );
                // The live runner goes on from the swapped checkpoint; a second rebuild is harmless.
                projections.catch_up().await.unwrap();
                rebuild::rebuild(&store, BANK_VIEWS, &ProgressBar::hidden()).await.unwrap();
                assert_views_equal_the_fold(&store).await;
                assert!(rebuild::rebuild(&store, TRANSFER_PROCESS, &ProgressBar::hidden()).await.is_err());
                assert!(rebuild::rebuild(&store, "nope", &ProgressBar::hidden()).await.is_err());
                fresh.drop().await;
            }
        }
    };
}

cli_tests!(sqlite, Fresh::sqlite);
cli_tests!(postgres, Fresh::postgres);

#[tokio::test]
async fn the_memory_store_has_nothing_to_rebuild() {
    let store = AnyStore::open("memory:").await.unwrap();
    assert!(rebuild::rebuild(&store, BANK_VIEWS, &ProgressBar::hidden()).await.is_err());
    let projections = AnyProjections::open(&store).await.unwrap();
    assert_eq!(projections.list().await.unwrap().len(), 2);
}
