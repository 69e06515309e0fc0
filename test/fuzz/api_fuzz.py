#!/usr/bin/python3
"""test/fuzz/api_fuzz.py: a seeded fuzzer for every public function of oms.

It finds the public functions in the catalog (every oms_* function that
belongs to extension oms), so a new function is fuzzed as soon as it exists,
and calls each of them thousands of times with random and boundary values,
as the least privileged role that may call it, on orders in every status.
It prints one TAP line ("ok - ..." / "not ok - ..." with "# " diagnostics)
per check; see test/fuzz/README.md for what is checked and how to reproduce
a failure.

Environment:
  PGHOST, PGPORT        a cluster with oms preloaded; we connect as postgres
  OMS_FUZZ_SEED         an integer (default 1), or "random"
  OMS_FUZZ_CALLS        calls per function (default 2000)
  OMS_FUZZ_DB           the database this creates (default oms_fuzz)
  OMS_FUZZ_SERVER_LOG   the server log to scan for crashes afterwards
  OMS_FUZZ_FAILURES     file for the full SQL of failing calls (optional)

Only the standard library and psycopg 3 (Debian's python3-psycopg).
"""

import decimal
import json
import os
import random
import re
import sys
import time
import traceback
import uuid
from collections import Counter, defaultdict

import psycopg
from psycopg import sql
from psycopg.types.string import TextLoader

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ERRORS_MD = os.path.join(ROOT, "docs", "errors.md")

DEFAULT_SEED = 1
DEFAULT_CALLS = 2000
CALLS_PER_ROUND = 100          # fixtures are rebuilt and sagas run between rounds
STATUS_REFRESH_EVERY = 200     # calls between two reads of the orders per status
EXAMPLES_PER_CHECK = 3
SANE_SHARE = 0.35              # calls whose every argument is valid
STATEMENT_TIMEOUT = "20s"      # a hang guard, not a timing assertion

STATUSES = ["pending", "processing", "cancel_requested", "confirmed", "canceled",
            "failed", "partially_refunded", "refunded"]
SHIPMENT_STATUSES = ["pending", "shipped", "delivered", "canceled"]
RETURN_STATUSES = ["requested", "received", "refunded", "rejected"]
ROLES = [("app", "oms_app"), ("reader", "oms_reader"), ("admin", "oms_admin")]
FIXTURE_SKUS = ["FZ-1", "FZ-2", "FZ-3", "FZ-\u2615-4"]
# Stock locations besides 'default': a little of each fixture SKU there, so
# that reserving sometimes prefers them and sometimes splits.
FIXTURE_LOCATIONS = {"fz-east": 1, "fz-west": 2}
FIXTURE_LOCATION_STOCK = 5
FIXTURE_STOCK = 10 ** 12       # above anything fuzzed orders can reserve between rounds

