-- shard: a database that is one shard of a cluster (src/sql/shard.sql,
-- src/sql/remote_stock.sql).  Its configuration and every bad input,
-- partitions in ids, creates in the idempotency key's partition, the
-- refusal (OM020) of calls about partitions it does not serve, and the
-- home shard's side of stock held for another shard's orders, called
-- directly (the calls through PL/Proxy between databases are in the
-- cluster suite).  The database is a single node again at the end.
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql

-- Errors with their ids masked (ids are random).
CREATE FUNCTION t.sh_err(sql text) RETURNS text LANGUAGE sql AS $$
	SELECT regexp_replace(t.err(sql), '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<id>', 'g');
$$;

-- A single node: serves everything, ids are random.
SELECT oms_shard_info();
SELECT oms.partition_of_text('SKU-1'), oms.partition_of_text('checkout-1') & 15 AS p16,
	   oms.partition_of_text(NULL) IS NULL AS null_is_null;
SELECT oms.partition_of_id('01a24fd7-f24e-7e2e-b331-c8d4a5a78ddb') AS bits_e2e,
	   oms.partition_of_id('01a24fd7-f24e-7000-b331-c8d4a5a78ddb') AS bits_000,
	   oms.partition_of_id('01a24fd7-f24e-7fff-b331-c8d4a5a78ddb') AS bits_fff;

-- Ids with partition bits: the low bits are the partition, the rest random,
-- the version and variant kept.
SELECT bool_and(oms.partition_of_id(oms._uuid_v7(5, 16)) & 15 = 5) AS low_bits,
	   count(DISTINCT oms.partition_of_id(oms._uuid_v7(5, 16)) >> 4) > 1 AS upper_bits_random,
	   bool_and(substr(oms._uuid_v7(5, 16)::text, 15, 1) = '7') AS version_7,
	   bool_and(substr(oms._uuid_v7(5, 16)::text, 20, 1) IN ('8', '9', 'a', 'b')) AS variant
FROM generate_series(1, 200);
SELECT oms.partition_of_id(oms._uuid_v7(4095, NULL)) AS all_12_bits,
	   oms._uuid_v7(NULL, NULL) IS NOT NULL AS random_id;
SELECT t.err('SELECT oms._uuid_v7(1, 3)');
SELECT t.err('SELECT oms._uuid_v7(1, 8192)');

-- Bad configurations: nothing is written.
SELECT t.err('SELECT oms_configure_shard(NULL, 16, ''{1}'')');
SELECT t.err('SELECT oms_configure_shard(1, NULL, ''{1}'')');
SELECT t.err('SELECT oms_configure_shard(1, 16, NULL)');
SELECT t.err('SELECT oms_configure_shard(-1, 16, ''{1}'')');
SELECT t.err('SELECT oms_configure_shard(4096, 16, ''{1}'')');
SELECT t.err('SELECT oms_configure_shard(1, 12, ''{1}'')');
SELECT t.err('SELECT oms_configure_shard(1, 0, ''{0}'')');
SELECT t.err('SELECT oms_configure_shard(1, 8192, ''{1}'')');
SELECT t.err('SELECT oms_configure_shard(1, 16, ''{}'')');
SELECT t.err('SELECT oms_configure_shard(1, 16, ''{1,16}'')');
SELECT t.err('SELECT oms_configure_shard(1, 16, ''{1,NULL}'')');
SELECT count(*) AS shard_rows FROM oms.shard;

-- Shard 1 of 16 partitions serves 1, 4, 7 (duplicates dropped, sorted).
SELECT oms_configure_shard(1, 16, '{7,1,4,4}') - 'configured_at' AS configured;
SELECT t.err('SELECT oms_configure_shard(1, 32, ''{1}'')');
SELECT oms_shard_info() - 'configured_at' AS info;

-- Keys, SKUs and their partitions, for the calls below.
SELECT k, oms.partition_of_text(k) & 15 AS partition
FROM unnest(ARRAY['shard-k1', 'shard-key-2', 'SH-A', 'SH-B', 'SH-E', 'SH-2']) AS k;

