#!/usr/bin/env bash
# test/suites/payment_kafka.sh: the fulfilment saga pays through a remote
# payment provider over Kafka (oms.payment_provider = kafka), end to end.
#
# This suite's own cluster (oms.database_name = payment_kafka) and mock
# Kafka (topics oms.order-events, oms.payment-commands, oms.payment-replies,
# 3 partitions each); the relay publishes payment commands, the test payment
# service (test/payment/service.py) answers by payment method, the worker
# consumes the replies and applies each once (oms._apply_payment_reply).
# Phase 1, with oms.payment_reply_timeout = 2min (never reached):
#   approve      test_ok -> confirmed, captured, the service's reference kept
#   decline      test_decline -> failed, compensated: reservation released,
#                payment declined, nothing to void
#   duplicate    test_duplicate: the same reply twice (same ce_id), then a
#                copy under a new message id (kcat) -> one capture, one
#                payment.reply, the copy counted as a duplicate, no inbox row
#   out of order 50 orders, test_out_of_order (random reply delays) -> all confirmed
#   malformed    test_garbage: invalid JSON, then the real approval on the
#                same partition -> dead letter 'reply' with the raw message,
#                the worker keeps running, the order still confirmed
#   unknown      test_unknown: a reply whose correlation id matches nothing,
#                then the real approval -> dead letter 'reply', confirmed
#   SQL result   test_hang, answered by oms_payment_result() from SQL ->
#                applied, confirmed; the same call again -> duplicate
#   flaky        test_flaky: "failed" to attempts 1 and 2 -> retried under
#                new correlation ids, attempt 3 approved -> confirmed
# Phase 2, with oms.payment_reply_timeout = 3s:
#   timeout      test_hang -> failed after the timeout, a void command sent
#   late reply   test_delay (the service answers charges after 6 s, voids
#                and refunds at once) -> failed, the
#                late approval becomes a late_reply dead letter and a refund
#                command reaches the commands topic and the service; the
#                refund's own answer is recorded as applied
#   provider down the service stopped, reply timeout 1s: test_ok times out,
#                the voids get no answer -> after oms.max_attempts voids
#                the saga is stuck (compensation_stuck dead letter)
# Then every command read back from oms.payment-commands is checked against
# docs/events/payment.<command>.v1.json and the CloudEvents headers schema,
# every service reply against payment-reply.v1.json (test/payment/validate.py).
# No sleep synchronises anything: every wait polls a condition with a
# generous deadline.
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
# shellcheck source=test/payment/lib.sh
source "$OMS_ROOT/test/payment/lib.sh"

DB=payment_kafka
N_OOO=50
LATE_DELAY_MS=6000
WORK=""

cleanup() {
	wt_keep_log payment_kafka
	if { ((WT_RC != 0)) || [[ "${WT_KEEP_LOG:-0}" == 1 ]]; } && [[ -n "$WORK" ]]; then
		mkdir -p "$OMS_LOG_DIR/test/payment_kafka"
		cp -r "$WORK"/. "$OMS_LOG_DIR/test/payment_kafka/" 2>/dev/null || true
	fi
	[[ -z "$WORK" ]] || rm -rf "$WORK"
}

T0=$(wt_now)
# Main shell, not $(...): the broker lives as long as this script.
oms_kafka_start --partitions 3 --topic oms.order-events --topic "$PM_COMMANDS_TOPIC" --topic "$PM_REPLIES_TOPIC"
wt_start_cluster "oms.database_name = '$DB'" \
	"oms.kafka_brokers = '$OMS_KAFKA_BOOTSTRAP'" \
	"oms.payment_provider = 'kafka'" \
	"oms.payment_reply_timeout = '2min'" \
	"oms.step_timeout = '10min'"
oms_on_exit cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oms-payment-kafka.XXXXXX")
SVC_LOG=$WORK/service.log
wt_diag "mock Kafka: $OMS_KAFKA_BOOTSTRAP; work dir $WORK"

oms_fresh_db "$DB" >/dev/null
wt_setup_stock "$DB" 5 1000000

