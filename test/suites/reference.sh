#!/usr/bin/env bash
# test/suites/reference.sh: the reference tables are the catalog's.
# Regenerates docs/reference.md (functions with their signatures, grants and
# comments; tables and views with their privileges; types) and the settings
# table of docs/configuration.md with test/reference.py from a fresh
# CREATE EXTENSION oms, into a temporary directory, and fails with the diff
# when docs/ differs.  Regenerate (never edit them by hand):
#   OMS_DOC_UPDATE=1 OMS_SUITES=reference bash test/run.sh suites
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$OMS_ROOT"

db=oms_reference
out=$(mktemp -d "${TMPDIR:-/tmp}/oms-reference.XXXXXX")
# shellcheck disable=SC2317 # called by the exit hook, which shellcheck cannot follow
cleanup() {
	rm -rf "$out"
	PGOPTIONS="-c client_min_messages=warning" oms_psql -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true
}
oms_on_exit cleanup

oms_fresh_db "$db" >/dev/null
# Debian's interpreter: it has python3-psycopg (see GUIDE.md).
PGDATABASE=$db /usr/bin/python3 test/reference.py "$out"

rc=0
check() {
	local file=$1 what=$2
	if [[ "${OMS_DOC_UPDATE:-0}" == 1 ]]; then
		cmp -s "$out/$file" "docs/$file" || cp "$out/$file" "docs/$file"
		echo "ok - docs/$file: $what # regenerated"
	elif diff -u "docs/$file" "$out/$file" >"$out/$file.diff"; then
		echo "ok - docs/$file: $what"
	else
		echo "not ok - docs/$file: $what"
		# shellcheck disable=SC2001 # a prefix on every line: no ${var//} form
		sed 's/^/# /' "$out/$file.diff"
		echo "# regenerate: OMS_DOC_UPDATE=1 OMS_SUITES=reference bash test/run.sh suites"
		rc=1
	fi
}
check reference.md "functions, grants, tables and types as the catalog has them"
check configuration.md "the settings table is pg_settings"
exit $rc
