-- maintenance: each housekeeping task on a prepared data set, with its
-- settings changed by SET and rows back-dated; what must be left alone is
-- left alone; bad input writes nothing; without pg_cron the scheduling
-- functions fail cleanly.
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql

-- The tasks, in run order, before anything ran.  No pg_cron here: the
-- worker would run them.
SELECT task, run_by, schedule, runs, last_started_at FROM oms.maintenance_status;

-- Anything earlier suites left behind that the defaults would clean is
-- cleaned now, so the counts below are those of this data set only.
-- (saga_stuck_after is raised so no earlier saga is run.)
SET oms.saga_stuck_after = '24d';
SELECT oms_run_maintenance() IS NOT NULL AS flushed;
UPDATE oms.maintenance_tasks SET last_started_at = NULL, last_finished_at = NULL, last_run_by = NULL,
	last_result = NULL, runs = 0;

-- Bad input: an unknown task name is 22023 with the list of tasks, and
-- nothing runs.
SELECT t.err($$SELECT oms_run_maintenance('vacuum')$$);
SELECT t.err($$SELECT oms_run_maintenance('')$$);
SELECT count(*) FILTER (WHERE runs > 0) AS tasks_run FROM oms.maintenance_tasks;

-- ------------------------------------------------- expire_pending_orders
SELECT oms_set_stock('MT-A', 100) IS NOT NULL AS stocked;
SELECT oms_create_order('mt-old', '[{"sku": "MT-A", "quantity": 1, "unit_price": 500}]', 'EUR') ->> 'order_id' AS p_old \gset
SELECT oms_create_order('mt-young', '[{"sku": "MT-A", "quantity": 1, "unit_price": 500}]', 'EUR') ->> 'order_id' AS p_young \gset
SELECT t.new_order('mt-paid', '[{"sku": "MT-A", "quantity": 1, "unit_price": 500}]', 'test_ok') AS p_paid \gset
SELECT oms_run_sagas() AS steps_run;
UPDATE oms.orders SET created_at = now() - interval '3 hours' WHERE id IN (:'p_old', :'p_paid');

-- 0 disables the task.
SET oms.pending_order_ttl = 0;
SELECT oms_run_maintenance('expire_pending_orders');
SELECT status FROM oms.orders WHERE id = :'p_old';

-- A two-hour TTL: the three-hour-old pending order is canceled; the young
-- one and the (old) paid one are not.
SET oms.pending_order_ttl = '2h';
SELECT oms_run_maintenance('expire_pending_orders');
SELECT customer_id, status FROM oms.orders WHERE id IN (:'p_old', :'p_young', :'p_paid') ORDER BY customer_id;
-- Through the normal status change: a timeline entry and an outbox event.
SELECT t.events(:'p_old') AS timeline, t.outbox(:'p_old') AS outbox;
SELECT event_type, from_status, to_status, data FROM oms.order_events WHERE order_id = :'p_old' ORDER BY seq DESC LIMIT 1;
SELECT payload ->> 'reason' AS reason, payload ->> 'previous_status' AS previous_status,
	   payload -> 'idempotency_key' AS idempotency_key, payload -> 'order' ->> 'status' AS order_status
FROM oms.outbox WHERE aggregateid = :'p_old' AND type = 'order.canceled';
-- Idempotent: nothing left to do.
SELECT oms_run_maintenance('expire_pending_orders');

-- ------------------------------------------------- release_reservations
INSERT INTO oms.reservations (order_id, sku, quantity, status, expires_at)
VALUES (:'p_young', 'MT-A', 2, 'held', now() - interval '1 minute');
SELECT oms_run_maintenance('release_reservations');
SELECT status FROM oms.reservations WHERE order_id = :'p_young';
SELECT oms_run_maintenance('release_reservations');

-- ------------------------------------------------- purge_idempotency_keys
SELECT oms_create_order('mt-key', '[{"sku": "MT-A", "quantity": 1, "unit_price": 1}]', 'EUR', 'mt-key-old') IS NOT NULL AS created;
SELECT oms_create_order('mt-key', '[{"sku": "MT-A", "quantity": 1, "unit_price": 1}]', 'EUR', 'mt-key-new') IS NOT NULL AS created;
UPDATE oms.idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'mt-key-old';
SELECT oms_run_maintenance('purge_idempotency_keys');
SELECT key FROM oms.idempotency_keys WHERE key LIKE 'mt-key-%' ORDER BY key;

-- ------------------------------------------------- redrive_sagas
-- A saga due now is not stuck: nothing runs.
SELECT oms_pay_order(:'p_young', 'test_ok') ->> 'status' AS status;
DELETE FROM oms.reservations WHERE order_id = :'p_young';
SET oms.saga_stuck_after = '20d';
SELECT oms_run_maintenance('redrive_sagas');
SELECT status, (t.saga(id)).* FROM oms.orders WHERE id = :'p_young';
-- Overdue by more than saga_stuck_after: run here, to the end.
UPDATE oms.sagas SET next_run_at = now() - interval '21 days' WHERE order_id = :'p_young';
SELECT r -> 'overdue' AS overdue, (r ->> 'steps')::int >= 3 AS ran_its_steps
FROM oms_run_maintenance('redrive_sagas') AS m, jsonb_extract_path(m, 'redrive_sagas') AS r;
SELECT status, (t.saga(id)).* FROM oms.orders WHERE id = :'p_young';

