# Shared by scripts/bench-http.sh and scripts/soak.sh (source it): wrk, a
# release `eslab serve` on PostgreSQL, and the wrk script that deposits
# round-robin over freshly opened accounts.

# http_load_postgres_url: DATABASE_URL when it is a PostgreSQL URL, else the local cluster.
http_load_postgres_url() {
  local url="${DATABASE_URL:-}"
  case "$url" in postgres://*|postgresql://*) echo "$url" ;; *) echo "postgres://postgres@127.0.0.1:5432/postgres" ;; esac
}

# http_load_free_port: a TCP port free on 127.0.0.1 now (the caller binds it soon after).
http_load_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# http_load_scratch URL SCHEMA...: sets `work` (a new temporary directory) and
# `server_pid` (empty), and an EXIT trap that stops the process in
# `server_pid` (once set), drops each SCHEMA on PostgreSQL URL and removes
# `work`. URL may be empty when there is no schema.
http_load_scratch() {
  HTTP_LOAD_CLEAN_URL="$1"
  shift
  HTTP_LOAD_CLEAN_SCHEMAS="$*"
  work="$(mktemp -d)"
  server_pid=""
  trap http_load_cleanup EXIT
}

http_load_cleanup() {
  if [ -n "${server_pid:-}" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  local schema
  for schema in $HTTP_LOAD_CLEAN_SCHEMAS; do
    psql -q "$HTTP_LOAD_CLEAN_URL" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}

# Installs wrk from Debian if it is missing.
http_load_ensure_wrk() {
  command -v wrk >/dev/null 2>&1 && return 0
  echo "installing wrk (Debian package)" >&2
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y wrk >/dev/null; else sudo apt-get install -y wrk >/dev/null; fi
}

# http_load_start_serve URL SCHEMA PORT LOG: starts `eslab serve` (ESLAB_BIN,
# default $CARGO_TARGET_DIR/release/eslab, else ./target/release/eslab) on PostgreSQL URL in SCHEMA, listening on
# PORT, logging to LOG; sets HTTP_LOAD_PID and waits until it answers (fails
# with its log if it does not).
http_load_start_serve() {
  local url="$1" schema="$2" port="$3" log="$4"
  DATABASE_URL="$url" ESLAB_SCHEMA="$schema" ESLAB_BIND="127.0.0.1:$port" RUST_LOG=warn \
    "${ESLAB_BIN:-${CARGO_TARGET_DIR:-./target}/release/eslab}" serve > "$log" 2>&1 &
  HTTP_LOAD_PID=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  curl -fs "http://127.0.0.1:$port/health" >/dev/null || { cat "$log" >&2; return 1; }
}

# http_load_deposits_lua PORT ACCOUNTS FILE [DELAY_MS]: opens ACCOUNTS
# accounts and writes to FILE a wrk script that deposits 100 EUR round-robin
# over them (each connection waiting DELAY_MS between requests, default 0) and
# prints one line `RESULT requests=… errors_status=… errors_connect=…
# errors_read=… errors_write=… errors_timeout=… p50_ms=… p99_ms=…` at the end.
http_load_deposits_lua() {
  local port="$1" accounts="$2" file="$3" delay_ms="${4:-0}"
  {
    echo "ids = {"
    for _ in $(seq 1 "$accounts"); do
      id=$(curl -fs -X POST "http://127.0.0.1:$port/accounts" -H 'Content-Type: application/json' \
        -d '{"owner":"bench","currency":"EUR"}' | sed -E 's/.*"id":"([^"]+)".*/\1/')
      echo "  \"$id\","
    done
    echo "}"
    echo "delay_ms = $delay_ms"
    cat <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  local id = ids[(counter % #ids) + 1]
  return wrk.format("POST", "/accounts/" .. id .. "/deposits", {["Content-Type"] = "application/json"},
    '{"amount": 100, "currency": "EUR"}')
end
if delay_ms > 0 then
  delay = function()
    return delay_ms
  end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d errors_status=%d errors_connect=%d errors_read=%d errors_write=%d errors_timeout=%d p50_ms=%.2f p99_ms=%.2f\n",
    summary.requests, summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA
  } > "$file"
}

# http_load_field FILE NAME: the value of NAME=… on the RESULT line of wrk's output FILE.
http_load_field() {
  grep '^RESULT' "$1" | sed -E "s/.*[ ]$2=([0-9.]+).*/\1/"
}

# http_load_cpu_ticks PID...: the CPU time (user + system, clock ticks) the
# processes PID... have used so far; a PID that is gone counts 0.
http_load_cpu_ticks() {
  local total=0 pid fields
  for pid in "$@"; do
    # Fields 14 and 15 of /proc/PID/stat (after the parenthesized command name).
    fields=$(sed -E 's/^.*\) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }') || fields=0
    total=$((total + ${fields:-0}))
  done
  echo "$total"
}

# http_load_postgres_snapshot FILE: writes `pid ticks` for every process
# named `postgres` (the server's backends and background processes) to FILE,
# and `children ticks`: what the postmaster's ended children used (cutime +
# cstime), where a backend's time goes when its connection closes.
http_load_postgres_snapshot() {
  local pid postmaster
  postmaster=$(pgrep -o -x postgres)
  {
    for pid in $(pgrep -x postgres); do
      echo "$pid $(http_load_cpu_ticks "$pid")"
    done
    echo "children $(sed -E 's/^.*\) //' "/proc/$postmaster/stat" 2>/dev/null | awk '{ print $14 + $15 }')"
  } > "$1"
}

# http_load_postgres_ticks_since FILE: the CPU ticks PostgreSQL's processes
# used since the snapshot FILE was taken: what each live process used since
# (all of it if it started since), plus what the processes that ended since
# used after the snapshot (their time moved to the postmaster's children).
http_load_postgres_ticks_since() {
  local now
  now="$(mktemp)"
  http_load_postgres_snapshot "$now"
  awk 'NR == FNR { before[$1] = $2; next }
       { seen[$1] = 1; total += $2 - (($1 in before) ? before[$1] : 0) }
       END { for (p in before) if (!(p in seen)) total -= before[p]; print total + 0 }' "$1" "$now"
  rm -f "$now"
}

# http_load_machine_ticks: `busy total` CPU ticks of the whole machine so far
# (all cores; busy = everything but idle and iowait), from /proc/stat.
http_load_machine_ticks() {
  awk '/^cpu / { total = 0; for (i = 2; i <= NF; i++) total += $i; print total - $5 - $6, total }' /proc/stat
}
