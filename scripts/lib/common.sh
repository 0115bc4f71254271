# Shared by the scripts in scripts/: versions, cache locations, logging.
KAFKA_VERSION="${KAFKA_VERSION:-3.9.1}"
HELM_VERSION="${HELM_VERSION:-v3.16.4}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE_DIR="${OUTBOX_RELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/outbox-relay}"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }
kafka_home() { echo "$CACHE_DIR/kafka-$KAFKA_VERSION"; }
tools_bin() { echo "$CACHE_DIR/bin"; }
