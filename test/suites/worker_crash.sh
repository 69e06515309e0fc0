#!/usr/bin/env bash
# test/suites/worker_crash.sh: the oms worker survives a crash mid-run
# without doing anything twice or losing anything.
#
# Scenarios on this suite's own cluster (oms.database_name = oms_crash),
# the terminations first (their check reads the whole log for a crash):
#   kill -9    1,000 orders are paid one transaction each while the worker
#              runs; when some but not all are confirmed and the worker is
#              inside a batch, the worker gets SIGKILL: the postmaster
#              crash-restarts every process and the launcher brings the
#              worker back.
#   immediate  the same, but "pg_ctl restart -m immediate" mid-run.
#   terminate  the same, but pg_terminate_backend() of the worker: no crash
#              restart; the launcher starts a new worker while the clients
#              keep paying undisturbed.
# The cluster runs oms.saga_workers = 3, so the main worker is one of three
# processes running sagas; then the same kill -9 and terminate of one of
# the two saga workers, caught inside a batch while all three work through
# a backlog (the orders are paid in one transaction, so batches fill up and
# wake the saga workers).
# After each, the orders the crash kept from being paid are paid, every saga
# must finish, and test/process/invariants.sql checks: all confirmed exactly
# once, no double reservation, no double capture, exact stock decrement,
# gap-free timeline and outbox sequences.
# shellcheck disable=SC2317 # functions here are called indirectly (wait loops, exit hooks), which shellcheck 0.9 cannot follow
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"

DB=oms_crash
N=${WT_CRASH_ORDERS:-1000}
NSKUS=5
ON_HAND=1000000
WORK=""
PAYER_PID=""

cleanup() {
	if [[ -n "$PAYER_PID" ]]; then kill "$PAYER_PID" 2>/dev/null || true; fi
	wt_keep_log worker_crash
	[[ -z "$WORK" ]] || rm -rf "$WORK"
}
SAGA_WORKERS=3
wt_start_cluster "oms.database_name = '$DB'" "oms.saga_workers = $SAGA_WORKERS"
# Registered after the cluster, so it runs before the cluster is removed.
oms_on_exit cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oms-worker-crash.XXXXXX")
oms_fresh_db "$DB" >/dev/null

# The process a scenario stops: backend_type 'oms worker' (the main worker)
# or 'oms saga worker'.
TARGET="oms worker"

