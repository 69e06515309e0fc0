#!/usr/bin/env bash
# test/suites/relay_faults.sh: the outbox relay loses nothing when Kafka or
# the worker fails, and gets out of the way when the server stops.
#
# This suite's own cluster serves relay_faults (and relay_drop, for the drop
# test) and publishes to its own 3-broker mock Kafka cluster (test/kafka),
# topic oms.order-events with 3 partitions, with oms.relay_batch_size = 200,
# oms.relay_ack_timeout = 3s, a breaker that opens after 2 failed batches
# for 1 s, and publish retries backing off from 100 ms to 1 s.  A background
# consumer (test/relay/consume.py, which outlives broker outages; kcat exits
# when every broker is down) reads the topic all along; a test trigger
# (test/relay/capture.sql) keeps every outbox row; test/relay/analyse.py
# checks each scenario's orders (by customer prefix): every event delivered
# by ce_id, no unexpected one, dead-lettered ones not published, duplicates
# within the bound, each order in one partition in ce_omsseq order without
# gaps, headers and values right.
#   a  all brokers down for at least 10 s while clients keep creating and
#      paying orders: oms_relay_status() shows the breaker open during the
#      outage and closed after it; sagas keep being confirmed while down; the
#      same worker all along, no FATAL or PANIC; everything delivered, at most
#      one batch of duplicates (at-least-once, documented in src/relay.c).
#   b  kill -9 of the worker while it publishes a 3,000-event backlog (brokers
#      answering 200 ms late): after the crash restart everything delivered,
#      duplicates at most one batch (oms.relay_batch_size).
#   c  injected produce errors: REQUEST_TIMED_OUT x3 and NOT_LEADER x3 are
#      retried (delivered, no dead letter), also 6 in a row under load;
#      MSG_SIZE_TOO_LARGE dead-letters the event at once (permanent, first
#      attempt), later orders still flow, and oms_retry_dead_letter()
#      publishes it under the same ce_id.
#   d  an event over oms.kafka_max_message_bytes: the API refuses orders
#      that large, so the order (200 kB of metadata) is written while the
#      worker is paused and the limit is lowered to 100 kB before it runs
#      again: its event is dead-lettered as permanent, other orders still
#      flow.
#   e  brokers down and the relay failing: DROP DATABASE of a served
#      database and pg_ctl stop -m fast return within 20 s (measured times
#      are diagnostics); after a restart the pending events are delivered.
# shellcheck disable=SC2317 # functions here are called indirectly (wait loops, exit hooks), which shellcheck 0.9 cannot follow
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"
# shellcheck source=test/kafka/broker.sh
source "$OMS_ROOT/test/kafka/broker.sh"
# shellcheck source=test/relay/lib.sh
source "$OMS_ROOT/test/relay/lib.sh"

DB=relay_faults
DROPDB=relay_drop
TOPIC=oms.order-events
BATCH=200
NSKUS=5
BOUND=20
WORK=""
LOADER_PID=""

cleanup() {
	if [[ -n "$LOADER_PID" ]]; then
		: >"$WORK/a.stop"
		kill "$LOADER_PID" 2>/dev/null || true
		wait "$LOADER_PID" 2>/dev/null || true
	fi
	wt_keep_log relay_faults
	if { ((WT_RC != 0)) || [[ "${WT_KEEP_LOG:-0}" == 1 ]]; } && [[ -n "$WORK" ]]; then
		mkdir -p "$OMS_LOG_DIR/test/relay_faults"
		cp -r "$WORK"/. "$OMS_LOG_DIR/test/relay_faults/" 2>/dev/null || true
	fi
	[[ -z "$WORK" ]] || rm -rf "$WORK"
}

# Main shell, not $(...): the broker lives as long as this script.
oms_kafka_start --brokers 3 --topic "$TOPIC" --partitions 3
wt_start_cluster "oms.database_name = '$DB, $DROPDB'" \
	"oms.kafka_brokers = '$OMS_KAFKA_BOOTSTRAP'" \
	"oms.relay_batch_size = $BATCH" \
	"oms.relay_ack_timeout = '3s'" \
	"oms.relay_breaker_failures = 2" \
	"oms.relay_breaker_cooldown = '1s'" \
	"oms.retry_base = '100ms'" \
	"oms.retry_max = '1s'" \
	"oms.worker_naptime = 200"
