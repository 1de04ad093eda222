//! Integration tests of the eslab binary's library: `eslab serve` on a real
//! socket (port 0) against a fresh SQLite file and a fresh PostgreSQL schema,
//! the router driven without a socket, and the projection commands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod abuse;
mod api;
mod atomic;
mod bad_input;
mod compose;
mod concurrency;
mod console;
mod crash;
#[cfg(feature = "kafka")]
mod forget;
mod limits;
mod openapi;
mod outage;
mod projections;
mod retries;
mod router;
