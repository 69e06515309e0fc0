#!/usr/bin/env bash
# test/suites/worker_logs.sh: the worker's structured log lines.
#
# This suite's own cluster (oms.database_name = worker_logs) with a mock
# Kafka cluster.  The server log is parsed line by line ("oms: event=NAME
# key=value ...", quoted values unescaped) and checked field by field:
#   1. worker_started names the database and the worker's pid.
#   2. A flaky payment (two transient failures, then approved): two
#      saga_step_failed lines, step=pay, attempts 1 and 2, sqlstate OM010,
#      a retry_in_ms, the saga and order ids and the message.
#   3. A declined payment: saga_failed (sqlstate OM013, its dead letter's
#      id), then saga_compensated outcome=failed.
#   4. A payment reply that cannot be applied: a payment_reply_rejected
#      WARNING with its dead letter's id.
#   5. Brokers down for a while, with oms.log_min_interval = 1h and orders
#      created meanwhile so that the relay keeps failing: at most two
#      relay-failure lines (the rest counted, never a time assertion), one
#      breaker_opened; once the brokers are back, relay_recovered once with
#      the count of suppressed lines, and breaker_closed.
#   6. The worker's exit logs worker_stopped with its pid.
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

DB=worker_logs
TOPIC=oms.order-events
WORK=""

cleanup() {
	wt_keep_log worker_logs
	[[ -z "$WORK" ]] || rm -rf "$WORK"
}

oms_kafka_start --topic "$TOPIC" --partitions 1
wt_start_cluster "oms.database_name = '$DB'" \
	"oms.kafka_brokers = '$OMS_KAFKA_BOOTSTRAP'" \
	"oms.retry_base = '50ms'" \
	"oms.relay_breaker_failures = 2" \
	"oms.relay_breaker_cooldown = '300ms'" \
	"oms.relay_ack_timeout = '2s'"
oms_on_exit cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oms-worker-logs.XXXXXX")

oms_fresh_db "$DB" >/dev/null
wt_setup_stock "$DB" 3 1000

# Usage: events FROM_OFFSET EVENT [FIELD=VALUE ...] -> the matching lines of
# the server log after byte FROM_OFFSET, one JSON object of fields per line
# (plus "level": LOG or WARNING).
events() {
	local from=$1
	shift
	rl_log_since "$from" | python3 -c '
import json, re, sys
event, want = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
field = re.compile(r"""(\w+)=("(?:[^"\\]|\\.)*"|\S*)""")
def unquote(v):
    if not v.startswith("\""):
        return v
    return re.sub(r"\\(x[0-9a-f]{2}|.)", lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), chr(int(m.group(1)[1:], 16)) if m.group(1).startswith("x") and len(m.group(1)) == 3 else m.group(1)), v[1:-1])
for line in sys.stdin:
    m = re.search(r"\b(LOG|WARNING):\s+oms: (event=.*)$", line.rstrip("\n"))
    if not m:
        continue
    fields = {k: unquote(v) for k, v in field.findall(m.group(2))}
    fields["level"] = m.group(1)
    if fields.get("event") == event and all(fields.get(k) == v for k, v in want.items()):
        print(json.dumps(fields, sort_keys=True))
' "$@"
}
count_events() { events "$@" | wc -l; }
# Usage: field JSON NAME -> one field of an events() line.
field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$1" "$2"; }

worker_up() { [[ -n "$(wt_worker_pid "$DB")" ]]; }
if ! wt_wait_until 60 worker_up; then
	wt_not_ok "the worker serves $DB" "$(tail -n 20 "$WT_LOG")"
	exit 1
fi
WORKER_PID=$(wt_worker_pid "$DB")

# ------------------------------------------------------------ 1. started
started() { [[ "$(count_events 0 worker_started database="$DB" pid="$WORKER_PID")" == 1 ]]; }
if wt_wait_until 30 started; then
	wt_ok "worker_started: database=$DB pid=$WORKER_PID, at LOG"
else
	wt_not_ok "worker_started: database=$DB pid=$WORKER_PID, at LOG" "$(grep 'event=worker_started' "$WT_LOG")"
fi
line=$(events 0 worker_started database="$DB" pid="$WORKER_PID" | sed -n 1p)
wt_check "worker_started is a LOG line" "$([[ "$(field "$line" level)" == LOG ]] && echo 0 || echo 1)" "$line"

