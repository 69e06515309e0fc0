-- input_rules: one rule per kind of input, applied by every function that
-- takes one (docs/api.md, "Identifiers" and "Free-form JSON"), and
-- nothing written when an argument is refused.
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql
SELECT count(*) AS orders_before FROM oms.orders \gset
SELECT count(*) AS stock_before FROM oms.stock \gset

-- Identifiers: Unicode white space is white space, wherever it comes from.
SELECT label, t.err(format('SELECT oms_create_order(%L, ''[{"sku": "IR-A", "quantity": 1, "unit_price": 1}]'')', v))
FROM (VALUES ('U+00A0 only', U&'\00A0'), ('U+3000 only', U&'\3000'), ('U+2003 only', U&'\2003'),
			 ('trailing U+00A0', U&'cust\00A0'), ('leading U+FEFF', U&'\FEFFcust'), ('trailing U+200B', U&'cust\200B'),
			 ('U+0085 inside', U&'cu\0085st'), ('U+007F inside', U&'cu\007Fst'), ('newline inside', E'cu\nst'))
	 AS c(label, v);
SELECT label, t.err(format('SELECT oms_create_order(''c'', %L)', v))
FROM (VALUES ('sku trailing U+00A0', U&'[{"sku": "IR-A\00A0", "quantity": 1, "unit_price": 1}]'),
			 ('sku trailing U+3000', U&'[{"sku": "IR-A\3000", "quantity": 1, "unit_price": 1}]'),
			 ('sku leading U+2028', U&'[{"sku": "\2028IR-A", "quantity": 1, "unit_price": 1}]'),
			 ('sku control inside', '[{"sku": "IR\u0001A", "quantity": 1, "unit_price": 1}]'))
	 AS c(label, v);
-- The stock functions apply the same rule to their SKU: no stock can exist
-- for a SKU that no order can name.
SELECT label, t.err(format('SELECT oms_set_stock(%L, 5)', v)) AS set_stock, t.err(format('SELECT oms_adjust_stock(%L, 5)', v)) AS adjust_stock
FROM (VALUES ('control char', E'A\x01'), ('leading space', ' A'), ('trailing space', 'A '),
			 ('trailing U+00A0', U&'A\00A0'), ('U+3000 only', U&'\3000'), ('101 chars', repeat('x', 101)))
	 AS c(label, v);
-- Idempotency keys and correlation ids too.
SELECT t.err(format('SELECT oms_create_order(''c'', ''[{"sku": "IR-A", "quantity": 1, "unit_price": 1}]'', ''USD'', %L)', U&'key\00A0')) AS key_trailing_nbsp;
SELECT t.err(format('SELECT oms_payment_result(%L, ''approved'')', E'corr\x02')) AS correlation_control;
-- White space inside an identifier is fine; the same value is accepted by
-- every function that takes it.
SELECT oms_set_stock('IR SKU 1', 10) ->> 'available' AS available;
SELECT oms_adjust_stock('IR SKU 1', 5) ->> 'available' AS available;
SELECT oms_create_order('ACME Corp', '[{"sku": "IR SKU 1", "quantity": 1, "unit_price": 100}]', 'USD', 'IR key 1') ->> 'status' AS status;
SELECT (SELECT count(*) FROM oms.orders) - :orders_before AS orders_added, (SELECT count(*) FROM oms.stock) - :stock_before AS skus_added;

-- Duplicate fields in an item: refused when items arrive as text (a
-- literal, an untyped driver parameter), which is where they can still be
-- seen; a jsonb value has merged them already (the last one wins).
SELECT t.err('SELECT oms_create_order(''c'', ''[{"sku": "IR-A", "sku": "IR-B", "quantity": 1, "unit_price": 1}]'')') AS duplicate_sku;
SELECT t.err('SELECT oms_create_order(''c'', ''[{"sku": "IR-A", "quantity": 1, "unit_price": 1}, {"sku": "IR-B", "quantity": 1, "quantity": 2, "unit_price": 1}]'')') AS duplicate_quantity;
SELECT t.err('SELECT oms_create_order(''c'', ''[{"sku": "IR-A", "quantity": 1, "unit_price": 1}'')') AS broken_json;
SELECT oms_create_order('c', '[{"sku": "IR-A", "sku": "IR SKU 1", "quantity": 1, "unit_price": 1}]'::jsonb) -> 'items' -> 0 ->> 'sku' AS jsonb_keeps_last;
-- Both forms are one request for idempotency.
SELECT oms_create_order('c', '[{"sku": "IR-A", "quantity": 2, "unit_price": 7}]', 'USD', 'IR key 2') ->> 'order_id'
	 = oms_create_order('c', '[{"unit_price": 7, "quantity": 2.0, "sku": "IR-A"}]'::jsonb, 'USD', 'IR key 2') ->> 'order_id' AS same_order;
SELECT count(*) AS orders_with_key_2 FROM oms.order_events WHERE data ->> 'idempotency_key' = 'IR key 2';

