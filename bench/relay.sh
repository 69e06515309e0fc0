# shellcheck shell=bash
# bench/relay.sh: the outbox relay benchmark, the "relay" part of "make bench".
# Sourced by bench/run.sh, which owns the cluster, $DB, the BENCH_* settings
# and the helpers used here (oms_psql, reset_tables, server_now, wait_worker,
# ratio); bench_relay runs the part, report_relay prints its results.
#
# The broker is the mock Kafka cluster of test/kafka (librdkafka's mock,
# BENCH_KAFKA_BROKERS (1) brokers, topic oms.order-events with
# BENCH_KAFKA_PARTITIONS (4) partitions), started here in the main shell.
#
# (a) Drain rate.  BENCH_RELAY_EVENTS (500000) events are copied into
#     oms.outbox while the relay is off (oms.kafka_brokers empty), then the
#     relay is turned on (ALTER SYSTEM + pg_reload_conf()) and the acked
#     events are counted in oms._relay_shmem_status() (published_total; the
#     shared-memory half of oms_relay_status(), without its count(*) of the
#     outbox) until all are acknowledged and removed.  Rate = events acked
#     after the first batch / time from the first to the last settled batch
#     (last_publish_at), so the producer's start-up is left out.  The
#     reference, measured in the same run: bench/relay_plain.sql, plain SQL
#     deleting the same backlog oldest first in batches of 1,000 from a copy
#     of oms.outbox with its keys and indexes (goal: relay >= 0.7 of it and
#     >= 50,000 events/s).  Also shown: bench/relay_ceiling.sql, the SQL
#     functions oms._relay_claim + oms._relay_settle in one session, without
#     Kafka (the claim now runs in C inside the worker, so this is no longer
#     the relay's own path).  For each batch size in BENCH_RELAY_BATCHES (1000 5000) and
#     each producer configuration in BENCH_RELAY_PRODUCERS:
#       shipped    oms.kafka_config empty: the producer as oms builds it;
#       inflight1  oms.kafka_config = 'max.in.flight.requests.per.connection=1';
#       inflight1+linger0  the same plus linger.ms=0 (oms builds the producer
#                  with linger.ms=5, src/kafka.c; oms.kafka_config overrides it);
#       cfg:<value> oms.kafka_config = '<value>', for experiments.
#     Why the second one: the mock broker (librdkafka 2.0.2) answers ~40 ms
#     late when more than one produce request is in flight on a connection
#     (a plain confluent-kafka client sees the same: ~46 ms per 40-message
#     burst over 4 partitions, 5.8 ms with one request in flight; 40 ms is
#     the Linux delayed-ACK floor, consistent with a Nagle stall on the
#     mock's side; real brokers set TCP_NODELAY).  One request in flight per connection avoids it, so that
#     row shows the relay rather than the test broker; the linger0 row shows
#     what the producer's 5 ms linger costs.
#     Where the time goes (printed per drain): claim and settle SQL time from
#     pg_stat_user_functions (track_functions = 'pl' for this part), the rest
#     = produce + waiting for acknowledgements + commits; CPU of the worker's
#     main thread, of its librdkafka threads and of the mock broker, from /proc.
#     The best (batch size, producer) by relay/plain ratio is used for (b)
#     and (c).
# (b) Commit -> ack latency at BENCH_RELAY_RATE (1000) events/s: pgbench -R
#     runs bench/create_order.sql (one order.created event per order) for
#     BENCH_SECONDS with the relay on.  Method: a logical replication slot
#     (test_decoding; the server is restarted once with wal_level = logical
#     for this) records, for every outbox row, the commit timestamp of the
#     transaction that inserted it (the order's commit) and of the one that
#     deleted it (the relay's settle, after the broker's acknowledgement);
#     latency = removed - committed (bench/relay_latency.sql).  Exact, no
#     sampling, nothing added to the product or its tables, decoded after the
#     run so it costs nothing while measuring.  Not chosen: kcat -J gives the
#     Kafka message timestamp, the producer's CreateTime set when the relay
#     hands the message over, before linger, the broker round trip and the
#     settle, so it misses the part being measured; polling the outbox has
#     the poll interval as its resolution and loads the server.  Settle
#     commit >= ack, so this is an upper bound of commit -> ack by the settle
#     transaction (about a millisecond).  Run per producer configuration.
# (c) Outbox size: pg_total_relation_size('oms.outbox') and its row count
#     before, during (BENCH_SUSTAIN_SAMPLES samples) and after a sustained
#     run of BENCH_SUSTAIN_SECONDS (300) at BENCH_RELAY_RATE orders/s with
#     the relay on, autovacuum as the server defaults set it (or with
#     autovacuum_naptime = BENCH_SUSTAIN_NAPTIME), heap and each index.
# BENCH_RELAY_PARTS (drain latency sustain) picks the parts to run.
#
# It reports; it never fails because of the numbers.

