//! [`StreamLocks`]: per-stream serialization inside one process.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;

use crate::stream::StreamId;

/// In-process locks serializing work per stream: a stream hashes to one of a
/// fixed set of async mutexes (stripes, served in arrival order), so commands
/// on one aggregate queue instead of conflicting, while different streams
/// rarely wait on each other. Clones share the locks. Other processes are not
/// covered: the append's expected version still decides.
///
/// [`Repository::with_stream_locks`](crate::Repository::with_stream_locks)
/// uses it; a service with its own command loop can too.
///
/// ```
/// use eslab_core::{StreamId, StreamLocks};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let locks = StreamLocks::new(256);
/// let stream: StreamId = "account-42".parse().unwrap();
/// let _held = locks.lock(&stream).await; // another task locking account-42 waits until it drops
/// # });
/// ```
#[derive(Clone)]
pub struct StreamLocks {
    stripes: Arc<[tokio::sync::Mutex<()>]>,
}

impl std::fmt::Debug for StreamLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLocks").field("stripes", &self.stripes.len()).finish()
    }
}

/// A held stream lock; released when dropped.
#[derive(Debug)]
pub struct StreamGuard<'a> {
    _held: Vec<tokio::sync::MutexGuard<'a, ()>>,
}

impl StreamLocks {
    /// `stripes` locks (at least one).
    pub fn new(stripes: usize) -> Self {
        StreamLocks { stripes: (0..stripes.max(1)).map(|_| tokio::sync::Mutex::new(())).collect() }
    }

    /// How many stripes there are.
    pub fn stripes(&self) -> usize {
        self.stripes.len()
    }

    /// Waits for `stream`'s stripe (in arrival order) and holds it until the
    /// guard drops.
    pub async fn lock(&self, stream: &StreamId) -> StreamGuard<'_> {
        self.lock_keys([stream.as_str()]).await
    }

    /// Waits for the stripes of every one of `keys` (e.g. a boundary's
    /// [lock keys](crate::Query::lock_keys)), taken in stripe order so that
    /// two holders of several stripes never wait for each other in a cycle
    /// (and a holder of one stripe never waits while holding it).
    pub async fn lock_keys<K: AsRef<str>>(&self, keys: impl IntoIterator<Item = K>) -> StreamGuard<'_> {
        let mut indexes: Vec<usize> = keys.into_iter().map(|k| self.stripe(k.as_ref())).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let mut held = Vec::with_capacity(indexes.len());
        for index in indexes {
            if let Some(mutex) = self.stripes.get(index) {
                held.push(mutex.lock().await);
            }
        }
        StreamGuard { _held: held }
    }

    fn stripe(&self, key: &str) -> usize {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        u64::try_from(self.stripes.len())
            .ok()
            .and_then(|len| hash.checked_rem(len))
            .and_then(|i| usize::try_from(i).ok())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_stream_waits_for_its_holder_and_others_do_not() {
        let locks = StreamLocks::new(64);
        let a: StreamId = "account-a".parse().unwrap_or_else(|_| unreachable!());
        let held = locks.lock(&a).await;
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock(&a)).await;
        assert!(again.is_err(), "the same stream waits while its lock is held");
        drop(held);
        let _again = locks.lock(&a).await;
        assert_eq!(StreamLocks::new(0).stripes(), 1);
    }

    #[tokio::test]
    async fn several_keys_wait_for_any_holder_and_lock_in_one_order() {
        let locks = StreamLocks::new(64);
        {
            let _both = locks.lock_keys(["x", "y"]).await;
            let y = tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock_keys(["y"])).await;
            assert!(y.is_err(), "a key held among several waits");
        }
        // Opposite orders cannot deadlock: the stripes are taken sorted.
        let locks = std::sync::Arc::new(locks);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let locks = locks.clone();
                tokio::spawn(async move {
                    for _ in 0..100 {
                        let keys = if i % 2 == 0 { ["a", "b"] } else { ["b", "a"] };
                        let _held = locks.lock_keys(keys).await;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for task in tasks {
            tokio::time::timeout(std::time::Duration::from_secs(10), task)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_else(|| unreachable!("deadlock"));
        }
    }
}
