# test/t/016_worker_crash.pl: the oms worker survives a crash mid-run
# without doing anything twice or losing anything.
#
# Scenarios on one node (oms.database_name = oms_crash), the terminations
# first (their check reads the whole log for a crash):
#   kill -9    1,000 orders are paid one transaction each while the worker
#              runs; when some but not all are confirmed and the worker is
#              inside a batch, the worker gets SIGKILL: the postmaster
#              crash-restarts every process and the launcher brings the
#              worker back.
#   immediate  the same, but "pg_ctl restart -m immediate" mid-run.
#   terminate  the same, but pg_terminate_backend() of the worker: no crash
#              restart; the launcher starts a new worker while the clients
#              keep paying undisturbed.
# The node runs oms.saga_workers = 3, so the main worker is one of three
# processes running sagas; then the same kill -9 and terminate of one of
# the two saga workers, caught inside a batch while all three work through
# a backlog (the orders are paid in one transaction, so batches fill up and
# wake the saga workers).
# After each, the orders the crash kept from being paid are paid, every saga
# must finish, and test/process/invariants.sql checks: all confirmed exactly
# once, no double reservation, no double capture, exact stock decrement,
# gap-free timeline and outbox sequences.
use strict;
use warnings FATAL => 'all';

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use OmsTest;

my $db           = 'oms_crash';
my $n            = $ENV{WT_CRASH_ORDERS} // 1000;
my $nskus        = 5;
my $on_hand      = 1_000_000;
my $saga_workers = 3;
my $work         = PostgreSQL::Test::Utils::tempdir('crash');

my $node = oms_node('crash', "oms.database_name = '$db'", "oms.saga_workers = $saga_workers");
oms_fresh_db($node, $db);

sub postmaster_pid
{
	open(my $fh, '<', $node->data_dir . '/postmaster.pid') or return '';
	my $pid = <$fh>;
	close($fh);
	chomp($pid);
	return $pid;
}

# "pid confirmed" once a TARGET process runs a batch while some but not all
# orders are confirmed.
sub mid_run
{
	my ($target) = @_;
	my $low = int($n / 10);
	# The server polls, every 2 ms, for up to 120 s: a backlog of $n orders
	# lasts well under a second with three saga workers, which a poll from
	# here (oms_wait_until, every 100 ms plus a connection) can miss.
	# pg_stat_clear_snapshot: pg_stat_activity is otherwise read once per
	# transaction.
	my $found = oms_sql_quiet($node, $db, qq{
		DO \$\$
		DECLARE
			v_found text;
			v_deadline timestamptz := clock_timestamp() + interval '120 s';
		BEGIN
			LOOP
				PERFORM pg_stat_clear_snapshot();
				SELECT a.pid || ' ' || c.n INTO v_found
				FROM pg_stat_activity AS a,
					 (SELECT count(*) FILTER (WHERE status = 'confirmed') AS n FROM oms.orders) AS c
				WHERE a.backend_type = '$target' AND a.datname = current_database()
				  AND a.state = 'active' AND c.n BETWEEN $low AND $n - 1
				LIMIT 1;
				EXIT WHEN v_found IS NOT NULL OR clock_timestamp() > v_deadline;
				PERFORM pg_sleep(0.002);
			END LOOP;
			PERFORM set_config('wt.mid_run', coalesce(v_found, ''), false);
		END
		\$\$;
		SELECT current_setting('wt.mid_run');});
	return defined $found && $found ne '' ? $found : undef;
}

