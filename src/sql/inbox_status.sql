-- inbox_status.sql: the SQL face of the reply consumer's worker half
-- (src/inbox.c, src/kafka.c).  Concatenated after worker.sql, so the oms_*
-- roles exist here.

CREATE FUNCTION oms._inbox_shmem_status()
RETURNS jsonb
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_inbox_shmem_status'
LANGUAGE c VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION oms._inbox_shmem_status() IS
	'The reply consumer of the current database as kept in shared memory, as jsonb (null when oms.database_name does not list the database): worker_running, consumer (off, running, bad_config), applied, duplicates, late, rejected, other (counts of oms._apply_payment_reply results since server start), failures (reply transactions that failed and were retried), last_reply_at, partitions (assigned to this worker), lag (messages behind the high watermarks, null when unknown), lag_at, last_error, last_error_at';

REVOKE ALL ON FUNCTION oms._inbox_shmem_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._inbox_shmem_status() TO oms_admin, oms_reader;
