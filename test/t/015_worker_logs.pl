# test/t/015_worker_logs.pl: the worker's structured log lines.
#
# A node serving worker_logs with a mock Kafka cluster.  The server log is
# parsed line by line ("oms: event=NAME key=value ...", quoted values
# unescaped) and checked field by field:
#   1. worker_started names the database and the worker's pid.
#   2. A flaky payment (two transient failures, then approved): two
#      saga_step_failed lines, step=pay, attempts 1 and 2, sqlstate OM010,
#      a retry_in_ms, the saga and order ids and the message.
#   3. A declined payment: saga_failed (sqlstate OM013, its dead letter's
#      id), then saga_compensated outcome=failed.
#   4. A payment reply that cannot be applied: a payment_reply_rejected
#      WARNING with its dead letter's id.
#   5. Brokers down for a while, with oms.log_min_interval = 1h and orders
#      created meanwhile so that the relay keeps failing: at most two
#      relay-failure lines (the rest counted, never a time assertion), one
#      breaker_opened; once the brokers are back, relay_recovered once with
#      the count of suppressed lines, and breaker_closed.
#   6. The worker's exit logs worker_stopped with its pid.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Utils;
use Test::More;
use OmsKafka;
use OmsTest;

my $db    = 'worker_logs';
my $topic = 'oms.order-events';

my $kafka = OmsKafka->start(topics => [$topic], partitions => 1);
my $node  = oms_node(
	'logs', "oms.database_name = '$db'",
	"oms.kafka_brokers = '${\$kafka->bootstrap}'",
	"oms.retry_base = '50ms'",
	'oms.relay_breaker_failures = 2',
	"oms.relay_breaker_cooldown = '300ms'",
	"oms.relay_ack_timeout = '2s'");
oms_fresh_db($node, $db);
oms_setup_stock($node, $db, 3, 1000);

# Unescapes a quoted value of a structured line.
sub unquote
{
	my ($v) = @_;
	return $v unless $v =~ s/^"(.*)"$/$1/s;
	my %esc = (n => "\n", r => "\r", t => "\t");
	$v =~ s/\\(x[0-9a-f]{2}|.)/
	  length($1) == 3 && substr($1, 0, 1) eq 'x' ? chr(hex(substr($1, 1)))
	  : exists $esc{$1} ? $esc{$1} : $1/ge;
	return $v;
}

