//! Integration tests of `eslab serve`: the service on a real socket (port 0)
//! against a fresh SQLite file and a fresh PostgreSQL schema, plus the router
//! driven without a socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod api;
mod bad_input;
mod concurrency;
mod limits;
mod retries;
mod router;
