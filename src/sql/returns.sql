-- returns.sql: returns (RMA) of delivered units.
--
-- A return is requested for delivered units with a reason (the ledger
-- counts them returning), then received (returned; put back on hand at a
-- location the caller names, or not restocked) or rejected (nothing comes
-- back).  Receiving starts the refund saga for the received units: units x
-- the line's unit price, capped at what is left to refund.  oms orders
-- carry no shipping charges or adjustments, so a return refunds goods
-- only; a shop that charges for shipping refunds it with
-- oms_refund_order(amount).  When the refund saga completes, the return is
-- refunded and the ledger counts the units refunded (saga.sql).
--
-- Lock order as in fulfillment.sql: the order row, then stock rows, then
-- the return.
--
-- requires: schema state orders idempotency inventory payment saga fulfillment

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
