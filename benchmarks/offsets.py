"""Offsets the benchmark waits on: how far a topic goes, how far a consumer group is behind."""
from __future__ import annotations

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.config import Settings


def _ends(settings: Settings, topics) -> dict[tuple[str, int], int]:
    consumer = Consumer({**settings.librdkafka_conf(), "group.id": "bench-offsets"})
    try:
        metadata = consumer.list_topics(timeout=30)
        return {(t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=30)[1]
                for t in topics for p in metadata.topics[t].partitions}
    finally:
        consumer.close()


def end_offsets(settings: Settings, topics) -> int:
    """Records ever written to ``topics`` (sum of their partitions' end offsets)."""
    return sum(_ends(settings, topics).values())


def backlog(settings: Settings, group: str, topics=None) -> int:
    """Records of ``topics`` (default: every topic ``group`` has committed on) that ``group`` has not committed
    past; a partition without a commit counts whole."""
    admin = AdminClient(settings.librdkafka_conf())  # kept alive until the future resolves
    committed = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in
                 admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result()
                 .topic_partitions}
    topics = sorted({t for t, _ in committed}) if topics is None else topics
    return sum(end - committed.get(tp, 0) for tp, end in _ends(settings, topics).items())
