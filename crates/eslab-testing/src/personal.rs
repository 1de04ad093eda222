//! The personal-data kit: what every store must do for crypto-shredding
//! (`eslab_core::personal`), run on each store by
//! [`personal_conformance_tests!`](crate::personal_conformance_tests).
//!
//! Each test takes a factory of *fresh, empty* stores (also snapshot stores)
//! and checks, through the store's own key store:
//! - personal values are sealed at rest (no plaintext in the backend's rows,
//!   events or snapshots, or in an idempotency key's stored answer) and
//!   opened on every read path (stream, feed, repository, snapshot);
//! - forgetting deletes the key: every read yields `Personal::Forgotten`,
//!   aggregates still load and decide, other subjects are untouched;
//!   forgetting twice answers the first forgetting, an unknown subject is a
//!   typed error, and new personal data of a forgotten subject is refused;
//! - bad input (personal data without a subject, a tampered ciphertext) is a
//!   typed error, never plaintext and never a panic;
//! - racing creators of one subject's key all get the same key.
//!
//! ```no_run
//! async fn new_store() -> eslab_memory::MemoryStore {
//!     eslab_memory::MemoryStore::new()
//! }
//! eslab_testing::personal_conformance_tests!(new_store);
//! # fn main() {}
//! ```

use std::future::Future;

use eslab_core::personal::{PersonalError, SEALED, Subject};
use eslab_core::{
    Aggregate, CommandOptions, DomainEvent, Error, EventAppender, EventReader, EventStore, FeedFilter, IdempotencyKey,
    Metadata, NewEvent, Outcome, Personal, Repository, SnapshotPolicy, SnapshotStore, Snapshotting, StreamId, Version,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::conformance::TestStore;

/// Expands to one `#[test]` per personal-data test, in a module named
/// `personal_conformance`, each calling `$factory().await` for a fresh store.
#[macro_export]
macro_rules! personal_conformance_tests {
    ($factory:path) => {
        $crate::personal_conformance_tests!(@tests $factory;
            personal_data_is_sealed_at_rest_and_opened_on_every_read,
            forgetting_makes_every_read_yield_forgotten,
            forgetting_is_idempotent_and_refuses_unknown_and_new_data,
            snapshots_are_sealed_and_follow_forgetting,
            stored_answers_of_idempotency_keys_are_sealed,
            bad_input_is_a_typed_error_and_writes_nothing,
            racing_key_creators_get_one_key
        );
    };
    (@tests $factory:path; $($name:ident),* $(,)?) => {
        #[allow(missing_docs)]
        mod personal_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    $crate::block_on($crate::personal::$name(|| $factory()));
                }
            )*
        }
    };
}

/// A customer whose name is personal data; the kit's aggregate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// The name, once registered.
    pub name: Option<Personal<String>>,
    /// Notes taken (no personal data).
    pub notes: u32,
}

/// What a customer is told to do.
#[derive(Debug, Clone)]
pub enum CustomerCommand {
    /// Register with a name.
    Register(String),
    /// Take a note (no personal data).
    Note,
}

/// What happened to a customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CustomerEvent {
    /// Registered, with a name.
    Registered {
        /// The name.
        name: Personal<String>,
        /// Not personal.
        plan: String,
    },
    /// A note was taken.
    Noted {},
}

impl DomainEvent for CustomerEvent {
    const EVENT_TYPES: &'static [&'static str] = &["Registered", "Noted"];
    fn event_type(&self) -> &'static str {
        match self {
            CustomerEvent::Registered { .. } => "Registered",
            CustomerEvent::Noted {} => "Noted",
        }
    }
}

impl Aggregate for Customer {
    const KIND: &'static str = "customer";
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Error = std::convert::Infallible;

    fn subject(stream: &StreamId) -> Option<Subject> {
        Some(Subject::of_stream(stream))
    }

    fn decide(&self, command: &CustomerCommand) -> Result<Vec<CustomerEvent>, Self::Error> {
        Ok(vec![match command {
            CustomerCommand::Register(name) => {
                CustomerEvent::Registered { name: Personal::Known(name.clone()), plan: "basic".into() }
            }
            CustomerCommand::Note => CustomerEvent::Noted {},
        }])
    }

    fn evolve(&mut self, event: &CustomerEvent) {
        match event {
            CustomerEvent::Registered { name, .. } => self.name = Some(name.clone()),
            CustomerEvent::Noted {} => self.notes += 1,
        }
    }
}

