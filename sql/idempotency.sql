-- idempotency: one key, one request, one effect.
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql

CREATE TEMP VIEW effects AS
	SELECT (SELECT count(*) FROM oms.orders) AS orders,
		   (SELECT count(*) FROM oms.order_items) AS items,
		   (SELECT count(*) FROM oms.order_events) AS timeline,
		   (SELECT count(*) FROM oms.outbox) AS outbox,
		   (SELECT count(*) FROM oms.idempotency_keys) AS keys;
SELECT * FROM effects \gset before_

-- First call with a key does the work and stores its response.
SELECT oms_create_order('idem-1', '[{"sku": "A", "quantity": 1, "unit_price": 100}]', 'USD', 'key-1') AS first \gset
SELECT function_name, response = :'first'::jsonb AS stored,
	   expires_at - created_at AS lifetime
FROM oms.idempotency_keys WHERE key = 'key-1';

-- The same call again replays the response: nothing new is written.
SELECT oms_create_order('idem-1', '[{"sku": "A", "quantity": 1, "unit_price": 100}]', 'USD', 'key-1') = :'first'::jsonb AS replayed;
-- Argument order inside JSON does not make a different request.
SELECT oms_create_order('idem-1', '[{"unit_price": 100, "quantity": 1, "sku": "A"}]', 'USD', 'key-1') = :'first'::jsonb AS replayed_reordered;
-- Nor does the spelling of a number.
SELECT oms_create_order('idem-1', '[{"sku": "A", "quantity": 1.0, "unit_price": 1e2}]', 'USD', 'key-1') = :'first'::jsonb AS replayed_respelled;
SELECT e.orders - :before_orders AS orders, e.items - :before_items AS items,
	   e.timeline - :before_timeline AS timeline, e.outbox - :before_outbox AS outbox,
	   e.keys - :before_keys AS keys
FROM effects e;

-- The same key with other arguments, or for another function: OM001, nothing written.
SELECT * FROM effects \gset before_
SELECT t.err($$SELECT oms_create_order('idem-1', '[{"sku": "A", "quantity": 2, "unit_price": 100}]', 'USD', 'key-1')$$);
SELECT t.err($$SELECT oms_create_order('idem-2', '[{"sku": "A", "quantity": 1, "unit_price": 100}]', 'USD', 'key-1')$$);
SELECT t.err($$SELECT oms_create_order('idem-1', '[{"sku": "A", "quantity": 1, "unit_price": 100}]', 'EUR', 'key-1')$$);
SELECT t.err($$SELECT oms_create_order('idem-1', '[{"sku": "A", "quantity": 1, "unit_price": 100}]', 'USD', 'key-1', '{"a": 1}')$$);
SELECT t.err(format('SELECT oms_cancel_order(%L, NULL, %L)', :'first'::jsonb ->> 'order_id', 'key-1'));
SELECT e.orders - :before_orders AS orders, e.timeline - :before_timeline AS timeline,
	   e.outbox - :before_outbox AS outbox, e.keys - :before_keys AS keys
FROM effects e;
SELECT status FROM oms.orders WHERE id = (:'first'::jsonb ->> 'order_id')::uuid;

-- Cancel with a key: the replay returns the stored document even though the
-- order is now canceled and a plain second cancel would be refused.
SELECT oms_cancel_order((:'first'::jsonb ->> 'order_id')::uuid, 'oops', 'key-2') AS cancel1 \gset
SELECT oms_cancel_order((:'first'::jsonb ->> 'order_id')::uuid, 'oops', 'key-2') = :'cancel1'::jsonb AS cancel_replayed;
SELECT t.err(format('SELECT oms_cancel_order(%L, %L, %L)', :'first'::jsonb ->> 'order_id', 'other reason', 'key-2'));
SELECT count(*) AS cancel_events FROM oms.order_events
WHERE order_id = (:'first'::jsonb ->> 'order_id')::uuid AND event_type = 'order.canceled';

-- Errors are not stored: a call refused for bad input leaves the key free,
-- and the caller may retry the same key with fixed input.
SELECT t.err($$SELECT oms_create_order('idem-3', '[{"sku": "A", "quantity": 0, "unit_price": 100}]', 'USD', 'key-3')$$);
SELECT count(*) AS key3_rows FROM oms.idempotency_keys WHERE key = 'key-3';
SELECT oms_create_order('idem-3', '[{"sku": "A", "quantity": 1, "unit_price": 100}]', 'USD', 'key-3') ->> 'status' AS retried;
-- The same holds for an error raised after the key was claimed.
SELECT oms_create_order('idem-4', '[{"sku": "A", "quantity": 1, "unit_price": 1}]') ->> 'order_id' AS id4 \gset
SELECT oms_cancel_order(:'id4') ->> 'status' AS status;
SELECT regexp_replace(t.err(format('SELECT oms_cancel_order(%L, NULL, %L)', :'id4', 'key-4')), '[0-9a-f-]{36}', '<id>') AS err;
SELECT count(*) AS key4_rows FROM oms.idempotency_keys WHERE key = 'key-4';

-- A key used twice in one transaction replays within the transaction.
BEGIN;
SELECT oms_create_order('idem-5', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', 'key-5') AS k5 \gset
SELECT oms_create_order('idem-5', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', 'key-5') = :'k5'::jsonb AS same_tx_replay;
COMMIT;

-- Key validation.
SELECT t.err($$SELECT oms_create_order('idem-6', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', '')$$);
SELECT t.err(format($$SELECT oms_create_order('idem-6', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', %L)$$, repeat('k', 256)));
SELECT oms_create_order('idem-6', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', repeat('k', 255)) ->> 'status' AS longest_key_ok;
-- Keys are case- and byte-exact.
SELECT oms_create_order('idem-7', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', 'KEY-1') ->> 'customer_id' AS distinct_key;

-- Expiry: the TTL comes from oms.idempotency_ttl.  An expired key no longer
-- replays even before it is purged, and the purge removes expired keys only.
SET oms.idempotency_ttl = '1h';
SELECT oms_create_order('idem-8', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', 'key-8') ->> 'order_id' AS id8 \gset
SELECT expires_at - created_at AS lifetime FROM oms.idempotency_keys WHERE key = 'key-8';
RESET oms.idempotency_ttl;
UPDATE oms.idempotency_keys SET created_at = created_at - interval '2 days', expires_at = expires_at - interval '2 days'
WHERE key IN ('key-8', 'key-3');
SELECT oms_create_order('idem-8', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', 'key-8') ->> 'order_id' <> :'id8' AS expired_key_is_new;
SELECT oms_purge_idempotency_keys() AS purged;
SELECT key FROM oms.idempotency_keys WHERE key IN ('key-1', 'key-2', 'key-3', 'key-8') ORDER BY key;
SELECT oms_purge_idempotency_keys() AS purged_again;
-- Only a superuser may change the TTL.
CREATE ROLE idem_user;
SET ROLE idem_user;
SET oms.idempotency_ttl = '1s';
RESET ROLE;
DROP ROLE idem_user;
