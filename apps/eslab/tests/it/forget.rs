//! Forgetting an account's owner, end to end (crypto-shredding, #19): the
//! service on SQLite and on PostgreSQL with deposits, transfers (saga and
//! atomic), idempotent requests, a snapshot, a parked event and the Kafka
//! relay; then one owner is forgotten, and every table of the service's
//! schema, every message of its topics and every file under its data
//! directory is scanned for the name in every encoding it could take.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use eslab_bank::{Account, AccountEvent, Owner};
use eslab_core::{
    Aggregate, EventReader, EventStore, ExpectedVersion, Metadata, Repository, SnapshotPolicy, encode_events,
};
use eslab_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use eslab_kafka::rdkafka::{Message, Offset, TopicPartitionList};
use eslab_runtime::AnyStore;
use eslab_testing::pg;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;

use crate::helpers::{Backend, TestApp};

/// The broker the relay publishes to: `KAFKA_BROKERS`, or the test broker.
fn brokers() -> String {
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| eslab_kafka::DEFAULT_BROKERS.into());
    let first = brokers.split(',').next().unwrap_or_default().to_owned();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&first)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    assert!(reachable, "no Kafka broker at {brokers}: start it with `make services`, or set KAFKA_BROKERS");
    brokers
}

/// Every form in which `name` could sit in a table, a message or a file.
fn needles(name: &str, token: &str) -> Vec<(String, Vec<u8>)> {
    let json = serde_json::to_string(name).unwrap();
    let escaped = json.trim_matches('"').to_owned();
    let ascii_escaped: String = escaped
        .chars()
        .map(|c| if c.is_ascii() { c.to_string() } else { format!("\\u{:04x}", u32::from(c)) })
        .collect();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let url64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut out = vec![
        ("plain".to_owned(), name.as_bytes().to_vec()),
        ("JSON-escaped".to_owned(), escaped.into_bytes()),
        ("JSON with \\u escapes".to_owned(), ascii_escaped.into_bytes()),
        ("the name's unique token".to_owned(), token.as_bytes().to_vec()),
        ("UTF-16LE".to_owned(), name.encode_utf16().flat_map(u16::to_le_bytes).collect()),
    ];
    for (what, bytes) in [("plaintext", name.as_bytes().to_vec()), ("JSON string", json.into_bytes())] {
        out.push((format!("base64 of the {what}"), b64(&bytes).trim_end_matches('=').as_bytes().to_vec()));
        out.push((format!("URL-safe base64 of the {what}"), url64(&bytes).into_bytes()));
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Where each needle was found: `place -> [needle kinds]`.
#[derive(Debug, Default)]
struct Hits(BTreeMap<String, Vec<String>>);

impl Hits {
    fn scan(&mut self, place: &str, bytes: &[u8], needles: &[(String, Vec<u8>)]) {
        for (what, needle) in needles {
            if find(bytes, needle) {
                self.0.entry(place.to_owned()).or_default().push(what.clone());
            }
        }
    }
}

/// A catalog name that can be quoted as is (letters, digits, underscores).
fn plain_identifier(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Every row of every table of the service's database, as bytes.
async fn table_contents(store: &AnyStore) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    match store {
        AnyStore::Postgres(pg) => {
            let tables: Vec<(String,)> = sqlx::query_as(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE'",
            )
            .bind(pg.schema())
            .fetch_all(pg.pool())
            .await
            .unwrap();
            assert!(tables.len() >= 8, "the service's tables: {tables:?}");
            for (table,) in tables {
                assert!(plain_identifier(&table) && plain_identifier(pg.schema()), "{table}");
                // sql-ident: names from the catalog, checked by plain_identifier above
                let sql = format!("SELECT row_to_json(t)::text FROM \"{}\".\"{table}\" t", pg.schema());
                let rows: Vec<(String,)> = sqlx::query_as(&sql).fetch_all(pg.pool()).await.unwrap();
                // bytea columns come as hex: scan their decoded bytes too.
                let mut bytes = Vec::new();
                for (row,) in rows {
                    bytes.extend_from_slice(row.as_bytes());
                    bytes.push(b'\n');
                }
                out.push((format!("table {table}"), bytes));
            }
        }
        AnyStore::Sqlite(sqlite) => {
            let pool = sqlite.writer_pool();
            let tables: Vec<(String,)> =
                sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table'").fetch_all(pool).await.unwrap();
            assert!(tables.len() >= 8, "the service's tables: {tables:?}");
            for (table,) in tables {
                assert!(plain_identifier(&table), "{table}");
                let columns: Vec<(String,)> =
                    sqlx::query_as("SELECT name FROM pragma_table_info(?)").bind(&table).fetch_all(pool).await.unwrap();
                let mut bytes = Vec::new();
                for (column,) in columns {
                    assert!(plain_identifier(&column), "{column}");
                    // sql-ident: names from the catalog, checked by plain_identifier above
                    let sql = format!("SELECT CAST(\"{column}\" AS BLOB) FROM \"{table}\"");
                    for row in sqlx::query(&sql).fetch_all(pool).await.unwrap() {
                        let value: Option<Vec<u8>> = row.try_get(0).unwrap();
                        bytes.extend(value.unwrap_or_default());
                        bytes.push(b'\n');
                    }
                }
                out.push((format!("table {table}"), bytes));
            }
        }
        AnyStore::Memory(_) => panic!("the scan needs a durable store"),
        AnyStore::NatsSqlite(_) | AnyStore::NatsPostgres(_) => panic!("the scan reads SQL tables only"),
    }
    out
}

/// Every file under `dir`, as bytes.
fn files_under(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push((format!("file {}", path.display()), std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// Every message (value and headers) of every topic under `prefix`, as bytes.
fn topic_contents(brokers: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let options = eslab_kafka::KafkaOptions::new(brokers).with_topic_prefix(prefix);
    let group = format!("scan-{}", uuid::Uuid::now_v7().simple());
    let consumer: BaseConsumer = eslab_kafka::worker::consumer_config(&options, &group).create().unwrap();
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    let mut out = Vec::new();
    for topic in metadata.topics().iter().filter(|t| t.name().starts_with(prefix)) {
        let mut bytes = Vec::new();
        let mut messages = 0;
        for partition in topic.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic.name(), partition.id(), Duration::from_secs(10)).unwrap();
            if high <= low {
                continue;
            }
            let mut list = TopicPartitionList::new();
            list.add_partition_offset(topic.name(), partition.id(), Offset::Offset(low)).unwrap();
            consumer.assign(&list).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let mut next = low;
            while next < high {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{}[{}]: stuck at {next} of {high}",
                    topic.name(),
                    partition.id()
                );
                let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
                let message = message.unwrap();
                bytes.extend_from_slice(message.payload().unwrap_or_default());
                if let Some(headers) = message.headers() {
                    for header in eslab_kafka::rdkafka::message::Headers::iter(headers) {
                        bytes.extend_from_slice(header.key.as_bytes());
                        bytes.extend_from_slice(header.value.unwrap_or_default());
                    }
                }
                bytes.push(b'\n');
                next = message.offset() + 1;
                messages += 1;
            }
        }
        out.push((format!("topic {} ({messages} messages)", topic.name()), bytes));
    }
    out
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

/// Waits until transfer `id` is completed (the saga runs in the background).
async fn completed(app: &TestApp, id: &str) {
    for _ in 0..200 {
        let body = json_of(app.get(&format!("/transfers/{id}")).await).await;
        if body["status"] == "completed" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("transfer {id} did not complete");
}

async fn forgetting_an_owner_leaves_no_readable_trace(backend: Backend) {
    let brokers = brokers();
    let app = TestApp::spawn(backend).await;
    let store = app.running.as_ref().unwrap().state.events().backend().clone();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (ada_token, bob_token) = (format!("zq{}", &tag[..16]), format!("yx{}", &tag[16..]));
    let ada_name = format!("Zoë \"Q\" Quill {ada_token}");
    let bob_name = format!("Yorick Xi {bob_token}");

    // Ada opens her account with an idempotency key, and retries.
    let open_ada = || {
        app.post("/accounts")
            .header("Idempotency-Key", format!("open-{tag}"))
            .json(&json!({"owner": ada_name, "currency": "EUR", "overdraft_limit": 0}))
    };
    let first = open_ada().send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let ada = json_of(first).await["id"].as_str().unwrap().to_owned();
    let again = json_of(open_ada().send().await.unwrap()).await;
    assert_eq!((again["id"].as_str(), again["owner"].as_str()), (Some(ada.as_str()), Some(ada_name.as_str())));
    let bob = app.open(&bob_name, 0).await;

    // Deposits (one keyed: its stored answer shows the owner), transfers both ways.
    let keyed = app
        .post(&format!("/accounts/{ada}/deposits"))
        .header("Idempotency-Key", format!("dep-{tag}"))
        .json(&json!({"amount": 10_000, "currency": "EUR"}));
    assert_eq!(json_of(keyed.send().await.unwrap()).await["owner"], json!(ada_name));
    assert_eq!(app.deposit(&bob, 5_000).await.status(), StatusCode::OK);
    let saga = app.post_json("/transfers", json!({"from": ada, "to": bob, "amount": 2_000, "currency": "EUR"})).await;
    assert_eq!(saga.status(), StatusCode::ACCEPTED);
    let saga_id = json_of(saga).await["id"].as_str().unwrap().to_owned();
    completed(&app, &saga_id).await;
    let atomic = app
        .post_json("/transfers", json!({"from": bob, "to": ada, "amount": 500, "currency": "EUR", "mode": "atomic"}))
        .await;
    assert_eq!(atomic.status(), StatusCode::CREATED, "{:?}", atomic.text().await);

    // A snapshot of Ada's account (sealed like the events).
    let events = EventStore::new(store.clone()).with_upcasters(eslab_bank::upcasters());
    let snapshots: Repository<Account, AnyStore> =
        Repository::new(events.clone()).with_snapshots(store.clone(), SnapshotPolicy::EveryNEvents(1_000));
    assert!(snapshots.snapshot(&ada).await.unwrap().is_some());

    // A parked event: a second opening of Ada's account, which the views refuse.
    let stream = Account::stream_id(&ada).unwrap();
    let version = events.stream_version(&stream).await.unwrap();
    let reopened = AccountEvent::AccountOpened {
        owner: Owner { name: ada_name.as_str().into() },
        currency: "EUR".parse().unwrap(),
        overdraft_limit: eslab_bank::OverdraftLimit::NONE,
    };
    let new = encode_events::<Account>(&stream, &[reopened], &Metadata::now(), None, 0).unwrap();
    eslab_core::EventAppender::append(&events, &stream, ExpectedVersion::Exact(version), new).await.unwrap();
    let projections = eslab::projections::AnyProjections::open(&store).await.unwrap();
    let mut parked = Vec::new();
    for _ in 0..200 {
        parked = projections.parked(None).await.unwrap();
        if !parked.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(parked.iter().any(|p| p.event.stream_id == stream), "a parked event of Ada's account: {parked:?}");

    // Everything goes to Kafka through the relay (its own process).
    let prefix = format!("forget{}.", &tag[..12]);
    let mut relay = std::process::Command::new(env!("CARGO_BIN_EXE_eslab"));
    relay.args(["relay", "--once"]).env("KAFKA_BROKERS", &brokers).env("ESLAB_TOPIC_PREFIX", &prefix);
    match &store {
        AnyStore::Postgres(pg) => relay.env("DATABASE_URL", pg::database_url()).env("ESLAB_SCHEMA", pg.schema()),
        _ => relay.env("DATABASE_URL", format!("sqlite://{}", app.dir.path().join("eslab.db").display())),
    };
    let status = relay.status().unwrap();
    assert!(status.success(), "eslab relay --once: {status}");

    let (ada_needles, bob_needles) = (needles(&ada_name, &ada_token), needles(&bob_name, &bob_token));
    let topics = topic_contents(&brokers, &prefix);
    assert!(topics.iter().any(|(_, bytes)| find(bytes, b"$sealed")), "the topics carry the sealed names");
    let mut before = Hits::default();
    for (place, bytes) in &topics {
        before.scan(place, bytes, &ada_needles);
    }
    assert!(before.0.is_empty(), "Kafka carries only ciphertext, even before forgetting: {:?}", before.0);

    let ada_before = app.strong(&ada).await;
    let history_before = json_of(app.get(&format!("/accounts/{ada}/events")).await).await;

    // Forget Ada; twice; an account never opened is a 404.
    let forgotten = app.post(&format!("/accounts/{ada}/forget")).send().await.unwrap();
    assert_eq!(forgotten.status(), StatusCode::OK);
    let forgotten = json_of(forgotten).await;
    assert_eq!(forgotten["subject"], json!(format!("account-{ada}")));
    let twice = json_of(app.post(&format!("/accounts/{ada}/forget")).send().await.unwrap()).await;
    assert_eq!(twice, forgotten, "forgetting twice answers the first forgetting");
    let unknown = app.post(&format!("/accounts/{}/forget", uuid::Uuid::now_v7())).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // Every read shows the owner forgotten; the money and the history did not move.
    let ada_after = app.strong(&ada).await;
    assert_eq!(ada_after["owner"], Value::Null);
    assert_eq!(ada_after["balance"], ada_before["balance"]);
    assert_eq!(ada_after["version"], json!(ada_before["version"].as_u64().unwrap() + 1), "OwnerForgotten recorded");
    assert_eq!(app.get(&format!("/accounts/{ada}")).await.json::<Value>().await.unwrap()["owner"], Value::Null);
    let replayed = json_of(open_ada().send().await.unwrap()).await;
    assert_eq!((replayed["id"].as_str(), &replayed["owner"]), (Some(ada.as_str()), &Value::Null));
    let history_after = json_of(app.get(&format!("/accounts/{ada}/events")).await).await;
    let (before_items, after_items) =
        (history_before["items"].as_array().unwrap(), history_after["items"].as_array().unwrap());
    assert_eq!(after_items.len(), before_items.len() + 1);
    assert_eq!(after_items.last().unwrap()["event_type"], json!("OwnerForgotten"), "{after_items:?}");
    let loaded = snapshots.load(&ada).await.unwrap();
    assert!(loaded.state.owner.is_some_and(|o| o.name.is_forgotten()));
    assert_eq!(app.strong(&bob).await["owner"], json!(bob_name), "Bob is still known");
    let parked = projections.parked(None).await.unwrap();
    // The parked events holding Ada's data were rewritten (those after them, parked
    // behind them with no personal data, such as OwnerForgotten, keep their reason).
    let (erased, kept): (Vec<_>, Vec<_>) = parked.iter().partition(|p| p.event.metadata.subject.is_some());
    assert!(!erased.is_empty() && erased.iter().all(|p| p.reason == eslab_projection::FORGOTTEN_REASON), "{parked:?}");
    assert!(kept.iter().all(|p| p.event.stream_id != stream || p.reason == "stream parked"), "{parked:?}");

    // The scan: tables, topics, files.
    let mut places = table_contents(&store).await;
    places.extend(topic_contents(&brokers, &prefix));
    if let AnyStore::Sqlite(_) = store {
        places.extend(files_under(app.dir.path()));
    }
    let (mut ada_hits, mut bob_hits) = (Hits::default(), Hits::default());
    for (place, bytes) in &places {
        ada_hits.scan(place, bytes, &ada_needles);
        bob_hits.scan(place, bytes, &bob_needles);
    }
    assert!(ada_hits.0.is_empty(), "Ada's name is still readable: {:?}", ada_hits.0);
    assert!(
        bob_hits.0.keys().any(|place| place.contains("account_summary")),
        "the scan reads what is there (Bob's name in the read model): {:?}",
        bob_hits.0
    );
    if let AnyStore::Sqlite(_) = store {
        assert!(bob_hits.0.keys().any(|place| place.starts_with("file ")), "the files are read: {:?}", bob_hits.0);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_an_owner_leaves_no_readable_trace_on_sqlite() {
    forgetting_an_owner_leaves_no_readable_trace(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_an_owner_leaves_no_readable_trace_on_postgres() {
    forgetting_an_owner_leaves_no_readable_trace(Backend::Postgres).await;
}

/// Forgetting needs the token when one is configured, and reveals nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_needs_the_token() {
    let app = TestApp::spawn_with(Backend::Memory, |c| c.api_token = Some("s3cret".into())).await;
    let id = app.open("Vera Token", 0).await;
    let anonymous = app.client.post(app.url(&format!("/accounts/{id}/forget"))).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.strong(&id).await["owner"], json!("Vera Token"));
    let done = app.post(&format!("/accounts/{id}/forget")).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(app.strong(&id).await["owner"], Value::Null);
    let bad = app.post("/accounts/not-a-uuid/forget").send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    app.stop().await;
}

/// `eslab forget <subject>`: the key, the read models and the parked events,
/// one JSON line; twice answers the first forgetting; an unknown subject fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_forgets_a_subject() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let id = app.open("Cli Person", 0).await;
    app.eventually(&id, 1).await;
    let url = format!("sqlite://{}", app.dir.path().join("eslab.db").display());
    let forget = |subject: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_eslab"))
            .args(["forget", &subject, "--by", "ops"])
            .env("DATABASE_URL", &url)
            .output()
            .unwrap()
    };
    let first = forget(format!("account-{id}"));
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let line: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        (line["subject"].as_str(), line["forgotten_by"].as_str()),
        (Some(&*format!("account-{id}")), Some("ops"))
    );
    let second: Value = serde_json::from_slice(&forget(format!("account-{id}")).stdout).unwrap();
    assert_eq!(second["forgotten_at"], line["forgotten_at"], "the first forgetting stands");
    let unknown = forget("account-nobody".into());
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no personal data"), "{unknown:?}");
    // The running service reads the owner as forgotten (its read model was erased by the CLI).
    assert_eq!(app.strong(&id).await["owner"], Value::Null);
    assert_eq!(app.get(&format!("/accounts/{id}")).await.json::<Value>().await.unwrap()["owner"], Value::Null);
    app.stop().await;
}

/// Eight forgettings of one owner racing: every one answers 200 with the same
/// forgetting, and the account's stream records `OwnerForgotten` once.
async fn racing_forgettings_agree(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app.open("Racy Owner", 0).await;
    let requests = (0..8).map(|_| app.post(&format!("/accounts/{id}/forget")).send());
    let answers = futures_util::future::join_all(requests).await;
    let mut bodies = Vec::new();
    for answer in answers {
        let answer = answer.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        bodies.push(json_of(answer).await);
    }
    bodies.dedup();
    assert_eq!(bodies.len(), 1, "one forgetting: {bodies:?}");
    let events = json_of(app.get(&format!("/accounts/{id}/events")).await).await;
    let recorded = events["items"].as_array().unwrap().iter().filter(|e| e["event_type"] == "OwnerForgotten").count();
    assert_eq!(recorded, 1);
    assert_eq!(app.strong(&id).await["owner"], Value::Null);
    app.stop().await;
}

crate::helpers::on_every_store!(racing_forgettings, racing_forgettings_agree);
