"""Stage 3: per-region aggregates in a table partitioned by region (read everywhere through read_model.py), and
stall detection on the region's low watermark (streams/stall.py), raising alerts through streams/alerts.py.

Each message is a batch of one region's deltas from one participant-events message: applied on one copy of the
region's state, written once."""
from __future__ import annotations

from streams import alerts, clock, rules, stall
from streams.metrics import CLAIMS_PAID
from streams.reference import reference
from streams.topics import acknowledged


def register(topo) -> None:
    ref = reference()
    settings = topo.settings
    end_day = stall.month_day(ref.programme_end)
    partitions = settings.topic_partitions

    @topo.app.agent(topo.region_deltas, name="regions")
    async def region_agent(stream):
        async for event in stream.events():
            code, region = event.key, ref.regions[event.key]
            stored = topo.regions.get(code)
            stats = rules.copy_region(stored)
            transitions, paid, changed = [], [], False
            for delta in event.value["deltas"]:
                partition, offset, index = delta["src"]
                tick = delta["k"] == "tick"
                # a replayed delta (participant stage re-run after a crash) is applied once. Not a tick: applying
                # one again changes nothing (a maximum), and a re-run need not repeat it, since when a clock
                # moves depends on wall time (idle sources): a tick first sent by a re-run of an old message
                # must not be mistaken for a replay
                if not tick and [offset, index] <= stats["applied"].get(str(partition), [-1, -1]):
                    continue
                if tick and delta["at"] <= stats["wm"].get(str(partition), 0):
                    continue  # nothing new
                rules.apply_delta_in_place(stats, delta, region, settings.target_scale)
                changed = True
                if not tick:
                    stats["applied"][str(partition)] = [offset, index]
                low = clock.region_low(stats["wm"], partitions) if tick else None
                if low is not None:
                    transitions += stall.advance(stats, region, low, settings.stall, settings.grace_months,
                                                 settings.target_scale, end_day)
                elif delta["k"] == "claim" and delta["status"] == "PAID":
                    paid.append(delta)
            if not changed:
                continue  # all replayed
            # write order as in participants.py: the alerts acknowledged before the state that records them
            if transitions:
                await acknowledged([await alerts.publish(topo, alert) for alert in transitions])
                await topo.faults.reached("regions:alerts-acked", topo.app.producer)
            topo.regions[code] = stats
            await topo.faults.reached("regions:state-durable", topo.app.producer)
            for delta in paid:
                CLAIMS_PAID.labels(code, delta["program"]).inc(delta["amount"])
