-- saga: the fulfilment saga, driven step by step from SQL.
-- oms._run_sagas(n, at) runs up to n due steps as of time "at": the same
-- code the worker runs, with the clock in the test's hands.
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql

SELECT oms_set_stock('SG-A', 10) ->> 'available' AS a, oms_set_stock('SG-B', 3) ->> 'available' AS b;
-- oms.saga_metrics and oms.saga_step_latency count every saga in the
-- database: the metrics checks below take off what was there before.
CREATE TEMP TABLE metrics_before AS SELECT * FROM oms.saga_metrics;
CREATE TEMP TABLE latency_before AS SELECT kind, step, steps FROM oms.saga_step_latency;

-- Happy path: reserve, pay, confirm in one run.
SELECT t.new_order('sg-ok', '[{"sku": "SG-A", "quantity": 2, "unit_price": 500}, {"sku": "SG-B", "quantity": 1, "unit_price": 100}]', 'test_ok') AS ok \gset
SELECT status FROM oms.orders WHERE id = :'ok';
SELECT oms_run_sagas() AS steps_run;
SELECT o.status, o.version, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'ok';
SELECT t.events(:'ok');
SELECT t.outbox(:'ok');
SELECT sku, on_hand, reserved, available FROM oms.stock_levels WHERE sku LIKE 'SG-%' ORDER BY sku;
SELECT amount, authorized, captured, refunded, status FROM oms.payments WHERE order_id = :'ok';
SELECT sku, quantity, status FROM oms.reservations WHERE order_id = :'ok' ORDER BY sku;
SELECT payload -> 'order' ->> 'status' AS status, payload ->> 'previous_status' AS previous
FROM oms.outbox WHERE aggregateid = :'ok' AND type = 'order.confirmed';
-- Nothing is due any more.
SELECT oms_run_sagas() AS steps_run;

-- Decline: the payment is refused for good; the reservation is released,
-- the order fails, a dead letter records why.
SELECT t.new_order('sg-decline', '[{"sku": "SG-A", "quantity": 1, "unit_price": 500}]', 'test_decline') AS dec \gset
SELECT oms_run_sagas() AS steps_run;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'dec';
SELECT t.events(:'dec');
SELECT t.outbox(:'dec');
SELECT sku, status FROM oms.reservations WHERE order_id = :'dec';
SELECT status, captured FROM oms.payments WHERE order_id = :'dec';
SELECT kind, step, error ->> 'sqlstate' AS sqlstate, error ->> 'message' AS message, status
FROM oms.dead_letters WHERE order_id = :'dec';
SELECT payload -> 'error' ->> 'message' AS reason FROM oms.outbox WHERE aggregateid = :'dec' AND type = 'order.failed';
SELECT sku, available FROM oms.stock_levels WHERE sku = 'SG-A';

-- Out of stock: 4 of SG-B with 3 on hand.  The basket is all or nothing:
-- the SG-A line is not reserved either.
SELECT t.new_order('sg-short', '[{"sku": "SG-A", "quantity": 1, "unit_price": 500}, {"sku": "SG-B", "quantity": 4, "unit_price": 100}]', 'test_ok') AS short \gset
SELECT oms_run_sagas() AS steps_run;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'short';
SELECT count(*) AS reservations FROM oms.reservations WHERE order_id = :'short';
SELECT error ->> 'message' AS message, error ->> 'detail' AS detail FROM oms.dead_letters WHERE order_id = :'short';
SELECT status FROM oms.payments WHERE order_id = :'short';
-- An unknown SKU fails the same way.
SELECT t.new_order('sg-unknown', '[{"sku": "SG-NOPE", "quantity": 1, "unit_price": 1}]', 'test_ok') AS unk \gset
SELECT oms_run_sagas() AS steps_run;
SELECT o.status, (SELECT error ->> 'message' FROM oms.dead_letters d WHERE d.order_id = o.id) FROM oms.orders o WHERE o.id = :'unk';

