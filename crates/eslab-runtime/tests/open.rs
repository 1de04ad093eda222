//! Opening each store from its URL (memory, an SQLite file, a fresh
//! PostgreSQL schema), refusing any other URL, and running code generic over
//! the store on whichever was opened.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use clap::Parser;
use eslab_core::{EventAppender, EventReader, ExpectedVersion, Metadata, NewEvent, StreamId, Version};
use eslab_runtime::{AnyStore, Error, PostgresSettings, Store, StoreSettings, StoreVisitor};
use eslab_testing::pg::FreshSchema;

/// Says which store it ran on, after getting its projection backends.
struct Wire;

impl<S: Store> StoreVisitor<S> for Wire {
    type Output = Result<(&'static str, bool), Error>;

    async fn visit(self, store: S) -> Self::Output {
        store.backends().await?;
        Ok((S::DESCRIPTION, S::DURABLE))
    }
}

/// Appends one event and reads it back through [`AnyStore`].
async fn round_trip(store: &AnyStore) {
    let stream: StreamId = "thing-1".parse().unwrap();
    let event = NewEvent::new("Made", 1, serde_json::json!({"n": 1}), Metadata::now());
    store.append(&stream, ExpectedVersion::NoStream, vec![event]).await.unwrap();
    let read = store.read_stream(&stream, Version::FIRST, 10).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].event_type, "Made");
}

#[tokio::test]
async fn memory_when_nothing_else_is_said() {
    let store = StoreSettings::default().open().await.unwrap();
    assert!(matches!(store, AnyStore::Memory(_)));
    round_trip(&store).await;
    assert_eq!(store.visit(Wire).await.unwrap(), ("in memory (nothing is kept)", false));
    assert!(matches!(store.visit_durable(Wire).await, Err(Error::NotDurable)), "not run on memory");
}

