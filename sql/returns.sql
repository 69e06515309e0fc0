-- returns: returns (RMA) of delivered units: requested, received with or
-- without restock, refunded through the refund saga, or rejected.
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql

CREATE FUNCTION t.return_ledger(p_order uuid) RETURNS text LANGUAGE sql AS $$
	SELECT string_agg(format('%s: ordered %s canceled %s fulfilling %s shipped %s delivered %s in_return %s returned %s refunded %s',
							 i.sku, i.quantity, i.quantity_canceled, i.quantity_fulfilling, i.quantity_shipped,
							 i.quantity_delivered, i.quantity_returning, i.quantity_returned, i.quantity_refunded),
					  E'\n' ORDER BY i.line_no)
	FROM oms.order_items i WHERE i.order_id = p_order;
$$;
CREATE FUNCTION t.return_dims(p_order uuid) RETURNS text LANGUAGE sql AS $$
	SELECT o.status || ' / ' || o.payment_status || ' / ' || o.fulfillment_status
	FROM oms.orders o WHERE o.id = p_order;
$$;
CREATE FUNCTION t.return_snapshot(p_order uuid) RETURNS text LANGUAGE sql AS $$
	SELECT md5(concat_ws('|',
		(SELECT string_agg(i::text, ',' ORDER BY i.line_no) FROM oms.order_items i WHERE i.order_id = p_order),
		(SELECT o::text FROM oms.orders o WHERE o.id = p_order),
		(SELECT string_agg(r::text, ',' ORDER BY r.id) FROM oms.returns r WHERE r.order_id = p_order),
		(SELECT count(*) FROM oms.refunds r WHERE r.order_id = p_order),
		(SELECT string_agg(st::text, ',' ORDER BY st.sku) FROM oms.stock st)));
$$;

SELECT oms_set_stock('RT-A', 10) ->> 'available' AS a, oms_set_stock('RT-B', 10) ->> 'available' AS b;
SELECT t.new_order('rt-1', '[{"sku": "RT-A", "quantity": 3, "unit_price": 1000},
							  {"sku": "RT-B", "quantity": 2, "unit_price": 250}]', 'test_ok') AS o \gset
SELECT oms_run_sagas() AS steps_run;
SELECT oms_create_shipment(:'o') -> 'shipment' ->> 'shipment_id' AS s \gset
SELECT oms_ship(:'s') ->> 'fulfillment_status' AS fulfillment;
-- Only delivered units come back.
SELECT regexp_replace(t.err(format('SELECT oms_request_return(%L, %L)', :'o', 'too big')), '[0-9a-f-]{36}', '<id>') AS not_delivered;
SELECT oms_mark_delivered(:'s') ->> 'fulfillment_status' AS fulfillment;

-- A return of two units of RT-A, with a reason and an idempotency key.
SELECT oms_request_return(:'o', 'too big', '[{"sku": "RT-A", "quantity": 2}]', 'rt-req-1') AS doc \gset
SELECT :'doc'::jsonb -> 'return' ->> 'return_id' AS r1 \gset
SELECT (:'doc'::jsonb -> 'return') - '{return_id,created_at}'::text[] AS return;
SELECT t.return_ledger(:'o');
SELECT t.return_dims(:'o');
SELECT oms_request_return(:'o', 'too big', '[{"sku": "RT-A", "quantity": 2}]', 'rt-req-1') -> 'return' ->> 'return_id' = :'r1' AS replayed;
-- Units in a return cannot be asked for again.
SELECT t.err(format('SELECT oms_request_return(%L, %L, %L)', :'o', 'again', '[{"sku": "RT-A", "quantity": 2}]')) AS twice;

-- Received and restocked at the default location: the refund saga pays
-- the two units back (2 x 1000).
SELECT on_hand FROM oms.stock WHERE sku = 'RT-A';
SELECT (oms_receive_return(:'r1', 'default', 'rt-rcv-1') -> 'return') - '{return_id,created_at,received_at}'::text[]
	#- '{refund,refund_id}' AS return;
SELECT on_hand FROM oms.stock WHERE sku = 'RT-A';
SELECT t.return_ledger(:'o');
SELECT t.return_dims(:'o');
SELECT oms_run_sagas() AS steps_run;
SELECT t.return_ledger(:'o');
SELECT t.return_dims(:'o');
SELECT status, refund_id IS NOT NULL AS has_refund FROM oms.returns WHERE id = :'r1';
SELECT captured, refunded FROM oms.payments WHERE order_id = :'o';
SELECT regexp_replace(t.err(format('SELECT oms_receive_return(%L)', :'r1')), '[0-9a-f-]{36}', '<id>') AS receive_again;

