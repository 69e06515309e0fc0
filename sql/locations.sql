-- locations: stock per SKU and location, the allocation strategy of the
-- reserve step (one location for the whole basket by (priority, code),
-- else split; inactive locations skipped; all or nothing), the per-SKU
-- calls on location 'default', and the helpers shipments and returns use
-- (oms._restock, oms._release_allocation, oms._ship_from,
-- oms._order_allocation).
\set SHOW_CONTEXT never
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/helpers.sql

-- The counter against the reservations it counts, per (sku, location).
CREATE VIEW t.lc_counter AS
	SELECT s.sku, s.location, s.on_hand, s.reserved,
		   (SELECT coalesce(sum(r.quantity), 0) FROM oms.reservations r
			WHERE r.sku = s.sku AND r.location = s.location AND r.status = 'held') AS held_units
	FROM oms.stock s WHERE s.sku LIKE 'LC-%' ORDER BY s.sku, s.location;
CREATE VIEW t.lc_levels AS
	SELECT sku, location, on_hand, reserved, available, priority, active
	FROM oms.location_stock_levels WHERE sku LIKE 'LC-%' ORDER BY sku, location;
-- An order created, not paid: its reserve step is called directly.
CREATE FUNCTION t.lc_order(p_customer text, p_items jsonb) RETURNS uuid LANGUAGE sql AS $$
	SELECT (oms_create_order(p_customer, p_items) ->> 'order_id')::uuid;
$$;
CREATE FUNCTION t.lc_reserve(p_order uuid) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	PERFORM oms._reserve_order(p_order, now());
	RETURN (SELECT string_agg(r.sku || '@' || r.location || ' ' || r.quantity || ' ' || r.status, ', '
							  ORDER BY r.sku, r.location)
			FROM oms.reservations r WHERE r.order_id = p_order);
EXCEPTION WHEN OTHERS THEN
	DECLARE
		v_detail text;
	BEGIN
		GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL;
		RETURN SQLSTATE || ': ' || SQLERRM || coalesce(' (' || v_detail || ')', '');
	END;
END;
$$;
-- t.err without the order ids, which differ from run to run.
CREATE FUNCTION t.lc_err(p_sql text) RETURNS text LANGUAGE sql AS $$
	SELECT regexp_replace(t.err(p_sql), '"[0-9a-f-]{36}"', '"<order>"', 'g');
$$;
CREATE FUNCTION t.lc_alloc(p_order uuid) RETURNS text LANGUAGE sql AS $$
	SELECT string_agg(r.sku || '@' || r.location || ' ' || r.quantity || '/' || r.shipped || ' ' || r.status, ', '
					  ORDER BY r.sku, r.location)
	FROM oms.reservations r WHERE r.order_id = p_order;
$$;

-- The location 'default' comes with the extension.
SELECT code, name, priority, active FROM oms.locations ORDER BY code;

-- oms_set_location creates and updates (name NULL keeps the name).
SELECT oms_set_location('east', 'East warehouse', 1) - 'created_at' - 'updated_at' AS east;
SELECT oms_set_location('west', 'West warehouse', 1) - 'created_at' - 'updated_at' AS west;
SELECT oms_set_location('north', 'North store', 5) - 'created_at' - 'updated_at' AS north;
SELECT oms_set_location('north', NULL, 2, false) - 'created_at' - 'updated_at' AS north_updated;
SELECT oms_set_location('default', NULL, 9) - 'created_at' - 'updated_at' AS default_updated;
SELECT count(*) AS default_rows FROM oms.locations WHERE code = 'default';

