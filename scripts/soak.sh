#!/usr/bin/env bash
# make soak: a moderate, steady load of deposits on `eslab serve` (release build)
# (PostgreSQL, a schema of its own, dropped afterwards) for SOAK_SECONDS
# (default 300) in slices of SOAK_SLICE seconds (default 30). Per slice it
# records throughput, p50/p99, non-2xx and socket errors (wrk), and the
# server's resident memory (VmRSS) at the end of the slice; prints a table and
# fails if any request failed or if RSS grew by more than SOAK_MAX_RSS_GROWTH_MB
# (default 32 MiB) between the end of the 2nd slice (after warm-up: pools,
# caches and allocator arenas filled) and the end of the last.
#
# Moderate: SOAK_CONNECTIONS (default 8) connections, each waiting
# SOAK_DELAY_MS (default 15) between requests: a few hundred deposits a second,
# well under the service's capacity (see `make bench-http`), over SOAK_ACCOUNTS
# (default 64) accounts. DATABASE_URL: default the local cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/http-load.sh

url="$(http_load_postgres_url)"
seconds="${SOAK_SECONDS:-300}"
slice="${SOAK_SLICE:-30}"
connections="${SOAK_CONNECTIONS:-8}"
delay_ms="${SOAK_DELAY_MS:-15}"
accounts="${SOAK_ACCOUNTS:-64}"
max_growth_mb="${SOAK_MAX_RSS_GROWTH_MB:-32}"
port=$(http_load_free_port)
schema="eslab_soak_$$"
http_load_scratch "$url" "$schema"

DATABASE_URL="$url" bash scripts/ensure-postgres.sh
http_load_ensure_wrk
slices=$(( seconds / slice ))
[ "$slices" -ge 1 ] || { echo "soak: SOAK_SECONDS ($seconds) must be at least SOAK_SLICE ($slice)" >&2; exit 1; }

# SOAK_PROFILE=debug soaks the debug build instead (what `make test` does, for
# a short soak that needs no release build: errors and memory growth are
# checked the same way, latencies are not representative).
if [ "${SOAK_PROFILE:-release}" = debug ]; then
  echo "== building eslab (debug)" >&2
  cargo build -q -p eslab
  export ESLAB_BIN=./target/debug/eslab
else
  echo "== building eslab (release)" >&2
  cargo build --release -q -p eslab
  export ESLAB_BIN=./target/release/eslab
fi

echo "== eslab serve on PostgreSQL (schema $schema, port $port)" >&2
http_load_start_serve "$url" "$schema" "$port" "$work/serve.log"
server_pid=$HTTP_LOAD_PID
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status"; }
http_load_deposits_lua "$port" "$accounts" "$work/deposits.lua" "$delay_ms"

echo "== soak: $slices slices of ${slice}s, $connections connections, ${delay_ms} ms between requests per connection" >&2
echo "start RSS: $(( $(rss_kib) / 1024 )) MiB"
printf '%-6s %10s %9s %9s %8s %8s %9s\n' slice "req/s" "p50 ms" "p99 ms" non-2xx "sock err" "RSS MiB"
failed=0
declare -a rss
for n in $(seq 1 "$slices"); do
  wrk -t2 -c"$connections" -d"${slice}s" --timeout 10s -s "$work/deposits.lua" "http://127.0.0.1:$port" > "$work/wrk-$n.txt"
  kill -0 "$server_pid" 2>/dev/null || { echo "soak: eslab serve died during slice $n" >&2; tail -n 30 "$work/serve.log" >&2; exit 1; }
  requests=$(http_load_field "$work/wrk-$n.txt" requests)
  status=$(http_load_field "$work/wrk-$n.txt" errors_status)
  socket=$(( $(http_load_field "$work/wrk-$n.txt" errors_connect) + $(http_load_field "$work/wrk-$n.txt" errors_read) \
    + $(http_load_field "$work/wrk-$n.txt" errors_write) + $(http_load_field "$work/wrk-$n.txt" errors_timeout) ))
  rss[$n]=$(rss_kib)
  printf '%-6s %10.1f %9s %9s %8s %8s %9.1f\n' "$n" "$(awk -v r="$requests" -v s="$slice" 'BEGIN { print r / s }')" \
    "$(http_load_field "$work/wrk-$n.txt" p50_ms)" "$(http_load_field "$work/wrk-$n.txt" p99_ms)" "$status" "$socket" \
    "$(awk -v k="${rss[$n]}" 'BEGIN { print k / 1024 }')"
  [ "$status" -eq 0 ] && [ "$socket" -eq 0 ] && [ "$requests" -gt 0 ] || failed=1
done

# After warm-up: the 2nd slice when there are 3 or more, else the 1st.
base=$(( slices >= 3 ? 2 : 1 ))
growth_kib=$(( rss[slices] - rss[base] ))
echo "RSS growth from the end of slice $base to the end of slice $slices: $(awk -v k="$growth_kib" 'BEGIN { printf "%.1f", k / 1024 }') MiB (bound ${max_growth_mb} MiB)"
echo "machine: $(nproc) vCPU, load average $(cut -d' ' -f1-3 /proc/loadavg), $(psql -tA "$url" -c 'show server_version')"
if [ "$failed" -ne 0 ]; then
  echo "soak: FAILED: some requests failed (non-2xx or socket errors); the server's log:" >&2
  tail -n 30 "$work/serve.log" >&2
  exit 1
fi
if [ "$growth_kib" -gt $(( max_growth_mb * 1024 )) ]; then
  echo "soak: FAILED: resident memory grew by more than ${max_growth_mb} MiB" >&2
  exit 1
fi
echo "soak: ok"
