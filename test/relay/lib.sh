# shellcheck shell=bash
# test/relay/lib.sh: helpers for the outbox relay suites (test/suites/relay_*.sh).
# Source after test/lib.sh, test/process/common.sh and test/kafka/broker.sh.
#
# How a relay suite knows what should be on the topic: the relay deletes an
# outbox row once Kafka acknowledged it, so rl_install_capture adds a test
# trigger (capture.sql) that copies every outbox insert to public.rl_produced;
# rl_export writes those rows, the order timeline's status changes and the
# dead-lettered ids of one scenario (orders whose customer_id starts with a
# prefix) as files; rl_analyse compares them with the consumed records
# (analyse.py) and prints ok/not ok lines.

RL_DIR="$OMS_ROOT/test/relay"
RL_PY=/usr/bin/python3
RL_CONSUMER_PID=""
RL_CONSUMER_FILE=""

# Usage: rl_install_capture DB
rl_install_capture() {
	PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" oms_psql -d "$1" -f "$RL_DIR/capture.sql" >/dev/null
}

# Usage: rl_status DB KEY -> one field of oms_relay_status() as text.
rl_status() {
	wt_sql_quiet "$1" "SELECT oms_relay_status() ->> '$2'"
}

# Usage: rl_outbox_empty DB -> true when nothing is left to publish.
rl_outbox_empty() {
	wt_sql_true "$1" "SELECT NOT EXISTS (SELECT FROM oms.outbox)"
}

# Usage: rl_consumer_start TOPIC FILE: a background consumer (consume.py)
# appending every record of TOPIC to FILE, from the beginning, through
# broker outages.  Call it in the main shell; rl_consumer_stop ends it.
rl_consumer_start() {
	RL_CONSUMER_FILE=$2
	: >"$RL_CONSUMER_FILE"
	"$RL_PY" "$RL_DIR/consume.py" "$OMS_KAFKA_BOOTSTRAP" "$1" "$RL_CONSUMER_FILE" 2>"$RL_CONSUMER_FILE.err" &
	RL_CONSUMER_PID=$!
	oms_on_exit rl_consumer_stop
}

rl_consumer_stop() {
	if [[ -n "$RL_CONSUMER_PID" ]]; then
		kill -TERM "$RL_CONSUMER_PID" 2>/dev/null || true
		wait "$RL_CONSUMER_PID" 2>/dev/null || true
		RL_CONSUMER_PID=""
	fi
}

# Usage: rl_caught_up TOPIC NPARTITIONS FILE: true once FILE holds the last
# record (high watermark - 1) of every partition of TOPIC.
rl_caught_up() {
	local topic=$1 n=$2 file=$3 p args=() q line part off
	for ((p = 0; p < n; p++)); do args+=(-t "$topic:$p:-1"); done
	q=$(timeout 10 kcat -Q -b "$OMS_KAFKA_BOOTSTRAP" "${args[@]}" 2>/dev/null) || return 1
	[[ $(grep -c ' offset ' <<<"$q") == "$n" ]] || return 1
	while read -r line; do
		# "<topic> [<partition>] offset <high watermark>"
		part=${line#*[}
		part=${part%%]*}
		off=${line##* }
		((off > 0)) || continue
		grep -qF "\"partition\":$part,\"offset\":$((off - 1))," "$file" || return 1
	done <<<"$q"
}

# Usage: rl_export DB PREFIX DIR: the scenario's expected events (orders
# whose customer_id starts with PREFIX) as DIR/produced.json,
# DIR/timeline.json, DIR/undelivered.ids (open publish dead letters) and
# DIR/late.ids (publish dead letters replayed).
rl_export() {
	local db=$1 prefix=$2 dir=$3
	mkdir -p "$dir"
	wt_sql "$db" "
		SELECT json_build_object('id', p.id, 'order_id', p.aggregateid, 'seq', p.seq, 'type', p.type,
				'payload', p.payload,
				'ce_time', to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))
		FROM public.rl_produced AS p JOIN oms.orders AS o ON o.id = p.aggregateid
		WHERE o.customer_id LIKE '$prefix%'" >"$dir/produced.json"
	wt_sql "$db" "
		SELECT json_build_object('order_id', e.order_id, 'type', e.event_type,
				'seq', row_number() OVER (PARTITION BY e.order_id ORDER BY e.seq))
		FROM oms.order_events AS e JOIN oms.orders AS o ON o.id = e.order_id
		WHERE e.to_status IS NOT NULL AND o.customer_id LIKE '$prefix%'" >"$dir/timeline.json"
	wt_sql "$db" "
		SELECT d.payload ->> 'id' FROM oms.dead_letters AS d JOIN oms.orders AS o ON o.id = d.order_id
		WHERE d.kind = 'publish' AND d.status = 'open' AND o.customer_id LIKE '$prefix%'" >"$dir/undelivered.ids"
	wt_sql "$db" "
		SELECT d.payload ->> 'id' FROM oms.dead_letters AS d JOIN oms.orders AS o ON o.id = d.order_id
		WHERE d.kind = 'publish' AND d.status = 'replayed' AND o.customer_id LIKE '$prefix%'" >"$dir/late.ids"
}

