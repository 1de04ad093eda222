//! This crate's errors and the mapping of sqlx errors onto [`eslab_core::Error`]
//! by kind: busy, pool and I/O failures are `Unavailable`, everything else `Backend`.

use std::time::Duration;

/// Why the SQLite store failed. Carried as the source of an
/// [`eslab_core::Error`] (`Unavailable` or `Backend`), or returned by
/// [`SqliteStore::connect`](crate::SqliteStore::connect).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// Another connection (usually another process) held the write lock for
    /// longer than the busy timeout.
    #[error("the database stayed locked by another writer for more than the busy timeout of {busy_timeout:?}")]
    Busy {
        /// The configured busy timeout.
        busy_timeout: Duration,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// No connection became free within the acquire timeout: more callers
    /// queued for the (single) writer or the readers than could be served.
    #[error("no database connection became free within the acquire timeout of {acquire_timeout:?}")]
    PoolTimedOut {
        /// The configured acquire timeout.
        acquire_timeout: Duration,
    },
    /// The store was closed with [`SqliteStore::close`](crate::SqliteStore::close).
    #[error("the SQLite store is closed")]
    Closed,
    /// The database URL could not be parsed or its directory created.
    #[error("invalid SQLite database URL {url:?}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why it was refused.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// Applying the embedded migrations failed.
    #[error("applying the SQLite migrations failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row does not decode (edited by hand, or written by a newer schema).
    #[error("a stored row is invalid: {0}")]
    InvalidRow(String),
    /// Any other driver error.
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

impl From<SqliteError> for eslab_core::Error {
    fn from(e: SqliteError) -> Self {
        match e {
            SqliteError::Busy { .. } | SqliteError::PoolTimedOut { .. } | SqliteError::Closed => {
                eslab_core::Error::Unavailable(Box::new(e))
            }
            SqliteError::InvalidUrl { .. } => eslab_core::Error::InvalidRequest(e.to_string()),
            SqliteError::Sqlx(
                sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_),
            ) => eslab_core::Error::Unavailable(Box::new(e)),
            _ => eslab_core::Error::Backend(Box::new(e)),
        }
    }
}

/// The timeouts the error messages name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) acquire: Duration,
    pub(crate) busy: Duration,
}

impl Timeouts {
    /// Classifies a driver error by kind (never by message).
    pub(crate) fn classify(self, e: sqlx::Error) -> SqliteError {
        match e {
            sqlx::Error::PoolTimedOut => SqliteError::PoolTimedOut { acquire_timeout: self.acquire },
            sqlx::Error::PoolClosed => SqliteError::Closed,
            sqlx::Error::Database(ref db) if is_busy(db.as_ref()) => {
                SqliteError::Busy { busy_timeout: self.busy, source: e }
            }
            e => SqliteError::Sqlx(e),
        }
    }

    /// [`classify`](Self::classify), then into the core error.
    pub(crate) fn core(self, e: sqlx::Error) -> eslab_core::Error {
        self.classify(e).into()
    }
}

/// SQLITE_BUSY (5) and SQLITE_LOCKED (6), with any extended code (the low
/// byte is the primary code).
fn is_busy(db: &dyn sqlx::error::DatabaseError) -> bool {
    const SQLITE_BUSY: i32 = 5;
    const SQLITE_LOCKED: i32 = 6;
    db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED))
}

/// Whether the driver error is a UNIQUE or PRIMARY KEY violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A stored integer that must fit a `u64` (versions, positions).
pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64, SqliteError> {
    u64::try_from(v).map_err(|_| SqliteError::InvalidRow(format!("negative {what}: {v}")))
}

/// A `u64` that must fit SQLite's signed 64-bit integer.
pub(crate) fn to_i64(v: u64, what: &str) -> eslab_core::Result<i64> {
    i64::try_from(v).map_err(|_| eslab_core::Error::OutOfRange(format!("{what} {v} does not fit a SQLite INTEGER")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_unavailable_and_the_rest_backend_errors() {
        let t = Timeouts { acquire: Duration::from_millis(10), busy: Duration::from_millis(20) };
        let core = |e: SqliteError| eslab_core::Error::from(e);
        assert!(core(t.classify(sqlx::Error::PoolTimedOut)).is_unavailable());
        assert!(core(t.classify(sqlx::Error::PoolClosed)).is_unavailable());
        assert!(core(t.classify(sqlx::Error::WorkerCrashed)).is_unavailable());
        assert!(core(t.classify(sqlx::Error::Io(std::io::Error::other("disk gone")))).is_unavailable());
        assert!(matches!(core(t.classify(sqlx::Error::RowNotFound)), eslab_core::Error::Backend(_)));
        assert!(matches!(core(SqliteError::InvalidRow("x".into())), eslab_core::Error::Backend(_)));
        let msg = t.classify(sqlx::Error::PoolTimedOut).to_string();
        assert!(msg.contains("10ms"), "{msg}");
    }

    #[test]
    fn integer_conversions_refuse_what_does_not_fit() {
        assert_eq!(to_u64(7, "v").ok(), Some(7));
        assert!(to_u64(-1, "v").is_err());
        assert_eq!(to_i64(7, "v").ok(), Some(7));
        assert!(matches!(to_i64(u64::MAX, "v"), Err(eslab_core::Error::OutOfRange(_))));
    }
}