-- A create whose key is in a partition this shard does not serve: OM020,
-- nothing written (no order, no key).
SELECT t.err($$SELECT oms_create_order('shard-c1', '[{"sku": "SH-X", "quantity": 1, "unit_price": 100}]', 'USD', 'shard-k1')$$);
SELECT count(*) AS orders FROM oms.orders WHERE customer_id = 'shard-c1';
SELECT count(*) AS keys FROM oms.idempotency_keys WHERE key = 'shard-k1';

-- A key in one of its partitions: the order's id carries the partition,
-- and a retry finds the first result.
SELECT oms_set_stock('SH-E', 10) ->> 'on_hand' AS home_stock;
SELECT oms_create_order('shard-c1', '[{"sku": "SH-E", "quantity": 1, "unit_price": 100}]', 'USD', 'shard-key-2')
	AS first \gset
SELECT oms.partition_of_id((:'first'::jsonb ->> 'order_id')::uuid) & 15 AS order_partition,
	   oms_create_order('shard-c1', '[{"sku": "SH-E", "quantity": 1, "unit_price": 100}]', 'USD', 'shard-key-2')
		   = :'first'::jsonb AS replay_same;
-- Without a key: one of the shard's partitions.
SELECT bool_and(oms.partition_of_id((oms_create_order('shard-c2', '[{"sku": "SH-X", "quantity": 1, "unit_price": 100}]')
									 ->> 'order_id')::uuid) & 15 IN (1, 4, 7)) AS own_partitions
FROM generate_series(1, 20);

-- Everything an order hands out carries its partition.
SELECT (:'first'::jsonb ->> 'order_id')::uuid AS o \gset
SELECT oms_pay_order(:'o', 'test_ok') ->> 'status' AS paid;
SELECT oms_run_sagas() > 0 AS ran;
SELECT oms_create_shipment(:'o') IS NOT NULL AS shipment_created;
SELECT id AS s FROM oms.shipments WHERE order_id = :'o' \gset
SELECT (SELECT bool_and(oms.partition_of_id(id) = oms.partition_of_id(:'o')) FROM oms.sagas WHERE order_id = :'o') AS sagas,
	   (SELECT bool_and(oms.partition_of_id(id) = oms.partition_of_id(:'o')) FROM oms.payments WHERE order_id = :'o') AS payments,
	   oms.partition_of_id(:'s') = oms.partition_of_id(:'o') AS shipment;

-- Calls about ids of partitions it does not serve: OM020, before anything
-- else (an id that does not exist is refused the same way).
SELECT oms._uuid_v7(3, 16) AS foreign_id \gset
SELECT t.sh_err(format('SELECT oms_get_order(%L)', :'foreign_id'));
SELECT t.sh_err(format('SELECT oms_cancel_order(%L)', :'foreign_id'));
SELECT t.sh_err(format('SELECT * FROM oms_order_timeline(%L)', :'foreign_id'));
SELECT t.sh_err(format('SELECT oms_pay_order(%L, ''test_ok'')', :'foreign_id'));
SELECT t.sh_err(format('SELECT oms_refund_order(%L)', :'foreign_id'));
SELECT t.sh_err(format('SELECT oms_create_shipment(%L)', :'foreign_id'));
SELECT t.sh_err(format('SELECT oms_cancel_items(%L)', :'foreign_id'));
SELECT t.sh_err(format('SELECT oms_request_return(%L, ''damaged'')', :'foreign_id'));
SELECT t.sh_err(format('SELECT oms_ship(%L)', :'foreign_id'));
SELECT t.sh_err(format('SELECT oms_mark_delivered(%L)', :'foreign_id'));
SELECT t.sh_err(format('SELECT oms_cancel_shipment(%L)', :'foreign_id'));
SELECT t.sh_err(format('SELECT oms_receive_return(%L)', :'foreign_id'));
SELECT t.sh_err(format('SELECT oms_reject_return(%L)', :'foreign_id'));
-- An id of its own that does not exist: not found, as on a single node.
SELECT t.sh_err(format('SELECT oms_get_order(%L)', oms._uuid_v7(4, 16)));

