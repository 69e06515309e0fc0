-- health.sql: oms_health(), one document that says whether oms works in
-- this database (ok, degraded or down), why not, and the numbers behind
-- the verdict.  It calls the shared-memory readers of worker.sql,
-- relay.sql and inbox.sql.
--
-- The rules live in oms._health(), which takes everything that comes from
-- shared memory and from the server-wide settings as an argument, plus the
-- clock: oms_health() passes the live values, the regression test passes
-- made-up ones, so every rule is tested without a worker or a broker.
--
-- A load balancer may call oms_health() every few seconds, so every query
-- is an index scan and every count stops at oms._health_count_cap().
--
-- requires: schema saga inbox relay worker

-- Stuck sagas are few and wait for an operator: a partial index keeps
-- counting them independent of the size of oms.sagas.
CREATE INDEX sagas_stuck_idx ON oms.sagas (updated_at) WHERE status = 'stuck';
-- Open dead letters per kind: record kinds (saga_failed, reply, late_reply)
-- stay open for ever, so counting the kinds that wait for an operator must
-- not walk the records.
CREATE INDEX dead_letters_open_kind_idx ON oms.dead_letters (kind) WHERE status = 'open';

CREATE FUNCTION oms._health_count_cap()
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT 10000;
$$;
COMMENT ON FUNCTION oms._health_count_cap() IS
	'oms_health() counts rows up to this many (10000) and then reports the count as capped';

CREATE FUNCTION oms._interval_ms(p_interval interval)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.round(EXTRACT(epoch FROM p_interval) * 1000)::bigint;
$$;
COMMENT ON FUNCTION oms._interval_ms(interval) IS 'An interval in whole milliseconds (null stays null)';

-- "75 s", "0.5 s": durations in the human text of a reason.
CREATE FUNCTION oms._health_seconds(p_interval interval)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.trim_scale(pg_catalog.round(EXTRACT(epoch FROM p_interval), 1)) || ' s';
$$;
COMMENT ON FUNCTION oms._health_seconds(interval) IS 'A duration for people, in seconds with at most one decimal';

-- How long ago p_at was, never negative (a worker may loop after p_now was
-- taken); null when p_at is null.
CREATE FUNCTION oms._health_age(p_at timestamptz, p_now timestamptz)
RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN p_at IS NOT NULL THEN GREATEST(p_now - p_at, interval '0') END;
$$;
COMMENT ON FUNCTION oms._health_age(timestamptz, timestamptz) IS
	'p_now - p_at, at least zero; null when p_at is null';

/*
 * The checks of oms._health, one per subsystem.  Each returns
 * {"reasons": [...], "report": {...}}: the reasons it finds (code,
 * severity, message) and its section of the health document.  p_memory
 * and p_now are oms._health's; p_cap is oms._health_count_cap().
 */