worker_up() { [[ -n "$(wt_worker_pid "$DB")" ]]; }
if ! wt_wait_until 60 worker_up; then
	wt_not_ok "the worker serves $DB" "$(tail -n 20 "$WT_LOG")"
	exit 1
fi
WORKER_PID=$(wt_worker_pid "$DB")

# The commands as they are on the topic, read by an independent consumer.
rl_consumer_start "$PM_COMMANDS_TOPIC" "$WORK/commands.json"
if pm_service_start "$SVC_LOG" --delay-ms "$LATE_DELAY_MS" --delay-commands charge --ooo-max-ms 400; then
	wt_ok "the payment service joined its consumer group"
else
	wt_not_ok "the payment service joined its consumer group" "$(tail -n 5 "$SVC_LOG" "$SVC_LOG.err" 2>&1)"
	exit 1
fi
if pm_inbox_ready "$DB" 90; then
	wt_ok "the worker consumes $PM_REPLIES_TOPIC (a probe reply reached oms.inbox)"
else
	wt_not_ok "the worker consumes $PM_REPLIES_TOPIC (a probe reply reached oms.inbox)" \
		"$(wt_sql_quiet "$DB" "SELECT * FROM oms_worker_status()")" "$(grep -E 'oms worker' "$WT_LOG" | tail -n 10)"
	exit 1
fi
wt_diag "set-up took $(wt_elapsed "$T0") s"

# ------------------------------------------------------------ helpers
# SQL: the open dead letters of kind KIND, probes left out.
dead_letters_sql() {
	printf "SELECT %s FROM oms.dead_letters WHERE kind = '%s' AND coalesce(payload ->> 'message_id', '') NOT LIKE 'probe-%%'" "$2" "$1"
}
state_of() {
	local id=$1
	wt_sql_quiet "$DB" "SELECT format('order %s, saga %s/%s step %s, steps: %s', o.status, s.status, s.outcome, s.step_no,
			(SELECT string_agg(format('%s=%s(%s)', t.name, t.status, t.attempts), ' ' ORDER BY t.step_no)
			 FROM oms.saga_steps AS t WHERE t.saga_id = s.id))
		FROM oms.orders AS o JOIN oms.sagas AS s ON s.order_id = o.id WHERE o.id = '$id'"
	wt_sql_quiet "$DB" "SELECT correlation_id, command FROM oms.payment_commands WHERE order_id = '$id'"
	wt_sql_quiet "$DB" "SELECT message_id, correlation_id, outcome, result FROM oms.inbox i
		WHERE correlation_id IN (SELECT correlation_id FROM oms.payment_commands WHERE order_id = '$id')"
	grep -F "order=$id" "$SVC_LOG" | cut -c1-160 || true
}
# Usage: wait_status LABEL ORDER STATUS: one ok/not ok line.
wait_status() {
	local label=$1 id=$2 status=$3
	if wt_wait_until 60 pm_status_is "$DB" "$id" "$status"; then
		wt_ok "$label: the order is $status"
	else
		wt_not_ok "$label: the order is $status" "$(state_of "$id")"
	fi
}
# Usage: payment_is ORDER 'SQL condition on p (oms.payments) and o (oms.orders)'
payment_is() {
	wt_sql_true "$DB" "SELECT $2 FROM oms.payments AS p JOIN oms.orders AS o ON o.id = p.order_id WHERE o.id = '$1'"
}
payment_row() {
	wt_sql_quiet "$DB" "SELECT format('amount %s authorized %s captured %s refunded %s status %s reference %s (order total %s)',
		p.amount, p.authorized, p.captured, p.refunded, p.status, p.provider_reference, o.total)
		FROM oms.payments AS p JOIN oms.orders AS o ON o.id = p.order_id WHERE o.id = '$1'"
}
# Timeline entries of ORDER of TYPE.
timeline_count() {
	wt_sql_quiet "$DB" "SELECT count(*) FROM oms.order_events WHERE order_id = '$1' AND event_type = '$2'"
}
# inbox results of the commands of ORDER, "result:count" sorted.
inbox_results() {
	wt_sql_quiet "$DB" "SELECT string_agg(format('%s:%s', result, n), ' ' ORDER BY result) FROM (
		SELECT i.result, count(*) AS n FROM oms.inbox AS i
		WHERE i.correlation_id IN (SELECT correlation_id FROM oms.payment_commands WHERE order_id = '$1')
		GROUP BY 1) AS r"
}
cond() { if "$@"; then echo 0; else echo 1; fi; }