oms_on_exit cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oms-relay-faults.XXXXXX")
wt_diag "mock Kafka (3 brokers): $OMS_KAFKA_BOOTSTRAP, topic $TOPIC (3 partitions)"

oms_fresh_db "$DB" >/dev/null
oms_fresh_db "$DROPDB" >/dev/null
rl_install_capture "$DB"
wt_setup_stock "$DB" "$NSKUS" 100000000
wt_setup_stock "$DROPDB" "$NSKUS" 100000000
CONSUMED="$WORK/consumed.json"
rl_consumer_start "$TOPIC" "$CONSUMED"

worker_up() { [[ -n "$(wt_worker_pid "$1")" ]]; }
if ! wt_wait_until 60 worker_up "$DB" || ! wt_wait_until 60 worker_up "$DROPDB"; then
	wt_not_ok "a worker serves $DB and $DROPDB" "$(tail -n 20 "$WT_LOG")"
	exit 1
fi

ITEMS='[{"sku": "SKU-01", "quantity": 1, "unit_price": 250}, {"sku": "SKU-03", "quantity": 2, "unit_price": 120}]'
# Usage: create_orders DB PREFIX COUNT: COUNT orders in one transaction.
create_orders() {
	wt_sql "$1" "SELECT count(oms_create_order('$2' || i, '$ITEMS', 'EUR')) FROM generate_series(1, $3) AS i" >/dev/null
}
count_sql() { wt_sql_quiet "$DB" "$1"; }
in_flight() { count_sql "SELECT count(*) FROM oms.sagas WHERE status IN ('running', 'compensating')"; }
quiet() { rl_outbox_empty "$DB" && [[ "$(in_flight)" == 0 ]]; }
caught_up() { rl_caught_up "$TOPIC" 3 "$CONSUMED"; }
# Usage: deliver LABEL PREFIX MAXDUP: waits for the consumer, then analyses.
deliver() {
	local label=$1 prefix=$2 maxdup=$3
	if ! wt_wait_until 60 caught_up; then
		wt_not_ok "$label: the consumer caught up with the topic" "$(tail -n 5 "$CONSUMED.err")"
		return
	fi
	rl_export "$DB" "$prefix" "$WORK/$label"
	rl_analyse "$label" "$WORK/$label" "$CONSUMED" "$TOPIC" "$DB" "$maxdup"
	wt_diag "$label: $(wc -l <"$WORK/$label/produced.json") events produced, $RL_DUPLICATES duplicate deliveries"
}
status_line() { wt_sql_quiet "$DB" "SELECT oms_relay_status()"; }

# ===================================================== a: brokers down
A_LOG=$(rl_log_size)
A_PID=$(wt_worker_pid "$DB")
# Clients: 10 orders created and paid per round (each its own transaction),
# paced so that the run spans the outage, until a.stop exists.
{
	for ((i = 1; i <= 10; i++)); do
		printf "SELECT oms_create_order('a-%d', '%s', 'EUR') ->> 'order_id' AS id \\\\gset\n" "$i" "$ITEMS"
		printf "SELECT 1 FROM oms_pay_order(:'id', 'test_ok');\n"
	done
	printf "SELECT pg_sleep(0.1);\n"
} >"$WORK/a-round.sql"
loader() {
	while [[ ! -e "$WORK/a.stop" ]]; do
		oms_psql -d "$DB" -f "$WORK/a-round.sql" >/dev/null 2>>"$WORK/a-loader.err" || echo "round failed" >>"$WORK/a-loader.err"
	done
}
: >"$WORK/a-loader.err"
loader &
LOADER_PID=$!

a_confirmed() { count_sql "SELECT count(*) FROM oms.orders WHERE customer_id LIKE 'a-%' AND status = 'confirmed'"; }
a_running() {
	local c p
	c=$(a_confirmed) || return 1
	p=$(rl_status "$DB" published_total) || return 1
	[[ -n "$c" && -n "$p" ]] && ((c >= 100 && p >= 300))
}
if ! wt_wait_until 60 a_running; then
	wt_not_ok "a: clients and relay are busy before the outage" "confirmed $(a_confirmed)" "$(status_line)"