BENCH_RELAY_EVENTS=${BENCH_RELAY_EVENTS:-500000}
BENCH_RELAY_BATCHES=${BENCH_RELAY_BATCHES:-1000 5000}
BENCH_RELAY_PRODUCERS=${BENCH_RELAY_PRODUCERS:-shipped inflight1 inflight1+linger0}
BENCH_RELAY_RATE=${BENCH_RELAY_RATE:-1000}
BENCH_SUSTAIN_SECONDS=${BENCH_SUSTAIN_SECONDS:-300}
BENCH_SUSTAIN_SAMPLES=${BENCH_SUSTAIN_SAMPLES:-10}
# (c) with autovacuum_naptime set to this (e.g. 10s) instead of the server's.
BENCH_SUSTAIN_NAPTIME=${BENCH_SUSTAIN_NAPTIME:-}
# Which of (a) drain, (b) latency, (c) sustain to run.
BENCH_RELAY_PARTS=${BENCH_RELAY_PARTS:-drain latency sustain}
BENCH_KAFKA_BROKERS=${BENCH_KAFKA_BROKERS:-1}
BENCH_KAFKA_PARTITIONS=${BENCH_KAFKA_PARTITIONS:-4}
# Longest wait for one drain, and for the outbox to empty after a run.
RELAY_DRAIN_LIMIT=${BENCH_RELAY_DRAIN_LIMIT:-600}
RELAY_EMPTY_LIMIT=120
RELAY_SLOT=oms_bench_relay_latency
RELAY_TOPIC=oms.order-events

# Results: RELAY[key] with keys like drain.<batch>.<producer>.rate,
# ceiling.<batch>.rate, lat.<producer>.p99, sustain.before, ...
declare -A RELAY=()
RELAY_BEST=""
RELAY_CLK_TCK=$(getconf CLK_TCK)

relay_describe_producer() {
	case $1 in
	shipped) echo "oms.kafka_config empty (the producer as shipped)" ;;
	inflight1) echo "oms.kafka_config = 'max.in.flight.requests.per.connection=1'" ;;
	inflight1+linger0) echo "oms.kafka_config = 'max.in.flight.requests.per.connection=1,linger.ms=0'" ;;
	cfg:*) echo "oms.kafka_config = '${1#cfg:}'" ;;
	*) oms_die "unknown relay producer configuration '$1' in BENCH_RELAY_PRODUCERS (shipped, inflight1, inflight1+linger0, cfg:<oms.kafka_config>)" ;;
	esac
}

relay_producer_config() {
	case $1 in
	shipped) echo "" ;;
	inflight1) echo "max.in.flight.requests.per.connection=1" ;;
	inflight1+linger0) echo "max.in.flight.requests.per.connection=1,linger.ms=0" ;;
	cfg:*) echo "${1#cfg:}" ;;
	*) oms_die "unknown relay producer configuration '$1'" ;;
	esac
}

relay_sql() { oms_psql -d "$DB" -At "$@"; }

# Usage: relay_set NAME VALUE: ALTER SYSTEM, then reload.  The worker takes a
# reload at the top of its next loop (a SIGHUP sets its latch).
relay_set() {
	oms_psql -d "$DB" -c "ALTER SYSTEM SET $1 = '${2//\'/\'\'}'" -c "SELECT pg_catalog.pg_reload_conf()" >/dev/null
}

relay_on() { relay_set oms.kafka_brokers "$OMS_KAFKA_BOOTSTRAP"; }

relay_off() {
	relay_set oms.kafka_brokers ""
	sleep 0.5
}

server_epoch() { relay_sql -c "SELECT EXTRACT(epoch FROM pg_catalog.clock_timestamp())"; }

# published|failed|batches|last_publish_at (epoch) of this database's relay.
relay_counters() {
	relay_sql -c "SELECT pg_catalog.format('%s|%s|%s|%s', published_total, failed_attempts_total, batches_total,
			COALESCE(EXTRACT(epoch FROM last_publish_at), 0)) FROM oms._relay_shmem_status()"
}

# claim_ms|settle_ms: total time in the relay's SQL functions so far (all sessions).
relay_function_ms() {
	relay_sql -c "SELECT pg_catalog.format('%s|%s',
			COALESCE(pg_catalog.sum(total_time) FILTER (WHERE funcname = '_relay_claim'), 0),
			COALESCE(pg_catalog.sum(total_time) FILTER (WHERE funcname = '_relay_settle'), 0))
		FROM pg_catalog.pg_stat_user_functions WHERE schemaname = 'oms'"
}

# calls|ms of the worker tick, the claim and the settle so far (all sessions):
# tick_calls|tick_ms|claim_calls|claim_ms|settle_calls|settle_ms.
relay_function_calls() {
	relay_sql -c "SELECT pg_catalog.format('%s|%s|%s|%s|%s|%s',
			COALESCE(pg_catalog.sum(calls) FILTER (WHERE funcname = '_worker_tick'), 0),
			COALESCE(pg_catalog.sum(total_time) FILTER (WHERE funcname = '_worker_tick'), 0),
			COALESCE(pg_catalog.sum(calls) FILTER (WHERE funcname = '_relay_claim'), 0),
			COALESCE(pg_catalog.sum(total_time) FILTER (WHERE funcname = '_relay_claim'), 0),
			COALESCE(pg_catalog.sum(calls) FILTER (WHERE funcname = '_relay_settle'), 0),
			COALESCE(pg_catalog.sum(total_time) FILTER (WHERE funcname = '_relay_settle'), 0))
		FROM pg_catalog.pg_stat_user_functions WHERE schemaname = 'oms'"
}

