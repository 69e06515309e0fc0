-- saga_at_once: a fresh fulfilment saga whose steps all succeed runs as one
-- move (oms._fulfil_at_once).  That move must leave exactly the rows the
-- three steps leave one by one: the same order, timeline, outbox event,
-- reservations, stock, payment, saga and steps.  Every other case falls
-- back to the steps, which hold the rules for it.
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql
SET track_functions = 'pl';

-- Every row an order's fulfilment leaves, with what differs between two
-- orders by nature (ids, the clock) taken out.
CREATE FUNCTION t.image(p_order uuid) RETURNS SETOF text LANGUAGE sql AS $$
	SELECT 'order ' || o.status || ' v' || o.version || ' timeline ' || o.timeline_seq || ' events ' || o.event_seq
	FROM oms.orders o WHERE o.id = p_order
	UNION ALL
	SELECT 'timeline ' || e.seq || ' ' || e.event_type || ' ' || coalesce(e.from_status::text, '-') || '->'
		   || coalesce(e.to_status::text, '-') || ' ' || (e.data - 'saga_id')::text
		   || ' saga ' || coalesce((e.data ->> 'saga_id' = s.id::text)::text, '-')
	FROM oms.order_events e, oms.sagas s WHERE e.order_id = p_order AND s.order_id = p_order
	UNION ALL
	SELECT 'outbox ' || x.seq || ' ' || x.type || ' ' || x.aggregatetype || ' '
		   || (x.payload - 'saga_id' - 'order')::text || ' '
		   || ((x.payload -> 'order') - 'order_id' - 'customer_id' - 'created_at' - 'updated_at'
			   #- '{last_saga,saga_id}')::text
		   || ' saga ' || coalesce((x.payload ->> 'saga_id' = s.id::text)::text, '-')
		   || ' last_saga ' || coalesce((x.payload -> 'order' -> 'last_saga' ->> 'saga_id' = s.id::text)::text, '-')
		   || ' document ' || (x.payload -> 'order' ->> 'order_id' = p_order::text)::text
	FROM oms.outbox x, oms.sagas s WHERE x.aggregateid = p_order AND s.order_id = p_order
	UNION ALL
	SELECT 'reservation ' || r.sku || ' ' || r.quantity || ' ' || r.status || ' until ' || r.expires_at
		   || ' created with its step ' || (r.created_at = t.started_at)::text
	FROM oms.reservations r, oms.sagas s, oms.saga_steps t
	WHERE r.order_id = p_order AND s.order_id = p_order AND t.saga_id = s.id AND t.step_no = 1
	UNION ALL
	SELECT 'payment ' || p.method || ' ' || p.amount || ' ' || p.authorized || ' ' || p.captured || ' '
		   || p.refunded || ' ' || p.status || ' ' || coalesce(p.provider_reference, '-') || ' ' || p.command_seq
	FROM oms.payments p WHERE p.order_id = p_order
	UNION ALL
	SELECT 'saga ' || s.kind || ' ' || s.status || ' ' || coalesce(s.outcome, '-') || ' step ' || s.step_no
		   || ' error ' || coalesce(s.error::text, '-') || ' finished ' || (s.finished_at IS NOT NULL)::text
	FROM oms.sagas s WHERE s.order_id = p_order
	UNION ALL
	SELECT 'step ' || t.step_no || ' ' || t.name || ' ' || t.status || ' attempts ' || t.attempts
		   || ' compensations ' || t.compensation_attempts || ' replays ' || t.replays
		   || ' next ' || coalesce(t.next_attempt_at::text, '-')
		   || ' started ' || (t.started_at IS NOT NULL AND t.first_started_at = t.started_at)::text
		   || ' completed ' || (t.completed_at >= t.started_at)::text
		   || ' error ' || coalesce(t.last_error::text, '-')
	FROM oms.saga_steps t JOIN oms.sagas s ON s.id = t.saga_id WHERE s.order_id = p_order;
$$;
-- How often the one-move path ran (and how often it declined).
CREATE FUNCTION t.at_once_calls() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_stat_clear_snapshot();
	RETURN coalesce((SELECT calls FROM pg_stat_user_functions
					 WHERE schemaname = 'oms' AND funcname = '_fulfil_at_once'), 0);
END;
$$;
CREATE TABLE t.calls (at text PRIMARY KEY, calls bigint);
-- A session's function statistics reach the view when it goes idle after
-- pg_stat_force_next_flush() (its own statement): read them after that.
CREATE FUNCTION t.note_calls(p_at text) RETURNS void LANGUAGE sql AS $$
	INSERT INTO t.calls VALUES (p_at, t.at_once_calls());
$$;

SELECT oms_set_stock('AO-A', 100) ->> 'available' AS a, oms_set_stock('AO-B', 100) ->> 'available' AS b;
\set items '[{"sku": "AO-B", "quantity": 3, "unit_price": 250}, {"sku": "AO-A", "quantity": 2, "unit_price": 500}]'

-- Step by step: a batch of one step cannot hold the saga's three.
SELECT pg_stat_force_next_flush() \g /dev/null
SELECT t.note_calls('start');
SELECT t.new_order('ao-steps', :'items', 'test_ok') AS steps \gset
SELECT oms._run_sagas(1, now()) AS ran, oms._run_sagas(1, now()) AS ran, oms._run_sagas(1, now()) AS ran;
SELECT pg_stat_force_next_flush() \g /dev/null
SELECT t.note_calls('steps');

-- At once: the same order in a batch with room.
SELECT t.new_order('ao-once', :'items', 'test_ok') AS once \gset
SELECT oms._run_sagas(10, now()) AS ran;
SELECT pg_stat_force_next_flush() \g /dev/null
SELECT t.note_calls('once');
SELECT c.at, c.calls - s.calls AS at_once_calls
FROM t.calls c, t.calls s WHERE s.at = 'start' AND c.at <> 'start' ORDER BY c.calls, c.at;

-- The two orders left the same rows; both are confirmed.
SELECT count(*) AS rows_each, count(*) FILTER (WHERE i LIKE 'order confirmed%') AS confirmed
FROM t.image(:'steps') AS i;
(SELECT 'only steps' AS path, i FROM t.image(:'steps') AS i EXCEPT SELECT 'only steps', i FROM t.image(:'once') AS i)
UNION ALL
(SELECT 'only at once', i FROM t.image(:'once') AS i EXCEPT SELECT 'only at once', i FROM t.image(:'steps') AS i);
SELECT i FROM t.image(:'once') AS i ORDER BY i;
-- Both took 5 units of each SKU off the shelf, and hold none.
SELECT sku, on_hand, reserved, available FROM oms.stock_levels WHERE sku LIKE 'AO-%' ORDER BY sku;

-- The fall-backs.  Each runs the steps and ends as the steps decide.
-- A decline: compensated by the steps (no rows of a capture left behind).
SELECT t.new_order('ao-decline', :'items', 'test_decline') AS dec \gset
SELECT oms._run_sagas(10, now()) AS ran;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'dec';

-- Short while an expired hold would free the units: only the reserve step
-- sweeps expired holds, so the order falls back and is confirmed.
SELECT oms_set_stock('AO-C', 2) ->> 'available' AS c;
SELECT t.new_order('ao-holder', '[{"sku": "AO-C", "quantity": 2, "unit_price": 10}]', 'test_hang') AS holder \gset
SELECT oms._run_sagas(2, now()) AS ran;
-- The holder's pay step waits for the provider; its hold expires.
UPDATE oms.reservations SET expires_at = now() - interval '1 second' WHERE order_id = :'holder';
SELECT t.new_order('ao-late', '[{"sku": "AO-C", "quantity": 2, "unit_price": 10}]', 'test_ok') AS late \gset
SELECT oms._run_sagas(10, now()) AS ran;
SELECT o.customer_id, o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id IN (:'holder', :'late') ORDER BY 1;
SELECT r.order_id = :'late' AS late, r.status, r.quantity FROM oms.reservations r WHERE r.sku = 'AO-C' ORDER BY 1;

-- A remote provider: the pay step waits for its reply, so the one-move
-- path is consulted and declines.
SET oms.payment_provider = 'kafka';
SELECT pg_stat_force_next_flush() \g /dev/null
SELECT t.note_calls('before kafka');
SELECT t.new_order('ao-remote', :'items', 'test_ok') AS remote \gset
SELECT oms._run_sagas(10, now()) AS ran;
SELECT pg_stat_force_next_flush() \g /dev/null
SELECT t.note_calls('after kafka');
RESET oms.payment_provider;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'remote';

-- A cancel requested before the worker ran: the steps compensate.
SELECT t.new_order('ao-cancel', :'items', 'test_ok') AS cancel \gset
SELECT oms_cancel_order(:'cancel') ->> 'status' AS status;
SELECT oms._run_sagas(10, now()) AS ran;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'cancel';

-- A saga whose reserve step failed once (attempted already): the steps.
SELECT oms_set_stock('AO-D', 1) ->> 'available' AS d;
SELECT t.new_order('ao-retry', '[{"sku": "AO-D", "quantity": 1, "unit_price": 10}]', 'test_ok') AS retry \gset
UPDATE oms.saga_steps t SET attempts = 1 FROM oms.sagas s
WHERE s.order_id = :'retry' AND t.saga_id = s.id AND t.step_no = 1;
SELECT oms._run_sagas(10, now()) AS ran;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'retry';

SELECT c.at, c.calls - s.calls AS at_once_calls
FROM t.calls c, t.calls s WHERE s.at = 'before kafka' AND c.at = 'after kafka';

-- The sagas still waiting here (the holder's, the remote one) must not be
-- due in the tests that follow.
DELETE FROM oms.orders WHERE customer_id LIKE 'ao-%';
SELECT count(*) AS sagas_left FROM oms.sagas s WHERE s.status IN ('running', 'compensating');