fi
C0=$(a_confirmed)
DOWN_AT=$(wt_sql "$DB" "SELECT now()")
T_DOWN=$(wt_now)
oms_kafka_cmd "down all" >/dev/null
SEEN=""
SEEN_OPEN=0
# Polls oms_relay_status() during the outage; done once the breaker was seen
# open, more orders were confirmed and 10 s have passed.
outage_over() {
	local b c
	b=$(rl_status "$DB" breaker) || b=""
	[[ -n "$b" && "$SEEN" != *"$b"* ]] && SEEN+="${SEEN:+ -> }$b"
	[[ "$b" == open ]] && SEEN_OPEN=1
	c=$(a_confirmed) || c=0
	((SEEN_OPEN == 1)) && ((c > C0)) &&
		awk -v a="$T_DOWN" -v b="$EPOCHREALTIME" 'BEGIN { exit !(b - a >= 10) }'
}
wt_wait_until 60 outage_over || true
C_UP=$(a_confirmed)
OUTAGE_STATUS=$(status_line)
created_down=$(count_sql "SELECT count(*) FROM oms.orders WHERE customer_id LIKE 'a-%' AND created_at > '$DOWN_AT'")
oms_kafka_cmd "up all" >/dev/null
wt_diag "a: brokers down for $(wt_elapsed "$T_DOWN") s; breaker states seen: ${SEEN:-none}"
wt_diag "a: status at the end of the outage: $OUTAGE_STATUS"
wt_check "a: oms_relay_status() showed the breaker open during the outage" "$((1 - SEEN_OPEN))" "states seen: ${SEEN:-none}"
wt_check "a: sagas kept being confirmed while the brokers were down ($C0 -> $C_UP)" \
	"$([[ "$C_UP" -gt "$C0" ]] && echo 0 || echo 1)"
wt_check "a: clients kept creating and paying orders during the outage ($created_down created)" \
	"$([[ "$created_down" -gt 0 && ! -s "$WORK/a-loader.err" ]] && echo 0 || echo 1)" "$(head -n 5 "$WORK/a-loader.err")"

: >"$WORK/a.stop"
wait "$LOADER_PID" || true
LOADER_PID=""
breaker_closed() { [[ "$(rl_status "$DB" breaker)" == closed ]]; }
if wt_wait_until 90 quiet && wt_wait_until 30 breaker_closed; then
	wt_ok "a: after the outage the outbox drains, every saga finishes and the breaker is closed"
	wt_diag "a: drained $(wt_elapsed "$T_DOWN") s after the brokers went down"
else
	wt_not_ok "a: after the outage the outbox drains, every saga finishes and the breaker is closed" \
		"$(status_line)" "sagas in flight: $(in_flight)"
fi
A_PID2=$(wt_worker_pid "$DB")
bad=$(rl_log_since "$A_LOG" | grep -E 'FATAL:|PANIC:|terminated by signal|exited with exit code' || true)
wt_check "a: the same worker all along (pid $A_PID), no FATAL or PANIC in the log" \
	"$([[ "$A_PID2" == "$A_PID" && -z "$bad" ]] && echo 0 || echo 1)" "worker pid $A_PID -> $A_PID2" "$(head -n 10 <<<"$bad")"
deliver a a- "$BATCH"

# ===================================================== b: kill -9 mid-publish
NB=3000
oms_kafka_cmd "rtt all 200" >/dev/null
P0=$(rl_status "$DB" published_total)
create_orders "$DB" b- "$NB"
B_PID=$(wt_worker_pid "$DB")
mid_publish() {
	local p pending
	p=$(rl_status "$DB" published_total) || return 1
	pending=$(rl_status "$DB" pending) || return 1
	[[ -n "$p" && -n "$pending" ]] && ((p - P0 >= 2 * BATCH && pending >= 3 * BATCH)) || return 1
	MID="published $((p - P0)), pending $pending"
}
if wt_wait_until 60 mid_publish; then
	kill -9 "$B_PID"
	wt_ok "b: killed the worker (pid $B_PID) with -9 while it published ($MID)"
	worker_back() {
		local pid
		pid=$(wt_worker_pid "$DB")
		[[ -n "$pid" && "$pid" != "$B_PID" ]]
	}
	if wt_wait_until 60 wt_server_ready && wt_wait_until 60 worker_back; then
		wt_ok "b: the server crash-restarted and a new worker runs (pid $(wt_worker_pid "$DB"))"
	else
		wt_not_ok "b: the server crash-restarted and a new worker runs" "$(tail -n 20 "$WT_LOG")"
	fi
