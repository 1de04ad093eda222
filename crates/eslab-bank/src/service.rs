//! The bank's application services: its commands through the library's one
//! command path ([`Repository::run`]), and its queries behind one trait
//! ([`BankQueries`]) for the memory and SQL read models. The HTTP service,
//! the demo and the lab use these; none has a command loop of its own.

use std::fmt;
use std::time::Duration;

use eslab_core::{
    Aggregate, Boundaries, CommandError, CommandOptions, Error, EventReader, EventStorage, EventStore, Loaded, Outcome,
    Repository, RetryPolicy, Settled, StreamLocks, Version,
};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::account::{Account, AccountCommand, AccountError};
use crate::atomic::{AtomicTransfer, AtomicTransferDone, AtomicTransferError};
use crate::transfer::{Transfer, TransferCommand, TransferError};
use crate::views::{AccountSummary, TransferView};

/// How a [`Bank`] runs its commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BankOptions {
    /// Retries after a conflict with another process (the default policy:
    /// 16 attempts with backoff and jitter).
    pub retry: RetryPolicy,
    /// Account and transfer states cached in memory, so a command skips the
    /// load (0: no cache). The default: 100 000 per aggregate type.
    pub cache_entries: u64,
    /// Stripes of the in-process per-stream locks, which queue this process's
    /// commands on one aggregate instead of letting them conflict (0: none).
    /// The default: 1 024.
    pub lock_stripes: usize,
    /// How long idempotency keys answer retries (default 24 h).
    pub idempotency_retention: Duration,
}

impl Default for BankOptions {
    fn default() -> Self {
        BankOptions {
            retry: RetryPolicy::default(),
            cache_entries: 100_000,
            lock_stripes: 1_024,
            idempotency_retention: eslab_core::idempotency::DEFAULT_RETENTION,
        }
    }
}

/// The bank's command side: accounts and transfers, over one store (with the
/// bank's upcasters). Cheap to clone; clones share caches and locks.
pub struct Bank<S> {
    accounts: Repository<Account, S>,
    transfers: Repository<Transfer, S>,
    boundaries: Boundaries<S>,
}

impl<S: Clone> Clone for Bank<S> {
    fn clone(&self) -> Self {
        Bank { accounts: self.accounts.clone(), transfers: self.transfers.clone(), boundaries: self.boundaries.clone() }
    }
}

impl<S: fmt::Debug> fmt::Debug for Bank<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bank").field("accounts", &self.accounts).field("transfers", &self.transfers).finish()
    }
}

impl<S: EventStorage + Clone + 'static> Bank<S> {
    /// The bank over `events` (give it the bank's [upcasters](crate::upcasters):
    /// `EventStore::new(backend).with_upcasters(eslab_bank::upcasters())`).
    pub fn new(events: EventStore<S>, options: &BankOptions) -> Self {
        let locks = (options.lock_stripes > 0).then(|| StreamLocks::new(options.lock_stripes));
        let mut boundaries = Boundaries::new(events.clone())
            .with_retry(options.retry)
            .with_idempotency_retention(options.idempotency_retention);
        if let Some(locks) = &locks {
            boundaries = boundaries.with_locks(locks.clone());
        }
        Bank {
            accounts: repository(&events, options, locks.clone()),
            transfers: repository(&events, options, locks),
            boundaries,
        }
    }

    /// The event store (with the bank's upcasters).
    pub fn store(&self) -> &EventStore<S> {
        self.accounts.store()
    }

    /// The accounts' repository.
    pub fn accounts(&self) -> &Repository<Account, S> {
        &self.accounts
    }

    /// The transfers' repository.
    pub fn transfers(&self) -> &Repository<Transfer, S> {
        &self.transfers
    }

    /// Runs `command` on account `id`. Every command but `Open` needs the
    /// account to exist ([`CommandError::NotFound`]); `respond(new state, new
    /// version)` builds the answer stored with an idempotency key.
    ///
    /// # Errors
    /// As [`Repository::run`].
    pub async fn account<R>(
        &self,
        id: &str,
        command: &AccountCommand,
        options: CommandOptions,
        respond: impl Fn(&Account, Version) -> R + Send + Sync,
    ) -> Result<Outcome<Account, R>, CommandError<AccountError>>
    where
        R: Serialize + DeserializeOwned + Send,
    {
        let options = match command {
            AccountCommand::Open { .. } => options,
            _ => options.existing(),
        };
        self.accounts.run(id, command, &options, respond).await
    }

    /// Runs `command` on transfer `id`: a request, which the
    /// [`TransferProcess`](crate::TransferProcess) carries out. A request's
    /// accounts must both exist: an unknown one is [`CommandError::NotFound`]
    /// naming its stream.
    ///
    /// # Errors
    /// As [`Repository::run`].
    pub async fn request_transfer<R>(
        &self,
        id: &str,
        command: &TransferCommand,
        options: CommandOptions,
        respond: impl Fn(&Transfer, Version) -> R + Send + Sync,
    ) -> Result<Outcome<Transfer, R>, CommandError<TransferError>>
    where
        R: Serialize + DeserializeOwned + Send,
    {
        if let TransferCommand::Request { from, to, .. } = command {
            for account in [from, to] {
                let stream = Account::stream_id(account).map_err(Error::from)?;
                if self.store().stream_version(&stream).await?.is_none() {
                    return Err(CommandError::NotFound { stream });
                }
            }
        }
        self.transfers.run(id, command, &options, respond).await
    }

    /// Transfers money at once, as one decision over both accounts' events
    /// (see [`AtomicTransfer`]): the withdrawal, the deposit and the
    /// transfer's record in one atomic append, retried on conflicts;
    /// `respond(what it did)` builds the answer stored with an idempotency key.
    ///
    /// # Errors
    /// [`CommandError::Rejected`] with the refusal (nothing written),
    /// [`CommandError::KeyReused`], [`CommandError::Store`].
    pub async fn transfer_atomically<R>(
        &self,
        transfer: &AtomicTransfer,
        options: &CommandOptions,
        respond: impl Fn(&AtomicTransferDone) -> R + Send + Sync,
    ) -> Result<Settled<R>, CommandError<AtomicTransferError>>
    where
        R: Serialize + DeserializeOwned + Send,
    {
        self.boundaries.run(transfer, options, respond).await
    }

    /// Forgets the owner of account `id` (its data subject, `account-<id>`):
    /// records `OwnerForgotten` in the account's stream, then deletes the
    /// subject's key, recording when and `by` whom. From then on every read
    /// shows the owner as forgotten; balances and histories are unchanged.
    /// The event is what tells every process: a state cached anywhere is
    /// behind it, so a command conflicts and reloads, and a strong read folds
    /// it in. Read models apply it too (and are erased at once by their
    /// projections' hook, [`eslab_projection::forget_subject`]). Forgetting
    /// twice answers the first forgetting.
    ///
    /// # Errors
    /// [`Error::Personal`] ([`eslab_core::PersonalError::UnknownSubject`]) for
    /// an account that was never opened; the store's.
    pub async fn forget_owner(&self, id: &str, by: &str) -> Result<eslab_core::Forgetting, Error> {
        let stream = <Account as eslab_core::Aggregate>::stream_id(id)?;
        let subject = eslab_core::Subject::of_stream(&stream);
        // Only a subject whose key still exists has anything to record: a
        // forgotten one answers its first forgetting below, and an account
        // never opened (or opened before names were personal data, its name
        // in clear and no key to delete) is UnknownSubject, with nothing written.
        let keyed = match self.accounts.store().keys() {
            Some(keys) => keys.find_keys(std::slice::from_ref(&subject)).await?.contains_key(&subject),
            None => false,
        };
        if keyed {
            let metadata = eslab_core::Metadata::now().with_actor(by);
            match self.accounts.execute(id, &AccountCommand::ForgetOwner, metadata).await {
                Ok(_) => {}
                Err(CommandError::Store(e)) => return Err(e),
                Err(other) => return Err(Error::backend(other.to_string())),
            }
        }
        let done = self.accounts.store().forget(&subject, by).await?;
        self.accounts.evict(id);
        Ok(done)
    }

    /// Account `id` as stored now (strong consistency; from the cache plus
    /// the events after it when cached).
    ///
    /// # Errors
    /// The store's.
    pub async fn account_now(&self, id: &str) -> Result<Loaded<Account>, Error> {
        self.accounts.load_latest(id).await
    }

    /// Transfer `id` as stored now.
    ///
    /// # Errors
    /// The store's.
    pub async fn transfer_now(&self, id: &str) -> Result<Loaded<Transfer>, Error> {
        self.transfers.load_latest(id).await
    }
}

