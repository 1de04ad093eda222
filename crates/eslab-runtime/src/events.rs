//! The store's own commands, for any program built on eslab: look at and
//! load its events as JSON lines ([`EventsCommand`], run by [`run`]).
//!
//! - `stream <stream-id>` prints one stream;
//! - `feed [--after T:P] [--category KIND] [--follow]` prints the global (or one
//!   category's) feed from a checkpoint, and with `--follow` keeps waiting for more;
//! - `import <file.jsonl>` appends events from JSON lines (the output of `feed`
//!   imports as is; PostgreSQL loads them with `COPY`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use eslab_core::{
    Checkpoint, EventReader, EventReaderExt, EventStorage, EventStore, ExpectedVersion, FeedFilter, Metadata, NewEvent,
    RecordedEvent, StreamId, Version, WakeUps,
};
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use serde::Deserialize;
use uuid::Uuid;

use crate::AnyStore;

/// `… events …`: the store's events as JSON lines.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum EventsCommand {
    /// Print one stream, e.g. `eslab events stream account-42`.
    Stream {
        /// The stream id, `<kind>-<id>`.
        stream_id: StreamId,
    },
    /// Print the global feed (or one category's) after a checkpoint.
    Feed {
        /// Start after this checkpoint, `<transaction>:<position>` (default: the beginning).
        #[arg(long)]
        after: Option<Checkpoint>,
        /// Only this category (the `<kind>` of stream ids).
        #[arg(long)]
        category: Option<String>,
        /// Keep following the feed: woken by LISTEN/NOTIFY on PostgreSQL, and
        /// polling (every second at most) for writers that wake nobody.
        #[arg(long)]
        follow: bool,
    },
    /// Append the events of a JSON-lines file (the output of `feed` imports as
    /// is). PostgreSQL loads it with COPY. The whole file is checked first: a
    /// bad line imports nothing.
    Import {
        /// The file to import.
        file: PathBuf,
        /// Events per append (per COPY transaction on PostgreSQL).
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
    },
}

