//! The transfer process manager and the read models, driven by the projection
//! runner: happy path, refused debit, refused credit with refund, crashes at
//! random points, and money conservation under random concurrent transfers.

use std::sync::Arc;
use std::time::Duration;

use eslab_bank::{
    Account, AccountCommand, AccountStatus, Amount, BankViews, MemoryViews, OverdraftLimit, Transfer, TransferCommand,
    TransferProcess, TransferStatus, upcasters,
};
use eslab_core::{EventStorage, EventStore, Metadata, Repository};
use eslab_memory::MemoryStore;
use eslab_projection::memory::MemoryBackend;
use eslab_projection::{Runner, RunnerOptions};
use proptest::prelude::*;

use crate::helpers::eur;

struct Bank<S: EventStorage + Clone + 'static> {
    store: EventStore<S>,
    accounts: Repository<Account, S>,
    transfers: Repository<Transfer, S>,
    backend: MemoryBackend,
}

impl<S: EventStorage + Clone + 'static> Bank<S> {
    fn new(backend_store: S) -> Self {
        let store = EventStore::new(backend_store).with_upcasters(upcasters());
        Bank {
            accounts: Repository::new(store.clone()),
            transfers: Repository::new(store.clone()),
            store,
            backend: MemoryBackend::new(),
        }
    }

    async fn open(&self, id: &str, deposit: i64) {
        let open = AccountCommand::Open { owner: id.into(), currency: eur(), overdraft_limit: OverdraftLimit::NONE };
        self.accounts.execute(id, &open, Metadata::now()).await.unwrap();
        if deposit > 0 {
            let d = AccountCommand::Deposit { amount: Amount::new(deposit).unwrap(), currency: eur() };
            self.accounts.execute(id, &d, Metadata::now()).await.unwrap();
        }
    }

    async fn transfer(&self, id: &str, from: &str, to: &str, amount: i64) {
        let request = TransferCommand::Request {
            from: from.into(),
            to: to.into(),
            amount: Amount::new(amount).unwrap(),
            currency: eur(),
        };
        self.transfers.execute(id, &request, Metadata::now().with_correlation_id(uuid::Uuid::now_v7())).await.unwrap();
    }

    fn process(&self, owner: &str) -> Runner<EventStore<S>, MemoryBackend, TransferProcess<S>> {
        Runner::new(
            self.store.clone(),
            Arc::new(self.backend.clone()),
            Arc::new(TransferProcess::new(self.store.clone())),
        )
        .with_options(RunnerOptions { batch_size: 7, owner: owner.into(), ..RunnerOptions::default() })
    }

    fn views(&self, owner: &str) -> Runner<EventStore<S>, MemoryBackend, BankViews> {
        Runner::new(self.store.clone(), Arc::new(self.backend.clone()), Arc::new(BankViews))
            .with_options(RunnerOptions { batch_size: 11, owner: owner.into(), ..RunnerOptions::default() })
    }

    /// Runs the saga and the views until neither has work.
    async fn settle(&self) {
        loop {
            let moved = self.process("p").drain().await.unwrap();
            let viewed = self.views("v").drain().await.unwrap();
            if moved == 0 && viewed == 0 {
                return;
            }
        }
    }

    async fn balance(&self, id: &str) -> i64 {
        self.accounts.load(id).await.unwrap().state.balance.minor()
    }

    async fn status(&self, id: &str) -> TransferStatus {
        self.transfers.load(id).await.unwrap().state.status
    }
}

#[tokio::test]
async fn a_transfer_moves_money_and_the_views_follow() {
    let bank = Bank::new(MemoryStore::new());
    bank.open("a", 100).await;
    bank.open("b", 0).await;
    bank.transfer("t1", "a", "b", 30).await;
    bank.settle().await;
    assert_eq!((bank.balance("a").await, bank.balance("b").await), (70, 30));
    assert_eq!(bank.status("t1").await, TransferStatus::Completed);
    let rows = bank.backend.account_summaries();
    let balances: Vec<_> = rows.iter().map(|r| (r.id.as_str(), r.balance)).collect();
    assert_eq!(balances, [("a", 70), ("b", 30)]);
    let transfer = &bank.backend.transfers()[0];
    assert_eq!((transfer.status, transfer.refunded), (TransferStatus::Completed, false));
    let history: Vec<_> =
        bank.backend.account_history().into_iter().map(|h| (h.account_id, h.kind, h.amount)).collect();
    assert_eq!(
        history,
        [
            ("a".into(), "deposit".into(), 100),
            ("a".into(), "withdrawal".into(), 30),
            ("b".into(), "deposit".into(), 30)
        ]
    );
    // The legs carry the transfer's correlation id.
    let legs: Vec<_> = bank.backend.account_history().into_iter().filter_map(|h| h.correlation_id).collect();
    assert_eq!(legs.len(), 2);
    assert_eq!(legs[0], legs[1]);
}

#[tokio::test]
async fn a_refused_debit_fails_the_transfer_without_moving_money() {
    let bank = Bank::new(MemoryStore::new());
    bank.open("a", 10).await;
    bank.open("b", 0).await;
    bank.transfer("t1", "a", "b", 30).await;
    bank.settle().await;
    assert_eq!((bank.balance("a").await, bank.balance("b").await), (10, 0));
    let t = &bank.backend.transfers()[0];
    assert_eq!(
        (t.status, t.refunded, t.reason.as_deref()),
        (TransferStatus::Failed, false, Some("insufficient-funds"))
    );
}

