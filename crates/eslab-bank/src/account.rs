//! The `Account` aggregate: open, deposit, withdraw, close.

use eslab_core::{Aggregate, DomainEvent, Personal, Snapshotting, StreamId, Subject, Tag, Upcasters};
use serde::{Deserialize, Serialize};

use crate::money::{Amount, Balance, Currency, MoneyError, OverdraftLimit};

/// The longest owner name accepted when an account is opened, in characters
/// (Unicode scalar values, after trimming); a longer one is refused with
/// [`AccountError::OwnerTooLong`] (rule `owner-too-long`). It bounds what one
/// account weighs in pages and events. Accounts opened before the limit keep
/// their (longer) names: the limit applies to new commands, not to stored events.
pub const MAX_OWNER_CHARS: usize = 200;

/// Who owns an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The owner's name: personal data, sealed with the key of the account's
    /// data subject (`account-<id>`, see [`Aggregate::subject`]) wherever it is
    /// stored, and [`Personal::Forgotten`] once the owner is forgotten. Events
    /// written before names were personal hold a bare string, read as known.
    pub name: Personal<String>,
}

/// Commands an account accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    /// Open the account.
    Open {
        /// The owner's name (non-blank, at most [`MAX_OWNER_CHARS`] characters).
        owner: String,
        /// The account's currency.
        currency: Currency,
        /// How far below zero the balance may go.
        overdraft_limit: OverdraftLimit,
    },
    /// Put money in.
    Deposit {
        /// How much.
        amount: Amount,
        /// In which currency (must be the account's).
        currency: Currency,
    },
    /// Take money out.
    Withdraw {
        /// How much.
        amount: Amount,
        /// In which currency (must be the account's).
        currency: Currency,
    },
    /// Close the account (the balance must be zero).
    Close,
    /// Record that the owner was forgotten (see [`Bank::forget_owner`](crate::Bank::forget_owner)):
    /// once per account; again, it decides nothing.
    ForgetOwner,
}

/// What happened to an account.
///
/// `AccountOpened` is at schema version 2: version 1 stored `{"owner": "<name>"}`
/// only; [`upcasters`] turns it into version 2 on read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// The account was opened.
    AccountOpened {
        /// Who owns it.
        owner: Owner,
        /// Its currency.
        currency: Currency,
        /// Its overdraft limit.
        overdraft_limit: OverdraftLimit,
    },
    /// Money was deposited.
    MoneyDeposited {
        /// How much.
        amount: Amount,
        /// The balance after the deposit.
        balance: Balance,
    },
    /// Money was withdrawn.
    MoneyWithdrawn {
        /// How much.
        amount: Amount,
        /// The balance after the withdrawal.
        balance: Balance,
    },
    /// The account was closed.
    AccountClosed {},
    /// The owner was forgotten: their name reads as forgotten from here on,
    /// in every process (a state cached before sees this event). No personal
    /// data; the key is deleted right after it is recorded.
    OwnerForgotten {},
}

/// The schema version of `AccountOpened` this code writes.
pub const ACCOUNT_OPENED_SCHEMA_VERSION: u32 = 2;

/// The currency assumed for `AccountOpened` v1 events, which predate
/// multi-currency accounts: every v1 account was a euro account.
pub const V1_DEFAULT_CURRENCY: &str = "EUR";

impl DomainEvent for AccountEvent {
    const EVENT_TYPES: &'static [&'static str] =
        &["AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "AccountClosed", "OwnerForgotten"];

    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::AccountOpened { .. } => "AccountOpened",
            AccountEvent::MoneyDeposited { .. } => "MoneyDeposited",
            AccountEvent::MoneyWithdrawn { .. } => "MoneyWithdrawn",
            AccountEvent::AccountClosed {} => "AccountClosed",
            AccountEvent::OwnerForgotten {} => "OwnerForgotten",
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            AccountEvent::AccountOpened { .. } => ACCOUNT_OPENED_SCHEMA_VERSION,
            _ => 1,
        }
    }
}

