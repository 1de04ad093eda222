//! Schema evolution: stored `AccountOpened` v1 fixtures load through the
//! repository and the feed once the account's upcasters are registered.

use std::collections::BTreeMap;

use eslab_bank::{Account, AccountEvent, AccountStatus, Balance, OverdraftLimit, Owner, upcasters};
use eslab_core::{
    Checkpoint, Error, EventAppender, EventReaderExt, EventStorage, EventStore, ExpectedVersion, FeedFilter, Metadata,
    NewEvent, Repository, StreamId,
};
use eslab_memory::MemoryStore;
use futures_util::TryStreamExt;
use serde_json::Value;

use crate::helpers::eur;

/// Appends the v1 fixture lines as stored, stream by stream.
async fn import_fixtures<S: EventStorage>(store: &S) {
    let text = include_str!("../../fixtures/account-v1.jsonl");
    let mut streams: BTreeMap<StreamId, Vec<NewEvent>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: Value = serde_json::from_str(line).unwrap();
        let metadata: Metadata = serde_json::from_value(row["metadata"].clone()).unwrap();
        let event = NewEvent::new(
            row["event_type"].as_str().unwrap(),
            u32::try_from(row["schema_version"].as_u64().unwrap()).unwrap(),
            row["payload"].clone(),
            metadata,
        );
        streams.entry(row["stream_id"].as_str().unwrap().parse().unwrap()).or_default().push(event);
    }
    for (stream, events) in streams {
        store.append(&stream, ExpectedVersion::NoStream, events).await.unwrap();
    }
}

/// Runs the schema-evolution checks that must hold on every store.
/// Each check gets a fresh, empty store from `new`.
pub(crate) async fn fixtures_on<S, F>(new: impl Fn() -> F)
where
    S: EventStorage + Clone,
    F: std::future::Future<Output = S>,
{
    v1_fixtures_load_through_the_repository(new().await).await;
    v1_fixtures_read_through_the_feed(new().await).await;
}

#[tokio::test]
async fn fixtures_on_memory() {
    fixtures_on(|| async { MemoryStore::new() }).await;
}

#[tokio::test]
async fn fixtures_on_postgres() {
    fixtures_on(eslab_testing::pg::SchemaStore::new).await;
}

#[tokio::test]
async fn fixtures_on_sqlite() {
    fixtures_on(|| async { eslab_sqlite::SqliteStore::in_memory().await.unwrap() }).await;
}

async fn v1_fixtures_load_through_the_repository<S: EventStorage + Clone>(backend: S) {
    import_fixtures(&backend).await;
    let repo: Repository<Account, _> = Repository::new(EventStore::new(backend).with_upcasters(upcasters()));
    let loaded = repo.load("legacy-1").await.unwrap();
    assert_eq!(loaded.version.get(), 3);
    assert_eq!(
        loaded.state,
        Account {
            status: AccountStatus::Open,
            owner: Some(Owner { name: "Ada Lovelace".into() }),
            currency: Some(eur()),
            overdraft_limit: OverdraftLimit::NONE,
            balance: Balance::new(12_500),
        }
    );
    // New commands work on upcast history.
    let done = repo.execute("legacy-2", &crate::helpers::withdraw(99), Metadata::now()).await.unwrap();
    assert_eq!(done.state.balance, Balance::ZERO);
}

async fn v1_fixtures_read_through_the_feed<S: EventStorage + Clone>(backend: S) {
    import_fixtures(&backend).await;
    let store = EventStore::new(backend).with_upcasters(upcasters());
    let feed: Vec<_> = store.feed(&FeedFilter::All, Checkpoint::START).try_collect().await.unwrap();
    assert_eq!(feed.len(), 5);
    let opened: Vec<AccountEvent> = feed
        .iter()
        .filter(|e| e.event_type == "AccountOpened")
        .map(|e| store.decode::<AccountEvent>(e).unwrap())
        .collect();
    assert!(opened.iter().all(|e| matches!(e, AccountEvent::AccountOpened { currency, .. } if *currency == eur())));
    assert!(feed.iter().filter(|e| e.event_type == "AccountOpened").all(|e| e.schema_version == 2));
}

#[tokio::test]
async fn without_upcasters_v1_does_not_decode_and_says_where() {
    let backend = MemoryStore::new();
    import_fixtures(&backend).await;
    let repo: Repository<Account, _> = Repository::new(EventStore::new(backend));
    match repo.load("legacy-1").await {
        Err(Error::Decode { stream, version, event_type, .. }) => {
            assert_eq!((stream.as_str(), version.get(), event_type.as_str()), ("account-legacy-1", 1, "AccountOpened"));
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_types_and_newer_versions_are_typed_errors() {
    let backend = MemoryStore::new();
    let s: StreamId = "account-odd".parse().unwrap();
    let opened = serde_json::json!({"owner": {"name": "Ada"}, "currency": "EUR", "overdraft_limit": 0});
    backend
        .append(&s, ExpectedVersion::NoStream, vec![NewEvent::new("AccountOpened", 3, opened, Metadata::now())])
        .await
        .unwrap();
    let repo: Repository<Account, _> = Repository::new(EventStore::new(backend.clone()).with_upcasters(upcasters()));
    match repo.load("odd").await {
        Err(Error::UnsupportedSchemaVersion { found: 3, supported: 2, event_type, .. }) => {
            assert_eq!(event_type, "AccountOpened")
        }
        other => panic!("expected an unsupported schema version, got {other:?}"),
    }
    let s2: StreamId = "account-odd2".parse().unwrap();
    backend
        .append(&s2, ExpectedVersion::NoStream, vec![NewEvent::new("AccountFrozen", 1, Value::Null, Metadata::now())])
        .await
        .unwrap();
    match repo.load("odd2").await {
        Err(Error::UnknownEventType { stream, version, event_type }) => {
            assert_eq!((stream.as_str(), version.get(), event_type.as_str()), ("account-odd2", 1, "AccountFrozen"));
        }
        other => panic!("expected an unknown event type, got {other:?}"),
    }
}

#[tokio::test]
async fn a_malformed_v1_payload_is_an_upcast_error() {
    let backend = MemoryStore::new();
    let s: StreamId = "account-bad".parse().unwrap();
    backend
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("AccountOpened", 1, serde_json::json!({"owner": 7}), Metadata::now())],
        )
        .await
        .unwrap();
    let repo: Repository<Account, _> = Repository::new(EventStore::new(backend).with_upcasters(upcasters()));
    assert!(matches!(repo.load("bad").await, Err(Error::Upcast { from: 1, .. })));
}
