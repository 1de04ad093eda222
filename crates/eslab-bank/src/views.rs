//! The bank's read models: account summaries, transaction history and
//! transfer status, written by the [`BankViews`] projection through any
//! backend whose transaction implements [`ViewsTx`].

use std::future::Future;

use eslab_core::{Codec, JsonCodec, RecordedEvent};
use eslab_projection::{Backend, HandlerError, Projection};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::account::{AccountEvent, AccountStatus};
use crate::transfer::{TransferEvent, TransferStatus};

/// One row of the account summary read model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSummary {
    /// The account id (without the `account-` prefix).
    pub id: String,
    /// The owner's name; `None` once the owner was forgotten (personal data,
    /// see [`Owner::name`](crate::Owner::name)).
    pub owner: Option<String>,
    /// ISO 4217 code.
    pub currency: String,
    /// Balance in minor units.
    pub balance: i64,
    /// Overdraft limit in minor units.
    pub overdraft_limit: i64,
    /// `open` or `closed`.
    pub status: AccountStatus,
    /// The stream version the row reflects.
    pub version: u64,
}

/// One movement of money on an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The account id.
    pub account_id: String,
    /// The event's version in the account stream.
    pub version: u64,
    /// `deposit` or `withdrawal`.
    pub kind: String,
    /// The amount in minor units (positive).
    pub amount: i64,
    /// The balance after it.
    pub balance: i64,
    /// The correlation id of the request that caused it (a transfer's, for transfer legs).
    pub correlation_id: Option<uuid::Uuid>,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
}

/// One row of the transfer status read model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferView {
    /// The transfer id.
    pub id: String,
    /// Source account id.
    pub from: String,
    /// Target account id.
    pub to: String,
    /// Amount in minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Where it is.
    pub status: TransferStatus,
    /// Why it failed, if it did.
    pub reason: Option<String>,
    /// Whether a debit was refunded.
    pub refunded: bool,
    /// The transfer stream's version the row reflects.
    pub version: u64,
}

/// Read-model storage inside a backend transaction. Writes are idempotent
/// (keyed by account id and version, or transfer id).
pub trait ViewsTx: Send {
    /// The summary of an account, as seen inside this transaction.
    fn summary(&mut self, id: &str) -> impl Future<Output = Result<Option<AccountSummary>, HandlerError>> + Send;
    /// Inserts or replaces an account summary.
    fn put_summary(&mut self, row: &AccountSummary) -> impl Future<Output = Result<(), HandlerError>> + Send;
    /// Records a movement (ignored if that account version is already recorded).
    fn add_history(&mut self, entry: &HistoryEntry) -> impl Future<Output = Result<(), HandlerError>> + Send;
    /// The transfer row, as seen inside this transaction.
    fn transfer(&mut self, id: &str) -> impl Future<Output = Result<Option<TransferView>, HandlerError>> + Send;
    /// Inserts or replaces a transfer row.
    fn put_transfer(&mut self, row: &TransferView) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Applies a batch of events in order ([`apply_event`] for each by
    /// default); on failure, the index of the failing event and its error.
    /// The SQL transactions override it: one read of every row the batch
    /// touches, the fold in memory, then multi-row writes.
    fn apply_batch(
        &mut self,
        events: &[&RecordedEvent],
    ) -> impl Future<Output = Result<(), (usize, HandlerError)>> + Send
    where
        Self: Sized,
    {
        async move {
            for (i, event) in events.iter().enumerate() {
                apply_event(self, event).await.map_err(|e| (i, e))?;
            }
            Ok(())
        }
    }
}

/// The projection that keeps the three read models.
#[derive(Debug, Clone, Copy, Default)]
pub struct BankViews;

impl BankViews {
    /// The projection's name.
    pub const NAME: &'static str = "bank-views";

