//! # eslab-testing
//!
//! What eslab's own tests use, published for yours:
//! - [`Scenario`]: given/when/then tests for aggregates;
//! - [`conformance`] and [`store_conformance_tests!`]: the suite every event
//!   store must pass, instantiated unchanged for memory, SQLite and Postgres;
//! - [`boundary`] and [`boundary_conformance_tests!`]: the concurrency kit of
//!   dynamic consistency boundaries (racers, a serializability property);
//! - [`personal`] and [`personal_conformance_tests!`]: crypto-shredding of
//!   personal data on a store's own key store (sealed at rest, opened on
//!   read, forgotten for good);
//! - [`repository`] and [`repository_conformance_tests!`]: snapshots, the
//!   state cache and upcasting through the `Repository`, on any store that
//!   keeps events and snapshots;
//! - [`repository::Tally`] (with [`repository::tally_upcasters`]): the small
//!   test domain, for generic crates' tests and benches that need an aggregate
//!   (they do not depend on the example bank);
//! - [`strategies`]: proptest strategies for events and command sequences;
//! - [`send`]: compile-time checks that a store's futures are `Send`;
//! - [`forward`] and [`forward_store!`]: store wrappers that change one method
//!   and forward the rest;
//! - `pg` (feature `postgres`): a fresh PostgreSQL schema per test.
//!
//! This crate is for tests: its assertions panic with a message on failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod boundary;
pub mod conformance;
pub mod explore;
pub mod forward;
pub mod logs;
#[cfg(feature = "nats")]
pub mod nats;
pub mod personal;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod repository;
mod scenario;
pub mod send;
pub mod strategies;

pub use scenario::Scenario;

/// For the exported macros: they name the store traits and types through it.
#[doc(hidden)]
pub use eslab_core as __eslab_core;
/// For the exported macros (`OffsetDateTime` in `StreamRetention`).
#[doc(hidden)]
pub use time as __time;
/// For the exported macros (`Uuid` in `Explore`).
#[doc(hidden)]
pub use uuid as __uuid;

/// Runs a future to completion on a fresh multi-threaded Tokio runtime (used
/// by [`store_conformance_tests!`] so that callers need no Tokio macros).
///
/// # Panics
/// If the runtime cannot be built.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("build a tokio runtime")
        .block_on(future)
}
