-- payment_kafka: the remote payment provider, SQL side.  Commands go to the
-- outbox; replies come through oms_payment_result() here (the worker's
-- Kafka consumer uses the same oms._apply_payment_reply()).
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql
SET oms.payment_provider = 'kafka';
SELECT oms_set_stock('PK-A', 100) ->> 'available' AS available;
CREATE FUNCTION t.corr(p_order uuid, p_command text) RETURNS text LANGUAGE sql AS $$
	SELECT c.correlation_id FROM oms.payment_commands c WHERE c.order_id = p_order AND c.command = p_command
	ORDER BY c.sent_at DESC, c.correlation_id DESC LIMIT 1;
$$;
CREATE FUNCTION t.shape(p_corr text) RETURNS text LANGUAGE sql AS $$
	SELECT regexp_replace(p_corr, '[0-9a-f-]{36}', '<saga>');
$$;

-- Methods are the remote provider's.
SELECT t.err(format('SELECT oms_pay_order(%L, %L)', oms_create_order('pk-0', '[{"sku": "PK-A", "quantity": 1, "unit_price": 1}]') ->> 'order_id', 'bitcoin'));

-- Approve: the pay step sends a charge command and waits; the reply wakes it.
SELECT t.new_order('pk-1', '[{"sku": "PK-A", "quantity": 2, "unit_price": 700}]', 'card') AS o1 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT (t.saga(:'o1')).*;
SELECT t.shape(correlation_id) AS correlation, command, amount FROM oms.payment_commands WHERE order_id = :'o1';
SELECT x.type, x.payload - '{correlation_id,payment_id,order_id}'::text[] AS payload,
	   x.payload ->> 'correlation_id' = t.corr(:'o1', 'charge') AS same_correlation, x.seq
FROM oms.outbox x JOIN oms.payments p ON p.id = x.aggregateid WHERE p.order_id = :'o1';
SELECT topic FROM oms._relay_claim(1000) WHERE aggregatetype = 'payment' LIMIT 1;
-- Nothing happens until the reply comes.
SELECT oms_run_sagas() AS steps_run;
SELECT oms_payment_result(t.corr(:'o1', 'charge'), 'approved', '{"reference": "psp-1"}') ->> 'result' AS result;
SELECT oms_payment_result(t.corr(:'o1', 'charge'), 'approved', '{"reference": "psp-1"}') ->> 'result' AS again;
SELECT oms_run_sagas() AS steps_run;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'o1';
SELECT captured, provider_reference, status FROM oms.payments WHERE order_id = :'o1';
SELECT result, count(*) FROM oms.inbox WHERE correlation_id = t.corr(:'o1', 'charge') GROUP BY 1 ORDER BY 1;
-- The same answer under another message id has no second effect either.
SELECT oms._apply_payment_reply('other-id', format('{"correlation_id": "%s", "outcome": "approved"}', t.corr(:'o1', 'charge'))) AS result;
SELECT count(*) AS captures FROM oms.order_events WHERE order_id = :'o1' AND event_type = 'order.confirmed';

-- Decline: the order fails, nothing is voided (nothing was authorized).
SELECT t.new_order('pk-2', '[{"sku": "PK-A", "quantity": 1, "unit_price": 700}]', 'card') AS o2 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT oms_payment_result(t.corr(:'o2', 'charge'), 'declined', '{"message": "insufficient funds"}') ->> 'result' AS result;
SELECT oms_run_sagas() AS steps_run;
SELECT o.status, (SELECT p.status FROM oms.payments p WHERE p.order_id = o.id) AS payment,
	   (SELECT count(*) FROM oms.payment_commands c WHERE c.order_id = o.id) AS commands
FROM oms.orders o WHERE o.id = :'o2';

-- A transient failure: retried as a new attempt, with a new correlation id.
SET oms.retry_base = '1s';
SELECT t.new_order('pk-3', '[{"sku": "PK-A", "quantity": 1, "unit_price": 700}]', 'card') AS o3 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT oms_payment_result(t.corr(:'o3', 'charge'), 'failed', '{"message": "try later"}') ->> 'result' AS result;
SELECT oms._run_sagas(10, now()) AS steps_run;
SELECT oms._run_sagas(10, now() + interval '10 seconds') AS steps_run;
SELECT t.shape(correlation_id) AS correlation FROM oms.payment_commands WHERE order_id = :'o3' ORDER BY sent_at, correlation_id;
SELECT oms_payment_result(t.corr(:'o3', 'charge'), 'approved') ->> 'result' AS result;
SELECT oms._run_sagas(10, now() + interval '10 seconds') AS steps_run;
SELECT status FROM oms.orders WHERE id = :'o3';
RESET oms.retry_base;

