#!/usr/bin/env python3
"""test/valgrind/report.py: reads the valgrind logs of one "make valgrind" run.

Usage: report.py LOG_DIR [SERVER_LOG ...]

LOG_DIR holds one <pid>.log per server process, written by valgrind with
--error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END and
--gen-suppressions=all.  SERVER_LOG (optional) is the server's log, with the
pid and backend type in every line (log_line_prefix '... [%p] %b: '), used
to say which process an error came from; several may be given (the TAP
tests' nodes log into files of their own).

An error is "in oms code" when any frame of any of its stacks (where it
happened, where the memory was allocated or freed, where an uninitialised
value came from) is in oms.so or in one of the repository's src/*.c files.
Each such error is printed once with its stacks (the same error in several
processes is printed once, with the count), followed by the suppression
valgrind generated for it.  Errors outside oms code are counted and listed by
their first frames; errors matched by a suppression (test/valgrind/oms.supp)
are counted from valgrind's per-process ERROR SUMMARY.

The last line is
  valgrind: N errors in oms code (M other errors suppressed/outside oms)
and the exit status is 1 when N > 0 (or a log shows that valgrind itself
failed), else 0.
"""

import collections
import os
import re
import sys

PREFIX = re.compile(r"^==(\d+)== ?(.*)$")
FRAME = re.compile(r"^\s+(?:at|by) 0x[0-9A-Fa-f]+: (.*)$")
SUMMARY = re.compile(
    r"ERROR SUMMARY: (\d+) errors from (\d+) contexts \(suppressed: (\d+) from (\d+)\)")
# A frame in oms: the shared library without line info, or a source file
# of the repository's src/ (valgrind runs with --fullpath-after=<repository>/,
# so oms's own sources show as "src/name.c:line", others with a full path).
SRC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src")
SRC_FILES = sorted(n for n in os.listdir(SRC_DIR) if re.match(r"^[A-Za-z0-9_]+\.[ch]$", n))
OMS_FRAME = re.compile(r"\(in [^)]*/oms\.so\)|\(src/(?:%s):\d+\)"
                       % "|".join(re.escape(n) for n in SRC_FILES))
TERMINATING = re.compile(r"Process terminating with default action of signal (\d+)")


class Error:
    def __init__(self, pid, path):
        self.pid = pid
        self.path = path
        self.lines = []
        self.suppression = []

    @property
    def kind(self):
        return self.lines[0] if self.lines else "?"

    def frames(self):
        out = []
        for line in self.lines:
            m = FRAME.match(line)
            if m:
                out.append(m.group(1))
        return out

    def in_oms(self):
        return any(OMS_FRAME.search(f) for f in self.frames())

    def key(self):
        """Same kind, same stacks (addresses and sizes left out)."""
        norm = []
        for line in self.lines:
            line = re.sub(r"0x[0-9A-Fa-f]+", "0x", line)
            line = re.sub(r"\b\d[\d,]*\b", "N", line)
            norm.append(line)
        return "\n".join(norm)

    def short(self, n=4):
        """The kind and the first n frames, on one line."""
        fr = [re.sub(r" \(in [^)]*\)$", "", f) for f in self.frames()[:n]]
        return "%s: %s" % (self.kind, " < ".join(fr))


def parse_log(path):
    """Returns (errors, summary tuple or None, terminating-signal lines)."""
    errors = []
    summary = None
    terminating = []
    current = None
    last = None
    in_supp = False
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    i = 0
    while i < len(lines):
        raw = lines[i]
        i += 1
        if in_supp:
            if last is not None:
                last.suppression.append(raw)
            if raw.startswith("}"):
                in_supp = False
            continue
        if raw.startswith("{") and current is None:
            in_supp = True
            if last is not None:
                last.suppression = [raw]
            continue
        m = PREFIX.match(raw)
        if not m:
            continue
        pid, text = int(m.group(1)), m.group(2)
        if text == "VALGRINDERROR-BEGIN":
            current = Error(pid, path)
            continue
        if text == "VALGRINDERROR-END":
            if current is not None:
                # Drop the trailing empty line valgrind prints.
                while current.lines and not current.lines[-1].strip():
                    current.lines.pop()
                errors.append(current)
                last = current
            current = None
            continue
        if current is not None:
            current.lines.append(text)
            continue
        s = SUMMARY.search(text)
        if s:
            summary = tuple(int(x) for x in s.groups())
            continue
        t = TERMINATING.search(text)
        if t:
            # Keep the signal line and the stack that follows it.
            block = [text]
            while i < len(lines):
                m2 = PREFIX.match(lines[i])
                if not m2 or not m2.group(2).strip():
                    break
                block.append(m2.group(2))
                i += 1
            terminating.append(block)
    return errors, summary, terminating


