# test/t/031_payment_kafka.pl: the fulfilment saga pays through a remote
# payment provider over Kafka (oms.payment_provider = kafka), end to end.
#
# The test's own node (oms.database_name = payment_kafka) and mock Kafka
# (topics oms.order-events, oms.payment-commands, oms.payment-replies, 3
# partitions each); the relay publishes payment commands, the test payment
# service (test/payment/service.py) answers by payment method, the worker
# consumes the replies and applies each once (oms._apply_payment_reply).
# Phase 1, with oms.payment_reply_timeout = 10min (never reached, even under
# valgrind on a loaded machine, where phase 1 took 7 minutes):
#   approve      test_ok -> confirmed, captured, the service's reference kept
#   decline      test_decline -> failed, compensated: reservation released,
#                payment declined, nothing to void
#   duplicate    test_duplicate: the same reply twice (same ce_id), then a
#                copy under a new message id (kcat) -> one capture, one
#                payment.reply, the copy counted as a duplicate, no inbox row
#   out of order 50 orders, test_out_of_order (random reply delays) -> all confirmed
#   malformed    test_garbage: invalid JSON, then the real approval on the
#                same partition -> dead letter 'reply' with the raw message,
#                the worker keeps running, the order still confirmed
#   unknown      test_unknown: a reply whose correlation id matches nothing,
#                then the real approval -> dead letter 'reply', confirmed
#   SQL result   test_hang, answered by oms_payment_result() from SQL ->
#                applied, confirmed; the same call again -> duplicate
#   flaky        test_flaky: "failed" to attempts 1 and 2 -> retried under
#                new correlation ids, attempt 3 approved -> confirmed
# Phase 2, with oms.payment_reply_timeout = 3s:
#   timeout      test_hang -> failed after the timeout, a void command sent
#   late reply   test_delay (the service answers charges after 6 s, voids
#                and refunds at once) -> failed, the late approval becomes a
#                late_reply dead letter and a refund command reaches the
#                commands topic and the service; the refund's own answer is
#                recorded as applied
#   provider down the service stopped, reply timeout 1s: test_ok times out,
#                the voids get no answer -> after oms.max_attempts voids the
#                saga is stuck (compensation_stuck dead letter)
# Then every command read back from oms.payment-commands is checked against
# docs/events/payment.<command>.v1.json and the CloudEvents headers schema,
# every service reply against payment-reply.v1.json (test/payment/validate.py).
# No sleep synchronises anything: every wait polls a condition with a
# generous deadline.  Durations are diagnostics only.
use strict;
use warnings FATAL => 'all';

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use OmsKafka;
use OmsPayment;
use OmsTest;

my $db            = 'payment_kafka';
my $n_ooo         = 50;
my $late_delay_ms = 6000;
my $commands      = $OmsPayment::COMMANDS_TOPIC;
my $replies       = $OmsPayment::REPLIES_TOPIC;
my $t0            = time();

my $kafka = OmsKafka->start(
	partitions => 3,
	topics     => [ 'oms.order-events', $commands, $replies ]);
my $node = oms_node(
	'payment_kafka',
	"oms.database_name = '$db'",
	"oms.kafka_brokers = '" . $kafka->bootstrap . "'",
	"oms.payment_provider = 'kafka'",
	"oms.payment_reply_timeout = '10min'",
	"oms.step_timeout = '10min'");
# The service's log and the records read back from Kafka are kept with the
# node's logs (test/tap.sh copies tmp_check/log).
my $work    = $PostgreSQL::Test::Utils::log_path . '/payment_kafka';
mkdir $work or die "mkdir $work: $!";
my $svc_log = "$work/service.log";
diag('mock Kafka: ' . $kafka->bootstrap . "; work dir $work");

oms_fresh_db($node, $db);
oms_setup_stock($node, $db, 5, 1000000);

oms_wait_until(60, sub { oms_worker_pid($node, $db) ne '' })
  or BAIL_OUT("no worker serves $db");
my $worker_pid = oms_worker_pid($node, $db);

# The commands as they are on the topic, read by an independent consumer.
my $reader = pm_topic_reader($kafka, $commands, "$work/commands.json");
my $svc    = OmsPayment->start(
	kafka => $kafka,
	log   => $svc_log,
	args  => [ '--delay-ms', $late_delay_ms, '--delay-commands', 'charge', '--ooo-max-ms', 400 ]);
