-- fulfillment: the line ledger, the payment and fulfillment status
-- dimensions, shipments and canceling what has not shipped.
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql

-- The ledger of an order, one line per order line.
CREATE FUNCTION t.ledger(p_order uuid) RETURNS TABLE (line_no integer, sku text, ordered integer, canceled integer,
	fulfilling integer, shipped integer, delivered integer, in_return integer, returned integer, refunded integer)
LANGUAGE sql AS $$
	SELECT i.line_no, i.sku, i.quantity, i.quantity_canceled, i.quantity_fulfilling, i.quantity_shipped,
		   i.quantity_delivered, i.quantity_returning, i.quantity_returned, i.quantity_refunded
	FROM oms.order_items i WHERE i.order_id = p_order ORDER BY i.line_no;
$$;
CREATE FUNCTION t.dims(p_order uuid) RETURNS text LANGUAGE sql AS $$
	SELECT o.status || ' / ' || o.payment_status || ' / ' || o.fulfillment_status || ' v' || o.version
	FROM oms.orders o WHERE o.id = p_order;
$$;
-- The saved state of everything a refused call must leave alone.
CREATE FUNCTION t.snapshot(p_order uuid) RETURNS text LANGUAGE sql AS $$
	SELECT md5(concat_ws('|',
		(SELECT string_agg(i::text, ',' ORDER BY i.line_no) FROM oms.order_items i WHERE i.order_id = p_order),
		(SELECT o::text FROM oms.orders o WHERE o.id = p_order),
		(SELECT string_agg(s::text, ',' ORDER BY s.id) FROM oms.shipments s WHERE s.order_id = p_order),
		(SELECT count(*) FROM oms.refunds r WHERE r.order_id = p_order),
		(SELECT string_agg(st::text, ',' ORDER BY st.sku) FROM oms.stock st),
		(SELECT string_agg(r::text, ',' ORDER BY r.sku) FROM oms.reservations r WHERE r.order_id = p_order)));
$$;

SELECT oms_set_stock('FF-A', 10) ->> 'available' AS a, oms_set_stock('FF-B', 10) ->> 'available' AS b;

-- A new order: three dimensions at their initial statuses, an empty ledger,
-- no saga, no shipment, no return.
SELECT oms_create_order('ff-1', '[{"sku": "FF-A", "quantity": 3, "unit_price": 1000},
								 {"sku": "FF-B", "quantity": 2, "unit_price": 500}]', 'USD', 'ff-create') AS doc \gset
SELECT :'doc'::jsonb ->> 'order_id' AS o \gset
SELECT :'doc'::jsonb - '{order_id,created_at,updated_at}'::text[] AS created;
-- oms_get_order says the same.
SELECT oms_get_order(:'o') = :'doc'::jsonb AS get_matches_create;

-- Nothing ships, cancels by line or returns before the order is confirmed.
SELECT regexp_replace(t.err(format('SELECT oms_create_shipment(%L)', :'o')), '[0-9a-f-]{36}', '<id>') AS err;
SELECT regexp_replace(t.err(format('SELECT oms_cancel_items(%L)', :'o')), '[0-9a-f-]{36}', '<id>') AS err;
SELECT regexp_replace(t.err(format('SELECT oms_request_return(%L, %L)', :'o', 'too early')), '[0-9a-f-]{36}', '<id>') AS err;

SELECT oms_pay_order(:'o', 'test_ok') ->> 'status' AS status;
SELECT oms_run_sagas() AS steps_run;
SELECT t.dims(:'o');
SELECT (oms_get_order(:'o') -> 'last_saga') - '{saga_id,finished_at}'::text[] AS last_saga;

--
-- Shipments.
--

-- Two units of line 1 and one of FF-B (by SKU) from the default location.
SELECT oms_create_shipment(:'o', '[{"line_no": 1, "quantity": 2}, {"sku": "FF-B", "quantity": 1}]',
						   carrier => 'DHL', idempotency_key => 'ff-ship-1') AS doc \gset
SELECT :'doc'::jsonb -> 'shipment' ->> 'shipment_id' AS s1 \gset
SELECT (:'doc'::jsonb -> 'shipment') - '{shipment_id,created_at}'::text[] AS shipment;
SELECT * FROM t.ledger(:'o');
SELECT t.dims(:'o');
-- The same key replays the same shipment; other arguments are refused.
SELECT oms_create_shipment(:'o', '[{"line_no": 1, "quantity": 2}, {"sku": "FF-B", "quantity": 1}]',
						   carrier => 'DHL', idempotency_key => 'ff-ship-1') -> 'shipment' ->> 'shipment_id' = :'s1' AS replayed;