else
	wt_not_ok "b: caught the worker publishing the backlog" "$(status_line)"
fi
oms_kafka_cmd "rtt all 0" >/dev/null
if wt_wait_until 90 rl_outbox_empty "$DB"; then
	wt_ok "b: after the restart the outbox drains"
else
	wt_not_ok "b: after the restart the outbox drains" "$(status_line)"
fi
deliver b b- "$BATCH"

# ===================================================== c: injected produce errors
# Usage: one_order NAME: creates one order (one order.created event) and
# waits until the outbox is empty again; prints its id.
one_order() {
	wt_sql "$DB" "SELECT oms_create_order('$1', '$ITEMS', 'EUR') ->> 'order_id'"
}
publish_letters() {
	count_sql "SELECT count(*) FROM oms.dead_letters AS d JOIN oms.orders AS o ON o.id = d.order_id
		WHERE d.kind = 'publish' AND o.customer_id = '$1'"
}
wt_wait_until 60 quiet || true
for err in REQUEST_TIMED_OUT NOT_LEADER_FOR_PARTITION; do
	oms_kafka_cmd "error Produce $err 3" >/dev/null
	one_order "c-$err" >/dev/null
	if wt_wait_until 30 rl_outbox_empty "$DB"; then
		letters=$(publish_letters "c-$err")
		wt_check "c: a produce failing $err 3 times is retried and acknowledged, no dead letter" \
			"$([[ "$letters" == 0 ]] && echo 0 || echo 1)" "$letters dead letters"
	else
		wt_not_ok "c: a produce failing $err 3 times is retried and acknowledged, no dead letter" \
			"$(status_line)" "$(wt_sql_quiet "$DB" "SELECT attempts, last_error FROM oms.outbox")"
	fi
	oms_kafka_cmd "clear Produce" >/dev/null
done

# The same errors under load: 6 Produce requests in a row fail while 100
# orders are created and paid (each its own transaction) and confirmed, so
# several events of one order are in flight behind a retried request.
{
	for ((i = 1; i <= 100; i++)); do
		printf "SELECT oms_create_order('c-load-%d', '%s', 'EUR') ->> 'order_id' AS id \\\\gset\n" "$i" "$ITEMS"
		printf "SELECT 1 FROM oms_pay_order(:'id', 'test_ok');\n"
	done
} >"$WORK/c-load.sql"
oms_kafka_cmd "error Produce REQUEST_TIMED_OUT 3" >/dev/null
oms_kafka_cmd "error Produce NOT_LEADER_FOR_PARTITION 3" >/dev/null
rc=0
oms_psql -d "$DB" -f "$WORK/c-load.sql" >/dev/null 2>"$WORK/c-load.err" || rc=$?
c_load_done() {
	quiet && wt_sql_true "$DB" "SELECT count(*) = 100 AND bool_and(status = 'confirmed') FROM oms.orders WHERE customer_id LIKE 'c-load-%'"
}
if ((rc == 0)) && wt_wait_until 60 c_load_done; then
	letters=$(count_sql "SELECT count(*) FROM oms.dead_letters AS d JOIN oms.orders AS o ON o.id = d.order_id
		WHERE d.kind = 'publish' AND o.customer_id LIKE 'c-load-%'")
	wt_check "c: 6 failed Produce requests (timeouts, leader changes) under load: all retried, no dead letter" \
		"$([[ "$letters" == 0 ]] && echo 0 || echo 1)" "$letters dead letters"
else
	wt_not_ok "c: 6 failed Produce requests (timeouts, leader changes) under load: all retried, no dead letter" \
		"$(head -n 5 "$WORK/c-load.err")" "$(status_line)"
fi
oms_kafka_cmd "clear Produce" >/dev/null

oms_kafka_cmd "error Produce MSG_SIZE_TOO_LARGE 1" >/dev/null
PERM_ORDER=$(one_order c-perm)
perm_letter() { [[ "$(publish_letters c-perm)" -ge 1 ]] && rl_outbox_empty "$DB"; }
if wt_wait_until 30 perm_letter; then
	letter=$(wt_sql "$DB" "SELECT format('%s|%s|%s|%s|%s', id, error ->> 'permanent', error ->> 'attempt',
			payload ->> 'type', error ->> 'message')
		FROM oms.dead_letters WHERE kind = 'publish' AND order_id = '$PERM_ORDER'")
	IFS='|' read -r PERM_LETTER perm attempt ptype msg <<<"$letter"
	wt_check "c: a produce refused with MSG_SIZE_TOO_LARGE is dead-lettered at once (permanent, attempt 1)" \
		"$([[ "$perm" == true && "$attempt" == 1 && "$ptype" == order.created && "$msg" == *MSG_SIZE_TOO_LARGE* ]] && echo 0 || echo 1)" \
		"$letter"
else
	PERM_LETTER=""
	wt_not_ok "c: a produce refused with MSG_SIZE_TOO_LARGE is dead-lettered" "$(status_line)" \
		"$(wt_sql_quiet "$DB" "SELECT attempts, last_error FROM oms.outbox")"
fi
oms_kafka_cmd "clear Produce" >/dev/null
create_orders "$DB" c-flow- 20
if wt_wait_until 30 rl_outbox_empty "$DB"; then
	wt_ok "c: later orders' events still flow after the dead letter"
else
	wt_not_ok "c: later orders' events still flow after the dead letter" "$(status_line)"
fi
if [[ -n "$PERM_LETTER" ]]; then
	PERM_ID=$(wt_sql "$DB" "SELECT payload ->> 'id' FROM oms.dead_letters WHERE id = $PERM_LETTER")
	wt_sql "$DB" "SELECT oms_retry_dead_letter($PERM_LETTER)" >/dev/null
	republished() {
		rl_outbox_empty "$DB" && caught_up && grep -qF "\"ce_id\",\"$PERM_ID\"" "$CONSUMED"
	}
	if wt_wait_until 30 republished; then
		wt_ok "c: oms_retry_dead_letter() republished the event under its ce_id ($(grep -cF "\"ce_id\",\"$PERM_ID\"" "$CONSUMED") on the topic)"
	else
		wt_not_ok "c: oms_retry_dead_letter() republished the event under its ce_id" "$(status_line)"
	fi
	st=$(wt_sql "$DB" "SELECT status FROM oms.dead_letters WHERE id = $PERM_LETTER")
	wt_check "c: the dead letter is marked replayed" "$([[ "$st" == replayed ]] && echo 0 || echo 1)" "$st"