-- Stock: only for SKUs homed here (SH-A is in partition 7, SH-B in 6).
SELECT t.err('SELECT oms_set_stock(''SH-B'', 5)');
SELECT t.err('SELECT oms_adjust_stock(''SH-B'', 5, ''default'')');
SELECT oms_set_stock('SH-A', 5) ->> 'on_hand' AS home_stock;
-- oms.unknown_skus = refuse checks only the SKUs homed here (SH-2 is, in
-- partition 4, with no stock record).
SET oms.unknown_skus = refuse;
SELECT t.err($$SELECT oms_create_order('shard-c3', '[{"sku": "SH-B", "quantity": 1, "unit_price": 100}]')$$) AS remote_sku;
SELECT t.err($$SELECT oms_create_order('shard-c3', '[{"sku": "SH-2", "quantity": 1, "unit_price": 100}]')$$) AS home_sku;
RESET oms.unknown_skus;

-- A customer's orders, newest first, and bad input.
SELECT count(*) AS orders, bool_and(o ? 'order_id' AND o ? 'fulfillment_status') AS summaries
FROM oms_customer_orders('shard-c2') AS o;
SELECT count(*) AS at_most_3 FROM oms_customer_orders('shard-c2', 3);
SELECT (array_agg(o ->> 'created_at'))[1] >= (array_agg(o ->> 'created_at'))[20] AS newest_first
FROM oms_customer_orders('shard-c2') AS o;
SELECT t.err('SELECT oms_customer_orders(NULL)');
SELECT t.err('SELECT oms_customer_orders(''shard-c2'', 0)');
SELECT t.err('SELECT oms_customer_orders(''shard-c2'', 1001)');
SELECT t.err('SELECT oms_customer_orders(''shard-c2'', NULL)');

-- The home shard's side, for an order of another shard (no row in
-- oms.orders here): hold, again (same allocation), consume, release.
SELECT oms._uuid_v7(3, 16) AS remote_order \gset
SELECT t.sh_err(format('SELECT oms._remote_hold(3, %L, ''{SH-A}'', ''{2}'', now())', :'remote_order')) AS not_served;
SELECT t.sh_err(format('SELECT oms._remote_hold(7, %L, ''{SH-B}'', ''{2}'', now())', :'remote_order')) AS not_homed;
SELECT oms._remote_hold(7, :'remote_order', '{SH-A}', '{2}', now()) AS held;
SELECT oms._remote_hold(7, :'remote_order', '{SH-A}', '{2}', now()) AS held_again;
SELECT on_hand, reserved FROM oms.stock WHERE sku = 'SH-A';
SELECT t.sh_err(format('SELECT oms._remote_hold(7, %L, ''{SH-A}'', ''{9}'', now())', oms._uuid_v7(3, 16))) AS short;
SELECT oms._remote_consume(7, :'remote_order', '{SH-A}', '{2}') ->> 0 AS consumed;
SELECT oms._remote_consume(7, :'remote_order', '{SH-A}', '{2}') ->> 0 AS consumed_again;
SELECT oms._remote_hold(7, :'remote_order', '{SH-A}', '{2}', now()) ->> 0 AS hold_after_consume;
SELECT on_hand, reserved FROM oms.stock WHERE sku = 'SH-A';
SELECT oms._remote_ship_from(7, :'remote_order', 'SH-A', 'default', 1) ->> 0 AS shipped_one;
SELECT oms._remote_release_allocation(7, :'remote_order', 'SH-A', 1) AS released_unshipped;
SELECT oms._remote_restock(7, 'SH-A', 'default', 1) ->> 'on_hand' AS restocked;
-- Held, then released (compensation), twice.
SELECT oms._uuid_v7(3, 16) AS order2 \gset
SELECT jsonb_array_length(oms._remote_hold(7, :'order2', '{SH-A}', '{3}', now())) AS held_rows;
SELECT oms._remote_release(7, :'order2') AS released, oms._remote_release(7, :'order2') AS released_again;
SELECT on_hand, reserved FROM oms.stock WHERE sku = 'SH-A';
-- Consuming units that are no longer held: OM011, nothing changes.
SELECT t.sh_err(format('SELECT oms._remote_consume(7, %L, ''{SH-A}'', ''{3}'')', :'order2')) AS expired;

-- A single node again.
DELETE FROM oms.shard;
SELECT oms_shard_info();
SELECT t.sh_err('SELECT oms._remote_release(7, oms._uuid_v7(3, 16))') AS not_a_shard;
-- Leave no foreign allocation behind for the tests after this one.
DELETE FROM oms.reservations WHERE order_id IN (:'remote_order', :'order2');
