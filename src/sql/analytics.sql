-- analytics.sql: reporting views over orders, payments, refunds, sagas and
-- dead letters.  Days are UTC calendar days.  The views read the business
-- tables, never the timeline (oms.order_events), which maintenance may
-- prune for finished orders (oms.timeline_retention).  They aggregate whole
-- tables: run them for reports and dashboards, not on every request.
--
-- requires: schema payment saga

-- Revenue: an order counts on the day its fulfilment saga completed (the
-- confirm step, the point of no return) with the amount its payment
-- captured; a refund counts on the day it succeeded.  Both in the order's
-- currency, so one row per day and currency.
CREATE VIEW oms.revenue_daily AS
	WITH sales AS (
		SELECT (s.finished_at AT TIME ZONE 'UTC')::date AS day, p.currency,
			   pg_catalog.count(*) AS orders, pg_catalog.sum(p.captured) AS gross
		FROM oms.sagas AS s
		JOIN oms.payments AS p ON p.order_id = s.order_id
		WHERE s.kind = 'fulfilment' AND s.status = 'completed'
		GROUP BY 1, 2
	), refunds AS (
		SELECT (r.completed_at AT TIME ZONE 'UTC')::date AS day, p.currency,
			   pg_catalog.count(*) AS refunds, pg_catalog.sum(r.amount) AS refunded
		FROM oms.refunds AS r
		JOIN oms.payments AS p ON p.id = r.payment_id
		WHERE r.status = 'succeeded'
		GROUP BY 1, 2
	)
	SELECT t.day, t.currency, t.orders, t.gross, t.refunds, t.refunded, t.gross - t.refunded AS net,
		   pg_catalog.round(t.gross / 10::numeric ^ c.exponent, c.exponent) AS gross_amount,
		   pg_catalog.round(t.refunded / 10::numeric ^ c.exponent, c.exponent) AS refunded_amount,
		   pg_catalog.round((t.gross - t.refunded) / 10::numeric ^ c.exponent, c.exponent) AS net_amount
	FROM (SELECT coalesce(a.day, b.day) AS day, coalesce(a.currency, b.currency) AS currency,
				 coalesce(a.orders, 0) AS orders, coalesce(a.gross, 0)::bigint AS gross,
				 coalesce(b.refunds, 0) AS refunds, coalesce(b.refunded, 0)::bigint AS refunded
		  FROM sales AS a
		  FULL JOIN refunds AS b ON b.day = a.day AND b.currency = a.currency) AS t
	LEFT JOIN oms.currencies AS c ON c.code = t.currency;
COMMENT ON VIEW oms.revenue_daily IS
	'Revenue per UTC day and currency: orders confirmed and the amount captured for them (gross), refunds succeeded and their amount (refunded), net = gross - refunded; in minor units, and as amounts of the currency (_amount columns)';

-- A cohort view: each day's new orders by the status they have now.  It
-- needs no history, so timeline pruning does not change it.
CREATE VIEW oms.orders_by_status_daily AS
	SELECT (o.created_at AT TIME ZONE 'UTC')::date AS day, o.status, pg_catalog.count(*) AS orders
	FROM oms.orders AS o
	GROUP BY 1, 2;
COMMENT ON VIEW oms.orders_by_status_daily IS
	'Orders per UTC creation day and current status: where the orders created that day stand now';

CREATE VIEW oms.saga_durations AS
	SELECT s.kind, s.outcome, pg_catalog.count(*) AS sagas,
		   pg_catalog.round((pg_catalog.percentile_cont(0.50) WITHIN GROUP (ORDER BY EXTRACT(epoch FROM s.finished_at - s.created_at)))::numeric, 3) AS p50_s,
		   pg_catalog.round((pg_catalog.percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(epoch FROM s.finished_at - s.created_at)))::numeric, 3) AS p95_s,
		   pg_catalog.round((pg_catalog.percentile_cont(0.99) WITHIN GROUP (ORDER BY EXTRACT(epoch FROM s.finished_at - s.created_at)))::numeric, 3) AS p99_s,
		   pg_catalog.round(pg_catalog.max(EXTRACT(epoch FROM s.finished_at - s.created_at)), 3) AS max_s
	FROM oms.sagas AS s
	WHERE s.finished_at IS NOT NULL
	GROUP BY s.kind, s.outcome;
COMMENT ON VIEW oms.saga_durations IS
	'Finished sagas per kind and outcome (confirmed, refunded, failed, canceled): count and p50/p95/p99/max seconds from start to finish';

-- Why sagas fail, most frequent first: every forward step that failed for
-- good (saga_failed) and every compensation that got stuck
-- (compensation_stuck) leaves a dead letter with the error.
CREATE VIEW oms.saga_failure_reasons AS
	SELECT s.kind AS saga_kind, d.step,
		   CASE d.kind WHEN 'saga_failed' THEN 'forward' ELSE 'compensation' END AS phase,
		   d.error ->> 'sqlstate' AS sqlstate, d.error ->> 'message' AS message,
		   pg_catalog.count(*) AS failures,
		   pg_catalog.min(d.created_at) AS first_seen, pg_catalog.max(d.created_at) AS last_seen
	FROM oms.dead_letters AS d
	JOIN oms.sagas AS s ON s.id = d.saga_id
	WHERE d.kind IN ('saga_failed', 'compensation_stuck')
	GROUP BY 1, 2, 3, 4, 5
	ORDER BY failures DESC, last_seen DESC, saga_kind, step, sqlstate, message;
COMMENT ON VIEW oms.saga_failure_reasons IS
	'Saga failures ranked by count: saga kind, step, phase (forward step failed, compensation stuck), SQLSTATE and message, with first and last occurrence';

REVOKE ALL ON oms.revenue_daily, oms.orders_by_status_daily, oms.saga_durations, oms.saga_failure_reasons FROM PUBLIC;
GRANT SELECT ON oms.revenue_daily, oms.orders_by_status_daily, oms.saga_durations, oms.saga_failure_reasons
	TO oms_reader, oms_admin;
