# test/t/032_payment_kafka_load.pl: 1,000 orders paid concurrently through
# the remote payment provider over Kafka, with a kill -9 of the worker while
# replies flow.
#
# The test's own node (oms.database_name = payment_load) and mock Kafka
# (oms.order-events, oms.payment-commands, oms.payment-replies, 3 partitions
# each), the test payment service (test/payment/service.py).  Order i is paid
# with test_decline when i % 4 = 0, else test_ok, by 8 concurrent psql
# clients, one transaction per payment.  Once a tenth of the replies have
# been applied the worker gets SIGKILL: the postmaster crash-restarts, the
# launcher starts a new worker, whose reply consumer resumes from the last
# committed offset, so replies applied but not yet committed come again (the
# kill cannot be timed between apply and commit; it lands while replies
# flow).  Payments the crash cut off are paid again.  Then
# test/payment/load_checks.sql compares the database with the service's log:
# every saga terminal as the service decided, exactly one effect per reply
# (one payment.reply entry and one applied inbox row per order, captured once
# or not at all), reservations and stock consistent.
# PM_LOAD_ORDERS=N changes the number of orders.
use strict;
use warnings FATAL => 'all';

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use OmsKafka;
use OmsPayment;
use OmsTest;

my $db      = 'payment_load';
my $n       = $ENV{PM_LOAD_ORDERS} // 1000;
my $clients = 8;
my $nskus   = 5;
my $replies = $OmsPayment::REPLIES_TOPIC;
my $t0      = time();

# The psql clients are stopped whatever happens.
my @client_handles;
END { $_->kill_kill(grace => 5) foreach grep { $_->pumpable } @client_handles; }

my $kafka = OmsKafka->start(
	partitions => 3,
	topics     => [ 'oms.order-events', $OmsPayment::COMMANDS_TOPIC, $replies ]);
# The reply timeout is never reached, even across the crash restart: every
# saga must end as the service decided.
my $node = oms_node(
	'payment_load',
	"oms.database_name = '$db'",
	"oms.kafka_brokers = '" . $kafka->bootstrap . "'",
	"oms.payment_provider = 'kafka'",
	"oms.payment_reply_timeout = '10min'",
	"oms.step_timeout = '10min'");
# The service's log and the clients' output are kept with the node's logs.
my $work = $PostgreSQL::Test::Utils::log_path . '/payment_load';
mkdir $work or die "mkdir $work: $!";
my $svc_log = "$work/service.log";
diag('mock Kafka: ' . $kafka->bootstrap . "; work dir $work");

oms_fresh_db($node, $db);
oms_setup_stock($node, $db, $nskus, 1000000);
oms_create_orders($node, $db, $n, $nskus, 'load');

oms_wait_until(60, sub { oms_worker_pid($node, $db) ne '' })
  or BAIL_OUT("no worker serves $db");
my $svc = OmsPayment->start(kafka => $kafka, log => $svc_log)
  or BAIL_OUT('the payment service did not join its consumer group: ' . slurp_file("$svc_log.err"));