# Prints "pid confirmed" once a TARGET process runs a batch while some but
# not all orders are confirmed.
mid_run() {
	local r
	r=$(wt_sql_quiet "$DB" "
		SELECT a.pid || ' ' || c.n
		FROM pg_stat_activity AS a,
			 (SELECT count(*) FILTER (WHERE status = 'confirmed') AS n FROM oms.orders) AS c
		WHERE a.backend_type = '$TARGET' AND a.datname = current_database()
		  AND a.state = 'active' AND c.n BETWEEN $((N / 10)) AND $((N - 1))
		LIMIT 1") || return 1
	[[ -n "$r" ]] || return 1
	MID=$r
}

# A TARGET process other than the stopped one runs, and all saga workers
# are back.
worker_back() {
	local pid
	pid=$(wt_sql_quiet postgres "SELECT pid FROM pg_stat_activity
		WHERE backend_type = '$TARGET' AND datname = '$DB' AND pid <> $1 ORDER BY pid DESC LIMIT 1")
	[[ -n "$pid" ]] || return 1
	wt_sql_true "$DB" "SELECT count(*) = $SAGA_WORKERS FROM oms_saga_worker_status() WHERE database = '$DB' AND alive" ||
		return 1
	NEW_PID=$pid
}

postmaster_pid() { head -n 1 "$OMS_PGDATA/postmaster.pid" 2>/dev/null; }

# Usage: scenario LABEL kill9|immediate|terminate [main|saga]
scenario() {
	local label=$1 how=$2 target=${3:-main} t0 old_pid pm_before pm_after confirmed_at_crash repaid rc=0 payer_rc=0
	local pay_file="$WORK/pay-$how-$target.sql"

	# TRUNCATE takes its locks table by table while the worker's loop takes
	# its own: a deadlock between them is possible and harmless; try again.
	local try
	for try in 1 2 3 4 5; do
		wt_sql "$DB" "TRUNCATE oms.orders, oms.outbox, oms.stock, oms.idempotency_keys CASCADE" \
			>/dev/null 2>&1 && break
		[[ $try == 5 ]] && wt_sql "$DB" "TRUNCATE oms.orders, oms.outbox, oms.stock, oms.idempotency_keys CASCADE"
	done
	wt_setup_stock "$DB" "$NSKUS" "$ON_HAND"
	wt_create_orders "$DB" "$N" "$NSKUS" "$how"
	wt_pay_script "$DB" "$pay_file"
	if [[ $target == saga ]]; then
		TARGET="oms saga worker"
		# One transaction: a backlog that fills every batch.
		{ echo "BEGIN;"; cat "$pay_file"; echo "COMMIT;"; } >"$pay_file.tx" && mv "$pay_file.tx" "$pay_file"
	else
		TARGET="oms worker"
	fi

	if ! wt_wait_until 60 wt_worker_pid_set; then
		wt_not_ok "$label: the worker runs before the test" "$(wt_sql_quiet postgres "SELECT * FROM pg_stat_activity WHERE backend_type LIKE 'oms%'")"
		return
	fi

	# The payer: one transaction per order, each waking the worker at commit.
	"$OMS_PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d "$DB" -f "$pay_file" >"$WORK/payer-$how.log" 2>&1 &
	PAYER_PID=$!

	if ! wt_wait_until 120 mid_run; then
		wt_not_ok "$label: caught the worker inside a batch with some but not all orders confirmed" \
			"confirmed: $(wt_sql_quiet "$DB" "SELECT count(*) FROM oms.orders WHERE status = 'confirmed'") of $N" \
			"$(wt_sql_quiet postgres "SELECT pid, backend_type, state, query FROM pg_stat_activity WHERE backend_type LIKE 'oms%worker'")"
		wait "$PAYER_PID" || true
		PAYER_PID=""
		return
	fi
	read -r old_pid confirmed_at_crash <<<"$MID"
	pm_before=$(postmaster_pid)
	t0=$(wt_now)
	case $how in
	kill9) kill -9 "$old_pid" ;;
	immediate) oms_pg_ctl -w -t 60 -m immediate -l "$WT_LOG" restart >"$WORK/restart.log" 2>&1 || rc=$? ;;
	terminate) wt_sql postgres "SELECT pg_terminate_backend($old_pid)" >/dev/null ;;
	esac
	wt_ok "$label: stopped the worker (pid $old_pid) while it ran a batch, with $confirmed_at_crash of $N orders confirmed"

	# After a crash the payer loses its connection too; it just has to end.
	wait "$PAYER_PID" || payer_rc=$?
	PAYER_PID=""
	if [[ "$how" == terminate ]]; then
		wt_check "$label: the clients kept paying undisturbed" "$payer_rc" "$(tail -n 5 "$WORK/payer-$how.log")"
		# The postmaster logs the exit after the process is gone, which
		# may be after the payer ended: wait for the line.
		if wt_wait_until 30 grep -q "$TARGET.*(PID $old_pid) exited with exit code 1" "$WT_LOG" &&
			! grep -q 'all server processes terminated' "$WT_LOG"; then
			wt_ok "$label: the worker exited cleanly, no crash restart"
		else
			wt_not_ok "$label: the worker exited cleanly, no crash restart" "$(tail -n 20 "$WT_LOG")"
		fi
	fi

	if [[ "$how" == immediate ]]; then
		wt_check "$label: pg_ctl restart -m immediate succeeded" "$rc" "$(cat "$WORK/restart.log")"
	fi
	if ! wt_wait_until 60 wt_server_ready; then
		wt_not_ok "$label: the server accepts connections again" "$(tail -n 30 "$WT_LOG")"
		return
	fi
	pm_after=$(postmaster_pid)
	if [[ "$how" == kill9 ]]; then
		# A crash restart: same postmaster, every other process re-forked.
		if [[ "$pm_before" == "$pm_after" ]] &&
			grep -q "$TARGET.*(PID $old_pid) was terminated by signal 9" "$WT_LOG" &&
			grep -q 'all server processes terminated; reinitializing' "$WT_LOG"; then
			wt_ok "$label: the postmaster noticed the killed worker and crash-restarted"
		else
			wt_not_ok "$label: the postmaster noticed the killed worker and crash-restarted" \
				"postmaster pid before $pm_before after $pm_after" "$(tail -n 30 "$WT_LOG")"
		fi
	fi
	if wt_wait_until 60 worker_back "$old_pid"; then
		wt_ok "$label: the launcher started a new $TARGET (pid $NEW_PID); all $SAGA_WORKERS saga workers run"
		wt_diag "new worker running $(wt_elapsed "$t0") s after the stop"
	else
		wt_not_ok "$label: the launcher started a new worker" \
			"$(wt_sql_quiet "$DB" "SELECT * FROM oms_saga_worker_status()")" "$(tail -n 30 "$WT_LOG")"
		return
	fi

	# Orders whose pay the crash cut off (rolled back, so still pending).
	repaid=$(wt_sql "$DB" "SELECT count(oms_pay_order(id, 'test_ok')) FROM oms.orders WHERE status = 'pending'")
	wt_diag "$repaid orders were still pending after the stop (their pay was cut off) and were paid now"

	if wt_wait_until 180 wt_sagas_done "$DB" "$N"; then
		wt_ok "$label: all $N sagas reached a final state"
		wt_diag "all done $(wt_elapsed "$t0") s after the stop"
	else
		wt_not_ok "$label: all $N sagas reached a final state" \
			"$(wt_sql_quiet "$DB" "SELECT status, count(*) FROM oms.sagas GROUP BY 1")" \
			"$(wt_sql_quiet "$DB" "SELECT * FROM oms_worker_status()")"
	fi
	wt_check_invariants "$DB" "$N" "$label"
}

