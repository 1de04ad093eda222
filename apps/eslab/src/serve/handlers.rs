//! The endpoints. Each write parses and validates its body at the edge
//! (money and currencies through eslab-bank's newtypes), then goes through
//! the bank's application services ([`eslab_bank::Bank`], answered by [`commands::respond`]); each read says which side it reads (read model or
//! event store).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eslab_bank::{
    Account, AccountCommand, Amount, AtomicTransfer, AtomicTransferDone, Currency, MoneyError, OverdraftLimit,
    Transfer, TransferCommand,
};
use eslab_core::{Aggregate, EventReader, Version};

use super::AppState;
use super::commands::{self, StoredResponse, etag};
use super::dto::{
    AccountBody, AccountPage, AccountsQuery, ConsistencyQuery, EventBody, EventPage, EventsQuery, ForgottenBody,
    Movement, OpenAccount, RequestTransfer, StateQuery, TransferAccepted, TransferBody, TransferMode,
};
use super::error::{ApiError, Problem};
use super::extract::{BodilessWrite, Id, ValidQuery, Write, parse_id};

/// Largest page, in items.
const MAX_PAGE: u32 = 1_000;
/// Most bytes of JSON one `GET /accounts` page may take (1 MiB). A page
/// stops before the account that would take it over (and gives `next`, so a
/// client pages on); it holds at least one account, however large. Owners are
/// at most [`eslab_bank::MAX_OWNER_CHARS`] characters, so 1 000 new accounts
/// fit; accounts opened before that limit may have owners of up to the 64 KiB
/// body limit, and their pages are cut by this instead.
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;
/// Page size when none is asked for.
const DEFAULT_PAGE: u32 = 100;

fn money_rule(e: &MoneyError) -> &'static str {
    match e {
        MoneyError::NonPositive(_) => "non-positive-amount",
        MoneyError::Negative(_) => "negative-overdraft-limit",
        MoneyError::Overflow => "money-overflow",
        MoneyError::UnknownCurrency(_) => "unknown-currency",
        _ => "invalid-money",
    }
}

fn money<T>(r: Result<T, MoneyError>) -> Result<T, ApiError> {
    r.map_err(|e| ApiError::rule(money_rule(&e), &e))
}

fn currency(code: &str) -> Result<Currency, ApiError> {
    money(code.parse())
}

fn page_size(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=MAX_PAGE => Ok(n),
        n => Err(ApiError::BadRequest(format!("limit must be between 1 and {MAX_PAGE}, got {n}"))),
    }
}

fn with_etag(mut response: Response, version: u64) -> Response {
    response.headers_mut().insert(header::ETAG, etag(version));
    response
}

fn account_response(status: StatusCode, id: &str, location: bool) -> impl Fn(&Account, Version) -> StoredResponse {
    let id = id.to_owned();
    move |state, version| {
        let mut body = serde_json::to_value(AccountBody::from_state(&id, state, version.get())).unwrap_or_default();
        // The owner's name as its envelope: sealed where the answer is stored
        // with an idempotency key, revealed when it is sent.
        if let (Some(owner), Some(field)) = (&state.owner, body.get_mut("owner")) {
            *field = serde_json::to_value(&owner.name).unwrap_or_default();
        }
        StoredResponse {
            status: status.as_u16(),
            body,
            location: location.then(|| format!("/accounts/{id}")),
            version: Some(version.get()),
        }
    }
}

