#!/usr/bin/env bash
# test/suites/payment_kafka_load.sh: 1,000 orders paid concurrently through
# the remote payment provider over Kafka, with a kill -9 of the worker while
# replies flow.
#
# This suite's own cluster (oms.database_name = payment_load) and mock Kafka
# (oms.order-events, oms.payment-commands, oms.payment-replies, 3 partitions
# each), the test payment service (test/payment/service.py).  Order i is paid
# with test_decline when i % 4 = 0, else test_ok, by 8 concurrent psql
# clients, one transaction per payment.  Once a tenth of the replies have
# been applied the worker gets SIGKILL: the postmaster crash-restarts, the
# launcher starts a new worker, whose reply consumer resumes from the last
# committed offset, so replies applied but not yet committed come again (the
# kill cannot be timed between apply and commit; it lands while replies
# flow).  Payments the crash cut off are paid again.  Then
# test/payment/load_checks.sql compares the database with the service's log:
# every saga terminal as the service decided, exactly one effect per reply
# (one payment.reply entry and one applied inbox row per order, captured once
# or not at all), reservations and stock consistent.
# shellcheck disable=SC2317 # functions here are called indirectly (wait loops, exit hooks), which shellcheck 0.9 cannot follow
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"
# shellcheck source=test/kafka/broker.sh
source "$OMS_ROOT/test/kafka/broker.sh"
# shellcheck source=test/payment/lib.sh
source "$OMS_ROOT/test/payment/lib.sh"

DB=payment_load
N=${PM_LOAD_ORDERS:-1000}
CLIENTS=8
NSKUS=5
WORK=""
CLIENT_PIDS=()

cleanup() {
	local p
	for p in "${CLIENT_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wt_keep_log payment_kafka_load
	if { ((WT_RC != 0)) || [[ "${WT_KEEP_LOG:-0}" == 1 ]]; } && [[ -n "$WORK" ]]; then
		mkdir -p "$OMS_LOG_DIR/test/payment_kafka_load"
		cp -r "$WORK"/. "$OMS_LOG_DIR/test/payment_kafka_load/" 2>/dev/null || true
	fi
	[[ -z "$WORK" ]] || rm -rf "$WORK"
}

T0=$(wt_now)
oms_kafka_start --partitions 3 --topic oms.order-events --topic "$PM_COMMANDS_TOPIC" --topic "$PM_REPLIES_TOPIC"
# The reply timeout is never reached, even across the crash restart: every
# saga must end as the service decided.
wt_start_cluster "oms.database_name = '$DB'" \
	"oms.kafka_brokers = '$OMS_KAFKA_BOOTSTRAP'" \
	"oms.payment_provider = 'kafka'" \
	"oms.payment_reply_timeout = '10min'" \
	"oms.step_timeout = '10min'"
oms_on_exit cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oms-payment-load.XXXXXX")
SVC_LOG=$WORK/service.log
wt_diag "mock Kafka: $OMS_KAFKA_BOOTSTRAP; work dir $WORK"

oms_fresh_db "$DB" >/dev/null
wt_setup_stock "$DB" "$NSKUS" 1000000
wt_create_orders "$DB" "$N" "$NSKUS" load

worker_up() { [[ -n "$(wt_worker_pid "$DB")" ]]; }
if ! wt_wait_until 60 worker_up; then
	wt_not_ok "the worker serves $DB" "$(tail -n 20 "$WT_LOG")"
	exit 1
fi
if ! pm_service_start "$SVC_LOG"; then
	wt_not_ok "the payment service joined its consumer group" "$(tail -n 5 "$SVC_LOG" "$SVC_LOG.err" 2>&1)"
	exit 1
fi
if pm_inbox_ready "$DB" 90; then
	wt_ok "the payment service and the worker's reply consumer are up"
else
	wt_not_ok "the worker consumes $PM_REPLIES_TOPIC (a probe reply reached oms.inbox)" \
		"$(wt_sql_quiet "$DB" "SELECT * FROM oms_worker_status()")" "$(grep -E 'oms worker' "$WT_LOG" | tail -n 10)"
	exit 1
fi
wt_diag "set-up took $(wt_elapsed "$T0") s"

# ------------------------------------------------------------ the clients
method_sql="CASE WHEN split_part(customer_id, '-', 2)::int % 4 = 0 THEN 'test_decline' ELSE 'test_ok' END"
wt_sql "$DB" "SELECT format('%s|SELECT 1 FROM oms_pay_order(%L, %L);', split_part(customer_id, '-', 2)::int % $CLIENTS, id, $method_sql)
	FROM oms.orders WHERE status = 'pending' ORDER BY split_part(customer_id, '-', 2)::int" >"$WORK/pay.all"
for ((c = 0; c < CLIENTS; c++)); do
	grep "^$c|" "$WORK/pay.all" | cut -d'|' -f2- >"$WORK/pay-$c.sql"
done

applied() { wt_sql_quiet "$DB" "SELECT count(*) FROM oms.inbox WHERE result = 'applied'"; }
# Replies flowing: some applied, not all.
mid_flow() {
	local a
	a=$(applied) || return 1
	[[ -n "$a" ]] && ((a >= N / 10 && a < N))
}

T1=$(wt_now)
for ((c = 0; c < CLIENTS; c++)); do
	"$OMS_PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d "$DB" -f "$WORK/pay-$c.sql" >"$WORK/client-$c.log" 2>&1 &
	CLIENT_PIDS+=($!)
done

