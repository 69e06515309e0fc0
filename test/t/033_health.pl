# test/t/033_health.pl: oms_health() of a served database, in each
# condition, against a real worker and the mock Kafka broker.
#
# The test's own node serves the database "health" and publishes to a
# one-broker mock Kafka cluster (test/kafka), with a breaker that opens after
# 2 failed batches for 1 s, oms.relay_ack_timeout = 1s,
# oms.worker_naptime = 200ms, and small health thresholds (outbox lag 2 s,
# worker timeout 3 s) so that the conditions show up quickly:
#   healthy        worker running, relay on, orders confirmed and published: ok
#   dead letters   an event the broker refuses for good (injected
#                  MSG_SIZE_TOO_LARGE): degraded, dead_letters; replayed: ok
#   broker down    every broker down while orders are created: degraded with
#                  breaker_open and outbox_lag; brokers back: ok again, the
#                  backlog published
#   remote payments  oms.payment_provider = kafka: the reply consumer runs
#                  and shows in the inbox section; still ok
#   paused         oms.worker_enabled = off: down, worker_paused; on: ok
#   stalled        the worker process stopped with SIGSTOP (alive, but its
#                  loop no longer advances): down, worker_stalled; SIGCONT: ok
#   stopped        the launcher stopped with SIGSTOP so it cannot start a new
#                  worker, the worker terminated: down, worker_not_running;
#                  launcher resumed: a new worker, ok
# The worker, relay and saga metrics of oms.metrics (the rows of
# oms_metrics()) are checked in the healthy, broker down and stopped
# conditions too: the regress tests run in unserved databases.
# Conditions are polled with generous deadlines that only guard against a
# hang; nothing asserts how long anything took.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Utils;
use Test::More;
use OmsKafka;
use OmsTest;

my $db       = 'health';
my $topic    = 'oms.order-events';
my $deadline = 60;

# Processes stopped with SIGSTOP are resumed whatever happens, before the
# node is torn down (END blocks run in reverse order of definition: this
# one, defined after Cluster.pm's, runs first).
my @stopped;
sub resume_stopped
{
	kill 'CONT', @stopped if @stopped;
	@stopped = ();
	return;
}
END { resume_stopped(); }

my $kafka = OmsKafka->start(brokers => 1, partitions => 2, topics => [$topic]);
my $node = oms_node(
	'health',
	"oms.database_name = '$db'",
	"oms.kafka_brokers = '" . $kafka->bootstrap . "'",
	"oms.relay_ack_timeout = '1s'",
	'oms.relay_breaker_failures = 2',
	"oms.relay_breaker_cooldown = '1s'",
	"oms.retry_base = '100ms'",
	"oms.retry_max = '1s'",
	'oms.worker_naptime = 200',
	"oms.health_outbox_lag = '2s'",
	"oms.health_worker_timeout = '3s'");
diag('mock Kafka: ' . $kafka->bootstrap . ", topic $topic");
oms_fresh_db($node, $db);
oms_setup_stock($node, $db, 3, 100000000);

my $items = '[{"sku": "SKU-01", "quantity": 1, "unit_price": 250}]';