-- Bad input: nothing written.
SELECT t.err('SELECT oms_set_location(NULL)');
SELECT t.err('SELECT oms_set_location('''')');
SELECT t.err('SELECT oms_set_location('' east'')');
SELECT t.err(format('SELECT oms_set_location(%L)', repeat('l', 101)));
SELECT t.err('SELECT oms_set_location(''south'', ''S'', NULL)');
SELECT t.err('SELECT oms_set_location(''south'', ''S'', 0, NULL)');
SELECT t.err(format('SELECT oms_set_location(''south'', %L)', repeat('n', 201)));
SELECT count(*) AS locations FROM oms.locations;

-- Stock per location; the per-SKU calls work on 'default'.
SELECT oms_set_stock('LC-A', 5, 'east') - 'updated_at' AS a_east;
SELECT oms_set_stock('LC-A', 2, 'west') - 'updated_at' AS a_west;
SELECT oms_set_stock('LC-A', 4) - 'updated_at' AS a_default;
SELECT oms_adjust_stock('LC-A', 1) - 'updated_at' AS a_default_adjusted;
SELECT oms_adjust_stock('LC-A', -1, 'east') - 'updated_at' AS a_east_adjusted;
SELECT * FROM t.lc_levels;
SELECT sku, on_hand, reserved, available FROM oms.stock_levels WHERE sku = 'LC-A';

-- Bad input to the location calls: nothing written.
SELECT t.err('SELECT oms_set_stock(''LC-A'', 1, NULL)');
SELECT t.err('SELECT oms_set_stock(''LC-A'', 1, '''')');
SELECT t.err(format('SELECT oms_set_stock(''LC-A'', 1, %L)', repeat('l', 101)));
SELECT t.err('SELECT oms_set_stock(''LC-A'', 1, ''nowhere'')');
SELECT t.err('SELECT oms_set_stock(''LC-A'', -1, ''east'')');
SELECT t.err('SELECT oms_set_stock(NULL, 1, ''east'')');
SELECT t.err('SELECT oms_set_stock(''LC-A'', NULL, ''east'')');
SELECT t.err('SELECT oms_adjust_stock(''LC-A'', 1, ''nowhere'')');
SELECT t.err('SELECT oms_adjust_stock(''LC-A'', 1, NULL)');
SELECT t.err('SELECT oms_adjust_stock(''LC-A'', NULL, ''east'')');
SELECT t.err('SELECT oms_adjust_stock(''LC-A'', -5, ''east'')');
SELECT t.err('SELECT oms_adjust_stock(''LC-A'', 1, ''north'')');
SELECT t.err('SELECT oms_adjust_stock(''LC-NONE'', 1)');
-- A SKU's units over all locations stay within a bigint (the per-SKU view
-- sums them).
SELECT t.err('SELECT oms_set_stock(''LC-A'', 9223372036854775807, ''west'')');
SELECT t.err('SELECT oms_adjust_stock(''LC-A'', 9223372036854775800, ''west'')');
SELECT count(*) AS stock_rows FROM oms.stock WHERE sku LIKE 'LC-%';

-- Allocation.  'default' now has priority 9; east and west 1 (tie: by
-- code, east first); north 2 and inactive.
SELECT oms_set_stock('LC-B', 3, 'east') IS NOT NULL AS b_east,
	   oms_set_stock('LC-B', 6, 'west') IS NOT NULL AS b_west,
	   oms_set_stock('LC-B', 100, 'north') IS NOT NULL AS b_north;
SELECT * FROM t.lc_levels;

