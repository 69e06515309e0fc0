-- bench/saga_create_pay.sql: pgbench script for the end-to-end saga run.
-- One order of two distinct random SKUs out of :nskus (pgbench -D nskus=N;
-- bench/run.sh stocks SKU-1 .. SKU-N), created and then paid with test_ok:
-- two calls, each its own transaction with its own idempotency key, as a
-- shop front end would make them.  The pay commit wakes the oms worker,
-- which reserves, charges and confirms the order; bench/run.sh measures
-- that from the timeline (order.processing -> order.confirmed).
\set sku1 random(1, :nskus)
\set sku2 1 + (:sku1 + random(0, :nskus - 2)) % :nskus
\set qty1 random(1, 3)
\set qty2 random(1, 3)
SELECT oms_create_order(
	'cust-' || :client_id,
	pg_catalog.format('[{"sku": "SKU-%s", "quantity": %s, "unit_price": 1999}, {"sku": "SKU-%s", "quantity": %s, "unit_price": 4999}]',
					  :sku1, :qty1, :sku2, :qty2)::jsonb,
	'USD',
	pg_catalog.gen_random_uuid()::text) ->> 'order_id' AS order_id
\gset
SELECT 1 FROM oms_pay_order(':order_id', 'test_ok', pg_catalog.gen_random_uuid()::text);
