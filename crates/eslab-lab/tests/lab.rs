//! The lab at its smallest scale: every experiment runs against the real
//! PostgreSQL (`DATABASE_URL`, default the local cluster), writes its files,
//! and its numbers add up. Performance itself is never asserted here.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;

use eslab_lab::{self as lab, Outcome, Report, RunOptions, Scale, Table};

fn postgres_url() -> String {
    lab::postgres_url(&std::env::var("DATABASE_URL").unwrap_or_default())
}

/// The shared test broker: `KAFKA_BROKERS`, or 127.0.0.1:9092 (`scripts/services.sh start`).
fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| lab::DEFAULT_KAFKA_BROKERS.into())
}

/// Runs one experiment at `Scale::Tiny` into a temporary directory.
async fn run(id: &str, postgres_url: String) -> (tempfile::TempDir, Vec<Outcome>) {
    run_with(id, postgres_url, kafka_brokers()).await
}

async fn run_with(id: &str, postgres_url: String, kafka_brokers: String) -> (tempfile::TempDir, Vec<Outcome>) {
    let dir = tempfile::tempdir().unwrap();
    let options = RunOptions {
        scale: Scale::Tiny,
        postgres_url,
        out: dir.path().to_owned(),
        kafka_brokers,
        nats_url: eslab_testing::nats::nats_url(),
        progress: false,
    };
    let selected = lab::select(&[id.to_owned()]).unwrap();
    let mut terminal = Vec::new();
    let outcomes = lab::run(&selected, &options, &mut terminal).await.unwrap();
    (dir, outcomes)
}

/// Runs `id` and checks its files; returns its report.
async fn report_of(id: &str) -> Report {
    let (dir, mut outcomes) = run(id, postgres_url()).await;
    let outcome = outcomes.pop().unwrap();
    let report = match outcome.report {
        Ok(r) => r,
        Err(e) => panic!("experiment {id} failed: {e}"),
    };
    check_files(dir.path(), id, &report.table);
    report
}

