-- bench/relay_events.sql: the backlog of the relay drain benchmark (bench/relay.sh),
-- built once per run into an unlogged template table; every drain copies it
-- into oms.outbox (relay off), so each measured drain starts from the same rows.
--
-- :events events (psql -v events=N) of aggregatetype 'order', two per order
-- (seq 1 order.created, seq 2 order.processing: distinct aggregateids, per-order
-- sequences, as the API writes them), created_at strictly increasing.  The
-- payload has the shape of an order.created payload (oms._record_change: the
-- change data plus the whole order document) with five items: about 1.1 kB of
-- jsonb, 0.9 kB of JSON text, a little above a real three-item order.created
-- (~0.8 kB jsonb).
DROP TABLE IF EXISTS public.bench_relay_events;
CREATE UNLOGGED TABLE public.bench_relay_events AS
SELECT pg_catalog.gen_random_uuid() AS id,
	   'order'::text AS aggregatetype,
	   o.id AS aggregateid,
	   CASE WHEN e.seq = 1 THEN 'order.created' ELSE 'order.processing' END AS type,
	   pg_catalog.jsonb_build_object(
		   'order', pg_catalog.jsonb_build_object(
			   'order_id', o.id,
			   'customer_id', 'cust-' || o.n % 1000,
			   'status', CASE WHEN e.seq = 1 THEN 'pending' ELSE 'processing' END,
			   'currency', 'USD',
			   'total', 9747 + o.n % 100,
			   'version', e.seq,
			   'metadata', '{}'::jsonb,
			   'created_at', t.base,
			   'updated_at', t.base,
			   'items', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
								'sku', 'SKU-' || (o.n + l) % 10000, 'line_no', l, 'quantity', 1 + l % 3,
								'unit_price', 1999 + l, 'line_total', (1 + l % 3) * (1999 + l)))
						 FROM pg_catalog.generate_series(1, 5) AS l)),
		   'total', 9747 + o.n % 100,
		   'currency', 'USD',
		   'item_count', 5,
		   'idempotency_key', pg_catalog.md5('key-' || o.n || '-' || e.seq)::uuid,
		   'previous_status', CASE WHEN e.seq = 1 THEN NULL ELSE 'pending' END) AS payload,
	   e.seq::bigint AS seq,
	   t.base + i * interval '1 microsecond' AS created_at
FROM (SELECT pg_catalog.clock_timestamp() - interval '1 hour' AS base) AS t,
	 pg_catalog.generate_series(1, :events) AS i,
	 LATERAL (SELECT (i + 1) / 2 AS n, pg_catalog.md5('order-' || (i + 1) / 2)::uuid AS id) AS o,
	 LATERAL (SELECT 2 - i % 2 AS seq) AS e;
-- Average jsonb and JSON text size of a payload, for the report.
SELECT pg_catalog.format('%s|%s', round(avg(pg_catalog.pg_column_size(payload))),
						 round(avg(pg_catalog.length(payload::text))))
FROM public.bench_relay_events;
