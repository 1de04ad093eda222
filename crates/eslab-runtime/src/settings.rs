//! The store's configuration, and opening the store it names.

use std::time::Duration;

use eslab_memory::MemoryStore;
use eslab_nats::{NatsOptions, NatsStore};
use eslab_postgres::{DEFAULT_GROUP_FLUSHERS, GroupCommitOptions, Notify, PostgresOptions, PostgresStore};
use eslab_sqlite::SqliteStore;

use crate::{AnyStore, Error, OnNats, redact};

/// The `DATABASE_URL` of the command line when none is given: an SQLite file
/// under `./data/`, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/eslab.db";
/// Where a `nats://` store keeps its read models, checkpoints, snapshots and
/// personal-data keys when `ESLAB_SIDE_DATABASE_URL` is not given.
pub const DEFAULT_SIDE_DATABASE_URL: &str = "sqlite://data/eslab-side.db";
/// The PostgreSQL schema when none is given (`ESLAB_SCHEMA`).
pub const DEFAULT_SCHEMA: &str = "eslab";
/// The PostgreSQL pool size when none is given (`ESLAB_PG_MAX_CONNECTIONS`).
pub const DEFAULT_PG_MAX_CONNECTIONS: u32 = 32;
/// The default `--pg-notify-window-ms` (the store's [`eslab_postgres::DEFAULT_NOTIFY_WINDOW`]).
pub const DEFAULT_PG_NOTIFY_WINDOW_MS: u64 = 2;

/// What opening a store needs: the URL, the PostgreSQL schema, how
/// PostgreSQL is opened. With clap, `#[command(flatten)]` it into the
/// program's arguments: `--database-url` (`DATABASE_URL`) and the schema
/// (`ESLAB_SCHEMA`) apply to every subcommand; [`PostgresSettings`] has flags
/// of its own, to flatten where they matter.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct StoreSettings {
    /// Where the events live: sqlite://FILE, postgres://…, nats://HOST:PORT[,…] (JetStream), or memory:
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    pub database_url: String,
    /// With a nats:// DATABASE_URL: where the read models, checkpoints,
    /// snapshots and personal-data keys live (sqlite://FILE or postgres://…).
    #[arg(long, env = "ESLAB_SIDE_DATABASE_URL", default_value = DEFAULT_SIDE_DATABASE_URL, global = true)]
    pub side_database_url: String,
    /// The JetStream stream of a nats:// store.
    #[command(flatten)]
    pub nats: NatsSettings,
    /// The PostgreSQL schema of the store (default `eslab`).
    #[arg(long, env = "ESLAB_SCHEMA", global = true, hide = true)]
    pub schema: Option<String>,
    /// How PostgreSQL is opened.
    #[arg(skip)]
    pub postgres: PostgresSettings,
}

impl Default for StoreSettings {
    /// The memory store (nothing kept).
    fn default() -> Self {
        StoreSettings::new("memory:")
    }
}

impl StoreSettings {
    /// The store at `database_url` (`memory:`, `sqlite://FILE`,
    /// `postgres://…`), schema [`DEFAULT_SCHEMA`], default [`PostgresSettings`].
    pub fn new(database_url: impl Into<String>) -> Self {
        StoreSettings {
            database_url: database_url.into(),
            side_database_url: DEFAULT_SIDE_DATABASE_URL.to_owned(),
            nats: NatsSettings::default(),
            schema: None,
            postgres: PostgresSettings::default(),
        }
    }

    /// The PostgreSQL schema: the one set, else [`DEFAULT_SCHEMA`].
    pub fn schema(&self) -> &str {
        self.schema.as_deref().unwrap_or(DEFAULT_SCHEMA)
    }

