//! Workloads shared by experiments: the bank's events as stored rows, stream
//! choice under a Zipf distribution, and single-event appends from concurrent
//! callers (eslab's store, or the raw one-row INSERT baseline).

use std::time::{Duration, Instant};

use eslab_bank::{AccountEvent, Amount, Balance, OverdraftLimit, Owner};
use eslab_core::{Codec, Error, EventAppender, EventReader, ExpectedVersion, JsonCodec, Metadata, NewEvent, StreamId};
use eslab_postgres::PostgresStore;
use sqlx::PgPool;

use super::measure::{Budget, Latencies};

/// The events of one account: opened, then `n - 1` deposits (balances add up).
pub(super) fn account_events(n: usize) -> anyhow::Result<Vec<AccountEvent>> {
    let mut events = Vec::with_capacity(n);
    if n == 0 {
        return Ok(events);
    }
    events.push(AccountEvent::AccountOpened {
        owner: Owner { name: "Ada Lovelace".into() },
        currency: "EUR".parse().map_err(|e| anyhow::anyhow!("{e}"))?,
        overdraft_limit: OverdraftLimit::new(5_000)?,
    });
    let mut balance = Balance::ZERO;
    for i in 1..n {
        let amount = Amount::new(i64::try_from(i % 997 + 1)? * 100)?;
        balance = balance.plus(amount)?;
        events.push(AccountEvent::MoneyDeposited { amount, balance });
    }
    Ok(events)
}

/// The stored rows of `events` (JSON codec, fresh ids, one shared metadata).
pub(super) fn encode(events: &[AccountEvent]) -> anyhow::Result<Vec<NewEvent>> {
    let metadata = Metadata::now().with_correlation_id(uuid::Uuid::now_v7()).with_actor("lab");
    events.iter().map(|e| Ok(JsonCodec.encode(e, metadata.clone())?)).collect()
}

/// `n` stored rows of one account (JSON codec, fresh ids, metadata with a correlation id).
pub(super) fn account_rows(n: usize) -> anyhow::Result<Vec<NewEvent>> {
    encode(&account_events(n)?)
}

/// More deposits for an account whose balance is `balance`, from version `from`.
pub(super) fn more_deposits(n: usize, mut balance: Balance) -> anyhow::Result<(Vec<NewEvent>, Balance)> {
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let amount = Amount::new(i64::try_from(i % 997 + 1)? * 100)?;
        balance = balance.plus(amount)?;
        rows.push(JsonCodec.encode(&AccountEvent::MoneyDeposited { amount, balance }, Metadata::now())?);
    }
    Ok((rows, balance))
}

/// Picks one of `n` items with probability proportional to `1 / rank^s`
/// (rank from 1): item 0 is the hottest. Inverse CDF over a table, so the
/// distribution is exact for any `s >= 0` (`s = 0` is uniform).
#[derive(Debug, Clone)]
pub(super) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// A Zipf distribution over `n >= 1` items with exponent `s`.
    pub(super) fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let mut cdf = Vec::with_capacity(n.max(1));
        for rank in 1..=n.max(1) {
            #[allow(clippy::cast_precision_loss)] // ranks far below 2^52
            let weight = 1.0 / (rank as f64).powf(s);
            total += weight;
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    /// The item for a uniform `u` in `[0, 1)`.
    pub(super) fn item(&self, u: f64) -> usize {
        self.cdf.partition_point(|c| *c <= u).min(self.cdf.len() - 1)
    }

    /// A random item.
    pub(super) fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        self.item(rng.f64())
    }

    /// The probability of the hottest item.
    pub(super) fn hottest(&self) -> f64 {
        self.cdf.first().copied().unwrap_or(1.0)
    }
}

/// What the callers of [`single_appends`] append through, one event per call.
#[derive(Debug, Clone)]
pub(super) enum Appender {
    /// The baseline: a raw one-row `INSERT` into the `events` table of the
    /// pool's schema, autocommit (one commit per row), each caller on its own stream.
    Raw(PgPool),
    /// The store's `append`, expecting the version the caller last saw, on
    /// `streams` streams `lab-<prefix><n>`: caller `c` appends to stream
    /// `c % streams` (its own when there are as many streams as callers).
    Store {
        /// The store (its options decide how it commits and notifies).
        store: PostgresStore,
        /// Names this run's streams, so that they can be counted afterwards.
        prefix: String,
        /// How many streams the callers share.
        streams: u64,
    },
}

/// What the callers of [`single_appends`] did, together.
#[derive(Debug)]
pub(super) struct Appended {
    /// Acknowledged appends.
    pub(super) appends: u64,
    /// Appends refused because another caller of the stream was first.
    pub(super) conflicts: u64,
    /// Each acknowledged append's call.
    pub(super) latency: Latencies,
    /// From the first caller's start to the last caller's end.
    pub(super) elapsed: Duration,
}

/// The one event each call appends.
pub(super) fn event(n: u64) -> NewEvent {
    NewEvent::new("Deposited", 1, serde_json::json!({ "amount": 100, "n": n }), Metadata::now())
}

