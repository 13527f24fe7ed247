"""Offsets the benchmark waits on: how far a topic goes, how far a consumer group is behind, and a consumer
process run until its group has committed everything."""
from __future__ import annotations

import functools
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.config import Settings
from tests.helpers import committed_by_partition


@functools.cache
def _admin(conf: tuple[tuple[str, str], ...]) -> AdminClient:
    return AdminClient(dict(conf))


def admin(settings: Settings) -> AdminClient:
    """One admin client per broker configuration for the whole benchmark: its polls (every 0.5 s) made a new
    one each, ~7.6 ms of CPU beside the measured process, and each left a ``BGQUEUE`` line on the console."""
    return _admin(tuple(sorted((k, str(v)) for k, v in settings.librdkafka_conf().items())))


def committed(settings: Settings, group: str, topics=None) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the offset ``group`` has committed (tests/helpers.py ``committed_by_partition``),
    through the benchmark's one admin client."""
    return committed_by_partition(admin(settings), group, topics)


def ends_of(settings: Settings, topics) -> dict[tuple[str, int], int]:
    """(topic, partition) -> end offset now, for every partition of ``topics``."""
    consumer = Consumer({**settings.librdkafka_conf(), "group.id": "bench-offsets"})
    try:
        metadata = consumer.list_topics(timeout=30)
        return {(t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=30)[1]
                for t in topics for p in metadata.topics[t].partitions}
    finally:
        consumer.close()


def end_offsets(settings: Settings, topics) -> int:
    """Records ever written to ``topics`` (sum of their partitions' end offsets)."""
    return sum(ends_of(settings, topics).values())


def records(settings: Settings, topics) -> Iterator:
    """Every record a full read of ``topics`` yields now (confluent-kafka messages), from each log's start."""
    ends = {tp: end for tp, end in ends_of(settings, topics).items() if end > 0}
    consumer = Consumer({**settings.librdkafka_conf(), "group.id": "bench-offsets", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(t, p, 0) for t, p in ends])  # 0: from the log start, wherever it is
        open_ = set(ends)
        while open_:
            for message in consumer.consume(10_000, timeout=5):
                if message.error():
                    open_.discard((message.topic(), message.partition()))  # end of partition
                else:
                    yield message
    finally:
        consumer.close()


def records_present(settings: Settings, topics) -> int:
    """Records a full read of ``topics`` yields now: fewer than their end offsets once compaction has run."""
    return sum(1 for _ in records(settings, topics))


def backlog(settings: Settings, group: str, topics=None, ends: dict[tuple[str, int], int] | None = None) -> int:
    """Records of ``topics`` (default: every topic ``group`` has committed on) that ``group`` has not committed
    past; a partition without a commit counts whole. ``ends``: the end offsets to measure against ((topic,
    partition) -> offset, as ``ends_of`` gave them earlier) instead of where the topics end now."""
    done = committed(settings, group)
    if ends is None:
        ends = ends_of(settings, sorted({t for t, _ in done}) if topics is None else topics)
    return sum(max(end - done.get(tp, 0), 0) for tp, end in ends.items())


def run_to_the_end(settings: Settings, command: list[str], group: str, total: int, log: Path,
                   advance: Callable[[int], None], what: str) -> float:
    """Run ``command``, a consumer in group ``group``, until the group has committed ``total`` input records and
    has no backlog on any topic it commits on (its own repartition topics too); stop it. Seconds from its start."""
    inputs = set(settings.topics.inputs)
    with open(log, "w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        seen = 0
        try:
            while True:
                if proc.poll() is not None:  # its last lines in the error: a run's work directory may be gone
                    out.flush()
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                    raise RuntimeError(f"{what} exited ({proc.returncode}): see {log}; its last lines:\n{tail}")
                try:
                    n = sum(committed(settings, group, inputs).values())
                except Exception:  # the group does not exist before its first commit
                    n = 0
                advance(max(n - seen, 0))
                seen = max(n, seen)
                if n >= total and backlog(settings, group) == 0:
                    return time.perf_counter() - started
                time.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(30)
