# test/t/042_bulk_import.pl: 100,000 idempotency keys in one transaction,
# with concurrent duplicates of some of them (test/process/bulk_import.py,
# one test per check it prints).
#
# On a node with PostgreSQL's default lock table (max_locks_per_transaction
# = 64) and max_connections = 50: about 3,800 entries, which 0.1.0's
# advisory lock per key used up.  No worker serves the database: the test
# is about the API's own resources.
# Run alone: OMS_TAP=042_bulk_import bash test/run.sh tap (OMS_BULK_KEYS=n
# for another size).
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Utils;
use Test::More;
use OmsTest;
use OmsScript;

my $db = 'oms_bulk';

# Stated, not inherited: the size of the lock table is what the test is about.
my $node = oms_node('bulk', "oms.database_name = ''", 'max_locks_per_transaction = 64');
oms_fresh_db($node, $db);

oms_run_tap_program(
	'test/process/bulk_import.py',
	[ '/usr/bin/python3', oms_root() . '/test/process/bulk_import.py' ],
	{ PGHOST => $node->host, PGPORT => $node->port, PGDATABASE => $db });

$node->stop;
done_testing();
