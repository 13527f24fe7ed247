"""Late data is data (issue: worker v2): a stock client uploads a backlog shuffled over 90 days; every valid
record counts in the live tables, nothing is dead-lettered as late, and lateness is reported exactly."""
from __future__ import annotations

import collections
import json
import random

from confluent_kafka import Producer
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from kafka.partitioner.default import murmur2

from streams.config import Settings
from streams.serde import contract_schemas, registry_client
from streams.simulator import Scenario
from streams.topics import ensure_topics
from tests.conftest import unique
from tests.expected import expected_regions, partition_clocks
from tests.helpers import read_all
from tests.worker import Worker

DAY = 86_400_000
SCALE = 0.01


def publish_shuffled(settings: Settings, events, days: int, seed: int) -> dict[tuple[str, int], list]:
    """Publish like an office uploading a backlog: each record displaced by up to ``days`` of event time, with
    stock confluent-kafka (its default partitioner) and ``AvroSerializer``. Returns the events per
    (topic, partition) in offset order, as the broker acknowledged them."""
    rng = random.Random(seed)
    shuffled = sorted(events, key=lambda e: e.occurred_at + rng.uniform(0, days * DAY))
    ensure_topics(settings)
    # a bounded wait per request: a registry call that hung under CI load once held this test for its 300 s limit
    registry = registry_client(settings.schema_registry_url, timeout=20, retries=5)
    schemas = contract_schemas()
    topic_of = {name: topic for topic, name in settings.topics.inputs.items()}
    serializers = {name: AvroSerializer(registry, json.dumps(schemas[name])) for name in topic_of}
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers})
    placed: dict[tuple[str, int], list] = collections.defaultdict(list)

    def delivered(event):
        def callback(err, msg):
            assert err is None, err
            placed[(msg.topic(), msg.partition())].append((msg.offset(), event))
        return callback

    for event in shuffled:
        topic = topic_of[event.record_name]
        context = SerializationContext(topic, MessageField.VALUE)
        for attempt in range(3):  # the first record of each type registers its schema: retried on a timeout
            try:
                value = serializers[event.record_name](event.record, context)
                break
            except Exception:  # a timed-out request (the client wraps requests or httpx: either's error)
                if attempt == 2:
                    raise
        producer.produce(topic, key=event.key.encode(), value=value, on_delivery=delivered(event))
        producer.poll(0)
    assert producer.flush(30) == 0
    return {tp: [e for _, e in sorted(records, key=lambda r: r[0])] for tp, records in placed.items()}


def test_a_backlog_shuffled_over_90_days_counts_in_full(kafka, registry, tmp_path):
    events = list(Scenario.load(scale=SCALE, seed=21).events(6))
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, schema_registry_url=registry.url,
                        topic_prefix=unique() + ".", topic_partitions=3, state_dir=tmp_path / "state",
                        app_id=unique("app-"), target_scale=SCALE)
    placed = publish_shuffled(settings, events, days=90, seed=3)
    front, late = partition_clocks({tp: [e.occurred_at for e in es] for tp, es in placed.items()},
                                   int(settings.allowed_lateness_days * DAY))
    late_events = [placed[tp][i] for tp, i in late]
    assert len(late_events) > 100  # the shuffle really puts records more than 45 days behind their partition

    worker = Worker(settings, tmp_path / "worker.log").start()
    try:
        worker.wait(lambda: worker.events_accounted().get("processed", 0) >= len(events), 180,
                    "every record processed")
        # folded in the order the broker holds them: a worker's two registrations (a move to a wage job) count
        # in the order they were published (docs/domain.md "Moving to wage employment")
        expected = expected_regions([e for es in placed.values() for e in es], scale=SCALE, clock_ms=front)
        want_late = collections.Counter(e.record["region_code"] for e in late_events)
        # registrations count in the region they name, contributions and claims too (the scenario keeps people
        # in their region); the figures read at the clock of the most advanced partition (all idle at the end)
        worker.wait(lambda: worker.comparable_regions() == expected
                    and {c: v["late"]["events"] for c, v in worker.regions().items() if v["late"]["events"]}
                    == dict(want_late), 120, "tables equal to the fold of every record, late ones included")
        assert worker.events_accounted() == {"processed": len(events)}
        assert read_all(settings.kafka_bootstrap_servers, settings.topics.dead_letter) == []
        late_metric = sum(v for (name, _), v in worker.metrics().items() if name == "jamsostek_late_events_total")
        assert late_metric == len(late_events)
        # a stock librdkafka client hashes keys with CRC32, not the contract's murmur2: the records it put on
        # another partition than murmur2 gives their NIK are counted (kafka-python's murmur2 as the reference)
        want = collections.Counter(topic for (topic, partition), es in placed.items() for e in es
                                   if (murmur2(e.key.encode()) & 0x7FFFFFFF) % settings.topic_partitions != partition)
        got = {dict(labels)["topic"]: v for (name, labels), v in worker.metrics().items()
               if name == "jamsostek_misplaced_records_total" and v}
        assert got == dict(want) and sum(want.values()) > len(events) / 2
    finally:
        worker.stop()
