//! `eslab`: one binary for the eslab toolkit.
//!
//! - `eslab demo`: the account example, told step by step;
//! - `eslab events stream|feed|import`: the store's events as JSON lines
//!   (the store's own commands, from `eslab-runtime`);
//! - `eslab migrate`: create or update the store's schema;
//! - `eslab projections list|parked|retry|skip`: operate the projections;
//! - `eslab rebuild <projection>`: replay into shadow tables and swap them in;
//! - `eslab lab list|run`: measure the patterns on this machine, write a report;
//! - `eslab serve`: the account service (HTTP API) with its projections and transfer saga;
//! - `eslab relay`: publish the store's events to Kafka (the outbox relay);
//! - `eslab worker`: apply events from Kafka to the bank read models.
//!
//! The store is chosen by `DATABASE_URL` (default `sqlite://data/eslab.db`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use eslab_runtime::{PostgresSettings, StoreSettings, redact, shutdown_signal};

mod demo;

/// mimalloc instead of the C library's allocator: the service allocates per
/// request (HTTP, JSON, rows), and glibc's malloc and free were about a third
/// of its CPU under load (perf); `make bench-http` with mimalloc preloaded into
/// the same binary: 17-22 % less CPU per deposit, 11-20 % more deposits/s.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// eslab: event sourcing + CQRS toolkit and lab.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The store (`DATABASE_URL`, `ESLAB_SCHEMA`).
    #[command(flatten)]
    store: StoreSettings,

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
    Events(eslab_runtime::events::EventsCommand),
    /// Create or update the store's schema (stores also migrate on start).
    Migrate,
    /// The lab: measure event-sourcing patterns side by side on this machine
    /// (PostgreSQL from --database-url when it is postgres://, else the local cluster).
    #[command(subcommand)]
    Lab(eslab_lab::LabCommand),
    /// Operate the projections: list (checkpoint, lag, lease, parked), parked, retry, skip.
    #[command(subcommand)]
    Projections(eslab::projections::ProjectionsCommand),
    /// Forget a data subject (crypto-shredding): delete its key, so that its
    /// personal data reads as forgotten everywhere, and erase it from the
    /// read models and parked events. The bank's subjects are `account-<id>`.
    Forget {
        /// The subject, e.g. `account-<id>`.
        subject: eslab_core::Subject,
        /// Who asks (recorded with the forgetting).
        #[arg(long, default_value = "eslab-cli")]
        by: String,
    },
    /// Replay a projection into shadow tables and swap them in atomically
    /// (the live read model keeps serving meanwhile), with a progress bar.
    Rebuild {
        /// The projection (bank-views).
        projection: String,
    },
    /// Run the account service: the HTTP API, with the read models and the
    /// transfer saga in the same process, and the console at /console.
    Serve(ServeArgs),
    /// Serve the console alone (event explorer, live feed, projections, lab
    /// report) against the store, e.g. beside services running elsewhere.
    Console(ConsoleArgs),
    /// Publish the store's events to Kafka: the transactional outbox relay
    /// (KAFKA_BROKERS, ESLAB_TOPIC_PREFIX).
    #[cfg(feature = "kafka")]
    Relay(eslab::relay::RelayArgs),
    /// Apply events from Kafka to the bank read models: a consumer-group
    /// worker (KAFKA_BROKERS, ESLAB_TOPIC_PREFIX, ESLAB_WORKER_GROUP).
    #[cfg(feature = "kafka")]
    Worker(eslab::worker::WorkerArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Where to listen.
    #[arg(long, env = "ESLAB_BIND", default_value = eslab::serve::DEFAULT_BIND)]
    bind: String,
    /// When set, writes need `Authorization: Bearer <token>`. An empty or
    /// blank token is refused. Without one, only a loopback address may be
    /// served unless --no-auth says so.
    #[arg(long, env = "ESLAB_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Accept writes without a token even on an address other machines can
    /// reach (auth off must be asked for; it is said at start-up).
    #[arg(long, env = "ESLAB_NO_AUTH", conflicts_with = "api_token")]
    no_auth: bool,
    /// Most client connections open at once; when full, the connection idle
    /// longest is closed for a new one (lowered to fit the open-file limit).
    #[arg(long, env = "ESLAB_MAX_CONNECTIONS", default_value_t = eslab::serve::server::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Seconds a client has to send a request's head, and that a kept-alive
    /// connection may stay idle.
    #[arg(long, env = "ESLAB_HEADER_READ_TIMEOUT_SECS", default_value_t = eslab::serve::server::DEFAULT_HEADER_READ_TIMEOUT.as_secs())]
    header_read_timeout_secs: u64,
    /// Seconds a response write may make no progress (a client that stopped
    /// reading) before the connection is closed.
    #[arg(long, env = "ESLAB_WRITE_TIMEOUT_SECS", default_value_t = eslab::serve::server::DEFAULT_WRITE_TIMEOUT.as_secs())]
    write_timeout_secs: u64,
    /// Longest a request may take, in seconds (503 after).
    #[arg(long, default_value_t = 10)]
    request_timeout_secs: u64,
    /// PostgreSQL pool size and group commit.
    #[command(flatten)]
    postgres: PostgresSettings,
    /// Requests per second each client (peer IP address; behind a proxy, the
    /// proxy) may make, sustained; 429 above it. 0: no limit.
    #[arg(long, env = "ESLAB_RATE_LIMIT_PER_SECOND", default_value_t = 0)]
    rate_limit_per_second: u32,
    /// Requests a client may make at once after being idle (the token bucket's
    /// size; default: one second's worth).
    #[arg(long, env = "ESLAB_RATE_LIMIT_BURST")]
    rate_limit_burst: Option<u32>,
    /// How long an Idempotency-Key answers retries with the first answer
    /// (e.g. 24h, 90min); an older key is a new request, and a background job
    /// deletes expired keys.
    #[arg(long, env = "ESLAB_IDEMPOTENCY_RETENTION", default_value = "24h", value_parser = parse_retention)]
    idempotency_retention: std::time::Duration,
    /// How a transfer request that does not say (`"mode"` in its body) is
    /// carried out: `saga` (a process manager, 202) or `atomic` (one decision
    /// over both accounts, 201).
    #[arg(long, env = "ESLAB_TRANSFER_MODE", value_enum, default_value_t = eslab::serve::dto::TransferMode::Saga)]
    transfer_mode: eslab::serve::dto::TransferMode,
    /// The lab report the console shows (default: `lab-report/` if it has an
    /// index.md, else `docs/lab-results/`).
    #[arg(long, env = "ESLAB_LAB_REPORT")]
    lab_report: Option<std::path::PathBuf>,
    /// Milliseconds the read models and the saga wait after a wake-up, so that
    /// the appends of that interval reach them in one batch (fewer statements
    /// and commits per command under load, at most this much more staleness).
    #[arg(long, env = "ESLAB_PROJECTION_LINGER_MS", default_value_t = eslab::serve::DEFAULT_PROJECTION_LINGER_MS)]
    projection_linger_ms: u64,
}

