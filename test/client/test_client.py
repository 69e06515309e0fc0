#!/usr/bin/python3
"""oms client-driver test: the order API over the wire through psycopg 3.

This file owns the "real client" test layer (GUIDE.md section 7, layer 4):
a driver nobody wrote for oms -- Debian's python3-psycopg -- talks to an
installed oms over the PostgreSQL protocol and checks what an application
would see:

  * the order document and its Python types (jsonb -> dict, amounts -> int),
    identical in text and binary result format;
  * get / cancel / timeline, and SQLSTATEs of every bad-input class;
  * idempotency keys: replay, conflicts (OM001), failed calls storing nothing;
  * server-side prepared statements (prepare=True);
  * the oms_app role, connected as a LOGIN role granted oms_app;
  * two sessions racing on one idempotency key (commit and rollback).

Run by test/run.sh as `/usr/bin/python3 test/client/test_client.py` with
PGHOST/PGPORT/PGUSER/PGDATABASE naming a database where CREATE EXTENSION oms
has run, as a superuser.  Output is TAP-like: one `ok - <name>` or
`not ok - <name>` line per check, `#` diagnostics after a failure.  Exit
status 1 if any check failed, else 0.  Re-runnable: every run uses fresh
customer ids and idempotency keys, and the login role is dropped at the end
(and at the start, if a previous run died).

Through the router (docs/cluster.md): OMS_CLIENT_SHARDS names the shard
databases (space-separated) of the cluster whose router PGDATABASE is.
Every call under test then goes through the router; what the script reads
from oms's tables to see what a call stored (footprint(), the race checks)
it reads on the shards directly, summed, and the race holds its first,
uncommitted session on the shard that owns the key.  The router database
has no oms tables, so the oms_app refusals are checked on the router's
own objects.

Only the standard library and psycopg are used.  There are no sleeps: the
race test waits for the server to report the blocked session
(pg_blocking_pids), and thread joins have a generous timeout that only
guards against hangs.
"""

import datetime
import os
import sys
import threading
import time
import traceback
import uuid

import psycopg
from psycopg.sql import SQL, Identifier
from psycopg.types.json import Jsonb

APP_ROLE = "oms_client_app"
HANG_GUARD_SECONDS = 30
RUN = uuid.uuid4().hex[:12]          # makes every customer id and key unique
JSONB_ARGS = {"items", "metadata"}
SHARDS = os.environ.get("OMS_CLIENT_SHARDS", "").split()

ITEMS = [
    {"sku": "SKU-1", "quantity": 2, "unit_price": 1999},
    {"sku": "Café-☕", "quantity": 3, "unit_price": 250},
]
ITEMS_TOTAL = 2 * 1999 + 3 * 250
DOC_KEYS = {"order_id", "customer_id", "status", "payment_status", "fulfillment_status",
            "currency", "total", "items", "version", "metadata", "created_at", "updated_at",
            "last_saga", "shipments", "returns"}
# The quantity ledger of a line (docs/api.md, "The order document").
LEDGER = ("canceled", "fulfilling", "shipped", "delivered", "returning", "returned", "refunded")


def line(line_no, sku, quantity, unit_price, **ledger):
    """An item of the order document: zero ledger unless given."""
    item = {"line_no": line_no, "sku": sku, "quantity": quantity, "unit_price": unit_price,
            "line_total": quantity * unit_price}
    item.update({"quantity_" + k: ledger.get(k, 0) for k in LEDGER})
    return item


# --------------------------------------------------------------------------
# Reporting

