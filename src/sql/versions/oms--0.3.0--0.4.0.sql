-- oms upgrade script 0.3.0 -> 0.4.0: the rest of an order's life (stock in
-- locations, a quantity ledger per line, status in three dimensions,
-- shipments, canceling what has not shipped, returns).  Frozen once 0.4.0
-- is released; later changes go into the next script.
-- test/t/040_upgrade.pl proves that a database updated with this script
-- has the same catalog as a fresh install of 0.4.0.

\echo Use "ALTER EXTENSION oms UPDATE TO '0.4.0'" to load this file. \quit

-- ALTER EXTENSION runs this script with the extension's schema (usually
-- public) first in search_path, where a database owner may have planted
-- operators for oms types: resolve nothing through it.
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

--
-- Stock in locations (src/sql/inventory.sql).
--

--
-- State machines, the line ledger, shipments, returns (src/sql/state.sql,
-- src/sql/schema.sql, src/sql/fulfillment.sql, src/sql/returns.sql).
--
