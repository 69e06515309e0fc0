#!/usr/bin/env bash
# bench/run.sh: the runner behind "make bench".
# Owns: a throwaway cluster with normal durability (fsync on), database
# oms_bench (served by the oms worker: oms.database_name), and pgbench runs
# of bench/*.sql: oms_create_order against the same writes done in raw SQL,
# measured in the same run; then the end-to-end saga run
# (saga_create_pay.sql: create + pay, the worker confirms) at the maximum
# rate and at half the maximum create+pay rate (pgbench -R), reporting
# confirmed orders/s and pay -> confirmed latency from the timeline.  It
# reports ratios; it never fails because of timing (only when a script
# itself errors).
# Then (part "workers", bench/saga_workers.sh) saga capacity and throughput
# under load for several values of oms.saga_workers.
# Then the outbox relay benchmark (bench/relay.sh): drain rate of a 500,000
# event backlog against its PG-side ceiling, commit -> ack latency at 1,000
# events/s, and the outbox size over a sustained run, against the mock Kafka
# cluster of test/kafka.
# Then (part "remote", bench/payment_remote.sh) the same end-to-end saga
# run with the remote payment provider (oms.payment_provider = 'kafka': mock
# Kafka + the test payment service), reported next to the test-provider
# numbers of the same run.
# Then (part "flash", bench/flash_sale.sh) reserving on a hot SKU: the saga
# engine's confirmations/s on a SKU holding 0 to 20,000 live reservations
# against idle SKUs, and a 64-buyer single-SKU flash sale.
# Then (part "cluster", bench/cluster.sh) the router's overhead (orders/s
# through a PL/Proxy router against one shard directly) and a model of
# throughput with N shards from measured per-shard costs.
# Environment: BENCH_SECONDS (default 20) per measured run, BENCH_WARMUP
# (default 3) per warm-up run, BENCH_PARTS (default "create saga workers relay flash
# cluster") the parts to run (create: oms_create_order vs raw SQL; saga; workers; relay;
# flash; cluster; remote, not in the default),
# BENCH_SAGA=0 also skips the saga runs; BENCH_HISTORY_ORDERS (default
# 200000; 0 skips it) orders created before the "history" run of the create
# part (the issue's figure is at 1,000,000: BENCH_HISTORY_ORDERS=1000000);
# the relay part's own settings
# (BENCH_SUSTAIN_SECONDS, BENCH_RELAY_EVENTS, ...) are listed in bench/relay.sh,
# the cluster part's (BENCH_CLUSTER_SHARDS, ...) in bench/cluster.sh.
# The create part ends with the history run: BENCH_HISTORY_ORDERS orders
# created through the API (outbox emptied, vacuumed, checkpointed), then
# oms_create_order and the raw baseline measured again on top of them.
# The saga part ends with the engine capacity run: orders created and paid
# with the worker paused (oms.worker_enabled = off), then confirmed by the
# worker with no client running.
set -euo pipefail
# Let failures inside $(...) stop the script too.
shopt -s inherit_errexit

# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../test/lib.sh"

BENCH_DIR="$OMS_ROOT/bench"
BENCH_SECONDS=${BENCH_SECONDS:-20}
BENCH_WARMUP=${BENCH_WARMUP:-3}
BENCH_CLIENTS=8
BENCH_JOBS=2
DB=oms_bench
BENCH_LOG_DIR="$OMS_LOG_DIR/bench"
# The first one is the reference the others are divided by.
RUNS=(baseline create_order baseline_multi)
BENCH_SAGA=${BENCH_SAGA:-1}
BENCH_HISTORY_ORDERS=${BENCH_HISTORY_ORDERS:-200000}
BENCH_PARTS=${BENCH_PARTS:-create saga workers relay flash cluster}
[[ "$BENCH_SAGA" != 0 ]] || BENCH_PARTS=${BENCH_PARTS//saga/}
# The saga run: SKUs in stock (each with plenty on hand) and how long the
# worker may take to drain the backlog after a run.
SAGA_SKUS=10000
SAGA_ON_HAND=1000000000000
SAGA_DRAIN_LIMIT=180

# shellcheck source=bench/relay.sh
source "$BENCH_DIR/relay.sh"
# shellcheck source=bench/payment_remote.sh
source "$BENCH_DIR/payment_remote.sh"
# shellcheck source=bench/saga_workers.sh
source "$BENCH_DIR/saga_workers.sh"
# shellcheck source=bench/flash_sale.sh
source "$BENCH_DIR/flash_sale.sh"
# shellcheck source=bench/cluster.sh
source "$BENCH_DIR/cluster.sh"

declare -A TPS=() ROWS=()
# Per saga run (max, half): create+pay tps, confirmed/s, p50/p99 ms, ...
declare -A SAGA=()
# The history run (create part) and the engine capacity run (saga part).
declare -A HIST=() CAP=()

describe() {
	case $1 in
	baseline) echo "raw SQL, one statement" ;;
	create_order) echo "oms_create_order()" ;;
	baseline_multi) echo "raw SQL, 4 INSERTs in BEGIN/COMMIT" ;;
	*) echo "$1" ;;
	esac
}

