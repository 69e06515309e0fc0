-- test/demo.sql: the walkthrough behind "make demo" (run by test/demo.sh).
-- Owns: a tour of the oms SQL API, meant to be read on screen: stock, an
-- order created, read back and replayed with its key, paid and confirmed by
-- the background worker, a declined payment and its compensation, a cancel
-- while processing, a partial and a full refund, a refused transition, and
-- the stock levels, outbox events and saga metrics.  Order ids travel in
-- psql variables.  The worker serves this database (test/demo.sh starts the
-- cluster with oms.database_name = 'oms_demo'); the demo waits for it by
-- polling with a deadline, never with a fixed sleep.

\set SHOW_CONTEXT never

-- Plumbing, not echoed: two waits with a deadline.  Each polls every 20 ms
-- (every statement of a volatile function sees the latest commits) and
-- fails the demo when the deadline passes, so a worker that does not work
-- stops "make demo" with an error instead of hanging.
\set ECHO none
CREATE FUNCTION pg_temp.wait_for_worker(p_timeout interval DEFAULT '30s')
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
	v_deadline timestamptz := clock_timestamp() + p_timeout;
BEGIN
	LOOP
		IF EXISTS (SELECT FROM oms_worker_status() AS w
				   WHERE w.database = current_database() AND w.alive) THEN
			RETURN 'the oms worker of ' || current_database() || ' is running';
		END IF;
		IF clock_timestamp() > v_deadline THEN
			RAISE EXCEPTION 'demo: no oms worker for database % within %', current_database(), p_timeout
				USING HINT = 'Check oms.database_name and the server log.';
		END IF;
		PERFORM pg_sleep(0.02);
	END LOOP;
END;
$$;

-- Waits until the order has status p_what, or a timeline entry of that type.
CREATE FUNCTION pg_temp.wait_for(p_order uuid, p_what text, p_timeout interval DEFAULT '30s')
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
	v_start timestamptz := clock_timestamp();
BEGIN
	LOOP
		IF EXISTS (SELECT FROM oms.orders AS o WHERE o.id = p_order AND o.status::text = p_what)
		   OR EXISTS (SELECT FROM oms.order_events AS e WHERE e.order_id = p_order AND e.event_type = p_what) THEN
			RETURN format('%s after %s ms', p_what,
						  round(extract(epoch FROM clock_timestamp() - v_start) * 1000));
		END IF;
		IF clock_timestamp() > v_start + p_timeout THEN
			RAISE EXCEPTION 'demo: order % did not reach "%" within %', p_order, p_what, p_timeout
				USING HINT = 'Look at SELECT * FROM oms_worker_status() and the server log.';
		END IF;
		PERFORM pg_sleep(0.02);
	END LOOP;
END;
$$;
\set ECHO queries

\echo
\echo '== 1. The background worker of this database =='
SELECT pg_temp.wait_for_worker() AS worker;
SELECT database, alive, loops, last_error FROM oms_worker_status();

\echo
\echo '== 2. Stock: three SKUs (an order can only be paid for SKUs with stock) =='
SELECT oms_set_stock('SKU-1', 10) - 'updated_at' AS sku1;
SELECT oms_set_stock('SKU-2', 5) - 'updated_at' AS sku2;
SELECT oms_set_stock('SKU-3', 20) - 'updated_at' AS sku3;

\echo
\echo '== 3. Create an order with three items (idempotency key demo-key-1) =='
SELECT o->>'order_id' AS order1, o->>'status' AS status1, o->>'total' AS total1
FROM oms_create_order(
	'cust-42',
	'[{"sku": "SKU-1", "quantity": 2, "unit_price": 1999},
	  {"sku": "SKU-2", "quantity": 1, "unit_price": 4999},
	  {"sku": "SKU-3", "quantity": 3, "unit_price": 250}]',
	'USD',
	'demo-key-1') AS o \gset
\echo 'created order' :order1 'status' :status1 'total' :total1 '(minor units, USD cents)'

\echo
\echo '== 4. Read it back: oms_get_order returns the whole order document =='
-- Unaligned, no header: the pretty JSON reads as plain text.
\pset format unaligned
\pset tuples_only on
SELECT pg_catalog.jsonb_pretty(oms_get_order(:'order1'));
\pset format aligned
\pset tuples_only off

\echo
\echo '== 5. Replay the same call with the same idempotency key: same order, no second one =='
SELECT o->>'order_id' AS replay_id
FROM oms_create_order(
	'cust-42',
	'[{"sku": "SKU-1", "quantity": 2, "unit_price": 1999},
	  {"sku": "SKU-2", "quantity": 1, "unit_price": 4999},
	  {"sku": "SKU-3", "quantity": 3, "unit_price": 250}]',
	'USD',
	'demo-key-1') AS o \gset
SELECT :'replay_id' AS replayed_order_id,
	:'replay_id' = :'order1' AS same_order_id,
	(SELECT pg_catalog.count(*) FROM oms.orders) AS orders_in_table;

\echo
\echo '== 6. Pay it with test_ok: the order is processing, the fulfilment saga starts =='
SELECT p->>'status' AS status, p->>'version' AS version
FROM oms_pay_order(:'order1', 'test_ok', 'demo-pay-1') AS p;
\echo 'the worker was woken when that call committed; wait for it to confirm the order:'
SELECT pg_temp.wait_for(:'order1', 'confirmed') AS waited;

