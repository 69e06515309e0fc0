#!/usr/bin/env bash
# test/suites/worker_wake.sh: API calls wake the oms worker at commit.
# On this suite's own cluster with oms.worker_naptime = 60s, so the worker's
# timeout cannot be what runs the work: each case reads the worker's last
# loop time first and asserts the work finished within 30 s of the call AND
# before that last loop + 60 s, i.e. before the naptime could have fired.
# Cases: one paid order; ten orders paid in one transaction (one wake);
# a cancel of a processing order whose payment waits (test_hang); a refund;
# a payment retried twice (test_flaky): no commit wakes the worker for a
# retry, it wakes when the retry falls due.
# The observed latencies are printed as diagnostics, never asserted.
# shellcheck disable=SC2317 # functions here are called indirectly (wait loops, exit hooks), which shellcheck 0.9 cannot follow
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"

DB=oms_wake
NAPTIME_S=60
DEADLINE=30

cleanup() { wt_keep_log worker_wake; }

# step_timeout well above the test's length: the test_hang payment must
# still be waiting when it is canceled.
wt_start_cluster "oms.database_name = '$DB'" "oms.step_timeout = '10min'"
oms_on_exit cleanup
oms_fresh_db "$DB" >/dev/null

# The launcher also looks for missing workers every naptime, so the long
# naptime is set only now that the database exists, followed by a restart:
# the launcher's first pass starts the worker at once.
wt_sql postgres "ALTER SYSTEM SET oms.worker_naptime = '${NAPTIME_S}s'"
oms_restart_cluster

# The worker is up and has finished its first loop: it now sleeps 60 s.
worker_idle() {
	wt_sql_true "$DB" "SELECT alive AND loops >= 1 FROM oms_worker_status() WHERE database = current_database()"
}
if wt_wait_until 60 worker_idle; then
	wt_ok "the worker runs with oms.worker_naptime = $(wt_sql "$DB" "SHOW oms.worker_naptime")"
else
	wt_not_ok "the worker runs with a 60 s naptime" "$(wt_sql_quiet "$DB" "SELECT * FROM oms_worker_status()")" \
		"$(tail -n 20 "$WT_LOG")"
	exit 1
fi

wt_sql "$DB" "SELECT oms_set_stock('SKU-W', 1000000)" >/dev/null
item='[{"sku": "SKU-W", "quantity": 1, "unit_price": 1000}]'
new_order() { wt_sql "$DB" "SELECT oms_create_order('wake', '$item', 'EUR') ->> 'order_id'"; }

# Usage: check_woken NAME ORDER_IDS START_EVENT END_EVENT SQL_OF_THE_CALL
# Runs the call, waits up to 30 s until every order has END_EVENT, then
# asserts it happened before the worker's naptime could have ended.
check_woken() {
	local name=$1 ids=$2 from=$3 to=$4 call=$5 last_loop done_sql res
	last_loop=$(wt_sql "$DB" "SELECT last_loop FROM oms_worker_status() WHERE database = current_database()")
	wt_sql "$DB" "$call" >/dev/null
	done_sql="SELECT count(DISTINCT order_id) = cardinality('{$ids}'::uuid[]) FROM oms.order_events
		WHERE event_type = '$to' AND order_id = ANY ('{$ids}'::uuid[])"
	if ! wt_wait_until "$DEADLINE" wt_sql_true "$DB" "$done_sql"; then
		wt_not_ok "$name" "not done within $DEADLINE s" \
			"$(wt_sql_quiet "$DB" "SELECT order_id, seq, event_type, occurred_at FROM oms.order_events WHERE order_id = ANY ('{$ids}'::uuid[]) ORDER BY 1, 2")" \
			"$(wt_sql_quiet "$DB" "SELECT * FROM oms_worker_status()")"
		return
	fi
	# before naptime | max latency ms | last event time
	res=$(wt_sql "$DB" "
		SELECT format('%s|%s|%s', max(t.occurred_at) < '$last_loop'::timestamptz + interval '$NAPTIME_S s',
					  round(max(extract(epoch FROM t.occurred_at - f.occurred_at)) * 1000, 1), max(t.occurred_at))
		FROM oms.order_events AS t
		JOIN oms.order_events AS f ON f.order_id = t.order_id AND f.event_type = '$from'
		WHERE t.event_type = '$to' AND t.order_id = ANY ('{$ids}'::uuid[])")
	IFS='|' read -r before latency at <<<"$res"
	wt_check "$name" "$before" "finished at $at; the worker last looped at $last_loop, naptime ${NAPTIME_S} s"
	wt_diag "$from -> $to: $latency ms (worker naptime ${NAPTIME_S} s)"
}

# 1. One paid order.
o1=$(new_order)
check_woken "a paid order is confirmed at once: the commit woke the worker" \
	"$o1" order.processing order.confirmed "SELECT oms_pay_order('$o1', 'test_ok')"

# 2. Ten orders paid in one transaction: one wake at commit covers them all.
ids=$(for _ in $(seq 10); do new_order; done | paste -sd, -)
check_woken "ten orders paid in one transaction are all confirmed at once" \
	"$ids" order.processing order.confirmed \
	"BEGIN; SELECT oms_pay_order(id, 'test_ok') FROM unnest('{$ids}'::uuid[]) AS id; COMMIT;"

# 3. A cancel: the payment of a test_hang order waits for an answer; the
#    cancel makes its saga due now and must wake the worker to compensate.
o3=$(new_order)
check_woken "a paid order's payment step starts at once (test_hang: it then waits)" \
	"$o3" order.processing saga.step_waiting "SELECT oms_pay_order('$o3', 'test_hang')"
check_woken "a cancel of a processing order is carried out at once: the commit woke the worker" \
	"$o3" order.cancel_requested order.canceled "SELECT oms_cancel_order('$o3', 'changed my mind')"

# 4. A refund of the confirmed order.
check_woken "a refund is carried out at once: the commit woke the worker" \
	"$o1" refund.requested order.refunded "SELECT oms_refund_order('$o1')"

# 5. Retries: test_flaky fails the payment twice, and each retry is due
#    after a backoff of about oms.retry_base (1 s), doubling.  No commit
#    wakes the worker for a retry: it must wake by itself when the retry
#    falls due, long before its 60 s naptime.
o5=$(new_order)
check_woken "a payment retried twice after its backoffs is confirmed: the worker woke when each retry fell due" \
	"$o5" order.processing order.confirmed "SELECT oms_pay_order('$o5', 'test_flaky')"

errors=$(grep -E 'oms (saga )?worker: (ERROR|PANIC):|event=(saga_error|worker_batch_failed)' "$WT_LOG" || true)
wt_check "no oms worker logged an ERROR and no saga failed to advance" \
	"$([[ -z "$errors" ]] && echo 0 || echo 1)" "$(head -n 20 <<<"$errors")"

exit "$WT_RC"
