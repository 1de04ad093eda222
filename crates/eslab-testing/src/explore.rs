//! The conformance tests of [`Explore`]: categories, the streams of a
//! category, the events of one correlation id, each keyset-paged.
//! [`explore_conformance_tests!`](crate::explore_conformance_tests) expands
//! them for a store factory.

use std::future::Future;

use eslab_core::{
    COUNT_CAP, CategorySummary, EventAppender, EventReader, EventStore, ExpectedVersion, Explore, Metadata, NewEvent,
    Position, StreamAppend, StreamId, Version,
};
use serde_json::json;
use uuid::Uuid;

/// What the explore suite needs of a store.
pub trait ExploreStore: EventReader + EventAppender + Explore + Clone + 'static {}
impl<T: EventReader + EventAppender + Explore + Clone + 'static> ExploreStore for T {}

/// Expands to one `#[test]` per explore conformance test, in a module named
/// `explore_conformance`, each calling `$factory().await` for a fresh store.
#[macro_export]
macro_rules! explore_conformance_tests {
    ($factory:path) => {
        #[allow(missing_docs)]
        mod explore_conformance {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn categories_are_listed_in_pages_with_counts() {
                $crate::block_on($crate::explore::categories_are_listed_in_pages_with_counts(|| $factory()));
            }
            #[test]
            fn a_category_s_streams_are_listed_in_pages() {
                $crate::block_on($crate::explore::a_category_s_streams_are_listed_in_pages(|| $factory()));
            }
            #[test]
            fn one_request_is_followed_across_streams() {
                $crate::block_on($crate::explore::one_request_is_followed_across_streams(|| $factory()));
            }
            #[test]
            fn a_count_stops_at_the_cap() {
                $crate::block_on($crate::explore::a_count_stops_at_the_cap(|| $factory()));
            }
        }
    };
}

fn stream(id: &str) -> StreamId {
    id.parse().expect("valid stream id")
}

fn events(n: usize, metadata: &Metadata) -> Vec<NewEvent> {
    (0..n).map(|i| NewEvent::new("Noted", 1, json!({ "i": i }), metadata.clone())).collect()
}

async fn append<S: EventAppender>(store: &S, id: &str, n: usize, metadata: &Metadata) {
    store.append(&stream(id), ExpectedVersion::Any, events(n, metadata)).await.expect("append");
}

/// Every category with its event count, in name order, page by page; a
/// category whose name is a prefix of another's is not mixed with it.
pub async fn categories_are_listed_in_pages_with_counts<S: ExploreStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    assert!(store.categories(None, 10).await.expect("categories").is_empty(), "an empty store has none");
    let m = Metadata::now();
    append(&store, "order-1", 2, &m).await;
    append(&store, "order-2", 1, &m).await;
    append(&store, "account-1", 3, &m).await;
    append(&store, "accounting-9", 1, &m).await;
    append(&store, "zebra-1", 4, &m).await;
    let all = store.categories(None, 100).await.expect("categories");
    let want = [("account", 3), ("accounting", 1), ("order", 3), ("zebra", 4)].map(|(c, n)| CategorySummary {
        category: c.to_owned(),
        events: n,
        capped: false,
    });
    assert_eq!(all, want);
    let first = store.categories(None, 2).await.expect("page 1");
    assert_eq!(first, want[..2]);
    let second = store.categories(Some(&first[1].category), 2).await.expect("page 2");
    assert_eq!(second, want[2..]);
    assert!(store.categories(Some("zebra"), 2).await.expect("past the end").is_empty());
    assert_eq!(
        store.categories(Some("b"), 1).await.expect("from between").first().map(|c| c.category.as_str()),
        Some("order")
    );
}

