-- test/demo.sql: the walkthrough behind "make demo" (run by test/demo.sh).
-- Owns: a tour of the oms SQL API, meant to be read on screen: stock, an
-- order created, read back and replayed with its key, paid and confirmed by
-- the background worker, a declined payment and its compensation, a cancel
-- while processing, a partial and a full refund, a refused transition, the
-- stock levels, an order's life after confirmation (stock in two locations,
-- two shipments, a return, a canceled line), the saga metrics, every event
-- as Kafka has it, read back with kcat, and the relay's status; at the end one order paid
-- through the remote payment provider over Kafka (oms.payment_provider =
-- 'kafka': the charge command on oms.payment-commands, the test payment
-- service's reply on oms.payment-replies, consumed into oms.inbox); then a
-- traced request whose traceparent reaches the Kafka headers, and the
-- operator's view: oms_health(), oms_metrics(), the analytics views and a
-- maintenance run.  Order ids travel in
-- psql variables.  The worker serves this database and its relay publishes
-- to a mock Kafka cluster (test/demo.sh starts the cluster with
-- oms.database_name = 'oms_demo' and oms.kafka_brokers set, and exports
-- OMS_KAFKA_BOOTSTRAP, which the kcat command below reads); the demo waits
-- for the worker and the relay by polling with a deadline, never with a
-- fixed sleep.

\set SHOW_CONTEXT never

-- Plumbing, not echoed: three waits with a deadline.  Each polls every 20 ms
-- (every statement of a volatile function sees the latest commits) and
-- fails the demo when the deadline passes, so a worker that does not work
-- stops "make demo" with an error instead of hanging.
\set ECHO none
CREATE FUNCTION pg_temp.wait_for_worker(p_timeout interval DEFAULT '30s')
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
	v_deadline timestamptz := clock_timestamp() + p_timeout;
BEGIN
	LOOP
		IF EXISTS (SELECT FROM oms_worker_status() AS w
				   WHERE w.database = current_database() AND w.alive) THEN
			RETURN 'the oms worker of ' || current_database() || ' is running';
		END IF;
		IF clock_timestamp() > v_deadline THEN
			RAISE EXCEPTION 'demo: no oms worker for database % within %', current_database(), p_timeout
				USING HINT = 'Check oms.database_name and the server log.';
		END IF;
		PERFORM pg_sleep(0.02);
	END LOOP;
END;
$$;

-- Waits until the order has status p_what, or a timeline entry of that type.
CREATE FUNCTION pg_temp.wait_for(p_order uuid, p_what text, p_timeout interval DEFAULT '30s')
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
	v_start timestamptz := clock_timestamp();
BEGIN
	LOOP
		IF EXISTS (SELECT FROM oms.orders AS o WHERE o.id = p_order AND o.status::text = p_what)
		   OR EXISTS (SELECT FROM oms.order_events AS e WHERE e.order_id = p_order AND e.event_type = p_what) THEN
			RETURN format('%s after %s ms', p_what,
						  round(extract(epoch FROM clock_timestamp() - v_start) * 1000));
		END IF;
		IF clock_timestamp() > v_start + p_timeout THEN
			RAISE EXCEPTION 'demo: order % did not reach "%" within %', p_order, p_what, p_timeout
				USING HINT = 'Look at SELECT * FROM oms_worker_status() and the server log.';
		END IF;
		PERFORM pg_sleep(0.02);
	END LOOP;
END;
$$;

-- Waits until the relay has published every event to Kafka: it deletes an
-- outbox row once Kafka acknowledged it, so an empty outbox means every
-- event committed so far is on the topic.
CREATE FUNCTION pg_temp.wait_for_relay(p_timeout interval DEFAULT '30s')
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
	v_start timestamptz := clock_timestamp();
BEGIN
	IF NOT (oms_relay_status() ->> 'enabled')::boolean THEN
		RAISE EXCEPTION 'demo: the outbox relay is off'
			USING HINT = 'test/demo.sh sets oms.kafka_brokers; check the server configuration.';
	END IF;
	LOOP
		IF NOT EXISTS (SELECT FROM oms.outbox) THEN
			RETURN format('outbox empty after %s ms',
						  round(extract(epoch FROM clock_timestamp() - v_start) * 1000));
		END IF;
		IF clock_timestamp() > v_start + p_timeout THEN
			RAISE EXCEPTION 'demo: the relay did not publish the outbox within %', p_timeout
				USING DETAIL = 'oms_relay_status(): ' || oms_relay_status()::text,
					  HINT = 'Look at the server log and oms.outbox.last_error.';
		END IF;
		PERFORM pg_sleep(0.02);
	END LOOP;
END;
$$;

-- Waits until the worker consumes the payment replies topic, which it does
-- once it has reloaded oms.payment_provider = 'kafka'.
CREATE FUNCTION pg_temp.wait_for_inbox(p_timeout interval DEFAULT '30s')
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
	v_start timestamptz := clock_timestamp();
BEGIN
	LOOP
		IF oms._inbox_shmem_status() ->> 'consumer' = 'running' THEN
			RETURN format('the worker consumes the replies topic after %s ms',
						  round(extract(epoch FROM clock_timestamp() - v_start) * 1000));
		END IF;
		IF clock_timestamp() > v_start + p_timeout THEN
			RAISE EXCEPTION 'demo: the worker does not consume the payment replies within %', p_timeout
				USING DETAIL = 'oms._inbox_shmem_status(): ' || oms._inbox_shmem_status()::text,
					  HINT = 'Look at the server log.';
		END IF;
		PERFORM pg_sleep(0.02);
	END LOOP;
END;
$$;

-- Waits until every saga of the order has finished (refund sagas included).
CREATE FUNCTION pg_temp.wait_for_sagas(p_order uuid, p_timeout interval DEFAULT '30s')
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
	v_start timestamptz := clock_timestamp();
BEGIN
	LOOP
		IF NOT EXISTS (SELECT FROM oms.sagas AS s
					   WHERE s.order_id = p_order AND s.status IN ('running', 'compensating')) THEN
			RETURN format('its sagas finished after %s ms',
						  round(extract(epoch FROM clock_timestamp() - v_start) * 1000));
		END IF;
		IF clock_timestamp() > v_start + p_timeout THEN
			RAISE EXCEPTION 'demo: the sagas of order % did not finish within %', p_order, p_timeout
				USING HINT = 'Look at SELECT * FROM oms.sagas and the server log.';
		END IF;
		PERFORM pg_sleep(0.02);
	END LOOP;
END;
$$;

-- Kafka records as kcat prints them with -f '%p\t%o\t%k\t%h\n'
-- (partition, offset, key, headers as name=value,name=value,...).
CREATE TABLE pg_temp.kafka_records (
	partition	integer,
	"offset"	bigint,
	key			text,
	headers		text
);
CREATE TEMPORARY VIEW kafka_events AS
	SELECT r.partition, r."offset", r.key,
		   substring(r.headers FROM 'ce_omsseq=([0-9]+)')::bigint AS ce_omsseq,
		   substring(r.headers FROM 'ce_type=([^,]+)') AS ce_type,
		   r.headers
	FROM pg_temp.kafka_records AS r;

-- True when the records are the events of the timelines (the entries with a
-- status: status moves, shipments, returns, canceled lines), each once
-- (key, ce_omsseq and ce_type), and every order's records share a partition.
CREATE FUNCTION pg_temp.kafka_matches_timelines()
RETURNS boolean
LANGUAGE sql
AS $$
	WITH kafka AS (
		SELECT k.key::uuid AS order_id, k.ce_omsseq AS seq, k.ce_type AS type FROM pg_temp.kafka_events AS k
	), timeline AS (
		SELECT e.order_id, row_number() OVER (PARTITION BY e.order_id ORDER BY e.seq) AS seq,
			   'oms.' || e.event_type AS type
		FROM oms.order_events AS e WHERE e.to_status IS NOT NULL
	)
	SELECT NOT EXISTS (SELECT * FROM kafka EXCEPT ALL SELECT * FROM timeline)
	   AND NOT EXISTS (SELECT * FROM timeline EXCEPT ALL SELECT * FROM kafka)
	   AND NOT EXISTS (SELECT FROM pg_temp.kafka_events AS k GROUP BY k.key HAVING count(DISTINCT k.partition) > 1);
$$;
\set ECHO queries

\echo
\echo '== 1. The background worker of this database, and its outbox relay to Kafka =='
SELECT pg_temp.wait_for_worker() AS worker;
SELECT database, alive, loops, last_error FROM oms_worker_status();
SELECT s ->> 'enabled' AS relay_enabled, s ->> 'brokers' AS brokers, s ->> 'topic' AS topic
FROM oms_relay_status() AS s;

\echo
\echo '== 2. Stock: three SKUs (an order can only be paid for SKUs with stock) =='
SELECT oms_set_stock('SKU-1', 10) - 'updated_at' AS sku1;
SELECT oms_set_stock('SKU-2', 5) - 'updated_at' AS sku2;
SELECT oms_set_stock('SKU-3', 20) - 'updated_at' AS sku3;

\echo
\echo '== 3. Create an order with three items (idempotency key demo-key-1) =='
SELECT o->>'order_id' AS order1, o->>'status' AS status1, o->>'total' AS total1
FROM oms_create_order(
	'cust-42',
	'[{"sku": "SKU-1", "quantity": 2, "unit_price": 1999},
	  {"sku": "SKU-2", "quantity": 1, "unit_price": 4999},
	  {"sku": "SKU-3", "quantity": 3, "unit_price": 250}]',
	'USD',
	'demo-key-1') AS o \gset
