//! # eslab-console
//!
//! The eslab console: a person's view of an event store, in the browser, for
//! any domain. Server-rendered HTML (every value escaped by
//! [maud](https://maud.lambda.xyz)), a small script of its own for the live
//! feed and the buttons, no front-end build and no Node.js.
//!
//! - **Streams:** the categories with their event counts, a category's
//!   streams (keyset-paged, find by id), a stream's events (version, type,
//!   schema version, position, recorded-at, payload and metadata), linked by
//!   correlation and causation id.
//! - **A request's journey:** every event of one correlation id, across
//!   streams, in feed order.
//! - **Live feed:** the feed tailing live through `GET /events/stream`
//!   (Server-Sent Events, see [`sse`]), filtered by category and event type.
//! - **Projections:** checkpoint, lag, lease owner, parked events with their
//!   error, and **retry** / **skip** (through [`Operations`]; they need the API
//!   token when one is configured).
//! - **Time travel:** the state of a registered aggregate at any version.
//! - **Lab:** the latest lab report, its tables and charts.
//!
//! Mount it in a service:
//!
//! ```
//! use eslab_console::Console;
//! use eslab_core::EventStore;
//! use eslab_memory::MemoryStore;
//!
//! let store = EventStore::new(MemoryStore::new());
//! let app: axum::Router = axum::Router::new()
//!     // ... the service's own routes ...
//!     .merge(Console::new(store).router());
//! ```
//!
//! Every page is read-only and needs no token; the actions (`POST`) need
//! `Authorization: Bearer <token>` when [`Console::with_token`] set one.
//! Every response carries a Content-Security-Policy that allows only the
//! console's own script and style. No page shows the store's URL or secrets.

mod lab;
mod pages;
pub mod sse;
mod view;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use eslab_core::{Aggregate, EventStorage, EventStore, Explore, Repository, StreamId, Version, WakeUps};
use eslab_projection::{ParkedEvent, Status};
use futures_util::future::BoxFuture;

/// The Content-Security-Policy of every console response: the console's own
/// script, style and images, nothing inline, nothing from elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// How many `GET /events/stream` responses may be open at once unless
/// [`Console::with_max_streams`] says otherwise (503 beyond).
pub const DEFAULT_MAX_STREAMS: usize = 128;

/// Where [`Console::router`] mounts the pages unless told otherwise.
pub const DEFAULT_BASE: &str = "/console";

/// What the console needs of a store: every eslab store (and [`AnyStore`]
/// of `eslab-runtime`) is one.
///
/// [`AnyStore`]: https://docs.rs/eslab-runtime
pub trait ConsoleStore: EventStorage + Explore + WakeUps + Clone + 'static {}
impl<S: EventStorage + Explore + WakeUps + Clone + 'static> ConsoleStore for S {}

/// The error of an [`Operations`] call, shown to the operator.
pub type OperationError = Box<dyn std::error::Error + Send + Sync>;

/// What the console may do to a service's projections. The application
/// implements it over its own projections (the bank: `eslab`'s
/// `AnyProjections`).
pub trait Operations: Send + Sync {
    /// Every projection's status.
    fn projections(&self) -> BoxFuture<'_, Result<Vec<Status>, OperationError>>;

    /// The parked events (of every projection).
    fn parked(&self) -> BoxFuture<'_, Result<Vec<ParkedEvent>, OperationError>>;

    /// Retries the parked events of `stream` for `projection`; returns how many it applied.
    fn retry<'a>(&'a self, projection: &'a str, stream: &'a StreamId) -> BoxFuture<'a, Result<usize, OperationError>>;

    /// Skips the parked events of `stream` for `projection`; returns how many it dropped.
    fn skip<'a>(&'a self, projection: &'a str, stream: &'a StreamId) -> BoxFuture<'a, Result<usize, OperationError>>;
}

/// The state of one registered aggregate type at a version, as JSON.
trait TimeTravel: Send + Sync {
    /// The category (stream kind) of its streams.
    fn kind(&self) -> &'static str;

    /// The state of stream `id` (the part after the kind) at `version`
    /// (`None`: now), as JSON, and the version it is at.
    fn state_at<'a>(
        &'a self,
        id: &'a str,
        version: Option<Version>,
    ) -> BoxFuture<'a, eslab_core::Result<(serde_json::Value, Version)>>;
}

struct Travel<A: Aggregate, S> {
    repository: Repository<A, S>,
}

impl<A, S> TimeTravel for Travel<A, S>
where
    A: Aggregate + serde::Serialize,
    S: EventStorage + Clone + 'static,
{
    fn kind(&self) -> &'static str {
        A::KIND
    }

    fn state_at<'a>(
        &'a self,
        id: &'a str,
        version: Option<Version>,
    ) -> BoxFuture<'a, eslab_core::Result<(serde_json::Value, Version)>> {
        Box::pin(async move {
            let stream = A::stream_id(id)?;
            let loaded = self.repository.load_until(id, version).await?;
            let state = serde_json::to_value(&loaded.state)
                .map_err(|source| eslab_core::Error::EncodeState { stream, source })?;
            Ok((state, loaded.version))
        })
    }
}

/// The console over a store: build it, then [`router`](Self::router).
pub struct Console<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Console<S> {
    fn clone(&self) -> Self {
        Console { inner: Arc::clone(&self.inner) }
    }
}

