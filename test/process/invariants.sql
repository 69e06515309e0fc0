-- test/process/invariants.sql: what must hold after a batch of paid
-- (test_ok) orders went through the fulfilment saga, whatever crashed on
-- the way.  Run with psql -v expected=N in a database whose orders all
-- belong to the scenario, after public.wt_stock_before recorded the stock
-- before the orders were paid.  Prints one row per check:
-- name | ok (t/f) | detail (a few offending rows when not ok).
\set ON_ERROR_STOP 1

WITH o AS (
	SELECT count(*) AS n, count(*) FILTER (WHERE status = 'confirmed') AS confirmed,
		   string_agg(DISTINCT status::text, ',') AS statuses
	FROM oms.orders
)
SELECT 'all ' || :expected || ' orders are confirmed',
	   n = :expected AND confirmed = :expected,
	   format('orders %s, confirmed %s, statuses %s', n, confirmed, statuses)
FROM o

UNION ALL
SELECT 'each order has exactly one fulfilment saga, completed once with outcome confirmed',
	   count(*) = 0,
	   string_agg(format('order %s: %s sagas, %s', order_id, sagas, states), '; ')
FROM (
	SELECT o.id AS order_id, count(s.id) AS sagas,
		   string_agg(format('%s/%s', s.status, s.outcome), ',') AS states
	FROM oms.orders AS o LEFT JOIN oms.sagas AS s ON s.order_id = o.id AND s.kind = 'fulfilment'
	GROUP BY o.id
	HAVING count(s.id) <> 1
		OR count(*) FILTER (WHERE s.status = 'completed' AND s.outcome = 'confirmed') <> 1
	LIMIT 5
) bad

UNION ALL
SELECT 'every saga step is done (reserve, pay, confirm), no dead letters',
	   (SELECT count(*) FROM oms.saga_steps WHERE status <> 'done') = 0
	   AND (SELECT count(*) FROM oms.saga_steps) = 3 * :expected
	   AND (SELECT count(*) FROM oms.dead_letters) = 0,
	   format('steps %s (not done %s), dead letters %s',
			  (SELECT count(*) FROM oms.saga_steps),
			  (SELECT count(*) FROM oms.saga_steps WHERE status <> 'done'),
			  (SELECT count(*) FROM oms.dead_letters))

UNION ALL
SELECT 'each order has exactly one order.confirmed timeline entry',
	   count(*) = 0,
	   string_agg(format('order %s: %s entries', id, c), '; ')
FROM (
	SELECT o.id, count(e.seq) AS c
	FROM oms.orders AS o
	LEFT JOIN oms.order_events AS e ON e.order_id = o.id AND e.event_type = 'order.confirmed'
	GROUP BY o.id HAVING count(e.seq) <> 1 LIMIT 5
) bad

UNION ALL
SELECT 'each order has exactly one order.confirmed outbox event',
	   count(*) = 0,
	   string_agg(format('order %s: %s events', id, c), '; ')
FROM (
	SELECT o.id, count(x.id) AS c
	FROM oms.orders AS o
	LEFT JOIN oms.outbox AS x ON x.aggregateid = o.id AND x.type = 'order.confirmed'
	GROUP BY o.id HAVING count(x.id) <> 1 LIMIT 5
) bad

UNION ALL
SELECT 'no double reservation: one consumed reservation per (order, SKU) with the ordered quantity',
	   count(*) = 0,
	   string_agg(format('order %s sku %s: ordered %s, reservations %s, reserved %s, statuses %s',
						 order_id, sku, ordered, rows, reserved, statuses), '; ')
FROM (
	SELECT coalesce(i.order_id, r.order_id) AS order_id, coalesce(i.sku, r.sku) AS sku,
		   i.ordered, r.rows, r.reserved, r.statuses
	FROM (SELECT order_id, sku, sum(quantity) AS ordered FROM oms.order_items GROUP BY 1, 2) AS i
	FULL JOIN (SELECT order_id, sku, count(*) AS rows, sum(quantity) AS reserved,
					  string_agg(status::text, ',') AS statuses
			   FROM oms.reservations GROUP BY 1, 2) AS r
		ON r.order_id = i.order_id AND r.sku = i.sku
	WHERE i.ordered IS DISTINCT FROM r.reserved OR r.rows IS DISTINCT FROM 1
	   OR r.statuses IS DISTINCT FROM 'consumed'
	LIMIT 5
) bad

UNION ALL
SELECT 'no double capture: exactly one payment per order, captured = amount = order total, once',
	   count(*) = 0,
	   string_agg(format('order %s: %s payments, total %s, amount %s, authorized %s, captured %s, refunded %s, status %s',
						 id, payments, total, amount, authorized, captured, refunded, status), '; ')
FROM (
	SELECT o.id, o.total, count(p.id) AS payments, max(p.amount) AS amount, max(p.authorized) AS authorized,
		   max(p.captured) AS captured, max(p.refunded) AS refunded, string_agg(p.status, ',') AS status
	FROM oms.orders AS o LEFT JOIN oms.payments AS p ON p.order_id = o.id
	GROUP BY o.id, o.total
	HAVING count(p.id) <> 1 OR max(p.amount) <> o.total OR max(p.captured) <> o.total
		OR max(p.authorized) <> o.total OR max(p.refunded) <> 0 OR string_agg(p.status, ',') <> 'captured'
	LIMIT 5
) bad

UNION ALL
SELECT 'stock on_hand decreased by exactly the ordered quantities',
	   count(*) = 0,
	   string_agg(format('sku %s: before %s, ordered %s, now %s', sku, before, ordered, now), '; ')
FROM (
	SELECT b.sku, b.on_hand AS before, coalesce(q.ordered, 0) AS ordered, s.on_hand AS now
	FROM public.wt_stock_before AS b
	JOIN oms.stock AS s ON s.sku = b.sku
	LEFT JOIN (SELECT sku, sum(quantity) AS ordered FROM oms.order_items GROUP BY sku) AS q ON q.sku = b.sku
	WHERE s.on_hand <> b.on_hand - coalesce(q.ordered, 0)
	LIMIT 5
) bad

UNION ALL
SELECT 'timeline and outbox sequences are gap-free per order and match the order counters',
	   count(*) = 0,
	   string_agg(format('order %s: timeline %s entries, seq %s..%s, counter %s; outbox %s events, seq %s..%s, counter %s',
						 id, te, tmin, tmax, timeline_seq, xe, xmin, xmax, event_seq), '; ')
FROM (
	SELECT o.id, o.timeline_seq, o.event_seq, t.te, t.tmin, t.tmax, x.xe, x.xmin, x.xmax
	FROM oms.orders AS o
	LEFT JOIN (SELECT order_id, count(*) AS te, min(seq) AS tmin, max(seq) AS tmax
			   FROM oms.order_events GROUP BY order_id) AS t ON t.order_id = o.id
	LEFT JOIN (SELECT aggregateid, count(*) AS xe, min(seq) AS xmin, max(seq) AS xmax
			   FROM oms.outbox WHERE aggregatetype = 'order' GROUP BY aggregateid) AS x ON x.aggregateid = o.id
	WHERE t.te IS DISTINCT FROM t.tmax::bigint OR t.tmin IS DISTINCT FROM 1 OR t.tmax IS DISTINCT FROM o.timeline_seq
	   OR x.xe IS DISTINCT FROM x.xmax OR x.xmin IS DISTINCT FROM 1 OR x.xmax IS DISTINCT FROM o.event_seq
	LIMIT 5
) bad;