# ------------------------------------------------------------ phase 1
T1=$(wt_now)
O_OK=$(pm_new_order "$DB" approve)
O_DEC=$(pm_new_order "$DB" decline 3)
O_DUP=$(pm_new_order "$DB" duplicate)
O_GAR=$(pm_new_order "$DB" garbage)
O_UNK=$(pm_new_order "$DB" unknown)
O_SQL=$(pm_new_order "$DB" sqlresult)
O_FLAKY=$(pm_new_order "$DB" flaky)
wt_sql "$DB" "SELECT count(oms_create_order('ooo-' || i,
		jsonb_build_array(jsonb_build_object('sku', 'SKU-0' || (i % 5 + 1), 'quantity', 1 + i % 3, 'unit_price', 100 + i))))
	FROM generate_series(1, $N_OOO) AS i" >/dev/null
{
	printf "SELECT 1 FROM oms_pay_order('%s', '%s');\n" "$O_OK" test_ok "$O_DEC" test_decline \
		"$O_DUP" test_duplicate "$O_GAR" test_garbage "$O_UNK" test_unknown "$O_SQL" test_hang "$O_FLAKY" test_flaky
	wt_sql "$DB" "SELECT format('SELECT 1 FROM oms_pay_order(%L, %L);', id, 'test_out_of_order')
		FROM oms.orders WHERE customer_id LIKE 'ooo-%' ORDER BY split_part(customer_id, '-', 2)::int"
} >"$WORK/pay1.sql"
rc=0
oms_psql -d "$DB" -f "$WORK/pay1.sql" >"$WORK/pay1.log" 2>&1 || rc=$?
wt_check "phase 1: $((7 + N_OOO)) orders paid, each in its own transaction" "$rc" "$(tail -n 5 "$WORK/pay1.log")"

# --- approve
wait_status "approve (test_ok)" "$O_OK" confirmed
P_OK=$(pm_payment_id "$DB" "$O_OK")
C_OK=$(pm_corr "$DB" "$O_OK" charge)
REF_OK=$(pm_field "$SVC_LOG" reply reference "corr=$C_OK" kind=real | head -n 1)
wt_check "approve: captured = amount = order total, status captured, the service's reference ($REF_OK) kept" \
	"$(cond payment_is "$O_OK" "p.captured = o.total AND p.authorized = o.total AND p.amount = o.total
		AND p.refunded = 0 AND p.status = 'captured' AND p.provider_reference = '$REF_OK'")" "$(payment_row "$O_OK")"
wt_check "approve: one charge command (correlation $C_OK) decided once by the service, one applied reply" \
	"$(cond test "$(pm_count "$SVC_LOG" decision "payment=$P_OK")|$(pm_count "$SVC_LOG" decision "corr=$C_OK" cmd=charge outcome=approved)|$(inbox_results "$O_OK")" \
		= "1|1|applied:1")" "$(state_of "$O_OK")"

# --- decline
wait_status "decline (test_decline)" "$O_DEC" failed
P_DEC=$(pm_payment_id "$DB" "$O_DEC")
wt_check "decline: payment declined, nothing captured" \
	"$(cond payment_is "$O_DEC" "p.captured = 0 AND p.authorized = 0 AND p.status = 'declined'")" "$(payment_row "$O_DEC")"
wt_check "decline: the reservation was released" \
	"$(cond wt_sql_true "$DB" "SELECT count(*) > 0 AND bool_and(status = 'released') FROM oms.reservations WHERE order_id = '$O_DEC'")" \
	"$(wt_sql_quiet "$DB" "SELECT sku, quantity, status FROM oms.reservations WHERE order_id = '$O_DEC'")"