impl Snapshotting for Customer {
    const STATE_SCHEMA_VERSION: u32 = 1;
}

/// A name no other test uses, so that a scan for it finds only this test's data.
fn unique_name(who: &str) -> String {
    format!("{who} {}", uuid::Uuid::new_v4().simple())
}

fn register(name: &str) -> CustomerCommand {
    CustomerCommand::Register(name.to_owned())
}

fn stream(id: &str) -> StreamId {
    Customer::stream_id(id).expect("valid stream id")
}

fn subject(id: &str) -> Subject {
    Subject::of_stream(&stream(id))
}

async fn raw_stream<S: EventReader>(store: &S, id: &str) -> String {
    let events = store.read_stream(&stream(id), Version::FIRST, 1_000).await.expect("raw read");
    serde_json::to_string(&events.iter().map(|e| (&e.payload, &e.metadata)).collect::<Vec<_>>()).expect("json")
}

/// A fresh store, its event store, and a repository of customers on it.
async fn customers<S, F>(new: impl Fn() -> F) -> (S, EventStore<S>, Repository<Customer, S>)
where
    S: TestStore,
    F: Future<Output = S>,
{
    let backend = new().await;
    let events = EventStore::new(backend.clone());
    let repo = Repository::new(events.clone());
    (backend, events, repo)
}

fn name_of(state: &Customer) -> Option<Personal<String>> {
    state.name.clone()
}

/// Personal values are sealed in the backend's events, and opened by every
/// read through the event store: stream, feed, repository; a sealed reader
/// ([`EventStore::sealed`]) passes them on as they are stored.
pub async fn personal_data_is_sealed_at_rest_and_opened_on_every_read<S, F>(new: impl Fn() -> F)
where
    S: TestStore,
    F: Future<Output = S>,
{
    let backend = new().await;
    assert!(backend.personal_keys().is_some(), "the store keeps keys for personal data");
    let events = EventStore::new(backend.clone());
    let repo: Repository<Customer, S> = Repository::new(events.clone());
    let name = unique_name("Ada");
    repo.execute("c1", &register(&name), Metadata::now()).await.expect("register");
    repo.execute("c1", &CustomerCommand::Note, Metadata::now()).await.expect("note");

    let raw = raw_stream(&backend, "c1").await;
    assert!(!raw.contains(&name), "plaintext at rest: {raw}");
    assert!(raw.contains(SEALED), "sealed envelope at rest: {raw}");
    let stored = backend.read_stream(&stream("c1"), Version::FIRST, 10).await.expect("raw read");
    assert_eq!(stored[0].metadata.subject, Some(subject("c1")), "the event names its subject");
    assert_eq!(stored[1].metadata.subject, None, "an event without personal data names none");

    let loaded = repo.load("c1").await.expect("load");
    assert_eq!(name_of(&loaded.state), Some(Personal::Known(name.clone())));
    assert_eq!(loaded.state.notes, 1);
    let page = events.read_stream(&stream("c1"), Version::FIRST, 10).await.expect("read");
    let first: CustomerEvent = events.decode(&page[0]).expect("decode");
    assert_eq!(first, CustomerEvent::Registered { name: Personal::Known(name.clone()), plan: "basic".into() });
    let feed = events.read_feed(&FeedFilter::All, eslab_core::Checkpoint::START, 10).await.expect("feed");
    assert!(serde_json::to_string(&feed[0].payload).expect("json").contains(&name), "the feed opens too");
    let start = eslab_core::Checkpoint::START;
    let options = eslab_core::SubscribeOptions::default();
    let mut live =
        std::pin::pin!(events.subscribe_woken_by(eslab_core::no_wake_ups(), FeedFilter::All, start, options));
    let first = futures_util::StreamExt::next(&mut live).await.expect("an event").expect("opened");
    assert_eq!(first.payload["name"], json!({ "$personal": name }), "a subscription opens too");
    let sealed = EventStore::new(backend.clone()).sealed();
    let feed = sealed.read_feed(&FeedFilter::All, eslab_core::Checkpoint::START, 10).await.expect("sealed feed");
    let text = serde_json::to_string(&feed[0].payload).expect("json");
    assert!(!text.contains(&name) && text.contains(SEALED), "a sealed reader passes ciphertext on: {text}");
}

