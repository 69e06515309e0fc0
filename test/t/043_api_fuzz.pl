# test/t/043_api_fuzz.pl: the API fuzzer (test/fuzz/api_fuzz.py, one test
# per check it prints) on a node of its own, so that its server log holds
# nothing but the fuzzer's sessions and its roles do not outlive it.
#
# Settings of the node, and why:
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
# The full SQL of failing calls goes to api_fuzz.failures.sql next to the
# server log (log/tap/043_api_fuzz/).
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Utils;
use Test::More;
use OmsTest;
use OmsScript;

my $node = oms_node(
	'fuzz',
	"oms.retry_base = '1ms'", "oms.retry_max = '1ms'",
	"oms.step_timeout = '1h'", "oms.payment_reply_timeout = '1h'",
	'log_min_messages = log', 'log_min_error_statement = panic',
	# Cluster.pm logs every connection; the fuzzer reconnects after errors.
	'log_connections = off', 'log_disconnections = off');

oms_run_tap_program(
	'test/fuzz/api_fuzz.py',
	[ '/usr/bin/python3', oms_root() . '/test/fuzz/api_fuzz.py' ],
	{
		PGHOST              => $node->host,
		PGPORT              => $node->port,
		OMS_FUZZ_SERVER_LOG => $node->logfile,
		OMS_FUZZ_FAILURES   => "$PostgreSQL::Test::Utils::log_path/api_fuzz.failures.sql",
	});

$node->stop;
done_testing();