-- Flaky: two transient failures, retried with exponential backoff and
-- jitter (each delay within [base * 2^(n-1) / 2, base * 2^(n-1)]), then success.
SET oms.retry_base = '10s';
SELECT t.new_order('sg-flaky', '[{"sku": "SG-A", "quantity": 1, "unit_price": 500}]', 'test_flaky') AS fl \gset
SELECT now() AS t0 \gset
SELECT oms._run_sagas(10, :'t0') AS steps_run;
SELECT (t.saga(:'fl')).*;
SELECT next_run_at - :'t0'::timestamptz BETWEEN interval '5s' AND interval '10s' AS first_backoff_in_range,
	   error ->> 'sqlstate' AS sqlstate, error ->> 'transient' AS transient
FROM oms.sagas WHERE order_id = :'fl';
-- Not due yet: nothing runs.
SELECT oms._run_sagas(10, :'t0'::timestamptz + interval '4s') AS steps_run;
SELECT next_run_at AS t1 FROM oms.sagas WHERE order_id = :'fl' \gset
SELECT oms._run_sagas(10, :'t1') AS steps_run;
SELECT (t.saga(:'fl')).*;
SELECT next_run_at - :'t1'::timestamptz BETWEEN interval '10s' AND interval '20s' AS second_backoff_in_range
FROM oms.sagas WHERE order_id = :'fl';
SELECT next_run_at AS t2 FROM oms.sagas WHERE order_id = :'fl' \gset
SELECT oms._run_sagas(10, :'t2') AS steps_run;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'fl';
SELECT data ->> 'attempt' AS attempt, data -> 'error' ->> 'message' AS error,
	   (data ->> 'next_attempt_at')::timestamptz > occurred_at AS scheduled_later
FROM oms.order_events WHERE order_id = :'fl' AND event_type = 'saga.step_retry' ORDER BY seq;
SELECT attempts, last_error ->> 'message' AS last_error FROM oms.saga_steps t JOIN oms.sagas s ON s.id = t.saga_id
WHERE s.order_id = :'fl' AND t.name = 'pay';
RESET oms.retry_base;

-- Retries run out: with oms.max_attempts = 2 the flaky payment fails for
-- good and a dead letter records it.  Its compensation (a void, also flaky
-- here) runs out of attempts too: the saga is stuck, with a replayable dead
-- letter.
SET oms.max_attempts = 2;
SELECT t.new_order('sg-exhaust', '[{"sku": "SG-A", "quantity": 1, "unit_price": 500}]', 'test_flaky') AS ex \gset
SELECT oms._run_sagas(10, now()) AS steps_run;
SELECT oms._run_sagas(10, now() + interval '1 minute') AS steps_run;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'ex';
SELECT oms._run_sagas(10, now() + interval '2 minutes') AS steps_run;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'ex';
SELECT id AS dl_failed FROM oms.dead_letters WHERE order_id = :'ex' AND kind = 'saga_failed' \gset
SELECT id AS dl_stuck FROM oms.dead_letters WHERE order_id = :'ex' AND kind = 'compensation_stuck' \gset
SELECT kind, step, error ->> 'attempt' AS attempt, error ->> 'transient' AS transient,
	   error ->> 'message' AS message, status
FROM oms.dead_letters WHERE order_id = :'ex' ORDER BY id;
-- A stuck saga is not due: running sagas leaves it alone.
SELECT oms._run_sagas(10, now() + interval '3 minutes') AS steps_run;
-- The failed-saga letter is a record only; the stuck one replays with a
-- fresh set of attempts, and the provider's third answer is a yes.
SELECT regexp_replace(t.err(format('SELECT oms_retry_dead_letter(%s)', :dl_failed)), 'letter [0-9]+', 'letter N') AS err;
SELECT oms_retry_dead_letter(:dl_stuck) ->> 'status' AS status;
SELECT regexp_replace(t.err(format('SELECT oms_retry_dead_letter(%s)', :dl_stuck)), 'letter [0-9]+', 'letter N') AS err;
SELECT t.err('SELECT oms_retry_dead_letter(-1)');
SELECT t.err('SELECT oms_retry_dead_letter(NULL)');
SELECT oms._run_sagas(10, now() + interval '4 minutes') AS steps_run;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'ex';
SELECT status FROM oms.payments WHERE order_id = :'ex';
SELECT sku, status FROM oms.reservations WHERE order_id = :'ex';
SELECT t.events(:'ex');
RESET oms.max_attempts;

