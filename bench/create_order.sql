-- bench/create_order.sql: pgbench script, one order through the oms API.
-- A fresh idempotency key per call, as a real client would send.
SELECT oms_create_order(
	'cust-' || :client_id,
	'[{"sku": "SKU-1", "quantity": 2, "unit_price": 1999}, {"sku": "SKU-2", "quantity": 1, "unit_price": 4999}, {"sku": "SKU-3", "quantity": 3, "unit_price": 250}]',
	'USD',
	pg_catalog.gen_random_uuid()::text);