SELECT t.err(format('SELECT oms_create_shipment(%L, %L, idempotency_key => %L)', :'o',
					'[{"line_no": 1, "quantity": 1}]', 'ff-ship-1')) AS err;
SELECT count(*) AS shipments FROM oms.shipments WHERE order_id = :'o';

-- Handed to the carrier: units move from fulfilling to shipped.
SELECT oms_ship(:'s1', tracking_number => 'TRK-1') -> 'shipment' ->> 'status' AS status;
SELECT * FROM t.ledger(:'o');
SELECT t.dims(:'o');
-- Shipping twice is an illegal move of the shipment machine.
SELECT regexp_replace(t.err(format('SELECT oms_ship(%L)', :'s1')), '[0-9a-f-]{36}', '<id>') AS err;

-- A second shipment of the rest (items NULL: every unshipped unit at the
-- one location holding them), then canceled before it ships: its units can
-- ship again.
SELECT oms_create_shipment(:'o') -> 'shipment' AS s2doc \gset
SELECT :'s2doc'::jsonb ->> 'shipment_id' AS s2, :'s2doc'::jsonb -> 'items' AS s2items \gset
SELECT * FROM t.ledger(:'o');
SELECT oms_cancel_shipment(:'s2', 'box damaged') -> 'shipment' ->> 'status' AS status;
SELECT * FROM t.ledger(:'o');
SELECT regexp_replace(t.err(format('SELECT oms_ship(%L)', :'s2')), '[0-9a-f-]{36}', '<id>') AS err;

-- Delivered: the first shipment's units.
SELECT oms_mark_delivered(:'s1') -> 'shipment' ->> 'status' AS status;
SELECT * FROM t.ledger(:'o');
SELECT t.dims(:'o');

--
-- Canceling what has not shipped: one unit of line 1 and all of line 2
-- that is left; the stock goes back and the refund saga pays it back.
--
SELECT on_hand FROM oms.stock WHERE sku IN ('FF-A', 'FF-B') ORDER BY sku;
SELECT oms_cancel_items(:'o', '[{"line_no": 1, "quantity": 1}, {"line_no": 2, "quantity": 1}]', 'out of season',
						'ff-cancel-1') AS doc \gset
SELECT :'doc'::jsonb -> 'canceled' AS canceled, :'doc'::jsonb -> 'refund' ->> 'amount' AS refund_amount;
SELECT on_hand FROM oms.stock WHERE sku IN ('FF-A', 'FF-B') ORDER BY sku;
SELECT * FROM t.ledger(:'o');
SELECT t.dims(:'o');
SELECT oms_run_sagas() AS steps_run;
SELECT * FROM t.ledger(:'o');
SELECT t.dims(:'o');
SELECT captured, refunded FROM oms.payments WHERE order_id = :'o';
-- The same key replays; nothing is left to cancel now.
SELECT (oms_cancel_items(:'o', '[{"line_no": 1, "quantity": 1}, {"line_no": 2, "quantity": 1}]', 'out of season',
						 'ff-cancel-1') -> 'refund' ->> 'amount') AS replayed_amount;
SELECT regexp_replace(t.err(format('SELECT oms_cancel_items(%L)', :'o')), '[0-9a-f-]{36}', '<id>') AS err;

-- The timeline and the outbox of the order.
SELECT t.events(:'o');
SELECT t.outbox(:'o');

