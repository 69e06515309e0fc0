#!/usr/bin/env bash
# test/suites/alert_rules.sh: the Prometheus alert rules of oms
# (monitoring/prometheus/oms-alerts.yml) are valid (promtool check rules)
# and pass their unit tests (promtool test rules oms-alerts.test.yml: each
# alert firing and not firing).  Also: every alert the rules define has a
# test and a runbook section in docs/monitoring.md.  Needs no database.
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$OMS_ROOT/monitoring/prometheus"

rc=0
run() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then
		echo "ok - $name"
	else
		echo "not ok - $name"
		# shellcheck disable=SC2001 # a prefix on every line: no ${var//} form
		sed 's/^/# /' <<<"$out" | head -40
		rc=1
	fi
}

if ! command -v promtool >/dev/null; then
	echo "not ok - promtool is installed (Debian package prometheus)"
	exit 1
fi
run "promtool check rules oms-alerts.yml" promtool check rules oms-alerts.yml
run "promtool test rules oms-alerts.test.yml" promtool test rules oms-alerts.test.yml

alerts=$(sed -nE 's/^ *- alert: *([A-Za-z0-9_]+).*/\1/p' oms-alerts.yml | sort -u)
absent=""
for a in OmsWorkerDown OmsOutboxLag OmsDeadLettersGrowing OmsRelayBreakerOpen OmsSagaFailureRateHigh; do
	grep -qx "$a" <<<"$alerts" || absent+=" $a"
done
if [[ -z "$absent" ]]; then echo "ok - the five oms alerts are defined"; else
	echo "not ok - the five oms alerts are defined"
	echo "# missing:$absent"
	rc=1
fi

untested="" undocumented="" unlabelled=""
for a in $alerts; do
	# A test of the alert firing (exp_alerts with labels) and not firing (exp_alerts: []).
	fires=$(awk -v a="$a" '$0 ~ "alertname: " a "$" {getline; if ($0 ~ /exp_alerts:$/) print "y"}' oms-alerts.test.yml | head -1)
	quiet=$(awk -v a="$a" '$0 ~ "alertname: " a "$" {getline; if ($0 ~ /exp_alerts: \[\]/) print "y"}' oms-alerts.test.yml | head -1)
	[[ "$fires" == y && "$quiet" == y ]] || untested+=" $a"
	grep -qE "^#+ $a\$" "$OMS_ROOT/docs/monitoring.md" 2>/dev/null || undocumented+=" $a"
done
# Every rule has a severity, a summary, a description and a runbook.
for key in 'severity:' 'summary:' 'description:' 'runbook:'; do
	n=$(grep -c "^ *$key" oms-alerts.yml || true)
	(( n == $(wc -w <<<"$alerts") )) || unlabelled+=" $key($n)"
done
report() {
	if [[ -z "$2" ]]; then echo "ok - $1"; else
		echo "not ok - $1"
		echo "# missing:$2"
		rc=1
	fi
}
report "every alert has a unit test firing and one not firing" "$untested"
report "every alert has a runbook section in docs/monitoring.md" "$undocumented"
report "every alert has severity, summary, description and runbook" "$unlabelled"
exit $rc
