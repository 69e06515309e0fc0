-- api.sql: the oms functions that run on one shard.  Each is two
-- functions: oms._r_<name> in PL/Proxy (which shard: the RUN ON line) and
-- the public oms_<name>, with oms's name, arguments, defaults and result,
-- that calls it and gives back the shard's error in the shard's words
-- (oms._reraise).  The public functions are SECURITY INVOKER: PL/Proxy
-- connects to the shard as the calling role, and the shard's own grants
-- decide (docs/cluster.md, "Roles").
--
-- requires: routing

-- oms_create_order(text, jsonb, text, text, jsonb)
CREATE FUNCTION oms._r_create_order_jsonb(customer_id text, items jsonb, currency text, idempotency_key text, metadata jsonb)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._create_partition(idempotency_key);
	TARGET oms_create_order;
$$;
REVOKE ALL ON FUNCTION oms._r_create_order_jsonb(text, jsonb, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_create_order_jsonb(text, jsonb, text, text, jsonb) TO oms_app;
COMMENT ON FUNCTION oms._r_create_order_jsonb(text, jsonb, text, text, jsonb) IS
	'PL/Proxy call of oms_create_order on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_create_order(customer_id text, items jsonb, currency text DEFAULT 'USD', idempotency_key text DEFAULT NULL, metadata jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_create_order_jsonb(customer_id, items, currency, idempotency_key, metadata);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_create_order(text, jsonb, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_create_order(text, jsonb, text, text, jsonb) TO oms_app;
COMMENT ON FUNCTION @extschema@.oms_create_order(text, jsonb, text, text, jsonb) IS
	'Creates an order on the shard owning the idempotency key''s partition (any shard without a key)';

-- oms_create_order(text, text, text, text, jsonb)
CREATE FUNCTION oms._r_create_order_text(customer_id text, items text, currency text, idempotency_key text, metadata jsonb)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._create_partition(idempotency_key);
	TARGET oms_create_order;
$$;
REVOKE ALL ON FUNCTION oms._r_create_order_text(text, text, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_create_order_text(text, text, text, text, jsonb) TO oms_app;
COMMENT ON FUNCTION oms._r_create_order_text(text, text, text, text, jsonb) IS
	'PL/Proxy call of oms_create_order on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_create_order(customer_id text, items text, currency text DEFAULT 'USD', idempotency_key text DEFAULT NULL, metadata jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_create_order_text(customer_id, items, currency, idempotency_key, metadata);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_create_order(text, text, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_create_order(text, text, text, text, jsonb) TO oms_app;
COMMENT ON FUNCTION @extschema@.oms_create_order(text, text, text, text, jsonb) IS
	'Creates an order from items given as text on the shard owning the idempotency key''s partition';

-- oms_get_order(uuid)
CREATE FUNCTION oms._r_get_order(order_id uuid)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._id_partition(order_id);
	TARGET oms_get_order;
$$;
REVOKE ALL ON FUNCTION oms._r_get_order(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_get_order(uuid) TO oms_app, oms_reader;
COMMENT ON FUNCTION oms._r_get_order(uuid) IS
	'PL/Proxy call of oms_get_order on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_get_order(order_id uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_get_order(order_id);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_get_order(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_get_order(uuid) TO oms_app, oms_reader;
COMMENT ON FUNCTION @extschema@.oms_get_order(uuid) IS
	'The order document, read on the shard owning the order';

-- oms_cancel_order(uuid, text, text)
CREATE FUNCTION oms._r_cancel_order(order_id uuid, reason text, idempotency_key text)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._id_partition(order_id);
	TARGET oms_cancel_order;
$$;
REVOKE ALL ON FUNCTION oms._r_cancel_order(uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_cancel_order(uuid, text, text) TO oms_app;
COMMENT ON FUNCTION oms._r_cancel_order(uuid, text, text) IS
	'PL/Proxy call of oms_cancel_order on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_cancel_order(order_id uuid, reason text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_cancel_order(order_id, reason, idempotency_key);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_cancel_order(uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_cancel_order(uuid, text, text) TO oms_app;
COMMENT ON FUNCTION @extschema@.oms_cancel_order(uuid, text, text) IS
	'Cancels an order on the shard owning it';

-- oms_pay_order(uuid, text, text)
CREATE FUNCTION oms._r_pay_order(order_id uuid, payment_method text, idempotency_key text)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._id_partition(order_id);
	TARGET oms_pay_order;
$$;
REVOKE ALL ON FUNCTION oms._r_pay_order(uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_pay_order(uuid, text, text) TO oms_app;
COMMENT ON FUNCTION oms._r_pay_order(uuid, text, text) IS
	'PL/Proxy call of oms_pay_order on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_pay_order(order_id uuid, payment_method text, idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_pay_order(order_id, payment_method, idempotency_key);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_pay_order(uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_pay_order(uuid, text, text) TO oms_app;
COMMENT ON FUNCTION @extschema@.oms_pay_order(uuid, text, text) IS
	'Starts paying an order on the shard owning it';

-- oms_refund_order(uuid, bigint, text, text)
CREATE FUNCTION oms._r_refund_order(order_id uuid, amount bigint, reason text, idempotency_key text)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._id_partition(order_id);
	TARGET oms_refund_order;
$$;
REVOKE ALL ON FUNCTION oms._r_refund_order(uuid, bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_refund_order(uuid, bigint, text, text) TO oms_app;
COMMENT ON FUNCTION oms._r_refund_order(uuid, bigint, text, text) IS
	'PL/Proxy call of oms_refund_order on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_refund_order(order_id uuid, amount bigint DEFAULT NULL, reason text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_refund_order(order_id, amount, reason, idempotency_key);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_refund_order(uuid, bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_refund_order(uuid, bigint, text, text) TO oms_app;
COMMENT ON FUNCTION @extschema@.oms_refund_order(uuid, bigint, text, text) IS
	'Refunds an order on the shard owning it';

-- oms_cancel_items(uuid, jsonb, text, text)
CREATE FUNCTION oms._r_cancel_items(order_id uuid, items jsonb, reason text, idempotency_key text)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._id_partition(order_id);
	TARGET oms_cancel_items;
$$;
REVOKE ALL ON FUNCTION oms._r_cancel_items(uuid, jsonb, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_cancel_items(uuid, jsonb, text, text) TO oms_app;
COMMENT ON FUNCTION oms._r_cancel_items(uuid, jsonb, text, text) IS
	'PL/Proxy call of oms_cancel_items on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_cancel_items(order_id uuid, items jsonb DEFAULT NULL, reason text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_cancel_items(order_id, items, reason, idempotency_key);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_cancel_items(uuid, jsonb, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_cancel_items(uuid, jsonb, text, text) TO oms_app;
COMMENT ON FUNCTION @extschema@.oms_cancel_items(uuid, jsonb, text, text) IS
	'Cancels lines of an order on the shard owning it';

-- oms_create_shipment(uuid, jsonb, text, text, text, text)
CREATE FUNCTION oms._r_create_shipment(order_id uuid, items jsonb, location text, carrier text, tracking_number text, idempotency_key text)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._id_partition(order_id);
	TARGET oms_create_shipment;
$$;
REVOKE ALL ON FUNCTION oms._r_create_shipment(uuid, jsonb, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_create_shipment(uuid, jsonb, text, text, text, text) TO oms_app;
COMMENT ON FUNCTION oms._r_create_shipment(uuid, jsonb, text, text, text, text) IS
	'PL/Proxy call of oms_create_shipment on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_create_shipment(order_id uuid, items jsonb DEFAULT NULL, location text DEFAULT NULL, carrier text DEFAULT NULL, tracking_number text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_create_shipment(order_id, items, location, carrier, tracking_number, idempotency_key);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_create_shipment(uuid, jsonb, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_create_shipment(uuid, jsonb, text, text, text, text) TO oms_app;
COMMENT ON FUNCTION @extschema@.oms_create_shipment(uuid, jsonb, text, text, text, text) IS
	'Creates a shipment of an order on the shard owning the order';

-- oms_request_return(uuid, text, jsonb, text)
CREATE FUNCTION oms._r_request_return(order_id uuid, reason text, items jsonb, idempotency_key text)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._id_partition(order_id);
	TARGET oms_request_return;
$$;
REVOKE ALL ON FUNCTION oms._r_request_return(uuid, text, jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_request_return(uuid, text, jsonb, text) TO oms_app;
COMMENT ON FUNCTION oms._r_request_return(uuid, text, jsonb, text) IS
	'PL/Proxy call of oms_request_return on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_request_return(order_id uuid, reason text, items jsonb DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_request_return(order_id, reason, items, idempotency_key);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_request_return(uuid, text, jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_request_return(uuid, text, jsonb, text) TO oms_app;
COMMENT ON FUNCTION @extschema@.oms_request_return(uuid, text, jsonb, text) IS
	'Requests a return of an order on the shard owning the order';

-- oms_ship(uuid, text, text, text)
CREATE FUNCTION oms._r_ship(shipment_id uuid, carrier text, tracking_number text, idempotency_key text)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._id_partition(shipment_id);
	TARGET oms_ship;
$$;
REVOKE ALL ON FUNCTION oms._r_ship(uuid, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_ship(uuid, text, text, text) TO oms_app;
COMMENT ON FUNCTION oms._r_ship(uuid, text, text, text) IS
	'PL/Proxy call of oms_ship on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_ship(shipment_id uuid, carrier text DEFAULT NULL, tracking_number text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_ship(shipment_id, carrier, tracking_number, idempotency_key);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_ship(uuid, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_ship(uuid, text, text, text) TO oms_app;
COMMENT ON FUNCTION @extschema@.oms_ship(uuid, text, text, text) IS
	'Ships a shipment on the shard owning it (a shipment id carries its order''s partition)';

-- oms_mark_delivered(uuid, text)
CREATE FUNCTION oms._r_mark_delivered(shipment_id uuid, idempotency_key text)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._id_partition(shipment_id);
	TARGET oms_mark_delivered;
$$;
REVOKE ALL ON FUNCTION oms._r_mark_delivered(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_mark_delivered(uuid, text) TO oms_app;
COMMENT ON FUNCTION oms._r_mark_delivered(uuid, text) IS
	'PL/Proxy call of oms_mark_delivered on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_mark_delivered(shipment_id uuid, idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_mark_delivered(shipment_id, idempotency_key);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_mark_delivered(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_mark_delivered(uuid, text) TO oms_app;
COMMENT ON FUNCTION @extschema@.oms_mark_delivered(uuid, text) IS
	'Marks a shipment delivered on the shard owning it';

-- oms_cancel_shipment(uuid, text, text)
CREATE FUNCTION oms._r_cancel_shipment(shipment_id uuid, reason text, idempotency_key text)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._id_partition(shipment_id);
	TARGET oms_cancel_shipment;
$$;
REVOKE ALL ON FUNCTION oms._r_cancel_shipment(uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_cancel_shipment(uuid, text, text) TO oms_app;
COMMENT ON FUNCTION oms._r_cancel_shipment(uuid, text, text) IS
	'PL/Proxy call of oms_cancel_shipment on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_cancel_shipment(shipment_id uuid, reason text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_cancel_shipment(shipment_id, reason, idempotency_key);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_cancel_shipment(uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_cancel_shipment(uuid, text, text) TO oms_app;
COMMENT ON FUNCTION @extschema@.oms_cancel_shipment(uuid, text, text) IS
	'Cancels a shipment on the shard owning it';

-- oms_receive_return(uuid, text, text)
CREATE FUNCTION oms._r_receive_return(return_id uuid, restock_location text, idempotency_key text)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._id_partition(return_id);
	TARGET oms_receive_return;
$$;
REVOKE ALL ON FUNCTION oms._r_receive_return(uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_receive_return(uuid, text, text) TO oms_app;
COMMENT ON FUNCTION oms._r_receive_return(uuid, text, text) IS
	'PL/Proxy call of oms_receive_return on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_receive_return(return_id uuid, restock_location text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_receive_return(return_id, restock_location, idempotency_key);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_receive_return(uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_receive_return(uuid, text, text) TO oms_app;
COMMENT ON FUNCTION @extschema@.oms_receive_return(uuid, text, text) IS
	'Receives a return on the shard owning it (a return id carries its order''s partition)';

-- oms_reject_return(uuid, text, text)
CREATE FUNCTION oms._r_reject_return(return_id uuid, reason text, idempotency_key text)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._id_partition(return_id);
	TARGET oms_reject_return;
$$;
REVOKE ALL ON FUNCTION oms._r_reject_return(uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_reject_return(uuid, text, text) TO oms_app;
COMMENT ON FUNCTION oms._r_reject_return(uuid, text, text) IS
	'PL/Proxy call of oms_reject_return on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_reject_return(return_id uuid, reason text DEFAULT NULL, idempotency_key text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_reject_return(return_id, reason, idempotency_key);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_reject_return(uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_reject_return(uuid, text, text) TO oms_app;
COMMENT ON FUNCTION @extschema@.oms_reject_return(uuid, text, text) IS
	'Rejects a return on the shard owning it';

-- oms_payment_result(text, text, jsonb)
CREATE FUNCTION oms._r_payment_result(correlation_id text, outcome text, details jsonb)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._correlation_partition(correlation_id);
	TARGET oms_payment_result;
$$;
REVOKE ALL ON FUNCTION oms._r_payment_result(text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_payment_result(text, text, jsonb) TO oms_app;
COMMENT ON FUNCTION oms._r_payment_result(text, text, jsonb) IS
	'PL/Proxy call of oms_payment_result on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_payment_result(correlation_id text, outcome text, details jsonb DEFAULT '{}')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_payment_result(correlation_id, outcome, details);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_payment_result(text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_payment_result(text, text, jsonb) TO oms_app;
COMMENT ON FUNCTION @extschema@.oms_payment_result(text, text, jsonb) IS
	'Applies a payment provider''s reply on the shard owning the saga named by the correlation id';

-- oms_set_stock(text, bigint)
CREATE FUNCTION oms._r_set_stock_2(sku text, on_hand bigint)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._text_partition(sku);
	TARGET oms_set_stock;
$$;
REVOKE ALL ON FUNCTION oms._r_set_stock_2(text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_set_stock_2(text, bigint) TO oms_admin;
COMMENT ON FUNCTION oms._r_set_stock_2(text, bigint) IS
	'PL/Proxy call of oms_set_stock on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_set_stock(sku text, on_hand bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_set_stock_2(sku, on_hand);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_set_stock(text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_set_stock(text, bigint) TO oms_admin;
COMMENT ON FUNCTION @extschema@.oms_set_stock(text, bigint) IS
	'Sets a SKU''s stock at the default location on the SKU''s home shard';

-- oms_set_stock(text, bigint, text)
CREATE FUNCTION oms._r_set_stock_3(sku text, on_hand bigint, location text)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._text_partition(sku);
	TARGET oms_set_stock;
$$;
REVOKE ALL ON FUNCTION oms._r_set_stock_3(text, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_set_stock_3(text, bigint, text) TO oms_admin;
COMMENT ON FUNCTION oms._r_set_stock_3(text, bigint, text) IS
	'PL/Proxy call of oms_set_stock on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_set_stock(sku text, on_hand bigint, location text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_set_stock_3(sku, on_hand, location);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_set_stock(text, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_set_stock(text, bigint, text) TO oms_admin;
COMMENT ON FUNCTION @extschema@.oms_set_stock(text, bigint, text) IS
	'Sets a SKU''s stock at a location on the SKU''s home shard';

-- oms_adjust_stock(text, bigint)
CREATE FUNCTION oms._r_adjust_stock_2(sku text, delta bigint)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._text_partition(sku);
	TARGET oms_adjust_stock;
$$;
REVOKE ALL ON FUNCTION oms._r_adjust_stock_2(text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_adjust_stock_2(text, bigint) TO oms_admin;
COMMENT ON FUNCTION oms._r_adjust_stock_2(text, bigint) IS
	'PL/Proxy call of oms_adjust_stock on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_adjust_stock(sku text, delta bigint)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_adjust_stock_2(sku, delta);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_adjust_stock(text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_adjust_stock(text, bigint) TO oms_admin;
COMMENT ON FUNCTION @extschema@.oms_adjust_stock(text, bigint) IS
	'Adjusts a SKU''s stock at the default location on the SKU''s home shard';

-- oms_adjust_stock(text, bigint, text)
CREATE FUNCTION oms._r_adjust_stock_3(sku text, delta bigint, location text)
RETURNS jsonb
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._text_partition(sku);
	TARGET oms_adjust_stock;
$$;
REVOKE ALL ON FUNCTION oms._r_adjust_stock_3(text, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_adjust_stock_3(text, bigint, text) TO oms_admin;
COMMENT ON FUNCTION oms._r_adjust_stock_3(text, bigint, text) IS
	'PL/Proxy call of oms_adjust_stock on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_adjust_stock(sku text, delta bigint, location text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_adjust_stock_3(sku, delta, location);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_adjust_stock(text, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_adjust_stock(text, bigint, text) TO oms_admin;
COMMENT ON FUNCTION @extschema@.oms_adjust_stock(text, bigint, text) IS
	'Adjusts a SKU''s stock at a location on the SKU''s home shard';

-- oms_format_money(bigint, text)
CREATE FUNCTION oms._r_format_money(amount bigint, currency text)
RETURNS text
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ANY;
	TARGET oms_format_money;
$$;
REVOKE ALL ON FUNCTION oms._r_format_money(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_format_money(bigint, text) TO oms_app, oms_reader;
COMMENT ON FUNCTION oms._r_format_money(bigint, text) IS
	'PL/Proxy call of oms_format_money on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_format_money(amount bigint, currency text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_format_money(amount, currency);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_format_money(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_format_money(bigint, text) TO oms_app, oms_reader;
COMMENT ON FUNCTION @extschema@.oms_format_money(bigint, text) IS
	'Formats an amount in minor units (any shard: a pure function)';

-- oms_transition_allowed(oms.order_status, oms.order_status)
CREATE FUNCTION oms._r_transition_allowed_enum(from_status oms.order_status, to_status oms.order_status)
RETURNS boolean
LANGUAGE plproxy VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ANY;
	TARGET oms_transition_allowed;
$$;
REVOKE ALL ON FUNCTION oms._r_transition_allowed_enum(oms.order_status, oms.order_status) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_transition_allowed_enum(oms.order_status, oms.order_status) TO oms_app, oms_reader;
COMMENT ON FUNCTION oms._r_transition_allowed_enum(oms.order_status, oms.order_status) IS
	'PL/Proxy call of oms_transition_allowed on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_transition_allowed(from_status oms.order_status, to_status oms.order_status)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_transition_allowed_enum(from_status, to_status);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_transition_allowed(oms.order_status, oms.order_status) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_transition_allowed(oms.order_status, oms.order_status) TO oms_app, oms_reader;
COMMENT ON FUNCTION @extschema@.oms_transition_allowed(oms.order_status, oms.order_status) IS
	'Whether the order state machine allows a move (any shard: a pure function)';

-- oms_transition_allowed(text, text, text)
CREATE FUNCTION oms._r_transition_allowed_machine(machine text, from_status text, to_status text)
RETURNS boolean
LANGUAGE plproxy VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ANY;
	TARGET oms_transition_allowed;
$$;
REVOKE ALL ON FUNCTION oms._r_transition_allowed_machine(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_transition_allowed_machine(text, text, text) TO oms_app, oms_reader;
COMMENT ON FUNCTION oms._r_transition_allowed_machine(text, text, text) IS
	'PL/Proxy call of oms_transition_allowed on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_transition_allowed(machine text, from_status text, to_status text)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_transition_allowed_machine(machine, from_status, to_status);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_transition_allowed(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_transition_allowed(text, text, text) TO oms_app, oms_reader;
COMMENT ON FUNCTION @extschema@.oms_transition_allowed(text, text, text) IS
	'Whether a state machine allows a move (any shard: a pure function)';

-- oms_state_machine_dot()
CREATE FUNCTION oms._r_state_machine_dot_0()
RETURNS text
LANGUAGE plproxy VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ANY;
	TARGET oms_state_machine_dot;
$$;
REVOKE ALL ON FUNCTION oms._r_state_machine_dot_0() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_state_machine_dot_0() TO oms_app, oms_reader;
COMMENT ON FUNCTION oms._r_state_machine_dot_0() IS
	'PL/Proxy call of oms_state_machine_dot on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_state_machine_dot()
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_state_machine_dot_0();
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_state_machine_dot() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_state_machine_dot() TO oms_app, oms_reader;
COMMENT ON FUNCTION @extschema@.oms_state_machine_dot() IS
	'The order state machine in Graphviz dot (any shard: a pure function)';

-- oms_state_machine_dot(text)
CREATE FUNCTION oms._r_state_machine_dot_1(machine text)
RETURNS text
LANGUAGE plproxy VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON ANY;
	TARGET oms_state_machine_dot;
$$;
REVOKE ALL ON FUNCTION oms._r_state_machine_dot_1(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_state_machine_dot_1(text) TO oms_app, oms_reader;
COMMENT ON FUNCTION oms._r_state_machine_dot_1(text) IS
	'PL/Proxy call of oms_state_machine_dot on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_state_machine_dot(machine text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN oms._r_state_machine_dot_1(machine);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
	RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_state_machine_dot(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_state_machine_dot(text) TO oms_app, oms_reader;
COMMENT ON FUNCTION @extschema@.oms_state_machine_dot(text) IS
	'A state machine in Graphviz dot (any shard: a pure function)';

-- oms_order_timeline(uuid): a set, so RETURN QUERY.
CREATE FUNCTION oms._r_order_timeline(order_id uuid)
RETURNS TABLE (seq integer, occurred_at timestamp with time zone, event_type text, from_status oms.order_status,
			   to_status oms.order_status, data jsonb, traceparent text)
LANGUAGE plproxy VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	CLUSTER 'oms_cluster';
	RUN ON oms._id_partition(order_id);
	TARGET oms_order_timeline;
$$;
REVOKE ALL ON FUNCTION oms._r_order_timeline(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oms._r_order_timeline(uuid) TO oms_app, oms_reader;
COMMENT ON FUNCTION oms._r_order_timeline(uuid) IS
	'PL/Proxy call of oms_order_timeline on its shard (the public function wraps it)';

CREATE FUNCTION @extschema@.oms_order_timeline(order_id uuid)
RETURNS TABLE (seq integer, occurred_at timestamp with time zone, event_type text, from_status oms.order_status,
			   to_status oms.order_status, data jsonb, traceparent text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v_state text;
	v_message text;
	v_detail text;
	v_hint text;
BEGIN
	RETURN QUERY SELECT * FROM oms._r_order_timeline(order_id);
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
		v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
	PERFORM oms._reraise(v_state, v_message, v_detail, v_hint);
END;
$$;
REVOKE ALL ON FUNCTION @extschema@.oms_order_timeline(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.oms_order_timeline(uuid) TO oms_app, oms_reader;
COMMENT ON FUNCTION @extschema@.oms_order_timeline(uuid) IS
	'An order''s timeline, oldest first, read on the shard owning the order';
