#!/usr/bin/env bash
# Makes sure PostgreSQL answers at DATABASE_URL (default: the local cluster),
# starting the machine's installed cluster if it is down. Fails with
# instructions when there is nothing to start.
set -euo pipefail

url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
case "$url" in
  postgres://*|postgresql://*) ;;
  *) url="postgres://postgres@127.0.0.1:5432/postgres" ;;
esac

ready() { pg_isready -q -d "$url" -t 2 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1; then
  echo "ensure-postgres: pg_isready not found; install the PostgreSQL client (apt-get install postgresql-client)" >&2
  echo "ensure-postgres: and make a server reachable at $url (or set DATABASE_URL)" >&2
  exit 1
fi

if ready; then
  exit 0
fi

echo "ensure-postgres: PostgreSQL does not answer at $url; trying to start the local cluster" >&2
if command -v pg_lsclusters >/dev/null 2>&1; then
  while read -r version cluster _; do
    [ -n "$version" ] || continue
    pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start >/dev/null 2>&1 || true
  done < <(pg_lsclusters --no-header 2>/dev/null)
  for _ in $(seq 1 30); do
    if ready; then
      echo "ensure-postgres: started" >&2
      exit 0
    fi
    sleep 1
  done
fi

cat >&2 <<MSG
ensure-postgres: PostgreSQL is not reachable at $url and no local cluster could be started.
  Start one, e.g.:  pg_ctlcluster 15 main start      (Debian/Ubuntu cluster)
               or:  docker compose -f deployments/docker-compose.yml up -d postgres
  or point DATABASE_URL at a running server:  DATABASE_URL=postgres://user@host:5432/db make test
MSG
exit 1
