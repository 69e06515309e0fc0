\set oms_helpers_echo :ECHO \set ECHO none
-- sql/include/helpers.sql: the helpers several regress tests share, in
-- schema t.  Each test loads this file itself at its top, so it runs alone,
-- in a fresh database, in any order:
--   \getenv abs_srcdir PG_ABS_SRCDIR
--   \i :abs_srcdir/sql/include/helpers.sql
-- (pg_regress feeds a test to psql on standard input, where \ir resolves
-- against the working directory; PG_ABS_SRCDIR is the absolute --inputdir.)
-- Loading it again changes nothing.  It is not echoed into the test's
-- output (the first line saves psql's ECHO and turns it off; the last lines
-- restore it): the definitions live here, once.  A helper one test alone uses
-- stays in that test.
SET client_min_messages = warning;

CREATE SCHEMA IF NOT EXISTS t;
GRANT USAGE ON SCHEMA t TO PUBLIC;

-- Runs a statement and returns its SQLSTATE and message (with the DETAIL)
-- instead of failing.
CREATE OR REPLACE FUNCTION t.err(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	detail text;
BEGIN
	EXECUTE sql;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ': ' || SQLERRM || coalesce(nullif(' (' || detail || ')', ' ()'), '');
END;
$$;

-- Saga helpers: the saga and step states of an order, its event types, its
-- outbox events, and a new paid order.
CREATE OR REPLACE FUNCTION t.saga(p_order uuid) RETURNS TABLE (saga text, steps text) LANGUAGE sql AS $$
	SELECT s.status || coalesce('/' || s.outcome, '') || ' at step ' || s.step_no,
		   string_agg(t.name || ':' || t.status || '(' || t.attempts || coalesce('/' || nullif(t.compensation_attempts, 0), '') || ')',
					  ' ' ORDER BY t.step_no)
	FROM oms.sagas s JOIN oms.saga_steps t ON t.saga_id = s.id
	WHERE s.order_id = p_order AND s.kind = 'fulfilment'
	GROUP BY s.id;
$$;
CREATE OR REPLACE FUNCTION t.events(p_order uuid) RETURNS text LANGUAGE sql AS $$
	SELECT string_agg(e.event_type, ' ' ORDER BY e.seq) FROM oms.order_events e WHERE e.order_id = p_order;
$$;
CREATE OR REPLACE FUNCTION t.outbox(p_order uuid) RETURNS text LANGUAGE sql AS $$
	SELECT string_agg(x.seq || ':' || x.type, ' ' ORDER BY x.seq) FROM oms.outbox x WHERE x.aggregateid = p_order;
$$;
CREATE OR REPLACE FUNCTION t.new_order(p_customer text, p_items jsonb, p_method text) RETURNS uuid LANGUAGE sql AS $$
	SELECT (oms_pay_order((oms_create_order(p_customer, p_items) ->> 'order_id')::uuid, p_method) ->> 'order_id')::uuid;
$$;

RESET client_min_messages;
\set ECHO :oms_helpers_echo \unset oms_helpers_echo
