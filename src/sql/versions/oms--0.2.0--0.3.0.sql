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

-- The claim renders the Kafka records in C (src/relay.c), the code the
-- relay runs itself; same signature and rows as before.
CREATE OR REPLACE FUNCTION oms._relay_claim(p_limit integer)
RETURNS TABLE (id uuid, topic text, key text, value text, headers text[], aggregatetype text,
			   aggregateid uuid, seq bigint)
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_relay_claim_sql'
LANGUAGE c STABLE;

-- An all-acknowledged batch is settled with one DELETE by primary key.
CREATE OR REPLACE FUNCTION oms._relay_settle(p_ids uuid[], p_errors text[], p_permanent boolean[])
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_published integer;
	v_dead integer;
	v_max integer := pg_catalog.current_setting('oms.publish_max_attempts')::integer;
BEGIN
	-- The usual batch, everything acknowledged: one DELETE through the
	-- primary key, which looks the sorted ids up in one index pass, and no
	-- per-aggregate bookkeeping (that only matters behind a failure).
	IF pg_catalog.cardinality(pg_catalog.array_remove(p_errors, NULL)) = 0 THEN
		DELETE FROM oms.outbox AS o WHERE o.id = ANY (p_ids);
		GET DIAGNOSTICS v_published = ROW_COUNT;
		RETURN v_published;
	END IF;

	WITH batch AS (
		SELECT r.id, r.error, o.aggregatetype, o.aggregateid, o.seq
		FROM ROWS FROM (pg_catalog.unnest(p_ids), pg_catalog.unnest(p_errors)) AS r(id, error)
		JOIN oms.outbox AS o ON o.id = r.id
	), first_failure AS (
		SELECT b.aggregatetype, b.aggregateid, pg_catalog.min(b.seq) AS seq
		FROM batch AS b WHERE b.error IS NOT NULL
		GROUP BY 1, 2
	), published AS (
		DELETE FROM oms.outbox AS o
		USING batch AS b
		LEFT JOIN first_failure AS f ON f.aggregatetype = b.aggregatetype AND f.aggregateid = b.aggregateid
		WHERE o.id = b.id AND b.error IS NULL AND (f.seq IS NULL OR b.seq < f.seq)
		RETURNING 1
	)
	SELECT pg_catalog.count(*) INTO v_published FROM published;

	-- Undeliverable: permanent errors at once, others after their last attempt.
	WITH failed AS (
		SELECT r.id, r.error, r.permanent
		FROM ROWS FROM (pg_catalog.unnest(p_ids), pg_catalog.unnest(p_errors), pg_catalog.unnest(p_permanent)) AS r(id, error, permanent)
		WHERE r.error IS NOT NULL
	), dead AS (
		DELETE FROM oms.outbox AS o
		USING failed AS f
		WHERE o.id = f.id AND (f.permanent OR o.attempts + 1 >= v_max)
		RETURNING o.*, f.error, f.permanent
	), letters AS (
		INSERT INTO oms.dead_letters (kind, order_id, step, error, payload)
		SELECT 'publish', CASE WHEN d.aggregatetype = 'order' THEN d.aggregateid END, d.type,
			   pg_catalog.jsonb_build_object('message', d.error, 'permanent', d.permanent,
											 'attempt', d.attempts + 1, 'at', pg_catalog.now()),
			   pg_catalog.jsonb_build_object('id', d.id, 'aggregatetype', d.aggregatetype,
											 'aggregateid', d.aggregateid, 'type', d.type, 'payload', d.payload,
											 'seq', d.seq, 'created_at', d.created_at)
			   || CASE WHEN d.traceparent IS NOT NULL
					   THEN pg_catalog.jsonb_build_object('traceparent', d.traceparent) ELSE '{}'::jsonb END
		FROM dead AS d
		RETURNING id, step, error, payload
	)
	-- One line per dead-lettered event: an operator must replay or drop it.
	SELECT pg_catalog.count(oms._log('warning', 'event_dead_lettered',
			'event_id', l.payload ->> 'id', 'aggregatetype', l.payload ->> 'aggregatetype',
			'aggregateid', l.payload ->> 'aggregateid', 'type', l.step, 'seq', l.payload ->> 'seq',
			'attempt', l.error ->> 'attempt', 'permanent', l.error ->> 'permanent',
			'dead_letter_id', l.id::text, 'message', l.error ->> 'message'))
	INTO v_dead
	FROM letters AS l;

	UPDATE oms.outbox AS o
	SET attempts = o.attempts + 1, last_error = r.error,
		next_attempt_at = pg_catalog.now() + oms._backoff(o.attempts + 1)
	FROM ROWS FROM (pg_catalog.unnest(p_ids), pg_catalog.unnest(p_errors)) AS r(id, error)
	WHERE o.id = r.id AND r.error IS NOT NULL;

	RETURN v_published;
END;
$$;
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
