#!/usr/bin/python3
"""oms router contract: the router gives what the owning shard gives.

Run by test/suites/router.sh after test/cluster.sh made a router database
and its shards: PGHOST/PGPORT/PGUSER name the server, OMS_ROUTER the router
database, OMS_SHARDS the shard databases in shard order (space-separated),
OMS_PARTITIONS the partition count.  Partition p belongs to shard
p % len(OMS_SHARDS) (the round robin of test/cluster.sh).

Checks, TAP-like (`ok - name` / `not ok - name`, `#` diagnostics):
  * oms.api_differences() is empty: the router has every public function of
    oms, with the same arguments, defaults and result;
  * same results as a single node: every routed function called through the
    router and the same call on the owning shard give identical documents
    (for calls with an idempotency key, the shard's answer is the stored
    response the router's call left there), and bad input gives the same
    SQLSTATE, message, detail and hint both ways;
  * idempotent creates: the same key twice lands on the same shard with the
    first result; different keys reach every shard; a shard that does not
    own a key's partition refuses it with OM020;
  * cross-shard reads: health, metrics, customer orders and stock levels
    cover every shard; an unreachable shard shows in the health document.
Checks that need shard identity (oms_configure_shard in oms core) print
`ok - ... # SKIP` on a cluster of unconfigured shards.

Sagas are driven with oms_run_sagas() through the router: no worker needed.
"""

import os
import sys
import traceback
import uuid

import psycopg
from psycopg.types.json import Jsonb

ROUTER = os.environ["OMS_ROUTER"]
SHARDS = os.environ["OMS_SHARDS"].split()
PARTITIONS = int(os.environ.get("OMS_PARTITIONS", "16"))
RUN = uuid.uuid4().hex[:8]
JSONB_ARGS = {"items", "metadata", "details", "schedules"}


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

    def skip(self, name, why):
        self.count += 1
        print(f"ok - {name} # SKIP {why}")


R = Report()


def connect(db):
    return psycopg.connect("", dbname=db, autocommit=True)


def call_sql(func, args):
    params = {name: Jsonb(value) if name in JSONB_ARGS and value is not None else value
              for name, value in args.items()}
    placeholders = ", ".join(f"{name} => %({name})s" for name in args)
    return f"SELECT * FROM {func}({placeholders})", params


def outcome(conn, func, args):
    """('ok', rows) or ('error', sqlstate, message, detail, hint)."""
    sql, params = call_sql(func, args)
    try:
        return ("ok", conn.execute(sql, params).fetchall())
    except psycopg.Error as e:
        return ("error", e.sqlstate, e.diag.message_primary, e.diag.message_detail, e.diag.message_hint)


def first(result):
    return result[1][0][0] if result[0] == "ok" and result[1] else None


class Cluster:
    def __init__(self):
        self.router = connect(ROUTER)
        self.shards = [connect(db) for db in SHARDS]
        self.configured = all(
            s.execute("SELECT to_regprocedure('oms_shard_info()') IS NOT NULL").fetchone()[0]
            and s.execute("SELECT oms_shard_info() ->> 'shard'").fetchone()[0] is not None
            for s in self.shards)

    def shard_of_partition(self, hash_value):
        return (hash_value & (PARTITIONS - 1)) % len(self.shards)

    def shard_of_id(self, some_id):
        p = self.router.execute("SELECT oms.partition_of_id(%s)", [some_id]).fetchone()[0]
        return self.shard_of_partition(p)

    def shard_of_text(self, key):
        p = self.router.execute("SELECT oms.partition_of_text(%s)", [key]).fetchone()[0]
        return self.shard_of_partition(p)


def strip(doc, keys=("updated_at",)):
    if isinstance(doc, dict):
        return {k: strip(v, keys) for k, v in doc.items() if k not in keys}
    if isinstance(doc, list):
        return [strip(v, keys) for v in doc]
    return doc


