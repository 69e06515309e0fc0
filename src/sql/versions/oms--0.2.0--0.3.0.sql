-- oms upgrade script 0.2.0 -> 0.3.0: sagas at the speed of the database
-- (parallel saga workers, a lean step path, availability in O(1), a
-- faster relay).  Frozen once 0.3.0 is released; later changes go into the
-- next script.  test/suites/upgrade.sh proves that a database updated with
-- this script has the same catalog as a fresh install of 0.3.0.

\echo Use "ALTER EXTENSION oms UPDATE TO '0.3.0'" to load this file. \quit

-- ALTER EXTENSION runs this script with the extension's schema (usually
-- public) first in search_path, where a database owner may have planted
-- operators for oms types: resolve nothing through it.
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

--
-- Inventory: availability in O(1).
--

-- (inventory: end)

--
-- The saga engine: the lean step path.
--

-- _advance_forward takes the order's status instead of the order row and
-- returns the saga row when the step completed and the saga moved on, so
-- that _run_sagas reads neither again per step.
DROP FUNCTION oms._advance_forward(oms.sagas, oms.orders, timestamptz);

CREATE FUNCTION oms._advance_forward(p_saga oms.sagas, p_order_status oms.order_status, p_now timestamptz)
RETURNS oms.sagas
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_step oms.saga_steps;
	v_saga oms.sagas;
	v_timeout interval;
	v_rerun boolean := false;
	v_result text;
	v_state text;
	v_message text;
	v_detail text;
	v_error jsonb;
BEGIN
	SELECT * INTO v_step FROM oms.saga_steps AS t WHERE t.saga_id = p_saga.id AND t.step_no = p_saga.step_no;
	IF v_step.status = 'waiting' THEN
		v_timeout := oms._step_timeout(v_step.name);
		IF oms._reply_for(pg_catalog.format('%s:%s:%s', p_saga.id, v_step.step_no, v_step.attempts)) IS NOT NULL THEN
			-- The remote provider answered: run the same attempt again, the
			-- provider now returns the answer.  This comes before a cancel,
			-- so that a capture the provider made is recorded (and then
			-- refunded).
			v_rerun := true;
		ELSIF p_saga.kind = 'fulfilment' AND p_order_status = 'cancel_requested' THEN
			PERFORM oms._start_compensation(p_saga, p_saga.step_no, 'canceled', NULL, p_now);
			RETURN NULL;
		ELSIF p_now < v_step.started_at + v_timeout THEN
			UPDATE oms.sagas AS s SET next_run_at = v_step.started_at + v_timeout WHERE s.id = p_saga.id;
			RETURN NULL;
		ELSE
			PERFORM oms._step_failed(p_saga, v_step,
				oms._error_json('OM012', pg_catalog.format('step %s got no answer within %s', v_step.name, v_timeout),
								NULL, v_step, v_step.attempts, p_now), p_now);
			RETURN NULL;
		END IF;
	ELSIF p_saga.kind = 'fulfilment' AND p_order_status = 'cancel_requested' THEN
		PERFORM oms._start_compensation(p_saga, p_saga.step_no, 'canceled', NULL, p_now);
		RETURN NULL;
	END IF;

	-- The attempt is counted in the same UPDATE that records its outcome
	-- (one write per attempt); the step sees its number already.
	IF NOT v_rerun THEN
		v_step.attempts := v_step.attempts + 1;
		v_step.started_at := p_now;
		v_step.first_started_at := coalesce(v_step.first_started_at, p_now);
	END IF;

	BEGIN
		-- The fulfilment steps are called directly, not through
		-- oms._run_step: one call less per step.
		CASE v_step.name
			WHEN 'reserve' THEN
				PERFORM oms._reserve_order(p_saga.order_id, p_now);
				v_result := 'done';
			WHEN 'pay' THEN
				v_result := oms._step_pay(p_saga, v_step, p_now);
			WHEN 'confirm' THEN
				-- oms._step_confirm
				PERFORM oms._move_reserved_stock(p_saga.order_id, 'held', 'consumed', -1);
				PERFORM oms._change_status(p_saga.order_id, 'confirmed', 'order.confirmed',
										   pg_catalog.jsonb_build_object('saga_id', p_saga.id));
				v_result := 'done';
			ELSE
				v_result := oms._run_step(p_saga, v_step, p_now);
		END CASE;
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
		RETURN NULL;
	END;

	IF v_result = 'waiting' THEN
		v_timeout := oms._step_timeout(v_step.name);
		UPDATE oms.saga_steps AS t
		SET status = 'waiting', attempts = v_step.attempts, started_at = v_step.started_at,
			first_started_at = v_step.first_started_at
		WHERE t.saga_id = v_step.saga_id AND t.step_no = v_step.step_no;
		UPDATE oms.sagas AS s SET next_run_at = p_now + v_timeout, updated_at = pg_catalog.now() WHERE s.id = p_saga.id;
		PERFORM oms._timeline(p_saga.order_id, 'saga.step_waiting',
			pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', v_step.name, 'attempt', v_step.attempts,
										  'timeout_at', p_now + v_timeout));
		RETURN NULL;
	END IF;

	-- Done.  The step, its saga.step_completed entry (with saga.completed
	-- after the last step: what oms._finish_saga writes) and the saga, in
	-- one statement.  The last step is the length of the kind's step list
	-- (oms._saga_step_names).
	IF v_step.step_no = (CASE p_saga.kind WHEN 'fulfilment' THEN 3 ELSE 2 END) THEN
		WITH t AS (
			UPDATE oms.saga_steps AS t
			SET status = 'done', attempts = v_step.attempts, started_at = v_step.started_at,
				first_started_at = v_step.first_started_at,
				completed_at = GREATEST(p_now, pg_catalog.clock_timestamp())
			WHERE t.saga_id = v_step.saga_id AND t.step_no = v_step.step_no
		), o AS (
			UPDATE oms.orders AS o SET timeline_seq = o.timeline_seq + 2
			WHERE o.id = p_saga.order_id
			RETURNING o.id, o.timeline_seq
		), e AS (
			INSERT INTO oms.order_events (order_id, seq, event_type, data, traceparent)
			SELECT o.id, o.timeline_seq - 2 + x.n, x.event_type, x.data,
				   NULLIF(pg_catalog.current_setting('oms.traceparent', true), '')
			FROM o CROSS JOIN (VALUES
				(1, 'saga.step_completed',
				 pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', v_step.name, 'attempt', v_step.attempts)),
				(2, 'saga.completed',
				 pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'kind', p_saga.kind, 'outcome',
					CASE p_saga.kind WHEN 'fulfilment' THEN 'confirmed' ELSE 'refunded' END))) AS x(n, event_type, data)
			ORDER BY x.n
		)
		UPDATE oms.sagas AS s
		SET status = 'completed', outcome = CASE p_saga.kind WHEN 'fulfilment' THEN 'confirmed' ELSE 'refunded' END,
			finished_at = p_now, updated_at = pg_catalog.now()
		WHERE s.id = p_saga.id
		RETURNING * INTO v_saga;
		-- Completed: the caller stops here, whatever the order's status now.
		RETURN v_saga;
	END IF;

	WITH t AS (
		UPDATE oms.saga_steps AS t
		SET status = 'done', attempts = v_step.attempts, started_at = v_step.started_at,
			first_started_at = v_step.first_started_at,
			completed_at = GREATEST(p_now, pg_catalog.clock_timestamp())
		WHERE t.saga_id = v_step.saga_id AND t.step_no = v_step.step_no
	), o AS (
		UPDATE oms.orders AS o SET timeline_seq = o.timeline_seq + 1
		WHERE o.id = p_saga.order_id
		RETURNING o.id, o.timeline_seq
	), e AS (
		INSERT INTO oms.order_events (order_id, seq, event_type, data, traceparent)
		SELECT o.id, o.timeline_seq, 'saga.step_completed',
			   pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', v_step.name, 'attempt', v_step.attempts),
			   NULLIF(pg_catalog.current_setting('oms.traceparent', true), '')
		FROM o
	)
	UPDATE oms.sagas AS s SET step_no = s.step_no + 1, next_run_at = p_now, error = NULL,
		updated_at = pg_catalog.now()
	WHERE s.id = p_saga.id
	RETURNING * INTO v_saga;
	RETURN v_saga;
