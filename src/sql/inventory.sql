-- inventory.sql: stock locations, stock per SKU and location, and
-- reservations per order.
--
-- Availability at a location is on_hand minus oms.stock.reserved, a
-- counter of the units of the (SKU, location)'s reservations in status
-- held, kept exact by triggers on oms.reservations.  Reserving reads one
-- row per (SKU, location) however many reservations the SKU holds.  The
-- counter includes held reservations past their expiry that nothing has
-- swept yet: a reserver that comes up short sweeps the expired
-- reservations of the basket's (SKU, location) pairs (under the stock row
-- locks, reading only the expired ones) and counts again, so expiry still
-- takes effect the moment a reservation expires.
--
-- Lock order, everywhere: stock rows first, in (SKU, location) order, then
-- reservation rows.  Two baskets never deadlock, a SKU never oversells at
-- a location, and a sweep (holding a stock row) never waits for a
-- reservation row: it skips rows another session holds.
-- CHECK (reserved <= on_hand) is the backstop.
--
-- requires: schema

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

/*
 * The location 'default' comes with the extension, and a dump carries it
 * too (its name, priority and active flag may have changed since): the
 * restored row updates the one CREATE EXTENSION made instead of failing
 * the whole COPY on a duplicate key.
 */
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

CREATE TABLE oms.stock (
	sku			text NOT NULL CHECK (pg_catalog.length(sku) BETWEEN 1 AND 100),
	on_hand		bigint NOT NULL CHECK (on_hand >= 0),
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	-- Last columns: each release appends (ALTER TABLE ADD COLUMN).
	reserved	bigint NOT NULL DEFAULT 0,
	location	text NOT NULL DEFAULT 'default' CONSTRAINT stock_location_fkey REFERENCES oms.locations (code),
	CONSTRAINT stock_reserved_check CHECK (reserved >= 0 AND reserved <= on_hand),
	CONSTRAINT stock_pkey PRIMARY KEY (sku, location)
);
COMMENT ON TABLE oms.stock IS
	'Units on hand per SKU and location; reservations are subtracted to get availability';
COMMENT ON COLUMN oms.stock.reserved IS
	'Units of the (SKU, location)''s held reservations, expired ones not yet swept included; kept by triggers on oms.reservations';

CREATE TYPE oms.reservation_status AS ENUM ('held', 'consumed', 'released', 'expired');
COMMENT ON TYPE oms.reservation_status IS
	'held: counts against availability until expires_at; consumed: turned into a stock decrement at confirm; released/expired: given back';

CREATE TABLE oms.reservations (
	-- No foreign key to oms.orders: a shard also holds units of its SKUs
	-- for orders of other shards (src/sql/remote_stock.sql).
	order_id	uuid NOT NULL,
	sku			text NOT NULL,
	quantity	integer NOT NULL CHECK (quantity > 0),
	status		oms.reservation_status NOT NULL DEFAULT 'held',
	expires_at	timestamptz NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	location	text NOT NULL DEFAULT 'default',
	shipped		integer NOT NULL DEFAULT 0,
	CONSTRAINT reservations_shipped_check CHECK (shipped >= 0 AND shipped <= quantity),
	CONSTRAINT reservations_pkey PRIMARY KEY (order_id, sku, location),
	CONSTRAINT reservations_sku_location_fkey FOREIGN KEY (sku, location) REFERENCES oms.stock (sku, location)
);
-- A (SKU, location)'s expired held reservations, without reading its live ones.
CREATE INDEX reservations_held_sku_expiry_idx ON oms.reservations (sku, location, expires_at) WHERE status = 'held';
CREATE INDEX reservations_held_expiry_idx ON oms.reservations (expires_at) WHERE status = 'held';
COMMENT ON TABLE oms.reservations IS 'Units of a SKU held at a location for an order until expires_at';

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
COMMENT ON COLUMN oms.reservations.shipped IS
	'Units of this consumed allocation that are in shipments (oms._ship_from)';

SELECT pg_catalog.pg_extension_config_dump('oms.locations', '');
SELECT pg_catalog.pg_extension_config_dump('oms.stock', '');
SELECT pg_catalog.pg_extension_config_dump('oms.reservations', '');

/*
 * The counter oms.stock.reserved follows every change of oms.reservations,
 * whoever makes it (the inventory functions, an order deleted with its
 * reservations, a test or an operator).  Statement triggers, so that a
 * sweep of thousands of rows updates each stock row once.  oms functions
 * lock the stock rows before changing reservations, so the UPDATE here
 * finds them locked already; for other writers it locks in (SKU,
 * location) order.
 */
CREATE FUNCTION oms._reservations_count()
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

