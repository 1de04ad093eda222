//! The atomic (dynamic consistency boundary) transfer: what it writes, what
//! it refuses, and money conserved under a storm mixing atomic transfers,
//! saga transfers and the accounts' own commands, on memory, SQLite and
//! PostgreSQL.

use std::sync::Arc;

use eslab_bank::{
    Account, AccountCommand, AtomicTransfer, AtomicTransferDone, AtomicTransferError, Bank, BankOptions,
    OverdraftLimit, TransferCommand, TransferProcess, TransferStatus, upcasters,
};
use eslab_core::{
    Aggregate, CommandError, CommandOptions, EventAppender, EventReader, EventReaderExt, EventStorage, EventStore,
    FeedFilter, IdempotencyKey, Metadata, Tag, Version,
};
use eslab_memory::MemoryStore;
use futures_util::TryStreamExt;

use crate::helpers::{amount, eur};

fn bank<S: EventStorage + Clone + 'static>(store: S) -> Bank<S> {
    Bank::new(EventStore::new(store).with_upcasters(upcasters()), &BankOptions::default())
}

async fn open<S: EventStorage + Clone + 'static>(bank: &Bank<S>, id: &str, deposit: i64) {
    let open = AccountCommand::Open { owner: id.into(), currency: eur(), overdraft_limit: OverdraftLimit::NONE };
    bank.account(id, &open, CommandOptions::default(), |_, _| ()).await.unwrap();
    if deposit > 0 {
        let deposit = AccountCommand::Deposit { amount: amount(deposit), currency: eur() };
        bank.account(id, &deposit, CommandOptions::default(), |_, _| ()).await.unwrap();
    }
}

async fn balance<S: EventStorage + Clone + 'static>(bank: &Bank<S>, id: &str) -> i64 {
    bank.account_now(id).await.unwrap().state.balance.minor()
}

fn atomic(id: &str, from: &str, to: &str, n: i64) -> AtomicTransfer {
    AtomicTransfer { transfer_id: id.into(), from: from.into(), to: to.into(), amount: amount(n), currency: eur() }
}

#[tokio::test]
async fn an_atomic_transfer_moves_money_and_records_the_transfer_in_one_append() {
    let bank = bank(MemoryStore::new());
    open(&bank, "a", 100).await;
    open(&bank, "b", 0).await;
    let done = bank
        .transfer_atomically(&atomic("t1", "a", "b", 30), &CommandOptions::default(), AtomicTransferDone::clone)
        .await
        .unwrap();
    assert_eq!(done.response().from_balance.minor(), 70);
    assert_eq!(done.response().to_balance.minor(), 30);
    assert_eq!((balance(&bank, "a").await, balance(&bank, "b").await), (70, 30));
    let transfer = bank.transfer_now("t1").await.unwrap();
    assert_eq!((transfer.state.status, transfer.version), (TransferStatus::Completed, Version::new(3)));
    // Every account event carries its account's tag, from either path.
    let a = bank.store().read_stream(&Account::stream_id("a").unwrap(), Version::FIRST, 10).await.unwrap();
    assert!(a.iter().all(|e| e.metadata.tags == [Tag::new("account:a").unwrap()]), "{a:?}");
    // The saga sees a finished transfer and does nothing.
    let process = TransferProcess::with_bank(bank.clone());
    let feed: Vec<_> =
        bank.store().feed(&FeedFilter::category("transfer").unwrap(), Default::default()).try_collect().await.unwrap();
    for event in &feed {
        assert_eq!(process.handle(event).await.unwrap(), eslab_bank::Step::Nothing);
    }
    assert_eq!((balance(&bank, "a").await, balance(&bank, "b").await), (70, 30));
}

