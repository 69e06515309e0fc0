#!/usr/bin/env bash
# test/suites/dashboard.sh: the Grafana dashboard
# (monitoring/grafana/oms-dashboard.json) is valid JSON with a data source
# variable, its queries are valid PromQL, and every metric it or the alert
# rules (monitoring/prometheus/oms-alerts.yml) name exists in oms_metrics()
# (a histogram's _bucket, _sum and _count series included); every metric
# family oms_metrics() exports is on some panel.
# shellcheck disable=SC2317 # functions here are called indirectly (wait loops, exit hooks), which shellcheck 0.9 cannot follow
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

dashboard="$OMS_ROOT/monitoring/grafana/oms-dashboard.json"
alerts="$OMS_ROOT/monitoring/prometheus/oms-alerts.yml"
db=oms_dashboard_check
work=$(mktemp -d "${TMPDIR:-/tmp}/oms-dashboard.XXXXXX")
cleanup() {
	oms_psql -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
	rm -rf "$work"
}
oms_on_exit cleanup
rc=0

# Structure, and the queries out of every panel (rows may nest panels).
if /usr/bin/python3 - "$dashboard" >"$work/exprs.txt" 2>"$work/json.err" <<-'PY'; then
	import json, sys
	d = json.load(open(sys.argv[1], encoding='utf-8'))
	problems = []
	if not isinstance(d.get('schemaVersion'), int) or d['schemaVersion'] < 36:
	    problems.append('schemaVersion missing or older than 36')
	variables = d.get('templating', {}).get('list', [])
	if not any(v.get('type') == 'datasource' and v.get('query') == 'prometheus' for v in variables):
	    problems.append('no Prometheus data source variable')
	ids = set()
	def walk(panels):
	    for p in panels:
	        if p.get('id') in ids:
	            problems.append('duplicate panel id %s' % p.get('id'))
	        ids.add(p.get('id'))
	        if p.get('type') != 'row':
	            if not p.get('targets'):
	                problems.append('panel %r has no query' % p.get('title'))
	            for t in p.get('targets', []):
	                if not t.get('expr'):
	                    problems.append('panel %r has an empty query' % p.get('title'))
	                print(t.get('expr', '').replace('\n', ' '))
	        walk(p.get('panels', []))
	walk(d.get('panels', []))
	for v in variables:
	    q = v.get('query')
	    if isinstance(q, dict):
	        q = q.get('query')
	    if v.get('type') == 'query' and q:
	        print('# variable ' + q)
	if problems:
	    sys.stderr.write('\n'.join(problems) + '\n')
	    sys.exit(1)
	PY
	echo "ok - the dashboard is valid JSON: schemaVersion, a Prometheus data source variable, a query on every panel ($(grep -vc '^#' "$work/exprs.txt") queries)"
else
	echo "not ok - the dashboard is valid JSON: schemaVersion, a Prometheus data source variable, a query on every panel"
	sed 's/^/# /' "$work/json.err" | head -20
	rc=1
fi

# PromQL syntax: the panel queries as recording rules for promtool, with
# Grafana's variables replaced by what they stand for.
{
	printf 'groups:\n  - name: dashboard\n    rules:\n'
	n=0
	grep -v '^#' "$work/exprs.txt" | while IFS= read -r expr; do
		n=$((n + 1))
		expr=${expr//\$__rate_interval/5m}
		expr=${expr//\$instance/.*}
		printf '      - record: dashboard:query%d\n        expr: %s\n' "$n" "$(/usr/bin/python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$expr")"
	done
} >"$work/rules.yml"
if promtool check rules "$work/rules.yml" >"$work/promtool.txt" 2>&1; then
	echo "ok - every dashboard query is valid PromQL (promtool check rules)"
else
	echo "not ok - every dashboard query is valid PromQL (promtool check rules)"
	sed 's/^/# /' "$work/promtool.txt" | head -20
	rc=1
fi

# The metric families and sample names oms_metrics() exposes.
oms_fresh_db "$db" >/dev/null
oms_psql -d "$db" -At -c 'SELECT oms_metrics()' >"$work/metrics.txt"
awk '$1 == "#" && $2 == "TYPE" {print $3, $4}' "$work/metrics.txt" | sort >"$work/families.txt"
{
	awk '{print $1}' "$work/families.txt"
	awk '$2 == "histogram" {print $1 "_bucket"; print $1 "_sum"; print $1 "_count"}' "$work/families.txt"
} | sort -u >"$work/names.txt"

# Metric names used: oms_ identifiers in the dashboard queries and in the
# alert rules' expr blocks (annotations name functions, not metrics).
grep -oE '\boms_[a-z0-9_]+' "$work/exprs.txt" | sort -u >"$work/dashboard_names.txt"
awk '/^ *expr:/ {on = 1} /^ *(for|labels|annotations):/ {on = 0} on' "$alerts" |
	grep -oE '\boms_[a-z0-9_]+' | sort -u >"$work/alert_names.txt"

unknown=$(comm -23 "$work/dashboard_names.txt" "$work/names.txt" | tr '\n' ' ')
if [[ -s "$work/dashboard_names.txt" && -z "$unknown" ]]; then
	echo "ok - every metric the dashboard uses ($(wc -l <"$work/dashboard_names.txt")) exists in oms_metrics()"
else
	echo "not ok - every metric the dashboard uses exists in oms_metrics()"
	echo "# unknown: $unknown"
	rc=1
fi
unknown=$(comm -23 "$work/alert_names.txt" "$work/names.txt" | tr '\n' ' ')
if [[ -s "$work/alert_names.txt" && -z "$unknown" ]]; then
	echo "ok - every metric the alert rules use ($(wc -l <"$work/alert_names.txt")) exists in oms_metrics()"
else
	echo "not ok - every metric the alert rules use exists in oms_metrics()"
	echo "# unknown: $unknown"
	rc=1
fi

# Every exported family is on the dashboard (a histogram through any of
# its series).
unused=""
while read -r family type; do
	if [[ "$type" == histogram ]]; then
		grep -qE "^${family}(_bucket|_sum|_count)?\$" "$work/dashboard_names.txt" || unused+=" $family"
	else
		grep -qx "$family" "$work/dashboard_names.txt" || unused+=" $family"
	fi
done <"$work/families.txt"
if [[ -z "$unused" ]]; then
	echo "ok - every metric family of oms_metrics() ($(wc -l <"$work/families.txt")) is on the dashboard"
else
	echo "not ok - every metric family of oms_metrics() is on the dashboard"
	echo "# unused:$unused"
	rc=1
fi
exit $rc
