-- views.sql: the views of schema oms that an application reads, on the
-- router, with the shards' names and columns.  Each reads every shard (or
-- any one) through a PL/Proxy helper oms._all_<view> / oms._any_<view>:
--   re-aggregated  stock_levels, location_stock_levels, revenue_daily,
--                  orders_by_status_daily, saga_metrics, saga_failure_reasons
--   labelled       metrics (a "shard" label on every sample)
--   per shard      saga_durations, saga_step_latency, maintenance_status:
--                  percentiles and task rows do not add up, so each shard's
--                  rows with one more column, shard
--   any shard      statuses, status_transitions, order_states,
--                  order_transitions (definitions, the same everywhere)
-- The helpers run as the caller on each shard (PL/Proxy connects as the
-- current user), so reading a view here needs what it needs there.
--
-- requires: routing

CREATE FUNCTION oms._all_stock_levels(OUT sku text, OUT on_hand bigint, OUT reserved bigint, OUT available bigint, OUT updated_at timestamp with time zone)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT sku, on_hand, reserved, available, updated_at FROM oms.stock_levels;
$$;
REVOKE ALL ON FUNCTION oms._all_stock_levels() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._all_stock_levels() TO oms_reader;
COMMENT ON FUNCTION oms._all_stock_levels() IS 'PL/Proxy read of oms.stock_levels on every shard';

CREATE VIEW oms.stock_levels AS
SELECT s.sku, pg_catalog.sum(s.on_hand)::bigint AS on_hand, pg_catalog.sum(s.reserved)::bigint AS reserved,
	   pg_catalog.sum(s.available)::bigint AS available, pg_catalog.max(s.updated_at) AS updated_at
FROM oms._all_stock_levels() AS s
GROUP BY s.sku;
REVOKE ALL ON oms.stock_levels FROM PUBLIC;
GRANT SELECT ON oms.stock_levels TO oms_reader;
COMMENT ON VIEW oms.stock_levels IS
	'Stock per SKU over every shard (a SKU lives on its home shard; the sums cover any other)';

CREATE FUNCTION oms._all_location_stock_levels(OUT sku text, OUT location text, OUT on_hand bigint, OUT reserved bigint, OUT available bigint, OUT updated_at timestamp with time zone, OUT priority integer, OUT active boolean)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT sku, location, on_hand, reserved, available, updated_at, priority, active FROM oms.location_stock_levels;
$$;
REVOKE ALL ON FUNCTION oms._all_location_stock_levels() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._all_location_stock_levels() TO oms_reader;
COMMENT ON FUNCTION oms._all_location_stock_levels() IS 'PL/Proxy read of oms.location_stock_levels on every shard';

CREATE VIEW oms.location_stock_levels AS
SELECT s.sku, s.location, pg_catalog.sum(s.on_hand)::bigint AS on_hand, pg_catalog.sum(s.reserved)::bigint AS reserved,
	   pg_catalog.sum(s.available)::bigint AS available, pg_catalog.max(s.updated_at) AS updated_at,
	   pg_catalog.max(s.priority) AS priority, pg_catalog.bool_and(s.active) AS active
FROM oms._all_location_stock_levels() AS s
GROUP BY s.sku, s.location;
REVOKE ALL ON oms.location_stock_levels FROM PUBLIC;
GRANT SELECT ON oms.location_stock_levels TO oms_reader;
COMMENT ON VIEW oms.location_stock_levels IS
	'Stock per SKU and location over every shard (locations are replicated, so priority and active agree)';

CREATE FUNCTION oms._all_revenue_daily(OUT day date, OUT currency text, OUT orders bigint, OUT gross bigint, OUT refunds bigint, OUT refunded bigint, OUT net bigint, OUT gross_amount numeric, OUT refunded_amount numeric, OUT net_amount numeric)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT day, currency, orders, gross, refunds, refunded, net, gross_amount, refunded_amount, net_amount FROM oms.revenue_daily;
$$;
REVOKE ALL ON FUNCTION oms._all_revenue_daily() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._all_revenue_daily() TO oms_reader, oms_admin;
COMMENT ON FUNCTION oms._all_revenue_daily() IS 'PL/Proxy read of oms.revenue_daily on every shard';

