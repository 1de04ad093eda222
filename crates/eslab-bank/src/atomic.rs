//! A transfer as one decision over both accounts' events: a dynamic
//! consistency boundary instead of a saga.
//!
//! The decision reads the events tagged `account:<from>` or `account:<to>`
//! (every account event carries its account's tag, see [`Account`]'s
//! [`Aggregate::tags`]), folds each account, and appends in one atomic append
//! the withdrawal, the deposit and the transfer's record (requested, debited,
//! completed), on the condition that no event of either account was
//! committed since the read. There is nothing to compensate: either all of it
//! is written or none. Beside it, the [saga](crate::TransferProcess) moves the
//! money in three steps that other commands may interleave with, and refunds
//! when the credit is refused.
//!
//! The account streams are also appended at the versions the read saw, so an
//! aggregate command that appended to either account meanwhile conflicts
//! with it even without a tag. An account whose events predate tags (written
//! before accounts tagged their events) reads as unknown, or as not open when
//! only its opening is untagged: the transfer is refused, never decided on a
//! partial balance.

use eslab_core::{
    Aggregate, BoundaryDecision, DecideOnBoundary, ExpectedVersion, InvalidQuery, Query, QueryItem, Seen, StreamId,
    Tag, Version,
};
use serde::{Deserialize, Serialize};

use crate::account::{Account, AccountCommand, AccountError, AccountEvent};
use crate::money::{Amount, Balance, Currency};
use crate::transfer::{Transfer, TransferError, TransferEvent, TransferRequest};

/// A transfer decided at once over both accounts (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtomicTransfer {
    /// The transfer's id (its record's stream is `transfer-<id>`).
    pub transfer_id: String,
    /// The source account id.
    pub from: String,
    /// The target account id.
    pub to: String,
    /// How much.
    pub amount: Amount,
    /// In which currency.
    pub currency: Currency,
}

/// What an atomic transfer did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AtomicTransferDone {
    /// The transfer's id.
    pub transfer_id: String,
    /// The source's balance after it.
    pub from_balance: Balance,
    /// The target's balance after it.
    pub to_balance: Balance,
    /// The transfer record's version (3: requested, debited, completed).
    pub version: u64,
}

/// Why an atomic transfer was refused; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtomicTransferError {
    /// An account has no events.
    #[error("no account {0}")]
    UnknownAccount(StreamId),
    /// The transfer itself is not valid (same account, id taken).
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// An account refused its part (insufficient funds, currency, closed).
    #[error("account {account}: {error}")]
    Account {
        /// The refusing account's id.
        account: String,
        /// Why.
        #[source]
        error: AccountError,
    },
}

impl AtomicTransferError {
    /// A stable machine-readable rule name.
    pub fn rule(&self) -> &'static str {
        match self {
            AtomicTransferError::UnknownAccount(_) => "unknown-account",
            AtomicTransferError::Transfer(e) => e.rule(),
            AtomicTransferError::Account { error, .. } => error.rule(),
        }
    }
}

impl AtomicTransfer {
    fn streams(&self) -> Result<(StreamId, StreamId), AtomicTransferError> {
        let stream = |id: &str| {
            Account::stream_id(id)
                .map_err(|_| AtomicTransferError::Account { account: id.to_owned(), error: AccountError::NotOpen })
        };
        Ok((stream(&self.from)?, stream(&self.to)?))
    }
}

/// One account as the boundary's events leave it.
fn fold(stream: &StreamId, events: &[Seen<AccountEvent>]) -> Result<(Account, Version), AtomicTransferError> {
    let mut state = Account::default();
    let mut version = Version::NONE;
    for seen in events.iter().filter(|s| &s.stream_id == stream) {
        state.evolve(&seen.event);
        version = seen.stream_version;
    }
    if version.is_none() {
        return Err(AtomicTransferError::UnknownAccount(stream.clone()));
    }
    Ok((state, version))
}

impl DecideOnBoundary for AtomicTransfer {
    type Event = AccountEvent;
    type Output = AtomicTransferDone;
    type Error = AtomicTransferError;

    /// Every event of either account.
    fn query(&self) -> Result<Query, InvalidQuery> {
        let tag = |id: &str| {
            Account::stream_id(id).map(|s| Tag::of_stream(&s)).or_else(|_| Tag::new(format!("account:{id}")))
        };
        Query::new([QueryItem::tagged([tag(&self.from)?]), QueryItem::tagged([tag(&self.to)?])])
    }

    fn decide(
        &self,
        events: &[Seen<AccountEvent>],
    ) -> Result<BoundaryDecision<AtomicTransferDone>, AtomicTransferError> {
        if self.from == self.to {
            return Err(TransferError::SameAccount.into());
        }
        let (from_stream, to_stream) = self.streams()?;
        let (from, from_version) = fold(&from_stream, events)?;
        let (to, to_version) = fold(&to_stream, events)?;
        let withdrawn = from
            .decide(&AccountCommand::Withdraw { amount: self.amount, currency: self.currency })
            .map_err(|error| AtomicTransferError::Account { account: self.from.clone(), error })?;
        let deposited = to
            .decide(&AccountCommand::Deposit { amount: self.amount, currency: self.currency })
            .map_err(|error| AtomicTransferError::Account { account: self.to.clone(), error })?;
        let balance_after = |mut state: Account, events: &[AccountEvent]| {
            for e in events {
                state.evolve(e);
            }
            state.balance
        };
        let from_balance = balance_after(from, &withdrawn);
        let to_balance = balance_after(to, &deposited);
        let record = TransferEvent::done_at_once(&TransferRequest {
            from: self.from.clone(),
            to: self.to.clone(),
            amount: self.amount,
            currency: self.currency,
        });
        let transfer = Transfer::stream_id(&self.transfer_id)
            .map_err(|_| AtomicTransferError::Transfer(TransferError::AlreadyRequested))?;
        let done = AtomicTransferDone {
            transfer_id: self.transfer_id.clone(),
            from_balance,
            to_balance,
            version: record.len() as u64,
        };
        Ok(BoundaryDecision::new(done)
            .append_to::<Account>(from_stream, ExpectedVersion::Exact(from_version), &withdrawn)
            .append_to::<Account>(to_stream, ExpectedVersion::Exact(to_version), &deposited)
            .append_to::<Transfer>(transfer, ExpectedVersion::NoStream, &record))
    }
}
