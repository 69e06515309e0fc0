#!/usr/bin/env bash
# test/suites/worker_dbcmds.sh: database-level commands against a served
# database, on this suite's own cluster (oms.database_name = oms_db,
# oms.worker_naptime = 200ms):
#   - a DROP DATABASE that fails (a client is still connected) leaves the
#     database served: its worker comes back;
#   - DROP EXTENSION oms while the worker is busy succeeds promptly; the
#     worker idles through it without errors and serves the extension again
#     after CREATE EXTENSION;
#   - ALTER DATABASE ... RENAME and CREATE DATABASE ... TEMPLATE of a served
#     database succeed: the utility hook stops the worker first, and the
#     worker comes back when the database is served again.
# The database has three processes running sagas (oms.saga_workers = 3):
# every command above must stop all of them, and all come back after;
# a reload of oms.saga_workers retires saga workers or starts more.
# shellcheck disable=SC2317 # functions here are called indirectly (wait loops, exit hooks), which shellcheck 0.9 cannot follow
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"

DB=oms_db
BACKLOG=2000
BOUND=20
CLIENT_PID=""

cleanup() {
	if [[ -n "$CLIENT_PID" ]]; then kill "$CLIENT_PID" 2>/dev/null || true; fi
	wt_keep_log worker_dbcmds
}

SAGA_WORKERS=3
wt_start_cluster "oms.database_name = '$DB'" "oms.worker_naptime = 200" "oms.saga_workers = $SAGA_WORKERS"
oms_on_exit cleanup
oms_fresh_db "$DB" >/dev/null

worker_pid_is_not() {
	local pid
	pid=$(wt_worker_pid "$DB")
	[[ -n "$pid" && "$pid" != "$1" ]]
}
if ! wt_wait_until 60 worker_pid_is_not none; then
	wt_not_ok "the worker runs" "$(tail -n 20 "$WT_LOG")"
	exit 1
fi

