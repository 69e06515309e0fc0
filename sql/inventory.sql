-- inventory: stock levels, reservations with expiry as a predicate,
-- all-or-nothing baskets, and the stock API's checks.
\set SHOW_CONTEXT never

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
SELECT t.err('SELECT oms_set_stock(''IN-A'', 3)');
SELECT t.err('SELECT oms_adjust_stock(''IN-B'', -2)');

-- All or nothing: IN-A fits, IN-B does not (1 available, 2 asked): neither is reserved.
SELECT t.new_order('in-2', '[{"sku": "IN-A", "quantity": 1, "unit_price": 1}, {"sku": "IN-B", "quantity": 2, "unit_price": 1}]', 'test_ok') AS o2 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT status FROM oms.orders WHERE id = :'o2';
SELECT count(*) AS reservations FROM oms.reservations WHERE order_id = :'o2';

-- Expiry is a predicate: past expires_at a held reservation stops counting,
-- before anything sweeps it.
SELECT expires_at - created_at AS ttl FROM oms.reservations WHERE order_id = :'o1' AND sku = 'IN-A';
SELECT oms._reserved('IN-A', now()) AS reserved_now,
	   oms._reserved('IN-A', now() + interval '16 minutes') AS reserved_in_16_min;
-- So an order reserving 16 minutes from now may take those units...
SELECT t.new_order('in-3', '[{"sku": "IN-A", "quantity": 7, "unit_price": 1}]', 'test_ok') AS o3 \gset
SELECT oms._run_sagas(1, now() + interval '16 minutes') AS steps_run;
SELECT sku, quantity, status FROM oms.reservations WHERE order_id = :'o3';
-- ...while the first, still waiting for its payment answer, is held but expired.
SELECT status FROM oms.reservations WHERE order_id = :'o1' AND sku = 'IN-A';
-- The sweep marks expired reservations; only those past their time.
UPDATE oms.reservations SET expires_at = now() - interval '1 second' WHERE order_id = :'o1';
SELECT oms_release_expired_reservations() AS expired;
SELECT sku, status FROM oms.reservations WHERE order_id IN (:'o1', :'o3') ORDER BY order_id = :'o3', sku;
SELECT oms_release_expired_reservations() AS expired_again;

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

-- The constraint backstop: on_hand never goes negative, whatever path tries.
SELECT split_part(t.err('UPDATE oms.stock SET on_hand = -1 WHERE sku = ''IN-B'''), ' (', 1) AS err;

-- Let the payments that never get an answer time out, so that nothing of
-- this file stays in flight.
SELECT oms._run_sagas(100, now() + interval '1 hour') AS steps_run;
SELECT o.customer_id, o.status FROM oms.orders o WHERE o.customer_id IN ('in-1', 'in-5') ORDER BY 1;
SELECT count(*) AS held FROM oms.reservations r JOIN oms.orders o ON o.id = r.order_id
WHERE o.customer_id LIKE 'in-%' AND r.status = 'held';