relay_worker_pid() {
	relay_sql -c "SELECT pid FROM oms_worker_status() WHERE database = current_database() AND alive"
}

# CPU ticks (user + system) of a /proc/.../stat file; 0 when it is gone.
relay_ticks() {
	if [[ -r "$1" ]]; then
		awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "$1"
	else
		echo 0
	fi
}

# worker process|worker main thread|mock broker, in ticks.
relay_cpu() {
	local pid=$1
	printf '%s|%s|%s\n' "$(relay_ticks "/proc/$pid/stat")" "$(relay_ticks "/proc/$pid/task/$pid/stat")" \
		"$(relay_ticks "/proc/${OMS_KAFKA_PID:-0}/stat")"
}

# Waits until the outbox is empty; prints the seconds it took or "timeout".
relay_wait_empty() {
	local start=$EPOCHREALTIME limit=$RELAY_EMPTY_LIMIT
	until [[ "$(relay_sql -c "SELECT NOT EXISTS (SELECT FROM oms.outbox)")" == t ]]; do
		if awk -v s="$start" -v n="$EPOCHREALTIME" -v d="$limit" 'BEGIN { exit !(n - s > d) }'; then
			echo timeout
			return 0
		fi
		sleep 0.2
	done
	awk -v s="$start" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.1f", n - s }'
}

# Usage: relay_pgbench NAME SECONDS RATE: bench/create_order.sql at a fixed
# rate; prints the tps.
relay_pgbench() {
	local log="$BENCH_LOG_DIR/relay.$1.log"
	if ! "$OMS_PG_BINDIR/pgbench" -n -c "$BENCH_CLIENTS" -j "$BENCH_JOBS" -T "$2" -R "$3" \
		-f "$BENCH_DIR/create_order.sql" "$DB" >"$log" 2>&1; then
		oms_warn "pgbench failed for bench/create_order.sql (log: $log):"
		tail -n 30 "$log" >&2
		oms_server_log_tail 20
		return 1
	fi
	awk '/^tps = / { print $3; exit }' "$log"
}

# ------------------------------------------------------------ (a) drain rate
# The backlog in oms.outbox, from the template, vacuumed and checkpointed so
# the ceiling and every drain start from the same state.  The relay is off.
relay_fill() {
	oms_psql -d "$DB" \
		-c "SET client_min_messages = warning" \
		-c "TRUNCATE oms.outbox" \
		-c "INSERT INTO oms.outbox (id, aggregatetype, aggregateid, type, payload, seq, created_at)
			SELECT id, aggregatetype, aggregateid, type, payload, seq, created_at FROM public.bench_relay_events" \
		-c "VACUUM ANALYZE oms.outbox" \
		-c "CHECKPOINT"
}

relay_ceiling() {
	local batch=$1 out
	printf 'ceiling  batch %-5s  claim + settle SQL without Kafka ... ' "$batch"
	relay_fill
	out=$(oms_psql -d "$DB" -At -v batch="$batch" -f "$BENCH_DIR/relay_ceiling.sql")
	IFS='|' read -r "RELAY[ceiling.$batch.events]" "RELAY[ceiling.$batch.secs]" "RELAY[ceiling.$batch.rate]" \
		"RELAY[ceiling.$batch.claim]" "RELAY[ceiling.$batch.settle]" "RELAY[ceiling.$batch.batches]" <<<"$out"
	printf '%s events/s (%s batches; claim %s s, settle %s s incl. commits)\n' "${RELAY[ceiling.$batch.rate]}" \
		"${RELAY[ceiling.$batch.batches]}" "${RELAY[ceiling.$batch.claim]}" "${RELAY[ceiling.$batch.settle]}"
}

relay_plain() {
	local batch=$1 out
	printf 'plain    batch %-5s  DELETE oldest first from a copy of oms.outbox ... ' "$batch"
	out=$(oms_psql -d "$DB" -At -v batch="$batch" -f "$BENCH_DIR/relay_plain.sql")
	IFS='|' read -r "RELAY[plain.$batch.events]" "RELAY[plain.$batch.secs]" "RELAY[plain.$batch.rate]" \
		"RELAY[plain.$batch.batches]" "RELAY[plain.$batch.ticks]" <<<"$out"
	RELAY[plain.$batch.cpu_us]=$(awk -v t="${RELAY[plain.$batch.ticks]}" -v n="${RELAY[plain.$batch.events]}" \
		-v hz="$RELAY_CLK_TCK" 'BEGIN { if (n > 0) printf "%.1f", t * 1000000 / hz / n; else print "n/a" }')
	printf '%s events/s (%s batches; %s us of CPU per event)\n' "${RELAY[plain.$batch.rate]}" \
		"${RELAY[plain.$batch.batches]}" "${RELAY[plain.$batch.cpu_us]}"
}

