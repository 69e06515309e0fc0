#!/usr/bin/env bash
# test/kafka/selftest.sh: prove the mock Kafka test bed works, using
# independent clients (kcat, and Python confluent-kafka if installed).
# TAP output; exit status 1 if any check failed.  Takes ~15 s.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=test/kafka/broker.sh disable=SC1091
source "$here/broker.sh"

command -v kcat >/dev/null || {
	echo "1..0 # SKIP kcat not installed (apt-get install kcat)"
	exit 0
}

work=$(mktemp -d "${TMPDIR:-/tmp}/oms-kafka-selftest.XXXXXX")
trap 'rm -rf "$work"' EXIT # oms_kafka_start chains oms_kafka_stop onto this
trap 'exit 130' INT        # interrupted: stop here; the EXIT trap cleans up
trap 'exit 143' TERM

n=0
failed=0
ok() {
	n=$((n + 1))
	echo "ok $n - $*"
}
not_ok() {
	n=$((n + 1))
	failed=$((failed + 1))
	echo "not ok $n - $*"
}
# check <description> <command...>: ok when the command succeeds
check() {
	local what=$1
	shift
	if "$@"; then ok "$what"; else not_ok "$what"; fi
}
diag() { sed 's/^/# /'; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
t_start=$(now_ms)

# kcat with a hard time limit, so nothing here can hang the suite
kc() { timeout 20 kcat "$@"; }
# all values of a topic, one per line, from the beginning up to the end
consume() { kc -C -b "$OMS_KAFKA_BOOTSTRAP" -t "$1" -o beginning -e -q "${@:2}"; }

# ------------------------------------------------------------------ start
if "$here/build.sh"; then ok "build mockbroker"; else
	not_ok "build mockbroker"
	echo "1..$n"
	exit 1
fi

t0=$(now_ms)
if ! oms_kafka_start --brokers 3 --partitions 3 --topic oms.test; then
	not_ok "start mock cluster"
	echo "1..$n"
	exit 1
fi
ok "start mock cluster with 3 brokers in $(($(now_ms) - t0)) ms: $OMS_KAFKA_BOOTSTRAP"
broker_pid=$OMS_KAFKA_PID
control=$OMS_KAFKA_DIR/control

# every advertised and every listening address is loopback
loopback_only() {
	local a
	for a in ${OMS_KAFKA_BOOTSTRAP//,/ }; do
		[[ $a == 127.0.0.1:* ]] || return 1
	done
	command -v ss >/dev/null || return 0
	local listen
	listen=$(ss -Hltnp 2>/dev/null | grep "pid=$broker_pid," | awk '{print $4}')
	[[ $(wc -l <<<"$listen") -eq 3 ]] || return 1
	! grep -qv '^127\.0\.0\.1:' <<<"$listen"
}
check "brokers listen on 127.0.0.1 only" loopback_only

out=$(oms_kafka_cmd "ping")
check "control fifo answers ping ($out)" test "$out" = "OK pong"
out=$(oms_kafka_cmd "frobnicate 1")
rc=$?
check "unknown command gets ERR and non-zero status ($out)" test $rc -eq 1 -a "${out%% *}" = ERR
out=$(oms_kafka_cmd "down 7")
check "out of range broker id is rejected ($out)" test $? -eq 1

# fixed leaders, so the 'down 1' test knows what it hits
leaders_ok=1
for p in 0 1 2; do
	oms_kafka_cmd "leader oms.test $p $((p + 1))" >/dev/null || leaders_ok=0
done
check "set partition leaders 1,2,3" test $leaders_ok = 1

# ------------------------------------------- 100 keyed messages with headers
# 10 keys x 10 sequence numbers, in 5 kcat runs; run b sends seq 2b, 2b+1 of
# every key with header ce_id=selftest-b.
t0=$(now_ms)
prod_ok=1
for b in 0 1 2 3 4; do
	for s in $((2 * b)) $((2 * b + 1)); do
		for k in 0 1 2 3 4 5 6 7 8 9; do
			echo "order-$k:order-$k/seq-$s"
		done
	done | kc -P -b "$OMS_KAFKA_BOOTSTRAP" -t oms.test -K: \
		-H "ce_id=selftest-$b" -H "ce_type=oms.test.v1" 2>"$work/p.err" ||
		{
			prod_ok=0
			diag <"$work/p.err"
		}
done
check "kcat produced 100 keyed messages with headers ($(($(now_ms) - t0)) ms)" test $prod_ok = 1

t0=$(now_ms)
consume oms.test -f '%k|%h|%p|%s\n' >"$work/main.txt" 2>"$work/c.err"
c_ms=$(($(now_ms) - t0))
cnt=$(wc -l <"$work/main.txt")
check "kcat consumed $cnt/100 messages (${c_ms} ms)" test "$cnt" -eq 100

keys_ok() {
	local k
	for k in 0 1 2 3 4 5 6 7 8 9; do
		[[ $(grep -c "^order-$k|" "$work/main.txt") -eq 10 ]] || return 1
	done
}
check "10 keys with 10 messages each" keys_ok

# each line: key|headers|partition|key/seq-N; ce_id must name the batch
headers_ok() {
	awk -F'|' '{
		split($4, a, "seq-"); b = int(a[2] / 2)
		if ($2 != "ce_id=selftest-" b ",ce_type=oms.test.v1") { print "bad: " $0; bad = 1 }
	} END { exit bad }' "$work/main.txt" | diag
	return "${PIPESTATUS[0]}"
}
check "every message carries its ce_id/ce_type headers" headers_ok

order_ok() {
	awk -F'|' '{
		split($4, a, "seq-"); s = a[2] + 0
		if (($1 in part) && part[$1] != $3) { print "key " $1 " in two partitions"; bad = 1 }
		part[$1] = $3
		if (($1 in last) && s != last[$1] + 1) { print "key " $1 ": seq " s " after " last[$1]; bad = 1 }
		if (!($1 in last) && s != 0) { print "key " $1 " starts at " s; bad = 1 }
		last[$1] = s; used[$3] = 1
	} END { for (p in used) np++; if (np < 2) { print "only " np " partition(s) used"; bad = 1 }; exit bad }' \
		"$work/main.txt" | diag
	return "${PIPESTATUS[0]}"
}
check "per-key order kept, one partition per key, several partitions used" order_ok

