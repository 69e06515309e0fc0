-- analytics: the reporting views on a known data set.
--
-- Orders are driven through the real API and saga engine, each saga batch
-- run with oms._run_sagas(n, at) at a chosen time (which becomes the
-- saga's finished_at); creation times, saga start times, refund completion
-- times and dead letter times are then set by hand (the status guard only
-- checks status changes).  Days are UTC days; the session time zone of the
-- regression run is not UTC, and order B is confirmed at 03:00 UTC, the
-- evening before in the session's zone.  Everything is rolled back.
\set SHOW_CONTEXT never

-- Privileges and comments.
SELECT c.relname, has_table_privilege('oms_reader', c.oid, 'SELECT') AS reader,
	   has_table_privilege('oms_admin', c.oid, 'SELECT') AS admin,
	   has_table_privilege('oms_app', c.oid, 'SELECT') AS app,
	   has_table_privilege('public', c.oid, 'SELECT') AS public,
	   obj_description(c.oid, 'pg_class') IS NOT NULL AS commented
FROM pg_class c
WHERE c.oid IN ('oms.revenue_daily'::regclass, 'oms.orders_by_status_daily'::regclass,
				'oms.saga_durations'::regclass, 'oms.saga_failure_reasons'::regclass)
ORDER BY 1;

BEGIN;
DELETE FROM oms.outbox;
DELETE FROM oms.dead_letters;
DELETE FROM oms.orders;
SELECT count(*) AS skus FROM (VALUES (oms_set_stock('AN-1', 1000)), (oms_set_stock('AN-0', 0))) AS s(doc);

CREATE TEMP TABLE o (name text PRIMARY KEY, id uuid);
CREATE FUNCTION pg_temp.pay(p_name text, p_currency text, p_items jsonb, p_method text, p_at timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	v_id uuid := (oms_create_order('an-' || p_name, p_items, p_currency) ->> 'order_id')::uuid;
BEGIN
	INSERT INTO o VALUES (p_name, v_id);
	IF p_method IS NOT NULL THEN
		PERFORM oms_pay_order(v_id, p_method);
		PERFORM oms._run_sagas(100, p_at);
	END IF;
END;
$$;

-- A: 2 x 10.00 USD, confirmed 2030-03-01 10:00 UTC.
SELECT pg_temp.pay('A', 'USD', '[{"sku": "AN-1", "quantity": 2, "unit_price": 1000}]', 'test_ok', '2030-03-01 10:00:00+00');
-- B: 19.99 USD, confirmed 2030-03-02 03:00 UTC (still March 1st in the session's zone).
SELECT pg_temp.pay('B', 'USD', '[{"sku": "AN-1", "quantity": 1, "unit_price": 1999}]', 'test_ok', '2030-03-02 03:00:00+00');
-- C: 5000 JPY, confirmed 2030-03-01 12:00 UTC.
SELECT pg_temp.pay('C', 'JPY', '[{"sku": "AN-1", "quantity": 1, "unit_price": 5000}]', 'test_ok', '2030-03-01 12:00:00+00');
-- D, G: cards declined; H: out of stock.  Not revenue.
SELECT pg_temp.pay('D', 'USD', '[{"sku": "AN-1", "quantity": 1, "unit_price": 700}]', 'test_decline', '2030-03-01 13:00:00+00');
SELECT pg_temp.pay('G', 'USD', '[{"sku": "AN-1", "quantity": 1, "unit_price": 800}]', 'test_decline', '2030-03-02 14:00:00+00');
SELECT pg_temp.pay('H', 'EUR', '[{"sku": "AN-0", "quantity": 1, "unit_price": 900}]', 'test_ok', '2030-03-02 15:00:00+00');
-- E: never paid; F: canceled before payment.
SELECT pg_temp.pay('E', 'EUR', '[{"sku": "AN-1", "quantity": 1, "unit_price": 300}]', NULL, NULL);
SELECT pg_temp.pay('F', 'EUR', '[{"sku": "AN-1", "quantity": 1, "unit_price": 400}]', NULL, NULL);
SELECT oms_cancel_order(id) ->> 'status' AS f FROM o WHERE name = 'F';

-- Refunds on March 2nd: 5.00 of A's 20.00 USD, all of C's 5000 JPY.
SELECT oms_refund_order(id, 500) ->> 'status' AS a FROM o WHERE name = 'A';
SELECT oms._run_sagas(100, '2030-03-02 10:00:00+00');
SELECT oms_refund_order(id) ->> 'status' AS c FROM o WHERE name = 'C';
SELECT oms._run_sagas(100, '2030-03-02 11:00:00+00');
UPDATE oms.refunds SET completed_at = '2030-03-02 10:00:00+00' WHERE order_id = (SELECT id FROM o WHERE name = 'A');
UPDATE oms.refunds SET completed_at = '2030-03-02 11:00:00+00' WHERE order_id = (SELECT id FROM o WHERE name = 'C');

-- A refund still pending does not count.
SELECT oms_refund_order(id, 100) ->> 'status' AS b FROM o WHERE name = 'B';

SELECT o.name, x.status, x.currency, x.total FROM o JOIN oms.orders x ON x.id = o.id ORDER BY 1;

-- Known start times: each saga took a known number of seconds.
UPDATE oms.sagas s SET created_at = s.finished_at - v.took * interval '1 s'
FROM o, (VALUES ('A', 'fulfilment', 2), ('B', 'fulfilment', 4), ('C', 'fulfilment', 10),
				('D', 'fulfilment', 1.5), ('G', 'fulfilment', 2.5), ('H', 'fulfilment', 0.5),
				('A', 'refund', 0.25), ('C', 'refund', 0.75)) AS v(name, kind, took)
WHERE o.name = v.name AND s.order_id = o.id AND s.kind = v.kind;
-- Known creation days.
UPDATE oms.orders x SET created_at = v.at::timestamptz
FROM o, (VALUES ('A', '2030-03-01 09:00:00+00'), ('B', '2030-03-01 22:00:00+00'), ('C', '2030-03-01 11:00:00+00'),
				('D', '2030-03-01 12:00:00+00'), ('G', '2030-03-02 13:00:00+00'), ('H', '2030-03-02 14:00:00+00'),
				('E', '2030-03-02 08:00:00+00'), ('F', '2030-03-02 09:00:00+00')) AS v(name, at)
WHERE o.name = v.name AND x.id = o.id;
-- Dead letters at the time of the failure.
UPDATE oms.dead_letters d SET created_at = s.finished_at
FROM oms.sagas s WHERE s.id = d.saga_id;

-- Revenue: A and C on March 1st, B on March 2nd (UTC), refunds on March 2nd.
SELECT * FROM oms.revenue_daily ORDER BY day, currency;
-- Totals agree with the payments.
SELECT r.currency, sum(r.net) AS net, (SELECT sum(p.captured - p.refunded) FROM oms.payments p WHERE p.currency = r.currency) AS payments
FROM oms.revenue_daily r GROUP BY 1 ORDER BY 1;

SELECT * FROM oms.orders_by_status_daily ORDER BY day, status;

SELECT * FROM oms.saga_durations ORDER BY kind, outcome;

SELECT saga_kind, step, phase, sqlstate, message, failures, first_seen AT TIME ZONE 'UTC' AS first_seen_utc,
	   last_seen AT TIME ZONE 'UTC' AS last_seen_utc
FROM oms.saga_failure_reasons;

-- A reader sees the views.
CREATE ROLE analytics_reader IN ROLE oms_reader;
SET ROLE analytics_reader;
SELECT count(*) AS revenue_rows FROM oms.revenue_daily;
SELECT count(*) AS failure_rows FROM oms.saga_failure_reasons;
RESET ROLE;
DROP ROLE analytics_reader;
ROLLBACK;
