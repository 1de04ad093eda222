//! The lab (crate `eslab-lab`, run as `eslab lab`): `eslab lab run` measures event-sourcing patterns side by side on
//! this machine and writes a report (a table, a chart and the raw numbers per
//! experiment, and an index recording the machine).
//!
//! An experiment is one file implementing [`Experiment`], listed once in
//! [`experiments`]. It gets a [`Lab`] (the scale, a progress bar, fresh
//! PostgreSQL schemas that are dropped after it) and returns a [`Report`].

mod append;
pub mod chart;
mod codecs;
mod concurrency;
mod cpu;
mod crossstream;
mod group_commit;
#[cfg(feature = "kafka")]
mod kafka_relay;
mod machine;
pub mod measure;
mod ordering;
#[cfg(feature = "peers")]
mod peers;
mod projections;
pub mod report;
mod shredding;
mod snapshots;
mod stores;
mod wakeups;
mod workload;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, bail};
use futures_util::future::LocalBoxFuture;
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

pub use chart::Chart;
pub use machine::Machine;
pub use report::{Cell, Report, Table};
pub use wakeups::FollowArgs;

/// The PostgreSQL the lab uses when `--database-url` is not a `postgres://` URL.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long the experiments run: `Tiny` for tests (seconds), `Quick` for a
/// first look (all experiments within minutes), `Full` for tighter numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    /// The smallest configuration: checks that everything runs (tests).
    Tiny,
    /// A few seconds per experiment (`--quick`).
    Quick,
    /// Longer runs and larger sizes.
    Full,
}

impl Scale {
    /// The value for this scale.
    pub fn pick<T>(self, tiny: T, quick: T, full: T) -> T {
        match self {
            Scale::Tiny => tiny,
            Scale::Quick => quick,
            Scale::Full => full,
        }
    }

    /// The name shown in reports.
    pub fn name(self) -> &'static str {
        self.pick("tiny", "quick", "full")
    }
}

/// One comparison of patterns. Implement it in one file and add it to [`experiments`].
pub trait Experiment: Send + Sync {
    /// The experiment's number in the lab's plan (issue #8).
    fn number(&self) -> u8;
    /// Short id: the CLI name and the report's file name (`<id>.md`).
    fn id(&self) -> &'static str;
    /// One-line title.
    fn title(&self) -> &'static str;
    /// What it compares, in one sentence.
    fn question(&self) -> &'static str;
    /// Whether it cannot run without PostgreSQL.
    fn needs_postgres(&self) -> bool {
        true
    }
    /// A server it uses when one answers, and is skipped (with a note) without.
    fn uses_if_reachable(&self) -> Option<&'static str> {
        None
    }
    /// Runs the experiment and reports its numbers.
    ///
    /// Not `Send`: experiments run one after another on the caller's task
    /// (their own workers are spawned tasks), and rustc cannot yet prove
    /// `Send` for boxed futures holding sqlx's borrowed executors.
    fn run<'a>(&'a self, lab: &'a Lab) -> LocalBoxFuture<'a, anyhow::Result<Report>>;
}

/// Where the Kafka experiment looks for a broker by default.
#[cfg(feature = "kafka")]
pub const DEFAULT_KAFKA_BROKERS: &str = eslab_kafka::DEFAULT_BROKERS;
/// Where the Kafka experiment would look for a broker (built without the `kafka` feature: it is not built).
#[cfg(not(feature = "kafka"))]
pub const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:9092";

/// Every experiment, in order. Adding one is one line here. Experiment 8
/// (the Kafka relay) exists only with the `kafka` feature (on by default).
pub fn experiments() -> Vec<Box<dyn Experiment>> {
    vec![
        Box::new(append::AppendStrategies),
        Box::new(concurrency::ConcurrencyControl),
        Box::new(ordering::FeedOrdering),
        Box::new(group_commit::GroupCommitExperiment),
        Box::new(snapshots::SnapshotsAndCache),
        Box::new(projections::ProjectionBatches),
        Box::new(codecs::Codecs),
        #[cfg(feature = "kafka")]
        Box::new(kafka_relay::KafkaRelay),
        Box::new(stores::Stores),
        Box::new(wakeups::WakeUpsExperiment),
        #[cfg(feature = "peers")]
        Box::new(peers::Peers),
        Box::new(crossstream::CrossStream),
        Box::new(shredding::Shredding),
    ]
}

