//! `eslab rebuild <projection>`: replay the whole feed into shadow tables,
//! then swap them in atomically, while the live read model keeps serving.
//!
//! A thin CLI over [`eslab_projection::rebuild`] (which says how the shadow is
//! kept and swapped on PostgreSQL and SQLite, and how the checkpoints follow):
//! it picks the projection and the backend of the store, and draws a progress
//! bar.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use eslab_bank::{BankViews, upcasters};
use eslab_core::EventStore;
use eslab_projection::{PgBackend, Progress, Rebuild, RebuildOptions, RunnerOptions, SqliteBackend};
use indicatif::{ProgressBar, ProgressStyle};

use crate::projections::{BANK_VIEWS, TRANSFER_PROCESS};
use crate::store::AnyStore;

pub use eslab_projection::Rebuilt;

/// A replayed shadow copy, ready to be swapped in.
#[derive(Debug)]
pub struct Shadow(ShadowOf);

type Feed = EventStore<AnyStore>;

#[derive(Debug)]
enum ShadowOf {
    Postgres(eslab_projection::Shadow<Feed, PgBackend, BankViews>),
    Sqlite(eslab_projection::Shadow<Feed, SqliteBackend, BankViews>),
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
    let report = |p| draw(progress, p);
    let shadow = match store {
        AnyStore::Memory(_) => bail!("the memory store keeps no read models between runs: nothing to rebuild"),
        AnyStore::Postgres(pg) => {
            let live = Arc::new(PgBackend::new(pg.pool().clone()));
            let rebuild = Rebuild::new(feed, live, Arc::new(BankViews)).with_options(options);
            ShadowOf::Postgres(rebuild.prepare(report).await?)
        }
        AnyStore::Sqlite(s) => {
            let live = Arc::new(SqliteBackend::new(s.writer_pool().clone()));
            let rebuild = Rebuild::new(feed, live, Arc::new(BankViews)).with_options(options);
            ShadowOf::Sqlite(rebuild.prepare(report).await?)
        }
    };
    progress.finish();
    Ok(Shadow(shadow))
}

impl Shadow {
    /// What the shadow holds.
    pub fn rebuilt(&self) -> Rebuilt {
        match &self.0 {
            ShadowOf::Postgres(s) => s.rebuilt(),
            ShadowOf::Sqlite(s) => s.rebuilt(),
        }
    }

    /// Swaps the shadow tables, checkpoints and parked events in, atomically.
    pub async fn swap(self) -> anyhow::Result<Rebuilt> {
        Ok(match self.0 {
            ShadowOf::Postgres(s) => s.swap().await?,
            ShadowOf::Sqlite(s) => s.swap().await?,
        })
    }
}

/// Rebuilds `projection`: [`prepare`], then [`Shadow::swap`].
pub async fn rebuild(store: &AnyStore, projection: &str, progress: &ProgressBar) -> anyhow::Result<Rebuilt> {
    prepare(store, projection, progress).await?.swap().await
}
