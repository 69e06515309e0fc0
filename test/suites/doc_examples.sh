#!/usr/bin/env bash
# test/suites/doc_examples.sh: a doc example is a test.
# Runs the executable examples (a ```sql block followed by a ```psql-output
# block) of each page below with test/doc_examples.py, in a fresh database
# per page, and compares psql's output with the doc.  One "ok" line per
# example.  Regenerate a page's outputs (never edit them by hand):
#   python3 test/doc_examples.py --update docs/drivers.md   (PG* variables
#   pointing at a cluster with oms installed; see the script's header)
# or, against the test cluster: OMS_DOC_UPDATE=1 OMS_SUITES=doc_examples bash test/run.sh suites
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$OMS_ROOT"

PAGES=(README.md docs/api.md docs/drivers.md docs/testing.md)
# Login roles the pages create (cluster-wide: dropped before and after).
PAGE_ROLES=(shop_app shop_ops shop_test shop_api shop_guest)
db=oms_doc_examples
export PSQL="$OMS_PG_BINDIR/psql"
mode=()
[[ "${OMS_DOC_UPDATE:-0}" != 1 ]] || mode=(--update)

cleanup() {
	local r
	PGOPTIONS="-c client_min_messages=warning" oms_psql -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
	# DROP OWNED also revokes what a role was granted on shared objects
	# (GRANT SET ON PARAMETER), which DROP ROLE would refuse.
	for r in "${PAGE_ROLES[@]}"; do
		oms_psql -d postgres -v role="$r" >/dev/null <<-'SQL'
			SELECT format('DROP OWNED BY %I', rolname) FROM pg_roles WHERE rolname = :'role' \gexec
			SET client_min_messages = warning;
			DROP ROLE IF EXISTS :"role";
		SQL
	done
}

rc=0
for page in "${PAGES[@]}"; do
	cleanup
	# No extension: a page that does not run CREATE EXTENSION oms itself
	# gets it from doc_examples.py.
	oms_psql -d postgres -c "CREATE DATABASE $db" >/dev/null
	PGDATABASE=$db python3 test/doc_examples.py "${mode[@]}" "$page" || rc=1
done

# The node-postgres claims of docs/drivers.md, with the real driver.  The
# module comes from npm (test/drivers/package.json); without node, or
# without npm and network, the check is skipped.
drivers=test/drivers
if ! command -v node >/dev/null; then
	echo "ok - node-postgres checks # SKIP node is not installed (apt-get install nodejs npm)"
else
	if [[ ! -d $drivers/node_modules/pg ]] && command -v npm >/dev/null; then
		timeout 120 npm install --prefix "$drivers" --no-audit --no-fund --no-save >/dev/null 2>&1 || true
	fi
	if [[ ! -d $drivers/node_modules/pg ]]; then
		echo "ok - node-postgres checks # SKIP module pg missing (npm install --prefix $drivers)"
	else
		cleanup
		oms_fresh_db "$db" >/dev/null
		PGDATABASE=$db node "$drivers/node_pg.js" || rc=1
	fi
fi
cleanup
exit $rc