/// The experiments named by `names` (ids, numbers, or `all`), in lab order.
pub fn select(names: &[String]) -> anyhow::Result<Vec<Box<dyn Experiment>>> {
    let all = experiments();
    if names.is_empty() || names.iter().any(|n| n == "all") {
        return Ok(all);
    }
    for name in names {
        if !all.iter().any(|e| e.id() == name || e.number().to_string() == *name) {
            let known: Vec<_> = all.iter().map(|e| format!("{} ({})", e.id(), e.number())).collect();
            bail!("unknown experiment {name:?}; known: {}, or all", known.join(", "));
        }
    }
    Ok(all.into_iter().filter(|e| names.iter().any(|n| e.id() == n || e.number().to_string() == *n)).collect())
}

/// What an experiment gets: the scale, PostgreSQL, a progress bar.
#[derive(Debug)]
pub struct Lab {
    scale: Scale,
    postgres_url: String,
    postgres: Result<String, String>,
    kafka_brokers: String,
    nats_url: String,
    experiment: String,
    progress: ProgressBar,
    schemas: Mutex<Vec<String>>,
}

impl Lab {
    /// The scale to run at.
    pub fn scale(&self) -> Scale {
        self.scale
    }

    /// The PostgreSQL URL.
    pub fn postgres_url(&self) -> &str {
        &self.postgres_url
    }

