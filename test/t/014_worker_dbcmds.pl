# test/t/014_worker_dbcmds.pl: database-level commands against a served
# database (oms.database_name = oms_db, oms.worker_naptime = 200ms):
#   - a DROP DATABASE that fails (a client is still connected) leaves the
#     database served: its worker comes back;
#   - DROP EXTENSION oms while the worker is busy succeeds promptly; the
#     worker idles through it without errors and serves the extension again
#     after CREATE EXTENSION;
#   - ALTER DATABASE ... RENAME and CREATE DATABASE ... TEMPLATE of a served
#     database succeed: the utility hook stops the worker first, and the
#     worker comes back when the database is served again.
# The database has three processes running sagas (oms.saga_workers = 3):
# every command above must stop all of them, and all come back after; a
# reload of oms.saga_workers retires saga workers or starts more.
# "Promptly" is a generous bound (20 s) against a hang; the measured times
# are diagnostics.
use strict;
use warnings FATAL => 'all';

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use OmsTest;

my $db           = 'oms_db';
my $backlog      = 2000;
my $bound        = 20;
my $saga_workers = 3;

my $node = oms_node('dbcmds', "oms.database_name = '$db'", 'oms.worker_naptime = 200',
	"oms.saga_workers = $saga_workers");
oms_fresh_db($node, $db);

sub worker_pid_is_not
{
	my ($old) = @_;
	return oms_wait_until(
		30,
		sub {
			my $pid = oms_worker_pid($node, $db);
			return $pid ne '' && $pid ne $old;
		});
}
worker_pid_is_not('none') or BAIL_OUT('the worker does not run');