CREATE VIEW oms.revenue_daily AS
SELECT r.day, r.currency, pg_catalog.sum(r.orders)::bigint AS orders, pg_catalog.sum(r.gross)::bigint AS gross,
	   pg_catalog.sum(r.refunds)::bigint AS refunds, pg_catalog.sum(r.refunded)::bigint AS refunded,
	   pg_catalog.sum(r.net)::bigint AS net, pg_catalog.sum(r.gross_amount) AS gross_amount,
	   pg_catalog.sum(r.refunded_amount) AS refunded_amount, pg_catalog.sum(r.net_amount) AS net_amount
FROM oms._all_revenue_daily() AS r
GROUP BY r.day, r.currency;
REVOKE ALL ON oms.revenue_daily FROM PUBLIC;
GRANT SELECT ON oms.revenue_daily TO oms_reader, oms_admin;
COMMENT ON VIEW oms.revenue_daily IS
	'Revenue per day and currency over every shard (each shard''s rows summed)';

CREATE FUNCTION oms._all_orders_by_status_daily(OUT day date, OUT status oms.order_status, OUT orders bigint)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT day, status, orders FROM oms.orders_by_status_daily;
$$;
REVOKE ALL ON FUNCTION oms._all_orders_by_status_daily() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._all_orders_by_status_daily() TO oms_reader, oms_admin;
COMMENT ON FUNCTION oms._all_orders_by_status_daily() IS 'PL/Proxy read of oms.orders_by_status_daily on every shard';

CREATE VIEW oms.orders_by_status_daily AS
SELECT o.day, o.status, pg_catalog.sum(o.orders)::bigint AS orders
FROM oms._all_orders_by_status_daily() AS o
GROUP BY o.day, o.status;
REVOKE ALL ON oms.orders_by_status_daily FROM PUBLIC;
GRANT SELECT ON oms.orders_by_status_daily TO oms_reader, oms_admin;
COMMENT ON VIEW oms.orders_by_status_daily IS
	'Orders per creation day and status over every shard (summed)';

CREATE FUNCTION oms._all_saga_metrics(OUT started bigint, OUT completed bigint, OUT failed bigint, OUT canceled bigint, OUT refunded bigint, OUT in_flight bigint, OUT stuck bigint)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT started, completed, failed, canceled, refunded, in_flight, stuck FROM oms.saga_metrics;
$$;
REVOKE ALL ON FUNCTION oms._all_saga_metrics() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._all_saga_metrics() TO oms_reader;
COMMENT ON FUNCTION oms._all_saga_metrics() IS 'PL/Proxy read of oms.saga_metrics on every shard';

CREATE VIEW oms.saga_metrics AS
SELECT pg_catalog.sum(m.started)::bigint AS started, pg_catalog.sum(m.completed)::bigint AS completed,
	   pg_catalog.sum(m.failed)::bigint AS failed, pg_catalog.sum(m.canceled)::bigint AS canceled,
	   pg_catalog.sum(m.refunded)::bigint AS refunded, pg_catalog.sum(m.in_flight)::bigint AS in_flight,
	   pg_catalog.sum(m.stuck)::bigint AS stuck
FROM oms._all_saga_metrics() AS m;
REVOKE ALL ON oms.saga_metrics FROM PUBLIC;
GRANT SELECT ON oms.saga_metrics TO oms_reader;
COMMENT ON VIEW oms.saga_metrics IS
	'Saga counters over every shard (summed)';

CREATE FUNCTION oms._all_saga_failure_reasons(OUT saga_kind text, OUT step text, OUT phase text, OUT sqlstate text, OUT message text, OUT failures bigint, OUT first_seen timestamp with time zone, OUT last_seen timestamp with time zone)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT saga_kind, step, phase, sqlstate, message, failures, first_seen, last_seen FROM oms.saga_failure_reasons;
$$;
REVOKE ALL ON FUNCTION oms._all_saga_failure_reasons() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._all_saga_failure_reasons() TO oms_reader, oms_admin;
COMMENT ON FUNCTION oms._all_saga_failure_reasons() IS 'PL/Proxy read of oms.saga_failure_reasons on every shard';

CREATE VIEW oms.saga_failure_reasons AS
SELECT f.saga_kind, f.step, f.phase, f.sqlstate, f.message, pg_catalog.sum(f.failures)::bigint AS failures,
	   pg_catalog.min(f.first_seen) AS first_seen, pg_catalog.max(f.last_seen) AS last_seen
