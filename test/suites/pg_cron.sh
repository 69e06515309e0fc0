#!/usr/bin/env bash
# test/suites/pg_cron.sh: oms maintenance scheduled with the real pg_cron
# (Debian postgresql-15-cron, 1.4: minute schedules).
#
# On this suite's own cluster, shared_preload_libraries = 'oms,pg_cron',
# cron.database_name = oms_cron (pg_cron connects to 127.0.0.1, trusted by
# the test cluster's pg_hba), oms.maintenance_interval = 1s:
#   oms_schedule_maintenance() creates one job per task with the expected
#   names, schedules and commands; running it again changes nothing, a new
#   schedule updates a job in place; the worker stops running the tasks;
#   within ~90 s (minute schedules) a job has a succeeded run in
#   cron.job_run_details and its effect is visible (an abandoned pending
#   order canceled); oms_unschedule_maintenance() removes the jobs and the
#   worker takes over again.  From another database, where pg_cron does not
#   run, scheduling fails with 55000 and says where pg_cron runs.
# shellcheck disable=SC2317 # functions here are called indirectly (wait loops, exit hooks), which shellcheck 0.9 cannot follow
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"

DB=oms_cron
DEADLINE=60
CRON_DEADLINE=100

cleanup() { wt_keep_log pg_cron; }
wt_start_cluster "shared_preload_libraries = 'oms,pg_cron'" "cron.database_name = '$DB'" \
	"cron.host = '127.0.0.1'" "oms.database_name = '$DB'" "oms.maintenance_interval = 1" \
	"oms.pending_order_ttl = '1h'"
oms_on_exit cleanup
oms_fresh_db "$DB" >/dev/null
wt_sql "$DB" "CREATE EXTENSION pg_cron" >/dev/null

worker_up() {
	wt_sql_true "$DB" "SELECT alive AND loops >= 1 FROM oms_worker_status() WHERE database = current_database()"
}
if wt_wait_until "$DEADLINE" worker_up; then
	wt_ok "the worker runs in $DB next to pg_cron $(wt_sql "$DB" "SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'")"
else
	wt_not_ok "the worker runs in $DB" "$(tail -n 20 "$WT_LOG")"
	exit 1
fi
# The worker would run every task every second if it ran them at all.
wt_sql "$DB" "UPDATE oms.maintenance_tasks SET period = '1 second'" >/dev/null
if wt_wait_until "$DEADLINE" wt_sql_true "$DB" "SELECT bool_and(last_run_by = 'worker') FROM oms.maintenance_tasks"; then
	wt_ok "before scheduling, the worker runs maintenance"
else
	wt_not_ok "before scheduling, the worker runs maintenance" "$(wt_sql_quiet "$DB" "SELECT * FROM oms.maintenance_status")"
fi

# --- oms_schedule_maintenance: the jobs
res=$(wt_sql "$DB" "SELECT string_agg(j ->> 'action', ',') FROM jsonb_array_elements(oms_schedule_maintenance() -> 'jobs') AS j")
wt_check "oms_schedule_maintenance() creates five jobs" "$([[ "$res" == created,created,created,created,created ]] && echo 0 || echo 1)" "actions: $res"
scheduled_at=$(wt_sql "$DB" "SELECT now()")
expected="oms-$DB-expire_pending_orders|* * * * *|SELECT oms._run_maintenance('expire_pending_orders')|$DB|t
oms-$DB-prune|*/5 * * * *|SELECT oms._run_maintenance('prune')|$DB|t
oms-$DB-purge_idempotency_keys|*/5 * * * *|SELECT oms._run_maintenance('purge_idempotency_keys')|$DB|t
oms-$DB-redrive_sagas|* * * * *|SELECT oms._run_maintenance('redrive_sagas')|$DB|t
oms-$DB-release_reservations|* * * * *|SELECT oms._run_maintenance('release_reservations')|$DB|t"
jobs=$(wt_sql "$DB" "SELECT jobname, schedule, command, database, active FROM cron.job ORDER BY jobname")
wt_check "cron.job holds the jobs with the expected names, schedules and commands" \
	"$([[ "$jobs" == "$expected" ]] && echo 0 || echo 1)" "got:" "$jobs" "expected:" "$expected"

res=$(wt_sql "$DB" "SELECT string_agg(j ->> 'action', ',') FROM jsonb_array_elements(oms_schedule_maintenance() -> 'jobs') AS j")
wt_check "running it again changes nothing and adds no job" \
	"$(wt_sql "$DB" "SELECT '$res' = 'unchanged,unchanged,unchanged,unchanged,unchanged' AND count(*) = 5 FROM cron.job")" "actions: $res"