\echo 'created order' :order1 'status' :status1 'total' :total1 '(minor units, USD cents)'
\echo 'the order.created event was written to oms.outbox in the same transaction; the commit woke'
\echo 'the worker, whose relay publishes it to Kafka and deletes it from the outbox once acknowledged'
\echo '(the first event of a new producer waits about a second for the topic''s metadata; see section 6):'
SELECT pg_temp.wait_for_relay() AS waited;

\echo
\echo '== 4. Read it back: oms_get_order returns the whole order document =='
-- Unaligned, no header: the pretty JSON reads as plain text.
\pset format unaligned
\pset tuples_only on
SELECT pg_catalog.jsonb_pretty(oms_get_order(:'order1'));
\pset format aligned
\pset tuples_only off

\echo
\echo '== 5. Replay the same call with the same idempotency key: same order, no second one =='
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
\echo '== 6. Pay it with test_ok: the order is processing, the fulfilment saga starts =='
SELECT p->>'status' AS status, p->>'version' AS version
FROM oms_pay_order(:'order1', 'test_ok', 'demo-pay-1') AS p;
\echo 'the worker was woken when that call committed; wait for it to confirm the order:'
SELECT pg_temp.wait_for(:'order1', 'confirmed') AS waited;
\echo 'and its events order.processing and order.confirmed are in Kafka within milliseconds:'
SELECT pg_temp.wait_for_relay() AS waited;

