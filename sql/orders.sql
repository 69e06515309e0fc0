-- orders: create, get and cancel through the API.
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql

-- Create: the returned document, with the volatile fields checked by shape.
SELECT oms_create_order('cust-42',
	'[{"sku": "SKU-1", "quantity": 2, "unit_price": 1999},
	  {"sku": "SKU-2", "quantity": 1, "unit_price": 500},
	  {"sku": "SKU-3", "quantity": 5, "unit_price": 10}]',
	'USD', NULL, '{"channel": "web"}') AS doc \gset
SELECT :'doc'::jsonb - '{order_id,created_at,updated_at}'::text[] AS document;
SELECT (:'doc'::jsonb ->> 'order_id')::uuid IS NOT NULL AS has_uuid,
	   (:'doc'::jsonb ->> 'created_at')::timestamptz = (:'doc'::jsonb ->> 'updated_at')::timestamptz AS fresh,
	   (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(:'doc'::jsonb) AS k) AS keys;
SELECT :'doc'::jsonb ->> 'order_id' AS id \gset

-- The rows behind it.
SELECT customer_id, status, currency, total, version, metadata, timeline_seq, event_seq
FROM oms.orders WHERE id = :'id';
SELECT line_no, sku, quantity, unit_price, line_total
FROM oms.order_items WHERE order_id = :'id' ORDER BY line_no;

-- Defaults: USD and empty metadata.
SELECT oms_create_order('cust-43', '[{"sku": "X", "quantity": 1, "unit_price": 1}]')
	- '{order_id,created_at,updated_at}'::text[] AS defaults;
-- Named arguments work as documented.
SELECT oms_create_order(customer_id => 'cust-44', currency => 'EUR',
	items => '[{"sku": "X", "quantity": 1, "unit_price": 1}]') ->> 'currency' AS named;

-- Get returns the same document as create did.
SELECT oms_get_order(:'id') = :'doc'::jsonb AS get_matches_create;
SELECT t.err($$SELECT oms_get_order('00000000-0000-0000-0000-000000000000')$$);
SELECT t.err($$SELECT oms_get_order(NULL)$$);

-- Cancel: pending -> canceled, version 2, reason recorded.
SELECT oms_cancel_order(:'id', 'customer changed mind') AS canceled \gset
SELECT :'canceled'::jsonb ->> 'status' AS status, :'canceled'::jsonb ->> 'version' AS version,
	   (:'canceled'::jsonb ->> 'updated_at')::timestamptz >= (:'canceled'::jsonb ->> 'created_at')::timestamptz AS updated;
SELECT oms_get_order(:'id') = :'canceled'::jsonb AS get_matches_cancel;
SELECT status, version, timeline_seq, event_seq FROM oms.orders WHERE id = :'id';

-- Cancelling again is an illegal transition: 55000, and nothing changes.
SELECT regexp_replace(t.err(format('SELECT oms_cancel_order(%L)', :'id')), '[0-9a-f-]{36}', '<id>') AS err;
SELECT status, version, timeline_seq, event_seq FROM oms.orders WHERE id = :'id';
-- The full message, on an order with a known id.
INSERT INTO oms.orders (id, customer_id, currency, total)
VALUES ('00000000-0000-0000-0000-0000000000b2', 'cust-46', 'USD', 0);
SELECT oms_cancel_order('00000000-0000-0000-0000-0000000000b2') ->> 'status' AS status;
SELECT oms_cancel_order('00000000-0000-0000-0000-0000000000b2');

-- A non-pending order cannot be canceled here either; the hint says why.
INSERT INTO oms.orders (id, customer_id, currency, total)
VALUES ('00000000-0000-0000-0000-0000000000b1', 'cust-45', 'USD', 0);
UPDATE oms.orders SET status = 'processing' WHERE id = '00000000-0000-0000-0000-0000000000b1';
UPDATE oms.orders SET status = 'confirmed' WHERE id = '00000000-0000-0000-0000-0000000000b1';
SELECT oms_cancel_order('00000000-0000-0000-0000-0000000000b1');

-- Unknown and NULL ids.
SELECT t.err($$SELECT oms_cancel_order('00000000-0000-0000-0000-000000000000')$$);
SELECT t.err($$SELECT oms_cancel_order(NULL)$$);
SELECT t.err(format('SELECT oms_cancel_order(%L, %L)', :'id', repeat('r', 1001)));

-- Unknown SKUs at the door (oms.unknown_skus).  The default, accept, takes
-- an order for a SKU no location stocks (a pre-order: it fails at
-- reservation unless stock arrives first).
SHOW oms.unknown_skus;
SELECT oms_set_stock('KNOWN-1', 5) ->> 'sku' AS sku;
SELECT oms_create_order('cust-47', '[{"sku": "NOWHERE-1", "quantity": 1, "unit_price": 100}]') ->> 'status' AS accepted;
SELECT count(*) AS orders_before FROM oms.orders \gset
-- refuse: OM005 naming the first unknown SKU in item order, nothing
-- written (no order, no idempotency key).  Any role may choose it for its
-- session or transaction.
SET oms.unknown_skus = refuse;
SELECT t.err($$SELECT oms_create_order('cust-48', '[{"sku": "KNOWN-1", "quantity": 1, "unit_price": 100},
	{"sku": "NOWHERE-2", "quantity": 1, "unit_price": 100}, {"sku": "NOWHERE-1", "quantity": 1, "unit_price": 100}]',
	'USD', 'unknown-sku-key')$$) AS refused;
SELECT count(*) - :orders_before AS orders_written FROM oms.orders;
SELECT count(*) AS keys_written FROM oms.idempotency_keys WHERE key = 'unknown-sku-key';
SELECT oms_create_order('cust-48', '[{"sku": "KNOWN-1", "quantity": 1, "unit_price": 100}]') ->> 'status' AS known;
SET ROLE oms_app;
SET oms.unknown_skus = accept;
SHOW oms.unknown_skus;
RESET ROLE;
SELECT t.err($$SET oms.unknown_skus = maybe$$) AS bad_value;
RESET oms.unknown_skus;
