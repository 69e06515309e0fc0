-- bad_input: every argument of every function is validated; each mistake
-- gets its documented SQLSTATE and nothing is written.
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

CREATE TEMP TABLE cases (n serial, label text, call text);
INSERT INTO cases (label, call) VALUES
	-- customer_id
	('customer_id null', $$SELECT oms_create_order(NULL, '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('customer_id empty', $$SELECT oms_create_order('', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('customer_id tab', $$SELECT oms_create_order(E'\t', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('customer_id blank', $$SELECT oms_create_order('   ', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('customer_id 256 chars', format($$SELECT oms_create_order(%L, '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', 'bad-key')$$, repeat('c', 256))),
	-- items document
	('items null', $$SELECT oms_create_order('c', NULL, 'USD', 'bad-key')$$),
	('items object', $$SELECT oms_create_order('c', '{"sku": "A"}', 'USD', 'bad-key')$$),
	('items scalar', $$SELECT oms_create_order('c', '42', 'USD', 'bad-key')$$),
	('items string', $$SELECT oms_create_order('c', '"A"', 'USD', 'bad-key')$$),
	('items json null', $$SELECT oms_create_order('c', 'null', 'USD', 'bad-key')$$),
	('items empty', $$SELECT oms_create_order('c', '[]', 'USD', 'bad-key')$$),
	('item not an object', $$SELECT oms_create_order('c', '[["A", 1, 1]]', 'USD', 'bad-key')$$),
	('item null', $$SELECT oms_create_order('c', '[null]', 'USD', 'bad-key')$$),
	('second item bad', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1}, {"sku": "B", "quantity": -1, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('unknown field', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1, "price": 1}]', 'USD', 'bad-key')$$),
	('caller line_total', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1, "line_total": 1}]', 'USD', 'bad-key')$$),
	('missing sku', $$SELECT oms_create_order('c', '[{"quantity": 1, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('missing quantity', $$SELECT oms_create_order('c', '[{"sku": "A", "unit_price": 1}]', 'USD', 'bad-key')$$),
	('missing unit_price', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1}]', 'USD', 'bad-key')$$),
	('sku number', $$SELECT oms_create_order('c', '[{"sku": 7, "quantity": 1, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('sku null', $$SELECT oms_create_order('c', '[{"sku": null, "quantity": 1, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('sku empty', $$SELECT oms_create_order('c', '[{"sku": "", "quantity": 1, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('sku 101 chars', format($$SELECT oms_create_order('c', '[{"sku": "%s", "quantity": 1, "unit_price": 1}]', 'USD', 'bad-key')$$, repeat('s', 101))),
	('sku padded', $$SELECT oms_create_order('c', '[{"sku": "A ", "quantity": 1, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('sku control char', $$SELECT oms_create_order('c', '[{"sku": "A\tB", "quantity": 1, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('duplicate sku', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1}, {"sku": "A", "quantity": 2, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('quantity string', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": "1", "unit_price": 1}]', 'USD', 'bad-key')$$),
	('quantity boolean', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": true, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('quantity null', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": null, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('quantity fractional', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1.5, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('quantity zero', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 0, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('quantity negative', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": -3, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('quantity absurd', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1000001, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('quantity exponent', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1e40, "unit_price": 1}]', 'USD', 'bad-key')$$),
	('price negative', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": -1}]', 'USD', 'bad-key')$$),
	('price fractional', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 19.99}]', 'USD', 'bad-key')$$),
	('price string', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": "1999"}]', 'USD', 'bad-key')$$),
	('price beyond bigint', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 92233720368547758070}]', 'USD', 'bad-key')$$),
	('line total overflow', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 3, "unit_price": 3074457345618258603}]', 'USD', 'bad-key')$$),
	('order total overflow', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 9223372036854775000}, {"sku": "B", "quantity": 1, "unit_price": 808}]', 'USD', 'bad-key')$$),
	-- currency
	('currency null', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', NULL, 'bad-key')$$),
	('currency lowercase', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'usd', 'bad-key')$$),
	('currency garbage', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'US$', 'bad-key')$$),
	('currency too long', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USDD', 'bad-key')$$),
	('currency unknown', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'ABC', 'bad-key')$$),
	('currency empty', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', '', 'bad-key')$$),
	-- idempotency key
	('key empty', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', '')$$),
	('key 256 chars', format($$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', %L)$$, repeat('k', 256))),
	-- metadata
	('metadata null', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', 'bad-key', NULL)$$),
	('metadata array', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', 'bad-key', '[1]')$$),
	('metadata string', $$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', 'bad-key', '"x"')$$),
	-- other functions
	('get null', $$SELECT oms_get_order(NULL)$$),
	('get malformed uuid', $$SELECT oms_get_order('not-a-uuid')$$),
	('cancel null', $$SELECT oms_cancel_order(NULL, 'r', 'bad-key')$$),
	('cancel unknown', $$SELECT oms_cancel_order('00000000-0000-0000-0000-000000000000', 'r', 'bad-key')$$),
	('cancel reason too long', format($$SELECT oms_cancel_order('00000000-0000-0000-0000-000000000000', %L, 'bad-key')$$, repeat('r', 1001))),
	('cancel key empty', $$SELECT oms_cancel_order('00000000-0000-0000-0000-000000000000', 'r', '')$$),
	('timeline null', $$SELECT * FROM oms_order_timeline(NULL)$$),
	('timeline unknown', $$SELECT * FROM oms_order_timeline('00000000-0000-0000-0000-000000000000')$$),
	('format unknown currency', $$SELECT oms_format_money(1, 'ABC')$$),
	('format null currency', $$SELECT oms_format_money(1, NULL)$$);

SELECT n, label, t.err(call) AS error FROM cases ORDER BY n;

-- Not one row was written by any of them.
SELECT e.orders - :before_orders AS orders, e.items - :before_items AS items,
	   e.timeline - :before_timeline AS timeline, e.outbox - :before_outbox AS outbox,
	   e.keys - :before_keys AS keys
FROM effects e;

-- The details and hints people see, for a few of them.
\set VERBOSITY default
SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1.5, "unit_price": 1}]');
SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1, "price": 1}]');
SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1}, {"sku": "A", "quantity": 2, "unit_price": 1}]');
SELECT oms_create_order('c', '[{"sku": "A", "quantity": 3, "unit_price": 3074457345618258603}]');
SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'usd');
SELECT oms_create_order(repeat('c', 256), '[{"sku": "A", "quantity": 1, "unit_price": 1}]');

-- Limits follow the settings.
SET oms.max_order_items = 2;
SELECT oms_create_order('c', '[{"sku": "A", "quantity": 1, "unit_price": 1}, {"sku": "B", "quantity": 1, "unit_price": 1}, {"sku": "C", "quantity": 1, "unit_price": 1}]');
RESET oms.max_order_items;
SET oms.max_item_quantity = 10;
SELECT t.err($$SELECT oms_create_order('c', '[{"sku": "A", "quantity": 11, "unit_price": 1}]')$$);
RESET oms.max_item_quantity;
SELECT e.orders - :before_orders AS orders FROM effects e;
