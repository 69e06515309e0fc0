-- state.sql: the state machines (the order's life, payment, fulfillment,
-- shipment, return), exposed from the C transition tables in src/state.c,
-- and the trigger that enforces them on oms.orders (the shipment and
-- return tables get theirs in fulfillment.sql and returns.sql).
--
-- requires: schema

CREATE FUNCTION @extschema@.oms_transition_allowed(from_status oms.order_status, to_status oms.order_status)
RETURNS boolean
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_transition_allowed';
COMMENT ON FUNCTION @extschema@.oms_transition_allowed(oms.order_status, oms.order_status) IS
	'True when the state machine allows an order to move from from_status to to_status';

-- The same C function for oms's own code, which calls nothing in the
-- extension's schema: its owner (often the database owner) can rename that
-- schema and put another function in its place.
CREATE FUNCTION oms._transition_allowed(p_from oms.order_status, p_to oms.order_status)
RETURNS boolean
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_transition_allowed';
COMMENT ON FUNCTION oms._transition_allowed(oms.order_status, oms.order_status) IS
	'oms_transition_allowed for oms''s own code';

CREATE FUNCTION @extschema@.oms_transition_allowed(machine text, from_status text, to_status text)
RETURNS boolean
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_machine_transition_allowed';
COMMENT ON FUNCTION @extschema@.oms_transition_allowed(text, text, text) IS
	'True when the state machine (order, payment, fulfillment, shipment or return) allows a move from from_status to to_status';

CREATE FUNCTION oms._transition_allowed_any(p_machine text, p_from text, p_to text)
RETURNS boolean
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_machine_transition_allowed';
COMMENT ON FUNCTION oms._transition_allowed_any(text, text, text) IS
	'oms_transition_allowed(machine, from, to) for oms''s own code';

CREATE FUNCTION @extschema@.oms_state_machine_dot(machine text)
RETURNS text
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_state_machine_dot';
COMMENT ON FUNCTION @extschema@.oms_state_machine_dot(text) IS
	'A state machine (order, payment, fulfillment, shipment or return) as a Graphviz digraph, generated from its C transition table';

CREATE FUNCTION @extschema@.oms_state_machine_dot()
RETURNS text
LANGUAGE c STRICT IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_state_machine_dot';
COMMENT ON FUNCTION @extschema@.oms_state_machine_dot() IS
	'The order state machine as a Graphviz digraph, generated from the C transition table';

CREATE FUNCTION oms._order_states(OUT status text, OUT initial boolean, OUT terminal boolean, OUT meaning text)
RETURNS SETOF record
LANGUAGE c STRICT IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_order_states';
COMMENT ON FUNCTION oms._order_states() IS 'The statuses of the C transition table';

CREATE FUNCTION oms._order_transitions(OUT from_status text, OUT to_status text, OUT event text)
RETURNS SETOF record
LANGUAGE c STRICT IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_order_transitions';
COMMENT ON FUNCTION oms._order_transitions() IS 'The transitions of the C transition table';

CREATE VIEW oms.order_states AS
	SELECT s.status::oms.order_status AS status, s.initial, s.terminal, s.meaning
	FROM oms._order_states() AS s;
COMMENT ON VIEW oms.order_states IS 'Every order status, whether it is initial or final, and what it means';

CREATE VIEW oms.order_transitions AS
	SELECT t.from_status::oms.order_status AS from_status,
		   t.to_status::oms.order_status AS to_status,
		   t.event
	FROM oms._order_transitions() AS t;
COMMENT ON VIEW oms.order_transitions IS 'Every allowed order status transition and the event that causes it';

CREATE FUNCTION oms._machine_states(OUT machine text, OUT status text, OUT initial boolean,
									OUT terminal boolean, OUT meaning text)
RETURNS SETOF record
LANGUAGE c STRICT IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_machine_states';
COMMENT ON FUNCTION oms._machine_states() IS 'The statuses of every C transition table';

CREATE FUNCTION oms._machine_transitions(OUT machine text, OUT from_status text, OUT to_status text,
										 OUT event text)
