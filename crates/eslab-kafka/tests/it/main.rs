//! eslab-kafka against the real broker (`make services`) and the real
//! PostgreSQL: each test has its own schema, topic prefix and consumer group.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs, unreachable_pub)]

mod helpers;
mod pipeline;
