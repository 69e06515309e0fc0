#!/usr/bin/env bash
# test/suites/worker_shutdown.sh: the oms worker pauses, idles and gets out
# of the way.  On this suite's own cluster, serving oms_busy (with the
# extension) and oms_plain (without it), oms.worker_naptime = 200ms:
#   - oms.worker_enabled = off pauses: a paid order and a 2,000-saga backlog
#     stay untouched while the worker keeps looping; on again, they run;
#   - DROP DATABASE of the served database while its worker is busy with
#     that backlog returns promptly and succeeds; a database re-created
#     under the same name gets a worker again;
#   - in a served database without the extension the worker idles: it
#     loops, records no error and logs no ERROR;
#   - pg_ctl stop -m fast while the worker is busy returns promptly; after
#     a start the worker finishes the backlog, every order exactly once;
#   - pg_ctl stop -m smart returns promptly: workers are not clients.
# Each served database has three processes running sagas (oms.saga_workers
# = 3): pause, drop and shutdown must hold for all of them.
# "Promptly" means within a generous bound (20 s) that only guards against a
# hang; the measured time is printed as a diagnostic.
# shellcheck disable=SC2317 # functions here are called indirectly (wait loops, exit hooks), which shellcheck 0.9 cannot follow
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"

DB=oms_busy
PLAIN=oms_plain
BACKLOG=${WT_BACKLOG_ORDERS:-2000}
NSKUS=5
ON_HAND=1000000
BOUND=20

cleanup() { wt_keep_log worker_shutdown; }
wt_start_cluster "oms.database_name = '$DB, $PLAIN'" "oms.worker_naptime = 200" "oms.saga_workers = 3"
# Registered after the cluster, so it runs before the cluster is removed.
oms_on_exit cleanup
wt_sql postgres "CREATE DATABASE $PLAIN"
oms_fresh_db "$DB" >/dev/null