wt_check "decline: saga compensated with outcome failed, a saga_failed dead letter with OM013" \
	"$(cond wt_sql_true "$DB" "SELECT (SELECT status = 'compensated' AND outcome = 'failed' FROM oms.sagas WHERE order_id = '$O_DEC')
		AND (SELECT count(*) = 1 AND bool_and(error ->> 'sqlstate' = 'OM013') FROM oms.dead_letters
			 WHERE order_id = '$O_DEC' AND kind = 'saga_failed')")" "$(state_of "$O_DEC")"
wt_check "decline: the service declined one charge, and no void was sent for it" \
	"$(cond test "$(pm_count "$SVC_LOG" decision "payment=$P_DEC" cmd=charge outcome=declined)|$(pm_count "$SVC_LOG" command "payment=$P_DEC" cmd=void)" = "1|0")" \
	"$(state_of "$O_DEC")"

# --- duplicate
wait_status "duplicate (test_duplicate)" "$O_DUP" confirmed
P_DUP=$(pm_payment_id "$DB" "$O_DUP")
C_DUP=$(pm_corr "$DB" "$O_DUP" charge)
dup_ids=$(pm_field "$SVC_LOG" reply ce_id "corr=$C_DUP" | sort | uniq -c | awk '{print $1 ":" $2}')
wt_check "duplicate: the service delivered the same reply twice under one ce_id" \
	"$(cond test "${dup_ids%%:*}" = 2)" "$dup_ids"
# A copy under a new message id: judged a duplicate of the applied reply,
# it has no effect and leaves no inbox row (the inbox keeps one row per
# reply that had an effect).  Once the consumer committed its offset past
# the copy, the worker has handled it.
DUP_COPY=dup-copy-$RANDOM$RANDOM
dups_before=$(wt_sql "$DB" "SELECT (oms._inbox_shmem_status() ->> 'duplicates')::int")
body=$(jq -cn --arg c "$C_DUP" '{correlation_id: $c, outcome: "approved", reference: "copy", message: "a copy"}')
pm_produce_reply "$P_DUP" "$DUP_COPY" "$body" >/dev/null
copy_handled() {
	pm_committed_all "oms-$DB" &&
		wt_sql_true "$DB" "SELECT (oms._inbox_shmem_status() ->> 'duplicates')::int > $dups_before"
}
if wt_wait_until 60 copy_handled; then
	wt_ok "duplicate: a copy of the reply under a new message id was consumed and counted as a duplicate"
else
	wt_not_ok "duplicate: a copy of the reply under a new message id was consumed and counted as a duplicate" \
		"$(state_of "$O_DUP")" "$(wt_sql_quiet "$DB" "SELECT oms._inbox_shmem_status()")" "$(pm_offsets "oms-$DB")"
fi
wt_check "duplicate: exactly one effect: captured once, one payment.reply, pay step completed once" \
	"$(cond test "$(payment_is "$O_DUP" "p.captured = o.total AND p.status = 'captured' AND p.provider_reference <> 'copy'" && echo t)|$(timeline_count "$O_DUP" payment.reply)|$(timeline_count "$O_DUP" order.confirmed)|$(wt_sql_quiet "$DB" "SELECT count(*) FROM oms.order_events WHERE order_id = '$O_DUP' AND event_type = 'saga.step_completed' AND data ->> 'step' = 'pay'")" \
		= "t|1|1|1")" "$(payment_row "$O_DUP")" "$(state_of "$O_DUP")"
wt_check "duplicate: the inbox keeps the applied reply only (no row for the copy)" \
	"$(cond test "$(inbox_results "$O_DUP")|$(wt_sql_quiet "$DB" "SELECT count(*) FROM oms.inbox WHERE message_id = '$DUP_COPY'")" = "applied:1|0")" \
	"$(inbox_results "$O_DUP")"

# --- out of order
ooo_done() {
	wt_sql_true "$DB" "SELECT count(*) = $N_OOO AND bool_and(status = 'confirmed') FROM oms.orders WHERE customer_id LIKE 'ooo-%'"
}
if wt_wait_until 90 ooo_done; then
	wt_ok "out of order: all $N_OOO orders confirmed"
