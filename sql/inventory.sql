-- inventory: stock levels, reservations with expiry as a predicate,
-- all-or-nothing baskets, the stock API's checks, and the reserved counter
-- (oms.stock.reserved) that makes availability O(1).
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql

-- The counter against the reservations it counts: reserved must equal
-- held_units (held reservations, expired or not) after every change.
CREATE VIEW t.in_counter AS
	SELECT s.sku, s.on_hand, s.reserved,
		   (SELECT coalesce(sum(r.quantity), 0) FROM oms.reservations r
			WHERE r.sku = s.sku AND r.status = 'held') AS held_units
	FROM oms.stock s WHERE s.sku LIKE 'IN-%' ORDER BY s.sku;

SELECT oms_set_stock('IN-A', 5) - 'updated_at' AS a;
SELECT oms_set_stock('IN-B', 2) - 'updated_at' AS b;
SELECT oms_adjust_stock('IN-A', 3) ->> 'on_hand' AS on_hand;
SELECT oms_adjust_stock('IN-A', -1) ->> 'on_hand' AS on_hand;

-- Bad input.
SELECT t.err('SELECT oms_set_stock(NULL, 1)');
SELECT t.err('SELECT oms_set_stock('''', 1)');
SELECT t.err(format('SELECT oms_set_stock(%L, 1)', repeat('s', 101)));
SELECT t.err('SELECT oms_set_stock(''IN-A'', NULL)');
SELECT t.err('SELECT oms_set_stock(''IN-A'', -1)');
SELECT t.err('SELECT oms_adjust_stock(''IN-NONE'', 1)');
SELECT t.err('SELECT oms_adjust_stock(''IN-A'', -8)');
SELECT t.err('SELECT oms_adjust_stock(''IN-A'', 9223372036854775807)');
SELECT t.err('SELECT oms_adjust_stock(''IN-A'', NULL)');
SELECT sku, on_hand FROM oms.stock WHERE sku LIKE 'IN-%' ORDER BY sku;

-- A reservation counts against availability; stock cannot drop below it.
SELECT t.new_order('in-1', '[{"sku": "IN-A", "quantity": 4, "unit_price": 1}, {"sku": "IN-B", "quantity": 1, "unit_price": 1}]', 'test_hang') AS o1 \gset
SELECT oms_run_sagas(1) AS steps_run;
SELECT sku, on_hand, reserved, available FROM oms.stock_levels WHERE sku LIKE 'IN-%' ORDER BY sku;
SELECT * FROM t.in_counter;
SELECT t.err('SELECT oms_set_stock(''IN-A'', 3)');
SELECT t.err('SELECT oms_adjust_stock(''IN-B'', -2)');

-- All or nothing: IN-A fits, IN-B does not (1 available, 2 asked): neither is reserved.
SELECT t.new_order('in-2', '[{"sku": "IN-A", "quantity": 1, "unit_price": 1}, {"sku": "IN-B", "quantity": 2, "unit_price": 1}]', 'test_ok') AS o2 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT status FROM oms.orders WHERE id = :'o2';
SELECT count(*) AS reservations FROM oms.reservations WHERE order_id = :'o2';
SELECT * FROM t.in_counter;

-- Expiry is a predicate: past expires_at a held reservation stops counting,
-- before anything sweeps it.
SELECT expires_at - created_at AS ttl FROM oms.reservations WHERE order_id = :'o1' AND sku = 'IN-A';
SELECT oms._reserved('IN-A', now()) AS reserved_now,
	   oms._reserved('IN-A', now() + interval '16 minutes') AS reserved_in_16_min;
-- So an order reserving 16 minutes from now may take those units: short
-- by the counter, it sweeps IN-A's expired reservations and counts again...
SELECT t.new_order('in-3', '[{"sku": "IN-A", "quantity": 7, "unit_price": 1}]', 'test_ok') AS o3 \gset
SELECT oms._run_sagas(1, now() + interval '16 minutes') AS steps_run;
SELECT sku, quantity, status FROM oms.reservations WHERE order_id = :'o3';
-- ...so the first, still waiting for its payment answer, lost its IN-A
-- units; its IN-B reservation, on a SKU nobody came short of, is untouched.
SELECT sku, status FROM oms.reservations WHERE order_id = :'o1' ORDER BY sku;
SELECT * FROM t.in_counter;
-- The sweep marks expired reservations; only those past their time.
UPDATE oms.reservations SET expires_at = now() - interval '1 second' WHERE order_id = :'o1';
SELECT oms_release_expired_reservations() AS expired;
SELECT sku, status FROM oms.reservations WHERE order_id IN (:'o1', :'o3') ORDER BY order_id = :'o3', sku;
SELECT oms_release_expired_reservations() AS expired_again;
SELECT * FROM t.in_counter;

-- A payment never runs on expired reservations: the saga fails instead.
SET oms.step_timeout = '1h';
SELECT t.new_order('in-4', '[{"sku": "IN-B", "quantity": 1, "unit_price": 1}]', 'test_ok') AS o4 \gset
SELECT oms._run_sagas(1, now()) AS steps_run;
SELECT oms._run_sagas(10, now() + interval '20 minutes') AS steps_run;
SELECT status, (SELECT error ->> 'message' FROM oms.dead_letters d WHERE d.order_id = o.id) AS reason
FROM oms.orders o WHERE o.id = :'o4';
RESET oms.step_timeout;

-- The reservation TTL is a setting.
SET oms.reservation_ttl = '2min';
SELECT t.new_order('in-5', '[{"sku": "IN-B", "quantity": 1, "unit_price": 1}]', 'test_hang') AS o5 \gset
SELECT oms_run_sagas(1) AS steps_run;
SELECT expires_at - created_at AS ttl FROM oms.reservations WHERE order_id = :'o5';
RESET oms.reservation_ttl;
-- Let it reach its (hanging) payment so that nothing else is due below.
SELECT oms_run_sagas() AS steps_run;

-- Confirmation turns the reservation into a decrement; after a payment
-- the reservation no longer expires.
SELECT t.new_order('in-6', '[{"sku": "IN-B", "quantity": 1, "unit_price": 1}]', 'test_ok') AS o6 \gset
SELECT oms_run_sagas(2) AS steps_run;
SELECT status, expires_at FROM oms.reservations WHERE order_id = :'o6';
SELECT oms_run_sagas() AS steps_run;
SELECT r.status, s.on_hand FROM oms.reservations r JOIN oms.stock s USING (sku) WHERE r.order_id = :'o6';
SELECT * FROM t.in_counter;

-- The constraint backstop: on_hand never goes negative, whatever path tries.
SELECT split_part(t.err('UPDATE oms.stock SET on_hand = -1 WHERE sku = ''IN-B'''), ' (', 1) AS err;

