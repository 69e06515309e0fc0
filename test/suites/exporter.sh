#!/usr/bin/env bash
# test/suites/exporter.sh: prometheus-postgres-exporter with the oms queries
# file (monitoring/postgres_exporter/oms-queries.yaml) exports the same
# series as oms_metrics().  A known workload runs in a database of its own
# (sagas driven in this session, no worker serves the database), the
# exporter connects as a role that is only a member of oms_reader, and
# /metrics is fetched over HTTP and compared series by series.
# shellcheck disable=SC2317 # functions here are called indirectly (wait loops, exit hooks), which shellcheck 0.9 cannot follow
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

db=oms_exporter_check
role=oms_exporter_check
queries="$OMS_ROOT/monitoring/postgres_exporter/oms-queries.yaml"
work=$(mktemp -d "${TMPDIR:-/tmp}/oms-exporter.XXXXXX")
exporter_pid=""
rc=0

ok() { echo "ok - $1"; }
not_ok() {
	echo "not ok - $1"
	rc=1
}
check() {
	local name=$1
	shift
	if "$@"; then ok "$name"; else not_ok "$name"; fi
}

cleanup() {
	if [[ -n "$exporter_pid" ]]; then
		kill -TERM "$exporter_pid" 2>/dev/null || true
		wait "$exporter_pid" 2>/dev/null || true
	fi
	oms_psql -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "DROP ROLE IF EXISTS $role" >/dev/null 2>&1 || true
	rm -rf "$work"
}
oms_on_exit cleanup

exporter=$(command -v prometheus-postgres-exporter || true)
if [[ -z "$exporter" ]]; then
	not_ok "prometheus-postgres-exporter is installed (Debian package prometheus-postgres-exporter)"
	exit 1
fi

oms_fresh_db "$db" >/dev/null
oms_psql -d postgres -c "DROP ROLE IF EXISTS $role" -c "CREATE ROLE $role LOGIN IN ROLE oms_reader" \
	-c "ALTER ROLE $role SET jit = off" >/dev/null 2>&1

# The workload: 3 approved orders, 1 declined, 1 pending, 1 canceled; one
# approved order refunded.  Sagas run at a time in the future, so each
# step's duration is exactly 0.
workload() {
	oms_psql -d "$db" -At <<-'SQL'
	SELECT oms_set_stock('E-A', 100);
	CREATE FUNCTION pg_temp.new_order(p_customer text, p_method text) RETURNS uuid LANGUAGE sql AS $$
		SELECT (oms_pay_order((oms_create_order(p_customer, '[{"sku": "E-A", "quantity": 1, "unit_price": 250}]') ->> 'order_id')::uuid,
							  p_method) ->> 'order_id')::uuid;
	$$;
	SELECT pg_temp.new_order('e-ok-' || i, 'test_ok') FROM generate_series(1, 3) AS i;
	SELECT pg_temp.new_order('e-decline', 'test_decline');
	SELECT oms_create_order('e-pending', '[{"sku": "E-A", "quantity": 1, "unit_price": 1}]');
	SELECT oms_cancel_order(pg_temp.new_order('e-cancel', 'test_ok'));
	SELECT oms._run_sagas(1000, now() + interval '1 day');
	SELECT oms_refund_order((SELECT id FROM oms.orders WHERE customer_id = 'e-ok-1'));
	SELECT oms._run_sagas(1000, now() + interval '1 day');
	SQL
}
workload >/dev/null

# A free port: another run may take it between the probe and the bind, so
# a failed start moves on to the next port.
port=19187
started=false
for _ in 1 2 3 4 5; do
	port=$(_oms_free_port "$port")
	DATA_SOURCE_NAME="host=$PGHOST port=$PGPORT user=$role dbname=$db sslmode=disable" \
		"$exporter" --web.listen-address="127.0.0.1:$port" --extend.query-path="$queries" \
		--disable-default-metrics --disable-settings-metrics \
		--no-collector.database --no-collector.bgwriter >"$work/exporter.log" 2>&1 &
	exporter_pid=$!
	# Poll until it answers or exits; generous deadline.
	for _ in $(seq 1 300); do
		if curl -fsS "http://127.0.0.1:$port/metrics" -o /dev/null 2>/dev/null; then
			started=true
			break
		fi
		kill -0 "$exporter_pid" 2>/dev/null || break
		sleep 0.1
	done
	$started && break
	kill -TERM "$exporter_pid" 2>/dev/null || true
	wait "$exporter_pid" 2>/dev/null || true
	exporter_pid=""
	port=$((port + 1))
