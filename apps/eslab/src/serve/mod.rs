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
pub mod ready;
/// The hardened HTTP/1.1 server loop (from the library crate `eslab-http`).
pub use eslab_http::server;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use eslab_bank::{Bank, BankOptions};
use eslab_core::EventStore;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::path::HttpMethod;

use background::Tracked;
use error::{ApiError, PROBLEM_JSON, Problem};
use eslab_runtime::{AnyStore, StoreSettings};
use read::ReadModels;

/// The largest request body accepted, in bytes (413 above).
pub const BODY_LIMIT: usize = 64 * 1024;
/// The default address: loopback only.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// The default [`Config::projection_linger`], in milliseconds (`--projection-linger-ms`).
pub const DEFAULT_PROJECTION_LINGER_MS: u64 = 5;
/// The default [`Config::projection_linger`].
pub const DEFAULT_PROJECTION_LINGER: Duration = Duration::from_millis(DEFAULT_PROJECTION_LINGER_MS);
/// Stripes of the in-process per-aggregate command lock.
const LOCK_STRIPES: usize = 256;
/// Aggregate states kept after commands, per aggregate type (see [`commands`]).
const STATE_CACHE_ENTRIES: u64 = 10_000;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The store: its URL, PostgreSQL schema, pool size and group commit.
    pub store: StoreSettings,
    /// Where to listen (`127.0.0.1:8080` by default; port 0 picks a free one).
    pub bind: String,
    /// When set, writes need `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// Longest a request may take (503 after).
    pub request_timeout: Duration,
    /// Attempts of a command whose stream keeps changing under it (409 after).
    pub max_attempts: u32,
    /// Per-client (peer IP) request rate limit, 429 above it (default: none).
    pub rate_limit: Option<limit::RateLimit>,
    /// Serve writes without a token on an address other than loopback. Without
    /// a token, loopback-only services accept writes from anyone on the machine;
    /// anywhere else that has to be asked for explicitly (see [`Config::check`]).
    pub no_auth: bool,
    /// Header-read (and idle) timeout, write timeout, connection cap.
    pub limits: server::ConnectionLimits,
    /// How long an `Idempotency-Key` answers retries (default 24 h): an older
    /// key is a new request, and a background job deletes it ([`idempotency`]).
    pub idempotency_retention: Duration,
    /// How `POST /transfers` carries out a transfer that does not say
    /// (`"mode"` in its body): the saga (default) or atomically.
    pub transfer_mode: dto::TransferMode,
    /// The lab report the console shows (the directory `eslab lab run --out` wrote).
    pub lab_report: Option<std::path::PathBuf>,
    /// How long the read models and the saga wait after a wake-up for more
    /// appends to read in the same batch ([`eslab_projection::RunnerOptions::linger`];
    /// default [`DEFAULT_PROJECTION_LINGER`]).
    pub projection_linger: Duration,
}

/// A configuration the service refuses to start with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The API token is empty or only whitespace (e.g. `ESLAB_API_TOKEN=` from
    /// an unset shell variable): it would not protect anything.
    #[error(
        "the API token (ESLAB_API_TOKEN / --api-token) is empty or blank; set a real token, or unset it and pass --no-auth to serve without authentication"
    )]
    BlankToken,
    /// The token holds characters a client cannot send in a header.
    #[error("the API token must be visible ASCII without spaces (it is sent as `Authorization: Bearer <token>`)")]
    UnsendableToken,
    /// A token and `no_auth` at once.
    #[error("both an API token and --no-auth were given; choose one")]
    TokenAndNoAuth,
    /// No token on an address reachable from other machines, without `no_auth`.
    #[error(
        "no API token on {bind}, which other machines can reach: set ESLAB_API_TOKEN, or pass --no-auth (ESLAB_NO_AUTH=true) to accept writes from anyone"
    )]
    NoAuthOnOpenAddress {
        /// The address.
        bind: String,
    },
}

/// How writes are authorized, as [`Config::check`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Writes need `Authorization: Bearer <token>`.
    Token,
    /// Writes are open (no token; loopback only, or `no_auth`).
    Off,
}

impl AuthMode {
    /// One line for the start-up message.
    pub fn describe(self) -> &'static str {
        match self {
            AuthMode::Token => "auth: writes need `Authorization: Bearer <token>`",
            AuthMode::Off => "auth: OFF (no ESLAB_API_TOKEN): anyone who can reach this address can write",
        }
    }
}