# --------------------------------------------------------- python consumer
if /usr/bin/python3 -c 'import confluent_kafka' 2>/dev/null; then
	t0=$(now_ms)
	pyout=$(timeout 30 /usr/bin/python3 - "$OMS_KAFKA_BOOTSTRAP" <<'PY' 2>&1
import sys, time
from confluent_kafka import Consumer, KafkaError, TopicPartition, OFFSET_BEGINNING
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "py-selftest",
              "enable.auto.commit": False, "enable.partition.eof": True})
c.assign([TopicPartition("oms.test", p, OFFSET_BEGINNING) for p in range(3)])
eof, n, bad, deadline = set(), 0, 0, time.time() + 20
while len(eof) < 3 and time.time() < deadline:
    m = c.poll(0.5)
    if m is None:
        continue
    if m.error():
        if m.error().code() == KafkaError._PARTITION_EOF:
            eof.add(m.partition())
            continue
        raise SystemExit("consume error: %s" % m.error())
    n += 1
    h = dict(m.headers() or [])
    if h.get("ce_type") != b"oms.test.v1" or not m.key().startswith(b"order-"):
        bad += 1
c.close()
print(n, bad)
PY
	)
	check "python3-confluent-kafka consumer read the same 100 messages ($pyout, $(($(now_ms) - t0)) ms)" \
		test "$pyout" = "100 0"
else
	n=$((n + 1))
	echo "ok $n - # SKIP python3-confluent-kafka not installed (apt-get install python3-confluent-kafka)"
fi

# ----------------------------------------------------------- idempotence
oms_kafka_cmd "create oms.idem 1" >/dev/null
seq 1 10 | sed 's/^/k:idem-/' |
	kc -P -b "$OMS_KAFKA_BOOTSTRAP" -t oms.idem -K: -X enable.idempotence=true 2>"$work/e.err"
rc=$?
cnt=$(consume oms.idem -f '%s\n' | wc -l)
check "idempotent producer (enable.idempotence=true) delivers 10/10 ($cnt)" test $rc -eq 0 -a "$cnt" -eq 10

# ------------------------------------------------------- injected errors
oms_kafka_cmd "create oms.retry 1" >/dev/null
oms_kafka_cmd "error Produce REQUEST_TIMED_OUT 1" >/dev/null
echo "k:no-retry" | kc -P -b "$OMS_KAFKA_BOOTSTRAP" -t oms.retry -K: -X retries=0 2>"$work/e.err"
rc=$?
check "injected REQUEST_TIMED_OUT fails a producer with retries=0 ($(grep -o 'Delivery failed.*' "$work/e.err"))" \
	test $rc -ne 0

oms_kafka_cmd "error Produce REQUEST_TIMED_OUT 2" >/dev/null
echo "k:retried" | kc -P -b "$OMS_KAFKA_BOOTSTRAP" -t oms.retry -K: 2>"$work/e.err"
rc1=$?
# both injected errors must have been used up by the retries above
echo "k:after" | kc -P -b "$OMS_KAFKA_BOOTSTRAP" -t oms.retry -K: -X retries=0 2>>"$work/e.err"
rc2=$?
check "2 injected REQUEST_TIMED_OUT: librdkafka retries and delivers" test $rc1 -eq 0 -a $rc2 -eq 0

oms_kafka_cmd "error Produce REQUEST_TIMED_OUT 2" >/dev/null
echo "k:idem-retried" | kc -P -b "$OMS_KAFKA_BOOTSTRAP" -t oms.retry -K: \
	-X enable.idempotence=true 2>"$work/e.err"
