-- money: ISO 4217 currencies with their exponents, integer minor units,
-- totals computed by oms with overflow detected.
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql

SELECT code, exponent, name FROM oms.currencies
WHERE code IN ('USD', 'EUR', 'JPY', 'KRW', 'KWD', 'BHD', 'CLF', 'GBP') ORDER BY code;
SELECT exponent, count(*) FROM oms.currencies GROUP BY exponent ORDER BY exponent;

-- Formatting follows the exponent.
SELECT oms_format_money(1999, 'USD') AS usd, oms_format_money(1999, 'JPY') AS jpy,
	   oms_format_money(1999, 'KWD') AS kwd, oms_format_money(5, 'EUR') AS eur_cents,
	   oms_format_money(-250, 'GBP') AS negative, oms_format_money(NULL, 'USD') AS null_amount;
SELECT t.err($$SELECT oms_format_money(1, 'usd')$$);
SELECT t.err($$SELECT oms_format_money(1, 'XXY')$$);

-- Line totals and the order total are computed, never taken from the caller.
SELECT oms._price_items('[{"sku": "A", "quantity": 3, "unit_price": 1999},
						  {"sku": "B", "quantity": 1, "unit_price": 0}]');
SELECT oms._price_items('[{"sku": "A", "quantity": 1, "unit_price": 1999, "line_total": 1}]');

-- The same basket in three currencies: minor units are kept as given.
SELECT o ->> 'currency' AS currency, o ->> 'total' AS total,
	   oms_format_money((o ->> 'total')::bigint, o ->> 'currency') AS shown
FROM (VALUES (oms_create_order('money-1', '[{"sku": "A", "quantity": 2, "unit_price": 1050}]', 'USD')),
			 (oms_create_order('money-1', '[{"sku": "A", "quantity": 2, "unit_price": 1050}]', 'JPY')),
			 (oms_create_order('money-1', '[{"sku": "A", "quantity": 2, "unit_price": 1050}]', 'KWD'))) AS v(o)
ORDER BY 1;

-- The largest total that fits is accepted exactly...
SELECT oms._price_items('[{"sku": "A", "quantity": 1, "unit_price": 9223372036854775806},
						  {"sku": "B", "quantity": 1, "unit_price": 1}]') -> 'total' AS max_total;
-- ...and one minor unit more is refused, not wrapped.
SELECT t.err($$SELECT oms._price_items('[{"sku": "A", "quantity": 1, "unit_price": 9223372036854775807},
										 {"sku": "B", "quantity": 1, "unit_price": 1}]')$$);
SELECT t.err($$SELECT oms._price_items('[{"sku": "A", "quantity": 2, "unit_price": 4611686018427387904}]')$$);
-- Beyond bigint altogether.
SELECT t.err($$SELECT oms._price_items('[{"sku": "A", "quantity": 1, "unit_price": 9223372036854775808}]')$$);

-- Nothing was written by the refused calls above: only the three orders.
SELECT count(*) AS orders FROM oms.orders WHERE customer_id = 'money-1';
