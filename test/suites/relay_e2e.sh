#!/usr/bin/env bash
# test/suites/relay_e2e.sh: every event of a busy run reaches Kafka once,
# in order, with the right headers and a valid payload.
#
# This suite's own cluster (oms.database_name = relay_e2e) publishes to its
# own mock Kafka cluster (test/kafka, topic oms.order-events, 3 partitions)
# while 2,000 orders go through their sagas, one client transaction per
# action, 10 outcomes by order number i % 10:
#   0-3 paid test_ok -> confirmed        4 paid test_decline -> failed
#   5   canceled while pending           6 paid test_hang, canceled while processing
#   7   confirmed, partial refund        8 confirmed, partial refund, then the rest
#   9   confirmed, full refund
# The relay deletes what it published, so a test trigger (test/relay/
# capture.sql) keeps a copy of every outbox row.  Once the outbox is empty and
# every saga is final, kcat reads the topic and test/relay/analyse.py checks:
# the consumed ce_ids are exactly the produced events (none lost, none
# unexpected, no duplicate: this run has no fault); the (order, ce_omsseq,
# type) triples equal the order timeline's status changes; each order in one
# partition, its events in ce_omsseq order without gaps; topic, key = order
# id = ce_subject, CloudEvents headers and value right.  Every payload and its
# headers validate against docs/events (test/events/validate.py, every type
# must occur).  Last, oms_relay_status() agrees and nothing was dead-lettered.
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

DB=relay_e2e
N=${RL_E2E_ORDERS:-2000}
TOPIC=oms.order-events
NSKUS=5
WORK=""

cleanup() {
	wt_keep_log relay_e2e
	if { ((WT_RC != 0)) || [[ "${WT_KEEP_LOG:-0}" == 1 ]]; } && [[ -n "$WORK" ]]; then
		mkdir -p "$OMS_LOG_DIR/test/relay_e2e"
		cp -r "$WORK"/. "$OMS_LOG_DIR/test/relay_e2e/" 2>/dev/null || true
	fi
	[[ -z "$WORK" ]] || rm -rf "$WORK"
}

# Main shell, not $(...): the broker lives as long as this script.
oms_kafka_start --topic "$TOPIC" --partitions 3
wt_start_cluster "oms.database_name = '$DB'" \
	"oms.kafka_brokers = '$OMS_KAFKA_BOOTSTRAP'" \
	"oms.step_timeout = '10min'"
oms_on_exit cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oms-relay-e2e.XXXXXX")
wt_diag "mock Kafka: $OMS_KAFKA_BOOTSTRAP, topic $TOPIC (3 partitions)"

oms_fresh_db "$DB" >/dev/null
rl_install_capture "$DB"
wt_setup_stock "$DB" "$NSKUS" 1000000

worker_up() { [[ -n "$(wt_worker_pid "$DB")" ]]; }
if ! wt_wait_until 60 worker_up; then
	wt_not_ok "the worker serves $DB" "$(tail -n 20 "$WT_LOG")"
	exit 1
fi
WORKER_PID=$(wt_worker_pid "$DB")
relay_on() { [[ "$(rl_status "$DB" enabled)" == true ]]; }
wt_check "oms_relay_status() says the relay is enabled" "$(relay_on && echo 0 || echo 1)" \
	"$(wt_sql_quiet "$DB" "SELECT oms_relay_status()")"

