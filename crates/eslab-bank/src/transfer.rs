//! The `Transfer` aggregate: the record of one money transfer between two
//! accounts, whose steps the transfer process manager drives.
//!
//! ```text
//! Requested ──debit ok──► Debited ──credit ok──► Completed
//!     │                      │
//!     └─debit refused──► Failed (nothing moved)
//!                            └─credit refused──► Refunding ──refund ok──► Failed (refunded)
//! ```

use eslab_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::money::{Amount, Currency};

/// Commands a transfer accepts; all but `Request` are issued by the process manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferCommand {
    /// Ask to move `amount` from one account to another.
    Request {
        /// The source account id.
        from: String,
        /// The target account id.
        to: String,
        /// How much.
        amount: Amount,
        /// In which currency.
        currency: Currency,
    },
    /// The source account was debited.
    MarkDebited,
    /// The target account was credited: the transfer is complete.
    Complete,
    /// The source refused the debit: the transfer fails, nothing moved.
    FailDebit {
        /// The rule the source account refused with.
        reason: String,
    },
    /// The target refused the credit: the source must be refunded.
    RefuseCredit {
        /// The rule the target account refused with.
        reason: String,
    },
    /// The source was refunded: the transfer fails.
    MarkRefunded,
}

/// What happened to a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferEvent {
    /// A transfer was asked for.
    TransferRequested {
        /// The source account id.
        from: String,
        /// The target account id.
        to: String,
        /// How much.
        amount: Amount,
        /// In which currency.
        currency: Currency,
    },
    /// The source account was debited.
    SourceDebited {},
    /// The target account refused the credit; a refund follows.
    TargetCreditRefused {
        /// The target's rule.
        reason: String,
    },
    /// The money arrived.
    TransferCompleted {},
    /// The transfer failed; `refunded` says whether the source was debited and refunded.
    TransferFailed {
        /// Why.
        reason: String,
        /// Whether a debit was refunded.
        refunded: bool,
    },
}

impl TransferEvent {
    /// The record of a transfer carried out at once (one decision over both
    /// accounts): requested, debited and completed, appended together.
    pub fn done_at_once(request: &TransferRequest) -> [TransferEvent; 3] {
        [
            TransferEvent::TransferRequested {
                from: request.from.clone(),
                to: request.to.clone(),
                amount: request.amount,
                currency: request.currency,
            },
            TransferEvent::SourceDebited {},
            TransferEvent::TransferCompleted {},
        ]
    }
}

impl DomainEvent for TransferEvent {
    const EVENT_TYPES: &'static [&'static str] =
        &["TransferRequested", "SourceDebited", "TargetCreditRefused", "TransferCompleted", "TransferFailed"];

    fn event_type(&self) -> &'static str {
        match self {
            TransferEvent::TransferRequested { .. } => "TransferRequested",
            TransferEvent::SourceDebited {} => "SourceDebited",
            TransferEvent::TargetCreditRefused { .. } => "TargetCreditRefused",
            TransferEvent::TransferCompleted {} => "TransferCompleted",
            TransferEvent::TransferFailed { .. } => "TransferFailed",
        }
    }
}

/// Where a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    /// Not requested yet.
    #[default]
    New,
    /// Requested; the source is to be debited.
    Requested,
    /// The source was debited; the target is to be credited.
    Debited,
    /// The target refused; the source is to be refunded.
    Refunding,
    /// Done: the money moved.
    Completed,
    /// Done: the money did not move (or was refunded).
    Failed,
}

impl TransferStatus {
    /// Whether the transfer is finished.
    pub fn is_final(self) -> bool {
        matches!(self, TransferStatus::Completed | TransferStatus::Failed)
    }

    /// The status's snake-case name (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            TransferStatus::New => "new",
            TransferStatus::Requested => "requested",
            TransferStatus::Debited => "debited",
            TransferStatus::Refunding => "refunding",
            TransferStatus::Completed => "completed",
            TransferStatus::Failed => "failed",
        }
    }
}