def same_on_shard(c, label, func, args, shard, ignore=()):
    """Calls func through the router, then the same call on the shard;
    the results must be identical (keys in ignore left out).  Returns the
    router's first value."""
    via_router = outcome(c.router, func, args)
    direct = outcome(c.shards[shard], func, args)
    if ignore:
        via_router = (via_router[0], [tuple(strip(v, ignore) for v in row) for row in via_router[1]]) \
            if via_router[0] == "ok" else via_router
        direct = (direct[0], [tuple(strip(v, ignore) for v in row) for row in direct[1]]) \
            if direct[0] == "ok" else direct
    R.ok(f"same result through the router and on the shard: {label}",
         via_router == direct and (via_router[0] == "ok" or "error" in label),
         f"router: {via_router!r}\nshard:  {direct!r}")
    return first(via_router)


def same_error(c, label, func, args, shard=None):
    """Bad input: the router and the owning shard (or shard 0) raise the
    same SQLSTATE, message, detail and hint."""
    via_router = outcome(c.router, func, args)
    direct = outcome(c.shards[shard or 0], func, args)
    R.ok(f"same error through the router and on the shard: {label}",
         via_router[0] == "error" and via_router == direct,
         f"router: {via_router!r}\nshard:  {direct!r}")


ITEMS = [{"sku": "RT-A", "quantity": 2, "unit_price": 1000}, {"sku": "RT-B", "quantity": 1, "unit_price": 250}]


def local_items(c, shard, prefix="RT"):
    """Two lines whose SKUs are homed on the shard (stock on it, set through
    the router): orders here do not depend on stock held by other shards."""
    skus = []
    i = 0
    while len(skus) < 2:
        sku = f"{prefix}-{RUN}-{i}"
        if c.shard_of_text(sku) == shard:
            skus.append(sku)
        i += 1
    for sku in skus:
        c.router.execute("SELECT oms_set_stock(%s, 50)", [sku])
    return [{"sku": skus[0], "quantity": 2, "unit_price": 1000}, {"sku": skus[1], "quantity": 1, "unit_price": 250}]


def key(label):
    return f"router-{RUN}-{label}"


# ---------------------------------------------------------------- checks

def test_api(c):
    rows = c.router.execute("SELECT function, problem FROM oms.api_differences()").fetchall()
    R.equal("oms.api_differences(): the router has oms's whole public API, same signatures", rows, [])
    # The check sees a function oms gains: one added to oms on every shard.
    for s in c.shards:
        s.execute("CREATE FUNCTION oms_router_probe() RETURNS int LANGUAGE sql RETURN 1")
        s.execute("ALTER EXTENSION oms ADD FUNCTION oms_router_probe()")
    try:
        rows = c.router.execute("SELECT function, problem FROM oms.api_differences()").fetchall()
    finally:
        for s in c.shards:
            s.execute("ALTER EXTENSION oms DROP FUNCTION oms_router_probe()")
            s.execute("DROP FUNCTION oms_router_probe()")
    R.equal("oms.api_differences() reports a public function oms has and the router lacks", rows,
            [("oms_router_probe()", "on the shards, not on the router")])


