//! # eslab-http
//!
//! HTTP plumbing that any service built on eslab needs, whatever its domain:
//! [`server::serve`] runs an axum [`Router`](axum::Router) on HTTP/1.1 with
//! the limits a service exposed to untrusted clients needs (axum's own
//! `serve` sets none of them); [`limit::Limiter`] keeps a per-client request
//! rate; [`auth::bearer_matches`] checks a bearer token. `eslab serve` (the
//! bank service) and the console use them.

pub mod auth;
pub mod limit;
pub mod server;