/// Whether `bind` (`host:port`) only listens on loopback.
fn is_loopback(bind: &str) -> bool {
    let host = bind.rsplit_once(':').map_or(bind, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Config {
    /// Defaults for `store` (a [`StoreSettings`], or a database URL).
    pub fn new(store: impl Into<StoreSettings>) -> Self {
        Config {
            store: store.into(),
            bind: DEFAULT_BIND.to_owned(),
            api_token: None,
            request_timeout: Duration::from_secs(10),
            max_attempts: 10,
            rate_limit: None,
            no_auth: false,
            limits: server::ConnectionLimits::default(),
            idempotency_retention: idempotency::DEFAULT_RETENTION,
            transfer_mode: dto::TransferMode::Saga,
            lab_report: None,
            projection_linger: DEFAULT_PROJECTION_LINGER,
        }
    }

    /// The bank's application services over `store` as this configuration
    /// runs them (retries, cache, stream locks, idempotency retention).
    pub fn bank(&self, store: AnyStore) -> Bank<AnyStore> {
        let events = EventStore::new(store).with_upcasters(eslab_bank::upcasters());
        let options = BankOptions {
            retry: eslab_core::RetryPolicy::attempts(self.max_attempts),
            cache_entries: STATE_CACHE_ENTRIES,
            lock_stripes: LOCK_STRIPES,
            idempotency_retention: self.idempotency_retention,
        };
        Bank::new(events, &options)
    }

    /// Refuses the configurations that would silently weaken the service: a
    /// blank token, or no token on an address other machines can reach
    /// without `no_auth`. Says how writes are authorized otherwise.
    pub fn check(&self) -> Result<AuthMode, ConfigError> {
        match (&self.api_token, self.no_auth) {
            (Some(token), _) if token.trim().is_empty() => Err(ConfigError::BlankToken),
            (Some(token), _) if !token.bytes().all(|b| b.is_ascii_graphic()) => Err(ConfigError::UnsendableToken),
            (Some(_), true) => Err(ConfigError::TokenAndNoAuth),
            (Some(_), false) => Ok(AuthMode::Token),
            (None, true) => Ok(AuthMode::Off),
            (None, false) if is_loopback(&self.bind) => Ok(AuthMode::Off),
            (None, false) => Err(ConfigError::NoAuthOnOpenAddress { bind: self.bind.clone() }),
        }
    }
}

struct Inner {
    bank: Bank<AnyStore>,
    views: ReadModels,
    tracked: Vec<Arc<dyn Tracked>>,
    token: Option<String>,
    metrics: Option<PrometheusHandle>,
    request_timeout: Duration,
    limiter: Option<limit::Limiter>,
    readiness: ready::Cached,
    transfer_mode: dto::TransferMode,
    console: Option<eslab_console::Console<AnyStore>>,
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
        AppState::with_bank(config.bank(store), views, tracked, config)
    }

    /// State over `bank` (shared with the transfer saga) and its read models.
    pub fn with_bank(bank: Bank<AnyStore>, views: ReadModels, tracked: Vec<Arc<dyn Tracked>>, config: &Config) -> Self {
        AppState {
            inner: Arc::new(Inner {
                bank,
                views,
                tracked,
                // `Config::check` refused blank tokens before anything started.
                token: config.api_token.clone().filter(|t| !t.trim().is_empty()),
                metrics: prometheus(),
                request_timeout: config.request_timeout,
                limiter: config.rate_limit.map(limit::Limiter::new),
                readiness: ready::Cached::default(),
                transfer_mode: config.transfer_mode,
                console: None,
            }),
        }
    }

    /// The state with the console mounted at `/console` (and `GET /events/stream`).
    #[must_use]
    pub fn with_console(mut self, console: eslab_console::Console<AnyStore>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.console = Some(console),
            None => tracing::warn!("the console was added to a state already shared; not mounted"),
        }
        self
    }

    /// The event store (upcasting).
    pub fn events(&self) -> &EventStore<AnyStore> {
        self.inner.bank.store()
    }

    /// The bank's application services (commands through the library's command path).
    pub fn bank(&self) -> &Bank<AnyStore> {
        &self.inner.bank
    }

    /// How a transfer request that does not say is carried out.
    pub fn transfer_mode(&self) -> dto::TransferMode {
        self.inner.transfer_mode
    }

    /// The read models.
    pub fn views(&self) -> &ReadModels {
        &self.inner.views
    }

    /// The in-process projections.
    pub fn tracked(&self) -> &[Arc<dyn Tracked>] {
        &self.inner.tracked
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
        handlers::forget_owner,
        handlers::request_transfer,
        handlers::get_transfer,
        handlers::health,
        ready::ready,
        handlers::metrics_text,
        handlers::openapi
    ),
    components(schemas(Problem))
)]
struct ApiDoc;

