# shellcheck shell=bash
# bench/cluster.sh: the "cluster" part of "make bench": what the router
# costs, and a model of how throughput grows with shards.  Sourced by
# bench/run.sh, which owns the server, the BENCH_* settings and the helpers
# used here (oms_psql, ratio); bench_cluster runs the part,
# report_cluster prints its results.  The router and shard databases come
# from test/cluster.sh, inside the bench server.
#
# (1) Router overhead.  A router over ONE shard that serves all the
#     partitions (bench_r1 -> bench_r1_s0): through the router and directly
#     on the shard, the same pgbench script, clients and BENCH_SECONDS, in
#     the same run: oms_create_order with a fresh idempotency key
#     (bench/cluster_create.sql) and oms_get_order by id
#     (bench/cluster_get.sql).  One shard serving everything, rather than
#     keys picked to land on one shard of several, keeps the two runs equal
#     but for the router: the same database receives every call, with the
#     same client script (a key filter would run in the direct run only).
#     Reported: calls/s and router/direct for each (goal >= 0.8), and the
#     server CPU per call of each run: the difference is the CPU the hop
#     adds (router backend, PL/Proxy on both ends).
# (2) Per-shard costs for the model.  A cluster of two shards (bench_x2,
#     16 partitions) whose shard workers run (oms.database_name; the server
#     is restarted for that).  On shard 0, pgbench creates and pays orders
#     of two SKUs (bench/cluster_order.sql) for BENCH_SECONDS at the maximum
#     rate, and the worker confirms them; the server's CPU time from the
#     first create to the last confirmation, divided by the orders, is the
#     cost of one order.  Once with both SKUs homed on shard 0 ("local"),
#     once homed on shard 1 ("remote": reserve and confirm call shard 1
#     through oms_shard).  remote - local, per line, is the cost of a
#     remote line; the CPU of shard 1's processes is its home side, the
#     rest the caller's.
#     A JIT probe (cl_jit_probe) then drives the same orders with jit on
#     (PostgreSQL's default) and off: they must cost the same.
# (3) The model (docs/cluster.md, "Throughput and scaling"): a table for
#     N = BENCH_CLUSTER_SHARDS shards (default "1 2 4 8 16") and baskets of
#     BENCH_CLUSTER_BASKET SKUs (default 2), computed from (1) and (2).
#
# CPU time is read from /proc (utime + stime of the postmaster's children,
# and the postmaster's cutime + cstime for those that exited), so it
# counts the server's processes only, not pgbench, and other programs on
# the machine do not inflate it.  It reports; it never fails because of the
# numbers.

BENCH_CLUSTER_SHARDS=${BENCH_CLUSTER_SHARDS:-1 2 4 8 16}
# Basket size of the model's table (the measured orders have 2 lines).
BENCH_CLUSTER_BASKET=${BENCH_CLUSTER_BASKET:-2}
CLUSTER_PARTITIONS=16
CLUSTER_SKUS=10000
CLUSTER_ON_HAND=1000000000000
CLUSTER_IDS=10000
CLUSTER_LINES=2

# Results: CL[key], keys like create.direct.tps, order.local.cpu_ms, ...
declare -A CL=()

# shellcheck source=test/cluster.sh
source "$OMS_ROOT/test/cluster.sh"

