-- saga.sql: the saga engine.
--
-- A saga is a list of local steps, each committed with its timeline entry
-- (and its outbox event when the order's status changes).  Two sagas exist:
--
--   fulfilment  1 reserve  (compensation: release the reservations)
--               2 pay      (compensation: void the authorization or refund the capture)
--               3 confirm  (the pivot: retriable, never compensated once committed)
--   refund      1 refund_payment   (compensation: mark the refund failed)
--               2 complete_refund  (order -> refunded / partially_refunded; a full refund restocks)
--
-- The saga row is the work queue: status running/compensating and
-- next_run_at <= now mean "due".  oms._run_sagas() claims due sagas with
-- FOR UPDATE SKIP LOCKED and advances each in its own subtransaction, so
-- one failing saga never rolls back the batch.  Every step attempt runs in
-- a nested subtransaction: a failed attempt leaves nothing behind but its
-- recorded error.  All times come from p_now so tests can drive the clock.
--
-- requires: schema inventory payment

CREATE TYPE oms.saga_status AS ENUM ('running', 'compensating', 'completed', 'compensated', 'stuck');
COMMENT ON TYPE oms.saga_status IS
	'running and compensating sagas are due at next_run_at; completed and compensated are final; stuck waits for an operator';

CREATE TABLE oms.sagas (
	id			uuid PRIMARY KEY DEFAULT oms._uuid_v7(),
	order_id	uuid NOT NULL REFERENCES oms.orders (id) ON DELETE CASCADE,
	kind		text NOT NULL CHECK (kind IN ('fulfilment', 'refund')),
	status		oms.saga_status NOT NULL DEFAULT 'running',
	step_no		integer NOT NULL DEFAULT 1 CHECK (step_no >= 0),
	next_run_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	refund_id	uuid REFERENCES oms.refunds (id) ON DELETE CASCADE,
	outcome		text,
	error		jsonb,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	finished_at	timestamptz,
	-- Set again for every step the engine runs: it must stay valid.
	traceparent	text CHECK (oms._traceparent_problem(traceparent) IS NULL)
);
CREATE INDEX sagas_due_idx ON oms.sagas (next_run_at) WHERE status IN ('running', 'compensating');
CREATE INDEX sagas_order_idx ON oms.sagas (order_id);
COMMENT ON TABLE oms.sagas IS 'Saga instances; a running or compensating saga is due at next_run_at';
COMMENT ON COLUMN oms.sagas.step_no IS 'The step being run (running) or compensated (compensating)';
COMMENT ON COLUMN oms.sagas.outcome IS 'confirmed, refunded, failed or canceled once known';
COMMENT ON COLUMN oms.sagas.traceparent IS
	'W3C trace context of the call that started the saga; everything the engine writes for the saga carries it';

CREATE TABLE oms.saga_steps (
	saga_id		uuid NOT NULL REFERENCES oms.sagas (id) ON DELETE CASCADE,
	step_no		integer NOT NULL CHECK (step_no > 0),
	name		text NOT NULL,
	status		text NOT NULL DEFAULT 'pending'
				CHECK (status IN ('pending', 'waiting', 'done', 'failed', 'compensated', 'skipped')),
	attempts	integer NOT NULL DEFAULT 0,
	compensation_attempts integer NOT NULL DEFAULT 0,
	replays		integer NOT NULL DEFAULT 0,
	next_attempt_at timestamptz,
	started_at	timestamptz,
	first_started_at timestamptz,
	completed_at timestamptz,
	last_error	jsonb,
	-- Last column: 0.2.0 added it (ALTER TABLE appends).
	compensation_waiting boolean NOT NULL DEFAULT false,
	PRIMARY KEY (saga_id, step_no)
);
COMMENT ON TABLE oms.saga_steps IS 'Steps of each saga: state, attempts, next attempt time, last error, timestamps';
COMMENT ON COLUMN oms.saga_steps.compensation_waiting IS
	'The compensation attempt compensation_attempts was sent to a remote provider and waits for its reply';

CREATE TABLE oms.dead_letters (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	kind		text NOT NULL CHECK (kind IN ('saga_failed', 'compensation_stuck', 'publish', 'reply', 'late_reply')),
	saga_id		uuid REFERENCES oms.sagas (id) ON DELETE CASCADE,
	order_id	uuid,
	step		text,
	error		jsonb NOT NULL,
	payload		jsonb,
	status		text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'replayed')),
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	replayed_at	timestamptz
);
CREATE INDEX dead_letters_open_idx ON oms.dead_letters (created_at) WHERE status = 'open';
COMMENT ON SEQUENCE oms.dead_letters_id_seq IS 'Identity of oms.dead_letters';
COMMENT ON TABLE oms.dead_letters IS
	'Work that failed for good: saga_failed (compensated, kept for the record), compensation_stuck and publish (replayable)';