-- Hang: the provider never answers.  Before the timeout the step waits;
-- at the timeout it fails, the authorization is voided and the stock released.
SET oms.step_timeout = '30s';
SELECT t.new_order('sg-hang', '[{"sku": "SG-A", "quantity": 1, "unit_price": 500}]', 'test_hang') AS hg \gset
SELECT now() AS h0 \gset
SELECT oms._run_sagas(10, :'h0') AS steps_run;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'hg';
SELECT next_run_at - :'h0'::timestamptz AS wakes_after FROM oms.sagas WHERE order_id = :'hg';
SELECT oms._run_sagas(10, :'h0'::timestamptz + interval '29s') AS steps_run;
SELECT (t.saga(:'hg')).*;
SELECT oms._run_sagas(10, :'h0'::timestamptz + interval '30s') AS steps_run;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'hg';
SELECT error ->> 'sqlstate' AS sqlstate, error ->> 'message' AS message FROM oms.dead_letters WHERE order_id = :'hg';
SELECT status FROM oms.payments WHERE order_id = :'hg';
SELECT t.events(:'hg');
RESET oms.step_timeout;

-- Cancel while processing, at each point of the saga.
-- Before any step ran: nothing to undo.
SELECT t.new_order('sg-c0', '[{"sku": "SG-A", "quantity": 1, "unit_price": 500}]', 'test_ok') AS c0 \gset
SELECT oms_cancel_order(:'c0', 'changed mind') ->> 'status' AS status;
SELECT oms_run_sagas() AS steps_run;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'c0';
SELECT t.outbox(:'c0');
-- After reserve: the reservation is released.
SELECT t.new_order('sg-c1', '[{"sku": "SG-A", "quantity": 1, "unit_price": 500}]', 'test_ok') AS c1 \gset
SELECT oms_run_sagas(1) AS steps_run;
SELECT sku, status FROM oms.reservations WHERE order_id = :'c1';
SELECT oms_cancel_order(:'c1') ->> 'status' AS status;
SELECT oms_run_sagas() AS steps_run;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'c1';
SELECT sku, status FROM oms.reservations WHERE order_id = :'c1';
SELECT t.events(:'c1');
-- After pay: the capture is refunded, then the reservation released.
SELECT t.new_order('sg-c2', '[{"sku": "SG-A", "quantity": 1, "unit_price": 500}]', 'test_ok') AS c2 \gset
SELECT oms_run_sagas(2) AS steps_run;
SELECT status, captured FROM oms.payments WHERE order_id = :'c2';
SELECT oms_cancel_order(:'c2') ->> 'status' AS status;
SELECT oms_run_sagas() AS steps_run;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'c2';
SELECT status, captured, refunded FROM oms.payments WHERE order_id = :'c2';
SELECT sku, status FROM oms.reservations WHERE order_id = :'c2';
SELECT t.outbox(:'c2');
-- While the payment waits for an answer: voided at once, no timeout needed.
SELECT t.new_order('sg-c3', '[{"sku": "SG-A", "quantity": 1, "unit_price": 500}]', 'test_hang') AS c3 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT (t.saga(:'c3')).*;
SELECT oms_cancel_order(:'c3') ->> 'status' AS status;
SELECT oms_run_sagas() AS steps_run;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'c3';
SELECT status FROM oms.payments WHERE order_id = :'c3';
-- After confirm: refused, with a hint to refund.
\set VERBOSITY default
SELECT regexp_replace(t.err(format('SELECT oms_cancel_order(%L)', :'ok')), '[0-9a-f-]{36}', '<id>') AS err;
-- A second cancel while the first is being compensated is refused too.
SELECT t.new_order('sg-c4', '[{"sku": "SG-A", "quantity": 1, "unit_price": 500}]', 'test_ok') AS c4 \gset
SELECT oms_cancel_order(:'c4') ->> 'status' AS status;
SELECT regexp_replace(t.err(format('SELECT oms_cancel_order(%L)', :'c4')), '[0-9a-f-]{36}', '<id>') AS err;
SELECT oms_run_sagas() AS steps_run;