def test_order_life(c):
    """One order from create to return, every call compared with the shard."""
    for sku in ("RT-A", "RT-B"):
        same_on_shard(c, f"oms_set_stock of {sku}", "oms_set_stock", {"sku": sku, "on_hand": 50},
                      c.shard_of_text(sku), ignore=("updated_at",))
    same_on_shard(c, "oms_adjust_stock (error: unknown location)", "oms_adjust_stock",
                  {"sku": "RT-A", "delta": 1, "location": "nowhere"}, c.shard_of_text("RT-A"))
    k = key("life")
    home = c.shard_of_text(k)
    items = local_items(c, home)
    args = {"customer_id": f"cust-{RUN}", "items": items, "idempotency_key": k}
    doc = same_on_shard(c, "oms_create_order with a key (the shard replays it)", "oms_create_order", args, home)
    if not doc:
        return
    order = uuid.UUID(doc["order_id"])
    owner = c.shard_of_id(order) if c.configured else 0
    R.equal("the order id carries the partition of its key's shard", owner, home)
    same_on_shard(c, "oms_get_order", "oms_get_order", {"order_id": order}, owner)
    same_on_shard(c, "oms_pay_order", "oms_pay_order",
                  {"order_id": order, "payment_method": "test_ok", "idempotency_key": key("pay")}, owner)
    steps = c.router.execute("SELECT oms_run_sagas()").fetchone()[0]
    R.ok("oms_run_sagas through the router runs the saga's steps", steps > 0, f"ran {steps}")
    same_on_shard(c, "oms_get_order of the paid order", "oms_get_order", {"order_id": order}, owner)
    same_on_shard(c, "oms_order_timeline", "oms_order_timeline", {"order_id": order}, owner)
    doc = same_on_shard(c, "oms_create_shipment", "oms_create_shipment",
                        {"order_id": order, "idempotency_key": key("shipment")}, owner)
    if not doc or "shipment" not in doc:
        return
    shipment = uuid.UUID(doc["shipment"]["shipment_id"])
    R.equal("a shipment id carries its order's partition",
            c.shard_of_id(shipment) if c.configured else 0, owner)
    same_on_shard(c, "oms_ship", "oms_ship", {"shipment_id": shipment, "idempotency_key": key("ship")}, owner)
    same_on_shard(c, "oms_mark_delivered", "oms_mark_delivered",
                  {"shipment_id": shipment, "idempotency_key": key("delivered")}, owner)
    doc = same_on_shard(c, "oms_request_return", "oms_request_return",
                        {"order_id": order, "reason": "too big", "items": [{"sku": items[0]["sku"], "quantity": 1}],
                         "idempotency_key": key("return")}, owner)
    if not doc or "return" not in doc:
        return
    ret = uuid.UUID(doc["return"]["return_id"])
    same_on_shard(c, "oms_receive_return", "oms_receive_return",
                  {"return_id": ret, "idempotency_key": key("receive")}, owner)
    doc = same_on_shard(c, "oms_request_return (second)", "oms_request_return",
                        {"order_id": order, "reason": "worn", "items": [{"sku": items[1]["sku"], "quantity": 1}],
                         "idempotency_key": key("return2")}, owner)
    if doc and "return" in doc:
        same_on_shard(c, "oms_reject_return", "oms_reject_return",
                      {"return_id": uuid.UUID(doc["return"]["return_id"]), "reason": "worn",
                       "idempotency_key": key("reject")}, owner)
    c.router.execute("SELECT oms_run_sagas()")
    same_on_shard(c, "oms_refund_order", "oms_refund_order",
                  {"order_id": order, "amount": 100, "idempotency_key": key("refund")}, owner)
    c.router.execute("SELECT oms_run_sagas()")
    same_on_shard(c, "oms_get_order at the end", "oms_get_order", {"order_id": order}, owner)


def test_cancels(c):
    orders = {}
    for label in ("cancel-order", "cancel-items"):
        k = key(label)
        items = local_items(c, c.shard_of_text(k))
        doc = first(outcome(c.router, "oms_create_order", {"customer_id": f"cust-{RUN}", "items": items,
                                                           "idempotency_key": k}))
        if not doc:
            R.ok(f"create an order for {label}", False)
            return
        orders[label] = (uuid.UUID(doc["order_id"]), c.shard_of_text(k), items)
    order, owner, _ = orders["cancel-order"]
    same_on_shard(c, "oms_cancel_order", "oms_cancel_order",
                  {"order_id": order, "reason": "test", "idempotency_key": key("co")}, owner)
    order, owner, items = orders["cancel-items"]
    outcome(c.router, "oms_pay_order", {"order_id": order, "payment_method": "test_ok"})
    c.router.execute("SELECT oms_run_sagas()")
    same_on_shard(c, "oms_cancel_items", "oms_cancel_items",
                  {"order_id": order, "items": [{"sku": items[1]["sku"], "quantity": 1}], "idempotency_key": key("ci")},
                  owner)
    # A shipment canceled: a paid order of its own.
    k = key("cancel-shipment")
    doc = first(outcome(c.router, "oms_create_order", {"customer_id": f"cust-{RUN}",
                                                       "items": local_items(c, c.shard_of_text(k)),
                                                       "idempotency_key": k}))
    order = uuid.UUID(doc["order_id"])
    owner = c.shard_of_text(k)
    outcome(c.router, "oms_pay_order", {"order_id": order, "payment_method": "test_ok"})
    c.router.execute("SELECT oms_run_sagas()")
    doc = first(outcome(c.router, "oms_create_shipment", {"order_id": order}))
    if doc and "shipment" in doc:
        same_on_shard(c, "oms_cancel_shipment", "oms_cancel_shipment",
                      {"shipment_id": uuid.UUID(doc["shipment"]["shipment_id"]), "reason": "damaged",
                       "idempotency_key": key("cs")}, owner)
    else:
        R.ok("create a shipment to cancel", False, repr(doc))