/// The account's upcasters: `AccountOpened` v1 `{"owner": "<name>"}` →
/// v2 `{"owner": {"name": "<name>"}, "currency": "EUR", "overdraft_limit": 0}`
/// (v1 accounts were euro accounts without overdraft).
///
/// ```
/// use serde_json::json;
/// let (v, p) = eslab_bank::upcasters().upcast_payload("AccountOpened", 1, json!({"owner": "Ada"})).unwrap();
/// assert_eq!(v, 2);
/// assert_eq!(p, json!({"owner": {"name": "Ada"}, "currency": "EUR", "overdraft_limit": 0}));
/// ```
pub fn upcasters() -> Upcasters {
    let registered = Upcasters::new().register("AccountOpened", 1, 2, |payload| {
        let serde_json::Value::Object(mut map) = payload else {
            return Err("AccountOpened v1 payload must be an object".to_owned());
        };
        let name = match map.remove("owner") {
            Some(serde_json::Value::String(name)) => name,
            _ => return Err("AccountOpened v1 needs a string `owner`".to_owned()),
        };
        map.insert("owner".into(), serde_json::json!({ "name": name }));
        map.entry("currency").or_insert_with(|| V1_DEFAULT_CURRENCY.into());
        map.entry("overdraft_limit").or_insert_with(|| 0.into());
        Ok(serde_json::Value::Object(map))
    });
    // Registering one upcaster on an empty registry cannot collide.
    registered.unwrap_or_default()
}

/// Why an account refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// The account is already open (or was opened and closed).
    #[error("the account is already open")]
    AlreadyOpen,
    /// The account has not been opened.
    #[error("the account is not open")]
    NotOpen,
    /// The account is closed.
    #[error("the account is closed")]
    Closed,
    /// The owner's name is blank.
    #[error("the owner's name must not be blank")]
    BlankOwner,
    /// The owner's name is longer than [`MAX_OWNER_CHARS`].
    #[error("the owner's name has {0} characters, more than the {MAX_OWNER_CHARS} allowed")]
    OwnerTooLong(usize),
    /// The command's currency is not the account's.
    #[error("currency mismatch: the account holds {account}, the command is in {command}")]
    CurrencyMismatch {
        /// The account's currency.
        account: Currency,
        /// The command's currency.
        command: Currency,
    },
    /// The withdrawal would take the balance below minus the overdraft limit.
    #[error("insufficient funds: balance {balance}, overdraft limit {overdraft_limit}, requested {requested}")]
    InsufficientFunds {
        /// The balance now.
        balance: Balance,
        /// The overdraft limit.
        overdraft_limit: OverdraftLimit,
        /// The amount asked for.
        requested: Amount,
    },
    /// Only an account with a zero balance can be closed.
    #[error("cannot close an account with balance {0}")]
    NonZeroBalance(Balance),
    /// The money arithmetic overflowed.
    #[error(transparent)]
    Money(#[from] MoneyError),
}

impl AccountError {
    /// A stable machine-readable name of the rule that refused the command.
    pub fn rule(&self) -> &'static str {
        match self {
            AccountError::AlreadyOpen => "already-open",
            AccountError::NotOpen => "not-open",
            AccountError::Closed => "closed",
            AccountError::BlankOwner => "blank-owner",
            AccountError::OwnerTooLong(_) => "owner-too-long",
            AccountError::CurrencyMismatch { .. } => "currency-mismatch",
            AccountError::InsufficientFunds { .. } => "insufficient-funds",
            AccountError::NonZeroBalance(_) => "non-zero-balance",
            AccountError::Money(_) => "money-overflow",
        }
    }
}

/// Where an account is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// No `AccountOpened` yet.
    #[default]
    Unopened,
    /// Open for business.
    Open,
    /// Closed for good.
    Closed,
}

/// The state of one account.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Account {
    /// Life-cycle status.
    pub status: AccountStatus,
    /// The owner (once opened).
    pub owner: Option<Owner>,
    /// The currency (once opened).
    pub currency: Option<Currency>,
    /// The overdraft limit.
    pub overdraft_limit: OverdraftLimit,
    /// The balance.
    pub balance: Balance,
}