/// After `forget`, every read yields `Forgotten` for the subject's values;
/// its aggregate still loads and decides; another subject is untouched.
pub async fn forgetting_makes_every_read_yield_forgotten<S, F>(new: impl Fn() -> F)
where
    S: TestStore,
    F: Future<Output = S>,
{
    let (_, events, repo) = customers(new).await;
    let (ada, bob) = (unique_name("Ada"), unique_name("Bob"));
    repo.execute("ada", &register(&ada), Metadata::now()).await.expect("register ada");
    repo.execute("bob", &register(&bob), Metadata::now()).await.expect("register bob");
    repo.execute("ada", &CustomerCommand::Note, Metadata::now()).await.expect("note");

    let done = events.forget(&subject("ada"), "kit").await.expect("forget");
    assert_eq!((done.subject.clone(), done.forgotten_by.as_str()), (subject("ada"), "kit"));

    let loaded = repo.load("ada").await.expect("a forgotten subject's aggregate still loads");
    assert_eq!(name_of(&loaded.state), Some(Personal::Forgotten));
    assert_eq!((loaded.state.notes, loaded.version), (1, Version::new(2)));
    repo.execute("ada", &CustomerCommand::Note, Metadata::now()).await.expect("and decides");
    assert_eq!(name_of(&repo.load("bob").await.expect("bob").state), Some(Personal::Known(bob.clone())));

    let feed = events.read_feed(&FeedFilter::All, eslab_core::Checkpoint::START, 100).await.expect("feed");
    let text = serde_json::to_string(&feed.iter().map(|e| &e.payload).collect::<Vec<_>>()).expect("json");
    assert!(!text.contains(&ada) && text.contains(&bob), "{text}");
    let first: CustomerEvent = events.decode(&feed[0]).expect("a forgotten value decodes");
    assert_eq!(first, CustomerEvent::Registered { name: Personal::Forgotten, plan: "basic".into() });
}

/// Forgetting twice answers the first forgetting; an unknown subject is
/// `UnknownSubject`; new personal data of a forgotten subject is refused and
/// writes nothing, while its events without personal data still append.
pub async fn forgetting_is_idempotent_and_refuses_unknown_and_new_data<S, F>(new: impl Fn() -> F)
where
    S: TestStore,
    F: Future<Output = S>,
{
    let (backend, events, repo) = customers(new).await;
    let unknown = events.forget(&subject("nobody"), "kit").await.expect_err("unknown subject");
    assert!(matches!(unknown, Error::Personal(PersonalError::UnknownSubject(_))), "{unknown}");
    repo.execute("c", &register(&unique_name("Cy")), Metadata::now()).await.expect("register");
    let first = events.forget(&subject("c"), "first").await.expect("forget");
    let again = events.forget(&subject("c"), "second").await.expect("forget again");
    assert_eq!(first, again, "the first forgetting stands");

    let refused = repo.execute("c", &register("Cy again"), Metadata::now()).await.expect_err("refused");
    assert!(refused.to_string().contains("forgotten"), "{refused}");
    assert_eq!(backend.stream_version(&stream("c")).await.expect("version"), Version::new(1), "nothing written");
    repo.execute("c", &CustomerCommand::Note, Metadata::now()).await.expect("no personal data: appended");
}

/// A snapshot's personal values are sealed like the events'; a load from it
/// opens them, and yields `Forgotten` once the subject is forgotten.
pub async fn snapshots_are_sealed_and_follow_forgetting<S, F>(new: impl Fn() -> F)
where
    S: TestStore + SnapshotStore,
    F: Future<Output = S>,
{
    let backend = new().await;
    let events = EventStore::new(backend.clone());
    let repo: Repository<Customer, S> =
        Repository::new(events.clone()).with_snapshots(backend.clone(), SnapshotPolicy::EveryNEvents(1_000));
    let name = unique_name("Di");
    repo.execute("d", &register(&name), Metadata::now()).await.expect("register");
    repo.snapshot("d").await.expect("snapshot");
    let snapshot = backend.load_snapshot(&stream("d")).await.expect("load").expect("a snapshot");
    let text = snapshot.state.to_string();
    assert!(!text.contains(&name) && text.contains(SEALED), "sealed snapshot: {text}");
    assert_eq!(name_of(&repo.load("d").await.expect("load").state), Some(Personal::Known(name.clone())));
    events.forget(&subject("d"), "kit").await.expect("forget");
    assert_eq!(name_of(&repo.load("d").await.expect("load").state), Some(Personal::Forgotten));
}

