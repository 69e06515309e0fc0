-- privileges: nothing for PUBLIC; oms_app calls the API without touching
-- tables, oms_reader reads, oms_admin operates.
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql

SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'oms\_%' ORDER BY 1;
SELECT r.rolname AS member, m.rolname AS of_role
FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.member JOIN pg_roles m ON m.oid = a.roleid
WHERE r.rolname = 'oms_admin' ORDER BY 2;

CREATE ROLE priv_app LOGIN IN ROLE oms_app;
CREATE ROLE priv_reader LOGIN IN ROLE oms_reader;
CREATE ROLE priv_admin LOGIN IN ROLE oms_admin;
CREATE ROLE priv_nobody LOGIN;

-- What each role may execute.
SELECT p.proname,
	   has_function_privilege('priv_app', p.oid, 'EXECUTE') AS app,
	   has_function_privilege('priv_reader', p.oid, 'EXECUTE') AS reader,
	   has_function_privilege('priv_admin', p.oid, 'EXECUTE') AS admin,
	   has_function_privilege('priv_nobody', p.oid, 'EXECUTE') AS nobody
FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'oms\_%'
ORDER BY 1;

-- What each role may do with each table.
SELECT c.relname,
	   array_to_string(ARRAY(SELECT priv FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) priv
							 WHERE has_table_privilege('priv_app', c.oid, priv)), ',') AS app,
	   array_to_string(ARRAY(SELECT priv FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) priv
							 WHERE has_table_privilege('priv_reader', c.oid, priv)), ',') AS reader,
	   array_to_string(ARRAY(SELECT priv FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) priv
							 WHERE has_table_privilege('priv_nobody', c.oid, priv)), ',') AS nobody
FROM pg_class c
WHERE c.relnamespace = 'oms'::regnamespace AND c.relkind IN ('r', 'v')
ORDER BY 1;

-- The application role creates and cancels orders through the API...
SET ROLE priv_app;
SELECT oms_create_order('priv-1', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', 'priv-key') ->> 'order_id' AS id \gset
SELECT oms_get_order(:'id') ->> 'status' AS status;
SELECT oms_cancel_order(:'id', 'by app') ->> 'status' AS status;
SELECT count(*) AS timeline_entries FROM oms_order_timeline(:'id');
SELECT oms_format_money(1999, 'USD') AS formatted;
-- ...but cannot write or read the tables directly.
SELECT t.err($$INSERT INTO oms.orders (customer_id, currency, total) VALUES ('x', 'USD', 0)$$);
SELECT t.err(format('UPDATE oms.orders SET status = %L WHERE id = %L', 'confirmed', :'id'));
SELECT t.err(format('DELETE FROM oms.order_events WHERE order_id = %L', :'id'));
SELECT t.err($$INSERT INTO oms.outbox (aggregatetype, aggregateid, type, payload, seq) VALUES ('order', gen_random_uuid(), 'x', '{}', 1)$$);
SELECT t.err($$UPDATE oms.idempotency_keys SET response = '{}'$$);
SELECT t.err($$SELECT count(*) FROM oms.orders$$);
SELECT t.err($$SELECT oms_purge_idempotency_keys()$$);
-- Nor can it reach the internal helpers the API is built from.
SELECT t.err($$SELECT oms._idempotency_finish('priv-key', 'oms_create_order', '\x00', '{}')$$);
SELECT t.err($$SELECT oms._record_change(NULL, 'x', NULL, '{}', '{}')$$);
RESET ROLE;

-- The reader reads tables and views, and cannot change anything.
SET ROLE priv_reader;
SELECT status FROM oms.orders WHERE id = :'id';
SELECT count(*) AS transitions FROM oms.order_transitions;
SELECT oms_get_order(:'id') ->> 'status' AS status;
SELECT t.err($$SELECT oms_create_order('priv-2', '[{"sku": "A", "quantity": 1, "unit_price": 1}]')$$);
SELECT t.err(format('SELECT oms_cancel_order(%L)', :'id'));
SELECT t.err($$DELETE FROM oms.orders$$);
RESET ROLE;

-- A role without oms roles can do nothing at all.
SET ROLE priv_nobody;
SELECT t.err($$SELECT oms_create_order('priv-3', '[{"sku": "A", "quantity": 1, "unit_price": 1}]')$$);
SELECT t.err(format('SELECT oms_get_order(%L)', :'id'));
SELECT t.err($$SELECT * FROM oms.order_transitions$$);
RESET ROLE;

-- The admin operates maintenance functions.
SET ROLE priv_admin;
SELECT oms_purge_idempotency_keys() >= 0 AS purge_ran;
SELECT oms_create_order('priv-4', '[{"sku": "A", "quantity": 1, "unit_price": 1}]') ->> 'status' AS admin_can_order;
RESET ROLE;

-- The API runs as its owner with a pinned search_path: a hostile object
-- earlier in the caller's search_path is not picked up.
CREATE SCHEMA hostile;
GRANT USAGE ON SCHEMA hostile TO priv_app;
CREATE FUNCTION hostile.jsonb_typeof(jsonb) RETURNS text
	LANGUAGE sql AS $$ SELECT 'object' $$;
GRANT EXECUTE ON FUNCTION hostile.jsonb_typeof(jsonb) TO priv_app;
SET ROLE priv_app;
SET search_path = hostile, pg_catalog, public;
SELECT jsonb_typeof('[1]') AS hostile_answer;
SELECT t.err($$SELECT oms_create_order('priv-5', '[{"sku": "A", "quantity": 1, "unit_price": 1}]', 'USD', NULL, '[1]')$$);
RESET search_path;
RESET ROLE;
DROP SCHEMA hostile CASCADE;

DROP OWNED BY priv_app, priv_reader, priv_admin, priv_nobody;
DROP ROLE priv_app, priv_reader, priv_admin, priv_nobody;
