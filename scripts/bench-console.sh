#!/usr/bin/env bash
# make bench-console: every console page against 1,000,000 events in PostgreSQL.
#
# Seeds a fresh schema (the store's own migrations through `eslab migrate`,
# then the rows in one INSERT ... SELECT): EVENTS events (default 1,000,000)
# in three categories, account (streams of 6 events), transfer (1 to 3) and
# order (1), every five consecutive events sharing a correlation id. Starts
# a release `eslab console` on it and times each page ROUNDS times (default
# 20) with curl, one request at a time: median and slowest, in ms, beside
# the console's static style sheet (the same server, no store read) as the
# baseline measured in the same run. Drops the schema at the end.
#
# Environment: DATABASE_URL (a postgres:// URL; default the local cluster),
# EVENTS, ROUNDS, ESLAB_BIN (default target/release/eslab, built here).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/http-load.sh

url="$(http_load_postgres_url)"
events="${EVENTS:-1000000}"
rounds="${ROUNDS:-20}"
schema="bench_console_$$"
http_load_scratch "$url" "$schema"

bin="${ESLAB_BIN:-}"
if [ -z "$bin" ]; then
  cargo build -q --release -p eslab
  bin=target/release/eslab
fi

DATABASE_URL="$url" ESLAB_SCHEMA="$schema" "$bin" migrate >/dev/null 2>&1
echo "seeding $events events into schema $schema ..." >&2
started=$(date +%s)
psql -q -v ON_ERROR_STOP=1 "$url" <<SQL
SET search_path = $schema;
SET synchronous_commit = off;
-- n: 0..events-1; 60 % in accounts (streams of 6: opened, then deposits), 30 % in transfers
-- (streams of 1 to 3), 10 % in orders (one event each); positions follow n.
INSERT INTO events (stream_id, category, stream_version, event_id, event_type, schema_version, payload, metadata)
SELECT stream_id, category, v, gen_random_uuid(),
       CASE WHEN category = 'account' AND v = 1 THEN 'AccountOpened' ELSE event_type END,
       CASE WHEN category = 'account' AND v = 1 THEN 2 ELSE 1 END,
       CASE WHEN category = 'account' AND v = 1
              THEN jsonb_build_object('owner', jsonb_build_object('name', 'Owner of ' || stream_id),
                                      'currency', 'EUR', 'overdraft_limit', 0)
            WHEN category = 'account' THEN jsonb_build_object('amount', 100, 'balance', 100 * (v - 1))
            ELSE jsonb_build_object('amount', 100 + n % 900, 'note', 'seeded event ' || n) END,
       jsonb_build_object('occurred_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                          'correlation_id', md5('request-' || (n / 5))::uuid)
FROM (
  SELECT n, stream_id, category, event_type, row_number() OVER (PARTITION BY stream_id ORDER BY n) AS v
  FROM (
    SELECT n,
      CASE WHEN n % 10 < 6 THEN 'account-' || (n / 10) WHEN n % 10 < 9 THEN 'transfer-' || (n / 3) ELSE 'order-' || (n / 10) END AS stream_id,
      CASE WHEN n % 10 < 6 THEN 'account' WHEN n % 10 < 9 THEN 'transfer' ELSE 'order' END AS category,
      CASE WHEN n % 10 < 6 THEN 'MoneyDeposited' WHEN n % 10 < 9 THEN 'TransferRequested' ELSE 'OrderPlaced' END AS event_type
    FROM generate_series(0, $events - 1) AS n
  ) raw
) numbered
ORDER BY n;
INSERT INTO streams (stream_id, version) SELECT stream_id, max(stream_version) FROM events GROUP BY stream_id;
VACUUM ANALYZE events;
VACUUM ANALYZE streams;
SQL
echo "seeded in $(( $(date +%s) - started )) s" >&2

port=$(http_load_free_port)
base="http://127.0.0.1:$port"
DATABASE_URL="$url" ESLAB_SCHEMA="$schema" ESLAB_CONSOLE_BIND="127.0.0.1:$port" RUST_LOG=warn \
  "$bin" console > "$work/console.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 200); do
  curl -fs "$base/console/assets/console.css" >/dev/null 2>&1 && break
  sleep 0.1
done

read -r mid_account mid_transfer request <<<"$(psql -Atq "$url" -F ' ' -c \
  "SELECT 'account-' || ($events / 20), 'transfer-' || ($events / 6), metadata->>'correlation_id' \
   FROM $schema.events WHERE global_position = $events / 2")"

pages=(
  "baseline: the style sheet|/console/assets/console.css"
  "categories|/console/"
  "streams of account, first page|/console/streams?category=account"
  "streams of account, from the middle|/console/streams?category=account&after=$mid_account"
  "a stream's events|/console/streams/$mid_account"
  "a transfer's events|/console/streams/$mid_transfer"
  "a request's journey|/console/requests/$request"
  "time travel (account, v5)|/console/state/$mid_account?version=5"
  "live feed page|/console/live"
  "projections|/console/projections"
)

printf '| page | median (ms) | slowest (ms) | median ÷ baseline |\n|---|---:|---:|---:|\n'
baseline=""
for entry in "${pages[@]}"; do
  name="${entry%%|*}"
  path="${entry#*|}"
  status=$(curl -s -o /dev/null -w '%{http_code}' "$base$path")
  [ "$status" = 200 ] || { echo "bench-console: $path answered $status" >&2; tail -5 "$work/console.log" >&2; exit 1; }
  times=$(for _ in $(seq 1 "$rounds"); do curl -s -o /dev/null -w '%{time_total}\n' "$base$path"; done | sort -n)
  median=$(echo "$times" | awk -v n="$rounds" 'NR == int((n + 1) / 2) { printf "%.2f", $1 * 1000 }')
  slowest=$(echo "$times" | tail -1 | awk '{ printf "%.2f", $1 * 1000 }')
  [ -n "$baseline" ] || baseline="$median"
  ratio=$(awk -v m="$median" -v b="$baseline" 'BEGIN { printf "%.1f", m / b }')
  printf '| %s | %s | %s | %s |\n' "$name" "$median" "$slowest" "$ratio"
done
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(psql -Atq "$url" -c 'SHOW server_version'), $events events, $rounds rounds per page"
