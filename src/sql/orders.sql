-- orders.sql: internals shared by the order API: argument checks, the order
-- document, and the timeline + outbox pair written with every change.
--
-- Like every function of oms, each pins search_path: the worker and
-- pg_cron call helpers as a superuser, and an operator someone planted in
-- public for an oms type would otherwise win over pg_catalog's (see
-- docs/architecture.md, "Names and search_path").  None is executable by
-- PUBLIC.  Helpers are PL/pgSQL, which caches plans per session (a SQL
-- function with a SET clause is planned on every call).
--
-- requires: schema

-- The identifier rule of the API (src/input.c, docs/api.md "Identifiers"):
-- 22004 for NULL, 22001 when longer than p_max_chars, 22023 when empty or
-- with a control character or white space at either end.
CREATE FUNCTION oms._check_identifier(p_name text, p_value text, p_max_chars integer)
RETURNS void
LANGUAGE c IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_check_identifier';
COMMENT ON FUNCTION oms._check_identifier(text, text, integer) IS
	'Raises 22004 for NULL, 22001 for too long, 22023 for an identifier that is empty, has a control character or white space at either end';

-- Free-form JSON arguments: 22004 for NULL, 22023 when not an object,
-- 54000 when over p_max_bytes as JSON text or nested deeper than 32 levels.
CREATE FUNCTION oms._check_json_argument(p_name text, p_value jsonb, p_max_bytes integer)
RETURNS void
LANGUAGE c IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_check_json_argument';
COMMENT ON FUNCTION oms._check_json_argument(text, jsonb, integer) IS
	'Raises 22004 for NULL, 22023 for a non-object, 54000 for a JSON object over p_max_bytes as text or nested deeper than 32 levels';

-- 54000 when the events of an order could not be published
-- (src/input.c): checked when the order is created.
CREATE FUNCTION oms._check_publishable(p_document jsonb)
RETURNS void
LANGUAGE c STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_check_publishable';
COMMENT ON FUNCTION oms._check_publishable(jsonb) IS
	'Raises 54000 when an order document leaves too little room in oms.kafka_max_message_bytes for its events';

CREATE FUNCTION oms._check_not_null(p_name text, p_value anyelement)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF p_value IS NULL THEN
		RAISE EXCEPTION '% must not be null', p_name
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._check_not_null(text, anyelement) IS 'Raises 22004 when a required argument is NULL';

CREATE FUNCTION oms._order_items_json(p_order_id uuid)
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

-- The order document returned by the API and carried by events.  Times are
-- UTC with microseconds, whatever the session's time zone, so that the same
-- order reads the same in every event.
CREATE FUNCTION oms._order_document(p_order oms.orders, p_items jsonb)
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

-- Locks and returns an order, or raises P0002 when there is none.
CREATE FUNCTION oms._lock_order(p_order_id uuid)
RETURNS oms.orders
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_order oms.orders;
BEGIN
	SELECT * INTO v_order FROM oms.orders AS o WHERE o.id = p_order_id FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'order "%" does not exist', p_order_id
			USING ERRCODE = 'no_data_found';
	END IF;
	RETURN v_order;
END;
$$;
COMMENT ON FUNCTION oms._lock_order(uuid) IS 'Locks an order row for a change; P0002 when it does not exist';

/*
 * Writes the timeline entry and the outbox event of one change.  The
 * caller has already advanced p_order.timeline_seq and p_order.event_seq in
 * the same transaction, under the order's row lock, which keeps both
 * sequences gap-free per order.
 *
 * Both carry the trace context in oms.traceparent: the caller's, or the
 * saga's while the saga engine works on a saga (see oms._run_sagas).
 */
CREATE FUNCTION oms._record_change(p_order oms.orders, p_event_type text,
								   p_from_status oms.order_status, p_data jsonb, p_document jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_trace text := NULLIF(pg_catalog.current_setting('oms.traceparent', true), '');
BEGIN
	INSERT INTO oms.order_events (order_id, seq, event_type, from_status, to_status, data, traceparent)
	VALUES (p_order.id, p_order.timeline_seq, p_event_type, p_from_status, p_order.status, p_data, v_trace);

	INSERT INTO oms.outbox (aggregatetype, aggregateid, type, payload, seq, traceparent)
	VALUES ('order', p_order.id, p_event_type,
			p_data || pg_catalog.jsonb_build_object('previous_status', p_from_status, 'order', p_document),
			p_order.event_seq, v_trace);
	-- The relay publishes within milliseconds of the commit.
	PERFORM oms._notify_worker();
END;
$$;
COMMENT ON FUNCTION oms._record_change(oms.orders, text, oms.order_status, jsonb, jsonb) IS
	'Appends the timeline entry and the outbox event of an order change';

-- A timeline entry that is not a status change (saga progress, say).
CREATE FUNCTION oms._timeline(p_order_id uuid, p_event_type text, p_data jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_seq integer;
BEGIN
	UPDATE oms.orders AS o SET timeline_seq = o.timeline_seq + 1
	WHERE o.id = p_order_id
	RETURNING o.timeline_seq INTO v_seq;
	INSERT INTO oms.order_events (order_id, seq, event_type, data, traceparent)
	VALUES (p_order_id, v_seq, p_event_type, p_data,
			NULLIF(pg_catalog.current_setting('oms.traceparent', true), ''));
END;
$$;
COMMENT ON FUNCTION oms._timeline(uuid, text, jsonb) IS
	'Appends a timeline entry that does not change the order status';

/*
 * Moves an order to p_to_status and writes the matching timeline entry and
 * outbox event; returns the order document.  The caller holds the order's
 * row lock; the trigger checks the transition.
 *
 * The same rows as oms._order_document and oms._record_change would write,
 * in one statement: this runs for every status change, the confirm step of
 * every saga included, and each statement and each call of a function with
 * a SET clause costs.
 */
CREATE FUNCTION oms._change_status(p_order_id uuid, p_to_status oms.order_status, p_event_type text, p_data jsonb)
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

-- Privileges of the objects above: nothing for PUBLIC, each role what it
-- needs (the roles come from roles.sql, checks.sql verifies).
REVOKE ALL ON FUNCTION oms._change_status(uuid, oms.order_status, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._check_identifier(text, text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._check_json_argument(text, jsonb, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._check_not_null(text, anyelement) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._check_publishable(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._lock_order(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._order_document(oms.orders, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._order_items_json(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._order_outcomes(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._record_change(oms.orders, text, oms.order_status, jsonb, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._timeline(uuid, text, jsonb) FROM PUBLIC;
