#!/usr/bin/env bash
# test/suites/tracing_e2e.sh: a caller's W3C traceparent reaches Kafka as
# the header traceparent on every event its calls cause, including those
# the worker emits later for the saga; untraced calls send no such header.
#
# This suite's own cluster (oms.database_name = tracing_e2e) publishes to
# its own mock Kafka cluster (test/kafka).  Three orders, one client
# transaction per call:
#   traced    create + pay (test_ok) under T1, then a full refund under T2:
#             the worker confirms and refunds it
#   untraced  create + pay (test_ok) without a traceparent
#   declined  create + pay (test_decline) under T3: the worker fails it
# Once the outbox is empty, kcat reads the topic with its headers and every
# event is checked: the traced order's created/processing/confirmed carry
# T1 and its refunded carries T2, the declined order's events carry T3, the
# untraced order's events have no traceparent header.
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

DB=tracing_e2e
TOPIC=oms.order-events
T1=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
T2=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01
T3=00-11111111111111111111111111111111-2222222222222222-00
WORK=""

cleanup() {
	wt_keep_log tracing_e2e
	if { ((WT_RC != 0)) || [[ "${WT_KEEP_LOG:-0}" == 1 ]]; } && [[ -n "$WORK" ]]; then
		mkdir -p "$OMS_LOG_DIR/test/tracing_e2e"
		cp -r "$WORK"/. "$OMS_LOG_DIR/test/tracing_e2e/" 2>/dev/null || true
	fi
	[[ -z "$WORK" ]] || rm -rf "$WORK"
}

# Main shell, not $(...): the broker lives as long as this script.
oms_kafka_start --topic "$TOPIC" --partitions 3
wt_start_cluster "oms.database_name = '$DB'" \
	"oms.kafka_brokers = '$OMS_KAFKA_BOOTSTRAP'"
oms_on_exit cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oms-tracing-e2e.XXXXXX")
wt_diag "mock Kafka: $OMS_KAFKA_BOOTSTRAP, topic $TOPIC"

oms_fresh_db "$DB" >/dev/null
wt_setup_stock "$DB" 3 1000

worker_up() { [[ -n "$(wt_worker_pid "$DB")" ]]; }
if ! wt_wait_until 60 worker_up; then
	wt_not_ok "the worker serves $DB" "$(tail -n 20 "$WT_LOG")"
	exit 1
fi
wt_ok "the worker serves $DB"

# Usage: traced TRACEPARENT SQL -> runs SQL in its own transaction under
# SET LOCAL oms.traceparent (none when TRACEPARENT is empty).
traced() {
	local tp=$1 sql=$2
	# shellcheck disable=SC2016 # the quotes are SQL's; bash expands $tp inside them
	wt_sql "$DB" "BEGIN; ${tp:+SET LOCAL oms.traceparent = '$tp';} $sql; COMMIT;"
}
ITEMS='[{"sku": "SKU-01", "quantity": 1, "unit_price": 500}]'
order_id() { wt_sql "$DB" "SELECT id FROM oms.orders WHERE customer_id = '$1'"; }

traced "$T1" "SELECT 1 FROM oms_create_order('traced', '$ITEMS')" >/dev/null
O_TRACED=$(order_id traced)
traced "$T1" "SELECT 1 FROM oms_pay_order('$O_TRACED', 'test_ok')" >/dev/null
traced "" "SELECT 1 FROM oms_create_order('untraced', '$ITEMS')" >/dev/null
O_PLAIN=$(order_id untraced)
traced "" "SELECT 1 FROM oms_pay_order('$O_PLAIN', 'test_ok')" >/dev/null
traced "$T3" "SELECT 1 FROM oms_create_order('declined', '$ITEMS')" >/dev/null
O_DECLINED=$(order_id declined)
traced "$T3" "SELECT 1 FROM oms_pay_order('$O_DECLINED', 'test_decline')" >/dev/null
wt_diag "orders: traced $O_TRACED, untraced $O_PLAIN, declined $O_DECLINED"

status_of() { wt_sql_quiet "$DB" "SELECT status FROM oms.orders WHERE id = '$1'"; }
confirmed() { [[ "$(status_of "$O_TRACED")" == confirmed && "$(status_of "$O_PLAIN")" == confirmed && "$(status_of "$O_DECLINED")" == failed ]]; }
if wt_wait_until 60 confirmed; then
	wt_ok "the worker confirmed the traced and untraced orders and failed the declined one"