END;
$$;
COMMENT ON FUNCTION oms._advance_forward(oms.sagas, oms.order_status, timestamptz) IS
	'Runs one attempt of the current step of a running saga, or notices its timeout or a cancel request; returns the saga when the step completed, else NULL';

REVOKE ALL ON FUNCTION oms._advance_forward(oms.sagas, oms.order_status, timestamptz) FROM PUBLIC;

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
			v_saga := v_claimed;
			PERFORM pg_catalog.set_config('oms.traceparent', coalesce(v_saga.traceparent, ''), true);
			LOOP
				EXIT WHEN v_saga.status NOT IN ('running', 'compensating') OR v_saga.next_run_at > p_now
					   OR v_units >= p_max;
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
		EXCEPTION WHEN OTHERS THEN
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
				'currency', o.currency,
				'total', o.total,
				'items', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
									'line_no', i.line_no,
									'sku', i.sku,
									'quantity', i.quantity,
									'unit_price', i.unit_price,
									'line_total', i.line_total) ORDER BY i.line_no), '[]'::jsonb)
						  FROM oms.order_items AS i
						  WHERE i.order_id = o.id),
				'version', o.version,
				'metadata', o.metadata,
				'created_at', pg_catalog.to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
				'updated_at', pg_catalog.to_char(o.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
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
									 current_setting('oms.max_metadata_bytes')::integer);
	IF p_idempotency_key IS NOT NULL THEN
		-- oms._check_idempotency_key, which also refuses an empty key.
		IF length(p_idempotency_key) = 0 THEN
			PERFORM oms._check_idempotency_key(p_idempotency_key);
		END IF;
		PERFORM oms._check_identifier('idempotency_key', p_idempotency_key, 255);
	END IF;
	-- The request is identified by its priced, normalized items, so that
	-- 2 and 2.0 or reordered keys are the same request.
	v_priced := oms._price_items(p_items);

	IF p_idempotency_key IS NOT NULL THEN
		-- oms._request_hash
		v_hash := sha256(convert_to(jsonb_build_array(p_customer_id, v_priced -> 'items', p_currency,
													  p_metadata)::text, 'UTF8'));
		-- The claim of oms._idempotency_begin; a key already there (a replay,
		-- a conflict, a claim of this transaction) is its business.
		INSERT INTO oms.idempotency_keys AS k (key, function_name, request_hash, response, created_at, expires_at)
		VALUES (p_idempotency_key, 'oms_create_order', v_hash, NULL, now(),
				now() + current_setting('oms.idempotency_ttl')::interval)
		ON CONFLICT (key) DO UPDATE
			SET function_name = excluded.function_name, request_hash = excluded.request_hash,
				response = NULL, created_at = excluded.created_at, expires_at = excluded.expires_at
			WHERE k.expires_at <= now();
		IF NOT FOUND THEN
			RETURN oms._idempotency_begin(p_idempotency_key, 'oms_create_order', v_hash);
		END IF;
	END IF;

	v_trace := NULLIF(current_setting('oms.traceparent', true), '');
	WITH o AS (
		INSERT INTO oms.orders (customer_id, currency, total, metadata, timeline_seq, event_seq)
		VALUES (p_customer_id, p_currency, (v_priced ->> 'total')::bigint, p_metadata, 1, 1)
		RETURNING *
	), i AS (
		INSERT INTO oms.order_items (order_id, line_no, sku, quantity, unit_price, line_total)
		SELECT o.id, i.line_no, i.sku, i.quantity, i.unit_price, i.line_total
		FROM o CROSS JOIN jsonb_to_recordset(v_priced -> 'items')
			AS i(line_no integer, sku text, quantity integer, unit_price bigint, line_total bigint)
	), d AS (
		-- oms._order_document(o, v_priced -> 'items')
		SELECT o.id, o.status, o.total, o.currency,
			   jsonb_build_object(
				'order_id', o.id,
				'customer_id', o.customer_id,
				'status', o.status,
				'currency', o.currency,
				'total', o.total,
				'items', v_priced -> 'items',
				'version', o.version,
				'metadata', o.metadata,
				'created_at', to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
				'updated_at', to_char(o.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
				AS document
		FROM o
	), c AS (
		SELECT d.*, jsonb_build_object('total', d.total, 'currency', d.currency,
									   'item_count', jsonb_array_length(v_priced -> 'items'),
									   'idempotency_key', p_idempotency_key) AS data
		FROM d
	), e AS (
		INSERT INTO oms.order_events (order_id, seq, event_type, from_status, to_status, data, traceparent)
		SELECT c.id, 1, 'order.created', NULL, c.status, c.data, v_trace
		FROM c
	), x AS (
		INSERT INTO oms.outbox (aggregatetype, aggregateid, type, payload, seq, traceparent)
		SELECT 'order', c.id, 'order.created',
			   c.data || jsonb_build_object('previous_status', NULL::oms.order_status, 'order', c.document),
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
	-- The built-in test provider directly: what oms._payment_request would
	-- answer, without its call and the correlation id it does not use.
	IF pg_catalog.current_setting('oms.payment_provider') = 'test' THEN
		v_answer := oms._test_provider(v_payment.method, 'charge', p_step.attempts);
	ELSE
		v_answer := oms._payment_request(v_payment, 'charge', v_payment.amount, p_step.attempts,
										 pg_catalog.format('%s:%s:%s', p_saga.id, p_step.step_no, p_step.attempts));
	END IF;
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

-- Time-ordered ids for the tables an order writes to (src/input.c).
CREATE FUNCTION oms._uuid_v7()
RETURNS uuid
LANGUAGE c VOLATILE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_uuid_v7';
COMMENT ON FUNCTION oms._uuid_v7() IS
	'A time-ordered UUID (version 7: Unix time in milliseconds, then random bits), the default id of orders, sagas, payments and refunds';
REVOKE ALL ON FUNCTION oms._uuid_v7() FROM PUBLIC;
ALTER TABLE oms.orders ALTER COLUMN id SET DEFAULT oms._uuid_v7();
ALTER TABLE oms.sagas ALTER COLUMN id SET DEFAULT oms._uuid_v7();
ALTER TABLE oms.payments ALTER COLUMN id SET DEFAULT oms._uuid_v7();
ALTER TABLE oms.refunds ALTER COLUMN id SET DEFAULT oms._uuid_v7();

-- (saga engine: end)

--
-- The worker: parallel saga workers.
--

-- (worker: end)

--
-- The outbox relay.
--

-- (relay: end)

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