def test_pure_and_replicated(c):
    same_on_shard(c, "oms_format_money", "oms_format_money", {"amount": 123456, "currency": "EUR"}, 0)
    same_on_shard(c, "oms_transition_allowed (order statuses)", "oms_transition_allowed",
                  {"from_status": "pending", "to_status": "canceled"}, 0)
    same_on_shard(c, "oms_transition_allowed (machine)", "oms_transition_allowed",
                  {"machine": "shipment", "from_status": "pending", "to_status": "shipped"}, 0)
    R.equal("same result through the router and on the shard: oms_state_machine_dot()",
            c.router.execute("SELECT oms_state_machine_dot()").fetchone(),
            c.shards[0].execute("SELECT oms_state_machine_dot()").fetchone())
    same_on_shard(c, "oms_state_machine_dot(machine)", "oms_state_machine_dot", {"machine": "payment"}, 0)
    doc = first(outcome(c.router, "oms_set_location", {"code": f"loc{RUN}", "name": "Router test", "priority": 3}))
    rows = [s.execute("SELECT to_jsonb(l) FROM oms.locations l WHERE code = %s", [f"loc{RUN}"]).fetchone()
            for s in c.shards]
    R.ok("oms_set_location through the router creates the location on every shard",
         all(r is not None and strip(r[0], ("created_at", "updated_at")) ==
             strip(doc, ("created_at", "updated_at")) for r in rows), f"router: {doc!r}\nshards: {rows!r}")


def test_errors(c):
    unknown = uuid.uuid4()
    owner = c.shard_of_id(unknown) if c.configured else 0
    for func, args in [
        ("oms_get_order", {"order_id": unknown}),
        ("oms_cancel_order", {"order_id": unknown}),
        ("oms_pay_order", {"order_id": unknown, "payment_method": "test_ok"}),
        ("oms_refund_order", {"order_id": unknown}),
        ("oms_order_timeline", {"order_id": unknown}),
        ("oms_cancel_items", {"order_id": unknown}),
        ("oms_create_shipment", {"order_id": unknown}),
        ("oms_request_return", {"order_id": unknown, "reason": "x"}),
        ("oms_ship", {"shipment_id": unknown}),
        ("oms_mark_delivered", {"shipment_id": unknown}),
        ("oms_cancel_shipment", {"shipment_id": unknown}),
        ("oms_receive_return", {"return_id": unknown}),
        ("oms_reject_return", {"return_id": unknown}),
    ]:
        same_error(c, f"{func} of an unknown id", func, args, owner)
    for func, args in [
        ("oms_get_order", {"order_id": None}),
        ("oms_ship", {"shipment_id": None}),
        ("oms_create_order", {"customer_id": None, "items": ITEMS}),
        ("oms_create_order", {"customer_id": "c", "items": [{"sku": "A", "quantity": 0, "unit_price": 1}]}),
        ("oms_create_order", {"customer_id": "c", "items": [{"sku": "A", "quantity": 1, "unit_price": 1,
                                                             "colour": "red"}]}),
        ("oms_set_stock", {"sku": None, "on_hand": 1}),
        ("oms_payment_result", {"correlation_id": "no-such-command", "outcome": "approved"}),
        ("oms_payment_result", {"correlation_id": f"{unknown}:1:1", "outcome": "approved"}),
        ("oms_retry_dead_letter", {"id": 987654}),
        ("oms_format_money", {"amount": 1, "currency": "XXX"}),
        ("oms_run_maintenance", {"task": "no_such_task"}),
        ("oms_set_location", {"code": None}),
        ("oms_customer_orders", {"customer_id": None}),
    ]:
        shard = owner if "order_id" in args or "shipment_id" in args else 0
        if func == "oms_payment_result" and ":" in args["correlation_id"] and c.configured:
            shard = c.shard_of_id(unknown)
        label = f"{func}({', '.join(f'{k}={v!r}' for k, v in args.items())})"
        same_error(c, label[:120], func, args, shard)