def backend_types(server_logs):
    """pid -> backend type, from lines like '... [1234] client backend: ...'."""
    types = {}
    pat = re.compile(r"\[(\d+)\] ([^:\[\]]+?): ")
    for server_log in server_logs:
        if not os.path.exists(server_log):
            continue
        with open(server_log, errors="replace") as f:
            for line in f:
                m = pat.search(line)
                if m and int(m.group(1)) not in types:
                    types[int(m.group(1))] = m.group(2).strip()
    return types


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    log_dir = argv[1]
    types = backend_types(argv[2:])
    logs = sorted(
        (os.path.join(log_dir, n) for n in os.listdir(log_dir) if re.match(r"^\d+\.log$", n)),
        key=lambda p: int(os.path.basename(p).split(".")[0]))
    if not logs:
        print("valgrind: no logs in %s: valgrind did not run" % log_dir)
        return 1

    oms_errors = collections.OrderedDict()   # key -> [Error, ...]
    other = collections.Counter()            # short description -> count
    suppressed = 0
    incomplete = []
    crashes = []
    for path in logs:
        errors, summary, terminating = parse_log(path)
        for e in errors:
            if e.in_oms():
                oms_errors.setdefault(e.key(), []).append(e)
            else:
                other[e.short()] += 1
        if summary is None:
            incomplete.append(path)
        else:
            suppressed += summary[2]
        for block in terminating:
            crashes.append((path, block))

    def who(pid):
        return "pid %d (%s)" % (pid, types.get(pid, "process type unknown"))

    n_oms = sum(len(v) for v in oms_errors.values())
    for key, errs in oms_errors.items():
        e = errs[0]
        print("==== error in oms code, in %d process(es): %s; first in %s, log %s"
              % (len(errs), ", ".join(who(x.pid) for x in errs[:5]) + (" ..." if len(errs) > 5 else ""),
                 who(e.pid), e.path, ))
        for line in e.lines:
            print("  " + line)
        if e.suppression:
            print("  suppression valgrind generated (only for a proven false positive, in test/valgrind/oms.supp):")
            for line in e.suppression:
                print("    " + line)
        print()

    if other:
        print("---- errors outside oms code (not counted against oms; add a suppression once understood):")
        for desc, count in other.most_common():
            print("  %4d x %s" % (count, desc))
    for path, block in crashes:
        in_oms = any(OMS_FRAME.search(b) for b in block)
        print("---- a process died on a signal%s (%s):" % (" IN OMS CODE" if in_oms else "", path))
        for line in block[:25]:
            print("  " + line)
        if in_oms:
            n_oms += 1
    if incomplete:
        # A process killed with SIGKILL leaves no summary; say so, it is not
        # an error by itself (the server's immediate shutdown uses SIGQUIT).
        print("---- %d log(s) without valgrind's final summary (process killed?): %s"
              % (len(incomplete), " ".join(os.path.basename(p) for p in incomplete[:10])))

    n_other = sum(other.values()) + suppressed
    print("valgrind: %d processes; %d distinct errors in oms code; outside oms: %d reported, %d suppressed"
          % (len(logs), len(oms_errors), sum(other.values()), suppressed))
    print("valgrind: %d errors in oms code (%d other errors suppressed/outside oms)" % (n_oms, n_other))
    return 1 if n_oms > 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