    /// The server version, or why PostgreSQL cannot be used.
    pub fn postgres(&self) -> anyhow::Result<&str> {
        self.postgres.as_deref().map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The Kafka bootstrap servers (`--kafka-brokers`, `KAFKA_BROKERS`).
    pub fn kafka_brokers(&self) -> &str {
        &self.kafka_brokers
    }

    /// The NATS JetStream cluster (`--nats-url`, `ESLAB_NATS_URL`).
    pub fn nats_url(&self) -> &str {
        &self.nats_url
    }

    /// A fresh name for this run's own Kafka topics (`lab<uuid>.`): each run
    /// publishes only under its own prefix.
    pub fn topic_prefix(&self) -> String {
        format!("lab{}.", uuid::Uuid::now_v7().simple())
    }

    /// Sets how many steps the progress bar counts.
    pub fn steps(&self, n: u64) {
        self.progress.set_length(n);
    }

    /// One step done; `what` names the next.
    pub fn step(&self, what: impl Into<String>) {
        self.progress.inc(1);
        self.progress.set_message(what.into());
    }

    /// Names what is being measured, without counting a step.
    pub fn doing(&self, what: impl Into<String>) {
        self.progress.set_message(what.into());
    }

    fn new_schema(&self) -> anyhow::Result<String> {
        self.postgres()?;
        let schema = format!("lab_{}_{}", self.experiment.replace('-', "_"), uuid::Uuid::now_v7().simple());
        self.schemas.lock().map_err(|_| anyhow::anyhow!("schema list poisoned"))?.push(schema.clone());
        Ok(schema)
    }

    /// A pool of `connections` on a fresh schema (its `search_path`), dropped
    /// when the experiment ends.
    pub async fn pg_pool(&self, connections: u32) -> anyhow::Result<PgPool> {
        let schema = self.new_schema()?;
        let options: PgConnectOptions = self.postgres_url.parse().context("parsing the PostgreSQL URL")?;
        let options = options.options([("search_path", schema.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(std::time::Duration::from_secs(60))
            .connect_with(options)
            .await
            .with_context(|| format!("connecting to {}", eslab_postgres::redact_url(&self.postgres_url)))?;
        // sql-ident: `new_schema` builds the name from the experiment id and a UUID.
        sqlx::query(&format!("CREATE SCHEMA \"{schema}\"")).execute(&pool).await?;
        Ok(pool)
    }

    /// An eslab [`PostgresStore`](eslab_postgres::PostgresStore) on a fresh
    /// schema (migrated), dropped when the experiment ends, opened as every
    /// eslab program opens PostgreSQL ([`eslab_runtime::open_postgres`]).
    pub async fn pg_store(
        &self,
        tweak: impl FnOnce(eslab_postgres::PostgresOptions) -> eslab_postgres::PostgresOptions,
    ) -> anyhow::Result<eslab_postgres::PostgresStore> {
        let schema = self.new_schema()?;
        Ok(eslab_runtime::open_postgres(&self.postgres_url, &schema, tweak).await?)
    }

    async fn drop_schemas(&self) -> anyhow::Result<()> {
        let schemas = std::mem::take(&mut *self.schemas.lock().map_err(|_| anyhow::anyhow!("schema list poisoned"))?);
        if schemas.is_empty() {
            return Ok(());
        }
        let mut conn = PgConnection::connect(&self.postgres_url).await?;
        for schema in schemas {
            // sql-ident: `new_schema` builds the name from the experiment id and a UUID.
            sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).execute(&mut conn).await?;
        }
        conn.close().await?;
        Ok(())
    }
}

/// Where a run writes and how it behaves.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The scale.
    pub scale: Scale,
    /// The PostgreSQL URL.
    pub postgres_url: String,
    /// The report directory.
    pub out: PathBuf,
    /// Kafka bootstrap servers, for the experiments that publish (skipped when none answers).
    pub kafka_brokers: String,
    /// The NATS JetStream cluster the stores experiment also measures (skipped when none answers).
    pub nats_url: String,
    /// Show progress bars (off in tests).
    pub progress: bool,
}

/// What became of one experiment.
#[derive(Debug)]
pub struct Outcome {
    /// The experiment's id.
    pub id: &'static str,
    /// Its number.
    pub number: u8,
    /// Its title.
    pub title: &'static str,
    /// Its report, or why it failed.
    pub report: Result<Report, String>,
    /// How long it took.
    pub seconds: f64,
}

/// Checks that PostgreSQL answers; returns its version or a message saying how to start it.
pub async fn probe_postgres(url: &str) -> Result<String, String> {
    let unreachable = |e: &dyn std::fmt::Display| {
        format!(
            "PostgreSQL is not reachable at {} ({e}). Start the local cluster (`pg_ctlcluster 15 main start`, \
             or `bash scripts/ensure-postgres.sh`) or pass --database-url postgres://USER@HOST:PORT/DB",
            eslab_postgres::redact_url(url)
        )
    };
    let connect = tokio::time::timeout(std::time::Duration::from_secs(10), PgConnection::connect(url));
    let mut conn = match connect.await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(unreachable(&e)),
        Err(_) => return Err(unreachable(&"no answer within 10 s")),
    };
    let version: Result<String, _> = sqlx::query_scalar("SELECT version()").fetch_one(&mut conn).await;
    let _ = conn.close().await;
    version.map_err(|e| unreachable(&e))
}

/// Runs `selected`, printing each table to `terminal` and writing the
/// report files and `index.md` under `options.out`.
pub async fn run(
    selected: &[Box<dyn Experiment>],
    options: &RunOptions,
    terminal: &mut (dyn Write + Send),
) -> anyhow::Result<Vec<Outcome>> {
    std::fs::create_dir_all(&options.out).with_context(|| format!("creating {}", options.out.display()))?;
    let postgres = probe_postgres(&options.postgres_url).await;
    let mut outcomes = Vec::with_capacity(selected.len());
    for experiment in selected {
        let progress = if options.progress { ProgressBar::new(1) } else { ProgressBar::hidden() };
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} {elapsed_precise} {msg}")
        {
            progress.set_style(style.progress_chars("=> "));
        }
        progress.set_prefix(format!("{}. {}", experiment.number(), experiment.id()));
        let lab = Lab {
            scale: options.scale,
            postgres_url: options.postgres_url.clone(),
            postgres: postgres.clone(),
            kafka_brokers: options.kafka_brokers.clone(),
            nats_url: options.nats_url.clone(),
            experiment: experiment.id().to_owned(),
            progress,
            schemas: Mutex::new(Vec::new()),
        };
        let started = Instant::now();
        let result = match (&postgres, experiment.needs_postgres()) {
            (Err(why), true) => Err(anyhow::anyhow!("{why}")),
            _ => experiment.run(&lab).await,
        };
        let cleanup = lab.drop_schemas().await;
        lab.progress.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        let report = match (result, cleanup) {
            (Ok(report), Ok(())) => Ok(report),
            (Ok(_), Err(e)) => Err(format!("could not drop the experiment's schemas: {e:#}")),
            (Err(e), _) => Err(format!("{e:#}")),
        };
        match &report {
            Ok(report) => {
                writeln!(terminal, "\n{}. {} ({seconds:.1} s)\n", experiment.number(), experiment.title())?;
                writeln!(terminal, "{}", report.table.to_terminal())?;
                for finding in &report.findings {
                    writeln!(terminal, "- {finding}")?;
                }
                report.write(&options.out, experiment.as_ref(), options.scale)?;
            }
            Err(e) => writeln!(terminal, "\n{}. {}: FAILED: {e}", experiment.number(), experiment.title())?,
        }
        outcomes.push(Outcome {
            id: experiment.id(),
            number: experiment.number(),
            title: experiment.title(),
            report,
            seconds,
        });
    }
    let machine = Machine::detect(postgres.as_deref().ok()).await;
    write_index(&options.out, &outcomes, &machine, options.scale)?;
    writeln!(terminal, "\nreport: {}", options.out.join("index.md").display())?;
    Ok(outcomes)
}

