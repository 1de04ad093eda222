//! Lag (events and seconds behind), its gauges, and the operator's status view.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use eslab_core::{EventAppender, ExpectedVersion, FeedFilter, Metadata, NewEvent};
use eslab_memory::MemoryStore;
use eslab_projection::memory::MemoryBackend;
use eslab_projection::{EVENTS_BEHIND, Lag, Outcome, SECONDS_BEHIND, record_lag, status};
use metrics::{
    Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata as MetricMetadata, Recorder, SharedString, Unit,
};
use serde_json::json;

use super::{runner, seed, stream};

#[tokio::test]
async fn lag_counts_events_behind_and_the_oldest_unapplied_age() {
    let (store, backend) = (MemoryStore::new(), MemoryBackend::new());
    let r = runner(&store, &backend, 7);
    assert_eq!(r.lag().await.unwrap(), Lag::NONE, "an empty feed: nothing behind");
    seed(&store, 3, 10).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let before = r.lag().await.unwrap();
    assert_eq!(before.events, 30);
    assert!(before.seconds >= 0.02, "the oldest event waits since the seed: {}", before.seconds);
    assert!(matches!(r.run_once().await.unwrap(), Outcome::Processed { events: 7, .. }));
    assert_eq!(r.lag().await.unwrap().events, 23);
    r.drain().await.unwrap();
    assert_eq!(r.lag().await.unwrap(), Lag::NONE);
    // A filtered projection only counts its own feed's head.
    let other = NewEvent::new("Other", 1, json!({}), Metadata::now());
    let other_stream: eslab_core::StreamId = "other-1".parse().unwrap();
    store.append(&other_stream, ExpectedVersion::Any, vec![other]).await.unwrap();
    let acc = FeedFilter::category("acc").unwrap();
    let lag = eslab_projection::lag(&store, &acc, r.checkpoint().await.unwrap()).await.unwrap();
    assert_eq!(lag, Lag::NONE);
    assert_eq!(r.lag().await.unwrap().events, 1, "the unfiltered tally is one behind");
}

#[tokio::test]
async fn status_shows_checkpoint_lag_lease_and_parked() {
    let (store, backend) = (MemoryStore::new(), MemoryBackend::new());
    seed(&store, 2, 3).await;
    let poison = NewEvent::new("Counted", 1, json!({ "poison": true }), Metadata::now());
    store.append(&stream(5), ExpectedVersion::Any, vec![poison]).await.unwrap();
    let never = status(&store, &backend, "tally", &FeedFilter::All).await.unwrap();
    assert_eq!(
        (never.checkpoint, never.lag.events, never.lease_owner, never.parked),
        (eslab_core::Checkpoint::START, 7, None, 0)
    );
    let r = runner(&store, &backend, 100).partitioned(2);
    r.drain().await.unwrap();
    let s = status(&store, &backend, "tally", &FeedFilter::All).await.unwrap();
    assert_eq!(s.checkpoint.position.get(), 7, "the lowest partition checkpoint");
    assert_eq!(s.lag, Lag::NONE);
    assert_eq!(s.lease_owner, None, "drain released the lease");
    assert_eq!(s.parked, 1);
    assert_eq!(r.run_once().await.unwrap(), eslab_projection::Outcome::Idle);
    let s = status(&store, &backend, "tally", &FeedFilter::All).await.unwrap();
    assert_eq!(s.lease_owner.as_deref(), Some("worker-1"));
}

/// A recorder that keeps the last value of every gauge.
#[derive(Clone, Default)]
struct Gauges(Arc<Mutex<HashMap<String, f64>>>);

struct OneGauge(String, Arc<Mutex<HashMap<String, f64>>>);

impl GaugeFn for OneGauge {
    fn increment(&self, value: f64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self.1.lock().unwrap().entry(self.0.clone()).or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.1.lock().unwrap().insert(self.0.clone(), value);
    }
}

impl Recorder for Gauges {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &MetricMetadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &MetricMetadata<'_>) -> Gauge {
        let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        Gauge::from_arc(Arc::new(OneGauge(format!("{}{{{}}}", key.name(), labels.join(",")), self.0.clone())))
    }
    fn register_histogram(&self, _: &Key, _: &MetricMetadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn lag_gauges_are_labelled_by_projection() {
    let gauges = Gauges::default();
    metrics::with_local_recorder(&gauges, || {
        record_lag("bank-views", &Lag { events: 42, seconds: 1.5 });
        record_lag("transfer-process", &Lag::NONE);
    });
    let seen = gauges.0.lock().unwrap().clone();
    assert_eq!(seen[&format!("{EVENTS_BEHIND}{{projection=bank-views}}")], 42.0);
    assert_eq!(seen[&format!("{SECONDS_BEHIND}{{projection=bank-views}}")], 1.5);
    assert_eq!(seen[&format!("{EVENTS_BEHIND}{{projection=transfer-process}}")], 0.0);
}
