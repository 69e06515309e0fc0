-- oms upgrade script 0.1.0 -> 0.2.0: security and reliability fixes.
-- Frozen once 0.2.0 is released; later changes go into the next script.
-- test/suites/upgrade.sh proves that a database updated with this script
-- has the same catalog as a fresh install of 0.2.0.

\echo Use "ALTER EXTENSION oms UPDATE TO '0.2.0'" to load this file. \quit

-- ALTER EXTENSION runs this script with the extension's schema (usually
-- public) first in search_path, where a database owner may have planted
-- operators for oms types: resolve nothing through it.
SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