done
if ! $started; then
	not_ok "prometheus-postgres-exporter starts and serves /metrics"
	sed 's/^/# /' "$work/exporter.log" | tail -20
	exit 1
fi
ok "prometheus-postgres-exporter $("$exporter" --version 2>&1 | awk 'NR == 1 {print $3}') serves /metrics on 127.0.0.1:$port as a member of oms_reader"

scrape() {
	curl -fsS "http://127.0.0.1:$port/metrics" -o "$work/exporter.txt"
	oms_psql -d "$db" -At -c 'SELECT oms_metrics()' >"$work/oms.txt"
}
scrape

# promtool lints the exposition oms_metrics() prints (names, units, HELP).
if promtool check metrics <"$work/oms.txt" >"$work/promtool.txt" 2>&1; then
	ok "promtool check metrics accepts oms_metrics() without lint findings"
else
	not_ok "promtool check metrics accepts oms_metrics() without lint findings"
	sed 's/^/# /' "$work/promtool.txt" | head -20
fi

# Compares the two expositions: every oms_ family has the same TYPE and
# HELP, every series the same labels (but the exporter's "server") and
# value.  The outbox age is wall-clock time: present on both sides, >= 0.
# Prints TAP lines; the value lookups it writes are read below.
compare() {
	/usr/bin/python3 - "$work/exporter.txt" "$work/oms.txt" "$work/values.txt" <<-'PY'
	import re, sys

	LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
	LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

	def parse(path):
	    types, helps, samples = {}, {}, {}
	    for line in open(path, encoding='utf-8'):
	        line = line.rstrip('\n')
	        if not line:
	            continue
	        if line.startswith('# TYPE '):
	            _, _, name, kind = line.split(' ', 3)
	            types[name] = kind
	        elif line.startswith('# HELP '):
	            parts = line.split(' ', 3)
	            helps[parts[2]] = parts[3] if len(parts) > 3 else ''
	        elif not line.startswith('#'):
	            m = LINE.match(line)
	            if not m:
	                raise SystemExit('unparseable line in %s: %r' % (path, line))
	            labels = dict(LABEL.findall(m.group(3) or ''))
	            labels.pop('server', None)
	            samples[(m.group(1), tuple(sorted(labels.items())))] = float(m.group(4))
	    oms = lambda d: {k: v for k, v in d.items() if (k[0] if isinstance(k, tuple) else k).startswith('oms_')}
	    return oms(types), oms(helps), oms(samples)

	exp_types, exp_helps, exp_samples = parse(sys.argv[1])
	oms_types, oms_helps, oms_samples = parse(sys.argv[2])
	rc = 0

	def report(ok, name, details=()):
	    global rc
	    print(('ok - ' if ok else 'not ok - ') + name)
	    for d in list(details)[:20]:
	        print('# ' + d)
	    if not ok:
	        rc = 1

	# A Prometheus client library prints no HELP and TYPE for a family
	# without samples; oms_metrics() does.  Compare the families with samples.
	def family(name):
	    for suffix in ('_bucket', '_sum', '_count'):
	        if name.endswith(suffix) and oms_types.get(name[:-len(suffix)]) == 'histogram':
	            return name[:-len(suffix)]
	    return name
	sampled = {family(k[0]) for k in oms_samples}
	oms_types = {k: v for k, v in oms_types.items() if k in sampled}
	oms_helps = {k: v for k, v in oms_helps.items() if k in sampled}
	report(exp_types == oms_types, 'the exporter exposes the same %d oms_ families with the same TYPE' % len(oms_types),
	       ['%s: exporter %s, oms_metrics() %s' % (k, exp_types.get(k), oms_types.get(k))
	        for k in sorted(set(exp_types) | set(oms_types)) if exp_types.get(k) != oms_types.get(k)])
	report(exp_helps == oms_helps, 'the exporter HELP texts are those of oms_metrics()',
	       ['%s: %r vs %r' % (k, exp_helps.get(k), oms_helps.get(k))
	        for k in sorted(set(exp_helps) | set(oms_helps)) if exp_helps.get(k) != oms_helps.get(k)])
	missing = sorted(set(oms_samples) - set(exp_samples))
	extra = sorted(set(exp_samples) - set(oms_samples))
	report(not missing and not extra, 'the exporter exposes the same %d oms_ series (names and labels)' % len(oms_samples),
	       ['only in oms_metrics(): %s %s' % k for k in missing] + ['only in the exporter: %s %s' % k for k in extra])
	clock = {'oms_outbox_oldest_pending_age_seconds'}
	differ = ['%s %s: exporter %s, oms_metrics() %s' % (k[0], dict(k[1]), exp_samples[k], v)
	          for k, v in sorted(oms_samples.items())
	          if k in exp_samples and k[0] not in clock and exp_samples[k] != v]
	report(not differ, 'every oms_ series has the same value in the exporter and in oms_metrics()', differ)
	ages = [k for k in oms_samples if k[0] in clock]
	report(ages and all(k in exp_samples and exp_samples[k] >= 0 and oms_samples[k] >= 0 for k in ages),
	       'wall-clock gauges are present on both sides and not negative')

	with open(sys.argv[3], 'w') as out:
	    for (name, labels), value in sorted(exp_samples.items()):
	        out.write('%s%s %s\n' % (name, ''.join('{%s=%s}' % kv for kv in labels), repr(value)))
	sys.exit(rc)
	PY
}
compare || rc=1

