# shellcheck shell=bash
# test/process/common.sh: the few shell helpers the scripts that drive the
# worker from the shell share: test/demo.sh, test/valgrind/run.sh and
# bench/payment_remote.sh (and test/payment/lib.sh, which they source).
# Source it after test/lib.sh.  The tests themselves are TAP tests
# (test/t/*.pl, with test/perl/OmsTest.pm); test/process/invariants.sql is
# theirs.
#
# No sleep is ever used as synchronisation: wt_wait_until polls a condition
# every 0.1 s up to a generous deadline, which only guards against a hang.

wt_diag() {
	local line
	while IFS= read -r line; do printf '# %s\n' "$line"; done <<<"$*"
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
