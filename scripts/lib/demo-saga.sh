#!/usr/bin/env bash
# scripts/demo saga: the sagas and CQRS example (examples/saga) on the dev stack. Three databases in the stack's
# PostgreSQL (saga_order, saga_customer, saga_view), the Order and Customer services' relays, their sinks (the
# services' message handlers, the orchestrator) and the CQRS view's sink. It registers customers, places orders in
# both saga styles (choreography and orchestration), shows one approved and one rejected (credit limit exceeded)
# in each, cancels the approved ones (the compensation: the credit is released; in orchestration a CancelOrder
# saga instance reaches COMPLETED), and checks the CQRS view against the services' own tables.
# Safe to run again: the daemons of an earlier run are stopped, their slots dropped, the three databases and the
# saga.* topics deleted and created anew, so every run starts from nothing and shows the same outcome.
#   OUTBOX_BUILD_DIR   build directory (default: build)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"   # scripts/
source "$here/lib/common.sh"
cd "$REPO_ROOT"

build_dir="${OUTBOX_BUILD_DIR:-build}"
user_state="${DEVSTACK_STATE:-}"
bound=60   # seconds any one condition below may take (generous: the machine may be busy)

"$here/setup"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$build_dir" outbox-relay outbox-sink
"$here/devstack" up
eval "$("$here/devstack" env)"

