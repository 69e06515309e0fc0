#!/usr/bin/python3
"""test/events/validate.py: checks oms events against docs/events/*.json.

Reads JSON lines from stdin, one event each:

    {"type": "order.created", "payload": {...}, "headers": {...}, "key": "..."}

"headers" (the Kafka headers as an object, name -> value) and "key" (the
Kafka record key) are optional.  The payload is validated against
docs/events/<type>.v1.json (its $ref to the order document resolves to
docs/events/order.v1.json: no network), the headers against
docs/events/cloudevent-headers.v1.json, and the headers are cross-checked
with the event: ce_type = "oms." + type, ce_dataschema =
"oms:events/<type>/v1", ce_omsaggregate = the aggregate of the type (see
AGGREGATES), and ce_subject = payload.order.order_id = key.  A shipment or
return carried by a shipment.* or return.* event must equal its entry in
the order document (order.shipments, order.returns).

Prints TAP-like lines, one per event type (counts, not one line per event),
with "# " diagnostics under a failure, and exits 1 on any failure.

Run with Debian's interpreter: /usr/bin/python3 (package python3-jsonschema,
4.10, draft 2020-12).  Options:
    --schemas DIR        schema directory (default: docs/events of this tree)
    --require-all-types  fail unless every documented event type occurred
    --require-prefix P   with --require-all-types: only the types starting with P
"""

import argparse
import datetime
import json
import os
import re
import sys
from collections import OrderedDict

import jsonschema
from jsonschema import Draft202012Validator, FormatChecker, RefResolver
from jsonschema.exceptions import best_match

HEADERS_ID = "oms:schemas/cloudevent-headers/v1"
# The outbox aggregate (ce_omsaggregate) of each event type's first part:
# shipments and returns are events of their order, numbered in the order's
# ce_omsseq sequence and keyed by the order id.
AGGREGATES = {"order": "order", "shipment": "order", "return": "order", "payment": "payment"}
# Events that carry one shipment or return, and the order document's list of them.
CARRIED = {"shipment": ("shipment", "shipments", "shipment_id"), "return": ("return", "returns", "return_id")}
MAX_DIAGNOSTICS = 5  # per type: enough to see the problem, short enough to read

# RFC 3339 section 5.6 date-time.  jsonschema checks "date-time" only with
# the optional rfc3339-validator module, which Debian does not install with
# python3-jsonschema, so it is checked here.
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def format_checker():
    checker = FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def is_datetime(value):
        if not isinstance(value, str):
            return True
        if not RFC3339.match(value):
            return False
        # Rejects impossible dates and times (2024-02-30, 25:00).
        text = re.sub(r"[Zz]$", "+00:00", value)
        datetime.datetime.fromisoformat(text.upper())
        return True

    return checker


