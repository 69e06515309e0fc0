#!/usr/bin/env bash
# test/valgrind/run.sh: the runner behind "make valgrind".
# Owns: one throwaway cluster whose postmaster runs under valgrind memcheck
# (every backend and background worker is a forked child, so each runs
# under valgrind too, with its own log), the test parts below against it,
# a clean stop, and the verdict from the valgrind logs (report.py).
#   regress    pg_regress, REGRESS list from the Makefile, default settings
#              (the regress database is not served by a worker, as in
#              make test; the launcher and a worker for "postgres" run)
#   isolation  pg_isolation_regress, ISOLATION list
#   worker     the server restarted with oms.database_name = 'oms_valgrind'
#              and the relay on (a mock Kafka from test/kafka), and
#              test/demo.sql run there with the test payment service: the
#              worker's saga loop, relay, reply consumer (inbox) and
#              maintenance run under valgrind
#   tap        test/t/NAME.pl for each NAME in OMS_VALGRIND_TAP (empty by
#              default), each with its own nodes under valgrind
# Usage: test/valgrind/run.sh [regress|isolation|worker|tap ...]   (default: all)
#        test/valgrind/run.sh --report DIR   (re-read the logs of a run)
# OMS_REGRESS and OMS_ISOLATION narrow a part to the tests listed, as for
# test/run.sh.  See test/valgrind/README.md.
#
# Exit status: 1 when valgrind found errors in oms code, or when the run
# itself broke (server did not start or stop, a part could not run).  Test
# output that differs from the expected files is reported, kept in
# log/valgrind/, and does not fail the run (the server is 20-50 times
# slower under valgrind; the memory errors are what this run checks).
# OMS_VALGRIND_STRICT=1 fails on such differences too.
set -euo pipefail
shopt -s inherit_errexit
shopt -s extglob

# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=test/kafka/broker.sh
source "$OMS_ROOT/test/kafka/broker.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"
# shellcheck source=test/payment/lib.sh
source "$OMS_ROOT/test/payment/lib.sh"

VG_HOME="$OMS_ROOT/test/valgrind"
# Kept after the run: valgrind logs, server log, test output and diffs.
VG_OUT="$OMS_LOG_DIR/valgrind"
# Hang guard per part (seconds): a full part takes minutes, not an hour.
VG_PART_TIMEOUT=${OMS_VALGRIND_PART_TIMEOUT:-3600}
# --track-origins=yes says where an uninitialised value came from; it makes
# memcheck about 1.5 times slower.  OMS_VALGRIND_TRACK_ORIGINS=no skips it.
VG_TRACK_ORIGINS=${OMS_VALGRIND_TRACK_ORIGINS:-yes}
PG_REGRESS="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress"
PG_ISOLATION_REGRESS="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/isolation/pg_isolation_regress"
VG_WORK=""
PROBLEMS=()      # parts that could not run or whose output differs
BROKEN=0         # a part could not run at all
DB_WORKER=oms_valgrind

vg_cleanup() {
	[[ -z "$VG_WORK" ]] || rm -rf "$VG_WORK"
}

# Copy the valgrind logs and the server log to log/valgrind; also exit
# hooks, so a run that dies (server gone, Ctrl-C) keeps what it logged.  The
# hooks run newest first: the server log is saved before the cluster
# directory goes, the valgrind logs after the server stopped.
vg_save_logs() {
	[[ -n "$VG_WORK" && -d "$VG_WORK/logs" && ! -e "$VG_OUT/logs" ]] || return 0
	cp -r "$VG_WORK/logs" "$VG_OUT/logs"
}

vg_save_server_log() {
	[[ -n "${OMS_CLUSTER_DIR:-}" ]] || return 0
	cp "$OMS_CLUSTER_DIR/server.log" "$VG_OUT/server.log" 2>/dev/null || true
}

# ------------------------------------------------------------------ set-up
vg_ensure_valgrind() {
	command -v valgrind >/dev/null && return 0
	((EUID == 0)) || oms_die "valgrind is not installed: apt-get install -y valgrind"
	oms_say "installing valgrind"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind
}

