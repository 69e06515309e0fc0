-- tracing: the caller's W3C traceparent (SET LOCAL oms.traceparent) is
-- stored on the timeline entries and outbox events the call causes, and on
-- everything the saga engine writes for the saga later, whoever runs it.
-- The relay sends it as the Kafka header traceparent.
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql
SELECT oms_set_stock('TR-A', 100) ->> 'available' AS available;
-- Per order: each timeline entry with its traceparent (T1, T2... or NULL).
CREATE TABLE t.traces (name text PRIMARY KEY, value text);
INSERT INTO t.traces VALUES
	('T1', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'),
	('T2', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'),
	('T3', '00-11111111111111111111111111111111-2222222222222222-00'),
	('T4', '01-33333333333333333333333333333333-4444444444444444-01-future');
CREATE FUNCTION t.tr(p_value text) RETURNS text LANGUAGE sql AS $$
	SELECT coalesce((SELECT x.name FROM t.traces x WHERE x.value = p_value), p_value, '-');
$$;
CREATE FUNCTION t.timeline_traces(p_order uuid) RETURNS text LANGUAGE sql AS $$
	SELECT string_agg(e.event_type || '=' || t.tr(e.traceparent), ' ' ORDER BY e.seq)
	FROM oms_order_timeline(p_order) e;
$$;
CREATE FUNCTION t.outbox_traces(p_order uuid) RETURNS text LANGUAGE sql AS $$
	SELECT string_agg(x.type || '=' || t.tr(x.traceparent), ' ' ORDER BY x.aggregatetype DESC, x.seq)
	FROM oms.outbox x
	WHERE x.aggregateid = p_order
	   OR x.aggregateid IN (SELECT p.id FROM oms.payments p WHERE p.order_id = p_order);
$$;
-- The traceparent header of an event as the relay claims it (NULL: none).
CREATE FUNCTION t.header(p_event uuid) RETURNS text LANGUAGE sql AS $$
	SELECT t.tr(c.headers[i + 1])
	FROM oms._relay_claim(100000) c, generate_subscripts(c.headers, 1) i
	WHERE c.id = p_event AND c.headers[i] = 'traceparent' AND i % 2 = 1;
$$;
SELECT value AS t1 FROM t.traces WHERE name = 'T1' \gset
SELECT value AS t2 FROM t.traces WHERE name = 'T2' \gset
SELECT value AS t3 FROM t.traces WHERE name = 'T3' \gset
SELECT value AS t4 FROM t.traces WHERE name = 'T4' \gset

-- Invalid values are refused when set (22023), each with its reason.
SELECT v.what, t.err(format('SET LOCAL oms.traceparent = %L', v.value)) AS err
FROM (VALUES
	('too short', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7'),
	('no dashes', '00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01'),
	('uppercase', '00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01'),
	('not hex', '00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01'),
	('version ff', 'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'),
	('version 00, too long', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x'),
	('later version, no dash', '01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x'),
	('zero trace id', '00-00000000000000000000000000000000-00f067aa0ba902b7-01'),
	('zero parent id', '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01')) AS v(what, value);
-- The refused SET aborts the caller's transaction: nothing is written.
SELECT (SELECT count(*) FROM oms.orders) AS orders, (SELECT count(*) FROM oms.order_events) AS timeline,
	   (SELECT count(*) FROM oms.outbox) AS outbox \gset before_
BEGIN;
SELECT oms_create_order('tr-bad', '[{"sku": "TR-A", "quantity": 1, "unit_price": 5}]') IS NOT NULL AS created;
SET LOCAL oms.traceparent = 'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
SELECT oms_create_order('tr-bad', '[{"sku": "TR-A", "quantity": 1, "unit_price": 5}]') IS NOT NULL AS created;
COMMIT;
SELECT (SELECT count(*) FROM oms.orders) - :before_orders AS orders,
	   (SELECT count(*) FROM oms.order_events) - :before_timeline AS timeline,
	   (SELECT count(*) FROM oms.outbox) - :before_outbox AS outbox,
	   current_setting('oms.traceparent') = '' AS setting_unchanged;
-- Empty means "no trace"; a later version with extra fields is accepted.
SET oms.traceparent = '';
SET oms.traceparent = :'t4';
RESET oms.traceparent;

-- A traced create and pay: every timeline entry and event of the calls
-- carries T1, and so does the saga.
BEGIN;
SET LOCAL oms.traceparent = :'t1';
SELECT t.new_order('tr-1', '[{"sku": "TR-A", "quantity": 1, "unit_price": 500}]', 'test_ok') AS o1 \gset
COMMIT;
SELECT current_setting('oms.traceparent') = '' AS local_setting_gone;
SELECT t.timeline_traces(:'o1');
SELECT t.outbox_traces(:'o1');
SELECT t.tr(traceparent) AS saga_trace FROM oms.sagas WHERE order_id = :'o1';
-- The relay's claim carries it as the header traceparent.
SELECT x.type, t.header(x.id) AS header FROM oms.outbox x WHERE x.aggregateid = :'o1' ORDER BY x.seq;

-- The saga engine runs the saga in a session traced T2: the steps' entries
-- and the order.confirmed event carry the saga's T1; the session keeps T2.
BEGIN;
SET LOCAL oms.traceparent = :'t2';
SELECT oms._run_sagas(100, clock_timestamp()) > 0 AS ran;
SELECT t.tr(current_setting('oms.traceparent')) AS session_trace;
COMMIT;
SELECT status FROM oms.orders WHERE id = :'o1';
SELECT t.timeline_traces(:'o1');
SELECT t.outbox_traces(:'o1');
SELECT t.header(id) AS confirmed_header FROM oms.outbox WHERE aggregateid = :'o1' AND type = 'order.confirmed';

-- An untraced order stores NULL and its events carry no header; a session
-- with no traceparent runs a traced saga with the saga's.
SELECT t.new_order('tr-2', '[{"sku": "TR-A", "quantity": 1, "unit_price": 500}]', 'test_ok') AS o2 \gset
BEGIN;
SET LOCAL oms.traceparent = :'t3';
SELECT t.new_order('tr-3', '[{"sku": "TR-A", "quantity": 1, "unit_price": 500}]', 'test_decline') AS o3 \gset
COMMIT;
SELECT oms_run_sagas() > 0 AS ran;
SELECT current_setting('oms.traceparent') = '' AS session_untraced;
SELECT status, t.timeline_traces(id) FROM oms.orders WHERE id = :'o2';
SELECT t.outbox_traces(:'o2');
SELECT count(*) AS events, count(t.header(x.id)) AS with_header FROM oms.outbox x WHERE x.aggregateid = :'o2';
SELECT t.tr(traceparent) AS saga_trace FROM oms.sagas WHERE order_id = :'o2';
-- The declined payment compensates under the saga's T3 too.
SELECT status, t.timeline_traces(id) FROM oms.orders WHERE id = :'o3';
SELECT t.outbox_traces(:'o3');

-- A refund traced T2: the refund saga's entries and order.refunded carry T2.
BEGIN;
SET LOCAL oms.traceparent = :'t2';
SELECT oms_refund_order(:'o1') -> 'refund' ->> 'status' AS refund;
COMMIT;
SELECT oms._run_sagas(100, clock_timestamp()) > 0 AS ran;
SELECT status FROM oms.orders WHERE id = :'o1';
SELECT t.timeline_traces(:'o1');
SELECT t.outbox_traces(:'o1');
SELECT kind, t.tr(traceparent) AS saga_trace FROM oms.sagas WHERE order_id = :'o1' ORDER BY created_at, kind;

-- The remote payment provider: the charge command the saga sends and what
-- its reply causes carry the saga's trace, whoever delivers the reply.
SET oms.payment_provider = 'kafka';
BEGIN;
SET LOCAL oms.traceparent = :'t4';
SELECT t.new_order('tr-4', '[{"sku": "TR-A", "quantity": 1, "unit_price": 500}]', 'card') AS o4 \gset
COMMIT;
SELECT oms._run_sagas(100, clock_timestamp()) > 0 AS ran;
SELECT t.outbox_traces(:'o4');
SELECT t.header(x.id) AS command_header
FROM oms.outbox x JOIN oms.payments p ON p.id = x.aggregateid WHERE p.order_id = :'o4';
BEGIN;
SET LOCAL oms.traceparent = :'t1';
SELECT oms_payment_result(c.correlation_id, 'approved') ->> 'result' AS result
FROM oms.payment_commands c WHERE c.order_id = :'o4';
SELECT t.tr(current_setting('oms.traceparent')) AS caller_trace_kept;
COMMIT;
SELECT oms._run_sagas(100, clock_timestamp()) > 0 AS ran;
SELECT status, t.timeline_traces(id) FROM oms.orders WHERE id = :'o4';
SELECT t.outbox_traces(:'o4');
RESET oms.payment_provider;

-- A dead-lettered event keeps its trace: replayed, it is traced again.
SELECT id AS e1 FROM oms.outbox WHERE aggregateid = :'o1' AND type = 'order.created' \gset
SELECT oms._relay_settle(ARRAY[:'e1']::uuid[], ARRAY['Broker: Message size too large'], ARRAY[true]) AS published;
SELECT t.tr(payload ->> 'traceparent') AS letter_trace, id AS dl FROM oms.dead_letters
WHERE kind = 'publish' AND payload ->> 'id' = :'e1' \gset
SELECT :'letter_trace' AS letter_trace;
SELECT oms_retry_dead_letter(:dl) ->> 'status' AS status;
SELECT t.tr(traceparent) AS replayed_trace, t.header(id) AS header FROM oms.outbox WHERE id = :'e1';

-- A saga's stored trace must stay valid: the engine sets it again.
SELECT split_part(t.err(format('UPDATE oms.sagas SET traceparent = %L WHERE order_id = %L', 'bogus', :'o2')),
				  ' (', 1) AS err;
SELECT oms._traceparent_problem(:'t1') AS valid, oms._traceparent_problem('00-x') AS invalid;

-- The log helper refuses an unknown level.
SELECT t.err($$SELECT oms._log('info', 'test_event', 'k', 'v')$$) AS err;
SELECT 'written' AS logged FROM (SELECT oms._log('log', 'test_event', 'k', 'v', 'empty', NULL)) AS l;

-- Leave nothing due for the suites that follow.
DELETE FROM oms.outbox;
