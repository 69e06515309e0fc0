# test/perl/OmsPayment.pm: the test payment service (test/payment/service.py)
# and what the TAP tests of the remote payment provider
# (oms.payment_provider = kafka) share on top of OmsTest and OmsKafka.
#
# Owns: starting and stopping the service and a topic reader
# (test/relay/consume.py), reading the service's event log, replies produced
# as a provider would (kcat), the readiness of the worker's reply consumer,
# a reply timeout that has reached the worker, the consumer group's
# committed offsets (test/payment/offsets.py), and small order/payment
# look-ups.
#
#   my $svc = OmsPayment->start(kafka => $kafka, log => "$dir/service.log",
#                               args => ['--delay-ms', 6000]);
#   $svc->count('decision', "payment=$id", 'cmd=charge');
#   $svc->stop;                     # also when the object goes away
#
# The service's log lines are "<event> key=value ..." (see service.py); the
# shell suites' test/payment/lib.sh does the same for test/demo.sh, the
# bench and the valgrind run.

package OmsPayment;

use strict;
use warnings FATAL => 'all';

use Carp;
use Exporter 'import';
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use OmsTest;

our @EXPORT = qw(
  pm_count pm_field pm_events pm_produce_reply pm_set_reply_timeout
  pm_inbox_ready pm_new_order pm_status_is pm_payment_id pm_corr
  pm_offsets pm_committed_all pm_topic_reader pm_caught_up
);

our $COMMANDS_TOPIC = 'oms.payment-commands';
our $REPLIES_TOPIC  = 'oms.payment-replies';
my $python = '/usr/bin/python3';

# ------------------------------------------------------------ the service

