# test/t/050_cluster.pl: a sharded cluster under faults.
#
# Three shard nodes (test/perl/OmsCluster.pm: 16 partitions, partition p on
# shard p % 3), each its own PostgreSQL cluster with its worker and saga
# workers, all publishing to one mock Kafka topic.  SKUs homed on shard 2
# are bought from orders of shards 0 and 1, so every order's reserve and
# confirm steps call shard 2 through PL/Proxy (oms_shard).
#
#   1. 64 concurrent buyers (32 sessions on shard 0, 32 on shard 1) for the
#      last 10 units of a SKU homed on shard 2: exactly 10 orders confirm,
#      54 fail, nothing is oversold or left held, and the orders holding
#      consumed units on shard 2 are exactly the confirmed ones.
#   2. kill -9 of shard 2 while shard 0's sagas need it, then kill -9 of
#      shard 0 itself: shard 0's sagas retry (OM010) while shard 2 is
#      down, survive their own shard's crash, and all confirm once both are
#      back; stock on both shards adds up, nothing is left held.
#   3. The broker down while cross-shard orders run: they still confirm
#      (stock calls do not go through Kafka), their events wait in the
#      outbox and are published when the broker is back.
#   4. An order's shard dies for good after its orders hold units on shard
#      2: the holds expire there and the units are free again; when the
#      shard returns and the orders are canceled, nothing is released
#      twice.
# Last, kcat reads the topic: every event of every order of every shard
# is there, keyed by the order id, in one partition per order, in
# ce_omsseq order 1, 2, ... without gaps.
use strict;
use warnings FATAL => 'all';

use JSON::PP;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use OmsCluster;
use OmsKafka;
use OmsRelay;
use OmsTest;

my $topic = 'oms.order-events';
my $kafka = OmsKafka->start(topics => [$topic], partitions => 3);
my $c = OmsCluster->new(
	shards     => 3,
	partitions => 16,
	conf       => [
		"oms.kafka_brokers = '" . $kafka->bootstrap . "'",
		"oms.saga_workers = 2",
		"oms.retry_base = 100",
		"oms.retry_max = 1000",
		"oms.max_attempts = 200",
		"max_connections = 60" ]);
my $db = $c->db;
diag('mock Kafka: ' . $kafka->bootstrap);
for my $i (0 .. 2)
{
	ok(oms_wait_until(60, sub { oms_worker_pid($c->shard($i), $db) ne '' }), "shard $i: its worker runs");
}

# Every fulfilment saga of the shards given is final.
sub sagas_final
{
	my (@shards) = @_;
	for my $i (@shards)
	{
		return 0 unless oms_sql_true($c->shard($i), $db,
			"SELECT NOT EXISTS (SELECT FROM oms.sagas WHERE status IN ('running', 'compensating'))");
	}
	return 1;
}

sub sum_over
{
	my ($sql, @shards) = @_;
	my $sum = 0;
	$sum += $c->sql($_, $sql) for @shards;
	return $sum;
}

sub ids_of
{
	my ($sql, @shards) = @_;
	return join(',', sort map { split /\n/, $c->sql($_, $sql) } @shards);
}

# ------------------------------------------------------------ 1. last units
my $last = $c->name_on(2, 'LAST');
$c->sql(2, "SELECT oms_set_stock('$last', 10)");
my $script = PostgreSQL::Test::Utils::tempdir() . '/buy.sql';
append_to_file($script, qq{SELECT oms_pay_order((oms_create_order('buyer-' || :client_id, '[{"sku": "$last", "quantity": 1, "unit_price": 100}]') ->> 'order_id')::uuid, 'test_ok');
SELECT oms_run_sagas(5);
});
my @bench;
for my $i (0, 1)
{
	my $node = $c->shard($i);
	my ($out, $err) = ('', '');
	push @bench, [ IPC::Run::start(
		[ 'pgbench', '-n', '-c', '32', '-j', '4', '-t', '1', '-f', $script,
		  '-h', $node->host, '-p', $node->port, $db ],
		'<', \undef, '>', \$out, '2>', \$err), \$out, \$err ];
}
my $bench_ok = 1;
for my $b (@bench)
{
	$b->[0]->finish;
	$bench_ok &&= ($? == 0 && ${ $b->[1] } =~ /number of transactions actually processed: 32\/32/);
	diag(${ $b->[2] }) if $? != 0;
}
ok($bench_ok, '64 buyers (32 sessions on shard 0, 32 on shard 1) each created and paid an order at once');
ok(oms_wait_until(120, sub { sagas_final(0, 1) }), 'every buyer\'s saga ended');
is(sum_over("SELECT count(*) FROM oms.orders WHERE status = 'confirmed' AND customer_id LIKE 'buyer-%'", 0, 1),
	10, 'exactly 10 orders confirmed: the 10 units on shard 2');
is(sum_over("SELECT count(*) FROM oms.orders WHERE status = 'failed' AND customer_id LIKE 'buyer-%'", 0, 1),
	54, 'the other 54 failed (out of stock), compensated');