/// Why an [`EventsCommand`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    /// The store failed a read.
    #[error(transparent)]
    Store(Box<eslab_core::Error>),
    /// The category is not a stream kind.
    #[error(transparent)]
    Category(#[from] eslab_core::InvalidStreamId),
    /// Writing the output failed (a closed pipe, say: see [`std::io::ErrorKind::BrokenPipe`]).
    #[error("writing the events")]
    Write(#[from] std::io::Error),
    /// An event could not be written as JSON.
    #[error("writing an event as JSON")]
    Json(#[from] serde_json::Error),
    /// The file to import could not be opened or read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of the file to import is not an event.
    #[error("line {line} cannot be imported")]
    BadLine {
        /// The line number, from 1.
        line: usize,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An append of the import failed.
    #[error("appending to {stream}")]
    Append {
        /// The stream.
        stream: StreamId,
        /// Why.
        #[source]
        source: Box<eslab_core::Error>,
    },
    /// A `COPY` of the import into PostgreSQL failed.
    #[error("COPY import")]
    Copy(#[source] Box<eslab_core::Error>),
}

impl From<eslab_core::Error> for EventsError {
    fn from(error: eslab_core::Error) -> Self {
        EventsError::Store(Box::new(error))
    }
}

/// Runs `command` on `store`, printing to `out` (and, after an import, how
/// many events were imported to stderr).
pub async fn run(store: &AnyStore, command: EventsCommand, out: &mut impl Write) -> Result<(), EventsError> {
    match command {
        EventsCommand::Stream { stream_id } => stream(store, &stream_id, out).await.map(|_| ()),
        EventsCommand::Feed { after, category, follow } => {
            let filter = match category {
                Some(c) => FeedFilter::category(&c)?,
                None => FeedFilter::All,
            };
            let after = after.unwrap_or(Checkpoint::START);
            feed(&EventStore::new(store.clone()), &filter, after, follow, out).await.map(|_| ())
        }
        EventsCommand::Import { file, batch } => {
            let open = || {
                let file =
                    std::fs::File::open(&file).map_err(|source| EventsError::Read { path: file.clone(), source })?;
                Ok::<_, EventsError>(BufReader::new(file))
            };
            let count = validate(open()?)?;
            let imported = match store.postgres() {
                Some(pg) => import_copy(pg, open()?, batch.max(1)).await?,
                None => import(store, open()?, batch.max(1)).await?,
            };
            eprintln!("imported {imported} of {count} events");
            Ok(())
        }
    }
}

/// One line of an import file. `event_id` is optional (a fresh UUID v7 when
/// absent); every other field of an exported [`RecordedEvent`] is ignored.
#[derive(Debug, Deserialize)]
struct ImportLine {
    stream_id: StreamId,
    event_type: String,
    #[serde(default = "one")]
    schema_version: u32,
    #[serde(default)]
    payload: serde_json::Value,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    event_id: Option<Uuid>,
}

fn one() -> u32 {
    1
}

impl ImportLine {
    fn into_new_event(self) -> (StreamId, NewEvent) {
        let event =
            NewEvent::new(self.event_type, self.schema_version, self.payload, self.metadata.unwrap_or_default());
        let event = match self.event_id {
            Some(id) => event.with_id(id),
            None => event,
        };
        (self.stream_id, event)
    }
}

/// Prints every event of `stream` as JSON lines; returns how many.
pub async fn stream<S: EventStorage>(store: &S, stream: &StreamId, out: &mut impl Write) -> Result<u64, EventsError> {
    let mut events = std::pin::pin!(store.stream_events(stream, Version::FIRST));
    let mut n = 0;
    while let Some(event) = events.try_next().await? {
        print(event, out)?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

/// Prints the feed after `after` as JSON lines, up to the events committed
/// now; with `follow`, keeps following it until interrupted: a live
/// subscription ([`EventStore::subscribe`]), woken by the store's appends
/// (PostgreSQL's NOTIFY; this process's own appends on the other stores) and
/// polling every second at most for writers that wake nobody. Returns the
/// checkpoint after the last event printed. The first error ends it.
pub async fn feed<S>(
    store: &EventStore<S>,
    filter: &FeedFilter,
    mut after: Checkpoint,
    follow: bool,
    out: &mut impl Write,
) -> Result<Checkpoint, EventsError>
where
    S: EventReader + WakeUps + Clone + 'static,
{
    if !follow {
        let mut events = std::pin::pin!(store.feed(filter, after));
        while let Some(event) = events.try_next().await? {
            after = print(event, out)?;
        }
        out.flush()?;
        return Ok(after);
    }
    let mut live = std::pin::pin!(store.subscribe(filter.clone(), after));
    loop {
        // Flush when caught up (nothing more at hand), not after every line.
        let next = match live.next().now_or_never() {
            Some(next) => next,
            None => {
                out.flush()?;
                live.next().await
            }
        };
        let Some(event) = next else { return Ok(after) };
        after = print(event?, out)?;
    }
}

/// Prints one event as a JSON line; returns its checkpoint.
fn print(event: RecordedEvent, out: &mut impl Write) -> Result<Checkpoint, EventsError> {
    serde_json::to_writer(&mut *out, &event)?;
    writeln!(out)?;
    Ok(event.checkpoint())
}

/// The events of a JSON-lines input, skipping blank lines; an error names its line.
fn parse_lines(input: impl BufRead) -> impl Iterator<Item = Result<(StreamId, NewEvent), EventsError>> {
    input.lines().enumerate().filter_map(|(number, line)| {
        let bad = |source: Box<dyn std::error::Error + Send + Sync>| EventsError::BadLine { line: number + 1, source };
        let parsed = line.map_err(|e| bad(e.into())).and_then(|line| {
            if line.trim().is_empty() {
                return Ok(None);
            }
            let parsed: ImportLine = serde_json::from_str(&line).map_err(|e| bad(e.into()))?;
            Ok(Some(parsed.into_new_event()))
        });
        parsed.transpose()
    })
}

/// Checks that every line of `input` is an importable event; returns how many there are.
pub fn validate(input: impl BufRead) -> Result<u64, EventsError> {
    parse_lines(input).try_fold(0, |n, line| line.map(|_| n + 1))
}

/// Appends the events of a JSON-lines file, consecutive lines of one stream in
/// one atomic append (`ExpectedVersion::Any`), in batches of at most `batch`.
/// Call [`validate`] first: a bad line stops the import where it stands.
pub async fn import<S: EventStorage>(store: &S, input: impl BufRead, batch: usize) -> Result<u64, EventsError> {
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
pub async fn import_copy(
    store: &eslab_postgres::PostgresStore,
    input: impl BufRead,
    batch: usize,
) -> Result<u64, EventsError> {
    let mut pending = Vec::with_capacity(batch);
    let mut n = 0;
    for line in parse_lines(input) {
        pending.push(line?);
        if pending.len() >= batch {
            n += store.import(std::mem::take(&mut pending)).await.map_err(|e| EventsError::Copy(Box::new(e)))?;
        }
    }
    n += store.import(pending).await.map_err(|e| EventsError::Copy(Box::new(e)))?;
    Ok(n)
}

async fn flush<S: EventStorage>(
    store: &S,
    stream: Option<&StreamId>,
    pending: &mut VecDeque<NewEvent>,
) -> Result<u64, EventsError> {
    let Some(stream) = stream else { return Ok(0) };
    if pending.is_empty() {
        return Ok(0);
    }
    let events: Vec<_> = pending.drain(..).collect();
    let n = events.len() as u64;
    store
        .append(stream, ExpectedVersion::Any, events)
        .await
        .map_err(|source| EventsError::Append { stream: stream.clone(), source: Box::new(source) })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eslab_core::EventAppender;
    use eslab_memory::MemoryStore;

    #[tokio::test]
    async fn import_then_feed_round_trips() {
        let store = MemoryStore::new();
        let input = include_str!("../../eslab-bank/fixtures/account-v1.jsonl");
        assert_eq!(import(&store, input.as_bytes(), 2).await.unwrap(), 5);
        let mut out = Vec::new();
        let at = feed(&EventStore::new(store), &FeedFilter::All, Checkpoint::START, false, &mut out).await.unwrap();
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

    /// A `Write` shared with the test while `feed` holds it.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn lines(&self) -> Vec<RecordedEvent> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        }
    }

    #[tokio::test]
    async fn follow_prints_what_is_there_then_what_comes() {
        let store = MemoryStore::new();
        let s: StreamId = "account-1".parse().unwrap();
        let event = |n: u64| NewEvent::new("Counted", 1, serde_json::json!({ "n": n }), Metadata::now());
        store.append(&s, ExpectedVersion::Any, vec![event(1), event(2)]).await.unwrap();
        let out = Shared::default();
        let follower = {
            let (store, mut out) = (EventStore::new(store.clone()), out.clone());
            tokio::spawn(async move {
                let filter = FeedFilter::category("account").unwrap();
                feed(&store, &filter, Checkpoint::START, true, &mut out).await
            })
        };
        for n in 3..=5 {
            store.append(&s, ExpectedVersion::Any, vec![event(n)]).await.unwrap();
            let other: StreamId = "other-1".parse().unwrap();
            store.append(&other, ExpectedVersion::Any, vec![event(100 + n)]).await.unwrap();
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while out.lines().len() < 5 {
            assert!(!follower.is_finished(), "the follower stopped: {:?}", follower.await);
            assert!(tokio::time::Instant::now() < deadline, "only {} of 5 events printed", out.lines().len());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        follower.abort();
        let printed = out.lines();
        let ns: Vec<_> = printed.iter().map(|e| e.payload["n"].as_u64().unwrap()).collect();
        assert_eq!(ns, [1, 2, 3, 4, 5], "every event of the category once, in order");
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let input = "{\"stream_id\":\"a-1\",\"event_type\":\"E\"}\nnot json\n";
        let err = validate(input.as_bytes()).unwrap_err();
        assert!(matches!(err, EventsError::BadLine { line: 2, .. }), "{err:?}");
        let bad_stream = "{\"stream_id\":\"nodash\",\"event_type\":\"E\"}\n";
        assert!(validate(bad_stream.as_bytes()).is_err());
    }
}
