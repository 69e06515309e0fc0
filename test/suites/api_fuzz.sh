#!/usr/bin/env bash
# test/suites/api_fuzz.sh: the API fuzzer (test/fuzz/api_fuzz.py) in a
# cluster of its own, so that its server log holds nothing but the fuzzer's
# sessions and its roles do not outlive it.
#
# Settings of the cluster, and why:
#   oms.retry_base/retry_max 1 ms   test_flaky orders retry at the next
#                                   oms_run_sagas() instead of a second later
#   oms.step_timeout, oms.payment_reply_timeout = 1h
#                                   test_hang orders and remote payments
#                                   waiting for a reply stay processing for the
#                                   whole run, whatever its speed, so that a
#                                   seed gives the same run every time
#   log_min_messages = log          errors are not logged: the fuzzer sees
#                                   them, and some carry MBs of input; crash
#                                   reports (LOG, PANIC, TRAP) still are
#
# OMS_FUZZ_SEED (default 1, or "random") and OMS_FUZZ_CALLS (calls per
# function, default 2000) pass through; test/fuzz/README.md has the rest.
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"

wt_start_cluster "oms.retry_base = '1ms'" "oms.retry_max = '1ms'" "oms.step_timeout = '1h'" \
	"oms.payment_reply_timeout = '1h'" \
	"log_min_messages = log" "log_min_error_statement = panic"
oms_on_exit "wt_keep_log api_fuzz"

mkdir -p "$OMS_LOG_DIR/test"
export OMS_FUZZ_SERVER_LOG="$WT_LOG"
export OMS_FUZZ_FAILURES="$OMS_LOG_DIR/test/api_fuzz.failures.sql"
/usr/bin/python3 "$OMS_ROOT/test/fuzz/api_fuzz.py" || WT_RC=$?
exit "$WT_RC"