fi
deliver c c- 0

# ===================================================== d: oversized event
# The worker pauses (two loops with the setting off, so it has read it),
# the order is written, then the limit drops below its event's size.
wt_set_sighup oms.worker_enabled off
wt_set_sighup oms.max_metadata_bytes 262144
loops_at=$(wt_worker_status "$DB" loops)
paused() { (($(wt_worker_status "$DB" loops) >= loops_at + 2)); }
wt_wait_until 30 paused || true
BIG_ORDER=$(wt_sql "$DB" "SELECT oms_create_order('d-big', '$ITEMS', 'EUR', NULL,
	jsonb_build_object('blob', repeat('x', 200000))) ->> 'order_id'")
wt_set_sighup oms.kafka_max_message_bytes 100kB
wt_set_sighup oms.worker_enabled on
create_orders "$DB" d-flow- 20
big_letter() { [[ "$(publish_letters d-big)" -ge 1 ]] && rl_outbox_empty "$DB"; }
if wt_wait_until 30 big_letter; then
	letter=$(wt_sql "$DB" "SELECT format('%s|%s|%s', error ->> 'permanent', payload ->> 'type',
			length(payload -> 'payload' -> 'order' -> 'metadata' ->> 'blob'))
		FROM oms.dead_letters WHERE kind = 'publish' AND order_id = '$BIG_ORDER'")
	msg=$(wt_sql "$DB" "SELECT error ->> 'message' FROM oms.dead_letters WHERE kind = 'publish' AND order_id = '$BIG_ORDER'")
	IFS='|' read -r perm ptype blob <<<"$letter"
	wt_check "d: an event over oms.kafka_max_message_bytes is dead-lettered as permanent, whole" \
		"$([[ "$perm" == true && "$ptype" == order.created && "$blob" == 200000 ]] && echo 0 || echo 1)" \
		"permanent $perm, type $ptype, blob length $blob" "$msg"
	wt_diag "d: dead letter message: $msg"
	wt_check "d: the other orders' events still flow and the breaker stays closed" \
		"$([[ "$(rl_status "$DB" breaker)" == closed ]] && echo 0 || echo 1)" "$(status_line)"
