//! The bank's read models in SQL (PostgreSQL and SQLite): the [`ViewsTx`]
//! implementations the [`BankViews`](crate::BankViews) projection writes
//! through, and [`SqlViews`] for the query side.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;

use eslab_core::RecordedEvent;
use eslab_projection::{HandlerError, ReadModel};

use crate::account::AccountStatus;
use crate::transfer::TransferStatus;
use crate::views::{AccountSummary, BankViews, HistoryEntry, TransferView, ViewsTx};

/// DDL of the read models (types both dialects accept).
const SCHEMA: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS account_summary (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL, currency TEXT NOT NULL, balance BIGINT NOT NULL,
        overdraft_limit BIGINT NOT NULL, status TEXT NOT NULL, version BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS account_history (
        account_id TEXT NOT NULL, version BIGINT NOT NULL, kind TEXT NOT NULL, amount BIGINT NOT NULL,
        balance BIGINT NOT NULL, correlation_id TEXT, occurred_at TEXT NOT NULL,
        PRIMARY KEY (account_id, version))",
    "CREATE TABLE IF NOT EXISTS transfer_status (
        id TEXT PRIMARY KEY, from_account TEXT NOT NULL, to_account TEXT NOT NULL, amount BIGINT NOT NULL,
        currency TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, refunded BOOLEAN NOT NULL, version BIGINT NOT NULL)",
];

fn transient(e: sqlx::Error) -> HandlerError {
    HandlerError::transient(e.to_string()).with_source(e)
}

fn version_i64(v: u64) -> Result<i64, HandlerError> {
    i64::try_from(v).map_err(|_| HandlerError::new(format!("version {v} does not fit in BIGINT")))
}

fn account_status(s: &str) -> AccountStatus {
    match s {
        "open" => AccountStatus::Open,
        "closed" => AccountStatus::Closed,
        _ => AccountStatus::Unopened,
    }
}

fn account_status_str(s: AccountStatus) -> &'static str {
    match s {
        AccountStatus::Unopened => "unopened",
        AccountStatus::Open => "open",
        AccountStatus::Closed => "closed",
    }
}

fn transfer_status(s: &str) -> TransferStatus {
    match s {
        "requested" => TransferStatus::Requested,
        "debited" => TransferStatus::Debited,
        "refunding" => TransferStatus::Refunding,
        "completed" => TransferStatus::Completed,
        "failed" => TransferStatus::Failed,
        _ => TransferStatus::New,
    }
}

type SummaryRow = (String, String, String, i64, i64, String, i64);
type HistoryRow = (String, i64, String, i64, i64, Option<String>, String);
type TransferRow = (String, String, String, i64, String, String, Option<String>, bool, i64);

/// The owner column of a forgotten owner: the empty string, which no owner
/// can have (blank names are refused), so that the column stays `NOT NULL`
/// in tables created before owners could be forgotten.
pub(crate) const FORGOTTEN_OWNER: &str = "";

fn summary_of(r: SummaryRow) -> AccountSummary {
    AccountSummary {
        id: r.0,
        owner: Some(r.1).filter(|owner| owner != FORGOTTEN_OWNER),
        currency: r.2,
        balance: r.3,
        overdraft_limit: r.4,
        status: account_status(&r.5),
        version: u64::try_from(r.6).unwrap_or(0),
    }
}

fn history_of(r: HistoryRow) -> HistoryEntry {
    HistoryEntry {
        account_id: r.0,
        version: u64::try_from(r.1).unwrap_or(0),
        kind: r.2,
        amount: r.3,
        balance: r.4,
        correlation_id: r.5.and_then(|c| c.parse().ok()),
        occurred_at: time::OffsetDateTime::parse(&r.6, &time::format_description::well_known::Rfc3339)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
    }
}

fn transfer_of(r: TransferRow) -> TransferView {
    TransferView {
        id: r.0,
        from: r.1,
        to: r.2,
        amount: r.3,
        currency: r.4,
        status: transfer_status(&r.5),
        reason: r.6,
        refunded: r.7,
        version: u64::try_from(r.8).unwrap_or(0),
    }
}

