-- health: oms_health() and its rules.
--
-- The regression database is not served by a worker (oms.database_name is
-- left at its default), so oms_health() itself says "down / not_served"
-- here.  The rules are tested through oms._health(memory, now), which takes
-- the shared-memory state and the clock as arguments: t.health() below
-- passes a served database with a live worker, a clock fixed at
-- 2030-01-01 12:00 UTC, and whatever a test overrides.  Everything runs in
-- one transaction on emptied tables and is rolled back at the end.
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql

-- The real thing: this database has no worker.  (Earlier suites' dead
-- letters may add reasons after the first.)
SELECT oms_health() ->> 'status' AS status,
	   oms_health() #>> '{reasons,0,code}' AS first_reason,
	   oms_health() #> '{worker,served}' AS served;
SELECT array(SELECT jsonb_object_keys(oms_health()) ORDER BY 1) AS keys;

-- Who may call it.
SELECT r.rolname, has_function_privilege(r.rolname, 'oms_health()', 'EXECUTE') AS may_execute
FROM (VALUES ('oms_reader'), ('oms_admin'), ('oms_app')) AS r(rolname)
ORDER BY 1;
SELECT has_function_privilege('public', 'oms_health()', 'EXECUTE') AS public_may_execute;
SELECT p.prosecdef AS security_definer, p.proconfig
FROM pg_proc p WHERE p.oid = 'oms_health()'::regprocedure;
CREATE ROLE health_reader IN ROLE oms_reader;
SET ROLE health_reader;
SELECT oms_health() ->> 'status' AS status_as_reader;
SELECT oms._health('{}', now());
RESET ROLE;
DROP ROLE health_reader;

-- Test helpers: the health document with a made-up shared memory, and its
-- reason codes.
CREATE FUNCTION t.health(p_memory jsonb DEFAULT '{}', p_now timestamptz DEFAULT '2030-01-01 12:00:00+00')
RETURNS jsonb LANGUAGE sql AS $$
	SELECT oms._health(jsonb_build_object(
		'workers', jsonb_build_array(jsonb_build_object(
			'database', current_database(), 'pid', 4242, 'alive', true,
			'last_loop', '2030-01-01 11:59:59+00', 'loops', 100, 'units', 7,
			'last_error', NULL, 'last_error_at', NULL)),
		'worker_enabled', true,
		'relay_enabled', true,
		'relay', jsonb_build_object('breaker', 'closed', 'last_publish_at', '2030-01-01 11:59:58+00'),
		'inbox', jsonb_build_object('consumer', 'off', 'lag', NULL)) || p_memory, p_now);
$$;
CREATE FUNCTION t.reasons(p_health jsonb) RETURNS text LANGUAGE sql AS $$
	SELECT (p_health ->> 'status') || ': ' ||
		   coalesce((SELECT string_agg(r ->> 'code', ', ') FROM jsonb_array_elements(p_health -> 'reasons') AS r), '');
$$;
CREATE FUNCTION t.messages(p_health jsonb) RETURNS SETOF text LANGUAGE sql AS $$
	SELECT (r ->> 'severity') || ' ' || (r ->> 'code') || ': ' || (r ->> 'message')
	FROM jsonb_array_elements(p_health -> 'reasons') AS r;
$$;
-- A served worker's row, for the workers array.
CREATE FUNCTION t.worker(p_alive boolean, p_last_loop timestamptz, p_database text DEFAULT current_database())
RETURNS jsonb LANGUAGE sql AS $$
	SELECT jsonb_build_object('database', p_database, 'pid', CASE WHEN p_alive THEN 4242 END, 'alive', p_alive,
							  'last_loop', p_last_loop, 'loops', 100, 'units', 7,
							  'last_error', NULL, 'last_error_at', NULL);
$$;

BEGIN;
-- Empty tables: earlier suites left orders, events and dead letters.
DELETE FROM oms.outbox;
DELETE FROM oms.dead_letters;
DELETE FROM oms.orders;
SELECT oms_set_stock('H-1', 100) ->> 'available' AS available;

-- Healthy: the whole document.
SELECT jsonb_pretty(t.health());

-- ------------------------------------------------------------ the worker
SELECT t.reasons(t.health('{"workers": []}')) AS not_in_database_name;
SELECT t.reasons(t.health('{"worker_enabled": false}')) AS paused;
SELECT t.reasons(t.health(jsonb_build_object('workers', jsonb_build_array(t.worker(false, '2030-01-01 11:00:00+00')))))
	AS no_worker_process;
SELECT t.messages(t.health(jsonb_build_object('workers', jsonb_build_array(t.worker(true, '2030-01-01 11:59:29+00')))));
-- Just at the threshold (30 s) is still alive.
SELECT t.reasons(t.health(jsonb_build_object('workers', jsonb_build_array(t.worker(true, '2030-01-01 11:59:30+00')))))
	AS at_threshold;
