-- oms upgrade script 0.2.0 -> 0.3.0: sagas at the speed of the database
-- (parallel saga workers, a lean step path, availability in O(1), a
-- faster relay).  Frozen once 0.3.0 is released; later changes go into the
-- next script.  test/t/040_upgrade.pl proves that a database updated with
-- this script has the same catalog as a fresh install of 0.3.0.

\echo Use "ALTER EXTENSION oms UPDATE TO '0.3.0'" to load this file. \quit

-- ALTER EXTENSION runs this script with the extension's schema (usually
-- public) first in search_path, where a database owner may have planted
-- operators for oms types: resolve nothing through it.
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

--
-- Inventory: availability in O(1).
--

-- Availability is on_hand minus a counter, oms.stock.reserved: the units
-- of the SKU's held reservations, kept by statement triggers on
-- oms.reservations (see src/sql/inventory.sql).
--
-- Data: 0.2.0 let on_hand drop below reservations that were held but past
-- their expiry.  Where the held units of a SKU exceed its on_hand, its
-- expired held reservations are marked expired here, as the sweep would
-- have; those are the only rows this section changes.  Then the counter is
-- computed from the held reservations.
ALTER TABLE oms.stock ADD COLUMN reserved bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN oms.stock.reserved IS
	'Units of the SKU''s held reservations, expired ones not yet swept included; kept by triggers on oms.reservations';
UPDATE oms.reservations AS r SET status = 'expired', updated_at = pg_catalog.now()
WHERE r.status = 'held' AND r.expires_at <= pg_catalog.now()
  AND r.sku IN (SELECT h.sku FROM oms.reservations AS h JOIN oms.stock AS s ON s.sku = h.sku
				WHERE h.status = 'held' GROUP BY h.sku, s.on_hand
				HAVING pg_catalog.sum(h.quantity) > s.on_hand);
UPDATE oms.stock AS s SET reserved = h.units
FROM (SELECT r.sku, pg_catalog.sum(r.quantity)::bigint AS units FROM oms.reservations AS r
	  WHERE r.status = 'held' GROUP BY r.sku) AS h
WHERE s.sku = h.sku;
DO $$
DECLARE
	v_bad text;
BEGIN
	SELECT pg_catalog.string_agg(pg_catalog.format('%s (on hand %s, reserved %s)', s.sku, s.on_hand, s.reserved), ', ')
	INTO v_bad FROM oms.stock AS s WHERE s.reserved > s.on_hand;
	IF v_bad IS NOT NULL THEN
		RAISE EXCEPTION 'live reservations exceed the stock on hand: %', v_bad
			USING HINT = 'Raise the stock of these SKUs with oms_adjust_stock() (or release the reservations), then update again.';
	END IF;
END;
$$;
ALTER TABLE oms.stock ADD CONSTRAINT stock_reserved_check CHECK (reserved >= 0 AND reserved <= on_hand);

DROP INDEX oms.reservations_held_sku_idx;
-- A SKU's expired held reservations, without reading its live ones.
CREATE INDEX reservations_held_sku_expiry_idx ON oms.reservations (sku, expires_at) WHERE status = 'held';

CREATE FUNCTION oms._reservations_count()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_change record;
BEGIN
	IF TG_OP = 'INSERT' THEN
		IF coalesce(pg_catalog.current_setting('oms.restoring', true), 'off')::boolean THEN
			-- A restore may load the stock rows before or after these, with
			-- their counts (or, from a 0.2.0 dump, without): count again.
			UPDATE oms.stock AS s
			SET reserved = (SELECT coalesce(pg_catalog.sum(r.quantity), 0) FROM oms.reservations AS r
							WHERE r.sku = s.sku AND r.status = 'held')
			WHERE s.sku IN (SELECT n.sku FROM new_rows AS n);
			RETURN NULL;
		END IF;
		FOR v_change IN
			SELECT n.sku, pg_catalog.sum(n.quantity)::bigint AS delta
			FROM new_rows AS n WHERE n.status = 'held'
			GROUP BY n.sku ORDER BY n.sku
		LOOP
			UPDATE oms.stock AS s SET reserved = s.reserved + v_change.delta WHERE s.sku = v_change.sku;
		END LOOP;
	ELSIF TG_OP = 'UPDATE' THEN
		FOR v_change IN
			SELECT d.sku, pg_catalog.sum(d.units)::bigint AS delta
			FROM (SELECT n.sku, n.quantity::bigint AS units FROM new_rows AS n WHERE n.status = 'held'
				  UNION ALL
				  SELECT o.sku, -o.quantity::bigint FROM old_rows AS o WHERE o.status = 'held') AS d
			GROUP BY d.sku HAVING pg_catalog.sum(d.units) <> 0 ORDER BY d.sku
		LOOP
			UPDATE oms.stock AS s SET reserved = s.reserved + v_change.delta WHERE s.sku = v_change.sku;
		END LOOP;
	ELSIF TG_OP = 'DELETE' THEN
		FOR v_change IN
			SELECT o.sku, pg_catalog.sum(o.quantity)::bigint AS delta
			FROM old_rows AS o WHERE o.status = 'held'
			GROUP BY o.sku ORDER BY o.sku
		LOOP
			UPDATE oms.stock AS s SET reserved = s.reserved - v_change.delta WHERE s.sku = v_change.sku;
		END LOOP;
	ELSE
		UPDATE oms.stock AS s SET reserved = 0 WHERE s.reserved <> 0;
	END IF;
	RETURN NULL;
END;
$$;
COMMENT ON FUNCTION oms._reservations_count() IS
	'Trigger: keeps oms.stock.reserved equal to the units of each SKU''s held reservations';
REVOKE ALL ON FUNCTION oms._reservations_count() FROM PUBLIC;

-- The other half of a restore: stock rows loaded after their reservations.
CREATE FUNCTION oms._stock_restore_count()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF coalesce(pg_catalog.current_setting('oms.restoring', true), 'off')::boolean THEN
		NEW.reserved := (SELECT coalesce(pg_catalog.sum(r.quantity), 0) FROM oms.reservations AS r
						 WHERE r.sku = NEW.sku AND r.status = 'held');
	END IF;
	RETURN NEW;
END;
$$;
COMMENT ON FUNCTION oms._stock_restore_count() IS
	'Trigger: under oms.restoring, a stock row inserted gets its reserved count from the held reservations already there';
REVOKE ALL ON FUNCTION oms._stock_restore_count() FROM PUBLIC;

CREATE TRIGGER stock_restore_count BEFORE INSERT ON oms.stock
	FOR EACH ROW EXECUTE FUNCTION oms._stock_restore_count();
CREATE TRIGGER reservations_count_insert AFTER INSERT ON oms.reservations
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION oms._reservations_count();
CREATE TRIGGER reservations_count_update AFTER UPDATE ON oms.reservations
	REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION oms._reservations_count();
CREATE TRIGGER reservations_count_delete AFTER DELETE ON oms.reservations
	REFERENCING OLD TABLE AS old_rows
	FOR EACH STATEMENT EXECUTE FUNCTION oms._reservations_count();
CREATE TRIGGER reservations_count_truncate AFTER TRUNCATE ON oms.reservations
	FOR EACH STATEMENT EXECUTE FUNCTION oms._reservations_count();

CREATE FUNCTION oms._sweep_expired(p_sku text, p_now timestamptz)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_count integer;
BEGIN
	WITH due AS (
		SELECT r.order_id FROM oms.reservations AS r
		WHERE r.sku = p_sku AND r.status = 'held' AND r.expires_at <= p_now
		FOR UPDATE SKIP LOCKED
	)
	UPDATE oms.reservations AS r SET status = 'expired', updated_at = pg_catalog.now()
	FROM due
	WHERE r.order_id = due.order_id AND r.sku = p_sku AND r.status = 'held';
	GET DIAGNOSTICS v_count = ROW_COUNT;
	RETURN v_count;
END;
$$;
COMMENT ON FUNCTION oms._sweep_expired(text, timestamptz) IS
	'Marks the held reservations of a SKU expired at p_now as expired (caller holds the stock row); returns how many';
REVOKE ALL ON FUNCTION oms._sweep_expired(text, timestamptz) FROM PUBLIC;

CREATE OR REPLACE FUNCTION oms._reserved(p_sku text, p_now timestamptz)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- PL/pgSQL, not SQL: the plan is cached instead of made on every call.
	RETURN coalesce((SELECT s.reserved - coalesce((SELECT pg_catalog.sum(r.quantity)
												   FROM oms.reservations AS r
												   WHERE r.sku = p_sku AND r.status = 'held'
													 AND r.expires_at <= p_now), 0)
					 FROM oms.stock AS s WHERE s.sku = p_sku), 0)::bigint;
END;
$$;
COMMENT ON FUNCTION oms._reserved(text, timestamptz) IS 'Units of a SKU held by unexpired reservations at p_now';

CREATE OR REPLACE VIEW oms.stock_levels AS
	SELECT s.sku, s.on_hand,
		   s.reserved - x.expired AS reserved,
		   s.on_hand - (s.reserved - x.expired) AS available,
		   s.updated_at
	FROM oms.stock AS s
	CROSS JOIN LATERAL (SELECT coalesce(pg_catalog.sum(r.quantity), 0)::bigint AS expired
						FROM oms.reservations AS r
						WHERE r.sku = s.sku AND r.status = 'held' AND r.expires_at <= pg_catalog.now()) AS x;