else
	wt_not_ok "out of order: all $N_OOO orders confirmed" \
		"$(wt_sql_quiet "$DB" "SELECT status, count(*) FROM oms.orders WHERE customer_id LIKE 'ooo-%' GROUP BY 1")"
fi
wt_check "out of order: each captured once, one payment.reply each" \
	"$(cond wt_sql_true "$DB" "SELECT count(*) = $N_OOO AND bool_and(p.captured = o.total AND p.status = 'captured')
		AND bool_and((SELECT count(*) FROM oms.order_events AS e WHERE e.order_id = o.id AND e.event_type = 'payment.reply') = 1)
		FROM oms.orders AS o JOIN oms.payments AS p ON p.order_id = o.id WHERE o.customer_id LIKE 'ooo-%'")"
# The replies really came in another order than the commands.
inversions=$(awk '$1 == "decision" && / method=test_out_of_order / { for (i = 2; i <= NF; i++) if ($i ~ /^corr=/) c[$i] = ++n }
	$1 == "reply" { for (i = 2; i <= NF; i++) if (($i in c) && !seen[$i]++) { if (c[$i] < last) inv++; last = c[$i] } }
	END { print inv + 0 }' "$SVC_LOG")
wt_check "out of order: the service's replies left in another order than the commands came ($inversions inversions)" \
	"$(cond test "$inversions" -gt 0)"

# --- malformed
wait_status "malformed (test_garbage, then the real approval)" "$O_GAR" confirmed
C_GAR=$(pm_corr "$DB" "$O_GAR" charge)
G_ID=$(pm_field "$SVC_LOG" reply ce_id "corr=$C_GAR" kind=garbage | head -n 1)
G_RAW="{\"correlation_id\": \"$C_GAR\", \"outcome\": appro"
wt_check "malformed: a dead letter of kind 'reply' holds the raw message (message id $G_ID)" \
	"$(cond wt_sql_true "$DB" "SELECT count(*) = 1 AND bool_and(payload ->> 'raw' = \$raw\$$G_RAW\$raw\$)
		FROM oms.dead_letters WHERE kind = 'reply' AND payload ->> 'message_id' = '$G_ID'")" \
	"$(wt_sql_quiet "$DB" "$(dead_letters_sql reply 'id, error, payload')")"
wt_check "malformed: the inbox marks it rejected; the later real reply on its partition applied" \
	"$(cond test "$(wt_sql_quiet "$DB" "SELECT result FROM oms.inbox WHERE message_id = '$G_ID'")|$(inbox_results "$O_GAR")" = "rejected|applied:1")" \
	"$(state_of "$O_GAR")"

# --- unknown correlation id
wait_status "unknown correlation id (test_unknown, then the real approval)" "$O_UNK" confirmed
C_UNK=$(pm_corr "$DB" "$O_UNK" charge)
U_CORR=$(pm_field "$SVC_LOG" reply corr "payment=$(pm_payment_id "$DB" "$O_UNK")" kind=unknown | head -n 1)
U_ID=$(pm_field "$SVC_LOG" reply ce_id "corr=$U_CORR" kind=unknown | head -n 1)
wt_check "unknown correlation id: a dead letter of kind 'reply' names it ($U_CORR)" \
	"$(cond wt_sql_true "$DB" "SELECT count(*) = 1 AND bool_and(error ->> 'message' LIKE '%$U_CORR%' AND payload ->> 'raw' LIKE '%$U_CORR%')
		FROM oms.dead_letters WHERE kind = 'reply' AND payload ->> 'message_id' = '$U_ID'")" \
	"$(wt_sql_quiet "$DB" "$(dead_letters_sql reply 'id, error, payload')")"
wt_check "unknown correlation id: the real reply to $C_UNK applied, one capture for the order" \
	"$(cond test "$(payment_is "$O_UNK" "p.captured = o.total AND p.status = 'captured'" && echo t)|$(timeline_count "$O_UNK" payment.reply)|$(inbox_results "$O_UNK")" = "t|1|applied:1")" \
	"$(payment_row "$O_UNK")" "$(state_of "$O_UNK")"

# --- oms_payment_result from SQL
P_SQL=$(pm_payment_id "$DB" "$O_SQL")
hang_seen() { (($(pm_count "$SVC_LOG" decision "payment=$P_SQL" cmd=charge outcome=hang) == 1)); }
if wt_wait_until 60 hang_seen; then
	wt_ok "SQL result: the service got the charge of a test_hang payment and does not answer"
else
	wt_not_ok "SQL result: the service got the charge of a test_hang payment and does not answer" "$(state_of "$O_SQL")"
fi
C_SQL=$(pm_corr "$DB" "$O_SQL" charge)
r1=$(wt_sql "$DB" "SELECT oms_payment_result('$C_SQL', 'approved', '{\"reference\": \"sql-ref-1\", \"message\": \"webhook\"}') ->> 'result'" 2>&1 || true)
wait_status "SQL result: oms_payment_result('$C_SQL', 'approved') answered ($r1)" "$O_SQL" confirmed
r2=$(wt_sql "$DB" "SELECT oms_payment_result('$C_SQL', 'approved', '{\"reference\": \"sql-ref-1\", \"message\": \"webhook\"}') ->> 'result'" 2>&1 || true)
wt_check "SQL result: first call applied, the identical second call is a duplicate" \
	"$(cond test "$r1|$r2" = "applied|duplicate")" "first: $r1" "second: $r2"
wt_check "SQL result: one capture with the reference given, one payment.reply" \
	"$(cond test "$(payment_is "$O_SQL" "p.captured = o.total AND p.status = 'captured' AND p.provider_reference = 'sql-ref-1'" && echo t)|$(timeline_count "$O_SQL" payment.reply)|$(inbox_results "$O_SQL")" = "t|1|applied:1")" \
	"$(payment_row "$O_SQL")" "$(state_of "$O_SQL")"
# --- transient failures
wait_status "flaky (test_flaky: 'failed' twice, then approved)" "$O_FLAKY" confirmed
P_FLAKY=$(pm_payment_id "$DB" "$O_FLAKY")
wt_check "flaky: three charge attempts, each its own correlation id (:1 :2 failed, :3 approved), all applied, captured once" \
	"$(cond test "$(pm_field "$SVC_LOG" decision outcome "payment=$P_FLAKY" cmd=charge | tr '\n' ' ')|$(inbox_results "$O_FLAKY")|$(payment_is "$O_FLAKY" "p.captured = o.total AND p.status = 'captured'" && echo t)" \
		= "failed failed approved |applied:3|t")" \
	"$(payment_row "$O_FLAKY")" "$(state_of "$O_FLAKY")"
wt_diag "phase 1 took $(wt_elapsed "$T1") s"

# ------------------------------------------------------------ phase 2
T2=$(wt_now)
if pm_set_reply_timeout "$DB" 3s; then
	wt_ok "phase 2: oms.payment_reply_timeout = 3s reached the worker"
else
	wt_not_ok "phase 2: oms.payment_reply_timeout = 3s reached the worker" "$(wt_sql_quiet "$DB" "SELECT * FROM oms_worker_status()")"
fi
O_HANG=$(pm_new_order "$DB" timeout)
O_LATE=$(pm_new_order "$DB" late)
wt_sql "$DB" "SELECT 1 FROM oms_pay_order('$O_HANG', 'test_hang')" >/dev/null
wt_sql "$DB" "SELECT 1 FROM oms_pay_order('$O_LATE', 'test_delay')" >/dev/null
P_HANG=$(pm_payment_id "$DB" "$O_HANG")
P_LATE=$(pm_payment_id "$DB" "$O_LATE")

# --- timeout
wait_status "timeout (test_hang, reply timeout 3s)" "$O_HANG" failed
wt_check "timeout: the pay step failed with OM012 (no answer), a saga_failed dead letter" \
	"$(cond wt_sql_true "$DB" "SELECT count(*) = 1 AND bool_and(error ->> 'sqlstate' = 'OM012') FROM oms.dead_letters
		WHERE order_id = '$O_HANG' AND kind = 'saga_failed'")" "$(state_of "$O_HANG")"
void_seen() { (($(pm_count "$SVC_LOG" decision "payment=$P_HANG" cmd=void outcome=approved) >= 1)); }
wt_check "timeout: a void command reached the service" "$(cond wt_wait_until 30 void_seen)" "$(state_of "$O_HANG")"
wt_check "timeout: the payment is voided, nothing captured, the reservation released" \
	"$(cond payment_is "$O_HANG" "p.captured = 0 AND p.status = 'voided'
		AND (SELECT bool_and(status = 'released') FROM oms.reservations WHERE order_id = o.id)")" "$(payment_row "$O_HANG")"

# --- late reply
wait_status "late reply (test_delay ${LATE_DELAY_MS} ms > timeout 3s)" "$O_LATE" failed
C_LATE=$(pm_corr "$DB" "$O_LATE" charge | head -n 1)
late_letter() {
	wt_sql_true "$DB" "SELECT EXISTS (SELECT FROM oms.dead_letters WHERE kind = 'late_reply' AND order_id = '$O_LATE'
		AND payload -> 'reply' ->> 'correlation_id' = '$C_LATE')"
}
wt_check "late reply: the late approval of the charge ($C_LATE) became a late_reply dead letter" \
	"$(cond wt_wait_until 60 late_letter)" "$(state_of "$O_LATE")" \
	"$(wt_sql_quiet "$DB" "SELECT kind, step, error, payload FROM oms.dead_letters WHERE order_id = '$O_LATE'")"