class Report:
    def __init__(self):
        self.count = 0
        self.failed = 0

    def ok(self, name, condition, diagnostic="check failed"):
        self.count += 1
        if condition:
            print(f"ok - {name}")
        else:
            self.failed += 1
            print(f"not ok - {name}")
            for line in str(diagnostic).splitlines() or [""]:
                print(f"# {line}")
        sys.stdout.flush()
        return bool(condition)

    def equal(self, name, got, want):
        return self.ok(name, got == want, f"got:  {got!r}\nwant: {want!r}")

    def error(self, name, conn, sql, params, sqlstate, **diag):
        """Runs sql; the check passes if it fails with sqlstate and, for each
        keyword, e.diag.<keyword> equals the given value.  Returns the error."""
        try:
            row = conn.execute(sql, params).fetchone()
        except psycopg.Error as e:
            problems = []
            if e.sqlstate != sqlstate:
                problems.append(f"SQLSTATE: got {e.sqlstate}, want {sqlstate}")
            for field, want in diag.items():
                got = getattr(e.diag, field)
                if got != want:
                    problems.append(f"diag.{field}: got {got!r}, want {want!r}")
            problems.append(f"server said: {e.sqlstate}: {e.diag.message_primary}")
            self.ok(name, len(problems) == 1, "\n".join(problems))
            return e
        self.ok(name, False, f"expected SQLSTATE {sqlstate}, but the call returned {row!r}")
        return None


R = Report()


# --------------------------------------------------------------------------
# Helpers

def connect(**kwargs):
    """A connection from the PG* environment; autocommit unless told."""
    kwargs.setdefault("autocommit", True)
    return psycopg.connect("", **kwargs)


def call_sql(func, **args):
    """SELECT func(name => %(name)s, ...) with jsonb arguments wrapped."""
    params = {name: Jsonb(value) if name in JSONB_ARGS and value is not None else value
              for name, value in args.items()}
    placeholders = ", ".join(f"{name} => %({name})s" for name in args)
    return f"SELECT {func}({placeholders})", params


def call(conn, func, prepare=None, **args):
    sql, params = call_sql(func, **args)
    return conn.execute(sql, params, prepare=prepare).fetchone()[0]


def customer(label):
    return f"client-{RUN}-{label}"


def key(label):
    return f"client-key-{RUN}-{label}"


def store(su):
    """The connections that hold oms's tables: su, or each shard's."""
    if not SHARDS:
        return [su]
    return [connect(dbname=db) for db in SHARDS]


def stored(su, sql, params):
    """One row of counts, summed over every database holding oms's tables."""
    rows = []
    for conn in store(su):
        rows.append(conn.execute(sql, params).fetchone())
        if conn is not su:
            conn.close()
    return tuple(sum(column) for column in zip(*rows))


def footprint(su, customer_id, idempotency_key=None):
    """Rows oms holds for one customer (and one key): what a call wrote."""
    return stored(su, 
        """
        SELECT (SELECT count(*) FROM oms.orders o WHERE o.customer_id = %(c)s),
               (SELECT count(*) FROM oms.order_items i
                  JOIN oms.orders o ON o.id = i.order_id WHERE o.customer_id = %(c)s),
               (SELECT count(*) FROM oms.order_events e
                  JOIN oms.orders o ON o.id = e.order_id WHERE o.customer_id = %(c)s),
               (SELECT count(*) FROM oms.outbox x
                  WHERE x.payload -> 'order' ->> 'customer_id' = %(c)s),
               (SELECT count(*) FROM oms.idempotency_keys k WHERE k.key = %(k)s)
        """, {"c": customer_id, "k": idempotency_key})


def footprint_text(rows):
    return "orders={} items={} events={} outbox={} keys={}".format(*rows)


# --------------------------------------------------------------------------
# Tests: documents and types

def test_extension_installed(su):
    extension = "oms_router" if SHARDS else "oms"
    version = su.execute(
        "SELECT extversion FROM pg_extension WHERE extname = %s", [extension]).fetchone()
    R.ok(f"extension {extension} is installed in the test database", version is not None,
         f"pg_extension has no row for {extension}")
    R.ok("server is PostgreSQL 15 or later", su.info.server_version >= 150000,
         f"server_version {su.info.server_version}")


