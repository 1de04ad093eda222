//! The library half of the `eslab` binary: the pieces its subcommands share
//! and its integration tests drive without a process (the store chosen by
//! `DATABASE_URL`, and, as they arrive, the HTTP service, the relay, the
//! worker and the lab).

pub mod relay;
pub mod store;
pub mod worker;
