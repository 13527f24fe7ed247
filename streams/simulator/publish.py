"""Publish simulated events to Kafka as an upstream system would: NIK key, Confluent-framed Avro value."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
import itertools
from typing import Callable, Iterable, Iterator

from confluent_kafka import KafkaException, Producer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from streams.config import Settings
from streams.serde import AvroSerde, frame
from streams.simulator.scenario import Scenario, SimEvent

UNKNOWN_SCHEMA_ID = 0x7FFF_FFF0  # no registry hands out ids this high


@dataclass
class PublishStats:
    sent: int = 0
    by_topic: Counter = field(default_factory=Counter)
    by_expect: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def wire_value(serde: AvroSerde, topic: str, event: SimEvent) -> bytes:
    """The bytes to publish; byte-level faults break an otherwise valid encoding on purpose."""
    value = serde.encode(topic, event.record_name, event.record)
    if event.fault == "bad_framing":
        return b"\x01" + value[1:] if len(value) % 2 else value[:3]
    if event.fault == "unknown_schema_id":
        return frame(UNKNOWN_SCHEMA_ID, value[5:])
    if event.fault == "avro_decode":
        return value[: 5 + max(1, (len(value) - 5) // 3)]
    return value


class Publisher:
    """Sends events as an upstream system would, and knows what the broker did not take: librdkafka retries a
    send until ``message.timeout.ms`` (5 min by default), then drops it and tells only a delivery callback.
    Without one, events sent while a broker was away longer than that (or refused by it) were lost silently:
    ``flush`` returned with nothing left in the queue. ``failed`` counts the failures by error, and ``flush``
    raises while there are any."""

    def __init__(self, settings: Settings, serde: AvroSerde | None = None, **producer_conf):
        self.settings = settings
        self.failed: Counter = Counter()
        self.serde = serde or AvroSerde(settings.schema_registry_url)
        self.topic_for = {name: topic for topic, name in settings.topics.inputs.items()}
        self.producer = Producer({
            **settings.librdkafka_conf(),
            "enable.idempotence": True,  # no duplicates from producer retries: duplicates we send are on purpose
            "partitioner": "murmur2_random",  # the contract's partitioner (docs/contract.md), not librdkafka's CRC32
            "linger.ms": 20,
            "compression.type": "lz4",
            **producer_conf,
        })

    def send(self, event: SimEvent, partition: int | None = None) -> str:
        topic, key, value = self.wire(event)
        self.send_wire(topic, key, value, partition)
        return topic

    def wire(self, event: SimEvent) -> tuple[str, bytes, bytes]:
        """The topic, key and value bytes ``send`` publishes for ``event``."""
        topic = self.topic_for[event.record_name]
        return topic, event.key.encode(), wire_value(self.serde, topic, event)

    def send_wire(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        """Send bytes already encoded (``wire``)."""
        where = {} if partition is None else {"partition": partition}
        while True:
            try:
                # Kafka timestamp = publish time, as for a live upstream; event time travels in `occurred_at`
                self.producer.produce(topic, value=value, key=key, on_delivery=self._delivered, **where)
                break
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.1)
        self.producer.poll(0)

    def _delivered(self, err, _message) -> None:
        if err is not None:
            self.failed[err.name()] += 1

    def flush(self, timeout: float = 60) -> None:
        """Every event sent so far delivered, or ``KafkaException`` saying how many were not and why (the
        failures are then forgotten: they were reported)."""
        remaining = self.producer.flush(timeout)
        if remaining:
            raise KafkaException(f"{remaining} messages still undelivered after {timeout}s")
        if self.failed:
            failed, self.failed = self.failed, Counter()
            raise KafkaException(f"{sum(failed.values())} messages not delivered: {dict(failed)}")

    def publish(self, events: Iterable[SimEvent], rate: float = 0, stats: PublishStats | None = None,
                on_progress: Callable[[PublishStats, SimEvent], None] | None = None) -> PublishStats:
        """Send events, then wait for delivery; ``rate`` events/s (0 = as fast as possible)."""
        stats = stats or PublishStats()
        start, sent_before = time.monotonic(), stats.sent
        for event in events:
            topic = self.send(event)
            stats.sent += 1
            stats.by_topic[topic] += 1
            stats.by_expect[event.expect] += 1
            if rate:
                ahead = (stats.sent - sent_before) / rate - (time.monotonic() - start)
                if ahead > 0:
                    self.producer.poll(0)
                    time.sleep(ahead)
            if stats.sent % 250 == 0:
                if self.failed:  # a live run stops at the first loss it hears of, saying why (flush raises)
                    self.flush()
                if on_progress is not None:
                    on_progress(stats, event)
        self.flush()
        stats.seconds += time.monotonic() - start
        return stats


def run_simulation(settings: Settings, scenario: Scenario, *, months: int | None = None, rate: float = 0,
                   live_rate: float = 0, show_progress: bool = True, publisher: Publisher | None = None) -> PublishStats:
    """Replay ``months`` of history (as fast as possible, or at ``rate`` events/s); then, if ``live_rate`` is set,
    go on publishing the following months live at that rate until interrupted."""
    publisher = publisher or Publisher(settings)
    months = scenario.months if months is None else months
    t0, history_end = scenario.month_bounds(0)[0], scenario.month_bounds(months)[0]
    events = scenario.events(0 if live_rate else months)
    first_live: list[SimEvent] = []
    stats = PublishStats()

    def history() -> Iterator[SimEvent]:
        for event in events:
            if event.occurred_at >= history_end:
                first_live.append(event)
                return
            yield event

    columns = [TextColumn("[bold]{task.fields[phase]}"), BarColumn(), TextColumn("{task.completed:.1f}/{task.total} months"),
               TextColumn("{task.fields[sent]:>10,} events"), TimeElapsedColumn()]
    with Progress(*columns, disable=not show_progress) as progress:
        task = progress.add_task("", total=months, phase="history", sent=0)

        def update(st: PublishStats, event: SimEvent) -> None:
            done = (event.occurred_at - t0) / (history_end - t0) * months
            progress.update(task, completed=min(done, months), sent=st.sent)

        try:
            publisher.publish(history(), rate, stats, update)
            progress.update(task, completed=months, sent=stats.sent)
            if live_rate:
                progress.update(task, phase=f"live @ {live_rate:g} events/s", total=None)
                live = itertools.chain(first_live, events)
                publisher.publish(live, live_rate, stats, lambda st, ev: progress.update(task, sent=st.sent))
        except KeyboardInterrupt:  # stopped (Ctrl-C, SIGTERM): what was sent so far is delivered, then we go
            publisher.producer.flush(10)
            raise
    return stats