-- Stock after all of the above: only the confirmed orders took units.
SELECT sku, on_hand, reserved, available FROM oms.stock_levels WHERE sku LIKE 'SG-%' ORDER BY sku;
SELECT count(*) FILTER (WHERE status = 'held') AS held FROM oms.reservations WHERE sku LIKE 'SG-%';

SELECT o.customer_id, o.status, (t.saga(o.id)).* FROM oms.orders o
JOIN oms.sagas s ON s.order_id = o.id WHERE s.status NOT IN ('completed', 'compensated');

-- Metrics.
SELECT m.started - b.started AS started, m.completed - b.completed AS completed, m.failed - b.failed AS failed,
	   m.canceled - b.canceled AS canceled, m.in_flight, m.stuck
FROM oms.saga_metrics m, metrics_before b;
SELECT l.kind, l.step, l.steps - coalesce(b.steps, 0) AS steps, l.p50_ms >= 0 AS has_p50, l.p99_ms >= l.p50_ms AS ordered
FROM oms.saga_step_latency l LEFT JOIN latency_before b USING (kind, step) WHERE l.kind = 'fulfilment' ORDER BY l.step;

-- Every status change has its outbox event, gap-free per order.
SELECT count(*) AS orders_with_gaps FROM oms.orders o
WHERE o.event_seq <> (SELECT count(*) FROM oms.outbox x WHERE x.aggregateid = o.id)
   OR o.timeline_seq <> (SELECT count(*) FROM oms.order_events e WHERE e.order_id = o.id);
SELECT count(*) AS status_changes_without_event FROM oms.order_events e
WHERE e.to_status IS NOT NULL
  AND NOT EXISTS (SELECT FROM oms.outbox x WHERE x.aggregateid = e.order_id AND x.type = e.event_type);

-- oms_pay_order: bad input is refused with nothing written; a key replays.
SELECT oms_create_order('sg-pay', '[{"sku": "SG-A", "quantity": 1, "unit_price": 500}]') ->> 'order_id' AS p \gset
SELECT (SELECT count(*) FROM oms.sagas) AS sagas, (SELECT count(*) FROM oms.payments) AS payments \gset before_
SELECT t.err(format('SELECT oms_pay_order(%L, %L)', :'p', 'bitcoin'));
\set VERBOSITY default
SELECT oms_pay_order(:'p', 'test_unknown');
SELECT t.err(format('SELECT oms_pay_order(%L, NULL)', :'p'));
SELECT t.err('SELECT oms_pay_order(NULL, ''test_ok'')');
SELECT t.err('SELECT oms_pay_order(''00000000-0000-0000-0000-000000000000'', ''test_ok'')');
SELECT t.err(format('SELECT oms_pay_order(%L, %L, %L)', :'p', 'test_ok', ''));
SELECT (SELECT count(*) FROM oms.sagas) - :before_sagas AS sagas, (SELECT count(*) FROM oms.payments) - :before_payments AS payments;
SELECT oms_pay_order(:'p', 'test_ok', 'pay-key') ->> 'status' AS status;
SELECT oms_pay_order(:'p', 'test_ok', 'pay-key') ->> 'status' AS replayed;
SELECT t.err(format('SELECT oms_pay_order(%L, %L, %L)', :'p', 'test_decline', 'pay-key'));
SELECT regexp_replace(t.err(format('SELECT oms_pay_order(%L, %L)', :'p', 'test_ok')), '[0-9a-f-]{36}', '<id>') AS err;
SELECT count(*) AS sagas FROM oms.sagas WHERE order_id = :'p';
SELECT t.err('SELECT oms_run_sagas(0)');
SELECT oms_run_sagas() AS steps_run;
SELECT status FROM oms.orders WHERE id = :'p';
