#!/usr/bin/env bash
# test/suites/docs.sh: the docs follow the code.
# The state diagrams in docs/ are the output of the C transition tables, every
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

# One diagram per state machine: docs/state-machine.dot is the order's
# life (oms_state_machine_dot()), docs/<machine>-state-machine.dot each
# other machine of src/state.c; the SVG beside each is drawn from it.
for machine in $(oms_psql -d "$db" -At -c 'SELECT DISTINCT machine FROM oms.statuses ORDER BY 1'); do
	file=docs/$machine-state-machine.dot
	[[ $machine == order ]] && file=docs/state-machine.dot
	if [[ -f $file ]] &&
		diff <(oms_psql -d "$db" -At -c "SELECT oms_state_machine_dot('$machine')") "$file" >/dev/null; then
		echo "ok - $file is the output of oms_state_machine_dot('$machine')"
	else
		echo "not ok - $file is the output of oms_state_machine_dot('$machine')"
		echo "# regenerate: psql -AtX -c \"SELECT oms_state_machine_dot('$machine')\" > $file; dot -Tsvg $file > ${file%.dot}.svg"
		rc=1
	fi
done

# The cluster picture of architecture.md is drawn from its .dot source.
if diff <(dot -Tsvg docs/cluster.dot) docs/cluster.svg >/dev/null; then
	echo "ok - docs/cluster.svg is drawn from docs/cluster.dot"
else
	echo "not ok - docs/cluster.svg is drawn from docs/cluster.dot"
	echo "# regenerate: dot -Tsvg docs/cluster.dot > docs/cluster.svg"
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