# Fixed keys, so the spread over shards is the same on every run (their
# partitions are md5-based): 24 keys reach all three shards of the suite.
SPREAD_KEYS = [f"router-spread-{i}" for i in range(24)]


def test_creates(c):
    k = key("idem")
    args = {"customer_id": f"idem-{RUN}", "items": ITEMS, "idempotency_key": k}
    a = first(outcome(c.router, "oms_create_order", args))
    b = first(outcome(c.router, "oms_create_order", args))
    R.ok("the same key twice through the router returns the first result", a is not None and a == b,
         f"{a!r}\n{b!r}")
    home = c.shard_of_text(k)
    where = [s.execute("SELECT count(*) FROM oms.orders WHERE customer_id = %s", [f"idem-{RUN}"]).fetchone()[0]
             for s in c.shards]
    R.equal("...one order, on the shard owning the key's partition",
            where, [1 if i == home else 0 for i in range(len(c.shards))])
    counts = [0] * len(c.shards)
    for i in range(24):
        outcome(c.router, "oms_create_order", {"customer_id": "router-spread", "items": ITEMS[:1],
                                               "idempotency_key": SPREAD_KEYS[i]})
    for i, s in enumerate(c.shards):
        counts[i] = s.execute("SELECT count(*) FROM oms.orders WHERE customer_id = %s",
                              ["router-spread"]).fetchone()[0]
    if len(c.shards) == 1 or not c.configured:
        R.skip("different keys reach every shard", "needs shard identity and more than one shard")
        R.skip("a shard that does not own a key's partition refuses the create with OM020",
               "needs shard identity and more than one shard")
        return
    R.ok("different keys reach every shard", all(n > 0 for n in counts) and sum(counts) == 24, repr(counts))
    other = (home + 1) % len(c.shards)
    r = outcome(c.shards[other], "oms_create_order", args)
    R.ok("a shard that does not own a key's partition refuses the create with OM020",
         r[0] == "error" and r[1] == "OM020", repr(r))


def test_cross_shard(c):
    n = len(c.shards)
    health = c.router.execute("SELECT oms_health()").fetchone()[0]
    R.equal("oms_health through the router lists every shard", len(health.get("shards", [])), n)
    R.ok("oms_health's status is the worst shard status",
         health.get("status") == max((s["status"] for s in health["shards"]),
                                     key=["ok", "degraded", "down", "unreachable"].index).replace("unreachable", "down"),
         repr({k: v for k, v in health.items() if k != "shards"}))
    metrics = c.router.execute("SELECT oms_metrics()").fetchone()[0]
    samples = [line for line in metrics.splitlines() if line and not line.startswith("#")]
    helps = [line for line in metrics.splitlines() if line.startswith("# HELP ")]
    labels_ok = all('shard="' in line for line in samples)
    shards_seen = {line.split('shard="', 1)[1].split('"', 1)[0] for line in samples if 'shard="' in line}
    R.ok("oms_metrics: every sample carries a shard label", samples and labels_ok,
         "\n".join(line for line in samples if 'shard="' not in line)[:500])
    R.equal("oms_metrics: HELP lines once per family", len(helps), len(set(helps)))
    if c.configured:
        R.equal("oms_metrics: samples from every shard", shards_seen, {str(i) for i in range(n)})
    else:
        R.skip("oms_metrics: samples from every shard", "needs shard identity")
    skus = [f"router-xs-{i}" for i in range(8)]     # fixed: homed on all three shards
    for i, sku in enumerate(skus):
        c.router.execute("SELECT oms_set_stock(%s, %s)", [sku, i + 1])
    rows = c.router.execute("SELECT sku, on_hand FROM oms.stock_levels WHERE sku LIKE %s ORDER BY sku",
                            ["router-xs-%"]).fetchall()
    R.equal("oms.stock_levels on the router covers every shard's SKUs", rows,
            [(sku, i + 1) for i, sku in enumerate(skus)])
    if c.configured and n > 1:
        homes = {c.shard_of_text(sku) for sku in skus}
        R.equal("...whose SKUs live on their home shards, all of them", homes, set(range(n)))
    for view in ("location_stock_levels", "revenue_daily", "orders_by_status_daily", "saga_metrics",
                 "saga_failure_reasons", "metrics", "saga_durations", "saga_step_latency", "maintenance_status",
                 "statuses", "status_transitions", "order_states", "order_transitions"):
        try:
            c.router.execute(f"SELECT count(*) FROM oms.{view}").fetchone()
            R.ok(f"oms.{view} reads through the router", True)
        except psycopg.Error as e:
            R.ok(f"oms.{view} reads through the router", False, f"{e.sqlstate}: {e}")
    total = sum(s.execute("SELECT coalesce(sum(orders), 0) FROM oms.orders_by_status_daily").fetchone()[0]
                for s in c.shards)
    R.equal("oms.orders_by_status_daily adds every shard's rows",
            c.router.execute("SELECT coalesce(sum(orders), 0) FROM oms.orders_by_status_daily").fetchone()[0], total)
    for func in ("oms_worker_status", "oms_saga_worker_status", "oms_maintenance_jobs"):
        r = outcome(c.router, func, {})
        R.ok(f"{func} answers through the router", r[0] == "ok", repr(r))
    for func in ("oms_relay_status", "oms_run_maintenance"):
        doc = first(outcome(c.router, func, {}))
        R.equal(f"{func} has one document per shard", len((doc or {}).get("shards", [])), n)
    for func in ("oms_release_expired_reservations", "oms_purge_idempotency_keys", "oms_run_sagas"):
        r = outcome(c.router, func, {})
        R.ok(f"{func} sums over the shards", r[0] == "ok" and isinstance(first(r), int), repr(r))


