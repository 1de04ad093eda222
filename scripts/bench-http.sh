#!/usr/bin/env bash
# make bench-http: deposits through `eslab serve` on PostgreSQL at 32
# connections (wrk), beside two raw single-row INSERT+COMMIT rates of the same
# server at the same concurrency (pgbench), measured in the same run: a
# one-index row of one jsonb column, and a row shaped like an event. Prints
# the CPU each deposit cost eslab and PostgreSQL (from /proc).
#
# Environment: DATABASE_URL (default the local cluster), DURATION (seconds per
# measurement, default 20), CONNECTIONS (default 32), ACCOUNTS (default 256).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/http-load.sh

url="$(http_load_postgres_url)"
duration="${DURATION:-20}"
connections="${CONNECTIONS:-32}"
accounts="${ACCOUNTS:-256}"
threads=2
port="${BENCH_PORT:-18080}"
schema="eslab_bench_http_$$"
raw_schema="eslab_bench_raw_$$"
http_load_scratch "$url" "$schema" "$raw_schema"

DATABASE_URL="$url" bash scripts/ensure-postgres.sh
http_load_ensure_wrk
command -v pgbench >/dev/null || { echo "bench-http: pgbench not found (apt-get install postgresql-contrib or postgresql-15)" >&2; exit 1; }

echo "== building eslab (release)" >&2
cargo build --release -q -p eslab

# raw_baseline NAME SQL_FILE: pgbench at $connections connections for
# $duration s; sets raw_tps, raw_lat and raw_pg_us (PostgreSQL CPU µs per tx).
raw_baseline() {
  local name="$1" file="$2"
  echo "== raw baseline: $name, $connections connections, ${duration}s (pgbench)" >&2
  http_load_postgres_snapshot "$work/pg-before"
  pgbench -n -c "$connections" -j "$threads" -T "$duration" -f "$file" "$url" > "$work/pgbench.txt" 2>&1 \
    || { cat "$work/pgbench.txt" >&2; exit 1; }
  local ticks txs
  ticks=$(http_load_postgres_ticks_since "$work/pg-before")
  raw_tps=$(awk '/^tps = / { print $3; exit }' "$work/pgbench.txt")
  raw_lat=$(awk '/^latency average = / { print $4; exit }' "$work/pgbench.txt")
  txs=$(awk '/^number of transactions actually processed: / { print $6; exit }' "$work/pgbench.txt")
  raw_pg_us=$(awk -v t="$ticks" -v n="$txs" -v hz="$hz" 'BEGIN { printf "%.0f", t * 1e6 / hz / n }')
}

hz=$(getconf CLK_TCK)
psql -q "$url" -c "CREATE SCHEMA $raw_schema;
  CREATE TABLE $raw_schema.raw (id bigint generated always as identity primary key, payload jsonb not null);
  CREATE SEQUENCE $raw_schema.versions;
  CREATE TABLE $raw_schema.events (
    global_position bigint generated always as identity primary key,
    transaction_id xid8 not null default pg_current_xact_id(),
    stream_id text not null,
    stream_version bigint not null default nextval('$raw_schema.versions'),
    event_id uuid not null unique default gen_random_uuid(),
    event_type text not null,
    payload jsonb not null,
    metadata jsonb not null,
    recorded_at timestamptz not null default now(),
    unique (stream_id, stream_version))" >/dev/null
echo "INSERT INTO $raw_schema.raw (payload) VALUES ('{\"amount\": 100, \"currency\": \"EUR\"}');" > "$work/raw.sql"
cat > "$work/event.sql" <<SQL
\set account random(1, $accounts)
INSERT INTO $raw_schema.events (stream_id, event_type, payload, metadata)
VALUES ('account-' || :account, 'Deposited', '{"amount": 100, "currency": "EUR"}',
        '{"correlation_id": "0192f0c4-7d1e-7c3a-9a51-6f1c2b3d4e5f", "recorded_by": "bench"}');
SQL

raw_baseline "one-index row (a jsonb column)" "$work/raw.sql"
raw1_tps=$raw_tps raw1_lat=$raw_lat raw1_pg_us=$raw_pg_us
raw_baseline "event-shaped row (xid8, unique uuid, jsonb payload and metadata, unique (stream, version))" "$work/event.sql"
raw2_tps=$raw_tps raw2_lat=$raw_lat raw2_pg_us=$raw_pg_us

