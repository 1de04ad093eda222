//! Load latency benches (placeholder; filled in next).
fn main() {}