fn repository<A: Aggregate, S: EventStorage + Clone>(
    events: &EventStore<S>,
    options: &BankOptions,
    locks: Option<StreamLocks>,
) -> Repository<A, S> {
    let mut repository = Repository::new(events.clone())
        .with_retry(options.retry)
        .with_idempotency_retention(options.idempotency_retention);
    if let Some(locks) = locks {
        repository = repository.with_locks(locks);
    }
    if options.cache_entries > 0 {
        repository = repository.with_cache(options.cache_entries);
    }
    repository
}

/// The bank's read-model queries, whichever backend keeps them (the
/// in-memory projection backend, or SQLite or PostgreSQL through
/// [`SqlViews`](crate::SqlViews)). Object-safe: hold an `Arc<dyn BankQueries>`.
pub trait BankQueries: Send + Sync + fmt::Debug {
    /// One account's summary.
    fn account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<AccountSummary>, Error>>;
    /// Up to `limit` accounts whose id sorts after `after`, by id.
    fn accounts<'a>(&'a self, after: Option<&'a str>, limit: u32) -> BoxFuture<'a, Result<Vec<AccountSummary>, Error>>;
    /// One transfer's status row.
    fn transfer<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<TransferView>, Error>>;
}

impl BankQueries for eslab_projection::memory::MemoryBackend {
    fn account<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<AccountSummary>, Error>> {
        use crate::views::MemoryViews;
        Box::pin(async move { Ok(self.account_summaries().into_iter().find(|a| a.id == id)) })
    }

    fn accounts<'a>(&'a self, after: Option<&'a str>, limit: u32) -> BoxFuture<'a, Result<Vec<AccountSummary>, Error>> {
        use crate::views::MemoryViews;
        Box::pin(async move {
            let mut rows: Vec<_> = self
                .account_summaries()
                .into_iter()
                .filter(|a| after.is_none_or(|after| a.id.as_str() > after))
                .collect();
            rows.sort_by(|a, b| a.id.cmp(&b.id));
            rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            Ok(rows)
        })
    }

    fn transfer<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<TransferView>, Error>> {
        use crate::views::MemoryViews;
        Box::pin(async move { Ok(self.transfers().into_iter().find(|t| t.id == id)) })
    }
}

/// A read-model query's failure as the core's error: the database out of
/// reach is [`Error::Unavailable`] (HTTP 503), anything else a backend error.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn query_error(e: sqlx::Error) -> Error {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => Error::Unavailable(Box::new(e)),
        e => Error::backend(e),
    }
}
