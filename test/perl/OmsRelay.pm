# test/perl/OmsRelay.pm: what the outbox relay's TAP tests (test/t/02*.pl:
# relay_e2e, relay_faults, tracing_e2e, kafka_secrets) share on top of
# OmsTest and OmsKafka.
#
# How a relay test knows what should be on the topic: the relay deletes an
# outbox row once Kafka acknowledged it, so relay_capture adds a test
# trigger (test/relay/capture.sql) that copies every outbox insert to
# public.rl_produced; relay_export writes those rows, the order timeline's
# status changes and the dead-lettered ids of one scenario (orders whose
# customer_id starts with a prefix) as files; relay_analyse compares them
# with the consumed records (test/relay/analyse.py) and turns each check it
# prints into a test.
#
# Owns also: a consumer that outlives broker outages (test/relay/consume.py),
# one-shot kcat runs, the relay's status, psql scripts run as one client
# would, and keeping a test's work files in its log directory when it failed.

package OmsRelay;

use strict;
use warnings FATAL => 'all';

use Exporter 'import';
use IPC::Run;
use PostgreSQL::Test::RecursiveCopy;
use PostgreSQL::Test::Utils;
use Test::More;

use OmsTest;

our @EXPORT = qw(
  relay_python relay_capture relay_status relay_outbox_empty relay_wait_worker
  relay_run_script relay_kcat relay_consumer_start relay_caught_up
  relay_export relay_analyse relay_tap_lines relay_workdir relay_keep_workdir
  relay_log_size relay_head relay_tail
);

# Debian's interpreter: the helpers need its confluent_kafka and jsonschema.
sub relay_python { return '/usr/bin/python3'; }

sub _relay_dir { return oms_root() . '/test/relay'; }

# relay_capture(NODE, DB): installs the capture trigger (capture.sql).
sub relay_capture
{
	my ($node, $db) = @_;
	my $sql = slurp_file(_relay_dir() . '/capture.sql');
	$node->safe_psql($db, "SET client_min_messages = warning;\n$sql");
	return;
}

# One field of oms_relay_status() as text, or undef when the query failed
# (the server may be restarting).
sub relay_status
{
	my ($node, $db, $key) = @_;
	return oms_sql_quiet($node, $db, "SELECT oms_relay_status() ->> '$key'");
}

# True when nothing is left to publish.
sub relay_outbox_empty
{
	my ($node, $db) = @_;
	return oms_sql_true($node, $db, 'SELECT NOT EXISTS (SELECT FROM oms.outbox)');
}

# relay_wait_worker(NODE, DB): the pid of the worker serving DB once it
# runs (60 s at most); bails out when none comes, since nothing after could
# be judged.
sub relay_wait_worker
{
	my ($node, $db) = @_;
	oms_wait_until(60, sub { oms_worker_pid($node, $db) ne '' })
	  or BAIL_OUT("no oms worker serves $db:\n" . relay_tail(20, oms_log_since($node)));
	return oms_worker_pid($node, $db);
}

# relay_run_script(NODE, DB, SQL): runs a psql script (one transaction per
# statement, as a client issuing them one by one) and stops at the first
# error.  Returns (exit status, its stderr).
sub relay_run_script
{
	my ($node, $db, $sql) = @_;
	my ($stdout, $stderr) = ('', '');
	my $rc = $node->psql($db, $sql,
		stdout        => \$stdout,
		stderr        => \$stderr,
		on_error_stop => 1);
	return ($rc, $stderr);
}

# relay_kcat(ARGS, OUTFILE, SECONDS): runs kcat ARGS with its output in
# OUTFILE, killed after SECONDS.  Returns (exit status, its stderr); a
# timeout is status 124, as timeout(1) reports it.
sub relay_kcat
{
	my ($args, $outfile, $seconds) = @_;
	my $stderr = '';
	my $rc;
	my $ok = eval {
		IPC::Run::run([ 'kcat', @$args ], '<', \undef, '>', $outfile, '2>', \$stderr,
			IPC::Run::timeout($seconds));
		$rc = $? >> 8;
		1;
	};
	$rc = 124 unless $ok;
	return ($rc, $stderr);
}

