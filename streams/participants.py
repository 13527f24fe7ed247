"""Stage 2: the participant table (keyed by pseudonym): dedup by event id, registration, paid-through period.

Each participant-events message is a batch (streams/ingest.py), and the stage takes up to ``batch_messages`` of
them at once: each is folded in turn (over the states the earlier ones left), then the whole batch is written
with one pair of broker round trips instead of a pair per message (the stage is one task for every partition, and
waited for two acknowledgements per message: batched, on uvloop, the worker ran a 40k backlog ~1.5x faster).
Write order, the crash-exactness argument (docs/reliability.md, "Write order"): (1) the region deltas of every
message of the batch, one message per region, are sent and *acknowledged*; (2) then the participant states are
written to the table and its changelog, batched, and *acknowledged* too (streams/faust_fixes.py ``set_durably``);
(3) only then are the messages done, and Faust commits their offsets after flushing its producer (a partition's
clock is a Faust table write: faust_fixes makes that flush wait for it).
A crash after (1) re-reads the messages: their events are not duplicates yet (or, for participants whose state
became durable, are), the same deltas go out again with the same ``src`` = [partition, offset, index], and the
region stage applies each ``src`` once. A state can never be durable before the deltas it caused — the order that
lost updates (the re-read events were duplicates, their deltas never came). ``force=True``: not attached to the
offset commit as Faust does by default."""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from streams import clock as clocks, delta_sums, faust_fixes, rules, state
from streams.metrics import EVENTS
from streams.reference import regions as reference_regions
from streams.topics import acknowledged, send_batch


STARTED = time.time()  # sources restored from the changelog count as moving for a while after a (re)start


@dataclass
class Folded:
    """What one participant-events message does: the participants' new states (to write), the region deltas
    (to send first), outcome counts, and the partition's clock if a tick moved it."""

    states: dict[str, state.Participant] = field(default_factory=dict)
    deltas: dict[str, list] = field(default_factory=lambda: collections.defaultdict(list))
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    clock: clocks.SourceClock | None = None


def fold_message(values: list[dict], partition: int, offset: int,
                 state_of: Callable[[str], state.Participant | None],
                 stored_clock: dict | None, codes: Iterable[str], input_partitions: list[str], now: float,
                 started: float, idle_seconds: float) -> Folded:
    """Pure: fold one message's events (and ticks) over the participants' states (``state_of``: the durable
    state of a key). The deltas the events cause go out summed, one per region between ticks
    (streams/delta_sums.py); every delta is numbered in message order, and a sum's ``src`` =
    [partition, offset, index] is the number of its last: a re-read of the message after a crash produces a
    subset of the same deltas (those of participants whose state was not durable), summed into sums each with an
    index no larger than the first time's last. Ticks are numbered -1 and do not count: whether a tick passes
    depends on wall time (idle sources), so a re-read may pass one the first read did not, and numbered like the
    others it shifted the events' deltas past what the region stage had applied — which then applied them again
    (the 200k drill: 10 claims counted twice, 2026-11-25)."""
    out = Folded()
    index = 0
    sums: dict[str, dict] = {}  # region -> its open sum (delta_sums): closed by a tick
    for value in values:
        if value["kind"] == "Tick":
            out.clock, forward = clocks.fold_source_tick(
                out.clock or clocks.SourceClock.from_stored(stored_clock, now), value["src"], value["at"],
                input_partitions, now, started, idle_seconds)
            if forward is not None:  # index -1: a tick must not shift the numbering of the counted deltas
                for code in codes:
                    out.deltas[code].append({"k": "tick", "at": forward, "src": [partition, offset, -1]})
                sums = {}  # whether an event's day is a correction depends on the ticks before it
            continue
        key = value["key"]
        current = out.states[key] if key in out.states else state_of(key)
        current, new, duplicate = rules.apply_event(current, value["kind"], value)
        out.outcomes[value["topic"], "duplicate" if duplicate else "processed"] += 1
        if duplicate:
            continue
        for delta in new:
            region = delta["region"]
            total = sums.get(region)
            if total is None:
                total = sums[region] = delta_sums.new(region)
                out.deltas[region].append(total)
            delta_sums.add(total, delta)
            total["src"] = [partition, offset, index]  # the last delta's number: the replay rule's
            index += 1
        out.states[key] = current
    return out