-- ------------------------------------------------- prune: timeline
-- An unfinished order: paid, its saga still due (not run).
SELECT t.new_order('mt-busy', '[{"sku": "MT-A", "quantity": 1, "unit_price": 500}]', 'test_ok') AS p_busy \gset
-- Back-date the whole timeline of four orders by 60 days (the timeline is
-- append-only, so the trigger is set aside for this).
BEGIN;
ALTER TABLE oms.order_events DISABLE TRIGGER order_events_append_only;
UPDATE oms.order_events SET occurred_at = occurred_at - interval '60 days'
WHERE order_id IN (:'p_old', :'p_paid', :'p_busy', :'p_young');
ALTER TABLE oms.order_events ENABLE ALWAYS TRIGGER order_events_append_only;
COMMIT;
-- A newer entry of a finished order stays.
SELECT oms._timeline(:'p_paid', 'mt.note', '{}') IS NULL AS noted;
CREATE TEMP VIEW mt_timeline AS
	SELECT o.customer_id, o.status, count(e.seq) AS entries
	FROM oms.orders o LEFT JOIN oms.order_events e ON e.order_id = o.id
	WHERE o.id IN (:'p_old', :'p_paid', :'p_busy', :'p_young')
	GROUP BY o.customer_id, o.status ORDER BY o.customer_id;
SELECT * FROM mt_timeline;

-- Dead letters are never pruned, whatever their age or status: the
-- metrics and the failure ranking count them.
INSERT INTO oms.dead_letters (kind, order_id, step, error, status, created_at, replayed_at) VALUES
	('saga_failed', :'p_old', 'mt-old-failed', '{}', 'open', now() - interval '60 days', NULL),
	('publish', :'p_old', 'mt-old-open', '{}', 'open', now() - interval '60 days', NULL),
	('publish', :'p_old', 'mt-old-replayed', '{}', 'replayed', now() - interval '61 days', now() - interval '60 days'),
	('publish', :'p_old', 'mt-new-replayed', '{}', 'replayed', now() - interval '61 days', now() - interval '1 day');

-- 0 keeps everything.
SET oms.timeline_retention = 0;
SET oms.inbox_retention = 0;
SELECT oms_run_maintenance('prune');
SELECT * FROM mt_timeline;

-- 30 days: finished orders (canceled, confirmed: also the one redriven
-- above) lose their old entries, not the newer one; the order whose saga
-- is in flight keeps everything.  Every dead letter stays.
SET oms.timeline_retention = '30d';
SELECT oms_run_maintenance('prune');
SELECT * FROM mt_timeline;
SELECT step FROM oms.dead_letters WHERE step LIKE 'mt-%' ORDER BY step;
SELECT oms_run_maintenance('prune');

-- ------------------------------------------------- prune: inbox and commands
SELECT id AS pay_paid FROM oms.payments WHERE order_id = :'p_paid' \gset
SELECT id AS pay_busy FROM oms.payments WHERE order_id = :'p_busy' \gset
INSERT INTO oms.payment_commands (correlation_id, payment_id, order_id, command, amount, sent_at) VALUES
	('mt-answered', :'pay_paid', :'p_paid', 'charge', 500, now() - interval '60 days'),
	('mt-late', :'pay_paid', :'p_paid', 'charge', 500, now() - interval '60 days'),
	('mt-unanswered', :'pay_paid', :'p_paid', 'void', 500, now() - interval '60 days'),
	('mt-recent-reply', :'pay_paid', :'p_paid', 'refund', 500, now() - interval '60 days'),
	('mt-busy-order', :'pay_busy', :'p_busy', 'charge', 500, now() - interval '60 days');
INSERT INTO oms.inbox (message_id, correlation_id, outcome, body, result, received_at) VALUES
	('mt-1', 'mt-answered', 'approved', '{}', 'applied', now() - interval '59 days'),
	('mt-2', 'mt-answered', 'approved', '{}', 'duplicate', now() - interval '58 days'),
	('mt-3', 'mt-late', 'approved', '{}', 'late', now() - interval '59 days'),
	('mt-4', 'mt-recent-reply', 'approved', '{}', 'applied', now() - interval '1 day'),
	('mt-5', 'mt-busy-order', 'approved', '{}', 'applied', now() - interval '59 days'),
	('mt-6', NULL, NULL, NULL, 'rejected', now() - interval '59 days'),
	('mt-7', 'mt-nothing', 'approved', '{}', 'rejected', now() - interval '59 days'),
	('mt-8', NULL, NULL, NULL, 'rejected', now() - interval '1 day');
