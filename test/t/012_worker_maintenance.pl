# test/t/012_worker_maintenance.pl: without pg_cron, the oms worker runs
# the maintenance tasks itself every oms.maintenance_interval.
#
# The node has no pg_cron, oms.maintenance_interval = 1s and
# oms.pending_order_ttl = 1h, and every task's period is lowered to one
# second: an abandoned pending order (created two hours ago) gets canceled
# with reason "expired" by the worker alone, a young one is left pending,
# every task shows runs by the worker and keeps running; with
# oms.maintenance_interval = 0 the worker stops.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Utils;
use Test::More;
use OmsTest;

my $db       = 'oms_maint';
my $deadline = 60;

my $node = oms_node('maint', "oms.database_name = '$db'", 'oms.maintenance_interval = 1',
	"oms.pending_order_ttl = '1h'");
oms_fresh_db($node, $db);

ok( oms_wait_until(
		$deadline,
		sub {
			oms_sql_true($node, $db,
				'SELECT alive AND loops >= 1 FROM oms_worker_status() WHERE database = current_database()');
		}),
	"the worker runs in $db") or BAIL_OUT('no worker');
my $pid = oms_worker_pid($node, $db);

# Periods are the worker's per-task cadence (1 to 5 minutes by default);
# one second lets the test see several rounds quickly.
oms_sql($node, $db, q{UPDATE oms.maintenance_tasks SET period = '1 second'});

my $item  = '[{"sku": "WM-A", "quantity": 1, "unit_price": 100}]';
my $old   = oms_sql($node, $db, "SELECT oms_create_order('wm-old', '$item', 'EUR') ->> 'order_id'");
my $young = oms_sql($node, $db, "SELECT oms_create_order('wm-young', '$item', 'EUR') ->> 'order_id'");
oms_sql($node, $db, "UPDATE oms.orders SET created_at = now() - interval '2 hours' WHERE id = '$old'");

ok( oms_wait_until(
		$deadline,
		sub { oms_sql_true($node, $db, "SELECT status = 'canceled' FROM oms.orders WHERE id = '$old'") }),
	'the worker cancels an abandoned pending order by itself')
  or diag(oms_sql_quiet($node, $db, 'SELECT * FROM oms.maintenance_status') // '');
is( oms_sql($node, $db,
		"SELECT (SELECT data ->> 'reason' FROM oms.order_events WHERE order_id = '$old' AND event_type = 'order.canceled') = 'expired'
			AND EXISTS (SELECT FROM oms.outbox WHERE aggregateid = '$old' AND type = 'order.canceled')"),
	't', 'the cancel has reason expired and an order.canceled event');
is(oms_sql($node, $db, "SELECT status FROM oms.orders WHERE id = '$young'"),
	'pending', 'a pending order younger than oms.pending_order_ttl stays pending');

# Every task runs, as the worker, and again: a timer, not a one-off.
ok( oms_wait_until(
		$deadline,
		sub {
			oms_sql_true($node, $db,
				q{SELECT bool_and(runs >= 2 AND last_run_by = 'worker' AND run_by = 'worker') FROM oms.maintenance_status});
		}),
	'every task is run by the worker, repeatedly')
  or diag(oms_sql_quiet($node, $db, 'SELECT task, run_by, runs, last_run_by FROM oms.maintenance_status') // '');
is(oms_sql($node, $db, 'SELECT sum(failures) FROM oms.maintenance_tasks'), '0', 'no maintenance task failed')
  or diag(oms_sql_quiet($node, $db, 'SELECT task, failures, last_error FROM oms.maintenance_tasks') // '');

# oms.maintenance_interval = 0: the worker stops running maintenance.  Wait
# until the worker has looped twice after the reload (it reads the setting
# at the top of a loop), then five more times, and check no task ran in
# those five.
sub loops_past
{
	my ($n) = @_;
	return oms_wait_until(
		$deadline,
		sub {
			oms_sql_true($node, $db,
				"SELECT loops >= $n FROM oms_worker_status() WHERE database = current_database()");
		});
}
oms_set_sighup($node, 'oms.maintenance_interval', 0);
loops_past(oms_worker_status($node, $db, 'loops') + 2);
my $before = oms_sql($node, $db, 'SELECT sum(runs) FROM oms.maintenance_tasks');
ok(loops_past(oms_worker_status($node, $db, 'loops') + 5), 'the worker keeps looping');
is(oms_sql($node, $db, 'SELECT sum(runs) FROM oms.maintenance_tasks'),
	$before, 'with oms.maintenance_interval = 0 the worker runs no maintenance');
is(oms_sql($node, $db, q{SELECT bool_and(run_by = 'none') FROM oms.maintenance_status}),
	't', 'the status view says nobody runs maintenance');

is(oms_log_errors_of($node, $pid), '', 'the worker logged no error or warning');

$node->stop;
done_testing();