def test_customer_orders(c):
    cust = "router-spread"
    via_router = [r[0] for r in c.router.execute("SELECT * FROM oms_customer_orders(%s, 1000)", [cust])]
    direct = []
    for s in c.shards:
        direct += [r[0] for r in s.execute("SELECT * FROM oms_customer_orders(%s, 1000)", [cust])]
    direct.sort(key=lambda d: (d["created_at"], d["order_id"]), reverse=True)
    R.ok("oms_customer_orders merges every shard's orders, newest first", via_router == direct and len(direct) == 24,
         f"router {len(via_router)} rows, shards {len(direct)}")
    top = [r[0] for r in c.router.execute("SELECT * FROM oms_customer_orders(%s, 5)", [cust])]
    R.equal("oms_customer_orders keeps max_orders over the cluster", top, direct[:5])


def test_stock_and_payments(c):
    """The stock calls with a location, adjustments, and a payment reply."""
    n = len(c.shards)
    sku = f"ST-{RUN}"
    home = c.shard_of_text(sku)
    same_on_shard(c, "oms_set_stock with a location", "oms_set_stock",
                  {"sku": sku, "on_hand": 7, "location": "default"}, home, ignore=("updated_at",))
    for args in ({"sku": sku, "delta": 3}, {"sku": sku, "delta": 3, "location": "default"}):
        r = first(outcome(c.router, "oms_adjust_stock", args))
        d = first(outcome(c.shards[home], "oms_adjust_stock", {**args, "delta": -3}))
        label = "oms_adjust_stock" + (" with a location" if "location" in args else "")
        R.ok(f"{label} through the router changes the home shard's stock (the shard takes it back)",
             r is not None and d is not None and r["on_hand"] - 3 == d["on_hand"]
             and strip(r, ("on_hand", "available", "updated_at")) == strip(d, ("on_hand", "available", "updated_at")),
             f"router: {r!r}\nshard:  {d!r}")
    if n > 1 and c.configured:
        other = (home + 1) % n
        r = outcome(c.shards[other], "oms_set_stock", {"sku": sku, "on_hand": 1})
        R.ok("a shard that is not a SKU's home refuses its stock with OM020", r[0] == "error" and r[1] == "OM020",
             repr(r))
    # A payment reply from a remote provider: the shard owning the saga.
    k = key("kafka-pay")
    owner = c.shard_of_text(k)
    db = SHARDS[owner]
    c.shards[owner].execute(f"ALTER DATABASE {db} SET oms.payment_provider = 'kafka'")
    try:
        with connect(ROUTER) as router:
            doc = first(outcome(router, "oms_create_order", {"customer_id": f"cust-{RUN}",
                                                            "items": local_items(c, owner), "idempotency_key": k}))
            order = uuid.UUID(doc["order_id"])
            outcome(router, "oms_pay_order", {"order_id": order, "payment_method": "test_ok"})
            router.execute("SELECT oms_run_sagas()")
            row = c.shards[owner].execute("SELECT correlation_id FROM oms.payment_commands WHERE order_id = %s",
                                          [order]).fetchone()
            if not R.ok("a kafka payment step sent its command on the owning shard", row is not None):
                return
            args = {"correlation_id": row[0], "outcome": "approved", "details": {"reference": "psp-1"}}
            applied = first(outcome(router, "oms_payment_result", args))
            R.ok("oms_payment_result through the router applies the reply on the owning shard",
                 applied is not None and applied.get("result") == "applied", repr(applied))
            again = outcome(router, "oms_payment_result", args)
            direct = outcome(c.shards[owner], "oms_payment_result", args)
            R.ok("same result through the router and on the shard: oms_payment_result (a replay)",
                 again[0] == "ok" and again == direct, f"router: {again!r}\nshard:  {direct!r}")
    finally:
        c.shards[owner].execute(f"ALTER DATABASE {db} RESET oms.payment_provider")