ids_before=$(wt_sql "$DB" "SELECT string_agg(jobid::text, ',' ORDER BY jobname) FROM cron.job")
res=$(wt_sql "$DB" "SELECT j ->> 'action' FROM jsonb_array_elements(oms_schedule_maintenance('{\"prune\": \"17 * * * *\"}') -> 'jobs') AS j WHERE j ->> 'task' = 'prune'")
wt_check "a new schedule updates the job in place" \
	"$(wt_sql "$DB" "SELECT '$res' = 'updated' AND count(*) = 5 AND string_agg(jobid::text, ',' ORDER BY jobname) = '$ids_before'
		AND bool_or(jobname = 'oms-$DB-prune' AND schedule = '17 * * * *') FROM cron.job")" \
	"action: $res" "$(wt_sql_quiet "$DB" "SELECT jobid, jobname, schedule FROM cron.job ORDER BY jobname")"
err=$(wt_sql "$DB" "SELECT oms_schedule_maintenance('{\"prune\": \"every now and then\"}')" 2>&1 || true)
wt_check "a schedule pg_cron refuses fails the call and changes no job" \
	"$(wt_sql "$DB" "SELECT count(*) = 5 AND bool_or(jobname = 'oms-$DB-prune' AND schedule = '17 * * * *') FROM cron.job")" \
	"$err" "$(wt_sql_quiet "$DB" "SELECT jobid, jobname, schedule FROM cron.job ORDER BY jobname")"
wt_diag "pg_cron says: $err"
sqlstate=$("$OMS_PG_BINDIR/psql" -X -q -At -d "$DB" \
	-c "DO \$\$ BEGIN PERFORM oms_schedule_maintenance('{\"prune\": \"every now and then\"}'); EXCEPTION WHEN OTHERS THEN RAISE WARNING '%', SQLSTATE; END \$\$" 2>&1 |
	sed -nE 's/.*WARNING: +([0-9A-Z]{5}).*/\1/p')
wt_diag "its SQLSTATE: $sqlstate"
wt_check "the status view says pg_cron runs every task" \
	"$(wt_sql "$DB" "SELECT bool_and(run_by = 'pg_cron' AND cron_jobid IS NOT NULL) FROM oms.maintenance_status")"

# --- the worker stops: five more worker loops (maintenance due every
# second) and no task was run by the worker since scheduling.
loops=$(wt_worker_status "$DB" loops)
if wt_wait_until "$DEADLINE" wt_sql_true "$DB" \
	"SELECT loops >= $loops + 5 FROM oms_worker_status() WHERE database = current_database()"; then
	wt_check "the worker no longer runs the tasks pg_cron runs" \
		"$(wt_sql "$DB" "SELECT count(*) = 0 FROM oms.maintenance_tasks WHERE last_run_by = 'worker' AND last_started_at > '$scheduled_at'")" \
		"$(wt_sql_quiet "$DB" "SELECT task, last_run_by, last_started_at FROM oms.maintenance_tasks")"
else
	wt_not_ok "the worker keeps looping" "$(wt_sql_quiet "$DB" "SELECT * FROM oms_worker_status()")"
fi

# --- a job runs (the only long wait: pg_cron fires on the minute)
item='[{"sku": "CR-A", "quantity": 1, "unit_price": 100}]'
old=$(wt_sql "$DB" "SELECT oms_create_order('cr-old', '$item', 'EUR') ->> 'order_id'")
young=$(wt_sql "$DB" "SELECT oms_create_order('cr-young', '$item', 'EUR') ->> 'order_id'")
wt_sql "$DB" "UPDATE oms.orders SET created_at = now() - interval '2 hours' WHERE id = '$old'" >/dev/null
cron_did_it() {
	wt_sql_true "$DB" "SELECT EXISTS (SELECT FROM cron.job_run_details AS d JOIN cron.job AS j USING (jobid)
			WHERE j.jobname = 'oms-$DB-expire_pending_orders' AND d.status = 'succeeded')
		AND (SELECT status = 'canceled' FROM oms.orders WHERE id = '$old')"
}
start=$(wt_now)
if wt_wait_until "$CRON_DEADLINE" cron_did_it; then
	wt_ok "a pg_cron job succeeded and canceled the abandoned pending order"
	wt_diag "waited $(wt_elapsed "$start") s for pg_cron"
else
	wt_not_ok "a pg_cron job succeeded and canceled the abandoned pending order" \
		"$(wt_sql_quiet "$DB" "SELECT jobid, status, return_message, start_time FROM cron.job_run_details ORDER BY runid")" \
		"$(wt_sql_quiet "$DB" "SELECT task, run_by, last_run_by, last_result FROM oms.maintenance_status")" \
		"$(grep -i cron "$WT_LOG" | tail -n 20)"