relay_drain() {
	local batch=$1 producer=$2 key="drain.$1.$2" n=$BENCH_RELAY_EVENTS
	local pid p0 f0 b0 fn0 cpu0 t0 p f b lp first_p="" first_at="" cpu1 fn1 now status=ok
	printf 'drain    batch %-5s  producer %-17s ... ' "$batch" "$producer"
	relay_set oms.relay_batch_size "$batch"
	relay_set oms.kafka_config "$(relay_producer_config "$producer")"
	relay_fill
	pid=$(relay_worker_pid)
	IFS='|' read -r p0 f0 b0 _ <<<"$(relay_counters)"
	fn0=$(relay_function_ms)
	cpu0=$(relay_cpu "$pid")
	t0=$(server_epoch)
	relay_on
	while :; do
		IFS='|' read -r p f b lp <<<"$(relay_counters)"
		if [[ -z "$first_p" ]] && ((p > p0)); then
			first_p=$p
			first_at=$lp
		fi
		((p - p0 >= n)) && break
		now=$(server_epoch)
		if awk -v s="$t0" -v n="$now" -v d="$RELAY_DRAIN_LIMIT" 'BEGIN { exit !(n - s > d) }'; then
			status=timeout
			break
		fi
		sleep 0.25
	done
	cpu1=$(relay_cpu "$pid")
	relay_off
	# The worker flushes its function statistics at most once a second.
	sleep 2
	fn1=$(relay_function_ms)
	RELAY[$key.status]=$status
	RELAY[$key.acked]=$((p - p0))
	RELAY[$key.failed]=$((f - f0))
	RELAY[$key.batches]=$((b - b0))
	RELAY[$key.left]=$(relay_sql -c "SELECT pg_catalog.count(*) FROM oms.outbox")
	# Steady rate: from the first batch seen settled to the last one.
	RELAY[$key.rate]=$(awk -v a="$first_p" -v b="$p" -v s="$first_at" -v e="$lp" \
		'BEGIN { if (a != "" && e > s) printf "%.0f", (b - a) / (e - s); else print "n/a" }')
	RELAY[$key.elapsed]=$(awk -v s="$t0" -v e="$lp" 'BEGIN { printf "%.1f", e - s }')
	IFS='|' read -r "RELAY[$key.claim]" "RELAY[$key.settle]" "RELAY[$key.other]" \
		"RELAY[$key.cpu_main]" "RELAY[$key.cpu_rdk]" "RELAY[$key.cpu_mock]" <<<"$(awk -v f0="$fn0" -v f1="$fn1" \
		-v c0="$cpu0" -v c1="$cpu1" -v el="${RELAY[$key.elapsed]}" -v hz="$RELAY_CLK_TCK" 'BEGIN {
			split(f0, a, "|"); split(f1, b, "|"); split(c0, x, "|"); split(c1, y, "|")
			claim = (b[1] - a[1]) / 1000; settle = (b[2] - a[2]) / 1000
			pct = (el > 0) ? 100 / (el * hz) : 0
			printf "%.1f|%.1f|%.1f|%.0f|%.0f|%.0f\n", claim, settle, el - claim - settle,
				(y[2] - x[2]) * pct, ((y[1] - y[2]) - (x[1] - x[2])) * pct, (y[3] - x[3]) * pct }')"
	printf '%s events/s (%s acked, %s failed, %s batches, %s s from reload to empty%s)\n' "${RELAY[$key.rate]}" \
		"${RELAY[$key.acked]}" "${RELAY[$key.failed]}" "${RELAY[$key.batches]}" "${RELAY[$key.elapsed]}" \
		"$([[ $status == ok ]] || echo ", TIMEOUT after ${RELAY_DRAIN_LIMIT} s")"
	printf '         time: claim SQL %s s, settle SQL %s s, rest %s s (produce, waiting for acks, commits);\n' \
		"${RELAY[$key.claim]}" "${RELAY[$key.settle]}" "${RELAY[$key.other]}"
	# CPU of the main thread per event, whatever the load on the machine.
	RELAY[$key.cpu_us]=$(awk -v c0="$cpu0" -v c1="$cpu1" -v n="${RELAY[$key.acked]}" -v hz="$RELAY_CLK_TCK" 'BEGIN {
			split(c0, x, "|"); split(c1, y, "|")
			if (n > 0) printf "%.1f", (y[2] - x[2]) * 1000000 / hz / n; else print "n/a" }')
	printf '         CPU: worker main thread %s%% (%s us per event), its librdkafka threads %s%%, mock broker %s%%\n' \
		"${RELAY[$key.cpu_main]}" "${RELAY[$key.cpu_us]}" "${RELAY[$key.cpu_rdk]}" "${RELAY[$key.cpu_mock]}"
}