# ------------------------------------------------------------ the clients
# Phase 1, one transaction per action: create, then pay or cancel.  The
# test_hang payments wait in their charge step until canceled at the end.
items() {
	local i=$1 l sep="" out="["
	for ((l = 1; l <= 1 + i % 3; l++)); do
		out+="$sep{\"sku\": \"SKU-0$(((i + l) % NSKUS + 1))\", \"quantity\": $(((i + l) % 4 + 1)), \"unit_price\": $((100 * l + i % 50 + 1))}"
		sep=", "
	done
	printf '%s]' "$out"
}
{
	for ((i = 1; i <= N; i++)); do
		printf "SELECT oms_create_order('e2e-%d', '%s', 'EUR') ->> 'order_id' AS id \\\\gset\n" "$i" "$(items "$i")"
		case $((i % 10)) in
		4) printf "SELECT 1 FROM oms_pay_order(:'id', 'test_decline');\n" ;;
		5) printf "SELECT 1 FROM oms_cancel_order(:'id', 'changed my mind');\n" ;;
		6) printf "SELECT 1 FROM oms_pay_order(:'id', 'test_hang');\n" ;;
		*) printf "SELECT 1 FROM oms_pay_order(:'id', 'test_ok');\n" ;;
		esac
	done
} >"$WORK/phase1.sql"

bucket_sql="split_part(customer_id, '-', 2)::int % 10"
# Every order in the status its bucket leads to (ARG: the phase) and no saga in flight.
settled() {
	local phase=$1
	wt_sql_true "$DB" "
		SELECT count(*) = $N AND bool_and(status::text = CASE
				WHEN b IN (0, 1, 2, 3) THEN 'confirmed'
				WHEN b = 4 THEN 'failed'
				WHEN b IN (5, 6) THEN 'canceled'
				WHEN $phase = 1 THEN 'confirmed'
				WHEN b = 7 THEN 'partially_refunded'
				ELSE 'refunded' END)
			AND NOT EXISTS (SELECT FROM oms.sagas WHERE status IN ('running', 'compensating'))
		FROM (SELECT status, $bucket_sql AS b FROM oms.orders WHERE customer_id LIKE 'e2e-%') AS o"
}
status_summary() {
	wt_sql_quiet "$DB" "SELECT $bucket_sql AS bucket, status, count(*) FROM oms.orders GROUP BY 1, 2 ORDER BY 1, 2"
	wt_sql_quiet "$DB" "SELECT kind, status, count(*) FROM oms.sagas GROUP BY 1, 2 ORDER BY 1, 2"
}

T0=$(wt_now)
rc=0
oms_psql -d "$DB" -f "$WORK/phase1.sql" >"$WORK/phase1.log" 2>&1 || rc=$?
# The test_hang payments are waiting: cancel them, each its own transaction.
if ((rc == 0)); then
	wt_sql "$DB" "SELECT format('SELECT 1 FROM oms_cancel_order(%L);', id) FROM oms.orders
		WHERE customer_id LIKE 'e2e-%' AND $bucket_sql = 6 ORDER BY created_at" >"$WORK/cancel.sql"
	oms_psql -d "$DB" -f "$WORK/cancel.sql" >>"$WORK/phase1.log" 2>&1 || rc=$?
fi
wt_check "clients created $N orders, paid or canceled each in its own transaction" "$rc" \
	"$(tail -n 5 "$WORK/phase1.log")"
wt_diag "phase 1 clients took $(wt_elapsed "$T0") s"

if wt_wait_until 180 settled 1; then
	wt_ok "phase 1: every order confirmed, failed or canceled as its payment and cancel say"
else
	wt_not_ok "phase 1: every order confirmed, failed or canceled as its payment and cancel say" "$(status_summary)"
fi

# Phase 2: refunds of confirmed orders, each its own transaction.
wt_sql "$DB" "
	SELECT CASE b
		WHEN 7 THEN format('SELECT 1 FROM oms_refund_order(%L, 1, %L);', id, 'partial')
		WHEN 8 THEN format('SELECT 1 FROM oms_refund_order(%L, 1, %L); SELECT 1 FROM oms_refund_order(%L);', id, 'partial', id)
		ELSE format('SELECT 1 FROM oms_refund_order(%L);', id) END
	FROM (SELECT id, created_at, $bucket_sql AS b FROM oms.orders WHERE customer_id LIKE 'e2e-%') AS o
	WHERE b IN (7, 8, 9) AND EXISTS (SELECT FROM oms.orders AS c WHERE c.id = o.id AND c.status = 'confirmed')
	ORDER BY created_at" >"$WORK/phase2.sql"
