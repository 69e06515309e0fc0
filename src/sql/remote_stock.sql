-- remote_stock.sql: stock homed on other shards.
--
-- In a sharded cluster a SKU's stock lives on the shard serving its home
-- partition (oms.partition_of_text(sku)).  An order whose basket has SKUs
-- homed elsewhere reserves, consumes, releases, ships and restocks their
-- units there, through synchronous PL/Proxy calls (extension oms_shard)
-- to the oms._remote_* functions below.  The home shard keeps those units
-- in its own oms.reservations, under the foreign order's id, so its
-- counters, its expiry sweep and its no-oversell lock order cover local
-- and foreign orders alike.
--
-- Each call is idempotent, keyed by (order id, SKU): a saga step that
-- commits on the other shard and then fails here runs again and finds
-- its work done.  A step never calls another shard while it holds stock
-- rows of its own, so two shards serving each other cannot deadlock.  A
-- shard that cannot be reached is a transient failure (OM010: the saga
-- retries with backoff); held units of an order whose shard never comes
-- back expire on the home shard (oms.reservation_ttl), so nothing leaks.
--
-- On a single node (no row in oms.shard) every SKU is home, and none of
-- these functions is called with anything to do.
--
-- requires: shard inventory

-- The basket's lines homed on other shards, one row per home partition.
CREATE FUNCTION oms._remote_lines(p_order_id uuid)
RETURNS TABLE(part integer, skus text[], quantities bigint[])
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = on
AS $$
	SELECT l.part, pg_catalog.array_agg(l.sku ORDER BY l.sku), pg_catalog.array_agg(l.quantity ORDER BY l.sku)
	FROM (SELECT oms.partition_of_text(i.sku) & (s.partition_count - 1) AS part, i.sku,
				 i.quantity::bigint AS quantity, s.partitions
		  FROM oms.shard AS s CROSS JOIN oms.order_items AS i
		  WHERE i.order_id = p_order_id) AS l
	WHERE NOT (l.part = ANY (l.partitions))
	GROUP BY l.part
	ORDER BY l.part
$$;
COMMENT ON FUNCTION oms._remote_lines(uuid) IS
	'The lines of an order whose SKUs are homed on other shards, grouped by home partition (none on a single node)';

/*
 * One call to the shard serving partition p_part (the functions of
 * extension oms_shard).  A shard that cannot be reached, or that is
 * shutting down, is OM010 (try again later); errors the other shard raises
 * (OM011 out of stock, OM008, OM020) keep their SQLSTATE and text.
 */
