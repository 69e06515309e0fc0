-- inventory.sql: stock per SKU and reservations per order.
--
-- Availability is on_hand minus oms.stock.reserved, a counter of the units
-- of the SKU's reservations in status held, kept exact by triggers on
-- oms.reservations.  Reserving reads one row however many reservations the
-- SKU holds.  The counter includes held reservations past their expiry
-- that nothing has swept yet: a reserver that comes up short sweeps the
-- SKU's expired reservations (under the stock row lock, reading only the
-- expired ones) and counts again, so expiry still takes effect the moment
-- a reservation expires.
--
-- Lock order, everywhere: stock rows first, in SKU order, then reservation
-- rows.  Two baskets never deadlock, a SKU never oversells, and a sweep
-- (holding a stock row) never waits for a reservation row: it skips rows
-- another session holds.  CHECK (reserved <= on_hand) is the backstop.
--
-- requires: schema

CREATE TABLE oms.stock (
	sku			text PRIMARY KEY CHECK (pg_catalog.length(sku) BETWEEN 1 AND 100),
	on_hand		bigint NOT NULL CHECK (on_hand >= 0),
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	-- Last column: 0.3.0 added it (ALTER TABLE appends).
	reserved	bigint NOT NULL DEFAULT 0,
	CONSTRAINT stock_reserved_check CHECK (reserved >= 0 AND reserved <= on_hand)
);
COMMENT ON TABLE oms.stock IS 'Units on hand per SKU; reservations are subtracted to get availability';
COMMENT ON COLUMN oms.stock.reserved IS
	'Units of the SKU''s held reservations, expired ones not yet swept included; kept by triggers on oms.reservations';

CREATE TYPE oms.reservation_status AS ENUM ('held', 'consumed', 'released', 'expired');
COMMENT ON TYPE oms.reservation_status IS
	'held: counts against availability until expires_at; consumed: turned into a stock decrement at confirm; released/expired: given back';

CREATE TABLE oms.reservations (
	order_id	uuid NOT NULL REFERENCES oms.orders (id) ON DELETE CASCADE,
	sku			text NOT NULL REFERENCES oms.stock (sku),
	quantity	integer NOT NULL CHECK (quantity > 0),
	status		oms.reservation_status NOT NULL DEFAULT 'held',
	expires_at	timestamptz NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (order_id, sku)
);
-- A SKU's expired held reservations, without reading its live ones.
CREATE INDEX reservations_held_sku_expiry_idx ON oms.reservations (sku, expires_at) WHERE status = 'held';
CREATE INDEX reservations_held_expiry_idx ON oms.reservations (expires_at) WHERE status = 'held';
COMMENT ON TABLE oms.reservations IS 'Units of a SKU held for an order until expires_at';

SELECT pg_catalog.pg_extension_config_dump('oms.stock', '');
SELECT pg_catalog.pg_extension_config_dump('oms.reservations', '');

