# shellcheck shell=bash
# test/lib.sh: shared shell library for test/run.sh, test/demo.sh and bench/run.sh.
# Owns: package check/install, build+install, a throwaway PostgreSQL 15
# cluster (private port and socket, stopped on exit), Makefile variable
# lookup and small logging helpers.  Source it: it sets strict mode and a few
# OMS_* variables, and defines functions; nothing runs until you call one.
#
# Suites in test/suites/ may source it too, e.g. to restart the cluster with
# oms_pg_ctl after killing it.

# The same strict mode as every script that sources this file.
set -euo pipefail

# Repository root, whatever the caller's working directory.
OMS_ROOT="${OMS_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
export OMS_ROOT

# Prefer the version-specific pg_config: /usr/bin/pg_config on Debian is a
# wrapper that follows the newest installed server-dev package.
if [[ -z "${PG_CONFIG:-}" ]]; then
	if [[ -x /usr/lib/postgresql/15/bin/pg_config ]]; then
		PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
	else
		PG_CONFIG=pg_config
	fi
fi
export PG_CONFIG

OMS_PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-15-cron postgresql-15-plproxy
	librdkafka-dev kcat prometheus prometheus-postgres-exporter python3-psycopg python3-jsonschema python3-confluent-kafka graphviz make gcc)

# Logs land in the repository (ignored by git) so they survive the run.
OMS_LOG_DIR="${OMS_LOG_DIR:-$OMS_ROOT/log}"

oms_say() { printf '%s\n' "$*"; }
oms_warn() { printf '%s\n' "$*" >&2; }
oms_die() { oms_warn "error: $*"; exit 1; }
oms_header() { printf '\n==== %s ====\n' "$*"; }

# ---------------------------------------------------------------- exit hooks
# One EXIT trap runs every registered hook, newest first, so the cluster is
# stopped before a caller's final summary line is printed.  INT/TERM turn
# into an ordinary exit so the same hooks run.
OMS_EXIT_HOOKS=()
OMS_EXIT_RC=0

oms_on_exit() {
	OMS_EXIT_HOOKS+=("$1")
	trap _oms_run_exit_hooks EXIT
	trap '_oms_on_signal 130' INT
	trap '_oms_on_signal 143' TERM
}

_oms_on_signal() {
	trap - INT TERM
	exit "$1"
}