#[tokio::test]
async fn sqlite_file_created_with_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data").join("events.db");
    let store = StoreSettings::new(format!("sqlite://{}", file.display())).open().await.unwrap();
    assert!(matches!(store, AnyStore::Sqlite(_)));
    assert!(file.exists());
    round_trip(&store).await;
    assert_eq!(store.visit(Wire).await.unwrap(), ("SQLite", true));
    assert_eq!(store.visit_durable(Wire).await.unwrap().unwrap(), ("SQLite", true));
    // Opened again, the same events.
    let again = AnyStore::open(&format!("sqlite://{}", file.display())).await.unwrap();
    assert_eq!(again.read_stream(&"thing-1".parse().unwrap(), Version::FIRST, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn postgres_in_the_schema_with_the_pool_asked_for() {
    let schema = FreshSchema::new("eslab_runtime");
    let settings = StoreSettings {
        schema: Some(schema.name().to_owned()),
        postgres: PostgresSettings { max_connections: 3, group_commit: false, group_flushers: 2, notify_window_ms: 2 },
        ..StoreSettings::new(schema.url())
    };
    let store = settings.open().await.unwrap();
    let AnyStore::Postgres(pg) = &store else { panic!("PostgreSQL expected, got {}", store.describe()) };
    assert_eq!(pg.schema(), schema.name());
    assert_eq!(pg.pool().options().get_max_connections(), 3);
    assert_eq!(store.postgres().map(|p| p.schema()), Some(schema.name()));
    round_trip(&store).await;
    assert_eq!(store.visit_durable(Wire).await.unwrap().unwrap(), ("PostgreSQL", true));
    pg.pool().close().await;
    schema.drop_schema().await;
}

#[tokio::test]
async fn other_urls_are_refused_naming_the_accepted_ones_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "mysql://user:secret@localhost/db".to_owned(),
        dir.path().join("events.db").display().to_string(),
        format!("file://{}", dir.path().join("events.db").display()),
        "memory".to_owned(),
    ] {
        let error = StoreSettings::new(url.clone()).open().await.unwrap_err();
        assert!(matches!(error, Error::UnsupportedUrl { .. }), "{url}: {error:?}");
        let message = error.to_string();
        for scheme in ["sqlite://", "postgres://", "memory:"] {
            assert!(message.contains(scheme), "{url}: {message}");
        }
        assert!(!message.contains("secret"), "{message}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing created");
}

#[tokio::test]
async fn an_unreachable_postgres_is_a_typed_error_without_the_password() {
    let settings = StoreSettings::new("postgres://u:secret@127.0.0.1:1/db");
    let error = settings.open().await.unwrap_err();
    let Error::Postgres { schema, .. } = &error else { panic!("{error:?}") };
    assert_eq!(schema, "eslab");
    assert!(!error.to_string().contains("secret"), "{error}");
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    store: StoreSettings,
    #[command(flatten)]
    postgres: PostgresSettings,
}

#[test]
fn flags_fill_the_settings() {
    let cli = Cli::try_parse_from([
        "test",
        "--database-url",
        "memory:",
        "--schema",
        "mine",
        "--pg-max-connections",
        "7",
        "--pg-group-commit",
        "false",
        "--pg-group-flushers",
        "3",
        "--pg-notify-window-ms",
        "5",
    ])
    .unwrap();
    assert_eq!(cli.store.database_url, "memory:");
    assert_eq!(cli.store.schema(), "mine");
    assert_eq!(
        cli.postgres,
        PostgresSettings { max_connections: 7, group_commit: false, group_flushers: 3, notify_window_ms: 5 }
    );
    assert_eq!(StoreSettings::new("memory:").schema(), "eslab");
    assert_eq!(StoreSettings::new("memory:").postgres, PostgresSettings::default());
    let none = Cli::try_parse_from(["test", "--pg-group-flushers", "0"]).unwrap_err();
    assert!(none.to_string().contains("--pg-group-flushers"), "{none}");
}

/// `nats://` opens the events on JetStream (a stream of the test's own on the
/// test cluster) and the rest in the side database; the round trip holds.
#[tokio::test]
async fn nats_with_the_read_models_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let stream = eslab_testing::nats::unique_stream("ESLAB_RUNTIME");
    let settings = StoreSettings {
        side_database_url: format!("sqlite://{}", dir.path().join("side.db").display()),
        nats: eslab_runtime::NatsSettings { stream: stream.clone(), replicas: 3 },
        ..StoreSettings::new(eslab_testing::nats::nats_url())
    };
    let store = match settings.open().await {
        Ok(store) => store,
        Err(e) => panic!("{e:?}; the NATS test cluster: `make services` starts it"),
    };
    assert!(matches!(store, AnyStore::NatsSqlite(_)), "{}", store.describe());
    assert!(store.postgres().is_none());
    round_trip(&store).await;
    if let AnyStore::NatsSqlite(on) = &store {
        on.events().destroy().await.unwrap();
    }
    let bad = StoreSettings { side_database_url: "memory:".into(), ..settings };
    assert!(matches!(bad.open().await, Err(eslab_runtime::Error::UnsupportedSideUrl { .. })));
}

/// The same with the read models in PostgreSQL (a fresh schema).
#[tokio::test]
async fn nats_with_the_read_models_in_postgres() {
    let schema = FreshSchema::new("eslab_runtime");
    let settings = StoreSettings {
        side_database_url: schema.url().to_owned(),
        schema: Some(schema.name().to_owned()),
        nats: eslab_runtime::NatsSettings { stream: eslab_testing::nats::unique_stream("ESLAB_RUNTIME"), replicas: 3 },
        ..StoreSettings::new(eslab_testing::nats::nats_url())
    };
    let store = match settings.open().await {
        Ok(store) => store,
        Err(e) => panic!("{e:?}; the NATS test cluster: `make services` starts it"),
    };
    let AnyStore::NatsPostgres(on) = &store else {
        panic!("JetStream with PostgreSQL expected, got {}", store.describe())
    };
    assert_eq!(on.side().schema(), schema.name());
    round_trip(&store).await;
    on.events().destroy().await.unwrap();
}
