-- idempotency.sql: idempotency keys for the oms_* API.
--
-- A key names one request.  A call with a key first claims it by inserting
-- its row, without a response yet; the work follows, then the response is
-- stored in the same row.  A concurrent call with the same key finds the
-- row's insert in progress and waits for that transaction, on the row (a
-- transaction lock, not a lock-table entry per key, so one transaction may
-- use any number of keys): after a commit it replays the stored response,
-- after a rollback its own insert goes through and it proceeds as a first
-- call.  A call that fails takes its claim with it, so the key stays free
-- for a corrected retry.
--
-- Helpers that run statements are PL/pgSQL, which caches their plans per
-- session.  None is executable by PUBLIC.
--
-- requires: schema

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

-- Claims a key for this call and returns NULL, or returns the stored
-- response when the key was already used for the same request.  Raises
-- OM001 when the key was used for another request.
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
	-- An expired key is free again: its row is taken over.  Under
	-- REPEATABLE READ or SERIALIZABLE a claim this transaction cannot see
	-- makes this fail with 40001, so two calls never both take effect.
	INSERT INTO oms.idempotency_keys AS k (key, function_name, request_hash, response, created_at, expires_at)
	VALUES (p_key, p_function, p_hash, NULL, pg_catalog.now(),
			pg_catalog.now() + pg_catalog.current_setting('oms.idempotency_ttl')::interval)
	ON CONFLICT (key) DO UPDATE
		SET function_name = excluded.function_name, request_hash = excluded.request_hash,
			response = NULL, created_at = excluded.created_at, expires_at = excluded.expires_at
		WHERE k.expires_at <= pg_catalog.now();
	IF FOUND THEN
		RETURN NULL;
	END IF;

	SELECT * INTO v_row FROM oms.idempotency_keys AS k WHERE k.key = p_key;
	IF v_row.function_name <> p_function OR v_row.request_hash <> p_hash THEN
		RAISE EXCEPTION 'idempotency key "%" was already used for a different request', p_key
			USING ERRCODE = 'OM001',
				  DETAIL = CASE WHEN v_row.function_name <> p_function
								THEN pg_catalog.format('The key was first used by %s.', v_row.function_name)
								ELSE pg_catalog.format('The key was first used by %s with other arguments.', p_function) END,
				  HINT = 'Use a new idempotency key for a new request.';
	END IF;
	IF v_row.response IS NULL THEN
		-- Only this very call could hold an unanswered claim of its own.
		RAISE EXCEPTION 'idempotency key "%" is in use by this transaction', p_key
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	RETURN v_row.response;
END;
$$;
COMMENT ON FUNCTION oms._idempotency_begin(text, text, bytea) IS
	'Claims an idempotency key (waiting for a concurrent claim to end) or returns the stored response of an earlier identical call';

-- Stores the response of the call that claimed the key.
CREATE FUNCTION oms._idempotency_finish(p_key text, p_function text, p_hash bytea, p_response jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE oms.idempotency_keys AS k SET response = p_response
	WHERE k.key = p_key AND k.function_name = p_function AND k.request_hash = p_hash;
END;
$$;
COMMENT ON FUNCTION oms._idempotency_finish(text, text, bytea, jsonb) IS
	'Stores the response of a call under the idempotency key it claimed';

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

-- Privileges of the objects above: nothing for PUBLIC, each role what it
-- needs (the roles come from roles.sql, checks.sql verifies).
REVOKE ALL ON FUNCTION @extschema@.oms_purge_idempotency_keys() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._check_idempotency_key(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._idempotency_begin(text, text, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._idempotency_finish(text, text, bytea, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._purge_idempotency_keys() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._request_hash(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_purge_idempotency_keys() TO oms_admin;