bench_relay_drain() {
	local batch producer key best_ratio=-1 r sizes
	oms_header "outbox relay (a): drain of $BENCH_RELAY_EVENTS pending events"
	printf 'building the backlog template (%s events) ... ' "$BENCH_RELAY_EVENTS"
	sizes=$(PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" oms_psql -d "$DB" -At \
		-v events="$BENCH_RELAY_EVENTS" -f "$BENCH_DIR/relay_events.sql")
	IFS='|' read -r "RELAY[payload_jsonb]" "RELAY[payload_text]" <<<"$sizes"
	printf 'payload %s B jsonb, %s B as JSON text\n' "${RELAY[payload_jsonb]}" "${RELAY[payload_text]}"
	relay_plain 1000
	for batch in $BENCH_RELAY_BATCHES; do
		relay_ceiling "$batch"
		for producer in $BENCH_RELAY_PRODUCERS; do
			relay_drain "$batch" "$producer"
			key="drain.$batch.$producer"
			RELAY[$key.ceiling_ratio]=$(ratio "${RELAY[$key.rate]}" "${RELAY[ceiling.$batch.rate]}")
			r=$(ratio "${RELAY[$key.rate]}" "${RELAY[plain.1000.rate]}")
			RELAY[$key.ratio]=$r
			if [[ "$r" != n/a ]] && awk -v a="$r" -v b="$best_ratio" 'BEGIN { exit !(a > b) }'; then
				best_ratio=$r
				RELAY_BEST="$batch $producer"
			fi
		done
	done
	oms_psql -d "$DB" -c "DROP TABLE public.bench_relay_events" -c "TRUNCATE oms.outbox"
	[[ -n "$RELAY_BEST" ]] || RELAY_BEST="${BENCH_RELAY_BATCHES%% *} ${BENCH_RELAY_PRODUCERS%% *}"
}

# ------------------------------------------------- (b) commit -> ack latency
relay_latency() {
	local producer=$1 key="lat.$1" t0 t1 from tps drain out fn0 fn1
	printf 'latency  producer %-17s  %s orders/s for %s s ... ' "$producer" "$BENCH_RELAY_RATE" "$BENCH_SECONDS"
	relay_set oms.kafka_config "$(relay_producer_config "$producer")"
	relay_on
	reset_tables >/dev/null
	relay_pgbench "latency.$producer.warmup" "$BENCH_WARMUP" "$BENCH_RELAY_RATE" >/dev/null
	relay_wait_empty >/dev/null
	relay_sql -c "SELECT pg_catalog.pg_create_logical_replication_slot('$RELAY_SLOT', 'test_decoding')" >/dev/null
	sleep 1.5
	fn0=$(relay_function_calls)
	t0=$(server_now)
	tps=$(relay_pgbench "latency.$producer" "$BENCH_SECONDS" "$BENCH_RELAY_RATE")
	t1=$(server_now)
	drain=$(relay_wait_empty)
	# The worker flushes its function statistics at most once a second.
	sleep 1.5
	fn1=$(relay_function_calls)
	# Where the worker's loop goes: per settled batch, the mean claim and
	# settle SQL time, and the saga ticks the order commits' wake-ups run
	# in the same loop (src/worker.c) before the relay's step.
	IFS='|' read -r "RELAY[$key.batches]" "RELAY[$key.claim_ms]" "RELAY[$key.settle_ms]" "RELAY[$key.ticks]" \
		"RELAY[$key.tick_ms]" <<<"$(awk -v a="$fn0" -v b="$fn1" 'BEGIN {
			split(a, x, "|"); split(b, y, "|")
			n = y[5] - x[5]; c = y[3] - x[3]
			printf "%d|%.2f|%.2f|%d|%.2f\n", n, (c > 0) ? (y[4] - x[4]) / c : 0, (n > 0) ? (y[6] - x[6]) / n : 0,
				y[1] - x[1], (y[1] > x[1]) ? (y[2] - x[2]) / (y[1] - x[1]) : 0 }')"
	# Skip the first fifth of the run (at most 3 s) as ramp-up.
	from=$(relay_sql -c "SELECT '$t0'::timestamptz + least(interval '3 s', ('$t1'::timestamptz - '$t0') / 5)")
	out=$(PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" oms_psql -d "$DB" -At \
		-v slot="$RELAY_SLOT" -v from="$from" -v to="$t1" -f "$BENCH_DIR/relay_latency.sql")
	relay_sql -c "SELECT pg_catalog.pg_drop_replication_slot('$RELAY_SLOT')" >/dev/null
	IFS='|' read -r "RELAY[$key.events]" "RELAY[$key.removed]" "RELAY[$key.p50]" "RELAY[$key.p90]" \
		"RELAY[$key.p99]" "RELAY[$key.max]" "RELAY[$key.settles]" "RELAY[$key.insert_commit]" <<<"$out"
	RELAY[$key.tps]=$(awk -v t="$tps" 'BEGIN { printf "%.1f", t }')
	RELAY[$key.drain]=$drain
	printf 'p50 %s ms, p99 %s ms (%s events in %s settles; %s orders/s; emptied %s s after the run)\n' \
		"${RELAY[$key.p50]:-n/a}" "${RELAY[$key.p99]:-n/a}" "${RELAY[$key.events]}" "${RELAY[$key.settles]}" \
		"${RELAY[$key.tps]}" "$drain"
	printf '         worker: %s batches settled, claim %s ms and settle %s ms each (SQL); %s saga ticks of %s ms each\n' \
		"${RELAY[$key.batches]}" "${RELAY[$key.claim_ms]}" "${RELAY[$key.settle_ms]}" "${RELAY[$key.ticks]}" \
		"${RELAY[$key.tick_ms]}"
}

bench_relay_latency() {
	local batch=${RELAY_BEST%% *} producer
	oms_header "outbox relay (b): commit -> ack latency at $BENCH_RELAY_RATE events/s"
	RELAY[lat.batch]=$batch
	relay_set oms.relay_batch_size "$batch"
	if [[ "$(relay_sql -c "SHOW wal_level")" != logical ]]; then
		printf 'restarting the server with wal_level = logical (for the decoding slot) ... '
		oms_psql -d "$DB" -c "ALTER SYSTEM SET wal_level = logical" >/dev/null
		oms_restart_cluster
		wait_worker
		printf 'done\n'
	fi
	for producer in $BENCH_RELAY_PRODUCERS; do
		relay_latency "$producer"
	done
}

# --------------------------------------------------- (c) outbox size, sustained
# size|rows|dead|autovacuums|heap size|indexes size|index sizes in kB, one per
# index in name order, separated by "/".
relay_outbox_sample() {
	relay_sql -c "SELECT pg_catalog.format('%s|%s|%s|%s|%s|%s|%s', pg_catalog.pg_total_relation_size('oms.outbox'),
			(SELECT pg_catalog.count(*) FROM oms.outbox), s.n_dead_tup, s.autovacuum_count,
			pg_catalog.pg_relation_size('oms.outbox'), pg_catalog.pg_indexes_size('oms.outbox'),
			(SELECT pg_catalog.string_agg((pg_catalog.pg_relation_size(i.indexrelid) / 1024)::text, '/'
										  ORDER BY i.indexrelid::pg_catalog.regclass::text)
			 FROM pg_catalog.pg_index AS i WHERE i.indrelid = 'oms.outbox'::pg_catalog.regclass))
		FROM pg_catalog.pg_stat_user_tables AS s WHERE s.relid = 'oms.outbox'::regclass"
}

