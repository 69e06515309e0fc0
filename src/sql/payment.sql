-- payment.sql: payment and refund records, and the provider boundary.
--
-- The saga engine never talks to a provider directly.  It calls
-- oms._payment_request(), which returns one of four outcomes:
--   approved   the provider did it
--   declined   the provider refused for good          (permanent failure)
--   transient  the provider failed, try again later   (retry with backoff)
--   pending    no answer yet                          (the step waits)
-- The built-in test provider answers synchronously by payment method.  A
-- remote provider answers "pending" after sending a command, and its reply
-- later completes the waiting step; the saga engine does not change.
--
-- requires: schema

CREATE TABLE oms.payments (
	id			uuid PRIMARY KEY DEFAULT oms._uuid_v7(),
	order_id	uuid NOT NULL UNIQUE REFERENCES oms.orders (id) ON DELETE CASCADE,
	method		text NOT NULL,
	currency	text NOT NULL,
	amount		bigint NOT NULL CHECK (amount >= 0),
	authorized	bigint NOT NULL DEFAULT 0,
	captured	bigint NOT NULL DEFAULT 0,
	refunded	bigint NOT NULL DEFAULT 0,
	status		text NOT NULL DEFAULT 'pending'
				CHECK (status IN ('pending', 'captured', 'voided', 'declined', 'refunded', 'partially_refunded')),
	provider_reference text,
	command_seq	bigint NOT NULL DEFAULT 0,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CHECK (0 <= refunded AND refunded <= captured AND captured <= authorized AND authorized <= amount)
);
COMMENT ON TABLE oms.payments IS
	'One payment per order; the database enforces 0 <= refunded <= captured <= authorized <= amount';
COMMENT ON COLUMN oms.payments.command_seq IS 'Sequence number of the last command sent to a remote provider for this payment';

CREATE TABLE oms.refunds (
	id			uuid PRIMARY KEY DEFAULT oms._uuid_v7(),
	order_id	uuid NOT NULL REFERENCES oms.orders (id) ON DELETE CASCADE,
	payment_id	uuid NOT NULL REFERENCES oms.payments (id) ON DELETE CASCADE,
	amount		bigint NOT NULL CHECK (amount > 0),
	reason		text,
	status		text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	completed_at timestamptz
);
CREATE INDEX refunds_order_idx ON oms.refunds (order_id);
COMMENT ON TABLE oms.refunds IS
	'Refund requests; pending ones count against the refundable amount so that concurrent refunds cannot exceed it';

SELECT pg_catalog.pg_extension_config_dump('oms.payments', '');
SELECT pg_catalog.pg_extension_config_dump('oms.refunds', '');

CREATE TABLE oms.payment_methods (
	provider	text NOT NULL,
	method		text NOT NULL,
	behaviour	text NOT NULL,
	PRIMARY KEY (provider, method)
);
COMMENT ON TABLE oms.payment_methods IS 'Payment methods each provider accepts; oms_pay_order refuses others';
INSERT INTO oms.payment_methods (provider, method, behaviour) VALUES
	('test', 'test_ok', 'every command is approved'),
	('test', 'test_decline', 'charges are declined for good; voids and refunds are approved'),
	('test', 'test_flaky', 'every command fails transiently on its first two attempts, then is approved'),
	('test', 'test_hang', 'charges never get an answer; voids and refunds are approved'),
	('kafka', 'card', 'decided by the remote payment service'),
	('kafka', 'test_ok', 'the test payment service approves every command'),
	('kafka', 'test_decline', 'the test payment service declines charges'),
	('kafka', 'test_flaky', 'the test payment service fails the first two attempts'),
	('kafka', 'test_hang', 'the test payment service never answers charges'),
	('kafka', 'test_delay', 'the test payment service answers late'),
	('kafka', 'test_duplicate', 'the test payment service sends every reply twice'),
	('kafka', 'test_out_of_order', 'the test payment service answers after a random delay'),
	('kafka', 'test_garbage', 'the test payment service answers with invalid JSON'),
	('kafka', 'test_unknown', 'the test payment service answers with an unknown correlation id');

/*
 * The built-in test provider: the answer depends only on the method, the
 * command and the attempt number, so every path is reproducible.
 */
CREATE FUNCTION oms._test_provider(p_method text, p_command text, p_attempt integer)
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
CREATE FUNCTION oms._payment_request(p_payment oms.payments, p_command text, p_amount bigint,
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

CREATE FUNCTION oms._check_payment_method(p_method text)
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

-- Privileges of the objects above: nothing for PUBLIC, each role what it
-- needs (the roles come from roles.sql, checks.sql verifies).
GRANT SELECT ON oms.payments, oms.refunds, oms.payment_methods TO oms_reader;
REVOKE ALL ON FUNCTION oms._check_payment_method(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._payment_request(oms.payments, text, bigint, integer, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._test_provider(text, text, integer) FROM PUBLIC;
