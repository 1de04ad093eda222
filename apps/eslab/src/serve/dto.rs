//! The JSON shapes of requests and responses (also the OpenAPI schemas).

use eslab_bank::{Account, AccountStatus, AccountSummary, TransferView};
use eslab_core::RecordedEvent;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `POST /accounts`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccount {
    /// The owner's name (non-blank, at most 200 characters after trimming; stored trimmed).
    // max_length is eslab_bank::MAX_OWNER_CHARS (the OpenAPI test checks it).
    #[schema(min_length = 1, max_length = 200)]
    pub owner: String,
    /// ISO 4217 code, e.g. `EUR`.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: String,
    /// How far below zero the balance may go, in minor units (default 0).
    #[serde(default)]
    #[schema(minimum = 0)]
    pub overdraft_limit: i64,
}

/// `POST /accounts/{id}/deposits` and `/withdrawals`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Movement {
    /// Minor units (cents), strictly positive.
    #[schema(minimum = 1)]
    pub amount: i64,
    /// ISO 4217 code; must be the account's.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: String,
}

/// `POST /transfers`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestTransfer {
    /// Source account id.
    #[schema(pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub from: String,
    /// Target account id.
    #[schema(pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub to: String,
    /// Minor units, strictly positive.
    #[schema(minimum = 1)]
    pub amount: i64,
    /// ISO 4217 code.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: String,
    /// How to carry it out (default: the service's `--transfer-mode`, `saga`
    /// unless configured): `saga` answers 202 and a process manager moves
    /// the money step by step; `atomic` decides over both accounts at once
    /// (a dynamic consistency boundary) and answers 201 when the money moved,
    /// or the refusal.
    #[serde(default)]
    pub mode: Option<TransferMode>,
}

/// How a transfer is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TransferMode {
    /// A process manager: request, debit, credit (refund on a refused credit).
    #[default]
    Saga,
    /// One decision over both accounts' events, one atomic append.
    Atomic,
}

/// An account as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct AccountBody {
    /// The account id.
    pub id: String,
    /// The owner's name; `null` once the owner was forgotten (`POST /accounts/{id}/forget`).
    pub owner: Option<String>,
    /// ISO 4217 code.
    pub currency: String,
    /// Balance in minor units.
    pub balance: i64,
    /// Overdraft limit in minor units.
    pub overdraft_limit: i64,
    /// `open` or `closed`.
    pub status: String,
    /// The account stream's version this reflects (also the `ETag`).
    pub version: u64,
}

fn status_name(s: AccountStatus) -> &'static str {
    match s {
        AccountStatus::Unopened => "unopened",
        AccountStatus::Open => "open",
        AccountStatus::Closed => "closed",
    }
}

impl AccountBody {
    /// From the aggregate's state (strong consistency).
    pub fn from_state(id: &str, state: &Account, version: u64) -> Self {
        AccountBody {
            id: id.to_owned(),
            owner: state.owner.as_ref().and_then(|o| o.name.known().cloned()),
            currency: state.currency.map(|c| c.code().to_owned()).unwrap_or_default(),
            balance: state.balance.minor(),
            overdraft_limit: state.overdraft_limit.minor(),
            status: status_name(state.status).to_owned(),
            version,
        }
    }

    /// From the read model.
    pub fn from_summary(row: AccountSummary) -> Self {
        AccountBody {
            id: row.id,
            owner: row.owner,
            currency: row.currency,
            balance: row.balance,
            overdraft_limit: row.overdraft_limit,
            status: status_name(row.status).to_owned(),
            version: row.version,
        }
    }
}

/// A page of accounts.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct AccountPage {
    /// The accounts, by id.
    pub items: Vec<AccountBody>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

/// A transfer as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct TransferBody {
    /// The transfer id.
    pub id: String,
    /// Source account id.
    pub from: String,
    /// Target account id.
    pub to: String,
    /// Minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// `requested`, `debited`, `refunding`, `completed` or `failed`.
    pub status: String,
    /// Why it failed (the refusing rule), if it did.
    pub reason: Option<String>,
    /// Whether a debit was refunded.
    pub refunded: bool,
    /// The transfer stream's version this reflects.
    pub version: u64,
}

