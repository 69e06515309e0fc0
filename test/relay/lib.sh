# shellcheck shell=bash
# test/relay/lib.sh: relay helpers the shell suites payment_kafka and
# worker_logs still use (the relay's own tests are TAP tests now:
# test/t/02*.pl with test/perl/OmsRelay.pm).  Delete it when those two move.
# Source after test/lib.sh, test/process/common.sh and test/kafka/broker.sh.

RL_DIR="$OMS_ROOT/test/relay"
RL_PY=/usr/bin/python3
RL_CONSUMER_PID=""
RL_CONSUMER_FILE=""

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

# Usage: rl_log_since OFFSET -> the server log from byte OFFSET on.
rl_log_since() {
	tail -c +"$(($1 + 1))" "$WT_LOG"
}

rl_log_size() {
	stat -c %s "$WT_LOG"
}
