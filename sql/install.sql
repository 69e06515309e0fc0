-- install: the extension installs cleanly, with everything in place.
-- (pg_regress has already run CREATE EXTENSION oms.)
\set SHOW_CONTEXT never

SELECT extname, extversion FROM pg_extension WHERE extname = 'oms';

-- The API is callable unqualified with the default search_path.
SHOW search_path;
SELECT oms_transition_allowed('pending', 'processing');

-- Every function of the extension pins its search_path, C and internal
-- helpers included: the worker and pg_cron run them as a superuser, and
-- an operator planted in public for an oms type would otherwise beat
-- pg_catalog's.  No exceptions.
SELECT p.oid::regprocedure AS function_without_pinned_search_path
FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'oms')
  AND d.classid = 'pg_proc'::regclass
  AND d.deptype = 'e'
  AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)
ORDER BY 1;

-- No function body calls into the extension's schema (public, usually):
-- its owner, often the database owner, can rename it and put functions of
-- their own under the same names.  oms's own code calls schema oms only.
SELECT p.oid::regprocedure AS function_calling_the_extension_schema
FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'oms')
  AND d.classid = 'pg_proc'::regclass
  AND d.deptype = 'e'
  AND p.prosrc ~ (quote_ident((SELECT nspname FROM pg_namespace n JOIN pg_extension e ON e.extnamespace = n.oid
							   WHERE e.extname = 'oms')) || '\.oms_')
ORDER BY 1;

-- Every extension object carries a comment.
SELECT count(*) > 20 AS has_members
FROM pg_depend d
WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'oms') AND d.deptype = 'e';
SELECT pg_describe_object(d.classid, d.objid, 0) AS object_without_comment
FROM pg_depend d
WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'oms')
  AND d.deptype = 'e'
  AND obj_description(d.objid, (SELECT relname FROM pg_class WHERE oid = d.classid)) IS NULL
ORDER BY 1;

-- The public API functions, their security and volatility.
SELECT p.proname, p.prosecdef AS security_definer, p.provolatile
FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'oms\_%'
ORDER BY 1;

-- Nothing is granted to PUBLIC: no function executable, no table readable.
SELECT p.oid::regprocedure AS public_may_execute
FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'oms')
  AND d.classid = 'pg_proc'::regclass
  AND has_function_privilege('public', p.oid, 'EXECUTE')
ORDER BY 1;
SELECT c.oid::regclass AS public_may_read
FROM pg_class c
WHERE c.relnamespace = 'oms'::regnamespace AND c.relkind IN ('r', 'v')
  AND has_table_privilege('public', c.oid, 'SELECT')
ORDER BY 1;

-- The SQL enum and the C transition table list the same statuses in the
-- same order.
SELECT e.enumlabel AS enum_label, s.status AS c_status
FROM (SELECT enumlabel, enumsortorder, row_number() OVER (ORDER BY enumsortorder) AS n
	  FROM pg_enum WHERE enumtypid = 'oms.order_status'::regtype) e
FULL JOIN (SELECT status, row_number() OVER () AS n FROM oms._order_states()) s USING (n)
WHERE e.enumlabel IS DISTINCT FROM s.status;

-- Settings live under the reserved oms. prefix.
SELECT name, setting, unit, context FROM pg_settings WHERE name LIKE 'oms.%' ORDER BY name;
SET oms.no_such_setting = 1;

-- The extension drops and re-creates cleanly.
DROP EXTENSION oms;
SELECT count(*) AS oms_schemas FROM pg_namespace WHERE nspname = 'oms';
CREATE EXTENSION oms;
SELECT count(*) AS currencies FROM oms.currencies;