\echo
\echo '== 7. Timeline of the confirmed order: reserve, pay, confirm =='
SELECT seq, event_type, from_status, to_status, data - 'saga_id' AS data
FROM oms_order_timeline(:'order1');
SELECT method, amount, captured, status, provider_reference FROM oms.payments WHERE order_id = :'order1';
SELECT sku, quantity, status, expires_at FROM oms.reservations WHERE order_id = :'order1' ORDER BY sku;

\echo
\echo '== 8. A confirmed order cannot be canceled (confirm is the point of no return) =='
-- Let this one error through, then show what the client saw.
\set ON_ERROR_STOP 0
SELECT oms_cancel_order(:'order1', 'too late');
\set ON_ERROR_STOP 1
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate, :'LAST_ERROR_MESSAGE' AS message;
-- Plumbing for the check below; not worth echoing.
\set ECHO none
SELECT :'LAST_ERROR_SQLSTATE' = '55000' AS refused_ok \gset
\set ECHO queries
\if :refused_ok
\echo 'refused with SQLSTATE 55000 (object_not_in_prerequisite_state); the order is unchanged:'
SELECT id, status, version FROM oms.orders WHERE id = :'order1';
\else
-- The demo doubles as a smoke test: an accepted cancel is a bug.
DO $$ BEGIN RAISE EXCEPTION 'demo: expected the cancel of a confirmed order to fail with SQLSTATE 55000'; END $$;
\endif

