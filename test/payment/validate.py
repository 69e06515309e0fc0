#!/usr/bin/python3
"""test/payment/validate.py: payment commands and replies as they were on Kafka
against their documented schemas (docs/events).

    /usr/bin/python3 test/payment/validate.py --commands FILE [--replies FILE]
        [--replies-topic oms.payment-replies] [--schemas DIR]

FILE: JSON lines in the format of "kcat -C -J" / test/relay/consume.py
(topic, partition, offset, headers as a flat [name, value, ...] list, key,
payload).  Each command's value is validated against
docs/events/payment.<command>.v1.json, its headers against
cloudevent-headers.v1.json, and cross-checked: ce_type = oms.payment.<command>
= "oms." + the type its payload names, ce_dataschema, ce_omsaggregate =
payment, key = ce_subject = payment_id, reply_topic = --replies-topic, and
per payment the ce_omsseq values are 1..n without a gap (a redelivered
command repeats its ce_id and ce_omsseq).  Each reply value (when --replies
is given; values that are not JSON and the readiness probes, key "probe",
are skipped: the suites send those on purpose) is validated against payment-reply.v1.json.  Prints one TAP-like
line per command type and one for the replies; exit status 1 on a failure.
"""

import argparse
import json
import os
import sys
from collections import defaultdict

from jsonschema import Draft202012Validator, FormatChecker

MAX_DIAG = 5


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def records(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)


def headers_of(rec):
    flat = rec.get("headers") or []
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser()
    p.add_argument("--commands", required=True)
    p.add_argument("--replies")
    p.add_argument("--replies-topic", default="oms.payment-replies")
    p.add_argument("--schemas", default=os.path.join(here, "..", "..", "docs", "events"))
    args = p.parse_args()

    fc = FormatChecker()
    hdr_validator = Draft202012Validator(load(os.path.join(args.schemas, "cloudevent-headers.v1.json")),
                                         format_checker=fc)
    failed = False
    problems = defaultdict(list)
    counts = defaultdict(int)
    seqs = defaultdict(dict)   # payment id -> {ce_omsseq: ce_id}
    for rec in records(args.commands):
        h = headers_of(rec)
        ce_type = h.get("ce_type", "")
        cmd = ce_type[len("oms.payment."):] if ce_type.startswith("oms.payment.") else "?"
        counts[cmd] += 1
        errs = problems[cmd]
        where = f"{rec.get('partition')}/{rec.get('offset')}"
        try:
            payload = json.loads(rec.get("payload") or "")
        except ValueError as e:
            errs.append(f"{where}: value is not JSON: {e}")
            continue
        path = os.path.join(args.schemas, f"payment.{cmd}.v1.json")
        if not os.path.exists(path):
            errs.append(f"{where}: no schema for ce_type {ce_type!r}")
            continue
        v = Draft202012Validator(load(path), format_checker=fc)
        errs += [f"{where}: payload: {e.message}" for e in v.iter_errors(payload)]
        errs += [f"{where}: headers: {e.message}" for e in hdr_validator.iter_errors(h)]
        expect = {
            "ce_type": f"oms.payment.{payload.get('command')}",
            "ce_dataschema": f"oms:events/payment.{cmd}/v1",
            "ce_omsaggregate": "payment",
            "ce_subject": payload.get("payment_id"),
        }
        for k, want in expect.items():
            if h.get(k) != want:
                errs.append(f"{where}: header {k} = {h.get(k)!r}, expected {want!r}")
        if rec.get("key") != payload.get("payment_id"):
            errs.append(f"{where}: key {rec.get('key')!r} is not payment_id {payload.get('payment_id')!r}")
        if payload.get("reply_topic") != args.replies_topic:
            errs.append(f"{where}: reply_topic {payload.get('reply_topic')!r}, expected {args.replies_topic!r}")
        seq = h.get("ce_omsseq")
        if seq is not None and seq.isdigit():
            prev = seqs[payload.get("payment_id")].setdefault(int(seq), h.get("ce_id"))
            if prev != h.get("ce_id"):
                errs.append(f"{where}: ce_omsseq {seq} of payment {payload.get('payment_id')} used by two events")

    gaps = [f"payment {pid}: ce_omsseq {sorted(s)}" for pid, s in seqs.items()
            if sorted(s) != list(range(1, len(s) + 1))]
    for cmd in sorted(counts):
        errs = problems[cmd]
        if errs:
            failed = True
            print(f"not ok - payment.{cmd}: {len(errs)} problems in {counts[cmd]} commands")
            for e in errs[:MAX_DIAG]:
                print(f"# {e}")
        else:
            print(f"ok - payment.{cmd}: {counts[cmd]} commands valid (payload, headers, key)")
    if not counts:
        failed = True
        print("not ok - payment commands: none read")
    if gaps:
        failed = True
        print(f"not ok - ce_omsseq per payment is 1..n without a gap ({len(gaps)} payments with gaps)")
        for g in gaps[:MAX_DIAG]:
            print(f"# {g}")
    else:
        print(f"ok - ce_omsseq per payment is 1..n without a gap ({len(seqs)} payments)")

    if args.replies:
        rv = Draft202012Validator(load(os.path.join(args.schemas, "payment-reply.v1.json")), format_checker=fc)
        n, skipped, errs = 0, 0, []
        for rec in records(args.replies):
            if rec.get("key") == "probe":
                continue  # the suites' readiness probes are malformed on purpose
            try:
                body = json.loads(rec.get("payload") or "")
            except ValueError:
                skipped += 1
                continue
            n += 1
            errs += [f"{rec.get('partition')}/{rec.get('offset')}: {e.message}" for e in rv.iter_errors(body)]
        if errs or n == 0:
            failed = True
            print(f"not ok - payment replies: {len(errs)} problems in {n} replies")
            for e in errs[:MAX_DIAG]:
                print(f"# {e}")
        else:
            print(f"ok - payment replies: {n} valid against payment-reply.v1 ({skipped} non-JSON skipped)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
