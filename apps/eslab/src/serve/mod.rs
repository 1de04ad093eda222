//! `eslab serve`: the bank example as an HTTP service (axum).
//!
//! [`app`] builds the router from an [`AppState`], so tests drive it with
//! `tower::ServiceExt::oneshot` without a socket; [`start`] opens the store,
//! starts the in-process projections (read models and transfer saga), binds
//! and serves until [`Running::stop`] (or a signal, in the binary), then
//! drains in-flight requests and flushes the projections.

pub mod background;
pub mod commands;
pub mod dto;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod idempotency;
pub mod limit;
pub mod read;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use eslab_core::{EventStore, StreamId};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::store::AnyStore;
use background::Tracked;
use error::{ApiError, PROBLEM_JSON, Problem};
use read::ReadModels;

/// The largest request body accepted, in bytes (413 above).
pub const BODY_LIMIT: usize = 64 * 1024;
/// The default address: loopback only.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// Stripes of the in-process per-aggregate command lock.
const LOCK_STRIPES: usize = 256;
/// Aggregate states kept after commands (see [`commands`]).
const STATE_CACHE_ENTRIES: u64 = 10_000;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite://…`, `postgres://…` or `memory:`.
    pub database_url: String,
    /// The PostgreSQL schema (default: `ESLAB_SCHEMA`, else `eslab`).
    pub schema: Option<String>,
    /// Where to listen (`127.0.0.1:8080` by default; port 0 picks a free one).
    pub bind: String,
    /// When set, writes need `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// Longest a request may take (503 after).
    pub request_timeout: Duration,
    /// Attempts of a command whose stream keeps changing under it (409 after).
    pub max_attempts: u32,
    /// PostgreSQL pool size.
    pub pg_max_connections: u32,
    /// Group-commit concurrent single-stream appends on PostgreSQL (default on).
    pub pg_group_commit: bool,
    /// Per-client (peer IP) request rate limit, 429 above it (default: none).
    pub rate_limit: Option<limit::RateLimit>,
    /// How long an `Idempotency-Key` answers retries (default 24 h): an older
    /// key is a new request, and a background job deletes it ([`idempotency`]).
    pub idempotency_retention: Duration,
}

impl Config {
    /// Defaults for `database_url`.
    pub fn new(database_url: impl Into<String>) -> Self {
        Config {
            database_url: database_url.into(),
            schema: None,
            bind: DEFAULT_BIND.to_owned(),
            api_token: None,
            request_timeout: Duration::from_secs(10),
            max_attempts: 10,
            pg_max_connections: 32,
            pg_group_commit: true,
            rate_limit: None,
            idempotency_retention: idempotency::DEFAULT_RETENTION,
        }
    }
}

struct Inner {
    events: EventStore<AnyStore>,
    views: ReadModels,
    tracked: Vec<Arc<dyn Tracked>>,
    token: Option<String>,
    locks: Vec<tokio::sync::Mutex<()>>,
    metrics: Option<PrometheusHandle>,
    appended: watch::Sender<()>,
    max_attempts: u32,
    request_timeout: Duration,
    states: moka::sync::Cache<StreamId, Arc<dyn std::any::Any + Send + Sync>>,
    limiter: Option<limit::Limiter>,
    idempotency_retention: Duration,
}

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("views", &self.inner.views).finish_non_exhaustive()
    }
}

/// The process-wide Prometheus recorder (a recorder can be installed once per process).
fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(error) => {
                tracing::warn!(%error, "cannot install the Prometheus recorder; /metrics will be empty");
                None
            }
        })
        .clone()
}

impl AppState {
    /// State over `store` (with the bank's upcasters) and its read models.
    pub fn new(store: AnyStore, views: ReadModels, tracked: Vec<Arc<dyn Tracked>>, config: &Config) -> Self {
        let events = EventStore::new(store).with_upcasters(eslab_bank::upcasters());
        AppState {
            inner: Arc::new(Inner {
                events,
                views,
                tracked,
                token: config.api_token.clone().filter(|t| !t.is_empty()),
                locks: (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                metrics: prometheus(),
                appended: watch::channel(()).0,
                max_attempts: config.max_attempts,
                request_timeout: config.request_timeout,
                states: moka::sync::Cache::new(STATE_CACHE_ENTRIES),
                limiter: config.rate_limit.map(limit::Limiter::new),
                idempotency_retention: config.idempotency_retention,
            }),
        }
    }

    /// The event store (upcasting).
    pub fn events(&self) -> &EventStore<AnyStore> {
        &self.inner.events
    }

    /// The read models.
    pub fn views(&self) -> &ReadModels {
        &self.inner.views
    }

    /// The in-process projections.
    pub fn tracked(&self) -> &[Arc<dyn Tracked>] {
        &self.inner.tracked
    }

    fn max_attempts(&self) -> u32 {
        self.inner.max_attempts
    }

    /// Serializes commands on one aggregate within this process.
    async fn lock(&self, stream: &StreamId) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = commands::stripe(stream, self.inner.locks.len());
        match self.inner.locks.get(stripe) {
            Some(lock) => lock.lock().await,
            // `stripe` is always in range; this keeps the code panic-free anyway.
            None => self.inner.locks[0].lock().await,
        }
    }

