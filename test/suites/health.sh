#!/usr/bin/env bash
# test/suites/health.sh: oms_health() of a served database, in each
# condition, against a real worker and the mock Kafka broker.
#
# This suite's own cluster serves the database "health" and publishes to a
# one-broker mock Kafka cluster (test/kafka), with a breaker that opens after
# 2 failed batches for 1 s, oms.relay_ack_timeout = 1s,
# oms.worker_naptime = 200ms, and small health thresholds (outbox lag 2 s,
# worker timeout 3 s) so that the conditions show up quickly:
#   healthy        worker running, relay on, orders confirmed and published: ok
#   dead letters   an event the broker refuses for good (injected
#                  MSG_SIZE_TOO_LARGE): degraded, dead_letters; replayed: ok
#   broker down    every broker down while orders are created: degraded with
#                  breaker_open and outbox_lag; brokers back: ok again, the
#                  backlog published
#   remote payments  oms.payment_provider = kafka: the reply consumer runs
#                  and shows in the inbox section; still ok
#   paused         oms.worker_enabled = off: down, worker_paused; on: ok
#   stalled        the worker process stopped with SIGSTOP (alive, but its
#                  loop no longer advances): down, worker_stalled; SIGCONT: ok
#   stopped        the launcher stopped with SIGSTOP so it cannot start a new
#                  worker, the worker terminated: down, worker_not_running;
#                  launcher resumed: a new worker, ok
# The worker, relay and saga metrics of oms.metrics (the rows of
# oms_metrics()) are checked in the healthy, broker down and stopped
# conditions too: the regress and exporter tests run in unserved databases.
# Conditions are polled with generous deadlines that only guard against a
# hang; nothing asserts how long anything took.
# shellcheck disable=SC2317 # functions here are called indirectly (wait loops, exit hooks), which shellcheck 0.9 cannot follow
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"
# shellcheck source=test/kafka/broker.sh
source "$OMS_ROOT/test/kafka/broker.sh"

DB=health
TOPIC=oms.order-events
DEADLINE=60
STOPPED_PIDS=()

# Processes this suite stopped with SIGSTOP are resumed before the cluster
# stops, whatever happened.
resume_stopped() {
	local pid
	for pid in "${STOPPED_PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; done
	STOPPED_PIDS=()
}
cleanup() {
	resume_stopped
	wt_keep_log health
}

# Main shell, not $(...): the broker lives as long as this script.
oms_kafka_start --brokers 1 --topic "$TOPIC" --partitions 2
wt_start_cluster "oms.database_name = '$DB'" \
	"oms.kafka_brokers = '$OMS_KAFKA_BOOTSTRAP'" \
	"oms.relay_ack_timeout = '1s'" \
	"oms.relay_breaker_failures = 2" \
	"oms.relay_breaker_cooldown = '1s'" \
	"oms.retry_base = '100ms'" \
	"oms.retry_max = '1s'" \
	"oms.worker_naptime = 200" \
	"oms.health_outbox_lag = '2s'" \
	"oms.health_worker_timeout = '3s'"
# Registered after the cluster, so it runs before the cluster is removed.
oms_on_exit cleanup
wt_diag "mock Kafka: $OMS_KAFKA_BOOTSTRAP, topic $TOPIC"
oms_fresh_db "$DB" >/dev/null
wt_setup_stock "$DB" 3 100000000

