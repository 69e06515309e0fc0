-- test/upgrade/catalog.sql: a normalized description of extension oms.
--
-- Prints one line (or, for definitions, one block) per property of every
-- object of the extension and of what hangs off it (columns, constraints,
-- indexes, triggers, policies, rules, comments, privileges), sorted, so that
-- two databases can be compared with diff: test/t/040_upgrade.pl compares a
-- fresh CREATE EXTENSION with CREATE EXTENSION ... VERSION '<old>' followed
-- by ALTER EXTENSION ... UPDATE.  Run it with psql -X -At.
--
-- Objects are named, never numbered: OIDs, attnums and owners differ between
-- the two databases even when the catalogs are the same.  Column positions
-- are counted over the live columns, so a dropped column leaves no gap;
-- an ACL names the owner "=owner", so it does not depend on who installed.
-- Role names are kept: both databases live in the same cluster.

-- Qualified names everywhere (regprocedure, regclass, pg_get_*def) and the
-- byte order of the C collation for sorting.
SET search_path = pg_catalog;

-- An ACL as sorted "grantee=privilege[*]/grantor" items, the owner as
-- "=owner"; "(default)" when none was ever set (NULL: the built-in
-- defaults, which differ from an explicit list even when equivalent).
-- A temporary function: nothing is left in the database.
CREATE FUNCTION pg_temp.acl_text(p_acl aclitem[], p_owner oid)
RETURNS text
LANGUAGE sql STABLE
AS $$
	SELECT CASE WHEN p_acl IS NULL THEN '(default)' ELSE coalesce((
		SELECT string_agg(x, ' ' ORDER BY x COLLATE "C")
		FROM (SELECT format('%s=%s%s/%s',
					CASE WHEN a.grantee = 0 THEN 'public' WHEN a.grantee = p_owner THEN '=owner'
						 ELSE a.grantee::regrole::text END,
					a.privilege_type, CASE WHEN a.is_grantable THEN '*' ELSE '' END,
					CASE WHEN a.grantor = p_owner THEN '=owner' ELSE a.grantor::regrole::text END) AS x
			  FROM aclexplode(p_acl) AS a) AS items), '(none)') END
$$;

