//! The library half of the `eslab` binary: the pieces its subcommands share
//! and its integration tests drive without a process (the store chosen by
//! `DATABASE_URL`, the HTTP service, the projection commands, the Kafka relay
//! and worker, and the lab).

pub mod lab;
pub mod projections;
pub mod rebuild;
pub mod relay;
pub mod serve;
pub mod store;
pub mod worker;
