//! The concurrency conformance kit of dynamic consistency boundaries: what
//! [`read_query`](eslab_core::EventReader::read_query) and
//! [`append_if`](eslab_core::EventAppender::append_if) must guarantee, under
//! racing writers, for any store.
//!
//! Like the store suite, each test is a public async function taking a
//! factory of *fresh, empty* stores, and [`boundary_conformance_tests!`](crate::boundary_conformance_tests)
//! turns the kit into `#[test]` functions. Another store runs it with one line:
//!
//! ```
//! async fn new_store() -> eslab_memory::MemoryStore {
//!     eslab_memory::MemoryStore::new()
//! }
//! eslab_testing::boundary_conformance_tests!(new_store);
//! # fn main() {}
//! ```
//!
//! What it checks:
//! - the basics: tags round-trip, a query returns the matching events in feed
//!   order, a condition holds until a matching event commits and then fails
//!   naming the first such event, a condition without a read fails on any
//!   match, stream expectations still apply beside a condition, bad input
//!   (too many tags, a position no read gave) is refused and writes nothing;
//! - **races**, [`ROUNDS`] rounds each, every racer reading before any appends:
//!   2, 8 and 64 racers on one boundary (exactly one commits per round);
//!   8 racers on disjoint boundaries (all commit); 8 racers whose boundaries
//!   of many tags overlap on one (exactly one); conditions on event types only
//!   (exactly one); a conditional append and a plain one with an expected
//!   version on one stream (exactly one);
//! - **a property**: random boundaries (items of tags and of types, drawn by
//!   proptest from a fixed seed), racers that read, pause at random and
//!   append; the committed history must be serializable: ordering a decision
//!   after every decision whose event it read and before every decision whose
//!   matching event it did not read must leave no cycle (every committed
//!   decision's condition held in that order).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use eslab_core::{
    AppendCondition, Error, EventId, ExpectedVersion, FeedFilter, InvalidQuery, Metadata, NewEvent, Position, Query,
    QueryItem, ReadPosition, StreamAppend, StreamId, Tag, Version,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::json;

use crate::conformance::TestStore;

/// Rounds of each race.
pub const ROUNDS: usize = 1000;

/// Expands to one `#[test]` per test of the kit, in a module named
/// `boundary_conformance`, each calling `$factory().await` for a fresh store.
#[macro_export]
macro_rules! boundary_conformance_tests {
    ($factory:path) => {
        $crate::boundary_conformance_tests!(@tests $factory;
            tags_round_trip_and_queries_match,
            condition_holds_until_a_matching_event_commits,
            condition_without_a_read_fails_on_any_match,
            stream_expectations_apply_beside_a_condition,
            bad_input_is_refused_and_writes_nothing,
            two_racers_on_one_boundary_one_commits,
            eight_racers_on_one_boundary_one_commits,
            sixty_four_racers_on_one_boundary_one_commits,
            racers_on_disjoint_boundaries_all_commit,
            boundaries_overlapping_on_one_tag_among_many_one_commits,
            conditions_on_event_types_only_one_commits,
            conditional_and_plain_appends_to_one_stream_one_commits,
            random_boundaries_commit_a_serializable_history
        );
    };
    (@tests $factory:path; $($name:ident),* $(,)?) => {
        #[allow(missing_docs)]
        mod boundary_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $name() {
                    $crate::block_on($crate::boundary::$name(|| $factory()));
                }
            )*
        }
    };
}

fn tag(s: &str) -> Tag {
    Tag::new(s).expect("valid tag")
}

fn stream(name: &str) -> StreamId {
    StreamId::new("dcb", name).expect("valid stream id")
}

fn tagged(event_type: &str, n: u64, tags: impl IntoIterator<Item = Tag>) -> NewEvent {
    NewEvent::new(event_type, 1, json!({ "n": n }), Metadata::now().with_tags(tags))
}

fn one(s: &StreamId, event: NewEvent) -> Vec<StreamAppend> {
    vec![StreamAppend::new(s.clone(), ExpectedVersion::Any, vec![event])]
}

