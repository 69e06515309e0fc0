-- metrics: oms.metrics and oms_metrics() after a known workload.
-- The workload runs in a database of its own, so the values do not depend
-- on the other suites; no worker serves it (oms.database_name does not
-- list it), so the shared-memory counters stay 0.  Sagas run in this
-- session at fixed times in the future: a step's duration is then exact.
\set SHOW_CONTEXT never
SELECT current_database() AS regress_db \gset
SET client_min_messages = warning;
DROP DATABASE IF EXISTS oms_metrics_regress;
RESET client_min_messages;
CREATE DATABASE oms_metrics_regress;
\c oms_metrics_regress
SET client_min_messages = warning;
CREATE EXTENSION oms;
RESET client_min_messages;

-- Every family is exposed, with HELP and TYPE, before anything happened.
SELECT family, type FROM oms._metric_families() ORDER BY ord;
SELECT metric, labels, value FROM oms.metrics
WHERE family IN ('oms_orders_created_total', 'oms_worker_up', 'oms_outbox_pending_events')
ORDER BY metric;

-- The workload.  T is tomorrow: completion times are exactly the times
-- passed to oms._run_sagas().
SELECT now() + interval '1 day' AS t \gset
SELECT oms_set_stock('M-A', 100) ->> 'available' AS available;
CREATE FUNCTION pg_temp.new_order(p_customer text, p_method text) RETURNS uuid LANGUAGE sql AS $$
	SELECT (oms_pay_order((oms_create_order(p_customer, '[{"sku": "M-A", "quantity": 1, "unit_price": 1000}]') ->> 'order_id')::uuid,
						  p_method) ->> 'order_id')::uuid;
$$;
SET oms.retry_base = '1s';
-- Three approved orders, one declined, one flaky (two retries), one left
-- pending, one canceled before its saga ran.
SELECT count(pg_temp.new_order('m-ok-' || i, 'test_ok')) AS paid FROM generate_series(1, 3) AS i;
SELECT pg_temp.new_order('m-decline', 'test_decline') IS NOT NULL AS paid, pg_temp.new_order('m-flaky', 'test_flaky') IS NOT NULL AS paid;
SELECT oms_create_order('m-pending', '[{"sku": "M-A", "quantity": 1, "unit_price": 1000}]') ->> 'status' AS status;
SELECT oms_cancel_order(pg_temp.new_order('m-cancel', 'test_ok'), 'changed my mind') ->> 'status' AS status;
SELECT oms._run_sagas(1000, :'t') AS steps_run;
-- The flaky payment: attempt 2 at T + 20 s fails again, attempt 3 at
-- T + 40 s succeeds (the backoff is at most 1 s and 2 s).
SELECT oms._run_sagas(1000, :'t'::timestamptz + interval '20 s') AS steps_run;
SELECT oms._run_sagas(1000, :'t'::timestamptz + interval '40 s') AS steps_run;
RESET oms.retry_base;
-- A full refund of the first approved order.
SELECT oms_refund_order((SELECT id FROM oms.orders WHERE customer_id = 'm-ok-1')) ->> 'status' AS status;
SELECT oms._run_sagas(1000, :'t'::timestamptz + interval '60 s') AS steps_run;
SELECT customer_id, status FROM oms.orders ORDER BY customer_id;
SELECT kind, step, status FROM oms.dead_letters ORDER BY id;

-- The whole exposition, but for the outbox age, which is wall-clock time.
SELECT regexp_replace(oms_metrics(), E'\noms_outbox_oldest_pending_age_seconds [0-9.e+-]+\n',
					  E'\noms_outbox_oldest_pending_age_seconds <age>\n') AS exposition \g (format=unaligned tuples_only)
SELECT value > 0 AS outbox_age_positive FROM oms.metrics WHERE metric = 'oms_outbox_oldest_pending_age_seconds';
-- Exactly one trailing newline, no empty line anywhere.
SELECT right(oms_metrics(), 1) = E'\n' AS ends_with_newline, right(oms_metrics(), 2) <> E'\n\n' AS one_newline,
	   position(E'\n\n' IN oms_metrics()) AS empty_lines;
-- One HELP and one TYPE line per family.
SELECT count(*) FILTER (WHERE l LIKE '# HELP %') AS help_lines, count(*) FILTER (WHERE l LIKE '# TYPE %') AS type_lines,
	   (SELECT count(*) FROM oms._metric_families()) AS families
FROM regexp_split_to_table(oms_metrics(), E'\n') AS l;

-- The view: types and names follow the conventions.
SELECT family FROM oms._metric_families()
WHERE family !~ '^oms_[a-z0-9_]+$'
   OR (type = 'counter') <> (family LIKE '%\_total')
   OR family ~ '_(count|sum|bucket)$';
SELECT DISTINCT m.family, m.type FROM oms.metrics AS m
LEFT JOIN oms._metric_families() AS f USING (family)
WHERE f.family IS NULL OR f.type <> m.type;
-- Histogram buckets are cumulative, +Inf equals _count.
SELECT b.labels - 'le' AS series, count(*) AS buckets,
	   bool_and(b.value >= coalesce(p.value, 0)) AS cumulative,
	   max(b.value) FILTER (WHERE b.labels ->> 'le' = '+Inf') = max(c.value) AS inf_is_count