def test_create_order_document(su):
    metadata = {"channel": "web", "note": "héllo ✓", "nested": {"a": [1, 2.5, None, True]}}
    doc = call(su, "oms_create_order", customer_id=customer("doc"), items=ITEMS,
               currency="EUR", metadata=metadata)
    R.ok("oms_create_order returns jsonb as a Python dict", isinstance(doc, dict),
         f"got {type(doc).__name__}: {doc!r}")
    R.equal("order document has exactly the documented keys", set(doc), DOC_KEYS)
    R.equal("new order status is pending", doc["status"], "pending")
    R.equal("new order version is 1", doc["version"], 1)
    R.equal("customer_id and currency are echoed",
            (doc["customer_id"], doc["currency"]), (customer("doc"), "EUR"))
    R.equal("total is the sum of quantity * unit_price", doc["total"], ITEMS_TOTAL)
    R.ok("total arrives as a Python int", type(doc["total"]) is int,
         f"got {type(doc['total']).__name__}")
    R.equal("items come back priced and numbered, with an empty ledger", doc["items"], [
        line(1, "SKU-1", 2, 1999),
        line(2, "Café-☕", 3, 250),
    ])
    R.equal("a new order is unpaid and unfulfilled, with no saga, shipment or return",
            (doc["payment_status"], doc["fulfillment_status"], doc["last_saga"], doc["shipments"],
             doc["returns"]), ("unpaid", "unfulfilled", None, [], []))
    R.equal("metadata round-trips unchanged (unicode, nesting, floats, null)",
            doc["metadata"], metadata)
    try:
        order_uuid = uuid.UUID(doc["order_id"])
        created = datetime.datetime.fromisoformat(doc["created_at"])
        parsed = True
    except (TypeError, ValueError) as e:
        parsed, order_uuid, created = str(e), None, None
    R.ok("order_id is a UUID and created_at an ISO timestamp", parsed is True, parsed)
    if parsed is True:
        R.ok("created_at carries a time zone", created.tzinfo is not None, doc["created_at"])
        got = call(su, "oms_get_order", order_id=order_uuid)
        R.equal("oms_get_order returns the same document as oms_create_order", got, doc)


def test_defaults_and_currencies(su):
    doc = call(su, "oms_create_order", customer_id=customer("defaults"), items=ITEMS[:1])
    R.equal("currency defaults to USD and metadata to {}",
            (doc["currency"], doc["metadata"]), ("USD", {}))
    doc = call(su, "oms_create_order", customer_id=customer("jpy"),
               items=[{"sku": "TEA", "quantity": 3, "unit_price": 1500}], currency="JPY")
    R.equal("a zero-exponent currency (JPY) keeps amounts in minor units",
            (doc["currency"], doc["total"]), ("JPY", 4500))


def test_big_total_is_exact(su):
    # 2**53 + 1 cannot be represented by a double: a float on the way would
    # round it.  Python's json keeps it exact.
    big = 2 ** 53 + 1
    doc = call(su, "oms_create_order", customer_id=customer("big"),
               items=[{"sku": "BIG", "quantity": 1, "unit_price": big}])
    R.ok("a total above 2**53 arrives exactly, as an int",
         doc["total"] == big and type(doc["total"]) is int, f"got {doc['total']!r}")


def test_binary_format(su):
    doc = call(su, "oms_create_order", customer_id=customer("binary"), items=ITEMS)
    with su.cursor(binary=True) as cur:
        cur.execute("SELECT oms_get_order(%s)", [uuid.UUID(doc["order_id"])])
        got = cur.fetchone()[0]
    R.equal("binary result format decodes the same document as text format", got, doc)


