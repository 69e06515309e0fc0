# shellcheck shell=bash
# test/process/common.sh: helpers for the process-level worker suites
# (test/suites/worker_*.sh).  Source it after test/lib.sh.
#
# Each suite runs its own throwaway cluster (wt_start_cluster), so it can
# choose oms.database_name (a postmaster setting), kill, crash and stop the
# server without touching the shared test cluster of test/run.sh.
#
# Output follows test/run.sh: "ok - name" / "not ok - name", diagnostics as
# "# " lines.  No sleep is ever used as synchronisation: wt_wait_until polls
# a condition every 0.1 s up to a generous deadline, which only guards
# against a hang.

WT_PROCESS_DIR="$OMS_ROOT/test/process"
WT_RC=0

wt_diag() {
	local line
	while IFS= read -r line; do printf '# %s\n' "$line"; done <<<"$*"
}

wt_ok() { printf 'ok - %s\n' "$1"; }

# Usage: wt_not_ok NAME [diagnostic text ...]
wt_not_ok() {
	printf 'not ok - %s\n' "$1"
	shift
	local d
	for d in "$@"; do wt_diag "$d"; done
	WT_RC=1
}

# Usage: wt_todo NAME CONDITION REASON [diagnostic ...]: a known product
# limitation.  TAP "# TODO": test/run.sh counts a failing TODO as expected
# and does not fail the suite; once fixed it prints a plain "ok".
wt_todo() {
	local name=$1 cond=$2 reason=$3
	shift 3
	if [[ "$cond" == 0 || "$cond" == true || "$cond" == t ]]; then
		wt_ok "$name"
	else
		printf 'not ok - %s # TODO %s\n' "$name" "$reason"
		local d
		for d in "$@"; do wt_diag "$d"; done
	fi
}

# Usage: wt_check NAME CONDITION [diagnostic ...]: CONDITION is 0/1 or true/false.
wt_check() {
	local name=$1 cond=$2
	shift 2
	if [[ "$cond" == 0 || "$cond" == true || "$cond" == t ]]; then
		wt_ok "$name"
	else
		wt_not_ok "$name" "$@"
	fi
}

# Seconds since the epoch with microseconds (bash 5).
wt_now() { printf '%s\n' "$EPOCHREALTIME"; }

# Usage: wt_elapsed START -> seconds since START, 2 decimals.
wt_elapsed() {
	awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'
}

# Usage: wt_wait_until DEADLINE_SECONDS COMMAND [ARGS ...]
# Runs COMMAND every 0.1 s until it succeeds (returns 0) or the deadline
# passes (returns 1).  The deadline only guards against a hang.
wt_wait_until() {
	local deadline=$1 start=$EPOCHREALTIME
	shift
	while true; do
		if "$@"; then
			return 0
		fi
		if awk -v s="$start" -v n="$EPOCHREALTIME" -v d="$deadline" 'BEGIN { exit !(n - s > d) }'; then
			return 1
		fi
		# Poll interval, not synchronisation: the condition decides.
		sleep 0.1
	done
}

# Usage: wt_sql DB SQL -> unaligned, tuples only, stops on error.
wt_sql() {
	local db=$1
	shift
	PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" \
		"$OMS_PG_BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$db" -c "$*"
}

# wt_sql without stderr, for polling a server that may be restarting.
wt_sql_quiet() { wt_sql "$@" 2>/dev/null; }

# True when the SQL returns 't'.
wt_sql_true() { [[ "$(wt_sql_quiet "$@")" == t ]]; }

# Usage: wt_start_cluster [--fsync] ['setting = value' ...]
# Starts this suite's own cluster (fsync off unless --fsync), with the
# backend type and pid in every log line so worker errors can be found.
# The cluster is stopped and removed when the suite exits.
wt_start_cluster() {
	local fsync=(--no-fsync)
	if [[ "${1:-}" == --fsync ]]; then
		fsync=()
		shift
	fi
	oms_start_cluster "${fsync[@]}" "log_line_prefix = '%m [%p] %b: '" "$@" >/dev/null
	WT_LOG="$OMS_CLUSTER_DIR/server.log"
	wt_diag "own cluster: PGHOST=$PGHOST PGPORT=$PGPORT log=$WT_LOG"
}

# Sets an oms.* (sighup) setting with ALTER SYSTEM and reloads.
wt_set_sighup() {
	wt_sql postgres "ALTER SYSTEM SET $1 = '$2'" &&
		wt_sql postgres "SELECT pg_reload_conf()" >/dev/null
}

# Exit hook helper: keeps the server log (the cluster dir is removed at
# exit) as log/test/NAME.server.log when the suite failed or WT_KEEP_LOG=1.
wt_keep_log() {
	local name=$1
	((WT_RC != 0)) || [[ "${WT_KEEP_LOG:-0}" == 1 ]] || return 0
	if [[ -n "${WT_LOG:-}" && -r "$WT_LOG" ]]; then
		mkdir -p "$OMS_LOG_DIR/test"
		cp "$WT_LOG" "$OMS_LOG_DIR/test/$name.server.log" 2>/dev/null || true
	fi
}

