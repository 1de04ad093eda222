//! The in-memory read-model backend: tables of JSON documents, checkpoints,
//! parked events and leases, with transactions that stage writes and apply
//! them atomically on commit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use eslab_core::{Checkpoint, EventId, RecordedEvent, StreamId};
use serde_json::Value;
use time::OffsetDateTime;

use crate::Result;
use crate::backend::{Backend, Lease, ParkedEvent};

#[derive(Debug, Default)]
struct State {
    tables: BTreeMap<String, BTreeMap<String, Value>>,
    checkpoints: HashMap<String, Checkpoint>,
    parked: Vec<ParkedEvent>,
    leases: HashMap<String, (String, Instant)>,
}

/// A monotonic instant as wall-clock time (for showing leases).
fn wall_clock(at: Instant) -> OffsetDateTime {
    let now = Instant::now();
    let wall = OffsetDateTime::now_utc();
    if at >= now { wall + (at - now) } else { wall - (now - at) }
}

/// In-memory read models. Clones share state.
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
}

/// A transaction of the [`MemoryBackend`]: reads see its own staged writes;
/// nothing is visible to others until commit.
#[derive(Debug)]
pub struct MemoryTx {
    state: Arc<Mutex<State>>,
    writes: BTreeMap<(String, String), Option<Value>>,
    checkpoints: HashMap<String, Checkpoint>,
    parks: Vec<ParkedEvent>,
    unparks: HashSet<(String, EventId)>,
    forgets: Vec<eslab_core::Subject>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Writes to `State` happen only in `commit`, which cannot panic halfway.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryTx {
    /// Reads a document, seeing this transaction's own writes.
    pub fn get(&self, table: &str, key: &str) -> Option<Value> {
        match self.writes.get(&(table.to_owned(), key.to_owned())) {
            Some(staged) => staged.clone(),
            None => lock(&self.state).tables.get(table).and_then(|t| t.get(key)).cloned(),
        }
    }

    /// Stages a write of a document.
    pub fn put(&mut self, table: &str, key: &str, value: Value) {
        self.writes.insert((table.to_owned(), key.to_owned()), Some(value));
    }

    /// Stages a delete of a document.
    pub fn delete(&mut self, table: &str, key: &str) {
        self.writes.insert((table.to_owned(), key.to_owned()), None);
    }
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        MemoryBackend::default()
    }

    /// A committed document.
    pub fn get(&self, table: &str, key: &str) -> Option<Value> {
        lock(&self.state).tables.get(table).and_then(|t| t.get(key)).cloned()
    }

    /// All committed documents of a table, by key.
    pub fn table(&self, table: &str) -> BTreeMap<String, Value> {
        lock(&self.state).tables.get(table).cloned().unwrap_or_default()
    }
}

impl Backend for MemoryBackend {
    type Tx = MemoryTx;

    async fn begin(&self) -> Result<MemoryTx> {
        Ok(MemoryTx {
            state: self.state.clone(),
            writes: BTreeMap::new(),
            checkpoints: HashMap::new(),
            parks: Vec::new(),
            unparks: HashSet::new(),
            forgets: Vec::new(),
        })
    }

    async fn commit(&self, tx: MemoryTx) -> Result<()> {
        let mut state = lock(&self.state);
        for ((table, key), value) in tx.writes {
            let table = state.tables.entry(table).or_default();
            match value {
                Some(v) => table.insert(key, v),
                None => table.remove(&key),
            };
        }
        state.checkpoints.extend(tx.checkpoints);
        state.parked.retain(|p| !tx.unparks.contains(&(p.projection.clone(), p.event.event_id)));
        state.parked.extend(tx.parks);
        for subject in &tx.forgets {
            for parked in &mut state.parked {
                if let Some(event) = crate::forget_parked_event(&parked.event, subject) {
                    parked.event = event;
                    crate::FORGOTTEN_REASON.clone_into(&mut parked.reason);
                }
            }
        }
        Ok(())
    }

    async fn checkpoint(&self, name: &str) -> Result<Checkpoint> {
        Ok(lock(&self.state).checkpoints.get(name).copied().unwrap_or(Checkpoint::START))
    }

    async fn save_checkpoint(&self, tx: &mut MemoryTx, name: &str, at: Checkpoint) -> Result<()> {
        tx.checkpoints.insert(name.to_owned(), at);
        Ok(())
    }

    async fn parked_streams(&self, projection: &str) -> Result<HashSet<StreamId>> {
        Ok(lock(&self.state)
            .parked
            .iter()
            .filter(|p| p.projection == projection)
            .map(|p| p.event.stream_id.clone())
            .collect())
    }

    async fn park(&self, tx: &mut MemoryTx, projection: &str, event: &RecordedEvent, reason: &str) -> Result<()> {
        tx.parks.push(ParkedEvent {
            projection: projection.to_owned(),
            event: event.clone(),
            reason: reason.to_owned(),
            parked_at: OffsetDateTime::now_utc(),
        });
        Ok(())
    }

    async fn parked(&self, projection: &str, stream: Option<&StreamId>) -> Result<Vec<ParkedEvent>> {
        let mut parked: Vec<_> = lock(&self.state)
            .parked
            .iter()
            .filter(|p| p.projection == projection && stream.is_none_or(|s| *s == p.event.stream_id))
            .cloned()
            .collect();
        parked.sort_by(|a, b| {
            (&a.event.stream_id, a.event.stream_version).cmp(&(&b.event.stream_id, b.event.stream_version))
        });
        Ok(parked)
    }

    async fn unpark(&self, tx: &mut MemoryTx, projection: &str, event: &RecordedEvent) -> Result<()> {
        tx.unparks.insert((projection.to_owned(), event.event_id));
        Ok(())
    }

    async fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        if let Some((holder, until)) = state.leases.get(name)
            && holder != owner
            && *until > now
        {
            return Ok(false);
        }
        state.leases.insert(name.to_owned(), (owner.to_owned(), now + ttl));
        Ok(true)
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<()> {
        let mut state = lock(&self.state);
        if state.leases.get(name).is_some_and(|(holder, _)| holder == owner) {
            state.leases.remove(name);
        }
        Ok(())
    }

    async fn checkpoints(&self) -> Result<Vec<(String, Checkpoint)>> {
        let mut all: Vec<_> = lock(&self.state).checkpoints.iter().map(|(n, c)| (n.clone(), *c)).collect();
        all.sort();
        Ok(all)
    }

    async fn lease(&self, name: &str) -> Result<Option<Lease>> {
        Ok(lock(&self.state)
            .leases
            .get(name)
            .map(|(owner, until)| Lease { owner: owner.clone(), until: wall_clock(*until) }))
    }

    async fn forget_parked(&self, tx: &mut MemoryTx, subject: &eslab_core::Subject) -> Result<u64> {
        let state = lock(&self.state);
        let parked = state.parked.iter().chain(&tx.parks);
        let count = parked.filter(|p| p.event.metadata.subject.as_ref() == Some(subject)).count();
        drop(state);
        tx.forgets.push(subject.clone());
        Ok(u64::try_from(count).unwrap_or(u64::MAX))
    }
}
