"""Stage 2: the participant table (keyed by pseudonym): dedup by event id, registration, paid-through period.

Each participant-events message is a batch (streams/ingest.py). Its region deltas go out as one message per
region, with ``force=True``: Faust otherwise "attaches" a send to the event being processed and publishes it only
when that event's offset is committed; a rebalance between the table write (changelog, flushed on revoke) and
that commit dropped the attached deltas, and the re-read event was then a duplicate: an update lost (seen with
two workers). Every delta carries ``src`` = [partition, offset, index] of what produced it, so the region stage
applies a re-sent delta once."""
from __future__ import annotations

import collections
import time

from streams import clock as clocks, rules
from streams.metrics import EVENTS
from streams.reference import regions as reference_regions
from streams.topics import send_batch


STARTED = time.time()  # sources restored from the changelog count as moving for a while after a (re)start


def register(topo) -> None:
    codes = reference_regions()

    @topo.app.timer(max(topo.settings.clock_idle_seconds / 3, 1.0))
    async def recheck_idle_sources():
        """Idleness is a matter of wall time: re-check each partition's clock even when no tick arrives."""
        for partition in range(topo.settings.topic_partitions):
            await topo.participant_events.send(key=None, value={"events": [{"kind": "Tick", "src": None, "at": 0}]},
                                               partition=partition)

    @topo.app.agent(topo.participant_events, name="participants")
    async def participants(stream):
        async for event in stream.events():
            partition, offset = event.message.partition, event.message.offset
            states: dict[str, dict] = {}
            deltas: dict[str, list] = collections.defaultdict(list)
            outcomes: collections.Counter = collections.Counter()
            clock = None  # this partition's clock, once a tick changed it
            index = 0
            for value in event.value["events"]:
                if value["kind"] == "Tick":
                    now = time.time()
                    clock, forward = clocks.fold_source_tick(
                        clock or clocks.SourceClock.from_stored(topo.clocks.get(str(partition)), now), value["src"],
                        value["at"], topo.input_partitions, now, STARTED, topo.settings.clock_idle_seconds)
                    if forward is not None:
                        for code in codes:
                            deltas[code].append({"k": "tick", "at": forward, "src": [partition, offset, index]})
                            index += 1
                    continue
                key = value["key"]
                state = states[key] if key in states else topo.participants.get(key)
                state, new, duplicate = rules.apply_event(state, value["kind"], value)
                outcomes[value["topic"], "duplicate" if duplicate else "processed"] += 1
                if duplicate:
                    continue
                for delta in new:
                    delta["src"] = [partition, offset, index]
                    index += 1
                    deltas[delta["region"]].append(delta)
                states[key] = state
            for code, batch in deltas.items():
                await send_batch(topo.region_deltas, "deltas", batch, key=code)
            # the states after the deltas: should the worker die in between, the events are not duplicates when
            # re-read, their deltas go out again with the same src and the region stage applies them once.
            for key, state in states.items():
                topo.participants[key] = state
            if clock is not None:
                topo.clocks[str(partition)] = clock.stored()
            for (topic, outcome), n in outcomes.items():
                EVENTS.labels(topic, outcome).inc(n)
