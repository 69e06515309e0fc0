#!/usr/bin/python3
"""test/reference.py: the reference tables of the docs, generated from the catalog.

Connects (libpq's PGHOST, PGPORT, PGUSER, PGDATABASE) to a database where
CREATE EXTENSION oms has just run, as a superuser (superuser-only settings
are hidden from other roles), and writes into OUTDIR (default: docs/):

  reference.md       every function of the API (oms_*) and every other
                     function of the extension an oms role may execute:
                     signature, result, language, volatility, SECURITY
                     DEFINER, who may execute it, COMMENT; the tables and
                     views granted to the roles; the enum types.
  configuration.md   docs/configuration.md with the settings table between
                     its markers regenerated from pg_settings (oms.*);
                     everything outside the markers is copied unchanged.

Nothing here is hand-written but the grouping of the API functions (GROUPS)
and the sentences around the tables.  test/suites/reference.sh runs this
into a temporary directory and fails when docs/ differs; regenerate with
  OMS_DOC_UPDATE=1 OMS_SUITES=reference bash test/run.sh suites
"""
import os
import re
import sys

import psycopg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGEN = "OMS_DOC_UPDATE=1 OMS_SUITES=reference bash test/run.sh suites"
BEGIN = "<!-- generated:settings begin: test/reference.py writes this table from pg_settings; do not edit -->"
END = "<!-- generated:settings end -->"

# The roles of src/sql/roles.sql, in the order they are introduced there.
ROLES = ("oms_app", "oms_reader", "oms_admin")

# How the API is grouped on the page, and in which order.  A function not
# listed lands in a last group that says so.
GROUPS = [
    ("Orders", ["oms_create_order", "oms_get_order", "oms_cancel_order", "oms_order_timeline"]),
    ("Payments and refunds", ["oms_pay_order", "oms_refund_order", "oms_payment_result"]),
    ("Inventory", ["oms_set_stock", "oms_adjust_stock", "oms_release_expired_reservations"]),
    ("Sagas and dead letters", ["oms_run_sagas", "oms_retry_dead_letter"]),
    ("Maintenance", ["oms_run_maintenance", "oms_schedule_maintenance", "oms_unschedule_maintenance",
                     "oms_maintenance_jobs", "oms_purge_idempotency_keys"]),
    ("Monitoring", ["oms_health", "oms_metrics", "oms_relay_status", "oms_worker_status",
                    "oms_saga_worker_status"]),
    ("State machine and money", ["oms_transition_allowed", "oms_state_machine_dot", "oms_format_money"]),
]
UNGROUPED = "Not grouped yet (add them to GROUPS in test/reference.py)"
HELPERS = "Internal functions the roles may execute"

LANGUAGES = {"c": "C", "sql": "SQL", "plpgsql": "PL/pgSQL"}
VOLATILITY = {"i": "immutable", "s": "stable", "v": "volatile"}
ARG_MODES = {"i": "", "o": "OUT ", "b": "INOUT ", "v": "VARIADIC "}
RELKINDS = {"r": "table", "v": "view", "m": "materialized view", "p": "table", "f": "foreign table"}
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
WIDTH = 80

# Objects that are members of the extension.
MEMBERS = """
    SELECT d.objid FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
    WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
      AND d.classid = %s::pg_catalog.regclass AND d.deptype = 'e' AND e.extname = 'oms'
"""

# Where a kind of object keeps its ACL, the default when that is NULL, and
# the function that answers "may this role ..." (membership included).
ACLS = {
    "function": ("pg_proc", "proacl", "proowner", "f", "has_function_privilege"),
    "table": ("pg_class", "relacl", "relowner", "r", "has_table_privilege"),
}


def fetch(cur, sql, params=None):
    cur.execute(sql, params)
    return cur.fetchall()


def holders(cur, kind, oid, privilege):
    """Who holds a privilege: PUBLIC (granted to everyone) and the oms roles
    that hold it directly or through membership; None when nobody does."""
    catalog, acl, owner, objtype, check = ACLS[kind]
    roles = [f"`{r}`" for r in ROLES
             if fetch(cur, f"SELECT pg_catalog.{check}(%s, %s::oid, %s)", (r, oid, privilege))[0][0]]
    public = fetch(cur, f"""
        SELECT EXISTS (SELECT FROM pg_catalog.{catalog} o,
            pg_catalog.aclexplode(coalesce(o.{acl}, pg_catalog.acldefault(%s, o.{owner}))) a
            WHERE o.oid = %s AND a.grantee = 0 AND a.privilege_type = %s)
    """, (objtype, oid, privilege))[0][0]
    return ", ".join(["**PUBLIC**"] * public + roles) or None


