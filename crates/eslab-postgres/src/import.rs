//! Bulk import with `COPY`: the fast path for loading many events at once
//! (the lab, `eslab events import`).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use eslab_core::{Error, NewEvent, Result, StreamId, Version};
use sqlx::{Executor, Row};

use crate::PostgresStore;
use crate::append::stored_id;
use crate::error::{Violation, db, unique_violation};
use crate::rows::{encode_metadata, to_i64, to_u64};

/// How many bytes of CSV to buffer before sending them to the server.
const CHUNK: usize = 1 << 20;

impl PostgresStore {
    /// Appends `events` (each with its stream) with `COPY`, in one transaction,
    /// in the given order: each stream continues from its current version.
    /// Returns how many events were written.
    ///
    /// No expectation is checked; concurrent appends wait while the import
    /// holds a `SHARE ROW EXCLUSIVE` lock on `streams` and `events` (reads go on). An event id that
    /// is already stored (or given twice) fails the whole import with
    /// [`Error::DuplicateEventId`]. Call it with batches of tens of thousands
    /// of events to bound memory.
    pub async fn import(&self, events: Vec<(StreamId, NewEvent)>) -> Result<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut ids = HashSet::with_capacity(events.len());
        for (_, e) in &events {
            e.check_storable()?;
            if !ids.insert(e.event_id) {
                return Err(Error::DuplicateEventId(e.event_id));
            }
        }
        match self.import_tx(&events).await {
            Ok(n) => {
                self.poke_notifier();
                Ok(n)
            }
            Err(e) => match unique_violation(&e) {
                Some(Violation::EventId) => {
                    let ids: Vec<_> = ids.into_iter().collect();
                    Err(stored_id(self.pool(), &ids).await?.map_or_else(|| db(e), Error::DuplicateEventId))
                }
                _ => Err(db(e)),
            },
        }
    }

    async fn import_tx(&self, events: &[(StreamId, NewEvent)]) -> sqlx::Result<u64> {
        let mut tx = self.pool().begin().await?;
        // Appends wait (both tables, taken up front: no lock-order deadlock
        // with an append that holds a stream row); readers go on.
        tx.execute("LOCK TABLE streams, events IN SHARE ROW EXCLUSIVE MODE").await?;
        let streams: Vec<String> =
            events.iter().map(|(s, _)| s.as_str()).collect::<HashSet<_>>().into_iter().map(str::to_owned).collect();
        let rows = sqlx::query(
            "SELECT s.stream_id, v.version FROM unnest($1::text[]) AS s(stream_id) CROSS JOIN LATERAL \
             (SELECT max(stream_version) AS version FROM events e WHERE e.stream_id = s.stream_id) v \
             WHERE v.version IS NOT NULL",
        )
        .bind(&streams)
        .fetch_all(&mut *tx)
        .await?;
        let mut versions: HashMap<String, u64> = HashMap::with_capacity(streams.len());
        for row in rows {
            let version: i64 = row.try_get("version")?;
            versions.insert(row.try_get("stream_id")?, to_u64(version, "version").map_err(proto)?);
        }
        let mut copy = tx
            .copy_in_raw(
                "COPY events (stream_id, category, stream_version, event_id, event_type, schema_version, payload, \
                 metadata) FROM STDIN WITH (FORMAT csv)",
            )
            .await?;
        let mut buf = String::with_capacity(CHUNK + 4096);
        for (stream, e) in events {
            let version = versions.entry(stream.as_str().to_owned()).or_insert(0);
            *version += 1;
            csv_field(&mut buf, stream.as_str());
            buf.push(',');
            csv_field(&mut buf, stream.category());
            let _ = write!(buf, ",{},{},", Version::new(*version), e.event_id);
            csv_field(&mut buf, &e.event_type);
            let _ = write!(buf, ",{},", e.schema_version);
            csv_field(&mut buf, &e.payload.to_string());
            buf.push(',');
            csv_field(&mut buf, &encode_metadata(&e.metadata).map_err(proto)?.to_string());
            buf.push('\n');
            if buf.len() >= CHUNK {
                copy.send(buf.as_bytes()).await?;
                buf.clear();
            }
        }
        if !buf.is_empty() {
            copy.send(buf.as_bytes()).await?;
        }
        let written = copy.finish().await?;
        let (ids, vs): (Vec<String>, Vec<i64>) = versions
            .into_iter()
            .map(|(s, v)| Ok((s, to_i64(v, "version").map_err(proto)?)))
            .collect::<sqlx::Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        sqlx::query(
            "INSERT INTO streams (stream_id, version) SELECT * FROM unnest($1::text[], $2::bigint[]) \
             ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version",
        )
        .bind(&ids)
        .bind(&vs)
        .execute(&mut *tx)
        .await?;
        if self.options().notify == crate::Notify::InTransaction {
            sqlx::query("SELECT pg_notify($1, current_schema() || ':import')")
                .bind(crate::NOTIFY_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(written)
    }
}

fn proto(e: Error) -> sqlx::Error {
    sqlx::Error::Protocol(e.to_string())
}

/// Writes `s` as a quoted CSV field (a quote is doubled; newlines stay inside quotes).
fn csv_field(out: &mut String, s: &str) {
    out.push('"');
    let mut parts = s.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for part in parts {
        out.push_str("\"\"");
        out.push_str(part);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_quotes_quotes() {
        let mut s = String::new();
        csv_field(&mut s, r#"{"a":"b,c\n"}"#);
        assert_eq!(s, r#""{""a"":""b,c\n""}""#);
    }
}
