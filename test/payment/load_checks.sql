-- test/payment/load_checks.sql: what must hold after a batch of orders was
-- paid through the remote payment provider (test/t/032_payment_kafka_load.pl),
-- whatever crashed on the way.  Run with psql -v expected=N in a database
-- whose orders all belong to the run, with
--   public.wt_stock_before  the stock before the orders were paid
--   public.pm_decisions     the service's decisions (one row per correlation
--                           id: order_id, payment_id, corr, cmd, outcome),
--                           loaded from test/payment/service.py's log.
-- Prints one row per check: name | ok (t/f) | detail (a few offending rows).
\set ON_ERROR_STOP 1

WITH o AS (
	SELECT count(*) AS n,
		   count(*) FILTER (WHERE status = 'confirmed') AS confirmed,
		   count(*) FILTER (WHERE status = 'failed') AS failed,
		   string_agg(DISTINCT status::text, ',') AS statuses
	FROM oms.orders
), d AS (
	SELECT count(*) FILTER (WHERE outcome = 'approved') AS approved,
		   count(*) FILTER (WHERE outcome = 'declined') AS declined,
		   count(*) AS n
	FROM public.pm_decisions WHERE cmd = 'charge'
)
SELECT 'every one of the ' || :expected || ' orders is terminal; confirmed = charges the service approved, failed = declined',
	   o.n = :expected AND o.confirmed + o.failed = :expected AND d.n = :expected
	   AND o.confirmed = d.approved AND o.failed = d.declined,
	   format('orders %s (confirmed %s, failed %s, statuses %s); service charge decisions %s (approved %s, declined %s)',
			  o.n, o.confirmed, o.failed, o.statuses, d.n, d.approved, d.declined)
FROM o, d

UNION ALL
SELECT 'each order''s status is what the service decided for its one charge',
	   count(*) = 0,
	   string_agg(format('order %s: %s, decisions %s', id, status, decisions), '; ')
FROM (
	SELECT o.id, o.status, string_agg(d.outcome, ',') AS decisions
	FROM oms.orders AS o LEFT JOIN public.pm_decisions AS d ON d.order_id = o.id AND d.cmd = 'charge'
	GROUP BY o.id, o.status
	HAVING count(d.corr) <> 1
		OR NOT (o.status = 'confirmed' AND min(d.outcome) = 'approved' OR o.status = 'failed' AND min(d.outcome) = 'declined')
	LIMIT 5
) bad

UNION ALL
SELECT 'no command but charges went out (no void, no refund, no retry)',
	   count(*) = 0,
	   string_agg(format('%s %s %s', corr, cmd, outcome), '; ')
FROM (SELECT * FROM public.pm_decisions WHERE cmd <> 'charge' OR corr NOT LIKE '%:2:1' LIMIT 5) bad

UNION ALL
SELECT 'each order has one fulfilment saga: completed/confirmed or compensated/failed as the order',
	   count(*) = 0,
	   string_agg(format('order %s (%s): %s', id, status, sagas), '; ')
FROM (
	SELECT o.id, o.status, string_agg(format('%s/%s', s.status, s.outcome), ',') AS sagas
	FROM oms.orders AS o LEFT JOIN oms.sagas AS s ON s.order_id = o.id AND s.kind = 'fulfilment'
	GROUP BY o.id, o.status
	HAVING count(s.id) <> 1
		OR NOT bool_and(o.status = 'confirmed' AND s.status = 'completed' AND s.outcome = 'confirmed'
						OR o.status = 'failed' AND s.status = 'compensated' AND s.outcome = 'failed')
	LIMIT 5
) bad

UNION ALL
SELECT 'no double capture: confirmed orders captured = authorized = amount = total once, failed ones 0 and declined',
	   count(*) = 0,
	   string_agg(format('order %s (%s): %s payments, total %s, amount %s, authorized %s, captured %s, refunded %s, status %s',
						 id, ostatus, payments, total, amount, authorized, captured, refunded, pstatus), '; ')
FROM (
	SELECT o.id, o.status AS ostatus, o.total, count(p.id) AS payments, max(p.amount) AS amount,
		   max(p.authorized) AS authorized, max(p.captured) AS captured, max(p.refunded) AS refunded,
		   string_agg(p.status, ',') AS pstatus
	FROM oms.orders AS o LEFT JOIN oms.payments AS p ON p.order_id = o.id
	GROUP BY o.id, o.status, o.total
	HAVING count(p.id) <> 1 OR max(p.amount) <> o.total OR max(p.refunded) <> 0
		OR NOT (o.status = 'confirmed' AND max(p.captured) = o.total AND max(p.authorized) = o.total
				AND string_agg(p.status, ',') = 'captured'
			 OR o.status = 'failed' AND max(p.captured) = 0 AND max(p.authorized) = 0
				AND string_agg(p.status, ',') = 'declined')
	LIMIT 5
) bad

UNION ALL
SELECT 'exactly one effect per reply: one payment.reply timeline entry and one applied inbox row per order',
	   count(*) = 0,
	   string_agg(format('order %s: %s payment.reply entries, %s applied replies', id, entries, applied), '; ')
