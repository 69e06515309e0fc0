-- relay.sql: the SQL half of the outbox relay.  The worker (src/relay.c)
-- claims a batch with oms._relay_claim(), produces it to Kafka outside any
-- transaction, waits for the delivery reports, and settles the batch with
-- oms._relay_settle() in a second short transaction.  Nothing is removed
-- before its acknowledgement.
--
-- requires: schema saga

/*
 * The next events to publish, oldest first, as the relay publishes them:
 * topic, key, value and CloudEvents headers (Kafka protocol binding,
 * binary mode), plus the W3C header traceparent when the event has a trace
 * context.  An event whose predecessor of the same aggregate is backing off
 * after a failure waits for it, so per-order order holds.  Rows are
 * returned per aggregate in seq order.  In C (src/relay.c), the very code
 * the relay's claim runs: rendering the records there rather than in SQL
 * is most of what makes the relay keep up with a backlog.
 */
CREATE FUNCTION oms._relay_claim(p_limit integer)
RETURNS TABLE (id uuid, topic text, key text, value text, headers text[], aggregatetype text,
			   aggregateid uuid, seq bigint)
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_relay_claim_sql'
LANGUAGE c STABLE;
COMMENT ON FUNCTION oms._relay_claim(integer) IS
	'The next outbox events to publish, oldest first, with topic, key, value, CloudEvents headers and traceparent';

/*
 * Settles a produced batch.  p_errors[i] is NULL when p_ids[i] was
 * acknowledged, else the delivery error; p_permanent[i] says whether
 * retrying can help.  Per aggregate, the acknowledged events before its
 * first failure are removed; the failed event is retried with backoff or,
 * when permanent or out of attempts, moved to the dead letters; events
 * after a failure stay and are published again after it, in order.
 * Returns the number of events removed as published.
 */
CREATE FUNCTION oms._relay_settle(p_ids uuid[], p_errors text[], p_permanent boolean[])
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_published integer;
	v_dead integer;
	v_max integer := pg_catalog.current_setting('oms.publish_max_attempts')::integer;
BEGIN
	-- The usual batch, everything acknowledged: one DELETE through the
	-- primary key, which looks the sorted ids up in one index pass, and no
	-- per-aggregate bookkeeping (that only matters behind a failure).
	IF pg_catalog.cardinality(pg_catalog.array_remove(p_errors, NULL)) = 0 THEN
		DELETE FROM oms.outbox AS o WHERE o.id = ANY (p_ids);
		GET DIAGNOSTICS v_published = ROW_COUNT;
		RETURN v_published;
	END IF;

	WITH batch AS (
		SELECT r.id, r.error, o.aggregatetype, o.aggregateid, o.seq
		FROM ROWS FROM (pg_catalog.unnest(p_ids), pg_catalog.unnest(p_errors)) AS r(id, error)
		JOIN oms.outbox AS o ON o.id = r.id
	), first_failure AS (
		SELECT b.aggregatetype, b.aggregateid, pg_catalog.min(b.seq) AS seq
		FROM batch AS b WHERE b.error IS NOT NULL
		GROUP BY 1, 2
	), published AS (
		DELETE FROM oms.outbox AS o
		USING batch AS b
		LEFT JOIN first_failure AS f ON f.aggregatetype = b.aggregatetype AND f.aggregateid = b.aggregateid
		WHERE o.id = b.id AND b.error IS NULL AND (f.seq IS NULL OR b.seq < f.seq)
		RETURNING 1
	)
	SELECT pg_catalog.count(*) INTO v_published FROM published;

	-- Undeliverable: permanent errors at once, others after their last attempt.
	WITH failed AS (
		SELECT r.id, r.error, r.permanent
		FROM ROWS FROM (pg_catalog.unnest(p_ids), pg_catalog.unnest(p_errors), pg_catalog.unnest(p_permanent)) AS r(id, error, permanent)
		WHERE r.error IS NOT NULL
	), dead AS (
		DELETE FROM oms.outbox AS o
		USING failed AS f
		WHERE o.id = f.id AND (f.permanent OR o.attempts + 1 >= v_max)
		RETURNING o.*, f.error, f.permanent
	), letters AS (
		INSERT INTO oms.dead_letters (kind, order_id, step, error, payload)
		SELECT 'publish', CASE WHEN d.aggregatetype = 'order' THEN d.aggregateid END, d.type,
			   pg_catalog.jsonb_build_object('message', d.error, 'permanent', d.permanent,
											 'attempt', d.attempts + 1, 'at', pg_catalog.now()),
			   pg_catalog.jsonb_build_object('id', d.id, 'aggregatetype', d.aggregatetype,
											 'aggregateid', d.aggregateid, 'type', d.type, 'payload', d.payload,
											 'seq', d.seq, 'created_at', d.created_at)
			   || CASE WHEN d.traceparent IS NOT NULL
					   THEN pg_catalog.jsonb_build_object('traceparent', d.traceparent) ELSE '{}'::jsonb END
		FROM dead AS d
		RETURNING id, step, error, payload
	)
	-- One line per dead-lettered event: an operator must replay or drop it.
	SELECT pg_catalog.count(oms._log('warning', 'event_dead_lettered',
			'event_id', l.payload ->> 'id', 'aggregatetype', l.payload ->> 'aggregatetype',
			'aggregateid', l.payload ->> 'aggregateid', 'type', l.step, 'seq', l.payload ->> 'seq',
			'attempt', l.error ->> 'attempt', 'permanent', l.error ->> 'permanent',
			'dead_letter_id', l.id::text, 'message', l.error ->> 'message'))
	INTO v_dead
	FROM letters AS l;

	UPDATE oms.outbox AS o
	SET attempts = o.attempts + 1, last_error = r.error,
		next_attempt_at = pg_catalog.now() + oms._backoff(o.attempts + 1)
	FROM ROWS FROM (pg_catalog.unnest(p_ids), pg_catalog.unnest(p_errors)) AS r(id, error)
	WHERE o.id = r.id AND r.error IS NOT NULL;

	RETURN v_published;
END;
$$;
COMMENT ON FUNCTION oms._relay_settle(uuid[], text[], boolean[]) IS
	'Removes acknowledged events, schedules retries of failed ones, dead-letters undeliverable ones';

CREATE FUNCTION oms._relay_backlog()
RETURNS TABLE (pending bigint, oldest_pending_age interval, backing_off bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.count(*),
		   pg_catalog.now() - pg_catalog.min(o.created_at),
		   pg_catalog.count(*) FILTER (WHERE o.next_attempt_at > pg_catalog.now())
	FROM oms.outbox AS o;
$$;
COMMENT ON FUNCTION oms._relay_backlog() IS 'Outbox backlog: pending events, age of the oldest, events backing off';

-- Privileges of the objects above: nothing for PUBLIC, each role what it
-- needs (the roles come from roles.sql, checks.sql verifies).
REVOKE ALL ON FUNCTION oms._relay_backlog() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._relay_claim(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._relay_settle(uuid[], text[], boolean[]) FROM PUBLIC;

-- The SQL face of the worker half (src/relay.c, src/inbox.c, src/kafka.c).

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