FROM oms._all_saga_failure_reasons() AS f
GROUP BY f.saga_kind, f.step, f.phase, f.sqlstate, f.message;
REVOKE ALL ON oms.saga_failure_reasons FROM PUBLIC;
GRANT SELECT ON oms.saga_failure_reasons TO oms_reader, oms_admin;
COMMENT ON VIEW oms.saga_failure_reasons IS
	'Why saga steps failed, over every shard (counts summed, first and last seen over all)';

CREATE FUNCTION oms._all_metrics_rows(OUT shard integer, OUT metric text, OUT family text, OUT type text, OUT help text, OUT labels jsonb, OUT value double precision)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT (oms_shard_info() ->> 'shard')::integer AS shard, metric, family, type, help, labels, value FROM oms.metrics;
$$;
REVOKE ALL ON FUNCTION oms._all_metrics_rows() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._all_metrics_rows() TO oms_reader;
COMMENT ON FUNCTION oms._all_metrics_rows() IS 'PL/Proxy read of oms.metrics on every shard';

CREATE VIEW oms.metrics AS
SELECT m.metric, m.family, m.type, m.help,
	   m.labels || pg_catalog.jsonb_build_object('shard', m.shard::text) AS labels, m.value
FROM oms._all_metrics_rows() AS m;
REVOKE ALL ON oms.metrics FROM PUBLIC;
GRANT SELECT ON oms.metrics TO oms_reader;
COMMENT ON VIEW oms.metrics IS
	'Every shard''s metric samples, one row each, with a "shard" label';

CREATE FUNCTION oms._all_saga_durations(OUT shard integer, OUT kind text, OUT outcome text, OUT sagas bigint, OUT p50_s numeric, OUT p95_s numeric, OUT p99_s numeric, OUT max_s numeric)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT (oms_shard_info() ->> 'shard')::integer AS shard, kind, outcome, sagas, p50_s, p95_s, p99_s, max_s FROM oms.saga_durations;
$$;
REVOKE ALL ON FUNCTION oms._all_saga_durations() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._all_saga_durations() TO oms_reader, oms_admin;
COMMENT ON FUNCTION oms._all_saga_durations() IS 'PL/Proxy read of oms.saga_durations on every shard';

CREATE VIEW oms.saga_durations AS
SELECT kind, outcome, sagas, p50_s, p95_s, p99_s, max_s, shard
FROM oms._all_saga_durations();
REVOKE ALL ON oms.saga_durations FROM PUBLIC;
GRANT SELECT ON oms.saga_durations TO oms_reader, oms_admin;
COMMENT ON VIEW oms.saga_durations IS
	'Saga durations per shard (percentiles do not add up: one set of rows per shard, with its number)';

CREATE FUNCTION oms._all_saga_step_latency(OUT shard integer, OUT kind text, OUT step text, OUT steps bigint, OUT p50_ms double precision, OUT p95_ms double precision, OUT p99_ms double precision)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT (oms_shard_info() ->> 'shard')::integer AS shard, kind, step, steps, p50_ms, p95_ms, p99_ms FROM oms.saga_step_latency;
$$;
REVOKE ALL ON FUNCTION oms._all_saga_step_latency() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._all_saga_step_latency() TO oms_reader;
COMMENT ON FUNCTION oms._all_saga_step_latency() IS 'PL/Proxy read of oms.saga_step_latency on every shard';

CREATE VIEW oms.saga_step_latency AS
SELECT kind, step, steps, p50_ms, p95_ms, p99_ms, shard
FROM oms._all_saga_step_latency();
REVOKE ALL ON oms.saga_step_latency FROM PUBLIC;
GRANT SELECT ON oms.saga_step_latency TO oms_reader;
COMMENT ON VIEW oms.saga_step_latency IS
	'Saga step latency per shard (percentiles do not add up: one set of rows per shard, with its number)';

CREATE FUNCTION oms._all_maintenance_status(OUT shard integer, OUT task text, OUT run_by text, OUT schedule text, OUT cron_job_name text, OUT cron_jobid bigint, OUT last_started_at timestamp with time zone, OUT last_duration interval, OUT last_run_by text, OUT last_result jsonb, OUT last_error text, OUT last_error_at timestamp with time zone, OUT runs bigint, OUT failures bigint, OUT description text)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ALL;
	SELECT (oms_shard_info() ->> 'shard')::integer AS shard, task, run_by, schedule, cron_job_name, cron_jobid, last_started_at, last_duration, last_run_by, last_result, last_error, last_error_at, runs, failures, description FROM oms.maintenance_status;
