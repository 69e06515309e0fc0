#!/usr/bin/env bash
# test/suites/worker_maintenance.sh: without pg_cron, the oms worker runs
# the maintenance tasks itself every oms.maintenance_interval.
#
# On this suite's own cluster (oms.database_name = oms_maint, no pg_cron,
# oms.maintenance_interval = 1s, oms.pending_order_ttl = 1h), with every
# task's period lowered to one second: an abandoned pending order (created
# two hours ago) gets canceled with reason "expired" by the worker alone,
# a young one is left pending, every task shows runs by the worker and
# keeps running; with oms.maintenance_interval = 0 the worker stops.
# shellcheck disable=SC2317 # functions here are called indirectly (wait loops, exit hooks), which shellcheck 0.9 cannot follow
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"

DB=oms_maint
DEADLINE=60

cleanup() { wt_keep_log worker_maintenance; }
wt_start_cluster "oms.database_name = '$DB'" "oms.maintenance_interval = 1" "oms.pending_order_ttl = '1h'"
oms_on_exit cleanup
oms_fresh_db "$DB" >/dev/null

worker_up() {
	wt_sql_true "$DB" "SELECT alive AND loops >= 1 FROM oms_worker_status() WHERE database = current_database()"
}
if wt_wait_until "$DEADLINE" worker_up; then
	wt_ok "the worker runs in $DB"
else
	wt_not_ok "the worker runs in $DB" "$(tail -n 20 "$WT_LOG")"
	exit 1
fi
pid=$(wt_worker_pid "$DB")

# Periods are the worker's per-task cadence (1 to 5 minutes by default);
# one second lets the test see several rounds quickly.
wt_sql "$DB" "UPDATE oms.maintenance_tasks SET period = '1 second'" >/dev/null

item='[{"sku": "WM-A", "quantity": 1, "unit_price": 100}]'
old=$(wt_sql "$DB" "SELECT oms_create_order('wm-old', '$item', 'EUR') ->> 'order_id'")
young=$(wt_sql "$DB" "SELECT oms_create_order('wm-young', '$item', 'EUR') ->> 'order_id'")
wt_sql "$DB" "UPDATE oms.orders SET created_at = now() - interval '2 hours' WHERE id = '$old'" >/dev/null

if wt_wait_until "$DEADLINE" wt_sql_true "$DB" "SELECT status = 'canceled' FROM oms.orders WHERE id = '$old'"; then
	wt_ok "the worker cancels an abandoned pending order by itself"
else
	wt_not_ok "the worker cancels an abandoned pending order by itself" \
		"$(wt_sql_quiet "$DB" "SELECT * FROM oms.maintenance_status")" "$(tail -n 20 "$WT_LOG")"
fi
wt_check "the cancel has reason expired and an order.canceled event" \
	"$(wt_sql "$DB" "SELECT (SELECT data ->> 'reason' FROM oms.order_events WHERE order_id = '$old' AND event_type = 'order.canceled') = 'expired'
		AND EXISTS (SELECT FROM oms.outbox WHERE aggregateid = '$old' AND type = 'order.canceled')")" \
	"$(wt_sql_quiet "$DB" "SELECT seq, event_type, data FROM oms.order_events WHERE order_id = '$old'")"
wt_check "a pending order younger than oms.pending_order_ttl stays pending" \
	"$(wt_sql "$DB" "SELECT status = 'pending' FROM oms.orders WHERE id = '$young'")"

# Every task runs, as the worker, and again: a timer, not a one-off.
all_ran_twice() {
	wt_sql_true "$DB" "SELECT bool_and(runs >= 2 AND last_run_by = 'worker' AND run_by = 'worker') FROM oms.maintenance_status"
}
if wt_wait_until "$DEADLINE" all_ran_twice; then
	wt_ok "every task is run by the worker, repeatedly"
else
	wt_not_ok "every task is run by the worker, repeatedly" "$(wt_sql_quiet "$DB" "SELECT task, run_by, runs, last_run_by FROM oms.maintenance_status")"
fi
wt_check "no maintenance task failed" \
	"$(wt_sql "$DB" "SELECT sum(failures) = 0 FROM oms.maintenance_tasks")" \
	"$(wt_sql_quiet "$DB" "SELECT task, failures, last_error FROM oms.maintenance_tasks")"

# oms.maintenance_interval = 0: the worker stops running maintenance.  Wait
# until the worker has looped five more times after the reload (it reads
# the setting at the top of a loop) and check no task ran meanwhile.
wt_set_sighup oms.maintenance_interval 0
loops=$(wt_worker_status "$DB" loops)
wt_wait_until "$DEADLINE" wt_sql_true "$DB" \
	"SELECT loops >= $loops + 2 FROM oms_worker_status() WHERE database = current_database()" || true
before=$(wt_sql "$DB" "SELECT sum(runs) FROM oms.maintenance_tasks")
loops=$(wt_worker_status "$DB" loops)
if wt_wait_until "$DEADLINE" wt_sql_true "$DB" \
	"SELECT loops >= $loops + 5 FROM oms_worker_status() WHERE database = current_database()"; then
	wt_check "with oms.maintenance_interval = 0 the worker runs no maintenance" \
		"$(wt_sql "$DB" "SELECT sum(runs) = $before FROM oms.maintenance_tasks")" \
		"$(wt_sql_quiet "$DB" "SELECT task, runs, last_started_at FROM oms.maintenance_tasks")"
	wt_check "the status view says nobody runs maintenance" \
		"$(wt_sql "$DB" "SELECT bool_and(run_by = 'none') FROM oms.maintenance_status")"
else
	wt_not_ok "the worker keeps looping" "$(wt_sql_quiet "$DB" "SELECT * FROM oms_worker_status()")"
fi

errors=$(wt_log_errors_of "$pid")
wt_check "the worker logged no error or warning" "$([[ -z "$errors" ]] && echo 0 || echo 1)" "$errors"
exit "$WT_RC"
