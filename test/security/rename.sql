-- test/security/rename.sql: the database owner owns schema public (the
-- PostgreSQL 15 default), so they can rename it and put a schema of their
-- own in its place, with functions under the names of oms's API.  oms's
-- code must not call anything through that name: not the worker, not the
-- pg_cron jobs, not oms's own functions.  Run as that owner after plant.sql.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
ALTER SCHEMA public RENAME TO public_orig;
CREATE SCHEMA public;
GRANT USAGE ON SCHEMA public TO PUBLIC;
-- Every function of oms's API, with the same arguments, in the new public.
DO $rename$
DECLARE
	v_fn record;
BEGIN
	FOR v_fn IN
		SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
			   pg_get_function_result(p.oid) AS result, p.proretset
		FROM pg_proc AS p
		WHERE p.pronamespace = 'public_orig'::regnamespace AND p.proname LIKE 'oms\_%'
		  AND p.prokind = 'f'
	LOOP
		EXECUTE format($f$CREATE FUNCTION public.%I(%s) RETURNS %s LANGUAGE plpgsql
						  SET search_path = pg_catalog AS $b$
						  BEGIN PERFORM trap.hit(%L); RETURN%s; END $b$$f$,
					   v_fn.proname, v_fn.args, v_fn.result, 'renamed-schema ' || v_fn.proname,
					   CASE WHEN v_fn.proretset THEN '' ELSE ' NULL' END);
	END LOOP;
END;
$rename$;
SELECT count(*) AS api_functions_impersonated FROM pg_proc WHERE pronamespace = 'public'::regnamespace;