cl_sql() { PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" oms_psql -At -d "$@"; }

# --------------------------------------------------------------- CPU time
# Usage: cl_cpu_sample FILE: one line per server process, "pid ticks
# title": the postmaster with its reaped children's time, each live child
# with its own.  Titles name the database ("postgres: USER DB ...", "oms
# worker DB", "oms saga worker N DB").
cl_cpu_sample() {
	local out=$1 pm f line pid
	local -a st
	pm=$(head -n 1 "$OMS_PGDATA/postmaster.pid")
	{
		read -r line <"/proc/$pm/stat"
		read -r -a st <<<"${line##*) }"
		# Fields after "(comm) ": utime is the 12th, stime, cutime, cstime follow.
		printf '%s %s postmaster\n' "$pm" "$((st[11] + st[12] + st[13] + st[14]))"
		for f in /proc/[0-9]*/stat; do
			{ read -r line <"$f"; } 2>/dev/null || continue
			read -r -a st <<<"${line##*) }"
			[[ "${st[1]}" == "$pm" ]] || continue
			pid=${f#/proc/}
			pid=${pid%/stat}
			printf '%s %s %s\n' "$pid" "$((st[11] + st[12]))" \
				"$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
		done
	} >"$out"
}

# Usage: cl_cpu_ms BEFORE AFTER [DB]: server CPU milliseconds between two
# samples; with DB, only the processes serving DB that were alive at the
# second sample.
cl_cpu_ms() {
	local tck
	tck=$(getconf CLK_TCK)
	awk -v db="${3:-}" -v tck="$tck" '
		FNR == NR { before[$1] = $2; total_before += $2; next }
		{ total_after += $2 }
		db != "" && (" " $0 " ") ~ (" " db " ") { mine += $2 - (($1 in before) ? before[$1] : 0) }
		END { printf "%.0f", 1000 * ((db == "") ? total_after - total_before : mine) / tck }' "$1" "$2"
}

# ----------------------------------------------------------------- pgbench
# Usage: cl_pgbench LOG DB SECONDS SCRIPT [pgbench options]: prints
# "tps transactions".
cl_pgbench() {
	local log="$BENCH_LOG_DIR/cluster.$1.log" db=$2 seconds=$3 script=$4
	shift 4
	if ! "$OMS_PG_BINDIR/pgbench" -n -c "$BENCH_CLIENTS" -j "$BENCH_JOBS" -T "$seconds" "$@" \
		-f "$BENCH_DIR/$script" "$db" >"$log" 2>&1; then
		oms_warn "pgbench failed for bench/$script on $db (log: $log):"
		tail -n 30 "$log" >&2
		oms_server_log_tail 20
		return 1
	fi
	awk '/^number of transactions actually processed:/ { n = $NF } /^tps = / { t = $3 }
		END { print t, n }' "$log"
}

cl_truncate_orders() {
	cl_sql "$1" -c "SET client_min_messages = warning" \
		-c "TRUNCATE oms.orders, oms.order_items, oms.order_events, oms.outbox, oms.idempotency_keys, oms.reservations CASCADE" \
		-c "CHECKPOINT" >/dev/null
}

# Usage: cl_measure KEY DB SCRIPT [pgbench options]: one measured run,
# CPU sampled around it.  Sets CL[KEY.tps], CL[KEY.calls], CL[KEY.cpu_ms]
# (server CPU per call).
cl_measure() {
	local key=$1 db=$2 script=$3 out before after
	shift 3
	before="$BENCH_LOG_DIR/cluster.$key.cpu0"
	after="$BENCH_LOG_DIR/cluster.$key.cpu1"
	cl_cpu_sample "$before"
	out=$(cl_pgbench "$key" "$db" "$BENCH_SECONDS" "$script" "$@")
	cl_cpu_sample "$after"
	read -r "CL[$key.tps]" "CL[$key.calls]" <<<"$out"
	CL[$key.cpu_ms]=$(awk -v c="$(cl_cpu_ms "$before" "$after")" -v n="${CL[$key.calls]}" \
		'BEGIN { if (n > 0) printf "%.3f", c / n; else print "n/a" }')
}

# ------------------------------------------------------ (1) router overhead
bench_cluster_router() {
	local router=bench_r1 shard=bench_r1_s0 via key
	printf 'making a router over one shard (%s -> %s, %s partitions) ... ' "$router" "$shard" "$CLUSTER_PARTITIONS"
	oms_cluster_create "$router" 1 "$CLUSTER_PARTITIONS"
	printf 'done\n'
	printf 'warm-up %ss of each ... ' "$BENCH_WARMUP"
	for via in "$shard" "$router"; do
		cl_pgbench "warmup.$via" "$via" "$BENCH_WARMUP" cluster_create.sql >/dev/null
	done
	printf 'done\n'
	# Direct first, then the router, each from empty tables.
	for via in direct router; do
		key=create.$via
		cl_truncate_orders "$shard"
		printf 'running oms_create_order %-6s measure %ss ... ' "$via" "$BENCH_SECONDS"
		if [[ $via == direct ]]; then
			cl_measure "$key" "$shard" cluster_create.sql
		else
			cl_measure "$key" "$router" cluster_create.sql
		fi
		printf '%s calls/s, %s ms server CPU per call\n' "${CL[$key.tps]}" "${CL[$key.cpu_ms]}"
	done
	# The same ids in both databases, for oms_get_order.
	cl_sql "$shard" -c "DROP TABLE IF EXISTS public.bench_order_ids" \
		-c "CREATE TABLE public.bench_order_ids AS
			SELECT row_number() OVER () AS n, id FROM (SELECT id FROM oms.orders LIMIT $CLUSTER_IDS) AS o" \
		-c "ALTER TABLE public.bench_order_ids ADD PRIMARY KEY (n)" \
		-c "VACUUM ANALYZE public.bench_order_ids" >/dev/null
	cl_sql "$router" -c "DROP TABLE IF EXISTS public.bench_order_ids" \
		-c "CREATE TABLE public.bench_order_ids (n bigint PRIMARY KEY, id uuid NOT NULL)" >/dev/null
	cl_sql "$shard" -c "COPY public.bench_order_ids TO STDOUT" |
		cl_sql "$router" -c "COPY public.bench_order_ids FROM STDIN"
	cl_sql "$router" -c "VACUUM ANALYZE public.bench_order_ids" >/dev/null
	CL[nids]=$(cl_sql "$shard" -c "SELECT count(*) FROM public.bench_order_ids")
	# The creates left work for autovacuum: done now, not during a measured run.
	cl_sql "$shard" -c "VACUUM ANALYZE" >/dev/null
	for via in "$shard" "$router"; do
		cl_pgbench "warmup.get.$via" "$via" "$BENCH_WARMUP" cluster_get.sql -D nids="${CL[nids]}" >/dev/null
	done
	for via in direct router; do
		key=get.$via
		cl_sql "$shard" -c "CHECKPOINT" >/dev/null
		printf 'running oms_get_order    %-6s measure %ss ... ' "$via" "$BENCH_SECONDS"
		if [[ $via == direct ]]; then
			cl_measure "$key" "$shard" cluster_get.sql -D nids="${CL[nids]}"
		else
			cl_measure "$key" "$router" cluster_get.sql -D nids="${CL[nids]}"
		fi
		printf '%s calls/s, %s ms server CPU per call\n' "${CL[$key.tps]}" "${CL[$key.cpu_ms]}"
	done
	key=get.proxy
	cl_sql "$shard" -c "CHECKPOINT" >/dev/null
	printf 'running oms._r_get_order router measure %ss ... ' "$BENCH_SECONDS"
	cl_measure "$key" "$router" cluster_get_proxy.sql -D nids="${CL[nids]}"
	printf '%s calls/s, %s ms server CPU per call\n' "${CL[$key.tps]}" "${CL[$key.cpu_ms]}"
	oms_cluster_drop "$router"
}

# ------------------------------------------------- (2) per-shard costs
# Usage: cl_reset_shard DB HOME: empty order tables, stock of the SKUs
# homed on shard HOME (of 2), the SKU table the pgbench script reads.
cl_reset_shard() {
	local db=$1 home=$2
	cl_sql "$db" -c "SET client_min_messages = warning" \
		-c "TRUNCATE oms.orders, oms.order_items, oms.order_events, oms.outbox, oms.idempotency_keys, oms.reservations, oms.stock CASCADE" \
		-c "INSERT INTO oms.stock (sku, on_hand)
			SELECT sku, $CLUSTER_ON_HAND FROM public.bench_skus WHERE home = $home" \
		-c "VACUUM ANALYZE oms.stock" -c "CHECKPOINT" >/dev/null
}

# Usage: cl_skus DB: public.bench_skus, CLUSTER_SKUS SKUs per home shard
# (of 2, partition p on shard p % 2 as test/cluster.sh deals them).
cl_skus() {
	cl_sql "$1" -c "DROP TABLE IF EXISTS public.bench_skus" \
		-c "CREATE TABLE public.bench_skus AS
			SELECT home, row_number() OVER (PARTITION BY home ORDER BY i)::integer AS n, sku
			FROM (SELECT i, 'SKU-' || i AS sku, (oms.partition_of_text('SKU-' || i) & ($CLUSTER_PARTITIONS - 1)) % 2 AS home
				  FROM generate_series(1, 4 * $CLUSTER_SKUS) AS i) AS s" \
		-c "DELETE FROM public.bench_skus WHERE n > $CLUSTER_SKUS" \
		-c "ALTER TABLE public.bench_skus ADD PRIMARY KEY (home, n)" \
		-c "VACUUM ANALYZE public.bench_skus" >/dev/null
}

cl_in_flight() {
	cl_sql "$1" -c "SELECT count(*) FROM oms.sagas WHERE status IN ('running', 'compensating')"
}

cl_wait_drained() {
	local db=$1 start=$EPOCHREALTIME
	while (($(cl_in_flight "$db") > 0)); do
		if awk -v s="$start" -v n="$EPOCHREALTIME" -v d="$SAGA_DRAIN_LIMIT" 'BEGIN { exit !(n - s > d) }'; then
			return 1
		fi
		sleep 0.2
	done
}

cl_wait_workers() {
	local db _
	for db in "$@"; do
		for _ in $(seq 600); do
			[[ "$(cl_sql "$db" -c "SELECT count(*) FROM oms_worker_status() WHERE database = current_database() AND alive")" == 1 ]] &&
				continue 2
			sleep 0.1
		done
		oms_server_log_tail 30
		oms_die "the oms worker of $db did not start"
	done
}

# Usage: cl_order_run KEY HOME SECONDS: orders of SKUs homed on shard HOME
# created and paid on shard 0 at the maximum rate, confirmed by its worker.
cl_order_run() {
	local key=$1 home=$2 seconds=$3 target=${4:-bench_x2_s0} s0=bench_x2_s0 s1=bench_x2_s1 before after out t0 t1 t2 cpu
	cl_reset_shard "$s0" 0
	cl_reset_shard "$s1" 1
	before="$BENCH_LOG_DIR/cluster.order.$key.cpu0"
	after="$BENCH_LOG_DIR/cluster.order.$key.cpu1"
	cl_cpu_sample "$before"
	t0=$EPOCHREALTIME
	out=$(cl_pgbench "order.$key" "$target" "$seconds" cluster_order.sql -D nskus="$CLUSTER_SKUS" -D home="$home" \
		-D shard=0 -D shards=2 -D partitions="$CLUSTER_PARTITIONS")
	t1=$EPOCHREALTIME
	cl_wait_drained "$s0" || CL[order.$key.timeout]=1
	t2=$EPOCHREALTIME
	cl_cpu_sample "$after"
	read -r "CL[order.$key.tps]" _ <<<"$out"
	CL[order.$key.orders]=$(cl_sql "$s0" -c "SELECT count(*) FROM oms.orders WHERE status = 'confirmed'")
	CL[order.$key.other]=$(cl_sql "$s0" -c "SELECT count(*) FROM oms.orders WHERE status <> 'confirmed'")
	cpu=$(cl_cpu_ms "$before" "$after")
	CL[order.$key.cpu_s]=$(awk -v c="$cpu" 'BEGIN { printf "%.1f", c / 1000 }')
	CL[order.$key.wall]=$(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.1f", b - a }')
	CL[order.$key.drain]=$(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.1f", b - a }')
	CL[order.$key.rate]=$(awk -v n="${CL[order.$key.orders]}" -v a="$t0" -v b="$t2" 'BEGIN { printf "%.1f", n / (b - a) }')
	CL[order.$key.busy]=$(awk -v c="$cpu" -v a="$t0" -v b="$t2" -v k="$(nproc)" 'BEGIN { printf "%.0f", 100 * c / 1000 / (b - a) / k }')
	CL[order.$key.cpu_ms]=$(awk -v c="$cpu" -v n="${CL[order.$key.orders]}" 'BEGIN { if (n > 0) printf "%.3f", c / n; else print "n/a" }')
	# The home shard's processes (PL/Proxy connections from shard 0, its
	# own idle workers), per order.
	CL[order.$key.s1_ms]=$(awk -v c="$(cl_cpu_ms "$before" "$after" "$s1")" -v n="${CL[order.$key.orders]}" \
		'BEGIN { if (n > 0) printf "%.3f", c / n; else print "n/a" }')
}

bench_cluster_costs() {
	local key home
	printf 'making a cluster of two shards (bench_x2_s0, bench_x2_s1, %s partitions) ... ' "$CLUSTER_PARTITIONS"
	oms_cluster_create bench_x2 2 "$CLUSTER_PARTITIONS"
	cl_skus bench_x2_s0
	cl_skus bench_x2_s1
	# The router's copy, for the orders sent through it.
	cl_skus bench_x2
	# Their workers (only theirs: max_worker_processes is 8); oms.database_name
	# is read at server start.
	oms_psql -c "ALTER SYSTEM SET oms.database_name = 'bench_x2_s0, bench_x2_s1'" >/dev/null
	oms_restart_cluster
	cl_wait_workers bench_x2_s0 bench_x2_s1
	printf 'done\n'
	# routed: the local orders again, created and paid through the router
	# (bench_x2): orders/s end to end through the router against directly.
	for key in local remote routed; do
		[[ $key == remote ]] && home=1 || home=0
		printf 'running orders %-6s   warm-up %ss ... ' "$key" "$BENCH_WARMUP"
		cl_order_run "warmup.$key" "$home" "$BENCH_WARMUP" "$([[ $key == routed ]] && echo bench_x2 || echo bench_x2_s0)"
		printf 'done\n'
	done
	for key in local remote routed; do
		[[ $key == remote ]] && home=1 || home=0
		printf 'running orders %-6s   measure %ss ... ' "$key" "$BENCH_SECONDS"
		cl_order_run "$key" "$home" "$BENCH_SECONDS" "$([[ $key == routed ]] && echo bench_x2 || echo bench_x2_s0)"
		printf '%s create+pay/s; %s confirmed in %s s (drain %s s): %s s of server CPU, %s ms per order\n' \
			"${CL[order.$key.tps]}" "${CL[order.$key.orders]}" "${CL[order.$key.wall]}" "${CL[order.$key.drain]}" \
			"${CL[order.$key.cpu_s]}" "${CL[order.$key.cpu_ms]}"
	done
	cl_jit_probe
	oms_psql -c "ALTER SYSTEM SET oms.database_name = '$DB'" >/dev/null
	oms_restart_cluster
	oms_cluster_drop bench_x2
}

# ---------------------------------------------------------- the JIT probe
# The saga's queries about remote lines (oms._remote_lines,
# oms._sku_is_home, ...) run under the reserve and confirm steps'
# enable_seqscan = off; unless they pin it on, the scan of the one-row
# oms.shard table is priced above jit_above_cost and every call is
# JIT-compiled (about 200 ms).  This probe shows jit = on (the default)
# costing what jit = off costs.  BENCH_CLUSTER_PROBE_ORDERS orders of two SKUs (local or remote)
# are created and paid with the worker paused, then one session drives
# them with oms_run_sagas(100) until none is due, with jit on and off.
BENCH_CLUSTER_PROBE_ORDERS=${BENCH_CLUSTER_PROBE_ORDERS:-40}

cl_jit_probe() {
	local jit key home start end calls i script="$BENCH_LOG_DIR/cluster.probe.sql"
	oms_psql -c "ALTER SYSTEM SET oms.worker_enabled = off" -c "SELECT pg_catalog.pg_reload_conf()" >/dev/null
	sleep 1
	for jit in on off; do
		for key in local remote; do
			[[ $key == local ]] && home=0 || home=1
			printf 'running JIT probe jit = %-3s %-6s %s orders ... ' "$jit" "$key" "$BENCH_CLUSTER_PROBE_ORDERS"
			cl_reset_shard bench_x2_s0 0
			cl_reset_shard bench_x2_s1 1
			cl_sql bench_x2_s0 -c "SELECT count(oms_pay_order((oms_create_order('probe-' || i,
					(SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('sku', s.sku, 'quantity', 1, 'unit_price', 1999))
					 FROM public.bench_skus AS s WHERE s.home = $home AND s.n IN (2 * i - 1, 2 * i)),
					'USD', NULL) ->> 'order_id')::uuid, 'test_ok', NULL))
				FROM generate_series(1, $BENCH_CLUSTER_PROBE_ORDERS) AS i" >/dev/null
			calls=$((BENCH_CLUSTER_PROBE_ORDERS * 3 / 100 + 5))
			{
				echo "SET jit = $jit;"
				for ((i = 0; i < calls; i++)); do echo "SELECT oms_run_sagas(100);"; done
			} >"$script"
			start=$EPOCHREALTIME
			cl_sql bench_x2_s0 -o /dev/null -f "$script"
			end=$EPOCHREALTIME
			CL[probe.$jit.$key.confirmed]=$(cl_sql bench_x2_s0 -c "SELECT count(*) FROM oms.orders WHERE status = 'confirmed'")
			CL[probe.$jit.$key.ms]=$(awk -v s="$start" -v e="$end" -v n="${CL[probe.$jit.$key.confirmed]}" \
				'BEGIN { if (n > 0) printf "%.2f", 1000 * (e - s) / n; else print "n/a" }')
			printf '%s confirmed, %s ms per order\n' "${CL[probe.$jit.$key.confirmed]}" "${CL[probe.$jit.$key.ms]}"
		done
	done
	oms_psql -c "ALTER SYSTEM RESET oms.worker_enabled" -c "SELECT pg_catalog.pg_reload_conf()" >/dev/null
}

