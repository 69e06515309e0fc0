#!/usr/bin/python3
"""test/relay/analyse.py: compares what the oms relay published with what
the database produced, for the relay's TAP tests (test/t/020_relay_e2e.pl and
021_relay_faults.pl, through test/perl/OmsRelay.pm).

Inputs (JSON lines):
  --consumed FILE    records as "kcat -C -J" prints them: topic, partition,
                     offset, headers (a flat [name, value, ...] list), key,
                     payload.  Every record of the topic, in consumption order.
  --produced FILE    the outbox rows the run wrote (captured by the trigger of
                     test/relay/capture.sql): id, order_id, seq, type,
                     payload, ce_time.  Only these orders' records are judged,
                     so several scenarios can share one topic.
  --timeline FILE    optional: order_id, seq, type per status change of the
                     order timeline (oms.order_events with a to_status),
                     numbered per order: the events the run must have
                     published, derived without the outbox.
  --undelivered FILE optional: outbox ids that were dead-lettered and never
                     replayed (one per line): must not be on the topic.
  --late FILE        optional: outbox ids replayed from a dead letter (one per
                     line): delivered, but after their successors, so they
                     are left out of the per-order ordering check.

Checks, one "ok - LABEL: ..." / "not ok - LABEL: ..." line each (TAP-like,
with "# " diagnostics), exit status 1 if any failed:
  - the consumer read every offset of every partition from 0 (so a missing
    event is the relay's doing, not the consumer's or the broker's);
  - every produced event was consumed (by ce_id), none unexpected, and the
    dead-lettered ones not at all;
  - duplicates (a ce_id seen again) at most --max-duplicates;
  - the distinct (order, ce_omsseq, type) triples equal the timeline's;
  - each order's records are all in one partition, and, keeping the first
    delivery of each ce_id, its events come in ce_omsseq order 1, 2, ...
    without gaps (but for dead-lettered and replayed events);
  - every record's topic, key and CloudEvents headers are right, and its
    value is the outbox payload.
--validator-input FILE writes the first delivery of each event as
{type, payload, headers, key} for test/events/validate.py.
"""

import argparse
import collections
import json
import sys

REQUIRED_HEADERS = ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject",
                    "ce_dataschema", "content-type", "ce_omsaggregate", "ce_omsseq"]
MAX_DIAG = 5

failed = False


def report(label, name, ok, diags=()):
    global failed
    print(f"{'ok' if ok else 'not ok'} - {label}: {name}")
    if not ok:
        failed = True
        diags = list(diags)
        for d in diags[:MAX_DIAG]:
            print(f"# {d}")
        if len(diags) > MAX_DIAG:
            print(f"# ... and {len(diags) - MAX_DIAG} more")


