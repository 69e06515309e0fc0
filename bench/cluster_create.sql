-- bench/cluster_create.sql: pgbench script of the "cluster" part (router
-- overhead), run unchanged against the router database and directly
-- against its one shard.  One order of three lines with a fresh
-- idempotency key: through the router, PL/Proxy runs it on the owner of
-- the key's partition (the one shard serves all of them).
SELECT oms_create_order(
	'cust-' || :client_id,
	'[{"sku": "SKU-1", "quantity": 2, "unit_price": 1999}, {"sku": "SKU-2", "quantity": 1, "unit_price": 4999}, {"sku": "SKU-3", "quantity": 3, "unit_price": 250}]'::jsonb,
	'USD',
	pg_catalog.gen_random_uuid()::text);
