# test/t/020_relay_e2e.pl: every event of a busy run reaches Kafka once, in
# order, with the right headers and a valid payload.
#
# The node (oms.database_name = relay_e2e) publishes to its own mock Kafka
# cluster (test/kafka, topic oms.order-events, 3 partitions) while 2,000
# orders go through their sagas, one client transaction per action, 10
# outcomes by order number i % 10:
#   0-3 paid test_ok -> confirmed        4 paid test_decline -> failed
#   5   canceled while pending           6 paid test_hang, canceled while processing
#   7   confirmed, partial refund        8 confirmed, partial refund, then the rest
#   9   confirmed, full refund (after canceling one unit of line 1 when the
#       order has more than one unit: order.items_canceled and its refund)
# The relay deletes what it published, so a test trigger (test/relay/
# capture.sql) keeps a copy of every outbox row.  Once the outbox is empty
# and every saga is final, kcat reads the topic and test/relay/analyse.py
# checks: the consumed ce_ids are exactly the produced events (none lost,
# none unexpected, no duplicate: this run has no fault); the (order,
# ce_omsseq, type) triples equal the order timeline's status changes; each
# order in one partition, its events in ce_omsseq order without gaps;
# topic, key = order id = ce_subject, CloudEvents headers and value right.
# Every payload and its headers validate against docs/events
# (test/events/validate.py, every type must occur).  Last,
# oms_relay_status() agrees and nothing was dead-lettered.
# Run times are diagnostics, never asserted.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use OmsKafka;
use OmsRelay;
use OmsTest;

my $db     = 'relay_e2e';
my $n      = $ENV{RL_E2E_ORDERS} // 2000;
my $topic  = 'oms.order-events';
my $nskus  = 5;
my $bucket = "split_part(customer_id, '-', 2)::int % 10";

my $kafka = OmsKafka->start(topics => [$topic], partitions => 3);
# step_timeout well above the test's length: the test_hang payments must
# still be waiting when they are canceled.
my $node = oms_node('relay_e2e', "oms.database_name = '$db'",
	"oms.kafka_brokers = '" . $kafka->bootstrap . "'",
	"oms.step_timeout = '10min'");
my $work = relay_workdir();
diag('mock Kafka: ' . $kafka->bootstrap . ", topic $topic (3 partitions)");

oms_fresh_db($node, $db);
relay_capture($node, $db);
oms_setup_stock($node, $db, $nskus, 1000000);