def read_lines(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError as e:
                    out.append({"_unreadable": f"{path}:{n}: {e}"})
    return out


def read_ids(path):
    if not path:
        return set()
    with open(path, encoding="utf-8") as f:
        return {line.strip() for line in f if line.strip()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--label", required=True)
    p.add_argument("--consumed", required=True)
    p.add_argument("--produced", required=True)
    p.add_argument("--timeline")
    p.add_argument("--undelivered")
    p.add_argument("--late")
    p.add_argument("--topic", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--max-duplicates", type=int, default=0)
    p.add_argument("--validator-input")
    p.add_argument("--stats", help="writes 'records duplicates' here")
    a = p.parse_args()
    label = a.label

    records = read_lines(a.consumed)
    produced = read_lines(a.produced)
    undelivered = read_ids(a.undelivered)
    late = read_ids(a.late)

    bad_input = [r["_unreadable"] for r in records + produced if "_unreadable" in r]
    if bad_input:
        report(label, "inputs are JSON lines", False, bad_input)
        return 1

    by_id = {e["id"]: e for e in produced}
    orders = {e["order_id"] for e in produced}
    if not produced:
        report(label, "the run produced events", False, ["no produced events captured"])
        return 1

    # The consumer's own completeness: offsets of each partition gap-free.
    offsets = collections.defaultdict(list)
    for r in records:
        offsets[(r.get("topic"), r.get("partition"))].append(r.get("offset"))
    holes = []
    for (topic, part), offs in sorted(offsets.items(), key=lambda kv: str(kv[0])):
        offs = sorted(offs)
        if offs[0] != 0 or len(set(offs)) != len(offs) or offs[-1] + 1 != len(offs):
            holes.append(f"{topic}[{part}]: {len(offs)} records, offsets {offs[0]}..{offs[-1]}"
                         + (" (the mock broker keeps about 5 MB per partition: older records dropped?)"
                            if offs[0] != 0 else ""))
    report(label, f"the consumer read every offset from 0 ({len(records)} records, "
           f"{len(offsets)} partitions)", not holes, holes)

    # This scenario's records: keyed by one of its orders (or claiming one of its ids).
    mine = []
    for r in records:
        hdr = headers_of(r)
        if r.get("key") in orders or (isinstance(hdr, dict) and hdr.get("ce_id") in by_id):
            mine.append(r)
    mine.sort(key=lambda r: (r.get("partition"), r.get("offset")))

    seen = collections.Counter()
    first = {}
    for r in mine:
        hdr = headers_of(r)
        cid = hdr.get("ce_id") if isinstance(hdr, dict) else None
        seen[cid] += 1
        if cid not in first:
            first[cid] = r

    expected_ids = set(by_id) - undelivered
    missing = sorted(expected_ids - set(seen))
    report(label, f"every produced event was consumed ({len(expected_ids)} events, by ce_id)",
           not missing,
           [f"missing {i} ({by_id[i]['type']} seq {by_id[i]['seq']} of order {by_id[i]['order_id']})"
            for i in missing] + [f"{len(missing)} missing in all"])
    unexpected = sorted(str(i) for i in set(seen) - set(by_id))
    report(label, "no unexpected event (every consumed ce_id is a produced event)", not unexpected,
           [f"unexpected ce_id {i}" for i in unexpected])
    if undelivered:
        leaked = sorted(undelivered & set(seen))
        report(label, f"the {len(undelivered)} dead-lettered event(s) were not published", not leaked,
               [f"dead-lettered {i} is on the topic" for i in leaked])

    dups = sum(n - 1 for n in seen.values())
    dup_ids = sum(1 for n in seen.values() if n > 1)
    report(label, f"duplicates: {dups} (of {dup_ids} events), at most {a.max_duplicates}",
           dups <= a.max_duplicates,
           [f"{cid} consumed {n} times" for cid, n in seen.items() if n > 1])
    if a.stats:
        with open(a.stats, "w", encoding="utf-8") as f:
            f.write(f"{len(mine)} {dups}\n")

    if a.timeline:
        timeline = read_lines(a.timeline)
        want = {(t["order_id"], int(t["seq"]), t["type"]) for t in timeline if t["order_id"] in orders}
        want -= {(by_id[i]["order_id"], int(by_id[i]["seq"]), by_id[i]["type"]) for i in undelivered}
        got = set()
        for r in first.values():
            hdr = headers_of(r)
            try:
                got.add((r.get("key"), int(hdr.get("ce_omsseq")), hdr.get("ce_type", "")[4:]))
            except (TypeError, ValueError, AttributeError):
                got.add((r.get("key"), None, None))
        report(label, f"consumed (order, seq, type) = the timeline's status changes ({len(want)})",
               want == got,
               [f"in the timeline, not consumed: {t}" for t in sorted(want - got, key=str)[:3]] +
               [f"consumed, not in the timeline: {t}" for t in sorted(got - want, key=str)[:3]] +
               [f"{len(want - got)} missing, {len(got - want)} unexpected"])

    # Per order: one partition; first deliveries in seq order, gap-free.
    parts = collections.defaultdict(set)
    for r in mine:
        parts[r.get("key")].add(r.get("partition"))
    split = [f"order {k} in partitions {sorted(v)}" for k, v in parts.items() if len(v) > 1]
    report(label, f"each order's events are in one partition ({len(parts)} orders)", not split, split)

    expect_seq = collections.defaultdict(list)
    for e in produced:
        if e["id"] not in undelivered and e["id"] not in late:
            expect_seq[e["order_id"]].append(int(e["seq"]))
    got_seq = collections.defaultdict(list)
    for r in mine:
        hdr = headers_of(r)
        cid = hdr.get("ce_id") if isinstance(hdr, dict) else None
        if first.get(cid) is r and cid in by_id and cid not in late:
            got_seq[r.get("key")].append(int(by_id[cid]["seq"]))
    disorder = []
    for order, seqs in expect_seq.items():
        if got_seq.get(order, []) != sorted(seqs):
            disorder.append(f"order {order}: first deliveries in seq order {got_seq.get(order, [])}, "
                            f"expected {sorted(seqs)}")
    report(label, "each order's events arrive in increasing ce_omsseq, gap-free from 1 "
           "(first delivery of each ce_id)", not disorder, disorder)

    # Topic, key, headers and value of every record of this scenario.
    wrong = []
    for r in mine:
        hdr = headers_of(r)
        where = f"{r.get('topic')}[{r.get('partition')}]@{r.get('offset')}"
        if not isinstance(hdr, dict):
            wrong.append(f"{where}: {hdr}")
            continue
        e = by_id.get(hdr.get("ce_id"))
        if e is None:
            continue  # reported as unexpected above
        want = {
            "ce_specversion": "1.0",
            "ce_id": e["id"],
            "ce_source": a.source,
            "ce_type": "oms." + e["type"],
            "ce_time": e["ce_time"],
            "ce_subject": e["order_id"],
            "ce_dataschema": f"oms:events/{e['type']}/v1",
            "content-type": "application/json",
            "ce_omsaggregate": "order",
            "ce_omsseq": str(e["seq"]),
        }
        problems = [f"{k} is {hdr.get(k)!r}, expected {v!r}" for k, v in want.items() if hdr.get(k) != v]
        if r.get("topic") != a.topic:
            problems.append(f"topic {r.get('topic')!r}, expected {a.topic!r}")
        if r.get("key") != e["order_id"]:
            problems.append(f"key {r.get('key')!r}, expected the order id {e['order_id']!r}")
        try:
            if json.loads(r.get("payload") or "null") != e["payload"]:
                problems.append("value differs from the outbox payload")
        except ValueError:
            problems.append("value is not JSON")
        if problems:
            wrong.append(f"{where} ({e['type']}): " + "; ".join(problems))
    report(label, f"topic, key = ce_subject = order id, CloudEvents headers and value are right "
           f"({len(mine)} records)", not wrong, wrong)

    if a.validator_input:
        with open(a.validator_input, "w", encoding="utf-8") as f:
            for cid, r in first.items():
                e = by_id.get(cid)
                if e is None:
                    continue
                hdr = headers_of(r)
                try:
                    payload = json.loads(r.get("payload") or "null")
                except ValueError:
                    payload = r.get("payload")
                f.write(json.dumps({"type": e["type"], "payload": payload, "headers": hdr,
                                    "key": r.get("key")}) + "\n")
    return 1 if failed else 0


def headers_of(record):
    """kcat -J headers, a flat [name, value, ...] list, as a dict; a string
    describing the problem when a header is missing, repeated or malformed."""
    raw = record.get("headers")
    if not isinstance(raw, list) or len(raw) % 2:
        return f"headers not a name/value list: {raw!r}"
    out = {}
    for i in range(0, len(raw), 2):
        if raw[i] in out:
            return f"header {raw[i]!r} repeated"
        out[raw[i]] = raw[i + 1]
    absent = [h for h in REQUIRED_HEADERS if h not in out]
    if absent:
        return f"headers missing: {', '.join(absent)}"
    return out


if __name__ == "__main__":
    sys.exit(main())