def test_cancel_and_timeline(su):
    doc = call(su, "oms_create_order", customer_id=customer("cancel"), items=ITEMS)
    order_id = uuid.UUID(doc["order_id"])
    canceled = call(su, "oms_cancel_order", order_id=order_id, reason="changed my mind")
    # Two dimensions move: the life to canceled, the fulfillment (every
    # line canceled) to canceled; one version each.
    R.equal("cancel moves pending -> canceled and its lines to canceled, version 3",
            (canceled["status"], canceled["fulfillment_status"], canceled["version"]),
            ("canceled", "canceled", 3))
    R.equal("cancel keeps order_id and total; the ledger counts every unit canceled",
            (canceled["order_id"], canceled["total"], canceled["items"]),
            (doc["order_id"], doc["total"], [line(1, "SKU-1", 2, 1999, canceled=2),
                                             line(2, "Café-☕", 3, 250, canceled=3)]))
    R.equal("oms_get_order sees the canceled order",
            call(su, "oms_get_order", order_id=order_id), canceled)
    sql, params = call_sql("oms_cancel_order", order_id=order_id)
    R.error("canceling a canceled order fails with 55000 and a hint", su, sql, params,
            "55000", message_hint="The order is already canceled.")

    rows = su.execute("SELECT * FROM oms_order_timeline(%s)", [order_id]).fetchall()
    R.equal("timeline has created then canceled, seq 1 and 2",
            [(r[0], r[2], r[3], r[4]) for r in rows],
            [(1, "order.created", None, "pending"),
             (2, "order.canceled", "pending", "canceled")])
    if len(rows) == 2:
        R.ok("timeline types: seq int, occurred_at aware datetime, data dict",
             all(type(r[0]) is int and isinstance(r[1], datetime.datetime)
                 and r[1].tzinfo is not None and isinstance(r[5], dict) for r in rows),
             repr(rows))
        R.equal("the cancel entry carries the reason", rows[1][5].get("reason"),
                "changed my mind")


def test_unknown_order(su):
    missing = uuid.uuid4()
    for func in ("oms_get_order", "oms_cancel_order"):
        sql, params = call_sql(func, order_id=missing)
        R.error(f"{func} of an unknown order fails with P0002", su, sql, params, "P0002")
    R.error("oms_order_timeline of an unknown order fails with P0002", su,
            "SELECT * FROM oms_order_timeline(%s)", [missing], "P0002")


# --------------------------------------------------------------------------
# Tests: bad input

def bad_inputs():
    """(name, arguments of oms_create_order, SQLSTATE) for each bad-input class."""
    good = {"customer_id": customer("bad"), "items": ITEMS}

    def with_(**changes):
        return {**good, **changes}

    def item(**changes):
        return with_(items=[{**ITEMS[0], **changes}])

    missing_price = {"sku": "SKU-1", "quantity": 1}
    return [
        ("NULL customer_id", with_(customer_id=None), "22004"),
        ("NULL items", with_(items=None), "22004"),
        ("NULL currency", with_(currency=None), "22004"),
        ("NULL metadata", with_(metadata=None), "22004"),
        ("items not an array", with_(items={"sku": "SKU-1"}), "22023"),
        ("items a JSON string", with_(items="SKU-1"), "22023"),
        ("empty items", with_(items=[]), "22023"),
        ("item with an unknown field", item(colour="red"), "22023"),
        ("item missing unit_price", with_(items=[missing_price]), "22023"),
        ("fractional quantity", item(quantity=1.5), "22023"),
        ("zero quantity", item(quantity=0), "22023"),
        ("negative quantity", item(quantity=-1), "22023"),
        ("negative unit_price", item(unit_price=-1), "22023"),
        ("total overflow", with_(items=[
            {"sku": "A", "quantity": 1, "unit_price": 5 * 10 ** 18},
            {"sku": "B", "quantity": 1, "unit_price": 5 * 10 ** 18}]), "22003"),
        ("lowercase currency", with_(currency="usd"), "22023"),
        ("unknown currency", with_(currency="XXX"), "22023"),
        ("empty customer_id", with_(customer_id=""), "22023"),
        ("blank customer_id", with_(customer_id="   "), "22023"),
        ("customer_id of 256 characters", with_(customer_id="c" * 256), "22001"),
        ("metadata an array", with_(metadata=[1, 2]), "22023"),
        ("metadata a number", with_(metadata=7), "22023"),
    ]


