#!/usr/bin/env bash
# make bench-append-instructions: the server instructions each of the store's
# one-event append statements costs, beside the lab's raw baseline INSERT,
# counted by valgrind (callgrind): repeatable whatever else the machine is
# doing, unlike a rate on a shared 2-vCPU machine. The statements come from the
# store itself (example append_statements), so this measures what ships.
#
# A scratch PostgreSQL cluster (initdb in a temporary directory, fsync off,
# the store's migrations) runs each statement as a prepared statement with a
# generic plan (as the store's pool does) in single-user mode under callgrind,
# N1 and N2 times on one stream; the difference divided by N2 - N1 is the
# instructions per append (start-up and set-up cancel out). Single-user mode
# has no client protocol: the figures are the executor's, planner's and
# commit's share, and the EXECUTE's own parsing of its literal parameters
# (more parameters, more parsing), not the network and wait time a real
# server spends per statement.
#
# Environment: PGBIN (PostgreSQL's bin directory; default the newest under
# /usr/lib/postgresql), N1 (default 100), N2 (default 600).
set -euo pipefail
cd "$(dirname "$0")/.."

pgbin="${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
[ -x "$pgbin/postgres" ] || { echo "bench-append-instructions: no PostgreSQL server binaries (set PGBIN)" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "bench-append-instructions: valgrind not found (apt-get install valgrind)" >&2; exit 1; }
n1="${N1:-100}"
n2="${N2:-600}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# initdb and postgres refuse to run as root: run them as the postgres user then.
as_pg=()
if [ "$(id -u)" = 0 ]; then
  as_pg=(runuser -u postgres --)
  chown postgres "$work"
fi

cargo run -q -p eslab-postgres --example append_statements > "$work/statements.json"

"${as_pg[@]}" "$pgbin/initdb" -D "$work/data" -A trust -U postgres > "$work/initdb.log" 2>&1 \
  || { cat "$work/initdb.log" >&2; exit 1; }
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -w -l "$work/server.log" \
  -o "-c listen_addresses='' -k $work -c fsync=off" start > /dev/null
cat crates/eslab-postgres/migrations/*.sql | psql -q -v ON_ERROR_STOP=1 -h "$work" -U postgres postgres > /dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -w stop > /dev/null

# The input of one single-user session (-j: a statement ends at ';' and an empty line).
python3 - "$work" "$n1" "$n2" <<'PY'
import json, sys, uuid
work, counts = sys.argv[1], [int(n) for n in sys.argv[2:]]
spec = json.load(open(f"{work}/statements.json"))
payload = '{"amount": 100, "n": 1}'
meta = '{"recorded_at": "2026-12-03T10:00:00.123456Z", "recorded_by": "bench"}'
cols = "stream_id, category, stream_version, event_id, event_type, schema_version, payload, metadata"
# The raw INSERT, and the same returning what every append returns (position, transaction, time).
returning = spec["raw"] + " RETURNING global_position, transaction_id::text, recorded_at"
variants = [("raw INSERT (baseline)", None, spec["raw"]), ("raw INSERT .. RETURNING", None, returning)] + [(s["name"], s["kind"], s["sql"]) for s in spec["statements"]]
names = []
for i, (name, kind, sql) in enumerate(variants):
    names.append(name)
    for n in counts:
        stream, ids = f"s{i}-{n}", (uuid.UUID(int=(i << 64) + (n << 32) + k) for k in range(n + 1))
        out = ["SET plan_cache_mode = force_generic_plan;"]
        if kind is None:
            # Seven unused parameters of the appends' types, so that the EXECUTE parses as many literals as theirs.
            out.append("PREPARE q(text, bigint, uuid, jsonb, jsonb, int, bigint, bigint, text, bigint, text, bool) AS "
                       + sql + ";")
            out += [f"EXECUTE q('{stream}', {v}, '{next(ids)}', '{payload}', '{meta}', 3, 1, 1, 'bench', 1, 'Deposited', false);"
                    for v in range(1, n + 1)]
        else:
            # The stream exists at version 1 (its row and its first event), as an Exact(v) caller finds it.
            out.append(f"INSERT INTO streams VALUES ('{stream}', 1);")
            out.append(f"INSERT INTO events ({cols}) VALUES ('{stream}', 'bench', 1, '{next(ids)}', 'Opened', 1, '{{}}', '{{}}');")
            out.append(f"PREPARE q({', '.join(spec['params'])}) AS {sql};")
            out += [f"EXECUTE q('{stream}', {kind}, {v}, 1, 'bench', 1, '{next(ids)}', 'Deposited', 1, '{payload}', '{meta}', false);"
                    for v in range(1, n + 1)]
        open(f"{work}/in-{i}-{n}.sql", "w").write("\n\n".join(out) + "\n\n")
open(f"{work}/names.txt", "w").write("\n".join(names) + "\n")
PY

# Instructions of one single-user session.
count() {
  "${as_pg[@]}" valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    "$pgbin/postgres" --single -j -D "$work/data" -c fsync=off postgres < "$1" > "$work/session.txt" 2> "$work/valgrind.txt" \
    || { cat "$work/valgrind.txt" >&2; exit 1; }
  if grep -q ERROR "$work/session.txt"; then grep -m 3 ERROR "$work/session.txt" >&2; exit 1; fi
  grep -o 'Collected : [0-9]*' "$work/valgrind.txt" | awk '{ print $3 }'
}

echo "machine: $(nproc) vCPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $("$pgbin/postgres" --version)"
echo "server instructions per one-event append (callgrind, single-user, generic plans; sessions of $n1 and $n2 appends):"
i=0
raw=""
while IFS= read -r name; do
  a=$(count "$work/in-$i-$n1.sql")
  b=$(count "$work/in-$i-$n2.sql")
  per=$(( (b - a) / (n2 - n1) ))
  raw="${raw:-$per}"
  awk -v n="$name" -v p="$per" -v r="$raw" 'BEGIN { printf "  %-26s %8d  %.2f× raw\n", n, p, p / r }'
  i=$((i + 1))
done < "$work/names.txt"