killed=""
if wt_wait_until 120 mid_flow; then
	OLD_PID=$(wt_worker_pid "$DB")
	at=$(applied)
	if [[ -n "$OLD_PID" ]]; then
		kill -9 "$OLD_PID"
		killed=1
		wt_ok "kill -9 of the worker (pid $OLD_PID) while replies flowed ($at of $N applied)"
	else
		wt_not_ok "kill -9 of the worker while replies flowed" "no worker pid"
	fi
else
	wt_not_ok "kill -9 of the worker while replies flowed" "applied replies: $(applied) of $N" \
		"$(wt_sql_quiet "$DB" "SELECT status, count(*) FROM oms.sagas GROUP BY 1")"
fi
# After the crash restart the clients lost their connections: they just have to end.
crc=0
for p in "${CLIENT_PIDS[@]}"; do wait "$p" || crc=$((crc + 1)); done
CLIENT_PIDS=()
wt_diag "$CLIENTS clients ended $(wt_elapsed "$T1") s after they started ($crc cut off by the crash)"

if [[ -n "$killed" ]]; then
	if ! wt_wait_until 60 wt_server_ready; then
		wt_not_ok "the server accepts connections again" "$(tail -n 30 "$WT_LOG")"
		exit 1
	fi
	worker_back() {
		local pid
		pid=$(wt_worker_pid "$DB")
		[[ -n "$pid" && "$pid" != "$OLD_PID" ]]
	}
	if grep -q "oms worker.*(PID $OLD_PID) was terminated by signal 9" "$WT_LOG" && wt_wait_until 60 worker_back; then
		wt_ok "the postmaster crash-restarted and the launcher started a new worker (pid $(wt_worker_pid "$DB"))"
	else
		wt_not_ok "the postmaster crash-restarted and the launcher started a new worker" "$(tail -n 30 "$WT_LOG")"
	fi
fi

# Payments the crash cut off (rolled back: still pending) are paid now.
repaid=$(wt_sql "$DB" "SELECT count(oms_pay_order(id, $method_sql)) FROM oms.orders WHERE status = 'pending'")
wt_diag "$repaid orders were still pending after the crash and were paid now"

all_done() { wt_sagas_done "$DB" "$N"; }
if wt_wait_until 150 all_done; then
	wt_ok "all $N sagas reached a final state"
	wt_diag "all final $(wt_elapsed "$T1") s after the clients started"
else
	wt_not_ok "all $N sagas reached a final state" \
		"$(wt_sql_quiet "$DB" "SELECT kind, status, count(*) FROM oms.sagas GROUP BY 1, 2")" \
		"$(wt_sql_quiet "$DB" "SELECT t.name, t.status, count(*) FROM oms.saga_steps t JOIN oms.sagas s ON s.id = t.saga_id
			WHERE s.status IN ('running', 'compensating') GROUP BY 1, 2")" \
		"$(wt_sql_quiet "$DB" "SELECT * FROM oms_worker_status()")"
fi

# The default oms.kafka_consumer_group "oms", with the database name appended.
GROUP=oms-$DB
if wt_wait_until 60 pm_committed_all "$GROUP"; then
	wt_ok "the reply consumer (group $GROUP) committed every reply on $PM_REPLIES_TOPIC"
else
	wt_not_ok "the reply consumer (group $GROUP) committed every reply on $PM_REPLIES_TOPIC" \
		"partition committed high: $(pm_offsets "$GROUP" | tr '\n' ';')"
fi

# ------------------------------------------------------------ the checks
# The service's decisions, one per correlation id, into the database.
awk '$1 == "decision" {
		delete f
		for (i = 2; i <= NF; i++) { k = $i; sub(/=.*/, "", k); v = $i; sub(/^[^=]*=/, "", v); f[k] = v }
		print f["order"] "\t" f["payment"] "\t" f["corr"] "\t" f["cmd"] "\t" f["outcome"]
	}' "$SVC_LOG" >"$WORK/decisions.tsv"
wt_sql "$DB" "CREATE TABLE public.pm_decisions (order_id uuid, payment_id uuid, corr text PRIMARY KEY, cmd text, outcome text)"
oms_psql -d "$DB" -c "\\copy public.pm_decisions FROM '$WORK/decisions.tsv'" >/dev/null
wt_diag "service: $(pm_count "$SVC_LOG" command) commands received ($(pm_count "$SVC_LOG" command dup=1) redelivered), $(pm_count "$SVC_LOG" decision) decisions, $(pm_count "$SVC_LOG" reply) replies"

if ! out=$(PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" "$OMS_PG_BINDIR/psql" -X -q -At -F '|' -v ON_ERROR_STOP=1 \
	-v expected="$N" -d "$DB" -f "$PM_DIR/load_checks.sql" 2>&1); then
	wt_not_ok "load checks ran" "$out"
else
	while IFS='|' read -r name ok detail; do
		[[ -n "$name" ]] || continue
		if [[ "$ok" == t ]]; then wt_ok "$name"; else wt_not_ok "$name" "$detail"; fi
	done <<<"$out"
fi

wt_diag "reply consumer since the crash restart: $(wt_sql_quiet "$DB" "SELECT format('applied %s, duplicates %s, late %s, rejected %s, failures %s',
	s ->> 'applied', s ->> 'duplicates', s ->> 'late', s ->> 'rejected', s ->> 'failures') FROM oms._inbox_shmem_status() AS s")"
errors=$(grep -E 'oms (saga )?worker: (ERROR|PANIC):|event=(saga_error|worker_batch_failed)' "$WT_LOG" || true)
wt_check "no oms worker logged an ERROR and no saga failed to advance" "$([[ -z "$errors" ]] && echo 0 || echo 1)" \
	"$(head -n 10 <<<"$errors")"
wt_diag "suite took $(wt_elapsed "$T0") s"

exit "$WT_RC"
