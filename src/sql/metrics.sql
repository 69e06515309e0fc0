-- metrics.sql: metrics for Prometheus.  The view oms.metrics holds one row
-- per sample of the current database; oms_metrics() renders it in the
-- Prometheus text exposition format, and the queries file of
-- prometheus-postgres-exporter (monitoring/postgres_exporter/) reads the
-- same view, so both expose the same names, labels and values.  The view
-- calls the shared-memory status functions of worker.sql, relay.sql and
-- inbox.sql, which must exist before it.
--
-- Counters are monotonic by construction: they count rows that are never
-- deleted (orders, sagas, saga steps, dead letters; only their parent order
-- can take them away) or they are shared-memory counters, which restart
-- from zero only with the server (Prometheus treats a drop as a reset).
--
-- requires: schema saga inbox relay

-- The catalogue of metric families, in exposition order.  oms_metrics()
-- prints HELP and TYPE from here, also for a family with no sample.
-- ROWS: the function is not inlined (its search_path is pinned), and the
-- default estimate of 1000 rows makes plans of the view cost enough for JIT.
CREATE FUNCTION oms._metric_families()
RETURNS TABLE (family text, type text, help text, ord integer)
LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 26
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT f.family, f.type, f.help, f.ord
	FROM (VALUES
		(1, 'oms_orders_by_status', 'gauge', 'Orders in each status.'),
		(2, 'oms_orders_created_total', 'counter', 'Orders created.'),
		(3, 'oms_sagas_started_total', 'counter', 'Sagas started, by kind (fulfilment, refund).'),
		(4, 'oms_saga_outcomes_total', 'counter', 'Sagas finished, by kind and outcome (confirmed, refunded, failed, canceled).'),
		(5, 'oms_sagas_in_flight', 'gauge', 'Sagas running or compensating.'),
		(6, 'oms_sagas_stuck', 'gauge', 'Sagas whose compensation could not finish and waits for an operator.'),
		(7, 'oms_saga_oldest_due_age_seconds', 'gauge', 'How long the most overdue saga step has been due; 0 when none is due.'),
		(8, 'oms_saga_step_duration_seconds', 'histogram', 'Time from the first attempt of a saga step to its successful completion, retries and waits included.'),
		(9, 'oms_saga_step_retries_total', 'counter', 'Saga step attempts after the first one (forward direction).'),
		(10, 'oms_outbox_pending_events', 'gauge', 'Events in the outbox not yet acknowledged by Kafka.'),
		(11, 'oms_outbox_oldest_pending_age_seconds', 'gauge', 'Age of the oldest event in the outbox; 0 when the outbox is empty.'),
		(12, 'oms_outbox_backing_off_events', 'gauge', 'Outbox events waiting for their next attempt after a failed publish.'),
		(13, 'oms_relay_published_events_total', 'counter', 'Events acknowledged by Kafka since the server started.'),
		(14, 'oms_relay_publish_failures_total', 'counter', 'Failed publish attempts since the server started.'),
		(15, 'oms_relay_batches_total', 'counter', 'Relay batches settled since the server started.'),
		(16, 'oms_relay_breaker_open', 'gauge', '1 while the relay circuit breaker is open or half open, else 0.'),
		(17, 'oms_dead_letters_open', 'gauge', 'Dead letters not replayed, by kind.'),
		(18, 'oms_dead_letters_created_total', 'counter', 'Dead letters created, by kind.'),
		(19, 'oms_worker_up', 'gauge', '1 while the background worker of this database runs, else 0.'),
		(20, 'oms_worker_last_loop_age_seconds', 'gauge', 'Time since the worker of this database last looped; no sample before its first loop.'),
		(21, 'oms_worker_loops_total', 'counter', 'Worker loops since the server started.'),
		(22, 'oms_worker_units_total', 'counter', 'Units of work (saga steps and similar) the workers of this database did since the server started.'),
		(23, 'oms_saga_workers_up', 'gauge', 'Processes of this database that run saga steps (the main worker included), of oms.saga_workers.'),
		(24, 'oms_inbox_replies_total', 'counter', 'Payment replies consumed since the server started, by result (applied, duplicate, late, rejected, other).'),
		(25, 'oms_inbox_reply_failures_total', 'counter', 'Payment reply transactions that failed and were retried since the server started.'),
		(26, 'oms_inbox_lag_messages', 'gauge', 'Payment replies waiting in Kafka behind the consumer; no sample while unknown.')
	) AS f(ord, family, type, help);
$$;
COMMENT ON FUNCTION oms._metric_families() IS
	'The metric families of oms.metrics and oms_metrics(), in exposition order: name, type (counter, gauge, histogram) and help text';

