-- shard.sql: what a database knows about its place in a sharded cluster.
--
-- A cluster splits orders and SKUs over a fixed number of partitions (a
-- power of two, at most 4096); each shard database serves some of them,
-- and the router (extension oms_router) sends every call to the shard that
-- serves its partition.  An order's partition is written into its id (the
-- 12 rand_a bits of the version 7 UUID, src/input.c) and copied into every
-- id the order hands out, so the router needs no lookup table.  A create
-- with an idempotency key lands in the key's partition, so a retried
-- create reaches the shard that has its first result; a SKU's stock lives
-- in its home partition.
--
-- An unconfigured database (no row in oms.shard) serves every partition:
-- that is a single node, as before 0.4.0.  A configured shard refuses
-- calls for partitions it does not serve (OM020), so a misrouted call can
-- never create a second copy of an order or of a SKU's stock.
--
-- requires: schema

-- Ids carrying a partition (src/input.c).
CREATE FUNCTION oms._uuid_v7(p_partition integer, p_partition_count integer)
RETURNS uuid
LANGUAGE c VOLATILE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_uuid_v7_in';
COMMENT ON FUNCTION oms._uuid_v7(integer, integer) IS
	'A version 7 UUID whose low partition bits are p_partition (masked by p_partition_count - 1; NULL count: all 12 bits); NULL p_partition: random';

