# test/t/010_worker_wake.pl: API calls wake the oms worker at commit.
#
# The node runs oms.worker_naptime = 60s, so the worker's timeout cannot be
# what runs the work: each case reads the worker's last loop time first and
# asserts the work finished within 30 s of the call AND before that last
# loop + 60 s, i.e. before the naptime could have fired.
# Cases: one paid order; ten orders paid in one transaction (one wake); a
# cancel of a processing order whose payment waits (test_hang); a refund; a
# payment retried twice (test_flaky): no commit wakes the worker for a
# retry, it wakes when the retry falls due.
# The observed latencies are printed as diagnostics, never asserted.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Utils;
use Test::More;
use OmsTest;

my $db       = 'oms_wake';
my $naptime  = 60;
my $deadline = 30;

# step_timeout well above the test's length: the test_hang payment must
# still be waiting when it is canceled.
my $node = oms_node('wake', "oms.database_name = '$db'", "oms.step_timeout = '10min'");
oms_fresh_db($node, $db);

# The launcher also looks for missing workers every naptime, so the long
# naptime is set only now that the database exists, followed by a restart:
# the launcher's first pass starts the worker at once.
$node->safe_psql('postgres', "ALTER SYSTEM SET oms.worker_naptime = '${naptime}s'");
$node->restart;

# The worker is up and has finished its first loop: it now sleeps 60 s.
ok( $node->poll_query_until($db,
		"SELECT alive AND loops >= 1 FROM oms_worker_status() WHERE database = current_database()"),
	'the worker runs with oms.worker_naptime = ' . oms_sql($node, $db, 'SHOW oms.worker_naptime'))
  or BAIL_OUT('the worker did not start: '
	  . (oms_sql_quiet($node, $db, 'SELECT * FROM oms_worker_status()') // ''));

oms_sql($node, $db, "SELECT oms_set_stock('SKU-W', 1000000)");
my $item = '[{"sku": "SKU-W", "quantity": 1, "unit_price": 1000}]';

sub new_order
{
	return oms_sql($node, $db, "SELECT oms_create_order('wake', '$item', 'EUR') ->> 'order_id'");
}

# check_woken(NAME, IDS, FROM_EVENT, TO_EVENT, SQL): runs the call, waits up
# to 30 s until every order has TO_EVENT, then asserts it happened before
# the worker's naptime could have ended.
sub check_woken
{
	my ($name, $ids, $from, $to, $call) = @_;
	my $orders   = "'{$ids}'::uuid[]";
	my $last_loop = oms_sql($node, $db,
		'SELECT last_loop FROM oms_worker_status() WHERE database = current_database()');
	oms_sql($node, $db, $call);
	my $done = oms_wait_until(
		$deadline,
		sub {
			oms_sql_true($node, $db,
				"SELECT count(DISTINCT order_id) = cardinality($orders) FROM oms.order_events
				 WHERE event_type = '$to' AND order_id = ANY ($orders)");
		});
	if (!$done)
	{
		fail($name);
		diag("not done within $deadline s");
		diag(oms_sql_quiet($node, $db,
			"SELECT order_id, seq, event_type, occurred_at FROM oms.order_events
			 WHERE order_id = ANY ($orders) ORDER BY 1, 2") // '');
		diag(oms_sql_quiet($node, $db, 'SELECT * FROM oms_worker_status()') // '');
		return;
	}
	my ($before, $latency, $at) = split /\|/, oms_sql($node, $db, "
		SELECT max(t.occurred_at) < '$last_loop'::timestamptz + interval '$naptime s',
			   round(max(extract(epoch FROM t.occurred_at - f.occurred_at)) * 1000, 1), max(t.occurred_at)
		FROM oms.order_events AS t
		JOIN oms.order_events AS f ON f.order_id = t.order_id AND f.event_type = '$from'
		WHERE t.event_type = '$to' AND t.order_id = ANY ($orders)");
	ok($before eq 't', $name)
	  or diag("finished at $at; the worker last looped at $last_loop, naptime $naptime s");
	diag("$from -> $to: $latency ms (worker naptime $naptime s)");
	return;
}

# 1. One paid order.
my $o1 = new_order();
check_woken('a paid order is confirmed at once: the commit woke the worker',
	$o1, 'order.processing', 'order.confirmed', "SELECT oms_pay_order('$o1', 'test_ok')");

# 2. Ten orders paid in one transaction: one wake at commit covers them all.
my $ids = join(',', map { new_order() } 1 .. 10);
check_woken('ten orders paid in one transaction are all confirmed at once',
	$ids, 'order.processing', 'order.confirmed',
	"BEGIN; SELECT oms_pay_order(id, 'test_ok') FROM unnest('{$ids}'::uuid[]) AS id; COMMIT;");

# 3. A cancel: the payment of a test_hang order waits for an answer; the
#    cancel makes its saga due now and must wake the worker to compensate.
my $o3 = new_order();
check_woken(q{a paid order's payment step starts at once (test_hang: it then waits)},
	$o3, 'order.processing', 'saga.step_waiting', "SELECT oms_pay_order('$o3', 'test_hang')");
check_woken('a cancel of a processing order is carried out at once: the commit woke the worker',
	$o3, 'order.cancel_requested', 'order.canceled',
	"SELECT oms_cancel_order('$o3', 'changed my mind')");

# 4. A refund of the confirmed order.
check_woken('a refund is carried out at once: the commit woke the worker',
	$o1, 'refund.requested', 'order.refunded', "SELECT oms_refund_order('$o1')");

# 5. Retries: test_flaky fails the payment twice, and each retry is due
#    after a backoff of about oms.retry_base (1 s), doubling.  No commit
#    wakes the worker for a retry: it must wake by itself when the retry
#    falls due, long before its 60 s naptime.
my $o5 = new_order();
check_woken(
	'a payment retried twice after its backoffs is confirmed: the worker woke when each retry fell due',
	$o5, 'order.processing', 'order.confirmed', "SELECT oms_pay_order('$o5', 'test_flaky')");

oms_no_worker_errors($node);

$node->stop;
done_testing();
