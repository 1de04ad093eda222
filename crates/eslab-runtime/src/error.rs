//! Why a store could not be opened or wired.

/// Why a store could not be opened, or a program cannot run on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL names no store this crate opens (nothing was created).
    #[error(
        "unsupported DATABASE_URL {url}: use sqlite://<file>, postgres://… (or postgresql://…), nats://… (events on \
         JetStream, read models in ESLAB_SIDE_DATABASE_URL), or memory: (nothing kept)"
    )]
    UnsupportedUrl {
        /// The URL, secrets masked.
        url: String,
    },
    /// The SQLite file could not be opened or migrated.
    #[error("opening SQLite at {url}")]
    Sqlite {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: eslab_sqlite::SqliteError,
    },
    /// PostgreSQL could not be reached, or its schema not created or migrated.
    #[error("connecting to PostgreSQL (schema {schema}) at {url}; is it running?")]
    Postgres {
        /// The URL, secrets masked.
        url: String,
        /// The schema.
        schema: String,
        /// Why.
        #[source]
        source: eslab_core::Error,
    },
    /// The JetStream cluster could not be reached, or its stream not made.
    #[error("connecting to NATS JetStream at {url} (stream {stream}); is it running?")]
    Nats {
        /// The URL.
        url: String,
        /// The JetStream stream.
        stream: String,
        /// Why.
        #[source]
        source: eslab_core::Error,
    },
    /// The side database of a JetStream store must hold read models: SQLite or PostgreSQL.
    #[error("ESLAB_SIDE_DATABASE_URL {url} must be sqlite://… or postgres://… (the read models of a nats:// store)")]
    UnsupportedSideUrl {
        /// The URL, secrets masked.
        url: String,
    },
    /// The projections' own tables (checkpoints, leases, parked events)
    /// could not be created.
    #[error("creating the projections' tables")]
    Projection(#[from] eslab_projection::Error),
    /// A connection of its own (see [`Backends::appending`](crate::Backends::appending)) could not be opened.
    #[error("opening a connection for a projection that appends")]
    Connection(#[source] sqlx::Error),
    /// The work needs what outlives the process, and the store is in memory
    /// ([`AnyStore::visit_durable`](crate::AnyStore::visit_durable)).
    #[error("the memory store keeps nothing between runs: set DATABASE_URL to postgres://… or sqlite://…")]
    NotDurable,
}