refund_decided() { (($(pm_count "$SVC_LOG" decision "payment=$P_LATE" cmd=refund) >= 1)); }
wt_check "late reply: a refund command for the late charge reached the service" \
	"$(cond wt_wait_until 60 refund_decided)" "$(state_of "$O_LATE")"
refund_on_topic() {
	grep -F "\"key\":\"$P_LATE\"" "$WORK/commands.json" | grep -q 'ce_type","oms.payment.refund"'
}
wt_check "late reply: the refund command is on $PM_COMMANDS_TOPIC (ce_type oms.payment.refund, key = payment id)" \
	"$(cond wt_wait_until 30 refund_on_topic)" "$(grep -F "$P_LATE" "$WORK/commands.json" | cut -c1-300)"
R_LATE=$(pm_field "$SVC_LOG" decision corr "payment=$P_LATE" cmd=refund | head -n 1)
# The refund answers a command oms sent for the late charge: its outcome
# should be recorded (a failed or declined refund needs a retry or an
# operator), not filed as one more "reply after the saga stopped waiting".
refund_answered() {
	wt_sql_true "$DB" "SELECT EXISTS (SELECT FROM oms.inbox WHERE correlation_id = '$R_LATE')"
}
if [[ -n "$R_LATE" ]] && wt_wait_until 60 refund_answered; then
	res=$(wt_sql_quiet "$DB" "SELECT string_agg(result, ',') FROM oms.inbox WHERE correlation_id = '$R_LATE'")
	letters=$(wt_sql_quiet "$DB" "SELECT count(*) FROM oms.dead_letters WHERE order_id = '$O_LATE' AND kind = 'late_reply'")
	wt_check "late reply: the refund's approval ($R_LATE) is recorded as its outcome, not as a second late_reply dead letter" \
		"$(cond test "$res|$letters" = "applied|1")" \
		"inbox result: $res; late_reply dead letters of the order: $letters" \
		"$(wt_sql_quiet "$DB" "SELECT kind, step, payload -> 'reply' ->> 'correlation_id' FROM oms.dead_letters WHERE order_id = '$O_LATE'")"
