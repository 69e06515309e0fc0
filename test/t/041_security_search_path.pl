# test/t/041_security_search_path.pl: no code of oms runs what a database
# owner who is not a superuser planted in schema public.
#
# A role with only oms_app that owns the database (CREATE on public is the
# owner's under PostgreSQL 15) plants, for every type of schema oms,
# comparison and || operators and functions of built-in names with exact
# argument types (test/security/plant.sql).  Each trap records who ran it,
# where a rollback cannot erase it, and makes its owner a superuser when it
# runs as one.
#
# Control: in a database with oms 0.1.0, a superuser session running what
# 0.1.0's worker ran (oms._next_saga_due(), search_path "$user", public)
# trips a trap and the owner becomes a superuser: the traps work and the
# defect was real.
#
# Then, in a database with the current oms, served by the worker, pg_cron
# and a mock Kafka with the test payment service, every path runs: the API
# as oms_app, sagas waiting for a remote reply, retried (test_flaky),
# compensated (test_decline, a cancel while waiting), timed out and voided
# (test_hang), refunded; the relay publishing commands and events, the
# reply consumer applying replies, the worker's maintenance, a pg_cron job,
# health and metrics read by a superuser.  No trap runs as a superuser and
# the owner stays an ordinary role.  Then the owner renames public and puts
# functions named like oms's API in a new public (test/security/rename.sql),
# and the same paths run again: still nothing.
use strict;
use warnings FATAL => 'all';

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use OmsKafka;
use OmsScript;
use OmsTest;

my $root          = oms_root();
my $db            = 'oms_attack';
my $old_db        = 'oms_attack_old';
my $owner         = 'oms_db_owner';
my $deadline      = 120;
my $cron_deadline = 150;
my $commands      = 'oms.payment-commands';
my $replies       = 'oms.payment-replies';

# Every superuser session of the test itself (safe_psql, OmsTest's helpers)
# resolves nothing through public, or it would trip the traps.
$ENV{PGOPTIONS} = '-c client_min_messages=warning -c search_path=pg_catalog';

my $kafka = OmsKafka->start(partitions => 1, topics => [ 'oms.order-events', $commands, $replies ]);
my $node = oms_node(
	'attack',
	"shared_preload_libraries = 'oms,pg_cron'",
	"cron.database_name = '$db'",
	"oms.database_name = '$db'",
	"oms.kafka_brokers = '" . $kafka->bootstrap . "'",
	"oms.payment_provider = 'kafka'",
	"oms.payment_reply_timeout = '3s'",
	"oms.retry_base = '50ms'",
	"oms.retry_max = '200ms'",
	'oms.maintenance_interval = 1');
# pg_cron's jobs connect through libpq: to the node's socket directory,
# known once the node exists (cron.host is read at server start).
$node->append_conf('postgresql.conf', "cron.host = '" . $node->host . "'");
$node->restart;

# Sessions of the test itself: the owner with its default search_path,
# the superuser qualified and with a safe one.
sub as_owner
{
	my ($dbname, $sql) = @_;
	local $ENV{PGOPTIONS} = '-c client_min_messages=warning';
	return $node->safe_psql($dbname, $sql, extra_params => [ '-U', $owner ]);
}

sub as_owner_file
{
	my ($dbname, $file) = @_;
	local $ENV{PGOPTIONS} = '-c client_min_messages=warning';
	my ($rc, $out, $err) = oms_psql_file($node, $dbname, $file, user => $owner);
	die "$file as $owner failed: $err" if $rc;
	return $out;
}

sub as_super { return $node->safe_psql(@_); }

