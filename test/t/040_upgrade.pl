# test/t/040_upgrade.pl: ALTER EXTENSION oms UPDATE gives the catalog of a
# fresh install and loses nothing, while the worker runs.
#
# The versions: the frozen full scripts (src/sql/versions/oms--X.sql) and
# the chain of upgrade scripts (oms--A--B.sql) from the oldest of them to
# oms.control's default_version, found from the file names, so a new
# release only adds files (and a checksum below once it is released).
# Nothing here names an object of the extension: whatever the current
# scripts produce is compared.
#
#   scripts   every released script is byte-identical to what shipped
#             (%released_sha256); the upgrade scripts form one chain from the
#             oldest frozen version to default_version, none left over; make
#             install installed every script.
#   catalog   for each frozen version V: CREATE EXTENSION oms VERSION 'V',
#             then ALTER EXTENSION oms UPDATE TO each next version in turn
#             (every script runs); test/upgrade/catalog.sql then describes
#             the same catalog as a fresh CREATE EXTENSION oms (diff shown).
#   data      a database the worker serves gets the oldest version and
#             test/upgrade/fill.sql: orders in every status, sagas in flight
#             (not started, retrying, waiting for an answer, cancel requested,
#             compensating, refunds) and every event still in the outbox.
#             The worker's library is newer than the SQL, so it waits
#             (oms_worker_status().last_error, event=worker_waiting_for_update)
#             and moves nothing over several of its loops.  Then, with the
#             worker running, one transaction snapshots every table and
#             sequence of the extension (test/upgrade/snapshot.sql), runs
#             ALTER EXTENSION oms UPDATE and snapshots again: same rows, except
#             the data changes @data_changes lists.  The catalog equals a
#             fresh install's here too.  Every order reads through the
#             API, its new status dimensions and line ledger mapped from
#             what the old version recorded (test/upgrade/statuses.sql).
#   after     the worker takes over: every saga finishes as its payment
#             method and cancel say, the outbox empties, and kcat, reading
#             the topic on its own, finds every event of every order (those
#             pending at the update and those made since), in order per order
#             (test/upgrade/delivery.sql).
# Durations are diagnostics, never asserted.
use strict;
use warnings FATAL => 'all';

use Digest::SHA;
use File::Compare qw(compare);
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use OmsKafka;
use OmsScript;
use OmsTest;

my $root         = oms_root();
my $versions_dir = "$root/src/sql/versions";
my $upgrade_dir  = "$root/test/upgrade";
my $db           = 'upgrade_data';
my $topic        = 'oms.order-events';
my $t0           = time();

# sha256 of every released script.  Released scripts are never edited: a fix
# goes into the next upgrade script.  When a version is released, add its
# full script (frozen into src/sql/versions) and the upgrade script to it.
my %released_sha256 = (
	'oms--0.1.0.sql' => '94bbeb7aef7c624fff208c07ef7c0f35c5fd1190fd603fdbbde9fb83ed9c4ac7',
	'oms--0.1.0--0.2.0.sql' =>
	  '856cb9e862af3eff5c4f7dcb421c4df56f9a078d60989d4820e4c8af03112bba',
	'oms--0.2.0--0.3.0.sql' =>
	  'e783cf7c6168817d5b23e46ef3e900564700623d70d54fc9ab22a629d6e9d1d0',
);

# Data the upgrade scripts change on purpose, left out of the row comparison:
# "schema.table" or "schema.table.column", each with a comment naming the
# script and what it does to the rows; the script itself must say it too.
# For example (an UPDATE of oms.orders also sets updated_at, by trigger):
#	'oms.orders.metadata',		# oms--0.2.0--0.3.0.sql moves metadata.channel into its own column
#	'oms.orders.updated_at',	# set by that UPDATE
# Columns an update adds are not compared (the catalog test covers them).
my @data_changes = (
	# none yet
);

