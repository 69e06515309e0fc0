-- oms upgrade script 0.1.0 -> 0.2.0: security and reliability fixes.
-- Frozen once 0.2.0 is released; later changes go into the next script.
-- test/suites/upgrade.sh proves that a database updated with this script
-- has the same catalog as a fresh install of 0.2.0.

\echo Use "ALTER EXTENSION oms UPDATE TO '0.2.0'" to load this file. \quit

-- ALTER EXTENSION runs this script with the extension's schema (usually
-- public) first in search_path, where a database owner may have planted
-- operators for oms types: resolve nothing through it.
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

--
-- Tables.
--

-- A compensation attempt sent to a remote provider now says that it waits
-- for its reply: only then is the reply run under the same attempt, once
-- (0.1.0 re-read a "failed" reply forever).  Appended, as in the fresh
-- script, where it is the last column too.
ALTER TABLE oms.saga_steps ADD COLUMN compensation_waiting boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN oms.saga_steps.compensation_waiting IS
	'The compensation attempt compensation_attempts was sent to a remote provider and waits for its reply';
-- Compensations in flight: the attempt whose command was sent waits for
-- its reply (or has one to be run), as 0.1.0 would have treated it once.
UPDATE oms.saga_steps AS t SET compensation_waiting = true
FROM oms.sagas AS s
WHERE s.id = t.saga_id AND s.status = 'compensating' AND t.step_no = s.step_no
  AND t.compensation_attempts > 0
  AND EXISTS (SELECT FROM oms.payment_commands AS c
			  WHERE c.correlation_id = pg_catalog.format('%s:%s:c%s', s.id, t.step_no, t.compensation_attempts));

-- The inbox keeps replies that had an effect, and rejected ones up to a limit.
COMMENT ON TABLE oms.inbox IS
	'Payment replies by message id: each that had an effect (applied, late), and rejected ones up to oms.max_rejected_replies; a redelivered message finds its row and has no second effect';

--
-- Functions.  Every function of 0.2.0, as in the fresh script: all of them
-- pin search_path now, oms's own code calls schema oms only, and the
-- changed bodies (input rules, idempotency keys, compensation attempts,
-- replies) come with them.  Unchanged ones are replaced by themselves.
--

-- Replaced by oms._check_identifier.
DROP FUNCTION oms._check_text_argument(text, text, integer);

-- Tracing and logging helpers in C (src/log.c), needed by the tables and
-- the saga engine below.
CREATE OR REPLACE FUNCTION oms._traceparent_problem(p_value text)
RETURNS text
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_traceparent_problem_sql'
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION oms._traceparent_problem(text) IS
	'Why a W3C traceparent is invalid (the check of SET oms.traceparent), or NULL when it is valid';

CREATE OR REPLACE FUNCTION oms._log(p_level text, p_event text, VARIADIC p_fields text[])
RETURNS void
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_log_sql'
LANGUAGE c VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION oms._log(text, text, text[]) IS
	'Writes one structured line "oms: event=... database=... name=value ..." to the server log at level log or warning; fields alternate names and values, null values are left out';

CREATE OR REPLACE FUNCTION oms._price_items(items jsonb)
RETURNS jsonb
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_price_items';
COMMENT ON FUNCTION oms._price_items(jsonb) IS
	'Validates an items array and returns it priced: line totals and the order total, overflow-checked';

CREATE OR REPLACE FUNCTION oms._items_from_text(p_items text)
RETURNS jsonb
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_items_from_text';
COMMENT ON FUNCTION oms._items_from_text(text) IS
	'An items document given as JSON text, as jsonb, after refusing items that name a field twice (22023)';

-- Validates a currency code and returns its exponent.
CREATE OR REPLACE FUNCTION oms._currency_exponent(p_currency text)
RETURNS smallint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_exponent smallint;
BEGIN
	IF p_currency IS NULL THEN
		RAISE EXCEPTION 'currency must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF p_currency !~ '^[A-Z]{3}$' THEN
		RAISE EXCEPTION 'invalid currency code "%"', p_currency
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A currency is an ISO 4217 code of three upper-case letters, such as USD.';
	END IF;
	SELECT c.exponent INTO v_exponent FROM oms.currencies AS c WHERE c.code = p_currency;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown currency "%"', p_currency
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The accepted currencies are listed in oms.currencies.';
	END IF;
	RETURN v_exponent;
END;
$$;
COMMENT ON FUNCTION oms._currency_exponent(text) IS
	'Checks an ISO 4217 code against oms.currencies and returns its minor-unit exponent';

CREATE OR REPLACE FUNCTION @extschema@.oms_format_money(amount bigint, currency text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_exponent smallint := oms._currency_exponent(currency);
BEGIN
	IF amount IS NULL THEN
		RETURN NULL;
	END IF;
	RETURN round(amount::numeric / (10::numeric ^ v_exponent), v_exponent)::text || ' ' || currency;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_format_money(bigint, text) IS
	'Formats an amount in minor units for people, e.g. 1999 USD as 19.99 USD and 1999 JPY as 1999 JPY';

CREATE OR REPLACE FUNCTION @extschema@.oms_transition_allowed(from_status oms.order_status, to_status oms.order_status)
RETURNS boolean
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_transition_allowed';
COMMENT ON FUNCTION @extschema@.oms_transition_allowed(oms.order_status, oms.order_status) IS
	'True when the state machine allows an order to move from from_status to to_status';

-- The same C function for oms's own code, which calls nothing in the
-- extension's schema: its owner (often the database owner) can rename that
-- schema and put another function in its place.
CREATE OR REPLACE FUNCTION oms._transition_allowed(p_from oms.order_status, p_to oms.order_status)
RETURNS boolean
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_transition_allowed';
COMMENT ON FUNCTION oms._transition_allowed(oms.order_status, oms.order_status) IS
	'oms_transition_allowed for oms''s own code';

CREATE OR REPLACE FUNCTION @extschema@.oms_state_machine_dot()
RETURNS text
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_state_machine_dot';
COMMENT ON FUNCTION @extschema@.oms_state_machine_dot() IS
	'The order state machine as a Graphviz digraph, generated from the C transition table';

CREATE OR REPLACE FUNCTION oms._order_states(OUT status text, OUT initial boolean, OUT terminal boolean, OUT meaning text)
RETURNS SETOF record
LANGUAGE c STRICT IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_order_states';
COMMENT ON FUNCTION oms._order_states() IS 'The statuses of the C transition table';

CREATE OR REPLACE FUNCTION oms._order_transitions(OUT from_status text, OUT to_status text, OUT event text)
RETURNS SETOF record
LANGUAGE c STRICT IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_order_transitions';
COMMENT ON FUNCTION oms._order_transitions() IS 'The transitions of the C transition table';

CREATE OR REPLACE FUNCTION oms._order_status_guard()
RETURNS trigger
LANGUAGE c
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_order_status_guard';
COMMENT ON FUNCTION oms._order_status_guard() IS
	'Trigger: enforces the transition table on every write to oms.orders.status and maintains version';

-- The timeline is append-only: history is never rewritten.
CREATE OR REPLACE FUNCTION oms._refuse_timeline_update()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RAISE EXCEPTION 'the order timeline is append-only'
		USING ERRCODE = 'object_not_in_prerequisite_state',
			  DETAIL = pg_catalog.format('Entry %s of order %s cannot be changed.', OLD.seq, OLD.order_id);
END;
$$;
COMMENT ON FUNCTION oms._refuse_timeline_update() IS 'Trigger: refuses updates of timeline entries';

CREATE OR REPLACE FUNCTION oms._check_idempotency_key(p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF p_key IS NULL THEN
		RETURN;
	END IF;
	IF pg_catalog.length(p_key) = 0 THEN
		RAISE EXCEPTION 'idempotency key must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass NULL for a call without an idempotency key.';
	END IF;
	PERFORM oms._check_identifier('idempotency_key', p_key, 255);
END;
$$;
COMMENT ON FUNCTION oms._check_idempotency_key(text) IS 'Validates an idempotency key';

CREATE OR REPLACE FUNCTION oms._request_hash(p_request jsonb)
RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN pg_catalog.sha256(pg_catalog.convert_to(p_request::text, 'UTF8'));
END;
$$;
COMMENT ON FUNCTION oms._request_hash(jsonb) IS
	'Hash identifying a request: its arguments as canonical jsonb text';

-- Claims a key for this call and returns NULL, or returns the stored
-- response when the key was already used for the same request.  Raises
-- OM001 when the key was used for another request.
CREATE OR REPLACE FUNCTION oms._idempotency_begin(p_key text, p_function text, p_hash bytea)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_row oms.idempotency_keys;
BEGIN
	IF p_key IS NULL THEN
		RETURN NULL;
	END IF;
	-- An expired key is free again: its row is taken over.  Under
	-- REPEATABLE READ or SERIALIZABLE a claim this transaction cannot see
	-- makes this fail with 40001, so two calls never both take effect.
	INSERT INTO oms.idempotency_keys AS k (key, function_name, request_hash, response, created_at, expires_at)
	VALUES (p_key, p_function, p_hash, NULL, pg_catalog.now(),
			pg_catalog.now() + pg_catalog.current_setting('oms.idempotency_ttl')::interval)
	ON CONFLICT (key) DO UPDATE
		SET function_name = excluded.function_name, request_hash = excluded.request_hash,
			response = NULL, created_at = excluded.created_at, expires_at = excluded.expires_at
		WHERE k.expires_at <= pg_catalog.now();
	IF FOUND THEN
		RETURN NULL;
	END IF;

	SELECT * INTO v_row FROM oms.idempotency_keys AS k WHERE k.key = p_key;
	IF v_row.function_name <> p_function OR v_row.request_hash <> p_hash THEN
		RAISE EXCEPTION 'idempotency key "%" was already used for a different request', p_key
			USING ERRCODE = 'OM001',
				  DETAIL = CASE WHEN v_row.function_name <> p_function
								THEN pg_catalog.format('The key was first used by %s.', v_row.function_name)
								ELSE pg_catalog.format('The key was first used by %s with other arguments.', p_function) END,
				  HINT = 'Use a new idempotency key for a new request.';
	END IF;
	IF v_row.response IS NULL THEN
		-- Only this very call could hold an unanswered claim of its own.
		RAISE EXCEPTION 'idempotency key "%" is in use by this transaction', p_key
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	RETURN v_row.response;
END;
$$;
COMMENT ON FUNCTION oms._idempotency_begin(text, text, bytea) IS
	'Claims an idempotency key (waiting for a concurrent claim to end) or returns the stored response of an earlier identical call';

-- Stores the response of the call that claimed the key.
CREATE OR REPLACE FUNCTION oms._idempotency_finish(p_key text, p_function text, p_hash bytea, p_response jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE oms.idempotency_keys AS k SET response = p_response
	WHERE k.key = p_key AND k.function_name = p_function AND k.request_hash = p_hash;
END;
$$;
COMMENT ON FUNCTION oms._idempotency_finish(text, text, bytea, jsonb) IS
	'Stores the response of a call under the idempotency key it claimed';

CREATE OR REPLACE FUNCTION oms._purge_idempotency_keys()
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	WITH purged AS (
		DELETE FROM oms.idempotency_keys AS k WHERE k.expires_at <= pg_catalog.now() RETURNING 1
	)
	SELECT pg_catalog.count(*) FROM purged;
$$;
COMMENT ON FUNCTION oms._purge_idempotency_keys() IS
	'Deletes expired idempotency keys and returns how many were deleted';

CREATE OR REPLACE FUNCTION @extschema@.oms_purge_idempotency_keys()
RETURNS bigint
LANGUAGE sql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT oms._purge_idempotency_keys();
$$;
COMMENT ON FUNCTION @extschema@.oms_purge_idempotency_keys() IS
	'Deletes idempotency keys older than oms.idempotency_ttl and returns how many were deleted';

-- The identifier rule of the API (src/input.c, docs/api.md "Identifiers"):
-- 22004 for NULL, 22001 when longer than p_max_chars, 22023 when empty or
-- with a control character or white space at either end.
CREATE OR REPLACE FUNCTION oms._check_identifier(p_name text, p_value text, p_max_chars integer)
RETURNS void
LANGUAGE c IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_check_identifier';
COMMENT ON FUNCTION oms._check_identifier(text, text, integer) IS
	'Raises 22004 for NULL, 22001 for too long, 22023 for an identifier that is empty, has a control character or white space at either end';

-- Free-form JSON arguments: 22004 for NULL, 22023 when not an object,
-- 54000 when over p_max_bytes as JSON text or nested deeper than 32 levels.
CREATE OR REPLACE FUNCTION oms._check_json_argument(p_name text, p_value jsonb, p_max_bytes integer)
RETURNS void
LANGUAGE c IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_check_json_argument';
COMMENT ON FUNCTION oms._check_json_argument(text, jsonb, integer) IS
	'Raises 22004 for NULL, 22023 for a non-object, 54000 for a JSON object over p_max_bytes as text or nested deeper than 32 levels';

-- 54000 when the events of an order could not be published
-- (src/input.c): checked when the order is created.
CREATE OR REPLACE FUNCTION oms._check_publishable(p_document jsonb)
RETURNS void
LANGUAGE c STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_check_publishable';
COMMENT ON FUNCTION oms._check_publishable(jsonb) IS
	'Raises 54000 when an order document leaves too little room in oms.kafka_max_message_bytes for its events';

CREATE OR REPLACE FUNCTION oms._check_not_null(p_name text, p_value anyelement)
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
						'line_total', i.line_total) ORDER BY i.line_no), '[]'::jsonb)
			FROM oms.order_items AS i
			WHERE i.order_id = p_order_id);
END;
$$;
COMMENT ON FUNCTION oms._order_items_json(uuid) IS 'The lines of an order as a JSON array';

-- The order document returned by the API and carried by events.  Times are
-- UTC with microseconds, whatever the session's time zone, so that the same
-- order reads the same in every event.
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
		'currency', p_order.currency,
		'total', p_order.total,
		'items', p_items,
		'version', p_order.version,
		'metadata', p_order.metadata,
		'created_at', pg_catalog.to_char(p_order.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
		'updated_at', pg_catalog.to_char(p_order.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));
END;
$$;
COMMENT ON FUNCTION oms._order_document(oms.orders, jsonb) IS 'Builds the JSON order document from an order row and its items';