def test_bad_input(su):
    before = footprint(su, customer("bad"))
    for name, args, sqlstate in bad_inputs():
        sql, params = call_sql("oms_create_order", **args)
        R.error(f"bad input: {name} -> {sqlstate}", su, sql, params, sqlstate)
    after = footprint(su, customer("bad"))
    R.ok("bad input leaves no row behind", after == before == (0, 0, 0, 0, 0),
         f"before: {footprint_text(before)}\nafter:  {footprint_text(after)}")

    unknown_field = next(args for name, args, _ in bad_inputs()
                         if name == "item with an unknown field")
    sql, params = call_sql("oms_create_order", **unknown_field)
    R.error("unknown item field is explained in diag", su, sql, params, "22023",
            message_primary="invalid order item 1",
            message_detail='Unknown field "colour".')


def test_customer_id_length_counts_characters(su):
    encoding = su.execute("SHOW server_encoding").fetchone()[0]
    if encoding != "UTF8":
        print(f"ok - customer_id of 255 multi-byte characters # SKIP server_encoding {encoding}")
        return
    long_id = "é" * 254 + RUN[0]
    doc = call(su, "oms_create_order", customer_id=long_id, items=ITEMS[:1])
    R.equal("customer_id of 255 multi-byte characters is accepted and round-trips",
            doc["customer_id"], long_id)


# --------------------------------------------------------------------------
# Tests: idempotency

def test_idempotent_replay(su):
    c, k = customer("replay"), key("replay")
    first = call(su, "oms_create_order", customer_id=c, items=ITEMS, idempotency_key=k)
    before = footprint(su, c, k)
    again = call(su, "oms_create_order", customer_id=c, items=ITEMS, idempotency_key=k,
                 currency="USD", metadata={})
    after = footprint(su, c, k)
    R.equal("same key and arguments replay the stored response", again, first)
    R.equal("a replay writes no order, item, event, outbox or key row",
            footprint_text(after), footprint_text(before))
    R.equal("one call with a key wrote one order and one event/outbox pair",
            footprint_text(after), "orders=1 items=2 events=1 outbox=1 keys=1")


def test_idempotency_conflicts(su):
    c, k = customer("conflict"), key("conflict")
    first = call(su, "oms_create_order", customer_id=c, items=ITEMS, idempotency_key=k)
    before = footprint(su, c, k)

    sql, params = call_sql("oms_create_order", customer_id=c, items=ITEMS[:1],
                           idempotency_key=k)
    R.error("same key, different items -> OM001", su, sql, params, "OM001")
    sql, params = call_sql("oms_create_order", customer_id=customer("conflict-other"),
                           items=ITEMS, idempotency_key=k)
    R.error("same key, different customer -> OM001", su, sql, params, "OM001")
    sql, params = call_sql("oms_cancel_order", order_id=uuid.UUID(first["order_id"]),
                           idempotency_key=k)
    R.error("same key used by another function -> OM001", su, sql, params, "OM001",
            message_hint="Use a new idempotency key for a new request.")

    R.equal("conflicting calls write nothing", footprint_text(footprint(su, c, k)),
            footprint_text(before))
    R.equal("conflicting call did not create an order for the other customer",
            footprint(su, customer("conflict-other"))[0], 0)
    R.equal("the order is still pending after the conflicting cancel",
            call(su, "oms_get_order", order_id=uuid.UUID(first["order_id"]))["status"],
            "pending")


def test_failed_call_stores_nothing(su):
    c, k = customer("retry"), key("retry")
    sql, params = call_sql("oms_create_order", customer_id=c, idempotency_key=k,
                           items=[{"sku": "SKU-1", "quantity": 0, "unit_price": 1}])
    R.error("a call with bad items and a key fails with 22023", su, sql, params, "22023")
    R.equal("the failed call stored neither key nor order",
            footprint_text(footprint(su, c, k)), footprint_text((0, 0, 0, 0, 0)))
    doc = call(su, "oms_create_order", customer_id=c, items=ITEMS, idempotency_key=k)
    R.equal("retrying the same key with fixed input creates the order",
            (doc["status"], doc["total"]), ("pending", ITEMS_TOTAL))
    R.equal("...and the key now replays it",
            call(su, "oms_create_order", customer_id=c, items=ITEMS, idempotency_key=k), doc)


