#!/usr/bin/env bash
# make bench-http: deposits through `eslab serve` on PostgreSQL at 32
# connections (wrk), beside the raw single-row INSERT+COMMIT rate of the same
# server at the same concurrency (pgbench), measured in the same run.
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

echo "== raw baseline: single-row INSERT + COMMIT, $connections connections, ${duration}s (pgbench)" >&2
psql -q "$url" -c "CREATE SCHEMA $raw_schema; CREATE TABLE $raw_schema.raw (id bigint generated always as identity primary key, payload jsonb not null)" >/dev/null
echo "INSERT INTO $raw_schema.raw (payload) VALUES ('{\"amount\": 100, \"currency\": \"EUR\"}');" > "$work/raw.sql"
pgbench -n -c "$connections" -j "$threads" -T "$duration" -f "$work/raw.sql" "$url" > "$work/pgbench.txt" 2>&1
raw_tps=$(awk '/^tps = / { print $3; exit }' "$work/pgbench.txt")
raw_lat=$(awk '/^latency average = / { print $4; exit }' "$work/pgbench.txt")

echo "== eslab serve on PostgreSQL (schema $schema)" >&2
http_load_start_serve "$url" "$schema" "$port" "$work/serve.log"
server_pid=$HTTP_LOAD_PID

echo "== opening $accounts accounts" >&2
http_load_deposits_lua "$port" "$accounts" "$work/deposits.lua"

echo "== deposits: $connections connections, ${duration}s (wrk)" >&2
wrk -t"$threads" -c"$connections" -d"${duration}s" --latency -s "$work/deposits.lua" "http://127.0.0.1:$port" > "$work/wrk.txt"
http_rps=$(awk '/^Requests\/sec:/ { print $2 }' "$work/wrk.txt")
errors=$(http_load_field "$work/wrk.txt" errors_status)

echo
echo "machine: $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/ {print $2}') GiB, $(psql -tA "$url" -c 'show server_version')"
echo "raw INSERT+COMMIT (pgbench, $connections conns): ${raw_tps} tx/s (mean latency ${raw_lat} ms)"
echo "HTTP deposits     (wrk, $connections conns):     ${http_rps} req/s, p50 $(http_load_field "$work/wrk.txt" p50_ms) ms, p99 $(http_load_field "$work/wrk.txt" p99_ms) ms, non-2xx: ${errors}"
awk -v h="$http_rps" -v r="$raw_tps" 'BEGIN { printf "ratio HTTP deposits / raw commits: %.1f%%\n", 100 * h / r }'
