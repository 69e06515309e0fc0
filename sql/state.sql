-- state: the order state machine, from the C transition table to the
-- trigger that enforces it on every write to oms.orders.status.
\set SHOW_CONTEXT never

SELECT * FROM oms.order_states ORDER BY status;
SELECT * FROM oms.order_transitions ORDER BY from_status, to_status;

-- Every (from, to) pair, as the C table answers it.
SELECT f.s AS from_status,
	   string_agg(t.s::text, ', ' ORDER BY t.s) FILTER (WHERE oms_transition_allowed(f.s, t.s)) AS allowed,
	   string_agg(t.s::text, ', ' ORDER BY t.s) FILTER (WHERE NOT oms_transition_allowed(f.s, t.s)) AS refused
FROM unnest(enum_range(NULL::oms.order_status)) AS f(s),
	 unnest(enum_range(NULL::oms.order_status)) AS t(s)
GROUP BY f.s ORDER BY f.s;
SELECT oms_transition_allowed(NULL, 'pending') AS null_in_null_out;

-- Every (from, to) pair again, this time through the trigger: an order is
-- walked to "from" along allowed transitions with direct UPDATEs (as a
-- superuser would), then a direct UPDATE to "to" is tried.  The trigger's
-- verdict must match the table for all 64 pairs, and version must grow by
-- one exactly when the transition happens.
CREATE TEMP TABLE verdicts (from_status oms.order_status, to_status oms.order_status,
							trigger_allowed boolean, sqlstate text, version_delta integer);
DO $$
DECLARE
	f oms.order_status;
	t oms.order_status;
	step oms.order_status;
	path oms.order_status[];
	v_id uuid;
	v_before integer;
	v_after integer;
BEGIN
	FOREACH f IN ARRAY enum_range(NULL::oms.order_status) LOOP
		-- shortest path pending -> f along allowed transitions
		WITH RECURSIVE walk(s, p) AS (
			SELECT 'pending'::oms.order_status, ARRAY[]::oms.order_status[]
			UNION ALL
			SELECT tr.to_status, w.p || tr.to_status
			FROM walk w JOIN oms.order_transitions tr ON tr.from_status = w.s
			WHERE NOT tr.to_status = ANY (w.p) AND tr.to_status <> 'pending' AND cardinality(w.p) < 8)
		SELECT w.p INTO path FROM walk w WHERE w.s = f ORDER BY cardinality(w.p) LIMIT 1;

		FOREACH t IN ARRAY enum_range(NULL::oms.order_status) LOOP
			INSERT INTO oms.orders (customer_id, currency, total) VALUES ('walker', 'USD', 0)
			RETURNING orders.id INTO v_id;
			FOREACH step IN ARRAY path LOOP
				UPDATE oms.orders SET status = step WHERE orders.id = v_id;
			END LOOP;
			SELECT version INTO v_before FROM oms.orders WHERE orders.id = v_id;
			BEGIN
				UPDATE oms.orders SET status = t WHERE orders.id = v_id;
				SELECT version INTO v_after FROM oms.orders WHERE orders.id = v_id;
				INSERT INTO verdicts VALUES (f, t, true, NULL, v_after - v_before);
			EXCEPTION WHEN OTHERS THEN
				INSERT INTO verdicts VALUES (f, t, false, SQLSTATE, NULL);
			END;
		END LOOP;
	END LOOP;
END;
$$;
SELECT count(*) AS pairs_checked FROM verdicts;
-- Disagreements between trigger and table: none expected.  Writing the
-- same status again without a self-loop is not a transition (no version
-- bump, no error), which the second condition accounts for.
SELECT * FROM verdicts
WHERE (from_status <> to_status OR oms_transition_allowed(from_status, to_status))
  AND (trigger_allowed IS DISTINCT FROM oms_transition_allowed(from_status, to_status)
	   OR (trigger_allowed AND version_delta <> 1)
	   OR (NOT trigger_allowed AND sqlstate <> '55000'));
SELECT from_status, version_delta FROM verdicts
WHERE from_status = to_status ORDER BY 1;
SELECT count(*) FILTER (WHERE trigger_allowed AND from_status <> to_status) AS allowed_moves,
	   count(*) FILTER (WHERE NOT trigger_allowed) AS refused_moves
FROM verdicts;
DELETE FROM oms.orders WHERE customer_id = 'walker';

-- The messages a refused direct write gets.
INSERT INTO oms.orders (id, customer_id, currency, total)
VALUES ('00000000-0000-0000-0000-0000000000a1', 's1', 'USD', 0);
UPDATE oms.orders SET status = 'refunded' WHERE customer_id = 's1';
UPDATE oms.orders SET status = 'canceled' WHERE customer_id = 's1';
UPDATE oms.orders SET status = 'pending' WHERE customer_id = 's1';

-- A new order must start pending, and starts at version 1 whatever is written.
INSERT INTO oms.orders (customer_id, currency, total, status) VALUES ('s2', 'USD', 0, 'confirmed');
INSERT INTO oms.orders (id, customer_id, currency, total, version)
VALUES ('00000000-0000-0000-0000-0000000000a2', 's2', 'USD', 0, 42);
SELECT status, version FROM oms.orders WHERE customer_id = 's2';

-- Version belongs to the trigger: a write to it alone is undone, and an
-- update that does not change the status keeps it.
UPDATE oms.orders SET version = 7 WHERE customer_id = 's2';
UPDATE oms.orders SET metadata = '{"note": "x"}' WHERE customer_id = 's2';
SELECT status, version FROM oms.orders WHERE customer_id = 's2';
UPDATE oms.orders SET status = 'processing', version = 99 WHERE customer_id = 's2';
SELECT status, version FROM oms.orders WHERE customer_id = 's2';

-- The self-loop partially_refunded -> partially_refunded bumps version only
-- when the UPDATE names the status.
UPDATE oms.orders SET status = 'confirmed' WHERE customer_id = 's2';
UPDATE oms.orders SET status = 'partially_refunded' WHERE customer_id = 's2';
UPDATE oms.orders SET status = 'partially_refunded' WHERE customer_id = 's2';
SELECT status, version FROM oms.orders WHERE customer_id = 's2';
UPDATE oms.orders SET metadata = '{}' WHERE customer_id = 's2';
SELECT status, version FROM oms.orders WHERE customer_id = 's2';

-- session_replication_role = replica disables ordinary triggers, not this one.
SET session_replication_role = replica;
UPDATE oms.orders SET status = 'pending' WHERE customer_id = 's2';
RESET session_replication_role;
SELECT tgname, tgenabled FROM pg_trigger
WHERE tgrelid IN ('oms.orders'::regclass, 'oms.order_events'::regclass) AND NOT tgisinternal
ORDER BY 1;
DELETE FROM oms.orders WHERE customer_id IN ('s1', 's2');

-- The Graphviz export: one node per status, one edge per transition.
SELECT (SELECT count(*) FROM regexp_matches(oms_state_machine_dot(), '->', 'g')) AS edges,
	   (SELECT count(*) FROM oms.order_transitions) AS transitions,
	   oms_state_machine_dot() LIKE 'digraph order_status {%' AS is_digraph;
SELECT line FROM regexp_split_to_table(oms_state_machine_dot(), E'\n') AS line
WHERE line LIKE '%pending%';
