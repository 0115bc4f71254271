# Shared by the scripts in scripts/: versions, cache locations, logging.
KAFKA_VERSION="${KAFKA_VERSION:-3.9.1}"
HELM_VERSION="${HELM_VERSION:-v3.16.4}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE_DIR="${OUTBOX_RELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/outbox-relay}"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }
kafka_home() { echo "$CACHE_DIR/kafka-$KAFKA_VERSION"; }
tools_bin() { echo "$CACHE_DIR/bin"; }

# Daemons the scripts start in the background (the demo's relay and sink) write "$STATE/<name>.pid"; they are
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