sub owner_is_superuser
{
	return as_super('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = '$owner'") eq 't';
}
sub superuser_hits { return as_super($_[0], 'SELECT last_value - 1 + is_called::int FROM trap.superuser_hits'); }
sub other_hits     { return as_super($_[0], 'SELECT last_value - 1 + is_called::int FROM trap.other_hits'); }
sub trap_lines     { return grep { /oms-trap:/ } split /\n/, oms_log_since($node); }

# ---------------------------------------------------------------- control
as_super('postgres', "CREATE ROLE $owner LOGIN");
as_super('postgres', "CREATE DATABASE $old_db OWNER $owner");
as_super($old_db, "CREATE EXTENSION oms SCHEMA public VERSION '0.1.0'");
as_super('postgres', "GRANT oms_app TO $owner");
as_owner_file($old_db, "$root/test/security/plant.sql");
# A saga for oms._next_saga_due() to look at (no worker serves this database).
as_super($old_db, "SELECT public.oms_set_stock('SEC-1', 10)");
as_owner($old_db,
	q{SELECT public.oms_pay_order((public.oms_create_order('c', '[{"sku": "SEC-1", "quantity": 1, "unit_price": 1}]') ->> 'order_id')::uuid, 'test_hang')}
);
# Its payment now waits for a reply: the saga is due in the future, which
# is when oms._next_saga_due() compares its status.
as_super($old_db, 'SELECT public.oms_run_sagas()');
as_owner($old_db, q{SELECT 'running'::oms.saga_status = 'running'});
ok(other_hits($old_db) >= 1,
	q{the traps are armed: the owner's own comparison of oms.saga_status runs one})
  or diag('other hits: ' . other_hits($old_db));
{
	# What the 0.1.0 worker ran after every saga batch, with its search_path.
	local $ENV{PGOPTIONS} = '-c client_min_messages=error';
	my ($rc, $stdout, $stderr) = $node->psql($old_db, 'SELECT oms._next_saga_due()');
}
ok( owner_is_superuser() && superuser_hits($old_db) >= 1,
	q{control: with oms 0.1.0, the worker's oms._next_saga_due() ran a trap as superuser and the owner became one}
) or diag('superuser hits: ' . superuser_hits($old_db) . "\n" . join("\n", trap_lines()));
as_super('postgres', "ALTER ROLE $owner NOSUPERUSER");
as_super('postgres', "DROP DATABASE $old_db");
my $trap_lines_before = trap_lines();

# ------------------------------------------------------------- the attack
as_super('postgres', "CREATE DATABASE $db OWNER $owner");
as_super($db, 'CREATE EXTENSION oms SCHEMA public');
as_super($db, 'CREATE EXTENSION pg_cron');
my $planted = as_owner_file($db, "$root/test/security/plant.sql");
diag('planted in public: ' . join(' ', split /\n/, $planted) . ' (operators, functions)');
as_super($db, q{SELECT count(public.oms_set_stock('SEC-' || i, 1000000)) FROM generate_series(1, 3) AS i});

if (!oms_wait_until(60, sub { oms_worker_pid($node, $db) ne '' }))
{
	fail("the worker serves $db");
	done_testing();
	exit;
}

# The test payment service (test/payment/service.py), its log kept with
# the node's.
my $service_log = "$PostgreSQL::Test::Utils::log_path/payment_service.log";
my $service = IPC::Run::start(
	[
		'/usr/bin/python3', "$root/test/payment/service.py",
		'--bootstrap',      $kafka->bootstrap,
		'--commands-topic', $commands,
		'--replies-topic',  $replies,
		'--log',            $service_log,
		'--max-seconds',    600
	],
	'<', \undef, '>>', "$service_log.err", '2>>', "$service_log.err");

# SIGTERM, SIGKILL after 10 s.
sub stop_service
{
	$service->kill_kill(grace => 10) if $service->pumpable;
	return;
}

sub service_ready
{
	return 0 unless -e $service_log;
	return scalar(grep { /^ready\b/ } split /\n/, slurp_file($service_log));
}

# A reply produced by kcat, as a provider would.
sub produce_reply
{
	my ($key, $ce_id, $value) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[
			'kcat', '-P', '-b', $kafka->bootstrap, '-t', $replies, '-k', $key,
			'-H', "ce_id=$ce_id", '-H', 'ce_type=oms.payment.reply',
			'-H', 'content-type=application/json', '-H', 'ce_specversion=1.0',
			'-H', 'ce_source=/oms-test/kcat'
		],
		'<', \"$value\n", '>', \$out, '2>', \$err, IPC::Run::timeout(20));
	return $? == 0;
}

# True once the worker consumes the replies topic: a probe reply (ce_id
# probe-<n>, no correlation id) every 2 s until the inbox holds one.
sub inbox_ready
{
	my ($seconds) = @_;
	my ($probes, $next) = (0, 0);
	return oms_wait_until(
		$seconds,
		sub {
			return 1
			  if $probes
			  && oms_sql_true($node, $db,
				"SELECT EXISTS (SELECT FROM oms.inbox
				 WHERE message_id IN (SELECT 'probe-' || i FROM generate_series(1, $probes) AS i))");
			if (time() >= $next)
			{
				$probes++;
				produce_reply('probe', "probe-$probes", '{"probe": true}');
				$next = time() + 2;
			}
			return 0;
		});
}

my $service_up = oms_wait_until(60, sub { service_ready() || !$service->pumpable });
if ($service_up && service_ready() && inbox_ready(90))
{
	pass('the payment service answers and the worker consumes its replies');
}
else
{
	fail('the payment service answers and the worker consumes its replies');
	diag(slurp_file("$service_log.err")) if -e "$service_log.err";
	stop_service();
	done_testing();
	exit;
}

# drive(SCHEMA, TAG): every API path as the owner (oms_app), through the
# API in SCHEMA, with customers TAG-*.
sub drive
{
	my ($api, $tag) = @_;
	my $item = '[{"sku": "SEC-1", "quantity": 1, "unit_price": 500}]';
	as_owner(
		$db, qq{
		SELECT $api.oms_pay_order(($api.oms_create_order('$tag-ok', '$item') ->> 'order_id')::uuid, 'test_ok');
		SELECT $api.oms_pay_order(($api.oms_create_order('$tag-flaky', '$item', 'USD', '$tag-key-1') ->> 'order_id')::uuid, 'test_flaky', '$tag-key-2');
		SELECT $api.oms_pay_order(($api.oms_create_order('$tag-decline', '$item') ->> 'order_id')::uuid, 'test_decline');
		SELECT $api.oms_pay_order(($api.oms_create_order('$tag-hang', '$item') ->> 'order_id')::uuid, 'test_hang');
		SELECT $api.oms_pay_order(($api.oms_create_order('$tag-cancel', '$item') ->> 'order_id')::uuid, 'test_hang');
		SELECT $api.oms_cancel_order(($api.oms_create_order('$tag-pending', '$item') ->> 'order_id')::uuid, 'changed my mind');
	});
	my $cancel_id = as_super($db, "SELECT id FROM oms.orders WHERE customer_id = '$tag-cancel'");
	as_owner($db, "SELECT $api.oms_cancel_order('$cancel_id', 'too slow')");
	return;
}

# The refund of a confirmed order, and reads of everything.
sub refund_and_read
{
	my ($api, $tag) = @_;
	my $ok_id = as_super($db, "SELECT id FROM oms.orders WHERE customer_id = '$tag-ok'");
	as_owner(
		$db, qq{
		SELECT $api.oms_refund_order('$ok_id', 100, 'partial');
		SELECT $api.oms_get_order('$ok_id');
		SELECT count(*) FROM $api.oms_order_timeline('$ok_id');
		SELECT $api.oms_transition_allowed('pending', 'processing');
		SELECT $api.oms_format_money(1999, 'USD');
	});
	as_super(
		$db, qq{
		SELECT $api.oms_health();
		SELECT length($api.oms_metrics());
		SELECT count(*) FROM oms.metrics;
		SELECT $api.oms_relay_status();
		SELECT count(*) FROM $api.oms_worker_status();
		SELECT $api.oms_run_sagas();
		SELECT $api.oms_run_maintenance();
	});
	return;
}

sub settled
{
	return oms_sql_true($node, $db,
		"SELECT (SELECT count(*) FROM oms.sagas WHERE status IN ('running', 'compensating')) = 0
			AND (SELECT count(*) FROM oms.outbox) = 0");
}

# The worker ran a maintenance task after SINCE.
sub worker_maintained
{
	my ($since) = @_;
	return oms_sql_true($node, $db,
		"SELECT bool_or(last_run_by = 'worker' AND last_started_at > '$since') FROM oms.maintenance_tasks");
}

# A pg_cron job of oms succeeded after SINCE.
sub cron_ran
{
	my ($since) = @_;
	return oms_sql_true($node, $db,
		"SELECT EXISTS (SELECT FROM cron.job_run_details AS d JOIN cron.job AS j USING (jobid)
			WHERE j.jobname LIKE 'oms-$db-%' AND d.status = 'succeeded' AND d.start_time > '$since')");
}

# run_round(LABEL, SCHEMA, TAG): every path, then the verdict.
sub run_round
{
	my ($label, $api, $tag) = @_;
	my $since = oms_sql($node, $db, 'SELECT now()');
	drive($api, $tag);
	if (oms_wait_until($deadline, \&settled))
	{
		ok(oms_wait_until($deadline, sub { worker_maintained($since) }),
			"$label: the worker ran maintenance")
		  or diag(oms_sql_quiet($node, $db, 'SELECT * FROM oms.maintenance_status') // '');
		refund_and_read($api, $tag);
		oms_wait_until($deadline, \&settled);
		pass("$label: every saga finished and the outbox is empty");
	}
	else
	{
		fail("$label: every saga finished and the outbox is empty");
		diag(oms_sql_quiet($node, $db,
				"SELECT o.customer_id, o.status, s.status, s.error FROM oms.orders o
				 JOIN oms.sagas s ON s.order_id = o.id WHERE s.status IN ('running', 'compensating')")
			  // '');
		diag('outbox: ' . (oms_sql_quiet($node, $db, 'SELECT count(*) FROM oms.outbox') // ''));
	}
	ok( oms_sql_true($node, $db,
			"SELECT count(*) > 0 FROM oms.inbox i JOIN oms.payment_commands c USING (correlation_id)
			 JOIN oms.orders o ON o.id = c.order_id WHERE i.result = 'applied' AND o.customer_id LIKE '$tag-%'"),
		"$label: the worker applied payment replies from Kafka");
	ok( oms_sql_true($node, $db,
			"SELECT bool_and(o.status::text = e.status) AND count(*) = 5 FROM oms.orders o
			 JOIN (VALUES ('$tag-ok', 'partially_refunded'), ('$tag-flaky', 'confirmed'), ('$tag-decline', 'failed'),
						  ('$tag-hang', 'failed'), ('$tag-cancel', 'canceled')) AS e(customer, status)
			 ON e.customer = o.customer_id"),
		"$label: the sagas waited, retried, compensated, voided and refunded")
	  or diag(oms_sql_quiet($node, $db,
			"SELECT customer_id, status FROM oms.orders WHERE customer_id LIKE '$tag-%' ORDER BY 1") // '');
	ok(oms_wait_until($cron_deadline, sub { cron_ran($since) }), "$label: a pg_cron maintenance job ran")
	  or diag(oms_sql_quiet($node, $db,
			'SELECT jobid, status, return_message FROM cron.job_run_details ORDER BY start_time DESC LIMIT 5')
		  // '');
	my $hits  = superuser_hits($db);
	my @all   = trap_lines();
	my @lines = @all[ $trap_lines_before .. $#all ];
	ok($hits eq '0' && !@lines, "$label: no planted operator or function ran as a superuser")
	  or diag("superuser hits: $hits\n" . join("\n", @lines));
	ok(!owner_is_superuser(), "$label: the database owner is still not a superuser");
	return;
}

# pg_cron jobs for every task; the worker keeps the rest.
as_super($db,
	q{SELECT public.oms_schedule_maintenance('{"prune": "* * * * *", "purge_idempotency_keys": "* * * * *"}')});
ok( oms_sql_true($node, $db,
		q{SELECT count(*) = 5 AND bool_and(command LIKE 'SELECT oms.\_run_maintenance(%') FROM cron.job}),
	q{pg_cron jobs call schema oms, never the extension's schema})
  or diag(oms_sql_quiet($node, $db, 'SELECT command FROM cron.job') // '');
# The worker and pg_cron may run the same tasks: each is safe to run twice.
as_super($db,
	q{UPDATE oms.maintenance_tasks SET period = '1 second', cron_jobid = NULL, cron_job_name = NULL});

run_round('planted operators', 'public', 'sec1');
as_owner_file($db, "$root/test/security/rename.sql");
ok(oms_sql_true($node, $db, q{SELECT count(*) > 20 FROM pg_proc WHERE pronamespace = 'public'::regnamespace}),
	q{the owner renamed public and impersonates oms's API in a new public});
run_round('renamed schema', 'public_orig', 'sec2');
diag(q{traps run by ordinary roles (the owner's own sessions): } . other_hits($db));

stop_service();
$node->stop;
$kafka->stop;
done_testing();