is($c->sql(2, "SELECT on_hand || '/' || reserved FROM oms.stock WHERE sku = '$last'"),
	'0/0', "shard 2: $last has 0 on hand, 0 reserved: no oversell, nothing left held");
is($c->sql(2, "SELECT count(*) FROM oms.reservations WHERE sku = '$last' AND status = 'held'"),
	0, 'shard 2: no held reservation left');
is(ids_of("SELECT order_id FROM oms.reservations WHERE sku = '$last' AND status = 'consumed'", 2),
	ids_of("SELECT id FROM oms.orders WHERE status = 'confirmed' AND customer_id LIKE 'buyer-%'", 0, 1),
	'the orders with consumed units on shard 2 are exactly the confirmed orders of shards 0 and 1');

# ------------------------------------------------------------ 2. kill -9
my $remote = $c->name_on(2, 'KILL');
my $local  = $c->name_on(0, 'LOCAL');
$c->sql(2, "SELECT oms_set_stock('$remote', 1000)");
$c->sql(0, "SELECT oms_set_stock('$local', 1000)");
# The worker of shard 0 is paused by the kill of shard 2 right after the
# payments: the orders are created and paid in one transaction.
$c->kill_shard(2);
$c->sql(0, qq{
	SELECT count(oms_pay_order((oms_create_order('kill-' || i,
		'[{"sku": "$remote", "quantity": 2, "unit_price": 100}, {"sku": "$local", "quantity": 1, "unit_price": 50}]')
		->> 'order_id')::uuid, 'test_ok'))
	FROM generate_series(1, 30) AS i});