const SELECT_SUMMARY: &str =
    "SELECT id, owner, currency, balance, overdraft_limit, status, version FROM account_summary WHERE id = $1";
const UPSERT_SUMMARY: &str =
    "INSERT INTO account_summary (id, owner, currency, balance, overdraft_limit, status, version)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, currency = excluded.currency, balance = excluded.balance,
         overdraft_limit = excluded.overdraft_limit, status = excluded.status, version = excluded.version";
const INSERT_HISTORY: &str =
    "INSERT INTO account_history (account_id, version, kind, amount, balance, correlation_id, occurred_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (account_id, version) DO NOTHING";
const SELECT_TRANSFER: &str = "SELECT id, from_account, to_account, amount, currency, status, reason, refunded, version
     FROM transfer_status WHERE id = $1";
const UPSERT_TRANSFER: &str =
    "INSERT INTO transfer_status (id, from_account, to_account, amount, currency, status, reason, refunded, version)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     ON CONFLICT (id) DO UPDATE SET status = excluded.status, reason = excluded.reason,
         refunded = excluded.refunded, version = excluded.version";

/// The rows one batch touches, loaded with one query per table, folded in
/// memory by [`apply_event`](crate::apply_event), then written back with one
/// statement per table: a handful of round trips per batch instead of two or
/// three per event. Every statement has one text whatever the batch size
/// (arrays on PostgreSQL, a JSON document on SQLite), so each connection
/// prepares it once (see [`Bulk`]).
#[derive(Debug, Default)]
struct Staged {
    summaries: HashMap<String, AccountSummary>,
    dirty_summaries: BTreeSet<String>,
    history: Vec<HistoryEntry>,
    transfers: HashMap<String, TransferView>,
    dirty_transfers: BTreeSet<String>,
}

impl ViewsTx for Staged {
    async fn summary(&mut self, id: &str) -> Result<Option<AccountSummary>, HandlerError> {
        Ok(self.summaries.get(id).cloned())
    }

    async fn put_summary(&mut self, row: &AccountSummary) -> Result<(), HandlerError> {
        self.summaries.insert(row.id.clone(), row.clone());
        self.dirty_summaries.insert(row.id.clone());
        Ok(())
    }

    async fn add_history(&mut self, entry: &HistoryEntry) -> Result<(), HandlerError> {
        self.history.push(entry.clone());
        Ok(())
    }

    async fn transfer(&mut self, id: &str) -> Result<Option<TransferView>, HandlerError> {
        Ok(self.transfers.get(id).cloned())
    }

    async fn put_transfer(&mut self, row: &TransferView) -> Result<(), HandlerError> {
        self.transfers.insert(row.id.clone(), row.clone());
        self.dirty_transfers.insert(row.id.clone());
        Ok(())
    }
}

/// The ids of the `category` streams of a batch.
fn ids_of<'a>(events: &[&'a RecordedEvent], category: &str) -> Vec<&'a str> {
    let ids: BTreeSet<&str> =
        events.iter().filter(|e| e.stream_id.category() == category).map(|e| e.stream_id.id()).collect();
    ids.into_iter().collect()
}

fn rfc3339(at: time::OffsetDateTime) -> Result<String, HandlerError> {
    at.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| HandlerError::new(e.to_string()).with_source(e))
}

