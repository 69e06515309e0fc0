#!/usr/bin/env bash
# test/suites/events.sh: every event oms writes matches its published schema.
# Drives orders through every path (create, pay -> confirmed, partial and
# full refund, cancel pending, cancel processing, declined and out-of-stock
# payments -> failed, a remote payment's charge, void and late-charge
# refund commands) in a fresh database that no worker serves and no relay
# drains, so every outbox row stays; then exports each row as the relay would
# publish it (value and CloudEvents headers from oms._relay_claim) and checks
# it with test/events/validate.py against docs/events/*.json.  Finally shows
# that the validator rejects a corrupted payload and a mismatched header.
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$OMS_ROOT"

db=oms_events
validator=(/usr/bin/python3 test/events/validate.py)
rc=0
work=$(mktemp -d "${TMPDIR:-/tmp}/oms-events.XXXXXX")
trap 'rm -rf "$work"' EXIT

check() {
	local name=$1
	shift
	if "$@"; then
		echo "ok - $name"
	else
		echo "not ok - $name"
		rc=1
	fi
}

if ! /usr/bin/python3 -c 'import jsonschema' 2>/dev/null; then
	echo "not ok - python3-jsonschema is installed"
	echo "# install it: apt-get install -y python3-jsonschema"
	exit 1
fi

oms_fresh_db "$db" >/dev/null

# Every path of the state machine, one order each.  oms_run_sagas() runs the
# sagas in this session, deterministically, as the worker would.
oms_psql -d "$db" -At >/dev/null <<'SQL'
\set items '[{"sku": "EV-A", "quantity": 2, "unit_price": 150}, {"sku": "EV-B", "quantity": 1, "unit_price": 99}]'
SELECT oms_set_stock('EV-A', 100), oms_set_stock('EV-B', 100), oms_set_stock('EV-NONE', 0);
CREATE TEMP TABLE o (name text PRIMARY KEY, id uuid NOT NULL, expected text NOT NULL);
INSERT INTO o VALUES
	('confirmed', (oms_create_order('ev-confirmed', :'items', 'EUR', 'ev-create-1', '{"channel": "web", "tags": ["a"]}') ->> 'order_id')::uuid, 'confirmed'),
	('refunded', (oms_create_order('ev-refunded', :'items') ->> 'order_id')::uuid, 'refunded'),
	('cancel_pending', (oms_create_order('ev-cancel-pending', :'items') ->> 'order_id')::uuid, 'canceled'),
	('cancel_processing', (oms_create_order('ev-cancel-processing', :'items', 'JPY') ->> 'order_id')::uuid, 'canceled'),
	('out_of_stock', (oms_create_order('ev-out-of-stock', '[{"sku": "EV-NONE", "quantity": 1, "unit_price": 5}]') ->> 'order_id')::uuid, 'failed');
-- Payload timestamps carry the writing session's UTC offset; ce_time is UTC.
SET TimeZone = 'America/St_Johns';
INSERT INTO o VALUES
	('declined', (oms_create_order('ev-declined', :'items', 'USD', NULL, '{}') ->> 'order_id')::uuid, 'failed');
RESET TimeZone;
SELECT oms_pay_order(id, 'test_ok', 'ev-pay-1') FROM o WHERE name = 'confirmed';
SELECT oms_pay_order(id, 'test_ok') FROM o WHERE name IN ('refunded', 'out_of_stock');
SELECT oms_pay_order(id, 'test_decline') FROM o WHERE name = 'declined';
SELECT oms_run_sagas();
SELECT oms_cancel_order(id, 'changed my mind', 'ev-cancel-1') FROM o WHERE name = 'cancel_pending';
SELECT oms_pay_order(id, 'test_ok') FROM o WHERE name = 'cancel_processing';
SELECT oms_cancel_order(id) FROM o WHERE name = 'cancel_processing';
SELECT oms_refund_order(id, 100, 'damaged', 'ev-refund-1') FROM o WHERE name = 'refunded';
SELECT oms_run_sagas();
SELECT oms_refund_order(id) FROM o WHERE name = 'refunded';
SELECT oms_run_sagas();
-- The remote payment provider's commands: a charge that times out (a
-- void follows), and a late approval of it (a refund follows).
SET oms.payment_provider = 'kafka';
SET oms.payment_reply_timeout = '1s';
INSERT INTO o VALUES
	('remote', (oms_create_order('ev-remote', :'items') ->> 'order_id')::uuid, 'failed');