else
	wt_not_ok "late reply: the refund's approval reached the inbox" "refund correlation '$R_LATE'" "$(state_of "$O_LATE")"
fi

# --- the commands and replies on Kafka against docs/events
commands_read() { rl_outbox_empty "$DB" && rl_caught_up "$PM_COMMANDS_TOPIC" 3 "$WORK/commands.json"; }
if wt_wait_until 60 commands_read; then
	rc=0
	timeout 60 kcat -C -b "$OMS_KAFKA_BOOTSTRAP" -t "$PM_REPLIES_TOPIC" -o beginning -e -J -q \
		>"$WORK/replies.json" 2>"$WORK/replies.err" || rc=$?
	((rc == 0)) || wt_diag "kcat on $PM_REPLIES_TOPIC: $(head -n 3 "$WORK/replies.err")"
	rc=0
	"$PM_PY" "$PM_DIR/validate.py" --commands "$WORK/commands.json" --replies "$WORK/replies.json" \
		--replies-topic "$PM_REPLIES_TOPIC" >"$WORK/validate.out" 2>&1 || rc=$?
	sed -E 's/^(not ok|ok) - /\1 - schemas: /' "$WORK/validate.out"
	((rc == 0)) || WT_RC=1
else
	wt_not_ok "schemas: every command published and read back" \
		"$(wt_sql_quiet "$DB" "SELECT count(*) FROM oms.outbox")" "$(tail -n 3 "$WORK/commands.json.err" 2>/dev/null)"
