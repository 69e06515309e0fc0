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
	DELETE FROM oms.reservations AS r
	WHERE r.order_id = p_order_id
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
AS $$
DECLARE
	v_unknown text;
	v_location text;
	v_pair record;
	v_swept integer := 0;
	v_short record;
	v_lines text[];
	v_line_quantities bigint[];
	v_skus text[];
	v_locations text[];
	v_quantities bigint[];
	v_expires_at timestamptz := p_now + pg_catalog.current_setting('oms.reservation_ttl')::interval;
BEGIN
	SELECT i.sku INTO v_unknown
	FROM oms.order_items AS i
	WHERE i.order_id = p_order_id
	  AND NOT EXISTS (SELECT FROM oms.stock AS s WHERE s.sku = i.sku)
	ORDER BY i.sku LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'unknown SKU "%"', v_unknown
			USING ERRCODE = 'OM011',
				  DETAIL = 'The SKU has no stock record.',
				  HINT = 'Set its stock with oms_set_stock().';
	END IF;
	SELECT pg_catalog.array_agg(i.sku ORDER BY i.sku), pg_catalog.array_agg(i.quantity::bigint ORDER BY i.sku)
	INTO v_lines, v_line_quantities
	FROM oms.order_items AS i WHERE i.order_id = p_order_id;
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
COMMENT ON FUNCTION oms._reserve_order(uuid, timestamptz) IS
	'Reserves all lines of an order from one location if one serves the basket, else split by (priority, code), all or nothing (OM011 when short)';

CREATE OR REPLACE FUNCTION oms._consume_at_once(p_order_id uuid, p_now timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
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
	PERFORM oms._lock_order_stock(p_order_id);
	UPDATE oms.reservations AS r SET status = 'released', updated_at = pg_catalog.now()
	WHERE r.order_id = p_order_id AND r.status = 'held';
	GET DIAGNOSTICS v_count = ROW_COUNT;
	RETURN v_count;
END;
$$;
COMMENT ON FUNCTION oms._release_order(uuid) IS 'Gives back the held reservations of an order';

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
	PERFORM oms._lock_order_stock(p_order_id);
	-- The pay step checks the expiry at its batch's clock and then pins the
	-- reservations; one that expired in between may have been swept by a
	-- reserver that needed its units.  Confirming without it would sell
	-- those units twice: fail the step (the saga refunds and releases).
	-- Per SKU, the held units over all locations must cover the line.
	IF p_from = 'held' AND EXISTS (
		SELECT FROM oms.order_items AS i
		WHERE i.order_id = p_order_id
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
	-- oms._move_reserved_stock) when one location serves the basket, then
	-- pay (oms._step_pay).
	IF NOT oms._consume_at_once(p_saga.order_id, p_now) THEN
		RETURN NULL;
	END IF;
	UPDATE oms.payments AS p
	SET authorized = p.amount, captured = p.amount, status = 'captured',
		provider_reference = v_answer ->> 'reference', updated_at = pg_catalog.now()
	WHERE p.id = v_payment.id;

	-- The order half of confirm (oms._change_status) and the bookkeeping
	-- of the three steps (oms._advance_forward), timeline entries in the
	-- order the steps would write them.
	v_trace := NULLIF(pg_catalog.current_setting('oms.traceparent', true), '');
	WITH o AS (
		UPDATE oms.orders AS o
		SET status = 'confirmed', timeline_seq = o.timeline_seq + 5, event_seq = o.event_seq + 1
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
