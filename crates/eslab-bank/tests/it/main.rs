//! Tests of the bank domain: every rule as a scenario, properties, schema evolution.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod atomic;
#[cfg(feature = "postgres")]
mod forget;
mod helpers;
mod process;
mod properties;
mod scenarios;
mod schema;
#[cfg(all(feature = "postgres", feature = "sqlite"))]
mod sql_views;
mod transfers;
