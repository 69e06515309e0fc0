-- api.sql: the public order API.  Each function is one transaction's worth
-- of work: validate every argument, claim the idempotency key, change the
-- order, write its timeline entry and outbox event, store the response.
-- SECURITY DEFINER so that applications need EXECUTE only, never direct
-- table privileges; search_path is pinned and every name is qualified.
--
-- requires: schema

/*
 * The body of both oms_create_order functions (items as jsonb, and items as
 * text, where duplicate fields can still be seen).
 *
 * The hot path of the API, so it is written for few statements and few
 * calls: a call of a helper with a SET clause costs a setting saved and
 * restored.  The checks and the idempotency claim call their helpers only
 * to raise their errors (or to replay a stored response); the order, its
 * items, its timeline entry and its outbox event are one statement that
 * writes what oms._order_document and oms._record_change would.
 */
-- oms.unknown_skus = refuse: OM005 for the first SKU (in item order) that
-- has no stock record in any location.
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

CREATE FUNCTION oms._create_order(p_customer_id text, p_items jsonb, p_currency text,
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

CREATE FUNCTION @extschema@.oms_create_order(
	customer_id text,
	items jsonb,
	currency text DEFAULT 'USD',
	idempotency_key text DEFAULT NULL,
	metadata jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN oms._create_order(oms_create_order.customer_id, oms_create_order.items, oms_create_order.currency,
							 oms_create_order.idempotency_key, oms_create_order.metadata);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_create_order(text, jsonb, text, text, jsonb) IS
	'Creates a pending order from items [{sku, quantity, unit_price}] and returns the order document';

-- Items as text: what a literal or an untyped driver parameter becomes.
-- jsonb keeps only the last of duplicate fields; here they are refused
-- before that happens.
CREATE FUNCTION @extschema@.oms_create_order(
	customer_id text,
	items text,
	currency text DEFAULT 'USD',
	idempotency_key text DEFAULT NULL,
	metadata jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN oms._create_order(oms_create_order.customer_id, oms._items_from_text(oms_create_order.items),
							 oms_create_order.currency, oms_create_order.idempotency_key,
							 oms_create_order.metadata);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_create_order(text, text, text, text, jsonb) IS
	'Creates a pending order from items as JSON text (duplicate fields in an item are refused) and returns the order document';

CREATE FUNCTION @extschema@.oms_get_order(order_id uuid)
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

-- A customer's orders, newest first: the one read that spans shards by
-- customer (the router merges every shard's answer).
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

CREATE FUNCTION @extschema@.oms_cancel_order(
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

CREATE FUNCTION @extschema@.oms_order_timeline(order_id uuid)
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

-- Privileges of the objects above: nothing for PUBLIC, each role what it
-- needs (the roles come from roles.sql, checks.sql verifies).
REVOKE ALL ON FUNCTION @extschema@.oms_cancel_order(uuid, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_create_order(text, jsonb, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_create_order(text, text, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_customer_orders(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_get_order(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_order_timeline(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._create_order(text, jsonb, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._refuse_unknown_skus(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	@extschema@.oms_create_order(text, jsonb, text, text, jsonb),
	@extschema@.oms_create_order(text, text, text, text, jsonb),
	@extschema@.oms_get_order(uuid),
	@extschema@.oms_cancel_order(uuid, text, text),
	@extschema@.oms_order_timeline(uuid),
	@extschema@.oms_customer_orders(text, integer)
TO oms_app;
GRANT EXECUTE ON FUNCTION
	@extschema@.oms_get_order(uuid),
	@extschema@.oms_order_timeline(uuid),
	@extschema@.oms_customer_orders(text, integer)
TO oms_reader;
