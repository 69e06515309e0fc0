# test/t/021_relay_faults.pl: the outbox relay loses nothing when Kafka or
# the worker fails, and gets out of the way when the server stops.
#
# The node serves relay_faults (and relay_drop, for the drop test) and
# publishes to its own 3-broker mock Kafka cluster (test/kafka), topic
# oms.order-events with 3 partitions, with oms.relay_batch_size = 200,
# oms.relay_ack_timeout = 3s, a breaker that opens after 2 failed batches
# for 1 s, and publish retries backing off from 100 ms to 1 s.  A background
# consumer (test/relay/consume.py, which outlives broker outages; kcat exits
# when every broker is down) reads the topic all along; a test trigger
# (test/relay/capture.sql) keeps every outbox row; test/relay/analyse.py
# checks each scenario's orders (by customer prefix): every event delivered
# by ce_id, no unexpected one, dead-lettered ones not published, duplicates
# within the bound, each order in one partition in ce_omsseq order without
# gaps, headers and values right.
#   a  all brokers down for at least 10 s while clients keep creating and
#      paying orders: oms_relay_status() shows the breaker open during the
#      outage and closed after it; sagas keep being confirmed while down; the
#      same worker all along, no FATAL or PANIC; everything delivered, at most
#      one batch of duplicates (at-least-once, documented in src/relay.c).
#   b  kill -9 of the worker while it publishes a 3,000-event backlog (brokers
#      answering 200 ms late): after the crash restart everything delivered,
#      duplicates at most one batch (oms.relay_batch_size).
#   c  injected produce errors: REQUEST_TIMED_OUT x3 and NOT_LEADER x3 are
#      retried (delivered, no dead letter), also 6 in a row under load;
#      MSG_SIZE_TOO_LARGE dead-letters the event at once (permanent, first
#      attempt), later orders still flow, and oms_retry_dead_letter()
#      publishes it under the same ce_id.
#   d  an event over oms.kafka_max_message_bytes: the API refuses orders
#      that large, so the order (200 kB of metadata) is written while the
#      worker is paused and the limit is lowered to 100 kB before it runs
#      again: its event is dead-lettered as permanent, other orders still
#      flow.
#   e  brokers down and the relay failing: DROP DATABASE of a served
#      database and pg_ctl stop -m fast return within 20 s (the deadline
#      given to psql and pg_ctl; measured times are diagnostics); after a
#      restart the pending events are delivered.
use strict;
use warnings FATAL => 'all';

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use OmsKafka;
use OmsRelay;
use OmsTest;

my $db     = 'relay_faults';
my $dropdb = 'relay_drop';
my $topic  = 'oms.order-events';
my $batch  = 200;
my $nskus  = 5;
my $bound  = 20;
my $items =
  '[{"sku": "SKU-01", "quantity": 1, "unit_price": 250}, {"sku": "SKU-03", "quantity": 2, "unit_price": 120}]';

my $kafka = OmsKafka->start(brokers => 3, topics => [$topic], partitions => 3);
my $node = oms_node('relay_faults', "oms.database_name = '$db, $dropdb'",
	"oms.kafka_brokers = '" . $kafka->bootstrap . "'",
	"oms.relay_batch_size = $batch",
	"oms.relay_ack_timeout = '3s'",
	'oms.relay_breaker_failures = 2',
	"oms.relay_breaker_cooldown = '1s'",
	"oms.retry_base = '100ms'",
	"oms.retry_max = '1s'",
	'oms.worker_naptime = 200');
my $work = relay_workdir();
diag('mock Kafka (3 brokers): ' . $kafka->bootstrap . ", topic $topic (3 partitions)");

oms_fresh_db($node, $db);
oms_fresh_db($node, $dropdb);
relay_capture($node, $db);
oms_setup_stock($node, $db,     $nskus, 100000000);
oms_setup_stock($node, $dropdb, $nskus, 100000000);
my $consumed = "$work/consumed.json";
my $consumer = relay_consumer_start($kafka->bootstrap, $topic, $consumed);

relay_wait_worker($node, $db);
relay_wait_worker($node, $dropdb);

# create_orders(DB, PREFIX, COUNT): COUNT orders in one transaction.
sub create_orders
{
	my ($on, $prefix, $count) = @_;
	oms_sql($node, $on,
		"SELECT count(oms_create_order('$prefix' || i, '$items', 'EUR')) FROM generate_series(1, $count) AS i");
	return;
}

# A count (or other value) from the database, '' when the query failed.
sub value
{
	my ($sql) = @_;
	return oms_sql_quiet($node, $db, $sql) // '';
}

