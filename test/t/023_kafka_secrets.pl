# test/t/023_kafka_secrets.pl: Kafka credentials live in
# oms.kafka_config_file and never show up anywhere else.
#
# The node (oms.database_name = kafka_secrets, the remote payment provider
# on, so both the relay's producer and the reply consumer are built) with a
# mock Kafka cluster.  oms.kafka_config_file names kafka.properties in the
# data directory; log_min_messages = debug2 so that librdkafka's debug
# output (debug=conf, later debug=all, set in the file) reaches the server
# log, and oms.log_min_interval = 0 so that no librdkafka line is held back
# by the rate limit.  Random secrets (letters only) are written to the file
# as sasl.username, sasl.password and ssl.key.password; the security
# protocol stays plaintext, so the mock broker still takes events.
#   1. No file yet: producer and consumer refused (bad_config), the reason
#      names the file, logged once however often the worker loops.
#   2. The file appears, reload: events are published; librdkafka's
#      configuration dump shows the file's properties, secrets [redacted].
#   3. Reload with the same content (file touched, mode 0400): no client is
#      rebuilt.  The worker is known to have processed the reload when an
#      event lands on a topic set in the same reload.
#   4. New content (password rotated, debug=all): both clients rebuilt.
#   5. Refused files, each followed by reload: group-readable (0644), owned
#      by another user, a directory, a secret pasted on a line of its own,
#      a reserved property.  Each turns both clients to bad_config with a
#      message naming the file (and line and property); then a root-owned
#      0640 file is accepted and publishing resumes.  The files owned by
#      another user and by root come from 023_kafka_secrets.root.sh, which
#      test/tap.sh runs as root (this test runs as the server's user);
#      without root (make installcheck) those two checks are skipped.
#   6. A malformed sasl.oauthbearer.config: librdkafka's own error quotes
#      the value; oms logs and stores it [redacted].
#   7. ALTER SYSTEM SET oms.kafka_config with sasl.password fails with a
#      clear error and writes nothing to postgresql.auto.conf; the same
#      in postgresql.conf is refused at reload.
#   8. None of the file's secrets (nor the one in postgresql.conf) is in
#      the server log, pg_settings (every column, read as superuser),
#      pg_file_settings, postgresql.auto.conf, pg_stat_activity, or the
#      output of any status, health or metrics function; the refused ALTER
#      SYSTEM value only in the STATEMENT line PostgreSQL logs for a failed
#      statement.
use strict;
use warnings FATAL => 'all';

use PostgreSQL::Test::Utils;
use Test::More;
use OmsKafka;
use OmsRelay;
use OmsTest;

my $db    = 'kafka_secrets';
my $topic = 'oms.order-events';
my $items = '[{"sku": "SKU-01", "quantity": 1, "unit_price": 100}]';
my $root  = $ENV{OMS_TAP_ROOT_DIR};

