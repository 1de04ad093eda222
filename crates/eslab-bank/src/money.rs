//! Money in integer minor units (cents) with checked arithmetic, and ISO 4217 currencies.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a money value or currency is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// An amount must be strictly positive.
    #[error("amount must be positive, got {0} minor units")]
    NonPositive(i64),
    /// A limit must not be negative.
    #[error("limit must not be negative, got {0} minor units")]
    Negative(i64),
    /// The result does not fit in 64 bits.
    #[error("amount overflows 64-bit minor units")]
    Overflow,
    /// Not an active ISO 4217 alphabetic code.
    #[error("unknown ISO 4217 currency code {0:?}")]
    UnknownCurrency(String),
}

/// An ISO 4217 currency, serialized as its alphabetic code (`"EUR"`).
///
/// ```
/// use eslab_bank::Currency;
/// let eur: Currency = "EUR".parse().unwrap();
/// assert_eq!(eur.code(), "EUR");
/// assert!("EURO".parse::<Currency>().is_err());
/// assert!("eur".parse::<Currency>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(iso_currency::Currency);

impl Currency {
    /// The alphabetic code, e.g. `EUR`.
    pub fn code(self) -> &'static str {
        self.0.code()
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        iso_currency::Currency::from_code(s).map(Currency).ok_or_else(|| MoneyError::UnknownCurrency(s.to_owned()))
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A strictly positive amount of minor units (what a deposit or withdrawal moves).
///
/// ```
/// use eslab_bank::Amount;
/// assert_eq!(Amount::new(250).unwrap().minor(), 250);
/// assert!(Amount::new(0).is_err());
/// assert!(Amount::new(-5).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Amount(i64);

impl Amount {
    /// Validates a positive amount.
    pub fn new(minor: i64) -> Result<Self, MoneyError> {
        if minor > 0 { Ok(Amount(minor)) } else { Err(MoneyError::NonPositive(minor)) }
    }

    /// The amount in minor units.
    pub fn minor(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Amount {
    type Error = MoneyError;

    fn try_from(v: i64) -> Result<Self, Self::Error> {
        Amount::new(v)
    }
}

impl From<Amount> for i64 {
    fn from(a: Amount) -> i64 {
        a.0
    }
}

/// A signed balance in minor units; arithmetic is checked, never wrapping.
///
/// ```
/// use eslab_bank::{Amount, Balance};
/// let b = Balance::ZERO.plus(Amount::new(100).unwrap()).unwrap();
/// assert_eq!(b.minus(Amount::new(150).unwrap()).unwrap().minor(), -50);
/// assert!(Balance::new(i64::MAX).plus(Amount::new(1).unwrap()).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Balance(i64);

impl Balance {
    /// Zero.
    pub const ZERO: Balance = Balance(0);

    /// A balance of `minor` units.
    pub const fn new(minor: i64) -> Self {
        Balance(minor)
    }

    /// The balance in minor units.
    pub const fn minor(self) -> i64 {
        self.0
    }

    /// `self + amount`, or [`MoneyError::Overflow`].
    pub fn plus(self, amount: Amount) -> Result<Balance, MoneyError> {
        self.0.checked_add(amount.0).map(Balance).ok_or(MoneyError::Overflow)
    }

    /// `self - amount`, or [`MoneyError::Overflow`].
    pub fn minus(self, amount: Amount) -> Result<Balance, MoneyError> {
        self.0.checked_sub(amount.0).map(Balance).ok_or(MoneyError::Overflow)
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A non-negative overdraft limit in minor units: how far below zero a balance may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct OverdraftLimit(i64);

impl OverdraftLimit {
    /// No overdraft.
    pub const NONE: OverdraftLimit = OverdraftLimit(0);

    /// Validates a non-negative limit.
    pub fn new(minor: i64) -> Result<Self, MoneyError> {
        if minor >= 0 { Ok(OverdraftLimit(minor)) } else { Err(MoneyError::Negative(minor)) }
    }

    /// The limit in minor units.
    pub fn minor(self) -> i64 {
        self.0
    }

    /// The lowest balance allowed: `-limit` (never overflows, since `limit >= 0`).
    pub fn floor(self) -> Balance {
        Balance(-self.0)
    }
}

impl TryFrom<i64> for OverdraftLimit {
    type Error = MoneyError;

    fn try_from(v: i64) -> Result<Self, Self::Error> {
        OverdraftLimit::new(v)
    }
}

impl From<OverdraftLimit> for i64 {
    fn from(l: OverdraftLimit) -> i64 {
        l.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for OverdraftLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
