# test/t/013_worker_shutdown.pl: the oms worker pauses, idles and gets out
# of the way.
#
# The node serves oms_busy (with the extension) and oms_plain (without it),
# oms.worker_naptime = 200ms:
#   - oms.worker_enabled = off pauses: a paid order and a 2,000-saga backlog
#     stay untouched while the worker keeps looping; on again, they run;
#   - DROP DATABASE of the served database while its worker is busy with
#     that backlog returns promptly and succeeds; a database re-created
#     under the same name gets a worker again;
#   - in a served database without the extension the worker idles: it
#     loops, records no error and logs no ERROR;
#   - pg_ctl stop -m fast while the worker is busy returns promptly; after
#     a start the worker finishes the backlog, every order exactly once;
#   - pg_ctl stop -m smart returns promptly: workers are not clients.
# Each served database has three processes running sagas (oms.saga_workers
# = 3): pause, drop and shutdown must hold for all of them.
# "Promptly" means within a generous bound (20 s) that only guards against a
# hang; the measured time is printed as a diagnostic.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use OmsTest;

my $db      = 'oms_busy';
my $plain   = 'oms_plain';
my $backlog = $ENV{WT_BACKLOG_ORDERS} // 2000;
my $nskus   = 5;
my $on_hand = 1_000_000;
my $bound   = 20;

my $node = oms_node('shutdown', "oms.database_name = '$db, $plain'",
	'oms.worker_naptime = 200', 'oms.saga_workers = 3');
$node->safe_psql('postgres', "CREATE DATABASE $plain");
oms_fresh_db($node, $db);

sub worker_up { my ($d) = @_; return oms_worker_pid($node, $d) ne ''; }
sub loops     { my ($d) = @_; return oms_worker_status($node, $d, 'loops', $db); }

# True once the worker of D has looped N times.
sub loops_reach
{
	my ($d, $n) = @_;
	return oms_wait_until(
		30,
		sub {
			my $l = loops($d);
			return defined $l && $l ne '' && $l >= $n;
		});
}

# The worker pid once it runs a batch with some but not all of the backlog
# confirmed, or undef.
my $busy_pid;

