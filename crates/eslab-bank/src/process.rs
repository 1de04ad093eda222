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
    Aggregate, CommandError, CommandOptions, Decide, Decided, Decision, Error, EventStorage, EventStore,
    ExpectedVersion, FeedFilter, Loaded, Metadata, RecordedEvent, Repository, StreamAppend, encode_events,
};
use eslab_projection::{Backend, HandlerError, Projection};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::account::{Account, AccountCommand};
use crate::service::{Bank, BankOptions};
use crate::transfer::{Transfer, TransferEvent, TransferRequest, TransferStatus};

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// The transfer process manager. Register it with an
/// [`eslab_projection::Runner`] (its name is `transfer-process`, it reads the
/// `transfer` category) or call [`handle`](Self::handle) directly.
///
/// Each step is one decision of the library's command path
/// ([`Repository::run_with`]) on the transfer: it loads the account, decides
/// the account command, and appends the account's events beside the
/// transfer's next event, retrying on conflict per the bank's retry policy.
#[derive(Debug, Clone)]
pub struct TransferProcess<S> {
    bank: Bank<S>,
}

impl<S: EventStorage + Clone + 'static> TransferProcess<S> {
    /// A process manager over `store` (use the store with the bank's
    /// upcasters), with the default [`BankOptions`].
    pub fn new(store: EventStore<S>) -> Self {
        TransferProcess::with_bank(Bank::new(store, &BankOptions::default()))
    }

    /// A process manager sharing `bank`'s repositories (their caches and locks).
    pub fn with_bank(bank: Bank<S>) -> Self {
        TransferProcess { bank }
    }

    /// Takes the step that `event` (of a transfer stream) calls for.
    pub async fn handle(&self, event: &RecordedEvent) -> Result<Step, Error> {
        if event.stream_id.category() != Transfer::KIND {
            return Ok(Step::Nothing);
        }
        let transfer_id = event.stream_id.id();
        let metadata = Metadata::caused_by(&event.metadata, event.event_id);
        match event.event_type.as_str() {
            "TransferRequested" => self.debit(transfer_id, metadata).await,
            "SourceDebited" => self.credit(transfer_id, metadata).await,
            "TargetCreditRefused" => self.refund(transfer_id, metadata).await,
            _ => Ok(Step::Nothing),
        }
    }

    async fn debit(&self, transfer_id: &str, metadata: Metadata) -> Result<Step, Error> {
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

    async fn credit(&self, transfer_id: &str, metadata: Metadata) -> Result<Step, Error> {
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

    async fn refund(&self, transfer_id: &str, metadata: Metadata) -> Result<Step, Error> {
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
                    "the source account refused its refund ({rule}); operator action needed"
                ))),
            },
        )
        .await
    }

    /// One step through the library's command path: if the transfer is at
    /// `status`, decide the account command; append the account's events (if
    /// accepted) and the transfer's next event in one atomic multi-stream
    /// append, with ids derived from the step (a racing duplicate is refused
    /// by the store). Retries on conflict.
    async fn step(
        &self,
        transfer_id: &str,
        status: TransferStatus,
        name: &str,
        metadata: Metadata,
        command: impl Fn(&TransferRequest) -> (String, AccountCommand) + Sync,
        next: impl Fn(&Transfer, Result<(), String>) -> Result<(TransferEvent, Step), Error> + Sync,
    ) -> Result<Step, Error> {
        let transfer_stream = Transfer::stream_id(transfer_id)?;
        let step_id = Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{transfer_stream}/{name}").as_bytes());
        let decision = StepDecision { accounts: self.bank.accounts(), status, step_id, metadata, command, next };
        let options = CommandOptions::new(decision.metadata.clone()).with_event_ids(step_id);
        match self.bank.transfers().run_with(transfer_id, &decision, &options, |_, _, step| step).await {
            Ok(outcome) => Ok(outcome.into_response()),
            // The step's deterministic ids are already stored: it was done.
            Err(CommandError::Store(Error::DuplicateEventId(_))) => Ok(Step::Nothing),
            Err(CommandError::Store(e) | CommandError::Rejected(e)) => Err(e),
            Err(other) => Err(Error::InvalidRequest(format!("transfer {transfer_id}: step {name}: {other}"))),
        }
    }
}

/// One saga step as a decision on the transfer (see [`TransferProcess::step`]).
struct StepDecision<'a, S, C, N> {
    accounts: &'a Repository<Account, S>,
    status: TransferStatus,
    step_id: Uuid,
    metadata: Metadata,
    command: C,
    next: N,
}

impl<S, C, N> Decide<Transfer> for StepDecision<'_, S, C, N>
where
    S: EventStorage + Clone + 'static,
    C: Fn(&TransferRequest) -> (String, AccountCommand) + Sync,
    N: Fn(&Transfer, Result<(), String>) -> Result<(TransferEvent, Step), Error> + Sync,
{
    type Output = Step;
    type Error = Error;

    async fn decide(&self, transfer: &Loaded<Transfer>) -> Decided<Transfer, Self> {
        let Some(request) = transfer.state.request.as_ref().filter(|_| transfer.state.status == self.status) else {
            return Ok(Decision::nothing(Step::Nothing));
        };
        let (account_id, account_command) = (self.command)(request);
        // The latest state: a cached one could keep the step conflicting.
        let account = self.accounts.load_latest(&account_id).await?;
        let (outcome, account_events) = match account.state.decide(&account_command) {
            Ok(events) => (Ok(()), events),
            Err(e) => (Err(e.rule().to_owned()), Vec::new()),
        };
        let (transfer_event, step) = (self.next)(&transfer.state, outcome).map_err(CommandError::Rejected)?;
        let decision = Decision::new(vec![transfer_event], step);
        if account_events.is_empty() {
            return Ok(decision);
        }
        // The transfer's event takes derived id 0; the account's follow.
        let stream = Account::stream_id(&account_id).map_err(Error::from)?;
        let encoded = encode_events::<Account>(&stream, &account_events, &self.metadata, Some(self.step_id), 1)?;
        Ok(decision.also(StreamAppend::new(stream, ExpectedVersion::Exact(account.version), encoded)))
    }
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