# Usage: timed_sql DB SQL: runs SQL (bounded by 60 s); sets T_RC, T_OUT and
# T_TOOK (seconds).
timed_sql() {
	local db=$1 sql=$2 t0
	t0=$(wt_now)
	T_RC=0
	T_OUT=$(timeout 60 "$OMS_PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d "$db" -c "$sql" 2>&1) || T_RC=$?
	T_TOOK=$(wt_elapsed "$t0")
}
within_bound() { awk -v t="$1" -v b="$BOUND" 'BEGIN { print (t < b) ? 0 : 1 }'; }

# ------------------------------------------------------- a DROP that fails
old=$(wt_worker_pid "$DB")
"$OMS_PG_BINDIR/psql" -X -q -d "$DB" -c "SELECT pg_sleep(600)" >/dev/null 2>&1 &
CLIENT_PID=$!
client_connected() {
	wt_sql_true postgres "SELECT count(*) = 1 FROM pg_stat_activity
		WHERE datname = '$DB' AND backend_type = 'client backend' AND query LIKE '%pg_sleep%'"
}
wt_wait_until 30 client_connected || true
timed_sql postgres "DROP DATABASE $DB"
wt_diag "DROP DATABASE with a client connected failed after $T_TOOK s"
if [[ "$T_RC" != 0 ]] && grep -q 'is being accessed by other users' <<<"$T_OUT"; then
	wt_ok "DROP DATABASE with a client still connected fails as usual"
else
	wt_not_ok "DROP DATABASE with a client still connected fails as usual" "rc $T_RC" "$T_OUT"
fi
t0=$(wt_now)
if wt_wait_until 30 worker_pid_is_not "$old"; then
	wt_ok "after the failed DROP DATABASE the database is served again by a new worker"
	wt_diag "worker back $(wt_elapsed "$t0") s after the failed drop"
else
	wt_not_ok "after the failed DROP DATABASE the database is served again by a new worker" \
		"worker pid: '$(wt_worker_pid "$DB")' (was $old)" "$(tail -n 20 "$WT_LOG")"
fi
wt_sql postgres "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
	WHERE datname = '$DB' AND backend_type = 'client backend'" >/dev/null
wait "$CLIENT_PID" || true
CLIENT_PID=""

# ----------------------------------------------- DROP EXTENSION while busy
wt_setup_stock "$DB" 5 1000000
wt_create_orders "$DB" "$BACKLOG" 5 ext
wt_sql "$DB" "SELECT count(oms_pay_order(id, 'test_ok')) FROM oms.orders WHERE status = 'pending'" >/dev/null
busy() {
	local r
	r=$(wt_sql_quiet "$DB" "
		SELECT a.pid FROM pg_stat_activity AS a
		WHERE a.backend_type = 'oms worker' AND a.datname = current_database() AND a.state = 'active'
		  AND (SELECT count(*) FROM oms.orders WHERE status = 'confirmed') BETWEEN 20 AND $((BACKLOG - 1))") || return 1
	[[ -n "$r" ]] || return 1
	BUSY_PID=$r
}
if wt_wait_until 60 busy; then
	loops0=$(wt_worker_status "$DB" loops)
	timed_sql "$DB" "DROP EXTENSION oms CASCADE"
	wt_diag "DROP EXTENSION with the worker (pid $BUSY_PID) busy: took $T_TOOK s"
	wt_check "DROP EXTENSION oms succeeds while the worker is busy" "$T_RC" "$T_OUT"
	wt_check "DROP EXTENSION oms returns promptly (within ${BOUND} s) while the worker is busy" \
		"$(within_bound "$T_TOOK")"
	# The worker keeps looping without the extension: wait for a few
	# loops' worth of time by watching its pg_stat_activity entry change.
	ticks=0
	saw_tick() {
		local s
		s=$(wt_sql_quiet postgres "SELECT state_change FROM pg_stat_activity WHERE pid = $BUSY_PID")
		[[ -n "$s" && "$s" != "${LAST_TICK:-}" ]] || return 1
		LAST_TICK=$s
		ticks=$((ticks + 1))
		((ticks >= 6))
	}
	wt_wait_until 30 saw_tick || true
	oms_psql -d "$DB" -c "CREATE EXTENSION oms"
	now_pid=$(wt_worker_pid "$DB")
	loops1=$(wt_worker_status "$DB" loops)
	err=$(wt_worker_status "$DB" "coalesce(last_error, '')")
	logged=$(wt_log_errors_of "$BUSY_PID")
	wt_check "the worker lives through DROP EXTENSION: same pid, still looping, no error recorded or logged" \
		"$([[ "$now_pid" == "$BUSY_PID" && "$loops1" -gt "$loops0" && -z "$err" && -z "$logged" ]] && echo 0 || echo 1)" \
		"pid $BUSY_PID -> $now_pid, loops $loops0 -> $loops1, last_error '$err'" "$logged"
	wt_setup_stock "$DB" 5 1000000
	wt_create_orders "$DB" 10 5 again
	wt_sql "$DB" "SELECT count(oms_pay_order(id, 'test_ok')) FROM oms.orders WHERE status = 'pending'" >/dev/null
	if wt_wait_until 30 wt_sagas_done "$DB" 10; then
		wt_ok "after CREATE EXTENSION the worker runs sagas again"
	else
		wt_not_ok "after CREATE EXTENSION the worker runs sagas again" \
			"$(wt_sql_quiet "$DB" "SELECT status, count(*) FROM oms.sagas GROUP BY 1")" \
			"$(wt_sql_quiet "$DB" "SELECT * FROM oms_worker_status()")"
	fi
	wt_check_invariants "$DB" 10 "after DROP and CREATE EXTENSION"
else
	wt_not_ok "caught the worker busy with the backlog before DROP EXTENSION" \
		"$(wt_sql_quiet "$DB" "SELECT status, count(*) FROM oms.orders GROUP BY 1")"
fi

# ------------------------------------ rename and copy of a served database
# The worker is a session in the database; PostgreSQL refuses both while
# other sessions exist, so the utility hook stops the worker first.
# The main worker and all saga workers serve it.
has_worker() {
	[[ -n "$(wt_worker_pid "$1")" ]] &&
		wt_sql_true "$1" "SELECT count(*) = current_setting('oms.saga_workers')::int
			FROM oms_saga_worker_status() WHERE database = current_database() AND alive"
}
timed_sql postgres "ALTER DATABASE $DB RENAME TO ${DB}_renamed"
wt_check "ALTER DATABASE RENAME of a served database succeeds promptly" "$T_RC" \
	"took $T_TOOK s: $T_OUT"
wt_diag "rename took $T_TOOK s"
if [[ "$T_RC" == 0 ]]; then
	wt_sql postgres "ALTER DATABASE ${DB}_renamed RENAME TO $DB"
fi
wt_wait_until 30 has_worker "$DB"
wt_check "the database renamed back is served again" "$?"

timed_sql postgres "CREATE DATABASE ${DB}_copy TEMPLATE $DB"
wt_check "CREATE DATABASE ... TEMPLATE a served database succeeds promptly" "$T_RC" \
	"took $T_TOOK s: $T_OUT"
wt_diag "copy took $T_TOOK s"
wt_wait_until 30 has_worker "$DB"
wt_check "the template database gets its worker back after the copy" "$?"
wt_sql postgres "DROP DATABASE IF EXISTS ${DB}_copy"

# ------------------------------------------------ oms.saga_workers reloads
saga_processes() {
	wt_sql_quiet postgres "SELECT count(*) FROM pg_stat_activity
		WHERE backend_type = 'oms saga worker' AND datname = '$DB'"
}
saga_processes_are() { [[ "$(saga_processes)" == "$1" ]]; }
wt_check "the database has $((SAGA_WORKERS - 1)) saga workers beside the main worker" \
	"$(saga_processes_are $((SAGA_WORKERS - 1)) && echo 0 || echo 1)" "$(saga_processes)"
wt_set_sighup oms.saga_workers 1
wt_wait_until 30 saga_processes_are 0
wt_check "a reload to oms.saga_workers = 1 retires every saga worker" "$?" "$(saga_processes) still run"
wt_check "the main worker stays" "$(has_worker "$DB" && echo 0 || echo 1)" \
	"$(wt_sql_quiet "$DB" "SELECT * FROM oms_saga_worker_status()")"
grep -q "event=worker_retired" "$WT_LOG"
wt_check "each retired saga worker says so (event=worker_retired)" "$?"
wt_set_sighup oms.saga_workers 4
wt_wait_until 30 saga_processes_are 3
wt_check "a reload to oms.saga_workers = 4 starts three saga workers" "$?" "$(saga_processes) run"
wt_wait_until 30 has_worker "$DB"
wt_check "oms_saga_worker_status() shows all four processes alive" "$?" \
	"$(wt_sql_quiet "$DB" "SELECT * FROM oms_saga_worker_status()")"

errors=$(grep -E 'oms (saga )?worker: (ERROR|PANIC):|event=(saga_error|worker_batch_failed)' "$WT_LOG" || true)
wt_check "no oms worker logged an ERROR and no saga failed to advance" \
	"$([[ -z "$errors" ]] && echo 0 || echo 1)" "$(head -n 20 <<<"$errors")"

exit "$WT_RC"
