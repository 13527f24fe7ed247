"""Stage 3: per-region aggregates in a GlobalTable (every worker holds all 10 regions for the web views)."""
from __future__ import annotations

from streams import rules
from streams.metrics import CLAIMS_PAID
from streams.reference import regions as reference_regions


def register(topo) -> None:
    ref = reference_regions()
    scale = topo.settings.target_scale

    @topo.app.agent(topo.region_deltas, name="regions")
    async def region_agent(stream):
        async for event in stream.events():
            code, delta = event.key, event.value
            stats = topo.regions.get(code)
            partition, offset, index = delta["src"]
            # a replayed delta (participant stage re-run after a crash) is applied once
            if stats is not None and [offset, index] <= stats["applied"].get(str(partition), [-1, -1]):
                continue
            stats = rules.apply_delta(stats, delta, ref[code], scale)
            stats["applied"][str(partition)] = [offset, index]
            topo.regions[code] = stats
            if delta["k"] == "claim" and delta["status"] == "PAID":
                CLAIMS_PAID.labels(code, delta["program"]).inc(delta["amount"])