ok($svc, 'the payment service joined its consumer group')
  or BAIL_OUT('the payment service did not start: ' . slurp_file("$svc_log.err"));
ok(pm_inbox_ready($node, $db, $kafka, 90),
	"the worker consumes $replies (a probe reply reached oms.inbox)")
  or BAIL_OUT('the worker does not consume the replies: '
	  . (oms_sql_quiet($node, $db, 'SELECT * FROM oms_worker_status()') // ''));
diag(sprintf('set-up took %.2f s', time() - $t0));

# ------------------------------------------------------------ helpers
sub sql_quiet { return oms_sql_quiet($node, $db, $_[0]) // ''; }
sub sql_true  { return oms_sql_true($node, $db, $_[0]); }

# SQL: the open dead letters of kind KIND, probes left out.
sub dead_letters_sql
{
	my ($kind, $columns) = @_;
	return "SELECT $columns FROM oms.dead_letters WHERE kind = '$kind'
		AND coalesce(payload ->> 'message_id', '') NOT LIKE 'probe-%'";
}

# What the database and the service know of an order (diagnostics).
sub state_of
{
	my ($id) = @_;
	return join("\n",
		sql_quiet("SELECT format('order %s, saga %s/%s step %s, steps: %s', o.status, s.status, s.outcome, s.step_no,
				(SELECT string_agg(format('%s=%s(%s)', t.name, t.status, t.attempts), ' ' ORDER BY t.step_no)
				 FROM oms.saga_steps AS t WHERE t.saga_id = s.id))
			FROM oms.orders AS o JOIN oms.sagas AS s ON s.order_id = o.id WHERE o.id = '$id'"),
		sql_quiet("SELECT correlation_id, command FROM oms.payment_commands WHERE order_id = '$id'"),
		sql_quiet("SELECT message_id, correlation_id, outcome, result FROM oms.inbox i
			WHERE correlation_id IN (SELECT correlation_id FROM oms.payment_commands WHERE order_id = '$id')"),
		map { substr($_, 0, 160) } grep { /order=\Q$id\E/ } split /\n/, slurp_file($svc_log));
}

# wait_status(LABEL, ORDER, STATUS): one test.
sub wait_status
{
	my ($label, $id, $status) = @_;
	ok(oms_wait_until(60, sub { pm_status_is($node, $db, $id, $status) }),
		"$label: the order is $status")
	  or diag(state_of($id));
	return;
}

# payment_is(ORDER, 'SQL condition on p (oms.payments) and o (oms.orders)')
sub payment_is
{
	my ($id, $cond) = @_;
	return sql_true("SELECT $cond FROM oms.payments AS p JOIN oms.orders AS o ON o.id = p.order_id
		WHERE o.id = '$id'");
}

sub payment_row
{
	my ($id) = @_;
	return sql_quiet("SELECT format('amount %s authorized %s captured %s refunded %s status %s reference %s (order total %s)',
		p.amount, p.authorized, p.captured, p.refunded, p.status, p.provider_reference, o.total)
		FROM oms.payments AS p JOIN oms.orders AS o ON o.id = p.order_id WHERE o.id = '$id'");
}

# Timeline entries of ORDER of TYPE.
sub timeline_count
{
	my ($id, $type) = @_;
	return sql_quiet("SELECT count(*) FROM oms.order_events WHERE order_id = '$id' AND event_type = '$type'");
}

# The inbox results of the commands of ORDER, "result:count" sorted.
sub inbox_results
{
	my ($id) = @_;
	return sql_quiet("SELECT string_agg(format('%s:%s', result, n), ' ' ORDER BY result) FROM (
		SELECT i.result, count(*) AS n FROM oms.inbox AS i
		WHERE i.correlation_id IN (SELECT correlation_id FROM oms.payment_commands WHERE order_id = '$id')
		GROUP BY 1) AS r");
}

sub first { return $_[0] // ''; }

# ------------------------------------------------------------ phase 1
my $t1    = time();
my $o_ok  = pm_new_order($node, $db, 'approve');
my $o_dec = pm_new_order($node, $db, 'decline', 3);
my $o_dup = pm_new_order($node, $db, 'duplicate');
my $o_gar = pm_new_order($node, $db, 'garbage');
my $o_unk = pm_new_order($node, $db, 'unknown');
my $o_sql = pm_new_order($node, $db, 'sqlresult');
my $o_flaky = pm_new_order($node, $db, 'flaky');
oms_sql($node, $db, "SELECT count(oms_create_order('ooo-' || i,
		jsonb_build_array(jsonb_build_object('sku', 'SKU-0' || (i % 5 + 1), 'quantity', 1 + i % 3, 'unit_price', 100 + i))))
	FROM generate_series(1, $n_ooo) AS i");
# One autocommit statement per payment: each its own transaction.
my $pay1 = join('',
	map { "SELECT 1 FROM oms_pay_order('$_->[0]', '$_->[1]');\n" } (
		[ $o_ok, 'test_ok' ], [ $o_dec, 'test_decline' ], [ $o_dup, 'test_duplicate' ],
		[ $o_gar, 'test_garbage' ], [ $o_unk, 'test_unknown' ], [ $o_sql, 'test_hang' ],
		[ $o_flaky, 'test_flaky' ]))
  . oms_sql($node, $db, "SELECT format('SELECT 1 FROM oms_pay_order(%L, %L);', id, 'test_out_of_order')
		FROM oms.orders WHERE customer_id LIKE 'ooo-%' ORDER BY split_part(customer_id, '-', 2)::int");
my ($rc, $out, $err) = $node->psql($db, $pay1);
is($rc, 0, 'phase 1: ' . (7 + $n_ooo) . ' orders paid, each in its own transaction')
  or diag($err);

# --- approve
wait_status('approve (test_ok)', $o_ok, 'confirmed');
my $p_ok   = pm_payment_id($node, $db, $o_ok);
my $c_ok   = first(pm_corr($node, $db, $o_ok, 'charge'));
my $ref_ok = first($svc->field('reply', 'reference', "corr=$c_ok", 'kind=real'));
ok( payment_is($o_ok, "p.captured = o.total AND p.authorized = o.total AND p.amount = o.total
		AND p.refunded = 0 AND p.status = 'captured' AND p.provider_reference = '$ref_ok'"),
	"approve: captured = amount = order total, status captured, the service's reference ($ref_ok) kept")
  or diag(payment_row($o_ok));
is( join('|',
		$svc->count('decision', "payment=$p_ok"),
		$svc->count('decision', "corr=$c_ok", 'cmd=charge', 'outcome=approved'),
		inbox_results($o_ok)),
	'1|1|applied:1',
	"approve: one charge command (correlation $c_ok) decided once by the service, one applied reply")
  or diag(state_of($o_ok));

# --- decline
wait_status('decline (test_decline)', $o_dec, 'failed');
my $p_dec = pm_payment_id($node, $db, $o_dec);
ok(payment_is($o_dec, "p.captured = 0 AND p.authorized = 0 AND p.status = 'declined'"),
	'decline: payment declined, nothing captured')
  or diag(payment_row($o_dec));
ok( sql_true("SELECT count(*) > 0 AND bool_and(status = 'released') FROM oms.reservations WHERE order_id = '$o_dec'"),
	'decline: the reservation was released')
  or diag(sql_quiet("SELECT sku, quantity, status FROM oms.reservations WHERE order_id = '$o_dec'"));
ok( sql_true("SELECT (SELECT status = 'compensated' AND outcome = 'failed' FROM oms.sagas WHERE order_id = '$o_dec')
		AND (SELECT count(*) = 1 AND bool_and(error ->> 'sqlstate' = 'OM013') FROM oms.dead_letters
			 WHERE order_id = '$o_dec' AND kind = 'saga_failed')"),
	'decline: saga compensated with outcome failed, a saga_failed dead letter with OM013')
  or diag(state_of($o_dec));
is( $svc->count('decision', "payment=$p_dec", 'cmd=charge', 'outcome=declined') . '|'
	  . $svc->count('command', "payment=$p_dec", 'cmd=void'),
	'1|0', 'decline: the service declined one charge, and no void was sent for it')
  or diag(state_of($o_dec));

# --- duplicate
wait_status('duplicate (test_duplicate)', $o_dup, 'confirmed');
my $p_dup = pm_payment_id($node, $db, $o_dup);
my $c_dup = first(pm_corr($node, $db, $o_dup, 'charge'));
my %dup_ids;
$dup_ids{$_}++ foreach $svc->field('reply', 'ce_id', "corr=$c_dup");
is_deeply([ values %dup_ids ], [2], 'duplicate: the service delivered the same reply twice under one ce_id')
  or diag(join(' ', map { "$dup_ids{$_}:$_" } sort keys %dup_ids));
# A copy under a new message id: judged a duplicate of the applied reply, it
# has no effect and leaves no inbox row (the inbox keeps one row per reply
# that had an effect).  Once the consumer committed its offset past the
# copy, the worker has handled it.
my $dup_copy    = 'dup-copy-' . int(rand(1e9));
my $dups_before = oms_sql($node, $db, "SELECT (oms._inbox_shmem_status() ->> 'duplicates')::int");
pm_produce_reply($kafka, $p_dup, $dup_copy,
	qq({"correlation_id":"$c_dup","outcome":"approved","reference":"copy","message":"a copy"}));
ok( oms_wait_until(
		60,
		sub {
			pm_committed_all($kafka, "oms-$db")
			  && sql_true("SELECT (oms._inbox_shmem_status() ->> 'duplicates')::int > $dups_before");
		}),
	'duplicate: a copy of the reply under a new message id was consumed and counted as a duplicate'
  )
  or diag(join("\n",
	state_of($o_dup), sql_quiet('SELECT oms._inbox_shmem_status()'),
	pm_offsets($kafka, "oms-$db") // ''));
is( join('|',
		payment_is($o_dup, "p.captured = o.total AND p.status = 'captured' AND p.provider_reference <> 'copy'") ? 't' : 'f',
		timeline_count($o_dup, 'payment.reply'),
		timeline_count($o_dup, 'order.confirmed'),
		sql_quiet("SELECT count(*) FROM oms.order_events WHERE order_id = '$o_dup'
			AND event_type = 'saga.step_completed' AND data ->> 'step' = 'pay'")),
	't|1|1|1',
	'duplicate: exactly one effect: captured once, one payment.reply, pay step completed once')
  or diag(payment_row($o_dup) . "\n" . state_of($o_dup));
is( inbox_results($o_dup) . '|' . sql_quiet("SELECT count(*) FROM oms.inbox WHERE message_id = '$dup_copy'"),
	'applied:1|0', 'duplicate: the inbox keeps the applied reply only (no row for the copy)');

# --- out of order
ok( oms_wait_until(
		90,
		sub {
			sql_true("SELECT count(*) = $n_ooo AND bool_and(status = 'confirmed') FROM oms.orders
				WHERE customer_id LIKE 'ooo-%'");
		}),
	"out of order: all $n_ooo orders confirmed")
  or diag(sql_quiet("SELECT status, count(*) FROM oms.orders WHERE customer_id LIKE 'ooo-%' GROUP BY 1"));
ok( sql_true("SELECT count(*) = $n_ooo AND bool_and(p.captured = o.total AND p.status = 'captured')
		AND bool_and((SELECT count(*) FROM oms.order_events AS e WHERE e.order_id = o.id AND e.event_type = 'payment.reply') = 1)
		FROM oms.orders AS o JOIN oms.payments AS p ON p.order_id = o.id WHERE o.customer_id LIKE 'ooo-%'"),
	'out of order: each captured once, one payment.reply each');
# The replies really came in another order than the commands.
my (%cmd_rank, %seen, $last, $inversions, $rank);
$inversions = 0;
$rank       = 0;
$last       = 0;
foreach my $e (pm_events($svc_log))
{
	my ($event, $f) = @$e;
	if ($event eq 'decision' && ($f->{method} // '') eq 'test_out_of_order')
	{
		$cmd_rank{ $f->{corr} } = ++$rank;
	}
	elsif ($event eq 'reply' && exists $cmd_rank{ $f->{corr} // '' } && !$seen{ $f->{corr} }++)
	{
		$inversions++ if $cmd_rank{ $f->{corr} } < $last;
		$last = $cmd_rank{ $f->{corr} };
	}
}
ok($inversions > 0,
	"out of order: the service's replies left in another order than the commands came ($inversions inversions)");

# --- malformed
wait_status('malformed (test_garbage, then the real approval)', $o_gar, 'confirmed');
my $c_gar = first(pm_corr($node, $db, $o_gar, 'charge'));
my $g_id  = first($svc->field('reply', 'ce_id', "corr=$c_gar", 'kind=garbage'));
my $g_raw = qq({"correlation_id": "$c_gar", "outcome": appro);
ok( sql_true("SELECT count(*) = 1 AND bool_and(payload ->> 'raw' = \$raw\$$g_raw\$raw\$)
		FROM oms.dead_letters WHERE kind = 'reply' AND payload ->> 'message_id' = '$g_id'"),
	"malformed: a dead letter of kind 'reply' holds the raw message (message id $g_id)")
  or diag(sql_quiet(dead_letters_sql('reply', 'id, error, payload')));
is( sql_quiet("SELECT result FROM oms.inbox WHERE message_id = '$g_id'") . '|' . inbox_results($o_gar),
	'rejected|applied:1',
	'malformed: the inbox marks it rejected; the later real reply on its partition applied')
  or diag(state_of($o_gar));

# --- unknown correlation id
wait_status('unknown correlation id (test_unknown, then the real approval)', $o_unk, 'confirmed');
my $c_unk = first(pm_corr($node, $db, $o_unk, 'charge'));
my $u_corr =
  first($svc->field('reply', 'corr', 'payment=' . pm_payment_id($node, $db, $o_unk), 'kind=unknown'));
my $u_id = first($svc->field('reply', 'ce_id', "corr=$u_corr", 'kind=unknown'));
ok( sql_true("SELECT count(*) = 1 AND bool_and(error ->> 'message' LIKE '%$u_corr%' AND payload ->> 'raw' LIKE '%$u_corr%')
		FROM oms.dead_letters WHERE kind = 'reply' AND payload ->> 'message_id' = '$u_id'"),
	"unknown correlation id: a dead letter of kind 'reply' names it ($u_corr)")
  or diag(sql_quiet(dead_letters_sql('reply', 'id, error, payload')));
is( join('|',
		payment_is($o_unk, "p.captured = o.total AND p.status = 'captured'") ? 't' : 'f',
		timeline_count($o_unk, 'payment.reply'),
		inbox_results($o_unk)),
	't|1|applied:1',
	"unknown correlation id: the real reply to $c_unk applied, one capture for the order")
  or diag(payment_row($o_unk) . "\n" . state_of($o_unk));

# --- oms_payment_result from SQL
my $p_sql = pm_payment_id($node, $db, $o_sql);
ok( oms_wait_until(
		60, sub { $svc->count('decision', "payment=$p_sql", 'cmd=charge', 'outcome=hang') == 1 }),
	'SQL result: the service got the charge of a test_hang payment and does not answer')
  or diag(state_of($o_sql));
my $c_sql  = first(pm_corr($node, $db, $o_sql, 'charge'));
my $result = "SELECT oms_payment_result('$c_sql', 'approved',
	'{\"reference\": \"sql-ref-1\", \"message\": \"webhook\"}') ->> 'result'";
my $r1 = oms_sql_quiet($node, $db, $result) // 'error';
wait_status("SQL result: oms_payment_result('$c_sql', 'approved') answered ($r1)", $o_sql, 'confirmed');
my $r2 = oms_sql_quiet($node, $db, $result) // 'error';
is("$r1|$r2", 'applied|duplicate', 'SQL result: first call applied, the identical second call is a duplicate');
is( join('|',
		payment_is($o_sql, "p.captured = o.total AND p.status = 'captured' AND p.provider_reference = 'sql-ref-1'")
		? 't' : 'f',
		timeline_count($o_sql, 'payment.reply'),
		inbox_results($o_sql)),
	't|1|applied:1',
	'SQL result: one capture with the reference given, one payment.reply')
  or diag(payment_row($o_sql) . "\n" . state_of($o_sql));

# --- transient failures
wait_status(q{flaky (test_flaky: 'failed' twice, then approved)}, $o_flaky, 'confirmed');
my $p_flaky = pm_payment_id($node, $db, $o_flaky);
is( join('|',
		join(' ', $svc->field('decision', 'outcome', "payment=$p_flaky", 'cmd=charge')),
		inbox_results($o_flaky),
		payment_is($o_flaky, "p.captured = o.total AND p.status = 'captured'") ? 't' : 'f'),
	'failed failed approved|applied:3|t',
	'flaky: three charge attempts, each its own correlation id (:1 :2 failed, :3 approved), all applied, captured once'
) or diag(payment_row($o_flaky) . "\n" . state_of($o_flaky));
diag(sprintf('phase 1 took %.2f s', time() - $t1));

# ------------------------------------------------------------ phase 2
my $t2 = time();
ok(pm_set_reply_timeout($node, $db, '3s'), 'phase 2: oms.payment_reply_timeout = 3s reached the worker')
  or diag(sql_quiet('SELECT * FROM oms_worker_status()'));
my $o_hang = pm_new_order($node, $db, 'timeout');
my $o_late = pm_new_order($node, $db, 'late');
oms_sql($node, $db, "SELECT 1 FROM oms_pay_order('$o_hang', 'test_hang')");
oms_sql($node, $db, "SELECT 1 FROM oms_pay_order('$o_late', 'test_delay')");
my $p_hang = pm_payment_id($node, $db, $o_hang);
my $p_late = pm_payment_id($node, $db, $o_late);

# --- timeout
wait_status('timeout (test_hang, reply timeout 3s)', $o_hang, 'failed');
ok( sql_true("SELECT count(*) = 1 AND bool_and(error ->> 'sqlstate' = 'OM012') FROM oms.dead_letters
		WHERE order_id = '$o_hang' AND kind = 'saga_failed'"),
	'timeout: the pay step failed with OM012 (no answer), a saga_failed dead letter')
  or diag(state_of($o_hang));
ok( oms_wait_until(
		30, sub { $svc->count('decision', "payment=$p_hang", 'cmd=void', 'outcome=approved') >= 1 }),
	'timeout: a void command reached the service')
  or diag(state_of($o_hang));
ok( payment_is($o_hang, "p.captured = 0 AND p.status = 'voided'
		AND (SELECT bool_and(status = 'released') FROM oms.reservations WHERE order_id = o.id)"),
	'timeout: the payment is voided, nothing captured, the reservation released')
  or diag(payment_row($o_hang));

# --- late reply
wait_status("late reply (test_delay $late_delay_ms ms > timeout 3s)", $o_late, 'failed');
my $c_late = first(pm_corr($node, $db, $o_late, 'charge'));
ok( oms_wait_until(
		60,
		sub {
			sql_true("SELECT EXISTS (SELECT FROM oms.dead_letters WHERE kind = 'late_reply' AND order_id = '$o_late'
				AND payload -> 'reply' ->> 'correlation_id' = '$c_late')");
		}),
	"late reply: the late approval of the charge ($c_late) became a late_reply dead letter")
  or diag(state_of($o_late) . "\n"
	  . sql_quiet("SELECT kind, step, error, payload FROM oms.dead_letters WHERE order_id = '$o_late'"));
ok(oms_wait_until(60, sub { $svc->count('decision', "payment=$p_late", 'cmd=refund') >= 1 }),
	'late reply: a refund command for the late charge reached the service')
  or diag(state_of($o_late));
ok( oms_wait_until(
		30,
		sub {
			grep { /"key":"\Q$p_late\E"/ && /ce_type","oms\.payment\.refund"/ }
			  split /\n/, slurp_file("$work/commands.json");
		}),
	"late reply: the refund command is on $commands (ce_type oms.payment.refund, key = payment id)")
  or diag(join("\n", map { substr($_, 0, 300) } grep { /\Q$p_late\E/ } split /\n/,
	slurp_file("$work/commands.json")));
my $r_late = first($svc->field('decision', 'corr', "payment=$p_late", 'cmd=refund'));
# The refund answers a command oms sent for the late charge: its outcome
# should be recorded (a failed or declined refund needs a retry or an
# operator), not filed as one more "reply after the saga stopped waiting".
if ($r_late ne ''
	&& oms_wait_until(60, sub { sql_true("SELECT EXISTS (SELECT FROM oms.inbox WHERE correlation_id = '$r_late')") }))
{
	my $res = sql_quiet("SELECT string_agg(result, ',') FROM oms.inbox WHERE correlation_id = '$r_late'");
	my $letters = sql_quiet(
		"SELECT count(*) FROM oms.dead_letters WHERE order_id = '$o_late' AND kind = 'late_reply'");
	is("$res|$letters", 'applied|1',
		"late reply: the refund's approval ($r_late) is recorded as its outcome, not as a second late_reply dead letter"
	  )
	  or diag(sql_quiet("SELECT kind, step, payload -> 'reply' ->> 'correlation_id' FROM oms.dead_letters
		WHERE order_id = '$o_late'"));
}
else
{
	fail(q{late reply: the refund's approval reached the inbox});
	diag("refund correlation '$r_late'\n" . state_of($o_late));
}

# --- the commands and replies on Kafka against docs/events
if (oms_wait_until(
		60,
		sub {
			sql_true('SELECT NOT EXISTS (SELECT FROM oms.outbox)')
			  && pm_caught_up($kafka, $commands, 3, "$work/commands.json");
		}))
{
	my ($kerr, $vout) = ('', '');
	eval {
		IPC::Run::run(
			[
				'kcat', '-C', '-b', $kafka->bootstrap, '-t', $replies,
				'-o', 'beginning', '-e', '-J', '-q'
			],
			'<', '/dev/null', '>', "$work/replies.json", '2>', \$kerr, IPC::Run::timeout(60));
	} or diag("kcat on $replies: $kerr $@");
	IPC::Run::run(
		[
			'/usr/bin/python3', oms_root() . '/test/payment/validate.py',
			'--commands', "$work/commands.json", '--replies', "$work/replies.json",
			'--replies-topic', $replies
		],
		'<', '/dev/null', '>&', \$vout);
	# validate.py prints one TAP-like line per command type, one for the
	# sequence numbers and one for the replies: each becomes a test here.
	my $checked = 0;
	foreach my $line (split /\n/, $vout)
	{
		if ($line =~ /^(not ok|ok) - (.*)$/)
		{
			ok($1 eq 'ok', "schemas: $2");
			$checked++;
		}
		else
		{
			diag($line =~ s/^# //r);
		}
	}
	fail('schemas: validate.py checked something') unless $checked;
}
else
{
	fail('schemas: every command published and read back');
	diag(sql_quiet('SELECT count(*) FROM oms.outbox') . "\n" . slurp_file("$work/commands.json.err"));
}

# --- provider down: compensations that never get an answer are bounded by
# oms.max_attempts (default 5) like any compensation, then the saga is
# stuck for an operator; they must not send voids forever.
$svc->stop;
pm_set_reply_timeout($node, $db, '1s')
  or diag('oms.payment_reply_timeout = 1s: the worker did not loop twice');
my $o_down = pm_new_order($node, $db, 'down');
oms_sql($node, $db, "SELECT 1 FROM oms_pay_order('$o_down', 'test_ok')");
my $max_attempts = oms_sql($node, $db, "SELECT current_setting('oms.max_attempts')");
my $voids_sql =
  "SELECT count(*) FROM oms.payment_commands WHERE order_id = '$o_down' AND command = 'void'";
# Stuck, or clearly past the bound.
oms_wait_until(
	60,
	sub {
		sql_true("SELECT status = 'stuck' FROM oms.sagas WHERE order_id = '$o_down'")
		  || (sql_quiet($voids_sql) || 0) > $max_attempts + 2;
	});
ok( sql_true("SELECT (SELECT status = 'stuck' FROM oms.sagas WHERE order_id = '$o_down')
		AND EXISTS (SELECT FROM oms.dead_letters WHERE order_id = '$o_down' AND kind = 'compensation_stuck')
		AND (SELECT count(*) <= $max_attempts FROM oms.payment_commands WHERE order_id = '$o_down' AND command = 'void')"),
	"provider down: after $max_attempts unanswered voids the saga is stuck with a compensation_stuck dead letter")
  or diag('void commands sent so far: '
	  . sql_quiet($voids_sql)
	  . " (oms.max_attempts = $max_attempts)\n"
	  . state_of($o_down));
diag(sprintf('phase 2 took %.2f s', time() - $t2));

# ------------------------------------------------------------ overall
my $group = "oms-$db";
ok(oms_wait_until(60, sub { pm_committed_all($kafka, $group) }),
	"the reply consumer (group $group) committed every reply, the malformed ones too")
  or diag('partition committed high: ' . (pm_offsets($kafka, $group) // ''));
my $now_pid = oms_worker_pid($node, $db);
my @errors  = grep { /oms (saga )?worker: (ERROR|FATAL|PANIC):|event=(saga_error|worker_batch_failed)/ }
  split /\n/, oms_log_since($node);
ok($now_pid eq $worker_pid && !@errors, "one worker all along (pid $worker_pid), no ERROR in the server log")
  or diag("worker pid $worker_pid -> $now_pid\n" . join("\n", grep { defined } @errors[ 0 .. 9 ]));
# (the service was stopped for the last scenario)
is($svc->count('bad_command'), 0,
	'the service could read every command (' . $svc->count('command') . ' commands)')
  or diag(join("\n", grep { /^bad_command/ } split /\n/, slurp_file($svc_log)));
diag(sprintf('test took %.2f s', time() - $t0));

$reader->stop;
$node->stop;
$kafka->stop;
done_testing();
