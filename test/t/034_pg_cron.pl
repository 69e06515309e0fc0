# test/t/034_pg_cron.pl: oms maintenance scheduled with the real pg_cron
# (Debian postgresql-15-cron, 1.4: minute schedules).
#
# On the test's own node, shared_preload_libraries = 'oms,pg_cron',
# cron.database_name = oms_cron (pg_cron connects through the node's Unix
# socket directory, trusted by the test node's pg_hba),
# oms.maintenance_interval = 1s:
#   oms_schedule_maintenance() creates one job per task with the expected
#   names, schedules and commands; running it again changes nothing, a new
#   schedule updates a job in place; the worker stops running the tasks;
#   within ~90 s (minute schedules) a job has a succeeded run in
#   cron.job_run_details and its effect is visible (an abandoned pending
#   order canceled); oms_unschedule_maintenance() removes the jobs and the
#   worker takes over again.  From another database, where pg_cron does not
#   run, scheduling fails with 55000 and says where pg_cron runs.  Jobs
#   scheduled by 0.1.0 are pointed at schema oms by ALTER EXTENSION UPDATE.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use OmsTest;

my $db            = 'oms_cron';
my $deadline      = 60;
my $cron_deadline = 100;

# oms_node's own shared_preload_libraries line comes first; this one,
# appended later, wins.
my $node = oms_node(
	'pg_cron',
	"shared_preload_libraries = 'oms,pg_cron'",
	"cron.database_name = '$db'",
	"cron.host = '$PostgreSQL::Test::Cluster::test_pghost'",
	"oms.database_name = '$db'",
	'oms.maintenance_interval = 1',
	"oms.pending_order_ttl = '1h'");
oms_fresh_db($node, $db);
oms_sql($node, $db, 'CREATE EXTENSION pg_cron');