    /// The state a command of this process left on `stream`, if still cached.
    fn cached<A: eslab_core::Aggregate>(&self, stream: &StreamId) -> Option<eslab_core::Loaded<A>> {
        let entry = self.inner.states.get(stream)?;
        entry.downcast_ref::<eslab_core::Loaded<A>>().cloned()
    }

    fn cache<A: eslab_core::Aggregate>(&self, stream: &StreamId, loaded: eslab_core::Loaded<A>) {
        self.inner.states.insert(stream.clone(), Arc::new(loaded));
    }

    fn forget(&self, stream: &StreamId) {
        self.inner.states.invalidate(stream);
    }

    /// Signals in-process readers that something was appended.
    fn appended(&self) {
        self.inner.appended.send_replace(());
    }

    /// The after-append signal (wakes the projections on the memory store).
    pub fn append_signal(&self) -> &watch::Sender<()> {
        &self.inner.appended
    }

    fn render_metrics(&self) -> String {
        self.inner.metrics.as_ref().map(PrometheusHandle::render).unwrap_or_default()
    }
}

/// The OpenAPI document, generated from the handlers' annotations and types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "eslab account service",
        description = "The bank example of eslab over HTTP: accounts, transfers, their events."
    ),
    paths(
        handlers::open_account,
        handlers::list_accounts,
        handlers::get_account,
        handlers::deposit,
        handlers::withdraw,
        handlers::close,
        handlers::account_events,
        handlers::account_state,
        handlers::request_transfer,
        handlers::get_transfer,
        handlers::health,
        handlers::ready,
        handlers::metrics_text,
        handlers::openapi
    ),
    components(schemas(Problem))
)]
struct ApiDoc;

/// The OpenAPI document served at `/openapi.json`.
pub fn api_doc() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The service's router over `state`.
pub fn app(state: AppState) -> Router {
    let timeout = state.inner.request_timeout;
    Router::new()
        .route("/accounts", post(handlers::open_account).get(handlers::list_accounts))
        .route("/accounts/{id}", get(handlers::get_account))
        .route("/accounts/{id}/deposits", post(handlers::deposit))
        .route("/accounts/{id}/withdrawals", post(handlers::withdraw))
        .route("/accounts/{id}/close", post(handlers::close))
        .route("/accounts/{id}/events", get(handlers::account_events))
        .route("/accounts/{id}/state", get(handlers::account_state))
        .route("/transfers", post(handlers::request_transfer))
        .route("/transfers/{id}", get(handlers::get_transfer))
        .route("/health", get(handlers::health))
        .route("/ready", get(handlers::ready))
        .route("/metrics", get(handlers::metrics_text))
        .route("/openapi.json", get(handlers::openapi))
        .fallback(handlers::not_found)
        .layer(middleware::from_fn(reject_oversized))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), limit::rate_limit))
        .layer(middleware::from_fn(record_metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
        // Outermost first: request id, then the trace span that carries it
        // (so every log line of the request has it), then errors without a
        // body become problems, then the timeout.
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id)
                }))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(middleware::from_fn(problem_fallback))
                .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout)),
        )
}

/// Writes need the bearer token when one is configured (constant-time compare).
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let read_only = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let (Some(token), false) = (&state.inner.token, read_only) {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            let mut response = ApiError::Unauthorized.into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

/// A body announced larger than the limit is refused before it is read (a
/// client that sent `Expect: 100-continue` then never sends it). Bodies
/// without a length are cut at the limit while read ([`DefaultBodyLimit`]).
async fn reject_oversized(request: Request, next: Next) -> Response {
    let announced =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > u64::try_from(BODY_LIMIT).unwrap_or(u64::MAX)) {
        return ApiError::PayloadTooLarge(BODY_LIMIT).into_response();
    }
    next.run(request).await
}

/// Request count and latency per route and status.
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Error responses made by layers (timeout, 405) get a problem body too.
async fn problem_fallback(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status.as_u16() < 400 || response.headers().contains_key(header::CONTENT_TYPE) {
        return response;
    }
    let detail = match status {
        StatusCode::SERVICE_UNAVAILABLE => "the request took too long; try again",
        StatusCode::METHOD_NOT_ALLOWED => "this endpoint does not take this method",
        _ => "the request failed",
    };
    let problem = Problem {
        kind: format!("urn:eslab:problem:{}", status.as_u16()),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: detail.to_owned(),
        rule: None,
    };
    let mut replaced = error::problem_response(&problem);
    for (name, value) in response.headers() {
        if name != header::CONTENT_LENGTH {
            replaced.headers_mut().insert(name.clone(), value.clone());
        }
    }
    replaced.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    replaced
}

