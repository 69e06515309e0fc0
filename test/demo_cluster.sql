-- test/demo_cluster.sql: the walkthrough behind "make demo-cluster" (run on
-- the router database by test/demo_cluster.sh).
-- Owns: a tour of oms as a cluster, meant to be read on screen, every call
-- made through the router: the shards and their partitions, SKUs homed on
-- each shard, orders created with idempotency keys (each lands on the
-- shard of its key's partition) and a retried create, a basket of SKUs
-- homed on two other shards paid and confirmed by the workers, an order
-- canceled while its units are held on other shards, the merged reads
-- (oms_health, oms_customer_orders, oms.stock_levels), and every event read
-- back from Kafka with kcat, per order, checked: ce_omsseq 1..n without
-- gaps, in offset order, in one Kafka partition.  The waits poll with a
-- deadline, never with a fixed sleep; a failed check stops the demo with
-- an error.  The psql variable partitions is P, the cluster's partition
-- count (test/demo_cluster.sh passes it).

\set SHOW_CONTEXT never

-- Plumbing, not echoed: the shard map and the waits.
\set ECHO none

-- The shards as the router sees them: each shard's number (from its own
-- oms_health document), its partitions and its database (from the
-- oms_cluster server's connect strings).
CREATE TABLE pg_temp.shard_map (
	shard		integer PRIMARY KEY,
	partitions	integer[] NOT NULL,
	database	text NOT NULL
);
INSERT INTO pg_temp.shard_map
SELECT (s ->> 'shard')::integer,
	   ARRAY(SELECT pg_catalog.jsonb_array_elements_text(s -> 'partitions')::integer),
	   (SELECT substring(opt FROM 'dbname=(\S+)') FROM pg_foreign_server AS f, unnest(f.srvoptions) AS opt
		WHERE f.srvname = 'oms_cluster' AND opt LIKE 'p' || (s -> 'partitions' ->> 0) || '=%')
FROM jsonb_array_elements(oms_health() -> 'shards') AS s;

-- The shard serving partition p & (P - 1).
CREATE FUNCTION pg_temp.shard_of(p integer)
RETURNS integer
LANGUAGE sql STABLE
AS $$
	SELECT m.shard FROM pg_temp.shard_map AS m
	WHERE p & ((SELECT sum(cardinality(x.partitions)) FROM pg_temp.shard_map AS x)::integer - 1) = ANY (m.partitions);
$$;

-- The first name prefix-1, prefix-2, ... whose partition (a key's, a
-- SKU's) belongs to the shard.
CREATE FUNCTION pg_temp.name_on(prefix text, p_shard integer)
RETURNS text
LANGUAGE sql STABLE
AS $$
	SELECT prefix || '-' || i FROM generate_series(1, 1000) AS i
	WHERE pg_temp.shard_of(oms.partition_of_text(prefix || '-' || i)) = p_shard
	ORDER BY i LIMIT 1;
$$;

-- The orders of the demo, by a name to show, with what their create
-- returned.
CREATE TABLE pg_temp.demo_orders (
	name		text PRIMARY KEY,
	created_doc	jsonb NOT NULL,
	order_id	uuid GENERATED ALWAYS AS ((created_doc ->> 'order_id')::uuid) STORED UNIQUE,
	created		integer GENERATED ALWAYS AS IDENTITY
);

-- Waits until the order, read through the router, has status p_what or a
-- timeline entry of that type.  Polls every 20 ms; fails after p_timeout.
CREATE FUNCTION pg_temp.wait_for(p_order uuid, p_what text, p_timeout interval DEFAULT '30s')
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
	v_start timestamptz := clock_timestamp();
BEGIN
	LOOP
		IF oms_get_order(p_order) ->> 'status' = p_what
		   OR EXISTS (SELECT FROM oms_order_timeline(p_order) AS e WHERE e.event_type = p_what) THEN
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

-- Waits until every shard's worker runs.
CREATE FUNCTION pg_temp.wait_for_workers(p_timeout interval DEFAULT '30s')
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
	v_start timestamptz := clock_timestamp();
BEGIN
	LOOP
		IF (SELECT count(DISTINCT w.database) FROM oms_worker_status() AS w WHERE w.alive)
		   = (SELECT count(*) FROM pg_temp.shard_map) THEN
			RETURN format('a worker runs on every shard after %s ms',
						  round(extract(epoch FROM clock_timestamp() - v_start) * 1000));
		END IF;
		IF clock_timestamp() > v_start + p_timeout THEN
			RAISE EXCEPTION 'demo: not every shard has a running oms worker within %', p_timeout
				USING HINT = 'Check oms.database_name and the server log.';
		END IF;
		PERFORM pg_sleep(0.02);
	END LOOP;
END;
$$;

-- Waits until every shard's relay has published its outbox: a row leaves
-- the outbox once Kafka acknowledged it, so nothing pending anywhere means
-- every event committed so far is on the topic.
CREATE FUNCTION pg_temp.wait_for_relays(p_timeout interval DEFAULT '30s')
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
	v_start timestamptz := clock_timestamp();
BEGIN
	LOOP
		IF (oms_relay_status() ->> 'pending')::bigint = 0 THEN
			RETURN format('every shard''s outbox is empty after %s ms',
						  round(extract(epoch FROM clock_timestamp() - v_start) * 1000));
		END IF;
		IF clock_timestamp() > v_start + p_timeout THEN
			RAISE EXCEPTION 'demo: the relays did not publish their outboxes within %', p_timeout
				USING DETAIL = 'oms_relay_status(): ' || oms_relay_status()::text,
					  HINT = 'Look at the server log.';
		END IF;
		PERFORM pg_sleep(0.02);
	END LOOP;
END;
$$;

-- Stops the demo when a check is false.
CREATE FUNCTION pg_temp.verify(p_ok boolean, p_what text)
RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
	IF p_ok IS NOT TRUE THEN
		RAISE EXCEPTION 'demo: check failed: %', p_what;
	END IF;
	RETURN 'ok: ' || p_what;
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
		   substring(r.headers FROM 'ce_type=([^,]+)') AS ce_type
	FROM pg_temp.kafka_records AS r;

-- Per order in Kafka: its records in offset order must carry ce_omsseq
-- 1, 2, ..., n, all in one partition, and n must be the number of entries
-- with a status in its timeline (read through the router).
CREATE TEMPORARY VIEW kafka_per_order AS
	SELECT a.key, a.records, a.kafka_partitions, a.seqs,
		   a.seqs = ARRAY(SELECT generate_series(1::bigint, a.records)) AS gapless_in_order,
		   (SELECT count(*) FROM oms_order_timeline(a.key::uuid) AS e WHERE e.to_status IS NOT NULL) AS timeline_events
	FROM (SELECT k.key, count(*) AS records, count(DISTINCT k.partition) AS kafka_partitions,
				 array_agg(k.ce_omsseq ORDER BY k.partition, k."offset") AS seqs
		  FROM kafka_events AS k
		  GROUP BY k.key) AS a;
\set ECHO queries

\echo
\echo '== 1. The cluster: one router database (this one) and three shard databases =='
\echo 'the router has no orders, only the oms_* functions, each routed by PL/Proxy to the shard'
\echo 'that owns the data; P = 16 partitions, dealt to the shards (partition p on shard p % 3):'
SELECT shard, database, partitions FROM pg_temp.shard_map ORDER BY shard;
\echo 'each shard is an ordinary oms database served by its own worker (saga, relay), all relays'
\echo 'publishing to one Kafka topic:'
SELECT pg_temp.wait_for_workers() AS waited;
\echo '(the three shards share one server here, and each reports the workers of the whole server,'
\echo 'so the router''s union has every database three times: grouped)'
SELECT w.database, w.pid, bool_and(w.alive) AS alive
FROM oms_worker_status() AS w GROUP BY w.database, w.pid ORDER BY w.database;

\echo
\echo '== 2. SKUs homed on each shard: a SKU''s home partition is oms.partition_of_text(sku) & (P - 1) =='
\echo 'the demo picks one name per shard (the first MUG-n homed on shard 0, TEA-n on 1, PEN-n on 2):'
SELECT pg_temp.name_on('MUG', 0) AS sku0, pg_temp.name_on('TEA', 1) AS sku1, pg_temp.name_on('PEN', 2) AS sku2 \gset
\echo 'oms_set_stock through the router runs on the SKU''s home shard:'
SELECT v.sku, oms.partition_of_text(v.sku) AS hash, oms.partition_of_text(v.sku) & (:partitions - 1) AS partition,
	pg_temp.shard_of(oms.partition_of_text(v.sku)) AS home_shard, s ->> 'on_hand' AS on_hand
FROM (VALUES (:'sku0'), (:'sku1'), (:'sku2')) AS v(sku), LATERAL oms_set_stock(v.sku, 10) AS s;

\echo
\echo '== 3. Orders created through the router, with idempotency keys =='
\echo 'a create runs on the shard of oms.partition_of_text(key) & (P - 1); the shard mints an id that'
\echo 'carries that partition (oms.partition_of_id), so every later call about the order finds it:'
SELECT pg_temp.name_on('order', 0) AS key0, pg_temp.name_on('order', 1) AS key1, pg_temp.name_on('order', 2) AS key2 \gset
INSERT INTO pg_temp.demo_orders (name, created_doc)
SELECT v.name, oms_create_order('cust-demo', format('[{"sku": "%s", "quantity": 1, "unit_price": 1500}]', v.sku),
	'USD', v.key)
FROM (VALUES ('order A', :'key0', :'sku0'), ('order B', :'key1', :'sku1'), ('order C', :'key2', :'sku2')) AS v(name, key, sku)
RETURNING name, order_id;
SELECT d.name, v.key, oms.partition_of_text(v.key) & (:partitions - 1) AS key_partition,
	pg_temp.shard_of(oms.partition_of_text(v.key)) AS shard,
	d.order_id, oms.partition_of_id(d.order_id) & (:partitions - 1) AS id_partition,
	oms_get_order(d.order_id) ->> 'status' AS status
FROM pg_temp.demo_orders AS d
JOIN (VALUES ('order A', :'key0'), ('order B', :'key1'), ('order C', :'key2')) AS v(name, key) USING (name)
ORDER BY d.name;
SELECT pg_temp.verify(bool_and(pg_temp.shard_of(oms.partition_of_id(d.order_id)) = v.shard), 'each order lives on its key''s shard')
	AS checked
FROM pg_temp.demo_orders AS d
JOIN (VALUES ('order A', 0), ('order B', 1), ('order C', 2)) AS v(name, shard) USING (name);

\echo
\echo '== 4. A retried create returns the first result =='
\echo 'the same call with the same key (a client that lost the answer tries again) goes to the same'
\echo 'shard, which replays the stored answer: the same order, no second one:'
CREATE TEMPORARY TABLE retried AS
SELECT oms_create_order('cust-demo', format('[{"sku": "%s", "quantity": 1, "unit_price": 1500}]', :'sku1'),
	'USD', :'key1') AS created_doc;
SELECT v.call, v.doc ->> 'order_id' AS order_id, v.doc ->> 'status' AS status, v.doc ->> 'version' AS version,
	v.doc ->> 'created_at' AS created_at
FROM (SELECT 1, 'first', created_doc FROM pg_temp.demo_orders WHERE name = 'order B'
	  UNION ALL SELECT 2, 'retry', created_doc FROM retried) AS v(n, call, doc)
ORDER BY v.n;
SELECT pg_temp.verify(r.created_doc = d.created_doc, 'the retry returned the first result (the whole document)') AS checked
FROM retried AS r, pg_temp.demo_orders AS d WHERE d.name = 'order B';
SELECT pg_temp.verify(count(*) = 3, 'no second order was made') AS checked FROM oms_customer_orders('cust-demo');

\echo
\echo '== 5. A basket that spans shards, paid and confirmed through the router =='
\echo 'an order on shard 0 whose SKUs are homed on shards 1 and 2: its saga (run by shard 0''s worker)'
\echo 'reserves and then takes the units on their home shards, through PL/Proxy (oms_shard):'
SELECT pg_temp.name_on('basket', 0) AS basket_key \gset
INSERT INTO pg_temp.demo_orders (name, created_doc)
SELECT 'basket', oms_create_order('cust-demo',
	format('[{"sku": "%s", "quantity": 2, "unit_price": 1200}, {"sku": "%s", "quantity": 3, "unit_price": 800}]', :'sku1', :'sku2'),
	'USD', :'basket_key')
RETURNING order_id AS basket \gset
SELECT :'basket_key' AS key, pg_temp.shard_of(oms.partition_of_id(:'basket')) AS order_shard,
	i ->> 'sku' AS sku, pg_temp.shard_of(oms.partition_of_text(i ->> 'sku')) AS sku_home_shard, i ->> 'quantity' AS quantity
FROM jsonb_array_elements(oms_get_order(:'basket') -> 'items') AS i;
\echo 'stock before (oms.stock_levels through the router, summed over the shards):'
SELECT sku, pg_temp.shard_of(oms.partition_of_text(sku)) AS home_shard, on_hand, reserved, available
FROM oms.stock_levels ORDER BY home_shard;
SELECT oms_pay_order(:'basket', 'test_ok') ->> 'status' AS status;
\echo 'the workers do the rest; the demo polls the order through the router until it is confirmed:'
SELECT pg_temp.wait_for(:'basket', 'confirmed') AS waited;
SELECT seq, event_type, to_status, data ->> 'step' AS step
FROM oms_order_timeline(:'basket') ORDER BY seq;
\echo 'stock after: 2 and 3 units left the home shards of the two SKUs:'
SELECT sku, pg_temp.shard_of(oms.partition_of_text(sku)) AS home_shard, on_hand, reserved, available
FROM oms.stock_levels ORDER BY home_shard;
SELECT pg_temp.verify(
	(SELECT on_hand FROM oms.stock_levels WHERE sku = :'sku1') = 8 AND (SELECT on_hand FROM oms.stock_levels WHERE sku = :'sku2') = 7
	AND (SELECT sum(reserved) FROM oms.stock_levels) = 0, 'the basket''s units were taken on their home shards') AS checked;

\echo
\echo '== 6. One order canceled: its holds on the other shards are released =='
\echo 'an order on shard 1 with SKUs homed on shards 0 and 2, paid with test_hang (the payment never'
\echo 'answers): the saga has reserved the units on their home shards and waits:'
SELECT pg_temp.name_on('cancel', 1) AS cancel_key \gset
INSERT INTO pg_temp.demo_orders (name, created_doc)
SELECT 'canceled', oms_create_order('cust-demo',
	format('[{"sku": "%s", "quantity": 4, "unit_price": 1500}, {"sku": "%s", "quantity": 1, "unit_price": 800}]', :'sku0', :'sku2'),
	'USD', :'cancel_key')
RETURNING order_id AS canceled \gset
SELECT oms_pay_order(:'canceled', 'test_hang') ->> 'status' AS status;
SELECT pg_temp.wait_for(:'canceled', 'saga.step_waiting') AS waited;
SELECT sku, pg_temp.shard_of(oms.partition_of_text(sku)) AS home_shard, on_hand, reserved, available
FROM oms.stock_levels ORDER BY home_shard;
SELECT c ->> 'status' AS status FROM oms_cancel_order(:'canceled', 'customer changed mind') AS c;
SELECT pg_temp.wait_for(:'canceled', 'canceled') AS waited;
\echo 'the saga compensated: the holds on shards 0 and 2 are released, nothing is reserved anywhere:'
SELECT seq, event_type, to_status, data ->> 'step' AS step
FROM oms_order_timeline(:'canceled') ORDER BY seq;
SELECT sku, pg_temp.shard_of(oms.partition_of_text(sku)) AS home_shard, on_hand, reserved, available
FROM oms.stock_levels ORDER BY home_shard;
SELECT pg_temp.verify((SELECT sum(reserved) FROM oms.stock_levels) = 0
	AND (SELECT on_hand FROM oms.stock_levels WHERE sku = :'sku0') = 10, 'the canceled order holds nothing') AS checked;

\echo
\echo '== 7. Reads that span the shards, merged by the router =='
\echo 'oms_health(): the worst status of all shards, and each shard''s own document:'
SELECT h ->> 'status' AS status, h -> 'router' AS router FROM oms_health() AS h;
SELECT s ->> 'shard' AS shard, s -> 'partitions' AS partitions, s ->> 'status' AS status,
	s -> 'health' -> 'reasons' AS reasons
FROM jsonb_array_elements(oms_health() -> 'shards') AS s;
\echo 'oms_customer_orders(): one customer''s orders from every shard, newest first:'
SELECT o ->> 'order_id' AS order_id, pg_temp.shard_of(oms.partition_of_id((o ->> 'order_id')::uuid)) AS shard,
	o ->> 'status' AS status, o ->> 'payment_status' AS payment, o ->> 'total' AS total, o ->> 'currency' AS currency,
	o ->> 'created_at' AS created_at
FROM oms_customer_orders('cust-demo') AS o;
SELECT pg_temp.verify(count(DISTINCT pg_temp.shard_of(oms.partition_of_id((o ->> 'order_id')::uuid))) = 3
	AND count(*) = (SELECT count(*) FROM pg_temp.demo_orders), 'the customer''s orders come from all three shards') AS checked
FROM oms_customer_orders('cust-demo') AS o;
\echo 'oms.stock_levels: every shard''s stock in one view:'
SELECT sku, on_hand, reserved, available FROM oms.stock_levels ORDER BY sku;

\echo
\echo '== 8. Every event in Kafka, read back by an independent consumer (kcat) =='
\echo 'the three shards'' relays publish to the one topic, keyed by order id:'
SELECT pg_temp.wait_for_relays() AS waited;
\echo '\\copy pg_temp.kafka_records FROM PROGRAM ''kcat -C -b "$OMS_KAFKA_BOOTSTRAP" -t oms.order-events -o beginning -e -q -f ''''%p\\t%o\\t%k\\t%h\\n'''''''
-- Not echoed: psql would print the COPY ... FROM STDIN it sends instead.
\set ECHO none
\copy pg_temp.kafka_records FROM PROGRAM 'kcat -C -b "$OMS_KAFKA_BOOTSTRAP" -t oms.order-events -o beginning -e -q -f ''%p\t%o\t%k\t%h\n'''
\set ECHO queries
\echo 'per order, in ce_omsseq order, with the shard the order lives on and the Kafka partition:'
SELECT d.name AS demo_order, pg_temp.shard_of(oms.partition_of_id(k.key::uuid)) AS shard, k.key,
	k.ce_omsseq, k.ce_type, k.partition AS kafka_partition, k."offset"
FROM kafka_events AS k LEFT JOIN pg_temp.demo_orders AS d ON d.order_id::text = k.key
ORDER BY d.created, k.ce_omsseq;
\echo 'the checks, per order: seqs 1..n without gaps in offset order, one Kafka partition, and as many'
\echo 'records as the order''s timeline has status changes:'
SELECT d.name AS demo_order, p.records, p.seqs, p.kafka_partitions, p.gapless_in_order, p.timeline_events
FROM pg_temp.demo_orders AS d LEFT JOIN kafka_per_order AS p ON p.key = d.order_id::text
ORDER BY d.created;
SELECT pg_temp.verify(count(*) = 0,
	'every order''s events are in Kafka once each, seqs 1..n in order, in one partition'
	|| coalesce('; wrong: ' || string_agg(f.what, ', '), '')) AS checked
FROM (SELECT d.name AS what
	  FROM pg_temp.demo_orders AS d LEFT JOIN kafka_per_order AS p ON p.key = d.order_id::text
	  WHERE p.key IS NULL OR NOT p.gapless_in_order OR p.kafka_partitions <> 1 OR p.records <> p.timeline_events
	  UNION ALL
	  SELECT 'unknown key ' || p.key FROM kafka_per_order AS p
	  WHERE p.key NOT IN (SELECT d.order_id::text FROM pg_temp.demo_orders AS d)) AS f;

\echo
\echo 'cluster demo finished'
