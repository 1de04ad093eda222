//! Given/when/then tests for aggregates.

use std::fmt::Debug;

use eslab_core::Aggregate;

/// A given/when/then test of an aggregate's decisions.
///
/// ```
/// # use eslab_core::{Aggregate, DomainEvent};
/// # #[derive(Debug, Default, Clone, PartialEq)]
/// # struct Switch { on: bool }
/// # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
/// # enum Ev { TurnedOn }
/// # impl DomainEvent for Ev {
/// #     const EVENT_TYPES: &'static [&'static str] = &["TurnedOn"];
/// #     fn event_type(&self) -> &'static str { "TurnedOn" }
/// # }
/// # #[derive(Debug, PartialEq, thiserror::Error)] #[error("already on")] struct AlreadyOn;
/// # impl Aggregate for Switch {
/// #     const KIND: &'static str = "switch";
/// #     type Command = (); type Event = Ev; type Error = AlreadyOn;
/// #     fn decide(&self, _: &()) -> Result<Vec<Ev>, AlreadyOn> {
/// #         if self.on { Err(AlreadyOn) } else { Ok(vec![Ev::TurnedOn]) }
/// #     }
/// #     fn evolve(&mut self, _: &Ev) { self.on = true; }
/// # }
/// use eslab_testing::Scenario;
/// Scenario::<Switch>::given([]).when(()).then([Ev::TurnedOn]);
/// Scenario::<Switch>::given([Ev::TurnedOn]).when(()).then_err(AlreadyOn);
/// ```
#[derive(Debug)]
#[must_use = "a scenario checks nothing until then/then_err is called"]
pub struct Scenario<A: Aggregate> {
    given: Vec<A::Event>,
    state: A,
}

/// A scenario with its command.
#[derive(Debug)]
#[must_use = "a scenario checks nothing until then/then_err is called"]
pub struct When<A: Aggregate> {
    given: Vec<A::Event>,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> Scenario<A> {
    /// The aggregate after these events.
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let given: Vec<_> = events.into_iter().collect();
        let state = A::fold(&given);
        Scenario { given, state }
    }

    /// Decides `command` in that state.
    pub fn when(self, command: A::Command) -> When<A> {
        let result = self.state.decide(&command);
        When { given: self.given, result }
    }
}

impl<A: Aggregate> When<A>
where
    A::Event: Debug + PartialEq,
    A::Error: Debug,
{
    /// Asserts the command produced exactly these events.
    ///
    /// # Panics
    /// If the command was refused or produced other events.
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) {
        let expected: Vec<_> = expected.into_iter().collect();
        match self.result {
            Ok(events) => assert_eq!(events, expected, "given {:?}: unexpected events", self.given),
            Err(e) => panic!("given {:?}: expected events {expected:?}, got error {e:?}", self.given),
        }
    }

    /// Asserts the command was refused with an error matching `predicate`.
    ///
    /// # Panics
    /// If the command succeeded or failed otherwise.
    pub fn then_err_matches(self, predicate: impl FnOnce(&A::Error) -> bool) {
        match self.result {
            Ok(events) => panic!("given {:?}: expected an error, got events {events:?}", self.given),
            Err(e) => assert!(predicate(&e), "given {:?}: unexpected error {e:?}", self.given),
        }
    }

    /// Asserts the command was refused with exactly this error.
    ///
    /// # Panics
    /// If the command succeeded or failed with another error.
    pub fn then_err(self, expected: A::Error)
    where
        A::Error: PartialEq,
    {
        self.then_err_matches(|e| *e == expected);
    }
}
