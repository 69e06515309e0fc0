-- oms upgrade script 0.2.0 -> 0.3.0: sagas at the speed of the database
-- (parallel saga workers, a lean step path, availability in O(1), a
-- faster relay).  Frozen once 0.3.0 is released; later changes go into the
-- next script.  test/suites/upgrade.sh proves that a database updated with
-- this script has the same catalog as a fresh install of 0.3.0.

\echo Use "ALTER EXTENSION oms UPDATE TO '0.3.0'" to load this file. \quit

-- ALTER EXTENSION runs this script with the extension's schema (usually
-- public) first in search_path, where a database owner may have planted
-- operators for oms types: resolve nothing through it.
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

--
-- Inventory: availability in O(1).
--

-- (inventory: end)

--
-- The saga engine: the lean step path.
--

-- (saga engine: end)

--
-- The worker: parallel saga workers.
--

-- (worker: end)

--
-- The outbox relay.
--

-- (relay: end)

--
-- The safety net of the fresh script (src/sql/checks.sql).
--

DO $$
DECLARE
	v_bad text;
BEGIN
	SELECT pg_catalog.string_agg(p.oid::pg_catalog.regprocedure::text, ', ') INTO v_bad
	FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_proc AS p ON p.oid = d.objid
	WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.deptype = 'e'
	  AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension AS e WHERE e.extname = 'oms')
	  AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false);
	IF v_bad IS NOT NULL THEN
		RAISE EXCEPTION 'oms functions without SET search_path = pg_catalog, pg_temp: %', v_bad;
	END IF;

	SELECT pg_catalog.string_agg(p.oid::pg_catalog.regprocedure::text, ', ') INTO v_bad
	FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_proc AS p ON p.oid = d.objid
	WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.deptype = 'e'
	  AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension AS e WHERE e.extname = 'oms')
	  AND (p.proacl IS NULL
		   OR EXISTS (SELECT FROM pg_catalog.aclexplode(p.proacl) AS a
					  WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'));
	IF v_bad IS NOT NULL THEN
		RAISE EXCEPTION 'oms functions executable by PUBLIC: %', v_bad;
	END IF;
END;
$$;
