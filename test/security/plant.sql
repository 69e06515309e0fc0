-- test/security/plant.sql: what a database owner who is not a superuser
-- can plant in schema public to take over code that resolves names through
-- it.  Run as that owner, in a database with oms installed.
--
-- For every type of schema oms (enums, and the row types of its tables and
-- views): the comparison operators and || with exact argument types, which
-- PostgreSQL prefers over pg_catalog's polymorphic (anyenum, record,
-- anynonarray) ones, and functions of common built-in names taking the
-- type.  Each trap records who ran it and, when that is a superuser, makes
-- the owner a superuser: the escalation 0.1.0 allowed.  The records are
-- made where a rollback cannot undo them (a sequence, the server log),
-- since the code that trips a trap may roll back.  Every trap returns what
-- the built-in would, so a trap changes nothing but its records.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

-- The records live in a schema of their own, which rename.sql leaves alone.
CREATE SCHEMA trap;
GRANT USAGE ON SCHEMA trap TO PUBLIC;
CREATE SEQUENCE trap.superuser_hits;
CREATE SEQUENCE trap.other_hits;
GRANT USAGE, UPDATE ON SEQUENCE trap.superuser_hits, trap.other_hits TO PUBLIC;

-- search_path pinned: inside a trap, names resolve to the built-ins.
CREATE FUNCTION trap.hit(p_what text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
	v_super boolean := (SELECT r.rolsuper FROM pg_roles AS r WHERE r.rolname = current_user);
BEGIN
	IF v_super THEN
		PERFORM nextval('trap.superuser_hits');
		RAISE WARNING 'oms-trap: % ran as superuser % (backend %)', p_what, current_user,
			(SELECT a.backend_type FROM pg_stat_activity AS a WHERE a.pid = pg_backend_pid());
		EXECUTE format('ALTER ROLE %I SUPERUSER', (SELECT d.datdba::regrole::text FROM pg_database AS d
													 WHERE d.datname = current_database()));
	ELSE
		PERFORM nextval('trap.other_hits');
	END IF;
END;
$$;
GRANT EXECUTE ON FUNCTION trap.hit(text) TO PUBLIC;

DO $plant$
DECLARE
	v_type regtype;
	v_op record;
	v_fn record;
BEGIN
	FOR v_type IN
		SELECT t.oid::regtype FROM pg_type AS t
		WHERE t.typnamespace = 'oms'::regnamespace AND t.typtype IN ('e', 'c')
		ORDER BY 1
	LOOP
		FOR v_op IN SELECT * FROM (VALUES ('=', 'eq'), ('<>', 'ne'), ('<', 'lt'), ('>', 'gt'), ('<=', 'le'), ('>=', 'ge'))
								  AS o(op, name)
		LOOP
			EXECUTE format($f$CREATE FUNCTION public.trap_%s_%s(a %s, b %s) RETURNS boolean LANGUAGE plpgsql
							  SET search_path = pg_catalog AS $b$
							  BEGIN PERFORM trap.hit(%L); RETURN a %s b; END $b$$f$,
						   v_op.name, md5(v_type::text), v_type, v_type, v_op.op || ' ' || v_type, v_op.op);
			EXECUTE format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = public.trap_%s_%s)',
						   v_op.op, v_type, v_type, v_op.name, md5(v_type::text));
		END LOOP;
		-- text || T and T || text: 'saga.' || status, say.
		EXECUTE format($f$CREATE FUNCTION public.trap_lcat_%s(a text, b %s) RETURNS text LANGUAGE plpgsql
						  SET search_path = pg_catalog AS $b$
						  BEGIN PERFORM trap.hit(%L); RETURN a || b::text; END $b$$f$,
					   md5(v_type::text), v_type, 'text || ' || v_type);
		EXECUTE format('CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = %s, FUNCTION = public.trap_lcat_%s)',
					   v_type, md5(v_type::text));
		EXECUTE format($f$CREATE FUNCTION public.trap_rcat_%s(a %s, b text) RETURNS text LANGUAGE plpgsql
						  SET search_path = pg_catalog AS $b$
						  BEGIN PERFORM trap.hit(%L); RETURN a::text || b; END $b$$f$,
					   md5(v_type::text), v_type, v_type || ' || text');
		EXECUTE format('CREATE OPERATOR public.|| (LEFTARG = %s, RIGHTARG = text, FUNCTION = public.trap_rcat_%s)',
					   v_type, md5(v_type::text));
		-- Built-in names with the exact type: preferred over "any" and
		-- polymorphic arguments.
		FOR v_fn IN SELECT * FROM (VALUES
				('format', 'f text, a %s', 'text', 'format(f, a)'),
				('to_jsonb', 'a %s', 'jsonb', 'to_jsonb(a)'),
				('to_json', 'a %s', 'json', 'to_json(a)'),
				('jsonb_build_object', 'k text, a %s', 'jsonb', 'jsonb_build_object(k, a)'),
				('length', 'a %s', 'integer', 'length(a::text)'),
				('lower', 'a %s', 'text', 'lower(a::text)'),
				('upper', 'a %s', 'text', 'upper(a::text)'),
				('quote_literal', 'a %s', 'text', 'quote_literal(a)'),
				('array_append', 'a %s[], b %s', '%s[]', 'array_append(a, b)')) AS f(name, args, result, body)
		LOOP
			EXECUTE format($f$CREATE FUNCTION public.%s(%s) RETURNS %s LANGUAGE plpgsql
							  SET search_path = pg_catalog AS $b$
							  BEGIN PERFORM trap.hit(%L); RETURN %s; END $b$$f$,
						   v_fn.name, replace(v_fn.args, '%s', v_type::text), replace(v_fn.result, '%s', v_type::text),
						   v_fn.name || '(' || v_type || ')', v_fn.body);
		END LOOP;
	END LOOP;
END;
$plant$;

-- Aggregates over the enums (min(status) in a report, say).
DO $plant$
DECLARE
	v_type regtype;
BEGIN
	FOR v_type IN SELECT t.oid::regtype FROM pg_type AS t
				  WHERE t.typnamespace = 'oms'::regnamespace AND t.typtype = 'e' ORDER BY 1
	LOOP
		EXECUTE format($f$CREATE FUNCTION public.trap_smaller_%s(a %s, b %s) RETURNS %s LANGUAGE plpgsql
						  SET search_path = pg_catalog AS $b$
						  BEGIN PERFORM trap.hit(%L); RETURN CASE WHEN b < a THEN b ELSE a END; END $b$$f$,
					   md5(v_type::text), v_type, v_type, v_type, 'min(' || v_type || ')');
		EXECUTE format('CREATE AGGREGATE public.min(%s) (SFUNC = public.trap_smaller_%s, STYPE = %s)',
					   v_type, md5(v_type::text), v_type);
		EXECUTE format('CREATE AGGREGATE public.max(%s) (SFUNC = public.trap_smaller_%s, STYPE = %s)',
					   v_type, md5(v_type::text), v_type);
	END LOOP;
END;
$plant$;

SELECT count(*) AS operators_planted FROM pg_operator WHERE oprnamespace = 'public'::regnamespace;
SELECT count(*) AS functions_planted FROM pg_proc WHERE pronamespace = 'public'::regnamespace
	AND proowner = (SELECT datdba FROM pg_database WHERE datname = current_database());
