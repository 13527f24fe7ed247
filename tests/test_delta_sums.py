"""Summed region deltas (streams/delta_sums.py) leave a region exactly as its deltas applied one by one would:
every field of the state, the stall transitions and the paid claims, whatever the runs between ticks are cut into,
on the simulator's events read out of order (late data, corrections, pre-registration payments, exits)."""
from __future__ import annotations

import collections
import random

from hypothesis import given, settings as hsettings, strategies as st

from streams import delta_sums, demography, occupation, rules, stall
from streams.clock import DAY_MS
from streams.config import Settings
from streams.reference import reference
from streams.regions import apply_message
from streams.simulator import Scenario
from streams.state import stored

SETTINGS = Settings(target_scale=0.004)
REF = reference()
END_DAY = stall.month_day(REF.programme_end)
KEY = b"k" * 32


def events() -> list[tuple[str, dict]]:
    """The scenario's valid events as ingest hands them on (pseudonymised, coarse demography), and for every
    tenth vulnerable worker a move to wage employment and then a paid death benefit (an exit, then a stronger
    reason replacing it)."""
    out = []
    for event in Scenario.load(scale=0.004, seed=5, duplicate_share=0.02).events(10):
        if event.expect == "dead_letter":
            continue
        record = dict(event.record)
        nik = record.pop("nik")
        if event.record_name == "Registration":
            record["demo"] = [*demography.from_nik(nik, record["region_code"], record["occurred_at"]),
                              occupation.normalise(record.pop("occupation"))]
        record["key"] = rules.participant_key(nik, KEY)
        out.append((event.record_name, record))
        if event.record_name == "Registration" and record["cohort"] == "VULNERABLE_WORKER" and len(out) % 10 == 0:
            later = record["occurred_at"] + 40 * DAY_MS
            out.append(("Registration", {**record, "event_id": record["event_id"] + "-pu", "segment": "PU",
                                         "occurred_at": later}))
            out.append(("Claim", {"event_id": record["event_id"] + "-jkm", "key": record["key"],
                                  "region_code": record["region_code"], "program": "JKM", "status": "PAID",
                                  "amount_idr": 42_000_000, "occurred_at": later + 9 * DAY_MS}))
    return out


EVENTS = events()


def per_event_deltas(rnd: random.Random) -> tuple[dict[str, list[dict]], collections.Counter]:
    """Each region's deltas, numbered, in an arrival order up to 60 days off event time (some flagged late),
    with a tick to every region every ~200 events: the event time reached 10 days earlier, so that events behind
    it are corrections and those ahead are kept as moves ahead of the frontier."""
    order = sorted(EVENTS, key=lambda e: e[1]["occurred_at"] + rnd.randrange(60 * DAY_MS))
    states: dict = {}
    out: dict[str, list[dict]] = collections.defaultdict(list)
    kinds: collections.Counter = collections.Counter()
    index, latest, tick = 0, 0, 0
    for n, (kind, record) in enumerate(order):
        record = {**record, **({"late": 1} if rnd.random() < 0.05 else {})}
        state, deltas, _ = rules.apply_event(states.get(record["key"]), kind, record)
        states[record["key"]] = state
        for delta in deltas:
            delta["src"] = [0, 0, index]
            index += 1
            out[delta["region"]].append(delta)
            kinds[delta["k"], "was" in delta, bool(delta.get("late"))] += 1
        latest = max(latest, record["occurred_at"])
        if n % 200 == 199 and (latest // DAY_MS - 10) * DAY_MS > tick:
            tick = (latest // DAY_MS - 10) * DAY_MS
            for code in REF.regions:
                out[code].append({"k": "tick", "at": tick, "src": [0, 0, -1]})
    return out, kinds


def summed(deltas: list[dict], rnd: random.Random) -> list[dict]:
    """The runs between ticks cut at random places, each piece one sum numbered by its last delta."""
    out, total = [], None
    for delta in deltas:
        if delta["k"] == "tick":
            out.append(delta)
            total = None
            continue
        if total is None or rnd.random() < 0.1:
            total = delta_sums.new(delta["region"])
            out.append(total)
        delta_sums.add(total, delta)
        total["src"] = delta["src"]
    return out


def applied(code: str, deltas: list[dict]):
    result = apply_message(None, deltas, REF.regions[code], SETTINGS, 1, END_DAY)
    paid: collections.Counter = collections.Counter()
    for program, amount in result.paid:
        paid[program] += amount
    return stored(result.stats), result.transitions, paid


@hsettings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_sums_apply_as_their_deltas_one_by_one(seed):
    rnd = random.Random(seed)
    by_region, kinds = per_event_deltas(rnd)
    # every kind of delta and branch is in the input: registrations, moves, payments, claims, both exits, late
    assert {k for k, _, _ in kinds} >= {"reg", "pt", "contrib", "claim", "turnaround", "exit"}
    assert kinds["exit", True, False] and sum(n for (_, _, late), n in kinds.items() if late)
    corrections = pieces = 0
    for code, deltas in by_region.items():
        one_by_one = applied(code, deltas)
        sums = summed(deltas, rnd)
        assert applied(code, sums) == one_by_one, code
        corrections += one_by_one[0]["corrections"]
        pieces += sum(d["k"] == "sum" for d in sums)
    assert pieces < sum(d["k"] != "tick" for ds in by_region.values() for d in ds) / 3  # runs were summed
    assert corrections  # the frontier was behind some events: the correction count was exercised


def test_a_sum_is_smaller_on_the_wire_than_its_deltas():
    import orjson
    by_region, _ = per_event_deltas(random.Random(1))
    deltas = [d for ds in by_region.values() for d in ds if d["k"] != "tick"]
    total = delta_sums.new("64.72")
    for delta in deltas:
        delta_sums.add(total, delta)
    assert len(orjson.dumps(total)) * 5 < len(orjson.dumps(deltas))


def test_a_delta_of_a_kind_this_worker_does_not_know_stops_the_region_stage():
    """A newer worker's delta is not half-applied (an older region stage would have dropped a sum's counts)."""
    import pytest
    from streams.rules import UnknownDelta
    with pytest.raises(UnknownDelta):
        apply_message(None, [{"k": "sum2", "region": "64.72", "at": 1, "src": [0, 0, 0]}], REF.regions["64.72"],
                      SETTINGS, 1, END_DAY)
