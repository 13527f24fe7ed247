"""Stage 3: per-region aggregates in a table partitioned by region (read everywhere through read_model.py), and
stall detection on the region's low watermark (streams/stall.py), raising alerts through streams/alerts.py.

Each message is a batch of one region's deltas from one participant-events message, summed between ticks
(streams/delta_sums.py; a message written before sums holds one delta per event, applied as before); the stage
takes up to ``batch_messages`` messages at once and applies each region's deltas from all of them on one copy of
its state, written once (a region's state is its whole aggregate: copying and writing it per message cost more
than the deltas did)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from streams import alerts, clock, delta_sums, faust_fixes, rules, stall, state
from streams.metrics import CLAIMS_PAID
from streams.reference import reference
from streams.topics import acknowledged


@dataclass
class Applied:
    """What one region-deltas message does to its region: the new state (None: every delta was a replay, write
    nothing), the stall transitions to publish first, and the paid claims to count."""

    stats: state.RegionState | None
    transitions: list[dict] = field(default_factory=list)
    paid: list[tuple[str, int]] = field(default_factory=list)  # (programme, rupiah) of the claims paid


def apply_message(stored: dict | None, deltas: list[dict], region, settings, partitions: int,
                  end_day: int) -> Applied:
    """Pure: apply one message's deltas to a copy of the region's state. A delta whose ``src`` the state has
    applied already (participant stage re-run after a crash) is skipped. Not a tick: applying one again changes
    nothing (a maximum), and a re-run need not repeat it, since when a clock moves depends on wall time (idle
    sources): a tick first sent by a re-run of an old message must not be mistaken for a replay."""
    stats = state.region_from_stored(stored)
    out, changed = Applied(stats), False
    for delta in deltas:
        partition, offset, index = delta["src"]
        tick = delta["k"] == "tick"
        if not tick and [offset, index] <= stats.applied.get(str(partition), [-1, -1]):
            continue
        if tick and delta["at"] <= stats.wm.get(str(partition), 0):
            continue  # nothing new
        if delta["k"] == delta_sums.SUM:
            delta_sums.apply_in_place(stats, delta)
            out.paid += delta.get("paid_claims", {}).items()
        else:  # a tick, or one event's delta (written by a worker before sums)
            rules.apply_delta_in_place(stats, delta, region, settings.target_scale)
            if delta["k"] == "claim" and delta["status"] == "PAID":
                out.paid.append((delta["program"], delta["amount"]))
        changed = True
        if not tick:
            stats.applied[str(partition)] = [offset, index]
        low = clock.region_low(stats.wm, partitions) if tick else None
        if low is not None:
            out.transitions += stall.advance(stats, region, low, settings.stall, settings.grace_months,
                                             settings.target_scale, end_day)
    if not changed:
        out.stats = None
    return out


async def agent(topo, stream):
    """The regions agent: batches of region-deltas messages, each region's deltas applied (``apply_message``) on
    one copy of its state and written once, alerts first. Yields, per batch, the messages taken and the codes of
    the regions changed (Faust's agent results: what a test of the agent reads)."""
    settings = topo.settings
    end_day = stall.month_day(reference().programme_end)
    in_order = faust_fixes.InOrder(topo.app, topo.region_deltas.get_topic_name())
    async for events in stream.take_events(settings.batch_messages, within=settings.batch_seconds):
        by_code: dict[str, list] = {}
        for event in events:
            if await in_order.admit(event):  # deltas of a source partition must arrive in its order
                by_code.setdefault(event.key, []).append(event)
        topo.faults.raise_at("regions:bug")  # drills only: a bug in this stage
        changed = []  # (code, an event of its partition, what its messages did): one state write per region
        for code, taken in by_code.items():
            region = reference().regions[code]  # re-read when its file changed (a quota change, APBD-P)
            with faust_fixes.routed_by(taken[-1]):
                stored = topo.regions.get(code)
            applied = apply_message(stored, [d for e in taken for d in e.value["deltas"]], region, settings,
                                    settings.topic_partitions, end_day)
            if applied.stats is not None:  # None: all replayed
                changed.append((code, taken[-1], applied))
            # a region at a time: the other stages and the web views get the loop between regions instead of
            # waiting for the whole batch (latency at 500 events/s offered, one run each: p50 748 → 608 ms)
            await asyncio.sleep(0)
        # write order as in participants.py: the alerts acknowledged before the states that record them
        transitions = [alert for _, _, applied in changed for alert in applied.transitions]
        if transitions:
            await acknowledged([await alerts.publish(topo, alert) for alert in transitions])
            await topo.faults.reached("regions:alerts-acked", topo.app.producer)
        for code, event, applied in changed:
            with faust_fixes.routed_by(event):
                topo.regions[code] = state.stored(applied.stats)
            await topo.faults.reached("regions:state-durable", topo.app.producer)
            for program, amount in applied.paid:
                CLAIMS_PAID.labels(code, program).inc(amount)
        yield len(events), [code for code, _, _ in changed]


def register(topo) -> None:
    topo.add_agent("regions", topo.region_deltas, agent)