# Letters only, so that no hex id or number in a log can match by chance.
sub secret
{
	my ($prefix) = @_;
	my @letters = ('a' .. 'z', 'A' .. 'Z');
	open(my $fh, '<:raw', '/dev/urandom') or die "/dev/urandom: $!";
	read($fh, my $bytes, 30) == 30 or die 'short read from /dev/urandom';
	close($fh);
	return $prefix . join('', map { $letters[ ord($_) % @letters ] } split //, $bytes);
}
my ($s_user, $s_pass, $s_key, $s_pass2, $s_oauth, $s_pasted, $s_alter, $s_conf) =
  map { secret($_) } qw(Zu Zp Zk Zq Zo Zx Za Zc);
# Never to be seen: the file's secrets, and one refused in postgresql.conf
# (the root-owned file's are added when it is read).
my @secrets = ($s_user, $s_pass, $s_key, $s_pass2, $s_oauth, $s_pasted, $s_conf);

my $kafka = OmsKafka->start(topics => [$topic], partitions => 1);
foreach my $t (qw(oms.sync-1 oms.sync-2 oms.payment-replies))
{
	my ($ok, $reply) = $kafka->cmd("create $t 1");
	$ok or BAIL_OUT("mock Kafka: create $t: $reply");
}
my $node = oms_node('kafka_secrets', "oms.database_name = '$db'",
	"oms.kafka_brokers = '" . $kafka->bootstrap . "'",
	"oms.kafka_config_file = 'kafka.properties'",
	"oms.payment_provider = 'kafka'",
	'oms.log_min_interval = 0',
	'log_min_messages = debug2');
my $data  = $node->data_dir;
my $props = "$data/kafka.properties";

oms_fresh_db($node, $db);
oms_setup_stock($node, $db, 3, 100000);

# write_props(MODE, CONTENT): replaces the file at once (a new file renamed
# over the old), so the worker never reads half of it.
sub write_props
{
	my ($mode, $content) = @_;
	open(my $fh, '>', "$props.new") or die "$props.new: $!";
	print $fh $content;
	close($fh) or die "$props.new: $!";
	chmod($mode, "$props.new") or die "chmod $props.new: $!";
	rename("$props.new", $props) or die "rename to $props: $!";
	return;
}

sub reload { $node->safe_psql('postgres', 'SELECT pg_reload_conf()'); return; }

sub set_system
{
	my ($name, $value) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET $name = '$value'");
	return;
}

sub new_order
{
	oms_sql($node, $db, "SELECT 1 FROM oms_create_order('secrets', '$items')");
	return 1;
}
sub relay_error    { return relay_status($node, $db, 'last_error') // ''; }
sub relay_line     { return oms_sql_quiet($node, $db, 'SELECT oms_relay_status()') // ''; }
sub consumer_state { return oms_sql_quiet($node, $db, q{SELECT oms._inbox_shmem_status() ->> 'consumer'}) // ''; }
sub consumer_error { return oms_sql_quiet($node, $db, q{SELECT oms._inbox_shmem_status() ->> 'last_error'}) // ''; }
sub loops          { return oms_worker_status($node, $db, 'loops') || 0; }
sub server_log     { return oms_log_since($node); }

# Lines of the server log that match every pattern of PATTERNS (regexps, or
# strings matched as they are).
sub log_lines
{
	my @patterns = map { ref $_ ? $_ : qr/\Q$_\E/ } @_;
	my @lines = split /\n/, server_log();
	foreach my $p (@patterns)
	{
		@lines = grep { /$p/ } @lines;
	}
	return @lines;
}
sub count_log { return scalar(my @l = log_lines(@_)); }

# topic_has_data(TOPIC): its only partition's high watermark is above 0.
sub topic_has_data
{
	my ($t) = @_;
	my $q = '';
	my ($rc) = relay_kcat([ '-Q', '-b', $kafka->bootstrap, '-t', "$t:0:-1" ], \$q, 10);
	return $rc == 0 && $q =~ /offset (\d+)\s*$/ && $1 > 0;
}

# published(): a new event leaves the outbox (creates one each call).
sub published { return new_order() && relay_outbox_empty($node, $db); }
sub consumer_running { return consumer_state() eq 'running'; }

# check_refused(NAME, TEXT): waits until producer and consumer are both
# refused, their errors containing TEXT.
sub check_refused
{
	my ($name, $text) = @_;
	my $refused = oms_wait_until(
		30,
		sub {
			index(relay_error(), $text) >= 0
			  && consumer_state() eq 'bad_config'
			  && index(consumer_error(), $text) >= 0;
		});
	ok($refused, "$name: relay and reply consumer refused, bad_config, the error names it")
	  or diag('relay: ' . relay_error() . "\nconsumer: " . consumer_state() . ' ' . consumer_error());
	return;
}

relay_wait_worker($node, $db);

# ------------------------------------------------------------ 1. no file
check_refused('a missing file',
	qq{could not open oms.kafka_config_file "$props": No such file or directory});
new_order();
my $l0 = loops();
oms_wait_until(30, sub { new_order() && loops() >= $l0 + 5 });
ok( count_log('event=relay_config_invalid', $props) == 1
	  && count_log('event=inbox_config_invalid', $props) == 1,
	'the missing file is logged once per client (relay_config_invalid, inbox_config_invalid) over '
	  . (loops() - $l0)
	  . ' more loops'
) or diag(join("\n", log_lines(qr/event=(relay|inbox)_config_invalid/)));
is(oms_sql($node, $db, 'SELECT count(*) > 0 FROM oms.outbox'),
	't', 'nothing is published while the file is refused');

# ------------------------------------------------------------ 2. the file appears
write_props(0600, <<"EOF");
# Kafka credentials of oms (test values)
! the other comment style

security.protocol = plaintext
sasl.username = $s_user
sasl.password=$s_pass
	ssl.key.password =	$s_key
debug = conf
EOF
reload();
ok(oms_wait_until(60, \&published),
	'after the file appears and a reload, the relay publishes (the file is read)')
  or diag(relay_line());
ok(oms_wait_until(30, \&consumer_running), 'the reply consumer is built from the file too (running)')
  or diag(consumer_state() . ' ' . consumer_error());
foreach my $who (qw(relay inbox))
{
	my $dump = join("\n", log_lines('event=kafka_log', "client=$who", 'facility=CONF'));
	ok( index($dump, 'sasl.username = [redacted]') >= 0
		  && index($dump, 'sasl.password = [redacted]') >= 0
		  && index($dump, 'ssl.key.password = [redacted]') >= 0
		  && index($dump, 'debug = conf') >= 0,
		"librdkafka's configuration dump ($who, debug=conf from the file) shows sasl.username, sasl.password and ssl.key.password as [redacted]"
	) or diag(relay_head(30, $dump));
}

# ------------------------------------------------------------ 3. same content
my $r0 = count_log('event=relay_started');
my $i0 = count_log('event=inbox_started');
chmod(0400, $props) or die "chmod: $!";
utime(undef, undef, $props) or die "touch: $!";
set_system('oms.kafka_topic', 'oms.sync-1');
reload();
if (oms_wait_until(60, sub { new_order() && topic_has_data('oms.sync-1') }))
{
	ok( count_log('event=relay_started') == $r0 && count_log('event=inbox_started') == $i0,
		q{a reload with the file's content unchanged (mode and mtime changed) rebuilds no client}
	  )
	  or diag("relay_started $r0 -> "
		  . count_log('event=relay_started')
		  . ", inbox_started $i0 -> "
		  . count_log('event=inbox_started'));
}
else
{
	fail('the worker processed the reload (an event on oms.sync-1)');
	diag(relay_line());
}

# ------------------------------------------------------------ 4. new content
my $good = <<"EOF";
security.protocol=plaintext
sasl.username=$s_user
sasl.password=$s_pass2
debug=all
socket.keepalive.enable=true
EOF
write_props(0600, $good);
reload();
ok( oms_wait_until(
		60,
		sub {
			count_log('event=relay_started') > $r0
			  && count_log('event=inbox_started') > $i0
			  && count_log('facility=CONF', 'socket.keepalive.enable = true') >= 2;
		}),
	'a reload with new content (password rotated) rebuilds the producer and the consumer with it'
  )
  or diag("relay_started $r0 -> "
	  . count_log('event=relay_started')
	  . ", inbox_started $i0 -> "
	  . count_log('event=inbox_started'));
ok(oms_wait_until(60, \&published), 'publishing goes on with the new file');

# ------------------------------------------------------------ 5. refused files
chmod(0644, $props) or die "chmod: $!";
reload();
check_refused('a group- and world-readable file (0644)',
	qq{oms.kafka_config_file "$props" has group or world access});
SKIP:
{
	skip 'needs root to make a file owned by another user (test/tap.sh as root)', 1 unless $root;
	set_system('oms.kafka_config_file', "$root/other-user.properties");
	reload();
	check_refused('a file owned by another user',
		qq{oms.kafka_config_file "$root/other-user.properties" must be owned by the database server's user or root}
	);
}
set_system('oms.kafka_config_file', "$data/global");
reload();
check_refused('a directory', qq{oms.kafka_config_file "$data/global" is not a regular file});
set_system('oms.kafka_config_file', 'kafka.properties');
write_props(0600, "$good$s_pasted\n");
reload();
check_refused('a secret pasted on a line of its own',
	qq{line 6 of oms.kafka_config_file "$props" is not of the form property=value});
write_props(0600, "${good}enable.idempotence = false\n");
reload();
check_refused('a reserved property',
	qq{property "enable.idempotence" (line 6 of oms.kafka_config_file "$props") cannot be set: oms sets it itself}
);
$l0 = loops();
oms_wait_until(30, sub { new_order() && loops() >= $l0 + 5 });
my $invalid = count_log(qr/event=(relay|inbox)_config_invalid/, 'enable.idempotence');
is($invalid, 2, "each refusal is logged once per client ($invalid lines for the reserved property)");
set_system('oms.kafka_topic', 'oms.sync-2');
my $fixed;
if ($root)
{
	# The root-owned file has secrets of its own: they must not leak either.
	my $content = slurp_file("$root/root.properties");
	push @secrets, $content =~ /^sasl\.(?:username|password)=(\S+)$/mg;
	set_system('oms.kafka_config_file', "$root/root.properties");
	$fixed = 'fixed (owned by root, 0640)';
}
else
{
	write_props(0600, $good);
	$fixed = 'fixed (owned by the server user, 0600: no root to make a root-owned file)';
}
reload();
ok( oms_wait_until(
		60, sub { new_order() && topic_has_data('oms.sync-2') && relay_outbox_empty($node, $db) }),
	"$fixed and reloaded: the relay publishes everything again") or diag(relay_line());
ok(oms_wait_until(30, \&consumer_running), 'the reply consumer runs again')
  or diag(consumer_state() . ' ' . consumer_error());
set_system('oms.kafka_config_file', 'kafka.properties');

# ------------------------------------------------------------ 6. librdkafka quotes a value
write_props(0600, <<"EOF");
security.protocol = SASL_PLAINTEXT
sasl.mechanism = OAUTHBEARER
enable.sasl.oauthbearer.unsecure.jwt = true
sasl.oauthbearer.config = principal=oms bogus$s_oauth
EOF
reload();
# The value's blank before "bogus" goes too: it is part of a quoted run of the value.
ok( oms_wait_until(
		60,
		sub {
			count_log('event=kafka_error',
				qr/Unrecognized sasl.oauthbearer.config beginning at: ?\[redacted\]"/) > 0;
		}),
	q{librdkafka's OAUTHBEARER error quoting the malformed sasl.oauthbearer.config is logged [redacted]}
) or diag(relay_tail(3, log_lines('event=kafka_error')));
ok( oms_wait_until(
		30,
		sub { consumer_error() =~ /Unrecognized sasl\.oauthbearer\.config beginning at: ?\[redacted\]$/ }),
	q{the same error is stored [redacted] as the reply consumer's last_error}) or diag(consumer_error());
write_props(0600, $good);
reload();
ok(oms_wait_until(60, \&published), 'back to the good file: publishing resumes');

# ------------------------------------------------------------ 7. ALTER SYSTEM refused
my $auto   = "$data/postgresql.auto.conf";
my $before = slurp_file($auto);
my ($stdout, $stderr) = ('', '');
my $rc = $node->psql('postgres',
	"ALTER SYSTEM SET oms.kafka_config = 'compression.type=lz4, sasl.password=$s_alter'",
	stdout => \$stdout,
	stderr => \$stderr);
ok( $rc != 0
	  && index($stderr, 'oms.kafka_config cannot set secret property "sasl.password"') >= 0
	  && index($stderr, 'oms.kafka_config_file') >= 0
	  && index($stderr, $s_alter) < 0,
	'ALTER SYSTEM SET oms.kafka_config with sasl.password fails: the error names the property and oms.kafka_config_file, not the value'
) or diag($stderr);
is(slurp_file($auto), $before, 'the refused ALTER SYSTEM wrote nothing to postgresql.auto.conf');
my @outside = grep { !/STATEMENT:/ } log_lines($s_alter);
ok(!@outside,
	q{the refused value reaches the server log only in PostgreSQL's STATEMENT line of the failed statement})
  or diag(join("\n", map { substr($_, 0, 200) } log_lines($s_alter)));

my $refusal = 'oms.kafka_config cannot set secret property "sasl.password"';
my $n0      = count_log($refusal);
$node->append_conf('postgresql.conf', "oms.kafka_config = 'sasl.password=$s_conf'");
reload();
ok(oms_wait_until(30, sub { count_log($refusal) > $n0 }),
	'sasl.password in oms.kafka_config in postgresql.conf is refused at reload, logged without the value (checked below)'
);
my $conf = slurp_file("$data/postgresql.conf");
$conf =~ s/^.*\Q$s_conf\E.*\n//mg;
open(my $fh, '>', "$data/postgresql.conf") or die "postgresql.conf: $!";
print $fh $conf;
close($fh) or die "postgresql.conf: $!";
reload();

# ------------------------------------------------------------ 8. nowhere else
# leaks(TEXT): the labels of the secrets (whole, or either half) found in TEXT.
sub leaks
{
	my ($text) = @_;
	return join(' ',
		map { substr($_, 0, 2) }
		  grep {
			index($text, $_) >= 0
			  || index($text, substr($_, 0, 16)) >= 0
			  || index($text, substr($_, 16)) >= 0
		  } @secrets);
}

sub check_clean
{
	my ($what, $text) = @_;
	my $found = leaks($text);
	ok($found eq '', "no secret in $what") or diag("found: $found");
	return;
}
# The error paths above ran; make sure the worker's last status is current.
oms_wait_until(30, \&published);
my $log = server_log();
my $lines = () = $log =~ /\n/g;
check_clean("the server log ($lines lines, librdkafka debug=conf and debug=all included)", $log);
check_clean('pg_settings, every column, read as superuser',
	oms_sql($node, 'postgres', 'SELECT s::text FROM pg_settings AS s'));
check_clean('pg_file_settings', oms_sql($node, 'postgres', 'SELECT f::text FROM pg_file_settings AS f'));
check_clean('postgresql.auto.conf', slurp_file($auto));
check_clean('pg_stat_activity', oms_sql($node, 'postgres', 'SELECT a::text FROM pg_stat_activity AS a'));
foreach my $q (
	'SELECT oms_relay_status()',
	'SELECT oms_health()',
	'SELECT oms_metrics()',
	'SELECT w::text FROM oms_worker_status() AS w',
	'SELECT oms._inbox_shmem_status()',
	'SELECT r::text FROM oms._relay_shmem_status() AS r',
	'SELECT m::text FROM oms.metrics AS m')
{
	check_clean($q, oms_sql($node, $db, $q));
}
my $redacted = count_log('sasl.password = [redacted]');
ok($redacted >= 2,
	"the server log shows the secret properties' names but no value (sasl.password = [redacted] seen $redacted times)"
);

$node->stop;
$kafka->stop;
done_testing();