# timed_sql(DB, SQL): (exit status, stderr, seconds), bounded by 60 s.
sub timed_sql
{
	my ($d, $sql) = @_;
	my ($stdout, $stderr);
	my $t0 = time();
	my $rc = $node->psql($d, $sql,
		stdout => \$stdout, stderr => \$stderr, timeout => 60, on_error_die => 0);
	return ($rc, $stderr // '', time() - $t0);
}

# ------------------------------------------------------- a DROP that fails
my $old    = oms_worker_pid($node, $db);
my $client = IPC::Run::start(
	[ 'psql', '-X', '-q', '-d', $node->connstr($db), '-c', 'SELECT pg_sleep(600)' ],
	'>', '/dev/null', '2>', '/dev/null');
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM pg_stat_activity
	WHERE datname = '$db' AND backend_type = 'client backend' AND query LIKE '%pg_sleep%'");
my ($rc, $err, $took) = timed_sql('postgres', "DROP DATABASE $db");
diag(sprintf('DROP DATABASE with a client connected failed after %.2f s', $took));
ok($rc != 0 && $err =~ /is being accessed by other users/,
	'DROP DATABASE with a client still connected fails as usual') or diag("rc $rc: $err");
my $t0 = time();
ok(worker_pid_is_not($old), 'after the failed DROP DATABASE the database is served again by a new worker')
  or diag(q{worker pid: '} . oms_worker_pid($node, $db) . qq{' (was $old)});
diag(sprintf('worker back %.2f s after the failed drop', time() - $t0));
$node->safe_psql('postgres', "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
	WHERE datname = '$db' AND backend_type = 'client backend'");
$client->finish;

# ----------------------------------------------- DROP EXTENSION while busy
sub pay_pending
{
	oms_sql($node, $db, q{SELECT count(oms_pay_order(id, 'test_ok')) FROM oms.orders WHERE status = 'pending'});
	return;
}
oms_setup_stock($node, $db, 5, 1_000_000);
oms_create_orders($node, $db, $backlog, 5, 'ext');
pay_pending();
my $busy_pid;
my $busy = oms_wait_until(
	60,
	sub {
		$busy_pid = oms_sql_quiet($node, $db, "
			SELECT a.pid FROM pg_stat_activity AS a
			WHERE a.backend_type = 'oms worker' AND a.datname = current_database() AND a.state = 'active'
			  AND (SELECT count(*) FROM oms.orders WHERE status = 'confirmed') BETWEEN 20 AND $backlog - 1");
		return defined $busy_pid && $busy_pid ne '';
	});
if (ok($busy, 'caught the worker busy with the backlog before DROP EXTENSION'))
{
	my $loops0 = oms_worker_status($node, $db, 'loops');
	($rc, $err, $took) = timed_sql($db, 'DROP EXTENSION oms CASCADE');
	diag(sprintf('DROP EXTENSION with the worker (pid %s) busy: took %.2f s', $busy_pid, $took));
	is($rc, 0, 'DROP EXTENSION oms succeeds while the worker is busy') or diag($err);
	ok($took < $bound, "DROP EXTENSION oms returns promptly (within $bound s) while the worker is busy");

	# The worker keeps looping without the extension: wait for a few loops'
	# worth of time by watching its pg_stat_activity entry change.
	my ($ticks, $last) = (0, '');
	oms_wait_until(
		30,
		sub {
			my $s = oms_sql_quiet($node, 'postgres',
				"SELECT state_change FROM pg_stat_activity WHERE pid = $busy_pid") // '';
			return 0 if $s eq '' || $s eq $last;
			$last = $s;
			return ++$ticks >= 6;
		});
	$node->safe_psql($db, 'CREATE EXTENSION oms');
	my $now_pid = oms_worker_pid($node, $db);
	my $loops1  = oms_worker_status($node, $db, 'loops');
	my $error   = oms_worker_status($node, $db, q{coalesce(last_error, '')});
	my $logged  = oms_log_errors_of($node, $busy_pid);
	ok($now_pid eq $busy_pid && $loops1 > $loops0 && $error eq '' && $logged eq '',
		'the worker lives through DROP EXTENSION: same pid, still looping, no error recorded or logged')
	  or diag("pid $busy_pid -> $now_pid, loops $loops0 -> $loops1, last_error '$error'\n$logged");

	oms_setup_stock($node, $db, 5, 1_000_000);
	oms_create_orders($node, $db, 10, 5, 'again');
	pay_pending();
	ok(oms_wait_until(30, sub { oms_sagas_done($node, $db, 10) }),
		'after CREATE EXTENSION the worker runs sagas again')
	  or diag(oms_sql_quiet($node, $db, 'SELECT status, count(*) FROM oms.sagas GROUP BY 1') // '');
	oms_check_invariants($node, $db, 10, 'after DROP and CREATE EXTENSION');
}

# ------------------------------------ rename and copy of a served database
# The worker is a session in the database; PostgreSQL refuses both while
# other sessions exist, so the utility hook stops the worker first.  The
# main worker and all saga workers serve it.
sub has_worker
{
	return oms_wait_until(
		30,
		sub {
			oms_worker_pid($node, $db) ne ''
			  && oms_sql_true($node, $db,
				"SELECT count(*) = current_setting('oms.saga_workers')::int
				 FROM oms_saga_worker_status() WHERE database = current_database() AND alive");
		});
}
($rc, $err, $took) = timed_sql('postgres', "ALTER DATABASE $db RENAME TO ${db}_renamed");
ok($rc == 0 && $took < $bound, 'ALTER DATABASE RENAME of a served database succeeds promptly')
  or diag(sprintf('took %.2f s: %s', $took, $err));
diag(sprintf('rename took %.2f s', $took));
$node->safe_psql('postgres', "ALTER DATABASE ${db}_renamed RENAME TO $db") if $rc == 0;
ok(has_worker(), 'the database renamed back is served again');

($rc, $err, $took) = timed_sql('postgres', "CREATE DATABASE ${db}_copy TEMPLATE $db");
ok($rc == 0 && $took < $bound, 'CREATE DATABASE ... TEMPLATE a served database succeeds promptly')
  or diag(sprintf('took %.2f s: %s', $took, $err));
diag(sprintf('copy took %.2f s', $took));
ok(has_worker(), 'the template database gets its worker back after the copy');
$node->safe_psql('postgres', "DROP DATABASE IF EXISTS ${db}_copy");

# ------------------------------------------------ oms.saga_workers reloads
sub saga_processes
{
	return oms_sql_quiet($node, 'postgres', "SELECT count(*) FROM pg_stat_activity
		WHERE backend_type = 'oms saga worker' AND datname = '$db'") // '';
}
sub saga_processes_become
{
	my ($n) = @_;
	return oms_wait_until(30, sub { saga_processes() eq $n });
}
is(saga_processes(), $saga_workers - 1,
	'the database has ' . ($saga_workers - 1) . ' saga workers beside the main worker');
my $log = -s $node->logfile;
oms_set_sighup($node, 'oms.saga_workers', 1);
ok(saga_processes_become(0), 'a reload to oms.saga_workers = 1 retires every saga worker')
  or diag(saga_processes() . ' still run');
ok(has_worker(), 'the main worker stays')
  or diag(oms_sql_quiet($node, $db, 'SELECT * FROM oms_saga_worker_status()') // '');
like(oms_log_since($node, $log), qr/event=worker_retired/,
	'each retired saga worker says so (event=worker_retired)');
oms_set_sighup($node, 'oms.saga_workers', 4);
ok(saga_processes_become(3), 'a reload to oms.saga_workers = 4 starts three saga workers')
  or diag(saga_processes() . ' run');
ok(has_worker(), 'oms_saga_worker_status() shows all four processes alive')
  or diag(oms_sql_quiet($node, $db, 'SELECT * FROM oms_saga_worker_status()') // '');

oms_no_worker_errors($node);

$node->stop;
done_testing();
