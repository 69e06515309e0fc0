-- timeline_outbox: every state change writes its timeline entry and its
-- outbox event in the same transaction, with gap-free per-order sequences.
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql

SELECT oms_create_order('tl-1', '[{"sku": "A", "quantity": 2, "unit_price": 150}]', 'EUR', 'tl-key', '{"src": "test"}') ->> 'order_id' AS id \gset
SELECT oms_cancel_order(:'id', 'out of stock') AS canceled \gset

-- The timeline, oldest first.
SELECT seq, event_type, from_status, to_status, data FROM oms_order_timeline(:'id');
SELECT bool_and(occurred_at IS NOT NULL) AS timed,
	   (array_agg(occurred_at ORDER BY seq))[1] <= (array_agg(occurred_at ORDER BY seq))[2] AS ordered
FROM oms_order_timeline(:'id');

-- The outbox: Debezium outbox-router columns, one event per change, in order.
SELECT seq, aggregatetype, aggregateid = :'id' AS for_order, type,
	   payload - 'order' AS payload_without_order,
	   payload -> 'order' ->> 'status' AS order_status,
	   payload -> 'order' ->> 'version' AS order_version
FROM oms.outbox WHERE aggregateid = :'id' ORDER BY seq;
-- The canceled event carries the same document the API returned.
SELECT payload -> 'order' = :'canceled'::jsonb AS event_has_api_document
FROM oms.outbox WHERE aggregateid = :'id' AND type = 'order.canceled';
SELECT array_agg(column_name::text ORDER BY ordinal_position) AS outbox_columns
FROM information_schema.columns WHERE table_schema = 'oms' AND table_name = 'outbox';

-- One transaction: when the caller rolls back, neither the order, nor its
-- timeline entry, nor its event remains.
SELECT (SELECT count(*) FROM oms.orders) AS orders, (SELECT count(*) FROM oms.order_events) AS timeline,
	   (SELECT count(*) FROM oms.outbox) AS outbox \gset before_
BEGIN;
SELECT oms_create_order('tl-2', '[{"sku": "A", "quantity": 1, "unit_price": 1}]') ->> 'status' AS status;
SELECT (SELECT count(*) FROM oms.orders) - :before_orders AS orders_in_tx,
	   (SELECT count(*) FROM oms.outbox) - :before_outbox AS events_in_tx;
ROLLBACK;
SELECT (SELECT count(*) FROM oms.orders) - :before_orders AS orders,
	   (SELECT count(*) FROM oms.order_events) - :before_timeline AS timeline,
	   (SELECT count(*) FROM oms.outbox) - :before_outbox AS outbox;

-- A failing cancel inside the caller's transaction leaves no half-change:
-- status, timeline and outbox move together or not at all.
SELECT oms_create_order('tl-3', '[{"sku": "A", "quantity": 1, "unit_price": 1}]') ->> 'order_id' AS id3 \gset
BEGIN;
SELECT oms_cancel_order(:'id3') ->> 'status' AS status;
SAVEPOINT s;
SELECT t.err(format('SELECT oms_cancel_order(%L)', :'id3')) LIKE '55000%' AS refused;
ROLLBACK TO s;
COMMIT;
SELECT o.status, o.version, o.timeline_seq, o.event_seq,
	   (SELECT count(*) FROM oms.order_events e WHERE e.order_id = o.id) AS timeline,
	   (SELECT count(*) FROM oms.outbox x WHERE x.aggregateid = o.id) AS outbox
FROM oms.orders o WHERE o.id = :'id3';

-- Sequences are gap-free per order and match the counters on the order.
SELECT count(*) AS orders_with_gaps FROM oms.orders o
WHERE o.timeline_seq <> (SELECT count(*) FROM oms.order_events e WHERE e.order_id = o.id)
   OR o.timeline_seq <> coalesce((SELECT max(e.seq) FROM oms.order_events e WHERE e.order_id = o.id), 0)
   OR o.event_seq <> (SELECT count(*) FROM oms.outbox x WHERE x.aggregateid = o.id AND x.aggregatetype = 'order')
   OR o.event_seq <> coalesce((SELECT max(x.seq) FROM oms.outbox x WHERE x.aggregateid = o.id), 0);

-- The timeline is append-only, even for a superuser.
SELECT t.err(format('UPDATE oms.order_events SET event_type = %L WHERE order_id = %L', 'forged', :'id')) LIKE '55000%' AS refused;
-- A sequence number cannot be reused.
SELECT regexp_replace(t.err(format($$INSERT INTO oms.outbox (aggregatetype, aggregateid, type, payload, seq) VALUES ('order', %L, 'x', '{}', 1)$$, :'id')),
					  '[0-9a-f-]{36}', '<id>') AS err;