def test_idempotency_key_limits(su):
    c = customer("keylen")
    k255 = (key("keylen-") + "k" * 255)[:255]
    doc = call(su, "oms_create_order", customer_id=c, items=ITEMS, idempotency_key=k255)
    R.equal("a key of 255 characters is accepted", doc["status"], "pending")
    sql, params = call_sql("oms_create_order", customer_id=c, items=ITEMS,
                           idempotency_key=k255 + "x")
    R.error("a key of 256 characters -> 22001", su, sql, params, "22001")
    sql, params = call_sql("oms_create_order", customer_id=c, items=ITEMS, idempotency_key="")
    R.error("an empty key -> 22023", su, sql, params, "22023")
    R.equal("rejected keys created no order", footprint(su, c)[0], 1)


def test_idempotent_cancel(su):
    doc = call(su, "oms_create_order", customer_id=customer("cancel-key"), items=ITEMS)
    order_id, k = uuid.UUID(doc["order_id"]), key("cancel")
    first = call(su, "oms_cancel_order", order_id=order_id, reason="dup", idempotency_key=k)
    again = call(su, "oms_cancel_order", order_id=order_id, reason="dup", idempotency_key=k)
    R.equal("replayed cancel returns the stored response instead of 55000", again, first)
    R.equal("replayed cancel wrote no second timeline entry",
            footprint(su, customer("cancel-key"), k)[2], 2)


# --------------------------------------------------------------------------
# Tests: prepared statements

def test_prepared_statements(su):
    sql, _ = call_sql("oms_create_order", customer_id=None, items=None, idempotency_key=None)
    c = customer("prepared")

    def params(i):
        return {"customer_id": c, "idempotency_key": key(f"prepared-{i}"),
                "items": Jsonb([{"sku": f"P{i}", "quantity": i + 1, "unit_price": 100}])}

    docs = [su.execute(sql, params(i), prepare=True).fetchone()[0] for i in range(5)]
    R.equal("prepared create: each execution uses its own parameters",
            [d["total"] for d in docs], [100, 200, 300, 400, 500])
    R.equal("prepared create: five distinct orders",
            len({d["order_id"] for d in docs}), 5)
    replay = su.execute(sql, params(0), prepare=True).fetchone()[0]
    R.equal("prepared create: a used key replays through the prepared statement",
            replay, docs[0])
    prepared = su.execute(
        "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
        ["%oms_create_order%"], prepare=False).fetchone()[0]
    R.ok("psycopg really prepared the statement on the server", prepared >= 1,
         f"pg_prepared_statements has {prepared} matching rows")

    gets = [su.execute("SELECT oms_get_order(%s)", [uuid.UUID(d["order_id"])],
                       prepare=True).fetchone()[0] for d in docs]
    R.equal("prepared get returns each order's document", gets, docs)


# --------------------------------------------------------------------------
# Tests: roles

def drop_app_role(su):
    role = Identifier(APP_ROLE)
    if su.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE]).fetchone():
        su.execute(SQL("DROP OWNED BY {}").format(role))
        su.execute(SQL("DROP ROLE {}").format(role))


def test_app_role(su):
    drop_app_role(su)           # left over by an interrupted run
    role = Identifier(APP_ROLE)
    su.execute(SQL("CREATE ROLE {} LOGIN").format(role))
    su.execute(SQL("GRANT oms_app TO {}").format(role))
    try:
        with connect(user=APP_ROLE) as app:
            check_app_role(app)
    finally:
        drop_app_role(su)
    R.ok("the login role is dropped again",
         su.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE]).fetchone() is None)


