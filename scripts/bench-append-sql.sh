#!/usr/bin/env bash
# make bench-append-sql: what an append's checks cost PostgreSQL itself, with
# no client library in the way. pgbench runs three single-event statements on
# the store's own tables (its migrations), at 32 connections, interleaved
# round by round: a raw INSERT (the lab's raw baseline), the store's
# version-row append (bump the stream's version row, insert the event at that
# version, RETURNING what the store returns) and the unique-index append (the
# next version read from the events themselves). Prints each rate and its
# ratio to the raw INSERT of the same round.
#
# Environment: DATABASE_URL (default the local cluster), DURATION (seconds per
# measurement, default 8), ROUNDS (default 2), CONNECTIONS (default 32).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/http-load.sh

url="$(http_load_postgres_url)"
duration="${DURATION:-8}"
rounds="${ROUNDS:-2}"
connections="${CONNECTIONS:-32}"
schema="eslab_bench_sql_$$"
http_load_scratch "$url" "$schema"
DATABASE_URL="$url" bash scripts/ensure-postgres.sh
command -v pgbench >/dev/null || { echo "bench-append-sql: pgbench not found (apt-get install postgresql-15)" >&2; exit 1; }

# The store's own tables, from its migrations (crates/eslab-postgres/migrations), one stream per connection.
{
  echo "CREATE SCHEMA $schema; SET search_path = $schema;"
  cat crates/eslab-postgres/migrations/*.sql
  echo "CREATE SEQUENCE raw_versions;"
  echo "INSERT INTO streams SELECT 'account-' || g, 1 FROM generate_series(0, $connections) g;"
} | psql -q -v ON_ERROR_STOP=1 "$url" >/dev/null

values="'Deposited', 1, '{\"amount\": 100, \"currency\": \"EUR\"}', '{\"correlation_id\": \"0192f0c4-7d1e-7c3a-9a51-6f1c2b3d4e5f\", \"recorded_by\": \"bench\"}'"
cols="stream_id, category, stream_version, event_id, event_type, schema_version, payload, metadata"
cat > "$work/raw.sql" <<SQL
INSERT INTO $schema.events ($cols)
VALUES ('raw-' || :client_id, 'raw', nextval('$schema.raw_versions'), gen_random_uuid(), $values);
SQL
cat > "$work/version-row.sql" <<SQL
WITH bumped AS (UPDATE $schema.streams SET version = version + 1 WHERE stream_id = 'account-' || :client_id
                RETURNING stream_id, version)
INSERT INTO $schema.events ($cols)
SELECT bumped.stream_id, 'account', bumped.version, gen_random_uuid(), $values FROM bumped
RETURNING global_position, transaction_id::text, recorded_at;
SQL
cat > "$work/unique-index.sql" <<SQL
INSERT INTO $schema.events ($cols)
SELECT 'unique-' || :client_id, 'unique',
       coalesce((SELECT max(stream_version) FROM $schema.events WHERE stream_id = 'unique-' || :client_id), 0) + 1,
       gen_random_uuid(), $values
RETURNING global_position, transaction_id::text, recorded_at;
SQL

run() {
  pgbench -n -M prepared -c "$connections" -j 2 -T "$duration" -f "$work/$1.sql" "$url" > "$work/pgbench.txt" 2>&1 \
    || { cat "$work/pgbench.txt" >&2; exit 1; }
  awk '/^tps = / { printf "%.0f", $3; exit }' "$work/pgbench.txt"
}

echo "machine: $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(psql -tA "$url" -c 'show server_version')"
echo "single-event appends at $connections connections, ${duration}s each (pgbench -M prepared), tx/s and × the raw INSERT of the same round:"
for round in $(seq 1 "$rounds"); do
  raw=$(run raw)
  version_row=$(run version-row)
  unique_index=$(run unique-index)
  awk -v r="$round" -v a="$raw" -v b="$version_row" -v c="$unique_index" 'BEGIN {
    printf "round %d: raw INSERT %d | version-row append %d (%.2f×) | unique-index append %d (%.2f×)\n", r, a, b, b / a, c, c / a }'
done
