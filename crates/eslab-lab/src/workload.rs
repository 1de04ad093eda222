//! Workloads shared by experiments: the bank's events as stored rows, and
//! stream choice under a Zipf distribution.

use eslab_bank::{AccountEvent, Amount, Balance, OverdraftLimit, Owner};
use eslab_core::{Codec, JsonCodec, Metadata, NewEvent};

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