def check_app_role(app):
    R.equal("connected over the wire as the oms_app login role",
            app.execute("SELECT current_user").fetchone()[0], APP_ROLE)
    doc = call(app, "oms_create_order", customer_id=customer("app"), items=ITEMS,
               idempotency_key=key("app"))
    R.equal("oms_app creates an order", (doc["status"], doc["total"]), ("pending", ITEMS_TOTAL))
    order_id = uuid.UUID(doc["order_id"])
    R.equal("oms_app reads the order back", call(app, "oms_get_order", order_id=order_id), doc)
    R.equal("oms_app replays its idempotency key",
            call(app, "oms_create_order", customer_id=customer("app"), items=ITEMS,
                 idempotency_key=key("app")), doc)
    R.equal("oms_app cancels the order",
            call(app, "oms_cancel_order", order_id=order_id)["status"], "canceled")
    R.equal("oms_app reads the timeline",
            [r[0] for r in app.execute("SELECT seq FROM oms_order_timeline(%s)", [order_id])],
            [1, 2])

    if SHARDS:
        check_router_refusals(app)
        return
    denied = [
        ("INSERT into oms.orders",
         "INSERT INTO oms.orders (customer_id, currency, total) VALUES (%s, 'USD', 0)",
         [customer("app-insert")]),
        ("UPDATE of oms.orders",
         "UPDATE oms.orders SET metadata = '{}' WHERE id = %s", [order_id]),
        ("DELETE from oms.idempotency_keys",
         "DELETE FROM oms.idempotency_keys WHERE key = %s", [key("app")]),
        ("SELECT from oms.orders", "SELECT count(*) FROM oms.orders", None),
        ("an internal function (oms._price_items)",
         "SELECT oms._price_items(%s)", [Jsonb(ITEMS)]),
        ("the admin function oms_purge_idempotency_keys",
         "SELECT oms_purge_idempotency_keys()", None),
    ]
    for name, statement, params in denied:
        R.error(f"oms_app is refused {name} with 42501", app, statement, params, "42501")


def check_router_refusals(app):
    """The router has no oms tables; oms_app may not read the views nor
    call what is for oms_reader or oms_admin."""
    denied = [
        ("SELECT from oms.stock_levels", "SELECT count(*) FROM oms.stock_levels", None),
        ("a proxy helper of an admin function (oms._all_purge_idempotency_keys)",
         "SELECT oms._all_purge_idempotency_keys()", None),
        ("the router's API check (oms.api_differences)",
         "SELECT count(*) FROM oms.api_differences()", None),
        ("the admin function oms_purge_idempotency_keys",
         "SELECT oms_purge_idempotency_keys()", None),
    ]
    for name, statement, params in denied:
        R.error(f"oms_app is refused {name} with 42501", app, statement, params, "42501")


# --------------------------------------------------------------------------
# Tests: two sessions racing on one idempotency key

