-- test/upgrade/statuses.sql: after ALTER EXTENSION oms UPDATE, every order
-- of the database reads through the API and its new status dimensions
-- are mapped from what the old version recorded.  One row per order that
-- is wrong, saying why; none when all are right.  Run by
-- test/t/040_upgrade.pl right after the update, before the worker moves
-- anything.
SELECT o.id, problem
FROM oms.orders AS o
LEFT JOIN oms.payments AS p ON p.order_id = o.id
CROSS JOIN LATERAL (VALUES
	-- The order document of every order, with the new fields.
	(CASE WHEN NOT (oms_get_order(o.id) ?& ARRAY['payment_status', 'fulfillment_status', 'last_saga', 'shipments', 'returns'])
		  THEN 'oms_get_order lacks a 0.4.0 field' END),
	-- The payment: unpaid until captured, then by the refunded amount.
	(CASE WHEN o.payment_status::text <> CASE WHEN coalesce(p.captured, 0) = 0 THEN 'unpaid'
											  WHEN p.refunded = 0 THEN 'paid'
											  WHEN p.refunded < p.captured THEN 'partially_refunded'
											  ELSE 'refunded' END
		  THEN 'payment_status ' || o.payment_status END),
	-- Orders that ended without shipping have every line canceled (and
	-- refunded when the order was refunded); nothing shipped before.
	(CASE WHEN o.fulfillment_status::text <> CASE WHEN o.status IN ('canceled', 'failed', 'refunded') THEN 'canceled'
												  ELSE 'unfulfilled' END
		  THEN 'fulfillment_status ' || o.fulfillment_status END),
	((SELECT 'line ' || i.line_no || ' ledger ' || row(i.quantity_canceled, i.quantity_fulfilling, i.quantity_shipped,
				i.quantity_delivered, i.quantity_returning, i.quantity_returned, i.quantity_refunded)::text
	  FROM oms.order_items AS i
	  WHERE i.order_id = o.id
		AND row(i.quantity_canceled, i.quantity_fulfilling, i.quantity_shipped, i.quantity_delivered,
				i.quantity_returning, i.quantity_returned, i.quantity_refunded)
			IS DISTINCT FROM row(CASE WHEN o.status IN ('canceled', 'failed', 'refunded') THEN i.quantity ELSE 0 END,
								 0, 0, 0, 0, 0,
								 CASE WHEN o.status = 'refunded' THEN i.quantity ELSE 0 END)
	  ORDER BY i.line_no LIMIT 1))
) AS x(problem)
WHERE problem IS NOT NULL
ORDER BY o.id, problem;
