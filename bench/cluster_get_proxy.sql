-- bench/cluster_get_proxy.sql: pgbench script of the "cluster" part, on the
-- router only: bench/cluster_get.sql without the public plpgsql wrapper,
-- calling the PL/Proxy function oms._r_get_order itself, to show what the
-- wrapper (its EXCEPTION block is a subtransaction per call) costs.
\set n random(1, :nids)
SELECT oms._r_get_order(id) FROM public.bench_order_ids WHERE n = :n;
