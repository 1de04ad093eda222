//! The bank's read models in SQL (PostgreSQL and SQLite): the [`ViewsTx`]
//! implementations the [`BankViews`](crate::BankViews) projection writes
//! through, and [`SqlViews`] for the query side.

use eslab_projection::HandlerError;

use crate::account::AccountStatus;
use crate::transfer::TransferStatus;
use crate::views::{AccountSummary, HistoryEntry, TransferView, ViewsTx};

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
    HandlerError::transient(e.to_string())
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

fn summary_of(r: SummaryRow) -> AccountSummary {
    AccountSummary {
        id: r.0,
        owner: r.1,
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

macro_rules! sql_views {
    ($db:ty, $pool:ty) => {
        impl ViewsTx for sqlx::Transaction<'static, $db> {
            async fn summary(&mut self, id: &str) -> Result<Option<AccountSummary>, HandlerError> {
                let row: Option<SummaryRow> =
                    sqlx::query_as(SELECT_SUMMARY).bind(id).fetch_optional(&mut **self).await.map_err(transient)?;
                Ok(row.map(summary_of))
            }

            async fn put_summary(&mut self, row: &AccountSummary) -> Result<(), HandlerError> {
                sqlx::query(UPSERT_SUMMARY)
                    .bind(&row.id)
                    .bind(&row.owner)
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
                    .map_err(|e| HandlerError::new(e.to_string()))?;
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
sql_views!(sqlx::Postgres, sqlx::PgPool);

#[cfg(feature = "sqlite")]
sql_views!(sqlx::Sqlite, sqlx::SqlitePool);
