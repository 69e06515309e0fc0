# test/perl/OmsScript.pm: running the repository's own test scripts from a
# TAP test (test/t/*.pl): SQL files with psql -f, and programs that print
# TAP lines themselves (the python checkers in test/process, test/fuzz).
#
# Owns: oms_psql_file (a file run as-is, standard input free for data, any
# role), oms_run_tap_program (each "ok - " / "not ok - " line a program
# prints becomes one test of the calling test, its "# " lines diagnostics),
# oms_diff (a unified diff of two texts, for diagnostics).

package OmsScript;

use strict;
use warnings FATAL => 'all';

use Exporter 'import';
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(oms_psql_file oms_run_tap_program oms_diff);

# oms_psql_file(NODE, DB, FILE, OPTION => VALUE ...): runs FILE with
# psql -X -q -At -v ON_ERROR_STOP=1 (a file, not standard input, so that a
# script may read data from pstdin).  Options: stdin (text), user (role to
# connect as), extra (more psql arguments, e.g. ['-F', '|', '-v', 'a=b']),
# timeout (seconds, default 600: a hang guard).  Returns (exit status,
# stdout, stderr), stdout without its last newline.
sub oms_psql_file
{
	my ($node, $db, $file, %opt) = @_;
	my @cmd = ('psql', '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1',
		'-d', $node->connstr($db), '-f', $file);
	push @cmd, '-U', $opt{user} if defined $opt{user};
	push @cmd, @{ $opt{extra} } if $opt{extra};
	my ($stdin, $stdout, $stderr) = ($opt{stdin} // '', '', '');
	IPC::Run::run(\@cmd, '<', \$stdin, '>', \$stdout, '2>', \$stderr,
		IPC::Run::timeout($opt{timeout} // 600));
	chomp $stdout;
	return ($? >> 8, $stdout, $stderr);
}

# oms_run_tap_program(LABEL, [COMMAND ...], {ENV => VALUE ...}): runs a
# program that prints "ok - NAME" / "not ok - NAME" lines and "# " lines,
# as they come.  Each ok line is a passing test, each not ok line a failing
# one (a "# SKIP reason" suffix a skipped test), each "# " line a
# diagnostic.  A program that exits non-zero without a failing line, or
# checks nothing, fails one more test named LABEL.  Returns the exit status.
sub oms_run_tap_program
{
	my ($label, $cmd, $env) = @_;
	local %ENV = (%ENV, %{ $env // {} });
	my ($partial, $failed, $counted, $last_failed) = ('', 0, 0, 0);
	my $line_out = sub {
		my ($line) = @_;
		if ($line =~ /^(not )?ok(?: \d+)?(?: - (.*))?$/)
		{
			my ($not, $name) = ($1, $2 // $line);
			$counted++;
			if (!$not && $name =~ s/\s+# SKIP\s*(.*)$//)
			{
				Test::More->builder->skip($1, $name);
				return;
			}
			$last_failed = $not ? 1 : 0;
			$failed += $last_failed;
			ok(!$not, $name);
		}
		elsif ($line =~ /^#\s?(.*)$/)
		{
			# The details of a failure go to stderr with it, the rest to stdout.
			$last_failed ? diag($1) : note($1);
		}
		elsif ($line ne '')
		{
			note($line);
		}
		return;
	};
	my $out = sub {
		$partial .= $_[0];
		while ($partial =~ s/^([^\n]*)\n//)
		{
			$line_out->($1);
		}
		return;
	};
	my $err = '';
	IPC::Run::run($cmd, '<', \undef, '>', $out, '2>', \$err);
	my $rc = $? >> 8;
	$line_out->($partial) if $partial ne '';
	if ($rc != 0 && !$failed)
	{
		fail("$label exited with status 0");
		diag("exit status $rc; stderr:\n$err");
	}
	elsif (!$counted)
	{
		fail("$label checked something");
		diag($err);
	}
	elsif ($err ne '')
	{
		note("$label stderr:\n$err");
	}
	return $rc;
}

# oms_diff(A, B, LABEL_A, LABEL_B, MAX_LINES): the first MAX_LINES (default
# 100) lines of diff -u between two texts, '' when they are equal.
sub oms_diff
{
	my ($a, $b, $label_a, $label_b, $max) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir('diff');
	PostgreSQL::Test::Utils::append_to_file("$dir/$label_a", $a);
	PostgreSQL::Test::Utils::append_to_file("$dir/$label_b", $b);
	my $diff = '';
	IPC::Run::run([ 'diff', '-u', $label_a, $label_b ],
		'>', \$diff, '2>&1', init => sub { chdir $dir or die "chdir $dir: $!" });
	my @lines = split /\n/, $diff;
	$max //= 100;
	splice(@lines, $max) if @lines > $max;
	return join("\n", @lines);
}

1;
