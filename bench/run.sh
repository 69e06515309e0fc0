#!/usr/bin/env bash
# bench/run.sh: the runner behind "make bench".
# Owns: a throwaway cluster with normal durability (fsync on), database
# oms_bench, and pgbench runs of bench/*.sql: oms_create_order against the
# same writes done in raw SQL, measured in the same run.  It reports ratios;
# it never fails because of timing (only when a script itself errors).
# Environment: BENCH_SECONDS (default 20) per measured run, BENCH_WARMUP
# (default 3) per warm-up run.
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

declare -A TPS=() ROWS=()

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
}

main() {
	[[ "$BENCH_SECONDS" =~ ^[1-9][0-9]*$ ]] || oms_die "BENCH_SECONDS must be a positive integer"
	[[ "$BENCH_WARMUP" =~ ^[1-9][0-9]*$ ]] || oms_die "BENCH_WARMUP must be a positive integer"
	oms_ensure_packages
	oms_build_install
	mkdir -p "$BENCH_LOG_DIR"
	# Default durability on purpose: fsync off would flatter every variant.
	oms_start_cluster --
	oms_fresh_db "$DB"
	oms_header "oms benchmark"
	printf 'machine: %s cores; pgbench -n -c %s -j %s -T %s (warm-up -T %s); simple query protocol\n' \
		"$(nproc)" "$BENCH_CLIENTS" "$BENCH_JOBS" "$BENCH_SECONDS" "$BENCH_WARMUP"
	printf 'server: fsync on, synchronous_commit on (defaults); logs in %s\n\n' "$BENCH_LOG_DIR"
	local name
	for name in "${RUNS[@]}"; do
		bench_one "$name"
	done
	report
}

main "$@"