async fn feed_len<S: TestStore>(store: &S) -> usize {
    let mut n = 0;
    let mut after = eslab_core::Checkpoint::START;
    loop {
        let page = store.read_feed(&FeedFilter::All, after, 512).await.expect("read feed");
        let Some(last) = page.last() else { return n };
        after = last.checkpoint();
        n += page.len();
    }
}

/// Tags come back as written; a query returns the events matching any item
/// (any of its types, all of its tags), in feed order, and nothing else.
pub async fn tags_round_trip_and_queries_match<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let (a, b, c) = (tag("course:a"), tag("student:b"), tag("student:c"));
    let s = stream("s1");
    store.append(&s, ExpectedVersion::Any, vec![tagged("Joined", 1, [a.clone(), b.clone()])]).await.expect("append");
    store.append(&s, ExpectedVersion::Any, vec![tagged("Joined", 2, [a.clone(), c.clone()])]).await.expect("append");
    store.append(&s, ExpectedVersion::Any, vec![tagged("Left", 3, [a.clone(), b.clone()])]).await.expect("append");
    store.append(&s, ExpectedVersion::Any, vec![tagged("Joined", 4, [])]).await.expect("append");
    let ns = |events: &[eslab_core::RecordedEvent]| -> Vec<u64> {
        events.iter().map(|e| e.payload["n"].as_u64().expect("n")).collect()
    };
    let all_a = store.read_query(&Query::tagged([a.clone()]).expect("query")).await.expect("read");
    assert_eq!(ns(&all_a.events), [1, 2, 3], "every event tagged course:a, in feed order");
    assert_eq!(all_a.events[0].metadata.tags, [a.clone(), b.clone()], "tags round-trip");
    let a_and_b = store.read_query(&Query::tagged([a.clone(), b.clone()]).expect("query")).await.expect("read");
    assert_eq!(ns(&a_and_b.events), [1, 3], "an item needs all its tags");
    let joined_b = Query::new([QueryItem::tagged([b.clone()]).with_types(["Joined"])]).expect("query");
    assert_eq!(ns(&store.read_query(&joined_b).await.expect("read").events), [1], "types and tags together");
    let either = Query::new([QueryItem::tagged([b]), QueryItem::tagged([c])]).expect("query");
    assert_eq!(ns(&store.read_query(&either).await.expect("read").events), [1, 2, 3], "items are alternatives");
    let by_type = Query::new([QueryItem::of_types(["Joined"])]).expect("query");
    assert_eq!(ns(&store.read_query(&by_type).await.expect("read").events), [1, 2, 4], "types only");
    let none = Query::tagged([tag("course:zzz")]).expect("query");
    assert!(store.read_query(&none).await.expect("read").events.is_empty());
}

/// A condition holds while nothing matching commits (unrelated events do not
/// matter); after a matching commit it fails, naming the first matching event
/// the read did not see, and writes nothing.
pub async fn condition_holds_until_a_matching_event_commits<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let (a, other) = (tag("account:1"), tag("account:2"));
    let query = Query::tagged([a.clone()]).expect("query");
    store.append(&stream("x"), ExpectedVersion::Any, vec![tagged("Opened", 0, [a.clone()])]).await.expect("append");
    let read = store.read_query(&query).await.expect("read");
    assert_eq!(read.events.len(), 1);
    // Unrelated commits do not break the condition.
    store.append(&stream("y"), ExpectedVersion::Any, vec![tagged("Opened", 1, [other])]).await.expect("append");
    store.append(&stream("y"), ExpectedVersion::Any, vec![tagged("Opened", 2, [])]).await.expect("append");
    let done = store
        .append_if(one(&stream("z"), tagged("Deposited", 3, [a.clone()])), read.condition(query.clone()))
        .await
        .expect("the condition holds: nothing matching since the read");
    assert_eq!(done[0].events[0].metadata.tags, std::slice::from_ref(&a));
    // The same read again: the event just appended matches, and was not seen.
    let first = store.read_query(&query).await.expect("read").events;
    let second = store
        .append(&stream("w"), ExpectedVersion::Any, vec![tagged("Deposited", 4, [a.clone()])])
        .await
        .expect("append");
    let before = feed_len(&store).await;
    match store.append_if(one(&stream("z"), tagged("Deposited", 5, [a.clone()])), read.condition(query.clone())).await {
        Err(Error::ConditionFailed { event_id, event_type, position }) => {
            let conflicting = &first[1];
            assert_eq!(event_id, conflicting.event_id, "names the first matching event the read did not see");
            assert_eq!(event_type, "Deposited");
            assert_eq!(position, conflicting.position);
            assert_ne!(event_id, second.events[0].event_id);
        }
        other => panic!("expected ConditionFailed, got {other:?}"),
    }
    assert!(
        Error::ConditionFailed { event_id: EventId::nil(), event_type: String::new(), position: Position::START }
            .is_conflict()
    );
    assert_eq!(feed_len(&store).await, before, "a failed condition writes nothing");
    // A fresh read: the condition holds again.
    let fresh = store.read_query(&query).await.expect("read");
    assert_eq!(fresh.events.len(), 3);
    store.append_if(one(&stream("z"), tagged("Deposited", 6, [a])), fresh.condition(query)).await.expect("fresh read");
}