CREATE OR REPLACE FUNCTION oms._reserve_order(p_order_id uuid, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_line record;
	v_unknown text;
	v_on_hand bigint;
	v_reserved bigint;
	v_own record;
	v_own_exists boolean;
	v_own_held bigint;
	v_ttl interval := pg_catalog.current_setting('oms.reservation_ttl')::interval;
BEGIN
	SELECT i.sku INTO v_unknown
	FROM oms.order_items AS i
	WHERE i.order_id = p_order_id
	  AND NOT EXISTS (SELECT FROM oms.stock AS s WHERE s.sku = i.sku)
	ORDER BY i.sku LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'unknown SKU "%"', v_unknown
			USING ERRCODE = 'OM011',
				  DETAIL = 'The SKU has no stock record.',
				  HINT = 'Set its stock with oms_set_stock().';
	END IF;
	FOR v_line IN
		SELECT i.sku, i.quantity::bigint AS quantity
		FROM oms.order_items AS i WHERE i.order_id = p_order_id
		ORDER BY i.sku
	LOOP
		-- One stock row at a time, in SKU order, before any reservation row.
		SELECT s.on_hand, s.reserved INTO v_on_hand, v_reserved
		FROM oms.stock AS s WHERE s.sku = v_line.sku FOR UPDATE;
		-- A step run again finds its own reservation: it is counted already.
		SELECT r.quantity, r.status INTO v_own
		FROM oms.reservations AS r WHERE r.order_id = p_order_id AND r.sku = v_line.sku FOR UPDATE;
		v_own_exists := FOUND;
		v_own_held := CASE WHEN v_own_exists AND v_own.status = 'held' THEN v_own.quantity ELSE 0 END;
		IF v_on_hand - v_reserved + v_own_held < v_line.quantity THEN
			-- Short: the units of expired reservations may be free.
			IF oms._sweep_expired(v_line.sku, p_now) > 0 THEN
				SELECT s.reserved INTO v_reserved FROM oms.stock AS s WHERE s.sku = v_line.sku;
				SELECT r.quantity, r.status INTO v_own
				FROM oms.reservations AS r WHERE r.order_id = p_order_id AND r.sku = v_line.sku;
				v_own_held := CASE WHEN v_own_exists AND v_own.status = 'held' THEN v_own.quantity ELSE 0 END;
			END IF;
			IF v_on_hand - v_reserved + v_own_held < v_line.quantity THEN
				RAISE EXCEPTION 'SKU "%" is out of stock', v_line.sku
					USING ERRCODE = 'OM011',
						  DETAIL = pg_catalog.format('%s requested, %s available.', v_line.quantity,
													 v_on_hand - v_reserved + v_own_held);
			END IF;
		END IF;
		IF NOT v_own_exists THEN
			INSERT INTO oms.reservations (order_id, sku, quantity, status, expires_at, created_at, updated_at)
			VALUES (p_order_id, v_line.sku, v_line.quantity, 'held', p_now + v_ttl, p_now, p_now);
		ELSE
			UPDATE oms.reservations AS r
			SET quantity = v_line.quantity, status = 'held', expires_at = p_now + v_ttl, updated_at = p_now
			WHERE r.order_id = p_order_id AND r.sku = v_line.sku;
		END IF;
	END LOOP;
END;
$$;
COMMENT ON FUNCTION oms._reserve_order(uuid, timestamptz) IS
	'Reserves all lines of an order in SKU order, all or nothing (OM011 when short)';

CREATE FUNCTION oms._lock_order_stock(p_order_id uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM FROM oms.stock AS s
	WHERE s.sku IN (SELECT r.sku FROM oms.reservations AS r WHERE r.order_id = p_order_id)
	ORDER BY s.sku
	FOR UPDATE OF s;
END;
$$;
COMMENT ON FUNCTION oms._lock_order_stock(uuid) IS
	'Locks the stock rows of the SKUs an order has reservations of, in SKU order';
REVOKE ALL ON FUNCTION oms._lock_order_stock(uuid) FROM PUBLIC;

CREATE OR REPLACE FUNCTION oms._release_order(p_order_id uuid)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_count integer;
BEGIN
	PERFORM oms._lock_order_stock(p_order_id);
	UPDATE oms.reservations AS r SET status = 'released', updated_at = pg_catalog.now()
	WHERE r.order_id = p_order_id AND r.status = 'held';
	GET DIAGNOSTICS v_count = ROW_COUNT;
	RETURN v_count;
END;
$$;
COMMENT ON FUNCTION oms._release_order(uuid) IS 'Gives back the held reservations of an order';

CREATE OR REPLACE FUNCTION oms._move_reserved_stock(p_order_id uuid, p_from oms.reservation_status,
										 p_to oms.reservation_status, p_sign integer)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_skus text[];
	v_units bigint[];
BEGIN
	PERFORM oms._lock_order_stock(p_order_id);
	-- The pay step checks the expiry at its batch's clock and then pins the
	-- reservations; one that expired in between may have been swept by a
	-- reserver that needed its units.  Confirming without it would sell
	-- those units twice: fail the step (the saga refunds and releases).
	IF p_from = 'held' AND EXISTS (
		SELECT FROM oms.order_items AS i
		WHERE i.order_id = p_order_id
		  AND NOT EXISTS (SELECT FROM oms.reservations AS r
						  WHERE r.order_id = i.order_id AND r.sku = i.sku AND r.status = 'held')) THEN
		RAISE EXCEPTION 'the reservations of the order expired before payment'
			USING ERRCODE = 'OM011',
				  DETAIL = 'A reservation was no longer held at confirmation.';
	END IF;
	WITH moved AS (
		UPDATE oms.reservations AS r SET status = p_to, updated_at = pg_catalog.now()
		WHERE r.order_id = p_order_id AND r.status = p_from
		RETURNING r.sku, r.quantity
	)
	SELECT pg_catalog.array_agg(m.sku ORDER BY m.sku), pg_catalog.array_agg(m.units ORDER BY m.sku)
	INTO v_skus, v_units
	FROM (SELECT moved.sku, pg_catalog.sum(moved.quantity)::bigint AS units FROM moved GROUP BY moved.sku) AS m;
	UPDATE oms.stock AS s SET on_hand = s.on_hand + p_sign * u.units, updated_at = pg_catalog.now()
	FROM ROWS FROM (pg_catalog.unnest(v_skus), pg_catalog.unnest(v_units)) AS u(sku, units)
	WHERE s.sku = u.sku;
END;
$$;
COMMENT ON FUNCTION oms._move_reserved_stock(uuid, oms.reservation_status, oms.reservation_status, integer) IS
	'Confirm (held -> consumed, units leave stock) or restock (consumed -> released, units return)';

CREATE OR REPLACE FUNCTION oms._release_expired_reservations()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_sku text;
	v_count integer := 0;
BEGIN
	FOR v_sku IN
		SELECT DISTINCT r.sku FROM oms.reservations AS r
		WHERE r.status = 'held' AND r.expires_at <= pg_catalog.now()
		ORDER BY r.sku
	LOOP
		PERFORM FROM oms.stock AS s WHERE s.sku = v_sku FOR UPDATE SKIP LOCKED;
		IF FOUND THEN
			v_count := v_count + oms._sweep_expired(v_sku, pg_catalog.now());
		END IF;
	END LOOP;
	RETURN v_count;
END;
$$;
COMMENT ON FUNCTION oms._release_expired_reservations() IS
	'Marks held reservations past their expiry as expired (skipping SKUs another session holds) and returns how many';

CREATE OR REPLACE FUNCTION oms._check_stock_change(p_sku text, p_on_hand bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_reserved bigint;
BEGIN
	IF p_on_hand < 0 THEN
		RAISE EXCEPTION 'stock of SKU "%" cannot be negative', p_sku
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = pg_catalog.format('The change would leave %s units on hand.', p_on_hand);
	END IF;
	SELECT s.reserved INTO v_reserved FROM oms.stock AS s WHERE s.sku = p_sku;
	IF p_on_hand < v_reserved AND oms._sweep_expired(p_sku, pg_catalog.now()) > 0 THEN
		SELECT s.reserved INTO v_reserved FROM oms.stock AS s WHERE s.sku = p_sku;
	END IF;
	IF p_on_hand < v_reserved THEN
		RAISE EXCEPTION 'stock of SKU "%" cannot drop below its reserved units', p_sku
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('Reserved: %s; the change would leave %s on hand.',
											 v_reserved, p_on_hand);
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._check_stock_change(text, bigint) IS
	'Refuses a stock level below zero (22023) or below the reserved units (55000), sweeping expired reservations first';

-- (inventory: end)

--
-- The saga engine: the lean step path.
--

-- _advance_forward takes the order's status instead of the order row and
-- returns the saga row when the step completed and the saga moved on, so
-- that _run_sagas reads neither again per step.
DROP FUNCTION oms._advance_forward(oms.sagas, oms.orders, timestamptz);

CREATE FUNCTION oms._advance_forward(p_saga oms.sagas, p_order_status oms.order_status, p_now timestamptz)
RETURNS oms.sagas
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_step oms.saga_steps;
	v_saga oms.sagas;
	v_timeout interval;
	v_rerun boolean := false;
	v_result text;
	v_state text;
	v_message text;
	v_detail text;
	v_error jsonb;
BEGIN
	SELECT * INTO v_step FROM oms.saga_steps AS t WHERE t.saga_id = p_saga.id AND t.step_no = p_saga.step_no;
	IF v_step.status = 'waiting' THEN
		v_timeout := oms._step_timeout(v_step.name);
		IF oms._reply_for(pg_catalog.format('%s:%s:%s', p_saga.id, v_step.step_no, v_step.attempts)) IS NOT NULL THEN
			-- The remote provider answered: run the same attempt again, the
			-- provider now returns the answer.  This comes before a cancel,
			-- so that a capture the provider made is recorded (and then
			-- refunded).
			v_rerun := true;
		ELSIF p_saga.kind = 'fulfilment' AND p_order_status = 'cancel_requested' THEN
			PERFORM oms._start_compensation(p_saga, p_saga.step_no, 'canceled', NULL, p_now);
			RETURN NULL;
		ELSIF p_now < v_step.started_at + v_timeout THEN
			UPDATE oms.sagas AS s SET next_run_at = v_step.started_at + v_timeout WHERE s.id = p_saga.id;
			RETURN NULL;
		ELSE
			PERFORM oms._step_failed(p_saga, v_step,
				oms._error_json('OM012', pg_catalog.format('step %s got no answer within %s', v_step.name, v_timeout),
								NULL, v_step, v_step.attempts, p_now), p_now);
			RETURN NULL;
		END IF;
	ELSIF p_saga.kind = 'fulfilment' AND p_order_status = 'cancel_requested' THEN
		PERFORM oms._start_compensation(p_saga, p_saga.step_no, 'canceled', NULL, p_now);
		RETURN NULL;
	END IF;

	-- The attempt is counted in the same UPDATE that records its outcome
	-- (one write per attempt); the step sees its number already.
	IF NOT v_rerun THEN
		v_step.attempts := v_step.attempts + 1;
		v_step.started_at := p_now;
		v_step.first_started_at := coalesce(v_step.first_started_at, p_now);
	END IF;

	BEGIN
		-- The fulfilment steps are called directly, not through
		-- oms._run_step: one call less per step.
		CASE v_step.name
			WHEN 'reserve' THEN
				PERFORM oms._reserve_order(p_saga.order_id, p_now);
				v_result := 'done';
			WHEN 'pay' THEN
				v_result := oms._step_pay(p_saga, v_step, p_now);
			WHEN 'confirm' THEN
				-- oms._step_confirm
				PERFORM oms._move_reserved_stock(p_saga.order_id, 'held', 'consumed', -1);
				PERFORM oms._change_status(p_saga.order_id, 'confirmed', 'order.confirmed',
										   pg_catalog.jsonb_build_object('saga_id', p_saga.id));
				v_result := 'done';
			ELSE
				v_result := oms._run_step(p_saga, v_step, p_now);
		END CASE;
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
		v_error := oms._error_json(v_state, v_message, v_detail, v_step, v_step.attempts, p_now);
		-- pending again: a retry is a new attempt, not a wait for a reply.
		UPDATE oms.saga_steps AS t
		SET status = 'pending', attempts = v_step.attempts, started_at = v_step.started_at,
			first_started_at = v_step.first_started_at
		WHERE t.saga_id = v_step.saga_id AND t.step_no = v_step.step_no;
		IF oms._is_transient(v_state) AND v_step.attempts < pg_catalog.current_setting('oms.max_attempts')::integer THEN
			PERFORM oms._step_retry(p_saga, v_step, v_error, p_now, false);
		ELSE
			PERFORM oms._step_failed(p_saga, v_step, v_error, p_now);
		END IF;
		RETURN NULL;
	END;

	IF v_result = 'waiting' THEN
		v_timeout := oms._step_timeout(v_step.name);
		UPDATE oms.saga_steps AS t
		SET status = 'waiting', attempts = v_step.attempts, started_at = v_step.started_at,
			first_started_at = v_step.first_started_at
		WHERE t.saga_id = v_step.saga_id AND t.step_no = v_step.step_no;
		UPDATE oms.sagas AS s SET next_run_at = p_now + v_timeout, updated_at = pg_catalog.now() WHERE s.id = p_saga.id;
		PERFORM oms._timeline(p_saga.order_id, 'saga.step_waiting',
			pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', v_step.name, 'attempt', v_step.attempts,
										  'timeout_at', p_now + v_timeout));
		RETURN NULL;
	END IF;

	-- Done.  The step, its saga.step_completed entry (with saga.completed
	-- after the last step: what oms._finish_saga writes) and the saga, in
	-- one statement.  The last step is the length of the kind's step list
	-- (oms._saga_step_names).
	IF v_step.step_no = (CASE p_saga.kind WHEN 'fulfilment' THEN 3 ELSE 2 END) THEN
		WITH t AS (
			UPDATE oms.saga_steps AS t
			SET status = 'done', attempts = v_step.attempts, started_at = v_step.started_at,
				first_started_at = v_step.first_started_at,
				completed_at = GREATEST(p_now, pg_catalog.clock_timestamp())
			WHERE t.saga_id = v_step.saga_id AND t.step_no = v_step.step_no
		), o AS (
			UPDATE oms.orders AS o SET timeline_seq = o.timeline_seq + 2
			WHERE o.id = p_saga.order_id
			RETURNING o.id, o.timeline_seq
		), e AS (
			INSERT INTO oms.order_events (order_id, seq, event_type, data, traceparent)
			SELECT o.id, o.timeline_seq - 2 + x.n, x.event_type, x.data,
				   NULLIF(pg_catalog.current_setting('oms.traceparent', true), '')
			FROM o CROSS JOIN (VALUES
				(1, 'saga.step_completed',
				 pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', v_step.name, 'attempt', v_step.attempts)),
				(2, 'saga.completed',
				 pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'kind', p_saga.kind, 'outcome',
					CASE p_saga.kind WHEN 'fulfilment' THEN 'confirmed' ELSE 'refunded' END))) AS x(n, event_type, data)
			ORDER BY x.n
		)
		UPDATE oms.sagas AS s
		SET status = 'completed', outcome = CASE p_saga.kind WHEN 'fulfilment' THEN 'confirmed' ELSE 'refunded' END,
			finished_at = p_now, updated_at = pg_catalog.now()
		WHERE s.id = p_saga.id
		RETURNING * INTO v_saga;
		-- Completed: the caller stops here, whatever the order's status now.
		RETURN v_saga;
	END IF;

	WITH t AS (
		UPDATE oms.saga_steps AS t
		SET status = 'done', attempts = v_step.attempts, started_at = v_step.started_at,
			first_started_at = v_step.first_started_at,
			completed_at = GREATEST(p_now, pg_catalog.clock_timestamp())
		WHERE t.saga_id = v_step.saga_id AND t.step_no = v_step.step_no
	), o AS (
		UPDATE oms.orders AS o SET timeline_seq = o.timeline_seq + 1
		WHERE o.id = p_saga.order_id
		RETURNING o.id, o.timeline_seq
	), e AS (
		INSERT INTO oms.order_events (order_id, seq, event_type, data, traceparent)
		SELECT o.id, o.timeline_seq, 'saga.step_completed',
			   pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', v_step.name, 'attempt', v_step.attempts),
			   NULLIF(pg_catalog.current_setting('oms.traceparent', true), '')
		FROM o
	)
	UPDATE oms.sagas AS s SET step_no = s.step_no + 1, next_run_at = p_now, error = NULL,
		updated_at = pg_catalog.now()
	WHERE s.id = p_saga.id
	RETURNING * INTO v_saga;
	RETURN v_saga;
END;
$$;
COMMENT ON FUNCTION oms._advance_forward(oms.sagas, oms.order_status, timestamptz) IS
	'Runs one attempt of the current step of a running saga, or notices its timeout or a cancel request; returns the saga when the step completed, else NULL';

REVOKE ALL ON FUNCTION oms._advance_forward(oms.sagas, oms.order_status, timestamptz) FROM PUBLIC;

CREATE OR REPLACE FUNCTION oms._change_status(p_order_id uuid, p_to_status oms.order_status, p_event_type text, p_data jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_from oms.order_status;
	v_document jsonb;
	v_trace text;
BEGIN
	SELECT o.status INTO v_from FROM oms.orders AS o WHERE o.id = p_order_id;
	-- Writing the same status is no transition for the trigger; an event
	-- for it would announce a change that did not happen.
	IF v_from = p_to_status AND NOT oms._transition_allowed(v_from, p_to_status) THEN
		RAISE EXCEPTION 'order "%" is already %', p_order_id, p_to_status
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	v_trace := NULLIF(pg_catalog.current_setting('oms.traceparent', true), '');
	WITH o AS (
		UPDATE oms.orders AS o
		SET status = p_to_status, timeline_seq = o.timeline_seq + 1, event_seq = o.event_seq + 1
		WHERE o.id = p_order_id
		RETURNING o.*
	), d AS (
		-- oms._order_document(o, oms._order_items_json(o.id))
		SELECT o.id, o.status, o.timeline_seq, o.event_seq,
			   pg_catalog.jsonb_build_object(
				'order_id', o.id,
				'customer_id', o.customer_id,
				'status', o.status,
				'currency', o.currency,
				'total', o.total,
				'items', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
									'line_no', i.line_no,
									'sku', i.sku,
									'quantity', i.quantity,
									'unit_price', i.unit_price,
									'line_total', i.line_total) ORDER BY i.line_no), '[]'::jsonb)
						  FROM oms.order_items AS i
						  WHERE i.order_id = o.id),
				'version', o.version,
				'metadata', o.metadata,
				'created_at', pg_catalog.to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
				'updated_at', pg_catalog.to_char(o.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
				AS document
		FROM o
	), e AS (
		INSERT INTO oms.order_events (order_id, seq, event_type, from_status, to_status, data, traceparent)
		SELECT d.id, d.timeline_seq, p_event_type, v_from, d.status, p_data, v_trace
		FROM d
	), x AS (
		INSERT INTO oms.outbox (aggregatetype, aggregateid, type, payload, seq, traceparent)
		SELECT 'order', d.id, p_event_type,
			   p_data || pg_catalog.jsonb_build_object('previous_status', v_from, 'order', d.document),
			   d.event_seq, v_trace
		FROM d
	)
	SELECT d.document INTO v_document FROM d;
	-- The relay publishes within milliseconds of the commit.
	PERFORM oms._notify_worker();
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION oms._change_status(uuid, oms.order_status, text, jsonb) IS
	'Changes an order status with its timeline entry and outbox event; returns the order document';

CREATE OR REPLACE FUNCTION oms._create_order(p_customer_id text, p_items jsonb, p_currency text,
								  p_idempotency_key text, p_metadata jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_priced jsonb;
	v_document jsonb;
	v_hash bytea;
	v_trace text;
BEGIN
	PERFORM oms._check_identifier('customer_id', p_customer_id, 255);
	IF p_items IS NULL THEN
		RAISE EXCEPTION 'items must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- oms._currency_exponent raises the error of an unknown currency.
	PERFORM FROM oms.currencies AS c WHERE c.code = p_currency;
	IF NOT FOUND THEN
		PERFORM oms._currency_exponent(p_currency);
	END IF;
	PERFORM oms._check_json_argument('metadata', p_metadata,
									 pg_catalog.current_setting('oms.max_metadata_bytes')::integer);
	IF p_idempotency_key IS NOT NULL THEN
		-- oms._check_idempotency_key, which also refuses an empty key.
		IF pg_catalog.length(p_idempotency_key) = 0 THEN
			PERFORM oms._check_idempotency_key(p_idempotency_key);
		END IF;
		PERFORM oms._check_identifier('idempotency_key', p_idempotency_key, 255);
	END IF;
	-- The request is identified by its priced, normalized items, so that
	-- 2 and 2.0 or reordered keys are the same request.
	v_priced := oms._price_items(p_items);

	IF p_idempotency_key IS NOT NULL THEN
		-- oms._request_hash
		v_hash := pg_catalog.sha256(pg_catalog.convert_to(
			pg_catalog.jsonb_build_array(p_customer_id, v_priced -> 'items', p_currency, p_metadata)::text, 'UTF8'));
		-- The claim of oms._idempotency_begin; a key already there (a replay,
		-- a conflict, a claim of this transaction) is its business.
		INSERT INTO oms.idempotency_keys AS k (key, function_name, request_hash, response, created_at, expires_at)
		VALUES (p_idempotency_key, 'oms_create_order', v_hash, NULL, pg_catalog.now(),
				pg_catalog.now() + pg_catalog.current_setting('oms.idempotency_ttl')::interval)
		ON CONFLICT (key) DO UPDATE
			SET function_name = excluded.function_name, request_hash = excluded.request_hash,
				response = NULL, created_at = excluded.created_at, expires_at = excluded.expires_at
			WHERE k.expires_at <= pg_catalog.now();
		IF NOT FOUND THEN
			RETURN oms._idempotency_begin(p_idempotency_key, 'oms_create_order', v_hash);
		END IF;
	END IF;

	v_trace := NULLIF(pg_catalog.current_setting('oms.traceparent', true), '');
	WITH o AS (
		INSERT INTO oms.orders (customer_id, currency, total, metadata, timeline_seq, event_seq)
		VALUES (p_customer_id, p_currency, (v_priced ->> 'total')::bigint, p_metadata, 1, 1)
		RETURNING *
	), i AS (
		INSERT INTO oms.order_items (order_id, line_no, sku, quantity, unit_price, line_total)
		SELECT o.id, i.line_no, i.sku, i.quantity, i.unit_price, i.line_total
		FROM o CROSS JOIN pg_catalog.jsonb_to_recordset(v_priced -> 'items')
			AS i(line_no integer, sku text, quantity integer, unit_price bigint, line_total bigint)
	), d AS (
		-- oms._order_document(o, v_priced -> 'items')
		SELECT o.id, o.status, o.total, o.currency,
			   pg_catalog.jsonb_build_object(
				'order_id', o.id,
				'customer_id', o.customer_id,
				'status', o.status,
				'currency', o.currency,
				'total', o.total,
				'items', v_priced -> 'items',
				'version', o.version,
				'metadata', o.metadata,
				'created_at', pg_catalog.to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
				'updated_at', pg_catalog.to_char(o.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
				AS document
		FROM o
	), c AS (
		SELECT d.*, pg_catalog.jsonb_build_object('total', d.total, 'currency', d.currency,
												  'item_count', pg_catalog.jsonb_array_length(v_priced -> 'items'),
												  'idempotency_key', p_idempotency_key) AS data
		FROM d
	), e AS (
		INSERT INTO oms.order_events (order_id, seq, event_type, from_status, to_status, data, traceparent)
		SELECT c.id, 1, 'order.created', NULL, c.status, c.data, v_trace
		FROM c
	), x AS (
		INSERT INTO oms.outbox (aggregatetype, aggregateid, type, payload, seq, traceparent)
		SELECT 'order', c.id, 'order.created',
			   c.data || pg_catalog.jsonb_build_object('previous_status', NULL::oms.order_status, 'order', c.document),
			   1, v_trace
		FROM c
	)
	SELECT c.document INTO v_document FROM c;
	PERFORM oms._check_publishable(v_document);
	-- The relay publishes within milliseconds of the commit.
	PERFORM oms._notify_worker();

	IF p_idempotency_key IS NOT NULL THEN
		-- oms._idempotency_finish
		UPDATE oms.idempotency_keys AS k SET response = v_document
		WHERE k.key = p_idempotency_key AND k.function_name = 'oms_create_order' AND k.request_hash = v_hash;
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION oms._create_order(text, jsonb, text, text, jsonb) IS
	'Creates a pending order: the body of both oms_create_order functions';

CREATE OR REPLACE FUNCTION oms._step_pay(p_saga oms.sagas, p_step oms.saga_steps, p_now timestamptz)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_payment oms.payments;
	v_answer jsonb;
BEGIN
	SELECT * INTO v_payment FROM oms.payments AS p WHERE p.order_id = p_saga.order_id FOR UPDATE;
	IF EXISTS (SELECT FROM oms.reservations AS r
			   WHERE r.order_id = p_saga.order_id AND (r.status <> 'held' OR r.expires_at <= p_now)) THEN
		RAISE EXCEPTION 'the reservations of the order expired before payment'
			USING ERRCODE = 'OM011';
	END IF;
	-- The built-in test provider directly: what oms._payment_request would
	-- answer, without its call and the correlation id it does not use.
	IF pg_catalog.current_setting('oms.payment_provider') = 'test' THEN
		v_answer := oms._test_provider(v_payment.method, 'charge', p_step.attempts);
	ELSE
		v_answer := oms._payment_request(v_payment, 'charge', v_payment.amount, p_step.attempts,
										 pg_catalog.format('%s:%s:%s', p_saga.id, p_step.step_no, p_step.attempts));
	END IF;
	CASE v_answer ->> 'outcome'
		WHEN 'approved' THEN
			UPDATE oms.payments AS p
			SET authorized = p.amount, captured = p.amount, status = 'captured',
				provider_reference = v_answer ->> 'reference', updated_at = pg_catalog.now()
			WHERE p.id = v_payment.id;
			-- Paid: the units stay held until confirm, whatever the TTL.
			UPDATE oms.reservations AS r SET expires_at = 'infinity'
			WHERE r.order_id = p_saga.order_id AND r.status = 'held';
			RETURN 'done';
		WHEN 'pending' THEN
			RETURN 'waiting';
		WHEN 'declined' THEN
			-- Rolled back with the attempt; the compensation records the
			-- decline (OM013) on the payment.
			RAISE EXCEPTION 'payment declined: %', coalesce(v_answer ->> 'message', 'no reason given')
				USING ERRCODE = 'OM013';
		ELSE
			RAISE EXCEPTION 'payment failed: %', coalesce(v_answer ->> 'message', 'no reason given')
				USING ERRCODE = 'OM010';
	END CASE;
END;
$$;
COMMENT ON FUNCTION oms._step_pay(oms.sagas, oms.saga_steps, timestamptz) IS
	'Fulfilment step 2: authorize and capture the order total';

-- Time-ordered ids for the tables an order writes to (src/input.c).
CREATE FUNCTION oms._uuid_v7()
RETURNS uuid
LANGUAGE c VOLATILE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_uuid_v7';
COMMENT ON FUNCTION oms._uuid_v7() IS
	'A time-ordered UUID (version 7: Unix time in milliseconds, then random bits), the default id of orders, sagas, payments and refunds';
REVOKE ALL ON FUNCTION oms._uuid_v7() FROM PUBLIC;
ALTER TABLE oms.orders ALTER COLUMN id SET DEFAULT oms._uuid_v7();
ALTER TABLE oms.sagas ALTER COLUMN id SET DEFAULT oms._uuid_v7();
ALTER TABLE oms.payments ALTER COLUMN id SET DEFAULT oms._uuid_v7();
ALTER TABLE oms.refunds ALTER COLUMN id SET DEFAULT oms._uuid_v7();

-- The whole fulfilment saga in one move when its steps would all succeed
-- at once (oms._run_sagas calls it for a fresh saga).
CREATE OR REPLACE FUNCTION oms._fulfil_at_once(p_saga oms.sagas, p_now timestamptz)
RETURNS oms.sagas
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_payment oms.payments;
	v_answer jsonb;
	v_saga oms.sagas;
	v_trace text;
BEGIN
	IF pg_catalog.current_setting('oms.payment_provider') <> 'test' THEN
		RETURN NULL;
	END IF;
	SELECT * INTO v_payment FROM oms.payments AS p WHERE p.order_id = p_saga.order_id FOR UPDATE;
	v_answer := oms._test_provider(v_payment.method, 'charge', 1);
	IF v_answer ->> 'outcome' IS DISTINCT FROM 'approved'
	   OR EXISTS (SELECT FROM oms.saga_steps AS t
				  WHERE t.saga_id = p_saga.id AND (t.status <> 'pending' OR t.attempts <> 0))
	   OR EXISTS (SELECT FROM oms.reservations AS r WHERE r.order_id = p_saga.order_id)
	   OR EXISTS (SELECT FROM oms.order_items AS i
				  LEFT JOIN oms.stock AS s ON s.sku = i.sku
				  WHERE i.order_id = p_saga.order_id
					AND (s.sku IS NULL OR s.on_hand - s.reserved < i.quantity)) THEN
		RETURN NULL;
	END IF;

	-- reserve, pay and the stock half of confirm (oms._reserve_order,
	-- oms._step_pay, oms._move_reserved_stock).
	WITH r AS (
		INSERT INTO oms.reservations (order_id, sku, quantity, status, expires_at, created_at, updated_at)
		SELECT i.order_id, i.sku, i.quantity, 'consumed', 'infinity', p_now, pg_catalog.now()
		FROM oms.order_items AS i WHERE i.order_id = p_saga.order_id
		ORDER BY i.sku
	), p AS (
		UPDATE oms.payments AS p
		SET authorized = p.amount, captured = p.amount, status = 'captured',
			provider_reference = v_answer ->> 'reference', updated_at = pg_catalog.now()
		WHERE p.id = v_payment.id
	)
	UPDATE oms.stock AS s SET on_hand = s.on_hand - i.quantity, updated_at = pg_catalog.now()
	FROM oms.order_items AS i
	WHERE i.order_id = p_saga.order_id AND s.sku = i.sku;

	-- The order half of confirm (oms._change_status) and the bookkeeping
	-- of the three steps (oms._advance_forward), timeline entries in the
	-- order the steps would write them.
	v_trace := NULLIF(pg_catalog.current_setting('oms.traceparent', true), '');
	WITH o AS (
		UPDATE oms.orders AS o
		SET status = 'confirmed', timeline_seq = o.timeline_seq + 5, event_seq = o.event_seq + 1
		WHERE o.id = p_saga.order_id
		RETURNING o.id, o.timeline_seq, o.event_seq, o AS row
	), d AS (
		SELECT o.id, o.timeline_seq, o.event_seq,
			   oms._order_document(o.row, oms._order_items_json(o.id)) AS document
		FROM o
	), e AS (
		INSERT INTO oms.order_events (order_id, seq, event_type, from_status, to_status, data, traceparent)
		SELECT d.id, d.timeline_seq - 5 + x.n, x.event_type, x.from_status, x.to_status, x.data, v_trace
		FROM d CROSS JOIN (VALUES
			(1, 'saga.step_completed', NULL::oms.order_status, NULL::oms.order_status,
			 pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', 'reserve', 'attempt', 1)),
			(2, 'saga.step_completed', NULL, NULL,
			 pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', 'pay', 'attempt', 1)),
			(3, 'order.confirmed', 'processing', 'confirmed',
			 pg_catalog.jsonb_build_object('saga_id', p_saga.id)),
			(4, 'saga.step_completed', NULL, NULL,
			 pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'step', 'confirm', 'attempt', 1)),
			(5, 'saga.completed', NULL, NULL,
			 pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'kind', 'fulfilment', 'outcome', 'confirmed')))
			AS x(n, event_type, from_status, to_status, data)
		ORDER BY x.n
	), x AS (
		INSERT INTO oms.outbox (aggregatetype, aggregateid, type, payload, seq, traceparent)
		SELECT 'order', d.id, 'order.confirmed',
			   pg_catalog.jsonb_build_object('saga_id', p_saga.id, 'previous_status', 'processing',
											 'order', d.document),
			   d.event_seq, v_trace
		FROM d
	), t AS (
		UPDATE oms.saga_steps AS t
		SET status = 'done', attempts = 1, started_at = p_now, first_started_at = p_now,
			completed_at = GREATEST(p_now, pg_catalog.clock_timestamp())
		WHERE t.saga_id = p_saga.id
	)
	UPDATE oms.sagas AS s
	SET status = 'completed', outcome = 'confirmed', step_no = 3, error = NULL,
		finished_at = p_now, updated_at = pg_catalog.now()
	WHERE s.id = p_saga.id
	RETURNING * INTO v_saga;
	-- The relay publishes within milliseconds of the commit.
	PERFORM oms._notify_worker();
	RETURN v_saga;
END;
$$;
COMMENT ON FUNCTION oms._fulfil_at_once(oms.sagas, timestamptz) IS
	'Runs a fresh fulfilment saga whose steps would all succeed at once as one move (the same rows as its three steps); returns the completed saga, or NULL having written nothing';
REVOKE ALL ON FUNCTION oms._fulfil_at_once(oms.sagas, timestamptz) FROM PUBLIC;

-- (saga engine: end)

--
-- The worker: parallel saga workers.
--

-- oms_saga_worker_status(): one row per process that runs saga steps.
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

REVOKE ALL ON FUNCTION @extschema@.oms_saga_worker_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._saga_worker_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_saga_worker_status() TO oms_admin, oms_reader;

COMMENT ON FUNCTION @extschema@.oms_worker_status() IS
	'One row per database in oms.database_name: its main worker''s pid (null when none runs), whether it runs, when it last looped, loops and units of work done since server start, and the last error a batch raised (kept until the next error)';

-- Runners in parallel skip a saga whose stock rows are busy instead of
-- waiting for them (two batches could deadlock).
CREATE OR REPLACE FUNCTION oms._run_sagas(p_max integer, p_now timestamptz)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET oms.traceparent = ''
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_units integer := 0;
	v_claimed oms.sagas;
	v_saga oms.sagas;
	v_fused oms.sagas;
	v_order_status oms.order_status;
	v_state text;
	v_message text;
BEGIN
	-- The claim returns the locked row: nobody else can change it until
	-- this transaction ends, so the engine reads it again only after a
	-- move that did not hand the new row back.
	FOR v_claimed IN
		SELECT s.* FROM oms.sagas AS s
		WHERE s.status IN ('running', 'compensating') AND s.next_run_at <= p_now
		ORDER BY s.next_run_at
		LIMIT p_max
		FOR UPDATE SKIP LOCKED
	LOOP
		-- An API call holding the order (a cancel, say) goes first; the saga
		-- stays due and is picked up again.  Never waiting here means the
		-- worker and the API cannot deadlock.  Under the lock, the order's
		-- status changes only through this saga's own steps.
		SELECT o.status INTO v_order_status FROM oms.orders AS o
		WHERE o.id = v_claimed.order_id FOR NO KEY UPDATE SKIP LOCKED;
		CONTINUE WHEN NOT FOUND;

		-- One subtransaction per saga: a defect or database error in one
		-- saga rolls back that saga's progress in this batch only.
		BEGIN
			-- The same for the stock rows its steps lock, all or none, in
			-- SKU order: another runner's batch (or an API call) holds a
			-- busy one until it commits, and two batches waiting for each
			-- other's rows would deadlock.  A busy row ends this
			-- subtransaction before any step ran; the saga stays due.
			PERFORM 1 FROM oms.stock AS st
			WHERE st.sku IN (SELECT i.sku FROM oms.order_items AS i WHERE i.order_id = v_claimed.order_id)
			ORDER BY st.sku
			FOR UPDATE NOWAIT;
			v_saga := v_claimed;
			PERFORM pg_catalog.set_config('oms.traceparent', coalesce(v_saga.traceparent, ''), true);
			LOOP
				EXIT WHEN v_saga.status NOT IN ('running', 'compensating') OR v_saga.next_run_at > p_now
					   OR v_units >= p_max;
				-- A fresh fulfilment saga whose steps all succeed at once
				-- runs as one move when the batch has room for its steps.
				IF v_saga.status = 'running' AND v_saga.kind = 'fulfilment' AND v_saga.step_no = 1
				   AND v_order_status = 'processing' AND p_max - v_units >= 3 THEN
					v_fused := oms._fulfil_at_once(v_saga, p_now);
					IF v_fused.id IS NOT NULL THEN
						v_units := v_units + 3;
						v_saga := v_fused;
						CONTINUE;
					END IF;
				END IF;
				v_units := v_units + 1;
				IF v_saga.status = 'running' THEN
					v_saga := oms._advance_forward(v_saga, v_order_status, p_now);
				ELSE
					PERFORM oms._advance_backward(v_saga, p_now);
					v_saga := NULL;
				END IF;
				IF v_saga.id IS NULL THEN
					-- Not the hot path: the saga, and the order with it, may
					-- have changed in any way.
					SELECT * INTO v_saga FROM oms.sagas AS s WHERE s.id = v_claimed.id;
					SELECT o.status INTO v_order_status FROM oms.orders AS o WHERE o.id = v_claimed.order_id;
				END IF;
			END LOOP;
		EXCEPTION
		WHEN lock_not_available THEN
			-- Its stock is busy (above): left for a later batch.
			NULL;
		WHEN OTHERS THEN
			-- Not a step failure (those are handled inside): record it on
			-- the saga, back off, carry on with the next saga.
			GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
			UPDATE oms.sagas AS s
			SET error = pg_catalog.jsonb_build_object('sqlstate', v_state, 'message', v_message,
													  'at', p_now, 'engine', true),
				next_run_at = p_now + oms._backoff(1), updated_at = pg_catalog.now()
			WHERE s.id = v_claimed.id;
			PERFORM oms._log('warning', 'saga_error', 'saga_id', v_claimed.id::text,
							 'order_id', v_claimed.order_id::text,
							 'sqlstate', v_state, 'message', v_message);
		END;
		EXIT WHEN v_units >= p_max;
	END LOOP;
	RETURN v_units;
END;
$$;
COMMENT ON FUNCTION oms._run_sagas(integer, timestamptz) IS
	'Runs up to p_max due saga steps as of p_now, each saga in its own subtransaction; returns the steps run';

-- oms_run_sagas() runs batches as the worker does, with no sweep of its own.
CREATE OR REPLACE FUNCTION @extschema@.oms_run_sagas(max_steps integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM oms._check_not_null('max_steps', max_steps);
	IF max_steps < 1 THEN
		RAISE EXCEPTION 'max_steps must be at least 1'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN oms._run_sagas(max_steps, pg_catalog.clock_timestamp());
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_run_sagas(integer) IS
	'Runs up to max_steps due saga steps in this session, the same way the worker does; returns how many ran';

-- A cancel waits for a runner that holds the saga row instead of skipping it.
CREATE OR REPLACE FUNCTION @extschema@.oms_cancel_order(
	order_id uuid,
	reason text DEFAULT NULL,
	idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_order oms.orders;
	v_from oms.order_status;
	v_document jsonb;
	v_hash bytea;
BEGIN
	PERFORM oms._check_not_null('order_id', oms_cancel_order.order_id);
	IF oms_cancel_order.reason IS NOT NULL AND pg_catalog.length(oms_cancel_order.reason) > 1000 THEN
		RAISE EXCEPTION 'reason is too long'
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = pg_catalog.format('reason has at most 1000 characters, got %s.',
											 pg_catalog.length(oms_cancel_order.reason));
	END IF;
	PERFORM oms._check_idempotency_key(oms_cancel_order.idempotency_key);

	IF oms_cancel_order.idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(pg_catalog.jsonb_build_array(oms_cancel_order.order_id, oms_cancel_order.reason));
		v_document := oms._idempotency_begin(oms_cancel_order.idempotency_key, 'oms_cancel_order', v_hash);
		IF v_document IS NOT NULL THEN
			RETURN v_document;
		END IF;
	END IF;

	v_order := oms._lock_order(oms_cancel_order.order_id);
	v_from := v_order.status;
	IF v_from = 'pending' THEN
		v_document := oms._change_status(v_order.id, 'canceled', 'order.canceled',
			pg_catalog.jsonb_build_object('reason', oms_cancel_order.reason,
										  'idempotency_key', oms_cancel_order.idempotency_key));
	ELSIF v_from = 'processing' THEN
		-- The saga stops at its next step and compensates what it did; the
		-- order ends canceled then.  Wake it now if it is waiting.  This
		-- waits for a runner that holds the saga row: one that locked it
		-- without running it (its claim saw the row due, then rechecked a
		-- newer version that is not) would otherwise leave the cancel to
		-- the step's timeout.  No deadlock: a runner never waits for an
		-- order, and we hold this one, so no runner runs this saga now.
		v_document := oms._change_status(v_order.id, 'cancel_requested', 'order.cancel_requested',
			pg_catalog.jsonb_build_object('reason', oms_cancel_order.reason,
										  'idempotency_key', oms_cancel_order.idempotency_key));
		UPDATE oms.sagas AS s SET next_run_at = pg_catalog.now()
		WHERE s.order_id = v_order.id AND s.kind = 'fulfilment' AND s.status = 'running';
		PERFORM oms._notify_worker();
	ELSE
		RAISE EXCEPTION 'order "%" cannot be canceled', v_order.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('The order is %s.', v_from),
				  HINT = CASE
					WHEN v_from = 'canceled' THEN 'The order is already canceled.'
					WHEN v_from = 'cancel_requested' THEN 'A cancel is already in progress.'
					WHEN v_from IN ('confirmed', 'partially_refunded') THEN 'Refund the order instead with oms_refund_order().'
					ELSE 'Only pending and processing orders can be canceled.' END;
	END IF;

	IF oms_cancel_order.idempotency_key IS NOT NULL THEN
		PERFORM oms._idempotency_finish(oms_cancel_order.idempotency_key, 'oms_cancel_order', v_hash, v_document);
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_cancel_order(uuid, text, text) IS
	'Cancels an order: pending orders at once; processing orders are compensated by their saga and end canceled';

-- After a partial batch, whether sagas held by others are left (src/worker.c).
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

REVOKE ALL ON FUNCTION oms._sagas_due_now() FROM PUBLIC;

-- The worker's batch no longer sweeps expired reservations: maintenance does.
CREATE OR REPLACE FUNCTION oms._worker_tick(p_batch integer)
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

-- Nothing sweeps on every loop now.
COMMENT ON FUNCTION @extschema@.oms_release_expired_reservations() IS
	'Marks held reservations past their expiry as expired and returns how many; the maintenance task release_reservations runs it (expired reservations stop counting without it)';

-- Health and metrics know about every saga worker.
-- oms._health: one check per subsystem.
CREATE OR REPLACE FUNCTION oms._health_worker(p_memory jsonb, p_now timestamptz)
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

CREATE OR REPLACE FUNCTION oms._health_sagas(p_now timestamptz, p_cap integer)
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

CREATE OR REPLACE FUNCTION oms._health_outbox(p_memory jsonb, p_now timestamptz, p_cap integer)
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

CREATE OR REPLACE FUNCTION oms._health_inbox(p_memory jsonb, p_worker jsonb)
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

CREATE OR REPLACE FUNCTION oms._health_dead_letters(p_cap integer)
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

CREATE OR REPLACE FUNCTION oms._health(p_memory jsonb, p_now timestamptz)
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
REVOKE ALL ON FUNCTION oms._health_worker(jsonb, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._health_sagas(timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._health_outbox(jsonb, timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._health_inbox(jsonb, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._health_dead_letters(integer) FROM PUBLIC;

CREATE OR REPLACE FUNCTION @extschema@.oms_health()
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

CREATE OR REPLACE FUNCTION oms._metric_families()
RETURNS TABLE (family text, type text, help text, ord integer)
LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 26
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT f.family, f.type, f.help, f.ord
	FROM (VALUES
		(1, 'oms_orders_by_status', 'gauge', 'Orders in each status.'),
		(2, 'oms_orders_created_total', 'counter', 'Orders created.'),
		(3, 'oms_sagas_started_total', 'counter', 'Sagas started, by kind (fulfilment, refund).'),
		(4, 'oms_saga_outcomes_total', 'counter', 'Sagas finished, by kind and outcome (confirmed, refunded, failed, canceled).'),
		(5, 'oms_sagas_in_flight', 'gauge', 'Sagas running or compensating.'),
		(6, 'oms_sagas_stuck', 'gauge', 'Sagas whose compensation could not finish and waits for an operator.'),
		(7, 'oms_saga_oldest_due_age_seconds', 'gauge', 'How long the most overdue saga step has been due; 0 when none is due.'),
		(8, 'oms_saga_step_duration_seconds', 'histogram', 'Time from the first attempt of a saga step to its successful completion, retries and waits included.'),
		(9, 'oms_saga_step_retries_total', 'counter', 'Saga step attempts after the first one (forward direction).'),
		(10, 'oms_outbox_pending_events', 'gauge', 'Events in the outbox not yet acknowledged by Kafka.'),
		(11, 'oms_outbox_oldest_pending_age_seconds', 'gauge', 'Age of the oldest event in the outbox; 0 when the outbox is empty.'),
		(12, 'oms_outbox_backing_off_events', 'gauge', 'Outbox events waiting for their next attempt after a failed publish.'),
		(13, 'oms_relay_published_events_total', 'counter', 'Events acknowledged by Kafka since the server started.'),
		(14, 'oms_relay_publish_failures_total', 'counter', 'Failed publish attempts since the server started.'),
		(15, 'oms_relay_batches_total', 'counter', 'Relay batches settled since the server started.'),
		(16, 'oms_relay_breaker_open', 'gauge', '1 while the relay circuit breaker is open or half open, else 0.'),
		(17, 'oms_dead_letters_open', 'gauge', 'Dead letters not replayed, by kind.'),
		(18, 'oms_dead_letters_created_total', 'counter', 'Dead letters created, by kind.'),
		(19, 'oms_worker_up', 'gauge', '1 while the background worker of this database runs, else 0.'),
		(20, 'oms_worker_last_loop_age_seconds', 'gauge', 'Time since the worker of this database last looped; no sample before its first loop.'),
		(21, 'oms_worker_loops_total', 'counter', 'Worker loops since the server started.'),
		(22, 'oms_worker_units_total', 'counter', 'Units of work (saga steps and similar) the workers of this database did since the server started.'),
		(23, 'oms_saga_workers_up', 'gauge', 'Processes of this database that run saga steps (the main worker included), of oms.saga_workers.'),
		(24, 'oms_inbox_replies_total', 'counter', 'Payment replies consumed since the server started, by result (applied, duplicate, late, rejected, other).'),
		(25, 'oms_inbox_reply_failures_total', 'counter', 'Payment reply transactions that failed and were retried since the server started.'),
		(26, 'oms_inbox_lag_messages', 'gauge', 'Payment replies waiting in Kafka behind the consumer; no sample while unknown.')
	) AS f(ord, family, type, help);
$$;
COMMENT ON FUNCTION oms._metric_families() IS
	'The metric families of oms.metrics and oms_metrics(), in exposition order: name, type (counter, gauge, histogram) and help text';

CREATE OR REPLACE VIEW oms.metrics AS
WITH
	order_counts AS MATERIALIZED (
		SELECT o.status, pg_catalog.count(*) AS n
		FROM oms.orders AS o
		GROUP BY o.status),
	saga_counts AS MATERIALIZED (
		SELECT s.kind, s.status, s.outcome, pg_catalog.count(*) AS n
		FROM oms.sagas AS s
		GROUP BY s.kind, s.status, s.outcome),
	saga_kinds AS (
		SELECT k.kind FROM (VALUES ('fulfilment'), ('refund')) AS k(kind)
		UNION
		SELECT c.kind FROM saga_counts AS c),
	step_names AS (
		SELECT k.kind, n.step
		FROM (VALUES ('fulfilment'), ('refund')) AS k(kind),
			 pg_catalog.unnest(oms._saga_step_names(k.kind)) AS n(step)),
	-- A step counts in the histogram once it completed successfully: done,
	-- or done and later compensated.  A step that failed also gets a
	-- completion time and may be compensated too; its saga_failed dead
	-- letter, written in the same transaction, tells it apart (a saga has
	-- at most one, so the join adds no rows).  Step names are unique across
	-- saga kinds, so the kind comes from the name and oms.sagas, as large
	-- as the steps table, is not joined.  One pass groups the steps by the
	-- first histogram bucket that holds them (1 .. n, n + 1 for +Inf only;
	-- NULL when not counted): width_bucket over the negated bounds counts
	-- the bounds >= seconds, as le means "less or equal".
	step_groups AS MATERIALIZED (
		SELECT n.kind, r.step,
			   pg_catalog.cardinality(oms._metric_step_buckets()) + 1
			   - pg_catalog.width_bucket(-r.seconds,
					ARRAY(SELECT -b FROM pg_catalog.unnest(oms._metric_step_buckets()) AS b ORDER BY 1)) AS first,
			   pg_catalog.count(*) AS n, pg_catalog.sum(r.seconds) AS seconds,
			   pg_catalog.sum(r.retries) AS retries
		FROM (SELECT t.name AS step,
					 GREATEST(t.attempts - 1, 0) AS retries,
					 CASE WHEN t.completed_at IS NOT NULL AND d.id IS NULL AND t.status IN ('done', 'compensated')
						  THEN GREATEST(EXTRACT(epoch FROM t.completed_at - t.first_started_at), 0)::double precision
					 END AS seconds
			  FROM oms.saga_steps AS t
			  LEFT JOIN oms.dead_letters AS d
					 ON d.kind = 'saga_failed' AND d.saga_id = t.saga_id AND d.step = t.name) AS r
		JOIN (SELECT k.kind, pg_catalog.unnest(oms._saga_step_names(k.kind)) AS step
			  FROM (VALUES ('fulfilment'), ('refund')) AS k(kind)) AS n ON n.step = r.step
		GROUP BY 1, 2, 3),
	step_first_bucket AS (
		SELECT g.kind, g.step, g.first, g.n, g.seconds
		FROM step_groups AS g
		WHERE g.first IS NOT NULL),
	dead_letter_counts AS MATERIALIZED (
		SELECT d.kind, pg_catalog.count(*) AS n, pg_catalog.count(*) FILTER (WHERE d.status = 'open') AS open
		FROM oms.dead_letters AS d
		GROUP BY d.kind),
	dead_letter_kinds AS (
		SELECT k.kind
		FROM (VALUES ('saga_failed'), ('compensation_stuck'), ('publish'), ('reply'), ('late_reply')) AS k(kind)
		UNION
		SELECT c.kind FROM dead_letter_counts AS c),
	outbox AS MATERIALIZED (
		SELECT * FROM oms._relay_backlog()),
	relay AS MATERIALIZED (
		SELECT * FROM oms._relay_shmem_status()),
	worker AS MATERIALIZED (
		SELECT pg_catalog.bool_or(w.alive) AS alive, pg_catalog.max(w.last_loop) AS last_loop,
			   pg_catalog.sum(w.loops) AS loops
		FROM @extschema@.oms_worker_status() AS w
		WHERE w.database = pg_catalog.current_database()),
	-- Every process's units: the saga workers' steps count as the worker's work.
	saga_workers AS MATERIALIZED (
		SELECT pg_catalog.count(*) FILTER (WHERE w.alive) AS up, pg_catalog.sum(w.units) AS units
		FROM @extschema@.oms_saga_worker_status() AS w
		WHERE w.database = pg_catalog.current_database()),
	inbox AS MATERIALIZED (
		SELECT oms._inbox_shmem_status() AS j)
SELECT m.family || m.suffix AS metric, m.family, f.type, f.help, m.labels, m.value::double precision AS value
FROM (
	SELECT 'oms_orders_by_status'::text AS family, ''::text AS suffix,
		   pg_catalog.jsonb_build_object('status', e.status) AS labels,
		   COALESCE(c.n, 0)::double precision AS value
	FROM pg_catalog.unnest(pg_catalog.enum_range(NULL::oms.order_status)) AS e(status)
	LEFT JOIN order_counts AS c ON c.status = e.status
	UNION ALL
	SELECT 'oms_orders_created_total', '', '{}', COALESCE(pg_catalog.sum(c.n), 0)
	FROM order_counts AS c
	UNION ALL
	SELECT 'oms_sagas_started_total', '', pg_catalog.jsonb_build_object('kind', k.kind),
		   COALESCE((SELECT pg_catalog.sum(c.n) FROM saga_counts AS c WHERE c.kind = k.kind), 0)
	FROM saga_kinds AS k
	UNION ALL
	SELECT 'oms_saga_outcomes_total', '', pg_catalog.jsonb_build_object('kind', o.kind, 'outcome', o.outcome),
		   COALESCE(pg_catalog.sum(c.n), 0)
	FROM (SELECT x.kind, x.outcome
		  FROM (VALUES ('fulfilment', 'confirmed'), ('fulfilment', 'failed'), ('fulfilment', 'canceled'),
					   ('refund', 'refunded'), ('refund', 'failed')) AS x(kind, outcome)
		  UNION
		  SELECT c.kind, c.outcome FROM saga_counts AS c
		  WHERE c.status IN ('completed', 'compensated') AND c.outcome IS NOT NULL) AS o
	LEFT JOIN saga_counts AS c
		   ON c.kind = o.kind AND c.outcome = o.outcome AND c.status IN ('completed', 'compensated')
	GROUP BY o.kind, o.outcome
	UNION ALL
	SELECT 'oms_sagas_in_flight', '', pg_catalog.jsonb_build_object('kind', k.kind),
		   COALESCE((SELECT pg_catalog.sum(c.n) FROM saga_counts AS c
					 WHERE c.kind = k.kind AND c.status IN ('running', 'compensating')), 0)
	FROM saga_kinds AS k
	UNION ALL
	SELECT 'oms_sagas_stuck', '', pg_catalog.jsonb_build_object('kind', k.kind),
		   COALESCE((SELECT pg_catalog.sum(c.n) FROM saga_counts AS c
					 WHERE c.kind = k.kind AND c.status = 'stuck'), 0)
	FROM saga_kinds AS k
	UNION ALL
	-- The partial index sagas_due_idx answers this without a table scan.
	SELECT 'oms_saga_oldest_due_age_seconds', '', '{}',
		   COALESCE(EXTRACT(epoch FROM pg_catalog.now() - pg_catalog.min(s.next_run_at)), 0)
	FROM oms.sagas AS s
	WHERE s.status IN ('running', 'compensating') AND s.next_run_at <= pg_catalog.now()
	UNION ALL
	SELECT 'oms_saga_step_duration_seconds', '_bucket',
		   pg_catalog.jsonb_build_object('kind', k.kind, 'step', k.step, 'le', b.le::text),
		   COALESCE((SELECT pg_catalog.sum(h.n) FROM step_first_bucket AS h
					 WHERE h.kind = k.kind AND h.step = k.step AND h.first <= b.i), 0)
	FROM step_names AS k,
		 pg_catalog.unnest(oms._metric_step_buckets()) WITH ORDINALITY AS b(le, i)
	UNION ALL
	SELECT 'oms_saga_step_duration_seconds', '_bucket',
		   pg_catalog.jsonb_build_object('kind', k.kind, 'step', k.step, 'le', '+Inf'),
		   COALESCE((SELECT pg_catalog.sum(h.n) FROM step_first_bucket AS h
					 WHERE h.kind = k.kind AND h.step = k.step), 0)
	FROM step_names AS k
	UNION ALL
	SELECT 'oms_saga_step_duration_seconds', '_sum', pg_catalog.jsonb_build_object('kind', k.kind, 'step', k.step),
		   COALESCE((SELECT pg_catalog.sum(h.seconds) FROM step_first_bucket AS h
					 WHERE h.kind = k.kind AND h.step = k.step), 0)
	FROM step_names AS k
	UNION ALL
	SELECT 'oms_saga_step_duration_seconds', '_count', pg_catalog.jsonb_build_object('kind', k.kind, 'step', k.step),
		   COALESCE((SELECT pg_catalog.sum(h.n) FROM step_first_bucket AS h
					 WHERE h.kind = k.kind AND h.step = k.step), 0)
	FROM step_names AS k
	UNION ALL
	SELECT 'oms_saga_step_retries_total', '', pg_catalog.jsonb_build_object('kind', k.kind, 'step', k.step),
		   COALESCE((SELECT pg_catalog.sum(r.retries) FROM step_groups AS r
					 WHERE r.kind = k.kind AND r.step = k.step), 0)
	FROM step_names AS k
	UNION ALL
	SELECT 'oms_outbox_pending_events', '', '{}', o.pending FROM outbox AS o
	UNION ALL
	SELECT 'oms_outbox_oldest_pending_age_seconds', '', '{}',
		   COALESCE(GREATEST(EXTRACT(epoch FROM o.oldest_pending_age), 0), 0)
	FROM outbox AS o
	UNION ALL
	SELECT 'oms_outbox_backing_off_events', '', '{}', o.backing_off FROM outbox AS o
	UNION ALL
	SELECT 'oms_relay_published_events_total', '', '{}', COALESCE(r.published_total, 0) FROM relay AS r
	UNION ALL
	SELECT 'oms_relay_publish_failures_total', '', '{}', COALESCE(r.failed_attempts_total, 0) FROM relay AS r
	UNION ALL
	SELECT 'oms_relay_batches_total', '', '{}', COALESCE(r.batches_total, 0) FROM relay AS r
	UNION ALL
	SELECT 'oms_relay_breaker_open', '', '{}',
		   CASE WHEN COALESCE(r.breaker, 'closed') = 'closed' THEN 0 ELSE 1 END
	FROM relay AS r
	UNION ALL
	SELECT 'oms_dead_letters_open', '', pg_catalog.jsonb_build_object('kind', k.kind), COALESCE(c.open, 0)
	FROM dead_letter_kinds AS k LEFT JOIN dead_letter_counts AS c ON c.kind = k.kind
	UNION ALL
	SELECT 'oms_dead_letters_created_total', '', pg_catalog.jsonb_build_object('kind', k.kind), COALESCE(c.n, 0)
	FROM dead_letter_kinds AS k LEFT JOIN dead_letter_counts AS c ON c.kind = k.kind
	UNION ALL
	SELECT 'oms_worker_up', '', '{}', CASE WHEN COALESCE(w.alive, false) THEN 1 ELSE 0 END FROM worker AS w
	UNION ALL
	SELECT 'oms_worker_last_loop_age_seconds', '', '{}',
		   GREATEST(EXTRACT(epoch FROM pg_catalog.now() - w.last_loop), 0)
	FROM worker AS w WHERE w.last_loop IS NOT NULL
	UNION ALL
	SELECT 'oms_worker_loops_total', '', '{}', COALESCE(w.loops, 0) FROM worker AS w
	UNION ALL
	SELECT 'oms_worker_units_total', '', '{}', COALESCE(g.units, 0) FROM saga_workers AS g
	UNION ALL
	SELECT 'oms_saga_workers_up', '', '{}', g.up FROM saga_workers AS g
	UNION ALL
	SELECT 'oms_inbox_replies_total', '', pg_catalog.jsonb_build_object('result', r.result),
		   COALESCE((i.j ->> r.field)::double precision, 0)
	FROM inbox AS i,
		 (VALUES ('applied', 'applied'), ('duplicate', 'duplicates'), ('late', 'late'),
				 ('rejected', 'rejected'), ('other', 'other')) AS r(result, field)
	UNION ALL
	SELECT 'oms_inbox_reply_failures_total', '', '{}', COALESCE((i.j ->> 'failures')::double precision, 0)
	FROM inbox AS i
	UNION ALL
	SELECT 'oms_inbox_lag_messages', '', '{}', (i.j ->> 'lag')::double precision
	FROM inbox AS i WHERE i.j ->> 'lag' IS NOT NULL
) AS m
JOIN oms._metric_families() AS f ON f.family = m.family;
COMMENT ON VIEW oms.metrics IS
	'Prometheus metrics of this database, one row per sample: metric (the sample name, with _bucket, _sum or _count for a histogram), family, type, help, labels (jsonb), value';

-- (worker: end)

--
-- The outbox relay.
--

-- The claim renders the Kafka records in C (src/relay.c), the code the
-- relay runs itself; same signature and rows as before.
CREATE OR REPLACE FUNCTION oms._relay_claim(p_limit integer)
RETURNS TABLE (id uuid, topic text, key text, value text, headers text[], aggregatetype text,
			   aggregateid uuid, seq bigint)
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_relay_claim_sql'
LANGUAGE c STABLE;

-- An all-acknowledged batch is settled with one DELETE by primary key.
CREATE OR REPLACE FUNCTION oms._relay_settle(p_ids uuid[], p_errors text[], p_permanent boolean[])
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
-- (relay: end)

--
-- The payment reply inbox: one reply-application path.
--

-- oms._apply_payment_reply reads top to bottom: each of its steps is a
-- helper of its own (src/sql/inbox.sql).  Same results, rows, timeline
-- entries, dead letters and log lines as before.

CREATE FUNCTION oms._read_payment_reply(p_body text, OUT reply jsonb, OUT command oms.payment_commands,
										OUT problem text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_body jsonb;
BEGIN
	BEGIN
		v_body := p_body::jsonb;
	EXCEPTION WHEN OTHERS THEN
		problem := 'malformed reply: ' || SQLERRM;
		RETURN;
	END;
	IF pg_catalog.jsonb_typeof(v_body) IS DISTINCT FROM 'object' THEN
		problem := 'malformed reply: not a JSON object';
		RETURN;
	END IF;
	reply := v_body;
	IF reply ->> 'correlation_id' IS NULL OR reply ->> 'outcome' IS NULL
	   OR reply ->> 'outcome' NOT IN ('approved', 'declined', 'failed') THEN
		problem := 'malformed reply: correlation_id and outcome (approved, declined, failed) are required';
		RETURN;
	END IF;
	SELECT * INTO command FROM oms.payment_commands AS c WHERE c.correlation_id = reply ->> 'correlation_id';
	IF NOT FOUND THEN
		problem := pg_catalog.format('unknown correlation id "%s"',
									 pg_catalog.left(reply ->> 'correlation_id', 200));
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._read_payment_reply(text) IS
	'Parses and checks a payment reply: its body and the command it answers, or the problem that makes it a rejected reply';
REVOKE ALL ON FUNCTION oms._read_payment_reply(text) FROM PUBLIC;

CREATE FUNCTION oms._reply_had_effect(p_correlation_id text, p_outcome text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN oms._reply_for(p_correlation_id) IS NOT NULL OR
		   EXISTS (SELECT FROM oms.inbox AS i
				   WHERE i.correlation_id = p_correlation_id AND i.result = 'late' AND i.outcome = p_outcome);
END;
$$;
COMMENT ON FUNCTION oms._reply_had_effect(text, text) IS
	'True when a reply to the command already had its effect: one was applied, or the same outcome came late';
REVOKE ALL ON FUNCTION oms._reply_had_effect(text, text) FROM PUBLIC;

CREATE FUNCTION oms._adopt_saga_trace(p_correlation_id text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_saga text := pg_catalog.split_part(pg_catalog.regexp_replace(p_correlation_id, '^late:', ''), ':', 1);
	v_trace text;
BEGIN
	IF v_saga ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
		SELECT s.traceparent INTO v_trace FROM oms.sagas AS s WHERE s.id = v_saga::uuid;
	END IF;
	IF v_trace IS NULL THEN
		RETURN false;
	END IF;
	PERFORM pg_catalog.set_config('oms.traceparent', v_trace, true);
	RETURN true;
END;
$$;
COMMENT ON FUNCTION oms._adopt_saga_trace(text) IS
	'Sets oms.traceparent for the transaction to the trace of the saga that sent a command; true when it did';
REVOKE ALL ON FUNCTION oms._adopt_saga_trace(text) FROM PUBLIC;

CREATE FUNCTION oms._apply_late_refund_reply(p_message_id text, p_reply jsonb, p_command oms.payment_commands)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_correlation text := p_reply ->> 'correlation_id';
	v_outcome text := p_reply ->> 'outcome';
	v_letter bigint;
BEGIN
	UPDATE oms.inbox AS i
	SET correlation_id = v_correlation, outcome = v_outcome, body = p_reply, result = 'applied'
	WHERE i.message_id = p_message_id;
	PERFORM oms._timeline(p_command.order_id, 'payment.late_refund',
		pg_catalog.jsonb_build_object('correlation_id', v_correlation, 'outcome', v_outcome,
									  'message_id', p_message_id));
	IF v_outcome <> 'approved' THEN
		INSERT INTO oms.dead_letters (kind, order_id, step, error, payload)
		VALUES ('late_reply', p_command.order_id, 'refund',
				pg_catalog.jsonb_build_object('message', 'the refund of a late charge was not approved',
											  'outcome', v_outcome, 'at', pg_catalog.now()),
				pg_catalog.jsonb_build_object('message_id', p_message_id, 'reply', p_reply))
		RETURNING id INTO v_letter;
		PERFORM oms._log('warning', 'payment_late_refund_refused', 'order_id', p_command.order_id::text,
						 'correlation_id', v_correlation, 'outcome', v_outcome, 'message_id', p_message_id,
						 'dead_letter_id', v_letter::text);
	END IF;
	RETURN 'applied';
END;
$$;
COMMENT ON FUNCTION oms._apply_late_refund_reply(text, jsonb, oms.payment_commands) IS
	'Records the answer to the refund of a late charge; a refusal becomes a late_reply dead letter';
REVOKE ALL ON FUNCTION oms._apply_late_refund_reply(text, jsonb, oms.payment_commands) FROM PUBLIC;

CREATE FUNCTION oms._saga_waiting_for(p_correlation_id text, OUT saga_id uuid, OUT waiting boolean)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_attempt text := pg_catalog.split_part(p_correlation_id, ':', 3);
	v_saga oms.sagas;
	v_step oms.saga_steps;
BEGIN
	IF pg_catalog.split_part(p_correlation_id, ':', 1)
	   ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
		SELECT * INTO v_saga FROM oms.sagas AS s
		WHERE s.id = pg_catalog.split_part(p_correlation_id, ':', 1)::uuid FOR UPDATE;
	END IF;
	SELECT * INTO v_step FROM oms.saga_steps AS t
	WHERE t.saga_id = v_saga.id AND t.step_no::text = pg_catalog.split_part(p_correlation_id, ':', 2);
	saga_id := v_saga.id;
	waiting := v_saga.id IS NOT NULL AND v_step.step_no = v_saga.step_no AND
		CASE WHEN v_attempt LIKE 'c%'
			 THEN v_saga.status = 'compensating' AND v_step.compensation_waiting
				  AND v_step.compensation_attempts::text = pg_catalog.substr(v_attempt, 2)
			 ELSE v_saga.status = 'running' AND v_step.status = 'waiting' AND v_step.attempts::text = v_attempt
		END;
END;
$$;
COMMENT ON FUNCTION oms._saga_waiting_for(text) IS
	'Locks the saga that sent a payment command and says whether its current step waits for exactly that command';
REVOKE ALL ON FUNCTION oms._saga_waiting_for(text) FROM PUBLIC;

CREATE FUNCTION oms._apply_awaited_reply(p_message_id text, p_reply jsonb, p_command oms.payment_commands,
										 p_saga_id uuid)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE oms.sagas AS s SET next_run_at = pg_catalog.now() WHERE s.id = p_saga_id;
	PERFORM oms._timeline(p_command.order_id, 'payment.reply',
		pg_catalog.jsonb_build_object('correlation_id', p_reply ->> 'correlation_id',
									  'command', p_command.command, 'outcome', p_reply ->> 'outcome',
									  'message_id', p_message_id));
	PERFORM oms._notify_worker();
	RETURN 'applied';
END;
$$;
COMMENT ON FUNCTION oms._apply_awaited_reply(text, jsonb, oms.payment_commands, uuid) IS
	'Applies a reply its saga waits for: makes the saga due and wakes the worker; returns applied';
REVOKE ALL ON FUNCTION oms._apply_awaited_reply(text, jsonb, oms.payment_commands, uuid) FROM PUBLIC;

CREATE FUNCTION oms._apply_late_reply(p_message_id text, p_reply jsonb, p_command oms.payment_commands,
									  p_saga_id uuid)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_correlation text := p_reply ->> 'correlation_id';
	v_outcome text := p_reply ->> 'outcome';
	v_refund boolean := v_outcome = 'approved' AND p_command.command = 'charge';
	v_letter bigint;
BEGIN
	INSERT INTO oms.dead_letters (kind, saga_id, order_id, step, error, payload)
	VALUES ('late_reply', p_saga_id, p_command.order_id, p_command.command,
			pg_catalog.jsonb_build_object('message', 'reply after the saga stopped waiting for it',
										  'outcome', v_outcome, 'at', pg_catalog.now()),
			pg_catalog.jsonb_build_object('message_id', p_message_id, 'reply', p_reply))
	RETURNING id INTO v_letter;
	IF v_refund AND NOT EXISTS (SELECT FROM oms.payment_commands AS c
								WHERE c.correlation_id = 'late:' || v_correlation) THEN
		PERFORM oms._send_payment_command((SELECT p FROM oms.payments AS p WHERE p.id = p_command.payment_id),
										  'refund', p_command.amount, 'late:' || v_correlation);
	END IF;
	PERFORM oms._timeline(p_command.order_id, 'payment.late_reply',
		pg_catalog.jsonb_build_object('correlation_id', v_correlation, 'command', p_command.command,
									  'outcome', v_outcome, 'refund_sent', v_refund));
	PERFORM oms._log('warning', 'payment_reply_late', 'saga_id', p_saga_id::text,
					 'order_id', p_command.order_id::text, 'correlation_id', v_correlation,
					 'command', p_command.command, 'outcome', v_outcome, 'message_id', p_message_id,
					 'refund_sent', v_refund::text, 'dead_letter_id', v_letter::text);
	RETURN 'late';
END;
$$;
COMMENT ON FUNCTION oms._apply_late_reply(text, jsonb, oms.payment_commands, uuid) IS
	'Records a reply no saga waits for as a late_reply dead letter, and refunds a late approved charge; returns late';
REVOKE ALL ON FUNCTION oms._apply_late_reply(text, jsonb, oms.payment_commands, uuid) FROM PUBLIC;

CREATE OR REPLACE FUNCTION oms._apply_payment_reply(p_message_id text, p_body text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_id text := coalesce(p_message_id, 'md5:' || pg_catalog.md5(coalesce(p_body, '')));
	v_caller_trace text := pg_catalog.current_setting('oms.traceparent', true);
	v_read record;
	v_reply jsonb;
	v_command oms.payment_commands;
	v_correlation text;
	v_adopted boolean;
	v_saga_id uuid;
	v_waiting boolean;
	v_result text;
BEGIN
	-- A redelivered message finds its row and has no second effect.
	INSERT INTO oms.inbox (message_id) VALUES (v_id) ON CONFLICT (message_id) DO NOTHING;
	IF NOT FOUND THEN
		RETURN 'duplicate';
	END IF;

	SELECT * INTO v_read FROM oms._read_payment_reply(p_body);
	IF v_read.problem IS NOT NULL THEN
		RETURN oms._reject_reply(v_id, v_read.problem, p_body, v_read.reply ->> 'correlation_id');
	END IF;
	v_reply := v_read.reply;
	v_command := v_read.command;
	v_correlation := v_reply ->> 'correlation_id';

	-- The same answer under another message id leaves no row: a redelivery
	-- of it is judged again, to the same end, so the inbox keeps one row
	-- per reply that had an effect.
	IF oms._reply_had_effect(v_correlation, v_reply ->> 'outcome') THEN
		DELETE FROM oms.inbox AS i WHERE i.message_id = v_id;
		RETURN 'duplicate';
	END IF;

	PERFORM 1 FROM oms.orders AS o WHERE o.id = v_command.order_id FOR NO KEY UPDATE;
	v_adopted := oms._adopt_saga_trace(v_correlation);

	IF v_correlation LIKE 'late:%' THEN
		v_result := oms._apply_late_refund_reply(v_id, v_reply, v_command);
	ELSE
		SELECT w.saga_id, w.waiting INTO v_saga_id, v_waiting FROM oms._saga_waiting_for(v_correlation) AS w;
		UPDATE oms.inbox AS i
		SET correlation_id = v_correlation, outcome = v_reply ->> 'outcome', body = v_reply,
			result = CASE WHEN v_waiting THEN 'applied' ELSE 'late' END
		WHERE i.message_id = v_id;
		IF v_waiting THEN
			v_result := oms._apply_awaited_reply(v_id, v_reply, v_command, v_saga_id);
		ELSE
			v_result := oms._apply_late_reply(v_id, v_reply, v_command, v_saga_id);
		END IF;
	END IF;

	-- The caller's own trace context is given back.
	IF v_adopted THEN
		PERFORM pg_catalog.set_config('oms.traceparent', coalesce(v_caller_trace, ''), true);
	END IF;
	RETURN v_result;
END;
$$;
COMMENT ON FUNCTION oms._apply_payment_reply(text, text) IS
	'Applies a payment reply once per message id: applied, duplicate, late (dead letter, refund of a late charge) or rejected';
-- (inbox: end)

--
-- SQL conventions: every call qualified.
--

-- The functions below called built-ins by their bare names; they now name
-- them pg_catalog.x, as the rest of oms does (docs/architecture.md, "SQL
-- conventions"; test/lint.sh sql).  Same behavior: their search_path was
-- and is pinned to pg_catalog, pg_temp.


CREATE OR REPLACE FUNCTION @extschema@.oms_format_money(amount bigint, currency text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_exponent smallint := oms._currency_exponent(currency);
BEGIN
	IF amount IS NULL THEN
		RETURN NULL;
	END IF;
	RETURN pg_catalog.round(amount::numeric / (10::numeric ^ v_exponent), v_exponent)::text || ' ' || currency;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_format_money(bigint, text) IS
	'Formats an amount in minor units for people, e.g. 1999 USD as 19.99 USD and 1999 JPY as 1999 JPY';

CREATE OR REPLACE FUNCTION @extschema@.oms_set_stock(sku text, on_hand bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_row oms.stock;
BEGIN
	PERFORM oms._check_identifier('sku', oms_set_stock.sku, 100);
	PERFORM oms._check_not_null('on_hand', oms_set_stock.on_hand);
	-- Lock the SKU (or the slot it will take) before checking reservations.
	INSERT INTO oms.stock AS s (sku, on_hand) VALUES (oms_set_stock.sku, 0)
	ON CONFLICT ON CONSTRAINT stock_pkey DO NOTHING;
	PERFORM 1 FROM oms.stock AS s WHERE s.sku = oms_set_stock.sku FOR UPDATE;
	PERFORM oms._check_stock_change(oms_set_stock.sku, oms_set_stock.on_hand);
	UPDATE oms.stock AS s SET on_hand = oms_set_stock.on_hand, updated_at = pg_catalog.now()
	WHERE s.sku = oms_set_stock.sku
	RETURNING * INTO v_row;
	RETURN (SELECT pg_catalog.to_jsonb(l) FROM oms.stock_levels AS l WHERE l.sku = v_row.sku);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_set_stock(text, bigint) IS
	'Sets the units on hand of a SKU (creating it) and returns its stock level';

CREATE OR REPLACE FUNCTION @extschema@.oms_adjust_stock(sku text, delta bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_row oms.stock;
BEGIN
	PERFORM oms._check_identifier('sku', oms_adjust_stock.sku, 100);
	PERFORM oms._check_not_null('delta', oms_adjust_stock.delta);
	SELECT * INTO v_row FROM oms.stock AS s WHERE s.sku = oms_adjust_stock.sku FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'SKU "%" does not exist', oms_adjust_stock.sku
			USING ERRCODE = 'no_data_found',
				  HINT = 'Create it with oms_set_stock().';
	END IF;
	IF oms_adjust_stock.delta > 0 AND v_row.on_hand > 9223372036854775807 - oms_adjust_stock.delta THEN
		RAISE EXCEPTION 'stock of SKU "%" is out of range', oms_adjust_stock.sku
			USING ERRCODE = 'numeric_value_out_of_range';
	END IF;
	PERFORM oms._check_stock_change(oms_adjust_stock.sku, v_row.on_hand + oms_adjust_stock.delta);
	UPDATE oms.stock AS s SET on_hand = s.on_hand + oms_adjust_stock.delta, updated_at = pg_catalog.now()
	WHERE s.sku = oms_adjust_stock.sku;
	RETURN (SELECT pg_catalog.to_jsonb(l) FROM oms.stock_levels AS l WHERE l.sku = oms_adjust_stock.sku);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_adjust_stock(text, bigint) IS
	'Adds delta (negative to remove) to the units on hand of a SKU and returns its stock level';

CREATE OR REPLACE FUNCTION @extschema@.oms_pay_order(
	order_id uuid,
	payment_method text,
	idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_order oms.orders;
	v_document jsonb;
	v_hash bytea;
	v_saga uuid;
BEGIN
	PERFORM oms._check_not_null('order_id', oms_pay_order.order_id);
	PERFORM oms._check_payment_method(oms_pay_order.payment_method);
	PERFORM oms._check_idempotency_key(oms_pay_order.idempotency_key);

	IF oms_pay_order.idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(pg_catalog.jsonb_build_array(oms_pay_order.order_id, oms_pay_order.payment_method));
		v_document := oms._idempotency_begin(oms_pay_order.idempotency_key, 'oms_pay_order', v_hash);
		IF v_document IS NOT NULL THEN
			RETURN v_document;
		END IF;
	END IF;

	v_order := oms._lock_order(oms_pay_order.order_id);
	IF v_order.status <> 'pending' THEN
		RAISE EXCEPTION 'order "%" cannot be paid', v_order.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('The order is %s.', v_order.status),
				  HINT = 'Only pending orders can be paid.';
	END IF;

	INSERT INTO oms.payments (order_id, method, currency, amount)
	VALUES (v_order.id, oms_pay_order.payment_method, v_order.currency, v_order.total);
	v_document := oms._change_status(v_order.id, 'processing', 'order.processing',
		pg_catalog.jsonb_build_object('payment_method', oms_pay_order.payment_method,
									  'idempotency_key', oms_pay_order.idempotency_key));
	v_saga := oms._start_saga(v_order.id, 'fulfilment', NULL);
	PERFORM oms._notify_worker();

	IF oms_pay_order.idempotency_key IS NOT NULL THEN
		PERFORM oms._idempotency_finish(oms_pay_order.idempotency_key, 'oms_pay_order', v_hash, v_document);
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_pay_order(uuid, text, text) IS
	'Pays a pending order: it becomes processing and the fulfilment saga (reserve, pay, confirm) starts';

CREATE OR REPLACE FUNCTION @extschema@.oms_refund_order(
	order_id uuid,
	amount bigint DEFAULT NULL,
	reason text DEFAULT NULL,
	idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_order oms.orders;
	v_payment oms.payments;
	v_refundable bigint;
	v_amount bigint;
	v_refund uuid;
	v_document jsonb;
	v_hash bytea;
BEGIN
	PERFORM oms._check_not_null('order_id', oms_refund_order.order_id);
	IF oms_refund_order.amount IS NOT NULL AND oms_refund_order.amount <= 0 THEN
		RAISE EXCEPTION 'refund amount must be greater than zero'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass NULL to refund everything that is left.';
	END IF;
	IF pg_catalog.length(oms_refund_order.reason) > 1000 THEN
		RAISE EXCEPTION 'reason is too long'
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = pg_catalog.format('reason has at most 1000 characters, got %s.',
											 pg_catalog.length(oms_refund_order.reason));
	END IF;
	PERFORM oms._check_idempotency_key(oms_refund_order.idempotency_key);

	IF oms_refund_order.idempotency_key IS NOT NULL THEN
		v_hash := oms._request_hash(pg_catalog.jsonb_build_array(oms_refund_order.order_id, oms_refund_order.amount,
																 oms_refund_order.reason));
		v_document := oms._idempotency_begin(oms_refund_order.idempotency_key, 'oms_refund_order', v_hash);
		IF v_document IS NOT NULL THEN
			RETURN v_document;
		END IF;
	END IF;

	v_order := oms._lock_order(oms_refund_order.order_id);
	IF v_order.status NOT IN ('confirmed', 'partially_refunded') THEN
		RAISE EXCEPTION 'order "%" cannot be refunded', v_order.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('The order is %s.', v_order.status),
				  HINT = CASE WHEN v_order.status IN ('pending', 'processing')
							  THEN 'Cancel the order instead with oms_cancel_order().'
							  ELSE 'Only confirmed or partially refunded orders can be refunded.' END;
	END IF;

	-- Pending refunds count: two concurrent refunds serialise on the
	-- payment row and the second sees the first.
	SELECT * INTO v_payment FROM oms.payments AS p WHERE p.order_id = v_order.id FOR UPDATE;
	v_refundable := v_payment.captured - v_payment.refunded
		- (SELECT coalesce(pg_catalog.sum(r.amount), 0) FROM oms.refunds AS r
		   WHERE r.payment_id = v_payment.id AND r.status = 'pending');
	IF v_refundable = 0 THEN
		RAISE EXCEPTION 'order "%" has nothing left to refund', v_order.id
			USING ERRCODE = 'OM002',
				  DETAIL = pg_catalog.format('Captured %s, refunded %s, pending refunds %s.', v_payment.captured,
											 v_payment.refunded, v_payment.captured - v_payment.refunded);
	END IF;
	v_amount := coalesce(oms_refund_order.amount, v_refundable);
	IF v_amount > v_refundable OR v_amount <= 0 THEN
		RAISE EXCEPTION 'refund of % exceeds the refundable amount of %', v_amount, v_refundable
			USING ERRCODE = 'OM002',
				  DETAIL = pg_catalog.format('Captured %s, refunded %s, pending refunds %s.', v_payment.captured,
											 v_payment.refunded, v_payment.captured - v_payment.refunded - v_refundable),
				  HINT = 'Refund at most the refundable amount.';
	END IF;

	INSERT INTO oms.refunds (order_id, payment_id, amount, reason)
	VALUES (v_order.id, v_payment.id, v_amount, oms_refund_order.reason)
	RETURNING id INTO v_refund;
	PERFORM oms._timeline(v_order.id, 'refund.requested',
		pg_catalog.jsonb_build_object('refund_id', v_refund, 'amount', v_amount, 'reason', oms_refund_order.reason,
									  'idempotency_key', oms_refund_order.idempotency_key));
	PERFORM oms._start_saga(v_order.id, 'refund', v_refund);
	PERFORM oms._notify_worker();

	v_document := oms._order_document((SELECT o FROM oms.orders AS o WHERE o.id = v_order.id),
									  oms._order_items_json(v_order.id))
				  || pg_catalog.jsonb_build_object('refund', pg_catalog.jsonb_build_object(
						'refund_id', v_refund, 'amount', v_amount, 'status', 'pending'));
	IF oms_refund_order.idempotency_key IS NOT NULL THEN
		PERFORM oms._idempotency_finish(oms_refund_order.idempotency_key, 'oms_refund_order', v_hash, v_document);
	END IF;
	RETURN v_document;
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_refund_order(uuid, bigint, text, text) IS
	'Refunds a confirmed order in full (amount NULL) or in part; runs as a refund saga';

CREATE OR REPLACE FUNCTION @extschema@.oms_retry_dead_letter(id bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_letter oms.dead_letters;
BEGIN
	PERFORM oms._check_not_null('id', oms_retry_dead_letter.id);
	SELECT * INTO v_letter FROM oms.dead_letters AS d WHERE d.id = oms_retry_dead_letter.id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'dead letter % does not exist', oms_retry_dead_letter.id
			USING ERRCODE = 'no_data_found';
	END IF;
	IF v_letter.status <> 'open' THEN
		RAISE EXCEPTION 'dead letter % was already replayed', v_letter.id
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	IF v_letter.kind = 'publish' THEN
		-- Back into the outbox under its own id, so consumers can dedupe.
		-- With its own trace context, not the operator's.
		INSERT INTO oms.outbox (id, aggregatetype, aggregateid, type, payload, seq, created_at, traceparent)
		SELECT (v_letter.payload ->> 'id')::uuid, v_letter.payload ->> 'aggregatetype',
			   (v_letter.payload ->> 'aggregateid')::uuid, v_letter.payload ->> 'type',
			   v_letter.payload -> 'payload', (v_letter.payload ->> 'seq')::bigint,
			   (v_letter.payload ->> 'created_at')::timestamptz, v_letter.payload ->> 'traceparent';
		UPDATE oms.dead_letters AS d SET status = 'replayed', replayed_at = pg_catalog.now() WHERE d.id = v_letter.id;
		PERFORM oms._log('log', 'dead_letter_replayed', 'dead_letter_id', v_letter.id::text, 'kind', v_letter.kind,
						 'event_id', v_letter.payload ->> 'id', 'type', v_letter.payload ->> 'type');
		PERFORM oms._notify_worker();
		RETURN (SELECT pg_catalog.to_jsonb(d) FROM oms.dead_letters AS d WHERE d.id = v_letter.id);
	END IF;
	IF v_letter.kind IN ('reply', 'late_reply') THEN
		RAISE EXCEPTION 'dead letter % cannot be replayed', v_letter.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'A payment reply that could not be applied is kept as a record; the provider must send a valid one.';
	END IF;
	IF v_letter.kind = 'saga_failed' THEN
		RAISE EXCEPTION 'dead letter % cannot be replayed', v_letter.id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'A failed saga is compensated, not retried; this letter is a record of why it failed.',
				  HINT = 'Create a new order for the customer.';
	END IF;

	-- compensation_stuck: resume compensating the same step with a fresh
	-- set of oms.max_attempts attempts.
	PERFORM 1 FROM oms.orders AS o WHERE o.id = v_letter.order_id FOR NO KEY UPDATE;
	UPDATE oms.saga_steps AS t SET replays = t.replays + 1
	FROM oms.sagas AS s
	WHERE s.id = v_letter.saga_id AND t.saga_id = s.id AND t.step_no = s.step_no;
	UPDATE oms.sagas AS s SET status = 'compensating', next_run_at = pg_catalog.now(), updated_at = pg_catalog.now()
	WHERE s.id = v_letter.saga_id AND s.status = 'stuck';
	UPDATE oms.dead_letters AS d SET status = 'replayed', replayed_at = pg_catalog.now() WHERE d.id = v_letter.id;
	PERFORM oms._timeline(v_letter.order_id, 'saga.replayed',
		pg_catalog.jsonb_build_object('saga_id', v_letter.saga_id, 'dead_letter_id', v_letter.id));
	PERFORM oms._log('log', 'dead_letter_replayed', 'dead_letter_id', v_letter.id::text, 'kind', v_letter.kind,
					 'saga_id', v_letter.saga_id::text, 'order_id', v_letter.order_id::text);
	PERFORM oms._notify_worker();
	RETURN (SELECT pg_catalog.to_jsonb(d) FROM oms.dead_letters AS d WHERE d.id = v_letter.id);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_retry_dead_letter(bigint) IS
	'Replays a dead letter: a stuck compensation resumes with fresh attempts; an undelivered event goes back to the outbox';

CREATE OR REPLACE FUNCTION @extschema@.oms_payment_result(correlation_id text, outcome text, details jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_result text;
BEGIN
	PERFORM oms._check_identifier('correlation_id', oms_payment_result.correlation_id, 255);
	PERFORM oms._check_not_null('outcome', oms_payment_result.outcome);
	IF oms_payment_result.outcome NOT IN ('approved', 'declined', 'failed') THEN
		RAISE EXCEPTION 'invalid payment outcome "%"', pg_catalog.left(oms_payment_result.outcome, 100)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The outcome is approved, declined or failed.';
	END IF;
	PERFORM oms._check_json_argument('details', oms_payment_result.details, 4096);
	-- Only answers to commands oms sent: anything else would leave a row
	-- per call, and any caller could grow the tables without bound.
	IF NOT EXISTS (SELECT FROM oms.payment_commands AS c
				   WHERE c.correlation_id = oms_payment_result.correlation_id) THEN
		RAISE EXCEPTION 'payment command "%" does not exist', oms_payment_result.correlation_id
			USING ERRCODE = 'no_data_found',
				  DETAIL = 'No payment command was sent with this correlation id, or it was pruned.';
	END IF;
	-- The same result twice is one message: the inbox dedupes it.
	v_result := oms._apply_payment_reply(
		'sql:' || oms_payment_result.correlation_id || ':' || oms_payment_result.outcome,
		pg_catalog.jsonb_build_object('correlation_id', oms_payment_result.correlation_id,
									  'outcome', oms_payment_result.outcome,
									  'reference', oms_payment_result.details ->> 'reference',
									  'message', oms_payment_result.details ->> 'message')::text);
	RETURN pg_catalog.jsonb_build_object('correlation_id', oms_payment_result.correlation_id, 'result', v_result);
END;
$$;
COMMENT ON FUNCTION @extschema@.oms_payment_result(text, text, jsonb) IS
	'Applies a payment provider result from SQL (webhooks) through the same inbox as Kafka replies';

CREATE OR REPLACE FUNCTION oms._run_maintenance(p_task text)
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

CREATE OR REPLACE FUNCTION oms._maintenance_jobs(p_schedules jsonb)
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

CREATE OR REPLACE FUNCTION @extschema@.oms_schedule_maintenance(schedules jsonb DEFAULT '{}')
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

CREATE OR REPLACE FUNCTION @extschema@.oms_unschedule_maintenance()
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
-- (SQL conventions: end)

--
-- The safety net of the fresh script (src/sql/checks.sql).
--

DO $$
DECLARE
	v_bad text;
BEGIN
	SELECT pg_catalog.string_agg(p.oid::pg_catalog.regprocedure::text, ', ') INTO v_bad
	FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_proc AS p ON p.oid = d.objid
	WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.deptype = 'e'
	  AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension AS e WHERE e.extname = 'oms')
	  AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false);
	IF v_bad IS NOT NULL THEN
		RAISE EXCEPTION 'oms functions without SET search_path = pg_catalog, pg_temp: %', v_bad;
	END IF;

	SELECT pg_catalog.string_agg(p.oid::pg_catalog.regprocedure::text, ', ') INTO v_bad
	FROM pg_catalog.pg_depend AS d JOIN pg_catalog.pg_proc AS p ON p.oid = d.objid
	WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.deptype = 'e'
	  AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension AS e WHERE e.extname = 'oms')
	  AND (p.proacl IS NULL
		   OR EXISTS (SELECT FROM pg_catalog.aclexplode(p.proacl) AS a
					  WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'));
	IF v_bad IS NOT NULL THEN
		RAISE EXCEPTION 'oms functions executable by PUBLIC: %', v_bad;
	END IF;
END;
$$;
