-- relay.sql: the SQL half of the outbox relay.  The worker (src/relay.c)
-- claims a batch with oms._relay_claim(), produces it to Kafka outside any
-- transaction, waits for the delivery reports, and settles the batch with
-- oms._relay_settle() in a second short transaction.  Nothing is removed
-- before its acknowledgement.

/*
 * The next events to publish, oldest first, ready to produce: topic, key,
 * value and CloudEvents headers (Kafka protocol binding, binary mode),
 * plus the W3C header traceparent when the event has a trace context.
 * An event whose predecessor of the same aggregate is backing off after a
 * failure waits for it, so per-order order holds.  Rows are returned per
 * aggregate in seq order.
 */
CREATE FUNCTION oms._relay_claim(p_limit integer)
RETURNS TABLE (id uuid, topic text, key text, value text, headers text[], aggregatetype text,
			   aggregateid uuid, seq bigint)
LANGUAGE plpgsql STABLE
-- A batch of wide rows is sorted per aggregate: keep the sort in memory.
SET work_mem = '64MB'
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_topic text := pg_catalog.current_setting('oms.kafka_topic');
	v_per_aggregate boolean := pg_catalog.current_setting('oms.kafka_topic_mode') = 'per_aggregate';
	v_source text := '/oms/' || pg_catalog.current_database();
	-- Payment commands go to the remote provider's topic.
	v_commands text := pg_catalog.current_setting('oms.kafka_payment_commands_topic');
BEGIN
	RETURN QUERY
	SELECT b.id,
		   CASE WHEN b.aggregatetype = 'payment' THEN v_commands
				WHEN v_per_aggregate THEN 'oms.' || b.aggregatetype || '-events' ELSE v_topic END,
		   b.aggregateid::text,
		   b.payload::text,
		   ARRAY['ce_specversion', '1.0',
				 'ce_id', b.id::text,
				 'ce_source', v_source,
				 'ce_type', 'oms.' || b.type,
				 'ce_time', pg_catalog.to_char(b.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
				 'ce_subject', b.aggregateid::text,
				 'ce_dataschema', 'oms:events/' || b.type || '/v1',
				 'content-type', 'application/json',
				 'ce_omsaggregate', b.aggregatetype,
				 'ce_omsseq', b.seq::text]
			|| CASE WHEN b.traceparent IS NOT NULL THEN ARRAY['traceparent', b.traceparent] ELSE '{}'::text[] END,
		   b.aggregatetype, b.aggregateid, b.seq
	FROM (SELECT o.* FROM oms.outbox AS o
		  WHERE o.next_attempt_at <= pg_catalog.now()
			AND NOT EXISTS (SELECT FROM oms.outbox AS p
							WHERE p.attempts > 0
							  AND p.aggregatetype = o.aggregatetype AND p.aggregateid = o.aggregateid
							  AND p.seq < o.seq AND p.next_attempt_at > pg_catalog.now())
		  ORDER BY o.created_at
		  LIMIT p_limit) AS b
	ORDER BY b.aggregatetype, b.aggregateid, b.seq;
END;
$$;
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
