-- bench/relay_latency.sql: commit -> removed latency of outbox events
-- (bench/relay.sh, part b), read from the WAL through a test_decoding slot
-- (psql -v slot=NAME -v from=TIMESTAMPTZ -v to=TIMESTAMPTZ).
--
-- For every oms.outbox row inserted while the slot existed: the commit time
-- of the inserting transaction (the order's commit) and the commit time of
-- the transaction that deleted it (the relay's settle, which runs after the
-- broker acknowledged the event).  Both are the commit records' own
-- timestamps, so neither the product nor the table is instrumented.  Only
-- events committed in [:from, :to) count.  The slot is consumed.
--
-- Result (psql -At): events|removed|p50_ms|p90_ms|p99_ms|max_ms|settles|
-- insert_to_commit_p50_ms, where settles is the number of settle
-- transactions that removed them and the last field is created_at (the
-- row's clock_timestamp()) to the order's commit, for reference.
CREATE TEMP TABLE bench_decoded AS
SELECT d.xid::text::bigint AS xid, d.data
FROM pg_catalog.pg_logical_slot_get_changes(:'slot', NULL, NULL,
	'include-xids', '0', 'include-timestamp', '1', 'skip-empty-xacts', '1') AS d
WHERE d.data LIKE 'table oms.outbox: %' OR d.data LIKE 'COMMIT %';

WITH commits AS (
	SELECT xid, substring(data FROM '\(at (.*)\)$')::timestamptz AS at
	FROM bench_decoded WHERE data LIKE 'COMMIT %'
), changes AS (
	SELECT xid, substring(data FROM '^table oms\.outbox: ([A-Z]+):') AS op,
		   substring(data FROM 'id\[uuid\]:''([0-9a-f-]{36})''')::uuid AS id,
		   substring(data FROM 'created_at\[timestamp with time zone\]:''([^'']*)''')::timestamptz AS created_at
	FROM bench_decoded WHERE data LIKE 'table oms.outbox: %'
), events AS (
	SELECT i.id, i.created_at, ic.at AS committed, dc.at AS removed, d.xid AS settle_xid,
		   EXTRACT(epoch FROM dc.at - ic.at) * 1000 AS ms
	FROM changes AS i
	JOIN commits AS ic ON ic.xid = i.xid
	LEFT JOIN changes AS d ON d.id = i.id AND d.op = 'DELETE'
	LEFT JOIN commits AS dc ON dc.xid = d.xid
	WHERE i.op = 'INSERT' AND ic.at >= :'from'::timestamptz AND ic.at < :'to'::timestamptz
)
SELECT pg_catalog.format('%s|%s|%s|%s|%s|%s|%s|%s',
	pg_catalog.count(*), pg_catalog.count(removed),
	round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
	round(percentile_cont(0.9) WITHIN GROUP (ORDER BY ms)::numeric, 1),
	round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1),
	round(pg_catalog.max(ms)::numeric, 1),
	pg_catalog.count(DISTINCT settle_xid),
	round(percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(epoch FROM committed - created_at) * 1000)::numeric, 2))
FROM events;