sub status { return relay_status($node, $db, $_[0]) // ''; }
sub status_line { return value('SELECT oms_relay_status()'); }
sub in_flight { return value(q{SELECT count(*) FROM oms.sagas WHERE status IN ('running', 'compensating')}); }
sub outbox_empty { return relay_outbox_empty($node, $db); }
sub quiet { return outbox_empty() && in_flight() eq '0'; }
sub caught_up { return relay_caught_up($kafka->bootstrap, $topic, 3, $consumed); }
sub kafka { my ($ok, $reply) = $kafka->cmd($_[0]); $ok or die "mock Kafka: $_[0]: $reply"; return; }

# deliver(LABEL, PREFIX, MAXDUP): waits for the consumer, then analyses.
sub deliver
{
	my ($label, $prefix, $maxdup) = @_;
	if (!oms_wait_until(60, \&caught_up))
	{
		fail("$label: the consumer caught up with the topic");
		diag(slurp_file("$consumed.err"));
		return;
	}
	relay_export($node, $db, $prefix, "$work/$label");
	my $dups = relay_analyse(
		label          => $label,
		dir            => "$work/$label",
		consumed       => $consumed,
		topic          => $topic,
		source_db      => $db,
		max_duplicates => $maxdup);
	my $produced = () = slurp_file("$work/$label/produced.json") =~ /\n/g;
	diag("$label: $produced events produced, $dups duplicate deliveries");
	return;
}

# ===================================================== a: brokers down
my $a_log = relay_log_size($node);
my $a_pid = oms_worker_pid($node, $db);
# Clients: 10 orders created and paid per round (each its own transaction),
# paced so that the run spans the outage, until a.stop exists.
my $round = join('', map {
	qq{SELECT oms_create_order('a-$_', '$items', 'EUR') ->> 'order_id' AS id \\gset\n}
	  . qq{SELECT 1 FROM oms_pay_order(:'id', 'test_ok');\n}
} 1 .. 10) . "SELECT pg_sleep(0.1);\n";
append_to_file("$work/a-round.sql",  $round);
append_to_file("$work/a-loader.err", '');
my $loader = IPC::Run::start(
	[
		'bash', '-c',
		'while [ ! -e "$4" ]; do "$1" -X -q -v ON_ERROR_STOP=1 -d "$2" -f "$3" >/dev/null 2>>"$5" '
		  . '|| echo "round failed" >>"$5"; done',
		'loader', $node->installed_command('psql'), $node->connstr($db),
		"$work/a-round.sql", "$work/a.stop", "$work/a-loader.err"
	],
	'<', \undef);

sub a_confirmed
{
	return value(q{SELECT count(*) FROM oms.orders WHERE customer_id LIKE 'a-%' AND status = 'confirmed'});
}

my $busy = oms_wait_until(
	60,
	sub {
		my ($c, $p) = (a_confirmed(), status('published_total'));
		return $c ne '' && $p ne '' && $c >= 100 && $p >= 300;
	});
if (!$busy)
{
	fail('a: clients and relay are busy before the outage');
	diag('confirmed ' . a_confirmed() . "\n" . status_line());
}
my $c0      = a_confirmed() || 0;
my $down_at = oms_sql($node, $db, 'SELECT now()');
my $t_down  = time();
kafka('down all');
# Polls oms_relay_status() during the outage; done once the breaker was seen
# open, more orders were confirmed and 10 s have passed.
my @seen;
my $seen_open = 0;
oms_wait_until(
	60,
	sub {
		my $b = status('breaker');
		push @seen, $b if $b ne '' && !grep { $_ eq $b } @seen;
		$seen_open = 1 if $b eq 'open';
		my $c = a_confirmed() || 0;
		return $seen_open && $c > $c0 && time() - $t_down >= 10;
	});
my $c_up           = a_confirmed();
my $outage_status  = status_line();
my $created_down   = value(
	"SELECT count(*) FROM oms.orders WHERE customer_id LIKE 'a-%' AND created_at > '$down_at'");
kafka('up all');
my $seen = @seen ? join(' -> ', @seen) : 'none';
diag(sprintf('a: brokers down for %.2f s; breaker states seen: %s', time() - $t_down, $seen));
diag("a: status at the end of the outage: $outage_status");
ok($seen_open, 'a: oms_relay_status() showed the breaker open during the outage')
  or diag("states seen: $seen");
ok($c_up ne '' && $c_up > $c0, "a: sagas kept being confirmed while the brokers were down ($c0 -> $c_up)");
my $loader_err = slurp_file("$work/a-loader.err");
ok($created_down ne '' && $created_down > 0 && $loader_err eq '',
	"a: clients kept creating and paying orders during the outage ($created_down created)")
  or diag(relay_head(5, $loader_err));

append_to_file("$work/a.stop", '');
$loader->finish;
if (ok( oms_wait_until(90, \&quiet) && oms_wait_until(30, sub { status('breaker') eq 'closed' }),
		'a: after the outage the outbox drains, every saga finishes and the breaker is closed'))
{
	diag(sprintf('a: drained %.2f s after the brokers went down', time() - $t_down));
}
else
{
	diag(status_line() . "\nsagas in flight: " . in_flight());
}
my $a_pid2 = oms_worker_pid($node, $db);
my $bad = relay_head(10, grep { /FATAL:|PANIC:|terminated by signal|exited with exit code/ }
	  split /\n/, oms_log_since($node, $a_log));
ok($a_pid2 eq $a_pid && $bad eq '', "a: the same worker all along (pid $a_pid), no FATAL or PANIC in the log")
  or diag("worker pid $a_pid -> $a_pid2\n$bad");
deliver('a', 'a-', $batch);

# ===================================================== b: kill -9 mid-publish
my $nb = 3000;
kafka('rtt all 200');
my $p0 = status('published_total') || 0;
create_orders($db, 'b-', $nb);
my $b_pid = oms_worker_pid($node, $db);
my $mid;
my $caught = oms_wait_until(
	60,
	sub {
		my ($p, $pending) = (status('published_total'), status('pending'));
		return 0 unless $p ne '' && $pending ne '' && $p - $p0 >= 2 * $batch && $pending >= 3 * $batch;
		$mid = 'published ' . ($p - $p0) . ", pending $pending";
		return 1;
	});
if ($caught)
{
	kill 'KILL', $b_pid;
	pass("b: killed the worker (pid $b_pid) with -9 while it published ($mid)");
	my $back = oms_wait_until(60, sub { oms_server_ready($node) }) && oms_wait_until(
		60,
		sub {
			my $pid = oms_worker_pid($node, $db);
			return $pid ne '' && $pid ne $b_pid;
		});
	ok($back, 'b: the server crash-restarted and a new worker runs (pid ' . oms_worker_pid($node, $db) . ')')
	  or diag(relay_tail(20, oms_log_since($node, $a_log)));
}
else
{
	fail('b: caught the worker publishing the backlog');
	diag(status_line());
}
kafka('rtt all 0');
ok(oms_wait_until(90, \&outbox_empty), 'b: after the restart the outbox drains') or diag(status_line());
deliver('b', 'b-', $batch);

# ===================================================== c: injected produce errors
# one_order(NAME): creates one order (one order.created event); its id.
sub one_order
{
	my ($name) = @_;
	return oms_sql($node, $db, "SELECT oms_create_order('$name', '$items', 'EUR') ->> 'order_id'");
}

sub publish_letters
{
	my ($customer) = @_;
	return value(qq{
		SELECT count(*) FROM oms.dead_letters AS d JOIN oms.orders AS o ON o.id = d.order_id
		WHERE d.kind = 'publish' AND o.customer_id = '$customer'});
}
oms_wait_until(60, \&quiet);
foreach my $err (qw(REQUEST_TIMED_OUT NOT_LEADER_FOR_PARTITION))
{
	my $name = "c: a produce failing $err 3 times is retried and acknowledged, no dead letter";
	kafka("error Produce $err 3");
	one_order("c-$err");
	if (oms_wait_until(30, \&outbox_empty))
	{
		my $letters = publish_letters("c-$err");
		ok($letters eq '0', $name) or diag("$letters dead letters");
	}
	else
	{
		fail($name);
		diag(status_line() . "\n" . value('SELECT attempts, last_error FROM oms.outbox'));
	}
	kafka('clear Produce');
}

# The same errors under load: 6 Produce requests in a row fail while 100
# orders are created and paid (each its own transaction) and confirmed, so
# several events of one order are in flight behind a retried request.
my $c_load = join('', map {
	qq{SELECT oms_create_order('c-load-$_', '$items', 'EUR') ->> 'order_id' AS id \\gset\n}
	  . qq{SELECT 1 FROM oms_pay_order(:'id', 'test_ok');\n}
} 1 .. 100);
kafka('error Produce REQUEST_TIMED_OUT 3');
kafka('error Produce NOT_LEADER_FOR_PARTITION 3');
my ($rc, $load_err) = relay_run_script($node, $db, $c_load);
my $c_name = 'c: 6 failed Produce requests (timeouts, leader changes) under load: all retried, no dead letter';
if ($rc == 0
	&& oms_wait_until(
		60,
		sub {
			quiet() && oms_sql_true($node, $db,
				q{SELECT count(*) = 100 AND bool_and(status = 'confirmed') FROM oms.orders WHERE customer_id LIKE 'c-load-%'});
		}))
{
	my $letters = value(q{
		SELECT count(*) FROM oms.dead_letters AS d JOIN oms.orders AS o ON o.id = d.order_id
		WHERE d.kind = 'publish' AND o.customer_id LIKE 'c-load-%'});
	ok($letters eq '0', $c_name) or diag("$letters dead letters");
}
else
{
	fail($c_name);
	diag("$load_err\n" . status_line());
}
kafka('clear Produce');

kafka('error Produce MSG_SIZE_TOO_LARGE 1');
my $perm_order = one_order('c-perm');
my $perm_letter = '';
if (oms_wait_until(30, sub { (publish_letters('c-perm') || 0) >= 1 && outbox_empty() }))
{
	my $letter = oms_sql($node, $db, qq{
		SELECT format('%s|%s|%s|%s|%s', id, error ->> 'permanent', error ->> 'attempt',
				payload ->> 'type', error ->> 'message')
		FROM oms.dead_letters WHERE kind = 'publish' AND order_id = '$perm_order'});
	my ($perm, $attempt, $ptype, $msg);
	($perm_letter, $perm, $attempt, $ptype, $msg) = split /\|/, $letter, 5;
	ok( $perm eq 'true' && $attempt eq '1' && $ptype eq 'order.created' && $msg =~ /MSG_SIZE_TOO_LARGE/,
		'c: a produce refused with MSG_SIZE_TOO_LARGE is dead-lettered at once (permanent, attempt 1)'
	) or diag($letter);
}
else
{
	fail('c: a produce refused with MSG_SIZE_TOO_LARGE is dead-lettered');
	diag(status_line() . "\n" . value('SELECT attempts, last_error FROM oms.outbox'));
}
kafka('clear Produce');
create_orders($db, 'c-flow-', 20);
ok(oms_wait_until(30, \&outbox_empty), q{c: later orders' events still flow after the dead letter})
  or diag(status_line());
if ($perm_letter ne '')
{
	my $perm_id = oms_sql($node, $db, "SELECT payload ->> 'id' FROM oms.dead_letters WHERE id = $perm_letter");
	oms_sql($node, $db, "SELECT oms_retry_dead_letter($perm_letter)");
	my $on_topic = qq{"ce_id","$perm_id"};
	if (ok( oms_wait_until(
				30,
				sub { outbox_empty() && caught_up() && index(slurp_file($consumed), $on_topic) >= 0 }),
			'c: oms_retry_dead_letter() republished the event under its ce_id'))
	{
		my $copies = () = slurp_file($consumed) =~ /\Q$on_topic\E/g;
		diag("c: $copies on the topic");
	}
	else
	{
		diag(status_line());
	}
	is(oms_sql($node, $db, "SELECT status FROM oms.dead_letters WHERE id = $perm_letter"),
		'replayed', 'c: the dead letter is marked replayed');
}
deliver('c', 'c-', 0);

# ===================================================== d: oversized event
# The worker pauses (two loops with the setting off, so it has read it),
# the order is written, then the limit drops below its event's size.
oms_set_sighup($node, 'oms.worker_enabled',     'off');
oms_set_sighup($node, 'oms.max_metadata_bytes', '262144');
my $loops_at = oms_worker_status($node, $db, 'loops') || 0;
oms_wait_until(30, sub { (oms_worker_status($node, $db, 'loops') || 0) >= $loops_at + 2 });
my $big_order = oms_sql($node, $db, qq{
	SELECT oms_create_order('d-big', '$items', 'EUR', NULL,
		jsonb_build_object('blob', repeat('x', 200000))) ->> 'order_id'});
oms_set_sighup($node, 'oms.kafka_max_message_bytes', '100kB');
oms_set_sighup($node, 'oms.worker_enabled',          'on');
create_orders($db, 'd-flow-', 20);
if (oms_wait_until(30, sub { (publish_letters('d-big') || 0) >= 1 && outbox_empty() }))
{
	my ($perm, $ptype, $blob) = split /\|/, oms_sql($node, $db, qq{
		SELECT error ->> 'permanent', payload ->> 'type',
			   length(payload -> 'payload' -> 'order' -> 'metadata' ->> 'blob')
		FROM oms.dead_letters WHERE kind = 'publish' AND order_id = '$big_order'}), -1;
	my $msg = oms_sql($node, $db,
		"SELECT error ->> 'message' FROM oms.dead_letters WHERE kind = 'publish' AND order_id = '$big_order'");
	ok($perm eq 'true' && $ptype eq 'order.created' && $blob eq '200000',
		'd: an event over oms.kafka_max_message_bytes is dead-lettered as permanent, whole')
	  or diag("permanent $perm, type $ptype, blob length $blob\n$msg");
	diag("d: dead letter message: $msg");
	is(status('breaker'), 'closed', q{d: the other orders' events still flow and the breaker stays closed})
	  or diag(status_line());
}
else
{
	fail('d: an event over oms.kafka_max_message_bytes is dead-lettered as permanent');
	diag(status_line() . "\n" . value('SELECT type, attempts, last_error FROM oms.outbox'));
}
deliver('d', 'd-', 0);
oms_sql($node, 'postgres', 'ALTER SYSTEM RESET oms.kafka_max_message_bytes');
oms_sql($node, 'postgres', 'ALTER SYSTEM RESET oms.max_metadata_bytes');
oms_sql($node, 'postgres', 'SELECT pg_reload_conf()');

# ===================================================== e: drop and stop, brokers down
oms_set_sighup($node, 'oms.relay_breaker_failures', '1000');
my $f_drop = relay_status($node, $dropdb, 'failed_attempts_total') // 0;
my $f_main = status('failed_attempts_total') || 0;
kafka('down all');
my $e_log = relay_log_size($node);
create_orders($dropdb, 'e-drop-', 300);
create_orders($db,     'e-',      300);

# failing(DB, BEFORE): true once DB's relay failed an attempt since.
sub failing
{
	my ($on, $before) = @_;
	my $f = relay_status($node, $on, 'failed_attempts_total') // '';
	return $f ne '' && $f > $before;
}

if (oms_wait_until(30, sub { failing($dropdb, $f_drop) }))
{
	my ($out, $timed_out) = ('', 0);
	my $t0 = time();
	my $drop_rc = $node->psql('postgres', "DROP DATABASE $dropdb",
		stdout    => \my $stdout,
		stderr    => \$out,
		timeout   => $bound,
		timed_out => \$timed_out);
	my $took = sprintf('%.2f', time() - $t0);
	diag("e: DROP DATABASE with its relay failing against down brokers took $took s");
	my $gone = oms_sql($node, 'postgres', "SELECT count(*) FROM pg_database WHERE datname = '$dropdb'");
	ok(!$timed_out && defined $drop_rc && $drop_rc == 0 && $gone eq '0',
		"e: DROP DATABASE of a served database succeeds within $bound s while its relay waits on down brokers")
	  or diag("timed out: $timed_out, took $took s: $out\n" . relay_tail(10, oms_log_since($node, $e_log)));
}
else
{
	fail("e: the relay of $dropdb failed against the down brokers");
	diag(oms_sql_quiet($node, $dropdb, 'SELECT oms_relay_status()') // '');
}
if (oms_wait_until(30, sub { failing($db, $f_main) }))
{
	my $t0 = time();
	my $stopped;
	{
		# pg_ctl's own deadline is the bound.
		local $ENV{PGCTLTIMEOUT} = $bound;
		$stopped = $node->stop('fast', fail_ok => 1);
	}
	my $took = sprintf('%.2f', time() - $t0);
	diag("e: pg_ctl stop -m fast with the relay failing against down brokers took $took s");
	ok($stopped, "e: pg_ctl stop -m fast succeeds within $bound s while the relay waits on down brokers")
	  or diag("took $took s");
	$node->stop('immediate', fail_ok => 1) unless $stopped;
	my $since = oms_log_since($node, $e_log);
	ok($since =~ /database system is shut down/ && $since !~ /terminated by signal|PANIC/,
		'e: the fast shutdown was clean')
	  or diag(relay_tail(20, $since));
	oms_start($node);
}
else
{
	fail("e: the relay of $db failed against the down brokers");
	diag(status_line());
}
kafka('up all');
ok(oms_wait_until(60, sub { oms_server_ready($node) }) && oms_wait_until(90, \&outbox_empty),
	q{e: after the restart and the brokers' return the pending events are published})
  or diag(status_line());
deliver('e', 'e-', $batch);

my $errors = relay_head(10, grep { /oms (saga )?worker: (ERROR|PANIC):|PANIC:/ } split /\n/, oms_log_since($node));
ok($errors eq '', 'no oms worker logged an ERROR, no PANIC') or diag($errors);

$consumer->stop;
relay_keep_workdir($work, 'relay_faults');
$node->stop;
$kafka->stop;
done_testing();
