-- oms_shard 0.4.0: the calls one shard of an oms cluster makes to another.
--
-- A SKU's stock lives on the shard serving its home partition; an order on
-- another shard reserves, consumes, releases, ships and restocks its units
-- there with these functions (oms core, src/sql/remote_stock.sql, calls
-- them).  Each is a PL/Proxy function: one synchronous, autocommitted call
-- on the shard that serves partition p_part in the PL/Proxy cluster
-- oms_cluster (a foreign server defined the same way on the router and on
-- every shard, docs/cluster.md), running the oms._remote_* function of the
-- same arguments there.  The remote functions are idempotent, so a caller
-- whose transaction fails after the call simply calls again.

\echo Use "CREATE EXTENSION oms_shard CASCADE" to load this file. \quit

CREATE FUNCTION oms_shard.remote_hold(p_part integer, p_order_id uuid, p_skus text[], p_quantities bigint[], p_now timestamptz)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON p_part;
	TARGET oms._remote_hold;
$$;
COMMENT ON FUNCTION oms_shard.remote_hold(integer, uuid, text[], bigint[], timestamptz) IS
	'Holds units of SKUs homed in partition p_part for an order of this shard, on the shard serving p_part';
REVOKE ALL ON FUNCTION oms_shard.remote_hold(integer, uuid, text[], bigint[], timestamptz) FROM PUBLIC;

CREATE FUNCTION oms_shard.remote_consume(p_part integer, p_order_id uuid, p_skus text[], p_quantities bigint[])
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON p_part;
	TARGET oms._remote_consume;
$$;
COMMENT ON FUNCTION oms_shard.remote_consume(integer, uuid, text[], bigint[]) IS
	'Turns those held units into a stock decrement on the shard serving p_part (confirm)';
REVOKE ALL ON FUNCTION oms_shard.remote_consume(integer, uuid, text[], bigint[]) FROM PUBLIC;

CREATE FUNCTION oms_shard.remote_release(p_part integer, p_order_id uuid)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON p_part;
	TARGET oms._remote_release;
$$;
COMMENT ON FUNCTION oms_shard.remote_release(integer, uuid) IS
	'Gives back an orders held units on the shard serving p_part (compensation)';
REVOKE ALL ON FUNCTION oms_shard.remote_release(integer, uuid) FROM PUBLIC;

CREATE FUNCTION oms_shard.remote_release_allocation(p_part integer, p_order_id uuid, p_sku text, p_units integer)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON p_part;
	TARGET oms._remote_release_allocation;
$$;
COMMENT ON FUNCTION oms_shard.remote_release_allocation(integer, uuid, text, integer) IS
	'Gives back consumed, unshipped units of an orders SKU on its home shard (canceled units)';
REVOKE ALL ON FUNCTION oms_shard.remote_release_allocation(integer, uuid, text, integer) FROM PUBLIC;

CREATE FUNCTION oms_shard.remote_ship_from(p_part integer, p_order_id uuid, p_sku text, p_location text, p_units integer)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON p_part;
	TARGET oms._remote_ship_from;
$$;
COMMENT ON FUNCTION oms_shard.remote_ship_from(integer, uuid, text, text, integer) IS
	'Counts units of an orders SKU as shipped (negative: given back) from a location of its home shard';
REVOKE ALL ON FUNCTION oms_shard.remote_ship_from(integer, uuid, text, text, integer) FROM PUBLIC;

CREATE FUNCTION oms_shard.remote_restock(p_part integer, p_sku text, p_location text, p_units bigint)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON p_part;
	TARGET oms._remote_restock;
$$;
COMMENT ON FUNCTION oms_shard.remote_restock(integer, text, text, bigint) IS
	'Puts returned units of a SKU back on hand at a location of its home shard';
REVOKE ALL ON FUNCTION oms_shard.remote_restock(integer, text, text, bigint) FROM PUBLIC;