state="$DEVSTACK_STATE"
work="$state/saga"          # configs and logs; the pid files are in $state, where scripts/devstack down finds them
mkdir -p "$work"
relay_bin="$REPO_ROOT/$build_dir/bin/outbox-relay"
sink_bin="$REPO_ROOT/$build_dir/bin/outbox-sink"
daemons="order-relay customer-relay order-sink customer-sink view-sink"
pid_file() { echo "$state/saga-$1.pid"; }
log_file() { echo "$work/$1.log"; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# --- A clean start ------------------------------------------------------------------------------------------------
# The daemons of an earlier run hold the slots, the databases and the metrics ports: stop them first.
for d in $daemons; do stop_daemon "$(pid_file "$d")" "the saga demo's $d of an earlier run"; done

base="${PGURL%/postgres}"
[ "$base" != "$PGURL" ] || die "PGURL does not end in /postgres: $PGURL"
export ORDER_DB_URL="$base/saga_order" CUSTOMER_DB_URL="$base/saga_customer" VIEW_DB_URL="$base/saga_view"
export KAFKA_BOOTSTRAP
q() { psql "$1" -XAtq -v ON_ERROR_STOP=1 -c "$2"; }   # q URL SQL: the result, unaligned

# A database with a logical slot cannot be dropped: drop the relays' slots first (a walsender of a relay stopped
# a moment ago may still hold its slot briefly).
for slot in saga_order_relay saga_customer_relay; do
  holder=""
  for _ in $(seq 1 $((bound * 5))); do
    holder="$(q "$PGURL" "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '$slot' AND active")"
    [ -z "$holder" ] && break
    sleep 0.2
  done
  [ -z "$holder" ] || die "replication slot $slot is in use by server process $holder (a relay this demo did not start?): stop that relay, then run again"
  q "$PGURL" "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$slot'" >/dev/null
done
# A relay that finds its slot gone while its checkpoint in Kafka says it streamed from it stops (the slot was lost,
# events may be missing). Here the slot is dropped on purpose, with its database: delete the checkpoints (a
# tombstone per key, README "The checkpoint"). Only into a progress topic that exists: producing would create it
# without cleanup.policy=compact, which the relays refuse.
if kcat -b "$KAFKA_BOOTSTRAP" -L 2>/dev/null | grep -q '^  topic "outbox-relay.progress" '; then
  printf 'outbox-relay.saga_order.saga_order_relay|\noutbox-relay.saga_customer.saga_customer_relay|\n' |
    kcat -b "$KAFKA_BOOTSTRAP" -P -t outbox-relay.progress -p 0 -K '|' -Z \
    || die "could not delete the saga relays' checkpoints in Kafka topic outbox-relay.progress"
  log "deleted the saga relays' checkpoints (tombstones in outbox-relay.progress): their slots go with the databases"
fi
for db in saga_order saga_customer saga_view; do
  psql "$PGURL" -XAtq -v ON_ERROR_STOP=1 -c 'SET client_min_messages = warning' -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  q "$PGURL" "CREATE DATABASE $db"
done
psql "$ORDER_DB_URL" -Xq -v ON_ERROR_STOP=1 -f examples/saga/order-service.sql
psql "$CUSTOMER_DB_URL" -Xq -v ON_ERROR_STOP=1 -f examples/saga/customer-service.sql
# The read model's first version lives in schema view_v1; the query side reads the public views over it, so that a
# rebuild (view_v2) can be switched to by re-creating the views, without the readers noticing.
q "$VIEW_DB_URL" "CREATE SCHEMA view_v1"
PGOPTIONS='-c search_path=view_v1' psql "$VIEW_DB_URL" -Xq -v ON_ERROR_STOP=1 -f examples/saga/view.sql
psql "$VIEW_DB_URL" -Xq -v ON_ERROR_STOP=1 <<'SQL'
CREATE VIEW public.customers_view AS SELECT * FROM view_v1.customers_view;
CREATE VIEW public.orders_view AS SELECT * FROM view_v1.orders_view;
SQL
log "databases saga_order, saga_customer, saga_view created (examples/saga/*.sql; the view in schema view_v1)"

# The sinks start from the beginning of topics their (new) databases hold no offsets for: the topics of an earlier
# run would replay its orders into this one. So the saga.* topics go too, and are created before anything
# subscribes to them (a consumer learns of a topic created later only at its next metadata refresh).
log "deleting the saga.* topics and creating them anew (scripts/lib/KafkaTopics.java)"
# (Kafka 3.x's log4j 1 warns that it has no configuration: not worth showing.)
if ! out="$(java -cp "$(kafka_home)/libs/*" "$here/lib/KafkaTopics.java" "$KAFKA_BOOTSTRAP" saga. \
  saga-order-service,saga-customer-service,saga-view,saga-view-v2 \
  saga.order.events,saga.customer.events,saga.customer.commands,saga.order.replies 2>&1)"; then
  printf '%s\n' "$out" >&2
  die "could not reset the saga.* topics in Kafka ($KAFKA_BOOTSTRAP)"
fi
printf '%s\n' "$out" | grep -v '^log4j:WARN' >&2 || true

# --- The daemons --------------------------------------------------------------------------------------------------
# The example configs as they are, but for the metrics ports, which may be taken on this machine.
declare -A port
config_for() {  # config_for NAME DEFAULT_PORT: $work/NAME.toml from examples/saga/NAME.toml
  local name=$1 default=$2 p
  p=$(free_port_like "$default")
  sed "s/^listen = \"127.0.0.1:$default\"/listen = \"127.0.0.1:$p\"/" "examples/saga/$name.toml" >"$work/$name.toml"
  grep -q "^listen = \"127.0.0.1:$p\"" "$work/$name.toml" || die "could not set the metrics port in $work/$name.toml"
  port[$name]=$p
}
config_for order-relay 9191
config_for customer-relay 9192
config_for order-sink 9193
config_for customer-sink 9194
config_for view-sink 9195
for r in order-relay customer-relay; do
  "$relay_bin" --check-config "$work/$r.toml" >/dev/null || die "$work/$r.toml (examples/saga/$r.toml) does not check: above"
done
for s in order-sink customer-sink view-sink; do
  "$sink_bin" --check-config "$work/$s.toml" >/dev/null || die "$work/$s.toml (examples/saga/$s.toml) does not check: above"
done

start() {  # start NAME BINARY
  log "starting $1 (log: $(log_file "$1"))"
  setsid nohup "$2" --config "$work/$1.toml" >"$(log_file "$1")" 2>&1 </dev/null &
  echo $! >"$(pid_file "$1")"
}
# Every wait checks that the daemons still run: one that exited fails the demo at once, with its log.
check_daemons() {
  local d
  for d in $daemons; do
    [ -f "$(pid_file "$d")" ] || continue
    alive "$(cat "$(pid_file "$d")")" && continue
    tail -n 30 "$(log_file "$d")" >&2
    die "$d exited; its log is above and in $(log_file "$d")"
  done
}
show_logs() {
  local d
  for d in $daemons; do
    [ -f "$(log_file "$d")" ] || continue
    echo "--- last lines of $(log_file "$d")" >&2
    tail -n 12 "$(log_file "$d")" >&2
  done
}
poll() {  # poll COMMAND...: 0 once COMMAND succeeds, 1 after $bound s; a daemon that exits fails the demo at once
  local deadline=$((SECONDS + bound))
  while true; do
    check_daemons
    "$@" && return 0
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
wait_until() {  # wait_until WHAT COMMAND...
  local what=$1
  shift
  poll "$@" || { show_logs; die "$what: not reached within $bound s (the daemons' logs are above)"; }
}
got=""
equals() {  # equals URL SQL EXPECTED: the query's result is EXPECTED (the last result is kept in $got)
  got="$(q "$1" "$2" 2>&1)" || return 1
  [ "$got" = "$3" ]
}
wait_value() {  # wait_value WHAT URL SQL EXPECTED
  local what=$1
  shift
  poll equals "$@" || { show_logs; die "$what: not reached within $bound s: expected '$3', last saw '$got' (logs above)"; }
}
slot_streaming() {
  [ "$(q "$PGURL" "SELECT active FROM pg_replication_slots WHERE slot_name = '$1' AND confirmed_flush_lsn IS NOT NULL")" = t ]
}
ready() { curl -fsS "http://127.0.0.1:${port[$1]}/readyz" >/dev/null 2>&1; }

# Events are captured from the moment a relay's slot exists: wait until both stream from theirs.
start order-relay "$relay_bin"
start customer-relay "$relay_bin"
wait_until "the order relay streaming from slot saga_order_relay" slot_streaming saga_order_relay
wait_until "the customer relay streaming from slot saga_customer_relay" slot_streaming saga_customer_relay
wait_until "the order relay ready" ready order-relay
wait_until "the customer relay ready" ready customer-relay
log "both relays stream (slots saga_order_relay, saga_customer_relay)"
# The sinks create their own tables (offsets, de-duplication) and prepare every projection's statements at start.
start order-sink "$sink_bin"
start customer-sink "$sink_bin"
start view-sink "$sink_bin"
for s in order-sink customer-sink view-sink; do wait_until "$s ready" ready "$s"; done
log "the three sinks run (groups saga-order-service, saga-customer-service, saga-view)"

# --- What to look at ----------------------------------------------------------------------------------------------
step=0
heading() { step=$((step + 1)); printf '\n======== %s. %s ========\n' "$step" "$1"; }
note() { printf '%s\n' "$@" | sed 's/^/  /'; }
# show DB_VAR SQL: print the query as the reader would type it, then its result
show() {
  local var=$1 sql=$2
  printf '  $ psql "$%s" -c "%s"\n' "$var" "$sql"
  psql "${!var}" -X -P footer=off -c "$sql" | sed -e '/^$/d' -e 's/^/    /'
}
# The records of TOPICS that mention ID (in the key or the value), in the order they were written.
records() {  # records ID TOPIC...
  local id=$1 t
  shift
  for t in "$@"; do
    timeout 30 kcat -b "$KAFKA_BOOTSTRAP" -C -t "$t" -e -q -f '%T\t%t\t%p\t%o\t%k\t%h\t%s\n' 2>/dev/null || true
  done | awk -F'\t' -v id="$id" 'index($5, id) || index($7, "\"" id "\"")' | sort -s -n -k1,1
}
count_records() { [ "$(records "$1" "${@:3}" | wc -l)" -ge "$2" ]; }   # count_records ID N TOPIC...
show_records() {  # show_records ID N TOPIC...: wait for N of them, then print them
  local id=$1 n=$2
  shift 2
  wait_until "$n Kafka records about $id in $*" count_records "$id" "$n" "$@"
  printf '  $ kcat -b $KAFKA_BOOTSTRAP -C -t TOPIC -e -f %s   (records about %s)\n' "'%t %k %h %s\n'" "$id"
  records "$id" "$@" | awk -F'\t' '{
    printf "    %s  partition %s  offset %s  key %s\n      headers: %s\n      value:   %s\n", $2, $3, $4, $5, $6, $7 }'
}
order_topics="saga.order.events saga.customer.events saga.customer.commands saga.order.replies"

cat <<EOF

The three databases (psql needs these to follow along):
  export ORDER_DB_URL='$ORDER_DB_URL' CUSTOMER_DB_URL='$CUSTOMER_DB_URL' VIEW_DB_URL='$VIEW_DB_URL'
  export KAFKA_BOOTSTRAP='$KAFKA_BOOTSTRAP'
EOF

heading "Customers: the Customer service registers Alice (credit limit 1000) and Bob (credit limit 500)"
q "$CUSTOMER_DB_URL" "SELECT create_customer('c-alice', 'Alice', 1000); SELECT create_customer('c-bob', 'Bob', 500)" >/dev/null
show CUSTOMER_DB_URL "SELECT id, name, credit_limit, credit_reserved FROM customers ORDER BY id"
wait_value "the CQRS view showing both customers" "$VIEW_DB_URL" "SELECT count(*) FROM customers_view" 2
note "CustomerCreated reached the CQRS view (its sink reads saga.customer.events):"
show VIEW_DB_URL "SELECT * FROM customers_view ORDER BY customer_id"

heading "Choreography: Alice orders for 400 (o-101) -> APPROVED"
note "place_order writes the order (PENDING) and OrderCreated into the outbox in one transaction. The Customer" \
     "service reacts to OrderCreated (customer-sink.toml): it reserves the credit and publishes CreditReserved;" \
     "the Order service reacts to that (order-sink.toml) and approves the order. No one coordinates."
q "$ORDER_DB_URL" "SELECT place_order('o-101', 'c-alice', 400, 'choreography')" >/dev/null
wait_value "order o-101 approved" "$ORDER_DB_URL" "SELECT status FROM orders WHERE id = 'o-101'" APPROVED
show ORDER_DB_URL "SELECT id, customer_id, total, saga, status, reason FROM orders WHERE id = 'o-101'"
show CUSTOMER_DB_URL "SELECT order_id, customer_id, amount, state FROM credit_reservations WHERE order_id = 'o-101'"
show CUSTOMER_DB_URL "SELECT id, credit_limit, credit_reserved FROM customers WHERE id = 'c-alice'"
note "The messages: each reaction's causation_id header is the id header of the event that caused it."
show_records o-101 3 $order_topics

heading "Choreography: Bob orders for 800 (o-102) -> REJECTED, credit limit exceeded"
q "$ORDER_DB_URL" "SELECT place_order('o-102', 'c-bob', 800, 'choreography')" >/dev/null
wait_value "order o-102 rejected" "$ORDER_DB_URL" "SELECT status FROM orders WHERE id = 'o-102'" REJECTED
show ORDER_DB_URL "SELECT id, customer_id, total, saga, status, reason FROM orders WHERE id = 'o-102'"
show CUSTOMER_DB_URL "SELECT order_id, customer_id, amount, state FROM credit_reservations WHERE order_id = 'o-102'"
show CUSTOMER_DB_URL "SELECT id, credit_limit, credit_reserved FROM customers WHERE id = 'c-bob'"
show_records o-102 3 $order_topics

heading "Orchestration: Alice orders for 300 (o-201) -> APPROVED"
note "place_order also starts a CreateOrder saga instance (the orchestrator's state, in the Order service's" \
     "database) and sends the ReserveCredit command (table saga_messages -> saga.customer.commands) with" \
     "reply_to = order.replies; the Customer service answers on saga.order.replies, and the orchestrator" \
     "(order-sink.toml) moves the saga instance and the order on that reply."
q "$ORDER_DB_URL" "SELECT place_order('o-201', 'c-alice', 300, 'orchestration')" >/dev/null
wait_value "saga o-201:create approved" "$ORDER_DB_URL" "SELECT state FROM saga_instances WHERE id = 'o-201:create'" APPROVED
wait_value "order o-201 approved" "$ORDER_DB_URL" "SELECT status FROM orders WHERE id = 'o-201'" APPROVED
show ORDER_DB_URL "SELECT id, saga_type, order_id, state, last_message_id FROM saga_instances WHERE order_id = 'o-201'"
show ORDER_DB_URL "SELECT id, customer_id, total, saga, status FROM orders WHERE id = 'o-201'"
show CUSTOMER_DB_URL "SELECT id, credit_limit, credit_reserved FROM customers WHERE id = 'c-alice'"
note "The command carries saga_id and reply_to; the reply carries the saga_id back and, as causation_id, the" \
     "command's id."
show_records o-201 5 $order_topics

heading "Orchestration: Alice orders for 500 (o-202) -> REJECTED (700 reserved of 1000 already)"
q "$ORDER_DB_URL" "SELECT place_order('o-202', 'c-alice', 500, 'orchestration')" >/dev/null
wait_value "saga o-202:create rejected" "$ORDER_DB_URL" "SELECT state FROM saga_instances WHERE id = 'o-202:create'" REJECTED
wait_value "order o-202 rejected" "$ORDER_DB_URL" "SELECT status FROM orders WHERE id = 'o-202'" REJECTED
show ORDER_DB_URL "SELECT id, saga_type, order_id, state FROM saga_instances WHERE order_id = 'o-202'"
show ORDER_DB_URL "SELECT id, customer_id, total, saga, status, reason FROM orders WHERE id = 'o-202'"
show CUSTOMER_DB_URL "SELECT order_id, customer_id, amount, state FROM credit_reservations WHERE order_id = 'o-202'"

heading "Compensation, choreography: cancel o-101 -> its credit is released"
note "cancel_order cancels only an APPROVED order (o-102 was rejected: nothing to compensate):"
show ORDER_DB_URL "SELECT cancel_order('o-102')"
note "Cancelling o-101 publishes OrderCancelled; the Customer service releases the credit (CreditReleased)."
show ORDER_DB_URL "SELECT cancel_order('o-101')"
wait_value "o-101's credit released" "$CUSTOMER_DB_URL" "SELECT state FROM credit_reservations WHERE order_id = 'o-101'" RELEASED
show ORDER_DB_URL "SELECT id, status, cancelled_at IS NOT NULL AS cancelled FROM orders WHERE id = 'o-101'"
show CUSTOMER_DB_URL "SELECT order_id, amount, state FROM credit_reservations WHERE order_id = 'o-101'"
show CUSTOMER_DB_URL "SELECT id, credit_limit, credit_reserved FROM customers WHERE id = 'c-alice'"
show_records o-101 5 $order_topics

heading "Compensation, orchestration: cancel o-201 -> a CancelOrder saga releases the credit and COMPLETES"
show ORDER_DB_URL "SELECT cancel_order('o-201')"
wait_value "saga o-201:cancel completed" "$ORDER_DB_URL" "SELECT state FROM saga_instances WHERE id = 'o-201:cancel'" COMPLETED
show ORDER_DB_URL "SELECT id, saga_type, order_id, state FROM saga_instances ORDER BY created_at"
show CUSTOMER_DB_URL "SELECT order_id, customer_id, amount, state FROM credit_reservations ORDER BY order_id"
show CUSTOMER_DB_URL "SELECT id, credit_limit, credit_reserved FROM customers ORDER BY id"
note "The commands and their replies: ReserveCredit -> CreditReserved (saga o-201:create), then" \
     "ReleaseCredit -> CreditReleased (saga o-201:cancel):"
show_records o-201 4 saga.customer.commands saga.order.replies

heading "The CQRS view: one table from both services' events, in its own database"
note "The view sink keeps view_v1.orders_view; the query side reads public.orders_view, a view over it."
# What it must equal: the Order service's orders with the Customer service's names and credit decisions.
expected_view() {
  {
    q "$CUSTOMER_DB_URL" "SELECT 'C', id, name FROM customers"
    q "$CUSTOMER_DB_URL" "SELECT 'R', order_id, state FROM credit_reservations"
    q "$ORDER_DB_URL" "SELECT 'O', id, customer_id, total, saga, status FROM orders"
  } | awk -F'|' -v OFS='|' '$1 == "C" { name[$2] = $3; next }
                            $1 == "R" { credit[$2] = $3; next }
                            { print $2, $3, name[$3], $4, $5, $6, credit[$2] }' | LC_ALL=C sort
}
actual_view() {
  q "$VIEW_DB_URL" "SELECT order_id, customer_id, customer_name, total, saga, status, credit_state FROM orders_view" | LC_ALL=C sort
}
customers_expected() { q "$CUSTOMER_DB_URL" "SELECT id, name, credit_limit FROM customers" | LC_ALL=C sort; }
customers_actual() { q "$VIEW_DB_URL" "SELECT customer_id, name, credit_limit FROM customers_view" | LC_ALL=C sort; }
view_matches() { [ "$(actual_view)" = "$(expected_view)" ] && [ "$(customers_actual)" = "$(customers_expected)" ]; }
if ! poll view_matches; then
  printf 'expected (from saga_order.orders, saga_customer.customers/credit_reservations):\n%s\n%s\n' \
    "$(expected_view)" "$(customers_expected)" >&2
  printf 'the view (orders_view, customers_view):\n%s\n%s\n' "$(actual_view)" "$(customers_actual)" >&2
  show_logs
  die "the CQRS view did not equal the services' tables within $bound s"
fi
show VIEW_DB_URL "SELECT order_id, customer_name, total, saga, status, credit_state FROM orders_view ORDER BY order_id"
show VIEW_DB_URL "SELECT * FROM customers_view ORDER BY customer_id"
note "Checked: orders_view equals saga_order.orders joined with saga_customer.customers (the name) and" \
     "credit_reservations (the state); customers_view equals saga_customer.customers." \
     "To rebuild it: apply view.sql in schema view_v2, run a second view sink (group saga-view-v2, search_path" \
     "and schema view_v2) from the earliest offsets, and when it has caught up re-create the public views over" \
     "view_v2 in one transaction."

heading "Nothing was dead-lettered"
dead=0
for s in order-sink customer-sink view-sink; do
  n="$(curl -fsS "http://127.0.0.1:${port[$s]}/metrics" | awk '/^outbox_sink_events_dead_lettered_total/ { s += $2 } END { print s + 0 }')"
  note "$s: outbox_sink_events_dead_lettered_total $n"
  [ "$n" = 0 ] || dead=1
done
for r in order-relay customer-relay; do
  n="$(curl -fsS "http://127.0.0.1:${port[$r]}/metrics" | awk '/^outbox_relay_events_dead_lettered_total/ { s += $2 } END { print s + 0 }')"
  note "$r: outbox_relay_events_dead_lettered_total $n"
  [ "$n" = 0 ] || dead=1
done
[ "$dead" = 0 ] || { show_logs; die "events were dead-lettered (saga.*.deadletter topics; logs above)"; }

down="scripts/devstack down"
[ -n "$user_state" ] && down="DEVSTACK_STATE=$user_state $down"
pids=""
for d in $daemons; do pids="$pids $(cat "$(pid_file "$d")")"; done
cat <<EOF

The saga demo's daemons keep running in the background (configs and logs in $work):
  order relay     pid $(cat "$(pid_file order-relay)")  http://127.0.0.1:${port[order-relay]}/metrics
  customer relay  pid $(cat "$(pid_file customer-relay)")  http://127.0.0.1:${port[customer-relay]}/metrics
  order sink      pid $(cat "$(pid_file order-sink)")  http://127.0.0.1:${port[order-sink]}/metrics   (choreography handlers, orchestrator)
  customer sink   pid $(cat "$(pid_file customer-sink)")  http://127.0.0.1:${port[customer-sink]}/metrics   (credit decisions)
  view sink       pid $(cat "$(pid_file view-sink)")  http://127.0.0.1:${port[view-sink]}/metrics   (the CQRS view)
Follow along (after the exports above):
  place an order:  psql "\$ORDER_DB_URL" -c "SELECT place_order('o-301', 'c-bob', 200, 'orchestration')"
  cancel it:       psql "\$ORDER_DB_URL" -c "SELECT cancel_order('o-301')"
  the orders:      psql "\$ORDER_DB_URL" -c 'SELECT * FROM orders' -c 'SELECT * FROM saga_instances'
  the credit:      psql "\$CUSTOMER_DB_URL" -c 'SELECT * FROM customers' -c 'SELECT * FROM credit_reservations'
  the view:        psql "\$VIEW_DB_URL" -c 'SELECT * FROM orders_view'
  the messages:    kcat -b \$KAFKA_BOOTSTRAP -C -t saga.order.events -t saga.customer.events \\
                        -t saga.customer.commands -t saga.order.replies -f '%t %k %h %s\n'
Stop everything: $down
                 (stops these daemons and the other demo's with SIGTERM, then PostgreSQL and Kafka, and deletes
                 their data)
Stop just them:  kill$pids
Run again:       scripts/demo saga   (starts over: stops them, re-creates the databases and the saga.* topics)
EOF
