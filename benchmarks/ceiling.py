"""The ceiling: the best a Python consumer does here — read every input record with confluent-kafka (librdkafka,
batched ``consume``) and decode it with fastavro (the project's serde: framing check, cached writer schema,
schema resolution). No validation, no state, no output."""
from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition

from streams.config import Settings
from streams.serde import AvroSerde


def run(settings: Settings, total: int, advance: Callable[[int], None] = lambda n: None) -> dict:
    serde = AvroSerde(settings.schema_registry_url)
    names = dict(settings.topics.inputs)  # topic -> record name
    consumer = Consumer({**settings.librdkafka_conf(), "group.id": "bench-ceiling", "enable.auto.commit": False,
                         "fetch.max.bytes": 52_428_800, "queued.max.messages.kbytes": 262_144})
    metadata = consumer.list_topics(timeout=30)
    consumer.assign([TopicPartition(t, p, 0) for t in names for p in metadata.topics[t].partitions])
    done = errors = 0
    started = time.perf_counter()
    try:
        while done < total:
            batch = consumer.consume(10_000, timeout=1.0)
            for message in batch:
                if message.error():
                    errors += 1
                    continue
                serde.decode(message.value(), names[message.topic()])
            done += len(batch)
            advance(len(batch))
        seconds = time.perf_counter() - started
    finally:
        consumer.close()
    return {"events": done, "seconds": round(seconds, 2), "events_per_s": round(done / seconds), "errors": errors}