ok(pm_inbox_ready($node, $db, $kafka, 90), q{the payment service and the worker's reply consumer are up})
  or BAIL_OUT("the worker does not consume $replies: "
	  . (oms_sql_quiet($node, $db, 'SELECT * FROM oms_worker_status()') // ''));
diag(sprintf('set-up took %.2f s', time() - $t0));

sub sql_quiet { return oms_sql_quiet($node, $db, $_[0]) // ''; }

# ------------------------------------------------------------ the clients
my $method_sql =
  "CASE WHEN split_part(customer_id, '-', 2)::int % 4 = 0 THEN 'test_decline' ELSE 'test_ok' END";
my %scripts;
foreach my $line (split /\n/, oms_sql($node, $db,
		"SELECT split_part(customer_id, '-', 2)::int % $clients, format('SELECT 1 FROM oms_pay_order(%L, %L);', id, $method_sql)
		 FROM oms.orders WHERE status = 'pending' ORDER BY split_part(customer_id, '-', 2)::int"))
{
	my ($c, $stmt) = split /\|/, $line, 2;
	$scripts{$c} .= "$stmt\n";
}

sub applied
{
	my $a = oms_sql_quiet($node, $db, "SELECT count(*) FROM oms.inbox WHERE result = 'applied'");
	return defined $a && $a ne '' ? $a : undef;
}

my $t1 = time();
foreach my $c (0 .. $clients - 1)
{
	my $file = "$work/pay-$c.sql";
	append_to_file($file, $scripts{$c} // '');
	push @client_handles,
	  IPC::Run::start(
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-f', $file ],
		'<', '/dev/null', '>', "$work/client-$c.log", '2>&1');
}

# Replies flowing: some applied, not all.
my $old_pid = '';
if (oms_wait_until(120, sub { my $a = applied(); defined $a && $a >= $n / 10 && $a < $n }))
{
	$old_pid = oms_worker_pid($node, $db);
	my $at = applied() // '?';
	if ($old_pid ne '')
	{
		kill 'KILL', $old_pid;
		pass("kill -9 of the worker (pid $old_pid) while replies flowed ($at of $n applied)");
	}
	else
	{
		fail('kill -9 of the worker while replies flowed');
		diag('no worker pid');
	}
}
else
{
	fail('kill -9 of the worker while replies flowed');
	diag('applied replies: ' . (applied() // '?') . " of $n\n"
		  . sql_quiet('SELECT status, count(*) FROM oms.sagas GROUP BY 1'));
}
# After the crash restart the clients lost their connections: they just
# have to end.
my $cut = 0;
foreach my $h (@client_handles)
{
	$h->finish or $cut++;
}
diag(sprintf('%d clients ended %.2f s after they started (%d cut off by the crash)',
	$clients, time() - $t1, $cut));

if ($old_pid ne '')
{
	oms_wait_until(60, sub { oms_server_ready($node) })
	  or BAIL_OUT('the server does not accept connections again after the kill');
	my $restarted = oms_log_since($node) =~ /oms worker.*\(PID \Q$old_pid\E\) was terminated by signal 9/;
	ok( $restarted && oms_wait_until(
			60,
			sub { my $p = oms_worker_pid($node, $db); $p ne '' && $p ne $old_pid }),
		'the postmaster crash-restarted and the launcher started a new worker (pid '
		  . oms_worker_pid($node, $db) . ')')
	  or diag(join("\n", grep { defined } (split /\n/, oms_log_since($node))[-30 .. -1]));
}

# Payments the crash cut off (rolled back: still pending) are paid now.
my $repaid = oms_sql($node, $db,
	"SELECT count(oms_pay_order(id, $method_sql)) FROM oms.orders WHERE status = 'pending'");
diag("$repaid orders were still pending after the crash and were paid now");

if (oms_wait_until(150, sub { oms_sagas_done($node, $db, $n) }))
{
	pass("all $n sagas reached a final state");
	diag(sprintf('all final %.2f s after the clients started', time() - $t1));
}
else
{
	fail("all $n sagas reached a final state");
	diag(sql_quiet('SELECT kind, status, count(*) FROM oms.sagas GROUP BY 1, 2'));
	diag(sql_quiet("SELECT t.name, t.status, count(*) FROM oms.saga_steps t JOIN oms.sagas s ON s.id = t.saga_id
		WHERE s.status IN ('running', 'compensating') GROUP BY 1, 2"));
	diag(sql_quiet('SELECT * FROM oms_worker_status()'));
}

# The default oms.kafka_consumer_group "oms", with the database name appended.
my $group = "oms-$db";
ok(oms_wait_until(60, sub { pm_committed_all($kafka, $group) }),
	"the reply consumer (group $group) committed every reply on $replies")
  or diag('partition committed high: ' . (pm_offsets($kafka, $group) // ''));

# ------------------------------------------------------------ the checks
# The service's decisions, one per correlation id, into the database.
my $tsv = join('',
	map { my $f = $_->[1]; join("\t", map { $f->{$_} // '' } qw(order payment corr cmd outcome)) . "\n" }
	grep { $_->[0] eq 'decision' } pm_events($svc_log));
append_to_file("$work/decisions.tsv", $tsv);
oms_sql($node, $db,
	'CREATE TABLE public.pm_decisions (order_id uuid, payment_id uuid, corr text PRIMARY KEY, cmd text, outcome text)');
oms_sql($node, $db, "\\copy public.pm_decisions FROM '$work/decisions.tsv'");
diag(sprintf('service: %d commands received (%d redelivered), %d decisions, %d replies',
	$svc->count('command'), $svc->count('command', 'dup=1'),
	$svc->count('decision'), $svc->count('reply')));

# load_checks.sql prints one row per check: name | ok | detail.
my ($stdout, $stderr);
my $rc = $node->psql(
	$db,
	"SET client_min_messages = warning;\n"
	  . slurp_file(oms_root() . '/test/payment/load_checks.sql'),
	stdout       => \$stdout,
	stderr       => \$stderr,
	extra_params => [ '-F', '|', '-v', "expected=$n" ]);
if ($rc != 0)
{
	fail('load checks ran');
	diag($stderr);
}
else
{
	foreach my $line (split /\n/, $stdout)
	{
		my ($name, $ok, $detail) = split /\|/, $line, 3;
		next unless defined $name && $name ne '';
		ok($ok eq 't', $name) or diag($detail // '');
	}
}

diag('reply consumer since the crash restart: '
	  . sql_quiet("SELECT format('applied %s, duplicates %s, late %s, rejected %s, failures %s',
		s ->> 'applied', s ->> 'duplicates', s ->> 'late', s ->> 'rejected', s ->> 'failures')
		FROM oms._inbox_shmem_status() AS s"));
my @errors = grep { /oms (saga )?worker: (ERROR|PANIC):|event=(saga_error|worker_batch_failed)/ }
  split /\n/, oms_log_since($node);
ok(!@errors, 'no oms worker logged an ERROR and no saga failed to advance')
  or diag(join("\n", grep { defined } @errors[ 0 .. 9 ]));
diag(sprintf('test took %.2f s', time() - $t0));

$svc->stop;
$node->stop;
$kafka->stop;
done_testing();
