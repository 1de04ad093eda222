//! The aggregate as a decider: pure `decide` and `evolve`, no I/O.

use crate::event::DomainEvent;
use crate::stream::{InvalidStreamId, StreamId};
use crate::version::Version;

/// A consistency boundary whose state is the fold of its events.
///
/// `decide` turns a command into events given the current state; `evolve`
/// applies one event to the state. Both are pure and synchronous: services a
/// decision needs are looked up by the caller before `decide`. `Default` is
/// the state before the first event.
///
/// ```
/// use eslab_core::{Aggregate, DomainEvent};
///
/// #[derive(Debug, Default, Clone, PartialEq)]
/// struct Counter { value: u32 }
///
/// #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// enum CounterEvent { Incremented { by: u32 } }
/// impl DomainEvent for CounterEvent {
///     const EVENT_TYPES: &'static [&'static str] = &["Incremented"];
///     fn event_type(&self) -> &'static str { "Incremented" }
/// }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("the counter would overflow")]
/// struct Overflow;
///
/// impl Aggregate for Counter {
///     const KIND: &'static str = "counter";
///     type Command = u32;
///     type Event = CounterEvent;
///     type Error = Overflow;
///     fn decide(&self, by: &u32) -> Result<Vec<CounterEvent>, Overflow> {
///         self.value.checked_add(*by).ok_or(Overflow)?;
///         Ok(vec![CounterEvent::Incremented { by: *by }])
///     }
///     fn evolve(&mut self, event: &CounterEvent) {
///         let CounterEvent::Incremented { by } = event;
///         self.value = self.value.saturating_add(*by);
///     }
/// }
///
/// let state = Counter::default();
/// let events = state.decide(&2).unwrap();
/// assert_eq!(Counter::fold(&events), Counter { value: 2 });
/// assert!(Counter { value: u32::MAX }.decide(&1).is_err());
/// ```
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    /// The stream kind (category), e.g. `account`.
    const KIND: &'static str;
    /// What callers ask of the aggregate.
    type Command: Send + Sync;
    /// What happened.
    type Event: DomainEvent;
    /// Why a command was refused (a domain rule).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides which events a command produces in the current state.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Applies one event to the state.
    fn evolve(&mut self, event: &Self::Event);

    /// The state after `events`, from the initial state.
    fn fold<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self {
        let mut state = Self::default();
        for event in events {
            state.evolve(event);
        }
        state
    }

    /// The stream id of the aggregate with this id.
    fn stream_id(id: &str) -> Result<StreamId, InvalidStreamId> {
        StreamId::new(Self::KIND, id)
    }

    /// The tags of an event this aggregate decided, on `stream` (by default
    /// the event's own [`DomainEvent::tags`]). Override it to make the
    /// aggregate's events part of [dynamic consistency boundaries](crate::boundary),
    /// e.g. every event tagged with its stream, `vec![Tag::of_stream(stream)]`,
    /// so that a decision spanning several aggregates reads them by tag.
    fn tags(stream: &StreamId, event: &Self::Event) -> Vec<crate::Tag> {
        let _ = stream;
        event.tags()
    }

    /// The data subject whose key seals the [`Personal`](crate::Personal)
    /// values of `stream`'s events and snapshots (by default none: an
    /// aggregate with personal data must name one, or its appends are
    /// refused). One person per stream is the common case:
    /// `Some(Subject::of_stream(stream))`.
    fn subject(stream: &StreamId) -> Option<crate::Subject> {
        let _ = stream;
        None
    }
}

/// An aggregate as loaded: its state and the version it is at.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// The state, folded from the events.
    pub state: A,
    /// The stream version the state reflects ([`Version::NONE`] if new).
    pub version: Version,
}