    /// Its tables in SQL, replaced together by a rebuild
    /// ([`eslab_projection::ReadModel`]).
    pub const TABLES: [&'static str; 3] = ["account_summary", "account_history", "transfer_status"];
}

fn decode<E: eslab_core::DomainEvent>(event: &RecordedEvent) -> Result<E, HandlerError> {
    JsonCodec.decode(event).map_err(|e| HandlerError::new(e.to_string()).with_source(e))
}

/// A row at `seen` may only take the next version.
fn check_no_gap(stream: &eslab_core::StreamId, seen: Option<u64>, version: u64) -> Result<(), HandlerError> {
    let expected = seen.unwrap_or(0) + 1;
    if version == expected {
        Ok(())
    } else {
        Err(HandlerError::new(format!("{stream}: gap, expected version {expected}, got {version}")))
    }
}

/// Applies one event to the read models; events at or below a row's version
/// are ignored, so re-delivery (at-least-once consumers) is harmless.
pub async fn apply_event<T: ViewsTx>(tx: &mut T, event: &RecordedEvent) -> Result<(), HandlerError> {
    let version = event.stream_version.get();
    let id = event.stream_id.id().to_owned();
    match event.stream_id.category() {
        "account" => {
            let current = tx.summary(&id).await?;
            if current.as_ref().is_some_and(|row| row.version >= version) {
                return Ok(());
            }
            check_no_gap(&event.stream_id, current.as_ref().map(|r| r.version), version)?;
            let movement = |kind: &str, amount: i64, balance: i64| HistoryEntry {
                account_id: id.clone(),
                version,
                kind: kind.to_owned(),
                amount,
                balance,
                correlation_id: event.metadata.correlation_id,
                occurred_at: event.metadata.occurred_at,
            };
            let row = match (decode::<AccountEvent>(event)?, current) {
                (AccountEvent::AccountOpened { owner, currency, overdraft_limit }, None) => AccountSummary {
                    id: id.clone(),
                    owner: owner.name.into_known(),
                    currency: currency.code().to_owned(),
                    balance: 0,
                    overdraft_limit: overdraft_limit.minor(),
                    status: AccountStatus::Open,
                    version,
                },
                (AccountEvent::MoneyDeposited { amount, balance }, Some(row)) => {
                    tx.add_history(&movement("deposit", amount.minor(), balance.minor())).await?;
                    AccountSummary { balance: balance.minor(), version, ..row }
                }
                (AccountEvent::MoneyWithdrawn { amount, balance }, Some(row)) => {
                    tx.add_history(&movement("withdrawal", amount.minor(), balance.minor())).await?;
                    AccountSummary { balance: balance.minor(), version, ..row }
                }
                (AccountEvent::AccountClosed {}, Some(row)) => {
                    AccountSummary { status: AccountStatus::Closed, version, ..row }
                }
                (AccountEvent::OwnerForgotten {}, Some(row)) => AccountSummary { owner: None, version, ..row },
                (e, current) => {
                    return Err(HandlerError::new(format!(
                        "{} at {} version {version} does not follow {:?}",
                        eslab_core::DomainEvent::event_type(&e),
                        event.stream_id,
                        current.map(|r| r.version)
                    )));
                }
            };
            tx.put_summary(&row).await
        }
        "transfer" => {
            let current = tx.transfer(&id).await?;
            if current.as_ref().is_some_and(|row| row.version >= version) {
                return Ok(());
            }
            check_no_gap(&event.stream_id, current.as_ref().map(|r| r.version), version)?;
            let row = match (decode::<TransferEvent>(event)?, current) {
                (TransferEvent::TransferRequested { from, to, amount, currency }, None) => TransferView {
                    id: id.clone(),
                    from,
                    to,
                    amount: amount.minor(),
                    currency: currency.code().to_owned(),
                    status: TransferStatus::Requested,
                    reason: None,
                    refunded: false,
                    version,
                },
                (TransferEvent::SourceDebited {}, Some(row)) => {
                    TransferView { status: TransferStatus::Debited, version, ..row }
                }
                (TransferEvent::TargetCreditRefused { reason }, Some(row)) => {
                    TransferView { status: TransferStatus::Refunding, reason: Some(reason), version, ..row }
                }
                (TransferEvent::TransferCompleted {}, Some(row)) => {
                    TransferView { status: TransferStatus::Completed, version, ..row }
                }
                (TransferEvent::TransferFailed { reason, refunded }, Some(row)) => {
                    TransferView { status: TransferStatus::Failed, reason: Some(reason), refunded, version, ..row }
                }
                (e, _) => {
                    return Err(HandlerError::new(format!(
                        "{} at {} version {version} has no transfer row to update",
                        eslab_core::DomainEvent::event_type(&e),
                        event.stream_id
                    )));
                }
            };
            tx.put_transfer(&row).await
        }
        _ => Ok(()),
    }
}

impl<B> Projection<B> for BankViews
where
    B: Backend,
    B::Tx: ViewsTx,
{
    fn name(&self) -> &str {
        BankViews::NAME
    }

    async fn apply(&self, tx: &mut B::Tx, event: &RecordedEvent) -> Result<(), HandlerError> {
        apply_event(tx, event).await
    }

    async fn apply_all(&self, tx: &mut B::Tx, events: &[&RecordedEvent]) -> Result<(), (usize, HandlerError)> {
        tx.apply_batch(events).await
    }

    /// An account's owner forgotten (subject `account-<id>`): the summary's
    /// owner becomes `None`, as a rebuild would leave it. The history and the
    /// transfers hold no personal data.
    async fn forget(&self, tx: &mut B::Tx, subject: &eslab_core::Subject) -> Result<(), HandlerError> {
        let Ok(stream) = subject.as_str().parse::<eslab_core::StreamId>() else { return Ok(()) };
        if stream.category() != <crate::Account as eslab_core::Aggregate>::KIND {
            return Ok(());
        }
        if let Some(row) = tx.summary(stream.id()).await?
            && row.owner.is_some()
        {
            tx.put_summary(&AccountSummary { owner: None, ..row }).await?;
        }
        Ok(())
    }
}

mod memory {
    //! The read models on the in-memory backend: one JSON document per row.