#[tokio::test]
async fn a_refused_atomic_transfer_writes_nothing() {
    let bank = bank(MemoryStore::new());
    open(&bank, "a", 10).await;
    open(&bank, "b", 0).await;
    let before = bank.store().backend().len();
    let options = CommandOptions::default();
    match bank.transfer_atomically(&atomic("t1", "a", "b", 11), &options, AtomicTransferDone::clone).await {
        Err(CommandError::Rejected(e)) => assert_eq!(e.rule(), "insufficient-funds"),
        other => panic!("{other:?}"),
    }
    match bank.transfer_atomically(&atomic("t2", "a", "nobody", 1), &options, AtomicTransferDone::clone).await {
        Err(CommandError::Rejected(AtomicTransferError::UnknownAccount(stream))) => {
            assert_eq!(stream.as_str(), "account-nobody");
        }
        other => panic!("{other:?}"),
    }
    match bank.transfer_atomically(&atomic("t3", "a", "a", 1), &options, AtomicTransferDone::clone).await {
        Err(CommandError::Rejected(e)) => assert_eq!(e.rule(), "same-account"),
        other => panic!("{other:?}"),
    }
    bank.transfer_atomically(&atomic("t4", "a", "b", 1), &options, AtomicTransferDone::clone).await.unwrap();
    match bank.transfer_atomically(&atomic("t4", "a", "b", 1), &options, AtomicTransferDone::clone).await {
        Err(CommandError::Store(e)) => assert!(e.is_conflict(), "a transfer id is used once: {e:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(bank.store().backend().len(), before + 5, "only t4 was written (2 account events, 3 of its record)");
}

/// Accounts whose events predate tags (written untagged): the boundary does
/// not see them, and the transfer is refused rather than decided on a
/// partial history; nothing moves.
#[tokio::test]
async fn accounts_written_before_tags_are_refused_not_misread() {
    let bank = bank(MemoryStore::new());
    // As written then: no tags, and the owner's name in clear (before names were personal).
    let untagged = |_: &()| {
        let payload = serde_json::json!({ "owner": { "name": "Old" }, "currency": "EUR", "overdraft_limit": 0 });
        eslab_core::NewEvent::new("AccountOpened", 2, payload, Metadata::now())
    };
    let opened = ();
    let old = Account::stream_id("old").unwrap();
    bank.store().append(&old, eslab_core::ExpectedVersion::NoStream, vec![untagged(&opened)]).await.unwrap();
    // A later deposit through the aggregate carries the tag; the opening does not.
    let deposit = AccountCommand::Deposit { amount: amount(100), currency: eur() };
    bank.account("old", &deposit, CommandOptions::default(), |_, _| ()).await.unwrap();
    let legacy = Account::stream_id("legacy").unwrap();
    bank.store().append(&legacy, eslab_core::ExpectedVersion::NoStream, vec![untagged(&opened)]).await.unwrap();
    open(&bank, "b", 0).await;
    let options = CommandOptions::default();
    match bank.transfer_atomically(&atomic("t1", "old", "b", 10), &options, AtomicTransferDone::clone).await {
        Err(CommandError::Rejected(e)) => assert_eq!(e.rule(), "not-open", "{e:?}"),
        other => panic!("{other:?}"),
    }
    match bank.transfer_atomically(&atomic("t2", "legacy", "b", 10), &options, AtomicTransferDone::clone).await {
        Err(CommandError::Rejected(AtomicTransferError::UnknownAccount(_))) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!((balance(&bank, "old").await, balance(&bank, "b").await), (100, 0), "nothing moved");
}

#[tokio::test]
async fn an_idempotency_key_answers_a_retried_atomic_transfer() {
    let bank = bank(MemoryStore::new());
    open(&bank, "a", 100).await;
    open(&bank, "b", 0).await;
    let key = IdempotencyKey::new("k1", &[b"a->b 5"]).unwrap();
    let options = CommandOptions::new(Metadata::now()).idempotent(key);
    let transfer = atomic("t1", "a", "b", 5);
    let (first, second) = tokio::join!(
        bank.transfer_atomically(&transfer, &options, AtomicTransferDone::clone),
        bank.transfer_atomically(&transfer, &options, AtomicTransferDone::clone)
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.response(), second.response());
    assert!(first.is_replayed() || second.is_replayed(), "racing retries get the first answer");
    assert_eq!(balance(&bank, "a").await, 95, "moved once");
}

/// 8 accounts of 1 000; four tasks of 40 operations each: atomic transfers,
/// saga transfer requests and withdrawals through the account aggregate, on
/// overlapping accounts. After the saga settles: every balance >= 0 and the
/// balances plus what was withdrawn equal what was deposited.
async fn storm<S: EventStorage + Clone + 'static>(store: S) {
    let bank = Arc::new(bank(store));
    for i in 0..8 {
        open(&bank, &format!("a{i}"), 1_000).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..4u64 {
        let bank = bank.clone();
        tasks.spawn(async move {
            let mut withdrawn = 0;
            for k in 0..40u64 {
                let n = task * 40 + k;
                let from = format!("a{}", (n * 5 + task) % 8);
                let to = format!("a{}", (n * 3 + 1) % 8);
                let value = i64::try_from(50 + (n * 37) % 400).unwrap();
                match n % 4 {
                    0 | 1 => match bank
                        .transfer_atomically(
                            &atomic(&format!("x{n}"), &from, &to, value),
                            &CommandOptions::default(),
                            AtomicTransferDone::clone,
                        )
                        .await
                    {
                        Ok(_) | Err(CommandError::Rejected(_)) => {}
                        Err(CommandError::Store(e)) if e.is_conflict() => {}
                        Err(other) => panic!("atomic {n}: {other:?}"),
                    },
                    2 if from != to => {
                        let request = TransferCommand::Request { from, to, amount: amount(value), currency: eur() };
                        bank.request_transfer(&format!("s{n}"), &request, CommandOptions::default(), |_, _| ())
                            .await
                            .unwrap();
                    }
                    _ => {
                        let withdraw = AccountCommand::Withdraw { amount: amount(value), currency: eur() };
                        match bank.account(&from, &withdraw, CommandOptions::default(), |_, _| ()).await {
                            Ok(_) => withdrawn += value,
                            Err(CommandError::Rejected(_)) => {}
                            Err(other) => panic!("withdraw {n}: {other:?}"),
                        }
                    }
                }
            }
            withdrawn
        });
    }
    let mut withdrawn = 0;
    while let Some(w) = tasks.join_next().await {
        withdrawn += w.unwrap();
    }
    // Carry out the saga transfers.
    let process = TransferProcess::with_bank((*bank).clone());
    loop {
        let feed: Vec<_> = bank
            .store()
            .feed(&FeedFilter::category("transfer").unwrap(), Default::default())
            .try_collect()
            .await
            .unwrap();
        let mut moved = false;
        for event in &feed {
            moved |= process.handle(event).await.unwrap() != eslab_bank::Step::Nothing;
        }
        if !moved {
            break;
        }
    }
    let mut total = 0;
    for i in 0..8 {
        let b = balance(&bank, &format!("a{i}")).await;
        assert!(b >= 0, "a{i} overdrawn: {b}");
        total += b;
    }
    assert_eq!(total + withdrawn, 8 * 1_000, "money is conserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn money_is_conserved_under_a_mixed_storm_in_memory() {
    storm(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn money_is_conserved_under_a_mixed_storm_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bank.db").display());
    storm(eslab_sqlite::SqliteStore::connect(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn money_is_conserved_under_a_mixed_storm_on_postgres() {
    storm(eslab_testing::pg::SchemaStore::new().await).await;
}
