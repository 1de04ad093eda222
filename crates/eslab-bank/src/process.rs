//! The transfer process manager (saga): drives each transfer from request to
//! completion or refunded failure, reacting to the transfer's own events.
//!
//! Every step writes the account's event and the transfer's next event in **one
//! atomic multi-stream append** (both with exact expected versions), so there is
//! no moment where money moved but the transfer does not know it. Re-running a
//! step is harmless: it first checks the transfer's status, and its events have
//! deterministic ids (UUID v5 of the transfer id and the step), so a racing
//! duplicate is refused by the store rather than applied twice. Correlation and
//! causation ids flow from the triggering event.

use eslab_core::{
    Aggregate, Codec, Error, EventAppender, EventStorage, EventStore, ExpectedVersion, FeedFilter, JsonCodec, Metadata,
    NewEvent, RecordedEvent, Repository, StreamAppend,
};
use eslab_projection::{Backend, HandlerError, Projection};
use uuid::Uuid;

use crate::account::{Account, AccountCommand};
use crate::transfer::{Transfer, TransferEvent, TransferRequest, TransferStatus};

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The source was debited.
    Debited,
    /// The source refused the debit; the transfer failed without moving money.
    DebitRefused,
    /// The target was credited; the transfer completed.
    Completed,
    /// The target refused the credit; a refund follows.
    CreditRefused,
    /// The source was refunded; the transfer failed.
    Refunded,
    /// Nothing to do: the step was done before (a re-delivered event) or the event starts no step.
    Nothing,
}

/// How often a step retries after a concurrent write to one of its streams.
const STEP_ATTEMPTS: u32 = 10;

/// The transfer process manager. Register it with an
/// [`eslab_projection::Runner`] (its name is `transfer-process`, it reads the
/// `transfer` category) or call [`handle`](Self::handle) directly.
#[derive(Debug, Clone)]
pub struct TransferProcess<S> {
    store: EventStore<S>,
    accounts: Repository<Account, S>,
    transfers: Repository<Transfer, S>,
}