/// Open an account.
#[utoipa::path(post, path = "/accounts", request_body = OpenAccount, tag = "accounts",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key and body get the first response again")),
    responses((status = 201, description = "Opened", body = AccountBody, headers(("Location" = String), ("ETag" = String))),
        (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"), (status = 422, description = "A rule refused it (unknown-currency, blank-owner, owner-too-long, ...)", body = Problem, content_type = "application/problem+json")))]
pub async fn open_account(State(state): State<AppState>, write: Write<OpenAccount>) -> Result<Response, ApiError> {
    let Write { body, options } = write;
    let command = AccountCommand::Open {
        owner: body.owner,
        currency: currency(&body.currency)?,
        overdraft_limit: money(OverdraftLimit::new(body.overdraft_limit))?,
    };
    let id = uuid::Uuid::now_v7().hyphenated().to_string();
    let respond = account_response(StatusCode::CREATED, &id, true);
    let outcome = state.bank().account(&id, &command, options.command_options(), respond).await;
    commands::respond(&state, outcome)
}

async fn movement(
    state: AppState,
    id: Id,
    write: Write<Movement>,
    command: fn(Amount, Currency) -> AccountCommand,
) -> Result<Response, ApiError> {
    let Write { body, options } = write;
    let command = command(money(Amount::new(body.amount))?, currency(&body.currency)?);
    let respond = account_response(StatusCode::OK, &id.0, false);
    let outcome = state.bank().account(&id.0, &command, options.command_options(), respond).await;
    commands::respond(&state, outcome)
}

/// Deposit money.
#[utoipa::path(post, path = "/accounts/{id}/deposits", request_body = Movement, tag = "accounts",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Account id"),
        ("If-Match" = Option<String>, Header, description = "Only if the account is at this version (\"3\")"),
        ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = AccountBody),
        (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn deposit(State(state): State<AppState>, id: Id, write: Write<Movement>) -> Result<Response, ApiError> {
    movement(state, id, write, |amount, currency| AccountCommand::Deposit { amount, currency }).await
}

/// Withdraw money.
#[utoipa::path(post, path = "/accounts/{id}/withdrawals", request_body = Movement, tag = "accounts",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Account id"), ("If-Match" = Option<String>, Header),
        ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = AccountBody),
        (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"), (status = 422, description = "insufficient-funds, currency-mismatch, closed, ...", body = Problem, content_type = "application/problem+json")))]
pub async fn withdraw(State(state): State<AppState>, id: Id, write: Write<Movement>) -> Result<Response, ApiError> {
    movement(state, id, write, |amount, currency| AccountCommand::Withdraw { amount, currency }).await
}

/// Close an account (its balance must be zero).
#[utoipa::path(post, path = "/accounts/{id}/close", tag = "accounts",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Account id"), ("If-Match" = Option<String>, Header),
        ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = AccountBody), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "non-zero-balance, closed", body = Problem, content_type = "application/problem+json")))]
pub async fn close(State(state): State<AppState>, id: Id, write: BodilessWrite) -> Result<Response, ApiError> {
    let respond = account_response(StatusCode::OK, &id.0, false);
    let outcome = state.bank().account(&id.0, &AccountCommand::Close, write.0.command_options(), respond).await;
    commands::respond(&state, outcome)
}

/// Ask for a transfer: the saga carries it out (202), or, with `"mode":
/// "atomic"` (or `--transfer-mode atomic`), one decision over both accounts
/// moves the money at once (201, or the refusal).
#[utoipa::path(post, path = "/transfers", request_body = RequestTransfer, tag = "transfers",
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 202, description = "Accepted (saga); follow Location", body = TransferAccepted),
        (status = 201, description = "Done (atomic); see Location", body = TransferAccepted),
        (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Atomic: the accounts kept changing; try again", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown account", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "same-account, non-positive-amount, unknown-currency; atomic: insufficient-funds, currency-mismatch, not-open", body = Problem, content_type = "application/problem+json")))]
pub async fn request_transfer(
    State(state): State<AppState>,
    write: Write<RequestTransfer>,
) -> Result<Response, ApiError> {
    let Write { body, options } = write;
    let from = parse_id(&body.from)?;
    let to = parse_id(&body.to)?;
    let amount = money(Amount::new(body.amount))?;
    let currency = currency(&body.currency)?;
    let id = uuid::Uuid::now_v7().hyphenated().to_string();
    let location = format!("/transfers/{id}");
    if body.mode.unwrap_or(state.transfer_mode()) == TransferMode::Atomic {
        let transfer = AtomicTransfer { transfer_id: id, from, to, amount, currency };
        let respond = |done: &AtomicTransferDone| {
            transfer_answer(StatusCode::CREATED, &done.transfer_id, "completed", &location, done.version)
        };
        let outcome = state.bank().transfer_atomically(&transfer, &options.command_options(), respond).await;
        return commands::respond_atomic(&state, outcome);
    }
    let command = TransferCommand::Request { amount, currency, from, to };
    let respond = |t: &Transfer, version: Version| {
        transfer_answer(StatusCode::ACCEPTED, &id, t.status.as_str(), &location, version.get())
    };
    let outcome = state.bank().request_transfer(&id, &command, options.command_options(), respond).await;
    commands::respond(&state, outcome)
}