-- Locks and returns an order, or raises P0002 when there is none.
CREATE OR REPLACE FUNCTION oms._lock_order(p_order_id uuid)
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
CREATE OR REPLACE FUNCTION oms._record_change(p_order oms.orders, p_event_type text,
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
CREATE OR REPLACE FUNCTION oms._timeline(p_order_id uuid, p_event_type text, p_data jsonb)
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
 */
CREATE OR REPLACE FUNCTION oms._change_status(p_order_id uuid, p_to_status oms.order_status, p_event_type text, p_data jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_from oms.order_status;
	v_order oms.orders;
	v_document jsonb;
BEGIN
	SELECT o.status INTO v_from FROM oms.orders AS o WHERE o.id = p_order_id;
	-- Writing the same status is no transition for the trigger; an event
	-- for it would announce a change that did not happen.
	IF v_from = p_to_status AND NOT oms._transition_allowed(v_from, p_to_status) THEN
		RAISE EXCEPTION 'order "%" is already %', p_order_id, p_to_status
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	UPDATE oms.orders AS o
	SET status = p_to_status, timeline_seq = o.timeline_seq + 1, event_seq = o.event_seq + 1
	WHERE o.id = p_order_id
	RETURNING * INTO v_order;
	v_document := oms._order_document(v_order, oms._order_items_json(v_order.id));
	PERFORM oms._record_change(v_order, p_event_type, v_from, p_data, v_document);
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION oms._change_status(uuid, oms.order_status, text, jsonb) IS
	'Changes an order status with its timeline entry and outbox event; returns the order document';

/*
 * The body of both oms_create_order functions (items as jsonb, and items as
 * text, where duplicate fields can still be seen).
 */
CREATE OR REPLACE FUNCTION oms._create_order(p_customer_id text, p_items jsonb, p_currency text,
								  p_idempotency_key text, p_metadata jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_priced jsonb;
	v_order oms.orders;
	v_document jsonb;
	v_hash bytea;
BEGIN
	PERFORM oms._check_identifier('customer_id', p_customer_id, 255);
	IF p_items IS NULL THEN
		RAISE EXCEPTION 'items must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM oms._currency_exponent(p_currency);
	PERFORM oms._check_json_argument('metadata', p_metadata,
									 current_setting('oms.max_metadata_bytes')::integer);
	IF p_idempotency_key IS NOT NULL THEN
		PERFORM oms._check_idempotency_key(p_idempotency_key);
	END IF;
	-- The request is identified by its priced, normalized items, so that
	-- 2 and 2.0 or reordered keys are the same request.
	v_priced := oms._price_items(p_items);

	IF p_idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(jsonb_build_array(p_customer_id, v_priced -> 'items', p_currency, p_metadata));
		v_document := oms._idempotency_begin(p_idempotency_key, 'oms_create_order', v_hash);
		IF v_document IS NOT NULL THEN
			RETURN v_document;
		END IF;
	END IF;

	INSERT INTO oms.orders (customer_id, currency, total, metadata, timeline_seq, event_seq)
	VALUES (p_customer_id, p_currency, (v_priced ->> 'total')::bigint, p_metadata, 1, 1)
	RETURNING * INTO v_order;

	INSERT INTO oms.order_items (order_id, line_no, sku, quantity, unit_price, line_total)
	SELECT v_order.id, i.line_no, i.sku, i.quantity, i.unit_price, i.line_total
	FROM jsonb_to_recordset(v_priced -> 'items')
		AS i(line_no integer, sku text, quantity integer, unit_price bigint, line_total bigint);

	v_document := oms._order_document(v_order, v_priced -> 'items');
	PERFORM oms._check_publishable(v_document);
	PERFORM oms._record_change(v_order, 'order.created', NULL,
		jsonb_build_object('total', v_order.total, 'currency', v_order.currency,
						   'item_count', jsonb_array_length(v_priced -> 'items'),
						   'idempotency_key', p_idempotency_key),
		v_document);

	IF p_idempotency_key IS NOT NULL THEN
		PERFORM oms._idempotency_finish(p_idempotency_key, 'oms_create_order', v_hash, v_document);
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION oms._create_order(text, jsonb, text, text, jsonb) IS
	'Creates a pending order: the body of both oms_create_order functions';

CREATE OR REPLACE FUNCTION @extschema@.oms_create_order(
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
CREATE OR REPLACE FUNCTION @extschema@.oms_create_order(
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

CREATE OR REPLACE FUNCTION @extschema@.oms_get_order(order_id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_order oms.orders;
BEGIN
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
	PERFORM oms._check_not_null('order_id', oms_cancel_order.order_id);
	IF oms_cancel_order.reason IS NOT NULL AND length(oms_cancel_order.reason) > 1000 THEN
		RAISE EXCEPTION 'reason is too long'
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = format('reason has at most 1000 characters, got %s.', length(oms_cancel_order.reason));
	END IF;
	PERFORM oms._check_idempotency_key(oms_cancel_order.idempotency_key);

	IF oms_cancel_order.idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(jsonb_build_array(oms_cancel_order.order_id, oms_cancel_order.reason));
		v_document := oms._idempotency_begin(oms_cancel_order.idempotency_key, 'oms_cancel_order', v_hash);
		IF v_document IS NOT NULL THEN
			RETURN v_document;
		END IF;
	END IF;

	v_order := oms._lock_order(oms_cancel_order.order_id);
	v_from := v_order.status;
	IF v_from = 'pending' THEN
		v_document := oms._change_status(v_order.id, 'canceled', 'order.canceled',
			jsonb_build_object('reason', oms_cancel_order.reason,
							   'idempotency_key', oms_cancel_order.idempotency_key));
	ELSIF v_from = 'processing' THEN
		-- The saga stops at its next step and compensates what it did; the
		-- order ends canceled then.  Wake it now if it is waiting.
		v_document := oms._change_status(v_order.id, 'cancel_requested', 'order.cancel_requested',
			jsonb_build_object('reason', oms_cancel_order.reason,
							   'idempotency_key', oms_cancel_order.idempotency_key));
		UPDATE oms.sagas AS s SET next_run_at = now()
		WHERE s.id IN (SELECT s2.id FROM oms.sagas AS s2
					   WHERE s2.order_id = v_order.id AND s2.kind = 'fulfilment' AND s2.status = 'running'
					   FOR UPDATE SKIP LOCKED);
		PERFORM oms._notify_worker();
	ELSE
		RAISE EXCEPTION 'order "%" cannot be canceled', v_order.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = format('The order is %s.', v_from),
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

-- Units of a SKU held by live reservations at a point in time.
CREATE OR REPLACE FUNCTION oms._reserved(p_sku text, p_now timestamptz)
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

/*
 * Reserves every line of an order, all or nothing.  Raises OM011 (a
 * permanent step failure) when a SKU is unknown or short, after which the
 * caller's subtransaction rolls back whatever was reserved.
 */
CREATE OR REPLACE FUNCTION oms._reserve_order(p_order_id uuid, p_now timestamptz)
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

CREATE OR REPLACE FUNCTION oms._release_order(p_order_id uuid)
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
CREATE OR REPLACE FUNCTION oms._move_reserved_stock(p_order_id uuid, p_from oms.reservation_status,
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

CREATE OR REPLACE FUNCTION oms._release_expired_reservations()
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
	'Marks held reservations past their expiry as expired and returns how many; the worker runs it every loop';

CREATE OR REPLACE FUNCTION oms._check_stock_change(p_sku text, p_on_hand bigint)
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

CREATE OR REPLACE FUNCTION @extschema@.oms_set_stock(sku text, on_hand bigint)
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

CREATE OR REPLACE FUNCTION @extschema@.oms_adjust_stock(sku text, delta bigint)
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

/*
 * The built-in test provider: the answer depends only on the method, the
 * command and the attempt number, so every path is reproducible.
 */
CREATE OR REPLACE FUNCTION oms._test_provider(p_method text, p_command text, p_attempt integer)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN CASE
		WHEN p_method = 'test_ok' THEN
			pg_catalog.jsonb_build_object('outcome', 'approved')
		WHEN p_method = 'test_decline' AND p_command = 'charge' THEN
			pg_catalog.jsonb_build_object('outcome', 'declined', 'message', 'card declined')
		WHEN p_method = 'test_flaky' AND p_attempt <= 2 THEN
			pg_catalog.jsonb_build_object('outcome', 'transient', 'message', 'provider unavailable')
		WHEN p_method = 'test_hang' AND p_command = 'charge' THEN
			pg_catalog.jsonb_build_object('outcome', 'pending')
		ELSE
			pg_catalog.jsonb_build_object('outcome', 'approved')
	END || pg_catalog.jsonb_build_object('reference',
			pg_catalog.format('test-%s-%s-%s', p_method, p_command, p_attempt));
END;
$$;
COMMENT ON FUNCTION oms._test_provider(text, text, integer) IS
	'The built-in test payment provider: a deterministic answer per method, command and attempt';

/*
 * The provider boundary.  p_command is charge (authorize and capture),
 * void or refund.  Returns {"outcome": approved|declined|transient|pending,
 * "message": ..., "reference": ...}.
 */
CREATE OR REPLACE FUNCTION oms._payment_request(p_payment oms.payments, p_command text, p_amount bigint,
									 p_attempt integer, p_correlation_id text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_provider text := pg_catalog.current_setting('oms.payment_provider');
BEGIN
	IF v_provider = 'test' THEN
		RETURN oms._test_provider(p_payment.method, p_command, p_attempt);
	END IF;
	IF v_provider = 'kafka' THEN
		RETURN oms._kafka_provider(p_payment, p_command, p_amount, p_correlation_id);
	END IF;
	RAISE EXCEPTION 'payment provider "%" is not available', v_provider
		USING ERRCODE = 'OM010';
END;
$$;
COMMENT ON FUNCTION oms._payment_request(oms.payments, text, bigint, integer, text) IS
	'Sends a payment command to the configured provider and returns its outcome';

CREATE OR REPLACE FUNCTION oms._check_payment_method(p_method text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF p_method IS NULL THEN
		RAISE EXCEPTION 'payment_method must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT EXISTS (SELECT FROM oms.payment_methods AS m
				   WHERE m.provider = pg_catalog.current_setting('oms.payment_provider') AND m.method = p_method) THEN
		RAISE EXCEPTION 'unknown payment method "%"', pg_catalog.left(p_method, 100)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = pg_catalog.format('The %s provider accepts: %s.',
					pg_catalog.current_setting('oms.payment_provider'),
					(SELECT pg_catalog.string_agg(m.method, ', ' ORDER BY m.method) FROM oms.payment_methods AS m
					 WHERE m.provider = pg_catalog.current_setting('oms.payment_provider')));
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._check_payment_method(text) IS 'Refuses payment methods the configured provider does not accept (22023)';

CREATE OR REPLACE FUNCTION oms._saga_step_names(p_kind text)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN CASE p_kind
		WHEN 'fulfilment' THEN ARRAY['reserve', 'pay', 'confirm']
		WHEN 'refund' THEN ARRAY['refund_payment', 'complete_refund']
	END;
END;
$$;
COMMENT ON FUNCTION oms._saga_step_names(text) IS 'The steps of each saga kind, in order';

CREATE OR REPLACE FUNCTION oms._start_saga(p_order_id uuid, p_kind text, p_refund_id uuid)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id uuid;
BEGIN
	INSERT INTO oms.sagas (order_id, kind, refund_id, traceparent)
	VALUES (p_order_id, p_kind, p_refund_id, NULLIF(pg_catalog.current_setting('oms.traceparent', true), ''))
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

-- SQLSTATEs that mean "try again later".
CREATE OR REPLACE FUNCTION oms._is_transient(p_sqlstate text)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN p_sqlstate IN ('OM010', '40001', '40P01', '55P03');
END;
$$;
COMMENT ON FUNCTION oms._is_transient(text) IS
	'True for transient failures: OM010, serialization failure, deadlock, lock not available';

-- Exponential backoff with equal jitter: half the delay is fixed, half random.
CREATE OR REPLACE FUNCTION oms._backoff(p_attempt integer)
RETURNS interval
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_delay interval := LEAST(pg_catalog.current_setting('oms.retry_max')::interval,
							  pg_catalog.current_setting('oms.retry_base')::interval
								* pg_catalog.power(2, LEAST(p_attempt - 1, 30)));
BEGIN
	RETURN v_delay * (0.5 + 0.5 * pg_catalog.random());
END;
$$;
COMMENT ON FUNCTION oms._backoff(integer) IS
	'Retry delay after attempt n: min(retry_max, retry_base * 2^(n-1)), scaled by a random factor in [0.5, 1)';

CREATE OR REPLACE FUNCTION oms._error_json(p_sqlstate text, p_message text, p_detail text, p_step oms.saga_steps,
								p_attempt integer, p_now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
		'sqlstate', p_sqlstate, 'message', p_message, 'detail', NULLIF(p_detail, ''),
		'step', p_step.name, 'attempt', p_attempt, 'at', p_now,
		'transient', oms._is_transient(p_sqlstate)));
END;
$$;
COMMENT ON FUNCTION oms._error_json(text, text, text, oms.saga_steps, integer, timestamptz) IS
	'The structured error recorded for a failed step attempt';

-- How long a waiting step may wait: a remote payment provider's replies
-- have their own limit.
CREATE OR REPLACE FUNCTION oms._step_timeout(p_step_name text)
RETURNS interval
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN CASE WHEN pg_catalog.current_setting('oms.payment_provider') = 'kafka'
					 AND p_step_name IN ('pay', 'refund_payment')
				THEN pg_catalog.current_setting('oms.payment_reply_timeout')::interval
				ELSE pg_catalog.current_setting('oms.step_timeout')::interval END;
END;
$$;
COMMENT ON FUNCTION oms._step_timeout(text) IS
	'Time a waiting step may wait: oms.payment_reply_timeout for remote payments, else oms.step_timeout';

CREATE OR REPLACE FUNCTION oms._step_pay(p_saga oms.sagas, p_step oms.saga_steps, p_now timestamptz)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_payment oms.payments;
	v_answer jsonb;
BEGIN
	SELECT * INTO v_payment FROM oms.payments AS p WHERE p.order_id = p_saga.order_id FOR UPDATE;
	IF EXISTS (SELECT FROM oms.reservations AS r
			   WHERE r.order_id = p_saga.order_id AND (r.status <> 'held' OR r.expires_at <= p_now)) THEN
		RAISE EXCEPTION 'the reservations of the order expired before payment'
			USING ERRCODE = 'OM011';
	END IF;
	v_answer := oms._payment_request(v_payment, 'charge', v_payment.amount, p_step.attempts,
									 pg_catalog.format('%s:%s:%s', p_saga.id, p_step.step_no, p_step.attempts));
	CASE v_answer ->> 'outcome'
		WHEN 'approved' THEN
			UPDATE oms.payments AS p
			SET authorized = p.amount, captured = p.amount, status = 'captured',
				provider_reference = v_answer ->> 'reference', updated_at = pg_catalog.now()
			WHERE p.id = v_payment.id;
			-- Paid: the units stay held until confirm, whatever the TTL.
			UPDATE oms.reservations AS r SET expires_at = 'infinity'
			WHERE r.order_id = p_saga.order_id AND r.status = 'held';
			RETURN 'done';
		WHEN 'pending' THEN
			RETURN 'waiting';
		WHEN 'declined' THEN
			-- Rolled back with the attempt; the compensation records the
			-- decline (OM013) on the payment.
			RAISE EXCEPTION 'payment declined: %', coalesce(v_answer ->> 'message', 'no reason given')
				USING ERRCODE = 'OM013';
		ELSE
			RAISE EXCEPTION 'payment failed: %', coalesce(v_answer ->> 'message', 'no reason given')
				USING ERRCODE = 'OM010';
	END CASE;
END;
$$;
COMMENT ON FUNCTION oms._step_pay(oms.sagas, oms.saga_steps, timestamptz) IS
	'Fulfilment step 2: authorize and capture the order total';

CREATE OR REPLACE FUNCTION oms._step_confirm(p_saga oms.sagas)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._move_reserved_stock(p_saga.order_id, 'held', 'consumed', -1);
	PERFORM oms._change_status(p_saga.order_id, 'confirmed', 'order.confirmed',
							   pg_catalog.jsonb_build_object('saga_id', p_saga.id));
	RETURN 'done';
END;
$$;
COMMENT ON FUNCTION oms._step_confirm(oms.sagas) IS
	'Fulfilment step 3, the pivot: reservations become a stock decrement and the order is confirmed';

CREATE OR REPLACE FUNCTION oms._step_refund_payment(p_saga oms.sagas, p_step oms.saga_steps)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_refund oms.refunds;
	v_payment oms.payments;
	v_answer jsonb;
BEGIN
	SELECT * INTO v_refund FROM oms.refunds AS r WHERE r.id = p_saga.refund_id FOR UPDATE;
	SELECT * INTO v_payment FROM oms.payments AS p WHERE p.id = v_refund.payment_id FOR UPDATE;
	v_answer := oms._payment_request(v_payment, 'refund', v_refund.amount, p_step.attempts,
									 pg_catalog.format('%s:%s:%s', p_saga.id, p_step.step_no, p_step.attempts));
	CASE v_answer ->> 'outcome'
		WHEN 'approved' THEN
			UPDATE oms.payments AS p
			SET refunded = p.refunded + v_refund.amount,
				status = CASE WHEN p.refunded + v_refund.amount = p.captured THEN 'refunded' ELSE 'partially_refunded' END,
				updated_at = pg_catalog.now()
			WHERE p.id = v_payment.id;
			UPDATE oms.refunds AS r SET status = 'succeeded', completed_at = pg_catalog.now()
			WHERE r.id = v_refund.id;
			RETURN 'done';
		WHEN 'pending' THEN
			RETURN 'waiting';
		WHEN 'declined' THEN
			RAISE EXCEPTION 'refund declined: %', coalesce(v_answer ->> 'message', 'no reason given')
				USING ERRCODE = 'OM013';
		ELSE
			RAISE EXCEPTION 'refund failed: %', coalesce(v_answer ->> 'message', 'no reason given')
				USING ERRCODE = 'OM010';
	END CASE;
END;
$$;
COMMENT ON FUNCTION oms._step_refund_payment(oms.sagas, oms.saga_steps) IS
	'Refund step 1: refund the requested amount through the provider';

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
	IF v_payment.refunded = v_payment.captured AND v_status = 'refunded' THEN
		-- Another refund saga already completed the order: its status, its
		-- event and the restock are done.  Record this refund only.
		PERFORM oms._timeline(p_saga.order_id, 'refund.completed', v_data);
	ELSIF v_payment.refunded = v_payment.captured THEN
		PERFORM oms._move_reserved_stock(p_saga.order_id, 'consumed', 'released', 1);
		PERFORM oms._change_status(p_saga.order_id, 'refunded', 'order.refunded', v_data);
	ELSE
		PERFORM oms._change_status(p_saga.order_id, 'partially_refunded', 'order.partially_refunded', v_data);
	END IF;
	RETURN 'done';
END;
$$;
COMMENT ON FUNCTION oms._step_complete_refund(oms.sagas) IS
	'Refund step 2: the order becomes refunded (and is restocked) or partially_refunded';

CREATE OR REPLACE FUNCTION oms._run_step(p_saga oms.sagas, p_step oms.saga_steps, p_now timestamptz)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	CASE p_step.name
		WHEN 'reserve' THEN
			PERFORM oms._reserve_order(p_saga.order_id, p_now);
			RETURN 'done';
		WHEN 'pay' THEN
			RETURN oms._step_pay(p_saga, p_step, p_now);
		WHEN 'confirm' THEN
			RETURN oms._step_confirm(p_saga);
		WHEN 'refund_payment' THEN
			RETURN oms._step_refund_payment(p_saga, p_step);
		WHEN 'complete_refund' THEN
			RETURN oms._step_complete_refund(p_saga);
	END CASE;
END;
$$;
COMMENT ON FUNCTION oms._run_step(oms.sagas, oms.saga_steps, timestamptz) IS 'Runs one attempt of a saga step';

/*
 * Compensations: undo a step that ran (or may have run).  Each is
 * idempotent and tolerates "it never happened".
 */
CREATE OR REPLACE FUNCTION oms._compensate_step(p_saga oms.sagas, p_step oms.saga_steps)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_payment oms.payments;
	v_answer jsonb;
	v_command text;
BEGIN
	CASE p_step.name
		WHEN 'reserve' THEN
			PERFORM oms._release_order(p_saga.order_id);
		WHEN 'pay' THEN
			SELECT * INTO v_payment FROM oms.payments AS p WHERE p.order_id = p_saga.order_id FOR UPDATE;
			IF v_payment.status IN ('voided', 'declined', 'refunded') THEN
				RETURN 'done';
			END IF;
			IF p_step.last_error ->> 'sqlstate' = 'OM013' AND v_payment.captured = 0 THEN
				-- The provider declined the charge: nothing to void.
				UPDATE oms.payments AS p SET status = 'declined', updated_at = pg_catalog.now()
				WHERE p.id = v_payment.id;
				RETURN 'done';
			END IF;
			v_command := CASE WHEN v_payment.captured > 0 THEN 'refund' ELSE 'void' END;
			v_answer := oms._payment_request(v_payment, v_command, v_payment.captured - v_payment.refunded,
											 p_step.compensation_attempts,
											 pg_catalog.format('%s:%s:c%s', p_saga.id, p_step.step_no, p_step.compensation_attempts));
			CASE v_answer ->> 'outcome'
				WHEN 'approved' THEN
					UPDATE oms.payments AS p
					SET refunded = p.captured,
						status = CASE WHEN v_command = 'refund' THEN 'refunded' ELSE 'voided' END,
						updated_at = pg_catalog.now()
					WHERE p.id = v_payment.id;
				WHEN 'pending' THEN
					RETURN 'waiting';
				WHEN 'declined' THEN
					RAISE EXCEPTION 'payment % declined: %', v_command, coalesce(v_answer ->> 'message', 'no reason given')
						USING ERRCODE = 'OM011';
				ELSE
					RAISE EXCEPTION 'payment % failed: %', v_command, coalesce(v_answer ->> 'message', 'no reason given')
						USING ERRCODE = 'OM010';
			END CASE;
		WHEN 'refund_payment' THEN
			UPDATE oms.refunds AS r SET status = 'failed', completed_at = pg_catalog.now()
			WHERE r.id = p_saga.refund_id AND r.status = 'pending';
		ELSE
			NULL;			-- confirm and complete_refund are never compensated
	END CASE;
	RETURN 'done';
END;
$$;
COMMENT ON FUNCTION oms._compensate_step(oms.sagas, oms.saga_steps) IS
	'Undoes one saga step: release reservations, void or refund the payment, fail the refund';

CREATE OR REPLACE FUNCTION oms._start_compensation(p_saga oms.sagas, p_from_step integer, p_outcome text,
										p_error jsonb, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE oms.sagas AS s
	SET status = 'compensating', step_no = p_from_step, outcome = p_outcome,
		error = coalesce(p_error, s.error), next_run_at = p_now, updated_at = pg_catalog.now()
	WHERE s.id = p_saga.id;
	PERFORM oms._timeline(p_saga.order_id, 'saga.compensating',
		pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'from_step', p_from_step, 'outcome', p_outcome));
END;
$$;
COMMENT ON FUNCTION oms._start_compensation(oms.sagas, integer, text, jsonb, timestamptz) IS
	'Turns a saga around: compensate from step p_from_step down to 1';

CREATE OR REPLACE FUNCTION oms._finish_saga(p_saga oms.sagas, p_status oms.saga_status, p_outcome text, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE oms.sagas AS s
	SET status = p_status, outcome = p_outcome, step_no = CASE WHEN p_status = 'compensated' THEN 0 ELSE s.step_no END,
		finished_at = p_now, updated_at = pg_catalog.now()
	WHERE s.id = p_saga.id;
	PERFORM oms._timeline(p_saga.order_id, 'saga.' || p_status::text,
		pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'kind', p_saga.kind, 'outcome', p_outcome));
	IF p_status = 'compensated' THEN
		PERFORM oms._log('log', 'saga_compensated', 'saga_id', p_saga.id::text, 'order_id', p_saga.order_id::text,
						 'kind', p_saga.kind, 'outcome', p_outcome);
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._finish_saga(oms.sagas, oms.saga_status, text, timestamptz) IS
	'Marks a saga completed or compensated';

-- A step failed for good: record it, leave a dead letter, compensate.
CREATE OR REPLACE FUNCTION oms._step_failed(p_saga oms.sagas, p_step oms.saga_steps, p_error jsonb, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_order_status oms.order_status;
	v_letter bigint;
BEGIN
	UPDATE oms.saga_steps AS t SET status = 'failed', last_error = p_error, completed_at = p_now
	WHERE t.saga_id = p_step.saga_id AND t.step_no = p_step.step_no;
	INSERT INTO oms.dead_letters (kind, saga_id, order_id, step, error)
	VALUES ('saga_failed', p_saga.id, p_saga.order_id, p_step.name, p_error)
	RETURNING id INTO v_letter;
	PERFORM oms._log('log', 'saga_failed', 'saga_id', p_saga.id::text, 'order_id', p_saga.order_id::text,
					 'kind', p_saga.kind, 'step', p_step.name, 'attempt', p_step.attempts::text,
					 'sqlstate', p_error ->> 'sqlstate', 'dead_letter_id', v_letter::text,
					 'message', p_error ->> 'message');
	PERFORM oms._timeline(p_saga.order_id, 'saga.step_failed',
		pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', p_step.name, 'attempt', p_step.attempts,
									  'error', p_error));
	SELECT o.status INTO v_order_status FROM oms.orders AS o WHERE o.id = p_saga.order_id;
	PERFORM oms._start_compensation(p_saga, p_step.step_no,
		CASE WHEN v_order_status = 'cancel_requested' THEN 'canceled' ELSE 'failed' END, p_error, p_now);
END;
$$;
COMMENT ON FUNCTION oms._step_failed(oms.sagas, oms.saga_steps, jsonb, timestamptz) IS
	'Records a permanently failed step, writes its dead letter and starts compensation';

CREATE OR REPLACE FUNCTION oms._step_retry(p_saga oms.sagas, p_step oms.saga_steps, p_error jsonb, p_now timestamptz,
								p_compensating boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_at timestamptz := p_now + oms._backoff(CASE WHEN p_compensating THEN p_step.compensation_attempts
												  ELSE p_step.attempts END);
BEGIN
	UPDATE oms.saga_steps AS t SET last_error = p_error, next_attempt_at = v_at
	WHERE t.saga_id = p_step.saga_id AND t.step_no = p_step.step_no;
	-- A compensation retry keeps the saga's error: the one that made it fail.
	UPDATE oms.sagas AS s
	SET next_run_at = v_at, error = CASE WHEN p_compensating THEN s.error ELSE p_error END,
		updated_at = pg_catalog.now()
	WHERE s.id = p_saga.id;
	PERFORM oms._timeline(p_saga.order_id,
		CASE WHEN p_compensating THEN 'saga.compensation_retry' ELSE 'saga.step_retry' END,
		pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', p_step.name,
			'attempt', CASE WHEN p_compensating THEN p_step.compensation_attempts ELSE p_step.attempts END,
			'error', p_error, 'next_attempt_at', v_at));
	PERFORM oms._log('log', CASE WHEN p_compensating THEN 'saga_compensation_failed' ELSE 'saga_step_failed' END,
		'saga_id', p_saga.id::text, 'order_id', p_saga.order_id::text, 'kind', p_saga.kind, 'step', p_step.name,
		'attempt', (CASE WHEN p_compensating THEN p_step.compensation_attempts ELSE p_step.attempts END)::text,
		'sqlstate', p_error ->> 'sqlstate',
		'retry_in_ms', pg_catalog.round(pg_catalog.date_part('epoch', v_at - p_now) * 1000)::bigint::text,
		'message', p_error ->> 'message');
END;
$$;
COMMENT ON FUNCTION oms._step_retry(oms.sagas, oms.saga_steps, jsonb, timestamptz, boolean) IS
	'Schedules the next attempt of a transiently failed step with backoff';

-- One forward move of a running saga.
CREATE OR REPLACE FUNCTION oms._advance_forward(p_saga oms.sagas, p_order oms.orders, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_step oms.saga_steps;
	v_timeout interval;
	v_rerun boolean := false;
	v_result text;
	v_state text;
	v_message text;
	v_detail text;
	v_error jsonb;
	v_last integer := pg_catalog.cardinality(oms._saga_step_names(p_saga.kind));
BEGIN
	SELECT * INTO v_step FROM oms.saga_steps AS t WHERE t.saga_id = p_saga.id AND t.step_no = p_saga.step_no;
	v_timeout := oms._step_timeout(v_step.name);
	IF v_step.status = 'waiting' AND oms._reply_for(pg_catalog.format('%s:%s:%s', p_saga.id, v_step.step_no,
																	  v_step.attempts)) IS NOT NULL THEN
		-- The remote provider answered: run the same attempt again, the
		-- provider now returns the answer.  This comes before a cancel, so
		-- that a capture the provider made is recorded (and then refunded).
		v_rerun := true;
	ELSIF p_saga.kind = 'fulfilment' AND p_order.status = 'cancel_requested' THEN
		PERFORM oms._start_compensation(p_saga, p_saga.step_no, 'canceled', NULL, p_now);
		RETURN;
	ELSIF v_step.status = 'waiting' THEN
		IF p_now < v_step.started_at + v_timeout THEN
			UPDATE oms.sagas AS s SET next_run_at = v_step.started_at + v_timeout WHERE s.id = p_saga.id;
			RETURN;
		END IF;
		PERFORM oms._step_failed(p_saga, v_step,
			oms._error_json('OM012', pg_catalog.format('step %s got no answer within %s', v_step.name, v_timeout),
							NULL, v_step, v_step.attempts, p_now), p_now);
		RETURN;
	END IF;

	-- The attempt is counted in the same UPDATE that records its outcome
	-- (one write per attempt); the step sees its number already.
	IF NOT v_rerun THEN
		v_step.attempts := v_step.attempts + 1;
		v_step.started_at := p_now;
		v_step.first_started_at := coalesce(v_step.first_started_at, p_now);
	END IF;

	BEGIN
		v_result := oms._run_step(p_saga, v_step, p_now);
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
		v_error := oms._error_json(v_state, v_message, v_detail, v_step, v_step.attempts, p_now);
		-- pending again: a retry is a new attempt, not a wait for a reply.
		UPDATE oms.saga_steps AS t
		SET status = 'pending', attempts = v_step.attempts, started_at = v_step.started_at,
			first_started_at = v_step.first_started_at
		WHERE t.saga_id = v_step.saga_id AND t.step_no = v_step.step_no;
		IF oms._is_transient(v_state) AND v_step.attempts < pg_catalog.current_setting('oms.max_attempts')::integer THEN
			PERFORM oms._step_retry(p_saga, v_step, v_error, p_now, false);
		ELSE
			PERFORM oms._step_failed(p_saga, v_step, v_error, p_now);
		END IF;
		RETURN;
	END;

	IF v_result = 'waiting' THEN
		UPDATE oms.saga_steps AS t
		SET status = 'waiting', attempts = v_step.attempts, started_at = v_step.started_at,
			first_started_at = v_step.first_started_at
		WHERE t.saga_id = v_step.saga_id AND t.step_no = v_step.step_no;
		UPDATE oms.sagas AS s SET next_run_at = p_now + v_timeout, updated_at = pg_catalog.now() WHERE s.id = p_saga.id;
		PERFORM oms._timeline(p_saga.order_id, 'saga.step_waiting',
			pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', v_step.name, 'attempt', v_step.attempts,
										  'timeout_at', p_now + v_timeout));
		RETURN;
	END IF;

	UPDATE oms.saga_steps AS t
	SET status = 'done', attempts = v_step.attempts, started_at = v_step.started_at,
		first_started_at = v_step.first_started_at,
		completed_at = GREATEST(p_now, pg_catalog.clock_timestamp())
	WHERE t.saga_id = v_step.saga_id AND t.step_no = v_step.step_no;
	PERFORM oms._timeline(p_saga.order_id, 'saga.step_completed',
		pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', v_step.name, 'attempt', v_step.attempts));
	IF v_step.step_no = v_last THEN
		PERFORM oms._finish_saga(p_saga, 'completed',
			CASE p_saga.kind WHEN 'fulfilment' THEN 'confirmed' ELSE 'refunded' END, p_now);
	ELSE
		UPDATE oms.sagas AS s SET step_no = s.step_no + 1, next_run_at = p_now, error = NULL,
			updated_at = pg_catalog.now()
		WHERE s.id = p_saga.id;
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._advance_forward(oms.sagas, oms.orders, timestamptz) IS
	'Runs one attempt of the current step of a running saga, or notices its timeout or a cancel request';

-- A compensation that cannot finish needs an operator.
CREATE OR REPLACE FUNCTION oms._compensation_stuck(p_saga oms.sagas, p_step oms.saga_steps, p_error jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_letter bigint;
BEGIN
	UPDATE oms.saga_steps AS t SET last_error = p_error, compensation_waiting = false
	WHERE t.saga_id = p_step.saga_id AND t.step_no = p_step.step_no;
	UPDATE oms.sagas AS s SET status = 'stuck', error = p_error, updated_at = pg_catalog.now()
	WHERE s.id = p_saga.id;
	INSERT INTO oms.dead_letters (kind, saga_id, order_id, step, error)
	VALUES ('compensation_stuck', p_saga.id, p_saga.order_id, p_step.name, p_error)
	RETURNING id INTO v_letter;
	PERFORM oms._timeline(p_saga.order_id, 'saga.stuck',
		pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', p_step.name, 'error', p_error));
	PERFORM oms._log('warning', 'saga_stuck', 'saga_id', p_saga.id::text, 'order_id', p_saga.order_id::text,
					 'kind', p_saga.kind, 'step', p_step.name, 'attempt', (p_error ->> 'attempt'),
					 'sqlstate', p_error ->> 'sqlstate', 'dead_letter_id', v_letter::text,
					 'message', p_error ->> 'message');
END;
$$;
COMMENT ON FUNCTION oms._compensation_stuck(oms.sagas, oms.saga_steps, jsonb) IS
	'Parks a saga whose compensation cannot finish, with a replayable dead letter';

-- One backward move of a compensating saga.
CREATE OR REPLACE FUNCTION oms._advance_backward(p_saga oms.sagas, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_step oms.saga_steps;
	v_result text;
	v_state text;
	v_message text;
	v_detail text;
	v_error jsonb;
	v_order_status oms.order_status;
BEGIN
	IF p_saga.step_no = 0 THEN
		PERFORM oms._finish_saga(p_saga, 'compensated', p_saga.outcome, p_now);
		IF p_saga.kind = 'fulfilment' THEN
			-- A payment that was never attempted is closed as voided.
			UPDATE oms.payments AS p SET status = 'voided', updated_at = pg_catalog.now()
			WHERE p.order_id = p_saga.order_id AND p.status = 'pending';
			SELECT o.status INTO v_order_status FROM oms.orders AS o WHERE o.id = p_saga.order_id;
			IF v_order_status = 'cancel_requested' THEN
				-- The caller's reason, from the cancel request.
				PERFORM oms._change_status(p_saga.order_id, 'canceled', 'order.canceled',
					pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'reason',
						(SELECT e.data -> 'reason' FROM oms.order_events AS e
						 WHERE e.order_id = p_saga.order_id AND e.event_type = 'order.cancel_requested'
						 ORDER BY e.seq DESC LIMIT 1)));
			ELSE
				PERFORM oms._change_status(p_saga.order_id, 'failed', 'order.failed',
					pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'error', p_saga.error));
			END IF;
		END IF;
		RETURN;
	END IF;

	SELECT * INTO v_step FROM oms.saga_steps AS t WHERE t.saga_id = p_saga.id AND t.step_no = p_saga.step_no;
	IF v_step.attempts = 0 OR v_step.status IN ('compensated', 'skipped') THEN
		-- Never ran: nothing to undo.
		UPDATE oms.saga_steps AS t SET status = 'skipped'
		WHERE t.saga_id = v_step.saga_id AND t.step_no = v_step.step_no AND t.status = 'pending';
		UPDATE oms.sagas AS s SET step_no = s.step_no - 1, next_run_at = p_now WHERE s.id = p_saga.id;
		RETURN;
	END IF;

	-- A remote provider's answer to the compensation attempt that waits for
	-- it is run under that attempt, once: whatever it says ends the attempt.
	-- Anything else is a new attempt, with a new correlation id, within the
	-- same budget as failures, so neither a void nobody answers nor one
	-- answered "failed" again and again can go on forever: both end stuck.
	IF NOT (v_step.compensation_waiting AND
			oms._reply_for(pg_catalog.format('%s:%s:c%s', p_saga.id, v_step.step_no,
											 v_step.compensation_attempts)) IS NOT NULL) THEN
		IF v_step.compensation_attempts
		   >= pg_catalog.current_setting('oms.max_attempts')::integer * (1 + v_step.replays) THEN
			-- Only a wait can end here: a failed attempt at the limit is
			-- stuck at once, with its own error (below).
			PERFORM oms._compensation_stuck(p_saga, v_step,
				oms._error_json('OM012', pg_catalog.format('compensation of step %s got no answer', v_step.name),
								NULL, v_step, v_step.compensation_attempts, p_now)
				|| pg_catalog.jsonb_build_object('compensation', true));
			RETURN;
		END IF;
		v_step.compensation_attempts := v_step.compensation_attempts + 1;
	END IF;
	-- Counted and no longer waiting in the same UPDATE that records how the
	-- attempt ended (below, or in the retry and stuck paths).
	UPDATE oms.saga_steps AS t
	SET compensation_attempts = v_step.compensation_attempts, compensation_waiting = false
	WHERE t.saga_id = v_step.saga_id AND t.step_no = v_step.step_no
	RETURNING * INTO v_step;

	BEGIN
		v_result := oms._compensate_step(p_saga, v_step);
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
		v_error := oms._error_json(v_state, v_message, v_detail, v_step, v_step.compensation_attempts, p_now)
				   || pg_catalog.jsonb_build_object('compensation', true);
		-- Each replay of a stuck compensation grants a fresh set of attempts;
		-- the attempt number keeps counting so the provider sees retries.
		IF oms._is_transient(v_state)
		   AND v_step.compensation_attempts
			   < pg_catalog.current_setting('oms.max_attempts')::integer * (1 + v_step.replays) THEN
			PERFORM oms._step_retry(p_saga, v_step, v_error, p_now, true);
		ELSE
			PERFORM oms._compensation_stuck(p_saga, v_step, v_error);
		END IF;
		RETURN;
	END;

	IF v_result = 'waiting' THEN
		UPDATE oms.saga_steps AS t SET compensation_waiting = true
		WHERE t.saga_id = v_step.saga_id AND t.step_no = v_step.step_no;
		UPDATE oms.sagas AS s SET next_run_at = p_now + oms._step_timeout(v_step.name)
		WHERE s.id = p_saga.id;
		RETURN;
	END IF;
	UPDATE oms.saga_steps AS t SET status = 'compensated'
	WHERE t.saga_id = v_step.saga_id AND t.step_no = v_step.step_no;
	UPDATE oms.sagas AS s SET step_no = s.step_no - 1, next_run_at = p_now WHERE s.id = p_saga.id;
	PERFORM oms._timeline(p_saga.order_id, 'saga.step_compensated',
		pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', v_step.name,
									  'attempt', v_step.compensation_attempts));
END;
$$;
COMMENT ON FUNCTION oms._advance_backward(oms.sagas, timestamptz) IS
	'Compensates the current step of a compensating saga, or finishes the saga at step 0';

/*
 * Runs up to p_max due saga steps as of p_now and returns how many ran.
 * The worker and oms_run_sagas() both come here.
 *
 * Each step runs under its saga's trace context: oms.traceparent is set
 * to the saga's, so every timeline entry and event the step writes (an
 * order.confirmed, a payment command) carries the trace of the call that
 * started the saga, whoever runs it.  The SET clause gives the caller its
 * own value back on return.
 */
CREATE OR REPLACE FUNCTION oms._run_sagas(p_max integer, p_now timestamptz)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET oms.traceparent = ''
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_units integer := 0;
	v_id uuid;
	v_saga oms.sagas;
	v_order oms.orders;
	v_state text;
	v_message text;
BEGIN
	FOR v_id IN
		SELECT s.id FROM oms.sagas AS s
		WHERE s.status IN ('running', 'compensating') AND s.next_run_at <= p_now
		ORDER BY s.next_run_at
		LIMIT p_max
		FOR UPDATE SKIP LOCKED
	LOOP
		-- An API call holding the order (a cancel, say) goes first; the saga
		-- stays due and is picked up again.  Never waiting here means the
		-- worker and the API cannot deadlock.
		PERFORM 1 FROM oms.orders AS o JOIN oms.sagas AS s ON s.order_id = o.id
		WHERE s.id = v_id FOR NO KEY UPDATE OF o SKIP LOCKED;
		CONTINUE WHEN NOT FOUND;

		-- One subtransaction per saga: a defect or database error in one
		-- saga rolls back that saga's progress in this batch only.
		BEGIN
			LOOP
				SELECT * INTO v_saga FROM oms.sagas AS s WHERE s.id = v_id;
				EXIT WHEN v_saga.status NOT IN ('running', 'compensating') OR v_saga.next_run_at > p_now
					   OR v_units >= p_max;
				v_units := v_units + 1;
				PERFORM pg_catalog.set_config('oms.traceparent', coalesce(v_saga.traceparent, ''), true);
				IF v_saga.status = 'running' THEN
					SELECT * INTO v_order FROM oms.orders AS o WHERE o.id = v_saga.order_id;
					PERFORM oms._advance_forward(v_saga, v_order, p_now);
				ELSE
					PERFORM oms._advance_backward(v_saga, p_now);
				END IF;
			END LOOP;
		EXCEPTION WHEN OTHERS THEN
			-- Not a step failure (those are handled inside): record it on
			-- the saga, back off, carry on with the next saga.
			GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
			UPDATE oms.sagas AS s
			SET error = pg_catalog.jsonb_build_object('sqlstate', v_state, 'message', v_message,
													  'at', p_now, 'engine', true),
				next_run_at = p_now + oms._backoff(1), updated_at = pg_catalog.now()
			WHERE s.id = v_id;
			PERFORM oms._log('warning', 'saga_error', 'saga_id', v_id::text,
							 'order_id', (SELECT s.order_id::text FROM oms.sagas AS s WHERE s.id = v_id),
							 'sqlstate', v_state, 'message', v_message);
		END;
		EXIT WHEN v_units >= p_max;
	END LOOP;
	RETURN v_units;
END;
$$;
COMMENT ON FUNCTION oms._run_sagas(integer, timestamptz) IS
	'Runs up to p_max due saga steps as of p_now, each saga in its own subtransaction; returns the steps run';

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
	PERFORM oms._check_not_null('order_id', oms_pay_order.order_id);
	PERFORM oms._check_payment_method(oms_pay_order.payment_method);
	PERFORM oms._check_idempotency_key(oms_pay_order.idempotency_key);

	IF oms_pay_order.idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(jsonb_build_array(oms_pay_order.order_id, oms_pay_order.payment_method));
		v_document := oms._idempotency_begin(oms_pay_order.idempotency_key, 'oms_pay_order', v_hash);
		IF v_document IS NOT NULL THEN
			RETURN v_document;
		END IF;
	END IF;

	v_order := oms._lock_order(oms_pay_order.order_id);
	IF v_order.status <> 'pending' THEN
		RAISE EXCEPTION 'order "%" cannot be paid', v_order.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = format('The order is %s.', v_order.status),
				  HINT = 'Only pending orders can be paid.';
	END IF;

	INSERT INTO oms.payments (order_id, method, currency, amount)
	VALUES (v_order.id, oms_pay_order.payment_method, v_order.currency, v_order.total);
	v_document := oms._change_status(v_order.id, 'processing', 'order.processing',
		jsonb_build_object('payment_method', oms_pay_order.payment_method,
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
	PERFORM oms._check_not_null('order_id', oms_refund_order.order_id);
	IF oms_refund_order.amount IS NOT NULL AND oms_refund_order.amount <= 0 THEN
		RAISE EXCEPTION 'refund amount must be greater than zero'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass NULL to refund everything that is left.';
	END IF;
	IF length(oms_refund_order.reason) > 1000 THEN
		RAISE EXCEPTION 'reason is too long'
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = format('reason has at most 1000 characters, got %s.', length(oms_refund_order.reason));
	END IF;
	PERFORM oms._check_idempotency_key(oms_refund_order.idempotency_key);

	IF oms_refund_order.idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(jsonb_build_array(oms_refund_order.order_id, oms_refund_order.amount,
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
				  DETAIL = format('The order is %s.', v_order.status),
				  HINT = CASE WHEN v_order.status IN ('pending', 'processing')
							  THEN 'Cancel the order instead with oms_cancel_order().'
							  ELSE 'Only confirmed or partially refunded orders can be refunded.' END;
	END IF;

	-- Pending refunds count: two concurrent refunds serialise on the
	-- payment row and the second sees the first.
	SELECT * INTO v_payment FROM oms.payments AS p WHERE p.order_id = v_order.id FOR UPDATE;
	v_refundable := v_payment.captured - v_payment.refunded
		- (SELECT coalesce(sum(r.amount), 0) FROM oms.refunds AS r
		   WHERE r.payment_id = v_payment.id AND r.status = 'pending');
	IF v_refundable = 0 THEN
		RAISE EXCEPTION 'order "%" has nothing left to refund', v_order.id
			USING ERRCODE = 'OM002',
				  DETAIL = format('Captured %s, refunded %s, pending refunds %s.', v_payment.captured,
								  v_payment.refunded, v_payment.captured - v_payment.refunded);
	END IF;
	v_amount := coalesce(oms_refund_order.amount, v_refundable);
	IF v_amount > v_refundable OR v_amount <= 0 THEN
		RAISE EXCEPTION 'refund of % exceeds the refundable amount of %', v_amount, v_refundable
			USING ERRCODE = 'OM002',
				  DETAIL = format('Captured %s, refunded %s, pending refunds %s.', v_payment.captured,
								  v_payment.refunded, v_payment.captured - v_payment.refunded - v_refundable),
				  HINT = 'Refund at most the refundable amount.';
	END IF;

	INSERT INTO oms.refunds (order_id, payment_id, amount, reason)
	VALUES (v_order.id, v_payment.id, v_amount, oms_refund_order.reason)
	RETURNING id INTO v_refund;
	PERFORM oms._timeline(v_order.id, 'refund.requested',
		jsonb_build_object('refund_id', v_refund, 'amount', v_amount, 'reason', oms_refund_order.reason,
						   'idempotency_key', oms_refund_order.idempotency_key));
	PERFORM oms._start_saga(v_order.id, 'refund', v_refund);
	PERFORM oms._notify_worker();

	v_document := oms._order_document((SELECT o FROM oms.orders AS o WHERE o.id = v_order.id),
									  oms._order_items_json(v_order.id))
				  || jsonb_build_object('refund', jsonb_build_object('refund_id', v_refund, 'amount', v_amount,
																	 'status', 'pending'));
	IF oms_refund_order.idempotency_key IS NOT NULL THEN
		PERFORM oms._idempotency_finish(oms_refund_order.idempotency_key, 'oms_refund_order', v_hash, v_document);
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_refund_order(uuid, bigint, text, text) IS
	'Refunds a confirmed order in full (amount NULL) or in part; runs as a refund saga';

CREATE OR REPLACE FUNCTION @extschema@.oms_run_sagas(max_steps integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._check_not_null('max_steps', max_steps);
	IF max_steps < 1 THEN
		RAISE EXCEPTION 'max_steps must be at least 1'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM oms._release_expired_reservations();
	RETURN oms._run_sagas(max_steps, clock_timestamp());
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_run_sagas(integer) IS
	'Runs up to max_steps due saga steps in this session, the same way the worker does; returns how many ran';

CREATE OR REPLACE FUNCTION @extschema@.oms_retry_dead_letter(id bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_letter oms.dead_letters;
BEGIN
	PERFORM oms._check_not_null('id', oms_retry_dead_letter.id);
	SELECT * INTO v_letter FROM oms.dead_letters AS d WHERE d.id = oms_retry_dead_letter.id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'dead letter % does not exist', oms_retry_dead_letter.id
			USING ERRCODE = 'no_data_found';
	END IF;
	IF v_letter.status <> 'open' THEN
		RAISE EXCEPTION 'dead letter % was already replayed', v_letter.id
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	IF v_letter.kind = 'publish' THEN
		-- Back into the outbox under its own id, so consumers can dedupe.
		-- With its own trace context, not the operator's.
		INSERT INTO oms.outbox (id, aggregatetype, aggregateid, type, payload, seq, created_at, traceparent)
		SELECT (v_letter.payload ->> 'id')::uuid, v_letter.payload ->> 'aggregatetype',
			   (v_letter.payload ->> 'aggregateid')::uuid, v_letter.payload ->> 'type',
			   v_letter.payload -> 'payload', (v_letter.payload ->> 'seq')::bigint,
			   (v_letter.payload ->> 'created_at')::timestamptz, v_letter.payload ->> 'traceparent';
		UPDATE oms.dead_letters AS d SET status = 'replayed', replayed_at = now() WHERE d.id = v_letter.id;
		PERFORM oms._log('log', 'dead_letter_replayed', 'dead_letter_id', v_letter.id::text, 'kind', v_letter.kind,
						 'event_id', v_letter.payload ->> 'id', 'type', v_letter.payload ->> 'type');
		PERFORM oms._notify_worker();
		RETURN (SELECT to_jsonb(d) FROM oms.dead_letters AS d WHERE d.id = v_letter.id);
	END IF;
	IF v_letter.kind IN ('reply', 'late_reply') THEN
		RAISE EXCEPTION 'dead letter % cannot be replayed', v_letter.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'A payment reply that could not be applied is kept as a record; the provider must send a valid one.';
	END IF;
	IF v_letter.kind = 'saga_failed' THEN
		RAISE EXCEPTION 'dead letter % cannot be replayed', v_letter.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'A failed saga is compensated, not retried; this letter is a record of why it failed.',
				  HINT = 'Create a new order for the customer.';
	END IF;

	-- compensation_stuck: resume compensating the same step with a fresh
	-- set of oms.max_attempts attempts.
	PERFORM 1 FROM oms.orders AS o WHERE o.id = v_letter.order_id FOR NO KEY UPDATE;
	UPDATE oms.saga_steps AS t SET replays = t.replays + 1
	FROM oms.sagas AS s
	WHERE s.id = v_letter.saga_id AND t.saga_id = s.id AND t.step_no = s.step_no;
	UPDATE oms.sagas AS s SET status = 'compensating', next_run_at = now(), updated_at = now()
	WHERE s.id = v_letter.saga_id AND s.status = 'stuck';
	UPDATE oms.dead_letters AS d SET status = 'replayed', replayed_at = now() WHERE d.id = v_letter.id;
	PERFORM oms._timeline(v_letter.order_id, 'saga.replayed',
		jsonb_build_object('saga_id', v_letter.saga_id, 'dead_letter_id', v_letter.id));
	PERFORM oms._log('log', 'dead_letter_replayed', 'dead_letter_id', v_letter.id::text, 'kind', v_letter.kind,
					 'saga_id', v_letter.saga_id::text, 'order_id', v_letter.order_id::text);
	PERFORM oms._notify_worker();
	RETURN (SELECT to_jsonb(d) FROM oms.dead_letters AS d WHERE d.id = v_letter.id);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_retry_dead_letter(bigint) IS
	'Replays a dead letter: a stuck compensation resumes with fresh attempts; an undelivered event goes back to the outbox';

-- The applied reply to a command, or NULL.
CREATE OR REPLACE FUNCTION oms._reply_for(p_correlation_id text)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN (SELECT i.body FROM oms.inbox AS i
			WHERE i.correlation_id = p_correlation_id AND i.result = 'applied'
			ORDER BY i.received_at LIMIT 1);
END;
$$;
COMMENT ON FUNCTION oms._reply_for(text) IS 'The reply applied for a payment command, if one arrived';

CREATE OR REPLACE FUNCTION oms._send_payment_command(p_payment oms.payments, p_command text, p_amount bigint,
										  p_correlation_id text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_seq bigint;
BEGIN
	INSERT INTO oms.payment_commands (correlation_id, payment_id, order_id, command, amount)
	VALUES (p_correlation_id, p_payment.id, p_payment.order_id, p_command, p_amount);
	UPDATE oms.payments AS p SET command_seq = p.command_seq + 1
	WHERE p.id = p_payment.id
	RETURNING p.command_seq INTO v_seq;
	-- The saga's trace context (the engine sets it), so the provider can
	-- join the trace of the order.
	INSERT INTO oms.outbox (aggregatetype, aggregateid, type, payload, seq, traceparent)
	VALUES ('payment', p_payment.id, 'payment.' || p_command,
			pg_catalog.jsonb_build_object('correlation_id', p_correlation_id, 'command', p_command,
				'payment_id', p_payment.id, 'order_id', p_payment.order_id, 'amount', p_amount,
				'currency', p_payment.currency, 'method', p_payment.method,
				'reply_topic', pg_catalog.current_setting('oms.kafka_payment_replies_topic')),
			v_seq, NULLIF(pg_catalog.current_setting('oms.traceparent', true), ''));
	PERFORM oms._notify_worker();
END;
$$;
COMMENT ON FUNCTION oms._send_payment_command(oms.payments, text, bigint, text) IS
	'Writes a payment command for the remote provider to the outbox';

/*
 * The kafka provider: the recorded reply when it arrived, else "pending"
 * (sending the command the first time the step asks).
 */
CREATE OR REPLACE FUNCTION oms._kafka_provider(p_payment oms.payments, p_command text, p_amount bigint,
									p_correlation_id text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_reply jsonb := oms._reply_for(p_correlation_id);
BEGIN
	IF v_reply IS NOT NULL THEN
		RETURN pg_catalog.jsonb_build_object(
			'outcome', CASE v_reply ->> 'outcome' WHEN 'failed' THEN 'transient' ELSE v_reply ->> 'outcome' END,
			'reference', v_reply ->> 'reference', 'message', v_reply ->> 'message');
	END IF;
	IF NOT EXISTS (SELECT FROM oms.payment_commands AS c WHERE c.correlation_id = p_correlation_id) THEN
		PERFORM oms._send_payment_command(p_payment, p_command, p_amount, p_correlation_id);
	END IF;
	RETURN '{"outcome": "pending"}'::jsonb;
END;
$$;
COMMENT ON FUNCTION oms._kafka_provider(oms.payments, text, bigint, text) IS
	'Remote provider: answers with the recorded reply, or sends the command once and answers pending';

/*
 * Anyone who can write to the replies topic can send replies that cannot
 * be applied, so their record is bounded: at most oms.max_rejected_replies
 * open "reply" dead letters (with their inbox rows).  Past that a rejected
 * reply is counted (oms_inbox_replies_total{result="rejected"}) but not
 * stored; the line that reaches the limit says so once.
 */
CREATE OR REPLACE FUNCTION oms._reject_reply(p_message_id text, p_reason text, p_body text, p_correlation_id text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_letter bigint;
	v_max integer := pg_catalog.current_setting('oms.max_rejected_replies')::integer;
	v_open integer;
BEGIN
	SELECT pg_catalog.count(*) INTO v_open
	FROM (SELECT FROM oms.dead_letters AS d WHERE d.kind = 'reply' AND d.status = 'open' LIMIT v_max) AS l;
	IF v_open >= v_max THEN
		DELETE FROM oms.inbox AS i WHERE i.message_id = p_message_id;
		RETURN 'rejected';
	END IF;
	IF v_open + 1 = v_max THEN
		PERFORM oms._log('warning', 'payment_reply_records_full', 'limit', v_max::text,
						 'message', 'further rejected payment replies are counted, not stored');
	END IF;
	UPDATE oms.inbox AS i SET result = 'rejected', correlation_id = p_correlation_id
	WHERE i.message_id = p_message_id;
	INSERT INTO oms.dead_letters (kind, step, error, payload)
	VALUES ('reply', 'payment reply',
			pg_catalog.jsonb_build_object('message', p_reason, 'permanent', true, 'at', pg_catalog.now()),
			pg_catalog.jsonb_build_object('message_id', p_message_id, 'raw', p_body))
	RETURNING id INTO v_letter;
	PERFORM oms._log('warning', 'payment_reply_rejected', 'message_id', p_message_id,
					 'correlation_id', p_correlation_id, 'dead_letter_id', v_letter::text, 'message', p_reason);
	RETURN 'rejected';
END;
$$;
COMMENT ON FUNCTION oms._reject_reply(text, text, text, text) IS
	'Records a reply that cannot be applied as a dead letter with the raw message';

/*
 * Applies one reply, exactly once per message id.  Returns applied,
 * duplicate, late or rejected; never raises for a bad message (it becomes a
 * dead letter), so a poison message cannot block its partition.
 *
 * A late reply answers a command the saga no longer waits for (it timed
 * out, was retried or canceled).  A late approval of a charge means the
 * provider took money oms gave up on: oms sends a refund for it, and keeps a
 * late_reply dead letter either way.
 */
CREATE OR REPLACE FUNCTION oms._apply_payment_reply(p_message_id text, p_body text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id text := coalesce(p_message_id, 'md5:' || md5(coalesce(p_body, '')));
	v_body jsonb;
	v_correlation text;
	v_outcome text;
	v_command oms.payment_commands;
	v_saga oms.sagas;
	v_step oms.saga_steps;
	v_attempt text;
	v_waiting boolean;
	v_caller_trace text := pg_catalog.current_setting('oms.traceparent', true);
	v_trace text;
	v_letter bigint;
BEGIN
	INSERT INTO oms.inbox (message_id) VALUES (v_id) ON CONFLICT (message_id) DO NOTHING;
	IF NOT FOUND THEN
		RETURN 'duplicate';
	END IF;

	BEGIN
		v_body := p_body::jsonb;
	EXCEPTION WHEN OTHERS THEN
		RETURN oms._reject_reply(v_id, 'malformed reply: ' || SQLERRM, p_body, NULL);
	END;
	IF jsonb_typeof(v_body) IS DISTINCT FROM 'object' THEN
		RETURN oms._reject_reply(v_id, 'malformed reply: not a JSON object', p_body, NULL);
	END IF;
	v_correlation := v_body ->> 'correlation_id';
	v_outcome := v_body ->> 'outcome';
	IF v_correlation IS NULL OR v_outcome IS NULL OR v_outcome NOT IN ('approved', 'declined', 'failed') THEN
		RETURN oms._reject_reply(v_id, 'malformed reply: correlation_id and outcome (approved, declined, failed) are required',
								 p_body, v_correlation);
	END IF;
	SELECT * INTO v_command FROM oms.payment_commands AS c WHERE c.correlation_id = v_correlation;
	IF NOT FOUND THEN
		RETURN oms._reject_reply(v_id, format('unknown correlation id "%s"', left(v_correlation, 200)),
								 p_body, v_correlation);
	END IF;

	-- The same answer under another message id has no second effect, and
	-- leaves no row: a redelivery of it is judged again, to the same end, so
	-- the inbox keeps one row per reply that had an effect.
	IF oms._reply_for(v_correlation) IS NOT NULL OR
	   EXISTS (SELECT FROM oms.inbox AS i
			   WHERE i.correlation_id = v_correlation AND i.result = 'late' AND i.outcome = v_outcome) THEN
		DELETE FROM oms.inbox AS i WHERE i.message_id = v_id;
		RETURN 'duplicate';
	END IF;

	PERFORM 1 FROM oms.orders AS o WHERE o.id = v_command.order_id FOR NO KEY UPDATE;

	-- What the reply causes belongs to the trace of the saga that sent the
	-- command (a late refund's correlation id starts with late:); the
	-- caller's own value is given back before returning.
	IF split_part(regexp_replace(v_correlation, '^late:', ''), ':', 1)
	   ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
		SELECT s.traceparent INTO v_trace FROM oms.sagas AS s
		WHERE s.id = split_part(regexp_replace(v_correlation, '^late:', ''), ':', 1)::uuid;
	END IF;
	IF v_trace IS NOT NULL THEN
		PERFORM set_config('oms.traceparent', v_trace, true);
	END IF;

	-- The answer to a refund oms sent for a late charge: no saga waits for
	-- it; it is recorded, and a refusal needs an operator.
	IF v_correlation LIKE 'late:%' THEN
		UPDATE oms.inbox AS i
		SET correlation_id = v_correlation, outcome = v_outcome, body = v_body, result = 'applied'
		WHERE i.message_id = v_id;
		PERFORM oms._timeline(v_command.order_id, 'payment.late_refund',
			jsonb_build_object('correlation_id', v_correlation, 'outcome', v_outcome, 'message_id', v_id));
		IF v_outcome <> 'approved' THEN
			INSERT INTO oms.dead_letters (kind, order_id, step, error, payload)
			VALUES ('late_reply', v_command.order_id, 'refund',
					jsonb_build_object('message', 'the refund of a late charge was not approved',
									   'outcome', v_outcome, 'at', now()),
					jsonb_build_object('message_id', v_id, 'reply', v_body))
			RETURNING id INTO v_letter;
			PERFORM oms._log('warning', 'payment_late_refund_refused', 'order_id', v_command.order_id::text,
							 'correlation_id', v_correlation, 'outcome', v_outcome, 'message_id', v_id,
							 'dead_letter_id', v_letter::text);
		END IF;
		IF v_trace IS NOT NULL THEN
			PERFORM set_config('oms.traceparent', coalesce(v_caller_trace, ''), true);
		END IF;
		RETURN 'applied';
	END IF;

	-- Is a saga step waiting for exactly this command?
	v_attempt := split_part(v_correlation, ':', 3);
	IF split_part(v_correlation, ':', 1) ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
		SELECT * INTO v_saga FROM oms.sagas AS s
		WHERE s.id = split_part(v_correlation, ':', 1)::uuid FOR UPDATE;
	END IF;
	SELECT * INTO v_step FROM oms.saga_steps AS t
	WHERE t.saga_id = v_saga.id AND t.step_no::text = split_part(v_correlation, ':', 2);
	v_waiting := v_saga.id IS NOT NULL AND v_step.step_no = v_saga.step_no AND
		CASE WHEN v_attempt LIKE 'c%'
			 THEN v_saga.status = 'compensating' AND v_step.compensation_waiting
				  AND v_step.compensation_attempts::text = substr(v_attempt, 2)
			 ELSE v_saga.status = 'running' AND v_step.status = 'waiting' AND v_step.attempts::text = v_attempt
		END;

	UPDATE oms.inbox AS i
	SET correlation_id = v_correlation, outcome = v_outcome, body = v_body,
		result = CASE WHEN v_waiting THEN 'applied' ELSE 'late' END
	WHERE i.message_id = v_id;

	IF v_waiting THEN
		UPDATE oms.sagas AS s SET next_run_at = now() WHERE s.id = v_saga.id;
		PERFORM oms._timeline(v_command.order_id, 'payment.reply',
			jsonb_build_object('correlation_id', v_correlation, 'command', v_command.command,
							   'outcome', v_outcome, 'message_id', v_id));
		PERFORM oms._notify_worker();
		IF v_trace IS NOT NULL THEN
			PERFORM set_config('oms.traceparent', coalesce(v_caller_trace, ''), true);
		END IF;
		RETURN 'applied';
	END IF;

	INSERT INTO oms.dead_letters (kind, saga_id, order_id, step, error, payload)
	VALUES ('late_reply', v_saga.id, v_command.order_id, v_command.command,
			jsonb_build_object('message', 'reply after the saga stopped waiting for it', 'outcome', v_outcome,
							   'at', now()),
			jsonb_build_object('message_id', v_id, 'reply', v_body))
	RETURNING id INTO v_letter;
	IF v_outcome = 'approved' AND v_command.command = 'charge'
	   AND NOT EXISTS (SELECT FROM oms.payment_commands AS c WHERE c.correlation_id = 'late:' || v_correlation) THEN
		-- The provider charged after oms gave up: give the money back.
		PERFORM oms._send_payment_command((SELECT p FROM oms.payments AS p WHERE p.id = v_command.payment_id),
										  'refund', v_command.amount, 'late:' || v_correlation);
	END IF;
	PERFORM oms._timeline(v_command.order_id, 'payment.late_reply',
		jsonb_build_object('correlation_id', v_correlation, 'command', v_command.command, 'outcome', v_outcome,
						   'refund_sent', v_outcome = 'approved' AND v_command.command = 'charge'));
	PERFORM oms._log('warning', 'payment_reply_late', 'saga_id', v_saga.id::text,
					 'order_id', v_command.order_id::text, 'correlation_id', v_correlation,
					 'command', v_command.command, 'outcome', v_outcome, 'message_id', v_id,
					 'refund_sent', (v_outcome = 'approved' AND v_command.command = 'charge')::text,
					 'dead_letter_id', v_letter::text);
	IF v_trace IS NOT NULL THEN
		PERFORM set_config('oms.traceparent', coalesce(v_caller_trace, ''), true);
	END IF;
	RETURN 'late';
END;
$$;
COMMENT ON FUNCTION oms._apply_payment_reply(text, text) IS
	'Applies a payment reply once per message id: applied, duplicate, late (dead letter, refund of a late charge) or rejected';

CREATE OR REPLACE FUNCTION @extschema@.oms_payment_result(correlation_id text, outcome text, details jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_result text;
BEGIN
	PERFORM oms._check_identifier('correlation_id', oms_payment_result.correlation_id, 255);
	PERFORM oms._check_not_null('outcome', oms_payment_result.outcome);
	IF oms_payment_result.outcome NOT IN ('approved', 'declined', 'failed') THEN
		RAISE EXCEPTION 'invalid payment outcome "%"', left(oms_payment_result.outcome, 100)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The outcome is approved, declined or failed.';
	END IF;
	PERFORM oms._check_json_argument('details', oms_payment_result.details, 4096);
	-- Only answers to commands oms sent: anything else would leave a row
	-- per call, and any caller could grow the tables without bound.
	IF NOT EXISTS (SELECT FROM oms.payment_commands AS c
				   WHERE c.correlation_id = oms_payment_result.correlation_id) THEN
		RAISE EXCEPTION 'payment command "%" does not exist', oms_payment_result.correlation_id
			USING ERRCODE = 'no_data_found',
				  DETAIL = 'No payment command was sent with this correlation id, or it was pruned.';
	END IF;
	-- The same result twice is one message: the inbox dedupes it.
	v_result := oms._apply_payment_reply(
		'sql:' || oms_payment_result.correlation_id || ':' || oms_payment_result.outcome,
		jsonb_build_object('correlation_id', oms_payment_result.correlation_id,
						   'outcome', oms_payment_result.outcome,
						   'reference', oms_payment_result.details ->> 'reference',
						   'message', oms_payment_result.details ->> 'message')::text);
	RETURN jsonb_build_object('correlation_id', oms_payment_result.correlation_id, 'result', v_result);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_payment_result(text, text, jsonb) IS
	'Applies a payment provider result from SQL (webhooks) through the same inbox as Kafka replies';

/*
 * The next events to publish, oldest first, ready to produce: topic, key,
 * value and CloudEvents headers (Kafka protocol binding, binary mode),
 * plus the W3C header traceparent when the event has a trace context.
 * An event whose predecessor of the same aggregate is backing off after a
 * failure waits for it, so per-order order holds.  Rows are returned per
 * aggregate in seq order.
 */
CREATE OR REPLACE FUNCTION oms._relay_claim(p_limit integer)
RETURNS TABLE (id uuid, topic text, key text, value text, headers text[], aggregatetype text,
			   aggregateid uuid, seq bigint)
LANGUAGE plpgsql STABLE
-- A batch of wide rows is sorted per aggregate: keep the sort in memory.
SET work_mem = '64MB'
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_topic text := pg_catalog.current_setting('oms.kafka_topic');
	v_per_aggregate boolean := pg_catalog.current_setting('oms.kafka_topic_mode') = 'per_aggregate';
	v_source text := '/oms/' || pg_catalog.current_database();
	-- Payment commands go to the remote provider's topic.
	v_commands text := pg_catalog.current_setting('oms.kafka_payment_commands_topic');
BEGIN
	RETURN QUERY
	SELECT b.id,
		   CASE WHEN b.aggregatetype = 'payment' THEN v_commands
				WHEN v_per_aggregate THEN 'oms.' || b.aggregatetype || '-events' ELSE v_topic END,
		   b.aggregateid::text,
		   b.payload::text,
		   ARRAY['ce_specversion', '1.0',
				 'ce_id', b.id::text,
				 'ce_source', v_source,
				 'ce_type', 'oms.' || b.type,
				 'ce_time', pg_catalog.to_char(b.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
				 'ce_subject', b.aggregateid::text,
				 'ce_dataschema', 'oms:events/' || b.type || '/v1',
				 'content-type', 'application/json',
				 'ce_omsaggregate', b.aggregatetype,
				 'ce_omsseq', b.seq::text]
			|| CASE WHEN b.traceparent IS NOT NULL THEN ARRAY['traceparent', b.traceparent] ELSE '{}'::text[] END,
		   b.aggregatetype, b.aggregateid, b.seq
	FROM (SELECT o.* FROM oms.outbox AS o
		  WHERE o.next_attempt_at <= pg_catalog.now()
			AND NOT EXISTS (SELECT FROM oms.outbox AS p
							WHERE p.attempts > 0
							  AND p.aggregatetype = o.aggregatetype AND p.aggregateid = o.aggregateid
							  AND p.seq < o.seq AND p.next_attempt_at > pg_catalog.now())
		  ORDER BY o.created_at
		  LIMIT p_limit) AS b
	ORDER BY b.aggregatetype, b.aggregateid, b.seq;
END;
$$;
COMMENT ON FUNCTION oms._relay_claim(integer) IS
	'The next outbox events to publish, oldest first, with topic, key, value, CloudEvents headers and traceparent';

/*
 * Settles a produced batch.  p_errors[i] is NULL when p_ids[i] was
 * acknowledged, else the delivery error; p_permanent[i] says whether
 * retrying can help.  Per aggregate, the acknowledged events before its
 * first failure are removed; the failed event is retried with backoff or,
 * when permanent or out of attempts, moved to the dead letters; events
 * after a failure stay and are published again after it, in order.
 * Returns the number of events removed as published.
 */
CREATE OR REPLACE FUNCTION oms._relay_settle(p_ids uuid[], p_errors text[], p_permanent boolean[])
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_published integer;
	v_dead integer;
	v_max integer := pg_catalog.current_setting('oms.publish_max_attempts')::integer;
BEGIN
	WITH batch AS (
		SELECT r.id, r.error, o.aggregatetype, o.aggregateid, o.seq
		FROM ROWS FROM (pg_catalog.unnest(p_ids), pg_catalog.unnest(p_errors)) AS r(id, error)
		JOIN oms.outbox AS o ON o.id = r.id
	), first_failure AS (
		SELECT b.aggregatetype, b.aggregateid, pg_catalog.min(b.seq) AS seq
		FROM batch AS b WHERE b.error IS NOT NULL
		GROUP BY 1, 2
	), published AS (
		DELETE FROM oms.outbox AS o
		USING batch AS b
		LEFT JOIN first_failure AS f ON f.aggregatetype = b.aggregatetype AND f.aggregateid = b.aggregateid
		WHERE o.id = b.id AND b.error IS NULL AND (f.seq IS NULL OR b.seq < f.seq)
		RETURNING 1
	)
	SELECT pg_catalog.count(*) INTO v_published FROM published;

	-- Undeliverable: permanent errors at once, others after their last attempt.
	WITH failed AS (
		SELECT r.id, r.error, r.permanent
		FROM ROWS FROM (pg_catalog.unnest(p_ids), pg_catalog.unnest(p_errors), pg_catalog.unnest(p_permanent)) AS r(id, error, permanent)
		WHERE r.error IS NOT NULL
	), dead AS (
		DELETE FROM oms.outbox AS o
		USING failed AS f
		WHERE o.id = f.id AND (f.permanent OR o.attempts + 1 >= v_max)
		RETURNING o.*, f.error, f.permanent
	), letters AS (
		INSERT INTO oms.dead_letters (kind, order_id, step, error, payload)
		SELECT 'publish', CASE WHEN d.aggregatetype = 'order' THEN d.aggregateid END, d.type,
			   pg_catalog.jsonb_build_object('message', d.error, 'permanent', d.permanent,
											 'attempt', d.attempts + 1, 'at', pg_catalog.now()),
			   pg_catalog.jsonb_build_object('id', d.id, 'aggregatetype', d.aggregatetype,
											 'aggregateid', d.aggregateid, 'type', d.type, 'payload', d.payload,
											 'seq', d.seq, 'created_at', d.created_at)
			   || CASE WHEN d.traceparent IS NOT NULL
					   THEN pg_catalog.jsonb_build_object('traceparent', d.traceparent) ELSE '{}'::jsonb END
		FROM dead AS d
		RETURNING id, step, error, payload
	)
	-- One line per dead-lettered event: an operator must replay or drop it.
	SELECT pg_catalog.count(oms._log('warning', 'event_dead_lettered',
			'event_id', l.payload ->> 'id', 'aggregatetype', l.payload ->> 'aggregatetype',
			'aggregateid', l.payload ->> 'aggregateid', 'type', l.step, 'seq', l.payload ->> 'seq',
			'attempt', l.error ->> 'attempt', 'permanent', l.error ->> 'permanent',
			'dead_letter_id', l.id::text, 'message', l.error ->> 'message'))
	INTO v_dead
	FROM letters AS l;

	UPDATE oms.outbox AS o
	SET attempts = o.attempts + 1, last_error = r.error,
		next_attempt_at = pg_catalog.now() + oms._backoff(o.attempts + 1)
	FROM ROWS FROM (pg_catalog.unnest(p_ids), pg_catalog.unnest(p_errors)) AS r(id, error)
	WHERE o.id = r.id AND r.error IS NOT NULL;

	RETURN v_published;
END;
$$;
COMMENT ON FUNCTION oms._relay_settle(uuid[], text[], boolean[]) IS
	'Removes acknowledged events, schedules retries of failed ones, dead-letters undeliverable ones';

CREATE OR REPLACE FUNCTION oms._relay_backlog()
RETURNS TABLE (pending bigint, oldest_pending_age interval, backing_off bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.count(*),
		   pg_catalog.now() - pg_catalog.min(o.created_at),
		   pg_catalog.count(*) FILTER (WHERE o.next_attempt_at > pg_catalog.now())
	FROM oms.outbox AS o;
$$;
COMMENT ON FUNCTION oms._relay_backlog() IS 'Outbox backlog: pending events, age of the oldest, events backing off';

CREATE OR REPLACE FUNCTION oms._notify_worker()
RETURNS void
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_notify_worker'
LANGUAGE c VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION oms._notify_worker() IS
	'Wakes this database''s oms worker when the calling transaction commits (nothing happens on rollback); API functions call it when they create work';

CREATE OR REPLACE FUNCTION @extschema@.oms_worker_status()
RETURNS TABLE (
	database		name,
	pid				integer,
	alive			boolean,
	last_loop		timestamptz,
	loops			bigint,
	units			bigint,
	last_error		text,
	last_error_at	timestamptz
)
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_worker_status'
LANGUAGE c VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.oms_worker_status() IS
	'One row per database in oms.database_name: its worker''s pid (null when none runs), whether it runs, when it last looped, loops and units of work done since server start, and the last error a batch raised (kept until the next error)';

-- The same C function for oms's own code (see oms._transition_allowed).
CREATE OR REPLACE FUNCTION oms._worker_status()
RETURNS TABLE (
	database		name,
	pid				integer,
	alive			boolean,
	last_loop		timestamptz,
	loops			bigint,
	units			bigint,
	last_error		text,
	last_error_at	timestamptz
)
LANGUAGE c VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_worker_status';
COMMENT ON FUNCTION oms._worker_status() IS 'oms_worker_status for oms''s own code';

-- What the C worker calls once per batch (src/worker.c).
CREATE OR REPLACE FUNCTION oms._worker_tick(p_batch integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._release_expired_reservations();
	RETURN oms._run_sagas(p_batch, clock_timestamp());
END;
$$;
COMMENT ON FUNCTION oms._worker_tick(integer) IS
	'One unit of background work: expire reservations, then run up to p_batch due saga steps';

-- The worker sleeps until then at most (src/worker.c); sagas_due_idx
-- answers it from the index.  Only times still ahead count: a saga that is
-- due now and was not run is held by an API call, whose commit wakes the
-- worker.
CREATE OR REPLACE FUNCTION oms._next_saga_due()
RETURNS timestamptz
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.min(s.next_run_at) FROM oms.sagas AS s
	WHERE s.status IN ('running', 'compensating') AND s.next_run_at > pg_catalog.clock_timestamp();
$$;
COMMENT ON FUNCTION oms._next_saga_due() IS
	'When the next running or compensating saga falls due, if after now; null when none will';

CREATE OR REPLACE FUNCTION oms._relay_shmem_status(
	OUT worker_running		boolean,
	OUT published_total		bigint,
	OUT failed_attempts_total bigint,
	OUT batches_total		bigint,
	OUT breaker				text,
	OUT breaker_opened_at	timestamptz,
	OUT last_error			text,
	OUT last_error_at		timestamptz,
	OUT last_publish_at		timestamptz,
	OUT last_ack_latency_ms	double precision)
RETURNS record
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_relay_shmem_status'
LANGUAGE c VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION oms._relay_shmem_status() IS
	'The relay counters kept in shared memory for the current database (null when oms.database_name does not list it): events acknowledged, failed publish attempts, batches, circuit breaker, last error, last publish and the mean produce-to-acknowledgement time of the last batch';

CREATE OR REPLACE FUNCTION @extschema@.oms_relay_status()
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_shmem record;
	v_backlog record;
	v_dead bigint;
	v_brokers text := pg_catalog.current_setting('oms.kafka_brokers');
BEGIN
	SELECT * INTO v_shmem FROM oms._relay_shmem_status();
	SELECT * INTO v_backlog FROM oms._relay_backlog();
	SELECT pg_catalog.count(*) INTO v_dead
	FROM oms.dead_letters AS d WHERE d.kind = 'publish' AND d.status = 'open';

	RETURN pg_catalog.jsonb_build_object(
		'enabled', v_brokers <> '',
		'brokers', NULLIF(v_brokers, ''),
		'topic', CASE WHEN pg_catalog.current_setting('oms.kafka_topic_mode') = 'per_aggregate'
					  THEN 'oms.<aggregatetype>-events'
					  ELSE pg_catalog.current_setting('oms.kafka_topic') END,
		'worker_running', COALESCE(v_shmem.worker_running, false),
		'pending', v_backlog.pending,
		'oldest_pending_age_ms',
			pg_catalog.round(EXTRACT(epoch FROM v_backlog.oldest_pending_age) * 1000)::bigint,
		'backing_off', v_backlog.backing_off,
		'published_total', COALESCE(v_shmem.published_total, 0),
		'failed_attempts_total', COALESCE(v_shmem.failed_attempts_total, 0),
		'batches_total', COALESCE(v_shmem.batches_total, 0),
		'dead_letters', v_dead,
		'breaker', COALESCE(v_shmem.breaker, 'closed'),
		'breaker_opened_at', v_shmem.breaker_opened_at,
		'last_error', v_shmem.last_error,
		'last_error_at', v_shmem.last_error_at,
		'last_publish_at', v_shmem.last_publish_at,
		'last_ack_latency_ms', pg_catalog.round(v_shmem.last_ack_latency_ms::numeric, 3));
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_relay_status() IS
	'Outbox relay status of this database as jsonb: enabled, brokers, topic, worker_running, pending, oldest_pending_age_ms, backing_off, published_total, failed_attempts_total, batches_total, dead_letters (open publish dead letters), breaker (closed, open, half_open), breaker_opened_at, last_error, last_error_at, last_publish_at, last_ack_latency_ms';

CREATE OR REPLACE FUNCTION oms._inbox_shmem_status()
RETURNS jsonb
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_inbox_shmem_status'
LANGUAGE c VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION oms._inbox_shmem_status() IS
	'The reply consumer of the current database as kept in shared memory, as jsonb (null when oms.database_name does not list the database): worker_running, consumer (off, running, bad_config), applied, duplicates, late, rejected, other (counts of oms._apply_payment_reply results since server start), failures (reply transactions that failed and were retried), last_reply_at, partitions (assigned to this worker), lag (messages behind the high watermarks, null when unknown), lag_at, last_error, last_error_at';

-- Finished orders keep no saga in flight; their timeline, replies and
-- commands are history.
CREATE OR REPLACE FUNCTION oms._order_at_rest(p_order_id uuid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT NOT EXISTS (SELECT FROM oms.orders AS o
					   WHERE o.id = p_order_id AND o.status IN ('pending', 'processing', 'cancel_requested'))
	   AND NOT EXISTS (SELECT FROM oms.sagas AS s
					   WHERE s.order_id = p_order_id AND s.status IN ('running', 'compensating', 'stuck'));
$$;
COMMENT ON FUNCTION oms._order_at_rest(uuid) IS
	'True when an order is finished: not pending, processing or cancel_requested, and no saga of it is running, compensating or stuck';

CREATE OR REPLACE FUNCTION oms._maintenance_release_reservations()
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN pg_catalog.jsonb_build_object('expired', oms._release_expired_reservations());
END;
$$;
COMMENT ON FUNCTION oms._maintenance_release_reservations() IS
	'Maintenance task release_reservations: {"expired": n}';

CREATE OR REPLACE FUNCTION oms._maintenance_purge_idempotency_keys()
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN pg_catalog.jsonb_build_object('purged', oms._purge_idempotency_keys());
END;
$$;
COMMENT ON FUNCTION oms._maintenance_purge_idempotency_keys() IS
	'Maintenance task purge_idempotency_keys: {"purged": n}';

/*
 * Cancels up to p_limit pending orders created more than
 * oms.pending_order_ttl ago, oldest first, through the same status change
 * as oms_cancel_order: a timeline entry and an order.canceled event with
 * reason "expired".  Orders another session holds (being paid or canceled
 * right now) are skipped, never waited for; the lock re-reads the row, so
 * an order paid since the scan is no longer pending and is left alone.
 */
CREATE OR REPLACE FUNCTION oms._maintenance_expire_pending_orders(p_limit integer)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_ttl interval := pg_catalog.current_setting('oms.pending_order_ttl')::interval;
	v_id uuid;
	v_count integer := 0;
BEGIN
	IF v_ttl = interval '0' THEN
		RETURN pg_catalog.jsonb_build_object('canceled', 0, 'disabled', true);
	END IF;
	FOR v_id IN
		SELECT o.id FROM oms.orders AS o
		WHERE o.status = 'pending' AND o.created_at <= pg_catalog.now() - v_ttl
		ORDER BY o.created_at
		LIMIT p_limit
		FOR NO KEY UPDATE SKIP LOCKED
	LOOP
		PERFORM oms._change_status(v_id, 'canceled', 'order.canceled',
			pg_catalog.jsonb_build_object('reason', 'expired', 'idempotency_key', NULL));
		v_count := v_count + 1;
	END LOOP;
	RETURN pg_catalog.jsonb_build_object('canceled', v_count, 'more', v_count >= p_limit);
END;
$$;
COMMENT ON FUNCTION oms._maintenance_expire_pending_orders(integer) IS
	'Maintenance task expire_pending_orders: cancels up to p_limit abandoned pending orders; {"canceled": n, "more": bool}';

/*
 * Sagas whose next step has been due for longer than oms.saga_stuck_after
 * mean the worker is not keeping up (or not running): run due sagas here,
 * oldest due first, up to p_max steps.  Nothing runs when no saga is that
 * late, so a healthy worker never sees this task compete with it.
 */
CREATE OR REPLACE FUNCTION oms._maintenance_redrive_sagas(p_max integer)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_after interval := pg_catalog.current_setting('oms.saga_stuck_after')::interval;
	v_overdue integer;
	v_steps integer := 0;
BEGIN
	SELECT pg_catalog.count(*) INTO v_overdue
	FROM (SELECT FROM oms.sagas AS s
		  WHERE s.status IN ('running', 'compensating')
			AND s.next_run_at <= pg_catalog.clock_timestamp() - v_after
		  LIMIT p_max) AS late;
	IF v_overdue > 0 THEN
		v_steps := oms._run_sagas(p_max, pg_catalog.clock_timestamp());
	END IF;
	RETURN pg_catalog.jsonb_build_object('overdue', v_overdue, 'steps', v_steps);
END;
$$;
COMMENT ON FUNCTION oms._maintenance_redrive_sagas(integer) IS
	'Maintenance task redrive_sagas: when sagas are overdue by oms.saga_stuck_after, runs up to p_max due steps; {"overdue": n, "steps": n}';

/*
 * Dead letters are never deleted: there is one per failed saga or event,
 * and the metrics' counters, the step latency histogram and the failure
 * ranking are computed from them.
 *
 * Deletes, up to p_limit rows of each kind per run:
 * - timeline entries older than oms.timeline_retention of finished orders;
 * - payment commands older than oms.inbox_retention that were answered,
 *   whose order is finished, and whose replies are all that old too,
 *   together with those replies; then inbox rows that old that belong to
 *   no command (rejected replies).
 * A command and its replies go together: a reply redelivered later finds
 * neither and is rejected as unknown (a "reply" dead letter, no effect),
 * whereas a command kept without its replies would take a redelivered
 * approval for a late one and refund it.  Unanswered commands are kept:
 * they are what lets a late approval be recognised and refunded.
 */
CREATE OR REPLACE FUNCTION oms._maintenance_prune(p_limit integer)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_timeline_keep interval := pg_catalog.current_setting('oms.timeline_retention')::interval;
	v_inbox_keep interval := pg_catalog.current_setting('oms.inbox_retention')::interval;
	v_cutoff timestamptz;
	v_timeline bigint := 0;
	v_commands bigint := 0;
	v_replies bigint := 0;
	v_orphans bigint := 0;
BEGIN
	IF v_timeline_keep > interval '0' THEN
		v_cutoff := pg_catalog.now() - v_timeline_keep;
		WITH doomed AS (
			SELECT e.order_id, e.seq FROM oms.order_events AS e
			WHERE e.occurred_at < v_cutoff AND oms._order_at_rest(e.order_id)
			LIMIT p_limit
		), gone AS (
			DELETE FROM oms.order_events AS e USING doomed AS d
			WHERE e.order_id = d.order_id AND e.seq = d.seq
			RETURNING 1
		)
		SELECT pg_catalog.count(*) INTO v_timeline FROM gone;
	END IF;

	IF v_inbox_keep > interval '0' THEN
		v_cutoff := pg_catalog.now() - v_inbox_keep;
		WITH doomed AS (
			SELECT c.correlation_id FROM oms.payment_commands AS c
			WHERE c.sent_at < v_cutoff
			  AND EXISTS (SELECT FROM oms.inbox AS i
						  WHERE i.correlation_id = c.correlation_id AND i.result IN ('applied', 'late'))
			  AND NOT EXISTS (SELECT FROM oms.inbox AS i
							  WHERE i.correlation_id = c.correlation_id AND i.received_at >= v_cutoff)
			  AND oms._order_at_rest(c.order_id)
			ORDER BY c.sent_at
			LIMIT p_limit
			FOR UPDATE OF c SKIP LOCKED
		), replies AS (
			DELETE FROM oms.inbox AS i USING doomed AS d
			WHERE i.correlation_id = d.correlation_id
			RETURNING 1
		), commands AS (
			DELETE FROM oms.payment_commands AS c USING doomed AS d
			WHERE c.correlation_id = d.correlation_id
			RETURNING 1
		)
		SELECT (SELECT pg_catalog.count(*) FROM commands), (SELECT pg_catalog.count(*) FROM replies)
		INTO v_commands, v_replies;

		WITH doomed AS (
			SELECT i.message_id FROM oms.inbox AS i
			WHERE i.received_at < v_cutoff AND i.result <> 'received'
			  AND NOT EXISTS (SELECT FROM oms.payment_commands AS c WHERE c.correlation_id = i.correlation_id)
			LIMIT p_limit
			FOR UPDATE SKIP LOCKED
		), gone AS (
			DELETE FROM oms.inbox AS i USING doomed AS d
			WHERE i.message_id = d.message_id
			RETURNING 1
		)
		SELECT pg_catalog.count(*) INTO v_orphans FROM gone;
	END IF;

	RETURN pg_catalog.jsonb_build_object(
		'timeline_entries', v_timeline,
		'payment_commands', v_commands,
		'inbox', v_replies + v_orphans,
		'more', GREATEST(v_timeline, v_commands, v_orphans) >= p_limit);
END;
$$;
COMMENT ON FUNCTION oms._maintenance_prune(integer) IS
	'Maintenance task prune: deletes up to p_limit old rows of each kind per the retention settings; returns the counts';

-- The names of the tasks, in the order "all tasks" runs them.
CREATE OR REPLACE FUNCTION oms._maintenance_task_names()
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.array_agg(t.task ORDER BY t.position) FROM oms.maintenance_tasks AS t;
$$;
COMMENT ON FUNCTION oms._maintenance_task_names() IS 'The maintenance task names, in run order';

/*
 * Runs one task and records the run.  A task another session is running
 * right now is skipped (transaction advisory lock, never waited for).  An
 * error is caught: the task's work rolls back, the error is recorded in
 * oms.maintenance_tasks and returned as {"error": ...}, and the other
 * tasks of the same call still run.
 */
CREATE OR REPLACE FUNCTION oms._run_maintenance_task(p_task text, p_run_by text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_started timestamptz := pg_catalog.clock_timestamp();
	v_result jsonb;
	v_state text;
	v_message text;
	v_failed boolean := false;
BEGIN
	IF NOT pg_catalog.pg_try_advisory_xact_lock(7302516, pg_catalog.hashtext(p_task)) THEN
		RETURN pg_catalog.jsonb_build_object('skipped', 'another session is running this task');
	END IF;
	BEGIN
		v_result := CASE p_task
			WHEN 'release_reservations' THEN oms._maintenance_release_reservations()
			WHEN 'redrive_sagas' THEN
				oms._maintenance_redrive_sagas(pg_catalog.current_setting('oms.worker_batch_size')::integer)
			WHEN 'expire_pending_orders' THEN oms._maintenance_expire_pending_orders(1000)
			WHEN 'purge_idempotency_keys' THEN oms._maintenance_purge_idempotency_keys()
			WHEN 'prune' THEN oms._maintenance_prune(10000)
		END;
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
		v_failed := true;
		v_result := pg_catalog.jsonb_build_object('error',
			pg_catalog.jsonb_build_object('sqlstate', v_state, 'message', v_message));
		RAISE WARNING 'oms: maintenance task % failed: % (SQLSTATE %)', p_task, v_message, v_state;
	END;
	UPDATE oms.maintenance_tasks AS t
	SET last_started_at = v_started, last_finished_at = pg_catalog.clock_timestamp(),
		last_run_by = p_run_by, last_result = v_result, runs = t.runs + 1,
		failures = t.failures + CASE WHEN v_failed THEN 1 ELSE 0 END,
		last_error = CASE WHEN v_failed THEN v_message ELSE t.last_error END,
		last_error_at = CASE WHEN v_failed THEN v_started ELSE t.last_error_at END
	WHERE t.task = p_task;
	RETURN v_result;
END;
$$;
COMMENT ON FUNCTION oms._run_maintenance_task(text, text) IS
	'Runs one maintenance task (skipped when another session runs it), records the run, returns its result';

/*
 * Runs one task by name, or all of them (NULL).  Behind oms_run_maintenance
 * and the pg_cron jobs, which call it by this name: a job runs as a
 * superuser, and this schema, unlike the extension's, only the extension's
 * owner can change.
 */
CREATE OR REPLACE FUNCTION oms._run_maintenance(p_task text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_tasks text[] := oms._maintenance_task_names();
	v_task text;
	v_run_by text := coalesce(nullif(current_setting('application_name'), ''), session_user::text);
	v_result jsonb := '{}';
BEGIN
	IF p_task IS NOT NULL AND NOT p_task = ANY (v_tasks) THEN
		RAISE EXCEPTION 'unknown maintenance task "%"', left(p_task, 100)
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('The tasks are: %s.', array_to_string(v_tasks, ', ')),
				  HINT = 'Pass NULL to run every task.';
	END IF;
	FOREACH v_task IN ARRAY v_tasks
	LOOP
		CONTINUE WHEN p_task IS NOT NULL AND v_task <> p_task;
		v_result := v_result || jsonb_build_object(v_task, oms._run_maintenance_task(v_task, v_run_by));
	END LOOP;
	RETURN v_result;
END;
$$;
COMMENT ON FUNCTION oms._run_maintenance(text) IS
	'Runs one maintenance task by name, or all of them (NULL): oms_run_maintenance and the pg_cron jobs call it';

CREATE OR REPLACE FUNCTION @extschema@.oms_run_maintenance(task text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN oms._run_maintenance(oms_run_maintenance.task);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_run_maintenance(text) IS
	'Runs one maintenance task by name, or all of them (NULL), records each run in oms.maintenance_tasks and returns what each did';

/*
 * The schema of pg_cron's objects when the extension is installed in this
 * database, else NULL.  pg_cron always creates them in schema cron (the
 * extension itself is registered in the schema it was created from).
 * pg_cron is optional: its objects are only ever reached through dynamic
 * SQL built from this.
 */
CREATE OR REPLACE FUNCTION oms._cron_schema()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT 'cron' FROM pg_catalog.pg_extension AS e
	WHERE e.extname = 'pg_cron' AND pg_catalog.to_regclass('cron.job') IS NOT NULL;
$$;
COMMENT ON FUNCTION oms._cron_schema() IS 'The schema of the pg_cron extension in this database, or NULL';

-- 55000 with a hint when pg_cron is not usable from this database.
CREATE OR REPLACE FUNCTION oms._require_cron()
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_schema text := oms._cron_schema();
	v_cron_db text := pg_catalog.current_setting('cron.database_name', true);
BEGIN
	IF v_schema IS NOT NULL THEN
		RETURN v_schema;
	END IF;
	IF v_cron_db IS NOT NULL AND v_cron_db <> pg_catalog.current_database() THEN
		RAISE EXCEPTION 'pg_cron runs in database "%", not in this one', v_cron_db
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('pg_cron reads its jobs from cron.database_name (%s) only, and oms schedules its jobs through the pg_cron extension of the current database (%s).',
											 v_cron_db, pg_catalog.current_database()),
				  HINT = pg_catalog.format('In database %s, run the statements of the schedule_sql column of oms_maintenance_jobs(), or leave maintenance to the oms worker (oms.maintenance_interval).',
										   v_cron_db);
	END IF;
	RAISE EXCEPTION 'pg_cron is not installed in this database'
		USING ERRCODE = 'object_not_in_prerequisite_state',
			  HINT = pg_catalog.format('Add pg_cron to shared_preload_libraries, set cron.database_name = ''%s'', restart, then CREATE EXTENSION pg_cron; or leave maintenance to the oms worker (oms.maintenance_interval).',
									   pg_catalog.current_database());
END;
$$;
COMMENT ON FUNCTION oms._require_cron() IS
	'Returns the pg_cron schema, or raises 55000 saying why pg_cron cannot be used from this database';

CREATE OR REPLACE FUNCTION oms._maintenance_jobs(p_schedules jsonb)
RETURNS TABLE (task text, job_name text, schedule text, command text, schedule_sql text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_tasks text[] := oms._maintenance_task_names();
	v_key text;
BEGIN
	PERFORM oms._check_not_null('schedules', p_schedules);
	IF jsonb_typeof(p_schedules) <> 'object' THEN
		RAISE EXCEPTION 'schedules must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Map task names to pg_cron schedules, e.g. {"prune": "17 * * * *"}; null leaves a task to the worker.';
	END IF;
	FOR v_key IN SELECT k FROM jsonb_object_keys(p_schedules) AS k ORDER BY 1
	LOOP
		IF NOT v_key = ANY (v_tasks) THEN
			RAISE EXCEPTION 'unknown maintenance task "%"', left(v_key, 100)
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = format('The tasks are: %s.', array_to_string(v_tasks, ', '));
		END IF;
		IF jsonb_typeof(p_schedules -> v_key) NOT IN ('string', 'null') THEN
			RAISE EXCEPTION 'the schedule of maintenance task "%" must be a string or null', v_key
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
	END LOOP;
	RETURN QUERY
		SELECT j.task, j.job_name, j.schedule, j.command,
			   format('SELECT cron.schedule_in_database(%L, %L, %L, %L);',
					  j.job_name, j.schedule, j.command, current_database())
		FROM (SELECT t.task, t.position,
					 format('oms-%s-%s', current_database(), t.task) AS job_name,
					 CASE WHEN p_schedules ? t.task
						  THEN p_schedules ->> t.task
						  ELSE t.default_schedule END AS schedule,
					 format('SELECT oms._run_maintenance(%L)', t.task) AS command
			  FROM oms.maintenance_tasks AS t) AS j
		WHERE j.schedule IS NOT NULL
		ORDER BY j.position;
END;
$$;
COMMENT ON FUNCTION oms._maintenance_jobs(jsonb) IS
	'The pg_cron jobs of the maintenance tasks for a schedules map: oms_maintenance_jobs for oms''s own code';

CREATE OR REPLACE FUNCTION @extschema@.oms_maintenance_jobs(schedules jsonb DEFAULT '{}')
RETURNS TABLE (task text, job_name text, schedule text, command text, schedule_sql text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN QUERY SELECT * FROM oms._maintenance_jobs(oms_maintenance_jobs.schedules);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_maintenance_jobs(jsonb) IS
	'The pg_cron jobs oms_schedule_maintenance() registers: name, schedule and command per task, and the cron.schedule_in_database() call for a pg_cron that runs in another database';

/*
 * Registers one pg_cron job per task, named oms-<database>-<task>, and
 * records it in oms.maintenance_tasks so the worker leaves the task alone.
 * pg_cron's cron.schedule(name, ...) replaces a job of the same name and
 * user, so running this again updates the jobs instead of adding more.
 * The jobs belong to (and run as) the owner of this function, the
 * extension's owner.
 */
CREATE OR REPLACE FUNCTION @extschema@.oms_schedule_maintenance(schedules jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_cron text;
	v_job record;
	v_task record;
	v_old record;
	v_jobid bigint;
	v_action text;
	v_jobs jsonb := '[]';
	v_removed jsonb := '[]';
BEGIN
	-- Arguments first: a bad schedules map fails the same with or without pg_cron.
	PERFORM 1 FROM oms._maintenance_jobs(oms_schedule_maintenance.schedules);
	v_cron := oms._require_cron();

	FOR v_task IN SELECT t.task, t.position FROM oms.maintenance_tasks AS t ORDER BY t.position FOR UPDATE
	LOOP
		SELECT * INTO v_job FROM oms._maintenance_jobs(oms_schedule_maintenance.schedules) AS j
		WHERE j.task = v_task.task;
		EXECUTE format('SELECT j.jobid, j.schedule, j.command FROM %I.job AS j WHERE j.jobname = $1 AND j.username = current_user', v_cron)
			INTO v_old USING format('oms-%s-%s', current_database(), v_task.task);
		IF v_job.task IS NULL THEN
			-- null schedule: this task goes back to the worker.
			IF v_old.jobid IS NOT NULL THEN
				EXECUTE format('SELECT %I.unschedule($1)', v_cron) USING v_old.jobid;
				v_removed := v_removed || jsonb_build_object('task', v_task.task, 'jobid', v_old.jobid);
			END IF;
			UPDATE oms.maintenance_tasks AS t
			SET cron_database = NULL, cron_job_name = NULL, cron_jobid = NULL, cron_schedule = NULL,
				cron_scheduled_at = NULL
			WHERE t.task = v_task.task;
			CONTINUE;
		END IF;
		IF v_old.jobid IS NOT NULL AND v_old.schedule = v_job.schedule AND v_old.command = v_job.command THEN
			v_jobid := v_old.jobid;
			v_action := 'unchanged';
		ELSE
			EXECUTE format('SELECT %I.schedule($1, $2, $3)', v_cron)
				INTO v_jobid USING v_job.job_name, v_job.schedule, v_job.command;
			v_action := CASE WHEN v_old.jobid IS NULL THEN 'created' ELSE 'updated' END;
		END IF;
		UPDATE oms.maintenance_tasks AS t
		SET cron_database = current_database(), cron_job_name = v_job.job_name, cron_jobid = v_jobid,
			cron_schedule = v_job.schedule, cron_scheduled_at = now()
		WHERE t.task = v_task.task;
		v_jobs := v_jobs || jsonb_build_object('task', v_task.task, 'job_name', v_job.job_name, 'jobid', v_jobid,
											   'schedule', v_job.schedule, 'command', v_job.command,
											   'action', v_action);
	END LOOP;
	RETURN jsonb_build_object('database', current_database(), 'jobs', v_jobs, 'unscheduled', v_removed);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_schedule_maintenance(jsonb) IS
	'Registers (or updates) one pg_cron job per maintenance task, oms-<database>-<task>; the worker then leaves those tasks to pg_cron';

CREATE OR REPLACE FUNCTION @extschema@.oms_unschedule_maintenance()
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_cron text := oms._require_cron();
	v_task record;
	v_jobid bigint;
	v_removed jsonb := '[]';
BEGIN
	FOR v_task IN SELECT t.task FROM oms.maintenance_tasks AS t ORDER BY t.position FOR UPDATE
	LOOP
		EXECUTE format('SELECT j.jobid FROM %I.job AS j WHERE j.jobname = $1 AND j.username = current_user', v_cron)
			INTO v_jobid USING format('oms-%s-%s', current_database(), v_task.task);
		IF v_jobid IS NOT NULL THEN
			EXECUTE format('SELECT %I.unschedule($1)', v_cron) USING v_jobid;
			v_removed := v_removed || jsonb_build_object('task', v_task.task,
				'job_name', format('oms-%s-%s', current_database(), v_task.task), 'jobid', v_jobid);
		END IF;
		UPDATE oms.maintenance_tasks AS t
		SET cron_database = NULL, cron_job_name = NULL, cron_jobid = NULL, cron_schedule = NULL,
			cron_scheduled_at = NULL
		WHERE t.task = v_task.task;
	END LOOP;
	RETURN jsonb_build_object('database', current_database(), 'removed', v_removed);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_unschedule_maintenance() IS
	'Removes the pg_cron jobs of oms_schedule_maintenance(); the worker runs maintenance again';

/*
 * Whether pg_cron runs a task: recorded by oms_schedule_maintenance(), and
 * the job still exists and is active.  A job removed behind our back (by
 * cron.unschedule, or DROP EXTENSION pg_cron) hands the task back to the
 * worker, and the stale record is cleared.
 */
CREATE OR REPLACE FUNCTION oms._cron_runs_task(p_task oms.maintenance_tasks)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_cron text;
	v_active boolean;
BEGIN
	IF p_task.cron_jobid IS NULL THEN
		RETURN false;
	END IF;
	v_cron := oms._cron_schema();
	IF v_cron IS NOT NULL THEN
		EXECUTE pg_catalog.format('SELECT j.active FROM %I.job AS j WHERE j.jobid = $1', v_cron)
			INTO v_active USING p_task.cron_jobid;
		IF v_active THEN
			RETURN true;
		END IF;
	END IF;
	UPDATE oms.maintenance_tasks AS t
	SET cron_database = NULL, cron_job_name = NULL, cron_jobid = NULL, cron_schedule = NULL,
		cron_scheduled_at = NULL
	WHERE t.task = p_task.task;
	RETURN false;
END;
$$;
COMMENT ON FUNCTION oms._cron_runs_task(oms.maintenance_tasks) IS
	'True when the pg_cron job recorded for a task exists and is active; otherwise clears the record';

-- What the worker calls every oms.maintenance_interval (src/worker.c).
CREATE OR REPLACE FUNCTION oms._maintenance_tick()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_interval interval := pg_catalog.current_setting('oms.maintenance_interval')::interval;
	v_task oms.maintenance_tasks;
	v_ran integer := 0;
BEGIN
	FOR v_task IN SELECT * FROM oms.maintenance_tasks AS t ORDER BY t.position
	LOOP
		CONTINUE WHEN oms._cron_runs_task(v_task);
		-- Due after its period, or at once when the last run left work
		-- behind (a full batch).  Ticks come every maintenance_interval;
		-- half an interval of slack keeps a task whose period equals the
		-- interval from skipping every other tick.
		CONTINUE WHEN v_task.last_started_at IS NOT NULL
			AND v_task.last_started_at > pg_catalog.now() - GREATEST(v_task.period, v_interval) + v_interval / 2
			AND NOT coalesce((v_task.last_result ->> 'more')::boolean, false);
		PERFORM oms._run_maintenance_task(v_task.task, 'worker');
		v_ran := v_ran + 1;
	END LOOP;
	RETURN v_ran;
END;
$$;
COMMENT ON FUNCTION oms._maintenance_tick() IS
	'The worker''s maintenance round: runs the tasks pg_cron does not run whose period has passed; returns how many ran';

-- The catalogue of metric families, in exposition order.  oms_metrics()
-- prints HELP and TYPE from here, also for a family with no sample.
-- ROWS: the function is not inlined (its search_path is pinned), and the
-- default estimate of 1000 rows makes plans of the view cost enough for JIT.
CREATE OR REPLACE FUNCTION oms._metric_families()
RETURNS TABLE (family text, type text, help text, ord integer)
LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 25
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT f.family, f.type, f.help, f.ord
	FROM (VALUES
		(1, 'oms_orders_by_status', 'gauge', 'Orders in each status.'),
		(2, 'oms_orders_created_total', 'counter', 'Orders created.'),
		(3, 'oms_sagas_started_total', 'counter', 'Sagas started, by kind (fulfilment, refund).'),
		(4, 'oms_saga_outcomes_total', 'counter', 'Sagas finished, by kind and outcome (confirmed, refunded, failed, canceled).'),
		(5, 'oms_sagas_in_flight', 'gauge', 'Sagas running or compensating.'),
		(6, 'oms_sagas_stuck', 'gauge', 'Sagas whose compensation could not finish and waits for an operator.'),
		(7, 'oms_saga_oldest_due_age_seconds', 'gauge', 'How long the most overdue saga step has been due; 0 when none is due.'),
		(8, 'oms_saga_step_duration_seconds', 'histogram', 'Time from the first attempt of a saga step to its successful completion, retries and waits included.'),
		(9, 'oms_saga_step_retries_total', 'counter', 'Saga step attempts after the first one (forward direction).'),
		(10, 'oms_outbox_pending_events', 'gauge', 'Events in the outbox not yet acknowledged by Kafka.'),
		(11, 'oms_outbox_oldest_pending_age_seconds', 'gauge', 'Age of the oldest event in the outbox; 0 when the outbox is empty.'),
		(12, 'oms_outbox_backing_off_events', 'gauge', 'Outbox events waiting for their next attempt after a failed publish.'),
		(13, 'oms_relay_published_events_total', 'counter', 'Events acknowledged by Kafka since the server started.'),
		(14, 'oms_relay_publish_failures_total', 'counter', 'Failed publish attempts since the server started.'),
		(15, 'oms_relay_batches_total', 'counter', 'Relay batches settled since the server started.'),
		(16, 'oms_relay_breaker_open', 'gauge', '1 while the relay circuit breaker is open or half open, else 0.'),
		(17, 'oms_dead_letters_open', 'gauge', 'Dead letters not replayed, by kind.'),
		(18, 'oms_dead_letters_created_total', 'counter', 'Dead letters created, by kind.'),
		(19, 'oms_worker_up', 'gauge', '1 while the background worker of this database runs, else 0.'),
		(20, 'oms_worker_last_loop_age_seconds', 'gauge', 'Time since the worker of this database last looped; no sample before its first loop.'),
		(21, 'oms_worker_loops_total', 'counter', 'Worker loops since the server started.'),
		(22, 'oms_worker_units_total', 'counter', 'Units of work (saga steps and similar) the worker did since the server started.'),
		(23, 'oms_inbox_replies_total', 'counter', 'Payment replies consumed since the server started, by result (applied, duplicate, late, rejected, other).'),
		(24, 'oms_inbox_reply_failures_total', 'counter', 'Payment reply transactions that failed and were retried since the server started.'),
		(25, 'oms_inbox_lag_messages', 'gauge', 'Payment replies waiting in Kafka behind the consumer; no sample while unknown.')
	) AS f(ord, family, type, help);
$$;
COMMENT ON FUNCTION oms._metric_families() IS
	'The metric families of oms.metrics and oms_metrics(), in exposition order: name, type (counter, gauge, histogram) and help text';

-- Upper bounds of the saga step duration histogram, in seconds.  Steps of
-- the built-in provider take milliseconds; remote payments and retries
-- with backoff take seconds to minutes.
CREATE OR REPLACE FUNCTION oms._metric_step_buckets()
RETURNS double precision[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT '{0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,300,900,3600}'::double precision[];
$$;
COMMENT ON FUNCTION oms._metric_step_buckets() IS
	'Upper bounds (le) in seconds of the buckets of oms_saga_step_duration_seconds, ascending; +Inf comes on top';

-- A label value or HELP text in the exposition format: backslash and
-- newline escaped, and the double quote too inside a label value.
CREATE OR REPLACE FUNCTION oms._prom_escape(p_text text, p_quote boolean)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN p_quote
				THEN pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(p_text, E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n')
				ELSE pg_catalog.replace(pg_catalog.replace(p_text, E'\\', E'\\\\'), E'\n', E'\\n') END;
$$;
COMMENT ON FUNCTION oms._prom_escape(text, boolean) IS
	'Escapes text for the Prometheus exposition format: backslash and newline, and the double quote when p_quote (label values)';

-- {label="value",...} from a jsonb object; le goes last, as Prometheus
-- clients print it; nothing for no labels.
CREATE OR REPLACE FUNCTION oms._prom_labels(p_labels jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT COALESCE('{' || pg_catalog.string_agg(l.key || '="' || oms._prom_escape(l.value, true) || '"', ','
												  ORDER BY l.key = 'le', l.key) || '}', '')
	FROM pg_catalog.jsonb_each_text(p_labels) AS l;
$$;
COMMENT ON FUNCTION oms._prom_labels(jsonb) IS
	'The label set of a sample in the Prometheus exposition format, e.g. {kind="refund",step="refund_payment"}';

CREATE OR REPLACE FUNCTION oms._prom_value(p_value double precision)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN p_value = 'Infinity' THEN '+Inf'
				WHEN p_value = '-Infinity' THEN '-Inf'
				WHEN p_value = 'NaN' THEN 'NaN'
				ELSE p_value::text END;
$$;
COMMENT ON FUNCTION oms._prom_value(double precision) IS
	'A sample value in the Prometheus exposition format (+Inf, -Inf and NaN spelled its way)';

CREATE OR REPLACE FUNCTION @extschema@.oms_metrics()
RETURNS text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- The planner's cost of the view is far above jit_above_cost (its CTE row
-- estimates are blind), and compiling it takes seconds for a query that
-- runs in milliseconds to a few hundred.
SET jit = off
AS $$
	-- The view is read once: filtered per family, each family would scan
	-- its tables again (several families share oms.saga_steps).
	WITH samples AS MATERIALIZED (SELECT * FROM oms.metrics)
	SELECT pg_catalog.string_agg(b.block, '' ORDER BY b.ord)
	FROM (SELECT f.ord,
				 '# HELP ' || f.family || ' ' || oms._prom_escape(f.help, false) || E'\n'
				 || '# TYPE ' || f.family || ' ' || f.type || E'\n'
				 || COALESCE((SELECT pg_catalog.string_agg(
									 m.metric || oms._prom_labels(m.labels) || ' ' || oms._prom_value(m.value) || E'\n', ''
									 ORDER BY m.labels - 'le',
											  CASE m.metric WHEN f.family || '_sum' THEN 1
															WHEN f.family || '_count' THEN 2 ELSE 0 END,
											  (m.labels ->> 'le')::double precision)
							  FROM samples AS m WHERE m.family = f.family), '') AS block
		  FROM oms._metric_families() AS f) AS b;
$$;
COMMENT ON FUNCTION @extschema@.oms_metrics() IS
	'The metrics of this database in the Prometheus text exposition format (version 0.0.4), for a scrape endpoint';

CREATE OR REPLACE FUNCTION oms._health_count_cap()
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT 10000;
$$;
COMMENT ON FUNCTION oms._health_count_cap() IS
	'oms_health() counts rows up to this many (10000) and then reports the count as capped';

CREATE OR REPLACE FUNCTION oms._interval_ms(p_interval interval)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.round(EXTRACT(epoch FROM p_interval) * 1000)::bigint;
$$;
COMMENT ON FUNCTION oms._interval_ms(interval) IS 'An interval in whole milliseconds (null stays null)';

-- "75 s", "0.5 s": durations in the human text of a reason.
CREATE OR REPLACE FUNCTION oms._health_seconds(p_interval interval)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.trim_scale(pg_catalog.round(EXTRACT(epoch FROM p_interval), 1)) || ' s';
$$;
COMMENT ON FUNCTION oms._health_seconds(interval) IS 'A duration for people, in seconds with at most one decimal';

-- How long ago p_at was, never negative (a worker may loop after p_now was
-- taken); null when p_at is null.
CREATE OR REPLACE FUNCTION oms._health_age(p_at timestamptz, p_now timestamptz)
RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN p_at IS NOT NULL THEN GREATEST(p_now - p_at, interval '0') END;
$$;
COMMENT ON FUNCTION oms._health_age(timestamptz, timestamptz) IS
	'p_now - p_at, at least zero; null when p_at is null';

/*
 * The health document of the current database.  p_memory holds what the
 * caller read from shared memory and from server-wide settings:
 *   workers         jsonb array of oms_worker_status() rows
 *   worker_enabled  oms.worker_enabled
 *   relay_enabled   oms.kafka_brokers is not empty
 *   relay           oms._relay_shmem_status() as jsonb (null: not served)
 *   inbox           oms._inbox_shmem_status() (null: not served)
 * p_now is the time ages are measured against.  Thresholds and
 * oms.payment_provider are read here, as the calling session sees them.
 */
CREATE OR REPLACE FUNCTION oms._health(p_memory jsonb, p_now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_cap constant integer := oms._health_count_cap();
	v_worker_timeout interval := pg_catalog.current_setting('oms.health_worker_timeout')::interval;
	v_outbox_lag interval := pg_catalog.current_setting('oms.health_outbox_lag')::interval;
	v_saga_lag interval := pg_catalog.current_setting('oms.health_saga_lag')::interval;
	v_inbox_lag bigint := pg_catalog.current_setting('oms.health_inbox_lag')::bigint;
	v_dead_threshold bigint := pg_catalog.current_setting('oms.health_dead_letters')::bigint;
	v_kafka_provider boolean := pg_catalog.current_setting('oms.payment_provider') = 'kafka';
	v_worker_enabled boolean := coalesce((p_memory ->> 'worker_enabled')::boolean, false);
	v_relay_enabled boolean := coalesce((p_memory ->> 'relay_enabled')::boolean, false);
	v_relay jsonb := coalesce(p_memory -> 'relay', '{}');
	v_inbox jsonb := coalesce(p_memory -> 'inbox', '{}');
	v_db text := pg_catalog.current_database();
	v_reasons jsonb := '[]';
	v_worker jsonb;
	v_workers jsonb;
	v_served boolean;
	v_alive boolean;
	v_last_loop timestamptz;
	v_loop_age interval;
	v_due bigint;
	v_oldest_due timestamptz;
	v_overdue interval;
	v_stuck bigint;
	v_pending bigint;
	v_oldest_pending timestamptz;
	v_pending_age interval;
	v_backing_off bigint;
	v_breaker text;
	v_consumer text;
	v_lag bigint;
	v_by_kind jsonb;
	v_open bigint;
	v_actionable bigint;
	v_dead_capped boolean;
BEGIN
	-- Workers: every served database, and this database's own.
	SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
				'database', w ->> 'database',
				'pid', w -> 'pid',
				'alive', coalesce((w ->> 'alive')::boolean, false),
				'last_loop', w -> 'last_loop',
				'last_loop_age_ms', oms._interval_ms(oms._health_age((w ->> 'last_loop')::timestamptz, p_now)))
			ORDER BY o.n), '[]')
	INTO v_workers
	FROM pg_catalog.jsonb_array_elements(coalesce(p_memory -> 'workers', '[]')) WITH ORDINALITY AS o(w, n);
	SELECT w INTO v_worker
	FROM pg_catalog.jsonb_array_elements(coalesce(p_memory -> 'workers', '[]')) AS w
	WHERE w ->> 'database' = v_db
	LIMIT 1;
	v_served := v_worker IS NOT NULL;
	v_alive := coalesce((v_worker ->> 'alive')::boolean, false);
	v_last_loop := (v_worker ->> 'last_loop')::timestamptz;
	v_loop_age := oms._health_age(v_last_loop, p_now);

	IF NOT v_served THEN
		v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'not_served', 'severity', 'down',
			'message', pg_catalog.format('database "%s" is not in oms.database_name: no worker runs its sagas or publishes its events', v_db));
	ELSE
		IF NOT v_worker_enabled THEN
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'worker_paused', 'severity', 'down',
				'message', 'oms.worker_enabled is off: the worker runs no sagas and publishes nothing');
		END IF;
		IF NOT v_alive THEN
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'worker_not_running', 'severity', 'down',
				'message', pg_catalog.format('no worker process serves database "%s"', v_db));
		ELSIF v_last_loop IS NULL OR v_loop_age > v_worker_timeout THEN
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'worker_stalled', 'severity', 'down',
				'message', CASE WHEN v_last_loop IS NULL THEN 'the worker has not finished a loop yet'
								ELSE pg_catalog.format('the worker''s last loop ended %s ago (threshold %s)',
									oms._health_seconds(v_loop_age), oms._health_seconds(v_worker_timeout)) END);
		END IF;
	END IF;

	-- Sagas: the due ones (partial index sagas_due_idx) and the stuck ones.
	SELECT pg_catalog.count(*) INTO v_due
	FROM (SELECT FROM oms.sagas AS s
		  WHERE s.status IN ('running', 'compensating') AND s.next_run_at <= p_now
		  LIMIT v_cap) AS d;
	SELECT pg_catalog.min(s.next_run_at) INTO v_oldest_due
	FROM oms.sagas AS s
	WHERE s.status IN ('running', 'compensating');
	IF v_oldest_due > p_now THEN
		v_oldest_due := NULL;
	END IF;
	v_overdue := p_now - v_oldest_due;
	SELECT pg_catalog.count(*) INTO v_stuck
	FROM (SELECT FROM oms.sagas AS s WHERE s.status = 'stuck' LIMIT v_cap) AS d;
	IF v_overdue > v_saga_lag THEN
		v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'saga_lag', 'severity', 'degraded',
			'message', pg_catalog.format('the oldest due saga step is %s overdue (threshold %s); due sagas: %s%s',
				oms._health_seconds(v_overdue), oms._health_seconds(v_saga_lag), v_due,
				CASE WHEN v_due >= v_cap THEN ' or more' ELSE '' END));
	END IF;
	IF v_stuck > 0 THEN
		v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'sagas_stuck', 'severity', 'degraded',
			'message', pg_catalog.format('%s saga%s stuck: a compensation failed for good and waits for oms_retry_dead_letter()',
				v_stuck, CASE WHEN v_stuck = 1 THEN ' is' ELSE 's are' END));
	END IF;

	-- Outbox: oldest through outbox_created_idx, failed ones through outbox_failed_idx.
	SELECT pg_catalog.count(*) INTO v_pending
	FROM (SELECT FROM oms.outbox AS o LIMIT v_cap) AS d;
	SELECT pg_catalog.min(o.created_at) INTO v_oldest_pending FROM oms.outbox AS o;
	v_pending_age := oms._health_age(v_oldest_pending, p_now);
	SELECT pg_catalog.count(*) INTO v_backing_off
	FROM (SELECT FROM oms.outbox AS o WHERE o.attempts > 0 AND o.next_attempt_at > p_now LIMIT v_cap) AS d;
	v_breaker := coalesce(v_relay ->> 'breaker', 'closed');
	IF v_relay_enabled THEN
		IF v_breaker <> 'closed' THEN
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'breaker_open', 'severity', 'degraded',
				'message', pg_catalog.format('the relay''s circuit breaker is %s: Kafka did not acknowledge the last batches', v_breaker));
		END IF;
		IF v_pending_age > v_outbox_lag THEN
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'outbox_lag', 'severity', 'degraded',
				'message', pg_catalog.format('the oldest unpublished event is %s old (threshold %s); pending events: %s%s',
					oms._health_seconds(v_pending_age), oms._health_seconds(v_outbox_lag), v_pending,
					CASE WHEN v_pending >= v_cap THEN ' or more' ELSE '' END));
		END IF;
	END IF;

	-- The reply consumer of the remote payment provider.
	v_consumer := CASE WHEN v_served AND v_alive THEN coalesce(v_inbox ->> 'consumer', 'off') ELSE 'off' END;
	v_lag := (v_inbox ->> 'lag')::bigint;
	IF v_kafka_provider THEN
		IF v_consumer = 'bad_config' THEN
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'consumer_bad_config', 'severity', 'degraded',
				'message', 'the payment reply consumer refused its settings: ' || coalesce(v_inbox ->> 'last_error', 'no error recorded'));
		ELSIF v_consumer = 'off' AND v_served AND v_alive AND v_worker_enabled THEN
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'consumer_off', 'severity', 'degraded',
				'message', 'oms.payment_provider is kafka but no reply consumer runs (is oms.kafka_brokers empty?): payments wait until they time out');
		END IF;
		IF v_lag > v_inbox_lag THEN
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'inbox_lag', 'severity', 'degraded',
				'message', pg_catalog.format('%s payment replies wait in Kafka (threshold %s)', v_lag, v_inbox_lag));
		END IF;
	END IF;

	-- Open dead letters per kind (dead_letters_open_kind_idx).
	SELECT pg_catalog.jsonb_object_agg(k.kind, k.n), pg_catalog.sum(k.n),
		   pg_catalog.sum(k.n) FILTER (WHERE k.kind IN ('compensation_stuck', 'publish')),
		   pg_catalog.bool_or(k.n >= v_cap)
	INTO v_by_kind, v_open, v_actionable, v_dead_capped
	FROM (SELECT kinds.kind,
				 (SELECT pg_catalog.count(*)
				  FROM (SELECT FROM oms.dead_letters AS d
						WHERE d.status = 'open' AND d.kind = kinds.kind LIMIT v_cap) AS x) AS n
		  FROM pg_catalog.unnest(ARRAY['saga_failed', 'compensation_stuck', 'publish', 'reply', 'late_reply'])
			   AS kinds(kind)) AS k;
	IF v_dead_threshold > 0 AND v_actionable >= v_dead_threshold THEN
		v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'dead_letters', 'severity', 'degraded',
			'message', pg_catalog.format('open dead letters waiting for an operator: %s%s (threshold %s; compensation_stuck %s, publish %s)',
				v_actionable, CASE WHEN v_dead_capped THEN ' or more' ELSE '' END, v_dead_threshold,
				v_by_kind -> 'compensation_stuck', v_by_kind -> 'publish'));
	END IF;

	RETURN pg_catalog.jsonb_build_object(
		-- The worst severity among the reasons.
		'status', CASE WHEN v_reasons @> '[{"severity": "down"}]' THEN 'down'
					   WHEN v_reasons <> '[]' THEN 'degraded'
					   ELSE 'ok' END,
		'reasons', v_reasons,
		'database', v_db,
		'checked_at', p_now,
		'thresholds', pg_catalog.jsonb_build_object(
			'worker_timeout_ms', oms._interval_ms(v_worker_timeout),
			'outbox_lag_ms', oms._interval_ms(v_outbox_lag),
			'saga_lag_ms', oms._interval_ms(v_saga_lag),
			'inbox_lag', v_inbox_lag,
			'dead_letters', v_dead_threshold),
		'worker', pg_catalog.jsonb_build_object(
			'served', v_served,
			'enabled', v_worker_enabled,
			'alive', v_alive,
			'pid', v_worker -> 'pid',
			'last_loop', v_worker -> 'last_loop',
			'last_loop_age_ms', oms._interval_ms(v_loop_age)),
		'workers', v_workers,
		'sagas', pg_catalog.jsonb_build_object(
			'due', v_due,
			'oldest_due_age_ms', oms._interval_ms(v_overdue),
			'stuck', v_stuck,
			'capped', v_due >= v_cap OR v_stuck >= v_cap),
		'outbox', pg_catalog.jsonb_build_object(
			'relay_enabled', v_relay_enabled,
			'pending', v_pending,
			'oldest_pending_age_ms', oms._interval_ms(v_pending_age),
			'backing_off', v_backing_off,
			'breaker', v_breaker,
			'breaker_opened_at', v_relay -> 'breaker_opened_at',
			'last_publish_at', v_relay -> 'last_publish_at',
			'capped', v_pending >= v_cap OR v_backing_off >= v_cap),
		'inbox', pg_catalog.jsonb_build_object(
			'enabled', v_kafka_provider,
			'consumer', v_consumer,
			'lag', v_lag,
			'lag_at', v_inbox -> 'lag_at',
			'last_reply_at', v_inbox -> 'last_reply_at'),
		'dead_letters', pg_catalog.jsonb_build_object(
			'open', v_open,
			'actionable', v_actionable,
			'by_kind', v_by_kind,
			'capped', v_dead_capped),
		'last_errors', pg_catalog.jsonb_build_object(
			'worker', CASE WHEN v_worker ->> 'last_error_at' IS NOT NULL THEN
				pg_catalog.jsonb_build_object('message', v_worker -> 'last_error', 'at', v_worker -> 'last_error_at') END,
			'relay', CASE WHEN v_relay ->> 'last_error_at' IS NOT NULL THEN
				pg_catalog.jsonb_build_object('message', v_relay -> 'last_error', 'at', v_relay -> 'last_error_at') END,
			'consumer', CASE WHEN v_inbox ->> 'last_error_at' IS NOT NULL THEN
				pg_catalog.jsonb_build_object('message', v_inbox -> 'last_error', 'at', v_inbox -> 'last_error_at') END));
END;
$$;
COMMENT ON FUNCTION oms._health(jsonb, timestamptz) IS
	'The rules of oms_health(): the health document of this database from the given shared-memory state and clock';

CREATE OR REPLACE FUNCTION @extschema@.oms_health()
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN oms._health(jsonb_build_object(
		'workers', (SELECT coalesce(jsonb_agg(to_jsonb(w)), '[]') FROM oms._worker_status() AS w),
		'worker_enabled', current_setting('oms.worker_enabled')::boolean,
		'relay_enabled', current_setting('oms.kafka_brokers') <> '',
		'relay', (SELECT to_jsonb(r) FROM oms._relay_shmem_status() AS r),
		'inbox', oms._inbox_shmem_status()),
		clock_timestamp());
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_health() IS
	'Health of oms in this database as jsonb: status (ok, degraded, down), reasons, thresholds, and the worker, workers, sagas, outbox, inbox, dead_letters and last_errors behind them';

--
-- Privileges: nothing for PUBLIC, and the new entry points for their roles.
--

DO $$
DECLARE
	v_function regprocedure;
BEGIN
	FOR v_function IN
		SELECT d.objid::regprocedure FROM pg_catalog.pg_depend AS d
		WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.deptype = 'e'
		  AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension AS e WHERE e.extname = 'oms')
	LOOP
		EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', v_function);
	END LOOP;
END;
$$;
GRANT EXECUTE ON FUNCTION @extschema@.oms_create_order(text, text, text, text, jsonb) TO oms_app;
GRANT EXECUTE ON FUNCTION oms._run_maintenance(text) TO oms_admin;

--
-- pg_cron jobs of this database call oms._run_maintenance now, in schema
-- oms, which only the extension's owner can change; the commands of 0.1.0
-- named the extension's schema.  Jobs registered from pg_cron's own
-- database (oms_maintenance_jobs) are not in reach here: run the new
-- schedule_sql there (see the release notes in README.md).
--
DO $$
DECLARE
	v_task record;
BEGIN
	IF pg_catalog.to_regclass('cron.job') IS NULL THEN
		RETURN;
	END IF;
	FOR v_task IN
		SELECT t.task, t.cron_jobid FROM oms.maintenance_tasks AS t
		WHERE t.cron_jobid IS NOT NULL AND t.cron_database = pg_catalog.current_database()
	LOOP
		EXECUTE 'SELECT cron.alter_job(job_id := $1, command := $2)'
			USING v_task.cron_jobid, pg_catalog.format('SELECT oms._run_maintenance(%L)', v_task.task);
	END LOOP;
END;
$$;

--
-- The safety net of the fresh script (src/sql/checks.sql).
--

DO $$
DECLARE
	v_bad text;
BEGIN
	SELECT pg_catalog.string_agg(p.oid::pg_catalog.regprocedure::text, ', ') INTO v_bad
	FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_proc AS p ON p.oid = d.objid
	WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.deptype = 'e'
	  AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension AS e WHERE e.extname = 'oms')
	  AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false);
	IF v_bad IS NOT NULL THEN
		RAISE EXCEPTION 'oms functions without SET search_path = pg_catalog, pg_temp: %', v_bad;
	END IF;

	SELECT pg_catalog.string_agg(p.oid::pg_catalog.regprocedure::text, ', ') INTO v_bad
	FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_proc AS p ON p.oid = d.objid
	WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.deptype = 'e'
	  AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension AS e WHERE e.extname = 'oms')
	  AND (p.proacl IS NULL
		   OR EXISTS (SELECT FROM pg_catalog.aclexplode(p.proacl) AS a
					  WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'));
	IF v_bad IS NOT NULL THEN
		RAISE EXCEPTION 'oms functions executable by PUBLIC: %', v_bad;
	END IF;
END;
$$;
