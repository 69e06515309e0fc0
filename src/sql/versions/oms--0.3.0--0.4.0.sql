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
		INSERT INTO oms.orders (customer_id, currency, total, metadata, timeline_seq, event_seq)
		VALUES (p_customer_id, p_currency, (v_priced ->> 'total')::bigint, p_metadata, 1, 1)
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
	UPDATE oms.orders AS o SET payment_status = oms._payment_status_of(NEW.captured, NEW.refunded)
	WHERE o.id = NEW.order_id AND o.payment_status <> oms._payment_status_of(NEW.captured, NEW.refunded);
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
	UPDATE oms.orders AS o SET fulfillment_status = oms._fulfillment_status_of(o.id)
	WHERE o.id IN (SELECT DISTINCT n.order_id FROM new_rows AS n)
	  AND o.fulfillment_status <> oms._fulfillment_status_of(o.id);
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
	END IF;
	RAISE EXCEPTION 'location must be given'
		USING ERRCODE = 'null_value_not_allowed',
			  DETAIL = CASE WHEN v_locations IS NULL THEN 'The order has no unshipped units.'
							ELSE pg_catalog.format('The order''s unshipped units are at %s.',
												   pg_catalog.array_to_string(v_locations, ', ')) END;
END;
$$;
COMMENT ON FUNCTION oms._only_location(uuid) IS
	'The one location holding an order''s unshipped units; 22004 naming them when there are several or none';

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

	INSERT INTO oms.shipments (order_id, location, carrier, tracking_number)
	VALUES (v_order.id, v_location, oms_create_shipment.carrier, oms_create_shipment.tracking_number)
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
	INSERT INTO oms.refunds (order_id, payment_id, amount, reason)
	VALUES (p_order_id, v_payment.id, v_amount, p_reason)
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
	INSERT INTO oms.returns (order_id, reason) VALUES (v_order.id, oms_request_return.reason)
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
	v_refund := oms._refund_lines(v_return.order_id, v_lines, pg_catalog.format('return %s: %s', v_return.id, v_return.reason));
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
