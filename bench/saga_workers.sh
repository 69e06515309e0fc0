# shellcheck shell=bash
# bench/saga_workers.sh: how saga throughput scales with oms.saga_workers.
# Sourced by bench/run.sh (part "workers"); uses its cluster, database and
# helpers (reset_saga_tables, saga_run, wait_drained, ratio).  For each
# value N in BENCH_SAGA_WORKERS (default "1 2 4"), after a reload to
# oms.saga_workers = N:
#   capacity   the saga part's engine capacity run (bench_capacity in
#              bench/run.sh): orders created and paid for BENCH_SECONDS
#              with the worker paused, then confirmed with no client
#              running;
#   under load the end-to-end saga run at the maximum rate (saga_run):
#              confirmed/s while the 8 clients create and pay, the backlog
#              left when they stop, and how many seconds of confirmations
#              that backlog is.
# Both are reported as ratios to the raw-SQL baseline of the same run
# (part "create"; measured here if that part did not run).  Reports only.

BENCH_SAGA_WORKERS=${BENCH_SAGA_WORKERS:-1 2 4}
declare -A WORKERS=()

# Usage: set_saga_workers N: reload to N processes and wait until they run.
set_saga_workers() {
	local n=$1 _
	oms_psql -d "$DB" -q -c "ALTER SYSTEM SET oms.saga_workers = $n" -c "SELECT pg_reload_conf()" >/dev/null
	for _ in $(seq 300); do
		[[ "$(oms_psql -d "$DB" -At -c "SELECT count(*) FILTER (WHERE alive) = $n AND count(*) = $n
			FROM oms_saga_worker_status() WHERE database = current_database()")" == t ]] && return 0
		sleep 0.1
	done
	oms_die "oms.saga_workers = $n: the processes did not start ($(oms_psql -d "$DB" -At -c "SELECT * FROM oms_saga_worker_status()"))"
}

bench_saga_workers() {
	local n k
	local -A saga_part_cap=()
	# The saga part's own capacity figure (CAP) is reported later: keep it.
	for k in "${!CAP[@]}"; do saga_part_cap[$k]=${CAP[$k]}; done
	oms_header "saga workers: capacity and throughput under load for oms.saga_workers = $BENCH_SAGA_WORKERS"
	wait_worker
	if [[ -z "${TPS[${RUNS[0]}]:-}" ]]; then
		bench_one "${RUNS[0]}"
	fi
	for n in $BENCH_SAGA_WORKERS; do
		set_saga_workers "$n"
		printf 'oms.saga_workers = %s: ' "$n"
		bench_capacity
		WORKERS[$n.capacity]=${CAP[rate]}
		printf 'oms.saga_workers = %s: under load, measure %ss ... ' "$n" "$BENCH_SECONDS"
		saga_run "w$n" "$BENCH_SECONDS"
		printf '%s create+pay/s, %s confirmed/s (backlog %s, drained in %s s)\n' "${SAGA[w$n.tps]}" \
			"${SAGA[w$n.confirmed]}" "${SAGA[w$n.backlog]}" "${SAGA[w$n.drain]}"
	done
	oms_psql -d "$DB" -q -c "ALTER SYSTEM RESET oms.saga_workers" -c "SELECT pg_reload_conf()" >/dev/null
	CAP=()
	for k in "${!saga_part_cap[@]}"; do CAP["$k"]=${saga_part_cap[$k]}; done
}

report_saga_workers() {
	local ref=${RUNS[0]} n backlog_s
	oms_header "saga workers results (raw SQL baseline: ${TPS[$ref]:-n/a} tps of bench/$ref.sql)"
	printf '%-8s %12s %9s  %12s %12s %9s %10s %12s\n' workers "capacity/s" "vs raw" "create+pay/s" \
		"confirmed/s" "vs raw" "backlog" "backlog in s"
	for n in $BENCH_SAGA_WORKERS; do
		backlog_s=$(awk -v b="${SAGA[w$n.backlog]}" -v c="${SAGA[w$n.confirmed]}" \
			'BEGIN { if (c > 0) printf "%.1f", b / c; else print "n/a" }')
		printf '%-8s %12s %9s  %12.1f %12.1f %9s %10s %12s\n' "$n" "${WORKERS[$n.capacity]}" \
			"$(ratio "${WORKERS[$n.capacity]}" "${TPS[$ref]:-}")" "${SAGA[w$n.tps]}" "${SAGA[w$n.confirmed]}" \
			"$(ratio "${SAGA[w$n.confirmed]}" "${TPS[$ref]:-}")" "${SAGA[w$n.backlog]}" "$backlog_s"
	done
	printf '\ncapacity: orders created and paid with the worker paused, then confirmed with no client\n'
	printf 'running (target >= 0.5x raw).  Under load: 8 clients create and pay as fast as they can for\n'
	printf '%s s; confirmed/s in the window as in the saga part (target >= 0.5x raw), backlog = sagas\n' "$BENCH_SECONDS"
	printf 'still running when the clients stop, in seconds of confirmations (target <= 2 s).\n'
}
