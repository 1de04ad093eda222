//! The store's key store for personal data: `personal_keys`, one row per
//! data subject, in the store's schema (see `eslab_core::personal`).

use std::collections::HashMap;
use std::sync::Arc;

use eslab_core::personal::{Forgetting, KeyStore, PersonalError, Subject, SubjectKey};
use eslab_core::{Error, Result};
use futures_util::future::BoxFuture;
use time::OffsetDateTime;

use crate::PostgresStore;
use crate::error::db;

/// How often a key lookup that lost a race with another creator of the same
/// subject's key reads again (each read is a new snapshot that sees it).
const CREATE_ATTEMPTS: usize = 3;

impl PostgresStore {
    /// This store as a shareable [`KeyStore`].
    pub fn key_store(&self) -> Arc<dyn KeyStore> {
        Arc::new(self.clone())
    }
}

impl KeyStore for PostgresStore {
    fn subject_key<'a>(&'a self, subject: &'a Subject) -> BoxFuture<'a, Result<SubjectKey>> {
        Box::pin(async move {
            for _ in 0..CREATE_ATTEMPTS {
                let fresh = SubjectKey::generate();
                // One statement: create the key unless the subject has a row,
                // and read whichever row there is.
                let row: Option<(Option<Vec<u8>>,)> = sqlx::query_as(
                    "WITH created AS (
                         INSERT INTO personal_keys (subject, key) VALUES ($1, $2)
                         ON CONFLICT (subject) DO NOTHING RETURNING key)
                     SELECT key FROM created
                     UNION ALL SELECT key FROM personal_keys WHERE subject = $1
                     LIMIT 1",
                )
                .bind(subject.as_str())
                .bind(fresh.as_bytes())
                .fetch_optional(self.pool())
                .await
                .map_err(db)?;
                match row {
                    Some((Some(key),)) => return SubjectKey::from_row(subject.as_str(), &key).map(|(_, key)| key),
                    Some((None,)) => return Err(Error::Personal(PersonalError::Forgotten(subject.clone()))),
                    // Another transaction created it after this statement's
                    // snapshot was taken: read again.
                    None => {}
                }
            }
            Err(Error::backend(format!("the key of data subject {subject} was neither created nor found")))
        })
    }

    fn find_keys<'a>(&'a self, subjects: &'a [Subject]) -> BoxFuture<'a, Result<HashMap<Subject, SubjectKey>>> {
        Box::pin(async move {
            let names: Vec<&str> = subjects.iter().map(Subject::as_str).collect();
            let rows: Vec<(String, Vec<u8>)> =
                sqlx::query_as("SELECT subject, key FROM personal_keys WHERE subject = ANY($1) AND key IS NOT NULL")
                    .bind(&names)
                    .fetch_all(self.pool())
                    .await
                    .map_err(db)?;
            rows.into_iter().map(|(name, key)| SubjectKey::from_row(&name, &key)).collect()
        })
    }

    fn forget<'a>(&'a self, subject: &'a Subject, by: &'a str) -> BoxFuture<'a, Result<Forgetting>> {
        Box::pin(async move {
            // The first forgetting sets the time and who; a second one finds
            // the row already forgotten and answers it unchanged.
            let row: Option<(OffsetDateTime, String)> = sqlx::query_as(
                "WITH forgotten AS (
                     UPDATE personal_keys SET key = NULL, forgotten_at = now(), forgotten_by = $2
                     WHERE subject = $1 AND forgotten_at IS NULL
                     RETURNING forgotten_at, forgotten_by)
                 SELECT forgotten_at, forgotten_by FROM forgotten
                 UNION ALL
                 SELECT forgotten_at, forgotten_by FROM personal_keys WHERE subject = $1 AND forgotten_at IS NOT NULL
                 LIMIT 1",
            )
            .bind(subject.as_str())
            .bind(by)
            .fetch_optional(self.pool())
            .await
            .map_err(db)?;
            let row = match row {
                Some(row) => Some(row),
                // A concurrent forgetting committed while this statement
                // waited for its row: a new statement sees it.
                None => sqlx::query_as(
                    "SELECT forgotten_at, forgotten_by FROM personal_keys WHERE subject = $1 AND forgotten_at IS NOT NULL",
                )
                .bind(subject.as_str())
                .fetch_optional(self.pool())
                .await
                .map_err(db)?,
            };
            let Some((forgotten_at, forgotten_by)) = row else {
                return Err(Error::Personal(PersonalError::UnknownSubject(subject.clone())));
            };
            Ok(Forgetting { subject: subject.clone(), forgotten_at, forgotten_by })
        })
    }
}
