#!/usr/bin/env bash
# test/run.sh: the runner behind "make test" (and .ci/run).
# Owns: starting one throwaway cluster and running every test suite in it:
#   regress    pg_regress, REGRESS list from the Makefile (sql/, expected/)
#   isolation  pg_isolation_regress, ISOLATION list (test/specs, test/expected)
#   client     every test/client/*.py with Debian's /usr/bin/python3
#   suites     every executable test/suites/*.sh
#   tap        every test/t/*.pl (PostgreSQL::Test::Cluster, own nodes;
#              run by test/tap.sh as an unprivileged user)
# Every individual test is counted; the last line is "N passed, N failed".
# Usage: test/run.sh [regress|isolation|client|suites|tap ...]   (default: all)
# OMS_REGRESS, OMS_ISOLATION, OMS_SUITES and OMS_TAP narrow a part to the
# tests listed.
set -euo pipefail
# Let failures inside $(...) stop the script too.
shopt -s inherit_errexit
shopt -s extglob

# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Wall-clock limit per client script or suite, so a hang cannot eat the CI budget.
SCRIPT_TIMEOUT=${OMS_TEST_TIMEOUT:-900}
PG_REGRESS="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress"
PG_ISOLATION_REGRESS="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/isolation/pg_isolation_regress"
RUN_LOG_DIR="$OMS_LOG_DIR/test"

PASSED=0
FAILED=0
FAILURES=()
SUITE_PASSED=0
SUITE_FAILED=0

pass() {
	PASSED=$((PASSED + 1))
	SUITE_PASSED=$((SUITE_PASSED + 1))
}

fail() {
	FAILED=$((FAILED + 1))
	SUITE_FAILED=$((SUITE_FAILED + 1))
	FAILURES+=("$1")
}

suite_begin() {
	SUITE_PASSED=0
	SUITE_FAILED=0
	oms_header "$1"
}

suite_end() {
	printf -- '-- %s: %d passed, %d failed\n' "$1" "$SUITE_PASSED" "$SUITE_FAILED"
}

# Exit hook, registered before the cluster's so it runs after the cluster
# stopped: the summary is then really the last line.  An abort outside any
# test (build failure, unexpected error) counts as one failure.
print_summary() {
	if ((OMS_EXIT_RC != 0 && FAILED == 0)); then
		fail "test/run.sh stopped early (exit status $OMS_EXIT_RC)"
	fi
	printf '\n'
	local f
	for f in "${FAILURES[@]}"; do
		printf 'FAILED: %s\n' "$f"
	done
	printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
	if ((FAILED > 0 && OMS_EXIT_RC == 0)); then
		OMS_EXIT_RC=1
	fi
}

# ------------------------------------------------------------ result parsing
# Prints "NAME ok|FAILED" per test from pg_regress output.  PG15 prints
# "test NAME ... ok 12 ms" (serial) or "     NAME ... FAILED" (parallel
# group); PG16+ prints TAP ("ok 1 - NAME", "not ok 2 + NAME").
parse_pg_regress() {
	awk '
	/^(test +| +)[^ ]+ +\.\.\. / {
		line = $0
		sub(/^test +/, "", line); sub(/^ +/, "", line)
		name = line; sub(/ .*/, "", name)
		st = line; sub(/^[^ ]+ +\.\.\. +/, "", st)
		print name, (st ~ /^ok/ || st ~ /^failed \(ignored\)/) ? "ok" : "FAILED"
		next
	}
	/^(not )?ok [0-9]+ +[-+] / {
		line = $0
		failed = (line ~ /^not /)
		sub(/^(not )?ok [0-9]+ +[-+] +/, "", line)
		name = line; sub(/ .*/, "", name)
		print name, failed ? "FAILED" : "ok"
	}' "$1"
}