SET oms.health_worker_timeout = '1min';
SELECT t.reasons(t.health(jsonb_build_object('workers', jsonb_build_array(t.worker(true, '2030-01-01 11:59:29+00')))))
	AS longer_timeout;
SELECT t.health() -> 'thresholds' ->> 'worker_timeout_ms' AS worker_timeout_ms;
RESET oms.health_worker_timeout;
-- A loop that ended after the clock was read counts as age 0.
SELECT t.health(jsonb_build_object('workers', jsonb_build_array(t.worker(true, '2030-01-01 12:00:05+00'))))
	-> 'worker' ->> 'last_loop_age_ms' AS loop_after_now;
-- Other databases' workers are listed but do not decide this database's status.
SELECT t.reasons(h) AS other_database_down, jsonb_pretty(h -> 'workers')
FROM t.health(jsonb_build_object('workers', jsonb_build_array(
	t.worker(false, NULL, 'shop_staging'), t.worker(true, '2030-01-01 11:59:59+00')))) AS h;

-- ------------------------------------------------------------ sagas
-- Two paid orders, due at once; the fulfilment saga of the first runs to the
-- end, the second is left due 90 s ago.
SELECT t.new_order('h-1', '[{"sku": "H-1", "quantity": 1, "unit_price": 500}]', 'test_ok') AS o1 \gset
SELECT oms._run_sagas(10, now());
SELECT t.new_order('h-2', '[{"sku": "H-1", "quantity": 1, "unit_price": 700}]', 'test_ok') AS o2 \gset
UPDATE oms.sagas SET next_run_at = '2030-01-01 11:58:30+00' WHERE order_id = :'o2';
-- (Their events were written just now, years before the test clock: make them recent.)
UPDATE oms.outbox SET created_at = '2030-01-01 11:59:50+00';
SELECT t.messages(t.health());
SELECT t.health() -> 'sagas' AS sagas;
SET oms.health_saga_lag = '2min';
SELECT t.reasons(t.health()) AS longer_saga_lag, t.health() -> 'thresholds' ->> 'saga_lag_ms' AS saga_lag_ms;
RESET oms.health_saga_lag;
-- Not due yet: nothing overdue.
UPDATE oms.sagas SET next_run_at = '2030-01-01 12:00:10+00' WHERE order_id = :'o2';
SELECT t.reasons(t.health()) AS not_due, t.health() -> 'sagas' AS sagas;
-- Stuck.
UPDATE oms.sagas SET status = 'stuck' WHERE order_id = :'o2';
SELECT t.messages(t.health());
UPDATE oms.sagas SET status = 'running' WHERE order_id = :'o2';

-- ------------------------------------------------------------ outbox
-- The relay has not published anything: make the pending events 75 s old.
SELECT count(*) AS pending FROM oms.outbox;
UPDATE oms.outbox SET created_at = '2030-01-01 11:58:45+00';
SELECT t.messages(t.health());
SELECT t.health() -> 'outbox' AS outbox;
SET oms.health_outbox_lag = '80s';
SELECT t.reasons(t.health()) AS longer_outbox_lag;
RESET oms.health_outbox_lag;
-- With the relay off (oms.kafka_brokers empty) the outbox is a table for
-- consumers of your own: its age is shown, not judged.
SELECT t.reasons(h) AS relay_off, h #> '{outbox,oldest_pending_age_ms}' AS oldest_pending_age_ms
FROM t.health('{"relay_enabled": false}') AS h;
UPDATE oms.outbox SET created_at = '2030-01-01 11:59:50+00';
-- An event backing off after a failed attempt.
UPDATE oms.outbox SET attempts = 1, next_attempt_at = '2030-01-01 12:00:20+00'
WHERE aggregateid = :'o2' AND seq = 1;
SELECT t.health() #> '{outbox,backing_off}' AS backing_off;
-- The breaker.
SELECT t.messages(t.health('{"relay": {"breaker": "open", "breaker_opened_at": "2030-01-01 11:59:00+00"}}'));
SELECT t.reasons(t.health('{"relay": {"breaker": "half_open"}}')) AS half_open;
SELECT t.reasons(t.health('{"relay": {"breaker": "open"}, "relay_enabled": false}')) AS breaker_relay_off;

