//! `eslab`: one binary for the eslab toolkit.
//!
//! - `eslab demo`: the account example, told step by step;
//! - `eslab events stream|feed|import`: the store's events as JSON lines;
//! - `eslab migrate`: create or update the store's schema.
//! - `eslab relay`: publish the store's events to Kafka (the outbox relay);
//! - `eslab worker`: apply events from Kafka to the bank read models.
//!
//! The store is chosen by `DATABASE_URL` (default `sqlite://data/eslab.db`).

use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eslab_core::{Checkpoint, FeedFilter, StreamId};

mod demo;
mod events;

use eslab::store::{self, AnyStore, DEFAULT_DATABASE_URL};

/// eslab: event sourcing + CQRS toolkit and lab.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Where the events live: sqlite://FILE, postgres://…, or memory:
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    database_url: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Walk through the bank-account example: commands, events, a refused
    /// overdraft, the event stream and a rebuild by replay.
    Demo,
    /// Look at and load the store's events (JSON lines).
    #[command(subcommand)]
    Events(EventsCommand),
    /// Create or update the store's schema (stores also migrate on start).
    Migrate,
    /// Publish the store's events to Kafka: the transactional outbox relay
    /// (KAFKA_BROKERS, ESLAB_TOPIC_PREFIX).
    Relay(eslab::relay::RelayArgs),
    /// Apply events from Kafka to the bank read models: a consumer-group
    /// worker (KAFKA_BROKERS, ESLAB_TOPIC_PREFIX, ESLAB_WORKER_GROUP).
    Worker(eslab::worker::WorkerArgs),
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Print one stream, e.g. `eslab events stream account-42`.
    Stream {
        /// The stream id, `<kind>-<id>`.
        stream_id: StreamId,
    },
    /// Print the global feed (or one category's) after a checkpoint.
    Feed {
        /// Start after this checkpoint, `<transaction>:<position>` (default: the beginning).
        #[arg(long)]
        after: Option<Checkpoint>,
        /// Only this category (the `<kind>` of stream ids).
        #[arg(long)]
        category: Option<String>,
        /// Keep waiting for new events (woken by LISTEN/NOTIFY on PostgreSQL, polling elsewhere).
        #[arg(long)]
        follow: bool,
    },
    /// Append the events of a JSON-lines file (the output of `feed` imports as
    /// is). PostgreSQL loads it with COPY. The whole file is checked first: a
    /// bad line imports nothing.
    Import {
        /// The file to import.
        file: PathBuf,
        /// Events per append (per COPY transaction on PostgreSQL).
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `eslab events feed | head`: the reader left; that is not a failure.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let store = AnyStore::open(&cli.database_url).await?;
        let mut out = std::io::stdout().lock();
        match cli.command {
            Command::Demo => demo::run(store.clone(), store.describe(), &mut out).await,
            Command::Migrate => {
                // Opening a store applies its migrations.
                eprintln!("{} store at {} is up to date", store.describe(), store::redact(&cli.database_url));
                Ok(())
            }
            Command::Relay(args) => eslab::relay::run(store, args, eslab::relay::shutdown_signal()).await,
            Command::Worker(args) => eslab::worker::run(store, args, eslab::relay::shutdown_signal()).await,
            Command::Events(EventsCommand::Stream { stream_id }) => {
                events::stream(&store, &stream_id, &mut out).await.map(|_| ())
            }
            Command::Events(EventsCommand::Feed { after, category, follow }) => {
                let filter = match category {
                    Some(c) => FeedFilter::category(&c)?,
                    None => FeedFilter::All,
                };
                let follow = match (&store, follow) {
                    (_, false) => events::Follow::No,
                    (AnyStore::Postgres(pg), true) => events::Follow::Listen(pg.listener().await?),
                    (_, true) => events::Follow::Poll,
                };
                events::feed(&store, &filter, after.unwrap_or(Checkpoint::START), follow, &mut out).await.map(|_| ())
            }
            Command::Events(EventsCommand::Import { file, batch }) => {
                let open = || std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()));
                let count = events::validate(BufReader::new(open()?))?;
                let input = BufReader::new(open()?);
                let imported = match &store {
                    AnyStore::Postgres(pg) => events::import_copy(pg, input, batch.max(1)).await?,
                    other => events::import(other, input, batch.max(1)).await?,
                };
                eprintln!("imported {imported} of {count} events");
                Ok(())
            }
        }
    })
}