_oms_run_exit_hooks() {
	OMS_EXIT_RC=$?
	trap - EXIT
	local i
	for ((i = ${#OMS_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
		eval "${OMS_EXIT_HOOKS[i]}" || true
	done
	exit "$OMS_EXIT_RC"
}

# ------------------------------------------------------------------ packages
_oms_missing_packages() {
	local p status
	for p in "${OMS_PACKAGES[@]}"; do
		status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
		[[ "$status" == "install ok installed" ]] || printf '%s\n' "$p"
	done
}

# Installs whatever is missing; silent when everything is there.
oms_ensure_packages() {
	command -v dpkg-query >/dev/null || oms_die "dpkg-query not found: this script expects Debian 12"
	local missing
	mapfile -t missing < <(_oms_missing_packages)
	if ((${#missing[@]} == 0)); then
		return 0
	fi
	if ((EUID != 0)); then
		oms_die "missing Debian packages: ${missing[*]}
  install them as root:  apt-get update && apt-get install -y ${missing[*]}"
	fi
	oms_say "installing missing packages: ${missing[*]}"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

# ------------------------------------------------------------ build, install
_oms_run_logged() {
	local log=$1
	shift
	if ! "$@" >"$log" 2>&1; then
		oms_warn "command failed: $* (log: $log)"
		tail -n 80 "$log" >&2
		return 1
	fi
}

# True when every file the build produced is already installed unchanged, so
# a non-root user who ran "sudo make install" before can still run the tests.
_oms_installed_current() {
	local libdir sharedir f
	libdir=$("$PG_CONFIG" --pkglibdir)
	sharedir=$("$PG_CONFIG" --sharedir)/extension
	cmp -s "$OMS_ROOT/oms.so" "$libdir/oms.so" || return 1
	for f in "$OMS_ROOT"/oms.control "$OMS_ROOT"/oms--*.sql "$OMS_ROOT"/src/sql/versions/oms--*.sql \
		"$OMS_ROOT"/oms_router.control "$OMS_ROOT"/oms_router--*.sql; do
		[[ -e "$f" ]] || continue
		cmp -s "$f" "$sharedir/$(basename "$f")" || return 1
	done
}

oms_build_install() {
	mkdir -p "$OMS_LOG_DIR"
	oms_say "building oms (log: $OMS_LOG_DIR/build.log)"
	_oms_run_logged "$OMS_LOG_DIR/build.log" make -C "$OMS_ROOT" PG_CONFIG="$PG_CONFIG" ||
		oms_die "build failed"
	# OMS_SKIP_INSTALL=1: test a tree against the extension installed as is
	# (a scratch copy of the repository must not overwrite the real install).
	if [[ "${OMS_SKIP_INSTALL:-0}" == 1 ]]; then
		oms_say "OMS_SKIP_INSTALL=1: using the installed oms"
		return 0
	fi
	if ((EUID != 0)) && _oms_installed_current; then
		oms_say "oms is already installed and current; skipping make install"
		return 0
	fi
	_oms_run_logged "$OMS_LOG_DIR/install.log" make -C "$OMS_ROOT" PG_CONFIG="$PG_CONFIG" install ||
		oms_die "make install failed (as a normal user, run 'sudo make install' first)"
}

# ------------------------------------------------------------ Makefile lists
# Prints a Makefile variable as make itself expands it (continuations,
# +=, includes), by adding a throwaway rule through a second makefile.
oms_make_var() {
	make -s --no-print-directory -C "$OMS_ROOT" PG_CONFIG="$PG_CONFIG" \
		-f Makefile -f - _oms_print_var OMS_VAR="$1" <<-'EOF'
		.PHONY: _oms_print_var
		_oms_print_var: ; @echo $($(OMS_VAR))
	EOF
}

# ----------------------------------------------------------------- cluster
OMS_CLUSTER_DIR=""

# Runs a command as the cluster's OS user: postgres when we are root.
oms_as_pg() {
	if ((EUID == 0)); then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

oms_pg_ctl() {
	# cd into the cluster dir: postgres may not be able to read the caller's cwd.
	(cd "$OMS_CLUSTER_DIR" && oms_as_pg "$OMS_PG_BINDIR/pg_ctl" -D "$OMS_PGDATA" "$@")
}

oms_server_log_tail() {
	local n=${1:-60} log="$OMS_CLUSTER_DIR/server.log"
	[[ -n "$OMS_CLUSTER_DIR" && -r "$log" ]] || return 0
	oms_warn "---- last $n lines of $log ----"
	tail -n "$n" "$log" >&2
	oms_warn "---- end of server log ----"
}

# Something already accepts TCP connections on this port?
_oms_port_busy() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

_oms_free_port() {
	local port=$1
	while _oms_port_busy "$port"; do
		port=$((port + 1))
	done
	printf '%s\n' "$port"
}

_oms_initdb() {
	local locale_opt=(--no-locale)
	# C.UTF-8 keeps sorting byte-wise but allows UTF-8 text; glibc 2.35+ has it built in.
	if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then
		locale_opt=(--locale=C.UTF-8)
	fi
	(cd "$OMS_CLUSTER_DIR" && oms_as_pg "$OMS_PG_BINDIR/initdb" -D "$OMS_PGDATA" \
		-A trust -U postgres -E UTF8 "${locale_opt[@]}") >"$OMS_CLUSTER_DIR/initdb.log" 2>&1 || {
		cat "$OMS_CLUSTER_DIR/initdb.log" >&2
		oms_die "initdb failed"
	}
}

# Appends settings; later lines win over initdb's defaults.
_oms_write_conf() {
	local port=$1
	shift
	{
		printf '\n# added by test/lib.sh\n'
		printf "shared_preload_libraries = 'oms'\n"
		printf 'port = %s\n' "$port"
		printf "unix_socket_directories = '%s'\n" "$OMS_CLUSTER_DIR"
		printf "listen_addresses = '127.0.0.1'\n"
		printf 'max_connections = 50\n'
		local line
		for line in "$@"; do printf '%s\n' "$line"; done
	} | oms_as_pg tee -a "$OMS_PGDATA/postgresql.conf" >/dev/null
}

# Starts the server and waits until it accepts connections.  OMS_POSTGRES
# names another program for pg_ctl to start in place of postgres (it must
# exec postgres with its arguments: test/valgrind/run.sh runs it under
# valgrind); OMS_PG_CTL_TIMEOUT (seconds, default 60) bounds pg_ctl's waits.
_oms_pg_ctl_start() {
	local opts=(-w -t "${OMS_PG_CTL_TIMEOUT:-60}" -l "$OMS_CLUSTER_DIR/server.log")
	[[ -z "${OMS_POSTGRES:-}" ]] || opts+=(-p "$OMS_POSTGRES")
	oms_pg_ctl "${opts[@]}" start
}

# Tries ports upwards from 54329; another run may grab a free-looking port
# between the probe and the bind, so a bind failure moves on to the next one.
_oms_start_on_free_port() {
	local port=54329 _
	local conf_base="$OMS_PGDATA/postgresql.conf.initdb"
	oms_as_pg cp "$OMS_PGDATA/postgresql.conf" "$conf_base"
	for _ in 1 2 3 4 5; do
		port=$(_oms_free_port "$port")
		oms_as_pg cp "$conf_base" "$OMS_PGDATA/postgresql.conf"
		_oms_write_conf "$port" "$@"
		if _oms_pg_ctl_start >/dev/null 2>&1; then
			export PGPORT=$port
			return 0
		fi
		grep -q 'could not bind' "$OMS_CLUSTER_DIR/server.log" 2>/dev/null || break
		port=$((port + 1))
	done
	oms_server_log_tail 80
	oms_die "could not start the PostgreSQL cluster in $OMS_CLUSTER_DIR"
}

oms_stop_cluster() {
	[[ -n "$OMS_CLUSTER_DIR" && -d "$OMS_CLUSTER_DIR" ]] || return 0
	if [[ -f "$OMS_PGDATA/postmaster.pid" ]]; then
		oms_pg_ctl -m fast -t "${OMS_PG_CTL_TIMEOUT:-60}" stop >/dev/null 2>&1 || oms_pg_ctl -m immediate stop >/dev/null 2>&1 || true
	fi
	rm -rf "$OMS_CLUSTER_DIR"
	OMS_CLUSTER_DIR=""
}

# Usage: oms_start_cluster [--no-fsync] ['setting = value' ...]
# --no-fsync is for tests only: benchmarks must keep normal durability.
oms_start_cluster() {
	local extra=()
	while (($#)); do
		case $1 in
		--no-fsync) extra+=("fsync = off") ;;
		--) ;;
		*) extra+=("$1") ;;
		esac
		shift
	done
	OMS_PG_BINDIR=$("$PG_CONFIG" --bindir)
	OMS_CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/oms-pg.XXXXXX")
	OMS_PGDATA="$OMS_CLUSTER_DIR/data"
	export OMS_PG_BINDIR OMS_CLUSTER_DIR OMS_PGDATA
	oms_on_exit oms_stop_cluster
	# World-traversable so clients running as another user reach the socket.
	chmod 755 "$OMS_CLUSTER_DIR"
	if ((EUID == 0)); then
		chown postgres: "$OMS_CLUSTER_DIR"
	fi
	_oms_initdb
	_oms_start_on_free_port "${extra[@]}"
	# Our binaries first: Debian's /usr/bin wrappers may pick another version.
	export PATH="$OMS_PG_BINDIR:$PATH"
	export PGHOST="$OMS_CLUSTER_DIR" PGUSER=postgres PGDATABASE=postgres
	oms_say "PostgreSQL $("$OMS_PG_BINDIR/postgres" -V | awk '{print $3}') running: PGHOST=$PGHOST PGPORT=$PGPORT"
}

# Is the server still accepting connections (suites may kill it)?
oms_cluster_alive() {
	"$OMS_PG_BINDIR/pg_isready" -q -h "$PGHOST" -p "$PGPORT" -t 5
}

# Brings a cluster back that a suite stopped or crashed.
oms_restart_cluster() {
	oms_pg_ctl -m fast -t "${OMS_PG_CTL_TIMEOUT:-60}" stop >/dev/null 2>&1 || true
	_oms_pg_ctl_start >/dev/null 2>&1 || {
		oms_server_log_tail 80
		oms_die "could not restart the PostgreSQL cluster"
	}
}

# psql with the settings scripts want: no psqlrc, stop on error, quiet.
oms_psql() {
	"$OMS_PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 "$@"
}

# Drops and recreates a database with the extension installed.
oms_fresh_db() {
	local db=$1
	# client_min_messages: hide "does not exist, skipping" on the first run.
	PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" oms_psql -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" &&
		oms_psql -d postgres -c "CREATE DATABASE \"$db\"" &&
		oms_psql -d "$db" -c "CREATE EXTENSION oms"
}
