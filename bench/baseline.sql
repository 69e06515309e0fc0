-- bench/baseline.sql: pgbench script, the raw-SQL reference for
-- create_order.sql.  The same rows in the same tables (so the same
-- triggers and indexes) written by hand in ONE statement: order, three
-- items, one timeline entry, one outbox event.  No validation and no
-- idempotency key: this is the floor the API is measured against.
WITH lines (line_no, sku, quantity, unit_price) AS (
	VALUES (1, 'SKU-1', 2, 1999::bigint),
	       (2, 'SKU-2', 1, 4999::bigint),
	       (3, 'SKU-3', 3, 250::bigint)
), o AS (
	INSERT INTO oms.orders (customer_id, status, currency, total, timeline_seq, event_seq)
	SELECT 'cust-' || :client_id, 'pending', 'USD', sum(quantity * unit_price), 1, 1
	FROM lines
	RETURNING id, customer_id, status, currency, total, version, created_at
), i AS (
	INSERT INTO oms.order_items (order_id, line_no, sku, quantity, unit_price, line_total)
	SELECT o.id, l.line_no, l.sku, l.quantity, l.unit_price, l.quantity * l.unit_price
	FROM o, lines l
), e AS (
	INSERT INTO oms.order_events (order_id, seq, event_type, from_status, to_status, data)
	SELECT o.id, 1, 'order.created', NULL, 'pending',
	       jsonb_build_object('total', o.total, 'currency', o.currency)
	FROM o
)
INSERT INTO oms.outbox (aggregatetype, aggregateid, type, seq, payload)
SELECT 'order', o.id, 'order.created', 1,
       jsonb_build_object('order_id', o.id, 'customer_id', o.customer_id,
                          'status', o.status, 'currency', o.currency,
                          'total', o.total, 'version', o.version,
                          'created_at', o.created_at)
FROM o;