fn write_index(out: &Path, outcomes: &[Outcome], machine: &Machine, scale: Scale) -> anyhow::Result<()> {
    let mut md = String::from("# eslab lab report\n\n");
    md.push_str(&format!(
        "Scale `{}`, written {}. Rerun: `eslab lab run {} {}` (see docs/lab.md).\n\n",
        scale.name(),
        machine.date,
        outcomes.iter().map(|o| o.id).collect::<Vec<_>>().join(" "),
        scale_flag(scale),
    ));
    md.push_str("## Machine\n\n");
    md.push_str(&machine.to_markdown());
    md.push_str("\n## Experiments\n\n| # | experiment | result | time |\n|---|---|---|---|\n");
    for o in outcomes {
        let result = match &o.report {
            Ok(r) => format!(
                "[table]({id}.md) · [chart]({id}.svg) · [csv]({id}.csv){}",
                r.findings.first().map(|f| format!(" · {f}")).unwrap_or_default(),
                id = o.id
            ),
            Err(e) => format!("failed: {}", e.replace('|', "\\|")),
        };
        md.push_str(&format!("| {} | {} | {result} | {:.1} s |\n", o.number, o.title, o.seconds));
    }
    std::fs::write(out.join("index.md"), md).with_context(|| format!("writing {}", out.join("index.md").display()))
}

/// `eslab lab …`
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// List the experiments.
    List,
    /// Run experiments and write the report (tables, SVG charts, CSV, index.md).
    Run(RunArgs),
    /// The follower process of the wake-ups experiment (started by it).
    #[command(hide = true)]
    Follow(FollowArgs),
}

/// `eslab lab run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Experiments to run: ids or numbers (see `eslab lab list`), or `all`.
    #[arg(required = true)]
    pub experiments: Vec<String>,
    /// Short runs: all experiments within a few minutes.
    #[arg(long, conflicts_with = "tiny")]
    pub quick: bool,
    /// The smallest configuration (what the tests run): checks, not measurements.
    #[arg(long, hide = true)]
    pub tiny: bool,
    /// The report directory.
    #[arg(long, default_value = "lab-report")]
    pub out: PathBuf,
    /// Kafka bootstrap servers for the relay experiment (skipped, with a note, when none answers).
    #[arg(long, env = "KAFKA_BROKERS", default_value = DEFAULT_KAFKA_BROKERS)]
    pub kafka_brokers: String,
    /// The NATS JetStream cluster the stores experiment also measures, R1 and
    /// R3 (skipped, with a note, when none answers; `make services` starts one).
    #[arg(long, env = "ESLAB_NATS_URL", default_value = eslab_nats::LOCAL_CLUSTER_URL)]
    pub nats_url: String,
}

/// The PostgreSQL the lab uses: `database_url` if it is a `postgres://` URL, else the local default.
pub fn postgres_url(database_url: &str) -> String {
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        database_url.to_owned()
    } else {
        DEFAULT_POSTGRES_URL.to_owned()
    }
}

/// Runs `eslab lab …`; fails if any experiment failed (after running the others).
pub async fn main(command: LabCommand, database_url: &str, terminal: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    match command {
        LabCommand::List => {
            for e in experiments() {
                let mut needs = if e.needs_postgres() { "PostgreSQL" } else { "no server" }.to_owned();
                if let Some(also) = e.uses_if_reachable() {
                    needs.push_str(&format!(", {also} (skipped without)"));
                }
                writeln!(terminal, "{:>2}  {:<12} {} ({needs})\n    {}", e.number(), e.id(), e.title(), e.question())?;
            }
            Ok(())
        }
        LabCommand::Follow(args) => wakeups::follow_command(&args, terminal).await,
        LabCommand::Run(args) => {
            let selected = select(&args.experiments)?;
            let scale = if args.tiny {
                Scale::Tiny
            } else if args.quick {
                Scale::Quick
            } else {
                Scale::Full
            };
            let options = RunOptions {
                scale,
                postgres_url: postgres_url(database_url),
                out: args.out,
                kafka_brokers: args.kafka_brokers,
                nats_url: args.nats_url,
                progress: true,
            };
            let outcomes = run(&selected, &options, terminal).await?;
            let failed: Vec<_> = outcomes.iter().filter(|o| o.report.is_err()).map(|o| o.id).collect();
            if failed.is_empty() {
                Ok(())
            } else {
                bail!("{} experiment(s) failed: {}", failed.len(), failed.join(", "))
            }
        }
    }
}

/// The CLI flag for a scale.
pub fn scale_flag(scale: Scale) -> &'static str {
    scale.pick("--tiny", "--quick", "")
}