    /// Opens (creating and migrating it if needed) the store the URL names:
    /// `memory:` (nothing kept), `sqlite:…` (the file and its directory
    /// created), `postgres://…` or `postgresql://…` ([`open_postgres`] with
    /// [`Self::schema`] and [`PostgresSettings`]), or `nats://…` (the events
    /// on JetStream with [`NatsSettings`], the rest in the SQLite or
    /// PostgreSQL store at [`side_database_url`](Self::side_database_url)).
    /// Any other URL is refused before anything is created ([`Error::UnsupportedUrl`]).
    pub async fn open(&self) -> Result<AnyStore, Error> {
        let url = self.database_url.as_str();
        if url.starts_with("nats://") {
            let events = self.nats.open(url).await?;
            let side = StoreSettings { database_url: self.side_database_url.clone(), ..self.clone() };
            return match Box::pin(side.open()).await? {
                AnyStore::Sqlite(side) => Ok(AnyStore::NatsSqlite(OnNats::new(events, side))),
                AnyStore::Postgres(side) => Ok(AnyStore::NatsPostgres(OnNats::new(events, side))),
                _ => Err(Error::UnsupportedSideUrl { url: redact(&self.side_database_url) }),
            };
        }
        if url == "memory:" {
            return Ok(AnyStore::Memory(MemoryStore::new()));
        }
        if url.starts_with("sqlite:") {
            let store = SqliteStore::connect(url).await.map_err(|source| Error::Sqlite { url: redact(url), source })?;
            return Ok(AnyStore::Sqlite(store));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let store = open_postgres(url, self.schema(), |options| self.postgres.apply(options)).await?;
            return Ok(AnyStore::Postgres(store));
        }
        Err(Error::UnsupportedUrl { url: redact(url) })
    }
}

impl From<&str> for StoreSettings {
    /// [`StoreSettings::new`].
    fn from(database_url: &str) -> Self {
        StoreSettings::new(database_url)
    }
}

impl From<String> for StoreSettings {
    /// [`StoreSettings::new`].
    fn from(database_url: String) -> Self {
        StoreSettings::new(database_url)
    }
}

/// The JetStream stream of a `nats://` store: its name and replicas, as flags
/// (`--nats-stream`, `--nats-replicas`) and environment variables.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct NatsSettings {
    /// The JetStream stream of the events (created if missing); its subjects
    /// are `eslab.<name, lowercase>.>` unless it is the default `ESLAB_EVENTS`
    /// (`eslab.events.>`).
    #[arg(long = "nats-stream", env = "ESLAB_NATS_STREAM", default_value = "ESLAB_EVENTS", global = true)]
    pub stream: String,
    /// How many servers hold each event when the stream is created (3 in production).
    #[arg(long = "nats-replicas", env = "ESLAB_NATS_REPLICAS", default_value_t = 3, global = true)]
    pub replicas: usize,
}

impl Default for NatsSettings {
    /// Stream `ESLAB_EVENTS`, three replicas.
    fn default() -> Self {
        NatsSettings { stream: "ESLAB_EVENTS".into(), replicas: 3 }
    }
}

impl NatsSettings {
    /// The store's options for the servers at `url` (`nats://host:port`, comma-separated for several).
    pub fn options(&self, url: &str) -> NatsOptions {
        let options = NatsOptions::new(url).stream(self.stream.clone()).replicas(self.replicas);
        if self.stream == "ESLAB_EVENTS" {
            options
        } else {
            options.subject_prefix(format!("eslab.{}", self.stream.to_lowercase()))
        }
    }

    /// Connects, creating the stream if needed.
    ///
    /// # Errors
    /// [`Error::Nats`] when the cluster does not answer or the stream cannot be made.
    pub async fn open(&self, url: &str) -> Result<NatsStore, Error> {
        NatsStore::connect(self.options(url)).await.map_err(|source| Error::Nats {
            url: redact(url),
            stream: self.stream.clone(),
            source,
        })
    }
}