struct Inner<S> {
    store: EventStore<S>,
    base: String,
    operations: Option<Arc<dyn Operations>>,
    aggregates: Vec<Arc<dyn TimeTravel>>,
    lab: Option<PathBuf>,
    token: Option<String>,
    title: String,
    /// Open `GET /events/stream` responses (one permit each).
    streams: Arc<tokio::sync::Semaphore>,
    max_streams: usize,
    /// The wake-ups every open stream shares.
    wake_ups: sse::SharedWakeUps,
}

impl<S> std::fmt::Debug for Console<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("base", &self.inner.base)
            .field("aggregates", &self.inner.aggregates.iter().map(|a| a.kind()).collect::<Vec<_>>())
            .field("lab", &self.inner.lab)
            .field("token", &self.inner.token.as_ref().map(|_| "(set)"))
            .finish_non_exhaustive()
    }
}

impl<S: ConsoleStore> Console<S> {
    /// A console over `store` (with its upcasters and personal keys), at
    /// [`DEFAULT_BASE`], without operations, aggregates, lab report or token.
    pub fn new(store: EventStore<S>) -> Self {
        Console {
            inner: Arc::new(Inner {
                store,
                base: DEFAULT_BASE.to_owned(),
                operations: None,
                aggregates: Vec::new(),
                lab: None,
                token: None,
                title: "eslab console".to_owned(),
                streams: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_STREAMS)),
                max_streams: DEFAULT_MAX_STREAMS,
                wake_ups: sse::SharedWakeUps::default(),
            }),
        }
    }

    fn edit(mut self, change: impl FnOnce(&mut Inner<S>)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => change(inner),
            None => tracing::warn!("the console was changed after it was shared; ignored"),
        }
        self
    }

    /// Mounts the pages under `base` (e.g. `/ops/console`); `/` is not allowed.
    #[must_use]
    pub fn at(self, base: &str) -> Self {
        let base = base.trim_end_matches('/').to_owned();
        if base.is_empty() || !base.starts_with('/') {
            tracing::warn!(base, "a console base must be a path below `/`; keeping {DEFAULT_BASE}");
            return self;
        }
        self.edit(|inner| inner.base = base)
    }

    /// The projections page's data and actions.
    #[must_use]
    pub fn with_operations(self, operations: impl Operations + 'static) -> Self {
        self.edit(|inner| inner.operations = Some(Arc::new(operations)))
    }

    /// Time travel for aggregate `A`: its streams get a "state at this
    /// version" view, loaded through a [`Repository`] on the console's store.
    #[must_use]
    pub fn with_aggregate<A: Aggregate + serde::Serialize>(self) -> Self {
        self.edit(|inner| {
            let repository = Repository::<A, S>::new(inner.store.clone());
            inner.aggregates.push(Arc::new(Travel { repository }));
        })
    }

    /// The lab report to show: the directory `eslab lab run --out` wrote
    /// (its `index.md`, the experiments' pages and charts).
    #[must_use]
    pub fn with_lab_report(self, dir: impl Into<PathBuf>) -> Self {
        self.edit(|inner| inner.lab = Some(dir.into()))
    }

    /// Actions (retry, skip) need `Authorization: Bearer <token>`. A blank
    /// token is no token.
    #[must_use]
    pub fn with_token(self, token: Option<String>) -> Self {
        self.edit(|inner| inner.token = token.filter(|t| !t.trim().is_empty()))
    }

    /// At most `max` `GET /events/stream` responses open at once (default
    /// [`DEFAULT_MAX_STREAMS`]); more are answered 503 with `Retry-After`.
    #[must_use]
    pub fn with_max_streams(self, max: usize) -> Self {
        self.edit(|inner| {
            inner.streams = Arc::new(tokio::sync::Semaphore::new(max));
            inner.max_streams = max;
        })
    }

    /// The name in every page's title (default "eslab console").
    #[must_use]
    pub fn titled(self, title: impl Into<String>) -> Self {
        let title = title.into();
        self.edit(|inner| inner.title = title)
    }

    /// The console's routes (at its base) and `GET /events/stream`, each
    /// response with the console's Content-Security-Policy.
    pub fn router(self) -> Router {
        let base = self.inner.base.clone();
        let at = |path: &str| format!("{base}{path}");
        Router::new()
            .route(&base, get(pages::overview::<S>))
            .route(&at("/"), get(pages::overview::<S>))
            .route(&at("/streams"), get(pages::streams::<S>))
            .route(&at("/find"), get(pages::find::<S>))
            .route(&at("/streams/{stream}"), get(pages::stream::<S>))
            .route(&at("/requests/{correlation}"), get(pages::journey::<S>))
            .route(&at("/state/{stream}"), get(pages::state::<S>))
            .route(&at("/live"), get(pages::live::<S>))
            .route(&at("/projections"), get(pages::projections::<S>))
            .route(&at("/projections/{name}/retry"), post(pages::retry::<S>))
            .route(&at("/projections/{name}/skip"), post(pages::skip::<S>))
            .route(&at("/lab"), get(lab::index::<S>))
            .route(&at("/lab/{page}"), get(lab::page::<S>))
            .route(&at("/lab/files/{file}"), get(lab::file::<S>))
            .route(&at("/assets/console.js"), get(view::script))
            .route(&at("/assets/console.css"), get(view::style))
            .route(sse::PATH, get(sse::events_stream::<S>))
            .layer(middleware::from_fn(content_security_policy))
            .with_state(self)
    }

    fn registered(&self, kind: &str) -> Option<&Arc<dyn TimeTravel>> {
        self.inner.aggregates.iter().find(|a| a.kind() == kind)
    }
}

/// Adds the console's security headers to a response.
async fn content_security_policy(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