def load_schemas(directory):
    """Returns ({$id: schema}, {event type: schema}); raises on a bad file."""
    store, events = {}, {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            schema = json.load(f, object_pairs_hook=OrderedDict)
        Draft202012Validator.check_schema(schema)
        sid = schema.get("$id")
        if not sid:
            raise ValueError(f"{name}: no $id")
        if sid in store:
            raise ValueError(f"{name}: duplicate $id {sid}")
        store[sid] = schema
        m = re.match(r"^oms:events/(.+)/v([0-9]+)$", sid)
        if m:
            etype, major = m.group(1), m.group(2)
            if name != f"{etype}.v{major}.json":
                raise ValueError(f"{name}: $id {sid} does not match the file name")
            if major == "1":
                events[etype] = schema
    if HEADERS_ID not in store:
        raise ValueError(f"no schema with $id {HEADERS_ID}")
    return store, events


def make_validator(schema, store, checker):
    resolver = RefResolver.from_schema(schema, store=store)
    return Draft202012Validator(schema, resolver=resolver, format_checker=checker)


def describe(error):
    """One line per error; a failed oneOf/anyOf names why each variant failed
    instead of printing the whole instance."""
    path = "/".join(str(p) for p in error.absolute_path)
    if error.validator in ("oneOf", "anyOf") and error.context:
        branches = OrderedDict()
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        reasons = [f"variant {i + 1}: {describe(best_match(subs))}" for i, subs in branches.items()]
        return f"{path or '(top)'}: matches none of the {error.validator} variants ({'; '.join(reasons)})"
    if error.validator == "oneOf":
        return f"{path or '(top)'}: matches more than one oneOf variant"
    return f"{path or '(top)'}: {short(error.message, 160)}"


def carried_problems(etype, payload):
    """A shipment.* or return.* event's shipment or return must be the one
    in its order document, field for field."""
    kind = etype.split(".")[0]
    if kind not in CARRIED or not isinstance(payload, dict):
        return []
    field, listed, key = CARRIED[kind]
    item, order = payload.get(field), payload.get("order")
    if not isinstance(item, dict) or not isinstance(order, dict) or not isinstance(order.get(listed), list):
        return []  # the schema reports it
    same = [x for x in order[listed] if isinstance(x, dict) and x.get(key) == item.get(key)]
    if len(same) != 1:
        return [f"{field} {item.get(key)!r} appears {len(same)} times in order.{listed}"]
    if same[0] != item:
        return [f"{field} differs from its entry in order.{listed}"]
    return []


def short(text, limit=200):
    return text if len(text) <= limit else text[:limit] + "..."


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schemas", default=os.path.join(here, "..", "..", "docs", "events"))
    parser.add_argument("--require-all-types", action="store_true")
    parser.add_argument("--require-prefix", default="",
                        help="with --require-all-types: only documented types starting with this")
    args = parser.parse_args()

    try:
        store, event_schemas = load_schemas(args.schemas)
    except (OSError, ValueError, jsonschema.SchemaError) as e:
        print("not ok - docs/events schemas load and are valid JSON Schema 2020-12")
        print(f"# {short(str(e), 400)}")
        return 1
    print(f"ok - docs/events: {len(store)} schemas load and are valid JSON Schema 2020-12")

    checker = format_checker()
    validators = {t: make_validator(s, store, checker) for t, s in event_schemas.items()}
    headers_validator = make_validator(store[HEADERS_ID], store, checker)

    # type -> {"events": n, "headers": n, "bad": n, "diag": [...]}
    stats = OrderedDict()

    def tally(etype):
        return stats.setdefault(etype, {"events": 0, "headers": 0, "bad": 0, "diag": []})

    for lineno, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                raise ValueError('not an object with a string "type"')
        except ValueError as e:
            s = tally("(unreadable input)")
            s["events"] += 1
            s["bad"] += 1
            s["diag"].append(f"line {lineno}: {short(str(e))}")
            continue

        etype = event["type"]
        payload = event.get("payload")
        headers = event.get("headers")
        s = tally(etype)
        s["events"] += 1
        problems = []
        validator = validators.get(etype)
        if validator is None:
            problems.append(f"no schema docs/events/{etype}.v1.json")
        else:
            error = best_match(validator.iter_errors(payload))
            if error is not None:
                problems.append("payload " + describe(error))
            else:
                problems.extend(carried_problems(etype, payload))
        if headers is not None:
            s["headers"] += 1
            if not isinstance(headers, dict):
                problems.append("headers: not an object")
            else:
                error = best_match(headers_validator.iter_errors(headers))
                if error is not None:
                    problems.append("headers " + describe(error))
                expected = {
                    "ce_type": "oms." + etype,
                    "ce_dataschema": f"oms:events/{etype}/v1",
                    "ce_omsaggregate": AGGREGATES.get(etype.split(".")[0], "(no aggregate for this type)"),
                }
                order = payload.get("order") if isinstance(payload, dict) else None
                if isinstance(order, dict) and "order_id" in order:
                    expected["ce_subject"] = order["order_id"]
                for name, value in expected.items():
                    if name in headers and headers[name] != value:
                        problems.append(f"headers: {name} is {headers[name]!r}, expected {value!r}")
                if "key" in event and event["key"] != headers.get("ce_subject"):
                    problems.append(f"key is {event['key']!r}, ce_subject is {headers.get('ce_subject')!r}")
        if problems:
            s["bad"] += 1
            ident = (headers or {}).get("ce_id") if isinstance(headers, dict) else None
            if not ident and isinstance(payload, dict) and isinstance(payload.get("order"), dict):
                ident = payload["order"].get("order_id")
            s["diag"].append(f"line {lineno} ({ident or 'no id'}): " + short("; ".join(problems), 400))

    failed = False
    if not stats:
        print("not ok - events on stdin")
        print("# no events read")
        failed = True
    for etype, s in stats.items():
        with_headers = f", {s['headers']} with headers" if s["headers"] else ""
        if s["bad"] == 0:
            print(f"ok - {etype}: {s['events']} events valid{with_headers}")
            continue
        failed = True
        print(f"not ok - {etype}: {s['bad']} of {s['events']} events invalid{with_headers}")
        for d in s["diag"][:MAX_DIAGNOSTICS]:
            print(f"# {d}")
        if len(s["diag"]) > MAX_DIAGNOSTICS:
            print(f"# ... and {len(s['diag']) - MAX_DIAGNOSTICS} more")
    if args.require_all_types:
        wanted = [t for t in event_schemas if t.startswith(args.require_prefix)]
        missing = [t for t in wanted if t not in stats]
        if missing:
            failed = True
            print("not ok - every documented event type occurred")
            print(f"# missing: {', '.join(missing)}")
        else:
            print(f"ok - every documented event type occurred ({len(wanted)} types)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