SELECT oms_pay_order(id, 'card') FROM o WHERE name = 'remote';
SELECT oms_run_sagas();
SELECT oms._run_sagas(100, now() + interval '2 seconds');
SELECT oms_payment_result(c.correlation_id, 'approved') FROM oms.payment_commands c JOIN o ON o.id = c.order_id
WHERE o.name = 'remote' AND c.command = 'void';
SELECT oms._run_sagas(100, now() + interval '3 seconds');
SELECT oms_payment_result(c.correlation_id, 'approved') FROM oms.payment_commands c JOIN o ON o.id = c.order_id
WHERE o.name = 'remote' AND c.command = 'charge';
RESET oms.payment_provider;
-- Kept for the checks below (the temp table dies with this session).
CREATE TABLE public.ev_expected AS SELECT * FROM o;
SQL

wrong=$(oms_psql -d "$db" -At -c "SELECT string_agg(format('%s is %s, expected %s', e.name, r.status, e.expected), '; ')
	FROM public.ev_expected AS e JOIN oms.orders AS r ON r.id = e.id WHERE r.status::text <> e.expected")
check "every order reached the final status of its path" test -z "$wrong"
[[ -z "$wrong" ]] || echo "# $wrong"

gaps=$(oms_psql -d "$db" -At -c "SELECT count(*) FROM (SELECT aggregateid, count(*) AS n, min(seq) AS lo, max(seq) AS hi
	FROM oms.outbox GROUP BY 1) AS g WHERE lo <> 1 OR hi <> n")
check "ce_omsseq is gap-free from 1 for every order" test "$gaps" = 0

# The events as the relay publishes them: oms._relay_claim gives the Kafka
# key, the value and the headers (a flat name, value, name, value ... array).
# It only reads: the rows stay in the outbox.
claim_sql="SELECT jsonb_build_object('type', x.type, 'payload', c.value::jsonb, 'key', c.key,
		'headers', jsonb_object(c.headers))
	FROM oms._relay_claim(100000) AS c JOIN oms.outbox AS x ON x.id = c.id
	ORDER BY c.aggregateid, c.seq"
if ! oms_psql -d "$db" -At -c "$claim_sql" >"$work/events.jsonl" 2>"$work/claim.err"; then
	echo "not ok - oms._relay_claim returns the outbox"
	sed 's/^/# /' "$work/claim.err"
	exit 1
fi
outbox=$(oms_psql -d "$db" -At -c "SELECT count(*) FROM oms.outbox")
check "oms._relay_claim returns every outbox row ($outbox events)" test "$(wc -l <"$work/events.jsonl")" -eq "$outbox"

# The validator prints one ok/not ok line per event type.
"${validator[@]}" --require-all-types <"$work/events.jsonl" || rc=1

# The validator can fail: a corrupted payload (the order total as a string,
# inside the $ref'd order document) and a header that names another type.
# The first order event (payment commands carry no order document; the
# order of aggregate ids is random).
first_order_event=$(grep -m 1 '"type": "order\.' "$work/events.jsonl")
corrupted=$(/usr/bin/python3 -c '
import json, sys
e = json.loads(sys.stdin.readline())
e["payload"]["order"]["total"] = str(e["payload"]["order"]["total"])
print(json.dumps(e))' <<<"$first_order_event")
mismatched=$(/usr/bin/python3 -c '
import json, sys
e = json.loads(sys.stdin.readline())
e["headers"]["ce_type"] = "oms.order.refunded"
print(json.dumps(e))' <<<"$first_order_event")
expect_rejected() {
	local name=$1 input=$2 out vrc=0
	out=$("${validator[@]}" <<<"$input" 2>&1) || vrc=$?
	if ((vrc != 0)) && grep -q '^not ok - ' <<<"$out"; then
		echo "ok - $name"
	else
		echo "not ok - $name"
		printf '%s\n' "$out" | sed 's/^/# validator: /'
		rc=1
	fi
}
expect_rejected "a corrupted payload is rejected" "$corrupted"
expect_rejected "a header naming another event type is rejected" "$mismatched"

# The catalogue's examples (every ```json block under a "### <type>"
# heading) must stay valid too.
extract_examples=$(
	cat <<'PY'
import json, re, sys
text = open(sys.argv[1], encoding="utf-8").read()
for section in re.split(r"^### ", text, flags=re.M)[1:]:
    etype = section.split("\n", 1)[0].strip()
    for block in re.findall(r"```json\n(.*?)\n```", section, re.S):
        print(json.dumps({"type": etype, "payload": json.loads(block)}))
PY
)
# Runs through check(), which shellcheck cannot see.
# shellcheck disable=SC2317
examples_ok() {
	if /usr/bin/python3 -c "$extract_examples" docs/events/README.md >"$work/examples.jsonl" 2>"$work/examples.out" &&
		"${validator[@]}" --require-all-types <"$work/examples.jsonl" >"$work/examples.out" 2>&1; then
		return 0
	fi
	grep -v '^ok - ' "$work/examples.out" | sed 's/^/# /'
	return 1
}
check "the examples in docs/events/README.md match the schemas" examples_ok

oms_psql -d postgres -c "DROP DATABASE $db" >/dev/null
exit $rc