macro_rules! sql_views {
    ($db:ty, $pool:ty, $backend:ty) => {
        impl ViewsTx for sqlx::Transaction<'static, $db> {
            async fn summary(&mut self, id: &str) -> Result<Option<AccountSummary>, HandlerError> {
                let row: Option<SummaryRow> =
                    sqlx::query_as(SELECT_SUMMARY).bind(id).fetch_optional(&mut **self).await.map_err(transient)?;
                Ok(row.map(summary_of))
            }

            async fn put_summary(&mut self, row: &AccountSummary) -> Result<(), HandlerError> {
                sqlx::query(UPSERT_SUMMARY)
                    .bind(&row.id)
                    .bind(row.owner.as_deref().unwrap_or(FORGOTTEN_OWNER))
                    .bind(&row.currency)
                    .bind(row.balance)
                    .bind(row.overdraft_limit)
                    .bind(account_status_str(row.status))
                    .bind(version_i64(row.version)?)
                    .execute(&mut **self)
                    .await
                    .map_err(transient)?;
                Ok(())
            }

            async fn add_history(&mut self, entry: &HistoryEntry) -> Result<(), HandlerError> {
                let occurred_at = entry
                    .occurred_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .map_err(|e| HandlerError::new(e.to_string()).with_source(e))?;
                sqlx::query(INSERT_HISTORY)
                    .bind(&entry.account_id)
                    .bind(version_i64(entry.version)?)
                    .bind(&entry.kind)
                    .bind(entry.amount)
                    .bind(entry.balance)
                    .bind(entry.correlation_id.map(|c| c.to_string()))
                    .bind(occurred_at)
                    .execute(&mut **self)
                    .await
                    .map_err(transient)?;
                Ok(())
            }

            async fn transfer(&mut self, id: &str) -> Result<Option<TransferView>, HandlerError> {
                let row: Option<TransferRow> =
                    sqlx::query_as(SELECT_TRANSFER).bind(id).fetch_optional(&mut **self).await.map_err(transient)?;
                Ok(row.map(transfer_of))
            }

            async fn apply_batch(&mut self, events: &[&RecordedEvent]) -> Result<(), (usize, HandlerError)> {
                apply_staged(self, events).await
            }

            async fn put_transfer(&mut self, row: &TransferView) -> Result<(), HandlerError> {
                sqlx::query(UPSERT_TRANSFER)
                    .bind(&row.id)
                    .bind(&row.from)
                    .bind(&row.to)
                    .bind(row.amount)
                    .bind(&row.currency)
                    .bind(row.status.as_str())
                    .bind(&row.reason)
                    .bind(row.refunded)
                    .bind(version_i64(row.version)?)
                    .execute(&mut **self)
                    .await
                    .map_err(transient)?;
                Ok(())
            }
        }

        /// What a rebuild needs ([`eslab_projection::Rebuild`]): the three
        /// tables, created by [`SqlViews::ensure_schema`].
        impl ReadModel<$backend> for BankViews {
            fn tables(&self) -> Vec<String> {
                BankViews::TABLES.map(str::to_owned).to_vec()
            }

            async fn create_tables(&self, backend: &$backend) -> Result<(), eslab_core::BoxError> {
                SqlViews::new(backend.pool().clone()).ensure_schema().await?;
                Ok(())
            }
        }

        impl crate::service::BankQueries for SqlViews<$pool> {
            fn account<'a>(
                &'a self,
                id: &'a str,
            ) -> futures_util::future::BoxFuture<'a, Result<Option<AccountSummary>, eslab_core::Error>> {
                Box::pin(async move { <SqlViews<$pool>>::account(self, id).await.map_err(crate::service::query_error) })
            }

            fn accounts<'a>(
                &'a self,
                after: Option<&'a str>,
                limit: u32,
            ) -> futures_util::future::BoxFuture<'a, Result<Vec<AccountSummary>, eslab_core::Error>> {
                Box::pin(async move {
                    <SqlViews<$pool>>::accounts(self, after, i64::from(limit)).await.map_err(crate::service::query_error)
                })
            }

            fn transfer<'a>(
                &'a self,
                id: &'a str,
            ) -> futures_util::future::BoxFuture<'a, Result<Option<TransferView>, eslab_core::Error>> {
                Box::pin(async move { <SqlViews<$pool>>::transfer(self, id).await.map_err(crate::service::query_error) })
            }
        }

        impl SqlViews<$pool> {
            /// Creates the read-model tables if they do not exist.
            pub async fn ensure_schema(&self) -> Result<(), sqlx::Error> {
                for ddl in SCHEMA {
                    sqlx::query(ddl).execute(&self.pool).await?;
                }
                Ok(())
            }

            /// One account's summary.
            pub async fn account(&self, id: &str) -> Result<Option<AccountSummary>, sqlx::Error> {
                let row: Option<SummaryRow> = sqlx::query_as(SELECT_SUMMARY).bind(id).fetch_optional(&self.pool).await?;
                Ok(row.map(summary_of))
            }

            /// Up to `limit` summaries with ids after `after` (a cursor), by id.
            pub async fn accounts(&self, after: Option<&str>, limit: i64) -> Result<Vec<AccountSummary>, sqlx::Error> {
                let rows: Vec<SummaryRow> = sqlx::query_as(
                    "SELECT id, owner, currency, balance, overdraft_limit, status, version FROM account_summary
                     WHERE id > $1 ORDER BY id LIMIT $2",
                )
                .bind(after.unwrap_or(""))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(summary_of).collect())
            }

            /// Up to `limit` movements of an account after `after_version`, oldest first.
            pub async fn history(&self, id: &str, after_version: i64, limit: i64) -> Result<Vec<HistoryEntry>, sqlx::Error> {
                let rows: Vec<HistoryRow> = sqlx::query_as(
                    "SELECT account_id, version, kind, amount, balance, correlation_id, occurred_at FROM account_history
                     WHERE account_id = $1 AND version > $2 ORDER BY version LIMIT $3",
                )
                .bind(id)
                .bind(after_version)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(history_of).collect())
            }

            /// One transfer's status.
            pub async fn transfer(&self, id: &str) -> Result<Option<TransferView>, sqlx::Error> {
                let row: Option<TransferRow> = sqlx::query_as(SELECT_TRANSFER).bind(id).fetch_optional(&self.pool).await?;
                Ok(row.map(transfer_of))
            }

            /// The sum of all balances (for checks: money is conserved).
            pub async fn total_balance(&self) -> Result<i64, sqlx::Error> {
                let (total,): (Option<i64>,) =
                    sqlx::query_as("SELECT CAST(SUM(balance) AS BIGINT) FROM account_summary").fetch_one(&self.pool).await?;
                Ok(total.unwrap_or(0))
            }
        }
    };
}

