-- privileges.sql: roles and grants.
--
-- Nothing is granted to PUBLIC.  Three NOLOGIN roles carry the privileges;
-- grant them to login roles:
--   oms_app     calls the order API (SECURITY DEFINER functions), no table access
--   oms_reader  reads the oms tables and views
--   oms_admin   both of the above, plus maintenance functions
-- Roles are cluster-wide, so they are created only when missing and are
-- not dropped with the extension.

DO $$
DECLARE
	v_role text;
BEGIN
	FOREACH v_role IN ARRAY ARRAY['oms_app', 'oms_reader', 'oms_admin']
	LOOP
		IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = v_role) THEN
			EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', v_role);
		END IF;
	END LOOP;
END;
$$;

REVOKE ALL ON SCHEMA oms FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA oms FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA oms FROM PUBLIC;
-- Every function of the extension, public API included, starts with no
-- EXECUTE for PUBLIC; the grants below open exactly what each role needs.
DO $$
DECLARE
	v_function regprocedure;
BEGIN
	FOR v_function IN
		SELECT d.objid::regprocedure FROM pg_catalog.pg_depend AS d
		WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.deptype = 'e'
		  AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension AS e WHERE e.extname = 'oms')
	LOOP
		EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', v_function);
	END LOOP;
END;
$$;

GRANT USAGE ON SCHEMA oms TO oms_app, oms_reader, oms_admin;

GRANT EXECUTE ON FUNCTION
	@extschema@.oms_create_order(text, jsonb, text, text, jsonb),
	@extschema@.oms_create_order(text, text, text, text, jsonb),
	@extschema@.oms_get_order(uuid),
	@extschema@.oms_cancel_order(uuid, text, text),
	@extschema@.oms_pay_order(uuid, text, text),
	@extschema@.oms_refund_order(uuid, bigint, text, text),
	@extschema@.oms_payment_result(text, text, jsonb),
	@extschema@.oms_order_timeline(uuid),
	@extschema@.oms_transition_allowed(oms.order_status, oms.order_status),
	@extschema@.oms_state_machine_dot(),
	@extschema@.oms_format_money(bigint, text)
TO oms_app;

-- Readers see orders and state machine views; oms_format_money reads
-- oms.currencies through oms._currency_exponent.
GRANT SELECT ON ALL TABLES IN SCHEMA oms TO oms_reader;
GRANT EXECUTE ON FUNCTION
	@extschema@.oms_get_order(uuid),
	@extschema@.oms_order_timeline(uuid),
	@extschema@.oms_transition_allowed(oms.order_status, oms.order_status),
	@extschema@.oms_state_machine_dot(),
	@extschema@.oms_format_money(bigint, text),
	oms._order_states(),
	oms._order_transitions(),
	oms._currency_exponent(text),
	oms._reserved(text, timestamptz)
TO oms_reader;
GRANT EXECUTE ON FUNCTION oms._currency_exponent(text) TO oms_app;
-- Reference data: oms_format_money runs with the caller's rights.
GRANT SELECT ON oms.currencies TO oms_app;

GRANT oms_app, oms_reader TO oms_admin;
GRANT EXECUTE ON FUNCTION
	@extschema@.oms_purge_idempotency_keys(),
	@extschema@.oms_set_stock(text, bigint),
	@extschema@.oms_adjust_stock(text, bigint),
	@extschema@.oms_run_sagas(integer),
	@extschema@.oms_retry_dead_letter(bigint),
	@extschema@.oms_release_expired_reservations()
TO oms_admin;