# ------------------------------------------------------------ 2, 3. sagas
ITEMS='[{"sku": "SKU-01", "quantity": 1, "unit_price": 500}]'
new_order() {
	local customer=$1 method=$2 id
	id=$(wt_sql "$DB" "SELECT oms_create_order('$customer', '$ITEMS') ->> 'order_id'")
	wt_sql "$DB" "SELECT 1 FROM oms_pay_order('$id', '$method')" >/dev/null
	printf '%s\n' "$id"
}
O_FLAKY=$(new_order flaky test_flaky)
O_DECLINED=$(new_order declined test_decline)
S_FLAKY=$(wt_sql "$DB" "SELECT id FROM oms.sagas WHERE order_id = '$O_FLAKY'")
S_DECLINED=$(wt_sql "$DB" "SELECT id FROM oms.sagas WHERE order_id = '$O_DECLINED'")
status_of() { wt_sql_quiet "$DB" "SELECT status FROM oms.orders WHERE id = '$1'"; }
settled() { [[ "$(status_of "$O_FLAKY")" == confirmed && "$(status_of "$O_DECLINED")" == failed ]]; }
if wt_wait_until 60 settled; then
	wt_ok "the flaky payment was confirmed after its retries, the declined one failed"
else
	wt_not_ok "the flaky payment was confirmed after its retries, the declined one failed" \
		"$(wt_sql_quiet "$DB" "SELECT customer_id, status FROM oms.orders")"
fi
compensated() { [[ "$(count_events 0 saga_compensated saga_id="$S_DECLINED")" == 1 ]]; }
wt_wait_until 30 compensated || true

retries=$(events 0 saga_step_failed saga_id="$S_FLAKY")
attempts=""
ok=0
while IFS= read -r line; do
	[[ -n "$line" ]] || continue
	attempts+="${attempts:+,}$(field "$line" attempt)"
	if [[ "$(field "$line" level)" != LOG || "$(field "$line" database)" != "$DB" ||
		"$(field "$line" order_id)" != "$O_FLAKY" || "$(field "$line" step)" != pay ||
		"$(field "$line" kind)" != fulfilment || "$(field "$line" sqlstate)" != OM010 ||
		! "$(field "$line" retry_in_ms)" =~ ^[0-9]+$ ||
		"$(field "$line" message)" != "payment failed: provider unavailable" ]]; then
		ok=1
	fi
done <<<"$retries"
wt_check "saga_step_failed (LOG) for each transient failure: database, saga_id, order_id, kind, step=pay, attempt, sqlstate=OM010, retry_in_ms, message" \
	"$([[ $ok == 0 && "$attempts" == 1,2 ]] && echo 0 || echo 1)" "attempts: $attempts" "$retries"

line=$(events 0 saga_failed saga_id="$S_DECLINED")
letter=$(wt_sql "$DB" "SELECT id FROM oms.dead_letters WHERE saga_id = '$S_DECLINED' AND kind = 'saga_failed'")
wt_check "saga_failed (LOG) for the declined payment: order_id, step=pay, attempt=1, sqlstate=OM013, dead_letter_id, message" \
	"$([[ "$(wc -l <<<"$line")" == 1 && "$(field "$line" level)" == LOG && "$(field "$line" order_id)" == "$O_DECLINED" &&
		"$(field "$line" step)" == pay && "$(field "$line" attempt)" == 1 && "$(field "$line" sqlstate)" == OM013 &&
		"$(field "$line" dead_letter_id)" == "$letter" && "$(field "$line" message)" == "payment declined: card declined" ]] &&
		echo 0 || echo 1)" "dead letter $letter" "$line"
line=$(events 0 saga_compensated saga_id="$S_DECLINED")
wt_check "saga_compensated (LOG) once the declined saga is compensated: order_id, outcome=failed" \
	"$([[ "$(wc -l <<<"$line")" == 1 && "$(field "$line" level)" == LOG && "$(field "$line" order_id)" == "$O_DECLINED" &&
		"$(field "$line" outcome)" == failed ]] && echo 0 || echo 1)" "$line"
none=$(count_events 0 saga_failed saga_id="$S_FLAKY")
wt_check "no saga_failed for the flaky payment that succeeded" "$([[ "$none" == 0 ]] && echo 0 || echo 1)"

# ------------------------------------------------------------ 4. rejected reply
# As the reply consumer hands it over (oms_payment_result refuses unknown
# correlation ids outright).
wt_sql "$DB" "SELECT oms._apply_payment_reply('worker-logs-1', '{\"correlation_id\": \"no-such-command\", \"outcome\": \"approved\", \"message\": \"a \\\"quoted\\\" word\"}')" >/dev/null
letter=$(wt_sql "$DB" "SELECT max(id) FROM oms.dead_letters WHERE kind = 'reply'")
rejected() { [[ "$(count_events 0 payment_reply_rejected dead_letter_id="$letter")" == 1 ]]; }
wt_wait_until 10 rejected || true
line=$(events 0 payment_reply_rejected dead_letter_id="$letter")
wt_check "payment_reply_rejected (WARNING): correlation_id, dead_letter_id, message with spaces and quotes read back" \
	"$([[ "$(field "$line" level)" == WARNING && "$(field "$line" correlation_id)" == no-such-command &&
		"$(field "$line" message)" == 'unknown correlation id "no-such-command"' ]] && echo 0 || echo 1)" "$line"