\echo
\echo '== 9. A declined payment (test_decline): the saga fails and compensates =='
SELECT o->>'order_id' AS order2
FROM oms_create_order('cust-7', '[{"sku": "SKU-1", "quantity": 1, "unit_price": 1999}]') AS o \gset
SELECT oms_pay_order(:'order2', 'test_decline')->>'status' AS status;
SELECT pg_temp.wait_for(:'order2', 'failed') AS waited;
\echo 'reserve succeeded, pay was declined, so the reservation is released (compensation):'
SELECT seq, event_type, from_status, to_status, data->>'step' AS step,
	coalesce(data->'error'->>'message', data->>'outcome') AS error_or_outcome
FROM oms_order_timeline(:'order2');
SELECT sku, quantity, status FROM oms.reservations WHERE order_id = :'order2';
SELECT kind, step, error->>'sqlstate' AS sqlstate, error->>'message' AS message
FROM oms.dead_letters WHERE order_id = :'order2';

\echo
\echo '== 10. Cancel while processing: test_hang never answers, so the pay step waits =='
SELECT o->>'order_id' AS order3
FROM oms_create_order('cust-9', '[{"sku": "SKU-2", "quantity": 2, "unit_price": 4999}]') AS o \gset
SELECT oms_pay_order(:'order3', 'test_hang')->>'status' AS status;
SELECT pg_temp.wait_for(:'order3', 'saga.step_waiting') AS waited;
SELECT c->>'status' AS status
FROM oms_cancel_order(:'order3', 'customer changed mind') AS c;
\echo 'cancel_requested: the saga stops at once, voids the payment and releases the stock:'
SELECT pg_temp.wait_for(:'order3', 'canceled') AS waited;
SELECT seq, event_type, from_status, to_status, data->>'step' AS step
FROM oms_order_timeline(:'order3');
SELECT status, captured FROM oms.payments WHERE order_id = :'order3';

\echo
\echo '== 11. Refunds of the confirmed order: 10.00 USD, then the rest =='
SELECT r->>'status' AS order_status, r->'refund'->>'amount' AS refund_amount
FROM oms_refund_order(:'order1', 1000, 'damaged box') AS r;
SELECT pg_temp.wait_for(:'order1', 'partially_refunded') AS waited;
SELECT r->>'status' AS order_status, r->'refund'->>'amount' AS refund_amount
FROM oms_refund_order(:'order1') AS r;
SELECT pg_temp.wait_for(:'order1', 'refunded') AS waited;
SELECT amount, reason, status FROM oms.refunds WHERE order_id = :'order1' ORDER BY created_at;
SELECT amount, captured, refunded, status FROM oms.payments WHERE order_id = :'order1';

\echo
\echo '== 12. Stock levels: the full refund put order 1''s units back; the others released theirs =='
SELECT sku, on_hand, reserved, available FROM oms.stock_levels ORDER BY sku;

\echo
\echo '== 13. The rest of an order''s life: two locations, two shipments, a return, a cancel =='
\echo 'two warehouses; east is preferred (priority 0). No single one holds the whole basket,'
\echo 'so the reservation is split across them:'
SELECT l ->> 'code' AS location, l ->> 'priority' AS priority
FROM (VALUES (oms_set_location('east', 'East warehouse', 0)), (oms_set_location('west', 'West warehouse', 1))) AS v(l);
SELECT sku, location, on_hand FROM (VALUES
	(oms_set_stock('MUG-1', 2, 'east')), (oms_set_stock('MUG-1', 5, 'west')),
	(oms_set_stock('TEA-1', 5, 'east')), (oms_set_stock('SPOON-1', 5, 'west'))) AS v(l),
	LATERAL jsonb_to_record(l) AS x(sku text, location text, on_hand bigint);
SELECT oms_create_order('cust-life', '[{"sku": "MUG-1", "quantity": 3, "unit_price": 1200},
	{"sku": "TEA-1", "quantity": 2, "unit_price": 800}, {"sku": "SPOON-1", "quantity": 1, "unit_price": 300}]')
	->> 'order_id' AS life \gset
