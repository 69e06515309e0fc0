-- maintenance.sql: the housekeeping tasks and who runs them.
--
-- Five tasks, each a function that is idempotent, safe to run in several
-- sessions at once (rows are claimed with SKIP LOCKED, a task takes a
-- transaction advisory lock and is skipped where another session runs
-- it), bounded per run, and returns what it did as jsonb:
--
--   release_reservations    held reservations past expires_at -> expired
--   expire_pending_orders   pending orders older than oms.pending_order_ttl -> canceled
--   redrive_sagas           sagas overdue by oms.saga_stuck_after -> run here
--   purge_idempotency_keys  expired idempotency keys -> deleted
--   prune                   old timeline entries of finished orders, and old
--                           inbox rows with their answered commands -> deleted
--
-- oms_run_maintenance() runs them from SQL (pg_cron's jobs call it);
-- oms._maintenance_tick() is what the worker calls every
-- oms.maintenance_interval (src/worker.c).  oms.maintenance_tasks records,
-- per task, the last run and whether pg_cron runs it; the worker leaves the
-- tasks pg_cron runs alone.  Scheduling the tasks with pg_cron, and
-- finding out whether pg_cron still runs one, is pg_cron.sql's.
--
-- requires: schema saga inbox

CREATE TABLE oms.maintenance_tasks (
	task			text PRIMARY KEY,
	position		smallint NOT NULL UNIQUE,
	description		text NOT NULL,
	default_schedule text NOT NULL,
	period			interval NOT NULL,
	cron_database	text,
	cron_job_name	text,
	cron_jobid		bigint,
	cron_schedule	text,
	cron_scheduled_at timestamptz,
	last_started_at	timestamptz,
	last_finished_at timestamptz,
	last_run_by		text,
	last_result		jsonb,
	last_error		text,
	last_error_at	timestamptz,
	runs			bigint NOT NULL DEFAULT 0,
	failures		bigint NOT NULL DEFAULT 0,
	CHECK ((cron_jobid IS NULL) = (cron_job_name IS NULL))
);
COMMENT ON TABLE oms.maintenance_tasks IS
	'One row per maintenance task: its default pg_cron schedule and worker period, the pg_cron job that runs it (if any), and its last run';
COMMENT ON COLUMN oms.maintenance_tasks.default_schedule IS
	'The pg_cron schedule oms_schedule_maintenance() uses unless told otherwise';
COMMENT ON COLUMN oms.maintenance_tasks.period IS
	'The worker runs the task when its last run is this old (and at most every oms.maintenance_interval)';
COMMENT ON COLUMN oms.maintenance_tasks.cron_jobid IS
	'The pg_cron job that runs the task, set by oms_schedule_maintenance(); while set, the worker does not run the task';
COMMENT ON COLUMN oms.maintenance_tasks.last_result IS
	'What the last run did (counts), or {"error": ...} when it failed';
COMMENT ON COLUMN oms.maintenance_tasks.last_run_by IS
	'worker, or the application_name of the session that ran oms_run_maintenance() (pg_cron for its jobs)';

-- Not in pg_dump's data (no pg_extension_config_dump): the run history
-- describes this server, and a restored database has no pg_cron jobs of
-- ours until oms_schedule_maintenance() runs there.
INSERT INTO oms.maintenance_tasks (task, position, description, default_schedule, period) VALUES
	('release_reservations', 1, 'Marks held reservations past their expiry as expired',
	 '* * * * *', '1 minute'),
	('redrive_sagas', 2, 'Runs sagas whose next step is overdue by more than oms.saga_stuck_after',
	 '* * * * *', '1 minute'),
	('expire_pending_orders', 3, 'Cancels pending orders older than oms.pending_order_ttl (reason expired)',
	 '* * * * *', '1 minute'),
	('purge_idempotency_keys', 4, 'Deletes expired idempotency keys',
	 '*/5 * * * *', '5 minutes'),
	('prune', 5, 'Deletes timeline entries, inbox rows and answered payment commands past their retention',
	 '*/5 * * * *', '5 minutes');

-- Finished orders keep no saga in flight; their timeline, replies and
-- commands are history.
CREATE FUNCTION oms._order_at_rest(p_order_id uuid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT NOT EXISTS (SELECT FROM oms.orders AS o
					   WHERE o.id = p_order_id AND o.status IN ('pending', 'processing', 'cancel_requested'))
	   AND NOT EXISTS (SELECT FROM oms.sagas AS s
					   WHERE s.order_id = p_order_id AND s.status IN ('running', 'compensating', 'stuck'));
$$;
COMMENT ON FUNCTION oms._order_at_rest(uuid) IS
	'True when an order is finished: not pending, processing or cancel_requested, and no saga of it is running, compensating or stuck';

-- Timeline entries arrive in time order: a BRIN index finds the old ones
-- for a fraction of a B-tree's cost on every insert.
CREATE INDEX order_events_occurred_brin ON oms.order_events USING brin (occurred_at);
CREATE INDEX inbox_received_brin ON oms.inbox USING brin (received_at);
CREATE INDEX payment_commands_sent_brin ON oms.payment_commands USING brin (sent_at);

CREATE FUNCTION oms._maintenance_release_reservations()
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN pg_catalog.jsonb_build_object('expired', oms._release_expired_reservations());
END;
$$;
COMMENT ON FUNCTION oms._maintenance_release_reservations() IS
	'Maintenance task release_reservations: {"expired": n}';

CREATE FUNCTION oms._maintenance_purge_idempotency_keys()
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN pg_catalog.jsonb_build_object('purged', oms._purge_idempotency_keys());
END;
$$;
COMMENT ON FUNCTION oms._maintenance_purge_idempotency_keys() IS
	'Maintenance task purge_idempotency_keys: {"purged": n}';

/*
 * Cancels up to p_limit pending orders created more than
 * oms.pending_order_ttl ago, oldest first, through the same status change
 * as oms_cancel_order: a timeline entry and an order.canceled event with
 * reason "expired".  Orders another session holds (being paid or canceled
 * right now) are skipped, never waited for; the lock re-reads the row, so
 * an order paid since the scan is no longer pending and is left alone.
 */
CREATE FUNCTION oms._maintenance_expire_pending_orders(p_limit integer)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_ttl interval := pg_catalog.current_setting('oms.pending_order_ttl')::interval;
	v_id uuid;
	v_count integer := 0;
BEGIN
	IF v_ttl = interval '0' THEN
		RETURN pg_catalog.jsonb_build_object('canceled', 0, 'disabled', true);
	END IF;
	FOR v_id IN
		SELECT o.id FROM oms.orders AS o
		WHERE o.status = 'pending' AND o.created_at <= pg_catalog.now() - v_ttl
		ORDER BY o.created_at
		LIMIT p_limit
		FOR NO KEY UPDATE SKIP LOCKED
	LOOP
		PERFORM oms._change_status(v_id, 'canceled', 'order.canceled',
			pg_catalog.jsonb_build_object('reason', 'expired', 'idempotency_key', NULL));
		v_count := v_count + 1;
	END LOOP;
	RETURN pg_catalog.jsonb_build_object('canceled', v_count, 'more', v_count >= p_limit);
END;
$$;
COMMENT ON FUNCTION oms._maintenance_expire_pending_orders(integer) IS
	'Maintenance task expire_pending_orders: cancels up to p_limit abandoned pending orders; {"canceled": n, "more": bool}';

/*
 * Sagas whose next step has been due for longer than oms.saga_stuck_after
 * mean the worker is not keeping up (or not running): run due sagas here,
 * oldest due first, up to p_max steps.  Nothing runs when no saga is that
 * late, so a healthy worker never sees this task compete with it.
 */
CREATE FUNCTION oms._maintenance_redrive_sagas(p_max integer)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_after interval := pg_catalog.current_setting('oms.saga_stuck_after')::interval;
	v_overdue integer;
	v_steps integer := 0;
BEGIN
	SELECT pg_catalog.count(*) INTO v_overdue
	FROM (SELECT FROM oms.sagas AS s
		  WHERE s.status IN ('running', 'compensating')
			AND s.next_run_at <= pg_catalog.clock_timestamp() - v_after
		  LIMIT p_max) AS late;
	IF v_overdue > 0 THEN
		v_steps := oms._run_sagas(p_max, pg_catalog.clock_timestamp());
	END IF;
	RETURN pg_catalog.jsonb_build_object('overdue', v_overdue, 'steps', v_steps);
END;
$$;
COMMENT ON FUNCTION oms._maintenance_redrive_sagas(integer) IS
	'Maintenance task redrive_sagas: when sagas are overdue by oms.saga_stuck_after, runs up to p_max due steps; {"overdue": n, "steps": n}';

/*
 * Dead letters are never deleted: there is one per failed saga or event,
 * and the metrics' counters, the step latency histogram and the failure
 * ranking are computed from them.
 *
 * Deletes, up to p_limit rows of each kind per run:
 * - timeline entries older than oms.timeline_retention of finished orders;
 * - payment commands older than oms.inbox_retention that were answered,
 *   whose order is finished, and whose replies are all that old too,
 *   together with those replies; then inbox rows that old that belong to
 *   no command (rejected replies).
 * A command and its replies go together: a reply redelivered later finds
 * neither and is rejected as unknown (a "reply" dead letter, no effect),
 * whereas a command kept without its replies would take a redelivered
 * approval for a late one and refund it.  Unanswered commands are kept:
 * they are what lets a late approval be recognised and refunded.
 */
CREATE FUNCTION oms._maintenance_prune(p_limit integer)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_timeline_keep interval := pg_catalog.current_setting('oms.timeline_retention')::interval;
	v_inbox_keep interval := pg_catalog.current_setting('oms.inbox_retention')::interval;
	v_cutoff timestamptz;
	v_timeline bigint := 0;
	v_commands bigint := 0;
	v_replies bigint := 0;
	v_orphans bigint := 0;
BEGIN
	IF v_timeline_keep > interval '0' THEN
		v_cutoff := pg_catalog.now() - v_timeline_keep;
		WITH doomed AS (
			SELECT e.order_id, e.seq FROM oms.order_events AS e
			WHERE e.occurred_at < v_cutoff AND oms._order_at_rest(e.order_id)
			LIMIT p_limit
		), gone AS (
			DELETE FROM oms.order_events AS e USING doomed AS d
			WHERE e.order_id = d.order_id AND e.seq = d.seq
			RETURNING 1
		)
		SELECT pg_catalog.count(*) INTO v_timeline FROM gone;
	END IF;

	IF v_inbox_keep > interval '0' THEN
		v_cutoff := pg_catalog.now() - v_inbox_keep;
		WITH doomed AS (
			SELECT c.correlation_id FROM oms.payment_commands AS c
			WHERE c.sent_at < v_cutoff
			  AND EXISTS (SELECT FROM oms.inbox AS i
						  WHERE i.correlation_id = c.correlation_id AND i.result IN ('applied', 'late'))
			  AND NOT EXISTS (SELECT FROM oms.inbox AS i
							  WHERE i.correlation_id = c.correlation_id AND i.received_at >= v_cutoff)
			  AND oms._order_at_rest(c.order_id)
			ORDER BY c.sent_at
			LIMIT p_limit
			FOR UPDATE OF c SKIP LOCKED
		), replies AS (
			DELETE FROM oms.inbox AS i USING doomed AS d
			WHERE i.correlation_id = d.correlation_id
			RETURNING 1
		), commands AS (
			DELETE FROM oms.payment_commands AS c USING doomed AS d
			WHERE c.correlation_id = d.correlation_id
			RETURNING 1
		)
		SELECT (SELECT pg_catalog.count(*) FROM commands), (SELECT pg_catalog.count(*) FROM replies)
		INTO v_commands, v_replies;

		WITH doomed AS (
			SELECT i.message_id FROM oms.inbox AS i
			WHERE i.received_at < v_cutoff AND i.result <> 'received'
			  AND NOT EXISTS (SELECT FROM oms.payment_commands AS c WHERE c.correlation_id = i.correlation_id)
			LIMIT p_limit
			FOR UPDATE SKIP LOCKED
		), gone AS (
			DELETE FROM oms.inbox AS i USING doomed AS d
			WHERE i.message_id = d.message_id
			RETURNING 1
		)
		SELECT pg_catalog.count(*) INTO v_orphans FROM gone;
	END IF;

	RETURN pg_catalog.jsonb_build_object(
		'timeline_entries', v_timeline,
		'payment_commands', v_commands,
		'inbox', v_replies + v_orphans,
		'more', GREATEST(v_timeline, v_commands, v_orphans) >= p_limit);
END;
$$;
COMMENT ON FUNCTION oms._maintenance_prune(integer) IS
	'Maintenance task prune: deletes up to p_limit old rows of each kind per the retention settings; returns the counts';

-- The names of the tasks, in the order "all tasks" runs them.
CREATE FUNCTION oms._maintenance_task_names()
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.array_agg(t.task ORDER BY t.position) FROM oms.maintenance_tasks AS t;
$$;
COMMENT ON FUNCTION oms._maintenance_task_names() IS 'The maintenance task names, in run order';

/*
 * Runs one task and records the run.  A task another session is running
 * right now is skipped (transaction advisory lock, never waited for).  An
 * error is caught: the task's work rolls back, the error is recorded in
 * oms.maintenance_tasks and returned as {"error": ...}, and the other
 * tasks of the same call still run.
 */
CREATE FUNCTION oms._run_maintenance_task(p_task text, p_run_by text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_started timestamptz := pg_catalog.clock_timestamp();
	v_result jsonb;
	v_state text;
	v_message text;
	v_failed boolean := false;
BEGIN
	IF NOT pg_catalog.pg_try_advisory_xact_lock(7302516, pg_catalog.hashtext(p_task)) THEN
		RETURN pg_catalog.jsonb_build_object('skipped', 'another session is running this task');
	END IF;
	BEGIN
		v_result := CASE p_task
			WHEN 'release_reservations' THEN oms._maintenance_release_reservations()
			WHEN 'redrive_sagas' THEN
				oms._maintenance_redrive_sagas(pg_catalog.current_setting('oms.worker_batch_size')::integer)
			WHEN 'expire_pending_orders' THEN oms._maintenance_expire_pending_orders(1000)
			WHEN 'purge_idempotency_keys' THEN oms._maintenance_purge_idempotency_keys()
			WHEN 'prune' THEN oms._maintenance_prune(10000)
		END;
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
		v_failed := true;
		v_result := pg_catalog.jsonb_build_object('error',
			pg_catalog.jsonb_build_object('sqlstate', v_state, 'message', v_message));
		RAISE WARNING 'oms: maintenance task % failed: % (SQLSTATE %)', p_task, v_message, v_state;
	END;
	UPDATE oms.maintenance_tasks AS t
	SET last_started_at = v_started, last_finished_at = pg_catalog.clock_timestamp(),
		last_run_by = p_run_by, last_result = v_result, runs = t.runs + 1,
		failures = t.failures + CASE WHEN v_failed THEN 1 ELSE 0 END,
		last_error = CASE WHEN v_failed THEN v_message ELSE t.last_error END,
		last_error_at = CASE WHEN v_failed THEN v_started ELSE t.last_error_at END
	WHERE t.task = p_task;
	RETURN v_result;
END;
$$;
COMMENT ON FUNCTION oms._run_maintenance_task(text, text) IS
	'Runs one maintenance task (skipped when another session runs it), records the run, returns its result';

/*
 * Runs one task by name, or all of them (NULL).  Behind oms_run_maintenance
 * and the pg_cron jobs, which call it by this name: a job runs as a
 * superuser, and this schema, unlike the extension's, only the extension's
 * owner can change.
 */
CREATE FUNCTION oms._run_maintenance(p_task text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_tasks text[] := oms._maintenance_task_names();
	v_task text;
	v_run_by text := coalesce(nullif(pg_catalog.current_setting('application_name'), ''), session_user::text);
	v_result jsonb := '{}';
BEGIN
	IF p_task IS NOT NULL AND NOT p_task = ANY (v_tasks) THEN
		RAISE EXCEPTION 'unknown maintenance task "%"', pg_catalog.left(p_task, 100)
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = pg_catalog.format('The tasks are: %s.', pg_catalog.array_to_string(v_tasks, ', ')),
				  HINT = 'Pass NULL to run every task.';
	END IF;
	FOREACH v_task IN ARRAY v_tasks
	LOOP
		CONTINUE WHEN p_task IS NOT NULL AND v_task <> p_task;
		v_result := v_result || pg_catalog.jsonb_build_object(v_task, oms._run_maintenance_task(v_task, v_run_by));
	END LOOP;
	RETURN v_result;
END;
$$;
COMMENT ON FUNCTION oms._run_maintenance(text) IS
	'Runs one maintenance task by name, or all of them (NULL): oms_run_maintenance and the pg_cron jobs call it';

CREATE FUNCTION @extschema@.oms_run_maintenance(task text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN oms._run_maintenance(oms_run_maintenance.task);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_run_maintenance(text) IS
	'Runs one maintenance task by name, or all of them (NULL), records each run in oms.maintenance_tasks and returns what each did';

-- What the worker calls every oms.maintenance_interval (src/worker.c).
CREATE FUNCTION oms._maintenance_tick()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_interval interval := pg_catalog.current_setting('oms.maintenance_interval')::interval;
	v_task oms.maintenance_tasks;
	v_ran integer := 0;
BEGIN
	FOR v_task IN SELECT * FROM oms.maintenance_tasks AS t ORDER BY t.position
	LOOP
		CONTINUE WHEN oms._cron_runs_task(v_task);
		-- Due after its period, or at once when the last run left work
		-- behind (a full batch).  Ticks come every maintenance_interval;
		-- half an interval of slack keeps a task whose period equals the
		-- interval from skipping every other tick.
		CONTINUE WHEN v_task.last_started_at IS NOT NULL
			AND v_task.last_started_at > pg_catalog.now() - GREATEST(v_task.period, v_interval) + v_interval / 2
			AND NOT coalesce((v_task.last_result ->> 'more')::boolean, false);
		PERFORM oms._run_maintenance_task(v_task.task, 'worker');
		v_ran := v_ran + 1;
	END LOOP;
	RETURN v_ran;
END;
$$;
COMMENT ON FUNCTION oms._maintenance_tick() IS
	'The worker''s maintenance round: runs the tasks pg_cron does not run whose period has passed; returns how many ran';

CREATE VIEW oms.maintenance_status AS
	SELECT t.task,
		   CASE WHEN t.cron_jobid IS NOT NULL THEN 'pg_cron'
				WHEN pg_catalog.current_setting('oms.maintenance_interval')::interval = interval '0' THEN 'none'
				ELSE 'worker' END AS run_by,
		   CASE WHEN t.cron_jobid IS NOT NULL THEN t.cron_schedule
				WHEN pg_catalog.current_setting('oms.maintenance_interval')::interval = interval '0' THEN NULL
				ELSE pg_catalog.format('every %s s', pg_catalog.date_part('epoch', GREATEST(t.period,
					pg_catalog.current_setting('oms.maintenance_interval')::interval))::bigint) END AS schedule,
		   t.cron_job_name, t.cron_jobid,
		   t.last_started_at, t.last_finished_at - t.last_started_at AS last_duration,
		   t.last_run_by, t.last_result, t.last_error, t.last_error_at, t.runs, t.failures,
		   t.description
	FROM oms.maintenance_tasks AS t
	ORDER BY t.position;
COMMENT ON VIEW oms.maintenance_status IS
	'Per maintenance task: who runs it (pg_cron, the worker, or none), on which schedule, and its last run and result';

REVOKE ALL ON oms.maintenance_tasks, oms.maintenance_status FROM PUBLIC;
GRANT SELECT ON oms.maintenance_tasks, oms.maintenance_status TO oms_reader, oms_admin;
REVOKE ALL ON FUNCTION
	oms._order_at_rest(uuid),
	oms._maintenance_release_reservations(),
	oms._maintenance_purge_idempotency_keys(),
	oms._maintenance_expire_pending_orders(integer),
	oms._maintenance_redrive_sagas(integer),
	oms._maintenance_prune(integer),
	oms._maintenance_task_names(),
	oms._run_maintenance_task(text, text),
	oms._maintenance_tick(),
	oms._run_maintenance(text),
	@extschema@.oms_run_maintenance(text)
FROM PUBLIC;
-- oms_admin may run the tasks the way a pg_cron job does (a job scheduled
-- from pg_cron's own database runs as the role that scheduled it).
GRANT EXECUTE ON FUNCTION
	oms._run_maintenance(text),
	@extschema@.oms_run_maintenance(text)
TO oms_admin;