$$;
REVOKE ALL ON FUNCTION oms._all_maintenance_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._all_maintenance_status() TO oms_reader, oms_admin;
COMMENT ON FUNCTION oms._all_maintenance_status() IS 'PL/Proxy read of oms.maintenance_status on every shard';

CREATE VIEW oms.maintenance_status AS
SELECT task, run_by, schedule, cron_job_name, cron_jobid, last_started_at, last_duration, last_run_by, last_result, last_error, last_error_at, runs, failures, description, shard
FROM oms._all_maintenance_status();
REVOKE ALL ON oms.maintenance_status FROM PUBLIC;
GRANT SELECT ON oms.maintenance_status TO oms_reader, oms_admin;
COMMENT ON VIEW oms.maintenance_status IS
	'Maintenance tasks of every shard, one set of rows per shard, with its number';

CREATE FUNCTION oms._any_statuses(OUT machine text, OUT status text, OUT initial boolean, OUT terminal boolean, OUT meaning text)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ANY;
	SELECT machine, status, initial, terminal, meaning FROM oms.statuses;
$$;
REVOKE ALL ON FUNCTION oms._any_statuses() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._any_statuses() TO oms_reader;
COMMENT ON FUNCTION oms._any_statuses() IS 'PL/Proxy read of oms.statuses on any shard';

CREATE VIEW oms.statuses AS
SELECT machine, status, initial, terminal, meaning
FROM oms._any_statuses();
REVOKE ALL ON oms.statuses FROM PUBLIC;
GRANT SELECT ON oms.statuses TO oms_reader;
COMMENT ON VIEW oms.statuses IS
	'The states of every state machine (the same on every shard: read on any)';

CREATE FUNCTION oms._any_status_transitions(OUT machine text, OUT from_status text, OUT to_status text, OUT event text)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ANY;
	SELECT machine, from_status, to_status, event FROM oms.status_transitions;
$$;
REVOKE ALL ON FUNCTION oms._any_status_transitions() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._any_status_transitions() TO oms_reader;
COMMENT ON FUNCTION oms._any_status_transitions() IS 'PL/Proxy read of oms.status_transitions on any shard';

CREATE VIEW oms.status_transitions AS
SELECT machine, from_status, to_status, event
FROM oms._any_status_transitions();
REVOKE ALL ON oms.status_transitions FROM PUBLIC;
GRANT SELECT ON oms.status_transitions TO oms_reader;
COMMENT ON VIEW oms.status_transitions IS
	'The allowed moves of every state machine (the same on every shard: read on any)';

CREATE FUNCTION oms._any_order_states(OUT status oms.order_status, OUT initial boolean, OUT terminal boolean, OUT meaning text)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ANY;
	SELECT status, initial, terminal, meaning FROM oms.order_states;
$$;
REVOKE ALL ON FUNCTION oms._any_order_states() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._any_order_states() TO oms_reader;
COMMENT ON FUNCTION oms._any_order_states() IS 'PL/Proxy read of oms.order_states on any shard';

CREATE VIEW oms.order_states AS
SELECT status, initial, terminal, meaning
FROM oms._any_order_states();
REVOKE ALL ON oms.order_states FROM PUBLIC;
GRANT SELECT ON oms.order_states TO oms_reader;
COMMENT ON VIEW oms.order_states IS
	'The order states (the same on every shard: read on any)';

CREATE FUNCTION oms._any_order_transitions(OUT from_status oms.order_status, OUT to_status oms.order_status, OUT event text)
RETURNS SETOF record
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ANY;
	SELECT from_status, to_status, event FROM oms.order_transitions;
$$;
REVOKE ALL ON FUNCTION oms._any_order_transitions() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._any_order_transitions() TO oms_reader;
COMMENT ON FUNCTION oms._any_order_transitions() IS 'PL/Proxy read of oms.order_transitions on any shard';

CREATE VIEW oms.order_transitions AS
SELECT from_status, to_status, event
FROM oms._any_order_transitions();
REVOKE ALL ON oms.order_transitions FROM PUBLIC;
GRANT SELECT ON oms.order_transitions TO oms_reader;
COMMENT ON VIEW oms.order_transitions IS
	'The allowed order moves (the same on every shard: read on any)';