sub caught_busy
{
	return oms_wait_until(
		60,
		sub {
			$busy_pid = oms_sql_quiet($node, $db, "
				SELECT a.pid FROM pg_stat_activity AS a
				WHERE a.backend_type = 'oms worker' AND a.datname = current_database() AND a.state = 'active'
				  AND (SELECT count(*) FROM oms.orders WHERE status = 'confirmed') BETWEEN 20 AND $backlog - 1");
			return defined $busy_pid && $busy_pid ne '';
		});
}

sub confirmed
{
	return oms_sql_quiet($node, $db, q{SELECT count(*) FROM oms.orders WHERE status = 'confirmed'}) // '?';
}

sub pay_all_pending
{
	oms_sql($node, $db, q{SELECT count(oms_pay_order(id, 'test_ok')) FROM oms.orders WHERE status = 'pending'});
	return;
}

ok( oms_wait_until(60, sub { worker_up($db) }) && oms_wait_until(60, sub { worker_up($plain) }),
	'a worker runs in each served database, with or without the extension')
  or BAIL_OUT('workers did not start');
my $plain_pid    = oms_worker_pid($node, $plain);
my $plain_loops0 = loops($plain);

# ------------------------------------------------------------ pause / resume
oms_set_sighup($node, 'oms.worker_enabled', 'off');
# Three loops after the reload: the SIGHUP sets the latch, and the loop
# after the one it interrupted rereads the configuration first.
loops_reach($db, loops($db) + 3);

oms_setup_stock($node, $db, $nskus, $on_hand);
oms_create_orders($node, $db, $backlog, $nskus, 'backlog');
my $probe = oms_sql($node, $db,
	q{SELECT oms_create_order('probe', '[{"sku": "SKU-01", "quantity": 1, "unit_price": 500}]', 'EUR') ->> 'order_id'});
oms_sql($node, $db, "SELECT oms_pay_order('$probe', 'test_ok')");
# The backlog: paid in one transaction, so one wake for all of it.
pay_all_pending();
my $l1 = loops($db);
if (ok(loops_reach($db, $l1 + 5), 'oms.worker_enabled = off: the worker keeps looping'))
{
	my ($probe_status, $waiting, $attempted) = split /\|/, oms_sql($node, $db, "
		SELECT format('%s|%s|%s', (SELECT status FROM oms.orders WHERE id = '$probe'),
			(SELECT count(*) FROM oms.sagas WHERE status = 'running' AND step_no = 1),
			(SELECT count(*) FROM oms.saga_steps WHERE attempts > 0))");
	is($probe_status, 'processing',
		'oms.worker_enabled = off pauses: a paid order stays processing while the worker loops');
	ok($waiting == $backlog + 1 && $attempted == 0,
		"oms.worker_enabled = off pauses: the $backlog-saga backlog is untouched")
	  or diag("sagas due at step 1: $waiting of ${\($backlog + 1)}; steps attempted: $attempted");
	diag('the worker looped ' . (loops($db) - $l1) . ' times while paused');
}

my $t0 = time();
oms_set_sighup($node, 'oms.worker_enabled', 'on');
ok( oms_wait_until(
		60, sub { oms_sql_true($node, $db, "SELECT status = 'confirmed' FROM oms.orders WHERE id = '$probe'") }),
	'oms.worker_enabled = on again: the paused order is confirmed')
  or diag(oms_sql_quiet($node, $db, 'SELECT * FROM oms_worker_status()') // '');
diag(sprintf('confirmed %.2f s after the reload', time() - $t0));

# ----------------------------------------------------- DROP DATABASE, busy
if (ok(caught_busy(), 'caught the worker busy with the backlog before DROP DATABASE'))
{
	my $c = confirmed();
	$t0 = time();
	my ($stdout, $stderr);
	my $rc = $node->psql('postgres', "DROP DATABASE $db",
		stdout => \$stdout, stderr => \$stderr, timeout => 60, on_error_die => 0);
	my $took = time() - $t0;
	diag(sprintf('DROP DATABASE with the worker (pid %s) busy, %s of %d orders confirmed: took %.2f s',
			$busy_pid, $c, $backlog + 1, $took));
	is($rc, 0, 'DROP DATABASE of the served database succeeds while its worker is busy') or diag($stderr);
	ok($took < $bound, "DROP DATABASE returns promptly (within $bound s) while the worker is busy");
	is(oms_sql($node, 'postgres', "SELECT count(*) FROM pg_database WHERE datname = '$db'"),
		'0', 'the dropped database is gone');
}
else
{
	diag('confirmed ' . confirmed() . ' of ' . ($backlog + 1));
}

# Re-created under the same name (a new OID): served again.
oms_fresh_db($node, $db);
ok(oms_wait_until(60, sub { worker_up($db) }),
	'a database re-created under the dropped name gets a worker again');

# ---------------------------------------------- idle without the extension
# It has idled since the start; a few more loops prove it still does.
ok(loops_reach($plain, loops($plain) + 3), 'the worker of a database without the extension keeps looping');
diag('it looped ' . (loops($plain) - $plain_loops0) . ' times since the start');
is(oms_worker_status($node, $plain, q{coalesce(last_error, '')}, $db),
	'', 'the worker of a database without the extension records no error');
my $now_pid = oms_worker_pid($node, $plain);
my $logged  = oms_log_errors_of($node, $plain_pid, $now_pid);
ok($logged eq '' && $now_pid eq $plain_pid,
	'the worker of a database without the extension logs no ERROR or WARNING (same pid all along)')
  or diag("pid $plain_pid -> $now_pid\n$logged");

# --------------------------------------------------- fast shutdown, busy
oms_setup_stock($node, $db, $nskus, $on_hand);
oms_create_orders($node, $db, $backlog, $nskus, 'fast');
pay_all_pending();
if (ok(caught_busy(), 'caught the worker busy with the backlog before pg_ctl stop -m fast'))
{
	my $c   = confirmed();
	my $log = -s $node->logfile;
	$t0 = time();
	my $stopped = $node->stop('fast', fail_ok => 1);
	my $took    = time() - $t0;
	diag(sprintf('pg_ctl stop -m fast with the worker (pid %s) busy, %s of %d orders confirmed: took %.2f s',
			$busy_pid, $c, $backlog, $took));
	ok($stopped, 'pg_ctl stop -m fast succeeds while the worker is busy');
	ok($took < $bound, "pg_ctl stop -m fast returns promptly (within $bound s) while the worker is busy");
	my $shutdown_log = oms_log_since($node, $log);
	ok($shutdown_log =~ /database system is shut down/ && $shutdown_log !~ /terminated by signal|PANIC/,
		'the fast shutdown was clean') or diag($shutdown_log);
	$node->start;
	ok(oms_wait_until(180, sub { oms_sagas_done($node, $db, $backlog) }),
		'after the restart the worker finishes the backlog')
	  or diag(oms_sql_quiet($node, $db, 'SELECT status, count(*) FROM oms.sagas GROUP BY 1') // '');
	oms_check_invariants($node, $db, $backlog, 'after fast shutdown mid-run');
}

oms_no_worker_errors($node);

# ------------------------------------------------------- smart shutdown
# Smart waits for client sessions only: the launcher and workers must not
# count as clients.  Last, as it leaves the server stopped.
if (ok(oms_wait_until(60, sub { worker_up($db) }), 'a worker runs before pg_ctl stop -m smart'))
{
	$t0 = time();
	my $stopped = $node->stop('smart', fail_ok => 1);
	my $took    = time() - $t0;
	diag(sprintf('pg_ctl stop -m smart with the workers running: took %.2f s', $took));
	ok($stopped && $took < $bound,
		"pg_ctl stop -m smart succeeds promptly (within $bound s) with the workers running");
}

done_testing();
