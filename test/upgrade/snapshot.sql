-- test/upgrade/snapshot.sql: row checksums of every table and sequence of
-- extension oms, so test/t/040_upgrade.pl can prove that an update lost or
-- changed no row.  Creates, in the test database (outside the extension):
--
--   public.upgrade_snapshot  (label, relation, columns, row_count, checksum)
--   public.upgrade_snapshot(label, columns_of, exclude)
--       records one row per table and sequence of the extension under
--       "label".  A table's checksum is the md5 of its rows as text, sorted
--       (so it does not depend on physical order), over the columns listed:
--       its live columns now, or with columns_of the columns snapshot
--       "columns_of" recorded for it.  Comparing a snapshot taken after an
--       update with columns_of = the one before compares the old columns
--       only: a column the update adds is new data, and its definition is the
--       catalog comparison's business.  exclude lists "schema.table" or
--       "schema.table.column" to leave out: intended data migrations.
--       A sequence's "row" is its last_value and is_called.
--   public.upgrade_snapshot_diff(before, after)
--       one row per relation whose count or checksum differs, or that only
--       one of the two snapshots has.
\set ON_ERROR_STOP 1

CREATE TABLE IF NOT EXISTS public.upgrade_snapshot (
	label		text NOT NULL,
	relation	text NOT NULL,
	columns		text[] NOT NULL,
	row_count	bigint NOT NULL,
	checksum	text NOT NULL,
	PRIMARY KEY (label, relation)
);

-- The live columns of a table, in order, minus the excluded ones.
CREATE OR REPLACE FUNCTION public.upgrade_columns(p_rel regclass, p_exclude text[])
RETURNS text[]
LANGUAGE sql STABLE
AS $$
	SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}')
	FROM pg_catalog.pg_attribute AS a
	WHERE a.attrelid = p_rel AND a.attnum > 0 AND NOT a.attisdropped
	  AND p_rel::text || '.' || a.attname <> ALL (p_exclude)
$$;

-- Count and checksum of a table over some columns; a column that is gone
-- makes the checksum say so instead of failing the whole snapshot.
CREATE OR REPLACE FUNCTION public.upgrade_checksum(p_rel regclass, p_columns text[], OUT row_count bigint, OUT checksum text)
LANGUAGE plpgsql
AS $$
DECLARE
	v_missing text[] := ARRAY(SELECT c FROM unnest(p_columns) AS c
							  WHERE c <> ALL (public.upgrade_columns(p_rel, '{}')));
BEGIN
	IF v_missing <> '{}' THEN
		row_count := -1;
		checksum := 'columns gone: ' || array_to_string(v_missing, ', ');
		RETURN;
	END IF;
	EXECUTE format('SELECT count(*), md5(coalesce(string_agg(t.r, E''\n'' ORDER BY t.r COLLATE "C"), ''''))
					FROM (SELECT ROW(%s)::text AS r FROM %s AS x) AS t',
				   (SELECT string_agg('x.' || quote_ident(c), ', ') FROM unnest(p_columns) AS c), p_rel)
		INTO row_count, checksum;
END;
$$;

CREATE OR REPLACE FUNCTION public.upgrade_snapshot(p_label text, p_columns_of text DEFAULT NULL,
												   p_exclude text[] DEFAULT '{}')
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
	r record;
	v_columns text[];
	v_count bigint;
	v_sum text;
	v_n integer := 0;
BEGIN
	DELETE FROM public.upgrade_snapshot AS s WHERE s.label = p_label;
	FOR r IN
		SELECT c.oid::regclass AS rel, c.relkind
		FROM pg_catalog.pg_depend AS d
		JOIN pg_catalog.pg_class AS c ON c.oid = d.objid
		WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e' AND c.relkind IN ('r', 'p', 'S')
		  AND d.refclassid = 'pg_extension'::regclass
		  AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension AS e WHERE e.extname = 'oms')
		  AND c.oid::regclass::text <> ALL (p_exclude)
	LOOP
		IF r.relkind = 'S' THEN
			v_columns := '{last_value,is_called}';
		ELSE
			v_columns := NULL;
			IF p_columns_of IS NOT NULL THEN
				SELECT s.columns INTO v_columns FROM public.upgrade_snapshot AS s
				WHERE s.label = p_columns_of AND s.relation = r.rel::text;
			END IF;
			-- Not in the earlier snapshot: a table the update created.
			v_columns := coalesce(v_columns, public.upgrade_columns(r.rel, p_exclude));
		END IF;
		SELECT * INTO v_count, v_sum FROM public.upgrade_checksum(r.rel, v_columns);
		INSERT INTO public.upgrade_snapshot VALUES (p_label, r.rel::text, v_columns, v_count, v_sum);
		v_n := v_n + 1;
	END LOOP;
	RETURN v_n;
END;
$$;

CREATE OR REPLACE FUNCTION public.upgrade_snapshot_diff(p_before text, p_after text)
RETURNS TABLE (relation text, difference text)
LANGUAGE sql STABLE
AS $$
	SELECT coalesce(b.relation, a.relation),
		   CASE WHEN a.relation IS NULL THEN 'only before (' || b.row_count || ' rows)'
				WHEN b.relation IS NULL THEN 'only after (' || a.row_count || ' rows)'
				ELSE format('rows %s -> %s, checksum %s -> %s', b.row_count, a.row_count, b.checksum, a.checksum) END
	FROM (SELECT * FROM public.upgrade_snapshot AS s WHERE s.label = p_before) AS b
	FULL JOIN (SELECT * FROM public.upgrade_snapshot AS s WHERE s.label = p_after) AS a USING (relation)
	WHERE a.relation IS NULL OR b.relation IS NULL
	   OR a.row_count <> b.row_count OR a.checksum <> b.checksum OR a.columns <> b.columns
	ORDER BY 1
$$;
