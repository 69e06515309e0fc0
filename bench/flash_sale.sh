# shellcheck shell=bash
# bench/flash_sale.sh: the "flash" part of "make bench": what a reservation
# costs when one SKU is hot.  Sourced by bench/run.sh, which owns the
# cluster, $DB, the BENCH_* settings and the helpers used here (oms_psql,
# server_now, wait_worker, wait_drained, saga_window_stats, ratio);
# bench_flash_sale runs the part, report_flash_sale prints its results.
#
# (a) Reserve cost against live reservations.  SKU FLASH-HOT holds N live
#     reservations (N in BENCH_FLASH_HELD, default "0 5000 20000"): N orders
#     created and reserved but not paid, written in raw SQL (expiring in an
#     hour).  Then BENCH_FLASH_ORDERS (2000) orders of one unit, each on
#     FLASH-HOT ("hot") or on a random one of 10,000 idle SKUs ("idle"), are
#     created and paid (test_ok) while the worker is off, and one session
#     drives the saga engine through them with oms_run_sagas(100) per
#     transaction (the worker's batch size) until none is due: reserve, pay
#     and confirm, as the worker would, without pgbench clients competing
#     for the CPU.  Reported: confirmed orders/s, the mean time of one
#     oms._reserve_order call (pg_stat_user_functions), and hot/idle.  The
#     goal is hot/idle >= 0.8 at 20,000 held: reserving must not read the
#     SKU's reservations.
# (b) Single-SKU flash sale.  BENCH_FLASH_BUYERS (64) pgbench clients each
#     create and pay orders of one unit of the same SKU for BENCH_SECONDS,
#     with the worker on; reported: create+pay/s, confirmed/s in the window
#     (the run minus its first fifth, at most 3 s), p50/p99 pay -> confirmed,
#     the backlog when the clients stop and the worker's confirmed/s while it
#     drains it alone, the wait events of the active sessions (sampled every
#     0.5 s) and whether stock and reservations agree (units confirmed =
#     units taken off the shelf).
#
# It reports; it never fails because of the numbers.

BENCH_FLASH_HELD=${BENCH_FLASH_HELD:-0 5000 20000}
BENCH_FLASH_ORDERS=${BENCH_FLASH_ORDERS:-2000}
BENCH_FLASH_BUYERS=${BENCH_FLASH_BUYERS:-64}
FLASH_IDLE_SKUS=10000
FLASH_ON_HAND=1000000000000

# Results: FLASH[key], keys like a.<N>.<hot|idle>.rate, b.tps, ...
declare -A FLASH=()

flash_sql() { oms_psql -d "$DB" -At "$@"; }

flash_worker() {
	oms_psql -d "$DB" -c "ALTER SYSTEM SET oms.worker_enabled = $1" -c "SELECT pg_catalog.pg_reload_conf()" >/dev/null
	# The worker takes the reload at the top of its next loop.
	sleep 1
}

# Empty order tables, the hot SKU and the idle ones; N held reservations on
# the hot SKU, as orders a shop created and reserved and whose payment is
# still pending.
flash_reset() {
	local held=$1
	oms_psql -d "$DB" \
		-c "SET client_min_messages = warning" \
		-c "TRUNCATE oms.orders, oms.order_items, oms.order_events, oms.outbox, oms.idempotency_keys, oms.stock CASCADE" \
		-c "INSERT INTO oms.stock (sku, on_hand) SELECT 'SKU-' || i, $FLASH_ON_HAND FROM generate_series(1, $FLASH_IDLE_SKUS) AS i" \
		-c "INSERT INTO oms.stock (sku, on_hand) VALUES ('FLASH-HOT', $FLASH_ON_HAND)" \
		-c "WITH o AS (
				INSERT INTO oms.orders (customer_id, status, currency, total, timeline_seq, event_seq)
				SELECT 'held-' || i, 'pending', 'USD', 100, 0, 0 FROM generate_series(1, $held) AS i
				RETURNING id
			), i AS (
				INSERT INTO oms.order_items (order_id, line_no, sku, quantity, unit_price, line_total)
				SELECT o.id, 1, 'FLASH-HOT', 1, 100, 100 FROM o
			)
			INSERT INTO oms.reservations (order_id, sku, quantity, status, expires_at)
			SELECT o.id, 'FLASH-HOT', 1, 'held', pg_catalog.now() + interval '1 hour' FROM o" \
		-c "VACUUM ANALYZE oms.stock, oms.reservations, oms.orders, oms.order_items" \
		-c "CHECKPOINT" >/dev/null
}

