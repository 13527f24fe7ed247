"""Stage 3: per-region aggregates in a table partitioned by region (read everywhere through read_model.py), and
stall detection on the region's low watermark (streams/stall.py), raising alerts through sinks/alerts.py.

Each message is a batch of one region's deltas from one participant-events message; the agent takes messages in
batches too (``take_events``) and applies all of a region's deltas in a batch on one copy of its state, written
once: the state (days of stall history) is far larger than a batch of deltas, so its copy, its JSON changelog
record and every worker's read-model decode of that record are paid per write, not per delta."""
from __future__ import annotations

from sinks import alerts
from streams import rules, stall
from streams.ingest import routed_by
from streams.metrics import CLAIMS_PAID
from streams.reference import reference
from streams.topics import delivered


def register(topo) -> None:
    ref = reference()
    settings = topo.settings
    end_day = stall.month_day(ref.programme_end)
    partitions = settings.topic_partitions

    @topo.app.agent(topo.region_deltas, name="regions")
    async def region_agent(stream):
        async for events in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            # per region, in offset order: its deltas of the whole batch and the message that routes its table I/O
            batches: dict[str, tuple[object, list]] = {}
            for event in events:
                deltas = batches[event.key][1] if event.key in batches else []
                deltas.extend(event.value["deltas"])
                batches[event.key] = (event, deltas)
            for code, (last, deltas) in batches.items():
                await _apply(code, last, deltas)

    async def _apply(code: str, last, deltas: list[dict]) -> None:
        region = ref.regions[code]
        with routed_by(last):
            stats = rules.copy_region(topo.regions.get(code))
        transitions, paid, changed = [], [], False
        for delta in deltas:
            partition, offset, index = delta["src"]
            # a replayed delta (participant stage re-run after a crash) is applied once
            if [offset, index] <= stats["applied"].get(str(partition), [-1, -1]):
                continue
            rules.apply_delta_in_place(stats, delta, region, settings.target_scale)
            changed = True
            stats["applied"][str(partition)] = [offset, index]
            if delta["k"] == "tick" and len(stats["wm"]) >= partitions:  # every source partition has a clock
                transitions += stall.advance(stats, region, min(stats["wm"].values()), settings.stall,
                                             settings.grace_months, settings.target_scale, end_day)
            elif delta["k"] == "claim" and delta["status"] == "PAID":
                paid.append(delta)
        if not changed:
            return  # all replayed
        # acknowledged before the state that records them (see participants.py)
        await delivered([await alerts.publish(topo, alert) for alert in transitions])
        with routed_by(last):
            topo.regions[code] = stats
        for delta in paid:
            CLAIMS_PAID.labels(code, delta["program"]).inc(delta["amount"])
