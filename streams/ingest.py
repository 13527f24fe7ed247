"""Stage 1: input topics -> decode, validate, late check, pseudonymise -> participant events (or dead letters)."""
from __future__ import annotations

import logging
import time

from streams import validation
from streams.metrics import DEAD_LETTERS, EVENT_LAG, EVENTS
from streams.rules import DAY_MS, participant_key
from streams.serde import DecodeError

log = logging.getLogger(__name__)


async def dead_letter(topo, message, reason: str, detail: str) -> None:
    """Original key and bytes to the dead-letter topic, context in `dlq.*` headers (CONTRACT.md)."""
    headers = [("dlq.reason", reason.encode()), ("dlq.topic", message.topic.encode()),
               ("dlq.partition", str(message.partition).encode()), ("dlq.offset", str(message.offset).encode()),
               ("dlq.error", detail.encode()[:1000])]
    await topo.dead_letter.send(key=message.key, value=message.value, headers=headers)
    DEAD_LETTERS.labels(reason).inc()
    EVENTS.labels(message.topic, "dead_letter").inc()
    log.warning("dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)


async def tick(topo, source: str, at: int) -> None:
    """A watermark to every participant-events partition, behind the records of ``source`` sent before it
    (one producer keeps per-partition order): "everything from ``source`` before ``at`` is on its way"."""
    for partition in range(topo.settings.topic_partitions):
        await topo.participant_events.send(key=None, value={"kind": "Tick", "src": source, "at": at},
                                           partition=partition, force=True)


def register(topo) -> None:
    app, settings = topo.app, topo.settings
    lateness_ms = int(settings.allowed_lateness_days * DAY_MS)
    for topic_name, record_name in settings.topics.inputs.items():
        source = app.topic(topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        _agent(topo, source, topic_name, record_name, lateness_ms)


def _agent(topo, source, topic_name: str, record_name: str, lateness_ms: int) -> None:
    @topo.app.agent(source, name=f"ingest-{record_name.lower()}")
    async def ingest(stream):
        async for event in stream.events():
            message = event.message
            try:
                record = await topo.serde.decode_waiting(event.value, record_name)
                validation.check(record_name, record)
            except (DecodeError, validation.Invalid) as exc:
                await dead_letter(topo, message, exc.reason, exc.detail)
                continue
            except Exception as exc:  # a bug must not crash the agent nor lose the record
                log.exception("unexpected error decoding %s[%d]@%d", message.topic, message.partition, message.offset)
                await dead_letter(topo, message, "processing_error", type(exc).__name__)
                continue
            # per input partition: [highest event time, highest offset] seen. A record at an offset already
            # covered is a replay (rebalance, restart before commit): not late, the event-id dedup decides.
            mark = f"{topic_name}:{message.partition}"
            watermark, covered = topo.watermarks.get(mark) or (0, -1)
            at, new_day = record["occurred_at"], False
            if message.offset > covered:
                if at < watermark - lateness_ms:
                    topo.watermarks[mark] = [watermark, message.offset]
                    await dead_letter(topo, message, "late",
                                      f"event time {(watermark - at) / DAY_MS:.1f} days behind this partition's clock")
                    continue
                topo.watermarks[mark] = [max(watermark, at), message.offset]
                new_day = at // DAY_MS > watermark // DAY_MS  # this partition's clock entered a new day
            pkey = participant_key(record.pop("nik"), topo.pseudonym_key)
            record.update(kind=record_name, topic=topic_name)
            # force: sent now, in processing order (Faust would otherwise defer it to the offset commit, in no
            # particular order among one record's sends, and a tick could overtake the record it follows)
            await topo.participant_events.send(key=pkey, value=record, force=True)
            if new_day:
                await tick(topo, mark, at)
            EVENT_LAG.observe(max(time.time() - at / 1000, 0))