def test_dead_letters(c):
    """oms_retry_dead_letter finds the shard holding the letter."""
    n = len(c.shards)
    a, b = 1 % n, 2 % n
    base = 1000000 + int(RUN[:5], 16) * 4      # fresh ids on every run
    insert = """INSERT INTO oms.dead_letters (id, kind, error, payload, status) OVERRIDING SYSTEM VALUE
                VALUES (%s, %s, '{}', %s, 'open')"""
    event = {"id": str(uuid.uuid4()), "aggregatetype": "order", "aggregateid": str(uuid.uuid4()),
             "type": "order.test", "payload": {}, "seq": 1, "created_at": "2026-01-01T00:00:00Z",
             "traceparent": None}
    c.shards[a].execute(insert, [base + 1, "saga_failed", None])
    c.shards[b].execute(insert, [base + 2, "publish", Jsonb(event)])
    same_error(c, "oms_retry_dead_letter of a letter that cannot be replayed (found on its shard)",
               "oms_retry_dead_letter", {"id": base + 1}, a)
    r = first(outcome(c.router, "oms_retry_dead_letter", {"id": base + 2}))
    row = c.shards[b].execute("SELECT to_jsonb(d) FROM oms.dead_letters d WHERE id = %s", [base + 2]).fetchone()[0]
    R.ok("oms_retry_dead_letter through the router replays the letter on the shard holding it",
         r is not None and r == row and row["status"] == "replayed", f"router: {r!r}\nshard:  {row!r}")
    same_error(c, "oms_retry_dead_letter of a replayed letter", "oms_retry_dead_letter", {"id": base + 2}, b)
    if n > 1:
        c.shards[0].execute(insert, [base + 3, "saga_failed", None])
        c.shards[1].execute(insert, [base + 3, "saga_failed", None])
        r = outcome(c.router, "oms_retry_dead_letter", {"id": base + 3})
        R.ok("a dead-letter id open on two shards is an error (21000) through the router",
             r[0] == "error" and r[1] == "21000", repr(r))


def test_roles(c):
    """A login role granted oms_reader, through the router: PL/Proxy
    connects to the shards as that role, and the shards' grants apply."""
    role = f"router_reader_{RUN}"
    c.router.execute(f"CREATE ROLE {role} LOGIN")
    c.router.execute(f"GRANT oms_reader TO {role}")
    try:
        with psycopg.connect("", dbname=ROUTER, user=role, autocommit=True) as reader:
            health = first(outcome(reader, "oms_health", {}))
            R.ok("oms_reader reads oms_health of every shard through the router",
                 health is not None and len(health["shards"]) == len(SHARDS)
                 and all(s["status"] != "unreachable" for s in health["shards"]), repr(health)[:300])
            try:
                reader.execute("SELECT count(*) FROM oms.stock_levels").fetchone()
                R.ok("oms_reader reads oms.stock_levels through the router", True)
            except psycopg.Error as e:
                R.ok("oms_reader reads oms.stock_levels through the router", False, str(e))
            r = outcome(reader, "oms_create_order", {"customer_id": "c", "items": ITEMS})
            R.ok("oms_reader may not create orders through the router (42501)",
                 r[0] == "error" and r[1] == "42501", repr(r))
    finally:
        c.router.execute(f"DROP ROLE {role}")