# OmsPayment->start(kafka => OmsKafka, log => FILE, args => [service.py
# options], max_seconds => N): starts the service, appending its event lines
# to FILE (its stderr to FILE.err), and waits (bounded, 60 s) until its
# consumer group has partitions (a new "ready" line).  Returns undef, with
# a diagnostic, if it died or never got ready.
sub start
{
	my ($class, %opt) = @_;
	my $log    = $opt{log} or croak 'log => FILE is required';
	my $before = pm_count($log, 'ready');
	my @cmd    = (
		$python, oms_root() . '/test/payment/service.py',
		'--bootstrap',      $opt{kafka}->bootstrap,
		'--commands-topic', $COMMANDS_TOPIC,
		'--replies-topic',  $REPLIES_TOPIC,
		'--log',            $log,
		'--max-seconds',    $opt{max_seconds} // 600,
		@{ $opt{args} // [] });
	my $self = bless { log => $log }, $class;
	$self->{handle} =
	  IPC::Run::start(\@cmd, '<', '/dev/null', '>', '/dev/null', '2>>', "$log.err");
	my $ready = oms_wait_until(
		60,
		sub {
			return 1 if pm_count($log, 'ready') > $before;
			die "exited\n" unless $self->{handle}->pumpable;
			return 0;
		});
	return $self if $ready;
	diag('payment service not ready after 60 s: ' . _tail("$log.err", 5));
	$self->stop;
	return;
}

sub log_file { return $_[0]->{log}; }

# Lines of the service's log for EVENT matching every FIELD=VALUE given.
sub count
{
	my ($self, @args) = @_;
	return pm_count($self->{log}, @args);
}

# The FIELD values of the service's EVENT lines matching FIELD=VALUE ...
sub field
{
	my ($self, @args) = @_;
	return pm_field($self->{log}, @args);
}

# SIGTERM, SIGKILL after 10 s.  Idempotent.
sub stop
{
	my ($self) = @_;
	my $h = delete $self->{handle} or return;
	$h->kill_kill(grace => 10);
	return;
}

sub DESTROY
{
	my ($self) = @_;
	local ($., $@, $!, $^E, $?);
	$self->stop;
	return;
}

# ------------------------------------------------------- the event log

# pm_events(LOG): the lines of a service log as [event, {field => value},
# [field=value tokens]], in order.
sub pm_events
{
	my ($log) = @_;
	my @events;
	foreach my $line (split /\n/, _slurp($log))
	{
		my ($event, @tokens) = split / /, $line;
		next unless defined $event && $event ne '';
		my %f = map { /^([^=]*)=(.*)$/ ? ($1 => $2) : ($_ => '') } @tokens;
		push @events, [ $event, \%f, \@tokens ];
	}
	return @events;
}

sub _matching
{
	my ($log, $event, @conds) = @_;
	return grep {
		my $e = $_;
		$e->[0] eq $event && !grep {
			my $c = $_;
			!grep { $_ eq $c } @{ $e->[2] }
		} @conds
	} pm_events($log);
}

# pm_count(LOG, EVENT, 'field=value' ...): how many EVENT lines match all.
sub pm_count
{
	return scalar(_matching(@_));
}

# pm_field(LOG, EVENT, FIELD, 'field=value' ...): the FIELD value of each
# matching EVENT line, in order.
sub pm_field
{
	my ($log, $event, $field, @conds) = @_;
	return map { exists $_->[1]{$field} ? ($_->[1]{$field}) : () }
	  _matching($log, $event, @conds);
}

# ------------------------------------------------------------- Kafka side

# pm_produce_reply(KAFKA, KEY, CE_ID, VALUE): a reply produced with kcat, as
# a provider would.  Returns (ok, kcat's output).
sub pm_produce_reply
{
	my ($kafka, $key, $ce_id, $value) = @_;
	my $out = '';
	my $ok  = eval {
		IPC::Run::run(
			[
				'kcat', '-P', '-b', $kafka->bootstrap, '-t', $REPLIES_TOPIC,
				'-k', $key, '-H', "ce_id=$ce_id", '-H', 'ce_type=oms.payment.reply',
				'-H', 'content-type=application/json', '-H', 'ce_specversion=1.0',
				'-H', 'ce_source=/oms-test/kcat'
			],
			'<', \"$value\n", '>&', \$out, IPC::Run::timeout(20));
	};
	return ($ok ? 1 : 0, $out . ($@ // ''));
}

# pm_offsets(KAFKA, GROUP): "<partition> <committed> <high watermark>" per
# partition of the replies topic (test/payment/offsets.py), or undef.
sub pm_offsets
{
	my ($kafka, $group) = @_;
	my ($out, $err) = ('', '');
	my $ok = eval {
		IPC::Run::run(
			[
				$python, oms_root() . '/test/payment/offsets.py',
				$kafka->bootstrap, $group, $REPLIES_TOPIC
			],
			'<', '/dev/null', '>', \$out, '2>', \$err, IPC::Run::timeout(30));
	};
	return $ok ? $out : undef;
}

# True when GROUP committed every reply on the replies topic (committed
# offset = high watermark on each partition).
sub pm_committed_all
{
	my ($kafka, $group) = @_;
	my $out = pm_offsets($kafka, $group);
	return 0 unless defined $out && $out ne '';
	foreach my $line (split /\n/, $out)
	{
		my (undef, $committed, $high) = split / /, $line;
		next if $committed == $high || ($committed == -1 && $high == 0);
		return 0;
	}
	return 1;
}

# pm_topic_reader(KAFKA, TOPIC, FILE): test/relay/consume.py appending every
# record of TOPIC to FILE (JSON lines as "kcat -C -J" prints them), from
# the beginning, through broker outages.  Returns an object with ->stop.
sub pm_topic_reader
{
	my ($kafka, $topic, $file) = @_;
	PostgreSQL::Test::Utils::append_to_file($file, '');
	my $h = IPC::Run::start(
		[ $python, oms_root() . '/test/relay/consume.py', $kafka->bootstrap, $topic, $file ],
		'<', '/dev/null', '>', '/dev/null', '2>', "$file.err");
	return bless { handle => $h }, 'OmsPayment::Reader';
}

# pm_caught_up(KAFKA, TOPIC, NPARTITIONS, FILE): true once FILE (of
# pm_topic_reader) holds the last record of every partition of TOPIC.
sub pm_caught_up
{
	my ($kafka, $topic, $n, $file) = @_;
	my $out = '';
	my $ok  = eval {
		IPC::Run::run(
			[
				'kcat', '-Q', '-b', $kafka->bootstrap,
				map { ('-t', "$topic:$_:-1") } 0 .. $n - 1
			],
			'<', '/dev/null', '>', \$out, '2>', '/dev/null', IPC::Run::timeout(10));
	};
	return 0 unless $ok;
	# "<topic> [<partition>] offset <high watermark>"
	my @lines = grep { / offset / } split /\n/, $out;
	return 0 unless @lines == $n;
	my $records = _slurp($file);
	foreach (@lines)
	{
		my ($part, $high) = /\[(\d+)\] offset (-?\d+)/ or return 0;
		next if $high <= 0;
		my $last = $high - 1;
		return 0 unless index($records, qq{"partition":$part,"offset":$last,}) >= 0;
	}
	return 1;
}

# pm_inbox_ready(NODE, DB, KAFKA, DEADLINE): true once the worker consumes
# the replies topic.  Produces a probe reply (ce_id probe-<n>, no correlation
# id) every 2 s until the inbox holds one (each probe leaves a 'reply' dead
# letter whose payload's message_id starts with "probe-": tests leave those
# out).
my $probes = 0;

sub pm_inbox_ready
{
	my ($node, $db, $kafka, $deadline) = @_;
	my $first = $probes + 1;
	my $next  = 0;
	return oms_wait_until(
		$deadline // 60,
		sub {
			return 1
			  if $probes >= $first
			  && oms_sql_true($node, $db,
				"SELECT EXISTS (SELECT FROM oms.inbox WHERE message_id IN
					(SELECT 'probe-' || i FROM generate_series($first, $probes) AS i))");
			if (time() >= $next)
			{
				$probes++;
				pm_produce_reply($kafka, 'probe', "probe-$probes", '{"probe": true}');
				$next = time() + 2;
			}
			return 0;
		});
}

# ------------------------------------------------------------ the database

# pm_set_reply_timeout(NODE, DB, VALUE): ALTER SYSTEM SET
# oms.payment_reply_timeout and reload, then waits (bounded) until DB's
# worker has looped twice after the reload, so it uses the new value: the
# postmaster signals the workers before a new session can see the new value,
# and the worker reloads at the top of its next loop.
sub pm_set_reply_timeout
{
	my ($node, $db, $value) = @_;
	oms_set_sighup($node, 'oms.payment_reply_timeout', $value);
	oms_wait_until(30,
		sub { oms_sql_true($node, $db, "SELECT current_setting('oms.payment_reply_timeout') = '$value'") })
	  or return 0;
	my $loops = oms_worker_status($node, $db, 'loops');
	return 0 unless defined $loops && $loops ne '';
	return oms_wait_until(
		30,
		sub {
			# Wakes the worker (at commit), so this does not wait for the naptime.
			oms_sql_quiet($node, $db, 'SELECT oms._notify_worker()');
			my $now = oms_worker_status($node, $db, 'loops');
			return defined $now && $now ne '' && $now >= $loops + 2;
		});
}

# pm_new_order(NODE, DB, CUSTOMER, QUANTITY): the new order's id (one line
# of SKU-01 at 12.50 each).
sub pm_new_order
{
	my ($node, $db, $customer, $quantity) = @_;
	$quantity //= 2;
	return oms_sql($node, $db,
		qq{SELECT oms_create_order('$customer',
			'[{"sku": "SKU-01", "quantity": $quantity, "unit_price": 1250}]', 'USD') ->> 'order_id'});
}

sub pm_status_is
{
	my ($node, $db, $order, $status) = @_;
	return oms_sql_true($node, $db, "SELECT status = '$status' FROM oms.orders WHERE id = '$order'");
}

sub pm_payment_id
{
	my ($node, $db, $order) = @_;
	return oms_sql_quiet($node, $db, "SELECT id FROM oms.payments WHERE order_id = '$order'") // '';
}

# pm_corr(NODE, DB, ORDER, COMMAND): the correlation ids of the order's
# commands of that kind, oldest first.
sub pm_corr
{
	my ($node, $db, $order, $command) = @_;
	my $out = oms_sql_quiet($node, $db,
		"SELECT correlation_id FROM oms.payment_commands
		 WHERE order_id = '$order' AND command = '$command' ORDER BY sent_at, correlation_id") // '';
	return split /\n/, $out;
}

# ---------------------------------------------------------------- helpers

sub _slurp
{
	my ($file) = @_;
	open(my $fh, '<', $file) or return '';
	local $/;
	my $text = <$fh>;
	close($fh);
	return $text // '';
}

sub _tail
{
	my ($file, $n) = @_;
	my @lines = split /\n/, _slurp($file);
	return join("\n", @lines > $n ? @lines[ -$n .. -1 ] : @lines);
}

# A topic reader (pm_topic_reader): stopped with SIGTERM like the service.
package OmsPayment::Reader;

sub stop
{
	my ($self) = @_;
	my $h = delete $self->{handle} or return;
	$h->kill_kill(grace => 10);
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
