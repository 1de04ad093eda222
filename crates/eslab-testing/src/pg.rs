//! A fresh PostgreSQL schema per test (feature `postgres`): the one way
//! eslab's tests isolate themselves on the shared test database.
//!
//! - [`FreshSchema`]: a uniquely named schema on [`database_url`], created by
//!   whoever opens a store in it (a [`PostgresStore`] here, or an `eslab
//!   serve` process given its name), dropped when the guard goes or by
//!   [`FreshSchema::drop_schema`];
//! - [`SchemaStore`]: a migrated [`PostgresStore`] on a fresh schema of its
//!   own, dropped with its last clone; it is itself a store (the store
//!   traits forward to the [`PostgresStore`]), so it can be handed to the
//!   conformance suites.
//!
//! When PostgreSQL does not answer, opening a store panics with how to start
//! it (`make ensure-postgres`): the tests fail, they never skip.

use std::sync::Arc;
use std::time::Duration;

use eslab_postgres::{PostgresOptions, PostgresStore};
use sqlx::Connection;

/// The local test cluster, used when `DATABASE_URL` is not a `postgres://` URL.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// What a test that cannot reach PostgreSQL says to do.
const HOW_TO_START: &str =
    "start it with `make ensure-postgres` (it starts the local cluster), or point DATABASE_URL at a running server";

/// The test database: `DATABASE_URL` when it is a `postgres://` (or
/// `postgresql://`) URL, else [`DEFAULT_DATABASE_URL`] (a `sqlite://`
/// `DATABASE_URL` meant for the application does not send the tests elsewhere).
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