SELECT oms_pay_order(:'life', 'test_ok') ->> 'status' AS status;
SELECT pg_temp.wait_for(:'life', 'confirmed') AS waited;
SELECT sku, location, quantity FROM oms.reservations WHERE order_id = :'life' ORDER BY sku, location;
\echo 'shipment 1 from east (everything east holds for it), handed to DHL and delivered:'
SELECT oms_create_shipment(:'life', location => 'east', carrier => 'DHL') -> 'shipment' ->> 'shipment_id' AS ship1 \gset
SELECT d -> 'shipment' ->> 'status' AS shipment, d ->> 'fulfillment_status' AS fulfillment
FROM oms_ship(:'ship1', tracking_number => 'DHL-0001') AS d;
SELECT d -> 'shipment' ->> 'status' AS shipment, d ->> 'fulfillment_status' AS fulfillment
FROM oms_mark_delivered(:'ship1') AS d;
\echo 'shipment 2 from west: one mug, on its way:'
SELECT oms_create_shipment(:'life', '[{"sku": "MUG-1", "quantity": 1}]', 'west', 'UPS', 'UPS-0002')
	-> 'shipment' ->> 'shipment_id' AS ship2 \gset
SELECT d -> 'shipment' ->> 'status' AS shipment, d ->> 'fulfillment_status' AS fulfillment
FROM oms_ship(:'ship2') AS d;
\echo 'a return of one delivered tea, received back into east and refunded by the refund saga:'
SELECT oms_request_return(:'life', 'arrived damaged', '[{"sku": "TEA-1", "quantity": 1}]') -> 'return' ->> 'return_id' AS rma \gset
SELECT d -> 'return' ->> 'status' AS return_status, d -> 'return' -> 'refund' ->> 'amount' AS refund
FROM oms_receive_return(:'rma', 'east') AS d;
SELECT pg_temp.wait_for_sagas(:'life') AS waited;
\echo 'the spoon has not shipped: cancel it; its unit goes back to west and is refunded:'
SELECT d -> 'canceled' -> 0 ->> 'sku' AS canceled, d -> 'refund' ->> 'amount' AS refund
FROM oms_cancel_items(:'life', '[{"sku": "SPOON-1", "quantity": 1}]', 'out of stock at the packer') AS d;
SELECT pg_temp.wait_for_sagas(:'life') AS waited;
\echo 'the order now: three status dimensions, and the ledger of every line:'
SELECT d ->> 'status' AS status, d ->> 'payment_status' AS payment, d ->> 'fulfillment_status' AS fulfillment
FROM oms_get_order(:'life') AS d;
SELECT line_no, sku, quantity, quantity_canceled AS canceled, quantity_shipped AS shipped,
	quantity_delivered AS delivered, quantity_returned AS returned, quantity_refunded AS refunded
FROM oms.order_items WHERE order_id = :'life' ORDER BY line_no;
SELECT captured, refunded FROM oms.payments WHERE order_id = :'life';
SELECT sku, location, on_hand, available FROM oms.location_stock_levels
WHERE sku IN ('MUG-1', 'TEA-1', 'SPOON-1') ORDER BY sku, location;
\echo 'its timeline:'
SELECT seq, event_type, to_status FROM oms_order_timeline(:'life') WHERE event_type NOT LIKE 'saga.%';

\echo
\echo '== 14. The outbox relay: every status change went to Kafka, then left the outbox =='
SELECT pg_temp.wait_for_relay() AS waited;
SELECT count(*) AS events_left_in_outbox FROM oms.outbox;
SELECT s ->> 'published_total' AS published_total, s ->> 'pending' AS pending,
	s ->> 'breaker' AS breaker, s ->> 'dead_letters' AS dead_letters
FROM oms_relay_status() AS s;

\echo
\echo '== 15. Saga metrics =='
SELECT * FROM oms.saga_metrics;
SELECT kind, step, steps, round(p50_ms::numeric, 1) AS p50_ms FROM oms.saga_step_latency ORDER BY kind, step;

\echo
\echo '== 16. The state machines: every allowed move of the order''s life, payment and fulfillment, a shipment and a return =='
SELECT machine, from_status, to_status, event FROM oms.status_transitions;