# Every run starts from empty tables and a fresh checkpoint, so no run pays
# for the previous one's dirty buffers or bigger indexes.
reset_tables() {
	oms_psql -d "$DB" \
		-c "SET client_min_messages = warning" \
		-c "TRUNCATE oms.orders, oms.order_items, oms.order_events, oms.outbox, oms.idempotency_keys CASCADE" \
		-c "CHECKPOINT"
}

# Runs one pgbench script; prints the tps (excluding connection time).
# Usage: pgbench_tps NAME SECONDS warmup|measure
pgbench_tps() {
	local name=$1 seconds=$2 log="$BENCH_LOG_DIR/$1.$3.log"
	if ! "$OMS_PG_BINDIR/pgbench" -n -c "$BENCH_CLIENTS" -j "$BENCH_JOBS" -T "$seconds" \
		-f "$BENCH_DIR/$name.sql" "$DB" >"$log" 2>&1; then
		oms_warn "pgbench failed for bench/$name.sql (log: $log):"
		tail -n 30 "$log" >&2
		oms_server_log_tail 20
		return 1
	fi
	awk '/^tps = / { print $3; exit }' "$log"
}

# Rows each order left behind, to show the variants write the same thing.
rows_per_order() {
	oms_psql -d "$DB" -At -c "
		SELECT pg_catalog.format('%s/%s/%s',
			round((SELECT count(*) FROM oms.order_items)::numeric / n, 1),
			round((SELECT count(*) FROM oms.order_events)::numeric / n, 1),
			round((SELECT count(*) FROM oms.outbox)::numeric / n, 1))
		FROM (SELECT nullif(count(*), 0) AS n FROM oms.orders) s"
}

bench_one() {
	local name=$1 tps
	printf 'running %-16s warm-up %ss, measure %ss ... ' "$name" "$BENCH_WARMUP" "$BENCH_SECONDS"
	reset_tables
	pgbench_tps "$name" "$BENCH_WARMUP" warmup >/dev/null
	reset_tables
	tps=$(pgbench_tps "$name" "$BENCH_SECONDS" measure)
	[[ -n "$tps" ]] || oms_die "no tps line in pgbench output for $name"
	TPS[$name]=$tps
	ROWS[$name]=$(rows_per_order)
	printf '%s tps\n' "$tps"
}

# ------------------------------------------------------------ history run
# What history costs: BENCH_HISTORY_ORDERS orders created through the API
# (8 clients, pgbench -t), the outbox emptied (the relay keeps it near
# empty), vacuumed and checkpointed; then oms_create_order and the raw
# baseline are measured on top of them, without reset_tables.
bench_history() {
	local n=$BENCH_HISTORY_ORDERS per name tps log
	per=$(((n + BENCH_CLIENTS - 1) / BENCH_CLIENTS))
	printf 'history: creating %s orders ... ' "$((per * BENCH_CLIENTS))"
	reset_tables
	log="$BENCH_LOG_DIR/history.fill.log"
	if ! "$OMS_PG_BINDIR/pgbench" -n -c "$BENCH_CLIENTS" -j "$BENCH_JOBS" -t "$per" \
		-f "$BENCH_DIR/create_order.sql" "$DB" >"$log" 2>&1; then
		oms_warn "pgbench failed for the history fill (log: $log):"
		tail -n 30 "$log" >&2
		return 1
	fi
	oms_psql -d "$DB" -c "SET client_min_messages = warning" -c "TRUNCATE oms.outbox" \
		-c "VACUUM ANALYZE" -c "CHECKPOINT" >/dev/null
	printf 'done\n'
	for name in baseline create_order; do
		printf 'running %-16s on history, measure %ss ... ' "$name" "$BENCH_SECONDS"
		tps=$(pgbench_tps "$name" "$BENCH_SECONDS" history)
		[[ -n "$tps" ]] || oms_die "no tps line in pgbench output for $name (history)"
		HIST[$name]=$tps
		printf '%s tps\n' "$tps"
		# Like the relay would: the next run starts with an empty outbox.
		oms_psql -d "$DB" -c "TRUNCATE oms.outbox" -c "CHECKPOINT" >/dev/null
	done
	HIST[orders]=$(oms_psql -d "$DB" -At -c "SELECT count(*) FROM oms.orders")
}

