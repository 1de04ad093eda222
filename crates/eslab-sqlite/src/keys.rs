//! The store's key store for personal data: `personal_keys`, one row per
//! data subject, in the store's database (see `eslab_core::personal`).
//!
//! The database runs with `secure_delete` on, so a forgotten key's bytes are
//! overwritten in the file, and forgetting truncates the write-ahead log
//! (which held the page with the key) when no reader holds it.

use std::collections::HashMap;
use std::sync::Arc;

use eslab_core::personal::{Forgetting, KeyStore, PersonalError, Subject, SubjectKey};
use eslab_core::{Error, Result};
use futures_util::future::BoxFuture;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::SqliteStore;

impl SqliteStore {
    /// This store as a shareable [`KeyStore`].
    pub fn key_store(&self) -> Arc<dyn KeyStore> {
        Arc::new(self.clone())
    }
}

fn now_text() -> Result<String> {
    OffsetDateTime::now_utc().format(&Rfc3339).map_err(Error::backend)
}

impl KeyStore for SqliteStore {
    fn subject_key<'a>(&'a self, subject: &'a Subject) -> BoxFuture<'a, Result<SubjectKey>> {
        Box::pin(async move {
            let read = "SELECT key FROM personal_keys WHERE subject = ?";
            let found: Option<(Option<Vec<u8>>,)> = sqlx::query_as(read)
                .bind(subject.as_str())
                .fetch_optional(&mut *self.reader().await?)
                .await
                .map_err(|e| self.core(e))?;
            let row = match found {
                Some(row) => row,
                None => {
                    // Through the one writer: creating and reading back are
                    // serialized with every other creation.
                    sqlx::query(
                        "INSERT INTO personal_keys (subject, key, created_at) VALUES (?, ?, ?) \
                         ON CONFLICT (subject) DO NOTHING",
                    )
                    .bind(subject.as_str())
                    .bind(SubjectKey::generate().as_bytes())
                    .bind(now_text()?)
                    .execute(self.writer_pool())
                    .await
                    .map_err(|e| self.core(e))?;
                    sqlx::query_as(read)
                        .bind(subject.as_str())
                        .fetch_one(self.writer_pool())
                        .await
                        .map_err(|e| self.core(e))?
                }
            };
            match row {
                (Some(key),) => SubjectKey::from_row(subject.as_str(), &key).map(|(_, key)| key),
                (None,) => Err(Error::Personal(PersonalError::Forgotten(subject.clone()))),
            }
        })
    }

    fn find_keys<'a>(&'a self, subjects: &'a [Subject]) -> BoxFuture<'a, Result<HashMap<Subject, SubjectKey>>> {
        Box::pin(async move {
            let names = serde_json::to_string(subjects)
                .map_err(|source| Error::Encode { event_type: "subjects".into(), source })?;
            let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
                "SELECT subject, key FROM personal_keys \
                 WHERE subject IN (SELECT value FROM json_each(?)) AND key IS NOT NULL",
            )
            .bind(names)
            .fetch_all(&mut *self.reader().await?)
            .await
            .map_err(|e| self.core(e))?;
            rows.into_iter().map(|(name, key)| SubjectKey::from_row(&name, &key)).collect()
        })
    }

    fn forget<'a>(&'a self, subject: &'a Subject, by: &'a str) -> BoxFuture<'a, Result<Forgetting>> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE personal_keys SET key = NULL, forgotten_at = ?, forgotten_by = ? \
                 WHERE subject = ? AND forgotten_at IS NULL",
            )
            .bind(now_text()?)
            .bind(by)
            .bind(subject.as_str())
            .execute(self.writer_pool())
            .await
            .map_err(|e| self.core(e))?;
            let row: Option<(Option<String>, Option<String>)> =
                sqlx::query_as("SELECT forgotten_at, forgotten_by FROM personal_keys WHERE subject = ?")
                    .bind(subject.as_str())
                    .fetch_optional(self.writer_pool())
                    .await
                    .map_err(|e| self.core(e))?;
            let Some((Some(at), Some(forgotten_by))) = row else {
                return Err(Error::Personal(PersonalError::UnknownSubject(subject.clone())));
            };
            if done.rows_affected() > 0 {
                self.truncate_wal().await;
            }
            let forgotten_at = OffsetDateTime::parse(&at, &Rfc3339).map_err(Error::backend)?;
            Ok(Forgetting { subject: subject.clone(), forgotten_at, forgotten_by })
        })
    }
}

impl SqliteStore {
    /// Checkpoints the write-ahead log into the database and truncates it, so
    /// that pages overwritten since (a deleted key, a redacted row) are gone
    /// from the log file too. A reader in the middle of a read keeps the log
    /// alive: then it is truncated by a later checkpoint (logged, not an error).
    pub async fn truncate_wal(&self) {
        let result: std::result::Result<(i64, i64, i64), sqlx::Error> =
            sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(self.writer_pool()).await;
        match result {
            Ok((0, _, _)) => {}
            Ok((busy, log, done)) => {
                tracing::info!(busy, log, done, "write-ahead log not truncated yet: a reader holds it")
            }
            Err(error) => tracing::warn!(%error, "cannot checkpoint the write-ahead log"),
        }
    }
}
