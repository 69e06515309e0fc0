-- test/demo.sql: the walkthrough behind "make demo" (run by test/demo.sh).
-- Owns: a short tour of the oms SQL API, meant to be read on screen:
-- create, read, idempotent replay, cancel, timeline, outbox, a refused
-- transition and the state machine.  Order ids travel in psql variables.

\set SHOW_CONTEXT never

\echo
\echo '== 1. Create an order with three items (idempotency key demo-key-1) =='
SELECT o->>'order_id' AS order1, o->>'status' AS status1, o->>'total' AS total1
FROM oms_create_order(
	'cust-42',
	'[{"sku": "SKU-1", "quantity": 2, "unit_price": 1999},
	  {"sku": "SKU-2", "quantity": 1, "unit_price": 4999},
	  {"sku": "SKU-3", "quantity": 3, "unit_price": 250}]',
	'USD',
	'demo-key-1') AS o \gset
\echo 'created order' :order1 'status' :status1 'total' :total1 '(minor units, USD cents)'

\echo
\echo '== 2. Read it back: oms_get_order returns the whole order document =='
-- Unaligned, no header: the pretty JSON reads as plain text.
\pset format unaligned
\pset tuples_only on
SELECT pg_catalog.jsonb_pretty(oms_get_order(:'order1'));
\pset format aligned
\pset tuples_only off

\echo
\echo '== 3. Replay the same call with the same idempotency key =='
SELECT o->>'order_id' AS replay_id
FROM oms_create_order(
	'cust-42',
	'[{"sku": "SKU-1", "quantity": 2, "unit_price": 1999},
	  {"sku": "SKU-2", "quantity": 1, "unit_price": 4999},
	  {"sku": "SKU-3", "quantity": 3, "unit_price": 250}]',
	'USD',
	'demo-key-1') AS o \gset
SELECT :'replay_id' AS replayed_order_id,
	:'replay_id' = :'order1' AS same_order_id,
	(SELECT pg_catalog.count(*) FROM oms.orders) AS orders_in_table;

\echo
\echo '== 4. A second order (default currency, no key), then cancel it =='
SELECT o->>'order_id' AS order2
FROM oms_create_order(
	'cust-7',
	'[{"sku": "SKU-9", "quantity": 1, "unit_price": 12500}]') AS o \gset
\echo 'created order' :order2
SELECT c->>'order_id' AS order_id, c->>'status' AS status, c->>'version' AS version
FROM oms_cancel_order(:'order2', 'customer changed mind') AS c;

\echo
\echo '== 5. Timeline of the canceled order =='
SELECT * FROM oms_order_timeline(:'order2');

\echo
\echo '== 6. Outbox: events written in the same transactions as the changes =='
SELECT seq, type, aggregateid, created_at FROM oms.outbox ORDER BY created_at;
\echo 'payload of the newest event of the canceled order:'
\pset format unaligned
\pset tuples_only on
SELECT pg_catalog.jsonb_pretty(payload)
FROM oms.outbox
WHERE aggregateid = :'order2'
ORDER BY seq DESC
LIMIT 1;
\pset format aligned
\pset tuples_only off

\echo
\echo '== 7. An illegal transition is refused: cancel the canceled order again =='
-- Let this one error through, then show what the client saw.
\set ON_ERROR_STOP 0
SELECT oms_cancel_order(:'order2', 'second thoughts');
\set ON_ERROR_STOP 1
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate, :'LAST_ERROR_MESSAGE' AS message;
-- Plumbing for the check below; not worth echoing.
\set ECHO none
SELECT :'LAST_ERROR_SQLSTATE' = '55000' AS refused_ok \gset
\set ECHO queries
\if :refused_ok
\echo 'refused with SQLSTATE 55000 (object_not_in_prerequisite_state); the order is unchanged:'
SELECT id, status, version FROM oms.orders WHERE id = :'order2';
\else
-- The demo doubles as a smoke test: an accepted second cancel is a bug.
DO $$ BEGIN RAISE EXCEPTION 'demo: expected the second cancel to fail with SQLSTATE 55000'; END $$;
\endif

\echo
\echo '== 8. The state machine: every allowed move =='
SELECT * FROM oms.order_transitions ORDER BY 1, 2;

\echo
\echo 'demo finished'