-- One location serves the whole basket: the tie between east and west
-- goes to east by code.
SELECT t.lc_order('lc-1', '[{"sku": "LC-A", "quantity": 2, "unit_price": 1}, {"sku": "LC-B", "quantity": 2, "unit_price": 1}]') AS o1 \gset
SELECT t.lc_reserve(:'o1') AS o1;
-- 3 A + 2 B: east has 2 A left, west 2 A, default no B: no location
-- serves the basket alone, so it splits, each SKU in (priority, code)
-- order: A from east (2) then west (1), B from east (1) then west (1).
SELECT t.lc_order('lc-2', '[{"sku": "LC-A", "quantity": 3, "unit_price": 1}, {"sku": "LC-B", "quantity": 2, "unit_price": 1}]') AS o2 \gset
SELECT t.lc_reserve(:'o2') AS o2;
SELECT * FROM t.lc_counter;
-- 3 A: east has none left, west 1, default 5: default serves it alone,
-- lowest priority or not.
SELECT t.lc_order('lc-3', '[{"sku": "LC-A", "quantity": 3, "unit_price": 1}]') AS o3 \gset
SELECT t.lc_reserve(:'o3') AS o3;
-- 1 A: west (priority 1) before default (priority 9).
SELECT t.lc_order('lc-4', '[{"sku": "LC-A", "quantity": 1, "unit_price": 1}]') AS o4 \gset
SELECT t.lc_reserve(:'o4') AS o4;
-- Inactive locations are never allocated from: north holds 100 B but is
-- inactive, so 8 B is short (east 1 + west 4 = 5 available).  All or
-- nothing: the order's A is not reserved either.
SELECT t.lc_order('lc-5', '[{"sku": "LC-A", "quantity": 1, "unit_price": 1}, {"sku": "LC-B", "quantity": 8, "unit_price": 1}]') AS o5 \gset
SELECT t.lc_reserve(:'o5') AS o5;
SELECT count(*) AS o5_reservations FROM oms.reservations WHERE order_id = :'o5';
-- North active again: still no location has both, so A comes from
-- default (the only one with A left) and B from west (5) then north
-- (priority 2, 3).
SELECT oms_set_location('north', NULL, 2, true) ->> 'active' AS north_active;
SELECT t.lc_reserve(:'o5') AS o5;
-- Unknown SKU, and a SKU whose rows are all at inactive locations.
SELECT oms_set_location('south', 'South store', 0, false) ->> 'code' AS south;
SELECT oms_set_stock('LC-S', 10, 'south') ->> 'available' AS s_south;
SELECT t.lc_order('lc-6', '[{"sku": "LC-S", "quantity": 1, "unit_price": 1}]') AS o6 \gset
SELECT t.lc_reserve(:'o6') AS o6;
SELECT t.lc_order('lc-7', '[{"sku": "LC-NONE", "quantity": 1, "unit_price": 1}]') AS o7 \gset
SELECT t.lc_reserve(:'o7') AS o7;
SELECT * FROM t.lc_counter;
SELECT * FROM t.lc_levels;

-- A step run again reuses its own held reservations (counted once):
-- the same allocation, the same counters.
SELECT t.lc_reserve(:'o3') AS o3_again;
SELECT t.lc_reserve(:'o5') AS o5_again;
SELECT * FROM t.lc_counter;
-- When a rerun allocates elsewhere (default made inactive meanwhile),
-- the rows it no longer needs go.
SELECT oms_adjust_stock('LC-A', 5, 'east') ->> 'available' AS a_east;
SELECT oms_set_location('default', NULL, 9, false) ->> 'active' AS default_active;
SELECT t.lc_reserve(:'o3') AS o3_moved;
SELECT oms_set_location('default', NULL, 9, true) ->> 'active' AS default_active;
SELECT * FROM t.lc_counter;
-- A split basket run again keeps its split.
SELECT t.lc_order('lc-8', '[{"sku": "LC-A", "quantity": 5, "unit_price": 1}]') AS o8 \gset
SELECT t.lc_reserve(:'o8') AS o8;
SELECT t.lc_reserve(:'o8') AS o8_again;
SELECT * FROM t.lc_counter;

-- Expired holds free units: a basket that fits nowhere at first sweeps
-- the basket's expired reservations and counts again.
UPDATE oms.reservations SET expires_at = now() - interval '1 second' WHERE order_id = :'o8';
SELECT t.lc_order('lc-9', '[{"sku": "LC-A", "quantity": 5, "unit_price": 1}]') AS o9 \gset
SELECT t.lc_reserve(:'o9') AS o9;
SELECT t.lc_alloc(:'o8') AS o8;
SELECT * FROM t.lc_counter;

-- Confirm: held -> consumed, units leave on hand at each location.
SELECT oms._move_reserved_stock(:'o5', 'held', 'consumed', -1);
SELECT t.lc_alloc(:'o5') AS o5;
SELECT * FROM t.lc_levels;
-- Expired before payment: per SKU, the held units must cover the line.
-- o2 holds its 3 A at east (2) and west (1): without west's, 2 < 3.
UPDATE oms.reservations SET status = 'expired' WHERE order_id = :'o2' AND sku = 'LC-A' AND location = 'west';
SELECT t.lc_err(format('SELECT oms._move_reserved_stock(%L, ''held'', ''consumed'', -1)', :'o2'));
SELECT t.lc_alloc(:'o2') AS o2;
UPDATE oms.reservations SET status = 'held' WHERE order_id = :'o2' AND sku = 'LC-A' AND location = 'west';