-- No reply in time: the step fails, the charge is voided (a void command
-- that waits for its own reply), the stock released.  The late approval of
-- the charge then triggers a refund, and a dead letter records it.
SET oms.payment_reply_timeout = '5s';
SELECT t.new_order('pk-4', '[{"sku": "PK-A", "quantity": 1, "unit_price": 700}]', 'card') AS o4 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT t.corr(:'o4', 'charge') AS charge4 \gset
SELECT oms._run_sagas(10, now() + interval '6 seconds') AS steps_run;
SELECT o.status, (t.saga(o.id)).* FROM oms.orders o WHERE o.id = :'o4';
SELECT t.shape(correlation_id) AS correlation, command FROM oms.payment_commands WHERE order_id = :'o4' ORDER BY sent_at, correlation_id;
SELECT oms_payment_result(t.corr(:'o4', 'void'), 'approved') ->> 'result' AS void_result;
SELECT oms._run_sagas(10, now() + interval '7 seconds') AS steps_run;
SELECT o.status, (t.saga(o.id)).*, (SELECT p.status FROM oms.payments p WHERE p.order_id = o.id) AS payment
FROM oms.orders o WHERE o.id = :'o4';
SELECT oms_payment_result(:'charge4', 'approved') ->> 'result' AS late_result;
SELECT kind, step, error ->> 'outcome' AS outcome FROM oms.dead_letters WHERE order_id = :'o4' AND kind = 'late_reply';
SELECT t.shape(correlation_id) AS correlation, command, amount FROM oms.payment_commands
WHERE order_id = :'o4' AND command = 'refund';
SELECT event_type, data ->> 'refund_sent' AS refund_sent FROM oms.order_events WHERE order_id = :'o4' AND event_type = 'payment.late_reply';
RESET oms.payment_reply_timeout;

-- Cancel while the charge waits: the void goes out at once.
SELECT t.new_order('pk-5', '[{"sku": "PK-A", "quantity": 1, "unit_price": 700}]', 'card') AS o5 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT oms_cancel_order(:'o5') ->> 'status' AS status;
SELECT oms_run_sagas() AS steps_run;
SELECT command FROM oms.payment_commands WHERE order_id = :'o5' ORDER BY sent_at, correlation_id;
SELECT oms_payment_result(t.corr(:'o5', 'void'), 'approved') ->> 'result' AS result;
SELECT oms_run_sagas() AS steps_run;
SELECT o.status, (SELECT p.status FROM oms.payments p WHERE p.order_id = o.id) AS payment FROM oms.orders o WHERE o.id = :'o5';

-- Replies that cannot be applied become dead letters; none raises.
SELECT oms._apply_payment_reply('bad-1', 'not json at all') AS malformed;
SELECT oms._apply_payment_reply('bad-1', 'not json at all') AS redelivered;
SELECT oms._apply_payment_reply('bad-2', '[1, 2]') AS not_an_object;
SELECT oms._apply_payment_reply('bad-3', '{"correlation_id": "x"}') AS no_outcome;
SELECT oms._apply_payment_reply('bad-4', '{"correlation_id": "nope:1:1", "outcome": "approved"}') AS unknown;
SELECT oms._apply_payment_reply(NULL, NULL) AS empty;
SELECT error ->> 'message' AS message, payload ->> 'raw' AS raw FROM oms.dead_letters WHERE kind = 'reply' ORDER BY id;
SELECT message_id, result FROM oms.inbox WHERE message_id LIKE 'bad-%' OR message_id LIKE 'md5:%' ORDER BY message_id;

-- Bad input to oms_payment_result.
SELECT t.err('SELECT oms_payment_result(NULL, ''approved'')');
SELECT t.err('SELECT oms_payment_result(''x'', ''maybe'')');
SELECT t.err('SELECT oms_payment_result(''x'', NULL)');
SELECT t.err('SELECT oms_payment_result(''x'', ''approved'', ''[1]'')');
-- An answer to a command oms never sent is refused, and leaves nothing:
-- any caller could otherwise grow the inbox and the dead letters.
SELECT (SELECT count(*) FROM oms.inbox) AS inbox_before, (SELECT count(*) FROM oms.dead_letters) AS letters_before \gset
SELECT t.err('SELECT oms_payment_result(''no:such:command'', ''approved'')');
SELECT (SELECT count(*) FROM oms.inbox) - :inbox_before AS inbox_rows_added,
	   (SELECT count(*) FROM oms.dead_letters) - :letters_before AS dead_letters_added;
RESET oms.payment_provider;
