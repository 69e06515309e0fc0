-- pg_cron.sql: the pg_cron glue of the maintenance tasks.
--
-- pg_cron is optional, and oms works the same without it: the worker runs
-- every task that no pg_cron job runs (maintenance.sql).  This file owns
-- everything that knows about pg_cron: finding it in this database
-- (oms._cron_schema, oms._require_cron), the jobs oms would register
-- (oms._maintenance_jobs, oms_maintenance_jobs), registering and removing
-- them (oms_schedule_maintenance, oms_unschedule_maintenance), and asking
-- whether a recorded job still runs its task (oms._cron_runs_task, which
-- the worker's round calls).  Nothing here refers to pg_cron's schema
-- except through dynamic SQL built after checking that pg_cron is
-- installed, so the extension installs, and keeps working, without it.
-- The jobs call oms._run_maintenance(), never a function in the
-- extension's schema: a job runs as a superuser.
--
-- requires: schema maintenance

/*
 * The schema of pg_cron's objects when the extension is installed in this
 * database, else NULL.  pg_cron always creates them in schema cron (the
 * extension itself is registered in the schema it was created from).
 * pg_cron is optional: its objects are only ever reached through dynamic
 * SQL built from this.
 */
CREATE FUNCTION oms._cron_schema()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT 'cron' FROM pg_catalog.pg_extension AS e
	WHERE e.extname = 'pg_cron' AND pg_catalog.to_regclass('cron.job') IS NOT NULL;
$$;
COMMENT ON FUNCTION oms._cron_schema() IS 'The schema of the pg_cron extension in this database, or NULL';

-- 55000 with a hint when pg_cron is not usable from this database.
CREATE FUNCTION oms._require_cron()
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_schema text := oms._cron_schema();
	v_cron_db text := pg_catalog.current_setting('cron.database_name', true);
BEGIN
	IF v_schema IS NOT NULL THEN
		RETURN v_schema;
	END IF;
	IF v_cron_db IS NOT NULL AND v_cron_db <> pg_catalog.current_database() THEN
		RAISE EXCEPTION 'pg_cron runs in database "%", not in this one', v_cron_db
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('pg_cron reads its jobs from cron.database_name (%s) only, and oms schedules its jobs through the pg_cron extension of the current database (%s).',
											 v_cron_db, pg_catalog.current_database()),
				  HINT = pg_catalog.format('In database %s, run the statements of the schedule_sql column of oms_maintenance_jobs(), or leave maintenance to the oms worker (oms.maintenance_interval).',
										   v_cron_db);
	END IF;
	RAISE EXCEPTION 'pg_cron is not installed in this database'
		USING ERRCODE = 'object_not_in_prerequisite_state',
			  HINT = pg_catalog.format('Add pg_cron to shared_preload_libraries, set cron.database_name = ''%s'', restart, then CREATE EXTENSION pg_cron; or leave maintenance to the oms worker (oms.maintenance_interval).',
									   pg_catalog.current_database());
END;
$$;
COMMENT ON FUNCTION oms._require_cron() IS
	'Returns the pg_cron schema, or raises 55000 saying why pg_cron cannot be used from this database';

CREATE FUNCTION oms._maintenance_jobs(p_schedules jsonb)
RETURNS TABLE (task text, job_name text, schedule text, command text, schedule_sql text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_tasks text[] := oms._maintenance_task_names();
	v_key text;
BEGIN
	PERFORM oms._check_not_null('schedules', p_schedules);
	IF pg_catalog.jsonb_typeof(p_schedules) <> 'object' THEN
		RAISE EXCEPTION 'schedules must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Map task names to pg_cron schedules, e.g. {"prune": "17 * * * *"}; null leaves a task to the worker.';
	END IF;
	FOR v_key IN SELECT k FROM pg_catalog.jsonb_object_keys(p_schedules) AS k ORDER BY 1
	LOOP
		IF NOT v_key = ANY (v_tasks) THEN
			RAISE EXCEPTION 'unknown maintenance task "%"', pg_catalog.left(v_key, 100)
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = pg_catalog.format('The tasks are: %s.', pg_catalog.array_to_string(v_tasks, ', '));
		END IF;
		IF pg_catalog.jsonb_typeof(p_schedules -> v_key) NOT IN ('string', 'null') THEN
			RAISE EXCEPTION 'the schedule of maintenance task "%" must be a string or null', v_key
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
	END LOOP;
	RETURN QUERY
		SELECT j.task, j.job_name, j.schedule, j.command,
			   pg_catalog.format('SELECT cron.schedule_in_database(%L, %L, %L, %L);',
								 j.job_name, j.schedule, j.command, pg_catalog.current_database())
		FROM (SELECT t.task, t.position,
					 pg_catalog.format('oms-%s-%s', pg_catalog.current_database(), t.task) AS job_name,
					 CASE WHEN p_schedules ? t.task
						  THEN p_schedules ->> t.task
						  ELSE t.default_schedule END AS schedule,
					 pg_catalog.format('SELECT oms._run_maintenance(%L)', t.task) AS command
			  FROM oms.maintenance_tasks AS t) AS j
		WHERE j.schedule IS NOT NULL
		ORDER BY j.position;
END;
$$;
COMMENT ON FUNCTION oms._maintenance_jobs(jsonb) IS
	'The pg_cron jobs of the maintenance tasks for a schedules map: oms_maintenance_jobs for oms''s own code';

CREATE FUNCTION @extschema@.oms_maintenance_jobs(schedules jsonb DEFAULT '{}')
RETURNS TABLE (task text, job_name text, schedule text, command text, schedule_sql text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN QUERY SELECT * FROM oms._maintenance_jobs(oms_maintenance_jobs.schedules);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_maintenance_jobs(jsonb) IS
	'The pg_cron jobs oms_schedule_maintenance() registers: name, schedule and command per task, and the cron.schedule_in_database() call for a pg_cron that runs in another database';

/*
 * Registers one pg_cron job per task, named oms-<database>-<task>, and
 * records it in oms.maintenance_tasks so the worker leaves the task alone.
 * pg_cron's cron.schedule(name, ...) replaces a job of the same name and
 * user, so running this again updates the jobs instead of adding more.
 * The jobs belong to (and run as) the owner of this function, the
 * extension's owner.
 */
CREATE FUNCTION @extschema@.oms_schedule_maintenance(schedules jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_cron text;
	v_job record;
	v_task record;
	v_old record;
	v_jobid bigint;
	v_action text;
	v_jobs jsonb := '[]';
	v_removed jsonb := '[]';
BEGIN
	-- Arguments first: a bad schedules map fails the same with or without pg_cron.
	PERFORM 1 FROM oms._maintenance_jobs(oms_schedule_maintenance.schedules);
	v_cron := oms._require_cron();

	FOR v_task IN SELECT t.task, t.position FROM oms.maintenance_tasks AS t ORDER BY t.position FOR UPDATE
	LOOP
		SELECT * INTO v_job FROM oms._maintenance_jobs(oms_schedule_maintenance.schedules) AS j
		WHERE j.task = v_task.task;
		EXECUTE pg_catalog.format('SELECT j.jobid, j.schedule, j.command FROM %I.job AS j '
								  || 'WHERE j.jobname = $1 AND j.username = current_user', v_cron)
			INTO v_old USING pg_catalog.format('oms-%s-%s', pg_catalog.current_database(), v_task.task);
		IF v_job.task IS NULL THEN
			-- null schedule: this task goes back to the worker.
			IF v_old.jobid IS NOT NULL THEN
				EXECUTE pg_catalog.format('SELECT %I.unschedule($1)', v_cron) USING v_old.jobid;
				v_removed := v_removed || pg_catalog.jsonb_build_object('task', v_task.task, 'jobid', v_old.jobid);
			END IF;
			UPDATE oms.maintenance_tasks AS t
			SET cron_database = NULL, cron_job_name = NULL, cron_jobid = NULL, cron_schedule = NULL,
				cron_scheduled_at = NULL
			WHERE t.task = v_task.task;
			CONTINUE;
		END IF;
		IF v_old.jobid IS NOT NULL AND v_old.schedule = v_job.schedule AND v_old.command = v_job.command THEN
			v_jobid := v_old.jobid;
			v_action := 'unchanged';
		ELSE
			EXECUTE pg_catalog.format('SELECT %I.schedule($1, $2, $3)', v_cron)
				INTO v_jobid USING v_job.job_name, v_job.schedule, v_job.command;
			v_action := CASE WHEN v_old.jobid IS NULL THEN 'created' ELSE 'updated' END;
		END IF;
		UPDATE oms.maintenance_tasks AS t
		SET cron_database = pg_catalog.current_database(), cron_job_name = v_job.job_name,
			cron_jobid = v_jobid, cron_schedule = v_job.schedule, cron_scheduled_at = pg_catalog.now()
		WHERE t.task = v_task.task;
		v_jobs := v_jobs || pg_catalog.jsonb_build_object('task', v_task.task, 'job_name', v_job.job_name,
														  'jobid', v_jobid, 'schedule', v_job.schedule,
														  'command', v_job.command, 'action', v_action);
	END LOOP;
	RETURN pg_catalog.jsonb_build_object('database', pg_catalog.current_database(), 'jobs', v_jobs,
										 'unscheduled', v_removed);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_schedule_maintenance(jsonb) IS
	'Registers (or updates) one pg_cron job per maintenance task, oms-<database>-<task>; the worker then leaves those tasks to pg_cron';

CREATE FUNCTION @extschema@.oms_unschedule_maintenance()
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_cron text := oms._require_cron();
	v_task record;
	v_jobid bigint;
	v_removed jsonb := '[]';
BEGIN
	FOR v_task IN SELECT t.task FROM oms.maintenance_tasks AS t ORDER BY t.position FOR UPDATE
	LOOP
		EXECUTE pg_catalog.format('SELECT j.jobid FROM %I.job AS j '
								  || 'WHERE j.jobname = $1 AND j.username = current_user', v_cron)
			INTO v_jobid USING pg_catalog.format('oms-%s-%s', pg_catalog.current_database(), v_task.task);
		IF v_jobid IS NOT NULL THEN
			EXECUTE pg_catalog.format('SELECT %I.unschedule($1)', v_cron) USING v_jobid;
			v_removed := v_removed || pg_catalog.jsonb_build_object('task', v_task.task,
				'job_name', pg_catalog.format('oms-%s-%s', pg_catalog.current_database(), v_task.task),
				'jobid', v_jobid);
		END IF;
		UPDATE oms.maintenance_tasks AS t
		SET cron_database = NULL, cron_job_name = NULL, cron_jobid = NULL, cron_schedule = NULL,
			cron_scheduled_at = NULL
		WHERE t.task = v_task.task;
	END LOOP;
	RETURN pg_catalog.jsonb_build_object('database', pg_catalog.current_database(), 'removed', v_removed);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_unschedule_maintenance() IS
	'Removes the pg_cron jobs of oms_schedule_maintenance(); the worker runs maintenance again';

/*
 * Whether pg_cron runs a task: recorded by oms_schedule_maintenance(), and
 * the job still exists and is active.  A job removed behind our back (by
 * cron.unschedule, or DROP EXTENSION pg_cron) hands the task back to the
 * worker, and the stale record is cleared.
 */
CREATE FUNCTION oms._cron_runs_task(p_task oms.maintenance_tasks)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_cron text;
	v_active boolean;
BEGIN
	IF p_task.cron_jobid IS NULL THEN
		RETURN false;
	END IF;
	v_cron := oms._cron_schema();
	IF v_cron IS NOT NULL THEN
		EXECUTE pg_catalog.format('SELECT j.active FROM %I.job AS j WHERE j.jobid = $1', v_cron)
			INTO v_active USING p_task.cron_jobid;
		IF v_active THEN
			RETURN true;
		END IF;
	END IF;
	UPDATE oms.maintenance_tasks AS t
	SET cron_database = NULL, cron_job_name = NULL, cron_jobid = NULL, cron_schedule = NULL,
		cron_scheduled_at = NULL
	WHERE t.task = p_task.task;
	RETURN false;
END;
$$;
COMMENT ON FUNCTION oms._cron_runs_task(oms.maintenance_tasks) IS
	'True when the pg_cron job recorded for a task exists and is active; otherwise clears the record';

-- Privileges of the objects above: nothing for PUBLIC; oms_admin schedules
-- (the roles come from roles.sql, checks.sql verifies).
REVOKE ALL ON FUNCTION
	oms._cron_schema(),
	oms._require_cron(),
	oms._cron_runs_task(oms.maintenance_tasks),
	oms._maintenance_jobs(jsonb),
	@extschema@.oms_maintenance_jobs(jsonb),
	@extschema@.oms_schedule_maintenance(jsonb),
	@extschema@.oms_unschedule_maintenance()
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	@extschema@.oms_maintenance_jobs(jsonb),
	@extschema@.oms_schedule_maintenance(jsonb),
	@extschema@.oms_unschedule_maintenance()
TO oms_admin;