-- Metadata: at most oms.max_metadata_bytes (16384) as JSON text and 32
-- levels deep; it travels in every event of its order.
SELECT count(*) AS orders_before FROM oms.orders \gset
SELECT t.err(format('SELECT oms_create_order(''c'', ''[{"sku": "IR-A", "quantity": 1, "unit_price": 1}]'', ''USD'', NULL, %L)',
					jsonb_build_object('blob', repeat('x', 5 * 1024 * 1024))));
SELECT t.err(format('SELECT oms_create_order(''c'', ''[{"sku": "IR-A", "quantity": 1, "unit_price": 1}]'', ''USD'', NULL, %L)',
					repeat('{"a": ', 5000) || '1' || repeat('}', 5000)));
SELECT t.err(format('SELECT oms_create_order(''c'', ''[{"sku": "IR-A", "quantity": 1, "unit_price": 1}]'', ''USD'', NULL, %L)',
					repeat('{"a": ', 33) || '1' || repeat('}', 33))) AS depth_33;
SELECT oms_create_order('c', '[{"sku": "IR-A", "quantity": 1, "unit_price": 1}]', 'USD', NULL,
						(repeat('{"a": ', 32) || '1' || repeat('}', 32))::jsonb) ->> 'status' AS depth_32;
-- Exactly at the limit: {"b": "xxx..."} is 16384 bytes.
SELECT length(jsonb_build_object('b', repeat('x', 16384 - 9))::text) AS bytes,
	   oms_create_order('c', '[{"sku": "IR-A", "quantity": 1, "unit_price": 1}]', 'USD', NULL,
						jsonb_build_object('b', repeat('x', 16384 - 9))) ->> 'status' AS at_limit;
SELECT t.err(format('SELECT oms_create_order(''c'', ''[{"sku": "IR-A", "quantity": 1, "unit_price": 1}]'', ''USD'', NULL, %L)',
					jsonb_build_object('b', repeat('x', 16384 - 8)))) AS one_byte_over;
SET oms.max_metadata_bytes = 32768;
SELECT oms_create_order('c', '[{"sku": "IR-A", "quantity": 1, "unit_price": 1}]', 'USD', NULL,
						jsonb_build_object('b', repeat('x', 20000))) ->> 'status' AS raised_limit;
RESET oms.max_metadata_bytes;
SELECT (SELECT count(*) FROM oms.orders) - :orders_before AS orders_added;

-- With the default limits every valid order fits in a Kafka message with
-- room for its events (src/input.c skips measuring it then): the widest
-- order, 1,000 lines of 100 four-byte characters, full metadata and the
-- longest customer id, stays below oms.kafka_max_message_bytes less 16384.
SELECT octet_length(oms_create_order(repeat(U&'\+01F600', 255),
		(SELECT jsonb_agg(jsonb_build_object('sku', repeat(U&'\+01F600', 96) || lpad(i::text, 4, '0'),
											 'quantity', 1000000, 'unit_price', 922337203))
		 FROM generate_series(1, 1000) AS i),
		'USD', NULL, jsonb_build_object('b', repeat('x', 16384 - 9)))::text)
	   < 1000000 - 16384 AS widest_order_fits;
-- An order whose events could not be published is refused at creation:
-- 8,000 lines with 100-character SKUs make a document of about 1.1 MB.
SET oms.max_order_items = 10000;
SELECT t.err(format('SELECT oms_create_order(''c'', %L::jsonb)',
					(SELECT jsonb_agg(jsonb_build_object('sku', lpad(i::text, 100, 'S'), 'quantity', 1, 'unit_price', 1))
					 FROM generate_series(1, 8000) AS i))) AS too_large_to_publish;
RESET oms.max_order_items;
SELECT (SELECT count(*) FROM oms.orders) - :orders_before AS orders_added;

-- Payment result details: an object of at most 4096 bytes.
SELECT t.err(format('SELECT oms_payment_result(''x'', ''approved'', %L)', jsonb_build_object('message', repeat('m', 5000)))) AS details_too_large;

-- Replies consumed from Kafka that cannot be applied keep an audit trail,
-- bounded by oms.max_rejected_replies: past it they are counted (by the
-- worker, in shared memory), not stored.
SELECT count(*) AS letters_before FROM oms.dead_letters WHERE kind = 'reply' AND status = 'open' \gset
SELECT set_config('oms.max_rejected_replies', (:letters_before + 2)::text, false) IS NOT NULL AS two_more_allowed;
SELECT oms._apply_payment_reply('ir-msg-' || i, format('{"correlation_id": "ir-unknown-%s", "outcome": "approved"}', i)) AS result
FROM generate_series(1, 3) AS i;
SELECT count(*) - :letters_before AS reply_letters_added,
	   (SELECT count(*) FROM oms.inbox WHERE message_id LIKE 'ir-msg-%') AS inbox_rows
FROM oms.dead_letters WHERE kind = 'reply' AND status = 'open';
RESET oms.max_rejected_replies;