# Counts one pg_regress-style run.  Listed tests without a result line (the
# driver could not connect, crashed, ...) count as failed.
count_pg_regress() {
	local suite=$1 log=$2 rc=$3
	shift 3
	local -A seen=()
	local name status t failed_before=$FAILED
	while read -r name status; do
		seen[$name]=1
		if [[ "$status" == ok ]]; then pass; else fail "$suite/$name"; fi
	done < <(parse_pg_regress "$log")
	for t in "$@"; do
		[[ -n "${seen[$t]:-}" ]] || fail "$suite/$t (no result: driver failed)"
	done
	if ((rc != 0 && FAILED == failed_before)); then
		fail "$suite (driver exited with status $rc)"
	fi
}

# Counts TAP-like lines ("ok - name", "not ok - name", optional numbers).
# A non-zero exit without any "not ok" line counts as one failure.
count_tap() {
	local label=$1 log=$2 rc=$3 line name failed_before=$FAILED
	local counted_before=$((PASSED + FAILED))
	while IFS= read -r line; do
		if [[ "$line" =~ ^not\ ok([[:space:]]+[0-9]+)?([[:space:]]*-[[:space:]]*(.*))?$ ]]; then
			name=${BASH_REMATCH[3]:-$line}
			# TAP: a failing "# TODO" test is expected to fail.
			if [[ "$line" =~ \#[[:space:]]*TODO ]]; then pass; else fail "$label: $name"; fi
		elif [[ "$line" =~ ^ok([[:space:]]+[0-9]+)?([[:space:]]*-[[:space:]]*.*)?$ ]]; then
			pass
		fi
	done <"$log"
	if ((rc != 0 && FAILED == failed_before)); then
		fail "$label (exited with status $rc$( ((rc == 124)) && echo ': timed out'))"
	elif ((rc == 0 && PASSED + FAILED == counted_before)); then
		# A test program that checked nothing is broken, not green.
		fail "$label (printed no ok/not ok lines)"
	fi
}

# Shows one test's driver run on the screen: its result line, or, when it
# printed none (the driver could not run the test), all it said but the
# per-database chatter.  The log keeps everything.  Always succeeds.
show_driver_result() {
	grep -E '^(test +| +)[^ ]+ +\.\.\. |^(not )?ok [0-9]+ +[-+] ' "$1" ||
		grep -Ev '^(SET|DROP DATABASE|CREATE DATABASE|ALTER DATABASE|CREATE EXTENSION)$|^=+ (dropping|creating|installing) ' "$1" ||
		true
}

show_diffs() {
	local diffs=$1
	[[ -s "$diffs" ]] || return 0
	printf '\n---- %s (first 200 lines) ----\n' "$diffs"
	head -n 200 "$diffs"
	printf -- '---- end of diffs ----\n'
}

# A suite may stop or crash the server; the next suite still needs it.
ensure_cluster() {
	oms_cluster_alive && return 0
	oms_warn "server not accepting connections after $1; restarting it"
	oms_server_log_tail 30
	oms_restart_cluster
}

# ------------------------------------------------------------------ suites
# Drops database $1 and creates it again as a copy of database $2, with the
# same database-level settings (CREATE DATABASE does not copy those).
# FILE_COPY writes no WAL for the copy; its checkpoints are cheap here (the
# test cluster runs with fsync off): about three times quicker than WAL_LOG.
copy_database() {
	PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" oms_psql -d postgres -v db="$1" -v template="$2" <<-'EOF'
		DROP DATABASE IF EXISTS :"db";
		CREATE DATABASE :"db" TEMPLATE :"template" STRATEGY = FILE_COPY;
		SELECT format('ALTER DATABASE %I SET %I = %L', :'db', split_part(c, '=', 1), substr(c, strpos(c, '=') + 1))
		FROM pg_db_role_setting AS s JOIN pg_database AS d ON d.oid = s.setdatabase, unnest(s.setconfig) AS c
		WHERE d.datname = :'template' AND s.setrole = 0 \gexec
	EOF
}

# Runs pg_regress or pg_isolation_regress (both take the same options) once
# per test, each time in a fresh database: a test cannot lean on what another
# one left behind, and the order of the list does not matter.  The driver
# prepares a template database the way it prepares any (its settings, the
# --load-extension of the options); each test gets a copy of it, which is
# quicker than installing oms again.
run_pg_regress_suite() {
	local suite=$1 driver=$2 list_var=$3 opts_var=$4 db=$5 outdir=$6
	local list opts tests=() optv=() rc t
	# OMS_REGRESS / OMS_ISOLATION pick some tests only, in any order.
	local override="OMS_$list_var"
	list=${!override:-$(oms_make_var "$list_var")}
	opts=$(oms_make_var "$opts_var")
	read -ra tests <<<"$list"
	# PGXS appends its own --dbname (contrib_regression); we choose the database.
	read -ra optv <<<"${opts//--dbname=+([^ ])/}"
	if ((${#tests[@]} == 0)); then
		oms_say "skipping $suite: $list_var is empty"
		return 0
	fi
	suite_begin "$suite: ${#tests[@]} tests ($list_var in Makefile), each in a fresh database"
	local diffs="$outdir/regression.diffs" log="$RUN_LOG_DIR/$suite.log" one="$RUN_LOG_DIR/$suite.one.log"
	local driver_args=(--bindir="$OMS_PG_BINDIR" "${optv[@]}" --outputdir="$outdir"
		--host="$PGHOST" --port="$PGPORT" --user=postgres)
	rm -rf "$outdir/results" "$diffs" "$diffs.all" "$outdir/regression.out"
	mkdir -p "$outdir"
	rc=0
	"$driver" "${driver_args[@]}" --dbname="${db}_template" >"$log" 2>&1 || rc=$?
	if ((rc != 0)); then
		show_driver_result "$log"
		# Every listed test counts as failed: it had no result.
		count_pg_regress "$suite" "$log" "$rc" "${tests[@]}"
		suite_end "$suite"
		ensure_cluster "$suite"
		return 0
	fi
	for t in "${tests[@]}"; do
		rc=0
		{ copy_database "$db" "${db}_template" &&
			"$driver" "${driver_args[@]}" --use-existing --dbname="$db" "$t"; } >"$one" 2>&1 || rc=$?
		cat "$one" >>"$log"
		show_driver_result "$one"
		count_pg_regress "$suite" "$one" "$rc" "$t"
		# Each run rewrites regression.diffs: keep every test's.
		[[ ! -s "$diffs" ]] || cat "$diffs" >>"$diffs.all"
		ensure_cluster "$suite/$t"
	done
	rm -f "$one" "$diffs"
	[[ ! -e "$diffs.all" ]] || mv "$diffs.all" "$diffs"
	printf -- '(full output: %s)\n' "$log"
	((SUITE_FAILED == 0)) || show_diffs "$diffs"
	suite_end "$suite"
}

run_regress() {
	run_pg_regress_suite regress "$PG_REGRESS" REGRESS REGRESS_OPTS oms_regression "$OMS_ROOT"
}

run_isolation() {
	run_pg_regress_suite isolation "$PG_ISOLATION_REGRESS" ISOLATION ISOLATION_OPTS \
		oms_isolation "$OMS_ROOT/test/output_iso"
}

# Runs one TAP-printing program and counts its lines.  timeout(1) puts the
# program in its own process group, out of reach of Ctrl-C; so it runs in the
# background and we wait for it: a signal then interrupts the wait at once,
# and the exit hook stops the program by its pid.
CHILD_PID=""

stop_child() {
	if [[ -n "$CHILD_PID" ]]; then
		kill -TERM "$CHILD_PID" 2>/dev/null || true
	fi
}

run_tap_program() {
	local label=$1 rc=0
	shift
	local log
	log="$RUN_LOG_DIR/$(basename "$label").log"
	timeout --kill-after=30 "$SCRIPT_TIMEOUT" "$@" > >(tee "$log") 2>&1 &
	CHILD_PID=$!
	wait "$CHILD_PID" || rc=$?
	CHILD_PID=""
	# No pid: waits for the tee above, so the log is complete before counting.
	wait
	count_tap "$label" "$log" "$rc"
}

run_client() {
	local scripts=() s
	shopt -s nullglob
	scripts=("$OMS_ROOT"/test/client/*.py)
	shopt -u nullglob
	if ((${#scripts[@]} == 0)); then
		oms_say "skipping client: no test/client/*.py"
		return 0
	fi
	suite_begin "client: ${#scripts[@]} scripts (/usr/bin/python3, database oms_client)"
	for s in "${scripts[@]}"; do
		printf -- '-- %s\n' "${s#"$OMS_ROOT"/}"
		# A fresh database per script, so scripts cannot depend on each other.
		if ! oms_fresh_db oms_client; then
			fail "client/$(basename "$s") (could not create database oms_client)"
			continue
		fi
		PGDATABASE=oms_client run_tap_program "client/$(basename "$s")" /usr/bin/python3 "$s"
		ensure_cluster "$(basename "$s")"
	done
	suite_end client
}

run_suites() {
	local scripts=() s
	shopt -s nullglob
	scripts=("$OMS_ROOT"/test/suites/*.sh)
	shopt -u nullglob
	if ((${#scripts[@]} == 0)); then
		oms_say "skipping suites: no test/suites/*.sh"
		return 0
	fi
	suite_begin "suites: ${#scripts[@]} scripts (test/suites)"
	for s in "${scripts[@]}"; do
		# OMS_SUITES="health exporter" runs those suites only.
		if [[ -n "${OMS_SUITES:-}" && " $OMS_SUITES " != *" $(basename "$s" .sh) "* ]]; then
			continue
		fi
		if [[ ! -x "$s" ]]; then
			oms_say "-- ${s#"$OMS_ROOT"/}: not executable, skipped"
			continue
		fi
		printf -- '-- %s\n' "${s#"$OMS_ROOT"/}"
		run_tap_program "suites/$(basename "$s")" "$s"
		ensure_cluster "$(basename "$s")"
	done
	suite_end suites
}

# Each TAP test starts its own nodes, so the shared cluster is not involved.
run_tap() {
	local scripts=() s name
	shopt -s nullglob
	scripts=("$OMS_ROOT"/test/t/*.pl)
	shopt -u nullglob
	if ((${#scripts[@]} == 0)); then
		oms_say "skipping tap: no test/t/*.pl"
		return 0
	fi
	suite_begin "tap: ${#scripts[@]} tests (test/t, PostgreSQL::Test::Cluster)"
	for s in "${scripts[@]}"; do
		name=$(basename "$s" .pl)
		# OMS_TAP="010_worker_wake" runs that test only.
		if [[ -n "${OMS_TAP:-}" && " $OMS_TAP " != *" $name "* ]]; then
			continue
		fi
		printf -- '-- %s\n' "${s#"$OMS_ROOT"/}"
		run_tap_program "tap/$name" bash "$OMS_ROOT/test/tap.sh" "$s"
	done
	suite_end tap
}

# -------------------------------------------------------------------- main
main() {
	local suites=("$@") s
	((${#suites[@]})) || suites=(regress isolation client suites tap)
	for s in "${suites[@]}"; do
		case $s in
		regress | isolation | client | suites | tap) ;;
		*) oms_die "unknown suite '$s' (regress, isolation, client, suites, tap)" ;;
		esac
	done
	oms_on_exit print_summary
	cd "$OMS_ROOT"
	oms_ensure_packages
	oms_build_install
	mkdir -p "$RUN_LOG_DIR"
	# fsync off: test data is thrown away, and it keeps the run short.
	oms_start_cluster --no-fsync
	# Registered last, so it runs first: the program goes before its server.
	oms_on_exit stop_child
	for s in "${suites[@]}"; do
		"run_$s"
	done
}

main "$@"
