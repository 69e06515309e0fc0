-- oms upgrade script 0.3.0 -> 0.4.0: the rest of an order's life (stock in
-- locations, a quantity ledger per line, status in three dimensions,
-- shipments, canceling what has not shipped, returns).  Frozen once 0.4.0
-- is released; later changes go into the next script.
-- test/t/040_upgrade.pl proves that a database updated with this script
-- has the same catalog as a fresh install of 0.4.0.

\echo Use "ALTER EXTENSION oms UPDATE TO '0.4.0'" to load this file. \quit

-- ALTER EXTENSION runs this script with the extension's schema (usually
-- public) first in search_path, where a database owner may have planted
-- operators for oms types: resolve nothing through it.
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

--
-- Stock in locations (src/sql/inventory.sql).
--
-- Stock is kept per SKU and location; what existed goes to the location
-- 'default', which per-SKU calls keep using.  The keys change under the
-- foreign key that joins them, so the foreign key goes first and comes
-- back on (sku, location).  New columns are appended, as a fresh install
-- has them last.

CREATE TABLE oms.locations (
	code		text PRIMARY KEY CHECK (pg_catalog.length(code) BETWEEN 1 AND 100),
	name		text,
	priority	integer NOT NULL DEFAULT 0,
	active		boolean NOT NULL DEFAULT true,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE oms.locations IS
	'Places stock is kept in (warehouses, stores); reserving prefers the lowest (priority, code) and skips inactive ones';
INSERT INTO oms.locations (code, name) VALUES ('default', 'Default location');

CREATE FUNCTION oms._locations_merge_default()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NEW.code = 'default' THEN
		UPDATE oms.locations AS l
		SET name = coalesce(NEW.name, l.name), priority = NEW.priority, active = NEW.active,
			created_at = least(l.created_at, NEW.created_at), updated_at = NEW.updated_at
		WHERE l.code = 'default';
		IF FOUND THEN
			RETURN NULL;
		END IF;
	END IF;
	RETURN NEW;
END;
$$;
COMMENT ON FUNCTION oms._locations_merge_default() IS
	'Trigger: inserting the location ''default'' again (a restore) updates the existing row';
CREATE TRIGGER locations_merge_default BEFORE INSERT ON oms.locations
	FOR EACH ROW EXECUTE FUNCTION oms._locations_merge_default();
SELECT pg_catalog.pg_extension_config_dump('oms.locations', '');

ALTER TABLE oms.reservations DROP CONSTRAINT reservations_sku_fkey;
ALTER TABLE oms.stock
	ADD COLUMN location text NOT NULL DEFAULT 'default' CONSTRAINT stock_location_fkey REFERENCES oms.locations (code),
	DROP CONSTRAINT stock_pkey,
	ADD CONSTRAINT stock_pkey PRIMARY KEY (sku, location);
ALTER TABLE oms.reservations
	ADD COLUMN location text NOT NULL DEFAULT 'default',
	ADD COLUMN shipped integer NOT NULL DEFAULT 0,
	ADD CONSTRAINT reservations_shipped_check CHECK (shipped >= 0 AND shipped <= quantity),
	DROP CONSTRAINT reservations_pkey,
	ADD CONSTRAINT reservations_pkey PRIMARY KEY (order_id, sku, location),
	ADD CONSTRAINT reservations_sku_location_fkey FOREIGN KEY (sku, location) REFERENCES oms.stock (sku, location);
DROP INDEX oms.reservations_held_sku_expiry_idx;
CREATE INDEX reservations_held_sku_expiry_idx ON oms.reservations (sku, location, expires_at) WHERE status = 'held';
COMMENT ON TABLE oms.stock IS
	'Units on hand per SKU and location; reservations are subtracted to get availability';
COMMENT ON COLUMN oms.stock.reserved IS
	'Units of the (SKU, location)''s held reservations, expired ones not yet swept included; kept by triggers on oms.reservations';
COMMENT ON TABLE oms.reservations IS 'Units of a SKU held at a location for an order until expires_at';
COMMENT ON COLUMN oms.reservations.shipped IS
	'Units of this consumed allocation that are in shipments (oms._ship_from)';

-- Functions whose arguments gained the location.
DROP FUNCTION oms._sweep_expired(text, timestamptz);
DROP FUNCTION oms._check_stock_change(text, bigint);

CREATE VIEW oms.location_stock_levels AS
	SELECT s.sku, s.location, s.on_hand,
		   s.reserved - x.expired AS reserved,
		   s.on_hand - (s.reserved - x.expired) AS available,
		   s.updated_at, l.priority, l.active
	FROM oms.stock AS s
	JOIN oms.locations AS l ON l.code = s.location
	CROSS JOIN LATERAL (SELECT coalesce(pg_catalog.sum(r.quantity), 0)::bigint AS expired
						FROM oms.reservations AS r
						WHERE r.sku = s.sku AND r.location = s.location AND r.status = 'held'
						  AND r.expires_at <= pg_catalog.now()) AS x;
COMMENT ON VIEW oms.location_stock_levels IS
	'On hand, reserved (held and unexpired) and available units per SKU and location, with the location''s priority and active flag';
CREATE OR REPLACE VIEW oms.stock_levels AS
	SELECT l.sku, pg_catalog.sum(l.on_hand)::bigint AS on_hand,
		   pg_catalog.sum(l.reserved)::bigint AS reserved,
		   pg_catalog.sum(l.available)::bigint AS available,
		   pg_catalog.max(l.updated_at) AS updated_at
	FROM oms.location_stock_levels AS l
	GROUP BY l.sku;
COMMENT ON VIEW oms.stock_levels IS
	'On hand, reserved (held and unexpired) and available units per SKU, summed over all locations (inactive ones included)';

CREATE OR REPLACE FUNCTION oms._reservations_count()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_change record;
BEGIN
	IF TG_OP = 'INSERT' THEN
		IF coalesce(pg_catalog.current_setting('oms.restoring', true), 'off')::boolean THEN
			-- A restore may load the stock rows before or after these, with
			-- their counts (or, from a 0.2.0 dump, without): count again.
			UPDATE oms.stock AS s
			SET reserved = (SELECT coalesce(pg_catalog.sum(r.quantity), 0) FROM oms.reservations AS r
							WHERE r.sku = s.sku AND r.location = s.location AND r.status = 'held')
			WHERE (s.sku, s.location) IN (SELECT n.sku, n.location FROM new_rows AS n);
			RETURN NULL;
		END IF;
		FOR v_change IN
			SELECT n.sku, n.location, pg_catalog.sum(n.quantity)::bigint AS delta
			FROM new_rows AS n WHERE n.status = 'held'
			GROUP BY n.sku, n.location ORDER BY n.sku, n.location
		LOOP
			UPDATE oms.stock AS s SET reserved = s.reserved + v_change.delta
			WHERE s.sku = v_change.sku AND s.location = v_change.location;
		END LOOP;
	ELSIF TG_OP = 'UPDATE' THEN
		FOR v_change IN
			SELECT d.sku, d.location, pg_catalog.sum(d.units)::bigint AS delta
			FROM (SELECT n.sku, n.location, n.quantity::bigint AS units FROM new_rows AS n WHERE n.status = 'held'
				  UNION ALL
				  SELECT o.sku, o.location, -o.quantity::bigint FROM old_rows AS o WHERE o.status = 'held') AS d
			GROUP BY d.sku, d.location HAVING pg_catalog.sum(d.units) <> 0 ORDER BY d.sku, d.location
		LOOP
			UPDATE oms.stock AS s SET reserved = s.reserved + v_change.delta
			WHERE s.sku = v_change.sku AND s.location = v_change.location;
		END LOOP;
	ELSIF TG_OP = 'DELETE' THEN
		FOR v_change IN
			SELECT o.sku, o.location, pg_catalog.sum(o.quantity)::bigint AS delta
			FROM old_rows AS o WHERE o.status = 'held'
			GROUP BY o.sku, o.location ORDER BY o.sku, o.location
		LOOP
			UPDATE oms.stock AS s SET reserved = s.reserved - v_change.delta
			WHERE s.sku = v_change.sku AND s.location = v_change.location;
		END LOOP;
	ELSE
		UPDATE oms.stock AS s SET reserved = 0 WHERE s.reserved <> 0;
	END IF;
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION oms._reservations_count() IS
	'Trigger: keeps oms.stock.reserved equal to the units of each (SKU, location)''s held reservations';

CREATE OR REPLACE FUNCTION oms._stock_restore_count()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF coalesce(pg_catalog.current_setting('oms.restoring', true), 'off')::boolean THEN
		NEW.reserved := (SELECT coalesce(pg_catalog.sum(r.quantity), 0) FROM oms.reservations AS r
						 WHERE r.sku = NEW.sku AND r.location = NEW.location AND r.status = 'held');
	END IF;
	RETURN NEW;
END;
$$;
COMMENT ON FUNCTION oms._stock_restore_count() IS
	'Trigger: under oms.restoring, a stock row inserted gets its reserved count from the held reservations already there';

CREATE OR REPLACE FUNCTION oms._sweep_expired(p_sku text, p_location text, p_now timestamptz)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_count integer;
BEGIN
	WITH due AS (
		SELECT r.order_id FROM oms.reservations AS r
		WHERE r.sku = p_sku AND r.location = p_location AND r.status = 'held' AND r.expires_at <= p_now
		FOR UPDATE SKIP LOCKED
	)
	UPDATE oms.reservations AS r SET status = 'expired', updated_at = pg_catalog.now()
	FROM due
	WHERE r.order_id = due.order_id AND r.sku = p_sku AND r.location = p_location AND r.status = 'held';
	GET DIAGNOSTICS v_count = ROW_COUNT;
	RETURN v_count;
END;
$$;
COMMENT ON FUNCTION oms._sweep_expired(text, text, timestamptz) IS
	'Marks the held reservations of a SKU at a location expired at p_now as expired (caller holds the stock row); returns how many';

CREATE OR REPLACE FUNCTION oms._reserved(p_sku text, p_now timestamptz)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- PL/pgSQL, not SQL: the plan is cached instead of made on every call.
	RETURN coalesce((SELECT pg_catalog.sum(s.reserved - coalesce((SELECT pg_catalog.sum(r.quantity)
																	FROM oms.reservations AS r
																	WHERE r.sku = s.sku AND r.location = s.location
																	  AND r.status = 'held'
																	  AND r.expires_at <= p_now), 0))
					 FROM oms.stock AS s WHERE s.sku = p_sku), 0)::bigint;
END;
$$;
COMMENT ON FUNCTION oms._reserved(text, timestamptz) IS
	'Units of a SKU held by unexpired reservations at p_now, over all locations';

CREATE OR REPLACE FUNCTION oms._stock_level_json(p_sku text, p_location text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN (SELECT pg_catalog.jsonb_build_object('sku', l.sku, 'location', l.location, 'on_hand', l.on_hand,
												 'reserved', l.reserved, 'available', l.available,
												 'updated_at', l.updated_at)
			FROM oms.location_stock_levels AS l WHERE l.sku = p_sku AND l.location = p_location);
END;
$$;
COMMENT ON FUNCTION oms._stock_level_json(text, text) IS
	'The stock level of a SKU at a location: sku, location, on_hand, reserved, available, updated_at';

CREATE OR REPLACE FUNCTION oms._check_location(p_location text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._check_identifier('location', p_location, 100);
	PERFORM FROM oms.locations AS l WHERE l.code = p_location;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'location "%" does not exist', p_location
			USING ERRCODE = 'no_data_found',
				  HINT = 'Create it with oms_set_location().';
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._check_location(text) IS
	'Raises 22004/22001/22023 for an invalid location code, P0002 for a location that does not exist';

CREATE OR REPLACE FUNCTION oms._hold_allocation(p_order_id uuid, p_skus text[], p_locations text[],
									 p_quantities bigint[], p_now timestamptz, p_expires_at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
	IF NOT EXISTS (SELECT FROM oms.reservations AS r WHERE r.order_id = p_order_id) THEN
		INSERT INTO oms.reservations (order_id, sku, location, quantity, status, expires_at, created_at, updated_at)
		SELECT p_order_id, a.sku, a.location, a.quantity, 'held', p_expires_at, p_now, p_now
		FROM ROWS FROM (pg_catalog.unnest(p_skus), pg_catalog.unnest(p_locations),
						pg_catalog.unnest(p_quantities)) AS a(sku, location, quantity);
		RETURN;
	END IF;
	-- A step run again: rows of the earlier attempt.
	-- Only the SKUs given: a shard holding stock for another shard's order
	-- gets one call per partition of the basket.
	DELETE FROM oms.reservations AS r
	WHERE r.order_id = p_order_id AND r.sku = ANY (p_skus)
	  AND (r.sku, r.location) NOT IN (SELECT a.sku, a.location
									  FROM ROWS FROM (pg_catalog.unnest(p_skus),
													  pg_catalog.unnest(p_locations)) AS a(sku, location));
	UPDATE oms.reservations AS r
	SET quantity = a.quantity, status = 'held', expires_at = p_expires_at, updated_at = p_now
	FROM ROWS FROM (pg_catalog.unnest(p_skus), pg_catalog.unnest(p_locations),
					pg_catalog.unnest(p_quantities)) AS a(sku, location, quantity)
	WHERE r.order_id = p_order_id AND r.sku = a.sku AND r.location = a.location;
	INSERT INTO oms.reservations (order_id, sku, location, quantity, status, expires_at, created_at, updated_at)
	SELECT p_order_id, a.sku, a.location, a.quantity, 'held', p_expires_at, p_now, p_now
	FROM ROWS FROM (pg_catalog.unnest(p_skus), pg_catalog.unnest(p_locations),
					pg_catalog.unnest(p_quantities)) AS a(sku, location, quantity)
	WHERE NOT EXISTS (SELECT FROM oms.reservations AS r
					  WHERE r.order_id = p_order_id AND r.sku = a.sku AND r.location = a.location)
	ORDER BY a.sku, a.location;
END;
$$;
COMMENT ON FUNCTION oms._hold_allocation(uuid, text[], text[], bigint[], timestamptz, timestamptz) IS
	'Writes an order''s allocation as held reservations (rows of an earlier attempt reused or deleted)';

CREATE OR REPLACE FUNCTION oms._single_location(p_order_id uuid, p_skus text[], p_quantities bigint[])
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
BEGIN
	-- sku = ANY (the array), not a join on oms.order_items: the stock rows
	-- are found through the primary key's sku prefix even before the
	-- table has statistics.  An order without reservations (the common
	-- case) skips the join on them: a generic plan made while the table
	-- was empty could read all of it.
	IF NOT EXISTS (SELECT FROM oms.reservations AS r WHERE r.order_id = p_order_id) THEN
		RETURN (SELECT s.location
				FROM oms.stock AS s
				JOIN ROWS FROM (pg_catalog.unnest(p_skus), pg_catalog.unnest(p_quantities)) AS i(sku, quantity)
					ON i.sku = s.sku
				JOIN oms.locations AS l ON l.code = s.location
				WHERE s.sku = ANY (p_skus) AND l.active AND s.on_hand - s.reserved >= i.quantity
				GROUP BY s.location, l.priority
				HAVING pg_catalog.count(*) = pg_catalog.cardinality(p_skus)
				ORDER BY l.priority, s.location
				LIMIT 1);
	END IF;
	RETURN (SELECT s.location
			FROM oms.stock AS s
			JOIN ROWS FROM (pg_catalog.unnest(p_skus), pg_catalog.unnest(p_quantities)) AS i(sku, quantity)
				ON i.sku = s.sku
			JOIN oms.locations AS l ON l.code = s.location
			LEFT JOIN oms.reservations AS r
				ON r.order_id = p_order_id AND r.sku = s.sku AND r.location = s.location AND r.status = 'held'
			WHERE s.sku = ANY (p_skus) AND l.active
			  AND s.on_hand - s.reserved + coalesce(r.quantity, 0) >= i.quantity
			GROUP BY s.location, l.priority
			HAVING pg_catalog.count(*) = pg_catalog.cardinality(p_skus)
			ORDER BY l.priority, s.location
			LIMIT 1);
END;
$$;
COMMENT ON FUNCTION oms._single_location(uuid, text[], bigint[]) IS
	'The active location with the lowest (priority, code) that can serve a whole basket (its SKUs and quantities, in SKU order), or NULL';

CREATE OR REPLACE FUNCTION oms._reserve_order(p_order_id uuid, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
	v_lines text[];
	v_line_quantities bigint[];
BEGIN
	-- Lines homed on other shards first, on their shards
	-- (src/sql/remote_stock.sql; nothing on a single node): no stock row
	-- of this shard is locked while another shard is called.
	PERFORM oms._call_remote_lines('hold', p_order_id, p_now);
	SELECT pg_catalog.array_agg(i.sku ORDER BY i.sku), pg_catalog.array_agg(i.quantity::bigint ORDER BY i.sku)
	INTO v_lines, v_line_quantities
	FROM oms.order_items AS i WHERE i.order_id = p_order_id AND oms._sku_is_home(i.sku);
	IF v_lines IS NOT NULL THEN
		PERFORM oms._reserve_lines(p_order_id, v_lines, v_line_quantities, p_now);
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._reserve_order(uuid, timestamptz) IS
	'Reserves all lines of an order: those homed on other shards there, the others here (oms._reserve_lines), all or nothing (OM011 when short)';

CREATE OR REPLACE FUNCTION oms._consume_at_once(p_order_id uuid, p_now timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
	v_skus text[];
	v_quantities bigint[];
	v_location text;
BEGIN
	SELECT pg_catalog.array_agg(i.sku ORDER BY i.sku), pg_catalog.array_agg(i.quantity::bigint ORDER BY i.sku)
	INTO v_skus, v_quantities
	FROM oms.order_items AS i WHERE i.order_id = p_order_id;
	v_location := oms._single_location(p_order_id, v_skus, v_quantities);
	IF v_location IS NULL THEN
		RETURN false;
	END IF;
	WITH r AS (
		INSERT INTO oms.reservations (order_id, sku, location, quantity, status, expires_at, created_at, updated_at)
		SELECT p_order_id, i.sku, v_location, i.quantity, 'consumed', 'infinity', p_now, pg_catalog.now()
		FROM ROWS FROM (pg_catalog.unnest(v_skus), pg_catalog.unnest(v_quantities)) AS i(sku, quantity)
	)
	UPDATE oms.stock AS s SET on_hand = s.on_hand - i.quantity, updated_at = pg_catalog.now()
	FROM ROWS FROM (pg_catalog.unnest(v_skus), pg_catalog.unnest(v_quantities)) AS i(sku, quantity)
	WHERE s.sku = i.sku AND s.location = v_location;
	RETURN true;
END;
$$;
COMMENT ON FUNCTION oms._consume_at_once(uuid, timestamptz) IS
	'Reserves and consumes a basket at the one location that serves it alone, returning false (nothing written) when none does';

CREATE OR REPLACE FUNCTION oms._lock_order_stock(p_order_id uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- Joined on the whole primary key: one index probe per reservation.
	PERFORM FROM oms.reservations AS r
	JOIN oms.stock AS s ON s.sku = r.sku AND s.location = r.location
	WHERE r.order_id = p_order_id
	ORDER BY s.sku, s.location
	FOR UPDATE OF s;
END;
$$;
COMMENT ON FUNCTION oms._lock_order_stock(uuid) IS
	'Locks the stock rows of the (SKU, location) pairs an order has reservations at, in (SKU, location) order';

CREATE OR REPLACE FUNCTION oms._release_order(p_order_id uuid)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_count integer;
BEGIN
	PERFORM oms._call_remote_lines('release', p_order_id);
	PERFORM oms._lock_order_stock(p_order_id);
	UPDATE oms.reservations AS r SET status = 'released', updated_at = pg_catalog.now()
	WHERE r.order_id = p_order_id AND r.status = 'held';
	GET DIAGNOSTICS v_count = ROW_COUNT;
	RETURN v_count;
END;
$$;
COMMENT ON FUNCTION oms._release_order(uuid) IS 'Gives back the held reservations of an order, on the shards that hold its remote lines too';

CREATE OR REPLACE FUNCTION oms._move_reserved_stock(p_order_id uuid, p_from oms.reservation_status,
										 p_to oms.reservation_status, p_sign integer)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_skus text[];
	v_locations text[];
	v_units bigint[];
BEGIN
	IF p_from = 'held' AND p_to = 'consumed' THEN
		-- Lines homed on other shards are consumed there first, before
		-- this shard's stock rows are locked.
		PERFORM oms._call_remote_lines('consume', p_order_id);
	END IF;
	PERFORM oms._lock_order_stock(p_order_id);
	-- The pay step checks the expiry at its batch's clock and then pins the
	-- reservations; one that expired in between may have been swept by a
	-- reserver that needed its units.  Confirming without it would sell
	-- those units twice: fail the step (the saga refunds and releases).
	-- Per SKU, the held units over all locations must cover the line.
	IF p_from = 'held' AND EXISTS (
		SELECT FROM oms.order_items AS i
		WHERE i.order_id = p_order_id AND oms._sku_is_home(i.sku)
		  AND i.quantity > coalesce((SELECT pg_catalog.sum(r.quantity) FROM oms.reservations AS r
									 WHERE r.order_id = i.order_id AND r.sku = i.sku AND r.status = 'held'), 0)) THEN
		RAISE EXCEPTION 'the reservations of the order expired before payment'
			USING ERRCODE = 'OM011',
				  DETAIL = 'A reservation was no longer held at confirmation.';
	END IF;
	WITH moved AS (
		UPDATE oms.reservations AS r SET status = p_to, updated_at = pg_catalog.now()
		WHERE r.order_id = p_order_id AND r.status = p_from
		RETURNING r.sku, r.location, r.quantity - r.shipped AS units
	)
	SELECT pg_catalog.array_agg(m.sku ORDER BY m.sku, m.location),
		   pg_catalog.array_agg(m.location ORDER BY m.sku, m.location),
		   pg_catalog.array_agg(m.units ORDER BY m.sku, m.location)
	INTO v_skus, v_locations, v_units
	FROM (SELECT moved.sku, moved.location, pg_catalog.sum(moved.units)::bigint AS units
		  FROM moved GROUP BY moved.sku, moved.location) AS m;
	UPDATE oms.stock AS s SET on_hand = s.on_hand + p_sign * u.units, updated_at = pg_catalog.now()
	FROM ROWS FROM (pg_catalog.unnest(v_skus), pg_catalog.unnest(v_locations), pg_catalog.unnest(v_units))
		AS u(sku, location, units)
	WHERE s.sku = u.sku AND s.location = u.location AND u.units <> 0;
END;
$$;
COMMENT ON FUNCTION oms._move_reserved_stock(uuid, oms.reservation_status, oms.reservation_status, integer) IS
	'Confirm (held -> consumed, units leave stock at their locations) or restock (consumed -> released, unshipped units return)';

CREATE OR REPLACE FUNCTION oms._release_expired_reservations()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_pair record;
	v_count integer := 0;
BEGIN
	FOR v_pair IN
		SELECT DISTINCT r.sku, r.location FROM oms.reservations AS r
		WHERE r.status = 'held' AND r.expires_at <= pg_catalog.now()
		ORDER BY r.sku, r.location
	LOOP
		PERFORM FROM oms.stock AS s WHERE s.sku = v_pair.sku AND s.location = v_pair.location
		FOR UPDATE SKIP LOCKED;
		IF FOUND THEN
			v_count := v_count + oms._sweep_expired(v_pair.sku, v_pair.location, pg_catalog.now());
		END IF;
	END LOOP;
	RETURN v_count;
END;
$$;
COMMENT ON FUNCTION oms._release_expired_reservations() IS
	'Marks held reservations past their expiry as expired (skipping stock rows another session holds) and returns how many';

CREATE OR REPLACE FUNCTION @extschema@.oms_release_expired_reservations()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN oms._release_expired_reservations();
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_release_expired_reservations() IS
	'Marks held reservations past their expiry as expired and returns how many; the maintenance task release_reservations runs it (expired reservations stop counting without it)';

CREATE OR REPLACE FUNCTION oms._check_stock_change(p_sku text, p_location text, p_on_hand bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_reserved bigint;
BEGIN
	IF p_on_hand < 0 THEN
		RAISE EXCEPTION 'stock of SKU "%" cannot be negative', p_sku
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = pg_catalog.format('The change would leave %s units on hand.', p_on_hand);
	END IF;
	-- oms.stock_levels sums a SKU over its locations as a bigint.
	IF p_on_hand + (SELECT coalesce(pg_catalog.sum(s.on_hand), 0) FROM oms.stock AS s
					WHERE s.sku = p_sku AND s.location <> p_location) > 9223372036854775807 THEN
		RAISE EXCEPTION 'stock of SKU "%" is out of range', p_sku
			USING ERRCODE = 'numeric_value_out_of_range',
				  DETAIL = 'The units of a SKU over all locations cannot exceed 9223372036854775807.';
	END IF;
	SELECT s.reserved INTO v_reserved FROM oms.stock AS s WHERE s.sku = p_sku AND s.location = p_location;
	IF p_on_hand < v_reserved AND oms._sweep_expired(p_sku, p_location, pg_catalog.now()) > 0 THEN
		SELECT s.reserved INTO v_reserved FROM oms.stock AS s WHERE s.sku = p_sku AND s.location = p_location;
	END IF;
	IF p_on_hand < v_reserved THEN
		RAISE EXCEPTION 'stock of SKU "%" cannot drop below its reserved units', p_sku
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('Reserved: %s; the change would leave %s on hand.',
											 v_reserved, p_on_hand);
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._check_stock_change(text, text, bigint) IS
	'Refuses a stock level below zero (22023), one that takes the SKU over all locations past the bigint range (22003), or one below the reserved units (55000), sweeping expired reservations first';

CREATE OR REPLACE FUNCTION @extschema@.oms_set_location(code text, name text DEFAULT NULL, priority integer DEFAULT 0,
											 active boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._check_identifier('code', oms_set_location.code, 100);
	PERFORM oms._check_not_null('priority', oms_set_location.priority);
	PERFORM oms._check_not_null('active', oms_set_location.active);
	IF pg_catalog.length(oms_set_location.name) > 200 THEN
		RAISE EXCEPTION 'name is too long'
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = 'A location name has at most 200 characters.';
	END IF;
	-- Without RETURNING: for 'default' a trigger updates instead.
	INSERT INTO oms.locations AS l (code, name, priority, active)
	VALUES (oms_set_location.code, oms_set_location.name, oms_set_location.priority, oms_set_location.active)
	ON CONFLICT ON CONSTRAINT locations_pkey DO UPDATE
	SET name = coalesce(excluded.name, l.name), priority = excluded.priority, active = excluded.active,
		updated_at = pg_catalog.now();
	RETURN (SELECT pg_catalog.to_jsonb(l) FROM oms.locations AS l WHERE l.code = oms_set_location.code);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_set_location(text, text, integer, boolean) IS
	'Creates or updates a stock location (name NULL keeps the current one) and returns it';

CREATE OR REPLACE FUNCTION oms._set_stock(p_sku text, p_on_hand bigint, p_location text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._check_identifier('sku', p_sku, 100);
	PERFORM oms._check_not_null('on_hand', p_on_hand);
	PERFORM oms._own_sku(p_sku);
	PERFORM oms._check_location(p_location);
	-- Lock the row (or the slot it will take) before checking reservations.
	INSERT INTO oms.stock AS s (sku, location, on_hand) VALUES (p_sku, p_location, 0)
	ON CONFLICT ON CONSTRAINT stock_pkey DO NOTHING;
	PERFORM 1 FROM oms.stock AS s WHERE s.sku = p_sku AND s.location = p_location FOR UPDATE;
	PERFORM oms._check_stock_change(p_sku, p_location, p_on_hand);
	UPDATE oms.stock AS s SET on_hand = p_on_hand, updated_at = pg_catalog.now()
	WHERE s.sku = p_sku AND s.location = p_location;
	RETURN oms._stock_level_json(p_sku, p_location);
END;
$$;
COMMENT ON FUNCTION oms._set_stock(text, bigint, text) IS
	'Sets the units on hand of a SKU at a location (creating the row) and returns its stock level there';

CREATE OR REPLACE FUNCTION oms._adjust_stock(p_sku text, p_delta bigint, p_location text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_row oms.stock;
BEGIN
	PERFORM oms._check_identifier('sku', p_sku, 100);
	PERFORM oms._check_not_null('delta', p_delta);
	PERFORM oms._own_sku(p_sku);
	PERFORM oms._check_location(p_location);
	SELECT * INTO v_row FROM oms.stock AS s WHERE s.sku = p_sku AND s.location = p_location FOR UPDATE;
	IF NOT FOUND THEN
		-- The per-SKU call (location 'default') keeps its 0.3.0 message.
		RAISE EXCEPTION '%', CASE WHEN p_location = 'default'
								  THEN pg_catalog.format('SKU "%s" does not exist', p_sku)
								  ELSE pg_catalog.format('SKU "%s" does not exist at location "%s"', p_sku, p_location)
							 END
			USING ERRCODE = 'no_data_found',
				  HINT = 'Create it with oms_set_stock().';
	END IF;
	IF p_delta > 0 AND v_row.on_hand > 9223372036854775807 - p_delta THEN
		RAISE EXCEPTION 'stock of SKU "%" is out of range', p_sku
			USING ERRCODE = 'numeric_value_out_of_range';
	END IF;
	PERFORM oms._check_stock_change(p_sku, p_location, v_row.on_hand + p_delta);
	UPDATE oms.stock AS s SET on_hand = s.on_hand + p_delta, updated_at = pg_catalog.now()
	WHERE s.sku = p_sku AND s.location = p_location;
	RETURN oms._stock_level_json(p_sku, p_location);
END;
$$;
COMMENT ON FUNCTION oms._adjust_stock(text, bigint, text) IS
	'Adds delta to the units on hand of a SKU at a location and returns its stock level there';

CREATE OR REPLACE FUNCTION @extschema@.oms_set_stock(sku text, on_hand bigint, location text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN oms._set_stock(oms_set_stock.sku, oms_set_stock.on_hand, oms_set_stock.location);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_set_stock(text, bigint, text) IS
	'Sets the units on hand of a SKU at a location (creating the row) and returns its stock level there';

CREATE OR REPLACE FUNCTION @extschema@.oms_set_stock(sku text, on_hand bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN oms._set_stock(oms_set_stock.sku, oms_set_stock.on_hand, 'default');
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_set_stock(text, bigint) IS
	'Sets the units on hand of a SKU at location ''default'' (creating it) and returns its stock level there';

CREATE OR REPLACE FUNCTION @extschema@.oms_adjust_stock(sku text, delta bigint, location text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN oms._adjust_stock(oms_adjust_stock.sku, oms_adjust_stock.delta, oms_adjust_stock.location);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_adjust_stock(text, bigint, text) IS
	'Adds delta (negative to remove) to the units on hand of a SKU at a location and returns its stock level there';

CREATE OR REPLACE FUNCTION @extschema@.oms_adjust_stock(sku text, delta bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN oms._adjust_stock(oms_adjust_stock.sku, oms_adjust_stock.delta, 'default');
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_adjust_stock(text, bigint) IS
	'Adds delta (negative to remove) to the units on hand of a SKU at location ''default'' and returns its stock level there';

CREATE OR REPLACE FUNCTION oms._restock(p_sku text, p_location text, p_units bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_on_hand bigint;
BEGIN
	-- A SKU homed on another shard: its stock and allocation are there.
	IF NOT oms._sku_is_home(p_sku) THEN
		PERFORM oms._call_shard('restock', p_sku => p_sku, p_location => p_location, p_units => p_units);
		RETURN;
	END IF;
	PERFORM oms._check_identifier('sku', p_sku, 100);
	PERFORM oms._check_location(p_location);
	PERFORM oms._check_not_null('units', p_units);
	IF p_units <= 0 THEN
		RAISE EXCEPTION 'units must be positive'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = pg_catalog.format('Got %s.', p_units);
	END IF;
	INSERT INTO oms.stock AS s (sku, location, on_hand) VALUES (p_sku, p_location, 0)
	ON CONFLICT ON CONSTRAINT stock_pkey DO NOTHING;
	SELECT s.on_hand INTO v_on_hand FROM oms.stock AS s
	WHERE s.sku = p_sku AND s.location = p_location FOR UPDATE;
	IF v_on_hand > 9223372036854775807 - p_units THEN
		RAISE EXCEPTION 'stock of SKU "%" is out of range', p_sku
			USING ERRCODE = 'numeric_value_out_of_range';
	END IF;
	PERFORM oms._check_stock_change(p_sku, p_location, v_on_hand + p_units);
	UPDATE oms.stock AS s SET on_hand = s.on_hand + p_units, updated_at = pg_catalog.now()
	WHERE s.sku = p_sku AND s.location = p_location;
END;
$$;
COMMENT ON FUNCTION oms._restock(text, text, bigint) IS
	'Puts units back on hand of a SKU at a location, creating the stock row (P0002 for an unknown location)';

CREATE OR REPLACE FUNCTION oms._release_allocation(p_order_id uuid, p_sku text, p_units integer)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_unshipped bigint;
	v_taken jsonb;
BEGIN
	-- A SKU homed on another shard: its stock and allocation are there.
	IF NOT oms._sku_is_home(p_sku) THEN
		RETURN oms._call_shard('release_allocation', p_order_id => p_order_id, p_sku => p_sku, p_units => p_units);
	END IF;
	PERFORM oms._check_not_null('order_id', p_order_id);
	PERFORM oms._check_identifier('sku', p_sku, 100);
	PERFORM oms._check_not_null('units', p_units);
	IF p_units <= 0 THEN
		RAISE EXCEPTION 'units must be positive'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = pg_catalog.format('Got %s.', p_units);
	END IF;
	PERFORM FROM oms.stock AS s
	WHERE s.sku = p_sku
	  AND s.location IN (SELECT r.location FROM oms.reservations AS r
						 WHERE r.order_id = p_order_id AND r.sku = p_sku AND r.status = 'consumed')
	ORDER BY s.sku, s.location
	FOR UPDATE OF s;
	SELECT coalesce(pg_catalog.sum(r.quantity - r.shipped), 0) INTO v_unshipped
	FROM oms.reservations AS r
	WHERE r.order_id = p_order_id AND r.sku = p_sku AND r.status = 'consumed';
	IF v_unshipped < p_units THEN
		RAISE EXCEPTION 'order "%" has only % unshipped units of SKU "%"', p_order_id, v_unshipped, p_sku
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('%s units were to be released.', p_units);
	END IF;

	WITH alloc AS (
		SELECT r.location, r.quantity, r.shipped, l.priority,
			   least(r.quantity - r.shipped,
								p_units - (pg_catalog.sum(r.quantity - r.shipped) OVER w - (r.quantity - r.shipped))) AS units
		FROM oms.reservations AS r JOIN oms.locations AS l ON l.code = r.location
		WHERE r.order_id = p_order_id AND r.sku = p_sku AND r.status = 'consumed' AND r.quantity > r.shipped
		WINDOW w AS (ORDER BY l.priority DESC, r.location DESC ROWS UNBOUNDED PRECEDING)
	), taken AS (
		SELECT * FROM alloc WHERE alloc.units > 0
	), changed AS (
		UPDATE oms.reservations AS r
		SET status = CASE WHEN t.shipped = 0 AND t.units = t.quantity THEN 'released'::oms.reservation_status
						  ELSE r.status END,
			quantity = CASE WHEN t.shipped = 0 AND t.units = t.quantity THEN r.quantity
							ELSE r.quantity - t.units::integer END,
			updated_at = pg_catalog.now()
		FROM taken AS t
		WHERE r.order_id = p_order_id AND r.sku = p_sku AND r.location = t.location
	), restocked AS (
		UPDATE oms.stock AS s SET on_hand = s.on_hand + t.units, updated_at = pg_catalog.now()
		FROM taken AS t
		WHERE s.sku = p_sku AND s.location = t.location
	)
	SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('location', t.location, 'quantity', t.units)
								ORDER BY t.priority DESC, t.location DESC)
	INTO v_taken
	FROM taken AS t;
	RETURN v_taken;
END;
$$;
COMMENT ON FUNCTION oms._release_allocation(uuid, text, integer) IS
	'Gives back consumed, unshipped units of an order''s SKU to stock, least preferred location first; returns [{location, quantity}] (55000 when fewer are unshipped)';

CREATE OR REPLACE FUNCTION oms._ship_from(p_order_id uuid, p_sku text, p_location text, p_units integer)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_quantity integer;
	v_shipped integer;
BEGIN
	-- A SKU homed on another shard: its stock and allocation are there.
	IF NOT oms._sku_is_home(p_sku) THEN
		PERFORM oms._call_shard('ship_from', p_order_id => p_order_id, p_sku => p_sku, p_location => p_location,
								p_units => p_units);
		RETURN;
	END IF;
	PERFORM oms._check_not_null('order_id', p_order_id);
	PERFORM oms._check_identifier('sku', p_sku, 100);
	PERFORM oms._check_location(p_location);
	PERFORM oms._check_not_null('units', p_units);
	IF p_units = 0 THEN
		RAISE EXCEPTION 'units must not be zero'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM FROM oms.stock AS s WHERE s.sku = p_sku AND s.location = p_location FOR UPDATE;
	SELECT r.quantity, r.shipped INTO v_quantity, v_shipped
	FROM oms.reservations AS r
	WHERE r.order_id = p_order_id AND r.sku = p_sku AND r.location = p_location AND r.status = 'consumed'
	FOR UPDATE;
	IF NOT FOUND THEN
		v_quantity := 0;
		v_shipped := 0;
	END IF;
	IF p_units > v_quantity - v_shipped OR -p_units > v_shipped THEN
		RAISE EXCEPTION 'order "%" has % % units of SKU "%" at location "%"',
			p_order_id, CASE WHEN p_units > 0 THEN v_quantity - v_shipped ELSE v_shipped END,
			CASE WHEN p_units > 0 THEN 'unshipped' ELSE 'shipped' END, p_sku, p_location
			USING ERRCODE = 'OM008',
				  DETAIL = pg_catalog.format('Allocated (consumed) at "%s": %s; shipped: %s; change asked: %s.',
											 p_location, v_quantity, v_shipped, p_units);
	END IF;
	UPDATE oms.reservations AS r SET shipped = r.shipped + p_units, updated_at = pg_catalog.now()
	WHERE r.order_id = p_order_id AND r.sku = p_sku AND r.location = p_location AND r.status = 'consumed';
END;
$$;
COMMENT ON FUNCTION oms._ship_from(uuid, text, text, integer) IS
	'Adds p_units (negative to give back) to the shipped units of an order''s consumed allocation at a location (OM008 when too few)';

CREATE OR REPLACE FUNCTION oms._order_allocation(p_order_id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
								'sku', r.sku, 'location', r.location, 'quantity', r.quantity,
								'shipped', r.shipped, 'status', r.status) ORDER BY r.sku, r.location), '[]'::jsonb)
			FROM oms.reservations AS r WHERE r.order_id = p_order_id);
END;
$$;
COMMENT ON FUNCTION oms._order_allocation(uuid) IS
	'An order''s reservations as [{sku, location, quantity, shipped, status}] ordered by sku, location';

-- The saga's one-move path takes its location from oms._consume_at_once,
-- and the runner locks every location's stock row of the order's SKUs
-- (src/sql/saga.sql).
CREATE OR REPLACE FUNCTION oms._fulfil_at_once(p_saga oms.sagas, p_now timestamptz)
RETURNS oms.sagas
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_payment oms.payments;
	v_answer jsonb;
	v_saga oms.sagas;
	v_trace text;
BEGIN
	IF pg_catalog.current_setting('oms.payment_provider') <> 'test' THEN
		RETURN NULL;
	END IF;
	SELECT * INTO v_payment FROM oms.payments AS p WHERE p.order_id = p_saga.order_id FOR UPDATE;
	v_answer := oms._test_provider(v_payment.method, 'charge', 1);
	IF v_answer ->> 'outcome' IS DISTINCT FROM 'approved'
	   OR EXISTS (SELECT FROM oms.saga_steps AS t
				  WHERE t.saga_id = p_saga.id AND (t.status <> 'pending' OR t.attempts <> 0))
	   OR EXISTS (SELECT FROM oms.reservations AS r WHERE r.order_id = p_saga.order_id) THEN
		RETURN NULL;
	END IF;

	-- reserve and the stock half of confirm (oms._reserve_order,
	-- oms._move_reserved_stock) when one location serves the basket.
	IF NOT oms._consume_at_once(p_saga.order_id, p_now) THEN
		RETURN NULL;
	END IF;

	-- The order half of confirm (oms._change_status) and the bookkeeping
	-- of the three steps (oms._advance_forward), timeline entries in the
	-- order the steps would write them.
	v_trace := NULLIF(pg_catalog.current_setting('oms.traceparent', true), '');
	-- The capture moves the payment dimension too: set here, in the same
	-- write as the confirm, its trigger on oms.payments (below) finds
	-- nothing to change, and the order row is written once.
	WITH o AS (
		UPDATE oms.orders AS o
		SET status = 'confirmed', payment_status = 'paid',
			timeline_seq = o.timeline_seq + 5, event_seq = o.event_seq + 1
		WHERE o.id = p_saga.order_id
		RETURNING o.id, o.timeline_seq, o.event_seq, o AS row
	), d AS (
		SELECT o.id, o.timeline_seq, o.event_seq,
			   oms._order_document(o.row, oms._order_items_json(o.id)) AS document
		FROM o
	), e AS (
		INSERT INTO oms.order_events (order_id, seq, event_type, from_status, to_status, data, traceparent)
		SELECT d.id, d.timeline_seq - 5 + x.n, x.event_type, x.from_status, x.to_status, x.data, v_trace
		FROM d CROSS JOIN (VALUES
			(1, 'saga.step_completed', NULL::oms.order_status, NULL::oms.order_status,
			 pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', 'reserve', 'attempt', 1)),
			(2, 'saga.step_completed', NULL, NULL,
			 pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', 'pay', 'attempt', 1)),
			(3, 'order.confirmed', 'processing', 'confirmed',
			 pg_catalog.jsonb_build_object('saga_id', p_saga.id)),
			(4, 'saga.step_completed', NULL, NULL,
			 pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', 'confirm', 'attempt', 1)),
			(5, 'saga.completed', NULL, NULL,
			 pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'kind', 'fulfilment', 'outcome', 'confirmed')))
			AS x(n, event_type, from_status, to_status, data)
		ORDER BY x.n
	), x AS (
		INSERT INTO oms.outbox (aggregatetype, aggregateid, type, payload, seq, traceparent)
		SELECT 'order', d.id, 'order.confirmed',
			   pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'previous_status', 'processing',
											 'order', d.document),
			   d.event_seq, v_trace
		FROM d
	), t AS (
		UPDATE oms.saga_steps AS t
		SET status = 'done', attempts = 1, started_at = p_now, first_started_at = p_now,
			completed_at = GREATEST(p_now, pg_catalog.clock_timestamp())
		WHERE t.saga_id = p_saga.id
	)
	UPDATE oms.sagas AS s
	SET status = 'completed', outcome = 'confirmed', step_no = 3, error = NULL,
		finished_at = p_now, updated_at = pg_catalog.now()
	WHERE s.id = p_saga.id
	RETURNING * INTO v_saga;
	-- pay (oms._step_pay): the capture.
	UPDATE oms.payments AS p
	SET authorized = p.amount, captured = p.amount, status = 'captured',
		provider_reference = v_answer ->> 'reference', updated_at = pg_catalog.now()
	WHERE p.id = v_payment.id;
	-- The relay publishes within milliseconds of the commit.
	PERFORM oms._notify_worker();
	RETURN v_saga;
END;
$$;
COMMENT ON FUNCTION oms._fulfil_at_once(oms.sagas, timestamptz) IS
	'Runs a fresh fulfilment saga whose steps would all succeed at once as one move (the same rows as its three steps); returns the completed saga, or NULL having written nothing';

CREATE OR REPLACE FUNCTION oms._run_sagas(p_max integer, p_now timestamptz)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET oms.traceparent = ''
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_units integer := 0;
	v_claimed oms.sagas;
	v_saga oms.sagas;
	v_fused oms.sagas;
	v_order_status oms.order_status;
	v_state text;
	v_message text;
BEGIN
	-- The claim returns the locked row: nobody else can change it until
	-- this transaction ends, so the engine reads it again only after a
	-- move that did not hand the new row back.
	FOR v_claimed IN
		SELECT s.* FROM oms.sagas AS s
		WHERE s.status IN ('running', 'compensating') AND s.next_run_at <= p_now
		ORDER BY s.next_run_at
		LIMIT p_max
		FOR UPDATE SKIP LOCKED
	LOOP
		-- An API call holding the order (a cancel, say) goes first; the saga
		-- stays due and is picked up again.  Never waiting here means the
		-- worker and the API cannot deadlock.  Under the lock, the order's
		-- status changes only through this saga's own steps.
		SELECT o.status INTO v_order_status FROM oms.orders AS o
		WHERE o.id = v_claimed.order_id FOR NO KEY UPDATE SKIP LOCKED;
		CONTINUE WHEN NOT FOUND;

		-- One subtransaction per saga: a defect or database error in one
		-- saga rolls back that saga's progress in this batch only.
		BEGIN
			-- The same for the stock rows its steps lock, all or none, in
			-- SKU order: another runner's batch (or an API call) holds a
			-- busy one until it commits, and two batches waiting for each
			-- other's rows would deadlock.  A busy row ends this
			-- subtransaction before any step ran; the saga stays due.
			-- Every location's row of each SKU: sku = ANY finds them through
			-- the primary key's prefix, statistics or not.
			PERFORM 1 FROM oms.stock AS st
			WHERE st.sku = ANY (ARRAY(SELECT i.sku FROM oms.order_items AS i WHERE i.order_id = v_claimed.order_id))
			ORDER BY st.sku, st.location
			FOR UPDATE NOWAIT;
			v_saga := v_claimed;
			PERFORM pg_catalog.set_config('oms.traceparent', coalesce(v_saga.traceparent, ''), true);
			LOOP
				EXIT WHEN v_saga.status NOT IN ('running', 'compensating') OR v_saga.next_run_at > p_now
					   OR v_units >= p_max;
				-- A fresh fulfilment saga whose steps all succeed at once
				-- runs as one move when the batch has room for its steps.
				IF v_saga.status = 'running' AND v_saga.kind = 'fulfilment' AND v_saga.step_no = 1
				   AND v_order_status = 'processing' AND p_max - v_units >= 3 THEN
					v_fused := oms._fulfil_at_once(v_saga, p_now);
					IF v_fused.id IS NOT NULL THEN
						v_units := v_units + 3;
						v_saga := v_fused;
						CONTINUE;
					END IF;
				END IF;
				v_units := v_units + 1;
				IF v_saga.status = 'running' THEN
					v_saga := oms._advance_forward(v_saga, v_order_status, p_now);
				ELSE
					PERFORM oms._advance_backward(v_saga, p_now);
					v_saga := NULL;
				END IF;
				IF v_saga.id IS NULL THEN
					-- Not the hot path: the saga, and the order with it, may
					-- have changed in any way.
					SELECT * INTO v_saga FROM oms.sagas AS s WHERE s.id = v_claimed.id;
					SELECT o.status INTO v_order_status FROM oms.orders AS o WHERE o.id = v_claimed.order_id;
				END IF;
			END LOOP;
		EXCEPTION
		WHEN lock_not_available THEN
			-- Its stock is busy (above): left for a later batch.
			NULL;
		WHEN OTHERS THEN
			-- Not a step failure (those are handled inside): record it on
			-- the saga, back off, carry on with the next saga.
			GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
			UPDATE oms.sagas AS s
			SET error = pg_catalog.jsonb_build_object('sqlstate', v_state, 'message', v_message,
													  'at', p_now, 'engine', true),
				next_run_at = p_now + oms._backoff(1), updated_at = pg_catalog.now()
			WHERE s.id = v_claimed.id;
			PERFORM oms._log('warning', 'saga_error', 'saga_id', v_claimed.id::text,
							 'order_id', v_claimed.order_id::text,
							 'sqlstate', v_state, 'message', v_message);
		END;
		EXIT WHEN v_units >= p_max;
	END LOOP;
	RETURN v_units;
END;
$$;
COMMENT ON FUNCTION oms._run_sagas(integer, timestamptz) IS
	'Runs up to p_max due saga steps as of p_now, each saga in its own subtransaction; returns the steps run';

GRANT SELECT ON oms.locations, oms.stock, oms.reservations, oms.stock_levels, oms.location_stock_levels TO oms_reader;
REVOKE ALL ON FUNCTION @extschema@.oms_adjust_stock(text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_adjust_stock(text, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_release_expired_reservations() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_set_location(text, text, integer, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_set_stock(text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_set_stock(text, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._adjust_stock(text, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._check_location(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._check_stock_change(text, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._consume_at_once(uuid, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._hold_allocation(uuid, text[], text[], bigint[], timestamp with time zone, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._locations_merge_default() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._lock_order_stock(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._move_reserved_stock(uuid, oms.reservation_status, oms.reservation_status, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._order_allocation(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._release_allocation(uuid, text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._release_expired_reservations() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._release_order(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._reservations_count() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._reserve_order(uuid, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._reserved(text, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._restock(text, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._set_stock(text, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._ship_from(uuid, text, text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._single_location(uuid, text[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._stock_level_json(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._stock_restore_count() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._sweep_expired(text, text, timestamp with time zone) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._reserved(text, timestamptz) TO oms_reader;
GRANT EXECUTE ON FUNCTION
	@extschema@.oms_set_location(text, text, integer, boolean),
	@extschema@.oms_set_stock(text, bigint),
	@extschema@.oms_set_stock(text, bigint, text),
	@extschema@.oms_adjust_stock(text, bigint),
	@extschema@.oms_adjust_stock(text, bigint, text),
	@extschema@.oms_release_expired_reservations()
TO oms_admin;
--
-- State machines, the line ledger, shipments, returns (src/sql/state.sql,
-- src/sql/schema.sql, src/sql/fulfillment.sql, src/sql/returns.sql).
--

-- The payment and fulfillment dimensions of an order and the quantity
-- ledger of its lines (appended columns, as a fresh install has them).
CREATE TYPE oms.payment_status AS ENUM ('unpaid', 'paid', 'partially_refunded', 'refunded');
COMMENT ON TYPE oms.payment_status IS
	'What the order''s payment stands at, derived from its captured and refunded amounts; moves in oms.status_transitions';
CREATE TYPE oms.fulfillment_status AS ENUM (
	'unfulfilled',
	'partially_fulfilled',
	'fulfilled',
	'delivered',
	'partially_returned',
	'returned',
	'canceled'
);
COMMENT ON TYPE oms.fulfillment_status IS
	'Where the order''s goods stand, derived from the quantity ledger of its lines; moves in oms.status_transitions';

ALTER TABLE oms.orders
	ADD COLUMN payment_status oms.payment_status NOT NULL DEFAULT 'unpaid',
	ADD COLUMN fulfillment_status oms.fulfillment_status NOT NULL DEFAULT 'unfulfilled';
COMMENT ON COLUMN oms.orders.payment_status IS
	'Derived from the order''s payment by a trigger on oms.payments; guarded by the payment machine';

COMMENT ON COLUMN oms.orders.fulfillment_status IS
	'Derived from the line ledger by a trigger on oms.order_items; guarded by the fulfillment machine';

ALTER TABLE oms.order_items
	ADD COLUMN quantity_canceled integer NOT NULL DEFAULT 0 CHECK (quantity_canceled >= 0),
	ADD COLUMN quantity_fulfilling integer NOT NULL DEFAULT 0 CHECK (quantity_fulfilling >= 0),
	ADD COLUMN quantity_shipped integer NOT NULL DEFAULT 0 CHECK (quantity_shipped >= 0),
	ADD COLUMN quantity_delivered integer NOT NULL DEFAULT 0 CHECK (quantity_delivered >= 0),
	ADD COLUMN quantity_returning integer NOT NULL DEFAULT 0 CHECK (quantity_returning >= 0),
	ADD COLUMN quantity_returned integer NOT NULL DEFAULT 0 CHECK (quantity_returned >= 0),
	ADD COLUMN quantity_refunded integer NOT NULL DEFAULT 0 CHECK (quantity_refunded >= 0),
	ADD CONSTRAINT order_items_ship_check
		CHECK (quantity_canceled + quantity_fulfilling + quantity_shipped <= quantity),
	ADD CONSTRAINT order_items_deliver_check CHECK (quantity_delivered <= quantity_shipped),
	ADD CONSTRAINT order_items_return_check CHECK (quantity_returning + quantity_returned <= quantity_delivered),
	ADD CONSTRAINT order_items_refund_check CHECK (quantity_refunded <= quantity_canceled + quantity_returned);
COMMENT ON TABLE oms.order_items IS
	'Order lines with their quantity ledger; amounts in minor units of the order currency';
COMMENT ON COLUMN oms.order_items.quantity IS 'Units ordered';
COMMENT ON COLUMN oms.order_items.quantity_canceled IS 'Units canceled before shipping (their stock given back)';
COMMENT ON COLUMN oms.order_items.quantity_fulfilling IS 'Units in pending shipments, not handed to a carrier yet';
COMMENT ON COLUMN oms.order_items.quantity_shipped IS 'Units in shipments handed to a carrier';
COMMENT ON COLUMN oms.order_items.quantity_delivered IS 'Shipped units the carrier delivered';
COMMENT ON COLUMN oms.order_items.quantity_returning IS 'Delivered units in open return requests';
COMMENT ON COLUMN oms.order_items.quantity_returned IS 'Delivered units received back';
COMMENT ON COLUMN oms.order_items.quantity_refunded IS 'Canceled or returned units refunded through a refund saga';

-- Data: the statuses and ledger of existing orders, mapped from what 0.3.0
-- recorded.  Lines of orders that ended without shipping (canceled,
-- failed) are canceled; a refunded order had its stock put back by its
-- full refund, so its lines are canceled and refunded.  Nothing shipped
-- before 0.4.0.  The payment status follows the payment's amounts.  The
-- state machine trigger is off for these writes only: it would count
-- the mapping as transitions (version, updated_at) and refuse the jumps
-- (unpaid -> refunded) a mapping makes.  These are the only rows this
-- section changes, and only in the columns it adds.
ALTER TABLE oms.orders DISABLE TRIGGER order_status_guard;
UPDATE oms.order_items AS i
SET quantity_canceled = i.quantity,
	quantity_refunded = CASE WHEN o.status = 'refunded' THEN i.quantity ELSE 0 END
FROM oms.orders AS o
WHERE o.id = i.order_id AND o.status IN ('canceled', 'failed', 'refunded');
UPDATE oms.orders AS o
SET payment_status = CASE WHEN p.captured = 0 THEN 'unpaid'::oms.payment_status
						  WHEN p.refunded = 0 THEN 'paid'
						  WHEN p.refunded < p.captured THEN 'partially_refunded'
						  ELSE 'refunded' END
FROM oms.payments AS p
WHERE p.order_id = o.id AND p.captured > 0;
UPDATE oms.orders AS o SET fulfillment_status = 'canceled'
WHERE o.status IN ('canceled', 'failed', 'refunded');
ALTER TABLE oms.orders ENABLE ALWAYS TRIGGER order_status_guard;

-- The state machines (src/state.c).
CREATE FUNCTION oms._transition_allowed_any(p_machine text, p_from text, p_to text)
RETURNS boolean
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_machine_transition_allowed';
COMMENT ON FUNCTION oms._transition_allowed_any(text, text, text) IS
	'oms_transition_allowed(machine, from, to) for oms''s own code';

CREATE FUNCTION @extschema@.oms_transition_allowed(machine text, from_status text, to_status text)
RETURNS boolean
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_machine_transition_allowed';
COMMENT ON FUNCTION @extschema@.oms_transition_allowed(text, text, text) IS
	'True when the state machine (order, payment, fulfillment, shipment or return) allows a move from from_status to to_status';

CREATE FUNCTION @extschema@.oms_state_machine_dot(machine text)
RETURNS text
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_state_machine_dot';
COMMENT ON FUNCTION @extschema@.oms_state_machine_dot(text) IS
	'A state machine (order, payment, fulfillment, shipment or return) as a Graphviz digraph, generated from its C transition table';

CREATE FUNCTION oms._machine_states(OUT machine text, OUT status text, OUT initial boolean,
									OUT terminal boolean, OUT meaning text)
RETURNS SETOF record
LANGUAGE c STRICT IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_machine_states';
COMMENT ON FUNCTION oms._machine_states() IS 'The statuses of every C transition table';

CREATE FUNCTION oms._machine_transitions(OUT machine text, OUT from_status text, OUT to_status text,
										 OUT event text)
RETURNS SETOF record
LANGUAGE c STRICT IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_machine_transitions';
COMMENT ON FUNCTION oms._machine_transitions() IS 'The transitions of every C transition table';

CREATE FUNCTION oms._status_guard()
RETURNS trigger
LANGUAGE c
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_status_guard';
COMMENT ON FUNCTION oms._status_guard() IS
	'Trigger (machine, column, noun, id column): enforces a C transition table on every write of a status column';

CREATE VIEW oms.statuses AS
	SELECT s.machine, s.status, s.initial, s.terminal, s.meaning
	FROM oms._machine_states() AS s;
COMMENT ON VIEW oms.statuses IS
	'Every status of every state machine (order, payment, fulfillment, shipment, return): initial, final, meaning';

CREATE VIEW oms.status_transitions AS
	SELECT t.machine, t.from_status, t.to_status, t.event
	FROM oms._machine_transitions() AS t;
COMMENT ON VIEW oms.status_transitions IS
	'Every allowed move of every state machine and the event that causes it';

COMMENT ON FUNCTION oms._order_status_guard() IS
	'Trigger: enforces the order, payment and fulfillment machines on every write to oms.orders and maintains version';


GRANT SELECT ON oms.statuses, oms.status_transitions TO oms_reader;
REVOKE ALL ON FUNCTION @extschema@.oms_state_machine_dot(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_transition_allowed(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._machine_states() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._machine_transitions() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._status_guard() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._transition_allowed_any(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	@extschema@.oms_transition_allowed(text, text, text),
	@extschema@.oms_state_machine_dot(text)
TO oms_app, oms_reader;
GRANT EXECUTE ON FUNCTION oms._machine_states(), oms._machine_transitions() TO oms_reader;

-- The order document: statuses, ledger, last saga, shipments, returns.
CREATE OR REPLACE FUNCTION oms._order_items_json(p_order_id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
						'line_no', i.line_no,
						'sku', i.sku,
						'quantity', i.quantity,
						'unit_price', i.unit_price,
						'line_total', i.line_total,
						'quantity_canceled', i.quantity_canceled,
						'quantity_fulfilling', i.quantity_fulfilling,
						'quantity_shipped', i.quantity_shipped,
						'quantity_delivered', i.quantity_delivered,
						'quantity_returning', i.quantity_returning,
						'quantity_returned', i.quantity_returned,
						'quantity_refunded', i.quantity_refunded) ORDER BY i.line_no), '[]'::jsonb)
			FROM oms.order_items AS i
			WHERE i.order_id = p_order_id);
END;
$$;
COMMENT ON FUNCTION oms._order_items_json(uuid) IS 'The lines of an order with their quantity ledger as a JSON array';

COMMENT ON FUNCTION oms._order_items_json(uuid) IS 'The lines of an order with their quantity ledger as a JSON array';


/*
 * What the order document says about the order's work beyond its lines:
 * the outcome of its last saga (why it failed, when it did: the failed
 * step, the SQLSTATE-like code, the reason, and the payment provider's own
 * message when the provider refused), and each shipment and return.
 */
CREATE FUNCTION oms._order_outcomes(p_order_id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
-- Called for every order change, from workers whose sessions live long:
-- a plan made while oms.shipments or oms.returns was empty must not scan
-- them once they have grown.  Each query finds its rows by an index.
SET enable_seqscan = off
AS $$
BEGIN
	RETURN pg_catalog.jsonb_build_object(
		'last_saga', (SELECT pg_catalog.jsonb_build_object(
							'saga_id', s.id, 'kind', s.kind, 'status', s.status, 'outcome', s.outcome,
							'error', CASE WHEN s.error IS NOT NULL AND s.status <> 'completed' THEN
								pg_catalog.jsonb_build_object(
									'step', s.error ->> 'step',
									'code', s.error ->> 'sqlstate',
									'reason', s.error ->> 'message',
									'detail', s.error ->> 'detail',
									'provider_message',
									CASE WHEN s.error ->> 'step' IN ('pay', 'refund_payment')
											  AND s.error ->> 'sqlstate' IN ('OM010', 'OM013')
										 THEN pg_catalog.substring(s.error ->> 'message', ': (.*)$') END) END,
							'finished_at', pg_catalog.to_char(s.finished_at AT TIME ZONE 'UTC',
															  'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
					  FROM oms.sagas AS s WHERE s.order_id = p_order_id
					  ORDER BY s.created_at DESC, s.id DESC LIMIT 1),
		'shipments', (SELECT coalesce(pg_catalog.jsonb_agg(oms._shipment_json(s) ORDER BY s.created_at, s.id), '[]')
					  FROM oms.shipments AS s WHERE s.order_id = p_order_id),
		'returns', (SELECT coalesce(pg_catalog.jsonb_agg(oms._return_json(r) ORDER BY r.created_at, r.id), '[]')
					FROM oms.returns AS r WHERE r.order_id = p_order_id));
END;
$$;
COMMENT ON FUNCTION oms._order_outcomes(uuid) IS
	'The order document''s last_saga (outcome and error of the order''s last saga), shipments and returns';

REVOKE ALL ON FUNCTION oms._order_outcomes(uuid) FROM PUBLIC;

CREATE OR REPLACE FUNCTION oms._order_document(p_order oms.orders, p_items jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN pg_catalog.jsonb_build_object(
		'order_id', p_order.id,
		'customer_id', p_order.customer_id,
		'status', p_order.status,
		'payment_status', p_order.payment_status,
		'fulfillment_status', p_order.fulfillment_status,
		'currency', p_order.currency,
		'total', p_order.total,
		'items', p_items,
		'version', p_order.version,
		'metadata', p_order.metadata,
		'created_at', pg_catalog.to_char(p_order.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
		'updated_at', pg_catalog.to_char(p_order.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
		|| oms._order_outcomes(p_order.id);
END;
$$;
COMMENT ON FUNCTION oms._order_document(oms.orders, jsonb) IS 'Builds the JSON order document from an order row and its items';

CREATE OR REPLACE FUNCTION oms._change_status(p_order_id uuid, p_to_status oms.order_status, p_event_type text, p_data jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_from oms.order_status;
	v_document jsonb;
	v_trace text;
BEGIN
	SELECT o.status INTO v_from FROM oms.orders AS o WHERE o.id = p_order_id;
	-- Writing the same status is no transition for the trigger; an event
	-- for it would announce a change that did not happen.
	IF v_from = p_to_status AND NOT oms._transition_allowed(v_from, p_to_status) THEN
		RAISE EXCEPTION 'order "%" is already %', p_order_id, p_to_status
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	-- An order that ends without shipping ends with its lines canceled:
	-- the ledger (and so its fulfillment status) says so.
	IF p_to_status IN ('canceled', 'failed') THEN
		UPDATE oms.order_items AS i SET quantity_canceled = i.quantity - i.quantity_fulfilling - i.quantity_shipped
		WHERE i.order_id = p_order_id AND i.quantity_canceled < i.quantity - i.quantity_fulfilling - i.quantity_shipped;
	END IF;
	v_trace := NULLIF(pg_catalog.current_setting('oms.traceparent', true), '');
	WITH o AS (
		UPDATE oms.orders AS o
		SET status = p_to_status, timeline_seq = o.timeline_seq + 1, event_seq = o.event_seq + 1
		WHERE o.id = p_order_id
		RETURNING o.*
	), d AS (
		-- oms._order_document(o, oms._order_items_json(o.id))
		SELECT o.id, o.status, o.timeline_seq, o.event_seq,
			   pg_catalog.jsonb_build_object(
				'order_id', o.id,
				'customer_id', o.customer_id,
				'status', o.status,
				'payment_status', o.payment_status,
				'fulfillment_status', o.fulfillment_status,
				'currency', o.currency,
				'total', o.total,
				'items', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
									'line_no', i.line_no,
									'sku', i.sku,
									'quantity', i.quantity,
									'unit_price', i.unit_price,
									'line_total', i.line_total,
									'quantity_canceled', i.quantity_canceled,
									'quantity_fulfilling', i.quantity_fulfilling,
									'quantity_shipped', i.quantity_shipped,
									'quantity_delivered', i.quantity_delivered,
									'quantity_returning', i.quantity_returning,
									'quantity_returned', i.quantity_returned,
									'quantity_refunded', i.quantity_refunded) ORDER BY i.line_no), '[]'::jsonb)
						  FROM oms.order_items AS i
						  WHERE i.order_id = o.id),
				'version', o.version,
				'metadata', o.metadata,
				'created_at', pg_catalog.to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
				'updated_at', pg_catalog.to_char(o.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
				|| oms._order_outcomes(o.id)
				AS document
		FROM o
	), e AS (
		INSERT INTO oms.order_events (order_id, seq, event_type, from_status, to_status, data, traceparent)
		SELECT d.id, d.timeline_seq, p_event_type, v_from, d.status, p_data, v_trace
		FROM d
	), x AS (
		INSERT INTO oms.outbox (aggregatetype, aggregateid, type, payload, seq, traceparent)
		SELECT 'order', d.id, p_event_type,
			   p_data || pg_catalog.jsonb_build_object('previous_status', v_from, 'order', d.document),
			   d.event_seq, v_trace
		FROM d
	)
	SELECT d.document INTO v_document FROM d;
	-- The relay publishes within milliseconds of the commit.
	PERFORM oms._notify_worker();
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION oms._change_status(uuid, oms.order_status, text, jsonb) IS
	'Changes an order status with its timeline entry and outbox event; returns the order document';

-- oms.unknown_skus (src/guc.c) and the new order document at create.
CREATE FUNCTION oms._refuse_unknown_skus(p_items jsonb)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_sku text;
	v_line integer;
BEGIN
	SELECT i.sku, i.line_no INTO v_sku, v_line
	FROM pg_catalog.jsonb_to_recordset(p_items) AS i(line_no integer, sku text)
	WHERE NOT EXISTS (SELECT FROM oms.stock AS s WHERE s.sku = i.sku)
		-- A SKU homed on another shard has its stock record there.
		AND oms._sku_is_home(i.sku)
	ORDER BY i.line_no LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'unknown SKU "%"', v_sku
			USING ERRCODE = 'OM005',
				  DETAIL = pg_catalog.format('Item %s: the SKU has no stock record in any location.', v_line),
				  HINT = 'Set its stock with oms_set_stock(), or take the order with oms.unknown_skus = accept.';
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._refuse_unknown_skus(jsonb) IS
	'Raises OM005 for the first item whose SKU has no stock record (oms.unknown_skus = refuse)';

REVOKE ALL ON FUNCTION oms._refuse_unknown_skus(jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION oms._create_order(p_customer_id text, p_items jsonb, p_currency text,
								  p_idempotency_key text, p_metadata jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_priced jsonb;
	v_document jsonb;
	v_hash bytea;
	v_trace text;
	v_id uuid;
BEGIN
	PERFORM oms._check_identifier('customer_id', p_customer_id, 255);
	IF p_items IS NULL THEN
		RAISE EXCEPTION 'items must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- oms._currency_exponent raises the error of an unknown currency.
	PERFORM FROM oms.currencies AS c WHERE c.code = p_currency;
	IF NOT FOUND THEN
		PERFORM oms._currency_exponent(p_currency);
	END IF;
	PERFORM oms._check_json_argument('metadata', p_metadata,
									 pg_catalog.current_setting('oms.max_metadata_bytes')::integer);
	IF p_idempotency_key IS NOT NULL THEN
		-- oms._check_idempotency_key, which also refuses an empty key.
		IF pg_catalog.length(p_idempotency_key) = 0 THEN
			PERFORM oms._check_idempotency_key(p_idempotency_key);
		END IF;
		PERFORM oms._check_identifier('idempotency_key', p_idempotency_key, 255);
	END IF;
	-- The request is identified by its priced, normalized items, so that
	-- 2 and 2.0 or reordered keys are the same request.
	v_priced := oms._price_items(p_items);
	IF pg_catalog.current_setting('oms.unknown_skus') = 'refuse' THEN
		PERFORM oms._refuse_unknown_skus(v_priced -> 'items');
	END IF;

	-- Before the key is claimed: a shard that does not serve the key's
	-- partition refuses the create (OM020) and writes nothing.
	v_id := oms._new_order_id(p_idempotency_key);
	IF p_idempotency_key IS NOT NULL THEN
		-- oms._request_hash
		v_hash := pg_catalog.sha256(pg_catalog.convert_to(
			pg_catalog.jsonb_build_array(p_customer_id, v_priced -> 'items', p_currency, p_metadata)::text, 'UTF8'));
		-- The claim of oms._idempotency_begin; a key already there (a replay,
		-- a conflict, a claim of this transaction) is its business.
		INSERT INTO oms.idempotency_keys AS k (key, function_name, request_hash, response, created_at, expires_at)
		VALUES (p_idempotency_key, 'oms_create_order', v_hash, NULL, pg_catalog.now(),
				pg_catalog.now() + pg_catalog.current_setting('oms.idempotency_ttl')::interval)
		ON CONFLICT (key) DO UPDATE
			SET function_name = excluded.function_name, request_hash = excluded.request_hash,
				response = NULL, created_at = excluded.created_at, expires_at = excluded.expires_at
			WHERE k.expires_at <= pg_catalog.now();
		IF NOT FOUND THEN
			RETURN oms._idempotency_begin(p_idempotency_key, 'oms_create_order', v_hash);
		END IF;
	END IF;

	v_trace := NULLIF(pg_catalog.current_setting('oms.traceparent', true), '');
	WITH o AS (
		INSERT INTO oms.orders (id, customer_id, currency, total, metadata, timeline_seq, event_seq)
		VALUES (v_id, p_customer_id, p_currency, (v_priced ->> 'total')::bigint, p_metadata, 1, 1)
		RETURNING *
	), i AS (
		INSERT INTO oms.order_items (order_id, line_no, sku, quantity, unit_price, line_total)
		SELECT o.id, i.line_no, i.sku, i.quantity, i.unit_price, i.line_total
		FROM o CROSS JOIN pg_catalog.jsonb_to_recordset(v_priced -> 'items')
			AS i(line_no integer, sku text, quantity integer, unit_price bigint, line_total bigint)
	), d AS (
		-- oms._order_document(o, v_priced -> 'items')
		SELECT o.id, o.status, o.total, o.currency,
			   pg_catalog.jsonb_build_object(
				'order_id', o.id,
				'customer_id', o.customer_id,
				'status', o.status,
				'payment_status', o.payment_status,
				'fulfillment_status', o.fulfillment_status,
				'currency', o.currency,
				'total', o.total,
				'items', (SELECT pg_catalog.jsonb_agg(i.item || '{"quantity_canceled": 0, "quantity_fulfilling": 0,
									"quantity_shipped": 0, "quantity_delivered": 0, "quantity_returning": 0,
									"quantity_returned": 0, "quantity_refunded": 0}'::jsonb ORDER BY i.n)
						  FROM pg_catalog.jsonb_array_elements(v_priced -> 'items') WITH ORDINALITY AS i(item, n)),
				'version', o.version,
				'metadata', o.metadata,
				'created_at', pg_catalog.to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
				'updated_at', pg_catalog.to_char(o.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
				-- oms._order_outcomes of a new order.
				'last_saga', NULL, 'shipments', '[]'::jsonb, 'returns', '[]'::jsonb)
				AS document
		FROM o
	), c AS (
		SELECT d.*, pg_catalog.jsonb_build_object('total', d.total, 'currency', d.currency,
												  'item_count', pg_catalog.jsonb_array_length(v_priced -> 'items'),
												  'idempotency_key', p_idempotency_key) AS data
		FROM d
	), e AS (
		INSERT INTO oms.order_events (order_id, seq, event_type, from_status, to_status, data, traceparent)
		SELECT c.id, 1, 'order.created', NULL, c.status, c.data, v_trace
		FROM c
	), x AS (
		INSERT INTO oms.outbox (aggregatetype, aggregateid, type, payload, seq, traceparent)
		SELECT 'order', c.id, 'order.created',
			   c.data || pg_catalog.jsonb_build_object('previous_status', NULL::oms.order_status, 'order', c.document),
			   1, v_trace
		FROM c
	)
	SELECT c.document INTO v_document FROM c;
	PERFORM oms._check_publishable(v_document);
	-- The relay publishes within milliseconds of the commit.
	PERFORM oms._notify_worker();

	IF p_idempotency_key IS NOT NULL THEN
		-- oms._idempotency_finish
		UPDATE oms.idempotency_keys AS k SET response = v_document
		WHERE k.key = p_idempotency_key AND k.function_name = 'oms_create_order' AND k.request_hash = v_hash;
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION oms._create_order(text, jsonb, text, text, jsonb) IS
	'Creates a pending order: the body of both oms_create_order functions';

-- A completed refund counts refunded units and cancels what has not
-- shipped when everything is paid back.
CREATE OR REPLACE FUNCTION oms._step_complete_refund(p_saga oms.sagas)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_payment oms.payments;
	v_refund oms.refunds;
	v_status oms.order_status;
	v_data jsonb;
BEGIN
	SELECT * INTO v_refund FROM oms.refunds AS r WHERE r.id = p_saga.refund_id;
	SELECT * INTO v_payment FROM oms.payments AS p WHERE p.id = v_refund.payment_id;
	SELECT o.status INTO v_status FROM oms.orders AS o WHERE o.id = p_saga.order_id;
	v_data := pg_catalog.jsonb_build_object('refund_id', v_refund.id, 'amount', v_refund.amount,
											 'refunded_total', v_payment.refunded, 'reason', v_refund.reason);
	-- Units this refund pays back (canceled lines, a return) now count as
	-- refunded, and the return it pays is closed.
	PERFORM oms._refund_succeeded(v_refund.id);
	IF v_payment.refunded = v_payment.captured AND v_status = 'refunded' THEN
		-- Another refund saga already completed the order: its status, its
		-- event and the restock are done.  Record this refund only.
		PERFORM oms._timeline(p_saga.order_id, 'refund.completed', v_data);
	ELSIF v_payment.refunded = v_payment.captured THEN
		-- Everything is paid back: what has not shipped will not (pending
		-- shipments are canceled), and its stock goes back to its locations.  The units canceled or returned
		-- are refunded with the rest.
		PERFORM oms._move_shipment('oms_cancel_shipment', s.id, 'canceled', NULL, NULL,
								   'the order was refunded in full', NULL)
		FROM oms.shipments AS s WHERE s.order_id = p_saga.order_id AND s.status = 'pending'
		ORDER BY s.created_at, s.id;
		v_data := v_data || pg_catalog.jsonb_build_object('canceled', oms._cancel_unshipped(p_saga.order_id, NULL));
		UPDATE oms.order_items AS i SET quantity_refunded = i.quantity_canceled + i.quantity_returned
		WHERE i.order_id = p_saga.order_id AND i.quantity_refunded < i.quantity_canceled + i.quantity_returned;
		PERFORM oms._change_status(p_saga.order_id, 'refunded', 'order.refunded', v_data);
	ELSE
		PERFORM oms._change_status(p_saga.order_id, 'partially_refunded', 'order.partially_refunded', v_data);
	END IF;
	RETURN 'done';
END;
$$;
COMMENT ON FUNCTION oms._step_complete_refund(oms.sagas) IS
	'Refund step 2: counts the refunded units, closes a paid return; the order becomes refunded (pending shipments and unshipped units canceled, restocked) or partially_refunded';

-- Derived statuses, shipments, canceled lines (src/sql/fulfillment.sql).

--
-- Derived status dimensions.
--

-- The payment dimension from the payment's amounts.
CREATE FUNCTION oms._payment_status_of(p_captured bigint, p_refunded bigint)
RETURNS oms.payment_status
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE WHEN p_captured = 0 THEN 'unpaid'::oms.payment_status
			WHEN p_refunded = 0 THEN 'paid'::oms.payment_status
			WHEN p_refunded < p_captured THEN 'partially_refunded'::oms.payment_status
			ELSE 'refunded'::oms.payment_status END;
COMMENT ON FUNCTION oms._payment_status_of(bigint, bigint) IS
	'unpaid (nothing captured), paid, partially_refunded or refunded, from a payment''s captured and refunded amounts';

CREATE FUNCTION oms._sync_payment_status()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE oms.orders AS o SET payment_status = d.status
	FROM (SELECT oms._payment_status_of(NEW.captured, NEW.refunded) AS status) AS d
	WHERE o.id = NEW.order_id AND o.payment_status <> d.status;
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION oms._sync_payment_status() IS
	'Trigger: keeps oms.orders.payment_status derived from the order''s payment (the order machine guards the move)';

CREATE TRIGGER payments_sync_status AFTER INSERT OR UPDATE OF captured, refunded ON oms.payments
	FOR EACH ROW EXECUTE FUNCTION oms._sync_payment_status();
ALTER TABLE oms.payments ENABLE ALWAYS TRIGGER payments_sync_status;

/*
 * The fulfillment dimension from the sums of the ledger, with open = units
 * ordered and not canceled:
 *   returned            something returned, everything shipped returned and nothing left to ship
 *   partially_returned  something returned otherwise
 *   canceled            nothing open (every unit canceled before shipping)
 *   unfulfilled         nothing shipped (units in pending shipments included)
 *   partially_fulfilled shipped less than open
 *   delivered           everything open shipped and delivered
 *   fulfilled           everything open shipped, not all delivered
 */
CREATE FUNCTION oms._fulfillment_status_of(p_order_id uuid)
RETURNS oms.fulfillment_status
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v record;
BEGIN
	SELECT pg_catalog.sum(i.quantity - i.quantity_canceled) AS open,
		   pg_catalog.sum(i.quantity_shipped) AS shipped,
		   pg_catalog.sum(i.quantity_delivered) AS delivered,
		   pg_catalog.sum(i.quantity_returned) AS returned
	INTO v
	FROM oms.order_items AS i WHERE i.order_id = p_order_id;
	RETURN CASE WHEN v.returned > 0 AND v.returned = v.shipped AND v.shipped = v.open THEN 'returned'
				WHEN v.returned > 0 THEN 'partially_returned'
				WHEN v.open = 0 THEN 'canceled'
				WHEN v.shipped = 0 THEN 'unfulfilled'
				WHEN v.shipped < v.open THEN 'partially_fulfilled'
				WHEN v.delivered = v.shipped THEN 'delivered'
				ELSE 'fulfilled' END::oms.fulfillment_status;
END;
$$;
COMMENT ON FUNCTION oms._fulfillment_status_of(uuid) IS
	'The fulfillment status an order''s line ledger gives (see src/sql/fulfillment.sql)';

-- A statement trigger: a shipment of several lines derives the status
-- once per order.
CREATE FUNCTION oms._sync_fulfillment_status()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- Derived once per order, not once per test and once per write.
	UPDATE oms.orders AS o SET fulfillment_status = d.status
	FROM (SELECT c.order_id, oms._fulfillment_status_of(c.order_id) AS status
		  FROM (SELECT DISTINCT n.order_id FROM new_rows AS n) AS c) AS d
	WHERE o.id = d.order_id AND o.fulfillment_status <> d.status;
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION oms._sync_fulfillment_status() IS
	'Trigger: keeps oms.orders.fulfillment_status derived from the line ledger (the order machine guards the move)';

CREATE TRIGGER order_items_sync_status AFTER UPDATE ON oms.order_items
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION oms._sync_fulfillment_status();
ALTER TABLE oms.order_items ENABLE ALWAYS TRIGGER order_items_sync_status;

--
-- Shipments.
--

CREATE TYPE oms.shipment_status AS ENUM ('pending', 'shipped', 'delivered', 'canceled');
COMMENT ON TYPE oms.shipment_status IS 'Shipment status; allowed moves are in oms.status_transitions (machine shipment)';

CREATE TABLE oms.shipments (
	id			uuid PRIMARY KEY DEFAULT oms._uuid_v7(),
	order_id	uuid NOT NULL REFERENCES oms.orders (id) ON DELETE CASCADE,
	location	text NOT NULL REFERENCES oms.locations (code),
	status		oms.shipment_status NOT NULL DEFAULT 'pending',
	carrier		text CHECK (pg_catalog.length(carrier) BETWEEN 1 AND 100),
	tracking_number text CHECK (pg_catalog.length(tracking_number) BETWEEN 1 AND 255),
	reason		text,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	shipped_at	timestamptz,
	delivered_at timestamptz,
	canceled_at	timestamptz,
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX shipments_order_idx ON oms.shipments (order_id);
COMMENT ON TABLE oms.shipments IS 'Shipments of confirmed orders, each from one location; status guarded by the shipment machine';
COMMENT ON COLUMN oms.shipments.reason IS 'Why the shipment was canceled';

CREATE TABLE oms.shipment_lines (
	shipment_id	uuid NOT NULL REFERENCES oms.shipments (id) ON DELETE CASCADE,
	order_id	uuid NOT NULL,
	line_no		integer NOT NULL,
	quantity	integer NOT NULL CHECK (quantity > 0),
	PRIMARY KEY (shipment_id, line_no),
	FOREIGN KEY (order_id, line_no) REFERENCES oms.order_items (order_id, line_no) ON DELETE CASCADE
);
COMMENT ON TABLE oms.shipment_lines IS 'Units of each order line in a shipment';

CREATE TRIGGER shipment_status_guard BEFORE INSERT OR UPDATE ON oms.shipments
	FOR EACH ROW EXECUTE FUNCTION oms._status_guard('shipment', 'status', 'shipment', 'id');
ALTER TABLE oms.shipments ENABLE ALWAYS TRIGGER shipment_status_guard;

SELECT pg_catalog.pg_extension_config_dump('oms.shipments', '');
SELECT pg_catalog.pg_extension_config_dump('oms.shipment_lines', '');

-- Units of each line refunded by a refund that gives back canceled or
-- returned units; the refund saga counts them in the ledger when it
-- completes (saga.sql).
CREATE TABLE oms.refund_lines (
	refund_id	uuid NOT NULL REFERENCES oms.refunds (id) ON DELETE CASCADE,
	order_id	uuid NOT NULL,
	line_no		integer NOT NULL,
	quantity	integer NOT NULL CHECK (quantity > 0),
	PRIMARY KEY (refund_id, line_no),
	FOREIGN KEY (order_id, line_no) REFERENCES oms.order_items (order_id, line_no) ON DELETE CASCADE
);
COMMENT ON TABLE oms.refund_lines IS
	'Canceled or returned units a refund pays back, counted in order_items.quantity_refunded when the refund succeeds';
SELECT pg_catalog.pg_extension_config_dump('oms.refund_lines', '');

-- UTC with microseconds, as every time of the order document.
CREATE FUNCTION oms._utc(p_at timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
COMMENT ON FUNCTION oms._utc(timestamptz) IS 'A time as the order document writes it: UTC, microseconds, Z';

CREATE FUNCTION oms._shipment_json(p_shipment oms.shipments)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN pg_catalog.jsonb_build_object(
		'shipment_id', p_shipment.id,
		'status', p_shipment.status,
		'location', p_shipment.location,
		'carrier', p_shipment.carrier,
		'tracking_number', p_shipment.tracking_number,
		'items', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
							'line_no', l.line_no, 'sku', i.sku, 'quantity', l.quantity) ORDER BY l.line_no), '[]')
				  FROM oms.shipment_lines AS l
				  JOIN oms.order_items AS i ON i.order_id = l.order_id AND i.line_no = l.line_no
				  WHERE l.shipment_id = p_shipment.id),
		'reason', p_shipment.reason,
		'created_at', oms._utc(p_shipment.created_at),
		'shipped_at', oms._utc(p_shipment.shipped_at),
		'delivered_at', oms._utc(p_shipment.delivered_at),
		'canceled_at', oms._utc(p_shipment.canceled_at));
END;
$$;
COMMENT ON FUNCTION oms._shipment_json(oms.shipments) IS 'A shipment as the order document shows it';

/*
 * Appends the timeline entry and the outbox event of a change that is not
 * a move of the order's life (a shipment, a return, canceled lines) and
 * returns the order document.  The caller holds the order's row lock.
 */
CREATE FUNCTION oms._order_event(p_order_id uuid, p_event_type text, p_data jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_order oms.orders;
	v_document jsonb;
BEGIN
	UPDATE oms.orders AS o SET timeline_seq = o.timeline_seq + 1, event_seq = o.event_seq + 1
	WHERE o.id = p_order_id
	RETURNING * INTO v_order;
	v_document := oms._order_document(v_order, oms._order_items_json(v_order.id));
	PERFORM oms._record_change(v_order, p_event_type, v_order.status, p_data, v_document);
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION oms._order_event(uuid, text, jsonb) IS
	'Writes the timeline entry and outbox event of an order change that keeps its life status; returns the order document';

/*
 * The lines and units a call names, checked against the order: items is a
 * non-empty JSON array of objects {"line_no": n, "quantity": q} or
 * {"sku": "...", "quantity": q}; each line at most once.  22023 with the
 * position of the first bad item.
 */
CREATE FUNCTION oms._line_quantities(p_order_id uuid, p_items jsonb)
RETURNS TABLE (line_no integer, sku text, quantity integer, unit_price bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_item jsonb;
	v_pos integer := 0;
	v_line oms.order_items;
	v_seen integer[] := '{}';
	v_qty numeric;
BEGIN
	IF pg_catalog.jsonb_typeof(p_items) <> 'array' OR pg_catalog.jsonb_array_length(p_items) = 0 THEN
		RAISE EXCEPTION 'items must be a non-empty JSON array'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass items as ''[{"line_no": 1, "quantity": 1}]'' or ''[{"sku": "SKU-1", "quantity": 1}]''.';
	END IF;
	FOR v_item IN SELECT e.value FROM pg_catalog.jsonb_array_elements(p_items) AS e LOOP
		v_pos := v_pos + 1;
		IF pg_catalog.jsonb_typeof(v_item) <> 'object'
		   OR EXISTS (SELECT FROM pg_catalog.jsonb_object_keys(v_item) AS k WHERE k NOT IN ('line_no', 'sku', 'quantity'))
		   OR (v_item ? 'line_no') = (v_item ? 'sku') THEN
			RAISE EXCEPTION 'item % must be an object with "quantity" and one of "line_no" or "sku"', v_pos
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		IF pg_catalog.jsonb_typeof(v_item -> 'quantity') IS DISTINCT FROM 'number' THEN
			RAISE EXCEPTION 'item %: quantity must be a positive integer', v_pos
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		v_qty := (v_item ->> 'quantity')::numeric;
		IF v_qty <> pg_catalog.trunc(v_qty) OR v_qty < 1 OR v_qty > 2147483647 THEN
			RAISE EXCEPTION 'item %: quantity must be a positive integer', v_pos
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = pg_catalog.format('Got %s.', v_item -> 'quantity');
		END IF;
		IF v_item ? 'line_no' THEN
			IF pg_catalog.jsonb_typeof(v_item -> 'line_no') IS DISTINCT FROM 'number'
			   OR (v_item ->> 'line_no') !~ '^[0-9]{1,9}$' THEN
				RAISE EXCEPTION 'item %: line_no must be a positive integer', v_pos
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
			SELECT * INTO v_line FROM oms.order_items AS i
			WHERE i.order_id = p_order_id AND i.line_no = (v_item ->> 'line_no')::integer;
		ELSE
			IF pg_catalog.jsonb_typeof(v_item -> 'sku') IS DISTINCT FROM 'string' THEN
				RAISE EXCEPTION 'item %: sku must be a string', v_pos
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
			SELECT * INTO v_line FROM oms.order_items AS i
			WHERE i.order_id = p_order_id AND i.sku = (v_item ->> 'sku');
		END IF;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'item %: order "%" has no line %', v_pos, p_order_id,
				coalesce(v_item ->> 'line_no', pg_catalog.format('with SKU "%s"', v_item ->> 'sku'))
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		IF v_line.line_no = ANY (v_seen) THEN
			RAISE EXCEPTION 'item %: line % appears twice', v_pos, v_line.line_no
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		v_seen := v_seen || v_line.line_no;
		line_no := v_line.line_no;
		sku := v_line.sku;
		quantity := v_qty::integer;
		unit_price := v_line.unit_price;
		RETURN NEXT;
	END LOOP;
END;
$$;
COMMENT ON FUNCTION oms._line_quantities(uuid, jsonb) IS
	'Checks a call''s items [{line_no|sku, quantity}] against an order''s lines (22023) and returns them';

-- OM003 for a line that has fewer units than asked in the state a call needs.
CREATE FUNCTION oms._short_line(p_what text, p_line_no integer, p_sku text, p_asked integer, p_have integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RAISE EXCEPTION 'line % (SKU "%") has % units %, % asked', p_line_no, p_sku, p_have, p_what, p_asked
		USING ERRCODE = 'OM003',
			  HINT = 'oms_get_order() shows each line''s ledger.';
END;
$$;
COMMENT ON FUNCTION oms._short_line(text, integer, text, integer, integer) IS
	'Raises OM003: a line has fewer units in the needed state than the call asks for';

-- 55000 unless the order's life allows work on its goods.
CREATE FUNCTION oms._check_fulfillable(p_order oms.orders, p_action text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF p_order.status NOT IN ('confirmed', 'partially_refunded', 'refunded') THEN
		RAISE EXCEPTION 'order "%" cannot %', p_order.id, p_action
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('The order is %s.', p_order.status),
				  HINT = 'Only confirmed orders ship, cancel lines or take returns; pay the order first.';
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._check_fulfillable(oms.orders, text) IS
	'Raises 55000 unless the order is confirmed, partially_refunded or refunded';

-- Optional free text: 22001 over p_max characters, 22023 when empty.
CREATE FUNCTION oms._check_text(p_name text, p_value text, p_max integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF p_value IS NOT NULL THEN
		PERFORM oms._check_identifier(p_name, p_value, p_max);
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._check_text(text, text, integer) IS
	'NULL or an identifier-like text of at most p_max characters (22001, 22023)';

CREATE FUNCTION oms._lock_shipment(p_shipment_id uuid)
RETURNS oms.shipments
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_order_id uuid;
	v_shipment oms.shipments;
BEGIN
	SELECT s.order_id INTO v_order_id FROM oms.shipments AS s WHERE s.id = p_shipment_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'shipment "%" does not exist', p_shipment_id
			USING ERRCODE = 'no_data_found';
	END IF;
	-- The order row first, as every change of the order's goods.
	PERFORM oms._lock_order(v_order_id);
	SELECT * INTO v_shipment FROM oms.shipments AS s WHERE s.id = p_shipment_id FOR UPDATE;
	RETURN v_shipment;
END;
$$;
COMMENT ON FUNCTION oms._lock_shipment(uuid) IS 'Locks a shipment''s order, then the shipment; P0002 when there is none';

/*
 * The location a shipment comes from when the caller names none: the one
 * location holding the order's unshipped units.
 */
CREATE FUNCTION oms._only_location(p_order_id uuid)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_locations text[];
BEGIN
	SELECT pg_catalog.array_agg(DISTINCT r.location ORDER BY r.location) INTO v_locations
	FROM oms.reservations AS r
	WHERE r.order_id = p_order_id AND r.status = 'consumed' AND r.quantity > r.shipped;
	IF pg_catalog.cardinality(v_locations) = 1 THEN
		RETURN v_locations[1];
	ELSIF v_locations IS NULL THEN
		RAISE EXCEPTION 'order "%" has nothing left to ship', p_order_id
			USING ERRCODE = 'OM003',
				  DETAIL = 'Every unit is canceled, in a shipment or shipped.';
	END IF;
	RAISE EXCEPTION 'location must be given'
		USING ERRCODE = 'null_value_not_allowed',
			  DETAIL = pg_catalog.format('The order''s unshipped units are at %s.',
										 pg_catalog.array_to_string(v_locations, ', '));
END;
$$;
COMMENT ON FUNCTION oms._only_location(uuid) IS
	'The one location holding an order''s unshipped units; 22004 naming them when there are several, OM003 when none';

CREATE FUNCTION @extschema@.oms_create_shipment(
	order_id uuid,
	items jsonb DEFAULT NULL,
	location text DEFAULT NULL,
	carrier text DEFAULT NULL,
	tracking_number text DEFAULT NULL,
	idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_order oms.orders;
	v_location text := oms_create_shipment.location;
	v_shipment oms.shipments;
	v_line record;
	v_lines jsonb := '[]';
	v_document jsonb;
	v_hash bytea;
BEGIN
	PERFORM oms._own_id(oms_create_shipment.order_id, 'order');
	PERFORM oms._check_not_null('order_id', oms_create_shipment.order_id);
	PERFORM oms._check_text('location', v_location, 100);
	PERFORM oms._check_text('carrier', oms_create_shipment.carrier, 100);
	PERFORM oms._check_text('tracking_number', oms_create_shipment.tracking_number, 255);
	PERFORM oms._check_idempotency_key(oms_create_shipment.idempotency_key);
	IF oms_create_shipment.idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(pg_catalog.jsonb_build_array(oms_create_shipment.order_id, oms_create_shipment.items,
			v_location, oms_create_shipment.carrier, oms_create_shipment.tracking_number));
		v_document := oms._idempotency_begin(oms_create_shipment.idempotency_key, 'oms_create_shipment', v_hash);
		IF v_document IS NOT NULL THEN
			RETURN v_document;
		END IF;
	END IF;

	v_order := oms._lock_order(oms_create_shipment.order_id);
	PERFORM oms._check_fulfillable(v_order, 'ship');
	IF v_location IS NULL THEN
		v_location := oms._only_location(v_order.id);
	ELSIF NOT EXISTS (SELECT FROM oms.locations AS l WHERE l.code = v_location) THEN
		RAISE EXCEPTION 'location "%" does not exist', v_location
			USING ERRCODE = 'no_data_found';
	END IF;

	INSERT INTO oms.shipments (id, order_id, location, carrier, tracking_number)
	VALUES (oms._child_id(v_order.id), v_order.id, v_location, oms_create_shipment.carrier, oms_create_shipment.tracking_number)
	RETURNING * INTO v_shipment;
	FOR v_line IN
		SELECT q.line_no, q.sku, q.quantity
		FROM oms._line_quantities(v_order.id, oms_create_shipment.items) AS q
		WHERE oms_create_shipment.items IS NOT NULL
		UNION ALL
		-- No items: every unshipped unit the location holds for the order.
		SELECT i.line_no, i.sku,
			   LEAST(r.quantity - r.shipped, i.quantity - i.quantity_canceled - i.quantity_fulfilling - i.quantity_shipped)
		FROM oms.order_items AS i
		JOIN oms.reservations AS r ON r.order_id = i.order_id AND r.sku = i.sku
		WHERE oms_create_shipment.items IS NULL AND i.order_id = v_order.id
		  AND r.location = v_location AND r.status = 'consumed'
		  AND r.quantity > r.shipped
		  AND i.quantity - i.quantity_canceled - i.quantity_fulfilling - i.quantity_shipped > 0
		ORDER BY 2
	LOOP
		PERFORM oms._ship_line(v_order.id, v_line.line_no, v_line.quantity);
		PERFORM oms._ship_from(v_order.id, v_line.sku, v_location, v_line.quantity);
		INSERT INTO oms.shipment_lines (shipment_id, order_id, line_no, quantity)
		VALUES (v_shipment.id, v_order.id, v_line.line_no, v_line.quantity);
	END LOOP;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'order "%" has nothing to ship from location "%"', v_order.id, v_location
			USING ERRCODE = 'OM003';
	END IF;

	v_document := oms._order_event(v_order.id, 'shipment.created',
		pg_catalog.jsonb_build_object('shipment', oms._shipment_json(v_shipment),
									  'idempotency_key', oms_create_shipment.idempotency_key));
	v_document := v_document || pg_catalog.jsonb_build_object('shipment', oms._shipment_json(v_shipment));
	IF oms_create_shipment.idempotency_key IS NOT NULL THEN
		PERFORM oms._idempotency_finish(oms_create_shipment.idempotency_key, 'oms_create_shipment', v_hash, v_document);
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_create_shipment(uuid, jsonb, text, text, text, text) IS
	'Creates a pending shipment of a confirmed order from one location (items NULL: every unshipped unit there); returns the order document with the shipment';

-- Units of a line enter a pending shipment (OM003 when fewer are open).
CREATE FUNCTION oms._ship_line(p_order_id uuid, p_line_no integer, p_quantity integer)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_line oms.order_items;
	v_open integer;
BEGIN
	SELECT * INTO v_line FROM oms.order_items AS i WHERE i.order_id = p_order_id AND i.line_no = p_line_no;
	v_open := v_line.quantity - v_line.quantity_canceled - v_line.quantity_fulfilling - v_line.quantity_shipped;
	IF v_open < p_quantity THEN
		PERFORM oms._short_line('left to ship', v_line.line_no, v_line.sku, p_quantity, v_open);
	END IF;
	UPDATE oms.order_items AS i SET quantity_fulfilling = i.quantity_fulfilling + p_quantity
	WHERE i.order_id = p_order_id AND i.line_no = p_line_no;
END;
$$;
COMMENT ON FUNCTION oms._ship_line(uuid, integer, integer) IS
	'Moves units of a line into a pending shipment; OM003 when fewer are left to ship';

/*
 * The body of oms_ship, oms_mark_delivered and oms_cancel_shipment: move a
 * shipment, its units through the ledger, and write the event.
 */
CREATE FUNCTION oms._move_shipment(p_function text, p_shipment_id uuid, p_to oms.shipment_status,
								   p_carrier text, p_tracking_number text, p_reason text, p_idempotency_key text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_shipment oms.shipments;
	v_document jsonb;
	v_hash bytea;
	v_line record;
BEGIN
	PERFORM oms._check_not_null('shipment_id', p_shipment_id);
	PERFORM oms._check_text('carrier', p_carrier, 100);
	PERFORM oms._check_text('tracking_number', p_tracking_number, 255);
	IF pg_catalog.length(p_reason) > 1000 THEN
		RAISE EXCEPTION 'reason is too long'
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = pg_catalog.format('reason has at most 1000 characters, got %s.', pg_catalog.length(p_reason));
	END IF;
	PERFORM oms._check_idempotency_key(p_idempotency_key);
	IF p_idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(pg_catalog.jsonb_build_array(p_shipment_id, p_carrier, p_tracking_number, p_reason));
		v_document := oms._idempotency_begin(p_idempotency_key, p_function, v_hash);
		IF v_document IS NOT NULL THEN
			RETURN v_document;
		END IF;
	END IF;

	v_shipment := oms._lock_shipment(p_shipment_id);
	IF NOT oms._transition_allowed_any('shipment', v_shipment.status::text, p_to::text) THEN
		RAISE EXCEPTION 'shipment "%" cannot become %', v_shipment.id, p_to
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('The shipment is %s.', v_shipment.status);
	END IF;
	UPDATE oms.shipments AS s
	SET status = p_to,
		carrier = coalesce(p_carrier, s.carrier),
		tracking_number = coalesce(p_tracking_number, s.tracking_number),
		reason = CASE WHEN p_to = 'canceled' THEN p_reason ELSE s.reason END,
		shipped_at = CASE WHEN p_to = 'shipped' THEN pg_catalog.now() ELSE s.shipped_at END,
		delivered_at = CASE WHEN p_to = 'delivered' THEN pg_catalog.now() ELSE s.delivered_at END,
		canceled_at = CASE WHEN p_to = 'canceled' THEN pg_catalog.now() ELSE s.canceled_at END,
		updated_at = pg_catalog.now()
	WHERE s.id = v_shipment.id
	RETURNING * INTO v_shipment;
	UPDATE oms.order_items AS i
	SET quantity_fulfilling = i.quantity_fulfilling - CASE WHEN p_to IN ('shipped', 'canceled') THEN l.quantity ELSE 0 END,
		quantity_shipped = i.quantity_shipped + CASE WHEN p_to = 'shipped' THEN l.quantity ELSE 0 END,
		quantity_delivered = i.quantity_delivered + CASE WHEN p_to = 'delivered' THEN l.quantity ELSE 0 END
	FROM oms.shipment_lines AS l
	WHERE l.shipment_id = v_shipment.id AND i.order_id = l.order_id AND i.line_no = l.line_no;
	IF p_to = 'canceled' THEN
		-- The units go back to the allocation at the location, shippable again.
		FOR v_line IN
			SELECT i.sku, l.quantity FROM oms.shipment_lines AS l
			JOIN oms.order_items AS i ON i.order_id = l.order_id AND i.line_no = l.line_no
			WHERE l.shipment_id = v_shipment.id ORDER BY i.sku
		LOOP
			PERFORM oms._ship_from(v_shipment.order_id, v_line.sku, v_shipment.location, -v_line.quantity);
		END LOOP;
	END IF;

	v_document := oms._order_event(v_shipment.order_id, 'shipment.' || p_to::text,
		pg_catalog.jsonb_build_object('shipment', oms._shipment_json(v_shipment), 'idempotency_key', p_idempotency_key));
	v_document := v_document || pg_catalog.jsonb_build_object('shipment', oms._shipment_json(v_shipment));
	IF p_idempotency_key IS NOT NULL THEN
		PERFORM oms._idempotency_finish(p_idempotency_key, p_function, v_hash, v_document);
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION oms._move_shipment(text, uuid, oms.shipment_status, text, text, text, text) IS
	'Moves a shipment (shipped, delivered, canceled), its units through the ledger, with its event';

CREATE FUNCTION @extschema@.oms_ship(
	shipment_id uuid,
	carrier text DEFAULT NULL,
	tracking_number text DEFAULT NULL,
	idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._own_id(oms_ship.shipment_id, 'shipment');
	RETURN oms._move_shipment('oms_ship', oms_ship.shipment_id, 'shipped', oms_ship.carrier,
							  oms_ship.tracking_number, NULL, oms_ship.idempotency_key);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_ship(uuid, text, text, text) IS
	'Hands a pending shipment to the carrier (carrier and tracking number may be set here); returns the order document with the shipment';

CREATE FUNCTION @extschema@.oms_mark_delivered(shipment_id uuid, idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._own_id(oms_mark_delivered.shipment_id, 'shipment');
	RETURN oms._move_shipment('oms_mark_delivered', oms_mark_delivered.shipment_id, 'delivered', NULL, NULL, NULL,
							  oms_mark_delivered.idempotency_key);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_mark_delivered(uuid, text) IS
	'Records that the carrier delivered a shipped shipment; returns the order document with the shipment';

CREATE FUNCTION @extschema@.oms_cancel_shipment(shipment_id uuid, reason text DEFAULT NULL,
												idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._own_id(oms_cancel_shipment.shipment_id, 'shipment');
	RETURN oms._move_shipment('oms_cancel_shipment', oms_cancel_shipment.shipment_id, 'canceled', NULL, NULL,
							  oms_cancel_shipment.reason, oms_cancel_shipment.idempotency_key);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_cancel_shipment(uuid, text, text) IS
	'Cancels a pending shipment: its units can ship again; returns the order document with the shipment';

--
-- Refunds of units given back (canceled lines here, returns in returns.sql).
--

/*
 * Starts the refund saga for units of lines: amount = units x unit price,
 * capped at what is left to refund (amount-only refunds may have taken
 * some).  Returns the refund as JSON, or NULL when nothing is left to
 * refund (the units stay unrefunded in the ledger).  The caller holds the
 * order's row lock.
 */
CREATE FUNCTION oms._refund_lines(p_order_id uuid, p_lines jsonb, p_reason text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_payment oms.payments;
	v_refundable bigint;
	v_amount bigint;
	v_refund uuid;
BEGIN
	SELECT pg_catalog.sum((l ->> 'quantity')::bigint * i.unit_price) INTO v_amount
	FROM pg_catalog.jsonb_array_elements(p_lines) AS l
	JOIN oms.order_items AS i ON i.order_id = p_order_id AND i.line_no = (l ->> 'line_no')::integer;
	SELECT * INTO v_payment FROM oms.payments AS p WHERE p.order_id = p_order_id FOR UPDATE;
	v_refundable := v_payment.captured - v_payment.refunded
		- (SELECT coalesce(pg_catalog.sum(r.amount), 0) FROM oms.refunds AS r
		   WHERE r.payment_id = v_payment.id AND r.status = 'pending');
	v_amount := LEAST(v_amount, v_refundable);
	IF v_amount IS NULL OR v_amount <= 0 THEN
		RETURN NULL;
	END IF;
	INSERT INTO oms.refunds (id, order_id, payment_id, amount, reason)
	VALUES (oms._child_id(p_order_id), p_order_id, v_payment.id, v_amount, p_reason)
	RETURNING id INTO v_refund;
	INSERT INTO oms.refund_lines (refund_id, order_id, line_no, quantity)
	SELECT v_refund, p_order_id, (l ->> 'line_no')::integer, (l ->> 'quantity')::integer
	FROM pg_catalog.jsonb_array_elements(p_lines) AS l;
	PERFORM oms._timeline(p_order_id, 'refund.requested',
		pg_catalog.jsonb_build_object('refund_id', v_refund, 'amount', v_amount, 'reason', p_reason, 'items', p_lines));
	PERFORM oms._start_saga(p_order_id, 'refund', v_refund);
	PERFORM oms._notify_worker();
	RETURN pg_catalog.jsonb_build_object('refund_id', v_refund, 'amount', v_amount, 'status', 'pending');
END;
$$;
COMMENT ON FUNCTION oms._refund_lines(uuid, jsonb, text) IS
	'Starts a refund saga for units of lines (units x unit price, capped at the refundable amount); NULL when nothing is left';

/*
 * Cancels unshipped units of lines: the ledger counts them canceled and
 * their stock goes back to the locations that held them.  p_lines NULL:
 * every unit not canceled, in a shipment or shipped.  Returns the units
 * canceled as [{line_no, sku, quantity, locations}] (empty when none).
 */
CREATE FUNCTION oms._cancel_unshipped(p_order_id uuid, p_lines jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_line record;
	v_open integer;
	v_done jsonb := '[]';
	v_given jsonb;
BEGIN
	FOR v_line IN
		SELECT i.*, coalesce(q.quantity,
							 i.quantity - i.quantity_canceled - i.quantity_fulfilling - i.quantity_shipped) AS asked
		FROM oms.order_items AS i
		LEFT JOIN oms._line_quantities(p_order_id, p_lines) AS q ON q.line_no = i.line_no
		WHERE i.order_id = p_order_id AND (p_lines IS NULL OR q.line_no IS NOT NULL)
		ORDER BY i.sku
	LOOP
		v_open := v_line.quantity - v_line.quantity_canceled - v_line.quantity_fulfilling - v_line.quantity_shipped;
		IF v_open < v_line.asked THEN
			PERFORM oms._short_line('left unshipped', v_line.line_no, v_line.sku, v_line.asked, v_open);
		END IF;
		CONTINUE WHEN v_line.asked = 0;
		-- Units of a confirmed order are consumed reservations; an order
		-- never confirmed has none to give back.
		v_given := '[]';
		IF EXISTS (SELECT FROM oms.reservations AS r
				   WHERE r.order_id = p_order_id AND r.sku = v_line.sku AND r.status = 'consumed') THEN
			v_given := oms._release_allocation(p_order_id, v_line.sku, v_line.asked);
		END IF;
		UPDATE oms.order_items AS i SET quantity_canceled = i.quantity_canceled + v_line.asked
		WHERE i.order_id = p_order_id AND i.line_no = v_line.line_no;
		v_done := v_done || pg_catalog.jsonb_build_object('line_no', v_line.line_no, 'sku', v_line.sku,
														  'quantity', v_line.asked, 'locations', v_given);
	END LOOP;
	RETURN v_done;
END;
$$;
COMMENT ON FUNCTION oms._cancel_unshipped(uuid, jsonb) IS
	'Cancels unshipped units of lines (all when NULL), giving their stock back; OM003 when a line has fewer';

CREATE FUNCTION @extschema@.oms_cancel_items(
	order_id uuid,
	items jsonb DEFAULT NULL,
	reason text DEFAULT NULL,
	idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_order oms.orders;
	v_canceled jsonb;
	v_refund jsonb;
	v_document jsonb;
	v_hash bytea;
BEGIN
	PERFORM oms._own_id(oms_cancel_items.order_id, 'order');
	PERFORM oms._check_not_null('order_id', oms_cancel_items.order_id);
	IF pg_catalog.length(oms_cancel_items.reason) > 1000 THEN
		RAISE EXCEPTION 'reason is too long'
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = pg_catalog.format('reason has at most 1000 characters, got %s.',
											 pg_catalog.length(oms_cancel_items.reason));
	END IF;
	PERFORM oms._check_idempotency_key(oms_cancel_items.idempotency_key);
	IF oms_cancel_items.idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(pg_catalog.jsonb_build_array(oms_cancel_items.order_id, oms_cancel_items.items,
																 oms_cancel_items.reason));
		v_document := oms._idempotency_begin(oms_cancel_items.idempotency_key, 'oms_cancel_items', v_hash);
		IF v_document IS NOT NULL THEN
			RETURN v_document;
		END IF;
	END IF;

	v_order := oms._lock_order(oms_cancel_items.order_id);
	IF v_order.status NOT IN ('confirmed', 'partially_refunded') THEN
		RAISE EXCEPTION 'order "%" cannot cancel lines', v_order.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('The order is %s.', v_order.status),
				  HINT = CASE WHEN v_order.status IN ('pending', 'processing')
							  THEN 'Cancel the whole order with oms_cancel_order().'
							  ELSE 'Only confirmed or partially refunded orders cancel lines.' END;
	END IF;
	v_canceled := oms._cancel_unshipped(v_order.id, oms_cancel_items.items);
	IF pg_catalog.jsonb_array_length(v_canceled) = 0 THEN
		RAISE EXCEPTION 'order "%" has nothing left to cancel', v_order.id
			USING ERRCODE = 'OM003',
				  DETAIL = 'Every unit is canceled, in a shipment or shipped.';
	END IF;
	v_refund := oms._refund_lines(v_order.id, v_canceled, oms_cancel_items.reason);
	v_document := oms._order_event(v_order.id, 'order.items_canceled',
		pg_catalog.jsonb_build_object('items', v_canceled, 'reason', oms_cancel_items.reason, 'refund', v_refund,
									  'idempotency_key', oms_cancel_items.idempotency_key));
	v_document := v_document || pg_catalog.jsonb_build_object('canceled', v_canceled, 'refund', v_refund);
	IF oms_cancel_items.idempotency_key IS NOT NULL THEN
		PERFORM oms._idempotency_finish(oms_cancel_items.idempotency_key, 'oms_cancel_items', v_hash, v_document);
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_cancel_items(uuid, jsonb, text, text) IS
	'Cancels unshipped units of a confirmed order (items NULL: all of them), gives their stock back and refunds them through the refund saga';

-- Privileges of the objects above: nothing for PUBLIC, each role what it
-- needs (the roles come from roles.sql, checks.sql verifies).
GRANT SELECT ON oms.shipments, oms.shipment_lines, oms.refund_lines TO oms_reader;
REVOKE ALL ON FUNCTION oms._payment_status_of(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._sync_payment_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._fulfillment_status_of(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._sync_fulfillment_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._utc(timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._shipment_json(oms.shipments) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._order_event(uuid, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._line_quantities(uuid, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._short_line(text, integer, text, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._check_fulfillable(oms.orders, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._check_text(text, text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._lock_shipment(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._only_location(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._ship_line(uuid, integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._move_shipment(text, uuid, oms.shipment_status, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._refund_lines(uuid, jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._cancel_unshipped(uuid, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_create_shipment(uuid, jsonb, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_ship(uuid, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_mark_delivered(uuid, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_cancel_shipment(uuid, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_cancel_items(uuid, jsonb, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	@extschema@.oms_create_shipment(uuid, jsonb, text, text, text, text),
	@extschema@.oms_ship(uuid, text, text, text),
	@extschema@.oms_mark_delivered(uuid, text),
	@extschema@.oms_cancel_shipment(uuid, text, text),
	@extschema@.oms_cancel_items(uuid, jsonb, text, text)
TO oms_app;

-- Returns (src/sql/returns.sql).

CREATE TYPE oms.return_status AS ENUM ('requested', 'received', 'refunded', 'rejected');
COMMENT ON TYPE oms.return_status IS 'Return status; allowed moves are in oms.status_transitions (machine return)';

CREATE TABLE oms.returns (
	id			uuid PRIMARY KEY DEFAULT oms._uuid_v7(),
	order_id	uuid NOT NULL REFERENCES oms.orders (id) ON DELETE CASCADE,
	status		oms.return_status NOT NULL DEFAULT 'requested',
	reason		text NOT NULL CHECK (pg_catalog.length(reason) BETWEEN 1 AND 1000),
	restock_location text REFERENCES oms.locations (code),
	rejection_reason text,
	refund_id	uuid REFERENCES oms.refunds (id) ON DELETE SET NULL,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	received_at	timestamptz,
	closed_at	timestamptz,
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX returns_order_idx ON oms.returns (order_id);
CREATE INDEX returns_refund_idx ON oms.returns (refund_id) WHERE refund_id IS NOT NULL;
COMMENT ON TABLE oms.returns IS 'Returns (RMA) of delivered units; status guarded by the return machine';
COMMENT ON COLUMN oms.returns.restock_location IS 'Where the received units went back on hand; NULL when not restocked';
COMMENT ON COLUMN oms.returns.refund_id IS 'The refund of the received units (NULL before receipt, or when nothing was left to refund)';

CREATE TABLE oms.return_lines (
	return_id	uuid NOT NULL REFERENCES oms.returns (id) ON DELETE CASCADE,
	order_id	uuid NOT NULL,
	line_no		integer NOT NULL,
	quantity	integer NOT NULL CHECK (quantity > 0),
	PRIMARY KEY (return_id, line_no),
	FOREIGN KEY (order_id, line_no) REFERENCES oms.order_items (order_id, line_no) ON DELETE CASCADE
);
COMMENT ON TABLE oms.return_lines IS 'Units of each order line in a return';

CREATE TRIGGER return_status_guard BEFORE INSERT OR UPDATE ON oms.returns
	FOR EACH ROW EXECUTE FUNCTION oms._status_guard('return', 'status', 'return', 'id');
ALTER TABLE oms.returns ENABLE ALWAYS TRIGGER return_status_guard;

SELECT pg_catalog.pg_extension_config_dump('oms.returns', '');
SELECT pg_catalog.pg_extension_config_dump('oms.return_lines', '');

CREATE FUNCTION oms._return_json(p_return oms.returns)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN pg_catalog.jsonb_build_object(
		'return_id', p_return.id,
		'status', p_return.status,
		'reason', p_return.reason,
		'items', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
							'line_no', l.line_no, 'sku', i.sku, 'quantity', l.quantity,
							'amount', l.quantity * i.unit_price) ORDER BY l.line_no), '[]')
				  FROM oms.return_lines AS l
				  JOIN oms.order_items AS i ON i.order_id = l.order_id AND i.line_no = l.line_no
				  WHERE l.return_id = p_return.id),
		'restock_location', p_return.restock_location,
		'rejection_reason', p_return.rejection_reason,
		'refund', (SELECT pg_catalog.jsonb_build_object('refund_id', r.id, 'amount', r.amount, 'status', r.status)
				   FROM oms.refunds AS r WHERE r.id = p_return.refund_id),
		'created_at', oms._utc(p_return.created_at),
		'received_at', oms._utc(p_return.received_at),
		'closed_at', oms._utc(p_return.closed_at));
END;
$$;
COMMENT ON FUNCTION oms._return_json(oms.returns) IS 'A return as the order document shows it';

CREATE FUNCTION oms._lock_return(p_return_id uuid)
RETURNS oms.returns
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_order_id uuid;
	v_return oms.returns;
BEGIN
	SELECT r.order_id INTO v_order_id FROM oms.returns AS r WHERE r.id = p_return_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'return "%" does not exist', p_return_id
			USING ERRCODE = 'no_data_found';
	END IF;
	PERFORM oms._lock_order(v_order_id);
	SELECT * INTO v_return FROM oms.returns AS r WHERE r.id = p_return_id FOR UPDATE;
	RETURN v_return;
END;
$$;
COMMENT ON FUNCTION oms._lock_return(uuid) IS 'Locks a return''s order, then the return; P0002 when there is none';

-- 55000 unless the return may move to p_to.
CREATE FUNCTION oms._check_return_move(p_return oms.returns, p_to oms.return_status)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT oms._transition_allowed_any('return', p_return.status::text, p_to::text) THEN
		RAISE EXCEPTION 'return "%" cannot become %', p_return.id, p_to
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('The return is %s.', p_return.status);
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._check_return_move(oms.returns, oms.return_status) IS
	'Raises 55000 unless the return machine allows the move';

CREATE FUNCTION @extschema@.oms_request_return(
	order_id uuid,
	reason text,
	items jsonb DEFAULT NULL,
	idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_order oms.orders;
	v_return oms.returns;
	v_line record;
	v_free integer;
	v_document jsonb;
	v_hash bytea;
BEGIN
	PERFORM oms._own_id(oms_request_return.order_id, 'order');
	PERFORM oms._check_not_null('order_id', oms_request_return.order_id);
	PERFORM oms._check_not_null('reason', oms_request_return.reason);
	IF pg_catalog.length(oms_request_return.reason) NOT BETWEEN 1 AND 1000 THEN
		RAISE EXCEPTION 'reason must have 1 to 1000 characters'
			USING ERRCODE = CASE WHEN pg_catalog.length(oms_request_return.reason) = 0
								 THEN 'invalid_parameter_value' ELSE 'string_data_right_truncation' END;
	END IF;
	PERFORM oms._check_idempotency_key(oms_request_return.idempotency_key);
	IF oms_request_return.idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(pg_catalog.jsonb_build_array(oms_request_return.order_id, oms_request_return.items,
																 oms_request_return.reason));
		v_document := oms._idempotency_begin(oms_request_return.idempotency_key, 'oms_request_return', v_hash);
		IF v_document IS NOT NULL THEN
			RETURN v_document;
		END IF;
	END IF;

	v_order := oms._lock_order(oms_request_return.order_id);
	PERFORM oms._check_fulfillable(v_order, 'take a return');
	INSERT INTO oms.returns (id, order_id, reason)
	VALUES (oms._child_id(v_order.id), v_order.id, oms_request_return.reason)
	RETURNING * INTO v_return;
	FOR v_line IN
		SELECT i.line_no, i.sku, i.quantity_delivered - i.quantity_returning - i.quantity_returned AS free,
			   coalesce(q.quantity, i.quantity_delivered - i.quantity_returning - i.quantity_returned) AS asked
		FROM oms.order_items AS i
		LEFT JOIN oms._line_quantities(v_order.id, oms_request_return.items) AS q ON q.line_no = i.line_no
		WHERE i.order_id = v_order.id AND (oms_request_return.items IS NULL OR q.line_no IS NOT NULL)
		ORDER BY i.line_no
	LOOP
		v_free := v_line.free;
		IF v_free < v_line.asked THEN
			PERFORM oms._short_line('delivered and not returned', v_line.line_no, v_line.sku, v_line.asked, v_free);
		END IF;
		CONTINUE WHEN v_line.asked = 0;
		UPDATE oms.order_items AS i SET quantity_returning = i.quantity_returning + v_line.asked
		WHERE i.order_id = v_order.id AND i.line_no = v_line.line_no;
		INSERT INTO oms.return_lines (return_id, order_id, line_no, quantity)
		VALUES (v_return.id, v_order.id, v_line.line_no, v_line.asked);
	END LOOP;
	IF NOT EXISTS (SELECT FROM oms.return_lines AS l WHERE l.return_id = v_return.id) THEN
		RAISE EXCEPTION 'order "%" has nothing to return', v_order.id
			USING ERRCODE = 'OM003',
				  DETAIL = 'No delivered unit is left that is not returned or in a return.';
	END IF;

	v_document := oms._order_event(v_order.id, 'return.requested',
		pg_catalog.jsonb_build_object('return', oms._return_json(v_return),
									  'idempotency_key', oms_request_return.idempotency_key));
	v_document := v_document || pg_catalog.jsonb_build_object('return', oms._return_json(v_return));
	IF oms_request_return.idempotency_key IS NOT NULL THEN
		PERFORM oms._idempotency_finish(oms_request_return.idempotency_key, 'oms_request_return', v_hash, v_document);
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_request_return(uuid, text, jsonb, text) IS
	'Requests a return of delivered units with a reason (items NULL: every delivered unit not returned); returns the order document with the return';

CREATE FUNCTION @extschema@.oms_receive_return(
	return_id uuid,
	restock_location text DEFAULT NULL,
	idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_return oms.returns;
	v_lines jsonb;
	v_refund jsonb;
	v_line record;
	v_document jsonb;
	v_hash bytea;
BEGIN
	PERFORM oms._own_id(oms_receive_return.return_id, 'return');
	PERFORM oms._check_not_null('return_id', oms_receive_return.return_id);
	PERFORM oms._check_text('restock_location', oms_receive_return.restock_location, 100);
	PERFORM oms._check_idempotency_key(oms_receive_return.idempotency_key);
	IF oms_receive_return.idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(pg_catalog.jsonb_build_array(oms_receive_return.return_id,
																 oms_receive_return.restock_location));
		v_document := oms._idempotency_begin(oms_receive_return.idempotency_key, 'oms_receive_return', v_hash);
		IF v_document IS NOT NULL THEN
			RETURN v_document;
		END IF;
	END IF;

	v_return := oms._lock_return(oms_receive_return.return_id);
	PERFORM oms._check_return_move(v_return, 'received');
	IF oms_receive_return.restock_location IS NOT NULL
	   AND NOT EXISTS (SELECT FROM oms.locations AS l WHERE l.code = oms_receive_return.restock_location) THEN
		RAISE EXCEPTION 'location "%" does not exist', oms_receive_return.restock_location
			USING ERRCODE = 'no_data_found';
	END IF;

	UPDATE oms.order_items AS i
	SET quantity_returning = i.quantity_returning - l.quantity, quantity_returned = i.quantity_returned + l.quantity
	FROM oms.return_lines AS l
	WHERE l.return_id = v_return.id AND i.order_id = l.order_id AND i.line_no = l.line_no;
	IF oms_receive_return.restock_location IS NOT NULL THEN
		FOR v_line IN
			SELECT i.sku, l.quantity FROM oms.return_lines AS l
			JOIN oms.order_items AS i ON i.order_id = l.order_id AND i.line_no = l.line_no
			WHERE l.return_id = v_return.id ORDER BY i.sku
		LOOP
			PERFORM oms._restock(v_line.sku, oms_receive_return.restock_location, v_line.quantity);
		END LOOP;
	END IF;
	SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('line_no', l.line_no, 'quantity', l.quantity)
								ORDER BY l.line_no)
	INTO v_lines FROM oms.return_lines AS l WHERE l.return_id = v_return.id;
	-- A refund's reason has at most 1000 characters, as oms_refund_order's.
	v_refund := oms._refund_lines(v_return.order_id, v_lines,
								  pg_catalog.left(pg_catalog.format('return %s: %s', v_return.id, v_return.reason), 1000));
	UPDATE oms.returns AS r
	SET status = CASE WHEN v_refund IS NULL THEN 'refunded'::oms.return_status ELSE 'received' END,
		restock_location = oms_receive_return.restock_location,
		refund_id = (v_refund ->> 'refund_id')::uuid,
		received_at = pg_catalog.now(),
		closed_at = CASE WHEN v_refund IS NULL THEN pg_catalog.now() END,
		updated_at = pg_catalog.now()
	WHERE r.id = v_return.id
	RETURNING * INTO v_return;

	v_document := oms._order_event(v_return.order_id, 'return.received',
		pg_catalog.jsonb_build_object('return', oms._return_json(v_return),
									  'idempotency_key', oms_receive_return.idempotency_key));
	v_document := v_document || pg_catalog.jsonb_build_object('return', oms._return_json(v_return));
	IF oms_receive_return.idempotency_key IS NOT NULL THEN
		PERFORM oms._idempotency_finish(oms_receive_return.idempotency_key, 'oms_receive_return', v_hash, v_document);
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_receive_return(uuid, text, text) IS
	'Receives a requested return: units counted returned, put back on hand at restock_location (NULL: not restocked), refunded through the refund saga';

CREATE FUNCTION @extschema@.oms_reject_return(
	return_id uuid,
	reason text DEFAULT NULL,
	idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_return oms.returns;
	v_document jsonb;
	v_hash bytea;
BEGIN
	PERFORM oms._own_id(oms_reject_return.return_id, 'return');
	PERFORM oms._check_not_null('return_id', oms_reject_return.return_id);
	IF pg_catalog.length(oms_reject_return.reason) > 1000 THEN
		RAISE EXCEPTION 'reason is too long'
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = pg_catalog.format('reason has at most 1000 characters, got %s.',
											 pg_catalog.length(oms_reject_return.reason));
	END IF;
	PERFORM oms._check_idempotency_key(oms_reject_return.idempotency_key);
	IF oms_reject_return.idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(pg_catalog.jsonb_build_array(oms_reject_return.return_id, oms_reject_return.reason));
		v_document := oms._idempotency_begin(oms_reject_return.idempotency_key, 'oms_reject_return', v_hash);
		IF v_document IS NOT NULL THEN
			RETURN v_document;
		END IF;
	END IF;

	v_return := oms._lock_return(oms_reject_return.return_id);
	PERFORM oms._check_return_move(v_return, 'rejected');
	UPDATE oms.order_items AS i SET quantity_returning = i.quantity_returning - l.quantity
	FROM oms.return_lines AS l
	WHERE l.return_id = v_return.id AND i.order_id = l.order_id AND i.line_no = l.line_no;
	UPDATE oms.returns AS r
	SET status = 'rejected', rejection_reason = oms_reject_return.reason, closed_at = pg_catalog.now(),
		updated_at = pg_catalog.now()
	WHERE r.id = v_return.id
	RETURNING * INTO v_return;

	v_document := oms._order_event(v_return.order_id, 'return.rejected',
		pg_catalog.jsonb_build_object('return', oms._return_json(v_return),
									  'idempotency_key', oms_reject_return.idempotency_key));
	v_document := v_document || pg_catalog.jsonb_build_object('return', oms._return_json(v_return));
	IF oms_reject_return.idempotency_key IS NOT NULL THEN
		PERFORM oms._idempotency_finish(oms_reject_return.idempotency_key, 'oms_reject_return', v_hash, v_document);
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_reject_return(uuid, text, text) IS
	'Rejects a requested return: nothing comes back; returns the order document with the return';

/*
 * Called by the refund saga when a refund succeeded: its units count as
 * refunded in the ledger and the return it pays (if any) is refunded, with
 * its event.  The saga holds the order's row lock.
 */
CREATE FUNCTION oms._refund_succeeded(p_refund_id uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_return oms.returns;
BEGIN
	UPDATE oms.order_items AS i SET quantity_refunded = i.quantity_refunded + l.quantity
	FROM oms.refund_lines AS l
	WHERE l.refund_id = p_refund_id AND i.order_id = l.order_id AND i.line_no = l.line_no;
	UPDATE oms.returns AS r SET status = 'refunded', closed_at = pg_catalog.now(), updated_at = pg_catalog.now()
	WHERE r.refund_id = p_refund_id AND r.status = 'received'
	RETURNING * INTO v_return;
	IF FOUND THEN
		PERFORM oms._order_event(v_return.order_id, 'return.refunded',
								 pg_catalog.jsonb_build_object('return', oms._return_json(v_return)));
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._refund_succeeded(uuid) IS
	'Refund saga: counts a refund''s units refunded and closes the return it pays';

-- Privileges of the objects above: nothing for PUBLIC, each role what it
-- needs (the roles come from roles.sql, checks.sql verifies).
GRANT SELECT ON oms.returns, oms.return_lines TO oms_reader;
REVOKE ALL ON FUNCTION oms._return_json(oms.returns) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._lock_return(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._check_return_move(oms.returns, oms.return_status) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._refund_succeeded(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_request_return(uuid, text, jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_receive_return(uuid, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_reject_return(uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	@extschema@.oms_request_return(uuid, text, jsonb, text),
	@extschema@.oms_receive_return(uuid, text, text),
	@extschema@.oms_reject_return(uuid, text, text)
TO oms_app;

--
-- Shards (src/sql/shard.sql): partitions in ids, a shard's identity, the
-- refusal of calls for partitions it does not serve, a customer's orders.
--

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

-- Calls about an order check that this shard serves its partition;
-- sagas get ids in their order's partition.
CREATE OR REPLACE FUNCTION @extschema@.oms_get_order(order_id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_order oms.orders;
BEGIN
	PERFORM oms._own_id(oms_get_order.order_id, 'order');
	PERFORM oms._check_not_null('order_id', oms_get_order.order_id);
	SELECT * INTO v_order FROM oms.orders AS o WHERE o.id = oms_get_order.order_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'order "%" does not exist', oms_get_order.order_id
			USING ERRCODE = 'no_data_found';
	END IF;
	RETURN oms._order_document(v_order, oms._order_items_json(v_order.id));
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_get_order(uuid) IS 'Returns the order document of an order';


CREATE OR REPLACE FUNCTION @extschema@.oms_cancel_order(
	order_id uuid,
	reason text DEFAULT NULL,
	idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_order oms.orders;
	v_from oms.order_status;
	v_document jsonb;
	v_hash bytea;
BEGIN
	PERFORM oms._own_id(oms_cancel_order.order_id, 'order');
	PERFORM oms._check_not_null('order_id', oms_cancel_order.order_id);
	IF oms_cancel_order.reason IS NOT NULL AND pg_catalog.length(oms_cancel_order.reason) > 1000 THEN
		RAISE EXCEPTION 'reason is too long'
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = pg_catalog.format('reason has at most 1000 characters, got %s.',
											 pg_catalog.length(oms_cancel_order.reason));
	END IF;
	PERFORM oms._check_idempotency_key(oms_cancel_order.idempotency_key);

	IF oms_cancel_order.idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(pg_catalog.jsonb_build_array(oms_cancel_order.order_id, oms_cancel_order.reason));
		v_document := oms._idempotency_begin(oms_cancel_order.idempotency_key, 'oms_cancel_order', v_hash);
		IF v_document IS NOT NULL THEN
			RETURN v_document;
		END IF;
	END IF;

	v_order := oms._lock_order(oms_cancel_order.order_id);
	v_from := v_order.status;
	IF v_from = 'pending' THEN
		v_document := oms._change_status(v_order.id, 'canceled', 'order.canceled',
			pg_catalog.jsonb_build_object('reason', oms_cancel_order.reason,
										  'idempotency_key', oms_cancel_order.idempotency_key));
	ELSIF v_from = 'processing' THEN
		-- The saga stops at its next step and compensates what it did; the
		-- order ends canceled then.  Wake it now if it is waiting.  This
		-- waits for a runner that holds the saga row: one that locked it
		-- without running it (its claim saw the row due, then rechecked a
		-- newer version that is not) would otherwise leave the cancel to
		-- the step's timeout.  No deadlock: a runner never waits for an
		-- order, and we hold this one, so no runner runs this saga now.
		v_document := oms._change_status(v_order.id, 'cancel_requested', 'order.cancel_requested',
			pg_catalog.jsonb_build_object('reason', oms_cancel_order.reason,
										  'idempotency_key', oms_cancel_order.idempotency_key));
		UPDATE oms.sagas AS s SET next_run_at = pg_catalog.now()
		WHERE s.order_id = v_order.id AND s.kind = 'fulfilment' AND s.status = 'running';
		PERFORM oms._notify_worker();
	ELSE
		RAISE EXCEPTION 'order "%" cannot be canceled', v_order.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('The order is %s.', v_from),
				  HINT = CASE
					WHEN v_from = 'canceled' THEN 'The order is already canceled.'
					WHEN v_from = 'cancel_requested' THEN 'A cancel is already in progress.'
					WHEN v_from IN ('confirmed', 'partially_refunded') THEN 'Refund the order instead with oms_refund_order().'
					ELSE 'Only pending and processing orders can be canceled.' END;
	END IF;

	IF oms_cancel_order.idempotency_key IS NOT NULL THEN
		PERFORM oms._idempotency_finish(oms_cancel_order.idempotency_key, 'oms_cancel_order', v_hash, v_document);
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_cancel_order(uuid, text, text) IS
	'Cancels an order: pending orders at once; processing orders are compensated by their saga and end canceled';


CREATE OR REPLACE FUNCTION @extschema@.oms_order_timeline(order_id uuid)
RETURNS TABLE (seq integer, occurred_at timestamptz, event_type text,
			   from_status oms.order_status, to_status oms.order_status, data jsonb,
			   traceparent text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._own_id(oms_order_timeline.order_id, 'order');
	PERFORM oms._check_not_null('order_id', oms_order_timeline.order_id);
	IF NOT EXISTS (SELECT FROM oms.orders AS o WHERE o.id = oms_order_timeline.order_id) THEN
		RAISE EXCEPTION 'order "%" does not exist', oms_order_timeline.order_id
			USING ERRCODE = 'no_data_found';
	END IF;
	RETURN QUERY
		SELECT e.seq, e.occurred_at, e.event_type, e.from_status, e.to_status, e.data, e.traceparent
		FROM oms.order_events AS e
		WHERE e.order_id = oms_order_timeline.order_id
		ORDER BY e.seq;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_order_timeline(uuid) IS
	'The timeline of an order: every change, oldest first, with the W3C traceparent of the request that caused it';


CREATE OR REPLACE FUNCTION @extschema@.oms_pay_order(
	order_id uuid,
	payment_method text,
	idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_order oms.orders;
	v_document jsonb;
	v_hash bytea;
	v_saga uuid;
BEGIN
	PERFORM oms._own_id(oms_pay_order.order_id, 'order');
	PERFORM oms._check_not_null('order_id', oms_pay_order.order_id);
	PERFORM oms._check_payment_method(oms_pay_order.payment_method);
	PERFORM oms._check_idempotency_key(oms_pay_order.idempotency_key);

	IF oms_pay_order.idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(pg_catalog.jsonb_build_array(oms_pay_order.order_id, oms_pay_order.payment_method));
		v_document := oms._idempotency_begin(oms_pay_order.idempotency_key, 'oms_pay_order', v_hash);
		IF v_document IS NOT NULL THEN
			RETURN v_document;
		END IF;
	END IF;

	v_order := oms._lock_order(oms_pay_order.order_id);
	IF v_order.status <> 'pending' THEN
		RAISE EXCEPTION 'order "%" cannot be paid', v_order.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('The order is %s.', v_order.status),
				  HINT = 'Only pending orders can be paid.';
	END IF;

	INSERT INTO oms.payments (id, order_id, method, currency, amount)
	VALUES (oms._child_id(v_order.id), v_order.id, oms_pay_order.payment_method, v_order.currency, v_order.total);
	v_document := oms._change_status(v_order.id, 'processing', 'order.processing',
		pg_catalog.jsonb_build_object('payment_method', oms_pay_order.payment_method,
									  'idempotency_key', oms_pay_order.idempotency_key));
	v_saga := oms._start_saga(v_order.id, 'fulfilment', NULL);
	PERFORM oms._notify_worker();

	IF oms_pay_order.idempotency_key IS NOT NULL THEN
		PERFORM oms._idempotency_finish(oms_pay_order.idempotency_key, 'oms_pay_order', v_hash, v_document);
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_pay_order(uuid, text, text) IS
	'Pays a pending order: it becomes processing and the fulfilment saga (reserve, pay, confirm) starts';


CREATE OR REPLACE FUNCTION @extschema@.oms_refund_order(
	order_id uuid,
	amount bigint DEFAULT NULL,
	reason text DEFAULT NULL,
	idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_order oms.orders;
	v_payment oms.payments;
	v_refundable bigint;
	v_amount bigint;
	v_refund uuid;
	v_document jsonb;
	v_hash bytea;
BEGIN
	PERFORM oms._own_id(oms_refund_order.order_id, 'order');
	PERFORM oms._check_not_null('order_id', oms_refund_order.order_id);
	IF oms_refund_order.amount IS NOT NULL AND oms_refund_order.amount <= 0 THEN
		RAISE EXCEPTION 'refund amount must be greater than zero'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass NULL to refund everything that is left.';
	END IF;
	IF pg_catalog.length(oms_refund_order.reason) > 1000 THEN
		RAISE EXCEPTION 'reason is too long'
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = pg_catalog.format('reason has at most 1000 characters, got %s.',
											 pg_catalog.length(oms_refund_order.reason));
	END IF;
	PERFORM oms._check_idempotency_key(oms_refund_order.idempotency_key);

	IF oms_refund_order.idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(pg_catalog.jsonb_build_array(oms_refund_order.order_id, oms_refund_order.amount,
																 oms_refund_order.reason));
		v_document := oms._idempotency_begin(oms_refund_order.idempotency_key, 'oms_refund_order', v_hash);
		IF v_document IS NOT NULL THEN
			RETURN v_document;
		END IF;
	END IF;

	v_order := oms._lock_order(oms_refund_order.order_id);
	IF v_order.status NOT IN ('confirmed', 'partially_refunded') THEN
		RAISE EXCEPTION 'order "%" cannot be refunded', v_order.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('The order is %s.', v_order.status),
				  HINT = CASE WHEN v_order.status IN ('pending', 'processing')
							  THEN 'Cancel the order instead with oms_cancel_order().'
							  ELSE 'Only confirmed or partially refunded orders can be refunded.' END;
	END IF;

	-- Pending refunds count: two concurrent refunds serialise on the
	-- payment row and the second sees the first.
	SELECT * INTO v_payment FROM oms.payments AS p WHERE p.order_id = v_order.id FOR UPDATE;
	v_refundable := v_payment.captured - v_payment.refunded
		- (SELECT coalesce(pg_catalog.sum(r.amount), 0) FROM oms.refunds AS r
		   WHERE r.payment_id = v_payment.id AND r.status = 'pending');
	IF v_refundable = 0 THEN
		RAISE EXCEPTION 'order "%" has nothing left to refund', v_order.id
			USING ERRCODE = 'OM002',
				  DETAIL = pg_catalog.format('Captured %s, refunded %s, pending refunds %s.', v_payment.captured,
											 v_payment.refunded, v_payment.captured - v_payment.refunded);
	END IF;
	v_amount := coalesce(oms_refund_order.amount, v_refundable);
	IF v_amount > v_refundable OR v_amount <= 0 THEN
		RAISE EXCEPTION 'refund of % exceeds the refundable amount of %', v_amount, v_refundable
			USING ERRCODE = 'OM002',
				  DETAIL = pg_catalog.format('Captured %s, refunded %s, pending refunds %s.', v_payment.captured,
											 v_payment.refunded, v_payment.captured - v_payment.refunded - v_refundable),
				  HINT = 'Refund at most the refundable amount.';
	END IF;

	INSERT INTO oms.refunds (id, order_id, payment_id, amount, reason)
	VALUES (oms._child_id(v_order.id), v_order.id, v_payment.id, v_amount, oms_refund_order.reason)
	RETURNING id INTO v_refund;
	PERFORM oms._timeline(v_order.id, 'refund.requested',
		pg_catalog.jsonb_build_object('refund_id', v_refund, 'amount', v_amount, 'reason', oms_refund_order.reason,
									  'idempotency_key', oms_refund_order.idempotency_key));
	PERFORM oms._start_saga(v_order.id, 'refund', v_refund);
	PERFORM oms._notify_worker();

	v_document := oms._order_document((SELECT o FROM oms.orders AS o WHERE o.id = v_order.id),
									  oms._order_items_json(v_order.id))
				  || pg_catalog.jsonb_build_object('refund', pg_catalog.jsonb_build_object(
						'refund_id', v_refund, 'amount', v_amount, 'status', 'pending'));
	IF oms_refund_order.idempotency_key IS NOT NULL THEN
		PERFORM oms._idempotency_finish(oms_refund_order.idempotency_key, 'oms_refund_order', v_hash, v_document);
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_refund_order(uuid, bigint, text, text) IS
	'Refunds a confirmed order in full (amount NULL) or in part; runs as a refund saga';


CREATE OR REPLACE FUNCTION oms._start_saga(p_order_id uuid, p_kind text, p_refund_id uuid)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id uuid;
BEGIN
	INSERT INTO oms.sagas (id, order_id, kind, refund_id, traceparent)
	VALUES (oms._child_id(p_order_id), p_order_id, p_kind, p_refund_id, NULLIF(pg_catalog.current_setting('oms.traceparent', true), ''))
	RETURNING id INTO v_id;
	INSERT INTO oms.saga_steps (saga_id, step_no, name)
	SELECT v_id, s.n, s.name
	FROM pg_catalog.unnest(oms._saga_step_names(p_kind)) WITH ORDINALITY AS s(name, n);
	PERFORM oms._timeline(p_order_id, 'saga.started',
		pg_catalog.jsonb_build_object('saga_id', v_id, 'kind', p_kind,
									  'steps', pg_catalog.to_jsonb(oms._saga_step_names(p_kind))));
	RETURN v_id;
END;
$$;
COMMENT ON FUNCTION oms._start_saga(uuid, text, uuid) IS 'Creates a saga with its steps, due now';


CREATE FUNCTION @extschema@.oms_customer_orders(customer_id text, max_orders integer DEFAULT 100)
RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._check_identifier('customer_id', oms_customer_orders.customer_id, 255);
	PERFORM oms._check_not_null('max_orders', oms_customer_orders.max_orders);
	IF oms_customer_orders.max_orders NOT BETWEEN 1 AND 1000 THEN
		RAISE EXCEPTION 'max_orders must be between 1 and 1000, not %', oms_customer_orders.max_orders
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN QUERY
	SELECT pg_catalog.jsonb_build_object(
		'order_id', o.id, 'customer_id', o.customer_id, 'status', o.status,
		'payment_status', o.payment_status, 'fulfillment_status', o.fulfillment_status,
		'currency', o.currency, 'total', o.total, 'version', o.version,
		'created_at', pg_catalog.to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
		'updated_at', pg_catalog.to_char(o.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
	FROM oms.orders AS o
	WHERE o.customer_id = oms_customer_orders.customer_id
	ORDER BY o.created_at DESC, o.id DESC
	LIMIT oms_customer_orders.max_orders;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_customer_orders(text, integer) IS
	'A customer''s orders, newest first: a summary per order (statuses, total, version, times), at most max_orders (1 to 1000)';



--
-- Stock homed on other shards (src/sql/remote_stock.sql): a shard keeps
-- units for other shards' orders in its reservations, so they no longer
-- reference oms.orders.
--
ALTER TABLE oms.reservations DROP CONSTRAINT reservations_order_id_fkey;
-- What the foreign key's ON DELETE CASCADE did before reservations could
-- belong to another shard's order: an order deleted takes its
-- reservations along.
CREATE FUNCTION oms._order_deleted()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	DELETE FROM oms.reservations AS r WHERE r.order_id = OLD.id;
	RETURN OLD;
END;
$$;
COMMENT ON FUNCTION oms._order_deleted() IS
	'Trigger: deletes the reservations of a deleted order (what the foreign key''s cascade did before 0.4.0)';
CREATE TRIGGER order_deleted AFTER DELETE ON oms.orders
	FOR EACH ROW EXECUTE FUNCTION oms._order_deleted();
REVOKE ALL ON FUNCTION oms._order_deleted() FROM PUBLIC;

CREATE FUNCTION oms._reserve_lines(p_order_id uuid, p_lines text[], p_line_quantities bigint[],
								   p_now timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
AS $$
DECLARE
	v_unknown text;
	v_location text;
	v_pair record;
	v_swept integer := 0;
	v_short record;
	v_lines text[] := p_lines;
	v_line_quantities bigint[] := p_line_quantities;
	v_skus text[];
	v_locations text[];
	v_quantities bigint[];
	v_expires_at timestamptz := p_now + pg_catalog.current_setting('oms.reservation_ttl')::interval;
BEGIN
	SELECT l.sku INTO v_unknown
	FROM pg_catalog.unnest(v_lines) AS l(sku)
	WHERE NOT EXISTS (SELECT FROM oms.stock AS s WHERE s.sku = l.sku)
	ORDER BY l.sku LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'unknown SKU "%"', v_unknown
			USING ERRCODE = 'OM011',
				  DETAIL = 'The SKU has no stock record.',
				  HINT = 'Set its stock with oms_set_stock().';
	END IF;
	PERFORM FROM oms.stock AS s WHERE s.sku = ANY (v_lines) ORDER BY s.sku, s.location FOR UPDATE OF s;

	v_location := oms._single_location(p_order_id, v_lines, v_line_quantities);
	IF v_location IS NULL THEN
		-- No location serves the basket alone: the units of expired
		-- reservations may be free.  Then split if need be.
		FOR v_pair IN
			SELECT s.sku, s.location
			FROM oms.stock AS s JOIN oms.locations AS l ON l.code = s.location
			WHERE l.active AND s.sku = ANY (v_lines)
			ORDER BY s.sku, s.location
		LOOP
			v_swept := v_swept + oms._sweep_expired(v_pair.sku, v_pair.location, p_now);
		END LOOP;
		IF v_swept > 0 THEN
			v_location := oms._single_location(p_order_id, v_lines, v_line_quantities);
		END IF;
	END IF;
	IF v_location IS NOT NULL THEN
		PERFORM oms._hold_allocation(p_order_id, v_lines,
									 pg_catalog.array_fill(v_location, ARRAY[pg_catalog.cardinality(v_lines)]),
									 v_line_quantities, p_now, v_expires_at);
		RETURN;
	END IF;

	-- Split: the free units of each (SKU, active location), own held ones
	-- included, taken in (priority, code) order until the line is served.
	WITH free AS (
		SELECT i.sku, i.quantity, s.location, l.priority,
			   s.on_hand - s.reserved + coalesce(r.quantity, 0) AS units
		FROM oms.stock AS s
		JOIN ROWS FROM (pg_catalog.unnest(v_lines), pg_catalog.unnest(v_line_quantities)) AS i(sku, quantity)
			ON i.sku = s.sku
		JOIN oms.locations AS l ON l.code = s.location
		LEFT JOIN oms.reservations AS r
			ON r.order_id = p_order_id AND r.sku = s.sku AND r.location = s.location AND r.status = 'held'
		WHERE s.sku = ANY (v_lines) AND l.active
	), taken AS (
		SELECT f.sku, f.location, f.priority,
			   least(f.units, f.quantity - ((pg_catalog.sum(f.units) OVER w)::bigint - f.units)) AS units
		FROM free AS f
		WINDOW w AS (PARTITION BY f.sku ORDER BY f.priority, f.location ROWS UNBOUNDED PRECEDING)
	)
	SELECT pg_catalog.array_agg(t.sku ORDER BY t.sku, t.priority, t.location),
		   pg_catalog.array_agg(t.location ORDER BY t.sku, t.priority, t.location),
		   pg_catalog.array_agg(t.units ORDER BY t.sku, t.priority, t.location)
	INTO v_skus, v_locations, v_quantities
	FROM taken AS t WHERE t.units > 0;

	-- All or nothing: the first SKU (in SKU order) the active locations
	-- cannot serve together.
	SELECT i.sku, i.quantity, coalesce(a.units, 0) AS available, a.places INTO v_short
	FROM ROWS FROM (pg_catalog.unnest(v_lines), pg_catalog.unnest(v_line_quantities)) AS i(sku, quantity)
	LEFT JOIN LATERAL (
		SELECT pg_catalog.sum(s.on_hand - s.reserved + coalesce(r.quantity, 0))::bigint AS units,
			   pg_catalog.count(*) AS locations,
			   pg_catalog.string_agg(pg_catalog.format('%s: %s', s.location,
													   s.on_hand - s.reserved + coalesce(r.quantity, 0)),
									 ', ' ORDER BY l.priority, s.location) AS places
		FROM oms.stock AS s
		JOIN oms.locations AS l ON l.code = s.location
		LEFT JOIN oms.reservations AS r
			ON r.order_id = p_order_id AND r.sku = s.sku AND r.location = s.location AND r.status = 'held'
		WHERE s.sku = i.sku AND l.active
	) AS a ON true
	WHERE coalesce(a.units, 0) < i.quantity
	ORDER BY i.sku LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'SKU "%" is out of stock', v_short.sku
			USING ERRCODE = 'OM011',
				  DETAIL = CASE WHEN v_short.places LIKE '%,%'
							   THEN pg_catalog.format('%s requested, %s available across locations (%s).',
													  v_short.quantity, v_short.available, v_short.places)
							   ELSE pg_catalog.format('%s requested, %s available.', v_short.quantity,
													  v_short.available) END;
	END IF;
	PERFORM oms._hold_allocation(p_order_id, v_skus, v_locations, v_quantities, p_now, v_expires_at);
END;
$$;
COMMENT ON FUNCTION oms._reserve_lines(uuid, text[], bigint[], timestamptz) IS
	'Reserves lines (SKUs sorted, quantities) of an order from one location if one serves them all, else split by (priority, code), all or nothing (OM011 when short)';


REVOKE ALL ON FUNCTION oms._reserve_lines(uuid, text[], bigint[], timestamp with time zone) FROM PUBLIC;

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
REVOKE ALL ON FUNCTION @extschema@.oms_customer_orders(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_customer_orders(text, integer) TO oms_app, oms_reader;