CREATE FUNCTION oms._call_shard(p_call text, p_part integer DEFAULT NULL, p_order_id uuid DEFAULT NULL,
								p_skus text[] DEFAULT NULL, p_quantities bigint[] DEFAULT NULL,
								p_now timestamptz DEFAULT NULL, p_sku text DEFAULT NULL,
								p_location text DEFAULT NULL, p_units bigint DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_part integer := coalesce(p_part, oms.partition_of_text(p_sku));
	v_message text;
BEGIN
	IF pg_catalog.to_regnamespace('oms_shard') IS NULL THEN
		RAISE EXCEPTION 'stock of partition % is on another shard, and extension oms_shard is not installed', v_part
			USING ERRCODE = 'OM011',
				  HINT = 'Run CREATE EXTENSION oms_shard on every shard (docs/cluster.md).';
	END IF;
	CASE p_call
		WHEN 'hold' THEN
			RETURN oms_shard.remote_hold(v_part, p_order_id, p_skus, p_quantities, p_now);
		WHEN 'consume' THEN
			RETURN oms_shard.remote_consume(v_part, p_order_id, p_skus, p_quantities);
		WHEN 'release' THEN
			RETURN oms_shard.remote_release(v_part, p_order_id);
		WHEN 'release_allocation' THEN
			RETURN oms_shard.remote_release_allocation(v_part, p_order_id, p_sku, p_units::integer);
		WHEN 'ship_from' THEN
			RETURN oms_shard.remote_ship_from(v_part, p_order_id, p_sku, p_location, p_units::integer);
		WHEN 'restock' THEN
			RETURN oms_shard.remote_restock(v_part, p_sku, p_location, p_units);
	END CASE;
EXCEPTION
	WHEN connection_exception OR admin_shutdown OR crash_shutdown OR cannot_connect_now OR internal_error THEN
		GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT;
		IF SQLSTATE = 'XX000' AND v_message NOT LIKE 'PL/Proxy function%' THEN
			RAISE;
		END IF;
		RAISE EXCEPTION 'the shard serving partition % cannot be reached', v_part
			USING ERRCODE = 'OM010',
				  DETAIL = v_message,
				  HINT = 'The call is tried again later; held units on that shard expire if it never is.';
END;
$$;
COMMENT ON FUNCTION oms._call_shard(text, integer, uuid, text[], bigint[], timestamptz, text, text, bigint) IS
	'Calls the shard serving a partition through oms_shard (hold, consume, release, release_allocation, ship_from, restock); OM010 when it cannot be reached';

-- One call per home partition of the order's remote lines: 'hold' (the
-- reserve step), 'consume' (confirm) or 'release' (the reserve step's
-- compensation).
CREATE FUNCTION oms._call_remote_lines(p_call text, p_order_id uuid, p_now timestamptz DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_group record;
BEGIN
	FOR v_group IN SELECT * FROM oms._remote_lines(p_order_id) LOOP
		PERFORM oms._call_shard(p_call, v_group.part, p_order_id, v_group.skus, v_group.quantities, p_now);
	END LOOP;
END;
$$;
COMMENT ON FUNCTION oms._call_remote_lines(text, uuid, timestamptz) IS
	'Holds, consumes or releases an order''s lines homed on other shards, there (one call per home partition; nothing on a single node)';

--
-- The home shard's side: what oms_shard's functions call.
--

-- OM020 unless this shard serves p_part and every SKU is homed in it.
CREATE FUNCTION oms._serve_remote(p_part integer, p_skus text[])
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = on
AS $$
DECLARE
	v_shard oms.shard;
	v_sku text;
BEGIN
	SELECT * INTO v_shard FROM oms.shard;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'this database is not a shard of a cluster'
			USING ERRCODE = 'OM020',
				  HINT = 'Configure it with oms_configure_shard().';
	END IF;
	PERFORM oms._refuse_partition(v_shard, p_part, 'a stock call');
	SELECT k INTO v_sku FROM pg_catalog.unnest(p_skus) AS k
	WHERE (oms.partition_of_text(k) & (v_shard.partition_count - 1)) <> (p_part & (v_shard.partition_count - 1))
	LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'SKU "%" is not homed in partition %', v_sku, p_part
			USING ERRCODE = 'OM020';
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._serve_remote(integer, text[]) IS
	'OM020 unless this shard serves partition p_part and every SKU given is homed in it';

CREATE FUNCTION oms._remote_hold(p_part integer, p_order_id uuid, p_skus text[], p_quantities bigint[],
								 p_now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._serve_remote(p_part, p_skus);
	-- Consumed already: a confirm that ran, seen by a late retry.
	IF NOT EXISTS (SELECT FROM oms.reservations AS r
				   WHERE r.order_id = p_order_id AND r.sku = ANY (p_skus) AND r.status = 'consumed') THEN
		PERFORM oms._reserve_lines(p_order_id, p_skus, p_quantities, p_now);
	END IF;
	RETURN oms._remote_allocation(p_order_id, p_skus);
END;
$$;
COMMENT ON FUNCTION oms._remote_hold(integer, uuid, text[], bigint[], timestamptz) IS
	'Home shard: holds units of SKUs of partition p_part for another shard''s order (again: the same allocation)';

CREATE FUNCTION oms._remote_allocation(p_order_id uuid, p_skus text[])
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(pg_catalog.jsonb_agg(a.item ORDER BY a.n), '[]'::jsonb)
	FROM pg_catalog.jsonb_array_elements(oms._order_allocation(p_order_id)) WITH ORDINALITY AS a(item, n)
	WHERE a.item ->> 'sku' = ANY (p_skus)
$$;
COMMENT ON FUNCTION oms._remote_allocation(uuid, text[]) IS
	'Home shard: an order''s reservations of the SKUs given, as [{sku, location, quantity, shipped, status}]';

CREATE FUNCTION oms._remote_consume(p_part integer, p_order_id uuid, p_skus text[], p_quantities bigint[])
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_skus text[];
	v_locations text[];
	v_units bigint[];
BEGIN
	PERFORM oms._serve_remote(p_part, p_skus);
	PERFORM FROM oms.reservations AS r
	JOIN oms.stock AS s ON s.sku = r.sku AND s.location = r.location
	WHERE r.order_id = p_order_id AND r.sku = ANY (p_skus)
	ORDER BY s.sku, s.location
	FOR UPDATE OF s;
	-- Every SKU's units held or consumed (a retry of a confirm that ran);
	-- else they expired before payment, as on a single node.
	IF EXISTS (
		SELECT FROM ROWS FROM (pg_catalog.unnest(p_skus), pg_catalog.unnest(p_quantities)) AS l(sku, quantity)
		WHERE l.quantity > coalesce((SELECT pg_catalog.sum(r.quantity) FROM oms.reservations AS r
									 WHERE r.order_id = p_order_id AND r.sku = l.sku
									   AND r.status IN ('held', 'consumed')), 0)) THEN
		RAISE EXCEPTION 'the reservations of the order expired before payment'
			USING ERRCODE = 'OM011',
				  DETAIL = 'A reservation on the SKU''s home shard was no longer held at confirmation.';
	END IF;
	WITH moved AS (
		UPDATE oms.reservations AS r SET status = 'consumed', updated_at = pg_catalog.now()
		WHERE r.order_id = p_order_id AND r.sku = ANY (p_skus) AND r.status = 'held'
		RETURNING r.sku, r.location, r.quantity
	)
	SELECT pg_catalog.array_agg(m.sku), pg_catalog.array_agg(m.location), pg_catalog.array_agg(m.quantity::bigint)
	INTO v_skus, v_locations, v_units
	FROM moved AS m;
	UPDATE oms.stock AS s SET on_hand = s.on_hand - u.units, updated_at = pg_catalog.now()
	FROM ROWS FROM (pg_catalog.unnest(v_skus), pg_catalog.unnest(v_locations), pg_catalog.unnest(v_units))
		AS u(sku, location, units)
	WHERE s.sku = u.sku AND s.location = u.location;
	RETURN oms._remote_allocation(p_order_id, p_skus);
END;
$$;
COMMENT ON FUNCTION oms._remote_consume(integer, uuid, text[], bigint[]) IS
	'Home shard: held units of another shard''s order become a stock decrement (OM011 when they expired; again: nothing)';

CREATE FUNCTION oms._remote_release(p_part integer, p_order_id uuid)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._serve_remote(p_part, '{}');
	RETURN pg_catalog.jsonb_build_object('released', oms._release_order(p_order_id));
END;
$$;
COMMENT ON FUNCTION oms._remote_release(integer, uuid) IS
	'Home shard: gives back the held units of another shard''s order (again: nothing)';

CREATE FUNCTION oms._remote_release_allocation(p_part integer, p_order_id uuid, p_sku text, p_units integer)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._serve_remote(p_part, ARRAY[p_sku]);
	RETURN oms._release_allocation(p_order_id, p_sku, p_units);
END;
$$;
COMMENT ON FUNCTION oms._remote_release_allocation(integer, uuid, text, integer) IS
	'Home shard: gives back consumed, unshipped units of another shard''s order (oms._release_allocation)';

CREATE FUNCTION oms._remote_ship_from(p_part integer, p_order_id uuid, p_sku text, p_location text,
									  p_units integer)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._serve_remote(p_part, ARRAY[p_sku]);
	PERFORM oms._ship_from(p_order_id, p_sku, p_location, p_units);
	RETURN oms._remote_allocation(p_order_id, ARRAY[p_sku]);
END;
$$;
COMMENT ON FUNCTION oms._remote_ship_from(integer, uuid, text, text, integer) IS
	'Home shard: counts units of another shard''s order as shipped from a location (oms._ship_from)';

CREATE FUNCTION oms._remote_restock(p_part integer, p_sku text, p_location text, p_units bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._serve_remote(p_part, ARRAY[p_sku]);
	PERFORM oms._restock(p_sku, p_location, p_units);
	RETURN oms._stock_level_json(p_sku, p_location);
END;
$$;
COMMENT ON FUNCTION oms._remote_restock(integer, text, text, bigint) IS
	'Home shard: puts returned units of a SKU back on hand at a location (oms._restock)';

REVOKE ALL ON FUNCTION oms._remote_lines(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._call_shard(text, integer, uuid, text[], bigint[], timestamptz, text, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._call_remote_lines(text, uuid, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._serve_remote(integer, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._remote_hold(integer, uuid, text[], bigint[], timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._remote_allocation(uuid, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._remote_consume(integer, uuid, text[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._remote_release(integer, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._remote_release_allocation(integer, uuid, text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._remote_ship_from(integer, uuid, text, text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._remote_restock(integer, text, text, bigint) FROM PUBLIC;