SET oms.inbox_retention = '30d';
SELECT oms_run_maintenance('prune');
SELECT correlation_id AS kept_command FROM oms.payment_commands WHERE correlation_id LIKE 'mt-%' ORDER BY 1;
SELECT message_id AS kept_reply, correlation_id FROM oms.inbox WHERE message_id LIKE 'mt-%' ORDER BY 1;
SELECT oms_run_maintenance('prune');
RESET oms.timeline_retention;
RESET oms.inbox_retention;

-- ------------------------------------------------- a failing task
-- The error is recorded and returned, the task's work rolls back, and the
-- other tasks still run.
BEGIN;
CREATE FUNCTION t.boom() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'boom' USING ERRCODE = 'P0001';
END;
$$;
CREATE TRIGGER boom BEFORE DELETE ON oms.idempotency_keys FOR EACH ROW EXECUTE FUNCTION t.boom();
UPDATE oms.idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = 'mt-key-new';
SELECT m -> 'purge_idempotency_keys' AS purge, m -> 'release_reservations' AS release
FROM oms_run_maintenance() AS m;
SELECT task, runs, failures, last_error FROM oms.maintenance_tasks WHERE task = 'purge_idempotency_keys';
SELECT count(*) AS key_kept FROM oms.idempotency_keys WHERE key = 'mt-key-new';
ROLLBACK;

-- ------------------------------------------------- the record of runs
SELECT task, run_by, runs, failures, last_started_at IS NOT NULL AS ran,
	   last_run_by = current_setting('application_name') AS by_this_session, last_error
FROM oms.maintenance_status;

-- The worker's round runs the tasks whose period has passed: none now.
SELECT oms._maintenance_tick() AS tasks_run;
-- An hour later for prune, it runs (as the worker).
UPDATE oms.maintenance_tasks SET last_started_at = now() - interval '1 hour' WHERE task = 'prune';
SELECT oms._maintenance_tick() AS tasks_run;
SELECT task, last_run_by FROM oms.maintenance_tasks WHERE task = 'prune';
-- A task that ran but left work behind (a full batch) is due at once.
UPDATE oms.maintenance_tasks SET last_result = '{"canceled": 1000, "more": true}' WHERE task = 'expire_pending_orders';
SELECT oms._maintenance_tick() AS tasks_run;
-- A recorded pg_cron job that does not exist (pg_cron is not even
-- installed here) does not stop the worker: the stale record is cleared.
UPDATE oms.maintenance_tasks SET cron_database = current_database(), cron_job_name = 'oms-x-release_reservations',
	cron_jobid = 42, cron_schedule = '* * * * *', last_started_at = now() - interval '1 hour'
WHERE task = 'release_reservations';
SELECT task, run_by FROM oms.maintenance_status WHERE task = 'release_reservations';
SELECT oms._maintenance_tick() AS tasks_run;
SELECT task, run_by, cron_jobid, last_run_by FROM oms.maintenance_status WHERE task = 'release_reservations';

-- ------------------------------------------------- pg_cron, not installed here
-- The jobs oms_schedule_maintenance would register (database name masked).
SELECT task, replace(job_name, current_database(), '<db>') AS job_name, schedule, command,
	   replace(schedule_sql, current_database(), '<db>') AS schedule_sql
FROM oms_maintenance_jobs();
SELECT task, schedule FROM oms_maintenance_jobs('{"prune": "17 3 * * *", "redrive_sagas": null}');
SELECT t.err($$SELECT oms_schedule_maintenance()$$);
SELECT t.err($$SELECT oms_unschedule_maintenance()$$);
SELECT t.err($$SELECT oms_schedule_maintenance('{"vacuum": "* * * * *"}')$$);
SELECT t.err($$SELECT oms_schedule_maintenance('["prune"]')$$);
SELECT t.err($$SELECT oms_schedule_maintenance('{"prune": 5}')$$);
SELECT t.err($$SELECT oms_schedule_maintenance(NULL)$$);
-- Nothing was recorded as scheduled.
SELECT count(*) AS scheduled FROM oms.maintenance_tasks WHERE cron_jobid IS NOT NULL;

-- ------------------------------------------------- privileges
CREATE ROLE mt_app LOGIN IN ROLE oms_app;
CREATE ROLE mt_admin LOGIN IN ROLE oms_admin;
SET ROLE mt_app;
SELECT t.err($$SELECT oms_run_maintenance()$$);
SELECT t.err($$SELECT oms_schedule_maintenance()$$);
RESET ROLE;
SET ROLE mt_admin;
SELECT jsonb_object_keys(oms_run_maintenance('release_reservations')) AS ran;
SELECT count(*) AS visible_tasks FROM oms.maintenance_status;
RESET ROLE;
DROP ROLE mt_app;
DROP ROLE mt_admin;
RESET oms.pending_order_ttl;
RESET oms.saga_stuck_after;