# Usage: flash_engine_run N hot|idle: one measured run of (a).
flash_engine_run() {
	local held=$1 target=$2 key="a.$1.$2" sku calls start end script
	flash_reset "$held"
	case $target in
	hot) sku="'FLASH-HOT'" ;;
	idle) sku="'SKU-' || (1 + (i * 7919) % $FLASH_IDLE_SKUS)" ;;
	esac
	flash_sql -c "SELECT count(oms_pay_order((oms_create_order('flash-' || i,
			pg_catalog.format('[{\"sku\": \"%s\", \"quantity\": 1, \"unit_price\": 100}]', $sku)::jsonb,
			'USD', NULL) ->> 'order_id')::uuid, 'test_ok', NULL))
		FROM generate_series(1, $BENCH_FLASH_ORDERS) AS i" >/dev/null
	flash_sql -c "CHECKPOINT" -c "SELECT pg_catalog.pg_stat_reset()" >/dev/null
	# Three steps per order, 100 per transaction, and a few to spare.
	calls=$((BENCH_FLASH_ORDERS * 3 / 100 + 5))
	script="$BENCH_LOG_DIR/flash.engine.sql"
	{
		echo "SET track_functions = 'pl';"
		for ((i = 0; i < calls; i++)); do echo "SELECT oms_run_sagas(100);"; done
	} >"$script"
	start=$EPOCHREALTIME
	oms_psql -d "$DB" -o /dev/null -f "$script"
	end=$EPOCHREALTIME
	sleep 0.6	# function statistics reach the shared stats within a second
	FLASH[$key.secs]=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')
	FLASH[$key.confirmed]=$(flash_sql -c "SELECT count(*) FROM oms.orders WHERE status = 'confirmed'")
	FLASH[$key.rate]=$(awk -v n="${FLASH[$key.confirmed]}" -v t="${FLASH[$key.secs]}" 'BEGIN { printf "%.1f", (t > 0) ? n / t : 0 }')
	FLASH[$key.reserve_ms]=$(flash_sql -c "SELECT coalesce(round((total_time / nullif(calls, 0))::numeric, 3)::text, 'n/a')
		FROM pg_catalog.pg_stat_user_functions WHERE schemaname = 'oms' AND funcname = '_reserve_order'")
	FLASH[$key.reserve_ms]=${FLASH[$key.reserve_ms]:-n/a}
}

bench_flash_engine() {
	local held target
	flash_worker off
	for held in $BENCH_FLASH_HELD; do
		for target in idle hot; do
			printf 'running flash (a) %-5s N=%-6s %s orders ... ' "$target" "$held" "$BENCH_FLASH_ORDERS"
			flash_engine_run "$held" "$target"
			printf '%s confirmed in %s s: %s/s, reserve %s ms\n' "${FLASH[a.$held.$target.confirmed]}" \
				"${FLASH[a.$held.$target.secs]}" "${FLASH[a.$held.$target.rate]}" "${FLASH[a.$held.$target.reserve_ms]}"
		done
	done
	flash_worker on
}

# ------------------------------------------------------ (b) the flash sale
flash_sample_waits() {
	local out=$1
	while :; do
		flash_sql -c "SELECT CASE WHEN backend_type = 'client backend' THEN 'buyer' ELSE pg_catalog.replace(backend_type, ' ', '_') END,
				coalesce(wait_event_type || ':' || wait_event, 'CPU')
			FROM pg_catalog.pg_stat_activity
			WHERE datname = current_database() AND state = 'active' AND pid <> pg_catalog.pg_backend_pid()" >>"$out" 2>/dev/null || true
		sleep 0.5
	done
}

