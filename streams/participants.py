"""Stage 2: the participant table (keyed by pseudonym): dedup by event id, registration, paid-through period."""
from __future__ import annotations

from streams import rules
from streams.metrics import EVENTS


def register(topo) -> None:
    @topo.app.agent(topo.participant_events, name="participants")
    async def participants(stream):
        async for event in stream.events():
            value, key = event.value, event.key
            state, deltas, duplicate = rules.apply_event(topo.participants.get(key), value["kind"], value)
            EVENTS.labels(value["topic"], "duplicate" if duplicate else "processed").inc()
            if duplicate:
                continue
            topo.participants[key] = state
            for i, delta in enumerate(deltas):
                delta["src"] = [event.message.partition, event.message.offset, i]
                await topo.region_deltas.send(key=delta["region"], value=delta)