-- The worker of this database and every served database's.
CREATE FUNCTION oms._health_worker(p_memory jsonb, p_now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_timeout interval := pg_catalog.current_setting('oms.health_worker_timeout')::interval;
	v_enabled boolean := coalesce((p_memory ->> 'worker_enabled')::boolean, false);
	v_db text := pg_catalog.current_database();
	v_reasons jsonb := '[]';
	v_worker jsonb;
	v_workers jsonb;
	v_alive boolean;
	v_last_loop timestamptz;
	v_loop_age interval;
	v_saga_alive integer;
	v_saga_wanted integer := (p_memory ->> 'saga_workers_wanted')::integer;
BEGIN
	SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
				'database', w ->> 'database',
				'pid', w -> 'pid',
				'alive', coalesce((w ->> 'alive')::boolean, false),
				'last_loop', w -> 'last_loop',
				'last_loop_age_ms', oms._interval_ms(oms._health_age((w ->> 'last_loop')::timestamptz, p_now)))
			ORDER BY o.n), '[]')
	INTO v_workers
	FROM pg_catalog.jsonb_array_elements(coalesce(p_memory -> 'workers', '[]')) WITH ORDINALITY AS o(w, n);
	SELECT w INTO v_worker
	FROM pg_catalog.jsonb_array_elements(coalesce(p_memory -> 'workers', '[]')) AS w
	WHERE w ->> 'database' = v_db
	LIMIT 1;
	v_alive := coalesce((v_worker ->> 'alive')::boolean, false);
	v_last_loop := (v_worker ->> 'last_loop')::timestamptz;
	v_loop_age := oms._health_age(v_last_loop, p_now);
	SELECT pg_catalog.count(*) FILTER (WHERE (w ->> 'alive')::boolean) INTO v_saga_alive
	FROM pg_catalog.jsonb_array_elements(coalesce(p_memory -> 'saga_workers', '[]')) AS w;

	IF v_worker IS NULL THEN
		v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'not_served', 'severity', 'down',
			'message', pg_catalog.format('database "%s" is not in oms.database_name: no worker runs its sagas or publishes its events', v_db));
	ELSE
		IF NOT v_enabled THEN
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'worker_paused', 'severity', 'down',
				'message', 'oms.worker_enabled is off: the worker runs no sagas and publishes nothing');
		END IF;
		IF NOT v_alive THEN
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'worker_not_running', 'severity', 'down',
				'message', pg_catalog.format('no worker process serves database "%s"', v_db));
		ELSIF v_last_loop IS NULL OR v_loop_age > v_timeout THEN
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'worker_stalled', 'severity', 'down',
				'message', CASE WHEN v_last_loop IS NULL THEN 'the worker has not finished a loop yet'
								ELSE pg_catalog.format('the worker''s last loop ended %s ago (threshold %s)',
									oms._health_seconds(v_loop_age), oms._health_seconds(v_timeout)) END);
		ELSIF p_memory ? 'saga_workers' AND v_saga_alive < v_saga_wanted THEN
			-- Sagas still run, on fewer processes than configured.
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'saga_workers_missing', 'severity', 'degraded',
				'message', pg_catalog.format('%s of %s saga workers run for database "%s"',
											 v_saga_alive, v_saga_wanted, v_db));
		END IF;
	END IF;

	RETURN pg_catalog.jsonb_build_object('reasons', v_reasons, 'report', pg_catalog.jsonb_build_object(
		'worker', pg_catalog.jsonb_build_object(
			'served', v_worker IS NOT NULL,
			'enabled', v_enabled,
			'alive', v_alive,
			'pid', v_worker -> 'pid',
			'last_loop', v_worker -> 'last_loop',
			'last_loop_age_ms', oms._interval_ms(v_loop_age))
			|| CASE WHEN p_memory ? 'saga_workers' THEN
					pg_catalog.jsonb_build_object('saga_workers', v_saga_alive, 'saga_workers_wanted', v_saga_wanted)
					ELSE '{}' END,
		'workers', v_workers,
		'last_error', CASE WHEN v_worker ->> 'last_error_at' IS NOT NULL THEN
			pg_catalog.jsonb_build_object('message', v_worker -> 'last_error', 'at', v_worker -> 'last_error_at') END));
END;
$$;
COMMENT ON FUNCTION oms._health_worker(jsonb, timestamptz) IS
	'oms._health''s check of the workers: reasons, and the worker, workers and last_error sections';

-- Sagas: the due ones (partial index sagas_due_idx) and the stuck ones.
CREATE FUNCTION oms._health_sagas(p_now timestamptz, p_cap integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_lag interval := pg_catalog.current_setting('oms.health_saga_lag')::interval;
	v_reasons jsonb := '[]';
	v_due bigint;
	v_oldest_due timestamptz;
	v_overdue interval;
	v_stuck bigint;
BEGIN
	SELECT pg_catalog.count(*) INTO v_due
	FROM (SELECT FROM oms.sagas AS s
		  WHERE s.status IN ('running', 'compensating') AND s.next_run_at <= p_now
		  LIMIT p_cap) AS d;
	SELECT pg_catalog.min(s.next_run_at) INTO v_oldest_due
	FROM oms.sagas AS s
	WHERE s.status IN ('running', 'compensating');
	IF v_oldest_due > p_now THEN
		v_oldest_due := NULL;
	END IF;
	v_overdue := p_now - v_oldest_due;
	SELECT pg_catalog.count(*) INTO v_stuck
	FROM (SELECT FROM oms.sagas AS s WHERE s.status = 'stuck' LIMIT p_cap) AS d;
	IF v_overdue > v_lag THEN
		v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'saga_lag', 'severity', 'degraded',
			'message', pg_catalog.format('the oldest due saga step is %s overdue (threshold %s); due sagas: %s%s',
				oms._health_seconds(v_overdue), oms._health_seconds(v_lag), v_due,
				CASE WHEN v_due >= p_cap THEN ' or more' ELSE '' END));
	END IF;
	IF v_stuck > 0 THEN
		v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'sagas_stuck', 'severity', 'degraded',
			'message', pg_catalog.format('%s saga%s stuck: a compensation failed for good and waits for oms_retry_dead_letter()',
				v_stuck, CASE WHEN v_stuck = 1 THEN ' is' ELSE 's are' END));
	END IF;
	RETURN pg_catalog.jsonb_build_object('reasons', v_reasons, 'report', pg_catalog.jsonb_build_object(
		'due', v_due,
		'oldest_due_age_ms', oms._interval_ms(v_overdue),
		'stuck', v_stuck,
		'capped', v_due >= p_cap OR v_stuck >= p_cap));
