#!/usr/bin/env bash
# test/suites/preload.sh: oms refuses to load outside shared_preload_libraries.
# A single-user backend on a fresh data directory has no preloaded
# libraries, so CREATE EXTENSION and LOAD must both fail with our hint.
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

bindir=$("$PG_CONFIG" --bindir)
dir=$(mktemp -d "${TMPDIR:-/tmp}/oms-preload.XXXXXX")
trap 'rm -rf "$dir"' EXIT
chmod 755 "$dir"
((EUID == 0)) && chown postgres: "$dir"
(cd "$dir" && oms_as_pg "$bindir/initdb" -D "$dir/data" -A trust -U postgres --no-locale) >"$dir/initdb.log" 2>&1

single() {
	(cd "$dir" && printf '%s\n' "$1" | oms_as_pg "$bindir/postgres" --single -D "$dir/data" postgres 2>&1) || true
}

check() {
	local name=$1 out=$2
	if grep -q 'oms must be loaded via shared_preload_libraries' <<<"$out" &&
		grep -q 'Add oms to shared_preload_libraries in postgresql.conf and restart the server' <<<"$out"; then
		echo "ok - $name"
	else
		echo "not ok - $name"
		# shellcheck disable=SC2001 # a prefix on every line: no ${var//} form
		sed 's/^/# /' <<<"$out"
		return 1
	fi
}

rc=0
check "CREATE EXTENSION without preload is refused with a hint" "$(single 'CREATE EXTENSION oms;')" || rc=1
check "LOAD without preload is refused with a hint" "$(single "LOAD 'oms';")" || rc=1
out=$(single "SELECT count(*) FROM pg_extension WHERE extname = 'oms';")
if grep -q 'count = "0"' <<<"$out"; then
	echo "ok - nothing is left installed after the refusal"
else
	echo "not ok - nothing is left installed after the refusal"
	# shellcheck disable=SC2001 # a prefix on every line: no ${var//} form
	sed 's/^/# /' <<<"$out"
	rc=1
fi
exit $rc
