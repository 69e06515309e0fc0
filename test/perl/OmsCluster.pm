# test/perl/OmsCluster.pm: a sharded oms cluster for TAP tests.
#
# Owns: N shard nodes (each its own PostgreSQL cluster, so one can be
# killed alone), each serving database "oms" with its worker, extension
# oms_shard, oms_configure_shard and the PL/Proxy cluster oms_cluster that
# maps every partition to its shard's node; and the small lookups a test
# needs (which shard owns a key, a SKU; a key or SKU homed on a shard).
# Partition p is served by shard p % N, as test/cluster.sh and the demo do.
#
#   my $c = OmsCluster->new(shards => 3, partitions => 16, conf => [...]);
#   $c->shard(2);                 # the node of shard 2
#   $c->sql(2, 'SELECT ...');     # safe_psql on shard 2's database
#   $c->sku_on(2, 'LAST');        # a SKU name starting LAST homed on shard 2

package OmsCluster;

use strict;
use warnings FATAL => 'all';

use Carp;
use Digest::MD5 qw(md5_hex);
use OmsTest;

our $DB = 'oms';

sub new
{
	my ($class, %opt) = @_;
	my $self = bless {
		n          => $opt{shards}     // 3,
		partitions => $opt{partitions} // 16,
		nodes      => [],
	}, $class;
	for my $i (0 .. $self->{n} - 1)
	{
		push @{ $self->{nodes} }, oms_node("shard$i", "oms.database_name = '$DB'",
			@{ $opt{conf} // [] });
	}
	$self->_install($_) for 0 .. $self->{n} - 1;
	return $self;
}

sub count { return $_[0]->{n}; }
sub shard { return $_[0]->{nodes}->[ $_[1] ]; }
sub db    { return $DB; }

sub sql
{
	my ($self, $i, $sql) = @_;
	return $self->shard($i)->safe_psql($DB, $sql);
}

sub sql_quiet
{
	my ($self, $i, $sql) = @_;
	return OmsTest::oms_sql_quiet($self->shard($i), $DB, $sql);
}

# The connect string of shard i's database, as PL/Proxy uses it.
sub connstr
{
	my ($self, $i) = @_;
	my $node = $self->shard($i);
	return sprintf('host=%s port=%d dbname=%s connect_timeout=2', $node->host, $node->port, $DB);
}

sub partitions_of
{
	my ($self, $i) = @_;
	return grep { $_ % $self->{n} == $i } 0 .. $self->{partitions} - 1;
}

sub _install
{
	my ($self, $i) = @_;
	OmsTest::oms_fresh_db($self->shard($i), $DB);
	my $options = join(', ',
		(map { sprintf("p%d '%s'", $_, $self->connstr($_ % $self->{n})) } 0 .. $self->{partitions} - 1),
		"query_timeout '30'");
	my $parts = join(',', $self->partitions_of($i));
	$self->sql($i, qq{
		SET client_min_messages = warning;
		CREATE EXTENSION oms_shard CASCADE;
		CREATE SERVER oms_cluster FOREIGN DATA WRAPPER plproxy OPTIONS ($options);
		CREATE USER MAPPING FOR PUBLIC SERVER oms_cluster;
		SELECT oms_configure_shard($i, $self->{partitions}, '{$parts}');
	});
	return;
}

# kill_shard(i): the whole shard gone at once, as when its machine dies:
# SIGKILL to the postmaster and to every process it started, then waits
# until none is left (a child still attached to the shared memory would
# keep the node from starting again).  Start it again with oms_start.
sub kill_shard
{
	my ($self, $i) = @_;
	my $node = $self->shard($i);
	my $pid = $node->{_pid} or croak "shard $i is not running";
	my @children = split /\s+/, `pgrep -P $pid`;
	$node->kill9;
	kill 'KILL', grep { /^\d+$/ } @children;
	OmsTest::oms_wait_until(30, sub { !grep { kill 0, $_ } $pid, grep { /^\d+$/ } @children })
	  or croak "processes of shard $i survived SIGKILL";
	return;
}

# oms.partition_of_text in Perl: the first 32 bits of the MD5, masked.
sub partition_of
{
	my ($self, $text) = @_;
	return hex(substr(md5_hex($text), 0, 8)) & ($self->{partitions} - 1);
}

sub shard_of
{
	my ($self, $text) = @_;
	return $self->partition_of($text) % $self->{n};
}

# The first "PREFIX-k" (k = 1, 2, ...) whose home is shard i: a SKU homed
# there, or an idempotency key whose create lands there.
sub name_on
{
	my ($self, $i, $prefix) = @_;
	for my $k (1 .. 10_000)
	{
		return "$prefix-$k" if $self->shard_of("$prefix-$k") == $i;
	}
	croak "no $prefix-k on shard $i";
}

# Count of names "PREFIX-k" homed on shard i, the first N of them.
sub names_on
{
	my ($self, $i, $prefix, $n) = @_;
	my @names;
	for (my $k = 1; @names < $n; $k++)
	{
		push @names, "$prefix-$k" if $self->shard_of("$prefix-$k") == $i;
	}
	return @names;
}

1;
