//! # eslab-bank
//!
//! The example domain of eslab: bank accounts whose money is integer minor
//! units with checked arithmetic, transfers carried out by a process manager,
//! read models on every backend, and the application services
//! ([`Bank`], [`BankQueries`]) the HTTP service, the demo and the lab use.
//!
//! ```
//! use eslab_bank::{Account, AccountCommand, AccountEvent, Amount, OverdraftLimit};
//! use eslab_core::Aggregate;
//!
//! let eur = "EUR".parse().unwrap();
//! let open = AccountCommand::Open { owner: "Ada".into(), currency: eur, overdraft_limit: OverdraftLimit::NONE };
//! let mut account = Account::default();
//! for event in account.decide(&open).unwrap() {
//!     account.evolve(&event);
//! }
//! let deposit = AccountCommand::Deposit { amount: Amount::new(1_000).unwrap(), currency: eur };
//! let events = account.decide(&deposit).unwrap();
//! assert!(matches!(events[0], AccountEvent::MoneyDeposited { .. }));
//! ```

mod account;
mod atomic;
mod money;
mod process;
mod service;
mod transfer;
mod views;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod views_sql;

pub use account::{
    ACCOUNT_OPENED_SCHEMA_VERSION, Account, AccountCommand, AccountError, AccountEvent, AccountStatus, MAX_OWNER_CHARS,
    Owner, V1_DEFAULT_CURRENCY, upcasters,
};
pub use atomic::{AtomicTransfer, AtomicTransferDone, AtomicTransferError};
pub use money::{Amount, Balance, Currency, MoneyError, OverdraftLimit};
pub use process::{Step, TransferProcess};
pub use service::{Bank, BankOptions, BankQueries};
pub use transfer::{Transfer, TransferCommand, TransferError, TransferEvent, TransferRequest, TransferStatus};
pub use views::{AccountSummary, BankViews, HistoryEntry, MemoryViews, TransferView, ViewsTx, apply_event};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use views_sql::SqlViews;

// The README's example is compiled and run as a doctest here.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