-- The other half of a restore: stock rows loaded after their reservations.
CREATE FUNCTION oms._stock_restore_count()
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

CREATE TRIGGER stock_restore_count BEFORE INSERT ON oms.stock
	FOR EACH ROW EXECUTE FUNCTION oms._stock_restore_count();
CREATE TRIGGER reservations_count_insert AFTER INSERT ON oms.reservations
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION oms._reservations_count();
CREATE TRIGGER reservations_count_update AFTER UPDATE ON oms.reservations
	REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION oms._reservations_count();
CREATE TRIGGER reservations_count_delete AFTER DELETE ON oms.reservations
	REFERENCING OLD TABLE AS old_rows
	FOR EACH STATEMENT EXECUTE FUNCTION oms._reservations_count();
CREATE TRIGGER reservations_count_truncate AFTER TRUNCATE ON oms.reservations
	FOR EACH STATEMENT EXECUTE FUNCTION oms._reservations_count();

/*
 * Marks the held reservations of a SKU at a location expired at p_now as
 * expired and returns how many; the trigger gives their units back to the
 * counter.  The caller holds the (SKU, location)'s stock row.  Rows another
 * session holds are skipped, never waited for: that session is paying for
 * them (its expires_at becomes infinity) and waits for no stock row, so
 * skipping keeps the lock order.  A skipped row still counts, so skipping
 * never oversells.
 */
CREATE FUNCTION oms._sweep_expired(p_sku text, p_location text, p_now timestamptz)
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

-- Units of a SKU held by live reservations at a point in time, over all
-- locations: each counter minus the expired reservations not swept yet,
-- read from the index per location.
CREATE FUNCTION oms._reserved(p_sku text, p_now timestamptz)
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

CREATE VIEW oms.stock_levels AS
	SELECT l.sku, pg_catalog.sum(l.on_hand)::bigint AS on_hand,
		   pg_catalog.sum(l.reserved)::bigint AS reserved,
		   pg_catalog.sum(l.available)::bigint AS available,
		   pg_catalog.max(l.updated_at) AS updated_at
	FROM oms.location_stock_levels AS l
	GROUP BY l.sku;
COMMENT ON VIEW oms.stock_levels IS
	'On hand, reserved (held and unexpired) and available units per SKU, summed over all locations (inactive ones included)';

-- The stock level of one (SKU, location) as the API returns it.
CREATE FUNCTION oms._stock_level_json(p_sku text, p_location text)
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

-- A location argument: a valid code (22004, 22001, 22023) of an existing
-- location (P0002).
CREATE FUNCTION oms._check_location(p_location text)
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

/*
 * Writes an order's allocation as held reservations expiring at
 * p_expires_at: one row per (SKU, location) of the arrays.  A first
 * reservation only inserts.  A step run again may hold rows already: they
 * take the new quantities, and rows the new allocation leaves out are
 * deleted, so that every row of the order is held afterwards (the pay
 * step checks exactly that).  The caller holds the stock rows.
 */