/*
 * The counter oms.stock.reserved follows every change of oms.reservations,
 * whoever makes it (the inventory functions, an order deleted with its
 * reservations, a test or an operator).  Statement triggers, so that a
 * sweep of thousands of rows updates each stock row once.  oms functions
 * lock the stock rows before changing reservations, so the UPDATE here
 * finds them locked already; for other writers it locks in SKU order.
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
							WHERE r.sku = s.sku AND r.status = 'held')
			WHERE s.sku IN (SELECT n.sku FROM new_rows AS n);
			RETURN NULL;
		END IF;
		FOR v_change IN
			SELECT n.sku, pg_catalog.sum(n.quantity)::bigint AS delta
			FROM new_rows AS n WHERE n.status = 'held'
			GROUP BY n.sku ORDER BY n.sku
		LOOP
			UPDATE oms.stock AS s SET reserved = s.reserved + v_change.delta WHERE s.sku = v_change.sku;
		END LOOP;
	ELSIF TG_OP = 'UPDATE' THEN
		FOR v_change IN
			SELECT d.sku, pg_catalog.sum(d.units)::bigint AS delta
			FROM (SELECT n.sku, n.quantity::bigint AS units FROM new_rows AS n WHERE n.status = 'held'
				  UNION ALL
				  SELECT o.sku, -o.quantity::bigint FROM old_rows AS o WHERE o.status = 'held') AS d
			GROUP BY d.sku HAVING pg_catalog.sum(d.units) <> 0 ORDER BY d.sku
		LOOP
			UPDATE oms.stock AS s SET reserved = s.reserved + v_change.delta WHERE s.sku = v_change.sku;
		END LOOP;
	ELSIF TG_OP = 'DELETE' THEN
		FOR v_change IN
			SELECT o.sku, pg_catalog.sum(o.quantity)::bigint AS delta
			FROM old_rows AS o WHERE o.status = 'held'
			GROUP BY o.sku ORDER BY o.sku
		LOOP
			UPDATE oms.stock AS s SET reserved = s.reserved - v_change.delta WHERE s.sku = v_change.sku;
		END LOOP;
	ELSE
		UPDATE oms.stock AS s SET reserved = 0 WHERE s.reserved <> 0;
	END IF;
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION oms._reservations_count() IS
	'Trigger: keeps oms.stock.reserved equal to the units of each SKU''s held reservations';

-- The other half of a restore: stock rows loaded after their reservations.
CREATE FUNCTION oms._stock_restore_count()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF coalesce(pg_catalog.current_setting('oms.restoring', true), 'off')::boolean THEN
		NEW.reserved := (SELECT coalesce(pg_catalog.sum(r.quantity), 0) FROM oms.reservations AS r
						 WHERE r.sku = NEW.sku AND r.status = 'held');
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
 * Marks a SKU's held reservations expired at p_now as expired and returns
 * how many; the trigger gives their units back to the counter.  The caller
 * holds the SKU's stock row.  Rows another session holds are skipped,
 * never waited for: that session is paying for them (its expires_at
 * becomes infinity) and waits for no stock row, so skipping keeps the lock
 * order.  A skipped row still counts, so skipping never oversells.
 */
CREATE FUNCTION oms._sweep_expired(p_sku text, p_now timestamptz)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_count integer;
BEGIN
	WITH due AS (
		SELECT r.order_id FROM oms.reservations AS r
		WHERE r.sku = p_sku AND r.status = 'held' AND r.expires_at <= p_now
		FOR UPDATE SKIP LOCKED
	)
	UPDATE oms.reservations AS r SET status = 'expired', updated_at = pg_catalog.now()
	FROM due
	WHERE r.order_id = due.order_id AND r.sku = p_sku AND r.status = 'held';
	GET DIAGNOSTICS v_count = ROW_COUNT;
	RETURN v_count;
END;
$$;
COMMENT ON FUNCTION oms._sweep_expired(text, timestamptz) IS
	'Marks the held reservations of a SKU expired at p_now as expired (caller holds the stock row); returns how many';

-- Units of a SKU held by live reservations at a point in time: the counter
-- minus the expired reservations not swept yet, read from the index.
CREATE FUNCTION oms._reserved(p_sku text, p_now timestamptz)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- PL/pgSQL, not SQL: the plan is cached instead of made on every call.
	RETURN coalesce((SELECT s.reserved - coalesce((SELECT pg_catalog.sum(r.quantity)
												   FROM oms.reservations AS r
												   WHERE r.sku = p_sku AND r.status = 'held'
													 AND r.expires_at <= p_now), 0)
					 FROM oms.stock AS s WHERE s.sku = p_sku), 0)::bigint;
END;
$$;
COMMENT ON FUNCTION oms._reserved(text, timestamptz) IS 'Units of a SKU held by unexpired reservations at p_now';

CREATE VIEW oms.stock_levels AS
	SELECT s.sku, s.on_hand,
		   s.reserved - x.expired AS reserved,
		   s.on_hand - (s.reserved - x.expired) AS available,
		   s.updated_at
	FROM oms.stock AS s
	CROSS JOIN LATERAL (SELECT coalesce(pg_catalog.sum(r.quantity), 0)::bigint AS expired
						FROM oms.reservations AS r
						WHERE r.sku = s.sku AND r.status = 'held' AND r.expires_at <= pg_catalog.now()) AS x;
