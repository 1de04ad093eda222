//! The library half of the `eslab` binary: the pieces its subcommands share
//! and its integration tests drive without a process (the store chosen by
//! `DATABASE_URL`, the HTTP service, the projection commands, and with the
//! `kafka` feature the Kafka relay and worker). The lab is the crate `eslab-lab`.

pub mod projections;
pub mod rebuild;
#[cfg(feature = "kafka")]
pub mod relay;
pub mod serve;
pub mod signal;
pub mod store;
#[cfg(feature = "kafka")]
pub mod worker;