-- ------------------------------------------------------------ dead letters
-- A declined card: a saga_failed letter is a record, not an alarm.
SELECT t.new_order('h-3', '[{"sku": "H-1", "quantity": 1, "unit_price": 900}]', 'test_decline') AS o3 \gset
SELECT oms._run_sagas(10, now());
UPDATE oms.outbox SET created_at = '2030-01-01 11:59:50+00';
SELECT t.reasons(t.health()) AS declined_card, t.health() -> 'dead_letters' AS dead_letters;
-- An event Kafka refused for good: a publish letter waits for an operator.
SELECT oms._relay_settle(ARRAY[id], ARRAY['Broker: Message size too large'], ARRAY[true])
FROM oms.outbox WHERE aggregateid = :'o1' AND seq = 1;
SELECT t.messages(t.health());
SELECT t.health() -> 'dead_letters' AS dead_letters;
SET oms.health_dead_letters = 2;
SELECT t.reasons(t.health()) AS threshold_2, t.health() #> '{thresholds,dead_letters}' AS dead_letters_threshold;
SET oms.health_dead_letters = 0;
SELECT t.reasons(t.health()) AS threshold_0;
RESET oms.health_dead_letters;
-- Replayed: no longer open.
SELECT oms_retry_dead_letter(id) ->> 'status' AS replayed FROM oms.dead_letters WHERE kind = 'publish';
UPDATE oms.outbox SET created_at = '2030-01-01 11:59:50+00';
SELECT t.reasons(t.health()) AS after_replay, t.health() -> 'dead_letters' AS dead_letters;

-- ------------------------------------------------------------ inbox
-- Judged only with the remote payment provider.
SELECT t.reasons(t.health('{"inbox": {"consumer": "running", "lag": 5000}}')) AS test_provider;
SET oms.payment_provider = 'kafka';
SELECT t.reasons(t.health('{"inbox": {"consumer": "running", "lag": 1000}}')) AS lag_at_threshold;
SELECT t.messages(t.health('{"inbox": {"consumer": "running", "lag": 1001}}'));
SET oms.health_inbox_lag = 5000;
SELECT t.reasons(t.health('{"inbox": {"consumer": "running", "lag": 1001}}')) AS higher_inbox_lag;
RESET oms.health_inbox_lag;
SELECT t.messages(t.health('{"inbox": {"consumer": "bad_config", "last_error": "invalid Kafka consumer settings: No such configuration property: \"bogus\"", "last_error_at": "2030-01-01 11:00:00+00"}}'));
SELECT t.messages(t.health('{"inbox": {"consumer": "off"}}'));
SELECT t.health('{"inbox": {"consumer": "running", "lag": 3, "lag_at": "2030-01-01 11:59:59+00", "last_reply_at": "2030-01-01 11:59:40+00"}}')
	-> 'inbox' AS inbox;
-- A paused worker closes its consumer: down, and no consumer reason on top.
SELECT t.reasons(t.health('{"worker_enabled": false, "inbox": {"consumer": "off"}}')) AS paused_kafka;
RESET oms.payment_provider;

-- ------------------------------------------------------------ together
-- Every reason at once: the worst decides.
SET oms.payment_provider = 'kafka';
UPDATE oms.outbox SET created_at = '2030-01-01 11:50:00+00';
UPDATE oms.sagas SET next_run_at = '2030-01-01 11:50:00+00' WHERE order_id = :'o2';
SELECT oms._relay_settle(ARRAY[id], ARRAY['Broker: Message size too large'], ARRAY[true])
FROM oms.outbox WHERE aggregateid = :'o1' AND seq = 2;
SELECT t.reasons(t.health(jsonb_build_object(
	'workers', jsonb_build_array(t.worker(true, '2030-01-01 11:00:00+00') || '{"last_error": "canceling statement due to user request", "last_error_at": "2030-01-01 11:30:00+00"}'),
	'relay', '{"breaker": "open", "last_error": "1 of 1 events failed to publish: Local: Broker transport failure", "last_error_at": "2030-01-01 11:59:00+00"}'::jsonb,
	'inbox', '{"consumer": "running", "lag": 2000, "last_error": "Local: Broker transport failure", "last_error_at": "2030-01-01 11:59:30+00"}'::jsonb))) AS everything;
SELECT jsonb_pretty(t.health(jsonb_build_object(
	'workers', jsonb_build_array(t.worker(true, '2030-01-01 11:00:00+00') || '{"last_error": "canceling statement due to user request", "last_error_at": "2030-01-01 11:30:00+00"}'),
	'relay', '{"breaker": "open", "last_error": "1 of 1 events failed to publish: Local: Broker transport failure", "last_error_at": "2030-01-01 11:59:00+00"}'::jsonb,
	'inbox', '{"consumer": "running", "lag": 2000, "last_error": "Local: Broker transport failure", "last_error_at": "2030-01-01 11:59:30+00"}'::jsonb)) -> 'last_errors');
RESET oms.payment_provider;

-- ------------------------------------------------------------ counts stop at 10000
INSERT INTO oms.outbox (aggregatetype, aggregateid, type, payload, seq, created_at)
SELECT 'test', gen_random_uuid(), 'test.event', '{}', 1, '2030-01-01 11:59:59+00'
FROM generate_series(1, 10001);
SELECT t.health() -> 'outbox' AS outbox;
ROLLBACK;