# Usage: rl_analyse LABEL DIR CONSUMED TOPIC DB MAX_DUPLICATES [--validate]
# Runs analyse.py on an rl_export directory and the consumed records; with
# --validate also pipes the first delivery of each event through
# test/events/validate.py (--require-all-types when VALIDATE_ALL=1).
# Sets WT_RC=1 on any failure; the duplicate count is left in RL_DUPLICATES.
# shellcheck disable=SC2034  # RL_DUPLICATES and WT_RC are read by the suites
rl_analyse() {
	local label=$1 dir=$2 consumed=$3 topic=$4 db=$5 maxdup=$6 validate=${7:-} rc=0 extra=()
	"$RL_PY" "$RL_DIR/analyse.py" --label "$label" --consumed "$consumed" \
		--produced "$dir/produced.json" --timeline "$dir/timeline.json" \
		--undelivered "$dir/undelivered.ids" --late "$dir/late.ids" \
		--topic "$topic" --source "/oms/$db" --max-duplicates "$maxdup" \
		--validator-input "$dir/validate.json" --stats "$dir/stats" || rc=$?
	((rc == 0)) || WT_RC=1
	RL_DUPLICATES=$(awk '{print $2}' "$dir/stats" 2>/dev/null || echo "?")
	if [[ "$validate" == --validate ]]; then
		[[ "${VALIDATE_ALL:-0}" == 1 ]] && extra=(--require-all-types --require-prefix order.)
		rc=0
		"$RL_PY" "$OMS_ROOT/test/events/validate.py" "${extra[@]}" <"$dir/validate.json" \
			>"$dir/validate.out" 2>&1 || rc=$?
		sed -E "s/^(not ok|ok) - /\\1 - $label: payload schema: /" "$dir/validate.out"
		((rc == 0)) || WT_RC=1
	fi
}

# Usage: rl_log_since OFFSET -> the server log from byte OFFSET on.
rl_log_since() {
	tail -c +"$(($1 + 1))" "$WT_LOG"
}

rl_log_size() {
	stat -c %s "$WT_LOG"
}

# Usage: rl_start_again: pg_ctl start after a suite stopped its cluster.
# Another test run on this machine may have taken the port meanwhile (its
# free-port probe saw it free); then the cluster moves to a free port.
rl_start_again() {
	local port=$PGPORT log0 _
	for _ in 1 2 3 4 5; do
		log0=$(rl_log_size)
		if oms_pg_ctl -w -t 60 -l "$WT_LOG" start >/dev/null 2>&1; then
			export PGPORT=$port
			return 0
		fi
		rl_log_since "$log0" | grep -q 'could not bind' || return 1
		port=$(_oms_free_port $((port + 1)))
		wt_diag "port $PGPORT was taken while the cluster was stopped; moving to $port"
		printf 'port = %s\n' "$port" | oms_as_pg tee -a "$OMS_PGDATA/postgresql.conf" >/dev/null
	done
	return 1
}
