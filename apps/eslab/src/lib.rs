//! The library half of the `eslab` binary: the pieces its subcommands share
//! and its integration tests drive without a process (the HTTP service, the
//! projection commands, and with the `kafka` feature the Kafka relay and
//! worker). The store chosen by `DATABASE_URL` and the rest of the process's
//! wiring are the crate `eslab-runtime`; the lab is the crate `eslab-lab`.

pub mod projections;
pub mod rebuild;
#[cfg(feature = "kafka")]
pub mod relay;
pub mod serve;
#[cfg(feature = "kafka")]
pub mod worker;
