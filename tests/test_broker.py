"""The launcher's broker behaves as Faust needs: produce/consume with kafka-python and aiokafka, fast group
joins, exact high-watermarks and log compaction."""
from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition as AioTP
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from kafka.admin import NewTopic

from tests.conftest import unique
from tests.helpers import read_all


def create(kafka, name: str, partitions: int = 1, **config) -> str:
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs={k.replace("_", "."): str(v)
                                                                            for k, v in config.items()})])
    finally:
        admin.close()
    return name


def test_broker_is_kraft_4x_with_fast_group_settings(kafka):
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        cluster = admin.describe_cluster()
    finally:
        admin.close()
    assert [b["host"] for b in cluster["brokers"]] == ["127.0.0.1"]
    resource = ConfigResource(ResourceType.BROKER, "1")
    client = AdminClient({"bootstrap.servers": kafka.bootstrap})
    configs = {k: v.value for k, v in client.describe_configs([resource])[resource].result(30).items()}
    assert configs["process.roles"] == "broker,controller"
    assert configs["group.initial.rebalance.delay.ms"] == "0"
    assert configs["offsets.topic.replication.factor"] == "1"
    assert (kafka.workdir / "data" / "meta.properties").exists()


def test_kafka_python_produce_consume_in_order(kafka):
    topic = create(kafka, unique("kp-"), partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    sent = [(f"k{i % 5}".encode(), f"v{i}".encode()) for i in range(200)]
    for key, value in sent:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
    got = read_all(kafka.bootstrap, topic, expected=200)
    assert sorted((r.key, r.value) for r in got) == sorted(sent)
    for key in {k for k, _ in sent}:  # per key (= per partition), order is kept
        assert [r.value for r in got if r.key == key] == [v for k, v in sent if k == key]


def test_high_watermarks_match_produced_counts(kafka):
    topic = create(kafka, unique("hw-"), partitions=3)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    for i in range(301):
        producer.send(topic, key=str(i).encode(), value=b"x", partition=i % 3)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap)
    ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(3)])
    consumer.close()
    assert sorted(ends.values()) == [100, 100, 101]

    async def aio_highwaters():  # what Faust's table recovery reads
        c = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap)
        await c.start()
        try:
            tps = [AioTP(topic, p) for p in range(3)]
            return await c.end_offsets(tps)
        finally:
            await c.stop()

    assert sorted(asyncio.run(aio_highwaters()).values()) == [100, 100, 101]


def test_aiokafka_group_join_is_about_a_second(kafka):
    """Faust's consumer is aiokafka; with group.initial.rebalance.delay.ms=0 (as the broker reports) a lone member
    is assigned at once, in the group's first generation. The time is printed, not asserted (a busy machine)."""
    topic = create(kafka, unique("grp-"), partitions=4)

    async def join_and_consume() -> tuple[float, list[bytes]]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
        await producer.start()
        await producer.send_and_wait(topic, b"hello", key=b"k")
        await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, group_id=unique("g-"),
                                    auto_offset_reset="earliest")
        started = time.monotonic()
        await consumer.start()
        msg = await asyncio.wait_for(consumer.getone(), 30)
        joined = time.monotonic() - started
        assert len(consumer.assignment()) == 4
        assert consumer._coordinator.generation == 1  # one join, no extra rebalance round
        await consumer.commit()
        await consumer.stop()
        return joined, [msg.value]

    joined, values = asyncio.run(join_and_consume())
    print(f"aiokafka group join + first record: {joined:.2f}s")
    assert values == [b"hello"]
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
    resource = ConfigResource(ResourceType.BROKER, "1")
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})  # must outlive the future
    configs = admin.describe_configs([resource])[resource].result(30)
    assert configs["group.initial.rebalance.delay.ms"].value == "0"


def test_committed_offsets_resume_a_group(kafka):
    topic = create(kafka, unique("resume-"))
    group = unique("g-")
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    for i in range(10):
        producer.send(topic, value=str(i).encode())
    producer.flush()

    def consume(n: int) -> list[bytes]:
        c = KafkaConsumer(topic, bootstrap_servers=kafka.bootstrap, group_id=group, auto_offset_reset="earliest",
                          enable_auto_commit=False, consumer_timeout_ms=5000)
        out = []
        for msg in c:
            out.append(msg.value)
            if len(out) == n:
                break
        c.commit()
        c.close()
        return out

    assert consume(4) == [b"0", b"1", b"2", b"3"]
    for i in range(10, 12):
        producer.send(topic, value=str(i).encode())
    producer.flush()
    producer.close()
    assert consume(8) == [str(i).encode() for i in range(4, 12)]


def test_compacted_topic_keeps_latest_value_per_key(kafka):
    """Faust changelogs are compacted topics: after cleaning, a full read still yields the latest value of every
    key (and tombstoned keys disappear), so a table rebuilt from it is exact."""
    topic = create(kafka, unique("cmp-"), cleanup_policy="compact", segment_ms=100, min_cleanable_dirty_ratio=0.01,
                   delete_retention_ms=100, min_compaction_lag_ms=0)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    latest = {}
    for round_ in range(20):
        for k in range(10):
            key, value = f"key{k}".encode(), f"{k}:{round_}".encode()
            producer.send(topic, key=key, value=value)
            latest[key] = value
        producer.flush()
        time.sleep(0.02)
    producer.send(topic, key=b"key9", value=None)  # tombstone
    del latest[b"key9"]
    producer.flush()
    deadline = time.monotonic() + 90
    while True:
        time.sleep(2)
        # a fresh write rolls the active segment so the earlier ones become cleanable
        producer.send(topic, key=b"roll", value=b"r")
        producer.flush()
        records = read_all(kafka.bootstrap, topic)
        if len(records) < 150 or time.monotonic() > deadline:
            break
    producer.close()
    table = {}
    for r in records:
        if r.value is None:
            table.pop(r.key, None)
        else:
            table[r.key] = r.value
    table.pop(b"roll")
    assert len(records) < 150, f"no compaction happened within 90 s ({len(records)} records remain of 202+)"
    assert table == latest


def test_input_topics_keep_backfilled_records_with_old_timestamps(settings):
    """A publisher that stamps records with 2025 event times must not see them deleted by retention:
    input topics count retention from arrival (LogAppendTime)."""
    from streams.topics import ensure_topics
    ensure_topics(settings)
    topic = settings.topics.contributions
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    old = 1_735_700_000_000  # January 2025, far beyond the 7-day retention
    for i in range(20):
        producer.send(topic, key=b"k", value=str(i).encode(), timestamp_ms=old)
    producer.flush()
    producer.close()
    records = read_all(settings.kafka_bootstrap_servers, topic, expected=20)
    assert len(records) == 20
    assert all(r.timestamp > old + 86_400_000 * 300 and r.timestamp_type == 1 for r in records)  # broker time