\echo
\echo '== 17. The events in Kafka, read back by an independent consumer (kcat) =='
\echo 'the whole topic, read with kcat into a temporary table (partition, offset, key, headers):'
\echo '\\copy pg_temp.kafka_records FROM PROGRAM ''kcat -C -b "$OMS_KAFKA_BOOTSTRAP" -t oms.order-events -o beginning -e -q -f ''''%p\\t%o\\t%k\\t%h\\n'''''''
-- Not echoed: psql would print the COPY ... FROM STDIN it sends instead.
\set ECHO none
\copy pg_temp.kafka_records FROM PROGRAM 'kcat -C -b "$OMS_KAFKA_BOOTSTRAP" -t oms.order-events -o beginning -e -q -f ''%p\t%o\t%k\t%h\n'''
\set ECHO queries
\echo 'one record per change (a status move, a shipment, a return); key = order id, so each order stays in one partition, in ce_omsseq order:'
SELECT o.customer_id AS customer, k.key, k.ce_omsseq, k.ce_type, k.partition, k."offset"
FROM pg_temp.kafka_events AS k LEFT JOIN oms.orders AS o ON o.id::text = k.key
ORDER BY o.created_at, k.ce_omsseq;
\echo 'the headers of the first record of order 1 (CloudEvents, Kafka binary mode; the value is the payload):'
SELECT split_part(h, '=', 1) AS header, substr(h, length(split_part(h, '=', 1)) + 2) AS value
FROM pg_temp.kafka_events AS k, regexp_split_to_table(k.headers, ',') AS h
WHERE k.key = :'order1' AND k.ce_omsseq = 1;
\echo 'Kafka holds exactly the events of the timelines, once each, each order in one partition:'
SELECT count(*) AS records, count(DISTINCT key) AS orders, pg_temp.kafka_matches_timelines() AS matches_timelines
FROM pg_temp.kafka_events;
-- The demo doubles as a smoke test of the relay; plumbing, not echoed.
\set ECHO none
SELECT pg_temp.kafka_matches_timelines() AS kafka_ok \gset
\set ECHO queries
\if :kafka_ok
\else
DO $$ BEGIN RAISE EXCEPTION 'demo: the records in Kafka differ from the events in the timelines'; END $$;
\endif

\echo
\echo '== 18. The relay''s status =='
\pset format unaligned
\pset tuples_only on
SELECT pg_catalog.jsonb_pretty(oms_relay_status());
\pset format aligned
\pset tuples_only off

\echo
\echo '== 19. Pay through the remote payment provider over Kafka =='
\echo 'so far the test provider answered in the worker itself; now the worker and this session'
\echo 'switch to oms.payment_provider = kafka: the charge becomes a command on oms.payment-commands,'
\echo 'the test payment service (test/payment/service.py) answers on oms.payment-replies, and the'
\echo 'worker consumes the reply into oms.inbox and applies it once:'
ALTER SYSTEM SET oms.payment_provider = 'kafka';
SELECT pg_reload_conf();
SET oms.payment_provider = 'kafka';
SHOW oms.payment_provider;
SELECT pg_temp.wait_for_inbox() AS waited;
SELECT o->>'order_id' AS order4
FROM oms_create_order('cust-77', '[{"sku": "SKU-3", "quantity": 4, "unit_price": 250}]', 'USD', 'demo-key-4') AS o \gset
SELECT p->>'status' AS status
FROM oms_pay_order(:'order4', 'test_ok', 'demo-pay-4') AS p;
\echo 'the worker reserves, sends the charge, and waits for the reply (bounded polling):'
SELECT pg_temp.wait_for(:'order4', 'confirmed') AS waited;
SELECT pg_temp.wait_for_relay() AS waited;
\echo 'the command the worker sent, as recorded, and as it is on oms.payment-commands (kcat: key, headers, value):'
SELECT correlation_id, command, sent_at FROM oms.payment_commands WHERE order_id = :'order4';
\! kcat -C -b "$OMS_KAFKA_BOOTSTRAP" -t oms.payment-commands -o beginning -e -q -f 'partition %p offset %o key %k\nheaders %h\nvalue %s\n'
\echo 'the service''s reply on oms.payment-replies (kcat):'
\! kcat -C -b "$OMS_KAFKA_BOOTSTRAP" -t oms.payment-replies -o beginning -e -q -f 'partition %p offset %o key %k\nheaders %h\nvalue %s\n'
\echo 'the reply in the inbox, applied once, keyed by its message id (ce_id):'
SELECT message_id, correlation_id, outcome, result, received_at FROM oms.inbox
WHERE correlation_id IN (SELECT correlation_id FROM oms.payment_commands WHERE order_id = :'order4');
\echo 'the timeline: the pay step waits for the provider, payment.reply records its answer:'
SELECT seq, event_type, from_status, to_status, data - 'saga_id' AS data
FROM oms_order_timeline(:'order4');
SELECT id, status, version FROM oms.orders WHERE id = :'order4';
SELECT method, amount, captured, status, provider_reference FROM oms.payments WHERE order_id = :'order4';
-- The demo doubles as a smoke test of the remote provider; plumbing, not echoed.
\set ECHO none
SELECT EXISTS (SELECT FROM oms.orders WHERE id = :'order4' AND status = 'confirmed')
   AND EXISTS (SELECT FROM oms.order_events WHERE order_id = :'order4' AND event_type = 'payment.reply')
   AND EXISTS (SELECT FROM oms.inbox AS i JOIN oms.payment_commands AS c USING (correlation_id)
			   WHERE c.order_id = :'order4' AND i.result = 'applied') AS remote_ok \gset