report_history() {
	local empty hist
	[[ -n "${HIST[create_order]:-}" ]] || return 0
	empty=$(ratio "${TPS[create_order]}" "${TPS[baseline]}")
	hist=$(ratio "${HIST[create_order]}" "${HIST[baseline]}")
	printf '\nhistory (%s orders in the tables at the end; BENCH_HISTORY_ORDERS=%s):\n' "${HIST[orders]}" \
		"$BENCH_HISTORY_ORDERS"
	printf '%-16s %12s %12s %9s\n' name "empty tps" "history tps" "history/empty"
	printf '%-16s %12.1f %12.1f %9s\n' baseline "${TPS[baseline]}" "${HIST[baseline]}" \
		"$(ratio "${HIST[baseline]}" "${TPS[baseline]}")"
	printf '%-16s %12.1f %12.1f %9s\n' create_order "${TPS[create_order]}" "${HIST[create_order]}" \
		"$(ratio "${HIST[create_order]}" "${TPS[create_order]}")"
	printf 'create/raw: %s on empty tables, %s with history: history/empty = %s (target >= 0.90)\n' \
		"$empty" "$hist" "$(ratio "$hist" "$empty")"
}

# ------------------------------------------------------ end-to-end saga run
# Empty tables, fresh stock, a checkpoint: like reset_tables, plus the saga side.
reset_saga_tables() {
	oms_psql -d "$DB" \
		-c "SET client_min_messages = warning" \
		-c "TRUNCATE oms.orders, oms.order_items, oms.order_events, oms.outbox, oms.idempotency_keys, oms.stock CASCADE" \
		-c "INSERT INTO oms.stock (sku, on_hand) SELECT 'SKU-' || i, $SAGA_ON_HAND FROM generate_series(1, $SAGA_SKUS) AS i" \
		-c "VACUUM ANALYZE oms.stock" \
		-c "CHECKPOINT"
}

# Server clock, so the window compares with the timeline's occurred_at.
server_now() { oms_psql -d "$DB" -At -c "SELECT clock_timestamp()"; }

sagas_in_flight() {
	oms_psql -d "$DB" -At -c "SELECT count(*) FROM oms.sagas WHERE status IN ('running', 'compensating')"
}

# Waits (polling) until the worker has no saga left; prints the seconds it
# took, or "timeout" after SAGA_DRAIN_LIMIT seconds.
wait_drained() {
	local start=$EPOCHREALTIME
	while (($(sagas_in_flight) > 0)); do
		if awk -v s="$start" -v n="$EPOCHREALTIME" -v d="$SAGA_DRAIN_LIMIT" 'BEGIN { exit !(n - s > d) }'; then
			echo timeout
			return 0
		fi
		sleep 0.2
	done
	awk -v s="$start" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.1f", n - s }'
}

# The worker must run before the saga runs start (the launcher finds the
# database on its next look, within oms.worker_naptime).
wait_worker() {
	local _
	for _ in $(seq 600); do
		[[ "$(oms_psql -d "$DB" -At -c "SELECT count(*) FROM oms_worker_status() WHERE database = current_database() AND alive")" == 1 ]] &&
			return 0
		sleep 0.1
	done
	oms_server_log_tail 30
	oms_die "the oms worker of $DB did not start"
}

