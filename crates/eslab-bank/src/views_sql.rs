//! The bank's read models in SQL (PostgreSQL and SQLite): the [`ViewsTx`]
//! implementations the [`BankViews`](crate::BankViews) projection writes
//! through, and [`SqlViews`] for the query side.

use std::collections::{BTreeSet, HashMap};

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

/// Rows per multi-row statement (7 to 9 columns: far below both databases' bind limits).
const ROWS_PER_STATEMENT: usize = 1_000;

/// The rows one batch touches, loaded with one query per table, folded in
/// memory by [`apply_event`](crate::apply_event), then written back with
/// multi-row statements: a handful of round trips per batch instead of two or
/// three per event.
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
                SqlTx::apply_staged(self, events).await
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

        impl SqlTx for sqlx::Transaction<'static, $db> {
            async fn apply_staged(&mut self, events: &[&RecordedEvent]) -> Result<(), (usize, HandlerError)> {
                if events.is_empty() {
                    return Ok(());
                }
                let at_db = |e: sqlx::Error| (0, transient(e));
                let mut staged = Staged::default();
                for chunk in ids_of(events, "account").chunks(ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "SELECT id, owner, currency, balance, overdraft_limit, status, version FROM account_summary WHERE id IN (",
                    );
                    let mut ids = q.separated(", ");
                    for id in chunk {
                        ids.push_bind(*id);
                    }
                    ids.push_unseparated(")");
                    let rows: Vec<SummaryRow> = q.build_query_as().fetch_all(&mut **self).await.map_err(at_db)?;
                    staged.summaries.extend(rows.into_iter().map(summary_of).map(|r| (r.id.clone(), r)));
                }
                for chunk in ids_of(events, "transfer").chunks(ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "SELECT id, from_account, to_account, amount, currency, status, reason, refunded, version
                         FROM transfer_status WHERE id IN (",
                    );
                    let mut ids = q.separated(", ");
                    for id in chunk {
                        ids.push_bind(*id);
                    }
                    ids.push_unseparated(")");
                    let rows: Vec<TransferRow> = q.build_query_as().fetch_all(&mut **self).await.map_err(at_db)?;
                    staged.transfers.extend(rows.into_iter().map(transfer_of).map(|r| (r.id.clone(), r)));
                }
                for (i, event) in events.iter().enumerate() {
                    crate::apply_event(&mut staged, event).await.map_err(|e| (i, e))?;
                }
                let failed = |e: HandlerError| (0, e);
                let summaries = staged
                    .dirty_summaries
                    .iter()
                    .filter_map(|id| staged.summaries.get(id))
                    .map(|r| Ok((r, version_i64(r.version)?)))
                    .collect::<Result<Vec<_>, HandlerError>>()
                    .map_err(failed)?;
                for chunk in summaries.chunks(ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO account_summary (id, owner, currency, balance, overdraft_limit, status, version) ",
                    );
                    q.push_values(chunk, |mut b, (r, version)| {
                        b.push_bind(r.id.as_str())
                            .push_bind(r.owner.as_str())
                            .push_bind(r.currency.as_str())
                            .push_bind(r.balance)
                            .push_bind(r.overdraft_limit)
                            .push_bind(account_status_str(r.status))
                            .push_bind(*version);
                    });
                    q.push(
                        " ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, currency = excluded.currency,
                         balance = excluded.balance, overdraft_limit = excluded.overdraft_limit,
                         status = excluded.status, version = excluded.version",
                    );
                    q.build().execute(&mut **self).await.map_err(at_db)?;
                }
                let history = staged
                    .history
                    .iter()
                    .map(|h| Ok((h, version_i64(h.version)?, rfc3339(h.occurred_at)?, h.correlation_id.map(|c| c.to_string()))))
                    .collect::<Result<Vec<_>, HandlerError>>()
                    .map_err(failed)?;
                for chunk in history.chunks(ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO account_history (account_id, version, kind, amount, balance, correlation_id, occurred_at) ",
                    );
                    q.push_values(chunk, |mut b, (h, version, occurred_at, correlation)| {
                        b.push_bind(h.account_id.as_str())
                            .push_bind(*version)
                            .push_bind(h.kind.as_str())
                            .push_bind(h.amount)
                            .push_bind(h.balance)
                            .push_bind(correlation.as_deref())
                            .push_bind(occurred_at.as_str());
                    });
                    q.push(" ON CONFLICT (account_id, version) DO NOTHING");
                    q.build().execute(&mut **self).await.map_err(at_db)?;
                }
                let transfers = staged
                    .dirty_transfers
                    .iter()
                    .filter_map(|id| staged.transfers.get(id))
                    .map(|r| Ok((r, version_i64(r.version)?)))
                    .collect::<Result<Vec<_>, HandlerError>>()
                    .map_err(failed)?;
                for chunk in transfers.chunks(ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO transfer_status (id, from_account, to_account, amount, currency, status, reason, refunded, version) ",
                    );
                    q.push_values(chunk, |mut b, (r, version)| {
                        b.push_bind(r.id.as_str())
                            .push_bind(r.from.as_str())
                            .push_bind(r.to.as_str())
                            .push_bind(r.amount)
                            .push_bind(r.currency.as_str())
                            .push_bind(r.status.as_str())
                            .push_bind(r.reason.as_deref())
                            .push_bind(r.refunded)
                            .push_bind(*version);
                    });
                    q.push(
                        " ON CONFLICT (id) DO UPDATE SET status = excluded.status, reason = excluded.reason,
                         refunded = excluded.refunded, version = excluded.version",
                    );
                    q.build().execute(&mut **self).await.map_err(at_db)?;
                }
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

/// The batched apply of a SQL transaction (see [`Staged`]).
trait SqlTx {
    fn apply_staged(
        &mut self,
        events: &[&RecordedEvent],
    ) -> impl std::future::Future<Output = Result<(), (usize, HandlerError)>> + Send;
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