COMMENT ON COLUMN oms.dead_letters.payload IS 'For publish: the outbox row that could not be delivered';

SELECT pg_catalog.pg_extension_config_dump('oms.sagas', '');
SELECT pg_catalog.pg_extension_config_dump('oms.saga_steps', '');
SELECT pg_catalog.pg_extension_config_dump('oms.dead_letters', '');
SELECT pg_catalog.pg_extension_config_dump('oms.dead_letters_id_seq', '');

CREATE FUNCTION oms._saga_step_names(p_kind text)
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

CREATE FUNCTION oms._start_saga(p_order_id uuid, p_kind text, p_refund_id uuid)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id uuid;
BEGIN
	INSERT INTO oms.sagas (id, order_id, kind, refund_id, traceparent)
	VALUES (oms._child_id(p_order_id), p_order_id, p_kind, p_refund_id, NULLIF(pg_catalog.current_setting('oms.traceparent', true), ''))
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
CREATE FUNCTION oms._is_transient(p_sqlstate text)
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
CREATE FUNCTION oms._backoff(p_attempt integer)
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

CREATE FUNCTION oms._error_json(p_sqlstate text, p_message text, p_detail text, p_step oms.saga_steps,
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
CREATE FUNCTION oms._step_timeout(p_step_name text)
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

--
-- Steps.  Each returns 'done' or 'waiting', or raises: OM010 for a
-- transient failure, OM011 for a permanent one.
--

CREATE FUNCTION oms._step_pay(p_saga oms.sagas, p_step oms.saga_steps, p_now timestamptz)
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

CREATE FUNCTION oms._step_confirm(p_saga oms.sagas)
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

CREATE FUNCTION oms._step_refund_payment(p_saga oms.sagas, p_step oms.saga_steps)
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

CREATE FUNCTION oms._step_complete_refund(p_saga oms.sagas)
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

CREATE FUNCTION oms._run_step(p_saga oms.sagas, p_step oms.saga_steps, p_now timestamptz)
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
CREATE FUNCTION oms._compensate_step(p_saga oms.sagas, p_step oms.saga_steps)
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

--
-- The engine.
--

CREATE FUNCTION oms._start_compensation(p_saga oms.sagas, p_from_step integer, p_outcome text,
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

CREATE FUNCTION oms._finish_saga(p_saga oms.sagas, p_status oms.saga_status, p_outcome text, p_now timestamptz)
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
CREATE FUNCTION oms._step_failed(p_saga oms.sagas, p_step oms.saga_steps, p_error jsonb, p_now timestamptz)
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

CREATE FUNCTION oms._step_retry(p_saga oms.sagas, p_step oms.saga_steps, p_error jsonb, p_now timestamptz,
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

/*
 * One forward move of a running saga.  Returns the saga row as it is now
 * when the step completed (the hot path: the caller runs the next step, or
 * stops after the last, without reading the saga or the order again; only
 * the last step changes the order's status), or NULL when anything else
 * happened (the saga waits, retries or compensates): the caller reads both
 * again then.
 *
 * The hot path is written for few statements: every statement and every
 * call of a function with a SET clause costs, and a fulfilment saga makes
 * three of these moves.  The step's bookkeeping, its timeline entry and
 * the saga's move are one statement (data-modifying CTEs).
 */
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

/*
 * The whole fulfilment saga in one move, for the common case: a fresh saga
 * (no step attempted yet) of an order still processing, the built-in test
 * provider approving the charge, and one location with every SKU's units
 * free (oms._consume_at_once).  Returns the completed saga, or NULL,
 * having written nothing, when any of that does not hold: the caller then
 * runs the steps one by one, where every other case (a split basket, a
 * short SKU whose expired holds may free units, a decline, a remote
 * provider's wait, a cancel) has its rules.
 *
 * It writes what the three steps would, in their order (the test
 * saga_at_once compares the two paths row by row): the reservations,
 * held and then consumed within this transaction, so they are inserted
 * consumed and never count in stock.reserved; the units off the shelf; the
 * capture; the order confirmed with its outbox event; every step done with
 * its saga.step_completed entry, and saga.completed.  The caller holds the
 * saga, the order and the order's stock rows (oms._run_sagas), so the
 * checks below stay true until the writes.
 *
 * Why: a step costs its own subtransaction, bookkeeping statement and
 * function calls, and a fulfilment saga is three of them; one move is half
 * the engine's work per order.
 */
CREATE FUNCTION oms._fulfil_at_once(p_saga oms.sagas, p_now timestamptz)
RETURNS oms.sagas
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_payment oms.payments;
	v_answer jsonb;
	v_saga oms.sagas;
	v_trace text;
BEGIN
	IF pg_catalog.current_setting('oms.payment_provider') <> 'test' THEN
		RETURN NULL;
	END IF;
	SELECT * INTO v_payment FROM oms.payments AS p WHERE p.order_id = p_saga.order_id FOR UPDATE;
	v_answer := oms._test_provider(v_payment.method, 'charge', 1);
	IF v_answer ->> 'outcome' IS DISTINCT FROM 'approved'
	   OR EXISTS (SELECT FROM oms.saga_steps AS t
				  WHERE t.saga_id = p_saga.id AND (t.status <> 'pending' OR t.attempts <> 0))
	   OR EXISTS (SELECT FROM oms.reservations AS r WHERE r.order_id = p_saga.order_id) THEN
		RETURN NULL;
	END IF;

	-- reserve and the stock half of confirm (oms._reserve_order,
	-- oms._move_reserved_stock) when one location serves the basket.
	IF NOT oms._consume_at_once(p_saga.order_id, p_now) THEN
		RETURN NULL;
	END IF;

	-- The order half of confirm (oms._change_status) and the bookkeeping
	-- of the three steps (oms._advance_forward), timeline entries in the
	-- order the steps would write them.
	v_trace := NULLIF(pg_catalog.current_setting('oms.traceparent', true), '');
	-- The capture moves the payment dimension too: set here, in the same
	-- write as the confirm, its trigger on oms.payments (below) finds
	-- nothing to change, and the order row is written once.
	WITH o AS (
		UPDATE oms.orders AS o
		SET status = 'confirmed', payment_status = 'paid',
			timeline_seq = o.timeline_seq + 5, event_seq = o.event_seq + 1
		WHERE o.id = p_saga.order_id
		RETURNING o.id, o.timeline_seq, o.event_seq, o AS row
	), d AS (
		SELECT o.id, o.timeline_seq, o.event_seq,
			   oms._order_document(o.row, oms._order_items_json(o.id)) AS document
		FROM o
	), e AS (
		INSERT INTO oms.order_events (order_id, seq, event_type, from_status, to_status, data, traceparent)
		SELECT d.id, d.timeline_seq - 5 + x.n, x.event_type, x.from_status, x.to_status, x.data, v_trace
		FROM d CROSS JOIN (VALUES
			(1, 'saga.step_completed', NULL::oms.order_status, NULL::oms.order_status,
			 pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', 'reserve', 'attempt', 1)),
			(2, 'saga.step_completed', NULL, NULL,
			 pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', 'pay', 'attempt', 1)),
			(3, 'order.confirmed', 'processing', 'confirmed',
			 pg_catalog.jsonb_build_object('saga_id', p_saga.id)),
			(4, 'saga.step_completed', NULL, NULL,
			 pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', 'confirm', 'attempt', 1)),
			(5, 'saga.completed', NULL, NULL,
			 pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'kind', 'fulfilment', 'outcome', 'confirmed')))
			AS x(n, event_type, from_status, to_status, data)
		ORDER BY x.n
	), x AS (
		INSERT INTO oms.outbox (aggregatetype, aggregateid, type, payload, seq, traceparent)
		SELECT 'order', d.id, 'order.confirmed',
			   pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'previous_status', 'processing',
											 'order', d.document),
			   d.event_seq, v_trace
		FROM d
	), t AS (
		UPDATE oms.saga_steps AS t
		SET status = 'done', attempts = 1, started_at = p_now, first_started_at = p_now,
			completed_at = GREATEST(p_now, pg_catalog.clock_timestamp())
		WHERE t.saga_id = p_saga.id
	)
	UPDATE oms.sagas AS s
	SET status = 'completed', outcome = 'confirmed', step_no = 3, error = NULL,
		finished_at = p_now, updated_at = pg_catalog.now()
	WHERE s.id = p_saga.id
	RETURNING * INTO v_saga;
	-- pay (oms._step_pay): the capture.
	UPDATE oms.payments AS p
	SET authorized = p.amount, captured = p.amount, status = 'captured',
		provider_reference = v_answer ->> 'reference', updated_at = pg_catalog.now()
	WHERE p.id = v_payment.id;
	-- The relay publishes within milliseconds of the commit.
	PERFORM oms._notify_worker();
	RETURN v_saga;
END;
$$;
COMMENT ON FUNCTION oms._fulfil_at_once(oms.sagas, timestamptz) IS
	'Runs a fresh fulfilment saga whose steps would all succeed at once as one move (the same rows as its three steps); returns the completed saga, or NULL having written nothing';

-- A compensation that cannot finish needs an operator.
CREATE FUNCTION oms._compensation_stuck(p_saga oms.sagas, p_step oms.saga_steps, p_error jsonb)
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
CREATE FUNCTION oms._advance_backward(p_saga oms.sagas, p_now timestamptz)
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
CREATE FUNCTION oms._run_sagas(p_max integer, p_now timestamptz)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET oms.traceparent = ''
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_units integer := 0;
	v_claimed oms.sagas;
	v_saga oms.sagas;
	v_fused oms.sagas;
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
			-- The same for the stock rows its steps lock, all or none, in
			-- SKU order: another runner's batch (or an API call) holds a
			-- busy one until it commits, and two batches waiting for each
			-- other's rows would deadlock.  A busy row ends this
			-- subtransaction before any step ran; the saga stays due.
			-- Every location's row of each SKU: sku = ANY finds them through
			-- the primary key's prefix, statistics or not.
			PERFORM 1 FROM oms.stock AS st
			WHERE st.sku = ANY (ARRAY(SELECT i.sku FROM oms.order_items AS i WHERE i.order_id = v_claimed.order_id))
			ORDER BY st.sku, st.location
			FOR UPDATE NOWAIT;
			v_saga := v_claimed;
			PERFORM pg_catalog.set_config('oms.traceparent', coalesce(v_saga.traceparent, ''), true);
			LOOP
				EXIT WHEN v_saga.status NOT IN ('running', 'compensating') OR v_saga.next_run_at > p_now
					   OR v_units >= p_max;
				-- A fresh fulfilment saga whose steps all succeed at once
				-- runs as one move when the batch has room for its steps.
				IF v_saga.status = 'running' AND v_saga.kind = 'fulfilment' AND v_saga.step_no = 1
				   AND v_order_status = 'processing' AND p_max - v_units >= 3 THEN
					v_fused := oms._fulfil_at_once(v_saga, p_now);
					IF v_fused.id IS NOT NULL THEN
						v_units := v_units + 3;
						v_saga := v_fused;
						CONTINUE;
					END IF;
				END IF;
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
		EXCEPTION
		WHEN lock_not_available THEN
			-- Its stock is busy (above): left for a later batch.
			NULL;
		WHEN OTHERS THEN
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

-- Privileges of the objects above: nothing for PUBLIC, each role what it
-- needs (the roles come from roles.sql, checks.sql verifies).
GRANT SELECT ON oms.sagas, oms.saga_steps, oms.dead_letters TO oms_reader;
REVOKE ALL ON FUNCTION oms._advance_backward(oms.sagas, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._advance_forward(oms.sagas, oms.order_status, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._backoff(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._compensate_step(oms.sagas, oms.saga_steps) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._compensation_stuck(oms.sagas, oms.saga_steps, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._error_json(text, text, text, oms.saga_steps, integer, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._finish_saga(oms.sagas, oms.saga_status, text, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._fulfil_at_once(oms.sagas, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._is_transient(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._run_sagas(integer, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._run_step(oms.sagas, oms.saga_steps, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._saga_step_names(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._start_compensation(oms.sagas, integer, text, jsonb, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._start_saga(uuid, text, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._step_complete_refund(oms.sagas) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._step_confirm(oms.sagas) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._step_failed(oms.sagas, oms.saga_steps, jsonb, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._step_pay(oms.sagas, oms.saga_steps, timestamp with time zone) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._step_refund_payment(oms.sagas, oms.saga_steps) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._step_retry(oms.sagas, oms.saga_steps, jsonb, timestamp with time zone, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._step_timeout(text) FROM PUBLIC;