sub sql       { return oms_sql($node, $db, $_[0]); }
sub sql_quiet { return oms_sql_quiet($node, $db, $_[0]) // ''; }
sub sql_true  { return oms_sql_true($node, $db, $_[0]); }

# The SQLSTATE of the error SQL raises in DB, caught in a DO block.
sub sqlstate_of
{
	my ($dbname, $sql) = @_;
	my ($stdout, $stderr);
	$node->psql($dbname,
		"DO \$\$ BEGIN PERFORM $sql; EXCEPTION WHEN OTHERS THEN RAISE WARNING '%', SQLSTATE; END \$\$",
		stdout => \$stdout,
		stderr => \$stderr);
	return $stderr =~ /WARNING:\s+([0-9A-Z]{5})/ ? $1 : "none ($stderr)";
}

# The error message of SQL in DB, '' when it succeeds.
sub error_of
{
	my ($dbname, $sql) = @_;
	my ($stdout, $stderr);
	my $rc = $node->psql($dbname, $sql, stdout => \$stdout, stderr => \$stderr);
	return $rc == 0 ? '' : $stderr;
}

ok( $node->poll_query_until($db,
		'SELECT alive AND loops >= 1 FROM oms_worker_status() WHERE database = current_database()'),
	"the worker runs in $db next to pg_cron "
	  . sql("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'"))
  or BAIL_OUT("the worker does not run in $db");
# The worker would run every task every second if it ran them at all.
sql("UPDATE oms.maintenance_tasks SET period = '1 second'");
ok( oms_wait_until($deadline,
		sub { sql_true("SELECT bool_and(last_run_by = 'worker') FROM oms.maintenance_tasks") }),
	'before scheduling, the worker runs maintenance') or diag(sql_quiet('SELECT * FROM oms.maintenance_status'));

# --- oms_schedule_maintenance: the jobs
my $actions = "SELECT string_agg(j ->> 'action', ',') FROM jsonb_array_elements(oms_schedule_maintenance() -> 'jobs') AS j";
is(sql($actions), 'created,created,created,created,created', 'oms_schedule_maintenance() creates five jobs');
my $scheduled_at = sql('SELECT now()');
my $expected = join("\n",
	"oms-$db-expire_pending_orders|* * * * *|SELECT oms._run_maintenance('expire_pending_orders')|$db|t",
	"oms-$db-prune|*/5 * * * *|SELECT oms._run_maintenance('prune')|$db|t",
	"oms-$db-purge_idempotency_keys|*/5 * * * *|SELECT oms._run_maintenance('purge_idempotency_keys')|$db|t",
	"oms-$db-redrive_sagas|* * * * *|SELECT oms._run_maintenance('redrive_sagas')|$db|t",
	"oms-$db-release_reservations|* * * * *|SELECT oms._run_maintenance('release_reservations')|$db|t");
is(sql('SELECT jobname, schedule, command, database, active FROM cron.job ORDER BY jobname'),
	$expected, 'cron.job holds the jobs with the expected names, schedules and commands');

my $res = sql($actions);
ok(sql_true("SELECT '$res' = 'unchanged,unchanged,unchanged,unchanged,unchanged' AND count(*) = 5 FROM cron.job"),
	'running it again changes nothing and adds no job') or diag("actions: $res");
my $ids_before = sql("SELECT string_agg(jobid::text, ',' ORDER BY jobname) FROM cron.job");
$res = sql(q{SELECT j ->> 'action' FROM jsonb_array_elements(oms_schedule_maintenance('{"prune": "17 * * * *"}') -> 'jobs') AS j
	WHERE j ->> 'task' = 'prune'});
ok( sql_true("SELECT '$res' = 'updated' AND count(*) = 5 AND string_agg(jobid::text, ',' ORDER BY jobname) = '$ids_before'
		AND bool_or(jobname = 'oms-$db-prune' AND schedule = '17 * * * *') FROM cron.job"),
	'a new schedule updates the job in place')
  or diag("action: $res\n" . sql_quiet('SELECT jobid, jobname, schedule FROM cron.job ORDER BY jobname'));
my $refused = q{oms_schedule_maintenance('{"prune": "every now and then"}')};
my $err     = error_of($db, "SELECT $refused");
ok( sql_true("SELECT count(*) = 5 AND bool_or(jobname = 'oms-$db-prune' AND schedule = '17 * * * *') FROM cron.job"),
	'a schedule pg_cron refuses fails the call and changes no job')
  or diag("$err\n" . sql_quiet('SELECT jobid, jobname, schedule FROM cron.job ORDER BY jobname'));
diag("pg_cron says: $err");
diag('its SQLSTATE: ' . sqlstate_of($db, $refused));
ok(sql_true("SELECT bool_and(run_by = 'pg_cron' AND cron_jobid IS NOT NULL) FROM oms.maintenance_status"),
	'the status view says pg_cron runs every task');

# --- the worker stops: five more worker loops (maintenance due every
# second) and no task was run by the worker since scheduling.
my $loops = oms_worker_status($node, $db, 'loops');
if (oms_wait_until(
		$deadline,
		sub { sql_true("SELECT loops >= $loops + 5 FROM oms_worker_status() WHERE database = current_database()") }))
{
	ok( sql_true("SELECT count(*) = 0 FROM oms.maintenance_tasks
			WHERE last_run_by = 'worker' AND last_started_at > '$scheduled_at'"),
		'the worker no longer runs the tasks pg_cron runs')
	  or diag(sql_quiet('SELECT task, last_run_by, last_started_at FROM oms.maintenance_tasks'));
}
else
{
	fail('the worker keeps looping');
	diag(sql_quiet('SELECT * FROM oms_worker_status()'));
}

# --- a job runs (the only long wait: pg_cron fires on the minute)
my $item  = '[{"sku": "CR-A", "quantity": 1, "unit_price": 100}]';
my $old   = sql("SELECT oms_create_order('cr-old', '$item', 'EUR') ->> 'order_id'");
my $young = sql("SELECT oms_create_order('cr-young', '$item', 'EUR') ->> 'order_id'");
sql("UPDATE oms.orders SET created_at = now() - interval '2 hours' WHERE id = '$old'");
my $start = time();
if (oms_wait_until(
		$cron_deadline,
		sub {
			sql_true("SELECT EXISTS (SELECT FROM cron.job_run_details AS d JOIN cron.job AS j USING (jobid)
					WHERE j.jobname = 'oms-$db-expire_pending_orders' AND d.status = 'succeeded')
				AND (SELECT status = 'canceled' FROM oms.orders WHERE id = '$old')");
		}))
{
	pass('a pg_cron job succeeded and canceled the abandoned pending order');
	diag(sprintf('waited %.2f s for pg_cron', time() - $start));
}
else
{
	fail('a pg_cron job succeeded and canceled the abandoned pending order');
	diag(sql_quiet('SELECT jobid, status, return_message, start_time FROM cron.job_run_details ORDER BY runid'));
	diag(sql_quiet('SELECT task, run_by, last_run_by, last_result FROM oms.maintenance_status'));
	diag(join("\n", grep { /cron/i } split /\n/, oms_log_since($node)));
}
ok(sql_true("SELECT status = 'pending' FROM oms.orders WHERE id = '$young'"),
	'the young pending order is left alone');
ok( sql_true("SELECT runs > 0 AND last_run_by = 'pg_cron' AND last_started_at > '$scheduled_at' AND last_error IS NULL
		FROM oms.maintenance_status WHERE task = 'expire_pending_orders'"),
	'oms.maintenance_status records the run by pg_cron')
  or diag(sql_quiet('SELECT task, runs, last_run_by, last_started_at, last_result FROM oms.maintenance_status'));

# --- pg_cron runs in one database only: from another, a clear error.
oms_fresh_db($node, 'oms_cron_other');
$err = error_of('oms_cron_other', 'SELECT oms_schedule_maintenance()');
like($err, qr/pg_cron runs in database "\Q$db\E"/,
	'from another database, oms_schedule_maintenance() says where pg_cron runs');
is(sqlstate_of('oms_cron_other', 'oms_schedule_maintenance()'), '55000', '... with SQLSTATE 55000');

# --- oms_unschedule_maintenance
$res = sql("SELECT jsonb_array_length(oms_unschedule_maintenance() -> 'removed')");
my $unscheduled_at = sql('SELECT now()');
ok(sql_true("SELECT '$res' = '5' AND count(*) = 0 FROM cron.job"),
	'oms_unschedule_maintenance() removes the five jobs') or diag("removed: $res");
ok(sql_true("SELECT bool_and(run_by = 'worker' AND cron_jobid IS NULL) FROM oms.maintenance_status"),
	'... and the status view hands the tasks back to the worker');
ok( oms_wait_until(
		$deadline,
		sub {
			sql_true("SELECT bool_and(last_run_by = 'worker' AND last_started_at > '$unscheduled_at')
				FROM oms.maintenance_tasks");
		}),
	'the worker runs maintenance again') or diag(sql_quiet('SELECT * FROM oms.maintenance_status'));
is(sql("SELECT jsonb_array_length(oms_unschedule_maintenance() -> 'removed')"),
	'0', 'unscheduling again removes nothing');
ok(sql_true('SELECT sum(failures) = 0 FROM oms.maintenance_tasks'), 'no maintenance task failed')
  or diag(sql_quiet('SELECT task, failures, last_error FROM oms.maintenance_tasks'));

# --- jobs scheduled by 0.1.0 named the extension's schema in their
# command; ALTER EXTENSION oms UPDATE points them at schema oms.
sql('SET client_min_messages = warning; DROP EXTENSION oms CASCADE');
sql("CREATE EXTENSION oms VERSION '0.1.0'");
sql('SELECT oms_schedule_maintenance()');
my $before = sql("SELECT string_agg(DISTINCT regexp_replace(command, '[(].*', ''), ',') FROM cron.job");
sql('ALTER EXTENSION oms UPDATE');
ok( sql_true("SELECT '$before' = 'SELECT public.oms_run_maintenance' AND count(*) = 5
		AND bool_and(command = format('SELECT oms._run_maintenance(%L)', split_part(jobname, '-', 3)))
		FROM cron.job"),
	q{ALTER EXTENSION oms UPDATE rewrites the commands of 0.1.0's jobs to call schema oms})
  or diag("before: $before\n" . sql_quiet('SELECT jobname, command FROM cron.job ORDER BY 1'));
ok( sql_true("SELECT bool_and(j ->> 'action' = 'unchanged')
		FROM jsonb_array_elements(oms_schedule_maintenance() -> 'jobs') AS j"),
	'... and oms_schedule_maintenance() then finds nothing to change');

$node->stop;
done_testing();