# ------------------------------------------------------------ 5. brokers down
if wt_wait_until 60 rl_outbox_empty "$DB"; then
	wt_ok "the relay published everything before the outage"
else
	wt_not_ok "the relay published everything before the outage" "$(rl_status "$DB" last_error)"
fi
wt_set_sighup oms.log_min_interval 1h
interval_set() { [[ "$(wt_sql_quiet "$DB" "SHOW oms.log_min_interval")" == 1h ]]; }
wt_wait_until 30 interval_set || true
FROM=$(rl_log_size)
B0=$(rl_status "$DB" batches_total)
oms_kafka_cmd "down all" >/dev/null
# New events while the brokers are down, each its own transaction, until
# the relay has failed batch after batch: the breaker opened and at least
# six of its probes failed too.
n=0
relay_failing() {
	n=$((n + 1))
	wt_sql "$DB" "SELECT 1 FROM oms_create_order('down-$n', '$ITEMS')" >/dev/null
	local b
	b=$(rl_status "$DB" batches_total) || return 1
	[[ -n "$b" ]] && ((b - B0 >= 8)) && [[ "$(rl_status "$DB" breaker)" != closed ]]
}
if wt_wait_until 120 relay_failing; then
	wt_ok "with the brokers down the relay kept failing ($(($(rl_status "$DB" batches_total) - B0)) failed batches) and the breaker opened"
else
	wt_not_ok "with the brokers down the relay kept failing and the breaker opened" "$(wt_sql_quiet "$DB" "SELECT oms_relay_status()")"
fi
DOWN_END=$(rl_log_size)
oms_kafka_cmd "up all" >/dev/null
recovered() { [[ "$(count_events "$FROM" relay_recovered database="$DB")" -ge 1 ]] && rl_outbox_empty "$DB"; }
if wt_wait_until 120 recovered; then
	wt_ok "after the outage the relay published the backlog and logged relay_recovered"
else
	wt_not_ok "after the outage the relay published the backlog and logged relay_recovered" \
		"$(wt_sql_quiet "$DB" "SELECT oms_relay_status()")" "$(rl_log_since "$FROM" | grep 'oms: event=' | tail -n 10)"
fi

failures=$(rl_log_since "$FROM" | head -c $((DOWN_END - FROM)) | grep -cE 'oms: event=relay_(batch|claim|settle)_failed' || true)
first=$(events "$FROM" relay_batch_failed | sed -n 1p)
wt_check "at most 2 relay failure lines during the outage ($failures), the first a WARNING with failed, events, breaker and error" \
	"$([[ "$failures" -ge 1 && "$failures" -le 2 && "$(field "$first" level)" == WARNING &&
		"$(field "$first" failed)" =~ ^[0-9]+$ && "$(field "$first" events)" =~ ^[0-9]+$ &&
		-n "$(field "$first" breaker)" && -n "$(field "$first" error)" ]] && echo 0 || echo 1)" \
	"$(rl_log_since "$FROM" | grep 'oms: event=relay_' | head -n 5)"
opened=$(count_events "$FROM" breaker_opened)
closed=$(count_events "$FROM" breaker_closed)
wt_check "breaker_opened logged once for the outage ($opened), breaker_closed once after it ($closed)" \
	"$([[ "$opened" == 1 && "$closed" == 1 ]] && echo 0 || echo 1)"
line=$(events "$FROM" relay_recovered)
suppressed=$(field "$line" suppressed)
wt_check "relay_recovered (LOG) logged once, counting the failure lines left out (suppressed=$suppressed, with the $failures logged: at least the 8 failed batches)" \
	"$([[ "$(wc -l <<<"$line")" == 1 && "$(field "$line" level)" == LOG && "$suppressed" =~ ^[0-9]+$ &&
		$((suppressed + failures)) -ge 8 ]] && echo 0 || echo 1)" "$line"
total=$(rl_log_since "$FROM" | head -c $((DOWN_END - FROM)) | grep -c 'oms: event=' || true)
wt_check "the whole outage logged a bounded number of oms lines ($total, at most 20)" \
	"$([[ "$total" -le 20 ]] && echo 0 || echo 1)" "$(rl_log_since "$FROM" | grep 'oms: event=' | cut -c 1-200 | sort | uniq -c | sort -rn | head -n 10)"

# ------------------------------------------------------------ 6. stopped
wt_sql postgres "SELECT pg_terminate_backend($WORKER_PID)" >/dev/null
stopped() { [[ "$(count_events 0 worker_stopped database="$DB" pid="$WORKER_PID")" == 1 ]]; }
if wt_wait_until 30 stopped; then
	wt_ok "worker_stopped: database=$DB pid=$WORKER_PID when the worker exits"
else
	wt_not_ok "worker_stopped: database=$DB pid=$WORKER_PID when the worker exits" "$(grep 'event=worker_' "$WT_LOG")"
fi

exit "$WT_RC"
