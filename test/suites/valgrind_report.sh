#!/usr/bin/env bash
# test/suites/valgrind_report.sh: the verdict of "make valgrind"
# (test/valgrind/report.py) on canned logs (test/valgrind/fixtures), so the
# parser is checked by every "make test" without running valgrind.
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

FIX="$OMS_ROOT/test/valgrind/fixtures"
REPORT="$OMS_ROOT/test/valgrind/report.py"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oms-vg-report.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

check() {
	if [[ "$2" == 0 ]]; then
		printf 'ok - %s\n' "$1"
	else
		printf 'not ok - %s\n' "$1"
		sed 's/^/# /' "$3"
	fi
}
has() { grep -qF -- "$1" "$2" && echo 0 || echo 1; }

rc=0
/usr/bin/python3 "$REPORT" "$FIX" >"$WORK/all.out" 2>&1 || rc=$?
check "an invalid read in src/state.c fails the run (exit status 1)" "$((rc == 1 ? 0 : 1))" "$WORK/all.out"
check "it is counted in oms code, the others apart" \
	"$(has 'valgrind: 1 errors in oms code (12 other errors suppressed/outside oms)' "$WORK/all.out")" "$WORK/all.out"
check "the last line is the summary" \
	"$(tail -n 1 "$WORK/all.out" | grep -q '^valgrind: 1 errors in oms code' && echo 0 || echo 1)" "$WORK/all.out"
check "the error is printed with its stack and the allocation's" \
	"$(grep -q 'at 0x87F3509: oms_transition_allowed (src/state.c:162)' "$WORK/all.out" &&
		grep -q 'by 0x87F34F2: oms_transition_allowed (src/state.c:158)' "$WORK/all.out" && echo 0 || echo 1)" "$WORK/all.out"
check "an error without an oms frame is listed apart" \
	"$(has '1 x Source and destination overlap in memcpy_chk' "$WORK/all.out")" "$WORK/all.out"
check "a log without valgrind's final summary is reported" "$(has '4244.log' "$WORK/all.out")" "$WORK/all.out"

mkdir "$WORK/clean"
cp "$FIX/4243.log" "$WORK/clean/"
rc=0
/usr/bin/python3 "$REPORT" "$WORK/clean" >"$WORK/clean.out" 2>&1 || rc=$?
check "without errors in oms code the run passes (exit status 0)" "$((rc == 0 ? 0 : 1))" "$WORK/clean.out"
check "and says 0 errors in oms code" \
	"$(has 'valgrind: 0 errors in oms code (3 other errors suppressed/outside oms)' "$WORK/clean.out")" "$WORK/clean.out"
