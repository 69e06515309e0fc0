-- worker.sql: the SQL face of the oms background worker (src/worker.c,
-- src/launcher.c, src/shmem.c).
--
-- requires: schema saga

CREATE FUNCTION oms._notify_worker()
RETURNS void
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_notify_worker'
LANGUAGE c VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION oms._notify_worker() IS
	'Wakes this database''s oms worker when the calling transaction commits (nothing happens on rollback); API functions call it when they create work';

CREATE FUNCTION @extschema@.oms_worker_status()
RETURNS TABLE (
	database		name,
	pid				integer,
	alive			boolean,
	last_loop		timestamptz,
	loops			bigint,
	units			bigint,
	last_error		text,
	last_error_at	timestamptz
)
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_worker_status'
LANGUAGE c VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.oms_worker_status() IS
	'One row per database in oms.database_name: its main worker''s pid (null when none runs), whether it runs, when it last looped, loops and units of work done since server start, and the last error a batch raised (kept until the next error)';

-- The same C function for oms's own code (see oms._transition_allowed).
CREATE FUNCTION oms._worker_status()
RETURNS TABLE (
	database		name,
	pid				integer,
	alive			boolean,
	last_loop		timestamptz,
	loops			bigint,
	units			bigint,
	last_error		text,
	last_error_at	timestamptz
)
LANGUAGE c VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_worker_status';
COMMENT ON FUNCTION oms._worker_status() IS 'oms_worker_status for oms''s own code';

CREATE FUNCTION @extschema@.oms_saga_worker_status()
RETURNS TABLE (
	database		name,
	worker			integer,
	role			text,
	pid				integer,
	alive			boolean,
	last_loop		timestamptz,
	loops			bigint,
	units			bigint,
	last_error		text,
	last_error_at	timestamptz,
	idle			boolean
)
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_saga_worker_status'
LANGUAGE c VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.oms_saga_worker_status() IS
	'One row per process that runs saga steps for a database in oms.database_name: worker 0 is the main worker (role main: sagas, relay, inbox, maintenance), workers 1 to oms.saga_workers - 1 run sagas only (role saga); pid, liveness, loops, units of work, last error, and whether it sleeps with nothing due (idle)';

-- The same C function for oms's own code (see oms._transition_allowed).
CREATE FUNCTION oms._saga_worker_status()
RETURNS TABLE (
	database		name,
	worker			integer,
	role			text,
	pid				integer,
	alive			boolean,
	last_loop		timestamptz,
	loops			bigint,
	units			bigint,
	last_error		text,
	last_error_at	timestamptz,
	idle			boolean
)
LANGUAGE c VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_saga_worker_status';
COMMENT ON FUNCTION oms._saga_worker_status() IS 'oms_saga_worker_status for oms''s own code';

-- What the C workers call once per batch (src/worker.c).  Nothing here
-- runs whatever the load: expired reservations stop counting by
-- themselves, and the maintenance task release_reservations marks them.
CREATE FUNCTION oms._worker_tick(p_batch integer)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN oms._run_sagas(p_batch, pg_catalog.clock_timestamp());
END;
$$;
COMMENT ON FUNCTION oms._worker_tick(integer) IS
	'One batch of background work: run up to p_batch due saga steps';

-- The worker sleeps until then at most (src/worker.c); sagas_due_idx
-- answers it from the index.  Only times still ahead count: a saga that is
-- due now and was not run is held by an API call, whose commit wakes the
-- worker.
CREATE FUNCTION oms._next_saga_due()
RETURNS timestamptz
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.min(s.next_run_at) FROM oms.sagas AS s
	WHERE s.status IN ('running', 'compensating') AND s.next_run_at > pg_catalog.clock_timestamp();
$$;
COMMENT ON FUNCTION oms._next_saga_due() IS
	'When the next running or compensating saga falls due, if after now; null when none will';

-- After a batch that was not full: a saga still due now was skipped
-- because another runner's batch or an API call held its saga, order or
-- stock rows.  The worker then looks again soon instead of after the
-- naptime (src/worker.c); sagas_due_idx answers it from the index.
CREATE FUNCTION oms._sagas_due_now()
RETURNS boolean
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT EXISTS (SELECT FROM oms.sagas AS s
				   WHERE s.status IN ('running', 'compensating') AND s.next_run_at <= pg_catalog.clock_timestamp());
$$;
COMMENT ON FUNCTION oms._sagas_due_now() IS
	'Whether a running or compensating saga is due now (after a partial batch: one that another transaction held)';

REVOKE ALL ON FUNCTION oms._notify_worker() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._sagas_due_now() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._next_saga_due() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._worker_tick(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_worker_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._worker_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_saga_worker_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._saga_worker_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._notify_worker() TO oms_admin;
GRANT EXECUTE ON FUNCTION @extschema@.oms_worker_status() TO oms_admin, oms_reader;
GRANT EXECUTE ON FUNCTION @extschema@.oms_saga_worker_status() TO oms_admin, oms_reader;
