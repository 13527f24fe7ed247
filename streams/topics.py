"""Create the topics of docs/contract.md (idempotent)."""
from __future__ import annotations

import asyncio
import logging

from confluent_kafka import KafkaException
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
    """librdkafka's own log lines (a connection refused every 50 ms while no broker answers) go to the Python
    logger ``librdkafka``: into the process's log where one is configured, nowhere for a one-shot CLI command."""
    return AdminClient({**settings.librdkafka_conf(), "logger": logging.getLogger("librdkafka")})


# Changelogs are compacted, but the broker compacts only closed segments, and a segment closes at 1 GiB by
# default: until then a restore reads every update ever written. Every table's segments close at 1 MiB (Kafka 4's
# least): the region table writes its whole state (kilobytes) for each delta message, for just 10 keys; the
# participant table writes a participant's state once per batch that touches it (4.5 records per participant in
# the 100k-event benchmark, all of them in one 16 MiB segment per partition, so a restore read every one of them).
# A tenth of dirty records already makes a log cleanable (default: half). Tables declare these as Faust's
# ``extra_topic_configs`` (streams/app.py), which become their changelog topic's config.
CHANGELOG_CONFIG = {"cleanup.policy": "compact", "segment.bytes": str(1 << 20), "min.cleanable.dirty.ratio": "0.1"}
REPARTITION_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(7 * 86_400_000)}


def app_topics(topo) -> dict[str, dict[str, str]]:
    """The worker's own topics: repartition topics and one compacted changelog per table (with its table's
    topic config)."""
    wanted = {topic.get_topic_name(): REPARTITION_CONFIG for topic in (topo.participant_events, topo.region_deltas)}
    return wanted | {table.changelog_topic.get_topic_name(): dict(table.changelog_topic.config)
                     for table in topo.app.tables.values()}


class BrokerUnreachable(ConnectionError):
    pass


def ensure_topics(settings: Settings, timeout: float = 30, extra: dict[str, dict[str, str]] | None = None,
                  probe_seconds: float | None = None) -> list[str]:
    """Create missing topics (the contract's, plus ``extra``); returns the names created now.

    Workers create their own topics this way before joining the group: a topic that appears only after the group's
    first assignment is left unassigned by Faust's assignor ("Ignoring missing topic") until some later rebalance."""
    t = settings.topics
    wanted = {name: INPUT_CONFIG for name in t.inputs} | {t.region_alerts: ALERT_CONFIG, t.dead_letter: DLQ_CONFIG}
    wanted |= extra or {}
    client = admin(settings)  # must outlive the futures, or librdkafka destroys the handle under them
    try:
        # fail saying why when no broker answers (a command line waits ``probe_seconds``, a worker ``timeout``)
        client.list_topics(timeout=probe_seconds or timeout)
    except KafkaException as exc:
        raise BrokerUnreachable(f"no Kafka broker answered at {settings.kafka_bootstrap_servers} "
                                f"({exc.args[0].str() if exc.args else exc})") from None
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


MAX_BATCH_ITEMS = 1000  # items per internal message at most: far below the broker's 1 MB message limit


async def send_batch(topic, field: str, items: list, **kwargs) -> list:
    """Publish ``items`` on an internal topic (``faust_fixes.json_topic``) as ``{field: [...]}`` messages, in
    order, now (``force``: not deferred to the offset commit as Faust does by default). Returns the deliveries:
    awaiting them waits for the broker's acknowledgement (see ``acknowledged``)."""
    from streams.faust_fixes import json_value  # here: the command line uses this module without loading Faust
    return [await topic.send(value=json_value({field: items[i:i + MAX_BATCH_ITEMS]}), force=True, **kwargs)
            for i in range(0, len(items), MAX_BATCH_ITEMS)]


async def acknowledged(deliveries: list) -> None:
    """Wait until the broker has every message of ``deliveries`` (a failed send raises: the batch is not recorded
    as done, and the worker crashes and re-reads it rather than losing it)."""
    if deliveries:
        await asyncio.gather(*deliveries)