def wait_until_blocked(observer, waiter_pid, holder_pid, thread):
    """Polls the server until waiter_pid waits for holder_pid (through the
    router: until any session waits for holder_pid, the router's call on
    the shard).  Returns False if the waiter's thread ended first or the
    hang guard ran out."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while time.monotonic() < deadline:
        if not thread.is_alive():
            return False
        if SHARDS:
            blocked = observer.execute(
                "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE %s = ANY (pg_blocking_pids(pid)))",
                [holder_pid]).fetchone()[0]
        else:
            blocked = observer.execute("SELECT %s = ANY (pg_blocking_pids(%s))",
                                       [holder_pid, waiter_pid]).fetchone()[0]
        if blocked:
            return True
    return False


def shard_of_key(su, k):
    """The shard database owning an idempotency key's partition (each shard
    names its partitions in oms_shard_info())."""
    if len(SHARDS) == 1:
        return SHARDS[0]
    for db in SHARDS:
        with connect(dbname=db) as conn:
            if conn.execute("""SELECT (oms.partition_of_text(%s) & ((i ->> 'partition_count')::int - 1))
                                      IN (SELECT jsonb_array_elements_text(i -> 'partitions')::int)
                               FROM oms_shard_info() AS i""", [k]).fetchone()[0]:
                return db
    raise AssertionError(f"no shard owns key {k}")


def race_same_key(su, outcome):
    """Session 1 creates an order with a new key and keeps its transaction
    open; session 2 calls with the same key and blocks; session 1 then
    commits or rolls back.  Returns (first doc, second doc or exception).
    Through the router, a call is a transaction on the shard of its own:
    session 1 then holds its transaction on the owning shard directly and
    session 2 goes through the router."""
    c, k = customer(f"race-{outcome}"), key(f"race-{outcome}")
    args = {"customer_id": c, "items": ITEMS, "idempotency_key": k}
    result = {}
    first_db = {"dbname": shard_of_key(su, k)} if SHARDS else {}
    with connect(autocommit=False, **first_db) as first, connect() as second, \
            connect(**first_db) as observer:
        def second_call():
            try:
                result["doc"] = call(second, "oms_create_order", **args)
            except Exception as e:          # reported by the main thread
                result["doc"] = e

        first_doc = call(first, "oms_create_order", **args)     # not committed
        thread = threading.Thread(target=second_call, daemon=True)
        thread.start()
        blocked = wait_until_blocked(observer, second.info.backend_pid, first.info.backend_pid, thread)
        R.ok(f"[{outcome}] second session blocks on the uncommitted key", blocked,
             f"pg_blocking_pids never showed the wait; second session result: "
             f"{result.get('doc', 'still running')!r}")
        if outcome == "commit":
            first.commit()
        else:
            first.rollback()
        thread.join(HANG_GUARD_SECONDS)
        if thread.is_alive():
            second.cancel()
            thread.join(HANG_GUARD_SECONDS)
            R.ok(f"[{outcome}] second session finishes after the first one ends", False,
                 f"still blocked after {HANG_GUARD_SECONDS} s; canceled it")
    return c, k, first_doc, result.get("doc")


def test_race_commit(su):
    c, k, first_doc, second_doc = race_same_key(su, "commit")
    if not R.ok("[commit] second session returns a document", isinstance(second_doc, dict),
                f"got {second_doc!r}"):
        return
    R.equal("[commit] second session replays the first session's order",
            second_doc["order_id"], first_doc["order_id"])
    R.equal("[commit] second session gets the identical response", second_doc, first_doc)
    R.equal("[commit] exactly one order was created for the key",
            stored(su, """SELECT count(*) FROM oms.order_events
                          WHERE event_type = 'order.created' AND data ->> 'idempotency_key' = %s""",
                   [k])[0], 1)
    R.equal("[commit] one order, one event, one outbox row, one key",
            footprint_text(footprint(su, c, k)), "orders=1 items=2 events=1 outbox=1 keys=1")


def test_race_rollback(su):
    c, k, first_doc, second_doc = race_same_key(su, "rollback")
    if not R.ok("[rollback] second session returns a document", isinstance(second_doc, dict),
                f"got {second_doc!r}"):
        return
    R.ok("[rollback] second session creates its own order",
         second_doc["order_id"] != first_doc["order_id"] and second_doc["status"] == "pending",
         f"first {first_doc['order_id']}, second {second_doc['order_id']}")
    sql, params = call_sql("oms_get_order", order_id=uuid.UUID(first_doc["order_id"]))
    R.error("[rollback] the rolled-back order does not exist (P0002)", su, sql, params, "P0002")
    R.equal("[rollback] one order, one event, one outbox row, one key",
            footprint_text(footprint(su, c, k)), "orders=1 items=2 events=1 outbox=1 keys=1")


# --------------------------------------------------------------------------

TESTS = [
    test_extension_installed,
    test_create_order_document,
    test_defaults_and_currencies,
    test_big_total_is_exact,
    test_binary_format,
    test_cancel_and_timeline,
    test_unknown_order,
    test_bad_input,
    test_customer_id_length_counts_characters,
    test_idempotent_replay,
    test_idempotency_conflicts,
    test_failed_call_stores_nothing,
    test_idempotency_key_limits,
    test_idempotent_cancel,
    test_prepared_statements,
    test_app_role,
    test_race_commit,
    test_race_rollback,
]


def main():
    try:
        su = connect()
    except psycopg.Error as e:
        R.ok("connect to the test database", False, str(e))
        return 1
    with su:
        for test in TESTS:
            try:
                test(su)
            except Exception:
                R.ok(f"{test.__name__} runs to completion", False, traceback.format_exc())
    print(f"# {R.count} checks, {R.failed} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
