#!/usr/bin/env bash
# test/tap.sh: runs TAP tests (test/t/*.pl) with PostgreSQL's own test
# modules (PostgreSQL::Test::Cluster, shipped by postgresql-server-dev-15).
# Owns: the environment PGXS's prove_installcheck would give a test
# (TESTDIR, PG_REGRESS, PATH, the module paths), and running it as an
# unprivileged user: initdb refuses root, and CI runs as root.
#
# Usage: test/tap.sh test/t/NAME.pl ...
# Prints each test's TAP output.  The nodes' logs are kept in
# log/tap/NAME/ (PG_TEST_NOCLEAN=1 also keeps their data directories).
# As a normal user, "make installcheck" runs the same tests through prove.
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TAP_USER=${OMS_TAP_USER:-postgres}
PGXS_SRC=$(dirname "$("$PG_CONFIG" --pgxs)")/..
PGXS_SRC=$(cd "$PGXS_SRC" && pwd)
BINDIR=$("$PG_CONFIG" --bindir)

# Runs a command as TAP_USER when we are root, else as ourselves.
as_tap_user() {
	if ((EUID == 0)); then
		runuser -u "$TAP_USER" -- "$@"
	else
		"$@"
	fi
}

# Usage: run_one SCRIPT -> its exit status.
run_one() {
	local script rc=0 name work
	script=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
	name=$(basename "$script" .pl)
	# TESTDIR holds tmp_check (nodes, logs); it must belong to the test's user.
	work=$(mktemp -d "${TMPDIR:-/tmp}/oms-tap.XXXXXX")
	chmod 755 "$work"
	((EUID != 0)) || chown "$TAP_USER": "$work"
	# A test that needs files only root can make (owned by root or by another
	# user) has NAME.root.sh next to it: run here as root, it writes them
	# into the directory it is given, which the test finds in
	# OMS_TAP_ROOT_DIR.  Not root (make installcheck): no such directory,
	# and the test skips what needs it.
	local root_setup=${script%.pl}.root.sh root_dir=""
	if [[ -f "$root_setup" ]] && ((EUID == 0)); then
		root_dir="$work/root"
		mkdir -m 755 "$root_dir"
		if ! bash "$root_setup" "$root_dir" "$TAP_USER"; then
			oms_warn "$name: ${root_setup#"$OMS_ROOT"/} failed"
			rm -rf "$work"
			return 1
		fi
	fi
	(cd "$work" && as_tap_user env \
		TESTDIR="$work" \
		PATH="$BINDIR:$PATH" \
		PG_REGRESS="$PGXS_SRC/test/regress/pg_regress" \
		PG_CONFIG="$PG_CONFIG" \
		OMS_ROOT="$OMS_ROOT" \
		${OMS_POSTGRES:+OMS_POSTGRES="$OMS_POSTGRES"} \
		${root_dir:+OMS_TAP_ROOT_DIR="$root_dir"} \
		${PG_TEST_NOCLEAN:+PG_TEST_NOCLEAN=1} \
		perl -I "$PGXS_SRC/test/perl" -I "$OMS_ROOT/test/perl" "$script") || rc=$?
	mkdir -p "$OMS_LOG_DIR/tap"
	rm -rf "${OMS_LOG_DIR:?}/tap/$name"
	if [[ -d "$work/tmp_check/log" ]]; then
		cp -r "$work/tmp_check/log" "$OMS_LOG_DIR/tap/$name"
		printf '# logs: %s\n' "$OMS_LOG_DIR/tap/$name"
	fi
	if [[ -n "${PG_TEST_NOCLEAN:-}" ]]; then
		printf '# kept: %s\n' "$work"
	else
		rm -rf "$work"
	fi
	return "$rc"
}

main() {
	(($#)) || oms_die "usage: test/tap.sh test/t/NAME.pl ..."
	if ((EUID == 0)) && ! id "$TAP_USER" >/dev/null 2>&1; then
		oms_die "user $TAP_USER not found (install postgresql-15, or set OMS_TAP_USER)"
	fi
	# Built here: the tests run as a user that cannot write the repository.
	"$OMS_ROOT/test/kafka/build.sh" || oms_die "could not build the mock Kafka broker"
	local s rc=0
	for s in "$@"; do
		run_one "$s" || rc=1
	done
	return "$rc"
}

main "$@"
