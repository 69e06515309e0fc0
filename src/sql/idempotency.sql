-- idempotency.sql: idempotency keys for the oms_* API.
--
-- A key names one request.  The first call with a key claims it by
-- inserting its row; the unique index makes a concurrent call with the
-- same key wait until the first commits (then it replays the stored
-- response) or rolls back (then it proceeds as a first call).  A failed
-- call rolls back its claim, so errors are never stored.

CREATE FUNCTION oms._check_idempotency_key(p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF p_key IS NULL THEN
		RETURN;
	END IF;
	IF length(p_key) = 0 THEN
		RAISE EXCEPTION 'idempotency key must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass NULL for a call without an idempotency key.';
	END IF;
	IF length(p_key) > 255 THEN
		RAISE EXCEPTION 'idempotency key is too long'
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = format('An idempotency key has at most 255 characters, got %s.', length(p_key));
	END IF;
END;
$$;
COMMENT ON FUNCTION oms._check_idempotency_key(text) IS 'Validates an idempotency key';

-- Returns the stored response when the key was already used for the same
-- request, or NULL when this call now owns the key and must do the work.
CREATE FUNCTION oms._idempotency_begin(p_key text, p_function text, p_request jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_hash bytea := sha256(convert_to(p_request::text, 'UTF8'));
	v_row oms.idempotency_keys;
BEGIN
	IF p_key IS NULL THEN
		RETURN NULL;
	END IF;
	LOOP
		INSERT INTO oms.idempotency_keys (key, function_name, request_hash, expires_at)
		VALUES (p_key, p_function, v_hash,
				now() + current_setting('oms.idempotency_ttl')::interval)
		ON CONFLICT (key) DO NOTHING;
		IF FOUND THEN
			RETURN NULL;
		END IF;

		SELECT * INTO v_row FROM oms.idempotency_keys AS k WHERE k.key = p_key;
		IF NOT FOUND THEN
			CONTINUE;			-- purged in between: claim it again
		END IF;
		IF v_row.expires_at <= now() THEN
			-- Expired but not yet purged: the key is free again.
			DELETE FROM oms.idempotency_keys AS k
			WHERE k.key = p_key AND k.expires_at <= now();
			CONTINUE;
		END IF;
		EXIT;
	END LOOP;

	IF v_row.function_name <> p_function OR v_row.request_hash <> v_hash THEN
		RAISE EXCEPTION 'idempotency key "%" was already used for a different request', p_key
			USING ERRCODE = 'OM001',
				  DETAIL = CASE WHEN v_row.function_name <> p_function
								THEN format('The key was first used by %s.', v_row.function_name)
								ELSE format('The key was first used by %s with other arguments.', p_function) END,
				  HINT = 'Use a new idempotency key for a new request.';
	END IF;
	RETURN v_row.response;
END;
$$;
COMMENT ON FUNCTION oms._idempotency_begin(text, text, jsonb) IS
	'Claims an idempotency key, or returns the stored response of the earlier identical call';

CREATE FUNCTION oms._idempotency_finish(p_key text, p_response jsonb)
RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	UPDATE oms.idempotency_keys AS k SET response = p_response WHERE k.key = p_key;
	SELECT p_response;
$$;
COMMENT ON FUNCTION oms._idempotency_finish(text, jsonb) IS
	'Stores the response of the call that owns an idempotency key';

CREATE FUNCTION @extschema@.oms_purge_idempotency_keys()
RETURNS bigint
LANGUAGE sql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	WITH purged AS (
		DELETE FROM oms.idempotency_keys AS k WHERE k.expires_at <= now() RETURNING 1
	)
	SELECT count(*) FROM purged;
$$;
COMMENT ON FUNCTION @extschema@.oms_purge_idempotency_keys() IS
	'Deletes idempotency keys older than oms.idempotency_ttl and returns how many were deleted';
