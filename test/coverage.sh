#!/usr/bin/env bash
# test/coverage.sh: the runner behind "make coverage".
# Owns: a gcov build of the extension (make COVERAGE=1: -O0 --coverage),
# installed and run through test/run.sh (regress, isolation, the suites and
# the TAP tests by default; arguments choose other parts, as for run.sh), then line and
# branch coverage of src/*.c with gcovr: one line per file and a total on
# stdout, an HTML report in log/coverage/index.html.
#
# The server runs as the postgres user, which cannot write next to the
# objects; GCOV_PREFIX sends each process's counters (written when it
# exits normally, so a cleanly stopped cluster flushes its workers too) to a
# scratch directory, copied back next to the .gcno files afterwards.
# Processes killed on purpose (kill -9, immediate shutdown) flush nothing;
# TAP nodes are stopped with -m fast at exit (test/perl/OmsTest.pm), so
# only the processes a test kills on purpose are missing.
#
# The suite "build" is left out: it rebuilds every object (make -B), which
# would replace the .gcno files the counters belong to.  The next plain
# "make" or "make test" rebuilds without instrumentation (the objects
# depend on src/build-flags.stamp).
set -euo pipefail
shopt -s nullglob

# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OMS_PACKAGES+=(gcovr)
oms_ensure_packages

COV_DIR="$OMS_LOG_DIR/coverage"
GCDA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/oms-gcda.XXXXXX")
# shellcheck disable=SC2016 # expanded when the exit hook runs
oms_on_exit 'rm -rf "$GCDA_DIR"'
chmod 777 "$GCDA_DIR"

cd "$OMS_ROOT"
rm -f src/*.gcda src/*.gcno
rm -rf "$COV_DIR"
mkdir -p "$COV_DIR"

export COVERAGE=1 GCOV_PREFIX="$GCDA_DIR" GCOV_PREFIX_STRIP=0
if [[ -z "${OMS_SUITES:-}" ]]; then
	OMS_SUITES=""
	for s in test/suites/*.sh; do
		s=$(basename "$s" .sh)
		[[ "$s" == build ]] || OMS_SUITES+="${OMS_SUITES:+ }$s"
	done
	export OMS_SUITES
fi
((${#@})) || set -- regress isolation suites tap

# test/run.sh builds and installs the instrumented extension (COVERAGE=1
# reaches make through the environment).  A failing test still leaves
# counters worth reporting, so its status is kept for the end.
tests_rc=0
bash test/run.sh "$@" || tests_rc=$?

# Counters land under GCDA_DIR with the objects' absolute paths.
copied=0
for f in "$GCDA_DIR$OMS_ROOT"/src/*.gcda; do
	cp "$f" src/
	copied=$((copied + 1))
done
((copied > 0)) || oms_die "no coverage data was written (was the cluster stopped cleanly?)"

oms_header "coverage of src/*.c (HTML: $COV_DIR/index.html)"
# One gcov pass writes both: the annotated HTML and the figures below.
gcovr --root "$OMS_ROOT" --filter 'src/.*\.c$' --object-directory src \
	--html-details "$COV_DIR/index.html" --json-summary "$COV_DIR/summary.json" >/dev/null
# One line per file: lines and branches covered, and the total last.
/usr/bin/python3 - "$COV_DIR/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
def pct(n, d):
    return "%5.1f%%" % (100.0 * n / d) if d else "   - "
row = "%-20s lines %5d/%-5d %s   branches %5d/%-5d %s"
for f in sorted(s["files"], key=lambda f: f["filename"]):
    print(row % (f["filename"], f["line_covered"], f["line_total"], pct(f["line_covered"], f["line_total"]),
                 f["branch_covered"], f["branch_total"], pct(f["branch_covered"], f["branch_total"])))
print(row % ("TOTAL", s["line_covered"], s["line_total"], pct(s["line_covered"], s["line_total"]),
             s["branch_covered"], s["branch_total"], pct(s["branch_covered"], s["branch_total"])))
EOF
exit "$tests_rc"