# ------------------------------------------------------------ functions
def functions(cur):
    rows = fetch(cur, f"""
        SELECT p.oid, n.nspname, p.proname, n.oid = e.extnamespace AS in_ext_schema,
               l.lanname, p.provolatile, p.prosecdef, p.proisstrict,
               p.proretset, pg_catalog.format_type(p.prorettype, NULL),
               pg_catalog.obj_description(p.oid, 'pg_proc')
        FROM pg_catalog.pg_proc p
        JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        JOIN pg_catalog.pg_language l ON l.oid = p.prolang
        CROSS JOIN pg_catalog.pg_extension e
        WHERE e.extname = 'oms' AND p.oid IN ({MEMBERS})
        ORDER BY p.proname COLLATE "C", pg_catalog.pg_get_function_identity_arguments(p.oid) COLLATE "C"
    """, ("pg_catalog.pg_proc",))
    out = []
    for oid, nsp, name, in_ext, lang, vol, secdef, strict, retset, rettype, comment in rows:
        executors = holders(cur, "function", oid, "EXECUTE")
        if not (name.startswith("oms_") or executors):
            continue
        name = name if in_ext else f"{nsp}.{name}"
        out.append({
            "name": name,
            "signature": signature(cur, oid, name, retset, rettype),
            "attributes": ", ".join(filter(None, [
                LANGUAGES.get(lang, lang), VOLATILITY[vol], "STRICT" if strict else "",
                "SECURITY DEFINER" if secdef else "SECURITY INVOKER"])),
            "executors": executors or "no oms role",
            "comment": comment,
            "api": in_ext,
        })
    return out


def signature(cur, oid, name, retset, rettype):
    args = fetch(cur, """
        SELECT a.name, a.mode, pg_catalog.format_type(a.type, NULL),
               pg_catalog.pg_get_function_arg_default(p.oid, a.n::integer)
        FROM pg_catalog.pg_proc p,
             unnest(coalesce(p.proallargtypes, p.proargtypes::pg_catalog.oid[]),
                    p.proargnames, p.proargmodes) WITH ORDINALITY AS a(type, name, mode, n)
        WHERE p.oid = %s ORDER BY a.n
    """, (oid,))
    params, columns = [], []
    for aname, mode, atype, default in args:
        text = f"{aname} {atype}" if aname else atype
        if mode == "t":
            columns.append(text)
        else:
            params.append(ARG_MODES[mode or "i"] + text + (f" DEFAULT {default}" if default else ""))
    if columns:
        result = "TABLE (" + ", ".join(columns) + ")"
    else:
        result = ("SETOF " if retset else "") + rettype
    head = f"{name}({', '.join(params)})"
    if len(head) > WIDTH:
        head = f"{name}(\n" + ",\n".join("    " + p for p in params) + "\n)"
    returns = f"RETURNS {result}"
    if "\n" not in head and len(f"{head} {returns}") <= WIDTH:
        return f"{head} {returns}"
    if columns and len(returns) > WIDTH:
        returns = "RETURNS TABLE (\n" + ",\n".join("    " + c for c in columns) + "\n)"
    return f"{head}\n{returns}"


def sentence(text):
    """A COMMENT as a sentence: blanks collapsed, a final period."""
    if not text:
        return "**No COMMENT.**"
    text = " ".join(text.split())
    return text if text.endswith(".") else text + "."


def render_function(overloads):
    lines = [f"### {overloads[0]['name']}", ""]
    for f in overloads:
        lines += ["```sql", f["signature"], "```", "",
                  f"{f['attributes']}; executable by {f['executors']}.", "",
                  sentence(f["comment"]), ""]
    return lines


def render_functions(funcs):
    by_name = {}
    for f in funcs:
        by_name.setdefault(f["name"], []).append(f)
    grouped = [(title, [n for n in names if n in by_name]) for title, names in GROUPS]
    listed = {n for _, names in GROUPS for n in names}
    grouped.append((UNGROUPED, [n for n in by_name if by_name[n][0]["api"] and n not in listed]))
    grouped.append((HELPERS, [n for n in by_name if not by_name[n][0]["api"]]))
    lines = []
    for title, names in grouped:
        if not names:
            continue
        lines += [f"## {title}", ""]
        if title == HELPERS:
            lines += ["Not an API: functions in schema `oms` that the roles need EXECUTE on because views,",
                      "functions running with the caller's privileges, or pg_cron jobs call them. They may",
                      "change in any release.", ""]
        for n in names:
            lines += render_function(by_name[n])
    return contents(grouped) + lines