\set ECHO queries
\if :remote_ok
\else
DO $$ BEGIN RAISE EXCEPTION 'demo: the order paid through Kafka is not confirmed by an applied reply'; END $$;
\endif
-- Back to the server default for the next run of this cluster (plumbing).
\set ECHO none
ALTER SYSTEM RESET oms.payment_provider;
SELECT pg_reload_conf() \g /dev/null
RESET oms.payment_provider;
\set ECHO queries

\echo
\echo '== 20. A traced request =='
\echo 'the caller passes its W3C trace context with SET LOCAL oms.traceparent; oms stores it on the'
\echo 'timeline and sends it as the traceparent header of every event the request causes, including'
\echo 'those the worker publishes later for the same saga:'
BEGIN;
SET LOCAL oms.traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
SELECT o->>'order_id' AS order5
FROM oms_create_order('cust-88', '[{"sku": "SKU-1", "quantity": 1, "unit_price": 1999}]', 'USD', 'demo-key-5') AS o \gset
SELECT p->>'status' AS status FROM oms_pay_order(:'order5', 'test_ok', 'demo-pay-5') AS p;
COMMIT;
SELECT pg_temp.wait_for(:'order5', 'confirmed') AS waited;
SELECT pg_temp.wait_for_relay() AS waited;
SELECT seq, event_type, traceparent FROM oms_order_timeline(:'order5');
\echo 'the same order''s records in Kafka, with their traceparent header (kcat):'
\set ECHO none
TRUNCATE pg_temp.kafka_records;
\copy pg_temp.kafka_records FROM PROGRAM 'kcat -C -b "$OMS_KAFKA_BOOTSTRAP" -t oms.order-events -o beginning -e -q -f ''%p\t%o\t%k\t%h\n'''
\set ECHO queries
SELECT k.ce_omsseq, k.ce_type, substring(k.headers FROM 'traceparent=([^,]+)') AS traceparent
FROM pg_temp.kafka_events AS k WHERE k.key = :'order5' ORDER BY k.ce_omsseq;
\echo 'an invalid trace context is refused when it is set (22023), before anything is written:'
\set ON_ERROR_STOP off
SET oms.traceparent = '00-not-a-trace-01';
\set ON_ERROR_STOP on

\echo
\echo '== 21. Operating it: health, metrics, reports, maintenance =='
\echo 'oms_health(): ok, degraded or down, with the reasons (a load balancer polls it):'
SELECT h->>'status' AS status, h->'reasons' AS reasons, h->'outbox'->>'pending' AS outbox_pending
FROM oms_health() AS h;
\echo 'oms_metrics() is the Prometheus text format; a few of its series:'
SELECT line FROM regexp_split_to_table(oms_metrics(), E'\n') AS line
WHERE line ~ '^oms_(orders_by_status|saga_outcomes_total|relay_published_events_total|worker_up)';
\echo 'revenue per day and currency, net of refunds, and saga durations:'
SELECT * FROM oms.revenue_daily;
SELECT * FROM oms.saga_durations;
\echo 'maintenance (the worker runs it every oms.maintenance_interval, or pg_cron with oms_schedule_maintenance()):'
SELECT jsonb_pretty(oms_run_maintenance());

\echo
\echo 'demo finished'