impl Account {
    fn open_currency(&self) -> Result<Currency, AccountError> {
        match (self.status, self.currency) {
            (AccountStatus::Open, Some(currency)) => Ok(currency),
            (AccountStatus::Closed, _) => Err(AccountError::Closed),
            _ => Err(AccountError::NotOpen),
        }
    }

    fn check_currency(&self, command: Currency) -> Result<(), AccountError> {
        let account = self.open_currency()?;
        if account == command { Ok(()) } else { Err(AccountError::CurrencyMismatch { account, command }) }
    }
}

impl Aggregate for Account {
    const KIND: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    /// Every account event carries its account's tag, `account:<id>`: the
    /// [atomic transfer](crate::AtomicTransfer) reads two accounts by tag.
    fn tags(stream: &StreamId, _: &AccountEvent) -> Vec<Tag> {
        vec![Tag::of_stream(stream)]
    }

    /// The owner of an account is its data subject, named after the stream
    /// (`account-<id>`): forgetting it makes the owner's name unreadable.
    fn subject(stream: &StreamId) -> Option<Subject> {
        Some(Subject::of_stream(stream))
    }

    fn decide(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open { owner, currency, overdraft_limit } => {
                if self.status != AccountStatus::Unopened {
                    return Err(AccountError::AlreadyOpen);
                }
                let name = owner.trim();
                if name.is_empty() {
                    return Err(AccountError::BlankOwner);
                }
                let chars = name.chars().count();
                if chars > MAX_OWNER_CHARS {
                    return Err(AccountError::OwnerTooLong(chars));
                }
                Ok(vec![AccountEvent::AccountOpened {
                    owner: Owner { name: Personal::Known(name.to_owned()) },
                    currency: *currency,
                    overdraft_limit: *overdraft_limit,
                }])
            }
            AccountCommand::Deposit { amount, currency } => {
                self.check_currency(*currency)?;
                let balance = self.balance.plus(*amount)?;
                Ok(vec![AccountEvent::MoneyDeposited { amount: *amount, balance }])
            }
            AccountCommand::Withdraw { amount, currency } => {
                self.check_currency(*currency)?;
                let balance = self.balance.minus(*amount)?;
                if balance < self.overdraft_limit.floor() {
                    return Err(AccountError::InsufficientFunds {
                        balance: self.balance,
                        overdraft_limit: self.overdraft_limit,
                        requested: *amount,
                    });
                }
                Ok(vec![AccountEvent::MoneyWithdrawn { amount: *amount, balance }])
            }
            AccountCommand::ForgetOwner => match &self.owner {
                None => Err(AccountError::NotOpen),
                Some(owner) if owner.name.is_forgotten() => Ok(Vec::new()),
                Some(_) => Ok(vec![AccountEvent::OwnerForgotten {}]),
            },
            AccountCommand::Close => {
                self.open_currency()?;
                if self.balance != Balance::ZERO {
                    return Err(AccountError::NonZeroBalance(self.balance));
                }
                Ok(vec![AccountEvent::AccountClosed {}])
            }
        }
    }

    fn evolve(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::AccountOpened { owner, currency, overdraft_limit } => {
                self.status = AccountStatus::Open;
                self.owner = Some(owner.clone());
                self.currency = Some(*currency);
                self.overdraft_limit = *overdraft_limit;
            }
            // The event carries the balance its decision computed; taking it
            // keeps evolve total (no arithmetic that could overflow here).
            AccountEvent::MoneyDeposited { balance, .. } | AccountEvent::MoneyWithdrawn { balance, .. } => {
                self.balance = *balance;
            }
            AccountEvent::AccountClosed {} => self.status = AccountStatus::Closed,
            AccountEvent::OwnerForgotten {} => {
                if let Some(owner) = &mut self.owner {
                    owner.name = Personal::Forgotten;
                }
            }
        }
    }
}

/// Accounts can be snapshotted (`Repository::with_snapshots`); the owner's
/// name is sealed in the snapshot as in the events.
impl Snapshotting for Account {
    const STATE_SCHEMA_VERSION: u32 = 1;
}
