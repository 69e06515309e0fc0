#!/usr/bin/env python3
"""test/doc_examples.py: runs the executable examples of a Markdown page.

A doc example is a test.  An executable example is a ```sql block followed
directly (blank lines only in between) by a ```psql-output block:

    ```sql
    SELECT 1 AS one;
    ```

    ```psql-output
     one
    -----
       1
    (1 row)

    ```

Every other block (```sql without an output block, ```js, ```python, plain
```) is an illustration and is not run.

All executable examples of a page run in order, in ONE psql session (so
\\gset variables and SET carry over), against the database named by
PGDATABASE, as a user would type them: psql -X, default output settings,
no ON_ERROR_STOP (an example may show an error), command tags shown
(BEGIN, CREATE ROLE, ...), errors and notices (stderr) in with the output.
If no example of the page contains "CREATE EXTENSION oms", the runner
creates the extension first, quietly.

Normalization, applied to both sides before comparing (the doc shows the
placeholders, so readers see what varies):
    a UUID                                   -> <uuid>
    a timestamp such as 2026-12-07 01:49:16.123+00 or 2026-12-07T01:49:16Z
                                             -> <time>
    trailing blanks of a line                -> removed
    a LOCATION: line (VERBOSITY verbose)     -> removed
In a table cell the placeholder keeps the value's width (padded with
blanks), so psql's aligned output stays aligned.  Inside a JSON value it
cannot: jsonb prints a timestamp without its trailing zeros, so a JSON
cell holding one changes the column's width from run to run.  Leave such
keys out of tabular examples (`doc - 'created_at'`) or select them alone.

Usage:
    doc_examples.py FILE.md            check: prints "ok - ..." / "not ok - ..."
                                       per example, exit 1 on a difference
    doc_examples.py --update FILE.md   write psql's (normalized) output into
                                       the psql-output blocks; never edit them
                                       by hand
    doc_examples.py --list FILE.md     list the executable examples
Connection: the usual libpq variables (PGHOST, PGPORT, PGUSER, PGDATABASE);
PSQL names the psql binary (default: psql on PATH).
"""
import difflib
import os
import re
import subprocess
import sys

OUTPUT_LANG = "psql-output"
MARKER = "@@oms-doc-example {}@@"
FENCE = re.compile(r"^(```+|~~~+)\s*([^\s`]*)")

UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
TIME = re.compile(r"\b\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}(:?\d{2})?)?")


def _placeholder(name):
    # In a cell of psql's aligned output (the value followed by a space, a
    # line end or the end), the placeholder is padded to the value's width
    # so the table stays aligned; inside JSON or text it is not.
    def sub(m):
        after = m.string[m.end():m.end() + 1]
        return name.ljust(len(m.group(0))) if after in ("", " ", "\n") else name
    return sub


def _normalize_line(line):
    new = TIME.sub(_placeholder("<time>"), UUID.sub(_placeholder("<uuid>"), line))
    # A line of a multi-line cell ends with psql's "+": keep it in place.
    if line.endswith("+") and len(new) < len(line):
        new = new[:-1] + " " * (len(line) - len(new)) + "+"
    # psql pads the last column with trailing blanks; editors drop them.
    return new.rstrip()


def normalize(text):
    # LOCATION lines (\set VERBOSITY verbose) name PostgreSQL's own source
    # lines, which change with its minor version: left out.
    return "\n".join(_normalize_line(line) for line in text.split("\n")
                     if not line.startswith("LOCATION:  "))


def blocks_of(lines):
    """Yields (lang, open_line, close_line) of each fenced block (0-based)."""
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        j = i + 1
        while j < len(lines) and not (lines[j].startswith(fence[0] * len(fence))
                                      and lines[j].strip() == lines[j].strip()[0] * len(lines[j].strip())):
            j += 1
        yield lang, i, j
        i = j + 1


def examples_of(lines):
    """Executable examples: [(sql_open, sql_close, out_open, out_close)]."""
    blocks = list(blocks_of(lines))
    found = []
    for (lang, o, c), (nlang, no, nc) in zip(blocks, blocks[1:]):
        if lang == "sql" and nlang == OUTPUT_LANG and all(not l.strip() for l in lines[c + 1:no]):
            found.append((o, c, no, nc))
    # A psql-output block must follow an sql block: anything else is a mistake.
    paired = {e[2] for e in found}
    for lang, o, c in blocks:
        if lang == OUTPUT_LANG and o not in paired:
            raise SystemExit(f"line {o + 1}: a {OUTPUT_LANG} block must follow a ```sql block directly")
    return found


def run_page(lines, examples):
    """Runs every example in one psql session; returns their outputs."""
    script = []
    if not any("create extension oms" in " ".join(lines[o + 1:c]).lower() for o, c, _, _ in examples):
        script += ["\\set QUIET on", "SET client_min_messages = warning;",
                   "CREATE EXTENSION IF NOT EXISTS oms;", "RESET client_min_messages;",
                   "\\set QUIET off"]
    for n, (o, c, _, _) in enumerate(examples):
        script.append("\\echo " + MARKER.format(n))
        script += lines[o + 1:c]
    script.append("\\echo " + MARKER.format(len(examples)))
    env = dict(os.environ, LC_ALL="C.UTF-8", PGTZ="UTC", PGOPTIONS="")
    env.pop("PSQLRC", None)
    # stdbuf: stdout line-buffered, so errors (stderr) stay in place.
    cmd = ["stdbuf", "-oL", "-eL", os.environ.get("PSQL", "psql"), "-X", "-P", "pager=off"]
    res = subprocess.run(cmd, input="\n".join(script) + "\n", stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env, timeout=120)
    out = res.stdout
    outputs = []
    for n in range(len(examples)):
        start, end = MARKER.format(n) + "\n", MARKER.format(n + 1) + "\n"
        if start not in out or end not in out:
            raise SystemExit(f"psql stopped before example {n + 1} finished; its output:\n{out}")
        outputs.append(out.split(start, 1)[1].split(end, 1)[0])
    return outputs


def main(argv):
    mode = "check"
    if argv and argv[0] in ("--update", "--list"):
        mode = argv.pop(0)[2:]
    if len(argv) != 1:
        raise SystemExit(__doc__)
    path = argv[0]
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    examples = examples_of(lines)
    if mode == "list":
        for o, c, _, _ in examples:
            print(f"{path}:{o + 1}: {lines[o + 1] if o + 1 < c else ''}")
        return 0
    if not examples:
        print(f"not ok - {path}: no executable examples")
        return 1
    outputs = run_page(lines, examples)
    rc = 0
    if mode == "update":
        for (o, c, no, nc), out in reversed(list(zip(examples, outputs))):
            new = normalize(out).split("\n")
            if new and new[-1] == "":
                new.pop()
            lines[no + 1:nc] = new
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines))
        print(f"# {path}: {len(examples)} examples written")
        return 0
    for n, ((o, c, no, nc), out) in enumerate(zip(examples, outputs), 1):
        want = normalize("\n".join(lines[no + 1:nc]) + "\n").split("\n")
        got = normalize(out).split("\n")
        if (want and want[-1] == "") and len(want) > 1:
            want.pop()
        if got and got[-1] == "":
            got.pop()
        name = f"{path}:{o + 1} example {n}"
        if want == got:
            print(f"ok - {name}")
        else:
            rc = 1
            print(f"not ok - {name}")
            for d in difflib.unified_diff(want, got, "doc", "psql", lineterm=""):
                print("# " + d)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