END;
$$;
COMMENT ON FUNCTION oms._health_sagas(timestamptz, integer) IS
	'oms._health''s check of the sagas: reasons, and the sagas section';

-- Outbox: oldest through outbox_created_idx, failed ones through
-- outbox_failed_idx; the relay's breaker from shared memory.
CREATE FUNCTION oms._health_outbox(p_memory jsonb, p_now timestamptz, p_cap integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_lag interval := pg_catalog.current_setting('oms.health_outbox_lag')::interval;
	v_enabled boolean := coalesce((p_memory ->> 'relay_enabled')::boolean, false);
	v_relay jsonb := coalesce(p_memory -> 'relay', '{}');
	v_reasons jsonb := '[]';
	v_pending bigint;
	v_oldest_pending timestamptz;
	v_pending_age interval;
	v_backing_off bigint;
	v_breaker text := coalesce(v_relay ->> 'breaker', 'closed');
BEGIN
	SELECT pg_catalog.count(*) INTO v_pending
	FROM (SELECT FROM oms.outbox AS o LIMIT p_cap) AS d;
	SELECT pg_catalog.min(o.created_at) INTO v_oldest_pending FROM oms.outbox AS o;
	v_pending_age := oms._health_age(v_oldest_pending, p_now);
	SELECT pg_catalog.count(*) INTO v_backing_off
	FROM (SELECT FROM oms.outbox AS o WHERE o.attempts > 0 AND o.next_attempt_at > p_now LIMIT p_cap) AS d;
	IF v_enabled THEN
		IF v_breaker <> 'closed' THEN
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'breaker_open', 'severity', 'degraded',
				'message', pg_catalog.format('the relay''s circuit breaker is %s: Kafka did not acknowledge the last batches', v_breaker));
		END IF;
		IF v_pending_age > v_lag THEN
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'outbox_lag', 'severity', 'degraded',
				'message', pg_catalog.format('the oldest unpublished event is %s old (threshold %s); pending events: %s%s',
					oms._health_seconds(v_pending_age), oms._health_seconds(v_lag), v_pending,
					CASE WHEN v_pending >= p_cap THEN ' or more' ELSE '' END));
		END IF;
	END IF;
	RETURN pg_catalog.jsonb_build_object('reasons', v_reasons, 'report', pg_catalog.jsonb_build_object(
		'relay_enabled', v_enabled,
		'pending', v_pending,
		'oldest_pending_age_ms', oms._interval_ms(v_pending_age),
		'backing_off', v_backing_off,
		'breaker', v_breaker,
		'breaker_opened_at', v_relay -> 'breaker_opened_at',
		'last_publish_at', v_relay -> 'last_publish_at',
		'capped', v_pending >= p_cap OR v_backing_off >= p_cap),
		'last_error', CASE WHEN v_relay ->> 'last_error_at' IS NOT NULL THEN
			pg_catalog.jsonb_build_object('message', v_relay -> 'last_error', 'at', v_relay -> 'last_error_at') END);
END;
$$;
COMMENT ON FUNCTION oms._health_outbox(jsonb, timestamptz, integer) IS
	'oms._health''s check of the outbox and the relay: reasons, the outbox section and the relay''s last_error';

