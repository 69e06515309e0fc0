-- relay: the SQL half of the outbox relay, driven by hand: what a batch
-- claims, and how a settled batch removes, retries and dead-letters events.
-- (The worker's producer side is tested end to end with a broker in test/.)
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql

DELETE FROM oms.outbox;
SELECT oms_create_order('rl-a', '[{"sku": "A", "quantity": 1, "unit_price": 10}]') ->> 'order_id' AS a \gset
SELECT oms_create_order('rl-b', '[{"sku": "A", "quantity": 1, "unit_price": 10}]') ->> 'order_id' AS b \gset
SELECT oms_cancel_order(:'b') ->> 'status' AS b_status;
SELECT id AS a1 FROM oms.outbox WHERE aggregateid = :'a' AND seq = 1 \gset
SELECT id AS b1 FROM oms.outbox WHERE aggregateid = :'b' AND seq = 1 \gset
SELECT id AS b2 FROM oms.outbox WHERE aggregateid = :'b' AND seq = 2 \gset

-- A claim: topic, key = order id, value = payload, CloudEvents headers.
SELECT c.aggregateid = :'a' AS is_a, c.seq, c.topic, c.key = c.aggregateid::text AS key_is_order,
	   c.value::jsonb = o.payload AS value_is_payload
FROM oms._relay_claim(10) c JOIN oms.outbox o ON o.id = c.id
ORDER BY c.aggregateid = :'a' DESC, c.seq;
SELECT h.name, CASE WHEN h.name IN ('ce_id', 'ce_time', 'ce_subject', 'ce_source') THEN '<' || h.name || '>' ELSE h.value END AS value
FROM oms._relay_claim(10) c,
	 LATERAL (SELECT c.headers[2 * i - 1] AS name, c.headers[2 * i] AS value
			  FROM generate_series(1, array_length(c.headers, 1) / 2) AS i) h
WHERE c.id = :'b2';
SELECT bool_and(c.headers[4] = c.id::text) AS ce_id_is_outbox_id,
	   bool_and(c.headers[12] = c.key) AS ce_subject_is_order,
	   bool_and(c.headers[6] = '/oms/' || current_database()) AS ce_source,
	   bool_and(c.headers[10]::timestamptz = o.created_at) AS ce_time_is_created_at
FROM oms._relay_claim(10) c JOIN oms.outbox o ON o.id = c.id;
SET oms.kafka_topic_mode = 'per_aggregate';
SELECT DISTINCT topic FROM oms._relay_claim(10);
RESET oms.kafka_topic_mode;

-- The value is the payload's JSON text byte for byte as payload::text
-- writes it (src/relay.c writes it from the jsonb container itself):
-- escapes, unicode, nesting, empty containers, numerics, scalar documents.
-- A time that to_char cannot write leaves ce_time null.
BEGIN;
INSERT INTO oms.outbox (aggregatetype, aggregateid, type, payload, seq, created_at) VALUES
	('rl-json', gen_random_uuid(), 't', $j${"a": "é\u0001x\n\t\"q\\ \b\f\r \u001f", "b": 1.50, "c": -0.0001, "d": [], "e": {}, "f": null, "g": true, "h": 1e30, "i": false, "": [[{"x\ty": [null, ""]}], 12345678901234567890.123, -7], "k \"q\"": {"n": {"d": [1, {"k": "v"}]}}, "u": "\u00e9\u4e2d\ud83d\ude00"}$j$, 1, '2020-01-01 00:00:00+00'),
	('rl-json', gen_random_uuid(), 't', '"sc\\al\"ar"', 1, 'infinity'),
	('rl-json', gen_random_uuid(), 't', '[[], {}, [1, [2]]]', 1, now()),
	('rl-json', gen_random_uuid(), 't', '3.0', 1, now()),
	('rl-json', gen_random_uuid(), 't', 'null', 1, now()),
	('rl-json', gen_random_uuid(), 't', 'true', 1, now()),
	('rl-json', gen_random_uuid(), 't', '{}', 1, now());
SELECT count(*) AS events, count(*) FILTER (WHERE c.value = o.payload::text) AS same_text,
	   count(*) FILTER (WHERE c.headers[10] IS NULL) AS no_ce_time
FROM oms._relay_claim(NULL) c JOIN oms.outbox o ON o.id = c.id
WHERE o.aggregatetype = 'rl-json';
ROLLBACK;

-- Settle: a1 acknowledged, b1 failed (transient), b2 acknowledged.  a1 is
-- removed; b1 backs off; b2 stays, to be published again after b1.
SELECT oms._relay_settle(ARRAY[:'a1', :'b1', :'b2']::uuid[], ARRAY[NULL, 'Local: Message timed out', NULL],
						 ARRAY[false, false, false]) AS published;
SELECT seq, attempts, last_error, next_attempt_at > now() AS backing_off
FROM oms.outbox WHERE aggregateid IN (:'a', :'b') ORDER BY aggregateid = :'a' DESC, seq;
-- While b1 backs off, b2 waits behind it: nothing of order b is claimed.
SELECT count(*) AS claimable FROM oms._relay_claim(10) WHERE aggregateid = :'b';
SELECT pending, oldest_pending_age > interval '0' AS has_age, backing_off FROM oms._relay_backlog();
-- Once b1 is due, both come back, in order.
UPDATE oms.outbox SET next_attempt_at = now() - interval '1 second' WHERE id = :'b1';
SELECT seq FROM oms._relay_claim(10) WHERE aggregateid = :'b';

-- b1 fails for good (permanent): it moves to the dead letters; b2, acknowledged
-- after it in the same batch, stays for the next batch.
SELECT oms._relay_settle(ARRAY[:'b1', :'b2']::uuid[], ARRAY['Broker: Message size too large', NULL],
						 ARRAY[true, false]) AS published;
SELECT seq, attempts FROM oms.outbox WHERE aggregateid = :'b';
SELECT kind, step, order_id = :'b' AS for_b, error ->> 'message' AS message, error ->> 'permanent' AS permanent,
	   payload ->> 'id' = :'b1' AS same_id, payload ->> 'seq' AS seq, status
FROM oms.dead_letters WHERE kind = 'publish';
SELECT oms._relay_settle(ARRAY[:'b2']::uuid[], ARRAY[NULL], ARRAY[false]) AS published;
SELECT count(*) AS left_of_b FROM oms.outbox WHERE aggregateid = :'b';

-- Transient failures end in the dead letters after oms.publish_max_attempts.
SET oms.publish_max_attempts = 2;
SELECT oms._relay_settle(ARRAY[:'a1']::uuid[], ARRAY['gone'], ARRAY[false]) AS settled_unknown_id;
SELECT oms_create_order('rl-c', '[{"sku": "A", "quantity": 1, "unit_price": 10}]') ->> 'order_id' AS c \gset
SELECT id AS c1 FROM oms.outbox WHERE aggregateid = :'c' \gset
SELECT oms._relay_settle(ARRAY[:'c1']::uuid[], ARRAY['Local: Broker transport failure'], ARRAY[false]) AS published;
SELECT attempts, last_error FROM oms.outbox WHERE id = :'c1';
SELECT oms._relay_settle(ARRAY[:'c1']::uuid[], ARRAY['Local: Broker transport failure'], ARRAY[false]) AS published;
SELECT count(*) AS in_outbox FROM oms.outbox WHERE id = :'c1';
SELECT error ->> 'attempt' AS attempt, error ->> 'permanent' AS permanent
FROM oms.dead_letters WHERE kind = 'publish' AND payload ->> 'id' = :'c1';
RESET oms.publish_max_attempts;

-- A replayed dead letter goes back to the outbox under its own id and seq.
SELECT id AS dl FROM oms.dead_letters WHERE kind = 'publish' AND payload ->> 'id' = :'b1' \gset
SELECT oms_retry_dead_letter(:dl) ->> 'status' AS status;
SELECT id = :'b1' AS same_id, seq, type, attempts FROM oms.outbox WHERE aggregateid = :'b';
SELECT regexp_replace(t.err(format('SELECT oms_retry_dead_letter(%s)', :dl)), 'letter [0-9]+', 'letter N') AS err;