/// Without a read position the condition is "no matching event exists".
pub async fn condition_without_a_read_fails_on_any_match<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let email = tag("email:ada@example.org");
    let unique = Query::new([QueryItem::tagged([email.clone()]).with_types(["Registered"])]).expect("query");
    store
        .append_if(
            one(&stream("u1"), tagged("Registered", 1, [email.clone()])),
            AppendCondition::none_matching(unique.clone()),
        )
        .await
        .expect("first registration");
    let again = store
        .append_if(one(&stream("u2"), tagged("Registered", 2, [email])), AppendCondition::none_matching(unique))
        .await;
    assert!(matches!(again, Err(Error::ConditionFailed { .. })), "{again:?}");
}

/// A condition does not replace the streams' expectations: both must hold.
pub async fn stream_expectations_apply_beside_a_condition<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let a = tag("order:1");
    let query = Query::tagged([a.clone()]).expect("query");
    let s = stream("order-1");
    store.append(&s, ExpectedVersion::Any, vec![tagged("Placed", 1, [a.clone()])]).await.expect("append");
    let read = store.read_query(&query).await.expect("read");
    let wrong = vec![StreamAppend::new(
        s.clone(),
        ExpectedVersion::Exact(Version::new(7)),
        vec![tagged("Paid", 2, [a.clone()])],
    )];
    let refused = store.append_if(wrong, read.condition(query.clone())).await;
    assert!(matches!(refused, Err(Error::Conflict { .. })), "{refused:?}");
    let right =
        vec![StreamAppend::new(s.clone(), ExpectedVersion::Exact(Version::FIRST), vec![tagged("Paid", 2, [a])])];
    let done = store.append_if(right, read.condition(query)).await.expect("both hold");
    assert_eq!(done[0].version, Version::new(2));
}

/// Too many tags on an event, and a position no read of this store gave
/// (ahead of its feed), are refused with typed errors and write nothing.
pub async fn bad_input_is_refused_and_writes_nothing<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let a = tag("k:1");
    let query = Query::tagged([a.clone()]).expect("query");
    store.append(&stream("b"), ExpectedVersion::Any, vec![tagged("E", 0, [a.clone()])]).await.expect("append");
    let before = feed_len(&store).await;
    let many: Vec<Tag> = (0..=eslab_core::boundary::MAX_TAGS_PER_EVENT).map(|i| tag(&format!("t:{i}"))).collect();
    let too_many = store.append(&stream("b"), ExpectedVersion::Any, vec![tagged("E", 1, many)]).await;
    assert!(matches!(too_many, Err(Error::InvalidQuery(InvalidQuery::TooManyTags(_)))), "{too_many:?}");
    let read = store.read_query(&query).await.expect("read");
    let mut ahead = read.position.clone();
    ahead.position = Position::new(ahead.position.get() + 1_000_000);
    if let Some(unseen) = &mut ahead.unseen {
        unseen.from += 1_000_000;
    }
    let refused = store
        .append_if(one(&stream("b"), tagged("E", 2, [a.clone()])), AppendCondition::new(query.clone(), ahead))
        .await;
    assert!(matches!(refused, Err(Error::InvalidQuery(InvalidQuery::PositionAhead { .. }))), "{refused:?}");
    // A bare position from another kind of store is refused the same way by a
    // store that needs more (and accepted by one for which it is enough).
    let foreign = ReadPosition::at(Position::new(read.position.position.get() + 1_000_000));
    let refused = store.append_if(one(&stream("b"), tagged("E", 3, [a])), AppendCondition::new(query, foreign)).await;
    assert!(matches!(refused, Err(Error::InvalidQuery(InvalidQuery::PositionAhead { .. }))), "{refused:?}");
    assert_eq!(feed_len(&store).await, before, "nothing was written");
}