    use eslab_projection::HandlerError;
    use eslab_projection::memory::{MemoryBackend, MemoryTx};
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::{AccountSummary, HistoryEntry, TransferView, ViewsTx};

    pub(super) const SUMMARY: &str = "account_summary";
    pub(super) const HISTORY: &str = "account_history";
    pub(super) const TRANSFER: &str = "transfer_status";

    fn get<T: DeserializeOwned>(tx: &MemoryTx, table: &str, key: &str) -> Result<Option<T>, HandlerError> {
        tx.get(table, key)
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| HandlerError::new(format!("corrupt {table} row {key}: {e}")))
    }

    fn put<T: Serialize>(tx: &mut MemoryTx, table: &str, key: &str, row: &T) -> Result<(), HandlerError> {
        let value = serde_json::to_value(row).map_err(|e| HandlerError::new(e.to_string()).with_source(e))?;
        tx.put(table, key, value);
        Ok(())
    }

    /// The history key sorts by account, then version.
    pub(super) fn history_key(account: &str, version: u64) -> String {
        format!("{account}/{version:020}")
    }

    impl ViewsTx for MemoryTx {
        async fn summary(&mut self, id: &str) -> Result<Option<AccountSummary>, HandlerError> {
            get(self, SUMMARY, id)
        }

        async fn put_summary(&mut self, row: &AccountSummary) -> Result<(), HandlerError> {
            put(self, SUMMARY, &row.id, row)
        }

        async fn add_history(&mut self, entry: &HistoryEntry) -> Result<(), HandlerError> {
            let key = history_key(&entry.account_id, entry.version);
            if self.get(HISTORY, &key).is_none() {
                put(self, HISTORY, &key, entry)?;
            }
            Ok(())
        }

        async fn transfer(&mut self, id: &str) -> Result<Option<TransferView>, HandlerError> {
            get(self, TRANSFER, id)
        }

        async fn put_transfer(&mut self, row: &TransferView) -> Result<(), HandlerError> {
            put(self, TRANSFER, &row.id, row)
        }
    }

    /// Queries of the read models kept in a [`MemoryBackend`].
    pub(super) fn rows<T: DeserializeOwned>(backend: &MemoryBackend, table: &str) -> Vec<T> {
        backend.table(table).into_values().filter_map(|v| serde_json::from_value(v).ok()).collect()
    }
}

/// Reads the bank's read models from the in-memory backend.
pub trait MemoryViews {
    /// Every account summary, by id.
    fn account_summaries(&self) -> Vec<AccountSummary>;
    /// Every history entry, by account then version.
    fn account_history(&self) -> Vec<HistoryEntry>;
    /// Every transfer row, by id.
    fn transfers(&self) -> Vec<TransferView>;
}

impl MemoryViews for eslab_projection::memory::MemoryBackend {
    fn account_summaries(&self) -> Vec<AccountSummary> {
        memory::rows(self, memory::SUMMARY)
    }

    fn account_history(&self) -> Vec<HistoryEntry> {
        memory::rows(self, memory::HISTORY)
    }

    fn transfers(&self) -> Vec<TransferView> {
        memory::rows(self, memory::TRANSFER)
    }
}