\echo
\echo '== 7. Timeline of the confirmed order: reserve, pay, confirm =='
SELECT seq, event_type, from_status, to_status, data - 'saga_id' AS data
FROM oms_order_timeline(:'order1');
SELECT method, amount, captured, status, provider_reference FROM oms.payments WHERE order_id = :'order1';
SELECT sku, quantity, status, expires_at FROM oms.reservations WHERE order_id = :'order1' ORDER BY sku;

\echo
\echo '== 8. A confirmed order cannot be canceled (confirm is the point of no return) =='
-- Let this one error through, then show what the client saw.
\set ON_ERROR_STOP 0
SELECT oms_cancel_order(:'order1', 'too late');
\set ON_ERROR_STOP 1
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate, :'LAST_ERROR_MESSAGE' AS message;
-- Plumbing for the check below; not worth echoing.
\set ECHO none
SELECT :'LAST_ERROR_SQLSTATE' = '55000' AS refused_ok \gset
\set ECHO queries
\if :refused_ok
\echo 'refused with SQLSTATE 55000 (object_not_in_prerequisite_state); the order is unchanged:'
SELECT id, status, version FROM oms.orders WHERE id = :'order1';
\else
-- The demo doubles as a smoke test: an accepted cancel is a bug.
DO $$ BEGIN RAISE EXCEPTION 'demo: expected the cancel of a confirmed order to fail with SQLSTATE 55000'; END $$;
\endif

\echo
\echo '== 9. A declined payment (test_decline): the saga fails and compensates =='
SELECT o->>'order_id' AS order2
FROM oms_create_order('cust-7', '[{"sku": "SKU-1", "quantity": 1, "unit_price": 1999}]') AS o \gset
SELECT oms_pay_order(:'order2', 'test_decline')->>'status' AS status;
SELECT pg_temp.wait_for(:'order2', 'failed') AS waited;
\echo 'reserve succeeded, pay was declined, so the reservation is released (compensation):'
SELECT seq, event_type, from_status, to_status, data->>'step' AS step,
	coalesce(data->'error'->>'message', data->>'outcome') AS error_or_outcome
FROM oms_order_timeline(:'order2');
SELECT sku, quantity, status FROM oms.reservations WHERE order_id = :'order2';
SELECT kind, step, error->>'sqlstate' AS sqlstate, error->>'message' AS message
FROM oms.dead_letters WHERE order_id = :'order2';

\echo
\echo '== 10. Cancel while processing: test_hang never answers, so the pay step waits =='
SELECT o->>'order_id' AS order3
FROM oms_create_order('cust-9', '[{"sku": "SKU-2", "quantity": 2, "unit_price": 4999}]') AS o \gset
SELECT oms_pay_order(:'order3', 'test_hang')->>'status' AS status;
SELECT pg_temp.wait_for(:'order3', 'saga.step_waiting') AS waited;
SELECT c->>'status' AS status
FROM oms_cancel_order(:'order3', 'customer changed mind') AS c;
\echo 'cancel_requested: the saga stops at once, voids the payment and releases the stock:'
SELECT pg_temp.wait_for(:'order3', 'canceled') AS waited;
SELECT seq, event_type, from_status, to_status, data->>'step' AS step
FROM oms_order_timeline(:'order3');
SELECT status, captured FROM oms.payments WHERE order_id = :'order3';

\echo
\echo '== 11. Refunds of the confirmed order: 10.00 USD, then the rest =='
SELECT r->>'status' AS order_status, r->'refund'->>'amount' AS refund_amount
FROM oms_refund_order(:'order1', 1000, 'damaged box') AS r;
SELECT pg_temp.wait_for(:'order1', 'partially_refunded') AS waited;
SELECT r->>'status' AS order_status, r->'refund'->>'amount' AS refund_amount
FROM oms_refund_order(:'order1') AS r;
SELECT pg_temp.wait_for(:'order1', 'refunded') AS waited;
SELECT amount, reason, status FROM oms.refunds WHERE order_id = :'order1' ORDER BY created_at;
SELECT amount, captured, refunded, status FROM oms.payments WHERE order_id = :'order1';

\echo
\echo '== 12. Stock levels: the full refund put order 1''s units back; the others released theirs =='
SELECT sku, on_hand, reserved, available FROM oms.stock_levels ORDER BY sku;

\echo
\echo '== 13. Outbox: one event per status change, numbered per order =='
SELECT o.customer_id, x.seq, x.type, x.payload->>'previous_status' AS previous_status
FROM oms.outbox AS x JOIN oms.orders AS o ON o.id = x.aggregateid
ORDER BY o.created_at, x.seq;

\echo
\echo '== 14. Saga metrics =='
SELECT * FROM oms.saga_metrics;
SELECT kind, step, steps, round(p50_ms::numeric, 1) AS p50_ms FROM oms.saga_step_latency ORDER BY kind, step;

\echo
\echo '== 15. The state machine: every allowed move =='
SELECT * FROM oms.order_transitions ORDER BY 1, 2;

\echo
\echo 'demo finished'