/// One racer of a round: the boundary it reads and the event it appends.
#[derive(Debug, Clone)]
struct Racer {
    query: Query,
    event_type: String,
    tags: Vec<Tag>,
}

/// What a committed decision read and wrote.
#[derive(Debug, Clone)]
struct Committed {
    query: Query,
    read: HashSet<EventId>,
    event: EventId,
    event_type: String,
    tags: Vec<Tag>,
}

/// One round. Without `pauses`, every racer reads, then all append at
/// once, each to its own new stream; with them, each racer waits its pause
/// (ms), reads and appends on its own, so that reads interleave with the
/// others' appends. Returns the committed decisions; panics on any failure
/// other than a failed condition.
async fn round<S: TestStore>(store: &S, round: usize, racers: &[Racer], pauses: Option<&[u64]>) -> Vec<Committed> {
    let reads = match pauses {
        None => futures_util::future::join_all(racers.iter().map(|r| store.read_query(&r.query)))
            .await
            .into_iter()
            .map(|read| Some(read.expect("read the boundary")))
            .collect(),
        Some(_) => vec![None; racers.len()],
    };
    let mut tasks = Vec::with_capacity(racers.len());
    for (i, (racer, read)) in racers.iter().zip(reads).enumerate() {
        let store = store.clone();
        let racer = racer.clone();
        let pause = pauses.and_then(|p| p.get(i)).copied().unwrap_or(0);
        tasks.push(tokio::spawn(async move {
            let read = match read {
                Some(read) => read,
                None => {
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    store.read_query(&racer.query).await.expect("read the boundary")
                }
            };
            let event = tagged(&racer.event_type, i as u64, racer.tags.clone());
            let id = event.event_id;
            let s = stream(&format!("r{round}-{i}"));
            let appends = vec![StreamAppend::new(s, ExpectedVersion::NoStream, vec![event])];
            match store.append_if(appends, read.condition(racer.query.clone())).await {
                Ok(_) => Some(Committed {
                    query: racer.query,
                    read: read.events.iter().map(|e| e.event_id).collect(),
                    event: id,
                    event_type: racer.event_type,
                    tags: racer.tags,
                }),
                Err(Error::ConditionFailed { .. }) => None,
                Err(other) => panic!("round {round}, racer {i}: {other:?}"),
            }
        }));
    }
    let mut committed = Vec::new();
    for task in tasks {
        if let Some(c) = task.await.expect("racer task") {
            committed.push(c);
        }
    }
    committed
}

/// `ROUNDS` rounds of `make(round)`; asserts `expected(racers)` commits per round.
async fn race<S: TestStore>(store: &S, make: impl Fn(usize) -> Vec<Racer>, expected: impl Fn(usize) -> usize) {
    for r in 0..ROUNDS {
        let racers = make(r);
        let committed = round(store, r, &racers, None).await;
        assert_eq!(committed.len(), expected(racers.len()), "round {r}: {} racers", racers.len());
    }
}

fn one_boundary(n: usize) -> impl Fn(usize) -> Vec<Racer> {
    move |r| {
        let t = tag(&format!("seat:{r}"));
        let query = Query::tagged([t.clone()]).expect("query");
        (0..n).map(|_| Racer { query: query.clone(), event_type: "Booked".into(), tags: vec![t.clone()] }).collect()
    }
}

async fn racers_on_one_boundary<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F, n: usize) {
    let store = new().await;
    race(&store, one_boundary(n), |_| 1).await;
}

/// 2 racers on one boundary: exactly one commits, every round.
pub async fn two_racers_on_one_boundary_one_commits<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    racers_on_one_boundary(new, 2).await;
}

