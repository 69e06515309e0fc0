#!/usr/bin/env bash
# test/suites/docs.sh: the docs follow the code.
# The state diagram in docs/ is the output of the C transition table, every
# SQLSTATE the sources raise is listed in docs/errors.md, every public
# function in docs/api.md and every setting in docs/configuration.md.
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$OMS_ROOT"

db=oms_docs_check
oms_fresh_db "$db" >/dev/null
rc=0

report() {
	local name=$1 absent=$2
	if [[ -z "$absent" ]]; then
		echo "ok - $name"
	else
		echo "not ok - $name"
		# shellcheck disable=SC2001 # a prefix on every line: no ${var//} form
		sed 's/^/# missing: /' <<<"$absent"
		rc=1
	fi
}

if [[ -f docs/state-machine.dot ]] &&
	diff <(oms_psql -d "$db" -At -c 'SELECT oms_state_machine_dot()') docs/state-machine.dot >/dev/null; then
	echo "ok - docs/state-machine.dot is the output of oms_state_machine_dot()"
else
	echo "not ok - docs/state-machine.dot is the output of oms_state_machine_dot()"
	echo "# regenerate: psql -AtX -c 'SELECT oms_state_machine_dot()' > docs/state-machine.dot"
	rc=1
fi

# SQLSTATEs raised in SQL (ERRCODE = 'name' or 'XXXXX') and in C (ERRCODE_NAME).
sql_codes=$(grep -ohE "ERRCODE = '[a-z_0-9A-Z]+'" src/sql/*.sql | sed -E "s/ERRCODE = '(.*)'/\1/" | sort -u)
c_codes=$(grep -ohE 'errcode\(ERRCODE_[A-Z_]+\)' src/*.c | sed -E 's/errcode\(ERRCODE_(.*)\)/\1/' | tr '[:upper:]' '[:lower:]' | sort -u)
absent=""
for code in $sql_codes $c_codes; do
	# A condition name is documented with its five-character SQLSTATE;
	# resolve names through plpgsql's own table.
	state=$(oms_psql -d "$db" -At -c "DO \$\$ BEGIN RAISE EXCEPTION USING ERRCODE = '$code'; EXCEPTION WHEN OTHERS THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 | sed -nE 's/.*NOTICE: +([0-9A-Z]{5}).*/\1/p')
	grep -q "$state" docs/errors.md || absent+="$code ($state)"$'\n'
done
report "every SQLSTATE raised by src/ is in docs/errors.md" "${absent%$'\n'}"

absent=""
for fn in $(oms_psql -d "$db" -At -c "SELECT DISTINCT proname FROM pg_proc WHERE proname LIKE 'oms\_%' ORDER BY 1"); do
	grep -q "$fn" docs/api.md || absent+="$fn"$'\n'
done
report "every oms_* function is in docs/api.md" "${absent%$'\n'}"

absent=""
for guc in $(oms_psql -d "$db" -At -c "SELECT name FROM pg_settings WHERE name LIKE 'oms.%' ORDER BY 1"); do
	grep -q "$guc" docs/configuration.md || absent+="$guc"$'\n'
done
report "every oms.* setting is in docs/configuration.md" "${absent%$'\n'}"

oms_psql -d postgres -c "DROP DATABASE $db" >/dev/null
exit $rc
