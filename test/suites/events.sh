#!/usr/bin/env bash
# test/suites/events.sh: every event oms writes matches its published schema.
# Drives orders through every path (create, pay -> confirmed, partial and
# full refund, cancel pending, cancel processing, declined and out-of-stock
# payments -> failed, a remote payment's charge, void and late-charge
# refund commands; shipments created, shipped, delivered and canceled, lines
# canceled, returns received with restock, refunded and rejected) in a fresh
# database that no worker serves and no relay drains, so every outbox row
# stays; then exports each row as the relay would publish it (value and
# CloudEvents headers from oms._relay_claim) and checks it with
# test/events/validate.py against docs/events/*.json.  Finally shows that
# the validator rejects corrupted payloads (one per kind of rule), that
# every order document carries the 0.4.0 fields, and that an event as 0.3.0
# wrote it is still valid v1.
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
	('out_of_stock', (oms_create_order('ev-out-of-stock', '[{"sku": "EV-NONE", "quantity": 1, "unit_price": 5}]') ->> 'order_id')::uuid, 'failed'),
	('fulfilled', (oms_create_order('ev-fulfilled', '[{"sku": "EV-A", "quantity": 3, "unit_price": 150}, {"sku": "EV-B", "quantity": 3, "unit_price": 99}]', 'EUR') ->> 'order_id')::uuid, 'refunded');
-- Payload timestamps carry the writing session's UTC offset; ce_time is UTC.
SET TimeZone = 'America/St_Johns';
INSERT INTO o VALUES
	('declined', (oms_create_order('ev-declined', :'items', 'USD', NULL, '{}') ->> 'order_id')::uuid, 'failed');
RESET TimeZone;
SELECT oms_pay_order(id, 'test_ok', 'ev-pay-1') FROM o WHERE name = 'confirmed';
SELECT oms_pay_order(id, 'test_ok') FROM o WHERE name IN ('refunded', 'out_of_stock', 'fulfilled');
SELECT oms_pay_order(id, 'test_decline') FROM o WHERE name = 'declined';
SELECT oms_run_sagas();
SELECT oms_cancel_order(id, 'changed my mind', 'ev-cancel-1') FROM o WHERE name = 'cancel_pending';
SELECT oms_pay_order(id, 'test_ok') FROM o WHERE name = 'cancel_processing';
SELECT oms_cancel_order(id) FROM o WHERE name = 'cancel_processing';
SELECT oms_refund_order(id, 100, 'damaged', 'ev-refund-1') FROM o WHERE name = 'refunded';
SELECT oms_run_sagas();
SELECT oms_refund_order(id) FROM o WHERE name = 'refunded';
SELECT oms_run_sagas();
-- The rest of an order's life: a shipment created, shipped and delivered,
-- one canceled, lines canceled (a refund saga pays them back), a return
-- received with restock and refunded, one rejected, and a full refund
-- that cancels what is left unshipped.
SELECT id AS f FROM o WHERE name = 'fulfilled' \gset
SELECT oms_create_shipment(:'f', '[{"sku": "EV-A", "quantity": 3}]', 'default', 'DHL', NULL, 'ev-ship-1')
	-> 'shipment' ->> 'shipment_id' AS s1 \gset
SELECT oms_ship(:'s1', tracking_number => '00340434161094042557', idempotency_key => 'ev-ship-2');
SELECT oms_mark_delivered(:'s1', 'ev-deliver-1');
SELECT oms_create_shipment(:'f', '[{"sku": "EV-B", "quantity": 1}]') -> 'shipment' ->> 'shipment_id' AS s2 \gset
SELECT oms_cancel_shipment(:'s2', 'parcel damaged in the warehouse');
SELECT oms_cancel_items(:'f', '[{"sku": "EV-B", "quantity": 1}]', 'out of season', 'ev-cancel-items-1');
SELECT oms_run_sagas();
SELECT oms_request_return(:'f', 'too small', '[{"line_no": 1, "quantity": 2}]', 'ev-return-1')
	-> 'return' ->> 'return_id' AS r1 \gset
SELECT oms_receive_return(:'r1', 'default', 'ev-receive-1');
SELECT oms_run_sagas();
SELECT oms_request_return(:'f', 'changed my mind') -> 'return' ->> 'return_id' AS r2 \gset
SELECT oms_reject_return(:'r2', 'worn', 'ev-reject-1');
SELECT oms_refund_order(:'f', NULL, 'closing the order');
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
# OMS_EVENTS_EXPORT=file keeps the export (the README's examples come from it).
[[ -z "${OMS_EVENTS_EXPORT:-}" ]] || cp "$work/events.jsonl" "$OMS_EVENTS_EXPORT"
outbox=$(oms_psql -d "$db" -At -c "SELECT count(*) FROM oms.outbox")
check "oms._relay_claim returns every outbox row ($outbox events)" test "$(wc -l <"$work/events.jsonl")" -eq "$outbox"

# The validator prints one ok/not ok line per event type.
"${validator[@]}" --require-all-types <"$work/events.jsonl" || rc=1