/// 8 racers on one boundary: exactly one commits, every round.
pub async fn eight_racers_on_one_boundary_one_commits<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    racers_on_one_boundary(new, 8).await;
}

/// 64 racers on one boundary: exactly one commits, every round.
pub async fn sixty_four_racers_on_one_boundary_one_commits<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    racers_on_one_boundary(new, 64).await;
}

/// 8 racers, each on its own boundary: all commit, every round.
pub async fn racers_on_disjoint_boundaries_all_commit<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let make = |r: usize| {
        (0..8)
            .map(|i| {
                let t = tag(&format!("seat:{r}-{i}"));
                Racer { query: Query::tagged([t.clone()]).expect("query"), event_type: "Booked".into(), tags: vec![t] }
            })
            .collect()
    };
    race(&store, make, |n| n).await;
}

/// 8 racers whose boundaries name many tags of their own and one shared tag
/// (which every event carries): exactly one commits.
pub async fn boundaries_overlapping_on_one_tag_among_many_one_commits<S: TestStore, F: Future<Output = S>>(
    new: impl Fn() -> F,
) {
    let store = new().await;
    let make = |r: usize| {
        let shared = tag(&format!("shared:{r}"));
        (0..8)
            .map(|i| {
                let own: Vec<Tag> = (0..6).map(|k| tag(&format!("own:{r}-{i}-{k}"))).collect();
                let mut items: Vec<QueryItem> = own.iter().map(|t| QueryItem::tagged([t.clone()])).collect();
                items.push(QueryItem::tagged([shared.clone()]));
                let tags = vec![own[0].clone(), shared.clone()];
                Racer { query: Query::new(items).expect("query"), event_type: "Booked".into(), tags }
            })
            .collect()
    };
    race(&store, make, |_| 1).await;
}

/// 8 racers whose conditions name an event type only (no tag), appending
/// untagged events of that type: exactly one commits.
pub async fn conditions_on_event_types_only_one_commits<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let make = |r: usize| {
        let event_type = format!("Claimed{r}");
        let query = Query::new([QueryItem::of_types([event_type.clone()])]).expect("query");
        (0..8).map(|_| Racer { query: query.clone(), event_type: event_type.clone(), tags: Vec::new() }).collect()
    };
    race(&store, make, |_| 1).await;
}

/// A conditional append and a plain one with an expected version race on
/// one stream whose events carry the boundary's tag (an aggregate's command
/// beside a boundary decision): each would invalidate the other, exactly one
/// commits, every round.
pub async fn conditional_and_plain_appends_to_one_stream_one_commits<S: TestStore, F: Future<Output = S>>(
    new: impl Fn() -> F,
) {
    let store = new().await;
    for r in 0..ROUNDS {
        let t = tag(&format!("account:{r}"));
        let s = stream(&format!("account-{r}"));
        let opened = store.append(&s, ExpectedVersion::NoStream, vec![tagged("Opened", 0, [t.clone()])]).await;
        let version = opened.expect("open").version;
        let query = Query::tagged([t.clone()]).expect("query");
        let read = store.read_query(&query).await.expect("read");
        let (conditional, plain) = {
            let (a, b) = (store.clone(), store.clone());
            let (s1, s2, t1, t2) = (s.clone(), s.clone(), t.clone(), t);
            let condition = read.condition(query);
            let conditional =
                tokio::spawn(async move { a.append_if(one(&s1, tagged("Withdrawn", 1, [t1])), condition).await });
            let plain = tokio::spawn(async move {
                b.append(&s2, ExpectedVersion::Exact(version), vec![tagged("Withdrawn", 2, [t2])]).await
            });
            (conditional.await.expect("task"), plain.await.expect("task"))
        };
        match (&conditional, &plain) {
            (Ok(_), Err(Error::Conflict { .. })) | (Err(Error::ConditionFailed { .. }), Ok(_)) => {}
            other => panic!("round {r}: exactly one must commit, got {other:?}"),
        }
    }
}

