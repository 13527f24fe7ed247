"""Stage 3: per-region aggregates in a table partitioned by region (read everywhere through read_model.py), and
stall detection on the region's low watermark (streams/stall.py), raising alerts through sinks/alerts.py."""
from __future__ import annotations

from sinks import alerts
from streams import rules, stall
from streams.metrics import CLAIMS_PAID
from streams.reference import reference


def register(topo) -> None:
    ref = reference()
    settings = topo.settings
    end_day = stall.month_day(ref.programme_end)
    partitions = settings.topic_partitions

    @topo.app.agent(topo.region_deltas, name="regions")
    async def region_agent(stream):
        async for event in stream.events():
            code, delta = event.key, event.value
            stats = topo.regions.get(code)
            partition, offset, index = delta["src"]
            # a replayed delta (participant stage re-run after a crash) is applied once
            if stats is not None and [offset, index] <= stats["applied"].get(str(partition), [-1, -1]):
                continue
            stats = rules.apply_delta(stats, delta, ref.regions[code], settings.target_scale)
            stats["applied"][str(partition)] = [offset, index]
            transitions = []
            if delta["k"] == "tick" and len(stats["wm"]) >= partitions:  # every source partition has a clock
                transitions = stall.advance(stats, ref.regions[code], min(stats["wm"].values()), settings.stall,
                                            settings.grace_months, settings.target_scale, end_day)
            for alert in transitions:  # before the state that records them (see participants.py)
                await alerts.publish(topo, alert)
            topo.regions[code] = stats
            if delta["k"] == "claim" and delta["status"] == "PAID":
                CLAIMS_PAID.labels(code, delta["program"]).inc(delta["amount"])