bench_relay_sustain() {
	local batch=${RELAY_BEST%% *} producer=${RELAY_BEST#* } secs=$BENCH_SUSTAIN_SECONDS
	local log="$BENCH_LOG_DIR/relay.sustain.log" pid start next interval sample el max=0 s1 s2 s3 s4 s5 s6 s7
	oms_header "outbox relay (c): outbox size over $secs s at $BENCH_RELAY_RATE orders/s"
	RELAY[sustain.config]="batch $batch, producer $producer"
	relay_set oms.relay_batch_size "$batch"
	relay_set oms.kafka_config "$(relay_producer_config "$producer")"
	relay_on
	if [[ -n "$BENCH_SUSTAIN_NAPTIME" ]]; then
		relay_set autovacuum_naptime "$BENCH_SUSTAIN_NAPTIME"
	fi
	RELAY[sustain.autovacuum]=$(relay_sql -c "SELECT pg_catalog.string_agg(name || '=' || setting ||
			COALESCE(unit, ''), ', ' ORDER BY name) FROM pg_catalog.pg_settings
		WHERE name IN ('autovacuum', 'autovacuum_naptime', 'autovacuum_vacuum_threshold',
					   'autovacuum_vacuum_scale_factor', 'autovacuum_vacuum_cost_delay', 'autovacuum_vacuum_cost_limit')")
	RELAY[sustain.reloptions]=$(relay_sql -c "SELECT COALESCE(pg_catalog.array_to_string(reloptions, ', '), 'none')
		FROM pg_catalog.pg_class WHERE oid = 'oms.outbox'::regclass")
	reset_tables >/dev/null
	RELAY[sustain.before]=$(relay_outbox_sample)
	interval=$(awk -v s="$secs" -v n="$BENCH_SUSTAIN_SAMPLES" 'BEGIN { i = s / n; print (i < 1) ? 1 : i }')
	printf 'running create_order at -R %s for %s s (%s), sampling every %s s\n' "$BENCH_RELAY_RATE" "$secs" \
		"${RELAY[sustain.config]}" "$interval"
	RELAY[sustain.indexes]=$(relay_sql -c "SELECT pg_catalog.string_agg(i.indexrelid::pg_catalog.regclass::text, '/'
			ORDER BY i.indexrelid::pg_catalog.regclass::text)
		FROM pg_catalog.pg_index AS i WHERE i.indrelid = 'oms.outbox'::pg_catalog.regclass")
	printf '%8s %12s %10s %10s %8s %8s %12s  %s\n' "t (s)" "outbox size" "of it heap" indexes rows dead autovacuums \
		"kB per index (${RELAY[sustain.indexes]})"
	"$OMS_PG_BINDIR/pgbench" -n -c "$BENCH_CLIENTS" -j "$BENCH_JOBS" -T "$secs" -R "$BENCH_RELAY_RATE" \
		-f "$BENCH_DIR/create_order.sql" "$DB" >"$log" 2>&1 &
	pid=$!
	start=$EPOCHREALTIME
	next=$interval
	RELAY[sustain.series]=""
	RELAY[sustain.index_series]=""
	while kill -0 "$pid" 2>/dev/null; do
		sleep 0.5
		el=$(awk -v s="$start" -v n="$EPOCHREALTIME" 'BEGIN { printf "%.1f", n - s }')
		if awk -v e="$el" -v n="$next" 'BEGIN { exit !(e >= n) }' && kill -0 "$pid" 2>/dev/null; then
			sample=$(relay_outbox_sample)
			IFS='|' read -r s1 s2 s3 s4 s5 s6 s7 <<<"$sample"
			((s1 > max)) && max=$s1
			RELAY[sustain.series]+="$(awk -v b="$s1" 'BEGIN { printf "%.0f ", b / 1024 }')"
			RELAY[sustain.index_series]+="$(awk -v b="$s6" 'BEGIN { printf "%.0f ", b / 1024 }')"
			printf '%8.0f %12s %10s %10s %8s %8s %12s  %s\n' "$el" "$(numfmt --to=iec --suffix=B "$s1")" \
				"$(numfmt --to=iec --suffix=B "$s5")" "$(numfmt --to=iec --suffix=B "$s6")" "$s2" "$s3" "$s4" "$s7"
			next=$(awk -v n="$next" -v i="$interval" 'BEGIN { print n + i }')
		fi
	done
	if ! wait "$pid"; then
		oms_warn "pgbench failed for bench/create_order.sql (log: $log):"
		tail -n 30 "$log" >&2
		return 1
	fi
	RELAY[sustain.tps]=$(awk '/^tps = / { printf "%.1f", $3; exit }' "$log")
	RELAY[sustain.end]=$(relay_outbox_sample)
	RELAY[sustain.drain]=$(relay_wait_empty)
	RELAY[sustain.after]=$(relay_outbox_sample)
	RELAY[sustain.max]=$max
	printf 'pgbench: %s orders/s; outbox emptied %s s after the run\n' "${RELAY[sustain.tps]}" "${RELAY[sustain.drain]}"
}

# ------------------------------------------------------------------- driver
bench_relay() {
	local producer
	[[ "$BENCH_RELAY_EVENTS" =~ ^[1-9][0-9]*$ ]] || oms_die "BENCH_RELAY_EVENTS must be a positive integer"
	[[ "$BENCH_RELAY_RATE" =~ ^[1-9][0-9]*$ ]] || oms_die "BENCH_RELAY_RATE must be a positive integer"
	[[ "$BENCH_SUSTAIN_SECONDS" =~ ^[1-9][0-9]*$ ]] || oms_die "BENCH_SUSTAIN_SECONDS must be a positive integer"
	for producer in $BENCH_RELAY_PRODUCERS; do relay_describe_producer "$producer" >/dev/null; done
	# shellcheck source=test/kafka/broker.sh
	source "$OMS_ROOT/test/kafka/broker.sh"
	OMS_KAFKA_LOG_DIR="$BENCH_LOG_DIR" oms_kafka_start --brokers "$BENCH_KAFKA_BROKERS" \
		--partitions "$BENCH_KAFKA_PARTITIONS" --topic "$RELAY_TOPIC"
	# Off while the backlogs are built; function timing for the breakdown.
	relay_off
	relay_set track_functions pl
	wait_worker
	printf '\nmock Kafka: %s broker(s), topic %s with %s partitions (%s)\n' "$BENCH_KAFKA_BROKERS" "$RELAY_TOPIC" \
		"$BENCH_KAFKA_PARTITIONS" "$OMS_KAFKA_BOOTSTRAP"
	RELAY_BEST="${BENCH_RELAY_BATCHES%% *} ${BENCH_RELAY_PRODUCERS%% *}"
	[[ " $BENCH_RELAY_PARTS " != *" drain "* ]] || bench_relay_drain
	[[ " $BENCH_RELAY_PARTS " != *" latency "* ]] || bench_relay_latency
	[[ " $BENCH_RELAY_PARTS " != *" sustain "* ]] || bench_relay_sustain
	relay_off
}

report_relay() {
	oms_header "outbox relay results"
	if [[ " $BENCH_RELAY_PARTS " == *" drain "* ]]; then
		report_relay_drain
	fi
	if [[ " $BENCH_RELAY_PARTS " == *" latency "* ]]; then
		report_relay_latency
	fi
	if [[ " $BENCH_RELAY_PARTS " == *" sustain "* ]]; then
		report_relay_sustain
	fi
}

report_relay_drain() {
	local batch producer key best_batch=${RELAY_BEST%% *} best_producer=${RELAY_BEST#* }
	printf '(a) drain of %s pending events (payload %s B jsonb), relay vs plain SQL (DELETE oldest first, batches of\n' \
		"$BENCH_RELAY_EVENTS" "${RELAY[payload_jsonb]}"
	printf '1000, from a copy of oms.outbox: %s events/s in this run) and vs the ceiling (the claim + settle SQL functions, no Kafka)\n' \
		"${RELAY[plain.1000.rate]}"
	printf '%-6s %-17s %11s %9s %13s %9s %8s %8s %12s %9s %8s %10s\n' batch producer "relay ev/s" "vs plain" "ceiling ev/s" \
		"vs ceil." "claim s" "settle s" "rest ms/batch" "main CPU" "rdk CPU" "us/ev main"
	for batch in $BENCH_RELAY_BATCHES; do
		for producer in $BENCH_RELAY_PRODUCERS; do
			key="drain.$batch.$producer"
			printf '%-6s %-17s %11s %9s %13s %9s %8s %8s %12s %8s%% %7s%% %10s%s\n' "$batch" "$producer" "${RELAY[$key.rate]}" \
				"${RELAY[$key.ratio]}" "${RELAY[ceiling.$batch.rate]}" "${RELAY[$key.ceiling_ratio]}" \
				"${RELAY[$key.claim]}" "${RELAY[$key.settle]}" \
				"$(awk -v r="${RELAY[$key.other]}" -v b="${RELAY[$key.batches]}" \
					'BEGIN { if (b > 0) printf "%.1f", r * 1000 / b; else print "n/a" }')" \
				"${RELAY[$key.cpu_main]}" "${RELAY[$key.cpu_rdk]}" "${RELAY[$key.cpu_us]}" \
				"$([[ "${RELAY[$key.status]}" == ok ]] || echo "  TIMEOUT, ${RELAY[$key.left]} left")"
		done
	done
	for producer in $BENCH_RELAY_PRODUCERS; do
		printf '  %-17s = %s\n' "$producer" "$(relay_describe_producer "$producer")"
	done
	printf 'claim s: 0 since the claim runs in C (src/relay.c), not in a SQL function; settle s: time in\n'
	printf 'oms._relay_settle (pg_stat_user_functions); rest ms/batch: the drain time outside them per batch (claim, produce,\n'
	printf 'waiting for acknowledgements, commits); main/rdk CPU: worker main thread and its librdkafka threads, %% of one\n'
	printf 'core; us/ev main: CPU of the main thread per event (plain SQL: %s us per event of its backend), the better\n' \
		"${RELAY[plain.1000.cpu_us]}"
	printf 'comparison when other work on the machine skews the rates.  plain: bench/relay_plain.sql; ceiling:\n'
	printf 'bench/relay_ceiling.sql (oms._relay_claim + oms._relay_settle).\n'
	key="drain.$best_batch.$best_producer"
	printf 'best: batch %s, producer %s: relay/plain SQL = %s (target >= 0.7), %s events/s (target >= 50000)\n' \
		"$best_batch" "$best_producer" "${RELAY[$key.ratio]}" "${RELAY[$key.rate]}"
}

report_relay_latency() {
	local producer key

	printf '\n(b) commit -> ack latency at %s events/s (pgbench -R, create_order), oms.relay_batch_size %s\n' \
		"$BENCH_RELAY_RATE" "${RELAY[lat.batch]}"
	printf '%-17s %9s %7s %7s %7s %7s %7s %9s %8s %8s %9s %9s\n' producer orders/s events "p50 ms" "p90 ms" "p99 ms" \
		"max ms" "not acked" "batches" "ms/batch" "claim ms" "settle ms"
	for producer in $BENCH_RELAY_PRODUCERS; do
		key="lat.$producer"
		printf '%-17s %9s %7s %7s %7s %7s %7s %9s %8s %8s %9s %9s\n' "$producer" "${RELAY[$key.tps]}" \
			"${RELAY[$key.events]}" "${RELAY[$key.p50]:-n/a}" "${RELAY[$key.p90]:-n/a}" "${RELAY[$key.p99]:-n/a}" \
			"${RELAY[$key.max]:-n/a}" "$((${RELAY[$key.events]:-0} - ${RELAY[$key.removed]:-0}))" \
			"${RELAY[$key.batches]}" "$(awk -v n="${RELAY[$key.batches]}" -v s="$BENCH_SECONDS" \
				'BEGIN { if (n > 0) printf "%.1f", s * 1000 / n; else print "n/a" }')" \
			"${RELAY[$key.claim_ms]}" "${RELAY[$key.settle_ms]}"
	done
	printf 'latency: commit of the order -> commit of the relay settle that removed its event, from the WAL\n'
	printf '(test_decoding slot; the run minus its first fifth, at most 3 s).  batches: settled during the run;\n'
	printf 'ms/batch: run time / batches, the relay cycle (one batch in flight at a time); claim/settle ms: SQL\n'
	printf 'time per call (pg_stat_user_functions).  Target: p99 < 20 ms.\n'
}

report_relay_sustain() {
	local s1 s2 e1 e2 a1 a2 h2 i1 i2
	IFS='|' read -r s1 e1 _ a1 _ i1 <<<"${RELAY[sustain.before]}"
	IFS='|' read -r s2 e2 _ a2 h2 i2 <<<"${RELAY[sustain.end]}"
	printf '\n(c) outbox over %s s at -R %s (%s orders/s achieved; %s)\n' "$BENCH_SUSTAIN_SECONDS" \
		"$BENCH_RELAY_RATE" "${RELAY[sustain.tps]}" "${RELAY[sustain.config]}"
	printf 'before: %s, %s rows; at the end: %s (heap %s), %s rows; largest sample %s; after draining: %s\n' \
		"$(numfmt --to=iec --suffix=B "$s1")" "$e1" "$(numfmt --to=iec --suffix=B "$s2")" \
		"$(numfmt --to=iec --suffix=B "$h2")" "$e2" \
		"$(numfmt --to=iec --suffix=B "${RELAY[sustain.max]}")" \
		"$(numfmt --to=iec --suffix=B "${RELAY[sustain.after]%%|*}")"
	printf 'size samples (kB): %s\n' "${RELAY[sustain.series]}"
	printf 'of it indexes (kB): %s (before: %s kB, at the end: %s kB)\n' "${RELAY[sustain.index_series]}" \
		"$((i1 / 1024))" "$((i2 / 1024))"
	printf 'autovacuum runs on oms.outbox: %s; settings: %s; oms.outbox reloptions: %s\n' \
		"$((a2 - a1))" "${RELAY[sustain.autovacuum]}" "${RELAY[sustain.reloptions]}"
	printf 'target: the outbox and its indexes stay flat (reported, not enforced)\n'
}
