#!/usr/bin/python3
"""A bulk import in one transaction, with duplicates arriving meanwhile.

Run by test/t/042_bulk_import.pl (PGHOST, PGPORT, PGUSER, PGDATABASE name a
database with oms installed; OMS_BULK_KEYS sets the size, default 100000).

One session imports OMS_BULK_KEYS orders, each with its own idempotency key,
in ONE transaction (SELECT count(oms_create_order(...)) FROM staging), in
two halves.  While it runs, other sessions send duplicates of some keys:

  - keys of the first half, which the import has claimed but not committed:
    each duplicate waits (the test checks that the server reports it
    waiting on the import's transaction), then replays the import's order;
  - keys of the second half, before the import reaches them: the duplicate
    commits first and the import replays its order when it gets there.

Every key ends with exactly one order, every caller of a key gets that
order, and the import takes a bounded number of lock-table entries and
memory whatever its size: 0.1.0 took an advisory lock per key and failed
with "out of shared memory" after about max_locks_per_transaction x
max_connections keys.

TAP lines out; no sleeps (waits poll the server's own view of the waiting
sessions, with a deadline that only guards against a hang).
"""

import os
import sys
import threading
import time

import psycopg

KEYS = int(os.environ.get("OMS_BULK_KEYS", "100000"))
HALF = KEYS // 2
# Duplicates of claimed keys (they wait) and of keys not reached yet.
EARLY_DUPLICATES = 8
LATE_DUPLICATES = 8
DEADLINE = 600
failed = False


def ok(name, cond, *diag):
    global failed
    print(("ok - " if cond else "not ok - ") + name, flush=True)
    if not cond:
        failed = True
        for d in diag:
            for line in str(d).splitlines():
                print("# " + line, flush=True)


def connect(autocommit=True):
    return psycopg.connect(autocommit=autocommit)


def key(i):
    return "bulk-key-%d" % i


ITEMS = ('jsonb_build_array(jsonb_build_object(\'sku\', \'BULK-\' || (i %% 10), '
         '\'quantity\', 1 + i %% 3, \'unit_price\', 100 + i %% 7))')


def import_range(cur, first, last):
    cur.execute("SELECT count(oms_create_order('bulk-' || i, " + ITEMS + ", 'USD', 'bulk-key-' || i))"
                " FROM generate_series(%s::int, %s::int) AS i", (first, last))
    return cur.fetchone()[0]


def backend_state(cur):
    """Lock-table entries and memory of the importing backend."""
    cur.execute("SELECT (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()),"
                " (SELECT sum(total_bytes)::float8 FROM pg_backend_memory_contexts)")
    return cur.fetchone()


def duplicate(i, results, errors):
    """One caller of key i, in its own autocommit session."""
    try:
        with connect() as conn:
            row = conn.execute("SELECT oms_create_order('bulk-' || %s::int, " + ITEMS.replace("i %%", "%s::int %%")
                               + ", 'USD', %s) ->> 'order_id'", (i, i, i, i, key(i))).fetchone()
            results[i] = row[0]
    except Exception as e:  # reported by the caller
        errors[i] = repr(e)


def waiting_on(admin, pids, xid):
    """True when every pid waits for the transaction xid."""
    rows = admin.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted"
                         " AND transactionid::text = %s AND pid = ANY (%s)", (str(xid), list(pids))).fetchone()
    return rows[0] == len(pids)


def poll(cond, what):
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > DEADLINE:
            raise RuntimeError("gave up waiting for " + what)
        time.sleep(0.1)  # poll interval; the condition decides