# events(FROM, EVENT, FIELD => VALUE, ...): the structured lines of EVENT
# in the server log after byte FROM whose fields match, as hashes (plus
# level => LOG or WARNING).
sub events
{
	my ($from, $event, %want) = @_;
	my @found;
	foreach my $line (split /\n/, oms_log_since($node, $from))
	{
		next unless $line =~ /\b(LOG|WARNING):\s+oms: (event=.*)$/;
		my ($level, $rest) = ($1, $2);
		my %f = (level => $level);
		while ($rest =~ /(\w+)=("(?:[^"\\]|\\.)*"|\S*)/g)
		{
			$f{$1} = unquote($2);
		}
		next unless ($f{event} // '') eq $event;
		next if grep { ($f{$_} // '') ne $want{$_} } keys %want;
		push @found, \%f;
	}
	return @found;
}

sub show { return join("\n", map { my $e = $_; join(' ', map { "$_=$e->{$_}" } sort keys %$e) } @_); }

sub relay_status
{
	my ($key) = @_;
	return oms_sql_quiet($node, $db, "SELECT oms_relay_status() ->> '$key'") // '';
}
sub outbox_empty { return oms_sql_true($node, $db, 'SELECT NOT EXISTS (SELECT FROM oms.outbox)'); }

ok(oms_wait_until(60, sub { oms_worker_pid($node, $db) ne '' }), "the worker serves $db")
  or BAIL_OUT('no worker');
my $worker_pid = oms_worker_pid($node, $db);

# ------------------------------------------------------------ 1. started
ok(oms_wait_until(30, sub { events(0, 'worker_started', database => $db, pid => $worker_pid) == 1 }),
	"worker_started: database=$db pid=$worker_pid, at LOG");
my ($started) = events(0, 'worker_started', database => $db, pid => $worker_pid);
is($started && $started->{level}, 'LOG', 'worker_started is a LOG line');

# ------------------------------------------------------------ 2, 3. sagas
my $items = '[{"sku": "SKU-01", "quantity": 1, "unit_price": 500}]';

sub new_order
{
	my ($customer, $method) = @_;
	my $id = oms_sql($node, $db, "SELECT oms_create_order('$customer', '$items') ->> 'order_id'");
	oms_sql($node, $db, "SELECT 1 FROM oms_pay_order('$id', '$method')");
	return $id;
}
my $o_flaky    = new_order('flaky',    'test_flaky');
my $o_declined = new_order('declined', 'test_decline');
my $s_flaky    = oms_sql($node, $db, "SELECT id FROM oms.sagas WHERE order_id = '$o_flaky'");
my $s_declined = oms_sql($node, $db, "SELECT id FROM oms.sagas WHERE order_id = '$o_declined'");
ok( oms_wait_until(
		60,
		sub {
			oms_sql_true($node, $db,
				"SELECT (SELECT status FROM oms.orders WHERE id = '$o_flaky') = 'confirmed'
					AND (SELECT status FROM oms.orders WHERE id = '$o_declined') = 'failed'");
		}),
	'the flaky payment was confirmed after its retries, the declined one failed')
  or diag(oms_sql_quiet($node, $db, 'SELECT customer_id, status FROM oms.orders') // '');
oms_wait_until(30, sub { events(0, 'saga_compensated', saga_id => $s_declined) == 1 });

my @retries  = events(0, 'saga_step_failed', saga_id => $s_flaky);
my $attempts = join(',', map { $_->{attempt} // '' } @retries);
my @bad      = grep {
	     $_->{level} ne 'LOG'
	  || ($_->{database} // '') ne $db
	  || ($_->{order_id} // '') ne $o_flaky
	  || ($_->{step} // '') ne 'pay'
	  || ($_->{kind} // '') ne 'fulfilment'
	  || ($_->{sqlstate} // '') ne 'OM010'
	  || ($_->{retry_in_ms} // '') !~ /^[0-9]+$/
	  || ($_->{message} // '') ne 'payment failed: provider unavailable'
} @retries;
ok(!@bad && $attempts eq '1,2',
	'saga_step_failed (LOG) for each transient failure: database, saga_id, order_id, kind, step=pay, attempt, sqlstate=OM010, retry_in_ms, message'
) or diag("attempts: $attempts\n" . show(@retries));

my @failed = events(0, 'saga_failed', saga_id => $s_declined);
my $letter = oms_sql($node, $db,
	"SELECT id FROM oms.dead_letters WHERE saga_id = '$s_declined' AND kind = 'saga_failed'");
my $f = $failed[0] // {};
ok( @failed == 1
	  && $f->{level} eq 'LOG'
	  && ($f->{order_id} // '') eq $o_declined
	  && ($f->{step} // '') eq 'pay'
	  && ($f->{attempt} // '') eq '1'
	  && ($f->{sqlstate} // '') eq 'OM013'
	  && ($f->{dead_letter_id} // '') eq $letter
	  && ($f->{message} // '') eq 'payment declined: card declined',
	'saga_failed (LOG) for the declined payment: order_id, step=pay, attempt=1, sqlstate=OM013, dead_letter_id, message'
) or diag("dead letter $letter\n" . show(@failed));
my @compensated = events(0, 'saga_compensated', saga_id => $s_declined);
ok( @compensated == 1
	  && $compensated[0]{level} eq 'LOG'
	  && ($compensated[0]{order_id} // '') eq $o_declined
	  && ($compensated[0]{outcome} // '') eq 'failed',
	'saga_compensated (LOG) once the declined saga is compensated: order_id, outcome=failed')
  or diag(show(@compensated));
is(scalar(events(0, 'saga_failed', saga_id => $s_flaky)), 0,
	'no saga_failed for the flaky payment that succeeded');

# ------------------------------------------------------------ 4. rejected reply
# As the reply consumer hands it over (oms_payment_result refuses unknown
# correlation ids outright).
oms_sql($node, $db, q{SELECT oms._apply_payment_reply('worker-logs-1',
	'{"correlation_id": "no-such-command", "outcome": "approved", "message": "a \"quoted\" word"}')});
$letter = oms_sql($node, $db, q{SELECT max(id) FROM oms.dead_letters WHERE kind = 'reply'});
oms_wait_until(10, sub { events(0, 'payment_reply_rejected', dead_letter_id => $letter) == 1 });
my ($rejected) = events(0, 'payment_reply_rejected', dead_letter_id => $letter);
ok( $rejected
	  && $rejected->{level} eq 'WARNING'
	  && ($rejected->{correlation_id} // '') eq 'no-such-command'
	  && ($rejected->{message} // '') eq 'unknown correlation id "no-such-command"',
	'payment_reply_rejected (WARNING): correlation_id, dead_letter_id, message with spaces and quotes read back'
) or diag(show($rejected // ()));

# ------------------------------------------------------------ 5. brokers down
ok(oms_wait_until(60, \&outbox_empty), 'the relay published everything before the outage')
  or diag(relay_status('last_error'));
oms_set_sighup($node, 'oms.log_min_interval', '1h');
oms_wait_until(30, sub { (oms_sql_quiet($node, $db, 'SHOW oms.log_min_interval') // '') eq '1h' });
my $from = -s $node->logfile;
my $b0   = relay_status('batches_total');
$kafka->cmd('down all');
# New events while the brokers are down, each its own transaction, until
# the relay has failed batch after batch: the breaker opened and at least
# six of its probes failed too.
my $n = 0;
ok( oms_wait_until(
		120,
		sub {
			$n++;
			oms_sql($node, $db, "SELECT 1 FROM oms_create_order('down-$n', '$items')");
			my $b = relay_status('batches_total');
			return $b ne '' && $b - $b0 >= 8 && relay_status('breaker') ne 'closed';
		}),
	'with the brokers down the relay kept failing ('
	  . (relay_status('batches_total') - $b0)
	  . ' failed batches) and the breaker opened')
  or diag(oms_sql_quiet($node, $db, 'SELECT oms_relay_status()') // '');
my $down_end = -s $node->logfile;
$kafka->cmd('up all');
ok( oms_wait_until(120, sub { events($from, 'relay_recovered', database => $db) >= 1 && outbox_empty() }),
	'after the outage the relay published the backlog and logged relay_recovered')
  or diag(oms_sql_quiet($node, $db, 'SELECT oms_relay_status()') // '');

my $outage   = substr(oms_log_since($node, $from), 0, $down_end - $from);
my $failures = () = $outage =~ /oms: event=relay_(?:batch|claim|settle)_failed/g;
my ($first)  = events($from, 'relay_batch_failed');
ok( $failures >= 1
	  && $failures <= 2
	  && $first
	  && $first->{level} eq 'WARNING'
	  && ($first->{failed} // '') =~ /^[0-9]+$/
	  && ($first->{events} // '') =~ /^[0-9]+$/
	  && ($first->{breaker} // '') ne ''
	  && ($first->{error}   // '') ne '',
	"at most 2 relay failure lines during the outage ($failures), the first a WARNING with failed, events, breaker and error"
) or diag(show($first // ()));
my $opened = events($from, 'breaker_opened');
my $closed = events($from, 'breaker_closed');
ok($opened == 1 && $closed == 1,
	"breaker_opened logged once for the outage ($opened), breaker_closed once after it ($closed)");
my @recovered  = events($from, 'relay_recovered');
my $suppressed = $recovered[0] ? $recovered[0]{suppressed} // '' : '';
ok( @recovered == 1
	  && $recovered[0]{level} eq 'LOG'
	  && $suppressed =~ /^[0-9]+$/
	  && $suppressed + $failures >= 8,
	"relay_recovered (LOG) logged once, counting the failure lines left out (suppressed=$suppressed, with the $failures logged: at least the 8 failed batches)"
) or diag(show(@recovered));
my $total = () = $outage =~ /oms: event=/g;
ok($total <= 20, "the whole outage logged a bounded number of oms lines ($total, at most 20)")
  or diag(join("\n", grep { /oms: event=/ } split /\n/, $outage));

# ------------------------------------------------------------ 6. stopped
$node->safe_psql('postgres', "SELECT pg_terminate_backend($worker_pid)");
ok(oms_wait_until(30, sub { events(0, 'worker_stopped', database => $db, pid => $worker_pid) == 1 }),
	"worker_stopped: database=$db pid=$worker_pid when the worker exits");

$node->stop;
$kafka->stop;
done_testing();
