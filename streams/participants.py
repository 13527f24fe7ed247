"""Stage 2: the participant table (keyed by pseudonym): dedup by event id, registration, paid-through period.

Region deltas are sent with ``force=True``: Faust otherwise "attaches" a send to the event being processed and
publishes it only when that event's offset is committed. A rebalance between the table write (changelog,
flushed on revoke) and that commit dropped the attached deltas, and the re-read event was then a duplicate:
an update lost (seen with two workers)."""
from __future__ import annotations

import time

from streams import rules
from streams.metrics import EVENTS
from streams.reference import regions as reference_regions


STARTED = time.time()  # sources restored from the changelog count as moving for a while after a (re)start


async def forward_tick(topo, event) -> None:
    """Fold a source partition's watermark into this partition's low watermark; when that enters a new day,
    pass it on to every region (behind the deltas this partition sent before).

    Every input partition counts as a source from the start, so the clock does not run ahead on the partitions
    that happen to be read first; one that never ticks (empty) or stops ticking is idle after
    ``clock_idle_seconds``. A tick without a source is the periodic re-check that notices idleness."""
    partition, value, now = event.message.partition, event.value, time.time()
    clock = topo.clocks.get(str(partition)) or {"src": {}, "sent": 0, "since": now}
    sources = {src: (mark, max(seen, STARTED)) for src, (mark, seen) in clock["src"].items()}
    if value["src"] is not None and value["at"] > sources.get(value["src"], (0, 0))[0]:
        sources[value["src"]] = (value["at"], now)
    since = max(clock["since"], STARTED)
    not_yet = [(0, since) for src in topo.input_partitions if src not in sources]
    low = rules.low_watermark([*sources.values(), *not_yet], now, topo.settings.clock_idle_seconds)
    sent = clock["sent"]
    if low // rules.DAY_MS > sent // rules.DAY_MS:
        for i, code in enumerate(reference_regions()):
            await topo.region_deltas.send(key=code, value={"k": "tick", "at": low,
                                                           "src": [partition, event.message.offset, i]},
                                          force=True)
        sent = low
    topo.clocks[str(partition)] = {"src": sources, "sent": sent, "since": since}


def register(topo) -> None:
    @topo.app.timer(max(topo.settings.clock_idle_seconds / 3, 1.0))
    async def recheck_idle_sources():
        """Idleness is a matter of wall time: re-check each partition's clock even when no tick arrives."""
        for partition in range(topo.settings.topic_partitions):
            await topo.participant_events.send(key=None, value={"kind": "Tick", "src": None, "at": 0},
                                               partition=partition)

    @topo.app.agent(topo.participant_events, name="participants")
    async def participants(stream):
        async for event in stream.events():
            value, key = event.value, event.key
            if value["kind"] == "Tick":
                await forward_tick(topo, event)
                continue
            state, deltas, duplicate = rules.apply_event(topo.participants.get(key), value["kind"], value)
            EVENTS.labels(value["topic"], "duplicate" if duplicate else "processed").inc()
            if duplicate:
                continue
            for i, delta in enumerate(deltas):
                delta["src"] = [event.message.partition, event.message.offset, i]
                await topo.region_deltas.send(key=delta["region"], value=delta, force=True)
            # the state after the deltas: should the worker die in between, the event is not a duplicate when
            # re-read, its deltas go out again with the same src and the region stage applies them once
            topo.participants[key] = state
