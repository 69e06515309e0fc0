-- fulfillment.sql: what happens to an order after it is confirmed: the
-- quantity ledger of its lines and the two status dimensions derived from
-- it and from the payment, shipments, and canceling what has not shipped.
--
-- The ledger (oms.order_items.quantity_*) is the truth; the database keeps
-- it whole with CHECK constraints (schema.sql):
--   canceled + fulfilling + shipped <= quantity   (nothing ships twice)
--   delivered <= shipped
--   returning + returned <= delivered             (only delivered units come back)
--   refunded <= canceled + returned               (only units given back are refunded by line)
-- Every call below checks the same first, under the order's row lock, to
-- say which line is short (OM003); the constraints are the backstop.
--
-- Stock leaves on_hand at confirmation, as in 0.x: on_hand counts the
-- units a location can still sell.  A confirmed order's units are its
-- consumed reservations, one per SKU and location (inventory.sql); a
-- shipment takes them from one location (reservations.shipped), a cancel
-- gives the unshipped ones back to their location, a return puts units
-- back where the caller says.
--
-- Lock order: the order row first (every call here takes it before any
-- other row of the order), then stock rows in (sku, location) order, then
-- reservations.  The saga engine takes the same order.
--
-- requires: schema state orders idempotency inventory payment saga

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