/// The bulk statements of a batch (see [`Staged`]), one text each whatever
/// the number of rows.
trait Bulk: Send {
    /// The summaries of `ids` that exist.
    fn load_summaries(&mut self, ids: &[&str]) -> impl Future<Output = sqlx::Result<Vec<SummaryRow>>> + Send;
    /// The transfers of `ids` that exist.
    fn load_transfers(&mut self, ids: &[&str]) -> impl Future<Output = sqlx::Result<Vec<TransferRow>>> + Send;
    /// Inserts or replaces `rows`.
    fn write_summaries(&mut self, rows: &[SummaryRow]) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Inserts `rows`, skipping account versions already recorded.
    fn write_history(&mut self, rows: &[HistoryRow]) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Inserts or replaces `rows`.
    fn write_transfers(&mut self, rows: &[TransferRow]) -> impl Future<Output = sqlx::Result<()>> + Send;
}

/// Applies `events` to the read models in `tx` with the [`Bulk`] statements.
async fn apply_staged<T: Bulk>(tx: &mut T, events: &[&RecordedEvent]) -> Result<(), (usize, HandlerError)> {
    if events.is_empty() {
        return Ok(());
    }
    let at_db = |e: sqlx::Error| (0, transient(e));
    let failed = |e: HandlerError| (0, e);
    let mut staged = Staged::default();
    let accounts = ids_of(events, "account");
    if !accounts.is_empty() {
        let rows = tx.load_summaries(&accounts).await.map_err(at_db)?;
        staged.summaries.extend(rows.into_iter().map(summary_of).map(|r| (r.id.clone(), r)));
    }
    let transfers = ids_of(events, "transfer");
    if !transfers.is_empty() {
        let rows = tx.load_transfers(&transfers).await.map_err(at_db)?;
        staged.transfers.extend(rows.into_iter().map(transfer_of).map(|r| (r.id.clone(), r)));
    }
    for (i, event) in events.iter().enumerate() {
        crate::apply_event(&mut staged, event).await.map_err(|e| (i, e))?;
    }
    let summaries = staged
        .dirty_summaries
        .iter()
        .filter_map(|id| staged.summaries.get(id))
        .map(summary_row)
        .collect::<Result<Vec<_>, HandlerError>>()
        .map_err(failed)?;
    if !summaries.is_empty() {
        tx.write_summaries(&summaries).await.map_err(at_db)?;
    }
    let history = staged.history.iter().map(history_row).collect::<Result<Vec<_>, HandlerError>>().map_err(failed)?;
    if !history.is_empty() {
        tx.write_history(&history).await.map_err(at_db)?;
    }
    let transfers = staged
        .dirty_transfers
        .iter()
        .filter_map(|id| staged.transfers.get(id))
        .map(transfer_row)
        .collect::<Result<Vec<_>, HandlerError>>()
        .map_err(failed)?;
    if !transfers.is_empty() {
        tx.write_transfers(&transfers).await.map_err(at_db)?;
    }
    Ok(())
}

