#!/usr/bin/env bash
# make schemathesis: property-based tests of the HTTP API from its own OpenAPI
# document. Starts `eslab serve` on a fresh SQLite file on a free port, runs
# schemathesis (from PyPI, in a venv under ~/.cache/eslab, not in the repo)
# against /openapi.json with the checks not_a_server_error (no 5xx) and
# response_schema_conformance (every documented response matches its schema),
# then stops the server. Exits non-zero on any failure. GET /events/stream is
# left out: a stream of Server-Sent Events never ends (tests/api_test.http and
# the console's tests cover it).
#
# Environment: ST_MAX_EXAMPLES (per operation and phase, default 50), ST_SEED
# (default fixed, so CI runs are reproducible; set ST_SEED=random to vary),
# ESLAB_BIN (default: target/debug/eslab, built here), SCHEMATHESIS_VENV.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${SCHEMATHESIS_VENV:-$HOME/.cache/eslab/venv-schemathesis}"
max_examples="${ST_MAX_EXAMPLES:-50}"
seed="${ST_SEED:-9}"
source scripts/lib/http-load.sh
http_load_scratch ""

if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "schemathesis: installing it into $venv (once)" >&2
  python3 -m venv "$venv" || { echo "schemathesis: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
  "$venv/bin/pip" install -q schemathesis
fi

bin="${ESLAB_BIN:-}"
if [ -z "$bin" ]; then
  cargo build -q -p eslab
  bin=target/debug/eslab
fi

port=$(http_load_free_port)
base="http://127.0.0.1:$port"
DATABASE_URL="sqlite://$work/eslab.db" ESLAB_BIND="127.0.0.1:$port" RUST_LOG=warn \
  "$bin" serve > "$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fs "$base/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "$base/health" >/dev/null || { echo "schemathesis: eslab serve did not start" >&2; cat "$work/serve.log" >&2; exit 1; }

seed_args=()
[ "$seed" = random ] || seed_args=(--seed "$seed")
status=0
# From the temporary directory: its example database (.schemathesis/) is not left in the checkout.
(cd "$work" && "$venv/bin/schemathesis" --no-color run "$base/openapi.json" \
  --checks not_a_server_error,response_schema_conformance \
  --exclude-path /events/stream \
  --max-examples "$max_examples" "${seed_args[@]}" \
  --request-timeout 15 --workers 2) \
  || status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis: failures (exit $status); the server's log:" >&2
  tail -n 50 "$work/serve.log" >&2
fi
exit "$status"
