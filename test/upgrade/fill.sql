-- test/upgrade/fill.sql: orders in every status, sagas in flight and
-- events in the outbox, made with the API of the OLDEST frozen version
-- (0.1.0), for test/t/040_upgrade.pl to update under.
--
-- The worker of this database waits while the SQL is older than its
-- library, so the sagas are driven here with oms_run_sagas().  Each call is
-- its own transaction, as a client's would be.  Needs oms.retry_base and
-- oms.step_timeout of a few seconds (the test's node sets them): the
-- in-flight sagas must still be in flight when the fill ends, and finish soon
-- after the update.
--
-- public.upgrade_expect says, per customer, the status each order has
-- after the fill (before) and once the worker finished the sagas after the
-- update (after).
\set ON_ERROR_STOP 1

CREATE TABLE public.upgrade_expect (customer_id text PRIMARY KEY, before text NOT NULL, after text NOT NULL);
INSERT INTO public.upgrade_expect VALUES
	-- Settled before the update.
	('upg-pending',			'pending',				'pending'),
	('upg-canceled',		'canceled',				'canceled'),
	('upg-confirmed',		'confirmed',			'confirmed'),
	('upg-failed',			'failed',				'failed'),
	('upg-partial',			'partially_refunded',	'partially_refunded'),
	('upg-refunded',		'refunded',				'refunded'),
	('upg-canceled-saga',	'canceled',				'canceled'),
	-- In flight at the update.
	('upg-not-started',		'processing',			'confirmed'),	-- paid, no step run yet
	('upg-flaky',			'processing',			'confirmed'),	-- test_flaky, waiting to retry the charge
	('upg-hang',			'processing',			'failed'),		-- test_hang, waiting for an answer (step timeout)
	('upg-cancel-requested','cancel_requested',		'canceled'),	-- test_hang, then canceled: compensation due
	('upg-compensating',	'cancel_requested',		'canceled'),	-- test_flaky, canceled: waiting to retry the void
	('upg-refund-partial',	'confirmed',			'partially_refunded'),	-- refund saga not started
	('upg-refund-full',		'confirmed',			'refunded');			-- refund saga not started

CREATE FUNCTION public.upg_id(p_customer text) RETURNS uuid
LANGUAGE sql STABLE
AS $$ SELECT o.id FROM oms.orders AS o WHERE o.customer_id = p_customer $$;

-- Runs every saga step that is due now; steps waiting for a retry or an
-- answer are not due, so this ends.
CREATE PROCEDURE public.upg_drain()
LANGUAGE plpgsql
AS $$
BEGIN
	WHILE oms_run_sagas() > 0 LOOP
		COMMIT;
	END LOOP;
END;
$$;

SELECT count(oms_set_stock(sku, 1000)) AS skus FROM (VALUES ('UPG-A'), ('UPG-B')) AS s (sku);

-- Every order: two lines, and an idempotency key so oms.idempotency_keys has rows too.
SELECT count(oms_create_order(customer_id,
		'[{"sku": "UPG-A", "quantity": 2, "unit_price": 1250}, {"sku": "UPG-B", "quantity": 1, "unit_price": 999}]',
		'EUR', idempotency_key => 'create-' || customer_id, metadata => '{"test": "upgrade"}'))
FROM public.upgrade_expect;

-- ------------------------------------------------- settled before the update
SELECT oms_cancel_order(public.upg_id('upg-canceled'), 'changed my mind') ->> 'status';
SELECT oms_pay_order(public.upg_id(c), 'test_ok', idempotency_key => 'pay-' || c) ->> 'status'
FROM unnest(ARRAY['upg-confirmed', 'upg-partial', 'upg-refunded', 'upg-refund-partial', 'upg-refund-full']) AS c;
SELECT oms_pay_order(public.upg_id('upg-failed'), 'test_decline') ->> 'status';
SELECT oms_pay_order(public.upg_id('upg-canceled-saga'), 'test_hang') ->> 'status';
CALL public.upg_drain();
SELECT oms_refund_order(public.upg_id('upg-partial'), 100, 'damaged box', idempotency_key => 'refund-upg-partial') ->> 'status';
SELECT oms_refund_order(public.upg_id('upg-refunded')) ->> 'status';
SELECT oms_cancel_order(public.upg_id('upg-canceled-saga')) ->> 'status';
CALL public.upg_drain();

-- ---------------------------------------------------- in flight at the update
-- Charges that fail once (retry in oms.retry_base) or never answer (wait
-- for oms.step_timeout).
SELECT oms_pay_order(public.upg_id(c), 'test_flaky') ->> 'status'
FROM unnest(ARRAY['upg-flaky', 'upg-compensating']) AS c;
SELECT oms_pay_order(public.upg_id(c), 'test_hang') ->> 'status'
FROM unnest(ARRAY['upg-hang', 'upg-cancel-requested']) AS c;
CALL public.upg_drain();
-- Canceled while waiting to retry: compensation starts, and its void fails
-- once too, so the saga is left compensating.
SELECT oms_cancel_order(public.upg_id('upg-compensating')) ->> 'status';
CALL public.upg_drain();
-- From here on nothing runs: these wait for the worker.
SELECT oms_cancel_order(public.upg_id('upg-cancel-requested'), 'too slow') ->> 'status';
SELECT oms_pay_order(public.upg_id('upg-not-started'), 'test_ok') ->> 'status';
SELECT oms_refund_order(public.upg_id('upg-refund-partial'), 500, 'partial') ->> 'status';
SELECT oms_refund_order(public.upg_id('upg-refund-full')) ->> 'status';