def contents(grouped):
    lines = ["## Contents", ""]
    seen = {}
    for title, names in grouped:
        if not names:
            continue
        links = []
        for n in names:
            # GitHub's anchors: dots dropped, a repeated one numbered
            # (oms._run_maintenance after oms_run_maintenance).
            slug = n.replace(".", "")
            seen[slug] = seen.get(slug, -1) + 1
            links.append(f"[{n}](#{slug}{f'-{seen[slug]}' if seen[slug] else ''})")
        lines.append(f"- **{title}**: " + ", ".join(links))
    lines += ["- [Tables and views](#tables-and-views), [Types](#types)", ""]
    return lines


# ------------------------------------------------- tables, views, types
def render_relations(cur):
    rows = fetch(cur, f"""
        SELECT c.oid, c.oid::pg_catalog.regclass::text, c.relkind,
               pg_catalog.obj_description(c.oid, 'pg_class')
        FROM pg_catalog.pg_class c
        WHERE c.oid IN ({MEMBERS}) AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
        ORDER BY c.oid::pg_catalog.regclass::text COLLATE "C"
    """, ("pg_catalog.pg_class",))
    lines, granted = [], set()
    for oid, name, kind, comment in rows:
        grants = []
        for priv in TABLE_PRIVILEGES:
            who = holders(cur, "table", oid, priv)
            if who:
                grants.append(f"`{priv}`: {who}")
                granted.add(priv)
        if not grants:
            continue
        cols = fetch(cur, """
            SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
            FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
        """, (oid,))
        lines += [f"### {name} ({RELKINDS[kind]})", "",
                  sentence(comment), "",
                  "; ".join(grants) + ".", "",
                  "Columns: " + ", ".join(f"`{c}` {t}" for c, t in cols) + ".", ""]
    intro = ["## Tables and views", "",
             "The tables and views of the extension that an oms role may use, and how."]
    if granted <= {"SELECT"}:
        intro.append("No role may change them directly: applications go through the functions.")
    return intro + [""] + lines


def render_types(cur):
    rows = fetch(cur, f"""
        SELECT t.oid::pg_catalog.regtype::text, pg_catalog.obj_description(t.oid, 'pg_type'),
               pg_catalog.array_agg(e.enumlabel ORDER BY e.enumsortorder)
        FROM pg_catalog.pg_type t JOIN pg_catalog.pg_enum e ON e.enumtypid = t.oid
        WHERE t.oid IN ({MEMBERS})
        GROUP BY t.oid ORDER BY t.oid::pg_catalog.regtype::text COLLATE "C"
    """, ("pg_catalog.pg_type",))
    lines = ["## Types", ""]
    for name, comment, labels in rows:
        lines += [f"### {name} (enum)", "",
                  sentence(comment), "",
                  "Values, in sort order: " + ", ".join(f"`{v}`" for v in labels) + ".", ""]
    return lines


def render_intro(cur):
    members = fetch(cur, """
        SELECT r.rolname, pg_catalog.array_agg(g.rolname ORDER BY g.rolname)
        FROM pg_catalog.pg_auth_members m
        JOIN pg_catalog.pg_roles r ON r.oid = m.member
        JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
        WHERE r.rolname = ANY(%s) AND g.rolname = ANY(%s) GROUP BY r.rolname
    """, (list(ROLES), list(ROLES)))
    membership = "; ".join(f"`{r}` is a member of " + " and ".join(f"`{g}`" for g in gs)
                           for r, gs in members)
    usage = fetch(cur, "SELECT r FROM unnest(%s::text[]) r "
                       "WHERE pg_catalog.has_schema_privilege(r, 'oms', 'USAGE')", (list(ROLES),))
    return [
        "# oms reference",
        "",
        f"<!-- Generated by test/reference.py; do not edit. Regenerate: {REGEN} -->",
        "",
        "Generated from the catalog of a database right after `CREATE EXTENSION oms`",
        "(`pg_proc`, `pg_class`, `pg_type`), and checked by `make test` (suite `reference`):",
        f"do not edit it; regenerate with `{REGEN}`.",
        "What the functions do, with examples: [api.md](api.md); their errors: [errors.md](errors.md);",
        "the settings: [configuration.md](configuration.md#settings).",
        "",
        "- The `oms_*` functions live in the schema the extension was installed in (usually",
        "  `public`), everything else in schema `oms`.",
        "- Roles: " + ", ".join(f"`{r}`" for r in ROLES) + (f"; {membership}" if membership else "") + ".",
        "  \"Executable by\" and the table privileges name the roles that hold the privilege,",
        "  granted directly or through membership; superusers and the extension's owner hold",
        "  them all. Nothing is granted to PUBLIC unless it says so.",
        "- Schema `oms`: `USAGE` for " + (", ".join(f"`{r}`" for (r,) in usage) or "no oms role") + ".",
        "- Argument defaults and types are printed as PostgreSQL prints them (`NULL::text`).",
        "",
    ]


