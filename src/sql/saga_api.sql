-- saga_api.sql: the public functions and views of payments, refunds and
-- sagas.  Same rules as api.sql: validate, idempotency, one transaction.
--
-- requires: schema payment saga

CREATE FUNCTION @extschema@.oms_pay_order(
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
	PERFORM oms._own_id(oms_pay_order.order_id, 'order');
	PERFORM oms._check_not_null('order_id', oms_pay_order.order_id);
	PERFORM oms._check_payment_method(oms_pay_order.payment_method);
	PERFORM oms._check_idempotency_key(oms_pay_order.idempotency_key);

	IF oms_pay_order.idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(pg_catalog.jsonb_build_array(oms_pay_order.order_id, oms_pay_order.payment_method));
		v_document := oms._idempotency_begin(oms_pay_order.idempotency_key, 'oms_pay_order', v_hash);
		IF v_document IS NOT NULL THEN
			RETURN v_document;
		END IF;
	END IF;

	v_order := oms._lock_order(oms_pay_order.order_id);
	IF v_order.status <> 'pending' THEN
		RAISE EXCEPTION 'order "%" cannot be paid', v_order.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('The order is %s.', v_order.status),
				  HINT = 'Only pending orders can be paid.';
	END IF;

	INSERT INTO oms.payments (id, order_id, method, currency, amount)
	VALUES (oms._child_id(v_order.id), v_order.id, oms_pay_order.payment_method, v_order.currency, v_order.total);
	v_document := oms._change_status(v_order.id, 'processing', 'order.processing',
		pg_catalog.jsonb_build_object('payment_method', oms_pay_order.payment_method,
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

CREATE FUNCTION @extschema@.oms_refund_order(
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
	PERFORM oms._own_id(oms_refund_order.order_id, 'order');
	PERFORM oms._check_not_null('order_id', oms_refund_order.order_id);
	IF oms_refund_order.amount IS NOT NULL AND oms_refund_order.amount <= 0 THEN
		RAISE EXCEPTION 'refund amount must be greater than zero'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass NULL to refund everything that is left.';
	END IF;
	IF pg_catalog.length(oms_refund_order.reason) > 1000 THEN
		RAISE EXCEPTION 'reason is too long'
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = pg_catalog.format('reason has at most 1000 characters, got %s.',
											 pg_catalog.length(oms_refund_order.reason));
	END IF;
	PERFORM oms._check_idempotency_key(oms_refund_order.idempotency_key);

	IF oms_refund_order.idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(pg_catalog.jsonb_build_array(oms_refund_order.order_id, oms_refund_order.amount,
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
				  DETAIL = pg_catalog.format('The order is %s.', v_order.status),
				  HINT = CASE WHEN v_order.status IN ('pending', 'processing')
							  THEN 'Cancel the order instead with oms_cancel_order().'
							  ELSE 'Only confirmed or partially refunded orders can be refunded.' END;
	END IF;

	-- Pending refunds count: two concurrent refunds serialise on the
	-- payment row and the second sees the first.
	SELECT * INTO v_payment FROM oms.payments AS p WHERE p.order_id = v_order.id FOR UPDATE;
	v_refundable := v_payment.captured - v_payment.refunded
		- (SELECT coalesce(pg_catalog.sum(r.amount), 0) FROM oms.refunds AS r
		   WHERE r.payment_id = v_payment.id AND r.status = 'pending');
	IF v_refundable = 0 THEN
		RAISE EXCEPTION 'order "%" has nothing left to refund', v_order.id
			USING ERRCODE = 'OM002',
				  DETAIL = pg_catalog.format('Captured %s, refunded %s, pending refunds %s.', v_payment.captured,
											 v_payment.refunded, v_payment.captured - v_payment.refunded);
	END IF;
	v_amount := coalesce(oms_refund_order.amount, v_refundable);
	IF v_amount > v_refundable OR v_amount <= 0 THEN
		RAISE EXCEPTION 'refund of % exceeds the refundable amount of %', v_amount, v_refundable
			USING ERRCODE = 'OM002',
				  DETAIL = pg_catalog.format('Captured %s, refunded %s, pending refunds %s.', v_payment.captured,
											 v_payment.refunded, v_payment.captured - v_payment.refunded - v_refundable),
				  HINT = 'Refund at most the refundable amount.';
	END IF;

	INSERT INTO oms.refunds (id, order_id, payment_id, amount, reason)
	VALUES (oms._child_id(v_order.id), v_order.id, v_payment.id, v_amount, oms_refund_order.reason)
	RETURNING id INTO v_refund;
	PERFORM oms._timeline(v_order.id, 'refund.requested',
		pg_catalog.jsonb_build_object('refund_id', v_refund, 'amount', v_amount, 'reason', oms_refund_order.reason,
									  'idempotency_key', oms_refund_order.idempotency_key));
	PERFORM oms._start_saga(v_order.id, 'refund', v_refund);
	PERFORM oms._notify_worker();

	v_document := oms._order_document((SELECT o FROM oms.orders AS o WHERE o.id = v_order.id),
									  oms._order_items_json(v_order.id))
				  || pg_catalog.jsonb_build_object('refund', pg_catalog.jsonb_build_object(
						'refund_id', v_refund, 'amount', v_amount, 'status', 'pending'));
	IF oms_refund_order.idempotency_key IS NOT NULL THEN
		PERFORM oms._idempotency_finish(oms_refund_order.idempotency_key, 'oms_refund_order', v_hash, v_document);
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_refund_order(uuid, bigint, text, text) IS
	'Refunds a confirmed order in full (amount NULL) or in part; runs as a refund saga';

CREATE FUNCTION @extschema@.oms_run_sagas(max_steps integer DEFAULT 1000)
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
	RETURN oms._run_sagas(max_steps, pg_catalog.clock_timestamp());
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_run_sagas(integer) IS
	'Runs up to max_steps due saga steps in this session, the same way the worker does; returns how many ran';

CREATE FUNCTION @extschema@.oms_retry_dead_letter(id bigint)
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
		UPDATE oms.dead_letters AS d SET status = 'replayed', replayed_at = pg_catalog.now() WHERE d.id = v_letter.id;
		PERFORM oms._log('log', 'dead_letter_replayed', 'dead_letter_id', v_letter.id::text, 'kind', v_letter.kind,
						 'event_id', v_letter.payload ->> 'id', 'type', v_letter.payload ->> 'type');
		PERFORM oms._notify_worker();
		RETURN (SELECT pg_catalog.to_jsonb(d) FROM oms.dead_letters AS d WHERE d.id = v_letter.id);
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
	UPDATE oms.sagas AS s SET status = 'compensating', next_run_at = pg_catalog.now(), updated_at = pg_catalog.now()
	WHERE s.id = v_letter.saga_id AND s.status = 'stuck';
	UPDATE oms.dead_letters AS d SET status = 'replayed', replayed_at = pg_catalog.now() WHERE d.id = v_letter.id;
	PERFORM oms._timeline(v_letter.order_id, 'saga.replayed',
		pg_catalog.jsonb_build_object('saga_id', v_letter.saga_id, 'dead_letter_id', v_letter.id));
	PERFORM oms._log('log', 'dead_letter_replayed', 'dead_letter_id', v_letter.id::text, 'kind', v_letter.kind,
					 'saga_id', v_letter.saga_id::text, 'order_id', v_letter.order_id::text);
	PERFORM oms._notify_worker();
	RETURN (SELECT pg_catalog.to_jsonb(d) FROM oms.dead_letters AS d WHERE d.id = v_letter.id);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_retry_dead_letter(bigint) IS
	'Replays a dead letter: a stuck compensation resumes with fresh attempts; an undelivered event goes back to the outbox';

CREATE VIEW oms.saga_metrics AS
	SELECT
		pg_catalog.count(*) FILTER (WHERE s.kind = 'fulfilment') AS started,
		pg_catalog.count(*) FILTER (WHERE s.kind = 'fulfilment' AND s.status = 'completed') AS completed,
		pg_catalog.count(*) FILTER (WHERE s.kind = 'fulfilment' AND s.status = 'compensated' AND s.outcome = 'failed') AS failed,
		pg_catalog.count(*) FILTER (WHERE s.kind = 'fulfilment' AND s.status = 'compensated' AND s.outcome = 'canceled') AS canceled,
		pg_catalog.count(*) FILTER (WHERE s.kind = 'refund' AND s.status = 'completed') AS refunded,
		pg_catalog.count(*) FILTER (WHERE s.status IN ('running', 'compensating')) AS in_flight,
		pg_catalog.count(*) FILTER (WHERE s.status = 'stuck') AS stuck
	FROM oms.sagas AS s;
COMMENT ON VIEW oms.saga_metrics IS
	'Saga counts: fulfilment sagas started, completed, failed, canceled; refunds completed; in flight; stuck';

CREATE VIEW oms.saga_step_latency AS
	SELECT s.kind, t.name AS step, pg_catalog.count(*) AS steps,
		   pg_catalog.percentile_cont(0.50) WITHIN GROUP (ORDER BY extract(epoch FROM t.completed_at - t.first_started_at) * 1000) AS p50_ms,
		   pg_catalog.percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM t.completed_at - t.first_started_at) * 1000) AS p95_ms,
		   pg_catalog.percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM t.completed_at - t.first_started_at) * 1000) AS p99_ms
	FROM oms.saga_steps AS t JOIN oms.sagas AS s ON s.id = t.saga_id
	WHERE t.status = 'done'
	GROUP BY s.kind, t.name;
COMMENT ON VIEW oms.saga_step_latency IS
	'Per saga step: completed steps and p50/p95/p99 milliseconds from first attempt to completion';

-- Privileges of the objects above: nothing for PUBLIC, each role what it
-- needs (the roles come from roles.sql, checks.sql verifies).
GRANT SELECT ON oms.saga_metrics, oms.saga_step_latency TO oms_reader;
REVOKE ALL ON FUNCTION @extschema@.oms_pay_order(uuid, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_refund_order(uuid, bigint, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_retry_dead_letter(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_run_sagas(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	@extschema@.oms_pay_order(uuid, text, text),
	@extschema@.oms_refund_order(uuid, bigint, text, text)
TO oms_app;
GRANT EXECUTE ON FUNCTION
	@extschema@.oms_run_sagas(integer),
	@extschema@.oms_retry_dead_letter(bigint)
TO oms_admin;