# relay_consumer_start(BOOTSTRAP, TOPIC, FILE): a background consumer
# (consume.py) appending every record of TOPIC to FILE, from the
# beginning, through broker outages; its errors go to FILE.err.  Returns an
# object whose ->stop (also when it goes away) ends it.
sub relay_consumer_start
{
	my ($bootstrap, $topic, $file) = @_;
	append_to_file($file, '');
	my $h = IPC::Run::start(
		[ relay_python(), _relay_dir() . '/consume.py', $bootstrap, $topic, $file ],
		'<', \undef, '>', '/dev/null', '2>', "$file.err");
	return bless { handle => $h, file => $file }, 'OmsRelay::Consumer';
}

# relay_caught_up(BOOTSTRAP, TOPIC, NPARTITIONS, FILE): true once FILE holds
# the last record (high watermark - 1) of every partition of TOPIC.
sub relay_caught_up
{
	my ($bootstrap, $topic, $n, $file) = @_;
	my $q = '';
	my ($rc) = relay_kcat([ '-Q', '-b', $bootstrap, map { ('-t', "$topic:$_:-1") } 0 .. $n - 1 ],
		\$q, 10);
	return 0 if $rc != 0;
	# "<topic> [<partition>] offset <high watermark>"
	my @marks = $q =~ /\[(\d+)\] offset (\d+)/g;
	return 0 if @marks != 2 * $n;
	my $consumed = slurp_file($file);
	while (my ($part, $high) = splice(@marks, 0, 2))
	{
		next if $high == 0;
		return 0
		  if index($consumed, qq{"partition":$part,"offset":} . ($high - 1) . ',') < 0;
	}
	return 1;
}

