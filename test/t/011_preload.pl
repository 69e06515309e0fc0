# test/t/011_preload.pl: oms refuses to load outside shared_preload_libraries.
#
# A single-user backend on a fresh data directory has no preloaded
# libraries, so CREATE EXTENSION and LOAD must both fail with our hint, and
# leave nothing installed.
use strict;
use warnings FATAL => 'all';

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('preload');
$node->init;

# One statement in a single-user backend: its output, errors included.
sub single
{
	my ($sql) = @_;
	my $out;
	IPC::Run::run([ 'postgres', '--single', '-D', $node->data_dir, 'postgres' ],
		'<', \"$sql\n", '>&', \$out);
	return $out;
}

sub refused
{
	my ($name, $out) = @_;
	ok( $out =~ /oms must be loaded via shared_preload_libraries/
		  && $out =~ /Add oms to shared_preload_libraries in postgresql\.conf and restart the server/,
		$name) or diag($out);
	return;
}

refused('CREATE EXTENSION without preload is refused with a hint', single('CREATE EXTENSION oms;'));
refused('LOAD without preload is refused with a hint', single(q{LOAD 'oms';}));
my $out = single(q{SELECT count(*) FROM pg_extension WHERE extname = 'oms';});
like($out, qr/count = "0"/, 'nothing is left installed after the refusal');

done_testing();
