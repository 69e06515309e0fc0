#!/usr/bin/python3
"""test/payment/offsets.py: committed offsets of a consumer group on a topic.

    /usr/bin/python3 test/payment/offsets.py BOOTSTRAP GROUP TOPIC

Prints one line per partition, "<partition> <committed> <high watermark>"
(committed -1 when the group committed nothing there), without joining the
group (an OffsetFetch only).  Exit status 1 when the broker did not answer.
"""

import sys

from confluent_kafka import Consumer, KafkaException, TopicPartition


def main():
    bootstrap, group, topic = sys.argv[1:4]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            print(f"offsets.py: no topic {topic}", file=sys.stderr)
            return 1
        parts = [TopicPartition(topic, p) for p in sorted(t.partitions)]
        committed = c.committed(parts, timeout=10)
        for tp in committed:
            _, high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            print(tp.partition, tp.offset if tp.offset >= 0 else -1, high)
    except KafkaException as e:
        print(f"offsets.py: {e}", file=sys.stderr)
        return 1
    finally:
        c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