--
-- Bad input: a clear error, nothing written.
--
SELECT t.new_order('ff-2', '[{"sku": "FF-A", "quantity": 2, "unit_price": 100}]', 'test_ok') AS o2 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT t.snapshot(:'o2') AS before \gset
SELECT t.err('SELECT oms_create_shipment(NULL)') AS null_order;
SELECT regexp_replace(t.err(format('SELECT oms_create_shipment(%L)', gen_random_uuid())), '[0-9a-f-]{36}', '<id>') AS unknown_order;
SELECT t.err(format('SELECT oms_create_shipment(%L, %L)', :'o2', '[]')) AS empty_items;
SELECT t.err(format('SELECT oms_create_shipment(%L, %L)', :'o2', '{"line_no": 1}')) AS not_array;
SELECT t.err(format('SELECT oms_create_shipment(%L, %L)', :'o2', '[1]')) AS not_object;
SELECT t.err(format('SELECT oms_create_shipment(%L, %L)', :'o2', '[{"quantity": 1}]')) AS no_line;
SELECT t.err(format('SELECT oms_create_shipment(%L, %L)', :'o2', '[{"line_no": 1, "sku": "FF-A", "quantity": 1}]')) AS both;
SELECT t.err(format('SELECT oms_create_shipment(%L, %L)', :'o2', '[{"line_no": 1, "quantity": 1, "x": 1}]')) AS extra_key;
SELECT t.err(format('SELECT oms_create_shipment(%L, %L)', :'o2', '[{"line_no": 1, "quantity": 0}]')) AS zero;
SELECT t.err(format('SELECT oms_create_shipment(%L, %L)', :'o2', '[{"line_no": 1, "quantity": 1.5}]')) AS fraction;
SELECT t.err(format('SELECT oms_create_shipment(%L, %L)', :'o2', '[{"line_no": 1, "quantity": "1"}]')) AS string_qty;
SELECT t.err(format('SELECT oms_create_shipment(%L, %L)', :'o2', '[{"line_no": -1, "quantity": 1}]')) AS negative_line;
SELECT regexp_replace(t.err(format('SELECT oms_create_shipment(%L, %L)', :'o2', '[{"line_no": 9, "quantity": 1}]')), '[0-9a-f-]{36}', '<id>') AS no_such_line;
SELECT regexp_replace(t.err(format('SELECT oms_create_shipment(%L, %L)', :'o2', '[{"sku": "NOPE", "quantity": 1}]')), '[0-9a-f-]{36}', '<id>') AS no_such_sku;
SELECT t.err(format('SELECT oms_create_shipment(%L, %L)', :'o2', '[{"line_no": 1, "quantity": 1}, {"sku": "FF-A", "quantity": 1}]')) AS twice;
SELECT t.err(format('SELECT oms_create_shipment(%L, %L)', :'o2', '[{"line_no": 1, "quantity": 3}]')) AS too_many;
SELECT t.err(format('SELECT oms_create_shipment(%L, location => %L)', :'o2', 'nowhere')) AS unknown_location;
SELECT t.err(format('SELECT oms_create_shipment(%L, location => %L)', :'o2', '')) AS empty_location;
SELECT t.err(format('SELECT oms_create_shipment(%L, carrier => %L)', :'o2', repeat('c', 101))) AS long_carrier;
SELECT t.err(format('SELECT oms_create_shipment(%L, tracking_number => %L)', :'o2', ' TRK')) AS bad_tracking;
SELECT t.err(format('SELECT oms_create_shipment(%L, idempotency_key => %L)', :'o2', '')) AS empty_key;
SELECT t.err('SELECT oms_ship(NULL)') AS ship_null;
SELECT regexp_replace(t.err(format('SELECT oms_ship(%L)', gen_random_uuid())), '[0-9a-f-]{36}', '<id>') AS ship_unknown;
SELECT regexp_replace(t.err(format('SELECT oms_mark_delivered(%L)', gen_random_uuid())), '[0-9a-f-]{36}', '<id>') AS deliver_unknown;
SELECT t.err(format('SELECT oms_cancel_shipment(%L, %L)', gen_random_uuid(), repeat('r', 1001))) AS long_reason;
SELECT t.err('SELECT oms_cancel_items(NULL)') AS cancel_null;
SELECT t.err(format('SELECT oms_cancel_items(%L, %L)', :'o2', '[{"line_no": 1, "quantity": 3}]')) AS cancel_too_many;
SELECT t.err(format('SELECT oms_cancel_items(%L, reason => %L)', :'o2', repeat('r', 1001))) AS cancel_long_reason;
SELECT t.snapshot(:'o2') = :'before' AS nothing_written;

-- A pending shipment's units cannot be canceled; delivered units cannot
-- ship again; a delivered shipment cannot be canceled.
SELECT oms_create_shipment(:'o2', '[{"line_no": 1, "quantity": 1}]') -> 'shipment' ->> 'shipment_id' AS s3 \gset
SELECT t.err(format('SELECT oms_cancel_items(%L, %L)', :'o2', '[{"line_no": 1, "quantity": 2}]')) AS cancel_in_shipment;
SELECT regexp_replace(t.err(format('SELECT oms_mark_delivered(%L)', :'s3')), '[0-9a-f-]{36}', '<id>') AS deliver_pending;
SELECT oms_ship(:'s3') ->> 'fulfillment_status' AS fulfillment;
SELECT oms_mark_delivered(:'s3') ->> 'fulfillment_status' AS fulfillment;
SELECT regexp_replace(t.err(format('SELECT oms_cancel_shipment(%L)', :'s3')), '[0-9a-f-]{36}', '<id>') AS cancel_delivered;

-- The rest canceled: the order is delivered in full (what was not canceled).
SELECT oms_cancel_items(:'o2') -> 'canceled' AS canceled;
SELECT t.dims(:'o2');
SELECT oms_run_sagas() AS steps_run;
SELECT t.dims(:'o2');