#[derive(Debug, clap::Args)]
struct ConsoleArgs {
    /// Where to listen.
    #[arg(long, env = "ESLAB_CONSOLE_BIND", default_value = "127.0.0.1:8081")]
    bind: String,
    /// When set, the console's actions (retry, skip) need it as a bearer
    /// token. Without one, only a loopback address may be served unless
    /// --no-auth says so.
    #[arg(long, env = "ESLAB_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Allow the actions without a token on an address other machines can reach.
    #[arg(long, env = "ESLAB_NO_AUTH", conflicts_with = "api_token")]
    no_auth: bool,
    /// The lab report to show (default: `lab-report/` if it has an index.md,
    /// else `docs/lab-results/`).
    #[arg(long, env = "ESLAB_LAB_REPORT")]
    lab_report: Option<std::path::PathBuf>,
}

/// The lab report to show: the one asked for, else the newest run's, else the committed one.
fn lab_report(asked: Option<std::path::PathBuf>) -> Option<std::path::PathBuf> {
    asked.or_else(|| {
        ["lab-report", "docs/lab-results"]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|dir| dir.join("index.md").is_file())
    })
}

/// A retention such as `24h` or `90min` (humantime), more than zero.
fn parse_retention(text: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (e.g. 24h, 90min, 7days)")),
    }
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
        // The lab makes its own schemas and files; it opens no store here.
        if let Command::Lab(lab) = cli.command {
            return eslab_lab::main(lab, &cli.store.database_url, &mut std::io::stdout()).await;
        }
        // The service checks its configuration first, then opens its own store
        // (with its PostgreSQL pool and group-commit flags).
        if let Command::Serve(args) = cli.command {
            return serve(StoreSettings { postgres: args.postgres.clone(), ..cli.store }, args).await;
        }
        let store = cli.store.open().await?;
        let mut out = std::io::stdout().lock();
        match cli.command {
            Command::Demo => demo::run(store.clone(), store.describe(), &mut out).await,
            Command::Migrate => {
                // Opening a store applies its migrations.
                eprintln!("{} store at {} is up to date", store.describe(), redact(&cli.store.database_url));
                Ok(())
            }
            Command::Serve(_) => anyhow::bail!("the service opens its own store"),
            Command::Console(args) => console(store, &cli.store.database_url, args).await,
            #[cfg(feature = "kafka")]
            Command::Relay(args) => eslab::relay::run(store, args, shutdown_signal()).await,
            #[cfg(feature = "kafka")]
            Command::Worker(args) => eslab::worker::run(store, args, shutdown_signal()).await,
            Command::Events(command) => Ok(eslab_runtime::events::run(&store, command, &mut out).await?),
            Command::Projections(command) => eslab::projections::command(&store, command, &mut out).await,
            Command::Forget { subject, by } => {
                // An account's owner: recorded in the account's stream first, so
                // that every running service's cached state learns of it.
                if let Ok(stream) = subject.as_str().parse::<eslab_core::StreamId>()
                    && stream.category() == <eslab_bank::Account as eslab_core::Aggregate>::KIND
                {
                    let events = eslab_core::EventStore::new(store.clone()).with_upcasters(eslab_bank::upcasters());
                    let bank = eslab_bank::Bank::new(events, &eslab_bank::BankOptions::default());
                    bank.forget_owner(stream.id(), &by).await?;
                }
                let projections = eslab::projections::AnyProjections::open(&store).await?;
                let (done, rewritten) = projections.forget(&subject, &by).await?;
                store.settle_erasure().await;
                let line = serde_json::json!({
                    "subject": done.subject,
                    "forgotten_at": done.forgotten_at.format(&time::format_description::well_known::Rfc3339)?,
                    "forgotten_by": done.forgotten_by,
                    "parked_events_erased": rewritten,
                });
                std::io::Write::write_fmt(&mut out, format_args!("{line}\n"))?;
                Ok(())
            }
            Command::Rebuild { projection } => {
                let progress = eslab::rebuild::progress_bar();
                let done = eslab::rebuild::rebuild(&store, &projection, &progress).await?;
                eprintln!("{projection}: rebuilt from {} events and swapped in at {}", done.events, done.checkpoint);
                Ok(())
            }
            Command::Lab(_) => anyhow::bail!("the lab runs before any store is opened"),
        }
    })
}