else
	wt_not_ok "d: an event over oms.kafka_max_message_bytes is dead-lettered as permanent" "$(status_line)" \
		"$(wt_sql_quiet "$DB" "SELECT type, attempts, last_error FROM oms.outbox")"
fi
deliver d d- 0
wt_sql postgres "ALTER SYSTEM RESET oms.kafka_max_message_bytes" >/dev/null
wt_sql postgres "ALTER SYSTEM RESET oms.max_metadata_bytes" >/dev/null
wt_sql postgres "SELECT pg_reload_conf()" >/dev/null

# ===================================================== e: drop and stop, brokers down
wt_set_sighup oms.relay_breaker_failures 1000
F_DROP=$(rl_status "$DROPDB" failed_attempts_total)
F_MAIN=$(rl_status "$DB" failed_attempts_total)
oms_kafka_cmd "down all" >/dev/null
E_LOG=$(rl_log_size)
create_orders "$DROPDB" e-drop- 300
create_orders "$DB" e- 300
# Usage: failing DB BEFORE: true once DB's relay failed an attempt since.
failing() {
	local f
	f=$(rl_status "$1" failed_attempts_total) || return 1
	[[ -n "$f" ]] && ((f > $2))
}
if wt_wait_until 30 failing "$DROPDB" "$F_DROP"; then
	t0=$(wt_now)
	rc=0
	out=$(timeout 60 "$OMS_PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE $DROPDB" 2>&1) || rc=$?
	took=$(wt_elapsed "$t0")
	wt_diag "e: DROP DATABASE with its relay failing against down brokers took $took s"
	gone=$(wt_sql postgres "SELECT count(*) FROM pg_database WHERE datname = '$DROPDB'")
	wt_check "e: DROP DATABASE of a served database succeeds within ${BOUND} s while its relay waits on down brokers" \
		"$([[ "$rc" == 0 && "$gone" == 0 ]] && awk -v t="$took" -v b="$BOUND" 'BEGIN { print (t < b) ? 0 : 1 }' || echo 1)" \
		"rc $rc, took $took s: $out" "$(tail -n 10 "$WT_LOG")"
else
	wt_not_ok "e: the relay of $DROPDB failed against the down brokers" "$(wt_sql_quiet "$DROPDB" "SELECT oms_relay_status()")"
fi
if wt_wait_until 30 failing "$DB" "$F_MAIN"; then
	t0=$(wt_now)
	rc=0
	out=$(oms_pg_ctl -m fast -t 60 stop 2>&1) || rc=$?
	took=$(wt_elapsed "$t0")
	wt_diag "e: pg_ctl stop -m fast with the relay failing against down brokers took $took s"
	wt_check "e: pg_ctl stop -m fast succeeds within ${BOUND} s while the relay waits on down brokers" \
		"$([[ "$rc" == 0 ]] && awk -v t="$took" -v b="$BOUND" 'BEGIN { print (t < b) ? 0 : 1 }' || echo 1)" \
		"rc $rc, took $took s: $out" "$(tail -n 10 "$WT_LOG")"
	if rl_log_since "$E_LOG" | grep -q 'database system is shut down' &&
		! rl_log_since "$E_LOG" | grep -qE 'terminated by signal|PANIC'; then
		wt_ok "e: the fast shutdown was clean"
	else
		wt_not_ok "e: the fast shutdown was clean" "$(rl_log_since "$E_LOG" | tail -n 20)"
	fi
	if ! rl_start_again; then
		wt_not_ok "e: the cluster starts again after the fast shutdown" "$(rl_log_since "$E_LOG" | tail -n 20)"
		exit 1
	fi
else
	wt_not_ok "e: the relay of $DB failed against the down brokers" "$(status_line)"
fi
oms_kafka_cmd "up all" >/dev/null
if wt_wait_until 60 wt_server_ready && wt_wait_until 90 rl_outbox_empty "$DB"; then
	wt_ok "e: after the restart and the brokers' return the pending events are published"
else
	wt_not_ok "e: after the restart and the brokers' return the pending events are published" "$(status_line)"
fi
deliver e e- "$BATCH"

errors=$(grep -E 'oms (saga )?worker: (ERROR|PANIC):|PANIC:' "$WT_LOG" || true)
wt_check "no oms worker logged an ERROR, no PANIC" "$([[ -z "$errors" ]] && echo 0 || echo 1)" "$(head -n 10 <<<"$errors")"

exit "$WT_RC"