fi

# --- provider down: compensations that never get an answer are bounded
# by oms.max_attempts (default 5) like any compensation, then the saga is
# stuck for an operator; they must not send voids forever.
pm_service_stop
pm_set_reply_timeout "$DB" 1s || wt_diag "oms.payment_reply_timeout = 1s: the worker did not loop twice"
O_DOWN=$(pm_new_order "$DB" down)
wt_sql "$DB" "SELECT 1 FROM oms_pay_order('$O_DOWN', 'test_ok')" >/dev/null
MAX_ATTEMPTS=$(wt_sql "$DB" "SELECT current_setting('oms.max_attempts')")
voids() { wt_sql_quiet "$DB" "SELECT count(*) FROM oms.payment_commands WHERE order_id = '$O_DOWN' AND command = 'void'"; }
# Stuck, or clearly past the bound.
down_settled() {
	wt_sql_true "$DB" "SELECT status = 'stuck' FROM oms.sagas WHERE order_id = '$O_DOWN'" ||
		(($(voids) > MAX_ATTEMPTS + 2))
}
wt_wait_until 60 down_settled || true
wt_check "provider down: after $MAX_ATTEMPTS unanswered voids the saga is stuck with a compensation_stuck dead letter" \
	"$(cond wt_sql_true "$DB" "SELECT (SELECT status = 'stuck' FROM oms.sagas WHERE order_id = '$O_DOWN')
		AND EXISTS (SELECT FROM oms.dead_letters WHERE order_id = '$O_DOWN' AND kind = 'compensation_stuck')
		AND (SELECT count(*) <= $MAX_ATTEMPTS FROM oms.payment_commands WHERE order_id = '$O_DOWN' AND command = 'void')")" \
	"void commands sent so far: $(voids) (oms.max_attempts = $MAX_ATTEMPTS)" "$(state_of "$O_DOWN")"
wt_diag "phase 2 took $(wt_elapsed "$T2") s"

# ------------------------------------------------------------ overall
GROUP=oms-$DB
if wt_wait_until 60 pm_committed_all "$GROUP"; then
	wt_ok "the reply consumer (group $GROUP) committed every reply, the malformed ones too"
else
	wt_not_ok "the reply consumer (group $GROUP) committed every reply, the malformed ones too" \
		"partition committed high: $(pm_offsets "$GROUP" | tr '\n' ';')"
fi
now_pid=$(wt_worker_pid "$DB")
errors=$(grep -E 'oms (saga )?worker: (ERROR|FATAL|PANIC):|event=(saga_error|worker_batch_failed)' "$WT_LOG" || true)
wt_check "one worker all along (pid $WORKER_PID), no ERROR in the server log" \
	"$([[ "$now_pid" == "$WORKER_PID" && -z "$errors" ]] && echo 0 || echo 1)" \
	"worker pid $WORKER_PID -> $now_pid" "$(head -n 10 <<<"$errors")"
bad=$(pm_count "$SVC_LOG" bad_command)
# (the service was stopped for the last scenario)
wt_check "the service could read every command ($(pm_count "$SVC_LOG" command) commands)" "$(cond test "$bad" = 0)" \
	"$(grep '^bad_command' "$SVC_LOG" | head -n 3)"
wt_diag "suite took $(wt_elapsed "$T0") s"

exit "$WT_RC"