def main():
    admin = connect()
    admin.execute("SELECT count(oms_set_stock('BULK-' || i, 1000000)) FROM generate_series(0, 9) AS i")
    locks_limit = admin.execute("SELECT current_setting('max_locks_per_transaction')::int"
                                " * (current_setting('max_connections')::int"
                                " + current_setting('max_prepared_transactions')::int)").fetchone()[0]
    print("# %d keys in one transaction; the lock table holds about %d entries" % (KEYS, locks_limit), flush=True)

    imp = connect(autocommit=False)
    cur = imp.cursor()
    try:
        first = import_range(cur, 1, HALF)
    except psycopg.Error as e:
        ok("the first half of the import (%d keys) runs in one transaction" % HALF, False,
           "%s: %s" % (e.sqlstate, e))
        return
    ok("the first half of the import (%d keys) runs in one transaction" % HALF, first == HALF)
    locks_half, memory_half = backend_state(cur)
    xid = cur.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
    pid = cur.execute("SELECT pg_backend_pid()").fetchone()[0]

    # Duplicates of keys the import claimed: they must wait for it.
    results, errors, threads = {}, {}, []
    early = [1 + k * (HALF // EARLY_DUPLICATES) for k in range(EARLY_DUPLICATES)]
    for i in early:
        t = threading.Thread(target=duplicate, args=(i, results, errors))
        t.start()
        threads.append(t)
    pids = []

    def all_started():
        nonlocal pids
        pids = [r[0] for r in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE pid <> %s AND query LIKE %s AND state = 'active'",
            (pid, "SELECT oms_create_order('bulk-'%")).fetchall()]
        return len(pids) == len(early)
    poll(all_started, "the early duplicates to start")
    poll(lambda: waiting_on(admin, pids, xid), "the early duplicates to wait")
    ok("%d concurrent duplicates of claimed keys wait for the import's transaction" % len(early), True)

    # Duplicates of keys the import has not reached: they commit first.
    late = [HALF + 1 + k * (HALF // LATE_DUPLICATES) for k in range(LATE_DUPLICATES)]
    late_threads = [threading.Thread(target=duplicate, args=(i, results, errors)) for i in late]
    for t in late_threads:
        t.start()
    for t in late_threads:
        t.join(DEADLINE)
    ok("duplicates of keys the import has not reached commit first",
       all(i in results for i in late), errors)

    try:
        second = import_range(cur, HALF + 1, KEYS)
        locks_end, memory_end = backend_state(cur)
        imp.commit()
    except psycopg.Error as e:
        ok("the whole import (%d keys) commits in one transaction" % KEYS, False, "%s: %s" % (e.sqlstate, e))
        imp.rollback()
        for t in threads:
            t.join(DEADLINE)
        return
    ok("the whole import (%d keys) commits in one transaction" % KEYS, second == KEYS - HALF)
    for t in threads:
        t.join(DEADLINE)
    ok("the waiting duplicates finish once the import commits", all(i in results for i in early), errors)

    print("# import backend: %d lock-table entries after %d keys, %d after %d; memory %.1f MB, then %.1f MB"
          % (locks_half, HALF, locks_end, KEYS, memory_half / 1e6, memory_end / 1e6), flush=True)
    ok("the import's lock-table entries do not grow with its size (%d after %d keys, %d after %d)"
       % (locks_half, HALF, locks_end, KEYS), locks_end <= locks_half + 10 and locks_end < 200)
    ok("the import's memory does not grow with its size (%.1f MB after %d keys, %.1f MB after %d)"
       % (memory_half / 1e6, HALF, memory_end / 1e6, KEYS), memory_end < memory_half + 32e6)

    row = admin.execute("SELECT count(*), count(DISTINCT customer_id) FROM oms.orders WHERE customer_id LIKE 'bulk-%'").fetchone()
    ok("exactly one order per key (%d orders, %d keys)" % (row[0], KEYS), row[0] == KEYS and row[1] == KEYS, row)
    stored = dict(admin.execute("SELECT key, response ->> 'order_id' FROM oms.idempotency_keys WHERE key = ANY (%s)",
                                ([key(i) for i in early + late],)).fetchall())
    mismatched = [i for i in early + late if stored.get(key(i)) != results.get(i)]
    ok("every duplicate got the order stored under its key", not mismatched,
       *["key %d: stored %s, caller got %s" % (i, stored.get(key(i)), results.get(i)) for i in mismatched])
    row = admin.execute("SELECT count(*) FROM oms.idempotency_keys WHERE key LIKE 'bulk-key-%' AND response IS NULL").fetchone()
    ok("no key is left claimed without a response", row[0] == 0, row)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        ok("the bulk import test ran to its end", False, repr(e))
    sys.exit(1 if failed else 0)