# -------------------------------------------------------------- settings
UNIT_STEPS = {
    "ms": [("d", 86400000), ("h", 3600000), ("min", 60000), ("s", 1000), ("ms", 1)],
    "s": [("d", 86400), ("h", 3600), ("min", 60), ("s", 1)],
    "B": [("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10), ("B", 1)],
}


def show_value(value, unit):
    """A default as SHOW prints it: the largest unit that divides it exactly."""
    if unit not in UNIT_STEPS or int(value) <= 0:
        return value
    n = int(value)
    for name, size in UNIT_STEPS[unit]:
        if n % size == 0:
            return f"{n // size}{name}"
    return value


def anchors(text):
    """Setting name -> anchor of the configuration.md heading that names it."""
    found = {}
    for heading in re.findall(r"^#{2,4} (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        for name in re.findall(r"oms\.\w+", heading):
            found.setdefault(name, slug)
    return found


def cell(text):
    return " ".join(text.split()).replace("|", "\\|")


def render_settings(cur, text):
    # What a role that is not a superuser does not see is superuser-only.
    cur.execute("SET LOCAL ROLE oms_reader")
    visible = {n for (n,) in fetch(cur, "SELECT name FROM pg_catalog.pg_settings WHERE name LIKE 'oms.%'")}
    cur.execute("RESET ROLE")
    rows = fetch(cur, """
        SELECT name, vartype, context, boot_val, min_val, max_val, enumvals, unit,
               short_desc, extra_desc
        FROM pg_catalog.pg_settings WHERE name LIKE 'oms.%' ORDER BY name COLLATE "C"
    """)
    links = anchors(text)
    lines = [BEGIN, "",
             "| Name | Type | Context | Default | Allowed | Unit | Description |",
             "|---|---|---|---|---|---|---|"]
    for name, vartype, context, boot, lo, hi, enums, unit, short, extra in rows:
        shown = show_value(boot, unit)
        default = "empty" if boot == "" else f"`{boot}`"
        if shown not in (boot, f"{boot}{unit}"):
            default += f" (`{shown}`)"
        allowed = (", ".join(f"`{v}`" for v in enums) if enums
                   else "`on`, `off`" if vartype == "bool"
                   else f"{lo} to {hi}" if lo is not None else "")
        desc = sentence(short) + (" " + sentence(extra) if extra else "")
        if name not in visible:
            desc += " Readable by superusers (and `pg_read_all_settings`) only."
        link = f"[`{name}`](#{links[name]})" if name in links else f"`{name}`"
        lines.append("| " + " | ".join(cell(c) for c in (link, vartype, context, default, allowed,
                                                           unit or "", desc)) + " |")
    lines += ["", END]
    return lines


def splice(text, block):
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        sys.exit(f"reference.py: configuration.md lacks the markers:\n{BEGIN}\n{END}")
    return text[:start] + "\n".join(block) + text[end + len(END):]


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "docs")
    with open(os.path.join(ROOT, "docs", "configuration.md")) as f:
        config = f.read()
    with psycopg.connect() as conn, conn.cursor() as cur:
        if not fetch(cur, "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user")[0][0]:
            sys.exit("reference.py: connect as a superuser (others do not see every setting)")
        page = render_intro(cur) + render_functions(functions(cur)) + render_relations(cur) + render_types(cur)
        config = splice(config, render_settings(cur, config))
        conn.rollback()
    with open(os.path.join(outdir, "reference.md"), "w") as f:
        f.write("\n".join(page).rstrip("\n") + "\n")
    with open(os.path.join(outdir, "configuration.md"), "w") as f:
        f.write(config)


if __name__ == "__main__":
    main()
