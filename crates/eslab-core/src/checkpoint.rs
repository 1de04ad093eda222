//! Durable, named feed checkpoints with a lease so that one runner at a time
//! owns a projection (or the relay).

use std::future::Future;
use std::time::Duration;

use crate::error::Result;
use crate::version::Checkpoint;

/// Stores named checkpoints and the lease of their single active owner.
pub trait CheckpointStore: Send + Sync {
    /// The stored checkpoint of `name` ([`Checkpoint::START`] if none was saved).
    fn load_checkpoint(&self, name: &str) -> impl Future<Output = Result<Checkpoint>> + Send;

    /// Saves the checkpoint of `name`. The caller should hold the lease.
    fn save_checkpoint(&self, name: &str, checkpoint: Checkpoint) -> impl Future<Output = Result<()>> + Send;

    /// Takes or renews the lease of `name` for `owner` for `ttl`. Returns
    /// `false` (and changes nothing) while another owner's lease is unexpired.
    fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> impl Future<Output = Result<bool>> + Send;

    /// Gives up `owner`'s lease of `name` (no effect if it does not hold it).
    fn release_lease(&self, name: &str, owner: &str) -> impl Future<Output = Result<()>> + Send;
}
