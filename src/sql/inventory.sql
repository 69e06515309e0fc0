-- inventory.sql: stock per SKU and reservations per order.
--
-- Availability is computed, never stored: on_hand minus the reservations
-- that are held and not yet expired.  Expiry is a predicate, so an expired
-- reservation stops counting the moment it expires, before anything sweeps
-- it.  Reservers lock the stock rows of their basket in SKU order, so two
-- baskets never deadlock and a SKU never oversells.

CREATE TABLE oms.stock (
	sku			text PRIMARY KEY CHECK (pg_catalog.length(sku) BETWEEN 1 AND 100),
	on_hand		bigint NOT NULL CHECK (on_hand >= 0),
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE oms.stock IS 'Units on hand per SKU; reservations are subtracted to get availability';

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
CREATE INDEX reservations_held_sku_idx ON oms.reservations (sku) WHERE status = 'held';
CREATE INDEX reservations_held_expiry_idx ON oms.reservations (expires_at) WHERE status = 'held';
COMMENT ON TABLE oms.reservations IS 'Units of a SKU held for an order until expires_at';

SELECT pg_catalog.pg_extension_config_dump('oms.stock', '');
SELECT pg_catalog.pg_extension_config_dump('oms.reservations', '');

-- Units of a SKU held by live reservations at a point in time.
CREATE FUNCTION oms._reserved(p_sku text, p_now timestamptz)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- PL/pgSQL, not SQL: the plan is cached instead of made on every call.
	RETURN (SELECT coalesce(pg_catalog.sum(r.quantity), 0)::bigint
			FROM oms.reservations AS r
			WHERE r.sku = p_sku AND r.status = 'held' AND r.expires_at > p_now);
END;
$$;
COMMENT ON FUNCTION oms._reserved(text, timestamptz) IS 'Units of a SKU held by unexpired reservations at p_now';

CREATE VIEW oms.stock_levels AS
	SELECT s.sku, s.on_hand,
		   oms._reserved(s.sku, pg_catalog.now()) AS reserved,
		   s.on_hand - oms._reserved(s.sku, pg_catalog.now()) AS available,
		   s.updated_at
	FROM oms.stock AS s;
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
	-- Rows are locked as the sorted scan returns them: always in SKU order.
	FOR v_line IN
		SELECT s.sku, s.on_hand, i.quantity
		FROM oms.stock AS s
		JOIN oms.order_items AS i ON i.sku = s.sku AND i.order_id = p_order_id
		ORDER BY s.sku
		FOR UPDATE OF s
	LOOP
		IF v_line.on_hand - oms._reserved(v_line.sku, p_now) < v_line.quantity THEN
			RAISE EXCEPTION 'SKU "%" is out of stock', v_line.sku
				USING ERRCODE = 'OM011',
					  DETAIL = pg_catalog.format('%s requested, %s available.', v_line.quantity,
												 v_line.on_hand - oms._reserved(v_line.sku, p_now));
		END IF;
		INSERT INTO oms.reservations AS r (order_id, sku, quantity, status, expires_at, created_at, updated_at)
		VALUES (p_order_id, v_line.sku, v_line.quantity, 'held', p_now + v_ttl, p_now, p_now)
		ON CONFLICT (order_id, sku) DO UPDATE
			SET quantity = excluded.quantity, status = 'held', expires_at = excluded.expires_at,
				updated_at = excluded.updated_at;
	END LOOP;
END;
$$;
COMMENT ON FUNCTION oms._reserve_order(uuid, timestamptz) IS
	'Reserves all lines of an order in SKU order, all or nothing (OM011 when short)';

CREATE FUNCTION oms._release_order(p_order_id uuid)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_count integer;
BEGIN
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
 * (p_sign +1).  Stock rows are updated in SKU order, like reservations lock
 * them; the on_hand >= 0 constraint is the backstop against any path that
 * would oversell.
 */
CREATE FUNCTION oms._move_reserved_stock(p_order_id uuid, p_from oms.reservation_status,
										 p_to oms.reservation_status, p_sign integer)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_line record;
BEGIN
	FOR v_line IN
		SELECT r.sku, r.quantity FROM oms.reservations AS r
		WHERE r.order_id = p_order_id AND r.status = p_from
		ORDER BY r.sku
	LOOP
		UPDATE oms.stock AS s SET on_hand = s.on_hand + p_sign * v_line.quantity, updated_at = pg_catalog.now()
		WHERE s.sku = v_line.sku;
	END LOOP;
	UPDATE oms.reservations AS r SET status = p_to, updated_at = pg_catalog.now()
	WHERE r.order_id = p_order_id AND r.status = p_from;
END;
$$;
COMMENT ON FUNCTION oms._move_reserved_stock(uuid, oms.reservation_status, oms.reservation_status, integer) IS
	'Confirm (held -> consumed, units leave stock) or restock (consumed -> released, units return)';

CREATE FUNCTION oms._release_expired_reservations()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_count integer;
BEGIN
	UPDATE oms.reservations AS r SET status = 'expired', updated_at = pg_catalog.now()
	WHERE r.status = 'held' AND r.expires_at <= pg_catalog.now();
	GET DIAGNOSTICS v_count = ROW_COUNT;
	RETURN v_count;
END;
$$;
COMMENT ON FUNCTION oms._release_expired_reservations() IS
	'Marks held reservations past their expiry as expired and returns how many';

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
	'Marks held reservations past their expiry as expired and returns how many; the worker runs it every loop';

CREATE FUNCTION oms._check_stock_change(p_sku text, p_on_hand bigint)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_reserved bigint := oms._reserved(p_sku, pg_catalog.now());
BEGIN
	IF p_on_hand < 0 THEN
		RAISE EXCEPTION 'stock of SKU "%" cannot be negative', p_sku
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = pg_catalog.format('The change would leave %s units on hand.', p_on_hand);
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
	'Refuses a stock level below zero (22023) or below the reserved units (55000)';

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
	UPDATE oms.stock AS s SET on_hand = oms_set_stock.on_hand, updated_at = now()
	WHERE s.sku = oms_set_stock.sku
	RETURNING * INTO v_row;
	RETURN (SELECT to_jsonb(l) FROM oms.stock_levels AS l WHERE l.sku = v_row.sku);
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
	UPDATE oms.stock AS s SET on_hand = s.on_hand + oms_adjust_stock.delta, updated_at = now()
	WHERE s.sku = oms_adjust_stock.sku;
	RETURN (SELECT to_jsonb(l) FROM oms.stock_levels AS l WHERE l.sku = oms_adjust_stock.sku);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_adjust_stock(text, bigint) IS
	'Adds delta (negative to remove) to the units on hand of a SKU and returns its stock level';
