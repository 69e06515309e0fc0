#!/usr/bin/env bash
# test/suites/bulk_import.sh: 100,000 idempotency keys in one transaction,
# with concurrent duplicates of some of them (test/process/bulk_import.py).
# On this suite's own cluster with PostgreSQL's default lock table
# (max_locks_per_transaction = 64) and max_connections = 50: about 3,800
# entries, which 0.1.0's advisory lock per key used up.  No worker serves
# the database: the test is about the API's own resources.
# Run alone: bash test/suites/bulk_import.sh (OMS_BULK_KEYS=n for another size).
# shellcheck disable=SC2317 # functions here are called indirectly (wait loops, exit hooks), which shellcheck 0.9 cannot follow
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"

DB=oms_bulk

cleanup() { wt_keep_log bulk_import; }

wt_start_cluster "oms.database_name = ''" "max_locks_per_transaction = 64"
oms_on_exit cleanup
oms_fresh_db "$DB" >/dev/null

PGDATABASE=$DB /usr/bin/python3 "$OMS_ROOT/test/process/bulk_import.py" || WT_RC=1
exit "$WT_RC"
