#!/usr/bin/env bash
# test/suites/build.sh: the C sources compile without a single warning
# under -Wall -Wextra (the Makefile's flags), as the project promises.
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$OMS_ROOT"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# -B rebuilds every object; COPT adds -Werror to the compiler flags.
if make -B -s PG_CONFIG="$PG_CONFIG" COPT=-Werror all >"$log" 2>&1 && ! grep -qi 'warning' "$log"; then
	echo "ok - src/*.c builds warning-free with -Wall -Wextra -Werror"
else
	echo "not ok - src/*.c builds warning-free with -Wall -Wextra -Werror"
	sed 's/^/# /' "$log" | head -40
	exit 1
fi