/// Why a transfer refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// `Request` on a transfer that exists.
    #[error("the transfer was already requested")]
    AlreadyRequested,
    /// Source and target are the same account.
    #[error("a transfer needs two different accounts")]
    SameAccount,
    /// The command does not fit the transfer's status.
    #[error("the transfer is {status:?}; {command} does not apply")]
    WrongStatus {
        /// The status now.
        status: TransferStatus,
        /// The refused command's name.
        command: &'static str,
    },
}

impl TransferError {
    /// A stable machine-readable rule name.
    pub fn rule(&self) -> &'static str {
        match self {
            TransferError::AlreadyRequested => "already-requested",
            TransferError::SameAccount => "same-account",
            TransferError::WrongStatus { .. } => "wrong-status",
        }
    }
}

/// The state of one transfer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Transfer {
    /// Where it is.
    pub status: TransferStatus,
    /// The request (once requested).
    pub request: Option<TransferRequest>,
    /// Why it failed, if it did.
    pub failure: Option<String>,
}

/// A transfer's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    /// The source account id.
    pub from: String,
    /// The target account id.
    pub to: String,
    /// How much.
    pub amount: Amount,
    /// In which currency.
    pub currency: Currency,
}

impl Transfer {
    fn expect(&self, status: TransferStatus, command: &'static str) -> Result<(), TransferError> {
        if self.status == status { Ok(()) } else { Err(TransferError::WrongStatus { status: self.status, command }) }
    }
}

impl Aggregate for Transfer {
    const KIND: &'static str = "transfer";
    type Command = TransferCommand;
    type Event = TransferEvent;
    type Error = TransferError;

    fn decide(&self, command: &TransferCommand) -> Result<Vec<TransferEvent>, TransferError> {
        use TransferCommand as C;
        use TransferEvent as E;
        use TransferStatus as S;
        Ok(vec![match command {
            C::Request { from, to, amount, currency } => {
                if self.status != S::New {
                    return Err(TransferError::AlreadyRequested);
                }
                if from == to {
                    return Err(TransferError::SameAccount);
                }
                E::TransferRequested { from: from.clone(), to: to.clone(), amount: *amount, currency: *currency }
            }
            C::MarkDebited => {
                self.expect(S::Requested, "mark-debited")?;
                E::SourceDebited {}
            }
            C::Complete => {
                self.expect(S::Debited, "complete")?;
                E::TransferCompleted {}
            }
            C::FailDebit { reason } => {
                self.expect(S::Requested, "fail-debit")?;
                E::TransferFailed { reason: reason.clone(), refunded: false }
            }
            C::RefuseCredit { reason } => {
                self.expect(S::Debited, "refuse-credit")?;
                E::TargetCreditRefused { reason: reason.clone() }
            }
            C::MarkRefunded => {
                self.expect(S::Refunding, "mark-refunded")?;
                let reason = self.failure.clone().unwrap_or_default();
                E::TransferFailed { reason, refunded: true }
            }
        }])
    }

    fn evolve(&mut self, event: &TransferEvent) {
        match event {
            TransferEvent::TransferRequested { from, to, amount, currency } => {
                self.status = TransferStatus::Requested;
                self.request =
                    Some(TransferRequest { from: from.clone(), to: to.clone(), amount: *amount, currency: *currency });
            }
            TransferEvent::SourceDebited {} => self.status = TransferStatus::Debited,
            TransferEvent::TargetCreditRefused { reason } => {
                self.status = TransferStatus::Refunding;
                self.failure = Some(reason.clone());
            }
            TransferEvent::TransferCompleted {} => self.status = TransferStatus::Completed,
            TransferEvent::TransferFailed { reason, .. } => {
                self.status = TransferStatus::Failed;
                self.failure = Some(reason.clone());
            }
        }
    }
}