wt_worker_pid_set() { [[ -n "$(wt_worker_pid "$DB")" ]]; }

# First, while the server has never crashed (the clean-exit check reads the whole log).
scenario "pg_terminate_backend of the worker" terminate
scenario "pg_terminate_backend of a saga worker" terminate saga
scenario "kill -9 of the worker" kill9
scenario "pg_ctl restart -m immediate" immediate
scenario "kill -9 of a saga worker" kill9 saga

# Every process ran saga steps at some point: the backlogs woke them.
wt_check "the saga workers ran saga steps too" \
	"$(wt_sql_true "$DB" "SELECT count(*) FILTER (WHERE units > 0) >= 2 FROM oms_saga_worker_status() WHERE database = '$DB'" && echo 0 || echo 1)" \
	"$(wt_sql_quiet "$DB" "SELECT * FROM oms_saga_worker_status()")"

# The batches themselves never failed: no ERROR from any oms worker, no saga
# that could not advance.  (Crash-time WARNING/FATAL lines are expected.)
errors=$(grep -E 'oms (saga )?worker: (ERROR|PANIC):|event=(saga_error|worker_batch_failed)' "$WT_LOG" || true)
wt_check "no oms worker logged an ERROR and no saga failed to advance" "$([[ -z "$errors" ]] && echo 0 || echo 1)" \
	"$(head -n 20 <<<"$errors")"
last_error=$(wt_worker_status "$DB" "coalesce(last_error, '')" "$DB")
wt_check "oms_worker_status() shows no last_error" "$([[ -z "$last_error" ]] && echo 0 || echo 1)" "$last_error"

exit "$WT_RC"
