#!/usr/bin/env bash
# test/suites/dump.sh: pg_dump keeps the order book.  Orders, lines,
# timeline, outbox and idempotency keys survive a dump and restore into a
# fresh database, and the restored state machine still guards them.
# Locations and stock survive too, the location 'default' (which the
# extension creates) with the changes made to it.
set -euo pipefail
# shellcheck source=test/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

src=oms_dump_src
dst=oms_dump_dst
oms_fresh_db "$src" >/dev/null
oms_psql -d postgres -c "DROP DATABASE IF EXISTS $dst WITH (FORCE)" -c "CREATE DATABASE $dst" >/dev/null

oms_psql -d "$src" -At >/dev/null <<'SQL'
SELECT oms_create_order('dump-1', '[{"sku": "A", "quantity": 2, "unit_price": 150}]', 'EUR', 'dump-key');
SELECT oms_cancel_order((oms_create_order('dump-2', '[{"sku": "B", "quantity": 1, "unit_price": 9}]') ->> 'order_id')::uuid, 'test');
SELECT oms_set_location('east', 'East warehouse', 1);
SELECT oms_set_location('default', 'Main warehouse', 5, false);
SELECT oms_set_stock('A', 3), oms_set_stock('A', 4, 'east');
SQL

rc=0
"$OMS_PG_BINDIR/pg_dump" -d "$src" -Fc -f "$OMS_CLUSTER_DIR/oms_dump.custom"
# Without oms.restoring the guard refuses orders that arrive already
# canceled; with it, the restore goes through.
if PGOPTIONS='-c client_min_messages=fatal' "$OMS_PG_BINDIR/pg_restore" -d "$dst" --exit-on-error "$OMS_CLUSTER_DIR/oms_dump.custom" 2>/dev/null; then
	echo "not ok - a plain restore of non-pending orders is refused by the status guard"
	rc=1
else
	echo "ok - a plain restore of non-pending orders is refused by the status guard"
fi
oms_psql -d postgres -c "DROP DATABASE $dst" -c "CREATE DATABASE $dst" >/dev/null
PGOPTIONS='-c oms.restoring=on' "$OMS_PG_BINDIR/pg_restore" -d "$dst" --exit-on-error "$OMS_CLUSTER_DIR/oms_dump.custom"

state_query="SELECT (SELECT jsonb_agg(oms_get_order(id) ORDER BY customer_id) FROM oms.orders),
	(SELECT jsonb_agg(to_jsonb(e) - 'occurred_at' ORDER BY order_id, seq) FROM oms.order_events e),
	(SELECT jsonb_agg(to_jsonb(x) ORDER BY aggregateid, seq) FROM oms.outbox x),
	(SELECT jsonb_agg(to_jsonb(k) ORDER BY key) FROM oms.idempotency_keys k)"
before=$(oms_psql -d "$src" -At -c "$state_query")
after=$(oms_psql -d "$dst" -At -c "$state_query")
if [[ -n "$before" && "$before" == "$after" ]] && grep -q dump-key <<<"$after"; then
	echo "ok - orders, lines, timeline, outbox and idempotency keys survive pg_dump and pg_restore"
else
	echo "not ok - orders, lines, timeline, outbox and idempotency keys survive pg_dump and pg_restore"
	diff <(tr ',' '\n' <<<"$before") <(tr ',' '\n' <<<"$after") | head -20 | sed 's/^/# /'
	rc=1
fi

stock_query="SELECT (SELECT jsonb_agg(to_jsonb(l) ORDER BY code) FROM oms.locations l),
	(SELECT jsonb_agg(to_jsonb(s) ORDER BY sku, location) FROM oms.stock s)"
before=$(oms_psql -d "$src" -At -c "$stock_query")
after=$(oms_psql -d "$dst" -At -c "$stock_query")
if [[ -n "$before" && "$before" == "$after" ]] && grep -q 'Main warehouse' <<<"$after"; then
	echo "ok - locations (the changed 'default' included) and stock survive pg_dump and pg_restore"
else
	echo "not ok - locations (the changed 'default' included) and stock survive pg_dump and pg_restore"
	diff <(tr ',' '\n' <<<"$before") <(tr ',' '\n' <<<"$after") | head -20 | sed 's/^/# /'
	rc=1
fi

replay=$(oms_psql -d "$dst" -At -c "SELECT oms_create_order('dump-1', '[{\"sku\": \"A\", \"quantity\": 2, \"unit_price\": 150}]', 'EUR', 'dump-key') = oms_get_order((SELECT id FROM oms.orders WHERE customer_id = 'dump-1'))")
guard=$(oms_psql -d "$dst" -At -c "UPDATE oms.orders SET status = 'pending' WHERE customer_id = 'dump-2'" 2>&1 || true)
if [[ "$replay" == t ]] && grep -q 'illegal order status transition' <<<"$guard"; then
	echo "ok - the restored database replays stored keys and still enforces the state machine"
else
	echo "not ok - the restored database replays stored keys and still enforces the state machine"
	echo "# replay=$replay guard=$guard"
	rc=1
fi

oms_psql -d postgres -c "DROP DATABASE $src" -c "DROP DATABASE $dst" >/dev/null
exit $rc
