#!/usr/bin/env python3
"""test/lint_sql.py FILE...: the SQL conventions of docs/architecture.md
("SQL conventions"), checked on the extension's SQL source (test/lint.sh sql).

Reports, one line per finding ("file:line: message"), and exits 1 when any:
  - a CREATE FUNCTION or CREATE PROCEDURE without
    SET search_path = pg_catalog, pg_temp;
  - a call of a function by a bare name, anywhere in the file (function
    bodies, DO blocks, views, defaults): oms's own are written oms.name,
    built-ins pg_catalog.name.  What SQL spells as syntax cannot be
    qualified and is not a call: the keywords of SYNTAX below (COALESCE,
    EXTRACT(... FROM ...), IN (...), FILTER (...), ...), type modifiers
    (numeric(12, 2)) and column lists of an alias (AS r(id, error));
  - a bare name of a catalog relation (pg_class): pg_catalog.pg_class.
The body of a LANGUAGE plproxy function (the router's, src/router/) is
the query PL/Proxy sends to a shard, resolved there: it is not read.
Operators and type names stay bare: the pinned search_path resolves them
in pg_catalog, and nothing else can.  Comments, string literals (dynamic
SQL included) and quoted identifiers are not read.

No server is needed, so a name that is neither a keyword below nor
qualified is reported even when PostgreSQL would call it something else: a
new keyword-like construct goes into SYNTAX, with the statement that needs
it in mind.
"""
import re
import sys

SEARCH_PATH = re.compile(r'\bSET\s+search_path\s*=\s*pg_catalog\s*,\s*pg_temp\b', re.I)

# Words followed by "(" that are SQL or PL/pgSQL syntax, not function calls.
SYNTAX = set('''
    all and any array as between by case cast check coalesce conflict default
    distinct else elsif enum exists extract filter from greatest group having
    if in include into is join key lateral least like limit not nullif offset
    on or over overlaps overlay position primary query references return
    returning row select set some substring table then trim union unique
    using values when where while with within
    brin btree gin gist hash
    bit char character decimal float interval numeric time timestamp
    timestamptz timetz varbit varchar varying
'''.split())


def strip(text):
    """The text with comments, string literals and quoted identifiers
    blanked out (newlines kept, so line numbers stay right)."""
    out = []
    i, n = 0, len(text)

    def blank(s):
        return re.sub(r'[^\n]', ' ', s)

    while i < n:
        c = text[i]
        if text.startswith('--', i):
            j = text.find('\n', i)
            j = n if j < 0 else j
            out.append(blank(text[i:j]))
            i = j
        elif text.startswith('/*', i):
            j = text.find('*/', i + 2)
            j = n if j < 0 else j + 2
            out.append(blank(text[i:j]))
            i = j
        elif c == "'" or (c in 'Ee' and text.startswith("'", i + 1)
                          and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == '_'))):
            escapes = c != "'"
            j = i + (2 if escapes else 1)
            while j < n:
                if escapes and text[j] == '\\':
                    j += 2
                elif text[j] == "'":
                    if text.startswith("''", j):
                        j += 2
                    else:
                        j += 1
                        break
                else:
                    j += 1
            out.append("''" + blank(text[i:j])[2:])
            i = j
        elif c == '"':
            j = text.find('"', i + 1)
            j = n if j < 0 else j + 1
            out.append('q' + blank(text[i:j])[1:])
            i = j
        else:
            out.append(c)
            i += 1
    return ''.join(out)


def line_of(text, pos):
    return text.count('\n', 0, pos) + 1


def check(path):
    text = strip(open(path, encoding='utf-8').read())
    findings = []
    plproxy_bodies = []

    # Every function pins its search_path: the clause may stand before or
    # after the body, so the statement is read without its body.
    for m in re.finditer(r'\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE)\b', text, re.I):
        body = re.compile(r'\bAS\s+(\$\$.*?\$\$|\'\'(?:\s*,\s*\'\')?)', re.S | re.I).search(text, m.end())
        end = text.find(';', body.end()) if body else -1
        if not body or end < 0:
            findings.append((line_of(text, m.start()), 'cannot find the body of this function'))
            continue
        statement = text[m.start():body.start()] + text[body.end():end]
        if re.search(r'\bLANGUAGE\s+plproxy\b', statement, re.I):
            plproxy_bodies.append((body.start(), body.end()))
        if not SEARCH_PATH.search(statement):
            findings.append((line_of(text, m.start()),
                             'function without SET search_path = pg_catalog, pg_temp'))

    # A PL/Proxy body is SQL for the shard, run there with the shard's
    # search_path (oms's API is wherever oms was installed): not read.
    for start, end in plproxy_bodies:
        text = text[:start] + re.sub(r'[^\n]', ' ', text[start:end]) + text[end:]

    for m in re.finditer(r'(?<![\w.$"])([A-Za-z_][A-Za-z0-9_]*)\s*\(', text):
        word = m.group(1)
        if word.lower() in SYNTAX:
            continue
        if re.search(r'\bAS\s+$', text[max(0, m.start() - 20):m.start()], re.I):
            continue
        findings.append((line_of(text, m.start()),
                         'unqualified call %s(): write oms.%s or pg_catalog.%s' % (word, word, word)))

    for m in re.finditer(r'(?<![\w.$"])(pg_[a-z0-9_]+)\b(?!\s*\()', text):
        if m.group(1) in ('pg_catalog', 'pg_temp'):
            continue
        findings.append((line_of(text, m.start()),
                         'unqualified catalog name %s: write pg_catalog.%s' % (m.group(1), m.group(1))))

    return ['%s:%d: %s' % (path, line, message) for line, message in sorted(findings)]


def main():
    findings = []
    for path in sys.argv[1:]:
        findings.extend(check(path))
    for f in findings:
        print(f)
    sys.exit(1 if findings else 0)


if __name__ == '__main__':
    main()