# Usage: wt_worker_pid DB -> the pid of the oms worker connected to DB, or nothing.
wt_worker_pid() {
	wt_sql_quiet postgres "SELECT pid FROM pg_stat_activity
		WHERE backend_type = 'oms worker' AND datname = '$1' LIMIT 1"
}

# Usage: wt_worker_status DB COLUMN -> a column of oms_worker_status() for
# served database DB (read through DB_WITH_EXT, default DB).
wt_worker_status() {
	local db=$1 col=$2 via=${3:-$1}
	wt_sql_quiet "$via" "SELECT $col FROM oms_worker_status() WHERE database = '$db'"
}

# Usage: wt_server_ready -> true once the server accepts connections again.
wt_server_ready() {
	"$OMS_PG_BINDIR/pg_isready" -q -h "$PGHOST" -p "$PGPORT" -t 2 &&
		wt_sql_quiet postgres "SELECT 1" >/dev/null
}

# Usage: wt_setup_stock DB NSKUS ON_HAND: stock for SKU-01..SKU-NN.
wt_setup_stock() {
	local db=$1 n=$2 on_hand=$3
	wt_sql "$db" "SELECT count(oms_set_stock(format('SKU-%s', lpad(i::text, 2, '0')), $on_hand))
		FROM generate_series(1, $n) AS i" >/dev/null
}

# Usage: wt_create_orders DB COUNT NSKUS TAG
# Creates COUNT pending orders, each with 1 to 3 lines of distinct SKUs
# (needs NSKUS >= 3; quantities 1..4), all known from the order number.  The orders carry
# customer "TAG-<i>" so a scenario can select its own.  Also records the
# stock before anything is reserved in public.wt_stock_before.
wt_create_orders() {
	local db=$1 count=$2 nskus=$3 tag=$4
	wt_sql "$db" "
		CREATE TABLE IF NOT EXISTS public.wt_stock_before AS SELECT sku, on_hand FROM oms.stock WITH NO DATA;
		TRUNCATE public.wt_stock_before;
		INSERT INTO public.wt_stock_before SELECT sku, on_hand FROM oms.stock;
		SELECT count(oms_create_order(
			'$tag-' || i,
			(SELECT jsonb_agg(jsonb_build_object(
						'sku', format('SKU-%s', lpad((((i + l) % $nskus) + 1)::text, 2, '0')),
						'quantity', (i + l) % 4 + 1,
						'unit_price', 100 * l + i % 50 + 1))
			 FROM generate_series(1, 1 + i % 3) AS l),
			'EUR'))
		FROM generate_series(1, $count) AS i" >/dev/null
}

# Usage: wt_pay_script DB FILE: writes one autocommit oms_pay_order call per
# pending order to FILE (each pay its own transaction, so each wakes the worker).
wt_pay_script() {
	local db=$1 file=$2
	wt_sql "$db" "SELECT format('SELECT 1 FROM oms_pay_order(%L, %L);', id, 'test_ok')
		FROM oms.orders WHERE status = 'pending' ORDER BY customer_id" >"$file"
}

# Usage: wt_in_flight DB -> running or compensating sagas.
wt_in_flight() {
	wt_sql_quiet "$1" "SELECT count(*) FROM oms.sagas WHERE status IN ('running', 'compensating')"
}

wt_sagas_done() {
	local db=$1 expected=$2
	wt_sql_true "$db" "SELECT count(*) = $expected AND count(*) FILTER (WHERE status IN ('running', 'compensating')) = 0
		FROM oms.sagas WHERE kind = 'fulfilment'"
}

# Usage: wt_check_invariants DB EXPECTED_ORDERS LABEL
# Runs test/process/invariants.sql and prints one ok/not ok line per check.
wt_check_invariants() {
	local db=$1 expected=$2 label=$3 out name ok detail
	if ! out=$(PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" "$OMS_PG_BINDIR/psql" -X -q -At -F '|' -v ON_ERROR_STOP=1 -v expected="$expected" \
		-d "$db" -f "$WT_PROCESS_DIR/invariants.sql" 2>&1); then
		wt_not_ok "$label: invariant query ran" "$out"
		return
	fi
	while IFS='|' read -r name ok detail; do
		[[ -n "$name" ]] || continue
		if [[ "$ok" == t ]]; then
			wt_ok "$label: $name"
		else
			wt_not_ok "$label: $name" "$detail"
		fi
	done <<<"$out"
}

# Usage: wt_log_errors_of PID... -> WARNING/ERROR/FATAL/PANIC lines of these pids in the server log.
wt_log_errors_of() {
	local pid pattern=""
	for pid in "$@"; do pattern+="${pattern:+|}\\[$pid\\]"; done
	[[ -n "$pattern" ]] || return 0
	grep -E "($pattern)" "$WT_LOG" | grep -E '(ERROR|FATAL|PANIC|WARNING):' || true
}