fn summary_row(r: &AccountSummary) -> Result<SummaryRow, HandlerError> {
    Ok((
        r.id.clone(),
        r.owner.clone().unwrap_or_default(),
        r.currency.clone(),
        r.balance,
        r.overdraft_limit,
        account_status_str(r.status).to_owned(),
        version_i64(r.version)?,
    ))
}

fn history_row(h: &HistoryEntry) -> Result<HistoryRow, HandlerError> {
    Ok((
        h.account_id.clone(),
        version_i64(h.version)?,
        h.kind.clone(),
        h.amount,
        h.balance,
        h.correlation_id.map(|c| c.to_string()),
        rfc3339(h.occurred_at)?,
    ))
}

fn transfer_row(r: &TransferView) -> Result<TransferRow, HandlerError> {
    Ok((
        r.id.clone(),
        r.from.clone(),
        r.to.clone(),
        r.amount,
        r.currency.clone(),
        r.status.as_str().to_owned(),
        r.reason.clone(),
        r.refunded,
        version_i64(r.version)?,
    ))
}

/// Columns of `rows` as arrays (PostgreSQL's `unnest` binds one per column).
#[cfg(feature = "postgres")]
macro_rules! columns {
    ($rows:expr, $($i:tt),+) => {
        ($($rows.iter().map(|r| r.$i.clone()).collect::<Vec<_>>(),)+)
    };
}

#[cfg(feature = "postgres")]
impl Bulk for sqlx::Transaction<'_, sqlx::Postgres> {
    async fn load_summaries(&mut self, ids: &[&str]) -> sqlx::Result<Vec<SummaryRow>> {
        sqlx::query_as(
            "SELECT id, owner, currency, balance, overdraft_limit, status, version FROM account_summary
             WHERE id = ANY($1::text[])",
        )
        .bind(ids)
        .fetch_all(&mut **self)
        .await
    }

    async fn load_transfers(&mut self, ids: &[&str]) -> sqlx::Result<Vec<TransferRow>> {
        sqlx::query_as(
            "SELECT id, from_account, to_account, amount, currency, status, reason, refunded, version
             FROM transfer_status WHERE id = ANY($1::text[])",
        )
        .bind(ids)
        .fetch_all(&mut **self)
        .await
    }

    async fn write_summaries(&mut self, rows: &[SummaryRow]) -> sqlx::Result<()> {
        let (id, owner, currency, balance, overdraft, status, version) = columns!(rows, 0, 1, 2, 3, 4, 5, 6);
        sqlx::query(
            "INSERT INTO account_summary (id, owner, currency, balance, overdraft_limit, status, version)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::bigint[])
             ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, currency = excluded.currency,
                 balance = excluded.balance, overdraft_limit = excluded.overdraft_limit,
                 status = excluded.status, version = excluded.version",
        )
        .bind(id)
        .bind(owner)
        .bind(currency)
        .bind(balance)
        .bind(overdraft)
        .bind(status)
        .bind(version)
        .execute(&mut **self)
        .await
        .map(drop)
    }

    async fn write_history(&mut self, rows: &[HistoryRow]) -> sqlx::Result<()> {
        let (account, version, kind, amount, balance, correlation, occurred) = columns!(rows, 0, 1, 2, 3, 4, 5, 6);
        sqlx::query(
            "INSERT INTO account_history (account_id, version, kind, amount, balance, correlation_id, occurred_at)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::text[])
             ON CONFLICT (account_id, version) DO NOTHING",
        )
        .bind(account)
        .bind(version)
        .bind(kind)
        .bind(amount)
        .bind(balance)
        .bind(correlation)
        .bind(occurred)
        .execute(&mut **self)
        .await
        .map(drop)
    }

    async fn write_transfers(&mut self, rows: &[TransferRow]) -> sqlx::Result<()> {
        let (id, from, to, amount, currency, status, reason, refunded, version) =
            columns!(rows, 0, 1, 2, 3, 4, 5, 6, 7, 8);
        sqlx::query(
            "INSERT INTO transfer_status (id, from_account, to_account, amount, currency, status, reason, refunded, version)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[],
                                  $8::boolean[], $9::bigint[])
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, reason = excluded.reason,
                 refunded = excluded.refunded, version = excluded.version",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .bind(amount)
        .bind(currency)
        .bind(status)
        .bind(reason)
        .bind(refunded)
        .bind(version)
        .execute(&mut **self)
        .await
        .map(drop)
    }
}