# Usage: pgbench_saga LOGNAME SECONDS [pgbench options ...]; prints the tps.
pgbench_saga() {
	local seconds=$2 log="$BENCH_LOG_DIR/saga.$1.log"
	shift 2
	if ! "$OMS_PG_BINDIR/pgbench" -n -c "$BENCH_CLIENTS" -j "$BENCH_JOBS" -T "$seconds" "$@" \
		-D nskus="$SAGA_SKUS" -f "$BENCH_DIR/saga_create_pay.sql" "$DB" >"$log" 2>&1; then
		oms_warn "pgbench failed for bench/saga_create_pay.sql (log: $log):"
		tail -n 30 "$log" >&2
		oms_server_log_tail 20
		return 1
	fi
	awk '/^tps = / { print $3; exit }' "$log"
}

# Usage: saga_window_stats FROM TO -> "confirmed_per_s|p50|p99|paid|confirmed|not_confirmed"
# for the orders paid (order.processing) in [FROM, TO): confirmations per
# second within the window, pay -> confirmed latency in ms from the timeline.
saga_window_stats() {
	oms_psql -d "$DB" -At -c "
		WITH w AS (SELECT '$1'::timestamptz AS t0, '$2'::timestamptz AS t1),
		paid AS (
			SELECT p.order_id, p.occurred_at AS paid_at, c.occurred_at AS confirmed_at
			FROM oms.order_events AS p CROSS JOIN w
			LEFT JOIN oms.order_events AS c ON c.order_id = p.order_id AND c.event_type = 'order.confirmed'
			WHERE p.event_type = 'order.processing' AND p.occurred_at >= w.t0 AND p.occurred_at < w.t1
		), lat AS (
			SELECT extract(epoch FROM confirmed_at - paid_at) * 1000 AS ms FROM paid WHERE confirmed_at IS NOT NULL
		)
		SELECT format('%s|%s|%s|%s|%s|%s',
			round((SELECT count(*) FROM oms.order_events AS c, w
				   WHERE c.event_type = 'order.confirmed' AND c.occurred_at >= w.t0 AND c.occurred_at < w.t1)
				  / extract(epoch FROM w.t1 - w.t0)::numeric, 1),
			(SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) FROM lat),
			(SELECT round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1) FROM lat),
			(SELECT count(*) FROM paid),
			(SELECT count(*) FROM paid WHERE confirmed_at IS NOT NULL),
			(SELECT count(*) FROM paid WHERE confirmed_at IS NULL))
		FROM w"
}

# Usage: saga_run KEY SECONDS [pgbench options]: one measured saga run.
# The window skips the first fifth of the run (at most 3 s) as ramp-up.
saga_run() {
	local key=$1 seconds=$2 t0 t1 from tps backlog drain stats
	shift 2
	reset_saga_tables
	t0=$(server_now)
	tps=$(pgbench_saga "$key" "$seconds" "$@")
	t1=$(server_now)
	[[ -n "$tps" ]] || oms_die "no tps line in pgbench output for the saga run ($key)"
	backlog=$(sagas_in_flight)
	drain=$(wait_drained)
	from=$(oms_psql -d "$DB" -At -c "SELECT '$t0'::timestamptz + least(interval '3 s', ('$t1'::timestamptz - '$t0') / 5)")
	stats=$(saga_window_stats "$from" "$t1")
	IFS='|' read -r "SAGA[$key.confirmed]" "SAGA[$key.p50]" "SAGA[$key.p99]" "SAGA[$key.paid]" \
		"SAGA[$key.ok]" "SAGA[$key.missing]" <<<"$stats"
	SAGA[$key.tps]=$tps
	SAGA[$key.backlog]=$backlog
	SAGA[$key.drain]=$drain
}

bench_saga() {
	local half
	oms_header "end-to-end saga: create + pay (test_ok), the oms worker confirms"
	wait_worker
	printf 'running saga_create_pay  warm-up %ss ... ' "$BENCH_WARMUP"
	reset_saga_tables
	pgbench_saga warmup "$BENCH_WARMUP" >/dev/null
	printf 'drained in %s s\n' "$(wait_drained)"

	printf 'running saga max rate    measure %ss ... ' "$BENCH_SECONDS"
	saga_run max "$BENCH_SECONDS"
	printf '%s create+pay/s, %s confirmed/s (backlog %s, drained in %s s)\n' "${SAGA[max.tps]}" \
		"${SAGA[max.confirmed]}" "${SAGA[max.backlog]}" "${SAGA[max.drain]}"

	# Half the maximum create+pay rate the clients reached.
	half=$(awk -v a="${SAGA[max.tps]}" 'BEGIN { r = int(a / 2); print (r < 1) ? 1 : r }')
	SAGA[half.rate]=$half
	printf 'running saga half rate   measure %ss at -R %s ... ' "$BENCH_SECONDS" "$half"
	saga_run half "$BENCH_SECONDS" -R "$half"
	printf '%s create+pay/s, %s confirmed/s (backlog %s, drained in %s s)\n' "${SAGA[half.tps]}" \
		"${SAGA[half.confirmed]}" "${SAGA[half.backlog]}" "${SAGA[half.drain]}"

	bench_capacity
}

