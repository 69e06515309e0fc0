-- checks.sql: concatenated last.  The router's API against a shard's:
-- oms.api_differences() lists every public oms_* function whose name,
-- arguments, defaults, result, volatility or strictness differ between the
-- router and a shard, or that one side lacks, and every difference of the
-- order_status labels.  The router suite fails on any row, so oms cannot
-- gain a public function the router does not route.  Then the same safety
-- net as oms's checks.sql over the router's own functions.
--
-- requires: routing api merge views

CREATE FUNCTION oms._any_api(OUT signature text, OUT arguments text, OUT result text, OUT volatility "char",
							 OUT strict boolean)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ANY;
	SELECT pg_catalog.format('%s(%s)', p.proname, pg_catalog.oidvectortypes(p.proargtypes)) AS signature, pg_catalog.pg_get_function_arguments(p.oid) AS arguments,
		   pg_catalog.pg_get_function_result(p.oid) AS result, p.provolatile AS volatility, p.proisstrict AS strict
	FROM pg_catalog.pg_proc AS p
	JOIN pg_catalog.pg_depend AS d ON d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
		AND d.deptype = 'e'
	JOIN pg_catalog.pg_extension AS e ON e.oid = d.refobjid AND e.extname = 'oms'
	WHERE p.proname LIKE 'oms\_%'
	UNION ALL
	SELECT 'enum oms.order_status', pg_catalog.string_agg(x.enumlabel, ',' ORDER BY x.enumsortorder), NULL, NULL, NULL
	FROM pg_catalog.pg_enum AS x
	WHERE x.enumtypid = 'oms.order_status'::pg_catalog.regtype;
$$;
REVOKE ALL ON FUNCTION oms._any_api() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._any_api() TO oms_admin;
COMMENT ON FUNCTION oms._any_api() IS
	'PL/Proxy read of a shard''s public oms_* functions (signature, arguments with defaults, result, volatility, strictness) and order_status labels';

-- The functions of a shard the router deliberately does not offer: they
-- are about one shard (its identity), not about the cluster.
CREATE FUNCTION oms.api_differences()
RETURNS TABLE (function text, problem text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	WITH shard AS (
		SELECT * FROM oms._any_api()
		WHERE signature NOT IN ('oms_configure_shard(integer, integer, integer[])', 'oms_shard_info()')
	), router AS (
		SELECT pg_catalog.format('%s(%s)', p.proname, pg_catalog.oidvectortypes(p.proargtypes)) AS signature, pg_catalog.pg_get_function_arguments(p.oid) AS arguments,
			   pg_catalog.pg_get_function_result(p.oid) AS result, p.provolatile AS volatility, p.proisstrict AS strict
		FROM pg_catalog.pg_proc AS p
		JOIN pg_catalog.pg_depend AS d ON d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
			AND d.deptype = 'e'
		JOIN pg_catalog.pg_extension AS e ON e.oid = d.refobjid AND e.extname = 'oms_router'
		WHERE p.proname LIKE 'oms\_%'
		UNION ALL
		SELECT 'enum oms.order_status', pg_catalog.string_agg(x.enumlabel, ',' ORDER BY x.enumsortorder), NULL, NULL, NULL
		FROM pg_catalog.pg_enum AS x
		WHERE x.enumtypid = 'oms.order_status'::pg_catalog.regtype
	)
	SELECT coalesce(s.signature, r.signature),
		   CASE WHEN r.signature IS NULL THEN 'on the shards, not on the router'
				WHEN s.signature IS NULL THEN 'on the router, not on the shards'
				ELSE pg_catalog.concat_ws('; ',
					CASE WHEN s.arguments IS DISTINCT FROM r.arguments
						 THEN pg_catalog.format('arguments: shard (%s), router (%s)', s.arguments, r.arguments) END,
					CASE WHEN s.result IS DISTINCT FROM r.result
						 THEN pg_catalog.format('result: shard %s, router %s', s.result, r.result) END,
					CASE WHEN s.volatility IS DISTINCT FROM r.volatility
						 THEN pg_catalog.format('volatility: shard %s, router %s', s.volatility, r.volatility) END,
					CASE WHEN s.strict IS DISTINCT FROM r.strict
						 THEN pg_catalog.format('strict: shard %s, router %s', s.strict, r.strict) END)
		   END
	FROM shard AS s FULL JOIN router AS r ON r.signature = s.signature
	WHERE r.signature IS NULL OR s.signature IS NULL
	   OR (s.arguments, s.result, s.volatility, s.strict) IS DISTINCT FROM (r.arguments, r.result, r.volatility, r.strict)
	ORDER BY 1;
$$;
REVOKE ALL ON FUNCTION oms.api_differences() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms.api_differences() TO oms_admin;
COMMENT ON FUNCTION oms.api_differences() IS
	'Where the router''s oms_* functions differ from a shard''s (missing on either side, arguments, defaults, result, volatility, strictness, order_status labels); empty when the router routes the whole API';

DO $$
DECLARE
	v_bad text;
BEGIN
	SELECT pg_catalog.string_agg(p.oid::pg_catalog.regprocedure::text, ', ') INTO v_bad
	FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_proc AS p ON p.oid = d.objid
	WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.deptype = 'e'
	  AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension AS e WHERE e.extname = 'oms_router')
	  AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false);
	IF v_bad IS NOT NULL THEN
		RAISE EXCEPTION 'oms_router functions without SET search_path = pg_catalog, pg_temp: %', v_bad;
	END IF;

	SELECT pg_catalog.string_agg(p.oid::pg_catalog.regprocedure::text, ', ') INTO v_bad
	FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_proc AS p ON p.oid = d.objid
	WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.deptype = 'e'
	  AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension AS e WHERE e.extname = 'oms_router')
	  AND (p.proacl IS NULL
		   OR EXISTS (SELECT FROM pg_catalog.aclexplode(p.proacl) AS a
					  WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'));
	IF v_bad IS NOT NULL THEN
		RAISE EXCEPTION 'oms_router functions executable by PUBLIC: %', v_bad;
	END IF;

	SELECT pg_catalog.string_agg(o.objid::pg_catalog.regprocedure::text, ', ') INTO v_bad
	FROM pg_catalog.pg_depend AS o
	WHERE o.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND o.deptype = 'e'
	  AND o.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension AS e WHERE e.extname = 'oms_router')
	  AND pg_catalog.obj_description(o.objid, 'pg_proc') IS NULL;
	IF v_bad IS NOT NULL THEN
		RAISE EXCEPTION 'oms_router functions without a comment: %', v_bad;
	END IF;
END;
$$;
