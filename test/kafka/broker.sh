# shellcheck shell=bash
# test/kafka/broker.sh: start/stop/control the mock Kafka cluster for tests.
#
# Source it from a bash test script, then:
#
#   oms_kafka_start [--brokers N] [--partitions N] [--topic NAME]...
#                   [--debug CONTEXTS] [-X prop=value]...
#       Builds build/mockbroker if needed, starts it in the background with a
#       control FIFO and waits (bounded polling, OMS_KAFKA_START_TIMEOUT
#       seconds, default 15) for its BOOTSTRAP line.  Exports:
#         OMS_KAFKA_BOOTSTRAP  e.g. 127.0.0.1:40239,127.0.0.1:36419
#         OMS_KAFKA_PID        the mockbroker process
#         OMS_KAFKA_DIR        its temp dir (control FIFO, out, log)
#       --partitions is the count for --topic and for "create <topic>";
#       topics that clients auto-create always get 4 partitions (mock default).
#
#   oms_kafka_cmd "down 1"
#       Sends one command line, waits (OMS_KAFKA_CMD_TIMEOUT s, default 10)
#       for its reply and prints the reply ("OK ..." / "ERR ...") on stdout.
#       Returns 0 on OK, 1 on ERR, 2 if the broker is gone or did not answer.
#       Commands: down|up <id|all>, rtt <id|all> <ms>,
#       error <Api|ApiKey> <Err|code> [count], clear <Api>,
#       create <topic> [partitions], leader <topic> <partition> <id|-1>,
#       bootstrap, ping, help, quit.  Broker ids are 1..N.
#
#   oms_kafka_stop
#       Stops the broker (SIGTERM, then SIGKILL after 5 s), reaps it and
#       removes its temp dir.  Idempotent.  If OMS_KAFKA_LOG_DIR is set the
#       broker's output and log are copied there first.
#
# Cleanup on exit: oms_kafka_start registers oms_kafka_stop once per shell.
# If test/lib.sh is loaded (oms_on_exit exists) it uses that hook list;
# otherwise it chains onto the current EXIT trap (keeping what was there and
# the exit status).  A caller that sets its own EXIT trap AFTER
# oms_kafka_start replaces ours and must call oms_kafka_stop itself; set
# OMS_KAFKA_NO_TRAP=1 to skip trap registration entirely.  As a last resort
# the broker runs with --exit-with-parent, so it dies with the shell that
# started it even on SIGKILL.  Call oms_kafka_start in the main shell, not in
# $(...) or a pipeline, or the broker exits with that subshell.

OMS_KAFKA_HOME="${OMS_KAFKA_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
OMS_KAFKA_BIN="$OMS_KAFKA_HOME/build/mockbroker"

_oms_kafka_err() { printf 'oms_kafka: %s\n' "$*" >&2; }

_oms_kafka_alive() {
	local pid=${1:-}
	[[ -n $pid ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	# an exited but not yet reaped child still answers kill -0
	local state=
	if [[ -r /proc/$pid/stat ]]; then
		state=$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null || true)
	fi
	[[ $state != Z ]]
}

_oms_kafka_register_cleanup() {
	[[ ${OMS_KAFKA_NO_TRAP:-0} == 1 ]] && return 0
	if declare -F oms_on_exit >/dev/null; then
		[[ ${_OMS_KAFKA_HOOKED:-} == "$BASHPID" ]] && return 0
		oms_on_exit oms_kafka_stop
		_OMS_KAFKA_HOOKED=$BASHPID
		return 0
	fi
	local prev
	prev=$(trap -p EXIT)
	[[ $prev == *oms_kafka_stop* ]] && return 0
	if [[ -z $prev ]]; then
		# the shell keeps its exit status across an EXIT trap
		trap oms_kafka_stop EXIT
		return 0
	fi
	# trap -p prints: trap -- '<command>' EXIT
	prev=${prev#trap -- }
	prev=${prev% EXIT}
	eval "prev=$prev"
	# Run the previous handler with $? restored (the else branch sees the
	# condition's status; a bare "(exit N)" would trip set -e).
	# shellcheck disable=SC2064,SC2154
	trap "_oms_kafka_rc=\$?
oms_kafka_stop
if (exit \$_oms_kafka_rc); then
${prev}
else
${prev}
fi" EXIT
}

oms_kafka_start() {
	local brokers=1 partitions='' topics=() extra=()
	while (($#)); do
		case $1 in
		--brokers | --partitions | --topic | --debug | -X)
			if (($# < 2)); then
				_oms_kafka_err "oms_kafka_start: $1 needs a value"
				return 2
			fi
			case $1 in
			--brokers) brokers=$2 ;;
			--partitions) partitions=$2 ;;
			--topic) topics+=(--topic "$2") ;;
			--debug) extra+=(--debug "$2") ;;
			-X) extra+=(-X "$2") ;;
			esac
			shift 2
			;;
		*)
			_oms_kafka_err "oms_kafka_start: unknown option $1"
			return 2
			;;
		esac
	done
	if _oms_kafka_alive "${OMS_KAFKA_PID:-}"; then
		_oms_kafka_err "already running (pid $OMS_KAFKA_PID); call oms_kafka_stop first"
		return 1
	fi
	"$OMS_KAFKA_HOME/build.sh" || {
		_oms_kafka_err "build failed"
		return 1
	}

	local dir
	dir=$(mktemp -d "${TMPDIR:-/tmp}/oms-kafka.XXXXXX") || return 1
	mkfifo -m 600 "$dir/control" || return 1
	: >"$dir/out"
	local args=(--brokers "$brokers" --control "$dir/control" --exit-with-parent)
	[[ -n $partitions ]] && args+=(--partitions "$partitions")

	"$OMS_KAFKA_BIN" "${args[@]}" "${topics[@]}" "${extra[@]}" \
		>"$dir/out" 2>"$dir/log" </dev/null &
	OMS_KAFKA_PID=$!
	OMS_KAFKA_DIR=$dir
	export OMS_KAFKA_PID OMS_KAFKA_DIR
	_oms_kafka_register_cleanup

	local timeout=${OMS_KAFKA_START_TIMEOUT:-15} i line=''
	for ((i = 0; i < timeout * 20; i++)); do
		# only a complete first line counts
		if IFS= read -r line <"$dir/out" && [[ $line == "BOOTSTRAP "* ]]; then
			break
		fi
		line=''
		if ! _oms_kafka_alive "$OMS_KAFKA_PID"; then
			_oms_kafka_err "mockbroker exited during startup:"
			cat "$dir/log" >&2
			oms_kafka_stop
			return 1
		fi
		sleep 0.05
	done
	if [[ $line != "BOOTSTRAP "* ]]; then
		_oms_kafka_err "no BOOTSTRAP line after ${timeout}s"
		cat "$dir/log" >&2
		oms_kafka_stop
		return 1
	fi
	OMS_KAFKA_BOOTSTRAP=${line#BOOTSTRAP }
	export OMS_KAFKA_BOOTSTRAP
}

