# test/perl/OmsTest.pm: what oms's TAP tests (test/t/*.pl) share on top of
# PostgreSQL's own test modules (PostgreSQL::Test::Cluster and ::Utils).
#
# Owns: a node with oms preloaded and the settings a process-level test of
# the worker needs, a fresh database with the extension, small SQL
# shortcuts, polling without sleeps as synchronisation, and the checks that
# several tests run after a crash (test/process/invariants.sql).
#
# Run a test with test/tap.sh (it runs perl as an unprivileged user, since
# initdb refuses root), or as a normal user with "make installcheck".

package OmsTest;

use strict;
use warnings FATAL => 'all';

use Cwd qw(abs_path);
use Exporter 'import';
use File::Basename qw(dirname);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(
  oms_root oms_node oms_start oms_fresh_db oms_sql oms_sql_quiet oms_sql_true
  oms_wait_until oms_set_sighup oms_worker_pid oms_worker_status
  oms_setup_stock oms_create_orders oms_pay_script oms_in_flight
  oms_sagas_done oms_check_invariants oms_log_errors_of oms_log_since
  oms_server_ready oms_no_worker_errors
);

# Nodes made by oms_node, stopped cleanly at exit (END below).
my @nodes;

# The repository root: two levels above this file.
sub oms_root
{
	return abs_path(dirname(__FILE__) . '/../..');
}

