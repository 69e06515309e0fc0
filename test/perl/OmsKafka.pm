# test/perl/OmsKafka.pm: the mock Kafka cluster (test/kafka/mockbroker, a
# librdkafka mock cluster speaking the real wire protocol) for TAP tests.
#
# Owns: starting the broker program with a control FIFO, reading its
# bootstrap address, sending it control commands and stopping it.  The
# program's commands are documented in test/kafka/README.md (down|up <id>,
# rtt, error, clear, create, leader, bootstrap, ping).
#
#   my $kafka = OmsKafka->start(brokers => 3, partitions => 4, topics => ['orders']);
#   $kafka->bootstrap;              # "127.0.0.1:40239,127.0.0.1:36419"
#   my ($ok, $reply) = $kafka->cmd('down 1');
#   $kafka->stop;                   # also when the object goes away
#
# test/tap.sh builds the program before the test starts (the test itself
# runs as an unprivileged user that cannot write into the repository).

package OmsKafka;

use strict;
use warnings FATAL => 'all';

use Carp;
use IPC::Run;
use POSIX qw(mkfifo);
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time usleep);

use OmsTest qw(oms_root);

my $seq = 0;

# OmsKafka->start(brokers => N, partitions => N, topics => [...],
# debug => 'contexts', props => ['prop=value', ...]).
sub start
{
	my ($class, %opt) = @_;
	my $bin = oms_root() . '/test/kafka/build/mockbroker';
	croak "$bin not built (test/kafka/build.sh)" unless -x $bin;
	my $dir = PostgreSQL::Test::Utils::tempdir('kafka');
	mkfifo("$dir/control", 0600) or croak "mkfifo: $!";

	my @cmd = ($bin, '--brokers', $opt{brokers} // 1,
		'--control', "$dir/control", '--exit-with-parent');
	push @cmd, '--partitions', $opt{partitions} if defined $opt{partitions};
	push @cmd, map { ('--topic', $_) } @{ $opt{topics} // [] };
	push @cmd, '--debug', $opt{debug} if defined $opt{debug};
	push @cmd, map { ('-X', $_) } @{ $opt{props} // [] };

	my $self = bless { dir => $dir }, $class;
	$self->{handle} =
	  IPC::Run::start(\@cmd, '<', '/dev/null', '>', "$dir/out", '2>', "$dir/log");

	my $deadline = time() + ($opt{timeout} // 15);
	while (time() < $deadline)
	{
		my ($first) = split /\n/, _slurp("$dir/out");
		if (defined $first && $first =~ /^BOOTSTRAP (\S+)$/)
		{
			$self->{bootstrap} = $1;
			return $self;
		}
		croak 'mockbroker exited during startup: ' . _slurp("$dir/log")
		  unless $self->{handle}->pumpable;
		usleep(50_000);
	}
	$self->stop;
	croak 'mockbroker printed no BOOTSTRAP line';
}

sub bootstrap { return $_[0]->{bootstrap}; }

# The program's output so far: its replies, then its log.
sub output
{
	my ($self) = @_;
	return _slurp("$self->{dir}/out") . _slurp("$self->{dir}/log");
}

# cmd(LINE): sends one control command and waits for its reply.  Returns
# (1, reply) on OK, (0, reply) on ERR; croaks when the broker is gone or
# does not answer within 10 s.
sub cmd
{
	my ($self, $line) = @_;
	croak 'one command per call, without "#"' if $line =~ /[\n#]/;
	my $tag = "c$$" . '_' . ++$seq;
	# Opening read-write never blocks, even if the program is gone.
	open(my $fifo, '+<', "$self->{dir}/control") or croak "control FIFO: $!";
	print $fifo "$line #$tag\n";
	close($fifo);

	my $deadline = time() + 10;
	while (time() < $deadline)
	{
		foreach my $reply (split /\n/, _slurp("$self->{dir}/out"))
		{
			next unless $reply =~ s/ #\Q$tag\E$//;
			return ($reply =~ /^OK/ ? 1 : 0, $reply);
		}
		croak "mockbroker is not running (command: $line)"
		  unless $self->{handle}->pumpable;
		usleep(20_000);
	}
	croak "no reply to '$line' after 10 s";
}

# Stops the program (SIGTERM, SIGKILL after 5 s).  Idempotent.
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

sub _slurp
{
	my ($file) = @_;
	open(my $fh, '<', $file) or return '';
	local $/;
	my $text = <$fh>;
	close($fh);
	return $text // '';
}

1;