# ---------------------------------------------------- engine capacity run
# How fast one worker confirms with no client competing: orders created
# and paid for BENCH_SECONDS with the worker paused (oms.worker_enabled =
# off, a SIGHUP setting), then the worker is resumed and the backlog timed
# until no saga is left.
set_worker_enabled() {
	oms_psql -c "ALTER SYSTEM SET oms.worker_enabled = $1" -c "SELECT pg_catalog.pg_reload_conf()" >/dev/null
	# The worker reads the setting at its next wake-up.
	sleep 1
}

bench_capacity() {
	local tps start secs n
	printf 'running engine capacity  fill %ss with the worker paused ... ' "$BENCH_SECONDS"
	reset_saga_tables
	set_worker_enabled off
	tps=$(pgbench_saga capacity "$BENCH_SECONDS")
	[[ -n "$tps" ]] || oms_die "no tps line in pgbench output for the capacity run"
	n=$(sagas_in_flight)
	oms_psql -d "$DB" -c "CHECKPOINT" >/dev/null
	start=$EPOCHREALTIME
	set_worker_enabled on
	secs=$(wait_drained)
	if [[ "$secs" != timeout ]]; then
		secs=$(awk -v s="$start" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.1f", n - s }')
	fi
	CAP[tps]=$tps
	CAP[sagas]=$n
	CAP[secs]=$secs
	CAP[rate]=$(awk -v n="$n" -v s="$secs" 'BEGIN { if (s + 0 > 0) printf "%.1f", n / s; else print "n/a" }')
	printf '%s sagas confirmed in %s s: %s orders/s\n' "$n" "$secs" "${CAP[rate]}"
}

report_saga() {
	local ref=${RUNS[0]} key label
	oms_header "end-to-end saga results"
	printf '%-22s %12s %12s %10s %10s %8s %8s  %s\n' run "create+pay/s" confirmed/s "p50 ms" "p99 ms" paid "not conf" "backlog at end / drained in"
	for key in max half; do
		case $key in
		max) label="max rate" ;;
		half) label="half rate (-R ${SAGA[half.rate]})" ;;
		esac
		printf '%-22s %12.1f %12.1f %10s %10s %8s %8s  %s sagas / %s s\n' "$label" "${SAGA[$key.tps]}" \
			"${SAGA[$key.confirmed]}" "${SAGA[$key.p50]:-n/a}" "${SAGA[$key.p99]:-n/a}" "${SAGA[$key.paid]}" \
			"${SAGA[$key.missing]}" "${SAGA[$key.backlog]}" "${SAGA[$key.drain]}"
	done
	if [[ -n "${TPS[$ref]:-}" ]]; then
		printf '%-22s %12.1f %12s  %s\n' "raw SQL baseline" "${TPS[$ref]}" "" "tps of bench/$ref.sql in this run"
	fi
	printf '\nconfirmed/s: order.confirmed timeline entries per second in the window (the run minus its first\n'
	printf 'fifth, at most 3 s); latency: order.processing -> order.confirmed occurred_at of the orders paid\n'
	printf 'in the window; "not conf": of those, not confirmed after the drain.  At max rate a worker\n'
	printf 'that falls behind builds a backlog, so that latency is mostly queueing; the half-rate run\n'
	printf '(pgbench -R, half the max create+pay/s) shows the latency when the worker keeps up.\n'
	printf '\nconfirmed orders/s / raw SQL (one statement) tps = %s (target >= 0.5)\n' \
		"$(ratio "${SAGA[max.confirmed]}" "${TPS[$ref]:-}")"
	printf 'p99 pay -> confirmed at half rate = %s ms (target < 100 ms)\n' "${SAGA[half.p99]:-n/a}"
	if [[ -n "${CAP[rate]:-}" ]]; then
		printf '\nengine capacity: %s orders created and paid with the worker paused (%s create+pay/s), then\n' \
			"${CAP[sagas]}" "${CAP[tps]}"
		printf 'confirmed by the workers (oms.saga_workers = %s) with no client running in %s s (the time\n' \
			"$(oms_psql -d "$DB" -At -c "SHOW oms.saga_workers")" "${CAP[secs]}"
		printf 'includes up to 1 s for the '
		printf 'worker to notice it was resumed): %s orders/s; / raw SQL (one statement) tps = %s (target >= 0.5)\n' \
			"${CAP[rate]}" "$(ratio "${CAP[rate]}" "${TPS[$ref]:-}")"
	fi
	if [[ "${SAGA[half.backlog]}" != 0 ]]; then
		printf '(at half rate the worker still fell behind: %s sagas were waiting when the run ended)\n' \
			"${SAGA[half.backlog]}"
	fi
}

