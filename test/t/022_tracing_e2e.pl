# test/t/022_tracing_e2e.pl: a caller's W3C traceparent reaches Kafka as the
# header traceparent on every event its calls cause, including those the
# worker emits later for the saga; untraced calls send no such header.
#
# The node (oms.database_name = tracing_e2e) publishes to its own mock Kafka
# cluster (test/kafka).  Three orders, one client transaction per call:
#   traced    create + pay (test_ok) under T1, then a full refund under T2:
#             the worker confirms and refunds it
#   untraced  create + pay (test_ok) without a traceparent
#   declined  create + pay (test_decline) under T3: the worker fails it
# Once the outbox is empty, kcat reads the topic with its headers and every
# event is checked: the traced order's created/processing/confirmed carry
# T1 and its refunded carries T2, the declined order's events carry T3, the
# untraced order's events have no traceparent header.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Utils;
use Test::More;
use OmsKafka;
use OmsRelay;
use OmsTest;

my $db    = 'tracing_e2e';
my $topic = 'oms.order-events';
my $t1    = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
my $t2    = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
my $t3    = '00-11111111111111111111111111111111-2222222222222222-00';
my $items = '[{"sku": "SKU-01", "quantity": 1, "unit_price": 500}]';

my $kafka = OmsKafka->start(topics => [$topic], partitions => 3);
my $node  = oms_node('tracing_e2e', "oms.database_name = '$db'",
	"oms.kafka_brokers = '" . $kafka->bootstrap . "'");
my $work = relay_workdir();
diag('mock Kafka: ' . $kafka->bootstrap . ", topic $topic");

oms_fresh_db($node, $db);
oms_setup_stock($node, $db, 3, 1000);

ok(relay_wait_worker($node, $db), "the worker serves $db");

# traced(TRACEPARENT, SQL): runs SQL in its own transaction under SET LOCAL
# oms.traceparent (none when TRACEPARENT is empty).
sub traced
{
	my ($tp, $sql) = @_;
	my $set = $tp eq '' ? '' : "SET LOCAL oms.traceparent = '$tp';";
	oms_sql($node, $db, "BEGIN; $set $sql; COMMIT;");
	return;
}

sub order_id
{
	my ($customer) = @_;
	return oms_sql($node, $db, "SELECT id FROM oms.orders WHERE customer_id = '$customer'");
}

traced($t1, "SELECT 1 FROM oms_create_order('traced', '$items')");
my $o_traced = order_id('traced');
traced($t1, "SELECT 1 FROM oms_pay_order('$o_traced', 'test_ok')");
traced('', "SELECT 1 FROM oms_create_order('untraced', '$items')");
my $o_plain = order_id('untraced');
traced('', "SELECT 1 FROM oms_pay_order('$o_plain', 'test_ok')");
traced($t3, "SELECT 1 FROM oms_create_order('declined', '$items')");
my $o_declined = order_id('declined');
traced($t3, "SELECT 1 FROM oms_pay_order('$o_declined', 'test_decline')");
diag("orders: traced $o_traced, untraced $o_plain, declined $o_declined");

sub status_of
{
	my ($id) = @_;
	return oms_sql_quiet($node, $db, "SELECT status FROM oms.orders WHERE id = '$id'") // '';
}

sub orders_now
{
	return oms_sql_quiet($node, $db, 'SELECT customer_id, status FROM oms.orders') // '';
}

ok( oms_wait_until(
		60,
		sub {
			status_of($o_traced) eq 'confirmed'
			  && status_of($o_plain) eq 'confirmed'
			  && status_of($o_declined) eq 'failed';
		}),
	'the worker confirmed the traced and untraced orders and failed the declined one'
) or diag(orders_now());

traced($t2, "SELECT 1 FROM oms_refund_order('$o_traced')");
ok( oms_wait_until(60, sub { status_of($o_traced) eq 'refunded' })
	  && oms_wait_until(60, sub { relay_outbox_empty($node, $db) }),
	'the worker refunded the traced order and the relay emptied the outbox'
) or diag(orders_now(), "\n", oms_sql_quiet($node, $db, 'SELECT oms_relay_status()') // '');

# The database's own view: the timeline of the traced order.
my $timeline = oms_sql($node, $db, qq{
	SELECT string_agg(event_type || '=' || coalesce(traceparent, '-'), ' ' ORDER BY seq)
	FROM oms_order_timeline('$o_traced')});
my @bad = grep { !/=(\Q$t1\E|\Q$t2\E)$/ } split / /, $timeline;
ok($timeline ne '' && !@bad, 'every timeline entry of the traced order carries T1 or T2')
  or diag($timeline);

# ------------------------------------------------------------ the topic
# The outbox is empty: one kcat pass to the end of every partition reads
# it all.  One line per record: key, then the headers (name=value,...).
my $consumed = "$work/consumed.txt";
my ($rc, $err) = relay_kcat(
	[ '-C', '-b', $kafka->bootstrap, '-t', $topic, '-o', 'beginning', '-e', '-q', '-f', '%k %h\n' ],
	$consumed, 60);
my @records = split /\n/, slurp_file($consumed);
ok($rc == 0, 'kcat read the topic with its headers (' . scalar(@records) . ' records)') or diag($err);

# headers_of(ORDER): "type traceparent" per event of ORDER, in topic order
# (traceparent "-" when absent).
sub headers_of
{
	my ($order) = @_;
	my @out;
	foreach my $record (@records)
	{
		my ($key, $headers) = split / /, $record, 2;
		next unless $key eq $order;
		my ($type, $tp) = ('?', '-');
		foreach my $h (split /,/, $headers // '')
		{
			my ($name, $value) = split /=/, $h, 2;
			$type = $value if $name eq 'ce_type';
			$tp   = $value if $name eq 'traceparent';
		}
		push @out, "$type $tp";
	}
	return join("\n", @out);
}

is( headers_of($o_traced),
	"oms.order.created $t1\noms.order.processing $t1\noms.order.confirmed $t1\noms.order.refunded $t2",
	q{the traced order's events carry traceparent T1 (the create and pay calls, the worker's order.confirmed) and T2 (the worker's order.refunded)}
);
is( headers_of($o_declined),
	"oms.order.created $t3\noms.order.processing $t3\noms.order.failed $t3",
	q{the declined order's events, the worker's order.failed included, carry traceparent T3});
is( headers_of($o_plain),
	"oms.order.created -\noms.order.processing -\noms.order.confirmed -",
	q{the untraced order's events carry no traceparent header});

my @other = grep {
	my ($key) = split / /, $_;
	$key ne $o_traced && $key ne $o_plain && $key ne $o_declined
} @records;
ok(!@other, q{the topic holds only these orders' events})
  or diag(relay_head(5, @other));

my @errors = grep {
	/oms (saga )?worker: (ERROR|FATAL|PANIC):|event=(saga_error|worker_batch_failed|worker_xact_failed|relay_batch_failed)/
} split /\n/, oms_log_since($node);
ok(!@errors, 'no worker error in the server log')
  or diag(relay_head(10, @errors));

relay_keep_workdir($work, 'tracing_e2e');
$node->stop;
$kafka->stop;
done_testing();
