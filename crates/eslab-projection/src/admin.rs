//! What an operator sees of a projection: checkpoint, lag, lease owner and
//! parked events (`eslab projections list`).

use eslab_core::{Checkpoint, EventReader, FeedFilter};

use crate::Result;
use crate::backend::Backend;
use crate::lag::{Lag, lag};

/// One projection's state, as stored by its backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The projection's name.
    pub name: String,
    /// Its position: the lowest checkpoint over its partitions ([`Checkpoint::START`] if it never ran).
    pub checkpoint: Checkpoint,
    /// How far behind the feed it is.
    pub lag: Lag,
    /// Who holds its lease now (`None` if free or expired).
    pub lease_owner: Option<String>,
    /// How many of its events are parked.
    pub parked: usize,
}

/// Whether checkpoint `stored` belongs to projection `name` (its own, or one
/// of its partitions' `name#p/n`).
fn belongs(stored: &str, name: &str) -> bool {
    stored == name || stored.strip_prefix(name).is_some_and(|rest| rest.starts_with('#'))
}

/// The status of projection `name` (reading `filter`) kept in `backend`, lag measured against `store`.
pub async fn status<S: EventReader, B: Backend>(
    store: &S,
    backend: &B,
    name: &str,
    filter: &FeedFilter,
) -> Result<Status> {
    let checkpoint = backend
        .checkpoints()
        .await?
        .into_iter()
        .filter(|(stored, _)| belongs(stored, name))
        .map(|(_, at)| at)
        .min()
        .unwrap_or(Checkpoint::START);
    let lag = lag(store, filter, checkpoint).await?;
    let lease_owner = backend.lease(name).await?.filter(|l| l.is_live()).map(|l| l.owner);
    let parked = backend.parked(name, None).await?.len();
    Ok(Status { name: name.to_owned(), checkpoint, lag, lease_owner, parked })
}

#[cfg(test)]
mod tests {
    #[test]
    fn partition_checkpoints_belong_to_their_projection() {
        assert!(super::belongs("views", "views"));
        assert!(super::belongs("views#0/4", "views"));
        assert!(!super::belongs("views-2", "views"));
        assert!(!super::belongs("view", "views"));
    }
}