ok(oms_wait_until(60, sub {
	oms_sql_true($c->shard(0), $db, q{SELECT EXISTS (SELECT FROM oms.saga_steps WHERE last_error ->> 'sqlstate' = 'OM010')})
}), 'shard 2 killed: shard 0\'s reserve steps fail with OM010 (shard unreachable) and are retried');
$c->kill_shard(0);
oms_start($c->shard(0));
my $retries = $c->sql(0, q{SELECT coalesce(sum(attempts), 0) FROM oms.saga_steps WHERE name = 'reserve'});
ok(oms_wait_until(60, sub {
	($c->sql_quiet(0, q{SELECT coalesce(sum(attempts), 0) FROM oms.saga_steps WHERE name = 'reserve'}) // 0) > $retries
}), 'shard 0 killed and restarted: its sagas keep retrying while shard 2 is down');
is($c->sql(0, "SELECT count(*) FROM oms.orders WHERE customer_id LIKE 'kill-%' AND status = 'processing'"),
	30, 'no order of shard 0 gave up while shard 2 was down');
oms_start($c->shard(2));
ok(oms_wait_until(120, sub { sagas_final(0) }), 'shard 2 back: every saga of shard 0 ended');
is($c->sql(0, "SELECT count(*) FROM oms.orders WHERE customer_id LIKE 'kill-%' AND status = 'confirmed'"),
	30, 'all 30 orders confirmed');
is($c->sql(2, "SELECT on_hand || '/' || reserved FROM oms.stock WHERE sku = '$remote'"),
	'940/0', "shard 2: $remote has 1000 - 30 x 2 on hand, none reserved");
is($c->sql(0, "SELECT on_hand || '/' || reserved FROM oms.stock WHERE sku = '$local'"),
	'970/0', "shard 0: $local has 1000 - 30 on hand, none reserved");
is(ids_of("SELECT order_id FROM oms.reservations WHERE sku = '$remote' AND status = 'consumed'", 2),
	ids_of("SELECT id FROM oms.orders WHERE customer_id LIKE 'kill-%'", 0),
	'the orders with consumed units on shard 2 are exactly the 30 orders, once each');
is($c->sql(2, "SELECT count(*) FROM oms.reservations WHERE status = 'held'"), 0,
	'shard 2: nothing left held');

# ------------------------------------------------------------ 3. broker down
my ($down_ok, $down_reply) = $kafka->cmd('down 1');
ok($down_ok, 'the broker is down') or diag($down_reply);
my $local1 = $c->name_on(1, 'LOCAL');
$c->sql(1, "SELECT oms_set_stock('$local1', 100)");
$c->sql(1, qq{
	SELECT count(oms_pay_order((oms_create_order('nobroker-' || i,
		'[{"sku": "$remote", "quantity": 1, "unit_price": 100}, {"sku": "$local1", "quantity": 1, "unit_price": 50}]')
		->> 'order_id')::uuid, 'test_ok'))
	FROM generate_series(1, 20) AS i});
ok(oms_wait_until(120, sub { sagas_final(1) }), 'broker down: the cross-shard sagas of shard 1 still end');
is($c->sql(1, "SELECT count(*) FROM oms.orders WHERE customer_id LIKE 'nobroker-%' AND status = 'confirmed'"),
	20, 'all 20 confirmed');
ok($c->sql(1, 'SELECT count(*) FROM oms.outbox') > 0, 'their events wait in the outbox');
my ($up_ok, $up_reply) = $kafka->cmd('up 1');
ok($up_ok, 'the broker is back') or diag($up_reply);
ok(oms_wait_until(180, sub {
	for my $i (0 .. 2) { return 0 unless relay_outbox_empty($c->shard($i), $db); }
	return 1;
}), 'every shard\'s outbox emptied');

# ------------------------------------------------------------ 4. holds expire
# Shard 1's orders hold units on shard 2, then wait for a payment that
# never answers (test_hang); shard 1 dies with them.  Shard 2 does not
# wait for it: the holds expire (oms.reservation_ttl, 2 s here) and the
# sweep gives the units back.  When shard 1 returns and the orders are
# canceled, their compensation releases nothing twice.
my $ttl_sku = $c->name_on(2, 'TTL');
$c->sql(2, "SELECT oms_set_stock('$ttl_sku', 10)");
$c->sql(2, "ALTER SYSTEM SET oms.reservation_ttl = '2s'; SELECT pg_reload_conf();");
$c->sql(1, qq{
	SELECT count(oms_pay_order((oms_create_order('ttl-' || i,
		'[{"sku": "$ttl_sku", "quantity": 2, "unit_price": 100}]') ->> 'order_id')::uuid, 'test_hang'))
	FROM generate_series(1, 5) AS i});
ok(oms_wait_until(60, sub {
	oms_sql_true($c->shard(2), $db, "SELECT reserved = 10 FROM oms.stock WHERE sku = '$ttl_sku'")
}), 'shard 1\'s orders hold all 10 units on shard 2, their payments hang');
$c->kill_shard(1);
ok(oms_wait_until(60, sub {
	$c->sql(2, 'SELECT oms_release_expired_reservations()');
	oms_sql_true($c->shard(2), $db, "SELECT reserved = 0 AND on_hand = 10 FROM oms.stock WHERE sku = '$ttl_sku'")
}), 'shard 1 gone: its holds on shard 2 expire and the sweep frees the 10 units');
$c->sql(2, "ALTER SYSTEM RESET oms.reservation_ttl; SELECT pg_reload_conf();");
oms_start($c->shard(1));
$c->sql(1, q{SELECT count(oms_cancel_order(id)) FROM oms.orders WHERE customer_id LIKE 'ttl-%'});
ok(oms_wait_until(120, sub { sagas_final(1) }), 'shard 1 back, its orders canceled: their sagas ended');
is($c->sql(1, "SELECT count(*) FROM oms.orders WHERE customer_id LIKE 'ttl-%' AND status = 'canceled'"),
	5, 'all 5 canceled');
is($c->sql(2, "SELECT on_hand || '/' || reserved FROM oms.stock WHERE sku = '$ttl_sku'"),
	'10/0', 'shard 2: the 10 units are on hand and free, released once');
ok(oms_wait_until(60, sub { relay_outbox_empty($c->shard(1), $db) }), 'shard 1\'s outbox emptied again');

# ------------------------------------------------------------ the topic
my $consumed = PostgreSQL::Test::Utils::tempdir() . '/consumed.json';
my ($rc, $err) = relay_kcat(
	[ '-C', '-b', $kafka->bootstrap, '-t', $topic, '-o', 'beginning', '-e', '-J', '-q' ], $consumed, 120);
ok($rc == 0, 'kcat read the topic to its end') or diag($err);
my (%seqs, %parts);
for my $line (split /\n/, slurp_file($consumed))
{
	my $r = decode_json($line);
	my %h = @{ $r->{headers} // [] };
	push @{ $seqs{ $r->{key} } }, $h{ce_omsseq};
	$parts{ $r->{key} }{ $r->{partition} } = 1;
}
my %want;
for my $i (0 .. 2)
{
	for my $row (split /\n/, $c->sql($i, q{SELECT id || '|' || event_seq FROM oms.orders}))
	{
		my ($id, $n) = split /\|/, $row;
		$want{$id} = $n;
	}
}
my @bad = grep { join(',', @{ $seqs{$_} // [] }) ne join(',', 1 .. $want{$_}) } sort keys %want;
ok(!@bad, sprintf('every event of every order of the 3 shards (%d orders) is on the topic once, in ce_omsseq order 1, 2, ...',
	scalar keys %want))
  or diag(join("\n", map { "$_: want 1..$want{$_}, got " . join(',', @{ $seqs{$_} // [] }) } @bad[ 0 .. ($#bad < 4 ? $#bad : 4) ]));
my @split = grep { keys %{ $parts{$_} } > 1 } keys %parts;
ok(!@split, 'each order\'s events are in one partition (key = order id)');
my @stray = grep { !exists $want{$_} } keys %seqs;
ok(!@stray, 'no record on the topic belongs to an unknown order');

done_testing();
