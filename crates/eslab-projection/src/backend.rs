//! What a read-model backend and a projection implement.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use eslab_core::{Checkpoint, FeedFilter, RecordedEvent, StreamId, Subject};
use time::OffsetDateTime;

use crate::{HandlerError, Result};

/// An event waiting in the parked table because its handler (or an earlier
/// event of its stream) failed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParkedEvent {
    /// The projection it is parked for.
    pub projection: String,
    /// The event, as read from the feed.
    pub event: RecordedEvent,
    /// Why it is parked (the handler's message, or "stream parked").
    pub reason: String,
    /// When it was parked.
    pub parked_at: OffsetDateTime,
}

/// Who holds a projection's lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The runner's owner id.
    pub owner: String,
    /// When the lease runs out unless renewed.
    pub until: OffsetDateTime,
}

impl Lease {
    /// Whether it has not run out yet.
    pub fn is_live(&self) -> bool {
        self.until > OffsetDateTime::now_utc()
    }
}

/// A transactional home for read models, checkpoints, parked events and leases.
pub trait Backend: Send + Sync + 'static {
    /// An open transaction. Dropping it without [`commit`](Backend::commit) rolls it back.
    type Tx: Send;

    /// Opens a transaction.
    fn begin(&self) -> impl Future<Output = Result<Self::Tx>> + Send;

    /// Commits a transaction.
    fn commit(&self, tx: Self::Tx) -> impl Future<Output = Result<()>> + Send;

    /// The committed checkpoint of `name` ([`Checkpoint::START`] if none).
    fn checkpoint(&self, name: &str) -> impl Future<Output = Result<Checkpoint>> + Send;

    /// Sets the checkpoint of `name` inside `tx`.
    fn save_checkpoint(&self, tx: &mut Self::Tx, name: &str, at: Checkpoint)
    -> impl Future<Output = Result<()>> + Send;

    /// The streams with parked events for `projection`.
    fn parked_streams(&self, projection: &str) -> impl Future<Output = Result<HashSet<StreamId>>> + Send;

    /// Parks `event` for `projection` inside `tx`.
    fn park(
        &self,
        tx: &mut Self::Tx,
        projection: &str,
        event: &RecordedEvent,
        reason: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The parked events of `projection`, per stream in order (all streams if `stream` is `None`).
    fn parked(
        &self,
        projection: &str,
        stream: Option<&StreamId>,
    ) -> impl Future<Output = Result<Vec<ParkedEvent>>> + Send;

    /// Removes one parked event inside `tx`.
    fn unpark(
        &self,
        tx: &mut Self::Tx,
        projection: &str,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Takes or renews the lease of `name` for `owner`; `false` while another owner holds it.
    fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> impl Future<Output = Result<bool>> + Send;

    /// Gives up `owner`'s lease of `name`.
    fn release_lease(&self, name: &str, owner: &str) -> impl Future<Output = Result<()>> + Send;

    /// Every stored checkpoint (partitions' too), by name.
    fn checkpoints(&self) -> impl Future<Output = Result<Vec<(String, Checkpoint)>>> + Send;

    /// The lease of `name`, if one was taken and not released (it may have run out).
    fn lease(&self, name: &str) -> impl Future<Output = Result<Option<Lease>>> + Send;

    /// Erases a forgotten data subject from the parked events of every
    /// projection, inside `tx`: their personal values become forgotten
    /// ([`forget_parked_event`]) and their reasons are replaced (a handler's
    /// message may quote the data). Returns how many it rewrote.
    fn forget_parked(&self, tx: &mut Self::Tx, subject: &Subject) -> impl Future<Output = Result<u64>> + Send;
}

/// The reason a parked event of a forgotten data subject keeps.
pub const FORGOTTEN_REASON: &str = "(reason erased: its data subject was forgotten)";

/// A parked copy of `event` with its personal values forgotten
/// (`eslab_core::personal::forget_value`), if it is about `subject`.
pub fn forget_parked_event(event: &RecordedEvent, subject: &Subject) -> Option<RecordedEvent> {
    (event.metadata.subject.as_ref() == Some(subject)).then(|| {
        let mut event = event.clone();
        eslab_core::personal::forget_value(&mut event.payload);
        event
    })
}

/// A named handler of recorded events that writes a read model through the
/// backend's transaction.
///
/// `apply` must be deterministic given the event and the read model: after a
/// handler error the runner rolls the batch back and applies it again, parking
/// the failing stream.
pub trait Projection<B: Backend>: Send + Sync + 'static {
    /// The stable name: the key of its checkpoint, lease and parked events.
    fn name(&self) -> &str;

    /// Which events it wants (all by default).
    fn filter(&self) -> FeedFilter {
        FeedFilter::All
    }

    /// Applies one event inside the batch's transaction.
    fn apply(
        &self,
        tx: &mut B::Tx,
        event: &RecordedEvent,
    ) -> impl Future<Output = std::result::Result<(), HandlerError>> + Send;

    /// Applies a batch's events, in order, inside its transaction; on failure
    /// returns the index (in `events`) of the event that failed with the
    /// handler's error. The runner then rolls the batch back and parks that
    /// event's stream (or, for a transient error, retries later).
    ///
    /// The default calls [`apply`](Self::apply) for each event; override it to
    /// save round trips (load the rows a batch touches at once, write them
    /// back with multi-row statements).
    fn apply_all(
        &self,
        tx: &mut B::Tx,
        events: &[&RecordedEvent],
    ) -> impl Future<Output = std::result::Result<(), (usize, HandlerError)>> + Send {
        async move {
            for (i, event) in events.iter().enumerate() {
                self.apply(tx, event).await.map_err(|e| (i, e))?;
            }
            Ok(())
        }
    }

    /// Erases what this projection's read model keeps about `subject`, a
    /// person just forgotten (see `eslab_core::personal`), inside `tx`: e.g.
    /// a name column set to its "forgotten" value. The default keeps nothing
    /// personal. What it writes must equal what applying the subject's events
    /// again would write now (their personal values read as forgotten), so
    /// that a rebuild from scratch equals the live read model.
    fn forget(
        &self,
        tx: &mut B::Tx,
        subject: &Subject,
    ) -> impl Future<Output = std::result::Result<(), HandlerError>> + Send {
        let _ = (tx, subject);
        async { Ok(()) }
    }
}

/// Erases `subject` from `projection`'s read model ([`Projection::forget`])
/// and from every parked event of `backend` ([`Backend::forget_parked`]), in
/// one transaction. Call it after the store forgot the subject.
///
/// # Errors
/// The backend's failure, or the projection's ([`crate::Error::Rejected`]-like
/// handler error, as [`crate::Error::Backend`]).
pub async fn forget_subject<B: Backend, P: Projection<B>>(
    backend: &B,
    projection: &P,
    subject: &Subject,
) -> Result<u64> {
    let mut tx = backend.begin().await?;
    projection.forget(&mut tx, subject).await.map_err(|e| crate::Error::Backend(Box::new(e)))?;
    let rewritten = backend.forget_parked(&mut tx, subject).await?;
    backend.commit(tx).await?;
    Ok(rewritten)
}
