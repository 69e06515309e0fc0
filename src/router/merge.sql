-- merge.sql: the oms functions that run on every shard and merge what
-- they answer (docs/cluster.md, "Routing table"):
--   sums         oms_run_sagas, oms_release_expired_reservations,
--                oms_purge_idempotency_keys
--   unions       oms_worker_status, oms_saga_worker_status,
--                oms_maintenance_jobs, oms_customer_orders (newest first)
--   per shard    oms_relay_status, oms_run_maintenance,
--                oms_schedule_maintenance, oms_unschedule_maintenance:
--                {"shards": [{"shard": n, ...that shard's document}]}
--   merged       oms_health (worst status + every shard, unreachable ones
--                included), oms_metrics (shard="n" on every sample)
--   replicated   oms_set_location (every shard; the lowest shard's answer)
--   located      oms_retry_dead_letter (the shard holding the letter)
-- Shards name themselves with oms_shard_info() (oms core).  The wrappers
-- raise a shard's error in the shard's words like api.sql does.
--
-- requires: routing

-- The error handler every wrapper shares, written out once per function
-- (PL/pgSQL has no way to share a handler): see oms._reraise().

-- ------------------------------------------------------------------ sums
CREATE FUNCTION oms._all_run_sagas(max_steps integer)
RETURNS SETOF integer
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	TARGET oms_run_sagas;
$$;
COMMENT ON FUNCTION oms._all_run_sagas(integer) IS 'PL/Proxy call of oms_run_sagas on every shard';

CREATE FUNCTION @extschema@.oms_run_sagas(max_steps integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN (SELECT coalesce(pg_catalog.sum(n), 0)::integer FROM oms._all_run_sagas(max_steps) AS n);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_run_sagas(integer) IS
	'Runs due saga steps on every shard (up to max_steps on each); the number of steps run in all';

CREATE FUNCTION oms._all_release_expired_reservations()
RETURNS SETOF integer
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	TARGET oms_release_expired_reservations;
$$;
COMMENT ON FUNCTION oms._all_release_expired_reservations() IS
	'PL/Proxy call of oms_release_expired_reservations on every shard';

CREATE FUNCTION @extschema@.oms_release_expired_reservations()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN (SELECT coalesce(pg_catalog.sum(n), 0)::integer FROM oms._all_release_expired_reservations() AS n);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_release_expired_reservations() IS
	'Releases expired reservations on every shard; the number released in all';

CREATE FUNCTION oms._all_purge_idempotency_keys()
RETURNS SETOF bigint
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	TARGET oms_purge_idempotency_keys;
$$;
COMMENT ON FUNCTION oms._all_purge_idempotency_keys() IS
	'PL/Proxy call of oms_purge_idempotency_keys on every shard';

CREATE FUNCTION @extschema@.oms_purge_idempotency_keys()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN (SELECT coalesce(pg_catalog.sum(n), 0)::bigint FROM oms._all_purge_idempotency_keys() AS n);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_purge_idempotency_keys() IS
	'Purges expired idempotency keys on every shard; the number purged in all';

-- ---------------------------------------------------------------- unions
CREATE FUNCTION oms._all_worker_status()
RETURNS TABLE (database name, pid integer, alive boolean, last_loop timestamp with time zone, loops bigint,
			   units bigint, last_error text, last_error_at timestamp with time zone)
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	TARGET oms_worker_status;
$$;
COMMENT ON FUNCTION oms._all_worker_status() IS 'PL/Proxy call of oms_worker_status on every shard';

CREATE FUNCTION @extschema@.oms_worker_status()
RETURNS TABLE (database name, pid integer, alive boolean, last_loop timestamp with time zone, loops bigint,
			   units bigint, last_error text, last_error_at timestamp with time zone)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN QUERY SELECT * FROM oms._all_worker_status();
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_worker_status() IS
	'The oms main worker of every shard''s server, one row per shard';

CREATE FUNCTION oms._all_saga_worker_status()
RETURNS TABLE (database name, worker integer, role text, pid integer, alive boolean,
			   last_loop timestamp with time zone, loops bigint, units bigint, last_error text,
			   last_error_at timestamp with time zone, idle boolean)
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	TARGET oms_saga_worker_status;
$$;
COMMENT ON FUNCTION oms._all_saga_worker_status() IS 'PL/Proxy call of oms_saga_worker_status on every shard';

CREATE FUNCTION @extschema@.oms_saga_worker_status()
RETURNS TABLE (database name, worker integer, role text, pid integer, alive boolean,
			   last_loop timestamp with time zone, loops bigint, units bigint, last_error text,
			   last_error_at timestamp with time zone, idle boolean)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN QUERY SELECT * FROM oms._all_saga_worker_status();
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_saga_worker_status() IS
	'The saga workers of every shard''s server';

CREATE FUNCTION oms._all_maintenance_jobs(schedules jsonb)
RETURNS TABLE (task text, job_name text, schedule text, command text, schedule_sql text)
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	TARGET oms_maintenance_jobs;
$$;
COMMENT ON FUNCTION oms._all_maintenance_jobs(jsonb) IS 'PL/Proxy call of oms_maintenance_jobs on every shard';

CREATE FUNCTION @extschema@.oms_maintenance_jobs(schedules jsonb DEFAULT '{}')
RETURNS TABLE (task text, job_name text, schedule text, command text, schedule_sql text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	-- Job names carry the shard's database name: one set per shard.
	RETURN QUERY SELECT j.* FROM oms._all_maintenance_jobs(schedules) AS j ORDER BY j.job_name;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_maintenance_jobs(jsonb) IS
	'The pg_cron jobs oms_schedule_maintenance would create on every shard, each in its shard''s database';

CREATE FUNCTION oms._all_customer_orders(customer_id text, max_orders integer)
RETURNS SETOF jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	TARGET oms_customer_orders;
$$;
COMMENT ON FUNCTION oms._all_customer_orders(text, integer) IS 'PL/Proxy call of oms_customer_orders on every shard';

CREATE FUNCTION @extschema@.oms_customer_orders(customer_id text, max_orders integer DEFAULT 100)
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	-- Each shard answers its newest max_orders; the newest of those are
	-- the customer's newest over the cluster.
	RETURN QUERY
		SELECT o FROM oms._all_customer_orders(customer_id, max_orders) AS o
		ORDER BY (o ->> 'created_at')::timestamp with time zone DESC, (o ->> 'order_id')::uuid DESC
		LIMIT max_orders;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_customer_orders(text, integer) IS
	'A customer''s orders over every shard, one summary per row, newest first, at most max_orders';

-- ------------------------------------------------------------- per shard
-- Each shard's document with its shard number.
CREATE FUNCTION oms._all_relay_status(OUT shard integer, OUT doc jsonb)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT (oms_shard_info() ->> 'shard')::integer AS shard, oms_relay_status() AS doc;
$$;
COMMENT ON FUNCTION oms._all_relay_status() IS 'PL/Proxy call of oms_relay_status on every shard, with the shard''s number';

-- {"shards": [...]} plus the counters that add up over shards.
CREATE FUNCTION @extschema@.oms_relay_status()
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN (SELECT pg_catalog.jsonb_build_object(
				'pending', pg_catalog.sum((r.doc ->> 'pending')::bigint),
				'backing_off', pg_catalog.sum((r.doc ->> 'backing_off')::bigint),
				'dead_letters', pg_catalog.sum((r.doc ->> 'dead_letters')::bigint),
				'published_total', pg_catalog.sum((r.doc ->> 'published_total')::bigint),
				'batches_total', pg_catalog.sum((r.doc ->> 'batches_total')::bigint),
				'failed_attempts_total', pg_catalog.sum((r.doc ->> 'failed_attempts_total')::bigint),
				'shards', pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('shard', r.shard) || r.doc
											   ORDER BY r.shard))
			FROM oms._all_relay_status() AS r);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_relay_status() IS
	'The outbox relay of every shard: {"shards": [each shard''s status with its number]} and the counters summed';

CREATE FUNCTION oms._all_run_maintenance(task text, OUT shard integer, OUT doc jsonb)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT (oms_shard_info() ->> 'shard')::integer AS shard, oms_run_maintenance(task) AS doc;
$$;
COMMENT ON FUNCTION oms._all_run_maintenance(text) IS 'PL/Proxy call of oms_run_maintenance on every shard';

CREATE FUNCTION @extschema@.oms_run_maintenance(task text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN (SELECT pg_catalog.jsonb_build_object('shards',
				pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('shard', r.shard) || r.doc
									 ORDER BY r.shard))
			FROM oms._all_run_maintenance(task) AS r);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_run_maintenance(text) IS
	'Runs maintenance on every shard now: {"shards": [each shard''s result with its number]}';

CREATE FUNCTION oms._all_schedule_maintenance(schedules jsonb, OUT shard integer, OUT doc jsonb)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT (oms_shard_info() ->> 'shard')::integer AS shard, oms_schedule_maintenance(schedules) AS doc;
$$;
COMMENT ON FUNCTION oms._all_schedule_maintenance(jsonb) IS 'PL/Proxy call of oms_schedule_maintenance on every shard';

CREATE FUNCTION @extschema@.oms_schedule_maintenance(schedules jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN (SELECT pg_catalog.jsonb_build_object('shards',
				pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('shard', r.shard) || r.doc
									 ORDER BY r.shard))
			FROM oms._all_schedule_maintenance(schedules) AS r);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_schedule_maintenance(jsonb) IS
	'Schedules maintenance with pg_cron on every shard: {"shards": [each shard''s result with its number]}';

CREATE FUNCTION oms._all_unschedule_maintenance(OUT shard integer, OUT doc jsonb)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT (oms_shard_info() ->> 'shard')::integer AS shard, oms_unschedule_maintenance() AS doc;
$$;
COMMENT ON FUNCTION oms._all_unschedule_maintenance() IS 'PL/Proxy call of oms_unschedule_maintenance on every shard';

CREATE FUNCTION @extschema@.oms_unschedule_maintenance()
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN (SELECT pg_catalog.jsonb_build_object('shards',
				pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('shard', r.shard) || r.doc
									 ORDER BY r.shard))
			FROM oms._all_unschedule_maintenance() AS r);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_unschedule_maintenance() IS
	'Removes the maintenance jobs of every shard: {"shards": [each shard''s result with its number]}';

-- ------------------------------------------------------------ replicated
CREATE FUNCTION oms._all_set_location(code text, name text, priority integer, active boolean,
									  OUT shard integer, OUT doc jsonb)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT (oms_shard_info() ->> 'shard')::integer AS shard,
		   oms_set_location(code, name, priority, active) AS doc;
$$;
COMMENT ON FUNCTION oms._all_set_location(text, text, integer, boolean) IS
	'PL/Proxy call of oms_set_location on every shard';

-- Locations are replicated: every shard gets the call.  PL/Proxy runs
-- the calls in parallel, each committing on its shard: when one shard
-- refuses (bad input refuses on all of them alike) nothing changed there,
-- and a call that failed half way is repaired by calling again.
CREATE FUNCTION @extschema@.oms_set_location(code text, name text DEFAULT NULL, priority integer DEFAULT 0,
											 active boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN (SELECT r.doc FROM oms._all_set_location(code, name, priority, active) AS r
			ORDER BY r.shard LIMIT 1);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_set_location(text, text, integer, boolean) IS
	'Creates or changes a stock location on every shard (locations are replicated); the lowest shard''s document';

-- --------------------------------------------------------- dead letters
-- Dead-letter ids are a sequence per shard: the same number may exist on
-- several shards.  The letter retried is the one still open; none open, the
-- one already replayed (its shard says so); none at all, any shard says it
-- does not exist; open on two shards, the caller must go to the shard.
CREATE FUNCTION oms._all_dead_letter(id bigint, OUT first_partition integer, OUT status text)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT coalesce((oms_shard_info() -> 'partitions' ->> 0)::integer, 0) AS first_partition, d.status
	FROM oms.dead_letters AS d WHERE d.id = $1;
$$;
COMMENT ON FUNCTION oms._all_dead_letter(bigint) IS
	'Which shards hold a dead letter of this id, and its status there';

CREATE FUNCTION oms._on_retry_dead_letter(p_partition integer, id bigint)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON p_partition;
	SELECT oms_retry_dead_letter(id);
$$;
COMMENT ON FUNCTION oms._on_retry_dead_letter(integer, bigint) IS
	'PL/Proxy call of oms_retry_dead_letter on the shard owning a partition';

CREATE FUNCTION @extschema@.oms_retry_dead_letter(id bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_open integer[];
	v_any integer[];
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	IF oms_retry_dead_letter.id IS NOT NULL THEN
		SELECT pg_catalog.array_agg(d.first_partition ORDER BY d.first_partition) FILTER (WHERE d.status = 'open'),
			   pg_catalog.array_agg(d.first_partition ORDER BY d.first_partition)
		INTO v_open, v_any
		FROM oms._all_dead_letter(oms_retry_dead_letter.id) AS d;
	END IF;
	IF pg_catalog.cardinality(v_open) > 1 THEN
		RAISE EXCEPTION 'dead letter % is open on more than one shard', oms_retry_dead_letter.id
			USING ERRCODE = 'cardinality_violation',
				  DETAIL = 'Dead-letter ids are numbered per shard.',
				  HINT = 'Call oms_retry_dead_letter in the shard''s own database.';
	END IF;
	RETURN oms._on_retry_dead_letter(coalesce(v_open[1], v_any[1], 0), oms_retry_dead_letter.id);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_retry_dead_letter(bigint) IS
	'Replays a dead letter on the shard where it is open (ids are per shard; open on two shards is an error)';

-- ---------------------------------------------------------------- health
-- One call per shard (not RUN ON ALL): a shard that does not answer is
-- reported, not an error, and the others still are.
CREATE FUNCTION oms._on_health(p_partition integer, OUT shard integer, OUT doc jsonb)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON p_partition;
	SELECT (oms_shard_info() ->> 'shard')::integer AS shard, oms_health() AS doc;
$$;
COMMENT ON FUNCTION oms._on_health(integer) IS 'PL/Proxy call of oms_health on the shard owning a partition';

CREATE FUNCTION @extschema@.oms_health()
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_shard record;
	v_health record;
	v_shards jsonb := '[]';
	v_rank integer := 0;
	v_message text;
BEGIN
	FOR v_shard IN SELECT * FROM oms.cluster_shards() LOOP
		BEGIN
			SELECT * INTO STRICT v_health FROM oms._on_health(v_shard.first_partition);
			v_rank := GREATEST(v_rank, CASE v_health.doc ->> 'status' WHEN 'ok' THEN 0 WHEN 'degraded' THEN 1 ELSE 2 END);
			v_shards := v_shards || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
				'shard', v_health.shard, 'partitions', pg_catalog.to_jsonb(v_shard.partitions),
				'status', v_health.doc -> 'status', 'health', v_health.doc));
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT;
			v_shards := v_shards || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
				'shard', NULL, 'partitions', pg_catalog.to_jsonb(v_shard.partitions),
				'status', 'unreachable', 'error', v_message));
			v_rank := 2;
		END;
	END LOOP;
	IF v_shards = '[]' THEN
		v_rank := 2;
	END IF;
	RETURN pg_catalog.jsonb_build_object(
		'status', (ARRAY['ok', 'degraded', 'down'])[v_rank + 1],
		'router', pg_catalog.jsonb_build_object('database', pg_catalog.current_database(),
			'partition_count', (SELECT pg_catalog.count(*) FROM oms.cluster_shards() AS s, pg_catalog.unnest(s.partitions)),
			'shard_count', pg_catalog.jsonb_array_length(v_shards)),
		'shards', v_shards);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_health()
	IS 'Health of the cluster: the worst shard status (an unreachable shard counts as down) and every shard''s own health';

-- --------------------------------------------------------------- metrics
CREATE FUNCTION oms._all_metrics(OUT shard integer, OUT metrics text)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT (oms_shard_info() ->> 'shard')::integer AS shard, oms_metrics() AS metrics;
$$;
COMMENT ON FUNCTION oms._all_metrics() IS 'PL/Proxy call of oms_metrics on every shard, with the shard''s number';

-- Prometheus text: a family's HELP and TYPE once, then its samples from
-- every shard, each with a shard="n" label.  A line belongs to the family
-- of the last HELP/TYPE line above it.
CREATE FUNCTION @extschema@.oms_metrics()
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN (
		WITH lines AS (
			SELECT m.shard, l.n, l.line, l.line LIKE '#%' AS meta,
				   CASE WHEN l.line LIKE '# %' THEN pg_catalog.split_part(l.line, ' ', 3) END AS meta_family
			FROM oms._all_metrics() AS m,
				 pg_catalog.unnest(pg_catalog.string_to_array(m.metrics, E'\n')) WITH ORDINALITY AS l (line, n)
			WHERE l.line <> ''
		), grouped AS (
			SELECT *, pg_catalog.count(meta_family) OVER (PARTITION BY shard ORDER BY n) AS grp FROM lines
		), families AS (
			SELECT *, pg_catalog.first_value(meta_family) OVER (PARTITION BY shard, grp ORDER BY n) AS family FROM grouped
		), ranked AS (
			SELECT *, pg_catalog.min(ARRAY[coalesce(shard, -1), n::integer]) OVER (PARTITION BY family) AS family_pos,
				   pg_catalog.row_number() OVER (PARTITION BY family, line ORDER BY shard, n) AS copy
			FROM families
		)
		SELECT pg_catalog.string_agg(
				   CASE WHEN meta THEN line
						WHEN line ~ '^[^ {]+\{' THEN pg_catalog.regexp_replace(line, '\{', pg_catalog.format('{shard="%s",', shard))
						ELSE pg_catalog.regexp_replace(line, '^([^ ]+) ', pg_catalog.format('\1{shard="%s"} ', shard))
				   END, E'\n' ORDER BY family_pos, NOT meta, CASE WHEN meta THEN 0 ELSE shard END, n) || E'\n'
		FROM ranked
		WHERE NOT meta OR copy = 1);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_metrics() IS
	'Every shard''s metrics in the Prometheus text format, each sample labelled shard="n", HELP and TYPE once per family';

-- ---------------------------------------------------------------- grants
REVOKE ALL ON FUNCTION oms._all_run_sagas(integer), oms._all_release_expired_reservations(),
	oms._all_purge_idempotency_keys(), oms._all_worker_status(), oms._all_saga_worker_status(),
	oms._all_maintenance_jobs(jsonb), oms._all_customer_orders(text, integer), oms._all_relay_status(),
	oms._all_run_maintenance(text), oms._all_schedule_maintenance(jsonb), oms._all_unschedule_maintenance(),
	oms._all_set_location(text, text, integer, boolean), oms._all_dead_letter(bigint),
	oms._on_retry_dead_letter(integer, bigint), oms._on_health(integer), oms._all_metrics(),
	@extschema@.oms_run_sagas(integer), @extschema@.oms_release_expired_reservations(),
	@extschema@.oms_purge_idempotency_keys(), @extschema@.oms_worker_status(), @extschema@.oms_saga_worker_status(),
	@extschema@.oms_maintenance_jobs(jsonb), @extschema@.oms_customer_orders(text, integer),
	@extschema@.oms_relay_status(), @extschema@.oms_run_maintenance(text), @extschema@.oms_schedule_maintenance(jsonb),
	@extschema@.oms_unschedule_maintenance(), @extschema@.oms_set_location(text, text, integer, boolean),
	@extschema@.oms_retry_dead_letter(bigint), @extschema@.oms_health(), @extschema@.oms_metrics()
	FROM PUBLIC;
-- The same grants as oms gives the functions on a shard; the helpers go to
-- the same roles as the function they serve.
GRANT EXECUTE ON FUNCTION oms._all_run_sagas(integer), @extschema@.oms_run_sagas(integer),
	oms._all_release_expired_reservations(), @extschema@.oms_release_expired_reservations(),
	oms._all_purge_idempotency_keys(), @extschema@.oms_purge_idempotency_keys(),
	oms._all_maintenance_jobs(jsonb), @extschema@.oms_maintenance_jobs(jsonb),
	oms._all_run_maintenance(text), @extschema@.oms_run_maintenance(text),
	oms._all_schedule_maintenance(jsonb), @extschema@.oms_schedule_maintenance(jsonb),
	oms._all_unschedule_maintenance(), @extschema@.oms_unschedule_maintenance(),
	oms._all_set_location(text, text, integer, boolean), @extschema@.oms_set_location(text, text, integer, boolean),
	oms._all_dead_letter(bigint), oms._on_retry_dead_letter(integer, bigint), @extschema@.oms_retry_dead_letter(bigint)
	TO oms_admin;
GRANT EXECUTE ON FUNCTION oms._all_worker_status(), @extschema@.oms_worker_status(),
	oms._all_saga_worker_status(), @extschema@.oms_saga_worker_status(),
	oms._all_relay_status(), @extschema@.oms_relay_status(),
	oms._on_health(integer), @extschema@.oms_health(),
	oms._all_metrics(), @extschema@.oms_metrics()
	TO oms_reader, oms_admin;
GRANT EXECUTE ON FUNCTION oms._all_customer_orders(text, integer), @extschema@.oms_customer_orders(text, integer)
	TO oms_app, oms_reader;