# oms_node(NAME, 'setting = value', ...): a new, started node with oms in
# shared_preload_libraries.  PostgreSQL::Test::Cluster's defaults are for
# its own tests; three of them are undone here:
#  - restart_after_crash: a kill -9 must bring the worker back as in
#    production;
#  - log_statement = all: thousands of orders would flood the log the tests
#    read;
#  - log_line_prefix: the backend type goes in, so a test can find what an
#    oms worker logged.
sub oms_node
{
	my ($name, @conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(extra => [ '-E', 'UTF8', _locale_option() ]);
	$node->append_conf(
		'postgresql.conf', join("\n",
			"# added by test/perl/OmsTest.pm",
			"shared_preload_libraries = 'oms'",
			"restart_after_crash = on",
			"log_statement = none",
			"log_line_prefix = '%m [%p] %b: '",
			"max_connections = 50",
			@conf));
	oms_start($node);
	push @nodes, $node;
	return $node;
}

# Every node oms_node made (declared at the top).  PostgreSQL::Test::Cluster stops whatever still
# runs at exit with -m immediate, and a process stopped that way writes no
# coverage counters (make coverage); a fast stop first lets them flush.
# This END block runs before Cluster.pm's: Perl runs END blocks in reverse
# order of compilation, and this module is compiled after Cluster.pm.
END
{
	my $rc = $?;
	foreach my $node (@nodes)
	{
		$node->stop('fast', fail_ok => 1) if defined $node->{_pid};
	}
	$? = $rc;
}

# Starts NODE.  OMS_POSTGRES names a program for pg_ctl to start in place of
# postgres (it must exec postgres with its arguments): test/valgrind/run.sh
# runs the server under valgrind that way.  A later $node->restart starts
# plain postgres again.
sub oms_start
{
	my ($node) = @_;
	if (!$ENV{OMS_POSTGRES})
	{
		$node->start;
		return;
	}
	PostgreSQL::Test::Utils::system_or_bail(
		'pg_ctl', '-w', '-t', $ENV{OMS_PG_CTL_TIMEOUT} // 600,
		'-D', $node->data_dir, '-l', $node->logfile,
		'-p', $ENV{OMS_POSTGRES}, 'start');
	# Cluster.pm reads the pid file itself; its stop and kill9 need it.
	$node->_update_pid(1);
	return;
}

# C.UTF-8 sorts byte-wise but takes UTF-8 text; glibc 2.35+ has it built in.
sub _locale_option
{
	my $locales = `locale -a 2>/dev/null` // '';
	return $locales =~ /^c\.utf-?8$/mi ? '--locale=C.UTF-8' : '--no-locale';
}

# oms_fresh_db(NODE, DB): drops DB if it exists and creates it with oms.
sub oms_fresh_db
{
	my ($node, $db) = @_;
	$node->safe_psql('postgres',
		qq{SET client_min_messages = warning; DROP DATABASE IF EXISTS "$db" WITH (FORCE)});
	$node->safe_psql('postgres', qq{CREATE DATABASE "$db"});
	$node->safe_psql($db, 'CREATE EXTENSION oms');
	return;
}

# oms_sql(NODE, DB, SQL): the result (unaligned, tuples only); dies on error.
sub oms_sql
{
	my ($node, $db, $sql) = @_;
	return $node->safe_psql($db, $sql);
}

# oms_sql_quiet(NODE, DB, SQL): the result, or undef when the statement or
# the connection failed (the server may be restarting).
sub oms_sql_quiet
{
	my ($node, $db, $sql) = @_;
	my ($stdout, $stderr);
	my $rc = $node->psql($db, $sql,
		stdout       => \$stdout,
		stderr       => \$stderr,
		on_error_die => 0);
	return $rc == 0 ? $stdout : undef;
}

# True when SQL returns 't'.
sub oms_sql_true
{
	my ($node, $db, $sql) = @_;
	my $r = oms_sql_quiet($node, $db, $sql);
	return defined $r && $r eq 't';
}

# oms_wait_until(SECONDS, CODE): calls CODE every 0.1 s until it returns
# true (returns 1) or SECONDS pass (returns 0).  The condition decides; the
# deadline only guards against a hang.
sub oms_wait_until
{
	my ($seconds, $code) = @_;
	my $deadline = time() + $seconds;
	while (1)
	{
		return 1 if $code->();
		return 0 if time() > $deadline;
		usleep(100_000);
	}
}

# Sets a sighup setting with ALTER SYSTEM and reloads.
sub oms_set_sighup
{
	my ($node, $name, $value) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET $name = '$value'");
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
	return;
}

# The pid of the oms worker serving DB, or '' when there is none.
sub oms_worker_pid
{
	my ($node, $db) = @_;
	return oms_sql_quiet($node, 'postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'oms worker' AND datname = '$db' LIMIT 1"
	) // '';
}

# A column of oms_worker_status() for the served database DB, read through
# database VIA (default DB).
sub oms_worker_status
{
	my ($node, $db, $column, $via) = @_;
	return oms_sql_quiet($node, $via // $db,
		"SELECT $column FROM oms_worker_status() WHERE database = '$db'");
}

# True once the server accepts connections (again).
sub oms_server_ready
{
	my ($node) = @_;
	my $r = oms_sql_quiet($node, 'postgres', 'SELECT 1');
	return defined $r && $r eq '1';
}

# Stock for SKU-01..SKU-NN.
sub oms_setup_stock
{
	my ($node, $db, $nskus, $on_hand) = @_;
	oms_sql($node, $db,
		"SELECT count(oms_set_stock(format('SKU-%s', lpad(i::text, 2, '0')), $on_hand))
		 FROM generate_series(1, $nskus) AS i");
	return;
}

# oms_create_orders(NODE, DB, COUNT, NSKUS, TAG): COUNT pending orders of 1
# to 3 lines of distinct SKUs (NSKUS >= 3, quantities 1..4), known from the
# order number, for customers "TAG-<i>".  Records the stock before anything
# is reserved in public.wt_stock_before, which invariants.sql reads.
sub oms_create_orders
{
	my ($node, $db, $count, $nskus, $tag) = @_;
	oms_sql($node, $db, qq{
		CREATE TABLE IF NOT EXISTS public.wt_stock_before AS SELECT sku, on_hand FROM oms.stock WITH NO DATA;
		TRUNCATE public.wt_stock_before;
		INSERT INTO public.wt_stock_before SELECT sku, on_hand FROM oms.stock;
		SELECT count(oms_create_order(
			'$tag-' || i,
			(SELECT jsonb_agg(jsonb_build_object(
						'sku', format('SKU-%s', lpad((((i + l) % $nskus) + 1)::text, 2, '0')),
						'quantity', (i + l) % 4 + 1,
						'unit_price', 100 * l + i % 50 + 1))
			 FROM generate_series(1, 1 + i % 3) AS l),
			'EUR'))
		FROM generate_series(1, $count) AS i});
	return;
}

# Writes one autocommit oms_pay_order call per pending order to FILE, so
# each payment is its own transaction and wakes the worker.
sub oms_pay_script
{
	my ($node, $db, $file) = @_;
	my $script = oms_sql($node, $db,
		"SELECT format('SELECT 1 FROM oms_pay_order(%L, %L);', id, 'test_ok')
		 FROM oms.orders WHERE status = 'pending' ORDER BY customer_id");
	PostgreSQL::Test::Utils::append_to_file($file, "$script\n");
	return;
}

# Running or compensating sagas.
sub oms_in_flight
{
	my ($node, $db) = @_;
	return oms_sql_quiet($node, $db,
		"SELECT count(*) FROM oms.sagas WHERE status IN ('running', 'compensating')");
}

# True when EXPECTED fulfilment sagas exist and none is in flight.
sub oms_sagas_done
{
	my ($node, $db, $expected) = @_;
	return oms_sql_true($node, $db,
		"SELECT count(*) = $expected AND count(*) FILTER (WHERE status IN ('running', 'compensating')) = 0
		 FROM oms.sagas WHERE kind = 'fulfilment'");
}

# oms_check_invariants(NODE, DB, EXPECTED, LABEL): runs
# test/process/invariants.sql, one test per check it prints.
sub oms_check_invariants
{
	my ($node, $db, $expected, $label) = @_;
	my ($stdout, $stderr);
	my $sql = PostgreSQL::Test::Utils::slurp_file(
		oms_root() . '/test/process/invariants.sql');
	my $rc = $node->psql($db, $sql,
		stdout       => \$stdout,
		stderr       => \$stderr,
		on_error_die => 0,
		extra_params => [ '-F', '|', '-v', "expected=$expected" ]);
	if ($rc != 0)
	{
		fail("$label: invariant query ran");
		diag($stderr);
		return;
	}
	foreach my $line (split /\n/, $stdout)
	{
		my ($name, $ok, $detail) = split /\|/, $line, 3;
		next unless defined $name && $name ne '';
		ok($ok eq 't', "$label: $name") or diag($detail // '');
	}
	return;
}

# The server log from byte OFFSET on.
sub oms_log_since
{
	my ($node, $offset) = @_;
	return PostgreSQL::Test::Utils::slurp_file($node->logfile, $offset // 0);
}

# WARNING/ERROR/FATAL/PANIC lines the given pids logged.
sub oms_log_errors_of
{
	my ($node, @pids) = @_;
	@pids = grep { defined && $_ ne '' } @pids;
	return '' unless @pids;
	my $pattern = join('|', map { "\\[$_\\]" } @pids);
	return join("\n",
		grep { /($pattern)/ && /(ERROR|FATAL|PANIC|WARNING):/ }
		  split /\n/, oms_log_since($node));
}

# The check that closes most worker tests: no oms worker logged an ERROR
# or PANIC, and no saga failed to advance.
sub oms_no_worker_errors
{
	my ($node) = @_;
	my @errors =
	  grep { /oms (saga )?worker: (ERROR|PANIC):|event=(saga_error|worker_batch_failed)/ }
	  split /\n/, oms_log_since($node);
	ok(!@errors, 'no oms worker logged an ERROR and no saga failed to advance')
	  or diag(join("\n", @errors[ 0 .. ($#errors < 19 ? $#errors : 19) ]));
	return;
}

1;
