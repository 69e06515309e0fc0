-- compensation: every compensation path (void, refund, release) with a
-- participant that fails transiently.  Each failed attempt is a new attempt
-- (a new command, with a new correlation id, for a remote provider),
-- counted against oms.max_attempts with backoff; past the limit the saga
-- is stuck with a dead letter.  Running the engine again then does nothing:
-- no attempt, no timeline entry.  Times are passed to oms._run_sagas(), so
-- every backoff has passed when the next round runs.
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql
SET oms.payment_provider = 'kafka';
SET oms.max_attempts = 3;
SET oms.retry_base = '1s';
SET oms.retry_max = '1s';
SELECT oms_set_stock('CP-A', 100) ->> 'available' AS available;
CREATE FUNCTION t.last_corr(p_order uuid, p_command text) RETURNS text LANGUAGE sql AS $$
	SELECT c.correlation_id FROM oms.payment_commands c WHERE c.order_id = p_order AND c.command = p_command
	ORDER BY c.sent_at DESC, c.correlation_id DESC LIMIT 1;
$$;
-- What a compensation did so far: the saga, its pay step, the commands
-- sent, the timeline entries of the compensation, the dead letters.
CREATE FUNCTION t.compensation(p_order uuid) RETURNS TABLE (saga text, attempts integer, waiting boolean,
	commands text, retries bigint, entries bigint, letters text) LANGUAGE sql AS $$
	SELECT s.status::text, t.compensation_attempts, t.compensation_waiting,
		   (SELECT string_agg(c.command || ':' || regexp_replace(c.correlation_id, '^[0-9a-f-]{36}', '<saga>'), ' '
							  ORDER BY c.sent_at, c.correlation_id)
			FROM oms.payment_commands c WHERE c.order_id = p_order AND c.command <> 'charge'),
		   (SELECT count(*) FROM oms.order_events e WHERE e.order_id = p_order AND e.event_type = 'saga.compensation_retry'),
		   (SELECT count(*) FROM oms.order_events e WHERE e.order_id = p_order),
		   (SELECT string_agg(d.kind || '/' || d.status || '/' || (d.error ->> 'sqlstate'), ' ' ORDER BY d.id)
			FROM oms.dead_letters d WHERE d.order_id = p_order)
	FROM oms.sagas s JOIN oms.saga_steps t ON t.saga_id = s.id AND t.name = 'pay'
	WHERE s.order_id = p_order AND s.kind = 'fulfilment';
$$;

-- 1. A void answered "failed" every time.  The charge waits, the customer
-- cancels, the void is sent; each "failed" reply ends its attempt.
SELECT t.new_order('cp-void', '[{"sku": "CP-A", "quantity": 1, "unit_price": 500}]', 'card') AS o1 \gset
SELECT oms._run_sagas(10, now()) AS steps_run;
SELECT oms_cancel_order(:'o1') ->> 'status' AS status;
SELECT oms._run_sagas(10, now()) AS steps_run;
SELECT * FROM t.compensation(:'o1');
SELECT oms_payment_result(t.last_corr(:'o1', 'void'), 'failed', '{"message": "provider unavailable"}') ->> 'result' AS result;
-- The reply ends attempt 1; the retry waits for its backoff.
SELECT oms._run_sagas(10, now() + interval '10 s') AS steps_run;
SELECT * FROM t.compensation(:'o1');
-- Attempt 2 sends a new void.
SELECT oms._run_sagas(10, now() + interval '20 s') AS steps_run;
SELECT * FROM t.compensation(:'o1');
SELECT oms_payment_result(t.last_corr(:'o1', 'void'), 'failed') ->> 'result' AS result;
SELECT oms._run_sagas(10, now() + interval '30 s') AS steps_run;
SELECT oms._run_sagas(10, now() + interval '40 s') AS steps_run;
SELECT oms_payment_result(t.last_corr(:'o1', 'void'), 'failed') ->> 'result' AS result;
-- The third failure is the last attempt: stuck, with a dead letter.
SELECT oms._run_sagas(10, now() + interval '50 s') AS steps_run;
SELECT * FROM t.compensation(:'o1');
-- Nothing runs any more, and nothing is added to the timeline.
SELECT oms._run_sagas(10, now() + interval '1 hour') AS steps_run;
SELECT oms._run_sagas(10, now() + interval '2 hours') AS steps_run;
SELECT * FROM t.compensation(:'o1');
-- A second answer to an attempt already answered has no effect.
SELECT oms_payment_result(t.last_corr(:'o1', 'void'), 'approved') ->> 'result' AS result;
-- The operator replays the dead letter: fresh attempts; this void is approved.
SELECT oms_retry_dead_letter(id) ->> 'status' AS letter FROM oms.dead_letters
WHERE order_id = :'o1' AND kind = 'compensation_stuck';
SELECT oms._run_sagas(10, now() + interval '3 hours') AS steps_run;
SELECT oms_payment_result(t.last_corr(:'o1', 'void'), 'approved') ->> 'result' AS result;
SELECT oms._run_sagas(10, now() + interval '4 hours') AS steps_run;
SELECT o.status AS order_status, p.status AS payment_status, c.*
FROM oms.orders o JOIN oms.payments p ON p.order_id = o.id, t.compensation(o.id) AS c WHERE o.id = :'o1';

