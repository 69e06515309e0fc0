-- bench/relay_plain.sql: the plain-SQL drain the outbox relay is measured
-- against (bench/relay.sh, part a).  The same backlog, copied into a table of
-- its own with oms.outbox's columns, keys and indexes (LIKE ... INCLUDING
-- ALL), is emptied oldest first by one session in batches of :batch rows:
-- one DELETE of the oldest rows by created_at, returning them, and a commit
-- per batch.  That is the least any consumer of the table must do per event
-- (find it, remove it durably); the relay does the same plus rendering the
-- event for Kafka, the produce and the wait for the acknowledgement, in two
-- transactions per batch.
--
-- Like the relay's rate, the rate counts from the end of the first batch to
-- the end of the last one.  Result (psql -At): events|seconds|events_per_s|batches|
-- cpu_ticks, the last being the CPU time (user + system, in clock ticks) of
-- this backend over the whole drain, from /proc/self/stat (the server runs
-- on Linux; the bench runs as a superuser), to compare with the relay's
-- main thread when other work on the machine skews the wall-clock rates.
SET client_min_messages = warning;
DROP TABLE IF EXISTS public.bench_relay_plain;
CREATE TABLE public.bench_relay_plain (LIKE oms.outbox INCLUDING ALL);
INSERT INTO public.bench_relay_plain (id, aggregatetype, aggregateid, type, payload, seq, created_at)
SELECT id, aggregatetype, aggregateid, type, payload, seq, created_at FROM public.bench_relay_events;
VACUUM ANALYZE public.bench_relay_plain;
CHECKPOINT;
SELECT pg_catalog.set_config('bench.relay_batch', :'batch', false) IS NULL AS unused \gset
DO $$
DECLARE
	v_batch integer := pg_catalog.current_setting('bench.relay_batch')::integer;
	v_n integer;
	v_total bigint := 0;
	v_batches integer := 0;
	v_first bigint;
	v_from timestamptz;
	v_secs double precision;
	v_ticks0 bigint;
	v_ticks bigint;
BEGIN
	SELECT f[12]::bigint + f[13]::bigint INTO v_ticks0
	FROM pg_catalog.regexp_split_to_array(pg_catalog.substring(pg_catalog.pg_read_file('/proc/self/stat'), '\) (.*)$'), ' ') AS f;
	LOOP
		WITH d AS (
			DELETE FROM public.bench_relay_plain AS o
			WHERE o.id IN (SELECT p.id FROM public.bench_relay_plain AS p ORDER BY p.created_at LIMIT v_batch)
			RETURNING o.*
		)
		SELECT pg_catalog.count(*) INTO v_n FROM d;
		COMMIT;
		EXIT WHEN v_n = 0;
		v_total := v_total + v_n;
		v_batches := v_batches + 1;
		IF v_from IS NULL THEN
			v_from := pg_catalog.clock_timestamp();
			v_first := v_n;
		END IF;
	END LOOP;
	v_secs := EXTRACT(epoch FROM pg_catalog.clock_timestamp() - v_from);
	SELECT f[12]::bigint + f[13]::bigint - v_ticks0 INTO v_ticks
	FROM pg_catalog.regexp_split_to_array(pg_catalog.substring(pg_catalog.pg_read_file('/proc/self/stat'), '\) (.*)$'), ' ') AS f;
	PERFORM pg_catalog.set_config('bench.relay_result',
		pg_catalog.format('%s|%s|%s|%s|%s', v_total, round(v_secs::numeric, 2),
						  CASE WHEN v_secs > 0 THEN round((v_total - v_first) / v_secs::numeric) END,
						  v_batches, v_ticks),
		false);
END;
$$;
DROP TABLE public.bench_relay_plain;
SELECT pg_catalog.current_setting('bench.relay_result');