rc=$?
vals=$(consume oms.retry -f '%s ' 2>/dev/null)
check "idempotent producer retries too; log has each value once ($vals)" \
	test $rc -eq 0 -a "$vals" = "retried after idem-retried "

oms_kafka_cmd "error Produce MSG_SIZE_TOO_LARGE 1" >/dev/null
t0=$(now_ms)
echo "k:too-large" | kc -P -b "$OMS_KAFKA_BOOTSTRAP" -t oms.retry -K: 2>"$work/e.err"
rc=$?
check "injected MSG_SIZE_TOO_LARGE is a permanent failure in $(($(now_ms) - t0)) ms ($(grep -o 'Delivery failed.*' "$work/e.err"))" \
	test $rc -ne 0

# ------------------------------------------------------------- 2 MB message
oms_kafka_cmd "create oms.big 1" >/dev/null
head -c 2097152 /dev/zero | tr '\0' x >"$work/big"
kc -P -b "$OMS_KAFKA_BOOTSTRAP" -t oms.big "$work/big" 2>"$work/e.err"
rc=$?
check "2 MB message refused by the client's own message.max.bytes ($(grep -o 'Failed to produce.*' "$work/e.err"))" \
	test $rc -ne 0
kc -P -b "$OMS_KAFKA_BOOTSTRAP" -t oms.big -X message.max.bytes=4000000 "$work/big" 2>"$work/e.err"
rc=$?
size=$(consume oms.big -f '%S\n' 2>/dev/null)
check "mock broker has no size limit: 2 MB message accepted and read back ($size bytes)" \
	test $rc -eq 0 -a "$size" = 2097152

# --------------------------------------------------------------- down / up
oms_kafka_cmd "down 1" >/dev/null
t0=$(now_ms)
echo "k:while-down" | kc -P -b "$OMS_KAFKA_BOOTSTRAP" -t oms.test -p 0 -K: \
	-X message.timeout.ms=2000 2>"$work/d.err"
rc=$?
d_ms=$(($(now_ms) - t0))
down_failed() { [[ $rc -ne 0 ]] && grep -q 'Message timed out' "$work/d.err"; }
check "down 1: produce to partition 0 (leader 1) fails after ${d_ms} ms ($(grep -o 'Delivery failed.*' "$work/d.err"))" \
	down_failed
grep -m1 -o 'Connect to .*' "$work/d.err" | diag
echo "k:other-broker" | kc -P -b "$OMS_KAFKA_BOOTSTRAP" -t oms.test -p 1 -K: \
	-X message.timeout.ms=2000 2>/dev/null
check "down 1: partition 1 (leader 2) still accepts messages" test $? -eq 0
oms_kafka_cmd "up 1" >/dev/null
t0=$(now_ms)
echo "k:after-up" | kc -P -b "$OMS_KAFKA_BOOTSTRAP" -t oms.test -p 0 -K: \
	-X message.timeout.ms=5000 2>"$work/d.err"
check "up 1: produce to partition 0 works again ($(($(now_ms) - t0)) ms)" test $? -eq 0

# ---------------------------------------------------- consumer group commit
# short session timeout: the mock waits for departed members that long
oms_kafka_cmd "create oms.grp 2" >/dev/null
grp=(-X session.timeout.ms=3000 -X heartbeat.interval.ms=500 -X auto.offset.reset=earliest)
seq 1 20 | sed 's/.*/k&:v&/' | kc -P -b "$OMS_KAFKA_BOOTSTRAP" -t oms.grp -K: 2>/dev/null
t0=$(now_ms)
first=$(kc -C -b "$OMS_KAFKA_BOOTSTRAP" -G selftest-grp "${grp[@]}" -e -q -f '%s\n' oms.grp 2>/dev/null | wc -l)
seq 21 23 | sed 's/.*/k&:v&/' | kc -P -b "$OMS_KAFKA_BOOTSTRAP" -t oms.grp -K: 2>/dev/null
second=$(kc -C -b "$OMS_KAFKA_BOOTSTRAP" -G selftest-grp "${grp[@]}" -e -q -f '%s\n' oms.grp 2>/dev/null | sort -V | tr '\n' ' ')
check "consumer group commits offsets: 20 then only new '$second' ($(($(now_ms) - t0)) ms)" \
	test "$first" -eq 20 -a "$second" = "v21 v22 v23 "

# ------------------------------------------------------------------ stop
t0=$(now_ms)
oms_kafka_stop
check "oms_kafka_stop ($(($(now_ms) - t0)) ms)" test -z "${OMS_KAFKA_PID:-}"
no_strays() {
	! kill -0 "$broker_pid" 2>/dev/null &&
		! pgrep -f -- "--control $control" >/dev/null &&
		! pgrep -P $$ -x mockbroker >/dev/null &&
		! pgrep -P $$ -x kcat >/dev/null
}
check "no stray mockbroker/kcat processes (pgrep)" no_strays
check "temp dir removed" test ! -e "${control%/control}"

echo "1..$n"
echo "# total $(($(now_ms) - t_start)) ms, $failed failed"
((failed == 0))