/// `eslab console`: the console alone, on the hardened server loop.
async fn console(store: eslab_runtime::AnyStore, url: &str, args: ConsoleArgs) -> anyhow::Result<()> {
    let api_token = args.api_token.or_else(|| std::env::var("ESLAB_API_TOKEN").ok());
    let config = eslab::serve::Config {
        bind: args.bind,
        api_token: api_token.clone(),
        no_auth: args.no_auth,
        ..eslab::serve::Config::new(url)
    };
    let mode = config.check()?;
    let events = eslab_core::EventStore::new(store.clone()).with_upcasters(eslab_bank::upcasters());
    let lab = lab_report(args.lab_report);
    let console = eslab::serve::console(&store, events, api_token, lab.as_deref()).await?;
    let listener = tokio::net::TcpListener::bind(&config.bind).await?;
    let addr = listener.local_addr()?;
    println!(
        "eslab console: http://{addr}{} (store: {}, {})",
        eslab_console::DEFAULT_BASE,
        store.describe(),
        redact(url)
    );
    println!("eslab console: {}", mode.describe());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let limits = eslab::serve::server::ConnectionLimits::default();
    let server = tokio::spawn(eslab::serve::server::serve(listener, console.router(), limits, stopped));
    shutdown_signal().await;
    stop.send_replace(true);
    server.await??;
    Ok(())
}

async fn serve(store: StoreSettings, args: ServeArgs) -> anyhow::Result<()> {
    // clap takes an empty environment variable for an absent one; an empty
    // ESLAB_API_TOKEN (an unset shell variable) must be refused, not ignored.
    let api_token = args.api_token.or_else(|| std::env::var("ESLAB_API_TOKEN").ok());
    let config = eslab::serve::Config {
        bind: args.bind,
        api_token,
        no_auth: args.no_auth,
        limits: eslab::serve::server::ConnectionLimits {
            header_read_timeout: std::time::Duration::from_secs(args.header_read_timeout_secs.max(1)),
            write_timeout: std::time::Duration::from_secs(args.write_timeout_secs.max(1)),
            max_connections: args.max_connections.max(1),
        },
        request_timeout: std::time::Duration::from_secs(args.request_timeout_secs.max(1)),
        rate_limit: eslab::serve::limit::RateLimit::new(
            args.rate_limit_per_second,
            args.rate_limit_burst.unwrap_or(args.rate_limit_per_second),
        ),
        idempotency_retention: args.idempotency_retention,
        transfer_mode: args.transfer_mode,
        lab_report: lab_report(args.lab_report),
        projection_linger: std::time::Duration::from_millis(args.projection_linger_ms),
        ..eslab::serve::Config::new(store)
    };
    // Refuse a bad configuration before opening (and migrating) the store.
    let mode = config.check()?;
    let store = config.store.open().await?;
    let describe = store.describe();
    let auth = if mode == eslab::serve::AuthMode::Token { " -H 'Authorization: Bearer <token>'" } else { "" };
    let url = config.store.database_url.clone();
    let running = eslab::serve::start_with(store, config).await?;
    let addr = running.addr;
    println!("eslab serve: listening on http://{addr} (store: {describe}, {})", redact(&url));
    println!("eslab serve: {}", mode.describe());
    println!(
        "try: curl -i -X POST http://{addr}/accounts -H 'Content-Type: application/json'{auth} -d '{{\"owner\":\"Ada\",\"currency\":\"EUR\"}}'"
    );
    shutdown_signal().await;
    eprintln!("eslab serve: shutting down (draining requests, flushing projections)");
    running.stop().await
}