FROM (
	SELECT o.id,
		   (SELECT count(*) FROM oms.order_events AS e WHERE e.order_id = o.id AND e.event_type = 'payment.reply') AS entries,
		   (SELECT count(*) FROM oms.inbox AS i JOIN oms.payment_commands AS c USING (correlation_id)
			WHERE c.order_id = o.id AND i.result = 'applied') AS applied
	FROM oms.orders AS o
) x
WHERE entries <> 1 OR applied <> 1

UNION ALL
SELECT 'the inbox holds no late, rejected or unclassified reply (probes aside), and each order one command',
	   (SELECT count(*) FROM oms.inbox WHERE result NOT IN ('applied', 'duplicate') AND message_id NOT LIKE 'probe-%') = 0
	   AND (SELECT count(*) FROM oms.payment_commands) = :expected,
	   format('inbox results %s; payment commands %s',
			  (SELECT string_agg(format('%s:%s', result, n), ' ') FROM (
				  SELECT result, count(*) AS n FROM oms.inbox WHERE message_id NOT LIKE 'probe-%' GROUP BY 1) r),
			  (SELECT count(*) FROM oms.payment_commands))

UNION ALL
SELECT 'dead letters: one saga_failed (OM013) per declined order, nothing else (probes aside)',
	   (SELECT count(*) FROM oms.dead_letters
		WHERE NOT (kind = 'saga_failed' AND error ->> 'sqlstate' = 'OM013')
		  AND NOT (kind = 'reply' AND payload ->> 'message_id' LIKE 'probe-%')) = 0
	   AND (SELECT count(*) FROM oms.dead_letters WHERE kind = 'saga_failed')
		   = (SELECT count(*) FROM oms.orders WHERE status = 'failed'),
	   (SELECT string_agg(format('%s:%s', kind, n), ' ') FROM (
		   SELECT kind || coalesce('/' || (error ->> 'sqlstate'), '') AS kind, count(*) AS n
		   FROM oms.dead_letters GROUP BY 1) k)

UNION ALL
SELECT 'reservations: consumed with the ordered quantity for confirmed orders, released for failed ones',
	   count(*) = 0,
	   string_agg(format('order %s (%s) sku %s: ordered %s, reservations %s, reserved %s, statuses %s',
						 order_id, ostatus, sku, ordered, rows, reserved, statuses), '; ')
FROM (
	SELECT o.id AS order_id, o.status AS ostatus, coalesce(i.sku, r.sku) AS sku, i.ordered, r.rows, r.reserved, r.statuses
	FROM (SELECT order_id, sku, sum(quantity) AS ordered FROM oms.order_items GROUP BY 1, 2) AS i
	FULL JOIN (SELECT order_id, sku, count(*) AS rows, sum(quantity) AS reserved,
					  string_agg(status::text, ',') AS statuses
			   FROM oms.reservations GROUP BY 1, 2) AS r
		ON r.order_id = i.order_id AND r.sku = i.sku
	JOIN oms.orders AS o ON o.id = coalesce(i.order_id, r.order_id)
	WHERE i.ordered IS DISTINCT FROM r.reserved OR r.rows IS DISTINCT FROM 1
	   OR r.statuses IS DISTINCT FROM CASE o.status WHEN 'confirmed' THEN 'consumed' ELSE 'released' END
	LIMIT 5
) bad

UNION ALL
SELECT 'stock on_hand decreased by exactly the confirmed orders'' quantities',
	   count(*) = 0,
	   string_agg(format('sku %s: before %s, confirmed %s, now %s', sku, before, ordered, now), '; ')
FROM (
	SELECT b.sku, b.on_hand AS before, coalesce(q.ordered, 0) AS ordered, s.on_hand AS now
	FROM public.wt_stock_before AS b
	JOIN oms.stock AS s ON s.sku = b.sku
	LEFT JOIN (SELECT i.sku, sum(i.quantity) AS ordered FROM oms.order_items AS i
			   JOIN oms.orders AS o ON o.id = i.order_id AND o.status = 'confirmed' GROUP BY i.sku) AS q ON q.sku = b.sku
	WHERE s.on_hand <> b.on_hand - coalesce(q.ordered, 0)
	LIMIT 5
) bad

UNION ALL
SELECT 'the timeline is gap-free per order and matches the order counter',
	   count(*) = 0,
	   string_agg(format('order %s: %s entries, seq %s..%s, counter %s', id, te, tmin, tmax, timeline_seq), '; ')
FROM (
	SELECT o.id, o.timeline_seq, t.te, t.tmin, t.tmax
	FROM oms.orders AS o
	LEFT JOIN (SELECT order_id, count(*) AS te, min(seq) AS tmin, max(seq) AS tmax
			   FROM oms.order_events GROUP BY order_id) AS t ON t.order_id = o.id
	WHERE t.te IS DISTINCT FROM t.tmax::bigint OR t.tmin IS DISTINCT FROM 1 OR t.tmax IS DISTINCT FROM o.timeline_seq
	LIMIT 5
) bad;