ITEMS='[{"sku": "SKU-01", "quantity": 1, "unit_price": 250}]'
health() { wt_sql_quiet "$DB" "SELECT oms_health()"; }
status() { wt_sql_quiet "$DB" "SELECT oms_health() ->> 'status'"; }
reasons() {
	wt_sql_quiet "$DB" "SELECT coalesce(string_agg(r ->> 'code', ',' ORDER BY r ->> 'code'), '')
		FROM jsonb_array_elements(oms_health() -> 'reasons') AS r"
}
# Usage: status_is STATUS [REASONS]: the status, and exactly these reason codes (sorted, comma-separated).
status_is() { [[ "$(status)" == "$1" && "$(reasons)" == "${2:-}" ]]; }
# Usage: has_reasons STATUS CODE...: the status, and at least these reason codes.
has_reasons() {
	local want=$1 have code
	shift
	[[ "$(status)" == "$want" ]] || return 1
	have=",$(reasons),"
	for code in "$@"; do [[ "$have" == *",$code,"* ]] || return 1; done
}
# Usage: metric NAME [LABELS_JSON]: the value of one sample of oms.metrics
# (the rows behind oms_metrics()), as an integer.
metric() {
	local labels=${2:-"{}"}
	wt_sql_quiet "$DB" "SELECT value::bigint FROM oms.metrics WHERE metric = '$1' AND labels = '$labels'::jsonb"
}
worker_pid() { wt_worker_pid "$DB"; }
worker_up() { [[ -n "$(worker_pid)" ]]; }
launcher_pid() { wt_sql_quiet postgres "SELECT pid FROM pg_stat_activity WHERE backend_type = 'oms launcher'"; }
# Usage: pay_orders PREFIX COUNT: COUNT orders created and paid, each in its own transaction.
pay_orders() {
	local i
	for ((i = 1; i <= $2; i++)); do
		wt_sql "$DB" "SELECT 1 FROM oms_pay_order((oms_create_order('$1-$i', '$ITEMS', 'EUR') ->> 'order_id')::uuid, 'test_ok')" >/dev/null
	done
}
settled() {
	wt_sql_true "$DB" "SELECT NOT EXISTS (SELECT FROM oms.outbox)
		AND NOT EXISTS (SELECT FROM oms.sagas WHERE status IN ('running', 'compensating'))"
}
# Usage: expect NAME CONDITION...: polls the condition, prints ok or not ok with the document.
expect() {
	local name=$1
	shift
	if wt_wait_until "$DEADLINE" "$@"; then
		wt_ok "$name"
	else
		wt_not_ok "$name" "status: $(status), reasons: $(reasons)" "$(health)"
	fi
}

if ! wt_wait_until "$DEADLINE" worker_up; then
	wt_not_ok "a worker serves $DB" "$(tail -n 20 "$WT_LOG")"
	exit 1
fi

# ============================================================ healthy
pay_orders ok 5
wt_wait_until "$DEADLINE" settled || true
expect "healthy: worker running, relay on, everything published: ok without reasons" status_is ok ""
doc=$(health)
wt_check "healthy: the document shows the live worker, the relay and an empty outbox" \
	"$(wt_sql "$DB" "SELECT (d #>> '{worker,alive}')::boolean AND (d #>> '{worker,pid}')::int = $(worker_pid)
		AND (d #>> '{outbox,relay_enabled}')::boolean AND (d #>> '{outbox,pending}')::int = 0
		AND d #>> '{outbox,breaker}' = 'closed' AND d #>> '{outbox,last_publish_at}' IS NOT NULL
		AND (d #>> '{thresholds,outbox_lag_ms}')::int = 2000 AND (d #>> '{thresholds,worker_timeout_ms}')::int = 3000
		AND jsonb_array_length(d -> 'workers') = 1
		FROM (SELECT '$doc'::jsonb AS d) AS x")" "$doc"

published=$(wt_sql_quiet "$DB" "SELECT oms_relay_status() ->> 'published_total'")
wt_check "healthy: the metrics of a served database: worker up, loops counted, every event published, 5 sagas confirmed" \
	"$([[ "$(metric oms_worker_up)" == 1 && "$(metric oms_worker_loops_total)" -gt 0 && "$published" -ge 15 &&
		"$(metric oms_relay_published_events_total)" -ge "$published" && "$(metric oms_relay_breaker_open)" == 0 &&
		"$(metric oms_saga_outcomes_total '{"kind": "fulfilment", "outcome": "confirmed"}')" == 5 ]] && echo 0 || echo 1)" \
	"$(wt_sql_quiet "$DB" "SELECT oms_metrics()" | grep -E '^oms_(worker|relay|saga_outcomes)')"

