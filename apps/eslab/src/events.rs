//! `eslab events`: look at and load the store's events as JSON lines.
//!
//! - `stream <stream-id>` prints one stream;
//! - `feed [--after T:P] [--category KIND] [--follow]` prints the global (or one
//!   category's) feed from a checkpoint, and with `--follow` keeps waiting for more;
//! - `import <file.jsonl>` appends events from JSON lines (the output of `feed`
//!   imports as is).

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::Context;
use eslab_core::{
    Checkpoint, EventReaderExt, EventStorage, ExpectedVersion, FeedFilter, Metadata, NewEvent, StreamId, Version,
};
use futures_util::TryStreamExt;
use serde::Deserialize;
use uuid::Uuid;

/// One line of an import file. `event_id` is optional (a fresh UUID v7 when
/// absent); every other field of an exported [`eslab_core::RecordedEvent`] is ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct ImportLine {
    pub(crate) stream_id: StreamId,
    pub(crate) event_type: String,
    #[serde(default = "one")]
    pub(crate) schema_version: u32,
    #[serde(default)]
    pub(crate) payload: serde_json::Value,
    #[serde(default)]
    pub(crate) metadata: Option<Metadata>,
    #[serde(default)]
    pub(crate) event_id: Option<Uuid>,
}

fn one() -> u32 {
    1
}

impl ImportLine {
    pub(crate) fn into_new_event(self) -> (StreamId, NewEvent) {
        let event =
            NewEvent::new(self.event_type, self.schema_version, self.payload, self.metadata.unwrap_or_default());
        let event = match self.event_id {
            Some(id) => event.with_id(id),
            None => event,
        };
        (self.stream_id, event)
    }
}

/// Prints every event of `stream` as JSON lines.
pub(crate) async fn stream<S: EventStorage>(store: &S, stream: &StreamId, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut events = std::pin::pin!(store.stream_events(stream, Version::FIRST));
    let mut n = 0;
    while let Some(event) = events.try_next().await? {
        serde_json::to_writer(&mut *out, &event)?;
        writeln!(out)?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

/// What `feed --follow` waits on between empty pages.
pub(crate) enum Follow {
    /// Print what is there and stop.
    No,
    /// Poll, backing off from 10 ms to 1 s while idle.
    Poll,
    /// Wake on PostgreSQL `LISTEN/NOTIFY` (the listener polls as a fallback).
    Listen(eslab_postgres::Listener),
}

/// Prints the feed after `after` as JSON lines; with `follow`, keeps waiting
/// for new events until interrupted.
pub(crate) async fn feed<S: EventStorage>(
    store: &S,
    filter: &FeedFilter,
    mut after: Checkpoint,
    mut follow: Follow,
    out: &mut impl Write,
) -> anyhow::Result<Checkpoint> {
    let mut idle = Duration::from_millis(10);
    loop {
        let page = store.read_feed(filter, after, eslab_core::DEFAULT_PAGE_SIZE).await?;
        for event in &page {
            serde_json::to_writer(&mut *out, event)?;
            writeln!(out)?;
            after = event.checkpoint();
        }
        out.flush()?;
        if !page.is_empty() {
            idle = Duration::from_millis(10);
            continue;
        }
        match &mut follow {
            Follow::No => return Ok(after),
            Follow::Poll => {
                tokio::time::sleep(idle).await;
                idle = (idle * 2).min(Duration::from_secs(1));
            }
            Follow::Listen(listener) => {
                listener.wait().await;
            }
        }
    }
}

/// The events of a JSON-lines input, skipping blank lines; an error names its line.
fn parse_lines(input: impl BufRead) -> impl Iterator<Item = anyhow::Result<(StreamId, NewEvent)>> {
    input.lines().enumerate().filter_map(|(number, line)| {
        let parsed = line.with_context(|| format!("reading line {}", number + 1)).and_then(|line| {
            if line.trim().is_empty() {
                return Ok(None);
            }
            let parsed: ImportLine =
                serde_json::from_str(&line).with_context(|| format!("line {} is not an event", number + 1))?;
            Ok(Some(parsed.into_new_event()))
        });
        parsed.transpose()
    })
}

/// Checks that every line of `input` is an importable event; returns how many there are.
pub(crate) fn validate(input: impl BufRead) -> anyhow::Result<u64> {
    parse_lines(input).try_fold(0, |n, line| line.map(|_| n + 1))
}

/// Appends the events of a JSON-lines file, consecutive lines of one stream in
/// one atomic append (`ExpectedVersion::Any`), in batches of at most `batch`.
/// Call [`validate`] first: a bad line stops the import where it stands.
pub(crate) async fn import<S: EventStorage>(store: &S, input: impl BufRead, batch: usize) -> anyhow::Result<u64> {
    let mut pending: VecDeque<NewEvent> = VecDeque::new();
    let mut current: Option<StreamId> = None;
    let mut n = 0;
    for line in parse_lines(input) {
        let (stream, event) = line?;
        if current.as_ref() != Some(&stream) || pending.len() >= batch {
            n += flush(store, current.as_ref(), &mut pending).await?;
            current = Some(stream);
        }
        pending.push_back(event);
    }
    n += flush(store, current.as_ref(), &mut pending).await?;
    Ok(n)
}

/// Imports a JSON-lines file into PostgreSQL with `COPY`, `batch` events per
/// transaction (each stream continues from its current version).
pub(crate) async fn import_copy(
    store: &eslab_postgres::PostgresStore,
    input: impl BufRead,
    batch: usize,
) -> anyhow::Result<u64> {
    let mut pending = Vec::with_capacity(batch);
    let mut n = 0;
    for line in parse_lines(input) {
        pending.push(line?);
        if pending.len() >= batch {
            n += store.import(std::mem::take(&mut pending)).await.context("COPY import")?;
        }
    }
    n += store.import(pending).await.context("COPY import")?;
    Ok(n)
}

async fn flush<S: EventStorage>(
    store: &S,
    stream: Option<&StreamId>,
    pending: &mut VecDeque<NewEvent>,
) -> anyhow::Result<u64> {
    let Some(stream) = stream else { return Ok(0) };
    if pending.is_empty() {
        return Ok(0);
    }
    let events: Vec<_> = pending.drain(..).collect();
    let n = events.len() as u64;
    store.append(stream, ExpectedVersion::Any, events).await.with_context(|| format!("appending to {stream}"))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eslab_memory::MemoryStore;

    #[tokio::test]
    async fn import_then_feed_round_trips() {
        let store = MemoryStore::new();
        let input = include_str!("../../../crates/eslab-bank/fixtures/account-v1.jsonl");
        assert_eq!(import(&store, input.as_bytes(), 2).await.unwrap(), 5);
        let mut out = Vec::new();
        let at = feed(&store, &FeedFilter::All, Checkpoint::START, Follow::No, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 5);
        assert_eq!(at.position.get(), 5);
        // The feed's output imports as is into another store.
        let copy = MemoryStore::new();
        assert_eq!(import(&copy, text.as_bytes(), 100).await.unwrap(), 5);
        let mut one = Vec::new();
        let s: StreamId = "account-legacy-1".parse().unwrap();
        assert_eq!(stream(&copy, &s, &mut one).await.unwrap(), 3);
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let input = "{\"stream_id\":\"a-1\",\"event_type\":\"E\"}\nnot json\n";
        let err = validate(input.as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        let bad_stream = "{\"stream_id\":\"nodash\",\"event_type\":\"E\"}\n";
        assert!(validate(bad_stream.as_bytes()).is_err());
    }
}