/// `callers` concurrent callers appending single events through `appender`,
/// each within `budget`.
pub(super) async fn single_appends(appender: &Appender, callers: u64, budget: Budget) -> anyhow::Result<Appended> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..callers {
        match appender {
            Appender::Raw(pool) => {
                tasks.spawn(raw_caller(pool.clone(), c, budget));
            }
            Appender::Store { store, prefix, streams } => {
                let stream = StreamId::new("lab", &format!("{prefix}{}", c % streams))?;
                tasks.spawn(store_caller(store.clone(), stream, budget));
            }
        }
    }
    let (mut appends, mut conflicts, mut latency) = (0, 0, Latencies::new()?);
    while let Some(joined) = tasks.join_next().await {
        let (n, c, l) = joined??;
        appends += n;
        conflicts += c;
        latency.merge(&l)?;
    }
    Ok(Appended { appends, conflicts, latency, elapsed: started.elapsed() })
}

impl Appender {
    /// How many events the store holds in this appender's streams (`None` for the raw baseline).
    pub(super) async fn stored(&self) -> anyhow::Result<Option<u64>> {
        let Appender::Store { store, prefix, .. } = self else { return Ok(None) };
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_id LIKE $1")
            .bind(format!("lab-{prefix}%"))
            .fetch_one(store.pool())
            .await?;
        Ok(Some(u64::try_from(stored)?))
    }
}

/// One caller of the store: single events to `stream`, expecting the version
/// it last saw; a conflict (another caller of the stream was first) catches up.
async fn store_caller(store: PostgresStore, stream: StreamId, budget: Budget) -> anyhow::Result<(u64, u64, Latencies)> {
    let mut latency = Latencies::new()?;
    let (mut done, mut conflicts) = (0_u64, 0_u64);
    let mut version = store.stream_version(&stream).await?;
    let started = Instant::now();
    while budget.more(done, started) {
        let t = Instant::now();
        match store.append(&stream, ExpectedVersion::Exact(version), vec![event(done)]).await {
            Ok(r) => {
                latency.record(t.elapsed());
                version = r.version;
                done += 1;
            }
            Err(Error::Conflict { actual, .. }) => {
                conflicts += 1;
                version = actual;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((done, conflicts, latency))
}

async fn raw_caller(pool: PgPool, caller: u64, budget: Budget) -> anyhow::Result<(u64, u64, Latencies)> {
    let mut latency = Latencies::new()?;
    let mut done = 0_u64;
    let stream = format!("raw-{caller}-{}", uuid::Uuid::now_v7().simple());
    let metadata = serde_json::to_value(Metadata::now())?;
    let started = Instant::now();
    while budget.more(done, started) {
        let t = Instant::now();
        sqlx::query(eslab_postgres::statements::RAW_INSERT)
            .bind(&stream)
            .bind(i64::try_from(done + 1)?)
            .bind(uuid::Uuid::now_v7())
            .bind(serde_json::json!({ "amount": 100, "n": done }))
            .bind(&metadata)
            .execute(&pool)
            .await?;
        latency.record(t.elapsed());
        done += 1;
    }
    Ok((done, 0, latency))
}

/// The chart of single-event appends per second by concurrent callers
/// (experiments 4 and 10): one series per variant, `(name, value per caller
/// count)`, NaN where a variant did not run.
pub(crate) fn appends_by_callers(title: &str, callers: &[u64], series: Vec<(String, Vec<f64>)>) -> crate::Chart {
    crate::Chart {
        title: title.to_owned(),
        x_label: "concurrent callers".into(),
        y_label: "appends/s".into(),
        categories: callers.iter().map(ToString::to_string).collect(),
        series,
        log_y: false,
    }
}

/// `callers` in the order findings list them: the report's index shows the
/// first finding, so the smallest caller count of 32 or more (the targets')
/// leads, then the rest in order.
pub(crate) fn findings_order(callers: &[u64]) -> Vec<u64> {
    let mut ordered = callers.to_vec();
    ordered.sort_by_key(|&n| (n < 32, n));
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_matches_its_weights() {
        let z = Zipf::new(4, 1.0);
        // Weights 1, 1/2, 1/3, 1/4 over 25/12.
        assert!((z.hottest() - 12.0 / 25.0).abs() < 1e-12);
        assert_eq!(z.item(0.0), 0);
        assert_eq!(z.item(0.47), 0);
        assert_eq!(z.item(0.49), 1);
        assert_eq!(z.item(0.999_999), 3);
        let uniform = Zipf::new(10, 0.0);
        assert_eq!(uniform.item(0.05), 0);
        assert_eq!(uniform.item(0.95), 9);
        let mut rng = fastrand::Rng::with_seed(7);
        let hot = (0..10_000).filter(|_| z.sample(&mut rng) == 0).count();
        assert!((4_400..5_200).contains(&hot), "{hot}");
    }

    #[test]
    fn account_rows_add_up() {
        let events = account_events(5).unwrap();
        assert!(matches!(events[0], AccountEvent::AccountOpened { .. }));
        let AccountEvent::MoneyDeposited { balance, .. } = events[4] else { panic!("{:?}", events[4]) };
        assert_eq!(balance.minor(), 1_400);
        assert_eq!(account_rows(3).unwrap().len(), 3);
    }
}