-- Upper bounds of the saga step duration histogram, in seconds.  Steps of
-- the built-in provider take milliseconds; remote payments and retries
-- with backoff take seconds to minutes.
CREATE FUNCTION oms._metric_step_buckets()
RETURNS double precision[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT '{0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,300,900,3600}'::double precision[];
$$;
COMMENT ON FUNCTION oms._metric_step_buckets() IS
	'Upper bounds (le) in seconds of the buckets of oms_saga_step_duration_seconds, ascending; +Inf comes on top';

/*
 * One row per sample.  Each arm of the UNION ALL names its family as a
 * constant, so a query for some families (the exporter's) plans away the
 * other arms, and the CTEs only those arms read are never run.  Each table
 * is read once per full scrape.
 */
CREATE VIEW oms.metrics AS
WITH
	order_counts AS MATERIALIZED (
		SELECT o.status, pg_catalog.count(*) AS n
		FROM oms.orders AS o
		GROUP BY o.status),
	saga_counts AS MATERIALIZED (
		SELECT s.kind, s.status, s.outcome, pg_catalog.count(*) AS n
		FROM oms.sagas AS s
		GROUP BY s.kind, s.status, s.outcome),
	saga_kinds AS (
		SELECT k.kind FROM (VALUES ('fulfilment'), ('refund')) AS k(kind)
		UNION
		SELECT c.kind FROM saga_counts AS c),
	step_names AS (
		SELECT k.kind, n.step
		FROM (VALUES ('fulfilment'), ('refund')) AS k(kind),
			 pg_catalog.unnest(oms._saga_step_names(k.kind)) AS n(step)),
	-- A step counts in the histogram once it completed successfully: done,
	-- or done and later compensated.  A step that failed also gets a
	-- completion time and may be compensated too; its saga_failed dead
	-- letter, written in the same transaction, tells it apart (a saga has
	-- at most one, so the join adds no rows).  Step names are unique across
	-- saga kinds, so the kind comes from the name and oms.sagas, as large
	-- as the steps table, is not joined.  One pass groups the steps by the
	-- first histogram bucket that holds them (1 .. n, n + 1 for +Inf only;
	-- NULL when not counted): width_bucket over the negated bounds counts
	-- the bounds >= seconds, as le means "less or equal".
	step_groups AS MATERIALIZED (
		SELECT n.kind, r.step,
			   pg_catalog.cardinality(oms._metric_step_buckets()) + 1
			   - pg_catalog.width_bucket(-r.seconds,
					ARRAY(SELECT -b FROM pg_catalog.unnest(oms._metric_step_buckets()) AS b ORDER BY 1)) AS first,
			   pg_catalog.count(*) AS n, pg_catalog.sum(r.seconds) AS seconds,
			   pg_catalog.sum(r.retries) AS retries
		FROM (SELECT t.name AS step,
					 GREATEST(t.attempts - 1, 0) AS retries,
					 CASE WHEN t.completed_at IS NOT NULL AND d.id IS NULL AND t.status IN ('done', 'compensated')
						  THEN GREATEST(EXTRACT(epoch FROM t.completed_at - t.first_started_at), 0)::double precision
					 END AS seconds
			  FROM oms.saga_steps AS t
			  LEFT JOIN oms.dead_letters AS d
					 ON d.kind = 'saga_failed' AND d.saga_id = t.saga_id AND d.step = t.name) AS r
		JOIN (SELECT k.kind, pg_catalog.unnest(oms._saga_step_names(k.kind)) AS step
			  FROM (VALUES ('fulfilment'), ('refund')) AS k(kind)) AS n ON n.step = r.step
		GROUP BY 1, 2, 3),
	step_first_bucket AS (
		SELECT g.kind, g.step, g.first, g.n, g.seconds
		FROM step_groups AS g
		WHERE g.first IS NOT NULL),
	dead_letter_counts AS MATERIALIZED (
		SELECT d.kind, pg_catalog.count(*) AS n, pg_catalog.count(*) FILTER (WHERE d.status = 'open') AS open
		FROM oms.dead_letters AS d
		GROUP BY d.kind),
	dead_letter_kinds AS (
		SELECT k.kind
		FROM (VALUES ('saga_failed'), ('compensation_stuck'), ('publish'), ('reply'), ('late_reply')) AS k(kind)
		UNION
		SELECT c.kind FROM dead_letter_counts AS c),
	outbox AS MATERIALIZED (
		SELECT * FROM oms._relay_backlog()),
	relay AS MATERIALIZED (
		SELECT * FROM oms._relay_shmem_status()),
	worker AS MATERIALIZED (
		SELECT pg_catalog.bool_or(w.alive) AS alive, pg_catalog.max(w.last_loop) AS last_loop,
			   pg_catalog.sum(w.loops) AS loops
		FROM @extschema@.oms_worker_status() AS w
		WHERE w.database = pg_catalog.current_database()),
	-- Every process's units: the saga workers' steps count as the worker's work.
	saga_workers AS MATERIALIZED (
		SELECT pg_catalog.count(*) FILTER (WHERE w.alive) AS up, pg_catalog.sum(w.units) AS units
		FROM @extschema@.oms_saga_worker_status() AS w
		WHERE w.database = pg_catalog.current_database()),
	inbox AS MATERIALIZED (
		SELECT oms._inbox_shmem_status() AS j)
SELECT m.family || m.suffix AS metric, m.family, f.type, f.help, m.labels, m.value::double precision AS value
FROM (
	SELECT 'oms_orders_by_status'::text AS family, ''::text AS suffix,
		   pg_catalog.jsonb_build_object('status', e.status) AS labels,
		   COALESCE(c.n, 0)::double precision AS value
	FROM pg_catalog.unnest(pg_catalog.enum_range(NULL::oms.order_status)) AS e(status)
	LEFT JOIN order_counts AS c ON c.status = e.status
	UNION ALL
	SELECT 'oms_orders_created_total', '', '{}', COALESCE(pg_catalog.sum(c.n), 0)
	FROM order_counts AS c
	UNION ALL
	SELECT 'oms_sagas_started_total', '', pg_catalog.jsonb_build_object('kind', k.kind),
		   COALESCE((SELECT pg_catalog.sum(c.n) FROM saga_counts AS c WHERE c.kind = k.kind), 0)
	FROM saga_kinds AS k
	UNION ALL
	SELECT 'oms_saga_outcomes_total', '', pg_catalog.jsonb_build_object('kind', o.kind, 'outcome', o.outcome),
		   COALESCE(pg_catalog.sum(c.n), 0)
	FROM (SELECT x.kind, x.outcome
		  FROM (VALUES ('fulfilment', 'confirmed'), ('fulfilment', 'failed'), ('fulfilment', 'canceled'),
					   ('refund', 'refunded'), ('refund', 'failed')) AS x(kind, outcome)
		  UNION
		  SELECT c.kind, c.outcome FROM saga_counts AS c
		  WHERE c.status IN ('completed', 'compensated') AND c.outcome IS NOT NULL) AS o
	LEFT JOIN saga_counts AS c
		   ON c.kind = o.kind AND c.outcome = o.outcome AND c.status IN ('completed', 'compensated')
	GROUP BY o.kind, o.outcome
	UNION ALL
	SELECT 'oms_sagas_in_flight', '', pg_catalog.jsonb_build_object('kind', k.kind),
		   COALESCE((SELECT pg_catalog.sum(c.n) FROM saga_counts AS c
					 WHERE c.kind = k.kind AND c.status IN ('running', 'compensating')), 0)
	FROM saga_kinds AS k
	UNION ALL
	SELECT 'oms_sagas_stuck', '', pg_catalog.jsonb_build_object('kind', k.kind),
		   COALESCE((SELECT pg_catalog.sum(c.n) FROM saga_counts AS c
					 WHERE c.kind = k.kind AND c.status = 'stuck'), 0)
	FROM saga_kinds AS k
	UNION ALL
	-- The partial index sagas_due_idx answers this without a table scan.
	SELECT 'oms_saga_oldest_due_age_seconds', '', '{}',
		   COALESCE(EXTRACT(epoch FROM pg_catalog.now() - pg_catalog.min(s.next_run_at)), 0)
	FROM oms.sagas AS s
	WHERE s.status IN ('running', 'compensating') AND s.next_run_at <= pg_catalog.now()
	UNION ALL
	SELECT 'oms_saga_step_duration_seconds', '_bucket',
		   pg_catalog.jsonb_build_object('kind', k.kind, 'step', k.step, 'le', b.le::text),
		   COALESCE((SELECT pg_catalog.sum(h.n) FROM step_first_bucket AS h
					 WHERE h.kind = k.kind AND h.step = k.step AND h.first <= b.i), 0)
	FROM step_names AS k,
		 pg_catalog.unnest(oms._metric_step_buckets()) WITH ORDINALITY AS b(le, i)
	UNION ALL
	SELECT 'oms_saga_step_duration_seconds', '_bucket',
		   pg_catalog.jsonb_build_object('kind', k.kind, 'step', k.step, 'le', '+Inf'),
		   COALESCE((SELECT pg_catalog.sum(h.n) FROM step_first_bucket AS h
					 WHERE h.kind = k.kind AND h.step = k.step), 0)
	FROM step_names AS k
	UNION ALL
	SELECT 'oms_saga_step_duration_seconds', '_sum', pg_catalog.jsonb_build_object('kind', k.kind, 'step', k.step),
		   COALESCE((SELECT pg_catalog.sum(h.seconds) FROM step_first_bucket AS h
					 WHERE h.kind = k.kind AND h.step = k.step), 0)
	FROM step_names AS k
	UNION ALL
	SELECT 'oms_saga_step_duration_seconds', '_count', pg_catalog.jsonb_build_object('kind', k.kind, 'step', k.step),
		   COALESCE((SELECT pg_catalog.sum(h.n) FROM step_first_bucket AS h
					 WHERE h.kind = k.kind AND h.step = k.step), 0)
	FROM step_names AS k
	UNION ALL
	SELECT 'oms_saga_step_retries_total', '', pg_catalog.jsonb_build_object('kind', k.kind, 'step', k.step),
		   COALESCE((SELECT pg_catalog.sum(r.retries) FROM step_groups AS r
					 WHERE r.kind = k.kind AND r.step = k.step), 0)
	FROM step_names AS k
	UNION ALL
	SELECT 'oms_outbox_pending_events', '', '{}', o.pending FROM outbox AS o
	UNION ALL
	SELECT 'oms_outbox_oldest_pending_age_seconds', '', '{}',
		   COALESCE(GREATEST(EXTRACT(epoch FROM o.oldest_pending_age), 0), 0)
	FROM outbox AS o
	UNION ALL
	SELECT 'oms_outbox_backing_off_events', '', '{}', o.backing_off FROM outbox AS o
	UNION ALL
	SELECT 'oms_relay_published_events_total', '', '{}', COALESCE(r.published_total, 0) FROM relay AS r
	UNION ALL
	SELECT 'oms_relay_publish_failures_total', '', '{}', COALESCE(r.failed_attempts_total, 0) FROM relay AS r
	UNION ALL
	SELECT 'oms_relay_batches_total', '', '{}', COALESCE(r.batches_total, 0) FROM relay AS r
	UNION ALL
	SELECT 'oms_relay_breaker_open', '', '{}',
		   CASE WHEN COALESCE(r.breaker, 'closed') = 'closed' THEN 0 ELSE 1 END
	FROM relay AS r
	UNION ALL
	SELECT 'oms_dead_letters_open', '', pg_catalog.jsonb_build_object('kind', k.kind), COALESCE(c.open, 0)
	FROM dead_letter_kinds AS k LEFT JOIN dead_letter_counts AS c ON c.kind = k.kind
	UNION ALL
	SELECT 'oms_dead_letters_created_total', '', pg_catalog.jsonb_build_object('kind', k.kind), COALESCE(c.n, 0)
	FROM dead_letter_kinds AS k LEFT JOIN dead_letter_counts AS c ON c.kind = k.kind
	UNION ALL
	SELECT 'oms_worker_up', '', '{}', CASE WHEN COALESCE(w.alive, false) THEN 1 ELSE 0 END FROM worker AS w
	UNION ALL
	SELECT 'oms_worker_last_loop_age_seconds', '', '{}',
		   GREATEST(EXTRACT(epoch FROM pg_catalog.now() - w.last_loop), 0)
	FROM worker AS w WHERE w.last_loop IS NOT NULL
	UNION ALL
	SELECT 'oms_worker_loops_total', '', '{}', COALESCE(w.loops, 0) FROM worker AS w
	UNION ALL
	SELECT 'oms_worker_units_total', '', '{}', COALESCE(g.units, 0) FROM saga_workers AS g
	UNION ALL
	SELECT 'oms_saga_workers_up', '', '{}', g.up FROM saga_workers AS g
	UNION ALL
	SELECT 'oms_inbox_replies_total', '', pg_catalog.jsonb_build_object('result', r.result),
		   COALESCE((i.j ->> r.field)::double precision, 0)
	FROM inbox AS i,
		 (VALUES ('applied', 'applied'), ('duplicate', 'duplicates'), ('late', 'late'),
				 ('rejected', 'rejected'), ('other', 'other')) AS r(result, field)
	UNION ALL
	SELECT 'oms_inbox_reply_failures_total', '', '{}', COALESCE((i.j ->> 'failures')::double precision, 0)
	FROM inbox AS i
	UNION ALL
	SELECT 'oms_inbox_lag_messages', '', '{}', (i.j ->> 'lag')::double precision
	FROM inbox AS i WHERE i.j ->> 'lag' IS NOT NULL
) AS m
JOIN oms._metric_families() AS f ON f.family = m.family;
COMMENT ON VIEW oms.metrics IS
	'Prometheus metrics of this database, one row per sample: metric (the sample name, with _bucket, _sum or _count for a histogram), family, type, help, labels (jsonb), value';

-- A label value or HELP text in the exposition format: backslash and
-- newline escaped, and the double quote too inside a label value.
CREATE FUNCTION oms._prom_escape(p_text text, p_quote boolean)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN p_quote
				THEN pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(p_text, E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n')
				ELSE pg_catalog.replace(pg_catalog.replace(p_text, E'\\', E'\\\\'), E'\n', E'\\n') END;
$$;
COMMENT ON FUNCTION oms._prom_escape(text, boolean) IS
	'Escapes text for the Prometheus exposition format: backslash and newline, and the double quote when p_quote (label values)';

-- {label="value",...} from a jsonb object; le goes last, as Prometheus
-- clients print it; nothing for no labels.
CREATE FUNCTION oms._prom_labels(p_labels jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT COALESCE('{' || pg_catalog.string_agg(l.key || '="' || oms._prom_escape(l.value, true) || '"', ','
												  ORDER BY l.key = 'le', l.key) || '}', '')
	FROM pg_catalog.jsonb_each_text(p_labels) AS l;
$$;
COMMENT ON FUNCTION oms._prom_labels(jsonb) IS
	'The label set of a sample in the Prometheus exposition format, e.g. {kind="refund",step="refund_payment"}';

CREATE FUNCTION oms._prom_value(p_value double precision)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN p_value = 'Infinity' THEN '+Inf'
				WHEN p_value = '-Infinity' THEN '-Inf'
				WHEN p_value = 'NaN' THEN 'NaN'
				ELSE p_value::text END;
$$;
COMMENT ON FUNCTION oms._prom_value(double precision) IS
	'A sample value in the Prometheus exposition format (+Inf, -Inf and NaN spelled its way)';

CREATE FUNCTION @extschema@.oms_metrics()
RETURNS text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- The planner's cost of the view is far above jit_above_cost (its CTE row
-- estimates are blind), and compiling it takes seconds for a query that
-- runs in milliseconds to a few hundred.
SET jit = off
AS $$
	-- The view is read once: filtered per family, each family would scan
	-- its tables again (several families share oms.saga_steps).
	WITH samples AS MATERIALIZED (SELECT * FROM oms.metrics)
	SELECT pg_catalog.string_agg(b.block, '' ORDER BY b.ord)
	FROM (SELECT f.ord,
				 '# HELP ' || f.family || ' ' || oms._prom_escape(f.help, false) || E'\n'
				 || '# TYPE ' || f.family || ' ' || f.type || E'\n'
				 || COALESCE((SELECT pg_catalog.string_agg(
									 m.metric || oms._prom_labels(m.labels) || ' ' || oms._prom_value(m.value) || E'\n', ''
									 ORDER BY m.labels - 'le',
											  CASE m.metric WHEN f.family || '_sum' THEN 1
															WHEN f.family || '_count' THEN 2 ELSE 0 END,
											  (m.labels ->> 'le')::double precision)
							  FROM samples AS m WHERE m.family = f.family), '') AS block
		  FROM oms._metric_families() AS f) AS b;
$$;
COMMENT ON FUNCTION @extschema@.oms_metrics() IS
	'The metrics of this database in the Prometheus text exposition format (version 0.0.4), for a scrape endpoint';

REVOKE ALL ON oms.metrics FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._metric_families() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._metric_step_buckets() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._prom_escape(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._prom_labels(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._prom_value(double precision) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_metrics() FROM PUBLIC;

-- A view calls its functions with the rights of the querying role, so
-- readers of oms.metrics may execute what it calls (all read only).
GRANT SELECT ON oms.metrics TO oms_reader;
GRANT EXECUTE ON FUNCTION
	oms._metric_families(),
	oms._metric_step_buckets(),
	oms._saga_step_names(text),
	oms._relay_shmem_status(),
	oms._relay_backlog(),
	oms._prom_escape(text, boolean),
	oms._prom_labels(jsonb),
	oms._prom_value(double precision)
TO oms_reader;
GRANT EXECUTE ON FUNCTION @extschema@.oms_metrics() TO oms_reader, oms_admin;
