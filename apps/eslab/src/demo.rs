//! `eslab demo`: the account example, written for a newcomer to read along.
//!
//! Every step goes through the same `Repository` an application would use:
//! load the account from its events, let the aggregate decide, append the
//! decided events with optimistic concurrency.

use std::io::Write;

use anyhow::{Context, bail};
use eslab_bank::{Account, AccountCommand, AccountError, Amount, Currency, OverdraftLimit, upcasters};
use eslab_core::{Aggregate, CommandError, EventReaderExt, EventStorage, EventStore, Metadata, Repository, Version};
use futures_util::TryStreamExt;
use uuid::Uuid;

/// Runs the demo on `backend`, writing the story to `out`.
pub(crate) async fn run<S: EventStorage + Clone + 'static>(
    backend: S,
    where_: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let store = EventStore::new(backend).with_upcasters(upcasters());
    let repo: Repository<Account, _> = Repository::new(store.clone());
    let id = Uuid::now_v7().to_string();
    let eur: Currency = "EUR".parse()?;
    // Every event of this session shares one correlation id; each command's
    // events name the command as their cause.
    let correlation = Uuid::now_v7();
    let meta = || Metadata::now().with_correlation_id(correlation).with_causation_id(Uuid::now_v7()).with_actor("demo");

    writeln!(out, "eslab demo: a bank account, event-sourced\n")?;
    writeln!(out, "Store: {where_}. Account id: {id} (stream {}-{id})\n", Account::KIND)?;

    let steps = [
        (
            "Open the account for Ada, in EUR, with a 50.00 overdraft limit",
            AccountCommand::Open {
                owner: "Ada Lovelace".into(),
                currency: eur,
                overdraft_limit: OverdraftLimit::new(5_000)?,
            },
        ),
        ("Deposit 100.00", AccountCommand::Deposit { amount: Amount::new(10_000)?, currency: eur }),
        ("Withdraw 30.00", AccountCommand::Withdraw { amount: Amount::new(3_000)?, currency: eur }),
    ];
    let mut step = 0;
    for (what, command) in &steps {
        step += 1;
        let done = repo.execute(&id, command, meta()).await.with_context(|| format!("step {step}: {what}"))?;
        let types: Vec<_> = done.recorded.iter().map(|e| e.event_type.as_str()).collect();
        writeln!(out, "{step}. {what}")?;
        writeln!(
            out,
            "   -> {} at version {}; balance {}\n",
            types.join(", "),
            done.version,
            money(done.state.balance.minor(), eur)
        )?;
    }

    step += 1;
    let greedy = AccountCommand::Withdraw { amount: Amount::new(15_000)?, currency: eur };
    writeln!(out, "{step}. Withdraw 150.00 (balance 70.00 + overdraft 50.00 allow only 120.00)")?;
    match repo.execute(&id, &greedy, meta()).await {
        Err(CommandError::Rejected(e @ AccountError::InsufficientFunds { .. })) => {
            writeln!(out, "   -> refused ({}): {e}", e.rule())?;
            writeln!(
                out,
                "      nothing was written; the stream is still at version {}\n",
                repo.load(&id).await?.version
            )?;
        }
        Ok(_) => bail!("the overdraft withdrawal should have been refused"),
        Err(e) => return Err(e).context("the overdraft withdrawal failed for the wrong reason"),
    }

    writeln!(out, "The event stream (the only thing stored):")?;
    let stream = Account::stream_id(&id)?;
    let events: Vec<_> = store.stream_events(&stream, Version::FIRST).try_collect().await?;
    for e in &events {
        writeln!(
            out,
            "  v{} {} (schema v{}) position {}",
            e.stream_version, e.event_type, e.schema_version, e.position
        )?;
        writeln!(out, "     payload  {}", e.payload)?;
        writeln!(
            out,
            "     metadata event {} correlation {} causation {} actor {} at {}",
            e.event_id,
            opt(e.metadata.correlation_id),
            opt(e.metadata.causation_id),
            e.metadata.actor.as_deref().unwrap_or("-"),
            e.metadata.occurred_at
        )?;
    }

    writeln!(out, "\nRebuild by replay: fold the stream's events from an empty account")?;
    let decoded = events.iter().map(|e| store.decode(e)).collect::<Result<Vec<_>, _>>()?;
    let replayed = Account::fold(&decoded);
    let live = repo.load(&id).await?.state;
    writeln!(out, "  replayed: {:?}, balance {}", replayed.status, money(replayed.balance.minor(), eur))?;
    writeln!(out, "  live:     {:?}, balance {}", live.status, money(live.balance.minor(), eur))?;
    if replayed != live {
        bail!("the replayed state differs from the live state");
    }
    writeln!(out, "  equal: the state is nothing but the fold of its events.")?;
    Ok(())
}

fn opt(id: Option<Uuid>) -> String {
    id.map_or_else(|| "-".to_owned(), |id| id.to_string())
}

/// Formats minor units as `123.45 EUR` (two decimal places; integer arithmetic only).
fn money(minor: i64, currency: Currency) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn demo_tells_the_whole_story() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("data").join("eslab.db").display());
        let store = eslab_runtime::AnyStore::open(&url).await.unwrap();
        let mut out = Vec::new();
        run(store.clone(), store.describe(), &mut out).await.unwrap();
        // A second run on the same file works too (a new account).
        run(store, "again", &mut Vec::new()).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        for needle in ["AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "refused (insufficient-funds)", "equal:"] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(text.contains("balance 70.00 EUR"));
    }

    #[test]
    fn formats_money_without_floats() {
        let eur = "EUR".parse().unwrap();
        assert_eq!(money(-5, eur), "-0.05 EUR");
        assert_eq!(money(i64::MIN, eur), "-92233720368547758.08 EUR");
    }
}