/// How PostgreSQL is opened: the pool size, group commit and the NOTIFY
/// window, as flags (`--pg-max-connections`, `--pg-group-commit`,
/// `--pg-notify-window-ms`) and environment variables. Appends NOTIFY after
/// their commit, coalesced ([`Notify::AfterCommit`], the store's default): a
/// NOTIFY inside the append's transaction takes PostgreSQL's global
/// notification lock at commit, which serializes every append (the
/// listeners' polling covers a wake-up lost in a crash).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct PostgresSettings {
    /// PostgreSQL pool size.
    #[arg(
        id = "pg_max_connections",
        long = "pg-max-connections",
        value_name = "PG_MAX_CONNECTIONS",
        env = "ESLAB_PG_MAX_CONNECTIONS",
        default_value_t = DEFAULT_PG_MAX_CONNECTIONS
    )]
    pub max_connections: u32,
    /// Commit the appends of concurrent requests together on PostgreSQL
    /// (group commit; each append keeps its own version check).
    #[arg(
        id = "pg_group_commit",
        long = "pg-group-commit",
        value_name = "PG_GROUP_COMMIT",
        env = "ESLAB_PG_GROUP_COMMIT",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub group_commit: bool,
    /// With group commit, how many group statements may be in flight at
    /// once, each on a connection of its own besides the pool
    /// ([`GroupCommitOptions::flushers`]).
    #[arg(
        id = "pg_group_flushers",
        long = "pg-group-flushers",
        value_name = "PG_GROUP_FLUSHERS",
        env = "ESLAB_PG_GROUP_FLUSHERS",
        default_value_t = DEFAULT_GROUP_FLUSHERS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..1024)
    )]
    pub group_flushers: usize,
    /// How long, in milliseconds, appends are gathered before the NOTIFY
    /// that wakes other processes' readers (the wake-up delay it adds is at
    /// most this plus one round trip).
    #[arg(
        id = "pg_notify_window_ms",
        long = "pg-notify-window-ms",
        value_name = "PG_NOTIFY_WINDOW_MS",
        env = "ESLAB_PG_NOTIFY_WINDOW_MS",
        default_value_t = DEFAULT_PG_NOTIFY_WINDOW_MS
    )]
    pub notify_window_ms: u64,
}

impl Default for PostgresSettings {
    /// [`DEFAULT_PG_MAX_CONNECTIONS`] connections, group commit on with
    /// [`DEFAULT_GROUP_FLUSHERS`] flushers, a NOTIFY window of
    /// [`DEFAULT_PG_NOTIFY_WINDOW_MS`].
    fn default() -> Self {
        PostgresSettings {
            max_connections: DEFAULT_PG_MAX_CONNECTIONS,
            group_commit: true,
            group_flushers: DEFAULT_GROUP_FLUSHERS,
            notify_window_ms: DEFAULT_PG_NOTIFY_WINDOW_MS,
        }
    }
}

impl PostgresSettings {
    /// `options` with these settings: the pool size (at least 2), NOTIFY
    /// after commit with the window set, and group commit
    /// ([`GroupCommitOptions`]) when on.
    pub fn apply(&self, options: PostgresOptions) -> PostgresOptions {
        let options = options
            .max_connections(self.max_connections.max(2))
            .notify(Notify::AfterCommit)
            .notify_window(Duration::from_millis(self.notify_window_ms));
        if self.group_commit {
            options.group_commit(GroupCommitOptions::default().flushers(self.group_flushers))
        } else {
            options
        }
    }
}

/// Opens (creating the schema and migrating it if needed) the PostgreSQL
/// store at `url`, schema `schema`, with [`PostgresOptions`] from `tweak`
/// (given the library's defaults). The one way eslab's programs open
/// PostgreSQL: [`StoreSettings::open`] tweaks with [`PostgresSettings`], the
/// lab with each experiment's options.
pub async fn open_postgres(
    url: &str,
    schema: &str,
    tweak: impl FnOnce(PostgresOptions) -> PostgresOptions,
) -> Result<PostgresStore, Error> {
    PostgresStore::connect_with(tweak(PostgresOptions::new(url, schema))).await.map_err(|source| Error::Postgres {
        url: redact(url),
        schema: schema.to_owned(),
        source,
    })
}