def test_remote_basket(c):
    """An order whose SKUs are homed on other shards, paid through the
    router and driven by oms_run_sagas through the router (which runs every
    shard's due steps): confirmed, stock taken on the SKUs' home shards."""
    n = len(c.shards)
    if n == 1 or not c.configured:
        R.skip("a basket of SKUs homed on other shards is confirmed through the router", "needs more shards")
        return
    k = key("remote-basket")
    owner = c.shard_of_text(k)
    items = local_items(c, (owner + 1) % n, "RB")[:1] + local_items(c, (owner + 2) % n, "RB")[1:]
    doc = first(outcome(c.router, "oms_create_order", {"customer_id": f"cust-{RUN}", "items": items,
                                                       "idempotency_key": k}))
    order = uuid.UUID(doc["order_id"])
    outcome(c.router, "oms_pay_order", {"order_id": order, "payment_method": "test_ok"})
    for _ in range(10):
        if c.router.execute("SELECT oms_run_sagas()").fetchone()[0] == 0:
            break
    doc = first(outcome(c.router, "oms_get_order", {"order_id": order}))
    R.equal("a basket of SKUs homed on other shards is confirmed through the router",
            (doc or {}).get("status"), "confirmed")
    levels = dict(c.router.execute("SELECT sku, on_hand FROM oms.stock_levels WHERE sku = ANY (%s)",
                                   [[i["sku"] for i in items]]).fetchall())
    R.equal("...its units left the stock of the SKUs' home shards",
            levels, {i["sku"]: 50 - i["quantity"] for i in items})


def test_unreachable(c):
    """A shard that does not answer is reported by oms_health, not an error."""
    r = c.router
    old = r.execute("""SELECT opt FROM pg_foreign_server s, unnest(s.srvoptions) opt
                       WHERE s.srvname = 'oms_cluster' AND opt LIKE 'p1=%'""").fetchone()[0]
    gone = old.split("=", 1)[1].replace(f"dbname={SHARDS[1 % len(SHARDS)]}", f"dbname={ROUTER}_gone")
    r.execute(f"ALTER SERVER oms_cluster OPTIONS (SET p1 '{gone}')")
    try:
        health = r.execute("SELECT oms_health()").fetchone()[0]
    finally:
        r.execute(f"ALTER SERVER oms_cluster OPTIONS (SET p1 '{old.split('=', 1)[1]}')")
    bad = [s for s in health.get("shards", []) if s.get("status") == "unreachable"]
    R.ok("oms_health reports an unreachable shard as such, with status down",
         health.get("status") == "down" and len(bad) == 1 and 1 in bad[0]["partitions"] and bad[0].get("error"),
         repr({k: v for k, v in health.items() if k != "shards"}) + "\n" + repr(bad))
    R.equal("...and every other shard still answers",
            len([s for s in health["shards"] if s.get("status") != "unreachable"]), len(SHARDS))


TESTS = [test_api, test_order_life, test_cancels, test_pure_and_replicated, test_errors, test_creates,
         test_cross_shard, test_customer_orders,
         test_stock_and_payments, test_dead_letters, test_roles,
         test_remote_basket, test_unreachable]


def main():
    try:
        c = Cluster()
    except psycopg.Error as e:
        R.ok("connect to the router and its shards", False, str(e))
        return 1
    print(f"# router {ROUTER}, {len(SHARDS)} shards, {PARTITIONS} partitions, "
          f"shard identity {'on' if c.configured else 'off (unconfigured shards)'}")
    for test in TESTS:
        try:
            test(c)
        except Exception:
            R.ok(f"{test.__name__} runs to completion", False, traceback.format_exc())
    print(f"# {R.count} checks, {R.failed} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
