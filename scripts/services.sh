#!/usr/bin/env bash
# The test services: the Kafka-compatible broker (tansu, Apache-2.0) on 127.0.0.1:9092, and a
# 3-server NATS JetStream cluster on 127.0.0.1:14222-14224 (scripts/nats.sh, which see).
#
#   scripts/services.sh start    install tansu if missing, start it unless a broker already answers;
#                                then scripts/nats.sh start (installs nats-server if missing, starts the
#                                cluster unless its ports already answer, waits for a JetStream meta leader)
#   scripts/services.sh stop     stop the broker and the NATS servers these scripts started (and nothing else)
#   scripts/services.sh status
#
# What it started is recorded in target/services/tansu.pid; its log is
# target/services/tansu.log. The broker keeps its data in memory: a restart
# starts empty (tests create their own topics). The NATS servers' pid files, logs
# and JetStream stores (kept across restarts) are under target/services too.
set -euo pipefail
cd "$(dirname "$0")/.."

host=127.0.0.1
port="${KAFKA_PORT:-9092}"
dir=target/services
pidfile="$dir/tansu.pid"
logfile="$dir/tansu.log"

answers() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

tansu_bin() {
  if [ -n "${TANSU:-}" ] && [ -x "$TANSU" ]; then echo "$TANSU"; return 0; fi
  if command -v tansu >/dev/null 2>&1; then command -v tansu; return 0; fi
  if [ -x "$HOME/.cargo/bin/tansu" ]; then echo "$HOME/.cargo/bin/tansu"; return 0; fi
  return 1
}

ours() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q tansu "/proc/$pid/cmdline" 2>/dev/null
}

start() {
  if answers; then
    echo "services: a broker already answers on $host:$port; leaving it alone" >&2
    return 0
  fi
  local bin
  if ! bin="$(tansu_bin)"; then
    echo "services: installing tansu (cargo install tansu --locked --features dynostore,libsql; takes a few minutes)" >&2
    cargo install tansu --locked --features dynostore,libsql >&2
    bin="$(tansu_bin)"
  fi
  mkdir -p "$dir"
  nohup "$bin" broker \
    --listener-url "tcp://$host:$port" \
    --advertised-listener-url "tcp://$host:$port" \
    --storage-engine memory://tansu/ >"$logfile" 2>&1 &
  local pid=$!
  echo "$pid" >"$pidfile"
  # Poll the process itself, not its command line: right after the fork, /proc/<pid>/cmdline
  # still reads "bash scripts/services.sh" until nohup has exec'd the broker.
  for _ in $(seq 1 120); do
    if answers; then
      echo "services: tansu started on $host:$port (pid $pid, log $logfile)" >&2
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "services: tansu (pid $pid) exited before it listened" >&2
      break
    fi
    sleep 0.5
  done
  echo "services: tansu did not come up on $host:$port; see $logfile" >&2
  tail -20 "$logfile" >&2 || true
  return 1
}

stop() {
  if ours; then
    local pid
    pid="$(cat "$pidfile")"
    kill "$pid"
    for _ in $(seq 1 20); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "services: stopped tansu (pid $pid)" >&2
  else
    echo "services: nothing started by this script is running" >&2
  fi
  rm -f "$pidfile"
}

status() {
  if ours; then echo "tansu running (pid $(cat "$pidfile")), started by this script"
  elif answers; then echo "a broker answers on $host:$port (not started by this script)"
  else echo "no broker on $host:$port"; fi
}

case "${1:-start}" in
  start) start; bash scripts/nats.sh start ;;
  stop) stop; bash scripts/nats.sh stop ;;
  status) status; bash scripts/nats.sh status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
