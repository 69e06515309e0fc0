-- bench/cluster_get.sql: pgbench script of the "cluster" part (router
-- overhead), run unchanged against the router database and directly
-- against its one shard.  One order document by id; the ids are in
-- public.bench_order_ids, the same rows in both databases (pgbench -D
-- nids=N), so both runs pay the same local index lookup.
\set n random(1, :nids)
SELECT oms_get_order(id) FROM public.bench_order_ids WHERE n = :n;
