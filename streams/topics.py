"""Create the CONTRACT.md topics (idempotent)."""
from __future__ import annotations

from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.error import KafkaError

from streams.config import Settings

# A week of input is replayable from the topics themselves; the warehouse keeps history beyond that.
# Retention counts from arrival (LogAppendTime), whatever timestamp a publisher sets: a backfill stamped with
# 2025 event times would otherwise be deleted by the next retention check, minutes after it was published.
INPUT_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(7 * 86_400_000),
                "message.timestamp.type": "LogAppendTime"}
ALERT_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(90 * 86_400_000), "message.timestamp.type": "LogAppendTime"}
DLQ_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(30 * 86_400_000), "message.timestamp.type": "LogAppendTime"}


def admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})


def ensure_topics(settings: Settings, timeout: float = 30) -> list[str]:
    """Create missing topics; returns the names created now."""
    t = settings.topics
    wanted = {name: INPUT_CONFIG for name in t.inputs} | {t.region_alerts: ALERT_CONFIG, t.dead_letter: DLQ_CONFIG}
    client = admin(settings)  # must outlive the futures, or librdkafka destroys the handle under them
    futures = client.create_topics(
        [NewTopic(name, settings.topic_partitions, 1, config=config) for name, config in wanted.items()],
        operation_timeout=timeout, request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout)
            created.append(name)
        except Exception as exc:
            err = exc.args[0] if exc.args else None
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise
    return created