RETURNS SETOF record
LANGUAGE c STRICT IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_machine_transitions';
COMMENT ON FUNCTION oms._machine_transitions() IS 'The transitions of every C transition table';

CREATE VIEW oms.statuses AS
	SELECT s.machine, s.status, s.initial, s.terminal, s.meaning
	FROM oms._machine_states() AS s;
COMMENT ON VIEW oms.statuses IS
	'Every status of every state machine (order, payment, fulfillment, shipment, return): initial, final, meaning';

CREATE VIEW oms.status_transitions AS
	SELECT t.machine, t.from_status, t.to_status, t.event
	FROM oms._machine_transitions() AS t;
COMMENT ON VIEW oms.status_transitions IS
	'Every allowed move of every state machine and the event that causes it';

-- The trigger of oms.shipments and oms.returns: one status column each.
CREATE FUNCTION oms._status_guard()
RETURNS trigger
LANGUAGE c
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_status_guard';
COMMENT ON FUNCTION oms._status_guard() IS
	'Trigger (machine, column, noun, id column): enforces a C transition table on every write of a status column';

CREATE FUNCTION oms._order_status_guard()
RETURNS trigger
LANGUAGE c
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'oms_order_status_guard';
COMMENT ON FUNCTION oms._order_status_guard() IS
	'Trigger: enforces the order, payment and fulfillment machines on every write to oms.orders and maintains version';

CREATE TRIGGER order_status_guard
	BEFORE INSERT OR UPDATE ON oms.orders
	FOR EACH ROW EXECUTE FUNCTION oms._order_status_guard();
-- ALWAYS: also under session_replication_role = replica, so that no
-- session setting lets a status write bypass the state machine.
ALTER TABLE oms.orders ENABLE ALWAYS TRIGGER order_status_guard;

-- The timeline is append-only: history is never rewritten.
CREATE FUNCTION oms._refuse_timeline_update()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RAISE EXCEPTION 'the order timeline is append-only'
		USING ERRCODE = 'object_not_in_prerequisite_state',
			  DETAIL = pg_catalog.format('Entry %s of order %s cannot be changed.', OLD.seq, OLD.order_id);
END;
$$;
COMMENT ON FUNCTION oms._refuse_timeline_update() IS 'Trigger: refuses updates of timeline entries';

CREATE TRIGGER order_events_append_only
	BEFORE UPDATE ON oms.order_events
	FOR EACH ROW EXECUTE FUNCTION oms._refuse_timeline_update();
ALTER TABLE oms.order_events ENABLE ALWAYS TRIGGER order_events_append_only;

-- Privileges of the objects above: nothing for PUBLIC, each role what it
-- needs (the roles come from roles.sql, checks.sql verifies).
GRANT SELECT ON oms.order_states, oms.order_transitions, oms.statuses, oms.status_transitions TO oms_reader;
REVOKE ALL ON FUNCTION @extschema@.oms_state_machine_dot() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_state_machine_dot(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_transition_allowed(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._machine_states() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._machine_transitions() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._status_guard() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._transition_allowed_any(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.oms_transition_allowed(oms.order_status, oms.order_status) FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._order_states() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._order_status_guard() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._order_transitions() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._refuse_timeline_update() FROM PUBLIC;
REVOKE ALL ON FUNCTION oms._transition_allowed(oms.order_status, oms.order_status) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
	@extschema@.oms_transition_allowed(oms.order_status, oms.order_status),
	@extschema@.oms_transition_allowed(text, text, text),
	@extschema@.oms_state_machine_dot(),
	@extschema@.oms_state_machine_dot(text)
TO oms_app;
GRANT EXECUTE ON FUNCTION
	@extschema@.oms_transition_allowed(oms.order_status, oms.order_status),
	@extschema@.oms_transition_allowed(text, text, text),
	@extschema@.oms_state_machine_dot(),
	@extschema@.oms_state_machine_dot(text),
	oms._order_states(),
	oms._order_transitions(),
	oms._machine_states(),
	oms._machine_transitions()
TO oms_reader;