-- The functions that read oms.shard (one row, no useful index) run with
-- enable_seqscan on: the saga's basket functions turn it off for their
-- callees, and the scan would then be priced above jit_above_cost, so each
-- read of one row would be JIT-compiled (about 200 ms a call).
CREATE TABLE oms.shard (
	one			boolean PRIMARY KEY DEFAULT true CHECK (one),
	shard		integer NOT NULL CHECK (shard BETWEEN 0 AND 4095),
	partition_count integer NOT NULL
		CHECK (partition_count BETWEEN 1 AND 4096 AND (partition_count & (partition_count - 1)) = 0),
	partitions	integer[] NOT NULL
		CHECK (pg_catalog.cardinality(partitions) >= 1 AND pg_catalog.array_position(partitions, NULL) IS NULL),
	configured_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE oms.shard IS
	'This database''s place in a sharded cluster (one row), or no row: a single node serving every partition';
SELECT pg_catalog.pg_extension_config_dump('oms.shard', '');

CREATE FUNCTION oms.partition_of_id(id uuid)
RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT ((pg_catalog.get_byte(pg_catalog.uuid_send(id), 6) & 15) << 8)
		| pg_catalog.get_byte(pg_catalog.uuid_send(id), 7)
$$;
COMMENT ON FUNCTION oms.partition_of_id(uuid) IS
	'The 12 partition bits of an oms id (0..4095); the partition is this value & (partition_count - 1)';

CREATE FUNCTION oms.partition_of_text(value text)
RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT ('x' || pg_catalog.left(pg_catalog.md5(value), 8))::bit(32)::integer
$$;
COMMENT ON FUNCTION oms.partition_of_text(text) IS
	'A stable 32-bit hash of an idempotency key or SKU (the first 32 bits of its MD5); the partition is this value & (partition_count - 1)';

-- Raises OM020 for a partition this shard does not serve.
CREATE FUNCTION oms._refuse_partition(p_shard oms.shard, p_bits integer, p_what text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_partition integer := p_bits & (p_shard.partition_count - 1);
BEGIN
	IF v_partition = ANY (p_shard.partitions) THEN
		RETURN;
	END IF;
	RAISE EXCEPTION '% belongs to partition %, which shard % does not serve', p_what, v_partition, p_shard.shard
		USING ERRCODE = 'OM020',
			  DETAIL = pg_catalog.format('Shard %s serves partitions %s of %s.', p_shard.shard,
										 pg_catalog.array_to_string(p_shard.partitions, ', '),
										 p_shard.partition_count),
			  HINT = pg_catalog.format('Call through the router, or on the shard that serves partition %s.',
									   v_partition);
END;
$$;
COMMENT ON FUNCTION oms._refuse_partition(oms.shard, integer, text) IS
	'Raises OM020 unless the shard serves the partition of p_bits';

CREATE FUNCTION oms._own_id(p_id uuid, p_noun text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = on
AS $$
DECLARE
	v_shard oms.shard;
BEGIN
	SELECT * INTO v_shard FROM oms.shard;
	IF FOUND AND p_id IS NOT NULL THEN
		PERFORM oms._refuse_partition(v_shard, oms.partition_of_id(p_id),
									  pg_catalog.format('%s "%s"', p_noun, p_id));
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._own_id(uuid, text) IS
	'OM020 when a configured shard does not serve the partition of an order, shipment or return id';

CREATE FUNCTION oms._own_sku(p_sku text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = on
AS $$
DECLARE
	v_shard oms.shard;
BEGIN
	SELECT * INTO v_shard FROM oms.shard;
	IF FOUND AND p_sku IS NOT NULL THEN
		PERFORM oms._refuse_partition(v_shard, oms.partition_of_text(p_sku),
									  pg_catalog.format('SKU "%s"', p_sku));
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._own_sku(text) IS
	'OM020 when a configured shard is not the home of a SKU (its stock lives on the shard serving its partition)';

CREATE FUNCTION oms._sku_is_home(p_sku text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = on
AS $$
	SELECT NOT EXISTS (
		SELECT FROM oms.shard AS s
		WHERE NOT ((oms.partition_of_text(p_sku) & (s.partition_count - 1)) = ANY (s.partitions)))
$$;
COMMENT ON FUNCTION oms._sku_is_home(text) IS
	'Whether this database holds the stock of a SKU (always, on a single node)';

-- The id of a new order: in the partition of its idempotency key, or in a
-- random partition this shard serves when there is no key.
CREATE FUNCTION oms._new_order_id(p_idempotency_key text)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = on
AS $$
DECLARE
	v_shard oms.shard;
BEGIN
	SELECT * INTO v_shard FROM oms.shard;
	IF NOT FOUND THEN
		RETURN oms._uuid_v7(NULL, NULL);
	ELSIF p_idempotency_key IS NULL THEN
		RETURN oms._uuid_v7(v_shard.partitions[1 + pg_catalog.floor(pg_catalog.random()
						   * pg_catalog.cardinality(v_shard.partitions))::integer], v_shard.partition_count);
	END IF;
	PERFORM oms._refuse_partition(v_shard, oms.partition_of_text(p_idempotency_key),
								  pg_catalog.format('idempotency key "%s"', p_idempotency_key));
	RETURN oms._uuid_v7(oms.partition_of_text(p_idempotency_key), v_shard.partition_count);
END;
$$;
COMMENT ON FUNCTION oms._new_order_id(text) IS
	'A new order id in the partition of the idempotency key (OM020 when this shard does not serve it), or in one of this shard''s partitions';

-- The id of anything an order hands out: in the order's partition.
CREATE FUNCTION oms._child_id(p_order_id uuid)
RETURNS uuid
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT oms._uuid_v7(oms.partition_of_id(p_order_id), NULL)
$$;
COMMENT ON FUNCTION oms._child_id(uuid) IS
	'A new id (shipment, return, saga, payment, refund) carrying the partition bits of its order';

CREATE FUNCTION @extschema@.oms_configure_shard(shard integer, partition_count integer, partitions integer[])
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_bad integer;
BEGIN
	IF shard IS NULL OR partition_count IS NULL OR partitions IS NULL THEN
		RAISE EXCEPTION 'shard, partition_count and partitions must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	ELSIF shard NOT BETWEEN 0 AND 4095 THEN
		RAISE EXCEPTION 'shard must be between 0 and 4095, not %', shard
			USING ERRCODE = 'invalid_parameter_value';
	ELSIF partition_count NOT BETWEEN 1 AND 4096 OR (partition_count & (partition_count - 1)) <> 0 THEN
		RAISE EXCEPTION 'partition_count must be a power of two between 1 and 4096, not %', partition_count
			USING ERRCODE = 'invalid_parameter_value';
	ELSIF pg_catalog.cardinality(partitions) = 0 THEN
		RAISE EXCEPTION 'a shard must serve at least one partition'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT p INTO v_bad FROM pg_catalog.unnest(partitions) AS p
	WHERE p IS NULL OR p NOT BETWEEN 0 AND partition_count - 1 LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'partition % is not between 0 and %', v_bad, partition_count - 1
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF EXISTS (SELECT FROM oms.shard AS s WHERE s.partition_count <> oms_configure_shard.partition_count) THEN
		RAISE EXCEPTION 'the partition count of a cluster does not change'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = pg_catalog.format('This shard was configured with %s partitions.',
											 (SELECT s.partition_count FROM oms.shard AS s)),
				  HINT = 'Move partitions between shards instead (docs/architecture.md, "Adding a shard").';
	END IF;
	INSERT INTO oms.shard (shard, partition_count, partitions)
	VALUES (shard, partition_count,
			(SELECT pg_catalog.array_agg(DISTINCT p ORDER BY p) FROM pg_catalog.unnest(partitions) AS p))
	ON CONFLICT (one) DO UPDATE
	SET shard = excluded.shard, partitions = excluded.partitions, configured_at = pg_catalog.now();
	RETURN oms._shard_info();
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_configure_shard(integer, integer, integer[]) IS
	'Makes this database shard number `shard` of a cluster of `partition_count` partitions, serving `partitions`';

CREATE FUNCTION oms._shard_info()
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = on
AS $$
	SELECT COALESCE(
		(SELECT pg_catalog.jsonb_build_object('shard', s.shard, 'partition_count', s.partition_count,
											  'partitions', pg_catalog.to_jsonb(s.partitions),
											  'configured_at', s.configured_at)
		 FROM oms.shard AS s),
		'{"shard": null, "partition_count": 1, "partitions": [0]}'::jsonb)
$$;
COMMENT ON FUNCTION oms._shard_info() IS 'The body of oms_shard_info()';

CREATE FUNCTION @extschema@.oms_shard_info()
RETURNS jsonb
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT oms._shard_info()
$$;
COMMENT ON FUNCTION @extschema@.oms_shard_info() IS
	'This database''s shard number, partition count and partitions; shard null on a single node';

REVOKE ALL ON TABLE oms.shard FROM PUBLIC;
GRANT SELECT ON TABLE oms.shard TO oms_reader;
REVOKE ALL ON FUNCTION oms._uuid_v7(integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms.partition_of_id(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms.partition_of_text(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._refuse_partition(oms.shard, integer, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._own_id(uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._own_sku(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._sku_is_home(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._new_order_id(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._child_id(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_configure_shard(integer, integer, integer[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_shard_info() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._shard_info() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_configure_shard(integer, integer, integer[]) TO oms_admin;
GRANT EXECUTE ON FUNCTION @extschema@.oms_shard_info() TO oms_app, oms_reader;
GRANT EXECUTE ON FUNCTION oms.partition_of_id(uuid), oms.partition_of_text(text) TO oms_app, oms_reader;