/// Opens the store named by `config`. PostgreSQL gets the schema
/// `config.schema` (else `ESLAB_SCHEMA`, else `eslab`), a pool of
/// `config.pg_max_connections`, and NOTIFY after commit: a NOTIFY inside the
/// append's transaction takes PostgreSQL's global notification lock at
/// commit, which serializes every append of the service (the projections'
/// polling covers a wake-up lost in a crash). With `config.pg_group_commit`
/// the deposits and withdrawals of concurrent requests are committed
/// together (`eslab_postgres::GroupCommitOptions`), each still checked
/// against its own expected version.
pub async fn open_store(config: &Config) -> anyhow::Result<AnyStore> {
    let url = &config.database_url;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let schema =
            config.schema.clone().or_else(|| std::env::var("ESLAB_SCHEMA").ok()).unwrap_or_else(|| "eslab".to_owned());
        let options = eslab_postgres::PostgresOptions::new(url.as_str(), schema.as_str())
            .max_connections(config.pg_max_connections.max(2))
            .notify(eslab_postgres::Notify::AfterCommit);
        let options = if config.pg_group_commit {
            options.group_commit(eslab_postgres::GroupCommitOptions::default())
        } else {
            options
        };
        let store = eslab_postgres::PostgresStore::connect_with(options).await.map_err(|e| {
            anyhow::anyhow!("connecting to PostgreSQL (schema {schema}) at {}: {e}", crate::store::redact(url))
        })?;
        return Ok(AnyStore::Postgres(store));
    }
    AnyStore::open(url).await
}

/// A running service.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (store, read models), for tests and tools.
    pub state: AppState,
    stop_http: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    prepared: Prepared,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("addr", &self.addr).finish_non_exhaustive()
    }
}

/// Opens the store, starts the projections, binds `config.bind` and serves.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let store = open_store(&config).await?;
    start_with(store, config).await
}

/// The state and the running projections, before any socket: what [`app`]
/// needs (tests drive it with `oneshot`).
pub struct Prepared {
    /// The handlers' state.
    pub state: AppState,
    /// Setting it to `true` stops the projections (they flush first).
    pub stop_projections: watch::Sender<bool>,
    /// The projections' tasks.
    pub projections: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("state", &self.state).finish_non_exhaustive()
    }
}

impl Prepared {
    /// Stops the projections after they flushed what was committed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop_projections.send_replace(true);
        for task in self.projections {
            task.await?;
        }
        Ok(())
    }
}

/// Starts the projections over `store` and builds the state.
pub async fn prepare(store: AnyStore, config: &Config) -> anyhow::Result<Prepared> {
    let (stop_projections, projections_stopped) = watch::channel(false);
    let events = EventStore::new(store.clone()).with_upcasters(eslab_bank::upcasters());
    let signal = watch::channel(()).0;
    let sqlite_url = config.database_url.starts_with("sqlite:").then_some(config.database_url.as_str());
    let started = background::start(&store, &events, sqlite_url, &signal, &projections_stopped).await?;
    let state = AppState::new(store, started.views, started.tracked, config);
    idempotency::spawn_compaction(state.clone(), projections_stopped.clone());
    // The memory store has no commit signal: forward the service's own.
    let mut appended = state.append_signal().subscribe();
    tokio::spawn(async move {
        while appended.changed().await.is_ok() {
            signal.send_replace(());
        }
    });
    Ok(Prepared { state, stop_projections, projections: started.tasks })
}

/// [`start`] over an opened store.
pub async fn start_with(store: AnyStore, config: Config) -> anyhow::Result<Running> {
    let prepared = prepare(store, &config).await?;
    let listener = tokio::net::TcpListener::bind(&config.bind).await?;
    let addr = listener.local_addr()?;
    let (stop_http, mut http_stopped) = watch::channel(false);
    let router = app(prepared.state.clone());
    let server = tokio::spawn(async move {
        // The peer's address is the rate limit's key.
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = http_stopped.wait_for(|stop| *stop).await;
            })
            .await
    });
    Ok(Running { addr, state: prepared.state.clone(), stop_http, server, prepared })
}

impl Running {
    /// Graceful shutdown: stop accepting, let in-flight requests finish, then
    /// stop the projections, which flush what was committed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop_http.send_replace(true);
        self.server.await??;
        self.prepared.stop().await
    }
}