rc=0
oms_psql -d "$DB" -f "$WORK/phase2.sql" >"$WORK/phase2.log" 2>&1 || rc=$?
wt_check "clients refunded $(wc -l <"$WORK/phase2.sql") confirmed orders, in part or in full" "$rc" \
	"$(tail -n 5 "$WORK/phase2.log")"
if wt_wait_until 180 settled 2; then
	wt_ok "phase 2: every refunded order is partially_refunded or refunded"
else
	wt_not_ok "phase 2: every refunded order is partially_refunded or refunded" "$(status_summary)"
fi

if wt_wait_until 120 rl_outbox_empty "$DB"; then
	wt_ok "the relay emptied the outbox"
	wt_diag "outbox empty $(wt_elapsed "$T0") s after the clients started"
else
	wt_not_ok "the relay emptied the outbox" "$(wt_sql_quiet "$DB" "SELECT oms_relay_status()")" \
		"$(wt_sql_quiet "$DB" "SELECT type, attempts, last_error FROM oms.outbox LIMIT 5")"
fi

# ------------------------------------------------------------ the topic
# The outbox is empty, so everything was acknowledged: one pass of kcat to
# the end of every partition reads it all.
rc=0
timeout 120 kcat -C -b "$OMS_KAFKA_BOOTSTRAP" -t "$TOPIC" -o beginning -e -J -q \
	>"$WORK/consumed.json" 2>"$WORK/kcat.err" || rc=$?
wt_check "kcat read the topic to its end ($(wc -l <"$WORK/consumed.json") records)" "$rc" "$(head -n 5 "$WORK/kcat.err")"

rl_export "$DB" e2e- "$WORK/e2e"
produced=$(wc -l <"$WORK/e2e/produced.json")
wt_diag "the run produced $produced events for $N orders"
VALIDATE_ALL=1 rl_analyse e2e "$WORK/e2e" "$WORK/consumed.json" "$TOPIC" "$DB" 0 --validate

# ------------------------------------------------------------ status
status=$(wt_sql "$DB" "SELECT format('%s|%s|%s|%s|%s|%s', s ->> 'pending', s ->> 'published_total',
		s ->> 'breaker', s ->> 'dead_letters', coalesce(s ->> 'last_error', ''), s ->> 'worker_running')
	FROM oms_relay_status() AS s")
IFS='|' read -r pending published breaker dead last_error running <<<"$status"
wt_check "oms_relay_status(): nothing pending, published_total = the $produced events, breaker closed" \
	"$([[ "$pending" == 0 && "$published" == "$produced" && "$breaker" == closed && "$running" == true ]] && echo 0 || echo 1)" \
	"pending $pending, published_total $published, breaker $breaker, worker_running $running"
wt_check "nothing was dead-lettered and the relay recorded no error" \
	"$([[ "$dead" == 0 && -z "$last_error" ]] && echo 0 || echo 1)" "dead_letters $dead, last_error: $last_error"
letters=$(wt_sql "$DB" "SELECT count(*) FROM oms.dead_letters WHERE kind = 'publish'")
wt_check "no publish dead letter in oms.dead_letters" "$([[ "$letters" == 0 ]] && echo 0 || echo 1)" "$letters"

now_pid=$(wt_worker_pid "$DB")
errors=$(grep -E 'oms (saga )?worker: (ERROR|FATAL|PANIC|WARNING):|event=(relay_batch_failed|relay_claim_failed|relay_settle_failed|kafka_producer_failed|saga_error|worker_batch_failed)' "$WT_LOG" || true)
wt_check "one worker all along (pid $WORKER_PID), no ERROR or relay failure in the server log" \
	"$([[ "$now_pid" == "$WORKER_PID" && -z "$errors" ]] && echo 0 || echo 1)" \
	"worker pid $WORKER_PID -> $now_pid" "$(head -n 10 <<<"$errors")"
wt_diag "suite took $(wt_elapsed "$T0") s after the clients started"

exit "$WT_RC"
