#!/usr/bin/python3
"""test/payment/service.py: the test payment service behind oms.payment_provider = kafka.

    /usr/bin/python3 test/payment/service.py --bootstrap HOST:PORT[,...] \
        [--commands-topic oms.payment-commands] [--replies-topic oms.payment-replies] \
        [--group oms-test-payment-service] [--max-seconds 600] [--log FILE] \
        [--delay-ms 300] [--delay-commands charge,void,refund] [--ooo-max-ms 400] [--seed N]

Consumes payment commands (JSON value, key = payment id, CloudEvents headers
from the oms relay) in a consumer group and answers each on the replies topic
(JSON value {"correlation_id", "outcome", "reference", "message"}, key = the
payment id, headers ce_id = a message id, ce_type = oms.payment.reply,
content-type = application/json).  The answer depends on the payment method:

  test_ok            approve every command
  test_decline       decline charges; approve voids and refunds
  test_flaky         "failed" (transient) for attempts 1 and 2 (the number
                     after the last ':' of the correlation id, a leading 'c'
                     of a compensation ignored), approve later attempts
  test_hang          never answer a charge; approve voids and refunds
  test_delay         approve after --delay-ms (env OMS_PAY_DELAY_MS, default 300);
                     --delay-commands (env OMS_PAY_DELAY_COMMANDS, default
                     charge,void,refund) says which commands wait, the
                     others are approved at once
  test_duplicate     approve, and send the very same reply twice (same ce_id)
  test_out_of_order  approve after a random delay in [0, --ooo-max-ms]
                     (env OMS_PAY_OOO_MAX_MS, default 400)
  test_garbage       charges: first a reply whose value is not JSON, then the
                     real approval (same key, so same partition, later
                     offset): a consumer that is not blocked by the bad
                     message still confirms the order.  Voids/refunds approved.
  test_unknown       charges: first a well-formed approval whose correlation
                     id matches nothing, then the real approval.  Voids and
                     refunds approved.
  anything else      declined ("unknown payment method")

Idempotent by correlation id: a command seen again (a relay redelivery) gets
the same reply again, same ce_id, same reference (the ce_id is a UUIDv5 of
the correlation id, so even a restarted service answers the same).

Stops on SIGTERM/SIGINT or after --max-seconds.  Writes one line per event to
--log (default stderr), "<event> key=value ...", flushed at once:

  ready      partitions=N                    the group assigned partitions
  command    corr= cmd= method= payment= order= amount= dup=0|1 ce_id= partition= offset=
  decision   corr= cmd= method= payment= outcome=approved|declined|failed|hang|garbage|unknown delay_ms=
             (once per correlation id: tests count decisions from these)
  reply      corr= outcome= payment= ce_id= reference= kind=real|garbage|unknown partition= offset=
             (one per reply Kafka acknowledged)
  reply_error corr= error=                   a reply Kafka did not take
  bad_command partition= offset= error=      a command that is not a JSON object with the fields
  stop       reason=signal|max-seconds replies=N
"""

import argparse
import heapq
import json
import os
import random
import signal
import sys
import time
import uuid
from datetime import datetime, timezone

from confluent_kafka import Consumer, KafkaError, Producer

NS = uuid.UUID("6f6d732d-7061-796d-656e-742d73766321")  # fixed namespace for UUIDv5 ids


