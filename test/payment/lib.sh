# shellcheck shell=bash
# test/payment/lib.sh: the test payment service (test/payment/service.py) for
# shell scripts: test/demo.sh, test/valgrind/run.sh, bench/payment_remote.sh
# and the shell suites that pay through it.  The TAP tests use
# test/perl/OmsPayment.pm instead.  Source after test/lib.sh,
# test/process/common.sh and test/kafka/broker.sh, and after
# oms_kafka_start (the service talks to $OMS_KAFKA_BOOTSTRAP).
#
#   pm_service_start LOG [service.py options ...]
#       Starts the service in the background (main shell, not $(...)),
#       appending its event lines to LOG, and waits (bounded, 60 s) until its
#       consumer group has partitions ("ready" line).  Returns 1 if it died
#       or never got ready.  Stopped at exit (oms_on_exit).
#   pm_service_stop        SIGTERM, bounded wait, then SIGKILL.  Idempotent.
#   pm_count LOG EVENT [FIELD=VALUE ...]
#       Lines of LOG for EVENT whose fields match all FIELD=VALUE given.
#   pm_produce_reply KEY CE_ID VALUE   a reply produced by kcat (as a provider would)
#   pm_inbox_ready DB [DEADLINE]       true once the worker consumes the replies
#
# The service's log lines are "<event> key=value ..." (see service.py).

# shellcheck disable=SC2317 # functions here are called indirectly (wait loops, exit hooks), which shellcheck 0.9 cannot follow
PM_DIR="$OMS_ROOT/test/payment"
PM_PY=/usr/bin/python3
PM_SERVICE_PID=""
PM_COMMANDS_TOPIC=${PM_COMMANDS_TOPIC:-oms.payment-commands}
PM_REPLIES_TOPIC=${PM_REPLIES_TOPIC:-oms.payment-replies}

pm_service_start() {
	local log=$1
	shift
	[[ -z "$PM_SERVICE_PID" ]] || pm_service_stop
	local before
	before=$(pm_count "$log" ready)
	"$PM_PY" "$PM_DIR/service.py" --bootstrap "$OMS_KAFKA_BOOTSTRAP" \
		--commands-topic "$PM_COMMANDS_TOPIC" --replies-topic "$PM_REPLIES_TOPIC" \
		--log "$log" --max-seconds "${PM_MAX_SECONDS:-600}" "$@" 2>>"$log.err" &
	PM_SERVICE_PID=$!
	if [[ -z "${_PM_HOOKED:-}" ]]; then
		oms_on_exit pm_service_stop
		_PM_HOOKED=1
	fi
	_pm_ready() {
		kill -0 "$PM_SERVICE_PID" 2>/dev/null || return 2
		(($(pm_count "$log" ready) > before))
	}
	local start=$EPOCHREALTIME rc
	while true; do
		rc=0
		_pm_ready || rc=$?
		((rc == 0)) && return 0
		if ((rc == 2)); then
			wt_diag "payment service exited during startup: $(tail -n 5 "$log.err" 2>/dev/null)"
			PM_SERVICE_PID=""
			return 1
		fi
		if awk -v s="$start" -v n="$EPOCHREALTIME" 'BEGIN { exit !(n - s > 60) }'; then
			wt_diag "payment service not ready after 60 s: $(tail -n 5 "$log.err" 2>/dev/null)"
			return 1
		fi
		# Poll interval, not synchronisation: the "ready" line decides.
		sleep 0.1
	done
}

pm_service_stop() {
	local pid=$PM_SERVICE_PID i
	[[ -n "$pid" ]] || return 0
	PM_SERVICE_PID=""
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

pm_count() {
	local log=$1 event=$2
	shift 2
	awk -v ev="$event" -v conds="$*" '
		BEGIN { n = split(conds, c, " ") }
		$1 == ev {
			for (i = 1; i <= n; i++) {
				found = 0
				for (j = 2; j <= NF; j++) if ($j == c[i]) { found = 1; break }
				if (!found) next
			}
			count++
		}
		END { print count + 0 }' "$log" 2>/dev/null || echo 0
}

pm_produce_reply() {
	local key=$1 ce_id=$2 value=$3
	printf '%s\n' "$value" | timeout 20 kcat -P -b "$OMS_KAFKA_BOOTSTRAP" -t "$PM_REPLIES_TOPIC" \
		-k "$key" -H "ce_id=$ce_id" -H "ce_type=oms.payment.reply" -H "content-type=application/json" \
		-H "ce_specversion=1.0" -H "ce_source=/oms-test/kcat" 2>&1
}

# Usage: pm_inbox_ready DB: true once the worker consumes the replies topic.
# Produces a probe reply (ce_id probe-<n>, no correlation id) every 2 s until
# the inbox holds one (each probe leaves a 'reply' dead letter, whose
# payload's message_id starts with "probe-": suites leave those out).
PM_PROBES=0
pm_inbox_ready() {
	local db=$1 deadline=${2:-60} start=$EPOCHREALTIME next=0 now first=$((PM_PROBES + 1))
	while true; do
		if ((PM_PROBES >= first)) && wt_sql_true "$db" "SELECT EXISTS (SELECT FROM oms.inbox
				WHERE message_id IN (SELECT 'probe-' || i FROM generate_series($first, $PM_PROBES) AS i))"; then
			return 0
		fi
		now=${EPOCHREALTIME/./}
		if ((now >= next)); then
			PM_PROBES=$((PM_PROBES + 1))
			pm_produce_reply probe "probe-$PM_PROBES" '{"probe": true}' >/dev/null || true
			next=$((now + 2000000))
		fi
		if awk -v s="$start" -v n="$EPOCHREALTIME" -v d="$deadline" 'BEGIN { exit !(n - s > d) }'; then
			return 1
		fi
		# Poll interval, not synchronisation: the inbox row decides.
		sleep 0.1
	done
}
