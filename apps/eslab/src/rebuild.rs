//! `eslab rebuild <projection>`: replay the whole feed into shadow tables,
//! then swap them in atomically, while the live read model keeps serving.
//!
//! A thin CLI over [`eslab_projection::rebuild`] (which says how the shadow is
//! kept and swapped on PostgreSQL and SQLite, and how the checkpoints follow):
//! it picks the projection and the backend of the store, and draws a progress
//! bar.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use eslab_bank::{BankViews, upcasters};
use eslab_core::EventStore;
use eslab_projection::{Progress, ReadModel, Rebuild, RebuildOptions, RunnerOptions, ShadowBackend};
use eslab_runtime::{AnyStore, Store, StoreVisitor};
use futures_util::future::BoxFuture;
use indicatif::{ProgressBar, ProgressStyle};

use crate::projections::{BANK_VIEWS, TRANSFER_PROCESS};

pub use eslab_projection::Rebuilt;

/// A replayed shadow copy, ready to be swapped in.
pub struct Shadow(Box<dyn Swap>);

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Shadow").field(&self.0.rebuilt()).finish()
    }
}

type Feed = EventStore<AnyStore>;

/// A shadow of whichever backend, its type erased.
trait Swap: Send {
    fn rebuilt(&self) -> Rebuilt;
    fn swap(self: Box<Self>) -> BoxFuture<'static, anyhow::Result<Rebuilt>>;
}

impl<B: ShadowBackend> Swap for eslab_projection::Shadow<Feed, B, BankViews>
where
    BankViews: ReadModel<B>,
{
    fn rebuilt(&self) -> Rebuilt {
        eslab_projection::Shadow::rebuilt(self)
    }

    fn swap(self: Box<Self>) -> BoxFuture<'static, anyhow::Result<Rebuilt>> {
        Box::pin(async move { Ok(eslab_projection::Shadow::swap(*self).await?) })
    }
}

/// [`prepare`] on the concrete store.
struct Replay<'a> {
    feed: Feed,
    options: RebuildOptions,
    progress: &'a ProgressBar,
}

impl<S: Store> StoreVisitor<S> for Replay<'_>
where
    S::Backend: ShadowBackend,
    BankViews: ReadModel<S::Backend>,
{
    type Output = anyhow::Result<Shadow>;

    async fn visit(self, store: S) -> Self::Output {
        let live = Arc::new(store.backends().await?.views);
        let rebuild = Rebuild::new(self.feed, live, Arc::new(BankViews)).with_options(self.options);
        let shadow = rebuild.prepare(|p| draw(self.progress, p)).await?;
        Ok(Shadow(Box::new(shadow)))
    }
}

/// A progress bar on stderr: events replayed, events/s and ETA.
pub fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{spinner} rebuilding [{bar:40}] {pos}/{len} events, {per_sec}, ETA {eta} ({elapsed})",
    )
    .map_or_else(|_| ProgressStyle::default_bar(), |s| s.progress_chars("=> "));
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Moves `bar` to `progress`: the feed's head is the length (stretched if the
/// feed grew meanwhile), the events replayed the position.
fn draw(bar: &ProgressBar, progress: Progress) {
    let length = progress.head.position.get().max(progress.events);
    if bar.length() != Some(length) {
        bar.set_length(length);
    }
    bar.set_position(progress.events);
}

fn check_projection(projection: &str) -> anyhow::Result<()> {
    if projection == TRANSFER_PROCESS {
        bail!("{TRANSFER_PROCESS} is a process manager: its effects are events, there is no read model to rebuild");
    }
    if projection != BANK_VIEWS {
        bail!("unknown projection {projection:?}; the one with read models is {BANK_VIEWS}");
    }
    Ok(())
}

/// Replays `projection` into fresh shadow tables (the live ones keep serving).
pub async fn prepare(store: &AnyStore, projection: &str, progress: &ProgressBar) -> anyhow::Result<Shadow> {
    check_projection(projection)?;
    let feed = EventStore::new(store.clone()).with_upcasters(upcasters());
    let owner = format!("eslab-rebuild@{}", RunnerOptions::process_owner());
    let options = RebuildOptions { owner, ..RebuildOptions::default() };
    let replay = Replay { feed, options, progress };
    let shadow = store.visit_durable(replay).await.context("nothing to rebuild")??;
    progress.finish();
    Ok(shadow)
}

impl Shadow {
    /// What the shadow holds.
    pub fn rebuilt(&self) -> Rebuilt {
        self.0.rebuilt()
    }

    /// Swaps the shadow tables, checkpoints and parked events in, atomically.
    pub async fn swap(self) -> anyhow::Result<Rebuilt> {
        self.0.swap().await
    }
}

/// Rebuilds `projection`: [`prepare`], then [`Shadow::swap`].
pub async fn rebuild(store: &AnyStore, projection: &str, progress: &ProgressBar) -> anyhow::Result<Rebuilt> {
    prepare(store, projection, progress).await?.swap().await
}