bench_cluster() {
	oms_header "cluster: router overhead and per-shard costs"
	bench_cluster_router
	bench_cluster_costs
	cl_model_inputs
}

# ------------------------------------------------------------- (3) model
# The model's inputs in ms of CPU: c_order, c_caller and c_home per remote
# line, c_route per order (create + pay through the router; pay costs the
# router what a get does).
cl_model_inputs() {
	local k=$CLUSTER_LINES
	CL[c_order]=${CL[order.local.cpu_ms]}
	CL[c_line]=$(awk -v r="${CL[order.remote.cpu_ms]}" -v l="${CL[order.local.cpu_ms]}" -v k="$k" \
		'BEGIN { d = (r - l) / k; printf "%.3f", (d > 0) ? d : 0 }')
	CL[c_home]=$(awk -v r="${CL[order.remote.s1_ms]}" -v l="${CL[order.local.s1_ms]}" -v k="$k" -v line="${CL[c_line]}" \
		'BEGIN { d = (r - l) / k; if (d < 0) d = 0; if (d > line) d = line; printf "%.3f", d }')
	CL[c_caller]=$(awk -v a="${CL[c_line]}" -v b="${CL[c_home]}" 'BEGIN { printf "%.3f", a - b }')
	CL[c_route_create]=$(awk -v r="${CL[create.router.cpu_ms]}" -v d="${CL[create.direct.cpu_ms]}" \
		'BEGIN { x = r - d; printf "%.3f", (x > 0) ? x : 0 }')
	CL[c_route_get]=$(awk -v r="${CL[get.router.cpu_ms]}" -v d="${CL[get.direct.cpu_ms]}" \
		'BEGIN { x = r - d; printf "%.3f", (x > 0) ? x : 0 }')
	CL[c_route]=$(awk -v a="${CL[c_route_create]}" -v b="${CL[c_route_get]}" 'BEGIN { printf "%.3f", a + b }')
}

