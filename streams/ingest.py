"""Stage 1: input topics -> decode, validate, pseudonymise, clock -> participant events (or dead letters).

Records arrive in batches: each Faust event is one input partition's fetched records, up to ``BATCH_SIZE``
(streams/faust_fixes.py ``deliver_in_batches``), and the stage takes up to ``EVENTS_AT_ONCE`` of them together. The
participant events of a batch go out as one message per participant-events partition (a JSON list, in input
order), and each input partition's watermark is written, and passed on as a tick, at most once per batch.
Per-record costs in Faust, not decoding, dominated: one Faust event per record cost the worker ~2.3x the CPU (100k
backlog: 53 s → 24 s of worker CPU, 1,757 → 3,137 events/s).

Late data is data: a valid record far behind its partition's clock (streams/clock.py) is flagged ``late`` and
counted, and goes on like any other. Only invalid records are dead-lettered."""
from __future__ import annotations

import collections
import logging
import time

from streams import demography, occupation, partitioner, privacy, validation
from streams.clock import DAY_MS, PartitionClock
from streams.faust_fixes import deliver_in_batches, routed_by
from streams.metrics import DEAD_LETTERS, EVENT_LAG, EVENTS, LATE_EVENTS, MISPLACED
from streams.rules import participant_key
from streams.serde import DecodeError
from streams.topics import acknowledged, send_batch

log = logging.getLogger(__name__)


def pe_partition(pkey: str, partitions: int) -> int:
    """The participant-events partition of a pseudonym (uniform: the pseudonym is an HMAC)."""
    return int(pkey[:8], 16) % partitions


async def dead_letter(topo, message, reason: str, detail: str) -> None:
    """Original key and bytes to the dead-letter topic, context in `dlq.*` headers (CONTRACT.md). The detail is
    scrubbed: the original bytes stay in the (restricted) dead-letter topic for replay, never in its headers."""
    detail = privacy.scrubbed(detail, "dead_letter")
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


def dead_letter_changelog_record(topo, message, reason: str) -> None:
    """A table's changelog record that cannot be restored (faust_fixes.dead_letter_undecodable): its bytes to the
    dead-letter topic (reason ``undecodable_changelog``, the changelog's topic, partition and offset in the
    headers), counted and logged; the key keeps the state of its earlier records. Synchronous (called while a
    restore applies a batch): Faust's producer buffer sends it. A restore before the broker compacted the record
    away finds it again, and dead-letters it again."""
    headers = [("dlq.reason", b"undecodable_changelog"), ("dlq.topic", message.topic.encode()),
               ("dlq.partition", str(message.partition).encode()), ("dlq.offset", str(message.offset).encode()),
               ("dlq.error", privacy.scrubbed(reason, "dead_letter").encode()[:1000])]
    topo.dead_letter.send_soon(key=message.key, value=b"" if message.value is None else message.value,
                               headers=headers, force=True)
    DEAD_LETTERS.labels("undecodable_changelog").inc()
    log.error("changelog record %s[%d]@%d not restored (%s): dead-lettered", message.topic, message.partition,
              message.offset, reason)


#: partition batches (faust_fixes.RecordBatch, each one fetch's records of a partition) handled together at most
EVENTS_AT_ONCE = 16


def _records(events):
    """Each record of each partition batch, with the batch's event (what a table write of it is routed by)."""
    for event in events:
        for record in event.value:
            yield event, record