# Absolute values the workload decides, as scraped over HTTP.
value() { awk -v k="$1" '$1 == k {print $2}' "$work/values.txt"; }
expect() {
	local series=$1 want=$2 got
	got=$(value "$series")
	if [[ "$got" == "$want" ]]; then
		ok "scraped $series = $want"
	else
		not_ok "scraped $series = $want"
		echo "# got '${got:-no such series}'"
	fi
}
expect 'oms_orders_by_status{status=confirmed}' 2.0
expect 'oms_orders_by_status{status=refunded}' 1.0
expect 'oms_orders_by_status{status=failed}' 1.0
expect 'oms_orders_by_status{status=canceled}' 1.0
expect 'oms_orders_by_status{status=pending}' 1.0
expect 'oms_orders_created_total' 6.0
expect 'oms_saga_outcomes_total{kind=fulfilment}{outcome=confirmed}' 3.0
expect 'oms_saga_outcomes_total{kind=fulfilment}{outcome=failed}' 1.0
expect 'oms_saga_outcomes_total{kind=fulfilment}{outcome=canceled}' 1.0
expect 'oms_saga_outcomes_total{kind=refund}{outcome=refunded}' 1.0
expect 'oms_sagas_in_flight{kind=fulfilment}' 0.0
expect 'oms_dead_letters_created_total{kind=saga_failed}' 1.0
expect 'oms_dead_letters_open{kind=saga_failed}' 1.0
expect 'oms_saga_step_duration_seconds_count{kind=fulfilment}{step=reserve}' 4.0
expect 'oms_saga_step_duration_seconds_bucket{kind=fulfilment}{le=0.005}{step=pay}' 3.0
expect 'oms_saga_step_duration_seconds_bucket{kind=fulfilment}{le=+Inf}{step=pay}' 3.0
expect 'oms_saga_step_duration_seconds_sum{kind=refund}{step=refund_payment}' 0.0
expect 'oms_worker_up' 0.0
expect 'oms_relay_breaker_open' 0.0
expect 'oms_outbox_pending_events' "$(oms_psql -d "$db" -At -c "SELECT count(*) || '.0' FROM oms.outbox")"

# The exporter ran every oms query without an error.
if grep -Eq '^pg_exporter_last_scrape_error 0$' "$work/exporter.txt" &&
	! grep -Eq 'err=' "$work/exporter.log"; then
	ok "the exporter reports no scrape error"
else
	not_ok "the exporter reports no scrape error"
	grep -E '^pg_exporter_last_scrape_error' "$work/exporter.txt" | sed 's/^/# /'
	grep -i 'err' "$work/exporter.log" | tail -5 | sed 's/^/# /'
fi

# More work: counters move, and both sides still agree.
oms_psql -d "$db" -At >/dev/null <<-'SQL'
SELECT oms_pay_order((oms_create_order('e-more', '[{"sku": "E-A", "quantity": 1, "unit_price": 250}]') ->> 'order_id')::uuid, 'test_ok');
SELECT oms._run_sagas(1000, now() + interval '1 day');
SQL
scrape
compare >"$work/compare2.txt" || true
if ! grep -q '^not ok' "$work/compare2.txt"; then
	ok "after more work the exporter and oms_metrics() still agree"
else
	not_ok "after more work the exporter and oms_metrics() still agree"
	sed 's/^/# /' "$work/compare2.txt" | head -20
fi
expect 'oms_orders_created_total' 7.0
expect 'oms_saga_outcomes_total{kind=fulfilment}{outcome=confirmed}' 4.0

exit $rc