CREATE FUNCTION oms._hold_allocation(p_order_id uuid, p_skus text[], p_locations text[],
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

/*
 * The location that can serve a whole basket (p_skus, p_quantities: the
 * order's lines) alone: the active one with the lowest (priority, code)
 * where every line's SKU has its quantity free, counting the order's own
 * held units as free (a step run again).  NULL when there is none.  The
 * caller holds the stock rows.
 *
 * Functions that take the basket as arrays run with generic plans
 * (plan_cache_mode): a custom plan would know the array's length and
 * always look cheaper than the generic one, so the plan cache would plan
 * the query again on every call, which costs more than running it.  And
 * with enable_seqscan off: the generic plan is made once per session, in a
 * worker possibly while oms.reservations is empty, where a scan looks
 * cheapest; that scan would then grow with the table.  Every query here
 * finds its rows through a primary key.
 */
CREATE FUNCTION oms._single_location(p_order_id uuid, p_skus text[], p_quantities bigint[])
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

/*
 * Reserves every line of an order, all or nothing, by this strategy:
 *   1. one active location that can serve the whole basket, the lowest
 *      (priority, code) of them;
 *   2. otherwise each SKU (in SKU order) from the active locations in
 *      (priority, code) order, as much as each has free, until the line
 *      is served.
 * Inactive locations are never allocated from.  Raises OM011 (a permanent
 * step failure) when a SKU is unknown (no stock row anywhere) or short
 * across the active locations, after which the caller's subtransaction
 * rolls back whatever was reserved.  Every stock row of the basket's
 * SKUs, at every location, is locked first in (SKU, location) order in
 * one statement.
 */
CREATE FUNCTION oms._reserve_order(p_order_id uuid, p_now timestamptz)
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

/*
 * The saga's one-move path (oms._fulfil_at_once): when one active location
 * serves the whole basket from its unreserved units, writes the order's
 * reservations there already consumed (they never count in
 * stock.reserved) and takes the units off its shelf; returns true.
 * Returns false having written nothing otherwise (a split basket, a short
 * SKU whose expired holds may free units): the steps then run one by one.
 * The caller holds the stock rows and has checked that the order has no
 * reservations yet.
 */
CREATE FUNCTION oms._consume_at_once(p_order_id uuid, p_now timestamptz)
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

-- Locks the stock rows of an order's reservations in (SKU, location)
-- order: what every change of its reservations takes first.
CREATE FUNCTION oms._lock_order_stock(p_order_id uuid)
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

CREATE FUNCTION oms._release_order(p_order_id uuid)
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

/*
 * Moves an order's reservations from one status to another and their units
 * in or out of stock at each reservation's location: held -> consumed
 * takes them off the shelf at confirm (p_sign -1), consumed -> released
 * puts the unshipped ones back after a full refund (p_sign +1; units that
 * left in a shipment come back through a return, not here).  The
 * reservations change first, so that at confirm the counter drops before
 * on_hand does and reserved <= on_hand holds at every step; the on_hand >=
 * 0 constraint is the backstop against any path that would oversell.
 */
CREATE FUNCTION oms._move_reserved_stock(p_order_id uuid, p_from oms.reservation_status,
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

/*
 * The background sweep: (SKU, location) by (SKU, location), in that order,
 * the stock row first.  A pair whose stock row another session holds is
 * left for later: that session may be a reserver, which sweeps for itself
 * when it comes up short.  Nothing waits on the sweep and the sweep waits
 * on nothing.
 */
CREATE FUNCTION oms._release_expired_reservations()
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

CREATE FUNCTION @extschema@.oms_release_expired_reservations()
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

-- The caller holds the (SKU, location)'s stock row.
CREATE FUNCTION oms._check_stock_change(p_sku text, p_location text, p_on_hand bigint)
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

CREATE FUNCTION @extschema@.oms_set_location(code text, name text DEFAULT NULL, priority integer DEFAULT 0,
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

-- oms_set_stock and oms_adjust_stock, with or without a location.
CREATE FUNCTION oms._set_stock(p_sku text, p_on_hand bigint, p_location text)
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

CREATE FUNCTION oms._adjust_stock(p_sku text, p_delta bigint, p_location text)
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

CREATE FUNCTION @extschema@.oms_set_stock(sku text, on_hand bigint, location text)
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

CREATE FUNCTION @extschema@.oms_set_stock(sku text, on_hand bigint)
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

CREATE FUNCTION @extschema@.oms_adjust_stock(sku text, delta bigint, location text)
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

CREATE FUNCTION @extschema@.oms_adjust_stock(sku text, delta bigint)
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

/*
 * Units come back onto a location's shelf (a return received with
 * restock): on_hand += p_units, the stock row created when missing.
 */
CREATE FUNCTION oms._restock(p_sku text, p_location text, p_units bigint)
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

/*
 * Gives back p_units of an order's consumed, unshipped units of a SKU to
 * on_hand, least preferred location first (highest priority number, then
 * code descending), so that what stays allocated sits where reserving
 * would have put it first.  A row whose unshipped units all go back and
 * that shipped nothing becomes released with its quantity kept (what was
 * allocated stays readable); otherwise its quantity drops.  Returns
 * [{"location", "quantity"}] in the order taken.  55000 when fewer
 * unshipped units exist.  Stock rows first, in (SKU, location) order.
 */
CREATE FUNCTION oms._release_allocation(p_order_id uuid, p_sku text, p_units integer)
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

/*
 * Shipping takes p_units of an order's consumed allocation of a SKU at a
 * location (negative: a canceled shipment gives them back).  OM008 when
 * the allocation has fewer unshipped units (or, going back, fewer shipped
 * ones).  The stock row is locked first: the global lock order.
 */
CREATE FUNCTION oms._ship_from(p_order_id uuid, p_sku text, p_location text, p_units integer)
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

-- The order's allocation for the order document.
CREATE FUNCTION oms._order_allocation(p_order_id uuid)
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

-- Privileges of the objects above: nothing for PUBLIC, each role what it
-- needs (the roles come from roles.sql, checks.sql verifies).
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
REVOKE ALL ON FUNCTION oms._order_deleted() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._reserve_lines(uuid, text[], bigint[], timestamp with time zone) FROM PUBLIC;
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