# The validator can fail: a corrupted payload (the order total as a string,
# inside the $ref'd order document) and a header that names another type.
# The first order event (payment commands carry no order document; the
# order of aggregate ids is random).
first_order_event=$(grep -m 1 '"type": "order\.' "$work/events.jsonl")
# mutate EVENT CODE: the event with CODE (Python, on the event e) applied.
mutate() {
	/usr/bin/python3 -c '
import json, sys
e = json.loads(sys.stdin.readline())
exec(sys.argv[1])
print(json.dumps(e))' "$2" <<<"$1"
}
corrupted=$(mutate "$first_order_event" 'e["payload"]["order"]["total"] = str(e["payload"]["order"]["total"])')
mismatched=$(mutate "$first_order_event" 'e["headers"]["ce_type"] = "oms.order.refunded"')
# expect_rejected NAME EVENT [PATTERN]: the validator fails on EVENT, and
# its diagnostics match PATTERN (so it fails for the reason the test means).
expect_rejected() {
	local name=$1 input=$2 pattern=${3:-} out vrc=0
	out=$("${validator[@]}" <<<"$input" 2>&1) || vrc=$?
	if ((vrc != 0)) && grep -q '^not ok - ' <<<"$out" && { [[ -z "$pattern" ]] || grep -qE -- "$pattern" <<<"$out"; }; then
		echo "ok - $name"
	else
		echo "not ok - $name"
		printf '%s\n' "$out" | sed 's/^/# validator: /'
		rc=1
	fi
}
expect_accepted() {
	local name=$1 input=$2 out vrc=0
	out=$("${validator[@]}" <<<"$input" 2>&1) || vrc=$?
	if ((vrc == 0)); then
		echo "ok - $name"
	else
		echo "not ok - $name"
		printf '%s\n' "$out" | sed 's/^/# validator: /'
		rc=1
	fi
}
expect_rejected "a corrupted payload is rejected" "$corrupted"
expect_rejected "a header naming another event type is rejected" "$mismatched"

# The same for the 0.4.0 schemas: a shipment status that oms.shipment_status
# does not have, a return that says something else than the order document,
# a shipment event whose order changed its life status, and an order
# document with only part of the 0.4.0 fields.
first_of() { grep -m 1 "\"type\": \"$1\"" "$work/events.jsonl"; }
expect_rejected "a shipment status outside oms.shipment_status is rejected" \
	"$(mutate "$(first_of shipment.shipped)" 'e["payload"]["shipment"]["status"] = "in_transit"')" 'shipment/status'
expect_rejected "a return that differs from its entry in order.returns is rejected" \
	"$(mutate "$(first_of return.received)" 'e["payload"]["return"]["restock_location"] = "elsewhere"')" \
	'differs from its entry in order.returns'
expect_rejected "a shipment event whose previous_status is not the order's status is rejected" \
	"$(mutate "$(first_of shipment.created)" 'e["payload"]["previous_status"] = "refunded"')" 'anyOf'
expect_rejected "an order document with only part of the 0.4.0 fields is rejected" \
	"$(mutate "$first_order_event" 'del e["payload"]["order"]["fulfillment_status"]')" 'fulfillment_status'

# Every order document this version writes carries the 0.4.0 fields (the
# v1 schema lets them be absent, for the events 0.3.0 wrote), and an event
# as 0.3.0 wrote it, without them, is still valid v1.
v040_fields='["payment_status", "fulfillment_status", "last_saga", "shipments", "returns"]'
ledger='["quantity_canceled", "quantity_fulfilling", "quantity_shipped", "quantity_delivered", "quantity_returning", "quantity_returned", "quantity_refunded"]'
# Runs through check(), which shellcheck cannot see.
# shellcheck disable=SC2317
documents_complete() {
	/usr/bin/python3 -c '
import json, sys
doc_fields, ledger = json.loads(sys.argv[1]), json.loads(sys.argv[2])
bad = 0
for line in open(sys.argv[3], encoding="utf-8"):
    e = json.loads(line)
    o = e["payload"].get("order")
    if o is None:
        continue
    if any(f not in o for f in doc_fields) or any(f not in i for i in o["items"] for f in ledger) \
       or (e["type"] == "order.refunded" and "canceled" not in e["payload"]):
        bad += 1
        print("# %s of order %s lacks a 0.4.0 field" % (e["type"], o["order_id"]))
sys.exit(1 if bad else 0)' "$v040_fields" "$ledger" "$work/events.jsonl"
}
check "every order document carries payment_status, fulfillment_status, last_saga, shipments, returns and the ledger" \
	documents_complete
as_030=$(mutate "$(first_of order.refunded)" "
for f in $v040_fields:
    del e['payload']['order'][f]
for i in e['payload']['order']['items']:
    for f in $ledger:
        del i[f]
del e['payload']['canceled']")
expect_accepted "an order.refunded event as 0.3.0 wrote it is still valid v1" "$as_030"

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
