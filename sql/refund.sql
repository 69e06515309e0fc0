-- refund: partial and full refunds of confirmed orders, run as sagas.
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql

SELECT oms_set_stock('RF-A', 5) ->> 'available' AS available;
SELECT t.new_order('rf-1', '[{"sku": "RF-A", "quantity": 2, "unit_price": 1500}]', 'test_ok') AS o \gset
SELECT oms_run_sagas() AS steps_run;
SELECT status FROM oms.orders WHERE id = :'o';
SELECT on_hand FROM oms.stock WHERE sku = 'RF-A';

-- A partial refund: the order stays confirmed until the refund saga ran.
SELECT oms_refund_order(:'o', 1000, 'damaged box', 'rf-key-1') - '{order_id,created_at,updated_at,items}'::text[] - 'refund'
	#- '{last_saga,saga_id}' AS doc;
SELECT status, amount, reason FROM oms.refunds WHERE order_id = :'o';
SELECT oms_run_sagas() AS steps_run;
SELECT status, version FROM oms.orders WHERE id = :'o';
SELECT captured, refunded, status FROM oms.payments WHERE order_id = :'o';
SELECT on_hand FROM oms.stock WHERE sku = 'RF-A';
-- The same request with the same key replays; with other arguments it is refused.
SELECT (oms_refund_order(:'o', 1000, 'damaged box', 'rf-key-1') -> 'refund' ->> 'amount') AS replayed_amount;
SELECT count(*) AS refunds FROM oms.refunds WHERE order_id = :'o';
SELECT t.err(format('SELECT oms_refund_order(%L, 999, %L, %L)', :'o', 'damaged box', 'rf-key-1'));

-- A second partial refund (the self-loop partially_refunded -> partially_refunded).
SELECT oms_refund_order(:'o', 500) -> 'refund' ->> 'amount' AS amount;
SELECT oms_run_sagas() AS steps_run;
SELECT status, version FROM oms.orders WHERE id = :'o';

-- Over-refund: 1500 left, 1501 asked.  OM002, nothing written.
SELECT regexp_replace(t.err(format('SELECT oms_refund_order(%L, 1501)', :'o')), '[0-9a-f-]{36}', '<id>') AS err;
SELECT count(*) AS refunds FROM oms.refunds WHERE order_id = :'o';

-- A refund waiting to run counts against what is left: after asking for
-- 1000 of the 1500, only 500 can be asked for.
SELECT oms_refund_order(:'o', 1000) -> 'refund' ->> 'amount' AS amount;
SELECT regexp_replace(t.err(format('SELECT oms_refund_order(%L, 501)', :'o')), '[0-9a-f-]{36}', '<id>') AS err;
-- NULL refunds all that is left: the order becomes refunded and restocked.
SELECT oms_refund_order(:'o') -> 'refund' ->> 'amount' AS amount;
SELECT oms_run_sagas() AS steps_run;
SELECT status, version FROM oms.orders WHERE id = :'o';
SELECT captured, refunded, status FROM oms.payments WHERE order_id = :'o';
SELECT on_hand FROM oms.stock WHERE sku = 'RF-A';
SELECT sku, status FROM oms.reservations WHERE order_id = :'o';
SELECT regexp_replace(t.err(format('SELECT oms_refund_order(%L)', :'o')), '[0-9a-f-]{36}', '<id>') AS err;
SELECT t.outbox(:'o');
SELECT payload ->> 'amount' AS amount, payload ->> 'refunded_total' AS total
FROM oms.outbox WHERE aggregateid = :'o' AND type LIKE 'order.%refunded' ORDER BY seq;

-- A full refund in one go restocks too.
SELECT t.new_order('rf-2', '[{"sku": "RF-A", "quantity": 3, "unit_price": 100}]', 'test_ok') AS o2 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT on_hand FROM oms.stock WHERE sku = 'RF-A';
SELECT oms_refund_order(:'o2') -> 'refund' ->> 'amount' AS amount;
SELECT oms_run_sagas() AS steps_run;
SELECT o.status, (SELECT on_hand FROM oms.stock WHERE sku = 'RF-A') AS on_hand FROM oms.orders o WHERE o.id = :'o2';

-- Refunds of orders that are not confirmed, and bad arguments.
SELECT oms_create_order('rf-3', '[{"sku": "RF-A", "quantity": 1, "unit_price": 100}]') ->> 'order_id' AS o3 \gset
SELECT regexp_replace(t.err(format('SELECT oms_refund_order(%L)', :'o3')), '[0-9a-f-]{36}', '<id>') AS err;
SELECT t.err(format('SELECT oms_refund_order(%L, 0)', :'o3'));
SELECT t.err(format('SELECT oms_refund_order(%L, -5)', :'o3'));
SELECT t.err('SELECT oms_refund_order(NULL)');
SELECT t.err('SELECT oms_refund_order(''00000000-0000-0000-0000-000000000000'')');
SELECT t.err(format('SELECT oms_refund_order(%L, 1, %L)', :'o3', repeat('r', 1001)));

-- Refund sagas in the metrics: this test's, and the view counts every
-- completed refund saga of the database (other tests' too, when they
-- share it).
SELECT count(*) AS refunded FROM oms.sagas AS s JOIN oms.orders AS o ON o.id = s.order_id
WHERE s.kind = 'refund' AND s.status = 'completed' AND o.customer_id LIKE 'rf-%';
SELECT m.refunded = (SELECT count(*) FROM oms.sagas AS s WHERE s.kind = 'refund' AND s.status = 'completed')
	AS metrics_count_them
FROM oms.saga_metrics AS m;

-- Two refund sagas interleaved (600 and 400 of 1000): each refunds its
-- amount; the order becomes refunded once, with one event, and the saga
-- that completes last only records its refund.
SELECT t.new_order('rf-4', '[{"sku": "RF-A", "quantity": 1, "unit_price": 1000}]', 'test_ok') AS o4 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT oms_refund_order(:'o4', 600) -> 'refund' ->> 'amount' AS a;
SELECT oms_refund_order(:'o4', 400) -> 'refund' ->> 'amount' AS b;
SELECT oms_run_sagas(1) AS steps_run, oms_run_sagas(1) AS steps_run_2;
SELECT captured, refunded, status FROM oms.payments WHERE order_id = :'o4';
SELECT oms_run_sagas(1) AS steps_run, oms_run_sagas(1) AS steps_run_2;
SELECT status FROM oms.orders WHERE id = :'o4';
SELECT t.outbox(:'o4');
SELECT event_type, data ->> 'amount' AS amount FROM oms.order_events
WHERE order_id = :'o4' AND event_type IN ('order.refunded', 'refund.completed', 'order.partially_refunded') ORDER BY seq;
SELECT on_hand FROM oms.stock WHERE sku = 'RF-A';
