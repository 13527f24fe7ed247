"""Stage 2: the participant table (keyed by pseudonym): dedup by event id, registration, paid-through period.

Each participant-events message is a batch (streams/ingest.py). Write order, the crash-exactness argument
(docs/reliability.md, "Write order"): (1) the batch's region deltas, one message per region, are sent and
*acknowledged*; (2) then the participant states are written (Faust's changelog); (3) Faust commits the input
offset only after its producer is flushed (streams/faust_fixes.py makes that flush wait for every state write).
A crash after (1) re-reads the message: its events are not duplicates yet, the same deltas go out again with the
same ``src`` = [partition, offset, index], and the region stage applies each ``src`` once. A state can never be
durable before the deltas it caused — the order that lost updates (the re-read events were duplicates, their
deltas never came). ``force=True``: not attached to the offset commit as Faust does by default."""
from __future__ import annotations

import collections
import time

from streams import clock as clocks, rules
from streams.metrics import EVENTS
from streams.reference import regions as reference_regions
from streams.topics import acknowledged, send_batch


STARTED = time.time()  # sources restored from the changelog count as moving for a while after a (re)start


def register(topo) -> None:
    codes = reference_regions()

    @topo.app.timer(max(topo.settings.clock_idle_seconds / 3, 1.0))
    async def recheck_idle_sources():
        """Idleness is a matter of wall time: re-check each partition's clock even when no tick arrives."""
        for partition in range(topo.settings.topic_partitions):
            await topo.participant_events.send(key=None, value={"events": [{"kind": "Tick", "src": None, "at": 0}]},
                                               partition=partition)

    def write(states: dict[str, dict], clock, partition: int) -> None:
        for key, state in states.items():
            topo.participants[key] = state
        if clock is not None:
            topo.clocks[str(partition)] = clock.stored()

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
            if topo.faults.fires("participants:state-first"):  # drills only: the losing order, forced
                write(states, clock, partition)
                await topo.faults.kill("participants:state-first", topo.app.producer)
            sent = []
            for code, batch in deltas.items():
                sent += await send_batch(topo.region_deltas, "deltas", batch, key=code)
            await acknowledged(sent)
            await topo.faults.reached("participants:deltas-acked", topo.app.producer)
            write(states, clock, partition)
            await topo.faults.reached("participants:state-durable", topo.app.producer)
            for (topic, outcome), n in outcomes.items():
                EVENTS.labels(topic, outcome).inc(n)