FROM oms.metrics AS b
JOIN oms.metrics AS c ON c.metric = 'oms_saga_step_duration_seconds_count' AND c.labels = b.labels - 'le'
LEFT JOIN LATERAL (SELECT max(x.value) AS value FROM oms.metrics AS x
				   WHERE x.metric = b.metric AND x.labels - 'le' = b.labels - 'le'
					 AND (x.labels ->> 'le')::float8 < (b.labels ->> 'le')::float8) AS p ON true
WHERE b.metric = 'oms_saga_step_duration_seconds_bucket'
GROUP BY 1 ORDER BY 1::text;
-- Nothing in oms.metrics is null or NaN.
SELECT metric, labels FROM oms.metrics WHERE value IS NULL OR value = 'NaN';

-- Counters stay put when a compensated step was done (reserve of the
-- declined order) and do not count the step that failed (its pay).
SELECT labels ->> 'step' AS step, value FROM oms.metrics
WHERE metric = 'oms_saga_step_duration_seconds_count' AND labels ->> 'kind' = 'fulfilment' ORDER BY 1;

-- A query for some families (as the exporter's queries file makes) plans
-- away the others: the relay counters read no table.
CREATE FUNCTION pg_temp.scans(p_query text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	v_line text;
	v_scans text[] := '{}';
BEGIN
	FOR v_line IN EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) ' || p_query LOOP
		IF v_line ~ 'Scan (using \S+ )?on (orders|sagas|saga_steps|dead_letters|outbox) ' AND v_line !~ 'never executed' THEN
			v_scans := v_scans || substring(v_line FROM 'on (\w+) ');
		END IF;
	END LOOP;
	RETURN array_to_string(ARRAY(SELECT DISTINCT x FROM unnest(v_scans) AS x ORDER BY 1), ' ');
END;
$$;
SELECT pg_temp.scans($$SELECT value FROM oms.metrics WHERE family = 'oms_relay_batches_total'$$) AS relay_reads,
	   pg_temp.scans($$SELECT value FROM oms.metrics WHERE family = 'oms_orders_by_status'$$) AS orders_reads,
	   pg_temp.scans($$SELECT value FROM oms.metrics WHERE family = 'oms_saga_step_duration_seconds'$$) AS histogram_reads,
	   pg_temp.scans($$SELECT value FROM oms.metrics$$) AS all_reads;

-- Label values and HELP text are escaped.
SELECT oms._prom_labels(jsonb_build_object('step', E'a"b\\c\nd', 'le', '+Inf', 'kind', 'k')) AS labels;
SELECT oms._prom_labels('{}') = '' AS no_labels;
SELECT oms._prom_escape(E'say "x"\\\n', false) AS help;
SELECT oms._prom_value('Infinity'), oms._prom_value('-Infinity'), oms._prom_value('NaN'), oms._prom_value(0.25),
	   oms._prom_value(12345678);

-- Privileges: readers and admins read the view and call oms_metrics(); the
-- application role and PUBLIC do not.
CREATE ROLE metrics_reader LOGIN IN ROLE oms_reader;
CREATE ROLE metrics_admin LOGIN IN ROLE oms_admin;
CREATE ROLE metrics_app LOGIN IN ROLE oms_app;
CREATE ROLE metrics_nobody LOGIN;
SELECT r AS role, has_function_privilege(r, 'oms_metrics()', 'EXECUTE') AS oms_metrics,
	   has_table_privilege(r, 'oms.metrics', 'SELECT') AS view_select,
	   has_table_privilege(r, 'oms.metrics', 'INSERT') AS view_insert
FROM unnest(ARRAY['metrics_reader', 'metrics_admin', 'metrics_app', 'metrics_nobody']) AS r;
SELECT has_function_privilege('public', 'oms_metrics()', 'EXECUTE') AS public_execute,
	   has_table_privilege('public', 'oms.metrics', 'SELECT') AS public_select;
SET ROLE metrics_reader;
SELECT oms_metrics() = (SELECT oms_metrics()) AS reader_calls, count(*) > 100 AS reader_reads FROM oms.metrics;
RESET ROLE;
SET ROLE metrics_admin;
SELECT length(oms_metrics()) > 1000 AS admin_calls;
RESET ROLE;
SET ROLE metrics_app;
DO $$ BEGIN PERFORM oms_metrics(); EXCEPTION WHEN insufficient_privilege THEN RAISE NOTICE 'app: %', SQLERRM; END $$;
DO $$ BEGIN PERFORM count(*) FROM oms.metrics; EXCEPTION WHEN insufficient_privilege THEN RAISE NOTICE 'app: %', SQLERRM; END $$;
RESET ROLE;
SET ROLE metrics_nobody;
DO $$ BEGIN PERFORM oms_metrics(); EXCEPTION WHEN insufficient_privilege THEN RAISE NOTICE 'nobody: %', SQLERRM; END $$;
RESET ROLE;
DROP ROLE metrics_reader, metrics_admin, metrics_app, metrics_nobody;

\c :regress_db
DROP DATABASE oms_metrics_regress;
