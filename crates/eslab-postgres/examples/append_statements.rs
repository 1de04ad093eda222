//! Prints the store's one-event append statements and the lab's raw baseline
//! as JSON, for `scripts/bench-append-instructions.sh`.
//!
//! `cargo run -q -p eslab-postgres --example append_statements`

use eslab_postgres::statements::{ONE_EVENT, ONE_EVENT_PARAMS, RAW_INSERT};
use serde_json::json;

fn main() -> Result<(), serde_json::Error> {
    let statements: Vec<_> =
        ONE_EVENT.iter().map(|s| json!({ "name": s.name, "kind": s.kind, "sql": s.sql })).collect();
    let out = json!({ "raw": RAW_INSERT, "params": ONE_EVENT_PARAMS, "statements": statements });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