else
	wt_not_ok "the worker confirmed the traced and untraced orders and failed the declined one" \
		"$(wt_sql_quiet "$DB" "SELECT customer_id, status FROM oms.orders")"
fi

traced "$T2" "SELECT 1 FROM oms_refund_order('$O_TRACED')" >/dev/null
refunded() { [[ "$(status_of "$O_TRACED")" == refunded ]]; }
if wt_wait_until 60 refunded && wt_wait_until 60 rl_outbox_empty "$DB"; then
	wt_ok "the worker refunded the traced order and the relay emptied the outbox"
else
	wt_not_ok "the worker refunded the traced order and the relay emptied the outbox" \
		"$(wt_sql_quiet "$DB" "SELECT customer_id, status FROM oms.orders")" "$(wt_sql_quiet "$DB" "SELECT oms_relay_status()")"
fi

# The database's own view: the timeline of the traced order.
timeline=$(wt_sql "$DB" "SELECT string_agg(event_type || '=' || coalesce(traceparent, '-'), ' ' ORDER BY seq)
	FROM oms_order_timeline('$O_TRACED')")
bad=$(tr ' ' '\n' <<<"$timeline" | grep -vE "=($T1|$T2)\$" || true)
wt_check "every timeline entry of the traced order carries T1 or T2" \
	"$([[ -n "$timeline" && -z "$bad" ]] && echo 0 || echo 1)" "$timeline"

# ------------------------------------------------------------ the topic
# The outbox is empty: one kcat pass to the end of every partition reads
# it all.  One line per record: key, then the headers (name=value,...).
rc=0
timeout 60 kcat -C -b "$OMS_KAFKA_BOOTSTRAP" -t "$TOPIC" -o beginning -e -q -f '%k %h\n' \
	>"$WORK/consumed.txt" 2>"$WORK/kcat.err" || rc=$?
wt_check "kcat read the topic with its headers ($(wc -l <"$WORK/consumed.txt") records)" "$rc" "$(head -n 5 "$WORK/kcat.err")"

# Usage: headers_of ORDER -> "type traceparent" per event of ORDER (traceparent "-" when absent).
headers_of() {
	awk -v key="$1" '$1 == key {
		type = "?"; tp = "-"
		n = split($2, h, ",")
		for (i = 1; i <= n; i++) {
			eq = index(h[i], "=")
			name = substr(h[i], 1, eq - 1); value = substr(h[i], eq + 1)
			if (name == "ce_type") type = value
			if (name == "traceparent") tp = value
		}
		print type, tp
	}' "$WORK/consumed.txt"
}

traced_events=$(headers_of "$O_TRACED")
expected_traced="oms.order.created $T1
oms.order.processing $T1
oms.order.confirmed $T1
oms.order.refunded $T2"
wt_check "the traced order's events carry traceparent T1 (the create and pay calls, the worker's order.confirmed) and T2 (the worker's order.refunded)" \
	"$([[ "$traced_events" == "$expected_traced" ]] && echo 0 || echo 1)" \
	"expected:" "$expected_traced" "consumed:" "$traced_events"

declined_events=$(headers_of "$O_DECLINED")
expected_declined="oms.order.created $T3
oms.order.processing $T3
oms.order.failed $T3"
wt_check "the declined order's events, the worker's order.failed included, carry traceparent T3" \
	"$([[ "$declined_events" == "$expected_declined" ]] && echo 0 || echo 1)" \
	"expected:" "$expected_declined" "consumed:" "$declined_events"

plain_events=$(headers_of "$O_PLAIN")
expected_plain="oms.order.created -
oms.order.processing -
oms.order.confirmed -"
wt_check "the untraced order's events carry no traceparent header" \
	"$([[ "$plain_events" == "$expected_plain" ]] && echo 0 || echo 1)" \
	"expected:" "$expected_plain" "consumed:" "$plain_events"

other=$(awk -v a="$O_TRACED" -v b="$O_PLAIN" -v c="$O_DECLINED" '$1 != a && $1 != b && $1 != c' "$WORK/consumed.txt")
wt_check "the topic holds only these orders' events" "$([[ -z "$other" ]] && echo 0 || echo 1)" "$(head -n 5 <<<"$other")"

errors=$(grep -E 'oms (saga )?worker: (ERROR|FATAL|PANIC):|event=(saga_error|worker_batch_failed|worker_xact_failed|relay_batch_failed)' "$WT_LOG" || true)
wt_check "no worker error in the server log" "$([[ -z "$errors" ]] && echo 0 || echo 1)" "$(head -n 10 <<<"$errors")"

exit "$WT_RC"