# ============================================================ dead letters
oms_kafka_cmd "error Produce MSG_SIZE_TOO_LARGE 1" >/dev/null
pay_orders dl 1
publish_letter() { [[ "$(wt_sql_quiet "$DB" "SELECT count(*) FROM oms.dead_letters WHERE kind = 'publish' AND status = 'open'")" == 1 ]]; }
wt_wait_until "$DEADLINE" publish_letter || true
oms_kafka_cmd "clear Produce" >/dev/null
expect "dead letters: an event refused for good makes it degraded with reason dead_letters" \
	status_is degraded dead_letters
wt_sql "$DB" "SELECT oms_retry_dead_letter(id) FROM oms.dead_letters WHERE kind = 'publish' AND status = 'open'" >/dev/null
expect "dead letters: replayed and published, ok again" status_is ok ""

# ============================================================ broker down
oms_kafka_cmd "down all" >/dev/null
pay_orders down 5
expect "broker down: degraded with breaker_open and outbox_lag" has_reasons degraded breaker_open outbox_lag
breaker_metric_open() { [[ "$(metric oms_relay_breaker_open)" == 1 && "$(metric oms_relay_publish_failures_total)" -gt 0 ]]; }
expect "broker down: the metrics show the open breaker and the failed attempts" breaker_metric_open
wt_check "broker down: the worker is still fine (no down reason)" \
	"$([[ ",$(reasons)," != *",worker_"* && ",$(reasons)," != *",not_served,"* ]] && echo 0 || echo 1)" "$(reasons)"
pay_orders down-more 2
oms_kafka_cmd "up all" >/dev/null
expect "broker back: ok again" status_is ok ""
expect "broker back: the backlog was published" settled

# ============================================================ remote payments
wt_set_sighup oms.payment_provider kafka
consumer_running() {
	wt_sql_true "$DB" "SELECT oms_health() #>> '{inbox,consumer}' = 'running' AND (oms_health() #>> '{inbox,enabled}')::boolean"
}
expect "remote payments: the reply consumer runs and shows in the inbox section" consumer_running
expect "remote payments: ok" status_is ok ""
wt_sql postgres "ALTER SYSTEM RESET oms.payment_provider" >/dev/null
wt_sql postgres "SELECT pg_reload_conf()" >/dev/null

# ============================================================ paused
wt_set_sighup oms.worker_enabled off
expect "paused: oms.worker_enabled = off is down with reason worker_paused" status_is down worker_paused
wt_set_sighup oms.worker_enabled on
expect "paused: on again, ok" status_is ok ""

# ============================================================ stalled
PID=$(worker_pid)
kill -STOP "$PID"
STOPPED_PIDS+=("$PID")
expect "stalled: a worker whose loop stopped is down with reason worker_stalled" status_is down worker_stalled
wt_check "stalled: it is still the same, live process" \
	"$(wt_sql "$DB" "SELECT (oms_health() #>> '{worker,pid}')::int = $PID AND (oms_health() #>> '{worker,alive}')::boolean")"
resume_stopped
expect "stalled: resumed, ok" status_is ok ""

# ============================================================ stopped
LAUNCHER=$(launcher_pid)
PID=$(worker_pid)
kill -STOP "$LAUNCHER"
STOPPED_PIDS+=("$LAUNCHER")
wt_sql postgres "SELECT pg_terminate_backend($PID)" >/dev/null
worker_gone() { [[ -z "$(worker_pid)" ]]; }
wt_wait_until "$DEADLINE" worker_gone || true
expect "stopped: no worker process is down with reason worker_not_running" status_is down worker_not_running
wt_check "stopped: the metrics say the worker is down" "$([[ "$(metric oms_worker_up)" == 0 ]] && echo 0 || echo 1)"
wt_check "stopped: the worker's pid is gone from the document" \
	"$(wt_sql "$DB" "SELECT oms_health() #> '{worker,pid}' = 'null' AND NOT (oms_health() #>> '{worker,alive}')::boolean")"
resume_stopped
new_worker() { local p; p=$(worker_pid); [[ -n "$p" && "$p" != "$PID" ]]; }
expect "stopped: the launcher starts a new worker" new_worker
pay_orders after 2
expect "stopped: with the new worker, ok again" status_is ok ""
expect "stopped: the new worker ran the new orders and published their events" settled

exit "$WT_RC"
