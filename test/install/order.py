#!/usr/bin/env python3
"""test/install/order.py MAKEFILE: the fragments of the extension script
(SQL_PARTS in the Makefile) in another order than the Makefile's, and a
check that the Makefile's order itself is one its fragments allow.

Each fragment of src/sql/ names what it needs created before it in a line
"-- requires: a b c" (fragment names); roles.sql comes first and checks.sql
last.  Printed: a topological order that takes, at each step, the allowed
fragment listed LAST in the Makefile, so the two orders differ as much as
the requirements let them.  Exits 1 (with the reason) when the Makefile's
order breaks a requirement, names an unknown fragment, or has a cycle.
"""
import re
import sys


def main():
    makefile = sys.argv[1]
    root = makefile.rsplit('/', 1)[0] + '/' if '/' in makefile else ''
    text = open(makefile).read()
    start = text.index('SQL_PARTS')
    parts = re.findall(r'src/sql/(\w+)\.sql', text[start:text.index('\n\n', start)])
    requires = {}
    for part in parts:
        body = open(root + 'src/sql/' + part + '.sql').read()
        m = re.search(r'^-- requires: (.*)$', body, re.M)
        requires[part] = set(m.group(1).split()) if m else set()
    problems = []
    for i, part in enumerate(parts):
        for need in sorted(requires[part]):
            if need not in parts:
                problems.append('%s requires %s, which is not in SQL_PARTS' % (part, need))
            elif parts.index(need) > i:
                problems.append('%s requires %s, which the Makefile lists after it' % (part, need))
    if problems:
        sys.exit('\n'.join(problems))
    first, middle, last = parts[0], parts[1:-1], parts[-1]
    done = [first]
    left = list(middle)
    while left:
        ready = [p for p in left if requires[p] <= set(done)]
        if not ready:
            sys.exit('no fragment can come next: %s' % ', '.join(left))
        done.append(ready[-1])
        left.remove(ready[-1])
    done.append(last)
    print(' '.join(done))


if __name__ == '__main__':
    main()