/// The OpenAPI document served at `/openapi.json`.
pub fn api_doc() -> Result<serde_json::Value, serde_json::Error> {
    let mut doc = ApiDoc::openapi();
    doc.paths.add_path_operation(eslab_console::sse::PATH, vec![HttpMethod::Get], events_stream_operation());
    let mut doc = serde_json::to_value(doc)?;
    let account = ["get_account", "deposit", "withdraw", "close", "account_events", "account_state", "forget_owner"];
    link_created(&mut doc, "/accounts", &["201"], &account);
    link_created(&mut doc, "/transfers", &["201", "202"], &["get_transfer"]);
    Ok(doc)
}

/// Links each of `statuses` of `POST path` (a response whose body's `id`
/// names what it created) to the operations that take that id as their
/// `{id}`, so that clients, and schemathesis's stateful phase, can follow
/// them (OpenAPI links). Written into the JSON: utoipa 5.5's `Link`
/// serializes its fields in snake case (`operation_id`), which no OpenAPI
/// tool reads.
fn link_created(doc: &mut serde_json::Value, path: &str, statuses: &[&str], operations: &[&str]) {
    let links: serde_json::Map<_, _> = operations
        .iter()
        .map(|op| {
            ((*op).to_owned(), serde_json::json!({ "operationId": op, "parameters": { "id": "$response.body#/id" } }))
        })
        .collect();
    for status in statuses {
        let response = doc
            .pointer_mut(&format!("/paths/{}/post/responses/{status}", path.replace('~', "~0").replace('/', "~1")))
            .and_then(serde_json::Value::as_object_mut);
        if let Some(response) = response {
            response.insert("links".to_owned(), serde_json::Value::Object(links.clone()));
        }
    }
}

/// `GET /events/stream` (served by the console crate) in the OpenAPI document.
fn events_stream_operation() -> utoipa::openapi::path::Operation {
    use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{ContentBuilder, Ref, Required, ResponseBuilder};
    let text = |description: &str| ObjectBuilder::new().schema_type(Type::String).description(Some(description));
    let parameter = |name: &str, place: ParameterIn, description: &str| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(place)
            .required(Required::False)
            .description(Some(description))
            .schema(Some(text(description)))
            .build()
    };
    OperationBuilder::new()
        .tag("events")
        .operation_id(Some("events_stream"))
        .summary(Some("The feed, live, as Server-Sent Events"))
        .description(Some(
            "Every committed event (or one category's), then each new one as it commits: one SSE message per \
             event, `id:` its checkpoint (`transaction:position`), `data:` the recorded event as JSON. Resumes \
             after `Last-Event-ID` (browsers send it when they reconnect), else after `after`; the feed is \
             gap-safe, so a dropped connection loses nothing. A comment every 15 s keeps the connection open.",
        ))
        .parameter(parameter("category", ParameterIn::Query, "only this category's events"))
        .parameter(parameter("type", ParameterIn::Query, "only events of these types (comma-separated, at most 32)"))
        .parameter(parameter("after", ParameterIn::Query, "start after this checkpoint (`transaction:position`)"))
        .parameter(parameter("Last-Event-ID", ParameterIn::Header, "resume after this checkpoint (wins over `after`)"))
        .response(
            "200",
            ResponseBuilder::new()
                .description("an endless stream of events")
                .content("text/event-stream", ContentBuilder::new().schema(Some(text("SSE messages"))).build()),
        )
        .response(
            "400",
            ResponseBuilder::new()
                .description("a bad filter or checkpoint")
                .content(PROBLEM_JSON, ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build()),
        )
        .response(
            "503",
            ResponseBuilder::new()
                .description("as many streams are open as the service serves at once; try again after `Retry-After`")
                .content(PROBLEM_JSON, ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build()),
        )
        .build()
}

