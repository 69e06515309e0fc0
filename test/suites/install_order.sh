#!/usr/bin/env bash
# test/suites/install_order.sh: the extension script's fragments do not
# depend on their order beyond what each one declares.
#
# src/sql/*.sql are concatenated in the Makefile's order (SQL_PARTS).  Each
# fragment names what it needs created before it ("-- requires:") and grants
# its own objects, so no privilege depends on where a fragment sits.  This
# suite checks that the Makefile's order keeps every requirement, builds the
# script in the most different order the requirements allow
# (test/install/order.py), installs it as a version of its own next to the
# real one, and compares the catalog with a fresh install of the real script
# (test/upgrade/catalog.sql: every object, its definition, comments and
# privileges), the version line aside.
# shellcheck disable=SC2317 # cleanup is called indirectly (an exit hook), which shellcheck 0.9 cannot follow
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$OMS_ROOT"

version=$(sed -n "s/^default_version = '\(.*\)'/\1/p" oms.control)
alt_version="$version-reordered"
alt_script="$("$PG_CONFIG" --sharedir)/extension/oms--$alt_version.sql"
work=$(mktemp -d "${TMPDIR:-/tmp}/oms-install-order.XXXXXX")
cleanup() {
	rm -f "$alt_script"
	rm -rf "$work"
}
oms_on_exit cleanup
rc=0

if order=$(python3 test/install/order.py Makefile 2>"$work/order.err"); then
	echo "ok - the Makefile lists every fragment after what its -- requires: line names"
else
	echo "not ok - the Makefile lists every fragment after what its -- requires: line names"
	sed 's/^/# /' "$work/order.err"
	exit 1
fi
makefile_order=$(sed -n '/^SQL_PARTS/,/checks\.sql/p' Makefile | grep -o 'src/sql/[a-z_]*\.sql' | sed 's|src/sql/||; s|\.sql||' | tr '\n' ' ')
echo "# Makefile order:  $makefile_order"
echo "# reordered:       $order"
if [[ "$order " == "$makefile_order" ]]; then
	echo "not ok - the reordered script differs from the Makefile's order"
	exit 1
fi
echo "ok - the reordered script differs from the Makefile's order"

# The same substitutions PGXS makes when it installs the real script.
for part in $order; do
	cat "src/sql/$part.sql"
done | sed "s|MODULE_PATHNAME|\$libdir/oms|g" >"$alt_script"

oms_fresh_db oms_order_fresh >/dev/null
PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" oms_psql -q -d postgres -c "DROP DATABASE IF EXISTS oms_order_alt WITH (FORCE)" -c "CREATE DATABASE oms_order_alt"
if oms_psql -q -d oms_order_alt -v ON_ERROR_STOP=1 -c "CREATE EXTENSION oms VERSION '$alt_version'" 2>"$work/alt.err"; then
	echo "ok - the extension installs from its fragments in the other order"
else
	echo "not ok - the extension installs from its fragments in the other order"
	sed 's/^/# /' "$work/alt.err"
	exit 1
fi
oms_psql -At -d oms_order_fresh -f test/upgrade/catalog.sql | grep -v '^extension oms | version: ' >"$work/fresh.txt"
oms_psql -At -d oms_order_alt -f test/upgrade/catalog.sql | grep -v '^extension oms | version: ' >"$work/alt.txt"
if diff -u "$work/fresh.txt" "$work/alt.txt" >"$work/diff.txt"; then
	echo "ok - the catalog is the same in either order ($(wc -l <"$work/fresh.txt") lines compared)"
else
	echo "not ok - the catalog is the same in either order"
	head -n 60 "$work/diff.txt" | sed 's/^/# /'
	rc=1
fi
oms_psql -q -d postgres -c "DROP DATABASE oms_order_alt" -c "DROP DATABASE oms_order_fresh"
exit "$rc"