-- oms._order_allocation: the order document's view of it.
SELECT jsonb_pretty(oms._order_allocation(:'o5')) AS o5_allocation;
SELECT oms._order_allocation(:'o7') AS o7_allocation;

-- oms._ship_from: shipped units per allocation row.
SELECT oms._ship_from(:'o5', 'LC-B', 'west', 3);
SELECT oms._ship_from(:'o5', 'LC-B', 'west', 1);
SELECT oms._ship_from(:'o5', 'LC-B', 'west', -1);
SELECT t.lc_alloc(:'o5') AS o5;
-- 2 unshipped, 3 shipped at west: OM008 for more, in either direction.
SELECT t.lc_err(format('SELECT oms._ship_from(%L, ''LC-B'', ''west'', 3)', :'o5'));
SELECT t.lc_err(format('SELECT oms._ship_from(%L, ''LC-B'', ''west'', -4)', :'o5'));
-- Nothing allocated there; held (not yet confirmed) units do not ship.
SELECT t.lc_err(format('SELECT oms._ship_from(%L, ''LC-B'', ''default'', 1)', :'o5'));
SELECT t.lc_err(format('SELECT oms._ship_from(%L, ''LC-A'', ''default'', 1)', :'o3'));
SELECT t.lc_err(format('SELECT oms._ship_from(%L, ''LC-B'', ''nowhere'', 1)', :'o5'));
SELECT t.lc_err(format('SELECT oms._ship_from(%L, ''LC-B'', ''west'', 0)', :'o5'));
SELECT t.lc_err(format('SELECT oms._ship_from(%L, ''LC-B'', ''west'', NULL)', :'o5'));
SELECT t.lc_err(format('SELECT oms._ship_from(%L, NULL, ''west'', 1)', :'o5'));
SELECT t.err('SELECT oms._ship_from(NULL, ''LC-B'', ''west'', 1)');
SELECT t.lc_alloc(:'o5') AS o5;

-- oms._release_allocation: unshipped units go back, least preferred
-- location first (north: priority 2, then west and east by code
-- descending).  o5's B: west 5 (3 shipped), north 3.
SELECT sku, location, on_hand FROM oms.stock WHERE sku = 'LC-B' ORDER BY location;
SELECT oms._release_allocation(:'o5', 'LC-B', 4) AS released;
SELECT t.lc_alloc(:'o5') AS o5;
SELECT sku, location, on_hand FROM oms.stock WHERE sku = 'LC-B' ORDER BY location;
-- west keeps 4, 3 of them shipped: 1 unshipped.  More than that: 55000,
-- nothing changes.
SELECT t.lc_err(format('SELECT oms._release_allocation(%L, ''LC-B'', 4)', :'o5'));
SELECT oms._release_allocation(:'o5', 'LC-B', 1) AS released;
SELECT oms._release_allocation(:'o5', 'LC-A', 1) AS released;
SELECT t.lc_alloc(:'o5') AS o5;
SELECT t.lc_err(format('SELECT oms._release_allocation(%L, ''LC-A'', 1)', :'o5'));
SELECT t.lc_err(format('SELECT oms._release_allocation(%L, ''LC-B'', 0)', :'o5'));
SELECT t.lc_err(format('SELECT oms._release_allocation(%L, ''LC-B'', NULL)', :'o5'));
SELECT t.lc_err(format('SELECT oms._release_allocation(%L, NULL, 1)', :'o5'));
SELECT t.err('SELECT oms._release_allocation(NULL, ''LC-B'', 1)');
SELECT sku, location, on_hand FROM oms.stock WHERE sku = 'LC-B' ORDER BY location;
-- A refund after shipping puts back only what did not ship.
SELECT oms._move_reserved_stock(:'o5', 'consumed', 'released', 1);
SELECT t.lc_alloc(:'o5') AS o5;
SELECT sku, location, on_hand FROM oms.stock WHERE sku = 'LC-B' ORDER BY location;