-- Let the payments that never get an answer time out, so that nothing of
-- this file stays in flight.
SELECT oms._run_sagas(100, now() + interval '1 hour') AS steps_run;
SELECT o.customer_id, o.status FROM oms.orders o WHERE o.customer_id IN ('in-1', 'in-5') ORDER BY 1;
SELECT count(*) AS held FROM oms.reservations r JOIN oms.orders o ON o.id = r.order_id
WHERE o.customer_id LIKE 'in-%' AND r.status = 'held';

-- ------------------------------------------------- the reserved counter
-- Through the life of an order: reserve counts the units, payment (expiry
-- moved to infinity) leaves the count alone, confirm takes them off both
-- the counter and on_hand, a full refund puts them back on the shelf.
-- One transaction, rolled back at the end: the files after this one count
-- every saga of the database in their metrics.
BEGIN;
SELECT oms_set_stock('IN-C', 10) ->> 'available' AS available;
SELECT t.new_order('in-c1', '[{"sku": "IN-C", "quantity": 3, "unit_price": 1}]', 'test_ok') AS c1 \gset
SELECT oms_run_sagas(1) AS reserve;
SELECT * FROM t.in_counter WHERE sku = 'IN-C';
SELECT oms_run_sagas(1) AS pay;
SELECT r.status, r.expires_at, c.reserved FROM oms.reservations r JOIN t.in_counter c USING (sku) WHERE r.order_id = :'c1';
SELECT oms_run_sagas(1) AS confirm;
SELECT * FROM t.in_counter WHERE sku = 'IN-C';
SELECT oms_refund_order(:'c1') ->> 'status' AS status;
SELECT oms_run_sagas() AS steps_run;
SELECT r.status, c.on_hand, c.reserved, c.held_units
FROM oms.reservations r JOIN t.in_counter c USING (sku) WHERE r.order_id = :'c1';

-- A declined payment: the compensation releases the units.
SELECT t.new_order('in-c2', '[{"sku": "IN-C", "quantity": 4, "unit_price": 1}]', 'test_decline') AS c2 \gset
SELECT oms_run_sagas(1) AS reserve;
SELECT * FROM t.in_counter WHERE sku = 'IN-C';
SELECT oms_run_sagas() AS steps_run;
SELECT (SELECT status FROM oms.orders WHERE id = :'c2') AS order_status,
	   (SELECT status FROM oms.reservations WHERE order_id = :'c2') AS reservation, c.reserved, c.held_units
FROM t.in_counter c WHERE c.sku = 'IN-C';

-- A reserve step run again counts its own held units once.
SELECT t.new_order('in-c3', '[{"sku": "IN-C", "quantity": 6, "unit_price": 1}]', 'test_hang') AS c3 \gset
SELECT oms_run_sagas(2) AS reserve_and_pay;
SELECT oms._reserve_order(:'c3', now());
SELECT quantity, status FROM oms.reservations WHERE order_id = :'c3';
SELECT * FROM t.in_counter WHERE sku = 'IN-C';

