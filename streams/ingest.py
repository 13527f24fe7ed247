"""Stage 1: input topics -> decode, validate, late check, pseudonymise -> participant events (or dead letters)."""
from __future__ import annotations

import asyncio
import logging
import time

from streams import validation
from streams.metrics import DEAD_LETTERS, EVENT_LAG, EVENTS
from streams.rules import participant_key
from streams.serde import DecodeError, RegistryUnavailable

log = logging.getLogger(__name__)
DAY_MS = 86_400_000


async def dead_letter(topo, message, reason: str, detail: str) -> None:
    """Original key and bytes to the dead-letter topic, context in `dlq.*` headers (CONTRACT.md)."""
    headers = [("dlq.reason", reason.encode()), ("dlq.topic", message.topic.encode()),
               ("dlq.partition", str(message.partition).encode()), ("dlq.offset", str(message.offset).encode()),
               ("dlq.error", detail.encode()[:1000])]
    await topo.dead_letter.send(key=message.key, value=message.value, headers=headers)
    DEAD_LETTERS.labels(reason).inc()
    EVENTS.labels(message.topic, "dead_letter").inc()
    log.warning("dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)


async def decode(topo, raw: bytes | None, record_name: str) -> dict:
    """Decode, waiting out registry outages (a good record is never dead-lettered for them)."""
    delay = 0.5
    while True:
        try:
            return topo.serde.decode(raw, record_name)
        except RegistryUnavailable as exc:
            log.warning("schema registry unavailable (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30)


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
                record = await decode(topo, event.value, record_name)
                validation.check(record_name, record)
            except (DecodeError, validation.Invalid) as exc:
                await dead_letter(topo, message, exc.reason, exc.detail)
                continue
            except Exception as exc:  # a bug must not crash the agent nor lose the record
                log.exception("unexpected error decoding %s[%d]@%d", message.topic, message.partition, message.offset)
                await dead_letter(topo, message, "processing_error", type(exc).__name__)
                continue
            mark = f"{topic_name}:{message.partition}"
            watermark = topo.watermarks[mark]
            at = record["occurred_at"]
            if at < watermark - lateness_ms:
                await dead_letter(topo, message, "late",
                                  f"event time {(watermark - at) / DAY_MS:.1f} days behind this partition's clock")
                continue
            if at > watermark:
                topo.watermarks[mark] = at
            pkey = participant_key(record.pop("nik"), topo.pseudonym_key)
            record.update(kind=record_name, topic=topic_name)
            await topo.participant_events.send(key=pkey, value=record)
            EVENT_LAG.observe(max(time.time() - at / 1000, 0))
