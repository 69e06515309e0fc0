-- idempotency.sql: idempotency keys for the oms_* API.
--
-- A key names one request.  A call with a key first takes a transaction
-- advisory lock on the key, so a concurrent call with the same key waits
-- until the first commits (then it finds the stored response and replays
-- it) or rolls back (then it proceeds as a first call).  The key row is
-- written together with the response at the end of the call, so a failed
-- call stores nothing and the key stays free for a corrected retry.
--
-- Internal helpers in this file run only inside the SECURITY DEFINER API
-- functions, whose pinned search_path they inherit; they carry no SET
-- clause of their own, which keeps the hot path cheap.  None is executable
-- by PUBLIC.  Helpers that run statements are PL/pgSQL, which caches their
-- plans per session; a SQL-language function would plan them on every call.

CREATE FUNCTION oms._check_idempotency_key(p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF p_key IS NULL THEN
		RETURN;
	END IF;
	IF pg_catalog.length(p_key) = 0 THEN
		RAISE EXCEPTION 'idempotency key must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass NULL for a call without an idempotency key.';
	END IF;
	PERFORM oms._check_identifier('idempotency_key', p_key, 255);
END;
$$;
COMMENT ON FUNCTION oms._check_idempotency_key(text) IS 'Validates an idempotency key';

CREATE FUNCTION oms._request_hash(p_request jsonb)
RETURNS bytea
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN pg_catalog.sha256(pg_catalog.convert_to(p_request::text, 'UTF8'));
END;
$$;
COMMENT ON FUNCTION oms._request_hash(jsonb) IS
	'Hash identifying a request: its arguments as canonical jsonb text';

-- Returns the stored response when the key was already used for the same
-- request, or NULL when this call must do the work.  Raises OM001 when
-- the key was used for another request.
CREATE FUNCTION oms._idempotency_begin(p_key text, p_function text, p_hash bytea)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_row oms.idempotency_keys;
BEGIN
	IF p_key IS NULL THEN
		RETURN NULL;
	END IF;
	-- Two-key form with a fixed first key, to stay out of the way of the
	-- application's own single-key advisory locks.
	PERFORM pg_catalog.pg_advisory_xact_lock(7302515, pg_catalog.hashtext(p_key));

	SELECT * INTO v_row FROM oms.idempotency_keys AS k WHERE k.key = p_key;
	IF NOT FOUND OR v_row.expires_at <= pg_catalog.now() THEN
		RETURN NULL;
	END IF;
	IF v_row.function_name <> p_function OR v_row.request_hash <> p_hash THEN
		RAISE EXCEPTION 'idempotency key "%" was already used for a different request', p_key
			USING ERRCODE = 'OM001',
				  DETAIL = CASE WHEN v_row.function_name <> p_function
								THEN pg_catalog.format('The key was first used by %s.', v_row.function_name)
								ELSE pg_catalog.format('The key was first used by %s with other arguments.', p_function) END,
				  HINT = 'Use a new idempotency key for a new request.';
	END IF;
	RETURN v_row.response;
END;
$$;
COMMENT ON FUNCTION oms._idempotency_begin(text, text, bytea) IS
	'Locks an idempotency key and returns the stored response of an earlier identical call, if any';

-- Stores the response under the key.  An expired row for the key is
-- replaced.  Under REPEATABLE READ or SERIALIZABLE a winner this
-- transaction cannot see makes the insert fail with 40001, so two calls
-- never both take effect.
CREATE FUNCTION oms._idempotency_finish(p_key text, p_function text, p_hash bytea, p_response jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO oms.idempotency_keys AS k (key, function_name, request_hash, response, created_at, expires_at)
	VALUES (p_key, p_function, p_hash, p_response, pg_catalog.now(),
			pg_catalog.now() + pg_catalog.current_setting('oms.idempotency_ttl')::interval)
	ON CONFLICT (key) DO UPDATE
		SET function_name = excluded.function_name, request_hash = excluded.request_hash,
			response = excluded.response, created_at = excluded.created_at, expires_at = excluded.expires_at
		WHERE k.expires_at <= pg_catalog.now();
END;
$$;
COMMENT ON FUNCTION oms._idempotency_finish(text, text, bytea, jsonb) IS
	'Stores the response of a call under its idempotency key';

CREATE FUNCTION oms._purge_idempotency_keys()
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	WITH purged AS (
		DELETE FROM oms.idempotency_keys AS k WHERE k.expires_at <= pg_catalog.now() RETURNING 1
	)
	SELECT pg_catalog.count(*) FROM purged;
$$;
COMMENT ON FUNCTION oms._purge_idempotency_keys() IS
	'Deletes expired idempotency keys and returns how many were deleted';

CREATE FUNCTION @extschema@.oms_purge_idempotency_keys()
RETURNS bigint
LANGUAGE sql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT oms._purge_idempotency_keys();
$$;
COMMENT ON FUNCTION @extschema@.oms_purge_idempotency_keys() IS
	'Deletes idempotency keys older than oms.idempotency_ttl and returns how many were deleted';