bench_flash_buyers() {
	local script="$BENCH_LOG_DIR/flash_buy.sql" log="$BENCH_LOG_DIR/flash.buyers.log" waits="$BENCH_LOG_DIR/flash.waits.txt"
	local t0 t1 from tps stats sampler drained_at confirmed_at_stop
	cat >"$script" <<'SQL'
-- One buyer: an order of one unit of the flash SKU, created and paid.
SELECT oms_create_order('buyer-' || :client_id, '[{"sku": "FLASH-1", "quantity": 1, "unit_price": 100}]'::jsonb,
	'USD', pg_catalog.gen_random_uuid()::text) ->> 'order_id' AS order_id
\gset
SELECT 1 FROM oms_pay_order(':order_id', 'test_ok', pg_catalog.gen_random_uuid()::text);
SQL
	# test/lib.sh starts the server with max_connections = 50.
	if (($(flash_sql -c "SHOW max_connections") < BENCH_FLASH_BUYERS + 20)); then
		printf 'restarting the server with max_connections = %s (for the buyers) ... ' "$((BENCH_FLASH_BUYERS + 20))"
		oms_psql -d "$DB" -c "ALTER SYSTEM SET max_connections = $((BENCH_FLASH_BUYERS + 20))" >/dev/null
		oms_restart_cluster
		printf 'done\n'
	fi
	wait_worker
	flash_reset 0
	flash_sql -c "INSERT INTO oms.stock (sku, on_hand) VALUES ('FLASH-1', $FLASH_ON_HAND)" >/dev/null
	: >"$waits"
	printf 'running flash (b) %s buyers, one SKU, measure %ss ... ' "$BENCH_FLASH_BUYERS" "$BENCH_SECONDS"
	flash_sample_waits "$waits" &
	sampler=$!
	t0=$(server_now)
	if ! "$OMS_PG_BINDIR/pgbench" -n -c "$BENCH_FLASH_BUYERS" -j "$BENCH_JOBS" -T "$BENCH_SECONDS" \
		-f "$script" "$DB" >"$log" 2>&1; then
		kill "$sampler" 2>/dev/null || true
		wait "$sampler" 2>/dev/null || true
		oms_warn "pgbench failed for the flash sale (log: $log):"
		tail -n 30 "$log" >&2
		oms_server_log_tail 20
		return 1
	fi
	t1=$(server_now)
	kill "$sampler" 2>/dev/null || true
	wait "$sampler" 2>/dev/null || true
	tps=$(awk '/^tps = / { print $3; exit }' "$log")
	FLASH[b.tps]=$tps
	FLASH[b.backlog]=$(sagas_in_flight)
	confirmed_at_stop=$(flash_sql -c "SELECT count(*) FROM oms.orders WHERE status = 'confirmed'")
	FLASH[b.drain]=$(wait_drained)
	drained_at=$(server_now)
	# The worker alone: what it confirmed after the clients stopped.
	FLASH[b.alone]=$(flash_sql -c "SELECT round(count(*) / nullif(extract(epoch FROM '$drained_at'::timestamptz - '$t1'), 0)::numeric, 1)
		FROM oms.order_events WHERE event_type = 'order.confirmed' AND occurred_at >= '$t1'")
	FLASH[b.alone]=${FLASH[b.alone]:-n/a}
	FLASH[b.confirmed_at_stop]=$confirmed_at_stop
	from=$(flash_sql -c "SELECT '$t0'::timestamptz + least(interval '3 s', ('$t1'::timestamptz - '$t0') / 5)")
	stats=$(saga_window_stats "$from" "$t1")
	IFS='|' read -r "FLASH[b.confirmed]" "FLASH[b.p50]" "FLASH[b.p99]" "FLASH[b.paid]" "FLASH[b.ok]" "FLASH[b.missing]" <<<"$stats"
	FLASH[b.samples]=$(grep -c . "$waits" || true)
	FLASH[b.waits]=$(sort "$waits" | uniq -c | sort -rn | head -n 8 |
		awk -v n="${FLASH[b.samples]}" '{ split($2, a, "|"); printf "  %-14s %-36s %5.1f%% of active-session samples\n", a[1], a[2], (n > 0) ? 100 * $1 / n : 0 }')
	FLASH[b.stock]=$(flash_sql -c "SELECT pg_catalog.format('%s units confirmed, %s taken off the shelf, %s orders not confirmed',
			(SELECT coalesce(sum(r.quantity), 0) FROM oms.reservations r JOIN oms.orders o ON o.id = r.order_id
			 WHERE o.status = 'confirmed' AND r.status = 'consumed'),
			$FLASH_ON_HAND - (SELECT on_hand FROM oms.stock WHERE sku = 'FLASH-1'),
			(SELECT count(*) FROM oms.orders WHERE status <> 'confirmed'))")
	printf '%s create+pay/s, %s confirmed/s (backlog %s, drained in %s s)\n' "$tps" "${FLASH[b.confirmed]}" \
		"${FLASH[b.backlog]}" "${FLASH[b.drain]}"
}

bench_flash_sale() {
	oms_header "flash sale: reserving on a hot SKU"
	wait_worker
	bench_flash_engine
	bench_flash_buyers
}

report_flash_sale() {
	local held hot idle
	oms_header "flash sale results"
	printf '(a) %s orders of one unit driven by oms_run_sagas(100) in one session (worker off);\n' "$BENCH_FLASH_ORDERS"
	printf '    N = live reservations (pending payments) on FLASH-HOT; hot = the orders buy FLASH-HOT, idle = other SKUs\n'
	printf '%-8s %14s %14s %12s %16s %16s\n' N "idle conf/s" "hot conf/s" "hot/idle" "idle reserve ms" "hot reserve ms"
	for held in $BENCH_FLASH_HELD; do
		idle=${FLASH[a.$held.idle.rate]}
		hot=${FLASH[a.$held.hot.rate]}
		printf '%-8s %14s %14s %12s %16s %16s\n' "$held" "$idle" "$hot" "$(ratio "$hot" "$idle")" \
			"${FLASH[a.$held.idle.reserve_ms]}" "${FLASH[a.$held.hot.reserve_ms]}"
	done
	held=$(awk '{ print $NF }' <<<"$BENCH_FLASH_HELD")
	if [[ -n "$held" ]]; then
		printf 'hot/idle at %s held = %s (target >= 0.8)\n' "$held" \
			"$(ratio "${FLASH[a.$held.hot.rate]}" "${FLASH[a.$held.idle.rate]}")"
	fi
	printf '\n(b) %s buyers (pgbench -c %s -j %s -T %s), one SKU, create + pay test_ok; the worker confirms\n' \
		"$BENCH_FLASH_BUYERS" "$BENCH_FLASH_BUYERS" "$BENCH_JOBS" "$BENCH_SECONDS"
	printf 'create+pay/s %s; confirmed/s in the window %s; pay -> confirmed p50 %s ms, p99 %s ms\n' \
		"${FLASH[b.tps]}" "${FLASH[b.confirmed]}" "${FLASH[b.p50]:-n/a}" "${FLASH[b.p99]:-n/a}"
	printf 'backlog when the buyers stopped: %s sagas (%s orders confirmed by then); the worker alone drained it in %s s: %s confirmed/s\n' \
		"${FLASH[b.backlog]}" "${FLASH[b.confirmed_at_stop]}" "${FLASH[b.drain]}" "${FLASH[b.alone]}"
	printf 'stock check: %s\n' "${FLASH[b.stock]}"
	printf 'wait events of active sessions (%s samples):\n%s\n' "${FLASH[b.samples]}" "${FLASH[b.waits]}"
}