-- The reply consumer of the remote payment provider; p_worker is the
-- worker section (a consumer runs only in a live, enabled worker).
CREATE FUNCTION oms._health_inbox(p_memory jsonb, p_worker jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_lag_threshold bigint := pg_catalog.current_setting('oms.health_inbox_lag')::bigint;
	v_kafka_provider boolean := pg_catalog.current_setting('oms.payment_provider') = 'kafka';
	v_inbox jsonb := coalesce(p_memory -> 'inbox', '{}');
	v_running boolean := (p_worker ->> 'served')::boolean AND (p_worker ->> 'alive')::boolean;
	v_reasons jsonb := '[]';
	v_consumer text;
	v_lag bigint := (v_inbox ->> 'lag')::bigint;
BEGIN
	v_consumer := CASE WHEN v_running THEN coalesce(v_inbox ->> 'consumer', 'off') ELSE 'off' END;
	IF v_kafka_provider THEN
		IF v_consumer = 'bad_config' THEN
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'consumer_bad_config', 'severity', 'degraded',
				'message', 'the payment reply consumer refused its settings: ' || coalesce(v_inbox ->> 'last_error', 'no error recorded'));
		ELSIF v_consumer = 'off' AND v_running AND (p_worker ->> 'enabled')::boolean THEN
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'consumer_off', 'severity', 'degraded',
				'message', 'oms.payment_provider is kafka but no reply consumer runs (is oms.kafka_brokers empty?): payments wait until they time out');
		END IF;
		IF v_lag > v_lag_threshold THEN
			v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'inbox_lag', 'severity', 'degraded',
				'message', pg_catalog.format('%s payment replies wait in Kafka (threshold %s)', v_lag, v_lag_threshold));
		END IF;
	END IF;
	RETURN pg_catalog.jsonb_build_object('reasons', v_reasons, 'report', pg_catalog.jsonb_build_object(
		'enabled', v_kafka_provider,
		'consumer', v_consumer,
		'lag', v_lag,
		'lag_at', v_inbox -> 'lag_at',
		'last_reply_at', v_inbox -> 'last_reply_at'),
		'last_error', CASE WHEN v_inbox ->> 'last_error_at' IS NOT NULL THEN
			pg_catalog.jsonb_build_object('message', v_inbox -> 'last_error', 'at', v_inbox -> 'last_error_at') END);
END;
$$;
COMMENT ON FUNCTION oms._health_inbox(jsonb, jsonb) IS
	'oms._health''s check of the payment reply consumer: reasons, the inbox section and the consumer''s last_error';