fn check_files(dir: &Path, id: &str, table: &Table) {
    let read = |name: String| std::fs::read_to_string(dir.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let md = read(format!("{id}.md"));
    assert!(md.contains("![") && md.contains(&format!("({id}.svg)")) && md.contains(&format!("({id}.csv)")), "{md}");
    assert!(md.contains(&table.columns.join(" | ")), "{md}");
    let svg = read(format!("{id}.svg"));
    assert!(svg.starts_with("<svg") && svg.contains("<rect"), "{svg}");
    let csv = read(format!("{id}.csv"));
    assert_eq!(csv.lines().count(), table.rows.len() + 1, "{csv}");
    let index = read("index.md".into());
    for needle in ["CPU", "cores", "memory", "OS", "PostgreSQL", "eslab", &format!("({id}.md)")] {
        assert!(index.contains(needle), "index.md lacks {needle}: {index}");
    }
}

fn num(table: &Table, row: &[lab::Cell], column: &str) -> f64 {
    table.num(row, column).unwrap_or_else(|| panic!("no number in column {column}: {row:?}"))
}

fn text<'a>(table: &Table, row: &'a [lab::Cell], column: &str) -> &'a str {
    row[table.column(column).unwrap_or_else(|| panic!("no column {column}"))].as_text().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_strategies_measure_every_strategy_and_batch_size() {
    let r = report_of("append").await;
    let t = &r.table;
    assert_eq!(t.rows.len(), 2 * 5, "{t:?}");
    for row in &t.rows {
        assert_eq!(num(t, row, "batches"), 2.0);
        assert!(num(t, row, "events/s") > 0.0);
        assert!(num(t, row, "batch p99 (ms)") >= num(t, row, "batch p50 (ms)"));
    }
    for row in t.rows_where("strategy", "per-row loop (1 tx)") {
        assert!((num(t, row, "× per-row loop") - 1.0).abs() < 1e-9);
    }
    assert_eq!(r.findings.len(), 2, "{:?}", r.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_controls_keep_versions_gap_free_and_count_every_append() {
    let r = report_of("concurrency").await;
    let t = &r.table;
    assert_eq!(t.rows.len(), 4, "{t:?}");
    for row in &t.rows {
        // 2 writers × 10 appends, none abandoned.
        assert_eq!(num(t, row, "appends"), 20.0, "{row:?}");
        assert_eq!(num(t, row, "gave up"), 0.0, "{row:?}");
        assert_eq!(text(t, row, "versions gap-free"), "yes", "{row:?}");
    }
    let lock = t.rows_where("control", "advisory lock per stream").next().unwrap();
    assert_eq!(num(t, lock, "retries"), 0.0, "a lock never loses a race");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_eslab_feed_misses_nothing_and_counts_add_up() {
    let r = report_of("ordering").await;
    let t = &r.table;
    assert_eq!(t.rows.len(), 3, "{t:?}");
    for row in &t.rows {
        let written = num(t, row, "events written");
        // 4 writers × 15 transactions of 1 to 3 events.
        assert!((60.0..=180.0).contains(&written), "{row:?}");
        assert_eq!(num(t, row, "events seen") + num(t, row, "events missed"), written, "{row:?}");
        assert_eq!(num(t, row, "duplicates"), 0.0, "{row:?}");
    }
    let watermark = t.rows_where("approach", "eslab xid8 watermark feed").next().unwrap();
    assert_eq!(num(t, watermark, "events missed"), 0.0, "eslab's feed must miss nothing");
    let locked = t.rows_where("approach", "per-category lock + position order").next().unwrap();
    assert_eq!(num(t, locked, "events missed"), 0.0, "commits in position order leave nothing to skip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_keeps_every_acknowledged_append_once() {
    let r = report_of("group-commit").await;
    let t = &r.table;
    // 2 caller counts × raw, store (both strategies), group (both strategies), group with shared streams.
    assert_eq!(t.rows.len(), 2 * 6, "{t:?}");
    for row in &t.rows {
        // Each caller does at least 5 appends at the tiny scale.
        assert!(num(t, row, "appends") >= 5.0 * num(t, row, "callers"), "{row:?}");
        if text(t, row, "variant") != "raw INSERT + COMMIT" {
            assert_eq!(text(t, row, "stored (= appends)"), "yes", "{row:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_measure_every_variant_and_the_follower_handles_every_append_once() {
    let r = report_of("wake-ups").await;
    let t = &r.table;
    // 2 caller counts × raw and three ways to notify; then 4 followers.
    assert_eq!(t.rows.len(), 2 * 4 + 4, "{t:?}");
    let throughput: Vec<_> = t.rows_where("measure", "appends/s").collect();
    assert_eq!(throughput.len(), 2 * 4, "{t:?}");
    for row in throughput {
        // Each caller does at least 5 appends at the tiny scale.
        assert!(num(t, row, "appends") >= 5.0 * num(t, row, "callers"), "{row:?}");
        let check = text(t, row, "every append stored / handled once");
        assert_eq!(check, if text(t, row, "variant") == "raw INSERT + COMMIT" { "n/a" } else { "yes" }, "{row:?}");
    }
    // The test binary is not `eslab`: the follower runs on a store instance of its own in this process.
    let followers: Vec<_> = t.rows_where("measure", "latency, follower task (own store)").collect();
    assert_eq!(followers.len(), 4, "{t:?}");
    for row in followers {
        // 4 callers × 10 appends.
        assert_eq!(num(t, row, "appends"), 40.0, "{row:?}");
        assert_eq!(text(t, row, "every append stored / handled once"), "yes", "{row:?}");
        assert!(num(t, row, "append→handler p99 (ms)") >= num(t, row, "append→handler p50 (ms)"), "{row:?}");
    }
    assert!(r.findings.iter().any(|f| f.starts_with("8 callers: NOTIFY in the transaction")), "{:?}", r.findings);
    assert!(
        r.findings.iter().any(|f| f.starts_with("append to handler, follower on its own store")),
        "{:?}",
        r.findings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_replay_only_the_tail_and_the_cache_nothing() {
    let r = report_of("snapshots").await;
    let t = &r.table;
    assert_eq!(t.rows.len(), 2 * 5, "{t:?}");
    let replayed = |length: f64, load: &str| {
        let row = t.rows.iter().find(|row| num(t, row, "events in stream") == length && text(t, row, "load") == load);
        num(t, row.unwrap_or_else(|| panic!("no row {length} {load}")), "events replayed")
    };
    assert_eq!(replayed(150.0, "full replay"), 150.0);
    assert_eq!(replayed(150.0, "snapshot every 100"), 50.0);
    assert_eq!(replayed(150.0, "snapshot every 1000"), 150.0);
    assert_eq!(replayed(10.0, "cache hit"), 0.0);
    for row in &t.rows {
        assert_eq!(num(t, row, "loads"), 3.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_build_correct_read_models_and_compare_inline_with_async() {
    let r = report_of("projections").await;
    let t = &r.table;
    // Baseline, 2 batch sizes × 2 partition counts, then plain / async / inline.
    assert_eq!(t.rows.len(), 1 + 2 * 2 + 3, "{t:?}");
    for row in t.rows_where("run", "runner + bank views") {
        assert_eq!(num(t, row, "events"), 100.0, "{row:?}");
        assert_eq!(text(t, row, "read model correct"), "yes", "{row:?}");
        assert!(t.num(row, "write p50 (ms)").is_none_or(f64::is_nan), "catch-up rows have no write latency: {row:?}");
    }
    let baseline = t.rows_where("run", "feed read only (baseline)").next().unwrap();
    assert_eq!(num(t, baseline, "events"), 100.0);

    // Inline vs async: write latency of each append, staleness of the read model.
    let row = |run: &'static str| t.rows_where("run", run).next().unwrap_or_else(|| panic!("no row {run:?}: {t:?}"));
    let (plain, live, inline) = (
        row("plain append, no projection"),
        row("plain append + async runner (live)"),
        row("append + inline projection"),
    );
    for r in [plain, live, inline] {
        // 4 accounts × 4 deposits, one append each.
        assert_eq!(num(t, r, "events"), 16.0, "{r:?}");
        assert!(num(t, r, "write p50 (ms)") > 0.0, "{r:?}");
        assert!(num(t, r, "write p99 (ms)") >= num(t, r, "write p50 (ms)"), "{r:?}");
    }
    for r in [live, inline] {
        assert_eq!(text(t, r, "read model correct"), "yes", "{r:?}");
        assert!(num(t, r, "staleness p99 (ms)") >= num(t, r, "staleness p50 (ms)"), "{r:?}");
    }
    assert_eq!(text(t, inline, "visible on first read"), "100 %", "inline is read-your-writes: {inline:?}");
    assert!(t.num(plain, "staleness p50 (ms)").is_none_or(f64::is_nan), "no read model, no staleness: {plain:?}");
    assert!(r.findings.iter().any(|f| f.starts_with("inline projection: write p50")), "{:?}", r.findings);
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_relay_publishes_every_event_at_every_setting_beside_a_bare_producer() {
    let brokers = kafka_brokers();
    let (dir, mut outcomes) = run_with("kafka-relay", postgres_url(), brokers.clone()).await;
    let report = match outcomes.pop().unwrap().report {
        Ok(r) => r,
        Err(e) => panic!("experiment kafka-relay failed: {e}"),
    };
    assert!(
        !report.findings.iter().any(|f| f.starts_with("skipped")),
        "no Kafka broker at {brokers}: start one (scripts/services.sh start) or set KAFKA_BROKERS: {:?}",
        report.findings
    );
    let t = &report.table;
    check_files(dir.path(), "kafka-relay", t);
    // The baseline, then relay batch 20/200 × linger.ms 0/5.
    assert_eq!(t.rows.len(), 1 + 2 * 2, "{t:?}");
    let baseline = t.rows_where("run", "bare producer (baseline)").next().unwrap();
    assert_eq!(num(t, baseline, "events"), 200.0, "8 accounts × 25 events, one pass");
    assert!((num(t, baseline, "× bare producer") - 1.0).abs() < 1e-9);
    for row in t.rows_where("run", "relay") {
        assert_eq!(num(t, row, "events"), 200.0, "{row:?}");
        assert_eq!(text(t, row, "all acknowledged"), "yes", "{row:?}");
        let batch = num(t, row, "relay batch");
        assert!(num(t, row, "batches") >= (200.0 / batch).ceil(), "{row:?}");
        assert!(num(t, row, "events/s") > 0.0 && num(t, row, "× bare producer") > 0.0, "{row:?}");
        assert!(num(t, row, "batch p99 (ms)") >= num(t, row, "batch p50 (ms)"), "{row:?}");
    }
    let md = std::fs::read_to_string(dir.path().join("kafka-relay.md")).unwrap();
    assert!(md.contains("topics were deleted") || md.contains("could not be deleted"), "{md}");
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_relay_is_skipped_with_a_note_when_no_broker_answers() {
    // Nothing listens on port 1.
    let (dir, mut outcomes) = run_with("kafka-relay", postgres_url(), "127.0.0.1:1".into()).await;
    let report = outcomes.pop().unwrap().report.unwrap();
    assert!(report.table.rows.is_empty(), "{:?}", report.table);
    assert!(
        report.findings[0].starts_with("skipped: no Kafka broker answered at 127.0.0.1:1"),
        "{:?}",
        report.findings
    );
    check_files(dir.path(), "kafka-relay", &report.table);
    let md = std::fs::read_to_string(dir.path().join("kafka-relay.md")).unwrap();
    assert!(md.contains("skipped: no Kafka broker answered") && md.contains("--kafka-brokers"), "{md}");
    let index = std::fs::read_to_string(dir.path().join("index.md")).unwrap();
    assert!(index.contains("skipped: no Kafka broker"), "{index}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codecs_round_trip_and_binary_formats_are_smaller() {
    let r = report_of("codecs").await;
    let t = &r.table;
    assert_eq!(t.rows.len(), 4, "{t:?}");
    let bytes = |codec: &str| num(t, t.rows_where("codec", codec).next().unwrap(), "bytes/event");
    for row in &t.rows {
        assert_eq!(text(t, row, "round trip exact"), "yes", "{row:?}");
        assert!(num(t, row, "encode events/s") > 0.0 && num(t, row, "decode events/s") > 0.0);
    }
    assert!(bytes("postcard") < bytes("MessagePack (rmp-serde, compact)"));
    assert!(bytes("MessagePack (rmp-serde, compact)") < bytes("MessagePack (rmp-serde, named fields)"));
    assert!(bytes("MessagePack (rmp-serde, named fields)") < bytes("JSON (serde_json)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_run_the_same_workload_on_every_store() {
    let r = report_of("stores").await;
    let t = &r.table;
    let names: Vec<_> = t.rows.iter().map(|row| text(t, row, "store").to_owned()).collect();
    assert_eq!(names, ["memory", "SQLite (file, WAL)", "PostgreSQL", "JetStream R1", "JetStream R3"]);
    for row in &t.rows {
        // 2 tasks × 10 commands; the feed holds 10 openings and the 20 commands' events.
        assert_eq!(num(t, row, "commands"), 20.0, "{row:?}");
        assert_eq!(num(t, row, "feed events"), 30.0, "{row:?}");
    }
}

#[cfg(feature = "peers")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_run_every_workload_on_every_library_or_say_why_not() {
    let r = report_of("peers").await;
    let t = &r.table;
    // At the tiny scale: distinct accounts at 1 and 8 writers, 4 writers per
    // account at 8, ten-event commands, loads by replay and from the cache;
    // each for eslab and the two peers.
    assert_eq!(t.rows.len(), 6 * 3, "{t:?}");
    let mut libraries: Vec<_> = t.rows.iter().map(|row| text(t, row, "library").to_owned()).collect();
    libraries.dedup();
    libraries.sort();
    libraries.dedup();
    assert_eq!(libraries.len(), 3, "{libraries:?}");
    for row in &t.rows {
        let note = text(t, row, "note");
        if note.starts_with("cannot:") {
            // Only the peers, which have no state cache, sit out the cached load.
            assert!(text(t, row, "workload").contains("cache"), "{row:?}");
            assert!(!text(t, row, "library").starts_with("eslab"), "{row:?}");
            continue;
        }
        assert!(note.is_empty(), "{row:?}");
        // At least 3 commands per writer (2 loads), each one counted once.
        let least = if text(t, row, "workload").starts_with("load") { 2.0 } else { 3.0 * num(t, row, "writers") };
        assert!(num(t, row, "ops") >= least, "{row:?}");
        assert!(num(t, row, "ops/s") > 0.0 && num(t, row, "eslab ÷ this") > 0.0, "{row:?}");
        assert!(num(t, row, "p99 (ms)") >= num(t, row, "p50 (ms)"), "{row:?}");
        if text(t, row, "library").starts_with("eslab") {
            assert!((num(t, row, "eslab ÷ this") - 1.0).abs() < 1e-9, "{row:?}");
        }
        let counted = ["one-event commands, distinct", "ten-event", "load a 100-event account (replay)"];
        if counted.iter().any(|c| text(t, row, "workload").starts_with(c)) {
            // Every library sends statements and waits for answers.
            assert!(num(t, row, "statements/op") >= 1.0 && num(t, row, "round trips/op") >= 1.0, "{row:?}");
        }
    }
    assert!(r.findings.first().is_some_and(|f| f.contains("the fastest peer is")), "{:?}", r.findings);
    assert!(r.findings.iter().any(|f| f.starts_with("On the wire")), "{:?}", r.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_postgres_its_experiments_fail_clearly_and_the_others_run() {
    let dir = tempfile::tempdir().unwrap();
    let options = RunOptions {
        scale: Scale::Tiny,
        // Nothing listens on port 1.
        postgres_url: "postgres://postgres@127.0.0.1:1/postgres".into(),
        out: dir.path().to_owned(),
        kafka_brokers: kafka_brokers(),
        nats_url: eslab_testing::nats::nats_url(),
        progress: false,
    };
    let selected = lab::select(&["1".to_owned(), "codecs".to_owned(), "stores".to_owned()]).unwrap();
    let outcomes = lab::run(&selected, &options, &mut Vec::new()).await.unwrap();
    let append = outcomes.iter().find(|o| o.id == "append").unwrap();
    let why = append.report.as_ref().unwrap_err();
    assert!(why.contains("PostgreSQL is not reachable") && why.contains("pg_ctlcluster"), "{why}");
    assert!(!dir.path().join("append.md").exists());
    assert!(outcomes.iter().find(|o| o.id == "codecs").unwrap().report.is_ok());
    let stores = outcomes.iter().find(|o| o.id == "stores").unwrap().report.as_ref().unwrap();
    assert_eq!(stores.table.rows.len(), 4, "memory, SQLite and JetStream (R1, R3) still run");
    assert!(stores.findings.iter().any(|f| f.contains("PostgreSQL was not measured")), "{:?}", stores.findings);
    let index = std::fs::read_to_string(dir.path().join("index.md")).unwrap();
    assert!(index.contains("failed: PostgreSQL is not reachable") && index.contains("(codecs.md)"), "{index}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_stream_transfers_conserve_money_on_every_path_and_store() {
    let r = report_of("cross-stream").await;
    let t = &r.table;
    // 1 and 4 writers × 3 paths × PostgreSQL and SQLite.
    assert_eq!(t.rows.len(), 12, "{t:?}");
    for row in &t.rows {
        assert_eq!(text(t, row, "money conserved"), "yes", "{row:?}");
        // 5 transfers per writer, each done, refused or given up.
        let ended = num(t, row, "transfers") + num(t, row, "refused") + num(t, row, "gave up");
        assert_eq!(ended, 5.0 * num(t, row, "writers"), "{row:?}");
    }
    assert!(r.findings.iter().any(|f| f.contains("Money conserved on every path")), "{:?}", r.findings);
}

#[test]
fn experiments_are_chosen_by_id_number_or_all() {
    let ids = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        lab::select(&names).map(|v| v.iter().map(|e| e.id()).collect::<Vec<_>>())
    };
    assert_eq!(ids(&["codecs", "1"]).unwrap(), ["append", "codecs"], "lab order, whatever the order asked");
    assert_eq!(ids(&["all"]).unwrap().len(), lab::experiments().len());
    let err = ids(&["nope"]).unwrap_err().to_string();
    assert!(err.contains("unknown experiment \"nope\"") && err.contains("append (1)"), "{err}");
    let mut numbers: Vec<u8> = lab::experiments().iter().map(|e| e.number()).collect();
    let before = numbers.clone();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers, before, "numbers are unique and in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_every_experiment_and_fails_when_one_fails() {
    let mut out = Vec::new();
    lab::main(lab::LabCommand::List, "sqlite://ignored.db", &mut out).await.unwrap();
    let listed = String::from_utf8(out).unwrap();
    for e in lab::experiments() {
        assert!(listed.contains(e.id()) && listed.contains(e.title()), "{listed}");
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |experiments: &[&str]| {
        lab::LabCommand::Run(lab::RunArgs {
            experiments: experiments.iter().map(|s| (*s).to_owned()).collect(),
            quick: false,
            tiny: true,
            out: dir.path().to_owned(),
            kafka_brokers: kafka_brokers(),
            nats_url: eslab_testing::nats::nats_url(),
        })
    };
    let mut out = Vec::new();
    lab::main(run(&["codecs"]), "sqlite://ignored.db", &mut out).await.unwrap();
    assert!(dir.path().join("codecs.svg").exists());
    let err = lab::main(run(&["append", "codecs"]), "postgres://postgres@127.0.0.1:1/postgres", &mut Vec::new())
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(err, "1 experiment(s) failed: append");
    let err = lab::main(run(&["nope"]), "sqlite://ignored.db", &mut Vec::new()).await.unwrap_err().to_string();
    assert!(err.contains("unknown experiment"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_counts_key_calls_per_operation_sealed_and_none_plain() {
    let r = report_of("personal-data").await;
    let t = &r.table;
    assert_eq!(t.rows.len(), 5 * 2, "{t:?}");
    let row = |workload: &str, field: &str| {
        t.rows
            .iter()
            .find(|row| {
                text(t, row, "workload").starts_with(workload) && text(t, row, "personal field").starts_with(field)
            })
            .unwrap_or_else(|| panic!("no row {workload} {field}"))
    };
    for workload in ["register", "append a personal", "append without", "load 100 events, 1", "load 100 events, all"] {
        let plain = row(workload, "plain");
        assert_eq!(
            num(t, plain, "sealing key calls per op") + num(t, plain, "opening key lookups per op"),
            0.0,
            "{plain:?}"
        );
        assert_eq!(num(t, plain, "operations"), 3.0);
    }
    // One sealing key call per register; a load opens its page with one lookup.
    assert_eq!(num(t, row("register", "sealed"), "sealing key calls per op"), 1.0);
    assert_eq!(num(t, row("load 100 events, 1", "sealed"), "opening key lookups per op"), 1.0);
    assert_eq!(num(t, row("load 100 events, all", "sealed"), "opening key lookups per op"), 1.0);
    assert_eq!(num(t, row("append without", "sealed"), "sealing key calls per op"), 0.0);
}