/// A response holding personal values, stored with an idempotency key, is
/// sealed with the command stream's subject; a replay after forgetting
/// answers `Forgotten`.
pub async fn stored_answers_of_idempotency_keys_are_sealed<S, F>(new: impl Fn() -> F)
where
    S: TestStore,
    F: Future<Output = S>,
{
    let (backend, events, repo) = customers(new).await;
    let name = unique_name("Eve");
    let key = IdempotencyKey::new("k-1", &[b"register"]).expect("key");
    let options = CommandOptions::new(Metadata::now()).idempotent(key.clone());
    let respond = |state: &Customer, _: Version| json!({ "name": state.name });
    let first = repo.run("e", &register(&name), &options, respond).await.expect("run");
    assert!(matches!(first, Outcome::Executed(_)));
    let raw = backend.read_stream(key.stream(), Version::FIRST, 10).await.expect("raw key");
    let text = serde_json::to_string(&raw[0].payload).expect("json");
    assert!(!text.contains(&name) && text.contains(SEALED), "sealed answer: {text}");
    match repo.run("e", &register(&name), &options, respond).await.expect("replay") {
        Outcome::Replayed(answer) => assert_eq!(answer, json!({ "name": { "$personal": name } })),
        Outcome::Executed(_) => panic!("a retry with the key is replayed"),
    }
    events.forget(&subject("e"), "kit").await.expect("forget");
    match repo.run("e", &register(&name), &options, respond).await.expect("replay after forgetting") {
        Outcome::Replayed(answer) => assert_eq!(answer, json!({ "name": { "$forgotten": true } })),
        Outcome::Executed(_) => panic!("a retry with the key is replayed"),
    }
}

/// Personal data without a subject is refused and writes nothing; a
/// tampered ciphertext is a typed error on read, never plaintext.
pub async fn bad_input_is_a_typed_error_and_writes_nothing<S, F>(new: impl Fn() -> F)
where
    S: TestStore,
    F: Future<Output = S>,
{
    let backend = new().await;
    let events = EventStore::new(backend.clone());
    let orphan = stream("orphan");
    let event = NewEvent::new("Registered", 1, json!({ "name": { "$personal": "Fay" }, "plan": "x" }), Metadata::now());
    let err = events.append(&orphan, eslab_core::ExpectedVersion::Any, vec![event]).await.expect_err("no subject");
    assert!(matches!(err, Error::Personal(PersonalError::NoSubject(_))), "{err}");
    assert_eq!(backend.stream_version(&orphan).await.expect("version"), Version::NONE, "nothing written");

    let repo: Repository<Customer, S> = Repository::new(events.clone());
    repo.execute("g", &register(&unique_name("Gil")), Metadata::now()).await.expect("register");
    // A value sealed for subject g, tampered with, stored raw on another stream under g's subject.
    let stored = backend.read_stream(&stream("g"), Version::FIRST, 1).await.expect("raw");
    let mut payload = stored[0].payload.clone();
    let sealed = payload["name"][SEALED].as_str().expect("sealed text").to_owned();
    let mut flipped = sealed.into_bytes();
    let at = flipped.len() / 2;
    flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
    payload["name"][SEALED] = json!(String::from_utf8(flipped).expect("ascii"));
    let tampered = NewEvent::new("Registered", 1, payload, Metadata::now().with_subject(subject("g")));
    backend.append(&stream("t"), eslab_core::ExpectedVersion::Any, vec![tampered]).await.expect("raw append");
    let err = events.read_stream(&stream("t"), Version::FIRST, 10).await.expect_err("tampered");
    assert!(matches!(err, Error::Personal(PersonalError::Tampered(_))), "{err}");
}

/// Eight tasks asking for one new subject's key at once all get the same key.
pub async fn racing_key_creators_get_one_key<S, F>(new: impl Fn() -> F)
where
    S: TestStore,
    F: Future<Output = S>,
{
    let backend = new().await;
    let keys = backend.personal_keys().expect("a key store");
    let who = Subject::new(format!("racer-{}", uuid::Uuid::new_v4().simple())).expect("subject");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (keys, who) = (keys.clone(), who.clone());
        tasks.spawn(async move { keys.subject_key(&who).await.map(|k| k.as_bytes().to_vec()) });
    }
    let mut seen = Vec::new();
    while let Some(key) = tasks.join_next().await {
        seen.push(key.expect("task").expect("key"));
    }
    seen.dedup();
    assert_eq!(seen.len(), 1, "one key for one subject");
}