/// The streams of one category (not of a category sharing its prefix), in
/// id order with their versions, page by page; an unknown category is empty.
pub async fn a_category_s_streams_are_listed_in_pages<S: ExploreStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let m = Metadata::now();
    for (id, n) in [("account-b", 2), ("account-a", 1), ("account-c-1", 3), ("accounting-a", 1), ("account-c", 1)] {
        append(&store, id, n, &m).await;
    }
    let all = store.streams("account", None, 100).await.expect("streams");
    let got: Vec<(String, u64)> = all.iter().map(|s| (s.stream_id.to_string(), s.version.get())).collect();
    let want =
        [("account-a", 1), ("account-b", 2), ("account-c", 1), ("account-c-1", 3)].map(|(id, n)| (id.to_owned(), n));
    assert_eq!(got, want);
    let first = store.streams("account", None, 3).await.expect("page 1");
    assert_eq!(first, all[..3]);
    let rest = store.streams("account", Some(&first[2].stream_id), 3).await.expect("page 2");
    assert_eq!(rest, all[3..]);
    assert!(store.streams("nothing", None, 10).await.expect("unknown").is_empty());
    assert_eq!(store.streams("accounting", None, 10).await.expect("other").len(), 1);
    assert!(store.streams("account", Some(&stream("account-zzz")), 10).await.expect("past the end").is_empty());
}

/// The events of one correlation id, across streams and appends, in
/// position order, page by page; other requests' events are not among them.
pub async fn one_request_is_followed_across_streams<S: ExploreStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let backend = new().await;
    let store = EventStore::new(backend.clone());
    let request = Uuid::now_v7();
    let other = Uuid::now_v7();
    let ours = Metadata::now().with_correlation_id(request);
    let theirs = Metadata::now().with_correlation_id(other);
    append(&store, "transfer-1", 1, &ours).await;
    append(&store, "account-1", 1, &theirs).await;
    append(&store, "account-1", 1, &Metadata::now()).await;
    store
        .append_streams(vec![
            StreamAppend::new(stream("account-1"), ExpectedVersion::Any, events(1, &ours)),
            StreamAppend::new(stream("account-2"), ExpectedVersion::Any, events(2, &ours)),
        ])
        .await
        .expect("multi-stream append");
    let found = store.correlated(request, Position::START, 100).await.expect("correlated");
    let streams: Vec<String> = found.iter().map(|e| e.stream_id.to_string()).collect();
    assert_eq!(streams, ["transfer-1", "account-1", "account-2", "account-2"]);
    assert!(found.windows(2).all(|w| w[0].position < w[1].position), "position order");
    assert!(found.iter().all(|e| e.metadata.correlation_id == Some(request)));
    let first = store.correlated(request, Position::START, 3).await.expect("page 1");
    assert_eq!(first, found[..3]);
    let rest = store.correlated(request, first[2].position, 3).await.expect("page 2");
    assert_eq!(rest, found[3..]);
    assert!(store.correlated(Uuid::now_v7(), Position::START, 10).await.expect("unknown").is_empty());
    let beyond = store.correlated(request, Position::new(u64::MAX), 10).await.expect("beyond");
    assert!(beyond.is_empty());
    assert_eq!(store.correlated(other, Position::START, 10).await.expect("other").len(), 1);
    assert_eq!(found[0].stream_version, Version::FIRST);
}

/// A category with more than [`COUNT_CAP`] events says so instead of
/// counting them all.
pub async fn a_count_stops_at_the_cap<S: ExploreStore, F: Future<Output = S>>(new: impl Fn() -> F) {
    let store = new().await;
    let m = Metadata::now();
    let cap = usize::try_from(COUNT_CAP).expect("small cap");
    for chunk in 0..(cap / 1000 + 1) {
        append(&store, &format!("big-{chunk}"), 1000, &m).await;
    }
    append(&store, "small-1", 1, &m).await;
    let all = store.categories(None, 10).await.expect("categories");
    assert_eq!(all[0], CategorySummary { category: "big".into(), events: COUNT_CAP, capped: true });
    assert_eq!(all[1], CategorySummary { category: "small".into(), events: 1, capped: false });
}