echo "== eslab serve on PostgreSQL (schema $schema)" >&2
http_load_start_serve "$url" "$schema" "$port" "$work/serve.log"
server_pid=$HTTP_LOAD_PID

echo "== opening $accounts accounts" >&2
http_load_deposits_lua "$port" "$accounts" "$work/deposits.lua"

echo "== deposits: $connections connections, ${duration}s (wrk)" >&2
# Let the read models and the saga catch up with the account openings first.
sleep 1
commits() { psql -tA "$url" -c "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"; }
commits_before=$(commits)
http_load_postgres_snapshot "$work/pg-before"
eslab_before=$(http_load_cpu_ticks "$server_pid")
read -r busy_before total_before < <(http_load_machine_ticks)
wrk -t"$threads" -c"$connections" -d"${duration}s" --latency -s "$work/deposits.lua" "http://127.0.0.1:$port" > "$work/wrk.txt"
# What the deposits left to do in the background (read models, saga) counts too.
sleep 1
pg_ticks=$(http_load_postgres_ticks_since "$work/pg-before")
# PostgreSQL publishes a backend's counters within a second of its commits.
sleep 1
commits_after=$(commits)
read -r busy_after total_after < <(http_load_machine_ticks)
eslab_ticks=$(( $(http_load_cpu_ticks "$server_pid") - eslab_before ))
http_rps=$(awk '/^Requests\/sec:/ { print $2 }' "$work/wrk.txt")
requests=$(http_load_field "$work/wrk.txt" requests)
errors=$(http_load_field "$work/wrk.txt" errors_status)
us_per() { awk -v t="$1" -v n="$requests" -v hz="$hz" 'BEGIN { printf "%.0f", t * 1e6 / hz / n }'; }
eslab_us=$(us_per "$eslab_ticks")
pg_us=$(us_per "$pg_ticks")

echo
echo "machine: $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/ {print $2}') GiB, $(psql -tA "$url" -c 'show server_version')"
echo "raw INSERT+COMMIT, one-index row   (pgbench, $connections conns): ${raw1_tps} tx/s (mean latency ${raw1_lat} ms), PostgreSQL CPU ${raw1_pg_us} µs/tx"
echo "raw INSERT+COMMIT, event-shaped row (pgbench, $connections conns): ${raw2_tps} tx/s (mean latency ${raw2_lat} ms), PostgreSQL CPU ${raw2_pg_us} µs/tx"
echo "HTTP deposits (wrk, $connections conns): ${http_rps} req/s, p50 $(http_load_field "$work/wrk.txt" p50_ms) ms, p99 $(http_load_field "$work/wrk.txt" p99_ms) ms, non-2xx: ${errors}"
echo "CPU per deposit: eslab ${eslab_us} µs + PostgreSQL ${pg_us} µs = $((eslab_us + pg_us)) µs ($requests deposits; /proc, read models and saga included)"
awk -v c=$((commits_after - commits_before)) -v n="$requests" \
  'BEGIN { printf "commits per deposit (pg_stat_database, the whole database, read models and saga included): %.2f\n", c / n }'
awk -v b=$((busy_after - busy_before)) -v t=$((total_after - total_before)) -v e="$eslab_ticks" -v p="$pg_ticks" \
  'BEGIN { printf "machine busy during the deposits (and the second after): %.0f%% of %d cores (eslab %.0f%%, PostgreSQL %.0f%%, the rest: wrk, kernel, others %.0f%%)\n", 100 * b / t, '"$(nproc)"', 100 * e / t, 100 * p / t, 100 * (b - e - p) / t }'
awk -v h="$http_rps" -v r="$raw2_tps" 'BEGIN { printf "ratio HTTP deposits / event-shaped raw commits: %.2f×\n", h / r }'
awk -v h="$http_rps" -v r="$raw1_tps" 'BEGIN { printf "ratio HTTP deposits / one-index raw commits: %.2f× (%.1f%%)\n", h / r, 100 * h / r }'