-- oms._restock: units back on a location's shelf, the row created if
-- missing.
SELECT oms._restock('LC-B', 'east', 2);
SELECT oms._restock('LC-R', 'west', 3);
SELECT sku, location, on_hand FROM oms.stock WHERE sku IN ('LC-B', 'LC-R') AND location IN ('east', 'west') ORDER BY 1, 2;
SELECT t.err('SELECT oms._restock(''LC-B'', ''nowhere'', 1)');
SELECT t.err('SELECT oms._restock(''LC-B'', NULL, 1)');
SELECT t.err('SELECT oms._restock(NULL, ''east'', 1)');
SELECT t.err('SELECT oms._restock('''', ''east'', 1)');
SELECT t.err('SELECT oms._restock(''LC-B'', ''east'', 0)');
SELECT t.err('SELECT oms._restock(''LC-B'', ''east'', -1)');
SELECT t.err('SELECT oms._restock(''LC-B'', ''east'', NULL)');
SELECT t.err('SELECT oms._restock(''LC-B'', ''east'', 9223372036854775807)');
SELECT count(*) AS stock_rows FROM oms.stock WHERE sku LIKE 'LC-%';

-- The saga's one-move path takes the single location too: east and west
-- tie at priority 1, east wins by code.
SELECT oms_set_stock('LC-Q', 5, 'west') IS NOT NULL AS q_west, oms_set_stock('LC-Q', 5, 'east') IS NOT NULL AS q_east;
SELECT t.new_order('lc-10', '[{"sku": "LC-Q", "quantity": 2, "unit_price": 1}]', 'test_ok') AS o10 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT status FROM oms.orders WHERE id = :'o10';
SELECT t.lc_alloc(:'o10') AS o10;
-- A split basket runs the steps one by one and splits the same way.
SELECT t.new_order('lc-11', '[{"sku": "LC-Q", "quantity": 6, "unit_price": 1}]', 'test_ok') AS o11 \gset
SELECT oms_run_sagas() AS steps_run;
SELECT status FROM oms.orders WHERE id = :'o11';
SELECT t.lc_alloc(:'o11') AS o11;
SELECT * FROM t.lc_levels WHERE sku = 'LC-Q';
-- And a refund of it puts the units back where they were taken.
SELECT oms_refund_order(:'o11', NULL, 'lc-refund-11') ->> 'status' AS refund;
SELECT oms_run_sagas() AS steps_run;
SELECT t.lc_alloc(:'o11') AS o11;
SELECT * FROM t.lc_levels WHERE sku = 'LC-Q';
SELECT * FROM t.lc_counter;

-- The background sweep works per (sku, location).
UPDATE oms.reservations SET expires_at = now() - interval '1 second' WHERE order_id = :'o1';
SELECT oms_release_expired_reservations() AS expired;
SELECT t.lc_alloc(:'o1') AS o1;
SELECT * FROM t.lc_counter;

-- A location in use cannot go; a stock row keeps it.
SELECT t.err('DELETE FROM oms.locations WHERE code = ''east''');

-- Privileges: oms_admin sets locations; oms_reader reads the views.
SELECT has_function_privilege('oms_admin', 'oms_set_location(text, text, integer, boolean)', 'EXECUTE') AS admin_set_location,
	   has_function_privilege('oms_app', 'oms_set_location(text, text, integer, boolean)', 'EXECUTE') AS app_set_location,
	   has_function_privilege('oms_admin', 'oms_set_stock(text, bigint, text)', 'EXECUTE') AS admin_set_stock,
	   has_function_privilege('oms_admin', 'oms_adjust_stock(text, bigint, text)', 'EXECUTE') AS admin_adjust_stock,
	   has_table_privilege('oms_reader', 'oms.location_stock_levels', 'SELECT') AS reader_levels,
	   has_table_privilege('oms_reader', 'oms.locations', 'SELECT') AS reader_locations;
