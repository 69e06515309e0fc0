-- relay_status.sql: the SQL face of the outbox relay's worker half
-- (src/relay.c, src/kafka.c).  Concatenated after worker.sql, so the oms_*
-- roles exist here.

CREATE FUNCTION oms._relay_shmem_status(
	OUT worker_running		boolean,
	OUT published_total		bigint,
	OUT failed_attempts_total bigint,
	OUT batches_total		bigint,
	OUT breaker				text,
	OUT breaker_opened_at	timestamptz,
	OUT last_error			text,
	OUT last_error_at		timestamptz,
	OUT last_publish_at		timestamptz,
	OUT last_ack_latency_ms	double precision)
RETURNS record
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_relay_shmem_status'
LANGUAGE c VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION oms._relay_shmem_status() IS
	'The relay counters kept in shared memory for the current database (null when oms.database_name does not list it): events acknowledged, failed publish attempts, batches, circuit breaker, last error, last publish and the mean produce-to-acknowledgement time of the last batch';

CREATE FUNCTION @extschema@.oms_relay_status()
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_shmem record;
	v_backlog record;
	v_dead bigint;
	v_brokers text := pg_catalog.current_setting('oms.kafka_brokers');
BEGIN
	SELECT * INTO v_shmem FROM oms._relay_shmem_status();
	SELECT * INTO v_backlog FROM oms._relay_backlog();
	SELECT pg_catalog.count(*) INTO v_dead
	FROM oms.dead_letters AS d WHERE d.kind = 'publish' AND d.status = 'open';

	RETURN pg_catalog.jsonb_build_object(
		'enabled', v_brokers <> '',
		'brokers', NULLIF(v_brokers, ''),
		'topic', CASE WHEN pg_catalog.current_setting('oms.kafka_topic_mode') = 'per_aggregate'
					  THEN 'oms.<aggregatetype>-events'
					  ELSE pg_catalog.current_setting('oms.kafka_topic') END,
		'worker_running', COALESCE(v_shmem.worker_running, false),
		'pending', v_backlog.pending,
		'oldest_pending_age_ms',
			pg_catalog.round(EXTRACT(epoch FROM v_backlog.oldest_pending_age) * 1000)::bigint,
		'backing_off', v_backlog.backing_off,
		'published_total', COALESCE(v_shmem.published_total, 0),
		'failed_attempts_total', COALESCE(v_shmem.failed_attempts_total, 0),
		'batches_total', COALESCE(v_shmem.batches_total, 0),
		'dead_letters', v_dead,
		'breaker', COALESCE(v_shmem.breaker, 'closed'),
		'breaker_opened_at', v_shmem.breaker_opened_at,
		'last_error', v_shmem.last_error,
		'last_error_at', v_shmem.last_error_at,
		'last_publish_at', v_shmem.last_publish_at,
		'last_ack_latency_ms', pg_catalog.round(v_shmem.last_ack_latency_ms::numeric, 3));
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_relay_status() IS
	'Outbox relay status of this database as jsonb: enabled, brokers, topic, worker_running, pending, oldest_pending_age_ms, backing_off, published_total, failed_attempts_total, batches_total, dead_letters (open publish dead letters), breaker (closed, open, half_open), breaker_opened_at, last_error, last_error_at, last_publish_at, last_ack_latency_ms';

REVOKE ALL ON FUNCTION oms._relay_shmem_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_relay_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_relay_status() TO oms_admin, oms_reader;