/// The service's router over `state`.
pub fn app(state: AppState) -> Router {
    let timeout = state.inner.request_timeout;
    let console = state.inner.console.clone().map(eslab_console::Console::router).unwrap_or_default();
    Router::new()
        .route("/accounts", post(handlers::open_account).get(handlers::list_accounts))
        .route("/accounts/{id}", get(handlers::get_account))
        .route("/accounts/{id}/deposits", post(handlers::deposit))
        .route("/accounts/{id}/withdrawals", post(handlers::withdraw))
        .route("/accounts/{id}/close", post(handlers::close))
        .route("/accounts/{id}/forget", post(handlers::forget_owner))
        .route("/accounts/{id}/events", get(handlers::account_events))
        .route("/accounts/{id}/state", get(handlers::account_state))
        .route("/transfers", post(handlers::request_transfer))
        .route("/transfers/{id}", get(handlers::get_transfer))
        .route("/health", get(handlers::health))
        .route("/ready", get(ready::ready))
        .route("/metrics", get(handlers::metrics_text))
        .route("/openapi.json", get(handlers::openapi))
        .with_state(state.clone())
        .merge(console)
        .fallback(handlers::not_found)
        .layer(middleware::from_fn(reject_oversized))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state, limit::rate_limit))
        .layer(middleware::from_fn(record_metrics))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Outermost first: request id, then the trace span that carries it
        // (so every log line of the request has it), then the headers every
        // response gets, then errors without a body become problems, then the
        // timeout.
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("no-store"),
                ))
                .layer(middleware::from_fn(problem_fallback))
                .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout)),
        )
}

/// The span of a request: at ERROR level, so it is enabled whenever error
/// (and warning) lines are, and those lines carry the request id at the
/// default log level. The method is the bounded label of [`method_label`],
/// the path is cut to 256 bytes: both come from the client.
fn request_span(req: &Request) -> tracing::Span {
    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    let path = req.uri().path();
    let path = path.get(..path.len().min(256)).unwrap_or("(long path)");
    tracing::error_span!("request", method = method_label(req.method()), path, request_id)
}

/// The method as a label from a fixed set: the standard methods, else
/// `other` (a client can send any token as a method; metrics and logs must
/// not grow with them).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Writes need the bearer token when one is configured (constant-time compare).
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let read_only = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let (Some(token), false) = (&state.inner.token, read_only)
        && !eslab_http::auth::bearer_matches(request.headers(), token)
    {
        let mut response = ApiError::Unauthorized.into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
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

/// Request count and latency per route and status. Every label comes from a
/// bounded set: the method's [`method_label`], the matched route template
/// (`unmatched` for any other path), the status code.
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
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
    let store = config.store.open().await?;
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
    let bank = config.bank(store.clone());
    let started = background::start(&store, &bank, &projections_stopped, config.projection_linger).await?;
    let console = console(&store, bank.store().clone(), config.api_token.clone(), config.lab_report.as_deref()).await?;
    let state = AppState::with_bank(bank, started.views, started.tracked, config).with_console(console);
    idempotency::spawn_compaction(state.clone(), projections_stopped.clone());
    Ok(Prepared { state, stop_projections, projections: started.tasks })
}

/// The console over the bank's store: time travel for accounts and
/// transfers, the bank's projections, `token` for its actions, the lab
/// report in `lab_report`.
pub async fn console(
    store: &AnyStore,
    events: EventStore<AnyStore>,
    token: Option<String>,
    lab_report: Option<&std::path::Path>,
) -> anyhow::Result<eslab_console::Console<AnyStore>> {
    let projections = crate::projections::AnyProjections::open(store).await?;
    let console = eslab_console::Console::new(events)
        .titled("eslab bank console")
        .with_aggregate::<eslab_bank::Account>()
        .with_aggregate::<eslab_bank::Transfer>()
        .with_operations(projections)
        .with_token(token);
    Ok(match lab_report {
        Some(dir) => console.with_lab_report(dir),
        None => console,
    })
}

/// [`start`] over an opened store. Refuses a configuration [`Config::check`] refuses.
pub async fn start_with(store: AnyStore, config: Config) -> anyhow::Result<Running> {
    config.check()?;
    let prepared = prepare(store, &config).await?;
    let listener = tokio::net::TcpListener::bind(&config.bind).await?;
    let addr = listener.local_addr()?;
    let (stop_http, http_stopped) = watch::channel(false);
    let router = app(prepared.state.clone());
    let limits = server::ConnectionLimits {
        max_connections: server::fit_to_file_limit(config.limits.max_connections),
        ..config.limits
    };
    let server = tokio::spawn(server::serve(listener, router, limits, http_stopped));
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
