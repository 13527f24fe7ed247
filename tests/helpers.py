"""Plain helpers for tests: read whole topics with kafka-python."""
from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition


def read_all(bootstrap: str, topic: str, expected: int | None = None, timeout: float = 30) -> list:
    """Every record of ``topic`` from the beginning up to its end offsets (or until ``expected`` have arrived)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                             consumer_timeout_ms=1000)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(partitions)
        records, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            done = all(consumer.position(tp) >= ends[tp] for tp in partitions)
            if (expected is not None and len(records) >= expected) or (expected is None and done):
                break
        return records
    finally:
        consumer.close()