sub sql_quiet { return oms_sql_quiet($node, $db, $_[0]) // ''; }
sub health    { return sql_quiet('SELECT oms_health()'); }
sub status    { return sql_quiet("SELECT oms_health() ->> 'status'"); }

sub reasons
{
	return sql_quiet("SELECT coalesce(string_agg(r ->> 'code', ',' ORDER BY r ->> 'code'), '')
		FROM jsonb_array_elements(oms_health() -> 'reasons') AS r");
}

# status_is(STATUS, REASONS): the status, and exactly these reason codes
# (sorted, comma-separated).
sub status_is
{
	my ($want, $want_reasons) = @_;
	return status() eq $want && reasons() eq ($want_reasons // '');
}

# has_reasons(STATUS, CODE...): the status, and at least these reason codes.
sub has_reasons
{
	my ($want, @codes) = @_;
	return 0 unless status() eq $want;
	my $have = ',' . reasons() . ',';
	return !grep { index($have, ",$_,") < 0 } @codes;
}

# metric(NAME, LABELS_JSON): one sample of oms.metrics (the rows behind
# oms_metrics()) as an integer, '' when there is none.
sub metric
{
	my ($name, $labels) = @_;
	$labels //= '{}';
	return sql_quiet("SELECT value::bigint FROM oms.metrics WHERE metric = '$name' AND labels = '$labels'::jsonb");
}

sub worker_pid { return oms_worker_pid($node, $db); }

sub launcher_pid
{
	return oms_sql_quiet($node, 'postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'oms launcher'") // '';
}

# pay_orders(PREFIX, COUNT): COUNT orders created and paid, each in its own
# transaction.
sub pay_orders
{
	my ($prefix, $count) = @_;
	oms_sql($node, $db,
		"SELECT 1 FROM oms_pay_order((oms_create_order('$prefix-$_', '$items', 'EUR') ->> 'order_id')::uuid, 'test_ok')"
	) foreach 1 .. $count;
	return;
}

sub settled
{
	return oms_sql_true($node, $db, "SELECT NOT EXISTS (SELECT FROM oms.outbox)
		AND NOT EXISTS (SELECT FROM oms.sagas WHERE status IN ('running', 'compensating'))");
}

# expect(NAME, CODE): polls the condition; one test, with the health
# document as diagnostics on failure.
sub expect
{
	my ($name, $cond) = @_;
	ok(oms_wait_until($deadline, $cond), $name)
	  or diag('status: ' . status() . ', reasons: ' . reasons() . "\n" . health());
	return;
}

oms_wait_until($deadline, sub { worker_pid() ne '' }) or BAIL_OUT("no worker serves $db");

# ============================================================ healthy
pay_orders('ok', 5);
oms_wait_until($deadline, \&settled);
expect('healthy: worker running, relay on, everything published: ok without reasons',
	sub { status_is('ok', '') });
my $doc = health();
my $pid = worker_pid();
ok( oms_sql_true($node, $db,
		"SELECT (d #>> '{worker,alive}')::boolean AND (d #>> '{worker,pid}')::int = $pid
		AND (d #>> '{outbox,relay_enabled}')::boolean AND (d #>> '{outbox,pending}')::int = 0
		AND d #>> '{outbox,breaker}' = 'closed' AND d #>> '{outbox,last_publish_at}' IS NOT NULL
		AND (d #>> '{thresholds,outbox_lag_ms}')::int = 2000 AND (d #>> '{thresholds,worker_timeout_ms}')::int = 3000
		AND jsonb_array_length(d -> 'workers') = 1
		FROM (SELECT \$doc\$$doc\$doc\$::jsonb AS d) AS x"),
	'healthy: the document shows the live worker, the relay and an empty outbox') or diag($doc);

my $published = sql_quiet("SELECT oms_relay_status() ->> 'published_total'");
ok( metric('oms_worker_up') eq '1'
	  && (metric('oms_worker_loops_total') || 0) > 0
	  && ($published || 0) >= 15
	  && (metric('oms_relay_published_events_total') || 0) >= $published
	  && metric('oms_relay_breaker_open') eq '0'
	  && metric('oms_saga_outcomes_total', '{"kind": "fulfilment", "outcome": "confirmed"}') eq '5',
	'healthy: the metrics of a served database: worker up, loops counted, every event published, 5 sagas confirmed'
) or diag(join("\n", grep { /^oms_(worker|relay|saga_outcomes)/ } split /\n/, sql_quiet('SELECT oms_metrics()')));

# ============================================================ dead letters
$kafka->cmd('error Produce MSG_SIZE_TOO_LARGE 1');
pay_orders('dl', 1);
oms_wait_until($deadline,
	sub { sql_quiet("SELECT count(*) FROM oms.dead_letters WHERE kind = 'publish' AND status = 'open'") eq '1' });
$kafka->cmd('clear Produce');
expect('dead letters: an event refused for good makes it degraded with reason dead_letters',
	sub { status_is('degraded', 'dead_letters') });
oms_sql($node, $db,
	"SELECT oms_retry_dead_letter(id) FROM oms.dead_letters WHERE kind = 'publish' AND status = 'open'");
expect('dead letters: replayed and published, ok again', sub { status_is('ok', '') });

# ============================================================ broker down
$kafka->cmd('down all');
pay_orders('down', 5);
expect('broker down: degraded with breaker_open and outbox_lag',
	sub { has_reasons('degraded', 'breaker_open', 'outbox_lag') });
expect('broker down: the metrics show the open breaker and the failed attempts',
	sub { metric('oms_relay_breaker_open') eq '1' && (metric('oms_relay_publish_failures_total') || 0) > 0 });
my $r = ',' . reasons() . ',';
ok($r !~ /,worker_/ && $r !~ /,not_served,/, 'broker down: the worker is still fine (no down reason)')
  or diag($r);
pay_orders('down-more', 2);
$kafka->cmd('up all');
expect('broker back: ok again', sub { status_is('ok', '') });
expect('broker back: the backlog was published', \&settled);

# ============================================================ remote payments
oms_set_sighup($node, 'oms.payment_provider', 'kafka');
expect(
	'remote payments: the reply consumer runs and shows in the inbox section',
	sub {
		oms_sql_true($node, $db,
			"SELECT oms_health() #>> '{inbox,consumer}' = 'running' AND (oms_health() #>> '{inbox,enabled}')::boolean");
	});
expect('remote payments: ok', sub { status_is('ok', '') });
$node->safe_psql('postgres', 'ALTER SYSTEM RESET oms.payment_provider');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');

# ============================================================ paused
oms_set_sighup($node, 'oms.worker_enabled', 'off');
expect('paused: oms.worker_enabled = off is down with reason worker_paused',
	sub { status_is('down', 'worker_paused') });
oms_set_sighup($node, 'oms.worker_enabled', 'on');
expect('paused: on again, ok', sub { status_is('ok', '') });

# ============================================================ stalled
$pid = worker_pid();
push @stopped, $pid;
kill 'STOP', $pid;
expect('stalled: a worker whose loop stopped is down with reason worker_stalled',
	sub { status_is('down', 'worker_stalled') });
ok( oms_sql_true($node, $db,
		"SELECT (oms_health() #>> '{worker,pid}')::int = $pid AND (oms_health() #>> '{worker,alive}')::boolean"),
	'stalled: it is still the same, live process');
resume_stopped();
expect('stalled: resumed, ok', sub { status_is('ok', '') });

# ============================================================ stopped
my $launcher = launcher_pid();
$pid = worker_pid();
push @stopped, $launcher;
kill 'STOP', $launcher;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
oms_wait_until($deadline, sub { worker_pid() eq '' });
expect('stopped: no worker process is down with reason worker_not_running',
	sub { status_is('down', 'worker_not_running') });
is(metric('oms_worker_up'), '0', 'stopped: the metrics say the worker is down');
ok( oms_sql_true($node, $db,
		"SELECT oms_health() #> '{worker,pid}' = 'null' AND NOT (oms_health() #>> '{worker,alive}')::boolean"),
	q{stopped: the worker's pid is gone from the document});
resume_stopped();
expect('stopped: the launcher starts a new worker', sub { my $p = worker_pid(); $p ne '' && $p ne $pid });
pay_orders('after', 2);
expect('stopped: with the new worker, ok again', sub { status_is('ok', '') });
expect('stopped: the new worker ran the new orders and published their events', \&settled);

$node->stop;
$kafka->stop;
done_testing();
