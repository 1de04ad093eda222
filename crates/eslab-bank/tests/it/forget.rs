//! Forgetting an owner: the live read model, erased by its hook, equals the
//! read model rebuilt from scratch after the forgetting (memory and
//! PostgreSQL), and aggregates still load and decide.

use std::sync::Arc;

use eslab_bank::{Account, AccountSummary, BankViews, MemoryViews, SqlViews, upcasters};
use eslab_core::{Aggregate, EventStorage, EventStore, Metadata, Repository, Subject};
use eslab_projection::memory::MemoryBackend;
use eslab_projection::{Backend, PgBackend, Projection, Runner, forget_subject};
use eslab_testing::pg::FreshSchema;

use crate::helpers::{deposit, open};

async fn drain<S, B>(events: &EventStore<S>, backend: &B)
where
    S: EventStorage + Clone + 'static,
    B: Backend + Clone,
    BankViews: Projection<B>,
{
    Runner::new(events.clone(), Arc::new(backend.clone()), Arc::new(BankViews)).drain().await.unwrap();
}

/// Opens ada and bob, forgets ada after the live views saw everything; returns
/// the summaries rebuilt from scratch into a fresh in-memory backend.
async fn forget_then_rebuild<S, B>(events: EventStore<S>, live: &B) -> Vec<AccountSummary>
where
    S: EventStorage + Clone + 'static,
    B: Backend + Clone,
    BankViews: Projection<B>,
{
    let accounts: Repository<Account, S> = Repository::new(events.clone());
    for (id, owner) in [("ada", "Ada Secret"), ("bob", "Bob Known")] {
        accounts.execute(id, &open(owner, 0), Metadata::now()).await.unwrap();
        accounts.execute(id, &deposit(700), Metadata::now()).await.unwrap();
    }
    drain(&events, live).await;
    let subject = Subject::of_stream(&Account::stream_id("ada").unwrap());
    events.forget(&subject, "test").await.unwrap();
    forget_subject(live, &BankViews, &subject).await.unwrap();
    // The aggregate still loads and decides.
    accounts.execute("ada", &deposit(50), Metadata::now()).await.unwrap();
    let ada = accounts.load("ada").await.unwrap().state;
    assert!(ada.owner.as_ref().is_some_and(|o| o.name.is_forgotten()));
    assert_eq!(ada.balance.minor(), 750);
    drain(&events, live).await;
    let rebuilt = MemoryBackend::new();
    drain::<S, MemoryBackend>(&events, &rebuilt).await;
    let mut summaries = rebuilt.account_summaries();
    summaries.sort_by(|a, b| a.id.cmp(&b.id));
    summaries
}

#[tokio::test]
async fn the_live_views_erased_equal_a_rebuild_after_forgetting_in_memory() {
    let events = EventStore::new(eslab_memory::MemoryStore::new()).with_upcasters(upcasters());
    let live = MemoryBackend::new();
    let rebuilt = forget_then_rebuild(events, &live).await;
    let mut now = live.account_summaries();
    now.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(now, rebuilt);
    assert_eq!(now.iter().map(|s| s.owner.clone()).collect::<Vec<_>>(), [None, Some("Bob Known".into())]);
}

#[tokio::test]
async fn the_live_views_erased_equal_a_rebuild_after_forgetting_on_postgres() {
    let schema = FreshSchema::new("eslab_forget");
    let store = schema.open().await;
    let views = SqlViews::new(store.pool().clone());
    views.ensure_schema().await.unwrap();
    let live = PgBackend::new(store.pool().clone());
    live.ensure_schema().await.unwrap();
    let rebuilt = forget_then_rebuild(EventStore::new(store.clone()).with_upcasters(upcasters()), &live).await;
    let now = views.accounts(None, 100).await.unwrap();
    assert_eq!(now, rebuilt);
    assert_eq!(now.iter().map(|s| s.owner.clone()).collect::<Vec<_>>(), [None, Some("Bob Known".into())]);
    schema.drop_schema().await;
}

/// An account opened before names were personal data holds its owner's name
/// in clear and has no key: forgetting it is `UnknownSubject` and writes
/// nothing (there is no key whose deletion would shred the name).
#[tokio::test]
async fn an_owner_recorded_in_clear_cannot_be_forgotten_and_nothing_is_written() {
    use eslab_core::EventReader;
    let store = eslab_memory::MemoryStore::new();
    let events = EventStore::new(store.clone()).with_upcasters(upcasters());
    let bank = eslab_bank::Bank::new(events.clone(), &eslab_bank::BankOptions::default());
    let stream = Account::stream_id("old").unwrap();
    let payload = serde_json::json!({ "owner": { "name": "Old Clear" }, "currency": "EUR", "overdraft_limit": 0 });
    let legacy = eslab_core::NewEvent::new("AccountOpened", 2, payload, Metadata::now());
    eslab_core::EventAppender::append(&store, &stream, eslab_core::ExpectedVersion::NoStream, vec![legacy])
        .await
        .unwrap();
    let err = bank.forget_owner("old", "test").await.unwrap_err();
    assert!(matches!(err, eslab_core::Error::Personal(eslab_core::PersonalError::UnknownSubject(_))), "{err}");
    assert_eq!(store.stream_version(&stream).await.unwrap().get(), 1, "no OwnerForgotten written");
    let never = bank.forget_owner("never-opened", "test").await.unwrap_err();
    assert!(matches!(never, eslab_core::Error::Personal(eslab_core::PersonalError::UnknownSubject(_))));
}