# Is this part in BENCH_PARTS?
part() { [[ " $BENCH_PARTS " == *" $1 "* ]]; }

ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'
}

report() {
	local ref=${RUNS[0]} name
	oms_header "results"
	printf '%-16s %12s %9s  %-22s %s\n' name tps "vs ${ref}" "items/events/outbox" "what"
	for name in "${RUNS[@]}"; do
		printf '%-16s %12.1f %9s  %-22s %s\n' "$name" "${TPS[$name]}" \
			"$(ratio "${TPS[$name]}" "${TPS[$ref]}")" "${ROWS[$name]} per order" "$(describe "$name")"
	done
	printf '\noms_create_order / raw SQL (one statement) = %s (target >= 0.80)\n' \
		"$(ratio "${TPS[create_order]}" "${TPS[$ref]}")"
	report_history
}

main() {
	[[ "$BENCH_SECONDS" =~ ^[1-9][0-9]*$ ]] || oms_die "BENCH_SECONDS must be a positive integer"
	[[ "$BENCH_WARMUP" =~ ^[1-9][0-9]*$ ]] || oms_die "BENCH_WARMUP must be a positive integer"
	[[ "$BENCH_HISTORY_ORDERS" =~ ^[0-9]+$ ]] || oms_die "BENCH_HISTORY_ORDERS must be a number of orders"
	local name
	for name in $BENCH_PARTS; do
		[[ "$name" =~ ^(create|saga|workers|relay|remote|flash|cluster)$ ]] ||
			oms_die "unknown part '$name' in BENCH_PARTS (create, saga, workers, relay, remote, flash, cluster)"
	done
	oms_ensure_packages
	oms_build_install
	mkdir -p "$BENCH_LOG_DIR"
	# Default durability on purpose: fsync off would flatter every variant.
	oms_start_cluster -- "oms.database_name = '$DB'"
	oms_fresh_db "$DB"
	oms_header "oms benchmark"
	printf 'machine: %s cores; pgbench -n -c %s -j %s -T %s (warm-up -T %s); simple query protocol\n' \
		"$(nproc)" "$BENCH_CLIENTS" "$BENCH_JOBS" "$BENCH_SECONDS" "$BENCH_WARMUP"
	printf 'server: fsync on, synchronous_commit on (defaults); logs in %s\n' "$BENCH_LOG_DIR"
	printf 'parts: %s\n\n' "$(xargs <<<"$BENCH_PARTS")"
	if part create; then
		for name in "${RUNS[@]}"; do
			bench_one "$name"
		done
		if ((BENCH_HISTORY_ORDERS > 0)); then bench_history; fi
	fi
	if part saga; then bench_saga; fi
	if part workers; then bench_saga_workers; fi
	if part relay; then bench_relay; fi
	if part remote; then bench_remote; fi
	if part flash; then bench_flash_sale; fi
	if part cluster; then bench_cluster; fi
	if part create; then report; fi
	if part saga; then report_saga; fi
	if part workers; then report_saga_workers; fi
	if part relay; then report_relay; fi
	if part remote; then report_remote; fi
	if part flash; then report_flash_sale; fi
	if part cluster; then report_cluster; fi
}

main "$@"