# The pid of a TARGET process other than OLD once all saga workers are back.
sub worker_back
{
	my ($target, $old) = @_;
	my $pid;
	oms_wait_until(
		60,
		sub {
			$pid = oms_sql_quiet($node, 'postgres', "SELECT pid FROM pg_stat_activity
				WHERE backend_type = '$target' AND datname = '$db' AND pid <> $old ORDER BY pid DESC LIMIT 1");
			return 0 unless defined $pid && $pid ne '';
			return oms_sql_true($node, $db,
				"SELECT count(*) = $saga_workers FROM oms_saga_worker_status() WHERE database = '$db' AND alive");
		}) or return;
	return $pid;
}

# TRUNCATE takes its locks table by table while the worker's loop takes its
# own: a deadlock between them is possible and harmless; try again.
sub empty_tables
{
	my $sql = 'TRUNCATE oms.orders, oms.outbox, oms.stock, oms.idempotency_keys CASCADE';
	foreach my $try (1 .. 4)
	{
		return if defined oms_sql_quiet($node, $db, $sql);
	}
	oms_sql($node, $db, $sql);
	return;
}

# scenario(LABEL, kill9|immediate|terminate, main|saga)
# The most processes that had run saga steps, read after each scenario.
my $most_busy = 0;

sub scenario
{
	my ($label, $how, $which) = @_;
	my $target   = $which eq 'saga' ? 'oms saga worker' : 'oms worker';
	my $pay_file = "$work/pay-$how-$which.sql";

	empty_tables();
	oms_setup_stock($node, $db, $nskus, $on_hand);
	oms_create_orders($node, $db, $n, $nskus, $how);
	# A saga worker is caught in a backlog that fills every batch: one
	# transaction.  Otherwise one transaction per order, each waking the
	# worker at commit.
	PostgreSQL::Test::Utils::append_to_file($pay_file, "BEGIN;\n") if $which eq 'saga';
	oms_pay_script($node, $db, $pay_file);
	PostgreSQL::Test::Utils::append_to_file($pay_file, "COMMIT;\n") if $which eq 'saga';

	oms_wait_until(60, sub { oms_worker_pid($node, $db) ne '' })
	  or return fail("$label: the worker runs before the test");

	my $payer_log = "$work/payer-$how-$which.log";
	my $payer     = IPC::Run::start(
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-f', $pay_file ],
		'>', $payer_log, '2>&1');

	my $mid = mid_run($target);
	if (!$mid)
	{
		fail("$label: caught the worker inside a batch with some but not all orders confirmed");
		diag(oms_sql_quiet($node, $db, q{SELECT count(*) FROM oms.orders WHERE status = 'confirmed'}) // '');
		$payer->finish;
		return;
	}
	my ($old_pid, $confirmed_at_crash) = split / /, $mid;
	my $pm_before = postmaster_pid();
	my $log       = -s $node->logfile;
	my $t0        = time();
	my $restart_ok;
	if ($how eq 'kill9')
	{
		kill 'KILL', $old_pid;
	}
	elsif ($how eq 'immediate')
	{
		$restart_ok = PostgreSQL::Test::Utils::system_log('pg_ctl', '-w', '-t', 60, '-m', 'immediate',
			'-D', $node->data_dir, '-l', $node->logfile, 'restart') == 0;
		$node->_update_pid(1);
	}
	else
	{
		$node->safe_psql('postgres', "SELECT pg_terminate_backend($old_pid)");
	}
	pass("$label: stopped the worker (pid $old_pid) while it ran a batch, with $confirmed_at_crash of $n orders confirmed");

	# After a crash the payer loses its connection too; it just has to end.
	$payer->finish;
	my $payer_rc = $?;
	if ($how eq 'terminate')
	{
		is($payer_rc, 0, "$label: the clients kept paying undisturbed")
		  or diag(PostgreSQL::Test::Utils::slurp_file($payer_log));
		# The postmaster logs the exit after the process is gone, which may
		# be after the payer ended: wait for the line.
		my $exited = eval {
			$node->wait_for_log(qr/\Q$target\E.*\(PID $old_pid\) exited with exit code 1/, $log);
			1;
		};
		ok($exited && oms_log_since($node) !~ /all server processes terminated/,
			"$label: the worker exited cleanly, no crash restart");
	}
	ok($restart_ok, "$label: pg_ctl restart -m immediate succeeded") if $how eq 'immediate';
	oms_wait_until(60, sub { oms_server_ready($node) })
	  or return fail("$label: the server accepts connections again");
	if ($how eq 'kill9')
	{
		# A crash restart: same postmaster, every other process re-forked.
		my $since = oms_log_since($node, $log);
		ok( $pm_before eq postmaster_pid()
			  && $since =~ /\Q$target\E.*\(PID $old_pid\) was terminated by signal 9/
			  && $since =~ /all server processes terminated; reinitializing/,
			"$label: the postmaster noticed the killed worker and crash-restarted");
	}
	my $new_pid = worker_back($target, $old_pid);
	ok($new_pid, "$label: the launcher started a new $target; all $saga_workers saga workers run")
	  or return diag(oms_sql_quiet($node, $db, 'SELECT * FROM oms_saga_worker_status()') // '');
	diag(sprintf('new worker (pid %s) running %.2f s after the stop', $new_pid, time() - $t0));

	# Orders whose pay the crash cut off (rolled back, so still pending).
	my $repaid = oms_sql($node, $db,
		q{SELECT count(oms_pay_order(id, 'test_ok')) FROM oms.orders WHERE status = 'pending'});
	diag("$repaid orders were still pending after the stop (their pay was cut off) and were paid now");

	ok(oms_wait_until(180, sub { oms_sagas_done($node, $db, $n) }), "$label: all $n sagas reached a final state")
	  or diag(oms_sql_quiet($node, $db, 'SELECT status, count(*) FROM oms.sagas GROUP BY 1') // '');
	diag(sprintf('all done %.2f s after the stop', time() - $t0));
	# The step counters start again with each process: read them before
	# the next scenario's crash may reset them.
	my $busy = oms_sql($node, $db,
		"SELECT count(*) FILTER (WHERE units > 0) FROM oms_saga_worker_status() WHERE database = '$db'");
	$most_busy = $busy if $busy > $most_busy;
	oms_check_invariants($node, $db, $n, $label);
	return;
}

# First, while the server has never crashed (the clean-exit check reads the
# whole log).
scenario('pg_terminate_backend of the worker',  'terminate', 'main');
scenario('pg_terminate_backend of a saga worker', 'terminate', 'saga');
scenario('kill -9 of the worker',                 'kill9',     'main');
scenario('pg_ctl restart -m immediate',           'immediate', 'main');
scenario('kill -9 of a saga worker',              'kill9',     'saga');

# Every process ran saga steps at some point: the backlogs woke them.  At
# least two processes had run steps at the end of one scenario (a crash
# restarts every process, and its counters with it).
ok($most_busy >= 2, "the saga workers ran saga steps too (at most $most_busy processes at once)")
  or diag(oms_sql_quiet($node, $db, 'SELECT * FROM oms_saga_worker_status()') // '');

# The batches themselves never failed: no ERROR from any oms worker, no saga
# that could not advance.  (Crash-time WARNING/FATAL lines are expected.)
oms_no_worker_errors($node);
is(oms_worker_status($node, $db, q{coalesce(last_error, '')}), '', 'oms_worker_status() shows no last_error');

$node->stop;
done_testing();
