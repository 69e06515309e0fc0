-- bench/relay_ceiling.sql: the relay's SQL functions without Kafka
-- (bench/relay.sh, part a): one session claims a batch with
-- oms._relay_claim(:batch) and commits, then settles the whole batch as
-- acknowledged with oms._relay_settle(ids, NULL errors, false) and commits,
-- until the outbox is empty.  Two transactions per batch with a synchronous
-- commit each, as in the worker.  Since the worker claims and settles in C
-- (src/relay.c: the same claim code, but no set-returning function, no
-- tuplestore and no PL/pgSQL call), this is no longer the relay's own path
-- nor a ceiling for it; the reference is bench/relay_plain.sql.
--
-- Like the relay's rate, the rate counts from the end of the first batch to
-- the end of the last one.  Result (psql -At): events|seconds|events_per_s|
-- claim_s|settle_s|batches, where claim_s and settle_s include their commits.
SELECT pg_catalog.set_config('bench.relay_batch', :'batch', false) IS NULL AS unused \gset
DO $$
DECLARE
	v_batch integer := pg_catalog.current_setting('bench.relay_batch')::integer;
	v_ids uuid[];
	v_n integer;
	v_total bigint := 0;
	v_batches integer := 0;
	v_first bigint;
	v_from timestamptz;
	v_t timestamptz;
	v_claim interval := interval '0';
	v_settle interval := interval '0';
	v_secs double precision;
BEGIN
	LOOP
		v_t := pg_catalog.clock_timestamp();
		SELECT pg_catalog.array_agg(c.id), pg_catalog.count(*) INTO v_ids, v_n
		FROM oms._relay_claim(v_batch) AS c;
		COMMIT;
		v_claim := v_claim + (pg_catalog.clock_timestamp() - v_t);
		EXIT WHEN v_n = 0;

		v_t := pg_catalog.clock_timestamp();
		PERFORM oms._relay_settle(v_ids, pg_catalog.array_fill(NULL::text, ARRAY[v_n]),
								  pg_catalog.array_fill(false, ARRAY[v_n]));
		COMMIT;
		v_settle := v_settle + (pg_catalog.clock_timestamp() - v_t);
		v_total := v_total + v_n;
		v_batches := v_batches + 1;
		IF v_from IS NULL THEN
			v_from := pg_catalog.clock_timestamp();
			v_first := v_n;
		END IF;
	END LOOP;
	v_secs := EXTRACT(epoch FROM pg_catalog.clock_timestamp() - v_from);
	PERFORM pg_catalog.set_config('bench.relay_result',
		pg_catalog.format('%s|%s|%s|%s|%s|%s', v_total, round(v_secs::numeric, 2),
						  CASE WHEN v_secs > 0 THEN round((v_total - v_first) / v_secs::numeric) END,
						  round(EXTRACT(epoch FROM v_claim), 2), round(EXTRACT(epoch FROM v_settle), 2),
						  v_batches),
		false);
END;
$$;
SELECT pg_catalog.current_setting('bench.relay_result');