# ------------------------------------------------------------ the versions
sub version_cmp
{
	my ($x, $y) = @_;
	my @x = split /\./, $x;
	my @y = split /\./, $y;
	while (@x || @y)
	{
		my $c = (shift(@x) // 0) <=> (shift(@y) // 0);
		return $c if $c;
	}
	return 0;
}

sub default_version
{
	my ($v) = PostgreSQL::Test::Utils::slurp_file("$root/oms.control") =~
	  /^default_version = '(.*)'$/m;
	return $v;
}

# Versions with a frozen full script, oldest first.
sub frozen_versions
{
	my @versions = sort { version_cmp($a, $b) }
	  map { m{/oms--([^/]+)\.sql$} && $1 !~ /--/ ? ($1) : () }
	  glob("$versions_dir/oms--*.sql");
	return @versions;
}

sub upgrade_scripts
{
	return map { m{/(oms--[^/]+--[^/]+\.sql)$} ? ($1) : () } glob("$versions_dir/oms--*--*.sql");
}

# The versions from the oldest frozen one to default_version, one upgrade
# script per step; dies with the reason when there is no such chain.
sub walk_chain
{
	my $to    = default_version();
	my @chain = ((frozen_versions())[0]);
	while ($chain[-1] ne $to)
	{
		my $from = $chain[-1];
		my @next = map { /^oms--\Q$from\E--(.*)\.sql$/ ? ($1) : () } upgrade_scripts();
		die "from $from: upgrade scripts to '" . join(', ', @next) . "', need exactly one\n"
		  if @next != 1;
		die "no end after 100 steps: @chain\n" if @chain > 100;
		push @chain, $next[0];
	}
	return @chain;
}

# "ALTER EXTENSION oms UPDATE TO 'X';" per step of CHAIN after FROM.
sub update_steps
{
	my ($from, @chain) = @_;
	my ($i) = grep { $chain[$_] eq $from } 0 .. $#chain;
	return map { "ALTER EXTENSION oms UPDATE TO '$_';" } @chain[ $i + 1 .. $#chain ];
}

my @bad;
foreach my $name (sort keys %released_sha256)
{
	my $file = "$versions_dir/$name";
	my $sum  = -e $file ? Digest::SHA->new(256)->addfile($file)->hexdigest : '(file missing)';
	push @bad, "$name: sha256 $sum, released $released_sha256{$name}"
	  if $sum ne $released_sha256{$name};
}
ok(!@bad, 'released scripts are unchanged (' . join(' ', sort keys %released_sha256) . ')')
  or diag(join("\n", @bad));

my $pg_config = $ENV{PG_CONFIG} // 'pg_config';
my $sharedir  = `$pg_config --sharedir` // '';
chomp $sharedir;
$sharedir .= '/extension';
my @missing =
  map { my ($base) = m{([^/]+)$}; compare($_, "$sharedir/$base") == 0 ? () : ("$_ is not installed as $sharedir/$base") }
  (glob("$versions_dir/oms--*.sql"), "$root/oms--" . default_version() . '.sql', "$root/oms.control");
ok(!@missing, "make install installed every script (in $sharedir)") or diag(join("\n", @missing));

my @chain = eval { walk_chain() };
if (!@chain)
{
	fail('upgrade scripts lead from ' . (frozen_versions())[0] . ' to default_version ' . default_version());
	diag($@);
	done_testing();
	exit;
}
is(scalar(upgrade_scripts()), @chain - 1,
	"upgrade scripts lead from $chain[0] to default_version $chain[-1]: @chain, none left over")
  or diag(join("\n", upgrade_scripts()));
if (@chain < 2)
{
	diag('default_version is the oldest frozen version: nothing to update');
	done_testing();
	exit;
}

# ------------------------------------------------------------------ nodes
my $kafka = OmsKafka->start(topics => [$topic], partitions => 3);
# Short retry and timeout: fill.sql leaves sagas waiting on both.
my $node = oms_node(
	'upgrade',
	"oms.database_name = '$db'",
	"oms.kafka_brokers = '" . $kafka->bootstrap . "'",
	"oms.retry_base = '3s'",
	"oms.step_timeout = '5s'");
diag("versions: @chain; mock Kafka: " . $kafka->bootstrap);

sub installed_version
{
	my ($dbname) = @_;
	return oms_sql_quiet($node, $dbname, "SELECT extversion FROM pg_extension WHERE extname = 'oms'")
	  // '';
}

# ---------------------------------------------------------------- catalog
sub catalog_of
{
	my ($dbname) = @_;
	my ($rc, $out, $err) = oms_psql_file($node, $dbname, "$upgrade_dir/catalog.sql");
	die "catalog.sql in $dbname failed: $err" if $rc;
	return "$out\n";
}

my %catalog;

# check_same_catalog(LABEL, CATALOG): compares CATALOG with the fresh install's.
sub check_same_catalog
{
	my ($label, $text) = @_;
	my $lines = () = $text =~ /\n/g;
	my $diff = oms_diff($catalog{fresh}, $text, 'catalog-fresh.txt', 'catalog-updated.txt');
	ok($diff eq '', "$label: the catalog equals a fresh install's ($lines lines compared)")
	  or diag($diff);
	return;
}

# The updated databases first: roles belong to the cluster, and a fresh
# install first would create a role an upgrade script forgot.
foreach my $v (@chain[ 0 .. $#chain - 1 ])
{
	next unless -e "$versions_dir/oms--$v.sql";
	(my $dbname = "upgrade_from_$v") =~ s/[^0-9a-zA-Z_]/_/g;
	my @steps = update_steps($v, @chain);
	$node->safe_psql('postgres', "CREATE DATABASE $dbname");
	my ($rc, $stdout, $stderr) =
	  $node->psql($dbname, join("\n", "CREATE EXTENSION oms VERSION '$v';", @steps));
	if ($rc != 0)
	{
		fail("CREATE EXTENSION oms VERSION '$v', then ALTER EXTENSION oms UPDATE TO each next version");
		diag($stderr);
		next;
	}
	my $to = join(' ', map { /'(.*)'/ } @steps);
	is(installed_version($dbname), default_version(),
		"CREATE EXTENSION oms VERSION '$v', then UPDATE TO $to");
	$catalog{$v} = catalog_of($dbname);
}
oms_fresh_db($node, 'upgrade_fresh');
$catalog{fresh} = catalog_of('upgrade_fresh');
foreach my $v (@chain[ 0 .. $#chain - 1 ])
{
	check_same_catalog("updated from $v", $catalog{$v}) if exists $catalog{$v};
}

# ------------------------------------------------------------------- data
sub worker_status
{
	my ($column) = @_;
	return oms_worker_status($node, $db, $column) // '';
}

# Orders whose status is not the one public.upgrade_expect gives (COLUMN: before or after).
sub wrong_statuses
{
	my ($column) = @_;
	return oms_sql($node, $db,
		"SELECT string_agg(format('%s: %s, expected %s', e.customer_id,
				coalesce(o.status::text, 'missing'), e.$column), '; ')
		 FROM public.upgrade_expect AS e LEFT JOIN oms.orders AS o USING (customer_id)
		 WHERE o.status IS DISTINCT FROM e.$column\::oms.order_status");
}

sub snapshot_diff
{
	my ($before, $after) = @_;
	return oms_sql($node, $db,
		"SELECT relation || ': ' || difference FROM public.upgrade_snapshot_diff('$before', '$after')");
}

sub sagas_summary
{
	return oms_sql_quiet($node, $db,
		"SELECT o.customer_id, o.status, s.kind, s.status, s.step_no, s.next_run_at
		 FROM oms.orders AS o JOIN oms.sagas AS s ON s.order_id = o.id ORDER BY 1, 3") // '';
}

sub in_flight { return oms_in_flight($node, $db) // ''; }

sub fill_database
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION oms VERSION '$chain[0]'");
	my $name = 'the worker (library ' . default_version() . ") waits while $db has oms $chain[0]";
	if (!oms_wait_until(60,
			sub { worker_status('last_error') =~ /^waiting for ALTER EXTENSION oms UPDATE/ }))
	{
		fail($name);
		diag('oms_worker_status(): '
			  . (oms_sql_quiet($node, $db, 'SELECT * FROM oms_worker_status()') // ''));
		return 0;
	}
	pass($name);
	diag(worker_status('last_error'));
	my $log = oms_log_since($node);
	like($log,
		qr/event=worker_waiting_for_update database=\Q$db\E installed_version=\Q$chain[0]\E/,
		"the server log has event=worker_waiting_for_update for $db");

	my ($rc, $out, $err) = oms_psql_file($node, $db, "$upgrade_dir/fill.sql");
	if ($rc != 0)
	{
		fail("fill.sql made orders with the $chain[0] API");
		diag($err);
		return 0;
	}
	my $wrong        = wrong_statuses('before');
	my $statuses     = oms_sql($node, $db, 'SELECT count(DISTINCT status) FROM oms.orders');
	my $all_statuses = oms_sql($node, $db, 'SELECT cardinality(enum_range(NULL::oms.order_status))');
	my $pending      = oms_sql($node, $db, 'SELECT count(*) FROM oms.outbox');
	# One saga in flight per order that has still to change its status.
	my $expected = oms_sql($node, $db, 'SELECT count(*) FROM public.upgrade_expect WHERE before <> after');
	my $kinds    = oms_sql($node, $db,
		"SELECT string_agg(DISTINCT kind || ' ' || status, ', ') FROM oms.sagas
		 WHERE status IN ('running', 'compensating')");
	my $n = in_flight();
	ok($wrong eq '' && $statuses eq $all_statuses && $n eq $expected && $pending > 0,
		"filled: every status ($statuses of $all_statuses), $n sagas in flight ($kinds), $pending events in the outbox"
	) or diag("$wrong\nexpected $expected sagas in flight\n" . sagas_summary());
	return 1;
}

# Nothing may move while the SQL is older than the library: not a saga,
# not an outbox row.  Counted in worker loops, not in seconds.
sub check_worker_idle
{
	my ($rc, $out, $err) = oms_psql_file($node, $db, "$upgrade_dir/snapshot.sql");
	die "snapshot.sql failed: $err" if $rc;
	oms_sql($node, $db, "SELECT public.upgrade_snapshot('filled')");
	my $loops = worker_status('loops');
	if (!oms_wait_until(60, sub { my $l = worker_status('loops'); $l ne '' && $l > $loops + 3 }))
	{
		fail('the worker loops while it waits');
		diag("loops $loops -> " . worker_status('loops'));
		return;
	}
	oms_sql($node, $db, "SELECT public.upgrade_snapshot('waited')");
	my $diff = snapshot_diff('filled', 'waited');
	ok($diff eq '',
		'nothing moved over ' . (worker_status('loops') - $loops) . " worker loops while $db had oms $chain[0]")
	  or diag($diff);
	return;
}

my $log_at_update;

# The update itself, with the worker running: the snapshots before and after
# it in the same transaction, so nothing else can come between them.
sub update_under_worker
{
	my $exclude = '{' . join(',', @data_changes) . '}';
	oms_sql($node, $db,
		'CREATE TABLE public.upgrade_pending AS SELECT id, aggregateid, seq, type FROM oms.outbox');
	$log_at_update = -s $node->logfile;
	my $t = time();
	my ($rc, $stdout, $stderr) = $node->psql(
		$db, q{
			BEGIN;
			SELECT public.upgrade_snapshot('before', NULL, :'exclude');
			ALTER EXTENSION oms UPDATE;
			SELECT public.upgrade_snapshot('after', 'before', :'exclude');
			COMMIT;
		},
		extra_params => [ '-v', "exclude=$exclude" ]);
	if ($rc != 0)
	{
		fail('ALTER EXTENSION oms UPDATE with the worker running');
		diag($stderr);
		return 0;
	}
	is(installed_version($db), default_version(),
		"ALTER EXTENSION oms UPDATE with the worker running: $chain[0] -> " . default_version());
	diag(sprintf('the update took %.2f s', time() - $t));
	my @diff = split /\n/, snapshot_diff('before', 'after');
	my @lost = grep { !/: only after/ } @diff;
	my @new  = grep { /: only after/ } @diff;
	my $summary = oms_sql($node, $db,
		"SELECT format('%s tables and sequences, %s rows', count(*), sum(row_count))
		 FROM public.upgrade_snapshot WHERE label = 'before'");
	ok(!@lost,
		"no row lost or changed by the update ($summary"
		  . (@data_changes ? "; leaving out @data_changes" : '') . ')')
	  or diag(join("\n", @lost));
	diag('tables the update created: ' . join(', ', @new)) if @new;
	check_same_catalog("$db, updated with data under the worker", catalog_of($db));
	my $orders = oms_sql($node, $db, 'SELECT count(*) FROM oms.orders');
	my $wrong = $node->safe_psql($db, PostgreSQL::Test::Utils::slurp_file("$upgrade_dir/statuses.sql"));
	ok($wrong eq '', "every order ($orders) reads through the API with its statuses mapped (test/upgrade/statuses.sql)")
	  or diag($wrong);
	return 1;
}

# ------------------------------------------------------------------ after
sub check_after_update
{
	my $t = time();
	if (oms_wait_until(120, sub { in_flight() eq '0' }))
	{
		pass('the worker finished every saga in flight');
		diag(sprintf('%.2f s after the update', time() - $t));
	}
	else
	{
		fail('the worker finished every saga in flight');
		diag(sagas_summary());
	}
	my $wrong = wrong_statuses('after');
	ok($wrong eq '', 'every order ended as its payment method and cancel say')
	  or diag("$wrong\n" . sagas_summary());
	my $pending = oms_sql($node, $db, 'SELECT count(*) FROM public.upgrade_pending');
	ok( oms_wait_until(60,
			sub { oms_sql_true($node, $db, 'SELECT NOT EXISTS (SELECT FROM oms.outbox)') }),
		"the relay emptied the outbox ($pending events were pending at the update)")
	  or diag(oms_sql_quiet($node, $db, 'SELECT oms_relay_status()') // '');
	my @errors =
	  grep {
		/oms (saga )?worker: (ERROR|FATAL|PANIC):|event=(worker_xact_failed|worker_batch_failed|relay_batch_failed|saga_error)/
	  }
	  split /\n/, oms_log_since($node, $log_at_update);
	ok(!@errors, 'no worker error in the server log since the update')
	  or diag(join("\n", @errors[ 0 .. ($#errors < 9 ? $#errors : 9) ]));
	return;
}

sub check_delivery
{
	# The outbox is empty, so Kafka acknowledged everything: one pass of kcat
	# to the end of every partition reads it all.
	my ($consumed, $kcat_err) = ('', '');
	IPC::Run::run(
		[ 'kcat', '-C', '-b', $kafka->bootstrap, '-t', $topic, '-o', 'beginning', '-e', '-J', '-q' ],
		'<', \undef, '>', \$consumed, '2>', \$kcat_err, IPC::Run::timeout(60));
	my $rc      = $? >> 8;
	my $records = () = $consumed =~ /\n/g;
	ok($rc == 0, "kcat read the topic to its end ($records records)") or diag($kcat_err);
	my ($prc, $out, $err) = oms_psql_file($node, $db, "$upgrade_dir/delivery.sql",
		stdin => $consumed, extra => [ '-F', '|' ]);
	if ($prc != 0)
	{
		fail('the delivery checks ran');
		diag($err);
		return;
	}
	foreach my $line (split /\n/, $out)
	{
		my ($name, $ok, $detail) = split /\|/, $line, 3;
		next unless defined $name && $name ne '';
		ok($ok eq 't', "kafka: $name") or diag($detail // '');
	}
	return;
}

if (fill_database())
{
	check_worker_idle();
	if (update_under_worker())
	{
		check_after_update();
		check_delivery();
	}
}

$node->stop;
$kafka->stop;
diag(sprintf('test took %.2f s', time() - $t0));
done_testing();
