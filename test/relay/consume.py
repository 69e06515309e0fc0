#!/usr/bin/python3
"""test/relay/consume.py: a Kafka consumer that survives broker outages.

    /usr/bin/python3 test/relay/consume.py BOOTSTRAP TOPIC OUTFILE

Reads every partition of TOPIC from the beginning, without a consumer group
(partitions assigned, nothing committed), and appends each record to OUTFILE
as one JSON line in the format of "kcat -C -J": topic, partition, offset,
headers (flat [name, value, ...] list), key, payload.  Runs until it is
terminated.  kcat exits when every broker is down ("All broker connections
are down: terminating"); this keeps polling, so a suite that takes the
brokers down mid-run still sees every record once they are back.
Errors go to stderr; the suite judges completeness by comparing OUTFILE's
offsets with the partitions' high watermarks.
"""

import json
import signal
import sys

from confluent_kafka import Consumer, KafkaException, TopicPartition, OFFSET_BEGINNING


def text(b):
    return None if b is None else b.decode("utf-8", "replace")


def main():
    bootstrap, topic, outfile = sys.argv[1:4]
    running = [True]

    def stop(signum, frame):
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "oms-relay-tests",   # required by the client; never joined
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest",
        "reconnect.backoff.max.ms": 500,
        "fetch.wait.max.ms": 100,
    })
    partitions = None
    while running[0] and partitions is None:
        try:
            md = c.list_topics(topic, timeout=5)
            t = md.topics.get(topic)
            if t is not None and t.error is None and t.partitions:
                partitions = sorted(t.partitions)
        except KafkaException as e:
            print(f"consume.py: metadata: {e}", file=sys.stderr)
    if partitions is None:
        return 0
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    with open(outfile, "a", encoding="utf-8", buffering=1) as out:
        while running[0]:
            msgs = c.consume(num_messages=500, timeout=0.2)
            for m in msgs:
                if m.error():
                    print(f"consume.py: {m.error()}", file=sys.stderr)
                    continue
                flat = []
                for name, value in (m.headers() or []):
                    flat += [name, text(value)]
                out.write(json.dumps({
                    "topic": m.topic(), "partition": m.partition(), "offset": m.offset(),
                    "headers": flat, "key": text(m.key()), "payload": text(m.value()),
                }, separators=(",", ":")) + "\n")
    c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