def now_iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Service:
    def __init__(self, args):
        self.args = args
        self.log_file = open(args.log, "a", encoding="utf-8", buffering=1) if args.log else sys.stderr
        self.running = True
        self.stop_reason = "signal"
        self.rng = random.Random(args.seed)
        self.decided = {}        # correlation id -> list of (key, value, headers, kind) to send
        self.scheduled = []      # heap of (due monotonic, seq, corr, messages)
        self.seq = 0
        self.replies = 0
        self.ready = False
        common = {"bootstrap.servers": args.bootstrap, "reconnect.backoff.max.ms": 500}
        self.consumer = Consumer(dict(common, **{
            "group.id": args.group,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 500,
            "fetch.wait.max.ms": 50,
            "topic.metadata.refresh.interval.ms": 2000,
        }))
        self.producer = Producer(dict(common, **{
            "enable.idempotence": True,
            "linger.ms": 2,
        }))

    # ------------------------------------------------------------------ log
    def log(self, event, **fields):
        parts = [event] + [f"{k}={self.clean(v)}" for k, v in fields.items()]
        self.log_file.write(" ".join(parts) + "\n")

    @staticmethod
    def clean(v):
        s = "" if v is None else str(v)
        return s.replace("\n", "\\n").replace(" ", "_")[:300]

    # -------------------------------------------------------------- replies
    def reply_message(self, key, corr, outcome, message, kind="real", id_seed=None):
        ce_id = str(uuid.uuid5(NS, id_seed or ("reply:" + corr)))
        reference = "svc-" + ce_id[:8]
        body = json.dumps({"correlation_id": corr, "outcome": outcome,
                           "reference": reference, "message": message})
        headers = self.headers(ce_id, key)
        return {"key": key, "value": body.encode(), "headers": headers, "corr": corr,
                "outcome": outcome, "ce_id": ce_id, "reference": reference, "kind": kind}

    def headers(self, ce_id, key):
        return [("ce_specversion", b"1.0"), ("ce_id", ce_id.encode()),
                ("ce_source", b"/oms-test/payment-service"), ("ce_type", b"oms.payment.reply"),
                ("ce_time", now_iso().encode()), ("ce_subject", (key or "").encode()),
                ("content-type", b"application/json")]

    def decide(self, cmd):
        """Returns (outcome for the log, delay seconds, [messages])."""
        corr, command, method, key = cmd["correlation_id"], cmd["command"], cmd["method"], cmd["payment_id"]
        last = corr.rsplit(":", 1)[-1].lstrip("c")
        attempt = int(last) if last.isdigit() else 0
        charge = command == "charge"

        def approve(msg="approved"):
            return [self.reply_message(key, corr, "approved", msg)]

        if method == "test_ok":
            return "approved", 0, approve()
        if method == "test_decline":
            if charge:
                return "declined", 0, [self.reply_message(key, corr, "declined", "card declined")]
            return "approved", 0, approve()
        if method == "test_flaky":
            if attempt <= 2:
                return "failed", 0, [self.reply_message(key, corr, "failed", "provider unavailable")]
            return "approved", 0, approve()
        if method == "test_hang":
            if charge:
                return "hang", 0, []
            return "approved", 0, approve()
        if method == "test_delay":
            if command not in self.args.delay_commands.split(","):
                return "approved", 0, approve()
            return "approved", self.args.delay_ms / 1000.0, approve("approved after a delay")
        if method == "test_duplicate":
            m = approve()
            return "approved", 0, m + m
        if method == "test_out_of_order":
            return "approved", self.rng.uniform(0, self.args.ooo_max_ms / 1000.0), approve()
        if method == "test_garbage":
            if charge:
                ce_id = str(uuid.uuid5(NS, "garbage:" + corr))
                bad = {"key": key, "value": b'{"correlation_id": "' + corr.encode() + b'", "outcome": appro',
                       "headers": self.headers(ce_id, key), "corr": corr, "outcome": "garbage",
                       "ce_id": ce_id, "reference": "", "kind": "garbage"}
                return "garbage", 0, [bad] + approve()
            return "approved", 0, approve()
        if method == "test_unknown":
            if charge:
                fake = f"{uuid.uuid5(NS, 'unknown:' + corr)}:2:1"
                unknown = self.reply_message(key, fake, "approved", "who asked?", kind="unknown",
                                             id_seed="unknown:" + corr)
                return "unknown", 0, [unknown] + approve()
            return "approved", 0, approve()
        return "declined", 0, [self.reply_message(key, corr, "declined", f"unknown payment method {method}")]

    def send(self, msgs):
        for m in msgs:
            def report(err, rec, m=m):
                if err is not None:
                    self.log("reply_error", corr=m["corr"], ce_id=m["ce_id"], error=err)
                else:
                    self.replies += 1
                    self.log("reply", corr=m["corr"], outcome=m["outcome"], payment=m["key"],
                             ce_id=m["ce_id"], reference=m["reference"], kind=m["kind"],
                             partition=rec.partition(), offset=rec.offset())
            while True:
                try:
                    self.producer.produce(self.args.replies_topic, key=m["key"], value=m["value"],
                                          headers=m["headers"], on_delivery=report)
                    break
                except BufferError:
                    self.producer.poll(0.1)
        self.producer.poll(0)

    # ------------------------------------------------------------- commands
    def handle(self, msg):
        try:
            cmd = json.loads(msg.value())
            if not isinstance(cmd, dict):
                raise ValueError("not a JSON object")
            for f in ("correlation_id", "command", "payment_id", "method"):
                if not isinstance(cmd.get(f), str):
                    raise ValueError(f"no {f}")
        except Exception as e:  # noqa: BLE001 - any bad command is logged and skipped
            self.log("bad_command", partition=msg.partition(), offset=msg.offset(), error=e)
            return
        headers = {k: (v.decode("utf-8", "replace") if v is not None else None)
                   for k, v in (msg.headers() or [])}
        corr = cmd["correlation_id"]
        dup = corr in self.decided
        self.log("command", corr=corr, cmd=cmd["command"], method=cmd["method"], payment=cmd["payment_id"],
                 order=cmd.get("order_id"), amount=cmd.get("amount"), dup=int(dup),
                 ce_id=headers.get("ce_id"), ce_type=headers.get("ce_type"),
                 partition=msg.partition(), offset=msg.offset())
        if dup:
            msgs = self.decided[corr]
            if any(s[2] == corr for s in self.scheduled):
                return  # still waiting for its delay: it will be sent once
            self.send(msgs)
            return
        outcome, delay, msgs = self.decide(cmd)
        self.decided[corr] = msgs
        self.log("decision", corr=corr, cmd=cmd["command"], method=cmd["method"], payment=cmd["payment_id"],
                 order=cmd.get("order_id"), outcome=outcome, delay_ms=int(delay * 1000))
        if delay > 0:
            self.seq += 1
            heapq.heappush(self.scheduled, (time.monotonic() + delay, self.seq, corr, msgs))
        else:
            self.send(msgs)

    def on_assign(self, consumer, partitions):
        if not self.ready:
            self.ready = True
            self.log("ready", partitions=len(partitions))

    def run(self):
        deadline = time.monotonic() + self.args.max_seconds
        self.consumer.subscribe([self.args.commands_topic], on_assign=self.on_assign)
        while self.running:
            now = time.monotonic()
            if now >= deadline:
                self.stop_reason = "max-seconds"
                break
            while self.scheduled and self.scheduled[0][0] <= now:
                _, _, _, msgs = heapq.heappop(self.scheduled)
                self.send(msgs)
            wait = 0.1
            if self.scheduled:
                wait = max(0.0, min(wait, self.scheduled[0][0] - now))
            msgs = self.consumer.consume(num_messages=100, timeout=wait)
            for m in msgs:
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        self.log("consumer_error", error=m.error())
                    continue
                self.handle(m)
            self.producer.poll(0)
        try:
            self.consumer.close()
        except Exception:  # noqa: BLE001
            pass
        left = self.producer.flush(5)
        self.log("stop", reason=self.stop_reason, replies=self.replies, unsent=left,
                 scheduled=len(self.scheduled))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--commands-topic", default="oms.payment-commands")
    p.add_argument("--replies-topic", default="oms.payment-replies")
    p.add_argument("--group", default="oms-test-payment-service")
    p.add_argument("--max-seconds", type=float, default=600)
    p.add_argument("--log")
    p.add_argument("--delay-ms", type=int, default=int(os.environ.get("OMS_PAY_DELAY_MS", "300")))
    p.add_argument("--delay-commands", default=os.environ.get("OMS_PAY_DELAY_COMMANDS", "charge,void,refund"),
                   help="the commands test_delay delays (comma list; others are approved at once)")
    p.add_argument("--ooo-max-ms", type=int, default=int(os.environ.get("OMS_PAY_OOO_MAX_MS", "400")))
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    svc = Service(args)

    def stop(signum, frame):
        svc.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    svc.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