COMMENT ON VIEW oms.stock_levels IS 'On hand, reserved (held and unexpired) and available units per SKU';

/*
 * Reserves every line of an order, all or nothing.  Raises OM011 (a
 * permanent step failure) when a SKU is unknown or short, after which the
 * caller's subtransaction rolls back whatever was reserved.
 */
CREATE FUNCTION oms._reserve_order(p_order_id uuid, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_line record;
	v_unknown text;
	v_on_hand bigint;
	v_reserved bigint;
	v_own record;
	v_own_exists boolean;
	v_own_held bigint;
	v_ttl interval := pg_catalog.current_setting('oms.reservation_ttl')::interval;
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
	FOR v_line IN
		SELECT i.sku, i.quantity::bigint AS quantity
		FROM oms.order_items AS i WHERE i.order_id = p_order_id
		ORDER BY i.sku
	LOOP
		-- One stock row at a time, in SKU order, before any reservation row.
		SELECT s.on_hand, s.reserved INTO v_on_hand, v_reserved
		FROM oms.stock AS s WHERE s.sku = v_line.sku FOR UPDATE;
		-- A step run again finds its own reservation: it is counted already.
		SELECT r.quantity, r.status INTO v_own
		FROM oms.reservations AS r WHERE r.order_id = p_order_id AND r.sku = v_line.sku FOR UPDATE;
		v_own_exists := FOUND;
		v_own_held := CASE WHEN v_own_exists AND v_own.status = 'held' THEN v_own.quantity ELSE 0 END;
		IF v_on_hand - v_reserved + v_own_held < v_line.quantity THEN
			-- Short: the units of expired reservations may be free.
			IF oms._sweep_expired(v_line.sku, p_now) > 0 THEN
				SELECT s.reserved INTO v_reserved FROM oms.stock AS s WHERE s.sku = v_line.sku;
				SELECT r.quantity, r.status INTO v_own
				FROM oms.reservations AS r WHERE r.order_id = p_order_id AND r.sku = v_line.sku;
				v_own_held := CASE WHEN v_own_exists AND v_own.status = 'held' THEN v_own.quantity ELSE 0 END;
			END IF;
			IF v_on_hand - v_reserved + v_own_held < v_line.quantity THEN
				RAISE EXCEPTION 'SKU "%" is out of stock', v_line.sku
					USING ERRCODE = 'OM011',
						  DETAIL = pg_catalog.format('%s requested, %s available.', v_line.quantity,
													 v_on_hand - v_reserved + v_own_held);
			END IF;
		END IF;
		IF NOT v_own_exists THEN
			INSERT INTO oms.reservations (order_id, sku, quantity, status, expires_at, created_at, updated_at)
			VALUES (p_order_id, v_line.sku, v_line.quantity, 'held', p_now + v_ttl, p_now, p_now);
		ELSE
			UPDATE oms.reservations AS r
			SET quantity = v_line.quantity, status = 'held', expires_at = p_now + v_ttl, updated_at = p_now
			WHERE r.order_id = p_order_id AND r.sku = v_line.sku;
		END IF;
	END LOOP;
END;
$$;
COMMENT ON FUNCTION oms._reserve_order(uuid, timestamptz) IS
	'Reserves all lines of an order in SKU order, all or nothing (OM011 when short)';

-- Locks the stock rows of an order's reservations in SKU order: what every
-- change of its reservations takes first.
CREATE FUNCTION oms._lock_order_stock(p_order_id uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM FROM oms.stock AS s
	WHERE s.sku IN (SELECT r.sku FROM oms.reservations AS r WHERE r.order_id = p_order_id)
	ORDER BY s.sku
	FOR UPDATE OF s;
END;
$$;
COMMENT ON FUNCTION oms._lock_order_stock(uuid) IS
	'Locks the stock rows of the SKUs an order has reservations of, in SKU order';

CREATE FUNCTION oms._release_order(p_order_id uuid)
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

/*
 * Moves an order's reservations from one status to another and their units
 * in or out of stock: held -> consumed takes them off the shelf at confirm
 * (p_sign -1), consumed -> released puts them back after a full refund
 * (p_sign +1).  The reservations change first, so that at confirm the
 * counter drops before on_hand does and reserved <= on_hand holds at every
 * step; the on_hand >= 0 constraint is the backstop against any path that
 * would oversell.
 */
CREATE FUNCTION oms._move_reserved_stock(p_order_id uuid, p_from oms.reservation_status,
										 p_to oms.reservation_status, p_sign integer)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_skus text[];
	v_units bigint[];
BEGIN
	PERFORM oms._lock_order_stock(p_order_id);
	-- The pay step checks the expiry at its batch's clock and then pins the
	-- reservations; one that expired in between may have been swept by a
	-- reserver that needed its units.  Confirming without it would sell
	-- those units twice: fail the step (the saga refunds and releases).
	IF p_from = 'held' AND EXISTS (
		SELECT FROM oms.order_items AS i
		WHERE i.order_id = p_order_id
		  AND NOT EXISTS (SELECT FROM oms.reservations AS r
						  WHERE r.order_id = i.order_id AND r.sku = i.sku AND r.status = 'held')) THEN
		RAISE EXCEPTION 'the reservations of the order expired before payment'
			USING ERRCODE = 'OM011',
				  DETAIL = 'A reservation was no longer held at confirmation.';
	END IF;
	WITH moved AS (
		UPDATE oms.reservations AS r SET status = p_to, updated_at = pg_catalog.now()
		WHERE r.order_id = p_order_id AND r.status = p_from
		RETURNING r.sku, r.quantity
	)
	SELECT pg_catalog.array_agg(m.sku ORDER BY m.sku), pg_catalog.array_agg(m.units ORDER BY m.sku)
	INTO v_skus, v_units
	FROM (SELECT moved.sku, pg_catalog.sum(moved.quantity)::bigint AS units FROM moved GROUP BY moved.sku) AS m;
	UPDATE oms.stock AS s SET on_hand = s.on_hand + p_sign * u.units, updated_at = pg_catalog.now()
	FROM ROWS FROM (pg_catalog.unnest(v_skus), pg_catalog.unnest(v_units)) AS u(sku, units)
	WHERE s.sku = u.sku;
END;
$$;
COMMENT ON FUNCTION oms._move_reserved_stock(uuid, oms.reservation_status, oms.reservation_status, integer) IS
	'Confirm (held -> consumed, units leave stock) or restock (consumed -> released, units return)';

/*
 * The background sweep: SKU by SKU, in SKU order, the stock row first.  A
 * SKU whose stock row another session holds is left for later: that
 * session may be a reserver, which sweeps for itself when it comes up
 * short.  Nothing waits on the sweep and the sweep waits on nothing.
 */
CREATE FUNCTION oms._release_expired_reservations()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_sku text;
	v_count integer := 0;
BEGIN
	FOR v_sku IN
		SELECT DISTINCT r.sku FROM oms.reservations AS r
		WHERE r.status = 'held' AND r.expires_at <= pg_catalog.now()
		ORDER BY r.sku
	LOOP
		PERFORM FROM oms.stock AS s WHERE s.sku = v_sku FOR UPDATE SKIP LOCKED;
		IF FOUND THEN
			v_count := v_count + oms._sweep_expired(v_sku, pg_catalog.now());
		END IF;
	END LOOP;
	RETURN v_count;
END;
$$;
COMMENT ON FUNCTION oms._release_expired_reservations() IS
	'Marks held reservations past their expiry as expired (skipping SKUs another session holds) and returns how many';

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

-- The caller holds the SKU's stock row.
CREATE FUNCTION oms._check_stock_change(p_sku text, p_on_hand bigint)
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
	SELECT s.reserved INTO v_reserved FROM oms.stock AS s WHERE s.sku = p_sku;
	IF p_on_hand < v_reserved AND oms._sweep_expired(p_sku, pg_catalog.now()) > 0 THEN
		SELECT s.reserved INTO v_reserved FROM oms.stock AS s WHERE s.sku = p_sku;
	END IF;
	IF p_on_hand < v_reserved THEN
		RAISE EXCEPTION 'stock of SKU "%" cannot drop below its reserved units', p_sku
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('Reserved: %s; the change would leave %s on hand.',
											 v_reserved, p_on_hand);
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._check_stock_change(text, bigint) IS
	'Refuses a stock level below zero (22023) or below the reserved units (55000), sweeping expired reservations first';

CREATE FUNCTION @extschema@.oms_set_stock(sku text, on_hand bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_row oms.stock;
BEGIN
	PERFORM oms._check_identifier('sku', oms_set_stock.sku, 100);
	PERFORM oms._check_not_null('on_hand', oms_set_stock.on_hand);
	-- Lock the SKU (or the slot it will take) before checking reservations.
	INSERT INTO oms.stock AS s (sku, on_hand) VALUES (oms_set_stock.sku, 0)
	ON CONFLICT ON CONSTRAINT stock_pkey DO NOTHING;
	PERFORM 1 FROM oms.stock AS s WHERE s.sku = oms_set_stock.sku FOR UPDATE;
	PERFORM oms._check_stock_change(oms_set_stock.sku, oms_set_stock.on_hand);
	UPDATE oms.stock AS s SET on_hand = oms_set_stock.on_hand, updated_at = pg_catalog.now()
	WHERE s.sku = oms_set_stock.sku
	RETURNING * INTO v_row;
	RETURN (SELECT pg_catalog.to_jsonb(l) FROM oms.stock_levels AS l WHERE l.sku = v_row.sku);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_set_stock(text, bigint) IS
	'Sets the units on hand of a SKU (creating it) and returns its stock level';

CREATE FUNCTION @extschema@.oms_adjust_stock(sku text, delta bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_row oms.stock;
BEGIN
	PERFORM oms._check_identifier('sku', oms_adjust_stock.sku, 100);
	PERFORM oms._check_not_null('delta', oms_adjust_stock.delta);
	SELECT * INTO v_row FROM oms.stock AS s WHERE s.sku = oms_adjust_stock.sku FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'SKU "%" does not exist', oms_adjust_stock.sku
			USING ERRCODE = 'no_data_found',
				  HINT = 'Create it with oms_set_stock().';
	END IF;
	IF oms_adjust_stock.delta > 0 AND v_row.on_hand > 9223372036854775807 - oms_adjust_stock.delta THEN
		RAISE EXCEPTION 'stock of SKU "%" is out of range', oms_adjust_stock.sku
			USING ERRCODE = 'numeric_value_out_of_range';
	END IF;
	PERFORM oms._check_stock_change(oms_adjust_stock.sku, v_row.on_hand + oms_adjust_stock.delta);
	UPDATE oms.stock AS s SET on_hand = s.on_hand + oms_adjust_stock.delta, updated_at = pg_catalog.now()
	WHERE s.sku = oms_adjust_stock.sku;
	RETURN (SELECT pg_catalog.to_jsonb(l) FROM oms.stock_levels AS l WHERE l.sku = oms_adjust_stock.sku);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_adjust_stock(text, bigint) IS
	'Adds delta (negative to remove) to the units on hand of a SKU and returns its stock level';

-- Privileges of the objects above: nothing for PUBLIC, each role what it
-- needs (the roles come from roles.sql, checks.sql verifies).
GRANT SELECT ON oms.stock, oms.reservations, oms.stock_levels TO oms_reader;
REVOKE ALL ON FUNCTION @extschema@.oms_adjust_stock(text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_release_expired_reservations() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_set_stock(text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._check_stock_change(text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._lock_order_stock(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._move_reserved_stock(uuid, oms.reservation_status, oms.reservation_status, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._release_expired_reservations() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._release_order(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._reservations_count() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._reserve_order(uuid, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._reserved(text, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._stock_restore_count() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._sweep_expired(text, timestamp with time zone) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._reserved(text, timestamptz) TO oms_reader;
GRANT EXECUTE ON FUNCTION
	@extschema@.oms_set_stock(text, bigint),
	@extschema@.oms_adjust_stock(text, bigint),
	@extschema@.oms_release_expired_reservations()
TO oms_admin;