async def agent(topo, inputs: dict[str, str], stream):
    """The ingest agent, one for all the input topics (``inputs``: topic -> record name): batches of their
    partitions' fetched records, each record decoded, validated, pseudonymised and sent on (or dead-lettered);
    then each partition's clock written. Yields, per batch, the events taken and the records they held (Faust's
    agent results: what a test of the agent reads)."""
    partitions = topo.settings.topic_partitions
    lateness_ms = int(topo.settings.allowed_lateness_days * DAY_MS)
    # each event is a partition's fetched records (faust_fixes.deliver_in_batches); a few of them at once
    async for events in stream.take_events(EVENTS_AT_ONCE, within=topo.settings.batch_seconds):
        out: dict[int, list] = collections.defaultdict(list)
        marks: dict[str, PartitionClock] = {}
        last: dict[str, object] = {}  # mark -> its last event in the batch
        ticks: dict[str, int] = {}  # mark -> its clock, if it entered a new day in the batch
        now, latest = time.time(), topo.settings.latest_event_ms()
        lags = []  # seconds from event time to now, one per valid record: observed together
        await topo.serde.fetch_writers(message.value for _, message in _records(events))  # off the loop
        # placed as the contract's partitioner places its key? (counted, not acted on)
        for topic, misplaced in partitioner.misplaced([m for _, m in _records(events)], partitions).items():
            MISPLACED.labels(topic).inc(misplaced)
        for event, message in _records(events):
            topic_name = message.topic
            record_name = inputs[topic_name]
            mark = f"{topic_name}:{message.partition}"
            last[mark] = event
            clock = marks.get(mark)
            if clock is None:
                with routed_by(event):
                    clock = marks[mark] = PartitionClock.from_stored(topo.watermarks.get(mark))
                clock.rewind(message.offset)
            clock.skip(message.offset)  # read: whatever becomes of it, a replay starts after it
            try:
                record = await topo.serde.decode_waiting(message.value, record_name)
                validation.check(record_name, record, latest)
            except (DecodeError, validation.Invalid) as exc:
                await dead_letter(topo, message, exc.reason, exc.detail)
                continue
            except Exception as exc:  # a bug must not crash the agent nor lose the record
                log.exception("unexpected error decoding %s[%d]@%d", message.topic, message.partition,
                              message.offset)
                await dead_letter(topo, message, "processing_error", type(exc).__name__)
                continue
            at = record["occurred_at"]
            seen = clock.observe(message.offset, at, lateness_ms)
            nik = record.pop("nik")
            if record_name == "Registration":  # coarse attributes only; the NIK and free text go no further
                record["demo"] = [*demography.from_nik(nik, record["region_code"], at),
                                  occupation.normalise(record.pop("occupation"))]
            pkey = participant_key(nik, topo.pseudonym_key)
            privacy.scrub_record(record_name, record, "record")
            record.update(kind=record_name, topic=topic_name, key=pkey)
            if seen.late:
                record["late"] = 1
                LATE_EVENTS.labels(topic_name).inc()
            out[pe_partition(pkey, partitions)].append(record)
            if seen.tick is not None:
                ticks[mark] = seen.tick
            lags.append(max(now - at / 1000, 0))
        EVENT_LAG.observe_many(lags)
        for mark, at in ticks.items():
            # a partition's clock entered a new day: one watermark per batch (where the batch left the clock)
            # to every participant-events partition, behind every record of the batch ("everything from this
            # source before ``at`` is on its way"). A backlog's batch spans days: a tick per day crossed cost
            # every participant and region stage a clock fold and every region a stall evaluation each.
            for p in range(partitions):
                out[p].append({"kind": "Tick", "src": mark, "at": at})
        sent = []  # acknowledged before the clocks that record them are written (participants.py)
        for p, batch in sorted(out.items()):
            sent += await send_batch(topo.participant_events, "events", batch, key=None, partition=p)
        await acknowledged(sent)
        await topo.faults.reached("ingest:events-acked", topo.app.producer)
        for mark, clock in marks.items():
            with routed_by(last[mark]):
                topo.watermarks[mark] = clock.stored()
        yield len(events), sum(len(event.value) for event in events)


def register(topo) -> None:
    """One agent for the three input topics (one channel): each takes a few partition batches at a time, so three
    agents made three times the batches, each with its own acknowledgement wait and clock writes — one agent ran a
    1M backlog in 52.5 s against 56.9 s on average of four alternating pairs (worker CPU 36.4 against 40.2 s,
    2026-11-28; README "Benchmark": about the size of the noise, in the direction expected)."""
    inputs = dict(topo.settings.topics.inputs)
    source = deliver_in_batches(topo.app, list(inputs), topo.settings.batch_size)  # a RecordBatch per event
    topo.add_agent("ingest", source, agent, inputs)