--
-- A full refund by amount: what has not shipped is canceled and restocked,
-- the units given back count as refunded.
--
SELECT t.new_order('ff-3', '[{"sku": "FF-B", "quantity": 4, "unit_price": 100}]', 'test_ok') AS o3 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT oms_create_shipment(:'o3', '[{"line_no": 1, "quantity": 1}]') -> 'shipment' ->> 'shipment_id' AS s4 \gset
SELECT oms_ship(:'s4') ->> 'fulfillment_status' AS fulfillment;
SELECT on_hand FROM oms.stock WHERE sku = 'FF-B';
SELECT oms_refund_order(:'o3') -> 'refund' ->> 'amount' AS amount;
SELECT oms_run_sagas() AS steps_run;
SELECT * FROM t.ledger(:'o3');
SELECT t.dims(:'o3');
SELECT on_hand FROM oms.stock WHERE sku = 'FF-B';

-- A pending shipment of a fully refunded order is canceled with the rest:
-- nothing ships once all the money is back.
SELECT t.new_order('ff-6', '[{"sku": "FF-B", "quantity": 2, "unit_price": 100}]', 'test_ok') AS o6 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT oms_create_shipment(:'o6', '[{"line_no": 1, "quantity": 1}]') -> 'shipment' ->> 'shipment_id' AS s6 \gset
SELECT oms_refund_order(:'o6') -> 'refund' ->> 'amount' AS amount;
SELECT oms_run_sagas() AS steps_run;
SELECT status, reason FROM oms.shipments WHERE id = :'s6';
SELECT * FROM t.ledger(:'o6');
SELECT t.dims(:'o6');
SELECT regexp_replace(t.err(format('SELECT oms_ship(%L)', :'s6')), '[0-9a-f-]{36}', '<id>') AS ship_refunded;

--
-- Orders that end before shipping: their lines are canceled.
--
SELECT oms_create_order('ff-4', '[{"sku": "FF-A", "quantity": 1, "unit_price": 100}]') ->> 'order_id' AS o4 \gset
SELECT oms_cancel_order(:'o4') ->> 'fulfillment_status' AS fulfillment;
SELECT * FROM t.ledger(:'o4');
SELECT t.dims(:'o4');
SELECT t.new_order('ff-5', '[{"sku": "FF-A", "quantity": 1, "unit_price": 100}]', 'test_decline') AS o5 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT t.dims(:'o5');
-- Why it failed, from the order document alone.
SELECT (oms_get_order(:'o5') -> 'last_saga') - '{saga_id,finished_at}'::text[] AS last_saga;

--
-- The ledger is enforced by the database, whoever writes.
--
SELECT regexp_replace(t.err(format('UPDATE oms.order_items SET quantity_shipped = 99 WHERE order_id = %L', :'o2')), '[0-9a-f-]{36}', '<id>') AS over_ship;
SELECT regexp_replace(t.err(format('UPDATE oms.order_items SET quantity_delivered = quantity_shipped + 1 WHERE order_id = %L', :'o2')), '[0-9a-f-]{36}', '<id>') AS over_deliver;
SELECT regexp_replace(t.err(format('UPDATE oms.order_items SET quantity_returned = quantity_delivered + 1 WHERE order_id = %L', :'o2')), '[0-9a-f-]{36}', '<id>') AS over_return;
SELECT regexp_replace(t.err(format('UPDATE oms.order_items SET quantity_refunded = quantity_canceled + quantity_returned + 1 WHERE order_id = %L', :'o2')), '[0-9a-f-]{36}', '<id>') AS over_refund;
SELECT regexp_replace(t.err(format('UPDATE oms.order_items SET quantity_canceled = -1 WHERE order_id = %L', :'o2')), '[0-9a-f-]{36}', '<id>') AS negative;
-- And the derived statuses only move as their machines allow.
SELECT regexp_replace(t.err(format('UPDATE oms.orders SET fulfillment_status = %L WHERE id = %L', 'unfulfilled', :'o2')), '[0-9a-f-]{36}', '<id>') AS back_to_unfulfilled;
SELECT regexp_replace(t.err(format('UPDATE oms.orders SET payment_status = %L WHERE id = %L', 'unpaid', :'o2')), '[0-9a-f-]{36}', '<id>') AS back_to_unpaid;
SELECT regexp_replace(t.err(format('UPDATE oms.shipments SET status = %L WHERE id = %L', 'pending', :'s3')), '[0-9a-f-]{36}', '<id>') AS shipment_back;
SELECT t.err($$INSERT INTO oms.orders (customer_id, currency, total, fulfillment_status) VALUES ('x', 'USD', 0, 'fulfilled')$$) AS insert_fulfilled;