WITH ext AS (
	SELECT e.oid, e.extname, e.extversion, e.extrelocatable, e.extconfig, e.extcondition, n.nspname
	FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
	WHERE e.extname = 'oms'
),
member AS (
	SELECT d.classid, d.objid, d.objsubid
	FROM pg_depend AS d, ext
	WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
-- Relations of the extension, and the sequences of their identity or
-- serial columns (not members themselves when created by ALTER TABLE).
rel AS (
	SELECT c.oid, c.oid::regclass::text AS name, c.relkind, c.relowner
	FROM pg_class AS c
	WHERE c.oid IN (SELECT objid FROM member WHERE classid = 'pg_class'::regclass)
	   OR (c.relkind = 'S' AND
		   c.oid IN (SELECT d.objid FROM pg_depend AS d JOIN member AS m ON m.objid = d.refobjid
					 AND m.classid = 'pg_class'::regclass
					 WHERE d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
	UNION
	-- Composite types: their relation is not a member, their type is.
	SELECT c.oid, c.oid::regclass::text, c.relkind, c.relowner
	FROM pg_type AS t JOIN pg_class AS c ON c.oid = t.typrelid
	WHERE t.oid IN (SELECT objid FROM member WHERE classid = 'pg_type'::regclass) AND c.relkind = 'c'
),
func AS (
	SELECT p.oid, p.oid::regprocedure::text AS name, p.proowner
	FROM pg_proc AS p
	WHERE p.oid IN (SELECT objid FROM member WHERE classid = 'pg_proc'::regclass)
),
typ AS (
	SELECT t.oid, format_type(t.oid, NULL) AS name, t.typowner
	FROM pg_type AS t
	WHERE t.oid IN (SELECT objid FROM member WHERE classid = 'pg_type'::regclass)
),
nsp AS (
	SELECT n.oid, n.nspname::text AS name, n.nspowner
	FROM pg_namespace AS n
	WHERE n.oid IN (SELECT objid FROM member WHERE classid = 'pg_namespace'::regclass)
),
line (obj, prop, val) AS (
	-- ------------------------------------------------------ the extension
	SELECT 'extension oms', 'schema', ext.nspname::text FROM ext
	UNION ALL SELECT 'extension oms', 'version', ext.extversion FROM ext
	UNION ALL SELECT 'extension oms', 'relocatable', ext.extrelocatable::text FROM ext
	-- extconfig and extcondition are parallel arrays: name each condition by its table.
	UNION ALL
	SELECT 'extension oms', 'config table', c.tbl::regclass::text || ' WHERE ' || coalesce(nullif(c.cond, ''), '(all rows)')
	FROM ext, unnest(ext.extconfig, ext.extcondition) AS c (tbl, cond)
	-- Every member by description: catches kinds the sections below do not detail.
	UNION ALL
	SELECT 'extension oms', 'member', pg_describe_object(m.classid, m.objid, m.objsubid) FROM member AS m

	-- ----------------------------------------------------------- schemas
	UNION ALL SELECT 'schema ' || nsp.name, 'comment', obj_description(nsp.oid, 'pg_namespace') FROM nsp
	UNION ALL
	SELECT 'schema ' || nsp.name, 'acl', a.acl
	FROM nsp JOIN pg_namespace AS n ON n.oid = nsp.oid,
		 LATERAL (SELECT pg_temp.acl_text(n.nspacl, n.nspowner) AS acl) AS a
	-- Default privileges someone set for the schema.
	UNION ALL
	SELECT 'schema ' || nsp.name, 'default acl for ' || da.defaclobjtype::text, pg_temp.acl_text(da.defaclacl, da.defaclrole)
	FROM nsp JOIN pg_default_acl AS da ON da.defaclnamespace = nsp.oid

	-- --------------------------------------------------------- functions
	UNION ALL
	SELECT 'function ' || f.name, v.prop, v.val
	FROM func AS f JOIN pg_proc AS p ON p.oid = f.oid,
		 LATERAL (VALUES
			('kind', p.prokind::text),
			('definition', CASE WHEN p.prokind IN ('f', 'p', 'w') THEN pg_get_functiondef(p.oid) END),
			('result', pg_get_function_result(p.oid)),
			('arguments', pg_get_function_arguments(p.oid)),
			('language', (SELECT l.lanname::text FROM pg_language AS l WHERE l.oid = p.prolang)),
			('config', array_to_string(ARRAY(SELECT x FROM unnest(p.proconfig) AS x ORDER BY x COLLATE "C"), ', ')),
			('volatility', p.provolatile::text),
			('strict', p.proisstrict::text),
			('security definer', p.prosecdef::text),
			('leakproof', p.proleakproof::text),
			('parallel', p.proparallel::text),
			('cost', p.procost::text),
			('rows', p.prorows::text),
			('support', p.prosupport::regproc::text),
			('comment', obj_description(p.oid, 'pg_proc')),
			('acl', pg_temp.acl_text(p.proacl, p.proowner))
		 ) AS v (prop, val)
	-- Aggregates, should there ever be any: pg_get_functiondef refuses them.
	UNION ALL
	SELECT 'function ' || f.name, 'aggregate',
		   format('sfunc %s stype %s finalfunc %s combinefunc %s initcond %s sortop %s',
				  a.aggtransfn::regproc, format_type(a.aggtranstype, NULL), a.aggfinalfn::regproc,
				  a.aggcombinefn::regproc, a.agginitval, a.aggsortop::regoperator)
	FROM func AS f JOIN pg_aggregate AS a ON a.aggfnoid = f.oid

	-- --------------------------------------------------------- relations
	UNION ALL
	SELECT 'relation ' || r.name, v.prop, v.val
	FROM rel AS r JOIN pg_class AS c ON c.oid = r.oid,
		 LATERAL (VALUES
			('kind', c.relkind::text),
			('persistence', c.relpersistence::text),
			('access method', (SELECT am.amname::text FROM pg_am AS am WHERE am.oid = c.relam)),
			('options', array_to_string(ARRAY(SELECT x FROM unnest(c.reloptions) AS x ORDER BY x COLLATE "C"), ', ')),
			('replica identity', CASE WHEN c.relkind IN ('r', 'p') THEN c.relreplident::text END),
			('row security', CASE WHEN c.relkind IN ('r', 'p') THEN c.relrowsecurity::text || ' force ' || c.relforcerowsecurity::text END),
			('view definition', CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END),
			('comment', obj_description(c.oid, 'pg_class')),
			('acl', pg_temp.acl_text(c.relacl, c.relowner))
		 ) AS v (prop, val)

	-- Columns, numbered over the live ones in attnum order.
	UNION ALL
	SELECT 'relation ' || r.name, 'column ' || lpad(a.pos::text, 3, '0') || ' ' || a.attname, v.val
	FROM rel AS r
	JOIN LATERAL (SELECT att.*, row_number() OVER (ORDER BY att.attnum) AS pos
				  FROM pg_attribute AS att
				  WHERE att.attrelid = r.oid AND att.attnum > 0 AND NOT att.attisdropped) AS a ON true
	CROSS JOIN LATERAL (VALUES
		(concat_ws(' ', format_type(a.atttypid, a.atttypmod),
			CASE WHEN a.attnotnull THEN 'not null' END,
			'default ' || (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef AS d
						   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum),
			CASE a.attidentity WHEN 'a' THEN 'generated always as identity'
							   WHEN 'd' THEN 'generated by default as identity' END,
			CASE a.attgenerated WHEN 's' THEN 'generated stored' END,
			-- Only a collation other than the type's own.
			(SELECT 'collate ' || co.collname FROM pg_collation AS co
			 WHERE co.oid = a.attcollation AND a.attcollation <> (SELECT t.typcollation FROM pg_type AS t WHERE t.oid = a.atttypid)),
			'storage ' || a.attstorage::text,
			CASE WHEN a.attcompression <> '' THEN 'compression ' || a.attcompression::text END,
			CASE WHEN a.attstattarget <> -1 THEN 'statistics ' || a.attstattarget END,
			-- This server stamps every column with pg_attver=<WAL position
			-- when it was added>: a fact of history, not a setting.
			'options ' || nullif(array_to_string(ARRAY(SELECT x FROM unnest(a.attoptions) AS x
													   WHERE x NOT LIKE 'pg\_attver=%' ORDER BY x COLLATE "C"), ', '), ''))),
		('comment: ' || col_description(r.oid, a.attnum)),
		('acl: ' || CASE WHEN a.attacl IS NOT NULL THEN pg_temp.acl_text(a.attacl, r.relowner) END)
	) AS v (val)
	WHERE v.val IS NOT NULL

	-- Constraints of tables and of domains, by name.
	UNION ALL
	SELECT coalesce('relation ' || r.name, 'type ' || t.name), 'constraint ' || con.conname,
		   concat_ws(' ', pg_get_constraintdef(con.oid),
					 CASE WHEN NOT con.conislocal THEN 'inherited' END,
					 'comment ' || obj_description(con.oid, 'pg_constraint'))
	FROM pg_constraint AS con
	LEFT JOIN rel AS r ON r.oid = con.conrelid
	LEFT JOIN typ AS t ON t.oid = con.contypid
	WHERE r.oid IS NOT NULL OR t.oid IS NOT NULL

	-- Indexes, constraint-backed ones included.
	UNION ALL
	SELECT 'relation ' || r.name, 'index ' || ic.relname,
		   concat_ws(' ', pg_get_indexdef(i.indexrelid),
					 CASE WHEN i.indisclustered THEN 'clustered' END,
					 CASE WHEN i.indisreplident THEN 'replica identity' END,
					 CASE WHEN NOT i.indisvalid THEN 'INVALID' END,
					 'comment ' || obj_description(i.indexrelid, 'pg_class'))
	FROM rel AS r JOIN pg_index AS i ON i.indrelid = r.oid JOIN pg_class AS ic ON ic.oid = i.indexrelid

	-- Triggers (not the internal ones behind foreign keys: the constraint says it).
	UNION ALL
	SELECT 'relation ' || r.name, 'trigger ' || tg.tgname,
		   concat_ws(' ', pg_get_triggerdef(tg.oid), 'enabled ' || tg.tgenabled::text,
					 'comment ' || obj_description(tg.oid, 'pg_trigger'))
	FROM rel AS r JOIN pg_trigger AS tg ON tg.tgrelid = r.oid
	WHERE NOT tg.tgisinternal
	-- The internal ones only by their constraint and state (their names hold OIDs):
	-- ALTER TABLE ... DISABLE TRIGGER ALL turns them off too.
	UNION ALL
	SELECT 'relation ' || r.name, 'internal triggers of constraint ' || con.conname,
		   string_agg(tg.tgenabled::text, ' ' ORDER BY tg.tgenabled::text COLLATE "C")
	FROM rel AS r JOIN pg_trigger AS tg ON tg.tgrelid = r.oid JOIN pg_constraint AS con ON con.oid = tg.tgconstraint
	WHERE tg.tgisinternal
	GROUP BY r.name, con.conname

	-- Row-level security policies.
	UNION ALL
	SELECT 'relation ' || r.name, 'policy ' || pol.polname,
		   format('cmd %s permissive %s roles %s using %s with check %s', pol.polcmd, pol.polpermissive,
				  ARRAY(SELECT CASE WHEN x = 0 THEN 'public' ELSE x::regrole::text END
						FROM unnest(pol.polroles) AS x ORDER BY 1),
				  pg_get_expr(pol.polqual, pol.polrelid), pg_get_expr(pol.polwithcheck, pol.polrelid))
	FROM rel AS r JOIN pg_policy AS pol ON pol.polrelid = r.oid

	-- Rules other than a view's own.
	UNION ALL
	SELECT 'relation ' || r.name, 'rule ' || ru.rulename, pg_get_ruledef(ru.oid) || ' enabled ' || ru.ev_enabled::text
	FROM rel AS r JOIN pg_rewrite AS ru ON ru.ev_class = r.oid
	WHERE ru.rulename <> '_RETURN'

	-- Sequence parameters (the current value is data, not catalog).
	UNION ALL
	SELECT 'relation ' || r.name, 'sequence',
		   format('type %s start %s increment %s min %s max %s cache %s cycle %s owned by %s',
				  format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
				  (SELECT string_agg(pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid) || ' (' || d.deptype::text || ')', ', ')
				   FROM pg_depend AS d
				   WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid AND d.refclassid = 'pg_class'::regclass
					 AND d.deptype IN ('a', 'i')))
	FROM rel AS r JOIN pg_sequence AS s ON s.seqrelid = r.oid

	-- ------------------------------------------------------------- types
	UNION ALL
	SELECT 'type ' || t.name, v.prop, v.val
	FROM typ AS t JOIN pg_type AS ty ON ty.oid = t.oid,
		 LATERAL (VALUES
			('kind', ty.typtype::text),
			-- Enum labels in their sort order, which ALTER TYPE ... ADD VALUE can change.
			('labels', CASE WHEN ty.typtype = 'e' THEN
				(SELECT string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder) FROM pg_enum AS e WHERE e.enumtypid = ty.oid) END),
			('domain of', CASE WHEN ty.typtype = 'd' THEN
				concat_ws(' ', format_type(ty.typbasetype, ty.typtypmod), CASE WHEN ty.typnotnull THEN 'not null' END,
						  'default ' || ty.typdefault,
						  (SELECT 'collate ' || co.collname FROM pg_collation AS co WHERE co.oid = ty.typcollation)) END),
			('range of', (SELECT format('%s opclass %s', format_type(rg.rngsubtype, NULL), rg.rngsubopc::regclass)
						  FROM pg_range AS rg WHERE rg.rngtypid = ty.oid)),
			('composite of', (SELECT c.oid::regclass::text FROM pg_class AS c WHERE c.oid = ty.typrelid)),
			('comment', obj_description(ty.oid, 'pg_type')),
			('acl', pg_temp.acl_text(ty.typacl, ty.typowner))
		 ) AS v (prop, val)

	-- --------------------------- event triggers, casts, operators, if any
	UNION ALL
	SELECT 'event trigger ' || et.evtname,
		   'definition',
		   format('on %s tags %s execute %s enabled %s', et.evtevent, et.evttags, et.evtfoid::regprocedure, et.evtenabled)
	FROM pg_event_trigger AS et
	WHERE et.oid IN (SELECT objid FROM member WHERE classid = 'pg_event_trigger'::regclass)
	UNION ALL
	SELECT pg_describe_object('pg_cast'::regclass, ca.oid, 0), 'definition',
		   format('function %s context %s method %s', ca.castfunc::regprocedure, ca.castcontext, ca.castmethod)
	FROM pg_cast AS ca
	WHERE ca.oid IN (SELECT objid FROM member WHERE classid = 'pg_cast'::regclass)
	UNION ALL
	SELECT 'operator ' || op.oid::regoperator::text, 'definition',
		   format('result %s code %s commutator %s negator %s restrict %s join %s hashes %s merges %s comment %s',
				  format_type(op.oprresult, NULL), op.oprcode::regproc, op.oprcom::regoperator, op.oprnegate::regoperator,
				  op.oprrest::regproc, op.oprjoin::regproc, op.oprcanhash, op.oprcanmerge, obj_description(op.oid, 'pg_operator'))
	FROM pg_operator AS op
	WHERE op.oid IN (SELECT objid FROM member WHERE classid = 'pg_operator'::regclass)

	-- ------------------------------------------------------------- roles
	-- The roles the script creates (not members: roles belong to the cluster).
	UNION ALL
	SELECT 'role ' || ro.rolname, 'attributes',
		   format('superuser %s inherit %s createrole %s createdb %s login %s replication %s bypassrls %s connlimit %s',
				  ro.rolsuper, ro.rolinherit, ro.rolcreaterole, ro.rolcreatedb, ro.rolcanlogin, ro.rolreplication,
				  ro.rolbypassrls, ro.rolconnlimit)
	FROM pg_roles AS ro
	WHERE ro.rolname IN ('oms_app', 'oms_reader', 'oms_admin')
	UNION ALL
	SELECT 'role ' || mr.rolname, 'member of', g.rolname || CASE WHEN am.admin_option THEN ' with admin option' ELSE '' END
	FROM pg_auth_members AS am
	JOIN pg_roles AS mr ON mr.oid = am.member
	JOIN pg_roles AS g ON g.oid = am.roleid
	WHERE mr.rolname IN ('oms_app', 'oms_reader', 'oms_admin') OR g.rolname IN ('oms_app', 'oms_reader', 'oms_admin')
)
SELECT obj || ' | ' || prop || ': ' || val
FROM line
WHERE val IS NOT NULL AND val <> ''
ORDER BY obj COLLATE "C", prop COLLATE "C", val COLLATE "C";