report_cluster() {
	local cores n k=$BENCH_CLUSTER_BASKET
	cores=$(nproc)
	oms_header "cluster results"
	printf '(1) router overhead: a router over one shard serving all %s partitions; the same script,\n' "$CLUSTER_PARTITIONS"
	printf '    pgbench -c %s -j %s -T %s, through the router and directly on the shard, in this run\n' \
		"$BENCH_CLIENTS" "$BENCH_JOBS" "$BENCH_SECONDS"
	printf '%-18s %12s %12s %9s %16s %16s\n' call "direct/s" "router/s" "router/direct" "direct CPU ms" "router CPU ms"
	printf '%-18s %12.1f %12.1f %9s %16s %16s\n' oms_create_order "${CL[create.direct.tps]}" "${CL[create.router.tps]}" \
		"$(ratio "${CL[create.router.tps]}" "${CL[create.direct.tps]}")" "${CL[create.direct.cpu_ms]}" "${CL[create.router.cpu_ms]}"
	printf '%-18s %12.1f %12.1f %9s %16s %16s\n' oms_get_order "${CL[get.direct.tps]}" "${CL[get.router.tps]}" \
		"$(ratio "${CL[get.router.tps]}" "${CL[get.direct.tps]}")" "${CL[get.direct.cpu_ms]}" "${CL[get.router.cpu_ms]}"
	printf '%-18s %12s %12.1f %9s %16s %16s\n' "oms._r_get_order" "" "${CL[get.proxy.tps]}" \
		"$(ratio "${CL[get.proxy.tps]}" "${CL[get.direct.tps]}")" "" "${CL[get.proxy.cpu_ms]}"
	printf 'router/direct: oms_create_order %s, oms_get_order %s (goal >= 0.8)\n' \
		"$(ratio "${CL[create.router.tps]}" "${CL[create.direct.tps]}")" "$(ratio "${CL[get.router.tps]}" "${CL[get.direct.tps]}")"
	printf 'CPU ms: server CPU (all its processes, not pgbench) per call; router - direct is what the router\n'
	printf 'adds: create %s ms, get %s ms, of which the plpgsql wrapper (EXCEPTION block: a subtransaction)\n' \
		"${CL[c_route_create]}" "${CL[c_route_get]}"
	printf '%s ms (oms._r_get_order is the PL/Proxy function alone, router only).  Through the router a call\n' \
		"$(awk -v a="${CL[get.router.cpu_ms]}" -v b="${CL[get.proxy.cpu_ms]}" 'BEGIN { printf "%.3f", a - b }')"
	printf 'is one more backend (the router'"'"'s), the wrapper, PL/Proxy'"'"'s call and one more round trip over\n'
	printf 'the connection it keeps to the shard; here router and shard share the same %s cores, so the\n' "$(nproc)"
	printf 'router'"'"'s CPU comes out of the shard'"'"'s; with the router on its own node it does not.\n'

	printf '\n(2) per-shard costs, on shard 0 of two: pgbench -c %s creates and pays orders of 2 SKUs for %s s\n' \
		"$BENCH_CLIENTS" "$BENCH_SECONDS"
	printf '    at the maximum rate, the worker confirms; server CPU from the first create to the last confirmation\n'
	printf '%-8s %12s %10s %10s %10s %10s %14s %14s\n' SKUs "create+pay/s" confirmed "not conf" "seconds" "CPU busy" \
		"CPU ms/order" "shard 1 ms/ord"
	for n in local remote routed; do
		printf '%-8s %12.1f %10s %10s %10s %9s%% %14s %14s\n' "$n" "${CL[order.$n.tps]}" "${CL[order.$n.orders]}" \
			"${CL[order.$n.other]}" "${CL[order.$n.wall]}" "${CL[order.$n.busy]}" "${CL[order.$n.cpu_ms]}" "${CL[order.$n.s1_ms]}"
		[[ -z "${CL[order.$n.timeout]:-}" ]] || printf '  (the %s run did not drain within %s s)\n' "$n" "$SAGA_DRAIN_LIMIT"
	done
	printf 'local: both SKUs homed on shard 0; remote: both homed on shard 1 (reserve and confirm call it);\n'
	printf 'routed: local, created and paid through the router.  CPU busy: share of the %s cores the server\n' "$cores"
	printf 'used (pgbench takes the rest).\n'
	printf 'orders through the router / directly (confirmed orders/s, create to last confirmation): %s (goal >= 0.8)\n' \
		"$(ratio "${CL[order.routed.rate]}" "${CL[order.local.rate]}")"
	printf '\nJIT probe: %s orders driven by oms_run_sagas(100) in one session (worker paused), ms per order\n' \
		"$BENCH_CLUSTER_PROBE_ORDERS"
	printf '%-10s %12s %12s\n' "" local remote
	for n in on off; do
		printf 'jit = %-4s %12s %12s\n' "$n" "${CL[probe.$n.local.ms]}" "${CL[probe.$n.remote.ms]}"
	done
	printf 'remote with jit = on / jit = off: %s (about 1: the functions reading oms.shard pin\n' \
		"$(ratio "${CL[probe.on.remote.ms]}" "${CL[probe.off.remote.ms]}")"
	printf 'enable_seqscan = on; without it every remote line paid a JIT compilation of about 200 ms).\n'

	printf '\n(3) model of throughput with N shards (a MODEL from the costs above, not a measurement:\n'
	printf '    %s cores cannot show N shards scaling)\n' "$cores"
	printf 'inputs, ms of CPU: c_order %s (one local order end to end), per remote line c_caller %s + c_home %s,\n' \
		"${CL[c_order]}" "${CL[c_caller]}" "${CL[c_home]}"
	printf '                   router per order c_route %s (create %s + pay, counted as a get, %s)\n' \
		"${CL[c_route]}" "${CL[c_route_create]}" "${CL[c_route_get]}"
	printf 'throughput(N) = N * C / (c_order + f * k * (c_caller + c_home)), f = 1 - 1/N, k = %s SKUs per basket,\n' "$k"
	printf 'C = %s CPU-s per s per shard node (one node per shard, like this machine); routers needed =\n' "$cores"
	printf 'throughput * c_route / C, each router node like this machine; network round trips not included\n'
	printf '%-6s %6s %14s %14s %14s %11s %9s\n' N f "CPU ms/order" "orders/s" "linear" efficiency routers
	for n in $BENCH_CLUSTER_SHARDS; do
		awk -v n="$n" -v k="$k" -v c="$cores" -v co="${CL[c_order]}" -v cc="${CL[c_caller]}" -v ch="${CL[c_home]}" \
			-v cr="${CL[c_route]}" 'BEGIN {
				f = 1 - 1 / n; cost = co + f * k * (cc + ch);
				if (co <= 0) { printf "%-6s %6.3f %14s\n", n, f, "n/a"; exit }
				t = n * c * 1000 / cost; lin = n * c * 1000 / co;
				r = t * cr / (c * 1000); ri = int(r); if (ri < r) ri++; if (ri < 1) ri = 1;
				printf "%-6s %6.3f %14.3f %14.0f %14.0f %10.0f%% %9d\n", n, f, cost, t, lin, 100 * t / lin, ri }'
	done
	printf 'efficiency = throughput / (N x one shard alone).  Remote lines cost CPU on both shards but no\n'
	printf 'extra node time beyond that; their round trips add latency (2 per remote home partition per\n'
	printf 'order: hold and consume) that the saga workers absorb, not CPU.\n'
}