/// The stored answer to a transfer request, either path.
fn transfer_answer(
    status: StatusCode,
    id: &str,
    transfer_status: &str,
    location: &str,
    version: u64,
) -> StoredResponse {
    StoredResponse {
        status: status.as_u16(),
        body: serde_json::to_value(TransferAccepted { id: id.to_owned(), status: transfer_status.to_owned() })
            .unwrap_or_default(),
        location: Some(location.to_owned()),
        version: Some(version),
    }
}

/// A transfer's status (from the read model; from the store while the read model has not seen it yet).
#[utoipa::path(get, path = "/transfers/{id}", tag = "transfers", params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
    responses((status = 200, body = TransferBody, headers(("ETag" = String))), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_transfer(State(state): State<AppState>, id: Id) -> Result<Response, ApiError> {
    if let Some(row) = state.views().transfer(&id.0).await? {
        let version = row.version;
        return Ok(with_etag(Json(TransferBody::from_view(row)).into_response(), version));
    }
    let loaded = state.bank().transfer_now(&id.0).await?;
    match TransferBody::from_state(&id.0, &loaded.state, loaded.version.get()) {
        Some(body) => Ok(with_etag(Json(body).into_response(), loaded.version.get())),
        None => Err(ApiError::NotFound(format!("no transfer with id {}", id.0))),
    }
}

/// One account: from the read model, or with `consistency=strong` folded from the event store.
#[utoipa::path(get, path = "/accounts/{id}", tag = "accounts", params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"), ConsistencyQuery),
    responses((status = 200, body = AccountBody, headers(("ETag" = String))), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_account(
    State(state): State<AppState>,
    id: Id,
    ValidQuery(query): ValidQuery<ConsistencyQuery>,
) -> Result<Response, ApiError> {
    let body = match query.consistency.as_deref() {
        None | Some("eventual") => state.views().account(&id.0).await?.map(AccountBody::from_summary),
        Some("strong") => {
            let loaded = state.bank().account_now(&id.0).await?;
            (!loaded.version.is_none()).then(|| AccountBody::from_state(&id.0, &loaded.state, loaded.version.get()))
        }
        Some(other) => {
            return Err(ApiError::BadRequest(format!("consistency must be eventual or strong, got {other:?}")));
        }
    };
    let body = body.ok_or_else(|| ApiError::NotFound(format!("no account with id {}", id.0)))?;
    let version = body.version;
    Ok(with_etag(Json(body).into_response(), version))
}

/// Accounts by id, a page at a time (from the read model): at most `limit`
/// accounts and about 1 MiB (a page may stop early: follow `next`).
#[utoipa::path(get, path = "/accounts", tag = "accounts", params(AccountsQuery),
    responses((status = 200, body = AccountPage), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn list_accounts(
    State(state): State<AppState>,
    ValidQuery(query): ValidQuery<AccountsQuery>,
) -> Result<Json<AccountPage>, ApiError> {
    let limit = page_size(query.limit)?;
    let rows = state.views().accounts(query.after.as_deref(), limit).await?;
    let mut more = rows.len() == usize::try_from(limit).unwrap_or(usize::MAX);
    let mut items = Vec::with_capacity(rows.len());
    // `{"items":[`, `],"next":`, a quoted id and `}`.
    let mut bytes: usize = 64;
    for row in rows {
        let item = AccountBody::from_summary(row);
        // The item and the comma before the next one.
        let size = json_len(&item).saturating_add(1);
        if !items.is_empty() && bytes.saturating_add(size) > MAX_PAGE_BYTES {
            more = true;
            break;
        }
        bytes = bytes.saturating_add(size);
        items.push(item);
    }
    let next = if more { items.last().map(|i| i.id.clone()) } else { None };
    Ok(Json(AccountPage { items, next }))
}

/// How many bytes `value` takes as JSON, without building it.
fn json_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(bytes.len());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        // Cannot happen for these types; counting it as too big stops the page.
        Err(_) => usize::MAX,
    }
}

/// The account's events, a page at a time (from the event store).
#[utoipa::path(get, path = "/accounts/{id}/events", tag = "accounts", params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"), EventsQuery),
    responses((status = 200, body = EventPage, headers(("ETag" = String))), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn account_events(
    State(state): State<AppState>,
    id: Id,
    ValidQuery(query): ValidQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let limit = page_size(query.limit)?;
    let stream = Account::stream_id(&id.0).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let current = state.events().stream_version(&stream).await?;
    if current.is_none() {
        return Err(ApiError::NotFound(format!("no account with id {}", id.0)));
    }
    let from = Version::new(query.from.unwrap_or(1).max(1));
    let page = state.events().read_stream(&stream, from, usize::try_from(limit).unwrap_or(1)).await?;
    let full = page.len() == usize::try_from(limit).unwrap_or(usize::MAX);
    let next = if full { page.last().and_then(|e| e.stream_version.next()).map(Version::get) } else { None };
    let body = EventPage { items: page.into_iter().map(EventBody::from_recorded).collect(), next };
    Ok(with_etag(Json(body).into_response(), current.get()))
}

/// The account as it was at `version` (folded from the event store).
#[utoipa::path(get, path = "/accounts/{id}/state", tag = "accounts", params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"), StateQuery),
    responses((status = 200, body = AccountBody, headers(("ETag" = String))), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account, or it never reached that version", body = Problem, content_type = "application/problem+json")))]
pub async fn account_state(
    State(state): State<AppState>,
    id: Id,
    ValidQuery(query): ValidQuery<StateQuery>,
) -> Result<Response, ApiError> {
    let until = match query.version {
        Some(0) => return Err(ApiError::BadRequest("version starts at 1".into())),
        v => v.map(Version::new),
    };
    let loaded = state.bank().accounts().load_until(&id.0, until).await?;
    if loaded.version.is_none() {
        return Err(ApiError::NotFound(format!("no account with id {}", id.0)));
    }
    if let Some(until) = until
        && loaded.version < until
    {
        return Err(ApiError::NotFound(format!("account {} is at version {}, not {until} yet", id.0, loaded.version)));
    }
    let body = AccountBody::from_state(&id.0, &loaded.state, loaded.version.get());
    Ok(with_etag(Json(body).into_response(), loaded.version.get()))
}

/// Forget an account's owner: crypto-shredding of their personal data.
///
/// Deletes the key of the account's data subject (`account-<id>`): from now
/// on every read shows the owner as `null`, in the events, snapshots, stored
/// idempotent answers and Kafka topics alike; the read models and parked
/// events are erased too. Balances and histories are unchanged. Forgetting
/// twice answers the first forgetting.
#[utoipa::path(post, path = "/accounts/{id}/forget", tag = "accounts",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", description = "Account id")),
    responses((status = 200, description = "Forgotten (now or before)", body = ForgottenBody),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No account with this id was ever opened", body = Problem, content_type = "application/problem+json")))]
pub async fn forget_owner(State(state): State<AppState>, id: Id) -> Result<Json<ForgottenBody>, ApiError> {
    let done = state.bank().forget_owner(&id.0, FORGOTTEN_BY_HTTP).await?;
    state.views().erase(&done.subject).await?;
    state.events().backend().settle_erasure().await;
    Ok(Json(ForgottenBody::from(done)))
}

/// Who forgot, as recorded for a forgetting asked over HTTP.
pub const FORGOTTEN_BY_HTTP: &str = "http-api";

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Prometheus metrics (text format).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics_text(State(state): State<AppState>) -> Response {
    let mut response = state.render_metrics().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1")))]
pub async fn openapi() -> Result<Response, ApiError> {
    // The document never changes while the process runs: built and encoded once.
    static DOC: std::sync::LazyLock<Result<axum::body::Bytes, String>> = std::sync::LazyLock::new(|| {
        super::api_doc().and_then(|doc| serde_json::to_vec(&doc)).map(Into::into).map_err(|e| e.to_string())
    });
    match &*DOC {
        Ok(body) => {
            Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.clone()).into_response())
        }
        Err(e) => Err(ApiError::Internal(format!("the OpenAPI document: {e}").into())),
    }
}

/// Any other path.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}