-- Expiry takes effect the moment it passes: before any sweep the view
-- stops counting c3's units (its payment still waits for an answer), and
-- the next reserver short of them sweeps them: the saga runner without
-- oms_run_sagas' sweep of every SKU first.
UPDATE oms.reservations SET expires_at = now() - interval '1 second' WHERE order_id = :'c3';
SELECT sku, on_hand, reserved, available FROM oms.stock_levels WHERE sku = 'IN-C';
SELECT oms._reserved('IN-C', now()) AS reserved_now;
SELECT * FROM t.in_counter WHERE sku = 'IN-C';
SELECT t.new_order('in-c4', '[{"sku": "IN-C", "quantity": 10, "unit_price": 1}]', 'test_hang') AS c4 \gset
SELECT oms._run_sagas(1, now()) AS reserve;
SELECT o.customer_id, r.quantity, r.status FROM oms.reservations r JOIN oms.orders o ON o.id = r.order_id
WHERE r.order_id IN (:'c3', :'c4') ORDER BY o.customer_id;
SELECT * FROM t.in_counter WHERE sku = 'IN-C';
-- Short for good: OM011 with the true availability.
SELECT oms_run_sagas(1) AS c4_pay;
SELECT t.new_order('in-c5', '[{"sku": "IN-C", "quantity": 1, "unit_price": 1}]', 'test_ok') AS c5 \gset
SELECT oms._run_sagas(1, now()) AS reserve;
SELECT error ->> 'message' AS message, error ->> 'detail' AS detail FROM oms.dead_letters WHERE order_id = :'c5';
SELECT oms_run_sagas() AS steps_run;

-- A stock change below the counter sweeps expired reservations first:
-- expired units do not hold the stock up.
UPDATE oms.reservations SET expires_at = now() - interval '1 second' WHERE order_id = :'c4';
SELECT oms_set_stock('IN-C', 4) - 'updated_at' AS c;
SELECT status FROM oms.reservations WHERE order_id = :'c4';
SELECT * FROM t.in_counter WHERE sku = 'IN-C';

-- Whoever changes reservations, the triggers keep the count: a direct
-- insert, an order deleted with its reservations, a truncate.
SAVEPOINT by_hand;
INSERT INTO oms.reservations (order_id, sku, quantity, expires_at) VALUES (:'c5', 'IN-C', 3, now() + interval '1 hour');
SELECT * FROM t.in_counter WHERE sku = 'IN-C';
SAVEPOINT deleted;
DELETE FROM oms.orders WHERE id = :'c5';
SELECT * FROM t.in_counter WHERE sku = 'IN-C';
ROLLBACK TO SAVEPOINT deleted;
SELECT sku, reserved FROM oms.stock WHERE reserved <> 0;
TRUNCATE oms.reservations;
SELECT sku, reserved FROM oms.stock WHERE reserved <> 0;
ROLLBACK TO SAVEPOINT by_hand;

-- The constraint backstop: the counter never exceeds on_hand, whatever
-- path tries (here a held reservation written by hand), nor drops below 0.
SELECT split_part(t.err(format('INSERT INTO oms.reservations (order_id, sku, quantity, expires_at) VALUES (%L, %L, 5, now() + interval %L)',
								:'c5', 'IN-C', '1 hour')), ' (', 1) AS err;
SELECT split_part(t.err('UPDATE oms.stock SET reserved = -1 WHERE sku = ''IN-C'''), ' (', 1) AS err;

-- A reservation that expired between the payment's check and its pin can
-- be swept by a reserver that needs the units (here by hand, after the
-- payment): confirm then refuses to sell them twice, and the saga refunds.
SELECT oms_set_stock('IN-D', 2) ->> 'available' AS available;
SELECT t.new_order('in-d1', '[{"sku": "IN-D", "quantity": 2, "unit_price": 1}]', 'test_ok') AS d1 \gset
SELECT oms._run_sagas(1, now()) AS reserve, oms._run_sagas(1, now()) AS pay;
UPDATE oms.reservations SET status = 'expired' WHERE order_id = :'d1';
SELECT oms._run_sagas(10, now()) AS steps_run;
SELECT o.status, p.status AS payment, r.status AS reservation, s.on_hand, s.reserved,
	   (SELECT d.error ->> 'step' || ': ' || (d.error ->> 'message') || ' (' || (d.error ->> 'detail') || ')'
		FROM oms.dead_letters d WHERE d.order_id = o.id) AS error
FROM oms.orders o JOIN oms.payments p ON p.order_id = o.id JOIN oms.reservations r ON r.order_id = o.id
JOIN oms.stock s ON s.sku = r.sku WHERE o.id = :'d1';

-- Let the hanging payments time out, so that nothing of this file stays
-- in flight; then, for every SKU of every test so far, the counter equals
-- the held units.
SELECT oms._run_sagas(100, now() + interval '1 hour') AS steps_run;
SELECT * FROM t.in_counter;
SELECT count(*) AS counter_mismatches FROM oms.stock s
WHERE s.reserved <> (SELECT coalesce(sum(r.quantity), 0) FROM oms.reservations r WHERE r.sku = s.sku AND r.status = 'held');
ROLLBACK;
SELECT * FROM t.in_counter;