# The program pg_ctl starts in place of postgres (OMS_POSTGRES, test/lib.sh).
vg_write_wrapper() {
	local postgres
	postgres="$("$PG_CONFIG" --bindir)/postgres"
	# shellcheck disable=SC2054  # --error-markers takes two comma-separated words
	local opts=(
		--tool=memcheck
		# Backends are forked, not exec'd: they are covered without this.
		# "no" keeps valgrind out of programs the server execs
		# (COPY ... PROGRAM, archive_command).
		--trace-children=no
		# palloc'd memory lives in malloc'd blocks until the context goes
		# away, and processes exit without freeing: leak reports are noise.
		--leak-check=no
		--track-origins="$VG_TRACK_ORIGINS"
		--num-callers=40
		--error-limit=no
		--error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END
		--gen-suppressions=all
		--suppressions="$VG_WORK/oms.supp"
		# oms's own sources then show as src/<file>.c:<line> (report.py).
		--fullpath-after="$OMS_ROOT/"
		--log-file="$VG_WORK/logs/%p.log"
	)
	# shellcheck disable=SC2206  # extra options are words on purpose
	[[ -z "${OMS_VALGRIND_OPTS:-}" ]] || opts+=($OMS_VALGRIND_OPTS)
	local arg
	{
		printf '#!/bin/bash\n# Written by test/valgrind/run.sh: postgres under valgrind memcheck.\nexec valgrind'
		for arg in "${opts[@]}"; do printf ' %q' "$arg"; done
		printf ' %q "$@"\n' "$postgres"
	} >"$VG_WORK/postgres"
	chmod 755 "$VG_WORK/postgres"
}

vg_prepare() {
	VG_WORK=$(mktemp -d "${TMPDIR:-/tmp}/oms-valgrind.XXXXXX")
	oms_on_exit vg_cleanup
	oms_on_exit vg_save_logs
	mkdir -p "$VG_WORK/logs"
	# Copied: the server user may not read the repository.
	cp "$VG_HOME/oms.supp" "$VG_WORK/oms.supp"
	vg_write_wrapper
	chmod 755 "$VG_WORK"
	if ((EUID == 0)); then
		chown -R postgres: "$VG_WORK"
	fi
	rm -rf "$VG_OUT"
	mkdir -p "$VG_OUT"
	export OMS_POSTGRES="$VG_WORK/postgres"
	# Start-up (shared memory, recovery) and a fast shutdown take seconds,
	# not the 60 s lib.sh allows by default, but under load more.
	export OMS_PG_CTL_TIMEOUT=${OMS_PG_CTL_TIMEOUT:-600}
	# pg_isolation_regress gives up on a step after this many seconds.
	export PGISOLATIONTIMEOUT=${PGISOLATIONTIMEOUT:-1800}
}

# Usage: vg_run LOG COMMAND ARGS...: runs the command with the part's hang
# guard, output to LOG.  In the background with a wait, so Ctrl-C stops the
# run at once (bash runs traps only between commands); the exit hook stops
# the command.
VG_CHILD=""
vg_run() {
	local log=$1 rc=0
	shift
	timeout --kill-after=30 "$VG_PART_TIMEOUT" "$@" >"$log" 2>&1 &
	VG_CHILD=$!
	wait "$VG_CHILD" || rc=$?
	VG_CHILD=""
	return "$rc"
}

vg_stop_child() {
	[[ -z "$VG_CHILD" ]] || kill -TERM "$VG_CHILD" 2>/dev/null || true
}

# Records a problem of a part: "broken" ones mean the part did not run.
vg_problem() {
	PROBLEMS+=("$2")
	[[ "$1" != broken ]] || BROKEN=1
}

