-- bench/baseline_multi.sql: pgbench script, the same hand-written rows as
-- baseline.sql but as separate statements in one transaction (one round
-- trip each), the way an application without oms would usually do it.
BEGIN;
INSERT INTO oms.orders (customer_id, status, currency, total, timeline_seq, event_seq)
VALUES ('cust-' || :client_id, 'pending', 'USD', 2 * 1999 + 1 * 4999 + 3 * 250, 1, 1)
RETURNING id AS order_id, customer_id AS order_customer, total AS order_total,
          version AS order_version, created_at AS order_created_at
\gset
INSERT INTO oms.order_items (order_id, line_no, sku, quantity, unit_price, line_total)
VALUES (':order_id', 1, 'SKU-1', 2, 1999, 2 * 1999),
       (':order_id', 2, 'SKU-2', 1, 4999, 1 * 4999),
       (':order_id', 3, 'SKU-3', 3, 250, 3 * 250);
INSERT INTO oms.order_events (order_id, seq, event_type, from_status, to_status, data)
VALUES (':order_id', 1, 'order.created', NULL, 'pending',
        jsonb_build_object('total', :order_total, 'currency', 'USD'));
INSERT INTO oms.outbox (aggregatetype, aggregateid, type, seq, payload)
VALUES ('order', ':order_id', 'order.created', 1,
        jsonb_build_object('order_id', ':order_id'::uuid, 'customer_id', ':order_customer',
                           'status', 'pending', 'currency', 'USD',
                           'total', :order_total, 'version', :order_version,
                           'created_at', ':order_created_at'::timestamptz));
COMMIT;