impl TransferBody {
    /// From the read model.
    pub fn from_view(row: TransferView) -> Self {
        TransferBody {
            id: row.id,
            from: row.from,
            to: row.to,
            amount: row.amount,
            currency: row.currency,
            status: row.status.as_str().to_owned(),
            reason: row.reason,
            refunded: row.refunded,
            version: row.version,
        }
    }

    /// From the aggregate's state.
    pub fn from_state(id: &str, state: &eslab_bank::Transfer, version: u64) -> Option<Self> {
        let request = state.request.as_ref()?;
        Some(TransferBody {
            id: id.to_owned(),
            from: request.from.clone(),
            to: request.to.clone(),
            amount: request.amount.minor(),
            currency: request.currency.code().to_owned(),
            status: state.status.as_str().to_owned(),
            reason: state.failure.clone(),
            // The aggregate does not keep whether a debit was refunded (the
            // read model does); a transfer read from the store says `false`.
            refunded: false,
            version,
        })
    }
}

/// One recorded event of a stream.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct EventBody {
    /// Event id (UUID v7).
    pub event_id: String,
    /// Version in the stream.
    pub version: u64,
    /// Global position.
    pub position: u64,
    /// Event type.
    pub event_type: String,
    /// Payload schema version.
    pub schema_version: u32,
    /// The payload.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Correlation, causation, actor, occurred-at.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// When the store recorded it (RFC 3339).
    pub recorded_at: String,
}

impl EventBody {
    /// From a recorded event.
    pub fn from_recorded(e: RecordedEvent) -> Self {
        EventBody {
            event_id: e.event_id.to_string(),
            version: e.stream_version.get(),
            position: e.position.get(),
            event_type: e.event_type,
            schema_version: e.schema_version,
            payload: e.payload,
            metadata: serde_json::to_value(&e.metadata).unwrap_or_default(),
            recorded_at: e.recorded_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        }
    }
}

/// A page of a stream.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct EventPage {
    /// The events, oldest first.
    pub items: Vec<EventBody>,
    /// Pass as `from` for the next page; absent on the last page.
    pub next: Option<u64>,
}

/// `GET /accounts` query.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccountsQuery {
    /// Only accounts whose id sorts after this one (the previous page's `next`).
    pub after: Option<String>,
    /// Page size, 1 to 1000 (default 100); a page also stops at about 1 MiB.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// `GET /accounts/{id}` query.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// `eventual` (default: the read model) or `strong` (folded from the event store).
    pub consistency: Option<String>,
}

/// `GET /accounts/{id}/events` query.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// First version to return (default 1).
    pub from: Option<u64>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// `GET /accounts/{id}/state` query.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    /// The version to fold up to (default: the latest).
    pub version: Option<u64>,
}

/// `POST /transfers` answer.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct TransferAccepted {
    /// The transfer id; follow it at `GET /transfers/{id}`.
    pub id: String,
    /// `requested` (saga), `completed` (atomic).
    pub status: String,
}

/// `/health` and `/ready` answers.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct Readiness {
    /// `ok`, or `unavailable` when the store cannot be reached.
    pub status: String,
    /// The in-process projections, with how far behind the feed they are.
    pub projections: Vec<ProjectionLag>,
}

/// One projection's position.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct ProjectionLag {
    /// Its name.
    pub name: String,
    /// Its checkpoint, `<transaction>:<position>`.
    pub checkpoint: String,
    /// Events in the feed after the checkpoint (counted up to a cap); absent
    /// when they could not be counted in time.
    pub behind: Option<usize>,
    /// Whether `behind` hit the cap (there are at least that many).
    pub capped: bool,
}

/// A forgotten account owner: the data subject and when and by whom it was
/// forgotten (no personal data).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ForgottenBody {
    /// The data subject: `account-<id>`.
    pub subject: String,
    /// When its key was deleted (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub forgotten_at: time::OffsetDateTime,
    /// Who asked.
    pub forgotten_by: String,
}

impl From<eslab_core::Forgetting> for ForgottenBody {
    fn from(done: eslab_core::Forgetting) -> Self {
        ForgottenBody {
            subject: done.subject.as_str().to_owned(),
            forgotten_at: done.forgotten_at,
            forgotten_by: done.forgotten_by,
        }
    }
}