-- Open dead letters per kind (dead_letters_open_kind_idx).
CREATE FUNCTION oms._health_dead_letters(p_cap integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_threshold bigint := pg_catalog.current_setting('oms.health_dead_letters')::bigint;
	v_reasons jsonb := '[]';
	v_by_kind jsonb;
	v_open bigint;
	v_actionable bigint;
	v_capped boolean;
BEGIN
	SELECT pg_catalog.jsonb_object_agg(k.kind, k.n), pg_catalog.sum(k.n),
		   pg_catalog.sum(k.n) FILTER (WHERE k.kind IN ('compensation_stuck', 'publish')),
		   pg_catalog.bool_or(k.n >= p_cap)
	INTO v_by_kind, v_open, v_actionable, v_capped
	FROM (SELECT kinds.kind,
				 (SELECT pg_catalog.count(*)
				  FROM (SELECT FROM oms.dead_letters AS d
						WHERE d.status = 'open' AND d.kind = kinds.kind LIMIT p_cap) AS x) AS n
		  FROM pg_catalog.unnest(ARRAY['saga_failed', 'compensation_stuck', 'publish', 'reply', 'late_reply'])
			   AS kinds(kind)) AS k;
	IF v_threshold > 0 AND v_actionable >= v_threshold THEN
		v_reasons := v_reasons || pg_catalog.jsonb_build_object('code', 'dead_letters', 'severity', 'degraded',
			'message', pg_catalog.format('open dead letters waiting for an operator: %s%s (threshold %s; compensation_stuck %s, publish %s)',
				v_actionable, CASE WHEN v_capped THEN ' or more' ELSE '' END, v_threshold,
				v_by_kind -> 'compensation_stuck', v_by_kind -> 'publish'));
	END IF;
	RETURN pg_catalog.jsonb_build_object('reasons', v_reasons, 'report', pg_catalog.jsonb_build_object(
		'open', v_open,
		'actionable', v_actionable,
		'by_kind', v_by_kind,
		'capped', v_capped));
END;
$$;
COMMENT ON FUNCTION oms._health_dead_letters(integer) IS
	'oms._health''s check of the dead letters: reasons, and the dead_letters section';

/*
 * The health document of the current database.  p_memory holds what the
 * caller read from shared memory and from server-wide settings:
 *   workers         jsonb array of oms_worker_status() rows
 *   saga_workers    jsonb array of oms_saga_worker_status() rows of this
 *                   database (absent: not looked at)
 *   saga_workers_wanted  oms.saga_workers
 *   worker_enabled  oms.worker_enabled
 *   relay_enabled   oms.kafka_brokers is not empty
 *   relay           oms._relay_shmem_status() as jsonb (null: not served)
 *   inbox           oms._inbox_shmem_status() (null: not served)
 * p_now is the time ages are measured against.  Thresholds and
 * oms.payment_provider are read by the checks, as the calling session
 * sees them.  The reasons come in the order of the checks.
 */
CREATE FUNCTION oms._health(p_memory jsonb, p_now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_cap constant integer := oms._health_count_cap();
	v_worker jsonb := oms._health_worker(p_memory, p_now);
	v_sagas jsonb := oms._health_sagas(p_now, v_cap);
	v_outbox jsonb := oms._health_outbox(p_memory, p_now, v_cap);
	v_inbox jsonb := oms._health_inbox(p_memory, v_worker #> '{report,worker}');
	v_dead jsonb := oms._health_dead_letters(v_cap);
	v_reasons jsonb;
BEGIN
	v_reasons := (v_worker -> 'reasons') || (v_sagas -> 'reasons') || (v_outbox -> 'reasons')
				 || (v_inbox -> 'reasons') || (v_dead -> 'reasons');
	RETURN pg_catalog.jsonb_build_object(
		-- The worst severity among the reasons.
		'status', CASE WHEN v_reasons @> '[{"severity": "down"}]' THEN 'down'
					   WHEN v_reasons <> '[]' THEN 'degraded'
					   ELSE 'ok' END,
		'reasons', v_reasons,
		'database', pg_catalog.current_database(),
		'checked_at', p_now,
		'thresholds', pg_catalog.jsonb_build_object(
			'worker_timeout_ms', oms._interval_ms(pg_catalog.current_setting('oms.health_worker_timeout')::interval),
			'outbox_lag_ms', oms._interval_ms(pg_catalog.current_setting('oms.health_outbox_lag')::interval),
			'saga_lag_ms', oms._interval_ms(pg_catalog.current_setting('oms.health_saga_lag')::interval),
			'inbox_lag', pg_catalog.current_setting('oms.health_inbox_lag')::bigint,
			'dead_letters', pg_catalog.current_setting('oms.health_dead_letters')::bigint),
		'worker', v_worker #> '{report,worker}',
		'workers', v_worker #> '{report,workers}',
		'sagas', v_sagas -> 'report',
		'outbox', v_outbox -> 'report',
		'inbox', v_inbox -> 'report',
		'dead_letters', v_dead -> 'report',
		'last_errors', pg_catalog.jsonb_build_object(
			'worker', v_worker #> '{report,last_error}',
			'relay', v_outbox -> 'last_error',
			'consumer', v_inbox -> 'last_error'));
END;
$$;
COMMENT ON FUNCTION oms._health(jsonb, timestamptz) IS
	'The rules of oms_health(): the health document of this database from the given shared-memory state and clock';

CREATE FUNCTION @extschema@.oms_health()
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN oms._health(pg_catalog.jsonb_build_object(
		'workers', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(w)), '[]')
					FROM oms._worker_status() AS w),
		'saga_workers', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(w)), '[]')
						 FROM oms._saga_worker_status() AS w
						 WHERE w.database = pg_catalog.current_database()),
		'saga_workers_wanted', pg_catalog.current_setting('oms.saga_workers')::integer,
		'worker_enabled', pg_catalog.current_setting('oms.worker_enabled')::boolean,
		'relay_enabled', pg_catalog.current_setting('oms.kafka_brokers') <> '',
		'relay', (SELECT pg_catalog.to_jsonb(r) FROM oms._relay_shmem_status() AS r),
		'inbox', oms._inbox_shmem_status()),
		pg_catalog.clock_timestamp());
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_health() IS
	'Health of oms in this database as jsonb: status (ok, degraded, down), reasons, thresholds, and the worker, workers, sagas, outbox, inbox, dead_letters and last_errors behind them';

REVOKE ALL ON FUNCTION oms._health_count_cap() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._interval_ms(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._health_seconds(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._health_age(timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._health_worker(jsonb, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._health_sagas(timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._health_outbox(jsonb, timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._health_inbox(jsonb, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._health_dead_letters(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._health(jsonb, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_health() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_health() TO oms_reader, oms_admin;