my $worker_pid = relay_wait_worker($node, $db);
ok((relay_status($node, $db, 'enabled') // '') eq 'true', 'oms_relay_status() says the relay is enabled')
  or diag(oms_sql_quiet($node, $db, 'SELECT oms_relay_status()') // '');

# ------------------------------------------------------------ the clients
# Phase 1, one transaction per action: create, then pay or cancel.  The
# test_hang payments wait in their charge step until canceled at the end.
sub items
{
	my ($i) = @_;
	return '[' . join(', ', map {
		sprintf('{"sku": "SKU-0%d", "quantity": %d, "unit_price": %d}',
			($i + $_) % $nskus + 1, ($i + $_) % 4 + 1, 100 * $_ + $i % 50 + 1)
	} 1 .. 1 + $i % 3) . ']';
}
my %action = (
	4 => q{SELECT 1 FROM oms_pay_order(:'id', 'test_decline');},
	5 => q{SELECT 1 FROM oms_cancel_order(:'id', 'changed my mind');},
	6 => q{SELECT 1 FROM oms_pay_order(:'id', 'test_hang');});
my $phase1 = join('', map {
	sprintf(qq{SELECT oms_create_order('e2e-%d', '%s', 'EUR') ->> 'order_id' AS id \\gset\n%s\n},
		$_, items($_), $action{ $_ % 10 } // q{SELECT 1 FROM oms_pay_order(:'id', 'test_ok');})
} 1 .. $n);

# Every order in the status its bucket leads to (in PHASE) and no saga in flight.
sub settled
{
	my ($phase) = @_;
	return oms_sql_true($node, $db, qq{
		SELECT count(*) = $n AND bool_and(status::text = CASE
				WHEN b IN (0, 1, 2, 3) THEN 'confirmed'
				WHEN b = 4 THEN 'failed'
				WHEN b IN (5, 6) THEN 'canceled'
				WHEN $phase = 1 THEN 'confirmed'
				WHEN b = 7 THEN 'partially_refunded'
				ELSE 'refunded' END)
			AND NOT EXISTS (SELECT FROM oms.sagas WHERE status IN ('running', 'compensating'))
		FROM (SELECT status, $bucket AS b FROM oms.orders WHERE customer_id LIKE 'e2e-%') AS o});
}

sub status_summary
{
	return join("\n",
		oms_sql_quiet($node, $db,
			"SELECT $bucket AS bucket, status, count(*) FROM oms.orders GROUP BY 1, 2 ORDER BY 1, 2") // '',
		oms_sql_quiet($node, $db,
			'SELECT kind, status, count(*) FROM oms.sagas GROUP BY 1, 2 ORDER BY 1, 2') // '');
}

my $t0 = time();
my ($rc, $err) = relay_run_script($node, $db, $phase1);
# The test_hang payments are waiting: cancel them, each its own transaction.
if ($rc == 0)
{
	my $cancel = oms_sql($node, $db, qq{
		SELECT format('SELECT 1 FROM oms_cancel_order(%L);', id) FROM oms.orders
		WHERE customer_id LIKE 'e2e-%' AND $bucket = 6 ORDER BY created_at});
	($rc, $err) = relay_run_script($node, $db, $cancel);
}
ok($rc == 0, "clients created $n orders, paid or canceled each in its own transaction")
  or diag($err);
diag(sprintf('phase 1 clients took %.2f s', time() - $t0));

ok(oms_wait_until(180, sub { settled(1) }),
	'phase 1: every order confirmed, failed or canceled as its payment and cancel say')
  or diag(status_summary());

# Phase 2: refunds of confirmed orders, each its own transaction.
my $phase2 = oms_sql($node, $db, qq{
	SELECT CASE b
		WHEN 7 THEN format('SELECT 1 FROM oms_refund_order(%L, 1, %L);', id, 'partial')
		WHEN 8 THEN format('SELECT 1 FROM oms_refund_order(%L, 1, %L); SELECT 1 FROM oms_refund_order(%L);', id, 'partial', id)
		WHEN 9 THEN CASE WHEN units > 1 THEN format('SELECT 1 FROM oms_cancel_items(%L, %L); ', id,
			'[{"line_no": 1, "quantity": 1}]') ELSE '' END || format('SELECT 1 FROM oms_refund_order(%L);', id) END
	FROM (SELECT id, created_at, $bucket AS b,
				 (SELECT sum(i.quantity) FROM oms.order_items AS i WHERE i.order_id = c.id) AS units
		  FROM oms.orders AS c WHERE customer_id LIKE 'e2e-%') AS o
	WHERE b IN (7, 8, 9) AND EXISTS (SELECT FROM oms.orders AS c WHERE c.id = o.id AND c.status = 'confirmed')
	ORDER BY created_at});
my $refunded = scalar(my @refunds = split /\n/, $phase2);
($rc, $err) = relay_run_script($node, $db, $phase2);
ok($rc == 0, "clients refunded $refunded confirmed orders, in part or in full") or diag($err);
ok(oms_wait_until(180, sub { settled(2) }),
	'phase 2: every refunded order is partially_refunded or refunded')
  or diag(status_summary());

if (ok(oms_wait_until(120, sub { relay_outbox_empty($node, $db) }), 'the relay emptied the outbox'))
{
	diag(sprintf('outbox empty %.2f s after the clients started', time() - $t0));
}
else
{
	diag(oms_sql_quiet($node, $db, 'SELECT oms_relay_status()') // '');
	diag(oms_sql_quiet($node, $db, 'SELECT type, attempts, last_error FROM oms.outbox LIMIT 5') // '');
}

# ------------------------------------------------------------ the topic
# The outbox is empty, so everything was acknowledged: one pass of kcat to
# the end of every partition reads it all.
my $consumed = "$work/consumed.json";
($rc, $err) = relay_kcat(
	[ '-C', '-b', $kafka->bootstrap, '-t', $topic, '-o', 'beginning', '-e', '-J', '-q' ],
	$consumed, 120);
my $records = () = slurp_file($consumed) =~ /\n/g;
ok($rc == 0, "kcat read the topic to its end ($records records)") or diag($err);

relay_export($node, $db, 'e2e-', "$work/e2e");
my $produced = () = slurp_file("$work/e2e/produced.json") =~ /\n/g;
diag("the run produced $produced events for $n orders");
relay_analyse(
	label          => 'e2e',
	dir            => "$work/e2e",
	consumed       => $consumed,
	topic          => $topic,
	source_db      => $db,
	max_duplicates => 0,
	validate       => 1,
	all_types      => 1);

# ------------------------------------------------------------ status
my ($pending, $published, $breaker, $dead, $last_error, $running) = split /\|/, oms_sql($node, $db, q{
	SELECT s ->> 'pending', s ->> 'published_total', s ->> 'breaker', s ->> 'dead_letters',
		   coalesce(s ->> 'last_error', ''), s ->> 'worker_running'
	FROM oms_relay_status() AS s}), -1;
ok($pending eq '0' && $published eq $produced && $breaker eq 'closed' && $running eq 'true',
	"oms_relay_status(): nothing pending, published_total = the $produced events, breaker closed")
  or diag("pending $pending, published_total $published, breaker $breaker, worker_running $running");
ok($dead eq '0' && $last_error eq '', 'nothing was dead-lettered and the relay recorded no error')
  or diag("dead_letters $dead, last_error: $last_error");
my $letters = oms_sql($node, $db, "SELECT count(*) FROM oms.dead_letters WHERE kind = 'publish'");
is($letters, '0', 'no publish dead letter in oms.dead_letters');

my $now_pid = oms_worker_pid($node, $db);
my @errors = grep {
	/oms (saga )?worker: (ERROR|FATAL|PANIC|WARNING):|event=(relay_batch_failed|relay_claim_failed|relay_settle_failed|kafka_producer_failed|saga_error|worker_batch_failed)/
} split /\n/, oms_log_since($node);
ok($now_pid eq $worker_pid && !@errors,
	"one worker all along (pid $worker_pid), no ERROR or relay failure in the server log")
  or diag(relay_head(11, "worker pid $worker_pid -> $now_pid", @errors));
diag(sprintf('test took %.2f s after the clients started', time() - $t0));

relay_keep_workdir($work, 'relay_e2e');
$node->stop;
$kafka->stop;
done_testing();
