//! Stream versions, global positions and the optimistic-concurrency expectation of an append.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The version of a stream: the number of events it holds.
///
/// The first event of a stream has version 1; an empty (absent) stream is at
/// [`Version::NONE`] (0). Versions have no gaps.
///
/// ```
/// use eslab_core::Version;
/// let v = Version::NONE.next().unwrap();
/// assert_eq!(v, Version::new(1));
/// assert_eq!(v.get(), 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(u64);

impl Version {
    /// The version of a stream that has no events.
    pub const NONE: Version = Version(0);
    /// The version of a stream's first event.
    pub const FIRST: Version = Version(1);

    /// Wraps a raw version number.
    pub const fn new(v: u64) -> Self {
        Version(v)
    }

    /// The raw version number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The version after this one, or `None` on overflow.
    pub fn next(self) -> Option<Version> {
        self.0.checked_add(1).map(Version)
    }

    /// This version advanced by `n` events, or `None` on overflow.
    pub fn advance(self, n: usize) -> Option<Version> {
        u64::try_from(n).ok().and_then(|n| self.0.checked_add(n)).map(Version)
    }

    /// Whether this is the version of an empty stream.
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for Version {
    fn from(v: u64) -> Self {
        Version(v)
    }
}

/// The place of an event in the store's global feed (starts at 1).
///
/// Positions are unique and increase with insertion, but a store may commit
/// them out of order (Postgres); a feed reader therefore resumes from a
/// [`Checkpoint`], never from a bare position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Position(u64);

impl Position {
    /// Before the first event.
    pub const START: Position = Position(0);

    /// Wraps a raw position.
    pub const fn new(p: u64) -> Self {
        Position(p)
    }

    /// The raw position.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A resumable place in the global feed: the feed is ordered by
/// `(transaction, position)` and a reader asks for what comes strictly after a
/// checkpoint.
///
/// `transaction` is the store's commit order key: the commit's transaction id
/// in Postgres (`xid8`), a commit counter in memory; stores that commit in
/// position order (SQLite) keep it at 0. Persist both fields.
///
/// ```
/// use eslab_core::{Checkpoint, Position};
/// let a = Checkpoint::new(7, Position::new(3));
/// let b = Checkpoint::new(8, Position::new(2));
/// assert!(Checkpoint::START < a && a < b);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Commit order key (see the type's docs).
    pub transaction: u64,
    /// Global position of the last event read.
    pub position: Position,
}

impl Checkpoint {
    /// Before the first event of the feed.
    pub const START: Checkpoint = Checkpoint { transaction: 0, position: Position::START };

    /// A checkpoint at `(transaction, position)`.
    pub const fn new(transaction: u64, position: Position) -> Self {
        Checkpoint { transaction, position }
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transaction, self.position)
    }
}

/// What an append expects of the stream's current version (optimistic concurrency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check: append at whatever the current version is.
    Any,
    /// The stream must not exist (have no events).
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream must be exactly at this version ([`Version::NONE`] means "no stream").
    Exact(Version),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` satisfies this expectation.
    ///
    /// ```
    /// use eslab_core::{ExpectedVersion, Version};
    /// assert!(ExpectedVersion::NoStream.accepts(Version::NONE));
    /// assert!(!ExpectedVersion::Exact(Version::new(2)).accepts(Version::new(3)));
    /// ```
    pub fn accepts(self, actual: Version) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::StreamExists => !actual.is_none(),
            ExpectedVersion::Exact(v) => v == actual,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Why a string is not a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint {0:?} must look like <transaction>:<position> (two unsigned integers), e.g. 0:42")]
pub struct InvalidCheckpoint(String);

impl std::str::FromStr for Checkpoint {
    type Err = InvalidCheckpoint;

    /// Parses the [`Display`](fmt::Display) form, `<transaction>:<position>`.
    ///
    /// ```
    /// use eslab_core::{Checkpoint, Position};
    /// assert_eq!("7:42".parse::<Checkpoint>().unwrap(), Checkpoint::new(7, Position::new(42)));
    /// assert!("42".parse::<Checkpoint>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidCheckpoint(s.to_owned());
        let (t, p) = s.split_once(':').ok_or_else(bad)?;
        let transaction = t.parse().map_err(|_| bad())?;
        let position = p.parse().map_err(|_| bad())?;
        Ok(Checkpoint::new(transaction, Position::new(position)))
    }
}