/// Racers of random boundaries (items of 1-2 tags from a small set, or of a
/// type), appending events of random tags and types, each racer pausing
/// 0-2 ms at random, then reading and appending on its own (reads interleave
/// with the others' appends); 250 rounds of 2-8 racers. The history of
/// committed decisions must be serializable (see the module docs), and every
/// round must commit at least one (a racer fails only because another's
/// matching event committed).
pub async fn random_boundaries_commit_a_serializable_history<S: TestStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let mut runner = TestRunner::deterministic();
    let racer = (
        prop::collection::vec((prop::collection::vec(0..5usize, 1..3), prop::option::weighted(0.2, 0..2usize)), 1..3),
        prop::collection::vec(0..5usize, 0..3),
        0..2usize,
        0..3u64,
    );
    let scenario = prop::collection::vec(prop::collection::vec(racer, 2..9), 250)
        .new_tree(&mut runner)
        .expect("a scenario")
        .current();
    let mut history: Vec<Committed> = Vec::new();
    for (r, racers) in scenario.into_iter().enumerate() {
        // Tags and types are shared by the rounds of an epoch, so that reads
        // see earlier rounds' events (and positions matter).
        let epoch = r / 25;
        let tag_of = |k: usize| tag(&format!("k{epoch}:{k}"));
        let type_of = |k: usize| format!("T{epoch}x{k}");
        let mut built = Vec::new();
        let mut pauses = Vec::new();
        for (items, event_tags, event_type, pause) in racers {
            let items: Vec<QueryItem> = items
                .into_iter()
                .map(|(tags, ty)| match ty {
                    Some(ty) => QueryItem::of_types([type_of(ty)]),
                    None => QueryItem::tagged(tags.into_iter().map(tag_of)),
                })
                .collect();
            let mut tags: Vec<Tag> = event_tags.into_iter().map(tag_of).collect();
            tags.sort();
            tags.dedup();
            built.push(Racer { query: Query::new(items).expect("query"), event_type: type_of(event_type), tags });
            pauses.push(pause);
        }
        let committed = round(&store, r, &built, Some(&pauses)).await;
        assert!(!committed.is_empty(), "round {r}: no racer committed");
        history.extend(committed);
    }
    assert_serializable(&history);
}

/// Orders `d` after every decision whose event it read, and before every
/// decision whose matching event it did not read; panics on a cycle.
fn assert_serializable(history: &[Committed]) {
    let n = history.len();
    let mut after: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for (d, decision) in history.iter().enumerate() {
        for (e, other) in history.iter().enumerate() {
            if d == e || !decision.query.matches(&other.event_type, &other.tags) {
                continue;
            }
            let (from, to) = if decision.read.contains(&other.event) { (e, d) } else { (d, e) };
            after[from].push(to);
            indegree[to] += 1;
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut ordered = 0;
    while let Some(i) = ready.pop() {
        ordered += 1;
        for &j in &after[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(j);
            }
        }
    }
    let stuck: HashMap<usize, usize> = indegree.iter().copied().enumerate().filter(|&(_, d)| d > 0).collect();
    assert_eq!(ordered, n, "the committed decisions are not serializable: {} in a cycle ({stuck:?})", n - ordered);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(query: &str, read: &[u128], event: u128, tags: &[&str]) -> Committed {
        Committed {
            query: Query::tagged([tag(query)]).expect("query"),
            read: read.iter().map(|&i| EventId::from_u128(i)).collect(),
            event: EventId::from_u128(event),
            event_type: "E".into(),
            tags: tags.iter().map(|t| tag(t)).collect(),
        }
    }

    #[test]
    fn the_check_accepts_a_serial_history() {
        // 1 wrote a; 2 read 1 and wrote a.
        assert_serializable(&[decision("a", &[], 1, &["a"]), decision("a", &[1], 2, &["a"])]);
    }

    #[test]
    #[should_panic(expected = "not serializable")]
    fn the_check_catches_two_winners_on_one_boundary() {
        // Both read nothing and both wrote a: each should have seen the other.
        assert_serializable(&[decision("a", &[], 1, &["a"]), decision("a", &[], 2, &["a"])]);
    }

    #[test]
    #[should_panic(expected = "not serializable")]
    fn the_check_catches_write_skew() {
        // 1 read b (nothing), wrote a; 2 read a (nothing), wrote b.
        assert_serializable(&[decision("b", &[], 1, &["a"]), decision("a", &[], 2, &["b"])]);
    }
}