/// The rows as one JSON document (SQLite reads it with `json_each`).
#[cfg(feature = "sqlite")]
fn json_param<T: serde::Serialize>(rows: &T) -> sqlx::Result<String> {
    serde_json::to_string(rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// SQLite has no arrays: the rows travel as one JSON array (of ids, or of
/// rows as arrays), unpacked by `json_each` and `->>` (SQLite 3.38+). `WHERE
/// true` keeps the upserts' `ON CONFLICT` from parsing as a join constraint.
#[cfg(feature = "sqlite")]
impl Bulk for sqlx::Transaction<'_, sqlx::Sqlite> {
    async fn load_summaries(&mut self, ids: &[&str]) -> sqlx::Result<Vec<SummaryRow>> {
        sqlx::query_as(
            "SELECT id, owner, currency, balance, overdraft_limit, status, version FROM account_summary
             WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_param(&ids)?)
        .fetch_all(&mut **self)
        .await
    }

    async fn load_transfers(&mut self, ids: &[&str]) -> sqlx::Result<Vec<TransferRow>> {
        sqlx::query_as(
            "SELECT id, from_account, to_account, amount, currency, status, reason, refunded, version
             FROM transfer_status WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_param(&ids)?)
        .fetch_all(&mut **self)
        .await
    }

    async fn write_summaries(&mut self, rows: &[SummaryRow]) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO account_summary (id, owner, currency, balance, overdraft_limit, status, version)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6
             FROM json_each(?1) WHERE true
             ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, currency = excluded.currency,
                 balance = excluded.balance, overdraft_limit = excluded.overdraft_limit,
                 status = excluded.status, version = excluded.version",
        )
        .bind(json_param(&rows)?)
        .execute(&mut **self)
        .await
        .map(drop)
    }

    async fn write_history(&mut self, rows: &[HistoryRow]) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO account_history (account_id, version, kind, amount, balance, correlation_id, occurred_at)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6
             FROM json_each(?1) WHERE true
             ON CONFLICT (account_id, version) DO NOTHING",
        )
        .bind(json_param(&rows)?)
        .execute(&mut **self)
        .await
        .map(drop)
    }

    async fn write_transfers(&mut self, rows: &[TransferRow]) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO transfer_status (id, from_account, to_account, amount, currency, status, reason, refunded, version)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8
             FROM json_each(?1) WHERE true
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, reason = excluded.reason,
                 refunded = excluded.refunded, version = excluded.version",
        )
        .bind(json_param(&rows)?)
        .execute(&mut **self)
        .await
        .map(drop)
    }
}

/// Queries of the bank's read models on a SQL pool.
#[derive(Debug, Clone)]
pub struct SqlViews<P> {
    pool: P,
}

impl<P> SqlViews<P> {
    /// Queries over `pool` (the pool the projection backend writes through, or a reader pool).
    pub fn new(pool: P) -> Self {
        SqlViews { pool }
    }
}

#[cfg(feature = "postgres")]
sql_views!(sqlx::Postgres, sqlx::PgPool, eslab_projection::PgBackend);

#[cfg(feature = "sqlite")]
sql_views!(sqlx::Sqlite, sqlx::SqlitePool, eslab_projection::SqliteBackend);