/// `<prefix>_<UUID v7, simple>`: a schema name no other test uses.
///
/// # Panics
/// If `prefix` is not a lowercase identifier (`[a-z_][a-z0-9_]*`) of at most
/// 30 bytes (the name must fit PostgreSQL's 63).
pub fn unique_name(prefix: &str) -> String {
    let word = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    let valid = prefix.len() <= 30 && prefix.starts_with(|c: char| !c.is_ascii_digit()) && prefix.chars().all(word);
    assert!(valid, "schema prefix {prefix:?} must match [a-z_][a-z0-9_]* and have at most 30 bytes");
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// A uniquely named schema on the test database, dropped (with everything in
/// it) when this guard is dropped, or by [`drop_schema`](Self::drop_schema).
///
/// Making one creates nothing: [`open`](Self::open) creates and migrates the
/// schema, or give [`name`](Self::name) to whatever creates it (an `eslab
/// serve` process, say).
#[derive(Debug)]
pub struct FreshSchema {
    url: String,
    name: String,
    dropped: bool,
}

impl FreshSchema {
    /// A fresh schema `<prefix>_<uuid>` on [`database_url`] (see [`unique_name`]).
    pub fn new(prefix: &str) -> FreshSchema {
        FreshSchema { url: database_url(), name: unique_name(prefix), dropped: false }
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Store options for this schema, with a 30 s pool acquire timeout (a
    /// loaded test machine is slow, not down).
    pub fn options(&self) -> PostgresOptions {
        PostgresOptions::new(&self.url, &self.name).acquire_timeout(Duration::from_secs(30))
    }

    /// A store in this schema, which it creates and migrates.
    ///
    /// # Panics
    /// When PostgreSQL cannot be reached (saying how to start it) or the
    /// schema cannot be prepared.
    pub async fn open(&self) -> PostgresStore {
        self.open_with(|o| o).await
    }

    /// [`open`](Self::open) with the [`options`](Self::options) changed by `tweak`.
    ///
    /// # Panics
    /// As [`open`](Self::open).
    pub async fn open_with(&self, tweak: impl FnOnce(PostgresOptions) -> PostgresOptions) -> PostgresStore {
        match PostgresStore::connect_with(tweak(self.options())).await {
            Ok(store) => store,
            Err(e) if e.is_unavailable() => panic!(
                "PostgreSQL is not reachable at {} ({e}: {:?}); {HOW_TO_START}",
                self.url,
                std::error::Error::source(&e)
            ),
            Err(e) => {
                panic!("cannot prepare schema {} on {}: {e} ({:?})", self.name, self.url, std::error::Error::source(&e))
            }
        }
    }

    /// A store in this schema that connects on first use and creates and
    /// migrates nothing (call it inside a Tokio runtime).
    ///
    /// # Panics
    /// If the URL is not a valid PostgreSQL URL.
    pub fn open_lazy(&self) -> PostgresStore {
        PostgresStore::connect_lazy(self.options())
            .unwrap_or_else(|e| panic!("cannot make a store for {} on {}: {e}", self.name, self.url))
    }

    /// Drops the schema now, and everything in it.
    ///
    /// # Panics
    /// If it cannot be dropped (a test that leaves its schema behind fails).
    pub async fn drop_schema(mut self) {
        self.dropped = true;
        if let Err(e) = drop_schema_at(&self.url, &self.name).await {
            panic!("cannot drop test schema {} on {}: {e}", self.name, self.url);
        }
    }
}

impl Drop for FreshSchema {
    /// Drops the schema unless [`drop_schema`](FreshSchema::drop_schema) did.
    /// A drop that fails is reported on stderr, not as a panic (this may run
    /// while a failed test unwinds).
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which may be single-threaded:
        // do the async work on a thread with a runtime of its own, and wait.
        let done = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(drop_schema_at(&url, &name)).map_err(|e| e.to_string())
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test schema {} on {}: {e}", self.name, self.url),
            Err(_) => {
                eprintln!("could not drop test schema {} on {}: the dropping thread panicked", self.name, self.url)
            }
        }
    }
}

/// `DROP SCHEMA … CASCADE` on a connection of its own, giving up after 30 s
/// behind another session's locks rather than hanging the test.
async fn drop_schema_at(url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query("SET lock_timeout = '30s'").execute(&mut conn).await?;
    // sql-ident: `unique_name` makes the name from a checked prefix and a UUID.
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE")).execute(&mut conn).await?;
    conn.close().await
}

/// A migrated [`PostgresStore`] on a [`FreshSchema`] (`eslab_test_<uuid>`)
/// of its own; the schema is dropped with the last clone. It derefs to the
/// store and is a store itself.
#[derive(Debug, Clone)]
pub struct SchemaStore {
    /// The store (declared first: dropped before the schema).
    pub store: PostgresStore,
    schema: Arc<FreshSchema>,
}

impl SchemaStore {
    /// A store on a fresh schema, with [`FreshSchema::options`].
    ///
    /// # Panics
    /// As [`FreshSchema::open`].
    pub async fn new() -> SchemaStore {
        SchemaStore::with_options(|o| o).await
    }

    /// A store on a fresh schema, with the options changed by `tweak`.
    ///
    /// # Panics
    /// As [`FreshSchema::open`].
    pub async fn with_options(tweak: impl FnOnce(PostgresOptions) -> PostgresOptions) -> SchemaStore {
        let schema = FreshSchema::new("eslab_test");
        let store = schema.open_with(tweak).await;
        SchemaStore { store, schema: Arc::new(schema) }
    }

    /// A store on a fresh schema that does not exist yet: nothing is
    /// connected, created or migrated until it is used (call it inside a
    /// Tokio runtime).
    pub fn lazy() -> SchemaStore {
        let schema = FreshSchema::new("eslab_test");
        let store = schema.open_lazy();
        SchemaStore { store, schema: Arc::new(schema) }
    }

    /// The schema (its name, URL and options).
    pub fn fresh_schema(&self) -> &FreshSchema {
        &self.schema
    }
}

impl std::ops::Deref for SchemaStore {
    type Target = PostgresStore;
    fn deref(&self) -> &PostgresStore {
        &self.store
    }
}

crate::forward_store! {
    impl EventAppender + EventReader + SnapshotStore + CheckpointStore + StreamRetention + WakeUps + Explore
        for SchemaStore => store {}
}