#[tokio::test]
async fn a_refused_credit_refunds_the_source() {
    let bank = Bank::new(MemoryStore::new());
    bank.open("a", 100).await;
    bank.open("b", 0).await;
    bank.accounts.execute("b", &AccountCommand::Close, Metadata::now()).await.unwrap();
    bank.transfer("t1", "a", "b", 30).await;
    bank.settle().await;
    assert_eq!(bank.balance("a").await, 100, "refunded");
    let t = &bank.backend.transfers()[0];
    assert_eq!((t.status, t.refunded, t.reason.as_deref()), (TransferStatus::Failed, true, Some("closed")));
    let summaries = bank.backend.account_summaries();
    assert_eq!(summaries[0].balance, 100);
    assert_eq!(summaries[1].status, AccountStatus::Closed);
}

#[tokio::test]
async fn a_step_taken_twice_moves_money_once() {
    let bank = Bank::new(MemoryStore::new());
    bank.open("a", 100).await;
    bank.open("b", 0).await;
    bank.transfer("t1", "a", "b", 30).await;
    let process = TransferProcess::new(bank.store.clone());
    let requested = eslab_core::EventReader::read_stream(
        &bank.store,
        &"transfer-t1".parse().unwrap(),
        eslab_core::Version::FIRST,
        1,
    )
    .await
    .unwrap();
    assert_eq!(process.handle(&requested[0]).await.unwrap(), eslab_bank::Step::Debited);
    assert_eq!(process.handle(&requested[0]).await.unwrap(), eslab_bank::Step::Nothing, "re-delivery is a no-op");
    bank.settle().await;
    assert_eq!((bank.balance("a").await, bank.balance("b").await), (70, 30));
}

#[tokio::test]
async fn crashes_at_random_points_neither_create_nor_lose_money() {
    let bank = Bank::new(MemoryStore::new());
    for i in 0..6 {
        bank.open(&format!("acc{i}"), 1_000).await;
    }
    for t in 0..30 {
        bank.transfer(&format!("t{t}"), &format!("acc{}", t % 6), &format!("acc{}", (t * 7 + 1) % 6), 10 + t).await;
    }
    // Kill the saga runner at many points (its steps may be cut between load and append).
    for micros in [0u64, 50, 100, 200, 300, 500, 800, 1300, 2100].into_iter().cycle().take(30) {
        let runner = bank.process("p");
        let task = tokio::spawn(async move { runner.drain().await });
        tokio::time::sleep(Duration::from_micros(micros)).await;
        task.abort();
        let _ = task.await;
    }
    bank.settle().await;
    let mut total = 0;
    for i in 0..6 {
        total += bank.balance(&format!("acc{i}")).await;
    }
    assert_eq!(total, 6_000, "money is conserved in the store");
    assert_eq!(bank.backend.account_summaries().iter().map(|r| r.balance).sum::<i64>(), 6_000, "and in the read model");
    for t in 0..30 {
        assert!(bank.status(&format!("t{t}")).await.is_final(), "transfer t{t} finished");
    }
}

fn transfers_strategy() -> impl Strategy<Value = Vec<(usize, usize, i64)>> {
    prop::collection::vec((0usize..20, 0usize..20, 1i64..400), 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random concurrent transfers among 20 accounts, with the saga racing in
    /// two tasks: money is conserved in the store and in the read models, and
    /// every transfer ends completed, or failed (refunded when it was debited).
    #[test]
    fn money_is_conserved_under_random_concurrent_transfers(transfers in transfers_strategy()) {
        eslab_testing::block_on(async move {
            let bank = Arc::new(Bank::new(MemoryStore::new()));
            for i in 0..20 {
                bank.open(&format!("a{i}"), 500).await;
            }
            let mut requests = tokio::task::JoinSet::new();
            for (n, (from, to, amount)) in transfers.iter().copied().enumerate() {
                let bank = bank.clone();
                requests.spawn(async move {
                    if from != to {
                        bank.transfer(&format!("t{n}"), &format!("a{from}"), &format!("a{to}"), amount).await;
                    }
                });
            }
            // Two saga handlers at once (as after a lease hand-over) and the views.
            let (p1, p2) = (bank.clone(), bank.clone());
            let racing = tokio::spawn(async move { for _ in 0..5 { let _ = p1.process("p").run_once().await; tokio::task::yield_now().await; } });
            let direct = tokio::spawn(async move {
                let process = TransferProcess::new(p2.store.clone());
                let feed: Vec<_> = futures_util::TryStreamExt::try_collect(eslab_core::EventReaderExt::feed(
                    &p2.store, &eslab_core::FeedFilter::category("transfer").unwrap(), eslab_core::Checkpoint::START)).await.unwrap();
                for e in &feed { let _ = process.handle(e).await; }
            });
            while requests.join_next().await.is_some() {}
            racing.await.unwrap();
            direct.await.unwrap();
            bank.settle().await;
            let mut total = 0;
            for i in 0..20 {
                total += bank.balance(&format!("a{i}")).await;
            }
            assert_eq!(total, 20 * 500);
            assert_eq!(bank.backend.account_summaries().iter().map(|r| r.balance).sum::<i64>(), 20 * 500);
            for row in bank.backend.transfers() {
                assert!(row.status.is_final(), "transfer {} is {:?}", row.id, row.status);
            }
        });
    }
}
