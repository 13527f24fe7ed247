"""Stage 1: input topics -> decode, validate, late check, pseudonymise -> participant events (or dead letters).

Records are handled in batches (``take_events``): the participant events of a batch go out as one message per
participant-events partition (a JSON list, in input order), and each input partition's watermark is written once
per batch. Per-message costs in Faust/aiokafka, not decoding, dominated the one-record-per-message design."""
from __future__ import annotations

import collections
import contextlib
import logging
import time
import weakref

from faust.streams import _current_event

from streams import validation
from streams.metrics import DEAD_LETTERS, EVENT_LAG, EVENTS
from streams.rules import DAY_MS, participant_key
from streams.serde import DecodeError
from streams.topics import send_batch

log = logging.getLogger(__name__)

HISTORY = 64  # batch ends remembered per input partition: a replay restarts from one of them (see Watermark)


def pe_partition(pkey: str, partitions: int) -> int:
    """The participant-events partition of a pseudonym (uniform: the pseudonym is an HMAC)."""
    return int(pkey[:8], 16) % partitions


async def dead_letter(topo, message, reason: str, detail: str) -> None:
    """Original key and bytes to the dead-letter topic, context in `dlq.*` headers (CONTRACT.md)."""
    headers = [("dlq.reason", reason.encode()), ("dlq.topic", message.topic.encode()),
               ("dlq.partition", str(message.partition).encode()), ("dlq.offset", str(message.offset).encode()),
               ("dlq.error", detail.encode()[:1000])]
    value = message.value
    if value is None and message.key is None:  # Kafka cannot carry a record without key and value: say so
        value, headers = b"", headers + [("dlq.null_value", b"true")]
    await topo.dead_letter.send(key=message.key, value=value, headers=headers, force=True)
    DEAD_LETTERS.labels(reason).inc()
    EVENTS.labels(message.topic, "dead_letter").inc()
    log.warning("dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, reason)


class Watermark:
    """One input partition's clock: the highest event time read so far, as a function of the offset.

    Stored once per batch with the last ``HISTORY`` batch ends ``[offset, watermark]``. A replay (restart or
    rebalance before the offset commit) starts right after a batch end, so the late check of a re-read record
    uses the same watermark as the first time: the same records are late, whatever the crash point."""

    def __init__(self, stored: dict | None):
        stored = stored or {"wm": 0, "off": -1, "h": []}
        self.wm, self.off, self.history = stored["wm"], stored["off"], [tuple(p) for p in stored["h"]]

    def rewind(self, offset: int) -> None:
        """Reading ``offset`` again: go back to the watermark after the last batch end before it (or, for a
        replay longer than the history, to none: nothing found late then)."""
        if offset <= self.off:
            self.history = [p for p in self.history if p[0] < offset]
            self.off, self.wm = self.history[-1] if self.history else (offset - 1, 0)

    def stored(self) -> dict:
        self.history = (self.history + [(self.off, self.wm)])[-HISTORY:]
        return {"wm": self.wm, "off": self.off, "h": self.history}


@contextlib.contextmanager
def routed_by(event):
    """Faust routes a table read/write (changelog and RocksDB partition) by the task's "current event"; in a batch
    that is none or any. Route by ``event`` instead (Faust's context variable: setting the stream's
    ``current_event`` would also change what ``take_events`` buffers next)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def register(topo) -> None:
    app, settings = topo.app, topo.settings
    lateness_ms = int(settings.allowed_lateness_days * DAY_MS)
    for topic_name, record_name in settings.topics.inputs.items():
        source = app.topic(topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        _agent(topo, source, topic_name, record_name, lateness_ms)


def _agent(topo, source, topic_name: str, record_name: str, lateness_ms: int) -> None:
    partitions = topo.settings.topic_partitions

    @topo.app.agent(source, name=f"ingest-{record_name.lower()}")
    async def ingest(stream):
        async for events in stream.take_events(topo.settings.batch_size, within=topo.settings.batch_seconds):
            out: dict[int, list] = collections.defaultdict(list)
            marks: dict[str, Watermark] = {}
            last: dict[str, object] = {}  # mark -> its last event in the batch
            now, latest = time.time(), topo.settings.latest_event_ms()
            for event in events:
                message = event.message
                mark = f"{topic_name}:{message.partition}"
                last[mark] = event
                wm = marks.get(mark)
                if wm is None:
                    with routed_by(event):
                        wm = marks[mark] = Watermark(topo.watermarks.get(mark))
                    wm.rewind(message.offset)
                wm.off = message.offset  # read: whatever becomes of it, a replay starts after it
                try:
                    record = await topo.serde.decode_waiting(event.value, record_name)
                    validation.check(record_name, record, latest)
                except (DecodeError, validation.Invalid) as exc:
                    await dead_letter(topo, message, exc.reason, exc.detail)
                    continue
                except Exception as exc:  # a bug must not crash the agent nor lose the record
                    log.exception("unexpected error decoding %s[%d]@%d", message.topic, message.partition,
                                  message.offset)
                    await dead_letter(topo, message, "processing_error", type(exc).__name__)
                    continue
                at, before = record["occurred_at"], wm.wm
                if at < before - lateness_ms:
                    await dead_letter(topo, message, "late",
                                      f"event time {(before - at) / DAY_MS:.1f} days behind this partition's clock")
                    continue
                wm.wm = max(before, at)
                pkey = participant_key(record.pop("nik"), topo.pseudonym_key)
                record.update(kind=record_name, topic=topic_name, key=pkey)
                out[pe_partition(pkey, partitions)].append(record)
                if at // DAY_MS > before // DAY_MS:
                    # this partition's clock entered a new day: a watermark to every participant-events partition,
                    # behind the records of this source before it ("everything from it before ``at`` is on its way")
                    for p in range(partitions):
                        out[p].append({"kind": "Tick", "src": mark, "at": at})
                EVENT_LAG.observe(max(now - at / 1000, 0))
            for p, batch in sorted(out.items()):
                await send_batch(topo.participant_events, "events", batch, key=None, partition=p)
            for mark, wm in marks.items():
                with routed_by(last[mark]):
                    topo.watermarks[mark] = wm.stored()