worker_up() { [[ -n "$(wt_worker_pid "$1")" ]]; }
loops() { wt_worker_status "$1" loops "$DB"; }
# Usage: loops_reach DB N: true once the worker of DB has looped N times.
loops_reach() {
	local l
	l=$(loops "$1") || return 1
	[[ -n "$l" ]] && ((l >= $2))
}
# Prints the worker pid once it runs a batch with some but not all of the
# backlog confirmed.
busy() {
	local r
	r=$(wt_sql_quiet "$DB" "
		SELECT a.pid FROM pg_stat_activity AS a
		WHERE a.backend_type = 'oms worker' AND a.datname = current_database() AND a.state = 'active'
		  AND (SELECT count(*) FROM oms.orders WHERE status = 'confirmed') BETWEEN 20 AND $((BACKLOG - 1))") || return 1
	[[ -n "$r" ]] || return 1
	BUSY_PID=$r
}
confirmed() { wt_sql_quiet "$DB" "SELECT count(*) FROM oms.orders WHERE status = 'confirmed'"; }

if wt_wait_until 60 worker_up "$DB" && wt_wait_until 60 worker_up "$PLAIN"; then
	wt_ok "a worker runs in each served database, with or without the extension"
else
	wt_not_ok "a worker runs in each served database, with or without the extension" \
		"$(wt_sql_quiet postgres "SELECT datname, backend_type, pid FROM pg_stat_activity")" "$(tail -n 20 "$WT_LOG")"
	exit 1
fi
PLAIN_PID=$(wt_worker_pid "$PLAIN")
PLAIN_LOOPS0=$(loops "$PLAIN")

# ------------------------------------------------------------ pause / resume
wt_set_sighup oms.worker_enabled off
# Two loops after the reload: the SIGHUP sets the latch, and the loop after
# the one it interrupted rereads the configuration first.
l0=$(loops "$DB")
wt_wait_until 30 loops_reach "$DB" $((l0 + 3)) || true

wt_setup_stock "$DB" "$NSKUS" "$ON_HAND"
wt_create_orders "$DB" "$BACKLOG" "$NSKUS" backlog
probe=$(wt_sql "$DB" "SELECT oms_create_order('probe', '[{\"sku\": \"SKU-01\", \"quantity\": 1, \"unit_price\": 500}]', 'EUR') ->> 'order_id'")
wt_sql "$DB" "SELECT oms_pay_order('$probe', 'test_ok')" >/dev/null
# The backlog: paid in one transaction, so one wake for all of it.
wt_sql "$DB" "SELECT count(oms_pay_order(id, 'test_ok')) FROM oms.orders WHERE status = 'pending'" >/dev/null
l1=$(loops "$DB")
if wt_wait_until 30 loops_reach "$DB" $((l1 + 5)); then
	state=$(wt_sql "$DB" "SELECT format('%s|%s|%s', (SELECT status FROM oms.orders WHERE id = '$probe'),
			(SELECT count(*) FROM oms.sagas WHERE status = 'running' AND step_no = 1),
			(SELECT count(*) FROM oms.saga_steps WHERE attempts > 0))")
	IFS='|' read -r probe_status waiting attempted <<<"$state"
	wt_check "oms.worker_enabled = off pauses: a paid order stays processing while the worker loops" \
		"$([[ "$probe_status" == processing ]] && echo 0 || echo 1)" "probe order is $probe_status"
	wt_check "oms.worker_enabled = off pauses: the $BACKLOG-saga backlog is untouched" \
		"$([[ "$waiting" == $((BACKLOG + 1)) && "$attempted" == 0 ]] && echo 0 || echo 1)" \
		"sagas due at step 1: $waiting of $((BACKLOG + 1)); steps attempted: $attempted"
	wt_diag "the worker looped $(($(loops "$DB") - l1)) times while paused"
else
	wt_not_ok "oms.worker_enabled = off: the worker keeps looping" "loops $l1 -> $(loops "$DB")"
fi

t0=$(wt_now)
wt_set_sighup oms.worker_enabled on
probe_done() { wt_sql_true "$DB" "SELECT status = 'confirmed' FROM oms.orders WHERE id = '$probe'"; }
if wt_wait_until 60 probe_done; then
	wt_ok "oms.worker_enabled = on again: the paused order is confirmed"
	wt_diag "confirmed $(wt_elapsed "$t0") s after the reload"
else
	wt_not_ok "oms.worker_enabled = on again: the paused order is confirmed" \
		"$(wt_sql_quiet "$DB" "SELECT * FROM oms_worker_status()")"
fi

# ----------------------------------------------------- DROP DATABASE, busy
if wt_wait_until 60 busy; then
	c=$(confirmed)
	t0=$(wt_now)
	rc=0
	out=$(timeout 60 "$OMS_PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE $DB" 2>&1) || rc=$?
	took=$(wt_elapsed "$t0")
	wt_diag "DROP DATABASE with the worker (pid $BUSY_PID) busy, $c of $((BACKLOG + 1)) orders confirmed: took $took s"
	wt_check "DROP DATABASE of the served database succeeds while its worker is busy" "$rc" "$out" "$(tail -n 20 "$WT_LOG")"
	wt_check "DROP DATABASE returns promptly (within ${BOUND} s) while the worker is busy" \
		"$(awk -v t="$took" -v b="$BOUND" 'BEGIN { print (t < b) ? 0 : 1 }')" "took $took s"
	gone=$(wt_sql postgres "SELECT count(*) FROM pg_database WHERE datname = '$DB'")
	wt_check "the dropped database is gone" "$([[ "$gone" == 0 ]] && echo 0 || echo 1)"
else
	wt_not_ok "caught the worker busy with the backlog before DROP DATABASE" \
		"confirmed $(confirmed) of $((BACKLOG + 1))" \
		"$(wt_sql_quiet postgres "SELECT pid, state, query FROM pg_stat_activity WHERE backend_type = 'oms worker'")"
fi

# Re-created under the same name (a new OID): served again.
oms_fresh_db "$DB" >/dev/null
if wt_wait_until 60 worker_up "$DB"; then
	wt_ok "a database re-created under the dropped name gets a worker again"
else
	wt_not_ok "a database re-created under the dropped name gets a worker again" "$(tail -n 20 "$WT_LOG")"
fi

# ---------------------------------------------- idle without the extension
# It has idled since the start; a few more loops prove it still does.
p0=$(loops "$PLAIN")
if wt_wait_until 30 loops_reach "$PLAIN" $((p0 + 3)); then
	wt_ok "the worker of a database without the extension keeps looping"
	wt_diag "it looped $(($(loops "$PLAIN") - PLAIN_LOOPS0)) times since the start"
else
	wt_not_ok "the worker of a database without the extension keeps looping" "loops $p0 -> $(loops "$PLAIN")"
fi
err=$(wt_worker_status "$PLAIN" "coalesce(last_error, '')" "$DB")
wt_check "the worker of a database without the extension records no error" \
	"$([[ -z "$err" ]] && echo 0 || echo 1)" "last_error: $err"
now_pid=$(wt_worker_pid "$PLAIN")
logged=$(wt_log_errors_of "$PLAIN_PID" "$now_pid")
wt_check "the worker of a database without the extension logs no ERROR or WARNING (same pid all along)" \
	"$([[ -z "$logged" && "$now_pid" == "$PLAIN_PID" ]] && echo 0 || echo 1)" "pid $PLAIN_PID -> $now_pid" "$logged"

# --------------------------------------------------- fast shutdown, busy
wt_setup_stock "$DB" "$NSKUS" "$ON_HAND"
wt_create_orders "$DB" "$BACKLOG" "$NSKUS" fast
wt_sql "$DB" "SELECT count(oms_pay_order(id, 'test_ok')) FROM oms.orders WHERE status = 'pending'" >/dev/null
if wt_wait_until 60 busy; then
	c=$(confirmed)
	t0=$(wt_now)
	rc=0
	out=$(oms_pg_ctl -m fast -t 60 stop 2>&1) || rc=$?
	took=$(wt_elapsed "$t0")
	wt_diag "pg_ctl stop -m fast with the worker (pid $BUSY_PID) busy, $c of $BACKLOG orders confirmed: took $took s"
	wt_check "pg_ctl stop -m fast succeeds while the worker is busy" "$rc" "$out" "$(tail -n 20 "$WT_LOG")"
	wt_check "pg_ctl stop -m fast returns promptly (within ${BOUND} s) while the worker is busy" \
		"$(awk -v t="$took" -v b="$BOUND" 'BEGIN { print (t < b) ? 0 : 1 }')" "took $took s"
	if grep -q 'database system is shut down' "$WT_LOG" && ! grep -qE 'terminated by signal|PANIC' "$WT_LOG"; then
		wt_ok "the fast shutdown was clean"
	else
		wt_not_ok "the fast shutdown was clean" "$(tail -n 30 "$WT_LOG")"
	fi
	oms_pg_ctl -w -t 60 -l "$WT_LOG" start >/dev/null
	if wt_wait_until 180 wt_sagas_done "$DB" "$BACKLOG"; then
		wt_ok "after the restart the worker finishes the backlog"
	else
		wt_not_ok "after the restart the worker finishes the backlog" \
			"$(wt_sql_quiet "$DB" "SELECT status, count(*) FROM oms.sagas GROUP BY 1")"
	fi
	wt_check_invariants "$DB" "$BACKLOG" "after fast shutdown mid-run"
else
	wt_not_ok "caught the worker busy with the backlog before pg_ctl stop -m fast" \
		"confirmed $(confirmed) of $BACKLOG"
fi

errors=$(grep -E 'oms (saga )?worker: (ERROR|PANIC):|event=(saga_error|worker_batch_failed)' "$WT_LOG" || true)
wt_check "no oms worker logged an ERROR and no saga failed to advance" \
	"$([[ -z "$errors" ]] && echo 0 || echo 1)" "$(head -n 20 <<<"$errors")"

# ------------------------------------------------------- smart shutdown
# Smart waits for client sessions only: the launcher and workers must not
# count as clients.  Last, as it leaves the server stopped.
if wt_wait_until 60 worker_up "$DB"; then
	t0=$(wt_now)
	rc=0
	out=$(oms_pg_ctl -m smart -t 60 stop 2>&1) || rc=$?
	took=$(wt_elapsed "$t0")
	wt_diag "pg_ctl stop -m smart with the workers running: took $took s"
	wt_check "pg_ctl stop -m smart succeeds promptly (within ${BOUND} s) with the workers running" \
		"$([[ "$rc" == 0 ]] && awk -v t="$took" -v b="$BOUND" 'BEGIN { print (t < b) ? 0 : 1 }' || echo 1)" \
		"rc $rc, took $took s: $out" "$(tail -n 10 "$WT_LOG")"
else
	wt_not_ok "a worker runs before pg_ctl stop -m smart"
fi

exit "$WT_RC"