# ------------------------------------------------------------------- parts
# Prints "N tests, K differ: names" from pg_regress output (PG15 format,
# "test NAME ... ok" or "     NAME ... FAILED").
vg_pg_regress_result() {
	awk '
	/^(test +| +)[^ ]+ +\.\.\. / {
		line = $0; sub(/^test +/, "", line); sub(/^ +/, "", line)
		name = line; sub(/ .*/, "", name)
		st = line; sub(/^[^ ]+ +\.\.\. +/, "", st)
		n++
		if (st !~ /^ok/ && st !~ /^failed \(ignored\)/) { bad++; names = names " " name }
	}
	END { printf "%d tests, %d differ%s\n", n, bad, (bad ? ":" names : "") }' "$1"
}

vg_run_pg_regress() {
	local part=$1 driver=$2 list_var=$3 opts_var=$4 db=$5
	local override="OMS_$list_var" list opts tests=() optv=() rc=0
	list=${!override:-$(oms_make_var "$list_var")}
	opts=$(oms_make_var "$opts_var")
	read -ra tests <<<"$list"
	read -ra optv <<<"${opts//--dbname=+([^ ])/}"
	if ((${#tests[@]} == 0)); then
		oms_say "skipping $part: $list_var is empty"
		return 0
	fi
	oms_header "$part under valgrind: ${#tests[@]} tests ($list_var in Makefile)"
	local out="$VG_OUT/$part" t0=$SECONDS
	mkdir -p "$out"
	# The isolation specs are read from test/specs, their outputs from
	# test/expected (ISOLATION_OPTS --inputdir=test), results go to $out.
	vg_run "$out/driver.log" \
		"$driver" --bindir="$OMS_PG_BINDIR" "${optv[@]}" --outputdir="$out" \
		--host="$PGHOST" --port="$PGPORT" --user=postgres --dbname="$db" \
		"${tests[@]}" || rc=$?
	grep -E '^(test +| +)[^ ]+ +\.\.\. ' "$out/driver.log" || true
	local result
	result=$(vg_pg_regress_result "$out/driver.log")
	oms_say "-- $part: $result ($((SECONDS - t0)) s; output: $out)"
	if ((rc == 124 || rc == 137)); then
		vg_problem broken "$part: timed out after $VG_PART_TIMEOUT s"
	elif [[ "$result" == "0 tests"* ]]; then
		vg_problem broken "$part: the driver ran no test (exit status $rc; see $out/driver.log)"
		tail -n 20 "$out/driver.log" >&2
	elif [[ "$result" != *", 0 differ" ]]; then
		vg_problem diff "$part: $result (diffs: $out/regression.diffs)"
	fi
	vg_ensure_cluster "$part"
}

# A crash under valgrind (a backend dying on a signal) makes the postmaster
# restart; a stopped server is started again so the next part runs.
vg_ensure_cluster() {
	oms_cluster_alive && return 0
	oms_warn "server not accepting connections after $1; restarting it"
	oms_server_log_tail 30
	vg_problem broken "$1: the server stopped"
	oms_restart_cluster
}

vg_regress() {
	vg_run_pg_regress regress "$PG_REGRESS" REGRESS REGRESS_OPTS oms_regression
}

vg_isolation() {
	vg_run_pg_regress isolation "$PG_ISOLATION_REGRESS" ISOLATION ISOLATION_OPTS oms_isolation
}

# The worker part: the demo's workload with a worker serving its database.
vg_worker() {
	oms_header "worker under valgrind: test/demo.sql in $DB_WORKER, served by a worker, relay to a mock Kafka"
	local out="$VG_OUT/worker" t0=$SECONDS rc=0
	mkdir -p "$out"
	oms_kafka_start --topic oms.order-events --topic "$PM_COMMANDS_TOPIC" --topic "$PM_REPLIES_TOPIC" --partitions 3
	# Postmaster settings: a restart, under valgrind like the first start.
	oms_psql -d postgres -c "ALTER SYSTEM SET oms.database_name = '$DB_WORKER'" \
		-c "ALTER SYSTEM SET oms.kafka_brokers = '$OMS_KAFKA_BOOTSTRAP'"
	oms_restart_cluster
	if ! pm_service_start "$out/service.log"; then
		vg_problem broken "worker: the test payment service did not start ($out/service.log.err)"
		return 0
	fi
	oms_fresh_db "$DB_WORKER" >/dev/null
	# demo.sql waits up to 30 s for each step of the worker and polls every
	# 20 ms; under valgrind the worker needs longer, and a 20 ms poll would
	# take the CPU from it.  Only those literals change.
	local n
	n=$(grep -c "DEFAULT '30s'" "$OMS_ROOT/test/demo.sql" || true)
	((n > 0)) || oms_warn "test/demo.sql has no DEFAULT '30s' wait any more: its waits keep their timeouts"
	sed -e "s/DEFAULT '30s'/DEFAULT '10min'/" -e 's/pg_sleep(0\.02)/pg_sleep(0.2)/' \
		"$OMS_ROOT/test/demo.sql" >"$out/demo.sql"
	vg_run "$out/demo.out" \
		"$OMS_PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -P pager=off -d "$DB_WORKER" -f "$out/demo.sql" || rc=$?
	pm_service_stop
	if ((rc == 0)); then
		oms_say "-- worker: test/demo.sql ran to the end ($((SECONDS - t0)) s; output: $out/demo.out)"
	else
		oms_say "-- worker: test/demo.sql stopped (exit status $rc, $((SECONDS - t0)) s); last lines of $out/demo.out:"
		tail -n 15 "$out/demo.out"
		vg_problem diff "worker: test/demo.sql stopped with exit status $rc (output: $out/demo.out)"
	fi
	vg_ensure_cluster worker
}

# Process-level TAP tests (test/t/NAME.pl, OMS_VALGRIND_TAP="031_payment_kafka"),
# run by test/tap.sh: each test starts its own nodes, which OMS_POSTGRES
# puts under valgrind too (OmsTest's oms_start), logging into the same
# directory.  Their deadlines are made for a server without valgrind, so a
# "not ok" is reported, not fatal.  A node the test restarts with
# $node->restart runs without valgrind (pg_ctl restart does not take the
# wrapper).  The nodes' logs are kept in log/valgrind/tap/NAME/: the report
# reads them to say which process was which.
vg_tap() {
	local names=() name rc out="$VG_OUT/tap"
	read -ra names <<<"${OMS_VALGRIND_TAP:-}"
	if ((${#names[@]} == 0)); then
		oms_say "skipping tap: OMS_VALGRIND_TAP is empty"
		return 0
	fi
	mkdir -p "$out"
	for name in "${names[@]}"; do
		[[ -f "$OMS_ROOT/test/t/$name.pl" ]] || {
			vg_problem broken "tap: no test/t/$name.pl"
			continue
		}
		oms_header "TAP test $name under valgrind"
		local t0=$SECONDS
		rc=0
		# The test starts its own mock Kafka: not ours of the worker part.
		# pg_ctl stop (PGCTLTIMEOUT) and Cluster.pm's polls
		# (PG_TEST_TIMEOUT_DEFAULT) get the time a server under valgrind needs.
		vg_run "$out/$name.log" env -u OMS_KAFKA_PID -u OMS_KAFKA_DIR -u OMS_KAFKA_BOOTSTRAP \
			PGCTLTIMEOUT="$OMS_PG_CTL_TIMEOUT" PG_TEST_TIMEOUT_DEFAULT="$OMS_PG_CTL_TIMEOUT" \
			bash "$OMS_ROOT/test/tap.sh" "$OMS_ROOT/test/t/$name.pl" || rc=$?
		rm -rf "${out:?}/$name"
		[[ ! -d "$OMS_LOG_DIR/tap/$name" ]] || cp -r "$OMS_LOG_DIR/tap/$name" "$out/$name"
		local good bad
		good=$(grep -cE '^ok( |$)' "$out/$name.log" || true)
		bad=$(grep -cE '^not ok( |$)' "$out/$name.log" || true)
		oms_say "-- tap $name: $good ok, $bad not ok, exit status $rc ($((SECONDS - t0)) s; output: $out/$name.log)"
		if ((rc == 124 || rc == 137)); then
			vg_problem broken "tap $name: timed out after $VG_PART_TIMEOUT s"
		elif ((good + bad == 0)); then
			vg_problem broken "tap $name: checked nothing, exit status $rc (output: $out/$name.log)"
			tail -n 10 "$out/$name.log" >&2
		elif ((rc != 0 || bad > 0)); then
			vg_problem diff "tap $name: $bad not ok, exit status $rc (output: $out/$name.log)"
		fi
	done
}

# ---------------------------------------------------------------- the end
# Stops the server and waits until the postmaster, the last process to
# exit, is gone: then every valgrind log is complete.
vg_stop_server() {
	local pid="" i
	pid=$(head -n 1 "$OMS_PGDATA/postmaster.pid" 2>/dev/null || true)
	oms_say "stopping the server (fast shutdown under valgrind)"
	if ! oms_pg_ctl -m fast -t "$OMS_PG_CTL_TIMEOUT" stop >/dev/null 2>&1; then
		vg_problem broken "the server did not stop within $OMS_PG_CTL_TIMEOUT s (fast shutdown)"
		oms_pg_ctl -m immediate stop >/dev/null 2>&1 || true
	fi
	for ((i = 0; i < 600; i++)); do
		if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then break; fi
		sleep 0.1
	done
	vg_save_server_log
	vg_save_logs
}

vg_report() {
	local rc=0
	/usr/bin/python3 "$VG_HOME/report.py" "$VG_OUT/logs" "$VG_OUT/server.log" "$VG_OUT"/tap/*/*.log \
		>"$VG_OUT/report.txt" || rc=$?
	oms_header "valgrind report (log/valgrind/report.txt; logs: log/valgrind/logs/<pid>.log)"
	local p
	for p in "${PROBLEMS[@]}"; do
		printf 'test output: %s\n' "$p"
	done
	((${#PROBLEMS[@]} > 0)) || printf 'test output: every part ran, no differences\n'
	cat "$VG_OUT/report.txt"
	return "$rc"
}

main() {
	if [[ "${1:-}" == --report ]]; then
		[[ -n "${2:-}" ]] || oms_die "usage: $0 --report LOG_DIR (e.g. log/valgrind)"
		exec /usr/bin/python3 "$VG_HOME/report.py" "$2/logs" "$2/server.log" "$2"/tap/*/*.log
	fi
	local parts=("$@") p
	((${#parts[@]})) || parts=(regress isolation worker tap)
	for p in "${parts[@]}"; do
		case $p in
		regress | isolation | worker | tap) ;;
		*) oms_die "unknown part '$p' (regress, isolation, worker, tap)" ;;
		esac
	done
	cd "$OMS_ROOT"
	oms_ensure_packages
	vg_ensure_valgrind
	oms_build_install
	vg_prepare
	local t0=$SECONDS
	oms_say "starting PostgreSQL under valgrind (logs: $VG_OUT)"
	# jit off: LLVM-generated code only adds noise and time under valgrind.
	# autovacuum off: it would compete for the CPU and runs no oms code.
	oms_start_cluster --no-fsync "jit = off" "autovacuum = off" \
		"log_line_prefix = '%m [%p] %b: '"
	oms_on_exit vg_save_server_log
	# Registered last, so it runs first: the client goes before its server.
	oms_on_exit vg_stop_child
	for p in "${parts[@]}"; do
		"vg_$p"
	done
	vg_stop_server
	oms_say "server under valgrind for $((SECONDS - t0)) s"
	local rc=0
	# The verdict's line is the last one printed.
	vg_report || rc=$?
	if ((BROKEN)); then
		rc=1
	elif [[ "${OMS_VALGRIND_STRICT:-0}" == 1 && ${#PROBLEMS[@]} -gt 0 ]]; then
		rc=1
	fi
	return "$rc"
}

main "$@"
