-- inbox.sql: the remote payment provider over Kafka.
--
-- With oms.payment_provider = kafka a payment step sends a command and
-- waits: oms._kafka_provider() writes the command to the outbox (the relay
-- publishes it to oms.kafka_payment_commands_topic) and answers "pending".
-- The worker's reply consumer (src/inbox.c), and oms_payment_result() for
-- webhook-style providers, hand each reply to oms._apply_payment_reply(),
-- which records it in the inbox exactly once and wakes the waiting saga; the
-- step then runs again and the provider answers with the recorded reply.
-- The correlation id, <saga>:<step>:<attempt> (c<attempt> for a
-- compensation), names one command and doubles as the provider's
-- idempotency key.
--
-- requires: schema payment saga

CREATE TABLE oms.payment_commands (
	correlation_id text PRIMARY KEY,
	payment_id	uuid NOT NULL REFERENCES oms.payments (id) ON DELETE CASCADE,
	order_id	uuid NOT NULL,
	command		text NOT NULL CHECK (command IN ('charge', 'void', 'refund')),
	amount		bigint NOT NULL,
	sent_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE oms.payment_commands IS 'Commands sent to the remote payment provider, by correlation id';

CREATE TABLE oms.inbox (
	message_id	text PRIMARY KEY,
	correlation_id text,
	outcome		text,
	body		jsonb,
	result		text NOT NULL DEFAULT 'received'
				CHECK (result IN ('received', 'applied', 'duplicate', 'late', 'rejected')),
	received_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX inbox_correlation_idx ON oms.inbox (correlation_id) WHERE result = 'applied';
COMMENT ON TABLE oms.inbox IS
	'Payment replies by message id: each that had an effect (applied, late), and rejected ones up to oms.max_rejected_replies; a redelivered message finds its row and has no second effect';

SELECT pg_catalog.pg_extension_config_dump('oms.payment_commands', '');
SELECT pg_catalog.pg_extension_config_dump('oms.inbox', '');

-- The applied reply to a command, or NULL.
CREATE FUNCTION oms._reply_for(p_correlation_id text)
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

CREATE FUNCTION oms._send_payment_command(p_payment oms.payments, p_command text, p_amount bigint,
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
CREATE FUNCTION oms._kafka_provider(p_payment oms.payments, p_command text, p_amount bigint,
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
CREATE FUNCTION oms._reject_reply(p_message_id text, p_reason text, p_body text, p_correlation_id text)
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
 * A reply's body and the command it answers, or why it cannot be applied
 * (problem; reply is set when the body is a JSON object, so that the
 * rejection can name its correlation id).  Checked in one place, in the
 * order a reader would: JSON at all, an object, the two required keys, a
 * command oms sent; every later step may then rely on a well-formed reply
 * to a known command.
 */
CREATE FUNCTION oms._read_payment_reply(p_body text, OUT reply jsonb, OUT command oms.payment_commands,
										OUT problem text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_body jsonb;
BEGIN
	BEGIN
		v_body := p_body::jsonb;
	EXCEPTION WHEN OTHERS THEN
		problem := 'malformed reply: ' || SQLERRM;
		RETURN;
	END;
	IF pg_catalog.jsonb_typeof(v_body) IS DISTINCT FROM 'object' THEN
		problem := 'malformed reply: not a JSON object';
		RETURN;
	END IF;
	reply := v_body;
	IF reply ->> 'correlation_id' IS NULL OR reply ->> 'outcome' IS NULL
	   OR reply ->> 'outcome' NOT IN ('approved', 'declined', 'failed') THEN
		problem := 'malformed reply: correlation_id and outcome (approved, declined, failed) are required';
		RETURN;
	END IF;
	SELECT * INTO command FROM oms.payment_commands AS c WHERE c.correlation_id = reply ->> 'correlation_id';
	IF NOT FOUND THEN
		problem := pg_catalog.format('unknown correlation id "%s"',
									 pg_catalog.left(reply ->> 'correlation_id', 200));
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._read_payment_reply(text) IS
	'Parses and checks a payment reply: its body and the command it answers, or the problem that makes it a rejected reply';

/*
 * Whether this answer to the command has already had its effect, under
 * another message id: an applied reply, or the same late outcome.  The
 * provider may send an answer twice with different ids (a retry of its
 * own); the second must change nothing.
 */
CREATE FUNCTION oms._reply_had_effect(p_correlation_id text, p_outcome text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN oms._reply_for(p_correlation_id) IS NOT NULL OR
		   EXISTS (SELECT FROM oms.inbox AS i
				   WHERE i.correlation_id = p_correlation_id AND i.result = 'late' AND i.outcome = p_outcome);
END;
$$;
COMMENT ON FUNCTION oms._reply_had_effect(text, text) IS
	'True when a reply to the command already had its effect: one was applied, or the same outcome came late';

/*
 * What a reply causes belongs to the trace of the saga that sent the
 * command, not to the consumer's or the webhook caller's: sets
 * oms.traceparent for the transaction to the saga's (a late refund's
 * correlation id starts with late:) and says whether it did, so that the
 * caller's own value can be given back.
 */
CREATE FUNCTION oms._adopt_saga_trace(p_correlation_id text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_saga text := pg_catalog.split_part(pg_catalog.regexp_replace(p_correlation_id, '^late:', ''), ':', 1);
	v_trace text;
BEGIN
	IF v_saga ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
		SELECT s.traceparent INTO v_trace FROM oms.sagas AS s WHERE s.id = v_saga::uuid;
	END IF;
	IF v_trace IS NULL THEN
		RETURN false;
	END IF;
	PERFORM pg_catalog.set_config('oms.traceparent', v_trace, true);
	RETURN true;
END;
$$;
COMMENT ON FUNCTION oms._adopt_saga_trace(text) IS
	'Sets oms.traceparent for the transaction to the trace of the saga that sent a command; true when it did';

/*
 * The answer to the refund oms sent for a late charge: no saga waits for
 * it, so it is recorded on the timeline, and a refusal becomes a
 * late_reply dead letter, because money the customer should get back is
 * still with the provider and only an operator can settle that.
 */
CREATE FUNCTION oms._apply_late_refund_reply(p_message_id text, p_reply jsonb, p_command oms.payment_commands)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_correlation text := p_reply ->> 'correlation_id';
	v_outcome text := p_reply ->> 'outcome';
	v_letter bigint;
BEGIN
	UPDATE oms.inbox AS i
	SET correlation_id = v_correlation, outcome = v_outcome, body = p_reply, result = 'applied'
	WHERE i.message_id = p_message_id;
	PERFORM oms._timeline(p_command.order_id, 'payment.late_refund',
		pg_catalog.jsonb_build_object('correlation_id', v_correlation, 'outcome', v_outcome,
									  'message_id', p_message_id));
	IF v_outcome <> 'approved' THEN
		INSERT INTO oms.dead_letters (kind, order_id, step, error, payload)
		VALUES ('late_reply', p_command.order_id, 'refund',
				pg_catalog.jsonb_build_object('message', 'the refund of a late charge was not approved',
											  'outcome', v_outcome, 'at', pg_catalog.now()),
				pg_catalog.jsonb_build_object('message_id', p_message_id, 'reply', p_reply))
		RETURNING id INTO v_letter;
		PERFORM oms._log('warning', 'payment_late_refund_refused', 'order_id', p_command.order_id::text,
						 'correlation_id', v_correlation, 'outcome', v_outcome, 'message_id', p_message_id,
						 'dead_letter_id', v_letter::text);
	END IF;
	RETURN 'applied';
END;
$$;
COMMENT ON FUNCTION oms._apply_late_refund_reply(text, jsonb, oms.payment_commands) IS
	'Records the answer to the refund of a late charge; a refusal becomes a late_reply dead letter';

/*
 * The saga that sent a command (locked, so that its step cannot move on
 * while the reply is applied), and whether its current step waits for
 * exactly this command: the same step, and the same attempt of it (a
 * compensation's attempts are counted apart, c<n>).  An answer to an
 * earlier attempt, or after a timeout or a cancel, is late.
 */
CREATE FUNCTION oms._saga_waiting_for(p_correlation_id text, OUT saga_id uuid, OUT waiting boolean)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_attempt text := pg_catalog.split_part(p_correlation_id, ':', 3);
	v_saga oms.sagas;
	v_step oms.saga_steps;
BEGIN
	IF pg_catalog.split_part(p_correlation_id, ':', 1)
	   ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
		SELECT * INTO v_saga FROM oms.sagas AS s
		WHERE s.id = pg_catalog.split_part(p_correlation_id, ':', 1)::uuid FOR UPDATE;
	END IF;
	SELECT * INTO v_step FROM oms.saga_steps AS t
	WHERE t.saga_id = v_saga.id AND t.step_no::text = pg_catalog.split_part(p_correlation_id, ':', 2);
	saga_id := v_saga.id;
	waiting := v_saga.id IS NOT NULL AND v_step.step_no = v_saga.step_no AND
		CASE WHEN v_attempt LIKE 'c%'
			 THEN v_saga.status = 'compensating' AND v_step.compensation_waiting
				  AND v_step.compensation_attempts::text = pg_catalog.substr(v_attempt, 2)
			 ELSE v_saga.status = 'running' AND v_step.status = 'waiting' AND v_step.attempts::text = v_attempt
		END;
END;
$$;
COMMENT ON FUNCTION oms._saga_waiting_for(text) IS
	'Locks the saga that sent a payment command and says whether its current step waits for exactly that command';

/*
 * A reply the saga waits for: the saga is due now, and the worker is woken
 * at commit.  The step itself reads the recorded reply when it runs again
 * (oms._kafka_provider), so the saga engine applies the outcome, here and
 * for a webhook alike.
 */
CREATE FUNCTION oms._apply_awaited_reply(p_message_id text, p_reply jsonb, p_command oms.payment_commands,
										 p_saga_id uuid)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE oms.sagas AS s SET next_run_at = pg_catalog.now() WHERE s.id = p_saga_id;
	PERFORM oms._timeline(p_command.order_id, 'payment.reply',
		pg_catalog.jsonb_build_object('correlation_id', p_reply ->> 'correlation_id',
									  'command', p_command.command, 'outcome', p_reply ->> 'outcome',
									  'message_id', p_message_id));
	PERFORM oms._notify_worker();
	RETURN 'applied';
END;
$$;
COMMENT ON FUNCTION oms._apply_awaited_reply(text, jsonb, oms.payment_commands, uuid) IS
	'Applies a reply its saga waits for: makes the saga due and wakes the worker; returns applied';

/*
 * A reply no saga waits for any more is kept as a late_reply dead letter.
 * A late approval of a charge means the provider took money oms gave up
 * on: oms sends a refund for it, once (its correlation id is late:<the
 * charge's>).
 */
CREATE FUNCTION oms._apply_late_reply(p_message_id text, p_reply jsonb, p_command oms.payment_commands,
									  p_saga_id uuid)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_correlation text := p_reply ->> 'correlation_id';
	v_outcome text := p_reply ->> 'outcome';
	v_refund boolean := v_outcome = 'approved' AND p_command.command = 'charge';
	v_letter bigint;
BEGIN
	INSERT INTO oms.dead_letters (kind, saga_id, order_id, step, error, payload)
	VALUES ('late_reply', p_saga_id, p_command.order_id, p_command.command,
			pg_catalog.jsonb_build_object('message', 'reply after the saga stopped waiting for it',
										  'outcome', v_outcome, 'at', pg_catalog.now()),
			pg_catalog.jsonb_build_object('message_id', p_message_id, 'reply', p_reply))
	RETURNING id INTO v_letter;
	IF v_refund AND NOT EXISTS (SELECT FROM oms.payment_commands AS c
								WHERE c.correlation_id = 'late:' || v_correlation) THEN
		PERFORM oms._send_payment_command((SELECT p FROM oms.payments AS p WHERE p.id = p_command.payment_id),
										  'refund', p_command.amount, 'late:' || v_correlation);
	END IF;
	PERFORM oms._timeline(p_command.order_id, 'payment.late_reply',
		pg_catalog.jsonb_build_object('correlation_id', v_correlation, 'command', p_command.command,
									  'outcome', v_outcome, 'refund_sent', v_refund));
	PERFORM oms._log('warning', 'payment_reply_late', 'saga_id', p_saga_id::text,
					 'order_id', p_command.order_id::text, 'correlation_id', v_correlation,
					 'command', p_command.command, 'outcome', v_outcome, 'message_id', p_message_id,
					 'refund_sent', v_refund::text, 'dead_letter_id', v_letter::text);
	RETURN 'late';
END;
$$;
COMMENT ON FUNCTION oms._apply_late_reply(text, jsonb, oms.payment_commands, uuid) IS
	'Records a reply no saga waits for as a late_reply dead letter, and refunds a late approved charge; returns late';

/*
 * Applies one reply, exactly once per message id.  Returns applied,
 * duplicate, late or rejected; never raises for a bad message (it becomes a
 * dead letter), so a poison message cannot block its partition.  The
 * steps, in order, each in a helper above: claim the message id in the
 * inbox; read and check the reply; drop an answer that already had its
 * effect; lock the order; adopt the saga's trace; then apply the answer to
 * a late refund, or the answer a saga waits for, or record a late one.
 */
CREATE FUNCTION oms._apply_payment_reply(p_message_id text, p_body text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id text := coalesce(p_message_id, 'md5:' || pg_catalog.md5(coalesce(p_body, '')));
	v_caller_trace text := pg_catalog.current_setting('oms.traceparent', true);
	v_read record;
	v_reply jsonb;
	v_command oms.payment_commands;
	v_correlation text;
	v_adopted boolean;
	v_saga_id uuid;
	v_waiting boolean;
	v_result text;
BEGIN
	-- A redelivered message finds its row and has no second effect.
	INSERT INTO oms.inbox (message_id) VALUES (v_id) ON CONFLICT (message_id) DO NOTHING;
	IF NOT FOUND THEN
		RETURN 'duplicate';
	END IF;

	SELECT * INTO v_read FROM oms._read_payment_reply(p_body);
	IF v_read.problem IS NOT NULL THEN
		RETURN oms._reject_reply(v_id, v_read.problem, p_body, v_read.reply ->> 'correlation_id');
	END IF;
	v_reply := v_read.reply;
	v_command := v_read.command;
	v_correlation := v_reply ->> 'correlation_id';

	-- The same answer under another message id leaves no row: a redelivery
	-- of it is judged again, to the same end, so the inbox keeps one row
	-- per reply that had an effect.
	IF oms._reply_had_effect(v_correlation, v_reply ->> 'outcome') THEN
		DELETE FROM oms.inbox AS i WHERE i.message_id = v_id;
		RETURN 'duplicate';
	END IF;

	PERFORM 1 FROM oms.orders AS o WHERE o.id = v_command.order_id FOR NO KEY UPDATE;
	v_adopted := oms._adopt_saga_trace(v_correlation);

	IF v_correlation LIKE 'late:%' THEN
		v_result := oms._apply_late_refund_reply(v_id, v_reply, v_command);
	ELSE
		SELECT w.saga_id, w.waiting INTO v_saga_id, v_waiting FROM oms._saga_waiting_for(v_correlation) AS w;
		UPDATE oms.inbox AS i
		SET correlation_id = v_correlation, outcome = v_reply ->> 'outcome', body = v_reply,
			result = CASE WHEN v_waiting THEN 'applied' ELSE 'late' END
		WHERE i.message_id = v_id;
		IF v_waiting THEN
			v_result := oms._apply_awaited_reply(v_id, v_reply, v_command, v_saga_id);
		ELSE
			v_result := oms._apply_late_reply(v_id, v_reply, v_command, v_saga_id);
		END IF;
	END IF;

	-- The caller's own trace context is given back.
	IF v_adopted THEN
		PERFORM pg_catalog.set_config('oms.traceparent', coalesce(v_caller_trace, ''), true);
	END IF;
	RETURN v_result;
END;
$$;
COMMENT ON FUNCTION oms._apply_payment_reply(text, text) IS
	'Applies a payment reply once per message id: applied, duplicate, late (dead letter, refund of a late charge) or rejected';

CREATE FUNCTION @extschema@.oms_payment_result(correlation_id text, outcome text, details jsonb DEFAULT '{}')
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
		RAISE EXCEPTION 'invalid payment outcome "%"', pg_catalog.left(oms_payment_result.outcome, 100)
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
		pg_catalog.jsonb_build_object('correlation_id', oms_payment_result.correlation_id,
									  'outcome', oms_payment_result.outcome,
									  'reference', oms_payment_result.details ->> 'reference',
									  'message', oms_payment_result.details ->> 'message')::text);
	RETURN pg_catalog.jsonb_build_object('correlation_id', oms_payment_result.correlation_id, 'result', v_result);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_payment_result(text, text, jsonb) IS
	'Applies a payment provider result from SQL (webhooks) through the same inbox as Kafka replies';

-- Privileges of the objects above: nothing for PUBLIC, each role what it
-- needs (the roles come from roles.sql, checks.sql verifies).
GRANT SELECT ON oms.payment_commands, oms.inbox TO oms_reader;
REVOKE ALL ON FUNCTION @extschema@.oms_payment_result(text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._apply_payment_reply(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._read_payment_reply(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._reply_had_effect(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._adopt_saga_trace(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._apply_late_refund_reply(text, jsonb, oms.payment_commands) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._saga_waiting_for(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._apply_awaited_reply(text, jsonb, oms.payment_commands, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._apply_late_reply(text, jsonb, oms.payment_commands, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._kafka_provider(oms.payments, text, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._reject_reply(text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._reply_for(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._send_payment_command(oms.payments, text, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_payment_result(text, text, jsonb) TO oms_app;

-- The SQL face of the worker half (src/relay.c, src/inbox.c, src/kafka.c).

CREATE FUNCTION oms._inbox_shmem_status()
RETURNS jsonb
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_inbox_shmem_status'
LANGUAGE c VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION oms._inbox_shmem_status() IS
	'The reply consumer of the current database as kept in shared memory, as jsonb (null when oms.database_name does not list the database): worker_running, consumer (off, running, bad_config), applied, duplicates, late, rejected, other (counts of oms._apply_payment_reply results since server start), failures (reply transactions that failed and were retried), last_reply_at, partitions (assigned to this worker), lag (messages behind the high watermarks, null when unknown), lag_at, last_error, last_error_at';

REVOKE ALL ON FUNCTION oms._inbox_shmem_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._inbox_shmem_status() TO oms_admin, oms_reader;