oms_kafka_cmd() {
	local cmd="$*"
	local dir=${OMS_KAFKA_DIR:-} pid=${OMS_KAFKA_PID:-}
	if [[ -z $dir || ! -p $dir/control ]]; then
		_oms_kafka_err "mock broker not started"
		return 2
	fi
	if [[ $cmd == *$'\n'* || $cmd == *'#'* ]]; then
		_oms_kafka_err "one command per call, without '#'"
		return 2
	fi
	_OMS_KAFKA_SEQ=$((${_OMS_KAFKA_SEQ:-0} + 1))
	local tag="c${BASHPID}_${_OMS_KAFKA_SEQ}_${RANDOM}"
	local fd
	# read-write open never blocks, even if the broker is gone
	exec {fd}<>"$dir/control" || return 2
	printf '%s #%s\n' "$cmd" "$tag" >&"$fd"
	exec {fd}>&-

	local timeout=${OMS_KAFKA_CMD_TIMEOUT:-10} i reply=''
	for ((i = 0; i < timeout * 50; i++)); do
		reply=$(grep -m1 -e " #${tag}\$" "$dir/out" 2>/dev/null || true)
		if [[ -n $reply ]]; then
			reply=${reply% #"$tag"}
			printf '%s\n' "$reply"
			[[ $reply == OK* ]] && return 0
			return 1
		fi
		if ! _oms_kafka_alive "$pid"; then
			_oms_kafka_err "mockbroker is not running (command: $cmd)"
			return 2
		fi
		sleep 0.02
	done
	_oms_kafka_err "no reply to '$cmd' after ${timeout}s"
	return 2
}

oms_kafka_stop() {
	local pid=${OMS_KAFKA_PID:-} dir=${OMS_KAFKA_DIR:-} i
	if [[ -n $pid ]]; then
		if _oms_kafka_alive "$pid"; then
			kill -TERM "$pid" 2>/dev/null || true
			for ((i = 0; i < 100; i++)); do
				_oms_kafka_alive "$pid" || break
				sleep 0.05
			done
			if _oms_kafka_alive "$pid"; then
				_oms_kafka_err "mockbroker $pid ignored SIGTERM; killing"
				kill -KILL "$pid" 2>/dev/null || true
			fi
		fi
		# reap it (only works in the shell that started it)
		wait "$pid" 2>/dev/null || true
	fi
	if [[ -n $dir && -d $dir ]]; then
		if [[ -n ${OMS_KAFKA_LOG_DIR:-} ]]; then
			if mkdir -p "$OMS_KAFKA_LOG_DIR"; then
				cat "$dir/out" "$dir/log" >"$OMS_KAFKA_LOG_DIR/mockbroker.${pid:-x}.log" 2>/dev/null || true
			fi
		fi
		rm -rf -- "$dir"
	fi
	unset OMS_KAFKA_PID OMS_KAFKA_DIR OMS_KAFKA_BOOTSTRAP
	return 0
}