async def write(topo, states: dict[int, tuple[dict[str, state.Participant], object]],
                clocks_of: dict[int, clocks.SourceClock]) -> None:
    """The participants' states of every partition (their changelog records' bytes, ``state.encoded``),
    acknowledged by the broker, one produce request per changelog batch and one wait for them all
    (faust_fixes.set_durably); then each partition's clock."""
    await faust_fixes.set_durably(topo.participants, [({key: state.encoded(p) for key, p in items.items()}, event)
                                                      for items, event in states.values()])
    for partition, source_clock in clocks_of.items():
        with faust_fixes.routed_by(states[partition][1]):
            topo.clocks[str(partition)] = source_clock.stored()


async def agent(topo, stream):
    """The participants agent: batches of participant-events messages, folded (``fold_message``) and written in
    the order above. Yields, per batch, the messages taken and the outcome counts, (topic, outcome) -> n (Faust's
    agent results: what a test of the agent reads)."""
    settings, codes = topo.settings, reference_regions()
    in_order = faust_fixes.InOrder(topo.app, topo.participant_events.get_topic_name())

    async for events in stream.take_events(settings.batch_messages, within=settings.batch_seconds):
        stored = faust_fixes.store_get(topo.participants)  # the durable states, read past the Table layer

        def durable(key: str) -> state.Participant | None:
            return state.participant_from_stored(stored(key))

        # each message folded in turn over the states the batch's earlier messages left; written together
        states: dict[int, tuple[dict[str, state.Participant], object]] = {}  # partition -> (new states, an event)
        clocks_of: dict[int, clocks.SourceClock] = {}
        deltas: dict[str, list] = collections.defaultdict(list)
        outcomes: collections.Counter = collections.Counter()
        for event in events:
            if not await in_order.admit(event):  # the replay rule needs each partition in offset order
                continue
            partition, offset = event.message.partition, event.message.offset
            items, _ = states.setdefault(partition, ({}, event))
            with faust_fixes.routed_by(event):
                folded = fold_message(
                    event.value["events"], partition, offset,
                    lambda key: items[key] if key in items else durable(key),
                    clocks_of[partition].stored() if partition in clocks_of else topo.clocks.get(str(partition)),
                    codes, topo.input_partitions, time.time(), STARTED, settings.clock_idle_seconds)
            items.update(folded.states)
            if folded.clock is not None:
                clocks_of[partition] = folded.clock
            for code, batch in folded.deltas.items():
                deltas[code] += batch
            outcomes.update(folded.outcomes)
        if topo.faults.fires("participants:state-first"):  # drills only: the losing order, forced
            await write(topo, states, clocks_of)
            await topo.faults.kill("participants:state-first", topo.app.producer)
        # every message's deltas acknowledged before any state of the batch is written (docs/reliability.md)
        sent = []
        for code, batch in deltas.items():
            sent += await send_batch(topo.region_deltas, "deltas", batch, key=code)
        await acknowledged(sent)
        await topo.faults.reached("participants:deltas-acked", topo.app.producer)
        await write(topo, states, clocks_of)
        await topo.faults.reached("participants:state-durable", topo.app.producer)
        for (topic, outcome), n in outcomes.items():
            EVENTS.labels(topic, outcome).inc(n)
        yield len(events), outcomes


def register(topo) -> None:
    settings = topo.settings

    @topo.app.timer(max(settings.clock_idle_seconds / 3, 1.0))
    async def recheck_idle_sources():
        """Idleness is a matter of wall time: re-check each partition's clock even when no tick arrives. Only the
        partitions this worker holds: their owner is who re-checks them, so with N workers, ticks to every
        partition from each made N times the ticks (each a participant-stage batch and, when a clock moves, a
        region-stage one)."""
        for partition in faust_fixes.assigned_partitions(topo.app, topo.participant_events.get_topic_name()):
            await topo.participant_events.send(
                key=None, value=faust_fixes.json_value({"events": [{"kind": "Tick", "src": None, "at": 0}]}),
                partition=partition)

    topo.add_agent("participants", topo.participant_events, agent)