impl<S: EventStorage + Clone + 'static> TransferProcess<S> {
    /// A process manager over `store` (use the store with the bank's upcasters).
    pub fn new(store: EventStore<S>) -> Self {
        TransferProcess { accounts: Repository::new(store.clone()), transfers: Repository::new(store.clone()), store }
    }

    /// Takes the step that `event` (of a transfer stream) calls for.
    pub async fn handle(&self, event: &RecordedEvent) -> Result<Step, Error> {
        if event.stream_id.category() != Transfer::KIND {
            return Ok(Step::Nothing);
        }
        let transfer_id = event.stream_id.id().to_owned();
        let metadata = Metadata::caused_by(&event.metadata, event.event_id);
        let step = match event.event_type.as_str() {
            "TransferRequested" => self.debit(&transfer_id, &metadata).await?,
            "SourceDebited" => self.credit(&transfer_id, &metadata).await?,
            "TargetCreditRefused" => self.refund(&transfer_id, &metadata).await?,
            _ => Step::Nothing,
        };
        Ok(step)
    }

    async fn debit(&self, transfer_id: &str, metadata: &Metadata) -> Result<Step, Error> {
        self.step(
            transfer_id,
            TransferStatus::Requested,
            "debit",
            metadata,
            |req| (req.from.clone(), AccountCommand::Withdraw { amount: req.amount, currency: req.currency }),
            |_, outcome| {
                Ok(match outcome {
                    Ok(()) => (TransferEvent::SourceDebited {}, Step::Debited),
                    Err(rule) => (TransferEvent::TransferFailed { reason: rule, refunded: false }, Step::DebitRefused),
                })
            },
        )
        .await
    }

    async fn credit(&self, transfer_id: &str, metadata: &Metadata) -> Result<Step, Error> {
        self.step(
            transfer_id,
            TransferStatus::Debited,
            "credit",
            metadata,
            |req| (req.to.clone(), AccountCommand::Deposit { amount: req.amount, currency: req.currency }),
            |_, outcome| {
                Ok(match outcome {
                    Ok(()) => (TransferEvent::TransferCompleted {}, Step::Completed),
                    Err(rule) => (TransferEvent::TargetCreditRefused { reason: rule }, Step::CreditRefused),
                })
            },
        )
        .await
    }

    async fn refund(&self, transfer_id: &str, metadata: &Metadata) -> Result<Step, Error> {
        self.step(
            transfer_id,
            TransferStatus::Refunding,
            "refund",
            metadata,
            |req| (req.from.clone(), AccountCommand::Deposit { amount: req.amount, currency: req.currency }),
            |transfer, outcome| match outcome {
                Ok(()) => {
                    let reason = transfer.failure.clone().unwrap_or_default();
                    Ok((TransferEvent::TransferFailed { reason, refunded: true }, Step::Refunded))
                }
                // A refund must never be dropped: fail the step, so the runner parks
                // the transfer for an operator.
                Err(rule) => Err(Error::InvalidRequest(format!(
                    "transfer {transfer_id}: the source account refused its refund ({rule}); operator action needed"
                ))),
            },
        )
        .await
    }

    /// One step: if the transfer is at `status`, decide the account command;
    /// then append the account's events (if accepted) and the transfer's next
    /// event in one atomic multi-stream append. Retries on conflict.
    async fn step(
        &self,
        transfer_id: &str,
        status: TransferStatus,
        name: &str,
        metadata: &Metadata,
        command: impl Fn(&TransferRequest) -> (String, AccountCommand),
        next: impl Fn(&Transfer, Result<(), String>) -> Result<(TransferEvent, Step), Error>,
    ) -> Result<Step, Error> {
        let transfer_stream = Transfer::stream_id(transfer_id)?;
        let step_id = Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{transfer_stream}/{name}").as_bytes());
        let mut last_conflict = None;
        for _ in 0..STEP_ATTEMPTS {
            let transfer = self.transfers.load(transfer_id).await?;
            let Some(request) = transfer.state.request.as_ref().filter(|_| transfer.state.status == status) else {
                return Ok(Step::Nothing);
            };
            let (account_id, account_command) = command(request);
            let account = self.accounts.load(&account_id).await?;
            let (outcome, account_events) = match account.state.decide(&account_command) {
                Ok(events) => (Ok(()), events),
                Err(e) => (Err(e.rule().to_owned()), Vec::new()),
            };
            let (transfer_event, step) = next(&transfer.state, outcome)?;
            let mut appends = Vec::with_capacity(2);
            if !account_events.is_empty() {
                appends.push(StreamAppend::new(
                    Account::stream_id(&account_id)?,
                    ExpectedVersion::Exact(account.version),
                    encode(&account_events, metadata, step_id, 0)?,
                ));
            }
            appends.push(StreamAppend::new(
                transfer_stream.clone(),
                ExpectedVersion::Exact(transfer.version),
                encode(std::slice::from_ref(&transfer_event), metadata, step_id, account_events.len())?,
            ));
            match self.store.append_streams(appends).await {
                Ok(_) => return Ok(step),
                Err(e) if e.is_conflict() => last_conflict = Some(e),
                // The step's deterministic ids are already stored: it was done.
                Err(Error::DuplicateEventId(_)) => return Ok(Step::Nothing),
                Err(e) => return Err(e),
            }
        }
        Err(last_conflict
            .unwrap_or_else(|| Error::InvalidRequest(format!("transfer {transfer_id}: step {name} gave up"))))
    }
}

/// Encodes events with ids derived from the step id, so a re-run is recognised.
fn encode<E: eslab_core::DomainEvent>(
    events: &[E],
    metadata: &Metadata,
    step_id: Uuid,
    offset: usize,
) -> Result<Vec<NewEvent>, Error> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let index = u64::try_from(offset + i).unwrap_or(u64::MAX);
            let id = Uuid::new_v5(&step_id, &index.to_be_bytes());
            JsonCodec.encode(e, metadata.clone()).map(|n| n.with_id(id))
        })
        .collect()
}

impl<S: EventStorage + Clone + 'static, B: Backend> Projection<B> for TransferProcess<S> {
    fn name(&self) -> &str {
        "transfer-process"
    }

    fn filter(&self) -> FeedFilter {
        FeedFilter::Category(Transfer::KIND.to_owned())
    }

    async fn apply(&self, _tx: &mut B::Tx, event: &RecordedEvent) -> Result<(), HandlerError> {
        match self.handle(event).await {
            Ok(_) => Ok(()),
            // The store was unreachable or kept conflicting: try the batch again later.
            Err(e) if e.is_unavailable() || e.is_conflict() => {
                Err(HandlerError::transient(e.to_string()).with_source(e))
            }
            Err(e) => Err(HandlerError::new(e.to_string()).with_source(e)),
        }
    }
}