-- A second return (everything left: one RT-A, two RT-B), rejected.
SELECT oms_request_return(:'o', 'changed my mind') -> 'return' AS doc \gset
SELECT :'doc'::jsonb ->> 'return_id' AS r2, :'doc'::jsonb -> 'items' AS items \gset
SELECT :'items';
SELECT (oms_reject_return(:'r2', 'worn') -> 'return') ->> 'status' AS status;
SELECT t.return_ledger(:'o');
SELECT regexp_replace(t.err(format('SELECT oms_receive_return(%L)', :'r2')), '[0-9a-f-]{36}', '<id>') AS receive_rejected;

-- A third return of the rest, received without restock: the order is
-- returned in full (every shipped unit came back).
SELECT oms_request_return(:'o', 'defect') -> 'return' ->> 'return_id' AS r3 \gset
SELECT on_hand FROM oms.stock WHERE sku IN ('RT-A', 'RT-B') ORDER BY sku;
SELECT oms_receive_return(:'r3') ->> 'fulfillment_status' AS fulfillment;
SELECT on_hand FROM oms.stock WHERE sku IN ('RT-A', 'RT-B') ORDER BY sku;
SELECT oms_run_sagas() AS steps_run;
SELECT t.return_ledger(:'o');
SELECT t.return_dims(:'o');
SELECT id = :'r1' AS first, status FROM oms.returns WHERE order_id = :'o' ORDER BY created_at, id;
SELECT t.events(:'o');
SELECT t.outbox(:'o');

-- The order document lists every return.
SELECT jsonb_agg(r ->> 'status') AS statuses FROM jsonb_array_elements(oms_get_order(:'o') -> 'returns') AS r;

--
-- Bad input: a clear error, nothing written.
--
SELECT t.new_order('rt-2', '[{"sku": "RT-B", "quantity": 2, "unit_price": 100}]', 'test_ok') AS o2 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT oms_create_shipment(:'o2') -> 'shipment' ->> 'shipment_id' AS s2 \gset
SELECT oms_ship(:'s2') -> 'shipment' ->> 'status' AS status;
SELECT oms_mark_delivered(:'s2') -> 'shipment' ->> 'status' AS status;
SELECT t.return_snapshot(:'o2') AS before \gset
SELECT t.err(format('SELECT oms_request_return(NULL, %L)', 'x')) AS null_order;
SELECT t.err(format('SELECT oms_request_return(%L, NULL)', :'o2')) AS null_reason;
SELECT t.err(format('SELECT oms_request_return(%L, %L)', :'o2', '')) AS empty_reason;
SELECT t.err(format('SELECT oms_request_return(%L, %L)', :'o2', repeat('r', 1001))) AS long_reason;
SELECT regexp_replace(t.err(format('SELECT oms_request_return(%L, %L)', gen_random_uuid(), 'x')), '[0-9a-f-]{36}', '<id>') AS unknown_order;
SELECT t.err(format('SELECT oms_request_return(%L, %L, %L)', :'o2', 'x', '[{"line_no": 1, "quantity": 3}]')) AS too_many;
SELECT t.err(format('SELECT oms_request_return(%L, %L, %L)', :'o2', 'x', '[{"line_no": 1}]')) AS no_quantity;
SELECT t.err(format('SELECT oms_request_return(%L, %L, %L)', :'o2', 'x', '"all"')) AS not_array;
SELECT t.err(format('SELECT oms_request_return(%L, %L, idempotency_key => %L)', :'o2', 'x', repeat('k', 256))) AS long_key;
SELECT t.err('SELECT oms_receive_return(NULL)') AS receive_null;
SELECT regexp_replace(t.err(format('SELECT oms_receive_return(%L)', gen_random_uuid())), '[0-9a-f-]{36}', '<id>') AS receive_unknown;
SELECT t.err('SELECT oms_reject_return(NULL)') AS reject_null;
SELECT regexp_replace(t.err(format('SELECT oms_reject_return(%L)', gen_random_uuid())), '[0-9a-f-]{36}', '<id>') AS reject_unknown;
SELECT t.return_snapshot(:'o2') = :'before' AS nothing_written;
SELECT oms_request_return(:'o2', 'x') -> 'return' ->> 'return_id' AS r4 \gset
SELECT t.return_snapshot(:'o2') AS before \gset
SELECT t.err(format('SELECT oms_receive_return(%L, %L)', :'r4', 'nowhere')) AS unknown_location;
SELECT t.err(format('SELECT oms_receive_return(%L, %L)', :'r4', ' default')) AS bad_location;
SELECT t.err(format('SELECT oms_reject_return(%L, %L)', :'r4', repeat('r', 1001))) AS long_reject_reason;
SELECT t.return_snapshot(:'o2') = :'before' AS nothing_written;

-- Returns are guarded by their machine, whoever writes.
SELECT regexp_replace(t.err(format('UPDATE oms.returns SET status = %L WHERE id = %L', 'refunded', :'r4')), '[0-9a-f-]{36}', '<id>') AS skip_receipt;
SELECT regexp_replace(t.err(format('UPDATE oms.returns SET status = %L WHERE id = %L', 'requested', :'r1')), '[0-9a-f-]{36}', '<id>') AS reopen;
