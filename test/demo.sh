#!/usr/bin/env bash
# test/demo.sh: the runner behind "make demo".
# Owns: a throwaway cluster with oms installed in database oms_demo, whose
# background worker serves that database, and running test/demo.sql there
# so a person can watch the API and the sagas at work.
set -euo pipefail
# Let failures inside $(...) stop the script too.
shopt -s inherit_errexit

# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
	oms_ensure_packages
	oms_build_install
	# The worker serves only the databases in oms.database_name (read at
	# server start), so the demo database is named here.
	oms_start_cluster -- "oms.database_name = 'oms_demo'"
	oms_fresh_db oms_demo
	oms_header "oms demo (database oms_demo; each query is echoed before its result)"
	# -e echoes every query as sent, so variables show their real values;
	# -q hides psql's own chatter ("Output format is ...").
	if ! oms_psql -e -P pager=off -d oms_demo -f "$OMS_ROOT/test/demo.sql"; then
		oms_server_log_tail 40
		oms_die "the demo stopped on an unexpected error"
	fi
}

main "$@"
