//! The one place an eslab process is wired: what every program built on
//! eslab does the same way before its own work starts, whatever its domain
//! (the bank of `apps/eslab` is one user, not the only one).
//!
//! - [`StoreSettings`]: the store's configuration, one type for the command
//!   line, the environment and code: `DATABASE_URL` (`memory:`,
//!   `sqlite://FILE`, `postgres://…`, `nats://…` with the read models in
//!   `ESLAB_SIDE_DATABASE_URL`), `ESLAB_SCHEMA`, the PostgreSQL pool size and
//!   group commit ([`PostgresSettings`]) and the JetStream stream
//!   ([`NatsSettings`]). With clap, flatten it into the program's arguments.
//! - [`StoreSettings::open`]: the store the URL names, as an [`AnyStore`] that
//!   forwards the store traits (events, snapshots, checkpoints, retention,
//!   wake-ups), so repositories, feeds and projections run on whichever was
//!   chosen. PostgreSQL is opened one way, [`open_postgres`].
//! - [`Store`] and [`StoreVisitor`]: code that needs the concrete store (its
//!   projection backends, its read pool) is written once, generic over
//!   [`Store`], and [`AnyStore::visit`] runs it on the store that was opened.
//!   That is the only place the three stores are told apart.
//! - [`events`]: the store's own commands, for any program to mount as a
//!   subcommand: its events as JSON lines (one stream, the feed, followed
//!   live, and the import of such lines).
//! - [`shutdown_signal`]: Ctrl-C or SIGTERM, for a graceful stop.
//!
//! ```
//! use eslab_runtime::{Store, StoreSettings, StoreVisitor};
//!
//! /// Runs on whichever store was opened: here, says which.
//! struct Describe;
//!
//! impl<S: Store> StoreVisitor<S> for Describe {
//!     type Output = &'static str;
//!
//!     async fn visit(self, _store: S) -> &'static str {
//!         S::DESCRIPTION
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), eslab_runtime::Error> {
//! let store = StoreSettings::new("memory:").open().await?;
//! assert_eq!(store.visit(Describe).await, "in memory (nothing is kept)");
//! # Ok(())
//! # }
//! ```

mod error;
pub mod events;
mod nats;
mod settings;
mod signal;
mod store;
mod wiring;

pub use error::Error;
pub use nats::OnNats;
pub use settings::{
    DEFAULT_DATABASE_URL, DEFAULT_PG_MAX_CONNECTIONS, DEFAULT_PG_NOTIFY_WINDOW_MS, DEFAULT_SCHEMA,
    DEFAULT_SIDE_DATABASE_URL, NatsSettings, PostgresSettings, StoreSettings, open_postgres,
};
pub use signal::shutdown_signal;
pub use store::{AnyStore, redact};
pub use wiring::{Backends, Store, StoreVisitor, StoreWakeUps};
