# shellcheck shell=bash
# bench/payment_remote.sh: the "remote" part of bench/run.sh (sourced).
# Owns: the end-to-end saga measurement of the "saga" part (create + pay
# with test_ok, the worker confirms; saga_run in run.sh), but with the
# remote payment provider: oms.payment_provider = 'kafka', the relay
# publishing the charge commands to the mock Kafka (test/kafka), the test
# payment service (test/payment/service.py) answering them, and the worker
# consuming the replies (oms.inbox).  Results go to SAGA[remote.*] and
# SAGA[remote_half.*], printed next to the test-provider numbers.

# shellcheck source=test/kafka/broker.sh
source "$OMS_ROOT/test/kafka/broker.sh"
# shellcheck source=test/process/common.sh
source "$OMS_ROOT/test/process/common.sh"
# shellcheck source=test/payment/lib.sh
source "$OMS_ROOT/test/payment/lib.sh"

remote_set() {
	oms_psql -d "$DB" -c "ALTER SYSTEM SET $1 = '${2//\'/\'\'}'" -c "SELECT pg_catalog.pg_reload_conf()" >/dev/null
}

remote_consumer_running() {
	[[ "$(oms_psql -d "$DB" -At -c "SELECT oms._inbox_shmem_status() ->> 'consumer'")" == running ]]
}

bench_remote() {
	local half
	oms_header "end-to-end saga, remote provider: create + pay (test_ok) through Kafka and the payment service"
	if [[ -z "${OMS_KAFKA_PID:-}" ]] || ! kill -0 "$OMS_KAFKA_PID" 2>/dev/null; then
		OMS_KAFKA_LOG_DIR="$BENCH_LOG_DIR" oms_kafka_start --partitions 3 --topic oms.order-events \
			--topic "$PM_COMMANDS_TOPIC" --topic "$PM_REPLIES_TOPIC"
	else
		# The relay part's broker: add the payment topics.
		oms_kafka_cmd "create $PM_COMMANDS_TOPIC 3" >/dev/null
		oms_kafka_cmd "create $PM_REPLIES_TOPIC 3" >/dev/null
	fi
	PM_MAX_SECONDS=3600 pm_service_start "$BENCH_LOG_DIR/payment_service.log" ||
		oms_die "the test payment service did not start (log: $BENCH_LOG_DIR/payment_service.log.err)"
	# The relay carries the commands; the worker (and every new session) uses the provider.
	remote_set oms.kafka_brokers "$OMS_KAFKA_BOOTSTRAP"
	remote_set oms.payment_provider kafka
	wait_worker
	wt_wait_until 60 remote_consumer_running ||
		oms_die "the worker does not consume $PM_REPLIES_TOPIC: $(oms_psql -d "$DB" -At -c "SELECT oms._inbox_shmem_status()")"
	printf 'mock Kafka %s; payment service log %s\n' "$OMS_KAFKA_BOOTSTRAP" "$BENCH_LOG_DIR/payment_service.log"

	printf 'running remote saga      warm-up %ss ... ' "$BENCH_WARMUP"
	reset_saga_tables
	pgbench_saga remote.warmup "$BENCH_WARMUP" >/dev/null
	printf 'drained in %s s\n' "$(wait_drained)"

	printf 'running remote max rate  measure %ss ... ' "$BENCH_SECONDS"
	saga_run remote "$BENCH_SECONDS"
	printf '%s create+pay/s, %s confirmed/s (backlog %s, drained in %s s)\n' "${SAGA[remote.tps]}" \
		"${SAGA[remote.confirmed]}" "${SAGA[remote.backlog]}" "${SAGA[remote.drain]}"

	half=$(awk -v a="${SAGA[remote.tps]}" 'BEGIN { r = int(a / 2); print (r < 1) ? 1 : r }')
	SAGA["remote_half.rate"]=$half
	printf 'running remote half rate measure %ss at -R %s ... ' "$BENCH_SECONDS" "$half"
	saga_run remote_half "$BENCH_SECONDS" -R "$half"
	printf '%s create+pay/s, %s confirmed/s (backlog %s, drained in %s s)\n' "${SAGA[remote_half.tps]}" \
		"${SAGA[remote_half.confirmed]}" "${SAGA[remote_half.backlog]}" "${SAGA[remote_half.drain]}"
	SAGA[remote.failed]=$(oms_psql -d "$DB" -At -c "SELECT count(*) FROM oms.orders WHERE status <> 'confirmed'")

	pm_service_stop
	oms_psql -d "$DB" -c "ALTER SYSTEM RESET oms.payment_provider" -c "ALTER SYSTEM RESET oms.kafka_brokers" \
		-c "SELECT pg_catalog.pg_reload_conf()" >/dev/null
}

# The remote runs next to the test-provider runs of this run (if any).
report_remote() {
	local key label
	oms_header "end-to-end saga results: test provider vs remote provider (Kafka + payment service)"
	printf '%-34s %12s %12s %10s %10s %8s %8s  %s\n' run "create+pay/s" confirmed/s "p50 ms" "p99 ms" paid "not conf" "backlog at end / drained in"
	for key in max half remote remote_half; do
		[[ -n "${SAGA[$key.tps]:-}" ]] || continue
		case $key in
		max) label="test provider, max rate" ;;
		half) label="test provider, half (-R ${SAGA[half.rate]})" ;;
		remote) label="remote (kafka), max rate" ;;
		remote_half) label="remote (kafka), half (-R ${SAGA[remote_half.rate]})" ;;
		esac
		printf '%-34s %12.1f %12.1f %10s %10s %8s %8s  %s sagas / %s s\n' "$label" "${SAGA[$key.tps]}" \
			"${SAGA[$key.confirmed]}" "${SAGA[$key.p50]:-n/a}" "${SAGA[$key.p99]:-n/a}" "${SAGA[$key.paid]}" \
			"${SAGA[$key.missing]}" "${SAGA[$key.backlog]}" "${SAGA[$key.drain]}"
	done
	printf '\nsame measurement as the saga part; the remote pay step sends a charge command through the\n'
	printf 'outbox relay and waits for the service'"'"'s reply consumed from %s (oms.inbox).\n' "$PM_REPLIES_TOPIC"
	printf 'orders not confirmed after the last remote run drained: %s\n' "${SAGA[remote.failed]}"
	if [[ -n "${SAGA[max.confirmed]:-}" ]]; then
		printf 'remote / test provider confirmed/s at max rate = %s\n' "$(ratio "${SAGA[remote.confirmed]}" "${SAGA[max.confirmed]}")"
	fi
}