# relay_export(NODE, DB, PREFIX, DIR): the scenario's expected events
# (orders whose customer_id starts with PREFIX) as DIR/produced.json,
# DIR/timeline.json, DIR/undelivered.ids (open publish dead letters) and
# DIR/late.ids (publish dead letters replayed).
sub relay_export
{
	my ($node, $db, $prefix, $dir) = @_;
	mkdir $dir;
	my %files = (
		'produced.json' => qq{
			SELECT json_build_object('id', p.id, 'order_id', p.aggregateid, 'seq', p.seq, 'type', p.type,
					'payload', p.payload,
					'ce_time', to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
			FROM public.rl_produced AS p JOIN oms.orders AS o ON o.id = p.aggregateid
			WHERE o.customer_id LIKE '$prefix%'},
		'timeline.json' => qq{
			SELECT json_build_object('order_id', e.order_id, 'type', e.event_type,
					'seq', row_number() OVER (PARTITION BY e.order_id ORDER BY e.seq))
			FROM oms.order_events AS e JOIN oms.orders AS o ON o.id = e.order_id
			WHERE e.to_status IS NOT NULL AND o.customer_id LIKE '$prefix%'},
		'undelivered.ids' => qq{
			SELECT d.payload ->> 'id' FROM oms.dead_letters AS d JOIN oms.orders AS o ON o.id = d.order_id
			WHERE d.kind = 'publish' AND d.status = 'open' AND o.customer_id LIKE '$prefix%'},
		'late.ids' => qq{
			SELECT d.payload ->> 'id' FROM oms.dead_letters AS d JOIN oms.orders AS o ON o.id = d.order_id
			WHERE d.kind = 'publish' AND d.status = 'replayed' AND o.customer_id LIKE '$prefix%'});
	foreach my $name (sort keys %files)
	{
		my $rows = $node->safe_psql($db, $files{$name});
		PostgreSQL::Test::Utils::append_to_file("$dir/$name", $rows eq '' ? '' : "$rows\n");
	}
	return;
}

# relay_analyse(label => L, dir => D, consumed => FILE, topic => T,
# source_db => DB, max_duplicates => N, validate => 0|1, all_types => 0|1):
# runs analyse.py on a relay_export directory and the consumed records, one
# test per check it prints; with validate also pipes the first delivery of
# each event through test/events/validate.py (every order.* type required
# with all_types).  Returns the number of duplicate deliveries.
sub relay_analyse
{
	my (%a) = @_;
	my ($label, $dir) = @a{qw(label dir)};
	my $out = '';
	my @cmd = (
		relay_python(),               _relay_dir() . '/analyse.py',
		'--label',                    $label,
		'--consumed',                 $a{consumed},
		'--produced',                 "$dir/produced.json",
		'--timeline',                 "$dir/timeline.json",
		'--undelivered',              "$dir/undelivered.ids",
		'--late',                     "$dir/late.ids",
		'--topic',                    $a{topic},
		'--source',                   "/oms/$a{source_db}",
		'--max-duplicates',           $a{max_duplicates},
		'--validator-input',          "$dir/validate.json",
		'--stats',                    "$dir/stats");
	IPC::Run::run(\@cmd, '<', \undef, '>&', \$out);
	relay_tap_lines('', $out, $? >> 8, "$label: analyse.py");
	my ($duplicates) = (-e "$dir/stats" ? slurp_file("$dir/stats") : '') =~ /^\d+ (\d+)/;

	if ($a{validate})
	{
		my @extra = $a{all_types} ? ('--require-all-types', '--require-prefix', 'order.') : ();
		$out = '';
		IPC::Run::run([ relay_python(), oms_root() . '/test/events/validate.py', @extra ],
			'<', "$dir/validate.json", '>&', \$out);
		relay_tap_lines("$label: payload schema: ", $out, $? >> 8, "$label: validate.py");
	}
	return $duplicates // '?';
}

# relay_tap_lines(PREFIX, OUTPUT, STATUS, WHAT): one test per "ok - NAME" /
# "not ok - NAME" line a helper program printed (named PREFIX NAME), its
# "# " lines as diagnostics.  A failing exit status without a failed line,
# or no line at all, is a failure of WHAT itself.
sub relay_tap_lines
{
	my ($prefix, $output, $status, $what) = @_;
	my ($tests, $failed) = (0, 0);
	foreach my $line (split /\n/, $output)
	{
		if ($line =~ /^(not ok|ok) - (.*)$/)
		{
			$tests++;
			$failed++ if $1 ne 'ok';
			ok($1 eq 'ok', "$prefix$2");
		}
		elsif ($line =~ /^# ?(.*)$/)
		{
			diag($1);
		}
		elsif ($line ne '')
		{
			diag("$what: $line");
		}
	}
	fail("$what checked something") if $tests == 0;
	fail("$what exited with status $status") if $status != 0 && $failed == 0 && $tests > 0;
	return;
}

# relay_workdir(): a directory for a test's work files (scripts, consumed
# records, analysis inputs); relay_keep_workdir(DIR, NAME) copies it to
# the test's log directory (log/tap/<test>/NAME) when a test failed.
sub relay_workdir
{
	return PostgreSQL::Test::Utils::tempdir('work');
}

sub relay_keep_workdir
{
	my ($dir, $name) = @_;
	return if Test::More->builder->is_passing;
	PostgreSQL::Test::RecursiveCopy::copypath($dir,
		"$PostgreSQL::Test::Utils::log_path/$name");
	diag("work files kept in log/tap/.../$name");
	return;
}

# The server log's size in bytes: an offset for oms_log_since.
sub relay_log_size
{
	my ($node) = @_;
	return -s $node->logfile // 0;
}

# relay_head(N, LINES) and relay_tail(N, LINES): the first or last N of
# LINES (each may hold several lines of text), joined for a diagnostic.
sub relay_head
{
	my ($n, @lines) = @_;
	@lines = map { split /\n/ } @lines;
	splice(@lines, $n) if @lines > $n;
	return join("\n", @lines);
}

sub relay_tail
{
	my ($n, @lines) = @_;
	@lines = map { split /\n/ } @lines;
	splice(@lines, 0, @lines - $n) if @lines > $n;
	return join("\n", @lines);
}

package OmsRelay::Consumer;

sub stop
{
	my ($self) = @_;
	my $h = delete $self->{handle} or return;
	$h->signal('TERM') if $h->pumpable;
	eval { $h->finish; 1 } or $h->kill_kill(grace => 5);
	return;
}

sub DESTROY
{
	my ($self) = @_;
	local ($., $@, $!, $^E, $?);
	$self->stop;
	return;
}

1;