-- 2. A refund of a captured charge answered "failed" every time.  The
-- charge is approved after the cancel request: the capture is recorded,
-- then refunded.
SELECT t.new_order('cp-refund', '[{"sku": "CP-A", "quantity": 2, "unit_price": 300}]', 'card') AS o2 \gset
SELECT oms._run_sagas(10, now()) AS steps_run;
SELECT oms_cancel_order(:'o2') ->> 'status' AS status;
SELECT oms_payment_result(t.last_corr(:'o2', 'charge'), 'approved') ->> 'result' AS result;
SELECT oms._run_sagas(10, now()) AS steps_run;
SELECT captured FROM oms.payments WHERE order_id = :'o2';
SELECT oms_payment_result(t.last_corr(:'o2', 'refund'), 'failed') ->> 'result' AS result;
SELECT oms._run_sagas(10, now() + interval '10 s') AS steps_run;
SELECT oms._run_sagas(10, now() + interval '20 s') AS steps_run;
SELECT oms_payment_result(t.last_corr(:'o2', 'refund'), 'failed') ->> 'result' AS result;
SELECT oms._run_sagas(10, now() + interval '30 s') AS steps_run;
SELECT oms._run_sagas(10, now() + interval '40 s') AS steps_run;
SELECT oms_payment_result(t.last_corr(:'o2', 'refund'), 'failed') ->> 'result' AS result;
SELECT oms._run_sagas(10, now() + interval '50 s') AS steps_run;
SELECT oms._run_sagas(10, now() + interval '1 hour') AS steps_run;
SELECT * FROM t.compensation(:'o2');
SELECT refunded, status FROM oms.payments WHERE order_id = :'o2';

-- A void nobody answers is sent again, a new attempt each time, and ends
-- stuck the same way (OM012).
SET oms.payment_reply_timeout = '5s';
SELECT t.new_order('cp-silent', '[{"sku": "CP-A", "quantity": 1, "unit_price": 100}]', 'card') AS o3 \gset
SELECT oms._run_sagas(10, now()) AS steps_run;
SELECT oms_cancel_order(:'o3') ->> 'status' AS status;
SELECT oms._run_sagas(10, now()) AS steps_run;
SELECT oms._run_sagas(10, now() + interval '10 s') AS steps_run;
SELECT oms._run_sagas(10, now() + interval '20 s') AS steps_run;
SELECT oms._run_sagas(10, now() + interval '30 s') AS steps_run;
SELECT oms._run_sagas(10, now() + interval '1 hour') AS steps_run;
SELECT * FROM t.compensation(:'o3');
RESET oms.payment_reply_timeout;

-- 3. Releasing the reservations fails transiently (a serialization
-- failure, injected by a trigger that fails while a sequence is below a
-- limit: sequences are not rolled back with the failed attempt).
RESET oms.payment_provider;
CREATE SEQUENCE t.release_failures;
CREATE TABLE t.release_failure_limit (n integer);
INSERT INTO t.release_failure_limit VALUES (2);
CREATE FUNCTION t.flaky_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.status = 'released' AND nextval('t.release_failures') <= (SELECT n FROM t.release_failure_limit) THEN
		RAISE EXCEPTION 'could not serialize access (injected)' USING ERRCODE = 'serialization_failure';
	END IF;
	RETURN NEW;
END;
$$;
CREATE TRIGGER flaky_release BEFORE UPDATE ON oms.reservations
	FOR EACH ROW EXECUTE FUNCTION t.flaky_release();
-- Two failures, then success: the release is retried and the order fails
-- cleanly (the charge was declined).
SELECT t.new_order('cp-release', '[{"sku": "CP-A", "quantity": 5, "unit_price": 100}]', 'test_decline') AS o4 \gset
SELECT oms._run_sagas(10, now()) AS steps_run;
SELECT oms._run_sagas(10, now() + interval '10 s') AS steps_run;
SELECT oms._run_sagas(10, now() + interval '20 s') AS steps_run;
SELECT o.status, (t.saga(o.id)).*,
	   (SELECT count(*) FROM oms.order_events e WHERE e.order_id = o.id AND e.event_type = 'saga.compensation_retry') AS retries,
	   (SELECT string_agg(r.status::text, ',') FROM oms.reservations r WHERE r.order_id = o.id) AS reservations
FROM oms.orders o WHERE o.id = :'o4';
-- Failing for good: three attempts, then stuck with a dead letter.
SELECT setval('t.release_failures', 1, false);
UPDATE t.release_failure_limit SET n = 1000;
SELECT t.new_order('cp-release-2', '[{"sku": "CP-A", "quantity": 5, "unit_price": 100}]', 'test_decline') AS o5 \gset
SELECT oms._run_sagas(10, now()) AS steps_run;
SELECT oms._run_sagas(10, now() + interval '10 s') AS steps_run;
SELECT oms._run_sagas(10, now() + interval '20 s') AS steps_run;
SELECT oms._run_sagas(10, now() + interval '1 hour') AS steps_run;
SELECT oms._run_sagas(10, now() + interval '2 hours') AS steps_run;
SELECT o.status, (t.saga(o.id)).*,
	   (SELECT count(*) FROM oms.order_events e WHERE e.order_id = o.id AND e.event_type = 'saga.compensation_retry') AS retries,
	   (SELECT string_agg(d.kind || '/' || (d.error ->> 'sqlstate'), ' ' ORDER BY d.id) FROM oms.dead_letters d WHERE d.order_id = o.id) AS letters
FROM oms.orders o WHERE o.id = :'o5';
DROP TRIGGER flaky_release ON oms.reservations;
-- The stuck release is replayed and goes through.
SELECT oms_retry_dead_letter(id) ->> 'status' AS letter FROM oms.dead_letters WHERE order_id = :'o5' AND kind = 'compensation_stuck';
SELECT oms._run_sagas(10, now() + interval '3 hours') AS steps_run;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'o5';

RESET oms.max_attempts;
RESET oms.retry_base;
RESET oms.retry_max;