# Unicode White_Space: what "white space" means in docs/api.md.
WHITE_SPACE = set("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                  "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
# Invisible characters an identifier must not start or end with either
# (docs/api.md, "Identifiers").
INVISIBLE = set("\u180e\u200b\u2060\ufeff")
# The JSON limits of docs/api.md ("Free-form JSON").
METADATA_MAX_BYTES = 16384
DETAILS_MAX_BYTES = 4096
JSON_MAX_DEPTH = 32
SPECIAL_CHARS = ["\u00a0", "\u3000", "\u200b", "\ufeff", "\u0001", "\u007f", "\u0085",
                 "\u202e", "\u0301", "\U0001F600", "\U00010348", "\u05d0", "\u0627",
                 "\n", "\t", " ", "\\", "'", '"', "%", "\u2028", "\u00e9", "\u4e2d"]
INT_EDGES = [0, -1, 1, 2, 2 ** 15 - 1, 2 ** 31 - 1, -2 ** 31, 2 ** 31, -2 ** 31 - 1,
             2 ** 63 - 1, -2 ** 63, 2 ** 63, -2 ** 63 - 1, 10 ** 30]
INT_TEXTS = [" 42 ", "+1", "1.5", "1e3", "0x1F", "", "abc", "\uff11\uff12", "-0", "00001", "1_000"]
JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
MALFORMED_JSON = ["", " ", "{", "}", "[1,]", '{"a"}', "{'a': 1}", "NaN", "Infinity", "[1] x",
                  "\ufeff{}", '{"a":1,}', '"unterminated', '{"a": "\\ud800"}', '{"a": "\\x"}',
                  "nul", "01", '{"a":01}', "[\u00a01]"]


# --------------------------------------------------------------------------
# Values and calls

class V:
    """One generated argument: its text (None = SQL NULL), why the docs call
    it invalid (None when valid or unknown), and whether its JSON text has
    duplicate keys (such calls go out as untyped literals, see Call)."""
    __slots__ = ("text", "bad", "dup_keys")

    def __init__(self, text, bad=None, dup_keys=False):
        self.text = text
        self.bad = bad
        self.dup_keys = dup_keys


OMIT = object()   # leave a defaulted argument out


class Arg:
    def __init__(self, name, type_, has_default):
        self.name = name
        self.type = type_
        self.has_default = has_default


class Function:
    def __init__(self, schema, name, signature, args, volatility, may):
        self.schema = schema
        self.name = name
        self.signature = signature
        self.args = args
        self.volatility = volatility
        self.may = may                   # fuzz role -> may execute it
        # The least privileged fuzz role that may call it (None: none may).
        self.role = next((r for r, _ in ROLES if may[r]), None)
        self.named = all(a.name for a in args)
        self.read_only = is_read_only(name, volatility)
        self.takes_order = any(a.type == "uuid" and a.name == "order_id" for a in args)


def is_read_only(name, volatility):
    """Stable and immutable functions, and those whose name says they only
    read (get, timeline, status, health, metrics, format, state machine,
    transitions, jobs), must write nothing."""
    if volatility in ("s", "i"):
        return True
    return re.search(r"(^oms_get_|_timeline$|_status$|_health$|_metrics$|^oms_format_|"
                     r"_state_machine|_transition_allowed$|_jobs$)", name) is not None


class Call:
    """One call of a function: named arguments, each cast to its catalog type
    (typed), or all sent as untyped literals as a client writing
    SELECT f('...') would, so PostgreSQL picks the overload.  A call with a
    duplicate-key JSON text is always untyped: cast to jsonb first, the
    duplicates would be gone before oms could see them."""

    def __init__(self, fn, values, typed):
        self.fn = fn
        self.values = values             # list of V or OMIT, one per argument
        self.typed = typed

    def used(self):
        return [(a, v) for a, v in zip(self.fn.args, self.values) if v is not OMIT]

    def query(self):
        parts = []
        for a, _ in self.used():
            ph = sql.SQL("%s::{}").format(sql.SQL(a.type)) if self.typed else sql.SQL("%s")
            parts.append(sql.SQL("{} => ").format(sql.Identifier(a.name)) + ph if self.fn.named else ph)
        return sql.SQL("SELECT * FROM {}.{}({})").format(
            sql.Identifier(self.fn.schema), sql.Identifier(self.fn.name), sql.SQL(", ").join(parts))

    def params(self):
        return [v.text for _, v in self.used()]

    def bad(self):
        return [f"{a.name}: {v.bad}" for a, v in self.used() if v.bad]

    def __repr__(self):
        args = ", ".join(f"{a.name}={short(v.text)}" + (f"::{a.type}" if self.typed else "")
                         for a, v in self.used())
        return f"{self.fn.name}({args})"

    def full_sql(self, conn):
        """The call as a statement psql can run, with every value in full."""
        args = []
        for a, v in self.used():
            lit = "NULL" if v.text is None else sql.Literal(v.text).as_string(conn)
            args.append((f"{a.name} => " if self.fn.named else "") + lit + (f"::{a.type}" if self.typed else ""))
        return (f"SET ROLE fuzz_{self.fn.role};\nSELECT * FROM {self.fn.schema}.{self.fn.name}("
                + ", ".join(args) + ");\nRESET ROLE;")


def short(text):
    """A one-line repr of a value; long ones are cut in the middle."""
    if text is None:
        return "NULL"
    if len(text) <= 120:
        return repr(text)
    return f"{text[:40]!r}...<{len(text)} chars>...{text[-20:]!r}"


# --------------------------------------------------------------------------
# Primitive generators.  Each returns Python values; the argument
# generators below decide what the docs say about them.

def random_char(rng):
    lo, hi = rng.choice([(0x20, 0x7E), (0xA0, 0xFF), (0x100, 0x2FFF), (0x3000, 0xD7FF),
                         (0xE000, 0xFFFD), (0x10000, 0x10FFFF), (0x01, 0x1F)])
    return chr(rng.randint(lo, hi))


def huge_text(rng):
    """1 to 2 MB of UTF-8: rare, since every one costs a round trip of MBs."""
    c = rng.choice(["a", "\u00e9", "\U0001F600", " "])
    return c * (rng.randint(1 << 20, 2 << 20) // len(c.encode()))


def hostile_text(rng, limit=255):
    """Text at and around the length limit, white space of every kind,
    control and format characters, non-BMP, combining, RTL, and MBs."""
    r = rng.random()
    if r < 0.005:
        return huge_text(rng)
    if r < 0.06:
        return ""
    if r < 0.18:
        c = rng.choice(SPECIAL_CHARS)
        return rng.choice([c, c * rng.randint(2, 5), "a" + c + "b", c + "abc", "abc" + c])
    if r < 0.28:
        return "".join(rng.choice(sorted(WHITE_SPACE)) for _ in range(rng.randint(1, 4)))
    if r < 0.45:
        n = rng.choice([limit - 1, limit, limit + 1, limit * 4])
        return rng.choice(["x", "\u00e9", "\U0001F600", "\u0301"]) * n
    if r < 0.52:
        return rng.choice(["'; DROP TABLE oms.orders; --", "$$", "%s%n", "\\x00", "{}", "null",
                           "NULL", "\u202eevil", "\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631\u062d\u0628\u0627",
                           "e\u0301" * 8, "\U0001F600" * 3, "\ufeffBOM", "a\u200bb"])
    return "".join(random_char(rng) for _ in range(rng.randint(1, 40)))


def int_text(rng, lo=None, hi=None):
    """An integer as text: edges, overflow, malformed forms, or a value in [lo, hi]."""
    r = rng.random()
    if lo is not None and r < 0.5:
        return str(rng.randint(lo, hi))
    if r < 0.85:
        return str(rng.choice(INT_EDGES) + rng.choice([0, 0, 0, 1, -1]))
    return rng.choice(INT_TEXTS)


def parse_int(text):
    try:
        return int(text.strip()) if text is not None and re.fullmatch(r"\s*[+-]?\d+\s*", text) else None
    except ValueError:
        return None


def json_scalar(rng):
    return rng.choice(["null", "true", "false", "0", "-0", "1", "-1", "1.5", "1e400", "-1e-400",
                       '"x"', '""', '"\\u00e9"', '"\U0001F600"', "9223372036854775808",
                       "12345678901234567890123456789", '"\\u200b"'])


def json_small(rng, depth=0):
    r = rng.random()
    if depth > 3 or r < 0.4:
        return json_scalar(rng)
    if r < 0.7:
        return "[" + ", ".join(json_small(rng, depth + 1) for _ in range(rng.randint(0, 4))) + "]"
    return "{" + ", ".join(f"{json.dumps(hostile_text(rng, 20)[:50])}: {json_small(rng, depth + 1)}"
                           for _ in range(rng.randint(0, 4))) + "}"


def json_deep(rng, kind=None):
    """Thousands of levels (PostgreSQL parses ~10,000; far more is 54001)."""
    n = rng.randint(1000, 9000)
    if (kind or rng.choice("ao")) == "a":
        return "[" * n + "]" * n
    return '{"a": ' * n + "1" + "}" * n


def json_wide_object(rng):
    return "{" + ", ".join(f'"k{i}": {i}' for i in range(rng.randint(1000, 20000))) + "}"


def json_wide_array(rng):
    return "[" + ", ".join(str(i) for i in range(rng.randint(1000, 20000))) + "]"


def json_dup_keys(rng):
    a, b = rng.choice([("1", "2"), ('"x"', '"y"'), ("{}", "[]"), ("null", "1")])
    key = rng.choice(["k", "reference", "prune", "message", "\u00e9"])
    return f'{{"{key}": {a}, "other": 0, "{key}": {b}}}'


def json_object_arg(ctx, required=True, max_bytes=None):
    """A jsonb argument documented as "a JSON object" (of at most max_bytes
    as JSON text and 32 levels, when given): objects of every shape and
    size, the other JSON types, malformed text, NULL."""
    v = json_object_value(ctx, required)
    if max_bytes is not None and v.bad is None and v.text is not None:
        v.bad = json_size_problem(v.text, max_bytes)
    return v


def json_object_value(ctx, required):
    rng = ctx.rng
    # Valid calls get deep, wide and huge objects too: the docs set no limit.
    r = rng.uniform(0.06, 0.58) if ctx.sane else rng.random()
    if r < 0.06:
        return V(None, "NULL" if required else None)
    if r < 0.35:
        return V(rng.choice(["{}", '{"reference": "ref-1", "message": "m"}', '{"channel": "web"}',
                             json.dumps({"\u00e9\U0001F600": "\u202e\u0001\u0085"}, ensure_ascii=False)]))
    if r < 0.50:
        return V("{" + ", ".join(f"{json.dumps(hostile_text(rng, 30)[:60])}: {json_small(rng)}"
                                 for _ in range(rng.randint(1, 5))) + "}")
    if r < 0.54:
        return V(json_deep(rng, "o"))
    if r < 0.57:
        return V(json_wide_object(rng))
    if r < 0.58:
        return V(json.dumps({"blob": huge_text(rng)}))
    if r < 0.70:
        t = rng.choice(["[]", '"no"', "1", "null", "true", "[{}]", json_deep(rng, "a"), json_wide_array(rng)])
        return V(t, "not a JSON object")
    if r < 0.80:
        return V(rng.choice(MALFORMED_JSON))
    if r < 0.83:
        return V('{"a": "\\u0000"}')
    return V(json_dup_keys(rng), dup_keys=True)


# --------------------------------------------------------------------------
# Argument generators, one per documented argument.  Each takes the
# context (rng and what the database holds) and returns a V whose "bad"
# says which rule of docs/api.md the value breaks, if any.

def identifier_problem(s, limit):
    """The identifier rule of docs/api.md: 1 to limit characters, no control
    character, no white space or invisible character at either end."""
    if s is None:
        return "NULL"
    if s == "":
        return "empty"
    if len(s) > limit:
        return f"longer than {limit} characters"
    if any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f for c in s):
        return "contains a control character"
    edge = WHITE_SPACE | INVISIBLE
    if s[0] in edge or s[-1] in edge:
        return "starts or ends with white space"
    return None


def json_size_problem(text, max_bytes):
    """Clearly over the documented size or depth (None near the limits,
    where oms measures jsonb's own text form)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None

    def depth(v):
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        return 0
    try:
        if depth(value) > JSON_MAX_DEPTH:
            return f"nested deeper than {JSON_MAX_DEPTH} levels"
    except RecursionError:
        return f"nested deeper than {JSON_MAX_DEPTH} levels"
    if len(json.dumps(value, ensure_ascii=False).encode(errors="replace")) > max_bytes * 1.25:
        return f"larger than {max_bytes} bytes as JSON text"
    return None


def text_arg(ctx, pool, limit, null_share=0.06):
    rng = ctx.rng
    if ctx.sane:
        return rng.choice(pool)
    r = rng.random()
    if r < null_share:
        return None
    if r < 0.5:
        return rng.choice(pool)
    return hostile_text(rng, limit)


def gen_customer_id(ctx):
    s = text_arg(ctx, ["cust-1", "cust-\u00e9", "\u5ba2\u6237-7", "c"], 255)
    return V(s, identifier_problem(s, 255))


def gen_idempotency_key(ctx):
    rng = ctx.rng
    r = rng.random() * (0.8 if ctx.sane else 1)
    if r < 0.5:
        return V(None)
    if r < 0.8:
        # A small pool, so that replays and OM001 conflicts happen.
        return V(f"fz-key-{rng.randint(1, 24)}")
    s = hostile_text(rng, 255)
    return V(s, identifier_problem(s, 255))


def gen_reason(ctx):
    s = text_arg(ctx, [None, "customer asked", "\u00e9\U0001F600", "x" * 1000], 1000, null_share=0.4)
    return V(s, "longer than 1000 characters" if s is not None and len(s) > 1000 else None)


def gen_currency(ctx):
    rng = ctx.rng
    r = rng.uniform(0.05, 0.7) if ctx.sane else rng.random()
    if r < 0.05:
        s = None
    elif r < 0.7:
        s = rng.choice(["USD", "EUR", "JPY", "KWD", "GBP", "CHF"])
    elif r < 0.85:
        s = rng.choice(["usd", "US", "USDD", "XXX", "\u00dcSD", " USD", "USD ", "", "U\u200bSD", "ZZZ"])
    else:
        s = hostile_text(rng, 3)
    if s is None:
        bad = "NULL"
    elif not re.fullmatch(r"[A-Z]{3}", s):
        bad = "not three upper-case letters"
    elif s not in ctx.currencies:
        bad = "not in oms.currencies"
    else:
        bad = None
    return V(s, bad)


def gen_order_id(ctx):
    """Orders in every status (as of the last read), lightly disguised
    uuids of real orders, nonexistent and malformed uuids, NULL."""
    rng = ctx.rng
    r = rng.random()
    ctx.target = None
    present = [s for s in STATUSES if ctx.orders.get(s)]
    if (r < 0.65 or ctx.sane) and present:
        status = rng.choice(present)
        order_id, total = rng.choice(ctx.orders[status])
        ctx.target = (status, total)
        form = rng.random()
        if form < 0.05:
            order_id = order_id.upper()
        elif form < 0.08:
            order_id = "{" + order_id + "}"
        elif form < 0.11:
            order_id = order_id.replace("-", "")
        return V(order_id)
    if r < 0.75:
        return V(str(uuid.UUID(int=rng.getrandbits(128))))
    if r < 0.80:
        return V(None, "NULL")
    u = str(uuid.UUID(int=rng.getrandbits(128)))
    return V(rng.choice(["", "abc", u[:-1], u + "0", " " + u, u.replace("a", "g"),
                         "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
                         "\uff10" * 32, hostile_text(rng, 36), u + "\u200b"]))


def gen_payment_method(ctx):
    rng = ctx.rng
    r = rng.uniform(0.05, 0.75) if ctx.sane else rng.random()
    if r < 0.05:
        return V(None, "NULL")
    if r < 0.75:
        return V(rng.choice(["test_ok", "test_ok", "test_decline", "test_flaky", "test_hang"]))
    s = rng.choice(["card", "TEST_OK", "test_ok ", "test_delay", hostile_text(rng, 100)])
    return V(s, None if s in ctx.methods else "not a method of the test provider")


def gen_refund_amount(ctx):
    """Within, at and past what the targeted order could refund, and edges."""
    rng = ctx.rng
    r = rng.random()
    if r < 0.3:
        return V(None)
    total = ctx.target[1] if ctx.target else 1000
    if r < 0.6 or ctx.sane:
        s = str(rng.choice([1, max(1, total // 2), total, total + 1]))
    else:
        s = int_text(rng)
    n = parse_int(s)
    return V(s, "zero or less" if n is not None and n <= 0 else None)


def gen_correlation_id(ctx):
    """Correlation ids of commands sent for real (the kafka fixtures),
    variants of them, made-up ones, and hostile text."""
    rng = ctx.rng
    r = rng.random()
    real = rng.choice(ctx.correlation_ids) if ctx.correlation_ids else f"{uuid.uuid4()}:2:1"
    if r < 0.45 or ctx.sane:
        s = real
    elif r < 0.6:
        s = rng.choice([real + "x", "late:" + real, real.upper(), real.replace(":1", ":c1"),
                        f"{uuid.UUID(int=rng.getrandbits(128))}:2:1", ":::", "late:"])
    elif r < 0.65:
        s = None
    else:
        s = hostile_text(rng, 255)
    return V(s, identifier_problem(s, 255))


def gen_outcome(ctx):
    rng = ctx.rng
    r = rng.random()
    if r < 0.8 or ctx.sane:
        return V(rng.choice(["approved", "declined", "failed"]))
    s = None if r < 0.85 else rng.choice(["APPROVED", "maybe", "", " approved", hostile_text(rng, 20)])
    return V(s, "NULL" if s is None else "not approved, declined or failed")


def gen_stock_sku(ctx):
    s = text_arg(ctx, ctx.skus, 100)
    return V(s, identifier_problem(s, 100))


def gen_location(ctx):
    s = text_arg(ctx, ctx.locations + ["fz-nowhere"], 100)
    return V(s, identifier_problem(s, 100))


def gen_location_code(ctx):
    s = text_arg(ctx, ctx.locations + ["fz-north", "fz-\u00e9"], 100)
    return V(s, identifier_problem(s, 100))


def gen_location_name(ctx):
    rng = ctx.rng
    if ctx.sane or rng.random() < 0.5:
        return V(rng.choice([None, "North store", "\u5009\u5eab", ""]))
    s = hostile_text(rng, 200)
    return V(s, "longer than 200 characters" if len(s) > 200 else None)


def gen_priority(ctx):
    rng = ctx.rng
    if ctx.sane:
        return V(str(rng.randint(-5, 5)))
    if rng.random() < 0.05:
        return V(None, "NULL")
    s = int_text(rng, -5, 5)
    n = parse_int(s)
    return V(s, "not an integer" if n is None or not -2 ** 31 <= n < 2 ** 31 else None)


def gen_active(ctx):
    rng = ctx.rng
    if ctx.sane or rng.random() < 0.9:
        # Mostly active: an inactive fixture location only means fewer units.
        return V(rng.choice(["true", "true", "true", "false"]))
    return V(None, "NULL")


def gen_on_hand(ctx):
    rng = ctx.rng
    if ctx.sane:
        return V(str(rng.randint(0, 10 ** 9)))
    if rng.random() < 0.05:
        return V(None, "NULL")
    s = int_text(rng, 0, 10 ** 9)
    n = parse_int(s)
    return V(s, "negative" if n is not None and n < 0 else None)


def gen_delta(ctx):
    rng = ctx.rng
    if ctx.sane:
        return V(str(rng.randint(-1000, 1000)))
    if rng.random() < 0.05:
        return V(None, "NULL")
    return V(int_text(rng, -1000, 1000))


def gen_max_steps(ctx):
    rng = ctx.rng
    if ctx.sane:
        return V(str(rng.randint(1, 50)))
    if rng.random() < 0.05:
        return V(None, "NULL")
    s = int_text(rng, 1, 50)
    n = parse_int(s)
    return V(s, "below 1" if n is not None and n < 1 else None)


def gen_dead_letter_id(ctx):
    rng = ctx.rng
    r = rng.random()
    if r < 0.05:
        return V(None, "NULL")
    if (r < 0.6 or ctx.sane) and ctx.dead_letters:
        return V(str(rng.choice(ctx.dead_letters)))
    return V(int_text(rng))


def gen_max_orders(ctx):
    rng = ctx.rng
    if ctx.sane:
        return V(str(rng.randint(1, 1000)))
    if rng.random() < 0.05:
        return V(None, "NULL")
    s = int_text(rng, 1, 1000)
    n = parse_int(s)
    return V(s, "not between 1 and 1000" if n is not None and not 1 <= n <= 1000 else None)


def gen_shard(ctx):
    rng = ctx.rng
    if rng.random() < 0.05:
        return V(None, "NULL")
    s = int_text(rng, 0, 4095)
    n = parse_int(s)
    return V(s, "not between 0 and 4095" if n is not None and not 0 <= n <= 4095 else None)


def gen_partition_count(ctx):
    rng = ctx.rng
    if rng.random() < 0.05:
        return V(None, "NULL")
    s = rng.choice(["1", "2", "16", "4096"]) if rng.random() < 0.5 else int_text(rng, 0, 5000)
    n = parse_int(s)
    ok = n is not None and 1 <= n <= 4096 and n & (n - 1) == 0
    return V(s, None if ok or n is None else "not a power of two between 1 and 4096")


def gen_partitions(ctx):
    """Always a set of partitions oms_configure_shard refuses: the fuzz
    database must stay a single node, or every later call about an order
    of a partition it would not serve gets OM020."""
    rng = ctx.rng
    return rng.choice([
        V(None, "NULL"),
        V("{}", "no partition"),
        V("{1,NULL}", "a NULL partition"),
        V("{-1}", "a negative partition"),
        V("{4096}", "a partition above every partition count"),
    ])


def gen_task(ctx):
    rng = ctx.rng
    r = rng.random() * (0.7 if ctx.sane else 1)
    if r < 0.2:
        return V(None)
    if r < 0.7:
        return V(rng.choice(ctx.tasks))
    s = rng.choice(["PRUNE", "prune ", "all", hostile_text(rng, 100)])
    return V(s, None if s in ctx.tasks else "not a task name")


def gen_schedules(ctx):
    """The schedules map of the maintenance functions: task -> string or null."""
    rng = ctx.rng
    r = rng.random() * (0.5 if ctx.sane else 1)
    if r < 0.25:
        return V("{}")
    if r < 0.5:
        task = rng.choice(ctx.tasks)
        value = rng.choice(['"17 * * * *"', "null", '"* * * * *"', json.dumps(hostile_text(rng, 40))])
        return V(f'{{"{task}": {value}}}')
    if r < 0.6:
        return V(f'{{{json.dumps(hostile_text(rng, 40))}: "* * * * *"}}', "unknown task name")
    if r < 0.65:
        task = rng.choice(ctx.tasks)
        return V(f'{{"{task}": {rng.choice(["1", "[]", "{}", "true"])}}}', "schedule not a string or null")
    v = json_object_arg(ctx)
    if v.bad is None and v.text not in (None, "{}") and not v.dup_keys:
        try:
            keys = json.loads(v.text).keys()
            if any(k not in ctx.tasks for k in keys):
                v.bad = "unknown task name"
        except (ValueError, RecursionError, AttributeError):
            pass
    return v


def gen_status_label(ctx):
    rng = ctx.rng
    r = rng.random()
    if r < 0.8 or ctx.sane:
        return V(rng.choice(STATUSES))
    # The function is STRICT: NULL is a valid call that returns NULL.
    return V(rng.choice([None, "PENDING", "", "unknown", " pending", hostile_text(rng, 20)]))


def gen_money_amount(ctx):
    # amount NULL returns NULL (documented).
    return V(None) if ctx.rng.random() < 0.05 else V(int_text(ctx.rng, -10 ** 6, 10 ** 9))


# ---------------------------------------------------------------- items

def number_problem(token, lo, hi):
    if not JSON_NUMBER.fullmatch(token):
        return "not a JSON number"
    d = decimal.Decimal(token)
    if d != d.to_integral_value():
        return "not a whole number"
    if not lo <= d <= hi:
        return f"out of range {lo}..{hi}"
    return None


def sku_problem(token):
    try:
        s = json.loads(token)
    except ValueError:
        return None    # malformed: the cast fails first
    if not isinstance(s, str):
        return "sku not a JSON string"
    if not 1 <= len(s) <= 100:
        return "sku not 1 to 100 characters"
    return identifier_problem(s, 100)


def sku_token(ctx):
    rng = ctx.rng
    r = rng.random()
    if r < 0.6:
        s = rng.choice(FIXTURE_SKUS)
    elif r < 0.65:
        return rng.choice(["1", "null", '["FZ-1"]', '"\\u0000"'])
    else:
        s = hostile_text(rng, 100)
    return json.dumps(s, ensure_ascii=rng.random() < 0.5)


def quantity_token(ctx):
    rng = ctx.rng
    if rng.random() < 0.7:
        return str(rng.randint(1, 5))
    return rng.choice(["0", "-1", str(ctx.max_qty), str(ctx.max_qty + 1), "2.0", "2.5", "1e2", "1E400",
                       '"2"', "null", "true", "[]", "-0", "9223372036854775807", "1e-400", "1.0e0"])


def price_token(ctx):
    rng = ctx.rng
    if rng.random() < 0.7:
        return str(rng.randint(0, 100000))
    return rng.choice(["0", "1", "9223372036854775807", "9223372036854775808", "-1", "0.5", "1e18",
                       "4611686018427387904", '"1999"', "null", "1999.00"])


def build_item(ctx):
    """One item as (key, raw JSON token) pairs, mutated now and then, and
    the rule it breaks (None when valid)."""
    rng = ctx.rng
    pairs = [("sku", sku_token(ctx)), ("quantity", quantity_token(ctx)), ("unit_price", price_token(ctx))]
    r = rng.random()
    if r < 0.03:
        pairs.pop(rng.randrange(3))
    elif r < 0.06:
        pairs.append((rng.choice(["extra", "Sku", "line_total", "s\u200bku"]), "1"))
    elif r < 0.10:
        key, _ = rng.choice(pairs)
        pairs.append((key, rng.choice([sku_token(ctx), quantity_token(ctx), price_token(ctx)])))
    rng.shuffle(pairs)
    if rng.random() < 0.02:
        return rng.choice(["1", '"FZ-1"', "[]", "null"]), None, "item not a JSON object", False
    keys = [k for k, _ in pairs]
    text = "{" + ", ".join(f'"{k}": {t}' for k, t in pairs) + "}"
    dup = len(keys) != len(set(keys))
    if dup:
        return text, None, "duplicate key in an item", True
    fields = dict(pairs)
    unknown = set(keys) - {"sku", "quantity", "unit_price"}
    if unknown:
        return text, None, f"unknown field {sorted(unknown)[0]!r}", False
    if len(keys) < 3:
        return text, None, "missing field", False
    bad = (sku_problem(fields["sku"]) or number_problem(fields["quantity"], 1, ctx.max_qty)
           or number_problem(fields["unit_price"], 0, 2 ** 63 - 1))
    if bad:
        return text, None, bad, False
    value = (json.loads(fields["sku"]), int(decimal.Decimal(fields["quantity"])),
             int(decimal.Decimal(fields["unit_price"])))
    return text, value, None, False


def gen_items(ctx):
    rng = ctx.rng
    if ctx.sane:
        skus = rng.sample(FIXTURE_SKUS, rng.randint(1, 3))
        return V(json.dumps([{"sku": s, "quantity": rng.randint(1, 5), "unit_price": rng.randint(0, 100000)}
                             for s in skus]))
    r = rng.random()
    if r < 0.04:
        return V(None, "NULL")
    if r < 0.10:
        return V(rng.choice(['{"sku": "FZ-1"}', '"[]"', "1", "null", json_wide_object(rng)]), "not an array")
    if r < 0.13:
        return V("[]", "empty")
    if r < 0.15:
        n = rng.randint(ctx.max_items + 1, ctx.max_items + 200)
        return V("[" + ", ".join(f'{{"sku": "W-{i}", "quantity": 1, "unit_price": 1}}' for i in range(n)) + "]",
                 "more than oms.max_order_items items")
    if r < 0.16:
        n = ctx.max_items
        return V("[" + ", ".join(f'{{"sku": "W-{i}", "quantity": 1, "unit_price": 1}}' for i in range(n)) + "]")
    if r < 0.19:
        return V(rng.choice(MALFORMED_JSON))
    if r < 0.21:
        return V("[" + json_deep(rng) + "]", "an item nested thousands of levels deep")
    texts, bad, dup, values = [], None, False, []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 5])):
        text, value, problem, item_dup = build_item(ctx)
        texts.append(text)
        values.append(value)
        bad = bad or problem
        dup = dup or item_dup
    if len(texts) >= 2 and rng.random() < 0.1 and values[0] and values[1]:
        # The same SKU twice (a real duplicate, refused by the C check).
        texts[1] = texts[1].replace(json.dumps(values[1][0], ensure_ascii=False),
                                    json.dumps(values[0][0], ensure_ascii=False), 1)
    if bad is None:
        bad = items_total_problem(texts)
    return V("[" + rng.choice([", ", ",", "\n"]).join(texts) + "]", bad, dup)


def items_total_problem(texts):
    """Duplicate SKUs and bigint overflow of line and order totals."""
    try:
        items = [json.loads(t, parse_float=decimal.Decimal) for t in texts]
    except ValueError:
        return None
    skus = [i["sku"] for i in items]
    if len(skus) != len(set(skus)):
        return "a SKU appears twice"
    total = 0
    for i in items:
        line = int(i["quantity"]) * int(i["unit_price"])
        if line > 2 ** 63 - 1:
            return "line total out of range"
        total += line
    if total > 2 ** 63 - 1:
        return "order total out of range"
    return None


# --------------------------------------------------------------------------
# After confirmation: shipments, canceled lines, returns (the ledger calls)

MACHINES = ["order", "payment", "fulfillment", "shipment", "return"]


def gen_goods_order_id(ctx):
    """The ledger calls: mostly an order whose goods moved (the fixtures'
    orders with shipments and returns, in whatever status the round left
    them), else any order as gen_order_id gives, so that every status is
    still tried."""
    rng = ctx.rng
    if ctx.goods and (ctx.sane or rng.random() < 0.6):
        status, order_id, total = rng.choice(ctx.goods)
        ctx.target = (status, total)
        ctx.target_id = order_id
        return V(order_id)
    v = gen_order_id(ctx)
    try:
        ctx.target_id = str(uuid.UUID(v.text))
    except (TypeError, ValueError):
        ctx.target_id = None
    return v


def line_item(ctx, line):
    """A valid item naming a line by line_no or by SKU."""
    rng = ctx.rng
    ref = {"line_no": line[0]} if rng.random() < 0.5 else {"sku": line[1]}
    return {**ref, "quantity": rng.choice([1, 1, 1, 2, 3])}


def bad_line_item(ctx, lines):
    """An item oms refuses (22023), as JSON text, and the rule it breaks."""
    rng = ctx.rng
    line_no, sku = rng.choice(lines)
    quantity = rng.randint(1, 3)
    choice = rng.randrange(8)
    if choice == 0:
        return rng.choice(["1", '"FZ-1"', "[]", "null", "true"]), "item not a JSON object"
    if choice == 1:
        return (json.dumps({"line_no": line_no, "quantity": quantity, rng.choice(["extra", "Line_no", "qty"]): 1}),
                "unknown field in an item")
    if choice == 2:
        return json.dumps({"line_no": line_no, "sku": sku, "quantity": quantity}), "both line_no and sku"
    if choice == 3:
        return json.dumps({"quantity": quantity}), "neither line_no nor sku"
    if choice == 4:
        return (f'{{"line_no": {line_no}, "quantity": '
                + rng.choice(["0", "-1", "2.5", '"2"', "null", "true", "[]", "2147483648", "1e-400", "1E400"]) + "}",
                "quantity not a positive integer")
    if choice == 5:
        return json.dumps({"line_no": line_no}), "quantity missing"
    if choice == 6:
        return ('{"line_no": ' + rng.choice(["0", "-1", "1.5", '"1"', "null", "99999", "1000000000", "[1]"])
                + f', "quantity": {quantity}}}', "line_no not a line of the order")
    s = rng.choice(["NOPE-1", "", 1, None, hostile_text(rng, 100)])
    return json.dumps({"sku": s, "quantity": quantity}, ensure_ascii=False), "sku not a SKU of the order"


def gen_line_items(ctx):
    """items of oms_create_shipment, oms_cancel_items, oms_request_return:
    [{line_no|sku, quantity}] naming lines of the targeted order most of
    the time (more units than the line has in the needed state is OM003,
    not invalid input); NULL means every unit the call can take."""
    rng = ctx.rng
    lines = ctx.lines.get(ctx.target_id) or [(1, FIXTURE_SKUS[0])]
    valid = lambda: json.dumps([line_item(ctx, l) for l in rng.sample(lines, rng.randint(1, len(lines)))],
                               ensure_ascii=False)
    r = rng.random()
    if ctx.sane:
        return V(None) if r < 0.2 else V(valid())
    if r < 0.12:
        return V(None)
    if r < 0.45:
        return V(valid())
    if r < 0.50:
        return V(rng.choice(['{"line_no": 1, "quantity": 1}', '"[]"', "1", "null", json_wide_object(rng)]),
                 "not an array")
    if r < 0.53:
        return V("[]", "empty")
    if r < 0.56:
        return V(rng.choice(MALFORMED_JSON))
    if r < 0.58:
        return V("[" + json_deep(rng) + "]", "an item nested thousands of levels deep")
    if r < 0.66:
        line = rng.choice(lines)
        twice = [{"line_no": line[0], "quantity": 1},
                 rng.choice([{"line_no": line[0], "quantity": 1}, {"sku": line[1], "quantity": 1}])]
        return V(json.dumps(twice, ensure_ascii=False), "a line appears twice")
    items = [json.dumps(line_item(ctx, l), ensure_ascii=False) for l in rng.sample(lines, rng.randint(0, 1))]
    text, bad = bad_line_item(ctx, lines)
    items.insert(rng.randint(0, len(items)), text)
    return V("[" + ", ".join(items) + "]", bad)


def real_or_fake_id(ctx, pool):
    """Ids of real rows (pool: status -> ids) most of the time, else
    nonexistent or malformed uuids, or NULL."""
    rng = ctx.rng
    r = rng.random()
    present = [s for s in pool if pool[s]]
    if (r < 0.75 or ctx.sane) and present:
        return V(rng.choice(pool[rng.choice(present)]))
    if r < 0.85:
        return V(str(uuid.UUID(int=rng.getrandbits(128))))
    if r < 0.90:
        return V(None, "NULL")
    u = str(uuid.UUID(int=rng.getrandbits(128)))
    return V(rng.choice(["", "abc", u[:-1], u + "0", " " + u, "{" + u + "}", hostile_text(rng, 36)]))


def gen_shipment_id(ctx):
    return real_or_fake_id(ctx, ctx.shipments)


def gen_return_id(ctx):
    return real_or_fake_id(ctx, ctx.returns)


def optional_identifier(ctx, pool, limit, null_share=0.3):
    """NULL or an identifier of at most limit characters (docs/api.md)."""
    s = text_arg(ctx, pool, limit, null_share)
    return V(s, None if s is None else identifier_problem(s, limit))


def gen_location(ctx):
    """NULL, a location that exists, one that does not (P0002), hostile text."""
    rng = ctx.rng
    if not ctx.sane and rng.random() < 0.1:
        return V("nowhere")
    return optional_identifier(ctx, [None] + ctx.locations, 100)


def gen_carrier(ctx):
    return optional_identifier(ctx, [None, "DHL", "UPS", "La Poste", "\u4e2d\u901a"], 100)


def gen_tracking_number(ctx):
    return optional_identifier(ctx, [None, "TRK-1", "1Z999AA10123456784", "x" * 255], 255)


def gen_return_reason(ctx):
    """Required: 1 to 1000 characters."""
    s = text_arg(ctx, ["too big", "damaged in transit", "\u00e9\U0001F600", "x" * 1000], 1000)
    if s is None:
        return V(None, "NULL")
    if s == "":
        return V(s, "empty")
    return V(s, "longer than 1000 characters" if len(s) > 1000 else None)


def gen_machine(ctx):
    rng = ctx.rng
    if ctx.sane or rng.random() < 0.8:
        return V(rng.choice(MACHINES))
    # STRICT: NULL returns NULL; an unknown machine is refused.
    return V(rng.choice([None, "Order", "orders", "", " shipment", hostile_text(rng, 20)]))


def gen_machine_status(ctx):
    rng = ctx.rng
    if ctx.sane or rng.random() < 0.8:
        return V(rng.choice(ctx.machine_statuses))
    return V(rng.choice([None, "PENDING", "", "unknown", " shipped", hostile_text(rng, 20)]))


# --------------------------------------------------------------------------
# The specs: a generator for every argument of every public function.  A
# function that is not listed here (a new one, or a changed signature) is
# still fuzzed with generic values by type, and reported as not ok.

SPECS = {
    "oms_create_order(text, jsonb, text, text, jsonb)": {
        "customer_id": gen_customer_id, "items": gen_items, "currency": gen_currency,
        "idempotency_key": gen_idempotency_key,
        "metadata": lambda c: json_object_arg(c, max_bytes=METADATA_MAX_BYTES)},
    # Items as text: where duplicate fields in an item are still visible.
    "oms_create_order(text, text, text, text, jsonb)": {
        "customer_id": gen_customer_id, "items": gen_items, "currency": gen_currency,
        "idempotency_key": gen_idempotency_key,
        "metadata": lambda c: json_object_arg(c, max_bytes=METADATA_MAX_BYTES)},
    "oms_get_order(uuid)": {"order_id": gen_order_id},
    "oms_cancel_order(uuid, text, text)": {
        "order_id": gen_order_id, "reason": gen_reason, "idempotency_key": gen_idempotency_key},
    "oms_order_timeline(uuid)": {"order_id": gen_order_id},
    "oms_pay_order(uuid, text, text)": {
        "order_id": gen_order_id, "payment_method": gen_payment_method, "idempotency_key": gen_idempotency_key},
    "oms_refund_order(uuid, bigint, text, text)": {
        "order_id": gen_order_id, "amount": gen_refund_amount, "reason": gen_reason,
        "idempotency_key": gen_idempotency_key},
    "oms_payment_result(text, text, jsonb)": {
        "correlation_id": gen_correlation_id, "outcome": gen_outcome,
        "details": lambda c: json_object_arg(c, max_bytes=DETAILS_MAX_BYTES)},
    "oms_set_stock(text, bigint)": {"sku": gen_stock_sku, "on_hand": gen_on_hand},
    "oms_adjust_stock(text, bigint)": {"sku": gen_stock_sku, "delta": gen_delta},
    "oms_set_stock(text, bigint, text)": {"sku": gen_stock_sku, "on_hand": gen_on_hand, "location": gen_location},
    "oms_adjust_stock(text, bigint, text)": {"sku": gen_stock_sku, "delta": gen_delta, "location": gen_location},
    "oms_set_location(text, text, integer, boolean)": {
        "code": gen_location_code, "name": gen_location_name, "priority": gen_priority, "active": gen_active},
    "oms_release_expired_reservations()": {},
    "oms_run_sagas(integer)": {"max_steps": gen_max_steps},
    "oms_retry_dead_letter(bigint)": {"id": gen_dead_letter_id},
    "oms_customer_orders(text, integer)": {"customer_id": gen_customer_id, "max_orders": gen_max_orders},
    "oms_configure_shard(integer, integer, integer[])": {
        "shard": gen_shard, "partition_count": gen_partition_count, "partitions": gen_partitions},
    "oms_shard_info()": {},
    "oms_worker_status()": {},
    "oms_saga_worker_status()": {},
    "oms_relay_status()": {},
    "oms_health()": {},
    "oms_metrics()": {},
    "oms_transition_allowed(oms.order_status, oms.order_status)": {
        "from_status": gen_status_label, "to_status": gen_status_label},
    "oms_state_machine_dot()": {},
    "oms_format_money(bigint, text)": {"amount": gen_money_amount, "currency": gen_currency},
    "oms_purge_idempotency_keys()": {},
    "oms_run_maintenance(text)": {"task": gen_task},
    "oms_schedule_maintenance(jsonb)": {"schedules": gen_schedules},
    "oms_unschedule_maintenance()": {},
    "oms_maintenance_jobs(jsonb)": {"schedules": gen_schedules},
    "oms_transition_allowed(text, text, text)": {
        "machine": gen_machine, "from_status": gen_machine_status, "to_status": gen_machine_status},
    "oms_state_machine_dot(text)": {"machine": gen_machine},
    "oms_create_shipment(uuid, jsonb, text, text, text, text)": {
        "order_id": gen_goods_order_id, "items": gen_line_items, "location": gen_location,
        "carrier": gen_carrier, "tracking_number": gen_tracking_number, "idempotency_key": gen_idempotency_key},
    "oms_ship(uuid, text, text, text)": {
        "shipment_id": gen_shipment_id, "carrier": gen_carrier, "tracking_number": gen_tracking_number,
        "idempotency_key": gen_idempotency_key},
    "oms_mark_delivered(uuid, text)": {"shipment_id": gen_shipment_id, "idempotency_key": gen_idempotency_key},
    "oms_cancel_shipment(uuid, text, text)": {
        "shipment_id": gen_shipment_id, "reason": gen_reason, "idempotency_key": gen_idempotency_key},
    "oms_cancel_items(uuid, jsonb, text, text)": {
        "order_id": gen_goods_order_id, "items": gen_line_items, "reason": gen_reason,
        "idempotency_key": gen_idempotency_key},
    "oms_request_return(uuid, text, jsonb, text)": {
        "order_id": gen_goods_order_id, "reason": gen_return_reason, "items": gen_line_items,
        "idempotency_key": gen_idempotency_key},
    "oms_receive_return(uuid, text, text)": {
        "return_id": gen_return_id, "restock_location": gen_location, "idempotency_key": gen_idempotency_key},
    "oms_reject_return(uuid, text, text)": {
        "return_id": gen_return_id, "reason": gen_reason, "idempotency_key": gen_idempotency_key},
}


def generic_generator(type_):
    """Values by type only, for functions without a spec."""
    def gen(ctx):
        rng = ctx.rng
        if rng.random() < 0.1:
            return V(None)
        if type_ in ("integer", "bigint", "smallint", "numeric"):
            return V(int_text(rng))
        if type_ in ("json", "jsonb"):
            return rng.choice([lambda: json_object_arg(ctx), lambda: V(json_small(rng))])()
        if type_ == "uuid":
            return gen_order_id(ctx)
        if type_ == "boolean":
            return V(rng.choice(["true", "false", "maybe", ""]))
        return V(hostile_text(rng))
    return gen


# --------------------------------------------------------------------------
# Reporting

class Tap:
    def __init__(self, seed, failures_path):
        self.seed = seed
        self.failed = 0
        self.failures_path = failures_path
        if failures_path:
            with open(failures_path, "w", encoding="utf-8") as f:
                f.write(f"-- Failing calls of test/fuzz/api_fuzz.py, seed {seed}.  Run as a superuser\n"
                        f"-- in the fuzz database: psql -d oms_fuzz -f <this file>\n\n")

    def line(self, ok, name, diagnostics=()):
        print(("ok - " if ok else "not ok - ") + name)
        if not ok:
            self.failed += 1
            for d in diagnostics:
                self.diag(d)
            self.diag(f"seed {self.seed}; reproduce: {reproduce_command(self.seed)}")
        sys.stdout.flush()

    @staticmethod
    def diag(text):
        for line in str(text).splitlines() or [""]:
            print("# " + line)

    def save_sql(self, header, statement):
        if self.failures_path:
            with open(self.failures_path, "a", encoding="utf-8") as f:
                f.write(f"-- {header}\n{statement}\n\n")


def reproduce_command(seed):
    calls = os.environ.get("OMS_FUZZ_CALLS")
    prefix = f"OMS_FUZZ_SEED={seed}" + (f" OMS_FUZZ_CALLS={calls}" if calls else "")
    return f"{prefix} OMS_TAP=043_api_fuzz bash test/run.sh tap"


class Stats:
    """What the calls of one function did, and the failures per check."""

    def __init__(self):
        self.calls = 0
        self.seconds = 0.0
        self.typed = 0
        self.returned = 0
        self.sqlstates = Counter()
        self.written_on_success = Counter()
        self.targets = Counter()
        self.results = Counter()
        self.failures = defaultdict(list)      # check -> [(key, text, sql)]
        self.failure_counts = Counter()
        self.unsent = []

    def fail(self, check, key, text, statement):
        self.failure_counts[check] += 1
        examples = self.failures[check]
        # Keep examples that differ (another SQLSTATE, another rule, other tables).
        if len(examples) < EXAMPLES_PER_CHECK and all(k != key for k, _, _ in examples):
            examples.append((key, text, statement))


CHECKS = [
    ("documented", "every SQLSTATE it raised is documented in docs/errors.md"),
    ("internal", "it never raised XX000 (internal_error)"),
    ("alive", "the connection survived every call, none hit the statement timeout"),
    ("raised_clean", "calls that raised wrote nothing"),
    ("read_only", "read-only: no call wrote anything, even when it succeeded"),
    ("refusal_clean", "no call that returned a refusal (\"rejected\") wrote rows"),
    ("invalid_refused", "input the docs call invalid is refused with an error"),
    ("coverage", "it was called on orders in every status"),
]


def applicable(check, fn):
    if check == "read_only":
        return fn.read_only
    if check == "refusal_clean":
        return not fn.read_only
    if check == "coverage":
        return fn.takes_order
    return True


# --------------------------------------------------------------------------
# Database setup

def connect(user, dbname):
    conn = psycopg.connect(user=user, dbname=dbname, autocommit=True,
                           options=f"-c statement_timeout={STATEMENT_TIMEOUT}")
    # Results stay text: deep JSON would overflow Python's json recursion.
    for type_ in ("json", "jsonb"):
        conn.adapters.register_loader(type_, TextLoader)
    return conn


def create_database(db):
    with connect("postgres", "postgres") as su:
        su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        su.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
        for role, granted in [("fuzz_app", "oms_app"), ("fuzz_reader", "oms_reader"),
                              ("fuzz_admin", "oms_admin"), ("fuzz_kafka", "oms_admin")]:
            su.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    su = connect("postgres", db)
    su.execute("CREATE EXTENSION oms")
    for role, granted in [("fuzz_app", "oms_app"), ("fuzz_reader", "oms_reader"),
                          ("fuzz_admin", "oms_admin"), ("fuzz_kafka", "oms_admin")]:
        su.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(sql.Identifier(role), sql.Identifier(granted)))
    # fuzz_kafka drives sagas with the remote provider, so that real
    # correlation ids exist for oms_payment_result (no relay runs here).
    su.execute("ALTER ROLE fuzz_kafka SET oms.payment_provider = 'kafka'")
    install_write_counters(su)
    return su


def install_write_counters(su):
    """Statement-level AFTER triggers on every table of schema oms count the
    rows each statement wrote into fuzz.writes.  They are in the writer's
    transaction, so only committed writes count.  SECURITY DEFINER: the
    writers are oms_app's SECURITY DEFINER functions, whose owner may not
    write our table."""
    su.execute("""
        CREATE SCHEMA fuzz;
        CREATE TABLE fuzz.writes (tbl text PRIMARY KEY, n bigint NOT NULL);
        CREATE FUNCTION fuzz.count_new() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp AS $$
        DECLARE v bigint;
        BEGIN
            SELECT count(*) INTO v FROM new_rows;
            IF v > 0 THEN
                INSERT INTO fuzz.writes AS w VALUES (TG_TABLE_NAME || ':' || lower(TG_OP), v)
                ON CONFLICT (tbl) DO UPDATE SET n = w.n + excluded.n;
            END IF;
            RETURN NULL;
        END $$;
        CREATE FUNCTION fuzz.count_old() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp AS $$
        DECLARE v bigint;
        BEGIN
            SELECT count(*) INTO v FROM old_rows;
            IF v > 0 THEN
                INSERT INTO fuzz.writes AS w VALUES (TG_TABLE_NAME || ':delete', v)
                ON CONFLICT (tbl) DO UPDATE SET n = w.n + excluded.n;
            END IF;
            RETURN NULL;
        END $$;
        CREATE FUNCTION fuzz.count_truncate() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            INSERT INTO fuzz.writes AS w VALUES (TG_TABLE_NAME || ':truncate', 1)
            ON CONFLICT (tbl) DO UPDATE SET n = w.n + 1;
            RETURN NULL;
        END $$;
    """)
    tables = [r[0] for r in su.execute(
        "SELECT c.relname FROM pg_class AS c WHERE c.relnamespace = 'oms'::regnamespace "
        "AND c.relkind = 'r' ORDER BY 1").fetchall()]
    for t in tables:
        ident = sql.Identifier("oms", t)
        for op, ref, func in [("INSERT", "NEW TABLE AS new_rows", "count_new"),
                              ("UPDATE", "NEW TABLE AS new_rows", "count_new"),
                              ("DELETE", "OLD TABLE AS old_rows", "count_old")]:
            su.execute(sql.SQL("CREATE TRIGGER {} AFTER {} ON {} REFERENCING {} FOR EACH STATEMENT "
                               "EXECUTE FUNCTION fuzz.{}()").format(
                sql.Identifier(f"zz_fuzz_{op.lower()}"), sql.SQL(op), ident, sql.SQL(ref), sql.Identifier(func)))
        su.execute(sql.SQL("CREATE TRIGGER zz_fuzz_truncate AFTER TRUNCATE ON {} FOR EACH STATEMENT "
                           "EXECUTE FUNCTION fuzz.count_truncate()").format(ident))
    return tables


def writes_snapshot(su):
    return dict(su.execute("SELECT tbl, n FROM fuzz.writes").fetchall())


def writes_delta(before, after):
    return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}


def discover_functions(su):
    """Every oms_* function of extension oms, with its input arguments and
    the least privileged fuzz role that may execute it."""
    rows = su.execute("""
        SELECT n.nspname, p.proname, p.proname || '(' || oidvectortypes(p.proargtypes) || ')',
               coalesce(p.proargnames, '{}'), coalesce(p.proargmodes::text[], '{}'),
               (SELECT array_agg(format_type(t, NULL) ORDER BY i)
                FROM unnest(p.proargtypes) WITH ORDINALITY AS a(t, i)),
               p.pronargdefaults, p.provolatile,
               has_function_privilege('oms_app', p.oid, 'EXECUTE'),
               has_function_privilege('oms_reader', p.oid, 'EXECUTE'),
               has_function_privilege('oms_admin', p.oid, 'EXECUTE')
        FROM pg_proc AS p
        JOIN pg_namespace AS n ON n.oid = p.pronamespace
        JOIN pg_depend AS d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
        JOIN pg_extension AS e ON e.oid = d.refobjid AND e.extname = 'oms'
        WHERE p.proname LIKE 'oms\\_%'
        ORDER BY p.proname, p.oid""").fetchall()
    functions = []
    for schema, name, signature, names, modes, types, ndefaults, volatility, *may in rows:
        types = types or []
        modes = modes or ["i"] * len(names)
        in_names = [n for n, m in zip(names, modes) if m in ("i", "b", "v")] if names else []
        if len(in_names) != len(types) or not all(in_names):
            in_names = [""] * len(types)     # positional calls
        args = [Arg(n, t, i >= len(types) - ndefaults) for i, (n, t) in enumerate(zip(in_names, types))]
        functions.append(Function(schema, name, signature, args, volatility,
                                  {r: ok for (r, _), ok in zip(ROLES, may)}))
    return functions


def documented_sqlstates(path):
    """Every SQLSTATE in the first column of a table of docs/errors.md."""
    codes = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("|"):
                first = line.split("|")[1]
                codes.update(re.findall(r"\b[0-9A-Z]{5}\b", first))
    return codes


# --------------------------------------------------------------------------
# Sessions and the database state the generators draw from

class Session:
    """A login role's connection; reconnects after the server dropped it."""

    def __init__(self, role, db):
        self.role = role
        self.db = db
        self.conn = connect(role, db)

    def alive(self):
        return not self.conn.closed and not getattr(self.conn, "broken", False)

    def reconnect(self):
        try:
            self.conn.close()
        except psycopg.Error:
            pass
        self.conn = connect(self.role, self.db)

    def value(self, query, params=()):
        row = self.conn.execute(query, params).fetchone()
        return row[0] if row else None


class Context:
    """The rng of the current function and round, and what the database
    holds: orders per status, SKUs, correlation ids, dead letters; orders
    whose goods moved, their lines, shipments and returns per status."""

    def __init__(self, su):
        self.rng = None
        self.sane = False       # every generator returns a valid value
        self.target = None
        self.target_id = None   # the order the ledger calls' items refer to
        self.orders = {}
        self.goods = []         # (status, id, total) of orders with shipments
        self.lines = {}         # order id -> [(line_no, sku)]
        self.shipments = {}     # status -> ids
        self.returns = {}       # status -> ids
        self.skus = list(FIXTURE_SKUS)
        self.locations = ["default"] + list(FIXTURE_LOCATIONS)
        self.correlation_ids = []
        self.dead_letters = []
        self.currencies = {r[0] for r in su.execute("SELECT code FROM oms.currencies")}
        self.methods = {r[0] for r in su.execute("SELECT method FROM oms.payment_methods WHERE provider = 'test'")}
        self.tasks = [r[0] for r in su.execute("SELECT task FROM oms.maintenance_tasks ORDER BY position")]
        self.max_items = int(su.execute("SELECT current_setting('oms.max_order_items')").fetchone()[0])
        self.max_qty = int(su.execute("SELECT current_setting('oms.max_item_quantity')").fetchone()[0])
        self.locations = [r[0] for r in su.execute("SELECT code FROM oms.locations ORDER BY code")]
        self.machine_statuses = [r[0] for r in su.execute("SELECT DISTINCT status FROM oms.statuses ORDER BY 1")]

    def refresh(self, su):
        """The 16 newest orders of each status, and the newest ids of the rest."""
        self.orders = {}
        for status, ids, totals in su.execute("""
                SELECT status::text, (array_agg(id::text ORDER BY created_at DESC, id))[1:16],
                       (array_agg(total ORDER BY created_at DESC, id))[1:16]
                FROM oms.orders GROUP BY status"""):
            self.orders[status] = list(zip(ids, totals))
        self.skus = FIXTURE_SKUS + [r[0] for r in su.execute(
            "SELECT sku FROM oms.stock ORDER BY updated_at DESC, sku LIMIT 16")]
        self.correlation_ids = [r[0] for r in su.execute(
            "SELECT correlation_id FROM oms.payment_commands ORDER BY sent_at DESC, correlation_id LIMIT 32")]
        self.dead_letters = [r[0] for r in su.execute("SELECT id FROM oms.dead_letters ORDER BY id DESC LIMIT 32")]
        self.goods = [tuple(r) for r in su.execute("""
                SELECT o.status::text, o.id::text, o.total FROM oms.orders AS o
                WHERE EXISTS (SELECT FROM oms.shipments AS s WHERE s.order_id = o.id)
                ORDER BY o.created_at DESC, o.id LIMIT 16""")]
        for name, table in (("shipments", "oms.shipments"), ("returns", "oms.returns")):
            setattr(self, name, {status: ids for status, ids in su.execute(
                f"SELECT status::text, (array_agg(id::text ORDER BY created_at DESC, id))[1:16] "
                f"FROM {table} GROUP BY 1")})
        ids = [i for orders in self.orders.values() for i, _ in orders] + [g[1] for g in self.goods]
        self.lines = {}
        for order_id, line_no, sku in su.execute(
                "SELECT order_id::text, line_no, sku FROM oms.order_items WHERE order_id = ANY(%s::uuid[]) "
                "ORDER BY 1, 2", [ids]):
            self.lines.setdefault(order_id, []).append((line_no, sku))


# --------------------------------------------------------------------------
# Fixtures: orders in every status, through the API

def fixture_order(app, rng):
    skus = rng.sample(FIXTURE_SKUS, rng.randint(1, 3))
    items = [{"sku": s, "quantity": rng.randint(1, 3), "unit_price": rng.randint(100, 5000)} for s in skus]
    doc = json.loads(app.value("SELECT oms_create_order(%s, %s::jsonb, %s)",
                               ["fixture", json.dumps(items), rng.choice(["USD", "EUR", "JPY"])]))
    return doc["order_id"], doc["total"]


def fixture_goods_order(app, rng):
    """A paid order of 10 units of FZ-1, 8 of FZ-2 and 5 of FZ-3 whose
    goods move once it is confirmed (fixture_goods); what the fixtures
    leave open is for the fuzzed calls."""
    items = [{"sku": "FZ-1", "quantity": 10, "unit_price": rng.randint(100, 5000)},
             {"sku": "FZ-2", "quantity": 8, "unit_price": rng.randint(100, 5000)},
             {"sku": "FZ-3", "quantity": 5, "unit_price": rng.randint(100, 5000)}]
    doc = json.loads(app.value("SELECT oms_create_order(%s, %s::jsonb, %s)",
                               ["fixture", json.dumps(items), rng.choice(["USD", "EUR", "JPY"])]))
    app.value("SELECT oms_pay_order(%s, 'test_ok')", [doc["order_id"]])
    return doc["order_id"]


def fixture_goods(app, order_id):
    """Shipments in every status, a canceled unit and returns in every
    status but received of a confirmed fixture_goods_order; returns the
    return to receive after the last saga run (received stays so)."""
    def call(query, *args):
        return json.loads(app.value(query, [order_id, *args]))

    def shipment(line_no, quantity):
        doc = call("SELECT oms_create_shipment(%s, %s::jsonb)",
                   json.dumps([{"line_no": line_no, "quantity": quantity}]))
        return doc["shipment"]["shipment_id"]

    def request(quantity):
        doc = call("SELECT oms_request_return(%s, 'fixture', %s::jsonb)",
                   json.dumps([{"line_no": 1, "quantity": quantity}]))
        return doc["return"]["return_id"]

    delivered, shipped = shipment(1, 4), shipment(1, 1)
    app.value("SELECT oms_ship(%s)", [delivered])
    app.value("SELECT oms_mark_delivered(%s)", [delivered])
    app.value("SELECT oms_ship(%s)", [shipped])
    shipment(2, 1)                                                   # pending
    app.value("SELECT oms_cancel_shipment(%s, 'fixture')", [shipment(2, 1)])
    call("SELECT oms_cancel_items(%s, %s::jsonb)", json.dumps([{"line_no": 2, "quantity": 1}]))
    request(1)                                                       # requested
    app.value("SELECT oms_reject_return(%s, 'fixture')", [request(1)])
    app.value("SELECT oms_receive_return(%s, %s)", [request(1), "default"])   # refunded by the next saga run
    return request(1)


def run_sagas(session):
    """oms_run_sagas() until nothing is due (bounded: a retried step may
    become due again at once with a 1 ms backoff)."""
    for _ in range(20):
        if session.value("SELECT oms_run_sagas()") == 0:
            return


def build_fixtures(sessions, rng, holder):
    """Orders in all eight statuses: pending, processing (test_hang, and a
    paid order whose saga has not run), cancel_requested, confirmed,
    canceled, failed (test_decline), partially_refunded, refunded; plus one
    waiting for a remote reply, whose charge command gives a correlation id;
    and two confirmed orders with shipments in every shipment status and
    returns in every return status (fixture_goods).

    The cancel_requested order stays so for the round: holder, a superuser
    transaction open until the round ends, locks its saga, as a worker
    batch would, and oms_run_sagas() skips locked sagas."""
    app, admin, kafka = sessions["app"], sessions["admin"], sessions["kafka"]
    for code, priority in FIXTURE_LOCATIONS.items():
        admin.value("SELECT oms_set_location(%s, NULL, %s, true)", [code, priority])
    admin.value("SELECT oms_set_location('default', NULL, 0, true)")
    for sku in FIXTURE_SKUS:
        admin.value("SELECT oms_set_stock(%s, %s)", [sku, FIXTURE_STOCK])
        for code in FIXTURE_LOCATIONS:
            admin.value("SELECT oms_set_stock(%s, %s::bigint + "
                        "coalesce((SELECT reserved FROM oms.stock WHERE sku = %s AND location = %s), 0), %s)",
                        [sku, FIXTURE_LOCATION_STOCK, sku, code, code])
    pay = lambda order, method: app.value("SELECT oms_pay_order(%s, %s)", [order[0], method])
    fixture_order(app, rng)                                          # pending
    confirmed = [fixture_order(app, rng) for _ in range(3)]
    for order in confirmed:
        pay(order, "test_ok")
    goods = [fixture_goods_order(app, rng) for _ in range(2)]
    # Three test_hang orders: fuzzed cancels take processing orders away.
    for method in ("test_decline", "test_hang", "test_hang", "test_hang", "test_flaky"):
        pay(fixture_order(app, rng), method)
    app.value("SELECT oms_cancel_order(%s)", [fixture_order(app, rng)[0]])   # canceled
    run_sagas(admin)
    to_receive = [fixture_goods(app, order) for order in goods]
    app.value("SELECT oms_refund_order(%s, %s)", [confirmed[1][0], max(1, confirmed[1][1] // 2)])
    app.value("SELECT oms_refund_order(%s)", [confirmed[2][0]])
    run_sagas(admin)
    pay(fixture_order(app, rng), "test_ok")
    run_sagas(kafka)                                                 # waits for a reply
    pay(fixture_order(app, rng), "test_ok")                          # processing
    cancel = fixture_order(app, rng)
    pay(cancel, "test_ok")
    app.value("SELECT oms_cancel_order(%s)", [cancel[0]])            # cancel_requested
    for return_id in to_receive:
        app.value("SELECT oms_receive_return(%s)", [return_id])      # received, not restocked
    holder.execute("SELECT 1 FROM oms.sagas WHERE order_id = %s FOR UPDATE", [cancel[0]])


# --------------------------------------------------------------------------
# Calls and checks

class Outcome:
    def __init__(self, kind, sqlstate=None, message=None, result=None):
        self.kind = kind              # ok, error, died, client
        self.sqlstate = sqlstate
        self.message = message
        self.result = result
        self.written = {}

    def describe(self):
        if self.kind == "ok":
            return f"returned {short(self.result if isinstance(self.result, str) else repr(self.result))}"
        if self.kind == "error":
            return f"SQLSTATE {self.sqlstate}: {first_line(self.message)}"
        return f"{self.kind}: {first_line(self.message)}"


def first_line(text):
    """The first line of a message, cut at 200 characters, with control and
    other non-printable characters escaped so that it stays one TAP line."""
    line = text.split("\n", 1)[0] if text else ""
    if len(line) > 200:
        line = line[:200] + "..."
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)


def execute(session, call):
    try:
        cur = session.conn.execute(call.query(), call.params())
        rows = cur.fetchall()
        return Outcome("ok", result=rows[0][0] if rows and len(rows[0]) else None)
    except psycopg.Error as e:
        if not session.alive():
            return Outcome("died", message=str(e))
        if e.sqlstate is None:
            return Outcome("client", message=f"{type(e).__name__}: {e}")
        return Outcome("error", e.sqlstate, str(e))
    except (ValueError, UnicodeError) as e:
        return Outcome("client", message=f"{type(e).__name__}: {e}")


def result_field(result, key="result"):
    """A top-level field of a JSON object result (not of MB-sized ones)."""
    if not isinstance(result, str) or len(result) > 100000 or not result.startswith("{"):
        return None
    try:
        doc = json.loads(result)
    except (ValueError, RecursionError):
        return None
    return doc.get(key) if isinstance(doc, dict) else None


def is_refusal(result):
    """A normal return that says the input was refused."""
    return "rejected" in (result_field(result, "result"), result_field(result, "status"))


def check_call(fn, call, out, documented, stats, where, conn):
    """Applies every per-call check and records failures with the call."""
    def fail(check, key, detail):
        stats.fail(check, key, f"{call!r} as fuzz_{fn.role}\n  -> {detail}\n  ({where})",
                   f"-- {where}\n" + call.full_sql(conn))

    wrote = ", ".join(f"{t} {n}" for t, n in sorted(out.written.items()))
    if out.kind == "error":
        if out.sqlstate not in documented:
            fail("documented", out.sqlstate, out.describe())
        if out.sqlstate.startswith("XX"):
            fail("internal", out.sqlstate, out.describe())
        if out.sqlstate == "57014":
            fail("alive", "timeout", out.describe())
        if out.written:
            fail("raised_clean", tuple(sorted(out.written)), f"{out.describe()}; wrote {wrote}")
    elif out.kind == "died":
        fail("alive", "died", out.describe())
    elif out.kind == "ok":
        if fn.read_only and out.written:
            fail("read_only", tuple(sorted(out.written)), f"wrote {wrote}")
        if not fn.read_only and out.written and is_refusal(out.result):
            fail("refusal_clean", tuple(sorted(out.written)), f"{out.describe()}; wrote {wrote}")
        bad = call.bad()
        if bad:
            fail("invalid_refused", bad[0],
                 f"{out.describe()}; the docs call it invalid: {'; '.join(bad)}"
                 + (f"; wrote {wrote}" if wrote else ""))


def make_call(fn, spec, ctx):
    """A call with a generated value per argument; in a share of calls every
    value is valid, so that calls get past validation into the logic."""
    ctx.target = None
    ctx.target_id = None
    ctx.sane = ctx.rng.random() < SANE_SHARE
    values = []
    for arg in fn.args:
        if arg.has_default and ctx.rng.random() < 0.15:
            values.append(OMIT)
        else:
            values.append(spec[arg.name](ctx))
    dup = any(v is not OMIT and v.dup_keys for v in values)
    return Call(fn, values, typed=not dup and ctx.rng.random() < 0.9)


# --------------------------------------------------------------------------
# Invariants, checked as the superuser after the run

INVARIANTS = [
    ("stock: on_hand and available are never negative", """
        SELECT format('sku %s: on_hand %s, reserved %s, available %s', sku, on_hand, reserved, available)
        FROM oms.stock_levels WHERE on_hand < 0 OR available < 0 LIMIT 5"""),
    ("stock: at every location, on_hand and available are never negative", """
        SELECT format('sku %s at %s: on_hand %s, reserved %s, available %s', sku, location, on_hand, reserved, available)
        FROM oms.location_stock_levels WHERE on_hand < 0 OR available < 0 LIMIT 5"""),
    ("stock: reserved equals the units of the held reservations of each (sku, location)", """
        SELECT format('sku %s at %s: reserved %s, held %s', s.sku, s.location, s.reserved, coalesce(h.units, 0))
        FROM oms.stock AS s
        LEFT JOIN (SELECT sku, location, sum(quantity) AS units FROM oms.reservations
                   WHERE status = 'held' GROUP BY 1, 2) AS h ON h.sku = s.sku AND h.location = s.location
        WHERE s.reserved <> coalesce(h.units, 0) LIMIT 5"""),
    ("reservations: a confirmed order's consumed units of each line, over its locations, are the units ordered and not canceled", """
        SELECT format('order %s sku %s: ordered %s, canceled %s, consumed %s', o.id, i.sku, i.quantity,
                      i.quantity_canceled, coalesce(c.units, 0))
        FROM oms.orders AS o
        JOIN oms.order_items AS i ON i.order_id = o.id
        LEFT JOIN (SELECT order_id, sku, sum(quantity) AS units FROM oms.reservations
                   WHERE status = 'consumed' GROUP BY 1, 2) AS c ON c.order_id = o.id AND c.sku = i.sku
        WHERE o.status IN ('confirmed', 'partially_refunded', 'refunded')
          AND i.quantity - i.quantity_canceled <> coalesce(c.units, 0) LIMIT 5"""),
    ("payments: 0 <= refunded <= captured <= authorized <= amount", """
        SELECT format('payment %s: amount %s, authorized %s, captured %s, refunded %s',
                      id, amount, authorized, captured, refunded)
        FROM oms.payments
        WHERE NOT (0 <= refunded AND refunded <= captured AND captured <= authorized AND authorized <= amount)
        LIMIT 5"""),
    ("timeline: oms.order_events.seq is 1..orders.timeline_seq without gaps for every order", """
        SELECT format('order %s: %s entries, seq %s..%s, timeline_seq %s', o.id, t.n, t.lo, t.hi, o.timeline_seq)
        FROM oms.orders AS o
        LEFT JOIN (SELECT order_id, count(*) AS n, count(DISTINCT seq) AS d, min(seq) AS lo, max(seq) AS hi
                   FROM oms.order_events GROUP BY order_id) AS t ON t.order_id = o.id
        WHERE t.n IS DISTINCT FROM o.timeline_seq::bigint OR t.d IS DISTINCT FROM t.n
           OR t.lo IS DISTINCT FROM 1 OR t.hi IS DISTINCT FROM o.timeline_seq
        LIMIT 5"""),
    ("outbox: each aggregate's events are gap-free and end at its counter (orders.event_seq, payments.command_seq)", """
        SELECT format('%s %s: %s events, seq %s..%s, counter %s', x.aggregatetype, x.aggregateid, x.n, x.lo, x.hi,
                      coalesce(o.event_seq, p.command_seq))
        FROM (SELECT aggregatetype, aggregateid, count(*) AS n, count(DISTINCT seq) AS d, min(seq) AS lo,
                     max(seq) AS hi
              FROM oms.outbox GROUP BY 1, 2) AS x
        LEFT JOIN oms.orders AS o ON x.aggregatetype = 'order' AND o.id = x.aggregateid
        LEFT JOIN oms.payments AS p ON x.aggregatetype = 'payment' AND p.id = x.aggregateid
        WHERE x.d <> x.n OR x.hi - x.lo + 1 <> x.n OR x.hi IS DISTINCT FROM coalesce(o.event_seq, p.command_seq)
        LIMIT 5"""),
    ("orders: the status equals the to_status of the last status-changing timeline entry", """
        SELECT format('order %s: status %s, last timeline to_status %s', o.id, o.status, e.to_status)
        FROM oms.orders AS o
        LEFT JOIN LATERAL (SELECT e.to_status FROM oms.order_events AS e
                           WHERE e.order_id = o.id AND e.to_status IS NOT NULL
                           ORDER BY e.seq DESC LIMIT 1) AS e ON true
        WHERE o.status IS DISTINCT FROM e.to_status
        LIMIT 5"""),
    ("outbox: every event fits in oms.kafka_max_message_bytes, so the relay can publish it", """
        SELECT format('%s event %s of %s: %s bytes of payload, limit %s; the order''s metadata has %s bytes',
                      x.type, x.id, x.aggregateid, octet_length(x.payload::text), s.setting,
                      octet_length(o.metadata::text))
        FROM oms.outbox AS x
        JOIN pg_settings AS s ON s.name = 'oms.kafka_max_message_bytes'
        LEFT JOIN oms.orders AS o ON x.aggregatetype = 'order' AND o.id = x.aggregateid
        WHERE octet_length(x.payload::text) > s.setting::bigint
        LIMIT 5"""),
]


def ledger_rule(name, rule, columns):
    """An invariant over each order line: rule (SQL) must hold."""
    shown = ", ".join(f"{c} %s" for c in columns)
    values = ", ".join(f"quantity_{c}" if c != "quantity" else c for c in columns)
    return (f"ledger: {name} on every line", f"""
        SELECT format('order %s line %s: {shown}', order_id, line_no, {values})
        FROM oms.order_items WHERE NOT ({rule}) LIMIT 5""")


def ledger_sum(column, kind, statuses):
    """quantity_<column> of each line is the sum of its units in the
    shipments or returns (kind) in the given statuses."""
    parent = kind + "s"
    states = ", ".join(f"'{s}'" for s in statuses)
    said = " or ".join(statuses)
    return (f"ledger: quantity_{column} of each line = its units in {said} {parent}", f"""
        SELECT format('order %s line %s: quantity_{column} %s, units in {said} {parent} %s',
                      i.order_id, i.line_no, i.quantity_{column}, coalesce(x.units, 0))
        FROM oms.order_items AS i
        LEFT JOIN (SELECT l.order_id, l.line_no, sum(l.quantity) AS units
                   FROM oms.{kind}_lines AS l JOIN oms.{parent} AS p ON p.id = l.{kind}_id
                   WHERE p.status IN ({states})
                   GROUP BY 1, 2) AS x ON x.order_id = i.order_id AND x.line_no = i.line_no
        WHERE i.quantity_{column} <> coalesce(x.units, 0)
        LIMIT 5""")


# The quantity ledger of order lines and what it must agree with (see
# src/sql/fulfillment.sql); the CHECK constraints of oms.order_items hold
# the first four, these lines are their witness.
LEDGER_INVARIANTS = [
    ledger_rule("canceled + fulfilling + shipped <= quantity",
                "quantity_canceled + quantity_fulfilling + quantity_shipped <= quantity",
                ["quantity", "canceled", "fulfilling", "shipped"]),
    ledger_rule("delivered <= shipped", "quantity_delivered <= quantity_shipped", ["shipped", "delivered"]),
    ledger_rule("returning + returned <= delivered", "quantity_returning + quantity_returned <= quantity_delivered",
                ["delivered", "returning", "returned"]),
    ledger_rule("refunded <= canceled + returned", "quantity_refunded <= quantity_canceled + quantity_returned",
                ["canceled", "returned", "refunded"]),
    ("orders: fulfillment_status is what oms._fulfillment_status_of(id) derives from the ledger", """
        SELECT format('order %s: fulfillment_status %s, the ledger gives %s', id, fulfillment_status, derived)
        FROM (SELECT o.id, o.fulfillment_status, oms._fulfillment_status_of(o.id) AS derived
              FROM oms.orders AS o) AS x
        WHERE fulfillment_status IS DISTINCT FROM derived
        LIMIT 5"""),
    ("orders: payment_status is unpaid (nothing captured), paid (nothing refunded), partially_refunded or refunded", """
        SELECT format('order %s: payment_status %s, payment captured %s, refunded %s',
                      o.id, o.payment_status, p.captured, p.refunded)
        FROM oms.orders AS o LEFT JOIN oms.payments AS p ON p.order_id = o.id
        WHERE o.payment_status::text IS DISTINCT FROM
              CASE WHEN coalesce(p.captured, 0) = 0 THEN 'unpaid'
                   WHEN p.refunded = 0 THEN 'paid'
                   WHEN p.refunded < p.captured THEN 'partially_refunded'
                   ELSE 'refunded' END
        LIMIT 5"""),
    ledger_sum("fulfilling", "shipment", ["pending"]),
    ledger_sum("shipped", "shipment", ["shipped", "delivered"]),
    ledger_sum("delivered", "shipment", ["delivered"]),
    ledger_sum("returning", "return", ["requested"]),
    ledger_sum("returned", "return", ["received", "refunded"]),
    ("allocation: per order and SKU, the consumed reservations' shipped = the line's fulfilling + shipped", """
        SELECT format('order %s SKU %s: consumed reservations shipped %s, line fulfilling + shipped %s',
                      coalesce(r.order_id, i.order_id), coalesce(r.sku, i.sku), r.shipped, i.units)
        FROM (SELECT order_id, sku, sum(shipped) AS shipped FROM oms.reservations
              WHERE status = 'consumed' GROUP BY 1, 2) AS r
        FULL JOIN (SELECT order_id, sku, sum(quantity_fulfilling + quantity_shipped) AS units
                   FROM oms.order_items GROUP BY 1, 2) AS i ON i.order_id = r.order_id AND i.sku = r.sku
        WHERE coalesce(r.shipped, 0) <> coalesce(i.units, 0)
        LIMIT 5"""),
    # oms_receive_return closes a return at once, without a refund, when
    # nothing is left to refund: its payment was refunded in full before.
    ("returns: every refunded return has a succeeded refund (or none, its payment being refunded in full)", """
        SELECT format('return %s of order %s: refunded; refund %s is %s; payment captured %s, refunded %s',
                      r.id, r.order_id, r.refund_id, coalesce(f.status, 'missing'), p.captured, p.refunded)
        FROM oms.returns AS r
        LEFT JOIN oms.refunds AS f ON f.id = r.refund_id
        LEFT JOIN oms.payments AS p ON p.order_id = r.order_id
        WHERE r.status = 'refunded' AND f.status IS DISTINCT FROM 'succeeded'
          AND NOT (r.refund_id IS NULL AND p.refunded = p.captured)
        LIMIT 5"""),
]
INVARIANTS += LEDGER_INVARIANTS


def _goods_line(assignment):
    """Breaks line 1 of the fixture order fz_goods (ledger_breaks)."""
    return f"UPDATE oms.order_items SET {assignment} WHERE order_id = (SELECT id FROM fz_goods) AND line_no = 1"


def _lines_of(kind, statuses):
    """One more unit in the first line of the fixture order's shipment or
    return in one of the statuses."""
    states = ", ".join(f"'{s}'" for s in statuses)
    return (f"UPDATE oms.{kind}_lines SET quantity = quantity + 1 WHERE ({kind}_id, line_no) = "
            f"(SELECT l.{kind}_id, l.line_no FROM oms.{kind}_lines AS l JOIN oms.{kind}s AS p ON p.id = l.{kind}_id "
            f"WHERE p.order_id = (SELECT id FROM fz_goods) AND p.status IN ({states}) ORDER BY 1, 2 LIMIT 1)")


# How to break each ledger invariant on purpose, in the order of
# LEDGER_INVARIANTS: statements run as the superuser on the newest order
# with shipments (fz_goods) in a transaction that is rolled back; the
# constraints and triggers that would stop them are dropped or disabled in
# it.  invariants_can_fail() runs them once, so that an invariant that can
# never fail (a wrong join, a typo that makes it vacuous) fails the run.
LEDGER_BREAKS = [
    ["ALTER TABLE oms.order_items DROP CONSTRAINT order_items_ship_check",
     _goods_line("quantity_canceled = quantity + 1")],
    ["ALTER TABLE oms.order_items DROP CONSTRAINT order_items_deliver_check",
     _goods_line("quantity_delivered = quantity_shipped + 1")],
    ["ALTER TABLE oms.order_items DROP CONSTRAINT order_items_return_check",
     _goods_line("quantity_returning = quantity_delivered + 1")],
    ["ALTER TABLE oms.order_items DROP CONSTRAINT order_items_refund_check",
     _goods_line("quantity_refunded = quantity_canceled + quantity_returned + 1")],
    ["ALTER TABLE oms.orders DISABLE TRIGGER USER",
     "UPDATE oms.orders SET fulfillment_status = CASE WHEN fulfillment_status = 'unfulfilled' THEN 'fulfilled' "
     "ELSE 'unfulfilled' END::oms.fulfillment_status WHERE id = (SELECT id FROM fz_goods)"],
    ["ALTER TABLE oms.orders DISABLE TRIGGER USER",
     "UPDATE oms.orders SET payment_status = CASE WHEN payment_status = 'unpaid' THEN 'paid' "
     "ELSE 'unpaid' END::oms.payment_status WHERE id = (SELECT id FROM fz_goods)"],
    [_lines_of("shipment", ["pending"])],
    [_lines_of("shipment", ["shipped"])],
    [_lines_of("shipment", ["delivered"])],
    [_lines_of("return", ["requested"])],
    [_lines_of("return", ["received", "refunded"])],
    ["UPDATE oms.reservations SET shipped = shipped - 1 "
     "WHERE order_id = (SELECT id FROM fz_goods) AND status = 'consumed' AND shipped > 0"],
    ["UPDATE oms.refunds SET status = 'pending' WHERE id IN (SELECT r.refund_id FROM oms.returns AS r "
     "WHERE r.order_id = (SELECT id FROM fz_goods) AND r.status = 'refunded')"],
]
assert len(LEDGER_BREAKS) == len(LEDGER_INVARIANTS)


def invariants_can_fail(su):
    """Breaks the data of each ledger invariant in turn (LEDGER_BREAKS),
    each time in a transaction that is rolled back; returns the invariants
    that did not report the break."""
    missed = []
    for (name, query), statements in zip(LEDGER_INVARIANTS, LEDGER_BREAKS):
        try:
            with su.transaction():
                su.execute("""CREATE TEMP TABLE fz_goods ON COMMIT DROP AS
                              SELECT o.id FROM oms.orders AS o
                              WHERE EXISTS (SELECT FROM oms.shipments AS s WHERE s.order_id = o.id)
                              ORDER BY o.created_at DESC, o.id LIMIT 1""")
                for statement in statements:
                    su.execute(statement)
                if not su.execute(query).fetchall():
                    missed.append(f"{name}: did not report {'; '.join(statements)}")
                raise psycopg.Rollback()
        except psycopg.Error as e:
            missed.append(f"{name}: breaking it failed: {e.sqlstate} {first_line(str(e))}")
    return missed


def invariant_problems(su):
    """Each invariant's offending rows (at most 5), read as the superuser."""
    found = {}
    for name, query in INVARIANTS:
        try:
            found[name] = [r[0] for r in su.execute(query).fetchall()]
        except psycopg.Error as e:
            found[name] = [f"the invariant query failed: {e}"]
    return found


def check_invariants(found, tap):
    """One line per invariant, with the rounds after which it did not hold."""
    for name, _ in INVARIANTS:
        tap.line(not found[name], f"invariant: {name}", found[name][:5])


def check_server_log(path, offset, tap):
    pattern = re.compile(r"terminated by signal|PANIC|server process .* was terminated|TRAP:")
    if not path:
        print("ok - server log: no crash, PANIC or TRAP # SKIP OMS_FUZZ_SERVER_LOG is not set")
        return
    if not os.path.exists(path):
        tap.line(False, "server log: no crash, PANIC or TRAP", [f"no server log at {path!r} (OMS_FUZZ_SERVER_LOG)"])
        return
    hits = []
    with open(path, encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        for line in f:
            if pattern.search(line):
                hits.append(short(line.rstrip("\n"))[1:-1])
    tap.line(not hits, "server log: no crash, PANIC or TRAP", hits[:10])


# --------------------------------------------------------------------------
# The run

def parse_seed():
    value = os.environ.get("OMS_FUZZ_SEED", "").strip()
    if value == "random":
        return random.SystemRandom().randrange(1, 2 ** 31)
    return int(value) if value else DEFAULT_SEED


def check_privileges(functions, sessions, tap):
    """oms_app and oms_reader get 42501 from every function they may not
    execute (the admin functions; for oms_reader also the order API)."""
    for role in ("app", "reader"):
        for fn in functions:
            if fn.may[role]:
                continue
            # NULLs: a value that fails its cast would fail before the privilege check.
            call = Call(fn, [V(None) for _ in fn.args], typed=True)
            out = execute(sessions[role], call)
            tap.line(out.kind == "error" and out.sqlstate == "42501",
                     f"privileges: fuzz_{role} (oms_{role}) gets 42501 from {fn.name}",
                     [f"{call!r} as fuzz_{role}\n  -> {out.describe()}"])


def resolve_specs(functions, tap):
    """The spec of every function; generic generators (and not ok) for the rest."""
    specs = {}
    for fn in functions:
        spec = SPECS.get(fn.signature)
        names_match = spec is not None and set(spec) == {a.name for a in fn.args}
        tap.line(names_match, f"{fn.signature}: has a generator in test/fuzz/api_fuzz.py",
                 [f"add an entry for {fn.signature!r} to SPECS, one generator per argument "
                  f"({', '.join(a.name + ' ' + a.type for a in fn.args) or 'no arguments'}); "
                  f"until then it is fuzzed with generic values by type"])
        if not names_match:
            spec = {a.name: generic_generator(a.type) for a in fn.args}
        specs[fn.signature] = spec
    return specs


def start_round(rnd, seed, sessions, su, ctx, holder):
    """Fixtures for the round; returns what is missing from them."""
    problems = []
    try:
        build_fixtures(sessions, random.Random(f"{seed}/fixtures/{rnd}"), holder)
    except psycopg.Error as e:
        problems.append(f"round {rnd}: a fixture call failed: {e.sqlstate} {first_line(str(e))}")
    ctx.refresh(su)
    absent = [s for s in STATUSES if not ctx.orders.get(s)]
    if absent:
        problems.append(f"round {rnd}: no order is {', '.join(absent)}")
    for kind, have, statuses in (("shipment", ctx.shipments, SHIPMENT_STATUSES),
                                 ("return", ctx.returns, RETURN_STATUSES)):
        absent = [s for s in statuses if not have.get(s)]
        if absent:
            problems.append(f"round {rnd}: no {kind} is {', '.join(absent)}")
    return problems


def fuzz_call(fn, spec, ctx, session, su, st, before, documented, where):
    """Makes, sends and checks one call; returns the write counters after it."""
    call = make_call(fn, spec, ctx)
    st.calls += 1
    st.typed += call.typed
    if ctx.target and fn.takes_order:
        st.targets[ctx.target[0]] += 1
    t0 = time.monotonic()
    out = execute(session, call)
    st.seconds += time.monotonic() - t0
    try:
        after = writes_snapshot(su)
    except psycopg.OperationalError as e:
        raise RuntimeError(f"lost the server after {call!r} as fuzz_{fn.role}: {out.describe()}") from e
    out.written = writes_delta(before, after)
    if out.kind == "died":
        session.reconnect()
    if out.kind == "client":
        # A value the client cannot send (NUL, a lone surrogate) is a fuzzer defect.
        st.unsent.append(f"{call!r}: {out.message}")
        return after
    if out.kind == "ok":
        st.returned += 1
        st.written_on_success.update(out.written)
        result = result_field(out.result)
        if result is not None:
            st.results[result] += 1
    else:
        st.sqlstates[out.sqlstate or out.kind] += 1
    check_call(fn, call, out, documented, st, where, su)
    return after


def fuzz(functions, specs, sessions, su, ctx, seed, calls, documented, tap):
    """Rounds of shuffled calls of every function; fixtures and sagas between rounds."""
    stats = {fn.signature: Stats() for fn in functions}
    rounds = max(1, calls // CALLS_PER_ROUND)
    missing_statuses, locks = [], []
    broken = {name: [] for name, _ in INVARIANTS}
    holder = psycopg.connect(user="postgres", dbname=su.info.dbname)   # not autocommit
    for rnd in range(rounds):
        missing_statuses += start_round(rnd, seed, sessions, su, ctx, holder)
        if rnd == 0:
            tap.line(not (missed := invariants_can_fail(su)),
                     "invariants: each ledger invariant reports its data broken on purpose", missed)
        share = calls // rounds + (calls % rounds if rnd == rounds - 1 else 0)
        plan = [fn for fn in functions if fn.role for _ in range(share)]
        random.Random(f"{seed}/plan/{rnd}").shuffle(plan)
        rngs = {fn.signature: random.Random(f"{seed}/{fn.signature}/{rnd}") for fn in functions}
        numbers = Counter()
        before = writes_snapshot(su)
        for i, fn in enumerate(plan):
            if i and i % STATUS_REFRESH_EVERY == 0:
                ctx.refresh(su)
            ctx.rng = rngs[fn.signature]
            numbers[fn.signature] += 1
            before = fuzz_call(fn, specs[fn.signature], ctx, sessions[fn.role], su, stats[fn.signature], before,
                               documented, f"seed {seed}, round {rnd}, call {numbers[fn.signature]} "
                                           f"of {fn.name} in the round")
        holder.rollback()
        run_sagas(sessions["admin"])
        locks += [f"round {rnd}: {row}" for row in advisory_locks(su, sessions)]
        for name, rows in invariant_problems(su).items():
            broken[name] += [f"after round {rnd}: {row}" for row in rows]
    holder.close()
    tap.line(not locks, "no session holds an advisory lock after its calls", locks[:5])
    unsent = [u for st in stats.values() for u in st.unsent]
    tap.line(not unsent, "fuzzer: every generated call reached the server", unsent[:5])
    return stats, missing_statuses, broken


def advisory_locks(su, sessions):
    """Advisory locks the fuzz sessions still hold: a session-level lock
    that a call took and an error skipped releasing would stay forever."""
    pids = [s.conn.info.backend_pid for s in sessions.values()]
    return [f"pid {pid}: advisory lock {key}" for pid, key in su.execute(
        "SELECT pid, classid || '/' || objid || '/' || objsubid FROM pg_locks "
        "WHERE locktype = 'advisory' AND pid = ANY(%s)", [pids]).fetchall()]


def report(functions, stats, tap):
    for fn in functions:
        st = stats[fn.signature]
        if fn.role is None:
            tap.line(False, f"{fn.name}: callable by oms_app, oms_reader or oms_admin",
                     ["no fuzz role may execute it; not fuzzed"])
            continue
        for check, text in CHECKS:
            if not applicable(check, fn):
                continue
            if check == "coverage":
                missing = [s for s in STATUSES if not st.targets[s]]
                tap.line(not missing, f"{fn.name}: {text}",
                         [f"never called on an order that was {', '.join(missing)}"])
                continue
            n = st.failure_counts[check]
            lines = [f"{n} of {st.calls} calls; examples:"]
            for key, text_, statement in st.failures[check]:
                lines.append(text_)
                tap.save_sql(f"{fn.name}: {check}", statement)
            if n:
                lines.append(f"full SQL of these calls: {os.environ.get('OMS_FUZZ_FAILURES') or '(OMS_FUZZ_FAILURES unset)'}")
            tap.line(n == 0, f"{fn.name}: {text}", lines)
        errors = " ".join(f"{s} x{n}" for s, n in sorted(st.sqlstates.items()))
        written = ", ".join(f"{t} {n}" for t, n in sorted(st.written_on_success.items())) or "nothing"
        tap.diag(f"{fn.name}: {st.calls} calls as fuzz_{fn.role} ({st.typed} typed, {st.calls - st.typed} untyped); "
                 f"{st.returned} returned; errors: {errors or 'none'}; {st.seconds:.1f} s in the server")
        tap.diag(f"{fn.name}: rows written by calls that returned: {written}")
        if st.targets:
            tap.diag(f"{fn.name}: calls on orders by status: "
                     + ", ".join(f"{s} {st.targets[s]}" for s in STATUSES))
        if st.results:
            tap.diag(f"{fn.name}: results: " + ", ".join(f"{r} {n}" for r, n in sorted(st.results.items(), key=str)))


def main():
    seed = parse_seed()
    calls = int(os.environ.get("OMS_FUZZ_CALLS") or DEFAULT_CALLS)
    log_path = os.environ.get("OMS_FUZZ_SERVER_LOG")
    log_offset = os.path.getsize(log_path) if log_path and os.path.exists(log_path) else 0
    tap = Tap(seed, os.environ.get("OMS_FUZZ_FAILURES"))
    Tap.diag(f"seed {seed}, {calls} calls per function (OMS_FUZZ_SEED, OMS_FUZZ_CALLS); "
             f"reproduce: {reproduce_command(seed)}")
    try:
        run(tap, seed, calls, os.environ.get("OMS_FUZZ_DB", "oms_fuzz"))
    except Exception:      # a defect of the fuzzer, or the server went away: say so in TAP
        tap.line(False, "the fuzzer ran to the end", [traceback.format_exc()])
    check_server_log(log_path, log_offset, tap)
    return 1 if tap.failed else 0


def run(tap, seed, calls, db):
    started = time.monotonic()
    su = create_database(db)
    documented = documented_sqlstates(ERRORS_MD)
    functions = discover_functions(su)
    Tap.diag(f"{len(functions)} public functions: " + ", ".join(fn.name for fn in functions))
    tap.line(bool(functions), "the catalog lists the public functions of extension oms")
    specs = resolve_specs(functions, tap)
    sessions = {name: Session(f"fuzz_{name}", db) for name in ("app", "reader", "admin", "kafka")}
    ctx = Context(su)
    check_privileges(functions, sessions, tap)

    stats, missing_statuses, broken = fuzz(functions, specs, sessions, su, ctx, seed, calls, documented, tap)
    tap.line(not missing_statuses, "fixtures: every round had orders in all eight statuses, shipments and returns "
             "in every status", missing_statuses)
    report(functions, stats, tap)
    check_invariants(broken, tap)
    Tap.diag(f"{sum(s.calls for s in stats.values())} calls in {time.monotonic() - started:.0f} s; seed {seed}")


if __name__ == "__main__":
    sys.exit(main())