fi
wt_check "the young pending order is left alone" "$(wt_sql "$DB" "SELECT status = 'pending' FROM oms.orders WHERE id = '$young'")"
wt_check "oms.maintenance_status records the run by pg_cron" \
	"$(wt_sql "$DB" "SELECT runs > 0 AND last_run_by = 'pg_cron' AND last_started_at > '$scheduled_at' AND last_error IS NULL
		FROM oms.maintenance_status WHERE task = 'expire_pending_orders'")" \
	"$(wt_sql_quiet "$DB" "SELECT task, runs, last_run_by, last_started_at, last_result FROM oms.maintenance_status")"

# --- pg_cron runs in one database only: from another, a clear error.
oms_fresh_db oms_cron_other >/dev/null
err=$(wt_sql oms_cron_other "SELECT oms_schedule_maintenance()" 2>&1 || true)
wt_check "from another database, oms_schedule_maintenance() says where pg_cron runs" \
	"$([[ "$err" == *"pg_cron runs in database \"$DB\""* ]] && echo 0 || echo 1)" "$err"
sqlstate=$("$OMS_PG_BINDIR/psql" -X -q -At -d oms_cron_other \
	-c "DO \$\$ BEGIN PERFORM oms_schedule_maintenance(); EXCEPTION WHEN OTHERS THEN RAISE WARNING '%', SQLSTATE; END \$\$" 2>&1 |
	sed -nE 's/.*WARNING: +([0-9A-Z]{5}).*/\1/p')
wt_check "... with SQLSTATE 55000" "$([[ "$sqlstate" == 55000 ]] && echo 0 || echo 1)" "got: $sqlstate"

# --- oms_unschedule_maintenance
res=$(wt_sql "$DB" "SELECT jsonb_array_length(oms_unschedule_maintenance() -> 'removed')")
unscheduled_at=$(wt_sql "$DB" "SELECT now()")
wt_check "oms_unschedule_maintenance() removes the five jobs" \
	"$(wt_sql "$DB" "SELECT '$res' = '5' AND count(*) = 0 FROM cron.job")" "removed: $res"
wt_check "... and the status view hands the tasks back to the worker" \
	"$(wt_sql "$DB" "SELECT bool_and(run_by = 'worker' AND cron_jobid IS NULL) FROM oms.maintenance_status")"
if wt_wait_until "$DEADLINE" wt_sql_true "$DB" \
	"SELECT bool_and(last_run_by = 'worker' AND last_started_at > '$unscheduled_at') FROM oms.maintenance_tasks"; then
	wt_ok "the worker runs maintenance again"
else
	wt_not_ok "the worker runs maintenance again" "$(wt_sql_quiet "$DB" "SELECT * FROM oms.maintenance_status")"
fi
res=$(wt_sql "$DB" "SELECT jsonb_array_length(oms_unschedule_maintenance() -> 'removed')")
wt_check "unscheduling again removes nothing" "$([[ "$res" == 0 ]] && echo 0 || echo 1)" "removed: $res"
wt_check "no maintenance task failed" \
	"$(wt_sql "$DB" "SELECT sum(failures) = 0 FROM oms.maintenance_tasks")" \
	"$(wt_sql_quiet "$DB" "SELECT task, failures, last_error FROM oms.maintenance_tasks")"

# --- jobs scheduled by 0.1.0 named the extension's schema in their
# command; ALTER EXTENSION oms UPDATE points them at schema oms.
wt_sql "$DB" "DROP EXTENSION oms CASCADE" >/dev/null
wt_sql "$DB" "CREATE EXTENSION oms VERSION '0.1.0'" >/dev/null
wt_sql "$DB" "SELECT oms_schedule_maintenance()" >/dev/null
before=$(wt_sql "$DB" "SELECT string_agg(DISTINCT regexp_replace(command, '[(].*', ''), ',') FROM cron.job")
wt_sql "$DB" "ALTER EXTENSION oms UPDATE" >/dev/null
wt_check "ALTER EXTENSION oms UPDATE rewrites the commands of 0.1.0's jobs to call schema oms" \
	"$(wt_sql "$DB" "SELECT '$before' = 'SELECT public.oms_run_maintenance' AND count(*) = 5
		AND bool_and(command = format('SELECT oms._run_maintenance(%L)', split_part(jobname, '-', 3)))
		FROM cron.job")" "before: $before" "$(wt_sql_quiet "$DB" "SELECT jobname, command FROM cron.job ORDER BY 1")"
wt_check "... and oms_schedule_maintenance() then finds nothing to change" \
	"$(wt_sql "$DB" "SELECT bool_and(j ->> 'action' = 'unchanged') FROM jsonb_array_elements(oms_schedule_maintenance() -> 'jobs') AS j")"
exit "$WT_RC"
