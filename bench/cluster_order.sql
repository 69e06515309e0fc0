-- bench/cluster_order.sql: pgbench script of the "cluster" part (per-shard
-- costs), run directly on shard :shard of a cluster of :shards shards and
-- :partitions partitions.  One order of two distinct SKUs homed on shard
-- :home (public.bench_skus numbers the SKUs of each home shard 1..nskus),
-- created and paid with test_ok; the shard's worker reserves (on the home
-- shard when it is another one), charges and confirms.  The idempotency
-- key is the first of 64 random UUIDs whose partition this shard serves
-- (a key of another shard's partition would be refused, OM020).
\set i1 random(1, :nskus)
\set i2 1 + (:i1 + random(0, :nskus - 2)) % :nskus
\set qty1 random(1, 3)
\set qty2 random(1, 3)
SELECT oms_create_order(
	'cust-' || :client_id,
	(SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('sku', s.sku,
			'quantity', CASE s.n WHEN :i1 THEN :qty1 ELSE :qty2 END, 'unit_price', 1999) ORDER BY s.n)
	 FROM public.bench_skus AS s WHERE s.home = :home AND s.n IN (:i1, :i2)),
	'USD',
	(SELECT c.k FROM (SELECT pg_catalog.gen_random_uuid()::text AS k FROM pg_catalog.generate_series(1, 64)) AS c
	 WHERE (oms.partition_of_text(c.k) & (:partitions - 1)) % :shards = :shard LIMIT 1)) ->> 'order_id' AS order_id
\gset
SELECT 1 FROM oms_pay_order(':order_id', 'test_ok', pg_catalog.gen_random_uuid()::text);
