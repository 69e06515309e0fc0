-- test/upgrade/delivery.sql: did every event reach Kafka after the update?
-- Run with psql -f, the topic as read by "kcat -C -J" (one JSON record a
-- line) on standard input, in the database test/t/040_upgrade.pl updated,
-- once the outbox is empty.  Uses public.upgrade_pending
-- (the outbox just before the update).  The expected events of an order are
-- its timeline's status changes: the outbox numbers them per order from 1,
-- in the same order (ce_omsseq).  Prints one row per check:
-- name | ok (t/f) | detail (a few offending rows when not ok).
\set ON_ERROR_STOP 1

CREATE TABLE public.upgrade_consumed (rec jsonb NOT NULL);
-- CSV with quote and delimiter characters that JSON never contains: one line, one value.
\copy public.upgrade_consumed (rec) FROM pstdin WITH (FORMAT csv, QUOTE E'\x01', DELIMITER E'\x02')

-- kcat -J gives headers as a flat [name, value, ...] list.
CREATE VIEW public.upgrade_records AS
	SELECT (c.rec ->> 'partition')::int AS part, (c.rec ->> 'offset')::bigint AS off, c.rec ->> 'key' AS key,
		   h.headers ->> 'ce_id' AS ce_id, h.headers ->> 'ce_type' AS ce_type,
		   (h.headers ->> 'ce_omsseq')::bigint AS omsseq
	FROM public.upgrade_consumed AS c,
		 LATERAL (SELECT jsonb_object_agg(c.rec -> 'headers' ->> i, c.rec -> 'headers' ->> (i + 1)) AS headers
				  FROM generate_series(0, jsonb_array_length(c.rec -> 'headers') - 2, 2) AS i) AS h;

-- The first delivery of each event (at least once: a resend is allowed).
CREATE VIEW public.upgrade_first AS
	SELECT DISTINCT ON (r.ce_id) r.* FROM public.upgrade_records AS r ORDER BY r.ce_id, r.part, r.off;

CREATE VIEW public.upgrade_expected AS
	SELECT e.order_id::text AS key, row_number() OVER (PARTITION BY e.order_id ORDER BY e.seq) AS omsseq,
		   'oms.' || e.event_type AS ce_type
	FROM oms.order_events AS e
	WHERE e.to_status IS NOT NULL;

SELECT 'every event pending in the outbox at the update was published',
	   count(*) = 0,
	   format('%s of %s missing, e.g. %s', count(*), (SELECT count(*) FROM public.upgrade_pending),
			  string_agg(format('%s #%s %s', p.aggregateid, p.seq, p.type), '; '))
FROM public.upgrade_pending AS p
WHERE NOT EXISTS (SELECT FROM public.upgrade_records AS r WHERE r.ce_id = p.id::text)

UNION ALL
SELECT 'every status change of every order is on the topic once, none missing, none unexpected',
	   count(*) = 0,
	   format('%s differences (order, ce_omsseq, ce_type, where): %s', count(*),
			  (array_agg(format('%s #%s %s %s', d.key, d.omsseq, d.ce_type, d.side)))[1:5])
FROM (
	(SELECT x.*, 'missing' AS side FROM public.upgrade_expected AS x
	 EXCEPT SELECT f.key, f.omsseq, f.ce_type, 'missing' FROM public.upgrade_first AS f)
	UNION ALL
	(SELECT f.key, f.omsseq, f.ce_type, 'unexpected' FROM public.upgrade_first AS f
	 EXCEPT SELECT x.*, 'unexpected' FROM public.upgrade_expected AS x)
) AS d

UNION ALL
SELECT 'each order''s events are in one partition, in ce_omsseq order 1, 2, ... (key = order id)',
	   count(*) = 0,
	   format('%s orders out of order (ce_omsseq@partition:offset): %s', count(*), (array_agg(o.detail))[1:5])
FROM (
	SELECT f.key || ': ' || string_agg(format('#%s@%s:%s', f.omsseq, f.part, f.off), ' ' ORDER BY f.off) AS detail
	FROM public.upgrade_first AS f
	GROUP BY f.key
	HAVING count(DISTINCT f.part) > 1
		OR min(f.omsseq) <> 1 OR max(f.omsseq) <> count(*) OR count(DISTINCT f.omsseq) <> count(*)
		OR array_agg(f.omsseq ORDER BY f.off) <> array_agg(f.omsseq ORDER BY f.omsseq)
) AS o

UNION ALL
SELECT 'the records of every order of the database were read (' || count(DISTINCT f.key) || ' orders)',
	   count(DISTINCT f.key) = (SELECT count(*) FROM oms.orders)
	   AND count(DISTINCT f.key) > 0,
	   format('orders with records %s, orders %s', count(DISTINCT f.key), (SELECT count(*) FROM oms.orders))
FROM public.upgrade_first AS f;
